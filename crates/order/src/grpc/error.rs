//! The one place order errors become gRPC statuses.

use std::time::Duration;

use foodmesh_platform::grpc;
use tonic::{Code, Status};
use tonic_types::ErrorDetails;

use crate::{app::Error, db};

/// The `ErrorInfo.domain` of every order error.
pub const DOMAIN: &str = "order.foodmesh.dev";

/// The retry hint when payment is unavailable and nothing better is known.
pub const PAYMENT_RETRY_AFTER: Duration = Duration::from_secs(1);

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match &err {
            Error::Invalid(violations) => grpc::invalid_argument(DOMAIN, violations),
            Error::Auth(auth) => grpc::auth_status(DOMAIN, auth),
            Error::NotFound => grpc::status(Code::NotFound, "order not found", DOMAIN, "ORDER_NOT_FOUND", ErrorDetails::new()),
            Error::PaymentDeclined { .. } => {
                grpc::status(Code::FailedPrecondition, err.to_string(), DOMAIN, "PAYMENT_DECLINED", ErrorDetails::new())
            }
            Error::PaymentUnavailable { retry_after } => {
                grpc::unavailable(DOMAIN, "PAYMENT_UNAVAILABLE", err.to_string(), retry_after.unwrap_or(PAYMENT_RETRY_AFTER))
            }
            Error::PaymentFailed(_) => grpc::internal(DOMAIN, &err),
            Error::RequestIdReused => {
                grpc::status(Code::AlreadyExists, err.to_string(), DOMAIN, "REQUEST_ID_REUSED", ErrorDetails::new())
            }
            Error::NotCancellable(status) => grpc::status_with_metadata(
                Code::FailedPrecondition,
                err.to_string(),
                DOMAIN,
                "ORDER_NOT_CANCELLABLE",
                &[("status", db::status_name(*status))],
                ErrorDetails::new(),
            ),
            Error::Conflict => grpc::status(Code::Aborted, err.to_string(), DOMAIN, "CONCURRENT_UPDATE", ErrorDetails::new()),
            Error::ShuttingDown => grpc::unavailable(DOMAIN, "SHUTTING_DOWN", err.to_string(), Duration::from_millis(100)),
            Error::Db(db) => grpc::database_status(DOMAIN, db),
        }
    }
}
