//! Decode instances: continuous batching bounded by `decode.max_batch` and
//! by the HBM left for KV. A request joins the waiting queue once its
//! prefill is done and its KV has arrived; each iteration admits waiting
//! requests whose KV fits, then emits one token per request in the batch.
//! Every token interval feeds the request's TBT (the mean of its longest
//! 10 %). In a colocated deployment (`colocated.policy: pool`) the node's
//! GPUs are shared with prefill, prefill first: a waiting prefill takes the
//! GPU between two iterations. (The vLLM baselines run their own engine,
//! [`super::vllm`], on the same instance state.)
//!
//! Fast-forward (`decode.fast_forward`, on by default when disaggregated):
//! a batch's membership changes only when a request finishes or a waiting
//! one is admitted, both at iteration boundaries. So one event covers the
//! whole run of iterations until the first request in the batch finishes
//! (a [`Stretch`]); each iteration's time is still the cost model's for
//! its own batch context, and each request still gets every interval. When
//! a request joins the waiting queue mid-stretch, the stretch is cut at the
//! end of the iteration in progress, where step-by-step simulation would
//! admit it. Between boundaries the tokens a request has emitted are
//! counted from the stretch, so the scheduler's view matches step by step.

use super::flows::LinkId;
use super::request::Phase;
use super::sampler::BusyBuckets;
use super::world::World;
use moonlab_core::cost::CostModel;
use moonlab_core::metrics::LongestIntervals;
use moonlab_core::placement::KvBudget;
use moonlab_core::Nanos;
use std::collections::{BTreeSet, VecDeque};

/// The most iterations one stretch plans (bounds its memory: a trace may
/// ask for billions of output tokens).
const MAX_STRETCH: u32 = 4096;

/// A run of decode iterations with the same batch.
#[derive(Default)]
pub struct Stretch {
    /// When the first iteration started.
    pub start: Nanos,
    /// The end of each iteration planned, in order.
    pub ends: Vec<Nanos>,
    /// Iterations that will run (the event fires at `ends[steps - 1]`).
    pub steps: usize,
}

impl Stretch {
    /// Iterations finished by `now` (an iteration ending at `now` counts:
    /// iteration ends come first among an instant's events).
    pub fn done_by(&self, now: Nanos) -> usize {
        self.ends[..self.steps].partition_point(|&e| e <= now)
    }
}

pub struct DecodeInst {
    pub batch: Vec<u32>,
    pub waiting: VecDeque<u32>,
    /// Placed here but still in prefill or KV transfer.
    pub incoming: BTreeSet<u32>,
    /// KV memory, in tokens, and the requests' reservations of it.
    pub kv: KvBudget,
    /// KV tokens of the requests placed here and not yet finished: their
    /// prompts and the tokens they have emitted (in a stretch, as of its
    /// start).
    pub context_tokens: u64,
    pub stepping: bool,
    /// The iterations in progress while `stepping`.
    pub stretch: Stretch,
    /// Bumped whenever a stretch's end event is rescheduled.
    pub generation: u32,
    pub nic_rx: LinkId,
    /// The node's host-to-device link (the cache's load into HBM).
    pub h2d: LinkId,
    pub busy: Nanos,
    pub busy_buckets: BusyBuckets,
}

impl World<'_> {
    /// Request `r` (first token out, its cache in HBM) joins its decode
    /// instance.
    pub(super) fn join_decode(&mut self, r: u32) {
        let st = &mut self.reqs[r as usize];
        st.phase = Phase::Decoding;
        let d = st.decode as usize;
        let now = self.now();
        let inst = &mut self.decode[d];
        inst.incoming.remove(&r);
        inst.waiting.push_back(r);
        if !inst.stepping {
            self.start_decode_step(d);
        } else if inst.stretch.steps > 1 {
            // Cut the stretch at the end of the iteration in progress: the
            // newcomer is admitted there, as step by step.
            let cut = inst.stretch.done_by(now) + 1;
            if cut < inst.stretch.steps {
                inst.stretch.steps = cut;
                inst.generation = inst.generation.wrapping_add(1);
                let (at, generation) = (inst.stretch.ends[cut - 1], inst.generation);
                self.engine.push(
                    at,
                    super::engine::Event::DecodeStepDone {
                        d: d as u32,
                        generation,
                    },
                );
            }
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
        let reqs = &self.reqs;
        let mut ctx: u64 = inst
            .batch
            .iter()
            .map(|&r| trace[r as usize].input_tokens as u64 + reqs[r as usize].tokens as u64)
            .sum();
        // Iterations until the first request of the batch emits its last
        // token (at most MAX_STRETCH: a longer run simply takes more events).
        let steps = if self.fast_forward {
            inst.batch
                .iter()
                .map(|&r| trace[r as usize].output_tokens - reqs[r as usize].tokens)
                .min()
                .unwrap_or(1)
                .clamp(1, MAX_STRETCH) as usize
        } else {
            1
        };
        let n = inst.batch.len() as u32;
        let stretch = &mut inst.stretch;
        stretch.start = now;
        stretch.ends.clear();
        stretch.steps = steps;
        let mut t = now;
        for _ in 0..steps {
            t = t.saturating_add(self.cfg.decode_cost.decode_step_time(n, ctx).max(Nanos(1)));
            stretch.ends.push(t);
            ctx += n as u64;
        }
        inst.stepping = true;
        inst.generation = inst.generation.wrapping_add(1);
        let generation = inst.generation;
        self.engine.push(
            t,
            super::engine::Event::DecodeStepDone {
                d: d as u32,
                generation,
            },
        );
    }

    /// The iterations of decode instance `d`'s stretch ended: each request
    /// in the batch emitted one token per iteration.
    pub(super) fn decode_step_done(&mut self, d: usize) {
        let now = self.now();
        let inst = &mut self.decode[d];
        let batch = std::mem::take(&mut inst.batch);
        let stretch = std::mem::take(&mut inst.stretch);
        let ends = &stretch.ends[..stretch.steps];
        debug_assert_eq!(ends.last(), Some(&now));
        inst.busy = inst.busy.saturating_add(now.saturating_sub(stretch.start));
        inst.busy_buckets.add(stretch.start, now, self.grid);
        inst.context_tokens += (ends.len() * batch.len()) as u64;
        let mut keep = Vec::with_capacity(batch.len());
        for r in batch {
            let st = &mut self.reqs[r as usize];
            let mut last = st.last_token;
            for &end in ends {
                st.intervals.push(end.saturating_sub(last));
                last = end;
            }
            st.last_token = now;
            st.tokens += ends.len() as u32;
            if st.tokens >= self.trace[r as usize].output_tokens {
                self.finish(r);
            } else {
                keep.push(r);
            }
        }
        self.decode[d].batch = keep;
        self.decode[d].stretch = stretch;
        if self.colocated {
            // Prefill first: a waiting prefill takes the GPU before the next
            // decode step (vLLM's default without chunked prefill).
            self.decode[d].stepping = false;
            self.try_start_prefill(d);
        }
        self.start_decode_step(d);
        self.maybe_switch(d);
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
        d.context_tokens -= req.input_tokens as u64 + st.tokens as u64;
        st.phase = Phase::Done;
        st.ends += 1;
        self.ended += 1;
        let tbt = std::mem::replace(&mut st.intervals, LongestIntervals::for_output(0)).tbt_s();
        let rec = &mut self.records[r as usize];
        rec.served = true;
        rec.tbt_s = tbt;
        rec.decode_s = now.saturating_sub(st.first_token).as_secs_f64();
        rec.finish_s = now.as_secs_f64();
        // A decode side draining towards prefill may have had this request
        // as its last (one with a single output token never steps here).
        let d = self.reqs[r as usize].decode as usize;
        self.maybe_switch(d);
    }
}
