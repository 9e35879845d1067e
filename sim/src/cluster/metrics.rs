//! Aggregates of a cluster run: what users feel (TTFT, TBT, SLO attainment,
//! effective request capacity) and what operators pay (GPU time, bytes,
//! utilisation). Definitions follow the paper's §5.1.

use super::world::{RequestRecord, SimOutput};
use moonlab_core::sched::Slo;
use moonlab_core::BlockKey;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub scheduler: String,
    pub requests: u64,
    pub served: u64,
    pub rejected: u64,
    pub ttft_mean_s: f64,
    pub ttft_p50_s: f64,
    pub ttft_p90_s: f64,
    pub ttft_p99_s: f64,
    pub tbt_mean_s: f64,
    pub tbt_p50_s: f64,
    pub tbt_p90_s: f64,
    pub tbt_p99_s: f64,
    pub slo_ttft_s: f64,
    pub slo_tbt_s: f64,
    /// Share of all requests served with TTFT within its SLO.
    pub ttft_slo_attainment: f64,
    /// Share of all requests served with TBT within its SLO.
    pub tbt_slo_attainment: f64,
    /// Share of all requests served with both TTFT and TBT within their
    /// thresholds (§5.1); rejected requests count against it.
    pub effective_request_capacity: f64,
    /// Effective requests per second of trace time.
    pub goodput_rps: f64,
    /// Generated tokens per second of simulated time.
    pub throughput_tokens_per_s: f64,
    /// Σ prefix tokens reused / Σ input tokens of served requests.
    pub hit_rate: f64,
    /// Mean prefill compute per served request, seconds of one instance.
    pub prefill_gpu_s_per_request: f64,
    pub nic_bytes: f64,
    pub h2d_bytes: f64,
    /// Bytes read from and written to the SSD tier.
    pub ssd_bytes: f64,
    pub fetch_bytes: u64,
    /// Busy time / simulated time, averaged over instances.
    pub prefill_utilization: f64,
    pub decode_utilization: f64,
    pub events: u64,
    pub sim_end_s: f64,
    /// Wall time of the run on the host: the one field that is not a pure
    /// function of (trace, config, seed). Filled in by the caller.
    pub wall_s: f64,
}

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub fn summarize(out: &SimOutput, scheduler: &str, slo: Slo) -> Summary {
    let rs: &[RequestRecord] = &out.records;
    let served: Vec<&RequestRecord> = rs.iter().filter(|r| r.served).collect();
    let mut ttft: Vec<f64> = served.iter().map(|r| r.ttft_s).collect();
    let mut tbt: Vec<f64> = served.iter().map(|r| r.tbt_s).collect();
    ttft.sort_by(f64::total_cmp);
    tbt.sort_by(f64::total_cmp);
    let n = rs.len().max(1) as f64;
    let ok_ttft = served.iter().filter(|r| r.ttft_s <= slo.ttft_s).count() as f64;
    let ok_tbt = served.iter().filter(|r| r.tbt_s <= slo.tbt_s).count() as f64;
    let effective = served
        .iter()
        .filter(|r| r.ttft_s <= slo.ttft_s && r.tbt_s <= slo.tbt_s)
        .count() as f64;
    let span = match (rs.first(), rs.last()) {
        (Some(a), Some(b)) => (b.arrival_s - a.arrival_s).max(1e-9),
        _ => 1e-9,
    };
    let end = out.end.as_secs_f64().max(1e-9);
    let input: u64 = served.iter().map(|r| r.input_tokens as u64).sum();
    let prefix: u64 = served.iter().map(|r| r.prefix_tokens).sum();
    let util = |busy: &[f64]| mean(&busy.iter().map(|b| b / end).collect::<Vec<_>>());
    Summary {
        scheduler: scheduler.to_string(),
        requests: rs.len() as u64,
        served: served.len() as u64,
        rejected: (rs.len() - served.len()) as u64,
        ttft_mean_s: mean(&ttft),
        ttft_p50_s: quantile(&ttft, 0.5),
        ttft_p90_s: quantile(&ttft, 0.9),
        ttft_p99_s: quantile(&ttft, 0.99),
        tbt_mean_s: mean(&tbt),
        tbt_p50_s: quantile(&tbt, 0.5),
        tbt_p90_s: quantile(&tbt, 0.9),
        tbt_p99_s: quantile(&tbt, 0.99),
        slo_ttft_s: slo.ttft_s,
        slo_tbt_s: slo.tbt_s,
        ttft_slo_attainment: ok_ttft / n,
        tbt_slo_attainment: ok_tbt / n,
        effective_request_capacity: effective / n,
        goodput_rps: effective / span,
        throughput_tokens_per_s: served.iter().map(|r| r.output_tokens as f64).sum::<f64>() / end,
        hit_rate: if input == 0 {
            0.0
        } else {
            prefix as f64 / input as f64
        },
        prefill_gpu_s_per_request: mean(&served.iter().map(|r| r.prefill_s).collect::<Vec<_>>()),
        nic_bytes: out.nic_bytes,
        h2d_bytes: out.h2d_bytes,
        ssd_bytes: out.ssd_bytes,
        fetch_bytes: rs.iter().map(|r| r.fetch_bytes).sum(),
        prefill_utilization: util(&out.prefill_busy_s),
        decode_utilization: util(&out.decode_busy_s),
        events: out.events,
        sim_end_s: end,
        wall_s: 0.0,
    }
}

/// One ranked key's replica count at every sample (Figure 11).
#[derive(Clone, Debug, PartialEq)]
pub struct ReplicaSeries {
    /// 1-based rank by cumulative replica count over all samples.
    pub rank: usize,
    pub key: BlockKey,
    pub replicas: Vec<u16>,
}

/// Keys ranked by their summed replica count (descending, ties to the
/// smaller key); returns `(rank, key)` for each of `ranks` that exists.
pub fn rank_keys(totals: &[(BlockKey, u64)], ranks: &[usize]) -> Vec<(usize, BlockKey)> {
    let mut ranked: Vec<(BlockKey, u64)> = totals.to_vec();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranks
        .iter()
        .filter(|&&r| r >= 1 && r <= ranked.len())
        .map(|&r| (r, ranked[r - 1].0))
        .collect()
}

/// The paper's Figure 11 method: every resident key's replica count summed
/// over the samples ranks the keys; the series of the keys at `ranks` come
/// from the samples (which record the tracked keys' counts).
pub fn replica_series(out: &SimOutput, ranks: &[usize]) -> Vec<ReplicaSeries> {
    rank_keys(&out.replica_totals, ranks)
        .into_iter()
        .map(|(rank, key)| {
            let replicas = out
                .samples
                .iter()
                .map(|s| match s.replicas.binary_search_by_key(&key, |e| e.0) {
                    Ok(i) => s.replicas[i].1,
                    Err(_) => 0,
                })
                .collect();
            ReplicaSeries {
                rank,
                key,
                replicas,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_summed_replicas() {
        // totals: key 1 -> 5, key 2 -> 4, key 3 -> 1
        let totals = vec![(BlockKey(1), 5), (BlockKey(2), 4), (BlockKey(3), 1)];
        let r = rank_keys(&totals, &[1, 2, 3, 10]);
        assert_eq!(
            r,
            vec![(1, BlockKey(1)), (2, BlockKey(2)), (3, BlockKey(3))]
        );
        let tie = vec![(BlockKey(9), 2), (BlockKey(4), 2)];
        assert_eq!(rank_keys(&tie, &[1]), vec![(1, BlockKey(4))]);
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.9), 4.0);
        assert_eq!(quantile(&[], 0.9), 0.0);
    }
}
