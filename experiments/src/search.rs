//! Capacity planning (`moonlab search`): the cheapest deployment that meets
//! the spec's requirements, or the highest arrival rate a deployment
//! sustains, found by searches that prune instead of running the grid.
//!
//! ```yaml
//! search:
//!   require:                     # every run (trace × seed) must meet all
//!     effective_request_capacity: {min: 0.99}
//!     ttft_p90_s: {max: 10}
//!   counts:                      # monotone axes (more never hurts), one or two
//!     prefill.instances: {from: 1, to: 16}
//!     decode.instances: {from: 1, to: 16}
//!   options:                     # other choices: every combination is searched
//!     prefill.node: [8xA800, 8xH800]
//!   price: {8xA800: 1.0, 8xH800: 2.0}   # per instance, by node preset (default 1)
//!   # or, instead of counts: the saturation rate of the deployment
//!   saturation: {from: 0.25, to: 16, tolerance: 0.02}
//! ```
//!
//! **Cheapest** relies on feasibility being monotone in the counts: if
//! (p, d) meets the requirements, so does every (p' ≥ p, d' ≥ d). With two
//! counts it checks the corner with the most of both (nothing is feasible
//! if it is not), bisects for the fewest of the first count with the most
//! of the second, then walks the staircase between feasible and infeasible:
//! at each step of the first count, the fewest of the second, galloping
//! down from the previous step's (exponential steps, then bisection). It
//! stops once the second count is at its floor or the first count alone
//! costs more than the best found. With one count it bisects. **Saturation** relies on feasibility falling with
//! the rate: it checks both ends, then bisects in log space until the
//! bracket is within the tolerance (a ratio). Both report how many points
//! they ran against the size of the grid they stand in for; `--exhaustive`
//! runs that grid, to check the answer.
//!
//! The search knows nothing of simulators: an [`Oracle`] runs a point.

use crate::spec::{Param, ParamValue, Spec};
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeMap;

/// A requirement on one summary metric.
#[derive(Clone, Debug, PartialEq)]
pub struct Requirement {
    pub metric: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Requirement {
    /// Whether a run's value meets it (a missing or NaN value does not).
    pub fn met(&self, v: Option<f64>) -> bool {
        match v {
            Some(x) if x.is_finite() => {
                self.min.is_none_or(|m| x >= m) && self.max.is_none_or(|m| x <= m)
            }
            _ => false,
        }
    }
}

/// A monotone axis: an integer configuration key and its range.
#[derive(Clone, Debug, PartialEq)]
pub struct CountAxis {
    pub key: String,
    pub from: i64,
    pub to: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Goal {
    /// The cheapest counts meeting the requirements.
    Cheapest(Vec<CountAxis>),
    /// The highest rate scale meeting them, within `tolerance` (a ratio).
    Saturation { from: f64, to: f64, tolerance: f64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SearchSpec {
    pub require: Vec<Requirement>,
    pub goal: Goal,
    /// Option keys with their values (every combination is searched).
    pub options: Vec<(String, Vec<ParamValue>)>,
    /// Price per instance by node preset (missing: 1).
    pub price: BTreeMap<String, f64>,
}

impl SearchSpec {
    /// The `search` section of a spec.
    pub fn from_spec(spec: &Spec) -> Result<SearchSpec, String> {
        let at = |m: String| format!("{}: search{m}", spec.path.display());
        let Some(section) = spec.extra.get("search") else {
            return Err(format!(
                "{}: no `search` section (expected search: {{require, counts or saturation}})",
                spec.path.display()
            ));
        };
        let Value::Mapping(m) = section else {
            return Err(at(": expected a mapping".into()));
        };
        for k in m.keys() {
            let k = k.as_str().unwrap_or_default();
            if !["require", "counts", "options", "price", "saturation"].contains(&k) {
                return Err(at(format!(
                    ": unknown key `{k}` (expected require, counts, options, price, saturation)"
                )));
            }
        }
        let require = parse_require(m.get("require")).map_err(at)?;
        let goal = match (m.get("counts"), m.get("saturation")) {
            (Some(c), None) => Goal::Cheapest(parse_counts(c).map_err(at)?),
            (None, Some(s)) => parse_saturation(s).map_err(at)?,
            (Some(_), Some(_)) => return Err(at(
                ": give `counts` (cheapest deployment) or `saturation` (highest rate), not both"
                    .into(),
            )),
            (None, None) => {
                return Err(at(
                    ": expected `counts` (cheapest deployment) or `saturation` (highest rate)"
                        .into(),
                ))
            }
        };
        let options = match m.get("options") {
            None => Vec::new(),
            Some(Value::Mapping(o)) => {
                let mut out = Vec::new();
                for (k, v) in o {
                    let key = k.as_str().unwrap_or_default().to_string();
                    let Value::Sequence(vals) = v else {
                        return Err(at(format!(".options.{key}: expected a list of values")));
                    };
                    if vals.is_empty() {
                        return Err(at(format!(".options.{key}: expected at least one value")));
                    }
                    let mut values = Vec::new();
                    for (i, v) in vals.iter().enumerate() {
                        values.push(ParamValue::from_yaml(v).ok_or_else(|| {
                            at(format!(".options.{key}[{i}]: expected a single value"))
                        })?);
                    }
                    out.push((key, values));
                }
                out
            }
            Some(_) => return Err(at(".options: expected a mapping of key: [values]".into())),
        };
        let price = match m.get("price") {
            None => BTreeMap::new(),
            Some(Value::Mapping(p)) => {
                let mut out = BTreeMap::new();
                for (k, v) in p {
                    let key = k.as_str().unwrap_or_default().to_string();
                    match v.as_f64() {
                        Some(x) if x > 0.0 && x.is_finite() => {
                            out.insert(key, x);
                        }
                        _ => return Err(at(format!(".price.{key}: expected a number > 0"))),
                    }
                }
                out
            }
            Some(_) => return Err(at(".price: expected a mapping of node preset: price".into())),
        };
        if let Goal::Cheapest(counts) = &goal {
            for c in counts {
                if options.iter().any(|(k, _)| *k == c.key) {
                    return Err(at(format!(": `{}` is both a count and an option", c.key)));
                }
            }
        }
        Ok(SearchSpec {
            require,
            goal,
            options,
            price,
        })
    }

    /// Every combination of the options, in spec order.
    pub fn option_combos(&self) -> Vec<Vec<Param>> {
        let mut combos: Vec<Vec<Param>> = vec![Vec::new()];
        for (key, values) in &self.options {
            let mut next = Vec::new();
            for c in &combos {
                for (i, v) in values.iter().enumerate() {
                    let mut c = c.clone();
                    c.push(Param {
                        key: key.clone(),
                        value: v.clone(),
                        origin: format!("search.options.{key}[{i}]"),
                        file: None,
                    });
                    next.push(c);
                }
            }
            combos = next;
        }
        combos
    }

    /// Points of the grid the search stands in for.
    pub fn grid_size(&self) -> u64 {
        let combos = self
            .options
            .iter()
            .fold(1u64, |n, (_, v)| n.saturating_mul(v.len() as u64));
        combos.saturating_mul(match &self.goal {
            Goal::Cheapest(counts) => counts
                .iter()
                .fold(1u64, |n, c| n.saturating_mul((c.to - c.from + 1) as u64)),
            Goal::Saturation {
                from,
                to,
                tolerance,
            } => rate_grid(*from, *to, *tolerance).len() as u64,
        })
    }
}

/// Rates from `from` to `to` in steps of the ratio 1 + tolerance (the
/// grid a saturation search stands in for).
pub fn rate_grid(from: f64, to: f64, tolerance: f64) -> Vec<f64> {
    let steps = ((to / from).ln() / (1.0 + tolerance).ln()).ceil() as usize;
    let mut v: Vec<f64> = (0..=steps)
        .map(|i| (from * (1.0 + tolerance).powi(i as i32)).min(to))
        .collect();
    v.dedup();
    v
}

fn parse_require(v: Option<&Value>) -> Result<Vec<Requirement>, String> {
    let Some(Value::Mapping(m)) = v else {
        return Err(".require: expected a mapping of metric: {min: x} or {max: x}, e.g. effective_request_capacity: {min: 0.99}".into());
    };
    if m.is_empty() {
        return Err(".require: expected at least one requirement".into());
    }
    let mut out = Vec::new();
    for (k, v) in m {
        let metric = k.as_str().unwrap_or_default().to_string();
        let Value::Mapping(b) = v else {
            return Err(format!(
                ".require.{metric}: expected {{min: x}} and/or {{max: x}}"
            ));
        };
        let mut r = Requirement {
            metric: metric.clone(),
            min: None,
            max: None,
        };
        for (bk, bv) in b {
            let bound = bk.as_str().unwrap_or_default();
            let x = bv
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!(".require.{metric}.{bound}: expected a number"))?;
            match bound {
                "min" => r.min = Some(x),
                "max" => r.max = Some(x),
                other => {
                    return Err(format!(
                        ".require.{metric}: unknown bound `{other}` (expected min, max)"
                    ))
                }
            }
        }
        if r.min.is_none() && r.max.is_none() {
            return Err(format!(".require.{metric}: expected min and/or max"));
        }
        out.push(r);
    }
    Ok(out)
}

fn parse_counts(v: &Value) -> Result<Vec<CountAxis>, String> {
    let Value::Mapping(m) = v else {
        return Err(".counts: expected a mapping of key: {from: N, to: M}".into());
    };
    let mut out = Vec::new();
    for (k, v) in m {
        let key = k.as_str().unwrap_or_default().to_string();
        let get = |b: &Mapping, name: &str| -> Result<i64, String> {
            b.get(name)
                .and_then(|x| x.as_i64())
                .filter(|x| *x >= 0)
                .ok_or_else(|| format!(".counts.{key}.{name}: expected a whole number >= 0"))
        };
        let Value::Mapping(b) = v else {
            return Err(format!(".counts.{key}: expected {{from: N, to: M}}"));
        };
        let (from, to) = (get(b, "from")?, get(b, "to")?);
        if to > 100_000 {
            return Err(format!(".counts.{key}.to: {to} (expected at most 100000)"));
        }
        if from > to {
            return Err(format!(".counts.{key}: from {from} > to {to}"));
        }
        out.push(CountAxis { key, from, to });
    }
    if out.is_empty() || out.len() > 2 {
        return Err(format!(
            ".counts: {} axes (expected one or two monotone counts, e.g. prefill.instances and decode.instances)",
            out.len()
        ));
    }
    Ok(out)
}

fn parse_saturation(v: &Value) -> Result<Goal, String> {
    let Value::Mapping(m) = v else {
        return Err(".saturation: expected {from: x, to: y, tolerance: t}".into());
    };
    let num = |name: &str, default: Option<f64>| -> Result<f64, String> {
        match m.get(name) {
            None => default.ok_or_else(|| format!(".saturation.{name}: missing")),
            Some(x) => x
                .as_f64()
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| format!(".saturation.{name}: expected a number > 0")),
        }
    };
    let (from, to, tolerance) = (
        num("from", None)?,
        num("to", None)?,
        num("tolerance", Some(0.02))?,
    );
    if from >= to {
        return Err(format!(".saturation: from {from} must be below to {to}"));
    }
    if !(1e-4..1.0).contains(&tolerance) {
        return Err(format!(
            ".saturation.tolerance: {tolerance} (expected a ratio from 0.0001 to below 1, e.g. 0.02)"
        ));
    }
    let steps = (to / from).ln() / (1.0 + tolerance).ln();
    if steps > 1e6 {
        return Err(format!(
            ".saturation: from {from} to {to} in steps of {tolerance} is {steps:.0} rates (expected at most a million; widen the tolerance)"
        ));
    }
    Ok(Goal::Saturation {
        from,
        to,
        tolerance,
    })
}

/// Runs points for the search.
pub trait Oracle {
    /// Runs (or reuses) the point with these parameters on every trace and
    /// seed of the spec; returns each run's summary.
    fn evaluate(&mut self, params: &[Param]) -> Result<Vec<serde_json::Value>, String>;
    /// The node preset of `pool` (prefill or decode) for these parameters.
    fn node(&self, params: &[Param], pool: &str) -> Result<String, String>;
}

/// One point the search ran.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    pub params: Vec<Param>,
    pub feasible: bool,
    /// Cheapest: the deployment's cost; saturation: the rate scale.
    pub value: f64,
}

/// A search's answer for one option combination.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub options: Vec<Param>,
    /// Cheapest: the counts and their cost; saturation: the highest
    /// feasible rate (None: nothing feasible in range).
    pub best: Option<(Vec<Param>, f64)>,
    /// Saturation: the lowest infeasible rate seen (None: feasible to the
    /// range's end).
    pub bracket_high: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub answers: Vec<Answer>,
    pub probes: Vec<Probe>,
    pub grid_size: u64,
}

impl Outcome {
    /// The answer over all option combinations: the cheapest (or the
    /// highest rate).
    pub fn best(&self, goal: &Goal) -> Option<&Answer> {
        let better = |a: f64, b: f64| match goal {
            Goal::Cheapest(_) => a < b,
            Goal::Saturation { .. } => a > b,
        };
        let mut best: Option<&Answer> = None;
        for a in &self.answers {
            if let Some((_, v)) = &a.best {
                if best.is_none_or(|b| b.best.as_ref().is_some_and(|(_, bv)| better(*v, *bv))) {
                    best = Some(a);
                }
            }
        }
        best
    }
}

struct Runner<'a, O: Oracle> {
    spec: &'a SearchSpec,
    oracle: &'a mut O,
    probes: Vec<Probe>,
}

impl<O: Oracle> Runner<'_, O> {
    fn feasible(&mut self, params: Vec<Param>, value: f64) -> Result<bool, String> {
        if let Some(p) = self.probes.iter().find(|p| p.params == params) {
            return Ok(p.feasible);
        }
        let runs = self.oracle.evaluate(&params)?;
        // A misspelt metric would make every point infeasible: say so.
        for s in &runs {
            for r in &self.spec.require {
                if s.get(&r.metric).is_none() {
                    let known: Vec<&str> = s
                        .as_object()
                        .map(|m| m.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    return Err(format!(
                        "search.require.{}: no such metric in a run's summary (expected one of: {})",
                        r.metric,
                        known.join(", ")
                    ));
                }
            }
        }
        // A run that serves nothing meets no latency requirement (its
        // latencies are empty, not zero).
        let feasible = runs.iter().all(|s| {
            s.get("served").and_then(|v| v.as_u64()) != Some(0)
                && self
                    .spec
                    .require
                    .iter()
                    .all(|r| r.met(s.get(&r.metric).and_then(|v| v.as_f64())))
        });
        self.probes.push(Probe {
            params,
            feasible,
            value,
        });
        Ok(feasible)
    }
}

fn count_param(axis: &CountAxis, v: i64) -> Param {
    Param {
        key: axis.key.clone(),
        value: ParamValue::Int(v),
        origin: format!("search.counts.{}", axis.key),
        file: None,
    }
}

/// The price of one instance of each count axis under these options.
fn unit_prices<O: Oracle>(
    spec: &SearchSpec,
    oracle: &O,
    options: &[Param],
    counts: &[CountAxis],
) -> Result<Vec<f64>, String> {
    counts
        .iter()
        .map(|c| {
            let pool = c.key.split('.').next().unwrap_or_default();
            if !["prefill", "decode"].contains(&pool) {
                return Ok(1.0);
            }
            let node = oracle.node(options, pool)?;
            Ok(spec.price.get(&node).copied().unwrap_or(1.0))
        })
        .collect()
}

/// Runs the pruned search (or, with `exhaustive`, the whole grid).
pub fn search<O: Oracle>(
    spec: &SearchSpec,
    oracle: &mut O,
    exhaustive: bool,
) -> Result<Outcome, String> {
    let mut answers = Vec::new();
    let mut r = Runner {
        spec,
        oracle,
        probes: Vec::new(),
    };
    for options in spec.option_combos() {
        let answer = match &spec.goal {
            Goal::Cheapest(counts) => {
                let prices = unit_prices(spec, r.oracle, &options, counts)?;
                let cost = |v: &[i64]| {
                    v.iter()
                        .zip(&prices)
                        .map(|(n, p)| *n as f64 * p)
                        .sum::<f64>()
                };
                let with = |v: &[i64]| {
                    let mut p = options.clone();
                    p.extend(counts.iter().zip(v).map(|(a, n)| count_param(a, *n)));
                    p
                };
                let mut best: Option<(Vec<i64>, f64)> = None;
                let consider = |v: Vec<i64>, best: &mut Option<(Vec<i64>, f64)>| {
                    let c = cost(&v);
                    if best
                        .as_ref()
                        .is_none_or(|(bv, bc)| c < *bc || (c == *bc && v < *bv))
                    {
                        *best = Some((v, c));
                    }
                };
                if exhaustive {
                    let axes: Vec<Vec<i64>> =
                        counts.iter().map(|c| (c.from..=c.to).collect()).collect();
                    let mut all: Vec<Vec<i64>> = vec![Vec::new()];
                    for a in &axes {
                        all = all
                            .into_iter()
                            .flat_map(|v| {
                                a.iter().map(move |x| {
                                    let mut v = v.clone();
                                    v.push(*x);
                                    v
                                })
                            })
                            .collect();
                    }
                    for v in all {
                        if r.feasible(with(&v), cost(&v))? {
                            consider(v, &mut best);
                        }
                    }
                } else if counts.len() == 1 {
                    let a = &counts[0];
                    if r.feasible(with(&[a.to]), cost(&[a.to]))? {
                        // Bisect for the fewest: lo infeasible-or-unknown, hi feasible.
                        let (mut lo, mut hi) = (a.from - 1, a.to);
                        while hi - lo > 1 {
                            let mid = lo + (hi - lo) / 2;
                            if r.feasible(with(&[mid]), cost(&[mid]))? {
                                hi = mid;
                            } else {
                                lo = mid;
                            }
                        }
                        consider(vec![hi], &mut best);
                    }
                } else {
                    let (a, b) = (&counts[0], &counts[1]);
                    // The corner with the most of both: nothing is feasible
                    // if it is not.
                    if r.feasible(with(&[a.to, b.to]), cost(&[a.to, b.to]))? {
                        // The fewest of the first count with the most of
                        // the second: bisection.
                        let (mut lo, mut hi) = (a.from - 1, a.to);
                        while hi - lo > 1 {
                            let mid = lo + (hi - lo) / 2;
                            if r.feasible(with(&[mid, b.to]), cost(&[mid, b.to]))? {
                                hi = mid;
                            } else {
                                lo = mid;
                            }
                        }
                        // Then along the staircase: at each x, the fewest
                        // of the second count, galloping down from the
                        // previous x's (feasible here too, by monotonicity).
                        let (mut x, mut y) = (hi, b.to);
                        loop {
                            let (mut good, mut bad, mut step) = (y, b.from - 1, 1);
                            loop {
                                let cand = good - step;
                                if cand <= bad {
                                    break;
                                }
                                if r.feasible(with(&[x, cand]), cost(&[x, cand]))? {
                                    good = cand;
                                    step *= 2;
                                } else {
                                    bad = cand;
                                    break;
                                }
                            }
                            while good - bad > 1 {
                                let mid = bad + (good - bad) / 2;
                                if r.feasible(with(&[x, mid]), cost(&[x, mid]))? {
                                    good = mid;
                                } else {
                                    bad = mid;
                                }
                            }
                            consider(vec![x, good], &mut best);
                            // More of the first cannot lower the second
                            // below its floor, and costs more.
                            x += 1;
                            if good == b.from || x > a.to {
                                break;
                            }
                            if let Some((_, bc)) = &best {
                                if cost(&[x, b.from]) >= *bc {
                                    break;
                                }
                            }
                            y = good;
                        }
                    }
                }
                Answer {
                    options: options.clone(),
                    best: best.map(|(v, c)| {
                        (
                            counts
                                .iter()
                                .zip(&v)
                                .map(|(a, n)| count_param(a, *n))
                                .collect(),
                            c,
                        )
                    }),
                    bracket_high: None,
                }
            }
            Goal::Saturation {
                from,
                to,
                tolerance,
            } => {
                let with = |rate: f64| {
                    let mut p = options.clone();
                    p.push(Param {
                        key: crate::spec::RATE_SCALE.into(),
                        value: ParamValue::Float(rate),
                        origin: "search.saturation".into(),
                        file: None,
                    });
                    p
                };
                let grid = rate_grid(*from, *to, *tolerance);
                let (best, high) = if exhaustive {
                    let mut best = None;
                    let mut high = None;
                    for &rate in &grid {
                        if r.feasible(with(rate), rate)? {
                            if high.is_none() {
                                best = Some(rate);
                            }
                        } else if high.is_none() {
                            high = Some(rate);
                        }
                    }
                    (best, high)
                } else if !r.feasible(with(grid[0]), grid[0])? {
                    (None, Some(grid[0]))
                } else if r.feasible(with(grid[grid.len() - 1]), grid[grid.len() - 1])? {
                    (Some(grid[grid.len() - 1]), None)
                } else {
                    // Bisect over the grid's indices: lo feasible, hi not.
                    let (mut lo, mut hi) = (0usize, grid.len() - 1);
                    while hi - lo > 1 {
                        let mid = (lo + hi) / 2;
                        if r.feasible(with(grid[mid]), grid[mid])? {
                            lo = mid;
                        } else {
                            hi = mid;
                        }
                    }
                    (Some(grid[lo]), Some(grid[hi]))
                };
                Answer {
                    options: options.clone(),
                    best: best.map(|rate| (with(rate).split_off(options.len()), rate)),
                    bracket_high: high,
                }
            }
        };
        answers.push(answer);
    }
    Ok(Outcome {
        answers,
        probes: r.probes,
        grid_size: spec.grid_size(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic world: (p, d) is feasible iff p >= need_p(d) — a
    /// staircase — and the node preset prices the pools.
    struct Stairs {
        runs: usize,
        feasible: Box<dyn Fn(i64, i64, f64) -> bool>,
    }

    impl Oracle for Stairs {
        fn evaluate(&mut self, params: &[Param]) -> Result<Vec<serde_json::Value>, String> {
            self.runs += 1;
            let get = |k: &str| params.iter().find(|p| p.key == k).map(|p| p.value.clone());
            let mut p = get("prefill.instances")
                .and_then(|v| v.as_f64())
                .unwrap_or(8.0) as i64;
            // An H800 prefill node does the work of three A800s.
            if get("prefill.node") == Some(ParamValue::Str("8xH800".into())) {
                p *= 3;
            }
            let d = get("decode.instances")
                .and_then(|v| v.as_f64())
                .unwrap_or(8.0) as i64;
            let rate = get("rate_scale").and_then(|v| v.as_f64()).unwrap_or(1.0);
            let ok = (self.feasible)(p, d, rate);
            Ok(vec![
                serde_json::json!({"effective_request_capacity": if ok { 1.0 } else { 0.5 }}),
            ])
        }
        fn node(&self, params: &[Param], pool: &str) -> Result<String, String> {
            Ok(params
                .iter()
                .find(|p| p.key == format!("{pool}.node"))
                .map(|p| p.value.to_string())
                .unwrap_or_else(|| "8xA800".into()))
        }
    }

    fn spec(yaml: &str) -> SearchSpec {
        let dir = std::env::temp_dir().join(format!("moonlab-search-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.jsonl"), "").unwrap();
        let s = Spec::parse(&format!("traces: [t.jsonl]\n{yaml}"), &dir.join("s.yaml")).unwrap();
        SearchSpec::from_spec(&s).unwrap()
    }

    const TWO: &str = "search:\n  require: {effective_request_capacity: {min: 0.99}}\n  counts:\n    prefill.instances: {from: 1, to: 16}\n    decode.instances: {from: 1, to: 16}\n";

    fn grid_answer(
        s: &SearchSpec,
        f: impl Fn(i64, i64, f64) -> bool + 'static,
    ) -> (Outcome, Outcome, usize, usize) {
        let mut o = Stairs {
            runs: 0,
            feasible: Box::new(f),
        };
        let pruned = search(s, &mut o, false).unwrap();
        let pruned_runs = o.runs;
        o.runs = 0;
        let full = search(s, &mut o, true).unwrap();
        (pruned, full, pruned_runs, o.runs)
    }

    #[test]
    fn the_staircase_walk_finds_the_grids_cheapest_in_a_fraction_of_the_runs() {
        let s = spec(TWO);
        assert_eq!(s.grid_size(), 256);
        // Prefill and decode trade off: p * d >= 40 and p >= 3, d >= 2.
        let (pruned, full, runs, all) = grid_answer(&s, |p, d, _| p * d >= 40 && p >= 3 && d >= 2);
        assert_eq!(all, 256);
        let want = full.best(&s.goal).unwrap().best.clone().unwrap();
        let got = pruned.best(&s.goal).unwrap().best.clone().unwrap();
        // p * d >= 40 with the least p + d: (5, 8), (6, 7), (7, 6), (8, 5) cost 13; ties go to the lowest counts vector.
        assert_eq!(want.1, 13.0);
        assert_eq!(got, want);
        assert!(runs * 5 < 256, "{runs} runs");
        // Nothing feasible: one run says so.
        let (pruned, _, runs, _) = grid_answer(&s, |_, _, _| false);
        assert!(pruned.best(&s.goal).is_none());
        assert_eq!(runs, 1);
        // Everything feasible: the floor is found along the first column.
        let (pruned, full, runs, _) = grid_answer(&s, |_, _, _| true);
        assert_eq!(pruned.best(&s.goal), full.best(&s.goal));
        assert!(runs <= 17, "{runs}");
    }

    #[test]
    fn random_monotone_worlds_agree_with_the_grid() {
        // Monotone staircases from a seeded generator: thresholds need(d)
        // non-increasing in d.
        let s = spec(TWO);
        let mut state = 7u64;
        for _ in 0..200 {
            let mut need = [0i64; 17];
            let mut cur = 1 + (next(&mut state) % 20) as i64;
            for slot in need.iter_mut().skip(1) {
                cur = (cur - (next(&mut state) % 3) as i64).max(1);
                *slot = cur;
            }
            let f = move |p: i64, d: i64, _| p >= need[d as usize];
            let (pruned, full, runs, _) = grid_answer(&s, f);
            assert_eq!(
                pruned.best(&s.goal).map(|a| a.best.clone().unwrap().1),
                full.best(&s.goal).map(|a| a.best.clone().unwrap().1)
            );
            assert!(runs * 5 < 256, "{runs}");
        }
    }

    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn prices_by_node_preset_choose_the_option() {
        let s = spec("search:\n  require: {effective_request_capacity: {min: 0.99}}\n  counts:\n    prefill.instances: {from: 1, to: 16}\n    decode.instances: {from: 1, to: 16}\n  options:\n    prefill.node: [8xA800, 8xH800]\n  price: {8xA800: 1.0, 8xH800: 2.5}\n");
        assert_eq!(s.grid_size(), 512);
        // Nine A800 prefill nodes (cost 9) or three H800s (cost 7.5).
        let (pruned, full, runs, _) = grid_answer(&s, |p, d, _| d >= 4 && p >= 9);
        let best = pruned.best(&s.goal).unwrap();
        assert_eq!(best.options[0].value, ParamValue::Str("8xH800".into()));
        assert_eq!(best.best.as_ref().unwrap().1, 3.0 * 2.5 + 4.0);
        assert_eq!(pruned.answers[0].best.as_ref().unwrap().1, 9.0 + 4.0);
        assert_eq!(best, full.best(&s.goal).unwrap());
        assert!(runs * 5 < 512, "{runs}");
        // One count bisects.
        let one = spec("search:\n  require: {effective_request_capacity: {min: 0.99}}\n  counts: {decode.instances: {from: 1, to: 64}}\n");
        let (pruned, full, runs, _) = grid_answer(&one, |_, d, _| d >= 37);
        assert_eq!(pruned.best(&one.goal), full.best(&one.goal));
        assert_eq!(
            pruned.best(&one.goal).unwrap().best.as_ref().unwrap().1,
            37.0
        );
        assert!(runs <= 8, "{runs}");
    }

    #[test]
    fn saturation_bisects_to_the_grids_rate() {
        let s = spec("search:\n  require: {effective_request_capacity: {min: 0.99}}\n  saturation: {from: 0.25, to: 16, tolerance: 0.02}\n");
        let grid = rate_grid(0.25, 16.0, 0.02);
        assert_eq!(grid.len() as u64, s.grid_size());
        assert_eq!(grid[0], 0.25);
        assert_eq!(*grid.last().unwrap(), 16.0);
        for limit in [0.1, 0.3, 1.0, 2.5, 15.9, 100.0] {
            let (pruned, full, runs, all) = grid_answer(&s, move |_, _, rate| rate <= limit);
            assert_eq!(pruned.answers, full.answers, "limit {limit}");
            assert!(runs * 5 < all, "{runs} of {all}");
            if (0.25..16.0).contains(&limit) {
                let a = &pruned.answers[0];
                let (lo, hi) = (a.best.as_ref().unwrap().1, a.bracket_high.unwrap());
                assert!(
                    lo <= limit && hi > limit && hi / lo <= 1.02 + 1e-12,
                    "{lo} {hi}"
                );
            }
        }
    }

    #[test]
    fn search_sections_are_checked_by_key() {
        let dir = std::env::temp_dir().join(format!("moonlab-search-e-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.jsonl"), "").unwrap();
        for (yaml, words) in [
            ("", "no `search` section"),
            ("search: {require: {x: {min: 1}}}\n", "expected `counts`"),
            ("search: {require: {x: {at_least: 1}}, saturation: {from: 1, to: 2}}\n", "search.require.x: unknown bound `at_least`"),
            ("search: {require: {x: {min: 1}}, counts: {a: {from: 3, to: 1}}}\n", "search.counts.a: from 3 > to 1"),
            ("search: {require: {x: {min: 1}}, counts: {a: {from: 1, to: 2}, b: {from: 1, to: 2}, c: {from: 1, to: 2}}}\n", "3 axes"),
            ("search: {require: {x: {min: 1}}, saturation: {from: 2, to: 1}}\n", "from 2 must be below to 1"),
            ("search: {require: {x: {min: 1}}, saturation: {from: 1, to: 2}, counts: {a: {from: 1, to: 2}}}\n", "not both"),
            ("search: {require: {x: {min: 1}}, saturation: {from: 1, to: 2}, price: {8xA800: 0}}\n", "search.price.8xA800"),
            ("search: {require: {x: {min: 1}}, saturation: {from: 1, to: 2}, bogus: 1}\n", "unknown key `bogus`"),
            ("search: {require: {x: {min: 1}}, saturation: {from: 1, to: 2, tolerance: 1e-12}}\n", "search.saturation.tolerance: 0.000000000001"),
            ("search: {require: {x: {min: 1}}, saturation: {from: 1e-300, to: 1e300, tolerance: 0.0001}}\n", "rates (expected at most a million"),
            ("search: {require: {x: {min: 1}}, counts: {a: {from: 1, to: 1000000000}}}\n", "search.counts.a.to: 1000000000"),
        ] {
            let s = Spec::parse(&format!("traces: [t.jsonl]\n{yaml}"), &dir.join("s.yaml")).unwrap();
            let e = SearchSpec::from_spec(&s).unwrap_err();
            assert!(e.contains(words), "{yaml}: {e}");
            assert!(e.contains("s.yaml"), "{e}");
        }
    }
}
