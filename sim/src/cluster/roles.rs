//! Elastic P/D in the simulator: at every `roles.interval_s` the role
//! policy (core's `RolePolicy`) looks at the cluster through the scheduler's
//! view and may ask one node to switch pools. The node leaves its pool at
//! once (no new work is placed on it), drains — a prefill side finishes its
//! queue and running prefill, a decode side its batch, its waiting requests
//! and those still on their way to it — and then joins the other pool.
//! Node k's prefill side is instance k and its decode side instance
//! `nodes + k`; both use the node's links, and its DRAM segment stays in the
//! pool (others may fetch what it holds) whatever its role.

use super::world::World;
use moonlab_core::roles::Role;
use moonlab_core::sched::InstanceId;

impl World<'_> {
    /// The role policy decides; a switch it asks for starts now.
    pub(super) fn role_tick(&mut self) {
        let Some(mut e) = self.roles.take() else {
            return;
        };
        let change = e.policy.decide(&self.view());
        self.roles = Some(e);
        let Some(change) = change else {
            return;
        };
        let nodes = self.prefill.len() as u32;
        let node = match change.to {
            Role::Decode => change.instance.0,
            Role::Prefill => change.instance.0 - nodes,
        };
        let Some(e) = self.roles.as_mut() else {
            return;
        };
        if e.draining[node as usize].is_some() || e.role[node as usize] == change.to {
            return;
        }
        e.draining[node as usize] = Some(change.to);
        // It leaves its pool: nothing new is placed on it.
        match change.to {
            Role::Decode => self.ids.prefill.retain(|&i| i != change.instance),
            Role::Prefill => {
                self.ids.decode.retain(|&i| i != change.instance);
                for cands in &mut self.ids.decode_candidates {
                    cands.retain(|&i| i != change.instance);
                }
            }
        }
        self.maybe_switch(node as usize);
    }

    /// Node `k` joins the pool it is draining towards once its side in the
    /// old pool has no work left.
    pub(super) fn maybe_switch(&mut self, k: usize) {
        let Some(e) = self.roles.as_ref() else {
            return;
        };
        let Some(to) = e.draining[k] else {
            return;
        };
        let drained = match to {
            Role::Decode => self.prefill[k].running.is_none() && self.prefill[k].queue.is_empty(),
            Role::Prefill => {
                let d = &self.decode[k];
                !d.stepping && d.batch.is_empty() && d.waiting.is_empty() && d.incoming.is_empty()
            }
        };
        if !drained {
            return;
        }
        let now = self.now();
        let nodes = self.prefill.len() as u32;
        match to {
            Role::Decode => {
                let id = InstanceId(nodes + k as u32);
                insert_sorted(&mut self.ids.decode, id);
                for cands in &mut self.ids.decode_candidates {
                    insert_sorted(cands, id);
                }
            }
            Role::Prefill => insert_sorted(&mut self.ids.prefill, InstanceId(k as u32)),
        }
        if let Some(e) = self.roles.as_mut() {
            e.draining[k] = None;
            e.role[k] = to;
            e.changes.push((now, k as u32, to));
        }
        if to == Role::Prefill {
            self.try_start_prefill(k);
        }
    }
}

fn insert_sorted(ids: &mut Vec<InstanceId>, id: InstanceId) {
    if let Err(at) = ids.binary_search(&id) {
        ids.insert(at, id);
    }
}
