//! The payment use cases. Each owns its transaction: the payment row and the
//! event it causes are committed together, then the outbox relay is woken.

use std::{collections::HashMap, sync::Arc};

use foodmesh_platform::{
    auth::Principal,
    db::{Database, Urgency},
    group_commit::GroupCommit,
    inbox,
    outbox::{self, OutboxSignal},
    telemetry,
    time::Timestamp,
};
use futures::future::BoxFuture;

use crate::{
    db,
    domain::{self, Authorization, ChargeCommand, Payment, PaymentError, PaymentEvent, PaymentStatus},
    events,
};

mod error;
mod faults;
pub use error::Error;
pub use faults::{FaultSettings, Faults};

/// The card network, behind a port so tests and demos can shape its answers.
/// A real implementation must pass the idempotency key on to the network, so
/// that two concurrent first attempts with the same key authorise once there.
pub trait CardNetwork: Send + Sync + 'static {
    /// Authorises and captures `command.amount` on `command.payment_token`.
    fn authorize<'a>(&'a self, command: &'a ChargeCommand) -> BoxFuture<'a, Authorization>;
}

/// The built-in network: approves every token but the decline test token.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimulatedCardNetwork;

impl CardNetwork for SimulatedCardNetwork {
    fn authorize<'a>(&'a self, command: &'a ChargeCommand) -> BoxFuture<'a, Authorization> {
        Box::pin(std::future::ready(domain::simulated_authorization(&command.payment_token)))
    }
}

/// How to find a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// By its id.
    PaymentId(String),
    /// By the order it pays for.
    OrderId(String),
}

/// A refund caused by a store event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundForOrder {
    /// The event's id, for the inbox.
    pub event_id: String,
    /// The order whose payment to refund.
    pub order_id: String,
    /// Why, for the customer.
    pub reason: String,
}

/// The payment service's use cases.
pub struct PaymentApp {
    db: Database,
    outbox: OutboxSignal,
    network: Arc<dyn CardNetwork>,
    /// Each charge with the trace of its request: the group commit writes
    /// its `PaymentCaptured` event from another task.
    charges: GroupCommit<(Payment, Option<String>), bool, Error>,
    /// Test-only fault: answer UNAVAILABLE after committing a new charge.
    drop_reply_after_commit: bool,
    /// Injected latency, failures and charge slots (demos, chaos drills).
    faults: Arc<Faults>,
}

/// The most charges written by one group commit.
const GROUP_COMMIT: usize = 128;

/// Stores decided charges together, each captured one with its
/// `PaymentCaptured` event, in one transaction. `false` for a charge that lost
/// to a stored one with the same key or order.
async fn store_charges(
    db: &Database,
    outbox: &OutboxSignal,
    charges: Vec<(Payment, Option<String>)>,
) -> Result<Vec<bool>, Error> {
    let now = Timestamp::now();
    let (payments, traces): (Vec<Payment>, Vec<Option<String>>) = charges.into_iter().unzip();
    let traces: HashMap<String, String> =
        payments.iter().zip(traces).filter_map(|(p, trace)| Some((p.order_id.clone(), trace?))).collect();
    let mut tx = db.begin(Urgency::Request).await?;
    let stored = db::insert_all(&mut tx, &payments).await?;
    let messages: Vec<_> = telemetry::with_saga_traces_sync(traces, || {
        payments
            .iter()
            .filter(|p| p.status == PaymentStatus::Captured && stored.contains(p.id.as_str()))
            .map(|p| events::outbox_message(&PaymentEvent::Captured(p.clone()), now))
            .collect()
    });
    outbox::enqueue_all(&mut tx, &messages).await?;
    tx.commit().await?;
    if !messages.is_empty() {
        outbox.notify();
    }
    Ok(payments.iter().map(|p| stored.contains(p.id.as_str())).collect())
}

impl std::fmt::Debug for PaymentApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentApp").finish_non_exhaustive()
    }
}

impl PaymentApp {
    /// The use cases over `db`, charging through `network`.
    pub fn new(
        db: Database,
        outbox: OutboxSignal,
        network: Arc<dyn CardNetwork>,
        drop_reply_after_commit: bool,
        faults: Arc<Faults>,
    ) -> Self {
        let charges = {
            let (db, outbox) = (db.clone(), outbox.clone());
            GroupCommit::start(GROUP_COMMIT, move |charges: Vec<(Payment, Option<String>)>| {
                let (db, outbox) = (db.clone(), outbox.clone());
                async move { store_charges(&db, &outbox, charges).await }
            })
        };
        Self { db, outbox, network, charges, drop_reply_after_commit, faults }
    }

    /// Charges once per idempotency key: a repeat returns the stored outcome.
    pub async fn charge(&self, command: ChargeCommand) -> Result<Payment, Error> {
        // Held until the answer: a slow charge keeps its slot, as on a server
        // whose worker pool is busy.
        let _admitted = self.faults.enter().await.map_err(|_| Error::InjectedFailure)?;
        if let Some(existing) = db::by_key(self.db.reader(), &command.idempotency_key).await? {
            return replay(existing, &command);
        }
        let authorization = self.network.authorize(&command).await;
        let (payment, _) = Payment::from_authorization(command.clone(), authorization, Timestamp::now());
        let traceparent = telemetry::traceparent(&tracing::Span::current());
        if !self.charges.submit((payment.clone(), traceparent)).await? {
            // A concurrent charge with this key won, or the order is paid by
            // another key; the stored row decides.
            return match db::by_key(&mut *self.db.write(Urgency::Request).await?, &command.idempotency_key).await? {
                Some(existing) => replay(existing, &command),
                None => Err(Error::OrderAlreadyCharged(command.order_id)),
            };
        }
        tracing::info!(payment_id = %payment.id, order_id = %payment.order_id, status = ?payment.status, "charge decided");
        if self.drop_reply_after_commit {
            tracing::error!(order_id = %payment.order_id, "fault drop_reply_after_commit: the caller hears UNAVAILABLE");
            return Err(Error::ReplyDropped);
        }
        outcome(payment)
    }

    /// Refunds a payment in full; refunding a refunded payment returns it.
    pub async fn refund(&self, payment_id: &str, reason: &str) -> Result<Payment, Error> {
        let mut tx = self.db.begin(Urgency::Request).await?;
        let mut payment = db::by_id(&mut *tx, payment_id).await?.ok_or(Error::NotFound)?;
        let now = Timestamp::now();
        let Some(event) = payment.refund(reason, now)? else {
            return Ok(payment);
        };
        if !db::mark_refunded(&mut tx, &payment).await? {
            // Another refund committed first; it is the one that counts.
            tx.rollback().await?;
            return db::by_id(&mut *self.db.write(Urgency::Request).await?, payment_id).await?.ok_or(Error::NotFound);
        }
        outbox::enqueue(&mut tx, &events::outbox_message(&event, now)).await?;
        tx.commit().await?;
        self.outbox.notify();
        tracing::info!(payment_id, reason, "payment refunded");
        Ok(payment)
    }

    /// The injected faults, for operators.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// A payment, if `viewer` may see it: its customer or an operator.
    pub async fn get(&self, lookup: &Lookup, viewer: &Principal) -> Result<Payment, Error> {
        let found = match lookup {
            Lookup::PaymentId(id) => db::by_id(self.db.reader(), id).await?,
            Lookup::OrderId(order_id) => db::by_order(self.db.reader(), order_id).await?,
        };
        let visible = |p: &Payment| match viewer {
            Principal::Operator { .. } => true,
            Principal::Customer { customer_id } => *customer_id == p.customer_id,
            Principal::StoreStaff { .. } => false,
        };
        // Someone else's payment looks exactly like a missing one.
        found.filter(visible).ok_or(Error::NotFound)
    }

    /// Refunds the orders of a batch of store events, in one transaction.
    pub async fn refund_orders(&self, requests: &[RefundForOrder]) -> Result<(), Error> {
        let now = Timestamp::now();
        let mut tx = self.db.begin(Urgency::Background).await?;
        let mut published = false;
        for request in requests {
            if !inbox::first_delivery(&mut tx, events::REFUND_CONSUMER, &request.event_id).await? {
                continue;
            }
            let Some(mut payment) = db::by_order(&mut *tx, &request.order_id).await? else {
                tracing::warn!(order_id = %request.order_id, "no payment for a cancelled order; nothing to refund");
                continue;
            };
            match payment.refund(&request.reason, now) {
                Ok(Some(event)) => {
                    if db::mark_refunded(&mut tx, &payment).await? {
                        outbox::enqueue(&mut tx, &events::outbox_message(&event, now)).await?;
                        published = true;
                    }
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(order_id = %request.order_id, error = %err, "cannot refund"),
            }
        }
        tx.commit().await?;
        if published {
            self.outbox.notify();
        }
        Ok(())
    }
}

fn replay(existing: Payment, command: &ChargeCommand) -> Result<Payment, Error> {
    if !existing.is_same_charge(command) {
        return Err(Error::IdempotencyKeyReused);
    }
    outcome(existing)
}

fn outcome(payment: Payment) -> Result<Payment, Error> {
    match payment.status {
        PaymentStatus::Declined => Err(Error::Declined { payment_id: payment.id.to_string(), reason: payment.decline_reason }),
        PaymentStatus::Captured | PaymentStatus::Refunded => Ok(payment),
    }
}

impl From<PaymentError> for Error {
    fn from(err: PaymentError) -> Self {
        match err {
            PaymentError::NotRefundable(status) => Error::NotRefundable(status),
        }
    }
}
