//! Rebuilding the status view from the event streams.
//!
//! An order's view is derived from a set of facts (see `domain::order`), so
//! replaying every event of the streams gives the view the consumers built,
//! whatever order they received the events in.
//!
//! The rebuild is safe while the service runs:
//! - each order is written only if it did not change since it was read;
//! - after writing, the streams are read once more and every event published
//!   since the first read is added to the rebuilt orders. An event a consumer
//!   applied before the rebuild's write was published before it, so this
//!   catch-up restores it; one applied after the write lands on top of the
//!   rebuilt row, as every consumer write does.

use std::collections::{HashMap, HashSet};

use foodmesh_platform::db::{Database, Urgency};
use futures::future::BoxFuture;

use super::Error;
use crate::{
    db,
    domain::order::{Fact, Order},
};

/// Where the rebuild reads events: the streams, from the start.
pub trait EventSource: Send {
    /// Adds to `history` every event published since the previous call (every
    /// event the streams keep, on the first call). Returns how many it read.
    fn read_more<'a>(&'a mut self, history: &'a mut StreamHistory) -> BoxFuture<'a, Result<usize, String>>;
}

/// What the streams say about the orders: each order's facts.
#[derive(Debug, Default)]
pub struct StreamHistory {
    facts: HashMap<String, Vec<Fact>>,
    placed: HashSet<String>,
    /// Events read.
    pub events: usize,
    /// Events that could not be decoded (the consumers parked them too).
    pub undecodable: usize,
}

impl StreamHistory {
    /// Adds one event's fact about `order_id`.
    pub fn add(&mut self, order_id: String, fact: Fact) {
        self.events += 1;
        if matches!(fact, Fact::Placed { .. }) {
            self.placed.insert(order_id);
        } else {
            self.facts.entry(order_id).or_default().push(fact);
        }
    }

    fn facts_of(&self, order_id: &str) -> Vec<Fact> {
        self.facts.get(order_id).cloned().unwrap_or_default()
    }
}

/// What a rebuild found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Orders in the view.
    pub orders: usize,
    /// Events read from the streams.
    pub events: usize,
    /// Orders whose view the streams rebuilt identically.
    pub identical: usize,
    /// Orders whose view differed from what the streams say (and were
    /// rewritten, unless checking only).
    pub differing: usize,
    /// Up to 20 of the differing orders, each with its view and the streams'.
    pub differing_ids: Vec<String>,
    /// Orders placed before the oldest event the streams keep: left as they are.
    pub older_than_streams: usize,
    /// Orders the streams know that this service does not have.
    pub unknown: usize,
}

impl RebuildReport {
    /// The report for an operator, a line per figure.
    pub fn summary(&self, check_only: bool) -> String {
        let verb = if check_only { "differ from the streams" } else { "rebuilt (they differed from the streams)" };
        let mut text = format!(
            "{} orders, {} events read\n{} identical\n{} {verb}\n{} older than the streams (left as they are)\n\
             {} placed in the streams but unknown here",
            self.orders, self.events, self.identical, self.differing, self.older_than_streams, self.unknown
        );
        for id in &self.differing_ids {
            text.push_str(&format!("\n  {id}"));
        }
        text
    }
}

/// Why a rebuild stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// Reading or writing the view failed.
    #[error(transparent)]
    View(#[from] Error),
    /// Reading the streams failed.
    #[error("reading the streams: {0}")]
    Streams(String),
}

impl From<sqlx::Error> for RebuildError {
    fn from(err: sqlx::Error) -> Self {
        RebuildError::View(Error::Db(err))
    }
}

/// How many orders are read per page.
const PAGE: i64 = 500;
/// How many times an order that kept changing under the rebuild is retried.
const ATTEMPTS: usize = 5;
/// How long a check waits before it looks again at an order that differed.
const CATCH_UP: std::time::Duration = std::time::Duration::from_millis(500);
/// How many differing ids a report lists.
const LISTED: usize = 20;

/// Compares every order's view with the one the streams derive and, unless
/// `check_only`, replaces those that differ. Orders whose placement is not in
/// the streams any more keep their view.
pub async fn rebuild_view(db: &Database, source: &mut dyn EventSource, check_only: bool) -> Result<RebuildReport, RebuildError> {
    let mut history = StreamHistory::default();
    source.read_more(&mut history).await.map_err(RebuildError::Streams)?;
    let mut report = RebuildReport::default();
    let mut seen = HashSet::new();
    let mut differing: Vec<String> = Vec::new();
    let mut after = String::new();
    loop {
        let page = db::orders_after(db.reader(), &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.to_string();
        report.orders += page.len();
        for order in &page {
            let id = order.id.to_string();
            if !history.placed.contains(&id) {
                report.older_than_streams += 1;
            } else if !order.rebuilt(history.facts_of(&id)).same_view(order) {
                differing.push(id.clone());
            }
            seen.insert(id);
        }
    }

    let mut described: HashMap<String, String> = HashMap::new();
    if check_only {
        // An order may differ only because an event reached its consumer
        // after the streams were read: read what came since and look again.
        let mut rounds = 0;
        while !differing.is_empty() && rounds < ATTEMPTS {
            rounds += 1;
            // Give the consumers a moment to apply what they hold.
            tokio::time::sleep(CATCH_UP).await;
            if source.read_more(&mut history).await.map_err(RebuildError::Streams)? == 0 && rounds > 1 {
                break;
            }
            let refs: Vec<&str> = differing.iter().map(String::as_str).collect();
            let current = db::orders_by_ids(&mut *db.reader().acquire().await?, &refs).await?;
            described = current
                .iter()
                .filter_map(|o| {
                    let streams = o.rebuilt(history.facts_of(o.id.as_str()));
                    (!streams.same_view(o)).then(|| (o.id.to_string(), describe(o, &streams)))
                })
                .collect();
            differing = described.keys().cloned().collect();
        }
    } else {
        write(db, &history, &differing, true).await?;
        // Events published since the first read: add them to what was
        // rewritten (see the module comment).
        let mut since = StreamHistory::default();
        source.read_more(&mut since).await.map_err(RebuildError::Streams)?;
        history.undecodable += since.undecodable;
        history.events += since.events;
        write(db, &since, &differing, false).await?;
    }

    differing.sort();
    if check_only {
        for id in differing.iter_mut().take(LISTED) {
            if let Some(text) = described.get(id.as_str()) {
                *id = format!("{id}: {text}");
            }
        }
    }
    report.events = history.events;
    report.identical = report.orders - report.older_than_streams - differing.len();
    report.differing = differing.len();
    report.differing_ids = differing.into_iter().take(LISTED).collect();
    report.unknown = history.placed.iter().filter(|id| !seen.contains(*id)).count();
    Ok(report)
}

/// The view and the streams' view of an order, side by side.
fn describe(live: &Order, streams: &Order) -> String {
    let line = |o: &Order| {
        let timeline: Vec<String> = o.timeline.iter().map(|c| format!("{:?}@{}", c.status, c.occurred_at.as_micros())).collect();
        format!("{:?} [{}] ({} facts)", o.status, timeline.join(" "), o.history.len())
    };
    format!("view {} / streams {}", line(live), line(streams))
}

/// Writes the orders `ids`: rebuilt from `history` alone when `replace`, or
/// with `history`'s facts added. An order a consumer changed meanwhile is
/// read and done again.
async fn write(db: &Database, history: &StreamHistory, ids: &[String], replace: bool) -> Result<(), Error> {
    let mut ids: Vec<&str> = ids.iter().map(String::as_str).filter(|id| replace || history.facts.contains_key(*id)).collect();
    for _ in 0..ATTEMPTS {
        if ids.is_empty() {
            return Ok(());
        }
        let mut saved = HashSet::new();
        for chunk in ids.chunks(PAGE as usize) {
            let mut tx = db.begin(Urgency::Background).await?;
            let current = db::orders_by_ids(&mut tx, chunk).await?;
            let fresh: Vec<(Order, i64)> = current
                .into_iter()
                .filter_map(|o| {
                    let read_version = o.version;
                    let facts = history.facts_of(o.id.as_str());
                    let mut next = if replace {
                        o.rebuilt(facts)
                    } else {
                        let mut next = o.clone();
                        let added = facts.into_iter().filter(|f| next.record(f.clone())).count();
                        if added == 0 {
                            return None;
                        }
                        next
                    };
                    next.version = read_version + 1;
                    Some((next, read_version))
                })
                .collect();
            let writes: Vec<(&Order, i64)> = fresh.iter().map(|(o, v)| (o, *v)).collect();
            saved.extend(db::update_orders(&mut tx, &writes).await?);
            tx.commit().await?;
            // Orders with nothing to add count as done.
            let written: HashSet<&str> = fresh.iter().map(|(o, _)| o.id.as_str()).collect();
            saved.extend(chunk.iter().filter(|id| !written.contains(**id)).map(|id| (*id).to_owned()));
        }
        ids.retain(|id| !saved.contains(*id));
    }
    if ids.is_empty() { Ok(()) } else { Err(Error::Conflict) }
}
