//! The cluster simulator against hand-computed scenarios, its invariants
//! (property tests over random traces and configurations) and determinism.

mod common;
use common::bundled;

use moonlab_core::cost::{AnalyticCost, CostModel, ModelSpec, NodeSpec};
use moonlab_core::{BlockKey, Nanos, Request};
use moonlab_sim::cluster::{simulate, summarize, ClusterConfig};
use proptest::prelude::*;

fn req(ms: u64, input: u32, output: u32, blocks: &[u64]) -> Request {
    Request {
        arrival: Nanos::from_millis(ms),
        input_tokens: input,
        output_tokens: output,
        blocks: blocks.iter().map(|&b| BlockKey(b)).collect(),
    }
}

fn config(sets: &[&str]) -> ClusterConfig {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    ClusterConfig::load("", "test", &sets).unwrap()
}

fn a800() -> AnalyticCost {
    AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 2e-9 * b.abs().max(1.0)
}

/// Within `ns` nanoseconds (flows complete on whole nanoseconds, rounded up).
fn near(a: f64, b: f64, ns: f64) -> bool {
    (a - b).abs() <= ns * 1e-9
}

#[test]
fn one_request_by_hand_at_10_and_800_gbps() {
    // One 1024-token prompt, 3 output tokens, on one prefill and one decode
    // node. TTFT (§5.4.3) = queue (0) + prefill (compute, no prefix) + the
    // part of the KV transfer prefill did not hide + the decode node's load
    // of the KV from DRAM into HBM (128 GB/s, Table 1). The KV is
    // 1024 × 320 KiB = 335.5 MB: 3.4 ms at 800 Gbps (hidden by the 99 ms of
    // compute), 268 ms at 10 Gbps (169 ms left after compute).
    let cost = a800();
    let compute = cost.prefill_time(1024, 0).as_secs_f64();
    let kv = 1024.0 * 327_680.0;
    let load = kv / 128e9;
    let s1 = cost.decode_step_time(1, 1025).as_secs_f64();
    let s2 = cost.decode_step_time(1, 1026).as_secs_f64();
    for gbps in [10.0, 800.0] {
        let c = config(&[
            "prefill.instances=1",
            "decode.instances=1",
            &format!("prefill.nic_gbit_per_s={gbps}"),
            &format!("decode.nic_gbit_per_s={gbps}"),
        ]);
        let trace = vec![req(1000, 1024, 3, &[1, 2])];
        let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
        let r = &out.records[0];
        let transfer = (kv / (gbps * 1e9 / 8.0) - compute).max(0.0);
        assert!(r.served);
        assert_eq!((r.queue_s, r.prefix_tokens), (0.0, 0));
        assert!(close(r.prefill_s, compute) && close(r.compute_s, compute));
        assert!(
            near(r.transfer_s, transfer, 2.0),
            "{gbps}: {} vs {transfer}",
            r.transfer_s
        );
        assert!(near(r.load_s, load, 2.0), "{} vs {load}", r.load_s);
        let ttft = compute + transfer + load;
        assert!(near(r.ttft_s, ttft, 4.0), "{gbps}: {} vs {ttft}", r.ttft_s);
        assert!(close(
            r.queue_s + r.prefill_s + r.transfer_s + r.load_s,
            r.ttft_s
        ));
        // TBT's intervals start at the first token: two decode steps, TBT =
        // the longest 10 % of 2 intervals = the longer step.
        assert!(close(r.tbt_s, s1.max(s2)), "{} vs {}", r.tbt_s, s1.max(s2));
        assert!(close(r.decode_s, s1 + s2));
        assert!(near(r.finish_s, 1.0 + ttft + s1 + s2, 4.0));
        assert_eq!(out.nic_bytes, kv);
    }
}

#[test]
fn second_request_reuses_the_prefix_and_loads_it_to_hbm() {
    // Two requests share their first two blocks; the second arrives after
    // the first finished prefill, on the single prefill node.
    let c = config(&["prefill.instances=1", "decode.instances=1"]);
    let trace = vec![req(0, 1500, 2, &[1, 2, 3]), req(5000, 1500, 2, &[1, 2, 9])];
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    let r = &out.records[1];
    let cost = a800();
    assert_eq!(r.prefix_tokens, 1024);
    let compute = cost.prefill_time(1500, 1024).as_secs_f64();
    let h2d = 1024.0 * 327_680.0 / 128e9;
    assert!(close(r.compute_s, compute));
    // Layer-wise load overlaps compute: the prefill ends when both have.
    assert!(
        near(r.prefill_s, compute.max(h2d), 2.0),
        "{} vs {}",
        r.prefill_s,
        compute.max(h2d)
    );
    // Then the KV of all 1500 tokens, streamed since the prefill began,
    // finishes its transfer and loads into the decode node's HBM.
    let kv = 1500.0 * 327_680.0;
    let transfer = (kv / 100e9 - compute.max(h2d)).max(0.0);
    let ttft = compute.max(h2d) + transfer + kv / 128e9;
    assert!(near(r.ttft_s, ttft, 6.0), "{} vs {ttft}", r.ttft_s);
    // Host-to-device bytes: the prefix into the prefill node's HBM, and
    // both prompts' KV into the decode node's.
    assert_eq!(out.h2d_bytes, (1024.0 + 2.0 * 1500.0) * 327_680.0);
    let s = summarize(&out, "kvcache-centric", c.slo);
    assert!((s.hit_rate - 1024.0 / 3000.0).abs() < 1e-12);
}

#[test]
fn ssd_tier_demotes_evicted_blocks_and_reads_them_back() {
    // DRAM holds 2 blocks, the SSD tier 100. A's 4 blocks: the head two stay
    // in DRAM, the tail two are demoted. B repeats A: its prefix is all 4
    // blocks, 2 of them read back from SSD at 7 GB/s, which dominates its
    // time to first token (one token left to compute).
    let c = config(&[
        "prefill.instances=1",
        "decode.instances=1",
        "prefill.dram_cache_blocks=2",
        "prefill.ssd_cache_blocks=100",
    ]);
    let trace = vec![
        req(0, 2048, 1, &[1, 2, 3, 4]),
        req(10_000, 2048, 1, &[1, 2, 3, 4]),
    ];
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    let b = &out.records[1];
    assert_eq!(b.prefix_tokens, 2048);
    assert_eq!(b.ssd_tokens, 1024);
    let block = 512.0 * 327_680.0;
    let read = 2.0 * block / 7e9;
    assert!((b.ttft_s - read).abs() < 1e-6, "{} vs {read}", b.ttft_s);
    // Written twice (A's demotion) and read once.
    assert!(
        (out.ssd_bytes - 4.0 * block).abs() < 1.0,
        "{}",
        out.ssd_bytes
    );
    // Without the tier, B recomputes the tail.
    let c = config(&[
        "prefill.instances=1",
        "decode.instances=1",
        "prefill.dram_cache_blocks=2",
    ]);
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    assert_eq!(out.records[1].prefix_tokens, 1024);
    assert_eq!(out.ssd_bytes, 0.0);
}

#[test]
fn soft_pinned_hot_prefix_survives_a_flood() {
    // DRAM of 4 blocks, no leases. A puts [1, 2] in DRAM; B reads them (so
    // they are soft-pinned when soft pins are on); a flood of unique
    // prompts follows; D reads [1, 2] again.
    let mut trace = vec![req(0, 1024, 1, &[1, 2]), req(5_000, 1536, 1, &[1, 2, 3])];
    for i in 0..5 {
        trace.push(req(10_000 + i * 1000, 1024, 1, &[100 + 2 * i, 101 + 2 * i]));
    }
    trace.push(req(20_000, 1536, 1, &[1, 2, 9]));
    let base = [
        "prefill.instances=1",
        "decode.instances=1",
        "prefill.dram_cache_blocks=4",
        "store.lease_s=0",
    ];
    let plain = simulate(&trace, config(&base).resolve().unwrap(), false, |_| {});
    assert_eq!(
        plain.records[7].prefix_tokens, 0,
        "LRU lost the prefix to the flood"
    );
    let mut sets = base.to_vec();
    sets.push("store.soft_pin_after_reads=1");
    let pinned = simulate(&trace, config(&sets).resolve().unwrap(), false, |_| {});
    assert_eq!(pinned.records[7].prefix_tokens, 1024);
}

#[test]
fn colocated_prefill_stalls_decode() {
    // A decodes 50 tokens; B's 16k-token prefill arrives mid-way. On a
    // colocated node B's prefill takes the GPU between two of A's steps, so
    // one of A's token intervals contains the whole prefill; disaggregated,
    // A's steps are untouched.
    let trace = vec![
        req(0, 1024, 50, &[1, 2]),
        req(200, 16_384, 2, &(10..42).collect::<Vec<_>>()),
    ];
    let cost = a800();
    let b_prefill =
        cost.prefill_time(16_384, 8192).as_secs_f64() + cost.prefill_time(8192, 0).as_secs_f64();
    let colo = config(&[
        "prefill.instances=1",
        "decode.instances=1",
        "deployment=colocated",
    ]);
    let out = simulate(&trace, colo.resolve().unwrap(), false, |_| {});
    let a = &out.records[0];
    // TBT = the longest 10 % of 49 intervals = the mean of the 5 longest;
    // one of them holds B's whole prefill.
    assert!(
        a.tbt_s > b_prefill / 5.0,
        "{} vs {}",
        a.tbt_s,
        b_prefill / 5.0
    );
    assert_eq!(out.nic_bytes, 0.0, "colocated: no KV crosses the network");
    let dis = config(&["prefill.instances=1", "decode.instances=1"]);
    let out = simulate(&trace, dis.resolve().unwrap(), false, |_| {});
    assert!(out.records[0].tbt_s < 0.05, "{}", out.records[0].tbt_s);
    let bad = ClusterConfig::load(
        "",
        "c",
        &["deployment=colocated".into(), "decode.instances=3".into()],
    );
    assert!(bad
        .unwrap_err()
        .to_string()
        .starts_with("decode.instances: 3 (a colocated deployment"));
}

#[test]
fn shortest_first_queue_runs_the_short_prompt_before_the_long_one() {
    // A occupies the node; B (long) and C (short) queue behind it. FIFO runs
    // B then C; shortest-first runs C then B.
    let trace = vec![
        req(0, 8000, 1, &(0..16).collect::<Vec<_>>()),
        req(1, 16_000, 1, &(100..132).collect::<Vec<_>>()),
        req(2, 512, 1, &[200]),
    ];
    let fifo = config(&["prefill.instances=1", "decode.instances=1"]);
    let out = simulate(&trace, fifo.resolve().unwrap(), false, |_| {});
    assert!(out.records[2].queue_s > out.records[1].queue_s);
    let sjf = config(&[
        "prefill.instances=1",
        "decode.instances=1",
        "prefill.queue=shortest-first",
    ]);
    let out = simulate(&trace, sjf.resolve().unwrap(), false, |_| {});
    assert!(out.records[2].queue_s < out.records[1].queue_s);
    let cost = a800();
    assert!(close(
        out.records[1].queue_s,
        cost.prefill_time(8000, 0).as_secs_f64() + cost.prefill_time(512, 0).as_secs_f64() - 0.001
    ));
}

#[test]
fn nic_bandwidth_and_output_overrides() {
    // Halving the NIC halves the prefix fetch rate; forcing 1 output token
    // means nothing is sent to decode.
    let prefix: Vec<u64> = (0..40).collect();
    let mut shared = prefix.clone();
    shared.push(5000);
    let trace = vec![
        req(0, 40 * 512, 2, &prefix),
        req(4000, 100_000, 2, &(1000..1196).collect::<Vec<_>>()),
        req(5000, 41 * 512, 2, &shared),
    ];
    let base = ["prefill.instances=2", "decode.instances=1"];
    let fast = simulate(&trace, config(&base).resolve().unwrap(), false, |_| {});
    let mut sets = base.to_vec();
    sets.push("prefill.nic_gbit_per_s=400");
    let slow = simulate(&trace, config(&sets).resolve().unwrap(), false, |_| {});
    let (f, s) = (fast.records[2].fetch_s, slow.records[2].fetch_s);
    assert!((s - 2.0 * f).abs() < 1e-8, "{s} vs 2 × {f}");
    let mut sets = base.to_vec();
    sets.push("workload.output_tokens=1");
    let out = simulate(&trace, config(&sets).resolve().unwrap(), false, |_| {});
    assert!(out
        .records
        .iter()
        .all(|r| r.output_tokens == 1 && r.tbt_s == 0.0));
    assert_eq!(
        out.nic_bytes,
        out.records
            .iter()
            .map(|r| r.fetch_bytes as f64)
            .sum::<f64>()
    );
}

#[test]
fn queued_request_waits_for_the_one_ahead() {
    let c = config(&["prefill.instances=1", "decode.instances=1"]);
    let trace = vec![
        req(0, 8000, 1, &(0..16).collect::<Vec<_>>()),
        req(0, 512, 1, &[100]),
    ];
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    let cost = a800();
    let first = cost.prefill_time(8000, 0).as_secs_f64();
    assert!(close(out.records[1].queue_s, first));
    assert!(close(
        out.records[1].ttft_s,
        first + cost.prefill_time(512, 0).as_secs_f64()
    ));
    // Output 1: finished at the first token, nothing sent to decode.
    assert_eq!(out.nic_bytes, 0.0);
}

#[test]
fn kvcache_centric_fetches_a_remote_prefix_and_replicates_it() {
    // Two prefill nodes. A (prefix P, 40 blocks) warms node 0 by t ≈ 2.8 s.
    // D, a 100k-token unique prompt at 4 s, ties to node 0 and keeps it busy
    // for ~30 s. E at 5 s shares P: node 1 is idle and P's 40 blocks beat
    // its 0 local blocks by more than the threshold, so E goes to node 1
    // and fetches P (40 × 512 × 320 KiB) from node 0 over the NICs.
    let c = config(&[
        "prefill.instances=2",
        "decode.instances=1",
        "scheduler=kvcache-centric",
    ]);
    let prefix: Vec<u64> = (0..40).collect();
    let mut shared = prefix.clone();
    shared.push(5000);
    let trace = vec![
        req(0, 40 * 512, 2, &prefix),
        req(4000, 100_000, 2, &(1000..1196).collect::<Vec<_>>()),
        req(5000, 41 * 512, 2, &shared),
    ];
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    assert_eq!(out.records[1].prefill, Some(0));
    let e = &out.records[2];
    assert_eq!(e.prefill, Some(1), "{e:?}");
    assert_eq!(e.fetched_tokens, 40 * 512, "{e:?}");
    assert_eq!(e.fetch_bytes, 40 * 512 * 327_680);
    assert_eq!(e.prefix_tokens, 40 * 512);
    // Alone on both NICs, the fetch runs at the full 100 GB/s.
    let want = (40.0 * 512.0 * 327_680.0 / 100e9 * 1e9f64).ceil() / 1e9;
    assert!((e.fetch_s - want).abs() < 2e-9, "{} vs {want}", e.fetch_s);
    // Local cache-aware scheduling cannot fetch: E waits behind D instead.
    let c = config(&[
        "prefill.instances=2",
        "decode.instances=1",
        "scheduler=local-cache-aware",
    ]);
    let local = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    assert_eq!(local.records[2].fetch_bytes, 0);
    assert!(local.records[2].ttft_s > e.ttft_s);
}

#[test]
fn slo_admission_rejects_what_cannot_make_it() {
    let c = config(&[
        "prefill.instances=1",
        "decode.instances=1",
        "scheduler.admission=slo",
        "slo.ttft_s=10",
    ]);
    // 40 long prompts (~2 s of prefill each) at once: the queue soon
    // exceeds a 10 s TTFT.
    let trace: Vec<Request> = (0..40)
        .map(|i| req(0, 16_000, 2, &(i * 100..i * 100 + 32).collect::<Vec<_>>()))
        .collect();
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    let s = summarize(&out, "x", c.slo);
    assert!(s.rejected > 0 && s.served > 0);
    assert!(out
        .records
        .iter()
        .filter(|r| !r.served)
        .all(|r| r.reject_reason == Some("ttft-slo")));
    assert!(out
        .records
        .iter()
        .filter(|r| r.served)
        .all(|r| r.ttft_s <= 10.0 + 1e-9));
}

#[test]
fn same_inputs_same_outputs_on_the_shipped_trace() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../traces/data/conversation_trace.jsonl"
    );
    let (_, mut reqs) =
        moonlab_traces::read_all(std::path::Path::new(path), &Default::default()).unwrap();
    reqs.truncate(1500);
    for s in ["random", "kvcache-centric"] {
        let c = config(&[
            "prefill.instances=4",
            "decode.instances=4",
            &format!("scheduler={s}"),
        ]);
        let a = simulate(&reqs, c.resolve().unwrap(), true, |_| {});
        let b = simulate(&reqs, c.resolve().unwrap(), true, |_| {});
        assert_eq!(a.records, b.records);
        assert_eq!(a.events, b.events);
        assert_eq!(summarize(&a, s, c.slo), summarize(&b, s, c.slo));
        assert_eq!(a.explain.len(), reqs.len());
    }
    // A different seed changes the random scheduler's choices.
    let c0 = config(&["prefill.instances=4", "scheduler=random"]);
    let c1 = config(&["prefill.instances=4", "scheduler=random", "seed=1"]);
    let a = simulate(&reqs, c0.resolve().unwrap(), false, |_| {});
    let b = simulate(&reqs, c1.resolve().unwrap(), false, |_| {});
    assert_ne!(a.records, b.records);
}

fn arb_trace() -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec(
        (0u64..3000, 0u64..4, 1usize..12, 1u32..512, 1u32..40),
        1..40,
    )
    .prop_map(|v| {
        let mut t = 0;
        v.into_iter()
            .map(|(gap, root, n, last, out)| {
                t += gap;
                let blocks: Vec<u64> = (0..n as u64)
                    .map(|j| if j < 3 { root * 1000 + j } else { t * 1000 + j })
                    .collect();
                req(t, (n as u32 - 1) * 512 + last, out, &blocks)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every request ends exactly once; times are ordered; tokens and
    /// bytes add up; with admission off, everything is served. Colocated
    /// runs cover moonlab's pool model and the three vLLM baselines.
    #[test]
    fn invariants_hold(
        trace in arb_trace(),
        p in 1u32..4,
        d in 1u32..3,
        sched in 0usize..5,
        cache in 0u64..40,
        chunk in prop::sample::select(vec![0u32, 512, 2048]),
        admission in 0usize..3,
        colocated in any::<bool>(),
        watermarks in 0usize..3,
        lease_s in prop::sample::select(vec![0.0f64, 0.5, 10.0]),
        pipelined in any::<bool>(),
        elastic in any::<bool>(),
        decode_slack in any::<bool>(),
        baseline in 0usize..4,
    ) {
        let names = ["random", "round-robin", "least-loaded", "local-cache-aware", "kvcache-centric"];
        // Pipelined groups of 2 nodes where the pool splits into them.
        let x = if pipelined && p % 2 == 0 && !colocated && chunk > 0 { 2 } else { 1 };
        let groups = p / x;
        // Elastic roles where nodes are plain and disaggregated: every node
        // then has a prefill and a decode side.
        let elastic = elastic && x == 1 && !colocated;
        let (groups, decode_base, decode_sides) = if elastic {
            (p + d, p + d, p + d)
        } else {
            (groups, groups, if colocated { p } else { d })
        };
        let c = config(&[
            &format!("roles.policy={}", if elastic { "load-driven" } else { "static" }),
            "roles.interval_s=0.5",
            "roles.load_driven.high=0.05",
            "roles.load_driven.low=0.05",
            // A loose TBT SLO leaves decode room to give nodes to prefill; a
            // tight one pulls nodes to decode.
            &format!("slo.tbt_s={}", if decode_slack { 10.0 } else { 0.1 }),
            &format!("prefill.pipeline_nodes={x}"),
            &format!("prefill.instances={p}"),
            &format!("decode.instances={}", if colocated { p } else { d }),
            &format!("deployment={}", if colocated { "colocated" } else { "disaggregated" }),
            &format!("scheduler={}", names[sched]),
            &format!("prefill.dram_cache_blocks={cache}"),
            &format!("prefill.ssd_cache_blocks={}", cache * 2 % 50),
            &format!("store.soft_pin_after_reads={}", cache % 3),
            &format!("prefill.queue={}", if cache % 2 == 0 { "fifo" } else { "shortest-first" }),
            &format!("prefill.chunk_tokens={chunk}"),
            "decode.max_batch=4",
            &format!("scheduler.admission={}", ["none", "slo", "predictive"][admission]),
            "slo.ttft_s=5",
            &format!("store.high_watermark={}", [1.0, 0.9, 0.5][watermarks]),
            &format!("store.eviction_ratio={}", [0.0, 0.05, 0.3][watermarks]),
            &format!("store.lease_s={lease_s}"),
            // Colocated nodes run moonlab's pool model or a vLLM baseline
            // (routed by a load balancer; kvcache-centric is refused there).
            &format!(
                "colocated.policy={}",
                if colocated { ["pool", "vllm", "vllm-prefix-cache", "vllm-chunked"][baseline] } else { "pool" }
            ),
            &format!("colocated.routing={}", names[sched % 4]),
            &format!("colocated.token_budget={}", [4, 64, 512, 131_072][cache as usize % 4]),
        ]);
        let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
        // The end-of-run invariants, checked from outside the model.
        prop_assert!(out.violations.is_empty(), "{:?}", out.violations);
        // Decode fast-forward changes the events, never the outcome.
        let mut step = c.clone();
        step.decode.fast_forward = false;
        let by_step = simulate(&trace, step.resolve().unwrap(), false, |_| {});
        prop_assert_eq!(&by_step.records, &out.records);
        prop_assert_eq!(&by_step.utilization, &out.utilization);
        prop_assert_eq!(by_step.end, out.end);
        prop_assert_eq!(&by_step.samples, &out.samples);
        // No GPU is busy more than all of any interval.
        for u in out.utilization.iter().flatten() {
            prop_assert!(*u <= 1.0 + 1e-9, "utilization {}", u);
        }
        let mut kv_bytes = 0.0;
        for (r, q) in out.records.iter().zip(&trace) {
            prop_assert!(r.served != r.reject_reason.is_some());
            prop_assert!(r.finish_s >= r.arrival_s);
            if r.served {
                prop_assert!(r.ttft_s >= r.prefill_s - 1e-9);
                prop_assert!(r.arrival_s + r.ttft_s <= r.finish_s + 1e-9);
                prop_assert!(r.prefix_tokens <= q.input_tokens as u64);
                prop_assert!(r.fetched_tokens <= r.prefix_tokens);
                prop_assert!(
                    r.prefill.unwrap() < groups
                        && r.decode.unwrap() >= decode_base
                        && r.decode.unwrap() < decode_base + decode_sides
                );
                if colocated {
                    prop_assert_eq!(r.decode.unwrap(), r.prefill.unwrap() + p);
                } else if q.output_tokens > 1 {
                    kv_bytes += q.input_tokens as f64 * 327_680.0;
                }
            }
        }
        if admission == 0 {
            prop_assert!(out.records.iter().all(|r| r.served));
        }
        // NIC bytes = KV streamed to decode + prefixes fetched (each counted
        // once on the sender and once on the receiver side: tx only here).
        let fetched: u64 = out.records.iter().map(|r| r.fetch_bytes).sum();
        prop_assert!((out.nic_bytes - kv_bytes - fetched as f64).abs() <= 1e-3 * (kv_bytes + 1.0));
    }
}

#[test]
fn fetch_pins_are_released_exactly_on_four_prefill_nodes() {
    // KVCache-centric scheduling on four prefill nodes with 10 s read
    // leases: thousands of prefix fetches, each pinning blocks at a source
    // while its transfer runs. Before handles, the source's pins were
    // released on a guessed holder: 4,526 blocks stayed pinned after this
    // very run (31,941 on the Figure-5 setup), and DRAM overflowed unnoticed.
    let trace = bundled("conversation_trace.jsonl", 3000);
    let c = config(&[
        "prefill.instances=4",
        "decode.instances=2",
        "scheduler=kvcache-centric",
        "store.lease_s=10",
        "prefill.dram_cache_blocks=2000",
    ]);
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    let fetches = out.records.iter().filter(|r| r.fetch_bytes > 0).count();
    assert!(
        fetches > 100,
        "only {fetches} fetches: the test must exercise them"
    );
    let sources: std::collections::BTreeSet<u32> = out
        .records
        .iter()
        .filter(|r| r.fetch_bytes > 0)
        .filter_map(|r| r.prefill)
        .collect();
    assert!(sources.len() >= 3, "fetches into {sources:?}");
    assert!(out.violations.is_empty(), "{:#?}", out.violations);
}

#[test]
fn invariants_hold_on_the_bundled_traces() {
    // Both traces under the configurations that take every kind of
    // resource: fetches, leases, soft pins, an SSD tier, watermarks,
    // admission, colocation.
    let conv = bundled("conversation_trace.jsonl", 4000);
    let syn = bundled("synthetic_trace.jsonl", 1500);
    let runs: [(&[Request], &[&str]); 5] = [
        (
            &conv,
            &["scheduler=kvcache-centric", "store.soft_pin_after_reads=2"],
        ),
        (
            &conv,
            &[
                "prefill.dram_cache_blocks=500",
                "prefill.ssd_cache_blocks=3000",
                "store.high_watermark=0.9",
                "store.eviction_ratio=0.05",
            ],
        ),
        (
            &conv,
            &[
                "deployment=colocated",
                "scheduler=local-cache-aware",
                "scheduler.admission=slo",
            ],
        ),
        (
            &syn,
            &["prefill.nic_gbit_per_s=50", "decode.nic_gbit_per_s=50"],
        ),
        (
            &syn,
            &[
                "scheduler.admission=predictive",
                "prefill.instances=3",
                "decode.instances=5",
            ],
        ),
    ];
    for (trace, sets) in runs {
        let out = simulate(trace, config(sets).resolve().unwrap(), false, |_| {});
        assert!(out.violations.is_empty(), "{sets:?}: {:#?}", out.violations);
        assert!(out
            .records
            .iter()
            .all(|r| r.served || r.reject_reason.is_some()));
    }
}

#[test]
fn belady_in_the_cluster_sees_the_future() {
    // One node with room for 2 blocks. A = [1] and B = [5, 6] leave
    // {1, 5, 6}: one must go. C = [5, 6] comes next and 1 never again:
    // Belady drops 1 and C finds both blocks. Without the trace's next uses
    // every block looked alike and the deepest (6) went.
    let trace = vec![
        req(0, 512, 1, &[1]),
        req(1000, 1024, 1, &[5, 6]),
        req(2000, 1024, 1, &[5, 6]),
    ];
    let base = [
        "prefill.instances=1",
        "decode.instances=1",
        "prefill.dram_cache_blocks=2",
    ];
    let mut sets = base.to_vec();
    sets.push("store.eviction=belady");
    let out = simulate(&trace, config(&sets).resolve().unwrap(), false, |_| {});
    assert_eq!(out.records[2].prefix_tokens, 1024);
    // LRU drops 1 too here (it is the oldest); with C = [1] instead it
    // would not have, while Belady still keeps what is used next.
    let trace2 = vec![
        req(0, 512, 1, &[1]),
        req(1000, 1024, 1, &[5, 6]),
        req(2000, 512, 1, &[1]),
    ];
    let out = simulate(&trace2, config(&sets).resolve().unwrap(), false, |_| {});
    assert_eq!(
        out.records[2].prefix_tokens, 512,
        "Belady keeps 1, used next"
    );
    let out = simulate(&trace2, config(&base).resolve().unwrap(), false, |_| {});
    assert_eq!(out.records[2].prefix_tokens, 0, "LRU dropped 1, the oldest");
}

#[test]
fn gdsf_in_the_cluster_weighs_recompute_cost() {
    // One node with room for 2 blocks. A = [1, 2] (depths 0 and 1), then
    // B = [3]: one of {1, 2, 3} must go. GDSF's priority is cost / size:
    // block 2, deeper, costs more to recompute (attention over its 512-token
    // prefix), so 1 or 3 goes — 1, the older. Given unit costs (as the
    // cluster did before) all three looked alike and the oldest access,
    // block 2 (A's blocks are written tail first), went. C = [1, 2] then
    // finds nothing under GDSF and block 1 under LRU.
    let trace = vec![
        req(0, 1024, 1, &[1, 2]),
        req(1000, 512, 1, &[3]),
        req(2000, 1024, 1, &[1, 2]),
    ];
    let base = [
        "prefill.instances=1",
        "decode.instances=1",
        "prefill.dram_cache_blocks=2",
    ];
    let mut sets = base.to_vec();
    sets.push("store.eviction=gdsf");
    let gdsf = simulate(&trace, config(&sets).resolve().unwrap(), false, |_| {});
    assert_eq!(gdsf.records[2].prefix_tokens, 0);
    let lru = simulate(&trace, config(&base).resolve().unwrap(), false, |_| {});
    assert_eq!(lru.records[2].prefix_tokens, 512);
}

#[test]
fn a_partial_last_block_takes_its_real_bytes() {
    // A's prompt is 40 full blocks and a last block of 100 tokens; E repeats
    // it on the other node (the holder is busy with D), fetching all 41
    // blocks: 20,580 tokens of KV, not 41 full blocks.
    let blocks: Vec<u64> = (0..41).collect();
    let trace = vec![
        req(0, 40 * 512 + 100, 2, &blocks),
        req(4000, 100_000, 2, &(1000..1196).collect::<Vec<_>>()),
        req(5000, 40 * 512 + 100, 2, &blocks),
    ];
    let c = config(&[
        "prefill.instances=2",
        "decode.instances=1",
        "scheduler=kvcache-centric",
    ]);
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    let e = &out.records[2];
    assert_eq!(e.prefill, Some(1), "{e:?}");
    assert_eq!(e.fetched_tokens, 40 * 512 + 100);
    assert_eq!(e.fetch_bytes, (40 * 512 + 100) * 327_680);
    assert!(out.violations.is_empty());
}

#[test]
fn fast_forward_matches_step_by_step_on_a_bundled_trace() {
    // Decode runs of iterations in one event give the very records and
    // utilisation of one event per iteration, with far fewer events.
    let trace = bundled("conversation_trace.jsonl", 2000);
    for sched in ["kvcache-centric", "random"] {
        for admission in ["none", "predictive"] {
            let c = config(&[
                "prefill.instances=4",
                "decode.instances=2",
                &format!("scheduler={sched}"),
                &format!("scheduler.admission={admission}"),
            ]);
            let mut step = c.clone();
            step.decode.fast_forward = false;
            let ff = simulate(&trace, c.resolve().unwrap(), false, |_| {});
            let by_step = simulate(&trace, step.resolve().unwrap(), false, |_| {});
            assert_eq!(ff.records, by_step.records, "{sched} {admission}");
            assert_eq!(ff.utilization, by_step.utilization);
            assert!(
                ff.events * 5 < by_step.events,
                "{} vs {}",
                ff.events,
                by_step.events
            );
        }
    }
}

#[test]
fn fetch_or_recompute_by_what_the_holders_link_offers_now() {
    // Two prefill nodes, one decode node, 25 Gbps NICs (3.125 GB/s). A
    // (the 40-block prefix P) warms node 0. D, a 100k-token prompt, keeps
    // node 0 busy from 3 s for ~30 s. E (P + 1 block) arrives at 4 s: node 1
    // is idle and holds nothing. Fetching P's 40 blocks (6.7 GB) and
    // computing one block is compared with computing all 41 blocks there.
    //  - D with one output token sends no KV: node 0's link is free, the
    //    fetch takes 2.15 s and beats the 2.42 s recompute: E fetches.
    //  - D with two output tokens streams its 32.8 GB of KV to decode over
    //    node 0's link from 3 s to ~13.5 s: a new flow would get half the
    //    link, 4.3 s, and E recomputes instead (the nominal rate would
    //    still have said 2.15 s and fetched).
    let prefix: Vec<u64> = (0..40).collect();
    let mut with_tail = prefix.clone();
    with_tail.push(5000);
    let cost = a800();
    let recompute = cost.prefill_time(41 * 512, 0).as_secs_f64();
    let p_bytes = 40.0 * 512.0 * 327_680.0;
    let rate = 25e9 / 8.0;
    for d_output in [1u32, 2] {
        let trace = vec![
            req(0, 40 * 512, 2, &prefix),
            req(3000, 100_000, d_output, &(1000..1196).collect::<Vec<_>>()),
            req(4000, 41 * 512, 2, &with_tail),
        ];
        let c = config(&[
            "prefill.instances=2",
            "decode.instances=1",
            "scheduler=kvcache-centric",
            "prefill.nic_gbit_per_s=25",
            "decode.nic_gbit_per_s=25",
        ]);
        let out = simulate(&trace, c.resolve().unwrap(), true, |_| {});
        assert_eq!(out.records[1].prefill, Some(0));
        let e = &out.records[2];
        assert_eq!(e.prefill, Some(1), "{d_output}: {e:?}");
        let (_, cands, _) = &out.explain[2];
        let node1 = &cands[1];
        if d_output == 1 {
            assert_eq!(e.fetch_bytes, p_bytes as u64);
            assert!((node1.transfer_s - p_bytes / rate).abs() < 1e-6);
            assert!(node1.transfer_s + node1.prefill_s < recompute);
        } else {
            assert_eq!(e.fetch_bytes, 0, "the congested link loses to recomputing");
            assert_eq!(node1.transfer_s, 0.0);
            assert!((node1.prefill_s - recompute).abs() < 1e-6);
            assert!(
                2.0 * p_bytes / rate > recompute,
                "the fetch would take 4.3 s"
            );
        }
        assert!(out.violations.is_empty());
    }
}

#[test]
fn the_prefix_load_is_in_the_estimates_as_in_the_simulation() {
    // B reuses A's 120k-token prefix (235 blocks) and adds 100 tokens. Its
    // prefill computes 100 tokens (~0.06 s) but must first load the 120k
    // cached tokens' KV into HBM at 128 GB/s (0.31 s). The scheduler's
    // estimate, the queue's, and the simulated prefill all say the same.
    let prefix: Vec<u64> = (0..235).collect();
    let mut b_blocks = prefix.clone();
    b_blocks.push(9999);
    let trace = vec![
        req(0, 235 * 512, 1, &prefix),
        req(60_000, 235 * 512 + 100, 1, &b_blocks),
    ];
    let c = config(&["prefill.instances=1", "decode.instances=1"]);
    let out = simulate(&trace, c.resolve().unwrap(), true, |_| {});
    let cost = a800();
    let cached = 235.0 * 512.0;
    let compute = cost.prefill_time(235 * 512 + 100, 235 * 512).as_secs_f64();
    let load = cached * 327_680.0 / 128e9;
    assert!(load > 4.0 * compute, "{load} vs {compute}");
    let b = &out.records[1];
    assert!(close(b.compute_s, compute));
    assert!(near(b.prefill_s, load, 2.0), "{} vs {load}", b.prefill_s);
    let (_, cands, _) = &out.explain[1];
    assert!(
        near(cands[0].prefill_s, load, 2.0),
        "{} vs {load}",
        cands[0].prefill_s
    );
}

#[test]
fn a_128k_prompt_with_and_without_chunked_pipeline_parallelism() {
    // One 131,072-token prompt (256 blocks) on four prefill nodes. Alone on
    // one node its prefill takes ~48 s. As one pipelined group of 4 nodes
    // (§3.3), its sixteen 8192-token chunks pass four stages that split the
    // layers: chunk c takes t_c / 4 on each stage, and the prefill ends when
    // the last stage finishes the last chunk.
    use moonlab_core::cost::{chunk_times, run_pipeline};
    let blocks: Vec<u64> = (0..256).collect();
    let trace = vec![req(0, 131_072, 1, &blocks)];
    let cost = a800();
    let alone = cost.prefill_time(131_072, 0).as_secs_f64();
    let chunks = chunk_times(&cost, 131_072, 0, 8192);
    assert_eq!(chunks.len(), 16);
    let mut free = vec![Nanos::ZERO; 4];
    let piped = run_pipeline(&mut free, Nanos::ZERO, &chunks)
        .end
        .as_secs_f64();
    // By hand: Σ t_c / 4 plus three stage-times of the last chunk.
    let by_hand = chunks.iter().map(|t| (t.0 / 4) as f64).sum::<f64>() / 1e9
        + 3.0 * (chunks[15].0 / 4) as f64 / 1e9;
    assert!((piped - by_hand).abs() < 1e-9, "{piped} vs {by_hand}");
    assert!(piped < alone / 3.0, "{piped} vs {alone}");
    for (x, want) in [(1, alone), (4, piped)] {
        let c = config(&[
            "prefill.instances=4",
            "decode.instances=1",
            &format!("prefill.pipeline_nodes={x}"),
        ]);
        let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
        let r = &out.records[0];
        assert!(
            near(r.prefill_s, want, 20.0),
            "{x}: {} vs {want}",
            r.prefill_s
        );
        assert!(
            close(r.ttft_s, r.prefill_s),
            "one output token: no transfer"
        );
        assert!(
            (r.compute_s - alone).abs() < 1e-6,
            "the same work either way"
        );
        assert!(out.violations.is_empty());
    }
}

#[test]
fn a_pipelined_group_overlaps_successive_requests() {
    // Two 8192-token prompts at once on one group of 2 nodes: the first
    // takes stage 0 for t/2, then stage 1 for t/2; the second enters stage
    // 0 when the first leaves it, and ends t/2 after the first.
    let trace = vec![
        req(0, 8192, 1, &(0..16).collect::<Vec<_>>()),
        req(0, 8192, 1, &(100..116).collect::<Vec<_>>()),
    ];
    let c = config(&[
        "prefill.instances=2",
        "decode.instances=1",
        "prefill.pipeline_nodes=2",
    ]);
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    let half = (a800().prefill_time(8192, 0).0 / 2) as f64 / 1e9;
    let (a, b) = (&out.records[0], &out.records[1]);
    assert_eq!(
        (a.prefill, b.prefill),
        (Some(0), Some(0)),
        "one instance: the group"
    );
    assert!(
        near(a.ttft_s, 2.0 * half, 4.0),
        "{} vs {}",
        a.ttft_s,
        2.0 * half
    );
    assert!(near(b.queue_s, half, 4.0), "{} vs {half}", b.queue_s);
    assert!(
        near(b.ttft_s, 3.0 * half, 4.0),
        "{} vs {}",
        b.ttft_s,
        3.0 * half
    );
    // The queue counted for B is A's time in the first stage, t/2: the
    // scheduler's estimate of B's queue is what B waited.
    let c4 = config(&[
        "prefill.instances=2",
        "decode.instances=1",
        "prefill.pipeline_nodes=2",
    ]);
    let out4 = simulate(&trace, c4.resolve().unwrap(), true, |_| {});
    let (_, cands, _) = &out4.explain[1];
    assert!(
        near(cands[0].queue_s, half, 4.0),
        "{} vs {half}",
        cands[0].queue_s
    );
    // Each node was busy t (its half of both prompts) of the 1.5 t run.
    let u = out.prefill_busy_s[0] / out.end.as_secs_f64();
    assert!((u - 2.0 / 3.0).abs() < 1e-6, "{u}");
    let bad = ClusterConfig::load("", "c", &["prefill.pipeline_nodes=3".into()]);
    assert!(bad
        .unwrap_err()
        .to_string()
        .starts_with("prefill.pipeline_nodes: 3 (expected 1 to 64 nodes per pipelined group, dividing prefill.instances, 8)"));
}

#[test]
fn elastic_roles_move_a_drained_decode_node_to_prefill() {
    // One prefill and two decode nodes; a burst of long prompts at 0 s
    // piles up in the prefill queue while decode has little to do. At the
    // first decision (1 s) the load-driven policy asks the lightest decode
    // node (node 1) to become a prefill node: no new request is placed on
    // it, and it switches once the requests already placed on it have
    // decoded. A second burst at 100 s then has two prefill nodes, and its
    // requests see a shorter TTFT than with static roles.
    let mut trace: Vec<Request> = (0..12)
        .map(|i| req(0, 32_768, 2, &(i * 100..i * 100 + 64).collect::<Vec<_>>()))
        .collect();
    trace.extend((12..24).map(|i| {
        req(
            100_000,
            32_768,
            2,
            &(i * 100..i * 100 + 64).collect::<Vec<_>>(),
        )
    }));
    let base = [
        "prefill.instances=1",
        "decode.instances=2",
        "roles.interval_s=1",
    ];
    let fixed = simulate(&trace, config(&base).resolve().unwrap(), false, |_| {});
    let mut sets = base.to_vec();
    sets.push("roles.policy=load-driven");
    let out = simulate(&trace, config(&sets).resolve().unwrap(), false, |_| {});
    assert!(out.violations.is_empty(), "{:#?}", out.violations);
    // Nodes 0..3 have prefill sides 0..3 and decode sides 3..6; node 1's
    // decode side is instance 4. It switched when its last request ended.
    let last_on_node_1 = out
        .records
        .iter()
        .filter(|r| r.decode == Some(4))
        .map(|r| r.finish_s)
        .fold(0.0, f64::max);
    let (t, node, role) = out.role_changes[0];
    assert_eq!((node, role), (1, moonlab_core::roles::Role::Prefill));
    assert!(last_on_node_1 > 1.0 && (t.as_secs_f64() - last_on_node_1).abs() < 1e-9);
    assert!(out.records.iter().all(|r| r.served));
    assert!(out
        .records
        .iter()
        .filter(|r| r.arrival_s >= 100.0)
        .any(|r| r.prefill == Some(1)));
    let second = |o: &moonlab_sim::cluster::SimOutput| {
        o.records
            .iter()
            .filter(|r| r.arrival_s >= 100.0)
            .map(|r| r.ttft_s)
            .sum::<f64>()
            / 12.0
    };
    assert!(
        second(&out) < 0.7 * second(&fixed),
        "{} vs {}",
        second(&out),
        second(&fixed)
    );
    let e = ClusterConfig::load(
        "",
        "c",
        &[
            "roles.policy=load-driven".into(),
            "decode.node=8xH200".into(),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("roles.policy: load-driven (nodes that switch roles must be alike"),
        "{e}"
    );
}

#[test]
fn a_decode_step_overhead_lengthens_every_iteration() {
    // Three output tokens: two decode iterations, each the cost model's
    // time plus 5 ms; TBT (the longer interval) and decode time follow.
    let trace = vec![req(0, 1024, 3, &[1, 2])];
    let c = config(&[
        "prefill.instances=1",
        "decode.instances=1",
        "decode.step_overhead_ms=5",
    ]);
    let out = simulate(&trace, c.resolve().unwrap(), false, |_| {});
    let cost = a800();
    let s1 = cost.decode_step_time(1, 1025).as_secs_f64() + 0.005;
    let s2 = cost.decode_step_time(1, 1026).as_secs_f64() + 0.005;
    let r = &out.records[0];
    assert!(close(r.decode_s, s1 + s2), "{} vs {}", r.decode_s, s1 + s2);
    assert!(close(r.tbt_s, s1.max(s2)));
    let e = ClusterConfig::load("", "c", &["decode.step_overhead_ms=-1".into()])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "decode.step_overhead_ms: -1 (expected 0 to 10000 milliseconds)"
    );
}

#[test]
fn an_epoch_clock_and_long_idle_gaps_cost_no_empty_samples() {
    // The same 300 requests on a clock starting at zero and on one starting
    // at an epoch millisecond (1.7e12 ms), and split by a ten-year gap:
    // every request's times are the same, and the samples follow the work.
    let base = bundled("conversation_trace.jsonl", 300);
    let shift = |reqs: &[Request], by: u64, from: usize| -> Vec<Request> {
        reqs.iter()
            .enumerate()
            .map(|(i, r)| Request {
                arrival: Nanos(r.arrival.0 + if i >= from { by } else { 0 }),
                ..r.clone()
            })
            .collect()
    };
    let epoch = 1_700_000_000_000u64 * 1_000_000;
    let decade = 315_360_000u64 * 1_000_000_000;
    let c = config(&["metrics.sample_interval_s=1"]);
    let run = |t: &[Request]| simulate(t, c.resolve().unwrap(), false, |_| {});
    let plain = run(&base);
    let on_epoch = run(&shift(&base, epoch, 0));
    let with_gap = run(&shift(&shift(&base, epoch, 0), decade, 150));
    assert!(plain.violations.is_empty() && on_epoch.violations.is_empty());
    assert!(with_gap.violations.is_empty());
    let times = |o: &moonlab_sim::cluster::SimOutput| {
        o.records
            .iter()
            .map(|r| (r.ttft_s, r.tbt_s, r.served))
            .collect::<Vec<_>>()
    };
    assert_eq!(times(&plain), times(&on_epoch));
    // Sampling is anchored at the first arrival: same samples, shifted.
    assert_eq!(plain.samples.len(), on_epoch.samples.len());
    for (a, b) in plain.samples.iter().zip(&on_epoch.samples) {
        assert_eq!(a.time.0 + epoch, b.time.0);
        assert_eq!(a.decode_batch, b.decode_batch);
    }
    assert_eq!(plain.utilization, on_epoch.utilization);
    // The ten-year gap: a few samples, not 315 million.
    let busy_span = plain.end.0 - base[0].arrival.0;
    let bound = 2 * (busy_span / 1_000_000_000 + 4) as usize;
    assert!(
        with_gap.samples.len() <= bound,
        "{} samples (bound {bound})",
        with_gap.samples.len()
    );
    for u in with_gap.utilization.iter().flatten() {
        assert!((0.0..=1.0 + 1e-9).contains(u));
    }
}
