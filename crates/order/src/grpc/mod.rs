//! The gRPC adapter: identify the caller, convert the request, call the use
//! case, convert the answer. No business rule lives here.

use std::{pin::Pin, sync::Arc};

use foodmesh_platform::{auth::Verifier, grpc, paging::PageRequest, validation::Violations};
use foodmesh_proto::order::v1::{self as pb, order_service_server::OrderService};
use futures::Stream;
use tokio_stream::{StreamExt as _, wrappers::ReceiverStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    app::{Credentials, Error, OrderApp},
    convert,
    domain::placing::{PlaceOrder, RequestedLine},
};

mod error;

/// The `foodmesh.order.v1.OrderService` implementation.
#[derive(Debug, Clone)]
pub struct OrderGrpc {
    app: Arc<OrderApp>,
    verifier: Verifier,
    stop: CancellationToken,
}

impl OrderGrpc {
    /// The service over `app`; `stop` ends open WatchOrder streams.
    pub fn new(app: Arc<OrderApp>, verifier: Verifier, stop: CancellationToken) -> Self {
        Self { app, verifier, stop }
    }

    fn customer<T>(&self, request: &Request<T>) -> Result<String, Error> {
        Ok(self.verifier.verify(request.metadata())?.customer()?.to_owned())
    }
}

fn check_order_id(order_id: &str) -> Result<(), Error> {
    let mut v = Violations::new();
    v.check_request_id("order_id", order_id);
    Ok(v.into_result(())?)
}

type OrderStream = Pin<Box<dyn Stream<Item = Result<pb::WatchOrderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl OrderService for OrderGrpc {
    #[tracing::instrument(skip_all, fields(store_id = %request.get_ref().store_id))]
    async fn place_order(&self, request: Request<pb::PlaceOrderRequest>) -> Result<Response<pb::PlaceOrderResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let deadline = grpc::deadline(&request);
        let credentials =
            Credentials(request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned());
        let pb::PlaceOrderRequest { request_id, store_id, lines, delivery_address, payment_token } = request.into_inner();
        let lines = lines
            .into_iter()
            .map(|l| RequestedLine { menu_item_id: l.menu_item_id, quantity: u32::try_from(l.quantity).unwrap_or(0) })
            .collect();
        let command = PlaceOrder { customer_id, request_id, store_id, lines, delivery_address, payment_token };
        let order = self.app.place(command, &credentials, deadline).await?;
        Ok(Response::new(pb::PlaceOrderResponse { order: Some(convert::order(&order)) }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn cancel_order(&self, request: Request<pb::CancelOrderRequest>) -> Result<Response<pb::CancelOrderResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let deadline = grpc::deadline(&request);
        let pb::CancelOrderRequest { order_id, request_id, reason } = request.into_inner();
        let mut v = Violations::new();
        v.check_request_id("order_id", &order_id);
        v.check_request_id("request_id", &request_id);
        v.check_text("reason", &reason, 0, 200);
        v.into_result(()).map_err(Error::from)?;
        let order = self.app.cancel(&customer_id, &order_id, &reason, deadline).await?;
        Ok(Response::new(pb::CancelOrderResponse { order: Some(convert::order(&order)) }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn get_order(&self, request: Request<pb::GetOrderRequest>) -> Result<Response<pb::GetOrderResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::GetOrderRequest { order_id } = request.into_inner();
        check_order_id(&order_id)?;
        let order = self.app.get(&customer_id, &order_id).await?;
        Ok(Response::new(pb::GetOrderResponse { order: Some(convert::order(&order)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_orders(&self, request: Request<pb::ListOrdersRequest>) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::ListOrdersRequest { page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        let page = PageRequest::parse(page_size, &page_token, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let (orders, next_page_token) = self.app.list(&customer_id, &page).await?;
        Ok(Response::new(pb::ListOrdersResponse { orders: orders.iter().map(convert::order).collect(), next_page_token }))
    }

    type WatchOrderStream = OrderStream;

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn watch_order(&self, request: Request<pb::WatchOrderRequest>) -> Result<Response<Self::WatchOrderStream>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::WatchOrderRequest { order_id } = request.into_inner();
        check_order_id(&order_id)?;
        let order = self.app.get(&customer_id, &order_id).await?;
        let (sink, receiver) = tokio::sync::mpsc::channel(16);
        let (app, stop) = (self.app.clone(), self.stop.clone());
        tokio::spawn(async move { app.follow(order, sink, stop).await });
        let stream = ReceiverStream::new(receiver).map(|item| match item {
            Ok(order) => Ok(pb::WatchOrderResponse { order: Some(convert::order(&order)) }),
            Err(err) => Err(Status::from(err)),
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl pb::circuit_service_server::CircuitService for OrderGrpc {
    async fn get_payment_circuit(
        &self,
        request: Request<pb::GetPaymentCircuitRequest>,
    ) -> Result<Response<pb::GetPaymentCircuitResponse>, Status> {
        self.verifier.verify(request.metadata()).map_err(Error::from)?.operator().map_err(Error::from)?;
        Ok(Response::new(convert::payment_circuit(&self.app.payment_load())))
    }
}
