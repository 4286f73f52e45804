//! The one place store errors become gRPC statuses.

use foodmesh_platform::grpc;
use tonic::{Code, Status};
use tonic_types::ErrorDetails;

use crate::{app::Error, domain::review::ReviewError};

/// The `ErrorInfo.domain` of every store error.
pub const DOMAIN: &str = "store.foodmesh.dev";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match &err {
            Error::Invalid(violations) => grpc::invalid_argument(DOMAIN, violations),
            Error::Auth(auth) => grpc::auth_status(DOMAIN, auth),
            Error::StoreNotFound => {
                grpc::status(Code::NotFound, "store not found", DOMAIN, "STORE_NOT_FOUND", ErrorDetails::new())
            }
            Error::OrderNotFound => {
                grpc::status(Code::NotFound, "order not found", DOMAIN, "ORDER_NOT_FOUND", ErrorDetails::new())
            }
            Error::Transition(t) => grpc::status_with_metadata(
                Code::FailedPrecondition,
                err.to_string(),
                DOMAIN,
                "INVALID_STATUS_TRANSITION",
                &[("status", crate::db::status_text(t.from))],
                ErrorDetails::new(),
            ),
            Error::Review(ReviewError::NotDelivered(status)) => grpc::status_with_metadata(
                Code::FailedPrecondition,
                err.to_string(),
                DOMAIN,
                "ORDER_NOT_DELIVERED",
                &[("status", crate::db::status_text(*status))],
                ErrorDetails::new(),
            ),
            Error::Review(ReviewError::AlreadyReviewed) => {
                grpc::status(Code::AlreadyExists, err.to_string(), DOMAIN, "REVIEW_ALREADY_POSTED", ErrorDetails::new())
            }
            Error::Review(ReviewError::RequestIdReused) => {
                grpc::status(Code::AlreadyExists, err.to_string(), DOMAIN, "REQUEST_ID_REUSED", ErrorDetails::new())
            }
            Error::Conflict => grpc::status(Code::Aborted, err.to_string(), DOMAIN, "CONCURRENT_UPDATE", ErrorDetails::new()),
            Error::Db(db) => grpc::database_status(DOMAIN, db),
        }
    }
}
