//! S3-FIFO (Yang, Zhang, Qiu, Yue and Rashmi, "FIFO queues are all you need
//! for cache eviction", SOSP 2023): a small FIFO S (target 10 % of the
//! capacity), a main FIFO M (the other 90 %) and a ghost FIFO G of keys only,
//! as many entries as M's target; every block carries a 2-bit saturating
//! frequency (a hit adds 1, capped at 3; an insert starts at 0). A new block
//! whose key is in G goes to M's head (and leaves G), any other to S's head.
//! `evict` follows the paper's Algorithm 1: while S holds at least its
//! target (`|S| ≥ ⌈capacity / 10⌉`, counting S's set-aside blocks) or M has
//! no evictable block, it takes S's tail, moving it to M's head with its
//! frequency reset to 0 if its frequency is above 1 (the paper's `freq > 1`,
//! the `move-to-main-threshold = 2` of the authors' libCacheSim
//! implementation: two hits while in S) and otherwise evicting it and
//! queueing its key in G (G drops its oldest key when over size); if S runs
//! out of evictable blocks it falls back to M, where the tail goes if its
//! frequency is 0 and is otherwise reinserted at M's head with frequency - 1
//! (the loop is bounded: each turn lowers a frequency ≤ 3). Blocks leaving
//! M are not remembered in G. A set-aside block leaves its queue but stays
//! counted in it; hits while set aside raise its frequency; `on_evictable`
//! puts it back at the head of the queue it came from. Ties do not arise:
//! queue order decides. With an unbounded capacity the ghost structures stay
//! empty until something is evicted.

use super::list::{Links, List, NIL};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;

/// Per-slot flags: bits 0-1 frequency, then queue membership (M or S),
/// whether the block is linked (evictable) and whether the slot holds a
/// block at all.
const FREQ: u8 = 0b11;
const IN_MAIN: u8 = 0b100;
const QUEUED: u8 = 0b1000;
const LIVE: u8 = 0b1_0000;

/// The ghost FIFO G: keys in eviction order with a sequence number each
/// (`fifo`), and a map key → sequence of the keys still in G. A key that
/// comes back (a ghost hit) leaves G, as in the authors' libCacheSim code:
/// it leaves the map and its deque entry goes stale; stale entries are
/// skipped when they reach the front and purged once they make up half the
/// deque. G holds at most `cap` keys: the oldest goes to make room. A miss
/// costs up to three map operations (look up the new key, add the victim's,
/// drop the oldest), which is most of what S3-FIFO costs over SIEVE.
#[derive(Default)]
struct Ghost {
    fifo: VecDeque<(BlockKey, u64)>,
    map: FxHashMap<BlockKey, u64>,
    seq: u64,
    cap: u64,
}

impl Ghost {
    fn new(cap: u64) -> Ghost {
        Ghost {
            cap,
            ..Ghost::default()
        }
    }

    /// Removes `key` if present; true if it was.
    #[inline]
    fn take(&mut self, key: BlockKey) -> bool {
        !self.map.is_empty() && self.map.remove(&key).is_some()
    }

    fn push(&mut self, key: BlockKey) {
        if self.cap == 0 {
            return;
        }
        // Make room first, so the map never holds more than `cap` keys.
        while self.map.len() as u64 >= self.cap {
            let Some((k, s)) = self.fifo.pop_front() else {
                break;
            };
            // One lookup: the key is usually gone (a ghost hit) or current;
            // rarely it was queued again later and is put back.
            if let Some(newer) = self.map.remove(&k) {
                if newer != s {
                    self.map.insert(k, newer);
                }
            }
        }
        self.seq += 1;
        self.map.insert(key, self.seq);
        self.fifo.push_back((key, self.seq));
        // Ghost hits leave stale entries behind; drop them once they make up
        // more than half the deque (amortized O(1) per push).
        if self.fifo.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.fifo.retain(|(k, s)| map.get(k) == Some(s));
        }
    }
}

pub struct S3Fifo {
    links: Links,
    /// Evictable blocks of S and of M; front = head (newest).
    small: List,
    main: List,
    flags: Vec<u8>,
    keys: Vec<BlockKey>,
    /// Resident blocks belonging to S, set-aside ones included.
    small_count: u64,
    /// `⌈capacity / 10⌉`: S is evicted from while `small_count` reaches it.
    small_target: u64,
    ghost: Ghost,
}

impl S3Fifo {
    /// A policy for a cache of `capacity_blocks` (`u64::MAX` = unbounded).
    pub fn new(capacity_blocks: u64) -> S3Fifo {
        let small_target = capacity_blocks.div_ceil(10);
        S3Fifo {
            links: Links::default(),
            small: List::default(),
            main: List::default(),
            flags: Vec::new(),
            keys: Vec::new(),
            small_count: 0,
            small_target,
            ghost: Ghost::new(capacity_blocks - small_target),
        }
    }

    #[inline]
    fn link(&mut self, s: u32, in_main: bool) {
        if in_main {
            self.links.push_front(&mut self.main, s);
        } else {
            self.links.push_front(&mut self.small, s);
        }
    }

    #[inline]
    fn unlink(&mut self, s: u32, in_main: bool) {
        if in_main {
            self.links.unlink(&mut self.main, s);
        } else {
            self.links.unlink(&mut self.small, s);
        }
    }

    /// Evicts from S's tail, promoting frequently hit blocks to M on the
    /// way; `None` if S ran out of evictable blocks first.
    fn evict_small(&mut self) -> Option<u32> {
        loop {
            let t = self.small.tail;
            if t == NIL {
                return None;
            }
            self.links.unlink(&mut self.small, t);
            self.small_count -= 1;
            if self.flags[t as usize] & FREQ > 1 {
                self.flags[t as usize] = LIVE | QUEUED | IN_MAIN;
                self.links.push_front(&mut self.main, t);
            } else {
                self.flags[t as usize] = 0;
                self.ghost.push(self.keys[t as usize]);
                return Some(t);
            }
        }
    }

    /// Evicts from M's tail, giving blocks with a frequency left another lap.
    fn evict_main(&mut self) -> Option<u32> {
        // Each reinsertion lowers a frequency of at most 3.
        let mut budget = 3 * self.main.len + 1;
        loop {
            let t = self.main.tail;
            if t == NIL {
                return None;
            }
            let f = self.flags[t as usize];
            if f & FREQ > 0 && budget > 0 {
                budget -= 1;
                self.flags[t as usize] = f - 1;
                self.links.unlink(&mut self.main, t);
                self.links.push_front(&mut self.main, t);
            } else {
                self.links.unlink(&mut self.main, t);
                self.flags[t as usize] = 0;
                return Some(t);
            }
        }
    }
}

impl EvictionPolicy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3fifo"
    }

    #[inline]
    fn on_insert(&mut self, slot: Slot, key: BlockKey, _a: &Access) {
        let s = slot.0 as usize;
        if self.flags.len() <= s {
            self.flags.resize(s + 1, 0);
            self.keys.resize(s + 1, BlockKey(0));
        }
        self.keys[s] = key;
        let in_main = self.ghost.take(key);
        if in_main {
            self.flags[s] = LIVE | QUEUED | IN_MAIN;
        } else {
            self.flags[s] = LIVE | QUEUED;
            self.small_count += 1;
        }
        self.link(slot.0, in_main);
    }

    #[inline]
    fn on_hit(&mut self, slot: Slot, _a: &Access) {
        if let Some(f) = self.flags.get_mut(slot.0 as usize) {
            if *f & FREQ != FREQ {
                *f += 1;
            }
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        let s = slot.0 as usize;
        let Some(&f) = self.flags.get(s) else {
            return;
        };
        if f & QUEUED != 0 {
            self.unlink(slot.0, f & IN_MAIN != 0);
            self.flags[s] = f & !QUEUED;
        }
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        let s = slot.0 as usize;
        let Some(&f) = self.flags.get(s) else {
            return;
        };
        if f & (LIVE | QUEUED) == LIVE {
            self.flags[s] = f | QUEUED;
            self.link(slot.0, f & IN_MAIN != 0);
        }
    }

    fn on_remove(&mut self, slot: Slot) {
        let s = slot.0 as usize;
        let Some(&f) = self.flags.get(s) else {
            return;
        };
        if f & LIVE == 0 {
            return;
        }
        if f & QUEUED != 0 {
            self.unlink(slot.0, f & IN_MAIN != 0);
        }
        if f & IN_MAIN == 0 {
            self.small_count -= 1;
        }
        self.flags[s] = 0;
    }

    #[inline]
    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        if self.small_count >= self.small_target || self.main.len == 0 {
            if let Some(s) = self.evict_small() {
                return Some(Slot(s));
            }
        }
        // M's turn (then M has an evictable block), or S had none left.
        self.evict_main().map(Slot)
    }
}

#[cfg(test)]
mod tests {
    use super::{Ghost, S3Fifo};
    use crate::eviction::testkit::{check_contract_with, Harness};
    use crate::eviction::{Access, EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};
    use std::collections::VecDeque;

    #[test]
    fn algorithm_one_by_hand() {
        // Capacity 4: S target ⌈0.4⌉ = 1, M target 3, G holds 3 keys.
        // Queues written head..tail with frequencies.
        // 1 2 3 4             S [4 3 2 1]
        // 1 1 2 2 3 3 (hits)  freq 1,2,3 = 2
        // 5 (miss)            S [5 4 3 2 1] over capacity: |S| = 5 ≥ 1, so
        //                     evict from S: 1, 2, 3 (freq 2 > 1) move to M
        //                     with freq 0 -> M [3 2 1]; 4 (freq 0) is
        //                     evicted, G [4]; S [5]
        // 5 5 (hits)          freq 5 = 2
        // 1 (hit)             freq 1 = 1 (in M)
        // 6 (miss)            S [6 5]: 5 moves to M [5 3 2 1]; 6 evicted,
        //                     G [4 6]; S empty
        // 7 (miss)            S [7]: |S| = 1 ≥ 1, 7 evicted, G [4 6 7]
        // 4 (miss, in G)      M [4 5 3 2 1], G [6 7]; |S| = 0 < 1: evict
        //                     from M: 1 (freq 1) back to the head with freq
        //                     0 -> M [1 4 5 3 2]; 2 (freq 0) evicted
        // 2 (miss, not in G)  S [2]: evicted at once, G [6 7 2]
        // 8 (miss)            S [8]: evicted, G [6 7 2 8] -> over 3, drop 6
        // 6 (miss, not in G)  S [6]: evicted, G [2 8 6] (7 dropped)
        // 8 (miss, in G)      M [8 1 4 5 3], G [2 6]: 3 (freq 0) evicted
        let mut h = Harness::new(PolicyKind::S3Fifo, 4);
        let seq = [
            1, 2, 3, 4, 1, 1, 2, 2, 3, 3, 5, 5, 5, 1, 6, 7, 4, 2, 8, 6, 8,
        ];
        let hits = h.run(&seq);
        let hit_at: Vec<usize> = (0..seq.len()).filter(|&i| hits[i]).collect();
        assert_eq!(hit_at, vec![4, 5, 6, 7, 8, 9, 11, 12, 13]);
        assert_eq!(h.evicted, vec![4, 6, 7, 2, 2, 8, 6, 3]);
        assert_eq!(h.resident(), vec![1, 4, 5, 8]);
        // 7 left G when 6 was queued: a miss that goes to S and out again.
        assert!(!h.access(7));
        assert_eq!(h.evicted.last(), Some(&7));
    }

    #[test]
    fn one_hit_in_small_is_not_enough_to_promote() {
        // Capacity 2: S target 1. 1 2, hit 1 once (freq 1).
        // 3 (miss): S [3 2 1]: 1 (freq 1, not > 1) is evicted.
        let mut h = Harness::new(PolicyKind::S3Fifo, 2);
        h.run(&[1, 2, 1, 3]);
        assert_eq!(h.evicted, vec![1]);
    }

    #[test]
    fn set_aside_blocks_return_to_their_queue() {
        let a = Access::at(Nanos::ZERO);
        let now = Nanos::ZERO;
        let mut p = S3Fifo::new(10);
        // Slots 0..4 in S [3 2 1 0]; 0 hit twice.
        for s in 0..4 {
            p.on_insert(Slot(s), BlockKey(10 + s as u64), &a);
        }
        p.on_hit(Slot(0), &a);
        p.on_hit(Slot(0), &a);
        // 0 set aside: S's tail is now 1.
        p.on_unevictable(Slot(0));
        assert_eq!(p.evict(now), Some(Slot(1)));
        // Back at S's head: S [0 3 2].
        p.on_evictable(Slot(0), now);
        assert_eq!(p.evict(now), Some(Slot(2)));
        assert_eq!(p.evict(now), Some(Slot(3)));
        // S [4 0], both hit twice: both move to M (freq 0) -> M [4 0]; S is
        // then empty, so M's tail 0 goes.
        p.on_insert(Slot(4), BlockKey(14), &a);
        p.on_hit(Slot(4), &a);
        p.on_hit(Slot(4), &a);
        assert_eq!(p.evict(now), Some(Slot(0)));
        // 4 is in M: set it aside, hit it, return it: it goes back to M.
        p.on_unevictable(Slot(4));
        p.on_hit(Slot(4), &a);
        p.on_insert(Slot(5), BlockKey(15), &a);
        assert_eq!(p.evict(now), Some(Slot(5)));
        p.on_evictable(Slot(4), now);
        assert!(p.flags[4] & super::IN_MAIN != 0);
        // 4 has freq 1: one more lap, then it goes.
        assert_eq!(p.evict(now), Some(Slot(4)));
        assert_eq!(p.evict(now), None);
        assert_eq!(p.small_count, 0);
    }

    #[test]
    fn small_below_target_with_main_pinned_still_evicts() {
        let a = Access::at(Nanos::ZERO);
        // S target 10. Key 1 goes through G into M, then is set aside.
        let mut p = S3Fifo::new(100);
        p.on_insert(Slot(0), BlockKey(1), &a);
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(0)));
        p.on_insert(Slot(0), BlockKey(1), &a);
        assert!(p.flags[0] & super::IN_MAIN != 0);
        p.on_unevictable(Slot(0));
        p.on_insert(Slot(1), BlockKey(2), &a);
        // |S| = 1 < 10 but M has nothing evictable: S's block goes.
        assert_eq!(p.evict(Nanos::ZERO), Some(Slot(1)));
        assert_eq!(p.evict(Nanos::ZERO), None);
    }

    #[test]
    fn ghost_is_bounded() {
        let a = Access::at(Nanos::ZERO);
        let mut p = S3Fifo::new(20); // S target 2, G holds 18 keys
        for k in 0..1000u64 {
            p.on_insert(Slot(0), BlockKey(k), &a);
            assert_eq!(p.evict(Nanos::ZERO), Some(Slot(0)));
            assert!(p.ghost.map.len() <= 18 && p.ghost.fifo.len() <= 18);
        }
        assert_eq!(p.ghost.map.len(), 18);
        // The last 18 keys are ghosts, the one before is not.
        assert!(!p.ghost.take(BlockKey(981)));
        for k in 982..1000 {
            assert!(p.ghost.take(BlockKey(k)));
            p.ghost.push(BlockKey(k));
        }
        // Each ghost hit leaves a stale deque entry; they are dropped in time.
        for _ in 0..1000 {
            p.on_insert(Slot(0), BlockKey(999), &a);
            assert!(p.flags[0] & super::IN_MAIN != 0);
            p.on_remove(Slot(0));
            p.ghost.push(BlockKey(999)); // as if evicted from S again
            assert_eq!(p.ghost.map.len(), 18);
            assert!(p.ghost.fifo.len() <= 2 * 18 + 64);
        }
    }

    #[test]
    fn ghost_matches_a_plain_fifo() {
        // Random pushes (of keys not already in G) and takes against a
        // plain FIFO of at most `cap` keys that drops its oldest.
        for cap in [1u64, 2, 5, 40] {
            let mut g = Ghost::new(cap);
            let mut model: VecDeque<u64> = VecDeque::new();
            let mut x = 0x1234_5678_9ABC_DEF1u64 ^ cap;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = x % (3 * cap + 7);
                if x >> 62 == 0 || model.contains(&key) {
                    let want = match model.iter().position(|&k| k == key) {
                        Some(i) => {
                            model.remove(i);
                            true
                        }
                        None => false,
                    };
                    assert_eq!(g.take(BlockKey(key)), want, "cap {cap} key {key}");
                } else {
                    if model.len() as u64 >= cap {
                        model.pop_front();
                    }
                    model.push_back(key);
                    g.push(BlockKey(key));
                }
                assert_eq!(g.map.len(), model.len());
            }
        }
    }

    #[test]
    fn unbounded_and_tiny_capacities() {
        let p = S3Fifo::new(u64::MAX);
        assert_eq!((p.ghost.fifo.capacity(), p.ghost.map.capacity()), (0, 0));
        let p = S3Fifo::new(0);
        assert_eq!((p.small_target, p.ghost.cap), (0, 0));
        let p = S3Fifo::new(1);
        assert_eq!((p.small_target, p.ghost.cap), (1, 0));
        for cap in [None, Some(0), Some(1), Some(3), Some(8)] {
            check_contract_with(PolicyKind::S3Fifo, cap, Some(24), 1..=20);
        }
    }
}
