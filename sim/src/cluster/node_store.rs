//! The KVCache pool of the simulated cluster, on core's store: each prefill
//! node contributes a DRAM segment to one [`Pool`] (segment ids 0..P, in
//! instance order) and, when configured, an SSD tier below it (P..2P).
//! DRAM segments are shared: other nodes may fetch from them. An SSD tier
//! serves only its own node: blocks evicted from DRAM are demoted there and
//! read back at prefill start.
//!
//! Every change of a DRAM segment's key set is logged (with the index of
//! the next time-series sample) so that the replica counts of the keys
//! Figure 11 ranks can be rebuilt after the run, in one pass.

use super::config::Resolved;
use moonlab_core::eviction::AccessFacts;
use moonlab_core::lease::LeasePolicy;
use moonlab_core::placement::Hold;
use moonlab_core::store::{
    EvictOutcome, Pool, Segment, SegmentConfig, SegmentId, SegmentInfo, Tier,
};
use moonlab_core::{BlockKey, InstanceId, Nanos, Request};

/// One change of a DRAM segment's key set: (index of the next sample, key,
/// +1 in / −1 out).
pub type ReplicaChange = (u32, BlockKey, i8);

pub struct NodeStore {
    pub pool: Pool,
    dram: Vec<SegmentId>,
    ssd: Vec<Option<SegmentId>>,
    /// Bytes of one block's object.
    block_bytes: u64,
    /// Changes of the DRAM key sets, in order.
    pub changes: Vec<ReplicaChange>,
    /// Index of the next sample (set by the sampler).
    pub next_sample: u32,
    /// Eviction points where a segment stayed over its capacity.
    pub over_capacity: Vec<String>,
    evicted: Vec<(BlockKey, u64)>,
}

/// What storing a prompt at the end of its prefill did.
pub struct Stored {
    /// Blocks written to the SSD tier (demoted from DRAM).
    pub demoted: u64,
}

impl NodeStore {
    pub fn new(cfg: &Resolved, block_bytes: u64) -> NodeStore {
        let c = &cfg.config;
        let mut pool = Pool::new();
        let segment = |blocks: u64| {
            Segment::new(
                cfg.eviction.build(Some(blocks)),
                SegmentConfig {
                    capacity_bytes: Some(blocks * block_bytes),
                    watermarks: cfg.watermarks,
                    ..SegmentConfig::exact(None)
                },
            )
        };
        let dram = (0..c.prefill.instances)
            .map(|p| {
                pool.add(
                    segment(c.prefill.dram_cache_blocks),
                    SegmentInfo {
                        owner: Some(InstanceId(p)),
                        tier: Tier::Dram,
                        shared: true,
                    },
                )
            })
            .collect();
        let ssd = (0..c.prefill.instances)
            .map(|p| {
                (c.prefill.ssd_cache_blocks > 0).then(|| {
                    pool.add(
                        segment(c.prefill.ssd_cache_blocks),
                        SegmentInfo {
                            owner: Some(InstanceId(p)),
                            tier: Tier::Ssd,
                            shared: false,
                        },
                    )
                })
            })
            .collect();
        NodeStore {
            pool,
            dram,
            ssd,
            block_bytes,
            changes: Vec::new(),
            next_sample: 0,
            over_capacity: Vec::new(),
            evicted: Vec::new(),
        }
    }

    /// The DRAM segment of prefill instance `p`.
    pub fn dram(&self, p: usize) -> SegmentId {
        self.dram[p]
    }

    /// Bytes of the object holding one block.
    pub fn block_bytes(&self) -> u64 {
        self.block_bytes
    }

    /// Leading blocks of `keys` on node `p`, in DRAM or in its SSD tier.
    pub fn local_prefix(&self, p: usize, keys: &[BlockKey]) -> usize {
        match self.ssd[p] {
            None => self.pool.segment(self.dram[p]).prefix_len(keys),
            Some(ssd) => self.pool.prefix_over(&[self.dram[p], ssd], keys),
        }
    }

    /// Blocks committed in node `p`'s DRAM.
    pub fn dram_blocks(&self, p: usize) -> usize {
        self.pool.segment(self.dram[p]).len()
    }

    /// Retires the leases and soft pins of node `p`'s DRAM that ended by `now`.
    pub fn advance(&mut self, p: usize, now: Nanos) {
        self.pool.segment_mut(self.dram[p]).advance(now);
    }

    /// Prefill start on node `p`: the first `k` blocks of `keys` are pinned
    /// for the request where they are, and a DRAM block is read (a lease,
    /// and a soft pin if hot). Returns the DRAM and SSD holds.
    pub fn read_prefix(
        &mut self,
        p: usize,
        keys: &[BlockKey],
        leases: &dyn LeasePolicy,
        now: Nanos,
    ) -> (Hold, Hold) {
        let dram_id = self.dram[p];
        let mut dram = Hold::new(dram_id);
        let mut ssd = self.ssd[p].map_or_else(Hold::default, Hold::new);
        for key in keys {
            let seg = self.pool.segment_mut(dram_id);
            if let Some(pin) = seg.pin(*key) {
                seg.read(*key, now, leases);
                dram.push(pin);
            } else if let Some(ssd_id) = self.ssd[p] {
                if let Some(pin) = self.pool.segment_mut(ssd_id).pin(*key) {
                    ssd.push(pin);
                }
            }
        }
        (dram, ssd)
    }

    /// Records that `key` entered (+1) or left (−1) a DRAM segment.
    fn log(&mut self, key: BlockKey, delta: i8) {
        self.changes.push((self.next_sample, key, delta));
    }

    /// Writes `req`'s blocks (the trace's `request`-th) into node `p`'s
    /// DRAM, tail first.
    pub fn write_prompt(
        &mut self,
        p: usize,
        request: usize,
        req: &Request,
        facts: &mut AccessFacts,
        now: Nanos,
    ) {
        let dram = self.dram[p];
        for j in (0..req.blocks.len()).rev() {
            let access = facts.block(now, request, req, j);
            let key = req.blocks[j];
            if !self
                .pool
                .segment_mut(dram)
                .access(key, self.block_bytes, &access)
            {
                self.log(key, 1);
            }
        }
    }

    /// Records keys that entered node `p`'s DRAM by a fetch.
    pub fn log_fetched(&mut self, keys: &[BlockKey]) {
        for k in keys {
            self.log(*k, 1);
        }
    }

    /// The end of a prefill on node `p`, once the request's holds are
    /// released: eviction brings DRAM back within its watermarks, and what
    /// leaves DRAM is demoted to the SSD tier (which then evicts too).
    pub fn settle(
        &mut self,
        p: usize,
        request: usize,
        facts: &mut AccessFacts,
        now: Nanos,
    ) -> Stored {
        let dram = self.dram[p];
        let mut evicted = std::mem::take(&mut self.evicted);
        evicted.clear();
        let out = self.pool.segment_mut(dram).evict(now, &mut evicted);
        self.note(dram, out, now);
        for &(k, _) in &evicted {
            self.log(k, -1);
        }
        let mut demoted = 0u64;
        if let Some(ssd) = self.ssd[p] {
            let seg = self.pool.segment_mut(ssd);
            for &(key, bytes) in &evicted {
                let access = facts.key(now, key, request);
                if !seg.access(key, bytes, &access) {
                    demoted += 1;
                }
            }
            let mut dropped = Vec::new();
            let out = seg.evict(now, &mut dropped);
            self.note(ssd, out, now);
        }
        self.evicted = evicted;
        Stored { demoted }
    }

    fn note(&mut self, seg: SegmentId, out: EvictOutcome, now: Nanos) {
        if !out.within_capacity {
            let s = self.pool.segment(seg);
            self.over_capacity.push(format!(
                "segment {} over capacity after eviction at {:.6} s: {} of {} bytes used",
                seg.0,
                now.as_secs_f64(),
                s.used_bytes(),
                s.capacity_bytes().unwrap_or(0)
            ));
        }
    }
}
