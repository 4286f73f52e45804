//! The settings every service shares and the connections made from them.

use serde::Deserialize;

use crate::{
    auth::{AuthSettings, KeyError, Verifier},
    consumer::ConsumerSpec,
    db::{Database, DatabaseSettings, DbError},
    grpc::ServerSettings,
    lifecycle::Workers,
    messaging::StreamSpec,
    messaging::{self, NatsSettings},
    outbox::{OutboxSignal, Relay, RelaySettings},
};

/// The built-in defaults of [`CommonSettings`], as TOML.
pub const COMMON_DEFAULTS: &str = include_str!("defaults.toml");

/// Consumer settings shared by a service's consumers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSettings {
    /// The most events applied in one database transaction.
    pub batch_size: usize,
    /// How long a batch waits for more events after its first.
    #[serde(deserialize_with = "crate::config::millis", rename = "linger_ms")]
    pub linger: std::time::Duration,
    /// Deliveries of a failing message before it is parked in `DEAD_LETTERS`.
    pub max_deliver: i64,
    /// How long the server waits for an ack before redelivering.
    #[serde(deserialize_with = "crate::config::millis", rename = "ack_wait_ms")]
    pub ack_wait: std::time::Duration,
}

/// Settings every service has; services flatten it into their own.
#[derive(Debug, Clone, Deserialize)]
pub struct CommonSettings {
    /// The gRPC server.
    pub server: ServerSettings,
    /// The service's own database.
    pub database: DatabaseSettings,
    /// NATS.
    pub nats: NatsSettings,
    /// Token verification.
    pub auth: AuthSettings,
    /// The outbox relay.
    pub relay: RelaySettings,
    /// The event consumers.
    pub consumer: ConsumerSettings,
    /// The health watchdogs.
    pub health: crate::health::HealthSettings,
    /// The Prometheus endpoint.
    pub metrics: crate::metrics::MetricsSettings,
}

/// Why a service could not prepare its connections.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    /// The database URL is unusable.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The JWT key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// NATS settings are unusable.
    #[error("cannot set up the NATS connection: {0}")]
    Nats(#[from] async_nats::ConnectError),
    /// The metrics endpoint cannot listen where it was told to.
    #[error("cannot serve metrics: {0}")]
    Metrics(#[source] std::io::Error),
    /// NATS is not connected, so JetStream did not answer.
    #[error("NATS at {url} is not connected (the client keeps trying): {error}")]
    NatsNotConnected {
        /// The server(s), without credentials.
        url: String,
        /// What the JetStream request said (typically a timeout).
        error: async_nats::Error,
    },
    /// JetStream refused to create or update a stream.
    #[error("cannot create the JetStream streams: {0}")]
    Streams(async_nats::Error),
}

/// A service's connections. Nothing here waits for a server: the database
/// pools and the NATS client connect in the background, so a service can
/// start (and report NOT_SERVING) before its dependencies are up.
#[derive(Debug, Clone)]
pub struct Infra {
    /// The service's database.
    pub db: Database,
    /// The NATS client.
    pub nats: async_nats::Client,
    /// JetStream on that client.
    pub js: async_nats::jetstream::Context,
    /// Checks callers' tokens.
    pub verifier: Verifier,
    /// Wakes the outbox relay after a commit.
    pub outbox: OutboxSignal,
    /// The service's Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// The NATS server(s), without credentials, for messages.
    nats_url: String,
}

impl Infra {
    /// Prepares the connections for the service `name`.
    pub async fn connect(settings: &CommonSettings, name: &str) -> Result<Self, InfraError> {
        let db = Database::connect_lazy(&settings.database)?;
        let verifier = Verifier::from_settings(&settings.auth)?;
        let nats = messaging::connect(&settings.nats, name).await?;
        let js = messaging::jetstream(nats.clone());
        let metrics = crate::metrics::Metrics::new(name, &settings.metrics).map_err(InfraError::Metrics)?;
        if let Some(addr) = metrics.addr() {
            tracing::info!(service = name, %addr, "metrics at /metrics");
        }
        metrics.observe_writer(&db);
        let nats_url = messaging::display_url(&settings.nats.url);
        Ok(Self { db, nats, js, verifier, outbox: OutboxSignal::default(), metrics, nats_url })
    }

    /// Creates the service's streams, or brings them up to date (see
    /// [`messaging::ensure_streams`]); when NATS is not connected, the error
    /// says where it was looked for.
    pub async fn ensure_streams(&self, specs: &[StreamSpec]) -> Result<(), InfraError> {
        messaging::ensure_streams(&self.js, specs).await.map_err(|error| match error {
            messaging::StreamsError::NotConnected(error) => InfraError::NatsNotConnected { url: self.nats_url.clone(), error },
            messaging::StreamsError::JetStream(error) => InfraError::Streams(error),
        })
    }

    /// The outbox relay of this service.
    pub fn relay(&self, settings: &RelaySettings) -> Relay {
        Relay::new(self.db.clone(), self.js.clone(), settings.clone(), self.outbox.clone())
    }

    /// The workers every service runs: the outbox relay and, on SQLite, the
    /// background checkpointer. The service adds its consumers.
    pub fn common_workers(&self, settings: &CommonSettings) -> Workers {
        let mut workers = Workers::default();
        let relay = self.relay(&settings.relay);
        workers.spawn(|stop| relay.run(stop));
        // A worker that ends counts as dead (see lifecycle::Workers), so the
        // checkpointer runs only where it has work: on SQLite.
        if self.db.backend() == crate::db::Backend::Sqlite {
            let db = self.db.clone();
            workers.spawn(|stop| db.run_maintenance(stop));
        }
        let (db, health, vitals) = (self.db.clone(), settings.health.clone(), workers.vitals());
        workers.spawn(|stop| crate::health::watch_database(db, health, vitals, stop));
        let metrics = self.metrics.clone();
        workers.spawn(|stop| metrics.serve(stop));
        let (metrics, db, js, interval) =
            (self.metrics.clone(), self.db.clone(), self.js.clone(), settings.metrics.sample_interval);
        workers.spawn(|stop| metrics.sample(db, js, interval, stop));
        workers
    }

    /// A consumer spec for `durable` on `stream`, sized by the settings.
    pub fn consumer(
        settings: &ConsumerSettings,
        stream: StreamSpec,
        durable: &'static str,
        filter_subjects: &[&str],
    ) -> ConsumerSpec {
        ConsumerSpec {
            stream,
            durable,
            filter_subjects: filter_subjects.iter().map(|s| (*s).to_owned()).collect(),
            latest_per_subject: false,
            batch_size: settings.batch_size,
            linger: settings.linger,
            max_deliver: settings.max_deliver.max(1),
            retry_ladder: &crate::consumer::RETRY_LADDER,
            ack_wait: settings.ack_wait,
        }
    }
}
