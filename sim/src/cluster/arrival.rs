//! Arrivals: the scheduler (core's `Scheduler`, through [`View`]) places a
//! request or rejects it; the placement is then carried out by core's
//! `placement` module, as the real backend does: the decode instance's KV
//! is reserved, and a remote prefix, if the scheduler chose one, is read and
//! pinned at its source and flows NIC to NIC into the prefill node's DRAM,
//! where it becomes a replica (this is how hot prefixes get replicated).
//! The request then waits in its prefill instance's queue. On a vLLM
//! baseline's node the request joins the node's waiting queue instead
//! (`super::vllm`).

use super::request::Phase;
use super::view::View;
use super::world::{view, FlowPurpose, World};
use moonlab_core::metrics::LongestIntervals;
use moonlab_core::placement::{carry_out, finish_fetch};
use moonlab_core::roles::Role;
use moonlab_core::sched::{estimate_prefill, InstanceId, Placement, RejectReason};
use moonlab_core::BlockKey;

impl World<'_> {
    fn pool_index(&self, i: InstanceId, role: Role) -> usize {
        let (r, idx) = self.ids.role[i.0 as usize];
        debug_assert_eq!(r, role);
        idx as usize
    }

    /// Request `i` arrives: placed (and carried out) or rejected.
    pub(super) fn arrive(&mut self, i: u32) {
        let now = self.engine.now();
        let req = &self.trace[i as usize];
        let mut cands = Vec::new();
        let want = self.explain.is_some();
        let placement = {
            // The scheduler is a separate field: it may change while the
            // view borrows the rest.
            let view = view!(self);
            self.scheduler.place(req, &view, want.then_some(&mut cands))
        };
        let (prefill, decode, fetch, ttft_estimate) = match placement {
            Placement::Reject(reason) => {
                self.reject(i, reason);
                if let Some(log) = self.explain.as_mut() {
                    log.push((i, cands, format!("rejected: {}", reason.name())));
                }
                return;
            }
            Placement::Run {
                prefill,
                decode,
                fetch,
                ttft_estimate,
                ..
            } => (prefill, decode, fetch, ttft_estimate),
        };
        let p = self.pool_index(prefill, Role::Prefill);
        debug_assert!(
            self.ids.decode_candidates[p].contains(&decode),
            "the scheduler chose decode instance {} outside prefill {}'s candidates",
            decode.0,
            prefill.0
        );
        if let Some(log) = self.explain.as_mut() {
            let why = match fetch {
                Some(f) => format!(
                    "prefill {} (smallest estimated TTFT {:.3} s, fetching {} prefix blocks from {}), decode {}",
                    prefill.0,
                    ttft_estimate.as_secs_f64(),
                    f.blocks,
                    self.store.pool.info(f.from).owner.map_or(f.from.0, |o| o.0),
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
        let d = self.pool_index(decode, Role::Decode);
        if !self.vllm.is_empty() {
            // A vLLM node: no pool, no fetch; its engine admits the request
            // (and sets its KV aside) when it first schedules it.
            debug_assert_eq!(p, d);
            self.vllm_arrive(i, p);
            return;
        }
        let dram = self.store.dram(p);
        let local = self.store.local(p).to_vec();
        let mut evicted = Vec::new();
        let carried = carry_out(
            &mut self.store.pool,
            req,
            fetch,
            dram,
            &local,
            &mut self.decode[d].kv,
            self.leases.as_ref(),
            now,
            &mut evicted,
        );
        self.placed(i, p, d);
        self.reqs[i as usize].kv = Some(carried.kv);
        if !evicted.is_empty() {
            // Room made on the prefill node for the replicas.
            let demoted =
                self.store
                    .evicted_from_dram(p, &evicted, i as usize, &mut self.facts, now);
            if demoted.bytes > 0 {
                let link = self.prefill[p].ssd_link;
                self.start_flow(vec![link], demoted.bytes, FlowPurpose::SsdWrite);
            }
        }
        if let Some(plan) = carried.fetch {
            self.records[i as usize].fetch_bytes = plan.bytes;
            let holder = self
                .store
                .pool
                .info(plan.source)
                .owner
                .map(|o| self.pool_index(o, Role::Prefill));
            let mut links = Vec::with_capacity(2);
            links.extend(holder.map(|h| self.prefill[h].nic_tx));
            links.push(self.prefill[p].nic_rx);
            let bytes = plan.bytes;
            let st = &mut self.reqs[i as usize];
            st.phase = Phase::Fetching;
            st.fetch_started = now;
            st.fetch = Some(plan);
            self.start_flow(links, bytes, FlowPurpose::Fetch(i));
        }
        // The queue counts the time the request will hold the instance: its
        // prefill from the prefix it will find once its fetch, if any, is
        // done (on a pipelined group, its time in the first stage).
        let estimate = {
            let ssd_blocks = self.store.local_prefix(p, &req.blocks).ssd_blocks;
            if self.prefill[p].stages.len() > 1 {
                self.stage_occupancy(p, req, carried.prefix_blocks, ssd_blocks)
            } else {
                estimate_prefill(
                    &self.view(),
                    prefill,
                    req,
                    carried.prefix_blocks,
                    ssd_blocks,
                )
            }
        };
        self.reqs[i as usize].estimate = estimate;
        let inst = &mut self.prefill[p];
        inst.queue.push_back(i);
        inst.queued_work = inst.queued_work.saturating_add(estimate);
        self.try_start_prefill(p);
    }

    fn reject(&mut self, i: u32, reason: RejectReason) {
        let now = self.now();
        let st = &mut self.reqs[i as usize];
        st.phase = Phase::Rejected;
        st.ends += 1;
        self.ended += 1;
        let rec = &mut self.records[i as usize];
        rec.served = false;
        rec.reject_reason = Some(reason.name());
        rec.finish_s = now.as_secs_f64();
    }

    /// Request `r`'s remote prefix arrived: the source's pins end, the
    /// blocks become replicas in the prefill node's DRAM, pinned for it.
    pub(super) fn fetch_done(&mut self, r: u32) {
        let now = self.now();
        let req = &self.trace[r as usize];
        let st = &mut self.reqs[r as usize];
        let Some(plan) = st.fetch.take() else {
            debug_assert!(false, "a fetch completed for a request without one");
            return;
        };
        st.phase = Phase::Queued;
        let p = st.prefill as usize;
        self.records[r as usize].fetch_s = now.saturating_sub(st.fetch_started).as_secs_f64();
        let done = finish_fetch(
            &mut self.store.pool,
            plan,
            req,
            r as usize,
            &mut self.facts,
            now,
        );
        let bt = self.cfg.config.block_tokens;
        let arrived: Vec<BlockKey> = done.written.iter().map(|&j| req.blocks[j]).collect();
        self.store.log_fetched(&arrived);
        // What the fetch brought of the prefix the request will find.
        self.records[r as usize].fetched_tokens = done
            .written
            .iter()
            .filter(|&&j| j < done.prefix_blocks)
            .map(|&j| req.block_tokens_at(j, bt) as u64)
            .sum();
        let hold = done.hold;
        self.reqs[r as usize].fetched = hold;
        self.try_start_prefill(p);
    }

    /// Request `i` is placed: prefill on `p`, decode on `d` (a colocated
    /// vLLM node is both), counted in the decode instance's load and queued
    /// from now. The one place a placement is booked.
    pub(super) fn placed(&mut self, i: u32, p: usize, d: usize) {
        let now = self.now();
        let req = &self.trace[i as usize];
        let inst = &mut self.decode[d];
        inst.context_tokens += req.input_tokens as u64;
        inst.incoming.insert(i);
        let st = &mut self.reqs[i as usize];
        st.prefill = p as u32;
        st.decode = d as u32;
        st.queued_at = now;
        st.intervals = LongestIntervals::for_output(req.output_tokens);
        st.phase = Phase::Queued;
    }
}
