//! The store use cases. Each owns its transaction: an order change and the
//! event it causes commit together, then the outbox relay is woken.
//!
//! Concurrent writers (staff, the auto-kitchen, the event consumer, other
//! replicas on PostgreSQL) are reconciled by the order's version: an update
//! only applies to the version it read, and the loser reads again.

use std::{collections::HashMap, time::Duration};

use foodmesh_platform::{
    db::{Database, Urgency},
    inbox,
    outbox::{self, OutboxSignal},
    paging::{self, Cursor, PageRequest},
    saga_trace, telemetry,
    time::Timestamp,
};

use crate::{
    db,
    domain::{
        catalog::{Catalog, Store},
        kitchen::{Action, CancellationDecision, CancellationRequest, KitchenEvent, PlacedOrder, Status, StoreOrder},
        review::{self, Posting, PreferredStore, RatingSummary, Review, ReviewDraft},
    },
    events,
};

mod error;
pub use error::Error;

/// The auto-kitchen: moves orders on by itself, for demos and load tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoKitchen {
    /// Whether it runs.
    pub enabled: bool,
    /// From received to cooking.
    pub cook_after: Duration,
    /// From cooking to delivering.
    pub deliver_after: Duration,
    /// From delivering to delivered.
    pub complete_after: Duration,
}

impl AutoKitchen {
    /// When an order in `status` is due to move on, if the kitchen is on.
    fn next_step_at(&self, status: Status, now: Timestamp) -> Option<Timestamp> {
        if !self.enabled {
            return None;
        }
        match status {
            Status::Received => Some(now.plus(self.cook_after)),
            Status::Cooking => Some(now.plus(self.deliver_after)),
            Status::Delivering => Some(now.plus(self.complete_after)),
            Status::Delivered | Status::Cancelled | Status::Rejected => None,
        }
    }
}

/// An order event from the order context, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingOrderEvent {
    /// The event id, for the inbox.
    pub event_id: String,
    /// What happened.
    pub kind: IncomingKind,
}

impl IncomingKind {
    /// The order it concerns.
    pub fn order_id(&self) -> &str {
        match self {
            IncomingKind::Placed(p) => &p.order_id,
            IncomingKind::CancellationRequested(r) => &r.order_id,
        }
    }
}

/// The order events the store reacts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingKind {
    /// A paid order for one of the stores.
    Placed(PlacedOrder),
    /// A customer wants to cancel.
    CancellationRequested(CancellationRequest),
}

/// How many times a staff action is retried after losing a race.
const MAX_ATTEMPTS: usize = 5;
/// The most orders the auto-kitchen moves in one transaction.
const KITCHEN_BATCH: i64 = 500;

/// The store service's use cases.
#[derive(Debug, Clone)]
pub struct StoreApp {
    db: Database,
    outbox: OutboxSignal,
    kitchen: AutoKitchen,
}

impl StoreApp {
    /// The use cases over `db`.
    pub fn new(db: Database, outbox: OutboxSignal, kitchen: AutoKitchen) -> Self {
        Self { db, outbox, kitchen }
    }

    /// Brings the stored catalogs in line with `catalogs` (a changed store gets
    /// a new version) and publishes every store's current catalog, so a
    /// consumer that lost it gets it back on the next start.
    pub async fn publish_catalogs(&self, catalogs: &[Catalog]) -> Result<(), Error> {
        let now = Timestamp::now();
        let mut tx = self.db.begin(Urgency::Background).await?;
        for seed in catalogs {
            let mut catalog = seed.clone();
            catalog.version = match db::catalog_version(&mut *tx, &seed.store.store_id).await? {
                Some((version, hash)) if hash == seed.content_hash() => version,
                Some((version, _)) => version + 1,
                None => 1,
            };
            db::save_catalog(&mut tx, &catalog).await?;
            outbox::enqueue(&mut tx, &events::catalog_message(&catalog, now)).await?;
            tracing::info!(store_id = %catalog.store.store_id, version = catalog.version, "catalog published");
        }
        tx.commit().await?;
        self.outbox.notify();
        Ok(())
    }

    /// A page of stores, by id.
    pub async fn list_stores(&self, page: &PageRequest) -> Result<(Vec<Store>, String), Error> {
        let after = page.after.as_ref().map(|c| c.id.as_str());
        let rows = db::stores(self.db.reader(), after, i64::from(page.size) + 1).await?;
        Ok(paging::finish(rows, page.size, |s| Cursor { key: 0, id: s.store_id.clone() }))
    }

    /// A store's catalog.
    pub async fn menu(&self, store_id: &str) -> Result<Catalog, Error> {
        let mut conn = self.db.reader().acquire().await?;
        db::catalog(&mut conn, store_id).await?.ok_or(Error::StoreNotFound)
    }

    /// A page of a store's orders, newest first.
    pub async fn list_orders(
        &self,
        store_id: &str,
        statuses: &[Status],
        page: &PageRequest,
    ) -> Result<(Vec<StoreOrder>, String), Error> {
        let mut conn = self.db.reader().acquire().await?;
        let rows = db::orders_of_store(&mut conn, store_id, statuses, page.after.as_ref(), i64::from(page.size) + 1).await?;
        Ok(paging::finish(rows, page.size, |o| Cursor { key: o.received_at.as_micros(), id: o.order_id.clone() }))
    }

    /// A staff action on one of `store_id`'s orders.
    pub async fn act(&self, store_id: &str, order_id: &str, action: &Action) -> Result<StoreOrder, Error> {
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = self.db.begin(Urgency::Request).await?;
            let mut order =
                db::order(&mut *tx, order_id).await?.filter(|o| o.store_id == store_id).ok_or(Error::OrderNotFound)?;
            let read_version = order.version;
            let now = Timestamp::now();
            let Some(event) = order.apply(action, now)? else {
                return Ok(order);
            };
            if !db::update_order(&mut tx, &order, read_version, self.kitchen.next_step_at(order.status, now)).await? {
                tx.rollback().await?;
                continue;
            }
            // The staff's request is its own trace; the event joins the order's.
            let (_spans, traces) = saga_trace::resume(&mut tx, &[order_id], "store staff action").await?;
            let message = telemetry::with_saga_traces_sync(traces, || events::kitchen_message(&event, now));
            outbox::enqueue(&mut tx, &message).await?;
            tx.commit().await?;
            self.outbox.notify();
            tracing::info!(order_id, status = ?order.status, version = order.version, "order moved on");
            return Ok(order);
        }
        Err(Error::Conflict)
    }

    /// Posts `customer_id`'s review of their delivered order `order_id`, and
    /// announces it, in one transaction. A retry of the request that posted
    /// the review gets that review back and changes nothing.
    pub async fn post_review(
        &self,
        customer_id: &str,
        order_id: &str,
        request_id: &str,
        draft: ReviewDraft,
    ) -> Result<Review, Error> {
        // Two posts for one order can race only on PostgreSQL; the loser
        // reads the winner's review and answers as a retry or a duplicate.
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = self.db.begin(Urgency::Request).await?;
            // Someone else's order is not found: never reveal that it exists.
            let order =
                db::order(&mut *tx, order_id).await?.filter(|o| o.customer_id == customer_id).ok_or(Error::OrderNotFound)?;
            let existing = db::review_of_order(&mut *tx, order_id).await?;
            let review_id = format!("rev_{}", uuid::Uuid::now_v7().simple());
            let now = Timestamp::now();
            let review = match review::post(&order, existing, draft.clone(), request_id, review_id, now)? {
                Posting::Repeat(review) => {
                    tx.rollback().await?;
                    return Ok(review);
                }
                Posting::New(review) => review,
            };
            if !db::insert_review(&mut tx, &review).await? {
                tx.rollback().await?;
                continue;
            }
            outbox::enqueue(&mut tx, &events::review_message(&review)).await?;
            tx.commit().await?;
            self.outbox.notify();
            tracing::info!(order_id, store_id = %review.store_id, rating = review.draft.rating.stars(), "review posted");
            return Ok(review);
        }
        Err(Error::Conflict)
    }

    /// A page of a store's reviews, newest first, and its rating over all of them.
    pub async fn reviews(&self, store_id: &str, page: &PageRequest) -> Result<(Vec<Review>, String, RatingSummary), Error> {
        let mut conn = self.db.reader().acquire().await?;
        if db::catalog_version(&mut *conn, store_id).await?.is_none() {
            return Err(Error::StoreNotFound);
        }
        let rows = db::reviews_of_store(&mut conn, store_id, page.after.as_ref(), i64::from(page.size) + 1).await?;
        let summary = db::rating_summary(&mut conn, store_id).await?;
        let (reviews, next) =
            paging::finish(rows, page.size, |r| Cursor { key: r.posted_at.as_micros(), id: r.review_id.clone() });
        Ok((reviews, next, summary))
    }

    /// Registers one of the stores as preferred by `customer_id`; a store
    /// already registered keeps its first registration.
    pub async fn add_preferred_store(&self, customer_id: &str, store_id: &str) -> Result<PreferredStore, Error> {
        let mut tx = self.db.begin(Urgency::Request).await?;
        if db::catalog_version(&mut *tx, store_id).await?.is_none() {
            return Err(Error::StoreNotFound);
        }
        let preferred = db::add_preferred_store(&mut tx, customer_id, store_id, Timestamp::now()).await?;
        tx.commit().await?;
        Ok(preferred)
    }

    /// Removes a store from `customer_id`'s preferred stores. Returns whether it was there.
    pub async fn remove_preferred_store(&self, customer_id: &str, store_id: &str) -> Result<bool, Error> {
        let mut tx = self.db.begin(Urgency::Request).await?;
        let removed = db::remove_preferred_store(&mut tx, customer_id, store_id).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// A page of `customer_id`'s preferred stores, the most recently added first.
    pub async fn preferred_stores(&self, customer_id: &str, page: &PageRequest) -> Result<(Vec<PreferredStore>, String), Error> {
        let mut conn = self.db.reader().acquire().await?;
        let rows = db::preferred_stores(&mut conn, customer_id, page.after.as_ref(), i64::from(page.size) + 1).await?;
        Ok(paging::finish(rows, page.size, |p| Cursor { key: p.added_at.as_micros(), id: p.store.store_id.clone() }))
    }

    /// Applies a batch of order events in one transaction, each event once:
    /// one inbox statement, one read of every order concerned, the decisions
    /// in event order in memory, then one write per order and one outbox
    /// statement.
    pub async fn apply_order_events(&self, incoming: &[IncomingOrderEvent]) -> Result<(), Error> {
        let now = Timestamp::now();
        let mut tx = self.db.begin(Urgency::Background).await?;
        let event_ids: Vec<&str> = incoming.iter().map(|e| e.event_id.as_str()).collect();
        let mut fresh = inbox::first_deliveries(&mut tx, events::ORDER_CONSUMER, &event_ids).await?;
        let mut order_ids: Vec<&str> =
            incoming.iter().filter(|e| fresh.contains(&e.event_id)).map(|e| e.kind.order_id()).collect();
        order_ids.sort_unstable();
        order_ids.dedup();
        let mut orders: HashMap<String, Tracked> = db::orders_by_ids(&mut tx, &order_ids)
            .await?
            .into_iter()
            .map(|o| (o.order_id.clone(), Tracked { read_version: Some(o.version), order: o, dirty: false }))
            .collect();
        let mut emitted = Vec::new();
        for event in incoming {
            // `remove`: a message delivered twice within one batch applies once.
            if !fresh.remove(&event.event_id) {
                continue;
            }
            let event = match &event.kind {
                IncomingKind::Placed(placed) => receive(&mut orders, placed, now),
                IncomingKind::CancellationRequested(request) => decide_cancellation(&mut orders, request, now),
            };
            emitted.extend(event);
        }
        let next = |o: &StoreOrder| self.kitchen.next_step_at(o.status, now);
        let new: Vec<_> =
            orders.values().filter(|t| t.dirty && t.read_version.is_none()).map(|t| (&t.order, next(&t.order))).collect();
        db::insert_orders(&mut tx, &new).await?;
        for tracked in orders.values().filter(|t| t.dirty) {
            if let Some(read) = tracked.read_version
                && !db::update_order(&mut tx, &tracked.order, read, next(&tracked.order)).await?
            {
                return Err(Error::Conflict);
            }
        }
        let messages: Vec<_> = emitted.iter().map(|e| events::kitchen_message(e, now)).collect();
        outbox::enqueue_all(&mut tx, &messages).await?;
        // The kitchen acts on these orders later: keep their traces.
        saga_trace::remember(&mut tx).await?;
        tx.commit().await?;
        if !messages.is_empty() {
            self.outbox.notify();
        }
        Ok(())
    }

    /// Moves every order that is due one step on, in one transaction with one
    /// update statement. Returns how many moved.
    pub async fn run_kitchen_once(&self) -> Result<usize, Error> {
        let now = Timestamp::now();
        let due = db::due_orders(self.db.reader(), now, KITCHEN_BATCH).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut moved = Vec::with_capacity(due.len());
        for mut order in due {
            let read_version = order.version;
            let action = match order.status {
                Status::Received => Some(Action::StartCooking),
                Status::Cooking => Some(Action::StartDelivery),
                Status::Delivering => Some(Action::CompleteDelivery),
                // Settled since it was scheduled: only clear its schedule.
                Status::Delivered | Status::Cancelled | Status::Rejected => None,
            };
            let event = match action.map(|a| order.apply(&a, now)) {
                Some(Ok(Some(event))) => Some(event),
                _ => None,
            };
            moved.push((order, read_version, event));
        }
        let steps: Vec<db::Step<'_>> = moved
            .iter()
            .map(|(order, read_version, _)| db::Step {
                order,
                read_version: *read_version,
                auto_next_at: self.kitchen.next_step_at(order.status, now),
            })
            .collect();
        let mut tx = self.db.begin(Urgency::Background).await?;
        // An id missing from `saved` was moved by staff or another replica first.
        let saved = db::save_steps(&mut tx, &steps, now).await?;
        let ids: Vec<&str> = moved.iter().map(|(order, _, _)| order.order_id.as_str()).collect();
        let (_spans, traces) = saga_trace::resume(&mut tx, &ids, "store kitchen step").await?;
        let messages: Vec<_> = telemetry::with_saga_traces_sync(traces, || {
            moved
                .iter()
                .filter(|(order, _, _)| saved.contains(&order.order_id))
                .filter_map(|(_, _, event)| event.as_ref().map(|e| events::kitchen_message(e, now)))
                .collect()
        });
        outbox::enqueue_all(&mut tx, &messages).await?;
        tx.commit().await?;
        if !messages.is_empty() {
            self.outbox.notify();
        }
        Ok(messages.len())
    }
}

/// An order read or created within a batch.
struct Tracked {
    order: StoreOrder,
    /// The version read from the database; `None` for an order new in this batch.
    read_version: Option<i64>,
    /// Whether it must be written.
    dirty: bool,
}

fn receive(orders: &mut HashMap<String, Tracked>, placed: &PlacedOrder, now: Timestamp) -> Option<KitchenEvent> {
    match orders.get_mut(&placed.order_id) {
        None => {
            let (order, event) = StoreOrder::receive(placed.clone(), now);
            orders.insert(order.order_id.clone(), Tracked { order, read_version: None, dirty: true });
            Some(event)
        }
        Some(existing) => {
            // Cancelled before it arrived: keep the details, cook nothing.
            existing.dirty |= existing.order.fill_in_details(placed);
            None
        }
    }
}

fn decide_cancellation(
    orders: &mut HashMap<String, Tracked>,
    request: &CancellationRequest,
    now: Timestamp,
) -> Option<KitchenEvent> {
    let Some(tracked) = orders.get_mut(&request.order_id) else {
        let (order, event) = StoreOrder::cancelled_before_arrival(request.clone(), now);
        orders.insert(order.order_id.clone(), Tracked { order, read_version: None, dirty: true });
        return Some(event);
    };
    match tracked.order.decide_cancellation(request, now) {
        CancellationDecision::Cancelled(event) => {
            tracked.dirty = true;
            tracing::info!(order_id = %request.order_id, "order cancelled");
            Some(event)
        }
        CancellationDecision::Refused(event) => {
            tracing::info!(order_id = %request.order_id, status = ?tracked.order.status, "cancellation refused: cooking started");
            Some(event)
        }
        CancellationDecision::AlreadySettled => None,
    }
}
