//! A new team's service in another language, added without touching foodmesh:
//! `examples/marketing` (Python) reads the released contracts, consumes the
//! store's `store.v1.order.delivered` events with its own durable consumer and
//! keeps its own SQLite database. It backfills from the stream's history,
//! catches up after being down, and a full replay changes nothing.

use std::{path::Path, process::Stdio, time::Duration};

use foodmesh_e2e::{Mesh, MeshOptions};
use foodmesh_platform::testing::workspace_root;
use foodmesh_proto::order::v1::OrderStatus;
use sqlx::{Connection, Row, SqliteConnection};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};

/// How long marketing may take to start, or to show a coupon.
const WAIT: Duration = Duration::from_secs(20);

struct Marketing {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Marketing {
    /// Starts the Python service against the mesh's NATS and waits until its consumer is ready.
    async fn start(nats_url: &str, db: &Path) -> Marketing {
        let root = workspace_root();
        let packages = root.join(".tools/marketing");
        assert!(packages.exists(), "{} is missing: run scripts/bootstrap --test", packages.display());
        let mut child = Command::new("python3")
            .arg(root.join("examples/marketing/marketing.py"))
            .args(["--nats-url", nats_url, "--every", "3", "--db"])
            .arg(db)
            .env("PYTHONPATH", packages)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs examples/marketing/marketing.py");
        let stdout = child.stdout.take().expect("stdout");
        let mut marketing = Marketing { child, lines: BufReader::new(stdout).lines() };
        marketing.next_line_with("\"ready\"").await;
        marketing
    }

    /// The next line of its output that contains `needle`.
    async fn next_line_with(&mut self, needle: &str) -> String {
        let read = async {
            while let Some(line) = self.lines.next_line().await.expect("read marketing's output") {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("marketing exited before printing {needle}");
        };
        tokio::time::timeout(WAIT, read).await.unwrap_or_else(|_| panic!("marketing printed no {needle} within {WAIT:?}"))
    }

    /// Stops it as an orchestrator would, and waits for it to exit.
    async fn stop(mut self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, self.child.wait()).await.expect("stops on SIGTERM").expect("wait");
        assert!(exit.success(), "marketing exits cleanly on SIGTERM: {exit:?}");
    }
}

/// Places an order for `customer` and waits until it is delivered.
async fn delivered_order(mesh: &Mesh, customer: &str, n: usize) -> String {
    let order = mesh.place(customer, &format!("{customer}-{n}"), "seoul-bbq", &[("bulgogi", 1)]).await;
    mesh.wait_status(customer, &order.order_id, OrderStatus::Delivered).await;
    order.order_id
}

/// Coupons by customer, as (customer, delivered orders) pairs, and the
/// delivered counts, read from marketing's own database.
async fn marketing_state(db: &Path) -> (Vec<(String, i64)>, Vec<(String, i64)>, i64) {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.expect("marketing's database");
    let coupons = sqlx::query("SELECT customer_id, delivered_orders FROM coupons ORDER BY customer_id, delivered_orders")
        .fetch_all(&mut conn)
        .await
        .expect("coupons")
        .iter()
        .map(|r| (r.get("customer_id"), r.get("delivered_orders")))
        .collect();
    let loyalty = sqlx::query("SELECT customer_id, delivered FROM loyalty ORDER BY customer_id")
        .fetch_all(&mut conn)
        .await
        .expect("loyalty")
        .iter()
        .map(|r| (r.get("customer_id"), r.get("delivered")))
        .collect();
    let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox").fetch_one(&mut conn).await.expect("inbox");
    (coupons, loyalty, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_service_subscribes_to_the_events_and_rewards_loyal_customers_once() {
    let mesh = Mesh::start_with(MeshOptions { auto_kitchen: Some(Duration::from_millis(50)), ..Default::default() }).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("marketing.db");

    // History first: marketing starts after these deliveries and still sees them.
    for n in 1..=3 {
        delivered_order(&mesh, "alice", n).await;
    }
    for n in 1..=2 {
        delivered_order(&mesh, "bob", n).await;
    }
    let mut marketing = Marketing::start(&mesh.nats.url(), &db).await;
    let coupon = marketing.next_line_with("\"coupon\"").await;
    assert!(coupon.contains("\"customer_id\": \"alice\"") && coupon.contains("\"delivered_orders\": 3"), "{coupon}");
    marketing.stop().await;

    // While it is down, orders go on; on its return it catches up.
    let bobs_third = delivered_order(&mesh, "bob", 3).await;
    delivered_order(&mesh, "alice", 4).await;
    let mut marketing = Marketing::start(&mesh.nats.url(), &db).await;
    let coupon = marketing.next_line_with("\"coupon\"").await;
    assert!(coupon.contains("\"customer_id\": \"bob\"") && coupon.contains(&bobs_third), "{coupon}");
    marketing.stop().await;
    let (coupons, loyalty, seen) = marketing_state(&db).await;
    assert_eq!(coupons, [("alice".to_owned(), 3), ("bob".to_owned(), 3)]);
    assert_eq!(loyalty, [("alice".to_owned(), 4), ("bob".to_owned(), 3)]);
    assert_eq!(seen, 7, "seven deliveries, each applied once");

    // An operator replays everything (the consumer deleted and made again):
    // every event comes again, and the inbox turns each into nothing.
    let js = async_nats::jetstream::new(async_nats::connect(mesh.nats.url()).await.expect("nats"));
    js.delete_consumer_from_stream("marketing-loyalty", "STORE_EVENTS").await.expect("delete the consumer");
    let marketing = Marketing::start(&mesh.nats.url(), &db).await;
    let stream = js.get_stream("STORE_EVENTS").await.expect("stream");
    foodmesh_platform::testing::eventually(WAIT, "the replay acknowledged", || async {
        let info = stream.consumer_info("marketing-loyalty").await.expect("consumer info");
        // Delivered again from the start (7 deliveries plus the other changes are
        // filtered out by subject), and every one acknowledged.
        (info.num_ack_pending == 0 && info.num_pending == 0 && info.delivered.consumer_sequence >= 7).then_some(())
    })
    .await;
    marketing.stop().await;
    assert_eq!(marketing_state(&db).await, (coupons, loyalty, 7), "the replay changed nothing");

    // foodmesh itself saw none of this.
    mesh.assert_invariants().await;
}
