//! LRU: evict the least recently used block.
//!
//! Source: the classic stack algorithm (Mattson et al., "Evaluation
//! techniques for storage hierarchies", IBM Systems Journal 1970); Mooncake
//! Store evicts approximately LRU (paper §3.2.1). One intrusive list, most
//! recent at the front; a hit moves the block to the front; the victim is the
//! back. A block that becomes evictable again re-enters at the front, since
//! it was just in use.

use super::list::{Links, List, NIL};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};

#[derive(Default)]
pub struct Lru {
    links: Links,
    list: List,
    queued: Vec<bool>,
}

impl Lru {
    pub fn new() -> Lru {
        Lru::default()
    }

    #[inline]
    fn set_queued(&mut self, s: u32, v: bool) {
        let i = s as usize;
        if self.queued.len() <= i {
            self.queued.resize(i + 1, false);
        }
        self.queued[i] = v;
    }

    #[inline]
    fn is_queued(&self, s: u32) -> bool {
        self.queued.get(s as usize).copied().unwrap_or(false)
    }
}

impl EvictionPolicy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }
    #[inline]
    fn on_insert(&mut self, slot: Slot, _key: BlockKey, _a: &Access) {
        self.links.push_front(&mut self.list, slot.0);
        self.set_queued(slot.0, true);
    }
    #[inline]
    fn on_hit(&mut self, slot: Slot, _a: &Access) {
        if self.is_queued(slot.0) {
            self.links.move_to_front(&mut self.list, slot.0);
        }
    }
    fn on_unevictable(&mut self, slot: Slot) {
        if self.is_queued(slot.0) {
            self.links.unlink(&mut self.list, slot.0);
            self.set_queued(slot.0, false);
        }
    }
    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        if !self.is_queued(slot.0) {
            self.links.push_front(&mut self.list, slot.0);
            self.set_queued(slot.0, true);
        }
    }
    fn on_remove(&mut self, slot: Slot) {
        self.on_unevictable(slot);
    }
    #[inline]
    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        let s = self.links.pop_back(&mut self.list)?;
        debug_assert!(s != NIL);
        self.queued[s as usize] = false;
        Some(Slot(s))
    }
}

#[cfg(test)]
mod tests {
    use crate::eviction::testkit::Harness;
    use crate::eviction::PolicyKind;

    #[test]
    fn textbook_sequence() {
        // capacity 3: 1 2 3 1 4 -> evicts 2 (least recent); 2 misses, evicts 3.
        let mut h = Harness::new(PolicyKind::Lru, 3);
        let hits = h.run(&[1, 2, 3, 1, 4, 2, 1]);
        assert_eq!(hits, vec![false, false, false, true, false, false, true]);
        assert_eq!(h.evicted, vec![2, 3]);
        assert_eq!(h.resident(), vec![1, 2, 4]);
    }

    #[test]
    fn scan_flushes_lru() {
        let mut h = Harness::new(PolicyKind::Lru, 2);
        h.run(&[1, 2, 3, 4]);
        assert_eq!(h.evicted, vec![1, 2]);
    }
}
