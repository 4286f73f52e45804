//! The notification use cases: record one message per order change, send
//! what is due through the channel, and serve the messages back.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use foodmesh_platform::{
    db::{Database, Urgency},
    inbox,
    paging::{self, Cursor, PageRequest},
    time::Timestamp,
};
use futures::{StreamExt, stream};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::{
    channel::Channel,
    db,
    domain::{Notification, OrderChange, RetryPolicy},
};

/// Everything a notification use case can fail with. `grpc::error` maps each
/// to a status code; nothing else does.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request has bad fields.
    #[error("invalid request: {0}")]
    Invalid(#[from] foodmesh_platform::validation::Violations),
    /// The caller is not identified or not allowed.
    #[error(transparent)]
    Auth(#[from] foodmesh_platform::auth::AuthError),
    /// The service is stopping.
    #[error("the service is stopping; reconnect")]
    ShuttingDown,
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// How long the dispatcher waits after a wake-up, so one round sends (and
/// marks) what several transactions wrote.
const DISPATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// One dispatch round claims this many rounds of `concurrency` sends.
const ROUNDS_PER_CLAIM: usize = 4;
/// How often a watcher looks for new messages without a local signal (another
/// replica may have written them).
const WATCH_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// The notification service's use cases.
pub struct NotificationApp {
    db: Database,
    channel: Arc<dyn Channel>,
    policy: RetryPolicy,
    concurrency: usize,
    /// How many due messages one dispatch round claims.
    claim: i64,
    /// How long a claim lasts: longer than sending a claimed batch can take
    /// (each round of `concurrency` sends is bounded by the channel's
    /// timeout). A dispatcher that dies holding a claim delays those
    /// messages by at most this; then another sends them.
    lease: std::time::Duration,
    due: Arc<Notify>,
    created: broadcast::Sender<String>,
    /// Messages this replica recorded and claimed as it stored them, waiting
    /// for its dispatcher: sent from memory, without a claim statement. Each
    /// is taken only while it has a whole lease of its claim left.
    recorded: Mutex<VecDeque<(Timestamp, Notification)>>,
}

impl std::fmt::Debug for NotificationApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationApp").field("channel", &self.channel.name()).finish_non_exhaustive()
    }
}

impl NotificationApp {
    /// The use cases over `db`, sending through `channel`, `concurrency`
    /// messages at once, each send bounded by `send_timeout`.
    pub fn new(
        db: Database,
        channel: Arc<dyn Channel>,
        policy: RetryPolicy,
        concurrency: usize,
        send_timeout: std::time::Duration,
    ) -> Self {
        let concurrency = concurrency.max(1);
        let rounds = u32::try_from(ROUNDS_PER_CLAIM).unwrap_or(4);
        Self {
            db,
            channel,
            policy,
            concurrency,
            claim: i64::try_from(concurrency * ROUNDS_PER_CLAIM).unwrap_or(64),
            lease: send_timeout * rounds + std::time::Duration::from_secs(1),
            due: Arc::new(Notify::new()),
            created: broadcast::channel(4096).0,
            recorded: Mutex::default(),
        }
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, VecDeque<(Timestamp, Notification)>> {
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes up to `claim` of the messages recorded here whose claim has a
    /// whole lease left; older ones are dropped from memory (their claim
    /// runs out and a sweep claims them from the database).
    fn take_recorded(&self, now: Timestamp) -> Vec<Notification> {
        let mut queue = self.recorded();
        let mut taken = Vec::new();
        while (taken.len() as i64) < self.claim {
            match queue.pop_front() {
                Some((usable_until, n)) if now <= usable_until => taken.push(n),
                Some(_) => {}
                None => break,
            }
        }
        taken
    }

    /// Records a batch of order changes, one message per order and kind, in
    /// one transaction, and wakes the dispatcher.
    ///
    /// The messages are stored already claimed by this replica's dispatcher
    /// (due again only after two leases) and handed to it in memory, which
    /// saves a claim statement per round: one write per message less. If the
    /// process dies before sending them, they fall due when that claim ends
    /// and any replica sends them. While the dispatcher is backlogged
    /// (`claim` messages waiting), they are stored due now for its sweeps.
    pub async fn record(&self, consumer: &str, changes: &[(String, OrderChange)]) -> Result<(), Error> {
        let handed = (self.recorded().len() as i64) < self.claim;
        let now = Timestamp::now();
        let due_at = if handed { now.plus(self.lease * 2) } else { now };
        let mut tx = self.db.begin(Urgency::Background).await?;
        let event_ids: Vec<&str> = changes.iter().map(|(id, _)| id.as_str()).collect();
        let mut fresh = inbox::first_deliveries(&mut tx, consumer, &event_ids).await?;
        // `remove`: a message delivered twice within one batch counts once.
        let notifications: Vec<Notification> = changes
            .iter()
            .filter(|(id, _)| fresh.remove(id))
            .map(|(_, change)| Notification::compose(change, self.channel.name()))
            .collect();
        let stored = db::insert_all(&mut tx, &notifications, due_at).await?;
        tx.commit().await?;
        if !stored.is_empty() {
            let customers: Vec<String> = stored.iter().map(|n| n.customer_id.clone()).collect();
            if handed {
                // Taken only within the first lease: a round that takes one
                // ends (four waves of sends, each bounded by the channel's
                // timeout) before the claim does.
                let usable_until = now.plus(self.lease);
                self.recorded().extend(stored.into_iter().map(|n| (usable_until, n)));
            }
            self.due.notify_one();
            for customer in customers {
                let _ = self.created.send(customer);
            }
        }
        Ok(())
    }

    /// Sends the messages recorded here and, when `sweep`, the others that
    /// are due (retries, messages of a replica that died, messages stored
    /// while backlogged), several at once, and records each outcome. Returns
    /// how many were attempted.
    pub async fn dispatch_due(&self, sweep: bool) -> Result<usize, Error> {
        let now = Timestamp::now();
        let mut due = self.take_recorded(now);
        let room = self.claim - due.len() as i64;
        if sweep && room > 0 {
            let mut conn = self.db.write(Urgency::Background).await?;
            due.extend(db::claim_due(&mut conn, now, now.plus(self.lease), room).await?);
        }
        if due.is_empty() {
            return Ok(0);
        }
        let results: Vec<(Notification, Result<(), String>)> = stream::iter(due)
            .map(|n| async move {
                let result = self.channel.send(&n).await;
                (n, result)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let now = Timestamp::now();
        let mut tx = self.db.begin(Urgency::Background).await?;
        let sent: Vec<i64> = results.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| n.seq).collect();
        db::mark_sent(&mut tx, &sent, now).await?;
        for (n, result) in &results {
            let attempts = n.attempts + 1;
            match result {
                Ok(()) => {}
                Err(error) => {
                    let retry_at = self.policy.next_attempt(attempts, now);
                    match retry_at {
                        Some(_) => {
                            tracing::warn!(notification_id = %n.notification_id, attempts, %error, "send failed; will retry")
                        }
                        None => tracing::error!(notification_id = %n.notification_id, attempts, %error, "send failed; giving up"),
                    }
                    db::mark_failed(&mut tx, n.seq, attempts, error, retry_at).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(results.len())
    }

    /// Runs the dispatcher until `stop`: woken by new messages, and looking
    /// for other due messages in the database at least every `sweep` (its
    /// first round too, for what a previous run left).
    pub async fn run_dispatcher(self: Arc<Self>, sweep: std::time::Duration, stop: CancellationToken) {
        let mut last_sweep: Option<tokio::time::Instant> = None;
        loop {
            let sweeping = last_sweep.is_none_or(|at| at.elapsed() >= sweep);
            if sweeping {
                last_sweep = Some(tokio::time::Instant::now());
            }
            match self.dispatch_due(sweeping).await {
                Ok(n) if n as i64 == self.claim => continue,
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "dispatch round failed"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.due.notified() => {
                    // Let the messages of the next few milliseconds join this round.
                    tokio::time::sleep(DISPATCH_LINGER).await;
                }
                () = tokio::time::sleep(sweep) => {}
            }
        }
    }

    /// A page of the customer's messages, newest first.
    pub async fn list(
        &self,
        customer_id: &str,
        order_id: &str,
        page: &PageRequest,
    ) -> Result<(Vec<Notification>, String), Error> {
        let before = page.after.as_ref().map(|c| c.key);
        let rows = db::page(self.db.reader(), customer_id, order_id, before, i64::from(page.size) + 1).await?;
        Ok(paging::finish(rows, page.size, |n| Cursor { key: n.seq, id: String::new() }))
    }

    /// Sends the customer's new messages as they are written (after the
    /// existing ones, oldest first, if asked), until `stop` or the receiver
    /// goes away.
    pub async fn follow(
        &self,
        customer_id: String,
        order_id: String,
        include_existing: bool,
        sink: mpsc::Sender<Result<Notification, Error>>,
        stop: CancellationToken,
    ) {
        let mut created = self.created.subscribe();
        // Start after the oldest of the (at most 100) newest existing messages,
        // or after everything that exists now.
        let start = if include_existing {
            db::page(self.db.reader(), &customer_id, &order_id, None, 100)
                .await
                .map(|rows| rows.last().map_or(0, |oldest| oldest.seq - 1))
        } else {
            db::last_seq(self.db.reader()).await
        };
        let mut last = match start {
            Ok(seq) => seq,
            Err(err) => {
                let _ = sink.send(Err(err.into())).await;
                return;
            }
        };
        loop {
            match db::after(self.db.reader(), &customer_id, &order_id, last, 100).await {
                Ok(rows) => {
                    for n in rows {
                        last = n.seq;
                        if sink.send(Ok(n)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(err) => {
                    let _ = sink.send(Err(err.into())).await;
                    return;
                }
            }
            tokio::select! {
                () = stop.cancelled() => {
                    let _ = sink.send(Err(Error::ShuttingDown)).await;
                    return;
                }
                () = sink.closed() => return,
                () = wait_for_customer(&mut created, &customer_id) => {}
                () = tokio::time::sleep(WATCH_POLL) => {}
            }
        }
    }
}

async fn wait_for_customer(created: &mut broadcast::Receiver<String>, customer_id: &str) {
    loop {
        match created.recv().await {
            Ok(id) if id == customer_id => return,
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}
