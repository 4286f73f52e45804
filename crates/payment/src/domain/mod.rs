//! Payments in plain Rust: no tonic, prost, sqlx or NATS here.
//!
//! A payment is created once per order, captured or declined by the card
//! network, and may later be refunded in full, once. Every state change that
//! other contexts care about returns the event it causes.

use std::fmt;

use foodmesh_platform::{money::Money, time::Timestamp};
use sha2::{Digest, Sha256};

/// The test card token that the simulated card network always declines.
pub const DECLINE_TEST_TOKEN: &str = "tok_decline";

/// A payment's id: `pay_` and a time-ordered UUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentId(String);

impl PaymentId {
    /// A new id.
    pub fn generate() -> Self {
        Self(format!("pay_{}", uuid::Uuid::now_v7().simple()))
    }

    /// An existing id, as stored or sent by a client.
    pub fn from_existing(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// The amount was taken.
    Captured,
    /// The card was declined; nothing was taken.
    Declined,
    /// The amount was given back.
    Refunded,
}

/// A request to charge a customer for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeCommand {
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// The order paid for.
    pub order_id: String,
    /// The customer charged (from their token).
    pub customer_id: String,
    /// How much.
    pub amount: Money,
    /// The tokenised card.
    pub payment_token: String,
}

impl ChargeCommand {
    /// A digest of everything that defines the charge. A repeated idempotency
    /// key must come with the same digest; the card token itself is not stored.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for part in [
            self.order_id.as_str(),
            self.customer_id.as_str(),
            self.amount.currency().code(),
            &self.amount.amount_minor().to_string(),
            self.payment_token.as_str(),
        ] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The card network's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The amount was captured.
    Approved,
    /// The card was declined, for this reason.
    Declined(String),
}

/// One payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Its id.
    pub id: PaymentId,
    /// The idempotency key it was created with.
    pub idempotency_key: String,
    /// The order it pays for.
    pub order_id: String,
    /// The customer charged.
    pub customer_id: String,
    /// The amount.
    pub amount: Money,
    /// The digest of the charge parameters.
    pub fingerprint: String,
    /// Where it stands.
    pub status: PaymentStatus,
    /// Why it was declined; empty otherwise.
    pub decline_reason: String,
    /// Why it was refunded; empty otherwise.
    pub refund_reason: String,
    /// When it was captured or declined.
    pub created_at: Timestamp,
    /// When it was refunded.
    pub refunded_at: Option<Timestamp>,
}

/// What a payment change tells the other contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEvent {
    /// The charge was captured.
    Captured(Payment),
    /// The payment was refunded.
    Refunded(Payment),
}

/// A payment cannot do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// Only a captured payment can be refunded.
    #[error("a {0:?} payment cannot be refunded")]
    NotRefundable(PaymentStatus),
}

impl Payment {
    /// The payment resulting from the card network's answer to `command`,
    /// and the event it causes (none for a decline: nothing happened).
    pub fn from_authorization(
        command: ChargeCommand,
        authorization: Authorization,
        now: Timestamp,
    ) -> (Payment, Option<PaymentEvent>) {
        let fingerprint = command.fingerprint();
        let (status, decline_reason) = match authorization {
            Authorization::Approved => (PaymentStatus::Captured, String::new()),
            Authorization::Declined(reason) => (PaymentStatus::Declined, reason),
        };
        let payment = Payment {
            id: PaymentId::generate(),
            idempotency_key: command.idempotency_key,
            order_id: command.order_id,
            customer_id: command.customer_id,
            amount: command.amount,
            fingerprint,
            status,
            decline_reason,
            refund_reason: String::new(),
            created_at: now,
            refunded_at: None,
        };
        let event = (status == PaymentStatus::Captured).then(|| PaymentEvent::Captured(payment.clone()));
        (payment, event)
    }

    /// Whether `command` is a repeat of the charge that created this payment.
    pub fn is_same_charge(&self, command: &ChargeCommand) -> bool {
        self.fingerprint == command.fingerprint()
    }

    /// Refunds the payment in full. Refunding a refunded payment changes
    /// nothing and causes no event.
    pub fn refund(&mut self, reason: &str, now: Timestamp) -> Result<Option<PaymentEvent>, PaymentError> {
        match self.status {
            PaymentStatus::Captured => {
                self.status = PaymentStatus::Refunded;
                self.refund_reason = reason.to_owned();
                self.refunded_at = Some(now);
                Ok(Some(PaymentEvent::Refunded(self.clone())))
            }
            PaymentStatus::Refunded => Ok(None),
            PaymentStatus::Declined => Err(PaymentError::NotRefundable(PaymentStatus::Declined)),
        }
    }
}

/// The simulated card network: every token is approved except
/// [`DECLINE_TEST_TOKEN`].
pub fn simulated_authorization(payment_token: &str) -> Authorization {
    if payment_token == DECLINE_TEST_TOKEN {
        Authorization::Declined("the card was declined (test token)".to_owned())
    } else {
        Authorization::Approved
    }
}

#[cfg(test)]
mod tests {
    use foodmesh_platform::money::Currency;

    use super::*;

    fn command(token: &str) -> ChargeCommand {
        ChargeCommand {
            idempotency_key: "ord-1".into(),
            order_id: "ord-1".into(),
            customer_id: "alice".into(),
            amount: Money::new(Currency::KRW, 18_000).expect("valid"),
            payment_token: token.into(),
        }
    }

    #[test]
    fn an_approved_charge_is_captured_and_announced() {
        let (payment, event) =
            Payment::from_authorization(command("tok_visa"), Authorization::Approved, Timestamp::from_micros(1));
        assert_eq!(payment.status, PaymentStatus::Captured);
        assert_eq!(event, Some(PaymentEvent::Captured(payment)));
    }

    #[test]
    fn a_declined_charge_is_kept_but_announces_nothing() {
        let auth = simulated_authorization(DECLINE_TEST_TOKEN);
        let (payment, event) = Payment::from_authorization(command(DECLINE_TEST_TOKEN), auth, Timestamp::from_micros(1));
        assert_eq!(payment.status, PaymentStatus::Declined);
        assert!(!payment.decline_reason.is_empty());
        assert_eq!(event, None);
    }

    #[test]
    fn a_repeated_charge_matches_only_with_identical_parameters() {
        let (payment, _) = Payment::from_authorization(command("tok_visa"), Authorization::Approved, Timestamp::from_micros(1));
        assert!(payment.is_same_charge(&command("tok_visa")));
        assert!(!payment.is_same_charge(&command("tok_other")));
        let mut bigger = command("tok_visa");
        bigger.amount = Money::new(Currency::KRW, 18_001).expect("valid");
        assert!(!payment.is_same_charge(&bigger));
    }

    #[test]
    fn refunding_twice_refunds_once() {
        let (mut payment, _) =
            Payment::from_authorization(command("tok_visa"), Authorization::Approved, Timestamp::from_micros(1));
        let first = payment.refund("cancelled", Timestamp::from_micros(2)).expect("refundable");
        assert!(matches!(first, Some(PaymentEvent::Refunded(_))));
        assert_eq!(payment.refund("again", Timestamp::from_micros(3)), Ok(None));
        assert_eq!(payment.refund_reason, "cancelled");
        assert_eq!(payment.refunded_at, Some(Timestamp::from_micros(2)));
    }

    #[test]
    fn a_declined_payment_cannot_be_refunded() {
        let (mut payment, _) =
            Payment::from_authorization(command("t"), Authorization::Declined("no".into()), Timestamp::from_micros(1));
        assert_eq!(payment.refund("x", Timestamp::from_micros(2)), Err(PaymentError::NotRefundable(PaymentStatus::Declined)));
    }
}
