use foodmesh_platform::{auth::AuthError, validation::Violations};

use crate::domain::{kitchen::TransitionError, review::ReviewError};

/// Everything a store use case can fail with. `grpc::error` maps each to a
/// status code; nothing else does.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request has bad fields.
    #[error("invalid request: {0}")]
    Invalid(#[from] Violations),
    /// The caller is not identified or not allowed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No such store.
    #[error("store not found")]
    StoreNotFound,
    /// No such order in the caller's store.
    #[error("order not found")]
    OrderNotFound,
    /// The action does not apply to the order's state.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The review cannot be posted.
    #[error(transparent)]
    Review(#[from] ReviewError),
    /// Lost a race with another writer too many times.
    #[error("the order kept changing; retry")]
    Conflict,
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}
