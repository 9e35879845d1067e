//! `moonlab plot`: any column pair of a sweep's table as a line chart —
//! one series per value of a grouping column, each point the mean over the
//! rows sharing (series, x) with its 95 % interval across seeds.

use crate::aggregate::estimate;
use crate::figures::{Axis, Chart, Figure, Point, Series};
use crate::results::cell_text;
use polars_core::prelude::*;

fn numbers(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, String> {
    let c = df.column(name).map_err(|_| {
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        format!("no column `{name}` (expected one of: {})", names.join(", "))
    })?;
    if !c.dtype().is_primitive_numeric() {
        return Err(format!("`{name}` is a {} column, not a number", c.dtype()));
    }
    let c = c.cast(&DataType::Float64).map_err(|e| e.to_string())?;
    let c = c.f64().map_err(|e| e.to_string())?;
    Ok((0..c.len()).map(|i| c.get(i)).collect())
}

/// The figure of `y` against `x`, one series per value of `series`.
pub fn pair_figure(
    df: &DataFrame,
    x: &str,
    y: &str,
    series: Option<&str>,
    log_x: bool,
    log_y: bool,
) -> Result<Figure, String> {
    let xs = numbers(df, x)?;
    let ys = numbers(df, y)?;
    let keys: Vec<String> = match series {
        None => vec![String::new(); df.height()],
        Some(s) => {
            let c = df
                .column(s)
                .map_err(|_| format!("--series {s}: no such column"))?;
            (0..df.height())
                .map(|i| {
                    c.get(i)
                        .map(|v| cell_text(&v).trim_matches('"').to_string())
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?
        }
    };
    let mut order: Vec<String> = Vec::new();
    for k in &keys {
        if !order.contains(k) {
            order.push(k.clone());
        }
    }
    let mut out = Vec::new();
    for k in &order {
        // x values in first-appearance order, then sorted for the line.
        let mut xv: Vec<f64> = Vec::new();
        for i in 0..df.height() {
            if &keys[i] == k {
                if let Some(v) = xs[i] {
                    if !xv.contains(&v) {
                        xv.push(v);
                    }
                }
            }
        }
        xv.sort_by(f64::total_cmp);
        let mut pts = Vec::new();
        for &xval in &xv {
            let vals: Vec<f64> = (0..df.height())
                .filter(|&i| &keys[i] == k && xs[i] == Some(xval))
                .filter_map(|i| ys[i])
                .collect();
            if let Some(e) = estimate(&vals) {
                pts.push(match e.ci95 {
                    Some(ci) => Point::with_interval(xval, e.mean, e.mean - ci, e.mean + ci),
                    None => Point::new(xval, e.mean),
                });
            }
        }
        if pts.is_empty() {
            continue;
        }
        let name = if k.is_empty() {
            y.to_string()
        } else {
            k.clone()
        };
        out.push(Series::new(name, pts));
    }
    if out.is_empty() {
        return Err(format!("no row has both `{x}` and `{y}`"));
    }
    let mut xa = Axis::new(x);
    if log_x {
        xa = xa.log();
    }
    let mut ya = Axis::new(y);
    if log_y {
        ya = ya.log();
    }
    Ok(Figure::new(Chart::Lines(out), xa, ya))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_and_intervals_per_series_and_x() {
        let df = df!(
            "scheduler" => ["a", "a", "a", "b"],
            "rate_scale" => [1.0, 1.0, 2.0, 1.0],
            "seed" => [0u64, 1, 0, 0],
            "ttft_mean_s" => [1.0, 3.0, 5.0, 7.0],
        )
        .unwrap();
        let f = pair_figure(
            &df,
            "rate_scale",
            "ttft_mean_s",
            Some("scheduler"),
            false,
            false,
        )
        .unwrap();
        let Chart::Lines(series) = &f.chart else {
            panic!()
        };
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].name, "a");
        assert_eq!(series[0].points[0].y, 2.0);
        // Two values 1 and 3: half-width 12.706 * sqrt(2) / sqrt(2).
        let (lo, hi) = series[0].points[0].interval.unwrap();
        assert!((hi - 2.0 - 12.706).abs() < 1e-9 && (2.0 - lo - 12.706).abs() < 1e-9);
        assert_eq!(series[0].points[1].y, 5.0);
        assert_eq!(series[1].points[0].y, 7.0);
        assert!(
            pair_figure(&df, "scheduler", "ttft_mean_s", None, false, false)
                .unwrap_err()
                .contains("`scheduler` is a str column")
        );
        assert!(pair_figure(&df, "nope", "ttft_mean_s", None, false, false)
            .unwrap_err()
            .contains("no column `nope`"));
    }
}
