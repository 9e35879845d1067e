//! Time for the real backend. Core's rules take the time as an argument
//! ([`Nanos`]); here is the one place that reads a clock: a monotonic clock
//! whose epoch is the moment it was made. Tests use [`ManualClock`] so that
//! lease and timeout behaviour is exact and instant.

use moonlab_core::types::Nanos;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A source of the current time in nanoseconds since its epoch.
pub trait Clock: Send + Sync {
    fn now(&self) -> Nanos;
}

/// The process's monotonic clock (never goes back; not wall time).
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    epoch: Instant,
}

impl MonotonicClock {
    #[allow(clippy::disallowed_methods)] // the one clock read of the real backend
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            epoch: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Nanos {
        Nanos(self.epoch.elapsed().as_nanos().min(u64::MAX as u128) as u64)
    }
}

/// A clock that moves only when told to (tests, scenarios).
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }
    pub fn set(&self, now: Nanos) {
        self.now.store(now.0, Ordering::SeqCst);
    }
    pub fn advance(&self, by: Nanos) {
        self.now.fetch_add(by.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Nanos {
        Nanos(self.now.load(Ordering::SeqCst))
    }
}
