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

use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};
use std::collections::BinaryHeap;

#[derive(Default)]
pub struct Belady {
    /// Max-heap of (next use, depth, slot, stamp).
    heap: BinaryHeap<(u64, u32, u32, u32)>,
    /// Per slot: next use, depth, stamp (bumped on every change, so older
    /// entries go stale), whether the slot holds a block, whether it is
    /// evictable, and whether an entry with the current stamp is queued.
    next_use: Vec<u64>,
    depth: Vec<u32>,
    stamp: Vec<u32>,
    live: Vec<bool>,
    queued: Vec<bool>,
    in_heap: Vec<bool>,
    /// Slots with an entry of their current stamp in the heap.
    current: usize,
}

impl Belady {
    pub fn new() -> Belady {
        Belady::default()
    }

    /// Makes the current entry of slot `s`, if queued, stale.
    #[inline]
    fn restamp(&mut self, s: usize) {
        self.stamp[s] = self.stamp[s].wrapping_add(1);
        if self.in_heap[s] {
            self.in_heap[s] = false;
            self.current -= 1;
        }
    }

    #[inline]
    fn push(&mut self, s: usize) {
        self.heap
            .push((self.next_use[s], self.depth[s], s as u32, self.stamp[s]));
        self.in_heap[s] = true;
        self.current += 1;
        if self.heap.len() > 2 * self.current + 64 {
            let (stamp, in_heap) = (&self.stamp, &self.in_heap);
            self.heap
                .retain(|&(_, _, s, t)| in_heap[s as usize] && stamp[s as usize] == t);
        }
    }

    #[inline]
    fn holds(&self, s: usize) -> bool {
        self.live.get(s).copied().unwrap_or(false)
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
        if self.live.len() <= s {
            self.next_use.resize(s + 1, 0);
            self.depth.resize(s + 1, 0);
            self.stamp.resize(s + 1, 0);
            self.live.resize(s + 1, false);
            self.queued.resize(s + 1, false);
            self.in_heap.resize(s + 1, false);
        }
        self.restamp(s);
        self.next_use[s] = a.next_use;
        self.depth[s] = a.depth;
        self.live[s] = true;
        self.queued[s] = true;
        self.push(s);
    }

    fn on_hit(&mut self, slot: Slot, a: &Access) {
        let s = slot.0 as usize;
        if !self.holds(s) {
            return;
        }
        self.restamp(s);
        self.next_use[s] = a.next_use;
        self.depth[s] = a.depth;
        if self.queued[s] {
            self.push(s);
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        // The heap entry stays and is skipped while the block is set aside.
        if let Some(q) = self.queued.get_mut(slot.0 as usize) {
            *q = false;
        }
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        let s = slot.0 as usize;
        if !self.holds(s) || self.queued[s] {
            return;
        }
        self.queued[s] = true;
        if !self.in_heap[s] {
            self.push(s);
        }
    }

    fn on_remove(&mut self, slot: Slot) {
        let s = slot.0 as usize;
        if self.holds(s) {
            self.restamp(s);
            self.live[s] = false;
            self.queued[s] = false;
        }
    }

    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        while let Some((_, _, s, t)) = self.heap.pop() {
            let i = s as usize;
            if self.stamp[i] != t || !self.in_heap[i] {
                continue;
            }
            // The current entry: gone from the heap either way.
            self.in_heap[i] = false;
            self.current -= 1;
            if !self.queued[i] {
                // Set aside: pushed again when it returns.
                continue;
            }
            self.stamp[i] = self.stamp[i].wrapping_add(1);
            self.live[i] = false;
            self.queued[i] = false;
            return Some(Slot(s));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Belady;
    use crate::eviction::testkit::{
        check_contract_with, check_victims, facts, next_uses, Harness, VictimModel,
    };
    use crate::eviction::Access;
    use crate::eviction::{EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};
    use std::collections::BTreeMap;

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
        let hit_at: Vec<usize> = (0..hits.len()).filter(|&i| hits[i]).collect();
        assert_eq!(hit_at, vec![4, 5, 7, 8, 9]);
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
        assert!(p.heap.len() <= 2 * p.current + 65);
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
    #[derive(Default)]
    struct Model {
        blocks: BTreeMap<u32, (u64, u32, bool)>,
    }

    impl VictimModel for Model {
        fn insert(&mut self, s: u32, a: &Access) {
            self.blocks.insert(s, (a.next_use, a.depth, true));
        }
        fn hit(&mut self, s: u32, a: &Access) {
            let b = self.blocks.get_mut(&s).unwrap();
            b.0 = a.next_use;
            b.1 = a.depth;
        }
        fn set_aside(&mut self, s: u32) {
            self.blocks.get_mut(&s).unwrap().2 = false;
        }
        fn give_back(&mut self, s: u32) {
            self.blocks.get_mut(&s).unwrap().2 = true;
        }
        fn remove(&mut self, s: u32) {
            self.blocks.remove(&s);
        }
        fn evict(&mut self) -> Option<u32> {
            let (&s, _) = self
                .blocks
                .iter()
                .filter(|(_, b)| b.2)
                .max_by_key(|(&s, b)| (b.0, b.1, s))?;
            self.blocks.remove(&s);
            Some(s)
        }
    }

    #[test]
    fn victims_match_the_definition() {
        check_victims(PolicyKind::Belady, || Box::new(Model::default()));
    }
}
