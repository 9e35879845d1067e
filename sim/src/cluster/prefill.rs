//! Prefill instances: a queue per instance (FIFO or shortest estimated
//! prefill first), one request running at a time. At its start the cached
//! prefix is read from the node's DRAM or SSD tier and pinned; it loads into
//! HBM (a flow over the node's H2D link) while the unmatched tokens are
//! computed chunk by chunk (the cost model), and the KV streams to the
//! decode node layer by layer (a flow over both NICs, overlapped with
//! compute). The prefill ends when compute, load and any SSD read are all
//! done. The prompt's blocks then enter the node's DRAM segment, the
//! request's pins end, and eviction brings the segment back within its
//! watermarks (what leaves DRAM is demoted to the SSD tier).
//!
//! TTFT as the paper's §5.4.3 counts it: the user's first token comes once
//! (1) scheduling and queueing, (2) the layer-wise prefill, (3) the cache's
//! transfer to the decode node (what of it prefill did not hide) and (4)
//! the decode node's load of the cache from its DRAM into HBM are done;
//! (5) decoding follows. Each part is in the request's record. Without a
//! transfer (one output token, or a colocated node) the first token comes at
//! the end of prefill. (A vLLM baseline's node keeps its waiting requests in
//! this queue but runs them in its own engine, [`super::vllm`].)

use super::config::QueuePolicy;
use super::flows::LinkId;
use super::request::Phase;
use super::sampler::BusyBuckets;
use super::world::{FlowPurpose, World};
use moonlab_core::cost::{chunk_times, run_pipeline_with, CostModel};
use moonlab_core::sched::{estimate_prefill, ClusterView};
use moonlab_core::Nanos;
use std::collections::VecDeque;

pub struct PrefillInst {
    pub queue: VecDeque<u32>,
    pub running: Option<u32>,
    /// Estimated end of the running request and estimated work queued.
    pub running_end: Nanos,
    pub queued_work: Nanos,
    /// When each pipeline stage (node) of the instance is free: one stage
    /// for a plain node, `prefill.pipeline_nodes` for a pipelined group.
    pub stages: Vec<Nanos>,
    pub nic_tx: LinkId,
    pub nic_rx: LinkId,
    pub h2d: LinkId,
    pub ssd_link: LinkId,
    pub busy: Nanos,
    pub busy_buckets: BusyBuckets,
}

impl World<'_> {
    /// Starts the next ready request on prefill instance `p` if it is idle.
    pub(super) fn try_start_prefill(&mut self, p: usize) {
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
                .filter(|&&r| !self.reqs[r as usize].fetching())
                .map(|_| 0),
            // Shortest estimated prefill first among the ready requests
            // (earliest arrival among equals).
            QueuePolicy::ShortestFirst => self.prefill[p]
                .queue
                .iter()
                .enumerate()
                .filter(|(_, &r)| !self.reqs[r as usize].fetching())
                .min_by_key(|(i, &r)| (self.reqs[r as usize].estimate, *i))
                .map(|(i, _)| i),
        };
        let Some(r) = pick.and_then(|i| self.prefill[p].queue.remove(i)) else {
            return;
        };
        let now = self.now();
        let req = &self.trace[r as usize];
        let bt = self.cfg.config.block_tokens;
        let estimate = self.reqs[r as usize].estimate;
        let inst = &mut self.prefill[p];
        inst.queued_work = inst.queued_work.saturating_sub(estimate);
        self.store.advance(p, now);
        let local = self.store.local_prefix(p, &req.blocks);
        let k = local.blocks;
        // When the node expects to be free again: the same estimate the
        // scheduler and the queue use.
        let expected = estimate_prefill(&self.view(), self.prefill_id(p), req, k, local.ssd_blocks);
        let (hold, ssd_blocks, ssd_bytes) =
            self.store
                .read_prefix(p, &req.blocks[..k], self.leases.as_ref(), now);
        debug_assert_eq!(ssd_blocks, local.ssd_blocks);
        let cached = req.reusable_tokens(k, bt);
        let input = req.input_tokens as u64;
        // The chunks through the instance's stages (one stage: back to back).
        let chunks = chunk_times(
            self.cfg.prefill_cost.node(),
            input,
            cached,
            self.cfg.config.prefill.chunk_tokens as u64,
        );
        let work = chunks.iter().fold(Nanos::ZERO, |a, &t| a.saturating_add(t));
        let occupancy = self.stage_occupancy(p, req, k, local.ssd_blocks);
        let grid = self.grid;
        let inst = &mut self.prefill[p];
        let stages = inst.stages.len();
        let buckets = &mut inst.busy_buckets;
        let run = run_pipeline_with(&mut inst.stages, now, &chunks, |_, b, e| {
            buckets.add(b, e, grid)
        });
        let compute = run.end.saturating_sub(now);
        inst.running = Some(r);
        inst.running_end = if stages > 1 {
            run.first_stage_end.max(now.saturating_add(occupancy))
        } else {
            now.saturating_add(expected.max(compute))
        };
        // Busy time per node: each does its layers' share of every chunk.
        inst.busy = inst.busy.saturating_add(Nanos(work.0 / stages as u64));
        let (h2d, tx, ssd_link) = (inst.h2d, inst.nic_tx, inst.ssd_link);
        let ssd_blocks = ssd_blocks as u64;
        let decode = self.reqs[r as usize].decode;
        let (prefill_id, decode_id) = (self.prefill_id(p), self.decode_id(decode as usize));
        let st = &mut self.reqs[r as usize];
        st.prefix = hold;
        st.phase = Phase::Prefilling;
        // Compute, plus the HBM load and the SSD read when there are any.
        let loads = u8::from(cached > 0) + u8::from(ssd_blocks > 0);
        st.prefill_parts = 1 + loads;
        // A pipelined group takes its next request once its first stage is
        // done with this one's chunks (and the loads are over); a node, once
        // the prefill is done.
        st.node_parts = if stages > 1 { 1 + loads } else { 0 };
        let rec = &mut self.records[r as usize];
        rec.prefix_tokens = req.hit_tokens(k, bt);
        rec.ssd_tokens = (ssd_blocks * bt as u64).min(rec.prefix_tokens);
        rec.queue_s = now.saturating_sub(req.arrival).as_secs_f64();
        rec.compute_s = work.as_secs_f64();
        st.prefill_started = now;
        rec.prefill = Some(prefill_id.0);
        rec.decode = Some(decode_id.0);
        self.engine
            .push(run.end, super::engine::Event::PrefillComputeDone(r));
        if stages > 1 {
            self.engine
                .push(run.first_stage_end, super::engine::Event::FirstStageDone(r));
        }
        if ssd_blocks > 0 {
            // The SSD part of the prefix is read back while the layers load.
            self.start_flow(vec![ssd_link], ssd_bytes, FlowPurpose::SsdRead(r));
        }
        if cached > 0 {
            let bytes = cached * self.kv_bytes_per_token;
            self.start_flow(vec![h2d], bytes, FlowPurpose::H2d(r));
        }
        if req.output_tokens > 1 && !self.colocated {
            let d_rx = self.decode[decode as usize].nic_rx;
            let bytes = input * self.kv_bytes_per_token;
            self.start_flow(vec![tx, d_rx], bytes, FlowPurpose::KvToDecode(r));
        } else {
            self.reqs[r as usize].kv_arrived = true;
        }
    }

    /// The time a request holds a pipelined group's first stage: its
    /// chunks' compute spread over the stages, or its prefix's load into
    /// HBM if longer. The queue counts it for every request waiting there.
    pub(super) fn stage_occupancy(
        &self,
        p: usize,
        req: &moonlab_core::Request,
        blocks: usize,
        ssd_blocks: usize,
    ) -> Nanos {
        let stages = self.prefill[p].stages.len() as u64;
        let cached = req.reusable_tokens(blocks, self.cfg.config.block_tokens);
        let compute = self
            .cfg
            .prefill_cost
            .node()
            .prefill_time(req.input_tokens as u64, cached);
        let kv = self.kv_bytes_per_token;
        let ssd_tokens = req
            .hit_tokens(ssd_blocks, self.cfg.config.block_tokens)
            .min(cached);
        let load = ClusterView::load_time(
            &self.view(),
            self.prefill_id(p),
            cached * kv,
            ssd_tokens * kv,
        );
        Nanos(compute.0 / stages).max(load)
    }

    /// One part of request `r`'s prefill ended: its compute (`compute`),
    /// or its HBM load or SSD read (which the node waits for too).
    pub(super) fn prefill_part_done(&mut self, r: u32, compute: bool) {
        let st = &mut self.reqs[r as usize];
        debug_assert!(st.prefill_parts > 0);
        st.prefill_parts -= 1;
        if !compute && st.node_parts > 0 {
            st.node_parts -= 1;
        }
        let (prefill_done, node_free) = (st.prefill_parts == 0, st.node_parts == 0);
        let p = st.prefill as usize;
        if prefill_done {
            self.prefill_done(r);
        }
        if !compute
            && node_free
            && self.prefill[p].running == Some(r)
            && self.prefill[p].stages.len() > 1
        {
            self.release_prefill(p);
        }
    }

    /// A pipelined group's first stage finished request `r`'s chunks.
    pub(super) fn first_stage_done(&mut self, r: u32) {
        let st = &mut self.reqs[r as usize];
        debug_assert!(st.node_parts > 0);
        st.node_parts -= 1;
        let p = st.prefill as usize;
        if st.node_parts == 0 && self.prefill[p].running == Some(r) {
            self.release_prefill(p);
        }
    }

    /// Prefill instance `p` can take its next request.
    fn release_prefill(&mut self, p: usize) {
        self.prefill[p].running = None;
        self.try_start_prefill(p);
        if self.colocated && self.prefill[p].running.is_none() && !self.decode[p].stepping {
            self.start_decode_step(p);
        }
        self.maybe_switch(p);
    }

    /// Request `r`'s first token is out: its blocks enter the node's DRAM,
    /// its pins end, eviction restores the segment, and it moves on to
    /// decode (or ends, with a single output token).
    fn prefill_done(&mut self, r: u32) {
        let now = self.now();
        let p = self.reqs[r as usize].prefill as usize;
        let req = &self.trace[r as usize];
        // The prompt's blocks enter the DRAM segment (tail first), then the
        // pins of this request end and eviction restores capacity.
        self.store
            .write_prompt(p, r as usize, req, &mut self.facts, now);
        let st = &mut self.reqs[r as usize];
        let holds = [
            std::mem::take(&mut st.prefix),
            std::mem::take(&mut st.fetched),
        ];
        for h in holds {
            h.release(&mut self.store.pool, now);
        }
        let demoted = self.store.settle(p, r as usize, &mut self.facts, now);
        let inst = &mut self.prefill[p];
        let node = inst.stages.len() == 1;
        if node {
            // A plain node is free once the prefill is done.
            inst.running = None;
        }
        let ssd_link = inst.ssd_link;
        if demoted.bytes > 0 {
            // Demotion is a write that shares the drive with reads.
            self.start_flow(vec![ssd_link], demoted.bytes, FlowPurpose::SsdWrite);
        }
        let st = &mut self.reqs[r as usize];
        st.prefill_ended = now;
        self.records[r as usize].prefill_s = now.saturating_sub(st.prefill_started).as_secs_f64();
        if req.output_tokens <= 1 || self.colocated {
            // No cache to move: the first token is out now.
            self.first_token(r);
        } else {
            st.phase = Phase::AwaitingKv;
            if st.kv_arrived {
                self.start_decode_load(r);
            }
        }
        if node {
            self.try_start_prefill(p);
            if self.colocated && self.prefill[p].running.is_none() && !self.decode[p].stepping {
                self.start_decode_step(p);
            }
            self.maybe_switch(p);
        }
    }

    /// Request `r`'s KV stream reached its decode node's DRAM.
    pub(super) fn kv_arrived(&mut self, r: u32) {
        let st = &mut self.reqs[r as usize];
        st.kv_arrived = true;
        if st.phase == Phase::AwaitingKv {
            self.start_decode_load(r);
        }
    }

    /// Prefill done and the cache on the decode node: it loads from DRAM
    /// into HBM (a flow over the decode node's host-to-device link).
    fn start_decode_load(&mut self, r: u32) {
        let now = self.now();
        let req = &self.trace[r as usize];
        let st = &mut self.reqs[r as usize];
        st.phase = Phase::Loading;
        st.load_started = now;
        self.records[r as usize].transfer_s = now.saturating_sub(st.prefill_ended).as_secs_f64();
        let h2d = self.decode[st.decode as usize].h2d;
        let bytes = req.input_tokens as u64 * self.kv_bytes_per_token;
        self.start_flow(vec![h2d], bytes, FlowPurpose::DecodeLoad(r));
    }

    /// Request `r`'s cache is in its decode node's HBM.
    pub(super) fn decode_load_done(&mut self, r: u32) {
        let now = self.now();
        let st = &self.reqs[r as usize];
        self.records[r as usize].load_s = now.saturating_sub(st.load_started).as_secs_f64();
        self.first_token(r);
    }

    /// The user sees request `r`'s first token (TTFT); decoding follows.
    fn first_token(&mut self, r: u32) {
        let now = self.now();
        let req = &self.trace[r as usize];
        let st = &mut self.reqs[r as usize];
        st.tokens = 1;
        st.last_token = now;
        st.first_token = now;
        self.decode[st.decode as usize].context_tokens += 1;
        self.records[r as usize].ttft_s = now.saturating_sub(req.arrival).as_secs_f64();
        if req.output_tokens <= 1 {
            self.finish(r);
        } else {
            self.join_decode(r);
        }
    }
}
