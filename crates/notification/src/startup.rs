//! Wiring: settings, connections, the gRPC service and the workers.

use std::{sync::Arc, time::Duration};

use foodmesh_platform::{
    config::{self, ConfigError},
    consumer,
    dead_letter::DEAD_LETTERS,
    grpc::GrpcHost,
    infra::{COMMON_DEFAULTS, CommonSettings, Infra},
    lifecycle::{self, BoxError, Running},
    messaging::{ORDER_EVENTS, PAYMENT_EVENTS, STORE_EVENTS},
};
use foodmesh_proto::notification::v1::notification_service_server::NotificationServiceServer;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    app::NotificationApp,
    channel::{Channel, LogChannel, WebhookChannel},
    db,
    domain::RetryPolicy,
    events::{self, ChangeHandler, Source},
    grpc::NotificationGrpc,
};

/// The notification service's built-in defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The notification service's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// What every service has.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// How messages go out.
    pub channel: ChannelSettings,
}

/// How messages go out (see `config/default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// `log` or `webhook`.
    pub kind: String,
    /// The webhook's URL.
    pub webhook_url: String,
    /// The longest one send may take.
    #[serde(deserialize_with = "config::millis", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Sends before giving up on a message.
    pub max_attempts: u32,
    /// The first retry pause.
    #[serde(deserialize_with = "config::millis", rename = "backoff_initial_ms")]
    pub backoff_initial: Duration,
    /// The longest retry pause.
    #[serde(deserialize_with = "config::millis", rename = "backoff_max_ms")]
    pub backoff_max: Duration,
    /// Messages sent at once.
    pub concurrency: usize,
    /// How often retries that fell due are looked for.
    #[serde(deserialize_with = "config::millis", rename = "sweep_interval_ms")]
    pub sweep_interval: Duration,
}

impl Settings {
    /// Defaults, then `--config FILE` / `FOODMESH_CONFIG`, then the environment.
    pub fn load() -> Result<Self, ConfigError> {
        config::load(&[COMMON_DEFAULTS, DEFAULTS])
    }

    /// Defaults and the given overrides only (tests).
    pub fn from_env_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        config::load_from(&[COMMON_DEFAULTS, DEFAULTS], None, pairs)
    }
}

/// Starts the notification service.
pub async fn start(settings: Settings) -> Result<Running, BoxError> {
    let c = &settings.channel;
    let channel: Arc<dyn Channel> = match c.kind.as_str() {
        "log" => Arc::new(LogChannel),
        "webhook" => Arc::new(WebhookChannel::new(&c.webhook_url, c.timeout)?),
        other => return Err(format!("channel.kind must be \"log\" or \"webhook\", not {other:?}").into()),
    };
    let policy = RetryPolicy { max_attempts: c.max_attempts.max(1), initial: c.backoff_initial, max: c.backoff_max };
    let sweep = c.sweep_interval;
    let common = settings.common;
    let infra = Infra::connect(&common, "notification").await?;
    let app = Arc::new(NotificationApp::new(infra.db.clone(), channel, policy, c.concurrency, c.timeout));
    let stop = CancellationToken::new();

    let mut host = GrpcHost::bind(&common.server).await?;
    host.observe(infra.metrics.clone());
    host.add_service(
        NotificationServiceServer::new(NotificationGrpc::new(app.clone(), infra.verifier.clone(), stop.clone()))
            .max_decoding_message_size(common.server.max_request_bytes),
    );

    let drain = common.server.drain;
    let init = move || {
        let (infra, app, common) = (infra.clone(), app.clone(), common.clone());
        async move {
            infra.db.migrate(&db::migrations()).await?;
            infra.ensure_streams(&[ORDER_EVENTS, STORE_EVENTS, PAYMENT_EVENTS, DEAD_LETTERS]).await?;
            let mut workers = infra.common_workers(&common);
            let [orders, store, payments] = events::consumers(&common.consumer);
            let js = &infra.js;
            workers.spawn(|stop| consumer::run(js.clone(), orders, ChangeHandler::new(app.clone(), Source::Orders), stop));
            workers.spawn(|stop| consumer::run(js.clone(), store, ChangeHandler::new(app.clone(), Source::Store), stop));
            workers.spawn(|stop| consumer::run(js.clone(), payments, ChangeHandler::new(app.clone(), Source::Payments), stop));
            workers.spawn(|stop| app.run_dispatcher(sweep, stop));
            Ok::<_, BoxError>(workers)
        }
    };
    Ok(lifecycle::launch("notification", host, drain, stop, init))
}
