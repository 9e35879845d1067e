//! `moonlab report`: a folder of specs, each with a `report` section, and
//! their results turned into one Markdown report — per spec its figures
//! (PNG and SVG), the table behind them, and the paper's values beside
//! ours with the difference and where each paper value comes from.
//!
//! ```yaml
//! report:
//!   title: "Figure 5: TTFT by prefill scheduler"
//!   text: setup, in Markdown
//!   metrics: [ttft_mean_s, ttft_p90_s]   # the table shown (default: moonlab table's)
//!   figures:
//!     - {file: fig05-ttft, kind: bars, category: scheduler, metrics: [ttft_mean_s],
//!        paper: {name: paper, values: {random: figure5-random-mean}},
//!        y_axis: {label: Mean TTFT, unit: s}}
//!   compare:
//!     - {paper: figure5-random-mean, where: {scheduler: random}, metric: ttft_mean_s}
//!     - {paper: figure10-hit-ratio, ratio: [{where: {scheduler: kvcache-centric}, metric: hit_rate},
//!                                           {where: {scheduler: local-cache-aware}, metric: hit_rate}]}
//!   notes: where and why we differ, in Markdown
//! ```
//!
//! Figure kinds: `lines` (x column, y metric, one series per `series`
//! value, 95 % intervals across seeds), `bars` (categories × metrics or ×
//! `series` values), `stacked` (categories, component metrics), `cdf` (a
//! request column pooled over the matching points), `capacity` (the share
//! of requests meeting the TTFT SLO whose TBT is within x: effective
//! request capacity against the TBT threshold), `replicas` (Figure 11's
//! replica counts over time). A metric is a table column (its mean over
//! seeds) or `requests.<column>.<stat>` (`mean`, a quantile `p50` or
//! `q25`, or `last` — the last served request's — over the served requests
//! of the matching points), `requests.capacity.<ms>` (the effective request
//! capacity in % at that TBT threshold) or `replicas.<rank>.<max|last>` (Figure 11's
//! replica count of the key of that rank, in the first matching point).

pub mod pair;
pub mod paper;

use crate::aggregate::{estimate, sig, summarize, Estimate, Format};
use crate::figures::{self, Axis, BarSeries, Chart, Figure, RefLine, Samples, Series, TickFormat};
use crate::results::{cell_text, from_parquet};
use crate::spec::{ParamValue, Point, Spec};
use paper::PaperValues;
use polars_core::prelude::*;
use polars_io::prelude::*;
use serde_yaml_ng::{Mapping, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

type Where = Vec<(String, ParamValue)>;
/// Figure 11's series: per rank, (time s, replicas) samples.
type ReplicaSeries = Vec<(String, Vec<(f64, f64)>)>;

/// A figure of a report.
#[derive(Clone, Debug)]
pub struct FigureSpec {
    pub file: String,
    pub title: Option<String>,
    pub kind: String,
    pub x: Option<String>,
    pub x_scale: f64,
    /// Our values times this (e.g. 100 to show fractions as %).
    pub y_scale: f64,
    pub category: Option<String>,
    pub series: Option<String>,
    pub metrics: Vec<String>,
    pub column: Option<String>,
    pub filter: Where,
    pub labels: HashMap<String, String>,
    pub x_axis: AxisSpec,
    pub y_axis: AxisSpec,
    /// Bars: a paper series (name, category value → paper value id).
    pub paper_bars: Option<(String, Vec<(String, String)>)>,
    /// Lines, capacity, replicas: paper curves (curve id, legend name).
    pub paper_curves: Vec<(String, String)>,
    pub ref_line: Option<(f64, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct AxisSpec {
    pub label: String,
    pub unit: Option<String>,
    pub log: bool,
    pub percent: bool,
    pub range: Option<(f64, f64)>,
}

impl AxisSpec {
    fn axis(&self, fallback: &str) -> Axis {
        let mut a = Axis::new(if self.label.is_empty() {
            fallback
        } else {
            &self.label
        });
        if let Some(u) = &self.unit {
            a = a.unit(u.clone());
        }
        if self.log {
            a = a.log();
        }
        if self.percent {
            a = a.format(TickFormat::Percent);
        }
        if let Some((lo, hi)) = self.range {
            a = a.range(lo, hi);
        }
        a
    }
}

/// One side of a comparison: a metric over the rows matching `where`.
#[derive(Clone, Debug)]
pub struct Measure {
    pub filter: Where,
    pub metric: String,
}

/// A paper value beside ours.
#[derive(Clone, Debug)]
pub struct CompareSpec {
    pub paper: String,
    /// For a range: which end (0 or 1).
    pub index: Option<usize>,
    /// Ours is `measure`, or `ratio` of two measures, times `scale`.
    pub measure: Option<Measure>,
    pub ratio: Option<(Measure, Measure)>,
    pub scale: f64,
    pub label: Option<String>,
    /// How a ratio a/b is shown: `ratio` (a/b), `reduction` (100 (1 − a/b),
    /// in %) or `increase` (100 (a/b − 1), in %).
    pub ratio_as: String,
}

#[derive(Clone, Debug)]
pub struct ReportSpec {
    pub title: String,
    pub text: String,
    pub metrics: Option<Vec<String>>,
    pub by: Option<Vec<String>>,
    pub figures: Vec<FigureSpec>,
    pub compare: Vec<CompareSpec>,
    pub notes: String,
}

fn str_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn check_keys(m: &Mapping, allowed: &[&str], at: &str) -> Result<(), String> {
    for k in m.keys() {
        let k = k.as_str().unwrap_or_default();
        if !allowed.contains(&k) {
            return Err(format!(
                "{at}: unknown key `{k}` (expected one of: {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

fn parse_where(v: Option<&Value>, at: &str) -> Result<Where, String> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let key = k.as_str().unwrap_or_default().to_string();
                let value = ParamValue::from_yaml(v)
                    .ok_or_else(|| format!("{at}.where.{key}: expected a single value"))?;
                Ok((key, value))
            })
            .collect(),
        Some(_) => Err(format!("{at}.where: expected a mapping of column: value")),
    }
}

fn parse_axis(v: Option<&Value>, at: &str) -> Result<AxisSpec, String> {
    let Some(v) = v else {
        return Ok(AxisSpec::default());
    };
    let Value::Mapping(m) = v else {
        return Err(format!(
            "{at}: expected {{label, unit, log, percent, range}}"
        ));
    };
    check_keys(m, &["label", "unit", "log", "percent", "range"], at)?;
    let range = match m.get("range") {
        None => None,
        Some(Value::Sequence(r)) if r.len() == 2 => Some((
            r[0].as_f64()
                .ok_or(format!("{at}.range: expected two numbers"))?,
            r[1].as_f64()
                .ok_or(format!("{at}.range: expected two numbers"))?,
        )),
        Some(_) => return Err(format!("{at}.range: expected [low, high]")),
    };
    Ok(AxisSpec {
        label: m.get("label").and_then(str_of).unwrap_or_default(),
        unit: m.get("unit").and_then(str_of),
        log: m.get("log").and_then(|b| b.as_bool()).unwrap_or(false),
        percent: m.get("percent").and_then(|b| b.as_bool()).unwrap_or(false),
        range,
    })
}

fn parse_measure(v: &Value, at: &str) -> Result<Measure, String> {
    let Value::Mapping(m) = v else {
        return Err(format!("{at}: expected {{where, metric}}"));
    };
    check_keys(m, &["where", "metric"], at)?;
    Ok(Measure {
        filter: parse_where(m.get("where"), at)?,
        metric: m
            .get("metric")
            .and_then(str_of)
            .ok_or_else(|| format!("{at}.metric: missing"))?,
    })
}

const KINDS: &[&str] = &["lines", "bars", "stacked", "cdf", "capacity", "replicas"];

impl ReportSpec {
    pub fn from_spec(spec: &Spec) -> Result<Option<ReportSpec>, String> {
        let at0 = format!("{}: report", spec.path.display());
        let Some(section) = spec.extra.get("report") else {
            return Ok(None);
        };
        let Value::Mapping(m) = section else {
            return Err(format!("{at0}: expected a mapping"));
        };
        check_keys(
            m,
            &[
                "title", "text", "metrics", "by", "figures", "compare", "notes",
            ],
            &at0,
        )?;
        let list = |key: &str| -> Result<Option<Vec<String>>, String> {
            match m.get(key) {
                None => Ok(None),
                Some(Value::Sequence(s)) => s
                    .iter()
                    .map(|x| str_of(x).ok_or_else(|| format!("{at0}.{key}: expected names")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(format!("{at0}.{key}: expected a list of column names")),
            }
        };
        let mut figures_out: Vec<FigureSpec> = Vec::new();
        if let Some(v) = m.get("figures") {
            let Value::Sequence(fs) = v else {
                return Err(format!("{at0}.figures: expected a list"));
            };
            for (i, f) in fs.iter().enumerate() {
                let at = format!("{at0}.figures[{i}]");
                let Value::Mapping(fm) = f else {
                    return Err(format!("{at}: expected a mapping"));
                };
                check_keys(
                    fm,
                    &[
                        "file",
                        "title",
                        "kind",
                        "x",
                        "x_scale",
                        "y_scale",
                        "category",
                        "series",
                        "metrics",
                        "y",
                        "column",
                        "where",
                        "labels",
                        "x_axis",
                        "y_axis",
                        "paper",
                        "paper_curves",
                        "ref_line",
                    ],
                    &at,
                )?;
                let file = fm
                    .get("file")
                    .and_then(str_of)
                    .filter(|f| {
                        !f.is_empty()
                            && f.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    })
                    .ok_or_else(|| {
                        format!("{at}.file: expected a file stem (letters, digits, -)")
                    })?;
                let kind = fm.get("kind").and_then(str_of).unwrap_or_default();
                if !KINDS.contains(&kind.as_str()) {
                    return Err(format!(
                        "{at}.kind: {kind:?} (expected one of: {})",
                        KINDS.join(", ")
                    ));
                }
                let mut metrics: Vec<String> = match fm.get("metrics") {
                    None => Vec::new(),
                    Some(Value::Sequence(s)) => s.iter().filter_map(str_of).collect(),
                    Some(_) => return Err(format!("{at}.metrics: expected a list")),
                };
                if let Some(y) = fm.get("y").and_then(str_of) {
                    metrics.insert(0, y);
                }
                let labels = match fm.get("labels") {
                    None => HashMap::new(),
                    Some(Value::Mapping(l)) => l
                        .iter()
                        .filter_map(|(k, v)| Some((str_of(k)?, str_of(v)?)))
                        .collect(),
                    Some(_) => return Err(format!("{at}.labels: expected value: label")),
                };
                let paper_bars = match fm.get("paper") {
                    None => None,
                    Some(Value::Mapping(p)) => {
                        let name = p.get("name").and_then(str_of).unwrap_or("paper".into());
                        let Some(Value::Mapping(vals)) = p.get("values") else {
                            return Err(format!("{at}.paper.values: expected category: paper id"));
                        };
                        Some((
                            name,
                            vals.iter()
                                .filter_map(|(k, v)| Some((str_of(k)?, str_of(v)?)))
                                .collect(),
                        ))
                    }
                    Some(_) => return Err(format!("{at}.paper: expected {{name, values}}")),
                };
                let paper_curves = match fm.get("paper_curves") {
                    None => Vec::new(),
                    Some(Value::Mapping(c)) => c
                        .iter()
                        .filter_map(|(k, v)| Some((str_of(k)?, str_of(v)?)))
                        .collect(),
                    Some(_) => {
                        return Err(format!("{at}.paper_curves: expected curve id: legend name"))
                    }
                };
                let ref_line = match fm.get("ref_line") {
                    None => None,
                    Some(Value::Mapping(r)) => Some((
                        r.get("y")
                            .and_then(|y| y.as_f64())
                            .ok_or(format!("{at}.ref_line.y: expected a number"))?,
                        r.get("label").and_then(str_of).unwrap_or_default(),
                    )),
                    Some(_) => return Err(format!("{at}.ref_line: expected {{y, label}}")),
                };
                if figures_out.iter().any(|g| g.file == file) {
                    return Err(format!("{at}.file: {file:?} is another figure's file"));
                }
                figures_out.push(FigureSpec {
                    file,
                    title: fm.get("title").and_then(str_of),
                    kind,
                    x: fm.get("x").and_then(str_of),
                    x_scale: fm.get("x_scale").and_then(|x| x.as_f64()).unwrap_or(1.0),
                    y_scale: fm.get("y_scale").and_then(|x| x.as_f64()).unwrap_or(1.0),
                    category: fm.get("category").and_then(str_of),
                    series: fm.get("series").and_then(str_of),
                    metrics,
                    column: fm.get("column").and_then(str_of),
                    filter: parse_where(fm.get("where"), &at)?,
                    labels,
                    x_axis: parse_axis(fm.get("x_axis"), &format!("{at}.x_axis"))?,
                    y_axis: parse_axis(fm.get("y_axis"), &format!("{at}.y_axis"))?,
                    paper_bars,
                    paper_curves,
                    ref_line,
                });
            }
        }
        let mut compare = Vec::new();
        if let Some(v) = m.get("compare") {
            let Value::Sequence(cs) = v else {
                return Err(format!("{at0}.compare: expected a list"));
            };
            for (i, c) in cs.iter().enumerate() {
                let at = format!("{at0}.compare[{i}]");
                let Value::Mapping(cm) = c else {
                    return Err(format!("{at}: expected a mapping"));
                };
                check_keys(
                    cm,
                    &[
                        "paper", "index", "where", "metric", "ratio", "as", "scale", "label",
                    ],
                    &at,
                )?;
                let paper = cm
                    .get("paper")
                    .and_then(str_of)
                    .ok_or_else(|| format!("{at}.paper: expected a paper value id"))?;
                let (measure, ratio) = match (cm.get("metric"), cm.get("ratio")) {
                    (Some(_), None) => (
                        Some(Measure {
                            filter: parse_where(cm.get("where"), &at)?,
                            metric: cm.get("metric").and_then(str_of).unwrap_or_default(),
                        }),
                        None,
                    ),
                    (None, Some(Value::Sequence(r))) if r.len() == 2 => (
                        None,
                        Some((
                            parse_measure(&r[0], &format!("{at}.ratio[0]"))?,
                            parse_measure(&r[1], &format!("{at}.ratio[1]"))?,
                        )),
                    ),
                    _ => {
                        return Err(format!(
                            "{at}: expected `metric` (with `where`) or `ratio: [a, b]`"
                        ))
                    }
                };
                compare.push(CompareSpec {
                    paper,
                    index: cm.get("index").and_then(|x| x.as_u64()).map(|x| x as usize),
                    measure,
                    ratio,
                    scale: cm.get("scale").and_then(|x| x.as_f64()).unwrap_or(1.0),
                    label: cm.get("label").and_then(str_of),
                    ratio_as: {
                        let a = cm.get("as").and_then(str_of).unwrap_or("ratio".into());
                        if !["ratio", "reduction", "increase"].contains(&a.as_str()) {
                            return Err(format!(
                                "{at}.as: {a:?} (expected ratio, reduction or increase)"
                            ));
                        }
                        a
                    },
                });
            }
        }
        Ok(Some(ReportSpec {
            title: m
                .get("title")
                .and_then(str_of)
                .ok_or_else(|| format!("{at0}.title: missing"))?,
            text: m.get("text").and_then(str_of).unwrap_or_default(),
            metrics: list("metrics")?,
            by: list("by")?,
            figures: figures_out,
            compare,
            notes: m.get("notes").and_then(str_of).unwrap_or_default(),
        }))
    }
}

/// A spec's finished results: its table and its points' run folders.
pub struct Results {
    pub spec: Spec,
    pub dir: PathBuf,
    pub table: DataFrame,
    pub points: Vec<Point>,
    requests: RefCell<HashMap<(String, String), Vec<f64>>>,
}

fn same(cell: &str, want: &ParamValue) -> bool {
    match (cell.parse::<f64>(), want.as_f64()) {
        (Ok(a), Some(b)) => a == b,
        _ => cell == want.to_string(),
    }
}

impl Results {
    pub fn load(spec: Spec, dir: PathBuf) -> Result<Results, String> {
        let path = dir.join("table.parquet");
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "{}: cannot read ({e}); run `moonlab run {}` first",
                path.display(),
                spec.path.display()
            )
        })?;
        let table = from_parquet(bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let points = spec.points();
        let stale = || {
            format!(
                "{}: the table is not this spec's current run (the spec, its configuration or its traces changed, or a rerun failed): run `moonlab run {}` again",
                path.display(),
                spec.path.display()
            )
        };
        if table.height() != points.len() {
            return Err(stale());
        }
        // Row i must be point i: request tables are found by id.
        let ids = table
            .column(crate::results::POINT_ID)
            .map_err(|_| format!("{}: no point_id column", path.display()))?;
        for (i, p) in points.iter().enumerate() {
            let id = ids.get(i).map_err(|e| e.to_string())?;
            if cell_text(&id).trim_matches('"') != p.id {
                return Err(stale());
            }
        }
        Ok(Results {
            spec,
            dir,
            table,
            points,
            requests: RefCell::new(HashMap::new()),
        })
    }

    fn cell(&self, column: &str, row: usize) -> Result<String, String> {
        let c = self
            .table
            .column(column)
            .map_err(|_| format!("no column `{column}` in the table of {}", self.spec.name))?;
        Ok(cell_text(&c.get(row).map_err(|e| e.to_string())?)
            .trim_matches('"')
            .to_string())
    }

    /// Rows matching every (column, value) of `filter`.
    pub fn rows(&self, filter: &[(String, ParamValue)]) -> Result<Vec<usize>, String> {
        let mut out = Vec::new();
        for row in 0..self.table.height() {
            let mut ok = true;
            for (k, v) in filter {
                if !same(&self.cell(k, row)?, v) {
                    ok = false;
                    break;
                }
            }
            if ok {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Distinct values of a column among `rows`, in order of appearance.
    fn distinct(&self, column: &str, rows: &[usize]) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for &r in rows {
            let v = self.cell(column, r)?;
            if !out.contains(&v) {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// A request column of one point, served requests only.
    fn request_values(&self, row: usize, column: &str) -> Result<Vec<f64>, String> {
        let id = self.points[row].id.clone();
        let key = (id.clone(), column.to_string());
        if let Some(v) = self.requests.borrow().get(&key) {
            return Ok(v.clone());
        }
        let path = self.dir.join(&id).join("requests.parquet");
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let df = ParquetReader::new(file)
            .with_columns(Some(vec![column.to_string(), "served".to_string()]))
            .finish()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let served = df.column("served").map_err(|e| e.to_string())?;
        let served = served.bool().map_err(|e| e.to_string())?;
        let col = df
            .column(column)
            .and_then(|c| c.cast(&DataType::Float64))
            .map_err(|e| format!("{}: {column}: {e}", path.display()))?;
        let col = col.f64().map_err(|e| e.to_string())?;
        let v: Vec<f64> = (0..df.height())
            .filter(|&i| served.get(i) == Some(true))
            .filter_map(|i| col.get(i))
            .collect();
        self.requests.borrow_mut().insert(key, v.clone());
        Ok(v)
    }

    /// Requests of one point: (served, ttft, tbt) for capacity curves.
    fn request_outcomes(&self, row: usize) -> Result<Vec<(bool, f64, f64)>, String> {
        let id = &self.points[row].id;
        let path = self.dir.join(id).join("requests.parquet");
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let df = ParquetReader::new(file)
            .with_columns(Some(vec!["served".into(), "ttft_s".into(), "tbt_s".into()]))
            .finish()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let get = |name: &str| -> Result<Vec<Option<f64>>, String> {
            let c = df.column(name).map_err(|e| e.to_string())?;
            let c = c.f64().map_err(|e| e.to_string())?;
            Ok((0..c.len()).map(|i| c.get(i)).collect())
        };
        let served = df.column("served").map_err(|e| e.to_string())?;
        let served = served.bool().map_err(|e| e.to_string())?;
        let (ttft, tbt) = (get("ttft_s")?, get("tbt_s")?);
        Ok((0..df.height())
            .map(|i| {
                (
                    served.get(i) == Some(true),
                    ttft[i].unwrap_or(f64::INFINITY),
                    tbt[i].unwrap_or(f64::INFINITY),
                )
            })
            .collect())
    }

    /// Figure 11's replica counts over time of one point, by rank.
    fn replica_series(&self, row: usize) -> Result<ReplicaSeries, String> {
        let id = &self.points[row].id;
        let path = self.dir.join(id).join("replicas.csv");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut by_rank: ReplicaSeries = Vec::new();
        for line in text.lines().skip(1) {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() < 4 {
                continue;
            }
            let (t, rank, n) = (
                cells[0].parse::<f64>(),
                cells[1].to_string(),
                cells[3].parse::<f64>(),
            );
            if let (Ok(t), Ok(n)) = (t, n) {
                match by_rank.iter_mut().find(|(k, _)| *k == rank) {
                    Some((_, v)) => v.push((t, n)),
                    None => by_rank.push((rank, vec![(t, n)])),
                }
            }
        }
        Ok(by_rank)
    }

    /// Checks that `rows` differ in nothing but their seed: they are one
    /// setting's repetitions, which a mean and an interval may pool.
    pub fn one_setting(&self, rows: &[usize], what: &str) -> Result<(), String> {
        let Some(&first) = rows.first() else {
            return Ok(());
        };
        let mut keys = vec![crate::results::TRACE.to_string()];
        keys.extend(crate::results::parameter_columns(&self.table).map_err(|e| e.to_string())?);
        for k in &keys {
            let v = self.cell(k, first)?;
            if let Some(&other) = rows
                .iter()
                .find(|&&r| self.cell(k, r).map(|x| x != v).unwrap_or(true))
            {
                return Err(format!(
                    "{what}: its rows differ in `{k}` ({v:?} and {:?}), not only in the seed; pin it with `where` (or group by it)",
                    self.cell(k, other)?
                ));
            }
        }
        Ok(())
    }

    /// A metric over `rows`: a table column's estimate across the rows,
    /// or `requests.<column>.<stat>` over their pooled served requests.
    pub fn metric(&self, metric: &str, rows: &[usize]) -> Result<Option<Estimate>, String> {
        if rows.is_empty() {
            return Err(format!("{}: no row matches", self.spec.name));
        }
        if let Some(rest) = metric.strip_prefix("replicas.") {
            // replicas.<rank>.<max|last>: Figure 11's series of the first row.
            let (rank, stat) = rest
                .split_once('.')
                .ok_or_else(|| format!("{metric}: expected replicas.<rank>.<max|last>"))?;
            let series = self.replica_series(rows[0])?;
            let Some((_, pts)) = series.iter().find(|(k, _)| k == rank) else {
                return Ok(None);
            };
            let v = match stat {
                "max" => pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max),
                "last" => pts.last().map_or(f64::NAN, |p| p.1),
                other => return Err(format!("{metric}: stat {other} (expected max or last)")),
            };
            return Ok(Some(Estimate {
                mean: v,
                ci95: None,
            }));
        }
        if let Some(ms) = metric.strip_prefix("requests.capacity.") {
            // Effective request capacity (%) at a TBT threshold in ms.
            let t: f64 = ms.parse().map_err(|_| {
                format!("{metric}: expected requests.capacity.<TBT threshold in ms>")
            })?;
            let (mut ok, mut n) = (0usize, 0usize);
            for &row in rows {
                let slo: f64 = self
                    .cell("slo_ttft_s", row)?
                    .parse()
                    .unwrap_or(f64::INFINITY);
                for (served, ttft, tbt) in self.request_outcomes(row)? {
                    n += 1;
                    if served && ttft <= slo && tbt <= t / 1000.0 {
                        ok += 1;
                    }
                }
            }
            return Ok((n > 0).then(|| Estimate {
                mean: 100.0 * ok as f64 / n as f64,
                ci95: None,
            }));
        }
        if let Some(rest) = metric.strip_prefix("requests.") {
            let (column, stat) = rest
                .rsplit_once('.')
                .ok_or_else(|| format!("{metric}: expected requests.<column>.<stat>"))?;
            let mut all = Vec::new();
            for &r in rows {
                all.extend(self.request_values(r, column)?);
            }
            if stat != "last" {
                all.retain(|x| x.is_finite());
            }
            if all.is_empty() {
                return Ok(None);
            }
            let value = if stat == "mean" {
                all.iter().sum::<f64>() / all.len() as f64
            } else if stat == "last" {
                all[all.len() - 1]
            } else {
                let q: f64 = stat
                    .strip_prefix('p')
                    .or_else(|| stat.strip_prefix('q'))
                    .and_then(|q| q.parse().ok())
                    .filter(|q: &f64| (0.0..=100.0).contains(q))
                    .ok_or_else(|| format!("{metric}: stat {stat} (expected mean, last or pNN)"))?;
                all.sort_by(f64::total_cmp);
                moonlab_core::metrics::quantile(&all, q / 100.0)
            };
            return Ok(Some(Estimate {
                mean: value,
                ci95: None,
            }));
        }
        let c = self
            .table
            .column(metric)
            .map_err(|_| format!("no column `{metric}` in the table of {}", self.spec.name))?
            .cast(&DataType::Float64)
            .map_err(|e| e.to_string())?;
        let c = c.f64().map_err(|e| e.to_string())?;
        let v: Vec<f64> = rows.iter().filter_map(|&r| c.get(r)).collect();
        Ok(estimate(&v))
    }
}

fn label<'a>(labels: &'a HashMap<String, String>, v: &'a str) -> &'a str {
    labels.get(v).map(String::as_str).unwrap_or(v)
}

/// Builds one figure from a spec's results.
pub fn build_figure(f: &FigureSpec, r: &Results, paper: &PaperValues) -> Result<Figure, String> {
    let rows = r.rows(&f.filter)?;
    if rows.is_empty() {
        return Err(format!("figure {}: no row matches its `where`", f.file));
    }
    let metric_name = f.metrics.first().cloned().unwrap_or_default();
    let groups = |col: &Option<String>| -> Result<Vec<(String, Vec<usize>)>, String> {
        match col {
            None => Ok(vec![(String::new(), rows.clone())]),
            Some(c) => r
                .distinct(c, &rows)?
                .into_iter()
                .map(|v| {
                    let sub: Vec<usize> = rows
                        .iter()
                        .copied()
                        .filter(|&x| r.cell(c, x).map(|s| s == v).unwrap_or(false))
                        .collect();
                    Ok((v, sub))
                })
                .collect(),
        }
    };
    let curves = |series: &mut Vec<Series>| -> Result<(), String> {
        for (id, name) in &f.paper_curves {
            let c = paper.curve(id)?;
            series.push(Series::new(name.clone(), c.points.iter().copied()));
        }
        Ok(())
    };
    let chart = match f.kind.as_str() {
        "lines" => {
            let x =
                f.x.clone()
                    .ok_or_else(|| format!("figure {}: lines need `x`", f.file))?;
            let mut series = Vec::new();
            for (name, sub) in groups(&f.series)? {
                let mut pts = Vec::new();
                for xv in r.distinct(&x, &sub)? {
                    if xv.is_empty() {
                        // No value (e.g. an unbounded capacity): no point.
                        continue;
                    }
                    let Ok(xf) = xv.parse::<f64>() else {
                        return Err(format!(
                            "figure {}: x value {xv:?} of `{x}` is not a number",
                            f.file
                        ));
                    };
                    let at: Vec<usize> = sub
                        .iter()
                        .copied()
                        .filter(|&i| r.cell(&x, i).map(|s| s == xv).unwrap_or(false))
                        .collect();
                    r.one_setting(&at, &format!("figure {} at {x} = {xv}", f.file))?;
                    if let Some(e) = r.metric(&metric_name, &at)? {
                        let k = f.y_scale;
                        let e = Estimate {
                            mean: e.mean * k,
                            ci95: e.ci95.map(|c| c * k),
                        };
                        let p = match e.ci95 {
                            Some(ci) => figures::Point::with_interval(
                                xf * f.x_scale,
                                e.mean,
                                e.mean - ci,
                                e.mean + ci,
                            ),
                            None => figures::Point::new(xf * f.x_scale, e.mean),
                        };
                        pts.push(p);
                    }
                }
                let display = if name.is_empty() {
                    "moonlab".to_string()
                } else {
                    label(&f.labels, &name).to_string()
                };
                series.push(Series::new(display, pts));
            }
            curves(&mut series)?;
            Chart::Lines(series)
        }
        "bars" | "stacked" => {
            let cat = f
                .category
                .clone()
                .ok_or_else(|| format!("figure {}: bars need `category`", f.file))?;
            let cats = r.distinct(&cat, &rows)?;
            let at = |c: &str, extra: Option<(&str, &str)>| -> Vec<usize> {
                rows.iter()
                    .copied()
                    .filter(|&i| r.cell(&cat, i).map(|s| s == c).unwrap_or(false))
                    .filter(|&i| {
                        extra.is_none_or(|(k, v)| r.cell(k, i).map(|s| s == v).unwrap_or(false))
                    })
                    .collect()
            };
            let mut bars: Vec<BarSeries> = Vec::new();
            let stacked = f.kind == "stacked";
            let bar_of = |name: String,
                          rows_of: &dyn Fn(&str) -> Vec<usize>,
                          metric: &str|
             -> Result<BarSeries, String> {
                let mut values = Vec::new();
                let mut intervals = Vec::new();
                for c in &cats {
                    let rows_here = rows_of(c);
                    r.one_setting(&rows_here, &format!("figure {} at {c}", f.file))?;
                    let e = r.metric(metric, &rows_here)?;
                    let (m, ci) = e.map_or((f64::NAN, 0.0), |e| {
                        (e.mean * f.y_scale, e.ci95.unwrap_or(0.0) * f.y_scale)
                    });
                    values.push(m);
                    intervals.push((m - ci, m + ci));
                }
                let bars = BarSeries::new(name, values);
                // A stack's parts carry no intervals; a grouped bar does
                // where seeds give one.
                Ok(if stacked || intervals.iter().all(|(a, b)| a == b) {
                    bars
                } else {
                    bars.with_intervals(intervals)
                })
            };
            match (&f.series, f.kind.as_str()) {
                (Some(sc), "bars") => {
                    for sv in r.distinct(sc, &rows)? {
                        let rows_of = |c: &str| at(c, Some((sc.as_str(), sv.as_str())));
                        bars.push(bar_of(
                            label(&f.labels, &sv).to_string(),
                            &rows_of,
                            &metric_name,
                        )?);
                    }
                }
                _ => {
                    for m in &f.metrics {
                        let rows_of = |c: &str| at(c, None);
                        bars.push(bar_of(label(&f.labels, m).to_string(), &rows_of, m)?);
                    }
                }
            }
            if let Some((name, ids)) = &f.paper_bars {
                let mut values = Vec::new();
                for c in &cats {
                    let v = match ids.iter().find(|(k, _)| k == c) {
                        Some((_, id)) => paper.value(id)?.value.first().copied(),
                        None => None,
                    };
                    values.push(v.ok_or_else(|| {
                        format!(
                            "figure {}: the paper bars have no value for category {c:?} (expected one paper value id per category)",
                            f.file
                        )
                    })?);
                }
                bars.push(BarSeries::new(name.clone(), values));
            }
            let categories: Vec<String> = cats
                .iter()
                .map(|c| label(&f.labels, c).to_string())
                .collect();
            if f.kind == "stacked" {
                Chart::StackedBars {
                    categories,
                    components: bars,
                }
            } else {
                Chart::GroupedBars {
                    categories,
                    series: bars,
                }
            }
        }
        "cdf" => {
            let column = f.column.clone().ok_or_else(|| {
                format!("figure {}: a cdf needs `column` (a request column)", f.file)
            })?;
            let mut samples = Vec::new();
            for (name, sub) in groups(&f.series)? {
                r.one_setting(&sub, &format!("figure {} series {name:?}", f.file))?;
                let mut all = Vec::new();
                for &row in &sub {
                    all.extend(r.request_values(row, &column)?);
                }
                all.retain(|x| x.is_finite() && (!f.x_axis.log || *x > 0.0));
                let display = if name.is_empty() {
                    "moonlab".to_string()
                } else {
                    label(&f.labels, &name).to_string()
                };
                samples.push(Samples::new(display, all));
            }
            Chart::Cdf(samples)
        }
        "capacity" => {
            // Effective request capacity at TBT threshold x: the share of
            // all requests served within the TTFT SLO with TBT <= x.
            let thresholds: Vec<f64> = (0..=60)
                .map(|i| 10f64.powf(-2.0 + 3.0 * i as f64 / 60.0))
                .collect();
            let mut series = Vec::new();
            for (name, sub) in groups(&f.series)? {
                r.one_setting(&sub, &format!("figure {} series {name:?}", f.file))?;
                let mut outcomes = Vec::new();
                let slo: f64 = r
                    .cell("slo_ttft_s", sub[0])?
                    .parse()
                    .map_err(|_| format!("figure {}: no TTFT SLO in the table", f.file))?;
                for &row in &sub {
                    outcomes.extend(r.request_outcomes(row)?);
                }
                let n = outcomes.len().max(1) as f64;
                let pts: Vec<(f64, f64)> = thresholds
                    .iter()
                    .map(|&t| {
                        let ok = outcomes
                            .iter()
                            .filter(|(s, ttft, tbt)| *s && *ttft <= slo && *tbt <= t)
                            .count();
                        (t * f.x_scale, 100.0 * ok as f64 / n)
                    })
                    .collect();
                let display = if name.is_empty() {
                    "moonlab".to_string()
                } else {
                    label(&f.labels, &name).to_string()
                };
                series.push(Series::new(display, pts).marks(figures::Marks::Lines));
            }
            curves(&mut series)?;
            Chart::Lines(series)
        }
        "replicas" => {
            let by_rank = r.replica_series(rows[0])?;
            let mut series: Vec<Series> = by_rank
                .into_iter()
                .map(|(rank, pts)| Series::new(format!("key ranked {rank}"), pts))
                .collect();
            curves(&mut series)?;
            Chart::Steps(series)
        }
        other => return Err(format!("figure {}: kind {other}", f.file)),
    };
    let mut fig = Figure::new(
        chart,
        f.x_axis
            .axis(f.x.as_deref().or(f.category.as_deref()).unwrap_or("")),
        f.y_axis.axis(&metric_name),
    );
    if let Some(t) = &f.title {
        fig = fig.title(t.clone());
    }
    if let Some((y, l)) = &f.ref_line {
        fig.refs.push(RefLine::new(*y, l.clone()));
    }
    Ok(fig)
}

/// A number for a table: four significant digits, trailing zeros dropped.
fn short(x: f64) -> String {
    let s = sig(x);
    if s.contains('.') && !s.contains('e') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One comparison row: (quantity, setting, paper, ours, difference,
/// source). Percentages differ in points, everything else relatively.
pub fn compare_row(
    c: &CompareSpec,
    r: &Results,
    paper: &PaperValues,
) -> Result<[String; 6], String> {
    let p = paper.value(&c.paper)?;
    let pv = match (c.index, p.value.len()) {
        (Some(i), n) if i < n => Some(p.value[i]),
        (None, 1) => Some(p.value[0]),
        _ => None,
    };
    let ours = match (&c.measure, &c.ratio) {
        (Some(m), _) => {
            let rows = r.rows(&m.filter)?;
            r.one_setting(&rows, &format!("compare {}", c.paper))?;
            r.metric(&m.metric, &rows)?.map(|e| e.mean)
        }
        (_, Some((a, b))) => {
            let (ra, rb) = (r.rows(&a.filter)?, r.rows(&b.filter)?);
            r.one_setting(&ra, &format!("compare {} (numerator)", c.paper))?;
            r.one_setting(&rb, &format!("compare {} (denominator)", c.paper))?;
            let x = r.metric(&a.metric, &ra)?.map(|e| e.mean);
            let y = r.metric(&b.metric, &rb)?.map(|e| e.mean);
            match (x, y) {
                (Some(x), Some(y)) if y != 0.0 => Some(match c.ratio_as.as_str() {
                    "reduction" => 100.0 * (1.0 - x / y),
                    "increase" => 100.0 * (x / y - 1.0),
                    _ => x / y,
                }),
                _ => None,
            }
        }
        _ => None,
    }
    .map(|v| v * c.scale);
    let unit = p.unit.clone().unwrap_or_default();
    let percent = unit == "%";
    let with_unit = |v: f64| match unit.as_str() {
        "" | "fraction" => short(v),
        "%" => format!("{} %", short(v)),
        "x" => format!("×{}", short(v)),
        u => format!("{} {u}", short(v)),
    };
    let paper_text = match (pv, p.uncertainty) {
        (Some(v), Some(u)) if p.source == "figure-read" => {
            format!("{} ± {}", with_unit(v), short(u))
        }
        (Some(v), _) => with_unit(v),
        (None, _) => "–".into(),
    };
    let ours_text = ours.map_or("–".into(), with_unit);
    let diff = match (pv, ours) {
        (Some(a), Some(b)) if percent => format!("{:+.1} pt", b - a),
        (Some(a), Some(b)) if a != 0.0 => format!("{:+.0} %", 100.0 * (b - a) / a.abs()),
        (Some(a), Some(b)) => format!("{}{}", if b >= a { "+" } else { "" }, short(b - a)),
        _ => "–".into(),
    };
    let mut what = c.label.clone().unwrap_or_else(|| p.quantity.clone());
    if let (Some(i), 2) = (c.index, p.value.len()) {
        what.push_str(if i == 0 { " (low end)" } else { " (high end)" });
    }
    Ok([
        what,
        p.setting.clone(),
        paper_text,
        ours_text,
        diff,
        p.citation(),
    ])
}

/// A rendered report: README text and figure files (relative name, bytes).
pub struct Report {
    pub markdown: String,
    pub files: Vec<(String, Vec<u8>)>,
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The report of every spec in `specs` with a `report` section, in order;
/// `results_of` names a spec's results folder.
pub fn build(
    specs: &[Spec],
    results_of: &dyn Fn(&Spec) -> PathBuf,
    paper: &PaperValues,
    preamble: &str,
) -> Result<Report, String> {
    let mut md = String::from(preamble);
    let mut files = Vec::new();
    let mut toc = String::new();
    let mut body = String::new();
    for spec in specs {
        let Some(rs) = ReportSpec::from_spec(spec)? else {
            continue;
        };
        let dir = results_of(spec);
        let r = Results::load(spec.clone(), dir.clone())?;
        let anchor: String = rs
            .title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == ' ' || *c == '-')
            .collect::<String>()
            .replace(' ', "-");
        let _ = writeln!(toc, "- [{}](#{anchor})", rs.title);
        let _ = writeln!(body, "\n## {}\n", rs.title);
        if !rs.text.is_empty() {
            let _ = writeln!(body, "{}\n", rs.text.trim_end());
        }
        let _ = writeln!(
            body,
            "Spec: `{}` ({} points); results: `{}`.\n",
            spec.path.display(),
            r.points.len(),
            dir.display()
        );
        for f in &rs.figures {
            let fig =
                build_figure(f, &r, paper).map_err(|e| format!("{}: {e}", spec.path.display()))?;
            let out = figures::render(&fig)
                .map_err(|e| format!("{}: figure {}: {e}", spec.path.display(), f.file))?;
            files.push((format!("figures/{}.png", f.file), out.png));
            files.push((format!("figures/{}.svg", f.file), out.svg.into_bytes()));
            let _ = writeln!(
                body,
                "![{}](figures/{}.png)\n\n([SVG](figures/{}.svg))\n",
                f.title.as_deref().unwrap_or(&f.file),
                f.file,
                f.file
            );
        }
        if !rs.compare.is_empty() {
            let rows = rs
                .compare
                .iter()
                .map(|c| compare_row(c, &r, paper))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("{}: {e}", spec.path.display()))?;
            // One quantity for every row: said once, above the table.
            let one = rows.iter().all(|x| x[0] == rows[0][0]);
            if one {
                let _ = writeln!(body, "**Against the paper:** {}\n", md_cell(&rows[0][0]));
                let _ = writeln!(
                    body,
                    "| setting | paper | moonlab | difference | paper source |"
                );
                let _ = writeln!(body, "|---|---:|---:|---:|---|");
            } else {
                let _ = writeln!(body, "**Against the paper**\n");
                let _ = writeln!(
                    body,
                    "| quantity | setting | paper | moonlab | difference | paper source |"
                );
                let _ = writeln!(body, "|---|---|---:|---:|---:|---|");
            }
            for row in &rows {
                let cells: Vec<String> = row
                    .iter()
                    .skip(usize::from(one))
                    .map(|s| md_cell(s))
                    .collect();
                let _ = writeln!(body, "| {} |", cells.join(" | "));
            }
            body.push_str("\nDifferences: moonlab against the paper, in points for percentages, relative otherwise.\n\n");
        }
        let summary = summarize(&r.table, rs.by.as_deref(), rs.metrics.as_deref())
            .map_err(|e| format!("{}: {e}", spec.path.display()))?;
        let _ = writeln!(
            body,
            "<details><summary>moonlab's table (<code>moonlab table {}</code>)</summary>\n\n{}\n</details>\n",
            dir.display(),
            summary.render(Format::Markdown).trim_end()
        );
        if !rs.notes.is_empty() {
            let _ = writeln!(body, "{}\n", rs.notes.trim_end());
        }
    }
    md.push_str(&toc);
    md.push_str(&body);
    Ok(Report {
        markdown: md,
        files,
    })
}

/// The specs of a folder: its `*.yaml` files, in name order.
pub fn specs_in(folder: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| format!("{}: cannot read: {e}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(format!(
            "{}: no spec (*.yaml) in the folder",
            folder.display()
        ));
    }
    Ok(out)
}
