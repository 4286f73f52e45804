//! The consumer side of exactly-once effects: an event's id is recorded in the
//! same transaction as its effect, and a second delivery finds it there.

use std::collections::HashSet;

use sqlx::AnyConnection;

use crate::{
    db::{Params, padded},
    time::Timestamp,
};

/// Records that `consumer` is applying `event_id` now. Returns `false` if it
/// was applied before: the caller then skips the effect (and still acks).
///
/// On PostgreSQL, a second replica inserting the same id waits for the first
/// one's transaction and then finds the row, so concurrent deliveries apply once.
pub async fn first_delivery(conn: &mut AnyConnection, consumer: &str, event_id: &str) -> Result<bool, sqlx::Error> {
    Ok(!first_deliveries(conn, consumer, &[event_id]).await?.is_empty())
}

/// Records a batch of event ids, a statement per 64 ids; returns the ids that were
/// new (the others were applied before and must be skipped).
pub async fn first_deliveries<S: AsRef<str>>(
    conn: &mut AnyConnection,
    consumer: &str,
    event_ids: &[S],
) -> Result<HashSet<String>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(HashSet::new());
    }
    let now = Timestamp::now().as_micros();
    let mut fresh = HashSet::with_capacity(event_ids.len());
    // The rows are padded (see `Params`): a repeated id conflicts with the row
    // its first copy wrote, in this statement or an earlier one, so it is
    // returned once.
    for batch in event_ids.chunks(64) {
        let sql = format!(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES {} ON CONFLICT DO NOTHING RETURNING event_id",
            Params::new(conn).padded_rows(batch.len(), 3)
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
        for id in padded(batch) {
            query = query.bind(consumer).bind(id.as_ref()).bind(now);
        }
        fresh.extend(query.fetch_all(&mut *conn).await?);
    }
    let suppressed = event_ids.len() - fresh.len();
    if suppressed > 0 {
        tracing::debug!(consumer, suppressed, "duplicate deliveries suppressed");
        add_to_counter(conn, &format!("inbox.duplicates.{consumer}"), suppressed).await?;
    }
    Ok(fresh)
}

/// Adds `n` to a counter of the `counters` table, in the caller's
/// transaction (see `migrations/*/2_counters.sql`).
pub async fn add_to_counter(conn: &mut AnyConnection, name: &str, n: usize) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO counters (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
    )
    .bind(name)
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}
