//! `foodmesh load`: drives PlaceOrder with many concurrent clients and prints a
//! siege-style summary. Always bounded (by time or by request count), always
//! against loopback endpoints from the mesh's home.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use foodmesh_platform::{auth::Principal, grpc::authed};
use foodmesh_proto::order::v1::{ListOrdersRequest, PlaceOrderLine, PlaceOrderRequest, order_service_client::OrderServiceClient};
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::home::{Home, ensure_loopback};

/// The failure of an open loop's request that was still unsent a deadline
/// after the end of the run.
pub const NOT_SENT: &str = "NotSentBeforeTheDeadline";

/// What to drive.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// Requests in flight at once (at most, with --rate).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Offer this many requests per second (open loop), instead of sending the
    /// next request as soon as one returns. Latency is then measured from each
    /// request's scheduled time, and every request due within the duration is
    /// sent, however late, so a stall cannot hide the requests it delayed.
    /// Those still unsent one deadline (--timeout-ms) after the end count as
    /// failed, unsent, so the run stays bounded.
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Stop after this many requests instead (still bounded by the duration).
    #[arg(long)]
    pub requests: Option<u64>,
    /// How many distinct customers place orders (a token is minted for each).
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Each request's deadline, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Also print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// What each request does.
    #[arg(long, value_enum, default_value_t = Scenario::Place)]
    pub scenario: Scenario,
}

impl LoadArgs {
    /// A closed-loop run of `scenario` at `concurrency` for `duration_secs`,
    /// with the command's other defaults (1,000 customers, a 5 s deadline, 4
    /// connections): what the benchmarks start from.
    pub fn closed_loop(concurrency: usize, duration_secs: u64, scenario: Scenario) -> Self {
        LoadArgs {
            concurrency,
            rate: None,
            duration_secs,
            requests: None,
            customers: 1000,
            timeout_ms: 5000,
            connections: 4,
            json: false,
            scenario,
        }
    }
}

/// What the load does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// PlaceOrder, one menu item from one of three stores, paid with the test card.
    Place,
    /// ListOrders of the customer (reads from order's own view).
    Read,
    /// One PlaceOrder in five, ListOrders otherwise: an app where people
    /// mostly look at their orders.
    Mixed,
}

/// One request: when it was due (from the start), how long its answer took,
/// and whether it succeeded.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was sent (scheduled, with --rate), from the start of the run.
    pub sent: Duration,
    /// From then to its answer.
    pub latency: Duration,
    /// Whether it succeeded.
    pub ok: bool,
}

/// What a load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// Requests answered (successfully or not).
    pub transactions: u64,
    /// Requests that placed an order.
    pub successes: u64,
    /// Failed requests by gRPC status code.
    pub failures: BTreeMap<String, u64>,
    /// Wall time of the run, seconds.
    pub elapsed_secs: f64,
    /// Successful transactions per second (placed orders/s with `place`).
    pub rate: f64,
    /// Successes / transactions, percent.
    pub availability_pct: f64,
    /// Response times, milliseconds.
    pub latency_ms: Percentiles,
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// Of `samples` (sorted here).
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let at = |q: f64| ms(samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]);
        let sum: Duration = samples.iter().sum();
        Percentiles {
            mean: ms(sum) / samples.len() as f64,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: ms(samples[samples.len() - 1]),
        }
    }
}

/// The menu items the load orders, one store and item per request in turn.
const ORDERS: [(&str, &str); 6] = [
    ("seoul-bbq", "bulgogi"),
    ("pizza-napoli", "margherita"),
    ("green-bowl", "salmon-poke"),
    ("seoul-bbq", "bibimbap"),
    ("pizza-napoli", "diavola"),
    ("green-bowl", "falafel-bowl"),
];

/// A PlaceOrderRequest for the given lines.
pub fn place_request(request_id: &str, store_id: &str, items: &[(&str, i32)], card: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        request_id: request_id.to_owned(),
        store_id: store_id.to_owned(),
        lines: items.iter().map(|(id, q)| PlaceOrderLine { menu_item_id: (*id).to_owned(), quantity: *q }).collect(),
        delivery_address: "1 Load Street, Seoul".to_owned(),
        payment_token: card.to_owned(),
    }
}

/// `foodmesh load`.
pub async fn run(home: &Home, args: &LoadArgs) -> Result<LoadReport> {
    let endpoints = home.endpoints()?;
    let report = drive(home, &endpoints.order, args, None).await?;
    if let Some(rate) = args.rate {
        println!("Offered rate:               {rate:>10.1} /s (open loop, latency from each request's scheduled time)");
    }
    print_report(&report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(report)
}

/// Drives the load; every placed order's id is sent to `placed` with the
/// moment its reply arrived.
pub async fn drive(
    home: &Home,
    order_addr: &str,
    args: &LoadArgs,
    placed: Option<mpsc::UnboundedSender<(String, Instant)>>,
) -> Result<LoadReport> {
    Ok(drive_all(home, order_addr, args, placed).await?.0)
}

/// Drives the load like [`drive`] and returns every request's [`Sample`]
/// too, in the order they were due.
pub async fn drive_with_samples(
    home: &Home,
    order_addr: &str,
    args: &LoadArgs,
    placed: Option<mpsc::UnboundedSender<(String, Instant)>>,
) -> Result<(LoadReport, Vec<Sample>)> {
    drive_all(home, order_addr, args, placed).await
}

async fn drive_all(
    home: &Home,
    order_addr: &str,
    args: &LoadArgs,
    placed: Option<mpsc::UnboundedSender<(String, Instant)>>,
) -> Result<(LoadReport, Vec<Sample>)> {
    ensure_loopback(order_addr, "load runs")?;
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..args.customers.max(1))
            .map(|i| home.bearer(&Principal::Customer { customer_id: format!("load-{i}") }))
            .collect::<Result<_>>()?,
    );
    let channels: Vec<Channel> = (0..args.connections.max(1))
        .map(|_| Ok(Endpoint::from_shared(format!("http://{order_addr}"))?.tcp_nodelay(true).connect_lazy()))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.duration_secs);
    let issued = Arc::new(AtomicU64::new(0));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let limit = args.requests.unwrap_or(u64::MAX);
    let rate = args.rate.filter(|r| *r > 0.0);
    let timeout = Duration::from_millis(args.timeout_ms);
    let scenario = args.scenario;

    let progress = {
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
                let secs = started.elapsed().as_secs_f64();
                eprint!("\r  {secs:6.1}s  {ok:>8} ok      {failed:>6} failed  {:>8.1}/s ", ok as f64 / secs);
            }
        })
    };
    let workers = (0..args.concurrency.max(1)).map(|worker| {
        let mut client = OrderServiceClient::new(channels[worker % channels.len()].clone());
        let (tokens, issued, ok, failed, placed) = (tokens.clone(), issued.clone(), ok.clone(), failed.clone(), placed.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut failures: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                // Open loop: every request due before the end is sent, even
                // when the workers get to it late (after a stall): leaving
                // out the latest requests would leave out the slowest.
                if n >= limit || (rate.is_none() && Instant::now() >= stop_at) {
                    break;
                }
                // Open loop: request n is due at start + n / rate, whether or not
                // earlier ones have returned; its latency counts from then.
                let scheduled = match rate {
                    Some(rate) => {
                        let due = started + Duration::from_secs_f64(n as f64 / rate);
                        if due >= stop_at {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                // So far behind that the end of the run and a whole deadline
                // have passed: the request is counted as timed out, unsent,
                // which keeps a run against a hung mesh bounded in time.
                if rate.is_some() && Instant::now() >= stop_at + timeout {
                    samples.push(Sample { sent: scheduled - started, latency: scheduled.elapsed(), ok: false });
                    failed.fetch_add(1, Ordering::Relaxed);
                    *failures.entry(NOT_SENT.to_owned()).or_default() += 1;
                    continue;
                }
                let token = &tokens[(n % tokens.len() as u64) as usize];
                let place = match scenario {
                    Scenario::Place => true,
                    Scenario::Read => false,
                    Scenario::Mixed => n % 5 == 0,
                };
                let result = if place {
                    let (store, item) = ORDERS[(n % ORDERS.len() as u64) as usize];
                    let request =
                        place_request(&uuid::Uuid::new_v4().to_string(), store, &[(item, 1 + (n % 3) as i32)], "tok_visa");
                    let mut request = authed(request, token);
                    request.set_timeout(timeout);
                    match tokio::time::timeout(timeout, client.place_order(request)).await {
                        Ok(Ok(reply)) => Ok(reply.into_inner().order.map(|o| o.order_id)),
                        Ok(Err(status)) => Err(format!("{:?}", status.code())),
                        Err(_) => Err("ClientTimeout".to_owned()),
                    }
                } else {
                    let mut request = authed(ListOrdersRequest { page_size: 10, ..ListOrdersRequest::default() }, token);
                    request.set_timeout(timeout);
                    match tokio::time::timeout(timeout, client.list_orders(request)).await {
                        Ok(Ok(_)) => Ok(None),
                        Ok(Err(status)) => Err(format!("{:?}", status.code())),
                        Err(_) => Err("ClientTimeout".to_owned()),
                    }
                };
                samples.push(Sample { sent: scheduled - started, latency: scheduled.elapsed(), ok: result.is_ok() });
                match result {
                    Ok(order_id) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if let (Some(placed), Some(order_id)) = (&placed, order_id) {
                            let _ = placed.send((order_id, Instant::now()));
                        }
                    }
                    Err(code) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        *failures.entry(code).or_default() += 1;
                    }
                }
            }
            (samples, failures)
        })
    });
    let results = futures::future::join_all(workers).await;
    progress.abort();
    eprintln!();
    let elapsed = started.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for result in results {
        let (s, f) = result?;
        samples.extend(s);
        for (code, count) in f {
            *failures.entry(code).or_default() += count;
        }
    }
    let successes = ok.load(Ordering::Relaxed);
    let transactions = samples.len() as u64;
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    let report = LoadReport {
        transactions,
        successes,
        failures,
        elapsed_secs: elapsed,
        rate: successes as f64 / elapsed,
        availability_pct: if transactions == 0 { 0.0 } else { 100.0 * successes as f64 / transactions as f64 },
        latency_ms: Percentiles::of(&mut latencies),
    };
    samples.sort_by_key(|s| s.sent);
    Ok((report, samples))
}

/// Prints a siege-style summary.
pub fn print_report(r: &LoadReport) {
    let l = &r.latency_ms;
    println!("Transactions:               {:>10}", r.transactions);
    println!("Availability:               {:>10.2} %", r.availability_pct);
    println!("Elapsed time:               {:>10.2} s", r.elapsed_secs);
    println!("Transaction rate:           {:>10.1} successful requests/s", r.rate);
    println!("Response time mean:         {:>10.2} ms", l.mean);
    println!("Response time p50/p90/p99:  {:>7.2} / {:.2} / {:.2} ms", l.p50, l.p90, l.p99);
    println!("Longest transaction:        {:>10.2} ms", l.max);
    println!("Successful transactions:    {:>10}", r.successes);
    println!("Failed transactions:        {:>10}", r.transactions - r.successes);
    for (code, count) in &r.failures {
        println!("  {code:<24} {count:>10}");
    }
}

/// The same-run baseline: gRPC health checks (the same tonic stack, no work
/// behind it) with `concurrency` in flight for `duration`. Returns checks per second.
pub async fn health_baseline(addr: &str, concurrency: usize, duration: Duration) -> Result<f64> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channels: Vec<Channel> = (0..4)
        .map(|_| Ok(Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect_lazy()))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let workers = (0..concurrency).map(|i| {
        let mut client = HealthClient::new(channels[i % channels.len()].clone());
        let done = done.clone();
        tokio::spawn(async move {
            while started.elapsed() < duration {
                if client.check(HealthCheckRequest { service: String::new() }).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    });
    futures::future::join_all(workers).await;
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use foodmesh_proto::order::v1::{
        CancelOrderRequest, CancelOrderResponse, GetOrderRequest, GetOrderResponse, ListOrdersResponse, PlaceOrderResponse,
        WatchOrderRequest, WatchOrderResponse,
        order_service_server::{OrderService, OrderServiceServer},
    };
    use tonic::{Request, Response, Status};

    use super::*;

    /// An order service that takes the given time to answer each PlaceOrder: the load
    /// generator under test needs a server slower than its schedule, not an
    /// order service.
    struct Slow(Duration);

    #[tonic::async_trait]
    impl OrderService for Slow {
        type WatchOrderStream = futures::stream::Empty<Result<WatchOrderResponse, Status>>;

        async fn place_order(&self, _: Request<PlaceOrderRequest>) -> Result<Response<PlaceOrderResponse>, Status> {
            tokio::time::sleep(self.0).await;
            Ok(Response::new(PlaceOrderResponse::default()))
        }
        async fn cancel_order(&self, _: Request<CancelOrderRequest>) -> Result<Response<CancelOrderResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn get_order(&self, _: Request<GetOrderRequest>) -> Result<Response<GetOrderResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn list_orders(&self, _: Request<ListOrdersRequest>) -> Result<Response<ListOrdersResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
        async fn watch_order(&self, _: Request<WatchOrderRequest>) -> Result<Response<Self::WatchOrderStream>, Status> {
            Err(Status::unimplemented("not in this test"))
        }
    }

    /// A [`Slow`] order service taking 50 ms per PlaceOrder on a free
    /// loopback port, and a mesh home whose keys sign the load's tokens.
    async fn slow_order_service() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>, tempfile::TempDir, Home) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(OrderServiceServer::new(Slow(Duration::from_millis(50))))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let home = Home::open(dir.path()).expect("home");
        home.ensure_keys().expect("keys");
        (addr, server, dir, home)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_sends_every_request_due_and_times_the_late_ones_from_when_they_were_due() {
        let (addr, server, _dir, home) = slow_order_service().await;
        // 100 requests due in 1 s; two in flight at 50 ms each get through
        // 40 a second, so the run falls behind its schedule from the start.
        let args = LoadArgs { rate: Some(100.0), customers: 4, connections: 1, ..LoadArgs::closed_loop(2, 1, Scenario::Place) };
        let (report, samples) = drive_with_samples(&home, &addr.to_string(), &args, None).await.expect("load runs");
        server.abort();

        assert_eq!(report.transactions, 100, "every request due in the second is sent: {report:?}");
        assert_eq!(samples.len(), 100);
        let last = samples.last().expect("a last request");
        assert!(last.sent < Duration::from_secs(1), "{last:?}");
        // Sent about 2.5 s in: its wait in the queue is part of its latency.
        assert!(last.latency >= Duration::from_millis(1200), "{last:?}");
        assert!(report.latency_ms.p99 >= 1200.0, "{report:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_loop_that_falls_too_far_behind_ends_a_deadline_after_the_run_and_counts_the_rest_as_failed() {
        let (addr, server, _dir, home) = slow_order_service().await;
        // As above, with a 300 ms deadline: sending all 100 would take 2.5 s.
        let args = LoadArgs {
            rate: Some(100.0),
            customers: 4,
            connections: 1,
            timeout_ms: 300,
            ..LoadArgs::closed_loop(2, 1, Scenario::Place)
        };
        let (report, samples) = drive_with_samples(&home, &addr.to_string(), &args, None).await.expect("load runs");
        server.abort();

        assert!(report.elapsed_secs < 1.8, "the run ends about 1.3 s in: {report:?}");
        assert_eq!(report.transactions, 100, "every request due is counted: {report:?}");
        let unsent = report.failures.get(NOT_SENT).copied().unwrap_or(0);
        assert!(unsent >= 30, "those left a deadline after the end failed unsent: {report:?}");
        assert_eq!(report.successes + unsent, 100, "{report:?}");
        // The unsent ones are the latest, and count as slow as they were late.
        assert!(samples.iter().rev().take(usize::try_from(unsent).expect("fits")).all(|s| !s.ok), "{samples:?}");
        assert!(samples.last().is_some_and(|s| s.latency >= Duration::from_millis(300)), "{samples:?}");
    }
}
