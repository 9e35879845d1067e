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

use super::list::{TwoQueues, SECOND as IN_MAIN};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};

/// Per-slot flag bits 0-1: the frequency (next to the queue, M or S, and
/// residency kept by [`TwoQueues`]).
const FREQ: u8 = 0b11;

/// The ghost FIFO G, built the way the S3-FIFO paper implements it (§4.2):
/// ghost entries live in a bucket-based hash table as (key, insertion
/// sequence), and an entry is a ghost while its sequence is among the last
/// `cap` handed out — no queue to maintain. Each bucket holds 4 entries; a
/// push goes to an empty, consumed or expired entry of its bucket, else
/// over the bucket's oldest one. With at least as many buckets as `cap`, a
/// live ghost is dropped early only when five live ghosts hash to one bucket
/// (Poisson(1) tail: under 0.4 % of buckets at full load). A ghost hit
/// consumes the entry, as in the authors' libCacheSim code. A miss costs
/// one bucket (one cache line) for the lookup and one for the push.
struct Ghost {
    buckets: Vec<Bucket>,
    shift: u32,
    seq: u64,
    cap: u64,
}

/// Four entries in one 64-byte cache line.
#[derive(Copy, Clone, Default)]
#[repr(align(64))]
struct Bucket([GhostEntry; 4]);

/// `seq == 0`: empty or consumed.
#[derive(Copy, Clone, Default)]
struct GhostEntry {
    key: u64,
    seq: u64,
}

impl Ghost {
    /// At most 2^22 buckets (256 MiB); beyond that ghosts expire earlier.
    const MAX_BUCKET_BITS: u32 = 22;

    fn new(cap: u64) -> Ghost {
        Ghost {
            buckets: Vec::new(),
            shift: 64,
            seq: 0,
            cap,
        }
    }

    #[inline]
    fn bucket(&self, key: BlockKey) -> usize {
        (key.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn live(&self, seq: u64) -> bool {
        seq != 0 && seq.saturating_add(self.cap) > self.seq
    }

    /// Consumes `key` if it is a ghost; true if it was.
    #[inline]
    fn take(&mut self, key: BlockKey) -> bool {
        if self.buckets.is_empty() {
            return false;
        }
        let b = self.bucket(key);
        for i in 0..4 {
            let e = self.buckets[b].0[i];
            if e.key == key.0 && self.live(e.seq) {
                self.buckets[b].0[i].seq = 0;
                return true;
            }
        }
        false
    }

    #[inline]
    fn push(&mut self, key: BlockKey) {
        if self.cap == 0 {
            return;
        }
        if self.buckets.is_empty() {
            let bits = (64 - (self.cap.max(2) - 1).leading_zeros()).min(Self::MAX_BUCKET_BITS);
            self.buckets = vec![Bucket::default(); 1 << bits];
            self.shift = 64 - bits;
        }
        self.seq += 1;
        let b = self.bucket(key);
        let bucket = &self.buckets[b].0;
        // The key's own entry, else a free one, else the bucket's oldest.
        let victim = (0..4)
            .find(|&i| bucket[i].key == key.0 && bucket[i].seq != 0)
            .or_else(|| (0..4).find(|&i| !self.live(bucket[i].seq)))
            .unwrap_or_else(|| (0..4).min_by_key(|&i| bucket[i].seq).unwrap_or(0));
        self.buckets[b].0[victim] = GhostEntry {
            key: key.0,
            seq: self.seq,
        };
    }

    /// Live ghosts (tests only).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| b.0.iter())
            .filter(|e| self.live(e.seq))
            .count()
    }
}

pub struct S3Fifo {
    /// S (`first`) and M (`second`): evictable blocks linked, front = head
    /// (newest).
    queues: TwoQueues,
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
            queues: TwoQueues::default(),
            small_count: 0,
            small_target,
            ghost: Ghost::new(capacity_blocks - small_target),
        }
    }

    /// Evicts from S's tail, promoting frequently hit blocks to M on the
    /// way; `None` if S ran out of evictable blocks first.
    fn evict_small(&mut self) -> Option<u32> {
        let q = &mut self.queues;
        loop {
            let t = q.pop_back(false)?;
            self.small_count -= 1;
            if q.flags.get(t) & FREQ > 1 {
                // To M's head, its frequency reset to 0.
                q.flags.insert(t, IN_MAIN);
                q.push_front(t, true);
            } else {
                q.flags.evicted(t);
                self.ghost.push(q.keys[t as usize]);
                return Some(t);
            }
        }
    }

    /// Evicts from M's tail, giving blocks with a frequency left another lap.
    fn evict_main(&mut self) -> Option<u32> {
        // Each reinsertion lowers a frequency of at most 3.
        let q = &mut self.queues;
        let mut budget = 3 * q.second.len + 1;
        loop {
            let t = q.pop_back(true)?;
            let f = q.flags.get(t);
            if f & FREQ > 0 && budget > 0 {
                budget -= 1;
                q.flags.set(t, f - 1);
                q.push_front(t, true);
            } else {
                q.flags.evicted(t);
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
        let in_main = self.ghost.take(key);
        if !in_main {
            self.small_count += 1;
        }
        self.queues.insert(slot.0, key, in_main);
    }

    #[inline]
    fn on_hit(&mut self, slot: Slot, _a: &Access) {
        if let Some(f) = self.queues.flags.get_mut(slot.0) {
            if *f & FREQ != FREQ {
                *f += 1;
            }
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        self.queues.set_aside(slot.0);
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        self.queues.give_back(slot.0);
    }

    fn on_remove(&mut self, slot: Slot) {
        if self.queues.remove(slot.0) == Some(false) {
            self.small_count -= 1;
        }
    }

    #[inline]
    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        if self.small_count >= self.small_target || self.queues.second.len == 0 {
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
    use crate::eviction::testkit::{check_contract_with, hit_positions, Harness};
    use crate::eviction::{Access, EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};

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
        assert_eq!(hit_positions(&hits), vec![4, 5, 6, 7, 8, 9, 11, 12, 13]);
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
        assert!(p.queues.flags.get(4) & super::IN_MAIN != 0);
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
        assert!(p.queues.flags.get(0) & super::IN_MAIN != 0);
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
        }
        assert_eq!(p.ghost.len(), 18);
        // The last 18 keys are ghosts, the one before is not.
        assert!(!p.ghost.take(BlockKey(981)));
        for k in 982..1000 {
            assert!(p.ghost.take(BlockKey(k)));
        }
        assert_eq!(p.ghost.len(), 0);
        // A ghost hit sends the block to M.
        p.ghost.push(BlockKey(5));
        p.on_insert(Slot(0), BlockKey(5), &a);
        assert!(p.queues.flags.get(0) & super::IN_MAIN != 0);
    }

    #[test]
    fn ghost_is_the_window_of_the_last_evictions() {
        // Random pushes and takes against the definition: a key is a ghost
        // if its latest push is among the last `cap` pushes and it was not
        // taken since. The bucketed table never reports a ghost that is not
        // one; it may forget one early when a bucket overflows, rarely.
        for cap in [1u64, 2, 5, 40, 1000] {
            let mut g = Ghost::new(cap);
            let mut last_push: std::collections::HashMap<u64, u64> = Default::default();
            let (mut seq, mut takes, mut forgotten) = (0u64, 0u32, 0u32);
            let mut x = 0x1234_5678_9ABC_DEF1u64 ^ cap;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = x % (3 * cap + 7);
                if x >> 62 == 0 {
                    let want = match last_push.remove(&key) {
                        Some(s) => s + cap > seq,
                        None => false,
                    };
                    let got = g.take(BlockKey(key));
                    assert!(!got || want, "cap {cap} key {key}: false ghost");
                    takes += u32::from(want);
                    forgotten += u32::from(want && !got);
                } else {
                    seq += 1;
                    last_push.insert(key, seq);
                    g.push(BlockKey(key));
                }
                if seq % 97 == 0 {
                    let live = last_push.values().filter(|&&s| s + cap > seq).count();
                    assert!(g.len() <= live);
                }
            }
            assert!(
                forgotten * 100 <= takes,
                "cap {cap}: forgot {forgotten} of {takes}"
            );
        }
    }

    #[test]
    fn unbounded_and_tiny_capacities() {
        let p = S3Fifo::new(u64::MAX);
        assert!(p.ghost.buckets.is_empty());
        let p = S3Fifo::new(0);
        assert_eq!((p.small_target, p.ghost.cap), (0, 0));
        let p = S3Fifo::new(1);
        assert_eq!((p.small_target, p.ghost.cap), (1, 0));
        for cap in [None, Some(0), Some(1), Some(3), Some(8)] {
            check_contract_with(PolicyKind::S3Fifo, cap, Some(24), 1..=20);
        }
    }
}
