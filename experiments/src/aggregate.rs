//! Summaries of a sweep's table across seeds: rows grouped by their
//! parameters (polars' group-by, groups in first-appearance order), each
//! metric's mean and the half-width of its 95 % confidence interval
//! (Student's t with n − 1 degrees of freedom; one seed gives no interval),
//! rendered as Markdown, CSV or LaTeX (booktabs).

use crate::results::{cell_text, metric_columns, parameter_columns, ResultsError, TRACE};
use polars_core::prelude::*;
use std::fmt::Write as _;

/// Metrics shown when none are asked for.
pub const DEFAULT_METRICS: &[&str] = &[
    "ttft_mean_s",
    "ttft_p90_s",
    "tbt_mean_s",
    "tbt_p90_s",
    "hit_rate",
    "effective_request_capacity",
];

/// One group's value of one metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub mean: f64,
    /// Half-width of the 95 % interval; `None` with a single value.
    pub ci95: Option<f64>,
}

/// A summary: the grouping keys' values (as text) and each metric's
/// estimate, one row per group.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub keys: Vec<String>,
    pub metrics: Vec<String>,
    pub rows: Vec<SummaryRow>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    pub keys: Vec<String>,
    /// Runs in the group (seeds).
    pub n: usize,
    pub values: Vec<Option<Estimate>>,
}

/// Two-sided 97.5 % quantiles of Student's t for 1..=30 degrees of freedom.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t(0.975, df); beyond 30 degrees of freedom, interpolated in 1/df
/// between 30 (2.042), 60 (2.000), 120 (1.980) and infinity (1.960).
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[df - 1],
        _ => {
            let x = 1.0 / df as f64;
            let knots = [
                (1.0 / 30.0, 2.042),
                (1.0 / 60.0, 2.000),
                (1.0 / 120.0, 1.980),
                (0.0, 1.960),
            ];
            for w in knots.windows(2) {
                let ((x0, y0), (x1, y1)) = (w[0], w[1]);
                if x <= x0 && x >= x1 {
                    return y1 + (y0 - y1) * (x - x1) / (x0 - x1);
                }
            }
            1.960
        }
    }
}

/// Mean and 95 % interval of the finite values (NaN and nulls are runs
/// where the metric is undefined, e.g. no request served).
pub fn estimate(values: &[f64]) -> Option<Estimate> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let ci95 = (v.len() > 1).then(|| {
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
        t975(v.len() - 1) * (var / n).sqrt()
    });
    Some(Estimate { mean, ci95 })
}

/// Groups the table's rows by `by` (default: the trace and every parameter
/// column, i.e. everything but the seed) and estimates `metrics` (default:
/// [`DEFAULT_METRICS`] present in the table).
pub fn summarize(
    df: &DataFrame,
    by: Option<&[String]>,
    metrics: Option<&[String]>,
) -> Result<Summary, ResultsError> {
    let all_metrics = metric_columns(df)?;
    let keys: Vec<String> = match by {
        Some(b) => b.to_vec(),
        None => {
            let mut k = vec![TRACE.to_string()];
            k.extend(parameter_columns(df)?);
            k
        }
    };
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for k in &keys {
        if !names.contains(k) {
            return Err(ResultsError::Invalid(format!(
                "--by {k}: no such column (expected one of: {})",
                names.join(", ")
            )));
        }
    }
    let metrics: Vec<String> = match metrics {
        Some(m) => {
            for name in m {
                let Ok(c) = df.column(name) else {
                    return Err(ResultsError::Invalid(format!(
                        "--metrics {name}: no such column (expected one of: {})",
                        all_metrics.join(", ")
                    )));
                };
                if !c.dtype().is_primitive_numeric() {
                    return Err(ResultsError::Invalid(format!(
                        "--metrics {name}: a {} column, not a number",
                        c.dtype()
                    )));
                }
            }
            m.to_vec()
        }
        None => DEFAULT_METRICS
            .iter()
            .filter(|m| all_metrics.iter().any(|x| x == *m))
            .map(|m| m.to_string())
            .collect(),
    };
    if metrics.is_empty() {
        return Err(ResultsError::Invalid(
            "no metrics to show (expected --metrics with columns of the table)".into(),
        ));
    }
    let values: Vec<Vec<Option<f64>>> = metrics
        .iter()
        .map(|m| {
            let c = df.column(m)?.cast(&DataType::Float64)?;
            let ca = c.f64()?;
            Ok((0..ca.len()).map(|i| ca.get(i)).collect())
        })
        .collect::<Result<_, PolarsError>>()?;
    let groups: Vec<Vec<usize>> = if keys.is_empty() {
        vec![(0..df.height()).collect()]
    } else {
        let gb = df.group_by_stable(keys.iter().map(|s| s.as_str()))?;
        gb.get_groups()
            .iter()
            .map(|g| match g {
                GroupsIndicator::Idx((_, idx)) => idx.iter().map(|&i| i as usize).collect(),
                GroupsIndicator::Slice([first, len]) => {
                    (first as usize..(first + len) as usize).collect()
                }
            })
            .collect()
    };
    let mut rows = Vec::with_capacity(groups.len());
    for g in groups {
        let first = g[0];
        let key_values = keys
            .iter()
            .map(|k| {
                Ok(cell_text(&df.column(k)?.get(first)?)
                    .trim_matches('"')
                    .to_string())
            })
            .collect::<Result<Vec<String>, PolarsError>>()?;
        let est = values
            .iter()
            .map(|col| {
                let v: Vec<f64> = g.iter().filter_map(|&i| col[i]).collect();
                estimate(&v)
            })
            .collect();
        rows.push(SummaryRow {
            keys: key_values,
            n: g.len(),
            values: est,
        });
    }
    Ok(Summary {
        keys,
        metrics,
        rows,
    })
}

/// Output formats of `moonlab table`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Csv,
    Latex,
}

/// Four significant digits, no exponent for everyday magnitudes.
pub fn sig(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x == 0.0 {
        return "0".into();
    }
    let mag = x.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return format!("{x:.3e}");
    }
    let decimals = (3 - mag).max(0) as usize;
    format!("{x:.decimals$}")
}

impl Summary {
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Markdown => self.markdown(),
            Format::Csv => self.csv(),
            Format::Latex => self.latex(),
        }
    }

    fn any_interval(&self) -> bool {
        self.rows.iter().any(|r| r.n > 1)
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let mut header: Vec<String> = self.keys.clone();
        header.push("n".into());
        header.extend(self.metrics.iter().cloned());
        let _ = writeln!(s, "| {} |", header.join(" | "));
        let align: Vec<&str> = (0..header.len())
            .map(|i| if i < self.keys.len() { "---" } else { "---:" })
            .collect();
        let _ = writeln!(s, "|{}|", align.join("|"));
        for r in &self.rows {
            let mut cells: Vec<String> = r.keys.iter().map(|k| k.replace('|', "\\|")).collect();
            cells.push(r.n.to_string());
            for v in &r.values {
                cells.push(match v {
                    None => "–".into(),
                    Some(Estimate { mean, ci95: None }) => sig(*mean),
                    Some(Estimate {
                        mean,
                        ci95: Some(ci),
                    }) => format!("{} ± {}", sig(*mean), sig(*ci)),
                });
            }
            let _ = writeln!(s, "| {} |", cells.join(" | "));
        }
        if self.any_interval() {
            s.push_str(
                "\nmean ± half-width of the 95 % confidence interval over n runs (Student's t).\n",
            );
        }
        s
    }

    fn csv(&self) -> String {
        let q = |t: &str| {
            if t.contains([',', '"', '\n']) {
                format!("\"{}\"", t.replace('"', "\"\""))
            } else {
                t.to_string()
            }
        };
        let mut s = String::new();
        let mut header: Vec<String> = self.keys.iter().map(|k| q(k)).collect();
        header.push("n".into());
        for m in &self.metrics {
            header.push(format!("{m}_mean"));
            header.push(format!("{m}_ci95"));
        }
        let _ = writeln!(s, "{}", header.join(","));
        for r in &self.rows {
            let mut cells: Vec<String> = r.keys.iter().map(|k| q(k)).collect();
            cells.push(r.n.to_string());
            for v in &r.values {
                match v {
                    None => cells.extend([String::new(), String::new()]),
                    Some(e) => {
                        cells.push(e.mean.to_string());
                        cells.push(e.ci95.map(|c| c.to_string()).unwrap_or_default());
                    }
                }
            }
            let _ = writeln!(s, "{}", cells.join(","));
        }
        s
    }

    fn latex(&self) -> String {
        let esc = |t: &str| {
            let mut o = String::new();
            for c in t.chars() {
                match c {
                    '\\' => o.push_str("\\textbackslash{}"),
                    '&' | '%' | '$' | '#' | '_' | '{' | '}' => {
                        o.push('\\');
                        o.push(c)
                    }
                    '~' => o.push_str("\\textasciitilde{}"),
                    '^' => o.push_str("\\textasciicircum{}"),
                    _ => o.push(c),
                }
            }
            o
        };
        let mut s = String::new();
        let cols = format!(
            "{}r{}",
            "l".repeat(self.keys.len()),
            "r".repeat(self.metrics.len())
        );
        let _ = writeln!(s, "% requires \\usepackage{{booktabs}}");
        let _ = writeln!(s, "\\begin{{tabular}}{{{cols}}}");
        s.push_str("\\toprule\n");
        let mut header: Vec<String> = self.keys.iter().map(|k| esc(k)).collect();
        header.push("$n$".into());
        header.extend(self.metrics.iter().map(|m| esc(m)));
        let _ = writeln!(s, "{} \\\\", header.join(" & "));
        s.push_str("\\midrule\n");
        for r in &self.rows {
            let mut cells: Vec<String> = r.keys.iter().map(|k| esc(k)).collect();
            cells.push(r.n.to_string());
            for v in &r.values {
                cells.push(match v {
                    None => "--".into(),
                    Some(Estimate { mean, ci95: None }) => format!("${}$", sig(*mean)),
                    Some(Estimate {
                        mean,
                        ci95: Some(ci),
                    }) => format!("${} \\pm {}$", sig(*mean), sig(*ci)),
                });
            }
            let _ = writeln!(s, "{} \\\\", cells.join(" & "));
        }
        s.push_str("\\bottomrule\n\\end{tabular}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_by_hand() {
        // Three values 1, 2, 3: mean 2, s = 1, t(0.975, 2) = 4.303,
        // half-width 4.303 / sqrt(3) = 2.4843.
        let e = estimate(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(e.mean, 2.0);
        assert!((e.ci95.unwrap() - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(
            estimate(&[5.0]),
            Some(Estimate {
                mean: 5.0,
                ci95: None
            })
        );
        assert_eq!(estimate(&[f64::NAN]), None);
        assert_eq!(estimate(&[f64::NAN, 4.0]).unwrap().mean, 4.0);
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(30), 2.042);
        assert!((t975(60) - 2.000).abs() < 1e-12);
        assert!((t975(120) - 1.980).abs() < 1e-12);
        assert!(t975(1_000_000) > 1.960 && t975(1_000_000) < 1.9601);
        assert!(t975(45) < 2.042 && t975(45) > 2.000);
    }

    fn table() -> DataFrame {
        df!(
            "point_id" => ["a0", "a1", "b0", "b1", "c0"],
            "trace" => ["t", "t", "t", "t", "u"],
            "scheduler" => ["x", "x", "y", "y", "x"],
            "seed" => [0u64, 1, 0, 1, 0],
            "ttft_mean_s" => [1.0, 3.0, 10.0, 10.0, 7.5],
            "hit_rate" => [Some(0.5), Some(0.7), None, Some(0.1), Some(0.2)],
        )
        .unwrap()
    }

    #[test]
    fn groups_across_seeds_in_first_appearance_order() {
        let s = summarize(&table(), None, None).unwrap();
        assert_eq!(s.keys, ["trace", "scheduler"]);
        assert_eq!(s.metrics, ["ttft_mean_s", "hit_rate"]);
        assert_eq!(s.rows.len(), 3);
        assert_eq!(s.rows[0].keys, ["t", "x"]);
        assert_eq!(s.rows[0].n, 2);
        let e = s.rows[0].values[0].unwrap();
        assert_eq!(e.mean, 2.0);
        // s = sqrt(2), half-width 12.706 * sqrt(2) / sqrt(2) = 12.706.
        assert!((e.ci95.unwrap() - 12.706).abs() < 1e-9);
        assert_eq!(s.rows[1].values[0].unwrap().ci95, Some(0.0));
        // A null is a run without the metric: one value left, no interval.
        assert_eq!(
            s.rows[1].values[1],
            Some(Estimate {
                mean: 0.1,
                ci95: None
            })
        );
        assert_eq!(s.rows[2].keys, ["u", "x"]);
        let by = summarize(
            &table(),
            Some(&["scheduler".to_string()]),
            Some(&["ttft_mean_s".to_string()]),
        )
        .unwrap();
        assert_eq!(by.rows.len(), 2);
        assert_eq!(by.rows[0].n, 3);
        assert!((by.rows[0].values[0].unwrap().mean - 11.5 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn bad_columns_are_named() {
        let e = summarize(&table(), Some(&["nope".to_string()]), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--by nope: no such column"), "{e}");
        let e = summarize(&table(), None, Some(&["trace".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--metrics trace: a str column"), "{e}");
        let e = summarize(&table(), None, Some(&["x".to_string()]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--metrics x: no such column (expected one of: ttft_mean_s, hit_rate)"),
            "{e}"
        );
    }

    #[test]
    fn renders_markdown_csv_and_booktabs() {
        let s = summarize(&table(), None, None).unwrap();
        let md = s.render(Format::Markdown);
        assert!(
            md.starts_with(
                "| trace | scheduler | n | ttft_mean_s | hit_rate |\n|---|---|---:|---:|---:|\n"
            ),
            "{md}"
        );
        assert!(
            md.contains("| t | x | 2 | 2.000 ± 12.71 | 0.6000 ± 1.271 |"),
            "{md}"
        );
        assert!(md.contains("mean ± half-width"), "{md}");
        let csv = s.render(Format::Csv);
        assert_eq!(
            csv.lines().next().unwrap(),
            "trace,scheduler,n,ttft_mean_s_mean,ttft_mean_s_ci95,hit_rate_mean,hit_rate_ci95"
        );
        assert!(csv.contains("\nu,x,1,7.5,,0.2,\n"), "{csv}");
        let tex = s.render(Format::Latex);
        assert!(tex.contains("\\begin{tabular}{llrrr}\n\\toprule\ntrace & scheduler & $n$ & ttft\\_mean\\_s & hit\\_rate \\\\\n\\midrule\n"), "{tex}");
        assert!(
            tex.contains("t & x & 2 & $2.000 \\pm 12.71$ & $0.6000 \\pm 1.271$ \\\\"),
            "{tex}"
        );
        assert!(tex.ends_with("\\bottomrule\n\\end{tabular}\n"));
        assert_eq!(sig(1234567.0), "1.235e6");
        assert_eq!(sig(0.00012345), "0.0001234");
        assert_eq!(sig(-2.5), "-2.500");
    }
}
