//! Criterion benches of each policy's access path: a replay of a synthetic
//! prefix-chained block stream through a store `Segment` holding ~25 % of the
//! working set. Throughput is reported in block accesses per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moonlab_core::eviction::{Access, PolicyKind};
use moonlab_core::store::{Segment, SegmentConfig};
use moonlab_core::{BlockKey, Nanos};

/// A deterministic skewed stream: 200k accesses over 40k keys, hot keys
/// drawn far more often (an xorshift picks a rank, squared to skew it).
fn stream() -> Vec<u64> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            (u * u * 40_000.0) as u64
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let keys = stream();
    let mut next_use = vec![u64::MAX; keys.len()];
    let mut last = std::collections::HashMap::new();
    for (i, &k) in keys.iter().enumerate().rev() {
        if let Some(&j) = last.get(&k) {
            next_use[i] = j as u64;
        }
        last.insert(k, i);
    }
    let mut g = c.benchmark_group("policy_access");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for kind in PolicyKind::ALL {
        g.bench_with_input(BenchmarkId::from_parameter(kind), &kind, |b, &kind| {
            b.iter(|| {
                let cap = 10_000;
                let mut cache =
                    Segment::new(kind.build(Some(cap)), SegmentConfig::exact(Some(cap)));
                let mut evicted = Vec::new();
                for (i, &k) in keys.iter().enumerate() {
                    let a = Access {
                        now: Nanos(i as u64),
                        tokens: 512,
                        depth: (k % 32) as u32,
                        cost: 1.0 + (k % 32) as f64,
                        next_use: next_use[i],
                    };
                    cache.access(BlockKey(k), 1, &a);
                    evicted.clear();
                    cache.evict(Nanos(i as u64), &mut evicted);
                }
                cache.counters().hits
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
