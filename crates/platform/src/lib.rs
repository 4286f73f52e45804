//! What every foodmesh service shares, so that the four services differ only
//! in their domain.
//!
//! # Layout
//! - [`breaker`]: a circuit breaker as a tower layer.
//! - [`config`]: layered settings (built-in defaults, file, environment) and [`config::Secret`].
//! - [`telemetry`]: logs and traces (OpenTelemetry, W3C trace context over gRPC and NATS, OTLP export).
//! - [`saga_trace`]: each saga's trace, kept for work done later without an incoming event.
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.
//! - [`health`]: readiness and liveness beyond "the server is up" (database watchdog, dead workers).
//! - [`auth`]: bearer-JWT verification ([`auth::Verifier`]) and token issuing for tools.
//! - [`grpc`]: the gRPC host (health, reflection, readiness gate) and rich status helpers.
//! - [`infra`]: the settings every service shares and the connections made from them.
//! - [`lifecycle`]: start, readiness, drain and ordered stop of a service process.
//! - [`db`]: SQLite or PostgreSQL behind one handle, and migrations.
//! - [`group_commit`]: concurrent requests' writes in one transaction.
//! - [`messaging`]: the NATS connection and the registry of streams and subjects.
//! - [`outbox`] and [`inbox`]: publish exactly what was committed; apply each event once.
//! - [`consumer`]: durable pull consumers that hand batches to a service.
//! - [`dead_letter`]: where consumers park messages they gave up on, and their replay.
//! - [`shed`]: load shedding (a concurrency limit with a bounded wait) as a tower layer.
//! - [`money`], [`time`], [`validation`], [`paging`]: plain-Rust building blocks for domain code.
//! - [`convert`]: those building blocks to and from their protobuf forms.
//! - `testing` (feature `testing`): real nats-server and PostgreSQL for tests.
#![forbid(unsafe_code)]

pub mod auth;
pub mod breaker;
pub mod config;
pub mod consumer;
pub mod convert;
pub mod db;
pub mod dead_letter;
pub mod group_commit;
pub mod grpc;
pub mod health;
pub mod inbox;
pub mod infra;
pub mod lifecycle;
pub mod messaging;
pub mod metrics;
pub mod money;
pub mod outbox;
pub mod paging;
pub mod saga_trace;
pub mod shed;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod validation;
