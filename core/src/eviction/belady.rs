//! Belady's MIN (Belady, "A study of replacement algorithms for a
//! virtual-storage computer", IBM Systems Journal 5(2), 1966), the offline
//! optimum: [`EvictionPolicy::needs_future`] is true, every insert and hit
//! records the block's next use ([`Access::next_use`], `u64::MAX` = never)
//! and its depth, and the victim is the evictable block used farthest in
//! the future, ties going to the greater depth, then to the higher slot.
//! Because the cache inserts before it evicts, a newcomer used later than
//! every resident block is itself the victim (it bypasses the cache), which
//! is still optimal. With prefix-chained keys every request containing a
//! block contains its ancestors, so an ancestor's next use is never later
//! than a descendant's; breaking ties towards deeper blocks then keeps the
//! cache prefix-closed (a block is resident only with its ancestors), so
//! block hits equal prefix hits and MIN stays optimal for prefix hits when
//! the whole request is inserted before eviction. A set-aside block keeps
//! its next use and depth (hits while aside update them) and becomes a
//! candidate again on `on_evictable`. The candidates are a binary max-heap
//! of (next use, depth, slot, stamp) with lazy deletion: an entry counts
//! only while its stamp is the slot's current one and the block is
//! evictable; stale entries are skipped when they reach the top and the
//! heap is compacted once they outnumber the live ones.

use super::heap::{Entry, LazyHeap};
use super::slots::{Flags, LIVE, QUEUED};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};

/// A heap entry: (next use, depth, slot, stamp); the greatest is the victim.
type Candidate = (u64, u32, u32, u32);

impl Entry for Candidate {
    /// The stamp.
    type Id = u32;
    #[inline]
    fn slot(&self) -> u32 {
        self.2
    }
    #[inline]
    fn id(&self) -> u32 {
        self.3
    }
}

#[derive(Default)]
pub struct Belady {
    /// The candidates; a slot's stamp goes up by one with each entry pushed
    /// for it.
    heap: LazyHeap<Candidate>,
    /// Per slot: next use, depth, and whether the slot holds a block and
    /// whether it is evictable.
    next_use: Vec<u64>,
    depth: Vec<u32>,
    flags: Flags,
}

impl Belady {
    pub fn new() -> Belady {
        Belady::default()
    }

    /// Pushes the current entry of slot `s`, with a new stamp.
    #[inline]
    fn push(&mut self, s: usize) {
        let stamp = self.heap.last_id(s).wrapping_add(1);
        self.heap
            .push((self.next_use[s], self.depth[s], s as u32, stamp));
    }
}

impl EvictionPolicy for Belady {
    fn name(&self) -> &'static str {
        "belady"
    }

    fn needs_future(&self) -> bool {
        true
    }

    fn on_insert(&mut self, slot: Slot, _key: BlockKey, a: &Access) {
        let s = slot.0 as usize;
        if self.next_use.len() <= s {
            self.next_use.resize(s + 1, 0);
            self.depth.resize(s + 1, 0);
            self.heap.ensure(s);
        }
        self.heap.forget(s);
        self.next_use[s] = a.next_use;
        self.depth[s] = a.depth;
        self.flags.insert(slot.0, 0);
        self.push(s);
    }

    fn on_hit(&mut self, slot: Slot, a: &Access) {
        let (s, f) = (slot.0 as usize, self.flags.get(slot.0));
        if f & LIVE == 0 {
            return;
        }
        self.heap.forget(s);
        self.next_use[s] = a.next_use;
        self.depth[s] = a.depth;
        if f & QUEUED != 0 {
            self.push(s);
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        // The heap entry stays and is skipped while the block is set aside.
        self.flags.unqueue(slot.0);
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        let s = slot.0 as usize;
        if self.flags.requeue(slot.0).is_some() && self.heap.current(s).is_none() {
            self.push(s);
        }
    }

    fn on_remove(&mut self, slot: Slot) {
        if self.flags.clear(slot.0).is_some() {
            self.heap.forget(slot.0 as usize);
        }
    }

    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        while let Some((_, _, s, _)) = self.heap.pop() {
            // The slot's entry left the heap either way.
            if !self.flags.is_queued(s) {
                // Set aside: pushed again when it returns.
                continue;
            }
            self.flags.evicted(s);
            return Some(Slot(s));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Belady;
    use crate::eviction::testkit::{
        check_contract_with, check_victims, facts, hit_positions, next_uses, Harness, VictimRule,
    };
    use crate::eviction::{Access, EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};
    use std::cmp::Reverse;

    #[test]
    fn textbook_min() {
        // The classic string 1 2 3 4 1 2 5 1 2 3 4 5 with 3 frames; next
        // uses are positions. Slots: 1->0, 2->1, 3->2, 4->3.
        // pos 3, 4 in: next uses 1@4 2@5 3@9 4@10: 4 itself goes (bypass)
        // pos 4, 5: hits on 1 (next 7) and 2 (next 8)
        // pos 6, 5 in (slot 3, next 11): 1@7 2@8 3@9 5@11: 5 goes
        // pos 7-9: hits on 1, 2, 3 (none used again: next = never)
        // pos 10, 4 in (slot 3, never): all never, depth 0 all: the
        //         highest slot, 3, goes: 4
        // pos 11, 5 in: likewise 5 goes
        // 7 misses, as many as MIN's textbook count for this string.
        let keys = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5];
        let nu = next_uses(&keys);
        let mut h = Harness::new(PolicyKind::Belady, 3);
        assert!(h.policy.needs_future());
        let hits: Vec<bool> = keys
            .iter()
            .zip(&nu)
            .map(|(&k, &n)| h.access_with(k, facts(1, 0, 1.0, n)))
            .collect();
        assert_eq!(hit_positions(&hits), vec![4, 5, 7, 8, 9]);
        assert_eq!(h.evicted, vec![4, 5, 4, 5]);
        assert_eq!(h.resident(), vec![1, 2, 3]);
    }

    #[test]
    fn ties_go_deeper_first_keeping_the_cache_prefix_closed() {
        // Request times as next uses: request 0 = chain x0 x1 x2 (keys
        // 10 11 12, depths 0 1 2), all used again by request 1. The chain
        // is put in slots 2, 1, 0 (reused in that order), so "higher slot
        // first" alone would evict x0 and break the prefix.
        let mut h = Harness::new(PolicyKind::Belady, 10);
        for k in [1, 2, 3] {
            h.access(k);
        }
        for k in [1, 2, 3] {
            h.remove(k);
        }
        for (k, d) in [(10, 0), (11, 1), (12, 2)] {
            h.access_with(k, facts(1, d, 1.0, 1));
        }
        assert_eq!(h.slot(10), Slot(2));
        assert_eq!(h.slot(12), Slot(0));
        // Bring the cache down to 2: next uses tie at 1; the deepest, x2,
        // goes; then 1: x1 goes; x0 stays.
        h.capacity = 2;
        h.shrink();
        assert_eq!(h.evicted, vec![12]);
        h.capacity = 1;
        h.shrink();
        assert_eq!(h.evicted, vec![12, 11]);
        assert_eq!(h.resident(), vec![10]);
    }

    #[test]
    fn hits_and_set_aside_update_next_use() {
        let now = Nanos::ZERO;
        let mut p = Belady::new();
        p.on_insert(Slot(0), BlockKey(0), &facts(1, 0, 1.0, 10));
        p.on_insert(Slot(1), BlockKey(1), &facts(1, 0, 1.0, 20));
        p.on_insert(Slot(2), BlockKey(2), &facts(1, 0, 1.0, 30));
        // 2 (farthest) is set aside and its next use moves up to 5.
        p.on_unevictable(Slot(2));
        p.on_hit(Slot(2), &facts(1, 0, 1.0, 5));
        // 0 is hit: next use 40.
        p.on_hit(Slot(0), &facts(1, 0, 1.0, 40));
        assert_eq!(p.evict(now), Some(Slot(0)));
        p.on_evictable(Slot(2), now);
        assert_eq!(p.evict(now), Some(Slot(1)));
        assert_eq!(p.evict(now), Some(Slot(2)));
        assert_eq!(p.evict(now), None);
        // Set-aside trips and many hits keep the heap small.
        p.on_insert(Slot(0), BlockKey(0), &facts(1, 0, 1.0, 1));
        for i in 0..1000 {
            p.on_unevictable(Slot(0));
            p.on_evictable(Slot(0), now);
            p.on_hit(Slot(0), &facts(1, 0, 1.0, i));
        }
        assert!(p.heap.len() <= 2 * p.heap.live() + 65);
        p.on_remove(Slot(0));
        assert_eq!(p.evict(now), None);
    }

    #[test]
    fn contract_with_other_capacities() {
        for cap in [None, Some(1), Some(3)] {
            check_contract_with(PolicyKind::Belady, cap, Some(24), 1..=10);
        }
    }

    /// MIN by brute force: farthest next use, then deepest, then highest
    /// slot.
    struct Min;

    impl VictimRule for Min {
        /// (next use, depth)
        type Block = (u64, u32);
        type Rank = Reverse<(u64, u32, u32)>;
        fn insert(&mut self, a: &Access) -> (u64, u32) {
            (a.next_use, a.depth)
        }
        fn hit(&mut self, b: &mut (u64, u32), a: &Access) {
            *b = (a.next_use, a.depth);
        }
        fn rank(&self, s: u32, b: &(u64, u32)) -> Self::Rank {
            Reverse((b.0, b.1, s))
        }
    }

    #[test]
    fn victims_match_the_definition() {
        check_victims(PolicyKind::Belady, || Min);
    }
}
