//! The saga end to end: place, pay, cook, deliver, notify; declines, payment
//! outages, cancellations and their races, a store outage.

use std::time::Duration;

use foodmesh_e2e::{Mesh, MeshOptions, SAGA_TIMEOUT, Service, Webhook, place_request};
use foodmesh_platform::testing::{authed, eventually};
use foodmesh_proto::{
    notification::v1::{DeliveryStatus, ListNotificationsRequest, Notification, NotificationKind, WatchNotificationsRequest},
    order::v1::{CancelOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderStatus, PaymentState, WatchOrderRequest},
    payment::v1::PaymentStatus,
    store::v1::{
        CompleteDeliveryRequest, RejectOrderRequest, StartCookingRequest, StartDeliveryRequest, StoreOrder, StoreOrderStatus,
    },
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

fn statuses(order: &Order) -> Vec<OrderStatus> {
    order.timeline.iter().map(|c| c.status()).collect()
}

async fn notifications(mesh: &Mesh, customer: &str, order_id: &str) -> Vec<Notification> {
    let request = ListNotificationsRequest { order_id: order_id.into(), page_size: 100, ..Default::default() };
    let mut list = mesh
        .notification()
        .list_notifications(authed(request, &mesh.customer(customer)))
        .await
        .expect("list")
        .into_inner()
        .notifications;
    list.reverse(); // oldest first
    list
}

async fn wait_notifications(mesh: &Mesh, customer: &str, order_id: &str, kinds: &[NotificationKind]) -> Vec<Notification> {
    eventually(SAGA_TIMEOUT, &format!("notifications {kinds:?}"), || async {
        let list = notifications(mesh, customer, order_id).await;
        let sent = list.iter().filter(|n| n.delivery_status() == DeliveryStatus::Sent).count();
        (kinds.iter().all(|k| list.iter().any(|n| n.kind() == *k)) && sent == list.len()).then_some(list)
    })
    .await
}

async fn staff_step(mesh: &Mesh, store_id: &str, order_id: &str, step: &str) -> Result<StoreOrder, tonic::Status> {
    let token = mesh.staff(store_id);
    let mut store = mesh.store();
    let (id, rid) = (order_id.to_owned(), format!("{step}-{order_id}"));
    let order = match step {
        "cook" => {
            store.start_cooking(authed(StartCookingRequest { order_id: id, request_id: rid }, &token)).await?.into_inner().order
        }
        "deliver" => {
            store.start_delivery(authed(StartDeliveryRequest { order_id: id, request_id: rid }, &token)).await?.into_inner().order
        }
        "complete" => {
            store
                .complete_delivery(authed(CompleteDeliveryRequest { order_id: id, request_id: rid }, &token))
                .await?
                .into_inner()
                .order
        }
        other => panic!("unknown step {other}"),
    };
    Ok(order.expect("order"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_goes_from_placed_to_delivered_with_its_timeline_and_notifications() {
    use OrderStatus::*;
    let mesh = Mesh::start().await;
    let placed = mesh.place("alice", "r1", "seoul-bbq", &[("bulgogi", 2), ("bibimbap", 1)]).await;
    assert_eq!(placed.status(), Placed);
    assert_eq!(placed.total.as_ref().map(|m| m.amount_minor), Some(2 * 18_000 + 12_000), "priced from the menu");
    assert_eq!(placed.payment.as_ref().map(|p| p.state()), Some(PaymentState::Captured));

    let mut watch = mesh
        .order()
        .watch_order(authed(WatchOrderRequest { order_id: placed.order_id.clone() }, &mesh.customer("alice")))
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("current state first").expect("ok").order.expect("order");
    assert_eq!(first.order_id, placed.order_id);

    mesh.wait_status("alice", &placed.order_id, Accepted).await;
    for step in ["cook", "deliver", "complete"] {
        staff_step(&mesh, "seoul-bbq", &placed.order_id, step).await.expect("staff step");
    }

    let mut seen = vec![first.status()];
    while let Some(update) = tokio::time::timeout(SAGA_TIMEOUT, watch.next()).await.expect("the stream moves on") {
        seen.push(update.expect("ok").order.expect("order").status());
    }
    assert_eq!(seen.last(), Some(&Delivered), "the stream ends at the final state: {seen:?}");
    let mut ordered = seen.clone();
    ordered.dedup();
    assert_eq!(ordered, seen, "no state is sent twice in a row");

    let delivered = mesh.wait_status("alice", &placed.order_id, Delivered).await;
    assert_eq!(statuses(&delivered), [Placed, Accepted, Cooking, Delivering, Delivered]);
    let times: Vec<_> = delivered.timeline.iter().map(|c| c.occurred_at.expect("time")).collect();
    assert!(times.windows(2).all(|w| (w[0].seconds, w[0].nanos) <= (w[1].seconds, w[1].nanos)), "timeline in time order");

    use NotificationKind as K;
    let kinds = [K::OrderPlaced, K::OrderAccepted, K::CookingStarted, K::OutForDelivery, K::Delivered];
    let sent = wait_notifications(&mesh, "alice", &placed.order_id, &kinds).await;
    assert_eq!(sent.iter().map(|n| n.kind()).collect::<Vec<_>>(), kinds, "one message per change, in order");
    assert_eq!(mesh.payment_of("alice", &placed.order_id).await.status(), PaymentStatus::Captured);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_places_no_order() {
    let mesh = Mesh::start().await;
    let request = place_request("r-decline", "pizza-napoli", &[("margherita", 1)], "tok_decline");
    let err = mesh.order().place_order(authed(request.clone(), &mesh.customer("alice"))).await.expect_err("declined");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, "PAYMENT_DECLINED");
    let again = mesh.order().place_order(authed(request, &mesh.customer("alice"))).await.expect_err("declined again");
    assert_eq!(again.get_details_error_info().expect("ErrorInfo").reason, "PAYMENT_DECLINED");

    let orders = mesh.order().list_orders(authed(ListOrdersRequest::default(), &mesh.customer("alice"))).await.expect("list");
    assert!(orders.into_inner().orders.is_empty(), "no order exists");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(mesh.store_orders("pizza-napoli").await.is_empty(), "nothing reached the store");
    let all = ListNotificationsRequest { page_size: 100, ..Default::default() };
    let sent = mesh.notification().list_notifications(authed(all, &mesh.customer("alice"))).await.expect("list");
    assert!(sent.into_inner().notifications.is_empty(), "nothing to tell");
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_payment_down_no_order_is_taken_and_a_retry_after_it_returns_charges_once() {
    let mut mesh = Mesh::start().await;
    mesh.stop_service(Service::Payment).await;
    let request = place_request("r-outage", "green-bowl", &[("salmon-poke", 1)], "tok_visa");
    let started = std::time::Instant::now();
    let err = mesh.order().place_order(authed(request.clone(), &mesh.customer("alice"))).await.expect_err("payment is down");
    assert!(started.elapsed() < Duration::from_secs(3), "answered within the payment timeout: {:?}", started.elapsed());
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, "PAYMENT_UNAVAILABLE");
    assert!(err.get_details_retry_info().and_then(|r| r.retry_delay).is_some(), "tells the client when to retry");
    let orders = mesh.order().list_orders(authed(ListOrdersRequest::default(), &mesh.customer("alice"))).await.expect("list");
    assert!(orders.into_inner().orders.is_empty(), "no accepted order exists");

    mesh.start_service(Service::Payment).await;
    let placed = mesh.order().place_order(authed(request.clone(), &mesh.customer("alice"))).await.expect("placed").into_inner();
    let placed = placed.order.expect("order");
    let again = mesh.order().place_order(authed(request, &mesh.customer("alice"))).await.expect("same order").into_inner();
    assert_eq!(again.order.expect("order").order_id, placed.order_id);
    let payment = mesh.payment_of("alice", &placed.order_id).await;
    assert_eq!(payment.payment_id, placed.payment.expect("payment").payment_id, "one payment for the order");
    mesh.wait_status("alice", &placed.order_id, OrderStatus::Accepted).await;
    assert_eq!(mesh.store_orders("green-bowl").await.len(), 1);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_id_is_one_order_and_reusing_it_for_another_order_is_refused() {
    let mesh = Mesh::start().await;
    let first = mesh.place("alice", "same", "seoul-bbq", &[("galbi", 1)]).await;
    let second = mesh.place("alice", "same", "seoul-bbq", &[("galbi", 1)]).await;
    assert_eq!(first.order_id, second.order_id);
    let bob = mesh.place("bob", "same", "seoul-bbq", &[("galbi", 1)]).await;
    assert_ne!(bob.order_id, first.order_id, "request ids are per customer");

    let other = place_request("same", "seoul-bbq", &[("galbi", 2)], "tok_visa");
    let err = mesh.order().place_order(authed(other, &mesh.customer("alice"))).await.expect_err("reused");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, "REQUEST_ID_REUSED");

    eventually(SAGA_TIMEOUT, "both orders in the store", || async {
        (mesh.store_orders("seoul-bbq").await.len() == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(mesh.store_orders("seoul-bbq").await.len(), 2, "each order reached the store once");
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_before_cooking_refunds_once_and_takes_the_order_off_the_kitchen_queue() {
    use OrderStatus::*;
    let mesh = Mesh::start().await;
    let order = mesh.place("alice", "r-cancel", "seoul-bbq", &[("bulgogi", 1)]).await;
    mesh.wait_status("alice", &order.order_id, Accepted).await;
    let cancel =
        || CancelOrderRequest { order_id: order.order_id.clone(), request_id: "c1".into(), reason: "plans changed".into() };
    let cancelled = mesh.order().cancel_order(authed(cancel(), &mesh.customer("alice"))).await.expect("cancelled").into_inner();
    assert_eq!(cancelled.order.expect("order").status(), Cancelled, "the store answered within the wait");

    let refunded = mesh
        .wait_order("alice", &order.order_id, "the refund", |o| {
            o.payment.as_ref().is_some_and(|p| p.state() == PaymentState::Refunded)
        })
        .await;
    assert_eq!(statuses(&refunded), [Placed, Accepted, CancellationRequested, Cancelled]);
    let again = mesh.order().cancel_order(authed(cancel(), &mesh.customer("alice"))).await.expect("idempotent").into_inner();
    assert_eq!(again.order.expect("order").status(), Cancelled);

    let kitchen = mesh.store_orders("seoul-bbq").await;
    assert_eq!(kitchen.iter().map(|o| o.status()).collect::<Vec<_>>(), [StoreOrderStatus::Cancelled]);
    let err = staff_step(&mesh, "seoul-bbq", &order.order_id, "cook").await.expect_err("never cooked");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let payment = mesh.payment_of("alice", &order.order_id).await;
    assert_eq!(payment.status(), PaymentStatus::Refunded);

    use NotificationKind as K;
    let kinds = [K::OrderPlaced, K::OrderAccepted, K::CancellationRequested, K::OrderCancelled, K::RefundIssued];
    let sent = wait_notifications(&mesh, "alice", &order.order_id, &kinds).await;
    assert_eq!(sent.len(), kinds.len(), "one message per change: {:?}", sent.iter().map(|n| n.kind()).collect::<Vec<_>>());
    let refunds = sent.iter().filter(|n| n.kind() == K::RefundIssued).count();
    assert_eq!(refunds, 1);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_after_cooking_started_is_refused_and_changes_nothing() {
    let mesh = Mesh::start().await;
    let order = mesh.place("alice", "r-late", "seoul-bbq", &[("bulgogi", 1)]).await;
    mesh.wait_status("alice", &order.order_id, OrderStatus::Accepted).await;
    staff_step(&mesh, "seoul-bbq", &order.order_id, "cook").await.expect("cooking");
    let cooking = mesh.wait_status("alice", &order.order_id, OrderStatus::Cooking).await;

    let cancel = CancelOrderRequest { order_id: order.order_id.clone(), request_id: "c1".into(), reason: String::new() };
    let err = mesh.order().cancel_order(authed(cancel, &mesh.customer("alice"))).await.expect_err("too late");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let info = err.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "ORDER_NOT_CANCELLABLE");
    assert_eq!(info.metadata.get("status").map(String::as_str), Some("COOKING"));

    let after =
        mesh.order().get_order(authed(GetOrderRequest { order_id: order.order_id.clone() }, &mesh.customer("alice"))).await;
    assert_eq!(after.expect("get").into_inner().order.expect("order"), cooking, "nothing changed");
    assert_eq!(mesh.payment_of("alice", &order.order_id).await.status(), PaymentStatus::Captured);
    assert_eq!(mesh.store_orders("seoul-bbq").await[0].status(), StoreOrderStatus::Cooking);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_the_start_of_cooking_has_exactly_one_winner_and_at_most_one_refund() {
    let mesh = Mesh::start().await;
    let mut outcomes = (0, 0);
    for i in 0..8 {
        let order = mesh.place("alice", &format!("race-{i}"), "pizza-napoli", &[("diavola", 1)]).await;
        mesh.wait_status("alice", &order.order_id, OrderStatus::Accepted).await;
        let cancel = CancelOrderRequest { order_id: order.order_id.clone(), request_id: format!("c{i}"), reason: String::new() };
        let mut orders = mesh.order();
        let token = mesh.customer("alice");
        let (cancelled, cooked) =
            tokio::join!(orders.cancel_order(authed(cancel, &token)), staff_step(&mesh, "pizza-napoli", &order.order_id, "cook"));
        let kitchen =
            mesh.store_orders("pizza-napoli").await.into_iter().find(|o| o.order_id == order.order_id).expect("in the store");
        match (cancelled, cooked) {
            (Ok(_), Err(cook_err)) => {
                outcomes.0 += 1;
                assert_eq!(cook_err.code(), Code::FailedPrecondition);
                assert_eq!(kitchen.status(), StoreOrderStatus::Cancelled);
                let done = mesh
                    .wait_order("alice", &order.order_id, "the refund", |o| {
                        o.payment.as_ref().is_some_and(|p| p.state() == PaymentState::Refunded)
                    })
                    .await;
                assert_eq!(done.status(), OrderStatus::Cancelled);
            }
            (Err(cancel_err), Ok(_)) => {
                outcomes.1 += 1;
                assert_eq!(cancel_err.get_details_error_info().expect("ErrorInfo").reason, "ORDER_NOT_CANCELLABLE");
                assert_eq!(kitchen.status(), StoreOrderStatus::Cooking);
                mesh.wait_status("alice", &order.order_id, OrderStatus::Cooking).await;
                assert_eq!(mesh.payment_of("alice", &order.order_id).await.status(), PaymentStatus::Captured);
            }
            (cancelled, cooked) => panic!("not exactly one winner: cancel {cancelled:?}, cook {cooked:?}"),
        }
    }
    assert_eq!(outcomes.0 + outcomes.1, 8);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_taken_while_the_store_is_down_and_each_reaches_it_once_when_it_is_back() {
    let mut mesh = Mesh::start().await;
    mesh.stop_service(Service::Store).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(mesh.place("alice", &format!("outage-{i}"), "green-bowl", &[("falafel-bowl", 1)]).await.order_id);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in &ids {
        let order = mesh.order().get_order(authed(GetOrderRequest { order_id: id.clone() }, &mesh.customer("alice"))).await;
        assert_eq!(order.expect("get").into_inner().order.expect("order").status(), OrderStatus::Placed, "waiting for the store");
    }

    mesh.start_service(Service::Store).await;
    for id in &ids {
        mesh.wait_status("alice", id, OrderStatus::Accepted).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kitchen = mesh.store_orders("green-bowl").await;
    let mut received: Vec<_> = kitchen.iter().map(|o| o.order_id.clone()).collect();
    received.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(received, expected, "every order once, none twice");
    assert!(kitchen.iter().all(|o| o.version == 1 && o.status() == StoreOrderStatus::Received));
    let report = mesh.assert_invariants().await;
    mesh.print_figures("store down while 20 orders are placed", &report).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_order_is_refunded_and_the_customer_hears_why() {
    let mesh = Mesh::start().await;
    let order = mesh.place("alice", "r-reject", "seoul-bbq", &[("galbi", 2)]).await;
    mesh.wait_status("alice", &order.order_id, OrderStatus::Accepted).await;
    let reject =
        RejectOrderRequest { order_id: order.order_id.clone(), request_id: "rej".into(), reason: "out of short ribs".into() };
    mesh.store().reject_order(authed(reject, &mesh.staff("seoul-bbq"))).await.expect("rejected");
    // The rejection (store events) and the refund (payment events) reach the
    // view in either order; wait for both.
    let done = mesh
        .wait_order("alice", &order.order_id, "rejected and refunded", |o| {
            o.status() == OrderStatus::Rejected && o.payment.as_ref().is_some_and(|p| p.state() == PaymentState::Refunded)
        })
        .await;
    assert_eq!(done.status_reason, "out of short ribs");
    use NotificationKind as K;
    let sent = wait_notifications(&mesh, "alice", &order.order_id, &[K::OrderRejected, K::RefundIssued]).await;
    let rejected = sent.iter().find(|n| n.kind() == K::OrderRejected).expect("rejection message");
    assert!(rejected.body.contains("out of short ribs"), "{}", rejected.body);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_view_dropped_and_rebuilt_from_the_streams_is_identical() {
    use OrderStatus::*;
    let mesh = Mesh::start().await;
    let alice = mesh.customer("alice");
    let mut ids = Vec::new();
    for n in 0..5 {
        let order = mesh.place("alice", &format!("r-view-{n}"), "seoul-bbq", &[("bulgogi", 1)]).await;
        mesh.wait_status("alice", &order.order_id, Accepted).await;
        ids.push(order.order_id);
    }
    // Every ending: delivered, cancelled and refunded, rejected and refunded,
    // a cancel racing the start of cooking, and one still in the queue.
    for step in ["cook", "deliver", "complete"] {
        staff_step(&mesh, "seoul-bbq", &ids[0], step).await.expect(step);
    }
    let cancel =
        |id: &str| CancelOrderRequest { order_id: id.into(), request_id: format!("c-{id}"), reason: "plans changed".into() };
    mesh.order().cancel_order(authed(cancel(&ids[1]), &alice)).await.expect("cancelled");
    let reject = RejectOrderRequest { order_id: ids[2].clone(), request_id: "rej".into(), reason: "out of beef".into() };
    mesh.store().reject_order(authed(reject, &mesh.staff("seoul-bbq"))).await.expect("rejected");
    let mut order = mesh.order();
    let (_, _) =
        tokio::join!(order.cancel_order(authed(cancel(&ids[3]), &alice)), staff_step(&mesh, "seoul-bbq", &ids[3], "cook"));
    mesh.assert_invariants().await;
    let refunded = |o: &Order| o.payment.as_ref().is_some_and(|p| p.state() == PaymentState::Refunded);
    mesh.wait_order("alice", &ids[0], "delivered", |o| o.status() == Delivered).await;
    mesh.wait_order("alice", &ids[1], "cancelled and refunded", |o| o.status() == Cancelled && refunded(o)).await;
    mesh.wait_order("alice", &ids[2], "rejected and refunded", |o| o.status() == Rejected && refunded(o)).await;
    // Cooking won the race: CancelOrder may answer as soon as the view shows
    // cooking, before the store's refusal arrives. The refusal changes no
    // status, only `updated_at`, which then passes the last status change.
    let refusal_seen = |o: &Order| {
        let last_change = o.timeline.last().and_then(|c| c.occurred_at);
        o.updated_at.is_some_and(|u| last_change.is_some_and(|c| (u.seconds, u.nanos) > (c.seconds, c.nanos)))
    };
    mesh.wait_order("alice", &ids[3], "settled", |o| (o.status() == Cooking && refusal_seen(o)) || refunded(o)).await;

    let get = |id: String| {
        let mut client = mesh.order();
        let token = alice.clone();
        async move { client.get_order(authed(GetOrderRequest { order_id: id }, &token)).await.expect("get").into_inner().order }
    };
    let mut before = Vec::new();
    for id in &ids {
        before.push(get(id.clone()).await.expect("order"));
    }
    let check = mesh.rebuild_order_view(true).await;
    assert_eq!((check.orders, check.identical, check.differing), (5, 5, 0), "{check:?}");
    assert!(check.events >= 5 + 4 * 2, "placed events and every store change at least: {check:?}");

    // Drop the view: every derived column back to nothing.
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&mesh.database_url("order").await).await.expect("order db");
    sqlx::query(
        "UPDATE orders SET kitchen_status = NULL, kitchen_version = 0, cancellation = 'NONE', refunded_at = NULL, \
         status = 'PLACED', status_reason = '', timeline = '[]', history = '[]', updated_at = placed_at",
    )
    .execute(&db)
    .await
    .expect("drop the view");
    db.close().await;
    let dropped = get(ids[0].clone()).await.expect("order");
    assert_eq!((dropped.status(), dropped.timeline.len()), (Placed, 0), "the view is gone");
    let check = mesh.rebuild_order_view(true).await;
    assert_eq!(check.differing, 5, "a check sees every dropped order: {check:?}");

    let rebuilt = mesh.rebuild_order_view(false).await;
    assert_eq!((rebuilt.orders, rebuilt.differing), (5, 5), "{rebuilt:?}");
    for (id, before) in ids.iter().zip(&before) {
        assert_eq!(&get(id.clone()).await.expect("order"), before, "{id}: the rebuilt view is the one customers saw");
    }
    assert_eq!(mesh.rebuild_order_view(true).await.differing, 0);

    // The consumers go on from the rebuilt view.
    for step in ["cook", "deliver", "complete"] {
        staff_step(&mesh, "seoul-bbq", &ids[4], step).await.expect(step);
    }
    let done = mesh.wait_status("alice", &ids[4], Delivered).await;
    assert_eq!(statuses(&done), [Placed, Accepted, Cooking, Delivering, Delivered]);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_kitchen_delivers_an_order_by_itself() {
    let mesh = Mesh::start_with(MeshOptions { auto_kitchen: Some(Duration::from_millis(50)), ..MeshOptions::default() }).await;
    let order = mesh.place("alice", "r-auto", "green-bowl", &[("green-smoothie", 3)]).await;
    let mut watch = mesh
        .order()
        .watch_order(authed(WatchOrderRequest { order_id: order.order_id.clone() }, &mesh.customer("alice")))
        .await
        .expect("watch")
        .into_inner();
    let mut last = None;
    while let Some(update) = tokio::time::timeout(SAGA_TIMEOUT, watch.next()).await.expect("progress") {
        last = update.expect("ok").order;
    }
    let last = last.expect("at least one update");
    use OrderStatus::*;
    assert_eq!(statuses(&last), [Placed, Accepted, Cooking, Delivering, Delivered]);
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_messages_are_retried_until_accepted_and_each_is_stored_once() {
    let webhook = Webhook::start(3).await;
    let mesh = Mesh::start_with(MeshOptions { webhook_url: Some(webhook.url()), ..MeshOptions::default() }).await;
    let order = mesh.place("alice", "r-hook", "seoul-bbq", &[("bibimbap", 1)]).await;
    use NotificationKind as K;
    let sent = wait_notifications(&mesh, "alice", &order.order_id, &[K::OrderPlaced, K::OrderAccepted]).await;
    assert!(sent.iter().all(|n| n.channel == "webhook"));
    assert!(sent.iter().any(|n| n.attempts > 1), "the refused sends were retried: {sent:?}");

    let calls = webhook.calls();
    assert_eq!(calls.iter().filter(|c| !c.accepted).count(), 3, "three refusals");
    for n in &sent {
        let accepted = calls.iter().filter(|c| c.accepted && c.idempotency_key == n.notification_id).count();
        assert_eq!(accepted, 1, "{} delivered once", n.notification_id);
        let call = calls.iter().find(|c| c.idempotency_key == n.notification_id).expect("called");
        assert!(call.body.contains(&order.order_id) && call.body.contains("\"customer_id\":\"alice\""), "{}", call.body);
    }
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_notifications_streams_each_new_message_as_it_happens() {
    let mesh = Mesh::start().await;
    let request = WatchNotificationsRequest { order_id: String::new(), include_existing: false };
    let mut stream =
        mesh.notification().watch_notifications(authed(request, &mesh.customer("carol"))).await.expect("watch").into_inner();
    let order = mesh.place("carol", "r-watch", "pizza-napoli", &[("calzone", 1)]).await;
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let next = tokio::time::timeout(SAGA_TIMEOUT, stream.next()).await.expect("a message").expect("open").expect("ok");
        let n = next.notification.expect("notification");
        assert_eq!((n.customer_id.as_str(), n.order_id.as_str()), ("carol", order.order_id.as_str()));
        kinds.push(n.kind());
    }
    // Placed comes from order's events and accepted from store's: two streams,
    // so either may be recorded first. Both must arrive, each once.
    let mut arrived = kinds.clone();
    arrived.sort_by_key(|k| *k as i32);
    assert_eq!(arrived, [NotificationKind::OrderPlaced, NotificationKind::OrderAccepted]);

    let replay = WatchNotificationsRequest { order_id: order.order_id.clone(), include_existing: true };
    let mut again =
        mesh.notification().watch_notifications(authed(replay, &mesh.customer("carol"))).await.expect("watch").into_inner();
    let first = tokio::time::timeout(SAGA_TIMEOUT, again.next()).await.expect("replayed").expect("open").expect("ok");
    assert_eq!(first.notification.expect("n").kind(), kinds[0], "existing messages come first, in the order they were created");
    mesh.assert_invariants().await;
}
