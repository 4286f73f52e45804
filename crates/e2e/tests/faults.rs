//! Fault injection with real processes: `kill -9` of each service in the
//! middle of the flow while customers keep ordering (and retrying with the
//! same request id, as the API tells them to), then a check of every
//! database. Bounded: a few seconds of load, at most a minute of waiting.
//! The soak repeats the kills: `FOODMESH_SOAK_ROUNDS=25 cargo test -p
//! foodmesh-e2e --test faults -- --nocapture` (about a minute per 25 rounds
//! of load, plus the settling).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use foodmesh_e2e::{SAGA_TIMEOUT, place_request, processes::ProcessMesh};
use foodmesh_platform::testing::authed;
use foodmesh_proto::order::v1::order_service_client::OrderServiceClient;
use tonic::{Code, transport::Channel};

/// What the customers saw.
#[derive(Debug, Default)]
struct Tally {
    placed: AtomicU64,
    retries: AtomicU64,
}

/// One customer: orders one after another until `stop`; each order is
/// retried with its request id while the answer is retryable.
async fn customer(
    client: OrderServiceClient<Channel>,
    token: String,
    name: String,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<String> {
    let mut placed = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        let request = place_request(&format!("{name}-{n}"), "seoul-bbq", &[("bibimbap", 1)], "tok_visa");
        let give_up = tokio::time::Instant::now() + SAGA_TIMEOUT;
        loop {
            match client.clone().place_order(authed(request.clone(), &token)).await {
                Ok(reply) => {
                    placed.push(reply.into_inner().order.expect("order").order_id);
                    tally.placed.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                // Down, restarting, or payment down: the client retries later.
                Err(status) if matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled) => {
                    assert!(tokio::time::Instant::now() < give_up, "{name}-{n} never placed: {status:?}");
                    tally.retries.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("{name}-{n}: {status:?}"),
            }
        }
    }
    placed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_minus_nine_of_each_service_mid_flow_loses_nothing_and_doubles_nothing() {
    let mut mesh = ProcessMesh::start(Duration::from_millis(40)).await;
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    // Each customer keeps its own connection, which reconnects to a
    // restarted order service on the same port.
    let customers: Vec<_> = (0..6)
        .map(|i| {
            let name = format!("k{i}");
            let token = mesh.customer(&name);
            tokio::spawn(customer(mesh.order(), token, name, stop.clone(), tally.clone()))
        })
        .collect();

    // One round by default; FOODMESH_SOAK_ROUNDS=N repeats it (the soak).
    let rounds: u32 = std::env::var("FOODMESH_SOAK_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    for _ in 0..rounds {
        for name in ["store", "notification", "payment", "order"] {
            tokio::time::sleep(Duration::from_millis(400)).await;
            mesh.kill(name).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            mesh.start_service(name).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    let mut placed = Vec::new();
    for c in customers {
        placed.extend(c.await.expect("customer"));
    }
    assert!(placed.len() >= 20, "load ran: {} orders", placed.len());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let report = loop {
        let report = mesh.check().await;
        let delivered = report.statuses.get("DELIVERED").copied().unwrap_or(0);
        if report.violations.is_empty() && delivered == report.orders {
            break report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled after 60 s: {:?}; violations:\n{}",
            report.statuses,
            report.violations.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(report.orders, placed.len(), "one order per request the customers saw placed, no more");
    assert_eq!(report.payments, placed.len(), "one charge per order");
    // A redelivery held by a killed consumer may still be on its way (ack
    // wait 3 s): the view must converge to what the streams say.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let view = loop {
        let (same, view) = mesh.check_order_view().await;
        if same {
            break view;
        }
        assert!(tokio::time::Instant::now() < deadline, "the status view differs from what the streams say:\n{view}");
        eprintln!("the view has not caught up with the streams yet:\n{view}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert!(view.contains(&format!("{} identical", placed.len())), "{view}");
    foodmesh_e2e::print_figures(&format!("kill -9 of each service, {rounds} round(s)"), &report, &mesh.nats.url()).await;
    eprintln!(
        "kill -9 of store, notification, payment, order: {} orders, {} retries by customers, 0 violations",
        placed.len(),
        tally.retries.load(Ordering::SeqCst)
    );
}
