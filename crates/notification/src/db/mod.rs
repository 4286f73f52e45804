//! Every SQL statement of the notification service.

use foodmesh_platform::{
    db::{Migrations, Params, batches, padded},
    time::Timestamp,
};
use sqlx::{Any, AnyConnection, Executor, Row, any::AnyRow};

use crate::domain::{DeliveryStatus, Kind, Notification};

/// The notification service's migrations.
pub fn migrations() -> Migrations {
    Migrations { sqlite: sqlx::migrate!("migrations/sqlite"), postgres: sqlx::migrate!("migrations/postgres") }
}

/// `SELECT` of every notification column with a condition, as a static string.
macro_rules! select_where {
    ($condition:literal) => {
        concat!(
            "SELECT seq, notification_id, customer_id, order_id, kind, title, body, channel, status, attempts, ",
            "occurred_at, sent_at FROM notifications WHERE ",
            $condition
        )
    };
}

/// Stores new notifications, a statement per [`batches`], due at `due_at`: now, or the
/// end of the claim of the dispatcher that will send them (see
/// `NotificationApp::record`). A notification for an order and kind that
/// already has one is dropped: a change is announced once. Returns the
/// notifications stored.
pub async fn insert_all(
    conn: &mut AnyConnection,
    notifications: &[Notification],
    due_at: Timestamp,
) -> Result<Vec<Notification>, sqlx::Error> {
    let mut stored = Vec::new();
    let now = Timestamp::now().as_micros();
    for chunk in batches(notifications, 64) {
        let mut p = Params::new(conn);
        let rows: Vec<String> = chunk.iter().map(|_| format!("({}, 'PENDING', 0)", p.list(10))).collect();
        let sql = format!(
            "INSERT INTO notifications (notification_id, customer_id, order_id, kind, title, body, channel, occurred_at, \
             created_at, next_attempt_at, status, attempts) VALUES {} ON CONFLICT (order_id, kind) DO NOTHING \
             RETURNING seq, notification_id, customer_id, order_id, kind, title, body, channel, status, attempts, occurred_at, sent_at",
            rows.join(", ")
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for n in chunk {
            query = query
                .bind(&n.notification_id)
                .bind(&n.customer_id)
                .bind(&n.order_id)
                .bind(kind_name(n.kind))
                .bind(&n.title)
                .bind(&n.body)
                .bind(&n.channel)
                .bind(n.occurred_at.as_micros())
                .bind(now)
                .bind(due_at.as_micros());
        }
        for row in query.fetch_all(&mut *conn).await? {
            stored.push(notification(&row)?);
        }
    }
    Ok(stored)
}

/// Claims up to `limit` pending notifications whose send is due, oldest
/// first, for this dispatcher: they are due again only at `lease_until`, so
/// another replica's dispatcher does not send them meanwhile. Recording the
/// outcome ends the claim; a dispatcher that dies leaves its claims to expire,
/// and those messages are sent again (with the same `Idempotency-Key`).
pub async fn claim_due(
    conn: &mut AnyConnection,
    now: Timestamp,
    lease_until: Timestamp,
    limit: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    // The outer condition repeats the inner one: on PostgreSQL a concurrent
    // claim of the same rows re-checks it after the first commits, and skips
    // them. SQLite runs one writer at a time.
    sqlx::query(concat!(
        "UPDATE notifications SET next_attempt_at = $1 WHERE status = 'PENDING' AND next_attempt_at <= $2 AND seq IN ",
        "(SELECT seq FROM notifications WHERE status = 'PENDING' AND next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3) ",
        "RETURNING seq, notification_id, customer_id, order_id, kind, title, body, channel, status, attempts, occurred_at, sent_at"
    ))
    .bind(lease_until.as_micros())
    .bind(now.as_micros())
    .bind(limit)
    .fetch_all(conn)
    .await?
    .iter()
    .map(notification)
    .collect()
}

/// Records successful sends (each was attempted once more).
pub async fn mark_sent(conn: &mut AnyConnection, seqs: &[i64], at: Timestamp) -> Result<(), sqlx::Error> {
    if seqs.is_empty() {
        return Ok(());
    }
    let mut p = Params::new(conn);
    let sql = format!(
        "UPDATE notifications SET status = 'SENT', attempts = attempts + 1, sent_at = {}, next_attempt_at = NULL, last_error = '' \
         WHERE status = 'PENDING' AND seq IN ({})",
        p.value(),
        p.in_list(seqs.len())
    );
    // The statement holds only placeholders; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at.as_micros());
    for seq in padded(seqs) {
        query = query.bind(*seq);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Records a failed send: due again at `retry_at`, or FAILED if `None`.
pub async fn mark_failed(
    conn: &mut AnyConnection,
    seq: i64,
    attempts: u32,
    error: &str,
    retry_at: Option<Timestamp>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE notifications SET status = $2, attempts = $3, last_error = $4, next_attempt_at = $5 WHERE seq = $1 AND status = 'PENDING'",
    )
    .bind(seq)
    .bind(if retry_at.is_some() { "PENDING" } else { "FAILED" })
    .bind(i64::from(attempts))
    .bind(error)
    .bind(retry_at.map(Timestamp::as_micros))
    .execute(conn)
    .await?;
    Ok(())
}

/// A page of a customer's notifications, newest first (`before` excludes).
pub async fn page<'c>(
    db: impl Executor<'c, Database = Any>,
    customer_id: &str,
    order_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    sqlx::query(select_where!("customer_id = $1 AND ($2 = '' OR order_id = $2) AND seq < $3 ORDER BY seq DESC LIMIT $4"))
        .bind(customer_id)
        .bind(order_id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(db)
        .await?
        .iter()
        .map(notification)
        .collect()
}

/// A customer's notifications after `seq`, oldest first.
pub async fn after<'c>(
    db: impl Executor<'c, Database = Any>,
    customer_id: &str,
    order_id: &str,
    seq: i64,
    limit: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    sqlx::query(select_where!("customer_id = $1 AND ($2 = '' OR order_id = $2) AND seq > $3 ORDER BY seq LIMIT $4"))
        .bind(customer_id)
        .bind(order_id)
        .bind(seq)
        .bind(limit)
        .fetch_all(db)
        .await?
        .iter()
        .map(notification)
        .collect()
}

/// The highest sequence number so far (0 when empty).
pub async fn last_seq<'c>(db: impl Executor<'c, Database = Any>) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM notifications").fetch_one(db).await?;
    row.try_get("last")
}

const KINDS: [(Kind, &str); 10] = [
    (Kind::OrderPlaced, "ORDER_PLACED"),
    (Kind::OrderAccepted, "ORDER_ACCEPTED"),
    (Kind::CookingStarted, "COOKING_STARTED"),
    (Kind::OutForDelivery, "OUT_FOR_DELIVERY"),
    (Kind::Delivered, "DELIVERED"),
    (Kind::CancellationRequested, "CANCELLATION_REQUESTED"),
    (Kind::OrderCancelled, "ORDER_CANCELLED"),
    (Kind::OrderRejected, "ORDER_REJECTED"),
    (Kind::CancellationRejected, "CANCELLATION_REJECTED"),
    (Kind::RefundIssued, "REFUND_ISSUED"),
];

/// The stored name of a kind.
pub fn kind_name(kind: Kind) -> &'static str {
    KINDS.iter().find(|(k, _)| *k == kind).map_or("UNKNOWN", |(_, name)| name)
}

fn notification(row: &AnyRow) -> Result<Notification, sqlx::Error> {
    let corrupt = |what: &str| sqlx::Error::Decode(format!("notification row has an invalid {what}").into());
    let kind_text: &str = row.try_get("kind")?;
    let kind = KINDS.iter().find(|(_, name)| *name == kind_text).map(|(k, _)| *k).ok_or_else(|| corrupt("kind"))?;
    let status = match row.try_get::<&str, _>("status")? {
        "PENDING" => DeliveryStatus::Pending,
        "SENT" => DeliveryStatus::Sent,
        "FAILED" => DeliveryStatus::Failed,
        _ => return Err(corrupt("status")),
    };
    Ok(Notification {
        seq: row.try_get("seq")?,
        notification_id: row.try_get("notification_id")?,
        customer_id: row.try_get("customer_id")?,
        order_id: row.try_get("order_id")?,
        kind,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        channel: row.try_get("channel")?,
        status,
        attempts: u32::try_from(row.try_get::<i64, _>("attempts")?).unwrap_or(u32::MAX),
        occurred_at: Timestamp::from_micros(row.try_get("occurred_at")?),
        sent_at: row.try_get::<Option<i64>, _>("sent_at")?.map(Timestamp::from_micros),
    })
}
