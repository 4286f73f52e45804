//! Injected faults: extra latency, a failure rate and a fixed number of charge
//! slots, so that demos and tests can make payment behave like the slow,
//! saturated dependency the order service must survive. Off by default.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use foodmesh_platform::validation::Violations;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The faults applied to every charge.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultSettings {
    /// The least extra latency.
    pub latency_min: Duration,
    /// The most extra latency; each charge waits a uniformly random time in between.
    pub latency_max: Duration,
    /// The share of charges refused with UNAVAILABLE, 0.0 to 1.0.
    pub failure_rate: f64,
    /// Charges processed at once; the others queue. 0: no limit.
    pub max_concurrent_charges: u32,
}

impl FaultSettings {
    /// Checks the settings' ranges; `prefix` names the fields.
    pub fn validate(&self, prefix: &str) -> Result<(), Violations> {
        let mut violations = Violations::new();
        if self.latency_max < self.latency_min {
            violations.add(format!("{prefix}latency_max_ms"), "must not be below latency_min_ms");
        }
        if self.latency_max > Duration::from_secs(60) {
            violations.add(format!("{prefix}latency_max_ms"), "must be at most 60000");
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            violations.add(format!("{prefix}failure_rate"), "must be between 0.0 and 1.0");
        }
        violations.into_result(())
    }

    /// Whether any fault is on.
    pub fn any(&self) -> bool {
        !self.latency_max.is_zero() || self.failure_rate > 0.0 || self.max_concurrent_charges > 0
    }
}

/// The faults in force, changeable while charges run.
#[derive(Debug)]
pub struct Faults {
    current: Mutex<Current>,
    in_flight: Arc<AtomicU32>,
    waiting: Arc<AtomicU32>,
}

#[derive(Debug)]
struct Current {
    settings: FaultSettings,
    /// The charge slots when `max_concurrent_charges` is set. A change makes a
    /// new semaphore: charges holding or awaiting the old one finish on it.
    slots: Option<Arc<Semaphore>>,
}

/// What entering a charge gave: hold it until the charge is answered.
#[derive(Debug)]
pub struct Admitted {
    _slot: Option<OwnedSemaphorePermit>,
    in_flight: Arc<AtomicU32>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The charge was refused by the injected failure rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectedFailure;

impl Faults {
    /// Faults starting as `settings`.
    pub fn new(settings: FaultSettings) -> Self {
        let faults = Self {
            current: Mutex::new(Current { settings: FaultSettings::default(), slots: None }),
            in_flight: Arc::default(),
            waiting: Arc::default(),
        };
        faults.set(settings);
        faults
    }

    /// The faults in force.
    pub fn settings(&self) -> FaultSettings {
        self.lock().settings
    }

    /// Charges being processed, and charges waiting for a slot.
    pub fn load(&self) -> (u32, u32) {
        (self.in_flight.load(Ordering::Relaxed), self.waiting.load(Ordering::Relaxed))
    }

    /// Replaces the faults in force.
    pub fn set(&self, settings: FaultSettings) {
        let mut current = self.lock();
        if current.settings.max_concurrent_charges != settings.max_concurrent_charges || current.slots.is_none() {
            current.slots =
                (settings.max_concurrent_charges > 0).then(|| Arc::new(Semaphore::new(settings.max_concurrent_charges as usize)));
        }
        current.settings = settings;
        if settings.any() {
            tracing::warn!(?settings, "payment faults in force");
        } else {
            tracing::info!("payment faults off");
        }
    }

    /// Waits for a charge slot, then the injected latency, then draws the
    /// failure rate. Dropping the future (the caller gave up) frees the slot.
    pub async fn enter(&self) -> Result<Admitted, InjectedFailure> {
        let (settings, slots) = {
            let current = self.lock();
            (current.settings, current.slots.clone())
        };
        let slot = match slots {
            Some(slots) => {
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let _waiting = Decrement(&self.waiting);
                // The semaphore is never closed, so acquiring cannot fail.
                slots.acquire_owned().await.ok()
            }
            None => None,
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted { _slot: slot, in_flight: self.in_flight.clone() };
        let latency = random_between(settings.latency_min, settings.latency_max);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if settings.failure_rate > 0.0 && unit_random() < settings.failure_rate {
            return Err(InjectedFailure);
        }
        Ok(admitted)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        // The guarded values are plain data, valid whatever a panicking holder did.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Decrement<'a>(&'a AtomicU32);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A uniform draw in [0, 1): injected faults need spread, not secrecy.
fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

fn random_between(low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    low + (high - low).mul_f64(unit_random())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn latency_stays_in_its_range_and_slots_queue_the_excess() {
        let faults = Arc::new(Faults::new(FaultSettings {
            latency_min: Duration::from_millis(400),
            latency_max: Duration::from_millis(620),
            failure_rate: 0.0,
            max_concurrent_charges: 2,
        }));
        let started = tokio::time::Instant::now();
        let runs = (0..4).map(|_| {
            let faults = faults.clone();
            tokio::spawn(async move {
                let admitted = faults.enter().await.expect("no failure rate");
                let waited = started.elapsed();
                drop(admitted);
                waited
            })
        });
        let mut waited: Vec<Duration> = futures::future::join_all(runs).await.into_iter().map(|r| r.expect("joined")).collect();
        waited.sort();
        // Two run at once: the first two finish within one latency, the other
        // two needed a second one.
        assert!(waited[1] >= Duration::from_millis(400) && waited[1] <= Duration::from_millis(620), "{waited:?}");
        assert!(waited[2] >= Duration::from_millis(800) && waited[3] <= Duration::from_millis(1240), "{waited:?}");
        assert_eq!(faults.load(), (0, 0));
    }

    #[tokio::test]
    async fn failure_rate_one_refuses_every_charge_and_zero_none() {
        let faults = Faults::new(FaultSettings { failure_rate: 1.0, ..FaultSettings::default() });
        for _ in 0..20 {
            assert_eq!(faults.enter().await.err(), Some(InjectedFailure));
        }
        faults.set(FaultSettings::default());
        for _ in 0..20 {
            assert!(faults.enter().await.is_ok());
        }
        let half = Faults::new(FaultSettings { failure_rate: 0.5, ..FaultSettings::default() });
        let mut failed = 0;
        for _ in 0..2000 {
            failed += usize::from(half.enter().await.is_err());
        }
        assert!((800..1200).contains(&failed), "{failed} of 2000 failed at rate 0.5");
    }

    #[test]
    fn out_of_range_settings_name_their_fields() {
        let bad = FaultSettings {
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(5),
            failure_rate: 1.5,
            max_concurrent_charges: 0,
        };
        let violations = bad.validate("faults.").expect_err("invalid");
        let fields: Vec<_> = violations.iter().map(|v| v.field.clone()).collect();
        assert_eq!(fields, ["faults.latency_max_ms", "faults.failure_rate"]);
    }
}
