//! SIEVE (Zhang, Yang, Yue, Vigfusson and Rashmi, "SIEVE is Simpler than
//! LRU: an Efficient Turn-Key Eviction Algorithm for Web Caches", NSDI 2024):
//! one FIFO queue with new blocks at the head, a visited bit per block that a
//! hit sets (a hit never moves the block), and a hand that walks from the
//! tail towards the head clearing visited bits and evicts the first
//! unvisited block; the hand then rests on the victim's predecessor (the next
//! newer block) and wraps to the tail when it runs off the head. In this
//! trait the queue holds only evictable blocks: `on_unevictable` unlinks a
//! block (moving the hand to its newer neighbour first if the hand rests on
//! it), a hit on a set-aside block still sets its visited bit, and
//! `on_evictable` re-enters the block at the head with its visited bit kept,
//! like a fresh insert that remembers being used. Because the cache inserts
//! before it evicts, a just-inserted block is already in the queue when the
//! hand moves: when every block from the hand to the head is visited, the
//! hand clears them and reaches the newcomer (unvisited) before wrapping, so
//! the newcomer goes, where the paper (evicting before inserting) would wrap
//! to the tail. There are no ties: the queue order decides.

use super::list::{Links, List, NIL};
use super::slots::{Flags, QUEUED};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};

/// Per-slot flag (one of [`Flags`]' own bits): the block was hit since the
/// hand last passed it.
const VISITED: u8 = 1;

pub struct Sieve {
    links: Links,
    /// Front (head) = newest, back (tail) = oldest.
    queue: List,
    /// Per slot: residency, whether the block is in the queue, [`VISITED`].
    flags: Flags,
    /// Where the hand rests; `NIL` = start from the tail.
    hand: u32,
}

impl Default for Sieve {
    fn default() -> Self {
        Sieve {
            links: Links::default(),
            queue: List::default(),
            flags: Flags::default(),
            hand: NIL,
        }
    }
}

impl Sieve {
    pub fn new() -> Sieve {
        Sieve::default()
    }

    /// Unlinks a queued slot, moving the hand off it first.
    #[inline]
    fn unlink(&mut self, s: u32) {
        if self.hand == s {
            self.hand = self.links.prev(s);
        }
        self.links.unlink(&mut self.queue, s);
    }
}

impl EvictionPolicy for Sieve {
    fn name(&self) -> &'static str {
        "sieve"
    }

    #[inline]
    fn on_insert(&mut self, slot: Slot, _key: BlockKey, _a: &Access) {
        self.flags.insert(slot.0, 0);
        self.links.push_front(&mut self.queue, slot.0);
    }

    #[inline]
    fn on_hit(&mut self, slot: Slot, _a: &Access) {
        if let Some(f) = self.flags.get_mut(slot.0) {
            *f |= VISITED;
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        if self.flags.unqueue(slot.0).is_some() {
            self.unlink(slot.0);
        }
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        if self.flags.requeue(slot.0).is_some() {
            self.links.push_front(&mut self.queue, slot.0);
        }
    }

    fn on_remove(&mut self, slot: Slot) {
        if self.flags.clear(slot.0).is_some_and(|f| f & QUEUED != 0) {
            self.unlink(slot.0);
        }
    }

    #[inline]
    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        if self.queue.len == 0 {
            return None;
        }
        let mut h = if self.hand == NIL {
            self.queue.tail
        } else {
            self.hand
        };
        // At most one lap clears every visited bit, so this ends within
        // len + 1 steps.
        loop {
            let f = self.flags.get_mut(h).expect("a queued slot has flags");
            if *f & VISITED == 0 {
                break;
            }
            *f &= !VISITED;
            h = self.links.prev(h);
            if h == NIL {
                h = self.queue.tail;
            }
        }
        self.hand = self.links.prev(h);
        self.links.unlink(&mut self.queue, h);
        self.flags.evicted(h);
        Some(Slot(h))
    }
}

#[cfg(test)]
mod tests {
    use super::Sieve;
    use crate::eviction::testkit::{check_contract_with, Harness};
    use crate::eviction::{Access, EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};

    #[test]
    fn hand_keeps_visited_and_rests_on_predecessor() {
        // Capacity 3. Queue written head..tail, `*` = visited, `^` = hand.
        // 1 2 3        -> [3 2 1]
        // 1 (hit)      -> [3 2 1*]
        // 4 (miss)     -> [4 3 2 1*]; hand from tail: 1* cleared, 2 evicted;
        //                 hand rests on 2's predecessor 3 -> [4 3^ 1]
        // 5 (miss)     -> [5 4 3^ 1]; 3 evicted, hand on 4 -> [5 4^ 1]
        // 1 (hit)      -> [5 4^ 1*]
        // 6 (miss)     -> [6 5 4^ 1*]; 4 evicted, hand on 5 -> [6 5^ 1*]
        // 5 (hit)      -> [6 5*^ 1*]
        // 7 (miss)     -> [7 6 5*^ 1*]; 5* cleared, 6 evicted, hand on 7
        //                 -> [7^ 5 1*]
        // 8 (miss)     -> [8 7^ 5 1*]; 7 evicted, hand on 8 -> [8^ 5 1*]
        let mut h = Harness::new(PolicyKind::Sieve, 3);
        let hits = h.run(&[1, 2, 3, 1, 4, 5, 1, 6, 5, 7, 8]);
        let want = [
            false, false, false, true, false, false, true, false, true, false, false,
        ];
        assert_eq!(hits, want);
        assert_eq!(h.evicted, vec![2, 3, 4, 6, 7]);
        assert_eq!(h.resident(), vec![1, 5, 8]);
        // 9 (miss)     -> [9 8^ 5 1*]; 8 evicted, hand on 9 -> [9^ 5 1*]
        // 10 (miss)    -> [10 9^ 5 1*]; 9 evicted -> [10^ 5 1*]
        // The hand never went back to 5 (cleared) or 1*: new one-hit blocks
        // are demoted quickly, as in the paper.
        h.run(&[9, 10]);
        assert_eq!(h.evicted, vec![2, 3, 4, 6, 7, 8, 9]);
        assert_eq!(h.resident(), vec![1, 5, 10]);
    }

    #[test]
    fn hand_wraps_to_the_tail() {
        // Capacity 3: 1 2 3, all hit -> [3* 2* 1*].
        // 4 (miss) -> [4 3* 2* 1*]: the hand clears 1, 2, 3 and reaches the
        // unvisited newcomer 4, which goes; its predecessor is none, so the
        // hand wraps: [3 2 1], hand at the tail.
        // 5 (miss) -> [5 3 2 1]: the tail 1 is now unvisited and goes; the
        // hand rests on 2.
        // 2 (hit) -> 2*; 6 (miss) -> [6 5 3 2*^]: 2* cleared, hand moves to
        // 3, which goes; hand on 5.
        let mut h = Harness::new(PolicyKind::Sieve, 3);
        let hits = h.run(&[1, 2, 3, 1, 2, 3, 4, 5, 2, 6]);
        let want = [
            false, false, false, true, true, true, false, false, true, false,
        ];
        assert_eq!(hits, want);
        assert_eq!(h.evicted, vec![4, 1, 3]);
        assert_eq!(h.resident(), vec![2, 5, 6]);
    }

    #[test]
    fn set_aside_block_returns_at_head_with_its_visited_bit() {
        // Capacity 3: 1 2 3 -> [3 2 1]. Set 1 aside: [3 2]; hit it while set
        // aside (visited), give it back: [1* 3 2].
        // 4 (miss) -> [4 1* 3 2]: the tail 2 goes; hand on 3.
        // 5 (miss) -> [5 4 1* 3^]: 3 goes; hand on 1*.
        // 6 (miss) -> [6 5 4 1*^]: 1* cleared, 4 goes; hand on 5.
        let mut h = Harness::new(PolicyKind::Sieve, 3);
        h.run(&[1, 2, 3]);
        h.set_aside(1);
        assert!(h.access(1));
        h.give_back(1);
        h.run(&[4, 5, 6]);
        assert_eq!(h.evicted, vec![2, 3, 4]);
        assert_eq!(h.resident(), vec![1, 5, 6]);
    }

    #[test]
    fn hand_moves_off_a_slot_being_unlinked() {
        let a = Access::at(Nanos::ZERO);
        let mut p = Sieve::new();
        for s in 0..4 {
            p.on_insert(Slot(s), BlockKey(s as u64), &a);
        }
        // [3 2 1 0]; 0 is hit, 1 goes and the hand rests on 2.
        p.on_hit(Slot(0), &a);
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(1)));
        assert_eq!(p.hand, 2);
        // Pinning 2 moves the hand to 3 (towards the head) first.
        p.on_unevictable(Slot(2));
        assert_eq!(p.hand, 3);
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(3)));
        // The hand ran off the head: it wraps to the tail, where 0 (its bit
        // cleared by the first sweep) goes.
        assert_eq!(p.hand, super::NIL);
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(0)));
        assert_eq!(p.evict(Nanos::ZERO), None);
        // Removing the slot the hand rests on also moves it.
        p.on_evictable(Slot(2), Nanos::ZERO);
        p.on_insert(Slot(5), BlockKey(5), &a);
        p.on_insert(Slot(6), BlockKey(6), &a);
        p.on_hit(Slot(2), &a);
        // [6 5 2*]: 2* cleared, 5 goes, hand on 6.
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(5)));
        assert_eq!(p.hand, 6);
        p.on_remove(Slot(6));
        assert_eq!(p.hand, super::NIL);
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(2)));
        assert_eq!(p.evict(Nanos::ZERO), None);
    }

    #[test]
    fn contract_with_other_capacities() {
        for cap in [None, Some(0), Some(1), Some(3)] {
            check_contract_with(PolicyKind::Sieve, cap, Some(24), 1..=10);
        }
    }
}
