//! The one place payment errors become gRPC statuses.

use foodmesh_platform::grpc;
use tonic::{Code, Status};
use tonic_types::ErrorDetails;

use crate::app::Error;

/// The `ErrorInfo.domain` of every payment error.
pub const DOMAIN: &str = "payment.foodmesh.dev";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match &err {
            Error::Invalid(violations) => grpc::invalid_argument(DOMAIN, violations),
            Error::Auth(auth) => grpc::auth_status(DOMAIN, auth),
            Error::NotFound => {
                grpc::status(Code::NotFound, "payment not found", DOMAIN, "PAYMENT_NOT_FOUND", ErrorDetails::new())
            }
            Error::Declined { payment_id, reason } => grpc::status_with_metadata(
                Code::FailedPrecondition,
                format!("payment declined: {reason}"),
                DOMAIN,
                "PAYMENT_DECLINED",
                &[("payment_id", payment_id), ("decline_reason", reason)],
                ErrorDetails::new(),
            ),
            Error::IdempotencyKeyReused => {
                grpc::status(Code::AlreadyExists, err.to_string(), DOMAIN, "IDEMPOTENCY_KEY_REUSED", ErrorDetails::new())
            }
            Error::OrderAlreadyCharged(_) => {
                grpc::status(Code::AlreadyExists, err.to_string(), DOMAIN, "ORDER_ALREADY_CHARGED", ErrorDetails::new())
            }
            Error::NotRefundable(_) => {
                grpc::status(Code::FailedPrecondition, err.to_string(), DOMAIN, "PAYMENT_NOT_REFUNDABLE", ErrorDetails::new())
            }
            Error::Stopping => grpc::unavailable(DOMAIN, "SHUTTING_DOWN", err.to_string(), std::time::Duration::from_millis(100)),
            Error::ReplyDropped => {
                grpc::unavailable(DOMAIN, "REPLY_DROPPED", err.to_string(), std::time::Duration::from_millis(100))
            }
            // Nothing was processed: retrying, even at once, is safe.
            Error::InjectedFailure => {
                grpc::unavailable(DOMAIN, "INJECTED_FAULT", err.to_string(), std::time::Duration::from_millis(100))
            }
            Error::Db(db) => grpc::database_status(DOMAIN, db),
        }
    }
}
