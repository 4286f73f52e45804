//! What a service's health entries say beyond "the server is up", for the
//! probes of an orchestrator:
//!
//! - readiness, the empty service name "" (and each gRPC service's name):
//!   SERVING once initialised, NOT_SERVING while draining and while the
//!   database is unreachable. Taking a pod out of rotation is the right answer
//!   to a dependency that is down: it comes back by itself.
//! - liveness, the service name [`LIVENESS`]: SERVING from the moment the
//!   port is bound, NOT_SERVING only when the process is wedged and a restart
//!   is the cure: a background worker (a consumer, the outbox relay) ended or
//!   panicked, or the database has been unreachable past a threshold (a pool
//!   that cannot recover, or a volume gone).
//!
//! NATS being down changes neither: every service keeps answering its gRPC
//! API from its own database meanwhile (order takes orders into its outbox),
//! and the client reconnects by itself.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::db::{Database, DbError};

/// The health entry the liveness probe asks about.
pub const LIVENESS: &str = "liveness";

/// How the database watchdog checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// How often the database is pinged.
    #[serde(deserialize_with = "crate::config::millis", rename = "check_interval_ms")]
    pub check_interval: Duration,
    /// A ping slower than this counts as a failure.
    #[serde(deserialize_with = "crate::config::millis", rename = "ping_timeout_ms")]
    pub ping_timeout: Duration,
    /// Unreachable this long, the service reports itself not alive.
    #[serde(deserialize_with = "crate::config::millis", rename = "database_unreachable_ms")]
    pub database_unreachable: Duration,
}

/// What the watchdogs found; the lifecycle turns it into health statuses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Condition {
    /// The database is unreachable.
    pub database_down: bool,
    /// The database has been unreachable past the threshold.
    pub database_down_too_long: bool,
    /// A background worker that ended while the service was running.
    pub worker_died: Option<String>,
}

impl Condition {
    /// Whether the service should receive traffic.
    pub fn ready(&self) -> bool {
        !self.database_down
    }

    /// Whether the process is worth keeping (no restart needed).
    pub fn alive(&self) -> bool {
        !self.database_down_too_long && self.worker_died.is_none()
    }
}

/// Shared by the watchdogs (which report) and the lifecycle (which follows).
#[derive(Debug, Clone)]
pub struct Vitals(Arc<watch::Sender<Condition>>);

impl Default for Vitals {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(Condition::default())))
    }
}

impl Vitals {
    /// Follows the condition as it changes.
    pub fn subscribe(&self) -> watch::Receiver<Condition> {
        self.0.subscribe()
    }

    /// The condition now.
    pub fn now(&self) -> Condition {
        self.0.borrow().clone()
    }

    /// A background worker ended while the service runs: it will not come back.
    pub fn worker_died(&self, what: String) {
        tracing::error!(worker = %what, "a background worker stopped while the service runs; liveness turns NOT_SERVING");
        self.0.send_modify(|c| c.worker_died = Some(what));
    }

    fn database(&self, down: bool, too_long: bool) {
        self.0.send_if_modified(|c| {
            let changed = c.database_down != down || c.database_down_too_long != too_long;
            c.database_down = down;
            c.database_down_too_long = too_long;
            changed
        });
    }
}

/// Pings the database every `check_interval` until `stop`, reporting to
/// `vitals`: down at the first failed ping, too long after
/// `database_unreachable`, up again at the first ping that works.
pub async fn watch_database(db: Database, settings: HealthSettings, vitals: Vitals, stop: CancellationToken) {
    let mut down_since: Option<Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(settings.check_interval) => {}
        }
        let ping = tokio::time::timeout(settings.ping_timeout, db.ping()).await;
        let reachable = matches!(ping, Ok(Ok(())));
        match (reachable, down_since) {
            (true, None) => {}
            (true, Some(since)) => {
                tracing::info!(down_for = ?since.elapsed(), "the database is reachable again; ready");
                down_since = None;
                vitals.database(false, false);
            }
            (false, None) => {
                // A ping usually gives up (the ping timeout, or the pool's)
                // before it can say why; a connection made directly can.
                let error = match (db.connect_error().await, ping) {
                    (Some(cause), _) => DbError::Unreachable(cause).to_string(),
                    (None, Ok(Err(err))) => err.to_string(),
                    (None, _) => format!("no answer to a ping within {:?}", settings.ping_timeout),
                };
                tracing::warn!(%error, "the database is unreachable; NOT_SERVING until it is back");
                down_since = Some(Instant::now());
                vitals.database(true, false);
            }
            (false, Some(since)) => {
                let too_long = since.elapsed() >= settings.database_unreachable;
                if too_long && !vitals.now().database_down_too_long {
                    tracing::error!(down_for = ?since.elapsed(), "the database has been unreachable too long; liveness turns NOT_SERVING");
                }
                vitals.database(true, too_long);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependency_down_is_unready_and_only_a_wedge_is_dead() {
        let fine = Condition::default();
        assert!(fine.ready() && fine.alive());
        let down = Condition { database_down: true, ..Condition::default() };
        assert!(!down.ready() && down.alive());
        let too_long = Condition { database_down: true, database_down_too_long: true, ..Condition::default() };
        assert!(!too_long.ready() && !too_long.alive());
        let died = Condition { worker_died: Some("relay".into()), ..Condition::default() };
        assert!(died.ready() && !died.alive());
    }
}
