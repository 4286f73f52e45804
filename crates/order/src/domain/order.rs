//! An order as the customer sees it.
//!
//! Its status is derived from three sources, each applied idempotently and in
//! any order, because events from different streams (and redeliveries) arrive
//! in no guaranteed order:
//!
//! - the order's own changes (placed, cancellation requested);
//! - the store's kitchen state, versioned: a change older than the one
//!   already applied only fills in the timeline;
//! - the payment's refund.
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
            timeline: vec![StatusChange { status: OrderStatus::Placed, occurred_at: now, note: "paid".to_owned() }],
            updated_at: now,
            version: 1,
        };
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
        self.cancellation = Cancellation::Requested;
        self.refresh(now, "asked by the customer");
        Ok(Some(OrderEvent::CancellationRequested { order: self.clone(), reason: reason.to_owned() }))
    }

    /// The store reports a kitchen state. Returns whether the view changed.
    pub fn apply_kitchen(&mut self, status: KitchenStatus, version: i64, reason: &str, occurred_at: Timestamp) -> bool {
        let note = match (status, reason.is_empty()) {
            (KitchenStatus::Received, _) => "the restaurant received it",
            (KitchenStatus::Cooking, _) => "the kitchen started cooking",
            (KitchenStatus::Delivering, _) => "out for delivery",
            (KitchenStatus::Delivered, _) => "delivered",
            (KitchenStatus::Cancelled | KitchenStatus::Rejected, false) => reason,
            (KitchenStatus::Cancelled, true) => "cancelled",
            (KitchenStatus::Rejected, true) => "rejected by the restaurant",
        };
        let newest = self.kitchen.is_none_or(|(_, applied)| version > applied);
        if !newest {
            // Older than what is applied: it only completes the history.
            return self.record_past(derived(Some(status), Cancellation::None), occurred_at, note);
        }
        self.kitchen = Some((status, version));
        if matches!(status, KitchenStatus::Cancelled | KitchenStatus::Rejected) {
            self.status_reason = reason.to_owned();
        }
        self.refresh(occurred_at, note);
        true
    }

    /// The store refused the cancellation; `status` and `version` are its
    /// kitchen state at the time. Returns whether the view changed.
    pub fn apply_cancellation_refused(&mut self, status: KitchenStatus, version: i64, occurred_at: Timestamp) -> bool {
        if self.cancellation == Cancellation::Refused {
            return false;
        }
        self.cancellation = Cancellation::Refused;
        if self.kitchen.is_none_or(|(_, applied)| version > applied) {
            self.kitchen = Some((status, version));
        }
        self.refresh(occurred_at, "too late to cancel: cooking had started");
        true
    }

    /// The payment was refunded. Returns whether the view changed.
    pub fn apply_refund(&mut self, refunded_at: Timestamp) -> bool {
        if self.refunded_at.is_some() {
            return false;
        }
        self.refunded_at = Some(refunded_at);
        self.touch(refunded_at);
        true
    }

    /// Re-derives the status; a new status enters the timeline.
    fn refresh(&mut self, at: Timestamp, note: &str) {
        let status = derived(self.kitchen.map(|(s, _)| s), self.cancellation);
        if status != self.status {
            self.status = status;
            self.timeline.push(StatusChange { status, occurred_at: at, note: note.to_owned() });
        }
        self.touch(at);
    }

    fn record_past(&mut self, status: OrderStatus, at: Timestamp, note: &str) -> bool {
        if self.timeline.iter().any(|c| c.status == status) {
            return false;
        }
        let position = self.timeline.iter().position(|c| c.occurred_at > at).unwrap_or(self.timeline.len());
        self.timeline.insert(position, StatusChange { status, occurred_at: at, note: note.to_owned() });
        self.touch(at);
        true
    }

    fn touch(&mut self, at: Timestamp) {
        self.updated_at = self.updated_at.max(at);
        self.version += 1;
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

    #[test]
    fn every_change_bumps_the_version_once() {
        let mut o = placed();
        let v = o.version;
        o.apply_kitchen(KitchenStatus::Received, 1, "", t(2));
        o.apply_kitchen(KitchenStatus::Received, 1, "", t(2));
        assert_eq!(o.version, v + 1);
    }
}
