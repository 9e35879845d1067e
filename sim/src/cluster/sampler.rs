//! The run's time series: per-interval busy time of every instance
//! (exact, [`BusyBuckets`]), a [`Sample`] of queues, batches and cache
//! occupancy every `metrics.sample_interval_s`, and the paper's Figure 11
//! (replica counts over time of the keys ranked 10th, 100th, 1000th and
//! 10000th by their replica count summed over all samples).
//!
//! Figure 11 in one pass: each sample adds every resident key's replica
//! count to its running total; the pool model logs every change of a DRAM
//! key set with the index of the next sample ([`super::node_store`]), and
//! after the run the ranked keys' counts at each sample are rebuilt from
//! that log. Memory follows the keys ever cached and the changes, never
//! samples × keys.

use super::node_store::ReplicaChange;
use moonlab_core::{BlockKey, Nanos};
use rustc_hash::FxHashMap;

/// The sampling grid: samples fall at `origin + k·interval` (k ≥ 1), the
/// origin being the first arrival, so a trace whose clock starts far from
/// zero (epoch milliseconds) samples from its first request on. While the
/// cluster is idle the world skips the grid points between the idle
/// stretch's first samples and the last one before the next arrival
/// (`World::run`): samples and busy buckets follow the work, not the clock.
#[derive(Copy, Clone, Debug)]
pub struct Grid {
    pub origin: Nanos,
    pub interval: u64,
}

impl Grid {
    /// The index of the interval [origin + k·interval, origin + (k+1)·interval)
    /// holding `t` (times before the origin fall in the first).
    pub fn bucket(&self, t: Nanos) -> u64 {
        t.0.saturating_sub(self.origin.0) / self.interval
    }

    /// The last grid point at or before `t`.
    pub fn floor(&self, t: Nanos) -> Nanos {
        Nanos(self.origin.0 + self.bucket(t) * self.interval)
    }
}

/// Per-interval busy time of one instance, accumulated exactly: a busy
/// period [s, e) adds its overlap with every grid interval it spans. Only
/// intervals with busy time are stored.
#[derive(Default)]
pub struct BusyBuckets {
    ns: FxHashMap<u64, u64>,
}

impl BusyBuckets {
    pub fn add(&mut self, start: Nanos, end: Nanos, grid: Grid) {
        let (mut s, e) = (start.0, end.0);
        while s < e {
            let b = grid.bucket(Nanos(s));
            let bucket_end = grid.origin.0 + (b + 1) * grid.interval;
            let upto = e.min(bucket_end);
            *self.ns.entry(b).or_default() += upto - s;
            s = upto;
        }
    }

    /// Busy share of the interval that ends at each sample time.
    pub fn shares(&self, samples: &[Sample], grid: Grid) -> Vec<f64> {
        samples
            .iter()
            .map(|sample| {
                let b = grid.bucket(sample.time).checked_sub(1);
                let ns = b.and_then(|b| self.ns.get(&b)).copied().unwrap_or(0);
                ns as f64 / grid.interval as f64
            })
            .collect()
    }
}

/// One sample of the cluster's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub time: Nanos,
    /// Per prefill instance: requests queued or in prefill (on a vLLM
    /// baseline's node, waiting or part-way through their prompt).
    pub prefill_queue: Vec<u32>,
    /// Per prefill instance: blocks in its prefix cache (its DRAM segment;
    /// with vLLM prefix caching, its HBM cache).
    pub prefill_cache_blocks: Vec<u32>,
    /// Per decode instance: requests in its running batch.
    pub decode_batch: Vec<u32>,
    /// Per decode instance: requests waiting to join the batch.
    pub decode_waiting: Vec<u32>,
}

/// One ranked key's replica count at every sample (Figure 11).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSeries {
    /// 1-based rank by cumulative replica count over all samples.
    pub rank: usize,
    pub key: BlockKey,
    pub replicas: Vec<u16>,
}

/// The ranks of Figure 11: the keys ranked 10th, 100th, 1000th and 10000th
/// by replica count summed over all samples.
pub const REPLICA_RANKS: [usize; 4] = [10, 100, 1000, 10_000];

/// Keys ranked by their summed replica count (descending, ties to the
/// smaller key); returns `(rank, key)` for each of `ranks` that exists.
pub fn rank_keys(totals: &FxHashMap<BlockKey, u64>, ranks: &[usize]) -> Vec<(usize, BlockKey)> {
    let mut ranked: Vec<(BlockKey, u64)> = totals.iter().map(|(&k, &v)| (k, v)).collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranks
        .iter()
        .filter(|&&r| r >= 1 && r <= ranked.len())
        .map(|&r| (r, ranked[r - 1].0))
        .collect()
}

/// The series of the keys at `ranks`, rebuilt from the change log over
/// `samples` samples.
pub fn replica_series(
    totals: &FxHashMap<BlockKey, u64>,
    changes: &[ReplicaChange],
    samples: usize,
    ranks: &[usize],
) -> Vec<ReplicaSeries> {
    let ranked = rank_keys(totals, ranks);
    let mut deltas: FxHashMap<BlockKey, Vec<i64>> = ranked
        .iter()
        .map(|&(_, k)| (k, vec![0i64; samples]))
        .collect();
    for &(at, key, d) in changes {
        if let Some(v) = deltas.get_mut(&key) {
            if (at as usize) < samples {
                v[at as usize] += d as i64;
            }
        }
    }
    ranked
        .into_iter()
        .map(|(rank, key)| {
            let mut count = 0i64;
            let replicas = deltas[&key]
                .iter()
                .map(|d| {
                    count += d;
                    count.clamp(0, u16::MAX as i64) as u16
                })
                .collect();
            ReplicaSeries {
                rank,
                key,
                replicas,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_summed_replicas() {
        let totals: FxHashMap<BlockKey, u64> =
            [(BlockKey(1), 5), (BlockKey(2), 4), (BlockKey(3), 1)]
                .into_iter()
                .collect();
        let r = rank_keys(&totals, &[1, 2, 3, 10]);
        assert_eq!(
            r,
            vec![(1, BlockKey(1)), (2, BlockKey(2)), (3, BlockKey(3))]
        );
        let tie: FxHashMap<BlockKey, u64> =
            [(BlockKey(9), 2), (BlockKey(4), 2)].into_iter().collect();
        assert_eq!(rank_keys(&tie, &[1]), vec![(1, BlockKey(4))]);
    }

    #[test]
    fn series_are_rebuilt_from_the_change_log() {
        // Key 7 enters two segments before sample 0, leaves one before
        // sample 2, and the other after the last sample.
        let changes = vec![
            (0, BlockKey(7), 1),
            (0, BlockKey(7), 1),
            (0, BlockKey(8), 1),
            (2, BlockKey(7), -1),
            (3, BlockKey(7), -1),
        ];
        let totals: FxHashMap<BlockKey, u64> =
            [(BlockKey(7), 5), (BlockKey(8), 3)].into_iter().collect();
        let s = replica_series(&totals, &changes, 3, &[1, 2]);
        assert_eq!(s[0].key, BlockKey(7));
        assert_eq!(s[0].replicas, vec![2, 2, 1]);
        assert_eq!(s[1].replicas, vec![1, 1, 1]);
    }

    fn at(times: &[u64]) -> Vec<Sample> {
        times
            .iter()
            .map(|&t| Sample {
                time: Nanos(t),
                prefill_queue: vec![],
                prefill_cache_blocks: vec![],
                decode_batch: vec![],
                decode_waiting: vec![],
            })
            .collect()
    }

    #[test]
    fn busy_time_splits_across_intervals() {
        let grid = Grid {
            origin: Nanos::ZERO,
            interval: 10,
        };
        let mut b = BusyBuckets::default();
        b.add(Nanos(5), Nanos(25), grid);
        assert_eq!(
            b.shares(&at(&[10, 20, 30, 40]), grid),
            vec![0.5, 1.0, 0.5, 0.0]
        );
    }

    #[test]
    fn the_grid_starts_at_the_first_arrival_and_stores_only_busy_intervals() {
        // An epoch-millisecond clock: the first request at 1.7e12 ms.
        let origin = Nanos(1_700_000_000_000 * 1_000_000);
        let grid = Grid {
            origin,
            interval: 1_000_000_000,
        };
        let mut b = BusyBuckets::default();
        b.add(origin, Nanos(origin.0 + 1_500_000_000), grid);
        // Ten years later, half a second busy.
        let later = Nanos(origin.0 + 315_360_000 * 1_000_000_000);
        b.add(later, Nanos(later.0 + 500_000_000), grid);
        assert_eq!(b.ns.len(), 3);
        let samples = at(&[
            origin.0 + 1_000_000_000,
            origin.0 + 2_000_000_000,
            later.0 + 1_000_000_000,
        ]);
        assert_eq!(b.shares(&samples, grid), vec![1.0, 0.5, 0.5]);
        assert_eq!(grid.floor(Nanos(later.0 + 700_000_000)), later);
    }
}
