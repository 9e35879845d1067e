//! The simulated cluster's state and its event dispatch. Each event goes to
//! the part of the model that owns it: arrivals to [`super::arrival`]
//! (scheduling, carrying out the placement, prefix fetches), prefill to
//! [`super::prefill`], decode iterations to [`super::decode`], a vLLM
//! baseline's iterations to [`super::vllm`], flow
//! completions through [`super::flows`] to whoever started them, samples to
//! [`super::sampler`]. The request workflow is the paper's §3.1 (Figure 3);
//! [`super::request`] follows one request through it.

use super::config::{Deployment, PoolCost, Resolved};
use super::decode::DecodeInst;
use super::engine::{Engine, Event};
use super::flows::{LinkId, LinkKind, Network};
use super::node_store::NodeStore;
use super::prefill::PrefillInst;
use super::request::RequestState;
use super::sampler::{BusyBuckets, Grid, Sample};
use super::view::View;
use super::vllm::VllmNode;
use moonlab_core::cost::CostModel;
use moonlab_core::eviction::{AccessFacts, TraceIndex};
use moonlab_core::lease::LeasePolicy;
use moonlab_core::metrics::RequestRecord;
use moonlab_core::placement::KvBudget;
use moonlab_core::roles::{interval as role_interval, Role, RoleKind, RolePolicy};
use moonlab_core::sched::{
    build_scheduler, CandidateEstimate, InstanceId, Scheduler, SchedulerParams,
};
use moonlab_core::{BlockKey, Nanos, Request};
use rustc_hash::FxHashMap;

/// The scheduler's view of a `World`, built from its fields (so that a
/// caller may borrow the scheduler mutably beside it).
macro_rules! view {
    ($w:expr) => {
        View {
            now: $w.engine.now(),
            cfg: &$w.cfg,
            ids: &$w.ids,
            store: &$w.store,
            prefill: &$w.prefill,
            decode: &$w.decode,
            trace: $w.trace,
            reqs: &$w.reqs,
            net: &$w.net,
        }
    };
}
pub(super) use view;

/// What a flow in the network is for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FlowPurpose {
    /// A remote prefix on its way to request `r`'s prefill node.
    Fetch(u32),
    /// Request `r`'s cached prefix loading from DRAM into HBM.
    H2d(u32),
    /// Request `r`'s prefix read back from its node's SSD tier.
    SsdRead(u32),
    /// Blocks demoted to an SSD tier.
    SsdWrite,
    /// Request `r`'s KV streaming to its decode node.
    KvToDecode(u32),
    /// Request `r`'s cache loading from the decode node's DRAM into HBM.
    DecodeLoad(u32),
}

/// Elastic P/D's state: the policy, each node's pool, the switches under way.
pub struct Elastic {
    pub policy: Box<dyn RolePolicy>,
    pub interval: Nanos,
    /// Per node (prefill side k and decode side k are node k), its pool.
    pub role: Vec<Role>,
    /// Per node, the pool it is draining towards.
    pub draining: Vec<Option<Role>>,
    /// Every completed switch: (time, node, new pool).
    pub changes: Vec<(Nanos, u32, Role)>,
}

/// Instance ids: prefill instances first, decode instances after them, and
/// each id's role and index in its pool.
pub struct Instances {
    pub prefill: Vec<InstanceId>,
    pub decode: Vec<InstanceId>,
    /// Per prefill instance, the decode instances it may hand requests to.
    pub decode_candidates: Vec<Vec<InstanceId>>,
    /// Per instance id: its role and index in that pool.
    pub role: Vec<(Role, u32)>,
}

pub struct World<'t> {
    pub(super) trace: &'t [Request],
    pub(super) cfg: Resolved,
    pub(super) engine: Engine,
    pub(super) net: Network<FlowPurpose>,
    pub(super) net_generation: u64,
    pub(super) store: NodeStore,
    pub(super) prefill: Vec<PrefillInst>,
    pub(super) decode: Vec<DecodeInst>,
    pub(super) ids: Instances,
    pub(super) reqs: Vec<RequestState>,
    pub(super) records: Vec<RequestRecord>,
    pub(super) explain: Option<Vec<(u32, Vec<CandidateEstimate>, String)>>,
    pub(super) scheduler: Box<dyn Scheduler>,
    pub(super) leases: Box<dyn LeasePolicy>,
    pub(super) facts: AccessFacts<'t>,
    /// Where samples fall (from the first arrival on).
    pub(super) grid: Grid,
    pub(super) samples: Vec<Sample>,
    /// Requests arrived so far (the index of the next arrival).
    pub(super) arrived: usize,
    /// Whether the cluster was idle at the last sample and at the last
    /// role decision: a second idle one skips to the next arrival.
    idle_at_sample: bool,
    idle_at_tick: bool,
    /// Role decisions taken so far (bounded like samples).
    ticks: u64,
    /// The periodic events stopped at `metrics.max_samples`: what to say.
    pub(super) limit_reached: Option<String>,
    /// Every key's replica count summed over the samples (Figure 11).
    pub(super) replica_totals: FxHashMap<BlockKey, u64>,
    /// Requests that ended (served or rejected) so far.
    pub(super) ended: usize,
    /// Elastic P/D: the role policy and each node's role.
    pub(super) roles: Option<Elastic>,
    pub(super) colocated: bool,
    /// vLLM baselines: each node's engine (empty for other deployments).
    pub(super) vllm: Vec<VllmNode>,
    /// A colocated node's cost model (prefill and decode on its GPUs).
    pub(super) node_cost: PoolCost,
    /// Decode runs of iterations in one event (see [`super::decode`]).
    pub(super) fast_forward: bool,
    pub(super) kv_bytes_per_token: u64,
}

impl<'t> World<'t> {
    /// A cluster for `trace` under `cfg`; `index` is the trace's future,
    /// asked for only by offline eviction policies.
    pub fn new(
        trace: &'t [Request],
        cfg: Resolved,
        index: impl FnOnce() -> &'t TraceIndex,
        explain: bool,
    ) -> World<'t> {
        let c = &cfg.config;
        let mut net = Network::new();
        let pnode = &cfg.prefill_node;
        let dnode = &cfg.decode_node;
        // A prefill instance is a node, or a pipelined group of `x` nodes
        // whose links add up (each node moves its layers' share of the KV).
        // With elastic roles every node has both a prefill and a decode
        // side on the same links, one of them in its pool at a time.
        let (np, nd) = (c.prefill_groups(), c.decode.instances);
        let elastic = c.roles.policy != RoleKind::Static;
        let nodes = np + nd;
        let (prefill_sides, decode_sides) = if elastic { (nodes, nodes) } else { (np, nd) };
        let x = c.prefill.pipeline_nodes.max(1);
        let xf = x as f64;
        let prefill: Vec<PrefillInst> = (0..prefill_sides)
            .map(|_| PrefillInst {
                queue: Default::default(),
                running: None,
                running_end: Nanos::ZERO,
                queued_work: Nanos::ZERO,
                stages: vec![Nanos::ZERO; x as usize],
                nic_tx: net.add_link(xf * pnode.nic_bytes_per_s(), LinkKind::NicTx),
                nic_rx: net.add_link(xf * pnode.nic_bytes_per_s(), LinkKind::NicRx),
                h2d: net.add_link(xf * pnode.h2d_bytes_per_s(), LinkKind::H2d),
                ssd_link: net.add_link(xf * c.prefill.ssd_gb_per_s * 1e9, LinkKind::Ssd),
                busy: Nanos::ZERO,
                busy_buckets: BusyBuckets::default(),
            })
            .collect();
        let decode: Vec<DecodeInst> = (0..decode_sides as usize)
            .map(|k| {
                let (nic_rx, h2d) = if elastic {
                    (prefill[k].nic_rx, prefill[k].h2d)
                } else {
                    (
                        net.add_link(dnode.nic_bytes_per_s(), LinkKind::NicRx),
                        net.add_link(dnode.h2d_bytes_per_s(), LinkKind::H2d),
                    )
                };
                DecodeInst {
                    batch: Vec::new(),
                    waiting: Default::default(),
                    incoming: Default::default(),
                    kv: KvBudget::new(cfg.decode_kv_tokens),
                    context_tokens: 0,
                    stepping: false,
                    stretch: Default::default(),
                    generation: 0,
                    nic_rx,
                    h2d,
                    busy: Nanos::ZERO,
                    busy_buckets: BusyBuckets::default(),
                }
            })
            .collect();
        let colocated = c.deployment == Deployment::Colocated;
        // Prefill sides are ids 0.., decode sides after them. In their pools
        // at first: all of them, or with elastic roles the first `np` nodes'
        // prefill sides and the others' decode sides.
        let first_decode = if elastic { np } else { 0 };
        let decode_ids: Vec<InstanceId> = (first_decode..decode_sides)
            .map(|k| InstanceId(prefill_sides + k))
            .collect();
        let ids = Instances {
            prefill: (0..np).map(InstanceId).collect(),
            decode_candidates: (0..prefill_sides)
                .map(|p| {
                    if colocated {
                        // A colocated node decodes what it prefilled.
                        vec![InstanceId(np + p)]
                    } else {
                        decode_ids.clone()
                    }
                })
                .collect(),
            decode: decode_ids,
            role: (0..prefill_sides)
                .map(|p| (Role::Prefill, p))
                .chain((0..decode_sides).map(|d| (Role::Decode, d)))
                .collect(),
        };
        let roles = elastic.then(|| Elastic {
            policy: c.roles.policy.build(c.slo, c.roles.load_driven),
            interval: role_interval(c.roles.interval_s),
            role: (0..nodes)
                .map(|k| if k < np { Role::Prefill } else { Role::Decode })
                .collect(),
            draining: vec![None; nodes as usize],
            changes: Vec::new(),
        });
        let kv_bytes_per_token = cfg.prefill_cost.kv_bytes_per_token();
        let params = SchedulerParams {
            admission: c.scheduler.admission,
            slo: c.slo,
            balancing_threshold: c.scheduler.balancing_threshold,
            seed: c.seed,
        };
        // vLLM deployments have no Conductor: a load balancer routes.
        let vllm_policy = colocated && c.colocated.policy.is_vllm();
        let routing = if vllm_policy {
            c.colocated.routing
        } else {
            c.scheduler.name
        };
        let scheduler = build_scheduler(routing, params);
        let leases = cfg.lease_kind.build(cfg.lease_params);
        // Blocks demoted to an SSD tier are accessed by key alone: their
        // shapes come from the trace's index.
        let facts = AccessFacts::for_trace(
            cfg.eviction,
            c.block_tokens,
            Box::new(cfg.prefill_cost.clone()),
            c.prefill.ssd_cache_blocks > 0,
            index,
        );
        let grid = Grid {
            origin: trace.first().map_or(Nanos::ZERO, |r| r.arrival),
            interval: ((c.metrics.sample_interval_s * 1e9) as u64).max(1),
        };
        let store = NodeStore::new(&cfg, kv_bytes_per_token, prefill_sides);
        let mut w = World {
            trace,
            engine: Engine::new(),
            net,
            net_generation: 0,
            store,
            prefill,
            decode,
            ids,
            reqs: (0..trace.len()).map(|_| RequestState::default()).collect(),
            records: trace
                .iter()
                .enumerate()
                .map(|(i, r)| RequestRecord::arrived(i as u32, r))
                .collect(),
            explain: explain.then(Vec::new),
            scheduler,
            leases,
            facts,
            grid,
            samples: Vec::new(),
            arrived: 0,
            idle_at_sample: false,
            idle_at_tick: false,
            ticks: 0,
            limit_reached: None,
            replica_totals: FxHashMap::default(),
            ended: 0,
            roles,
            colocated,
            vllm: if vllm_policy {
                (0..np).map(|_| VllmNode::default()).collect()
            } else {
                Vec::new()
            },
            node_cost: cfg
                .colocated_cost
                .clone()
                .unwrap_or_else(|| cfg.prefill_cost.clone()),
            fast_forward: c.decode.fast_forward && !colocated,
            kv_bytes_per_token,
            cfg,
        };
        // Arrivals are pushed lazily, one ahead, so the queue stays small.
        if !trace.is_empty() {
            w.engine.push(trace[0].arrival, Event::Arrival(0));
            w.engine.push(
                grid.origin.saturating_add(Nanos(grid.interval)),
                Event::Sample,
            );
            if let Some(e) = &w.roles {
                let first = trace[0].arrival.saturating_add(e.interval);
                w.engine.push(first, Event::RoleTick);
            }
        }
        w
    }

    #[inline]
    pub(super) fn now(&self) -> Nanos {
        self.engine.now()
    }

    /// The instance id of prefill side `p` (prefill sides come first).
    pub(super) fn prefill_id(&self, p: usize) -> InstanceId {
        InstanceId(p as u32)
    }

    /// The instance id of decode side `d` (after every prefill side).
    pub(super) fn decode_id(&self, d: usize) -> InstanceId {
        InstanceId((self.prefill.len() + d) as u32)
    }

    /// The scheduler's view of the cluster now.
    pub(super) fn view(&self) -> View<'_> {
        view!(self)
    }

    /// Runs to completion, calling `progress(arrived_requests)` now and then.
    pub fn run(&mut self, mut progress: impl FnMut(u64)) {
        let mut reported = 0u64;
        while let Some(e) = self.engine.pop() {
            match e {
                Event::Arrival(i) => {
                    self.engine.processed_one();
                    self.arrived = i as usize + 1;
                    if let Some(next) = self.trace.get(i as usize + 1) {
                        self.engine.push(next.arrival, Event::Arrival(i + 1));
                    }
                    self.arrive(i);
                    if (i as u64).saturating_sub(reported) >= 1000 {
                        reported = i as u64;
                        progress(reported);
                    }
                }
                Event::FlowsDue(g) if g == self.net_generation => {
                    self.engine.processed_one();
                    self.flows_due();
                }
                // A stale wake-up: the network changed since it was set.
                Event::FlowsDue(_) => {}
                Event::PrefillComputeDone(r) => {
                    self.engine.processed_one();
                    self.prefill_part_done(r, true);
                }
                Event::FirstStageDone(r) => {
                    self.engine.processed_one();
                    self.first_stage_done(r);
                }
                Event::IterationDone(n) => {
                    self.engine.processed_one();
                    self.vllm_iteration_done(n as usize);
                }
                Event::DecodeStepDone { d, generation } => {
                    if self.decode[d as usize].generation == generation {
                        self.engine.processed_one();
                        self.decode_step_done(d as usize);
                    }
                }
                Event::RoleTick => {
                    // A decision, not simulated work: not counted (the run
                    // ends at its last request or transfer).
                    self.role_tick();
                    self.ticks += 1;
                    if self.engine.has_work() && self.within_limit(self.ticks, "role decisions") {
                        if let Some(e) = &self.roles {
                            let ticks = Grid {
                                origin: self.grid.origin,
                                interval: e.interval.0,
                            };
                            let idle = self.idle();
                            let next = self.next_periodic(ticks, idle && self.idle_at_tick);
                            self.idle_at_tick = idle;
                            self.engine.push(next, Event::RoleTick);
                        }
                    }
                }
                Event::Sample => {
                    // Bookkeeping, not simulated work: not counted.
                    self.sample();
                    // Keep sampling while anything else can still happen.
                    let taken = self.samples.len() as u64;
                    if self.engine.has_work() && self.within_limit(taken, "samples") {
                        let idle = self.idle();
                        let next = self.next_periodic(self.grid, idle && self.idle_at_sample);
                        self.idle_at_sample = idle;
                        self.engine.push(next, Event::Sample);
                    }
                }
            }
        }
        progress(self.trace.len() as u64);
    }

    /// Whether another periodic event may follow `taken` ones; at
    /// `metrics.max_samples` the events stop and the run says why (the
    /// rest of the simulation still runs to its end).
    fn within_limit(&mut self, taken: u64, what: &str) -> bool {
        let max = self.cfg.config.metrics.max_samples;
        if taken < max {
            return true;
        }
        if self.limit_reached.is_none() {
            self.limit_reached = Some(format!(
                "metrics.max_samples: the run needs more than {max} {what} (simulated time reached {:.0} s, {:.0} s after the first arrival); raise metrics.max_samples or metrics.sample_interval_s (roles.interval_s for role decisions), or check for an unrealistically slow configuration",
                self.now().as_secs_f64(),
                self.now().saturating_sub(self.grid.origin).as_secs_f64()
            ));
        }
        false
    }

    /// Nothing is in flight: every request that arrived has ended and no
    /// transfer is under way. Only the next arrival can change anything.
    fn idle(&self) -> bool {
        self.ended == self.arrived && self.net.active_flows() == 0
    }

    /// The next grid point of a periodic event: one interval on, or, when
    /// the cluster has been idle since the previous one (`skip`), the last
    /// grid point at or before the next arrival. An idle stretch keeps its
    /// first and last samples (so plots show it) and nothing in between, so
    /// a trace on an epoch clock or with long gaps costs no empty samples.
    /// Role decisions skip the same way: an idle cluster puts no pressure
    /// on either pool, so the load-driven policy would decide nothing there.
    fn next_periodic(&self, grid: Grid, skip: bool) -> Nanos {
        let next = self.now().saturating_add(Nanos(grid.interval));
        match self.trace.get(self.arrived) {
            Some(r) if skip => next.max(grid.floor(r.arrival)),
            _ => next,
        }
    }

    fn sample(&mut self) {
        for p in 0..self.prefill.len() {
            let dram = self.store.pool.segment(self.store.dram(p));
            for k in dram.keys() {
                *self.replica_totals.entry(k).or_default() += 1;
            }
        }
        self.samples.push(Sample {
            time: self.now(),
            prefill_queue: self
                .prefill
                .iter()
                .enumerate()
                .map(|(k, p)| {
                    let prefilling = self.vllm.get(k).map_or(0, |v| v.prefilling.len());
                    (p.queue.len() + prefilling) as u32 + u32::from(p.running.is_some())
                })
                .collect(),
            prefill_cache_blocks: (0..self.prefill.len())
                .map(|p| self.store.cache_blocks(p) as u32)
                .collect(),
            decode_batch: self.decode.iter().map(|d| d.batch.len() as u32).collect(),
            decode_waiting: self.decode.iter().map(|d| d.waiting.len() as u32).collect(),
        });
        self.store.next_sample = self.samples.len() as u32;
    }

    fn reschedule_flows(&mut self) {
        self.net_generation += 1;
        if let Some(t) = self.net.next_completion() {
            if t != Nanos::MAX {
                let g = self.net_generation;
                let at = t.max(self.now());
                self.engine.push(at, Event::FlowsDue(g));
            }
        }
    }

    pub(super) fn start_flow(&mut self, links: Vec<LinkId>, bytes: u64, purpose: FlowPurpose) {
        let now = self.now();
        self.net.start(now, links, bytes as f64, purpose);
        self.reschedule_flows();
    }

    fn flows_due(&mut self) {
        let mut done = Vec::new();
        let now = self.now();
        self.net.complete_due(now, &mut done);
        self.reschedule_flows();
        for purpose in done {
            match purpose {
                FlowPurpose::Fetch(r) => self.fetch_done(r),
                FlowPurpose::H2d(r) | FlowPurpose::SsdRead(r) => self.prefill_part_done(r, false),
                FlowPurpose::SsdWrite => {}
                FlowPurpose::KvToDecode(r) => self.kv_arrived(r),
                FlowPurpose::DecodeLoad(r) => self.decode_load_done(r),
            }
        }
    }
}
