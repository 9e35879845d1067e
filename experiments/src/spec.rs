//! Experiment specs (`experiments/*.yaml`): a study as one file — a base
//! cluster configuration, traces, overrides for every point, a grid (cross
//! product) and/or a list of points, and seeds — expanded into the points
//! a sweep runs, each with a stable id.
//!
//! ```yaml
//! name: fig5-scheduling          # default: the file's stem
//! description: Figure 5, TTFT per prefill scheduler
//! config: ../configs/fig5-scheduling.yaml   # relative to this file
//! traces:                        # relative to this file
//!   - ../../traces/data/conversation_trace.jsonl
//!   - {path: ../../traces/data/synthetic_trace.jsonl, first: 2000, label: synthetic}
//! set: {slo.ttft_s: 30}          # every point
//! grid:                          # cross product, in this order
//!   scheduler: [random, kvcache-centric]
//!   rate_scale: [1, 1.5]         # the trace's arrival rate, scaled
//! points:                        # crossed with the grid; keys move together
//!   - {label: 8P8D, prefill.instances: 8, decode.instances: 8}
//!   - {label: 10P6D, prefill.instances: 10, decode.instances: 6}
//! seeds: [0, 1, 2]               # or `repetitions: 3` (seeds 0, 1, 2)
//! ```
//!
//! A parameter is a configuration key (anything `moonlab sim --set`
//! accepts) or one of the keys the runner itself owns: `rate_scale` (the
//! trace's arrival rate, scaled; > 0) and `label` (a name for a point of
//! `points`, a column of the table). Points are ordered trace, then
//! `points`, then the grid (its first key outermost), then seeds; that
//! order is the table's. A point's id is readable (its parameters) and
//! stable: a hash of everything that decides its result (the base
//! configuration's text, the overrides, the trace, the seed), so a rerun
//! after an edit redoes exactly the points the edit changed.
//!
//! Parsing names the file, the key path and what was expected; no I/O
//! besides reading the spec and its base configuration, and checking that
//! each trace exists (the runner reads traces and validates each point's
//! configuration before it runs anything).

use serde_yaml_ng::{Mapping, Value};
use std::fmt;
use std::path::{Path, PathBuf};

/// Keys the runner owns; every other parameter is a configuration key.
pub const RATE_SCALE: &str = "rate_scale";
pub const LABEL: &str = "label";
pub const SEED: &str = "seed";

/// Points a spec may expand to (a typo in a grid should not start a week
/// of runs).
pub const MAX_POINTS: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: cannot read: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// A parameter's value: what YAML scalars a spec may hold.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl ParamValue {
    /// A YAML scalar as a value (None for lists, mappings, null).
    pub fn from_yaml(v: &Value) -> Option<ParamValue> {
        match v {
            Value::Bool(b) => Some(ParamValue::Bool(*b)),
            Value::Number(n) => n
                .as_i64()
                .map(ParamValue::Int)
                .or_else(|| n.as_f64().map(ParamValue::Float)),
            Value::String(s) => Some(ParamValue::Str(s.clone())),
            _ => None,
        }
    }

    /// As a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(f) => Some(*f),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(i) => write!(f, "{i}"),
            // `{:?}` keeps a float a float (1.0, not 1) and round-trips.
            ParamValue::Float(x) => write!(f, "{x:?}"),
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Str(s) => f.write_str(s),
        }
    }
}

/// One parameter of a point, with where in the spec it was written
/// (`grid.scheduler[2]`, `points[1].label`, `set.slo.ttft_s`).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub key: String,
    pub value: ParamValue,
    pub origin: String,
    /// For a file-valued key (`*.cost_profile`): the path resolved against
    /// the spec's folder and a hash of the file's bytes, which the point's
    /// id covers.
    pub file: Option<(PathBuf, u64)>,
}

/// A trace of the spec.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceRef {
    /// The path as the spec wrote it (the table's `trace` column, unless a
    /// label is given).
    pub written: String,
    /// Resolved against the spec's folder.
    pub path: PathBuf,
    /// Keep the first N requests only.
    pub first: Option<u64>,
    pub label: String,
    /// A hash of the trace file's bytes (a point's id covers it).
    pub content: u64,
}

/// One run of the sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Position in the expansion (the table's row order; shards take
    /// `index mod n`).
    pub index: usize,
    pub id: String,
    /// Index into [`Spec::traces`].
    pub trace: usize,
    /// The spec's `set`, then this point's parameters, in spec order; a
    /// later key overrides an earlier one.
    pub params: Vec<Param>,
    pub seed: u64,
}

impl Point {
    /// The trace arrival-rate scale (1 unless a parameter says otherwise).
    pub fn rate_scale(&self) -> f64 {
        self.params
            .iter()
            .rev()
            .find(|p| p.key == RATE_SCALE)
            .and_then(|p| p.value.as_f64())
            .unwrap_or(1.0)
    }

    /// `moonlab sim --set` assignments for the configuration keys, with
    /// where each came from, ending with the seed.
    pub fn config_sets(&self) -> Vec<(String, String)> {
        let mut sets: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|p| p.key != RATE_SCALE && p.key != LABEL)
            .map(|p| match &p.file {
                Some((path, _)) => (format!("{}={}", p.key, path.display()), p.origin.clone()),
                None => (format!("{}={}", p.key, p.value), p.origin.clone()),
            })
            .collect();
        sets.push((format!("{SEED}={}", self.seed), "seeds".into()));
        sets
    }

    /// The value of `key` for this point, if it has one (the last writer).
    pub fn param(&self, key: &str) -> Option<&ParamValue> {
        self.params
            .iter()
            .rev()
            .find(|p| p.key == key)
            .map(|p| &p.value)
    }
}

/// What a point runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecKind {
    /// The cluster simulator (`moonlab sim`); parameters are configuration
    /// keys.
    Sim,
    /// Prefix-cache replay (`moonlab cache`); parameters are `policy`,
    /// `capacity`, `nodes`, `balance_slack` and `block_tokens`.
    Cache,
    /// The trace's statistics (`moonlab trace stats`), one point per trace.
    TraceStats,
}

impl SpecKind {
    pub fn name(self) -> &'static str {
        match self {
            SpecKind::Sim => "sim",
            SpecKind::Cache => "cache",
            SpecKind::TraceStats => "trace-stats",
        }
    }
}

/// The parameters a cache-replay point takes.
pub const CACHE_KEYS: &[&str] = &[
    "policy",
    "capacity",
    "nodes",
    "balance_slack",
    "block_tokens",
];

/// A parsed spec.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub kind: SpecKind,
    pub description: String,
    pub path: PathBuf,
    /// The base configuration's path (resolved) and text; `None`: defaults.
    pub config: Option<(PathBuf, String)>,
    pub traces: Vec<TraceRef>,
    /// Parameters of every point (`set`).
    pub set: Vec<Param>,
    /// Rows of `points` (each moves its keys together).
    pub rows: Vec<Vec<Param>>,
    /// The grid: keys in order, each with its values.
    pub grid: Vec<(String, Vec<Param>)>,
    pub seeds: Vec<u64>,
    /// Sections the runner does not interpret but other commands do
    /// (`search`, `figures`, `report`), kept as YAML.
    pub extra: Mapping,
    /// A hash of what every point shares: the kind, the base
    /// configuration's text and the files it names (cost profiles).
    pub inputs: u64,
}

/// Top-level keys, and the sections owned by other commands.
const KEYS: &[&str] = &[
    "name",
    "kind",
    "description",
    "config",
    "traces",
    "set",
    "grid",
    "points",
    "seeds",
    "repetitions",
];
const EXTRA_KEYS: &[&str] = &["search", "figures", "report"];

impl Spec {
    /// Reads and parses the spec at `path` (and its base configuration).
    pub fn load(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Spec::parse(&text, path)
    }

    /// Parses spec text; `path` names it in errors and anchors relative
    /// paths. Reads the base configuration and checks the traces exist.
    pub fn parse(text: &str, path: &Path) -> Result<Spec, SpecError> {
        let shown = path.display().to_string();
        let bad = |message: String| SpecError::Invalid {
            path: shown.clone(),
            message,
        };
        let root: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default();
            SpecError::Invalid {
                path: format!("{shown}{at}"),
                message: e.to_string(),
            }
        })?;
        let Value::Mapping(root) = root else {
            return Err(bad(
                "expected a mapping of spec keys (name, config, traces, grid, points, seeds, ...)"
                    .into(),
            ));
        };
        let folder = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut extra = Mapping::new();
        for (k, v) in &root {
            let key = k.as_str().unwrap_or_default();
            if EXTRA_KEYS.contains(&key) {
                extra.insert(k.clone(), v.clone());
            } else if !KEYS.contains(&key) {
                return Err(bad(format!(
                    "unknown key `{}` (expected one of: {}, {})",
                    scalar_text(k),
                    KEYS.join(", "),
                    EXTRA_KEYS.join(", ")
                )));
            }
        }
        let string = |key: &str| -> Result<Option<String>, SpecError> {
            match root.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(bad(format!(
                    "{key}: expected a string, found {}",
                    kind(other)
                ))),
            }
        };
        let name = match string("name")? {
            Some(n) => {
                if n.is_empty()
                    || !n
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    || n.starts_with('.')
                {
                    return Err(bad(format!(
                        "name: {n:?} is not a folder name (expected letters, digits, '-', '_' or '.')"
                    )));
                }
                n
            }
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .ok_or_else(|| bad("has no file name to name the spec by".into()))?,
        };
        let description = string("description")?.unwrap_or_default();
        let spec_kind = match string("kind")?.as_deref() {
            None | Some("sim") => SpecKind::Sim,
            Some("cache") => SpecKind::Cache,
            Some("trace-stats") => SpecKind::TraceStats,
            Some(other) => {
                return Err(bad(format!(
                    "kind: {other:?} (expected sim, cache or trace-stats)"
                )))
            }
        };
        let config = match string("config")? {
            None => None,
            Some(c) => {
                let p = folder.join(&c);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| bad(format!("config: {}: cannot read: {e}", p.display())))?;
                Some((p, text))
            }
        };
        let traces = parse_traces(root.get("traces"), &folder).map_err(bad)?;
        let set = match root.get("set") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Mapping(m)) => params_of(m, "set").map_err(bad)?,
            Some(other) => {
                return Err(bad(format!(
                    "set: expected a mapping of key: value, found {}",
                    kind(other)
                )))
            }
        };
        let rows = match root.get("points") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(rows)) => {
                if rows.is_empty() {
                    return Err(bad("points: expected at least one point".into()));
                }
                let mut out = Vec::new();
                for (i, row) in rows.iter().enumerate() {
                    let at = format!("points[{i}]");
                    match row {
                        Value::Mapping(m) if !m.is_empty() => {
                            out.push(params_of(m, &at).map_err(bad)?)
                        }
                        other => {
                            return Err(bad(format!(
                                "{at}: expected a non-empty mapping of key: value, found {}",
                                kind(other)
                            )))
                        }
                    }
                }
                out
            }
            Some(other) => {
                return Err(bad(format!(
                    "points: expected a list of mappings, found {}",
                    kind(other)
                )))
            }
        };
        let grid = match root.get("grid") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Mapping(m)) => {
                let mut out = Vec::new();
                for (k, v) in m {
                    let key = param_key(k, "grid").map_err(|e| bad(message(e)))?;
                    let at = format!("grid.{key}");
                    let Value::Sequence(values) = v else {
                        return Err(bad(format!(
                            "{at}: expected a list of values, found {}",
                            kind(v)
                        )));
                    };
                    if values.is_empty() {
                        return Err(bad(format!("{at}: expected at least one value")));
                    }
                    if key == LABEL {
                        return Err(bad(format!(
                            "{at}: `label` names a row of `points`, not a grid axis"
                        )));
                    }
                    let mut params = Vec::new();
                    for (i, v) in values.iter().enumerate() {
                        let origin = format!("{at}[{i}]");
                        params.push(param(&key, v, origin).map_err(|e| bad(message(e)))?);
                    }
                    out.push((key, params));
                }
                out
            }
            Some(other) => {
                return Err(bad(format!(
                    "grid: expected a mapping of key: [values], found {}",
                    kind(other)
                )))
            }
        }
        .into_iter()
        .collect::<Vec<_>>();
        let seeds = parse_seeds(root.get("seeds"), root.get("repetitions")).map_err(bad)?;
        for (key, _) in &grid {
            if key == SEED {
                return Err(bad(
                    "grid.seed: give seeds with `seeds: [..]` or `repetitions: N`".into(),
                ));
            }
        }
        let mut set = set;
        let mut rows = rows;
        let mut grid = grid;
        resolve_files(&mut set, &folder).map_err(bad)?;
        for row in &mut rows {
            resolve_files(row, &folder).map_err(bad)?;
        }
        for (_, values) in &mut grid {
            resolve_files(values, &folder).map_err(bad)?;
        }
        let inputs = inputs_hash(spec_kind, config.as_ref());
        let spec = Spec {
            name,
            kind: spec_kind,
            description,
            path: path.to_path_buf(),
            config,
            traces,
            set,
            rows,
            grid,
            seeds,
            extra,
            inputs,
        };
        let keys = spec
            .set
            .iter()
            .chain(spec.rows.iter().flatten())
            .chain(spec.grid.iter().flat_map(|(_, v)| v));
        for p in keys {
            let fits = match spec_kind {
                SpecKind::Sim => true,
                SpecKind::Cache => {
                    CACHE_KEYS.contains(&p.key.as_str()) || p.key == RATE_SCALE || p.key == LABEL
                }
                SpecKind::TraceStats => p.key == "block_tokens" || p.key == LABEL,
            };
            if !fits {
                let expected = match spec_kind {
                    SpecKind::Cache => CACHE_KEYS.join(", "),
                    _ => "block_tokens".into(),
                };
                return Err(bad(format!(
                    "{}: `{}` is not a parameter of a {} spec (expected {expected})",
                    p.origin,
                    p.key,
                    spec_kind.name()
                )));
            }
        }
        let n = spec.size();
        if n > MAX_POINTS {
            return Err(bad(format!(
                "expands to {n} points, more than {MAX_POINTS} (expected a smaller grid)"
            )));
        }
        // Two points that would be the same run (1 and 1.0, a value given
        // twice, two identical rows) would share one folder and count twice
        // in every mean.
        let points = spec.points();
        let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for p in &points {
            // The hash after the readable part decides identity.
            let hash = p.id.rsplit('_').next().unwrap_or(&p.id);
            if let Some(&first) = seen.get(hash) {
                let show = |q: &Point| {
                    let origins: Vec<String> = q
                        .params
                        .iter()
                        .map(|x| format!("{} ({}={})", x.origin, x.key, x.value))
                        .collect();
                    format!(
                        "trace {}, {}, seed {}",
                        spec.traces[q.trace].label,
                        origins.join(", "),
                        q.seed
                    )
                };
                return Err(bad(format!(
                    "two points are the same run: [{}] and [{}] (expected distinct values)",
                    show(&points[first]),
                    show(p)
                )));
            }
            seen.insert(hash, p.index);
        }
        drop(seen);
        Ok(spec)
    }

    /// How many points the spec expands to.
    pub fn size(&self) -> usize {
        self.traces
            .len()
            .saturating_mul(self.rows.len().max(1))
            .saturating_mul(
                self.grid
                    .iter()
                    .fold(1usize, |n, (_, v)| n.saturating_mul(v.len())),
            )
            .saturating_mul(self.seeds.len())
    }

    /// Every point, in table order.
    pub fn points(&self) -> Vec<Point> {
        let mut out = Vec::with_capacity(self.size());
        let empty: Vec<Param> = Vec::new();
        let rows: Vec<&Vec<Param>> = if self.rows.is_empty() {
            vec![&empty]
        } else {
            self.rows.iter().collect()
        };
        let combos = grid_combos(&self.grid);
        let varying = self.varying_keys();
        for (t, trace) in self.traces.iter().enumerate() {
            for row in &rows {
                for combo in &combos {
                    for &seed in &self.seeds {
                        let mut params = self.set.clone();
                        params.extend(row.iter().cloned());
                        params.extend(combo.iter().cloned());
                        let index = out.len();
                        let id = point_id(self.inputs, trace, &params, &varying, seed);
                        out.push(Point {
                            index,
                            id,
                            trace: t,
                            params,
                            seed,
                        });
                    }
                }
            }
        }
        out
    }

    /// A point outside the expansion (a search's probe): the spec's `set`,
    /// then `params`; `varying` names the keys its id shows.
    pub fn point_for(
        &self,
        trace: usize,
        params: &[Param],
        seed: u64,
        varying: &[String],
    ) -> Point {
        let mut all = self.set.clone();
        all.extend(params.iter().cloned());
        let id = point_id(self.inputs, &self.traces[trace], &all, varying, seed);
        Point {
            index: usize::MAX,
            id,
            trace,
            params: all,
            seed,
        }
    }

    /// The parameter columns of the table: keys that differ between points
    /// or come from the grid or the rows, in first-appearance order (keys
    /// only in `set` are the same everywhere: they stay in config.yaml).
    pub fn varying_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        let mut push = |k: &str| {
            if !keys.iter().any(|x| x == k) {
                keys.push(k.to_string());
            }
        };
        for row in &self.rows {
            for p in row {
                push(&p.key);
            }
        }
        for (k, _) in &self.grid {
            push(k);
        }
        keys
    }
}

/// `--shard I/N`: which points a shard runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// Parses `I/N` (0 <= I < N).
    pub fn parse(text: &str) -> Result<Shard, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("--shard {text}: expected I/N, e.g. 0/4"))?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("--shard {text}: I must be a whole number"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("--shard {text}: N must be a whole number"))?;
        if count == 0 || index >= count {
            return Err(format!(
                "--shard {text}: expected 0 <= I < N (shards are numbered from 0, as Slurm array and Kubernetes completion indices are)"
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether this shard runs `point`.
    pub fn owns(&self, point: &Point) -> bool {
        point.index % self.count == self.index
    }
}

fn grid_combos(grid: &[(String, Vec<Param>)]) -> Vec<Vec<Param>> {
    let mut combos: Vec<Vec<Param>> = vec![Vec::new()];
    for (_, values) in grid {
        let mut next = Vec::with_capacity(combos.len() * values.len());
        for c in &combos {
            for v in values {
                let mut c = c.clone();
                c.push(v.clone());
                next.push(c);
            }
        }
        combos = next;
    }
    combos
}

/// A readable, stable id: the values of the keys that tell points apart
/// (at most 80 characters of them), then a hash of everything that
/// decides the point's result.
fn point_id(
    inputs: u64,
    trace: &TraceRef,
    params: &[Param],
    varying: &[String],
    seed: u64,
) -> String {
    let mut canonical = format!("{inputs:016x}");
    canonical.push('\u{0}');
    canonical.push_str(&trace.written);
    canonical.push_str(&format!("\u{0}{:016x}\u{0}", trace.content));
    if let Some(n) = trace.first {
        canonical.push_str(&format!("first={n}"));
    }
    for p in params {
        canonical.push('\u{0}');
        canonical.push_str(&p.key);
        canonical.push('=');
        // A number is its value (1 and 1.0 are one point); a file is its
        // bytes.
        match (&p.file, p.value.as_f64()) {
            (Some((_, h)), _) => canonical.push_str(&format!("file:{h:016x}")),
            (None, Some(x)) => canonical.push_str(&format!("{x:?}")),
            (None, None) => canonical.push_str(&p.value.to_string()),
        }
    }
    canonical.push_str(&format!("\u{0}seed={seed}"));
    let hash = fnv1a64(canonical.as_bytes());
    let mut slug = String::new();
    let mut seen: Vec<&str> = Vec::new();
    // The last writer of each key that tells points apart, in
    // first-appearance order.
    for p in params {
        if seen.contains(&p.key.as_str()) || !varying.contains(&p.key) {
            continue;
        }
        seen.push(&p.key);
        let value = params
            .iter()
            .rev()
            .find(|q| q.key == p.key)
            .map(|q| q.value.to_string())
            .unwrap_or_default();
        if !slug.is_empty() {
            slug.push('_');
        }
        slug.push_str(&format!("{}-{value}", p.key));
    }
    if !slug.is_empty() {
        slug.push('_');
    }
    slug.push_str(&format!("seed-{seed}"));
    let mut clean: String = slug
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if clean.len() > 80 {
        clean.truncate(80);
    }
    format!("{clean}_{hash:016x}")
}

/// FNV-1a: small, stable across platforms and releases (ids are folder
/// names that must not change with a compiler upgrade).
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn scalar_text(v: &Value) -> String {
    match ParamValue::from_yaml(v) {
        Some(p) => p.to_string(),
        None => kind(v).to_string(),
    }
}

fn param_key(k: &Value, at: &str) -> Result<String, SpecError> {
    match k {
        Value::String(s) if !s.trim().is_empty() && !s.contains('=') => Ok(s.trim().to_string()),
        other => Err(SpecError::Invalid {
            path: String::new(),
            message: format!(
                "{at}: key {} is not a configuration key (expected e.g. scheduler or prefill.instances)",
                scalar_text(other)
            ),
        }),
    }
}

fn param(key: &str, v: &Value, origin: String) -> Result<Param, SpecError> {
    let invalid = |message: String| SpecError::Invalid {
        path: String::new(),
        message,
    };
    let value = ParamValue::from_yaml(v).ok_or_else(|| {
        invalid(format!(
            "{origin}: expected a single value (a number, a string or a boolean), found {}",
            kind(v)
        ))
    })?;
    if let ParamValue::Float(f) = value {
        if !f.is_finite() {
            return Err(invalid(format!(
                "{origin}: expected a finite number, found {f}"
            )));
        }
    }
    if key == RATE_SCALE {
        match value.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => {}
            _ => {
                return Err(invalid(format!(
                "{origin}: rate_scale {value} (expected a number > 0: 2 doubles the arrival rate)"
            )))
            }
        }
    }
    if key == LABEL && !matches!(value, ParamValue::Str(_)) {
        return Err(invalid(format!(
            "{origin}: label {value} (expected a string)"
        )));
    }
    if key == SEED {
        return Err(invalid(format!(
            "{origin}: give seeds with `seeds: [..]` or `repetitions: N`"
        )));
    }
    Ok(Param {
        key: key.to_string(),
        value,
        origin,
        file: None,
    })
}

/// File-valued parameters (`*.cost_profile`) name files beside the spec;
/// each is resolved and its bytes hashed, so a point's id changes with them.
fn resolve_files(params: &mut [Param], folder: &Path) -> Result<(), String> {
    for p in params {
        if !p.key.ends_with("cost_profile") {
            continue;
        }
        if let ParamValue::Str(v) = &p.value {
            let path = folder.join(v);
            let bytes = std::fs::read(&path).map_err(|e| {
                format!(
                    "{}: {}: cannot read ({e}; paths are relative to the spec's folder)",
                    p.origin,
                    path.display()
                )
            })?;
            p.file = Some((path, content_hash(&bytes)));
        }
    }
    Ok(())
}

/// FNV-1a over 8-byte words: stable across platforms and releases, and
/// fast enough to hash a trace each time a spec is read.
pub fn content_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &b in chunks.remainder() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A hash of what all points share: the spec's kind, the base
/// configuration's text and the cost-profile files it names.
fn inputs_hash(kind: SpecKind, config: Option<&(PathBuf, String)>) -> u64 {
    let mut text = String::from(kind.name());
    if let Some((path, body)) = config {
        text.push('\u{0}');
        text.push_str(body);
        let folder = path.parent().unwrap_or(Path::new(""));
        if let Ok(Value::Mapping(m)) = serde_yaml_ng::from_str::<Value>(body) {
            for pool in ["prefill", "decode"] {
                let profile = m
                    .get(pool)
                    .and_then(|p| p.get("cost_profile"))
                    .and_then(|v| v.as_str());
                if let Some(file) = profile {
                    let bytes = std::fs::read(folder.join(file)).unwrap_or_default();
                    text.push_str(&format!("\u{0}{pool}={:016x}", content_hash(&bytes)));
                }
            }
        }
    }
    fnv1a64(text.as_bytes())
}

fn params_of(m: &Mapping, at: &str) -> Result<Vec<Param>, String> {
    let mut out = Vec::new();
    for (k, v) in m {
        let key = param_key(k, at).map_err(message)?;
        let origin = format!("{at}.{key}");
        out.push(param(&key, v, origin).map_err(message)?);
    }
    Ok(out)
}

fn message(e: SpecError) -> String {
    match e {
        SpecError::Invalid { message, .. } | SpecError::Read { message, .. } => message,
    }
}

fn parse_traces(v: Option<&Value>, folder: &Path) -> Result<Vec<TraceRef>, String> {
    let list = match v {
        Some(Value::Sequence(l)) if !l.is_empty() => l,
        Some(Value::String(_)) => return Err(
            "traces: expected a list of trace files, e.g. [traces/data/conversation_trace.jsonl]"
                .into(),
        ),
        None | Some(Value::Null) => {
            return Err(
                "traces: missing (expected a list of trace files, relative to the spec's folder)"
                    .into(),
            )
        }
        Some(other) => {
            return Err(format!(
                "traces: expected a non-empty list of trace files, found {}",
                kind(other)
            ))
        }
    };
    let mut out: Vec<TraceRef> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = format!("traces[{i}]");
        let (written, first, label) = match entry {
            Value::String(s) => (s.clone(), None, None),
            Value::Mapping(m) => {
                for k in m.keys() {
                    let k = k.as_str().unwrap_or_default();
                    if !["path", "first", "label"].contains(&k) {
                        return Err(format!(
                            "{at}: unknown key `{k}` (expected path, first, label)"
                        ));
                    }
                }
                let path = match m.get("path") {
                    Some(Value::String(s)) => s.clone(),
                    _ => return Err(format!("{at}.path: expected the trace file's path")),
                };
                let first = match m.get("first") {
                    None => None,
                    Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => n.as_u64(),
                    Some(other) => {
                        return Err(format!(
                            "{at}.first: {} (expected a whole number of requests > 0)",
                            scalar_text(other)
                        ))
                    }
                };
                let label = match m.get("label") {
                    None => None,
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(other) => {
                        return Err(format!(
                            "{at}.label: {} (expected a non-empty string)",
                            scalar_text(other)
                        ))
                    }
                };
                (path, first, label)
            }
            other => {
                return Err(format!(
                    "{at}: expected a path or {{path, first, label}}, found {}",
                    kind(other)
                ))
            }
        };
        let path = folder.join(&written);
        if !path.is_file() {
            return Err(format!(
                "{at}: trace {} not found (paths are relative to the spec's folder)",
                path.display()
            ));
        }
        let content = std::fs::read(&path)
            .map(|b| content_hash(&b))
            .map_err(|e| format!("{at}: trace {}: cannot read: {e}", path.display()))?;
        let label = label.unwrap_or_else(|| {
            Path::new(&written)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| written.clone())
        });
        if out.iter().any(|t| t.label == label) {
            return Err(format!(
                "{at}: label {label:?} is already another trace's (give each trace a distinct `label`)"
            ));
        }
        out.push(TraceRef {
            written,
            path,
            first,
            label,
            content,
        });
    }
    Ok(out)
}

fn parse_seeds(seeds: Option<&Value>, reps: Option<&Value>) -> Result<Vec<u64>, String> {
    match (seeds, reps) {
        (Some(_), Some(_)) => Err("seeds and repetitions: give one of them".into()),
        (Some(Value::Sequence(list)), None) if !list.is_empty() => {
            let mut out = Vec::new();
            for (i, s) in list.iter().enumerate() {
                match s.as_u64() {
                    Some(x) if !out.contains(&x) => out.push(x),
                    Some(x) => return Err(format!("seeds[{i}]: seed {x} appears twice")),
                    None => {
                        return Err(format!(
                            "seeds[{i}]: {} (expected a whole number >= 0)",
                            scalar_text(s)
                        ))
                    }
                }
            }
            Ok(out)
        }
        (Some(other), None) => Err(format!(
            "seeds: expected a non-empty list of whole numbers, found {}",
            kind(other)
        )),
        (None, Some(r)) => match r.as_u64() {
            Some(n) if (1..=10_000).contains(&n) => Ok((0..n).collect()),
            _ => Err(format!(
                "repetitions: {} (expected a whole number from 1 to 10000)",
                scalar_text(r)
            )),
        },
        (None, None) => Ok(vec![0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Result<Spec, String> {
        let dir = std::env::temp_dir().join(format!("moonlab-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t.jsonl"), "").unwrap();
        std::fs::write(dir.join("base.yaml"), "seed: 0\n").unwrap();
        Spec::parse(text, &dir.join("study.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn expands_rows_grid_and_seeds_in_table_order() {
        let s = spec(
            "config: base.yaml\ntraces: [t.jsonl]\nset: {slo.ttft_s: 30}\npoints:\n  - {label: a, prefill.instances: 8}\n  - {label: b, prefill.instances: 10}\ngrid:\n  scheduler: [random, kvcache-centric]\n  rate_scale: [1, 1.5]\nrepetitions: 2\n",
        )
        .unwrap();
        assert_eq!(s.name, "study");
        assert_eq!(s.size(), 2 * 2 * 2 * 2);
        let pts = s.points();
        assert_eq!(pts.len(), 16);
        // Rows outermost, then grid keys in order, seeds innermost.
        let p = &pts[5];
        assert_eq!(p.param(LABEL), Some(&ParamValue::Str("a".into())));
        assert_eq!(
            p.param("scheduler"),
            Some(&ParamValue::Str("kvcache-centric".into()))
        );
        assert_eq!(p.rate_scale(), 1.0);
        assert_eq!(p.seed, 1);
        assert_eq!(pts[7].rate_scale(), 1.5);
        assert_eq!(
            p.config_sets()
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>(),
            [
                "slo.ttft_s=30",
                "prefill.instances=8",
                "scheduler=kvcache-centric",
                "seed=1"
            ]
        );
        let ids: std::collections::HashSet<_> = pts.iter().map(|p| p.id.clone()).collect();
        assert_eq!(ids.len(), 16, "ids are distinct");
        assert!(
            p.id.starts_with(
                "label-a_prefill.instances-8_scheduler-kvcache-centric_rate_scale-1_seed-1_"
            ),
            "{}",
            p.id
        );
        assert_eq!(
            s.varying_keys(),
            ["label", "prefill.instances", "scheduler", "rate_scale"]
        );
    }

    #[test]
    fn ids_are_stable_and_change_with_what_decides_a_result() {
        let a = spec(
            "config: base.yaml\ntraces: [t.jsonl]\ngrid: {scheduler: [random, least-loaded]}\n",
        )
        .unwrap();
        let b = spec("config: base.yaml\ntraces: [t.jsonl]\ngrid: {scheduler: [random, least-loaded, round-robin]}\n").unwrap();
        // Adding a value keeps the ids of the points already there.
        assert_eq!(a.points()[0].id, b.points()[0].id);
        assert_eq!(a.points()[1].id, b.points()[1].id);
        // 1 and 1.0 are one value: the spec would run one point twice.
        let e = spec("traces: [t.jsonl]\ngrid: {rate_scale: [1, 1.0]}\n").unwrap_err();
        assert!(
            e.contains("two points are the same run") && e.contains("grid.rate_scale[1]"),
            "{e}"
        );
        let e = spec("traces: [t.jsonl]\npoints: [{a: 1}, {a: 1}]\n").unwrap_err();
        assert!(
            e.contains("points[0].a") && e.contains("points[1].a"),
            "{e}"
        );
        // The trace's bytes are part of a point's identity.
        let dir = std::env::temp_dir().join(format!("moonlab-spec-{}", std::process::id()));
        std::fs::write(dir.join("u.jsonl"), "a").unwrap();
        let before = spec("traces: [u.jsonl]\n").unwrap().points()[0].id.clone();
        std::fs::write(dir.join("u.jsonl"), "b").unwrap();
        let after = spec("traces: [u.jsonl]\n").unwrap().points()[0].id.clone();
        assert_ne!(before, after);
        let before = spec("traces: [t.jsonl]\n").unwrap().points()[0].id.clone();
        // So is the kind.
        let cache = spec("kind: cache\ntraces: [t.jsonl]\n").unwrap().points()[0]
            .id
            .clone();
        assert_ne!(before, cache);
        // The base configuration's text is part of the identity; its path is not.
        let dir = std::env::temp_dir().join(format!("moonlab-spec-{}", std::process::id()));
        std::fs::write(dir.join("same.yaml"), "seed: 0\n").unwrap();
        std::fs::write(dir.join("other.yaml"), "block_tokens: 256\n").unwrap();
        let id_with = |config: &str| {
            spec(&format!("config: {config}\ntraces: [t.jsonl]\ngrid: {{scheduler: [random, least-loaded]}}\n"))
                .unwrap()
                .points()[0]
                .id
                .clone()
        };
        assert_eq!(id_with("same.yaml"), a.points()[0].id);
        assert_ne!(id_with("other.yaml"), a.points()[0].id);
    }

    #[test]
    fn shards_split_the_points_exactly() {
        let s = spec("traces: [t.jsonl]\ngrid: {scheduler: [a, b, c, d, e]}\nrepetitions: 3\n")
            .unwrap();
        let pts = s.points();
        let shards: Vec<Shard> = (0..4).map(|i| Shard { index: i, count: 4 }).collect();
        for p in &pts {
            assert_eq!(shards.iter().filter(|s| s.owns(p)).count(), 1);
        }
        assert_eq!(Shard::parse("2/4"), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "1", "a/2", "0/0", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_key_path_and_what_was_expected() {
        for (text, words) in [
            ("traces: [t.jsonl]\ngird: {}\n", "unknown key `gird`"),
            ("traces: [missing.jsonl]\n", "traces[0]: trace"),
            (
                "traces: [t.jsonl]\ngrid: {scheduler: random}\n",
                "grid.scheduler: expected a list",
            ),
            (
                "traces: [t.jsonl]\ngrid: {scheduler: []}\n",
                "grid.scheduler: expected at least one",
            ),
            (
                "traces: [t.jsonl]\ngrid: {scheduler: [[a]]}\n",
                "grid.scheduler[0]: expected a single value",
            ),
            (
                "traces: [t.jsonl]\ngrid: {rate_scale: [1, 0]}\n",
                "grid.rate_scale[1]: rate_scale 0",
            ),
            (
                "traces: [t.jsonl]\npoints: [{label: 3}]\n",
                "points[0].label: label 3",
            ),
            (
                "traces: [t.jsonl]\npoints: [{}]\n",
                "points[0]: expected a non-empty mapping",
            ),
            (
                "traces: [t.jsonl]\nseeds: [1, 1]\n",
                "seeds[1]: seed 1 appears twice",
            ),
            ("traces: [t.jsonl]\nrepetitions: 0\n", "repetitions: 0"),
            ("traces: [t.jsonl]\nconfig: nope.yaml\n", "config: "),
            (
                "traces: [t.jsonl]\nname: ../x\n",
                "name: \"../x\" is not a folder name",
            ),
            ("traces: [t.jsonl, t.jsonl]\n", "traces[1]: label \"t\""),
            (
                "traces: [{path: t.jsonl, first: 0}]\n",
                "traces[0].first: 0",
            ),
            ("grid: {a: [1]}\n", "traces: missing"),
            ("traces: [t.jsonl]\ngrid: {a: [1]\n", "study.yaml:"),
            (
                "kind: cache\ntraces: [t.jsonl]\ngrid: {scheduler: [a]}\n",
                "grid.scheduler[0]: `scheduler` is not a parameter of a cache spec",
            ),
            ("kind: replay\ntraces: [t.jsonl]\n", "kind: \"replay\""),
        ] {
            match spec(text) {
                Ok(_) => panic!("accepted {text:?}"),
                Err(e) => assert!(e.contains(words), "{text:?}: {e}"),
            }
        }
        // 10^5 points is the limit.
        let e = spec("traces: [t.jsonl]\ngrid:\n  a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  c: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  d: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n  e: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\nrepetitions: 2\n").unwrap_err();
        assert!(e.contains("expands to 200000 points"), "{e}");
    }
}
