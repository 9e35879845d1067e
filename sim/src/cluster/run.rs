//! One simulation run, start to end: [`simulate`] builds the world for a
//! trace and a resolved configuration, runs it, checks the end-of-run
//! invariants ([`super::invariants`]) and gathers what the run produced
//! into a [`SimOutput`]. Everything is a pure function of (trace, config,
//! seed).

use super::config::Resolved;
use super::flows::LinkKind;
use super::invariants;
use super::sampler::{replica_series, ReplicaSeries, Sample, REPLICA_RANKS};
use super::world::World;
use moonlab_core::eviction::TraceIndex;
use moonlab_core::metrics::{summarize as summarize_records, RequestRecord, RunTotals, Summary};
use moonlab_core::roles::Role;
use moonlab_core::sched::{CandidateEstimate, Slo};
use moonlab_core::{Nanos, Request};
use std::cell::OnceCell;

/// What one run produced.
pub struct SimOutput {
    pub records: Vec<RequestRecord>,
    /// Events processed (stale flow wake-ups and samples are not counted).
    pub events: u64,
    pub nic_bytes: f64,
    pub h2d_bytes: f64,
    pub ssd_bytes: f64,
    pub end: Nanos,
    pub prefill_busy_s: Vec<f64>,
    pub decode_busy_s: Vec<f64>,
    /// Prefill instances (sides, with elastic roles), then decode ones.
    pub prefill_instances: usize,
    /// Busy share of each instance in the interval that ends at each
    /// sample (`[instance][sample]`, prefill instances first).
    pub utilization: Vec<Vec<f64>>,
    pub sample_interval: Nanos,
    pub samples: Vec<Sample>,
    /// Figure 11: replica counts at every sample of the keys ranked 10th,
    /// 100th, 1000th and 10000th by replica count summed over all samples.
    pub replicas: Vec<ReplicaSeries>,
    /// `--explain`: per placed request, every candidate's estimate.
    pub explain: Vec<(u32, Vec<CandidateEstimate>, String)>,
    /// End-of-run invariants that did not hold (empty when all hold).
    pub violations: Vec<String>,
    /// The run needed more samples or role decisions than
    /// `metrics.max_samples` allows: its time series is incomplete, and
    /// this says so (the requests' results are whole).
    pub limit_reached: Option<String>,
    /// Elastic P/D: every completed role switch (time, node, new pool).
    pub role_changes: Vec<(Nanos, u32, Role)>,
    /// A vLLM baseline's name for the summary: its policy and load
    /// balancer (`vllm-chunked, round-robin`); `None` otherwise.
    pub baseline: Option<String>,
}

impl SimOutput {
    /// The run's totals, for [`moonlab_core::metrics::summarize`].
    pub fn totals(&self) -> RunTotals {
        RunTotals {
            nic_bytes: self.nic_bytes,
            h2d_bytes: self.h2d_bytes,
            ssd_bytes: self.ssd_bytes,
            prefill_busy_s: self.prefill_busy_s.clone(),
            decode_busy_s: self.decode_busy_s.clone(),
            events: self.events,
            end: self.end,
        }
    }
}

/// The run's summary (core's metric definitions over its records and
/// totals). Its `scheduler` is `scheduler`, or for a vLLM baseline (which
/// has no Conductor) the baseline's policy and load balancer.
pub fn summarize(out: &SimOutput, scheduler: &str, slo: Slo) -> Summary {
    let name = out.baseline.as_deref().unwrap_or(scheduler);
    summarize_records(&out.records, name, slo, &out.totals())
}

/// Runs the simulation of `trace` on the resolved configuration, calling
/// `progress(arrived_requests)` now and then.
pub fn simulate(
    trace: &[Request],
    cfg: Resolved,
    explain: bool,
    progress: impl FnMut(u64),
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
    let block_tokens = cfg.config.block_tokens;
    let c = &cfg.config;
    let baseline = (c.deployment == super::config::Deployment::Colocated
        && c.colocated.policy.is_vllm())
    .then(|| {
        format!(
            "{}, {}",
            c.colocated.policy.name(),
            c.colocated.routing.name()
        )
    });
    // The trace's future, built only for an offline eviction policy.
    let index = OnceCell::new();
    let mut world = World::new(
        trace,
        cfg,
        || index.get_or_init(|| TraceIndex::new(trace, block_tokens)),
        explain,
    );
    world.run(progress);
    let violations = invariants::check(&world);
    debug_assert!(
        violations.is_empty(),
        "end-of-run invariants:\n{}",
        violations.join("\n")
    );
    let grid = world.grid;
    // The end of the simulated work (trailing samples and stale wake-ups
    // are not work).
    let end = world.engine.last_processed();
    let samples = &world.samples;
    let utilization = world
        .prefill
        .iter()
        .map(|p| {
            // A pipelined group's buckets add its nodes' busy time.
            let nodes = p.stages.len() as f64;
            let mut shares = p.busy_buckets.shares(samples, grid);
            shares.iter_mut().for_each(|s| *s /= nodes);
            shares
        })
        .chain(
            world
                .decode
                .iter()
                .map(|d| d.busy_buckets.shares(samples, grid)),
        )
        .collect();
    let replicas = replica_series(
        &world.replica_totals,
        &world.store.changes,
        world.samples.len(),
        &REPLICA_RANKS,
    );
    SimOutput {
        events: world.engine.processed(),
        nic_bytes: world.net.bytes(LinkKind::NicTx),
        h2d_bytes: world.net.bytes(LinkKind::H2d),
        ssd_bytes: world.net.bytes(LinkKind::Ssd),
        end,
        prefill_busy_s: world.prefill.iter().map(|p| p.busy.as_secs_f64()).collect(),
        decode_busy_s: world.decode.iter().map(|d| d.busy.as_secs_f64()).collect(),
        utilization,
        prefill_instances: world.prefill.len(),
        sample_interval: Nanos(grid.interval),
        samples: std::mem::take(&mut world.samples),
        replicas,
        explain: world.explain.take().unwrap_or_default(),
        violations,
        limit_reached: world.limit_reached.take(),
        role_changes: world.roles.take().map(|e| e.changes).unwrap_or_default(),
        baseline,
        records: std::mem::take(&mut world.records),
    }
}
