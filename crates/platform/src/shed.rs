//! Load shedding as a tower layer: at most `max_in_flight` calls at once; a
//! call that finds them all taken waits up to `max_wait` for one to finish,
//! then is refused with [`Overloaded`].
//!
//! The short wait is what separates a burst from an overload. With a healthy
//! dependency a slot frees every few microseconds and a burst is absorbed;
//! with a slow one the wait expires and the caller hears "try again" within
//! `max_wait` instead of queueing behind calls that are already too slow.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;
use tower::{Layer, Service};

/// Refused: every slot stayed taken for the whole wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{max_in_flight} calls already in flight")]
pub struct Overloaded {
    /// The limit.
    pub max_in_flight: usize,
}

/// The layer; its services share the slots.
#[derive(Debug, Clone)]
pub struct ShedLayer {
    slots: Arc<Semaphore>,
    max_in_flight: usize,
    max_wait: Duration,
    shed: Arc<AtomicU64>,
}

impl ShedLayer {
    /// At most `max_in_flight` at once, waiting at most `max_wait` for a slot.
    pub fn new(max_in_flight: usize, max_wait: Duration) -> Self {
        Self { slots: Arc::new(Semaphore::new(max_in_flight)), max_in_flight, max_wait, shed: Arc::default() }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight.saturating_sub(self.slots.available_permits())
    }

    /// Calls refused so far.
    pub fn shed_total(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// Whether every slot is taken right now.
    pub fn full(&self) -> bool {
        self.slots.available_permits() == 0
    }
}

impl<S> Layer<S> for ShedLayer {
    type Service = Shed<S>;
    fn layer(&self, inner: S) -> Shed<S> {
        Shed { inner, layer: self.clone() }
    }
}

/// A service behind a [`ShedLayer`].
#[derive(Debug, Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

impl<S, Request> Service<Request> for Shed<S>
where
    S: Service<Request> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    Request: Send + 'static,
{
    type Response = S::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<S::Response, tower::BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is decided per call, after the bounded wait for a slot.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let (slots, max_wait, max_in_flight) = (self.layer.slots.clone(), self.layer.max_wait, self.layer.max_in_flight);
        let shed = self.layer.shed.clone();
        // The clone is ready as the original was: tower's usual hand-off.
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        Box::pin(async move {
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => match tokio::time::timeout(max_wait, slots.acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    // Timed out, or (never here) closed.
                    _ => {
                        shed.fetch_add(1, Ordering::Relaxed);
                        return Err(Overloaded { max_in_flight }.into());
                    }
                },
            };
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await.map_err(Into::into)?;
            let result = inner.call(request).await.map_err(Into::into);
            drop(permit);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{ServiceBuilder, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn a_burst_waits_briefly_and_an_overload_is_refused() {
        let layer = ShedLayer::new(2, Duration::from_millis(20));
        let svc = ServiceBuilder::new().layer(layer.clone()).service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, std::io::Error>(ms)
        });
        // Two slots held for 10 ms: a third call waits and gets one.
        let calls = [10, 10, 5].map(|ms| svc.clone().oneshot(ms));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // Two slots held for 100 ms: a third call is refused after 20 ms.
        let slow = [100, 100].map(|ms| tokio::spawn(svc.clone().oneshot(ms)));
        tokio::task::yield_now().await;
        assert_eq!(layer.in_flight(), 2);
        assert!(layer.full());
        let started = tokio::time::Instant::now();
        let refused = svc.clone().oneshot(1).await.expect_err("overloaded");
        assert_eq!(refused.downcast_ref::<Overloaded>(), Some(&Overloaded { max_in_flight: 2 }));
        assert_eq!(started.elapsed(), Duration::from_millis(20));
        assert_eq!(layer.shed_total(), 1);
        for call in slow {
            call.await.expect("joined").expect("the admitted finish");
        }
        assert_eq!(layer.in_flight(), 0);
    }
}
