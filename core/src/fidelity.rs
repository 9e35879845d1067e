//! Fidelity: how far one run's per-request table is from another's for the
//! same trace and configuration, the simulator's against the real
//! backend's (`moonlab validate`). Per request, the error of TTFT and of
//! each of its parts (§5.4.3: queue, with the prefix fetch inside it;
//! prefill; transfer to decode; load); the agreement of the prefix each
//! request found and of where it ran; throughput; and the KV bytes each
//! link carried, from the records alike on both sides.

use crate::metrics::{quantile, RequestRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The error of one quantity over the requests both runs served.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PartError {
    pub name: &'static str,
    /// Means of the reference (simulated) and the measured (real) values.
    pub reference_mean_s: f64,
    pub measured_mean_s: f64,
    /// Median and 90th percentile of |measured − reference| per request.
    pub abs_p50_s: f64,
    pub abs_p90_s: f64,
    /// Median of (measured − reference) per request: the sign says which
    /// side is slower.
    pub signed_p50_s: f64,
    /// Median of |measured − reference| / reference over the requests whose
    /// reference is above 1 ms (`None` when there are none).
    pub rel_p50: Option<f64>,
}

/// How two runs of one trace compare.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fidelity {
    pub requests: usize,
    /// Requests both runs served (the errors are over these).
    pub compared: usize,
    pub ttft: PartError,
    /// Queue, fetch, prefill, transfer, load, decode, TBT.
    pub parts: Vec<PartError>,
    pub reference_hit_rate: f64,
    pub measured_hit_rate: f64,
    /// Requests that found the same prefix, and that ran on the same
    /// prefill and decode instances, on both sides.
    pub same_prefix: usize,
    pub same_placement: usize,
    /// The first request placed differently: id, and where on each side.
    pub first_divergence: Option<(u32, String)>,
    /// Served requests per second from the first arrival to the last end.
    pub reference_throughput_rps: f64,
    pub measured_throughput_rps: f64,
    /// KV bytes (the model's) per link, from the records: a prefill node's
    /// incoming fetches (`prefill-k rx`) and a decode node's incoming caches
    /// (`decode-k rx`); (reference, measured).
    pub links: BTreeMap<String, (u64, u64)>,
    /// The target: median TTFT error at most this share.
    pub target_rel: f64,
}

impl Fidelity {
    /// True if the median TTFT error is within the target.
    pub fn meets_target(&self) -> bool {
        self.ttft.rel_p50.is_some_and(|e| e <= self.target_rel)
    }

    /// The part whose median absolute error is largest (what to look at
    /// when the target is missed).
    pub fn worst_part(&self) -> Option<&PartError> {
        self.parts
            .iter()
            .filter(|p| !matches!(p.name, "decode" | "tbt" | "fetch"))
            .max_by(|a, b| a.abs_p50_s.total_cmp(&b.abs_p50_s))
    }
}

fn part(
    name: &'static str,
    pairs: &[(&RequestRecord, &RequestRecord)],
    get: impl Fn(&RequestRecord) -> f64,
) -> PartError {
    let n = pairs.len().max(1) as f64;
    let mut abs: Vec<f64> = pairs.iter().map(|(a, b)| (get(b) - get(a)).abs()).collect();
    let mut signed: Vec<f64> = pairs.iter().map(|(a, b)| get(b) - get(a)).collect();
    let mut rel: Vec<f64> = pairs
        .iter()
        .filter(|(a, _)| get(a) > 1e-3)
        .map(|(a, b)| (get(b) - get(a)).abs() / get(a))
        .collect();
    abs.sort_by(f64::total_cmp);
    signed.sort_by(f64::total_cmp);
    rel.sort_by(f64::total_cmp);
    PartError {
        name,
        reference_mean_s: pairs.iter().map(|(a, _)| get(a)).sum::<f64>() / n,
        measured_mean_s: pairs.iter().map(|(_, b)| get(b)).sum::<f64>() / n,
        abs_p50_s: quantile(&abs, 0.5),
        abs_p90_s: quantile(&abs, 0.9),
        signed_p50_s: quantile(&signed, 0.5),
        rel_p50: (!rel.is_empty()).then(|| quantile(&rel, 0.5)),
    }
}

fn hit_rate(records: &[RequestRecord]) -> f64 {
    let served = records.iter().filter(|r| r.served);
    let (hit, input) = served.fold((0u64, 0u64), |(h, i), r| {
        (h + r.prefix_tokens, i + r.input_tokens as u64)
    });
    if input == 0 {
        0.0
    } else {
        hit as f64 / input as f64
    }
}

fn throughput(records: &[RequestRecord]) -> f64 {
    let served: Vec<&RequestRecord> = records.iter().filter(|r| r.served).collect();
    let first = records
        .iter()
        .map(|r| r.arrival_s)
        .fold(f64::INFINITY, f64::min);
    let last = served.iter().map(|r| r.finish_s).fold(0.0, f64::max);
    if served.is_empty() || last <= first {
        0.0
    } else {
        served.len() as f64 / (last - first)
    }
}

fn links(
    records: &[RequestRecord],
    kv_bytes_per_token: u64,
    prefill_instances: u32,
) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for r in records.iter().filter(|r| r.served) {
        if let Some(p) = r.prefill {
            *m.entry(format!("prefill-{p} rx")).or_default() += r.fetch_bytes;
        }
        if let (Some(d), true) = (r.decode, r.output_tokens > 1) {
            let d = d.saturating_sub(prefill_instances);
            *m.entry(format!("decode-{d} rx")).or_default() +=
                r.input_tokens as u64 * kv_bytes_per_token;
        }
    }
    m
}

/// Compares `measured` (the real backend's records) with `reference` (the
/// simulator's) for the same trace: requests are matched by id.
/// `kv_bytes_per_token` is the model's; decode instance ids follow the
/// `prefill_instances` prefill ones.
pub fn compare(
    reference: &[RequestRecord],
    measured: &[RequestRecord],
    kv_bytes_per_token: u64,
    prefill_instances: u32,
    target_rel: f64,
) -> Fidelity {
    let by_id: BTreeMap<u32, &RequestRecord> = measured.iter().map(|r| (r.id, r)).collect();
    let pairs: Vec<(&RequestRecord, &RequestRecord)> = reference
        .iter()
        .filter_map(|a| by_id.get(&a.id).map(|b| (a, *b)))
        .filter(|(a, b)| a.served && b.served)
        .collect();
    let same_prefix = pairs
        .iter()
        .filter(|(a, b)| a.prefix_tokens == b.prefix_tokens)
        .count();
    let same =
        |a: &RequestRecord, b: &RequestRecord| a.prefill == b.prefill && a.decode == b.decode;
    let same_placement = pairs.iter().filter(|(a, b)| same(a, b)).count();
    let show = |r: &RequestRecord| {
        format!(
            "prefill {}, decode {}",
            r.prefill.map_or("-".into(), |p| p.to_string()),
            r.decode.map_or("-".into(), |d| d.to_string())
        )
    };
    let first_divergence = reference
        .iter()
        .filter_map(|a| by_id.get(&a.id).map(|b| (a, *b)))
        .find(|(a, b)| !same(a, b) || a.served != b.served)
        .map(|(a, b)| {
            (
                a.id,
                format!(
                    "simulated on {} ({}), real on {} ({})",
                    show(a),
                    a.outcome(),
                    show(b),
                    b.outcome()
                ),
            )
        });
    let ref_links = links(reference, kv_bytes_per_token, prefill_instances);
    let real_links = links(measured, kv_bytes_per_token, prefill_instances);
    let mut link_pairs = BTreeMap::new();
    for k in ref_links.keys().chain(real_links.keys()) {
        link_pairs.insert(
            k.clone(),
            (
                ref_links.get(k).copied().unwrap_or(0),
                real_links.get(k).copied().unwrap_or(0),
            ),
        );
    }
    Fidelity {
        requests: reference.len(),
        compared: pairs.len(),
        ttft: part("ttft", &pairs, |r| r.ttft_s),
        parts: vec![
            part("queue", &pairs, |r| r.queue_s),
            part("fetch", &pairs, |r| r.fetch_s),
            part("prefill", &pairs, |r| r.prefill_s),
            part("transfer", &pairs, |r| r.transfer_s),
            part("load", &pairs, |r| r.load_s),
            part("decode", &pairs, |r| r.decode_s),
            part("tbt", &pairs, |r| r.tbt_s),
        ],
        reference_hit_rate: hit_rate(reference),
        measured_hit_rate: hit_rate(measured),
        same_prefix,
        same_placement,
        first_divergence,
        reference_throughput_rps: throughput(reference),
        measured_throughput_rps: throughput(measured),
        links: link_pairs,
        target_rel,
    }
}

fn ms(s: f64) -> String {
    format!("{:.2}", s * 1e3)
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |x| format!("{:.1} %", 100.0 * x))
}

/// The fidelity table in Markdown, with the verdict.
pub fn render_markdown(f: &Fidelity) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Fidelity: {} requests, {} served by both (simulated = reference, real = measured)\n",
        f.requests, f.compared
    );
    let _ = writeln!(
        s,
        "| quantity | simulated mean (ms) | real mean (ms) | median error (ms) | p90 error (ms) | median real − sim (ms) | median relative error |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for p in std::iter::once(&f.ttft).chain(&f.parts) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            ms(p.reference_mean_s),
            ms(p.measured_mean_s),
            ms(p.abs_p50_s),
            ms(p.abs_p90_s),
            ms(p.signed_p50_s),
            pct(p.rel_p50)
        );
    }
    let _ = writeln!(s);
    let n = f.compared.max(1) as f64;
    let _ = writeln!(
        s,
        "- hit rate: simulated {:.2} %, real {:.2} %; the same prefix found by {} of {} requests ({:.1} %)",
        100.0 * f.reference_hit_rate,
        100.0 * f.measured_hit_rate,
        f.same_prefix,
        f.compared,
        100.0 * f.same_prefix as f64 / n
    );
    let _ = writeln!(
        s,
        "- placement: the same prefill and decode instances for {} of {} requests{}",
        f.same_placement,
        f.compared,
        match &f.first_divergence {
            Some((id, how)) => format!("; the first to differ is request {id}: {how}"),
            None => String::new(),
        }
    );
    let _ = writeln!(
        s,
        "- throughput: simulated {:.3} requests/s, real {:.3} requests/s",
        f.reference_throughput_rps, f.measured_throughput_rps
    );
    if !f.links.is_empty() {
        let _ = writeln!(
            s,
            "\n| link | simulated KV bytes | real KV bytes (model's) |"
        );
        let _ = writeln!(s, "|---|---|---|");
        for (k, (a, b)) in &f.links {
            let _ = writeln!(s, "| {k} | {a} | {b} |");
        }
    }
    let _ = writeln!(s);
    match f.ttft.rel_p50 {
        Some(e) if f.meets_target() => {
            let _ = writeln!(
                s,
                "Target met: median TTFT error {:.1} % ≤ {:.0} %.",
                100.0 * e,
                100.0 * f.target_rel
            );
        }
        e => {
            let worst = f.worst_part().map_or(String::new(), |w| {
                format!(
                    "; the part furthest off is {} (median error {} ms, real − sim {} ms)",
                    w.name,
                    ms(w.abs_p50_s),
                    ms(w.signed_p50_s)
                )
            });
            let _ = writeln!(
                s,
                "Target missed: median TTFT error {} > {:.0} %{worst}.",
                pct(e),
                100.0 * f.target_rel
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u32, ttft: f64, queue: f64, prefix: u64, prefill: u32) -> RequestRecord {
        RequestRecord {
            id,
            served: true,
            prefill: Some(prefill),
            decode: Some(2),
            input_tokens: 1000,
            output_tokens: 10,
            prefix_tokens: prefix,
            queue_s: queue,
            prefill_s: ttft - queue,
            ttft_s: ttft,
            finish_s: ttft + 1.0,
            ..RequestRecord::default()
        }
    }

    #[test]
    fn errors_are_per_request_and_hand_computable() {
        // Reference TTFTs 1, 2, 4 s; measured 1.05, 2.0, 3.0 s: relative
        // errors 5 %, 0 %, 25 % → median 5 %; absolute 0.05, 0, 1 → median
        // 0.05 s; signed +0.05, 0, −1 → median 0.
        let sim = vec![
            rec(0, 1.0, 0.0, 0, 0),
            rec(1, 2.0, 0.5, 512, 0),
            rec(2, 4.0, 1.0, 512, 1),
        ];
        let real = vec![
            rec(0, 1.05, 0.05, 0, 0),
            rec(1, 2.0, 0.5, 512, 0),
            rec(2, 3.0, 0.0, 0, 0),
        ];
        let f = compare(&sim, &real, 100, 2, 0.10);
        assert_eq!(f.compared, 3);
        assert!((f.ttft.rel_p50.unwrap() - 0.05).abs() < 1e-12);
        assert!((f.ttft.abs_p50_s - 0.05).abs() < 1e-12);
        assert!(f.ttft.signed_p50_s.abs() < 1e-12);
        assert!(f.meets_target());
        assert_eq!(f.same_prefix, 2);
        assert_eq!(f.same_placement, 2);
        assert_eq!(f.first_divergence.as_ref().unwrap().0, 2);
        // Hit rate: (0 + 512 + 512) / 3000 against 512 / 3000.
        assert!((f.reference_hit_rate - 1024.0 / 3000.0).abs() < 1e-12);
        assert!((f.measured_hit_rate - 512.0 / 3000.0).abs() < 1e-12);
        // Decode instance 2 is decode-0 after 2 prefill instances: three
        // requests of 1000 tokens at 100 bytes.
        assert_eq!(f.links["decode-0 rx"], (300_000, 300_000));
        let table = render_markdown(&f);
        assert!(table.contains("Target met"), "{table}");
    }

    #[test]
    fn a_missed_target_names_the_part_furthest_off() {
        let sim = vec![rec(0, 1.0, 0.0, 0, 0), rec(1, 1.0, 0.0, 0, 0)];
        let real = vec![rec(0, 2.0, 1.0, 0, 0), rec(1, 2.0, 1.0, 0, 0)];
        let f = compare(&sim, &real, 100, 2, 0.10);
        assert!(!f.meets_target());
        assert_eq!(f.worst_part().unwrap().name, "queue");
        let table = render_markdown(&f);
        assert!(
            table.contains("Target missed") && table.contains("queue"),
            "{table}"
        );
    }
}
