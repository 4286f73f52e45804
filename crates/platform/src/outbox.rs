//! The transactional outbox: events are rows written in the same transaction
//! as the change that caused them, and a relay publishes them to JetStream.
//!
//! - A request only inserts the row and wakes the relay; publishing never
//!   blocks it.
//! - The relay publishes unsent rows in id (commit) order, many acks in flight
//!   at once, with `Nats-Msg-Id` = event id, and marks a row sent only after
//!   JetStream acknowledged that row. A crash in between re-publishes the row
//!   on restart; JetStream's duplicate window and the consumers' inbox absorb it.
//! - Sent rows are kept for a retention period, then purged with old inbox rows.

use std::{sync::Arc, time::Duration};

use async_nats::{
    HeaderMap,
    jetstream::{self, context::PublishAckFuture, message::PublishMessage},
};
use bytes::Bytes;
use futures::future::join_all;
use prost::Message as _;
use serde::Deserialize;
use sqlx::{AnyConnection, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::{
    db::{Database, Params, Urgency, batches, padded},
    time::Timestamp,
};

/// How the relay works.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// The most rows published per round (their acks are awaited together).
    pub batch_size: usize,
    /// How often to look for unsent rows when nothing woke the relay; this is
    /// what picks up rows left by a crash or a failed publish.
    #[serde(deserialize_with = "crate::config::millis", rename = "sweep_interval_ms")]
    pub sweep_interval: Duration,
    /// How long sent outbox rows and inbox rows are kept.
    #[serde(deserialize_with = "crate::config::millis", rename = "retention_ms")]
    pub retention: Duration,
    /// While events are flowing (the previous round read more than one row
    /// and the next commit came less than this long after it), how long a
    /// wake-up waits before reading the outbox, so that one round publishes
    /// what the commits of that time wrote: one read and one mark-sent write
    /// per round instead of per commit. A relay that was idle publishes at
    /// once ([`IDLE_LINGER`]).
    #[serde(deserialize_with = "crate::config::millis", rename = "linger_ms")]
    pub linger: Duration,
}

/// How long an idle relay waits after a wake-up, so that the commits of the
/// next moment (a group commit, a consumer batch) join the round.
const IDLE_LINGER: Duration = Duration::from_millis(2);

/// An event to publish, written with [`enqueue`].
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// The event id: the `Nats-Msg-Id` header and the consumers' inbox key.
    pub event_id: String,
    /// The subject to publish on.
    pub subject: String,
    /// The encoded event envelope.
    pub payload: Vec<u8>,
    /// NATS headers besides `Nats-Msg-Id`, as `Name: value` lines: the
    /// event's `traceparent`, so its consumers continue the order's trace.
    pub headers: String,
}

/// Adds an event to the outbox inside the caller's transaction.
pub async fn enqueue(conn: &mut AnyConnection, message: &OutboxMessage) -> Result<(), sqlx::Error> {
    enqueue_all(conn, std::slice::from_ref(message)).await
}

/// Adds events to the outbox, in this order, with a statement per batch
/// (see [`batches`]).
pub async fn enqueue_all(conn: &mut AnyConnection, messages: &[OutboxMessage]) -> Result<(), sqlx::Error> {
    // A few hundred rows per statement stay far below every engine's limit on
    // bound parameters.
    let now = Timestamp::now().as_micros();
    for chunk in batches(messages, 128) {
        let mut p = Params::new(conn);
        let sql =
            format!("INSERT INTO outbox (event_id, subject, payload, headers, created_at) VALUES {}", p.rows(chunk.len(), 5));
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in chunk {
            query = query.bind(&m.event_id).bind(&m.subject).bind(&m.payload).bind(&m.headers).bind(now);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Wakes the relay after a commit that wrote outbox rows. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    /// Tells the relay there is something to publish. A wake-up sent while the
    /// relay is busy is kept, so none is lost.
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// Why a relay round failed; it is retried on the next round.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or marking rows failed.
    #[error("outbox database error: {0}")]
    Db(#[from] sqlx::Error),
}

/// Publishes the outbox to JetStream.
#[derive(Debug, Clone)]
pub struct Relay {
    db: Database,
    js: jetstream::Context,
    settings: RelaySettings,
    signal: OutboxSignal,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RoundReport {
    /// Rows read.
    pub read: usize,
    /// Rows acknowledged by JetStream and marked sent.
    pub sent: usize,
    /// Of those, rows JetStream had already stored (a re-publish).
    pub duplicates: usize,
}

impl Relay {
    /// A relay over `db`'s outbox, woken by `signal`.
    pub fn new(db: Database, js: jetstream::Context, settings: RelaySettings, signal: OutboxSignal) -> Self {
        Self { db, js, settings, signal }
    }

    /// Runs until `stop`, then publishes what is left (for at most five
    /// seconds) and returns.
    pub async fn run(self, stop: CancellationToken) {
        let mut last_purge = tokio::time::Instant::now();
        let mut failures = 0u32;
        loop {
            let round = self.publish_pending().await;
            let (ended, read) = (tokio::time::Instant::now(), round.as_ref().map_or(0, |r| r.read));
            match round {
                Ok(report) if report.read == self.settings.batch_size && report.sent == report.read => {
                    failures = 0;
                    continue; // a backlog: keep going without waiting
                }
                Ok(report) if report.sent < report.read => failures += 1,
                Ok(_) => failures = 0,
                Err(err) => {
                    failures += 1;
                    tracing::warn!(error = %err, "outbox relay round failed");
                }
            }
            if last_purge.elapsed() > Duration::from_secs(600) {
                last_purge = tokio::time::Instant::now();
                if let Err(err) = self.purge().await {
                    tracing::warn!(error = %err, "outbox purge failed");
                }
            }
            // After failures, wait longer (up to 5 s) instead of hammering NATS.
            let pause = if failures == 0 {
                self.settings.sweep_interval
            } else {
                Duration::from_millis(100 * 2u64.pow(failures.min(6))).min(Duration::from_secs(5))
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.signal.0.notified(), if failures == 0 => {
                    // Flowing: the last round found several rows and the next
                    // commit came soon after it. Let the commits of the next
                    // moment join this round.
                    let flowing = read > 1 && ended.elapsed() < self.settings.linger;
                    tokio::time::sleep(if flowing { self.settings.linger } else { IDLE_LINGER }).await;
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
        let flush = async {
            while let Ok(report) = self.publish_pending().await {
                if report.read == 0 || report.sent < report.read {
                    break;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), flush).await.is_err() {
            tracing::warn!("outbox not fully flushed at shutdown; the next start publishes the rest");
        }
    }

    /// Publishes one batch of unsent rows and marks the acknowledged ones sent.
    pub async fn publish_pending(&self) -> Result<RoundReport, RelayError> {
        let rows =
            sqlx::query("SELECT id, event_id, subject, payload, headers FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1")
                .bind(i64::try_from(self.settings.batch_size).unwrap_or(i64::MAX))
                .fetch_all(self.db.reader())
                .await?;
        let mut report = RoundReport { read: rows.len(), ..RoundReport::default() };
        if rows.is_empty() {
            return Ok(report);
        }

        // Send every row before awaiting any ack: one round trip for the batch.
        let mut in_flight: Vec<(i64, PublishAckFuture)> = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let event_id: String = row.try_get("event_id")?;
            let subject: String = row.try_get("subject")?;
            let payload: Vec<u8> = row.try_get("payload")?;
            let headers: String = row.try_get("headers")?;
            let mut message = PublishMessage::build().payload(Bytes::from(payload)).message_id(&event_id);
            if let Some(headers) = parse_headers(&headers) {
                for (name, values) in headers.iter() {
                    for value in values {
                        message = message.header(name.clone(), value.clone());
                    }
                }
            }
            match self.js.send_publish(subject, message).await {
                Ok(ack) => in_flight.push((id, ack)),
                Err(err) => {
                    // Later rows wait for the next round, so commit order is kept.
                    tracing::warn!(error = %err, event_id = %event_id, "outbox publish failed");
                    break;
                }
            }
        }

        let mut sent = Vec::with_capacity(in_flight.len());
        let (ids, acks): (Vec<i64>, Vec<PublishAckFuture>) = in_flight.into_iter().unzip();
        for (id, ack) in ids.into_iter().zip(join_all(acks.into_iter().map(|a| a.into_future())).await) {
            match ack {
                Ok(ack) => {
                    report.duplicates += usize::from(ack.duplicate);
                    sent.push(id);
                }
                Err(err) => tracing::warn!(error = %err, outbox_id = id, "no publish ack; will retry"),
            }
        }
        if !sent.is_empty() {
            let mut conn = self.db.write(Urgency::Background).await?;
            let mut p = Params::new(&conn);
            let sql = format!("UPDATE outbox SET sent_at = {} WHERE id IN ({})", p.value(), p.in_list(sent.len()));
            // The statement holds only placeholders; every value is bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(Timestamp::now().as_micros());
            for id in padded(&sent) {
                query = query.bind(*id);
            }
            query.execute(&mut *conn).await?;
            if report.duplicates > 0 {
                crate::inbox::add_to_counter(&mut conn, "outbox.duplicates", report.duplicates).await?;
            }
        }
        report.sent = sent.len();
        Ok(report)
    }

    /// Deletes sent outbox rows and inbox rows older than the retention.
    pub async fn purge(&self) -> Result<(), sqlx::Error> {
        let retention = i64::try_from(self.settings.retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff = Timestamp::now().as_micros().saturating_sub(retention);
        // A turn per statement, so requests can write between them.
        for sql in [
            "DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1",
            "DELETE FROM inbox WHERE processed_at < $1",
            "DELETE FROM saga_traces WHERE created_at < $1",
        ] {
            sqlx::query(sql).bind(cutoff).execute(&mut *self.db.write(Urgency::Background).await?).await?;
        }
        Ok(())
    }
}

/// Headers are stored as `Name: value` lines, for trace context and the like.
fn parse_headers(text: &str) -> Option<HeaderMap> {
    if text.is_empty() {
        return None;
    }
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim(), value.trim());
        }
    }
    Some(headers)
}

impl OutboxMessage {
    /// An outbox row for an event envelope whose metadata is `metadata`: the
    /// event id from it, and the trace context of its saga (see
    /// [`crate::telemetry::saga_traceparent`]).
    pub fn new(
        subject: impl Into<String>,
        metadata: &foodmesh_proto::common::v1::EventMetadata,
        envelope: &impl prost::Message,
    ) -> Self {
        let headers = crate::telemetry::saga_traceparent(&metadata.correlation_id)
            .map(|tp| format!("{}: {tp}", crate::telemetry::TRACEPARENT))
            .unwrap_or_default();
        Self { event_id: metadata.event_id.clone(), subject: subject.into(), payload: envelope.encode_to_vec(), headers }
    }
}

/// What every foodmesh event envelope starts with (field 1 of OrderEvent,
/// PaymentEvent and StoreEvent): enough to read the correlation id of any
/// consumed event.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Envelope {
    /// The event's metadata.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<foodmesh_proto::common::v1::EventMetadata>,
}

impl Envelope {
    /// The correlation id (the order id) of an encoded event, if it has one.
    pub fn correlation_id(payload: &[u8]) -> Option<String> {
        Self::decode(payload).ok().and_then(|e| e.metadata).map(|m| m.correlation_id).filter(|c| !c.is_empty())
    }
}
