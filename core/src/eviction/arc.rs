//! ARC (Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead Replacement
//! Cache", FAST 2003): two resident LRU lists, T1 (seen once) and T2 (seen
//! at least twice), two ghost LRU lists of keys, B1 and B2, of the blocks
//! evicted from them, and an adaptive target `p` for |T1| in `0..=c`
//! (c = capacity). Because the cache inserts before it evicts, the paper's
//! request handling is split: `on_insert` does the ghost part (a key in B1
//! raises `p` by `δ1 = max(1, |B2| / |B1|)`, one in B2 lowers it by
//! `δ2 = max(1, |B1| / |B2|)`, sizes taken before the key leaves its ghost
//! list, and the block enters T2's MRU end; any other block enters T1's)
//! and trims the ghosts as the paper's case IV does (B1's LRU key goes while
//! |T1| + |B1| > c, then B2's, or B1's if B2 is empty, while the four lists
//! hold more than 2c), and `evict` is the paper's REPLACE: T1's LRU block
//! goes if |T1| ≥ 1 and (|T1| > p, or the last insert was a B2 hit and
//! |T1| = p), else T2's, and falls back to the other list when the chosen
//! one has no evictable block; the victim's key goes to the MRU end of B1
//! (from T1) or B2 (from T2) and the ghosts are trimmed again. The paper
//! runs REPLACE before the missed block joins T1, so `|T1|` here leaves out
//! the plain-miss blocks the cache has inserted but not yet made room for
//! (at most the number of blocks over capacity), which makes one insert
//! followed by one eviction behave exactly as the paper's single step. A hit
//! moves a block to T2's MRU end. Set-aside blocks stay counted in their
//! list (|T1|, |T2| count resident blocks); a hit on one moves it to T2 and
//! `on_evictable` puts it back at the MRU end of its list. Removed blocks
//! leave no ghost. There are no ties: list order decides.

use super::list::{Links, List, TwoQueues, NIL, SECOND as IN_T2};
use super::slots::{LIVE, QUEUED};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};
use rustc_hash::FxHashMap;

/// B1 and B2: keys in an arena of ghost ids with intrusive LRU lists and a
/// key → id map.
#[derive(Default)]
struct Ghosts {
    links: Links,
    b1: List,
    b2: List,
    keys: Vec<BlockKey>,
    in_b2: Vec<bool>,
    map: FxHashMap<BlockKey, u32>,
    free: Vec<u32>,
}

impl Ghosts {
    /// Removes `key` if it is a ghost; returns whether it was in B2.
    #[inline]
    fn take(&mut self, key: BlockKey) -> Option<bool> {
        if self.map.is_empty() {
            return None;
        }
        let g = self.map.remove(&key)?;
        let in_b2 = self.in_b2[g as usize];
        let list = if in_b2 { &mut self.b2 } else { &mut self.b1 };
        self.links.unlink(list, g);
        self.free.push(g);
        Some(in_b2)
    }

    /// Adds `key` at the MRU end of B1 or B2.
    fn push(&mut self, key: BlockKey, in_b2: bool) {
        self.take(key);
        let g = match self.free.pop() {
            Some(g) => g,
            None => match u32::try_from(self.keys.len()) {
                Ok(g) if g != NIL => {
                    self.keys.push(key);
                    self.in_b2.push(in_b2);
                    g
                }
                // 2^32 - 1 ghosts: forget this one.
                _ => return,
            },
        };
        self.keys[g as usize] = key;
        self.in_b2[g as usize] = in_b2;
        self.map.insert(key, g);
        let list = if in_b2 { &mut self.b2 } else { &mut self.b1 };
        self.links.push_front(list, g);
    }

    /// Forgets the LRU key of B1 or B2; false if that list is empty.
    fn drop_lru(&mut self, in_b2: bool) -> bool {
        let list = if in_b2 { &mut self.b2 } else { &mut self.b1 };
        let Some(g) = self.links.pop_back(list) else {
            return false;
        };
        self.map.remove(&self.keys[g as usize]);
        self.free.push(g);
        true
    }
}

pub struct Arc {
    /// T1 (`first`) and T2 (`second`): evictable blocks linked, front = MRU.
    lists: TwoQueues,
    /// Resident blocks of T1 and T2, set-aside ones included.
    t1_count: u64,
    t2_count: u64,
    c: u64,
    p: u64,
    /// The last insert was a B2 ghost hit (the paper's `x ∈ B2` in REPLACE).
    last_b2_hit: bool,
    /// Plain-miss inserts into T1 not yet matched by an eviction.
    pending_misses: u64,
    ghosts: Ghosts,
}

impl Arc {
    /// A policy for a cache of `capacity_blocks` (`u64::MAX` = unbounded).
    pub fn new(capacity_blocks: u64) -> Arc {
        Arc {
            lists: TwoQueues::default(),
            t1_count: 0,
            t2_count: 0,
            c: capacity_blocks,
            p: 0,
            last_b2_hit: false,
            pending_misses: 0,
            ghosts: Ghosts::default(),
        }
    }

    /// The paper's bounds on the directory: |T1| + |B1| ≤ c and
    /// |T1| + |T2| + |B1| + |B2| ≤ 2c (ghosts only; never resident blocks).
    fn trim_ghosts(&mut self) {
        while self.t1_count + self.ghosts.b1.len as u64 > self.c && self.ghosts.drop_lru(false) {}
        let two_c = self.c.saturating_mul(2);
        while self.t1_count + self.t2_count + self.ghosts.b1.len as u64 + self.ghosts.b2.len as u64
            > two_c
        {
            if !self.ghosts.drop_lru(true) && !self.ghosts.drop_lru(false) {
                break;
            }
        }
    }
}

impl EvictionPolicy for Arc {
    fn name(&self) -> &'static str {
        "arc"
    }

    fn on_insert(&mut self, slot: Slot, key: BlockKey, _a: &Access) {
        let (b1, b2) = (self.ghosts.b1.len as u64, self.ghosts.b2.len as u64);
        let in_t2 = match self.ghosts.take(key) {
            Some(false) => {
                let delta = if b1 >= b2 { 1 } else { b2 / b1 };
                self.p = self.p.saturating_add(delta).min(self.c);
                self.last_b2_hit = false;
                true
            }
            Some(true) => {
                let delta = if b2 >= b1 { 1 } else { b1 / b2 };
                self.p = self.p.saturating_sub(delta);
                self.last_b2_hit = true;
                true
            }
            None => {
                self.last_b2_hit = false;
                self.pending_misses += 1;
                false
            }
        };
        if in_t2 {
            self.t2_count += 1;
        } else {
            self.t1_count += 1;
        }
        self.lists.insert(slot.0, key, in_t2);
        let over = (self.t1_count + self.t2_count).saturating_sub(self.c);
        self.pending_misses = self.pending_misses.min(over);
        self.trim_ghosts();
    }

    #[inline]
    fn on_hit(&mut self, slot: Slot, _a: &Access) {
        let f = self.lists.flags.get(slot.0);
        if f & LIVE == 0 {
            return;
        }
        if f & IN_T2 == 0 {
            self.t1_count -= 1;
            self.t2_count += 1;
            self.lists.flags.set(slot.0, f | IN_T2);
            if f & QUEUED != 0 {
                self.lists.unlink(slot.0, false);
                self.lists.push_front(slot.0, true);
            }
        } else if f & QUEUED != 0 {
            self.lists.move_to_front(slot.0, true);
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        self.lists.set_aside(slot.0);
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        self.lists.give_back(slot.0);
    }

    fn on_remove(&mut self, slot: Slot) {
        match self.lists.remove(slot.0) {
            Some(true) => self.t2_count -= 1,
            Some(false) => self.t1_count -= 1,
            None => {}
        }
    }

    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        let t1 = self.t1_count.saturating_sub(self.pending_misses);
        let prefer_t1 = t1 >= 1 && (t1 > self.p || (self.last_b2_hit && t1 == self.p));
        let from_t1 = if prefer_t1 {
            self.lists.first.len > 0
        } else {
            self.lists.second.len == 0
        };
        let s = self.lists.pop_back(!from_t1)?;
        if from_t1 {
            self.t1_count -= 1;
        } else {
            self.t2_count -= 1;
        }
        self.pending_misses = self.pending_misses.saturating_sub(1);
        self.lists.flags.evicted(s);
        self.ghosts.push(self.lists.keys[s as usize], !from_t1);
        self.trim_ghosts();
        Some(Slot(s))
    }
}

#[cfg(test)]
mod tests {
    use super::Arc;
    use crate::eviction::testkit::{check_contract_with, hit_positions, Harness, SlotPool};
    use crate::eviction::{Access, EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};

    fn ghost_keys(p: &Arc, in_b2: bool) -> Vec<u64> {
        let g = &p.ghosts;
        let mut out = vec![];
        let mut c = if in_b2 { g.b2.head } else { g.b1.head };
        while c != super::NIL {
            out.push(g.keys[c as usize].0);
            c = g.links.next(c);
        }
        out
    }

    #[test]
    fn paper_cases_by_hand() {
        // c = 3, p = 0. Lists written MRU..LRU; |T1| in REPLACE is the
        // paper's (before the missed block joins T1).
        //  1 2 3   T1 [3 2 1]
        //  1 hit   T2 [1], T1 [3 2]
        //  4 miss  REPLACE: |T1| = 2 > p = 0: T1's LRU 2 -> B1 [2]
        //  2 in B1 δ1 = 1 (|B1| = 1 ≥ |B2| = 0), p = 1; T2 [2 1];
        //          |T1| = 2 > 1: 3 -> B1 [3]; T1 [4]
        //  5 miss  |T1| = 1, not > p = 1: T2's LRU 1 -> B2 [1]; T1 [5 4]
        //  3 in B1 δ1 = 1 (1 ≥ 1), p = 2; T2 [3 2]; |T1| = 2, not > 2:
        //          T2's LRU 2 -> B2 [2 1]
        //  1 in B2 δ2 = 1 (2 ≥ 0), p = 1; T2 [1 3]; |T1| = 2 > 1: 4 -> B1 [4]
        //  6 miss  |T1| = 1, not > 1: 3 -> B2 [3 2]; T1 [6 5]
        //  2 in B2 δ2 = 1 (2 ≥ 1), p = 0; T2 [2 1]; 5 -> B1 [5 4]; T1 [6]
        //  7 miss  case IV.A: |T1| + |B1| = 3 = c: B1's LRU 4 is dropped;
        //          |T1| = 1 > 0: 6 -> B1 [6 5]; T1 [7]
        //  4 miss  4 was dropped from B1, so a plain miss: 5 is dropped,
        //          7 -> B1 [7 6]; T1 [4]
        let mut h = Harness::new(PolicyKind::Arc, 3);
        let hits = h.run(&[1, 2, 3, 1, 4, 2, 5, 3, 1, 6, 2, 7, 4]);
        assert_eq!(hit_positions(&hits), vec![3]);
        assert_eq!(h.evicted, vec![2, 3, 1, 2, 4, 3, 5, 6, 7]);
        assert_eq!(h.resident(), vec![1, 2, 4]);
    }

    #[test]
    fn same_sequence_state_after_each_step() {
        // The run above through the policy directly, checking p and ghosts.
        let mut p = Arc::new(3);
        let mut slot_of = std::collections::BTreeMap::new();
        let mut slots = SlotPool::default();
        let mut step = |p: &mut Arc, k: u64| {
            let a = Access::at(Nanos::ZERO);
            if let Some(&s) = slot_of.get(&k) {
                p.on_hit(Slot(s), &a);
                return;
            }
            let s = slots.take();
            slot_of.insert(k, s);
            p.on_insert(Slot(s), BlockKey(k), &a);
            if slot_of.len() > 3 {
                let v = p.evict(Nanos::ZERO).unwrap().0;
                slot_of.retain(|_, &mut x| x != v);
                slots.put(v);
            }
        };
        for k in [1, 2, 3, 1, 4, 2] {
            step(&mut p, k);
        }
        assert_eq!(
            (p.p, ghost_keys(&p, false), ghost_keys(&p, true)),
            (1, vec![3], vec![])
        );
        for k in [5, 3] {
            step(&mut p, k);
        }
        assert_eq!(
            (p.p, ghost_keys(&p, false), ghost_keys(&p, true)),
            (2, vec![], vec![2, 1])
        );
        for k in [1, 6, 2] {
            step(&mut p, k);
        }
        assert_eq!(
            (p.p, ghost_keys(&p, false), ghost_keys(&p, true)),
            (0, vec![5, 4], vec![3])
        );
        for k in [7, 4] {
            step(&mut p, k);
        }
        assert_eq!(
            (p.p, ghost_keys(&p, false), ghost_keys(&p, true)),
            (0, vec![7, 6], vec![3])
        );
        assert_eq!((p.t1_count, p.t2_count), (1, 2));
    }

    #[test]
    fn delta_is_the_ghost_size_ratio() {
        let a = Access::at(Nanos::ZERO);
        let mut p = Arc::new(8);
        // B1 [10], B2 [23 22 21]: a B1 hit raises p by |B2| / |B1| = 3.
        p.ghosts.push(BlockKey(10), false);
        for k in 21..=23 {
            p.ghosts.push(BlockKey(k), true);
        }
        p.on_insert(Slot(0), BlockKey(10), &a);
        assert_eq!(p.p, 3);
        assert!(p.lists.flags.get(0) & super::IN_T2 != 0);
        // B1 [14 13 12 11], B2 [23 22 21]: a B2 hit lowers p by
        // max(1, 4 / 3) = 1.
        for k in 11..=14 {
            p.ghosts.push(BlockKey(k), false);
        }
        p.on_insert(Slot(1), BlockKey(21), &a);
        assert_eq!(p.p, 2);
        // B1 [14 13 12 11], B2 [23 22]: lowered by 4 / 2 = 2, floor 0.
        p.on_insert(Slot(2), BlockKey(22), &a);
        assert_eq!(p.p, 0);
        // Raising saturates at c.
        p.p = 8;
        p.on_insert(Slot(3), BlockKey(11), &a);
        assert_eq!(p.p, 8);
    }

    #[test]
    fn b2_hit_takes_t1_at_equality() {
        let a = Access::at(Nanos::ZERO);
        let setup = || {
            // c = 4: T2 [101 100], T1 [102], p = 2.
            let mut p = Arc::new(4);
            for s in 0..3 {
                p.on_insert(Slot(s), BlockKey(100 + s as u64), &a);
            }
            p.on_hit(Slot(0), &a);
            p.on_hit(Slot(1), &a);
            p.p = 2;
            p
        };
        // Key 7 in B2: p -> 1 = |T1|, and the B2 rule takes T1's LRU.
        let mut p = setup();
        p.ghosts.push(BlockKey(7), true);
        p.on_insert(Slot(3), BlockKey(7), &a);
        assert_eq!(p.p, 1);
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(2)));
        // Full cache (8 hit into T2: T2 [8 101 100], T1 [102]), then a plain
        // miss with p = 1 = |T1| (before the miss joins T1): T2's LRU goes.
        let mut p = setup();
        p.p = 1;
        p.on_insert(Slot(3), BlockKey(8), &a);
        p.on_hit(Slot(3), &a);
        p.on_insert(Slot(4), BlockKey(9), &a);
        assert_eq!(p.pending_misses, 1);
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(0)));
        assert_eq!(ghost_keys(&p, true), vec![100]);
    }

    #[test]
    fn set_aside_and_fallbacks() {
        let a = Access::at(Nanos::ZERO);
        let mut p = Arc::new(2);
        p.on_insert(Slot(0), BlockKey(1), &a);
        p.on_insert(Slot(1), BlockKey(2), &a);
        // 1 set aside and hit: it belongs to T2 now, though not linked.
        p.on_unevictable(Slot(0));
        p.on_hit(Slot(0), &a);
        assert_eq!((p.t1_count, p.t2_count, p.lists.second.len), (1, 1, 0));
        p.on_insert(Slot(2), BlockKey(3), &a);
        // REPLACE: |T1| = 1 (3 not counted yet) > p = 0: T1's LRU 2 goes
        // to B1.
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(1)));
        // T1 [3] is set aside too: REPLACE would take T1, T2 has nothing
        // evictable either: None.
        p.on_unevictable(Slot(2));
        assert_eq!(p.evict(Nanos::ZERO), None);
        // 1 returns to T2's MRU end; T1 is still empty of candidates, so
        // the fallback takes T2's block and remembers it in B2.
        p.on_evictable(Slot(0), Nanos::ZERO);
        assert_eq!(p.lists.second.len, 1);
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(0)));
        assert_eq!(ghost_keys(&p, true), vec![1]);
        assert_eq!(ghost_keys(&p, false), vec![2]);
        // Removal leaves no ghost.
        p.on_remove(Slot(2));
        assert_eq!((p.t1_count, p.t2_count), (0, 0));
        assert_eq!(ghost_keys(&p, false), vec![2]);
    }

    #[test]
    fn contract_with_ghost_hits_and_other_capacities() {
        for cap in [None, Some(0), Some(1), Some(3), Some(8)] {
            check_contract_with(PolicyKind::Arc, cap, Some(24), 1..=20);
        }
    }

    #[test]
    fn unbounded_keeps_every_ghost() {
        let a = Access::at(Nanos::ZERO);
        let mut p = Arc::new(u64::MAX);
        for k in 0..100 {
            p.on_insert(Slot(k), BlockKey(k as u64), &a);
        }
        for _ in 0..100 {
            assert!(p.evict(Nanos::ZERO).is_some());
        }
        assert_eq!(p.ghosts.map.len(), 100);
    }
}
