//! Wiring: settings, connections, the gRPC service and the workers.

use std::{sync::Arc, time::Duration};

use foodmesh_platform::{
    config::{self, ConfigError},
    consumer,
    dead_letter::DEAD_LETTERS,
    grpc::GrpcHost,
    infra::{COMMON_DEFAULTS, CommonSettings, Infra},
    lifecycle::{self, BoxError, Running},
    messaging::{PAYMENT_EVENTS, STORE_EVENTS},
};
use foodmesh_proto::payment::v1::{fault_service_server::FaultServiceServer, payment_service_server::PaymentServiceServer};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{
    app::{self, CardNetwork, Faults, PaymentApp, SimulatedCardNetwork},
    db, events,
    grpc::PaymentGrpc,
};

/// The payment service's built-in defaults.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// The payment service's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// What every service has.
    #[serde(flatten)]
    pub common: CommonSettings,
    /// Test-only faults, all off by default.
    #[serde(default)]
    pub faults: FaultSettings,
}

/// Faults for demos and tests of the callers' recovery; never on in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Commit a new charge, then answer UNAVAILABLE as if the reply had been
    /// lost on the way back: the caller must retry with the same key (and
    /// get the stored charge) or reconcile.
    #[serde(default)]
    pub drop_reply_after_commit: bool,
    /// Extra latency per charge: `"0"`, `"500"` or a range `"400-620"` (ms).
    #[serde(default = "no_latency")]
    pub latency_ms: String,
    /// The share of charges refused with UNAVAILABLE.
    #[serde(default)]
    pub failure_rate: f64,
    /// Charges processed at once; 0 for no limit.
    #[serde(default)]
    pub max_concurrent_charges: u32,
}

fn no_latency() -> String {
    "0".to_owned()
}

impl FaultSettings {
    /// The run-time faults these settings start with.
    pub fn injected(&self) -> Result<app::FaultSettings, ConfigError> {
        let (low, high) = config::millis_range(&self.latency_ms).ok_or_else(|| {
            ConfigError::Setting(format!("faults.latency_ms = {:?}: not a number of milliseconds", self.latency_ms))
        })?;
        let settings = app::FaultSettings {
            latency_min: Duration::from_millis(low.into()),
            latency_max: Duration::from_millis(high.into()),
            failure_rate: self.failure_rate,
            max_concurrent_charges: self.max_concurrent_charges,
        };
        settings.validate("faults.").map_err(|v| ConfigError::Setting(v.to_string()))?;
        Ok(settings)
    }
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

/// Starts the payment service with the simulated card network.
pub async fn start(settings: Settings) -> Result<Running, BoxError> {
    start_with_network(settings, Arc::new(SimulatedCardNetwork)).await
}

/// Starts the payment service with the given card network.
pub async fn start_with_network(settings: Settings, network: Arc<dyn CardNetwork>) -> Result<Running, BoxError> {
    let common = settings.common;
    let infra = Infra::connect(&common, "payment").await?;
    let faults = Arc::new(Faults::new(settings.faults.injected()?));
    let app = Arc::new(PaymentApp::new(
        infra.db.clone(),
        infra.outbox.clone(),
        network,
        settings.faults.drop_reply_after_commit,
        faults,
    ));

    let mut host = GrpcHost::bind(&common.server).await?;
    host.observe(infra.metrics.clone());
    let grpc = PaymentGrpc::new(app.clone(), infra.verifier.clone());
    host.add_service(PaymentServiceServer::new(grpc.clone()).max_decoding_message_size(common.server.max_request_bytes));
    host.add_service(FaultServiceServer::new(grpc));

    let drain = common.server.drain;
    let init = move || {
        let (infra, app, common) = (infra.clone(), app.clone(), common.clone());
        async move {
            infra.db.migrate(&db::migrations()).await?;
            infra.ensure_streams(&[PAYMENT_EVENTS, STORE_EVENTS, DEAD_LETTERS]).await?;
            let mut workers = infra.common_workers(&common);
            let spec = events::refund_consumer(&common.consumer);
            let handler = events::RefundOnCancellation::new(app);
            workers.spawn(|stop| consumer::run(infra.js.clone(), spec, handler, stop));
            Ok::<_, BoxError>(workers)
        }
    };
    Ok(lifecycle::launch("payment", host, drain, CancellationToken::new(), init))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(latency_ms: &str) -> Result<app::FaultSettings, ConfigError> {
        FaultSettings { latency_ms: latency_ms.to_owned(), max_concurrent_charges: 16, ..FaultSettings::default() }.injected()
    }

    #[test]
    fn latency_is_a_fixed_value_or_a_range_and_checked() {
        let range = faults("400-620").expect("a range");
        assert_eq!((range.latency_min, range.latency_max), (Duration::from_millis(400), Duration::from_millis(620)));
        assert_eq!(range.max_concurrent_charges, 16);
        let fixed = faults("500").expect("fixed");
        assert_eq!((fixed.latency_min, fixed.latency_max), (Duration::from_millis(500), Duration::from_millis(500)));
        assert!(faults("fast").is_err());
        assert!(faults("620-400").is_err(), "max below min");
    }
}
