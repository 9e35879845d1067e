//! Axis scales: fitting a range to the data (linear ends on round steps, log
//! ends on decades where that wastes little room), mapping values to
//! positions, choosing ticks (1-2-2.5-5 steps; decades with 2…9 minor ticks,
//! or 1-2-5 within less than two decades) and writing their labels.

use super::model::TickFormat;

/// A fitted axis range.
#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) struct Domain {
    pub lo: f64,
    pub hi: f64,
    pub log: bool,
}

impl Domain {
    /// Where `v` falls, 0 at `lo` and 1 at `hi` (beyond either outside).
    pub fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            (v - self.lo) / (self.hi - self.lo)
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tick {
    pub value: f64,
    /// `None`: a major tick left unlabelled to keep labels apart.
    pub label: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Ticks {
    pub major: Vec<Tick>,
    pub minor: Vec<f64>,
}

/// The data's extent along an axis, and how the range should treat it.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Extent {
    pub min: f64,
    pub max: f64,
    /// Bars: the range starts at zero (or ends there, for negative data).
    pub from_zero: bool,
    /// Pad the data by a few percent so that markers sit inside the frame.
    pub pad: bool,
    /// Start at zero when the data's low end is near it (under 40 % of
    /// the high end): for value axes.
    pub zero: bool,
}

/// A round step of about `span / n`: 1, 2, 2.5 or 5 times a power of ten.
pub(crate) fn nice_step(span: f64, n: usize) -> f64 {
    let raw = span / n.max(1) as f64;
    if !(raw > 0.0 && raw.is_finite()) {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= raw * (1.0 - 1e-9) {
            return m * mag;
        }
    }
    10.0 * mag
}

/// A linear range for `ext` with ends on multiples of a step near
/// span / `n`, and that step; `fixed` ranges are kept as given.
pub(crate) fn fit_linear(ext: Extent, fixed: Option<(f64, f64)>, n: usize) -> (Domain, f64) {
    if let Some((lo, hi)) = fixed {
        let step = nice_step(hi - lo, n);
        return (Domain { lo, hi, log: false }, step);
    }
    let (mut a, mut b) = (ext.min, ext.max);
    if a == b {
        let d = if a == 0.0 { 1.0 } else { 0.1 * a.abs() };
        a -= d;
        b += d;
        if ext.min >= 0.0 && a < 0.0 {
            a = 0.0;
        }
    }
    let near_zero_floor = a >= 0.0 && (ext.from_zero || (ext.zero && a <= 0.4 * b));
    let near_zero_ceil = b <= 0.0 && (ext.from_zero || (ext.zero && b >= 0.4 * a));
    let span = b - a;
    // Padding never crosses zero from one side.
    if near_zero_floor {
        a = 0.0;
    } else if ext.pad {
        a -= 0.04 * span;
        if ext.min >= 0.0 && ext.max > 0.0 {
            a = a.max(0.0);
        }
    }
    if near_zero_ceil {
        b = 0.0;
    } else if ext.pad {
        b += 0.04 * span;
        if ext.max <= 0.0 && ext.min < 0.0 {
            b = b.min(0.0);
        }
    }
    let step = nice_step(b - a, n);
    let lo = (a / step + 1e-9).floor() * step;
    let hi = (b / step - 1e-9).ceil() * step;
    (Domain { lo, hi, log: false }, step)
}

/// A log range for positive `ext`: padded a little in log space, widened to
/// the enclosing decades where they are close.
pub(crate) fn fit_log(ext: Extent, fixed: Option<(f64, f64)>) -> Domain {
    if let Some((lo, hi)) = fixed {
        return Domain { lo, hi, log: true };
    }
    let (a, b) = (ext.min.log10(), ext.max.log10());
    let pad = if a == b { 0.3 } else { 0.05 * (b - a).max(1.0) };
    let (mut la, mut lb) = (a - pad, b + pad);

    // The enclosing decades where they add at most a fifth of a decade to
    // the padding (data right at a decade keeps its padding).
    let (fa, cb) = (a - a.floor(), b.ceil() - b);
    if fa > 0.02 && fa - pad < 0.2 {
        la = a.floor();
    }
    if cb > 0.02 && cb - pad < 0.2 {
        lb = b.ceil();
    }
    // Within what a float holds.
    let (la, lb) = (la.max(-307.0), lb.min(307.0));
    Domain {
        lo: pow10(la),
        hi: pow10(lb),
        log: true,
    }
}

fn pow10(e: f64) -> f64 {
    if e.fract() == 0.0 {
        format!("1e{e}").parse().unwrap_or_else(|_| 10f64.powf(e))
    } else {
        10f64.powf(e)
    }
}

/// Linear ticks: multiples of `step` within the domain.
pub(crate) fn linear_ticks(d: Domain, step: f64, format: TickFormat) -> Ticks {
    let first = (d.lo / step - 1e-9).ceil();
    let last = (d.hi / step + 1e-9).floor();
    let count = last - first;
    if count.is_nan() || count > 1000.0 {
        // A range too wide for steps (it overflows): its two ends.
        let values = [d.lo, d.hi];
        return Ticks {
            major: values
                .iter()
                .map(|&value| Tick {
                    value,
                    label: Some(format!("{value:e}")),
                })
                .collect(),
            minor: Vec::new(),
        };
    }
    let values: Vec<f64> = (first as i64..=last as i64)
        .map(|i| {
            let v = i as f64 * step;
            if v == 0.0 {
                0.0
            } else {
                v
            }
        })
        .collect();
    let labels = linear_labels(&values, step, format);
    Ticks {
        major: values
            .into_iter()
            .zip(labels)
            .map(|(value, l)| Tick {
                value,
                label: Some(l),
            })
            .collect(),
        minor: Vec::new(),
    }
}

/// Log ticks. With three or more decades in range, the decades (every
/// `stride`-th labelled) and minor ticks at 2…9 (up to 8 decades); with
/// fewer, labelled 1-2-5 ticks (or 1…9 when those are too few too).
pub(crate) fn log_ticks(d: Domain, stride: usize, format: TickFormat) -> Ticks {
    let (la, lb) = (d.lo.log10(), d.hi.log10());
    let inside = |v: f64| v >= d.lo * (1.0 - 1e-9) && v <= d.hi * (1.0 + 1e-9);
    let e0 = (la - 1e-9).ceil() as i32;
    let e1 = (lb + 1e-9).floor() as i32;
    let all_multiples = |ms: &[f64]| -> Vec<f64> {
        let mut v = Vec::new();
        for e in (la.floor() as i32)..=(lb.ceil() as i32) {
            for &m in ms {
                let x = m * pow10(e as f64);
                if inside(x) {
                    v.push(x);
                }
            }
        }
        v
    };
    // Powers of ten for all labels when any needs them.
    let power =
        format == TickFormat::Power || (format != TickFormat::Percent && (e0 < -3 || e1 >= 15));
    if e1 - e0 >= 2 {
        // Over many decades, ticks on every 2nd, 5th, 10th... decade (at
        // most about 15); labels on every `stride`-th of those. Both on
        // multiples, so they stay put when the range moves.
        let every = [1, 2, 3, 5, 10, 20, 25, 50, 100]
            .into_iter()
            .find(|&k| (e1 - e0) / k <= 15)
            .unwrap_or(100);
        let label_every = every * stride.max(1) as i32;
        let major = (e0..=e1)
            .filter(|e| e.rem_euclid(every) == 0)
            .map(|e| {
                let value = pow10(e as f64);
                Tick {
                    value,
                    label: (e.rem_euclid(label_every) == 0)
                        .then(|| log_label(value, format, power)),
                }
            })
            .collect();
        let minor = if lb - la <= 8.5 {
            all_multiples(&[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
        } else {
            Vec::new()
        };
        return Ticks { major, minor };
    }
    let mut major = all_multiples(&[1.0, 2.0, 5.0]);
    if major.len() < 3 {
        major = all_multiples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    }
    let minor = all_multiples(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
        .into_iter()
        .filter(|v| !major.iter().any(|m| (m - v).abs() <= 1e-9 * v.abs()))
        .collect();
    Ticks {
        major: major
            .into_iter()
            .map(|value| Tick {
                value,
                label: Some(log_label(value, format, power)),
            })
            .collect(),
        minor,
    }
}

/// Decimals that show every multiple of `step` exactly.
fn decimals(step: f64) -> usize {
    (0..=12)
        .find(|&d| {
            let s = step * 10f64.powi(d as i32);
            (s - s.round()).abs() < 1e-6 * s.abs().max(1.0)
        })
        .unwrap_or(12)
}

const SI: [(f64, &str); 4] = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")];

fn linear_labels(values: &[f64], step: f64, format: TickFormat) -> Vec<String> {
    let max = values.iter().fold(0f64, |m, v| m.max(v.abs()));
    match format {
        TickFormat::Percent => {
            let d = decimals(step * 100.0);
            values.iter().map(|v| fixed(v * 100.0, d)).collect()
        }
        // Beyond the suffixes, or tiny: a common power of ten.
        _ if max >= 1e15 || (max > 0.0 && max < 1e-3) || format == TickFormat::Power => {
            let e = max.log10().floor() as i32;
            let div = pow10(e as f64);
            let d = decimals(step / div);
            values
                .iter()
                .map(|v| {
                    if *v == 0.0 {
                        "0".to_string()
                    } else {
                        format!("{}×10{}", fixed(v / div, d), superscript(e))
                    }
                })
                .collect()
        }
        TickFormat::Si | TickFormat::Auto
            if max >= 1e3 && (format == TickFormat::Si || max >= 1e5) =>
        {
            let (div, suffix) = SI
                .iter()
                .copied()
                .find(|(div, _)| max >= *div)
                .unwrap_or((1.0, ""));
            let d = decimals(step / div);
            values
                .iter()
                .map(|v| {
                    if *v == 0.0 {
                        "0".to_string()
                    } else {
                        format!("{}{suffix}", fixed(v / div, d))
                    }
                })
                .collect()
        }
        _ => {
            let d = decimals(step);
            values.iter().map(|v| fixed(*v, d)).collect()
        }
    }
}

/// The label of a log tick `m × 10^e` (`power`: as a power of ten).
pub(crate) fn log_label(v: f64, format: TickFormat, power: bool) -> String {
    let e = (v.log10() + 1e-9).floor() as i32;
    let m = (v / 10f64.powi(e) * 1e6).round() / 1e6;
    if format == TickFormat::Percent {
        return trimmed(v * 100.0);
    }
    if power || format == TickFormat::Power || !(-3..15).contains(&e) {
        let p = format!("10{}", superscript(e));
        return if m == 1.0 {
            p
        } else {
            format!("{}×{p}", trimmed(m))
        };
    }
    if e >= 3 {
        let (div, suffix) = SI
            .iter()
            .copied()
            .find(|(div, _)| v >= *div * (1.0 - 1e-9))
            .unwrap_or((1.0, ""));
        return format!("{}{suffix}", trimmed(v / div));
    }
    trimmed(v)
}

/// `v` with `d` decimals and a typographic minus.
fn fixed(v: f64, d: usize) -> String {
    let s = format!("{v:.d$}");
    minus(
        if s.trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            s.trim_start_matches('-').to_string()
        } else {
            s
        },
    )
}

/// `v` with up to 6 decimals, trailing zeros dropped.
fn trimmed(v: f64) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    minus(if s == "-0" { "0".into() } else { s.into() })
}

fn minus(s: String) -> String {
    match s.strip_prefix('-') {
        Some(rest) => format!("\u{2212}{rest}"),
        None => s,
    }
}

fn superscript(e: i32) -> String {
    e.to_string()
        .chars()
        .map(|c| match c {
            '-' => '⁻',
            '0' => '⁰',
            '1' => '¹',
            '2' => '²',
            '3' => '³',
            '4' => '⁴',
            '5' => '⁵',
            '6' => '⁶',
            '7' => '⁷',
            '8' => '⁸',
            _ => '⁹',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(t: &Ticks) -> Vec<String> {
        t.major.iter().filter_map(|t| t.label.clone()).collect()
    }

    fn ext(min: f64, max: f64) -> Extent {
        Extent {
            min,
            max,
            from_zero: false,
            pad: true,
            zero: true,
        }
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1.0, 4), 0.25);
        assert_eq!(nice_step(7.0, 5), 2.0);
        assert_eq!(nice_step(0.03, 3), 0.01);
        assert_eq!(nice_step(4500.0, 5), 1000.0);
    }

    #[test]
    fn linear_ranges_end_on_steps_and_start_at_zero_when_close() {
        let (d, step) = fit_linear(ext(0.12, 0.93), None, 5);
        assert_eq!((d.lo, d.hi, step), (0.0, 1.0, 0.2));
        let (d, step) = fit_linear(ext(50.0, 60.0), None, 5);
        assert_eq!(step, 2.5);
        assert!(
            d.lo <= 50.0 && d.lo >= 47.5 && d.hi >= 60.0 && d.hi <= 62.5,
            "{d:?}"
        );
        let (d, _) = fit_linear(ext(3.0, 3.0), None, 5);
        assert!(d.lo < 3.0 && d.hi > 3.0);
        let (d, _) = fit_linear(ext(0.0, 0.0), None, 5);
        assert!(d.lo <= 0.0 && d.hi > 0.0);
    }

    #[test]
    fn linear_labels_share_decimals_and_use_suffixes() {
        let d = Domain {
            lo: 0.0,
            hi: 1.0,
            log: false,
        };
        assert_eq!(
            labels(&linear_ticks(d, 0.25, TickFormat::Auto)),
            ["0.00", "0.25", "0.50", "0.75", "1.00"]
        );
        assert_eq!(
            labels(&linear_ticks(d, 0.2, TickFormat::Percent)),
            ["0", "20", "40", "60", "80", "100"]
        );
        let d = Domain {
            lo: -2e6,
            hi: 2e6,
            log: false,
        };
        assert_eq!(
            labels(&linear_ticks(d, 1e6, TickFormat::Auto)),
            ["−2M", "−1M", "0", "1M", "2M"]
        );
        let d = Domain {
            lo: 0.0,
            hi: 3000.0,
            log: false,
        };
        assert_eq!(
            labels(&linear_ticks(d, 500.0, TickFormat::Si)),
            ["0", "0.5k", "1.0k", "1.5k", "2.0k", "2.5k", "3.0k"]
        );
        let d = Domain {
            lo: 0.0,
            hi: 2e-4,
            log: false,
        };
        assert_eq!(
            labels(&linear_ticks(d, 1e-4, TickFormat::Auto)),
            ["0", "1×10⁻⁴", "2×10⁻⁴"]
        );
        let d = Domain {
            lo: -1e300,
            hi: 1e300,
            log: false,
        };
        assert_eq!(
            labels(&linear_ticks(d, 1e300, TickFormat::Auto)),
            ["−1×10³⁰⁰", "0", "1×10³⁰⁰"]
        );
    }

    #[test]
    fn log_ticks_are_decades_with_minor_ticks() {
        let d = Domain {
            lo: 1e2,
            hi: 1e6,
            log: true,
        };
        let t = log_ticks(d, 1, TickFormat::Auto);
        assert_eq!(labels(&t), ["100", "1k", "10k", "100k", "1M"]);
        assert_eq!(t.minor.len(), 4 * 8);
        let t = log_ticks(d, 2, TickFormat::Auto);
        assert_eq!(labels(&t), ["100", "10k", "1M"]);
        assert_eq!(t.major.len(), 5);
        let t = log_ticks(d, 1, TickFormat::Power);
        assert_eq!(labels(&t), ["10²", "10³", "10⁴", "10⁵", "10⁶"]);
        let d = Domain {
            lo: 1e-6,
            hi: 1e-4,
            log: true,
        };
        assert_eq!(
            labels(&log_ticks(d, 1, TickFormat::Auto)),
            ["10⁻⁶", "10⁻⁵", "10⁻⁴"]
        );
        let d = Domain {
            lo: 1e-300,
            hi: 1e300,
            log: true,
        };
        let t = log_ticks(d, 2, TickFormat::Auto);
        assert!(
            t.major.len() <= 16 && t.minor.is_empty(),
            "{}",
            t.major.len()
        );
        assert_eq!(labels(&t)[..2], ["10⁻³⁰⁰", "10⁻²⁰⁰"]);
    }

    #[test]
    fn narrow_log_ranges_get_1_2_5_ticks() {
        let d = Domain {
            lo: 150.0,
            hi: 900.0,
            log: true,
        };
        assert_eq!(
            labels(&log_ticks(d, 1, TickFormat::Auto)),
            ["200", "300", "400", "500", "600", "700", "800", "900"]
        );
        let d = Domain {
            lo: 0.15,
            hi: 6.0,
            log: true,
        };
        assert_eq!(
            labels(&log_ticks(d, 1, TickFormat::Auto)),
            ["0.2", "0.5", "1", "2", "5"]
        );
    }

    #[test]
    fn log_ranges_snap_to_close_decades() {
        let d = fit_log(ext(1200.0, 9e4), None);
        assert!(
            (d.lo - 1000.0).abs() < 1e-6 && (d.hi - 1e5).abs() < 1e-3,
            "{d:?}"
        );
        let d = fit_log(ext(1000.0, 1e5), None);
        assert!(d.lo < 1000.0 && d.lo > 700.0 && d.hi > 1e5, "{d:?}");
        let d = fit_log(ext(3000.0, 5e4), None);
        assert!(
            d.lo < 3000.0 && d.lo > 1000.0 && d.hi > 5e4 && d.hi < 1e5,
            "{d:?}"
        );
        let d = fit_log(ext(7.0, 7.0), None);
        assert!(d.lo < 7.0 && d.hi > 7.0);
    }
}
