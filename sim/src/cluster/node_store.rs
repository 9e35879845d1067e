//! The KVCache pool of the simulated cluster, on core's store: each prefill
//! node contributes a DRAM segment to one [`Pool`] (segment ids 0..P, in
//! instance order) and, when configured, an SSD tier below it (P..2P).
//! DRAM segments are shared: other nodes may fetch from them. An SSD tier
//! serves only its own node: blocks evicted from DRAM are demoted there and
//! read back at prefill start.
//!
//! The vLLM baselines (`colocated.policy`) have no DRAM pool and no SSD
//! tier (their DRAM segments hold nothing); with prefix caching each node
//! has an HBM segment instead ([`NodeStore::hbm`], local to the node, never
//! fetched from), sized to the node's whole KV memory: it holds the prompt
//! blocks of running requests (pinned) and of finished ones (cached, LRU),
//! within what running requests' other KV leaves (`super::vllm`).
//!
//! Every change of a DRAM segment's key set is logged (with the index of
//! the next time-series sample) so that the replica counts of the keys
//! Figure 11 ranks can be rebuilt after the run, in one pass.

use super::config::{ColocatedPolicy, Resolved};
use moonlab_core::eviction::{AccessFacts, PolicyKind};
use moonlab_core::lease::LeasePolicy;
use moonlab_core::placement::Hold;
use moonlab_core::sched::LocalPrefix;
use moonlab_core::store::{
    EvictOutcome, Pool, Segment, SegmentConfig, SegmentId, SegmentInfo, Tier, Touched,
};
use moonlab_core::{BlockKey, InstanceId, Nanos, Request};

/// One change of a DRAM segment's key set: (index of the next sample, key,
/// +1 in / −1 out).
pub type ReplicaChange = (u32, BlockKey, i8);

pub struct NodeStore {
    pub pool: Pool,
    dram: Vec<SegmentId>,
    ssd: Vec<Option<SegmentId>>,
    /// vLLM prefix caching: each node's cache in its HBM KV blocks.
    hbm: Vec<SegmentId>,
    /// Per node, its segments: DRAM first, then any SSD tier.
    local: Vec<Vec<SegmentId>>,
    /// KV bytes of one token, and tokens of a full block: a block's object
    /// holds its tokens' KV (a partial last block, less).
    kv_bytes_per_token: u64,
    block_tokens: u32,
    /// Changes of the DRAM key sets, in order.
    pub changes: Vec<ReplicaChange>,
    /// Index of the next sample (set by the sampler).
    pub next_sample: u32,
    /// Eviction points where a segment stayed over its capacity.
    pub over_capacity: Vec<String>,
    evicted: Vec<(BlockKey, u64)>,
}

/// Bytes written to an SSD tier (blocks demoted from DRAM).
pub struct Demoted {
    pub bytes: u64,
}

impl NodeStore {
    /// The pool of `prefill_sides` prefill instances' segments.
    pub fn new(cfg: &Resolved, kv_bytes_per_token: u64, prefill_sides: u32) -> NodeStore {
        let c = &cfg.config;
        let block_bytes = kv_bytes_per_token * c.block_tokens as u64;
        let policy = c.colocated.policy;
        // The vLLM baselines have no DRAM pool and no SSD tier.
        let (dram_blocks, ssd_blocks) = if policy.is_vllm() {
            (0, 0)
        } else {
            (c.prefill.dram_cache_blocks, c.prefill.ssd_cache_blocks)
        };
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
        // A pipelined group's nodes each keep their layers' share of every
        // block: the group's segment holds as many blocks as its nodes.
        let x = c.prefill.pipeline_nodes.max(1) as u64;
        let dram: Vec<SegmentId> = (0..prefill_sides)
            .map(|p| {
                pool.add(
                    segment(x * dram_blocks),
                    SegmentInfo {
                        owner: Some(InstanceId(p)),
                        tier: Tier::Dram,
                        shared: true,
                    },
                )
            })
            .collect();
        let ssd: Vec<Option<SegmentId>> = (0..prefill_sides)
            .map(|p| {
                (ssd_blocks > 0).then(|| {
                    pool.add(
                        segment(x * ssd_blocks),
                        SegmentInfo {
                            owner: Some(InstanceId(p)),
                            tier: Tier::Ssd,
                            shared: false,
                        },
                    )
                })
            })
            .collect();
        // vLLM's prefix cache: the node's KV memory, evicted LRU (vLLM's
        // evictor), local to the node.
        let hbm: Vec<SegmentId> = if policy == ColocatedPolicy::VllmPrefixCache {
            (0..prefill_sides)
                .map(|p| {
                    let bytes = cfg.decode_kv_tokens.saturating_mul(kv_bytes_per_token);
                    pool.add(
                        Segment::new(
                            PolicyKind::Lru.build(None),
                            SegmentConfig::exact(Some(bytes)),
                        ),
                        SegmentInfo {
                            owner: Some(InstanceId(p)),
                            tier: Tier::Hbm,
                            shared: false,
                        },
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let local = (0..prefill_sides as usize)
            .map(|p| match hbm.get(p) {
                Some(&h) => vec![h],
                None => std::iter::once(dram[p]).chain(ssd[p]).collect(),
            })
            .collect();
        NodeStore {
            pool,
            dram,
            ssd,
            hbm,
            local,
            kv_bytes_per_token,
            block_tokens: c.block_tokens,
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

    /// Bytes of the object holding block `j` of `req`.
    pub fn object_bytes(&self, req: &Request, j: usize) -> u64 {
        req.block_tokens_at(j, self.block_tokens) as u64 * self.kv_bytes_per_token
    }

    /// Node `p`'s segments: its DRAM, then any SSD tier.
    pub fn local(&self, p: usize) -> &[SegmentId] {
        &self.local[p]
    }

    /// Leading blocks of `keys` on node `p`, in DRAM or in its SSD tier, and
    /// how many of those only the SSD tier holds.
    pub fn local_prefix(&self, p: usize, keys: &[BlockKey]) -> LocalPrefix {
        let blocks = self.pool.prefix_over(&self.local[p], keys);
        let dram = self.pool.segment(self.dram[p]);
        let ssd_blocks = match self.ssd[p] {
            None => 0,
            Some(_) => keys[..blocks]
                .iter()
                .filter(|k| !dram.contains(**k))
                .count(),
        };
        LocalPrefix { blocks, ssd_blocks }
    }

    /// Node `p`'s HBM prefix cache (vLLM prefix caching only).
    pub fn hbm(&self, p: usize) -> Option<SegmentId> {
        self.hbm.get(p).copied()
    }

    /// Blocks committed in node `p`'s prefix cache: its DRAM segment, or
    /// with vLLM prefix caching its HBM one.
    pub fn cache_blocks(&self, p: usize) -> usize {
        self.pool.segment(self.hbm(p).unwrap_or(self.dram[p])).len()
    }

    /// Retires the leases and soft pins of node `p`'s DRAM that ended by `now`.
    pub fn advance(&mut self, p: usize, now: Nanos) {
        self.pool.segment_mut(self.dram[p]).advance(now);
    }

    /// Prefill start on node `p`: the blocks `keys` (its local prefix) are
    /// pinned for the request where they are, and a DRAM block is read (a
    /// lease, and a soft pin if hot). Returns the hold, and the blocks and
    /// bytes to read back from the SSD tier.
    pub fn read_prefix(
        &mut self,
        p: usize,
        keys: &[BlockKey],
        leases: &dyn LeasePolicy,
        now: Nanos,
    ) -> (Hold, usize, u64) {
        let dram = self.dram[p];
        let mut hold = Hold::new();
        let (mut ssd_blocks, mut ssd_bytes) = (0, 0);
        for key in keys {
            if hold.pin(&mut self.pool, dram, *key) {
                self.pool.segment_mut(dram).read(*key, now, leases);
            } else if let Some(ssd) = self.ssd[p] {
                if hold.pin(&mut self.pool, ssd, *key) {
                    ssd_blocks += 1;
                    ssd_bytes += self.pool.segment(ssd).object_bytes(*key).unwrap_or(0);
                }
            }
        }
        (hold, ssd_blocks, ssd_bytes)
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
            let bytes = self.object_bytes(req, j);
            if self.pool.segment_mut(dram).access(key, bytes, &access) == Touched::Inserted {
                self.log(key, 1);
            }
        }
    }

    /// Records keys that entered a DRAM segment by a fetch.
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
    ) -> Demoted {
        let dram = self.dram[p];
        let mut evicted = std::mem::take(&mut self.evicted);
        evicted.clear();
        let out = self.pool.segment_mut(dram).evict(now, &mut evicted);
        self.note(dram, out, now);
        let demoted = self.evicted_from_dram(p, &evicted, request, facts, now);
        self.evicted = evicted;
        demoted
    }

    /// Blocks `evicted` left node `p`'s DRAM (at a prefill's end, or to make
    /// room for a fetched prefix): they are demoted to its SSD tier.
    pub fn evicted_from_dram(
        &mut self,
        p: usize,
        evicted: &[(BlockKey, u64)],
        request: usize,
        facts: &mut AccessFacts,
        now: Nanos,
    ) -> Demoted {
        for &(k, _) in evicted {
            self.log(k, -1);
        }
        let mut bytes = 0u64;
        if let Some(ssd) = self.ssd[p] {
            let seg = self.pool.segment_mut(ssd);
            for &(key, size) in evicted {
                let access = facts.key(now, key, request);
                if seg.access(key, size, &access) == Touched::Inserted {
                    bytes += size;
                }
            }
            let mut dropped = Vec::new();
            let out = seg.evict(now, &mut dropped);
            self.note(ssd, out, now);
        }
        Demoted { bytes }
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
