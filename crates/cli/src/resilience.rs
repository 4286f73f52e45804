//! `foodmesh bench-resilience`: the reference system's own load test, on this
//! machine. 100 concurrent clients place orders for 60 s while payment is
//! slowed by 400-620 ms per charge and limited to a fixed number of charges
//! at once (its "real capacity": slots / mean latency). Three runs, each on a
//! fresh mesh (release binaries, SQLite):
//!
//! 1. **unprotected**: order waits on payment for as long as the client's own
//!    deadline allows; no concurrency limit, no breaker;
//! 2. **breaker**: order's tower stack as shipped (2 s deadline, 32 charges in
//!    flight then shedding, circuit breaker);
//! 3. **mesh**: order's own limit and breaker off; order reaches payment
//!    through the local Envoy, configured from istio/ (32 in flight, retries,
//!    outlier detection).
//!
//! Then, on the breaker configuration, payment is killed under load and
//! started again: the reply time while it is down and the time until orders
//! succeed again.
//!
//! After each run the databases are read directly: accepted orders without a
//! captured payment (must be 0) and charges per order (must be 1).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::Row;

use crate::{
    home::Home,
    load::{self, LoadArgs, LoadReport},
    local::{LocalMesh, LocalOptions},
};

/// What to run.
#[derive(Debug, Clone, clap::Args)]
pub struct ResilienceArgs {
    /// Concurrent clients (closed loop, as siege).
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Seconds per run.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Payment's extra latency per charge, ms.
    #[arg(long, default_value = "400-620")]
    pub latency_ms: String,
    /// Payment's charges at once.
    #[arg(long, default_value_t = 16)]
    pub payment_slots: u32,
    /// Each client request's deadline, ms.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// The payment-killed run offers this many PlaceOrder/s (open loop, at
    /// most `concurrency` in flight): the benchmark's sustained rate, so the
    /// reply time while payment is down is the breaker's, not a saturated
    /// machine's queue.
    #[arg(long, default_value_t = 500.0)]
    pub kill_rate: f64,
    /// Which runs: any of unprotected, breaker, mesh, kill (comma-separated).
    #[arg(long, default_value = "unprotected,breaker,mesh,kill")]
    pub runs: String,
    /// The benchmark meshes' base port (14 ports from it are used).
    #[arg(long, default_value_t = 56051)]
    pub base_port: u16,
    /// nats-server's port.
    #[arg(long, default_value_t = 56222)]
    pub nats_port: u16,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
}

/// One run's figures.
#[derive(Debug, Serialize)]
struct RunReport {
    name: String,
    load: LoadReport,
    /// Latency of the successful requests only, ms.
    success_latency_ms: load::Percentiles,
    /// Latency of the refused requests only (circuit open, shed, overflow), ms.
    refusal_latency_ms: load::Percentiles,
    /// Payment's capacity: slots / mean latency, charges per second.
    payment_capacity_per_sec: f64,
    /// Placed orders per second / payment's capacity.
    goodput_share_of_capacity: f64,
    orders: usize,
    captured_payments: usize,
    unpaid_accepted_orders: usize,
    captured_without_order: usize,
    max_charges_per_order: usize,
    /// Requests answered after their deadline (client-side timeout).
    past_deadline: u64,
    /// Order's payment circuit at the end: times opened, calls refused open, calls shed.
    circuit_opened: u64,
    refused_open: u64,
    shed: u64,
}

#[derive(Debug, Serialize)]
struct KillReport {
    down_for_secs: f64,
    reply_while_down_ms: load::Percentiles,
    failures_while_down: u64,
    successes_while_down: u64,
    /// From payment SERVING again to the first placed order.
    recovery_after_restart_ms: f64,
    unpaid_accepted_orders: usize,
    max_charges_per_order: usize,
}

fn mean_latency(spec: &str) -> Result<f64> {
    let (low, high) = crate::ops::latency_range(spec)?;
    Ok((f64::from(low) + f64::from(high)) / 2.0)
}

/// `foodmesh bench-resilience`.
pub async fn run(args: &ResilienceArgs) -> Result<()> {
    let capacity = f64::from(args.payment_slots) / (mean_latency(&args.latency_ms)? / 1000.0);
    let runs: HashSet<&str> = args.runs.split(',').map(str::trim).collect();
    let mut reports = Vec::new();
    for name in ["unprotected", "breaker", "mesh"] {
        if runs.contains(name) {
            reports.push(one_run(args, name, capacity).await?);
        }
    }
    let kill = if runs.contains("kill") { Some(kill_run(args).await?) } else { None };
    print(args, capacity, &reports, kill.as_ref());
    if let Some(path) = &args.json_out {
        let json = serde_json::json!({"runs": reports, "payment_killed": kill, "payment_capacity_per_sec": capacity});
        std::fs::write(path, serde_json::to_string_pretty(&json)?).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn options(args: &ResilienceArgs, name: &str) -> LocalOptions {
    let order = |k: &str, v: &str| ("order", format!("FOODMESH_PAYMENT__{k}"), v.to_owned());
    let mut service_env = vec![
        ("payment", "FOODMESH_FAULTS__LATENCY_MS".to_owned(), args.latency_ms.clone()),
        ("payment", "FOODMESH_FAULTS__MAX_CONCURRENT_CHARGES".to_owned(), args.payment_slots.to_string()),
    ];
    match name {
        // Nothing but the client's own deadline bounds a charge.
        "unprotected" => service_env.extend([
            order("MAX_IN_FLIGHT", "0"),
            order("BREAKER__ENABLED", "false"),
            order("TIMEOUT_MS", &(args.timeout_ms * 2).to_string()),
        ]),
        // The mesh protects payment; order keeps only its deadline.
        "mesh" => service_env.extend([order("MAX_IN_FLIGHT", "0"), order("BREAKER__ENABLED", "false")]),
        _ => {}
    }
    LocalOptions { mesh: name == "mesh", service_env, ..LocalOptions::benchmark(args.base_port, args.nats_port) }
}

fn load_args(args: &ResilienceArgs, duration_secs: u64) -> LoadArgs {
    LoadArgs { timeout_ms: args.timeout_ms, ..LoadArgs::closed_loop(args.concurrency, duration_secs, load::Scenario::Place) }
}

async fn one_run(args: &ResilienceArgs, name: &str, capacity: f64) -> Result<RunReport> {
    let dir = std::env::temp_dir().join(format!("foodmesh-resilience-{}-{name}", std::process::id()));
    let home = Home::open(&dir)?;
    eprintln!("bench-resilience: run {name}: {} clients for {} s", args.concurrency, args.duration_secs);
    let mesh = LocalMesh::start(&home, &options(args, name)).await?;
    let outcome = async {
        let (load, samples) =
            load::drive_with_samples(&home, &mesh.endpoints.order, &load_args(args, args.duration_secs), None).await?;
        // Let the reconciler finish any charge whose caller gave up.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let order = mesh.endpoints.order_direct.clone().unwrap_or_else(|| mesh.endpoints.order.clone());
        let circuit = crate::ops::payment_circuit(&home, &order).await?;
        let audit = audit(&home).await?;
        Ok::<_, anyhow::Error>((load, samples, audit, circuit))
    }
    .await;
    mesh.stop(&home).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (load, samples, audit, circuit) = outcome?;
    let (mut ok, mut refused): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    let mut past_deadline = 0;
    for sample in samples {
        let latency = sample.latency;
        if sample.ok {
            ok.push(latency);
        } else {
            refused.push(latency);
        }
        if latency > Duration::from_millis(args.timeout_ms) {
            past_deadline += 1;
        }
    }
    Ok(RunReport {
        name: name.to_owned(),
        goodput_share_of_capacity: load.rate / capacity,
        load,
        success_latency_ms: load::Percentiles::of(&mut ok),
        refusal_latency_ms: load::Percentiles::of(&mut refused),
        payment_capacity_per_sec: capacity,
        orders: audit.orders,
        captured_payments: audit.captured,
        unpaid_accepted_orders: audit.unpaid,
        captured_without_order: audit.orphans,
        max_charges_per_order: audit.max_charges,
        past_deadline,
        circuit_opened: circuit.opened_total,
        refused_open: circuit.rejected_open_total,
        shed: circuit.rejected_shed_total,
    })
}

async fn kill_run(args: &ResilienceArgs) -> Result<KillReport> {
    let dir = std::env::temp_dir().join(format!("foodmesh-resilience-{}-kill", std::process::id()));
    let home = Home::open(&dir)?;
    // Payment at full speed: this run is about payment being gone.
    let mut options = options(args, "breaker");
    options.service_env.clear();
    eprintln!("bench-resilience: payment killed under {}/s of PlaceOrder, then started again", args.kill_rate);
    let mut mesh = LocalMesh::start(&home, &options).await?;
    let outcome = async {
        let total = Duration::from_secs(20);
        let order = mesh.endpoints.order.clone();
        let driven = LoadArgs { rate: Some(args.kill_rate), ..load_args(args, total.as_secs()) };
        let load = load::drive_with_samples(&home, &order, &driven, None);
        tokio::pin!(load);
        let started = Instant::now();
        // 5 s healthy, 5 s down, then back.
        let mut phase = 0;
        let (mut down_at, mut up_at) = (None, None);
        let result = loop {
            tokio::select! {
                result = &mut load => break result?,
                () = tokio::time::sleep(Duration::from_millis(50)) => {
                    if phase == 0 && started.elapsed() >= Duration::from_secs(5) {
                        mesh.kill_service("payment").await;
                        down_at = Some(started.elapsed());
                        phase = 1;
                    } else if phase == 1 && started.elapsed() >= Duration::from_secs(10) {
                        mesh.start_service(&home, &options, "payment").await?;
                        up_at = Some(started.elapsed());
                        phase = 2;
                    }
                }
            }
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, anyhow::Error>((result, down_at, up_at, audit(&home).await?))
    }
    .await;
    mesh.stop(&home).await;
    let _ = std::fs::remove_dir_all(&dir);
    let ((_, samples), down_at, up_at, audit) = outcome?;
    let (down_at, up_at) = (down_at.context("payment was never killed")?, up_at.context("payment never came back")?);
    let mut while_down = Vec::new();
    let (mut failures, mut successes) = (0, 0);
    let mut first_success_after = None;
    for load::Sample { sent, latency, ok: success } in samples {
        let done = sent + latency;
        if sent >= down_at && done <= up_at {
            while_down.push(latency);
            if success { successes += 1 } else { failures += 1 }
        }
        if success && sent >= up_at && first_success_after.is_none_or(|t| done < t) {
            first_success_after = Some(done);
        }
    }
    Ok(KillReport {
        down_for_secs: (up_at - down_at).as_secs_f64(),
        reply_while_down_ms: load::Percentiles::of(&mut while_down),
        failures_while_down: failures,
        successes_while_down: successes,
        recovery_after_restart_ms: first_success_after.map_or(f64::NAN, |t| (t - up_at).as_secs_f64() * 1000.0),
        unpaid_accepted_orders: audit.unpaid,
        max_charges_per_order: audit.max_charges,
    })
}

/// What the databases say after a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Audit {
    /// Accepted orders.
    pub orders: usize,
    /// Captured (or since refunded) charges.
    pub captured: usize,
    /// Accepted orders without a captured charge: must be 0.
    pub unpaid: usize,
    /// Captured charges without an order (the reconciler refunds them).
    pub orphans: usize,
    /// The most charges any order has: must be 1.
    pub max_charges: usize,
}

/// Reads order's and payment's SQLite files: every accepted order must have
/// exactly one captured charge, and every captured charge an order.
pub(crate) async fn audit(home: &Home) -> Result<Audit> {
    sqlx::any::install_default_drivers();
    let open = |name: &str| format!("sqlite://{}?mode=ro", home.path(&format!("data/{name}.db")).display());
    let orders = sqlx::AnyPool::connect(&open("order")).await?;
    let payments = sqlx::AnyPool::connect(&open("payment")).await?;
    let order_rows = sqlx::query("SELECT order_id, payment_id FROM orders").fetch_all(&orders).await?;
    let payment_rows = sqlx::query("SELECT payment_id, order_id, status FROM payments").fetch_all(&payments).await?;
    let mut captured: HashMap<String, Vec<String>> = HashMap::new();
    let mut charges: HashMap<String, usize> = HashMap::new();
    for row in &payment_rows {
        let (payment_id, order_id, status): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        *charges.entry(order_id.clone()).or_default() += 1;
        if status == "CAPTURED" || status == "REFUNDED" {
            captured.entry(order_id).or_default().push(payment_id);
        }
    }
    let mut unpaid = 0;
    let mut order_ids = HashSet::new();
    for row in &order_rows {
        let (order_id, payment_id): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        if !captured.get(&order_id).is_some_and(|p| p.contains(&payment_id)) {
            unpaid += 1;
        }
        order_ids.insert(order_id);
    }
    let orphans = captured.keys().filter(|id| !order_ids.contains(*id)).count();
    Ok(Audit {
        orders: order_rows.len(),
        captured: captured.values().map(Vec::len).sum(),
        unpaid,
        orphans,
        max_charges: charges.values().copied().max().unwrap_or(0),
    })
}

fn print(args: &ResilienceArgs, capacity: f64, reports: &[RunReport], kill: Option<&KillReport>) {
    println!(
        "\nReference scenario: {} clients, {} s, payment +{} ms per charge, {} charges at once (capacity {capacity:.1}/s), client deadline {} ms",
        args.concurrency, args.duration_secs, args.latency_ms, args.payment_slots, args.timeout_ms
    );
    println!(
        "{:<12} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>7} {:>8}",
        "run",
        "requests",
        "avail %",
        "placed/s",
        "of cap",
        "p50 ms",
        "p99 ms",
        "max ms",
        "refusal",
        "past-dl",
        "unpaid",
        "charges"
    );
    for r in reports {
        let l = &r.load;
        println!(
            "{:<12} {:>9} {:>8.2} {:>9.1} {:>8.2} {:>8.1} {:>8.1} {:>8.1} {:>9.2} {:>10} {:>7} {:>8}",
            r.name,
            l.transactions,
            l.availability_pct,
            l.rate,
            r.goodput_share_of_capacity,
            l.latency_ms.p50,
            l.latency_ms.p99,
            l.latency_ms.max,
            r.refusal_latency_ms.p99,
            r.past_deadline,
            r.unpaid_accepted_orders,
            r.max_charges_per_order
        );
    }
    for r in reports {
        let failures: Vec<String> = r.load.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!(
            "  {:<12} successes p50/p99 {:.1}/{:.1} ms; refusals p50/p99/max {:.2}/{:.2}/{:.2} ms; failures: {}; orders {} captured {} orphans {}; order's circuit opened {} times, refused {} while open, shed {}",
            r.name,
            r.success_latency_ms.p50,
            r.success_latency_ms.p99,
            r.refusal_latency_ms.p50,
            r.refusal_latency_ms.p99,
            r.refusal_latency_ms.max,
            if failures.is_empty() { "none".to_owned() } else { failures.join(", ") },
            r.orders,
            r.captured_payments,
            r.captured_without_order,
            r.circuit_opened,
            r.refused_open,
            r.shed
        );
    }
    if let Some(k) = kill {
        println!(
            "payment killed for {:.1} s under {}/s: replies while down p50/p99/max {:.2}/{:.2}/{:.2} ms ({} refused, {} placed); first order placed {:.0} ms after payment was SERVING again; unpaid {}; max charges per order {}",
            k.down_for_secs,
            args.kill_rate,
            k.reply_while_down_ms.p50,
            k.reply_while_down_ms.p99,
            k.reply_while_down_ms.max,
            k.failures_while_down,
            k.successes_while_down,
            k.recovery_after_restart_ms,
            k.unpaid_accepted_orders,
            k.max_charges_per_order
        );
    }
}
