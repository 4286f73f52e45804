//! The gRPC adapter: identify the caller, convert the request, call the use
//! case, convert the answer. No business rule lives here.

use std::{pin::Pin, sync::Arc};

use foodmesh_platform::{auth::Verifier, convert, grpc, paging::PageRequest, validation::Violations};
use foodmesh_proto::notification::v1::{self as pb, notification_service_server::NotificationService};
use futures::Stream;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};
use tonic_types::ErrorDetails;

use crate::{
    app::{Error, NotificationApp},
    domain::{DeliveryStatus, Kind, Notification},
};

/// The `ErrorInfo.domain` of every notification error.
pub const DOMAIN: &str = "notification.foodmesh.dev";

/// The one place notification errors become gRPC statuses.
impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match &err {
            Error::Invalid(violations) => grpc::invalid_argument(DOMAIN, violations),
            Error::Auth(auth) => grpc::auth_status(DOMAIN, auth),
            Error::ShuttingDown => {
                grpc::status(Code::Unavailable, err.to_string(), DOMAIN, "SHUTTING_DOWN", ErrorDetails::with_retry_info(None))
            }
            Error::Db(db) => grpc::database_status(DOMAIN, db),
        }
    }
}

/// The `foodmesh.notification.v1.NotificationService` implementation.
#[derive(Debug, Clone)]
pub struct NotificationGrpc {
    app: Arc<NotificationApp>,
    verifier: Verifier,
    stop: CancellationToken,
}

impl NotificationGrpc {
    /// The service over `app`; `stop` ends open watch streams.
    pub fn new(app: Arc<NotificationApp>, verifier: Verifier, stop: CancellationToken) -> Self {
        Self { app, verifier, stop }
    }

    fn customer<T>(&self, request: &Request<T>) -> Result<String, Error> {
        Ok(self.verifier.verify(request.metadata())?.customer()?.to_owned())
    }
}

fn check_order_filter(order_id: &str, v: &mut Violations) {
    if !order_id.is_empty() {
        v.check_request_id("order_id", order_id);
    }
}

type NotificationStream = Pin<Box<dyn Stream<Item = Result<pb::WatchNotificationsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl NotificationService for NotificationGrpc {
    #[tracing::instrument(skip_all)]
    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::ListNotificationsRequest { order_id, page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        check_order_filter(&order_id, &mut v);
        let page = PageRequest::parse(page_size, &page_token, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let (rows, next_page_token) = self.app.list(&customer_id, &order_id, &page).await?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: rows.iter().map(notification).collect(),
            next_page_token,
        }))
    }

    type WatchNotificationsStream = NotificationStream;

    #[tracing::instrument(skip_all)]
    async fn watch_notifications(
        &self,
        request: Request<pb::WatchNotificationsRequest>,
    ) -> Result<Response<Self::WatchNotificationsStream>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::WatchNotificationsRequest { order_id, include_existing } = request.into_inner();
        let mut v = Violations::new();
        check_order_filter(&order_id, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let (sink, receiver) = tokio::sync::mpsc::channel(64);
        let (app, stop) = (self.app.clone(), self.stop.clone());
        tokio::spawn(async move { app.follow(customer_id, order_id, include_existing, sink, stop).await });
        let stream = ReceiverStream::new(receiver).map(|item| match item {
            Ok(n) => Ok(pb::WatchNotificationsResponse { notification: Some(notification(&n)) }),
            Err(err) => Err(Status::from(err)),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

fn notification(n: &Notification) -> pb::Notification {
    let Notification {
        seq: _,
        notification_id,
        customer_id,
        order_id,
        kind,
        title,
        body,
        channel,
        status,
        attempts,
        occurred_at,
        sent_at,
    } = n;
    pb::Notification {
        notification_id: notification_id.clone(),
        customer_id: customer_id.clone(),
        order_id: order_id.clone(),
        kind: match kind {
            Kind::OrderPlaced => pb::NotificationKind::OrderPlaced,
            Kind::OrderAccepted => pb::NotificationKind::OrderAccepted,
            Kind::CookingStarted => pb::NotificationKind::CookingStarted,
            Kind::OutForDelivery => pb::NotificationKind::OutForDelivery,
            Kind::Delivered => pb::NotificationKind::Delivered,
            Kind::CancellationRequested => pb::NotificationKind::CancellationRequested,
            Kind::OrderCancelled => pb::NotificationKind::OrderCancelled,
            Kind::OrderRejected => pb::NotificationKind::OrderRejected,
            Kind::CancellationRejected => pb::NotificationKind::CancellationRejected,
            Kind::RefundIssued => pb::NotificationKind::RefundIssued,
        }
        .into(),
        title: title.clone(),
        body: body.clone(),
        channel: channel.clone(),
        delivery_status: match status {
            DeliveryStatus::Pending => pb::DeliveryStatus::Pending,
            DeliveryStatus::Sent => pb::DeliveryStatus::Sent,
            DeliveryStatus::Failed => pb::DeliveryStatus::Failed,
        }
        .into(),
        attempts: i32::try_from(*attempts).unwrap_or(i32::MAX),
        occurred_at: Some(convert::timestamp(*occurred_at)),
        sent_at: sent_at.map(convert::timestamp),
    }
}
