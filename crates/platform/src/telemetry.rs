//! Logs and traces for every foodmesh process.
//!
//! - Logs: `tracing` with an `EnvFilter` (`RUST_LOG`, default `info`), as text
//!   or, with `FOODMESH_LOG_FORMAT=json`, one JSON object per line with the
//!   spans in scope; the root span of each request or consumed event carries
//!   `trace_id`, so a log line can be found from a trace and back.
//! - Traces: every `tracing` span is an OpenTelemetry span too. One order is
//!   one trace: the W3C `traceparent` travels in gRPC metadata (order to
//!   payment) and in NATS message headers (the outbox stores it with each
//!   event, the consumers continue from it), and store keeps each order's
//!   trace so its kitchen actions join it. Spans are exported over OTLP/gRPC
//!   when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard variable, e.g.
//!   `http://otel-collector:4317`); without it ids are still made and
//!   propagated, and only logged.
//!
//! This module is the one place that knows OpenTelemetry: the rest of the
//! code passes `traceparent` strings and `tracing` spans.

use std::{collections::HashMap, io::IsTerminal as _};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, filter::LevelFilter, fmt, prelude::*};

/// The W3C trace-context header (gRPC metadata key and NATS header name).
pub const TRACEPARENT: &str = "traceparent";

/// Keeps the tracer provider; dropping it flushes the spans not yet exported.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging and tracing for `service`. Call once, first thing in
/// `main`, inside the Tokio runtime (the OTLP exporter's channel lives there).
pub fn init(service: &'static str) -> Telemetry {
    let mut builder = SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(service).build());
    let mut exporting = None;
    if let Ok(endpoint) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        // The exporter reads the endpoint (and OTEL_EXPORTER_OTLP_* settings) itself.
        match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
            Ok(exporter) => {
                builder = builder.with_batch_exporter(exporter);
                exporting = Some(Ok(endpoint));
            }
            Err(err) => exporting = Some(Err(err.to_string())),
        }
    }
    let provider = builder.build();
    let installed = install(service, &provider);
    if installed {
        match exporting {
            Some(Ok(endpoint)) => tracing::info!(service, %endpoint, "exporting traces over OTLP"),
            Some(Err(error)) => tracing::error!(service, %error, "cannot export traces; they are only logged"),
            None => tracing::debug!(service, "traces are logged, not exported (OTEL_EXPORTER_OTLP_ENDPOINT is unset)"),
        }
    }
    Telemetry { provider: Some(provider) }
}

/// Installs the global subscriber (filter, logs, OpenTelemetry layer over
/// `provider`) and the W3C propagator. False if a subscriber was already
/// installed (tests install theirs first). Tests call this with a provider
/// that exports to memory.
pub fn install(service: &'static str, provider: &SdkTracerProvider) -> bool {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let json = std::env::var("FOODMESH_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = if json {
        fmt::layer().json().with_current_span(false).with_span_list(true).boxed()
    } else {
        // Colours only on a terminal: in a file, `kubectl logs` or a log
        // collector, escape codes are noise around every field.
        fmt::layer().with_target(false).with_ansi(std::io::stdout().is_terminal()).boxed()
    };
    // Each layer has its own filter: a quiet RUST_LOG (say `warn`) must not
    // switch off the request and event spans traces are made of.
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    tracing_subscriber::registry().with(logs.with_filter(filter)).with(traces.with_filter(LevelFilter::INFO)).try_init().is_ok()
}

/// The `traceparent` of `span`, if it belongs to a trace.
pub fn traceparent(span: &Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove(TRACEPARENT)
}

/// The trace id of `span` (hex), for log fields; empty outside a trace.
pub fn trace_id(span: &Span) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() { span_context.trace_id().to_string() } else { String::new() }
}

/// The remote span a `traceparent` names (invalid if it is malformed).
fn remote(traceparent: &str) -> opentelemetry::Context {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` continue the trace of `traceparent` (a remote parent) and
/// records its `trace_id` field, if it has one.
pub fn continue_trace(span: &Span, traceparent: Option<&str>) {
    if let Some(parent) = traceparent.map(remote).filter(|p| p.span().span_context().is_valid()) {
        let _ = span.set_parent(parent);
    }
    span.record("trace_id", trace_id(span));
}

/// Makes `span` continue the trace in an incoming request's headers.
pub fn continue_from_headers(span: &Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span.record("trace_id", trace_id(span));
}

/// Adds the current span's trace context to an outgoing gRPC request.
pub fn inject_metadata(metadata: &mut tonic::metadata::MetadataMap) {
    let context = Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut Metadata(metadata)));
}

/// Links `span` to the trace of `traceparent` without making it its parent:
/// a staff request acting on an order is its own trace, linked to the order's.
pub fn link(span: &Span, traceparent: &str) {
    let span_context = remote(traceparent).span().span_context().clone();
    if span_context.is_valid() {
        span.add_link(span_context);
    }
}

tokio::task_local! {
    /// While a batch is applied: the trace context of each saga (correlation
    /// id, the order id) in it, so that the events the batch emits continue
    /// the trace of the event that caused them.
    static SAGA_TRACES: HashMap<String, String>;
}

/// Runs `work` with `traces` (correlation id to `traceparent`) as the trace
/// context of the events it emits (see [`saga_traceparent`]).
pub async fn with_saga_traces<F: Future>(traces: HashMap<String, String>, work: F) -> F::Output {
    SAGA_TRACES.scope(traces, work).await
}

/// Runs `work` (synchronous) with `traces` as the trace context of the
/// events it emits, like [`with_saga_traces`].
pub fn with_saga_traces_sync<R>(traces: HashMap<String, String>, work: impl FnOnce() -> R) -> R {
    SAGA_TRACES.sync_scope(traces, work)
}

/// The trace context of each saga of the batch being applied (empty outside one).
pub fn current_saga_traces() -> HashMap<String, String> {
    SAGA_TRACES.try_with(Clone::clone).unwrap_or_default()
}

/// The `traceparent` an event of saga `correlation_id` carries: the one
/// [`with_saga_traces`] set for it, else the current span's.
pub fn saga_traceparent(correlation_id: &str) -> Option<String> {
    SAGA_TRACES.try_with(|traces| traces.get(correlation_id).cloned()).ok().flatten().or_else(|| traceparent(&Span::current()))
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(value))
        {
            self.0.insert(key, value);
        }
    }
}
