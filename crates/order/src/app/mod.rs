//! The order use cases. Each owns its transaction; changes of an order and
//! the events they cause commit together, then the outbox relay is woken and
//! local watchers are told which order changed.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use foodmesh_platform::{
    breaker::{BreakerSettings, Phase, Snapshot},
    db::{Database, Urgency, WriteTx},
    group_commit::GroupCommit,
    inbox,
    metrics::{Metrics, StageTimer},
    money::Money,
    outbox::{self, OutboxSignal},
    paging::{self, Cursor, PageRequest},
    telemetry,
    time::Timestamp,
    validation::Violations,
};
use futures::future::BoxFuture;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    db::{self, NewAttempt},
    domain::{
        order::{Fact, KitchenStatus, Order, OrderStatus},
        placing::{self, Attempt, AttemptState, Menu, OrderId, PlaceOrder},
    },
    events,
};

mod error;
mod menu_cache;
pub mod rebuild;
pub use error::Error;
use menu_cache::{Lookup, ReadCache};

/// The caller's credentials, passed on unchanged to payment so that it can
/// identify the customer itself. Opaque here.
#[derive(Clone)]
pub struct Credentials(pub String);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials([redacted])")
    }
}

/// A charge to ask payment for.
#[derive(Debug)]
pub struct ChargeRequest<'a> {
    /// The order: also the idempotency key.
    pub order_id: &'a OrderId,
    /// How much.
    pub amount: Money,
    /// The customer's tokenised card.
    pub payment_token: &'a str,
    /// Who is paying.
    pub credentials: &'a Credentials,
    /// When the caller stops waiting, if it said.
    pub deadline: Option<Instant>,
}

/// Payment's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Captured.
    Captured {
        /// The payment.
        payment_id: String,
    },
    /// The card was declined.
    Declined {
        /// Why.
        reason: String,
    },
}

/// Payment could not give an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Not reachable, overloaded or too slow, or held back by order's own
    /// protection: retrying later is right. The charge may or may not have
    /// happened; a retry with the same key finds out.
    #[error("payment unavailable: {why}")]
    Unavailable {
        /// What happened.
        why: String,
        /// When trying again makes sense, if known (an open circuit knows).
        retry_after: Option<Duration>,
    },
    /// Payment refused the request for another reason (a bug on one side).
    #[error("payment refused the charge: {0}")]
    Refused(String),
}

impl GatewayError {
    /// Unavailable, with no retry hint of its own.
    pub fn unavailable(why: impl Into<String>) -> Self {
        GatewayError::Unavailable { why: why.into(), retry_after: None }
    }
}

/// How the gateway to payment is holding up, for operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentLoad {
    /// The circuit breaker's state.
    pub breaker: Snapshot,
    /// Its settings.
    pub settings: BreakerSettings,
    /// Charges in flight now.
    pub in_flight: usize,
    /// The most allowed in flight; 0: no limit.
    pub max_in_flight: usize,
    /// Calls refused because `max_in_flight` were in flight.
    pub shed_total: u64,
}

/// The payment service, behind a port.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges once per order id, however often it is called.
    fn charge<'a>(&'a self, request: ChargeRequest<'a>) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>>;

    /// If a charge would be refused right now without reaching payment (an
    /// open circuit, a full concurrency limit), how long until it is worth
    /// trying again; counted as a refusal. Lets PlaceOrder answer before
    /// writing anything.
    fn refuses_now(&self) -> Option<Duration> {
        None
    }

    /// How the gateway is holding up.
    fn load(&self) -> PaymentLoad {
        PaymentLoad {
            breaker: Snapshot {
                phase: Phase::Disabled,
                consecutive_failures: 0,
                changed_at: None,
                opened_total: 0,
                rejected_total: 0,
            },
            settings: BreakerSettings { enabled: false, failure_threshold: 0, cool_down: Duration::ZERO },
            in_flight: 0,
            max_in_flight: 0,
            shed_total: 0,
        }
    }
}

/// An update of the status view, decoded from another context's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewUpdate {
    /// The store's kitchen state changed.
    Kitchen {
        /// The order.
        order_id: String,
        /// The new state.
        status: KitchenStatus,
        /// Its version.
        version: i64,
        /// The store's reason (rejections, cancellations).
        reason: String,
        /// When.
        occurred_at: Timestamp,
    },
    /// The store refused the customer's cancellation.
    CancellationRefused {
        /// The order.
        order_id: String,
        /// Its kitchen state then.
        status: KitchenStatus,
        /// Its version then.
        version: i64,
        /// When.
        occurred_at: Timestamp,
    },
    /// The payment was refunded.
    Refunded {
        /// The order.
        order_id: String,
        /// When.
        refunded_at: Timestamp,
    },
}

impl ViewUpdate {
    /// The fact it adds to the order's history.
    pub fn fact(&self) -> Fact {
        match self {
            ViewUpdate::Kitchen { status, version, reason, occurred_at, .. } => {
                Fact::Kitchen { status: *status, version: *version, reason: reason.clone(), at: *occurred_at }
            }
            ViewUpdate::CancellationRefused { status, version, occurred_at, .. } => {
                Fact::CancellationRefused { status: *status, version: *version, at: *occurred_at }
            }
            ViewUpdate::Refunded { refunded_at, .. } => Fact::Refunded { at: *refunded_at },
        }
    }

    /// The order it concerns.
    pub fn order_id(&self) -> &str {
        match self {
            ViewUpdate::Kitchen { order_id, .. }
            | ViewUpdate::CancellationRefused { order_id, .. }
            | ViewUpdate::Refunded { order_id, .. } => order_id,
        }
    }
}

/// A catalog event, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogUpdate {
    /// The store's menu.
    pub menu: Menu,
    /// Its version.
    pub version: i64,
}

/// Settings of the use cases.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long CancelOrder waits for the store.
    pub cancel_wait: Duration,
}

/// Faults a test can switch on, each off by default and named for what it
/// simulates. They exist to prove recovery paths with the real processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// PlaceOrder stops right after payment captured the charge, before the
    /// order commits, as if the process died there: the customer gets
    /// UNAVAILABLE and the attempt stays PENDING. The reconciler
    /// ([`OrderApp::reconcile_captures`]) must complete the order.
    pub stop_after_charge: bool,
}

/// A charge payment captured, from its `PaymentCaptured` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The order it pays for (the idempotency key of the charge).
    pub order_id: String,
    /// The payment.
    pub payment_id: String,
    /// The amount captured.
    pub amount: Money,
}

/// How many times a write is retried after losing a race.
const MAX_ATTEMPTS: usize = 5;
/// The most requests written by one group commit.
const GROUP_COMMIT: usize = 128;
/// How long a menu read from the catalog copy is reused.
const MENU_CACHE: Duration = Duration::from_secs(1);
/// How often a watcher re-reads an order even without a local change signal
/// (another replica may have applied the change).
const WATCH_POLL: Duration = Duration::from_millis(500);

/// The order service's use cases.
pub struct OrderApp {
    db: Database,
    outbox: OutboxSignal,
    payment: Arc<dyn PaymentGateway>,
    changes: broadcast::Sender<String>,
    timing: Timing,
    faults: Faults,
    menus: ReadCache<Option<Menu>>,
    writes: GroupCommit<PlacingWrite, PlacingWritten, Error>,
    stages: PlaceStages,
}

/// Timers of PlaceOrder's stages, so an operator sees where its time goes:
/// recording the attempt, the charge, committing the paid order.
#[derive(Debug, Clone, Default)]
struct PlaceStages {
    attempt: StageTimer,
    charge: StageTimer,
    placement: StageTimer,
}

/// A write of PlaceOrder: its attempt, recorded before payment is asked, or
/// the paid order. Both kinds go to one group commit, so that requests at
/// either step share each round's transaction and sync, rather than two
/// group commits taking turns on the writer (measured in docs/benchmarks.md).
#[derive(Debug, Clone)]
enum PlacingWrite {
    Attempt(NewAttempt),
    Placement(Placement),
}

/// What became of a [`PlacingWrite`].
#[derive(Debug)]
enum PlacingWritten {
    /// Whether the attempt was recorded now (`false`: one with its customer
    /// and request id exists).
    Attempt(bool),
    /// The order, or `None` when a concurrent request committed it first
    /// (boxed: an order is large beside a flag).
    Placement(Option<Box<Order>>),
}

/// A paid order to commit.
#[derive(Debug, Clone)]
struct Placement {
    attempt: Attempt,
    customer_id: String,
    payment_id: String,
    /// The trace of the request (or reconciler) that placed it: the group
    /// commit writes the `OrderPlaced` event from another task.
    traceparent: Option<String>,
}

/// Writes a round of PlaceOrder's writes in one transaction: new attempts
/// recorded, and paid orders committed (their attempts settled, the orders and
/// their `OrderPlaced` events written). One answer per write, in order.
async fn commit_placing(
    db: &Database,
    outbox: &OutboxSignal,
    changes: &broadcast::Sender<String>,
    items: Vec<PlacingWrite>,
) -> Result<Vec<PlacingWritten>, Error> {
    let now = Timestamp::now();
    let is_attempt: Vec<bool> = items.iter().map(|w| matches!(w, PlacingWrite::Attempt(_))).collect();
    let (mut attempts, mut placements) = (Vec::new(), Vec::new());
    for item in items {
        match item {
            PlacingWrite::Attempt(new) => attempts.push(new),
            PlacingWrite::Placement(placement) => placements.push(placement),
        }
    }
    let mut tx = db.begin(Urgency::Request).await?;
    let recorded = db::insert_attempts(&mut tx, &attempts).await?;
    let (orders, placed) = place_orders(&mut tx, placements, now).await?;
    tx.commit().await?;
    if !orders.is_empty() {
        outbox.notify();
    }
    for order in &orders {
        let _ = changes.send(order.id.to_string());
    }
    let (mut attempts, mut placed) = (attempts.iter(), placed.into_iter());
    Ok(is_attempt
        .into_iter()
        .map(|attempt| match attempt {
            true => PlacingWritten::Attempt(attempts.next().is_some_and(|n| recorded.contains(n.attempt.order_id.as_str()))),
            false => PlacingWritten::Placement(placed.next().flatten().map(Box::new)),
        })
        .collect())
}

/// Commits paid orders within `tx`. Returns the orders written and, per
/// placement, its order or `None` for one a concurrent request committed
/// first.
async fn place_orders(
    tx: &mut WriteTx,
    items: Vec<Placement>,
    now: Timestamp,
) -> Result<(Vec<Order>, Vec<Option<Order>>), Error> {
    if items.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let settling: Vec<(&OrderId, &str)> = items.iter().map(|p| (&p.attempt.order_id, p.payment_id.as_str())).collect();
    let settled = db::settle_placed(tx, &settling).await?;
    let (mut orders, mut messages, mut results) = (Vec::new(), Vec::new(), Vec::new());
    for p in items {
        if !settled.contains(p.attempt.order_id.as_str()) {
            results.push(None);
            continue;
        }
        let (order, event) = Order::place(p.attempt.order_id, &p.customer_id, p.attempt.priced, &p.payment_id, now);
        // The event continues the trace of the request that placed the order.
        let traces = p.traceparent.map(|tp| HashMap::from([(order.id.as_str().to_owned(), tp)])).unwrap_or_default();
        messages.push(telemetry::with_saga_traces_sync(traces, || events::order_message(&event, now)));
        orders.push(order.clone());
        results.push(Some(order));
    }
    db::insert_orders(tx, &orders).await?;
    outbox::enqueue_all(tx, &messages).await?;
    Ok((orders, results))
}

impl std::fmt::Debug for OrderApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderApp").field("timing", &self.timing).finish_non_exhaustive()
    }
}

impl OrderApp {
    /// The use cases over `db`, paying through `payment`.
    pub fn new(db: Database, outbox: OutboxSignal, payment: Arc<dyn PaymentGateway>, timing: Timing, faults: Faults) -> Self {
        let changes = broadcast::channel(4096).0;
        let writes = {
            let (db, outbox, changes) = (db.clone(), outbox.clone(), changes.clone());
            GroupCommit::start(GROUP_COMMIT, move |items: Vec<PlacingWrite>| {
                let (db, outbox, changes) = (db.clone(), outbox.clone(), changes.clone());
                async move { commit_placing(&db, &outbox, &changes, items).await }
            })
        };
        let menus = ReadCache::new(MENU_CACHE);
        Self { db, outbox, payment, changes, timing, faults, menus, writes, stages: PlaceStages::default() }
    }

    /// Records PlaceOrder's stages in `metrics`
    /// (`foodmesh_stage_duration_seconds{operation="PlaceOrder"}`).
    pub fn with_stage_metrics(mut self, metrics: &Metrics) -> Self {
        let stage = |name| metrics.stage("PlaceOrder", name);
        self.stages = PlaceStages { attempt: stage("attempt"), charge: stage("charge"), placement: stage("placement") };
        self
    }

    /// Records a new attempt; `false` when one with its customer and request
    /// id exists.
    async fn record_attempt(&self, new: NewAttempt) -> Result<bool, Error> {
        Ok(matches!(self.writes.submit(PlacingWrite::Attempt(new)).await?, PlacingWritten::Attempt(true)))
    }

    /// Commits a paid order; `None` when a concurrent request committed it first.
    async fn commit_placement(&self, placement: Placement) -> Result<Option<Order>, Error> {
        match self.writes.submit(PlacingWrite::Placement(placement)).await? {
            PlacingWritten::Placement(order) => Ok(order.map(|o| *o)),
            // Answers come in the order of the writes; never an attempt's here.
            PlacingWritten::Attempt(_) => Ok(None),
        }
    }

    /// How the gateway to payment is holding up (circuit breaker, in-flight charges).
    pub fn payment_load(&self) -> PaymentLoad {
        self.payment.load()
    }

    /// The gauges order adds to the common metrics: the breaker in front of
    /// payment (0 closed or off, 1 half-open, 2 open) and orders by status.
    pub async fn metric_samples(&self) -> Vec<foodmesh_platform::metrics::Sample> {
        let state = match self.payment.load().breaker.phase {
            Phase::Closed | Phase::Disabled => 0,
            Phase::HalfOpen => 1,
            Phase::Open => 2,
        };
        let mut samples = vec![("circuit_breaker_state", vec![("dependency".to_owned(), "payment".to_owned())], state)];
        match db::count_by_status(self.db.reader()).await {
            Ok(counts) => {
                for (status, count) in counts {
                    samples.push(("orders", vec![("status".to_owned(), status.to_lowercase())], count));
                }
            }
            Err(err) => tracing::debug!(error = %err, "orders by status not sampled"),
        }
        samples
    }

    /// Places and pays an order. The order exists only if payment captured the
    /// charge; a repeated request returns the same order and charges once.
    pub async fn place(&self, request: PlaceOrder, credentials: &Credentials, deadline: Option<Instant>) -> Result<Order, Error> {
        let fingerprint = request.fingerprint();
        let menu = self.menu(&request.store_id).await?;
        let attempt = match placing::price(&request, menu.as_ref()) {
            Ok(priced) => {
                if let Some(retry_after) = self.payment.refuses_now() {
                    // Payment is held back (open circuit, full limit): answer
                    // now, writing nothing. A repeat of a request that was
                    // already settled still gets its stored answer below.
                    let attempt = db::attempt(self.db.reader(), &request.customer_id, &request.request_id).await?;
                    if !attempt.is_some_and(|a| a.state != AttemptState::Pending) {
                        return Err(Error::PaymentUnavailable { retry_after: Some(retry_after) });
                    }
                }
                let attempt = Attempt {
                    order_id: OrderId::generate(),
                    fingerprint: fingerprint.clone(),
                    priced,
                    state: AttemptState::Pending,
                    payment_id: String::new(),
                    decline_reason: String::new(),
                };
                let new =
                    NewAttempt { attempt, customer_id: request.customer_id.clone(), request_id: request.request_id.clone() };
                let started = Instant::now();
                let recorded = self.record_attempt(new.clone()).await;
                self.stages.attempt.since(started);
                if recorded? {
                    new.attempt
                } else {
                    // A repeat of this request (or a concurrent one): its record decides.
                    db::attempt(&mut *self.db.write(Urgency::Request).await?, &request.customer_id, &request.request_id)
                        .await?
                        .ok_or(Error::Conflict)?
                }
            }
            Err(violations) => {
                // A well-formed repeat of a request placed before stands even if
                // the menu changed since; anything else is invalid.
                let mut shape = Violations::new();
                placing::check_request_shape(&request, &mut shape);
                match db::attempt(self.db.reader(), &request.customer_id, &request.request_id).await? {
                    Some(existing) if shape.is_empty() => existing,
                    _ => return Err(violations.into()),
                }
            }
        };
        if attempt.fingerprint != fingerprint {
            return Err(Error::RequestIdReused);
        }
        let order_id = attempt.order_id.clone();
        match attempt.state {
            AttemptState::Placed => return self.stored_order(&order_id).await,
            AttemptState::Declined => return Err(Error::PaymentDeclined { reason: attempt.decline_reason }),
            AttemptState::Pending => {}
        }

        let charge = ChargeRequest {
            order_id: &order_id,
            amount: attempt.priced.total,
            payment_token: &request.payment_token,
            credentials,
            deadline,
        };
        let started = Instant::now();
        let charged = self.payment.charge(charge).await;
        self.stages.charge.since(started);
        match charged {
            Ok(ChargeOutcome::Captured { .. }) if self.faults.stop_after_charge => {
                tracing::error!(order_id = %order_id, "fault stop_after_charge: the order is not committed");
                Err(Error::PaymentUnavailable { retry_after: None })
            }
            Ok(ChargeOutcome::Captured { payment_id }) => {
                let started = Instant::now();
                let placed = self.commit_placed(attempt, &request.customer_id, &payment_id).await;
                self.stages.placement.since(started);
                placed
            }
            Ok(ChargeOutcome::Declined { reason }) => {
                db::settle_attempt(&mut *self.db.write(Urgency::Request).await?, &order_id, AttemptState::Declined, "", &reason)
                    .await?;
                Err(Error::PaymentDeclined { reason })
            }
            Err(GatewayError::Unavailable { why, retry_after }) => {
                // The attempt stays PENDING: a retry with the same request id
                // asks payment again, which answers from its idempotency record;
                // if the charge went through after all, the reconciler
                // completes the order from payment's PaymentCaptured event.
                tracing::warn!(order_id = %order_id, reason = %why, "payment unavailable; no order taken");
                Err(Error::PaymentUnavailable { retry_after })
            }
            Err(GatewayError::Refused(why)) => Err(Error::PaymentFailed(why)),
        }
    }

    /// Completes the orders whose charge payment captured but which were
    /// never committed: the process stopped between the charge and its own
    /// commit, or the request timed out while payment went on. The attempt
    /// holds the priced order, so nothing is asked of the customer. Placing
    /// is idempotent: an order that its request committed meanwhile stays as
    /// it is, and nothing is published twice. Returns how many it completed.
    pub async fn reconcile_captures(&self, captures: &[Capture]) -> Result<usize, Error> {
        let ids: Vec<&str> = captures.iter().map(|c| c.order_id.as_str()).collect();
        let pending = {
            let mut conn = self.db.reader().acquire().await?;
            db::pending_attempts(&mut conn, &ids).await?
        };
        let mut completed = 0;
        for (attempt, customer_id) in pending {
            let Some(capture) = captures.iter().find(|c| c.order_id == attempt.order_id.as_str()) else { continue };
            if capture.amount != attempt.priced.total {
                // Cannot happen with one pricing per attempt; never guess.
                tracing::error!(
                    order_id = %attempt.order_id, captured = %capture.amount, priced = %attempt.priced.total,
                    "a capture that differs from its priced order; left for an operator"
                );
                continue;
            }
            let traceparent = telemetry::saga_traceparent(attempt.order_id.as_str());
            let placement = Placement { attempt, customer_id, payment_id: capture.payment_id.clone(), traceparent };
            // `None`: its request committed it after all, a moment ago.
            if let Some(order) = self.commit_placement(placement).await? {
                tracing::warn!(order_id = %order.id, payment_id = %capture.payment_id, "order completed from its captured payment");
                completed += 1;
            }
        }
        Ok(completed)
    }

    async fn commit_placed(&self, attempt: Attempt, customer_id: &str, payment_id: &str) -> Result<Order, Error> {
        let order_id = attempt.order_id.clone();
        let traceparent = telemetry::traceparent(&tracing::Span::current());
        let placement =
            Placement { attempt, customer_id: customer_id.to_owned(), payment_id: payment_id.to_owned(), traceparent };
        match self.commit_placement(placement).await? {
            Some(order) => {
                tracing::info!(order_id = %order.id, total = %order.total, payment_id, "order placed");
                Ok(order)
            }
            // A concurrent request with the same id committed the order first.
            None => self.stored_order(&order_id).await,
        }
    }

    /// A store's menu from the catalog copy, cached for a second: every order
    /// needs it, and it changes rarely. Catalog events applied here
    /// invalidate the cache once committed; those applied by another replica
    /// show within the second.
    async fn menu(&self, store_id: &str) -> Result<Option<Menu>, Error> {
        let ticket = match self.menus.lookup(store_id) {
            Lookup::Fresh(menu) => return Ok(menu),
            Lookup::Missing(ticket) => ticket,
        };
        let menu = {
            let mut conn = self.db.reader().acquire().await?;
            db::menu(&mut conn, store_id).await?
        };
        self.menus.store(ticket, store_id, menu.clone());
        Ok(menu)
    }

    async fn stored_order(&self, order_id: &OrderId) -> Result<Order, Error> {
        db::order(&mut *self.db.write(Urgency::Request).await?, order_id.as_str()).await?.ok_or(Error::Conflict)
    }

    /// One of the customer's orders; someone else's is not found.
    pub async fn get(&self, customer_id: &str, order_id: &str) -> Result<Order, Error> {
        db::order(self.db.reader(), order_id).await?.filter(|o| o.customer_id == customer_id).ok_or(Error::NotFound)
    }

    /// A page of the customer's orders, newest first.
    pub async fn list(&self, customer_id: &str, page: &PageRequest) -> Result<(Vec<Order>, String), Error> {
        let rows = db::orders_of_customer(self.db.reader(), customer_id, page.after.as_ref(), i64::from(page.size) + 1).await?;
        Ok(paging::finish(rows, page.size, |o| Cursor { key: o.placed_at.as_micros(), id: o.id.to_string() }))
    }

    /// Asks the store to cancel, then waits (at most the configured wait, and
    /// never past `deadline`) for its answer.
    pub async fn cancel(
        &self,
        customer_id: &str,
        order_id: &str,
        reason: &str,
        deadline: Option<Instant>,
    ) -> Result<Order, Error> {
        let mut changes = self.changes.subscribe();
        let mut requested = false;
        for _ in 0..MAX_ATTEMPTS {
            let now = Timestamp::now();
            let mut tx = self.db.begin(Urgency::Request).await?;
            let mut order =
                db::order(&mut *tx, order_id).await?.filter(|o| o.customer_id == customer_id).ok_or(Error::NotFound)?;
            let read_version = order.version;
            let Some(event) = order.request_cancellation(reason, now)? else {
                requested = true;
                break;
            };
            if !db::update_order(&mut tx, &order, read_version).await? {
                tx.rollback().await?;
                continue;
            }
            outbox::enqueue(&mut tx, &events::order_message(&event, now)).await?;
            tx.commit().await?;
            self.outbox.notify();
            self.changed(order_id);
            tracing::info!(order_id, "cancellation requested");
            requested = true;
            break;
        }
        if !requested {
            return Err(Error::Conflict);
        }

        let mut until = Instant::now() + self.timing.cancel_wait;
        if let Some(deadline) = deadline {
            // Leave the caller time to receive the answer.
            until = until.min(deadline.checked_sub(Duration::from_millis(50)).unwrap_or(deadline));
        }
        loop {
            let order = self.get(customer_id, order_id).await?;
            match order.status {
                OrderStatus::Cancelled => return Ok(order),
                OrderStatus::CancellationRequested if Instant::now() < until => {}
                OrderStatus::CancellationRequested => return Ok(order),
                other => return Err(Error::NotCancellable(other)),
            }
            let wait = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(200));
            tokio::select! {
                _ = wait_for_change(&mut changes, order_id) => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends `order` and then the order again after every change, until it is
    /// final, the receiver goes away, or `stop` (the service is stopping).
    pub async fn follow(&self, order: Order, sink: mpsc::Sender<Result<Order, Error>>, stop: CancellationToken) {
        let mut changes = self.changes.subscribe();
        let order_id = order.id.to_string();
        let customer_id = order.customer_id.clone();
        let mut seen = order.version;
        let done = order.is_final();
        if sink.send(Ok(order)).await.is_err() || done {
            return;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    let _ = sink.send(Err(Error::ShuttingDown)).await;
                    return;
                }
                () = sink.closed() => return,
                _ = wait_for_change(&mut changes, &order_id) => {}
                () = tokio::time::sleep(WATCH_POLL) => {}
            }
            let order = match self.get(&customer_id, &order_id).await {
                Ok(order) => order,
                Err(err) => {
                    let _ = sink.send(Err(err)).await;
                    return;
                }
            };
            if order.version != seen {
                seen = order.version;
                let done = order.is_final();
                if sink.send(Ok(order)).await.is_err() || done {
                    return;
                }
            }
        }
    }

    /// Applies a batch of view updates from one consumer, in one transaction:
    /// one inbox statement, one read of every order concerned, one write per
    /// order that changed (however many of its events the batch holds).
    ///
    /// Each write checks the version read. On PostgreSQL a request (a
    /// cancellation) or the other view consumer can change an order between
    /// this read and this write; the orders are then read again within the
    /// transaction and the batch applied to them, instead of failing the
    /// whole batch into a redelivery. Facts already recorded are skipped, so
    /// applying twice changes nothing.
    pub async fn apply_view_updates(&self, consumer: &str, updates: &[(String, ViewUpdate)]) -> Result<(), Error> {
        let mut tx = self.db.begin(Urgency::Background).await?;
        let event_ids: Vec<&str> = updates.iter().map(|(id, _)| id.as_str()).collect();
        let fresh = inbox::first_deliveries(&mut tx, consumer, &event_ids).await?;
        let mut order_ids: Vec<&str> = updates.iter().filter(|(id, _)| fresh.contains(id)).map(|(_, u)| u.order_id()).collect();
        order_ids.sort_unstable();
        order_ids.dedup();
        let mut changed: Vec<String> = Vec::new();
        for _ in 0..2 {
            let orders = db::orders_by_ids(&mut tx, &order_ids).await?;
            let (written, all_saved) = record_updates(&mut tx, orders, &fresh, updates).await?;
            for order_id in written {
                if !changed.contains(&order_id) {
                    changed.push(order_id);
                }
            }
            if all_saved {
                tx.commit().await?;
                for order_id in changed {
                    self.changed(&order_id);
                }
                return Ok(());
            }
        }
        // Changed under this transaction twice (replicas busy on the same
        // orders): the batch is retried as a whole.
        Err(Error::Conflict)
    }

    /// Applies catalog events: a newer version replaces a store's menu.
    pub async fn apply_catalogs(&self, consumer: &str, updates: &[(String, CatalogUpdate)]) -> Result<(), Error> {
        let mut tx = self.db.begin(Urgency::Background).await?;
        for (event_id, update) in updates {
            if !inbox::first_delivery(&mut tx, consumer, event_id).await? {
                continue;
            }
            if update.version > db::catalog_version(&mut tx, &update.menu.store_id).await? {
                db::save_catalog(&mut tx, &update.menu, update.version).await?;
                tracing::info!(store_id = %update.menu.store_id, version = update.version, "menu updated");
            }
        }
        tx.commit().await?;
        // After the commit: a read that begins now sees the new menus, and one
        // that began before is not kept (see `menu_cache`).
        self.menus.invalidate();
        Ok(())
    }

    fn changed(&self, order_id: &str) {
        // No receiver is fine: nobody is watching.
        let _ = self.changes.send(order_id.to_owned());
    }
}

/// Records the facts of the `fresh` updates on `orders` and writes those
/// that changed, each if still at the version read. Returns the ids of the
/// orders written, and whether every one was (`false`: one had moved on
/// since it was read).
async fn record_updates(
    tx: &mut WriteTx,
    orders: Vec<Order>,
    fresh: &HashSet<String>,
    updates: &[(String, ViewUpdate)],
) -> Result<(Vec<String>, bool), Error> {
    let mut orders: HashMap<String, (Order, i64)> = orders
        .into_iter()
        .map(|o| {
            let read_version = o.version;
            (o.id.to_string(), (o, read_version))
        })
        .collect();
    let mut applied = HashSet::new();
    let mut changed: Vec<String> = Vec::new();
    for (event_id, update) in updates {
        // Once each: a message delivered twice within one batch applies once.
        if !fresh.contains(event_id) || !applied.insert(event_id.as_str()) {
            continue;
        }
        let Some((order, _)) = orders.get_mut(update.order_id()) else {
            tracing::warn!(order_id = update.order_id(), "an event about an order this service does not have; ignored");
            continue;
        };
        if order.record(update.fact()) && !changed.iter().any(|id| id == update.order_id()) {
            changed.push(update.order_id().to_owned());
        }
    }
    let writes: Vec<(&Order, i64)> = changed.iter().map(|id| (&orders[id].0, orders[id].1)).collect();
    let saved = db::update_orders(tx, &writes).await?;
    let all_saved = saved.len() == writes.len();
    Ok((changed.into_iter().filter(|id| saved.contains(id)).collect(), all_saved))
}

/// Resolves when `order_id` may have changed: its own signal, or lost signals.
async fn wait_for_change(changes: &mut broadcast::Receiver<String>, order_id: &str) {
    loop {
        match changes.recv().await {
            Ok(id) if id == order_id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
