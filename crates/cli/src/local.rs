//! Runs the mesh on this machine: nats-server with JetStream and the four
//! service binaries, each on a loopback port, all data in one home directory.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::home::{Endpoints, Home};

/// How the local mesh runs.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// order listens here, payment on +1, store on +2, notification on +3.
    pub base_port: u16,
    /// NATS's port.
    pub nats_port: u16,
    /// Auto-kitchen step delay; `None` leaves the kitchen to staff.
    pub kitchen_step: Option<Duration>,
    /// `RUST_LOG` for the services.
    pub log_filter: String,
    /// Extra environment for every service.
    pub extra_env: Vec<(String, String)>,
    /// Tokio worker threads per service. One each suits a laptop running six
    /// processes on a few cores: work stays on one core, with fewer wake-ups
    /// across cores.
    pub worker_threads: usize,
    /// Keep each service on one core (order and store on the first, payment
    /// and notification on the second, and so on round the cores), through
    /// `taskset`. sqlx runs each SQLite statement on its own thread; on one
    /// core its hand-offs are cheap, across cores each is a wake-up of the
    /// other core. nats-server goes with payment, off order's busier core.
    pub pin_cpus: bool,
    /// The `nice` value of the saga's background: nats-server, store and
    /// notification, whose work can wait a few milliseconds, while order and
    /// payment answer a customer who waits (0: all equal). On a shared
    /// machine this is what CPU requests do for pods on a node: without it a
    /// kitchen or notification batch holds the core a PlaceOrder needs next,
    /// and that wait sets PlaceOrder's tail. Too low a priority starves the
    /// background when the machine is nearly full, and the saga falls behind.
    pub background_nice: u8,
    /// Put the services behind a local Envoy configured from istio/ (see
    /// the foodmesh-mesh crate): the gateway takes order's port and routes
    /// order, store and notification; order calls payment through Envoy on
    /// payment's port; the services themselves listen 10 ports higher.
    pub mesh: bool,
    /// Extra environment for one service only: (service, key, value).
    pub service_env: Vec<(&'static str, String, String)>,
    /// Order processes behind the mesh (up to four; more than one needs
    /// `mesh`, whose Envoy balances them): "order", "order-2", …, sharing
    /// order's database and durable consumers.
    pub order_replicas: usize,
}

/// How far above their usual ports the services listen behind the local Envoy.
const MESH_SHIFT: u16 = 10;
/// Envoy's admin port, above the base port.
const ENVOY_ADMIN_OFFSET: u16 = 9;

impl LocalOptions {
    /// A benchmark's mesh: quiet logs, one worker thread per service, each
    /// service pinned, no kitchen, no Envoy; callers change what they measure.
    pub fn benchmark(base_port: u16, nats_port: u16) -> Self {
        LocalOptions {
            base_port,
            nats_port,
            kitchen_step: None,
            log_filter: "warn".to_owned(),
            extra_env: Vec::new(),
            worker_threads: 1,
            pin_cpus: true,
            background_nice: DEFAULT_BACKGROUND_NICE,
            mesh: false,
            service_env: Vec::new(),
            order_replicas: 1,
        }
    }

    /// The port the service at `offset` listens on.
    fn service_port(&self, offset: u16) -> u16 {
        self.base_port + offset + if self.mesh { MESH_SHIFT } else { 0 }
    }
}

/// One started process.
#[derive(Debug)]
pub struct Process {
    /// Its name.
    pub name: &'static str,
    /// The child.
    pub child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// From spawn to SERVING (services only).
    pub time_to_serving: Option<Duration>,
    /// Where it listens.
    pub addr: String,
}

/// The running mesh.
#[derive(Debug)]
pub struct LocalMesh {
    /// Where everything listens.
    pub endpoints: Endpoints,
    /// nats-server first, then the services.
    pub processes: Vec<Process>,
}

const SERVICES: [(&str, &str, u16); 4] = [
    ("payment", "foodmesh.payment.v1.PaymentService", 1),
    ("store", "foodmesh.store.v1.StoreService", 2),
    ("notification", "foodmesh.notification.v1.NotificationService", 3),
    ("order", "foodmesh.order.v1.OrderService", 0),
];

/// The four services' names (each its binary's suffix and its database's).
pub fn service_names() -> impl Iterator<Item = &'static str> {
    SERVICES.iter().map(|(name, _, _)| *name)
}

/// The names of order's processes; the second and later listen after
/// notification's port (offsets 4, 5, 6).
const ORDER_REPLICAS: [&str; 4] = ["order", "order-2", "order-3", "order-4"];

/// One service process to run: its name, the service it is, its port offset
/// and its place in the start order (for CPU pinning).
#[derive(Debug, Clone, Copy)]
struct Instance {
    name: &'static str,
    service: &'static str,
    binary: &'static str,
    offset: u16,
    index: usize,
}

/// Every process `options` asks for, in start order.
fn instances(options: &LocalOptions) -> Vec<Instance> {
    let mut all: Vec<Instance> = SERVICES
        .iter()
        .enumerate()
        .map(|(index, (name, service, offset))| Instance { name, service, binary: name, offset: *offset, index })
        .collect();
    let Some(order) = all.iter().find(|i| i.name == "order").copied() else { unreachable!("SERVICES lists order") };
    for (i, name) in ORDER_REPLICAS.iter().enumerate().take(options.order_replicas.max(1)).skip(1) {
        let offset = 3 + u16::try_from(i).unwrap_or(u16::MAX);
        all.push(Instance { name, offset, index: all.len(), ..order });
    }
    all
}

/// How often the local Envoy asks each endpoint's gRPC health (the stand-in
/// for Kubernetes readiness): a draining replica is out within this.
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Finds a helper binary: `$<NAME>_BIN`, the project's `.tools/bin`, or `PATH`.
pub fn find_tool(name: &str) -> Result<PathBuf> {
    let var = format!("{}_BIN", name.to_uppercase().replace('-', "_"));
    if let Some(path) = std::env::var_os(&var) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join(".tools/bin").join(name);
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    let in_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|c| c.exists()))
        .unwrap_or_default();
    in_path.ok_or_else(|| anyhow!("{name} not found: run scripts/bootstrap, or set {var}"))
}

/// Runs `foodmesh-order rebuild-view` against the local mesh's order
/// database and NATS (the mesh must be up: the streams live in its NATS).
pub async fn rebuild_order_view(home: &Home, check_only: bool) -> Result<()> {
    let endpoints = home.endpoints()?;
    let mut args = vec!["rebuild-view"];
    if check_only {
        args.push("--check");
    }
    let status = Command::new(service_binary("order")?)
        .args(args)
        .env("DATABASE_URL", format!("sqlite://{}", home.path("data/order.db").display()))
        .env("NATS_URL", endpoints.nats)
        .env("FOODMESH_AUTH__PUBLIC_KEY_FILE", home.ensure_keys()?)
        .env("RUST_LOG", "warn")
        .status()
        .await
        .context("running foodmesh-order rebuild-view")?;
    if !status.success() {
        bail!(if check_only { "the view differs from the streams (see above)" } else { "rebuild-view failed" });
    }
    Ok(())
}

fn service_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    let path = dir.join(format!("foodmesh-{name}"));
    if !path.exists() {
        bail!("{} not found next to foodmesh: build the workspace (cargo build --release)", path.display());
    }
    Ok(path)
}

fn ensure_free(port: u16, what: &str) -> Result<()> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .with_context(|| format!("port {port} for {what} is taken (choose others with --base-port / --nats-port)"))
}

/// `taskset` and the core for the `index`th service of [`SERVICES`], when
/// there are several cores and `taskset` exists (util-linux, on every Debian).
/// `taskset` execs the service, so the child's pid is the service's.
fn pinning(index: usize) -> Option<(PathBuf, usize)> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        return None;
    }
    let taskset = system_tool("taskset")?;
    // SERVICES starts payment, store, notification, order: with two cores,
    // payment and notification share one and store and order the other,
    // which splits the CPU each order costs about evenly.
    Some((taskset, (index + 1) % cores))
}

/// `taskset` and the core for nats-server: payment's (with notification).
/// Order and store keep theirs full at 500 orders/s while the other had a
/// fifth of its time idle; left free, nats-server mostly ran beside order,
/// woken by it. Moved, PlaceOrder's whole-run p99 was lower in seven of
/// twelve pairs of benchmark runs, and the median 10-second window's p99 in
/// each of the three sets of four (docs/benchmarks.md).
fn nats_pinning() -> Option<(PathBuf, usize)> {
    let payment = SERVICES.iter().position(|(name, _, _)| *name == "payment")?;
    pinning(payment)
}

/// Spawns one service process; the future waits until it is SERVING and
/// returns its name and the time from spawn.
fn spawn_service(
    home: &Home,
    options: &LocalOptions,
    endpoints: &Endpoints,
    public_key: &Path,
    instance: Instance,
) -> Result<(Process, impl Future<Output = Result<(&'static str, Duration)>> + use<>)> {
    let Instance { name: process_name, service, binary: name, offset, index } = instance;
    let addr = format!("127.0.0.1:{}", options.service_port(offset));
    let mut env = vec![
        ("FOODMESH_SERVER__LISTEN_ADDR".to_owned(), addr.clone()),
        // Replicas share their service's database (and durable consumers).
        ("DATABASE_URL".to_owned(), format!("sqlite://{}", home.path(&format!("data/{name}.db")).display())),
        ("NATS_URL".to_owned(), endpoints.nats.clone()),
        ("FOODMESH_AUTH__PUBLIC_KEY_FILE".to_owned(), public_key.display().to_string()),
        ("RUST_LOG".to_owned(), options.log_filter.clone()),
        ("TOKIO_WORKER_THREADS".to_owned(), options.worker_threads.to_string()),
    ];
    match name {
        "order" => env.push(("FOODMESH_PAYMENT__URL".to_owned(), format!("http://{}", endpoints.payment))),
        "store" => {
            if let Some(step) = options.kitchen_step {
                let ms = step.as_millis().to_string();
                env.push(("FOODMESH_AUTO_KITCHEN__ENABLED".to_owned(), "true".to_owned()));
                for key in ["COOK_AFTER_MS", "DELIVER_AFTER_MS", "COMPLETE_AFTER_MS"] {
                    env.push((format!("FOODMESH_AUTO_KITCHEN__{key}"), ms.clone()));
                }
            }
        }
        _ => {}
    }
    env.extend(options.extra_env.iter().cloned());
    env.extend(options.service_env.iter().filter(|(s, _, _)| *s == name).map(|(_, k, v)| (k.clone(), v.clone())));
    let log = home.path(&format!("logs/{process_name}.log"));
    let spawned_at = Instant::now();
    let binary = service_binary(name)?;
    let (program, args) = launcher(options, name, options.pin_cpus.then(|| pinning(index)).flatten(), binary, Vec::new());
    let child = spawn(&program, &args, &env, &log, home.root())?;
    let wait_addr = addr.clone();
    let wait = async move {
        wait_serving(&wait_addr, service, Duration::from_secs(30)).await.map(|()| (process_name, spawned_at.elapsed()))
    };
    Ok((Process { name: process_name, child, log, time_to_serving: None, addr: addr.clone() }, wait))
}

/// [`LocalOptions::background_nice`] unless told otherwise: all equal.
/// Measured with `foodmesh bench` on the 2-vCPU machine while 500 orders/s
/// kept it nearly full: at 10, PlaceOrder's p99 was 40-81 ms in six runs
/// against 89 ms to 8.8 s in eight at 0, but in five of the six the saga lag
/// grew during the run (the background starved); at 5 the p99 was within
/// the noise of 0. On a faster day (2026-11-28), 19 cut the full
/// benchmark's p99 from 110-136 ms to 53.7-57.1 ms in three runs, still
/// above the 50 ms floor, and two of the three broke the lag floor instead.
/// The benchmark's floors ask for both, so the trade is left to the user.
pub const DEFAULT_BACKGROUND_NICE: u8 = 0;

/// Whether `name`'s work can wait behind a customer's request: it consumes
/// events (store, notification) or carries them (nats), and no RPC a
/// customer waits on runs through it.
fn is_background(name: &str) -> bool {
    matches!(name, "nats" | "store" | "notification")
}

/// A program of the base system (util-linux, coreutils: on every Debian).
fn system_tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin"].into_iter().map(|dir| Path::new(dir).join(name)).find(|p| p.exists())
}

/// The command that starts `program` with `args`: through `taskset` when it
/// is pinned to a core, then through `nice` when it is background and
/// `options.background_nice` is not 0. Both exec what follows them, so the
/// child's pid is still the program's.
fn launcher(
    options: &LocalOptions,
    name: &str,
    pin: Option<(PathBuf, usize)>,
    program: PathBuf,
    args: Vec<String>,
) -> (PathBuf, Vec<String>) {
    let (program, args) = match pin {
        Some((taskset, cpu)) => {
            let mut pinned = vec!["-c".to_owned(), cpu.to_string(), program.display().to_string()];
            pinned.extend(args);
            (taskset, pinned)
        }
        None => (program, args),
    };
    let lowered = options.background_nice > 0 && is_background(name);
    match lowered.then(|| system_tool("nice")).flatten() {
        Some(nice) => {
            let mut niced = vec!["-n".to_owned(), options.background_nice.to_string(), program.display().to_string()];
            niced.extend(args);
            (nice, niced)
        }
        _ => (program, args),
    }
}

fn spawn(program: &Path, args: &[String], env: &[(String, String)], log: &Path, cwd: &Path) -> Result<Child> {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(program);
    // Its own process group: a Ctrl-C in the terminal reaches `foodmesh`
    // only, which then stops the services before NATS, in order.
    #[cfg(unix)]
    command.process_group(0);
    command
        .args(args)
        .envs(env.iter().cloned())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))
}

/// Waits until `addr` reports SERVING for `service`.
pub async fn wait_serving(addr: &str, service: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect_lazy();
    let mut health = HealthClient::new(channel);
    loop {
        let request = HealthCheckRequest { service: service.to_owned() };
        if let Ok(reply) = health.check(request).await
            && reply.into_inner().status() == ServingStatus::Serving
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{service} at {addr} did not report SERVING within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl LocalMesh {
    /// Starts nats-server and the four services from `home`, and waits until
    /// every service reports SERVING.
    pub async fn start(home: &Home, options: &LocalOptions) -> Result<LocalMesh> {
        let public_key = home.ensure_keys()?;
        if options.order_replicas > 1 && !options.mesh {
            bail!("more than one order replica needs the mesh (--mesh): Envoy balances them");
        }
        if options.order_replicas > ORDER_REPLICAS.len() {
            bail!("at most {} order replicas", ORDER_REPLICAS.len());
        }
        let instances = instances(options);
        let ports: Vec<u16> = instances.iter().map(|i| options.service_port(i.offset)).collect();
        if ports.contains(&options.nats_port) {
            bail!("the NATS port {} is one of the service ports {ports:?}", options.nats_port);
        }
        ensure_free(options.nats_port, "nats-server")?;
        for (instance, port) in instances.iter().zip(&ports) {
            ensure_free(*port, instance.name)?;
        }
        let nats_url = format!("nats://127.0.0.1:{}", options.nats_port);
        let addr = |port: u16| format!("127.0.0.1:{port}");
        let endpoints = if options.mesh {
            for (port, what) in [
                (options.base_port, "the Envoy gateway"),
                (options.base_port + 1, "Envoy's payment listener"),
                (options.base_port + ENVOY_ADMIN_OFFSET, "Envoy's admin"),
            ] {
                ensure_free(port, what)?;
            }
            // Customers' services through the gateway; payment through the
            // listener order uses (operators' FaultService is routed there too).
            Endpoints {
                order: addr(options.base_port),
                payment: addr(options.base_port + 1),
                store: addr(options.base_port),
                notification: addr(options.base_port),
                nats: nats_url.clone(),
                order_direct: Some(addr(options.service_port(0))),
                payment_direct: Some(addr(options.service_port(1))),
                envoy_admin: Some(addr(options.base_port + ENVOY_ADMIN_OFFSET)),
            }
        } else {
            Endpoints {
                order: addr(options.service_port(0)),
                payment: addr(options.service_port(1)),
                store: addr(options.service_port(2)),
                notification: addr(options.service_port(3)),
                nats: nats_url.clone(),
                order_direct: None,
                payment_direct: None,
                envoy_admin: None,
            }
        };

        let mut processes = Vec::new();
        let nats_log = home.path("logs/nats.log");
        let nats_args: Vec<String> = ["-js", "-a", "127.0.0.1", "-p", &options.nats_port.to_string(), "-sd"]
            .iter()
            .map(|s| (*s).to_owned())
            .chain([home.path("nats").display().to_string()])
            .collect();
        let (program, args) =
            launcher(options, "nats", options.pin_cpus.then(nats_pinning).flatten(), find_tool("nats-server")?, nats_args);
        let nats = spawn(&program, &args, &[], &nats_log, home.root())?;
        processes.push(Process { name: "nats", child: nats, log: nats_log, time_to_serving: None, addr: nats_url.clone() });
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", options.nats_port)).await.is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("nats-server did not start; see {}", home.path("logs/nats.log").display());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        if options.mesh {
            processes.push(start_envoy(home, options).await?);
        }
        let mut waits = Vec::new();
        for instance in instances {
            let (process, wait) = spawn_service(home, options, &endpoints, &public_key, instance)?;
            processes.push(process);
            waits.push(wait);
        }
        for result in futures::future::join_all(waits).await {
            let (name, elapsed) = result?;
            if let Some(p) = processes.iter_mut().find(|p| p.name == name) {
                p.time_to_serving = Some(elapsed);
            }
        }
        home.write_endpoints(&endpoints)?;
        Ok(LocalMesh { endpoints, processes })
    }

    /// Stops one service (SIGTERM: it drains and stops), e.g. `"store"`.
    pub async fn stop_service(&mut self, name: &str) {
        if let Some(i) = self.processes.iter().position(|p| p.name == name) {
            terminate(self.processes.remove(i)).await;
        }
    }

    /// Kills one service with SIGKILL: no drain, as in a crash.
    pub async fn kill_service(&mut self, name: &str) {
        if let Some(i) = self.processes.iter().position(|p| p.name == name) {
            let mut process = self.processes.remove(i);
            let _ = process.child.kill().await;
        }
    }

    /// Starts a stopped service again with its data; returns once it is
    /// SERVING, with the time that took from spawn.
    pub async fn start_service(&mut self, home: &Home, options: &LocalOptions, name: &str) -> Result<Duration> {
        let instance =
            instances(options).into_iter().find(|i| i.name == name).ok_or_else(|| anyhow!("no service process {name}"))?;
        let public_key = home.ensure_keys()?;
        let (process, wait) = spawn_service(home, options, &self.endpoints, &public_key, instance)?;
        self.processes.push(process);
        let (_, elapsed) = wait.await?;
        Ok(elapsed)
    }

    /// The process that exited, if one did.
    pub fn exited(&mut self) -> Option<(&'static str, std::process::ExitStatus, PathBuf)> {
        self.processes.iter_mut().find_map(|p| p.child.try_wait().ok().flatten().map(|status| (p.name, status, p.log.clone())))
    }

    /// Stops the services (SIGTERM: they drain and stop in order), then NATS.
    pub async fn stop(mut self, home: &Home) {
        home.clear_endpoints();
        let (infra, services): (Vec<_>, Vec<_>) = self.processes.drain(..).partition(|p| p.name == "nats" || p.name == "envoy");
        futures::future::join_all(services.into_iter().map(terminate)).await;
        futures::future::join_all(infra.into_iter().map(terminate)).await;
    }
}

/// Starts Envoy on the configuration rendered from istio/, in front of the
/// services' shifted ports, and waits until it is LIVE.
async fn start_envoy(home: &Home, options: &LocalOptions) -> Result<Process> {
    let mut endpoints = foodmesh_mesh::Endpoints::default();
    for instance in instances(options) {
        endpoints.add(instance.binary, "v1", format!("127.0.0.1:{}", options.service_port(instance.offset)));
    }
    let admin_port = options.base_port + ENVOY_ADMIN_OFFSET;
    let mesh = foodmesh_mesh::LocalMesh {
        admin_port,
        gateway_port: options.base_port,
        payment_port: options.base_port + 1,
        endpoints,
        weights: std::collections::BTreeMap::new(),
        health_check_interval: Some(HEALTH_CHECK_INTERVAL),
    };
    let config = foodmesh_mesh::envoy_config(&mesh)?;
    let path = home.path("envoy.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    let log = home.path("logs/envoy.log");
    let spawned = Instant::now();
    let child = spawn(&find_tool("envoy")?, &foodmesh_mesh::process::args(&path), &[], &log, home.root())?;
    while !foodmesh_mesh::process::is_live(admin_port).await {
        if spawned.elapsed() > foodmesh_mesh::process::LIVE_WITHIN {
            bail!("envoy did not become LIVE within {:?}; see {}", foodmesh_mesh::process::LIVE_WITHIN, log.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Process { name: "envoy", child, log, time_to_serving: Some(spawned.elapsed()), addr: format!("127.0.0.1:{admin_port}") })
}

async fn terminate(mut process: Process) {
    if let Some(pid) = process.child.id() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    }
    if tokio::time::timeout(Duration::from_secs(15), process.child.wait()).await.is_err() {
        let _ = process.child.kill().await;
    }
}

/// The CPU time (user + system) process `pid` used so far, from
/// `/proc/PID/stat`; Linux reports it in clock ticks of 10 ms.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// How long the threads of a process have been ready to run but waiting for
/// a core, summed over its threads' `/proc/<pid>/task/<tid>/schedstat`
/// (Linux with scheduler statistics; `None` elsewhere). Threads that have
/// ended are not counted, so take it over a span in which they live on.
pub fn core_wait(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let waits: Vec<u64> = tasks
        .flatten()
        .filter_map(|task| schedstat_wait_ns(&std::fs::read_to_string(task.path().join("schedstat")).ok()?))
        .collect();
    (!waits.is_empty()).then(|| Duration::from_nanos(waits.iter().sum()))
}

/// The second of schedstat's three figures: nanoseconds spent runnable on a
/// run queue (the first is time on a core, the third the slices run).
fn schedstat_wait_ns(line: &str) -> Option<u64> {
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The resident memory of a process, from `/proc` (Linux).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_server_shares_payments_core_not_orders() {
        let core = |name: &str| pinning(service_names().position(|n| n == name).expect("a service")).map(|(_, core)| core);
        match nats_pinning() {
            Some((_, nats)) => {
                assert_eq!(Some(nats), core("payment"));
                assert_eq!(Some(nats), core("notification"));
                assert_ne!(Some(nats), core("order"));
            }
            // One core, or no taskset: nothing is pinned.
            None => assert_eq!(core("payment"), None),
        }
    }

    #[test]
    fn the_wait_is_schedstats_second_figure() {
        assert_eq!(schedstat_wait_ns("3301042102 4601981116 157013\n"), Some(4_601_981_116));
        assert_eq!(schedstat_wait_ns("3301042102"), None);
        assert_eq!(schedstat_wait_ns(""), None);
    }

    #[test]
    fn a_busy_process_has_waited_for_a_core() {
        // Threads that each want a core for a while, more of them than this
        // machine has: some must queue, so the sum of waits grows.
        let Some(before) = core_wait(std::process::id()) else {
            eprintln!("no scheduler statistics on this kernel: nothing to check");
            return;
        };
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let spinners: Vec<_> = (0..threads)
            .map(|_| {
                std::thread::spawn(|| {
                    let until = Instant::now() + Duration::from_millis(200);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    // Read while this thread still lives: ended threads are not counted.
                    core_wait(std::process::id())
                })
            })
            .collect();
        let after: Vec<Duration> = spinners.into_iter().filter_map(|t| t.join().expect("spinner")).collect();
        let most = after.into_iter().max().expect("a reading");
        assert!(most > before, "no wait counted: {before:?} then {most:?}");
    }
}
