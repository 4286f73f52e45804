//! `foodmesh jetstream-init`, the chart's Job, against a real nats-server:
//! it creates every stream and durable consumer the services use, with
//! explicit acks, and a second run (an upgrade) changes nothing and succeeds.

use std::process::Command;

use async_nats::jetstream::consumer::AckPolicy;
use foodmesh_platform::testing::NatsServer;
use futures::TryStreamExt;

fn jetstream_init(nats_url: &str) -> std::process::Output {
    // A read-only home proves the command needs none (the container's root
    // filesystem is read-only).
    Command::new(env!("CARGO_BIN_EXE_foodmesh"))
        .args(["--home", "/proc/foodmesh-no-home", "jetstream-init", "--nats-url", nats_url])
        .output()
        .expect("foodmesh runs")
}

#[tokio::test]
async fn creates_every_stream_and_consumer_and_can_run_again() {
    let nats = NatsServer::start().await;
    for run in 1..=2 {
        let out = jetstream_init(&nats.url());
        assert!(out.status.success(), "run {run}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connects"));
    let mut streams: Vec<String> = js.stream_names().try_collect().await.expect("lists streams");
    streams.sort();
    assert_eq!(streams, ["DEAD_LETTERS", "ORDER_EVENTS", "PAYMENT_EVENTS", "STORE_CATALOG", "STORE_EVENTS"]);
    let mut consumers = Vec::new();
    for name in &streams {
        let stream = js.get_stream(name).await.expect("stream");
        let infos: Vec<_> = stream.consumers().try_collect().await.expect("lists consumers");
        for info in infos {
            assert_eq!(info.config.ack_policy, AckPolicy::Explicit, "{}", info.name);
            consumers.push(format!("{name}/{}", info.name));
        }
    }
    consumers.sort();
    assert_eq!(
        consumers,
        [
            "ORDER_EVENTS/notification-orders",
            "ORDER_EVENTS/store-orders",
            "PAYMENT_EVENTS/notification-payments",
            "PAYMENT_EVENTS/order-reconciler",
            "PAYMENT_EVENTS/order-view-payment",
            "STORE_CATALOG/order-catalog",
            "STORE_EVENTS/notification-store",
            "STORE_EVENTS/order-view-store",
            "STORE_EVENTS/payment-refunds",
        ]
    );
}

#[test]
fn an_unreachable_nats_fails_the_job_with_a_message_that_names_it_without_the_password() {
    let port = foodmesh_platform::testing::free_port();
    let out = jetstream_init(&format!("nats://init:hunter2@127.0.0.1:{port}"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("creating the streams: NATS at nats://127.0.0.1:{port} is not connected")), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
