//! The outbox relay on its own, against a real nats-server and a real
//! database: commit order, "sent" only after JetStream's ack, retention,
//! a re-fed row that JetStream's duplicate window drops, and the linger that
//! turns the commits of a busy moment into one round. Also the inbox and the
//! outbox with more rows than one statement takes.

use std::time::Duration;

use foodmesh_platform::{
    config,
    db::{Database, Migrations},
    inbox,
    infra::{COMMON_DEFAULTS, CommonSettings},
    messaging::{self, ORDER_EVENTS},
    outbox::{self, OutboxMessage, OutboxSignal, Relay},
    testing::{NatsServer, TestDatabases, TestKeys, backend_from_env, service_env},
};
use sqlx::Row;

/// Fields drop in order: the relay and pool before the broker and database.
struct Setup {
    relay: Relay,
    db: Database,
    nats: NatsServer,
    _dbs: TestDatabases,
}

async fn setup() -> Setup {
    setup_with(Vec::new(), OutboxSignal::default()).await
}

/// A relay with `overrides` on top of the test settings, woken by `signal`.
async fn setup_with(overrides: Vec<(String, String)>, signal: OutboxSignal) -> Setup {
    let nats = NatsServer::start().await;
    let dbs = TestDatabases::new(backend_from_env());
    let mut env = service_env(&dbs.url("outbox").await, &nats.url(), &TestKeys::new());
    env.extend(overrides);
    let settings: CommonSettings = config::load_from(&[COMMON_DEFAULTS], None, env).expect("settings");
    let db = Database::connect_lazy(&settings.database).expect("database");
    let none = || sqlx::migrate::Migrator::DEFAULT;
    db.migrate(&Migrations { sqlite: none(), postgres: none() }).await.expect("migrate");
    let js = messaging::jetstream(messaging::connect(&settings.nats, "outbox-test").await.expect("nats"));
    messaging::ensure_streams(&js, &[ORDER_EVENTS]).await.expect("stream");
    let relay = Relay::new(db.clone(), js, settings.relay, signal);
    Setup { nats, _dbs: dbs, db, relay }
}

/// Commits `n` events, one transaction each, numbered from `first` (the body
/// is the number).
async fn commit(db: &Database, first: usize, n: usize) {
    for i in first..first + n {
        let mut tx = db.begin(foodmesh_platform::db::Urgency::Background).await.expect("begin");
        let message = OutboxMessage {
            event_id: format!("evt-{i}"),
            subject: "order.v1.placed".into(),
            payload: i.to_string().into_bytes(),
            headers: String::new(),
        };
        outbox::enqueue(&mut tx, &message).await.expect("enqueue");
        tx.commit().await.expect("commit");
    }
}

async fn count(db: &Database, sql: &'static str) -> i64 {
    sqlx::query(sql).fetch_one(db.reader()).await.expect(sql).try_get::<i64, _>(0).expect("a count")
}

async fn stream_bodies(nats: &NatsServer) -> Vec<usize> {
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let mut bodies = Vec::new();
    messaging::read_stream(&js, ORDER_EVENTS.name, 1, |_, body| {
        bodies.push(String::from_utf8_lossy(body).parse().expect("a number"));
    })
    .await
    .expect("read the stream");
    bodies
}

async fn publish_all(relay: &Relay) -> usize {
    let mut duplicates = 0;
    for _ in 0..200 {
        match relay.publish_pending().await {
            Ok(report) if report.read == 0 => return duplicates,
            Ok(report) => duplicates += report.duplicates,
            Err(err) => panic!("relay: {err}"),
        }
    }
    panic!("the outbox never emptied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_publishes_in_commit_order_and_marks_a_row_sent_only_after_the_ack() {
    let mut s = setup().await;
    commit(&s.db, 0, 150).await;
    publish_all(&s.relay).await;

    // NATS down: rows committed now stay unsent, however often the relay tries.
    s.nats.kill().await;
    commit(&s.db, 150, 150).await;
    let round = tokio::time::timeout(Duration::from_secs(30), s.relay.publish_pending()).await.expect("bounded");
    assert_eq!(round.expect("a round").sent, 0, "nothing is acknowledged while NATS is down");
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await, 150);

    s.nats.restart().await;
    publish_all(&s.relay).await;
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await, 0);
    let bodies = stream_bodies(&s.nats).await;
    assert_eq!(bodies, (0..300).collect::<Vec<_>>(), "every event once, in commit order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_enqueued_together_past_one_statement_are_all_published_in_their_order() {
    let s = setup().await;
    // 150 rows go as statements of 128, 16, 4 and 2 rows (`db::batches`).
    let messages: Vec<OutboxMessage> = (0..150)
        .map(|i| OutboxMessage {
            event_id: format!("evt-{i}"),
            subject: "order.v1.placed".into(),
            payload: i.to_string().into_bytes(),
            headers: String::new(),
        })
        .collect();
    let mut tx = s.db.begin(foodmesh_platform::db::Urgency::Background).await.expect("begin");
    outbox::enqueue_all(&mut tx, &messages).await.expect("enqueue");
    tx.commit().await.expect("commit");
    publish_all(&s.relay).await;
    assert_eq!(stream_bodies(&s.nats).await, (0..150).collect::<Vec<_>>(), "every event once, in the order given");
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM outbox").await, 150, "one row per event: no padding row is kept");
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await, 0, "every row marked sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbox_returns_each_new_event_id_once_across_its_batches() {
    let s = setup().await;
    let ids = |range: std::ops::Range<usize>| range.map(|i| format!("evt-{i}")).collect::<Vec<_>>();
    let mut tx = s.db.begin(foodmesh_platform::db::Urgency::Background).await.expect("begin");
    let fresh = inbox::first_deliveries(&mut tx, "test", &ids(0..100)).await.expect("record");
    tx.commit().await.expect("commit");
    assert_eq!(fresh.len(), 100, "every id is new the first time");

    // 50 seen before, 50 new, and ten of the new ones twice, in the same
    // statement as their first copy (110 ids go as 64, and 46 padded to 64).
    let mut again = ids(50..150);
    again.extend(ids(140..150));
    let mut tx = s.db.begin(foodmesh_platform::db::Urgency::Background).await.expect("begin");
    let fresh = inbox::first_deliveries(&mut tx, "test", &again).await.expect("record");
    tx.commit().await.expect("commit");
    let mut fresh: Vec<String> = fresh.into_iter().collect();
    fresh.sort_by_key(|id| id[4..].parse::<usize>().expect("a number"));
    assert_eq!(fresh, ids(100..150), "only the ids never applied, each once");
    assert_eq!(
        count(&s.db, "SELECT value FROM counters WHERE name = 'inbox.duplicates.test'").await,
        60,
        "the 50 seen before and the 10 repeats are counted as suppressed"
    );
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM inbox WHERE consumer = 'test'").await, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_rows_are_kept_for_the_retention_and_a_refed_row_is_not_published_twice() {
    let s = setup().await;
    commit(&s.db, 0, 10).await;
    publish_all(&s.relay).await;
    // Five rows were sent longer ago than the retention (7 days by default);
    // one more row was committed as long ago but never sent.
    let old = foodmesh_platform::time::Timestamp::now().as_micros() - 8 * 24 * 3600 * 1_000_000;
    sqlx::query("UPDATE outbox SET sent_at = $1 WHERE event_id IN ('evt-0', 'evt-1', 'evt-2', 'evt-3', 'evt-4')")
        .bind(old)
        .execute(&mut *s.db.write(foodmesh_platform::db::Urgency::Background).await.expect("writer"))
        .await
        .expect("age rows");
    commit(&s.db, 10, 1).await;
    sqlx::query("UPDATE outbox SET created_at = $1 WHERE event_id = 'evt-10'")
        .bind(old)
        .execute(&mut *s.db.write(foodmesh_platform::db::Urgency::Background).await.expect("writer"))
        .await
        .expect("age");

    s.relay.purge().await.expect("purge");
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL").await, 5, "recent sent rows kept");
    assert_eq!(count(&s.db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await, 1, "an unsent row is never purged");

    // Re-feed the kept rows (an operator resets sent_at, or a crash lost the
    // marks): JetStream's duplicate window drops the second copies.
    sqlx::query("UPDATE outbox SET sent_at = NULL WHERE sent_at IS NOT NULL")
        .execute(&mut *s.db.write(foodmesh_platform::db::Urgency::Background).await.expect("writer"))
        .await
        .expect("re-feed");
    assert_eq!(publish_all(&s.relay).await, 5, "the five re-fed rows were duplicates");
    assert_eq!(stream_bodies(&s.nats).await, (0..11).collect::<Vec<_>>(), "each event once in the stream");
    let dropped = count(&s.db, "SELECT value FROM counters WHERE name = 'outbox.duplicates'").await;
    assert_eq!(dropped, 5, "counted for operators");
}

/// Waits until `n` rows are marked sent (at most `within`); returns how long that took.
async fn until_sent(db: &Database, n: i64, within: Duration) -> Duration {
    let started = std::time::Instant::now();
    while count(db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL").await < n {
        assert!(started.elapsed() < within, "{n} rows not sent within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_publishes_at_once_and_a_flowing_one_publishes_its_linger_in_one_round() {
    // A linger far longer than any round, so that which path ran is plain.
    let linger = Duration::from_secs(2);
    let signal = OutboxSignal::default();
    let overrides = vec![("FOODMESH_RELAY__LINGER_MS".to_owned(), linger.as_millis().to_string())];
    let s = setup_with(overrides, signal.clone()).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let relay = tokio::spawn(s.relay.clone().run(stop.clone()));

    // Idle: a lone event goes out without waiting for the linger.
    commit(&s.db, 0, 1).await;
    signal.notify();
    let lone = until_sent(&s.db, 1, Duration::from_secs(30)).await;
    assert!(lone < linger, "a lone event waited {lone:?}, as long as a flowing round");

    // Flowing: a round finds five rows, then 55 commits follow, each waking
    // the relay. Those wait for the linger and go out together: a round (one
    // outbox read, one mark-sent write) per linger, not one per commit.
    commit(&s.db, 1, 5).await;
    signal.notify();
    for i in 6..61 {
        commit(&s.db, i, 1).await;
        signal.notify();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    until_sent(&s.db, 61, Duration::from_secs(30)).await;
    let rounds = count(&s.db, "SELECT COUNT(DISTINCT sent_at) FROM outbox WHERE event_id <> 'evt-0'").await;
    assert!(rounds <= 4, "60 flowing commits took {rounds} relay rounds");
    assert_eq!(stream_bodies(&s.nats).await, (0..61).collect::<Vec<_>>(), "every event once, in commit order");

    stop.cancel();
    relay.await.expect("the relay stops");
}
