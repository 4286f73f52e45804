//! Order's protection in front of a slow or failing payment service: the
//! circuit breaker opens after consecutive timeouts and refuses at once, a
//! probe closes it when payment is back, load shedding refuses what is beyond
//! the concurrency limit, and no refusal leaves an unpaid order or a second
//! charge. Payment's faults are set at run time through its FaultService, as
//! an operator would with `foodmesh faults`.

use std::time::Duration;

use foodmesh_e2e::{Mesh, MeshOptions, place_request};
use foodmesh_platform::testing::authed;
use foodmesh_proto::{
    order::v1::{CircuitState, ListOrdersRequest, PlaceOrderResponse},
    payment::v1::{Faults, GetFaultsRequest, SetFaultsRequest},
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The order service with a small, fast-tripping breaker.
async fn mesh(max_in_flight: u32, failure_threshold: u32, cool_down_ms: u64) -> Mesh {
    let env = |k: &str, v: String| (format!("FOODMESH_PAYMENT__{k}"), v);
    Mesh::start_with(MeshOptions {
        order_env: vec![
            env("TIMEOUT_MS", "300".into()),
            env("MAX_IN_FLIGHT", max_in_flight.to_string()),
            env("BREAKER__FAILURE_THRESHOLD", failure_threshold.to_string()),
            env("BREAKER__COOL_DOWN_MS", cool_down_ms.to_string()),
        ],
        ..MeshOptions::default()
    })
    .await
}

async fn place(mesh: &Mesh, customer: &str, request_id: &str) -> Result<PlaceOrderResponse, Status> {
    let request = place_request(request_id, "seoul-bbq", &[("bulgogi", 1)], "tok_visa");
    mesh.order().place_order(authed(request, &mesh.customer(customer))).await.map(tonic::Response::into_inner)
}

/// The status's ErrorInfo reason and RetryInfo delay.
fn unavailable(status: &Status) -> (String, Duration) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let reason = status.get_details_error_info().expect("ErrorInfo").reason;
    let delay = status.get_details_retry_info().expect("RetryInfo").retry_delay.expect("a delay");
    (reason, delay)
}

async fn order_count(mesh: &Mesh, customer: &str) -> usize {
    let list = mesh.order().list_orders(authed(ListOrdersRequest::default(), &mesh.customer(customer))).await;
    list.expect("list").into_inner().orders.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_open_the_circuit_which_refuses_at_once_until_a_probe_succeeds() {
    let mesh = mesh(64, 3, 1500).await;
    let before = place(&mesh, "alice", "before").await.expect("payment is healthy").order.expect("order");
    assert_eq!(mesh.payment_circuit().await.state(), CircuitState::Closed);

    // Payment now takes 800 ms per charge: longer than order's 300 ms timeout.
    mesh.set_payment_faults(Faults { latency_min_ms: 800, latency_max_ms: 800, ..Faults::default() }).await;
    for i in 0..3 {
        let status = place(&mesh, "bob", &format!("slow-{i}")).await.expect_err("timed out");
        assert_eq!(unavailable(&status).0, "PAYMENT_UNAVAILABLE");
    }
    let circuit = mesh.payment_circuit().await;
    assert_eq!((circuit.state(), circuit.opened_total), (CircuitState::Open, 1), "{circuit:?}");

    // Open: refused without calling payment, with the time left as the delay.
    for i in 0..5 {
        let status = place(&mesh, "bob", &format!("while-open-{i}")).await.expect_err("open");
        let (reason, delay) = unavailable(&status);
        assert_eq!(reason, "PAYMENT_UNAVAILABLE");
        assert!(delay > Duration::ZERO && delay <= Duration::from_millis(1500), "retry in {delay:?}");
    }
    let circuit = mesh.payment_circuit().await;
    assert_eq!(circuit.state(), CircuitState::Open);
    let faults = mesh.payment_faults().get_faults(authed(GetFaultsRequest {}, &mesh.keys.operator())).await;
    assert_eq!(faults.expect("GetFaults").into_inner().charges_in_flight, 0, "nothing reached payment while open");

    // A request that was placed before is still answered from its record.
    let again = place(&mesh, "alice", "before").await.expect("a settled request is answered while open");
    assert_eq!(again.order.expect("order").order_id, before.order_id);

    // Payment recovers; after the cool-down one probe closes the circuit.
    mesh.set_payment_faults(Faults::default()).await;
    let placed = foodmesh_platform::testing::eventually(Duration::from_secs(10), "an order after payment recovered", || async {
        place(&mesh, "bob", "after-recovery").await.ok()
    })
    .await;
    assert!(placed.order.is_some());
    let circuit = mesh.payment_circuit().await;
    assert_eq!((circuit.state(), circuit.consecutive_failures), (CircuitState::Closed, 0), "{circuit:?}");
    assert!(circuit.rejected_open_total >= 5, "{circuit:?}");

    // The timed-out charges were abandoned by payment (the caller hung up), or
    // captured and then completed by the reconciler: either way no unpaid
    // order and no second charge.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(order_count(&mesh, "bob").await >= 1);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_beyond_the_concurrency_limit_are_shed_at_once() {
    // A breaker that never trips here, so only the limit acts.
    let mesh = mesh(2, 1000, 1000).await;
    mesh.set_payment_faults(Faults { latency_min_ms: 200, latency_max_ms: 200, ..Faults::default() }).await;
    let ids: Vec<String> = (0..6).map(|i| format!("burst-{i}")).collect();
    let calls = ids.iter().map(|id| place(&mesh, "carol", id));
    let results = futures::future::join_all(calls).await;
    let placed = results.iter().filter(|r| r.is_ok()).count();
    let shed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).map(unavailable).collect();
    assert_eq!(placed, 2, "two slots: {results:?}");
    assert_eq!(shed.len(), 4);
    assert!(shed.iter().all(|(reason, delay)| reason == "PAYMENT_UNAVAILABLE" && *delay == Duration::from_millis(250)));
    let circuit = mesh.payment_circuit().await;
    assert_eq!((circuit.rejected_shed_total, circuit.max_charges_in_flight), (4, 2), "{circuit:?}");
    assert_eq!(circuit.state(), CircuitState::Closed, "shedding is not a payment failure");
    assert_eq!(order_count(&mesh, "carol").await, 2);

    // The refused requests are retried later with the same ids and placed once.
    mesh.set_payment_faults(Faults::default()).await;
    for i in 0..6 {
        place(&mesh, "carol", &format!("burst-{i}")).await.expect("retried");
    }
    assert_eq!(order_count(&mesh, "carol").await, 6);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_faults_are_for_operators_and_checked() {
    let mesh = Mesh::start().await;
    let mut faults = mesh.payment_faults();
    let set =
        |token: &str, faults: Faults| authed(SetFaultsRequest { request_id: "change-1".into(), faults: Some(faults) }, token);
    let denied = faults.set_faults(set(&mesh.customer("alice"), Faults::default())).await.expect_err("customer");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let anonymous = faults.get_faults(tonic::Request::new(GetFaultsRequest {})).await.expect_err("no token");
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let bad = Faults { latency_min_ms: 700, latency_max_ms: 600, failure_rate: 2.0, max_concurrent_charges: 0 };
    let invalid = faults.set_faults(set(&mesh.keys.operator(), bad)).await.expect_err("out of range");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<_> =
        invalid.get_details_bad_request().expect("BadRequest").field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["faults.latency_max_ms", "faults.failure_rate"]);
    let unchanged = faults.get_faults(authed(GetFaultsRequest {}, &mesh.keys.operator())).await.expect("get");
    assert_eq!(unchanged.into_inner().faults, Some(Faults::default()), "a rejected change changes nothing");

    // Every charge refused: UNAVAILABLE with reason INJECTED_FAULT, nothing stored.
    mesh.set_payment_faults(Faults { failure_rate: 1.0, ..Faults::default() }).await;
    let status = place(&mesh, "dave", "refused").await.expect_err("refused");
    assert_eq!(unavailable(&status).0, "PAYMENT_UNAVAILABLE");
    assert_eq!(order_count(&mesh, "dave").await, 0);
    mesh.set_payment_faults(Faults::default()).await;
    place(&mesh, "dave", "refused").await.expect("the same request, once payment is back");
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_deadline_travels_to_payment_which_gives_up_too() {
    // Order would wait 2 s; the caller gives it 400 ms, and payment takes 3 s.
    let mesh = Mesh::start_with(MeshOptions {
        order_env: vec![("FOODMESH_PAYMENT__TIMEOUT_MS".into(), "2000".into())],
        ..MeshOptions::default()
    })
    .await;
    mesh.set_payment_faults(Faults { latency_min_ms: 3000, latency_max_ms: 3000, ..Faults::default() }).await;
    let mut request = authed(place_request("short", "seoul-bbq", &[("bulgogi", 1)], "tok_visa"), &mesh.customer("erin"));
    request.set_timeout(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let status = mesh.order().place_order(request).await.expect_err("no time to charge");
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Unavailable | Code::Cancelled), "{status:?}");
    // Payment heard the same deadline (grpc-timeout) and dropped the charge
    // long before its 3 s of latency were over: nothing in flight, nothing stored.
    let operator = mesh.keys.operator();
    let in_flight = || async {
        let faults = mesh.payment_faults().get_faults(authed(GetFaultsRequest {}, &operator)).await.expect("get");
        faults.into_inner().charges_in_flight
    };
    foodmesh_platform::testing::eventually(Duration::from_millis(1500), "payment drops the abandoned charge", || async {
        (in_flight().await == 0).then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_millis(2500), "payment gave up before its latency ended");
    mesh.set_payment_faults(Faults::default()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(order_count(&mesh, "erin").await, 0);
    let report = mesh.assert_invariants().await;
    assert_eq!(report.payments, 0, "no charge was made: {report:?}");
}
