//! The foodmesh notification service: one message to the customer for every
//! change of their order.
//!
//! It consumes the order, store and payment events, writes one message per
//! order and kind of change (a redelivered event writes nothing), and a
//! dispatcher sends what is due through the configured channel (the log, or an
//! HTTP webhook with retries and backoff). Customers read their messages back
//! with ListNotifications and WatchNotifications.
//!
//! # Layout
//! - `domain`: messages, their texts and the retry policy, plain Rust.
//! - `app`: recording, dispatching and serving messages.
//! - `channel`: the log and webhook channels behind one port.
//! - `grpc`: the `NotificationService` adapter and the one error-to-status mapping.
//! - `db`: every SQL statement; `migrations/` holds the schema per engine.
//! - `events`: the consumers.
//! - `startup`: settings and wiring.
#![forbid(unsafe_code)]

pub mod app;
pub mod channel;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod startup;

pub use startup::{Settings, start};
