//! The foodmesh store service: the restaurants, their menus, and the kitchen.
//!
//! Paid orders arrive as `order.v1.placed` events and wait in their store's
//! queue; staff (or the auto-kitchen) cook, send out and deliver them, each
//! step published as a `store.v1.order.<change>` event. The store decides
//! customers' cancellations, because only it knows whether cooking started.
//!
//! # Layout
//! - `domain`: catalogs and the kitchen state machine, plain Rust.
//! - `app`: the use cases; each owns its transaction (row + outbox event).
//! - `grpc`: the `StoreService` adapter and the one error-to-status mapping.
//! - `convert`: domain types to and from protobuf, for both adapters.
//! - `db`: every SQL statement; `migrations/` holds the schema per engine.
//! - `events`: events out (via the outbox) and the order-event consumer.
//! - `seed`: the catalog loaded at start (`seed/catalog.toml` by default).
//! - `startup`: settings and wiring.
#![forbid(unsafe_code)]

pub mod app;
mod convert;
pub mod db;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod seed;
pub mod startup;

pub use startup::{Settings, start};
