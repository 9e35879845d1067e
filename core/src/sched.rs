//! Scheduling seams: what a global scheduler (the paper's Conductor) may see
//! of the cluster ([`ClusterView`]), what it decides ([`Placement`]), and the
//! prefill schedulers compared in the paper's Figure 5 plus admission by SLO
//! (Algorithm 1, line 18).
//!
//! The simulator implements [`ClusterView`] from its model state; the real
//! backend will implement it from the master's metadata. Schedulers never
//! read a clock: `view.now()` is the time. What a placement then takes (the
//! source's pins, the fetch's size, the decode reservation) is carried out
//! by [`crate::placement`], the same for both backends.

use crate::cost::CostModel;
use crate::store::{PoolPrefix, SegmentId};
use crate::types::{BlockKey, Nanos, Request};
use serde::{Deserialize, Serialize};

pub use crate::types::InstanceId;

/// A decode instance's load as the scheduler sees it: every request placed
/// on it and not finished (running, waiting to join, or still in prefill or
/// transfer), as [`ClusterView::decode_requests`] lists them.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct DecodeLoad {
    pub requests: u32,
    /// KV tokens those requests hold now: prompts and emitted tokens.
    pub context_tokens: u64,
    /// KV tokens the instance can still admit.
    pub free_kv_tokens: u64,
}

/// A request's prefix on one prefill instance.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalPrefix {
    /// Leading blocks held in the instance's segments (DRAM or SSD).
    pub blocks: usize,
    /// Of those, blocks held only in its SSD tier (read back at prefill start).
    pub ssd_blocks: usize,
}

/// One request on a decode instance, as a load predictor sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DecodingRequest {
    /// Tokens still to generate.
    pub remaining_tokens: u32,
    /// KV tokens it holds now.
    pub context_tokens: u64,
    /// KV tokens reserved for it (prompt + all output).
    pub reserved_kv_tokens: u64,
}

/// What a scheduler may look at. Roles come from the view (an instance is
/// in `prefill_instances` or `decode_instances`), never from id numbering.
pub trait ClusterView {
    fn now(&self) -> Nanos;
    fn block_tokens(&self) -> u32;
    fn prefill_instances(&self) -> &[InstanceId];
    fn decode_instances(&self) -> &[InstanceId];
    /// The decode instances a request prefilled on `prefill` may decode on
    /// (every decode instance when disaggregated; the same node when
    /// prefill and decode are colocated).
    fn decode_candidates(&self, prefill: InstanceId) -> &[InstanceId];
    /// Leading blocks of `keys` held in `instance`'s own segments, and how
    /// many of those only its SSD tier holds.
    fn local_prefix(&self, instance: InstanceId, keys: &[BlockKey]) -> LocalPrefix;
    /// The longest prefix of `keys` in the segments other instances may
    /// fetch from, with every replica of each span.
    fn pool_prefix(&self, keys: &[BlockKey]) -> PoolPrefix;
    /// The instance whose node holds segment `segment` (`None`: a
    /// storage-only node).
    fn segment_owner(&self, segment: SegmentId) -> Option<InstanceId>;
    /// Estimated time until `instance` could start a new request.
    fn prefill_queue_time(&self, instance: InstanceId) -> Nanos;
    /// Estimated time to move `bytes` of KV from segment `from` to instance
    /// `to` now: at what the links offer a new transfer now (each link's
    /// share among the transfers it already carries), not their nominal rate.
    fn transfer_time(&self, from: SegmentId, to: InstanceId, bytes: u64) -> Nanos;
    /// Estimated time for `instance` to bring a prefix into HBM: `dram_bytes`
    /// over its host-to-device link while `ssd_bytes` are read back from its
    /// SSD tier (the two overlap).
    fn load_time(&self, instance: InstanceId, dram_bytes: u64, ssd_bytes: u64) -> Nanos;
    fn decode_load(&self, instance: InstanceId) -> DecodeLoad;
    /// The requests a decode instance is running or will run (batch and
    /// waiting), for predictions of its future load.
    fn decode_requests(&self, instance: InstanceId) -> Vec<DecodingRequest>;
    /// The cost model of `instance` (instances may differ in hardware).
    fn cost(&self, instance: InstanceId) -> &dyn CostModel;
}

/// Why a request was turned away (the HTTP 429 of the paper).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    TtftSlo,
    TbtSlo,
    NoInstance,
}

impl RejectReason {
    pub fn name(self) -> &'static str {
        match self {
            RejectReason::TtftSlo => "ttft-slo",
            RejectReason::TbtSlo => "tbt-slo",
            RejectReason::NoInstance => "no-instance",
        }
    }
}

/// Copy a prefix from the segment holding it to the chosen prefill
/// instance first.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PrefixFetch {
    pub from: SegmentId,
    /// Total prefix blocks the request will find on the prefill instance
    /// once the fetch is done (the holder's match length).
    pub blocks: usize,
}

/// One candidate's estimate, for `--explain`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CandidateEstimate {
    pub instance: InstanceId,
    pub prefix_blocks: usize,
    pub transfer_s: f64,
    pub queue_s: f64,
    pub prefill_s: f64,
    pub ttft_s: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Placement {
    Run {
        prefill: InstanceId,
        decode: InstanceId,
        fetch: Option<PrefixFetch>,
        /// The scheduler's TTFT and TBT estimates for the winner.
        ttft_estimate: Nanos,
        tbt_estimate: Nanos,
    },
    Reject(RejectReason),
}

/// A prefill scheduler. `explain`, when given, receives every candidate's
/// estimate (schedulers that estimate nothing push nothing).
pub trait Scheduler: Send {
    fn name(&self) -> &'static str;
    fn place(
        &mut self,
        req: &Request,
        view: &dyn ClusterView,
        explain: Option<&mut Vec<CandidateEstimate>>,
    ) -> Placement;
}

/// Service-level objectives; admission rejects requests predicted to miss them.
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    /// TTFT threshold, seconds (the paper: 30 s).
    pub ttft_s: f64,
    /// TBT threshold, seconds (the paper: 0.1 / 0.2 / 0.3 s).
    pub tbt_s: f64,
}

impl Default for Slo {
    /// TTFT 30 s and TBT 100 ms (§5.1's strictest TBT threshold).
    fn default() -> Self {
        Slo {
            ttft_s: 30.0,
            tbt_s: 0.1,
        }
    }
}

/// Admission control (Algorithm 1, line 18).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admission {
    /// Admit everything.
    None,
    /// Reject when the estimated TTFT or TBT breaks its SLO.
    Slo,
    /// Like `slo`, but the TBT is estimated from the decode load predicted
    /// for the moment the request would reach decode (its estimated TTFT
    /// from now): requests that will have finished by then no longer count
    /// (the paper's §6 early rejection based on prediction).
    Predictive,
}

/// The load of decode instance `d` predicted for time `at`: each request's
/// finish is extrapolated at the instance's current step time (the step time
/// of its whole current load); those still running at `at` remain.
pub fn predict_decode_load(view: &dyn ClusterView, d: InstanceId, at: Nanos) -> DecodeLoad {
    let reqs = view.decode_requests(d);
    let now_load = view.decode_load(d);
    let step = view.cost(d).decode_step_time(
        reqs.len() as u32,
        reqs.iter().map(|r| r.context_tokens).sum(),
    );
    let horizon = at.saturating_sub(view.now()).0;
    let mut load = DecodeLoad {
        requests: 0,
        context_tokens: 0,
        free_kv_tokens: now_load.free_kv_tokens,
    };
    for r in &reqs {
        let left = step.0.saturating_mul(r.remaining_tokens as u64);
        if left > horizon {
            load.requests += 1;
            load.context_tokens += r.context_tokens;
        } else {
            load.free_kv_tokens += r.reserved_kv_tokens;
        }
    }
    load
}

/// The decode instance with the smallest predicted step time once `req`
/// joins, among the candidates for prefill instance `prefill` with room for
/// its KV (all candidates if none has room); returns it and that predicted
/// step time (the TBT estimate).
pub fn select_decode(
    req: &Request,
    view: &dyn ClusterView,
    prefill: InstanceId,
) -> Option<(InstanceId, Nanos)> {
    let need = req.input_tokens as u64 + req.output_tokens as u64;
    let mut best: Option<(bool, Nanos, InstanceId)> = None;
    for &d in view.decode_candidates(prefill) {
        let load = view.decode_load(d);
        let fits = load.free_kv_tokens >= need;
        let step = view.cost(d).decode_step_time(
            load.requests + 1,
            load.context_tokens + req.input_tokens as u64,
        );
        let key = (!fits, step, d);
        if best.is_none_or(|b| key < b) {
            best = Some(key);
        }
    }
    best.map(|(_, step, d)| (d, step))
}

/// A prefill instance's queue time as a view reports it: what is left of
/// the running request's estimated time (if one runs) plus the estimated
/// work queued behind it.
pub fn queue_time(running_end: Option<Nanos>, now: Nanos, queued_work: Nanos) -> Nanos {
    running_end
        .map_or(Nanos::ZERO, |end| end.saturating_sub(now))
        .saturating_add(queued_work)
}

/// The time a prefill of `req` on `p` takes when its first `prefix_blocks`
/// blocks are cached, `ssd_blocks` of them in the SSD tier: the compute of
/// the rest (the cost model) overlapped with the prefix's load into HBM
/// (from DRAM, and from SSD first for the SSD part) — as the simulator
/// runs it. Schedulers and queues estimate with it.
pub fn estimate_prefill(
    view: &dyn ClusterView,
    p: InstanceId,
    req: &Request,
    prefix_blocks: usize,
    ssd_blocks: usize,
) -> Nanos {
    let bt = view.block_tokens();
    let cost = view.cost(p);
    let cached = req.reusable_tokens(prefix_blocks, bt);
    let compute = cost.prefill_time(req.input_tokens as u64, cached);
    let kv = cost.kv_bytes_per_token();
    let ssd_tokens = req.hit_tokens(ssd_blocks, bt).min(cached);
    let load = view.load_time(p, cached * kv, ssd_tokens * kv);
    compute.max(load)
}

/// Finishes a placement: picks the decode instance and applies admission.
fn finish(
    req: &Request,
    view: &dyn ClusterView,
    prefill: InstanceId,
    fetch: Option<PrefixFetch>,
    ttft: Nanos,
    admission: Admission,
    slo: Slo,
) -> Placement {
    let Some((decode, mut tbt)) = select_decode(req, view, prefill) else {
        return Placement::Reject(RejectReason::NoInstance);
    };
    if admission == Admission::Predictive {
        let load = predict_decode_load(view, decode, view.now().saturating_add(ttft));
        tbt = view.cost(decode).decode_step_time(
            load.requests + 1,
            load.context_tokens + req.input_tokens as u64,
        );
    }
    if admission != Admission::None {
        if ttft.as_secs_f64() > slo.ttft_s {
            return Placement::Reject(RejectReason::TtftSlo);
        }
        if tbt.as_secs_f64() > slo.tbt_s {
            return Placement::Reject(RejectReason::TbtSlo);
        }
    }
    Placement::Run {
        prefill,
        decode,
        fetch,
        ttft_estimate: ttft,
        tbt_estimate: tbt,
    }
}

/// Which prefill scheduler, by its configuration name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerKind {
    Random,
    RoundRobin,
    LeastLoaded,
    LocalCacheAware,
    KvcacheCentric,
}

impl SchedulerKind {
    pub const ALL: [SchedulerKind; 5] = [
        SchedulerKind::Random,
        SchedulerKind::RoundRobin,
        SchedulerKind::LeastLoaded,
        SchedulerKind::LocalCacheAware,
        SchedulerKind::KvcacheCentric,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Random => "random",
            SchedulerKind::RoundRobin => "round-robin",
            SchedulerKind::LeastLoaded => "least-loaded",
            SchedulerKind::LocalCacheAware => "local-cache-aware",
            SchedulerKind::KvcacheCentric => "kvcache-centric",
        }
    }
}

/// Parameters every scheduler shares.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct SchedulerParams {
    pub admission: Admission,
    pub slo: Slo,
    /// Algorithm 1's `kvcache_balancing_threshold`: fetch the best remote
    /// prefix when `best_len / local_len` exceeds it.
    pub balancing_threshold: f64,
    /// Seed of the random scheduler's generator.
    pub seed: u64,
}

pub fn build_scheduler(kind: SchedulerKind, params: SchedulerParams) -> Box<dyn Scheduler> {
    match kind {
        SchedulerKind::Random => Box::new(RandomScheduler {
            params,
            state: params.seed ^ 0x9E37_79B9_7F4A_7C15,
        }),
        SchedulerKind::RoundRobin => Box::new(RoundRobin { params, next: 0 }),
        SchedulerKind::LeastLoaded => Box::new(CacheAware {
            params,
            mode: Mode::LeastLoaded,
        }),
        SchedulerKind::LocalCacheAware => Box::new(CacheAware {
            params,
            mode: Mode::Local,
        }),
        SchedulerKind::KvcacheCentric => Box::new(CacheAware {
            params,
            mode: Mode::Global,
        }),
    }
}

/// Picks a prefill instance uniformly at random (SplitMix64 stream seeded
/// per run).
struct RandomScheduler {
    params: SchedulerParams,
    state: u64,
}

impl RandomScheduler {
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Places `req` on prefill instance `p` with its own prefix (no fetch),
/// estimating TTFT as queue + prefill, then picks decode and admits.
fn place_on(
    req: &Request,
    view: &dyn ClusterView,
    p: InstanceId,
    params: SchedulerParams,
) -> Placement {
    let local = view.local_prefix(p, &req.blocks);
    let ttft = view.prefill_queue_time(p).saturating_add(estimate_prefill(
        view,
        p,
        req,
        local.blocks,
        local.ssd_blocks,
    ));
    finish(req, view, p, None, ttft, params.admission, params.slo)
}

impl Scheduler for RandomScheduler {
    fn name(&self) -> &'static str {
        "random"
    }
    fn place(
        &mut self,
        req: &Request,
        view: &dyn ClusterView,
        _explain: Option<&mut Vec<CandidateEstimate>>,
    ) -> Placement {
        let ps = view.prefill_instances();
        if ps.is_empty() {
            return Placement::Reject(RejectReason::NoInstance);
        }
        let p = ps[(self.next() % ps.len() as u64) as usize];
        place_on(req, view, p, self.params)
    }
}

struct RoundRobin {
    params: SchedulerParams,
    next: usize,
}

impl Scheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }
    fn place(
        &mut self,
        req: &Request,
        view: &dyn ClusterView,
        _explain: Option<&mut Vec<CandidateEstimate>>,
    ) -> Placement {
        let ps = view.prefill_instances();
        if ps.is_empty() {
            return Placement::Reject(RejectReason::NoInstance);
        }
        let p = ps[self.next % ps.len()];
        self.next = (self.next + 1) % ps.len();
        place_on(req, view, p, self.params)
    }
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Mode {
    /// The instance with the least queued work.
    LeastLoaded,
    /// Smallest queue + prefill with the instance's own prefix (§4.1).
    Local,
    /// Algorithm 1: also consider fetching the best remote prefix (§4.2).
    Global,
}

struct CacheAware {
    params: SchedulerParams,
    mode: Mode,
}

impl Scheduler for CacheAware {
    fn name(&self) -> &'static str {
        match self.mode {
            Mode::LeastLoaded => "least-loaded",
            Mode::Local => "local-cache-aware",
            Mode::Global => "kvcache-centric",
        }
    }

    fn place(
        &mut self,
        req: &Request,
        view: &dyn ClusterView,
        mut explain: Option<&mut Vec<CandidateEstimate>>,
    ) -> Placement {
        // Algorithm 1, line 3: the best prefix anywhere in the pool.
        let best = if self.mode == Mode::Global {
            view.pool_prefix(&req.blocks).spans.into_iter().next()
        } else {
            None
        };
        // (ranking key, instance, fetch, TTFT estimate)
        let mut winner: Option<(Nanos, InstanceId, Option<PrefixFetch>, Nanos)> = None;
        for &p in view.prefill_instances() {
            let local = view.local_prefix(p, &req.blocks);
            let queue = view.prefill_queue_time(p);
            // Prefill from the instance's own prefix ...
            let own = estimate_prefill(view, p, req, local.blocks, local.ssd_blocks);
            let (mut prefix, mut transfer, mut prefill, mut fetch) =
                (local.blocks, Nanos::ZERO, own, None);
            // ... or, where the best remote prefix beats the local one by the
            // balancing threshold (lines 5-8), fetch it from its least-loaded
            // replica and prefill the rest, if that is sooner (§4.2: fetch
            // only when the transfer costs less than the prefill it saves).
            if let Some(span) = &best {
                let best_len = span.end;
                if best_len > local.blocks
                    && best_len as f64 > local.blocks as f64 * self.params.balancing_threshold
                {
                    let kv = view.cost(p).kv_bytes_per_token();
                    let bytes = (req.hit_tokens(best_len, view.block_tokens())
                        - req.hit_tokens(local.blocks, view.block_tokens()))
                        * kv;
                    let replica = span
                        .replicas
                        .iter()
                        .filter(|&&s| view.segment_owner(s) != Some(p))
                        .map(|&s| (view.transfer_time(s, p, bytes), s))
                        .min();
                    if let Some((t, from)) = replica {
                        let fetched = estimate_prefill(view, p, req, best_len, local.ssd_blocks);
                        if t.saturating_add(fetched) < own {
                            prefix = best_len;
                            transfer = t;
                            prefill = fetched;
                            fetch = Some(PrefixFetch {
                                from,
                                blocks: best_len,
                            });
                        }
                    }
                }
            }
            let ttft = transfer.saturating_add(queue).saturating_add(prefill);
            let key = match self.mode {
                Mode::LeastLoaded => queue,
                Mode::Local | Mode::Global => ttft,
            };
            if let Some(out) = explain.as_deref_mut() {
                out.push(CandidateEstimate {
                    instance: p,
                    prefix_blocks: prefix,
                    transfer_s: transfer.as_secs_f64(),
                    queue_s: queue.as_secs_f64(),
                    prefill_s: prefill.as_secs_f64(),
                    ttft_s: ttft.as_secs_f64(),
                });
            }
            if winner.is_none_or(|w| key < w.0) {
                winner = Some((key, p, fetch, ttft));
            }
        }
        let Some((_, p, fetch, ttft)) = winner else {
            return Placement::Reject(RejectReason::NoInstance);
        };
        finish(
            req,
            view,
            p,
            fetch,
            ttft,
            self.params.admission,
            self.params.slo,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{AnalyticCost, ModelSpec, NodeSpec};

    /// A hand-set cluster: per prefill instance a match length and a queue.
    struct Fake {
        prefill: Vec<InstanceId>,
        decode: Vec<InstanceId>,
        matches: Vec<usize>,
        queues: Vec<Nanos>,
        decode_loads: Vec<DecodeLoad>,
        remaining: u32,
        cost: AnalyticCost,
        /// Decode instances a prefill instance may use (all when empty).
        candidates: Vec<InstanceId>,
        /// What a new transfer from each segment gets now, bytes/s.
        rates: Vec<f64>,
    }

    impl Fake {
        fn new(matches: Vec<usize>, queues_s: Vec<f64>) -> Fake {
            let n = matches.len() as u32;
            Fake {
                prefill: (0..n).map(InstanceId).collect(),
                decode: vec![InstanceId(n), InstanceId(n + 1)],
                matches,
                queues: queues_s.iter().map(|s| Nanos((s * 1e9) as u64)).collect(),
                decode_loads: vec![
                    DecodeLoad {
                        requests: 10,
                        context_tokens: 100_000,
                        free_kv_tokens: 1_000_000,
                    },
                    DecodeLoad {
                        requests: 2,
                        context_tokens: 10_000,
                        free_kv_tokens: 1_000_000,
                    },
                ],
                remaining: 100,
                cost: AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8()),
                candidates: Vec::new(),
                rates: vec![100e9; n as usize],
            }
        }
    }

    impl ClusterView for Fake {
        fn now(&self) -> Nanos {
            Nanos::ZERO
        }
        fn block_tokens(&self) -> u32 {
            512
        }
        fn prefill_instances(&self) -> &[InstanceId] {
            &self.prefill
        }
        fn decode_instances(&self) -> &[InstanceId] {
            &self.decode
        }
        fn decode_candidates(&self, _prefill: InstanceId) -> &[InstanceId] {
            if self.candidates.is_empty() {
                &self.decode
            } else {
                &self.candidates
            }
        }
        fn local_prefix(&self, i: InstanceId, _keys: &[BlockKey]) -> LocalPrefix {
            LocalPrefix {
                blocks: self.matches[i.0 as usize],
                ssd_blocks: 0,
            }
        }
        fn load_time(&self, _i: InstanceId, dram_bytes: u64, ssd_bytes: u64) -> Nanos {
            // 128 GB/s from DRAM, 7 GB/s from SSD, overlapped.
            Nanos((dram_bytes as f64 / 128e9 * 1e9) as u64)
                .max(Nanos((ssd_bytes as f64 / 7e9 * 1e9) as u64))
        }
        fn pool_prefix(&self, _keys: &[BlockKey]) -> PoolPrefix {
            // Instance i's segment is SegmentId(i).
            let best = self.matches.iter().copied().max().unwrap_or(0);
            if best == 0 {
                return PoolPrefix::default();
            }
            PoolPrefix {
                spans: vec![crate::store::PrefixSpan {
                    start: 0,
                    end: best,
                    replicas: (0..self.matches.len())
                        .filter(|&i| self.matches[i] == best)
                        .map(|i| SegmentId(i as u32))
                        .collect(),
                }],
            }
        }
        fn segment_owner(&self, segment: SegmentId) -> Option<InstanceId> {
            Some(InstanceId(segment.0))
        }
        fn prefill_queue_time(&self, i: InstanceId) -> Nanos {
            self.queues[i.0 as usize]
        }
        fn transfer_time(&self, from: SegmentId, _to: InstanceId, bytes: u64) -> Nanos {
            Nanos((bytes as f64 / self.rates[from.0 as usize] * 1e9) as u64)
        }
        fn decode_load(&self, i: InstanceId) -> DecodeLoad {
            self.decode_loads[i.0 as usize - self.prefill.len()]
        }
        fn decode_requests(&self, i: InstanceId) -> Vec<DecodingRequest> {
            let l = self.decode_load(i);
            // Requests of equal size, each with `remaining` tokens to go.
            (0..l.requests)
                .map(|_| DecodingRequest {
                    remaining_tokens: self.remaining,
                    context_tokens: l.context_tokens / l.requests.max(1) as u64,
                    reserved_kv_tokens: 1000,
                })
                .collect()
        }
        fn cost(&self, _i: InstanceId) -> &dyn CostModel {
            &self.cost
        }
    }

    fn request(blocks: usize) -> Request {
        Request {
            arrival: Nanos::ZERO,
            input_tokens: blocks as u32 * 512,
            output_tokens: 10,
            blocks: (0..blocks as u64).map(BlockKey).collect(),
        }
    }

    fn params(admission: Admission) -> SchedulerParams {
        SchedulerParams {
            admission,
            slo: Slo::default(),
            balancing_threshold: 2.0,
            seed: 7,
        }
    }

    fn prefill_of(p: &Placement) -> (u32, Option<PrefixFetch>) {
        match p {
            Placement::Run { prefill, fetch, .. } => (prefill.0, *fetch),
            Placement::Reject(r) => panic!("rejected: {r:?}"),
        }
    }

    #[test]
    fn least_loaded_ignores_the_cache_and_local_aware_weighs_it() {
        // Instance 0 holds 30 of 32 blocks but has 1 s of queue; instance 1
        // holds nothing and is idle. Prefilling 32 blocks from scratch costs
        // ~2.8 s, so local cache-aware picks 0; least-loaded picks 1.
        let view = Fake::new(vec![30, 0], vec![1.0, 0.0]);
        let req = request(32);
        let mut ll = build_scheduler(SchedulerKind::LeastLoaded, params(Admission::None));
        assert_eq!(prefill_of(&ll.place(&req, &view, None)).0, 1);
        let mut local = build_scheduler(SchedulerKind::LocalCacheAware, params(Admission::None));
        assert_eq!(prefill_of(&local.place(&req, &view, None)), (0, None));
    }

    #[test]
    fn kvcache_centric_fetches_when_the_remote_match_is_worth_it() {
        // Instance 0 holds 30 blocks but has 10 s of queue; instance 1 is
        // idle with 0 blocks: 30 > 0 × threshold, so it fetches 30 blocks
        // (30 × 512 × 320 KiB over 100 GB/s ≈ 50 ms) and wins.
        let view = Fake::new(vec![30, 0], vec![10.0, 0.0]);
        let req = request(32);
        let mut g = build_scheduler(SchedulerKind::KvcacheCentric, params(Admission::None));
        let mut log = Vec::new();
        let p = g.place(&req, &view, Some(&mut log));
        assert_eq!(
            prefill_of(&p),
            (
                1,
                Some(PrefixFetch {
                    from: SegmentId(0),
                    blocks: 30
                })
            )
        );
        assert_eq!(log.len(), 2);
        let expect_transfer = (30.0 * 512.0 * 327_680.0) / 100e9;
        assert!((log[1].transfer_s - expect_transfer).abs() < 1e-9);
        assert_eq!(log[1].prefix_blocks, 30);
        // Below the threshold (local 20 of best 30: 30 ≤ 20 × 2) it
        // computes instead of fetching.
        let view = Fake::new(vec![30, 20], vec![10.0, 0.0]);
        assert_eq!(prefill_of(&g.place(&req, &view, None)), (1, None));
    }

    #[test]
    fn algorithm_1_fetches_from_the_least_loaded_replica_only_when_it_pays() {
        // Instances 0 and 2 hold 30 of the request's 32 blocks but are busy
        // (10 s of queue); instance 1 is idle and holds nothing. Recomputing
        // all 32 blocks there takes `own`; fetching the 30 blocks (30 × 512
        // tokens × 320 KiB = 5.03 GB) and computing 2 takes `t + fetched`.
        let mut view = Fake::new(vec![30, 0, 30], vec![10.0, 0.0, 10.0]);
        let req = request(32);
        let cost = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        let own = cost.prefill_time(32 * 512, 0);
        let fetched = cost.prefill_time(32 * 512, 30 * 512);
        let bytes = 30.0 * 512.0 * 327_680.0;
        let mut g = build_scheduler(SchedulerKind::KvcacheCentric, params(Admission::None));
        // Segment 0's link is congested (1/8 of 100 GB/s left), segment 2's is
        // free: the fetch comes from segment 2.
        view.rates = vec![12.5e9, 100e9, 100e9];
        let mut log = Vec::new();
        let placed = g.place(&req, &view, Some(&mut log));
        assert_eq!(
            prefill_of(&placed),
            (
                1,
                Some(PrefixFetch {
                    from: SegmentId(2),
                    blocks: 30
                })
            )
        );
        let t = bytes / 100e9;
        assert!((log[1].transfer_s - t).abs() < 1e-9);
        assert!((log[1].prefill_s - fetched.as_secs_f64()).abs() < 1e-9);
        // Both replicas' links congested to 1 GB/s: 5 s of transfer loses to
        // recomputing (about 2.8 s), so instance 1 computes the whole prompt.
        view.rates = vec![1e9, 100e9, 1e9];
        let mut log = Vec::new();
        let placed = g.place(&req, &view, Some(&mut log));
        assert_eq!(prefill_of(&placed), (1, None));
        assert!(bytes / 1e9 + fetched.as_secs_f64() > own.as_secs_f64());
        assert_eq!(log[1].transfer_s, 0.0);
        assert!((log[1].prefill_s - own.as_secs_f64()).abs() < 1e-9);
    }

    #[test]
    fn a_prefill_estimate_counts_the_prefix_load_from_dram_and_ssd() {
        // 30 of 32 blocks cached: computing 2 blocks takes ~0.18 s; loading
        // 30 blocks (5.03 GB) from DRAM 39 ms; reading them from SSD 0.72 s.
        let view = Fake::new(vec![30], vec![0.0]);
        let req = request(32);
        let cost = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        let compute = cost.prefill_time(32 * 512, 30 * 512);
        let bytes = 30.0 * 512.0 * 327_680.0;
        assert_eq!(estimate_prefill(&view, InstanceId(0), &req, 30, 0), compute);
        let from_ssd = estimate_prefill(&view, InstanceId(0), &req, 30, 30);
        assert_eq!(from_ssd, Nanos((bytes / 7e9 * 1e9) as u64));
        assert!(from_ssd > compute);
    }

    #[test]
    fn decode_goes_to_the_lighter_instance_and_slo_admission_rejects() {
        let view = Fake::new(vec![0], vec![40.0]);
        let req = request(4);
        let mut rr = build_scheduler(SchedulerKind::RoundRobin, params(Admission::None));
        match rr.place(&req, &view, None) {
            Placement::Run { decode, .. } => assert_eq!(decode, InstanceId(2)),
            other => panic!("{other:?}"),
        }
        // 40 s of queue breaks the 30 s TTFT SLO.
        let mut adm = build_scheduler(SchedulerKind::RoundRobin, params(Admission::Slo));
        assert_eq!(
            adm.place(&req, &view, None),
            Placement::Reject(RejectReason::TtftSlo)
        );
    }

    #[test]
    fn decode_is_chosen_and_admitted_among_the_views_candidates() {
        // Colocated: prefill 0 may only decode on its own node, the heavy
        // instance 1 (10 requests of 10k tokens), though 2 is lighter. The
        // TBT the admission checks is that node's.
        let mut view = Fake::new(vec![0], vec![0.0]);
        view.candidates = vec![InstanceId(1)];
        let req = request(4);
        let mut rr = build_scheduler(SchedulerKind::RoundRobin, params(Admission::None));
        let Placement::Run {
            decode,
            tbt_estimate,
            ..
        } = rr.place(&req, &view, None)
        else {
            panic!("rejected")
        };
        assert_eq!(decode, InstanceId(1));
        let heavy = view.cost.decode_step_time(11, 100_000 + 4 * 512);
        assert_eq!(tbt_estimate, heavy);
    }

    #[test]
    fn predictive_admission_counts_only_requests_still_decoding() {
        // A heavy decode instance: 400 requests of 50k context each; a step
        // takes far above 100 ms now, so plain SLO admission rejects on TBT.
        let mut view = Fake::new(vec![0], vec![0.0]);
        let heavy = DecodeLoad {
            requests: 400,
            context_tokens: 400 * 50_000,
            free_kv_tokens: 10_000_000,
        };
        view.decode_loads = vec![heavy, heavy];
        let req = request(64); // ~8 s of prefill: reaches decode in ~8 s
        let mut slo = build_scheduler(SchedulerKind::RoundRobin, params(Admission::Slo));
        assert_eq!(
            slo.place(&req, &view, None),
            Placement::Reject(RejectReason::TbtSlo)
        );
        // Each of those requests has 1 token left: they are all gone by the
        // time this request reaches decode, so the prediction admits it.
        view.remaining = 1;
        let mut pred = build_scheduler(SchedulerKind::RoundRobin, params(Admission::Predictive));
        assert!(matches!(
            pred.place(&req, &view, None),
            Placement::Run { .. }
        ));
        // With many tokens left they are still there: rejected.
        view.remaining = 100_000;
        assert_eq!(
            pred.place(&req, &view, None),
            Placement::Reject(RejectReason::TbtSlo)
        );
        let p = predict_decode_load(&view, InstanceId(1), Nanos::from_secs(1));
        assert_eq!(p.requests, 400);
    }

    #[test]
    fn random_and_round_robin_cover_every_instance() {
        let view = Fake::new(vec![0, 0, 0], vec![0.0; 3]);
        let req = request(1);
        for kind in [SchedulerKind::Random, SchedulerKind::RoundRobin] {
            let mut s = build_scheduler(kind, params(Admission::None));
            let mut seen = [0u32; 3];
            for _ in 0..300 {
                seen[prefill_of(&s.place(&req, &view, None)).0 as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n > 50), "{kind:?}: {seen:?}");
        }
    }
}
