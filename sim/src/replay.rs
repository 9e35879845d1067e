//! The prefix-cache replayer.
//!
//! Semantics (documented in README and ARCHITECTURE, tested below):
//! - A request's hit is the longest run of its leading blocks present in the
//!   cache at its arrival, in tokens `min(k × block_tokens, input_tokens)`.
//!   Hit rate = Σ hit tokens / Σ input tokens; the block hit rate is
//!   Σ k / Σ blocks.
//! - After the lookup every block of the request is inserted or touched, tail
//!   first (so a prefix's head is never older than its tail), then eviction
//!   brings the cache back within capacity.
//! - Local caches (`nodes > 1`): the capacity is split into `nodes`
//!   independent caches (the remainder of the division goes one block each
//!   to the first nodes); each request goes to the node with the longest
//!   prefix match, ties to the least loaded node — load being the prefill
//!   tokens it has computed so far (input − hit) — then to the lowest index.
//!   With a balance slack θ, only nodes whose load is at most
//!   `(1 + θ) × the least load + one block` compete on match length; without
//!   it, longest match alone decides (a prefix every request shares, like the
//!   conversation trace's system-prompt block, then pins all traffic to one
//!   node).
//!
//! The facts handed to policies come from
//! [`moonlab_core::eviction::AccessFacts`], as in the cluster simulator: a
//! block's recompute cost is the seconds its tokens take to prefill given
//! its prefix (Eq. 1, LLaMA3-70B on Table 1's 8×A800 at MFU 0.5), and an
//! offline policy sees each block's next use from the trace's index. Every
//! block weighs one unit in its segment, so capacities count blocks.

use moonlab_core::cost::{AnalyticCost, ModelSpec, NodeSpec};
use moonlab_core::eviction::{AccessFacts, PolicyKind, TraceIndex};
use moonlab_core::store::{Segment, SegmentConfig};
use moonlab_core::Request;
use rayon::prelude::*;
use serde::Serialize;
use std::sync::OnceLock;

/// A trace prepared for replay: requests plus, computed on first need, the
/// index of each block's next use (for offline policies).
pub struct PreparedTrace {
    pub name: String,
    pub block_tokens: u32,
    pub requests: Vec<Request>,
    index: OnceLock<TraceIndex>,
}

impl PreparedTrace {
    pub fn new(
        name: impl Into<String>,
        requests: Vec<Request>,
        block_tokens: u32,
    ) -> PreparedTrace {
        PreparedTrace {
            name: name.into(),
            block_tokens,
            requests,
            index: OnceLock::new(),
        }
    }

    /// Total block accesses of the trace.
    pub fn block_accesses(&self) -> u64 {
        self.requests.iter().map(|r| r.blocks.len() as u64).sum()
    }

    fn index(&self) -> &TraceIndex {
        self.index
            .get_or_init(|| TraceIndex::new(&self.requests, self.block_tokens))
    }
}

/// One replay: a policy, a total capacity and a node count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReplayConfig {
    pub policy: PolicyKind,
    /// Total capacity in blocks across all nodes; `None` = unbounded.
    pub capacity_blocks: Option<u64>,
    /// 1 = one pooled (global) cache; N > 1 = N local caches.
    pub nodes: u32,
    /// Local caches only: the load slack θ within which nodes compete on
    /// match length (`None` = longest match decides alone).
    pub balance_slack: Option<f64>,
}

/// The outcome of one replay; field names are the JSONL/CSV columns.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayResult {
    pub trace: String,
    pub policy: String,
    pub capacity_blocks: Option<u64>,
    pub nodes: u32,
    pub balance_slack: Option<f64>,
    /// `pooled` (one cache) or `local` (split across nodes).
    pub cache: &'static str,
    pub requests: u64,
    pub input_tokens: u64,
    pub hit_tokens: u64,
    pub hit_rate: f64,
    pub blocks: u64,
    pub hit_blocks: u64,
    pub block_hit_rate: f64,
    pub evictions: u64,
}

/// Replays `trace` under `cfg`.
pub fn replay(trace: &PreparedTrace, cfg: ReplayConfig) -> ReplayResult {
    let nodes = cfg.nodes.max(1) as u64;
    let caps: Vec<Option<u64>> = (0..nodes)
        .map(|i| {
            cfg.capacity_blocks
                .map(|c| c / nodes + u64::from(i < c % nodes))
        })
        .collect();
    let mut caches: Vec<Segment> = caps
        .iter()
        .map(|&c| Segment::new(cfg.policy.build(c), SegmentConfig::exact(c)))
        .collect();
    let cost = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
    let mut facts = AccessFacts::for_trace(
        cfg.policy,
        trace.block_tokens,
        Box::new(cost),
        false,
        || trace.index(),
    );
    let mut load = vec![0u64; nodes as usize];
    let mut evicted = Vec::new();
    let (mut input_tokens, mut hit_tokens, mut blocks, mut hit_blocks) = (0u64, 0u64, 0u64, 0u64);
    for (ri, r) in trace.requests.iter().enumerate() {
        let node = if nodes == 1 {
            0
        } else {
            let ceiling = cfg.balance_slack.map(|slack| {
                let least = load.iter().copied().min().unwrap_or(0) as f64;
                (least * (1.0 + slack)) as u64 + trace.block_tokens as u64
            });
            let mut best: Option<(usize, usize)> = None;
            for (i, c) in caches.iter().enumerate() {
                if ceiling.is_some_and(|ceil| load[i] > ceil) {
                    continue;
                }
                let m = c.prefix_len(&r.blocks);
                let better = match best {
                    None => true,
                    Some((b, bm)) => m > bm || (m == bm && load[i] < load[b]),
                };
                if better {
                    best = Some((i, m));
                }
            }
            // The least-loaded node is always under the ceiling.
            best.map_or(0, |b| b.0)
        };
        let cache = &mut caches[node];
        let n = r.blocks.len();
        let mut first_miss = n;
        for j in (0..n).rev() {
            let access = facts.block(r.arrival, ri, r, j);
            if !cache.access(r.blocks[j], 1, &access).is_hit() {
                first_miss = j;
            }
        }
        evicted.clear();
        cache.evict(r.arrival, &mut evicted);
        let hit = r.hit_tokens(first_miss, trace.block_tokens);
        load[node] += r.input_tokens as u64 - hit;
        input_tokens += r.input_tokens as u64;
        hit_tokens += hit;
        blocks += n as u64;
        hit_blocks += first_miss as u64;
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    ReplayResult {
        trace: trace.name.clone(),
        policy: cfg.policy.name().to_string(),
        capacity_blocks: cfg.capacity_blocks,
        nodes: nodes as u32,
        balance_slack: if nodes == 1 { None } else { cfg.balance_slack },
        cache: if nodes == 1 { "pooled" } else { "local" },
        requests: trace.requests.len() as u64,
        input_tokens,
        hit_tokens,
        hit_rate: ratio(hit_tokens, input_tokens),
        blocks,
        hit_blocks,
        block_hit_rate: ratio(hit_blocks, blocks),
        evictions: caches.iter().map(|c| c.counters().evictions).sum(),
    }
}

/// Runs every (trace, config) pair in parallel; results come back in the
/// order of `traces` × `configs`, whatever the scheduling.
pub fn replay_grid(traces: &[PreparedTrace], configs: &[ReplayConfig]) -> Vec<ReplayResult> {
    // Prepare oracles once per trace before fanning out.
    if configs.iter().any(|c| c.policy == PolicyKind::Belady) {
        traces.par_iter().for_each(|t| {
            t.index();
        });
    }
    let jobs: Vec<(usize, usize)> = (0..traces.len())
        .flat_map(|t| (0..configs.len()).map(move |c| (t, c)))
        .collect();
    jobs.par_iter()
        .with_max_len(1)
        .map(|&(t, c)| replay(&traces[t], configs[c]))
        .collect()
}
