//! `moonlab run` (a spec's points, in parallel, each an atomic run folder
//! under `results/<spec>/<point-id>/`, then the combined table), `moonlab
//! merge` (shards' points gathered, the table written as one run would)
//! and `moonlab table` (a table's summary across seeds).

use crate::output::{write_files_atomic, RunFolder};
use crate::sim_cmd::{render_run, TableFormat};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use moonlab_core::capacity::Capacity;
use moonlab_core::eviction::PolicyKind;
use moonlab_core::Request;
use moonlab_experiments::aggregate::{summarize, Format};
use moonlab_experiments::results::{combined_table, to_csv, to_parquet, PointResult};
use moonlab_experiments::spec::{Point, Shard, Spec, SpecKind};
use moonlab_sim::cluster::{simulate, ClusterConfig, Resolved};
use moonlab_sim::replay::{replay, PreparedTrace, ReplayConfig};
use moonlab_traces::transform::Slice;
use moonlab_traces::{read_all, ReadOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Args)]
pub struct RunArgs {
    /// Experiment spec (YAML): base config, traces, grid and/or points,
    /// seeds; or a folder of specs (each run in name order).
    spec: PathBuf,
    /// Results folder [default: results/<spec name>]; for a folder of
    /// specs, the folder holding each spec's results [default: results].
    #[arg(long)]
    results: Option<PathBuf>,
    /// Run only points whose index mod N is I (0 <= I < N), e.g. a Slurm
    /// array task's or a Kubernetes Job's completion index; `moonlab merge`
    /// writes the table once every shard is done.
    #[arg(long, value_name = "I/N", value_parser = Shard::parse)]
    shard: Option<Shard>,
    /// Rerun finished points (each replaced whole) instead of skipping them.
    #[arg(long)]
    force: bool,
    /// Points run at once [default: the machine's cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Per-request table format of each point's run folder.
    #[arg(long, value_enum, default_value_t = TableFormat::Parquet)]
    table_format: TableFormat,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub struct MergeArgs {
    /// The experiment spec the shards ran.
    spec: PathBuf,
    /// Results folder to complete and write the table into [default:
    /// results/<spec name>].
    #[arg(long)]
    results: Option<PathBuf>,
    /// Other results folders holding shards' points (copied in).
    #[arg(long = "from", value_name = "DIR")]
    from: Vec<PathBuf>,
}

#[derive(Args)]
pub struct TableArgs {
    /// A results folder (its table.parquet) or a table file (.parquet).
    table: PathBuf,
    /// Group rows by these columns (comma-separated) [default: trace and
    /// every parameter, i.e. across seeds].
    #[arg(long, value_delimiter = ',')]
    by: Option<Vec<String>>,
    /// Metrics to show (comma-separated) [default: TTFT and TBT mean and
    /// p90, hit rate, effective request capacity].
    #[arg(long, value_delimiter = ',')]
    metrics: Option<Vec<String>>,
    #[arg(long, value_enum, default_value_t = TableStyle::Markdown)]
    format: TableStyle,
    /// Write to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum TableStyle {
    Markdown,
    Csv,
    Latex,
}

/// A point ready to run: its configuration loaded and checked.
#[derive(Clone)]
struct Prepared {
    point: Point,
    job: Job,
    trace: TraceKey,
}

/// What a point runs, by the spec's kind.
#[derive(Clone)]
enum Job {
    Sim {
        config: Box<ClusterConfig>,
        resolved: Box<Resolved>,
    },
    Cache(ReplayConfig),
    Stats,
}

/// A trace as a point reads it: which file, at which block size, retimed
/// by which rate scale.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct TraceKey {
    trace: usize,
    block_tokens: u32,
    rate_scale_bits: u64,
}

fn results_dir(spec: &Spec, results: Option<&Path>) -> PathBuf {
    results
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new("results").join(&spec.name))
}

/// Where a point's settings came from, for errors.
fn describe(point: &Point) -> String {
    let origins: Vec<String> = point
        .params
        .iter()
        .map(|p| format!("{}={}", p.key, p.value))
        .collect();
    let mut s = format!("point {}", point.id);
    if !origins.is_empty() {
        s.push_str(&format!(" ({}, seed {})", origins.join(", "), point.seed));
    }
    s
}

/// Loads and checks a point's configuration; an override's error names
/// the spec key it came from.
fn prepare(spec: &Spec, point: Point) -> Result<Prepared> {
    match spec.kind {
        SpecKind::Sim => prepare_sim(spec, point),
        SpecKind::Cache | SpecKind::TraceStats => prepare_replay(spec, point),
    }
}

fn prepare_sim(spec: &Spec, point: Point) -> Result<Prepared> {
    let sets = point.config_sets();
    let assignments: Vec<String> = sets.iter().map(|(s, _)| s.clone()).collect();
    let loaded = match &spec.config {
        Some((path, text)) => ClusterConfig::load_file(text, path, &assignments),
        None => ClusterConfig::load("", "(defaults)", &assignments),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            // "--set k=v: key: ..." names a flag; the spec's user wrote a
            // key of the spec, and its value is in the rest of the message.
            let from_flag = sets.iter().find_map(|(s, o)| {
                message
                    .strip_prefix(&format!("--set {s}: "))
                    .map(|rest| (o.clone(), rest.to_string()))
            });
            // A value out of range is named by its key alone.
            let from_key = || {
                sets.iter().rev().find_map(|(s, o)| {
                    let key = s.split_once('=').map_or(s.as_str(), |(k, _)| k);
                    message
                        .contains(&format!("{key}: "))
                        .then(|| (o.clone(), message.clone()))
                })
            };
            return Err(match from_flag.or_else(from_key) {
                Some((o, rest)) => anyhow!("{}: {o}: {rest}", spec.path.display()),
                None => anyhow!("{}: {}: {message}", spec.path.display(), describe(&point)),
            });
        }
    };
    let resolved = config
        .resolve_with(&|path: &str| {
            std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
        })
        .map_err(|e| anyhow!("{}: {}: {e}", spec.path.display(), describe(&point)))?;
    let trace = TraceKey {
        trace: point.trace,
        block_tokens: config.block_tokens,
        rate_scale_bits: point.rate_scale().to_bits(),
    };
    Ok(Prepared {
        point,
        job: Job::Sim {
            config: Box::new(config),
            resolved: Box::new(resolved),
        },
        trace,
    })
}

/// A cache-replay or trace-statistics point: its parameters checked one
/// by one, each error naming where in the spec it was written.
fn prepare_replay(spec: &Spec, point: Point) -> Result<Prepared> {
    let bad =
        |origin: &str, message: String| anyhow!("{}: {origin}: {message}", spec.path.display());
    let mut cfg = ReplayConfig {
        policy: PolicyKind::Lru,
        capacity_blocks: None,
        nodes: 1,
        balance_slack: None,
    };
    let mut block_tokens = moonlab_traces::DEFAULT_BLOCK_TOKENS;
    let mut capacity: Option<(Capacity, String)> = None;
    for p in &point.params {
        let text = p.value.to_string();
        match p.key.as_str() {
            "policy" => {
                cfg.policy = PolicyKind::parse(&text).map_err(|e| bad(&p.origin, e.to_string()))?
            }
            "capacity" => {
                capacity = Some((
                    Capacity::parse(&text).map_err(|e| bad(&p.origin, e.to_string()))?,
                    p.origin.clone(),
                ))
            }
            "nodes" => {
                cfg.nodes = match p.value.as_f64() {
                    Some(n) if n.fract() == 0.0 && (1.0..=4096.0).contains(&n) => n as u32,
                    _ => return Err(bad(&p.origin, format!("nodes {text} (expected 1 to 4096)"))),
                }
            }
            "balance_slack" => {
                cfg.balance_slack = match p.value.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 => Some(x),
                    _ => {
                        return Err(bad(
                            &p.origin,
                            format!("balance_slack {text} (expected a number >= 0)"),
                        ))
                    }
                }
            }
            "block_tokens" => {
                block_tokens = match p.value.as_f64() {
                    Some(n) if n.fract() == 0.0 && (1.0..=1_048_576.0).contains(&n) => n as u32,
                    _ => {
                        return Err(bad(
                            &p.origin,
                            format!("block_tokens {text} (expected 1 to 1048576)"),
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    if let Some((c, _)) = capacity {
        cfg.capacity_blocks = c.blocks(block_tokens);
    }
    if cfg.policy.needs_future() && cfg.nodes > 1 {
        // (The replayer supports it; kept for symmetry with `moonlab cache`.)
    }
    let trace = TraceKey {
        trace: point.trace,
        block_tokens,
        rate_scale_bits: point.rate_scale().to_bits(),
    };
    let job = match spec.kind {
        SpecKind::Cache => Job::Cache(cfg),
        _ => Job::Stats,
    };
    Ok(Prepared { point, job, trace })
}

/// Nested statistics as one level of columns (`input_tokens.mean` becomes
/// `input_tokens_mean`); lists are left out.
fn flatten(
    prefix: &str,
    v: &serde_json::Value,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}_{k}")
                };
                flatten(&key, x, out);
            }
        }
        serde_json::Value::Array(_) => {}
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Reads each trace once per block size and rate scale the points need.
fn load_traces(spec: &Spec, keys: &[TraceKey]) -> Result<HashMap<TraceKey, Arc<Vec<Request>>>> {
    let mut out = HashMap::new();
    let mut raw: HashMap<(usize, u32), Arc<Vec<Request>>> = HashMap::new();
    for key in keys {
        if out.contains_key(key) {
            continue;
        }
        let t = &spec.traces[key.trace];
        let base = match raw.get(&(key.trace, key.block_tokens)) {
            Some(r) => r.clone(),
            None => {
                let opts = ReadOptions {
                    block_tokens: key.block_tokens,
                    ..ReadOptions::default()
                };
                let (format, requests) = read_all(&t.path, &opts)?;
                if !format.has_prefix_hashes() {
                    bail!(
                        "{}: this {} trace carries no block hashes; the simulator needs a Mooncake trace",
                        t.path.display(),
                        format.name()
                    );
                }
                let r = Arc::new(requests);
                raw.insert((key.trace, key.block_tokens), r.clone());
                r
            }
        };
        let rate_scale = f64::from_bits(key.rate_scale_bits);
        let slice = Slice {
            first: t.first,
            rate_scale: (rate_scale != 1.0).then_some(rate_scale),
            ..Slice::default()
        };
        let requests = if slice == Slice::default() {
            base
        } else {
            let mut kept = Vec::with_capacity(base.len());
            slice
                .apply::<moonlab_traces::transform::SliceError>(base.iter().cloned().map(Ok), |r| {
                    kept.push(r);
                    Ok(())
                })
                .with_context(|| format!("{}", t.path.display()))?;
            if kept.is_empty() {
                bail!("{}: no request left to run", t.path.display());
            }
            Arc::new(kept)
        };
        out.insert(*key, requests);
    }
    Ok(out)
}

fn point_json(spec: &Spec, p: &Point) -> String {
    let params: serde_json::Map<String, serde_json::Value> = p
        .params
        .iter()
        .map(|q| {
            let v = match &q.value {
                moonlab_experiments::spec::ParamValue::Int(i) => serde_json::json!(i),
                moonlab_experiments::spec::ParamValue::Float(f) => serde_json::json!(f),
                moonlab_experiments::spec::ParamValue::Bool(b) => serde_json::json!(b),
                moonlab_experiments::spec::ParamValue::Str(s) => serde_json::json!(s),
            };
            (q.key.clone(), v)
        })
        .collect();
    let t = &spec.traces[p.trace];
    let v = serde_json::json!({
        "spec": spec.name,
        "id": p.id,
        "index": p.index,
        "trace": t.label,
        "trace_path": t.written,
        "first": t.first,
        "seed": p.seed,
        "params": params,
        "sets": p.config_sets().into_iter().map(|(s, _)| s).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}

/// Whether a point's run folder is complete (folders are committed whole,
/// summary.json last).
fn finished(dir: &Path, p: &Point) -> bool {
    dir.join(&p.id).join("summary.json").is_file()
}

#[allow(clippy::disallowed_methods)] // the binary may read the wall clock
fn run_one(
    spec: &Spec,
    p: Prepared,
    requests: &[Request],
    dir: &Path,
    format: TableFormat,
) -> Result<()> {
    let target = dir.join(&p.point.id);
    // A folder without summary.json is no finished run: replaced.
    let folder = RunFolder::prepare_named(&target, true, &target.display().to_string())?;
    folder.write("point.json", point_json(spec, &p.point).as_bytes())?;
    let files: Vec<(&str, Vec<u8>)> = match p.job {
        Job::Sim { config, resolved } => {
            let start = std::time::Instant::now();
            let out = simulate(requests, *resolved, false, |_| {});
            let wall_s = start.elapsed().as_secs_f64();
            render_run(&out, &config, wall_s, format, false)?.files
        }
        Job::Cache(cfg) => {
            let trace = PreparedTrace::new(
                spec.traces[p.point.trace].label.clone(),
                requests.to_vec(),
                p.trace.block_tokens,
            );
            let result = replay(&trace, cfg);
            vec![(
                "summary.json",
                (serde_json::to_string_pretty(&result)? + "\n").into_bytes(),
            )]
        }
        Job::Stats => {
            let stats = moonlab_traces::stats::compute(requests, p.trace.block_tokens);
            let mut flat = serde_json::Map::new();
            flatten("", &serde_json::to_value(&stats)?, &mut flat);
            vec![(
                "summary.json",
                (serde_json::to_string_pretty(&flat)? + "\n").into_bytes(),
            )]
        }
    };
    for (name, bytes) in &files {
        folder.write(name, bytes)?;
    }
    folder.commit()
}

/// `moonlab run SPEC` or `moonlab run FOLDER` (every spec in it, in name
/// order; each spec's results in `<results>/<spec name>`).
pub fn run(a: RunArgs) -> Result<()> {
    if a.spec.is_dir() {
        let specs = moonlab_experiments::report::specs_in(&a.spec).map_err(|e| anyhow!(e))?;
        // Every spec is checked before any runs.
        let loaded: Vec<Spec> = specs
            .iter()
            .map(|p| Spec::load(p))
            .collect::<Result<_, _>>()?;
        unique_names(&loaded)?;
        let root = a
            .results
            .clone()
            .unwrap_or_else(|| PathBuf::from("results"));
        for spec in loaded {
            let dir = root.join(&spec.name);
            run_spec(&a, spec, dir)?;
        }
        return Ok(());
    }
    let spec = Spec::load(&a.spec)?;
    let dir = results_dir(&spec, a.results.as_deref());
    run_spec(&a, spec, dir)
}

#[allow(clippy::disallowed_methods)] // the binary may read the wall clock
fn run_spec(a: &RunArgs, spec: Spec, dir: PathBuf) -> Result<()> {
    let all = spec.points();
    let mine: Vec<Point> = all
        .iter()
        .filter(|p| a.shard.is_none_or(|s| s.owns(p)))
        .cloned()
        .collect();
    // Every configuration is checked before anything runs.
    let prepared: Vec<Prepared> = mine
        .into_iter()
        .map(|p| prepare(&spec, p))
        .collect::<Result<_>>()?;
    let owned = prepared.len();
    let done = prepared.iter().filter(|p| finished(&dir, &p.point)).count();
    let todo: Vec<Prepared> = prepared
        .into_iter()
        .filter(|p| a.force || !finished(&dir, &p.point))
        .collect();
    let skipped = owned - todo.len();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("--results {}: cannot create the folder", dir.display()))?;
    let stale = crate::output::remove_stale_temporaries(&dir);
    if stale > 0 && !a.quiet {
        eprintln!("removed {stale} unfinished point folders left by a killed run");
    }
    let keys: Vec<TraceKey> = todo.iter().map(|p| p.trace).collect();
    let traces = load_traces(&spec, &keys)?;
    let threads = a.threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let shard_note = a
        .shard
        .map(|s| format!(" (shard {}/{})", s.index, s.count))
        .unwrap_or_default();
    if !a.quiet {
        eprintln!(
            "{}: {} points{shard_note}, {} finished, {} to run on {threads} threads -> {}",
            spec.name,
            owned,
            done,
            todo.len(),
            dir.display()
        );
    }
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(todo.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} points {elapsed} (ETA {eta}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let failures: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());
    // Time spent inside points (simulating, rendering and writing each
    // run folder), against the whole run's wall time: what the runner
    // itself costs (reading traces, checking configurations, scheduling
    // points, the table) is the difference.
    let point_nanos = AtomicU64::new(0);
    let start = std::time::Instant::now();
    for_each_parallel(todo, threads, |p| {
        let index = p.point.index;
        let what = describe(&p.point);
        let requests = traces[&p.trace].clone();
        let began = std::time::Instant::now();
        let result = run_one(&spec, p, &requests, &dir, a.table_format);
        point_nanos.fetch_add(began.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let Err(e) = result {
            if let Ok(mut f) = failures.lock() {
                f.push((index, format!("{what}: {e:#}")));
                bar.set_message(format!("{} failed", f.len()));
            }
        }
        bar.inc(1);
    });
    bar.finish_and_clear();
    let wall = start.elapsed().as_secs_f64();
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort();
    if !failures.is_empty() {
        let shown: Vec<&str> = failures.iter().take(10).map(|(_, m)| m.as_str()).collect();
        bail!(
            "{} of {} points failed (the others are saved; a rerun runs only what is missing):\n  {}",
            failures.len(),
            owned - skipped,
            shown.join("\n  ")
        );
    }
    if !a.quiet {
        let inside = point_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        eprintln!(
            "ran {} points in {wall:.2} s on {threads} threads; the points' own runs took {inside:.2} s in all",
            owned - skipped
        );
    }
    match a.shard {
        Some(s) => {
            if !a.quiet {
                eprintln!(
                    "shard {}/{} done; when every shard is, `moonlab merge {}` writes the table",
                    s.index,
                    s.count,
                    spec.path.display()
                );
            }
            Ok(())
        }
        None => write_table(&spec, &all, &dir),
    }
}

/// Reads every point's summary and writes table.parquet and table.csv as
/// one unit.
fn write_table(spec: &Spec, points: &[Point], dir: &Path) -> Result<()> {
    let mut results = Vec::with_capacity(points.len());
    let mut missing = Vec::new();
    for p in points {
        let path = dir.join(&p.id).join("summary.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let summary: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("{}: not a run summary", path.display()))?;
                results.push(PointResult {
                    point: p.clone(),
                    summary,
                });
            }
            Err(_) => missing.push(p.id.clone()),
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
        bail!(
            "{}: {} of {} points have no finished run (e.g. {}); run the missing shards, or `moonlab run {}` to run them here",
            dir.display(),
            missing.len(),
            points.len(),
            shown.join(", "),
            spec.path.display()
        );
    }
    let df = combined_table(spec, &results)?;
    let parquet = to_parquet(&df)?;
    let csv = to_csv(&df)?;
    let pq_path = dir.join("table.parquet");
    let csv_path = dir.join("table.csv");
    write_files_atomic(&[(&pq_path, &parquet), (&csv_path, csv.as_bytes())])?;
    crate::output::emit(&format!(
        "{} rows -> {} and {}\n",
        df.height(),
        pq_path.display(),
        csv_path.display()
    ))
}

/// Copies a finished point folder into the results folder, whole or not
/// at all.
fn copy_point(from: &Path, to: &Path) -> Result<()> {
    let folder = RunFolder::prepare_named(to, false, &to.display().to_string())?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("{}: cannot read", from.display()))?
    {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let bytes = std::fs::read(entry.path())
                .with_context(|| format!("{}: cannot read", entry.path().display()))?;
            folder.write(&entry.file_name().to_string_lossy(), &bytes)?;
        }
    }
    folder.commit()
}

pub fn merge(a: MergeArgs) -> Result<()> {
    let spec = Spec::load(&a.spec)?;
    let dir = results_dir(&spec, a.results.as_deref());
    for f in &a.from {
        if !f.is_dir() {
            bail!("--from {}: not a folder", f.display());
        }
    }
    // The folder appears with the first point copied into it (a merge
    // that finds points missing leaves nothing behind).
    let points = spec.points();
    let mut copied = 0;
    for p in &points {
        if finished(&dir, p) {
            continue;
        }
        if let Some(src) = a
            .from
            .iter()
            .map(|f| f.join(&p.id))
            .find(|s| s.join("summary.json").is_file())
        {
            copy_point(&src, &dir.join(&p.id))?;
            copied += 1;
        }
    }
    if copied > 0 {
        eprintln!("copied {copied} points into {}", dir.display());
    }
    write_table(&spec, &points, &dir)
}

pub fn table(a: TableArgs) -> Result<()> {
    let (file, df) = moonlab_experiments::results::read_table(&a.table)?;
    let summary = summarize(&df, a.by.as_deref(), a.metrics.as_deref())
        .with_context(|| file.display().to_string())?;
    let format = match a.format {
        TableStyle::Markdown => Format::Markdown,
        TableStyle::Csv => Format::Csv,
        TableStyle::Latex => Format::Latex,
    };
    let text = summary.render(format);
    match &a.out {
        Some(path) => crate::output::write_bytes_atomic(path, text.as_bytes()),
        None => crate::output::emit(&text),
    }
}

#[derive(Args)]
pub struct SearchArgs {
    /// Experiment spec with a `search` section.
    spec: PathBuf,
    /// Results folder; probes are run folders under its search/ [default:
    /// results/<spec name>].
    #[arg(long)]
    results: Option<PathBuf>,
    /// Run the whole grid the search stands in for (to check its answer).
    #[arg(long)]
    exhaustive: bool,
    /// Runs of one probe (its traces × seeds) at once [default: cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

/// Runs a search's probes as run folders under `<results>/search/`,
/// reusing those already there.
struct SimOracle<'a> {
    spec: &'a Spec,
    dir: PathBuf,
    varying: Vec<String>,
    traces: HashMap<TraceKey, Arc<Vec<Request>>>,
    threads: usize,
    quiet: bool,
    ran: usize,
}

impl moonlab_experiments::search::Oracle for SimOracle<'_> {
    fn evaluate(
        &mut self,
        params: &[moonlab_experiments::spec::Param],
    ) -> std::result::Result<Vec<serde_json::Value>, String> {
        let mut points = Vec::new();
        for t in 0..self.spec.traces.len() {
            for &seed in &self.spec.seeds {
                points.push(self.spec.point_for(t, params, seed, &self.varying));
            }
        }
        let prepared: Vec<Prepared> = points
            .into_iter()
            .map(|p| prepare(self.spec, p))
            .collect::<Result<_>>()
            .map_err(|e| format!("{e:#}"))?;
        let todo: Vec<&Prepared> = prepared
            .iter()
            .filter(|p| !finished(&self.dir, &p.point))
            .collect();
        let keys: Vec<TraceKey> = todo.iter().map(|p| p.trace).collect();
        let missing: Vec<TraceKey> = keys
            .into_iter()
            .filter(|k| !self.traces.contains_key(k))
            .collect();
        let loaded = load_traces(self.spec, &missing).map_err(|e| format!("{e:#}"))?;
        self.traces.extend(loaded);
        let (spec, dir, traces) = (self.spec, &self.dir, &self.traces);
        let results: Mutex<Vec<Result<()>>> = Mutex::new(Vec::new());
        let count = todo.len();
        for_each_parallel(todo, self.threads, |p| {
            let r = run_one(
                spec,
                p.clone(),
                &traces[&p.trace],
                dir,
                TableFormat::Parquet,
            )
            .with_context(|| describe(&p.point));
            if let Ok(mut v) = results.lock() {
                v.push(r);
            }
        });
        let results = results.into_inner().unwrap_or_default();
        for r in results {
            r.map_err(|e| format!("{e:#}"))?;
        }
        self.ran += count;
        let label: Vec<String> = params
            .iter()
            .map(|p| format!("{}={}", p.key, p.value))
            .collect();
        prepared
            .iter()
            .map(|p| {
                let path = self.dir.join(&p.point.id).join("summary.json");
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let v: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
                if !self.quiet {
                    eprintln!(
                        "  probe {}: effective capacity {:.3}, TTFT p90 {:.2} s",
                        label.join(" "),
                        v["effective_request_capacity"].as_f64().unwrap_or(f64::NAN),
                        v["ttft_p90_s"].as_f64().unwrap_or(f64::NAN)
                    );
                }
                Ok(v)
            })
            .collect()
    }

    fn node(
        &self,
        params: &[moonlab_experiments::spec::Param],
        pool: &str,
    ) -> std::result::Result<String, String> {
        let point = self.spec.point_for(0, params, 0, &self.varying);
        let p = prepare(self.spec, point).map_err(|e| format!("{e:#}"))?;
        Ok(match (&p.job, pool) {
            (Job::Sim { config, .. }, "prefill") => config.prefill.node.clone(),
            (Job::Sim { config, .. }, _) => config.decode.node.clone(),
            _ => String::new(),
        })
    }
}

pub fn search(a: SearchArgs) -> Result<()> {
    use moonlab_experiments::search::{search, Goal, SearchSpec};
    let spec = Spec::load(&a.spec)?;
    let plan = SearchSpec::from_spec(&spec).map_err(|e| anyhow!(e))?;
    let dir = results_dir(&spec, a.results.as_deref());
    let mut varying: Vec<String> = plan.options.iter().map(|(k, _)| k.clone()).collect();
    match &plan.goal {
        Goal::Cheapest(counts) => varying.extend(counts.iter().map(|c| c.key.clone())),
        Goal::Saturation { .. } => varying.push(moonlab_experiments::spec::RATE_SCALE.into()),
    }
    let threads = a.threads.map(usize::from).unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let probe_dir = dir.join("search");
    std::fs::create_dir_all(&probe_dir)
        .with_context(|| format!("--results {}: cannot create the folder", dir.display()))?;
    let mut oracle = SimOracle {
        spec: &spec,
        dir: probe_dir,
        varying,
        traces: HashMap::new(),
        threads,
        quiet: a.quiet,
        ran: 0,
    };
    let outcome = search(&plan, &mut oracle, a.exhaustive).map_err(|e| anyhow!(e))?;
    let require: Vec<String> = plan
        .require
        .iter()
        .map(|r| {
            let mut parts = Vec::new();
            if let Some(m) = r.min {
                parts.push(format!("{} >= {m}", r.metric));
            }
            if let Some(m) = r.max {
                parts.push(format!("{} <= {m}", r.metric));
            }
            parts.join(", ")
        })
        .collect();
    let show = |ps: &[moonlab_experiments::spec::Param]| -> String {
        ps.iter()
            .map(|p| format!("{}={}", p.key, p.value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = String::new();
    let what = match &plan.goal {
        Goal::Cheapest(_) => "cheapest deployment",
        Goal::Saturation { .. } => "highest arrival-rate scale",
    };
    text.push_str(&format!(
        "{}: {what} meeting {} on every run ({} traces x {} seeds){}\n",
        spec.name,
        require.join(" and "),
        spec.traces.len(),
        spec.seeds.len(),
        if a.exhaustive { ", whole grid" } else { "" }
    ));
    for ans in &outcome.answers {
        let opts = if ans.options.is_empty() {
            String::from("(base)")
        } else {
            show(&ans.options)
        };
        let line = match (&plan.goal, &ans.best) {
            (_, None) if matches!(plan.goal, Goal::Cheapest(_)) => {
                "nothing in range meets the requirements".to_string()
            }
            (_, None) => format!(
                "not even rate scale {} meets the requirements",
                ans.bracket_high.unwrap_or(f64::NAN)
            ),
            (Goal::Cheapest(_), Some((ps, cost))) => format!("{} (cost {cost})", show(ps)),
            (Goal::Saturation { .. }, Some((_, rate))) => match ans.bracket_high {
                Some(h) => format!("rate scale {rate:.4} (fails at {h:.4})"),
                None => format!("rate scale {rate:.4} or more (the range's end)"),
            },
        };
        text.push_str(&format!("  {opts}: {line}\n"));
    }
    if let Some(best) = outcome.best(&plan.goal) {
        if outcome.answers.len() > 1 {
            text.push_str(&format!(
                "best: {}{}\n",
                show(&best.options),
                best.best
                    .as_ref()
                    .map(|(ps, v)| if ps.is_empty() {
                        format!(" at {v}")
                    } else {
                        format!(", {} ({v})", show(ps))
                    })
                    .unwrap_or_default()
            ));
        }
    }
    let probes = outcome.probes.len();
    text.push_str(&format!(
        "{probes} of the grid's {} points probed ({:.1} %), each on {} runs; {} runs simulated now, the rest reused from {}\n",
        outcome.grid_size,
        100.0 * probes as f64 / outcome.grid_size.max(1) as f64,
        spec.traces.len() * spec.seeds.len(),
        oracle.ran,
        oracle.dir.display()
    ));
    let json = serde_json::json!({
        "spec": spec.name,
        "exhaustive": a.exhaustive,
        "require": require,
        "grid_size": outcome.grid_size,
        "probes": outcome.probes.iter().map(|p| serde_json::json!({
            "params": show(&p.params),
            "feasible": p.feasible,
            "value": p.value,
        })).collect::<Vec<_>>(),
        "answers": outcome.answers.iter().map(|a| serde_json::json!({
            "options": show(&a.options),
            "best": a.best.as_ref().map(|(ps, v)| serde_json::json!({"params": show(ps), "value": v})),
            "fails_at": a.bracket_high,
        })).collect::<Vec<_>>(),
    });
    let name = if a.exhaustive {
        "search-exhaustive.json"
    } else {
        "search.json"
    };
    crate::output::write_bytes_atomic(
        &dir.join(name),
        (serde_json::to_string_pretty(&json)? + "\n").as_bytes(),
    )?;
    crate::output::emit(&text)
}

#[derive(Args)]
pub struct ReportArgs {
    /// A folder of specs with `report` sections (e.g. experiments/paper);
    /// the paper's values are read from its values/paper-values.yaml.
    folder: PathBuf,
    /// The folder holding each spec's results [default: results].
    #[arg(long)]
    results: Option<PathBuf>,
    /// Where the report goes: README.md and figures/ [default:
    /// reports/<folder name>].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn report(a: ReportArgs) -> Result<()> {
    use moonlab_experiments::report::{build, paper::PaperValues, specs_in};
    let specs: Vec<Spec> = specs_in(&a.folder)
        .map_err(|e| anyhow!(e))?
        .iter()
        .map(|p| Spec::load(p))
        .collect::<Result<_, _>>()?;
    unique_names(&specs)?;
    let values_path = a.folder.join("values").join("paper-values.yaml");
    let paper = if values_path.is_file() {
        PaperValues::load(&values_path).map_err(|e| anyhow!(e))?
    } else {
        PaperValues::default()
    };
    let root = a
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from("results"));
    let name = a
        .folder
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "report".into());
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| Path::new("reports").join(&name));
    let preamble = format!(
        "<!-- Generated by `moonlab report {folder}` from the results of `moonlab run {folder}`; do not edit by hand. -->\n\n",
        folder = a.folder.display()
    );
    // The folder's intro.md, if any, opens the report.
    let mut preamble = preamble;
    let intro = a.folder.join("intro.md");
    if intro.is_file() {
        let text = std::fs::read_to_string(&intro)
            .with_context(|| format!("{}: cannot read", intro.display()))?;
        preamble.push_str(text.trim_end());
        preamble.push_str("\n\n");
    }
    let report =
        build(&specs, &|s: &Spec| root.join(&s.name), &paper, &preamble).map_err(|e| anyhow!(e))?;
    std::fs::create_dir_all(out.join("figures"))
        .with_context(|| format!("--out {}: cannot create the folder", out.display()))?;
    let mut files: Vec<(PathBuf, &[u8])> =
        vec![(out.join("README.md"), report.markdown.as_bytes())];
    for (name, bytes) in &report.files {
        files.push((out.join(name), bytes));
    }
    let refs: Vec<(&Path, &[u8])> = files.iter().map(|(p, b)| (p.as_path(), *b)).collect();
    write_files_atomic(&refs)?;
    // Figures an earlier report drew (its manifest) that this one no
    // longer draws go; files moonlab did not write stay.
    let manifest = out.join("figures").join(".moonlab-report");
    let drawn: Vec<String> = report.files.iter().map(|(n, _)| n.clone()).collect();
    if let Ok(old) = std::fs::read_to_string(&manifest) {
        for name in old.lines() {
            let safe = name.starts_with("figures/") && !name.contains("..");
            if safe && !drawn.iter().any(|d| d == name) {
                let _ = std::fs::remove_file(out.join(name));
            }
        }
    }
    crate::output::write_bytes_atomic(&manifest, (drawn.join("\n") + "\n").as_bytes())?;
    crate::output::emit(&format!(
        "{} figures -> {}\n",
        report.files.len() / 2,
        out.join("README.md").display()
    ))
}

#[derive(Args)]
pub struct PlotArgs {
    /// A results folder (its table.parquet) or a table file (.parquet).
    table: PathBuf,
    /// Column on the x axis (a number).
    #[arg(long)]
    x: String,
    /// Column on the y axis (a number; the mean over seeds, with its 95 %
    /// interval).
    #[arg(long)]
    y: String,
    /// One line per value of this column.
    #[arg(long)]
    series: Option<String>,
    #[arg(long)]
    log_x: bool,
    #[arg(long)]
    log_y: bool,
    /// Figure title.
    #[arg(long)]
    title: Option<String>,
    /// Output file: .png or .svg.
    #[arg(long)]
    out: PathBuf,
}

pub fn plot(a: PlotArgs) -> Result<()> {
    use moonlab_experiments::figures::{render_as, Format as ImageFormat};
    let format = match a.out.extension().and_then(|e| e.to_str()) {
        Some("png") => ImageFormat::Png,
        Some("svg") => ImageFormat::Svg,
        _ => bail!("--out {}: expected a .png or .svg file", a.out.display()),
    };
    let (file, df) = moonlab_experiments::results::read_table(&a.table)?;
    let mut fig = moonlab_experiments::report::pair::pair_figure(
        &df,
        &a.x,
        &a.y,
        a.series.as_deref(),
        a.log_x,
        a.log_y,
    )
    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    if let Some(t) = &a.title {
        fig = fig.title(t.clone());
    }
    let image = render_as(&fig, format).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    crate::output::write_bytes_atomic(&a.out, &image)?;
    crate::output::emit(&format!("{} -> {}\n", a.y, a.out.display()))
}

/// Specs of one folder write to `<results>/<name>`: two with one name
/// would overwrite each other's points.
fn unique_names(specs: &[Spec]) -> Result<()> {
    for (i, a) in specs.iter().enumerate() {
        if let Some(b) = specs[..i].iter().find(|b| b.name == a.name) {
            bail!(
                "{} and {} are both named {:?} (their results would share a folder; give each spec its own `name`)",
                b.path.display(),
                a.path.display(),
                a.name
            );
        }
    }
    Ok(())
}

/// Runs `work` on every item, `threads` at a time, each on its own plain
/// thread taking the next item when it is done (points of unequal length
/// balance themselves). Plain threads, not a rayon pool: a library's own
/// parallel work (polars encoding a table) then waits on the thread that
/// asked for it, instead of that thread starting another point meanwhile.
fn for_each_parallel<T: Send>(items: Vec<T>, threads: usize, work: impl Fn(T) + Sync) {
    let queue: Mutex<std::collections::VecDeque<T>> = Mutex::new(items.into());
    let next = || queue.lock().ok().and_then(|mut q| q.pop_front());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while let Some(item) = next() {
                    work(item);
                }
            });
        }
    });
}
