//! Wiring: settings, connections, the gRPC service and the workers.

use std::{sync::Arc, time::Duration};

use foodmesh_platform::{
    breaker::BreakerSettings,
    config::{self, ConfigError},
    consumer,
    dead_letter::DEAD_LETTERS,
    grpc::GrpcHost,
    infra::{COMMON_DEFAULTS, CommonSettings, Infra},
    lifecycle::{self, BoxError, Running},
    messaging::{ORDER_EVENTS, PAYMENT_EVENTS, STORE_CATALOG, STORE_EVENTS},
};
use foodmesh_proto::order::v1::{circuit_service_server::CircuitServiceServer, order_service_server::OrderServiceServer};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    app::{
        Faults, OrderApp, Timing,
        rebuild::{self, RebuildReport},
    },
    db, events,
    grpc::OrderGrpc,
    payment_client::{GrpcPaymentGateway, Protection},
};

/// The order service's built-in defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The order service's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// What every service has.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// The payment service.
    pub payment: PaymentSettings,
    /// Cancellation.
    pub cancel: CancelSettings,
    /// Test-only faults, all off by default.
    #[serde(default)]
    pub faults: FaultSettings,
}

/// Faults for tests of the recovery paths; never on in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Stop PlaceOrder after the charge, before the order commits (see
    /// `app::Faults`).
    #[serde(default)]
    pub stop_after_charge: bool,
}

/// How to reach payment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSettings {
    /// Its gRPC URL.
    pub url: String,
    /// The longest a charge may take.
    #[serde(deserialize_with = "config::millis", rename = "timeout_ms")]
    pub timeout: Duration,
    /// Charges in flight at once; beyond, PlaceOrder is refused. 0: no limit.
    pub max_in_flight: usize,
    /// How long a charge waits for a free slot before it is refused.
    #[serde(deserialize_with = "config::millis", rename = "max_wait_ms")]
    pub max_wait: Duration,
    /// The circuit breaker in front of payment.
    pub breaker: PaymentBreakerSettings,
}

/// The circuit breaker in front of payment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentBreakerSettings {
    /// Off: charges always go to payment.
    pub enabled: bool,
    /// Consecutive failures (timeouts, UNAVAILABLE) that open it.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    #[serde(deserialize_with = "config::millis", rename = "cool_down_ms")]
    pub cool_down: Duration,
}

impl PaymentSettings {
    /// The protection stack's settings.
    pub fn protection(&self) -> Protection {
        Protection {
            timeout: self.timeout,
            max_in_flight: self.max_in_flight,
            max_wait: self.max_wait,
            breaker: BreakerSettings {
                enabled: self.breaker.enabled,
                failure_threshold: self.breaker.failure_threshold.max(1),
                cool_down: self.breaker.cool_down,
            },
        }
    }
}

/// How CancelOrder waits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelSettings {
    /// How long to wait for the store's answer.
    #[serde(deserialize_with = "config::millis", rename = "wait_ms")]
    pub wait: Duration,
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

/// Compares the status view with what the event streams say and, unless
/// `check_only`, rewrites the orders that differ (see `app::rebuild`). Runs
/// beside a running service; takes the service's settings.
pub async fn rebuild_view(mut settings: Settings, check_only: bool) -> Result<RebuildReport, BoxError> {
    // The service beside it serves the metrics port.
    settings.common.metrics.listen_addr.clear();
    let infra = Infra::connect(&settings.common, "order-rebuild-view").await?;
    infra.db.migrate(&db::migrations()).await?;
    let mut source = events::JetStreamHistory::new(infra.js.clone());
    Ok(rebuild::rebuild_view(&infra.db, &mut source, check_only).await?)
}

/// Starts the order service.
pub async fn start(settings: Settings) -> Result<Running, BoxError> {
    let common = settings.common;
    if settings.faults.stop_after_charge {
        tracing::warn!("fault stop_after_charge is ON: PlaceOrder will not commit orders (tests only)");
    }
    let infra = Infra::connect(&common, "order").await?;
    let payment = Arc::new(GrpcPaymentGateway::new(&settings.payment.url, settings.payment.protection())?);
    let app = Arc::new(
        OrderApp::new(
            infra.db.clone(),
            infra.outbox.clone(),
            payment,
            Timing { cancel_wait: settings.cancel.wait },
            Faults { stop_after_charge: settings.faults.stop_after_charge },
        )
        .with_stage_metrics(&infra.metrics),
    );
    let stop = CancellationToken::new();
    let sampled = app.clone();
    infra.metrics.on_sample(move || {
        let app = sampled.clone();
        Box::pin(async move { app.metric_samples().await })
    });

    let mut host = GrpcHost::bind(&common.server).await?;
    host.observe(infra.metrics.clone());
    let grpc = OrderGrpc::new(app.clone(), infra.verifier.clone(), stop.clone());
    host.add_service(OrderServiceServer::new(grpc.clone()).max_decoding_message_size(common.server.max_request_bytes));
    host.add_service(CircuitServiceServer::new(grpc));

    let drain = common.server.drain;
    let init = move || {
        let (infra, app, common) = (infra.clone(), app.clone(), common.clone());
        async move {
            infra.db.migrate(&db::migrations()).await?;
            infra.ensure_streams(&[ORDER_EVENTS, STORE_EVENTS, STORE_CATALOG, PAYMENT_EVENTS, DEAD_LETTERS]).await?;
            let mut workers = infra.common_workers(&common);
            let [catalog, kitchen, payment, captures] = events::consumers(&common.consumer);
            let js = &infra.js;
            workers.spawn(|stop| consumer::run(js.clone(), catalog, events::CatalogHandler(app.clone()), stop));
            workers.spawn(|stop| consumer::run(js.clone(), kitchen, events::KitchenHandler(app.clone()), stop));
            workers.spawn(|stop| consumer::run(js.clone(), payment, events::PaymentHandler(app.clone()), stop));
            workers.spawn(|stop| consumer::run(js.clone(), captures, events::ReconcileHandler(app), stop));
            Ok::<_, BoxError>(workers)
        }
    };
    Ok(lifecycle::launch("order", host, drain, stop, init))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        config::load_from(&[COMMON_DEFAULTS, DEFAULTS], file.map(|f| (std::path::PathBuf::from("order.toml"), f)), env)
    }

    #[test]
    fn a_misspelt_key_in_a_known_section_fails_start_up_and_names_the_key() {
        // In a section every service shares (flattened from CommonSettings)…
        let err = load(Some("[server]\nlisten_adr = \"127.0.0.1:1\"\n"), &[]).expect_err("listen_adr is not a setting");
        assert!(err.to_string().contains("unknown field `listen_adr`"), "{err}");
        // …in one of order's own, from the environment…
        let err = load(None, &[("FOODMESH_PAYMENT__TIMEOUT", "100")]).expect_err("timeout_ms is the setting");
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
        // …and nested one level deeper.
        let err = load(Some("[payment.breaker]\nfailures = 3\n"), &[]).expect_err("not a breaker setting");
        assert!(err.to_string().contains("unknown field `failures`"), "{err}");
    }

    #[test]
    fn variables_for_the_cli_or_other_services_do_not_stop_order() {
        // `foodmesh up` hands its environment to every service: FOODMESH_HOME
        // is the CLI's, [auto_kitchen] is store's. Neither is order's to judge.
        let settings = load(None, &[("FOODMESH_HOME", "/tmp/x"), ("FOODMESH_AUTO_KITCHEN__ENABLED", "true")])
            .expect("unrelated variables are left alone");
        assert_eq!(settings.common.server.listen_addr.to_string(), "127.0.0.1:50051");
        let settings = load(Some("[server]\nlisten_addr = \"127.0.0.1:7\"\n"), &[]).expect("a known key");
        assert_eq!(settings.common.server.listen_addr.to_string(), "127.0.0.1:7");
    }
}
