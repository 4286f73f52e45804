//! The dead-letter stream: messages a consumer gave up on.
//!
//! A message that can never be applied (it does not decode) or that failed
//! on every one of its deliveries is not dropped: the consumer copies it to
//! `DEAD_LETTERS` on subject `dlq.<stream>.<consumer>`, with why and where it
//! came from in headers, waits for that publish's ack, and only then tells the
//! server to stop delivering the original. The consumer then moves on.
//!
//! An operator lists parked messages and replays one (`foodmesh dead-letters`)
//! once its cause is fixed: the body goes back to its original subject,
//! carrying its original event id in the `Foodmesh-Event-Id` header, so every
//! consumer's inbox recognises it: the consumer that parked it applies it,
//! every consumer that applied it already changes nothing. The replay has a
//! new `Nats-Msg-Id`, so JetStream's duplicate window does not drop it. The
//! parked copy is deleted once the replay is acknowledged.

use std::time::Duration;

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;

use crate::messaging::StreamSpec;

/// The stream of parked messages.
pub const DEAD_LETTERS: StreamSpec = StreamSpec {
    name: "DEAD_LETTERS",
    subjects: &["dlq.>"],
    description: "Messages a consumer gave up on, with the reason (replay with `foodmesh dead-letters replay`)",
    latest_per_subject: false,
    max_age: Duration::from_secs(30 * 24 * 3600),
};

/// The event id of a message, when it differs from its `Nats-Msg-Id` (a replay).
pub const EVENT_ID_HEADER: &str = "Foodmesh-Event-Id";
const STREAM_HEADER: &str = "Foodmesh-Dead-Stream";
const SUBJECT_HEADER: &str = "Foodmesh-Dead-Subject";
const SEQUENCE_HEADER: &str = "Foodmesh-Dead-Sequence";
const CONSUMER_HEADER: &str = "Foodmesh-Dead-Consumer";
const REASON_HEADER: &str = "Foodmesh-Dead-Reason";
const DELIVERIES_HEADER: &str = "Foodmesh-Dead-Deliveries";

/// A message to park.
#[derive(Debug, Clone)]
pub struct Parking<'a> {
    /// The stream it was read from.
    pub stream: &'a str,
    /// The durable consumer that gave up on it.
    pub consumer: &'a str,
    /// Its subject.
    pub subject: &'a str,
    /// Its sequence in `stream`.
    pub sequence: u64,
    /// Its event id.
    pub event_id: &'a str,
    /// How many times it was delivered.
    pub deliveries: i64,
    /// Why it was given up on.
    pub reason: &'a str,
    /// Its body.
    pub payload: Bytes,
}

/// One parked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its sequence in `DEAD_LETTERS`: what `replay` takes.
    pub sequence: u64,
    /// The stream it was read from.
    pub stream: String,
    /// The consumer that gave up on it.
    pub consumer: String,
    /// Its original subject.
    pub subject: String,
    /// Its sequence in its original stream.
    pub original_sequence: u64,
    /// Its event id.
    pub event_id: String,
    /// How many times it was delivered.
    pub deliveries: i64,
    /// Why it was given up on.
    pub reason: String,
    /// When it was parked, RFC 3339.
    pub parked_at: String,
    /// Its body.
    pub payload: Bytes,
}

/// Errors of the dead-letter stream.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// NATS did not answer or refused.
    #[error("NATS: {0}")]
    Nats(String),
    /// No parked message has that sequence.
    #[error("no parked message has sequence {0}")]
    NotFound(u64),
}

fn nats(err: impl std::fmt::Display) -> DeadLetterError {
    DeadLetterError::Nats(err.to_string())
}

/// Header values cannot hold line breaks; a reason is one line.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).take(1000).collect()
}

/// Copies a message to `DEAD_LETTERS` and waits for the server's ack.
pub async fn park(js: &jetstream::Context, parking: &Parking<'_>) -> Result<(), DeadLetterError> {
    let mut headers = HeaderMap::new();
    // Parking the same delivery twice (its Term was lost) stores it once. The
    // stream sequence is part of the id: a replay that fails again is a new
    // message there, and must be parked again, not dropped as a duplicate.
    let msg_id = format!("dead:{}:{}:{}", parking.consumer, parking.stream, parking.sequence);
    headers.insert("Nats-Msg-Id", msg_id.as_str());
    headers.insert(EVENT_ID_HEADER, parking.event_id);
    headers.insert(STREAM_HEADER, parking.stream);
    headers.insert(SUBJECT_HEADER, parking.subject);
    headers.insert(SEQUENCE_HEADER, parking.sequence.to_string().as_str());
    headers.insert(CONSUMER_HEADER, parking.consumer);
    headers.insert(REASON_HEADER, one_line(parking.reason).as_str());
    headers.insert(DELIVERIES_HEADER, parking.deliveries.to_string().as_str());
    let subject = format!("dlq.{}.{}", parking.stream, parking.consumer);
    js.publish_with_headers(subject, headers, parking.payload.clone()).await.map_err(nats)?.await.map_err(nats)?;
    Ok(())
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

fn dead_letter(message: jetstream::message::StreamMessage) -> DeadLetter {
    let h = &message.headers;
    DeadLetter {
        sequence: message.sequence,
        stream: header(h, STREAM_HEADER),
        consumer: header(h, CONSUMER_HEADER),
        subject: header(h, SUBJECT_HEADER),
        original_sequence: header(h, SEQUENCE_HEADER).parse().unwrap_or(0),
        event_id: header(h, EVENT_ID_HEADER),
        deliveries: header(h, DELIVERIES_HEADER).parse().unwrap_or(0),
        reason: header(h, REASON_HEADER),
        parked_at: prost_types::Timestamp {
            seconds: message.time.unix_timestamp(),
            nanos: i32::try_from(message.time.nanosecond()).unwrap_or(0),
        }
        .to_string(),
        payload: message.payload,
    }
}

async fn stream(js: &jetstream::Context) -> Result<jetstream::stream::Stream, DeadLetterError> {
    js.get_or_create_stream(DEAD_LETTERS.config()).await.map_err(nats)
}

/// The parked messages, oldest first, at most `limit`; only those parked by
/// `consumer` if given.
pub async fn list(js: &jetstream::Context, consumer: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let stream = stream(js).await?;
    let filter = "dlq.>";
    let mut next = 1;
    let mut found = Vec::new();
    while found.len() < limit {
        let message = match stream.raw_message_builder().sequence(next).next_by_subject(filter).send().await {
            Ok(message) => message,
            Err(err) if err.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => break,
            Err(err) => return Err(nats(err)),
        };
        next = message.sequence + 1;
        let letter = dead_letter(message);
        if consumer.is_none_or(|c| c == letter.consumer) {
            found.push(letter);
        }
    }
    Ok(found)
}

/// Publishes parked message `sequence` again on its original subject, then
/// deletes the parked copy. Returns what was replayed.
pub async fn replay(js: &jetstream::Context, sequence: u64) -> Result<DeadLetter, DeadLetterError> {
    let stream = stream(js).await?;
    let letter = match stream.get_raw_message(sequence).await {
        Ok(message) if message.subject.starts_with("dlq.") => dead_letter(message),
        Ok(_) => return Err(DeadLetterError::NotFound(sequence)),
        Err(err) if err.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
            return Err(DeadLetterError::NotFound(sequence));
        }
        Err(err) => return Err(nats(err)),
    };
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", format!("replay:{sequence}:{}", letter.event_id).as_str());
    headers.insert(EVENT_ID_HEADER, letter.event_id.as_str());
    js.publish_with_headers(letter.subject.clone(), headers, letter.payload.clone()).await.map_err(nats)?.await.map_err(nats)?;
    stream.delete_message(sequence).await.map_err(nats)?;
    Ok(letter)
}
