//! `foodmesh bench-drain`: how fast the store catches up after an outage.
//!
//! It starts a fresh local mesh (kitchen left to staff, so only intake is
//! measured), stops the store, places N orders (they wait in `ORDER_EVENTS`),
//! starts the store again and times until it has taken every one of them:
//! each order applied to the store's database (inbox row included) and its
//! `store.v1.order.received` event published. Duplicated received events
//! would mean an order applied twice; they are counted.

use std::{
    collections::HashSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use foodmesh_proto::store::v1::{StoreEvent, StoreOrderStatus, store_event};
use futures::StreamExt;
use prost::Message as _;
use serde::Serialize;

use crate::{
    home::Home,
    load::{self, LoadArgs},
    local::{LocalMesh, LocalOptions, cpu_time},
};

/// Options of `foodmesh bench-drain`.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    /// Orders placed while the store is down.
    #[arg(long, default_value_t = 10_000)]
    pub orders: u64,
    /// order's port for the benchmark mesh (the next three are used too).
    #[arg(long, default_value_t = 55051)]
    pub base_port: u16,
    /// nats-server's port for the benchmark mesh.
    #[arg(long, default_value_t = 55222)]
    pub nats_port: u16,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct DrainReport {
    orders: u64,
    placing_rate: f64,
    store_start_to_serving_ms: u128,
    drain_secs_from_serving: f64,
    drain_secs_from_spawn: f64,
    drained_per_sec: f64,
    duplicates: u64,
    store_cpu_ms_per_order: f64,
}

/// `foodmesh bench-drain`.
pub async fn run(args: &DrainArgs) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("foodmesh-drain-{}", std::process::id()));
    let home = Home::open(&dir)?;
    let options = LocalOptions::benchmark(args.base_port, args.nats_port);
    eprintln!("bench-drain: starting a fresh mesh in {}", dir.display());
    let mut mesh = LocalMesh::start(&home, &options).await?;
    let outcome = measure(&home, &options, &mut mesh, args).await;
    mesh.stop(&home).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = outcome?;
    println!("\n== store catching up after an outage ==");
    println!("orders waiting:                 {:>8}", report.orders);
    println!("placed (store down) at:         {:>8.0} orders/s", report.placing_rate);
    println!("store start -> SERVING:         {:>8} ms", report.store_start_to_serving_ms);
    println!(
        "drained in:                     {:>8.2} s from SERVING ({:.2} s from spawn)",
        report.drain_secs_from_serving, report.drain_secs_from_spawn
    );
    println!("drain rate:                     {:>8.0} orders/s", report.drained_per_sec);
    println!("orders taken twice:             {:>8}", report.duplicates);
    println!("store CPU:                      {:>8.3} ms per order", report.store_cpu_ms_per_order);
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

async fn measure(home: &Home, options: &LocalOptions, mesh: &mut LocalMesh, args: &DrainArgs) -> Result<DrainReport> {
    mesh.stop_service("store").await;
    let nats = async_nats::connect(&mesh.endpoints.nats).await?;
    let mut received = nats.subscribe("store.v1.order.received").await?;
    eprintln!("bench-drain: store stopped; placing {} orders", args.orders);
    let load_args = LoadArgs { requests: Some(args.orders), ..LoadArgs::closed_loop(32, 600, load::Scenario::Place) };
    let placed = load::drive(home, &mesh.endpoints.order, &load_args, None).await?;
    if placed.successes != args.orders {
        bail!("only {} of {} orders were placed", placed.successes, args.orders);
    }
    // Every OrderPlaced must be in the stream before the clock starts.
    let js = foodmesh_platform::messaging::jetstream(nats.clone());
    let waited = Instant::now();
    loop {
        let info = js.get_stream("ORDER_EVENTS").await?.get_info().await?;
        if info.state.messages >= args.orders {
            break;
        }
        if waited.elapsed() > Duration::from_secs(60) {
            bail!("only {} of {} OrderPlaced events reached the stream", info.state.messages, args.orders);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    eprintln!("bench-drain: starting the store");
    let spawned = Instant::now();
    let serving = mesh.start_service(home, options, "store").await?;
    let serving_at = spawned + serving;
    let store_pid = mesh.processes.iter().find(|p| p.name == "store").and_then(|p| p.child.id());
    let cpu_before = store_pid.and_then(cpu_time);
    let (mut seen, mut duplicates) = (HashSet::new(), 0u64);
    let deadline = Instant::now() + Duration::from_secs(300);
    while (seen.len() as u64) < args.orders {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline.into(), received.next()).await else {
            bail!("the store took {} of {} orders in 300 s", seen.len(), args.orders);
        };
        let order_id = match StoreEvent::decode(message.payload).ok().and_then(|e| e.event) {
            Some(store_event::Event::OrderStatusChanged(c)) if c.status() == StoreOrderStatus::Received => c.order_id,
            _ => continue,
        };
        if !seen.insert(order_id) {
            duplicates += 1;
        }
    }
    let done = Instant::now();
    let cpu = match (store_pid.and_then(cpu_time), cpu_before) {
        (Some(after), Some(before)) => after.saturating_sub(before),
        _ => Duration::ZERO,
    };
    let from_serving = done.duration_since(serving_at).as_secs_f64();
    Ok(DrainReport {
        orders: args.orders,
        placing_rate: placed.rate,
        store_start_to_serving_ms: serving.as_millis(),
        drain_secs_from_serving: from_serving,
        drain_secs_from_spawn: done.duration_since(spawned).as_secs_f64(),
        drained_per_sec: args.orders as f64 / from_serving.max(f64::EPSILON),
        duplicates,
        store_cpu_ms_per_order: cpu.as_secs_f64() * 1000.0 / args.orders as f64,
    })
}
