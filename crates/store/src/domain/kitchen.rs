//! An order's life in its store.
//!
//! ```text
//! RECEIVED ──StartCooking──> COOKING ──StartDelivery──> DELIVERING ──CompleteDelivery──> DELIVERED
//!    │  └──cancellation──> CANCELLED        │
//!    └──────RejectOrder──────────────────────┴──> REJECTED
//! ```
//!
//! Every change bumps the order's version and returns the event it causes.
//! Asking for the state the order is already in changes nothing and causes no
//! event, so retried commands and redelivered events are harmless.

use foodmesh_platform::{money::Money, time::Timestamp};

/// The kitchen state of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting in the store's queue.
    Received,
    /// Being cooked; no longer cancellable.
    Cooking,
    /// On its way.
    Delivering,
    /// Delivered. Final.
    Delivered,
    /// Cancelled by the customer before cooking. Final.
    Cancelled,
    /// Refused by the store. Final.
    Rejected,
}

impl Status {
    /// Whether nothing can happen to the order any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Delivered | Status::Cancelled | Status::Rejected)
    }
}

/// One line of an order, as the kitchen needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The menu item.
    pub menu_item_id: String,
    /// Its name when ordered.
    pub name: String,
    /// How many portions.
    pub quantity: u32,
}

/// A paid order, as announced by the order service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedOrder {
    /// The order.
    pub order_id: String,
    /// Its store.
    pub store_id: String,
    /// Its customer.
    pub customer_id: String,
    /// What to cook.
    pub lines: Vec<Line>,
    /// What the customer paid.
    pub total: Money,
    /// Where to deliver.
    pub delivery_address: String,
}

/// A customer's request to cancel, as announced by the order service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancellationRequest {
    /// The order.
    pub order_id: String,
    /// Its store.
    pub store_id: String,
    /// Its customer.
    pub customer_id: String,
    /// The customer's words; may be empty.
    pub reason: String,
}

/// An order in its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOrder {
    /// The order id.
    pub order_id: String,
    /// The store.
    pub store_id: String,
    /// The customer.
    pub customer_id: String,
    /// What to cook; empty for an order cancelled before its details arrived.
    pub lines: Vec<Line>,
    /// What was paid; `None` until the details arrived.
    pub total: Option<Money>,
    /// Where to deliver.
    pub delivery_address: String,
    /// Its state.
    pub status: Status,
    /// Starts at 1, +1 per change.
    pub version: i64,
    /// Why it was rejected or cancelled.
    pub reason: String,
    /// When the store first heard of it.
    pub received_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// What a change tells the other contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KitchenEvent {
    /// The order's state changed; carries the order after the change.
    StatusChanged(StoreOrder),
    /// A cancellation arrived too late; carries the order, unchanged.
    CancellationRejected(StoreOrder),
}

/// A staff action on an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start cooking.
    StartCooking,
    /// Hand to delivery.
    StartDelivery,
    /// Delivered.
    CompleteDelivery,
    /// Refuse, with a reason.
    Reject(String),
}

/// The action does not apply to the order's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} an order that is {from:?}")]
pub struct TransitionError {
    /// The order's state.
    pub from: Status,
    /// What was asked, in words.
    pub action: &'static str,
}

/// What the store decides about a customer's cancellation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancellationDecision {
    /// Cancelled now (or an unknown order recorded as cancelled).
    Cancelled(KitchenEvent),
    /// Too late: cooking started.
    Refused(KitchenEvent),
    /// Already cancelled or rejected: nothing to do.
    AlreadySettled,
}

impl StoreOrder {
    /// A paid order arrives in the store's queue.
    pub fn receive(placed: PlacedOrder, now: Timestamp) -> (StoreOrder, KitchenEvent) {
        let order = StoreOrder {
            order_id: placed.order_id,
            store_id: placed.store_id,
            customer_id: placed.customer_id,
            lines: placed.lines,
            total: Some(placed.total),
            delivery_address: placed.delivery_address,
            status: Status::Received,
            version: 1,
            reason: String::new(),
            received_at: now,
            updated_at: now,
        };
        let event = KitchenEvent::StatusChanged(order.clone());
        (order, event)
    }

    /// A cancellation arrived before the order itself (events can be
    /// reordered): the order is recorded as cancelled, and when its details
    /// arrive they are filled in without cooking it.
    pub fn cancelled_before_arrival(request: CancellationRequest, now: Timestamp) -> (StoreOrder, KitchenEvent) {
        let order = StoreOrder {
            order_id: request.order_id,
            store_id: request.store_id,
            customer_id: request.customer_id,
            lines: Vec::new(),
            total: None,
            delivery_address: String::new(),
            status: Status::Cancelled,
            version: 1,
            reason: cancellation_reason(&request.reason),
            received_at: now,
            updated_at: now,
        };
        let event = KitchenEvent::StatusChanged(order.clone());
        (order, event)
    }

    /// The order's details arrived after it was cancelled: keep them for the
    /// record. Returns whether anything changed (no event either way).
    pub fn fill_in_details(&mut self, placed: &PlacedOrder) -> bool {
        if !self.lines.is_empty() || self.total.is_some() {
            return false;
        }
        self.lines = placed.lines.clone();
        self.total = Some(placed.total);
        self.delivery_address = placed.delivery_address.clone();
        true
    }

    /// Applies a staff action. `Ok(None)` when the order is already where
    /// the action leads.
    pub fn apply(&mut self, action: &Action, now: Timestamp) -> Result<Option<KitchenEvent>, TransitionError> {
        let (target, allowed_from, name): (Status, &[Status], &'static str) = match action {
            Action::StartCooking => (Status::Cooking, &[Status::Received], "start cooking"),
            Action::StartDelivery => (Status::Delivering, &[Status::Cooking], "start delivering"),
            Action::CompleteDelivery => (Status::Delivered, &[Status::Delivering], "complete delivery of"),
            Action::Reject(_) => (Status::Rejected, &[Status::Received, Status::Cooking], "reject"),
        };
        if self.status == target {
            return Ok(None);
        }
        if !allowed_from.contains(&self.status) {
            return Err(TransitionError { from: self.status, action: name });
        }
        if let Action::Reject(reason) = action {
            self.reason = reason.clone();
        }
        Ok(Some(self.change(target, now)))
    }

    /// Decides a customer's cancellation: only an order that is not cooking
    /// yet can be cancelled.
    pub fn decide_cancellation(&mut self, request: &CancellationRequest, now: Timestamp) -> CancellationDecision {
        match self.status {
            Status::Received => {
                self.reason = cancellation_reason(&request.reason);
                CancellationDecision::Cancelled(self.change(Status::Cancelled, now))
            }
            Status::Cancelled | Status::Rejected => CancellationDecision::AlreadySettled,
            Status::Cooking | Status::Delivering | Status::Delivered => {
                CancellationDecision::Refused(KitchenEvent::CancellationRejected(self.clone()))
            }
        }
    }

    fn change(&mut self, status: Status, now: Timestamp) -> KitchenEvent {
        self.status = status;
        self.version += 1;
        self.updated_at = now;
        KitchenEvent::StatusChanged(self.clone())
    }
}

fn cancellation_reason(customer_words: &str) -> String {
    if customer_words.is_empty() {
        "cancelled by the customer".to_owned()
    } else {
        format!("cancelled by the customer: {customer_words}")
    }
}

#[cfg(test)]
mod tests {
    use foodmesh_platform::money::Currency;

    use super::*;

    fn t(n: i64) -> Timestamp {
        Timestamp::from_micros(n)
    }

    fn placed() -> PlacedOrder {
        PlacedOrder {
            order_id: "o1".into(),
            store_id: "s1".into(),
            customer_id: "alice".into(),
            lines: vec![Line { menu_item_id: "bulgogi".into(), name: "Bulgogi".into(), quantity: 2 }],
            total: Money::new(Currency::KRW, 36_000).expect("valid"),
            delivery_address: "1 Main St".into(),
        }
    }

    fn cancel() -> CancellationRequest {
        CancellationRequest { order_id: "o1".into(), store_id: "s1".into(), customer_id: "alice".into(), reason: String::new() }
    }

    fn status_of(event: &KitchenEvent) -> (Status, i64) {
        match event {
            KitchenEvent::StatusChanged(o) | KitchenEvent::CancellationRejected(o) => (o.status, o.version),
        }
    }

    #[test]
    fn an_order_goes_from_received_to_delivered_one_version_per_step() {
        let (mut order, event) = StoreOrder::receive(placed(), t(1));
        assert_eq!(status_of(&event), (Status::Received, 1));
        let steps = [Action::StartCooking, Action::StartDelivery, Action::CompleteDelivery];
        for (i, action) in steps.iter().enumerate() {
            let event = order.apply(action, t(2 + i as i64)).expect("allowed").expect("a change");
            assert_eq!(status_of(&event).1, 2 + i as i64);
        }
        assert_eq!(order.status, Status::Delivered);
        assert!(order.status.is_final());
    }

    #[test]
    fn repeating_an_action_changes_nothing() {
        let (mut order, _) = StoreOrder::receive(placed(), t(1));
        order.apply(&Action::StartCooking, t(2)).expect("allowed");
        let before = order.clone();
        assert_eq!(order.apply(&Action::StartCooking, t(3)), Ok(None));
        assert_eq!(order, before);
    }

    #[test]
    fn steps_cannot_be_skipped_or_undone() {
        let (mut order, _) = StoreOrder::receive(placed(), t(1));
        let err = order.apply(&Action::CompleteDelivery, t(2)).expect_err("skips two steps");
        assert_eq!(err.from, Status::Received);
        order.apply(&Action::StartCooking, t(2)).expect("allowed");
        order.apply(&Action::StartDelivery, t(3)).expect("allowed");
        assert!(order.apply(&Action::StartCooking, t(4)).is_err(), "cannot go back");
        assert!(order.apply(&Action::Reject("late".into()), t(4)).is_err(), "cannot reject once out");
    }

    #[test]
    fn cancelling_before_cooking_cancels_with_a_new_version() {
        let (mut order, _) = StoreOrder::receive(placed(), t(1));
        match order.decide_cancellation(&cancel(), t(2)) {
            CancellationDecision::Cancelled(event) => assert_eq!(status_of(&event), (Status::Cancelled, 2)),
            other => panic!("expected a cancellation, got {other:?}"),
        }
        assert_eq!(order.decide_cancellation(&cancel(), t(3)), CancellationDecision::AlreadySettled);
        assert!(order.apply(&Action::StartCooking, t(4)).is_err(), "a cancelled order is never cooked");
    }

    #[test]
    fn cancelling_after_cooking_started_is_refused_and_changes_nothing() {
        let (mut order, _) = StoreOrder::receive(placed(), t(1));
        order.apply(&Action::StartCooking, t(2)).expect("allowed");
        let before = order.clone();
        match order.decide_cancellation(&cancel(), t(3)) {
            CancellationDecision::Refused(event) => assert_eq!(status_of(&event), (Status::Cooking, 2)),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(order, before);
    }

    #[test]
    fn a_cancellation_that_overtakes_its_order_wins_and_the_details_are_kept() {
        let (mut order, event) = StoreOrder::cancelled_before_arrival(cancel(), t(1));
        assert_eq!(status_of(&event), (Status::Cancelled, 1));
        assert!(order.fill_in_details(&placed()));
        assert_eq!(order.status, Status::Cancelled);
        assert_eq!(order.lines.len(), 1);
        assert!(!order.fill_in_details(&placed()), "only once");
    }

    #[test]
    fn rejecting_is_allowed_while_received_or_cooking_and_keeps_the_reason() {
        let (mut order, _) = StoreOrder::receive(placed(), t(1));
        order.apply(&Action::StartCooking, t(2)).expect("allowed");
        order.apply(&Action::Reject("out of beef".into()), t(3)).expect("allowed").expect("change");
        assert_eq!((order.status, order.reason.as_str()), (Status::Rejected, "out of beef"));
        assert_eq!(order.decide_cancellation(&cancel(), t(4)), CancellationDecision::AlreadySettled);
    }
}
