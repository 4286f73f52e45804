//! `foodmesh jetstream-init`: creates every JetStream stream and durable
//! consumer foodmesh uses, then exits. The Helm chart runs it as a Job so the
//! streams exist before the first event, and so an operator can give the
//! services' NATS users publish/consume rights without stream-admin rights.
//!
//! The services create the same objects when they start (idempotently, with
//! their own consumer settings), so running this twice, or never, is safe:
//! it is the same code (`platform::messaging::ensure_streams`,
//! `platform::consumer::ensure_consumer`) with the same specs.

use anyhow::{Context, Result};
use foodmesh_platform::{
    config,
    consumer::{ConsumerSpec, ensure_consumer},
    infra::{COMMON_DEFAULTS, ConsumerSettings},
    messaging::{self, ALL_STREAMS, NatsSettings},
};
use serde::Deserialize;

/// The part of a service's configuration that shapes streams and consumers:
/// read from the same defaults, file (`FOODMESH_CONFIG`) and environment
/// (`NATS_URL`, `FOODMESH_CONSUMER__*`) as the services.
#[derive(Debug, Deserialize)]
struct Settings {
    nats: NatsSettings,
    consumer: ConsumerSettings,
}

/// Every durable consumer of the four services, as they define them.
fn all_consumers(settings: &ConsumerSettings) -> Vec<ConsumerSpec> {
    let mut specs = Vec::new();
    specs.extend(foodmesh_order::events::consumers(settings));
    specs.push(foodmesh_payment::events::refund_consumer(settings));
    specs.push(foodmesh_store::events::order_consumer(settings));
    specs.extend(foodmesh_notification::events::consumers(settings));
    specs
}

/// Creates or updates the streams and consumers; `nats_url` overrides the
/// configured URL.
pub async fn jetstream_init(nats_url: Option<String>) -> Result<()> {
    let mut settings: Settings = config::load(&[COMMON_DEFAULTS]).context("reading the configuration")?;
    if let Some(url) = nats_url {
        settings.nats.url = url;
    }
    // connect() retries in the background forever; a Job must end, so the
    // first request below is bounded by JetStream's request timeout.
    // The URL may carry a user and password: messages name the server only.
    let server = messaging::display_url(&settings.nats.url);
    let client = messaging::connect(&settings.nats, "foodmesh-jetstream-init")
        .await
        .with_context(|| format!("cannot reach NATS at {server}"))?;
    let js = messaging::jetstream(client);
    messaging::ensure_streams(&js, &ALL_STREAMS).await.map_err(|e| match e {
        messaging::StreamsError::NotConnected(e) => {
            anyhow::anyhow!("creating the streams: NATS at {server} is not connected: {e}")
        }
        messaging::StreamsError::JetStream(e) => anyhow::anyhow!("creating the streams: {e}"),
    })?;
    for stream in ALL_STREAMS {
        println!("stream   {:<16} {}", stream.name, stream.subjects.join(" "));
    }
    for spec in all_consumers(&settings.consumer) {
        ensure_consumer(&js, &spec)
            .await
            .map_err(|e| anyhow::anyhow!("creating consumer {} on {}: {e}", spec.durable, spec.stream.name))?;
        println!("consumer {:<24} on {}", spec.durable, spec.stream.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_consumer_is_provisioned_once() {
        let settings: ConsumerSettings =
            config::load_from::<Settings>(&[COMMON_DEFAULTS], None, Vec::new()).expect("defaults load").consumer;
        let mut names: Vec<&str> = all_consumers(&settings).iter().map(|s| s.durable).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "notification-orders",
                "notification-payments",
                "notification-store",
                "order-catalog",
                "order-reconciler",
                "order-view-payment",
                "order-view-store",
                "payment-refunds",
                "store-orders",
            ]
        );
    }
}
