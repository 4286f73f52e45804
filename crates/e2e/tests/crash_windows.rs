//! The window between payment's commit and order's: a charge that was
//! captured always ends as exactly one order.

use foodmesh_e2e::{Mesh, MeshOptions, SAGA_TIMEOUT, place_request};
use foodmesh_platform::testing::{authed, eventually};
use foodmesh_proto::{
    order::v1::{ListOrdersRequest, OrderStatus},
    payment::v1::PaymentStatus,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_commit_never_happened_after_its_charge_is_completed_once() {
    let options =
        MeshOptions { order_env: vec![("FOODMESH_FAULTS__STOP_AFTER_CHARGE".into(), "true".into())], ..MeshOptions::default() };
    let mesh = Mesh::start_with(options).await;
    let alice = mesh.customer("alice");
    let request = place_request("r-crash", "pizza-napoli", &[("calzone", 2)], "tok_visa");

    // PlaceOrder stops between the capture and the order's commit.
    let err = mesh.order().place_order(authed(request.clone(), &alice)).await.expect_err("stopped after the charge");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // The reconciler completes the order from payment's PaymentCaptured event.
    let order = eventually(SAGA_TIMEOUT, "the order completed by the reconciler", || async {
        let listed = mesh.order().list_orders(authed(ListOrdersRequest::default(), &alice)).await.expect("list").into_inner();
        listed.orders.into_iter().find(|o| o.status() != OrderStatus::Unspecified)
    })
    .await;
    assert_eq!(order.store_id, "pizza-napoli");
    let charged = mesh.payment_of("alice", &order.order_id).await;
    assert_eq!(charged.status(), PaymentStatus::Captured);
    let paid_by = order.payment.as_ref().map(|p| p.payment_id.clone()).unwrap_or_default();
    assert_eq!(charged.payment_id, paid_by, "the order is paid by that charge");
    assert_eq!(charged.amount, order.total, "for the priced amount");

    // It reaches the store, once.
    eventually(SAGA_TIMEOUT, "the order in the store's queue", || async {
        let queue = mesh.store_orders("pizza-napoli").await;
        let copies = queue.iter().filter(|o| o.order_id == order.order_id).count();
        assert!(copies <= 1, "{copies} copies in the store");
        (copies == 1).then_some(())
    })
    .await;

    // The customer retries as told: the same order, no second charge.
    let again = mesh.order().place_order(authed(request, &alice)).await.expect("retry").into_inner().order.expect("order");
    let paid_again = again.payment.as_ref().map(|p| p.payment_id.clone()).unwrap_or_default();
    assert_eq!((again.order_id.as_str(), paid_again.as_str()), (order.order_id.as_str(), charged.payment_id.as_str()));
    let listed = mesh.order().list_orders(authed(ListOrdersRequest::default(), &alice)).await.expect("list").into_inner();
    assert_eq!(listed.orders.len(), 1, "one order for one request");
    let report = mesh.assert_invariants().await;
    assert_eq!((report.orders, report.payments), (1, 1));
    mesh.print_figures("order stopped after the charge, before its commit", &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_reply_was_lost_is_one_order_and_one_charge() {
    let options = MeshOptions {
        payment_env: vec![("FOODMESH_FAULTS__DROP_REPLY_AFTER_COMMIT".into(), "true".into())],
        ..MeshOptions::default()
    };
    let mesh = Mesh::start_with(options).await;
    let alice = mesh.customer("alice");
    let request = place_request("r-lost-reply", "green-bowl", &[("green-smoothie", 1)], "tok_visa");

    // Payment commits the charge; order never hears back and says so.
    let err = mesh.order().place_order(authed(request.clone(), &alice)).await.expect_err("the reply was lost");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    // The customer retries as told: payment answers from its record.
    let order = mesh.order().place_order(authed(request, &alice)).await.expect("retry").into_inner().order.expect("order");
    let charged = mesh.payment_of("alice", &order.order_id).await;
    assert_eq!(charged.status(), PaymentStatus::Captured);
    let report = mesh.assert_invariants().await;
    assert_eq!((report.orders, report.payments), (1, 1), "one order, one charge");
    mesh.print_figures("payment's reply dropped after its commit", &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_taken_while_nats_is_down_flow_on_once_it_is_back() {
    let options = MeshOptions { auto_kitchen: Some(std::time::Duration::from_millis(30)), ..MeshOptions::default() };
    let mut mesh = Mesh::start_with(options).await;
    let before = mesh.place("alice", "before-outage", "seoul-bbq", &[("bibimbap", 1)]).await;
    mesh.wait_status("alice", &before.order_id, OrderStatus::Delivered).await;

    // NATS dies (SIGKILL). Orders are still taken: each commits with its
    // event in the outbox, which waits for NATS.
    mesh.nats.kill().await;
    let mut during = Vec::new();
    for i in 0..10 {
        during.push(mesh.place("bob", &format!("outage-{i}"), "green-bowl", &[("green-smoothie", 1)]).await);
    }
    mesh.nats.restart().await;

    // Every consumer resumes where it was; each order goes through once.
    for order in &during {
        let done = mesh.wait_status("bob", &order.order_id, OrderStatus::Delivered).await;
        let timeline: Vec<OrderStatus> = done.timeline.iter().map(|c| c.status()).collect();
        let expected =
            [OrderStatus::Placed, OrderStatus::Accepted, OrderStatus::Cooking, OrderStatus::Delivering, OrderStatus::Delivered];
        assert_eq!(timeline, expected, "{}", order.order_id);
    }
    let queue = mesh.store_orders("green-bowl").await;
    for order in &during {
        assert_eq!(queue.iter().filter(|o| o.order_id == order.order_id).count(), 1, "{} in the store once", order.order_id);
    }
    let report = mesh.assert_invariants().await;
    assert_eq!((report.orders, report.payments), (11, 11));
    mesh.print_figures("nats-server stopped and restarted under load", &report).await;
}
