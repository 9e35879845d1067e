//! One figure of each kind from synthetic data, shaped like the Mooncake
//! paper's evaluation figures, written as PNG and SVG:
//!
//! ```text
//! cargo run -p moonlab-experiments --example gallery -- OUTDIR
//! ```

use moonlab_experiments::figures::{
    render, render_grid, Axis, BarSeries, Chart, Figure, Grid, IntervalStyle, Marks, Point,
    RefLine, Rendered, Samples, Series, TickFormat,
};
use std::path::Path;

/// A small deterministic generator (SplitMix64), so the gallery is the same
/// on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-12), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn lognormal(&mut self, mu: f64, sigma: f64) -> f64 {
        (mu + sigma * self.normal()).exp()
    }
}

pub fn gallery() -> Vec<(&'static str, Rendered)> {
    let mut rng = Rng(42);
    let mut out = Vec::new();
    let mut add = |name: &'static str, r: Rendered| out.push((name, r));

    // Fig 9: hit rate against cache capacity, one line per policy.
    let caps = [1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8];
    let policies = [
        ("LRU", 1.0),
        ("LFU", 0.9),
        ("S3-FIFO", 1.08),
        ("Belady", 1.25),
    ];
    let series = policies
        .iter()
        .map(|&(name, gain)| {
            Series::new(
                name,
                caps.iter().map(|&c: &f64| {
                    let h = (0.62 * gain * (1.0 - (-(c / 4e6_f64).powf(0.6)).exp())).min(0.62);
                    Point::with_interval(c, h, (h - 0.015).max(0.0), h + 0.015)
                }),
            )
        })
        .collect();
    add(
        "fig09_hit_rate_vs_capacity",
        render(
            &Figure::new(
                Chart::Lines(series),
                Axis::new("Cache capacity").unit("tokens").log(),
                Axis::new("Prefix cache hit rate")
                    .unit("%")
                    .format(TickFormat::Percent)
                    .range(0.0, 0.7),
            )
            .title("Hit rate vs cache capacity (conversation trace)")
            .reference(RefLine::new(0.62, "unbounded: 62.0 %")),
        )
        .unwrap(),
    );

    // Fig 13: TTFT against network bandwidth, 95 % bands, log axes.
    let bw = [25.0, 50.0, 100.0, 200.0, 400.0, 800.0];
    let systems = [
        ("Mooncake (global cache)", 1.0),
        ("local cache only", 2.2),
        ("no cache", 5.0),
    ];
    let series = systems
        .iter()
        .map(|&(name, k)| {
            Series::new(
                name,
                bw.iter().map(|&b: &f64| {
                    let t = k * (0.8 + 60.0 / b);
                    Point::with_interval(b, t, t * 0.85, t * 1.18)
                }),
            )
            .intervals(IntervalStyle::Band)
        })
        .collect();
    add(
        "fig13_ttft_vs_bandwidth",
        render(
            &Figure::new(
                Chart::Lines(series),
                Axis::new("Network bandwidth").unit("Gbps").log(),
                Axis::new("Mean TTFT").unit("s").log(),
            )
            .title("TTFT vs bandwidth")
            .reference(RefLine::new(10.0, "TTFT SLO 10 s")),
        )
        .unwrap(),
    );

    // Figs 1, 6, 7: effective request capacity against the TBT threshold.
    let thresholds: Vec<f64> = (0..=20).map(|i| 40.0 + 10.0 * i as f64).collect();
    let series = [
        ("Mooncake", 1.0),
        ("vLLM", 0.55),
        ("vLLM, chunked prefill", 0.7),
    ]
    .iter()
    .map(|&(name, k)| {
        Series::new(
            name,
            thresholds
                .iter()
                .map(|&t| (t, k * 1200.0 * (1.0 - (-(t - 30.0) / 60.0).exp()))),
        )
    })
    .collect();
    add(
        "fig06_capacity_vs_tbt",
        render(
            &Figure::new(
                Chart::Lines(series),
                Axis::new("TBT threshold").unit("ms"),
                Axis::new("Effective request capacity").unit("req/min"),
            )
            .title("Effective request capacity vs TBT SLO"),
        )
        .unwrap(),
    );

    // TTFT CDFs, log x.
    let samples = [
        ("Mooncake", 0.2),
        ("vLLM", 1.1),
        ("vLLM, chunked prefill", 0.7),
    ]
    .iter()
    .map(|&(name, mu)| {
        Samples::new(
            name,
            (0..5000)
                .map(|_| rng.lognormal(mu, 0.9))
                .collect::<Vec<_>>(),
        )
    })
    .collect();
    add(
        "cdf_ttft",
        render(
            &Figure::new(
                Chart::Cdf(samples),
                Axis::new("TTFT").unit("s").log(),
                Axis::new("CDF"),
            )
            .title("TTFT distribution"),
        )
        .unwrap(),
    );

    // TBT CDFs, linear x.
    let samples = [("Mooncake", 45.0), ("vLLM", 80.0)]
        .iter()
        .map(|&(name, mean)| {
            Samples::new(
                name,
                (0..300)
                    .map(|_| (mean + 12.0 * rng.normal()).max(5.0))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    add(
        "cdf_tbt",
        render(
            &Figure::new(
                Chart::Cdf(samples),
                Axis::new("TBT").unit("ms"),
                Axis::new("Fraction of requests")
                    .format(TickFormat::Percent)
                    .unit("%"),
            )
            .title("TBT distribution")
            .reference(RefLine::new(0.9, "P90")),
        )
        .unwrap(),
    );

    // Fig 5: schedulers compared, with 95 % intervals.
    let schedulers = [
        "random",
        "round-robin",
        "least-loaded",
        "local cache-aware",
        "KVCache-centric",
    ];
    let mean = [9.5, 8.9, 6.1, 4.2, 2.9];
    let p90 = [21.0, 19.5, 13.2, 9.8, 6.1];
    let with_ci = |v: &[f64], rel: f64| {
        v.iter()
            .map(|&x| (x * (1.0 - rel), x * (1.0 + rel)))
            .collect::<Vec<_>>()
    };
    add(
        "fig05_schedulers",
        render(
            &Figure::new(
                Chart::GroupedBars {
                    categories: schedulers.iter().map(|s| s.to_string()).collect(),
                    series: vec![
                        BarSeries::new("mean TTFT", mean).with_intervals(with_ci(&mean, 0.08)),
                        BarSeries::new("P90 TTFT", p90).with_intervals(with_ci(&p90, 0.1)),
                    ],
                },
                Axis::new("Prefill scheduler"),
                Axis::new("TTFT").unit("s"),
            )
            .title("Prefill scheduling")
            .reference(RefLine::new(15.0, "TTFT SLO")),
        )
        .unwrap(),
    );

    // Fig 10: local vs global cache.
    add(
        "fig10_local_vs_global",
        render(
            &Figure::new(
                Chart::GroupedBars {
                    categories: vec![
                        "conversation".into(),
                        "tool & agent".into(),
                        "synthetic".into(),
                    ],
                    series: vec![
                        BarSeries::new("local cache", [0.38, 0.52, 0.21]),
                        BarSeries::new("global cache", [0.61, 0.68, 0.33]),
                    ],
                },
                Axis::new("Workload"),
                Axis::new("Cache hit rate")
                    .unit("%")
                    .format(TickFormat::Percent),
            )
            .title("Local vs global cache"),
        )
        .unwrap(),
    );

    // Fig 14: end-to-end latency breakdown.
    let stages = ["queue", "prefill", "transfer", "load", "decode"];
    let buckets = ["1k–4k", "4k–16k", "16k–32k", "32k–64k", "64k–128k"];
    let comps = stages
        .iter()
        .enumerate()
        .map(|(j, &name)| {
            BarSeries::new(
                name,
                (0..buckets.len()).map(|i| {
                    let scale = 1.0 + i as f64;
                    match j {
                        0 => 0.3 * scale,
                        1 => 0.6 * scale * scale,
                        2 => 0.15 * scale,
                        3 => 0.1 * scale,
                        _ => 4.0 + 0.2 * scale,
                    }
                }),
            )
        })
        .collect();
    add(
        "fig14_latency_breakdown",
        render(
            &Figure::new(
                Chart::StackedBars {
                    categories: buckets.iter().map(|s| s.to_string()).collect(),
                    components: comps,
                },
                Axis::new("Input length").unit("tokens"),
                Axis::new("End-to-end latency").unit("s"),
            )
            .title("Latency breakdown"),
        )
        .unwrap(),
    );

    // Fig 11: replica counts over time, log y.
    let ranks = [
        ("top-1 key", 40.0),
        ("top-10 key", 12.0),
        ("top-100 key", 3.0),
        ("top-1000 key", 1.0),
    ];
    let series = ranks
        .iter()
        .map(|&(name, level)| {
            let mut v = level;
            Series::new(
                name,
                (0..120).map(|i| {
                    v = (v * (1.0 + 0.15 * rng.normal()))
                        .clamp(1.0, 80.0)
                        .round()
                        .max(1.0);
                    (i as f64 * 5.0, v)
                }),
            )
            .marks(Marks::LinesAndMarkers)
        })
        .collect();
    add(
        "fig11_replicas",
        render(
            &Figure::new(
                Chart::Steps(series),
                Axis::new("Time").unit("s"),
                Axis::new("Replicas").log(),
            )
            .title("Replica counts of hot keys"),
        )
        .unwrap(),
    );

    // A scatter of arbitrary columns.
    let series = [("prefill", 0.00012), ("prefill + fetch", 0.00007)]
        .iter()
        .map(|&(name, k)| {
            Series::new(
                name,
                (0..150).map(|_| {
                    let len = 1000.0 + 120_000.0 * rng.next();
                    (len, k * len * (1.0 + 0.15 * rng.normal()).max(0.2))
                }),
            )
            .marks(Marks::Markers)
        })
        .collect();
    add(
        "scatter_ttft_vs_input",
        render(
            &Figure::new(
                Chart::Lines(series),
                Axis::new("Input length").unit("tokens"),
                Axis::new("TTFT").unit("s"),
            )
            .title("TTFT vs input length"),
        )
        .unwrap(),
    );

    // Many series: palette, markers and dashes all used.
    let series = (0..8)
        .map(|i| {
            Series::new(
                format!("series {}", i + 1),
                (0..12).map(|x| (x as f64, (i as f64 + 1.0) * (1.0 + 0.3 * x as f64))),
            )
        })
        .collect();
    add(
        "many_series",
        render(
            &Figure::new(
                Chart::Lines(series),
                Axis::new("Step"),
                Axis::new("Value").unit("a.u."),
            )
            .title("Eight series"),
        )
        .unwrap(),
    );

    // Fig 15 as a grid: TTFT and TBT against the P/D ratio.
    let ratios = ["1P3D", "2P2D", "3P1D"];
    let xs = [1.0 / 3.0, 1.0, 3.0];
    let panel = |name: &str, unit: &str, vals: [[f64; 3]; 2]| {
        Figure::new(
            Chart::Lines(vec![
                Series::new("mean", xs.iter().zip(vals[0]).map(|(&x, y)| (x, y))),
                Series::new("P90", xs.iter().zip(vals[1]).map(|(&x, y)| (x, y))),
            ]),
            Axis::new("Prefill : decode nodes")
                .log()
                .format(TickFormat::Auto),
            Axis::new(name).unit(unit),
        )
        .title(format!("{name} vs P/D ratio ({})", ratios.join(", ")))
        .size(480, 360)
    };
    add(
        "fig15_pd_ratio_grid",
        render_grid(
            &Grid::new(
                vec![
                    panel("TTFT", "s", [[12.0, 4.0, 1.5], [25.0, 9.0, 3.1]]),
                    panel("TBT", "ms", [[32.0, 45.0, 90.0], [48.0, 70.0, 160.0]]),
                ],
                2,
            )
            .title("P/D ratio"),
        )
        .unwrap(),
    );
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: gallery OUTDIR");
        std::process::exit(2);
    };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).expect("create OUTDIR");
    for (name, r) in gallery() {
        write_atomic(&dir.join(format!("{name}.png")), &r.png).expect("write PNG");
        write_atomic(&dir.join(format!("{name}.svg")), r.svg.as_bytes()).expect("write SVG");
        println!(
            "{name}: {} PNG bytes, {} SVG bytes",
            r.png.len(),
            r.svg.len()
        );
    }
}
