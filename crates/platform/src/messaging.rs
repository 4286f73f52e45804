//! NATS JetStream: the connection, and the one registry of streams and
//! subjects that publishers and consumers share.
//!
//! | stream | subjects | publisher | kept |
//! |---|---|---|---|
//! | `ORDER_EVENTS` | `order.v1.placed`, `order.v1.cancellation_requested` | order | 7 days |
//! | `PAYMENT_EVENTS` | `payment.v1.captured`, `payment.v1.refunded` | payment | 7 days |
//! | `STORE_EVENTS` | `store.v1.order.<change>` (a kitchen change, or `reviewed`) | store | 7 days |
//! | `STORE_CATALOG` | `store.v1.catalog.<store_id>` | store | latest per store, forever |
//! | `DEAD_LETTERS` | `dlq.<stream>.<consumer>` | every consumer ([`crate::dead_letter`]) | 30 days |
//!
//! Each message body is the publishing context's event envelope
//! (`foodmesh.<context>.v1.<Context>Event`) and its `Nats-Msg-Id` is the event id.

use std::{path::PathBuf, time::Duration};

use async_nats::jetstream::{self, stream};
use serde::Deserialize;

/// How a service reaches NATS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// For example `nats://127.0.0.1:4222`.
    pub url: String,
    /// A NATS credentials file (user JWT and seed), if the server requires one.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

/// Subjects of the domain events.
pub mod subjects {
    /// A paid order was placed.
    pub const ORDER_PLACED: &str = "order.v1.placed";
    /// A customer asked to cancel.
    pub const ORDER_CANCELLATION_REQUESTED: &str = "order.v1.cancellation_requested";
    /// Every order event.
    pub const ORDER_ALL: &str = "order.v1.>";
    /// A charge was captured.
    pub const PAYMENT_CAPTURED: &str = "payment.v1.captured";
    /// A payment was refunded.
    pub const PAYMENT_REFUNDED: &str = "payment.v1.refunded";
    /// Every payment event.
    pub const PAYMENT_ALL: &str = "payment.v1.>";
    /// Every store order event.
    pub const STORE_ORDER_ALL: &str = "store.v1.order.>";
    /// A store order was cancelled.
    pub const STORE_ORDER_CANCELLED: &str = "store.v1.order.cancelled";
    /// A store rejected an order.
    pub const STORE_ORDER_REJECTED: &str = "store.v1.order.rejected";
    /// A cancellation came too late.
    pub const STORE_CANCELLATION_REJECTED: &str = "store.v1.order.cancellation_rejected";
    /// Every catalog event.
    pub const STORE_CATALOG_ALL: &str = "store.v1.catalog.>";

    /// The subject of a store order event, by the lower-case name of the change.
    pub fn store_order(change: &str) -> String {
        format!("store.v1.order.{change}")
    }

    /// The subject of one store's catalog.
    pub fn store_catalog(store_id: &str) -> String {
        format!("store.v1.catalog.{store_id}")
    }
}

/// One stream's definition.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    /// The stream name.
    pub name: &'static str,
    /// The subjects it captures.
    pub subjects: &'static [&'static str],
    /// What it holds, for operators.
    pub description: &'static str,
    /// Keep only the newest message per subject (a catalog, not a log).
    pub latest_per_subject: bool,
    /// How long messages are kept; zero keeps them until replaced.
    pub max_age: Duration,
}

/// The order context's events.
pub const ORDER_EVENTS: StreamSpec = StreamSpec {
    name: "ORDER_EVENTS",
    subjects: &[subjects::ORDER_ALL],
    description: "Domain events of the order context (foodmesh.order.v1.OrderEvent)",
    latest_per_subject: false,
    max_age: EVENT_RETENTION,
};
/// The payment context's events.
pub const PAYMENT_EVENTS: StreamSpec = StreamSpec {
    name: "PAYMENT_EVENTS",
    subjects: &[subjects::PAYMENT_ALL],
    description: "Domain events of the payment context (foodmesh.payment.v1.PaymentEvent)",
    latest_per_subject: false,
    max_age: EVENT_RETENTION,
};
/// The store context's order events.
pub const STORE_EVENTS: StreamSpec = StreamSpec {
    name: "STORE_EVENTS",
    subjects: &[subjects::STORE_ORDER_ALL],
    description: "Order events of the store context (foodmesh.store.v1.StoreEvent)",
    latest_per_subject: false,
    max_age: EVENT_RETENTION,
};
/// The store context's catalogs.
pub const STORE_CATALOG: StreamSpec = StreamSpec {
    name: "STORE_CATALOG",
    subjects: &[subjects::STORE_CATALOG_ALL],
    description: "The latest catalog of every store (foodmesh.store.v1.StoreEvent)",
    latest_per_subject: true,
    max_age: Duration::ZERO,
};

/// Every stream foodmesh uses.
pub const ALL_STREAMS: [StreamSpec; 5] =
    [ORDER_EVENTS, PAYMENT_EVENTS, STORE_EVENTS, STORE_CATALOG, crate::dead_letter::DEAD_LETTERS];

/// How long event streams keep messages: long enough for a consumer that was
/// down for days to catch up, and for a new service to replay recent history.
pub const EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// JetStream drops a second publish with the same `Nats-Msg-Id` within this
/// window; the outbox relay re-publishes well inside it after a lost ack.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

impl StreamSpec {
    /// The JetStream configuration of this stream.
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.to_owned(),
            subjects: self.subjects.iter().map(|s| (*s).to_owned()).collect(),
            description: Some(self.description.to_owned()),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: self.max_age,
            max_messages_per_subject: if self.latest_per_subject { 1 } else { -1 },
            duplicate_window: DUPLICATE_WINDOW,
            discard: stream::DiscardPolicy::Old,
            num_replicas: 1,
            ..Default::default()
        }
    }
}

/// Connects to NATS. Returns at once: the client connects (and reconnects,
/// forever) in the background, so a service starts while NATS is down.
pub async fn connect(settings: &NatsSettings, client_name: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(client_name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    if let Some(credentials) = &settings.credentials_file {
        options = options
            .credentials_file(credentials)
            .await
            .map_err(|e| async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, e))?;
    }
    options.connect(settings.url.as_str()).await
}

/// `url` (one server or a comma-separated list) without user names and
/// passwords, for messages: a NATS URL may carry `user:password@`.
pub fn display_url(url: &str) -> String {
    url.split(',')
        .map(|server| match server.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.rsplit_once('@').map_or(rest, |(_, host)| host)),
            None => server.rsplit_once('@').map_or(server, |(_, host)| host).to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A JetStream context whose publish acks time out after `ack_timeout`.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::ContextBuilder::new().timeout(Duration::from_secs(5)).build(client)
}

/// Why [`ensure_streams`] failed. While NATS is unreachable the client
/// retries quietly and a JetStream request only times out, so the error says
/// whether the client was connected; callers name the server.
#[derive(Debug, thiserror::Error)]
pub enum StreamsError {
    /// The client was not connected to NATS.
    #[error("NATS is not connected: {0}")]
    NotConnected(async_nats::Error),
    /// Connected, and JetStream refused or failed.
    #[error("{0}")]
    JetStream(async_nats::Error),
}

/// Creates the streams, or brings their configuration up to date.
pub async fn ensure_streams(js: &jetstream::Context, specs: &[StreamSpec]) -> Result<(), StreamsError> {
    for spec in specs {
        if let Err(error) = js.create_or_update_stream(spec.config()).await {
            return Err(match js.client().connection_state() {
                async_nats::connection::State::Connected => StreamsError::JetStream(error.into()),
                _ => StreamsError::NotConnected(error.into()),
            });
        }
    }
    Ok(())
}

/// Reads `stream` in order from sequence `from` up to its newest message at
/// the time of the call, handing each message's subject and body to `each`.
/// Returns the sequence to read from next time. An ordered consumer reads it:
/// ephemeral, flow-controlled, and gone when done.
pub async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    from: u64,
    mut each: impl FnMut(&str, &[u8]),
) -> Result<u64, async_nats::Error> {
    use futures::StreamExt as _;
    let mut handle = js.get_stream(stream).await?;
    let last = handle.info().await?.state.last_sequence;
    let from = from.max(1);
    if last < from {
        return Ok(from);
    }
    let consumer = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: from },
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    loop {
        // The messages up to `last` exist (or were deleted, which `pending`
        // shows), so a silent server is a failure, not the end.
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next()).await;
        let message = match next {
            Ok(Some(message)) => message?,
            Ok(None) => return Err("the stream's consumer ended early".into()),
            Err(_) => return Err(format!("no message from {stream} for 10 s").into()),
        };
        let info = message.info()?;
        each(message.subject.as_str(), &message.payload);
        if info.stream_sequence >= last || info.pending == 0 {
            return Ok(info.stream_sequence.max(last) + 1);
        }
    }
}

/// Metadata for a new event: a fresh time-ordered id (UUIDv7), the correlation
/// id (the order id), when it happened and who published it.
pub fn event_metadata(
    correlation_id: &str,
    producer: &str,
    occurred_at: crate::time::Timestamp,
) -> foodmesh_proto::common::v1::EventMetadata {
    foodmesh_proto::common::v1::EventMetadata {
        event_id: uuid::Uuid::now_v7().to_string(),
        correlation_id: correlation_id.to_owned(),
        occurred_at: Some(crate::convert::timestamp(occurred_at)),
        producer: producer.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::display_url;

    #[test]
    fn urls_for_messages_keep_the_servers_and_drop_the_credentials() {
        assert_eq!(display_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(display_url("nats://fm:s3cr@t@nats:4222"), "nats://nats:4222");
        assert_eq!(display_url("tls://token@a:4222,nats://u:p@b:4222"), "tls://a:4222,nats://b:4222");
        assert_eq!(display_url("u:p@nats:4222"), "nats:4222");
    }
}
