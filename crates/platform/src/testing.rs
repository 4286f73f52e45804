//! Real infrastructure for tests: a nats-server process with JetStream per
//! test, a fresh PostgreSQL database per test, SQLite files in a temporary
//! directory, and signing keys. Everything listens on 127.0.0.1, on a free
//! port, and is removed when dropped.
//!
//! Binaries are found in `$NATS_SERVER_BIN`, then in the project's `.tools/bin`
//! (filled by `scripts/bootstrap`), then on `PATH`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use sqlx::{Connection, Executor};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{
    auth::{AuthSettings, Principal, TokenIssuer, generate_keypair},
    db::Backend,
};

/// The repository root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap_or_else(|_| PathBuf::from("."))
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free loopback port")
}

/// A tool binary: `$ENV_VAR`, else the project's `.tools/bin/NAME`, else `NAME` on PATH.
pub fn tool(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let local = workspace_root().join(".tools/bin").join(name);
    if local.exists() { local } else { PathBuf::from(name) }
}

/// A nats-server with JetStream, on a free loopback port, storing in a
/// temporary directory. Killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections.
    pub async fn start() -> Self {
        Self::start_on(free_port()).await
    }

    /// Starts a server on `port`, for a test that pointed a service there first.
    pub async fn start_on(port: u16) -> Self {
        let store = tempfile::tempdir().expect("temp dir");
        let mut server = Self { child: None, port, store };
        server.spawn().await;
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL). Its data stays for [`NatsServer::restart`].
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let binary = tool("NATS_SERVER_BIN", "nats-server");
        let child = Command::new(&binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} ({e}); run scripts/bootstrap", binary.display()));
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("nats-server did not start on port {}", self.port);
    }
}

/// Where a test's services keep their data.
#[derive(Debug)]
pub enum TestDatabases {
    /// SQLite files in a temporary directory.
    Sqlite(TempDir),
    /// Databases on a PostgreSQL server, dropped at the end.
    Postgres {
        /// The admin URL of the server.
        admin_url: String,
        /// The databases created, to drop.
        created: std::sync::Mutex<Vec<String>>,
        /// A prefix unique to this test.
        prefix: String,
    },
}

impl TestDatabases {
    /// Storage on the given engine.
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => TestDatabases::Sqlite(tempfile::tempdir().expect("temp dir")),
            Backend::Postgres => TestDatabases::Postgres {
                admin_url: postgres_admin_url(),
                created: std::sync::Mutex::new(Vec::new()),
                prefix: format!("fm_{}", uuid::Uuid::new_v4().simple()),
            },
        }
    }

    /// The URL of a database named `name` (created empty if needed), the same
    /// for every call with the same name so a restarted service finds its data.
    pub async fn url(&self, name: &str) -> String {
        match self {
            TestDatabases::Sqlite(dir) => format!("sqlite://{}", dir.path().join(format!("{name}.db")).display()),
            TestDatabases::Postgres { admin_url, created, prefix } => {
                let db = format!("{prefix}_{name}");
                let is_new = {
                    let mut created = created.lock().expect("not poisoned");
                    let new = !created.contains(&db);
                    if new {
                        created.push(db.clone());
                    }
                    new
                };
                if is_new {
                    let mut conn = sqlx::PgConnection::connect(admin_url).await.expect("connect to the test PostgreSQL");
                    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\""))).await.expect("create database");
                }
                let (base, _) = admin_url.rsplit_once('/').expect("admin url has a database");
                format!("{base}/{db}")
            }
        }
    }
}

impl Drop for TestDatabases {
    fn drop(&mut self) {
        if let TestDatabases::Postgres { admin_url, created, .. } = self {
            let names = std::mem::take(created.get_mut().unwrap_or_else(|e| e.into_inner()));
            if names.is_empty() {
                return;
            }
            let admin_url = admin_url.clone();
            // Drop may run inside a runtime; a fresh thread gets its own.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                runtime.block_on(async move {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                        for db in names {
                            let _ =
                                conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"))).await;
                        }
                    }
                });
            })
            .join();
        }
    }
}

/// The admin URL of the test PostgreSQL: `$FOODMESH_TEST_POSTGRES_URL`, or the
/// private cluster that `scripts/test-postgres` starts on first use.
pub fn postgres_admin_url() -> String {
    if let Ok(url) = std::env::var("FOODMESH_TEST_POSTGRES_URL") {
        return url;
    }
    let script = workspace_root().join("scripts/test-postgres");
    let output = std::process::Command::new(&script).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(output.status.success(), "scripts/test-postgres failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The engine the suite runs on: `FOODMESH_TEST_BACKEND=postgres` or SQLite.
pub fn backend_from_env() -> Backend {
    match std::env::var("FOODMESH_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        _ => Backend::Sqlite,
    }
}

/// A signing key pair written to a temporary directory, with the settings
/// services need to verify its tokens and an issuer for the test.
#[derive(Debug)]
pub struct TestKeys {
    _dir: TempDir,
    /// Settings pointing at the public key.
    pub settings: AuthSettings,
    /// Signs tokens.
    pub issuer: TokenIssuer,
}

impl TestKeys {
    /// A new key pair.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (private, public) = generate_keypair().expect("keygen");
        let public_key_file = dir.path().join("jwt.pub.pem");
        std::fs::write(&public_key_file, public).expect("write key");
        let settings = AuthSettings {
            issuer: "foodmesh-test".into(),
            audience: "foodmesh".into(),
            key_id: "test-key".into(),
            public_key_file,
        };
        let issuer = TokenIssuer::from_private_pem(private.as_bytes(), &settings.key_id, &settings.issuer, &settings.audience)
            .expect("issuer");
        Self { _dir: dir, settings, issuer }
    }

    /// `Bearer <token>` for a customer.
    pub fn customer(&self, customer_id: &str) -> String {
        self.bearer(&Principal::Customer { customer_id: customer_id.into() })
    }

    /// `Bearer <token>` for a member of a store's staff.
    pub fn staff(&self, store_id: &str) -> String {
        self.bearer(&Principal::StoreStaff { staff_id: format!("staff-{store_id}"), store_id: store_id.into() })
    }

    /// `Bearer <token>` for an operator.
    pub fn operator(&self) -> String {
        self.bearer(&Principal::Operator { operator_id: "ops".into() })
    }

    /// `Bearer <token>` for any principal.
    pub fn bearer(&self, principal: &Principal) -> String {
        format!("Bearer {}", self.issuer.issue(principal, Duration::from_secs(3600)).expect("sign"))
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// The environment overrides that point a service at test infrastructure:
/// a free loopback port, its database, NATS and the test keys.
pub fn service_env(database_url: &str, nats_url: &str, keys: &TestKeys) -> Vec<(String, String)> {
    let auth = &keys.settings;
    [
        ("FOODMESH_SERVER__LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        ("DATABASE_URL", database_url.to_owned()),
        ("NATS_URL", nats_url.to_owned()),
        ("FOODMESH_AUTH__ISSUER", auth.issuer.clone()),
        ("FOODMESH_AUTH__AUDIENCE", auth.audience.clone()),
        ("FOODMESH_AUTH__KEY_ID", auth.key_id.clone()),
        ("FOODMESH_AUTH__PUBLIC_KEY_FILE", auth.public_key_file.display().to_string()),
        // Small batches and a fast sweep keep test latency low.
        ("FOODMESH_RELAY__SWEEP_INTERVAL_MS", "200".to_owned()),
        ("FOODMESH_DATABASE__MAX_CONNECTIONS", "4".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

pub use crate::grpc::authed;

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`
/// with `what` in the message.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the services' logs to the test's captured output (shown for failed
/// tests), filtered by `RUST_LOG` (default `info`).
pub fn init_logs() {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let _ = fmt().with_env_filter(filter).with_test_writer().with_ansi(false).with_target(false).try_init();
}
