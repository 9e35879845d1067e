//! Test helpers shared by the policies' unit tests: a driver for hand-worked
//! access sequences, a randomized check of the trait contract, and a
//! randomized check of each choice against a brute-force rule.

use super::{Access, EvictionPolicy, PolicyKind, Slot};
use crate::types::{BlockKey, Nanos};
use std::collections::BTreeMap;

/// Slot numbers handed out as the cache does: a freed one first (the most
/// recently freed), else the next unused one.
#[derive(Default)]
pub struct SlotPool {
    free: Vec<u32>,
    next: u32,
}

impl SlotPool {
    pub fn take(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        })
    }

    pub fn put(&mut self, s: u32) {
        self.free.push(s);
    }
}

/// A minimal cache of unit-size blocks around one policy, keyed by small
/// integers, for hand-worked sequences: `access(k)` inserts or hits `k`, then
/// evicts until at most `capacity` blocks remain; it returns whether `k` hit.
pub struct Harness {
    pub policy: Box<dyn EvictionPolicy>,
    pub capacity: usize,
    key_to_slot: BTreeMap<u64, u32>,
    slot_to_key: BTreeMap<u32, u64>,
    slots: SlotPool,
    pub clock: u64,
    pub evicted: Vec<u64>,
}

impl Harness {
    pub fn new(kind: PolicyKind, capacity: usize) -> Harness {
        Harness::with(kind.build(Some(capacity as u64)), capacity)
    }

    pub fn with(policy: Box<dyn EvictionPolicy>, capacity: usize) -> Harness {
        Harness {
            policy,
            capacity,
            key_to_slot: BTreeMap::new(),
            slot_to_key: BTreeMap::new(),
            slots: SlotPool::default(),
            clock: 0,
            evicted: vec![],
        }
    }

    pub fn contains(&self, key: u64) -> bool {
        self.key_to_slot.contains_key(&key)
    }

    pub fn resident(&self) -> Vec<u64> {
        self.key_to_slot.keys().copied().collect()
    }

    /// Access with full facts (tokens, depth, cost, next_use).
    pub fn access_with(&mut self, key: u64, mut a: Access) -> bool {
        self.clock += 1;
        a.now = Nanos(self.clock);
        let hit = if let Some(&s) = self.key_to_slot.get(&key) {
            self.policy.on_hit(Slot(s), &a);
            true
        } else {
            let s = self.slots.take();
            self.key_to_slot.insert(key, s);
            self.slot_to_key.insert(s, key);
            self.policy.on_insert(Slot(s), BlockKey(key), &a);
            false
        };
        self.shrink();
        hit
    }

    pub fn access(&mut self, key: u64) -> bool {
        self.access_with(key, Access::at(Nanos::ZERO))
    }

    /// The slot `key` occupies; panics if it is not resident.
    pub fn slot(&self, key: u64) -> Slot {
        Slot(*self.key_to_slot.get(&key).expect("key is resident"))
    }

    /// Takes resident `key` out of the candidate set (`on_unevictable`).
    pub fn set_aside(&mut self, key: u64) {
        let s = self.slot(key);
        self.policy.on_unevictable(s);
    }

    /// Returns `key` to the candidate set (`on_evictable`), then evicts
    /// back to capacity.
    pub fn give_back(&mut self, key: u64) {
        let s = self.slot(key);
        self.clock += 1;
        self.policy.on_evictable(s, Nanos(self.clock));
        self.shrink();
    }

    /// Removes `key` other than by eviction (`on_remove`); its slot is freed.
    pub fn remove(&mut self, key: u64) {
        let s = self.slot(key);
        self.policy.on_remove(s);
        self.key_to_slot.remove(&key);
        self.slot_to_key.remove(&s.0);
        self.slots.put(s.0);
    }

    /// Accesses each key in turn; returns the hit flags.
    pub fn run(&mut self, keys: &[u64]) -> Vec<bool> {
        keys.iter().map(|&k| self.access(k)).collect()
    }

    pub fn shrink(&mut self) {
        while self.key_to_slot.len() > self.capacity {
            let s = self
                .policy
                .evict(Nanos(self.clock))
                .expect("policy has evictable blocks");
            let k = self.slot_to_key.remove(&s.0).expect("victim is resident");
            self.key_to_slot.remove(&k);
            self.slots.put(s.0);
            self.evicted.push(k);
        }
    }
}

/// The positions of the hits in `hits`, as [`Harness::run`] returns them.
pub fn hit_positions(hits: &[bool]) -> Vec<usize> {
    (0..hits.len()).filter(|&i| hits[i]).collect()
}

/// Access facts for [`Harness::access_with`] (time is set by the harness).
pub fn facts(tokens: u32, depth: u32, cost: f64, next_use: u64) -> Access {
    Access {
        now: Nanos::ZERO,
        tokens,
        depth,
        cost,
        next_use,
    }
}

/// For each position of `keys`, the position of the next access to the same
/// key (`u64::MAX` = never): the oracle's [`Access::next_use`].
pub fn next_uses(keys: &[u64]) -> Vec<u64> {
    let mut out = vec![u64::MAX; keys.len()];
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, &k) in keys.iter().enumerate().rev() {
        if let Some(&j) = last.get(&k) {
            out[i] = j;
        }
        last.insert(k, i as u64);
    }
    out
}

use moonlab_testkit::Rng;

/// Drives `kind` through random inserts, hits, pins, unpins, removals and
/// evictions, and checks after each step that `evict` returns exactly the
/// evictable resident blocks: never a pinned one, never one twice, and
/// `None` only when nothing is evictable.
pub fn check_contract(kind: PolicyKind) {
    check_contract_with(kind, Some(8), None, 1..=40);
}

/// [`check_contract`] with a chosen capacity, seeds and key pool. With
/// `key_pool = Some(n)`, inserts draw keys from `1..=n` (skipping resident
/// ones unless all are resident), so evicted keys come back and ghost lists
/// are hit; with `None` every insert uses a fresh key.
pub fn check_contract_with(
    kind: PolicyKind,
    capacity: Option<u64>,
    key_pool: Option<u64>,
    seeds: std::ops::RangeInclusive<u64>,
) {
    for seed in seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut p = kind.build(capacity);
        // slot -> evictable?
        let mut resident: BTreeMap<u32, bool> = BTreeMap::new();
        let mut keys_of: BTreeMap<u32, u64> = BTreeMap::new();
        let mut slots = SlotPool::default();
        let mut key = 0u64;
        for step in 0..400u64 {
            let now = Nanos(step);
            let access = Access {
                now,
                tokens: 1 + rng.below(512) as u32,
                depth: rng.below(6) as u32,
                cost: 1.0 + rng.below(100) as f64,
                next_use: step + 1 + rng.below(50),
            };
            match rng.below(10) {
                0..=2 => {
                    let s = slots.take();
                    key = match key_pool {
                        None => key + 1,
                        Some(n) => {
                            let mut k = 1 + rng.below(n);
                            for _ in 0..n {
                                if !keys_of.values().any(|&r| r == k) {
                                    break;
                                }
                                k = k % n + 1;
                            }
                            k
                        }
                    };
                    p.on_insert(Slot(s), BlockKey(key), &access);
                    resident.insert(s, true);
                    keys_of.insert(s, key);
                }
                3..=4 if !resident.is_empty() => {
                    let s = pick(&mut rng, &resident);
                    p.on_hit(Slot(s), &access);
                }
                5 if !resident.is_empty() => {
                    let s = pick(&mut rng, &resident);
                    let ev = resident.get_mut(&s).unwrap();
                    if *ev {
                        p.on_unevictable(Slot(s));
                        *ev = false;
                    } else {
                        p.on_evictable(Slot(s), now);
                        *ev = true;
                    }
                }
                6 if !resident.is_empty() => {
                    let s = pick(&mut rng, &resident);
                    p.on_remove(Slot(s));
                    resident.remove(&s);
                    keys_of.remove(&s);
                    slots.put(s);
                }
                _ => {
                    let any = resident.values().any(|&e| e);
                    match p.evict(now) {
                        Some(Slot(s)) => {
                            assert_eq!(
                                resident.get(&s),
                                Some(&true),
                                "{kind}: seed {seed} step {step}: evicted slot {s} is not evictable"
                            );
                            resident.remove(&s);
                            keys_of.remove(&s);
                            slots.put(s);
                        }
                        None => assert!(
                            !any,
                            "{kind}: seed {seed} step {step}: None while blocks are evictable"
                        ),
                    }
                }
            }
        }
        // Drain: every evictable block comes out exactly once.
        let mut want: Vec<u32> = resident
            .iter()
            .filter(|(_, &e)| e)
            .map(|(&s, _)| s)
            .collect();
        let mut got = vec![];
        while let Some(Slot(s)) = p.evict(Nanos(10_000)) {
            got.push(s);
            assert!(
                got.len() <= want.len(),
                "{kind}: seed {seed}: drain returned too many"
            );
        }
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{kind}: seed {seed}: drain differs");
    }
}

/// A brute-force statement of a policy's choice, for [`check_victims`]: the
/// facts the policy keeps per block and the rank it chooses by. The victim
/// is the evictable block of least rank, found by scanning every block.
pub trait VictimRule {
    type Block;
    type Rank: Ord;
    fn insert(&mut self, a: &Access) -> Self::Block;
    fn hit(&mut self, b: &mut Self::Block, a: &Access);
    /// A set-aside block became evictable again; by default nothing changes.
    fn give_back(&mut self, _b: &mut Self::Block) {}
    fn rank(&self, slot: u32, b: &Self::Block) -> Self::Rank;
    /// The victim left; by default nothing else changes.
    fn evicted(&mut self, _b: &Self::Block) {}
}

/// "Least key, then least recently used", where an insert, a hit and a
/// return each count as a use, and `key` gives a block's key at each access
/// from the one it had (`None` on insert).
pub struct LeastThenLru<K> {
    key: fn(Option<K>, &Access) -> K,
    clock: u64,
}

impl<K> LeastThenLru<K> {
    pub fn new(key: fn(Option<K>, &Access) -> K) -> Self {
        LeastThenLru { key, clock: 0 }
    }
}

impl<K: Ord + Copy> VictimRule for LeastThenLru<K> {
    /// (key, time of the last use)
    type Block = (K, u64);
    type Rank = (K, u64);
    fn insert(&mut self, a: &Access) -> (K, u64) {
        self.clock += 1;
        ((self.key)(None, a), self.clock)
    }
    fn hit(&mut self, b: &mut (K, u64), a: &Access) {
        self.clock += 1;
        *b = ((self.key)(Some(b.0), a), self.clock);
    }
    fn give_back(&mut self, b: &mut (K, u64)) {
        self.clock += 1;
        b.1 = self.clock;
    }
    fn rank(&self, _slot: u32, b: &(K, u64)) -> (K, u64) {
        *b
    }
}

/// A resident slot drawn at random.
fn pick<V>(rng: &mut Rng, resident: &BTreeMap<u32, V>) -> u32 {
    let i = rng.below(resident.len() as u64) as usize;
    *resident.keys().nth(i).unwrap()
}

/// Drives `kind` and a fresh `rule()` through the same random events
/// (inserts, hits, set-asides and returns, removals, evictions; facts drawn
/// from small ranges so ties happen) and checks that every eviction picks
/// the rule's victim.
pub fn check_victims<R: VictimRule>(kind: PolicyKind, rule: impl Fn() -> R) {
    for seed in 1..=30u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
        let mut p = kind.build(Some(6));
        let mut m = rule();
        // slot -> (the rule's facts, evictable?)
        let mut resident: BTreeMap<u32, (R::Block, bool)> = BTreeMap::new();
        let mut slots = SlotPool::default();
        for step in 0..600u64 {
            let a = Access {
                now: Nanos(step),
                tokens: [0, 1, 2, 4][rng.below(4) as usize],
                depth: rng.below(5) as u32,
                cost: [0.0, 1.0, 2.0, 3.0][rng.below(4) as usize],
                next_use: step + rng.below(6),
            };
            match rng.below(12) {
                0..=3 => {
                    let s = slots.take();
                    p.on_insert(Slot(s), BlockKey(step), &a);
                    resident.insert(s, (m.insert(&a), true));
                }
                4..=6 if !resident.is_empty() => {
                    let s = pick(&mut rng, &resident);
                    p.on_hit(Slot(s), &a);
                    m.hit(&mut resident.get_mut(&s).unwrap().0, &a);
                }
                7 if !resident.is_empty() => {
                    let s = pick(&mut rng, &resident);
                    let (b, ev) = resident.get_mut(&s).unwrap();
                    if *ev {
                        p.on_unevictable(Slot(s));
                    } else {
                        p.on_evictable(Slot(s), a.now);
                        m.give_back(b);
                    }
                    *ev = !*ev;
                }
                8 if !resident.is_empty() => {
                    let s = pick(&mut rng, &resident);
                    p.on_remove(Slot(s));
                    resident.remove(&s);
                    slots.put(s);
                }
                _ => {
                    let got = p.evict(a.now).map(|s| s.0);
                    let want = resident
                        .iter()
                        .filter(|(_, (_, ev))| *ev)
                        .min_by_key(|(&s, (b, _))| m.rank(s, b))
                        .map(|(&s, _)| s);
                    assert_eq!(got, want, "{kind}: seed {seed} step {step}");
                    if let Some(s) = got {
                        let (b, _) = resident.remove(&s).unwrap();
                        m.evicted(&b);
                        slots.put(s);
                    }
                }
            }
        }
    }
}
