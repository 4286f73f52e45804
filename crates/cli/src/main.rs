//! `foodmesh`: run the mesh locally and use it from the command line.
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout, reason = "a command-line tool prints its results")]

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::{Parser, Subcommand};
use foodmesh_platform::auth::Principal;
use tonic_types::StatusExt;

mod bench;
mod commands;
mod demo;
mod drain;
mod home;
mod load;
mod local;
mod machine;
mod ops;
mod provision;
mod resilience;
mod rollout;
mod show;

/// foodmesh: a food-delivery platform as a gRPC service mesh.
#[derive(Debug, Parser)]
#[command(name = "foodmesh", version)]
struct Cli {
    /// The local mesh's home: keys, data, logs and endpoints.
    #[arg(long, global = true, env = "FOODMESH_HOME", default_value = ".foodmesh")]
    home: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start nats-server and the four services on SQLite; stop with Ctrl-C.
    Up {
        /// Run the demo once the mesh is up.
        #[arg(long)]
        demo: bool,
        /// With --demo: stop the mesh when the demo is over.
        #[arg(long)]
        exit_after_demo: bool,
        /// Leave the kitchen to staff (`foodmesh kitchen`) instead of the auto-kitchen.
        #[arg(long)]
        manual_kitchen: bool,
        /// Auto-kitchen delay between steps, in milliseconds.
        #[arg(long, default_value_t = 1500)]
        kitchen_step_ms: u64,
        /// order's port; payment, store and notification take the next three.
        #[arg(long, default_value_t = 50051)]
        base_port: u16,
        /// nats-server's port.
        #[arg(long, default_value_t = 4222)]
        nats_port: u16,
        /// Tokio worker threads per service.
        #[arg(long, default_value_t = 1)]
        worker_threads: usize,
        /// Let every service run on any core, instead of one core each.
        #[arg(long)]
        no_pin: bool,
        /// The `nice` value of nats-server, store and notification, the saga's
        /// background, so that order and payment answer first (0: all equal).
        #[arg(long, default_value_t = local::DEFAULT_BACKGROUND_NICE, value_parser = clap::value_parser!(u8).range(0..=19))]
        background_nice: u8,
        /// Put the services behind a local Envoy configured from istio/: the
        /// gateway on order's port, payment reached by order through Envoy.
        #[arg(long)]
        mesh: bool,
        /// Order processes behind the mesh (with --mesh; at most 4). They
        /// share order's database; Envoy balances them and routes only to
        /// those whose gRPC health is SERVING, as Kubernetes readiness does.
        #[arg(long, default_value_t = 1)]
        order_replicas: usize,
    },
    /// Place a few orders on the running mesh and print their journeys.
    Demo,
    /// Print a bearer token (for grpcurl: -H "authorization: Bearer $(foodmesh token ...)").
    Token {
        /// A customer id.
        #[arg(long, group = "who")]
        customer: Option<String>,
        /// A store id: a token for its staff.
        #[arg(long, group = "who")]
        store: Option<String>,
        /// An operator token.
        #[arg(long, group = "who")]
        operator: bool,
    },
    /// List the stores.
    Stores,
    /// Show a store's menu.
    Menu {
        /// The store.
        store: String,
    },
    /// Place an order.
    Place {
        /// As this customer.
        #[arg(long)]
        customer: String,
        /// At this store.
        #[arg(long)]
        store: String,
        /// A menu item, optionally with a quantity: `bulgogi:2`. Repeatable.
        #[arg(long = "item", required = true)]
        items: Vec<String>,
        /// Where to deliver.
        #[arg(long, default_value = "1 Test Street, Seoul")]
        address: String,
        /// The card token; `tok_decline` is always declined.
        #[arg(long, default_value = "tok_visa")]
        card: String,
        /// The idempotency key (default: a new UUID).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show an order with its timeline.
    Get {
        /// As this customer.
        #[arg(long)]
        customer: String,
        /// The order.
        order_id: String,
    },
    /// List a customer's orders.
    Orders {
        /// The customer.
        #[arg(long)]
        customer: String,
    },
    /// Cancel an order (before cooking starts).
    Cancel {
        /// As this customer.
        #[arg(long)]
        customer: String,
        /// The order.
        order_id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Follow an order until it is final.
    Watch {
        /// As this customer.
        #[arg(long)]
        customer: String,
        /// The order.
        order_id: String,
    },
    /// Act as a store's staff: list, cook, deliver, complete or reject orders.
    Kitchen {
        /// The store.
        #[arg(long)]
        store: String,
        /// What to do.
        action: commands::StaffAction,
        /// The order (all actions but list).
        order_id: Option<String>,
        /// Why (reject).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Review a delivered order's store, as its customer: 1 to 5 stars and
    /// an optional comment.
    Review {
        /// As this customer.
        #[arg(long)]
        customer: String,
        /// The delivered order.
        order_id: String,
        /// 1 to 5 stars.
        #[arg(long)]
        rating: i32,
        /// A few words (up to 500 characters).
        #[arg(long, default_value = "")]
        comment: String,
        /// The idempotency key (default: a new UUID).
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Show a store's reviews and rating.
    Reviews {
        /// The store.
        store: String,
    },
    /// A customer's preferred stores: list them, add one or remove one.
    Preferred {
        /// The customer.
        #[arg(long)]
        customer: String,
        /// What to do.
        action: commands::PreferredAction,
        /// The store (add and remove).
        store: Option<String>,
    },
    /// Show a customer's notifications.
    Notifications {
        /// The customer.
        #[arg(long)]
        customer: String,
        /// Keep following new ones.
        #[arg(long)]
        follow: bool,
    },
    /// Rebuild order's status view by replaying the event streams (operators):
    /// runs `foodmesh-order rebuild-view` on the local mesh's data. Safe while
    /// the mesh runs.
    RebuildView {
        /// Only compare the view with the streams; exit 1 if they differ.
        #[arg(long)]
        check: bool,
    },
    /// List the messages consumers gave up on, or replay them (operators).
    DeadLetters {
        /// What to do.
        #[command(subcommand)]
        action: DeadLetterAction,
        /// NATS to use instead of the local mesh's.
        #[arg(long, global = true)]
        nats_url: Option<String>,
    },
    /// Show payment's injected faults, or change them at run time (operators):
    /// `foodmesh faults --latency-ms 400-620 --max-concurrent 10`, `--off`.
    Faults(ops::FaultArgs),
    /// A rolling restart under load: order replicas behind the local Envoy,
    /// each sent SIGTERM and started again while `foodmesh load` runs; reports
    /// failed requests (the promise: none), stop and start times, and what
    /// Envoy saw.
    BenchRollout(rollout::RolloutArgs),
    /// Create every JetStream stream and durable consumer the services use,
    /// then exit (the Helm chart's Job). Reads NATS_URL, FOODMESH_CONFIG and
    /// FOODMESH_CONSUMER__* like the services.
    JetstreamInit {
        /// NATS to use instead of the configured one.
        #[arg(long)]
        nats_url: Option<String>,
    },
    /// Show order's circuit breaker in front of payment (operators).
    Circuit {
        /// The order service's address, instead of the local mesh's.
        #[arg(long)]
        order: Option<String>,
    },
    /// Drive PlaceOrder against the running mesh and print a summary.
    Load(load::LoadArgs),
    /// Start a fresh mesh, load it for a while, and report throughput,
    /// latency, saga lag, memory and start-up time.
    Bench(bench::BenchArgs),
    /// Start a fresh mesh, stop the store, place a backlog of orders, start
    /// the store again and time how fast it catches up.
    BenchDrain(drain::DrainArgs),
    /// The reference load test with payment slowed and capacity-limited:
    /// unprotected, with order's breaker, and through the Envoy mesh; then
    /// payment killed under load and started again.
    BenchResilience(resilience::ResilienceArgs),
}

/// What to do with parked messages.
#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// List parked messages, oldest first, with the reason each was parked.
    List {
        /// Only those parked by this durable consumer, e.g. `store-orders`.
        #[arg(long)]
        consumer: Option<String>,
        /// The most to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Publish parked messages again on their original subjects (after the
    /// cause is fixed) and remove them from the dead-letter stream.
    Replay {
        /// Dead-letter sequence numbers, as `list` shows them.
        #[arg(required_unless_present = "all")]
        sequences: Vec<u64>,
        /// Replay every parked message (of `--consumer`, if given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only those parked by this consumer.
        #[arg(long)]
        consumer: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error; a gRPC status with its reason and bad fields.
fn report(err: &anyhow::Error) {
    match err.downcast_ref::<tonic::Status>() {
        Some(status) => {
            let reason = status.get_details_error_info().map(|i| format!(" [{}]", i.reason)).unwrap_or_default();
            eprintln!("error: {:?}{reason}: {}", status.code(), status.message());
            for v in status.get_details_bad_request().map(|b| b.field_violations).unwrap_or_default() {
                eprintln!("  {}: {}", v.field, v.description);
            }
            if let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
                eprintln!("  retry after {delay:?}");
            }
        }
        None => eprintln!("error: {err:#}"),
    }
}

async fn run(cli: Cli) -> Result<()> {
    // The one command that runs in a container (the chart's Job), where the
    // root filesystem is read-only: it needs no home directory.
    if let Command::JetstreamInit { nats_url } = cli.command {
        return provision::jetstream_init(nats_url).await;
    }
    let home = home::Home::open(&cli.home)?;
    let mesh = || commands::Mesh::connect(&home);
    match cli.command {
        Command::Up {
            demo,
            exit_after_demo,
            manual_kitchen,
            kitchen_step_ms,
            base_port,
            nats_port,
            worker_threads,
            no_pin,
            background_nice,
            mesh,
            order_replicas,
        } => {
            if demo && manual_kitchen {
                anyhow::bail!("--demo needs the auto-kitchen; drop --manual-kitchen");
            }
            let options = local::LocalOptions {
                base_port,
                nats_port,
                kitchen_step: (!manual_kitchen).then(|| Duration::from_millis(kitchen_step_ms)),
                log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
                extra_env: Vec::new(),
                worker_threads,
                pin_cpus: !no_pin,
                background_nice,
                mesh,
                service_env: Vec::new(),
                order_replicas,
            };
            up(&home, &options, demo, exit_after_demo).await
        }
        Command::Demo => demo::run(&home).await,
        Command::Token { customer, store, operator } => {
            let principal = match (customer, store, operator) {
                (Some(customer_id), _, _) => Principal::Customer { customer_id },
                (_, Some(store_id), _) => Principal::StoreStaff { staff_id: format!("staff@{store_id}"), store_id },
                (_, _, true) => Principal::Operator { operator_id: "operator".to_owned() },
                _ => anyhow::bail!("say who the token is for: --customer ID, --store ID or --operator"),
            };
            home.ensure_keys()?;
            let bearer = home.bearer(&principal)?;
            println!("{}", bearer.trim_start_matches("Bearer "));
            Ok(())
        }
        Command::Stores => commands::stores(&mut mesh()?).await,
        Command::Menu { store } => commands::menu(&mut mesh()?, &store).await,
        Command::Place { customer, store, items, address, card, request_id } => {
            commands::place(&mut mesh()?, &customer, &store, &items, &address, &card, request_id).await
        }
        Command::Get { customer, order_id } => commands::get(&mut mesh()?, &customer, &order_id).await,
        Command::Orders { customer } => commands::orders(&mut mesh()?, &customer).await,
        Command::Cancel { customer, order_id, reason } => commands::cancel(&mut mesh()?, &customer, &order_id, &reason).await,
        Command::Watch { customer, order_id } => commands::watch(&mut mesh()?, &customer, &order_id).await,
        Command::Kitchen { store, action, order_id, reason } => {
            commands::kitchen(&mut mesh()?, &store, action, order_id.as_deref(), &reason).await
        }
        Command::Review { customer, order_id, rating, comment, request_id } => {
            commands::review(&mut mesh()?, &customer, &order_id, rating, &comment, request_id).await
        }
        Command::Reviews { store } => commands::reviews(&mut mesh()?, &store).await,
        Command::Preferred { customer, action, store } => {
            commands::preferred(&mut mesh()?, &customer, action, store.as_deref()).await
        }
        Command::Notifications { customer, follow } => commands::notifications(&mut mesh()?, &customer, follow).await,
        Command::RebuildView { check } => local::rebuild_order_view(&home, check).await,
        Command::DeadLetters { action, nats_url } => {
            let url = match nats_url {
                Some(url) => url,
                None => home.endpoints()?.nats,
            };
            commands::dead_letters(&url, action).await
        }
        Command::Faults(args) => ops::faults(&home, &args).await,
        Command::Circuit { order } => ops::circuit(&home, order).await,
        Command::JetstreamInit { nats_url } => provision::jetstream_init(nats_url).await,
        Command::BenchRollout(args) => rollout::run(&args).await.map(drop),
        Command::Load(args) => load::run(&home, &args).await.map(drop),
        Command::Bench(args) => bench::run(&args).await,
        Command::BenchDrain(args) => drain::run(&args).await,
        Command::BenchResilience(args) => resilience::run(&args).await,
    }
}

async fn up(home: &home::Home, options: &local::LocalOptions, demo: bool, exit_after_demo: bool) -> Result<()> {
    println!("foodmesh: starting nats-server and 4 services (data in {})", home.root().display());
    let mut mesh = local::LocalMesh::start(home, options).await?;
    let e = mesh.endpoints.clone();
    for p in &mesh.processes {
        let ready = p.time_to_serving.map(|t| format!("SERVING after {} ms", t.as_millis())).unwrap_or_else(|| "up".to_owned());
        let ready = if p.name == "envoy" { ready.replace("SERVING", "LIVE") } else { ready };
        println!("  {:<13} {:<22} {:<24} log {}", p.name, p.addr, ready, p.log.display());
    }
    if options.mesh {
        println!(
            "\nmesh: Envoy (policy from istio/) is the gateway at {} for order, store and notification, \
             and order reaches payment through it at {}; admin and stats at http://{}/stats",
            e.order,
            e.payment,
            e.envoy_admin.as_deref().unwrap_or("?")
        );
    }
    let token = home.bearer(&Principal::Customer { customer_id: "alice".to_owned() })?;
    println!(
        "\nauto-kitchen: {}",
        options.kitchen_step.map_or("off (use `foodmesh kitchen`)".to_owned(), |d| format!("on, {} ms per step", d.as_millis()))
    );
    println!("a customer token for alice (12 h): foodmesh token --customer alice");
    println!(
        "try:\n  grpcurl -plaintext -H 'authorization: {token}' -d '{{\"store_id\":\"seoul-bbq\"}}' {} foodmesh.store.v1.StoreService/GetMenu",
        e.store
    );
    println!("  foodmesh place --customer alice --store seoul-bbq --item bulgogi:2\n");
    if demo {
        demo::run(home).await?;
        if exit_after_demo {
            mesh.stop(home).await;
            println!("foodmesh: stopped");
            return Ok(());
        }
    }
    println!("foodmesh: running; Ctrl-C to stop");
    loop {
        tokio::select! {
            () = foodmesh_platform::lifecycle::shutdown_signal() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                if let Some((name, status, log)) = mesh.exited() {
                    eprintln!("foodmesh: {name} exited ({status}); see {}", log.display());
                    mesh.stop(home).await;
                    anyhow::bail!("{name} stopped unexpectedly");
                }
            }
        }
    }
    println!("\nfoodmesh: stopping (services drain, then NATS)");
    mesh.stop(home).await;
    println!("foodmesh: stopped");
    Ok(())
}
