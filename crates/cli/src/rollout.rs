//! `foodmesh bench-rollout`: a rolling restart under load, as Kubernetes does
//! one, on this machine. Order runs as several replicas behind the local
//! Envoy (configured from istio/, with gRPC health checks standing in for
//! readiness and the endpoints controller); `foodmesh load` drives the
//! gateway while each replica in turn gets SIGTERM, drains, exits and is
//! started again on the same port. It reports the load's failures (the
//! promise: none), how long each replica took to stop and to serve again,
//! what Envoy saw (health-check failures, retries), and reads the databases
//! for unpaid orders and double charges.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::{
    home::Home,
    load::{self, LoadArgs, LoadReport, Scenario},
    local::{LocalMesh, LocalOptions},
    resilience::{Audit, audit},
};

/// Options of `foodmesh bench-rollout`.
#[derive(Debug, Clone, clap::Args)]
pub struct RolloutArgs {
    /// Order replicas (each is restarted once, one after another).
    #[arg(long, default_value_t = 2)]
    pub replicas: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long the load runs, in seconds; the restarts happen in its middle half.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
    /// What the load does.
    #[arg(long, value_enum, default_value_t = Scenario::Mixed)]
    pub scenario: Scenario,
    /// Order's drain: how long a stopping replica keeps serving while
    /// reporting NOT_SERVING (server.drain_ms). It must outlast one health
    /// check interval (200 ms here; the readiness period in Kubernetes).
    #[arg(long, default_value_t = 1000)]
    pub drain_ms: u64,
    /// The gateway's port (the services listen 10 above it, Envoy's admin 9 above).
    #[arg(long, default_value_t = 57051)]
    pub base_port: u16,
    /// nats-server's port.
    #[arg(long, default_value_t = 57222)]
    pub nats_port: u16,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// One replica's restart.
#[derive(Debug, Clone, Serialize)]
pub struct Restart {
    /// The replica ("order", "order-2", …).
    pub replica: String,
    /// When SIGTERM was sent, from the start of the load, ms.
    pub at_ms: u64,
    /// From SIGTERM to the process's exit (drain, in-flight, consumers, outbox), ms.
    pub stop_ms: u64,
    /// From the new process's spawn to SERVING, ms.
    pub start_ms: u64,
}

/// What `foodmesh bench-rollout` measured.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    /// The load through the gateway.
    pub load: LoadReport,
    /// Each replica's restart.
    pub restarts: Vec<Restart>,
    /// Envoy's health checks of order that failed (a draining or stopped
    /// replica): each restart must show at least one.
    pub health_check_failures: u64,
    /// Requests Envoy retried on another order replica.
    pub retries: u64,
    /// The databases afterwards.
    pub audit: Audit,
}

/// Runs the benchmark; fails if the mesh did not do what it should (a
/// replica did not stop or come back), not if requests failed: that is
/// reported.
pub async fn run(args: &RolloutArgs) -> Result<RolloutReport> {
    if args.replicas < 2 {
        bail!("a rolling restart without failures needs at least 2 replicas");
    }
    let dir = std::env::temp_dir().join(format!("foodmesh-rollout-{}", std::process::id()));
    let home = Home::open(&dir)?;
    let options = LocalOptions {
        mesh: true,
        order_replicas: args.replicas,
        service_env: vec![("order", "FOODMESH_SERVER__DRAIN_MS".to_owned(), args.drain_ms.to_string())],
        ..LocalOptions::benchmark(args.base_port, args.nats_port)
    };
    eprintln!(
        "bench-rollout: {} order replicas behind Envoy, {} clients for {} s, each replica restarted in turn",
        args.replicas, args.concurrency, args.duration_secs
    );
    let mut mesh = LocalMesh::start(&home, &options).await?;
    let outcome = measure(args, &home, &options, &mut mesh).await;
    mesh.stop(&home).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = outcome?;
    print(&report);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

async fn measure(args: &RolloutArgs, home: &Home, options: &LocalOptions, mesh: &mut LocalMesh) -> Result<RolloutReport> {
    let gateway = mesh.endpoints.order.clone();
    let admin = mesh.endpoints.envoy_admin.clone().context("the mesh has an Envoy admin")?;
    let admin_port: u16 = admin.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).context("Envoy's admin port")?;
    let load_args = LoadArgs::closed_loop(args.concurrency, args.duration_secs, args.scenario);
    let started = Instant::now();
    let load = load::drive(home, &gateway, &load_args, None);
    let replicas: Vec<String> =
        mesh.processes.iter().filter(|p| p.name.starts_with("order")).map(|p| p.name.to_owned()).collect();
    let restarts = async {
        // Spread over the middle half of the run, one replica at a time.
        let window = Duration::from_secs(args.duration_secs) / 2;
        let step = window / u32::try_from(replicas.len()).unwrap_or(1);
        let mut done = Vec::new();
        for (i, replica) in replicas.iter().enumerate() {
            let due = Duration::from_secs(args.duration_secs) / 4 + step * u32::try_from(i).unwrap_or(0);
            tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
            let at = started.elapsed();
            let sigterm = Instant::now();
            mesh.stop_service(replica).await;
            let stop = sigterm.elapsed();
            let start = mesh.start_service(home, options, replica).await?;
            eprintln!("bench-rollout: {replica} restarted: stopped in {stop:.2?}, serving {start:.2?} after spawn");
            done.push(Restart { replica: replica.clone(), at_ms: millis(at), stop_ms: millis(stop), start_ms: millis(start) });
        }
        Ok::<_, anyhow::Error>(done)
    };
    let (load, restarts) = tokio::join!(load, restarts);
    let (load, restarts) = (load?, restarts?);
    let health_check_failures = foodmesh_mesh::process::stat(admin_port, "cluster.order-v1.health_check.failure").await;
    let retries = foodmesh_mesh::process::stat(admin_port, "cluster.order-v1.upstream_rq_retry").await;
    // Let the reconciler settle any charge whose caller gave up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let audit = audit(home).await?;
    Ok(RolloutReport { load, restarts, health_check_failures, retries, audit })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn print(r: &RolloutReport) {
    load::print_report(&r.load);
    println!();
    for restart in &r.restarts {
        println!(
            "Restarted {:<8} at {:>6} ms: SIGTERM to exit {:>5} ms, spawn to SERVING {:>4} ms",
            restart.replica, restart.at_ms, restart.stop_ms, restart.start_ms
        );
    }
    println!("Envoy: {} failed health checks of order, {} retries", r.health_check_failures, r.retries);
    println!(
        "Databases: {} orders, {} unpaid, {} orphan charges, at most {} charge(s) per order",
        r.audit.orders, r.audit.unpaid, r.audit.orphans, r.audit.max_charges
    );
}
