//! The events notification consumes: every change of an order a customer
//! should hear about, from the order, store and payment contexts.

use std::sync::Arc;

use foodmesh_platform::{
    consumer::{self, BatchHandler, ConsumerSpec, Delivery, Outcome},
    convert,
    infra::{ConsumerSettings, Infra},
    messaging::{ORDER_EVENTS, PAYMENT_EVENTS, STORE_EVENTS, subjects},
    time::Timestamp,
};
use foodmesh_proto::{
    common::v1::EventMetadata,
    order::v1::{OrderEvent, order_event},
    payment::v1::{PaymentEvent, payment_event},
    store::v1::{StoreEvent, StoreOrderStatus, store_event},
};
use prost::Message as _;

use crate::{
    app::NotificationApp,
    domain::{Detail, Kind, OrderChange},
};

/// Consumes order events.
pub const ORDER_CONSUMER: &str = "notification-orders";
/// Consumes store events.
pub const STORE_CONSUMER: &str = "notification-store";
/// Consumes payment events.
pub const PAYMENT_CONSUMER: &str = "notification-payments";

/// The consumers of this service.
pub fn consumers(settings: &ConsumerSettings) -> [ConsumerSpec; 3] {
    [
        Infra::consumer(settings, ORDER_EVENTS, ORDER_CONSUMER, &[]),
        Infra::consumer(settings, STORE_EVENTS, STORE_CONSUMER, &[]),
        Infra::consumer(settings, PAYMENT_EVENTS, PAYMENT_CONSUMER, &[subjects::PAYMENT_REFUNDED]),
    ]
}

/// Which events a handler reads.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// `ORDER_EVENTS`.
    Orders,
    /// `STORE_EVENTS`.
    Store,
    /// `PAYMENT_EVENTS`.
    Payments,
}

/// Turns one delivered event into the change it announces, if any.
type Decoder = fn(&Delivery) -> Result<Option<OrderChange>, String>;

/// Turns one stream's events into notifications.
#[derive(Debug, Clone)]
pub struct ChangeHandler {
    app: Arc<NotificationApp>,
    source: Source,
}

impl ChangeHandler {
    /// A handler for `source`, recording through `app`.
    pub fn new(app: Arc<NotificationApp>, source: Source) -> Self {
        Self { app, source }
    }
}

impl BatchHandler for ChangeHandler {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        let (decode, consumer): (Decoder, &str) = match self.source {
            Source::Orders => (decode_order, ORDER_CONSUMER),
            Source::Store => (decode_store, STORE_CONSUMER),
            Source::Payments => (decode_payment, PAYMENT_CONSUMER),
        };
        consumer::decode_and_apply(batch, decode, |changes| async move { self.app.record(consumer, &changes).await }).await
    }
}

fn occurred_at(metadata: Option<&EventMetadata>) -> Timestamp {
    metadata.and_then(|m| m.occurred_at.as_ref()).map_or_else(Timestamp::now, convert::from_timestamp)
}

fn amount(money: Option<&foodmesh_proto::common::v1::Money>) -> Detail {
    money.and_then(|m| convert::from_money(m).ok()).map_or(Detail::None, Detail::Amount)
}

fn decode_order(delivery: &Delivery) -> Result<Option<OrderChange>, String> {
    let event = OrderEvent::decode(delivery.payload.clone()).map_err(|e| format!("not an OrderEvent: {e}"))?;
    let at = occurred_at(event.metadata.as_ref());
    Ok(match event.event {
        Some(order_event::Event::OrderPlaced(e)) => Some(OrderChange {
            detail: amount(e.total.as_ref()),
            order_id: e.order_id,
            customer_id: e.customer_id,
            kind: Kind::OrderPlaced,
            occurred_at: at,
        }),
        Some(order_event::Event::OrderCancellationRequested(e)) => Some(OrderChange {
            order_id: e.order_id,
            customer_id: e.customer_id,
            kind: Kind::CancellationRequested,
            occurred_at: at,
            detail: Detail::None,
        }),
        None => None,
    })
}

fn decode_store(delivery: &Delivery) -> Result<Option<OrderChange>, String> {
    let event = StoreEvent::decode(delivery.payload.clone()).map_err(|e| format!("not a StoreEvent: {e}"))?;
    let at = occurred_at(event.metadata.as_ref());
    Ok(match event.event {
        Some(store_event::Event::OrderStatusChanged(e)) => {
            let kind = match e.status() {
                StoreOrderStatus::Received => Kind::OrderAccepted,
                StoreOrderStatus::Cooking => Kind::CookingStarted,
                StoreOrderStatus::Delivering => Kind::OutForDelivery,
                StoreOrderStatus::Delivered => Kind::Delivered,
                StoreOrderStatus::Cancelled => Kind::OrderCancelled,
                StoreOrderStatus::Rejected => Kind::OrderRejected,
                StoreOrderStatus::Unspecified => return Err("a status change without a status".to_owned()),
            };
            let detail = if kind == Kind::OrderRejected { Detail::Reason(e.reason) } else { Detail::None };
            Some(OrderChange { order_id: e.order_id, customer_id: e.customer_id, kind, occurred_at: at, detail })
        }
        Some(store_event::Event::CancellationRejected(e)) => Some(OrderChange {
            order_id: e.order_id,
            customer_id: e.customer_id,
            kind: Kind::CancellationRejected,
            occurred_at: at,
            detail: Detail::None,
        }),
        // A review is not a change of the order: nothing to tell the customer.
        Some(store_event::Event::CatalogPublished(_) | store_event::Event::ReviewPosted(_)) | None => None,
    })
}

fn decode_payment(delivery: &Delivery) -> Result<Option<OrderChange>, String> {
    let event = PaymentEvent::decode(delivery.payload.clone()).map_err(|e| format!("not a PaymentEvent: {e}"))?;
    let at = occurred_at(event.metadata.as_ref());
    Ok(match event.event {
        Some(payment_event::Event::PaymentRefunded(e)) => Some(OrderChange {
            detail: amount(e.amount.as_ref()),
            order_id: e.order_id,
            customer_id: e.customer_id,
            kind: Kind::RefundIssued,
            occurred_at: at,
        }),
        Some(payment_event::Event::PaymentCaptured(_)) | None => None,
    })
}
