//! Black-box tests of the payment service: the real binary's code started
//! in-process on a free loopback port, a real nats-server, a real database
//! (SQLite, or PostgreSQL with FOODMESH_TEST_BACKEND=postgres), over gRPC.

use std::time::Duration;

use async_nats::jetstream;
use foodmesh_payment::Settings;
use foodmesh_platform::{
    lifecycle::Running,
    messaging::{PAYMENT_EVENTS, STORE_EVENTS, ensure_streams, event_metadata, subjects},
    testing::{NatsServer, TestDatabases, TestKeys, authed, backend_from_env, eventually, free_port, service_env},
    time::Timestamp,
};
use foodmesh_proto::{
    common::v1::Money,
    payment::v1::{
        ChargeRequest, GetPaymentRequest, PaymentEvent, PaymentStatus, RefundRequest, get_payment_request::Lookup, payment_event,
        payment_service_client::PaymentServiceClient,
    },
    store::v1::{OrderStatusChanged, StoreEvent, StoreOrderStatus, store_event},
};
use futures::StreamExt;
use prost::Message;
use tonic::{Code, transport::Channel};
use tonic_types::StatusExt;

/// Fields drop in order: the service before its broker and database.
struct Payment {
    running: Running,
    client: PaymentServiceClient<Channel>,
    nats: NatsServer,
    keys: TestKeys,
    _dbs: TestDatabases,
}

async fn start() -> Payment {
    let nats = NatsServer::start().await;
    start_with_nats(nats).await
}

async fn start_with_nats(nats: NatsServer) -> Payment {
    let dbs = TestDatabases::new(backend_from_env());
    let keys = TestKeys::new();
    let settings = Settings::from_env_pairs(service_env(&dbs.url("payment").await, &nats.url(), &keys)).expect("settings");
    let running = foodmesh_payment::start(settings).await.expect("starts");
    assert!(running.wait_until_serving(Duration::from_secs(20)).await, "payment never became SERVING");
    let client = PaymentServiceClient::connect(format!("http://{}", running.local_addr())).await.expect("connects");
    Payment { nats, keys, _dbs: dbs, running, client }
}

fn krw(amount: i64) -> Option<Money> {
    Some(Money { currency_code: "KRW".into(), amount_minor: amount })
}

fn charge(order_id: &str, amount: i64, token: &str) -> ChargeRequest {
    ChargeRequest { request_id: order_id.into(), order_id: order_id.into(), amount: krw(amount), payment_token: token.into() }
}

/// Every payment event published so far, read back from the stream.
async fn published_events(nats: &NatsServer) -> Vec<PaymentEvent> {
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let stream = js.get_stream(PAYMENT_EVENTS.name).await.expect("stream exists");
    let consumer = stream.create_consumer(jetstream::consumer::pull::OrderedConfig::default()).await.expect("ordered consumer");
    let pending = consumer.cached_info().num_pending as usize;
    let messages = consumer.messages().await.expect("messages");
    messages
        .take(pending)
        .map(|m| PaymentEvent::decode(m.expect("message").payload.clone()).expect("a PaymentEvent"))
        .collect()
        .await
}

async fn events_for(nats: &NatsServer, order_id: &str, count: usize) -> Vec<PaymentEvent> {
    eventually(Duration::from_secs(10), "payment events", || async {
        let events: Vec<_> = published_events(nats)
            .await
            .into_iter()
            .filter(|e| e.metadata.as_ref().is_some_and(|m| m.correlation_id == order_id))
            .collect();
        (events.len() >= count).then_some(events)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_charge_returns_the_stored_payment_and_charges_once() {
    let mut p = start().await;
    let alice = p.keys.customer("alice");
    let first = p.client.charge(authed(charge("ord-1", 18_000, "tok_visa"), &alice)).await.expect("captured").into_inner();
    let again = p.client.charge(authed(charge("ord-1", 18_000, "tok_visa"), &alice)).await.expect("replayed").into_inner();
    let first = first.payment.expect("payment");
    assert_eq!(first.status(), PaymentStatus::Captured);
    assert_eq!(first.customer_id, "alice", "the customer comes from the token");
    assert_eq!(again.payment.expect("payment"), first);

    let events = events_for(&p.nats, "ord-1", 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // a second event would have been published by now
    assert_eq!(events_for(&p.nats, "ord-1", 1).await.len(), 1, "one capture event for two calls");
    let meta = events[0].metadata.clone().expect("metadata");
    assert_eq!(meta.producer, "payment");
    assert!(matches!(events[0].event, Some(payment_event::Event::PaymentCaptured(ref c)) if c.payment_id == first.payment_id));
    p.running.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_with_another_amount_is_rejected_as_reused() {
    let mut p = start().await;
    let alice = p.keys.customer("alice");
    p.client.charge(authed(charge("ord-2", 10_000, "tok_visa"), &alice)).await.expect("captured");
    let err = p.client.charge(authed(charge("ord-2", 99_000, "tok_visa"), &alice)).await.expect_err("reused key");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, "IDEMPOTENCY_KEY_REUSED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_fails_the_precondition_and_stays_declined_on_retry() {
    let mut p = start().await;
    let alice = p.keys.customer("alice");
    let err = p.client.charge(authed(charge("ord-3", 5_000, "tok_decline"), &alice)).await.expect_err("declined");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let info = err.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "PAYMENT_DECLINED");
    assert_eq!(info.domain, "payment.foodmesh.dev");
    let payment_id = info.metadata.get("payment_id").expect("payment id in metadata").clone();

    let again = p.client.charge(authed(charge("ord-3", 5_000, "tok_decline"), &alice)).await.expect_err("still declined");
    assert_eq!(again.get_details_error_info().expect("ErrorInfo").metadata.get("payment_id"), Some(&payment_id));
    let stored = p
        .client
        .get_payment(authed(GetPaymentRequest { lookup: Some(Lookup::OrderId("ord-3".into())) }, &alice))
        .await
        .expect("stored")
        .into_inner()
        .payment
        .expect("payment");
    assert_eq!(stored.status(), PaymentStatus::Declined);
    assert_eq!(stored.payment_id, payment_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_need_an_operator_and_happen_once() {
    let mut p = start().await;
    let alice = p.keys.customer("alice");
    let paid = p.client.charge(authed(charge("ord-4", 7_000, "tok_visa"), &alice)).await.expect("captured");
    let payment_id = paid.into_inner().payment.expect("payment").payment_id;
    let refund = |request_id: &str| RefundRequest {
        request_id: request_id.into(),
        payment_id: payment_id.clone(),
        reason: "goodwill".into(),
    };

    let denied = p.client.refund(authed(refund("r1"), &alice)).await.expect_err("customers cannot refund");
    assert_eq!(denied.code(), Code::PermissionDenied);

    let ops = p.keys.operator();
    let first = p.client.refund(authed(refund("r1"), &ops)).await.expect("refunded").into_inner().payment.expect("p");
    let second = p.client.refund(authed(refund("r2"), &ops)).await.expect("idempotent").into_inner().payment.expect("p");
    assert_eq!(first.status(), PaymentStatus::Refunded);
    assert_eq!(second, first, "a second refund changes nothing");
    let events = events_for(&p.nats, "ord-4", 2).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let refunds = events_for(&p.nats, "ord-4", 2)
        .await
        .iter()
        .filter(|e| matches!(e.event, Some(payment_event::Event::PaymentRefunded(_))))
        .count();
    assert_eq!((events.len(), refunds), (2, 1), "one capture and one refund");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_cancellation_refunds_the_order_once_however_often_it_is_told() {
    let mut p = start().await;
    let alice = p.keys.customer("alice");
    p.client.charge(authed(charge("ord-5", 12_000, "tok_visa"), &alice)).await.expect("captured");

    let js = jetstream::new(async_nats::connect(p.nats.url()).await.expect("nats"));
    ensure_streams(&js, &[STORE_EVENTS]).await.expect("stream");
    // The cancellation, then a rejection of the same order: two events, one refund.
    for status in [StoreOrderStatus::Cancelled, StoreOrderStatus::Rejected] {
        let metadata = event_metadata("ord-5", "store", Timestamp::now());
        let event = StoreEvent {
            metadata: Some(metadata.clone()),
            event: Some(store_event::Event::OrderStatusChanged(OrderStatusChanged {
                order_id: "ord-5".into(),
                store_id: "s".into(),
                customer_id: "alice".into(),
                status: status.into(),
                version: 2,
                reason: "test".into(),
            })),
        };
        let subject =
            if status == StoreOrderStatus::Cancelled { subjects::STORE_ORDER_CANCELLED } else { subjects::STORE_ORDER_REJECTED };
        let publish =
            jetstream::message::PublishMessage::build().payload(event.encode_to_vec().into()).message_id(&metadata.event_id);
        js.send_publish(subject, publish).await.expect("publish").await.expect("ack");
    }

    let refunded = eventually(Duration::from_secs(10), "the refund", || {
        let mut client = p.client.clone();
        let alice = alice.clone();
        async move {
            let payment = client
                .get_payment(authed(GetPaymentRequest { lookup: Some(Lookup::OrderId("ord-5".into())) }, &alice))
                .await
                .ok()?
                .into_inner()
                .payment?;
            (payment.status() == PaymentStatus::Refunded).then_some(payment)
        }
    })
    .await;
    assert_eq!(refunded.refund_reason, "order cancelled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refunds = published_events(&p.nats)
        .await
        .into_iter()
        .filter(|e| matches!(e.event, Some(payment_event::Event::PaymentRefunded(_))))
        .count();
    assert_eq!(refunds, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_customers_payment_is_not_found() {
    let mut p = start().await;
    p.client.charge(authed(charge("ord-6", 3_000, "tok_visa"), &p.keys.customer("alice"))).await.expect("captured");
    let lookup = GetPaymentRequest { lookup: Some(Lookup::OrderId("ord-6".into())) };
    let err = p.client.get_payment(authed(lookup.clone(), &p.keys.customer("mallory"))).await.expect_err("hidden");
    assert_eq!(err.code(), Code::NotFound);
    let missing = GetPaymentRequest { lookup: Some(Lookup::OrderId("no-such-order".into())) };
    let err2 = p.client.get_payment(authed(missing, &p.keys.customer("mallory"))).await.expect_err("missing");
    assert_eq!((err.code(), err.message()), (err2.code(), err2.message()), "hidden looks exactly like missing");
    p.client.get_payment(authed(lookup, &p.keys.operator())).await.expect("operators see every payment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_lists_every_bad_field_and_stores_nothing() {
    let mut p = start().await;
    let alice = p.keys.customer("alice");
    let bad = ChargeRequest {
        request_id: String::new(),
        order_id: "has spaces".into(),
        amount: Some(Money { currency_code: "krw".into(), amount_minor: 5 }),
        payment_token: String::new(),
    };
    let err = p.client.charge(authed(bad, &alice)).await.expect_err("invalid");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, "INVALID_REQUEST");
    let fields: Vec<String> =
        err.get_details_bad_request().expect("BadRequest").field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["request_id", "order_id", "amount.currency_code", "payment_token"]);

    let zero = charge("ord-7", 0, "tok_visa");
    let err = p.client.charge(authed(zero, &alice)).await.expect_err("zero amount");
    let fields: Vec<String> =
        err.get_details_bad_request().expect("BadRequest").field_violations.into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["amount.amount_minor"]);
    let lookup = GetPaymentRequest { lookup: Some(Lookup::OrderId("ord-7".into())) };
    assert_eq!(p.client.get_payment(authed(lookup, &alice)).await.expect_err("nothing stored").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let mut p = start().await;
    let err = p.client.charge(tonic::Request::new(charge("ord-8", 1_000, "tok_visa"))).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, "TOKEN_MISSING");
    let forged = TestKeys::new().customer("alice"); // signed by a key the service does not trust
    let err = p.client.charge(authed(charge("ord-8", 1_000, "tok_visa"), &forged)).await.expect_err("bad signature");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, "TOKEN_INVALID");
    let staff = p.keys.staff("seoul-bbq");
    let err = p.client.charge(authed(charge("ord-8", 1_000, "tok_visa"), &staff)).await.expect_err("wrong role");
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_reports_not_serving_until_nats_is_up_then_serves() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    let port = free_port();
    let dbs = TestDatabases::new(backend_from_env());
    let keys = TestKeys::new();
    let nats_url = format!("nats://127.0.0.1:{port}");
    let settings = Settings::from_env_pairs(service_env(&dbs.url("payment").await, &nats_url, &keys)).expect("settings");
    let running = foodmesh_payment::start(settings).await.expect("starts without NATS");
    let endpoint = format!("http://{}", running.local_addr());
    let channel = Channel::from_shared(endpoint.clone()).expect("uri").connect().await.expect("listening before NATS is up");
    let mut health = HealthClient::new(channel);
    let status = |name: &str| HealthCheckRequest { service: name.into() };
    for name in ["", "foodmesh.payment.v1.PaymentService"] {
        let reply = health.check(status(name)).await.expect("check").into_inner();
        assert_eq!(reply.status(), ServingStatus::NotServing, "{name:?}");
    }
    let mut client = PaymentServiceClient::connect(endpoint).await.expect("connects");
    let err = client.charge(authed(charge("ord-9", 1_000, "tok_visa"), &keys.customer("a"))).await.expect_err("not ready");
    assert_eq!(err.code(), Code::Unavailable);

    let _nats = NatsServer::start_on(port).await;
    assert!(running.wait_until_serving(Duration::from_secs(20)).await, "serves once NATS is up");
    let reply = health.check(status("")).await.expect("check").into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);
    client.charge(authed(charge("ord-9", 1_000, "tok_visa"), &keys.customer("a"))).await.expect("charges once ready");
}
