//! A sweep's combined table: one row per point, in the spec's order — the
//! point's id, its trace, its parameters as typed columns, its seed, then
//! every number of the run's `summary.json` (its wall time excepted, so
//! the table is a pure function of the runs and a sharded sweep merges to
//! the same bytes as one run). Written as Parquet (`table.parquet`) and
//! CSV (`table.csv`); read back for `moonlab table` and `moonlab plot`.
//!
//! Column layout is a contract the analysis relies on: `point_id`,
//! `trace`, the parameter columns, `seed`, then the metrics.

use crate::spec::{ParamValue, Point, Spec};
use polars_core::prelude::*;
use polars_io::prelude::*;
use serde_json::Value;
use std::fmt::Write as _;

pub const POINT_ID: &str = "point_id";
pub const TRACE: &str = "trace";
pub const SEED: &str = "seed";

/// Summary fields left out of the table (not a function of the inputs).
const NOT_IN_TABLE: &[&str] = &["wall_s"];

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("cannot build the table: {0}")]
    Polars(#[from] PolarsError),
    #[error("{0}")]
    Invalid(String),
}

/// One finished point: where it sits in the spec, and its summary.
#[derive(Clone, Debug)]
pub struct PointResult {
    pub point: Point,
    /// The run's `summary.json`, as written.
    pub summary: Value,
}

enum Col {
    Str(Vec<Option<String>>),
    I64(Vec<Option<i64>>),
    U64(Vec<Option<u64>>),
    F64(Vec<Option<f64>>),
    Bool(Vec<Option<bool>>),
}

impl Col {
    fn into_column(self, name: &str) -> Column {
        let name: PlSmallStr = name.into();
        match self {
            Col::Str(v) => Series::new(name, v).into(),
            Col::I64(v) => Series::new(name, v).into(),
            Col::U64(v) => Series::new(name, v).into(),
            Col::F64(v) => Series::new(name, v).into(),
            Col::Bool(v) => Series::new(name, v).into(),
        }
    }
}

/// A parameter's column: integers stay integers, numbers are floats,
/// anything mixed with text is text.
fn param_column(values: Vec<Option<&ParamValue>>) -> Col {
    let present = || values.iter().flatten();
    if present().all(|v| matches!(v, ParamValue::Int(_))) {
        Col::I64(
            values
                .iter()
                .map(|v| {
                    v.and_then(|v| {
                        if let ParamValue::Int(i) = v {
                            Some(*i)
                        } else {
                            None
                        }
                    })
                })
                .collect(),
        )
    } else if present().all(|v| v.as_f64().is_some()) {
        Col::F64(values.iter().map(|v| v.and_then(|v| v.as_f64())).collect())
    } else if present().all(|v| matches!(v, ParamValue::Bool(_))) {
        Col::Bool(
            values
                .iter()
                .map(|v| {
                    v.and_then(|v| {
                        if let ParamValue::Bool(b) = v {
                            Some(*b)
                        } else {
                            None
                        }
                    })
                })
                .collect(),
        )
    } else {
        Col::Str(values.iter().map(|v| v.map(|v| v.to_string())).collect())
    }
}

/// A summary field's column, typed by what the runs wrote (a float that
/// JSON could not hold, NaN, was written as null and stays null).
fn metric_column(values: Vec<Option<&Value>>) -> Col {
    let present = || values.iter().flatten().filter(|v| !v.is_null());
    if present().all(|v| v.is_u64()) {
        Col::U64(values.iter().map(|v| v.and_then(|v| v.as_u64())).collect())
    } else if present().all(|v| v.is_number()) {
        Col::F64(values.iter().map(|v| v.and_then(|v| v.as_f64())).collect())
    } else if present().all(|v| v.is_boolean()) {
        Col::Bool(values.iter().map(|v| v.and_then(|v| v.as_bool())).collect())
    } else {
        Col::Str(
            values
                .iter()
                .map(|v| {
                    v.and_then(|v| match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.clone()),
                        other => Some(other.to_string()),
                    })
                })
                .collect(),
        )
    }
}

/// The combined table of `results` (in the order given: the caller passes
/// the spec's order).
pub fn combined_table(spec: &Spec, results: &[PointResult]) -> Result<DataFrame, ResultsError> {
    let mut columns: Vec<Column> = Vec::new();
    columns.push(
        Col::Str(results.iter().map(|r| Some(r.point.id.clone())).collect()).into_column(POINT_ID),
    );
    columns.push(
        Col::Str(
            results
                .iter()
                .map(|r| Some(spec.traces[r.point.trace].label.clone()))
                .collect(),
        )
        .into_column(TRACE),
    );
    for key in spec.varying_keys() {
        if key == POINT_ID || key == TRACE || key == SEED {
            return Err(ResultsError::Invalid(format!(
                "parameter `{key}` would clash with the table's own `{key}` column"
            )));
        }
        let values: Vec<Option<&ParamValue>> =
            results.iter().map(|r| r.point.param(&key)).collect();
        columns.push(param_column(values).into_column(&key));
    }
    columns.push(Col::U64(results.iter().map(|r| Some(r.point.seed)).collect()).into_column(SEED));
    // Metrics in the order the summary lists them.
    let mut names: Vec<String> = Vec::new();
    for r in results {
        let Some(map) = r.summary.as_object() else {
            return Err(ResultsError::Invalid(format!(
                "point {}: summary is not a JSON object",
                r.point.id
            )));
        };
        for k in map.keys() {
            if !NOT_IN_TABLE.contains(&k.as_str()) && !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    for name in &names {
        let values: Vec<Option<&Value>> = results.iter().map(|r| r.summary.get(name)).collect();
        if columns.iter().any(|c| c.name().as_str() == name) {
            // The summary's scheduler name repeats the `scheduler`
            // parameter: the parameter's column stays. A number by a
            // parameter's name would be ambiguous.
            if values.iter().flatten().all(|v| v.is_string()) {
                continue;
            }
            return Err(ResultsError::Invalid(format!(
                "parameter `{name}` has the name of a summary field; rename the parameter"
            )));
        }
        columns.push(metric_column(values).into_column(name));
    }
    Ok(DataFrame::new(results.len(), columns)?)
}

/// The table as Parquet bytes.
pub fn to_parquet(df: &DataFrame) -> Result<Vec<u8>, ResultsError> {
    let mut df = df.clone();
    let mut out = std::io::Cursor::new(Vec::new());
    ParquetWriter::new(&mut out).finish(&mut df)?;
    Ok(out.into_inner())
}

/// Reads a table written by [`to_parquet`].
pub fn from_parquet(bytes: Vec<u8>) -> Result<DataFrame, ResultsError> {
    Ok(ParquetReader::new(std::io::Cursor::new(bytes)).finish()?)
}

/// A sweep's table: a results folder's `table.parquet`, or a table file;
/// with the file it was read from.
pub fn read_table(path: &std::path::Path) -> Result<(std::path::PathBuf, DataFrame), ResultsError> {
    let file = if path.is_dir() {
        path.join("table.parquet")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file)
        .map_err(|e| ResultsError::Invalid(format!("{}: cannot read: {e}", file.display())))?;
    let df = from_parquet(bytes).map_err(|e| {
        ResultsError::Invalid(format!("{}: not a Parquet table: {e}", file.display()))
    })?;
    Ok((file, df))
}

/// One cell as CSV text: numbers in their shortest exact form, text
/// quoted where it must be, nulls empty.
pub fn cell_text(v: &AnyValue) -> String {
    match v {
        AnyValue::Null => String::new(),
        AnyValue::String(s) => csv_quote(s),
        AnyValue::StringOwned(s) => csv_quote(s),
        AnyValue::Boolean(b) => b.to_string(),
        AnyValue::Float64(x) => x.to_string(),
        AnyValue::Float32(x) => x.to_string(),
        AnyValue::Int64(x) => x.to_string(),
        AnyValue::Int32(x) => x.to_string(),
        AnyValue::UInt64(x) => x.to_string(),
        AnyValue::UInt32(x) => x.to_string(),
        other => csv_quote(&other.to_string()),
    }
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The table as CSV (a header, then one line per row).
pub fn to_csv(df: &DataFrame) -> Result<String, ResultsError> {
    let mut s = String::new();
    let cols = df.columns();
    let header: Vec<String> = cols.iter().map(|c| csv_quote(c.name().as_str())).collect();
    s.push_str(&header.join(","));
    s.push('\n');
    for row in 0..df.height() {
        for (i, c) in cols.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{}", cell_text(&c.get(row)?));
        }
        s.push('\n');
    }
    Ok(s)
}

/// The parameter columns of a table in the layout above: those between
/// `trace` and `seed`.
pub fn parameter_columns(df: &DataFrame) -> Result<Vec<String>, ResultsError> {
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (Some(t), Some(s)) = (
        names.iter().position(|n| n == TRACE),
        names.iter().position(|n| n == SEED),
    ) else {
        return Err(ResultsError::Invalid(format!(
            "not a sweep table: expected columns `{TRACE}` and `{SEED}` (found {})",
            names.join(", ")
        )));
    };
    Ok(names[t + 1..s].to_vec())
}

/// The metric columns: everything after `seed`.
pub fn metric_columns(df: &DataFrame) -> Result<Vec<String>, ResultsError> {
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let s = names
        .iter()
        .position(|n| n == SEED)
        .ok_or_else(|| ResultsError::Invalid(format!("not a sweep table: no `{SEED}` column")))?;
    Ok(names[s + 1..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let dir = std::env::temp_dir().join(format!("moonlab-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.jsonl"), "").unwrap();
        Spec::parse(
            "traces: [t.jsonl]\npoints:\n  - {label: a, prefill.instances: 8}\n  - {label: b, prefill.instances: 10, decode.nic_gbit_per_s: 12.5}\ngrid: {scheduler: [random, least-loaded]}\nrepetitions: 2\n",
            &dir.join("s.yaml"),
        )
        .unwrap()
    }

    fn summary(i: usize) -> Value {
        serde_json::json!({
            "scheduler": if i.is_multiple_of(2) { "random" } else { "least-loaded" },
            "requests": 10 + i,
            "ttft_mean_s": 0.5 * i as f64,
            "tbt_p90_s": if i == 3 { Value::Null } else { Value::from(0.01) },
            "wall_s": 123.0,
        })
    }

    #[test]
    fn columns_follow_the_contract_with_types_and_nulls() {
        let spec = spec();
        let results: Vec<PointResult> = spec
            .points()
            .into_iter()
            .enumerate()
            .map(|(i, point)| PointResult {
                point,
                summary: summary(i),
            })
            .collect();
        let df = combined_table(&spec, &results).unwrap();
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "point_id",
                "trace",
                "label",
                "prefill.instances",
                "decode.nic_gbit_per_s",
                "scheduler",
                "seed",
                "requests",
                "ttft_mean_s",
                "tbt_p90_s"
            ]
        );
        assert_eq!(df.height(), 8);
        assert_eq!(
            df.column("prefill.instances").unwrap().dtype(),
            &DataType::Int64
        );
        let nic = df.column("decode.nic_gbit_per_s").unwrap();
        assert_eq!(nic.dtype(), &DataType::Float64);
        assert_eq!(nic.f64().unwrap().get(0), None, "row a has no NIC override");
        assert_eq!(nic.f64().unwrap().get(4), Some(12.5));
        assert_eq!(df.column("requests").unwrap().dtype(), &DataType::UInt64);
        assert_eq!(df.column("tbt_p90_s").unwrap().f64().unwrap().get(3), None);
        assert_eq!(
            parameter_columns(&df).unwrap(),
            [
                "label",
                "prefill.instances",
                "decode.nic_gbit_per_s",
                "scheduler"
            ]
        );
        assert_eq!(
            metric_columns(&df).unwrap(),
            ["requests", "ttft_mean_s", "tbt_p90_s"]
        );
        let csv = to_csv(&df).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 9);
        assert!(lines[0].starts_with("point_id,trace,label,prefill.instances,decode.nic_gbit_per_s,scheduler,seed,requests"), "{}", lines[0]);
        assert!(
            lines[4].ends_with(",t,a,8,,least-loaded,1,13,1.5,"),
            "{}",
            lines[4]
        );
        // Parquet round trip keeps everything; bytes are deterministic.
        let bytes = to_parquet(&df).unwrap();
        assert_eq!(bytes, to_parquet(&df).unwrap());
        let back = from_parquet(bytes).unwrap();
        assert!(back.equals_missing(&df));
        assert_eq!(to_csv(&back).unwrap(), csv);
    }

    #[test]
    fn a_parameter_may_not_shadow_a_column() {
        let dir = std::env::temp_dir().join(format!("moonlab-results2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.jsonl"), "").unwrap();
        let spec = Spec::parse(
            "traces: [t.jsonl]\ngrid: {requests: [1]}\n",
            &dir.join("s.yaml"),
        )
        .unwrap();
        let results = vec![PointResult {
            point: spec.points()[0].clone(),
            summary: summary(0),
        }];
        let e = combined_table(&spec, &results).unwrap_err().to_string();
        assert!(
            e.contains("`requests` has the name of a summary field"),
            "{e}"
        );
    }
}
