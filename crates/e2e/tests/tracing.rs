//! One trace per order: the spans of PlaceOrder, the Charge it makes, the
//! OrderPlaced event in store, the kitchen's steps, order's view updates and
//! the notifications all carry the order's trace id and hang together as one
//! tree, linked by W3C traceparent in gRPC metadata and NATS headers. The
//! four services run in this process and their spans are received in memory
//! by the same OpenTelemetry pipeline the binaries use (platform::telemetry).

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use foodmesh_e2e::{Mesh, MeshOptions, SAGA_TIMEOUT, place_request};
use foodmesh_platform::testing::{authed, eventually};
use foodmesh_proto::order::v1::{Order, OrderStatus};
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.to_string())
}

/// A readable name: the span name, and the consumer for consume spans.
fn describe(span: &SpanData) -> String {
    match attribute(span, "consumer") {
        Some(consumer) => format!("{} [{consumer}]", span.name),
        None => span.name.to_string(),
    }
}

fn rand_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128()
}

/// PlaceOrder with a `traceparent` made by the caller, as an app's SDK sends it.
async fn place_traced(mesh: &Mesh, customer: &str, request_id: &str, trace: TraceId, span: SpanId) -> Order {
    let mut request = authed(place_request(request_id, "seoul-bbq", &[("bulgogi", 1)], "tok_visa"), &mesh.customer(customer));
    let traceparent = format!("00-{trace}-{span}-01");
    request.metadata_mut().insert("traceparent", traceparent.parse().expect("ascii"));
    mesh.order().place_order(request).await.expect("order placed").into_inner().order.expect("order")
}

fn in_trace(exporter: &InMemorySpanExporter, trace: TraceId) -> Vec<SpanData> {
    exporter.get_finished_spans().expect("spans").into_iter().filter(|s| s.span_context.trace_id() == trace).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_one_trace_across_rpcs_and_events() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    assert!(foodmesh_platform::telemetry::install("e2e", &provider), "the first subscriber of this test binary");
    let mesh = Mesh::start_with(MeshOptions { auto_kitchen: Some(Duration::from_millis(50)), ..MeshOptions::default() }).await;

    // The customer's app starts the trace and sends it as W3C traceparent.
    let (trace, client_span) = (TraceId::from(rand_u128()), SpanId::from(rand_u128() as u64));
    let order = place_traced(&mesh, "dave", "traced-1", trace, client_span).await;
    mesh.wait_status("dave", &order.order_id, OrderStatus::Delivered).await;

    // Every step of the saga, by span name (and consumer), that must be in it.
    let wanted = [
        "foodmesh.order.v1.OrderService/PlaceOrder",
        "foodmesh.payment.v1.PaymentService/Charge",
        "order.v1.placed process [store-orders]",
        "order.v1.placed process [notification-orders]",
        "store kitchen step",
        "store.v1.order.cooking process [order-view-store]",
        "store.v1.order.delivered process [order-view-store]",
        "store.v1.order.delivered process [notification-store]",
        "payment.v1.captured process [order-reconciler]",
    ];
    // Wait for the saga's last events to be applied everywhere.
    let deadline = tokio::time::Instant::now() + SAGA_TIMEOUT;
    let spans = loop {
        let spans = in_trace(&exporter, trace);
        let names: HashSet<String> = spans.iter().map(describe).collect();
        let missing: Vec<&str> = wanted.iter().copied().filter(|w| !names.contains(*w)).collect();
        let steps = spans.iter().filter(|s| s.name == "store kitchen step").count();
        if missing.is_empty() && steps >= 3 {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing from the trace: {missing:?} ({steps} kitchen steps); present: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // One tree: PlaceOrder's span is the only one whose parent is outside
    // this process's spans (the app's span, over gRPC metadata), and every
    // other span's parent is a span of this trace.
    let ids: HashSet<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    let entries: Vec<String> = spans.iter().filter(|s| !ids.contains(&s.parent_span_id)).map(describe).collect();
    assert_eq!(entries, ["foodmesh.order.v1.OrderService/PlaceOrder"], "one entry into the trace");
    let place = spans.iter().find(|s| s.name == "foodmesh.order.v1.OrderService/PlaceOrder").expect("PlaceOrder");
    assert_eq!(place.parent_span_id, client_span, "PlaceOrder continues the app's span");
    assert!(place.parent_span_is_remote);
    // Charge ran in payment as a child of order's work, over gRPC metadata.
    let charge = spans.iter().find(|s| s.name == "foodmesh.payment.v1.PaymentService/Charge").expect("Charge");
    assert!(charge.parent_span_is_remote, "Charge continues a remote parent (traceparent in gRPC metadata)");
    // The kitchen's steps follow the order's trace, stored by store.
    let steps = spans.iter().filter(|s| s.name == "store kitchen step").count();
    assert!(steps >= 3, "cooking, delivering, delivered: {steps} steps");
    let mut census: BTreeMap<String, usize> = BTreeMap::new();
    for span in &spans {
        *census.entry(describe(span)).or_default() += 1;
    }
    eprintln!("FIGURES | one trace | {} spans | {census:?}", spans.len());

    // Another order is another trace, even when its request brings none.
    let other = mesh.place("erin", "traced-2", "seoul-bbq", &[("bulgogi", 1)]).await;
    let payment = mesh.payment_of("erin", &other.order_id).await;
    let charges = eventually(SAGA_TIMEOUT, "the second order's Charge span", || {
        let traces: HashSet<TraceId> = exporter
            .get_finished_spans()
            .expect("spans")
            .into_iter()
            .filter(|s| s.name == "foodmesh.payment.v1.PaymentService/Charge")
            .map(|s| s.span_context.trace_id())
            .collect();
        async move { (traces.len() == 2).then_some(traces) }
    })
    .await;
    assert!(charges.contains(&trace), "the first order's charge is in its trace");
    assert!(!payment.payment_id.is_empty());
    let _ = provider.shutdown();
}
