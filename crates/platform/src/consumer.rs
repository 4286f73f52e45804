//! Durable JetStream pull consumers, run the same way by every service.
//!
//! Messages that are ready together are handed to the service's
//! [`BatchHandler`] as one batch, which it applies in one database transaction
//! (inbox rows included) before anything is acknowledged. Under load that
//! turns hundreds of events into one commit; when idle a batch is one event.
//!
//! The handler says what became of each message ([`Outcome`]); this module is
//! the one place that turns that into `Ack`, `Nak(delay)` or `Term`. A message
//! is terminated only after it was parked in the dead-letter stream
//! ([`crate::dead_letter`]): a message that does not decode at once, one that
//! keeps failing after its last allowed delivery.

use std::{future::Future, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use bytes::Bytes;
use futures::{StreamExt, future::join_all};
use tokio_util::sync::CancellationToken;

use crate::{dead_letter, messaging::StreamSpec};

/// What a consumer reads and how it is configured on the server.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The stream it reads.
    pub stream: StreamSpec,
    /// The durable name; replicas of a service share it and split the work.
    pub durable: &'static str,
    /// The subjects it wants; empty means all of the stream's.
    pub filter_subjects: Vec<String>,
    /// Start from the latest message of each subject (catalogs) instead of the
    /// first message of the stream.
    pub latest_per_subject: bool,
    /// The most messages handed to the handler at once.
    pub batch_size: usize,
    /// How long to wait for more messages after the first one of a batch,
    /// when events are flowing (the previous batch started less than this
    /// long ago and held more than one event). Under load this turns a stream of single events into
    /// batches, one transaction each; an idle consumer handles a lone event
    /// at once.
    pub linger: Duration,
    /// Deliveries of a failing message; after the last it is parked.
    pub max_deliver: i64,
    /// The waits before redeliveries ([`RETRY_LADDER`] in services).
    pub retry_ladder: &'static [Duration],
    /// How long the server waits for an ack before delivering a message
    /// again: what a consumer that died holding messages delays them by.
    pub ack_wait: Duration,
}
/// The wait before the n-th retry of a message that failed (the last value
/// repeats): quick at first for passing faults, then slower for a database or
/// dependency that is down.
pub const RETRY_LADDER: [Duration; 5] = [
    Duration::from_millis(250),
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(15),
    Duration::from_secs(30),
];

/// One delivered message.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The subject it was published on.
    pub subject: String,
    /// The body: an event envelope.
    pub payload: Bytes,
    /// The event id, from the `Nats-Msg-Id` header (or the stream sequence for
    /// a message published without one).
    pub event_id: String,
    /// How many times it has been delivered, this time included.
    pub delivered: i64,
    /// The durable consumer it came through.
    pub consumer: &'static str,
    /// The W3C trace context it was published with (the `traceparent` header).
    pub traceparent: Option<String>,
}

impl Delivery {
    /// The span of applying this message: a child of the span that published
    /// it, so the order's trace goes on through this service.
    pub fn span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            consumer = self.consumer,
            subject = %self.subject,
            event_id = %self.event_id,
            otel.name = %format!("{} process", self.subject),
            otel.kind = "consumer",
            trace_id = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, self.traceparent.as_deref());
        span
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (or already applied before): acknowledge it.
    Ack,
    /// Not applied, for this reason, which may pass: deliver it again later
    /// (or park it, after its last allowed delivery).
    Retry(String),
    /// It can never be applied (it does not decode): stop delivering it.
    Reject(String),
}

/// A service's code that applies a batch of messages.
pub trait BatchHandler: Send + Sync + 'static {
    /// Applies `batch` and returns one outcome per message, in order.
    fn handle(&self, batch: Vec<Delivery>) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// The usual shape of a [`BatchHandler`]: decode every message with `decode`
/// (`Ok(None)`: not for this consumer, acknowledged; `Err`: undecodable,
/// rejected), apply the relevant ones with `apply` in one go, and retry them
/// all if that fails. `apply` gets `(event_id, decoded)` pairs in order.
///
/// Each relevant message gets its span ([`Delivery::span`]) for the time the
/// batch takes, and the events `apply` emits continue the trace of the
/// message of their saga (see [`crate::telemetry::with_saga_traces`]).
pub async fn decode_and_apply<T, D, A, F, E>(batch: Vec<Delivery>, decode: D, apply: A) -> Vec<Outcome>
where
    D: Fn(&Delivery) -> Result<Option<T>, String>,
    A: FnOnce(Vec<(String, T)>) -> F,
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut outcomes = vec![Outcome::Ack; batch.len()];
    let mut relevant = Vec::new();
    let mut positions = Vec::new();
    let mut spans = Vec::new();
    let mut traces = std::collections::HashMap::new();
    for (i, delivery) in batch.iter().enumerate() {
        match decode(delivery) {
            Ok(Some(item)) => {
                relevant.push((delivery.event_id.clone(), item));
                positions.push(i);
                let span = delivery.span();
                if let (Some(saga), Some(traceparent)) =
                    (crate::outbox::Envelope::correlation_id(&delivery.payload), crate::telemetry::traceparent(&span))
                {
                    traces.insert(saga, traceparent);
                }
                spans.push(span);
            }
            Ok(None) => {}
            Err(reason) => outcomes[i] = Outcome::Reject(reason),
        }
    }
    if relevant.is_empty() {
        return outcomes;
    }
    let count = relevant.len();
    let applied = crate::telemetry::with_saga_traces(traces, apply(relevant)).await;
    drop(spans);
    if let Err(err) = applied {
        tracing::warn!(error = %err, count, "event batch not applied; will retry");
        let reason = err.to_string();
        for i in positions {
            outcomes[i] = Outcome::Retry(reason.clone());
        }
    }
    outcomes
}

/// Consumes until `stop`. Connection or server problems are logged and retried
/// with a growing pause; a batch in progress is finished and acknowledged
/// before returning.
pub async fn run<H: BatchHandler>(js: jetstream::Context, spec: ConsumerSpec, handler: H, stop: CancellationToken) {
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        match consume(&js, &spec, &handler, &stop).await {
            Ok(()) => return,
            Err(err) => {
                failures += 1;
                tracing::warn!(consumer = spec.durable, error = %err, "consumer interrupted; restarting");
                let pause = Duration::from_millis(200 * 2u64.pow(failures.min(5)));
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

fn consumer_config(spec: &ConsumerSpec) -> pull::Config {
    // JetStream needs an explicit filter for "latest per subject".
    let filter_subjects = if spec.filter_subjects.is_empty() && spec.latest_per_subject {
        spec.stream.subjects.iter().map(|s| (*s).to_owned()).collect()
    } else {
        spec.filter_subjects.clone()
    };
    pull::Config {
        durable_name: Some(spec.durable.to_owned()),
        filter_subjects,
        deliver_policy: if spec.latest_per_subject { DeliverPolicy::LastPerSubject } else { DeliverPolicy::All },
        ack_policy: AckPolicy::Explicit,
        ack_wait: spec.ack_wait,
        // One more than ours: the server must not drop a message we have
        // not parked yet.
        max_deliver: spec.max_deliver + 1,
        max_ack_pending: i64::try_from(spec.batch_size * 8).unwrap_or(4096),
        ..Default::default()
    }
}

/// Creates `spec`'s durable consumer on the server, or brings its
/// configuration up to date; returns it. Services do this when they start;
/// `foodmesh jetstream-init` does it ahead of them (the chart's Job).
pub async fn ensure_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<jetstream::consumer::PullConsumer, async_nats::Error> {
    let stream = js.get_stream(spec.stream.name).await?;
    Ok(stream.create_consumer(consumer_config(spec)).await?)
}

async fn consume<H: BatchHandler>(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    handler: &H,
    stop: &CancellationToken,
) -> Result<(), async_nats::Error> {
    let consumer = ensure_consumer(js, spec).await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(spec.batch_size * 2)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await?;
    let mut messages = messages;
    tracing::info!(consumer = spec.durable, stream = spec.stream.name, "consuming");
    let (mut previous_batch, mut previous_len) = (tokio::time::Instant::now() - spec.linger, 0);
    loop {
        let first = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            first = messages.next() => first,
        };
        let Some(first) = first else {
            return Err("message stream ended".into());
        };
        let mut batch = Vec::with_capacity(spec.batch_size);
        keep(&mut batch, first, spec.durable);
        let now = tokio::time::Instant::now();
        // Flowing: the previous batch was recent and held more than one event.
        let flowing = previous_len > 1 && now.duration_since(previous_batch) < spec.linger;
        previous_batch = now;
        // Idle: take only what is already here. Flowing: wait up to the linger.
        let linger_until = if flowing { now + spec.linger } else { now };
        while batch.len() < spec.batch_size {
            match tokio::time::timeout_at(linger_until, messages.next()).await {
                Ok(Some(item)) => keep(&mut batch, item, spec.durable),
                Ok(None) | Err(_) => break,
            }
        }
        previous_len = batch.len();
        if !batch.is_empty() {
            handle_batch(js, spec, handler, batch).await;
        }
    }
}

fn keep<E: std::fmt::Display>(batch: &mut Vec<jetstream::Message>, item: Result<jetstream::Message, E>, consumer: &str) {
    match item {
        Ok(message) => batch.push(message),
        // Heartbeat and flow-control notices of the pull stream; not messages.
        Err(err) => tracing::debug!(consumer, error = %err, "pull stream notice"),
    }
}

async fn handle_batch<H: BatchHandler>(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
    handler: &H,
    messages: Vec<jetstream::Message>,
) {
    let deliveries: Vec<Delivery> = messages.iter().map(|m| delivery(spec, m)).collect();
    let delivered: Vec<i64> = deliveries.iter().map(|d| d.delivered).collect();
    let outcomes = handler.handle(deliveries).await;
    let acks = messages.iter().zip(delivered).enumerate().map(|(i, (message, delivered))| {
        let outcome = outcomes.get(i).cloned().unwrap_or_else(|| Outcome::Retry("the handler gave no outcome".to_owned()));
        async move {
            let kind = match outcome {
                Outcome::Ack => AckKind::Ack,
                Outcome::Reject(reason) => park_or_retry(js, spec, message, &reason).await,
                Outcome::Retry(reason) if delivered >= spec.max_deliver => {
                    let reason = format!("failed on all {delivered} deliveries; last error: {reason}");
                    park_or_retry(js, spec, message, &reason).await
                }
                Outcome::Retry(_) => AckKind::Nak(Some(retry_delay(spec.retry_ladder, delivered))),
            };
            if let Err(err) = message.ack_with(kind).await {
                // The server redelivers after the ack wait; the inbox makes that harmless.
                tracing::warn!(error = %err, "ack failed");
            }
        }
    });
    join_all(acks).await;
}

/// What the handler sees of a message.
fn delivery(spec: &ConsumerSpec, m: &jetstream::Message) -> Delivery {
    let info = m.info().ok();
    let header = |name: &str| m.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
    // A replayed dead letter carries its original id apart from its
    // `Nats-Msg-Id` (see `dead_letter`).
    let event_id = header(dead_letter::EVENT_ID_HEADER)
        .or_else(|| header("Nats-Msg-Id"))
        .unwrap_or_else(|| format!("{}:{}", spec.stream.name, info.as_ref().map_or(0, |i| i.stream_sequence)));
    Delivery {
        subject: m.subject.to_string(),
        payload: m.payload.clone(),
        event_id,
        delivered: info.map_or(1, |i| i.delivered),
        consumer: spec.durable,
        traceparent: header(crate::telemetry::TRACEPARENT),
    }
}

/// Parks a message and answers `Term`; if parking fails, the message is
/// delivered again (and parking tried again) rather than lost. Rare, so the
/// delivery is read from the message again here rather than kept for every
/// message of every batch.
async fn park_or_retry(js: &jetstream::Context, spec: &ConsumerSpec, message: &jetstream::Message, reason: &str) -> AckKind {
    let delivery = delivery(spec, message);
    let parking = dead_letter::Parking {
        stream: spec.stream.name,
        consumer: spec.durable,
        subject: &delivery.subject,
        sequence: message.info().map_or(0, |i| i.stream_sequence),
        event_id: &delivery.event_id,
        deliveries: delivery.delivered,
        reason,
        payload: delivery.payload.clone(),
    };
    match dead_letter::park(js, &parking).await {
        Ok(()) => {
            tracing::error!(
                consumer = spec.durable, subject = %delivery.subject, event_id = %delivery.event_id, reason,
                "message parked in DEAD_LETTERS; the consumer moves on"
            );
            AckKind::Term
        }
        Err(err) => {
            tracing::warn!(consumer = spec.durable, error = %err, "could not park a message; it will be delivered again");
            AckKind::Nak(Some(retry_delay(spec.retry_ladder, delivery.delivered)))
        }
    }
}

/// The pause before redelivering a message delivered `delivered` times: the
/// ladder's step for it, its last step once past the end.
pub fn retry_delay(ladder: &[Duration], delivered: i64) -> Duration {
    let step = usize::try_from(delivered.saturating_sub(1)).unwrap_or(0);
    ladder.get(step).or(ladder.last()).copied().unwrap_or(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_climb_the_ladder_and_stay_on_its_last_step() {
        assert_eq!(retry_delay(&RETRY_LADDER, 1), Duration::from_millis(250));
        assert_eq!(retry_delay(&RETRY_LADDER, 3), Duration::from_secs(5));
        assert_eq!(retry_delay(&RETRY_LADDER, 50), Duration::from_secs(30));
        assert_eq!(retry_delay(&RETRY_LADDER, 0), Duration::from_millis(250));
    }
}
