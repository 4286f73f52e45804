//! Time as foodmesh stores it: microseconds since the Unix epoch, in UTC.
//!
//! An `i64` of microseconds is exact, orders correctly, and maps onto an
//! integer column in SQLite and PostgreSQL alike; it covers ±292,000 years.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Self(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
    }

    /// The time `micros` microseconds after the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// This time plus `duration`, saturating.
    pub fn plus(self, duration: Duration) -> Self {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }

    /// How long after `earlier` this is; zero if it is not after.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0 - earlier.0).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_zero_for_an_earlier_time() {
        let t = Timestamp::from_micros(10);
        assert_eq!(t.since(Timestamp::from_micros(4)), Duration::from_micros(6));
        assert_eq!(Timestamp::from_micros(4).since(t), Duration::ZERO);
    }
}
