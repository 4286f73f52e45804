//! Order's events out (through the outbox), and the events it consumes to
//! keep its catalog copy and its status view.

use std::sync::Arc;

use foodmesh_platform::{
    consumer::{self, BatchHandler, ConsumerSpec, Delivery, Outcome},
    convert as pconvert,
    infra::{ConsumerSettings, Infra},
    messaging::{self, ORDER_EVENTS, PAYMENT_EVENTS, STORE_CATALOG, STORE_EVENTS, StreamSpec, subjects},
    outbox::OutboxMessage,
    time::Timestamp,
};
use foodmesh_proto::{
    order::v1 as pb,
    payment::v1::{PaymentEvent, payment_event},
    store::v1::{StoreEvent, StoreOrderStatus, store_event},
};
use prost::Message as _;

use async_nats::jetstream;
use futures::future::BoxFuture;

use crate::{
    app::{
        Capture, CatalogUpdate, OrderApp, ViewUpdate,
        rebuild::{EventSource, StreamHistory},
    },
    convert,
    domain::{
        order::{Fact, OrderEvent},
        placing::{Menu, MenuEntry},
    },
};

/// The `producer` written in every event's metadata.
pub const PRODUCER: &str = "order";
/// Keeps the catalog copy.
pub const CATALOG_CONSUMER: &str = "order-catalog";
/// Feeds the status view from store events.
pub const KITCHEN_CONSUMER: &str = "order-view-store";
/// Feeds the status view from payment events.
pub const PAYMENT_CONSUMER: &str = "order-view-payment";
/// Completes orders whose charge was captured but not committed.
pub const RECONCILER_CONSUMER: &str = "order-reconciler";

/// The outbox row that publishes an order event.
pub fn order_message(event: &OrderEvent, occurred_at: Timestamp) -> OutboxMessage {
    let (subject, order, body) = match event {
        OrderEvent::Placed(o) => (
            subjects::ORDER_PLACED,
            o,
            pb::order_event::Event::OrderPlaced(pb::OrderPlaced {
                order_id: o.id.to_string(),
                customer_id: o.customer_id.clone(),
                store_id: o.store_id.clone(),
                lines: o.lines.iter().map(convert::line).collect(),
                total: Some(pconvert::money(o.total)),
                delivery_address: o.delivery_address.clone(),
                payment_id: o.payment_id.clone(),
            }),
        ),
        OrderEvent::CancellationRequested { order: o, reason } => (
            subjects::ORDER_CANCELLATION_REQUESTED,
            o,
            pb::order_event::Event::OrderCancellationRequested(pb::OrderCancellationRequested {
                order_id: o.id.to_string(),
                customer_id: o.customer_id.clone(),
                store_id: o.store_id.clone(),
                reason: reason.clone(),
            }),
        ),
    };
    let metadata = messaging::event_metadata(order.id.as_str(), PRODUCER, occurred_at);
    OutboxMessage::new(subject, &metadata, &pb::OrderEvent { metadata: Some(metadata.clone()), event: Some(body) })
}

/// The consumers of this service: catalogs (from the latest of each store),
/// kitchen events, refunds, and captures (the reconciler).
pub fn consumers(settings: &ConsumerSettings) -> [ConsumerSpec; 4] {
    let catalog = ConsumerSpec { latest_per_subject: true, ..Infra::consumer(settings, STORE_CATALOG, CATALOG_CONSUMER, &[]) };
    [
        catalog,
        Infra::consumer(settings, STORE_EVENTS, KITCHEN_CONSUMER, &[]),
        Infra::consumer(settings, PAYMENT_EVENTS, PAYMENT_CONSUMER, &[subjects::PAYMENT_REFUNDED]),
        Infra::consumer(settings, PAYMENT_EVENTS, RECONCILER_CONSUMER, &[subjects::PAYMENT_CAPTURED]),
    ]
}

fn occurred_at(metadata: Option<&foodmesh_proto::common::v1::EventMetadata>) -> Timestamp {
    metadata.and_then(|m| m.occurred_at.as_ref()).map_or_else(Timestamp::now, pconvert::from_timestamp)
}

/// Keeps the order service's copy of every store's menu.
#[derive(Debug, Clone)]
pub struct CatalogHandler(pub Arc<OrderApp>);

impl BatchHandler for CatalogHandler {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        consumer::decode_and_apply(batch, decode_catalog, |updates| async move {
            self.0.apply_catalogs(CATALOG_CONSUMER, &updates).await
        })
        .await
    }
}

fn decode_catalog(delivery: &Delivery) -> Result<Option<CatalogUpdate>, String> {
    let event = StoreEvent::decode(delivery.payload.clone()).map_err(|e| format!("not a StoreEvent: {e}"))?;
    let Some(store_event::Event::CatalogPublished(catalog)) = event.event else { return Ok(None) };
    let store = catalog.store.ok_or("a catalog without its store")?;
    let items = catalog
        .items
        .into_iter()
        .map(|item| {
            let price = item.price.as_ref().ok_or("an item without a price")?;
            let price = pconvert::from_money(price).map_err(|e| e.to_string())?;
            Ok(MenuEntry { menu_item_id: item.menu_item_id, name: item.name, price })
        })
        .collect::<Result<_, String>>()?;
    Ok(Some(CatalogUpdate {
        menu: Menu { store_id: store.store_id, store_name: store.name, items },
        version: catalog.catalog_version,
    }))
}

/// Feeds the status view from the store's kitchen events.
#[derive(Debug, Clone)]
pub struct KitchenHandler(pub Arc<OrderApp>);

impl BatchHandler for KitchenHandler {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        consumer::decode_and_apply(batch, decode_kitchen, |updates| async move {
            self.0.apply_view_updates(KITCHEN_CONSUMER, &updates).await
        })
        .await
    }
}

fn decode_kitchen(delivery: &Delivery) -> Result<Option<ViewUpdate>, String> {
    kitchen_update(&delivery.payload)
}

fn kitchen_update(payload: &[u8]) -> Result<Option<ViewUpdate>, String> {
    let event = StoreEvent::decode(payload).map_err(|e| format!("not a StoreEvent: {e}"))?;
    let at = occurred_at(event.metadata.as_ref());
    let status = |raw: i32| {
        StoreOrderStatus::try_from(raw)
            .ok()
            .and_then(convert::kitchen_status)
            .ok_or_else(|| format!("unknown store order status {raw}"))
    };
    Ok(match event.event {
        Some(store_event::Event::OrderStatusChanged(c)) => Some(ViewUpdate::Kitchen {
            status: status(c.status)?,
            order_id: c.order_id,
            version: c.version,
            reason: c.reason,
            occurred_at: at,
        }),
        Some(store_event::Event::CancellationRejected(c)) => Some(ViewUpdate::CancellationRefused {
            status: status(c.status)?,
            order_id: c.order_id,
            version: c.version,
            occurred_at: at,
        }),
        // A review does not change the order's status.
        Some(store_event::Event::CatalogPublished(_) | store_event::Event::ReviewPosted(_)) | None => None,
    })
}

/// Feeds the status view from payment events (refunds).
#[derive(Debug, Clone)]
pub struct PaymentHandler(pub Arc<OrderApp>);

impl BatchHandler for PaymentHandler {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        consumer::decode_and_apply(batch, decode_payment, |updates| async move {
            self.0.apply_view_updates(PAYMENT_CONSUMER, &updates).await
        })
        .await
    }
}

fn decode_payment(delivery: &Delivery) -> Result<Option<ViewUpdate>, String> {
    payment_update(&delivery.payload)
}

fn payment_update(payload: &[u8]) -> Result<Option<ViewUpdate>, String> {
    let event = PaymentEvent::decode(payload).map_err(|e| format!("not a PaymentEvent: {e}"))?;
    let at = occurred_at(event.metadata.as_ref());
    Ok(match event.event {
        Some(payment_event::Event::PaymentRefunded(r)) => Some(ViewUpdate::Refunded { order_id: r.order_id, refunded_at: at }),
        Some(payment_event::Event::PaymentCaptured(_)) | None => None,
    })
}

/// The reconciler: every captured charge must end as an order. Usually the
/// request committed it already and this reads one row per batch; after a
/// crash between the charge and the commit, this completes the order.
#[derive(Debug, Clone)]
pub struct ReconcileHandler(pub Arc<OrderApp>);

impl BatchHandler for ReconcileHandler {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        consumer::decode_and_apply(batch, decode_capture, |captures| async move {
            let captures: Vec<Capture> = captures.into_iter().map(|(_, c)| c).collect();
            self.0.reconcile_captures(&captures).await.map(drop)
        })
        .await
    }
}

fn decode_capture(delivery: &Delivery) -> Result<Option<Capture>, String> {
    let event = PaymentEvent::decode(delivery.payload.clone()).map_err(|e| format!("not a PaymentEvent: {e}"))?;
    let Some(payment_event::Event::PaymentCaptured(c)) = event.event else { return Ok(None) };
    let amount = c.amount.as_ref().ok_or("a capture without its amount")?;
    let amount = pconvert::from_money(amount).map_err(|e| e.to_string())?;
    Ok(Some(Capture { order_id: c.order_id, payment_id: c.payment_id, amount }))
}

/// The fact an event of `stream` adds to an order's history, if any: how the
/// view rebuild reads the streams. The order's own events are its
/// placement and its cancellation requests; the rest decode as the view's
/// consumers decode them.
pub fn history_fact(stream: &str, payload: &[u8]) -> Result<Option<(String, Fact)>, String> {
    if stream == ORDER_EVENTS.name {
        let event = pb::OrderEvent::decode(payload).map_err(|e| format!("not an OrderEvent: {e}"))?;
        let at = occurred_at(event.metadata.as_ref());
        return Ok(match event.event {
            Some(pb::order_event::Event::OrderPlaced(p)) => Some((p.order_id, Fact::Placed { at })),
            Some(pb::order_event::Event::OrderCancellationRequested(c)) => Some((c.order_id, Fact::CancellationRequested { at })),
            None => None,
        });
    }
    let update = if stream == STORE_EVENTS.name { kitchen_update(payload)? } else { payment_update(payload)? };
    Ok(update.map(|u| (u.order_id().to_owned(), u.fact())))
}

/// The streams the view is built from, read through JetStream.
#[derive(Debug)]
pub struct JetStreamHistory {
    js: jetstream::Context,
    /// The next sequence to read, per stream.
    next: [u64; 3],
}

/// The streams the view's facts come from.
const HISTORY_STREAMS: [StreamSpec; 3] = [ORDER_EVENTS, STORE_EVENTS, PAYMENT_EVENTS];

impl JetStreamHistory {
    /// Reads from the start of each stream.
    pub fn new(js: jetstream::Context) -> Self {
        Self { js, next: [1; 3] }
    }
}

impl EventSource for JetStreamHistory {
    fn read_more<'a>(&'a mut self, history: &'a mut StreamHistory) -> BoxFuture<'a, Result<usize, String>> {
        Box::pin(async move {
            let before = history.events + history.undecodable;
            for (spec, next) in HISTORY_STREAMS.iter().zip(self.next.iter_mut()) {
                *next = messaging::read_stream(&self.js, spec.name, *next, |_, payload| match history_fact(spec.name, payload) {
                    Ok(Some((order_id, fact))) => history.add(order_id, fact),
                    Ok(None) => {}
                    Err(_) => history.undecodable += 1,
                })
                .await
                .map_err(|e| format!("{}: {e}", spec.name))?;
            }
            Ok(history.events + history.undecodable - before)
        })
    }
}
