//! The consumer side of exactly-once effects: an event's id is recorded in the
//! same transaction as its effect, and a second delivery finds it there.

use sqlx::AnyConnection;

use crate::time::Timestamp;

/// Records that `consumer` is applying `event_id` now. Returns `false` if it
/// was applied before: the caller then skips the effect (and still acks).
///
/// On PostgreSQL, a second replica inserting the same id waits for the first
/// one's transaction and then finds the row, so concurrent deliveries apply once.
pub async fn first_delivery(conn: &mut AnyConnection, consumer: &str, event_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(Timestamp::now().as_micros())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
