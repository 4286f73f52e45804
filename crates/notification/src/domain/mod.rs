//! Notifications in plain Rust: no tonic, prost, sqlx or NATS here.
//!
//! Every change of an order that its customer should hear about becomes one
//! [`Notification`]. It is identified by its order and [`Kind`], so a change
//! announced twice (redelivery, replay) is written once.

use std::time::Duration;

use foodmesh_platform::{money::Money, time::Timestamp};

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Placed and paid.
    OrderPlaced,
    /// The store has it.
    OrderAccepted,
    /// Cooking.
    CookingStarted,
    /// On its way.
    OutForDelivery,
    /// Delivered.
    Delivered,
    /// Cancellation asked.
    CancellationRequested,
    /// Cancelled.
    OrderCancelled,
    /// Refused by the store.
    OrderRejected,
    /// Too late to cancel.
    CancellationRejected,
    /// Refunded.
    RefundIssued,
}

/// A change of an order, as told by another context's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderChange {
    /// The order.
    pub order_id: String,
    /// Its customer.
    pub customer_id: String,
    /// What happened.
    pub kind: Kind,
    /// When.
    pub occurred_at: Timestamp,
    /// Details for the text.
    pub detail: Detail,
}

/// The details that go into a message's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// Nothing more.
    None,
    /// An amount (paid or refunded).
    Amount(Money),
    /// A reason given by the store.
    Reason(String),
}

/// Whether a notification went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Not yet; a send is due at `next_attempt_at`.
    Pending,
    /// The channel accepted it.
    Sent,
    /// Every attempt failed.
    Failed,
}

/// One message to a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Its position in the service's sequence (assigned by the store of record).
    pub seq: i64,
    /// Its id.
    pub notification_id: String,
    /// The customer.
    pub customer_id: String,
    /// The order.
    pub order_id: String,
    /// What it is about.
    pub kind: Kind,
    /// Short title.
    pub title: String,
    /// Text.
    pub body: String,
    /// The channel it goes out through.
    pub channel: String,
    /// Whether it went out.
    pub status: DeliveryStatus,
    /// Sends attempted.
    pub attempts: u32,
    /// When the change happened.
    pub occurred_at: Timestamp,
    /// When the channel accepted it.
    pub sent_at: Option<Timestamp>,
}

impl Notification {
    /// The message for a change, to go out through `channel`.
    pub fn compose(change: &OrderChange, channel: &str) -> Notification {
        let short = short_id(&change.order_id);
        let (title, body) = match (&change.kind, &change.detail) {
            (Kind::OrderPlaced, Detail::Amount(total)) => {
                ("Order received".to_owned(), format!("We got your order {short} and charged {total}. The restaurant is next."))
            }
            (Kind::OrderPlaced, _) => ("Order received".to_owned(), format!("We got your order {short}.")),
            (Kind::OrderAccepted, _) => {
                ("The restaurant has your order".to_owned(), format!("Order {short} is in the kitchen's queue."))
            }
            (Kind::CookingStarted, _) => ("Cooking".to_owned(), format!("Order {short} is being cooked.")),
            (Kind::OutForDelivery, _) => ("On its way".to_owned(), format!("Order {short} has left the restaurant.")),
            (Kind::Delivered, _) => ("Delivered".to_owned(), format!("Order {short} was delivered. Enjoy your meal!")),
            (Kind::CancellationRequested, _) => {
                ("Cancelling".to_owned(), format!("We asked the restaurant to cancel order {short}."))
            }
            (Kind::OrderCancelled, _) => {
                ("Order cancelled".to_owned(), format!("Order {short} is cancelled. Your refund is on its way."))
            }
            (Kind::OrderRejected, Detail::Reason(reason)) => (
                "The restaurant could not take your order".to_owned(),
                format!("Order {short} was refused ({reason}). You will be refunded."),
            ),
            (Kind::OrderRejected, _) => (
                "The restaurant could not take your order".to_owned(),
                format!("Order {short} was refused. You will be refunded."),
            ),
            (Kind::CancellationRejected, _) => {
                ("Too late to cancel".to_owned(), format!("Order {short} is already being cooked, so it cannot be cancelled."))
            }
            (Kind::RefundIssued, Detail::Amount(amount)) => {
                ("Refund issued".to_owned(), format!("{amount} was refunded for order {short}."))
            }
            (Kind::RefundIssued, _) => ("Refund issued".to_owned(), format!("Order {short} was refunded.")),
        };
        Notification {
            seq: 0,
            notification_id: uuid::Uuid::now_v7().to_string(),
            customer_id: change.customer_id.clone(),
            order_id: change.order_id.clone(),
            kind: change.kind,
            title,
            body,
            channel: channel.to_owned(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            occurred_at: change.occurred_at,
            sent_at: None,
        }
    }
}

/// How failed sends are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Sends before giving up.
    pub max_attempts: u32,
    /// The first pause.
    pub initial: Duration,
    /// The longest pause.
    pub max: Duration,
}

impl RetryPolicy {
    /// After `attempts` failed sends: when to try again, or `None` to give up.
    pub fn next_attempt(&self, attempts: u32, now: Timestamp) -> Option<Timestamp> {
        if attempts >= self.max_attempts {
            return None;
        }
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
        Some(now.plus(self.initial.saturating_mul(factor).min(self.max)))
    }
}

/// The last part of an order id, enough for a human to tell orders apart.
fn short_id(order_id: &str) -> &str {
    let start = order_id.len().saturating_sub(6);
    order_id.get(start..).unwrap_or(order_id)
}

#[cfg(test)]
mod tests {
    use foodmesh_platform::money::Currency;

    use super::*;

    fn change(kind: Kind, detail: Detail) -> OrderChange {
        OrderChange {
            order_id: "ord_0123456789abcdef".into(),
            customer_id: "alice".into(),
            kind,
            occurred_at: Timestamp::from_micros(5),
            detail,
        }
    }

    #[test]
    fn messages_name_the_order_and_the_amount() {
        let total = Money::new(Currency::KRW, 36_000).expect("valid");
        let n = Notification::compose(&change(Kind::OrderPlaced, Detail::Amount(total)), "log");
        assert!(n.body.contains("abcdef") && n.body.contains("36000 KRW"), "{}", n.body);
        assert_eq!((n.status, n.attempts, n.channel.as_str()), (DeliveryStatus::Pending, 0, "log"));
        let rejected = Notification::compose(&change(Kind::OrderRejected, Detail::Reason("out of beef".into())), "log");
        assert!(rejected.body.contains("out of beef"));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_ceiling_then_stop() {
        let policy = RetryPolicy { max_attempts: 5, initial: Duration::from_millis(500), max: Duration::from_secs(3) };
        let now = Timestamp::from_micros(0);
        let pause = |attempts| policy.next_attempt(attempts, now).map(|t| t.since(now));
        assert_eq!(pause(1), Some(Duration::from_millis(500)));
        assert_eq!(pause(2), Some(Duration::from_secs(1)));
        assert_eq!(pause(3), Some(Duration::from_secs(2)));
        assert_eq!(pause(4), Some(Duration::from_secs(3)));
        assert_eq!(pause(5), None);
    }
}
