//! Elastic P/D: the seam for policies that move nodes between the prefill
//! and the decode pool as the load changes (the paper's seed architecture
//! adjusts the numbers of prefill and decode nodes with load). At every
//! interval a [`RolePolicy`] looks at the cluster through the scheduler's
//! [`ClusterView`] and may ask one node to switch; the backend stops giving
//! that node new work, lets it drain (its queue and running prefill, or its
//! decode batch and the requests on their way to it), and only then moves
//! it to the other pool. Policies are chosen by name ([`RoleKind`]).

use crate::sched::{ClusterView, InstanceId, Slo};
use crate::types::Nanos;
use serde::{Deserialize, Serialize};

/// A pool a node can serve in.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Prefill,
    Decode,
}

/// Move the node that `instance` stands for into the pool `to`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RoleChange {
    /// The instance the node serves as now (in the pool it leaves).
    pub instance: InstanceId,
    pub to: Role,
}

pub trait RolePolicy: Send {
    fn name(&self) -> &'static str;
    /// Called every interval with the cluster as it is; returns the switch
    /// to start now, if any. Nodes already draining are in neither pool.
    fn decide(&mut self, view: &dyn ClusterView) -> Option<RoleChange>;
}

/// The role policies moonlab ships, by configuration name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleKind {
    /// Roles never change.
    Static,
    /// [`LoadDriven`].
    LoadDriven,
}

/// The parameters of the load-driven policy: pressures are fractions of
/// the SLOs (prefill: mean estimated queueing time over the TTFT SLO;
/// decode: the slowest decode instance's iteration time at its current load
/// over the TBT SLO).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadDrivenParams {
    /// A pool is under pressure above this share of its SLO...
    pub high: f64,
    /// ... and has room to give a node below this share.
    pub low: f64,
    /// Nodes each pool keeps at least.
    pub min_prefill: u32,
    pub min_decode: u32,
}

impl Default for LoadDrivenParams {
    fn default() -> Self {
        LoadDrivenParams {
            high: 0.5,
            low: 0.25,
            min_prefill: 1,
            min_decode: 1,
        }
    }
}

impl RoleKind {
    pub fn name(self) -> &'static str {
        match self {
            RoleKind::Static => "static",
            RoleKind::LoadDriven => "load-driven",
        }
    }

    pub fn build(self, slo: Slo, params: LoadDrivenParams) -> Box<dyn RolePolicy> {
        match self {
            RoleKind::Static => Box::new(StaticRoles),
            RoleKind::LoadDriven => Box::new(LoadDriven { slo, params }),
        }
    }
}

/// Roles never change.
pub struct StaticRoles;

impl RolePolicy for StaticRoles {
    fn name(&self) -> &'static str {
        "static"
    }
    fn decide(&mut self, _view: &dyn ClusterView) -> Option<RoleChange> {
        None
    }
}

/// Moves one node per interval towards the pool under pressure, when the
/// other pool has room: prefill pressure is the mean estimated queueing
/// time of the prefill instances over the TTFT SLO; decode pressure is the
/// largest iteration time of a decode instance at its load (every request
/// placed on it) over the TBT SLO. The node that moves is the least loaded
/// of its pool (ties to the lowest id).
pub struct LoadDriven {
    pub slo: Slo,
    pub params: LoadDrivenParams,
}

impl LoadDriven {
    /// (prefill pressure, decode pressure) of the cluster now.
    pub fn pressures(&self, view: &dyn ClusterView) -> (f64, f64) {
        let ps = view.prefill_instances();
        let prefill = if ps.is_empty() {
            f64::INFINITY
        } else {
            ps.iter()
                .map(|&p| view.prefill_queue_time(p).as_secs_f64())
                .sum::<f64>()
                / ps.len() as f64
                / self.slo.ttft_s
        };
        let decode = view
            .decode_instances()
            .iter()
            .map(|&d| {
                let load = view.decode_load(d);
                step_s(view, d, load.requests, load.context_tokens) / self.slo.tbt_s
            })
            .fold(0.0, f64::max);
        (prefill, decode)
    }
}

fn step_s(view: &dyn ClusterView, d: InstanceId, requests: u32, context: u64) -> f64 {
    view.cost(d)
        .decode_step_time(requests, context)
        .as_secs_f64()
}

impl RolePolicy for LoadDriven {
    fn name(&self) -> &'static str {
        "load-driven"
    }

    fn decide(&mut self, view: &dyn ClusterView) -> Option<RoleChange> {
        let (prefill, decode) = self.pressures(view);
        let p = &self.params;
        let (ps, ds) = (view.prefill_instances(), view.decode_instances());
        if prefill > p.high && decode < p.low && ds.len() > p.min_decode as usize {
            let lightest = ds
                .iter()
                .copied()
                .min_by_key(|&d| (view.decode_load(d).requests, d))?;
            return Some(RoleChange {
                instance: lightest,
                to: Role::Prefill,
            });
        }
        if decode > p.high && prefill < p.low && ps.len() > p.min_prefill as usize {
            let lightest = ps
                .iter()
                .copied()
                .min_by_key(|&q| (view.prefill_queue_time(q), q))?;
            return Some(RoleChange {
                instance: lightest,
                to: Role::Decode,
            });
        }
        None
    }
}

/// The interval between two decisions, at least 1 ms.
pub fn interval(seconds: f64) -> Nanos {
    Nanos(((seconds * 1e9) as u64).max(1_000_000))
}
