use foodmesh_platform::{auth::AuthError, validation::Violations};

use crate::domain::order::{OrderError, OrderStatus};

/// Everything an order use case can fail with. `grpc::error` maps each to a
/// status code; nothing else does.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request has bad fields.
    #[error("invalid request: {0}")]
    Invalid(#[from] Violations),
    /// The caller is not identified or not allowed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No such order (or not the caller's).
    #[error("order not found")]
    NotFound,
    /// The card was declined; no order exists.
    #[error("payment declined: {reason}")]
    PaymentDeclined {
        /// Payment's reason.
        reason: String,
    },
    /// Payment could not be reached in time, or order held the charge back
    /// (open circuit, too many in flight); no order exists.
    #[error("payment is unavailable; retry with the same request_id")]
    PaymentUnavailable {
        /// When to retry, if known better than the default.
        retry_after: Option<std::time::Duration>,
    },
    /// Payment refused the charge for an unexpected reason.
    #[error("payment failed: {0}")]
    PaymentFailed(String),
    /// The request id was used for a different order.
    #[error("request_id was already used for a different order")]
    RequestIdReused,
    /// Cooking started or the order is over.
    #[error("the order is {0:?} and can no longer be cancelled")]
    NotCancellable(OrderStatus),
    /// Lost races too many times.
    #[error("the order kept changing; retry")]
    Conflict,
    /// The service is stopping.
    #[error("the service is stopping; reconnect")]
    ShuttingDown,
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<foodmesh_platform::group_commit::Stopped> for Error {
    fn from(_: foodmesh_platform::group_commit::Stopped) -> Self {
        Error::ShuttingDown
    }
}

impl From<OrderError> for Error {
    fn from(err: OrderError) -> Self {
        match err {
            OrderError::NotCancellable(status) => Error::NotCancellable(status),
        }
    }
}
