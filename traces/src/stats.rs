//! Streaming trace statistics, as `moonlab trace stats` prints them.
//!
//! One pass; memory holds exact length histograms (bounded by the number of
//! distinct lengths), the reuse tracker (bounded by distinct blocks) and
//! first-block counts (bounded by distinct first blocks) — never the trace.
//!
//! - *cache ratio*: the hit rate of an unbounded prefix cache, Σ hit tokens /
//!   Σ input tokens, where a request's hit is `min(k × block_tokens, input)`
//!   for the `k` leading blocks seen before (the paper's Table 2 "cache ratio").
//! - *reuse distance*: see [`crate::reuse`]; distributions are over every
//!   block access that was seen before.
//! - *arrival rate*: requests per minute over the span; the peak is the
//!   busiest whole minute counted from the first arrival.

use crate::reuse::{Reuse, ReuseTracker};
use hdrhistogram::Histogram;
use moonlab_core::{BlockKey, Nanos, Request};
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Summary of a length distribution (tokens).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LengthStats {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// Summary of a reuse distribution; `buckets` holds `(upper_bound, count)`
/// for power-of-two (blocks) or decade-like (seconds) bins.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReuseStats {
    pub reuses: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub buckets: Vec<(f64, u64)>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FirstBlockShare {
    pub block: u64,
    pub requests: u64,
    pub share: f64,
}

/// Prefix statistics; absent for traces without hashes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PrefixStats {
    pub blocks: u64,
    pub unique_blocks: u64,
    /// Hit rate of an unbounded prefix cache, in tokens.
    pub cache_ratio: f64,
    /// The same in blocks: Σ leading seen blocks / Σ blocks.
    pub block_cache_ratio: f64,
    pub reuse_distance_blocks: ReuseStats,
    pub reuse_distance_s: ReuseStats,
    pub top_first_blocks: Vec<FirstBlockShare>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TraceStats {
    pub block_tokens: u32,
    pub requests: u64,
    pub span_s: f64,
    pub arrival_per_min_mean: f64,
    pub arrival_per_min_peak: u64,
    pub input_tokens: LengthStats,
    pub output_tokens: LengthStats,
    pub input_tokens_total: u64,
    pub output_tokens_total: u64,
    /// Requests with 0 output tokens (failed requests in CSV traces).
    pub zero_output_requests: u64,
    pub prefix: Option<PrefixStats>,
}

/// Exact histogram of lengths.
#[derive(Default)]
struct LengthHistogram {
    counts: BTreeMap<u32, u64>,
    n: u64,
    sum: u128,
}

impl LengthHistogram {
    fn add(&mut self, v: u32) {
        *self.counts.entry(v).or_default() += 1;
        self.n += 1;
        self.sum += v as u128;
    }

    /// Nearest-rank quantile: the smallest value with at least q·n values ≤ it.
    fn quantile(&self, q: f64) -> u64 {
        let rank = ((q * self.n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (&v, &c) in &self.counts {
            seen += c;
            if seen >= rank {
                return v as u64;
            }
        }
        0
    }

    fn summary(&self) -> LengthStats {
        if self.n == 0 {
            return LengthStats::default();
        }
        LengthStats {
            mean: self.sum as f64 / self.n as f64,
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            max: self.counts.keys().next_back().map_or(0, |&v| v as u64),
        }
    }
}

pub struct StatsBuilder {
    block_tokens: u32,
    requests: u64,
    first: Option<Nanos>,
    last: Nanos,
    minute: u64,
    minute_count: u64,
    minute_peak: u64,
    input: LengthHistogram,
    output: LengthHistogram,
    zero_output: u64,
    any_hashes: bool,
    blocks: u64,
    hit_tokens: u64,
    hit_blocks: u64,
    reuse: ReuseTracker,
    reuse_buf: Vec<Option<Reuse>>,
    dist_blocks: Histogram<u64>,
    dist_ms: Histogram<u64>,
    first_blocks: FxHashMap<BlockKey, u64>,
}

impl StatsBuilder {
    pub fn new(block_tokens: u32) -> StatsBuilder {
        // Up to 2^40 blocks or milliseconds (35 years), 3 significant figures.
        let hist =
            || Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).expect("valid histogram bounds");
        StatsBuilder {
            block_tokens,
            requests: 0,
            first: None,
            last: Nanos::ZERO,
            minute: 0,
            minute_count: 0,
            minute_peak: 0,
            input: LengthHistogram::default(),
            output: LengthHistogram::default(),
            zero_output: 0,
            any_hashes: false,
            blocks: 0,
            hit_tokens: 0,
            hit_blocks: 0,
            reuse: ReuseTracker::new(),
            reuse_buf: Vec::new(),
            dist_blocks: hist(),
            dist_ms: hist(),
            first_blocks: FxHashMap::default(),
        }
    }

    /// Adds the next request (requests must come in arrival order).
    pub fn add(&mut self, r: &Request) {
        self.requests += 1;
        let t0 = *self.first.get_or_insert(r.arrival);
        self.last = self.last.max(r.arrival);
        let minute = r.arrival.saturating_sub(t0).0 / 60_000_000_000;
        if minute != self.minute {
            self.minute = minute;
            self.minute_count = 0;
        }
        self.minute_count += 1;
        self.minute_peak = self.minute_peak.max(self.minute_count);
        self.input.add(r.input_tokens);
        self.output.add(r.output_tokens);
        if r.output_tokens == 0 {
            self.zero_output += 1;
        }
        if r.blocks.is_empty() {
            return;
        }
        self.any_hashes = true;
        self.blocks += r.blocks.len() as u64;
        *self.first_blocks.entry(r.blocks[0]).or_default() += 1;
        self.reuse
            .observe(r.arrival, &r.blocks, &mut self.reuse_buf);
        let k = self.reuse_buf.iter().take_while(|x| x.is_some()).count();
        self.hit_blocks += k as u64;
        self.hit_tokens += r.hit_tokens(k, self.block_tokens);
        for reuse in self.reuse_buf.iter().flatten() {
            self.dist_blocks.saturating_record(reuse.distance_blocks);
            self.dist_ms.saturating_record(reuse.age.0 / 1_000_000);
        }
    }

    pub fn finish(self) -> TraceStats {
        let span_s = match self.first {
            Some(t0) => self.last.saturating_sub(t0).as_secs_f64(),
            None => 0.0,
        };
        let input_total = self.input.sum as u64;
        let prefix = self.any_hashes.then(|| {
            let mut top: Vec<(BlockKey, u64)> =
                self.first_blocks.iter().map(|(&k, &c)| (k, c)).collect();
            top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            top.truncate(10);
            PrefixStats {
                blocks: self.blocks,
                unique_blocks: self.reuse.unique_blocks(),
                cache_ratio: ratio(self.hit_tokens, input_total),
                block_cache_ratio: ratio(self.hit_blocks, self.blocks),
                reuse_distance_blocks: reuse_summary(&self.dist_blocks, 1.0, &pow2_bounds()),
                reuse_distance_s: reuse_summary(&self.dist_ms, 1e-3, &SECOND_BOUNDS),
                top_first_blocks: top
                    .into_iter()
                    .map(|(k, c)| FirstBlockShare {
                        block: k.0,
                        requests: c,
                        share: ratio(c, self.requests),
                    })
                    .collect(),
            }
        });
        TraceStats {
            block_tokens: self.block_tokens,
            requests: self.requests,
            span_s,
            arrival_per_min_mean: if span_s > 0.0 {
                self.requests as f64 / (span_s / 60.0)
            } else {
                0.0
            },
            arrival_per_min_peak: self.minute_peak,
            input_tokens: self.input.summary(),
            output_tokens: self.output.summary(),
            input_tokens_total: input_total,
            output_tokens_total: self.output.sum as u64,
            zero_output_requests: self.zero_output,
            prefix,
        }
    }
}

/// Statistics of a whole request stream.
pub fn compute<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    block_tokens: u32,
) -> TraceStats {
    let mut b = StatsBuilder::new(block_tokens);
    for r in requests {
        b.add(r);
    }
    b.finish()
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

const SECOND_BOUNDS: [f64; 9] = [
    1.0,
    10.0,
    60.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    86400.0,
    f64::INFINITY,
];

fn pow2_bounds() -> Vec<f64> {
    let mut v: Vec<f64> = (0..=24).map(|i| (1u64 << i) as f64).collect();
    v.push(f64::INFINITY);
    v
}

fn reuse_summary(h: &Histogram<u64>, scale: f64, bounds: &[f64]) -> ReuseStats {
    if h.is_empty() {
        return ReuseStats::default();
    }
    let mut buckets: Vec<(f64, u64)> = bounds.iter().map(|&b| (b, 0)).collect();
    for v in h.iter_recorded() {
        let x = v.value_iterated_to() as f64 * scale;
        let n = v.count_at_value();
        let i = bounds
            .iter()
            .position(|&b| x < b)
            .unwrap_or(bounds.len() - 1);
        buckets[i].1 += n;
    }
    while buckets.len() > 1 && buckets.last().is_some_and(|b| b.1 == 0) {
        buckets.pop();
    }
    ReuseStats {
        reuses: h.len(),
        p50: h.value_at_quantile(0.5) as f64 * scale,
        p90: h.value_at_quantile(0.9) as f64 * scale,
        p99: h.value_at_quantile(0.99) as f64 * scale,
        max: h.max() as f64 * scale,
        buckets,
    }
}

impl fmt::Display for TraceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "  {k:<28} {v}");
        row(f, "requests", self.requests.to_string())?;
        row(f, "span", format!("{:.1} s", self.span_s))?;
        row(
            f,
            "arrivals per minute",
            format!(
                "mean {:.1}, peak {}",
                self.arrival_per_min_mean, self.arrival_per_min_peak
            ),
        )?;
        let len = |l: &LengthStats| {
            format!(
                "mean {:.0}, p50 {}, p90 {}, p99 {}, max {}",
                l.mean, l.p50, l.p90, l.p99, l.max
            )
        };
        row(f, "input tokens", len(&self.input_tokens))?;
        row(f, "output tokens", len(&self.output_tokens))?;
        if self.zero_output_requests > 0 {
            row(
                f,
                "requests with 0 output",
                self.zero_output_requests.to_string(),
            )?;
        }
        match &self.prefix {
            None => row(
                f,
                "prefix statistics",
                "none: the trace carries no block hashes".into(),
            )?,
            Some(p) => {
                row(
                    f,
                    "blocks",
                    format!(
                        "{} ({} tokens each), {} unique",
                        p.blocks, self.block_tokens, p.unique_blocks
                    ),
                )?;
                row(
                    f,
                    "cache ratio (unbounded)",
                    format!(
                        "{:.1} % of tokens, {:.1} % of blocks",
                        100.0 * p.cache_ratio,
                        100.0 * p.block_cache_ratio
                    ),
                )?;
                let r = &p.reuse_distance_blocks;
                row(
                    f,
                    "reuse distance (blocks)",
                    format!(
                        "{} reuses; p50 {:.0}, p90 {:.0}, p99 {:.0}, max {:.0}",
                        r.reuses, r.p50, r.p90, r.p99, r.max
                    ),
                )?;
                let r = &p.reuse_distance_s;
                row(
                    f,
                    "reuse distance (seconds)",
                    format!(
                        "p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1}",
                        r.p50, r.p90, r.p99, r.max
                    ),
                )?;
                writeln!(f, "  most popular first blocks:")?;
                for (i, b) in p.top_first_blocks.iter().enumerate() {
                    writeln!(
                        f,
                        "    {:>2}. block {:<12} {:>8} requests  {:>5.1} %",
                        i + 1,
                        b.block,
                        b.requests,
                        100.0 * b.share
                    )?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ms: u64, input: u32, output: u32, blocks: &[u64]) -> Request {
        Request {
            arrival: Nanos::from_millis(ms),
            input_tokens: input,
            output_tokens: output,
            blocks: blocks.iter().map(|&b| BlockKey(b)).collect(),
        }
    }

    #[test]
    fn worked_example() {
        let reqs = vec![
            req(0, 1100, 10, &[1, 2, 3]),
            req(30_000, 1024, 20, &[1, 2]),
            req(59_999, 600, 30, &[1, 4]),
            req(120_000, 100, 40, &[9]),
        ];
        let s = compute(&reqs, 512);
        assert_eq!(s.requests, 4);
        assert_eq!(s.span_s, 120.0);
        assert_eq!(s.arrival_per_min_peak, 3);
        assert_eq!(s.arrival_per_min_mean, 2.0);
        assert_eq!(s.input_tokens.max, 1100);
        assert_eq!(s.input_tokens.p50, 600);
        assert_eq!(s.output_tokens.mean, 25.0);
        let p = s.prefix.unwrap();
        assert_eq!(p.blocks, 8);
        assert_eq!(p.unique_blocks, 5);
        // hits: 0, 1024 (both blocks), 512 (block 1), 0 -> 1536 / 2824
        assert_eq!(p.cache_ratio, 1536.0 / 2824.0);
        assert_eq!(p.block_cache_ratio, 3.0 / 8.0);
        assert_eq!(p.reuse_distance_blocks.reuses, 3);
        assert_eq!(
            p.top_first_blocks[0],
            FirstBlockShare {
                block: 1,
                requests: 3,
                share: 0.75
            }
        );
        assert_eq!(p.top_first_blocks[1].block, 9);
    }

    #[test]
    fn no_hashes_no_prefix_stats() {
        let s = compute(&[req(0, 10, 0, &[]), req(1000, 20, 5, &[])], 512);
        assert!(s.prefix.is_none());
        assert_eq!(s.zero_output_requests, 1);
        assert!(s.to_string().contains("no block hashes"));
    }
}
