//! Several replicas of store, order and notification on the same durable
//! consumers and database: the work is shared and every effect happens once.

use std::{collections::HashMap, time::Duration};

use foodmesh_e2e::{Mesh, MeshOptions, SAGA_TIMEOUT, Service, Webhook};
use foodmesh_platform::testing::{authed, eventually};
use foodmesh_proto::{
    order::v1::{GetOrderRequest, Order, OrderStatus},
    store::v1::ListStoreOrdersRequest,
};

const STORES: [(&str, &str); 3] = [("seoul-bbq", "bibimbap"), ("pizza-napoli", "calzone"), ("green-bowl", "green-smoothie")];

async fn place_many(mesh: &Mesh, round: &str, count: usize) -> Vec<(String, Order)> {
    let placing = (0..count).map(|i| async move {
        let customer = format!("c{i}");
        let (store, item) = STORES[i % STORES.len()];
        let order = mesh.place(&customer, &format!("{round}-{i}"), store, &[(item, 1)]).await;
        (customer, order)
    });
    futures::future::join_all(placing).await
}

/// Waits until every order is delivered and its view has every kitchen step.
/// The store's events reach order's replicas in no fixed order: a replica
/// can apply "delivered" while another still retries "cooking" (its batch lost
/// a write race), and the late fact then fills in the timeline. A CI run on
/// PostgreSQL read a view in that moment.
async fn wait_delivered(mesh: &Mesh, placed: &[(String, Order)]) {
    for (customer, order) in placed {
        let token = mesh.customer(customer);
        eventually(SAGA_TIMEOUT, &format!("{} delivered with its whole timeline", order.order_id), || async {
            let request = GetOrderRequest { order_id: order.order_id.clone() };
            let order = mesh.order().get_order(authed(request, &token)).await.expect("get").into_inner().order.expect("order");
            (order.status() == OrderStatus::Delivered && order.timeline.len() == 5).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_of_store_order_and_notification_apply_and_send_each_change_once() {
    let webhook = Webhook::start(0).await;
    let options =
        MeshOptions { auto_kitchen: Some(Duration::from_millis(30)), webhook_url: Some(webhook.url()), ..MeshOptions::default() };
    let mut mesh = Mesh::start_with(options).await;
    let mut stores = Vec::new();
    for _ in 0..2 {
        stores.push(mesh.start_replica(Service::Store).await);
        mesh.start_replica(Service::Notification).await;
        // Order's replicas share its view consumers and reconciler; customers
        // keep calling the first instance.
        mesh.start_replica(Service::Order).await;
    }
    let mut placed = place_many(&mesh, "three", 30).await;
    wait_delivered(&mesh, &placed).await;

    // The first instances stop: the replicas alone carry on.
    mesh.stop_service(Service::Store).await;
    mesh.stop_service(Service::Notification).await;
    let later = place_many(&mesh, "two", 15).await;
    wait_delivered(&mesh, &later).await;
    placed.extend(later);

    // Every order is in the store's queue once, with each status once.
    let mut queued: HashMap<String, usize> = HashMap::new();
    for (store, _) in STORES {
        let request = ListStoreOrdersRequest { page_size: 100, ..Default::default() };
        // The first store instance is down; ask a replica through the same API.
        let orders = mesh
            .store_at(stores[0])
            .list_store_orders(authed(request, &mesh.staff(store)))
            .await
            .expect("list")
            .into_inner()
            .orders;
        for o in orders {
            *queued.entry(o.order_id).or_default() += 1;
        }
    }
    for (customer, order) in &placed {
        assert_eq!(queued.get(&order.order_id), Some(&1), "{} queued once", order.order_id);
        let request = GetOrderRequest { order_id: order.order_id.clone() };
        let seen = mesh.order().get_order(authed(request, &mesh.customer(customer))).await.expect("get").into_inner();
        let timeline: Vec<OrderStatus> = seen.order.expect("order").timeline.iter().map(|c| c.status()).collect();
        use OrderStatus::*;
        assert_eq!(timeline, [Placed, Accepted, Cooking, Delivering, Delivered], "{}", order.order_id);
    }

    // Five messages per order (placed, accepted, cooking, on its way,
    // delivered), each sent exactly once across the replicas.
    let expected = placed.len() * 5;
    let calls = eventually(SAGA_TIMEOUT, "every notification sent", || async {
        let calls = webhook.calls();
        (calls.len() >= expected).then_some(calls)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let calls = if webhook.calls().len() > calls.len() { webhook.calls() } else { calls };
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for call in &calls {
        *per_key.entry(call.idempotency_key.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "notifications sent more than once: {twice:?}");
    assert_eq!(per_key.len(), expected, "one message per order and change");
    let report = mesh.assert_invariants().await;
    assert_eq!(report.orders, placed.len());
    // The view three order replicas built together is what the streams say.
    let view = mesh.rebuild_order_view(true).await;
    assert_eq!((view.identical, view.differing), (placed.len(), 0), "{view:?}");
    mesh.print_figures("three replicas of store, order and notification", &report).await;
}
