//! The gRPC side every service shares: the server host (health, reflection,
//! readiness gate, graceful stop) and the helpers that build rich statuses.
//!
//! Each service keeps its own error enum and one `From<Error> for Status`; the
//! helpers here only make sure every status carries an `ErrorInfo` with a
//! stable reason, and the right extra detail (BadRequest, RetryInfo).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    body::Body,
    server::NamedService,
    service::RoutesBuilder,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::{auth::AuthError, validation::Violations};

/// How a service's gRPC server listens and behaves.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Where to listen, for example `127.0.0.1:50051`. Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The longest a unary RPC may run before the server answers CANCELLED.
    #[serde(deserialize_with = "crate::config::millis", rename = "request_timeout_ms")]
    pub request_timeout: Duration,
    /// How long to keep serving after a stop signal while reporting NOT_SERVING,
    /// so load balancers stop sending new requests before the listener closes.
    #[serde(deserialize_with = "crate::config::millis", rename = "drain_ms")]
    pub drain: Duration,
    /// The largest request message accepted, in bytes. Far below tonic's 4 MiB
    /// default: no foodmesh request comes close, and big ones are an attack.
    pub max_request_bytes: usize,
}

/// Builds a status whose `ErrorInfo` carries `reason` and `domain`, plus any
/// other details given.
pub fn status(code: Code, message: impl Into<String>, domain: &str, reason: &str, details: ErrorDetails) -> Status {
    status_with_metadata(code, message, domain, reason, &[], details)
}

/// Like [`status`], with `ErrorInfo.metadata` entries (for example the id of
/// the payment that was declined).
pub fn status_with_metadata(
    code: Code,
    message: impl Into<String>,
    domain: &str,
    reason: &str,
    metadata: &[(&str, &str)],
    mut details: ErrorDetails,
) -> Status {
    let metadata: std::collections::HashMap<String, String> =
        metadata.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    details.set_error_info(reason, domain, metadata);
    Status::with_error_details(code, message, details)
}

/// INVALID_ARGUMENT with a `BadRequest` naming every bad field, reason
/// `INVALID_REQUEST`.
pub fn invalid_argument(domain: &str, violations: &Violations) -> Status {
    let fields: Vec<FieldViolation> = violations.iter().map(|v| FieldViolation::new(&v.field, &v.description)).collect();
    let message = format!("invalid request: {violations}");
    status(Code::InvalidArgument, message, domain, "INVALID_REQUEST", ErrorDetails::with_bad_request(fields))
}

/// UNAVAILABLE with a `RetryInfo` telling the client when to try again.
pub fn unavailable(domain: &str, reason: &str, message: impl Into<String>, retry_after: Duration) -> Status {
    status(Code::Unavailable, message, domain, reason, ErrorDetails::with_retry_info(Some(retry_after)))
}

/// UNAUTHENTICATED for a missing or bad token, PERMISSION_DENIED for a token of
/// the wrong role.
pub fn auth_status(domain: &str, err: &AuthError) -> Status {
    let code = match err {
        AuthError::WrongRole { .. } => Code::PermissionDenied,
        _ => Code::Unauthenticated,
    };
    status(code, err.to_string(), domain, err.reason(), ErrorDetails::new())
}

/// A database failure: UNAVAILABLE (retry shortly) when the database cannot
/// be reached or is saturated, INTERNAL otherwise.
pub fn database_status(domain: &str, err: &sqlx::Error) -> Status {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            tracing::warn!(error = %err, "database unavailable");
            unavailable(domain, "DATABASE_UNAVAILABLE", "the database is unavailable; retry shortly", Duration::from_secs(1))
        }
        other => internal(domain, other),
    }
}

/// INTERNAL with a generic message and a reference; the full cause chain goes
/// to the log under that reference, never to the client.
pub fn internal(domain: &str, err: &(dyn std::error::Error + 'static)) -> Status {
    let reference = uuid::Uuid::new_v4().simple().to_string();
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    tracing::error!(reference = %reference, error = %chain, "internal error");
    status(Code::Internal, format!("internal error (reference {reference})"), domain, "INTERNAL", ErrorDetails::new())
}

/// A request carrying `authorization` metadata (`Bearer <token>`), for clients.
///
/// # Panics
/// If `authorization` is not printable ASCII, which a bearer token always is.
#[allow(clippy::expect_used, reason = "tokens are ASCII by construction; a panic here is a caller bug")]
pub fn authed<T>(message: T, authorization: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", authorization.parse().expect("an ASCII authorization value"));
    request
}

/// When the caller stops waiting, from its `grpc-timeout` header (gRPC
/// propagates a client's deadline this way), so work done on its behalf, such
/// as a call to another service, never outlives it.
pub fn deadline<T>(request: &tonic::Request<T>) -> Option<std::time::Instant> {
    let header = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    parse_grpc_timeout(header).map(|timeout| std::time::Instant::now() + timeout)
}

fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Health and the readiness gate, switched together.
#[derive(Clone)]
pub struct Readiness {
    health: HealthReporter,
    open: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    services: Arc<Vec<&'static str>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("serving", &self.is_serving()).finish()
    }
}

impl Readiness {
    /// Reports SERVING for the server ("") and every service, and lets
    /// requests through.
    pub async fn set_serving(&self) {
        self.set(ServingStatus::Serving).await;
        self.open.store(true, Ordering::Release);
    }

    /// Reports NOT_SERVING. Requests still go through: a stopping service
    /// finishes what it is sent during its drain period.
    pub async fn set_not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    /// Reports NOT_SERVING for good: the service is stopping, and nothing
    /// the watchdogs report makes it SERVING again.
    pub async fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.set_not_serving().await;
    }

    /// Follows the dependencies (see [`crate::health`]): NOT_SERVING while
    /// one is down, SERVING again when it is back, unless draining.
    pub async fn set_dependencies_ok(&self, ok: bool) {
        if self.draining.load(Ordering::Acquire) {
            return;
        }
        self.set(if ok { ServingStatus::Serving } else { ServingStatus::NotServing }).await;
    }

    /// The [`crate::health::LIVENESS`] entry: NOT_SERVING when the process is wedged.
    pub async fn set_alive(&self, alive: bool) {
        let status = if alive { ServingStatus::Serving } else { ServingStatus::NotServing };
        self.health.set_service_status(crate::health::LIVENESS, status).await;
    }

    /// Whether the service has reported SERVING at least once.
    pub fn is_serving(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    async fn set(&self, status: ServingStatus) {
        self.health.set_service_status("", status).await;
        for name in self.services.iter() {
            self.health.set_service_status(*name, status).await;
        }
    }
}

/// A bound gRPC listener that serves health (NOT_SERVING until told otherwise)
/// and reflection from the moment it starts.
#[derive(Debug)]
pub struct GrpcHost {
    listener: TcpListener,
    local_addr: SocketAddr,
    settings: ServerSettings,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    metrics: Option<crate::metrics::Metrics>,
}

impl GrpcHost {
    /// Binds the listener, so the port is known (and reachable) before the
    /// service is ready.
    pub async fn bind(settings: &ServerSettings) -> std::io::Result<Self> {
        let listener = TcpListener::bind(settings.listen_addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            settings: settings.clone(),
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            metrics: None,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Records every RPC's method, status and duration in `metrics`.
    pub fn observe(&mut self, metrics: crate::metrics::Metrics) -> &mut Self {
        self.metrics = Some(metrics);
        self
    }

    /// Adds an application service; its health status follows [`Readiness`].
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Error = Infallible, Response = http::Response<Body>>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Starts serving in the background until `stop` is cancelled, then
    /// finishes the requests in flight. Returns the readiness switch (starting
    /// NOT_SERVING) and the server task.
    pub async fn spawn(
        mut self,
        stop: CancellationToken,
    ) -> Result<(Readiness, JoinHandle<Result<(), tonic::transport::Error>>), tonic_reflection::server::Error> {
        let (health, health_service) = tonic_health::server::health_reporter();
        let readiness = Readiness {
            health,
            open: Arc::new(AtomicBool::new(false)),
            draining: Arc::new(AtomicBool::new(false)),
            services: Arc::new(self.services.clone()),
        };
        // tonic-health starts the empty service name as SERVING; a service is not
        // ready until its migrations ran and its broker connection is up.
        readiness.set_not_serving().await;
        // Alive from the start: initialising (which may wait for the database
        // or NATS) is the startup probe's business, not a reason to restart.
        readiness.set_alive(true).await;

        let reflection_v1 = reflection(&self.services).build_v1()?;
        let reflection_v1alpha = reflection(&self.services).build_v1alpha()?;
        self.routes.add_service(health_service).add_service(reflection_v1).add_service(reflection_v1alpha);

        let gate = ReadinessGateLayer { open: readiness.open.clone() };
        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let server = Server::builder()
            // Bounds unary work; streams (WatchOrder) end on their own.
            .timeout(self.settings.request_timeout)
            // Finds dead peers behind NATs and idle load balancers.
            .http2_keepalive_interval(Some(Duration::from_secs(20)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            // Each request's root span: named after the method for tracing
            // backends, continuing the caller's trace (W3C traceparent).
            .trace_fn(|request| {
                let path = request.uri().path();
                let span = tracing::info_span!(
                    "grpc",
                    rpc = %path,
                    otel.name = %path.trim_start_matches('/'),
                    otel.kind = "server",
                    trace_id = tracing::field::Empty,
                );
                crate::telemetry::continue_from_headers(&span, request.headers());
                span
            })
            // Counted first, so a request refused at the gate counts too.
            .layer(crate::metrics::RpcMetricsLayer::new(self.metrics.clone()))
            // Requests wait for readiness: nothing runs before migrations.
            .layer(gate)
            // tonic's own answers to a body that is not the request message
            // or is too large, in the terms of every other error.
            .layer(ClearDecodeErrorsLayer)
            .add_routes(self.routes.routes())
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned());
        Ok((readiness, tokio::spawn(server)))
    }
}

/// The services every port serves beside its application's (added in
/// [`GrpcHost::spawn`]), which reflection lists with them.
const INFRASTRUCTURE_SERVICES: [&str; 3] =
    ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// A reflection builder that lists exactly the services this port serves.
/// The descriptor set holds every foodmesh contract (types are shared across
/// files), and by default reflection lists every service in it: a `grpcurl
/// list` on payment's port would offer OrderService, which answers
/// UNIMPLEMENTED there. Both reflection versions' files are registered in both
/// builders, so either version can describe the other, and so are the error
/// details, so a reflection client decodes an error's `ErrorInfo` and
/// `BadRequest` instead of printing their bytes.
fn reflection(services: &[&'static str]) -> tonic_reflection::server::Builder<'static> {
    let builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(foodmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(foodmesh_proto::ERROR_DETAILS_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    services.iter().chain(INFRASTRUCTURE_SERVICES.iter()).fold(builder, |builder, name| builder.with_service_name(*name))
}

/// Answers UNAVAILABLE to application RPCs until the service is ready; health
/// and reflection always pass.
#[derive(Debug, Clone)]
struct ReadinessGateLayer {
    open: Arc<AtomicBool>,
}

impl<S> tower::Layer<S> for ReadinessGateLayer {
    type Service = ReadinessGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReadinessGate { inner, open: self.open.clone() }
    }
}

#[derive(Debug, Clone)]
struct ReadinessGate<S> {
    inner: S,
    open: Arc<AtomicBool>,
}

impl<S, B> tower::Service<http::Request<B>> for ReadinessGate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::Either<S::Future, std::future::Ready<Result<http::Response<Body>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let always_open = path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.");
        if always_open || self.open.load(Ordering::Acquire) {
            futures::future::Either::Left(self.inner.call(request))
        } else {
            let status = unavailable(
                &domain_of_path(path),
                "NOT_READY",
                "the service is starting; retry shortly",
                Duration::from_millis(500),
            );
            futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
        }
    }
}

/// The `ErrorInfo.domain` of an RPC from its path: `/foodmesh.order.v1.OrderService/PlaceOrder`
/// gives `order.foodmesh.dev`, as the service's own errors do.
fn domain_of_path(path: &str) -> String {
    let package = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    match package.split('.').collect::<Vec<_>>().as_slice() {
        ["foodmesh", context, ..] => format!("{context}.foodmesh.dev"),
        _ => "foodmesh.dev".to_owned(),
    }
}

/// tonic's codec answers a body that does not decode as the request message
/// with INTERNAL, and one over the size limit with OUT_OF_RANGE, both without
/// an `ErrorInfo`. Both are the client's doing: this layer turns the first
/// into INVALID_ARGUMENT (`MALFORMED_REQUEST`) and the second into
/// RESOURCE_EXHAUSTED (`MESSAGE_TOO_LARGE`, the code gRPC specifies for it),
/// keeping tonic's description. tonic answers both before the handler runs,
/// as a trailers-only response, so the status is in the response's headers.
/// `tests/hostile_input.rs` fails if a tonic upgrade changes these messages.
#[derive(Debug, Clone, Copy)]
struct ClearDecodeErrorsLayer;

impl<S> tower::Layer<S> for ClearDecodeErrorsLayer {
    type Service = ClearDecodeErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClearDecodeErrors { inner }
    }
}

#[derive(Debug, Clone)]
struct ClearDecodeErrors<S> {
    inner: S,
}

/// tonic's message for a body prost cannot decode (`tonic_prost::codec`).
const DECODE_ERROR_PREFIX: &str = "failed to decode Protobuf message";
/// tonic's message for a body over `max_decoding_message_size`.
const TOO_LARGE_PREFIX: &str = "Error, decoded message length too large";

/// The clear status for one of tonic's decoding answers, if `status` is one.
fn clear_decode_error(status: &Status, path: &str) -> Option<Status> {
    let domain = domain_of_path(path);
    let message = status.message();
    match status.code() {
        Code::Internal if message.starts_with(DECODE_ERROR_PREFIX) => Some(self::status(
            Code::InvalidArgument,
            format!("the request body is not a valid request message: {message}"),
            &domain,
            "MALFORMED_REQUEST",
            ErrorDetails::new(),
        )),
        Code::OutOfRange if message.starts_with(TOO_LARGE_PREFIX) => {
            Some(self::status(Code::ResourceExhausted, message.to_owned(), &domain, "MESSAGE_TOO_LARGE", ErrorDetails::new()))
        }
        _ => None,
    }
}

impl<S, B> tower::Service<http::Request<B>> for ClearDecodeErrors<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let clear = Status::from_header_map(response.headers()).and_then(|status| clear_decode_error(&status, &path));
            Ok(clear.map_or(response, Status::into_http))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit_and_garbage_is_ignored() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        for bad in ["", "S", "10", "1x", "-1S", "1234567890S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn invalid_argument_carries_every_violation_and_a_reason() {
        let mut v = Violations::new();
        v.add("a", "is required");
        v.add("b[0].c", "is too long");
        let status = invalid_argument("x.foodmesh.dev", &v);
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<_> =
            status.get_details_bad_request().expect("BadRequest").field_violations.into_iter().map(|f| f.field).collect();
        assert_eq!(fields, ["a", "b[0].c"]);
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_REQUEST", "x.foodmesh.dev"));
    }

    #[test]
    fn tonics_decoding_answers_become_clear_errors_in_the_services_domain() {
        let path = "/foodmesh.store.v1.StoreService/PostReview";
        let garbled = Status::internal(format!("{DECODE_ERROR_PREFIX}: PostReviewRequest.order_id: invalid varint"));
        let clear = clear_decode_error(&garbled, path).expect("a decode error");
        assert_eq!(clear.code(), Code::InvalidArgument);
        let info = clear.get_details_error_info().expect("ErrorInfo");
        assert_eq!((info.reason.as_str(), info.domain.as_str()), ("MALFORMED_REQUEST", "store.foodmesh.dev"));
        assert!(clear.message().contains("PostReviewRequest.order_id: invalid varint"), "{}", clear.message());

        let large = Status::out_of_range(format!("{TOO_LARGE_PREFIX}: found 88405 bytes, the limit is: 65536 bytes"));
        let clear = clear_decode_error(&large, "/foodmesh.order.v1.OrderService/PlaceOrder").expect("too large");
        assert_eq!(clear.code(), Code::ResourceExhausted);
        assert_eq!(clear.get_details_error_info().expect("ErrorInfo").reason, "MESSAGE_TOO_LARGE");

        // The services' own errors pass untouched.
        assert!(clear_decode_error(&Status::internal("internal error (reference 1)"), path).is_none());
        assert!(clear_decode_error(&Status::out_of_range("page 9 of 3"), path).is_none());
        assert_eq!(domain_of_path("/grpc.health.v1.Health/Check"), "foodmesh.dev");
    }

    #[test]
    fn internal_errors_hide_the_cause_from_the_client() {
        let cause = std::io::Error::other("password=hunter2 leaked in a driver message");
        let status = internal("x.foodmesh.dev", &cause);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("hunter2"));
        assert!(status.message().contains("reference"));
    }
}
