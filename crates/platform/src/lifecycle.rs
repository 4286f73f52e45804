//! The life of a service process, the same for all four:
//!
//! 1. bind the gRPC port and serve health (NOT_SERVING) and reflection at once;
//! 2. initialise (migrations, streams, consumers), retrying until it works, so
//!    a service started before its database or NATS comes up by itself;
//! 3. report SERVING and let requests through;
//! 4. on a stop request: report NOT_SERVING, keep serving for the drain period
//!    so load balancers move away, stop accepting and finish the requests in
//!    flight, then stop the workers (consumers finish and ack their batch, the
//!    outbox relay flushes) and return.

use std::{future::Future, net::SocketAddr, panic::AssertUnwindSafe, time::Duration};

use futures::FutureExt as _;
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    grpc::{GrpcHost, Readiness},
    health::Vitals,
};

/// An error that ends a service.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The background tasks of a service: consumers, the outbox relay, timers.
/// Each runs until the service stops; one that ends or panics before that is
/// reported to the service's [`Vitals`] (liveness turns NOT_SERVING).
#[derive(Debug)]
pub struct Workers {
    stop: CancellationToken,
    tasks: JoinSet<()>,
    vitals: Vitals,
}

impl Default for Workers {
    fn default() -> Self {
        Self { stop: CancellationToken::new(), tasks: JoinSet::new(), vitals: Vitals::default() }
    }
}

impl Workers {
    /// Starts a task; it gets the token that tells it to stop.
    pub fn spawn<F, Fut>(&mut self, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, vitals) = (self.stop.clone(), self.vitals.clone());
        let task = AssertUnwindSafe(task(self.stop.clone())).catch_unwind();
        self.tasks.spawn(async move {
            let outcome = task.await;
            if !stop.is_cancelled() {
                let how = if outcome.is_ok() { "ended" } else { "panicked" };
                vitals.worker_died(format!("{} {how}", std::any::type_name::<Fut>()));
            }
        });
    }

    /// What the workers and watchdogs report about the service's health.
    pub fn vitals(&self) -> Vitals {
        self.vitals.clone()
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while let Some(result) = self.tasks.join_next().await {
            if let Err(err) = result {
                tracing::error!(error = %err, "a worker task failed");
            }
        }
    }
}

/// A started service. Dropping it without [`Running::stop`] ends the service
/// abruptly (its task and workers are aborted), so that nothing it owns, such
/// as a test's database, is used after its owner let go of it.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: CancellationToken,
    serving: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Result<(), BoxError>>,
}

impl Running {
    /// The address the gRPC server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the service reports SERVING; false if it stopped first or
    /// `timeout` passed.
    pub async fn wait_until_serving(&self, timeout: Duration) -> bool {
        let mut serving = self.serving.clone();
        tokio::time::timeout(timeout, serving.wait_for(|s| *s)).await.is_ok_and(|r| r.is_ok())
    }

    /// Asks the service to stop (see the module documentation) and waits.
    pub async fn stop(mut self) -> Result<(), BoxError> {
        self.stop.cancel();
        (&mut self.task).await.map_err(|e| Box::new(e) as BoxError)?
    }

    /// Runs until SIGINT or SIGTERM, then stops in order.
    pub async fn run_until_signal(mut self) -> Result<(), BoxError> {
        let stop = self.stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stop signal received");
            stop.cancel();
        });
        (&mut self.task).await.map_err(|e| Box::new(e) as BoxError)?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Cancelling also ends the service's own streams (WatchOrder, for
        // one), tasks of their own that aborting the service task would not
        // reach. Both are no-ops once the service has stopped.
        self.stop.cancel();
        self.task.abort();
    }
}

/// Starts a service on `host`. `init` runs until it succeeds (retrying with a
/// growing pause) and returns the workers; `stop` is the token the service's
/// own streams watch, so they end when the service stops.
pub fn launch<I, Fut>(name: &'static str, host: GrpcHost, drain: Duration, stop: CancellationToken, mut init: I) -> Running
where
    I: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Workers, BoxError>> + Send,
{
    let addr = host.local_addr();
    let (serving_tx, serving) = watch::channel(false);
    let stop_requested = stop.clone();
    let task = tokio::spawn(async move {
        let server_stop = CancellationToken::new();
        let (readiness, mut server) = host.spawn(server_stop.clone()).await?;
        tracing::info!(service = name, %addr, "listening; initialising");

        let mut failures = 0u32;
        let workers = loop {
            tokio::select! {
                () = stop_requested.cancelled() => {
                    server_stop.cancel();
                    return server.await?.map_err(Into::into);
                }
                result = init() => match result {
                    Ok(workers) => break workers,
                    Err(err) => {
                        failures += 1;
                        let pause = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                        tracing::warn!(service = name, error = %err, retry_in = ?pause, "initialisation failed");
                        tokio::time::sleep(pause).await;
                    }
                },
            }
        };
        readiness.set_serving().await;
        let _ = serving_tx.send(true);
        tracing::info!(service = name, %addr, "serving");

        let server_died = tokio::select! {
            () = stop_requested.cancelled() => None,
            result = &mut server => Some(result),
            () = follow_vitals(&readiness, workers.vitals()) => None,
        };
        readiness.set_draining().await;
        let _ = serving_tx.send(false);
        let result = match server_died {
            Some(result) => result.map_err(BoxError::from).and_then(|r| r.map_err(BoxError::from)),
            None => {
                tracing::info!(service = name, drain = ?drain, "draining");
                tokio::time::sleep(drain).await;
                server_stop.cancel();
                match server.await {
                    Ok(result) => result.map_err(Into::into),
                    Err(err) => Err(err.into()),
                }
            }
        };
        workers.stop().await;
        tracing::info!(service = name, "stopped");
        result
    });
    Running { addr, stop, serving, task }
}

/// Turns what the watchdogs report into health statuses, for as long as the
/// service runs (never returns by itself).
async fn follow_vitals(readiness: &Readiness, vitals: Vitals) {
    let mut condition = vitals.subscribe();
    loop {
        let now = condition.borrow_and_update().clone();
        readiness.set_dependencies_ok(now.ready()).await;
        readiness.set_alive(now.alive()).await;
        if condition.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The whole `main` of a service binary: logging, settings (a bad setting
/// stops the process with a message naming it), start, run until a signal.
pub async fn main<S, F, Fut>(
    name: &'static str,
    settings: Result<S, crate::config::ConfigError>,
    start: F,
) -> std::process::ExitCode
where
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = Result<Running, BoxError>>,
{
    // Kept to the end of main: dropping it flushes the spans not yet exported.
    let _telemetry = crate::telemetry::init(name);
    let settings = match settings {
        Ok(settings) => settings,
        Err(err) => {
            tracing::error!(service = name, error = %err, "cannot load settings");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = match start(settings).await {
        Ok(running) => running.run_until_signal().await,
        Err(err) => Err(err),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(service = name, error = %err, "stopped with an error");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
