//! The paper's baselines (§5.2, Figures 1, 6 and 7): vLLM 0.5.1 on every
//! node, prefill and decode on the same GPUs, in three configurations
//! (`colocated.policy`; the paper tests prefix caching and chunked prefill
//! separately). Each node runs one engine: iterations back to back, each
//! one forward pass whose content vLLM's scheduler picks from the node's
//! waiting queue (FIFO; `super::prefill`'s queue, so the scheduler's view
//! and the samples see it) and its running requests:
//!
//! - `vllm` (the default scheduler): while a waiting prompt can be admitted,
//!   an iteration prefills the waiting prompts that fit the token budget
//!   (`max_num_batched_tokens`; the first always fits) and every running
//!   decode waits; otherwise an iteration decodes one token of every
//!   running request. No prefix is reused.
//! - `vllm-prefix-cache` (automatic prefix caching): the same, but a
//!   prompt's leading blocks already in the node's HBM cache are not
//!   computed. The cache lives in the KV blocks running requests do not use
//!   ([`super::node_store::NodeStore::hbm`]): a running request pins its
//!   prompt's blocks; when it finishes they stay cached, evictable, LRU
//!   (vLLM's evictor; a request's deepest block goes first, as vLLM's ties
//!   break); admission evicts what it needs. No DRAM pool, no transfer.
//! - `vllm-chunked` (chunked prefill, Sarathi-Serve style): each iteration
//!   first decodes one token of every running request, then fills the rest
//!   of the token budget with prefill chunks, prompts in progress first,
//!   then newly admitted ones; a prompt's prefill spans iterations and
//!   decodes never stop. The iteration takes the cost model's time for the
//!   mixed pass (`CostModel::mixed_step_time`).
//!
//! Admission follows vLLM: a waiting request joins the running set when the
//! running set is below `decode.max_batch` (`max_num_seqs`) and its KV fits;
//! the queue's head blocks the rest (FIFO). moonlab sets aside a request's
//! KV for its prompt and its whole output at admission (vLLM allocates
//! block by block and preempts by recomputation when it runs out; setting
//! it all aside means nothing is preempted, as in the decode model of the
//! disaggregated runs). A request larger than the whole KV memory runs
//! alone rather than never. A prompt's first token comes at the end of the
//! iteration that computes its last token (TTFT); every later iteration
//! that decodes it gives one more (TBT's intervals start at the first
//! token). Prefill compute counts as the prefill side's busy time, the rest
//! of an iteration as the decode side's.

use super::config::ColocatedPolicy;
use super::request::Phase;
use super::world::World;
use moonlab_core::cost::CostModel;
use moonlab_core::eviction::Access;
use moonlab_core::placement::Hold;
use moonlab_core::sched::estimate_prefill;
use moonlab_core::Nanos;
use std::collections::VecDeque;

/// What one iteration of a node runs.
#[derive(Default)]
pub struct Iteration {
    pub start: Nanos,
    /// Every running request decodes one token in it.
    pub decode: bool,
    /// Prefill work: (request, first token, end token) — tokens `[s, e)` of
    /// its prompt.
    pub chunks: Vec<(u32, u64, u64)>,
    /// The part of the iteration that is prefill compute.
    pub prefill: Nanos,
}

/// One node's vLLM engine.
#[derive(Default)]
pub struct VllmNode {
    /// An iteration is running (its end is queued).
    pub busy: bool,
    /// Admitted requests whose prompt is not all computed, oldest first.
    pub prefilling: VecDeque<u32>,
    pub iteration: Iteration,
}

impl World<'_> {
    /// Request `i`, routed to node `n`, joins the node's waiting queue.
    pub(super) fn vllm_arrive(&mut self, i: u32, n: usize) {
        self.placed(i, n, n);
        let trace = self.trace;
        let req = &trace[i as usize];
        // The queue counts the prefill from what the node holds now.
        let local = self.store.local_prefix(n, &req.blocks);
        let estimate = estimate_prefill(&self.view(), self.prefill_id(n), req, local.blocks, 0);
        self.reqs[i as usize].estimate = estimate;
        let inst = &mut self.prefill[n];
        inst.queue.push_back(i);
        inst.queued_work = inst.queued_work.saturating_add(estimate);
        self.vllm_kick(n);
    }

    /// Starts node `n`'s next iteration if it is idle and has work.
    pub(super) fn vllm_kick(&mut self, n: usize) {
        if self.vllm[n].busy {
            return;
        }
        let now = self.now();
        let trace = self.trace;
        let input = |r: u32| trace[r as usize].input_tokens as u64;
        let budget = self.cfg.token_budget as u64;
        let max_seqs = self.cfg.config.decode.max_batch as usize;
        let running = |w: &World<'_>| w.decode[n].batch.len() + w.vllm[n].prefilling.len();
        let mut chunks: Vec<(u32, u64, u64)> = Vec::new();
        let decode;
        if self.chunked() {
            // Decodes first, one token each; then chunks of the prompts in
            // progress, oldest first; then newly admitted prompts.
            let batch = self.decode[n].batch.len() as u64;
            decode = batch > 0;
            let mut left = budget.saturating_sub(batch);
            for &r in &self.vllm[n].prefilling {
                if left == 0 {
                    break;
                }
                let s = self.reqs[r as usize].prefilled;
                let e = (s + left).min(input(r));
                chunks.push((r, s, e));
                left -= e - s;
            }
            while left > 0 {
                let Some(&r) = self.prefill[n].queue.front() else {
                    break;
                };
                if running(self) >= max_seqs || !self.vllm_admit(n, r) {
                    break;
                }
                self.prefill[n].queue.pop_front();
                self.vllm[n].prefilling.push_back(r);
                let s = self.reqs[r as usize].prefilled;
                let e = (s + left).min(input(r));
                chunks.push((r, s, e));
                left -= e - s;
            }
        } else {
            // Prefill first: the waiting prompts that fit the budget (the
            // first always does), all decodes paused; else a decode step.
            let mut tokens = 0u64;
            while let Some(&r) = self.prefill[n].queue.front() {
                if !chunks.is_empty() && tokens + input(r) > budget {
                    break;
                }
                if running(self) >= max_seqs || !self.vllm_admit(n, r) {
                    break;
                }
                self.prefill[n].queue.pop_front();
                self.vllm[n].prefilling.push_back(r);
                chunks.push((r, self.reqs[r as usize].prefilled, input(r)));
                tokens += input(r);
            }
            decode = chunks.is_empty() && !self.decode[n].batch.is_empty();
        }
        if chunks.is_empty() && !decode {
            return; // idle until an arrival
        }
        let chunked = self.chunked();
        let cost = &self.node_cost;
        let (requests, context) = if decode {
            let reqs = &self.reqs;
            let batch = &self.decode[n].batch;
            let ctx = batch
                .iter()
                .map(|&r| input(r) + reqs[r as usize].tokens as u64)
                .sum();
            (batch.len() as u32, ctx)
        } else {
            (0, 0)
        };
        let prefill = chunks.iter().fold(Nanos::ZERO, |t, &(_, s, e)| {
            t.saturating_add(cost.prefill_time(e, s))
        });
        let time = if chunked {
            let bounds: Vec<(u64, u64)> = chunks.iter().map(|&(_, s, e)| (s, e)).collect();
            cost.mixed_step_time(&bounds, requests, context)
        } else if decode {
            cost.decode_step_time(requests, context)
        } else {
            prefill
        }
        .max(Nanos(1));
        let node = &mut self.vllm[n];
        node.busy = true;
        node.iteration = Iteration {
            start: now,
            decode,
            chunks,
            prefill: prefill.min(time),
        };
        self.engine.push(
            now.saturating_add(time),
            super::engine::Event::IterationDone(n as u32),
        );
    }

    /// Admits waiting request `r` on node `n` if the running set has room
    /// for its KV: sets the KV aside (with prefix caching: pins the cached
    /// prefix and evicts what the rest needs). False leaves it waiting.
    fn vllm_admit(&mut self, n: usize, r: u32) -> bool {
        let now = self.now();
        let trace = self.trace;
        let req = &trace[r as usize];
        let bt = self.cfg.config.block_tokens;
        let kvb = self.kv_bytes_per_token;
        let total = req.input_tokens as u64 + req.output_tokens as u64;
        let kv = &self.decode[n].kv;
        let (reserved, capacity) = (kv.reserved_tokens(), kv.capacity_tokens());
        // A request larger than the whole KV memory runs alone rather than never.
        let alone = kv.reservations() == 0;
        let (k, hold, need) = match self.store.hbm(n) {
            None => (0, Hold::new(), total),
            Some(seg) => {
                let k = self.store.pool.segment(seg).prefix_len(&req.blocks);
                // Pinned deepest first, so that once released the deepest
                // block is the least recently used (vLLM evicts it first).
                let mut hold = Hold::new();
                for j in (0..k).rev() {
                    let pinned = hold.pin(&mut self.store.pool, seg, req.blocks[j]);
                    debug_assert!(pinned);
                }
                let cached: u64 = (0..k).map(|j| req.block_tokens_at(j, bt) as u64).sum();
                (k, hold, total - cached.min(req.input_tokens as u64))
            }
        };
        let fits = match self.store.hbm(n) {
            None => reserved + need <= capacity,
            Some(seg) => {
                let pinned = self.store.pool.segment(seg).pinned_bytes();
                pinned + (reserved + need) * kvb <= capacity * kvb
            }
        };
        if !fits && !alone {
            hold.release(&mut self.store.pool, now);
            return false;
        }
        if let Some(seg) = self.store.hbm(n) {
            // Cached blocks no running request uses make room, LRU first.
            let mut evicted = Vec::new();
            let room = self.store.pool.segment_mut(seg).make_room(
                (reserved + need) * kvb,
                now,
                &mut evicted,
            );
            debug_assert!(room || alone);
        }
        let kv = self.decode[n].kv.reserve(need);
        let (prefill_id, decode_id) = (self.prefill_id(n), self.decode_id(n));
        let st = &mut self.reqs[r as usize];
        st.kv = Some(kv);
        st.prefix = hold;
        st.prefilled = req.reusable_tokens(k, bt);
        st.phase = Phase::Prefilling;
        st.prefill_started = now;
        let estimate = st.estimate;
        let inst = &mut self.prefill[n];
        inst.queued_work = inst.queued_work.saturating_sub(estimate);
        let rec = &mut self.records[r as usize];
        rec.prefix_tokens = req.hit_tokens(k, bt);
        rec.queue_s = now.saturating_sub(req.arrival).as_secs_f64();
        rec.prefill = Some(prefill_id.0);
        rec.decode = Some(decode_id.0);
        self.vllm_check_memory(n);
        true
    }

    /// Node `n`'s iteration ended: every decoding request emitted a token,
    /// and each chunk's tokens have their KV; a prompt whose last token was
    /// in it emits its first token.
    pub(super) fn vllm_iteration_done(&mut self, n: usize) {
        let now = self.now();
        let grid = self.grid;
        let it = std::mem::take(&mut self.vllm[n].iteration);
        self.vllm[n].busy = false;
        let split = it.start.saturating_add(it.prefill);
        if it.prefill > Nanos::ZERO {
            let p = &mut self.prefill[n];
            p.busy = p.busy.saturating_add(it.prefill);
            p.busy_buckets.add(it.start, split, grid);
        }
        if now > split {
            let d = &mut self.decode[n];
            d.busy = d.busy.saturating_add(now.saturating_sub(split));
            d.busy_buckets.add(split, now, grid);
        }
        if it.decode {
            let batch = std::mem::take(&mut self.decode[n].batch);
            self.decode[n].context_tokens += batch.len() as u64;
            let mut keep = Vec::with_capacity(batch.len());
            for r in batch {
                let st = &mut self.reqs[r as usize];
                st.intervals.push(now.saturating_sub(st.last_token));
                st.last_token = now;
                st.tokens += 1;
                if st.tokens >= self.trace[r as usize].output_tokens {
                    self.vllm_finish(r);
                } else {
                    keep.push(r);
                }
            }
            self.decode[n].batch = keep;
        }
        let cost = &self.node_cost;
        let mut done = Vec::new();
        for &(r, s, e) in &it.chunks {
            let compute = cost.prefill_time(e, s).as_secs_f64();
            self.records[r as usize].compute_s += compute;
            self.reqs[r as usize].prefilled = e;
            if e >= self.trace[r as usize].input_tokens as u64 {
                done.push(r);
            }
        }
        for r in done {
            self.vllm_prefill_done(n, r);
        }
        self.vllm_kick(n);
    }

    /// Request `r`'s prompt is all computed: with prefix caching its blocks
    /// enter the node's cache (pinned until it finishes); its first token
    /// is out, and it decodes from the next iteration on.
    fn vllm_prefill_done(&mut self, n: usize, r: u32) {
        let now = self.now();
        let trace = self.trace;
        let req = &trace[r as usize];
        let node = &mut self.vllm[n];
        if let Some(i) = node.prefilling.iter().position(|&x| x == r) {
            node.prefilling.remove(i);
        }
        if self.store.hbm(n).is_some() {
            self.vllm_cache_prompt(n, r);
        }
        let st = &mut self.reqs[r as usize];
        st.prefill_ended = now;
        st.tokens = 1;
        st.last_token = now;
        st.first_token = now;
        let rec = &mut self.records[r as usize];
        rec.prefill_s = now.saturating_sub(st.prefill_started).as_secs_f64();
        rec.ttft_s = now.saturating_sub(req.arrival).as_secs_f64();
        let inst = &mut self.decode[n];
        inst.context_tokens += 1;
        if req.output_tokens <= 1 {
            self.vllm_finish(r);
        } else {
            st.phase = Phase::Decoding;
            inst.incoming.remove(&r);
            inst.batch.push(r);
        }
    }

    /// Writes request `r`'s prompt blocks into node `n`'s HBM cache: what
    /// its KV reservation set aside for them becomes cached blocks, pinned
    /// for it (a block another request wrote meanwhile is shared); the
    /// reservation keeps the output.
    fn vllm_cache_prompt(&mut self, n: usize, r: u32) {
        let Some(seg) = self.store.hbm(n) else {
            return;
        };
        let now = self.now();
        let trace = self.trace;
        let req = &trace[r as usize];
        let bt = self.cfg.config.block_tokens;
        let total = req.input_tokens as u64 + req.output_tokens as u64;
        let inst = &mut self.decode[n];
        if total > inst.kv.capacity_tokens() {
            return; // larger than the whole KV memory: it ran alone, uncached
        }
        let in_blocks: u64 = (0..req.blocks.len())
            .map(|j| req.block_tokens_at(j, bt) as u64)
            .sum();
        let st = &mut self.reqs[r as usize];
        if let Some(kv) = st.kv.take() {
            inst.kv.release(kv);
        }
        let rest = total - in_blocks.min(req.input_tokens as u64);
        st.kv = Some(inst.kv.reserve(rest));
        // Written and pinned deepest first (see `vllm_admit`).
        let mut hold = Hold::new();
        for j in (0..req.blocks.len()).rev() {
            let key = req.blocks[j];
            let bytes = self.store.object_bytes(req, j);
            self.store
                .pool
                .segment_mut(seg)
                .access(key, bytes, &Access::at(now));
            let pinned = hold.pin(&mut self.store.pool, seg, key);
            debug_assert!(pinned);
        }
        let old = std::mem::replace(&mut self.reqs[r as usize].prefix, hold);
        old.release(&mut self.store.pool, now);
        self.vllm_check_memory(n);
    }

    /// Request `r` is served: its cached blocks become evictable, its KV
    /// comes back, its record is complete.
    fn vllm_finish(&mut self, r: u32) {
        let now = self.now();
        let hold = std::mem::take(&mut self.reqs[r as usize].prefix);
        hold.release(&mut self.store.pool, now);
        self.finish(r);
    }

    /// Checks that node `n`'s running requests' KV and its cached blocks fit
    /// its KV memory (unless one request larger than all of it runs alone);
    /// a breach is reported by the end-of-run invariants.
    fn vllm_check_memory(&mut self, n: usize) {
        let kv = &self.decode[n].kv;
        if kv.reservations() <= 1 && kv.reserved_tokens() > kv.capacity_tokens() {
            return;
        }
        let kvb = self.kv_bytes_per_token;
        let cached = self
            .store
            .hbm(n)
            .map_or(0, |seg| self.store.pool.segment(seg).used_bytes());
        let used = cached + kv.reserved_tokens() * kvb;
        if used > kv.capacity_tokens() * kvb {
            let at = self.now().as_secs_f64();
            self.store.over_capacity.push(format!(
                "node {n} at {at:.6} s: cached blocks ({cached} bytes) and running requests' KV ({} tokens) exceed its KV memory ({} tokens)",
                kv.reserved_tokens(),
                kv.capacity_tokens()
            ));
        }
    }

    fn chunked(&self) -> bool {
        self.cfg.config.colocated.policy == ColocatedPolicy::VllmChunked
    }
}
