//! The store context in plain Rust: no tonic, prost, sqlx or NATS here.
//!
//! - [`catalog`]: stores and their menus.
//! - [`kitchen`]: an order's life in its store, and the decision on a
//!   customer's cancellation (the store is the authority on it).
//! - [`review`]: customers' reviews of delivered orders, and preferred stores.

pub mod catalog;
pub mod kitchen;
pub mod review;
