//! The event engine: plain-data events in a queue ordered by (time, class,
//! sequence number). At one instant, the end of a decode iteration (or of
//! a vLLM node's iteration) comes
//! before everything else (so whatever happens at that instant sees the
//! iteration done, whether decode is simulated step by step or a run of
//! steps at once); other events keep the order in which they were
//! scheduled, never hash-map order. The engine counts the events the world
//! processed (stale wake-ups are not counted).

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
    /// A pipelined prefill group's first stage finished request `r`'s chunks.
    FirstStageDone(u32),
    /// Decode instance `d` ends an iteration (or a run of iterations),
    /// valid while the instance's generation still equals `generation`.
    DecodeStepDone { d: u32, generation: u32 },
    /// A vLLM node (`colocated.policy`) ends an iteration.
    IterationDone(u32),
    /// Take a time-series sample.
    Sample,
    /// Elastic P/D: the role policy decides.
    RoleTick,
}

#[derive(Default)]
pub struct Engine {
    now: Nanos,
    seq: u64,
    queue: BinaryHeap<Reverse<(Nanos, u8, u64, Event)>>,
    processed: u64,
    /// The time of the last processed event: the end of the simulated work.
    last_processed: Nanos,
    /// Queued periodic events (samples, role decisions).
    periodic: usize,
}

impl Event {
    /// The order among events of one instant: decode iterations end first.
    fn class(&self) -> u8 {
        match self {
            Event::DecodeStepDone { .. } | Event::IterationDone(_) => 0,
            _ => 1,
        }
    }

    /// Samples and role decisions recur while anything else can happen.
    fn periodic(&self) -> bool {
        matches!(self, Event::Sample | Event::RoleTick)
    }
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
        self.periodic += usize::from(e.periodic());
        self.queue
            .push(Reverse((at.max(self.now), e.class(), self.seq, e)));
    }

    /// The next event; the clock moves to its time.
    pub fn pop(&mut self) -> Option<Event> {
        let Reverse((at, _, _, e)) = self.queue.pop()?;
        self.periodic -= usize::from(e.periodic());
        debug_assert!(at >= self.now, "time went backwards");
        self.now = at;
        Some(e)
    }

    /// True if events other than periodic ones are still queued (possibly
    /// stale): the run may still change. Periodic events stop recurring
    /// when this is false, so a request that can no longer move ends the
    /// run (and the invariants report it) instead of hanging it.
    pub fn has_work(&self) -> bool {
        self.queue.len() > self.periodic
    }

    /// Counts one processed event (the world calls it for every event that
    /// changed the model; stale wake-ups and samples are not counted).
    #[inline]
    pub fn processed_one(&mut self) {
        self.processed += 1;
        self.last_processed = self.now;
    }

    /// When the last processed event happened.
    pub fn last_processed(&self) -> Nanos {
        self.last_processed
    }

    pub fn processed(&self) -> u64 {
        self.processed
    }
}
