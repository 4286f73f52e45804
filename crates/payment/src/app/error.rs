use foodmesh_platform::{auth::AuthError, validation::Violations};

use crate::domain::PaymentStatus;

/// Everything a payment use case can fail with. `grpc::error` maps each to a
/// status code; nothing else does.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request has bad fields.
    #[error("invalid request: {0}")]
    Invalid(#[from] Violations),
    /// The caller is not identified or not allowed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No such payment (or not the caller's).
    #[error("payment not found")]
    NotFound,
    /// The card network declined the charge.
    #[error("payment declined: {reason}")]
    Declined {
        /// The stored, declined payment.
        payment_id: String,
        /// The network's reason.
        reason: String,
    },
    /// The idempotency key was used for a different charge.
    #[error("request_id was already used for a different charge")]
    IdempotencyKeyReused,
    /// The order already has a payment under another key.
    #[error("order {0} already has a payment")]
    OrderAlreadyCharged(String),
    /// Only captured payments can be refunded.
    #[error("a {0:?} payment cannot be refunded")]
    NotRefundable(PaymentStatus),
    /// The service is stopping.
    #[error("the service is stopping")]
    Stopping,
    /// Test-only fault `drop_reply_after_commit`: the charge committed, and
    /// the caller is told to try again, as if the reply had been lost.
    #[error("the reply was dropped after the commit (test fault)")]
    ReplyDropped,
    /// An injected fault (`FaultService`) refused the charge before any work.
    #[error("the charge was refused by an injected fault")]
    InjectedFailure,
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl From<foodmesh_platform::group_commit::Stopped> for Error {
    fn from(_: foodmesh_platform::group_commit::Stopped) -> Self {
        Error::Stopping
    }
}
