//! Block reuse: for every block a request carries, was it seen before, how
//! many distinct other blocks were used since (the LRU stack distance), and
//! how long ago (the reuse time).
//!
//! Definitions (the order the cache replayer uses, so the two agree): a
//! request's lookups happen at its arrival, before it touches anything; then
//! its blocks are touched tail first. The *distance* of a block is the number
//! of distinct blocks whose last touch came after its own last touch. An LRU
//! prefix cache of C blocks therefore holds a block at a request's arrival
//! exactly when its distance is below C (`moonlab-sim` tests this).
//!
//! Memory is proportional to the number of distinct blocks: a Fenwick tree
//! over touch positions, compacted whenever positions run out.

use moonlab_core::{BlockKey, Nanos};
use rustc_hash::FxHashMap;

/// One block's reuse, seen at a request's arrival.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    /// Distinct blocks touched since this block's last touch.
    pub distance_blocks: u64,
    /// Time since this block's last touch.
    pub age: Nanos,
}

#[derive(Default)]
pub struct ReuseTracker {
    last: FxHashMap<BlockKey, (u32, Nanos)>,
    /// 1-based Fenwick tree over positions: 1 where a live key was last touched.
    tree: Vec<i32>,
    /// Key last touched at each position (valid where `live`).
    pos_key: Vec<BlockKey>,
    live: Vec<bool>,
    next_pos: u32,
}

impl ReuseTracker {
    pub fn new() -> ReuseTracker {
        let mut t = ReuseTracker::default();
        t.rebuild(1024);
        t
    }

    /// Distinct blocks seen so far.
    pub fn unique_blocks(&self) -> u64 {
        self.last.len() as u64
    }

    /// Looks up each of `keys` (in request order) at `arrival`, writing
    /// `Some(reuse)` for blocks seen before and `None` for first sightings
    /// into `out`, then touches the blocks tail first.
    pub fn observe(&mut self, arrival: Nanos, keys: &[BlockKey], out: &mut Vec<Option<Reuse>>) {
        out.clear();
        let total = self.last.len() as u64;
        for k in keys {
            out.push(self.last.get(k).map(|&(pos, t)| Reuse {
                distance_blocks: total - self.prefix_sum(pos) as u64,
                age: arrival.saturating_sub(t),
            }));
        }
        for &k in keys.iter().rev() {
            self.touch(k, arrival);
        }
    }

    fn touch(&mut self, key: BlockKey, now: Nanos) {
        if self.next_pos as usize >= self.live.len() {
            self.compact();
        }
        let new = self.next_pos;
        self.next_pos += 1;
        if let Some((old, _)) = self.last.insert(key, (new, now)) {
            self.add(old, -1);
            self.live[old as usize] = false;
        }
        self.add(new, 1);
        self.live[new as usize] = true;
        self.pos_key[new as usize] = key;
    }

    /// Renumbers the live positions 0.. in order and rebuilds the tree with
    /// room for as many again.
    fn compact(&mut self) {
        let live: Vec<BlockKey> = (0..self.next_pos as usize)
            .filter(|&p| self.live[p])
            .map(|p| self.pos_key[p])
            .collect();
        let size = (live.len() * 2).max(1024);
        self.rebuild(size);
        for (p, k) in live.iter().enumerate() {
            self.live[p] = true;
            self.pos_key[p] = *k;
            if let Some(e) = self.last.get_mut(k) {
                e.0 = p as u32;
            }
        }
        self.next_pos = live.len() as u32;
        // O(n) Fenwick construction.
        for i in 1..=size {
            self.tree[i] += self.live[i - 1] as i32;
            let j = i + (i & i.wrapping_neg());
            if j <= size {
                let v = self.tree[i];
                self.tree[j] += v;
            }
        }
    }

    fn rebuild(&mut self, size: usize) {
        self.tree = vec![0; size + 1];
        self.pos_key = vec![BlockKey(0); size];
        self.live = vec![false; size];
        self.next_pos = 0;
    }

    fn add(&mut self, pos: u32, delta: i32) {
        let mut i = pos as usize + 1;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// Live positions in 0..=pos.
    fn prefix_sum(&self, pos: u32) -> i64 {
        let mut i = pos as usize + 1;
        let mut s = 0i64;
        while i > 0 {
            s += self.tree[i] as i64;
            i -= i & i.wrapping_neg();
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &[u64]) -> Vec<BlockKey> {
        v.iter().map(|&k| BlockKey(k)).collect()
    }

    /// The definition, computed the slow way.
    fn naive(history: &[(u64, Vec<u64>)]) -> Vec<Vec<Option<(u64, u64)>>> {
        let mut touches: Vec<(u64, u64)> = vec![]; // (key, time) in touch order
        let mut out = vec![];
        for (t, ks) in history {
            let mut row = vec![];
            for k in ks {
                match touches.iter().rposition(|(x, _)| x == k) {
                    None => row.push(None),
                    Some(p) => {
                        let mut after: Vec<u64> =
                            touches[p + 1..].iter().map(|(x, _)| *x).collect();
                        after.sort_unstable();
                        after.dedup();
                        after.retain(|x| x != k);
                        row.push(Some((after.len() as u64, t - touches[p].1)));
                    }
                }
            }
            for k in ks.iter().rev() {
                touches.push((*k, *t));
            }
            out.push(row);
        }
        out
    }

    #[test]
    fn matches_the_definition_across_compactions() {
        let mut x = 88172645463325252u64;
        let mut history = vec![];
        for t in 0..600u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let root = x % 7;
            let len = 1 + (x >> 8) % 6;
            let ks: Vec<u64> = (0..len)
                .map(|i| root * 100 + i * (1 + (x >> 20) % 3))
                .collect();
            history.push((t * 10, ks));
        }
        let want = naive(&history);
        let mut tr = ReuseTracker::new();
        let mut out = vec![];
        for ((t, ks), w) in history.iter().zip(&want) {
            tr.observe(Nanos(*t), &keys(ks), &mut out);
            let got: Vec<Option<(u64, u64)>> = out
                .iter()
                .map(|r| r.map(|r| (r.distance_blocks, r.age.0)))
                .collect();
            assert_eq!(&got, w, "at t={t}");
        }
    }

    #[test]
    fn by_hand() {
        let mut tr = ReuseTracker::new();
        let mut out = vec![];
        tr.observe(Nanos(0), &keys(&[1, 2, 3]), &mut out);
        assert_eq!(out, vec![None, None, None]);
        // touched 3, 2, 1: block 1 was touched last (distance 0), 3 first (2).
        tr.observe(Nanos(5), &keys(&[1, 2, 4]), &mut out);
        assert_eq!(
            out[0],
            Some(Reuse {
                distance_blocks: 0,
                age: Nanos(5)
            })
        );
        assert_eq!(
            out[1],
            Some(Reuse {
                distance_blocks: 1,
                age: Nanos(5)
            })
        );
        assert_eq!(out[2], None);
        tr.observe(Nanos(9), &keys(&[3]), &mut out);
        // since 3's touch: 2, 1, then 4, 2, 1 -> distinct {1, 2, 4}
        assert_eq!(
            out[0],
            Some(Reuse {
                distance_blocks: 3,
                age: Nanos(9)
            })
        );
        assert_eq!(tr.unique_blocks(), 4);
    }
}
