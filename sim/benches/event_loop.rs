//! Criterion bench of the cluster simulator's event loop: the first 3000
//! requests of the conversation trace on the Figure-5 setup, per scheduler.
//! Throughput is reported in simulated requests per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moonlab_sim::cluster::{simulate, ClusterConfig};

fn bench(c: &mut Criterion) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../traces/data/conversation_trace.jsonl"
    );
    let cfg_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../experiments/configs/fig5-scheduling.yaml"
    );
    let (_, mut reqs) = moonlab_traces::read_all(std::path::Path::new(path), &Default::default())
        .expect("shipped trace");
    reqs.truncate(3000);
    let text = std::fs::read_to_string(cfg_path).expect("fig5 config");
    let mut g = c.benchmark_group("sim_fig5_3000_requests");
    g.throughput(Throughput::Elements(reqs.len() as u64));
    g.sample_size(10);
    for s in ["round-robin", "kvcache-centric"] {
        let cfg =
            ClusterConfig::load(&text, "fig5", &[format!("scheduler={s}")]).expect("valid config");
        g.bench_with_input(BenchmarkId::from_parameter(s), &cfg, |b, cfg| {
            b.iter(|| simulate(&reqs, cfg.resolve().expect("resolves"), false, |_| {}).events)
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
