//! LFU: evict the least frequently used block, the least recently used one
//! among equal frequencies, with the O(1) structure of Shah, Mitra and
//! Matani ("An O(1) algorithm for implementing the LFU cache eviction
//! scheme", 2010): a list of frequency buckets in increasing frequency, each
//! an LRU list of its blocks, so an insert joins the frequency-1 bucket, a
//! hit moves the block to the MRU end of the next bucket (created next to
//! its current one if missing) and the victim is the LRU block of the lowest
//! non-empty bucket. The frequency counts accesses since insertion (the
//! insert is 1, each hit adds 1); there is no aging: the frequency persists
//! while the block is resident, and a block re-inserted after eviction
//! restarts at 1. Because the cache inserts before it evicts, a newcomer is
//! a candidate like any other: when every other evictable block has been hit
//! at least once the newcomer (frequency 1) is the victim, as LFU demands. A
//! set-aside block leaves its bucket's list but keeps the bucket alive (each
//! bucket counts its set-aside members), so hits while set aside still move
//! it bucket to bucket in O(1) and `on_evictable` puts it at the MRU end of
//! its frequency's bucket in O(1); `evict` skips buckets holding only
//! set-aside blocks.

use super::list::{Links, List, NIL};
use super::slots::{Flags, QUEUED};
use super::{Access, EvictionPolicy, Slot};
use crate::types::{BlockKey, Nanos};

struct Bucket {
    freq: u64,
    /// Evictable members; front = most recently used.
    list: List,
    /// Set-aside members, which keep the bucket alive.
    parked: u32,
    /// Neighbouring buckets: lower and higher frequency.
    lower: u32,
    higher: u32,
}

pub struct Lfu {
    links: Links,
    buckets: Vec<Bucket>,
    free_buckets: Vec<u32>,
    /// The bucket of lowest frequency.
    lowest: u32,
    /// Per slot: its bucket (`NIL` = no block), and whether it holds a
    /// block and whether that block is linked.
    bucket_of: Vec<u32>,
    flags: Flags,
}

impl Default for Lfu {
    fn default() -> Self {
        Lfu {
            links: Links::default(),
            buckets: Vec::new(),
            free_buckets: Vec::new(),
            lowest: NIL,
            bucket_of: Vec::new(),
            flags: Flags::default(),
        }
    }
}

impl Lfu {
    pub fn new() -> Lfu {
        Lfu::default()
    }

    /// A new empty bucket of `freq` just above `below` (`NIL` = lowest).
    fn new_bucket(&mut self, freq: u64, below: u32) -> u32 {
        let higher = if below == NIL {
            self.lowest
        } else {
            self.buckets[below as usize].higher
        };
        let b = Bucket {
            freq,
            list: List::default(),
            parked: 0,
            lower: below,
            higher,
        };
        let id = match self.free_buckets.pop() {
            Some(id) => {
                self.buckets[id as usize] = b;
                id
            }
            None => {
                self.buckets.push(b);
                (self.buckets.len() - 1) as u32
            }
        };
        self.join(below, id);
        self.join(id, higher);
        id
    }

    /// Makes buckets `lower` and `higher` neighbours (`NIL` = past an end
    /// of the bucket list).
    #[inline]
    fn join(&mut self, lower: u32, higher: u32) {
        if lower == NIL {
            self.lowest = higher;
        } else {
            self.buckets[lower as usize].higher = higher;
        }
        if higher != NIL {
            self.buckets[higher as usize].lower = lower;
        }
    }

    /// Unlinks and frees bucket `b` if it has no members left.
    fn drop_if_empty(&mut self, b: u32) {
        let bucket = &self.buckets[b as usize];
        if bucket.list.len > 0 || bucket.parked > 0 {
            return;
        }
        self.join(bucket.lower, bucket.higher);
        self.free_buckets.push(b);
    }

    /// The frequency of the block in `slot`, if any.
    #[cfg(test)]
    fn frequency(&self, slot: Slot) -> Option<u64> {
        let b = *self.bucket_of.get(slot.0 as usize)?;
        (b != NIL).then(|| self.buckets[b as usize].freq)
    }
}

impl EvictionPolicy for Lfu {
    fn name(&self) -> &'static str {
        "lfu"
    }

    #[inline]
    fn on_insert(&mut self, slot: Slot, _key: BlockKey, _a: &Access) {
        let s = slot.0 as usize;
        if self.bucket_of.len() <= s {
            self.bucket_of.resize(s + 1, NIL);
        }
        let b = if self.lowest != NIL && self.buckets[self.lowest as usize].freq == 1 {
            self.lowest
        } else {
            self.new_bucket(1, NIL)
        };
        self.links
            .push_front(&mut self.buckets[b as usize].list, slot.0);
        self.bucket_of[s] = b;
        self.flags.insert(slot.0, 0);
    }

    #[inline]
    fn on_hit(&mut self, slot: Slot, _a: &Access) {
        let s = slot.0 as usize;
        let Some(&b) = self.bucket_of.get(s) else {
            return;
        };
        if b == NIL {
            return;
        }
        let (freq, higher) = {
            let bucket = &self.buckets[b as usize];
            (bucket.freq, bucket.higher)
        };
        let queued = self.flags.is_queued(slot.0);
        let Some(next_freq) = freq.checked_add(1) else {
            if queued {
                self.links
                    .move_to_front(&mut self.buckets[b as usize].list, slot.0);
            }
            return;
        };
        let nb = if higher != NIL && self.buckets[higher as usize].freq == next_freq {
            higher
        } else {
            self.new_bucket(next_freq, b)
        };
        if queued {
            self.links
                .unlink(&mut self.buckets[b as usize].list, slot.0);
            self.links
                .push_front(&mut self.buckets[nb as usize].list, slot.0);
        } else {
            self.buckets[b as usize].parked -= 1;
            self.buckets[nb as usize].parked += 1;
        }
        self.bucket_of[s] = nb;
        self.drop_if_empty(b);
    }

    fn on_unevictable(&mut self, slot: Slot) {
        if self.flags.unqueue(slot.0).is_some() {
            let bucket = &mut self.buckets[self.bucket_of[slot.0 as usize] as usize];
            self.links.unlink(&mut bucket.list, slot.0);
            bucket.parked += 1;
        }
    }

    fn on_evictable(&mut self, slot: Slot, _now: Nanos) {
        if self.flags.requeue(slot.0).is_some() {
            let bucket = &mut self.buckets[self.bucket_of[slot.0 as usize] as usize];
            bucket.parked -= 1;
            self.links.push_front(&mut bucket.list, slot.0);
        }
    }

    fn on_remove(&mut self, slot: Slot) {
        let Some(f) = self.flags.clear(slot.0) else {
            return;
        };
        let s = slot.0 as usize;
        let b = self.bucket_of[s];
        let bucket = &mut self.buckets[b as usize];
        if f & QUEUED != 0 {
            self.links.unlink(&mut bucket.list, slot.0);
        } else {
            bucket.parked -= 1;
        }
        self.bucket_of[s] = NIL;
        self.drop_if_empty(b);
    }

    #[inline]
    fn evict(&mut self, _now: Nanos) -> Option<Slot> {
        let mut b = self.lowest;
        while b != NIL && self.buckets[b as usize].list.len == 0 {
            b = self.buckets[b as usize].higher;
        }
        if b == NIL {
            return None;
        }
        let s = self.links.pop_back(&mut self.buckets[b as usize].list)?;
        self.bucket_of[s as usize] = NIL;
        self.flags.evicted(s);
        self.drop_if_empty(b);
        Some(Slot(s))
    }
}

#[cfg(test)]
mod tests {
    use super::Lfu;
    use crate::eviction::testkit::{
        check_contract_with, check_victims, hit_positions, Harness, LeastThenLru,
    };
    use crate::eviction::{Access, EvictionPolicy, PolicyKind, Slot};
    use crate::types::{BlockKey, Nanos};

    #[test]
    fn least_frequent_then_least_recent() {
        // Capacity 3; buckets written freq: [MRU..LRU].
        // 1 2 3          1: [3 2 1]
        // 1 2 (hits)     1: [3], 2: [2 1]
        // 4 (miss)       1: [4 3] -> LRU of the lowest bucket, 3, goes
        // 5 (miss)       1: [5 4] -> 4 goes
        // 3 (miss)       1: [3 5] -> 5 goes (3 restarts at 1)
        // 1 (hit)        1: [3], 2: [2], 3: [1]
        // 3 3 (hits)     2: [2], 3: [3 1]
        // 6 (miss)       1: [6]: the newcomer is the least frequent: 6 goes
        let mut h = Harness::new(PolicyKind::Lfu, 3);
        let hits = h.run(&[1, 2, 3, 1, 2, 4, 5, 3, 1, 3, 3, 6]);
        assert_eq!(hit_positions(&hits), vec![3, 4, 8, 9, 10]);
        assert_eq!(h.evicted, vec![3, 4, 5, 6]);
        // 7 arrives again and is in use (set aside) at once, as is 2: the
        // candidates are 3: [3 1], and the tie at frequency 3 goes to the
        // least recent, 1.
        h.capacity = 4;
        assert!(!h.access(7));
        h.set_aside(7);
        h.set_aside(2);
        h.capacity = 3;
        h.shrink();
        assert_eq!(h.evicted.last(), Some(&1));
        assert_eq!(h.resident(), vec![2, 3, 7]);
    }

    /// A fresh LFU holding blocks in slots 0, 1 and 2, in that order.
    fn three_blocks() -> Lfu {
        let mut p = Lfu::new();
        for s in 0..3 {
            p.on_insert(Slot(s), BlockKey(s as u64), &Access::at(Nanos::ZERO));
        }
        p
    }

    #[test]
    fn set_aside_block_keeps_counting() {
        let (a, now) = (Access::at(Nanos::ZERO), Nanos::ZERO);
        let mut p = three_blocks();
        // 0 set aside and hit twice: frequency 3, bucket kept alive by it.
        p.on_unevictable(Slot(0));
        p.on_hit(Slot(0), &a);
        p.on_hit(Slot(0), &a);
        assert_eq!(p.frequency(Slot(0)), Some(3));
        // 1 and 2 (frequency 1) go; 0 is not a candidate.
        p.on_hit(Slot(2), &a);
        assert_eq!(p.evict(now), Some(Slot(1)));
        assert_eq!(p.evict(now), Some(Slot(2)));
        assert_eq!(p.evict(now), None);
        // Back: a new block (frequency 1) goes before it.
        p.on_evictable(Slot(0), now);
        p.on_insert(Slot(1), BlockKey(9), &a);
        assert_eq!(p.evict(now), Some(Slot(1)));
        assert_eq!(p.evict(now), Some(Slot(0)));
        assert_eq!(p.evict(now), None);
        // Every bucket was released.
        assert_eq!(p.lowest, super::NIL);
        assert_eq!(p.free_buckets.len(), p.buckets.len());
    }

    #[test]
    fn equal_frequency_returns_as_most_recent() {
        let (a, now) = (Access::at(Nanos::ZERO), Nanos::ZERO);
        let mut p = three_blocks();
        // 0 leaves and returns: it is now the most recent of frequency 1.
        p.on_unevictable(Slot(0));
        p.on_evictable(Slot(0), now);
        assert_eq!(p.evict(now), Some(Slot(1)));
        assert_eq!(p.evict(now), Some(Slot(2)));
        assert_eq!(p.evict(now), Some(Slot(0)));
        // Removal of a set-aside block frees its bucket.
        p.on_insert(Slot(0), BlockKey(5), &a);
        p.on_hit(Slot(0), &a);
        p.on_unevictable(Slot(0));
        p.on_remove(Slot(0));
        assert_eq!(p.frequency(Slot(0)), None);
        assert_eq!(p.lowest, super::NIL);
        assert_eq!(p.evict(now), None);
    }

    #[test]
    fn contract_with_other_capacities() {
        for cap in [None, Some(1), Some(3)] {
            check_contract_with(PolicyKind::Lfu, cap, Some(24), 1..=10);
        }
    }

    #[test]
    fn victims_match_the_definition() {
        // Least frequency, then least recent (insert, hit or return).
        check_victims(PolicyKind::Lfu, || {
            LeastThenLru::new(|freq: Option<u64>, _| freq.map_or(1, |f| f + 1))
        });
    }
}
