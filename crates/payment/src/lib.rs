//! The foodmesh payment service: idempotent charges and refunds.
//!
//! Order calls `Charge` synchronously while placing an order, with the order
//! id as idempotency key, so an order exists only if its charge was captured
//! and a retried call never charges twice. Refunds happen when the store
//! cancels or rejects an order (events), or when an operator calls `Refund`.
//!
//! # Layout
//! - `domain`: payments and their rules, plain Rust.
//! - `app`: the use cases; each owns its transaction (row + outbox event).
//! - `grpc`: the `PaymentService` adapter and the one error-to-status mapping.
//! - `db`: every SQL statement; `migrations/` holds the schema per engine.
//! - `events`: events out (via the outbox) and the refund consumer.
//! - `startup`: settings and wiring.
#![forbid(unsafe_code)]

pub mod app;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod startup;

pub use startup::{Settings, start, start_with_network};
