//! The facts a policy is given about an access ([`Access`]), built in one
//! place for every caller — the prefix-cache replayer, the cluster
//! simulator and the real store — so that a policy sees the same world
//! everywhere:
//!
//! - `tokens`: the tokens the block holds (a partial last block holds fewer);
//! - `depth`: its position in the prefix chain;
//! - `cost`: the seconds its recomputation takes on the cost model in use
//!   ([`CostModel::recompute_seconds`]: for the analytic model, the Eq. 1
//!   FLOPs of its tokens given its prefix over G × MFU);
//! - `next_use`: for offline policies only, the index of the next request
//!   that carries the key, from a [`TraceIndex`] of the whole trace.
//!
//! A policy whose [`EvictionPolicy::needs_future`] is true can only run
//! where such an index exists; [`AccessFacts::new`] refuses it otherwise.

use super::{Access, PolicyKind};
use crate::cost::CostModel;
use crate::types::{BlockKey, Nanos, Request};
use rustc_hash::FxHashMap;

/// What a trace tells about its blocks' future, for offline policies.
pub struct TraceIndex {
    /// Per request, the offset of its first block access.
    offsets: Vec<usize>,
    /// Per block access, the index of the next request carrying the same
    /// key (`u32::MAX`: none).
    next: Vec<u32>,
    /// Per key: its depth, its tokens and every request carrying it, in order.
    keys: FxHashMap<BlockKey, KeyFacts>,
}

struct KeyFacts {
    depth: u32,
    tokens: u32,
    uses: Vec<u32>,
}

impl TraceIndex {
    /// Indexes `requests` (in arrival order) for blocks of `block_tokens`.
    pub fn new(requests: &[Request], block_tokens: u32) -> TraceIndex {
        let mut offsets = Vec::with_capacity(requests.len() + 1);
        let mut total = 0usize;
        for r in requests {
            offsets.push(total);
            total += r.blocks.len();
        }
        offsets.push(total);
        let mut next = vec![u32::MAX; total];
        let mut upcoming: FxHashMap<BlockKey, u32> = FxHashMap::default();
        for (i, r) in requests.iter().enumerate().rev() {
            let start = offsets[i];
            for (j, k) in r.blocks.iter().enumerate() {
                if let Some(&n) = upcoming.get(k) {
                    next[start + j] = n;
                }
            }
            for k in &r.blocks {
                upcoming.insert(*k, i as u32);
            }
        }
        let mut keys: FxHashMap<BlockKey, KeyFacts> = FxHashMap::default();
        for (i, r) in requests.iter().enumerate() {
            for (j, k) in r.blocks.iter().enumerate() {
                let f = keys.entry(*k).or_insert(KeyFacts {
                    depth: j as u32,
                    tokens: r.block_tokens_at(j, block_tokens),
                    uses: Vec::new(),
                });
                if f.uses.last() != Some(&(i as u32)) {
                    f.uses.push(i as u32);
                }
            }
        }
        TraceIndex {
            offsets,
            next,
            keys,
        }
    }

    /// The next request after `request` that carries its block `block`
    /// (`u64::MAX`: never).
    #[inline]
    pub fn next_use(&self, request: usize, block: usize) -> u64 {
        match self.next[self.offsets[request] + block] {
            u32::MAX => u64::MAX,
            n => n as u64,
        }
    }

    /// The first request after `request` that carries `key` (`u64::MAX`: never).
    pub fn next_use_of(&self, key: BlockKey, request: usize) -> u64 {
        let Some(f) = self.keys.get(&key) else {
            return u64::MAX;
        };
        let i = f.uses.partition_point(|&u| u as usize <= request);
        f.uses.get(i).map_or(u64::MAX, |&u| u as u64)
    }

    /// The depth and tokens of `key`, as the trace carries it (prefix-chained
    /// keys always sit at the same depth).
    pub fn shape_of(&self, key: BlockKey) -> Option<(u32, u32)> {
        self.keys.get(&key).map(|f| (f.depth, f.tokens))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("eviction policy `{policy}` needs to know the future (each block's next use), which only a replay of a whole trace provides; {context}")]
pub struct NeedsFuture {
    pub policy: &'static str,
    pub context: String,
}

/// Builds the [`Access`] facts of block accesses.
pub struct AccessFacts<'t> {
    block_tokens: u32,
    cost: Box<dyn CostModel + 't>,
    /// Recompute cost of a full block, by depth (the same for every request).
    full: Vec<f64>,
    /// The trace's index: blocks' shapes, and next uses for offline policies.
    index: Option<&'t TraceIndex>,
    /// True if the policy is given next uses.
    future: bool,
}

impl<'t> AccessFacts<'t> {
    /// Facts for a policy of kind `policy`: an offline policy needs `index`,
    /// and is refused without one (`context` says where, for the error).
    pub fn new(
        policy: PolicyKind,
        block_tokens: u32,
        cost: Box<dyn CostModel + 't>,
        index: Option<&'t TraceIndex>,
        context: &str,
    ) -> Result<AccessFacts<'t>, NeedsFuture> {
        if policy.needs_future() && index.is_none() {
            return Err(NeedsFuture {
                policy: policy.name(),
                context: context.to_string(),
            });
        }
        Ok(AccessFacts {
            block_tokens,
            cost,
            full: Vec::new(),
            index,
            // Only offline policies read next uses: the others skip the lookup.
            future: policy.needs_future(),
        })
    }

    /// Facts for a replay of a whole trace (the replayer, the simulator, a
    /// real replay): `index` is asked for only if the policy needs the
    /// future or `shapes` is true (accesses by key alone, as demotions to
    /// another tier are, then get their depth and tokens from the trace), so
    /// online policies need not pay for it.
    pub fn for_trace(
        policy: PolicyKind,
        block_tokens: u32,
        cost: Box<dyn CostModel + 't>,
        shapes: bool,
        index: impl FnOnce() -> &'t TraceIndex,
    ) -> AccessFacts<'t> {
        let future = policy.needs_future();
        AccessFacts {
            block_tokens,
            cost,
            full: Vec::new(),
            index: (future || shapes).then(index),
            future,
        }
    }

    pub fn block_tokens(&self) -> u32 {
        self.block_tokens
    }

    fn cost(&mut self, depth: u32, tokens: u32) -> f64 {
        let bt = self.block_tokens as u64;
        let start = depth as u64 * bt;
        if tokens as u64 != bt {
            return self.cost.recompute_seconds(start, start + tokens as u64);
        }
        let d = depth as usize;
        while self.full.len() <= d {
            let k = self.full.len() as u64;
            let c = self.cost.recompute_seconds(k * bt, (k + 1) * bt);
            self.full.push(c);
        }
        self.full[d]
    }

    /// The access of block `j` of `req`, the `request`-th request of the
    /// trace, at `now`.
    #[inline]
    pub fn block(&mut self, now: Nanos, request: usize, req: &Request, j: usize) -> Access {
        let tokens = req.block_tokens_at(j, self.block_tokens);
        Access {
            now,
            tokens,
            depth: j as u32,
            cost: self.cost(j as u32, tokens),
            next_use: match self.index {
                Some(ix) if self.future => ix.next_use(request, j),
                _ => 0,
            },
        }
    }

    /// The access of `key` on behalf of the `request`-th request when only
    /// the key is known (a block demoted to another tier): its shape comes
    /// from the trace index where there is one, else it counts as a full
    /// block at depth 0 (build the facts with `shapes` to avoid that).
    pub fn key(&mut self, now: Nanos, key: BlockKey, request: usize) -> Access {
        let (depth, tokens) = self
            .index
            .and_then(|ix| ix.shape_of(key))
            .unwrap_or((0, self.block_tokens));
        Access {
            now,
            tokens,
            depth,
            cost: self.cost(depth, tokens),
            next_use: match self.index {
                Some(ix) if self.future => ix.next_use_of(key, request),
                _ => 0,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{AnalyticCost, ModelSpec, NodeSpec};

    fn req(blocks: &[u64], input: u32) -> Request {
        Request {
            arrival: Nanos::ZERO,
            input_tokens: input,
            output_tokens: 1,
            blocks: blocks.iter().map(|&b| BlockKey(b)).collect(),
        }
    }

    fn a800() -> Box<dyn CostModel> {
        Box::new(AnalyticCost::new(
            ModelSpec::llama3_70b(),
            NodeSpec::a800x8(),
        ))
    }

    #[test]
    fn next_uses_shapes_and_costs_by_hand() {
        let trace = vec![req(&[1, 2], 700), req(&[1, 3], 1024), req(&[1, 2], 700)];
        let ix = TraceIndex::new(&trace, 512);
        assert_eq!(ix.next_use(0, 0), 1);
        assert_eq!(ix.next_use(0, 1), 2);
        assert_eq!(ix.next_use(1, 1), u64::MAX);
        assert_eq!(ix.next_use(2, 0), u64::MAX);
        assert_eq!(ix.next_use_of(BlockKey(2), 0), 2);
        assert_eq!(ix.next_use_of(BlockKey(2), 2), u64::MAX);
        assert_eq!(ix.shape_of(BlockKey(2)), Some((1, 188)));
        let mut f = AccessFacts::new(PolicyKind::Belady, 512, a800(), Some(&ix), "test").unwrap();
        let a = f.block(Nanos(5), 0, &trace[0], 1);
        assert_eq!((a.tokens, a.depth, a.next_use), (188, 1, 2));
        // Eq. 1: tokens [512, 700) given 512 of prefix, over 8 × 312 TFLOPS × 0.5.
        let m = ModelSpec::llama3_70b();
        let want = (m.prefill_flops(700) - m.prefill_flops(512)) / (8.0 * 312e12 * 0.5);
        assert!((a.cost - want).abs() < 1e-15, "{} vs {want}", a.cost);
        let demoted = f.key(Nanos(9), BlockKey(2), 1);
        assert_eq!(
            (demoted.depth, demoted.tokens, demoted.next_use),
            (1, 188, 2)
        );
        // Online policies do not see the future, even where it is known, but
        // a demoted block keeps its shape.
        let mut lru = AccessFacts::new(PolicyKind::Lru, 512, a800(), Some(&ix), "test").unwrap();
        assert_eq!(lru.block(Nanos(5), 0, &trace[0], 1).next_use, 0);
        let d = lru.key(Nanos(9), BlockKey(2), 1);
        assert_eq!((d.depth, d.tokens, d.next_use), (1, 188, 0));
        let mut bare = AccessFacts::for_trace(PolicyKind::Lru, 512, a800(), false, || &ix);
        assert_eq!(
            bare.key(Nanos(9), BlockKey(2), 1).depth,
            0,
            "no index asked for"
        );
    }

    #[test]
    fn offline_policies_are_refused_without_an_index() {
        let e = AccessFacts::new(
            PolicyKind::Belady,
            512,
            a800(),
            None,
            "the real store has no trace",
        )
        .err()
        .unwrap();
        assert_eq!(
            e.to_string(),
            "eviction policy `belady` needs to know the future (each block's next use), which only a replay of a whole trace provides; the real store has no trace"
        );
        assert!(AccessFacts::new(PolicyKind::Gdsf, 512, a800(), None, "x").is_ok());
    }
}
