//! An order as the customer sees it.
//!
//! Its status view is a function of a set of facts, whatever order they
//! arrived in: events from different streams (and redeliveries) arrive in no
//! guaranteed order, and a view rebuilt by replaying the streams must equal
//! the one built live. Each fact is kept once (in `history`); the view is the
//! fold of the facts sorted by when they happened:
//!
//! - the order's own changes (placed, cancellation requested);
//! - the store's kitchen state, versioned: the highest version wins, an older
//!   one only fills in the timeline;
//! - the store's refusal of a cancellation; the payment's refund.
//!
//! | kitchen state | cancellation | status |
//! |---|---|---|
//! | not received yet | none or refused | PLACED |
//! | RECEIVED | none or refused | ACCEPTED |
//! | not received / RECEIVED | requested | CANCELLATION_REQUESTED |
//! | COOKING, DELIVERING, DELIVERED | any | the same |
//! | CANCELLED, REJECTED | any | the same |

use foodmesh_platform::{money::Money, time::Timestamp};

use super::placing::{OrderId, PricedLine, PricedOrder};

/// Where an order stands, for the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStatus {
    /// Paid, on its way to the store.
    Placed,
    /// In the store's queue.
    Accepted,
    /// Being cooked.
    Cooking,
    /// On its way.
    Delivering,
    /// Delivered.
    Delivered,
    /// The customer asked to cancel; the store has not answered.
    CancellationRequested,
    /// Cancelled.
    Cancelled,
    /// Refused by the store.
    Rejected,
}

/// The kitchen state reported by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KitchenStatus {
    /// In the queue.
    Received,
    /// Cooking.
    Cooking,
    /// Out for delivery.
    Delivering,
    /// Delivered.
    Delivered,
    /// Cancelled.
    Cancelled,
    /// Rejected.
    Rejected,
}

/// Where the customer's cancellation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// Never asked.
    None,
    /// Asked; waiting for the store.
    Requested,
    /// The store refused: cooking had started.
    Refused,
}

/// One entry of the status timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The status entered.
    pub status: OrderStatus,
    /// When, in the service that made the change.
    pub occurred_at: Timestamp,
    /// A short explanation.
    pub note: String,
}

/// An order and its status view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Its id.
    pub id: OrderId,
    /// Its customer.
    pub customer_id: String,
    /// Its store.
    pub store_id: String,
    /// The store's name when ordered.
    pub store_name: String,
    /// What was ordered.
    pub lines: Vec<PricedLine>,
    /// What was charged.
    pub total: Money,
    /// Where to deliver.
    pub delivery_address: String,
    /// The captured payment.
    pub payment_id: String,
    /// When it was placed.
    pub placed_at: Timestamp,
    /// The latest kitchen state applied, and its version.
    pub kitchen: Option<(KitchenStatus, i64)>,
    /// The customer's cancellation.
    pub cancellation: Cancellation,
    /// When the payment was refunded.
    pub refunded_at: Option<Timestamp>,
    /// The derived status.
    pub status: OrderStatus,
    /// Why it was rejected or cancelled.
    pub status_reason: String,
    /// Every status entered, oldest first.
    pub timeline: Vec<StatusChange>,
    /// When the view last changed.
    pub updated_at: Timestamp,
    /// +1 on every change of the view; watchers and writers compare it.
    pub version: i64,
    /// Every fact the view is derived from, each once, in arrival order.
    pub history: Vec<Fact>,
}

/// Something that happened to an order; the status view is derived from the
/// set of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// The order was placed (paid).
    Placed {
        /// When.
        at: Timestamp,
    },
    /// The customer asked to cancel.
    CancellationRequested {
        /// When.
        at: Timestamp,
    },
    /// The store reported a kitchen state.
    Kitchen {
        /// The state.
        status: KitchenStatus,
        /// Its version: the store numbers an order's states 1, 2, ...
        version: i64,
        /// The store's reason (rejections, cancellations).
        reason: String,
        /// When.
        at: Timestamp,
    },
    /// The store refused the cancellation: cooking had started.
    CancellationRefused {
        /// The kitchen state then.
        status: KitchenStatus,
        /// Its version then.
        version: i64,
        /// When.
        at: Timestamp,
    },
    /// The payment was refunded.
    Refunded {
        /// When.
        at: Timestamp,
    },
}

impl Fact {
    /// When it happened.
    pub fn at(&self) -> Timestamp {
        match self {
            Fact::Placed { at }
            | Fact::CancellationRequested { at }
            | Fact::Kitchen { at, .. }
            | Fact::CancellationRefused { at, .. }
            | Fact::Refunded { at } => *at,
        }
    }

    /// Facts with the same identity are one fact delivered twice: a kitchen
    /// state is identified by its version, every other fact by its kind.
    fn same_as(&self, other: &Fact) -> bool {
        match (self, other) {
            (Fact::Kitchen { version: a, .. }, Fact::Kitchen { version: b, .. }) => a == b,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }

    /// Breaks ties between facts of the same instant in causal order.
    fn rank(&self) -> (u8, i64) {
        match self {
            Fact::Placed { .. } => (0, 0),
            Fact::Kitchen { version, .. } => (1, *version),
            Fact::CancellationRequested { .. } => (2, 0),
            Fact::CancellationRefused { .. } => (3, 0),
            Fact::Refunded { .. } => (4, 0),
        }
    }
}

/// What an order change tells the other contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderEvent {
    /// A paid order was placed.
    Placed(Order),
    /// The customer asked to cancel.
    CancellationRequested {
        /// The order after the request.
        order: Order,
        /// The customer's words.
        reason: String,
    },
}

/// The order cannot do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// Cooking started, or the order is over.
    #[error("an order that is {0:?} cannot be cancelled")]
    NotCancellable(OrderStatus),
}

impl Order {
    /// A paid order comes into being.
    pub fn place(id: OrderId, customer_id: &str, priced: PricedOrder, payment_id: &str, now: Timestamp) -> (Order, OrderEvent) {
        let PricedOrder { store_id, store_name, lines, total, delivery_address } = priced;
        let order = Order {
            id,
            customer_id: customer_id.to_owned(),
            store_id,
            store_name,
            lines,
            total,
            delivery_address,
            payment_id: payment_id.to_owned(),
            placed_at: now,
            kitchen: None,
            cancellation: Cancellation::None,
            refunded_at: None,
            status: OrderStatus::Placed,
            status_reason: String::new(),
            timeline: Vec::new(),
            updated_at: now,
            version: 1,
            history: vec![Fact::Placed { at: now }],
        };
        let mut order = order;
        order.derive();
        let event = OrderEvent::Placed(order.clone());
        (order, event)
    }

    /// Whether nothing will change any more: delivered, or cancelled or
    /// rejected with the refund recorded.
    pub fn is_final(&self) -> bool {
        match self.status {
            OrderStatus::Delivered => true,
            OrderStatus::Cancelled | OrderStatus::Rejected => self.refunded_at.is_some(),
            _ => false,
        }
    }

    /// The customer asks to cancel. `Ok(None)` if the request is already in
    /// or the order already cancelled: nothing new to tell the store.
    pub fn request_cancellation(&mut self, reason: &str, now: Timestamp) -> Result<Option<OrderEvent>, OrderError> {
        match self.status {
            OrderStatus::Placed | OrderStatus::Accepted => {}
            OrderStatus::CancellationRequested | OrderStatus::Cancelled => return Ok(None),
            other => return Err(OrderError::NotCancellable(other)),
        }
        if !self.record(Fact::CancellationRequested { at: now }) {
            return Ok(None);
        }
        Ok(Some(OrderEvent::CancellationRequested { order: self.clone(), reason: reason.to_owned() }))
    }

    /// The store reports a kitchen state. Returns whether the view changed.
    pub fn apply_kitchen(&mut self, status: KitchenStatus, version: i64, reason: &str, occurred_at: Timestamp) -> bool {
        self.record(Fact::Kitchen { status, version, reason: reason.to_owned(), at: occurred_at })
    }

    /// The store refused the cancellation; `status` and `version` are its
    /// kitchen state at the time. Returns whether the view changed.
    pub fn apply_cancellation_refused(&mut self, status: KitchenStatus, version: i64, occurred_at: Timestamp) -> bool {
        self.record(Fact::CancellationRefused { status, version, at: occurred_at })
    }

    /// The payment was refunded. Returns whether the view changed.
    pub fn apply_refund(&mut self, refunded_at: Timestamp) -> bool {
        self.record(Fact::Refunded { at: refunded_at })
    }

    /// Adds a fact unless it is known already; returns whether it was new.
    /// Every new fact is one change of the view (one version).
    pub fn record(&mut self, fact: Fact) -> bool {
        if self.history.iter().any(|known| known.same_as(&fact)) {
            return false;
        }
        self.history.push(fact);
        self.derive();
        self.version += 1;
        true
    }

    /// The order with its view derived again from `facts` alone (and its
    /// placement), as a replay of the streams finds them. The version is the
    /// caller's: it orders writes, it is not part of the view.
    pub fn rebuilt(&self, facts: impl IntoIterator<Item = Fact>) -> Order {
        let mut order = Order { history: vec![Fact::Placed { at: self.placed_at }], ..self.clone() };
        for fact in facts {
            if !order.history.iter().any(|known| known.same_as(&fact)) {
                order.history.push(fact);
            }
        }
        order.derive();
        order
    }

    /// Whether two copies of an order show the same view: everything but the
    /// version and the arrival order of the facts.
    pub fn same_view(&self, other: &Order) -> bool {
        let strip = |o: &Order| Order { version: 0, history: Vec::new(), ..o.clone() };
        strip(self) == strip(other)
            && self.history.len() == other.history.len()
            && self.history.iter().all(|f| other.history.contains(f))
    }

    /// Derives the view from the history: the facts sorted by time, each
    /// entering the timeline when it changes the status.
    fn derive(&mut self) {
        let mut facts: Vec<&Fact> = self.history.iter().collect();
        // Placed first even if another host's clock is behind.
        facts.sort_by_key(|f| (!matches!(f, Fact::Placed { .. }), f.at(), f.rank()));
        let mut kitchen: Option<(KitchenStatus, i64)> = None;
        let mut cancellation = Cancellation::None;
        let mut status_reason = String::new();
        let mut refunded_at = None;
        let mut timeline: Vec<StatusChange> = Vec::new();
        let mut updated_at = self.placed_at;
        for fact in facts {
            let note = match fact {
                Fact::Placed { .. } => "paid",
                Fact::CancellationRequested { .. } => {
                    if cancellation == Cancellation::None {
                        cancellation = Cancellation::Requested;
                    }
                    "asked by the customer"
                }
                Fact::Kitchen { status, version, reason, .. } => {
                    if kitchen.is_none_or(|(_, applied)| *version > applied) {
                        kitchen = Some((*status, *version));
                        if matches!(status, KitchenStatus::Cancelled | KitchenStatus::Rejected) {
                            status_reason = reason.clone();
                        }
                    }
                    kitchen_note(*status, reason)
                }
                Fact::CancellationRefused { status, version, .. } => {
                    cancellation = Cancellation::Refused;
                    if kitchen.is_none_or(|(_, applied)| *version > applied) {
                        kitchen = Some((*status, *version));
                    }
                    "too late to cancel: cooking had started"
                }
                Fact::Refunded { at } => {
                    refunded_at = Some(*at);
                    ""
                }
            };
            updated_at = updated_at.max(fact.at());
            let status = derived(kitchen.map(|(s, _)| s), cancellation);
            if timeline.last().is_none_or(|last| last.status != status) {
                timeline.push(StatusChange { status, occurred_at: fact.at(), note: note.to_owned() });
            }
        }
        self.kitchen = kitchen;
        self.cancellation = cancellation;
        self.status_reason = status_reason;
        self.refunded_at = refunded_at;
        self.status = derived(kitchen.map(|(s, _)| s), cancellation);
        self.timeline = timeline;
        self.updated_at = updated_at;
    }
}

fn kitchen_note(status: KitchenStatus, reason: &str) -> &str {
    match (status, reason.is_empty()) {
        (KitchenStatus::Received, _) => "the restaurant received it",
        (KitchenStatus::Cooking, _) => "the kitchen started cooking",
        (KitchenStatus::Delivering, _) => "out for delivery",
        (KitchenStatus::Delivered, _) => "delivered",
        (KitchenStatus::Cancelled | KitchenStatus::Rejected, false) => reason,
        (KitchenStatus::Cancelled, true) => "cancelled",
        (KitchenStatus::Rejected, true) => "rejected by the restaurant",
    }
}

fn derived(kitchen: Option<KitchenStatus>, cancellation: Cancellation) -> OrderStatus {
    match (kitchen, cancellation) {
        (None | Some(KitchenStatus::Received), Cancellation::Requested) => OrderStatus::CancellationRequested,
        (None, _) => OrderStatus::Placed,
        (Some(KitchenStatus::Received), _) => OrderStatus::Accepted,
        (Some(KitchenStatus::Cooking), _) => OrderStatus::Cooking,
        (Some(KitchenStatus::Delivering), _) => OrderStatus::Delivering,
        (Some(KitchenStatus::Delivered), _) => OrderStatus::Delivered,
        (Some(KitchenStatus::Cancelled), _) => OrderStatus::Cancelled,
        (Some(KitchenStatus::Rejected), _) => OrderStatus::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use foodmesh_platform::money::Currency;

    use super::*;

    fn t(n: i64) -> Timestamp {
        Timestamp::from_micros(n)
    }

    fn placed() -> Order {
        let total = Money::new(Currency::KRW, 18_000).expect("valid");
        let priced = PricedOrder {
            store_id: "s".into(),
            store_name: "S".into(),
            lines: vec![PricedLine {
                menu_item_id: "i".into(),
                name: "I".into(),
                quantity: 1,
                unit_price: total,
                line_total: total,
            }],
            total,
            delivery_address: "a".into(),
        };
        Order::place(OrderId::from_existing("o"), "alice", priced, "pay_1", t(1)).0
    }

    fn statuses(order: &Order) -> Vec<OrderStatus> {
        order.timeline.iter().map(|c| c.status).collect()
    }

    #[test]
    fn the_happy_path_ends_delivered_with_a_full_timeline() {
        let mut o = placed();
        for (version, status) in
            [KitchenStatus::Received, KitchenStatus::Cooking, KitchenStatus::Delivering, KitchenStatus::Delivered]
                .into_iter()
                .enumerate()
        {
            assert!(o.apply_kitchen(status, version as i64 + 1, "", t(10 + version as i64)));
        }
        use OrderStatus::*;
        assert_eq!(statuses(&o), [Placed, Accepted, Cooking, Delivering, Delivered]);
        assert!(o.is_final());
    }

    #[test]
    fn a_late_older_kitchen_state_fills_the_timeline_without_moving_the_status_back() {
        let mut o = placed();
        o.apply_kitchen(KitchenStatus::Received, 1, "", t(10));
        o.apply_kitchen(KitchenStatus::Delivering, 3, "", t(30));
        assert!(o.apply_kitchen(KitchenStatus::Cooking, 2, "", t(20)));
        assert!(!o.apply_kitchen(KitchenStatus::Cooking, 2, "", t(20)), "a duplicate changes nothing");
        use OrderStatus::*;
        assert_eq!(o.status, Delivering);
        assert_eq!(statuses(&o), [Placed, Accepted, Cooking, Delivering]);
    }

    #[test]
    fn cancelling_before_cooking_waits_for_the_store_then_waits_for_the_refund() {
        let mut o = placed();
        o.apply_kitchen(KitchenStatus::Received, 1, "", t(10));
        assert!(o.request_cancellation("changed my mind", t(11)).expect("cancellable").is_some());
        assert_eq!(o.status, OrderStatus::CancellationRequested);
        assert_eq!(o.request_cancellation("again", t(12)), Ok(None), "asking twice tells the store once");
        o.apply_kitchen(KitchenStatus::Cancelled, 2, "cancelled by the customer", t(13));
        assert_eq!(o.status, OrderStatus::Cancelled);
        assert!(!o.is_final(), "final only once refunded");
        assert!(o.apply_refund(t(14)));
        assert!(!o.apply_refund(t(15)));
        assert!(o.is_final());
        assert_eq!(o.request_cancellation("once more", t(16)), Ok(None));
    }

    #[test]
    fn a_refused_cancellation_leaves_the_order_cooking() {
        let mut o = placed();
        o.apply_kitchen(KitchenStatus::Received, 1, "", t(10));
        o.request_cancellation("", t(11)).expect("the view still says accepted");
        assert!(o.apply_cancellation_refused(KitchenStatus::Cooking, 2, t(12)));
        assert_eq!((o.status, o.cancellation), (OrderStatus::Cooking, Cancellation::Refused));
        assert_eq!(o.request_cancellation("", t(13)), Err(OrderError::NotCancellable(OrderStatus::Cooking)));
        o.apply_kitchen(KitchenStatus::Cooking, 2, "", t(12));
        assert_eq!(o.status, OrderStatus::Cooking);
    }

    #[test]
    fn a_refund_that_overtakes_the_cancellation_is_kept() {
        let mut o = placed();
        o.request_cancellation("", t(2)).expect("cancellable");
        o.apply_refund(t(4));
        assert!(!o.is_final());
        o.apply_kitchen(KitchenStatus::Cancelled, 1, "cancelled", t(3));
        assert!(o.is_final());
    }

    #[test]
    fn orders_out_for_delivery_or_done_cannot_be_cancelled() {
        for status in [KitchenStatus::Cooking, KitchenStatus::Delivering, KitchenStatus::Delivered, KitchenStatus::Rejected] {
            let mut o = placed();
            o.apply_kitchen(status, 1, "", t(2));
            assert!(o.request_cancellation("", t(3)).is_err(), "{status:?}");
        }
    }

    /// Every ordering of `facts`, by Heap's algorithm.
    fn permutations(facts: &[Fact]) -> Vec<Vec<Fact>> {
        fn heap(k: usize, items: &mut Vec<Fact>, out: &mut Vec<Vec<Fact>>) {
            if k <= 1 {
                out.push(items.clone());
                return;
            }
            for i in 0..k {
                heap(k - 1, items, out);
                items.swap(if k.is_multiple_of(2) { i } else { 0 }, k - 1);
            }
        }
        let mut out = Vec::new();
        heap(facts.len(), &mut facts.to_vec(), &mut out);
        out
    }

    fn kitchen(status: KitchenStatus, version: i64, at: i64) -> Fact {
        Fact::Kitchen { status, version, reason: String::new(), at: t(at) }
    }

    #[test]
    fn any_arrival_order_of_the_same_facts_gives_the_same_view() {
        use KitchenStatus::*;
        let histories = [
            vec![kitchen(Received, 1, 10), kitchen(Cooking, 2, 20), kitchen(Delivering, 3, 30), kitchen(Delivered, 4, 40)],
            vec![
                kitchen(Received, 1, 10),
                Fact::CancellationRequested { at: t(11) },
                Fact::Kitchen { status: Cancelled, version: 2, reason: "cancelled by the customer".into(), at: t(12) },
                Fact::Refunded { at: t(13) },
            ],
            vec![
                Fact::CancellationRequested { at: t(5) },
                kitchen(Received, 1, 10),
                kitchen(Cooking, 2, 20),
                Fact::CancellationRefused { status: Cooking, version: 2, at: t(21) },
                kitchen(Delivering, 3, 30),
            ],
            vec![kitchen(Received, 1, 10), Fact::Kitchen { status: Rejected, version: 2, reason: "closed".into(), at: t(15) }],
        ];
        for facts in histories {
            let mut expected = placed();
            for fact in &facts {
                assert!(expected.record(fact.clone()));
            }
            for (n, arrival) in permutations(&facts).into_iter().enumerate() {
                let mut live = placed();
                for fact in &arrival {
                    live.record(fact.clone());
                    // A redelivery in the middle of the flow changes nothing.
                    assert!(!live.record(fact.clone()));
                }
                assert!(live.same_view(&expected), "arrival {n}: {:?}\nvs {:?}", live.timeline, expected.timeline);
                assert_eq!(live.version, expected.version, "one version per fact, whatever the order");
                assert!(expected.rebuilt(arrival.iter().rev().cloned()).same_view(&live), "a replay rebuilds it");
            }
        }
    }

    #[test]
    fn a_rebuild_from_no_facts_is_the_order_as_placed() {
        let mut o = placed();
        o.apply_kitchen(KitchenStatus::Received, 1, "", t(10));
        let fresh = o.rebuilt([]);
        assert!(fresh.same_view(&placed()));
        assert!(!fresh.same_view(&o));
    }

    #[test]
    fn every_change_bumps_the_version_once() {
        let mut o = placed();
        let v = o.version;
        o.apply_kitchen(KitchenStatus::Received, 1, "", t(2));
        o.apply_kitchen(KitchenStatus::Received, 1, "", t(2));
        assert_eq!(o.version, v + 1);
    }
}
