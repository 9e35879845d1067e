//! The event engine: plain-data events in a queue ordered by (time,
//! sequence number), so that events at the same instant keep the order in
//! which they were scheduled and never depend on hash-map order. It counts
//! the events the world processed (stale wake-ups are not counted).

use moonlab_core::Nanos;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Something that happens at an instant.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    /// Request `i` of the trace arrives.
    Arrival(u32),
    /// The network's next flow completion, valid while the network's
    /// generation still equals this one.
    FlowsDue(u64),
    /// The prefill compute of request `r` ends.
    PrefillComputeDone(u32),
    /// Decode instance `d` ends an iteration (or a run of iterations).
    DecodeStepDone(u32),
    /// Take a time-series sample.
    Sample,
}

#[derive(Default)]
pub struct Engine {
    now: Nanos,
    seq: u64,
    queue: BinaryHeap<Reverse<(Nanos, u64, Event)>>,
    processed: u64,
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// The time of the event being processed.
    #[inline]
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Schedules `e` at `at` (never in the past).
    pub fn push(&mut self, at: Nanos, e: Event) {
        debug_assert!(at >= self.now, "event scheduled in the past");
        self.seq += 1;
        self.queue.push(Reverse((at.max(self.now), self.seq, e)));
    }

    /// The next event; the clock moves to its time.
    pub fn pop(&mut self) -> Option<Event> {
        let Reverse((at, _, e)) = self.queue.pop()?;
        debug_assert!(at >= self.now, "time went backwards");
        self.now = at;
        Some(e)
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Counts one processed event (the world calls it for every event that
    /// changed the model; stale wake-ups and samples are not counted).
    #[inline]
    pub fn processed_one(&mut self) {
        self.processed += 1;
    }

    pub fn processed(&self) -> u64 {
        self.processed
    }
}
