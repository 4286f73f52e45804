//! The order context in plain Rust: no tonic, prost, sqlx or NATS here.
//!
//! - [`placing`]: a customer's new order, validated and priced from the
//!   order service's own copy of the menus.
//! - [`order`]: an order's status as the customer sees it, built from the
//!   order's own changes and from the store's and payment's events.

pub mod order;
pub mod placing;
