//! Each saga's trace, kept for work that has no incoming event to continue
//! from: store's kitchen steps and staff actions happen minutes after the
//! order arrived, yet belong to the order's trace.
//!
//! [`remember`] stores the trace context of the sagas in the batch being
//! applied (the first one per saga wins: the order's); [`resume`] opens a
//! span per saga under its stored trace and runs the work with those as the
//! trace context of the events it emits.

use std::collections::HashMap;

use sqlx::{AnyConnection, Row};
use tracing::Span;

use crate::{
    db::{Params, padded},
    telemetry,
    time::Timestamp,
};

/// Stores the trace of every saga of the batch being applied, if not known yet.
pub async fn remember(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    let traces: Vec<(String, String)> = telemetry::current_saga_traces().into_iter().collect();
    let now = Timestamp::now().as_micros();
    for chunk in traces.chunks(128) {
        // Padded (see `Params`): the repeated last row conflicts on the
        // table's one key, which the statement skips.
        let mut p = Params::new(conn);
        let sql = format!(
            "INSERT INTO saga_traces (correlation_id, traceparent, created_at) VALUES {} ON CONFLICT (correlation_id) DO NOTHING",
            p.padded_rows(chunk.len(), 3)
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (saga, traceparent) in padded(chunk) {
            query = query.bind(saga).bind(traceparent).bind(now);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Spans named `name`, one per saga in `ids`, each continuing the saga's
/// stored trace (and linked to the current span, the request or timer that
/// caused the work); with the trace context map for
/// [`telemetry::with_saga_traces_sync`]. Keep the spans until the work is done.
pub async fn resume(
    conn: &mut AnyConnection,
    ids: &[&str],
    name: &'static str,
) -> Result<(Vec<Span>, HashMap<String, String>), sqlx::Error> {
    let mut stored = HashMap::new();
    for chunk in ids.chunks(128) {
        let mut p = Params::new(conn);
        let sql =
            format!("SELECT correlation_id, traceparent FROM saga_traces WHERE correlation_id IN ({})", p.in_list(chunk.len()));
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in padded(chunk) {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            stored.insert(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
        }
    }
    let cause = telemetry::traceparent(&Span::current());
    let mut spans = Vec::with_capacity(ids.len());
    let mut traces = HashMap::with_capacity(ids.len());
    for id in ids {
        let span = tracing::info_span!("saga step", otel.name = name, correlation_id = %id, trace_id = tracing::field::Empty);
        telemetry::continue_trace(&span, stored.get(*id).map(String::as_str));
        if let Some(cause) = &cause {
            telemetry::link(&span, cause);
        }
        if let Some(traceparent) = telemetry::traceparent(&span) {
            traces.insert((*id).to_owned(), traceparent);
        }
        spans.push(span);
    }
    Ok((spans, traces))
}
