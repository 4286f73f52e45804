//! A circuit breaker as a tower layer: after `failure_threshold` failures in a
//! row it opens and refuses calls at once for `cool_down`, then lets one probe
//! through; the probe's success closes it, its failure opens it again.
//!
//! Refusing at once is the point: a caller that waits on a dependency that is
//! known to be down holds its own resources (connections, memory, its own
//! callers' patience) for nothing, and keeps the dependency from recovering.

use std::{
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use futures::future::{BoxFuture, FutureExt};
use tower::{Layer, Service};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Off: every call goes through and nothing is counted.
    pub enabled: bool,
    /// Failures in a row that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before a probe is let through.
    pub cool_down: Duration,
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Calls go through.
    Closed,
    /// Calls are refused until the cool-down ends.
    Open,
    /// One probe is (or may be) in flight; other calls are refused.
    HalfOpen,
    /// The breaker is turned off.
    Disabled,
}

/// A breaker's state, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Where it stands.
    pub phase: Phase,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// When it last changed phase.
    pub changed_at: Option<SystemTime>,
    /// Times it opened.
    pub opened_total: u64,
    /// Calls it refused.
    pub rejected_total: u64,
}

/// The call was refused because the circuit is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit {name} is open; retry in {retry_after:?}")]
pub struct Open {
    /// The breaker's name.
    pub name: &'static str,
    /// When a call may go through again, from now.
    pub retry_after: Duration,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A circuit breaker, shared by every clone of the services it guards.
#[derive(Debug)]
pub struct Breaker {
    name: &'static str,
    settings: BreakerSettings,
    state: Mutex<(State, Option<SystemTime>)>,
    opened_total: AtomicU64,
    rejected_total: AtomicU64,
}

/// Leave to make one call; [`Breaker::record`] its outcome. Dropped without a
/// record (the caller gave up), a probe lets the next call probe instead.
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<Breaker>,
    probe: bool,
    recorded: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(name: &'static str, settings: BreakerSettings) -> Arc<Self> {
        Arc::new(Self {
            name,
            settings,
            state: Mutex::new((State::Closed { failures: 0 }, None)),
            opened_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
        })
    }

    /// Its settings.
    pub fn settings(&self) -> BreakerSettings {
        self.settings
    }

    /// Leave for one call, or how long until a call may go through.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, Open> {
        let permit = |probe| Permit { breaker: self.clone(), probe, recorded: false };
        if !self.settings.enabled {
            return Ok(permit(false));
        }
        let mut guard = self.lock();
        let now = Instant::now();
        let refused = match guard.0 {
            State::Closed { .. } => return Ok(permit(false)),
            State::Open { until } if now >= until => {
                self.change(&mut guard, State::HalfOpen { probing: true });
                return Ok(permit(true));
            }
            State::Open { until } => until - now,
            State::HalfOpen { probing: false } => {
                guard.0 = State::HalfOpen { probing: true };
                return Ok(permit(true));
            }
            // The probe decides soon; its own deadline bounds how soon.
            State::HalfOpen { probing: true } => self.settings.cool_down.min(Duration::from_secs(1)),
        };
        drop(guard);
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        Err(Open { name: self.name, retry_after: refused })
    }

    /// Whether a call would be refused now, and for how long. A caller that
    /// then does not call counts as refused; the state does not change.
    pub fn refuses_now(&self) -> Option<Duration> {
        if !self.settings.enabled {
            return None;
        }
        let refused = match self.lock().0 {
            State::Open { until } => until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()),
            State::HalfOpen { probing: true } => Some(self.settings.cool_down.min(Duration::from_secs(1))),
            _ => None,
        };
        if refused.is_some() {
            self.rejected_total.fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Records a call's outcome.
    pub fn record(&self, mut permit: Permit, failed: bool) {
        permit.recorded = true;
        if !self.settings.enabled {
            return;
        }
        let mut guard = self.lock();
        match (&guard.0, failed) {
            (State::Closed { .. }, false) => guard.0 = State::Closed { failures: 0 },
            (State::Closed { failures }, true) => {
                let failures = failures + 1;
                if failures >= self.settings.failure_threshold {
                    self.trip(&mut guard, failures);
                } else {
                    guard.0 = State::Closed { failures };
                }
            }
            (State::HalfOpen { .. }, false) if permit.probe => self.change(&mut guard, State::Closed { failures: 0 }),
            (State::HalfOpen { .. }, true) if permit.probe => self.trip(&mut guard, 1),
            // A call admitted before the circuit opened, ending now: the
            // circuit already knows.
            _ => {}
        }
    }

    /// The state, for operators.
    pub fn snapshot(&self) -> Snapshot {
        let guard = self.lock();
        let (phase, consecutive_failures) = match (self.settings.enabled, &guard.0) {
            (false, _) => (Phase::Disabled, 0),
            (true, State::Closed { failures }) => (Phase::Closed, *failures),
            (true, State::Open { .. }) => (Phase::Open, self.settings.failure_threshold),
            (true, State::HalfOpen { .. }) => (Phase::HalfOpen, self.settings.failure_threshold),
        };
        Snapshot {
            phase,
            consecutive_failures,
            changed_at: guard.1,
            opened_total: self.opened_total.load(Ordering::Relaxed),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
        }
    }

    fn trip(&self, guard: &mut (State, Option<SystemTime>), failures: u32) {
        self.opened_total.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            circuit = self.name,
            failures,
            cool_down_ms = self.settings.cool_down.as_millis() as u64,
            "circuit opened: calls are refused at once until a probe succeeds"
        );
        self.change(guard, State::Open { until: Instant::now() + self.settings.cool_down });
    }

    fn change(&self, guard: &mut (State, Option<SystemTime>), to: State) {
        match to {
            State::Closed { .. } => tracing::info!(circuit = self.name, "circuit closed: the probe succeeded"),
            State::HalfOpen { .. } => tracing::info!(circuit = self.name, "circuit half-open: letting one probe through"),
            State::Open { .. } => {}
        }
        *guard = (to, Some(SystemTime::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, Option<SystemTime>)> {
        // Plain data: valid whatever a panicking holder did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut guard = self.breaker.lock();
            if let State::HalfOpen { .. } = guard.0 {
                guard.0 = State::HalfOpen { probing: false };
            }
        }
    }
}

/// Wraps a service in a [`Breaker`]; `failed` says which outcomes count as failures.
pub struct BreakerLayer<R, E> {
    breaker: Arc<Breaker>,
    failed: fn(&Result<R, E>) -> bool,
}

impl<R, E> BreakerLayer<R, E> {
    /// The layer over `breaker`.
    pub fn new(breaker: Arc<Breaker>, failed: fn(&Result<R, E>) -> bool) -> Self {
        Self { breaker, failed }
    }
}

impl<R, E> fmt::Debug for BreakerLayer<R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer").field("breaker", &self.breaker.name).finish()
    }
}

impl<S, R, E> Layer<S> for BreakerLayer<R, E> {
    type Service = BreakerService<S, R, E>;
    fn layer(&self, inner: S) -> Self::Service {
        BreakerService { inner, breaker: self.breaker.clone(), failed: self.failed }
    }
}

/// A service behind a [`Breaker`]. Its error is the inner error boxed, or [`Open`].
pub struct BreakerService<S, R, E> {
    inner: S,
    breaker: Arc<Breaker>,
    failed: fn(&Result<R, E>) -> bool,
}

impl<S: Clone, R, E> Clone for BreakerService<S, R, E> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), breaker: self.breaker.clone(), failed: self.failed }
    }
}

impl<S, R, E> fmt::Debug for BreakerService<S, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService").field("breaker", &self.breaker.name).finish()
    }
}

impl<S, Request, R, E> Service<Request> for BreakerService<S, R, E>
where
    S: Service<Request, Response = R, Error = E>,
    S::Future: Send + 'static,
    R: Send + 'static,
    E: Into<tower::BoxError> + Send + 'static,
{
    type Response = R;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<R, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let permit = match self.breaker.admit() {
            Ok(permit) => permit,
            Err(open) => return futures::future::ready(Err(open.into())).boxed(),
        };
        let (call, breaker, failed) = (self.inner.call(request), self.breaker.clone(), self.failed);
        async move {
            let result = call.await;
            breaker.record(permit, failed(&result));
            result.map_err(Into::into)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, cool_down_ms: u64) -> Arc<Breaker> {
        Breaker::new(
            "test",
            BreakerSettings { enabled: true, failure_threshold: threshold, cool_down: Duration::from_millis(cool_down_ms) },
        )
    }

    fn call(b: &Arc<Breaker>, fail: bool) -> Result<(), Open> {
        let permit = b.admit()?;
        b.record(permit, fail);
        Ok(())
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 60_000);
        for _ in 0..5 {
            call(&b, true).expect("closed");
            call(&b, true).expect("closed");
            // A success in between resets the count.
            call(&b, false).expect("closed");
        }
        assert_eq!(b.snapshot().phase, Phase::Closed);
        for _ in 0..3 {
            call(&b, true).expect("closed");
        }
        let refused = call(&b, false).expect_err("open after 3 in a row");
        assert!(refused.retry_after > Duration::from_secs(59), "{refused:?}");
        let s = b.snapshot();
        assert_eq!((s.phase, s.opened_total, s.rejected_total), (Phase::Open, 1, 1));
        assert!(b.refuses_now().is_some());
        assert_eq!(b.snapshot().rejected_total, 2);
    }

    #[test]
    fn after_the_cool_down_one_probe_decides() {
        let b = breaker(1, 20);
        call(&b, true).expect("closed");
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.admit().expect("the cool-down is over: a probe");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.record(probe, true);
        assert_eq!(b.snapshot().phase, Phase::Open, "a failed probe opens the circuit again");
        assert_eq!(b.snapshot().opened_total, 2);
        std::thread::sleep(Duration::from_millis(30));
        let probe = b.admit().expect("a new probe");
        b.record(probe, false);
        assert_eq!(b.snapshot().phase, Phase::Closed);
        call(&b, false).expect("closed again");
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let b = breaker(1, 10);
        call(&b, true).expect("closed");
        std::thread::sleep(Duration::from_millis(20));
        drop(b.admit().expect("probe"));
        let probe = b.admit().expect("the abandoned probe's place");
        b.record(probe, false);
        assert_eq!(b.snapshot().phase, Phase::Closed);
    }

    #[test]
    fn disabled_never_refuses() {
        let b = Breaker::new("off", BreakerSettings { enabled: false, failure_threshold: 1, cool_down: Duration::from_secs(60) });
        for _ in 0..10 {
            call(&b, true).expect("disabled");
        }
        assert_eq!(b.snapshot().phase, Phase::Disabled);
    }

    #[tokio::test]
    async fn the_layer_counts_the_classified_failures_and_refuses_when_open() {
        use tower::{ServiceBuilder, ServiceExt};
        let b = breaker(2, 60_000);
        let svc = ServiceBuilder::new()
            .layer(BreakerLayer::new(b.clone(), |r: &Result<u32, std::io::Error>| r.as_ref().is_ok_and(|v| *v == 0)))
            .service_fn(|v: u32| async move { Ok::<_, std::io::Error>(v) });
        assert_eq!(svc.clone().oneshot(0).await.expect("goes through"), 0);
        assert_eq!(svc.clone().oneshot(0).await.expect("goes through"), 0);
        let err = svc.clone().oneshot(1).await.expect_err("open");
        assert!(err.downcast_ref::<Open>().is_some(), "{err}");
    }
}
