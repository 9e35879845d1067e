//! From a [`Figure`] to what is drawn: every value checked (finite, inside
//! its interval, positive on a log axis, one per category), each chart kind
//! turned into polylines, markers, intervals or bars in data coordinates,
//! and the data's extent along both axes. Nothing here knows pixels.

use super::error::FigureError;
use super::model::{Chart, Figure, IntervalStyle, Marks, Scale, Series};
use super::scale::Extent;

type Polyline = Vec<(f64, f64)>;

/// One series of an x–y chart, ready to draw.
#[derive(Clone, Debug)]
pub(crate) struct XySeries {
    pub name: String,
    /// Position in the series list: picks colour, marker and dash.
    pub index: usize,
    /// Polyline vertices (empty: no line).
    pub line: Vec<(f64, f64)>,
    pub markers: Vec<(f64, f64)>,
    /// (x, low, high) intervals.
    pub intervals: Vec<(f64, f64, f64)>,
    pub band: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct BarData {
    pub name: String,
    pub values: Vec<f64>,
    pub intervals: Option<Vec<(f64, f64)>>,
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    Xy(Vec<XySeries>),
    Bars {
        categories: Vec<String>,
        series: Vec<BarData>,
        stacked: bool,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Prepared {
    pub body: Body,
    /// The x extent (none for bars: x is categorical).
    pub x: Option<Extent>,
    pub y: Extent,
    /// A CDF's y axis runs from 0 to 1 (and a little beyond).
    pub y_fixed: Option<(f64, f64)>,
}

struct Check<'a> {
    figure: &'a Figure,
}

impl Check<'_> {
    fn name(&self) -> String {
        self.figure.display_name()
    }

    /// A value for axis `axis` ('x' or 'y', `None`: no axis), finite and,
    /// on a log axis, positive.
    fn value(
        &self,
        series: &str,
        what: &str,
        v: f64,
        axis: Option<char>,
    ) -> Result<(), FigureError> {
        if !v.is_finite() {
            return Err(FigureError::NotFinite {
                figure: self.name(),
                series: series.to_string(),
                what: what.to_string(),
                value: v,
            });
        }
        let log = match axis {
            Some('x') => self.figure.x.scale == Scale::Log,
            Some(_) => self.figure.y.scale == Scale::Log,
            None => false,
        };
        if log && v <= 0.0 {
            return Err(FigureError::NonPositive {
                figure: self.name(),
                series: series.to_string(),
                what: what.to_string(),
                value: v,
                axis: axis.unwrap_or('y'),
            });
        }
        // Beyond these, ranges and their padding overflow a float.
        if v.abs() > 1e300 || (log && v < 1e-300) {
            return Err(FigureError::OutOfRange {
                figure: self.name(),
                series: series.to_string(),
                what: what.to_string(),
                value: v,
            });
        }
        Ok(())
    }

    fn interval(&self, series: &str, v: f64, (lo, hi): (f64, f64)) -> Result<(), FigureError> {
        self.value(series, "interval low", lo, Some('y'))?;
        self.value(series, "interval high", hi, Some('y'))?;
        let slack = 1e-9 * v.abs().max(1e-300);
        if !(lo <= v + slack && v <= hi + slack) {
            return Err(FigureError::BadInterval {
                figure: self.name(),
                series: series.to_string(),
                value: v,
                low: lo,
                high: hi,
            });
        }
        Ok(())
    }

    fn unsupported(&self, what: impl Into<String>) -> FigureError {
        FigureError::Unsupported {
            figure: self.name(),
            what: what.into(),
        }
    }
}

#[derive(Default)]
struct Span {
    min: f64,
    max: f64,
    any: bool,
}

impl Span {
    fn add(&mut self, v: f64) {
        if self.any {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        } else {
            (self.min, self.max, self.any) = (v, v, true);
        }
    }
    fn extent(&self, from_zero: bool, pad: bool, zero: bool) -> Extent {
        Extent {
            zero,
            min: if self.any { self.min } else { 0.0 },
            max: if self.any { self.max } else { 1.0 },
            from_zero,
            pad,
        }
    }
}

/// Which points get markers: all up to 40, else about 20, staggered by
/// series so that markers of different series do not coincide.
fn marker_indices(n: usize, series: usize) -> Vec<usize> {
    if n <= 40 {
        return (0..n).collect();
    }
    let every = n.div_ceil(20);
    let offset = (series * every / 3) % every;
    (offset..n).step_by(every).collect()
}

pub(crate) fn prepare(fig: &Figure) -> Result<Prepared, FigureError> {
    let c = Check { figure: fig };
    for (axis, a) in [('x', &fig.x), ('y', &fig.y)] {
        if let Some((lo, hi)) = a.range {
            let why = if !(lo.is_finite() && hi.is_finite()) {
                Some("is not finite")
            } else if lo >= hi {
                Some("is empty (low must be below high)")
            } else if a.scale == Scale::Log && lo <= 0.0 {
                Some("must be positive on a log axis")
            } else if lo.abs() > 1e300 || hi.abs() > 1e300 || (a.scale == Scale::Log && lo < 1e-300)
            {
                Some("is too large to draw")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(FigureError::BadRange {
                    figure: c.name(),
                    axis,
                    low: lo,
                    high: hi,
                    why,
                });
            }
        }
    }
    let mut ys = Span::default();
    for r in &fig.refs {
        let label = if r.label.is_empty() {
            "reference line".to_string()
        } else {
            r.label.clone()
        };
        c.value(&label, "y", r.y, Some('y'))?;
        ys.add(r.y);
    }
    let mut xs = Span::default();
    let mut y_fixed = None;
    let body = match &fig.chart {
        Chart::Lines(series) | Chart::Steps(series) => {
            let steps = matches!(fig.chart, Chart::Steps(_));
            // Reference lines alone may make a chart, given an x range.
            if series.is_empty() && (fig.refs.is_empty() || fig.x.range.is_none()) {
                return Err(FigureError::NoSeries { figure: c.name() });
            }
            let mut out = Vec::new();
            for (index, s) in series.iter().enumerate() {
                out.push(xy_series(&c, s, index, steps, &mut xs, &mut ys)?);
            }
            Body::Xy(out)
        }
        Chart::Cdf(samples) => {
            if samples.is_empty() {
                return Err(FigureError::NoSeries { figure: c.name() });
            }
            if fig.y.scale == Scale::Log {
                return Err(c.unsupported("a CDF's y axis (0 to 1) must be linear"));
            }
            let mut out = Vec::new();
            for (index, s) in samples.iter().enumerate() {
                if s.values.is_empty() {
                    return Err(FigureError::EmptySeries {
                        figure: c.name(),
                        series: s.name.clone(),
                    });
                }
                for &v in &s.values {
                    c.value(&s.name, "sample", v, Some('x'))?;
                }
                let mut v = s.values.clone();
                v.sort_by(f64::total_cmp);
                xs.add(v[0]);
                xs.add(v[v.len() - 1]);
                let (line, markers) = cdf_curve(&v, index);
                out.push(XySeries {
                    name: s.name.clone(),
                    index,
                    line,
                    markers,
                    intervals: Vec::new(),
                    band: false,
                });
            }
            ys.add(0.0);
            ys.add(1.0);
            // A little room around 0 and 1, so that the curves' ends stay
            // clear of the frame.
            y_fixed = Some((-0.02, 1.02));
            Body::Xy(out)
        }
        Chart::GroupedBars { categories, series }
        | Chart::StackedBars {
            categories,
            components: series,
        } => {
            let stacked = matches!(fig.chart, Chart::StackedBars { .. });
            if fig.x.scale == Scale::Log {
                return Err(
                    c.unsupported("a bar chart's x axis holds categories and cannot be log")
                );
            }
            if stacked && fig.y.scale == Scale::Log {
                return Err(c.unsupported("stacked bars need a linear y axis"));
            }
            if categories.is_empty() {
                return Err(FigureError::NoCategories { figure: c.name() });
            }
            if series.is_empty() {
                return Err(FigureError::NoSeries { figure: c.name() });
            }
            let n = categories.len();
            let mut totals = vec![0.0; n];
            for s in series {
                if s.values.len() != n {
                    return Err(FigureError::Length {
                        figure: c.name(),
                        series: s.name.clone(),
                        what: "values",
                        got: s.values.len(),
                        want: n,
                    });
                }
                for (i, &v) in s.values.iter().enumerate() {
                    c.value(&s.name, "value", v, Some('y'))?;
                    if stacked {
                        if v < 0.0 {
                            return Err(FigureError::NegativeStack {
                                figure: c.name(),
                                series: s.name.clone(),
                                value: v,
                            });
                        }
                        totals[i] += v;
                    } else {
                        ys.add(v);
                    }
                }
                if let Some(iv) = &s.intervals {
                    if stacked {
                        return Err(c.unsupported(format!(
                            "series `{}`: stacked bars take no intervals",
                            s.name
                        )));
                    }
                    if iv.len() != n {
                        return Err(FigureError::Length {
                            figure: c.name(),
                            series: s.name.clone(),
                            what: "intervals",
                            got: iv.len(),
                            want: n,
                        });
                    }
                    for (&v, &i) in s.values.iter().zip(iv) {
                        c.interval(&s.name, v, i)?;
                        ys.add(i.0);
                        ys.add(i.1);
                    }
                }
            }
            if stacked {
                for t in totals {
                    ys.add(t);
                }
                ys.add(0.0);
            }
            Body::Bars {
                categories: categories.clone(),
                series: series
                    .iter()
                    .map(|s| BarData {
                        name: s.name.clone(),
                        values: s.values.clone(),
                        intervals: s.intervals.clone(),
                    })
                    .collect(),
                stacked,
            }
        }
    };
    let bars = matches!(body, Body::Bars { .. });
    let log_y = fig.y.scale == Scale::Log;
    Ok(Prepared {
        x: (!bars).then(|| xs.extent(false, true, false)),
        y: ys.extent(bars && !log_y, !bars, true),
        y_fixed,
        body,
    })
}

fn xy_series(
    c: &Check,
    s: &Series,
    index: usize,
    steps: bool,
    xs: &mut Span,
    ys: &mut Span,
) -> Result<XySeries, FigureError> {
    if s.points.is_empty() {
        return Err(FigureError::EmptySeries {
            figure: c.name(),
            series: s.name.clone(),
        });
    }
    let mut intervals = Vec::new();
    for p in &s.points {
        c.value(&s.name, "x", p.x, Some('x'))?;
        c.value(&s.name, "y", p.y, Some('y'))?;
        xs.add(p.x);
        ys.add(p.y);
        if let Some(iv) = p.interval {
            c.interval(&s.name, p.y, iv)?;
            ys.add(iv.0);
            ys.add(iv.1);
            intervals.push((p.x, iv.0, iv.1));
        }
    }
    let mut pts: Vec<(f64, f64)> = s.points.iter().map(|p| (p.x, p.y)).collect();
    if steps {
        // A step function holds each value until the next point.
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let markers = match s.marks {
        Marks::Lines => Vec::new(),
        Marks::Markers => pts.clone(),
        Marks::LinesAndMarkers => marker_indices(pts.len(), index)
            .into_iter()
            .map(|i| pts[i])
            .collect(),
    };
    let line = match s.marks {
        Marks::Markers => Vec::new(),
        _ if steps => {
            let mut v = Vec::with_capacity(2 * pts.len());
            for (i, &p) in pts.iter().enumerate() {
                if i > 0 {
                    v.push((p.0, pts[i - 1].1));
                }
                v.push(p);
            }
            v
        }
        _ => pts,
    };
    Ok(XySeries {
        name: s.name.clone(),
        index,
        line,
        markers,
        intervals,
        band: s.intervals == IntervalStyle::Band,
    })
}

/// The empirical CDF of sorted samples as a polyline: exact steps up to
/// 2,000 samples, beyond that 2,000 quantiles (finer than a pixel); and six
/// markers on it, staggered by series.
fn cdf_curve(v: &[f64], index: usize) -> (Polyline, Polyline) {
    let n = v.len();
    let nf = n as f64;
    let mut line = Vec::new();
    if n <= 2000 {
        line.push((v[0], 0.0));
        for (i, &x) in v.iter().enumerate() {
            // Equal samples make one jump.
            if i + 1 < n && v[i + 1] == x {
                continue;
            }
            let before = line.last().map_or(0.0, |p: &(f64, f64)| p.1);
            line.push((x, before));
            line.push((x, (i + 1) as f64 / nf));
        }
    } else {
        let k = 2000;
        line.push((v[0], 0.0));
        for j in 0..=k {
            let r = ((j as f64 / k as f64) * (nf - 1.0)).round() as usize;
            line.push((v[r], (r + 1) as f64 / nf));
        }
    }
    let quantile = |q: f64| {
        let r = ((q * nf).ceil() as usize).clamp(1, n) - 1;
        (v[r], (r + 1) as f64 / nf)
    };
    let m = 6;
    let shift = (index % 3) as f64 / 3.0;
    let markers = (0..m)
        .map(|j| quantile((j as f64 + 0.35 + 0.5 * shift) / m as f64))
        .collect();
    (line, markers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_thin_out_on_long_series_and_stagger() {
        assert_eq!(marker_indices(5, 0), vec![0, 1, 2, 3, 4]);
        let a = marker_indices(1000, 0);
        let b = marker_indices(1000, 1);
        assert!((18..=21).contains(&a.len()), "{}", a.len());
        assert_ne!(a[0], b[0]);
    }

    #[test]
    fn cdf_steps() {
        let (line, _) = cdf_curve(&[1.0, 2.0, 2.0, 4.0], 0);
        assert_eq!(
            line,
            vec![
                (1.0, 0.0),
                (1.0, 0.0),
                (1.0, 0.25),
                (2.0, 0.25),
                (2.0, 0.75),
                (4.0, 0.75),
                (4.0, 1.0)
            ]
        );
        let big: Vec<f64> = (0..100_000).map(|i| i as f64).collect();
        let (line, markers) = cdf_curve(&big, 1);
        assert!(line.len() <= 2002);
        assert_eq!(line.last(), Some(&(99_999.0, 1.0)));
        assert_eq!(markers.len(), 6);
    }
}
