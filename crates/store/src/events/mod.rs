//! Store's events out (through the outbox) and the order events it consumes.

use std::sync::Arc;

use foodmesh_platform::{
    consumer::{self, BatchHandler, ConsumerSpec, Delivery, Outcome},
    infra::{ConsumerSettings, Infra},
    messaging::{self, ORDER_EVENTS, subjects},
    outbox::OutboxMessage,
    time::Timestamp,
};
use foodmesh_proto::{
    order::v1::{OrderEvent, order_event},
    store::v1 as pb,
};
use prost::Message as _;

use crate::{
    app::{IncomingKind, IncomingOrderEvent, StoreApp},
    convert,
    domain::{
        catalog::Catalog,
        kitchen::{KitchenEvent, Status},
        review::Review,
    },
};

/// The `producer` written in every event's metadata.
pub const PRODUCER: &str = "store";
/// The durable consumer of order events.
pub const ORDER_CONSUMER: &str = "store-orders";

/// The outbox row that publishes a kitchen event.
pub fn kitchen_message(event: &KitchenEvent, occurred_at: Timestamp) -> OutboxMessage {
    let (subject, order, body) = match event {
        KitchenEvent::StatusChanged(o) => {
            let change = match o.status {
                Status::Received => "received",
                Status::Cooking => "cooking",
                Status::Delivering => "delivering",
                Status::Delivered => "delivered",
                Status::Cancelled => "cancelled",
                Status::Rejected => "rejected",
            };
            let body = pb::store_event::Event::OrderStatusChanged(pb::OrderStatusChanged {
                order_id: o.order_id.clone(),
                store_id: o.store_id.clone(),
                customer_id: o.customer_id.clone(),
                status: convert::status(o.status).into(),
                version: o.version,
                reason: o.reason.clone(),
            });
            (subjects::store_order(change), o, body)
        }
        KitchenEvent::CancellationRejected(o) => {
            let body = pb::store_event::Event::CancellationRejected(pb::CancellationRejected {
                order_id: o.order_id.clone(),
                store_id: o.store_id.clone(),
                customer_id: o.customer_id.clone(),
                status: convert::status(o.status).into(),
                version: o.version,
            });
            (subjects::STORE_CANCELLATION_REJECTED.to_owned(), o, body)
        }
    };
    let metadata = messaging::event_metadata(&order.order_id, PRODUCER, occurred_at);
    OutboxMessage::new(subject, &metadata, &pb::StoreEvent { metadata: Some(metadata.clone()), event: Some(body) })
}

/// The outbox row that announces a review, correlated by its order.
pub fn review_message(review: &Review) -> OutboxMessage {
    let metadata = messaging::event_metadata(&review.order_id, PRODUCER, review.posted_at);
    let body = pb::store_event::Event::ReviewPosted(convert::review_posted(review));
    OutboxMessage::new(
        subjects::store_order("reviewed"),
        &metadata,
        &pb::StoreEvent { metadata: Some(metadata.clone()), event: Some(body) },
    )
}

/// The outbox row that publishes a store's catalog.
pub fn catalog_message(catalog: &Catalog, occurred_at: Timestamp) -> OutboxMessage {
    let metadata = messaging::event_metadata(&catalog.store.store_id, PRODUCER, occurred_at);
    let body = pb::store_event::Event::CatalogPublished(pb::CatalogPublished {
        store: Some(convert::store(&catalog.store)),
        items: convert::catalog_items(catalog),
        catalog_version: catalog.version,
    });
    OutboxMessage::new(
        subjects::store_catalog(&catalog.store.store_id),
        &metadata,
        &pb::StoreEvent { metadata: Some(metadata.clone()), event: Some(body) },
    )
}

/// The order events this service consumes: all of them.
pub fn order_consumer(settings: &ConsumerSettings) -> ConsumerSpec {
    Infra::consumer(settings, ORDER_EVENTS, ORDER_CONSUMER, &[])
}

/// Applies placed orders and cancellation requests.
#[derive(Debug, Clone)]
pub struct OrderEventsHandler {
    app: Arc<StoreApp>,
}

impl OrderEventsHandler {
    /// A handler applying through `app`.
    pub fn new(app: Arc<StoreApp>) -> Self {
        Self { app }
    }
}

impl BatchHandler for OrderEventsHandler {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        consumer::decode_and_apply(batch, decode_order_event, |events| async move {
            let incoming: Vec<IncomingOrderEvent> =
                events.into_iter().map(|(event_id, kind)| IncomingOrderEvent { event_id, kind }).collect();
            self.app.apply_order_events(&incoming).await
        })
        .await
    }
}

fn decode_order_event(delivery: &Delivery) -> Result<Option<IncomingKind>, String> {
    let event = OrderEvent::decode(delivery.payload.clone()).map_err(|e| format!("not an OrderEvent: {e}"))?;
    Ok(match event.event {
        Some(order_event::Event::OrderPlaced(placed)) => {
            Some(IncomingKind::Placed(convert::placed_order(placed).map_err(|v| format!("malformed OrderPlaced: {v}"))?))
        }
        Some(order_event::Event::OrderCancellationRequested(request)) => {
            Some(IncomingKind::CancellationRequested(convert::cancellation_request(request)))
        }
        // An event type this version does not know: not for us.
        None => None,
    })
}
