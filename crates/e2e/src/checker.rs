//! The invariants of the saga, checked by reading every service's database
//! directly (never through the services' APIs, which could hide a fault).
//!
//! Over every order and every payment, once the mesh is quiet:
//! - an accepted order is paid by exactly one captured (or later refunded)
//!   payment, the one it names;
//! - a captured or refunded payment belongs to an order: no charge without
//!   an order;
//! - a refund exists exactly when the store cancelled or rejected the order;
//! - the store holds each order once, and order's status view agrees with
//!   the store's state of it;
//! - each change is announced by at most one notification, and every
//!   notification was sent.

use std::collections::HashMap;

use sqlx::{AnyPool, Row};

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Orders checked.
    pub orders: usize,
    /// Payments checked.
    pub payments: usize,
    /// Orders by their status in order's view.
    pub statuses: std::collections::BTreeMap<String, usize>,
    /// Each broken invariant, with the order it is about.
    pub violations: Vec<String>,
    /// Deliveries the consumers' inboxes recognised as already applied and
    /// skipped, over the four services.
    pub duplicates_suppressed: u64,
    /// Outbox re-publishes JetStream's duplicate window dropped.
    pub republishes_dropped: u64,
}

async fn rows(url: &str, sql: &'static str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(url).await.unwrap_or_else(|e| panic!("checker cannot open {sql}: {e}"));
    let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap_or_else(|e| panic!("checker query {sql}: {e}"));
    let values = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    // Text, or an integer shown as text; NULL is None.
                    row.try_get::<Option<String>, _>(*c)
                        .or_else(|_| row.try_get::<Option<i64>, _>(*c).map(|v| v.map(|n| n.to_string())))
                        .unwrap_or(None)
                })
                .collect()
        })
        .collect();
    pool.close().await;
    values
}

fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("")
}

/// Checks the invariants over the four databases of a test mesh.
pub async fn check_databases(dbs: &foodmesh_platform::testing::TestDatabases) -> Report {
    let (order, payment) = (dbs.url("order").await, dbs.url("payment").await);
    let (store, notification) = (dbs.url("store").await, dbs.url("notification").await);
    check(&order, &payment, &store, &notification).await
}

/// Reads the four databases and checks the invariants.
pub async fn check(order_db: &str, payment_db: &str, store_db: &str, notification_db: &str) -> Report {
    let orders = rows(
        order_db,
        "SELECT order_id, payment_id, status, kitchen_status FROM orders",
        &["order_id", "payment_id", "status", "kitchen_status"],
    )
    .await;
    let payments =
        rows(payment_db, "SELECT payment_id, order_id, status FROM payments", &["payment_id", "order_id", "status"]).await;
    let store = rows(store_db, "SELECT order_id, status FROM store_orders", &["order_id", "status"]).await;
    let notices =
        rows(notification_db, "SELECT order_id, kind, status FROM notifications", &["order_id", "kind", "status"]).await;

    let mut statuses = std::collections::BTreeMap::new();
    for o in &orders {
        *statuses.entry(text(&o[2]).to_owned()).or_default() += 1;
    }
    let mut report = Report { orders: orders.len(), payments: payments.len(), statuses, ..Report::default() };
    for url in [order_db, payment_db, store_db, notification_db] {
        for counter in rows(url, "SELECT name, value FROM counters", &["name", "value"]).await {
            let value: u64 = text(&counter[1]).parse().unwrap_or(0);
            match text(&counter[0]) {
                name if name.starts_with("inbox.duplicates.") => report.duplicates_suppressed += value,
                "outbox.duplicates" => report.republishes_dropped += value,
                _ => {}
            }
        }
    }
    let mut v = |message: String| report.violations.push(message);

    let mut payments_of: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for p in &payments {
        payments_of.entry(text(&p[1])).or_default().push((text(&p[0]), text(&p[2])));
    }
    let mut store_of: HashMap<&str, Vec<&str>> = HashMap::new();
    for s in &store {
        store_of.entry(text(&s[0])).or_default().push(text(&s[1]));
    }
    let order_ids: HashMap<&str, usize> = orders.iter().enumerate().map(|(i, o)| (text(&o[0]), i)).collect();

    for o in &orders {
        let (id, payment_id, status, kitchen) = (text(&o[0]), text(&o[1]), text(&o[2]), text(&o[3]));
        let paid: Vec<&(&str, &str)> = payments_of.get(id).map(|p| p.iter().collect()).unwrap_or_default();
        match paid.as_slice() {
            [(pid, pstatus)] => {
                if *pid != payment_id {
                    v(format!("{id}: names payment {payment_id}, paid by {pid}"));
                }
                if !matches!(*pstatus, "CAPTURED" | "REFUNDED") {
                    v(format!("{id}: accepted, but its payment is {pstatus}"));
                }
                let store_final = store_of.get(id).and_then(|s| s.first().copied()).unwrap_or("");
                let should_refund = matches!(store_final, "CANCELLED" | "REJECTED");
                if should_refund != (*pstatus == "REFUNDED") {
                    v(format!("{id}: store says {store_final}, payment says {pstatus}"));
                }
            }
            [] => v(format!("{id}: accepted without a payment")),
            many => v(format!("{id}: {} payments", many.len())),
        }
        match store_of.get(id).map(Vec::as_slice) {
            Some([store_status]) => {
                if kitchen != *store_status {
                    v(format!("{id}: the view says kitchen {kitchen:?} ({status}), the store says {store_status}"));
                }
            }
            None | Some([]) => v(format!("{id}: never reached the store")),
            Some(many) => v(format!("{id}: in the store {} times", many.len())),
        }
    }
    for p in &payments {
        let (pid, order_id, status) = (text(&p[0]), text(&p[1]), text(&p[2]));
        if matches!(status, "CAPTURED" | "REFUNDED") && !order_ids.contains_key(order_id) {
            v(format!("payment {pid} ({status}) for {order_id}, which has no order"));
        }
    }
    for s in &store {
        if !order_ids.contains_key(text(&s[0])) {
            v(format!("{}: in the store, unknown to order", text(&s[0])));
        }
    }
    let mut per_change: HashMap<(&str, &str), usize> = HashMap::new();
    for n in &notices {
        *per_change.entry((text(&n[0]), text(&n[1]))).or_default() += 1;
        if text(&n[2]) != "SENT" {
            v(format!("{}: notification {} is {}", text(&n[0]), text(&n[1]), text(&n[2])));
        }
    }
    for ((order_id, kind), count) in per_change {
        if count > 1 {
            v(format!("{order_id}: {count} notifications for {kind}"));
        }
    }
    report
}
