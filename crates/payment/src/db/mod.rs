//! Every SQL statement of the payment service.

use std::collections::HashSet;

use foodmesh_platform::{
    db::{Migrations, Params, padded},
    money::{Currency, Money},
    time::Timestamp,
};
use sqlx::{Any, AnyConnection, Executor, Row, any::AnyRow};

use crate::domain::{Payment, PaymentId, PaymentStatus};

/// The payment service's migrations.
pub fn migrations() -> Migrations {
    Migrations { sqlite: sqlx::migrate!("migrations/sqlite"), postgres: sqlx::migrate!("migrations/postgres") }
}

/// `SELECT` of every payment column with a `WHERE` condition, as one static string.
macro_rules! select_payments_where {
    ($condition:literal) => {
        concat!(
            "SELECT payment_id, idempotency_key, order_id, customer_id, currency, amount_minor, fingerprint, ",
            "status, decline_reason, refund_reason, created_at, refunded_at FROM payments WHERE ",
            $condition
        )
    };
}

/// A payment by its idempotency key.
pub async fn by_key<'c>(db: impl Executor<'c, Database = Any>, key: &str) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query(select_payments_where!("idempotency_key = $1"))
        .bind(key)
        .fetch_optional(db)
        .await?
        .map(|r| payment(&r))
        .transpose()
}

/// A payment by its id.
pub async fn by_id<'c>(db: impl Executor<'c, Database = Any>, id: &str) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query(select_payments_where!("payment_id = $1")).bind(id).fetch_optional(db).await?.map(|r| payment(&r)).transpose()
}

/// The payment of an order.
pub async fn by_order<'c>(db: impl Executor<'c, Database = Any>, order_id: &str) -> Result<Option<Payment>, sqlx::Error> {
    sqlx::query(select_payments_where!("order_id = $1")).bind(order_id).fetch_optional(db).await?.map(|r| payment(&r)).transpose()
}

/// Stores new payments, a statement per 64 payments. Returns the ids stored; a payment
/// missing from it lost to an existing one with the same idempotency key or
/// order, which the caller then reads.
pub async fn insert_all(conn: &mut AnyConnection, payments: &[Payment]) -> Result<HashSet<String>, sqlx::Error> {
    const COLUMNS: usize = 12;
    let mut stored = HashSet::new();
    for chunk in payments.chunks(64) {
        // Padded (see `Params`): the repeated last row collides with itself,
        // which `DO NOTHING` skips.
        let sql = format!(
            "INSERT INTO payments (payment_id, idempotency_key, order_id, customer_id, currency, amount_minor, \
             fingerprint, status, decline_reason, refund_reason, created_at, refunded_at) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING payment_id",
            Params::new(conn).padded_rows(chunk.len(), COLUMNS)
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
        for p in padded(chunk) {
            query = query
                .bind(p.id.as_str())
                .bind(&p.idempotency_key)
                .bind(&p.order_id)
                .bind(&p.customer_id)
                .bind(p.amount.currency().code().to_owned())
                .bind(p.amount.amount_minor())
                .bind(&p.fingerprint)
                .bind(status_text(p.status))
                .bind(&p.decline_reason)
                .bind(&p.refund_reason)
                .bind(p.created_at.as_micros())
                .bind(p.refunded_at.map(Timestamp::as_micros));
        }
        stored.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(stored)
}

/// Marks a captured payment refunded. Returns false if it was no longer
/// captured, which happens when two refunds race: only one wins.
pub async fn mark_refunded(conn: &mut AnyConnection, p: &Payment) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE payments SET status = 'REFUNDED', refund_reason = $2, refunded_at = $3 \
         WHERE payment_id = $1 AND status = 'CAPTURED'",
    )
    .bind(p.id.as_str())
    .bind(&p.refund_reason)
    .bind(p.refunded_at.map(Timestamp::as_micros))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

fn status_text(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Captured => "CAPTURED",
        PaymentStatus::Declined => "DECLINED",
        PaymentStatus::Refunded => "REFUNDED",
    }
}

fn payment(row: &AnyRow) -> Result<Payment, sqlx::Error> {
    let corrupt = |what: &str| sqlx::Error::Decode(format!("payments row has an invalid {what}").into());
    let currency = Currency::parse(row.try_get("currency")?).map_err(|_| corrupt("currency"))?;
    let amount = Money::new(currency, row.try_get("amount_minor")?).map_err(|_| corrupt("amount"))?;
    let status = match row.try_get::<&str, _>("status")? {
        "CAPTURED" => PaymentStatus::Captured,
        "DECLINED" => PaymentStatus::Declined,
        "REFUNDED" => PaymentStatus::Refunded,
        _ => return Err(corrupt("status")),
    };
    Ok(Payment {
        id: PaymentId::from_existing(row.try_get::<String, _>("payment_id")?),
        idempotency_key: row.try_get("idempotency_key")?,
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        amount,
        fingerprint: row.try_get("fingerprint")?,
        status,
        decline_reason: row.try_get("decline_reason")?,
        refund_reason: row.try_get("refund_reason")?,
        created_at: Timestamp::from_micros(row.try_get("created_at")?),
        refunded_at: row.try_get::<Option<i64>, _>("refunded_at")?.map(Timestamp::from_micros),
    })
}
