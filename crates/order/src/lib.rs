//! The foodmesh order service: the customer's app.
//!
//! `PlaceOrder` prices the order from the service's own copy of the menus,
//! records the attempt, charges it synchronously through payment (the order id
//! is the idempotency key) and only then commits the order with its
//! `order.v1.placed` event. Afterwards the order's status is a view built from
//! the store's and payment's events (CQRS): reading an order never calls
//! another service.
//!
//! # Layout
//! - `domain`: placing (validation, pricing) and the order's status view, plain Rust.
//! - `app`: the use cases and the payment port; each use case owns its transaction.
//! - `grpc`: the `OrderService` adapter and the one error-to-status mapping.
//! - `payment_client`: the gRPC adapter behind the payment port.
//! - `convert`: domain types to and from protobuf, for both adapters.
//! - `db`: every SQL statement; `migrations/` holds the schema per engine.
//! - `events`: events out (via the outbox) and the catalog and view consumers.
//! - `startup`: settings and wiring.
#![forbid(unsafe_code)]

pub mod app;
mod convert;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod payment_client;
pub mod startup;

pub use startup::{Settings, start};
