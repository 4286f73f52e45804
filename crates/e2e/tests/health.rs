//! What the orchestrator's probes see (gRPC health over loopback):
//!
//! - readiness ("") follows the database: NOT_SERVING while PostgreSQL
//!   refuses the service, SERVING again when it is back; NATS going down
//!   changes nothing (the service still answers from its database);
//! - liveness ("liveness") stays SERVING through a short outage, turns
//!   NOT_SERVING once the database has been unreachable past the threshold,
//!   and when a background worker dies; readiness is untouched by the latter.
//!
//! - while it cannot reach its database or NATS, the reason it logs names
//!   which one and why, and no password.
//!
//! The database outage needs a server that can refuse connections, so this
//! always runs on PostgreSQL (the private test cluster when none is given).

use std::time::Duration;

use foodmesh_platform::{
    db::Backend,
    grpc::{GrpcHost, ServerSettings},
    health::LIVENESS,
    infra::Infra,
    lifecycle::{self, Workers},
    messaging::PAYMENT_EVENTS,
    testing::{NatsServer, TestDatabases, TestKeys, eventually, free_port, postgres_admin_url, service_env},
};
use sqlx::{Connection, Executor};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

async fn status(addr: std::net::SocketAddr, service: &str) -> ServingStatus {
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connects");
    let reply =
        HealthClient::new(channel).check(HealthCheckRequest { service: service.to_owned() }).await.expect("health answers");
    reply.into_inner().status()
}

async fn wait_for(addr: std::net::SocketAddr, service: &str, want: ServingStatus) {
    eventually(Duration::from_secs(20), &format!("{service:?} to be {want:?}"), || async {
        (status(addr, service).await == want).then_some(())
    })
    .await;
}

/// Refuses (or allows again) every connection to database `db`.
async fn set_database_reachable(db: &str, reachable: bool) {
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await.expect("admin connects");
    admin
        .execute(sqlx::AssertSqlSafe(format!("ALTER DATABASE \"{db}\" WITH ALLOW_CONNECTIONS {reachable}")))
        .await
        .expect("alter");
    if !reachable {
        admin
            .execute(sqlx::AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
            )))
            .await
            .expect("terminate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_database_and_liveness_gives_up_only_after_the_threshold() {
    let mut nats = NatsServer::start().await;
    let dbs = TestDatabases::new(Backend::Postgres);
    let url = dbs.url("payment").await;
    let db = url.rsplit('/').next().expect("a database name").to_owned();
    let keys = TestKeys::new();
    let mut env = service_env(&url, &nats.url(), &keys);
    env.extend([
        ("FOODMESH_HEALTH__CHECK_INTERVAL_MS".to_owned(), "200".to_owned()),
        ("FOODMESH_HEALTH__PING_TIMEOUT_MS".to_owned(), "500".to_owned()),
        ("FOODMESH_HEALTH__DATABASE_UNREACHABLE_MS".to_owned(), "3000".to_owned()),
    ]);
    let settings = foodmesh_payment::Settings::from_env_pairs(env).expect("settings");
    let running = foodmesh_payment::start(settings).await.expect("starts");
    assert!(running.wait_until_serving(Duration::from_secs(20)).await, "payment never became SERVING");
    let addr = running.local_addr();
    assert_eq!(status(addr, "").await, ServingStatus::Serving);
    assert_eq!(status(addr, LIVENESS).await, ServingStatus::Serving);

    // NATS down: still ready and alive (a second of pings, five checks).
    nats.kill().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status(addr, "").await, ServingStatus::Serving, "NATS down must not take payment out of rotation");
    assert_eq!(status(addr, LIVENESS).await, ServingStatus::Serving);
    nats.restart().await;

    // The database refuses payment: out of rotation at once, alive for now.
    set_database_reachable(&db, false).await;
    wait_for(addr, "", ServingStatus::NotServing).await;
    assert_eq!(status(addr, "foodmesh.payment.v1.PaymentService").await, ServingStatus::NotServing);
    assert_eq!(status(addr, LIVENESS).await, ServingStatus::Serving, "a short outage is no reason to restart");
    // Past the threshold (3 s): a restart is the cure.
    wait_for(addr, LIVENESS, ServingStatus::NotServing).await;

    // Back: ready and alive again, without a restart.
    set_database_reachable(&db, true).await;
    wait_for(addr, "", ServingStatus::Serving).await;
    wait_for(addr, LIVENESS, ServingStatus::Serving).await;
    assert_eq!(status(addr, "foodmesh.payment.v1.PaymentService").await, ServingStatus::Serving);

    // Stopping: NOT_SERVING for the drain, whatever the watchdog says.
    running.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_fails_liveness_and_leaves_readiness_alone() {
    let settings = ServerSettings {
        listen_addr: "127.0.0.1:0".parse().expect("addr"),
        request_timeout: Duration::from_secs(5),
        drain: Duration::ZERO,
        max_request_bytes: 65_536,
    };
    let host = GrpcHost::bind(&settings).await.expect("binds");
    let addr = host.local_addr();
    let running = lifecycle::launch("health-test", host, Duration::ZERO, CancellationToken::new(), || async {
        let mut workers = Workers::default();
        // A worker that runs until told to stop: alive.
        workers.spawn(|stop| async move { stop.cancelled().await });
        // A consumer loop that dies after a while, as a bug would make it.
        workers.spawn(|_stop| async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            panic!("a consumer loop hit a bug");
        });
        Ok(workers)
    });
    assert!(running.wait_until_serving(Duration::from_secs(5)).await);
    wait_for(addr, LIVENESS, ServingStatus::NotServing).await;
    assert_eq!(status(addr, "").await, ServingStatus::Serving, "a dead worker is liveness's business");
    running.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_reach_its_database_or_nats_says_which_and_why() {
    // Loopback ports nothing listens on.
    let (db_port, nats_port) = (free_port(), free_port());
    let keys = TestKeys::new();
    let mut env = service_env(
        &format!("postgres://foodmesh:hunter2@127.0.0.1:{db_port}/payment"),
        &format!("nats://foodmesh:hunter2@127.0.0.1:{nats_port}"),
        &keys,
    );
    env.push(("FOODMESH_DATABASE__ACQUIRE_TIMEOUT_MS".to_owned(), "500".to_owned()));
    let settings = foodmesh_payment::Settings::from_env_pairs(env).expect("settings");
    // What a service's start-up does first (and retries, logging each error).
    let infra = Infra::connect(&settings.common, "payment").await.expect("connects lazily");
    let migrations = foodmesh_payment::db::migrations();
    let (migrated, streams) = tokio::join!(infra.db.migrate(&migrations), infra.ensure_streams(&[PAYMENT_EVENTS]));

    // The pool alone would say "pool timed out while waiting for an open connection".
    let db_error = migrated.expect_err("no database listens there").to_string();
    assert!(db_error.starts_with("cannot connect to the database: "), "{db_error}");
    assert!(db_error.contains("Connection refused"), "the cause is named: {db_error}");
    // JetStream alone would say "jetstream request timed out".
    let nats_error = streams.expect_err("no NATS listens there").to_string();
    assert!(
        nats_error.starts_with(&format!("NATS at nats://127.0.0.1:{nats_port} is not connected")),
        "the server is named: {nats_error}"
    );
    for error in [&db_error, &nats_error] {
        assert!(!error.contains("hunter2"), "a password in a log line: {error}");
    }
}
