//! Prometheus metrics of a service, served as OpenMetrics text on
//! `GET /metrics` at `metrics.listen_addr` (off when empty).
//!
//! | metric | what |
//! |---|---|
//! | `foodmesh_rpc_requests_total{method,code}` | RPCs answered, by method and gRPC status |
//! | `foodmesh_rpc_duration_seconds{method}` | time to the response (for streams: to their start) |
//! | `foodmesh_outbox_backlog` | events committed and not yet acknowledged by JetStream |
//! | `foodmesh_consumer_pending{consumer}` | messages of the stream the consumer has not been given yet (lag) |
//! | `foodmesh_consumer_ack_pending{consumer}` | messages given and not yet acknowledged |
//! | `foodmesh_consumer_redelivered{consumer}` | messages delivered more than once and not yet acknowledged |
//! | `foodmesh_circuit_breaker_state{dependency}` | 0 closed, 1 half-open, 2 open (order, for payment) |
//! | `foodmesh_orders{status}` | orders in order's status view, by status |
//! | `foodmesh_db_writer_wait_seconds{urgency}` | SQLite: time a write waited for the one writer (`request`: a caller waits; `background`) |
//! | `foodmesh_db_writer_held_seconds{urgency}` | SQLite: time a write held the writer, so the others waited |
//! | `foodmesh_stage_duration_seconds{operation,stage}` | the stages of an operation (order's PlaceOrder: `attempt`, `charge`, `placement`) |
//!
//! RPC figures are recorded as requests finish; the gauges are sampled every
//! `metrics.sample_interval_ms` by one worker (a database count, JetStream's
//! consumer info, and what the service registered with [`Metrics::on_sample`]).

use std::{
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

/// Where and how often.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `host:port` of the `/metrics` endpoint; empty turns it off.
    pub listen_addr: String,
    /// How often the gauges are sampled.
    #[serde(deserialize_with = "crate::config::millis", rename = "sample_interval_ms")]
    pub sample_interval: Duration,
}

type Labels = Vec<(String, String)>;

/// A sample a service adds: `(metric, labels, value)`; the metric is one of
/// the families above (`orders`, `circuit_breaker_state`).
pub type Sample = (&'static str, Labels, i64);
type Sampler = Arc<dyn Fn() -> BoxFuture<'static, Vec<Sample>> + Send + Sync>;

/// A service's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    registry: Registry,
    rpc_requests: Family<Labels, Counter>,
    rpc_duration: Family<Labels, Histogram>,
    outbox_backlog: Gauge,
    consumer_pending: Family<Labels, Gauge>,
    consumer_ack_pending: Family<Labels, Gauge>,
    consumer_redelivered: Family<Labels, Gauge>,
    circuit_breaker_state: Family<Labels, Gauge>,
    orders: Family<Labels, Gauge>,
    writer: WriterMetrics,
    stage_duration: Family<Labels, Histogram>,
    samplers: Mutex<Vec<Sampler>>,
    listener: Mutex<Option<std::net::TcpListener>>,
    addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("service", &self.inner.service).field("addr", &self.inner.addr).finish()
    }
}

/// Latency buckets, seconds: 1 ms to 30 s.
const BUCKETS: [f64; 14] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// Buckets for the turns on SQLite's writer, seconds: most take well under
/// a millisecond, and the ones that matter for a request's latency take
/// tens of milliseconds.
const WRITER_BUCKETS: [f64; 12] = [0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// The histograms of the turns on SQLite's writer, by urgency.
#[derive(Debug)]
struct WriterMetrics {
    wait: Family<Labels, Histogram>,
    held: Family<Labels, Histogram>,
}

/// Each series of [`WriterMetrics`], looked up once: a turn is recorded
/// without building labels (see [`crate::db::WriterObserver`]).
#[derive(Debug)]
struct WriterSeries {
    /// (waited, held) for requests, then for background work.
    request: (Histogram, Histogram),
    background: (Histogram, Histogram),
}

impl WriterMetrics {
    fn series(&self) -> WriterSeries {
        let pair = |urgency: &str| {
            let labels = vec![("urgency".to_owned(), urgency.to_owned())];
            (self.wait.get_or_create(&labels).clone(), self.held.get_or_create(&labels).clone())
        };
        WriterSeries { request: pair("request"), background: pair("background") }
    }
}

impl WriterSeries {
    fn of(&self, urgency: crate::db::Urgency) -> &(Histogram, Histogram) {
        match urgency {
            crate::db::Urgency::Request => &self.request,
            crate::db::Urgency::Background => &self.background,
        }
    }
}

impl crate::db::WriterObserver for WriterSeries {
    fn waited(&self, urgency: crate::db::Urgency, waited: Duration) {
        self.of(urgency).0.observe(waited.as_secs_f64());
    }

    fn held(&self, urgency: crate::db::Urgency, held: Duration) {
        self.of(urgency).1.observe(held.as_secs_f64());
    }
}

impl Metrics {
    /// Metrics of `service`, with the endpoint bound now (so a taken port
    /// fails start-up with a message) and served by [`Metrics::serve`].
    pub fn new(service: &str, settings: &MetricsSettings) -> std::io::Result<Self> {
        let address = settings.listen_addr.trim();
        if address.is_empty() {
            return Ok(Self::with_listener(service, None));
        }
        let listener = std::net::TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(Self::with_listener(service, Some(listener)))
    }

    /// Metrics that are not served (tools, and tests of other things).
    pub fn disabled(service: &str) -> Self {
        Self::with_listener(service, None)
    }

    fn with_listener(service: &str, listener: Option<std::net::TcpListener>) -> Self {
        let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let mut registry = Registry::with_prefix("foodmesh");
        let rpc_requests = Family::<Labels, Counter>::default();
        let rpc_duration = Family::<Labels, Histogram>::new_with_constructor((|| Histogram::new(BUCKETS)) as fn() -> Histogram);
        let outbox_backlog = Gauge::default();
        let consumer_pending = Family::<Labels, Gauge>::default();
        let consumer_ack_pending = Family::<Labels, Gauge>::default();
        let consumer_redelivered = Family::<Labels, Gauge>::default();
        let circuit_breaker_state = Family::<Labels, Gauge>::default();
        let orders = Family::<Labels, Gauge>::default();
        registry.register("rpc_requests", "RPCs answered, by method and gRPC status code", rpc_requests.clone());
        registry.register("rpc_duration_seconds", "Time from request to response, by method", rpc_duration.clone());
        registry.register("outbox_backlog", "Events committed and not yet acknowledged by JetStream", outbox_backlog.clone());
        registry.register("consumer_pending", "Messages a durable consumer has not been given yet", consumer_pending.clone());
        registry.register("consumer_ack_pending", "Messages given and not yet acknowledged", consumer_ack_pending.clone());
        registry.register(
            "consumer_redelivered",
            "Messages delivered more than once and not yet acknowledged",
            consumer_redelivered.clone(),
        );
        registry.register(
            "circuit_breaker_state",
            "Circuit breaker in front of a dependency: 0 closed, 1 half-open, 2 open",
            circuit_breaker_state.clone(),
        );
        registry.register("orders", "Orders in the status view, by status", orders.clone());
        let writer_histograms =
            || Family::<Labels, Histogram>::new_with_constructor((|| Histogram::new(WRITER_BUCKETS)) as fn() -> Histogram);
        let writer = WriterMetrics { wait: writer_histograms(), held: writer_histograms() };
        let stage_duration = Family::<Labels, Histogram>::new_with_constructor((|| Histogram::new(BUCKETS)) as fn() -> Histogram);
        registry.register(
            "stage_duration_seconds",
            "Time spent in each stage of an operation, by operation and stage",
            stage_duration.clone(),
        );
        registry.register(
            "db_writer_wait_seconds",
            "SQLite: time a write waited for the one writer connection, by urgency (request or background)",
            writer.wait.clone(),
        );
        registry.register(
            "db_writer_held_seconds",
            "SQLite: time a write held the one writer connection while others waited, by urgency",
            writer.held.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                registry,
                rpc_requests,
                rpc_duration,
                outbox_backlog,
                consumer_pending,
                consumer_ack_pending,
                consumer_redelivered,
                circuit_breaker_state,
                orders,
                writer,
                stage_duration,
                samplers: Mutex::new(Vec::new()),
                listener: Mutex::new(listener),
                addr,
            }),
        }
    }

    /// The endpoint's address, when it is on.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.inner.addr
    }

    /// Whether anyone can read these metrics: off, nothing is recorded or
    /// sampled, so PlaceOrder's path and the database pay nothing for them.
    fn is_served(&self) -> bool {
        self.inner.addr.is_some()
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.inner.registry).is_err() {
            text.clear();
        }
        text
    }

    /// Records the turns on `db`'s SQLite writer, when these metrics are
    /// served and `db` is SQLite (PostgreSQL has no turns, and no series).
    pub fn observe_writer(&self, db: &crate::db::Database) {
        if self.is_served() && db.backend() == crate::db::Backend::Sqlite {
            db.observe_writer(Arc::new(self.inner.writer.series()));
        }
    }

    /// The timer of one stage of `operation` (nothing is recorded when these
    /// metrics are not served).
    pub fn stage(&self, operation: &str, stage: &str) -> StageTimer {
        if !self.is_served() {
            return StageTimer(None);
        }
        let labels = vec![("operation".to_owned(), operation.to_owned()), ("stage".to_owned(), stage.to_owned())];
        StageTimer(Some(self.inner.stage_duration.get_or_create(&labels).clone()))
    }

    /// Counts one answered RPC.
    pub fn record_rpc(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let labels = vec![("method".to_owned(), method.to_owned()), ("code".to_owned(), format!("{code:?}"))];
        self.inner.rpc_requests.get_or_create(&labels).inc();
        let labels = vec![("method".to_owned(), method.to_owned())];
        self.inner.rpc_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// Adds a sampler of the service's own gauges (run with the others).
    pub fn on_sample(&self, sampler: impl Fn() -> BoxFuture<'static, Vec<Sample>> + Send + Sync + 'static) {
        if let Ok(mut samplers) = self.inner.samplers.lock() {
            samplers.push(Arc::new(sampler));
        }
    }

    fn set(&self, (metric, labels, value): Sample) {
        let family = match metric {
            "orders" => &self.inner.orders,
            "circuit_breaker_state" => &self.inner.circuit_breaker_state,
            _ => return,
        };
        family.get_or_create(&labels).set(value);
    }

    /// Samples the gauges every `interval` until `stop`: the outbox backlog
    /// from `db`, this service's consumers (durable names start with the
    /// service's name) from JetStream, and the service's own samplers.
    pub async fn sample(
        self,
        db: crate::db::Database,
        js: async_nats::jetstream::Context,
        interval: Duration,
        stop: CancellationToken,
    ) {
        if !self.is_served() {
            // Wait for the stop like every worker, so ending is not mistaken for dying.
            stop.cancelled().await;
            return;
        }
        loop {
            if let Ok(row) =
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").fetch_one(db.reader()).await
            {
                self.inner.outbox_backlog.set(row);
            }
            self.sample_consumers(&js).await;
            let samplers: Vec<Sampler> = self.inner.samplers.lock().map(|s| s.clone()).unwrap_or_default();
            for sampler in samplers {
                for sample in sampler().await {
                    self.set(sample);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    async fn sample_consumers(&self, js: &async_nats::jetstream::Context) {
        use futures::TryStreamExt as _;
        let prefix = format!("{}-", self.inner.service);
        for spec in crate::messaging::ALL_STREAMS {
            let Ok(stream) = js.get_stream(spec.name).await else { continue };
            let Ok(infos) = stream.consumers().try_collect::<Vec<_>>().await else { continue };
            for info in infos.into_iter().filter(|i| i.name.starts_with(&prefix)) {
                let labels = vec![("consumer".to_owned(), info.name.clone())];
                self.inner.consumer_pending.get_or_create(&labels).set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                self.inner.consumer_ack_pending.get_or_create(&labels).set(i64::try_from(info.num_ack_pending).unwrap_or(0));
                self.inner.consumer_redelivered.get_or_create(&labels).set(i64::try_from(info.num_redelivered).unwrap_or(0));
            }
        }
    }

    /// Serves `GET /metrics` until `stop` (nothing when the endpoint is off).
    pub async fn serve(self, stop: CancellationToken) {
        let listener = self.inner.listener.lock().ok().and_then(|mut l| l.take());
        let Some(listener) = listener.and_then(|l| tokio::net::TcpListener::from_std(l).ok()) else {
            // Off: wait for the stop like every worker, so ending is not mistaken for dying.
            stop.cancelled().await;
            return;
        };
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
            };
            let metrics = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, std::convert::Infallible>(respond(&metrics, request.uri().path())) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }
}

fn respond(metrics: &Metrics, path: &str) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) = if path == "/metrics" {
        (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.render())
    } else {
        (404, "text/plain; charset=utf-8", "only /metrics is served here\n".to_owned())
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    response
}

/// Records how long one stage of an operation took (see [`Metrics::stage`]);
/// the series is looked up once, so recording builds no labels.
#[derive(Debug, Clone, Default)]
pub struct StageTimer(Option<Histogram>);

impl StageTimer {
    /// Records the time since `started`.
    pub fn since(&self, started: Instant) {
        if let Some(histogram) = &self.0 {
            histogram.observe(started.elapsed().as_secs_f64());
        }
    }
}

/// Records every RPC the server answers (a tower layer over the routes).
#[derive(Debug, Clone)]
pub struct RpcMetricsLayer {
    metrics: Option<Metrics>,
}

impl RpcMetricsLayer {
    /// A layer recording into `metrics` (nothing when `None` or not served).
    pub fn new(metrics: Option<Metrics>) -> Self {
        Self { metrics: metrics.filter(Metrics::is_served) }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner, metrics: self.metrics.clone() }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Option<Metrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Health and reflection are the probes' and tools' traffic, not the API's.
        let observed = self.metrics.clone().and_then(|metrics| {
            let method = request.uri().path().trim_start_matches('/');
            (!method.starts_with("grpc.")).then(|| (metrics, method.to_owned()))
        });
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            if let Some((metrics, method)) = observed {
                // An error is answered trailers-only: its status is in the
                // headers. A response that starts normally is counted OK.
                let code = match &response {
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i32>().ok())
                        .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                    Err(_) => tonic::Code::Internal,
                };
                metrics.record_rpc(&method, code, started.elapsed());
            }
            response
        })
    }
}
