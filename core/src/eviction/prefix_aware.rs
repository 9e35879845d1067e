//! PrefixAware: evicts the deepest blocks of the longest chains first. The
//! victim is the evictable block of greatest [`Access::depth`] (its position
//! in its prefix chain, as given by its most recent access), ties going to
//! the least recently used. This is moonlab's own prefix-cache heuristic,
//! not taken from a paper; it follows the leaf-first eviction of radix-tree
//! prefix caches such as SGLang's RadixAttention (Zheng et al., "SGLang:
//! Efficient Execution of Structured Language Model Programs", NeurIPS 2024),
//! which evicts LRU leaves so a cached prefix never loses an inner block
//! before its descendants; ranking by depth gives chained keys the same
//! property without a tree (a block never goes while a deeper evictable
//! block of its chain stays). Each depth has an LRU list (front = most
//! recent): an insert or hit puts the block at the front of its depth's list
//! (moving it across lists if the depth changed), and the victim is the back
//! of the deepest non-empty list. Lists for depths below 65 536 sit in a
//! vector grown to the deepest depth seen; deeper ones live in an ordered
//! map, so no per-depth array of `u32::MAX` entries is ever allocated; the
//! non-empty dense depths are kept in a three-level bitmap updated only when
//! a list becomes empty or non-empty, so finding the deepest list is O(1).
//! A set-aside block leaves its list, a hit on it records its new depth, and
//! `on_evictable` puts it at the front of that depth's list (it was just in
//! use).

use super::list::{Links, List};
use super::slots::{Flags, LIVE, QUEUED};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};
use std::collections::BTreeMap;

/// Depths below this have their list in a vector.
const DENSE_DEPTHS: u32 = 1 << 16;

/// The set of non-empty dense depths as a three-level bitmap (depth bits,
/// then one bit per non-zero word, then one per non-zero summary word), so
/// adding, removing and finding the greatest take O(1).
#[derive(Default)]
struct DepthBits {
    words: Vec<u64>,
    summary: Vec<u64>,
    top: u64,
}

impl DepthBits {
    #[inline]
    fn insert(&mut self, d: u32) {
        let (w, s) = (d as usize / 64, d as usize / 4096);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
            self.summary.resize(s + 1, 0);
        }
        self.words[w] |= 1 << (d % 64);
        self.summary[s] |= 1 << (w % 64);
        self.top |= 1 << s;
    }

    #[inline]
    fn remove(&mut self, d: u32) {
        let (w, s) = (d as usize / 64, d as usize / 4096);
        self.words[w] &= !(1 << (d % 64));
        if self.words[w] == 0 {
            self.summary[s] &= !(1 << (w % 64));
            if self.summary[s] == 0 {
                self.top &= !(1 << s);
            }
        }
    }

    #[inline]
    fn max(&self) -> Option<u32> {
        if self.top == 0 {
            return None;
        }
        let s = 63 - self.top.leading_zeros() as usize;
        let w = s * 64 + 63 - self.summary[s].leading_zeros() as usize;
        let b = 63 - self.words[w].leading_zeros() as usize;
        Some((w * 64 + b) as u32)
    }
}

#[derive(Default)]
pub struct PrefixAware {
    links: Links,
    dense: Vec<List>,
    /// Lists of depths from `DENSE_DEPTHS` on, only while non-empty.
    deep: BTreeMap<u32, List>,
    /// Dense depths whose list is non-empty.
    nonempty: DepthBits,
    /// Per slot: the block's depth, and whether the slot holds a block and
    /// whether that block is linked (evictable).
    depth: Vec<u32>,
    flags: Flags,
}

impl PrefixAware {
    pub fn new() -> PrefixAware {
        PrefixAware::default()
    }

    /// Runs `f` on the list of depth `d`, keeping the non-empty set current.
    #[inline]
    fn with_list<R>(&mut self, d: u32, f: impl FnOnce(&mut Links, &mut List) -> R) -> R {
        let (was, now, r) = if d < DENSE_DEPTHS {
            let i = d as usize;
            if self.dense.len() <= i {
                self.dense.resize(i + 1, List::default());
            }
            let list = &mut self.dense[i];
            let was = list.len;
            let r = f(&mut self.links, list);
            (was, list.len, r)
        } else {
            let list = self.deep.entry(d).or_default();
            let was = list.len;
            let r = f(&mut self.links, list);
            let now = list.len;
            if now == 0 {
                self.deep.remove(&d);
            }
            (was, now, r)
        };
        if d < DENSE_DEPTHS {
            if was == 0 && now > 0 {
                self.nonempty.insert(d);
            } else if was > 0 && now == 0 {
                self.nonempty.remove(d);
            }
        }
        r
    }

    /// The greatest depth with an evictable block.
    #[inline]
    fn max_depth(&self) -> Option<u32> {
        match self.deep.last_key_value() {
            Some((&d, _)) => Some(d),
            None => self.nonempty.max(),
        }
    }

    #[inline]
    fn link(&mut self, s: u32) {
        let d = self.depth[s as usize];
        self.with_list(d, |links, list| links.push_front(list, s));
    }

    #[inline]
    fn unlink(&mut self, s: u32) {
        let d = self.depth[s as usize];
        self.with_list(d, |links, list| links.unlink(list, s));
    }
}

impl EvictionPolicy for PrefixAware {
    fn name(&self) -> &'static str {
        "prefix"
    }

    #[inline]
    fn on_insert(&mut self, slot: Slot, _key: BlockKey, a: &Access) {
        let s = slot.0 as usize;
        if self.depth.len() <= s {
            self.depth.resize(s + 1, 0);
        }
        self.depth[s] = a.depth;
        self.flags.insert(slot.0, 0);
        self.link(slot.0);
    }

    #[inline]
    fn on_hit(&mut self, slot: Slot, a: &Access) {
        let s = slot.0 as usize;
        let f = self.flags.get(slot.0);
        if f & LIVE == 0 {
            return;
        }
        if f & QUEUED == 0 {
            self.depth[s] = a.depth;
        } else if self.depth[s] == a.depth {
            let d = a.depth;
            self.with_list(d, |links, list| links.move_to_front(list, slot.0));
        } else {
            self.unlink(slot.0);
            self.depth[s] = a.depth;
            self.link(slot.0);
        }
    }

    fn on_unevictable(&mut self, slot: Slot) {
        if self.flags.unqueue(slot.0).is_some() {
            self.unlink(slot.0);
        }
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        if self.flags.requeue(slot.0).is_some() {
            self.link(slot.0);
        }
    }

    fn on_remove(&mut self, slot: Slot) {
        if self.flags.clear(slot.0).is_some_and(|f| f & QUEUED != 0) {
            self.unlink(slot.0);
        }
    }

    #[inline]
    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        let d = self.max_depth()?;
        let s = self.with_list(d, |links, list| links.pop_back(list))?;
        self.flags.evicted(s);
        Some(Slot(s))
    }
}

#[cfg(test)]
mod tests {
    use super::{DepthBits, PrefixAware, DENSE_DEPTHS};
    use crate::eviction::testkit::{
        check_contract_with, check_victims, facts, hit_positions, Harness, LeastThenLru,
    };
    use crate::eviction::{EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};
    use std::cmp::Reverse;

    fn at_depth(h: &mut Harness, key: u64, depth: u32) -> bool {
        h.access_with(key, facts(1, depth, 1.0, 0))
    }

    #[test]
    fn deepest_first_then_least_recent() {
        // Capacity 3; (key, depth).
        // (1,0) (2,1) (3,2)          depths 0:[1] 1:[2] 2:[3]
        // (4,0) miss                 deepest is 2: 3 goes
        // (5,1) miss                 1:[5 2]: the LRU 2 goes
        // (1,3) hit, now depth 3     3:[1] 0:[4] 1:[5]
        // (6,2) miss                 deepest is 3: 1 goes
        // (5,1) hit                  1:[5]
        // (7,1) miss                 2:[6] is deepest: 6 goes
        // (8,1) miss                 1:[8 7 5]: the LRU 5 goes
        let mut h = Harness::new(PolicyKind::PrefixAware, 3);
        let steps = [
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 0),
            (5, 1),
            (1, 3),
            (6, 2),
            (5, 1),
            (7, 1),
            (8, 1),
        ];
        let hits: Vec<bool> = steps.iter().map(|&(k, d)| at_depth(&mut h, k, d)).collect();
        assert_eq!(hit_positions(&hits), vec![5, 7]);
        assert_eq!(h.evicted, vec![3, 2, 1, 6, 5]);
        assert_eq!(h.resident(), vec![4, 7, 8]);
    }

    #[test]
    fn a_chain_is_evicted_from_its_tail() {
        // Two requests' chains: a (depth 0..4) and b (depth 0..2), then
        // capacity shrinks to 3: the deepest blocks go, leaving every chain
        // a prefix.
        let mut h = Harness::new(PolicyKind::PrefixAware, 8);
        for d in 0..5 {
            at_depth(&mut h, 10 + d as u64, d);
        }
        for d in 0..3 {
            at_depth(&mut h, 20 + d as u64, d);
        }
        h.capacity = 3;
        h.shrink();
        // Depth 4: 14; depth 3: 13; depth 2: 12 then 22 (12 is older);
        // depth 1: 11 (older than 21).
        assert_eq!(h.evicted, vec![14, 13, 12, 22, 11]);
        assert_eq!(h.resident(), vec![10, 20, 21]);
        assert!(h.contains(21) && !h.contains(22));
    }

    #[test]
    fn set_aside_and_huge_depths() {
        let now = Nanos::ZERO;
        let mut p = PrefixAware::new();
        p.on_insert(Slot(0), BlockKey(0), &facts(1, 5, 1.0, 0));
        p.on_insert(Slot(1), BlockKey(1), &facts(1, u32::MAX, 1.0, 0));
        p.on_insert(Slot(2), BlockKey(2), &facts(1, 1_000_000, 1.0, 0));
        assert!(p.dense.len() <= 6);
        // 1 (deepest) is set aside; hit while aside at depth 2.
        p.on_unevictable(Slot(1));
        p.on_hit(Slot(1), &facts(1, 2, 1.0, 0));
        assert_eq!(p.evict(now), Some(Slot(2)));
        assert!(p.deep.is_empty());
        p.on_evictable(Slot(1), now);
        assert_eq!(p.evict(now), Some(Slot(0)));
        assert_eq!(p.evict(now), Some(Slot(1)));
        assert_eq!(p.evict(now), None);
        assert_eq!(p.nonempty.top, 0);
        assert_eq!(p.max_depth(), None);
        // Removal of the deepest block lowers the maximum.
        p.on_insert(Slot(0), BlockKey(0), &facts(1, 7, 1.0, 0));
        p.on_insert(Slot(1), BlockKey(1), &facts(1, 3, 1.0, 0));
        p.on_remove(Slot(0));
        assert_eq!(p.max_depth(), Some(3));
        assert_eq!(p.evict(now), Some(Slot(1)));
    }

    #[test]
    fn depth_bitmap_tracks_the_maximum() {
        let mut bits = DepthBits::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Mostly small depths, sometimes anywhere in the dense range.
            let d = if x & 3 == 0 {
                (x >> 8) as u32 % DENSE_DEPTHS
            } else {
                (x >> 8) as u32 % 200
            };
            if model.contains(&d) {
                bits.remove(d);
                model.remove(&d);
            } else {
                bits.insert(d);
                model.insert(d);
            }
            assert_eq!(bits.max(), model.last().copied());
        }
    }

    #[test]
    fn contract_with_other_capacities() {
        for cap in [None, Some(1), Some(3)] {
            check_contract_with(PolicyKind::PrefixAware, cap, Some(24), 1..=10);
        }
    }

    #[test]
    fn victims_match_the_definition() {
        // Greatest depth, then least recent (insert, hit or return).
        check_victims(PolicyKind::PrefixAware, || {
            LeastThenLru::new(|_, a| Reverse(a.depth))
        });
    }
}
