//! The per-request table's encodings: Parquet (polars, built at the
//! opt-levels `Cargo.toml` gives its crates) against CSV, the baseline,
//! measured in the same run on 100 000 records.
//!
//! `cargo bench -p moonlab-experiments --bench tables`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use moonlab_core::metrics::{requests_csv, RequestRecord};
use moonlab_experiments::tables::requests_parquet;

/// Records with every kind of cell filled, a tenth of them rejected.
fn records(n: u32) -> Vec<RequestRecord> {
    (0..n)
        .map(|i| {
            let served = i % 10 != 0;
            RequestRecord {
                id: i,
                arrival_s: i as f64 * 0.05,
                served,
                reject_reason: (!served).then_some("ttft-slo"),
                prefill: served.then_some(i % 8),
                decode: served.then_some(8 + i % 8),
                input_tokens: 1000 + i % 7000,
                output_tokens: 1 + i % 400,
                prefix_tokens: (i % 5) as u64 * 512,
                ttft_s: 0.5 + (i % 100) as f64 * 0.01,
                tbt_s: 0.02,
                finish_s: i as f64 * 0.05 + 9.0,
                ..RequestRecord::default()
            }
        })
        .collect()
}

fn tables(c: &mut Criterion) {
    let rs = records(100_000);
    let mut g = c.benchmark_group("requests_table_100k");
    g.throughput(Throughput::Elements(rs.len() as u64));
    g.sample_size(20);
    g.bench_function("csv", |b| {
        b.iter_batched(|| (), |_| requests_csv(&rs), BatchSize::SmallInput)
    });
    g.bench_function("parquet", |b| {
        b.iter_batched(
            || (),
            |_| requests_parquet(&rs).expect("encodes"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, tables);
criterion_main!(benches);
