//! What Prometheus scrapes: order's and payment's `GET /metrics` after real
//! traffic count each RPC by method and status with its latency, sample the
//! outbox backlog, the consumers' lag, order's circuit breaker and its orders
//! by status, time PlaceOrder's stages and the waits for SQLite's writer;
//! and every metric the chart's alerts read is one the services export.

use foodmesh_e2e::{Mesh, MeshOptions, SAGA_TIMEOUT, place_request};
use foodmesh_mesh::process::admin_get;
use foodmesh_platform::testing::{authed, eventually, free_port, workspace_root};
use tonic::Code;

fn env(port: u16) -> Vec<(String, String)> {
    vec![
        ("FOODMESH_METRICS__LISTEN_ADDR".into(), format!("127.0.0.1:{port}")),
        ("FOODMESH_METRICS__SAMPLE_INTERVAL_MS".into(), "100".into()),
    ]
}

/// The value of the sample `line_start` (metric and labels, as written), if scraped.
fn value(text: &str, line_start: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(line_start).and_then(|v| v.trim().split(' ').next()?.parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_export_rpc_outbox_consumer_breaker_and_order_metrics() {
    let (order_port, payment_port) = (free_port(), free_port());
    let mesh =
        Mesh::start_with(MeshOptions { order_env: env(order_port), payment_env: env(payment_port), ..MeshOptions::default() })
            .await;
    for i in 0..5 {
        mesh.place("dave", &format!("metrics-{i}"), "seoul-bbq", &[("bulgogi", 1)]).await;
    }
    let declined = place_request("metrics-declined", "pizza-napoli", &[("margherita", 1)], "tok_decline");
    let err = mesh.order().place_order(authed(declined, &mesh.customer("dave"))).await.expect_err("declined");
    assert_eq!(err.code(), Code::FailedPrecondition);

    let place = "foodmesh.order.v1.OrderService/PlaceOrder";
    let order = eventually(SAGA_TIMEOUT, "order's metrics to show the orders", || async move {
        let text = admin_get(order_port, "/metrics").await.ok()?;
        let placed = value(&text, "foodmesh_orders{status=\"placed\"}").unwrap_or(0.0)
            + value(&text, "foodmesh_orders{status=\"accepted\"}").unwrap_or(0.0);
        (placed == 5.0 && value(&text, "foodmesh_outbox_backlog") == Some(0.0)).then_some(text)
    })
    .await;
    assert!(order.ends_with("# EOF\n"), "OpenMetrics text");
    assert_eq!(value(&order, &format!("foodmesh_rpc_requests_total{{method=\"{place}\",code=\"Ok\"}}")), Some(5.0), "{order}");
    assert_eq!(
        value(&order, &format!("foodmesh_rpc_requests_total{{method=\"{place}\",code=\"FailedPrecondition\"}}")),
        Some(1.0)
    );
    // The mesh's start-up probes for the catalog are empty orders: refused.
    assert!(value(&order, &format!("foodmesh_rpc_requests_total{{method=\"{place}\",code=\"InvalidArgument\"}}")).is_some());
    let count = value(&order, &format!("foodmesh_rpc_duration_seconds_count{{method=\"{place}\"}}")).expect("a histogram");
    assert!(count >= 6.0, "{count}");
    let buckets = order.lines().filter(|l| l.starts_with("foodmesh_rpc_duration_seconds_bucket{") && l.contains(place)).count();
    assert_eq!(buckets, 15, "14 bounds and +Inf");
    // PlaceOrder's stages: six attempts recorded and charged (one declined), five orders committed.
    let stage = |name: &str| {
        value(&order, &format!("foodmesh_stage_duration_seconds_count{{operation=\"PlaceOrder\",stage=\"{name}\"}}"))
    };
    assert_eq!((stage("attempt"), stage("charge"), stage("placement")), (Some(6.0), Some(6.0), Some(5.0)), "{order}");
    assert_eq!(value(&order, "foodmesh_circuit_breaker_state{dependency=\"payment\"}"), Some(0.0));
    for consumer in ["order-catalog", "order-view-store", "order-view-payment", "order-reconciler"] {
        assert!(value(&order, &format!("foodmesh_consumer_pending{{consumer=\"{consumer}\"}}")).is_some(), "{consumer}: {order}");
    }
    assert!(!order.contains("consumer=\"store-orders\""), "only order's own consumers");
    // SQLite's one writer: how long writes waited for it and held it. Each
    // placed order wrote its attempt and then its order, the declined one its
    // attempt and its decline; the status view's consumers wrote in the background.
    let sqlite = matches!(foodmesh_platform::testing::backend_from_env(), foodmesh_platform::db::Backend::Sqlite);
    if sqlite {
        for family in ["foodmesh_db_writer_wait_seconds", "foodmesh_db_writer_held_seconds"] {
            let requests = value(&order, &format!("{family}_count{{urgency=\"request\"}}")).expect("request writes");
            assert!(requests >= 12.0, "{family}: {requests} request writes: {order}");
            assert!(value(&order, &format!("{family}_count{{urgency=\"background\"}}")).is_some_and(|n| n >= 1.0));
            let buckets = order
                .lines()
                .filter(|l| l.starts_with(&format!("{family}_bucket{{")) && l.contains("urgency=\"request\""))
                .count();
            assert_eq!(buckets, 13, "{family}: 12 bounds and +Inf");
        }
    } else {
        // No turns: PostgreSQL takes concurrent writers itself.
        assert!(!order.contains("foodmesh_db_writer_wait_seconds_count"), "{order}");
    }
    // Probes and reflection are not the API's traffic.
    assert!(!order.contains("grpc.health"));

    let payment = admin_get(payment_port, "/metrics").await.expect("payment's metrics");
    let charge = |code: &str| {
        value(
            &payment,
            &format!("foodmesh_rpc_requests_total{{method=\"foodmesh.payment.v1.PaymentService/Charge\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(charge("Ok"), Some(5.0), "{payment}");
    assert_eq!(charge("FailedPrecondition"), Some(1.0), "the declined card: {payment}");
    assert!(admin_get(payment_port, "/other").await.expect("answers").contains("only /metrics"));

    // Every foodmesh metric the chart's alerts read exists.
    let rules = std::fs::read_to_string(workspace_root().join("helm/foodmesh/templates/prometheusrule.yaml")).expect("rules");
    let mut read: Vec<&str> =
        rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("foodmesh_")).collect();
    read.sort_unstable();
    read.dedup();
    assert!(read.len() >= 6, "{read:?}");
    for metric in read {
        let family = metric.trim_end_matches("_bucket").trim_end_matches("_total");
        if !sqlite && family.starts_with("foodmesh_db_writer_") {
            // SQLite's writer only: on PostgreSQL the family has no series, so no TYPE line.
            continue;
        }
        assert!(order.contains(&format!("# TYPE {family} ")), "an alert reads {metric}, which order does not export");
    }
}
