//! Logging for every foodmesh process: `tracing` with an `EnvFilter`
//! (`RUST_LOG`, default `info`), as text or, with `FOODMESH_LOG_FORMAT=json`,
//! as one JSON object per line for log collectors.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service: &'static str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let json = std::env::var("FOODMESH_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry.with(fmt::layer().json().with_current_span(true).with_span_list(false)).try_init()
    } else {
        registry.with(fmt::layer().with_target(false)).try_init()
    };
    if installed.is_ok() {
        tracing::debug!(service, "telemetry ready");
    }
}
