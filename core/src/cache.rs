//! [`BlockCache`]: a bounded set of KV blocks that owns the key → slot map,
//! the in-use pins and the read leases, and asks an [`EvictionPolicy`] for
//! victims among the blocks that may go. The cache replayer uses it as is;
//! the cluster simulator and the real store use one per DRAM segment.
//!
//! A block is *evictable* when no request is using it (pin count 0), no
//! lease on it is still running (Mooncake Store grants a lease on every read
//! and never evicts a leased object) and it is not soft-pinned. A soft pin
//! (Mooncake Store's hot-object pin) keeps a block out of the policy's reach
//! until it expires — unless nothing else can be evicted: then the
//! soft-pinned block whose pin ends first goes (if not in use or leased). Eviction is explicit
//! ([`BlockCache::evict_to_capacity`]), so a caller can insert a whole
//! request's blocks before the cache is brought back within capacity.

use crate::eviction::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

#[derive(Clone, Debug)]
struct SlotState {
    key: BlockKey,
    pins: u32,
    lease_until: Nanos,
    soft_until: Nanos,
    /// Bumped when the slot is freed, so stale lease-heap entries are ignored.
    generation: u32,
    resident: bool,
}

impl SlotState {
    fn evictable(&self) -> bool {
        self.pins == 0 && self.lease_until == Nanos::ZERO && self.soft_until == Nanos::ZERO
    }

    /// Evictable as a last resort: only a soft pin holds it.
    fn soft_only(&self) -> bool {
        self.pins == 0 && self.lease_until == Nanos::ZERO && self.soft_until != Nanos::ZERO
    }
}

/// Counters kept by a [`BlockCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Evictions of soft-pinned blocks because nothing else could go.
    pub soft_pin_evictions: u64,
}

pub struct BlockCache<P: EvictionPolicy = Box<dyn EvictionPolicy>> {
    policy: P,
    capacity_blocks: Option<u64>,
    map: FxHashMap<BlockKey, u32>,
    slots: Vec<SlotState>,
    free: Vec<u32>,
    /// (expiry, slot, generation) of leases, earliest first.
    leases: BinaryHeap<Reverse<(Nanos, u32, u32)>>,
    /// Soft-pinned slots by pin expiry (the last-resort eviction order).
    soft: BTreeSet<(Nanos, u32)>,
    counters: CacheCounters,
}

impl<P: EvictionPolicy> BlockCache<P> {
    /// A cache of at most `capacity_blocks` blocks (`None` = unbounded).
    pub fn new(policy: P, capacity_blocks: Option<u64>) -> Self {
        BlockCache {
            policy,
            capacity_blocks,
            map: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            leases: BinaryHeap::new(),
            soft: BTreeSet::new(),
            counters: CacheCounters::default(),
        }
    }

    pub fn policy(&self) -> &P {
        &self.policy
    }
    pub fn capacity_blocks(&self) -> Option<u64> {
        self.capacity_blocks
    }
    /// Resident blocks.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub fn counters(&self) -> CacheCounters {
        self.counters
    }
    #[inline]
    pub fn contains(&self, key: BlockKey) -> bool {
        self.map.contains_key(&key)
    }
    /// True if `key` is resident and neither pinned nor leased.
    pub fn is_evictable(&self, key: BlockKey) -> bool {
        self.map
            .get(&key)
            .is_some_and(|&s| self.slots[s as usize].evictable())
    }

    /// The number of leading `keys` resident: the prefix a request can reuse.
    pub fn prefix_len(&self, keys: &[BlockKey]) -> usize {
        keys.iter().take_while(|k| self.map.contains_key(k)).count()
    }

    /// Accesses `key`: a hit updates the policy, a miss inserts the block.
    /// Never evicts; returns whether the block was resident.
    #[inline]
    pub fn touch(&mut self, key: BlockKey, access: &Access) -> bool {
        if let Some(&s) = self.map.get(&key) {
            self.counters.hits += 1;
            self.policy.on_hit(Slot(s), access);
            true
        } else {
            self.counters.misses += 1;
            let s = self.alloc(key);
            self.policy.on_insert(Slot(s), key, access);
            false
        }
    }

    fn alloc(&mut self, key: BlockKey) -> u32 {
        let s = match self.free.pop() {
            Some(s) => {
                let st = &mut self.slots[s as usize];
                st.key = key;
                st.pins = 0;
                st.lease_until = Nanos::ZERO;
                st.soft_until = Nanos::ZERO;
                st.resident = true;
                s
            }
            None => {
                self.slots.push(SlotState {
                    key,
                    pins: 0,
                    lease_until: Nanos::ZERO,
                    soft_until: Nanos::ZERO,
                    generation: 0,
                    resident: true,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(key, s);
        s
    }

    fn release(&mut self, s: u32) -> BlockKey {
        let st = &mut self.slots[s as usize];
        debug_assert!(st.resident);
        st.resident = false;
        st.pins = 0;
        st.lease_until = Nanos::ZERO;
        if st.soft_until != Nanos::ZERO {
            self.soft.remove(&(st.soft_until, s));
            st.soft_until = Nanos::ZERO;
        }
        st.generation = st.generation.wrapping_add(1);
        let key = st.key;
        self.map.remove(&key);
        self.free.push(s);
        key
    }

    /// Evicts until at most `capacity_blocks` remain, pushing the victims'
    /// keys to `evicted`. Returns false if it had to stop because every
    /// remaining block is pinned or leased (the cache stays over capacity).
    pub fn evict_to_capacity(&mut self, now: Nanos, evicted: &mut Vec<BlockKey>) -> bool {
        let Some(cap) = self.capacity_blocks else {
            return true;
        };
        while self.map.len() as u64 > cap {
            match self.policy.evict(now) {
                Some(Slot(s)) => {
                    debug_assert!(
                        self.slots[s as usize].evictable(),
                        "policy evicted a held block"
                    );
                    self.counters.evictions += 1;
                    evicted.push(self.release(s));
                }
                None => {
                    // Last resort: the soft-pinned block whose pin ends first.
                    let victim = self
                        .soft
                        .iter()
                        .map(|&(_, s)| s)
                        .find(|&s| self.slots[s as usize].soft_only());
                    let Some(s) = victim else {
                        return false;
                    };
                    self.policy.on_remove(Slot(s));
                    self.counters.evictions += 1;
                    self.counters.soft_pin_evictions += 1;
                    evicted.push(self.release(s));
                }
            }
        }
        true
    }

    /// Evicts exactly one block chosen by the policy, if any is evictable.
    pub fn evict_one(&mut self, now: Nanos) -> Option<BlockKey> {
        let Slot(s) = self.policy.evict(now)?;
        self.counters.evictions += 1;
        Some(self.release(s))
    }

    /// Removes `key` whatever its state (pins and leases are dropped).
    pub fn remove(&mut self, key: BlockKey) -> bool {
        match self.map.get(&key) {
            Some(&s) => {
                self.policy.on_remove(Slot(s));
                self.release(s);
                true
            }
            None => false,
        }
    }

    /// Marks `key` in use by one more request; in-use blocks are never evicted.
    /// Returns false if the block is not resident.
    pub fn pin(&mut self, key: BlockKey) -> bool {
        let Some(&s) = self.map.get(&key) else {
            return false;
        };
        let st = &mut self.slots[s as usize];
        let was = st.evictable();
        st.pins += 1;
        if was {
            self.policy.on_unevictable(Slot(s));
        }
        true
    }

    /// Ends one use of `key` (see [`BlockCache::pin`]).
    pub fn unpin(&mut self, key: BlockKey, now: Nanos) -> bool {
        let Some(&s) = self.map.get(&key) else {
            return false;
        };
        let st = &mut self.slots[s as usize];
        if st.pins == 0 {
            return false;
        }
        st.pins -= 1;
        if st.evictable() {
            self.policy.on_evictable(Slot(s), now);
        }
        true
    }

    /// Grants (or extends) a lease on `key` until `until`; the block cannot be
    /// evicted before [`BlockCache::expire_leases`] is called with a time at
    /// or after `until`. Returns false if the block is not resident.
    pub fn lease(&mut self, key: BlockKey, until: Nanos) -> bool {
        let Some(&s) = self.map.get(&key) else {
            return false;
        };
        let st = &mut self.slots[s as usize];
        if until <= st.lease_until {
            return true;
        }
        let was = st.evictable();
        st.lease_until = until;
        self.leases.push(Reverse((until, s, st.generation)));
        if was {
            self.policy.on_unevictable(Slot(s));
        }
        true
    }

    /// Soft-pins `key` until `until` (extending an earlier pin): it leaves the
    /// policy's candidates and goes only when nothing else can. Returns
    /// false if the block is not resident.
    pub fn soft_pin(&mut self, key: BlockKey, until: Nanos) -> bool {
        let Some(&s) = self.map.get(&key) else {
            return false;
        };
        let st = &mut self.slots[s as usize];
        if until <= st.soft_until {
            return true;
        }
        let was = st.evictable();
        if st.soft_until != Nanos::ZERO {
            self.soft.remove(&(st.soft_until, s));
        }
        st.soft_until = until;
        self.soft.insert((until, s));
        if was {
            self.policy.on_unevictable(Slot(s));
        }
        true
    }

    /// True if `key` is resident and soft-pinned.
    pub fn is_soft_pinned(&self, key: BlockKey) -> bool {
        self.map
            .get(&key)
            .is_some_and(|&s| self.slots[s as usize].soft_until != Nanos::ZERO)
    }

    /// Ends every lease and soft pin that expires at or before `now`.
    pub fn expire_leases(&mut self, now: Nanos) {
        while let Some(&(until, s)) = self.soft.first() {
            if until > now {
                break;
            }
            self.soft.pop_first();
            let st = &mut self.slots[s as usize];
            st.soft_until = Nanos::ZERO;
            if st.evictable() {
                self.policy.on_evictable(Slot(s), now);
            }
        }
        while let Some(&Reverse((until, s, generation))) = self.leases.peek() {
            if until > now {
                break;
            }
            self.leases.pop();
            let st = &mut self.slots[s as usize];
            if !st.resident || st.generation != generation || st.lease_until != until {
                continue;
            }
            st.lease_until = Nanos::ZERO;
            if st.evictable() {
                self.policy.on_evictable(Slot(s), now);
            }
        }
    }

    /// Resident keys in slot order (deterministic for a given history).
    pub fn keys(&self) -> impl Iterator<Item = BlockKey> + '_ {
        self.slots.iter().filter(|s| s.resident).map(|s| s.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::PolicyKind;

    fn cache(cap: u64) -> BlockCache {
        BlockCache::new(PolicyKind::Lru.build(Some(cap)), Some(cap))
    }

    fn at(t: u64) -> Access {
        Access::at(Nanos(t))
    }

    #[test]
    fn inserts_then_evicts_back_to_capacity() {
        let mut c = cache(2);
        let mut out = vec![];
        for k in 1..=3 {
            assert!(!c.touch(BlockKey(k), &at(k)));
        }
        assert_eq!(c.len(), 3);
        assert!(c.evict_to_capacity(Nanos(3), &mut out));
        assert_eq!(out, vec![BlockKey(1)]);
        assert_eq!(c.prefix_len(&[BlockKey(2), BlockKey(3), BlockKey(1)]), 2);
        assert_eq!(c.counters().evictions, 1);
    }

    #[test]
    fn pinned_and_leased_blocks_survive() {
        let mut c = cache(1);
        let mut out = vec![];
        c.touch(BlockKey(1), &at(0));
        c.touch(BlockKey(2), &at(1));
        c.pin(BlockKey(1));
        c.lease(BlockKey(2), Nanos(100));
        assert!(!c.evict_to_capacity(Nanos(2), &mut out));
        assert!(out.is_empty());
        c.expire_leases(Nanos(99));
        assert!(!c.evict_to_capacity(Nanos(99), &mut out));
        c.expire_leases(Nanos(100));
        assert!(c.evict_to_capacity(Nanos(100), &mut out));
        assert_eq!(out, vec![BlockKey(2)]);
        assert!(c.unpin(BlockKey(1), Nanos(101)));
        assert!(!c.unpin(BlockKey(1), Nanos(101)));
        assert!(c.is_evictable(BlockKey(1)));
    }

    #[test]
    fn extended_lease_is_not_ended_by_the_old_expiry() {
        let mut c = cache(0);
        let mut out = vec![];
        c.touch(BlockKey(7), &at(0));
        c.lease(BlockKey(7), Nanos(10));
        c.lease(BlockKey(7), Nanos(20));
        c.expire_leases(Nanos(15));
        assert!(!c.evict_to_capacity(Nanos(15), &mut out));
        c.expire_leases(Nanos(20));
        assert!(c.evict_to_capacity(Nanos(20), &mut out));
        assert_eq!(out, vec![BlockKey(7)]);
    }

    #[test]
    fn lease_of_a_removed_block_does_not_touch_the_slot_reuser() {
        let mut c = cache(1);
        let mut out = vec![];
        c.touch(BlockKey(1), &at(0));
        c.lease(BlockKey(1), Nanos(10));
        assert!(c.remove(BlockKey(1)));
        c.touch(BlockKey(2), &at(1));
        c.pin(BlockKey(2));
        c.expire_leases(Nanos(10));
        assert!(!c.is_evictable(BlockKey(2)));
        c.touch(BlockKey(3), &at(2));
        assert!(c.evict_to_capacity(Nanos(11), &mut out));
        assert_eq!(out, vec![BlockKey(3)]);
    }

    #[test]
    fn soft_pins_keep_hot_blocks_until_nothing_else_can_go() {
        let mut c = cache(2);
        let mut out = vec![];
        for k in 1..=3 {
            c.touch(BlockKey(k), &at(k));
        }
        // LRU would drop 1; soft-pinned, 2 goes instead.
        c.soft_pin(BlockKey(1), Nanos(100));
        assert!(c.evict_to_capacity(Nanos(4), &mut out));
        assert_eq!(out, vec![BlockKey(2)]);
        // Capacity 0 is only reachable by evicting the soft-pinned block,
        // after the unpinned one, and never a leased one.
        let mut zero = cache(0);
        zero.touch(BlockKey(7), &at(0));
        zero.touch(BlockKey(8), &at(1));
        zero.soft_pin(BlockKey(7), Nanos(50));
        zero.soft_pin(BlockKey(8), Nanos(40));
        zero.lease(BlockKey(8), Nanos(60));
        let mut out = vec![];
        assert!(!zero.evict_to_capacity(Nanos(2), &mut out));
        assert_eq!(out, vec![BlockKey(7)]);
        assert_eq!(zero.counters().soft_pin_evictions, 1);
        // Expiry hands the block back to the policy.
        let mut c = cache(1);
        c.touch(BlockKey(1), &at(0));
        c.touch(BlockKey(2), &at(1));
        c.soft_pin(BlockKey(1), Nanos(10));
        c.expire_leases(Nanos(10));
        assert!(!c.is_soft_pinned(BlockKey(1)));
        let mut out = vec![];
        assert!(c.evict_to_capacity(Nanos(11), &mut out));
        assert_eq!(out, vec![BlockKey(2)], "1 returned at the MRU end");
    }

    #[test]
    fn unbounded_never_evicts() {
        let mut c: BlockCache = BlockCache::new(PolicyKind::Lru.build(None), None);
        let mut out = vec![];
        for k in 0..1000 {
            c.touch(BlockKey(k), &at(k));
        }
        assert!(c.evict_to_capacity(Nanos(1000), &mut out));
        assert_eq!(c.len(), 1000);
    }
}
