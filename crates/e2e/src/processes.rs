//! The mesh as real processes: the four service binaries (built by
//! `cargo build --workspace --bins`, which the test command runs first), each
//! on its own loopback port, so a test can `kill -9` any of them at any
//! moment and start it again on the same port with the same data.

use std::{collections::HashMap, path::PathBuf, process::Stdio, time::Duration};

use foodmesh_platform::testing::{NatsServer, TestDatabases, TestKeys, backend_from_env, free_port, service_env, workspace_root};
use foodmesh_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{SAGA_TIMEOUT, checker};

/// The services, in start order (payment before order, which calls it).
const SERVICES: [(&str, &str); 4] = [
    ("payment", "foodmesh.payment.v1.PaymentService"),
    ("store", "foodmesh.store.v1.StoreService"),
    ("notification", "foodmesh.notification.v1.NotificationService"),
    ("order", "foodmesh.order.v1.OrderService"),
];

struct Proc {
    child: Option<Child>,
    port: u16,
    env: Vec<(String, String)>,
}

/// A mesh of real processes.
pub struct ProcessMesh {
    // Fields drop in this order: the services are killed first, then what
    // they use goes.
    procs: HashMap<&'static str, Proc>,
    logs: tempfile::TempDir,
    /// The nats-server.
    pub nats: NatsServer,
    /// Tokens for any caller.
    pub keys: TestKeys,
    dbs: TestDatabases,
}

impl std::fmt::Debug for ProcessMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessMesh").field("nats", &self.nats).finish_non_exhaustive()
    }
}

/// Where the service binaries are: `FOODMESH_BIN_DIR`, else `target/debug`.
pub fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("FOODMESH_BIN_DIR").map_or_else(|| workspace_root().join("target/debug"), PathBuf::from);
    let path = dir.join(format!("foodmesh-{name}"));
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

impl ProcessMesh {
    /// Starts NATS and the four services, with the auto-kitchen stepping
    /// every `kitchen_step`, and waits until each is SERVING.
    pub async fn start(kitchen_step: Duration) -> ProcessMesh {
        foodmesh_platform::testing::init_logs();
        let mut mesh = ProcessMesh {
            nats: NatsServer::start().await,
            keys: TestKeys::new(),
            dbs: TestDatabases::new(backend_from_env()),
            logs: tempfile::tempdir().expect("temp dir"),
            procs: HashMap::new(),
        };
        let ports: HashMap<&str, u16> = SERVICES.iter().map(|(name, _)| (*name, free_port())).collect();
        for (name, _) in SERVICES {
            let mut env = service_env(&mesh.dbs.url(name).await, &mesh.nats.url(), &mesh.keys);
            env.push(("FOODMESH_SERVER__LISTEN_ADDR".into(), format!("127.0.0.1:{}", ports[name])));
            env.push(("TOKIO_WORKER_THREADS".into(), "1".into()));
            env.push(("RUST_LOG".into(), "warn".into()));
            // A consumer killed holding messages delays them by the ack wait
            // (30 s by default); a short one keeps the test short.
            env.push(("FOODMESH_CONSUMER__ACK_WAIT_MS".into(), "3000".into()));
            match name {
                "order" => {
                    env.push(("FOODMESH_PAYMENT__URL".into(), format!("http://127.0.0.1:{}", ports["payment"])));
                    env.push(("FOODMESH_PAYMENT__TIMEOUT_MS".into(), "1000".into()));
                }
                "store" => {
                    let ms = kitchen_step.as_millis().to_string();
                    env.push(("FOODMESH_AUTO_KITCHEN__ENABLED".into(), "true".into()));
                    env.push(("FOODMESH_AUTO_KITCHEN__TICK_MS".into(), "20".into()));
                    for key in ["COOK_AFTER_MS", "DELIVER_AFTER_MS", "COMPLETE_AFTER_MS"] {
                        env.push((format!("FOODMESH_AUTO_KITCHEN__{key}"), ms.clone()));
                    }
                }
                _ => {}
            }
            mesh.procs.insert(name, Proc { child: None, port: ports[name], env });
            mesh.start_service(name).await;
        }
        crate::wait_for_catalog(mesh.order(), mesh.customer("catalog-probe")).await;
        mesh
    }

    /// Starts `name` (again) and waits until it is SERVING.
    pub async fn start_service(&mut self, name: &'static str) {
        // FOODMESH_TEST_LOG_DIR keeps the services' logs after the test.
        let dir = std::env::var_os("FOODMESH_TEST_LOG_DIR").map_or_else(|| self.logs.path().to_owned(), PathBuf::from);
        let log = dir.join(format!("{name}.log"));
        let proc = self.procs.get_mut(name).expect("a service");
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("log file");
        let child = Command::new(binary(name))
            .envs(proc.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().expect("log file"))
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        proc.child = Some(child);
        let service = SERVICES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).expect("known");
        let channel = Channel::from_shared(format!("http://127.0.0.1:{}", proc.port)).expect("uri").connect_lazy();
        let mut health = HealthClient::new(channel);
        let deadline = tokio::time::Instant::now() + SAGA_TIMEOUT;
        loop {
            let request = HealthCheckRequest { service: service.to_owned() };
            if let Ok(reply) = health.check(request).await
                && reply.into_inner().status() == ServingStatus::Serving
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{name} never became SERVING; see {}", log.display());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: no drain, no flush, whatever it was doing.
    pub async fn kill(&mut self, name: &'static str) {
        if let Some(mut child) = self.procs.get_mut(name).and_then(|p| p.child.take()) {
            child.kill().await.expect("SIGKILL");
        }
    }

    /// A client of the order service.
    pub fn order(&self) -> OrderServiceClient<Channel> {
        let port = self.procs["order"].port;
        OrderServiceClient::new(Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy())
    }

    /// `Bearer ...` for a customer.
    pub fn customer(&self, id: &str) -> String {
        self.keys.customer(id)
    }

    /// Reads every database and checks the saga's invariants.
    pub async fn check(&self) -> checker::Report {
        checker::check_databases(&self.dbs).await
    }

    /// Runs `foodmesh-order rebuild-view --check` with the order service's
    /// settings: whether its status view is what the streams say. Returns
    /// the exit status's success and what the command printed.
    pub async fn check_order_view(&self) -> (bool, String) {
        let output = Command::new(binary("order"))
            .args(["rebuild-view", "--check"])
            .envs(self.procs["order"].env.iter().cloned())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("foodmesh-order rebuild-view");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    }
}
