//! A customer's cancellation written while the status view applies a batch
//! about the same order, on a real database (SQLite file, or PostgreSQL with
//! `FOODMESH_TEST_BACKEND=postgres`). On SQLite the batch waits for the one
//! writer and reads the order after the cancellation commits. On PostgreSQL
//! it reads the order as committed before, and its write then finds the
//! version moved on: it reads the order again within its transaction
//! instead of failing the batch into a redelivery. Either way nothing is
//! lost: the request's change and the batch's facts both end up in the order.

use std::{sync::Arc, time::Duration};

use foodmesh_order::{
    app::{ChargeOutcome, ChargeRequest, Faults, GatewayError, OrderApp, PaymentGateway, Timing, ViewUpdate},
    db,
    domain::{
        order::{Cancellation, KitchenStatus, Order, OrderStatus},
        placing::{OrderId, PricedLine, PricedOrder},
    },
};
use foodmesh_platform::{
    config::Secret,
    db::{Database, DatabaseSettings, Urgency},
    money::{Currency, Money},
    outbox::OutboxSignal,
    testing::{TestDatabases, backend_from_env},
    time::Timestamp,
};
use futures::future::BoxFuture;

/// These tests place no order through payment.
struct NoPayment;

impl PaymentGateway for NoPayment {
    fn charge<'a>(&'a self, _: ChargeRequest<'a>) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async { Err(GatewayError::Refused("no payment in this test".to_owned())) })
    }
}

async fn database(storage: &TestDatabases) -> Database {
    let settings = DatabaseSettings {
        url: Secret::new(storage.url("order").await),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
        sqlite_synchronous: "FULL".to_owned(),
        sqlite_mmap_mib: 0,
    };
    let db = Database::connect_lazy(&settings).expect("settings");
    db.migrate(&db::migrations()).await.expect("migrations");
    db
}

/// Order's use cases over `db`, with no payment behind them.
fn order_app(db: &Database) -> OrderApp {
    OrderApp::new(
        db.clone(),
        OutboxSignal::default(),
        Arc::new(NoPayment),
        Timing { cancel_wait: Duration::from_millis(100) },
        Faults::default(),
    )
}

/// A paid order, as PlaceOrder commits it.
async fn placed_order(db: &Database) -> Order {
    let won = |minor| Money::new(Currency::KRW, minor).expect("money");
    let priced = PricedOrder {
        store_id: "seoul-bbq".to_owned(),
        store_name: "Seoul BBQ".to_owned(),
        lines: vec![PricedLine {
            menu_item_id: "bulgogi".to_owned(),
            name: "Bulgogi".to_owned(),
            quantity: 1,
            unit_price: won(15_000),
            line_total: won(15_000),
        }],
        total: won(15_000),
        delivery_address: "1 Jongno".to_owned(),
    };
    let (order, _) = Order::place(OrderId::generate(), "alice", priced, "pay_1", Timestamp::now());
    let mut tx = db.begin(Urgency::Request).await.expect("a write");
    db::insert_orders(&mut tx, std::slice::from_ref(&order)).await.expect("insert");
    tx.commit().await.expect("commit");
    order
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_written_while_a_view_batch_is_in_flight_is_kept_with_the_batch() {
    let storage = TestDatabases::new(backend_from_env());
    let db = database(&storage).await;
    let app = Arc::new(order_app(&db));
    let order = placed_order(&db).await;
    let order_id = order.id.to_string();

    // A customer's cancellation is written and not yet committed: on SQLite
    // it holds the writer, on PostgreSQL a lock on the order's row...
    let mut tx = db.begin(Urgency::Request).await.expect("the writer");
    let mut cancelled = db::order(&mut *tx, &order_id).await.expect("read").expect("the order");
    let read_version = cancelled.version;
    cancelled.request_cancellation("changed my mind", Timestamp::now()).expect("cancellable").expect("a change");
    assert!(db::update_order(&mut tx, &cancelled, read_version).await.expect("update"), "the cancellation is written");

    // ...while the store's "received" event is applied: the batch waits for
    // the writer (SQLite), or reads the order as committed and waits for its
    // row (PostgreSQL).
    let received = vec![(
        "evt-received".to_owned(),
        ViewUpdate::Kitchen {
            order_id: order_id.clone(),
            status: KitchenStatus::Received,
            version: 1,
            reason: String::new(),
            occurred_at: Timestamp::now(),
        },
    )];
    let applying = tokio::spawn({
        let app = app.clone();
        async move { app.apply_view_updates("order-view-store", &received).await }
    });
    // Time for the batch to get that far (milliseconds). Were it slower, it
    // would start after the commit: the outcome must be the same, only this
    // test would not have forced the wait.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.commit().await.expect("commit");

    tokio::time::timeout(Duration::from_secs(10), applying)
        .await
        .expect("the batch is applied")
        .expect("task")
        .expect("applied, not refused as a conflict");
    let stored = db::order(db.reader(), &order_id).await.expect("read").expect("the order");
    assert_eq!(stored.cancellation, Cancellation::Requested, "the customer's cancellation is kept: {stored:?}");
    assert_eq!(stored.kitchen.map(|(status, _)| status), Some(KitchenStatus::Received), "the store's event is applied");
    assert_eq!(stored.status, OrderStatus::CancellationRequested);
    assert_eq!(stored.version, order.version + 2, "one change each");
    assert_eq!(stored.history.len(), 3, "placed, cancellation requested, received: {:?}", stored.history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applied_twice_changes_the_order_once() {
    let storage = TestDatabases::new(backend_from_env());
    let db = database(&storage).await;
    let app = order_app(&db);
    let order = placed_order(&db).await;
    let order_id = order.id.to_string();
    let update = |event: &str, status, version| {
        (
            event.to_owned(),
            ViewUpdate::Kitchen {
                order_id: order_id.clone(),
                status,
                version,
                reason: String::new(),
                occurred_at: Timestamp::now(),
            },
        )
    };
    // The same event twice in one batch, then the batch redelivered.
    let batch = vec![
        update("evt-1", KitchenStatus::Received, 1),
        update("evt-1", KitchenStatus::Received, 1),
        update("evt-2", KitchenStatus::Cooking, 2),
    ];
    app.apply_view_updates("order-view-store", &batch).await.expect("applied");
    app.apply_view_updates("order-view-store", &batch).await.expect("applied again");
    let stored = db::order(db.reader(), &order_id).await.expect("read").expect("the order");
    assert_eq!(stored.kitchen, Some((KitchenStatus::Cooking, 2)));
    assert_eq!(stored.version, order.version + 2, "two new facts, each once");
}
