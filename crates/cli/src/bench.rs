//! `foodmesh bench`: the issue-2 benchmark. It starts a fresh mesh (release
//! binaries, SQLite or with `--postgres` PostgreSQL, auto-kitchen) in a
//! temporary home, then measures:
//!
//! - each service's time from spawn to SERVING, and its idle resident memory;
//! - a same-run baseline: gRPC health checks at the same concurrency (the same
//!   tonic stack with no work behind it), because this machine's speed drifts
//!   by a quarter from one minute to the next and only ratios compare; and
//!   the disk on its own, the mesh idle: a page written and synced 100 times
//!   a second ([`crate::machine::disk_baseline`]), which tells whether the
//!   disk stalls this minute without the mesh's writes;
//! - sustained load: PlaceOrder offered at a fixed rate (500/s by default)
//!   with at most 32 in flight, latency from each request's scheduled time;
//! - saga lag: from an order's PlaceOrder reply to its `store.v1.order.delivered`
//!   event on NATS, per 10-second window, to show it stays bounded, and that
//!   every placed order reaches DELIVERED;
//! - capacity: PlaceOrder in a closed loop at 32 in flight, the ceiling;
//! - inside order during the sustained load, from its own histograms
//!   (SQLite only): PlaceOrder as its server saw it, its stages, and the
//!   turns on its one writer, waited for and held, by requests and by
//!   background work ([`inside`]);
//! - the machine beside them ([`crate::machine`]): the cores' time stolen by
//!   the hypervisor, idle and waiting for the disk, and the spans in which
//!   the disk held requests and completed none, over the run and per window.

mod inside;

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
use sqlx::{AssertSqlSafe, Executor as _};

use crate::{
    home::Home,
    load::{self, LoadArgs, LoadReport, Percentiles, Sample},
    local::{LocalMesh, LocalOptions, core_wait, cpu_time, rss_bytes, service_names},
    machine::{
        BASELINE_SYNCS_PER_SEC, BASELINE_WRITE, DiskBaseline, DiskStall, DiskWatch, MachineTicks, SHORTEST_STALL, SLOW_SYNC,
        disk_baseline,
    },
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
    /// How long the disk is measured on its own before the load, the mesh
    /// idle, in seconds (0 skips it): a page written and synced 100 times a
    /// second beside the services' files.
    #[arg(long, default_value_t = 10)]
    pub disk_baseline_secs: u64,
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
    /// Run the services on this PostgreSQL server instead of SQLite: the URL
    /// of a role that may create databases, such as
    /// `postgres://postgres@127.0.0.1:5432/postgres`. The bench creates one
    /// database per service, `foodmesh_bench_<service>` (dropping any left
    /// from an earlier run), and drops them at the end. The CPU figures count
    /// every process named `postgres` on this machine as `postgres`, so the
    /// server should be local and otherwise idle.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Write every request of the sustained load to this file as CSV: when it
    /// was due (seconds from the start of the load), its latency in ms, and
    /// whether it succeeded. For finding when in the run the slow ones were.
    #[arg(long, value_name = "FILE")]
    pub samples_out: Option<PathBuf>,
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
    /// How long its threads were ready to run but waited for a core, per
    /// placed order (`None` where the kernel does not say, and for
    /// PostgreSQL's processes).
    waited_for_core_ms_per_order: Option<f64>,
}

/// Where the sustained load's requests over the p99 floor were: spread over
/// the run, or bunched into one stall of the machine or the mesh. A stall of
/// a few hundred milliseconds holds back every request due in it, which
/// alone can put the p99 over the floor.
#[derive(Debug, Serialize, PartialEq)]
struct SlowRequests {
    /// Requests over the floor's latency.
    over_floor: usize,
    /// The start of the second (by due time, from the start of the load)
    /// in which the most of them were due.
    worst_second_from_secs: f64,
    /// How many of them were due in that second.
    in_worst_second: usize,
    /// The p99 of the requests due outside that second.
    p99_outside_worst_second_ms: f64,
}

impl SlowRequests {
    /// Of `samples`, sorted by due time; `None` when none was over `floor_ms`.
    fn of(samples: &[Sample], floor_ms: f64) -> Option<Self> {
        let floor = Duration::from_secs_f64(floor_ms / 1000.0);
        let slow: Vec<Duration> = samples.iter().filter(|s| s.latency > floor).map(|s| s.sent).collect();
        // The densest second: for each slow request, those due within a second from it.
        // `end` only moves on: the window from `start` reaches at least as far
        // as the one before it.
        let (mut best, mut best_from, mut end) = (0, Duration::ZERO, 0);
        for (start, from) in slow.iter().enumerate() {
            while end < slow.len() && slow[end] < *from + Duration::from_secs(1) {
                end += 1;
            }
            if end - start > best {
                (best, best_from) = (end - start, *from);
            }
        }
        if best == 0 {
            return None;
        }
        let mut outside: Vec<Duration> = samples
            .iter()
            .filter(|s| s.sent < best_from || s.sent >= best_from + Duration::from_secs(1))
            .map(|s| s.latency)
            .collect();
        Some(Self {
            over_floor: slow.len(),
            worst_second_from_secs: best_from.as_secs_f64(),
            in_worst_second: best,
            p99_outside_worst_second_ms: Percentiles::of(&mut outside).p99,
        })
    }
}

/// How the machine's cores were spent over the same span as [`CpuShare`],
/// in percent of the cores' time: a virtual machine's cores are shared with
/// other guests, and time the hypervisor gave them (stolen) is time this run
/// could not have, whatever the code does.
#[derive(Debug, Serialize)]
struct MachineShare {
    stolen_pct: f64,
    idle_pct: f64,
    iowait_pct: f64,
}

impl MachineShare {
    fn of(ticks: MachineTicks) -> Option<Self> {
        let pct = |part: u64| 100.0 * part as f64 / ticks.total as f64;
        (ticks.total > 0).then(|| Self { stolen_pct: pct(ticks.steal), idle_pct: pct(ticks.idle), iowait_pct: pct(ticks.iowait) })
    }
}

/// The sustained load's requests due in one window, and the machine then.
#[derive(Debug, Serialize)]
struct LoadWindow {
    from_secs: u64,
    latency_ms: Percentiles,
    /// Between the machine's readings nearest the window's ends.
    machine: Option<MachineShare>,
    /// How much of the window the disks were stalled (see
    /// [`BenchReport::disk_stalls`]); `None` where they were not watched.
    disk_stalled_ms: Option<f64>,
}

/// The starts of the windows of `window` that cover `duration_secs`.
fn window_starts(window: Duration, duration_secs: u64) -> impl Iterator<Item = Duration> {
    (0..duration_secs.div_ceil(window.as_secs().max(1))).map(move |w| window * u32::try_from(w).unwrap_or(u32::MAX))
}

/// Splits `samples` (by due time) into windows of `window` over
/// `duration_secs`, each with the machine's share over it from the readings
/// `machine` (time from the start of the load, ticks so far) and the part of
/// it that `stalls` (from the start of the load) cover.
fn load_windows(
    samples: &[Sample],
    machine: &[(Duration, MachineTicks)],
    stalls: Option<&[DiskStall]>,
    window: Duration,
    duration_secs: u64,
) -> Vec<LoadWindow> {
    let nearest = |at: Duration| machine.iter().min_by_key(|(t, _)| t.abs_diff(at)).map(|(_, ticks)| *ticks);
    window_starts(window, duration_secs)
        .map(|from| {
            let mut due: Vec<Duration> =
                samples.iter().filter(|s| s.sent >= from && s.sent < from + window).map(|s| s.latency).collect();
            let machine = nearest(from).zip(nearest(from + window)).and_then(|(a, b)| MachineShare::of(b.since(a)));
            let (start, end) = (from.as_secs_f64(), (from + window).as_secs_f64());
            let disk_stalled_ms = stalls.map(|stalls| {
                stalls
                    .iter()
                    .map(|s| {
                        let overlap = (s.from_secs + s.ms / 1000.0).min(end) - s.from_secs.max(start);
                        overlap.max(0.0) * 1000.0
                    })
                    // Not `sum`: the empty sum of floats is -0.
                    .fold(0.0, |all, ms| all + ms)
            });
            LoadWindow { from_secs: from.as_secs(), latency_ms: Percentiles::of(&mut due), machine, disk_stalled_ms }
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct LagWindow {
    from_secs: u64,
    delivered: usize,
    lag_ms: Percentiles,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    /// `sqlite` or `postgres`.
    database: &'static str,
    services: Vec<ServiceFigures>,
    /// Each stall of a disk (see [`BenchReport::disk_stalls`]) from spawning
    /// nats-server to every service SERVING, timed from that spawn: each
    /// service's migrations wait for the disk before it reports SERVING.
    start_disk_stalls: Option<Vec<DiskStall>>,
    baseline_health_checks_per_sec: f64,
    /// The disk on its own, the mesh idle, just before the load; `None` when
    /// skipped or when it could not write.
    disk_baseline: Option<DiskBaseline>,
    load: LoadReport,
    /// Where its slow requests were; `None` when none was over the floor.
    slow_requests: Option<SlowRequests>,
    /// Its latency and the machine, per 10 s window.
    load_windows: Vec<LoadWindow>,
    capacity: Option<LoadReport>,
    kitchen_delay_ms: u64,
    saga_lag_ms: Percentiles,
    saga_lag_windows: Vec<LagWindow>,
    cpu: Vec<CpuShare>,
    /// The machine over the same span; `None` where `/proc/stat` is missing.
    machine: Option<MachineShare>,
    /// Over the same span, each time a disk of the machine held requests and
    /// completed none for [`SHORTEST_STALL`] or longer, from the start of the
    /// load; `None` where the disks could not be watched.
    disk_stalls: Option<Vec<DiskStall>>,
    /// Inside order; `None` on PostgreSQL.
    inside_order: Option<inside::InsideOrder>,
    placed: usize,
    delivered: usize,
    drain_after_load_secs: f64,
    /// This run against the product's floors.
    floors: Vec<Floor>,
}

/// One of the floors the product promises on a 2-core machine, and whether
/// this run met it.
#[derive(Debug, Serialize, PartialEq)]
struct Floor {
    what: &'static str,
    target: String,
    measured: String,
    met: bool,
}

/// The sustained rate, PlaceOrders in flight, and the per-service limits
/// that the product promises on a 2-core machine (README, Benchmark).
const FLOOR_RATE: f64 = 500.0;
const FLOOR_IN_FLIGHT: usize = 32;
const FLOOR_P99_MS: f64 = 50.0;
const FLOOR_IDLE_RSS_MIB: f64 = 30.0;
const FLOOR_SERVING_MS: u128 = 500;
/// The p99 floor's name in the verdict.
const P99_FLOOR: &str = "PlaceOrder p99 at 32 in flight";
/// The start-up floor's name in the verdict.
const SERVING_FLOOR: &str = "start to SERVING, each service";
/// How much later than the first window's the saga lag of any later window
/// may be and still count as not growing.
const LAG_GROWTH: f64 = 1.5;

/// Checks `r` against the floors. A run at another rate or concurrency
/// measures something else: its rate and p99 floors are not met.
fn floors(r: &BenchReport, offered_rate: f64, in_flight: usize) -> Vec<Floor> {
    // The rate counts until the last answer, which comes a little after the
    // last request is due: 1 % below the offered rate still sustained it.
    let at_rate = offered_rate >= FLOOR_RATE && r.load.rate >= 0.99 * FLOOR_RATE;
    let every_order = r.placed > 0 && r.delivered == r.placed && r.load.failures.is_empty();
    let first_lag = r.saga_lag_windows.first().map_or(0.0, |w| w.lag_ms.p50);
    let worst_lag = r.saga_lag_windows.iter().map(|w| w.lag_ms.p50).fold(0.0, f64::max);
    let lag_flat = first_lag > 0.0 && worst_lag <= LAG_GROWTH * first_lag;
    let p99 = r.load.latency_ms.p99;
    let rss = r.services.iter().map(|s| s.idle_rss_mib).fold(0.0, f64::max);
    let serving = r.services.iter().map(|s| s.start_to_serving_ms).max().unwrap_or(u128::MAX);
    vec![
        Floor {
            what: "sustained PlaceOrder, every order delivered",
            target: format!(">= {FLOOR_RATE} placed/s, none failed, all delivered"),
            measured: format!(
                "{:.1} placed/s of {offered_rate}/s offered, {} failed, {} of {} delivered",
                r.load.rate,
                r.load.failures.values().sum::<u64>(),
                r.delivered,
                r.placed
            ),
            met: at_rate && every_order,
        },
        Floor {
            what: "saga lag bounded, not growing",
            target: format!("no 10 s window's p50 over {LAG_GROWTH} x the first's"),
            measured: format!("p50 per window {first_lag:.0} ms first, {worst_lag:.0} ms highest"),
            met: lag_flat && every_order,
        },
        Floor {
            what: P99_FLOOR,
            target: format!("<= {FLOOR_P99_MS} ms"),
            measured: format!("{p99:.1} ms at {in_flight} in flight, {offered_rate}/s"),
            met: at_rate && in_flight >= FLOOR_IN_FLIGHT && p99 <= FLOOR_P99_MS,
        },
        Floor {
            what: "idle RSS, each service",
            target: format!("<= {FLOOR_IDLE_RSS_MIB} MiB"),
            measured: format!("{rss:.1} MiB at most"),
            met: !r.services.is_empty() && rss <= FLOOR_IDLE_RSS_MIB,
        },
        Floor {
            what: SERVING_FLOOR,
            target: format!("<= {FLOOR_SERVING_MS} ms"),
            measured: format!("{serving} ms at most"),
            met: !r.services.is_empty() && serving <= FLOOR_SERVING_MS,
        },
    ]
}

/// `foodmesh bench`.
pub async fn run(args: &BenchArgs) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("foodmesh-bench-{}", std::process::id()));
    let home = Home::open(&dir)?;
    let step = Duration::from_millis(args.kitchen_step_ms);
    let mut options = LocalOptions {
        kitchen_step: Some(step),
        worker_threads: args.worker_threads,
        pin_cpus: !args.no_pin,
        background_nice: args.background_nice,
        ..LocalOptions::benchmark(args.base_port, args.nats_port)
    };
    let postgres = match &args.postgres {
        Some(admin_url) => Some(BenchDatabases::create(admin_url).await?),
        None => None,
    };
    if let Some(databases) = &postgres {
        options
            .service_env
            .extend(databases.databases.iter().map(|(service, _, url)| (*service, "DATABASE_URL".to_owned(), url.clone())));
    }
    // Order's metrics, for its own histograms (SQLite only). The gauges'
    // sampler would add a count of every order every few seconds to what is
    // measured, so it is left to run once an hour.
    let metrics_port = match postgres {
        Some(_) => None,
        None => Some(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()),
    };
    if let Some(port) = metrics_port {
        options.service_env.extend([
            ("order", "FOODMESH_METRICS__LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")),
            ("order", "FOODMESH_METRICS__SAMPLE_INTERVAL_MS".to_owned(), "3600000".to_owned()),
        ]);
    }
    eprintln!(
        "bench: starting a fresh mesh in {} (cores pinned: {}; nats, store and notification at nice {}; {})",
        dir.display(),
        options.pin_cpus,
        options.background_nice,
        if postgres.is_some() { "PostgreSQL" } else { "SQLite" },
    );
    let start_watch = DiskWatch::start(Instant::now());
    let outcome = match LocalMesh::start(&home, &options).await {
        Ok(mesh) => {
            let start_disk_stalls = start_watch.map(DiskWatch::finish);
            let outcome = measure(&home, &mesh, args, step, metrics_port, start_disk_stalls).await;
            mesh.stop(&home).await;
            outcome
        }
        Err(err) => Err(err),
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(databases) = postgres {
        databases.drop_all().await;
    }
    let (mut report, loaded) = outcome?;
    for figures in &mut report.services {
        figures.loaded_rss_mib = loaded.get(figures.name.as_str()).copied().unwrap_or_default();
    }
    report.floors = floors(&report, args.rate, args.concurrency);
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
    metrics_port: Option<u16>,
    start_disk_stalls: Option<Vec<DiskStall>>,
) -> Result<(BenchReport, HashMap<&'static str, f64>)> {
    let scrape = || async move {
        match metrics_port {
            Some(port) => foodmesh_mesh::process::admin_get(port, "/metrics").await.ok(),
            None => None,
        }
    };
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
    let disk_baseline = measure_disk(home.root(), args.disk_baseline_secs).await;
    let load_args =
        LoadArgs { rate: Some(args.rate), ..LoadArgs::closed_loop(args.concurrency, args.duration_secs, load::Scenario::Place) };
    // Every process of the mesh, NATS included, and this load generator.
    let pids: Vec<(String, Option<u32>)> = mesh
        .processes
        .iter()
        .map(|p| (p.name.to_owned(), p.child.id()))
        .chain([("load generator".to_owned(), Some(std::process::id()))])
        .collect();
    // CPU time, and the time ready to run but without a core: where the two
    // cores are short, the second is what a request's latency is made of.
    let at_start: Vec<(Option<Duration>, Option<Duration>)> =
        pids.iter().map(|(_, pid)| (pid.and_then(cpu_time), pid.and_then(core_wait))).collect();
    let metrics_at_start = scrape().await;
    // On PostgreSQL the statements run in the server's processes: its
    // backends hold the services' pooled connections for the whole run.
    let postgres_at_start = args.postgres.as_ref().map(|_| cpu_by_pid(&processes_named("postgres")));
    let machine_at_start = MachineTicks::now();
    let started = Instant::now();
    let disk_watch = DiskWatch::start(started);
    eprintln!(
        "bench: PlaceOrder offered at {}/s (at most {} in flight) for {} s",
        args.rate, args.concurrency, args.duration_secs
    );
    let load = load::drive_with_samples(home, &mesh.endpoints.order, &load_args, Some(placed_tx));
    tokio::pin!(load);

    let mut tracker = LagTracker { started, placed_at: HashMap::new(), early: HashMap::new(), lags: Vec::new() };
    let decode = |payload: &[u8]| -> Option<String> {
        match StoreEvent::decode(payload).ok()?.event? {
            store_event::Event::OrderStatusChanged(c) if c.status() == StoreOrderStatus::Delivered => Some(c.order_id),
            _ => None,
        }
    };

    // The machine each second, to set beside each window's latency.
    let mut machine_seconds: Vec<(Duration, MachineTicks)> = machine_at_start.map(|t| (Duration::ZERO, t)).into_iter().collect();
    let mut each_second = tokio::time::interval_at((started + Duration::from_secs(1)).into(), Duration::from_secs(1));
    let (report, samples) = loop {
        tokio::select! {
            report = &mut load => break report?,
            _ = each_second.tick() => {
                if let Some(ticks) = MachineTicks::now() {
                    machine_seconds.push((started.elapsed(), ticks));
                }
            }
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
    let inside_order = match (metrics_at_start, scrape().await) {
        (Some(before), Some(after)) => Some(inside::InsideOrder::between(&before, &after)),
        _ => None,
    };
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
    let machine_at_end = MachineTicks::now();
    let disk_stalls = disk_watch.map(DiskWatch::finish);
    let machine = machine_at_end.zip(machine_at_start).and_then(|(now, then)| MachineShare::of(now.since(then)));
    machine_seconds.extend(machine_at_end.map(|ticks| (busy, ticks)));
    let (placed, lags) = (tracker.placed_at.len(), tracker.lags);
    let per_order = |d: Duration| d.as_secs_f64() * 1000.0 / placed.max(1) as f64;
    let share = |process: String, used: Duration, waited: Option<Duration>| CpuShare {
        process,
        cpu_ms_per_order: per_order(used),
        share_of_two_cores_pct: used.as_secs_f64() * 100.0 / (2.0 * busy.as_secs_f64()),
        waited_for_core_ms_per_order: waited.map(per_order),
    };
    let mut cpu: Vec<CpuShare> = pids
        .iter()
        .zip(at_start)
        .filter_map(|((name, pid), (before, waited_before))| {
            let pid = (*pid)?;
            let waited = core_wait(pid).zip(waited_before).and_then(|(now, then)| now.checked_sub(then));
            Some(share(name.clone(), cpu_time(pid)?.checked_sub(before?)?, waited))
        })
        .collect();
    if let Some(before) = postgres_at_start {
        // Processes that started during the run count from zero; those that
        // ended are missed (the pools keep their connections open).
        let used = cpu_by_pid(&processes_named("postgres"))
            .into_iter()
            .map(|(pid, now)| now.saturating_sub(before.get(&pid).copied().unwrap_or_default()))
            .sum();
        cpu.push(share("postgres".to_owned(), used, None));
    }
    let delivered = lags.len();
    let drain = if delivered >= placed { load_end.elapsed().as_secs_f64() } else { f64::NAN };

    let window = Duration::from_secs(10);
    let windows = window_starts(window, args.duration_secs)
        .map(|from| {
            let mut in_window: Vec<Duration> =
                lags.iter().filter(|(t, _)| *t >= from && *t < from + window).map(|(_, lag)| *lag).collect();
            LagWindow { from_secs: from.as_secs(), delivered: in_window.len(), lag_ms: Percentiles::of(&mut in_window) }
        })
        .collect();
    let mut all: Vec<Duration> = lags.iter().map(|(_, lag)| *lag).collect();
    let load_windows = load_windows(&samples, &machine_seconds, disk_stalls.as_deref(), window, args.duration_secs);
    if let Some(path) = &args.samples_out {
        let mut csv = String::from("due_secs,latency_ms,ok\n");
        for s in &samples {
            csv.push_str(&format!("{:.4},{:.3},{}\n", s.sent.as_secs_f64(), s.latency.as_secs_f64() * 1000.0, s.ok));
        }
        std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let capacity = if args.capacity_secs > 0 {
        eprintln!("bench: capacity, PlaceOrder in a closed loop at {} in flight for {} s", args.concurrency, args.capacity_secs);
        let closed = LoadArgs { rate: None, duration_secs: args.capacity_secs, ..load_args.clone() };
        Some(load::drive(home, &mesh.endpoints.order, &closed, None).await?)
    } else {
        None
    };
    Ok((
        BenchReport {
            database: if args.postgres.is_some() { "postgres" } else { "sqlite" },
            services,
            start_disk_stalls,
            baseline_health_checks_per_sec: baseline,
            disk_baseline,
            load: report,
            slow_requests: SlowRequests::of(&samples, FLOOR_P99_MS),
            load_windows,
            capacity,
            kitchen_delay_ms: 3 * u64::try_from(step.as_millis()).unwrap_or(0),
            saga_lag_ms: Percentiles::of(&mut all),
            saga_lag_windows: windows,
            cpu,
            machine,
            disk_stalls,
            inside_order,
            placed,
            delivered,
            drain_after_load_secs: drain,
            floors: Vec::new(),
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
    let database = if r.database == "postgres" { "fresh PostgreSQL databases" } else { "fresh SQLite files" };
    println!("\n== services ({database}) ==");
    println!("{:<13} {:>16} {:>14} {:>16}", "service", "start->SERVING", "idle RSS", "RSS after load");
    for s in &r.services {
        println!("{:<13} {:>13} ms {:>10.1} MiB {:>12.1} MiB", s.name, s.start_to_serving_ms, s.idle_rss_mib, s.loaded_rss_mib);
    }
    if let Some(stalls) = &r.start_disk_stalls {
        println!("while they started, {}", disk_stalls_line(stalls));
    }
    println!("\n== same-run baseline ==");
    println!("gRPC health checks at the same concurrency: {:.0}/s (this machine, this minute)", r.baseline_health_checks_per_sec);
    if let Some(disk) = &r.disk_baseline {
        println!("{}", disk_baseline_line(disk));
    }
    println!("\n== PlaceOrder, sustained (open loop; latency from each request's scheduled time) ==");
    load::print_report(&r.load);
    for w in &r.load_windows {
        let machine = w.machine.as_ref().map_or_else(String::new, |m| {
            format!("; the machine: {:>4.1} % stolen, {:>4.1} % waiting for the disk", m.stolen_pct, m.iowait_pct)
        });
        let stalled = w.disk_stalled_ms.map_or_else(String::new, |ms| format!(", disk stalled {ms:>5.0} ms"));
        println!(
            "  due in [{:>3}s, +10s): p50 {:>6.1} ms, p99 {:>7.1} ms, max {:>7.1} ms{machine}{stalled}",
            w.from_secs, w.latency_ms.p50, w.latency_ms.p99, w.latency_ms.max
        );
    }
    if let Some(slow) = &r.slow_requests {
        println!(
            "Over {FLOOR_P99_MS} ms:                  {:>10} of {}; {} of them due in the second from +{:.1} s \
             (p99 of the rest {:.2} ms)",
            slow.over_floor,
            r.load.transactions,
            slow.in_worst_second,
            slow.worst_second_from_secs,
            slow.p99_outside_worst_second_ms
        );
    }
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
        let waited = c.waited_for_core_ms_per_order.map_or_else(String::new, |ms| format!("  waited {ms:>5.2} ms for a core"));
        println!(
            "{:<15} {:>6.2} ms per order  {:>5.1} % of the two cores{waited}",
            c.process, c.cpu_ms_per_order, c.share_of_two_cores_pct
        );
    }
    if let Some(m) = &r.machine {
        println!(
            "the machine: {:.1} % of the cores' time stolen by the hypervisor for other guests, {:.1} % idle, {:.1} % waiting for the disk",
            m.stolen_pct, m.idle_pct, m.iowait_pct
        );
    }
    if let Some(stalls) = &r.disk_stalls {
        println!("{}", disk_stalls_line(stalls));
    }
    if let Some(w) = &r.inside_order {
        println!("\n== inside order during the sustained load (its own histograms; each PlaceOrder writes twice) ==");
        let line = |what: &str, t: &inside::TurnFigures| {
            println!(
                "{what:<31} {:>7}, mean {:>5.1} ms, {:>5} over 20 ms, {:>5} over 50 ms, p99 <= {} ms",
                t.count, t.mean_ms, t.over_20_ms, t.over_50_ms, t.p99_at_most_ms
            );
        };
        line("PlaceOrder, served", &w.place_order_served);
        line("  its attempt write", &w.attempt);
        line("  its charge", &w.charge);
        line("  its placement write", &w.placement);
        line("SQLite writer: requests waited", &w.request_wait);
        line("               requests held", &w.request_held);
        line("           background waited", &w.background_wait);
        line("              background held", &w.background_held);
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
    println!("\n== against the product's floors (2 cores) ==");
    for f in &r.floors {
        let verdict = if f.met { "met" } else { "NOT MET" };
        println!("{verdict:<8} {:<45} {:<45} {}", f.what, f.target, f.measured);
    }
    let unmet = |what: &str| r.floors.iter().any(|f| f.what == what && !f.met);
    if let Some(stalls) = r.disk_stalls.as_ref().filter(|s| unmet(P99_FLOOR) && !s.is_empty()) {
        println!(
            "note: during the load {}; every PlaceOrder waits for its commits to reach the disk \
             (SQLite synchronous=FULL), so those spans hold back every request due in them",
            disk_stalls_line(stalls)
        );
    }
    if let Some(disk) = r.disk_baseline.as_ref().filter(|d| unmet(P99_FLOOR) && disk_was_slow(d)) {
        println!(
            "note: before the load, with the mesh idle, the disk was slow on its own ({} of {} syncs over {} ms, \
             the longest {:.0} ms): it stalls this minute with {} KiB a second to write, not only under the mesh's writes",
            disk.slow_syncs,
            disk.syncs,
            SLOW_SYNC.as_millis(),
            disk.sync_ms.max,
            BASELINE_WRITE * BASELINE_SYNCS_PER_SEC as usize / 1024
        );
    }
    if let Some(stalls) = r.start_disk_stalls.as_ref().filter(|s| unmet(SERVING_FLOOR) && !s.is_empty()) {
        println!(
            "note: while the services started {}; a service reports SERVING once its migrations \
             are committed, which waits for the disk",
            disk_stalls_line(stalls)
        );
    }
}

/// The disk baseline, writing as it goes; `None` (and a word why) when it
/// cannot write.
async fn measure_disk(dir: &std::path::Path, secs: u64) -> Option<DiskBaseline> {
    if secs == 0 {
        return None;
    }
    eprintln!("bench: baseline, the disk alone: a page written and synced {BASELINE_SYNCS_PER_SEC} times a second for {secs} s");
    let dir = dir.to_owned();
    match tokio::task::spawn_blocking(move || disk_baseline(&dir, Duration::from_secs(secs))).await {
        Ok(Ok(disk)) => Some(disk),
        Ok(Err(err)) => {
            eprintln!("bench: the disk baseline could not write ({err}); left out");
            None
        }
        Err(err) => {
            eprintln!("bench: the disk baseline stopped ({err}); left out");
            None
        }
    }
}

/// Whether the disk, on its own, took longer than [`SLOW_SYNC`] for a sync
/// or stalled.
fn disk_was_slow(disk: &DiskBaseline) -> bool {
    disk.slow_syncs > 0 || disk.stalls.as_ref().is_some_and(|s| !s.is_empty())
}

/// The disk baseline in one line.
fn disk_baseline_line(d: &DiskBaseline) -> String {
    let stalls = d.stalls.as_deref().map_or_else(String::new, |s| format!("; {}", disk_stalls_line(s)));
    format!(
        "the disk alone, the mesh idle: {} syncs of a {} KiB write in {:.1} s: p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms, {} over {} ms{stalls}",
        d.syncs,
        BASELINE_WRITE / 1024,
        d.secs,
        d.sync_ms.p50,
        d.sync_ms.p99,
        d.sync_ms.max,
        d.slow_syncs,
        SLOW_SYNC.as_millis()
    )
}

/// The disks' stalls in one line.
fn disk_stalls_line(stalls: &[DiskStall]) -> String {
    let shortest = SHORTEST_STALL.as_millis();
    match stalls.iter().map(|s| s.ms).reduce(f64::max) {
        None => format!("the disk: no stall of {shortest} ms or more (requests held, none completed)"),
        Some(longest) => format!(
            "the disk stalled {} time{} for {shortest} ms or more (requests held, none completed): longest {longest:.0} ms, {:.0} ms in all",
            stalls.len(),
            if stalls.len() == 1 { "" } else { "s" },
            stalls.iter().map(|s| s.ms).sum::<f64>()
        ),
    }
}

/// The benchmark's databases on a PostgreSQL server, one per service.
struct BenchDatabases {
    admin: sqlx::AnyPool,
    /// Each service, its database's name and its `DATABASE_URL`.
    databases: Vec<(&'static str, String, String)>,
}

impl BenchDatabases {
    /// Creates each service's database afresh on the server `admin_url` names.
    async fn create(admin_url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let admin = sqlx::pool::PoolOptions::<sqlx::Any>::new()
            .max_connections(1)
            .connect(admin_url)
            .await
            .context("cannot connect to the PostgreSQL server given with --postgres")?;
        let mut databases = Vec::new();
        for service in service_names() {
            let name = format!("foodmesh_bench_{service}");
            drop_database(&admin, &name).await?;
            // Names are ours (fixed words), so formatting them in is safe;
            // PostgreSQL takes no parameters here, and runs the statement
            // only as a plain (unprepared) query outside a transaction.
            admin
                .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .with_context(|| format!("cannot create the database {name} (the role needs CREATEDB)"))?;
            let url = with_database(admin_url, &name)?;
            databases.push((service, name, url));
        }
        Ok(BenchDatabases { admin, databases })
    }

    /// Drops the databases; a failure leaves them for the next run to drop.
    async fn drop_all(self) {
        for (_, name, _) in &self.databases {
            if let Err(err) = drop_database(&self.admin, name).await {
                eprintln!("bench: could not drop {name}: {err}");
            }
        }
        self.admin.close().await;
    }
}

/// Drops the database `name` (one of ours, see [`BenchDatabases::create`]),
/// disconnecting whoever is still connected to it.
async fn drop_database(admin: &sqlx::AnyPool, name: &str) -> Result<(), sqlx::Error> {
    admin.execute(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))).await.map(drop)
}

/// `url` with its database (the path) replaced by `database`; the user,
/// host and query parameters are kept.
fn with_database(url: &str, database: &str) -> Result<String> {
    let authority_at = url.find("://").map(|i| i + 3).context("the PostgreSQL URL has no scheme")?;
    let rest = &url[authority_at..];
    let path_at = rest.find(['/', '?']).map_or(url.len(), |i| authority_at + i);
    let query_at = url[path_at..].find('?').map_or(url.len(), |i| path_at + i);
    Ok(format!("{}/{database}{}", &url[..path_at], &url[query_at..]))
}

/// The processes whose command name is `name` (Linux `/proc`).
fn processes_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim_end() == name))
        .collect()
}

/// The CPU time of each process that still exists.
fn cpu_by_pid(pids: &[u32]) -> HashMap<u32, Duration> {
    pids.iter().filter_map(|&pid| Some((pid, cpu_time(pid)?))).collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn lag(p50: f64) -> LagWindow {
        LagWindow { from_secs: 0, delivered: 5000, lag_ms: Percentiles { p50, ..Percentiles::default() } }
    }

    /// A run that meets every floor: 500/s for 60 s, p99 40 ms.
    fn good_run() -> BenchReport {
        BenchReport {
            database: "sqlite",
            start_disk_stalls: None,
            services: ["payment", "store", "notification", "order"]
                .into_iter()
                .map(|name| ServiceFigures {
                    name: name.to_owned(),
                    start_to_serving_ms: 40,
                    idle_rss_mib: 17.5,
                    loaded_rss_mib: 25.0,
                })
                .collect(),
            baseline_health_checks_per_sec: 40_000.0,
            disk_baseline: None,
            load: LoadReport {
                transactions: 30_000,
                successes: 30_000,
                failures: BTreeMap::new(),
                elapsed_secs: 60.0,
                rate: 499.8,
                availability_pct: 100.0,
                latency_ms: Percentiles { p99: 40.0, ..Percentiles::default() },
            },
            slow_requests: None,
            load_windows: Vec::new(),
            capacity: None,
            kitchen_delay_ms: 300,
            saga_lag_ms: Percentiles::default(),
            saga_lag_windows: vec![lag(460.0), lag(470.0), lag(505.0)],
            cpu: Vec::new(),
            machine: None,
            disk_stalls: None,
            inside_order: None,
            placed: 30_000,
            delivered: 30_000,
            drain_after_load_secs: 0.4,
            floors: Vec::new(),
        }
    }

    fn unmet(r: &BenchReport, rate: f64, in_flight: usize) -> Vec<&'static str> {
        floors(r, rate, in_flight).into_iter().filter(|f| !f.met).map(|f| f.what).collect()
    }

    #[test]
    fn a_run_within_every_floor_meets_them_all() {
        assert_eq!(unmet(&good_run(), 500.0, 32), Vec::<&str>::new());
    }

    #[test]
    fn each_floor_fails_on_its_own_figure() {
        let mut slow = good_run();
        slow.load.latency_ms.p99 = 143.4;
        assert_eq!(unmet(&slow, 500.0, 32), ["PlaceOrder p99 at 32 in flight"]);

        let mut lost = good_run();
        lost.delivered = 29_999;
        assert_eq!(unmet(&lost, 500.0, 32), ["sustained PlaceOrder, every order delivered", "saga lag bounded, not growing"]);

        let mut failed = good_run();
        failed.load.failures.insert("Unavailable".to_owned(), 3);
        assert_eq!(unmet(&failed, 500.0, 32), ["sustained PlaceOrder, every order delivered", "saga lag bounded, not growing"]);

        let mut growing = good_run();
        growing.saga_lag_windows.push(lag(2_500.0));
        assert_eq!(unmet(&growing, 500.0, 32), ["saga lag bounded, not growing"]);

        let mut fat = good_run();
        fat.services[3].idle_rss_mib = 30.5;
        assert_eq!(unmet(&fat, 500.0, 32), ["idle RSS, each service"]);

        let mut late = good_run();
        late.services[0].start_to_serving_ms = 501;
        assert_eq!(unmet(&late, 500.0, 32), ["start to SERVING, each service"]);

        let mut short = good_run();
        short.load.rate = 480.0;
        assert_eq!(unmet(&short, 500.0, 32), ["sustained PlaceOrder, every order delivered", "PlaceOrder p99 at 32 in flight"]);
    }

    #[test]
    fn another_rate_or_concurrency_does_not_meet_the_rate_floors() {
        let mut gentle = good_run();
        gentle.load.rate = 300.0;
        assert_eq!(unmet(&gentle, 300.0, 32), ["sustained PlaceOrder, every order delivered", "PlaceOrder p99 at 32 in flight"]);
        assert_eq!(unmet(&good_run(), 500.0, 8), ["PlaceOrder p99 at 32 in flight"]);
    }

    /// 500 requests a second for `secs`, each `ms` long, except those `slow` says.
    fn paced(secs: u64, ms: u64, slow: impl Fn(Duration) -> Option<u64>) -> Vec<Sample> {
        (0..secs * 500)
            .map(|n| {
                let sent = Duration::from_millis(n * 2);
                Sample { sent, latency: Duration::from_millis(slow(sent).unwrap_or(ms)), ok: true }
            })
            .collect()
    }

    #[test]
    fn slow_requests_bunched_in_one_stall_are_told_apart_from_a_slow_run() {
        // A 400 ms stall at +24 s in a run otherwise at 10 ms: the stall makes
        // the p99 on its own, and the rest is well within the floor.
        let stalled = |sent: Duration| {
            let at = sent.as_millis() as u64;
            (24_000..24_400).contains(&at).then(|| 24_400 - at + 10)
        };
        let samples = paced(30, 10, stalled);
        let mut all: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        assert!(Percentiles::of(&mut all).p99 > FLOOR_P99_MS, "the stall puts the whole run over the floor");
        let slow = SlowRequests::of(&samples, FLOOR_P99_MS).expect("slow requests");
        // Due from 24.000 s to 24.358 s: latencies 410 down to 52 ms.
        assert_eq!(slow.over_floor, 180);
        assert_eq!(slow.in_worst_second, 180);
        assert_eq!(slow.worst_second_from_secs, 24.0);
        assert_eq!(slow.p99_outside_worst_second_ms, 10.0);

        // Slow everywhere: no second holds more than its share.
        let spread = paced(30, 10, |sent| (sent.as_millis() % 100 == 0).then_some(80));
        let slow = SlowRequests::of(&spread, FLOOR_P99_MS).expect("slow requests");
        assert_eq!((slow.over_floor, slow.in_worst_second), (300, 10));

        assert_eq!(SlowRequests::of(&paced(30, 10, |_| None), FLOOR_P99_MS), None);
    }

    #[test]
    fn each_window_has_its_own_latency_and_the_machine_of_its_time() {
        // 20 s: 10 ms in the first 10, 40 ms in the next, while the
        // hypervisor took a quarter of the machine and the disk stalled
        // across the windows' border and again in the second.
        let samples = paced(20, 10, |sent| (sent >= Duration::from_secs(10)).then_some(40));
        let ticks = |total, steal| MachineTicks { total, idle: 0, iowait: 0, steal };
        let machine: Vec<(Duration, MachineTicks)> = (0..=20u64)
            .map(|s| {
                (Duration::from_millis(s * 1000 + 3), if s <= 10 { ticks(s * 200, 0) } else { ticks(s * 200, (s - 10) * 50) })
            })
            .collect();
        let stall = |from_secs, ms| DiskStall { device: "vda".to_owned(), from_secs, ms };
        let stalls = [stall(9.75, 400.0), stall(15.0, 300.0)];
        let windows = load_windows(&samples, &machine, Some(&stalls), Duration::from_secs(10), 20);
        assert_eq!(windows.iter().map(|w| w.from_secs).collect::<Vec<_>>(), [0, 10]);
        assert_eq!((windows[0].latency_ms.p99, windows[1].latency_ms.p50), (10.0, 40.0));
        let stolen: Vec<f64> = windows.iter().map(|w| w.machine.as_ref().expect("readings").stolen_pct).collect();
        assert_eq!(stolen, [0.0, 25.0]);
        let stalled: Vec<f64> = windows.iter().map(|w| w.disk_stalled_ms.expect("watched").round()).collect();
        assert_eq!(stalled, [250.0, 450.0]);
        let calm = load_windows(&samples, &machine, Some(&[]), Duration::from_secs(10), 20);
        assert!(calm.iter().all(|w| w.disk_stalled_ms.is_some_and(|ms| ms.is_sign_positive() && ms == 0.0)), "not -0");
        let unwatched = load_windows(&samples, &[], None, Duration::from_secs(10), 20);
        assert!(unwatched.iter().all(|w| w.machine.is_none() && w.disk_stalled_ms.is_none()));
    }

    #[test]
    fn the_disks_stalls_are_told_in_one_line() {
        assert_eq!(disk_stalls_line(&[]), "the disk: no stall of 100 ms or more (requests held, none completed)");
        let stall = |from_secs, ms| DiskStall { device: "vda".to_owned(), from_secs, ms };
        assert_eq!(
            disk_stalls_line(&[stall(2.0, 120.0), stall(31.5, 410.0)]),
            "the disk stalled 2 times for 100 ms or more (requests held, none completed): longest 410 ms, 530 ms in all"
        );
    }

    #[test]
    fn the_disk_baseline_is_told_in_one_line_and_slow_by_a_sync_or_a_stall() {
        let ms = |p50, p99, max| Percentiles { mean: p50, p50, p90: p99, p99, max };
        let well = DiskBaseline { syncs: 1000, secs: 10.0, sync_ms: ms(0.38, 0.98, 18.4), slow_syncs: 0, stalls: Some(vec![]) };
        assert_eq!(
            disk_baseline_line(&well),
            "the disk alone, the mesh idle: 1000 syncs of a 4 KiB write in 10.0 s: p50 0.38 ms, p99 0.98 ms, \
             max 18.4 ms, 0 over 50 ms; the disk: no stall of 100 ms or more (requests held, none completed)"
        );
        assert!(!disk_was_slow(&well));
        // Not watched (no disk device): the line ends with the syncs.
        let unwatched = DiskBaseline { stalls: None, ..well.clone() };
        assert!(disk_baseline_line(&unwatched).ends_with("0 over 50 ms"));
        assert!(!disk_was_slow(&unwatched));
        let slow_sync = DiskBaseline { sync_ms: ms(0.4, 1.1, 476.0), slow_syncs: 3, ..well.clone() };
        assert!(disk_was_slow(&slow_sync));
        assert!(disk_baseline_line(&slow_sync).contains("max 476.0 ms, 3 over 50 ms"));
        let stall = DiskStall { device: "vda".to_owned(), from_secs: 4.2, ms: 120.0 };
        let stalled = DiskBaseline { stalls: Some(vec![stall]), ..well };
        assert!(disk_was_slow(&stalled));
        assert!(disk_baseline_line(&stalled).ends_with(
            "the disk stalled 1 time for 100 ms or more (requests held, none completed): longest 120 ms, 120 ms in all"
        ));
    }

    #[test]
    fn a_services_url_keeps_everything_but_the_database() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/postgres", "postgres://postgres@127.0.0.1:5432/x"),
            ("postgres://u:p@db:5432/postgres?sslmode=disable", "postgres://u:p@db:5432/x?sslmode=disable"),
            ("postgres://u@db", "postgres://u@db/x"),
            ("postgres://u@db?sslmode=require", "postgres://u@db/x?sslmode=require"),
        ];
        for (admin, expected) in cases {
            assert_eq!(with_database(admin, "x").expect("a URL with a scheme"), expected, "{admin}");
        }
        assert!(with_database("127.0.0.1:5432/postgres", "x").is_err());
    }
}
