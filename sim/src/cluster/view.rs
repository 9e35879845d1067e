//! The scheduler's window onto the simulated cluster: [`View`] implements
//! core's `ClusterView` from the model state, borrowing exactly the parts a
//! scheduler may look at. Roles and pools come from the instance table,
//! never from id arithmetic.

use super::config::Resolved;
use super::decode::DecodeInst;
use super::flows::Network;
use super::node_store::NodeStore;
use super::prefill::PrefillInst;
use super::request::RequestState;
use super::world::{FlowPurpose, Instances};
use moonlab_core::cost::CostModel;
use moonlab_core::roles::Role;
use moonlab_core::sched::{
    queue_time, ClusterView, DecodeLoad, DecodingRequest, InstanceId, LocalPrefix,
};
use moonlab_core::store::{PoolPrefix, SegmentId};
use moonlab_core::{BlockKey, Nanos, Request};

pub struct View<'a> {
    pub now: Nanos,
    pub cfg: &'a Resolved,
    pub ids: &'a Instances,
    pub store: &'a NodeStore,
    pub prefill: &'a [PrefillInst],
    pub decode: &'a [DecodeInst],
    pub trace: &'a [Request],
    pub reqs: &'a [RequestState],
    pub net: &'a Network<FlowPurpose>,
}

impl View<'_> {
    fn index(&self, i: InstanceId, role: Role) -> usize {
        let (r, idx) = self.ids.role[i.0 as usize];
        debug_assert_eq!(r, role, "instance {} asked for as {role:?}", i.0);
        idx as usize
    }
    fn decode_inst(&self, i: InstanceId) -> &DecodeInst {
        &self.decode[self.index(i, Role::Decode)]
    }
}

impl ClusterView for View<'_> {
    fn now(&self) -> Nanos {
        self.now
    }
    fn block_tokens(&self) -> u32 {
        self.cfg.config.block_tokens
    }
    fn prefill_instances(&self) -> &[InstanceId] {
        &self.ids.prefill
    }
    fn decode_instances(&self) -> &[InstanceId] {
        &self.ids.decode
    }
    fn decode_candidates(&self, prefill: InstanceId) -> &[InstanceId] {
        &self.ids.decode_candidates[self.index(prefill, Role::Prefill)]
    }
    fn local_prefix(&self, instance: InstanceId, keys: &[BlockKey]) -> LocalPrefix {
        self.store
            .local_prefix(self.index(instance, Role::Prefill), keys)
    }
    fn load_time(&self, instance: InstanceId, dram_bytes: u64, ssd_bytes: u64) -> Nanos {
        let k = self.index(instance, Role::Prefill);
        if self.store.hbm(k).is_some() {
            // vLLM prefix caching: the prefix is already in HBM.
            return Nanos::ZERO;
        }
        let p = &self.prefill[k];
        let secs = |bytes: u64, rate: f64| Nanos((bytes as f64 / rate * 1e9).ceil() as u64);
        secs(dram_bytes, self.net.link_capacity(p.h2d))
            .max(secs(ssd_bytes, self.net.link_capacity(p.ssd_link)))
    }
    fn pool_prefix(&self, keys: &[BlockKey]) -> PoolPrefix {
        self.store.pool.prefix(keys, |info| info.shared)
    }
    fn segment_owner(&self, segment: SegmentId) -> Option<InstanceId> {
        self.store.pool.info(segment).owner
    }
    fn prefill_queue_time(&self, instance: InstanceId) -> Nanos {
        let p = &self.prefill[self.index(instance, Role::Prefill)];
        queue_time(p.running.map(|_| p.running_end), self.now, p.queued_work)
    }
    fn transfer_time(&self, from: SegmentId, to: InstanceId, bytes: u64) -> Nanos {
        let Some(owner) = self.segment_owner(from) else {
            return Nanos::MAX;
        };
        // A new flow's fair share on each link it would cross, given the
        // flows there now.
        let tx = self.prefill[self.index(owner, Role::Prefill)].nic_tx;
        let rx = self.prefill[self.index(to, Role::Prefill)].nic_rx;
        let rate = self
            .net
            .share_for_new_flow(tx)
            .min(self.net.share_for_new_flow(rx));
        Nanos((bytes as f64 / rate * 1e9).ceil() as u64)
    }
    fn decode_load(&self, instance: InstanceId) -> DecodeLoad {
        let d = self.decode_inst(instance);
        // Everything placed here counts, in transfer included, with the
        // tokens emitted so far (iterations of a stretch that have ended too),
        // as `decode_requests` lists them.
        let done = if d.stepping {
            d.stretch.done_by(self.now) as u64
        } else {
            0
        };
        let load = DecodeLoad {
            requests: (d.batch.len() + d.waiting.len() + d.incoming.len()) as u32,
            context_tokens: d.context_tokens + done * d.batch.len() as u64,
            free_kv_tokens: d.kv.free_tokens(),
        };
        debug_assert!({
            let listed = self.decode_requests(instance);
            listed.len() as u32 == load.requests
                && listed.iter().map(|r| r.context_tokens).sum::<u64>() == load.context_tokens
        });
        load
    }
    fn decode_requests(&self, instance: InstanceId) -> Vec<DecodingRequest> {
        let d = self.decode_inst(instance);
        // Iterations of a stretch in progress that have ended count.
        let done = if d.stepping {
            d.stretch.done_by(self.now) as u32
        } else {
            0
        };
        let running = d.batch.iter().map(|&r| (r, done));
        let queued = d.waiting.iter().chain(d.incoming.iter()).map(|&r| (r, 0));
        running
            .chain(queued)
            .map(|(r, extra)| {
                let q = &self.trace[r as usize];
                let tokens = self.reqs[r as usize].tokens + extra;
                DecodingRequest {
                    remaining_tokens: q.output_tokens.saturating_sub(tokens),
                    context_tokens: q.input_tokens as u64 + tokens as u64,
                    reserved_kv_tokens: q.input_tokens as u64 + q.output_tokens as u64,
                }
            })
            .collect()
    }
    fn cost(&self, instance: InstanceId) -> &dyn CostModel {
        // Each pool answers with its own hardware's model.
        match self.ids.role[instance.0 as usize].0 {
            Role::Prefill => &self.cfg.prefill_cost,
            Role::Decode => &self.cfg.decode_cost,
        }
    }
}
