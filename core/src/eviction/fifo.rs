//! FIFO: evict the block that entered the cache first; hits change nothing.
//!
//! Source: the textbook first-in-first-out replacement (Belady, "A study of
//! replacement algorithms for a virtual-storage computer", IBM Systems
//! Journal 1966, evaluates it). A block that was unevictable and becomes
//! evictable again keeps its place in insertion order: it is re-queued by
//! its insertion sequence number.

use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};
use std::collections::{BTreeSet, VecDeque};

/// Insertion order is a queue of (sequence, slot); entries of blocks that left
/// or were set aside are skipped lazily. A set-aside block whose queue entry
/// was dropped meanwhile goes into an ordered side set when it comes back, so
/// it still leaves in insertion order.
#[derive(Default)]
pub struct Fifo {
    queue: VecDeque<(u64, u32)>,
    returned: BTreeSet<(u64, u32)>,
    /// Per slot: insertion sequence of the current block (0 = none), whether
    /// it is evictable, and whether its queue entry is still queued.
    seq: Vec<u64>,
    evictable: Vec<bool>,
    in_queue: Vec<bool>,
    next_seq: u64,
}

impl Fifo {
    pub fn new() -> Fifo {
        Fifo::default()
    }

    fn ensure(&mut self, s: u32) {
        let need = s as usize + 1;
        if self.seq.len() < need {
            self.seq.resize(need, 0);
            self.evictable.resize(need, false);
            self.in_queue.resize(need, false);
        }
    }

    #[inline]
    fn live(&self, seq: u64, s: u32) -> bool {
        self.seq[s as usize] == seq && self.evictable[s as usize]
    }
}

impl EvictionPolicy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }
    #[inline]
    fn on_insert(&mut self, slot: Slot, _key: BlockKey, _a: &Access) {
        self.ensure(slot.0);
        self.next_seq += 1;
        let s = slot.0 as usize;
        self.seq[s] = self.next_seq;
        self.evictable[s] = true;
        self.in_queue[s] = true;
        self.queue.push_back((self.next_seq, slot.0));
    }
    #[inline]
    fn on_hit(&mut self, _slot: Slot, _a: &Access) {}
    fn on_unevictable(&mut self, slot: Slot) {
        let s = slot.0 as usize;
        if self.evictable[s] {
            self.evictable[s] = false;
            self.returned.remove(&(self.seq[s], slot.0));
        }
    }
    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        let s = slot.0 as usize;
        if !self.evictable[s] {
            self.evictable[s] = true;
            if !self.in_queue[s] {
                self.returned.insert((self.seq[s], slot.0));
            }
        }
    }
    fn on_remove(&mut self, slot: Slot) {
        self.on_unevictable(slot);
        self.seq[slot.0 as usize] = 0;
    }
    #[inline]
    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        while let Some(&(seq, s)) = self.queue.front() {
            if self.live(seq, s) {
                break;
            }
            self.queue.pop_front();
            if self.seq[s as usize] == seq {
                self.in_queue[s as usize] = false;
            }
        }
        let (seq, s) = match (self.queue.front().copied(), self.returned.first().copied()) {
            (Some(q), Some(r)) if r.0 < q.0 => self.returned.pop_first()?,
            (Some(_), _) => self.queue.pop_front()?,
            (None, Some(_)) => self.returned.pop_first()?,
            (None, None) => return None,
        };
        debug_assert!(self.live(seq, s));
        let i = s as usize;
        self.evictable[i] = false;
        self.in_queue[i] = false;
        self.seq[i] = 0;
        Some(Slot(s))
    }
}

#[cfg(test)]
mod tests {
    use crate::eviction::testkit::Harness;
    use crate::eviction::{Access, EvictionPolicy, Fifo, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};

    #[test]
    fn hits_do_not_reorder() {
        // capacity 3: 1 2 3 1 4 -> evicts 1 although it was just hit.
        let mut h = Harness::new(PolicyKind::Fifo, 3);
        let hits = h.run(&[1, 2, 3, 1, 4, 1]);
        assert_eq!(hits, vec![false, false, false, true, false, false]);
        assert_eq!(h.evicted, vec![1, 2]);
    }

    #[test]
    fn set_aside_block_keeps_its_place() {
        let mut f = Fifo::new();
        let a = Access::at(Nanos::ZERO);
        for s in 0..3 {
            f.on_insert(Slot(s), BlockKey(s as u64), &a);
        }
        f.on_unevictable(Slot(0));
        assert_eq!(f.evict(Nanos::ZERO), Some(Slot(1)));
        f.on_evictable(Slot(0), Nanos::ZERO);
        assert_eq!(f.evict(Nanos::ZERO), Some(Slot(0)));
        assert_eq!(f.evict(Nanos::ZERO), Some(Slot(2)));
        assert_eq!(f.evict(Nanos::ZERO), None);
    }
}
