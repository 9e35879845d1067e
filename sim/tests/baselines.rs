//! The paper's vLLM baselines (`colocated.policy`) against hand-computed
//! timelines from the analytic cost model: prefix caching's reuse and its
//! eviction under memory pressure, the default scheduler's prefill stall
//! against chunked prefill's bounded iterations; then the invariants on the
//! bundled trace and determinism.

mod common;
use common::bundled;

use moonlab_core::cost::{AnalyticCost, CostModel, ModelSpec, NodeSpec};
use moonlab_core::{BlockKey, Nanos, Request};
use moonlab_sim::cluster::{simulate, summarize, ClusterConfig, SimOutput};

fn req(ms: u64, input: u32, output: u32, blocks: &[u64]) -> Request {
    Request {
        arrival: Nanos::from_millis(ms),
        input_tokens: input,
        output_tokens: output,
        blocks: blocks.iter().map(|&b| BlockKey(b)).collect(),
    }
}

/// A colocated cluster of `nodes` 8×A800 nodes running `policy`.
fn config(nodes: u32, policy: &str, extra: &[&str]) -> ClusterConfig {
    let mut sets = vec![
        "deployment=colocated".to_string(),
        format!("prefill.instances={nodes}"),
        format!("decode.instances={nodes}"),
        format!("colocated.policy={policy}"),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    ClusterConfig::load("", "test", &sets).unwrap()
}

fn run(trace: &[Request], c: &ClusterConfig) -> SimOutput {
    let out = simulate(trace, c.resolve().unwrap(), false, |_| {});
    assert!(out.violations.is_empty(), "{:#?}", out.violations);
    out
}

/// The node's cost model: LLaMA3-70B on 8×A800 at MFU 0.5 (the defaults).
fn a800() -> AnalyticCost {
    AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 2e-9 * b.abs().max(1.0)
}

fn s(t: Nanos) -> f64 {
    t.as_secs_f64()
}

/// TBT as §5.1 defines it: the mean of the longest 10 % of the intervals.
fn tbt(intervals: &[Nanos]) -> f64 {
    let mut v: Vec<u64> = intervals.iter().map(|t| t.0).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    let k = v.len().div_ceil(10);
    v[..k].iter().map(|&x| x as f64).sum::<f64>() / k as f64 / 1e9
}

#[test]
fn prefix_caching_computes_only_the_uncached_suffix() {
    // A and B share their first two blocks (1024 tokens); B arrives long
    // after A finished, on the same node. Each prefill runs alone on an
    // idle node: TTFT = its prefill iteration.
    let trace = vec![req(0, 1500, 2, &[1, 2, 3]), req(5000, 1500, 2, &[1, 2, 9])];
    let cost = a800();
    let full = s(cost.prefill_time(1500, 0));
    let suffix = s(cost.prefill_time(1500, 1024));

    // vLLM without prefix caching: both compute the full prompt.
    let plain = run(&trace, &config(1, "vllm", &[]));
    for r in &plain.records {
        assert!(r.served && r.prefix_tokens == 0);
        assert!(close(r.ttft_s, full), "{} vs {full}", r.ttft_s);
        assert!(close(r.compute_s, full) && close(r.prefill_s, full));
        assert_eq!((r.queue_s, r.transfer_s, r.load_s), (0.0, 0.0, 0.0));
        // One decode iteration of the request alone: its one interval.
        let step = s(cost.decode_step_time(1, 1501));
        assert!(close(r.tbt_s, step), "{} vs {step}", r.tbt_s);
    }
    let c = config(1, "vllm", &[]);
    assert_eq!(summarize(&plain, "x", c.slo).hit_rate, 0.0);
    assert_eq!(summarize(&plain, "x", c.slo).scheduler, "vllm, round-robin");

    // With automatic prefix caching A's blocks stay in the node's HBM: B
    // computes only tokens 1024..1500, with no load (the cache is in HBM)
    // and nothing on the network.
    let c = config(1, "vllm-prefix-cache", &[]);
    let apc = run(&trace, &c);
    let (a, b) = (&apc.records[0], &apc.records[1]);
    assert!(close(a.ttft_s, full));
    assert_eq!(b.prefix_tokens, 1024);
    assert!(close(b.ttft_s, suffix), "{} vs {suffix}", b.ttft_s);
    assert!(close(b.compute_s, suffix) && b.ttft_s < 0.5 * a.ttft_s);
    assert_eq!((apc.h2d_bytes, apc.nic_bytes), (0.0, 0.0));
    let sum = summarize(&apc, "x", c.slo);
    assert!((sum.hit_rate - 1024.0 / 3000.0).abs() < 1e-12);

    // The cache is local: on two nodes behind round-robin B lands on the
    // other node and misses; a cache-aware balancer sends it to A's node.
    let rr = run(&trace, &config(2, "vllm-prefix-cache", &[]));
    assert_eq!(
        (rr.records[0].prefill, rr.records[1].prefill),
        (Some(0), Some(1))
    );
    assert_eq!(rr.records[1].prefix_tokens, 0);
    assert!(close(rr.records[1].ttft_s, full));
    let aware = run(
        &trace,
        &config(
            2,
            "vllm-prefix-cache",
            &["colocated.routing=local-cache-aware"],
        ),
    );
    assert_eq!(aware.records[1].prefill, Some(0));
    assert!(close(aware.records[1].ttft_s, suffix));
}

#[test]
fn the_prefix_cache_gives_way_to_running_requests() {
    // A node with 3044 tokens of KV memory ((8 × 80 GB − 141.2 GB) × 0.002
    // at 320 KiB a token), 512-token blocks.
    let tight = ["decode.kv_memory_fraction=0.002"];
    let c = config(1, "vllm-prefix-cache", &tight);
    let kv_tokens = c.resolve().unwrap().decode_kv_tokens;
    assert_eq!(kv_tokens, ((640e9 - 141.2e9) * 0.002 / 327_680.0) as u64);
    assert_eq!(kv_tokens, 3044);
    let trace = vec![
        // A leaves blocks 1, 2 cached (1024 tokens).
        req(0, 1024, 2, &[1, 2]),
        // B needs 2048 + 2 tokens: 1024 + 2050 > 3044, so the cache gives
        // up A's deepest block, 2 (LRU, deepest first as vLLM's evictor).
        req(5_000, 2048, 2, &[10, 11, 12, 13]),
        // C repeats A: only block 1 is left of its prefix.
        req(10_000, 1024, 2, &[1, 2]),
        // R1 runs long (400 tokens): its 2048 prompt tokens are pinned and
        // 400 set aside, so R2 (1026 tokens) cannot fit beside it (2048 +
        // 400 + 1026 > 3044) and waits, although the cache holds
        // evictable blocks: running requests come first.
        req(20_000, 2048, 400, &[20, 21, 22, 23]),
        req(20_500, 1024, 2, &[30, 31]),
    ];
    let out = run(&trace, &c);
    let r = &out.records;
    let cost = a800();
    assert_eq!(
        r.iter().map(|r| r.prefix_tokens).collect::<Vec<_>>(),
        vec![0, 0, 512, 0, 0]
    );
    assert!(close(r[2].ttft_s, s(cost.prefill_time(1024, 512))));
    // R2 starts when R1 ends, at the end of R1's last iteration.
    assert!(
        (r[4].queue_s - (r[3].finish_s - 20.5)).abs() < 2e-9,
        "{} vs {}",
        r[4].queue_s,
        r[3].finish_s - 20.5
    );
    assert!(r[4].queue_s > 3.0);
    let sum = summarize(&out, "x", c.slo);
    assert!(
        (sum.hit_rate - 512.0 / 7168.0).abs() < 1e-12,
        "{}",
        sum.hit_rate
    );
    // With the default memory nothing is evicted: C finds all of A's prefix
    // (1024 tokens, 1023 of them reusable) and R2 does not wait.
    let roomy = run(&trace, &config(1, "vllm-prefix-cache", &[]));
    let r = &roomy.records;
    assert_eq!(r[2].prefix_tokens, 1024);
    assert!(close(r[2].ttft_s, s(cost.prefill_time(1024, 1023))));
    assert!(r[4].queue_s < 1.0, "{}", r[4].queue_s);
    let sum = summarize(&roomy, "x", c.slo);
    assert!((sum.hit_rate - 1024.0 / 7168.0).abs() < 1e-12);
}

/// A decodes 50 tokens (1024-token prompt); B's 16,384-token prompt
/// arrives at 200 ms, mid-way, and has 2 output tokens.
fn stall_trace() -> Vec<Request> {
    vec![
        req(0, 1024, 50, &[1, 2]),
        req(200, 16_384, 2, &(10..42).collect::<Vec<_>>()),
    ]
}

#[test]
fn the_default_scheduler_pauses_decodes_for_a_whole_prefill() {
    // By hand: A's prefill [0, pa); then A decodes one token per iteration.
    // The first iteration to start after 200 ms prefills B alone (prefill
    // first), so one of A's intervals holds B's whole prefill plus the
    // next step, in which B (then decoding) takes part.
    let cost = a800();
    let arrival_b = Nanos::from_millis(200);
    let mut t = cost.prefill_time(1024, 0);
    let (mut tokens, mut last) = (1u32, t);
    let mut intervals = Vec::new();
    let (mut b_first, mut b_decoding) = (None, false);
    while tokens < 50 {
        if b_first.is_none() && t > arrival_b {
            t = t.saturating_add(cost.prefill_time(16_384, 0));
            b_first = Some(t);
            b_decoding = true;
            continue;
        }
        let a_ctx = 1024 + tokens as u64;
        t = t.saturating_add(if b_decoding {
            cost.decode_step_time(2, a_ctx + 16_385)
        } else {
            cost.decode_step_time(1, a_ctx)
        });
        b_decoding = false;
        intervals.push(t.saturating_sub(last));
        last = t;
        tokens += 1;
    }
    let out = run(&stall_trace(), &config(1, "vllm", &[]));
    let (a, b) = (&out.records[0], &out.records[1]);
    assert!(
        close(a.tbt_s, tbt(&intervals)),
        "{} vs {}",
        a.tbt_s,
        tbt(&intervals)
    );
    assert!(close(a.finish_s, s(t)));
    let b_first = b_first.unwrap();
    assert!(close(b.ttft_s, s(b_first.saturating_sub(arrival_b))));
    // The stalled interval holds B's whole prefill (2.9 s).
    let prefill_b = s(cost.prefill_time(16_384, 0));
    assert!(intervals.iter().any(|&i| s(i) > prefill_b));
    assert!(a.tbt_s > prefill_b / 5.0);
    assert_eq!(out.nic_bytes, 0.0);
}

#[test]
fn chunked_prefill_bounds_every_interval_by_the_budgets_iteration() {
    // By hand, 512 tokens per iteration (vLLM's default with chunked
    // prefill): A's prompt in two chunks; then each iteration decodes A
    // (and B once its prompt is done) and gives B's prompt the rest of the
    // budget, 511 tokens, until its 16,384 tokens are computed: 33
    // iterations, each a mixed pass.
    let cost = a800();
    let arrival_b = Nanos::from_millis(200);
    let mut t = cost
        .mixed_step_time(&[(0, 512)], 0, 0)
        .saturating_add(cost.mixed_step_time(&[(512, 1024)], 0, 0));
    let a_first = t;
    let (mut tokens, mut last) = (1u32, t);
    let mut intervals = Vec::new();
    let (mut b_done, mut b_first, mut b_decoding, mut b_iterations) = (0u64, None, false, 0);
    let mut longest_chunk = Nanos::ZERO;
    while tokens < 50 {
        let n = 1 + u32::from(b_decoding);
        let ctx = 1024 + tokens as u64 + if b_decoding { 16_385 } else { 0 };
        let mut chunks = Vec::new();
        if t > arrival_b && b_done < 16_384 {
            let left = 512 - n as u64;
            chunks.push((b_done, (b_done + left).min(16_384)));
        }
        let step = cost.mixed_step_time(&chunks, n, ctx);
        t = t.saturating_add(step);
        intervals.push(t.saturating_sub(last));
        last = t;
        tokens += 1;
        b_decoding = false;
        if let Some(&(_, e)) = chunks.first() {
            longest_chunk = longest_chunk.max(step);
            b_iterations += 1;
            b_done = e;
            if e == 16_384 {
                b_first = Some(t);
                b_decoding = true;
            }
        }
    }
    assert_eq!(b_iterations, 33);
    let c = config(1, "vllm-chunked", &[]);
    assert_eq!(c.resolve().unwrap().token_budget, 512);
    let out = run(&stall_trace(), &c);
    let (a, b) = (&out.records[0], &out.records[1]);
    assert!(close(a.ttft_s, s(a_first)));
    assert!(
        close(a.tbt_s, tbt(&intervals)),
        "{} vs {}",
        a.tbt_s,
        tbt(&intervals)
    );
    assert!(close(a.finish_s, s(t)));
    let b_first = b_first.unwrap();
    assert!(close(b.ttft_s, s(b_first.saturating_sub(arrival_b))));
    // No interval is longer than the budget's longest iteration (B's last
    // full chunk: 511 tokens attending to 16k of context, A decoding
    // beside it) — a tenth of the default scheduler's stall.
    let bound = cost.mixed_step_time(&[(16_384 - 511, 16_384)], 1, 1024 + 50);
    assert!(longest_chunk <= bound);
    assert!(intervals.iter().all(|&i| i <= bound));
    assert!(a.tbt_s <= s(bound) && s(bound) < 0.1 * s(cost.prefill_time(16_384, 0)));
    // B's first token comes later than with the default scheduler: its
    // prompt shares 33 iterations with A's decodes.
    let default = run(&stall_trace(), &config(1, "vllm", &[]));
    assert!(b.ttft_s > default.records[1].ttft_s);
    assert!(a.tbt_s < default.records[0].tbt_s / 3.0);
    // The prompt's compute, chunk by chunk, is Eq. 1's for the whole
    // prompt (up to rounding of each chunk to the nanosecond).
    assert!((b.compute_s - s(cost.prefill_time(16_384, 0))).abs() < 40e-9);
}

#[test]
fn a_budget_smaller_than_the_batch_is_refused_and_larger_budgets_batch_prefills() {
    let e = ClusterConfig::load(
        "",
        "c",
        &[
            "deployment=colocated".into(),
            "colocated.policy=vllm-chunked".into(),
            "colocated.token_budget=64".into(),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with(
            "colocated.token_budget: 64 (chunked prefill needs at least decode.max_batch, 128"
        ),
        "{e}"
    );
    // The default scheduler prefills the waiting prompts that fit the
    // budget in one iteration: two prompts arrive while a first one's
    // prefill runs; with room for both they get their first tokens
    // together, at the end of one iteration that computes both.
    let trace = vec![
        req(0, 4096, 2, &[1, 2, 3, 4, 5, 6, 7, 8]),
        req(10, 1000, 2, &[20, 21]),
        req(10, 1000, 2, &[30, 31]),
    ];
    let cost = a800();
    let first = cost.prefill_time(4096, 0);
    let both = first
        .saturating_add(cost.prefill_time(1000, 0))
        .saturating_add(cost.prefill_time(1000, 0));
    let out = run(&trace, &config(1, "vllm", &[]));
    for r in &out.records[1..] {
        assert!(close(r.ttft_s, s(both) - 0.01), "{}", r.ttft_s);
    }
    // A budget of 1500 tokens takes one of them at a time (the first
    // prompt, longer than the budget, ran alone), each prefill still
    // ahead of the decodes waiting.
    let out = run(&trace, &config(1, "vllm", &["colocated.token_budget=1500"]));
    let one = first.saturating_add(cost.prefill_time(1000, 0));
    assert!(close(out.records[1].ttft_s, s(one) - 0.01));
    assert!(close(out.records[2].ttft_s, s(both) - 0.01));
    assert!(out.records[1].ttft_s < out.records[2].ttft_s);
}

#[test]
fn invariants_hold_for_every_baseline_on_the_conversation_trace() {
    // Each baseline on 4 nodes, loaded enough that admission waits for KV
    // and the prefix cache evicts (a tenth of the KV memory for one run),
    // with each load balancer and with SLO admission.
    let conv = bundled("conversation_trace.jsonl", 3000);
    let runs: [(&str, &[&str]); 7] = [
        ("vllm", &[]),
        ("vllm", &["colocated.routing=least-loaded"]),
        ("vllm-prefix-cache", &[]),
        (
            "vllm-prefix-cache",
            &[
                "decode.kv_memory_fraction=0.1",
                "colocated.routing=local-cache-aware",
            ],
        ),
        (
            "vllm-prefix-cache",
            &["colocated.routing=random", "scheduler.admission=slo"],
        ),
        ("vllm-chunked", &[]),
        (
            "vllm-chunked",
            &["colocated.token_budget=2048", "decode.step_overhead_ms=2"],
        ),
    ];
    for (policy, extra) in runs {
        let c = config(4, policy, extra);
        let out = simulate(&conv, c.resolve().unwrap(), false, |_| {});
        assert!(
            out.violations.is_empty(),
            "{policy} {extra:?}: {:#?}",
            out.violations
        );
        assert!(
            out.records
                .iter()
                .all(|r| r.served || r.reject_reason.is_some()),
            "{policy} {extra:?}"
        );
        let sum = summarize(&out, "x", c.slo);
        if policy == "vllm-prefix-cache" {
            assert!(sum.hit_rate > 0.0, "{extra:?}");
        } else {
            assert_eq!(sum.hit_rate, 0.0);
        }
        for r in out.records.iter().filter(|r| r.served) {
            assert!(close(r.queue_s + r.prefill_s, r.ttft_s), "{policy}: {r:?}");
            assert_eq!((r.transfer_s, r.load_s, r.fetch_bytes), (0.0, 0.0, 0));
        }
        assert_eq!(out.nic_bytes, 0.0);
    }
}

#[test]
fn same_inputs_same_outputs_for_the_baselines() {
    let conv = bundled("conversation_trace.jsonl", 1000);
    for policy in ["vllm-prefix-cache", "vllm-chunked"] {
        let c = config(2, policy, &["decode.kv_memory_fraction=0.2"]);
        let a = simulate(&conv, c.resolve().unwrap(), false, |_| {});
        let b = simulate(&conv, c.resolve().unwrap(), false, |_| {});
        assert_eq!(a.records, b.records);
        assert_eq!(a.samples, b.samples);
        assert_eq!(a.events, b.events);
        assert_eq!(summarize(&a, "x", c.slo), summarize(&b, "x", c.slo));
    }
}
