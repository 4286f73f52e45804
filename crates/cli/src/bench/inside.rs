//! Inside order during the sustained load, read from the histograms order
//! exports (see `platform::metrics`) before and after it: PlaceOrder as
//! order's server saw it (`foodmesh_rpc_duration_seconds`), which tells a
//! tail inside order from one in the load generator or on the way; its
//! stages (`foodmesh_stage_duration_seconds`: recording the attempt, the
//! charge, committing the paid order); and its SQLite writer (`foodmesh_db_writer_wait_seconds`,
//! `foodmesh_db_writer_held_seconds`). A PlaceOrder writes twice through that
//! one writer, so the time its writes waited for their turn and held it is
//! part of its latency, and long background turns (the status view's
//! consumers, relay rounds) are what they wait behind.

use serde::Serialize;

/// One histogram over the sustained load.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TurnFigures {
    /// Observations: calls or turns.
    pub count: u64,
    /// Their mean, in milliseconds.
    pub mean_ms: f64,
    /// Of those, how many took over 20 ms.
    pub over_20_ms: u64,
    /// Of those, how many took over 50 ms.
    pub over_50_ms: u64,
    /// The histogram's bound, in milliseconds, at or under which 99 % fell
    /// (infinite when the top bucket is needed).
    pub p99_at_most_ms: f64,
}

/// Order over the sustained load.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InsideOrder {
    /// PlaceOrder from request to response, as order's server saw it.
    pub place_order_served: TurnFigures,
    /// Its stages: recording the attempt (a group-commit round), the charge
    /// (payment, over gRPC), committing the paid order (another round).
    pub attempt: TurnFigures,
    /// See `attempt`.
    pub charge: TurnFigures,
    /// See `attempt`.
    pub placement: TurnFigures,
    /// How long the writes a caller waited for (PlaceOrder's, CancelOrder's)
    /// waited for the writer's turn.
    pub request_wait: TurnFigures,
    /// How long those writes held the writer.
    pub request_held: TurnFigures,
    /// How long background work waited for its turn.
    pub background_wait: TurnFigures,
    /// How long background work held the writer.
    pub background_held: TurnFigures,
}

impl InsideOrder {
    /// The figures between two scrapes of order's `/metrics`.
    pub fn between(before: &str, after: &str) -> Self {
        let series = |family: &str, label: &str| {
            let seconds = sum(after, family, label) - sum(before, family, label);
            figures(&buckets(before, family, label), &buckets(after, family, label), seconds)
        };
        let (wait, held) = ("foodmesh_db_writer_wait_seconds", "foodmesh_db_writer_held_seconds");
        let (request, background) = ("urgency=\"request\"", "urgency=\"background\"");
        Self {
            place_order_served: series("foodmesh_rpc_duration_seconds", PLACE_ORDER),
            attempt: series(STAGES, "stage=\"attempt\""),
            charge: series(STAGES, "stage=\"charge\""),
            placement: series(STAGES, "stage=\"placement\""),
            request_wait: series(wait, request),
            request_held: series(held, request),
            background_wait: series(wait, background),
            background_held: series(held, background),
        }
    }
}

/// PlaceOrder's series of the RPC histogram.
const PLACE_ORDER: &str = "method=\"foodmesh.order.v1.OrderService/PlaceOrder\"";

/// The stages' histogram (order times PlaceOrder's only).
const STAGES: &str = "foodmesh_stage_duration_seconds";

/// The cumulative buckets of `family` in the series with `label`: (bound in
/// seconds, count).
fn buckets(text: &str, family: &str, label: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{family}_bucket{{");
    text.lines()
        .filter(|line| line.starts_with(&prefix) && line.contains(label))
        .filter_map(|line| {
            let bound = line.split("le=\"").nth(1)?.split('"').next()?;
            let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
            let count = line.rsplit(' ').next()?.parse().ok()?;
            Some((bound, count))
        })
        .collect()
}

/// The `_sum` of `family` in the series with `label`, in seconds (0 if absent).
fn sum(text: &str, family: &str, label: &str) -> f64 {
    let prefix = format!("{family}_sum{{");
    text.lines()
        .find(|line| line.starts_with(&prefix) && line.contains(label))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The figures of the observations between `before` and `after`, which
/// took `seconds` together.
fn figures(before: &[(f64, u64)], after: &[(f64, u64)], seconds: f64) -> TurnFigures {
    // Counts are cumulative and only grow: the run's are the differences.
    let during: Vec<(f64, u64)> = after
        .iter()
        .map(|&(bound, n)| {
            let earlier = before.iter().find(|(b, _)| *b == bound).map_or(0, |(_, m)| *m);
            (bound, n.saturating_sub(earlier))
        })
        .collect();
    let count = during.iter().find(|(b, _)| b.is_infinite()).map_or(0, |(_, n)| *n);
    let over = |seconds: f64| count - during.iter().find(|(b, _)| *b == seconds).map_or(count, |(_, n)| *n);
    let p99 = during.iter().find(|(_, n)| count > 0 && *n as f64 >= 0.99 * count as f64).map_or(0.0, |(bound, _)| bound * 1000.0);
    let mean_ms = if count > 0 { seconds * 1000.0 / count as f64 } else { 0.0 };
    TurnFigures { count, mean_ms, over_20_ms: over(0.02), over_50_ms: over(0.05), p99_at_most_ms: p99 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrape with the writer's series (bounds 1 ms, 20 ms, 50 ms and
    /// +Inf) and PlaceOrder's, between other series.
    fn scrape(request_wait: [u64; 4], background_held: [u64; 4], place_order: [u64; 4]) -> String {
        let mut text = String::from("# TYPE foodmesh_db_writer_wait_seconds histogram\n");
        let series = [
            ("foodmesh_db_writer_wait_seconds", "urgency=\"request\"", request_wait),
            ("foodmesh_db_writer_wait_seconds", "urgency=\"background\"", [7, 7, 7, 7]),
            ("foodmesh_db_writer_held_seconds", "urgency=\"background\"", background_held),
            ("foodmesh_db_writer_held_seconds", "urgency=\"request\"", [9, 9, 9, 9]),
            ("foodmesh_rpc_duration_seconds", "method=\"foodmesh.order.v1.OrderService/GetOrder\"", [5, 5, 5, 5]),
            ("foodmesh_rpc_duration_seconds", PLACE_ORDER, place_order),
            (STAGES, "operation=\"PlaceOrder\",stage=\"charge\"", place_order),
        ];
        for (family, label, counts) in series {
            for (bound, n) in ["0.001", "0.02", "0.05", "+Inf"].iter().zip(counts) {
                text.push_str(&format!("{family}_bucket{{le=\"{bound}\",{label}}} {n}\n"));
            }
            // Each observation 10 ms.
            text.push_str(&format!("{family}_sum{{{label}}} {}\n", counts[3] as f64 * 0.01));
            text.push_str(&format!("{family}_count{{{label}}} {}\n", counts[3]));
        }
        text
    }

    #[test]
    fn the_figures_are_those_of_the_load_alone() {
        let before = scrape([10, 10, 10, 10], [2, 3, 3, 3], [0, 4, 4, 4]);
        // During the load: 1,000 request writes, 30 waited over 20 ms and 5
        // of them over 50 ms; 100 background turns, 12 held over 20 ms;
        // 500 PlaceOrders, 40 over 20 ms and 2 over 50 ms.
        let after = scrape([800, 980, 1_005, 1_010], [52, 91, 98, 103], [100, 464, 502, 504]);
        let figures = InsideOrder::between(&before, &after);
        assert_eq!(
            figures.request_wait,
            TurnFigures { count: 1_000, mean_ms: 10.0, over_20_ms: 30, over_50_ms: 5, p99_at_most_ms: 50.0 }
        );
        assert_eq!(
            figures.background_held,
            TurnFigures { count: 100, mean_ms: 10.0, over_20_ms: 12, over_50_ms: 5, p99_at_most_ms: f64::INFINITY }
        );
        assert_eq!(
            figures.place_order_served,
            TurnFigures { count: 500, mean_ms: 10.0, over_20_ms: 40, over_50_ms: 2, p99_at_most_ms: 50.0 }
        );
        assert_eq!(figures.charge, figures.place_order_served, "the stage read by its label");
        assert_eq!(figures.attempt, TurnFigures::default(), "a stage with no series");
        // The series that did not move.
        assert_eq!(figures.request_held, TurnFigures::default());
        assert_eq!(figures.background_wait, TurnFigures::default());
    }

    #[test]
    fn no_histogram_gives_zeros_not_a_failure() {
        // An endpoint that did not answer gives nothing to read.
        let figures = InsideOrder::between("", "");
        assert_eq!(figures.request_wait, TurnFigures::default());
        assert_eq!(figures.place_order_served.count, 0);
    }
}
