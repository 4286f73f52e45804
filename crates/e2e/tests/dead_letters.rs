//! Messages a consumer gives up on are parked in `DEAD_LETTERS`, the consumer
//! moves on, and an operator can list and replay them.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_nats::HeaderMap;
use foodmesh_e2e::{Mesh, SAGA_TIMEOUT};
use foodmesh_platform::{
    consumer::{self, BatchHandler, ConsumerSpec, Delivery, Outcome},
    dead_letter::{self, DEAD_LETTERS},
    messaging::{ORDER_EVENTS, ensure_streams, jetstream, subjects},
    testing::{NatsServer, eventually},
};
use tokio_util::sync::CancellationToken;

/// Records the event ids it applies; fails every message while `broken`.
#[derive(Clone, Default)]
struct Recorder {
    broken: Arc<AtomicBool>,
    applied: Arc<Mutex<Vec<String>>>,
}

impl BatchHandler for Recorder {
    async fn handle(&self, batch: Vec<Delivery>) -> Vec<Outcome> {
        if self.broken.load(Ordering::SeqCst) {
            return batch.iter().map(|_| Outcome::Retry("the database is down".to_owned())).collect();
        }
        let mut applied = self.applied.lock().expect("lock");
        batch
            .into_iter()
            .map(|d| {
                applied.push(d.event_id);
                Outcome::Ack
            })
            .collect()
    }
}

const QUICK_RETRIES: [Duration; 1] = [Duration::from_millis(20)];

fn spec(durable: &'static str) -> ConsumerSpec {
    ConsumerSpec {
        stream: ORDER_EVENTS,
        durable,
        filter_subjects: Vec::new(),
        latest_per_subject: false,
        batch_size: 16,
        linger: Duration::ZERO,
        max_deliver: 3,
        retry_ladder: &QUICK_RETRIES,
        ack_wait: Duration::from_secs(30),
    }
}

async fn publish(js: &async_nats::jetstream::Context, event_id: &str, body: &'static [u8]) {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Msg-Id", event_id);
    js.publish_with_headers(subjects::ORDER_PLACED, headers, body.into()).await.expect("publish").await.expect("ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_keeps_failing_is_parked_then_replayed_once_to_the_consumer_that_missed_it() {
    let nats = NatsServer::start().await;
    let js = jetstream(async_nats::connect(nats.url()).await.expect("connect"));
    ensure_streams(&js, &[ORDER_EVENTS, DEAD_LETTERS]).await.expect("streams");
    let stop = CancellationToken::new();
    // `healthy` applies everything; `flaky` fails while its database is "down".
    let (healthy, flaky) = (Recorder::default(), Recorder::default());
    flaky.broken.store(true, Ordering::SeqCst);
    tokio::spawn(consumer::run(js.clone(), spec("healthy"), healthy.clone(), stop.clone()));
    tokio::spawn(consumer::run(js.clone(), spec("flaky"), flaky.clone(), stop.clone()));

    publish(&js, "evt-1", b"first").await;
    let parked = eventually(SAGA_TIMEOUT, "evt-1 parked by flaky", || async {
        dead_letter::list(&js, Some("flaky"), 10).await.expect("list").into_iter().find(|d| d.event_id == "evt-1")
    })
    .await;
    assert_eq!((parked.stream.as_str(), parked.subject.as_str()), ("ORDER_EVENTS", subjects::ORDER_PLACED));
    assert_eq!(parked.deliveries, 3, "parked after its last allowed delivery");
    assert!(parked.reason.contains("the database is down"), "the reason is kept: {}", parked.reason);
    assert_eq!(&parked.payload[..], b"first");
    assert!(dead_letter::list(&js, Some("healthy"), 10).await.expect("list").is_empty(), "healthy parked nothing");

    // The cause is fixed; the consumer moved on meanwhile.
    flaky.broken.store(false, Ordering::SeqCst);
    publish(&js, "evt-2", b"second").await;
    eventually(SAGA_TIMEOUT, "evt-2 applied by flaky", || async {
        flaky.applied.lock().expect("lock").contains(&"evt-2".to_owned()).then_some(())
    })
    .await;
    assert!(!flaky.applied.lock().expect("lock").contains(&"evt-1".to_owned()), "a parked message is not redelivered");

    let replayed = dead_letter::replay(&js, parked.sequence).await.expect("replay");
    assert_eq!(replayed.event_id, "evt-1");
    eventually(SAGA_TIMEOUT, "evt-1 applied by flaky after the replay", || async {
        flaky.applied.lock().expect("lock").contains(&"evt-1".to_owned()).then_some(())
    })
    .await;
    // Every consumer of the stream sees the replay, under the original event
    // id, so an inbox keyed by it suppresses it where it was applied before.
    eventually(SAGA_TIMEOUT, "healthy saw the replay too", || async {
        let seen = healthy.applied.lock().expect("lock").clone();
        (seen.iter().filter(|id| *id == "evt-1").count() == 2).then_some(())
    })
    .await;
    assert!(dead_letter::list(&js, None, 10).await.expect("list").is_empty(), "the replayed copy is removed");
    let err = dead_letter::replay(&js, parked.sequence).await.expect_err("gone");
    assert!(matches!(err, dead_letter::DeadLetterError::NotFound(_)), "{err}");

    // A replay that fails again is parked again, not lost.
    flaky.broken.store(true, Ordering::SeqCst);
    publish(&js, "evt-3", b"third").await;
    let third = eventually(SAGA_TIMEOUT, "evt-3 parked", || async {
        dead_letter::list(&js, Some("flaky"), 10).await.expect("list").into_iter().find(|d| d.event_id == "evt-3")
    })
    .await;
    dead_letter::replay(&js, third.sequence).await.expect("replay");
    eventually(SAGA_TIMEOUT, "evt-3 parked again after a failed replay", || async {
        let parked = dead_letter::list(&js, Some("flaky"), 10).await.expect("list");
        parked.into_iter().find(|d| d.event_id == "evt-3" && d.sequence != third.sequence)
    })
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_is_parked_by_each_consumer_and_the_saga_goes_on() {
    let mesh = Mesh::start().await;
    let js = jetstream(async_nats::connect(mesh.nats.url()).await.expect("connect"));
    publish(&js, "poison-1", b"this is not protobuf").await;

    let parked = eventually(SAGA_TIMEOUT, "the poison parked by store and notification", || async {
        let parked = dead_letter::list(&js, None, 10).await.expect("list");
        (parked.len() == 2).then_some(parked)
    })
    .await;
    let mut consumers: Vec<&str> = parked.iter().map(|d| d.consumer.as_str()).collect();
    consumers.sort_unstable();
    assert_eq!(consumers, ["notification-orders", "store-orders"]);
    for d in &parked {
        assert_eq!((d.event_id.as_str(), d.deliveries), ("poison-1", 1), "undecodable: parked at once");
        assert!(d.reason.contains("not an OrderEvent"), "{}", d.reason);
    }

    // The consumers moved on: the next order reaches the store.
    let order = mesh.place("alice", "after-poison", "pizza-napoli", &[("calzone", 1)]).await;
    eventually(SAGA_TIMEOUT, "the order in the store's queue", || async {
        let orders = mesh.store_orders("pizza-napoli").await;
        orders.iter().any(|o| o.order_id == order.order_id).then_some(())
    })
    .await;
    let report = mesh.assert_invariants().await;
    mesh.print_figures("a poison message", &report).await;
}
