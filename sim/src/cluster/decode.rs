//! Decode instances: continuous batching bounded by `decode.max_batch` and
//! by the HBM left for KV. A request joins the waiting queue once its
//! prefill is done and its KV has arrived; each iteration admits waiting
//! requests whose KV fits, then emits one token per request in the batch.
//! Every token interval feeds the request's TBT (the mean of its longest
//! 10 %). In a colocated deployment the node's GPUs are shared with
//! prefill, prefill first: a waiting prefill takes the GPU between two
//! iterations.

use super::flows::LinkId;
use super::request::Phase;
use super::sampler::BusyBuckets;
use super::world::World;
use moonlab_core::cost::CostModel;
use moonlab_core::metrics::LongestIntervals;
use moonlab_core::placement::KvBudget;
use moonlab_core::Nanos;
use std::collections::{BTreeSet, VecDeque};

pub struct DecodeInst {
    pub batch: Vec<u32>,
    pub waiting: VecDeque<u32>,
    /// Placed here but still in prefill or KV transfer.
    pub incoming: BTreeSet<u32>,
    /// KV memory, in tokens, and the requests' reservations of it.
    pub kv: KvBudget,
    /// Prompt tokens of the requests placed here and not yet finished.
    pub context_tokens: u64,
    pub stepping: bool,
    pub nic_rx: LinkId,
    pub busy: Nanos,
    pub busy_buckets: BusyBuckets,
}

impl World<'_> {
    /// Request `r` (prefill done, KV here) joins its decode instance.
    pub(super) fn join_decode(&mut self, r: u32) {
        let st = &mut self.reqs[r as usize];
        if st.tokens >= self.trace[r as usize].output_tokens {
            return;
        }
        st.phase = Phase::Decoding;
        let d = st.decode as usize;
        self.decode[d].incoming.remove(&r);
        self.decode[d].waiting.push_back(r);
        if !self.decode[d].stepping {
            self.start_decode_step(d);
        }
    }

    /// Admits waiting requests whose KV fits, then starts an iteration.
    pub(super) fn start_decode_step(&mut self, d: usize) {
        if self.colocated && self.prefill[d].running.is_some() {
            self.decode[d].stepping = false;
            return; // prefill holds the GPU; decode resumes after it
        }
        let now = self.now();
        let max_batch = self.cfg.config.decode.max_batch as usize;
        let trace = self.trace;
        let need =
            |r: u32| trace[r as usize].input_tokens as u64 + trace[r as usize].output_tokens as u64;
        let inst = &mut self.decode[d];
        let capacity = inst.kv.capacity_tokens();
        let mut in_batch_kv: u64 = inst.batch.iter().map(|&r| need(r)).sum();
        while let Some(&r) = inst.waiting.front() {
            // A request larger than the whole budget runs alone rather than never.
            let fits = in_batch_kv + need(r) <= capacity || inst.batch.is_empty();
            if inst.batch.len() >= max_batch || !fits {
                break;
            }
            inst.waiting.pop_front();
            inst.batch.push(r);
            in_batch_kv += need(r);
        }
        if inst.batch.is_empty() {
            inst.stepping = false;
            return;
        }
        let ctx: u64 = inst
            .batch
            .iter()
            .map(|&r| trace[r as usize].input_tokens as u64 + self.reqs[r as usize].tokens as u64)
            .sum();
        let step = self
            .cfg
            .decode_cost
            .decode_step_time(inst.batch.len() as u32, ctx)
            .max(Nanos(1));
        inst.stepping = true;
        inst.busy = inst.busy.saturating_add(step);
        inst.busy_buckets
            .add(now, now.saturating_add(step), self.sample_interval.0);
        self.engine.push(
            now.saturating_add(step),
            super::engine::Event::DecodeStepDone(d as u32),
        );
    }

    /// An iteration of decode instance `d` ended: one token per request.
    pub(super) fn decode_step_done(&mut self, d: usize) {
        let now = self.now();
        let batch = std::mem::take(&mut self.decode[d].batch);
        let mut keep = Vec::with_capacity(batch.len());
        for r in batch {
            let st = &mut self.reqs[r as usize];
            st.intervals.push(now.saturating_sub(st.last_token));
            st.last_token = now;
            st.tokens += 1;
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

    /// Request `r` is served: its decode reservation ends and its record is
    /// complete.
    pub(super) fn finish(&mut self, r: u32) {
        let now = self.now();
        let req = &self.trace[r as usize];
        let st = &mut self.reqs[r as usize];
        let d = &mut self.decode[st.decode as usize];
        d.incoming.remove(&r);
        if let Some(kv) = st.kv.take() {
            d.kv.release(kv);
        }
        d.context_tokens -= req.input_tokens as u64;
        st.phase = Phase::Done;
        st.ends += 1;
        let tbt = std::mem::replace(&mut st.intervals, LongestIntervals::for_output(0)).tbt_s();
        let rec = &mut self.records[r as usize];
        rec.served = true;
        rec.tbt_s = tbt;
        rec.finish_s = now.as_secs_f64();
    }
}
