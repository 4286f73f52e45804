//! The Helm chart's settings run the real services: the env ConfigMaps and
//! config files `helm template` renders (helm/foodmesh, default values) start
//! the four service binaries, which answer the chart's probes (gRPC health
//! "" and "liveness"), take an order end to end, serve their metrics and log
//! JSON lines with trace ids. Only what must differ on one machine is
//! replaced: listen addresses (loopback ports, gRPC and metrics), the NATS
//! URL, the key file and database paths, and payment's address for order.
//!
//! Needs helm (scripts/bootstrap --test) and the service binaries
//! (`cargo build --workspace --bins`).

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use foodmesh_e2e::{SAGA_TIMEOUT, place_request, processes::binary};
use foodmesh_platform::testing::{NatsServer, TestKeys, authed, eventually, free_port, tool, workspace_root};
use foodmesh_proto::order::v1::order_service_client::OrderServiceClient;
use tokio::process::{Child, Command};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const SERVICES: [&str; 4] = ["payment", "store", "notification", "order"];

/// `helm template` of the chart with its default values, tokens verified
/// against `keys`.
fn render(keys: &TestKeys) -> String {
    let chart = workspace_root().join("helm/foodmesh");
    let pem = std::fs::read_to_string(&keys.settings.public_key_file).expect("public key");
    let out = std::process::Command::new(tool("FOODMESH_HELM", "helm"))
        .args(["template", "foodmesh"])
        .arg(&chart)
        .args(["--namespace", "foodmesh", "--set-string"])
        .arg(format!(
            "auth.issuer={},auth.audience={},auth.keyId={}",
            keys.settings.issuer, keys.settings.audience, keys.settings.key_id
        ))
        .arg("--set-string")
        .arg(format!("auth.publicKeyPem={pem}"))
        .output()
        .expect("helm runs (scripts/bootstrap --test installs it)");
    assert!(out.status.success(), "helm template failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The rendered object of `kind` named `name`.
fn object<'a>(rendered: &'a str, kind: &str, name: &str) -> &'a str {
    rendered
        .split("\n---\n")
        .find(|doc| doc.contains(&format!("\nkind: {kind}\n")) && doc.contains(&format!("\n  name: {name}\n")))
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The `data:` entries of a rendered ConfigMap whose values are one line.
fn env_data(configmap: &str) -> BTreeMap<String, String> {
    let data = configmap.split_once("\ndata:\n").expect("a data section").1;
    data.lines()
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| {
            let (key, value) = l.trim().split_once(": ").expect("key: value");
            // Helm's `quote` writes Go-quoted strings, which JSON reads.
            let value =
                if value.starts_with('"') { serde_json::from_str(value).expect("a quoted string") } else { value.to_owned() };
            (key.to_owned(), value)
        })
        .collect()
}

async fn health(port: u16, service: &str) -> Option<ServingStatus> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).ok()?.connect().await.ok()?;
    let mut client = HealthClient::new(channel);
    let reply = client.check(HealthCheckRequest { service: service.to_owned() }).await.ok()?;
    Some(reply.into_inner().status())
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.start_kill();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_settings_run_the_services_end_to_end() {
    let keys = TestKeys::new();
    let rendered = render(&keys);
    let nats = NatsServer::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let ports: BTreeMap<&str, u16> = SERVICES.iter().map(|s| (*s, free_port())).collect();
    let metrics_ports: BTreeMap<&str, u16> = SERVICES.iter().map(|s| (*s, free_port())).collect();

    // The probes the Deployments declare are the ones the binaries answer.
    for name in SERVICES {
        let deployment = object(&rendered, "Deployment", name);
        assert!(
            deployment.contains("livenessProbe:\n            grpc:\n              port: 50051\n              service: liveness"),
            "{name}"
        );
        assert!(deployment.contains("readinessProbe:\n            grpc:\n              port: 50051\n"), "{name}");
        assert!(
            deployment.contains("envFrom:\n            - configMapRef:\n                name: ")
                && deployment.contains(&format!("{name}-env"))
        );
    }

    let mut children = Killed(Vec::new());
    for name in SERVICES {
        let mut env = env_data(object(&rendered, "ConfigMap", &format!("{name}-env")));
        // What must differ on one machine; anything else the chart sets is used as rendered.
        let mut replace = |key: &str, value: String| {
            assert!(env.insert(key.to_owned(), value).is_some(), "{name}: the chart no longer sets {key}");
        };
        replace("FOODMESH_SERVER__LISTEN_ADDR", format!("127.0.0.1:{}", ports[name]));
        replace("FOODMESH_METRICS__LISTEN_ADDR", format!("127.0.0.1:{}", metrics_ports[name]));
        replace("NATS_URL", nats.url());
        replace("FOODMESH_AUTH__PUBLIC_KEY_FILE", keys.settings.public_key_file.display().to_string());
        replace("DATABASE_URL", format!("sqlite://{}", data.path().join(format!("{name}.db")).display()));
        if name == "order" {
            replace("FOODMESH_PAYMENT__URL", format!("http://127.0.0.1:{}", ports["payment"]));
        }
        assert_eq!(env["FOODMESH_LOG_FORMAT"], "json");
        let config = data.path().join(format!("{name}.toml"));
        let configmap = object(&rendered, "ConfigMap", &format!("{name}-config"));
        let toml: String = configmap
            .split_once("config.toml: |\n")
            .expect("config.toml")
            .1
            .lines()
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        std::fs::write(&config, toml).expect("write config");
        let log = std::fs::File::create(data.path().join(format!("{name}.log"))).expect("log file");
        let child = Command::new(binary(name))
            .env_clear()
            .envs(&env)
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the service starts");
        children.0.push(child);
    }

    for name in SERVICES {
        let port = ports[name];
        eventually(Duration::from_secs(30), &format!("{name} to pass the chart's startup and liveness probes"), || async move {
            (health(port, "").await == Some(ServingStatus::Serving)
                && health(port, "liveness").await == Some(ServingStatus::Serving))
            .then_some(())
        })
        .await;
    }

    let mut order = OrderServiceClient::connect(format!("http://127.0.0.1:{}", ports["order"])).await.expect("connects");
    let token = keys.customer("dave");
    let placed = eventually(SAGA_TIMEOUT, "an order placed through the chart-configured services", || {
        let (mut order, token) = (order.clone(), token.clone());
        async move {
            let request = place_request("chart-1", "seoul-bbq", &[("bulgogi", 1)], "tok_visa");
            order.place_order(authed(request, &token)).await.ok().map(|r| r.into_inner())
        }
    })
    .await;
    let order_id = placed.order.expect("the order").order_id;
    assert!(order_id.starts_with("ord_"), "{order_id}");
    let request = authed(foodmesh_proto::order::v1::GetOrderRequest { order_id: order_id.clone() }, &token);
    let got = order.get_order(request).await.expect("GetOrder answers").into_inner().order.expect("the order");
    assert_eq!(got.order_id, order_id);
    // The metrics port the chart opens (and annotates for Prometheus) serves order's RPCs.
    let metrics = foodmesh_mesh::process::admin_get(metrics_ports["order"], "/metrics").await.expect("order's metrics");
    assert!(
        metrics.contains("foodmesh_rpc_requests_total{method=\"foodmesh.order.v1.OrderService/PlaceOrder\",code=\"Ok\"} 1"),
        "{metrics}"
    );
    // JSON logs, one object per line, as the chart asks (FOODMESH_LOG_FORMAT).
    let log = std::fs::read_to_string(data.path().join("order.log")).expect("order's log");
    let first = log.lines().next().expect("order logged");
    assert!(serde_json::from_str::<serde_json::Value>(first).is_ok(), "not JSON: {first}");
    // The request's line carries its trace id, to go from a log to its trace.
    let placed = log.lines().find(|l| l.contains("order placed") && l.contains(&order_id)).expect("the order placed line");
    let placed: serde_json::Value = serde_json::from_str(placed).expect("JSON");
    let trace_id = placed["spans"].as_array().and_then(|spans| spans.iter().find_map(|s| s["trace_id"].as_str())).unwrap_or("");
    assert_eq!(trace_id.len(), 32, "a W3C trace id in {placed}");
    assert!(trace_id.bytes().all(|b| b.is_ascii_hexdigit()) && trace_id != "0".repeat(32), "{trace_id}");
}
