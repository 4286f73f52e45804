//! `foodmesh bench`: the issue-2 benchmark. It starts a fresh mesh (release
//! binaries, SQLite, auto-kitchen) in a temporary home, then measures:
//!
//! - each service's time from spawn to SERVING, and its idle resident memory;
//! - a same-run baseline: gRPC health checks at the same concurrency (the same
//!   tonic stack with no work behind it), because this machine's speed drifts
//!   by a quarter from one minute to the next and only ratios compare;
//! - sustained load: PlaceOrder offered at a fixed rate (500/s by default)
//!   with at most 32 in flight, latency from each request's scheduled time;
//! - saga lag: from an order's PlaceOrder reply to its `store.v1.order.delivered`
//!   event on NATS, per 10-second window, to show it stays bounded, and that
//!   every placed order reaches DELIVERED;
//! - capacity: PlaceOrder in a closed loop at 32 in flight, the ceiling.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use foodmesh_proto::store::v1::{StoreEvent, StoreOrderStatus, store_event};
use futures::StreamExt;
use prost::Message as _;
use serde::Serialize;

use crate::{
    home::Home,
    load::{self, LoadArgs, LoadReport, Percentiles},
    local::{LocalMesh, LocalOptions, cpu_time, rss_bytes},
};

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// How long to offer the sustained load, in seconds.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// The sustained rate offered, placed orders per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// The most requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long the closed-loop capacity run lasts, in seconds (0 skips it).
    #[arg(long, default_value_t = 20)]
    pub capacity_secs: u64,
    /// Auto-kitchen delay per step, in milliseconds (three steps per order).
    #[arg(long, default_value_t = 100)]
    pub kitchen_step_ms: u64,
    /// order's port for the benchmark mesh (the next three are used too).
    #[arg(long, default_value_t = 56051)]
    pub base_port: u16,
    /// nats-server's port for the benchmark mesh.
    #[arg(long, default_value_t = 56222)]
    pub nats_port: u16,
    /// Tokio worker threads per service.
    #[arg(long, default_value_t = 1)]
    pub worker_threads: usize,
    /// Let every service run on any core, instead of one core each.
    #[arg(long)]
    pub no_pin: bool,
    /// The `nice` value of nats-server, store and notification, the saga's
    /// background, so that order and payment answer first (0: all equal).
    #[arg(long, default_value_t = crate::local::DEFAULT_BACKGROUND_NICE, value_parser = clap::value_parser!(u8).range(0..=19))]
    pub background_nice: u8,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct ServiceFigures {
    name: String,
    start_to_serving_ms: u128,
    idle_rss_mib: f64,
    loaded_rss_mib: f64,
}

/// CPU time spent by one process from the start of the sustained load until
/// its last order was delivered, per placed order.
#[derive(Debug, Serialize)]
struct CpuShare {
    process: String,
    cpu_ms_per_order: f64,
    share_of_two_cores_pct: f64,
}

#[derive(Debug, Serialize)]
struct LagWindow {
    from_secs: u64,
    delivered: usize,
    lag_ms: Percentiles,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    services: Vec<ServiceFigures>,
    baseline_health_checks_per_sec: f64,
    load: LoadReport,
    capacity: Option<LoadReport>,
    kitchen_delay_ms: u64,
    saga_lag_ms: Percentiles,
    saga_lag_windows: Vec<LagWindow>,
    cpu: Vec<CpuShare>,
    placed: usize,
    delivered: usize,
    drain_after_load_secs: f64,
}

/// `foodmesh bench`.
pub async fn run(args: &BenchArgs) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("foodmesh-bench-{}", std::process::id()));
    let home = Home::open(&dir)?;
    let step = Duration::from_millis(args.kitchen_step_ms);
    let options = LocalOptions {
        kitchen_step: Some(step),
        worker_threads: args.worker_threads,
        pin_cpus: !args.no_pin,
        background_nice: args.background_nice,
        ..LocalOptions::benchmark(args.base_port, args.nats_port)
    };
    eprintln!(
        "bench: starting a fresh mesh in {} (cores pinned: {}; nats, store and notification at nice {})",
        dir.display(),
        options.pin_cpus,
        options.background_nice
    );
    let mesh = LocalMesh::start(&home, &options).await?;
    let outcome = measure(&home, &mesh, args, step).await;
    mesh.stop(&home).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (mut report, loaded) = outcome?;
    for figures in &mut report.services {
        figures.loaded_rss_mib = loaded.get(figures.name.as_str()).copied().unwrap_or_default();
    }
    print(&report);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

async fn measure(
    home: &Home,
    mesh: &LocalMesh,
    args: &BenchArgs,
    step: Duration,
) -> Result<(BenchReport, HashMap<&'static str, f64>)> {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    // Let start-up work (catalog, consumers) settle before reading idle memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let services: Vec<ServiceFigures> = mesh
        .processes
        .iter()
        .filter(|p| p.name != "nats")
        .map(|p| ServiceFigures {
            name: p.name.to_owned(),
            start_to_serving_ms: p.time_to_serving.map_or(0, |d| d.as_millis()),
            idle_rss_mib: p.child.id().and_then(rss_bytes).map_or(0.0, mib),
            loaded_rss_mib: 0.0,
        })
        .collect();

    // Every delivered order, as it happens.
    let nats = async_nats::connect(&mesh.endpoints.nats).await?;
    let mut delivered_events = nats.subscribe("store.v1.order.delivered").await?;
    let (placed_tx, mut placed_rx) = tokio::sync::mpsc::unbounded_channel();
    eprintln!("bench: baseline, gRPC health checks at {} in flight for 5 s", args.concurrency);
    let baseline = load::health_baseline(&mesh.endpoints.order, args.concurrency, Duration::from_secs(5)).await?;
    let load_args =
        LoadArgs { rate: Some(args.rate), ..LoadArgs::closed_loop(args.concurrency, args.duration_secs, load::Scenario::Place) };
    // Every process of the mesh, NATS included, and this load generator.
    let pids: Vec<(String, Option<u32>)> = mesh
        .processes
        .iter()
        .map(|p| (p.name.to_owned(), p.child.id()))
        .chain([("load generator".to_owned(), Some(std::process::id()))])
        .collect();
    let cpu_at_start: Vec<Option<Duration>> = pids.iter().map(|(_, pid)| pid.and_then(cpu_time)).collect();
    let started = Instant::now();
    eprintln!(
        "bench: PlaceOrder offered at {}/s (at most {} in flight) for {} s",
        args.rate, args.concurrency, args.duration_secs
    );
    let load = load::drive(home, &mesh.endpoints.order, &load_args, Some(placed_tx));
    tokio::pin!(load);

    let mut tracker = LagTracker { started, placed_at: HashMap::new(), early: HashMap::new(), lags: Vec::new() };
    let decode = |payload: &[u8]| -> Option<String> {
        match StoreEvent::decode(payload).ok()?.event? {
            store_event::Event::OrderStatusChanged(c) if c.status() == StoreOrderStatus::Delivered => Some(c.order_id),
            _ => None,
        }
    };

    let report = loop {
        tokio::select! {
            report = &mut load => break report?,
            Some((order_id, at)) = placed_rx.recv() => tracker.placed(order_id, at),
            Some(message) = delivered_events.next() => {
                if let Some(order_id) = decode(&message.payload) {
                    tracker.delivered(order_id, Instant::now());
                }
            }
        }
    };
    while let Ok((order_id, at)) = placed_rx.try_recv() {
        tracker.placed(order_id, at);
    }
    let loaded: HashMap<&'static str, f64> = mesh
        .processes
        .iter()
        .filter(|p| p.name != "nats")
        .map(|p| (p.name, p.child.id().and_then(rss_bytes).map_or(0.0, mib)))
        .collect();

    // The tail: every placed order must be delivered.
    let load_end = Instant::now();
    let tail_deadline = load_end + Duration::from_secs(120);
    while tracker.lags.len() < tracker.placed_at.len() && Instant::now() < tail_deadline {
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_secs(1), delivered_events.next()).await
            && let Some(order_id) = decode(&message.payload)
        {
            tracker.delivered(order_id, Instant::now());
        }
    }
    let busy = started.elapsed();
    let (placed, lags) = (tracker.placed_at.len(), tracker.lags);
    let cpu = pids
        .iter()
        .zip(cpu_at_start)
        .filter_map(|((name, pid), before)| {
            let used = pid.and_then(cpu_time)?.checked_sub(before?)?;
            Some(CpuShare {
                process: name.clone(),
                cpu_ms_per_order: used.as_secs_f64() * 1000.0 / placed.max(1) as f64,
                share_of_two_cores_pct: used.as_secs_f64() * 100.0 / (2.0 * busy.as_secs_f64()),
            })
        })
        .collect();
    let delivered = lags.len();
    let drain = if delivered >= placed { load_end.elapsed().as_secs_f64() } else { f64::NAN };

    let window = Duration::from_secs(10);
    let windows = (0..args.duration_secs.div_ceil(10))
        .map(|w| {
            let from = window * u32::try_from(w).unwrap_or(0);
            let mut in_window: Vec<Duration> =
                lags.iter().filter(|(t, _)| *t >= from && *t < from + window).map(|(_, lag)| *lag).collect();
            LagWindow { from_secs: from.as_secs(), delivered: in_window.len(), lag_ms: Percentiles::of(&mut in_window) }
        })
        .collect();
    let mut all: Vec<Duration> = lags.iter().map(|(_, lag)| *lag).collect();
    let capacity = if args.capacity_secs > 0 {
        eprintln!("bench: capacity, PlaceOrder in a closed loop at {} in flight for {} s", args.concurrency, args.capacity_secs);
        let closed = LoadArgs { rate: None, duration_secs: args.capacity_secs, ..load_args.clone() };
        Some(load::drive(home, &mesh.endpoints.order, &closed, None).await?)
    } else {
        None
    };
    Ok((
        BenchReport {
            services,
            baseline_health_checks_per_sec: baseline,
            load: report,
            capacity,
            kitchen_delay_ms: 3 * u64::try_from(step.as_millis()).unwrap_or(0),
            saga_lag_ms: Percentiles::of(&mut all),
            saga_lag_windows: windows,
            cpu,
            placed,
            delivered,
            drain_after_load_secs: drain,
        },
        loaded,
    ))
}

/// Pairs each order's PlaceOrder reply with its DELIVERED event.
struct LagTracker {
    started: Instant,
    placed_at: HashMap<String, Instant>,
    /// Deliveries seen before their reply was recorded (a race of microseconds).
    early: HashMap<String, Instant>,
    /// (placed, relative to the start; lag).
    lags: Vec<(Duration, Duration)>,
}

impl LagTracker {
    fn placed(&mut self, order_id: String, at: Instant) {
        if let Some(delivered) = self.early.remove(&order_id) {
            self.lags.push((at.duration_since(self.started), delivered.saturating_duration_since(at)));
        }
        self.placed_at.insert(order_id, at);
    }

    fn delivered(&mut self, order_id: String, at: Instant) {
        match self.placed_at.get(&order_id) {
            Some(placed) => self.lags.push((placed.duration_since(self.started), at.saturating_duration_since(*placed))),
            None => {
                self.early.insert(order_id, at);
            }
        }
    }
}

fn print(r: &BenchReport) {
    println!("\n== services (fresh SQLite files) ==");
    println!("{:<13} {:>16} {:>14} {:>16}", "service", "start->SERVING", "idle RSS", "RSS after load");
    for s in &r.services {
        println!("{:<13} {:>13} ms {:>10.1} MiB {:>12.1} MiB", s.name, s.start_to_serving_ms, s.idle_rss_mib, s.loaded_rss_mib);
    }
    println!("\n== same-run baseline ==");
    println!("gRPC health checks at the same concurrency: {:.0}/s (this machine, this minute)", r.baseline_health_checks_per_sec);
    println!("\n== PlaceOrder, sustained (open loop; latency from each request's scheduled time) ==");
    load::print_report(&r.load);
    println!("\n== saga: PlaceOrder reply -> DELIVERED event (includes {} ms of kitchen delays) ==", r.kitchen_delay_ms);
    let l = &r.saga_lag_ms;
    println!(
        "orders placed {} / delivered {}; tail drained {:.2} s after the load stopped",
        r.placed, r.delivered, r.drain_after_load_secs
    );
    println!("lag mean {:.0} ms, p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}", l.mean, l.p50, l.p90, l.p99, l.max);
    for w in &r.saga_lag_windows {
        println!(
            "  placed in [{:>3}s, +10s): {:>6} delivered, lag p50 {:>6.0} ms, p99 {:>6.0} ms, max {:>6.0} ms",
            w.from_secs, w.delivered, w.lag_ms.p50, w.lag_ms.p99, w.lag_ms.max
        );
    }
    println!("\n== CPU during the sustained run, load start to last delivery ==");
    for c in &r.cpu {
        println!(
            "{:<15} {:>6.2} ms per order  {:>5.1} % of the two cores",
            c.process, c.cpu_ms_per_order, c.share_of_two_cores_pct
        );
    }
    if let Some(c) = &r.capacity {
        println!("\n== PlaceOrder, capacity (closed loop: the next request as soon as one returns) ==");
        load::print_report(c);
        println!(
            "capacity / same-run health-check baseline: {:.3} (one placed order costs about {:.1} health checks)",
            c.rate / r.baseline_health_checks_per_sec,
            r.baseline_health_checks_per_sec / c.rate.max(1.0)
        );
    }
}
