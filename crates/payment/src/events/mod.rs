//! Payment's events out (through the outbox) and in (store's cancellations
//! and rejections, which are refunded).

use std::sync::Arc;

use foodmesh_platform::{
    consumer::{self, BatchHandler, ConsumerSpec, Delivery, Outcome},
    convert,
    infra::{ConsumerSettings, Infra},
    messaging::{self, STORE_EVENTS, subjects},
    outbox::OutboxMessage,
    time::Timestamp,
};
use foodmesh_proto::{
    payment::v1 as pb,
    store::v1::{StoreEvent, StoreOrderStatus, store_event},
};
use prost::Message as _;

use crate::{
    app::{PaymentApp, RefundForOrder},
    domain::PaymentEvent,
};

/// The `producer` written in every event's metadata.
pub const PRODUCER: &str = "payment";
/// The durable consumer that refunds cancelled and rejected orders.
pub const REFUND_CONSUMER: &str = "payment-refunds";

/// The outbox row that publishes `event`.
pub fn outbox_message(event: &PaymentEvent, occurred_at: Timestamp) -> OutboxMessage {
    let (subject, payment, body) = match event {
        PaymentEvent::Captured(p) => (
            subjects::PAYMENT_CAPTURED,
            p,
            pb::payment_event::Event::PaymentCaptured(pb::PaymentCaptured {
                payment_id: p.id.to_string(),
                order_id: p.order_id.clone(),
                customer_id: p.customer_id.clone(),
                amount: Some(convert::money(p.amount)),
            }),
        ),
        PaymentEvent::Refunded(p) => (
            subjects::PAYMENT_REFUNDED,
            p,
            pb::payment_event::Event::PaymentRefunded(pb::PaymentRefunded {
                payment_id: p.id.to_string(),
                order_id: p.order_id.clone(),
                customer_id: p.customer_id.clone(),
                amount: Some(convert::money(p.amount)),
                reason: p.refund_reason.clone(),
            }),
        ),
    };
    let metadata = messaging::event_metadata(&payment.order_id, PRODUCER, occurred_at);
    OutboxMessage::new(subject, &metadata, &pb::PaymentEvent { metadata: Some(metadata.clone()), event: Some(body) })
}

/// Which store events this service consumes.
pub fn refund_consumer(settings: &ConsumerSettings) -> ConsumerSpec {
    Infra::consumer(settings, STORE_EVENTS, REFUND_CONSUMER, &[subjects::STORE_ORDER_CANCELLED, subjects::STORE_ORDER_REJECTED])
}

/// Refunds the payment of every order the store cancelled or rejected.
#[derive(Debug, Clone)]
pub struct RefundOnCancellation {
    app: Arc<PaymentApp>,
}

impl RefundOnCancellation {
    /// A handler that refunds through `app`.
    pub fn new(app: Arc<PaymentApp>) -> Self {
        Self { app }
    }
}

impl BatchHandler for RefundOnCancellation {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        consumer::decode_and_apply(batch, decode_refund, |refunds| async move {
            let requests: Vec<RefundForOrder> =
                refunds.into_iter().map(|(event_id, (order_id, reason))| RefundForOrder { event_id, order_id, reason }).collect();
            self.app.refund_orders(&requests).await
        })
        .await
    }
}

/// The order to refund and why, for a cancellation or a rejection.
fn decode_refund(delivery: &Delivery) -> Result<Option<(String, String)>, String> {
    let event = StoreEvent::decode(delivery.payload.clone()).map_err(|e| format!("not a StoreEvent: {e}"))?;
    let Some(store_event::Event::OrderStatusChanged(change)) = event.event else { return Ok(None) };
    let reason = match change.status() {
        StoreOrderStatus::Cancelled => "order cancelled".to_owned(),
        StoreOrderStatus::Rejected => format!("order rejected by the store: {}", change.reason),
        _ => return Ok(None),
    };
    Ok(Some((change.order_id, reason)))
}
