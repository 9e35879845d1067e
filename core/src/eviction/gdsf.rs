//! GDSF, Greedy-Dual-Size-Frequency (Cherkasova, "Improving WWW Proxies
//! Performance with Greedy-Dual-Size-Frequency Caching Policy", HP
//! Laboratories report HPL-98-69, 1998): every block has a priority
//! `H = L + freq × cost / size`, with `size` = [`Access::tokens`] (at least
//! 1), `cost` = [`Access::cost`] and `freq` the accesses since insertion
//! (insert = 1); the victim is the evictable block of least `H`, and the
//! inflation value `L` (0 at first) becomes the victim's `H`, so blocks that
//! stay idle age relative to newcomers. An insert or a hit (re)computes `H`
//! with the current `L` and the access's size and cost; ties go to the block
//! whose last insert or hit is older (a global sequence number), so equal
//! priorities fall back to LRU. A set-aside block keeps its `H` and
//! sequence, hits on it update them as usual, and `on_evictable` makes it a
//! candidate again with that `H` (which may be below the current `L`). The
//! candidates are a binary min-heap of (`H`, sequence, slot) with lazy
//! updates: each block has one current entry, a lower bound of its key; a
//! hit that raises the key pushes nothing, and the entry is requeued with
//! the block's key when it reaches the top, while a change that lowers the
//! key (smaller cost per token, or an `L` that went down) pushes a new
//! entry at once; superseded entries and those of set-aside or departed
//! blocks are skipped at the top, and the heap is compacted once they
//! outnumber the live ones.

use super::heap::{Entry, LazyHeap};
use super::slots::{Flags, LIVE, QUEUED};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};
use std::cmp::Reverse;

/// An `f64` as a `u64` whose unsigned order is `f64::total_cmp`'s.
#[inline]
fn ordered(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | (1 << 63)
    }
}

/// A heap entry: (ordered H, sequence, slot), least first.
type Candidate = Reverse<(u64, u64, u32)>;

impl Entry for Candidate {
    /// The key: a slot's (H, sequence) never repeats, as every insert and
    /// hit takes a new sequence number.
    type Id = (u64, u64);
    #[inline]
    fn slot(&self) -> u32 {
        self.0 .2
    }
    #[inline]
    fn id(&self) -> (u64, u64) {
        (self.0 .0, self.0 .1)
    }
}

pub struct Gdsf {
    /// The candidates. A slot's entry may lag behind its block: a hit that
    /// raises (H, sequence) pushes nothing, and the entry is brought up to
    /// date when it reaches the top (it is a lower bound, so nothing is
    /// evicted out of order); a change that lowers them pushes a new entry.
    heap: LazyHeap<Candidate>,
    /// Per slot: H, accesses since insertion, sequence of the last insert
    /// or hit, and whether the slot holds a block and whether it is
    /// evictable.
    h: Vec<f64>,
    freq: Vec<u64>,
    seq: Vec<u64>,
    flags: Flags,
    next_seq: u64,
    /// The inflation value: H of the last victim.
    l: f64,
}

impl Default for Gdsf {
    fn default() -> Self {
        Gdsf {
            heap: LazyHeap::default(),
            h: Vec::new(),
            freq: Vec::new(),
            seq: Vec::new(),
            flags: Flags::default(),
            next_seq: 0,
            l: 0.0,
        }
    }
}

impl Gdsf {
    pub fn new() -> Gdsf {
        Gdsf::default()
    }

    #[inline]
    fn priority(&self, freq: u64, a: &Access) -> f64 {
        self.l + freq as f64 * a.cost / f64::from(a.tokens.max(1))
    }

    /// The block's current heap key.
    #[inline]
    fn key(&self, s: usize) -> (u64, u64) {
        (ordered(self.h[s]), self.seq[s])
    }

    /// Pushes the current key of slot `s`; an older entry goes stale.
    #[inline]
    fn push(&mut self, s: usize) {
        let (h, q) = self.key(s);
        self.heap.push(Reverse((h, q, s as u32)));
    }

    /// After the key of evictable slot `s` changed: push it if it fell
    /// below the heap entry (otherwise the entry is fixed lazily).
    #[inline]
    fn rekey(&mut self, s: usize) {
        match self.heap.current(s) {
            Some(key) if self.key(s) >= key => {}
            _ => self.push(s),
        }
    }
}

impl EvictionPolicy for Gdsf {
    fn name(&self) -> &'static str {
        "gdsf"
    }

    fn on_insert(&mut self, slot: Slot, _key: BlockKey, a: &Access) {
        let s = slot.0 as usize;
        if self.seq.len() <= s {
            self.h.resize(s + 1, 0.0);
            self.freq.resize(s + 1, 0);
            self.seq.resize(s + 1, 0);
            self.heap.ensure(s);
        }
        self.heap.forget(s);
        self.next_seq += 1;
        self.seq[s] = self.next_seq;
        self.freq[s] = 1;
        self.h[s] = self.priority(1, a);
        self.flags.insert(slot.0, 0);
        self.push(s);
    }

    #[inline]
    fn on_hit(&mut self, slot: Slot, a: &Access) {
        let (s, f) = (slot.0 as usize, self.flags.get(slot.0));
        if f & LIVE == 0 {
            return;
        }
        self.next_seq += 1;
        self.seq[s] = self.next_seq;
        self.freq[s] = self.freq[s].saturating_add(1);
        self.h[s] = self.priority(self.freq[s], a);
        if f & QUEUED != 0 {
            self.rekey(s);
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        // The heap entry stays and is skipped while the block is set aside.
        self.flags.unqueue(slot.0);
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        if self.flags.requeue(slot.0).is_some() {
            self.rekey(slot.0 as usize);
        }
    }

    fn on_remove(&mut self, slot: Slot) {
        if self.flags.clear(slot.0).is_some() {
            self.heap.forget(slot.0 as usize);
        }
    }

    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        while let Some(Reverse((h, q, s))) = self.heap.pop() {
            // The slot's entry left the heap either way.
            if !self.flags.is_queued(s) {
                // Set aside: pushed again when it returns.
                continue;
            }
            let i = s as usize;
            if self.key(i) != (h, q) {
                // Hit since the entry was pushed: requeue with its key.
                self.push(i);
                continue;
            }
            self.l = self.h[i];
            self.flags.evicted(s);
            return Some(Slot(s));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{ordered, Gdsf};
    use crate::eviction::testkit::{
        check_contract_with, check_victims, facts, hit_positions, Harness, VictimRule,
    };
    use crate::eviction::{Access, EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};

    #[test]
    fn greedy_dual_size_frequency_by_hand() {
        // Capacity 3, L = 0. (key: tokens, cost) -> H = L + freq * cost / size.
        // 1 (1, 1)  H1 = 1
        // 2 (2, 1)  H2 = 0.5
        // 3 (1, 4)  H3 = 4
        // 4 (1, 2)  H4 = 2; min is H2 = 0.5: 2 goes, L = 0.5
        // 1 hit     H1 = 0.5 + 2 * 1 = 2.5
        // 5 (4, 2)  H5 = 0.5 + 0.5 = 1: the newcomer is the min: 5 goes,
        //           L = 1
        // 6 (1, 1)  H6 = 1 + 1 = 2, ties with H4 = 2; 4 is older: 4 goes,
        //           L = 2
        // 2 (2, 1)  H2 = 2 + 0.5 = 2.5; min is H6 = 2: 6 goes, L = 2
        // 3 hit     H3 = 2 + 2 * 4 = 10
        // 7 (1, 1)  H7 = 3; H1 = H2 = 2.5 tie, 1 is older: 1 goes, L = 2.5
        let mut h = Harness::new(PolicyKind::Gdsf, 3);
        let steps: [(u64, u32, f64); 10] = [
            (1, 1, 1.0),
            (2, 2, 1.0),
            (3, 1, 4.0),
            (4, 1, 2.0),
            (1, 1, 1.0),
            (5, 4, 2.0),
            (6, 1, 1.0),
            (2, 2, 1.0),
            (3, 1, 4.0),
            (7, 1, 1.0),
        ];
        let hits: Vec<bool> = steps
            .iter()
            .map(|&(k, t, c)| h.access_with(k, facts(t, 0, c, 0)))
            .collect();
        assert_eq!(hit_positions(&hits), vec![4, 8]);
        assert_eq!(h.evicted, vec![2, 5, 4, 6, 1]);
        assert_eq!(h.resident(), vec![2, 3, 7]);
    }

    #[test]
    fn inflation_ages_idle_blocks() {
        let mut p = Gdsf::new();
        let now = Nanos::ZERO;
        // 0: cost 10 -> H = 10. Then a stream of unit blocks (H = L + 1)
        // each evicted in turn raises L by 1, until the idle block 0 is the
        // least valuable: after nine victims L = 9, the tenth newcomer has
        // H = 10 and ties with 0, which is older and goes.
        p.on_insert(Slot(0), BlockKey(0), &facts(1, 0, 10.0, 0));
        for k in 1..=10u32 {
            p.on_insert(Slot(k), BlockKey(k as u64), &facts(1, 0, 1.0, 0));
            let v = p.evict(now).unwrap();
            if k < 10 {
                assert_eq!(v, Slot(k));
                assert_eq!(p.l, k as f64);
            } else {
                assert_eq!(v, Slot(0));
            }
        }
    }

    #[test]
    fn set_aside_block_keeps_its_priority() {
        let mut p = Gdsf::new();
        let now = Nanos::ZERO;
        p.on_insert(Slot(0), BlockKey(0), &facts(1, 0, 1.0, 0)); // H 1
        p.on_insert(Slot(1), BlockKey(1), &facts(1, 0, 3.0, 0)); // H 3
        p.on_unevictable(Slot(0));
        // A hit while set aside: H = 0 + 2 * 1 = 2.
        p.on_hit(Slot(0), &facts(1, 0, 1.0, 0));
        p.on_insert(Slot(2), BlockKey(2), &facts(1, 0, 5.0, 0)); // H 5
        assert_eq!(p.evict(now), Some(Slot(1))); // L = 3
        p.on_evictable(Slot(0), now);
        // 0 returns with H 2 < L: still the least.
        assert_eq!(p.evict(now), Some(Slot(0)));
        assert_eq!(p.l, 2.0);
        assert_eq!(p.evict(now), Some(Slot(2)));
        assert_eq!(p.evict(now), None);
        // Repeated set-aside trips do not grow the heap.
        p.on_insert(Slot(0), BlockKey(0), &facts(1, 0, 1.0, 0));
        for _ in 0..1000 {
            p.on_unevictable(Slot(0));
            p.on_evictable(Slot(0), now);
        }
        assert_eq!(p.heap.len(), 1);
        // Nor do hits, past the compaction slack.
        for _ in 0..1000 {
            p.on_hit(Slot(0), &facts(1, 0, 1.0, 0));
        }
        assert!(p.heap.len() <= 2 * p.heap.live() + 65);
    }

    #[test]
    fn ordering_key_is_total() {
        let xs = [
            f64::NEG_INFINITY,
            -2.5,
            -0.0,
            0.0,
            1e-300,
            0.5,
            2.0,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ordered(w[0]) < ordered(w[1]), "{} < {}", w[0], w[1]);
        }
    }

    #[test]
    fn zero_tokens_and_other_capacities() {
        let mut h = Harness::new(PolicyKind::Gdsf, 1);
        h.access_with(1, facts(0, 0, 1.0, 0));
        h.access_with(2, facts(0, 0, 2.0, 0));
        assert_eq!(h.evicted, vec![1]);
        for cap in [None, Some(1), Some(3)] {
            check_contract_with(PolicyKind::Gdsf, cap, Some(24), 1..=10);
        }
    }

    /// GDSF by brute force: the evictable block of least (H, sequence).
    #[derive(Default)]
    struct Model {
        seq: u64,
        l: f64,
    }

    impl VictimRule for Model {
        /// (H, accesses since insertion, sequence)
        type Block = (f64, u64, u64);
        type Rank = (u64, u64);
        fn insert(&mut self, a: &Access) -> (f64, u64, u64) {
            self.seq += 1;
            let h = self.l + 1.0 * a.cost / f64::from(a.tokens.max(1));
            (h, 1, self.seq)
        }
        fn hit(&mut self, b: &mut (f64, u64, u64), a: &Access) {
            self.seq += 1;
            b.1 += 1;
            b.0 = self.l + b.1 as f64 * a.cost / f64::from(a.tokens.max(1));
            b.2 = self.seq;
        }
        fn rank(&self, _s: u32, b: &(f64, u64, u64)) -> (u64, u64) {
            (ordered(b.0), b.2)
        }
        fn evicted(&mut self, b: &(f64, u64, u64)) {
            self.l = b.0;
        }
    }

    #[test]
    fn victims_match_the_definition() {
        check_victims(PolicyKind::Gdsf, Model::default);
    }
}
