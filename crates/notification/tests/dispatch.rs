//! The dispatcher against a real database (SQLite, or PostgreSQL with
//! `FOODMESH_TEST_BACKEND=postgres`): messages a replica records are claimed
//! as they are stored and sent from its memory; another replica leaves them
//! alone while that claim lasts and sends them once it has ended, as after a
//! crash between recording and sending.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use foodmesh_notification::{
    app::NotificationApp,
    channel::Channel,
    db,
    domain::{Detail, Kind, Notification, OrderChange, RetryPolicy},
};
use foodmesh_platform::{
    config,
    db::Database,
    infra::{COMMON_DEFAULTS, CommonSettings},
    testing::{TestDatabases, backend_from_env},
    time::Timestamp,
};
use futures::future::BoxFuture;
use sqlx::Row;

/// A channel that remembers what it sent.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    fn sent(&self) -> Vec<String> {
        self.0.lock().expect("not poisoned").clone()
    }
}

impl Channel for Recorder {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        self.0.lock().expect("not poisoned").push(n.order_id.clone());
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The send timeout of both replicas: a claim lasts 4 × 100 ms + 1 s.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

fn replica(db: &Database, channel: Arc<Recorder>) -> NotificationApp {
    let policy = RetryPolicy { max_attempts: 3, initial: Duration::from_millis(100), max: Duration::from_secs(1) };
    NotificationApp::new(db.clone(), channel, policy, 4, SEND_TIMEOUT)
}

fn change(order_id: &str) -> (String, OrderChange) {
    let change = OrderChange {
        order_id: order_id.to_owned(),
        customer_id: "customer-1".to_owned(),
        kind: Kind::OrderPlaced,
        occurred_at: Timestamp::now(),
        detail: Detail::None,
    };
    (format!("event-{order_id}"), change)
}

async fn status(db: &Database, order_id: &str) -> String {
    sqlx::query("SELECT status FROM notifications WHERE order_id = $1")
        .bind(order_id)
        .fetch_one(db.reader())
        .await
        .expect("the message is stored")
        .try_get("status")
        .expect("a status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_message_is_sent_by_its_replica_and_by_another_only_after_that_claim_ends() {
    let dbs = TestDatabases::new(backend_from_env());
    let env = vec![("DATABASE_URL".to_owned(), dbs.url("notification").await)];
    let settings: CommonSettings = config::load_from(&[COMMON_DEFAULTS], None, env).expect("settings");
    let db = Database::connect_lazy(&settings.database).expect("database");
    db.migrate(&db::migrations()).await.expect("migrate");
    let (a_sent, b_sent) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let a = replica(&db, a_sent.clone());
    let b = replica(&db, b_sent.clone());

    // A records a message and sends it from memory, without a sweep; B's
    // sweep meanwhile finds nothing due.
    a.record("notification-orders", &[change("order-1")]).await.expect("record");
    assert_eq!(b.dispatch_due(true).await.expect("B's round"), 0, "A's claim keeps B off");
    assert_eq!(a.dispatch_due(false).await.expect("A's round"), 1);
    assert_eq!(a_sent.sent(), ["order-1"]);
    assert_eq!(status(&db, "order-1").await, "SENT");

    // A records another message and dies before sending it.
    a.record("notification-orders", &[change("order-2")]).await.expect("record");
    drop(a);
    assert_eq!(b.dispatch_due(true).await.expect("B's round"), 0, "still claimed by A");
    assert_eq!(status(&db, "order-2").await, "PENDING");

    // When A's claim (two leases, 2.8 s) has ended, B's sweep sends it, once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while b.dispatch_due(true).await.expect("B's round") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "B never sent the message A left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(b_sent.sent(), ["order-2"]);
    assert_eq!(a_sent.sent(), ["order-1"], "each message went out once");
    assert_eq!(status(&db, "order-2").await, "SENT");
    assert_eq!(b.dispatch_due(true).await.expect("B's round"), 0, "nothing left");
}
