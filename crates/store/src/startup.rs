//! Wiring: settings, connections, the gRPC service and the workers.

use std::{path::PathBuf, sync::Arc, time::Duration};

use foodmesh_platform::{
    config::{self, ConfigError},
    consumer,
    dead_letter::DEAD_LETTERS,
    grpc::GrpcHost,
    infra::{COMMON_DEFAULTS, CommonSettings, Infra},
    lifecycle::{self, BoxError, Running},
    messaging::{ORDER_EVENTS, STORE_CATALOG, STORE_EVENTS},
};
use foodmesh_proto::store::v1::store_service_server::StoreServiceServer;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    app::{AutoKitchen, StoreApp},
    db, events,
    grpc::StoreGrpc,
    seed,
};

/// The store service's built-in defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The store service's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// What every service has.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// The auto-kitchen.
    pub auto_kitchen: AutoKitchenSettings,
    /// Where the catalog comes from.
    #[serde(default)]
    pub catalog: CatalogSettings,
}

/// The auto-kitchen's settings (see `config/default.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoKitchenSettings {
    /// Whether it runs.
    pub enabled: bool,
    /// Received to cooking.
    #[serde(deserialize_with = "config::millis", rename = "cook_after_ms")]
    pub cook_after: Duration,
    /// Cooking to delivering.
    #[serde(deserialize_with = "config::millis", rename = "deliver_after_ms")]
    pub deliver_after: Duration,
    /// Delivering to delivered.
    #[serde(deserialize_with = "config::millis", rename = "complete_after_ms")]
    pub complete_after: Duration,
    /// How often it looks for due orders.
    #[serde(deserialize_with = "config::millis", rename = "tick_ms")]
    pub tick: Duration,
}

/// Where the catalog comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// A TOML file shaped like `seed/catalog.toml`; unset for the demo catalog.
    #[serde(default)]
    pub file: Option<PathBuf>,
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

/// Starts the store service.
pub async fn start(settings: Settings) -> Result<Running, BoxError> {
    let catalog_text = match &settings.catalog.file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read catalog {}: {e}", path.display()))?,
        None => seed::DEMO_CATALOG.to_owned(),
    };
    let catalogs = Arc::new(seed::parse(&catalog_text)?);
    let common = settings.common;
    let k = &settings.auto_kitchen;
    let kitchen = AutoKitchen {
        enabled: k.enabled,
        cook_after: k.cook_after,
        deliver_after: k.deliver_after,
        complete_after: k.complete_after,
    };
    let tick = k.tick;

    let infra = Infra::connect(&common, "store").await?;
    let app = Arc::new(StoreApp::new(infra.db.clone(), infra.outbox.clone(), kitchen));
    let mut host = GrpcHost::bind(&common.server).await?;
    host.observe(infra.metrics.clone());
    host.add_service(
        StoreServiceServer::new(StoreGrpc::new(app.clone(), infra.verifier.clone()))
            .max_decoding_message_size(common.server.max_request_bytes),
    );

    let drain = common.server.drain;
    let init = move || {
        let (infra, app, common, catalogs) = (infra.clone(), app.clone(), common.clone(), catalogs.clone());
        async move {
            infra.db.migrate(&db::migrations()).await?;
            infra.ensure_streams(&[STORE_EVENTS, STORE_CATALOG, ORDER_EVENTS, DEAD_LETTERS]).await?;
            app.publish_catalogs(&catalogs).await?;
            let mut workers = infra.common_workers(&common);
            let handler = events::OrderEventsHandler::new(app.clone());
            let spec = events::order_consumer(&common.consumer);
            workers.spawn(|stop| consumer::run(infra.js.clone(), spec, handler, stop));
            if kitchen.enabled {
                workers.spawn(|stop| run_kitchen(app, tick, stop));
            }
            Ok::<_, BoxError>(workers)
        }
    };
    Ok(lifecycle::launch("store", host, drain, CancellationToken::new(), init))
}

async fn run_kitchen(app: Arc<StoreApp>, tick: Duration, stop: CancellationToken) {
    tracing::info!(?tick, "auto-kitchen on");
    loop {
        match app.run_kitchen_once().await {
            // A full batch means more are due: go again at once.
            Ok(moved) if moved >= 500 => continue,
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "auto-kitchen round failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
    }
}
