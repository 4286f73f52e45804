//! The saga end to end: place, pay, cook, deliver, notify; declines, payment
//! outages, cancellations and their races, a store outage.

use std::time::Duration;

use foodmesh_e2e::{Mesh, MeshOptions, SAGA_TIMEOUT, Service, Webhook, place_request};
use foodmesh_platform::testing::{authed, eventually};
use foodmesh_proto::{
    notification::v1::{DeliveryStatus, ListNotificationsRequest, Notification, NotificationKind, WatchNotificationsRequest},
    order::v1::{CancelOrderRequest, GetOrderRequest, ListOrdersRequest, Order, OrderStatus, PaymentState, WatchOrderRequest},
    payment::v1::{GetPaymentRequest, PaymentStatus, get_payment_request::Lookup},
    store::v1::{
        CompleteDeliveryRequest, ListStoreOrdersRequest, RejectOrderRequest, StartCookingRequest, StartDeliveryRequest, StoreOrder,
        StoreOrderStatus,
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
    let mut list =
        mesh.notification().list_notifications(authed(request, &mesh.customer(customer))).await.expect("list").into_inner().notifications;
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

async fn store_orders(mesh: &Mesh, store_id: &str) -> Vec<StoreOrder> {
    let request = ListStoreOrdersRequest { page_size: 100, ..Default::default() };
    mesh.store().list_store_orders(authed(request, &mesh.staff(store_id))).await.expect("list").into_inner().orders
}

async fn payment_of(mesh: &Mesh, customer: &str, order_id: &str) -> foodmesh_proto::payment::v1::Payment {
    let request = GetPaymentRequest { lookup: Some(Lookup::OrderId(order_id.into())) };
    mesh.payment().get_payment(authed(request, &mesh.customer(customer))).await.expect("payment").into_inner().payment.expect("payment")
}

async fn staff_step(mesh: &Mesh, store_id: &str, order_id: &str, step: &str) -> Result<StoreOrder, tonic::Status> {
    let token = mesh.staff(store_id);
    let mut store = mesh.store();
    let (id, rid) = (order_id.to_owned(), format!("{step}-{order_id}"));
    let order = match step {
        "cook" => store.start_cooking(authed(StartCookingRequest { order_id: id, request_id: rid }, &token)).await?.into_inner().order,
        "deliver" => store.start_delivery(authed(StartDeliveryRequest { order_id: id, request_id: rid }, &token)).await?.into_inner().order,
        "complete" => {
            store.complete_delivery(authed(CompleteDeliveryRequest { order_id: id, request_id: rid }, &token)).await?.into_inner().order
        }
        other => panic!("unknown step {other}"),
    };
    Ok(order.expect("order"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_goes_from_placed_to_delivered_with_its_timeline_and_notifications() {
    let mesh = Mesh::start().await;
    let placed = mesh.place("alice", "r1", "seoul-bbq", &[("bulgogi", 2), ("bibimbap", 1)]).await;
    assert_eq!(placed.status(), OrderStatus::Placed);
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

    mesh.wait_status("alice", &placed.order_id, OrderStatus::Accepted).await;
    for step in ["cook", "deliver", "complete"] {
        staff_step(&mesh, "seoul-bbq", &placed.order_id, step).await.expect("staff step");
    }

    let mut seen = vec![first.status()];
    while let Some(update) = tokio::time::timeout(SAGA_TIMEOUT, watch.next()).await.expect("the stream moves on") {
        seen.push(update.expect("ok").order.expect("order").status());
    }
    assert_eq!(seen.last(), Some(&OrderStatus::Delivered), "the stream ends at the final state: {seen:?}");
    let mut ordered = seen.clone();
    ordered.dedup();
    assert_eq!(ordered, seen, "no state is sent twice in a row");

    let delivered = mesh.wait_status("alice", &placed.order_id, OrderStatus::Delivered).await;
    use OrderStatus::*;
    assert_eq!(statuses(&delivered), [Placed, Accepted, Cooking, Delivering, Delivered]);
    let times: Vec<_> = delivered.timeline.iter().map(|c| c.occurred_at.clone().expect("time")).collect();
    assert!(times.windows(2).all(|w| (w[0].seconds, w[0].nanos) <= (w[1].seconds, w[1].nanos)), "timeline in time order");

    use NotificationKind as K;
    let kinds = [K::OrderPlaced, K::OrderAccepted, K::CookingStarted, K::OutForDelivery, K::Delivered];
    let sent = wait_notifications(&mesh, "alice", &placed.order_id, &kinds).await;
    assert_eq!(sent.iter().map(|n| n.kind()).collect::<Vec<_>>(), kinds, "one message per change, in order");
    assert_eq!(payment_of(&mesh, "alice", &placed.order_id).await.status(), PaymentStatus::Captured);
}
