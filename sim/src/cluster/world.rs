//! The simulated cluster: prefill instances with FIFO queues, chunked
//! prefill and a DRAM segment of the KVCache pool each; decode instances
//! with continuous batching bounded by the HBM left for KV; the flow network
//! that moves KV. Events are plain data in a queue ordered by (time,
//! sequence); components live in vectors addressed by index.
//!
//! Request workflow (the paper's §3.1, Figure 3):
//! 1. arrival: the scheduler picks (prefill, decode) or rejects;
//! 2. if it chose to fetch a remote prefix, the holder's blocks (leased and
//!    pinned there) flow NIC to NIC and become replicas on the prefill node;
//! 3. the request waits its turn in the prefill FIFO; at its start the
//!    cached prefix is loaded DRAM → HBM (a flow over the node's H2D link)
//!    while the unmatched tokens are computed chunk by chunk (the cost
//!    model), and the KV streams to the decode node layer by layer (a flow
//!    over the two NICs, overlapped with compute); the first token exists
//!    when compute and load are both done (TTFT);
//! 4. the prompt's blocks enter the prefill node's DRAM segment, eviction
//!    brings it back within capacity (blocks in use or leased never go);
//! 5. once its KV has arrived, the request joins the decode instance's
//!    continuous batch when its KV fits; each iteration emits one token per
//!    request; TBT is the mean of the longest 10 % of its token intervals.

use super::config::{Deployment, QueuePolicy, Resolved};
use super::flows::{LinkId, LinkKind, Network};
use moonlab_core::cache::BlockCache;
use moonlab_core::cost::CostModel;
use moonlab_core::eviction::{Access, EvictionPolicy};
use moonlab_core::lease::LeasePolicy;
use moonlab_core::sched::{
    build_scheduler, CandidateEstimate, ClusterView, DecodeLoad, DecodingRequest, InstanceId,
    Placement, RejectReason, Scheduler, SchedulerParams,
};
use moonlab_core::{BlockKey, Nanos, Request};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival(u32),
    /// The network's next flow completion, valid while `generation` matches.
    FlowsDue(u64),
    PrefillComputeDone(u32),
    DecodeStepDone(u32),
    /// Take a time-series sample and the replica counts.
    Sample,
}

/// Flow tags: kind in the top bits, request in the low 32.
const TAG_FETCH: u64 = 1 << 32;
const TAG_H2D: u64 = 2 << 32;
const TAG_KV: u64 = 3 << 32;
const TAG_SSD_READ: u64 = 4 << 32;
const TAG_SSD_WRITE: u64 = 5 << 32;

/// Everything recorded about one request.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RequestRecord {
    pub id: u32,
    pub arrival_s: f64,
    pub served: bool,
    pub reject_reason: Option<&'static str>,
    pub prefill: Option<u32>,
    pub decode: Option<u32>,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Prefix tokens found in the prefill node's own DRAM at prefill start
    /// (including replicas fetched for this request).
    pub prefix_tokens: u64,
    /// Of those, tokens read back from the node's SSD tier.
    pub ssd_tokens: u64,
    /// Of those, tokens fetched from another node for this request.
    pub fetched_tokens: u64,
    pub fetch_bytes: u64,
    pub fetch_s: f64,
    pub queue_s: f64,
    pub prefill_s: f64,
    pub ttft_s: f64,
    pub tbt_s: f64,
    pub finish_s: f64,
}

#[derive(Default)]
struct ReqState {
    placed: bool,
    prefill: u32,
    decode: u32,
    fetch_pending: bool,
    fetch_pinned: Vec<BlockKey>,
    fetch_started: Nanos,
    /// Blocks this request pins in its prefill node's DRAM and SSD tier.
    pinned_dram: Vec<BlockKey>,
    pinned_ssd: Vec<BlockKey>,
    ssd_done: bool,
    compute_done: bool,
    h2d_done: bool,
    kv_done: bool,
    prefill_done: bool,
    queued_at: Nanos,
    prefill_started: Nanos,
    estimate: Nanos,
    /// Tokens emitted so far (the first comes from prefill).
    tokens: u32,
    last_token: Nanos,
    /// Min-heap of the longest intervals seen (bounded).
    longest: BinaryHeap<Reverse<u64>>,
    longest_cap: usize,
}

struct PrefillInst {
    cache: BlockCache<Box<dyn EvictionPolicy>>,
    ssd: Option<BlockCache<Box<dyn EvictionPolicy>>>,
    ssd_link: LinkId,
    queue: VecDeque<u32>,
    running: Option<u32>,
    /// Estimated end of the running request and estimated work queued.
    running_end: Nanos,
    queued_work: Nanos,
    nic_tx: LinkId,
    nic_rx: LinkId,
    h2d: LinkId,
    busy: Nanos,
    busy_buckets: BusyBuckets,
}

impl PrefillInst {
    /// Leading blocks of `keys` held in this node's DRAM or SSD tier.
    fn local_prefix(&self, keys: &[BlockKey]) -> usize {
        match &self.ssd {
            None => self.cache.prefix_len(keys),
            Some(ssd) => keys
                .iter()
                .take_while(|k| self.cache.contains(**k) || ssd.contains(**k))
                .count(),
        }
    }
}

struct DecodeInst {
    batch: Vec<u32>,
    waiting: VecDeque<u32>,
    /// Placed here but still in prefill or KV transfer.
    incoming: std::collections::BTreeSet<u32>,
    kv_reserved: u64,
    kv_capacity: u64,
    context_tokens: u64,
    stepping: bool,
    nic_rx: LinkId,
    busy: Nanos,
    busy_buckets: BusyBuckets,
}

/// Per-interval busy time of one instance, accumulated exactly: a busy
/// period [s, e) adds its overlap with every interval it spans.
#[derive(Default)]
struct BusyBuckets {
    ns: Vec<u64>,
}

impl BusyBuckets {
    fn add(&mut self, start: Nanos, end: Nanos, interval: u64) {
        let (mut s, e) = (start.0, end.0);
        while s < e {
            let b = (s / interval) as usize;
            let bucket_end = (b as u64 + 1) * interval;
            let upto = e.min(bucket_end);
            if self.ns.len() <= b {
                self.ns.resize(b + 1, 0);
            }
            self.ns[b] += upto - s;
            s = upto;
        }
    }
}

/// One sample of the cluster's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub time: Nanos,
    pub prefill_queue: Vec<u32>,
    pub prefill_cache_blocks: Vec<u32>,
    pub decode_batch: Vec<u32>,
    pub decode_waiting: Vec<u32>,
    /// Replicas across the prefill nodes of the tracked keys, by key.
    pub replicas: Vec<(BlockKey, u16)>,
}

/// What one run produced.
pub struct SimOutput {
    pub records: Vec<RequestRecord>,
    pub events: u64,
    pub nic_bytes: f64,
    pub h2d_bytes: f64,
    pub ssd_bytes: f64,
    pub end: Nanos,
    pub prefill_busy_s: Vec<f64>,
    pub decode_busy_s: Vec<f64>,
    /// Busy share of each instance in each sampling interval
    /// (`[instance][interval]`, prefill instances first).
    pub utilization: Vec<Vec<f64>>,
    pub sample_interval: Nanos,
    pub samples: Vec<Sample>,
    /// Every key's replica count summed over all samples (Figure 11's
    /// ranking), sorted by key.
    pub replica_totals: Vec<(BlockKey, u64)>,
    /// `--explain`: per placed request, every candidate's estimate.
    pub explain: Vec<(u32, Vec<CandidateEstimate>, String)>,
}

pub struct World<'t> {
    trace: &'t [Request],
    cfg: Resolved,
    now: Nanos,
    seq: u64,
    queue: BinaryHeap<Reverse<(Nanos, u64, Event)>>,
    net: Network,
    net_generation: u64,
    prefill: Vec<PrefillInst>,
    decode: Vec<DecodeInst>,
    prefill_ids: Vec<InstanceId>,
    decode_ids: Vec<InstanceId>,
    reqs: Vec<ReqState>,
    records: Vec<RequestRecord>,
    events: u64,
    explain: Option<Vec<(u32, Vec<CandidateEstimate>, String)>>,
    scheduler: Option<Box<dyn Scheduler>>,
    sample_interval: Nanos,
    samples: Vec<Sample>,
    /// Reads of each block from a prefill node's DRAM, for soft pinning.
    reads: rustc_hash::FxHashMap<BlockKey, u64>,
    replica_totals: rustc_hash::FxHashMap<BlockKey, u64>,
    /// Keys whose replica counts each sample records (sorted).
    tracked: Vec<BlockKey>,
    colocated: bool,
    kv_bytes_per_token: u64,
    block_bytes: u64,
}

/// The scheduler's window onto the world.
struct View<'w, 't> {
    w: &'w World<'t>,
}

impl ClusterView for View<'_, '_> {
    fn now(&self) -> Nanos {
        self.w.now
    }
    fn block_tokens(&self) -> u32 {
        self.w.cfg.config.block_tokens
    }
    fn prefill_instances(&self) -> &[InstanceId] {
        &self.w.prefill_ids
    }
    fn decode_instances(&self) -> &[InstanceId] {
        &self.w.decode_ids
    }
    fn local_prefix_blocks(&self, instance: InstanceId, keys: &[BlockKey]) -> usize {
        self.w.prefill[instance.0 as usize].local_prefix(keys)
    }
    fn best_prefix(&self, keys: &[BlockKey]) -> Option<(InstanceId, usize)> {
        let mut best: Option<(InstanceId, usize)> = None;
        for (i, p) in self.w.prefill.iter().enumerate() {
            let m = p.cache.prefix_len(keys);
            if m > 0 && best.is_none_or(|b| m > b.1) {
                best = Some((InstanceId(i as u32), m));
            }
        }
        best
    }
    fn prefill_queue_time(&self, instance: InstanceId) -> Nanos {
        let p = &self.w.prefill[instance.0 as usize];
        let running = if p.running.is_some() {
            p.running_end.saturating_sub(self.w.now)
        } else {
            Nanos::ZERO
        };
        running.saturating_add(p.queued_work)
    }
    fn transfer_time(&self, from: InstanceId, to: InstanceId, bytes: u64) -> Nanos {
        let a = self
            .w
            .net
            .link_capacity(self.w.prefill[from.0 as usize].nic_tx);
        let b = self
            .w
            .net
            .link_capacity(self.w.prefill[to.0 as usize].nic_rx);
        Nanos((bytes as f64 / a.min(b) * 1e9).ceil() as u64)
    }
    fn decode_load(&self, instance: InstanceId) -> DecodeLoad {
        let d = &self.w.decode[instance.0 as usize - self.w.prefill.len()];
        DecodeLoad {
            requests: (d.batch.len() + d.waiting.len()) as u32,
            context_tokens: d.context_tokens,
            free_kv_tokens: d.kv_capacity.saturating_sub(d.kv_reserved),
        }
    }
    fn decode_requests(&self, instance: InstanceId) -> Vec<DecodingRequest> {
        let d = &self.w.decode[instance.0 as usize - self.w.prefill.len()];
        d.batch
            .iter()
            .chain(d.waiting.iter())
            .chain(d.incoming.iter())
            .map(|&r| {
                let q = &self.w.trace[r as usize];
                let st = &self.w.reqs[r as usize];
                DecodingRequest {
                    remaining_tokens: q.output_tokens.saturating_sub(st.tokens),
                    context_tokens: q.input_tokens as u64 + st.tokens as u64,
                    reserved_kv_tokens: q.input_tokens as u64 + q.output_tokens as u64,
                }
            })
            .collect()
    }
    fn cost(&self, instance: InstanceId) -> &dyn CostModel {
        // Prefill instances are numbered first, decode instances after them;
        // each pool answers with its own hardware's model.
        if (instance.0 as usize) < self.w.prefill.len() {
            &self.w.cfg.prefill_cost
        } else {
            &self.w.cfg.decode_cost
        }
    }
}

impl<'t> World<'t> {
    pub fn new(trace: &'t [Request], cfg: Resolved, explain: bool) -> World<'t> {
        let c = &cfg.config;
        let mut net = Network::new();
        let pnode = &cfg.prefill_node;
        let dnode = &cfg.decode_node;
        let prefill: Vec<PrefillInst> = (0..c.prefill.instances)
            .map(|_| PrefillInst {
                ssd: (c.prefill.ssd_cache_blocks > 0).then(|| {
                    BlockCache::new(
                        cfg.eviction.build(Some(c.prefill.ssd_cache_blocks)),
                        Some(c.prefill.ssd_cache_blocks),
                    )
                }),
                ssd_link: net.add_link(c.prefill.ssd_gb_per_s * 1e9, LinkKind::Ssd),
                cache: BlockCache::new(
                    cfg.eviction.build(Some(c.prefill.dram_cache_blocks)),
                    Some(c.prefill.dram_cache_blocks),
                ),
                queue: VecDeque::new(),
                running: None,
                running_end: Nanos::ZERO,
                queued_work: Nanos::ZERO,
                nic_tx: net.add_link(pnode.nic_bytes_per_s(), LinkKind::NicTx),
                nic_rx: net.add_link(pnode.nic_bytes_per_s(), LinkKind::NicRx),
                h2d: net.add_link(pnode.h2d_bytes_per_s(), LinkKind::H2d),
                busy: Nanos::ZERO,
                busy_buckets: BusyBuckets::default(),
            })
            .collect();
        let decode: Vec<DecodeInst> = (0..c.decode.instances)
            .map(|_| DecodeInst {
                batch: Vec::new(),
                waiting: VecDeque::new(),
                incoming: Default::default(),
                kv_reserved: 0,
                kv_capacity: cfg.decode_kv_tokens,
                context_tokens: 0,
                stepping: false,
                nic_rx: net.add_link(dnode.nic_bytes_per_s(), LinkKind::NicRx),
                busy: Nanos::ZERO,
                busy_buckets: BusyBuckets::default(),
            })
            .collect();
        let kv_bytes_per_token = cfg.prefill_cost.kv_bytes_per_token();
        let block_bytes = kv_bytes_per_token * c.block_tokens as u64;
        let params = SchedulerParams {
            admission: c.scheduler.admission,
            slo: c.slo,
            balancing_threshold: c.scheduler.balancing_threshold,
            seed: c.seed,
        };
        let scheduler = Some(build_scheduler(c.scheduler.name, params));
        let sample_interval = Nanos(((c.metrics.sample_interval_s * 1e9) as u64).max(1));
        let mut w = World {
            scheduler,
            sample_interval,
            samples: Vec::new(),
            reads: Default::default(),
            replica_totals: Default::default(),
            tracked: Vec::new(),
            colocated: c.deployment == Deployment::Colocated,
            trace,
            prefill_ids: (0..c.prefill.instances).map(InstanceId).collect(),
            decode_ids: (c.prefill.instances..c.prefill.instances + c.decode.instances)
                .map(InstanceId)
                .collect(),
            cfg,
            now: Nanos::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            net,
            net_generation: 0,
            prefill,
            decode,
            reqs: (0..trace.len()).map(|_| ReqState::default()).collect(),
            records: trace
                .iter()
                .enumerate()
                .map(|(i, r)| RequestRecord {
                    id: i as u32,
                    arrival_s: r.arrival.as_secs_f64(),
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    ..RequestRecord::default()
                })
                .collect(),
            events: 0,
            explain: explain.then(Vec::new),
            kv_bytes_per_token,
            block_bytes,
        };
        // Arrivals are pushed lazily, one ahead, so the queue stays small.
        if !trace.is_empty() {
            w.push(trace[0].arrival, Event::Arrival(0));
            w.push(sample_interval, Event::Sample);
        }
        w
    }

    fn push(&mut self, at: Nanos, e: Event) {
        debug_assert!(at >= self.now, "event scheduled in the past");
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, e)));
    }

    /// Runs to completion, calling `progress(done_requests)` now and then.
    pub fn run(mut self, mut progress: impl FnMut(u64)) -> SimOutput {
        let mut finished_reported = 0u64;
        while let Some(Reverse((at, _, e))) = self.queue.pop() {
            debug_assert!(at >= self.now, "time went backwards");
            self.now = at;
            self.events += 1;
            match e {
                Event::Arrival(i) => {
                    if let Some(next) = self.trace.get(i as usize + 1) {
                        self.push(next.arrival, Event::Arrival(i + 1));
                    }
                    self.arrive(i);
                    if (i as u64).saturating_sub(finished_reported) >= 1000 {
                        finished_reported = i as u64;
                        progress(finished_reported);
                    }
                }
                Event::FlowsDue(g) if g == self.net_generation => self.flows_due(),
                Event::FlowsDue(_) => {}
                Event::PrefillComputeDone(r) => {
                    self.reqs[r as usize].compute_done = true;
                    self.maybe_prefill_done(r);
                }
                Event::DecodeStepDone(d) => self.decode_step_done(d as usize),
                Event::Sample => {
                    self.events -= 1; // bookkeeping, not simulated work
                    self.sample();
                    // Keep sampling while anything else is still to happen.
                    if !self.queue.is_empty() {
                        self.push(self.now.saturating_add(self.sample_interval), Event::Sample);
                    }
                }
            }
        }
        progress(self.trace.len() as u64);
        let prefill_busy_s = self.prefill.iter().map(|p| p.busy.as_secs_f64()).collect();
        let decode_busy_s = self.decode.iter().map(|d| d.busy.as_secs_f64()).collect();
        let interval = self.sample_interval.0;
        let buckets = (self.now.0 / interval + 1) as usize;
        let share = |b: &BusyBuckets| -> Vec<f64> {
            (0..buckets)
                .map(|i| b.ns.get(i).copied().unwrap_or(0) as f64 / interval as f64)
                .collect()
        };
        let utilization = self
            .prefill
            .iter()
            .map(|p| share(&p.busy_buckets))
            .chain(self.decode.iter().map(|d| share(&d.busy_buckets)))
            .collect();
        SimOutput {
            records: self.records,
            events: self.events,
            nic_bytes: self.net.bytes_by_kind[0],
            h2d_bytes: self.net.bytes_by_kind[2],
            ssd_bytes: self.net.bytes_by_kind[3],
            end: self.now,
            prefill_busy_s,
            decode_busy_s,
            utilization,
            sample_interval: self.sample_interval,
            samples: self.samples,
            replica_totals: {
                let mut v: Vec<(BlockKey, u64)> = self.replica_totals.into_iter().collect();
                v.sort_unstable();
                v
            },
            explain: self.explain.unwrap_or_default(),
        }
    }

    fn sample(&mut self) {
        let mut replicas: Vec<(BlockKey, u16)> = self.tracked.iter().map(|&k| (k, 0)).collect();
        for p in &self.prefill {
            for k in p.cache.keys() {
                *self.replica_totals.entry(k).or_default() += 1;
                if let Ok(i) = self.tracked.binary_search(&k) {
                    replicas[i].1 += 1;
                }
            }
        }
        self.samples.push(Sample {
            time: self.now,
            prefill_queue: self
                .prefill
                .iter()
                .map(|p| p.queue.len() as u32 + u32::from(p.running.is_some()))
                .collect(),
            prefill_cache_blocks: self.prefill.iter().map(|p| p.cache.len() as u32).collect(),
            decode_batch: self.decode.iter().map(|d| d.batch.len() as u32).collect(),
            decode_waiting: self.decode.iter().map(|d| d.waiting.len() as u32).collect(),
            replicas,
        });
    }

    fn reschedule_flows(&mut self) {
        self.net_generation += 1;
        if let Some(t) = self.net.next_completion() {
            if t != Nanos::MAX {
                let g = self.net_generation;
                self.push(t.max(self.now), Event::FlowsDue(g));
            }
        }
    }

    fn start_flow(&mut self, links: Vec<LinkId>, bytes: u64, tag: u64) {
        self.net.start(self.now, links, bytes as f64, tag);
        self.reschedule_flows();
    }

    fn flows_due(&mut self) {
        let mut done = Vec::new();
        self.net.complete_due(self.now, &mut done);
        self.reschedule_flows();
        for tag in done {
            let r = (tag & 0xFFFF_FFFF) as u32;
            match tag & !0xFFFF_FFFF {
                TAG_FETCH => self.fetch_done(r),
                TAG_H2D => {
                    self.reqs[r as usize].h2d_done = true;
                    self.maybe_prefill_done(r);
                }
                TAG_SSD_READ => {
                    self.reqs[r as usize].ssd_done = true;
                    self.maybe_prefill_done(r);
                }
                TAG_SSD_WRITE => {}
                TAG_KV => {
                    self.reqs[r as usize].kv_done = true;
                    self.maybe_join_decode(r);
                }
                _ => {}
            }
        }
    }

    fn cached_tokens(&self, r: &Request, blocks: usize) -> u64 {
        (blocks as u64 * self.cfg.config.block_tokens as u64).min(r.input_tokens as u64 - 1)
    }

    fn arrive(&mut self, i: u32) {
        let mut cands = Vec::new();
        let want = self.explain.is_some();
        let Some(mut sched) = self.scheduler.take() else {
            return;
        };
        let placement = sched.place(
            &self.trace[i as usize],
            &View { w: self },
            want.then_some(&mut cands),
        );
        self.scheduler = Some(sched);

        let req = &self.trace[i as usize];
        match placement {
            Placement::Reject(reason) => {
                self.record_reject(i, reason);
                if let Some(log) = self.explain.as_mut() {
                    log.push((i, cands, format!("rejected: {}", reason.name())));
                }
            }
            Placement::Run {
                prefill,
                decode,
                fetch,
                ttft_estimate,
                ..
            } => {
                if let Some(log) = self.explain.as_mut() {
                    let why = match fetch {
                        Some(f) => format!(
                            "prefill {} (smallest estimated TTFT {:.3} s, fetching {} prefix blocks from {}), decode {}",
                            prefill.0,
                            ttft_estimate.as_secs_f64(),
                            f.blocks,
                            f.from.0,
                            decode.0
                        ),
                        None => format!(
                            "prefill {} (estimated TTFT {:.3} s), decode {}",
                            prefill.0,
                            ttft_estimate.as_secs_f64(),
                            decode.0
                        ),
                    };
                    log.push((i, cands, why));
                }
                let p = prefill.0 as usize;
                let st = &mut self.reqs[i as usize];
                st.placed = true;
                st.prefill = prefill.0;
                // Colocated: a request decodes on the node that prefilled it.
                let decode = if self.colocated {
                    InstanceId(prefill.0 + self.prefill.len() as u32)
                } else {
                    decode
                };
                st.decode = decode.0 - self.prefill.len() as u32;
                st.queued_at = self.now;
                st.longest_cap = (req.output_tokens.saturating_sub(1) as usize).div_ceil(10);
                // Reserve the decode instance's KV and load from now on.
                let d = &mut self.decode[(decode.0 as usize) - self.prefill.len()];
                d.kv_reserved += req.input_tokens as u64 + req.output_tokens as u64;
                d.context_tokens += req.input_tokens as u64;
                d.incoming.insert(i);
                if let Some(f) = fetch {
                    let local = self.prefill[p].cache.prefix_len(&req.blocks);
                    let holder = f.from.0 as usize;
                    let n = f
                        .blocks
                        .min(self.prefill[holder].cache.prefix_len(&req.blocks));
                    if n > local {
                        let keys: Vec<BlockKey> = req.blocks[..n].to_vec();
                        let hc = &mut self.prefill[holder].cache;
                        hc.expire_leases(self.now);
                        for k in &keys {
                            // A read from the holder's segment: leased, and
                            // pinned while the transfer runs.
                            if let Some(until) = self.cfg.leases.lease_on_read(*k, self.now) {
                                hc.lease(*k, until);
                            }
                            hc.pin(*k);
                        }
                        let st = &mut self.reqs[i as usize];
                        st.fetch_pending = true;
                        st.fetch_pinned = keys;
                        st.fetch_started = self.now;
                        let bytes = (n - local) as u64 * self.block_bytes;
                        self.records[i as usize].fetch_bytes = bytes;
                        self.records[i as usize].fetched_tokens = ((n - local) as u64
                            * self.cfg.config.block_tokens as u64)
                            .min(req.input_tokens as u64);
                        let links = vec![self.prefill[holder].nic_tx, self.prefill[p].nic_rx];
                        self.start_flow(links, bytes, TAG_FETCH | i as u64);
                    }
                }
                let estimate = {
                    let local = self.prefill[p].cache.prefix_len(&req.blocks);
                    let blocks = fetch.map_or(local, |f| f.blocks.max(local));
                    let cached = self.cached_tokens(req, blocks);
                    self.cfg
                        .prefill_cost
                        .prefill_time(req.input_tokens as u64, cached)
                };
                self.reqs[i as usize].estimate = estimate;
                let inst = &mut self.prefill[p];
                inst.queue.push_back(i);
                inst.queued_work = inst.queued_work.saturating_add(estimate);
                self.try_start_prefill(p);
            }
        }
    }

    fn record_reject(&mut self, i: u32, reason: RejectReason) {
        let rec = &mut self.records[i as usize];
        rec.served = false;
        rec.reject_reason = Some(reason.name());
        rec.finish_s = self.now.as_secs_f64();
    }

    fn fetch_done(&mut self, r: u32) {
        let req = &self.trace[r as usize];
        let st = &mut self.reqs[r as usize];
        st.fetch_pending = false;
        let keys = std::mem::take(&mut st.fetch_pinned);
        let (holder_done, p) = (st.fetch_started, st.prefill as usize);
        self.records[r as usize].fetch_s = self.now.saturating_sub(holder_done).as_secs_f64();
        // Release the holder's pins (its leases run out by themselves).
        let holder = self.holder_of(r, &keys);
        if let Some(h) = holder {
            for k in &keys {
                self.prefill[h].cache.unpin(*k, self.now);
            }
        }
        // The fetched prefix becomes a replica on the prefill node, pinned
        // until this request's prefill is done.
        let cache = &mut self.prefill[p].cache;
        for (j, k) in keys.iter().enumerate().rev() {
            let a = access(self.now, req, j, self.cfg.config.block_tokens);
            cache.touch(*k, &a);
            cache.pin(*k);
        }
        self.reqs[r as usize].fetch_pinned = keys;
        self.try_start_prefill(p);
    }

    /// The node whose pins `keys` hold for request `r`'s fetch: the first
    /// prefill node other than `r`'s own where they are pinned.
    fn holder_of(&self, r: u32, keys: &[BlockKey]) -> Option<usize> {
        let own = self.reqs[r as usize].prefill as usize;
        let first = keys.first()?;
        (0..self.prefill.len()).find(|&h| {
            h != own
                && self.prefill[h].cache.contains(*first)
                && !self.prefill[h].cache.is_evictable(*first)
        })
    }

    fn try_start_prefill(&mut self, p: usize) {
        if self.prefill[p].running.is_some() {
            return;
        }
        if self.colocated && self.decode[p].stepping {
            return; // the GPU finishes its decode step first
        }
        let pick = match self.cfg.config.prefill.queue {
            // FIFO: the head runs next, and waits for its prefix if fetching.
            QueuePolicy::Fifo => self.prefill[p]
                .queue
                .front()
                .filter(|&&r| !self.reqs[r as usize].fetch_pending)
                .map(|_| 0),
            // Shortest estimated prefill first among the ready requests
            // (earliest arrival among equals).
            QueuePolicy::ShortestFirst => self.prefill[p]
                .queue
                .iter()
                .enumerate()
                .filter(|(_, &r)| !self.reqs[r as usize].fetch_pending)
                .min_by_key(|(i, &r)| (self.reqs[r as usize].estimate, *i))
                .map(|(i, _)| i),
        };
        let Some(r) = pick.and_then(|i| self.prefill[p].queue.remove(i)) else {
            return;
        };
        let req = &self.trace[r as usize];
        let bt = self.cfg.config.block_tokens;
        let estimate = self.reqs[r as usize].estimate;
        let inst = &mut self.prefill[p];
        inst.queued_work = inst.queued_work.saturating_sub(estimate);
        inst.cache.expire_leases(self.now);
        let k = inst.local_prefix(&req.blocks);
        let (mut pinned_dram, mut pinned_ssd) = (Vec::new(), Vec::new());
        for key in &req.blocks[..k] {
            if inst.cache.pin(*key) {
                // A read from the store: lease it, and soft-pin it if hot.
                if let Some(until) = self.cfg.leases.lease_on_read(*key, self.now) {
                    inst.cache.lease(*key, until);
                }
                let reads = self.reads.entry(*key).or_default();
                *reads += 1;
                if let Some(until) = self.cfg.leases.soft_pin(*key, *reads, self.now) {
                    inst.cache.soft_pin(*key, until);
                }
                pinned_dram.push(*key);
            } else if let Some(ssd) = inst.ssd.as_mut() {
                ssd.pin(*key);
                pinned_ssd.push(*key);
            }
        }
        let cached = (k as u64 * bt as u64).min(req.input_tokens as u64 - 1);
        // Chunked prefill: each chunk computed given everything before it.
        let chunk = self.cfg.config.prefill.chunk_tokens as u64;
        let input = req.input_tokens as u64;
        let mut compute = Nanos::ZERO;
        let mut s = cached;
        while s < input {
            let e = if chunk == 0 {
                input
            } else {
                (s + chunk).min(input)
            };
            compute = compute.saturating_add(self.cfg.prefill_cost.prefill_time(e, s));
            s = e;
        }
        inst.running = Some(r);
        inst.running_end = self.now.saturating_add(compute);
        inst.busy = inst.busy.saturating_add(compute);
        inst.busy_buckets.add(
            self.now,
            self.now.saturating_add(compute),
            self.sample_interval.0,
        );
        let (h2d, tx, ssd_link) = (inst.h2d, inst.nic_tx, inst.ssd_link);
        let ssd_blocks = pinned_ssd.len() as u64;
        let st = &mut self.reqs[r as usize];
        st.pinned_dram = pinned_dram;
        st.pinned_ssd = pinned_ssd;
        st.ssd_done = ssd_blocks == 0;
        st.prefill_started = self.now;
        let rec = &mut self.records[r as usize];
        rec.prefix_tokens = (k as u64 * bt as u64).min(input);
        rec.ssd_tokens = (ssd_blocks * bt as u64).min(rec.prefix_tokens);
        rec.queue_s = self.now.saturating_sub(st.queued_at).as_secs_f64();
        rec.prefill_s = compute.as_secs_f64();
        rec.prefill = Some(p as u32);
        rec.decode = Some(st.decode + self.prefill.len() as u32);
        self.push(
            self.now.saturating_add(compute),
            Event::PrefillComputeDone(r),
        );
        if ssd_blocks > 0 {
            // The SSD part of the prefix is read back while the layers load.
            self.start_flow(
                vec![ssd_link],
                ssd_blocks * self.block_bytes,
                TAG_SSD_READ | r as u64,
            );
        }
        if cached > 0 {
            self.start_flow(
                vec![h2d],
                cached * self.kv_bytes_per_token,
                TAG_H2D | r as u64,
            );
        } else {
            self.reqs[r as usize].h2d_done = true;
        }
        if req.output_tokens > 1 && !self.colocated {
            let d_rx = self.decode[self.reqs[r as usize].decode as usize].nic_rx;
            self.start_flow(
                vec![tx, d_rx],
                input * self.kv_bytes_per_token,
                TAG_KV | r as u64,
            );
        } else {
            self.reqs[r as usize].kv_done = true;
        }
    }

    fn maybe_prefill_done(&mut self, r: u32) {
        let st = &self.reqs[r as usize];
        if !(st.compute_done && st.h2d_done && st.ssd_done) || st.prefill_done {
            return;
        }
        let p = st.prefill as usize;
        let req = &self.trace[r as usize];
        let bt = self.cfg.config.block_tokens;
        let now = self.now;
        // The prompt's blocks enter the DRAM segment (tail first), then the
        // pins of this request end and eviction restores capacity.
        let pinned_dram = std::mem::take(&mut self.reqs[r as usize].pinned_dram);
        let pinned_ssd = std::mem::take(&mut self.reqs[r as usize].pinned_ssd);
        let fetched = std::mem::take(&mut self.reqs[r as usize].fetch_pinned);
        let cache = &mut self.prefill[p].cache;
        for j in (0..req.blocks.len()).rev() {
            cache.touch(req.blocks[j], &access(now, req, j, bt));
        }
        for key in &pinned_dram {
            cache.unpin(*key, now);
        }
        for key in &fetched {
            cache.unpin(*key, now);
        }
        cache.expire_leases(now);
        let mut evicted = Vec::new();
        cache.evict_to_capacity(now, &mut evicted);
        let inst = &mut self.prefill[p];
        let mut demoted = 0u64;
        if let Some(ssd) = inst.ssd.as_mut() {
            for key in &pinned_ssd {
                ssd.unpin(*key, now);
            }
            // Blocks leaving DRAM are demoted to the SSD tier (a write that
            // shares the drive's bandwidth with reads).
            for key in &evicted {
                if !ssd.touch(*key, &Access::at(now)) {
                    demoted += 1;
                }
            }
            let mut dropped = Vec::new();
            ssd.evict_to_capacity(now, &mut dropped);
        }
        let ssd_link = inst.ssd_link;
        inst.running = None;
        if demoted > 0 {
            self.start_flow(
                vec![ssd_link],
                demoted * self.block_bytes,
                TAG_SSD_WRITE | r as u64,
            );
        }
        let st = &mut self.reqs[r as usize];
        st.prefill_done = true;
        st.tokens = 1;
        st.last_token = now;
        let rec = &mut self.records[r as usize];
        rec.ttft_s = now.saturating_sub(req.arrival).as_secs_f64();
        if req.output_tokens <= 1 {
            self.finish(r);
        } else {
            self.maybe_join_decode(r);
        }
        self.try_start_prefill(p);
        if self.colocated && self.prefill[p].running.is_none() && !self.decode[p].stepping {
            self.start_decode_step(p);
        }
    }

    fn maybe_join_decode(&mut self, r: u32) {
        let st = &self.reqs[r as usize];
        if !(st.prefill_done && st.kv_done) || st.tokens >= self.trace[r as usize].output_tokens {
            return;
        }
        let d = st.decode as usize;
        self.decode[d].incoming.remove(&r);
        self.decode[d].waiting.push_back(r);
        if !self.decode[d].stepping {
            self.start_decode_step(d);
        }
    }

    /// Admits waiting requests whose KV fits, then starts an iteration.
    fn start_decode_step(&mut self, d: usize) {
        if self.colocated && self.prefill[d].running.is_some() {
            self.decode[d].stepping = false;
            return; // prefill holds the GPU; decode resumes after it
        }
        let max_batch = self.cfg.config.decode.max_batch as usize;
        let inst = &mut self.decode[d];
        let mut in_batch_kv: u64 = inst
            .batch
            .iter()
            .map(|&r| {
                self.trace[r as usize].input_tokens as u64
                    + self.trace[r as usize].output_tokens as u64
            })
            .sum();
        while let Some(&r) = inst.waiting.front() {
            let need = self.trace[r as usize].input_tokens as u64
                + self.trace[r as usize].output_tokens as u64;
            // A request larger than the whole budget runs alone rather than never.
            let fits = in_batch_kv + need <= inst.kv_capacity || inst.batch.is_empty();
            if inst.batch.len() >= max_batch || !fits {
                break;
            }
            inst.waiting.pop_front();
            inst.batch.push(r);
            in_batch_kv += need;
        }
        if inst.batch.is_empty() {
            inst.stepping = false;
            return;
        }
        let ctx: u64 = inst
            .batch
            .iter()
            .map(|&r| {
                self.trace[r as usize].input_tokens as u64 + self.reqs[r as usize].tokens as u64
            })
            .sum();
        let step = self
            .cfg
            .decode_cost
            .decode_step_time(inst.batch.len() as u32, ctx)
            .max(Nanos(1));
        inst.stepping = true;
        inst.busy = inst.busy.saturating_add(step);
        inst.busy_buckets.add(
            self.now,
            self.now.saturating_add(step),
            self.sample_interval.0,
        );
        self.push(
            self.now.saturating_add(step),
            Event::DecodeStepDone(d as u32),
        );
    }

    fn decode_step_done(&mut self, d: usize) {
        let now = self.now;
        let batch = std::mem::take(&mut self.decode[d].batch);
        let mut keep = Vec::with_capacity(batch.len());
        for r in batch {
            let st = &mut self.reqs[r as usize];
            let interval = now.saturating_sub(st.last_token).0;
            st.last_token = now;
            st.tokens += 1;
            if st.longest_cap > 0 {
                if st.longest.len() < st.longest_cap {
                    st.longest.push(Reverse(interval));
                } else if st.longest.peek().is_some_and(|m| m.0 < interval) {
                    st.longest.pop();
                    st.longest.push(Reverse(interval));
                }
            }
            if st.tokens >= self.trace[r as usize].output_tokens {
                self.finish(r);
            } else {
                keep.push(r);
            }
        }
        self.decode[d].batch = keep;
        if self.colocated {
            // Prefill first: a waiting prefill takes the GPU before the next
            // decode step (vLLM's default without chunked prefill).
            self.decode[d].stepping = false;
            self.try_start_prefill(d);
        }
        self.start_decode_step(d);
    }

    fn finish(&mut self, r: u32) {
        let req = &self.trace[r as usize];
        let st = &mut self.reqs[r as usize];
        let d = &mut self.decode[st.decode as usize];
        d.incoming.remove(&r);
        d.kv_reserved -= req.input_tokens as u64 + req.output_tokens as u64;
        d.context_tokens -= req.input_tokens as u64;
        let longest = std::mem::take(&mut st.longest);
        let tbt = if longest.is_empty() {
            0.0
        } else {
            longest.iter().map(|x| x.0 as f64).sum::<f64>() / longest.len() as f64 / 1e9
        };
        let rec = &mut self.records[r as usize];
        rec.served = true;
        rec.tbt_s = tbt;
        rec.finish_s = self.now.as_secs_f64();
    }
}

/// The facts a policy gets about block `j` of `req` when it is touched.
fn access(now: Nanos, req: &Request, j: usize, block_tokens: u32) -> Access {
    Access {
        now,
        tokens: req.block_tokens_at(j, block_tokens),
        depth: j as u32,
        cost: 1.0,
        next_use: 0,
    }
}

/// The ranks of Figure 11: the keys ranked 10th, 100th, 1000th and 10000th
/// by replica count summed over all samples.
pub const REPLICA_RANKS: [usize; 4] = [10, 100, 1000, 10_000];

/// Runs the simulation of `trace` on the resolved configuration.
///
/// Figure 11's replica series need the keys' ranks, known only at the end,
/// so the run is made twice: the first finds the ranked keys, the second
/// (identical, the simulation being deterministic) records their replica
/// counts at every sample. Memory stays proportional to the keys ever
/// cached, not to samples × keys.
pub fn simulate(
    trace: &[Request],
    cfg: Resolved,
    explain: bool,
    mut progress: impl FnMut(u64),
) -> SimOutput {
    let forced: Vec<Request>;
    let trace = match cfg.config.workload.output_tokens {
        // The paper's §5.3.2 fixes every output to 1 token to isolate prefill.
        Some(n) => {
            forced = trace
                .iter()
                .map(|r| Request {
                    output_tokens: n,
                    ..r.clone()
                })
                .collect();
            &forced[..]
        }
        None => trace,
    };
    let first = World::new(trace, cfg.clone(), false).run(|_| {});
    let mut keys: Vec<BlockKey> = super::metrics::rank_keys(&first.replica_totals, &REPLICA_RANKS)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let mut world = World::new(trace, cfg, explain);
    world.tracked = keys;
    world.run(&mut progress)
}
