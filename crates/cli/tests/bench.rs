//! `foodmesh bench` as a user runs it, briefly, on the suite's engine:
//! SQLite files, or with `FOODMESH_TEST_BACKEND=postgres` the test
//! PostgreSQL, where the bench makes its own databases and drops them.
//! It checks that the report is whole (every placed order delivered, the
//! database's CPU counted, order's own histograms read on SQLite, every
//! request in the samples file, the machine's stolen time, its disk's
//! stalls and the disk measured alone), not the figures: those belong to the README.
//!
//! The service binaries must have been built next to `foodmesh`
//! (`cargo build --workspace --bins`; scripts/test does it).

use std::process::Command;

use foodmesh_platform::{
    db::Backend,
    testing::{backend_from_env, postgres_admin_url},
};
use sqlx::Row as _;

mod common;

use common::free_ports;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_bench_delivers_every_order_and_leaves_no_database_behind() {
    let backend = backend_from_env();
    let home = tempfile::tempdir().expect("temp dir");
    let base = free_ports(4, 31_000);
    let nats = free_ports(1, base + 4);
    let report_path = home.path().join("bench.json");
    let samples_path = home.path().join("samples.csv");
    let (base, nats, report) = (base.to_string(), nats.to_string(), report_path.to_str().expect("utf-8 path").to_owned());
    let samples = samples_path.to_str().expect("utf-8 path").to_owned();
    let mut args = vec![
        "bench",
        "--duration-secs",
        "3",
        "--rate",
        "40",
        "--capacity-secs",
        "0",
        "--disk-baseline-secs",
        "1",
        "--kitchen-step-ms",
        "20",
        "--base-port",
        &base,
        "--nats-port",
        &nats,
        "--json-out",
        &report,
        "--samples-out",
        &samples,
    ];
    let admin_url = matches!(backend, Backend::Postgres).then(postgres_admin_url);
    if let Some(url) = &admin_url {
        args.extend(["--postgres", url]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_foodmesh"))
        .arg("--home")
        .arg(home.path())
        .args(&args)
        .output()
        .expect("foodmesh bench runs");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}\n{}", String::from_utf8_lossy(&out.stderr));

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).expect("report")).expect("JSON");
    let expected_database = if admin_url.is_some() { "postgres" } else { "sqlite" };
    assert_eq!(report["database"], expected_database, "{report}");
    let placed = report["placed"].as_u64().expect("placed");
    assert!(placed >= 60, "3 s at 40/s placed only {placed}");
    assert_eq!(report["delivered"].as_u64(), Some(placed), "an order did not reach DELIVERED: {report}");
    assert_eq!(report["load"]["failures"], serde_json::json!({}), "{}", report["load"]);

    // Every request of the load, due in order, as CSV.
    let csv = std::fs::read_to_string(&samples_path).expect("samples written");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("due_secs,latency_ms,ok"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len() as u64, report["load"]["transactions"].as_u64().expect("transactions"), "{csv}");
    let due: Vec<f64> = rows.iter().map(|r| r[0].parse().expect("due secs")).collect();
    assert!(due.windows(2).all(|w| w[0] <= w[1]) && due.iter().all(|d| (0.0..3.0).contains(d)), "{csv}");
    assert!(rows.iter().all(|r| r[1].parse::<f64>().is_ok_and(|ms| ms > 0.0) && r[2] == "true"), "{csv}");
    // 3 s make one window, with its latency and, on Linux, the machine then.
    let windows = report["load_windows"].as_array().expect("load windows");
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert!(windows[0]["latency_ms"]["p50"].as_f64().is_some_and(|ms| ms > 0.0), "{windows:?}");
    assert!(printed.contains("due in [  0s, +10s)"), "{printed}");
    if std::path::Path::new("/proc/stat").exists() {
        let machine = &report["machine"];
        let stolen = machine["stolen_pct"].as_f64().expect("stolen share");
        let idle = machine["idle_pct"].as_f64().expect("idle share");
        assert!(stolen >= 0.0 && idle >= 0.0 && stolen + idle <= 100.0, "{machine}");
        assert!(windows[0]["machine"]["stolen_pct"].as_f64().is_some(), "{windows:?}");
        assert!(printed.contains("stolen by the hypervisor"), "{printed}");
    }
    // The disks are watched where the machine has one: its stalls (a well
    // disk has none; a stalled one, each with its length) and, per window,
    // the time they covered.
    let has_disk = std::fs::read_dir("/sys/block")
        .map(|dir| dir.filter_map(Result::ok).any(|d| d.path().join("device").exists()))
        .unwrap_or(false);
    if has_disk {
        let stalls = report["disk_stalls"].as_array().expect("disk stalls watched");
        assert!(stalls.iter().all(|s| s["ms"].as_f64().is_some_and(|ms| ms >= 100.0)), "{stalls:?}");
        assert!(windows[0]["disk_stalled_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{windows:?}");
        assert!(printed.contains("the disk: no stall") || printed.contains("the disk stalled"), "{printed}");
        // On its own before the load: 100 syncs in the second, each timed.
        let disk = &report["disk_baseline"];
        assert_eq!(disk["syncs"].as_u64(), Some(100), "{disk}");
        assert!(disk["sync_ms"]["p50"].as_f64().is_some_and(|ms| ms > 0.0), "{disk}");
        assert!(disk["stalls"].as_array().is_some(), "{disk}");
        assert!(printed.contains("the disk alone, the mesh idle: 100 syncs"), "{printed}");
        // And while the mesh started, before the load.
        let at_start = report["start_disk_stalls"].as_array().expect("start-up watched");
        assert!(at_start.iter().all(|s| s["ms"].as_f64().is_some_and(|ms| ms >= 100.0)), "{at_start:?}");
        assert!(printed.contains("while they started, the disk"), "{printed}");
    }

    let processes: Vec<&str> = report["cpu"]
        .as_array()
        .expect("cpu")
        .iter()
        .filter(|c| c["cpu_ms_per_order"].as_f64().is_some_and(|ms| ms > 0.0))
        .map(|c| c["process"].as_str().expect("name"))
        .collect();
    for process in ["nats", "payment", "store", "notification", "order", "load generator"] {
        assert!(processes.contains(&process), "no CPU counted for {process}: {processes:?}");
    }
    assert_eq!(processes.contains(&"postgres"), admin_url.is_some(), "{processes:?}");
    // The run is checked against the product's floors; at 40/s the rate's
    // and the p99's cannot be met, and every order delivered must show.
    let floors = report["floors"].as_array().expect("floors");
    assert_eq!(floors.len(), 5, "{floors:?}");
    let floor = |what: &str| floors.iter().find(|f| f["what"] == what).unwrap_or_else(|| panic!("{what}: {floors:?}"));
    let met = |what: &str| floor(what)["met"].as_bool().unwrap_or_else(|| panic!("{what}: {floors:?}"));
    assert!(!met("sustained PlaceOrder, every order delivered"), "{floors:?}");
    assert!(!met("PlaceOrder p99 at 32 in flight"), "{floors:?}");
    let sustained = floor("sustained PlaceOrder, every order delivered");
    assert!(
        sustained["measured"].as_str().is_some_and(|m| m.contains(&format!("{placed} of {placed} delivered"))),
        "{sustained}"
    );
    assert!(printed.contains("against the product's floors") && printed.contains("NOT MET"), "{printed}");
    // Where the kernel keeps scheduler statistics, each of our processes says
    // how long its threads waited for a core; PostgreSQL's are not read.
    if std::path::Path::new("/proc/self/schedstat").exists() {
        for share in report["cpu"].as_array().expect("cpu") {
            let waited = &share["waited_for_core_ms_per_order"];
            match share["process"].as_str() {
                Some("postgres") => assert!(waited.is_null(), "{share}"),
                _ => assert!(waited.as_f64().is_some_and(|ms| ms >= 0.0), "{share}"),
            }
        }
        assert!(printed.contains("ms for a core"), "{printed}");
    }

    if let Some(url) = admin_url {
        assert!(printed.contains("fresh PostgreSQL databases"), "{printed}");
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&url).await.expect("admin connection");
        let left: Vec<String> = sqlx::query("SELECT datname FROM pg_database WHERE datname LIKE 'foodmesh_bench_%'")
            .fetch_all(&admin)
            .await
            .expect("list databases")
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
        assert!(left.is_empty(), "the bench left its databases: {left:?}");
        assert!(report["inside_order"].is_null(), "read on SQLite only: {report}");
    } else {
        assert!(printed.contains("fresh SQLite files"), "{printed}");
        // Inside order, read from its metrics: its writer's turns and
        // PlaceOrder's stages during the load (each placed order was charged).
        let inside = &report["inside_order"];
        assert!(inside["request_wait"]["count"].as_u64().is_some_and(|n| n > 0), "{inside}");
        assert!(inside["background_held"]["count"].as_u64().is_some_and(|n| n > 0), "{inside}");
        assert!(inside["charge"]["count"].as_u64().is_some_and(|n| n >= placed), "{inside}");
        assert!(printed.contains("inside order during the sustained load"), "{printed}");
    }
}
