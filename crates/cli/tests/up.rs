//! The local run path as a user runs it: the real `foodmesh` binary starting
//! nats-server and the four service binaries as processes, the demo, a clean
//! stop, and a second start on the same data.
//!
//! The service binaries must have been built next to `foodmesh`
//! (`cargo build --workspace --bins`; scripts/test does it).

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    process::{Command, Output, Stdio},
};

fn free_ports(count: u16, from: u16) -> u16 {
    // A run of consecutive free ports: order, payment, store, notification.
    for base in (from..60_000).step_by(97) {
        if (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {count} consecutive free ports");
}

fn foodmesh(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_foodmesh")).arg("--home").arg(home).args(args).output().expect("foodmesh runs")
}

#[test]
fn up_runs_the_demo_stops_cleanly_and_keeps_its_data_for_the_next_run() {
    let home = tempfile::tempdir().expect("temp dir");
    let base = free_ports(4, 20_000);
    let nats = free_ports(1, base + 4);
    let (base_port, nats_port) = (base.to_string(), nats.to_string());
    let up =
        ["up", "--demo", "--exit-after-demo", "--kitchen-step-ms", "50", "--base-port", &base_port, "--nats-port", &nats_port];

    let first = foodmesh(home.path(), &up);
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "foodmesh up failed:\n{out}\n{}", String::from_utf8_lossy(&first.stderr));
    for service in ["payment", "store", "notification", "order"] {
        assert!(
            out.lines().any(|l| l.trim_start().starts_with(service) && l.contains("SERVING after")),
            "{service} SERVING:\n{out}"
        );
    }
    for (who, outcome) in [("alice", "DELIVERED"), ("bob", "DELIVERED"), ("carol", "REFUNDED"), ("dave", "PAYMENT_DECLINED")] {
        assert!(out.lines().any(|l| l.contains(who) && l.contains(outcome)), "{who} {outcome}:\n{out}");
    }
    assert!(out.contains("grpcurl -plaintext -H 'authorization: Bearer "), "a ready-to-paste grpcurl line:\n{out}");
    assert!(out.trim_end().ends_with("foodmesh: stopped"), "{out}");
    for port in [base, base + 1, base + 2, base + 3, nats] {
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is free again: nothing left running");
    }
    for db in ["order", "payment", "store", "notification"] {
        assert!(home.path().join(format!("data/{db}.db")).exists(), "{db}.db is kept");
    }

    // Second run on the same home: stays up until Ctrl-C (SIGINT).
    let mut args: Vec<&str> = up.to_vec();
    args.retain(|a| *a != "--exit-after-demo");
    let mut running = Command::new(env!("CARGO_BIN_EXE_foodmesh"))
        .arg("--home")
        .arg(home.path())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("foodmesh up runs");
    let mut lines = BufReader::new(running.stdout.take().expect("stdout")).lines();
    let mut transcript = String::new();
    for line in lines.by_ref() {
        let line = line.expect("utf-8");
        transcript.push_str(&line);
        transcript.push('\n');
        if line.starts_with("foodmesh: running") {
            break;
        }
    }
    assert!(transcript.contains("foodmesh: running"), "the mesh stays up after the demo:\n{transcript}");

    let history = foodmesh(home.path(), &["orders", "--customer", "alice"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert_eq!(history.lines().filter(|l| l.contains("DELIVERED")).count(), 2, "both runs' orders are kept:\n{history}");
    let token = foodmesh(home.path(), &["token", "--customer", "alice"]);
    assert_eq!(String::from_utf8_lossy(&token.stdout).trim().split('.').count(), 3, "a JWT");

    Command::new("kill").args(["-INT", &running.id().to_string()]).status().expect("kill runs");
    let rest: Vec<String> = lines.map(|l| l.expect("utf-8")).collect();
    assert!(running.wait().expect("exits").success());
    assert_eq!(rest.last().map(String::as_str), Some("foodmesh: stopped"), "{rest:?}");
    for port in [base, base + 1, base + 2, base + 3, nats] {
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok(), "port {port} is free after Ctrl-C");
    }
}
