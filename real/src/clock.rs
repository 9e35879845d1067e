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

/// The host's CLOCK_MONOTONIC in nanoseconds: one clock shared by every
/// process on the machine (network namespaces included), so that times
/// taken by a replay's workers and its Conductor can be compared.
pub fn host_monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Waits until [`host_monotonic_ns`] reaches `deadline`: the runtime's
/// timer (millisecond ticks) for all but the last millisecond, then a
/// thread's sleep, so a wait ends within tens of microseconds of its
/// deadline rather than up to a millisecond after it. Deadlines are
/// absolute, so a series of waits never drifts.
pub async fn wait_until_ns(deadline: u64) {
    const COARSE: u64 = 1_500_000;
    loop {
        let now = host_monotonic_ns();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > COARSE {
            tokio::time::sleep(std::time::Duration::from_nanos(left - COARSE)).await;
        } else {
            let d = std::time::Duration::from_nanos(left);
            let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
        }
    }
}
