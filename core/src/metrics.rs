//! What a run reports, defined once for the simulator and the real backend:
//! the per-request record ([`RequestRecord`]) and its column list
//! ([`REQUEST_COLUMNS`], which the CSV and Parquet writers both follow), the
//! paper's metric definitions (§5.1: TTFT, TBT as the mean of the longest
//! 10 % of a request's token intervals, SLO attainment, effective request
//! capacity) and the run's [`Summary`].

use crate::sched::Slo;
use crate::types::Nanos;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::{self, Write as _};

/// Everything recorded about one request.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RequestRecord {
    pub id: u32,
    pub arrival_s: f64,
    pub served: bool,
    pub reject_reason: Option<&'static str>,
    pub prefill: Option<u32>,
    pub decode: Option<u32>,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Prefix tokens found on the prefill node (its DRAM and SSD tier) at
    /// prefill start, including replicas fetched for this request.
    pub prefix_tokens: u64,
    /// Of those, tokens read back from the node's SSD tier.
    pub ssd_tokens: u64,
    /// Of those, tokens fetched from another node for this request.
    pub fetched_tokens: u64,
    pub fetch_bytes: u64,
    /// Time the remote prefix took to arrive (within `queue_s`).
    pub fetch_s: f64,
    /// TTFT's parts (§5.4.3), which add up to `ttft_s`: scheduling and
    /// queueing (arrival to prefill start, a prefix fetch included) ...
    pub queue_s: f64,
    /// ... the layer-wise prefill (start to end: compute, with the prefix's
    /// load into HBM and any SSD read overlapped) ...
    pub prefill_s: f64,
    /// ... the cache's transfer to the decode node, what of it the prefill
    /// did not hide ...
    pub transfer_s: f64,
    /// ... and the decode node's load of the cache from DRAM into HBM.
    pub load_s: f64,
    /// Arrival to the first token the user sees.
    pub ttft_s: f64,
    /// The prefill's GPU compute, in seconds of one node (on a pipelined
    /// group the work of all its nodes, so it may exceed `prefill_s`).
    pub compute_s: f64,
    /// Decoding: first token to last.
    pub decode_s: f64,
    pub tbt_s: f64,
    pub finish_s: f64,
}

impl RequestRecord {
    /// The record of request `id` as it arrives: its shape, nothing yet
    /// of how it is served.
    pub fn arrived(id: u32, r: &crate::Request) -> RequestRecord {
        RequestRecord {
            id,
            arrival_s: r.arrival.as_secs_f64(),
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            ..RequestRecord::default()
        }
    }

    /// How the request ended: `served`, `rejected` (with a reason), or
    /// `unfinished` (still in the system when the run stopped).
    pub fn outcome(&self) -> &'static str {
        match (self.served, self.reject_reason) {
            (true, _) => "served",
            (false, Some(_)) => "rejected",
            (false, None) => "unfinished",
        }
    }
}

/// The type of a column of the per-request table.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ColumnType {
    U32,
    U64,
    F64,
    Bool,
    /// A nullable u32.
    OptU32,
    /// A nullable string.
    OptStr,
}

/// One value of a column.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Cell {
    U32(u32),
    U64(u64),
    F64(f64),
    Bool(bool),
    OptU32(Option<u32>),
    OptStr(Option<&'static str>),
}

impl fmt::Display for Cell {
    /// The CSV text of the value (empty for null).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::U32(v) => write!(f, "{v}"),
            Cell::U64(v) => write!(f, "{v}"),
            Cell::F64(v) => write!(f, "{v}"),
            Cell::Bool(v) => write!(f, "{v}"),
            Cell::OptU32(v) => v.map_or(Ok(()), |v| write!(f, "{v}")),
            Cell::OptStr(v) => f.write_str(v.unwrap_or("")),
        }
    }
}

/// A column of the per-request table: its name, type and value.
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub get: fn(&RequestRecord) -> Cell,
}

/// A column named after its field, with the same type for the column and
/// its cells.
macro_rules! column {
    ($field:ident, $ty:ident) => {
        Column {
            name: stringify!($field),
            ty: ColumnType::$ty,
            get: |r| Cell::$ty(r.$field),
        }
    };
}

/// The per-request table's columns, in order.
pub const REQUEST_COLUMNS: &[Column] = &[
    column!(id, U32),
    column!(arrival_s, F64),
    Column {
        name: "outcome",
        ty: ColumnType::OptStr,
        get: |r| Cell::OptStr(Some(r.outcome())),
    },
    column!(served, Bool),
    column!(reject_reason, OptStr),
    column!(prefill, OptU32),
    column!(decode, OptU32),
    column!(input_tokens, U32),
    column!(output_tokens, U32),
    column!(prefix_tokens, U64),
    column!(ssd_tokens, U64),
    column!(fetched_tokens, U64),
    column!(fetch_bytes, U64),
    column!(fetch_s, F64),
    column!(queue_s, F64),
    column!(prefill_s, F64),
    column!(transfer_s, F64),
    column!(load_s, F64),
    column!(ttft_s, F64),
    column!(compute_s, F64),
    column!(decode_s, F64),
    column!(tbt_s, F64),
    column!(finish_s, F64),
];

/// The per-request table as CSV text: a header, then one line per record.
pub fn requests_csv(records: &[RequestRecord]) -> String {
    let mut s = String::with_capacity(64 + records.len() * 160);
    for (i, c) in REQUEST_COLUMNS.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(c.name);
    }
    s.push('\n');
    for r in records {
        for (i, c) in REQUEST_COLUMNS.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{}", (c.get)(r));
        }
        s.push('\n');
    }
    s
}

/// A request's TBT as §5.1 defines it: the mean of the longest 10 % of its
/// inter-token intervals, kept in a bounded min-heap as intervals arrive.
#[derive(Clone, Debug, Default)]
pub struct LongestIntervals {
    heap: BinaryHeap<Reverse<u64>>,
    cap: usize,
}

impl LongestIntervals {
    /// For a request of `output_tokens`: its `output_tokens − 1` intervals,
    /// of which the longest `ceil(10 %)` count.
    pub fn for_output(output_tokens: u32) -> LongestIntervals {
        LongestIntervals {
            heap: BinaryHeap::new(),
            cap: (output_tokens.saturating_sub(1) as usize).div_ceil(10),
        }
    }

    #[inline]
    pub fn push(&mut self, interval: Nanos) {
        let v = interval.0;
        if self.cap == 0 {
            return;
        }
        if self.heap.len() < self.cap {
            self.heap.push(Reverse(v));
        } else if self.heap.peek().is_some_and(|m| m.0 < v) {
            self.heap.pop();
            self.heap.push(Reverse(v));
        }
    }

    /// The mean of the intervals kept, in seconds (0 without intervals).
    pub fn tbt_s(&self) -> f64 {
        if self.heap.is_empty() {
            0.0
        } else {
            self.heap.iter().map(|x| x.0 as f64).sum::<f64>() / self.heap.len() as f64 / 1e9
        }
    }
}

/// Totals of a run that do not come from the request records: bytes moved
/// per link kind, busy time per instance, the end of the run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunTotals {
    pub nic_bytes: f64,
    pub h2d_bytes: f64,
    pub ssd_bytes: f64,
    pub prefill_busy_s: Vec<f64>,
    pub decode_busy_s: Vec<f64>,
    /// Events processed (simulator) or operations served (real backend).
    pub events: u64,
    pub end: Nanos,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub scheduler: String,
    pub requests: u64,
    pub served: u64,
    /// Requests turned away, each with a reason (`reject_reason`).
    pub rejected: u64,
    /// Requests still in the system when the run stopped: neither served
    /// nor rejected.
    pub unfinished: u64,
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
    /// Generated tokens per second of run time.
    pub throughput_tokens_per_s: f64,
    /// Σ prefix tokens reused / Σ input tokens of served requests.
    pub hit_rate: f64,
    /// Mean prefill compute per served request, seconds of one instance.
    pub prefill_gpu_s_per_request: f64,
    /// TTFT's parts (§5.4.3, Figure 14), means over served requests:
    /// scheduling and queueing, layer-wise prefill, the cache's transfer to
    /// the decode node, its load into HBM; then decoding (first to last token).
    pub queue_mean_s: f64,
    pub prefill_mean_s: f64,
    pub transfer_mean_s: f64,
    pub load_mean_s: f64,
    pub decode_mean_s: f64,
    pub nic_bytes: f64,
    pub h2d_bytes: f64,
    /// Bytes read from and written to the SSD tier.
    pub ssd_bytes: f64,
    pub fetch_bytes: u64,
    /// Busy time / run time, averaged over instances.
    pub prefill_utilization: f64,
    pub decode_utilization: f64,
    pub events: u64,
    pub sim_end_s: f64,
    /// Wall time of the run on the host: the one field that is not a pure
    /// function of (trace, config, seed). Filled in by the caller.
    pub wall_s: f64,
}

/// Nearest-rank quantile of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
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

pub fn summarize(
    records: &[RequestRecord],
    scheduler: &str,
    slo: Slo,
    totals: &RunTotals,
) -> Summary {
    let rs = records;
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
    let end = totals.end.as_secs_f64().max(1e-9);
    let input: u64 = served.iter().map(|r| r.input_tokens as u64).sum();
    let prefix: u64 = served.iter().map(|r| r.prefix_tokens).sum();
    let util = |busy: &[f64]| mean(&busy.iter().map(|b| b / end).collect::<Vec<_>>());
    Summary {
        scheduler: scheduler.to_string(),
        requests: rs.len() as u64,
        served: served.len() as u64,
        rejected: rs.iter().filter(|r| r.outcome() == "rejected").count() as u64,
        unfinished: rs.iter().filter(|r| r.outcome() == "unfinished").count() as u64,
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
        prefill_gpu_s_per_request: mean(&served.iter().map(|r| r.compute_s).collect::<Vec<_>>()),
        queue_mean_s: mean(&served.iter().map(|r| r.queue_s).collect::<Vec<_>>()),
        prefill_mean_s: mean(&served.iter().map(|r| r.prefill_s).collect::<Vec<_>>()),
        transfer_mean_s: mean(&served.iter().map(|r| r.transfer_s).collect::<Vec<_>>()),
        load_mean_s: mean(&served.iter().map(|r| r.load_s).collect::<Vec<_>>()),
        decode_mean_s: mean(&served.iter().map(|r| r.decode_s).collect::<Vec<_>>()),
        nic_bytes: totals.nic_bytes,
        h2d_bytes: totals.h2d_bytes,
        ssd_bytes: totals.ssd_bytes,
        fetch_bytes: rs.iter().map(|r| r.fetch_bytes).sum(),
        prefill_utilization: util(&totals.prefill_busy_s),
        decode_utilization: util(&totals.decode_busy_s),
        events: totals.events,
        sim_end_s: end,
        wall_s: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.9), 4.0);
        assert_eq!(quantile(&[], 0.9), 0.0);
    }

    #[test]
    fn tbt_is_the_mean_of_the_longest_tenth() {
        // 21 tokens: 20 intervals, the longest 2 count.
        let mut t = LongestIntervals::for_output(21);
        for ms in [5, 1, 9, 3, 7, 2, 8, 4, 6, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1] {
            t.push(Nanos::from_millis(ms));
        }
        assert!((t.tbt_s() - 0.0085).abs() < 1e-12);
        // 2 tokens: one interval, which is the TBT; 1 token: none.
        let mut t = LongestIntervals::for_output(2);
        t.push(Nanos::from_millis(40));
        assert!((t.tbt_s() - 0.04).abs() < 1e-12);
        let mut t = LongestIntervals::for_output(1);
        t.push(Nanos::from_millis(40));
        assert_eq!(t.tbt_s(), 0.0);
    }

    #[test]
    fn every_column_gives_cells_of_its_type() {
        let r = RequestRecord::default();
        for c in REQUEST_COLUMNS {
            let ok = matches!(
                ((c.get)(&r), c.ty),
                (Cell::U32(_), ColumnType::U32)
                    | (Cell::U64(_), ColumnType::U64)
                    | (Cell::F64(_), ColumnType::F64)
                    | (Cell::Bool(_), ColumnType::Bool)
                    | (Cell::OptU32(_), ColumnType::OptU32)
                    | (Cell::OptStr(_), ColumnType::OptStr)
            );
            assert!(ok, "column {} gives a cell of another type", c.name);
        }
    }

    #[test]
    fn csv_follows_the_column_list() {
        let r = RequestRecord {
            id: 3,
            arrival_s: 1.5,
            served: false,
            reject_reason: Some("ttft-slo"),
            input_tokens: 7,
            output_tokens: 1,
            ..RequestRecord::default()
        };
        let csv = requests_csv(&[r]);
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        assert_eq!(
            header,
            REQUEST_COLUMNS.iter().map(|c| c.name).collect::<Vec<_>>()
        );
        assert_eq!(
            lines.next().unwrap(),
            "3,1.5,rejected,false,ttft-slo,,,7,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0"
        );
    }

    #[test]
    fn unfinished_requests_are_reported_as_unfinished_not_rejected() {
        let served = RequestRecord {
            served: true,
            ttft_s: 1.0,
            ..RequestRecord::default()
        };
        let rejected = RequestRecord {
            reject_reason: Some("ttft-slo"),
            ..RequestRecord::default()
        };
        let unfinished = RequestRecord::default();
        assert_eq!(unfinished.outcome(), "unfinished");
        let totals = RunTotals {
            end: Nanos::from_millis(1000),
            ..RunTotals::default()
        };
        let s = summarize(
            &[served, rejected, unfinished.clone(), unfinished],
            "x",
            Slo {
                ttft_s: 30.0,
                tbt_s: 0.1,
            },
            &totals,
        );
        assert_eq!(
            (s.requests, s.served, s.rejected, s.unfinished),
            (4, 1, 1, 2)
        );
        assert_eq!(s.effective_request_capacity, 0.25);
    }
}
