//! The invariant checker finds what it is meant to find: a healthy saga
//! passes, a tampered database does not.

use std::time::Duration;

use foodmesh_e2e::{Mesh, MeshOptions};
use foodmesh_proto::order::v1::OrderStatus;
use sqlx::AnyPool;

async fn tamper(url: &str, sql: &'static str, order_id: &str) {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(url).await.expect("open");
    let done = sqlx::query(sql).bind(order_id).execute(&pool).await.expect("tamper");
    assert_eq!(done.rows_affected(), 1);
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_saga_passes_and_each_tampering_is_reported() {
    let mesh = Mesh::start_with(MeshOptions { auto_kitchen: Some(Duration::from_millis(20)), ..MeshOptions::default() }).await;
    let order = mesh.place("alice", "r-check", "seoul-bbq", &[("bibimbap", 1)]).await;
    mesh.wait_status("alice", &order.order_id, OrderStatus::Delivered).await;
    let clean = mesh.assert_invariants().await;
    assert_eq!((clean.orders, clean.payments), (1, 1));

    // A refund the store never asked for.
    let payment_db = mesh.database_url("payment").await;
    tamper(&payment_db, "UPDATE payments SET status = 'REFUNDED' WHERE order_id = $1", &order.order_id).await;
    let report = mesh.check().await;
    assert!(report.violations.iter().any(|v| v.contains("payment says REFUNDED")), "{:?}", report.violations);
    tamper(&payment_db, "UPDATE payments SET status = 'CAPTURED' WHERE order_id = $1", &order.order_id).await;

    // A view that disagrees with the store.
    let order_db = mesh.database_url("order").await;
    tamper(&order_db, "UPDATE orders SET kitchen_status = 'COOKING' WHERE order_id = $1", &order.order_id).await;
    let report = mesh.check().await;
    assert!(report.violations.iter().any(|v| v.contains("the view says kitchen")), "{:?}", report.violations);

    // A charge whose order is gone.
    tamper(&order_db, "DELETE FROM orders WHERE order_id = $1", &order.order_id).await;
    let report = mesh.check().await;
    assert!(report.violations.iter().any(|v| v.contains("which has no order")), "{:?}", report.violations);
    assert!(report.violations.iter().any(|v| v.contains("unknown to order")), "{:?}", report.violations);
}
