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

use super::list::{List, NIL};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};
use std::collections::VecDeque;

/// Per-slot flags: bits 0-1 frequency, then queue membership (M or S),
/// whether the block is linked (evictable) and whether the slot holds a
/// block at all.
const FREQ: u8 = 0b11;
const IN_MAIN: u8 = 0b100;
const QUEUED: u8 = 0b1000;
const LIVE: u8 = 0b1_0000;

/// The ghost FIFO G, exact and compact. `ring` holds the queued keys oldest
/// first, entry `i` having sequence number `base + i`, with a flag cleared
/// when the key comes back (a ghost hit); `live` counts the flagged ones,
/// and G holds at most `cap` of them (the oldest is dropped to make room).
/// `table` indexes the ring by key: open addressing over 64-byte buckets of
/// fifteen 4-byte entries, each a hash fingerprint and the low bits of a
/// sequence number (enough to tell every ring position apart). An entry
/// whose position has left the ring, or whose key came back, is stale and
/// is reused by later inserts; a fingerprint match is always confirmed
/// against the key stored in the ring, so G is exact. A lookup or insert
/// reads one cache line in the common case and dropping the oldest key
/// touches no index at all: with a general hash map (8-byte keys, a lookup,
/// an insert and a removal per miss) S3-FIFO ran about a third slower in
/// the eviction bench.
struct Ghost {
    ring: VecDeque<(BlockKey, bool)>,
    base: u64,
    live: u64,
    cap: u64,
    table: Vec<Bucket>,
    /// `64 - log2(table.len())`: a hash's top bits give its home bucket.
    shift: u32,
    /// Sequence bits per entry; the fingerprint takes the rest.
    seq_bits: u32,
    /// Non-empty entries, stale ones included.
    used: usize,
}

/// Entries per bucket; the sixteenth word says whether an insert ever went
/// past the bucket because it was full (then lookups go on to the next).
const BUCKET: usize = 15;
const EMPTY: u32 = u32::MAX;
/// G's size is capped here, so a fingerprint keeps at least 4 bits.
const MAX_GHOSTS: u64 = 1 << 26;

#[derive(Clone, Copy)]
#[repr(align(64))]
struct Bucket {
    e: [u32; BUCKET],
    overflowed: u32,
}

const VACANT_BUCKET: Bucket = Bucket {
    e: [EMPTY; BUCKET],
    overflowed: 0,
};

impl Ghost {
    fn new(cap: u64) -> Ghost {
        let cap = cap.min(MAX_GHOSTS);
        // The ring never exceeds 2 cap + 65 entries, and the all-ones
        // offset must stay free to mark stale entries.
        let seq_bits = (2 * cap + 67).next_power_of_two().trailing_zeros();
        Ghost {
            ring: VecDeque::new(),
            base: 0,
            live: 0,
            cap,
            table: Vec::new(),
            shift: 63,
            seq_bits,
            used: 0,
        }
    }

    #[inline]
    fn hash(key: BlockKey) -> u64 {
        (key.0 ^ (key.0 >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    #[inline]
    fn seq_mask(&self) -> u32 {
        (1u32 << self.seq_bits) - 1
    }

    /// The fingerprint of hash `h`, already shifted into place; never all
    /// ones, so no entry equals EMPTY.
    #[inline]
    fn fingerprint(&self, h: u64) -> u32 {
        let fp_mask = u32::MAX >> self.seq_bits;
        let fp = ((h >> 16) as u32) & fp_mask;
        let fp = if fp == fp_mask { 0 } else { fp };
        fp << self.seq_bits
    }

    /// The ring offset an entry points at; `>= ring.len()` if stale.
    #[inline]
    fn offset(&self, e: u32) -> usize {
        ((e.wrapping_sub(self.base as u32)) & self.seq_mask()) as usize
    }

    /// Removes `key` if it is in G; true if it was.
    #[inline]
    fn take(&mut self, key: BlockKey) -> bool {
        if self.live == 0 {
            return false;
        }
        let h = Ghost::hash(key);
        let fp = self.fingerprint(h);
        let fp_part = !self.seq_mask();
        let nb = self.table.len();
        let mut b = (h >> self.shift) as usize;
        // Some bucket has a free entry, so some bucket never overflowed.
        loop {
            let bucket = &self.table[b];
            let mut found = 0u32;
            for (j, &e) in bucket.e.iter().enumerate() {
                found |= u32::from(e & fp_part == fp && e != EMPTY) << j;
            }
            let overflowed = bucket.overflowed != 0;
            while found != 0 {
                let j = found.trailing_zeros() as usize;
                found &= found - 1;
                let off = self.offset(self.table[b].e[j]);
                if let Some(r) = self.ring.get_mut(off) {
                    if r.1 && r.0 == key {
                        r.1 = false;
                        self.live -= 1;
                        // Stale from now on (offset all ones): reusable.
                        let stale = (self.base as u32).wrapping_sub(1) & self.seq_mask();
                        self.table[b].e[j] = fp | stale;
                        return true;
                    }
                }
            }
            if !overflowed {
                return false;
            }
            b = (b + 1) & (nb - 1);
        }
    }

    /// Queues `key`, dropping the oldest key if G is full.
    fn push(&mut self, key: BlockKey) {
        if self.cap == 0 {
            return;
        }
        // Pop the front while it is a key that came back, or while G is full.
        while let Some(&(_, alive)) = self.ring.front() {
            if alive && self.live < self.cap {
                break;
            }
            self.ring.pop_front();
            self.base += 1;
            if alive {
                self.live -= 1;
            }
        }
        let seq = (self.base + self.ring.len() as u64) as u32 & self.seq_mask();
        self.ring.push_back((key, true));
        self.live += 1;
        if self.table.is_empty() || self.ring.len() as u64 > 2 * self.cap + 64 {
            self.rebuild();
            return;
        }
        let h = Ghost::hash(key);
        let entry = self.fingerprint(h) | seq;
        let len = self.ring.len();
        let nb = self.table.len();
        let mut b = (h >> self.shift) as usize;
        loop {
            let mut free = 0u32;
            for (j, &e) in self.table[b].e.iter().enumerate() {
                free |= u32::from(e == EMPTY || self.offset(e) >= len) << j;
            }
            if free != 0 {
                let j = free.trailing_zeros() as usize;
                if self.table[b].e[j] == EMPTY {
                    self.used += 1;
                }
                self.table[b].e[j] = entry;
                break;
            }
            self.table[b].overflowed = 1;
            b = (b + 1) & (nb - 1);
        }
        if 4 * self.used > 3 * BUCKET * nb {
            self.rebuild();
        }
    }

    /// Drops the keys that came back from the ring (renumbering the rest
    /// from `base`) and rebuilds the index for twice the live keys.
    fn rebuild(&mut self) {
        self.ring.retain(|&(_, alive)| alive);
        let buckets = (2 * self.ring.len())
            .div_ceil(BUCKET)
            .next_power_of_two()
            .max(2);
        self.table.clear();
        self.table.resize(buckets, VACANT_BUCKET);
        self.shift = 64 - buckets.trailing_zeros();
        for n in 0..self.ring.len() {
            let h = Ghost::hash(self.ring[n].0);
            let entry = self.fingerprint(h) | ((self.base + n as u64) as u32 & self.seq_mask());
            let mut b = (h >> self.shift) as usize;
            loop {
                if let Some(e) = self.table[b].e.iter_mut().find(|e| **e == EMPTY) {
                    *e = entry;
                    break;
                }
                self.table[b].overflowed = 1;
                b = (b + 1) & (buckets - 1);
            }
        }
        self.used = self.ring.len();
    }
}

/// One block's queue links, key and flags, together so that visiting a
/// block touches one cache line (a struct of arrays touched four).
#[derive(Clone, Copy)]
struct Node {
    prev: u32,
    next: u32,
    key: BlockKey,
    flags: u8,
}

const VACANT: Node = Node {
    prev: NIL,
    next: NIL,
    key: BlockKey(0),
    flags: 0,
};

/// Links `s` at the head (front) of `list`.
#[inline]
fn push_front(nodes: &mut [Node], list: &mut List, s: u32) {
    nodes[s as usize].prev = NIL;
    nodes[s as usize].next = list.head;
    if list.head != NIL {
        nodes[list.head as usize].prev = s;
    } else {
        list.tail = s;
    }
    list.head = s;
    list.len += 1;
}

/// Unlinks `s` from `list`.
#[inline]
fn unlink(nodes: &mut [Node], list: &mut List, s: u32) {
    let Node { prev, next, .. } = nodes[s as usize];
    if prev != NIL {
        nodes[prev as usize].next = next;
    } else {
        list.head = next;
    }
    if next != NIL {
        nodes[next as usize].prev = prev;
    } else {
        list.tail = prev;
    }
    list.len -= 1;
}

pub struct S3Fifo {
    nodes: Vec<Node>,
    /// Evictable blocks of S and of M; front = head (newest).
    small: List,
    main: List,
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
            nodes: Vec::new(),
            small: List::default(),
            main: List::default(),
            small_count: 0,
            small_target,
            ghost: Ghost::new(capacity_blocks - small_target),
        }
    }

    #[inline]
    fn link(&mut self, s: u32, in_main: bool) {
        let list = if in_main {
            &mut self.main
        } else {
            &mut self.small
        };
        push_front(&mut self.nodes, list, s);
    }

    #[inline]
    fn unlink(&mut self, s: u32, in_main: bool) {
        let list = if in_main {
            &mut self.main
        } else {
            &mut self.small
        };
        unlink(&mut self.nodes, list, s);
    }

    /// The flags of slot `s` (0 if it never held a block).
    #[inline]
    fn flags(&self, s: usize) -> u8 {
        self.nodes.get(s).map_or(0, |n| n.flags)
    }

    /// Evicts from S's tail, promoting frequently hit blocks to M on the
    /// way; `None` if S ran out of evictable blocks first.
    fn evict_small(&mut self) -> Option<u32> {
        loop {
            let t = self.small.tail;
            if t == NIL {
                return None;
            }
            unlink(&mut self.nodes, &mut self.small, t);
            self.small_count -= 1;
            let node = &mut self.nodes[t as usize];
            if node.flags & FREQ > 1 {
                node.flags = LIVE | QUEUED | IN_MAIN;
                push_front(&mut self.nodes, &mut self.main, t);
            } else {
                node.flags = 0;
                let key = node.key;
                self.ghost.push(key);
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
            unlink(&mut self.nodes, &mut self.main, t);
            let node = &mut self.nodes[t as usize];
            if node.flags & FREQ > 0 && budget > 0 {
                budget -= 1;
                node.flags -= 1;
                push_front(&mut self.nodes, &mut self.main, t);
            } else {
                node.flags = 0;
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
        if self.nodes.len() <= s {
            self.nodes.resize(s + 1, VACANT);
        }
        let in_main = self.ghost.take(key);
        let node = &mut self.nodes[s];
        node.key = key;
        if in_main {
            node.flags = LIVE | QUEUED | IN_MAIN;
        } else {
            node.flags = LIVE | QUEUED;
            self.small_count += 1;
        }
        self.link(slot.0, in_main);
    }

    #[inline]
    fn on_hit(&mut self, slot: Slot, _a: &Access) {
        if let Some(n) = self.nodes.get_mut(slot.0 as usize) {
            if n.flags & FREQ != FREQ {
                n.flags += 1;
            }
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        let s = slot.0 as usize;
        let f = self.flags(s);
        if f & QUEUED != 0 {
            self.unlink(slot.0, f & IN_MAIN != 0);
            self.nodes[s].flags = f & !QUEUED;
        }
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        let s = slot.0 as usize;
        let f = self.flags(s);
        if f & (LIVE | QUEUED) == LIVE {
            self.nodes[s].flags = f | QUEUED;
            self.link(slot.0, f & IN_MAIN != 0);
        }
    }

    fn on_remove(&mut self, slot: Slot) {
        let s = slot.0 as usize;
        let f = self.flags(s);
        if f & LIVE == 0 {
            return;
        }
        if f & QUEUED != 0 {
            self.unlink(slot.0, f & IN_MAIN != 0);
        }
        if f & IN_MAIN == 0 {
            self.small_count -= 1;
        }
        self.nodes[s].flags = 0;
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
        assert!(p.nodes[4].flags & super::IN_MAIN != 0);
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
        assert!(p.nodes[0].flags & super::IN_MAIN != 0);
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
            assert!(p.ghost.live <= 18 && p.ghost.ring.len() <= 18);
            assert!(p.ghost.table.len() <= 4);
        }
        assert_eq!(p.ghost.live, 18);
        // The last 18 keys are ghosts, the one before is not.
        assert!(!p.ghost.take(BlockKey(981)));
        for k in 982..1000 {
            assert!(p.ghost.take(BlockKey(k)));
            p.ghost.push(BlockKey(k));
        }
        // Ghost hits leave dead ring entries; they are dropped in time.
        for _ in 0..1000 {
            p.on_insert(Slot(0), BlockKey(999), &a);
            assert!(p.nodes[0].flags & super::IN_MAIN != 0);
            p.on_remove(Slot(0));
            p.ghost.push(BlockKey(999)); // as if evicted from S again
            assert_eq!(p.ghost.live, 18);
            assert!(p.ghost.ring.len() <= 2 * 18 + 65);
            assert!(p.ghost.table.len() <= 4);
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
                assert_eq!(g.live, model.len() as u64);
            }
        }
    }

    #[test]
    fn unbounded_and_tiny_capacities() {
        let p = S3Fifo::new(u64::MAX);
        assert_eq!((p.ghost.ring.capacity(), p.ghost.table.capacity()), (0, 0));
        let p = S3Fifo::new(0);
        assert_eq!((p.small_target, p.ghost.cap), (0, 0));
        let p = S3Fifo::new(1);
        assert_eq!((p.small_target, p.ghost.cap), (1, 0));
        for cap in [None, Some(0), Some(1), Some(3), Some(8)] {
            check_contract_with(PolicyKind::S3Fifo, cap, Some(24), 1..=20);
        }
    }
}
