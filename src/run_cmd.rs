//! `moonlab run` (a spec's points, in parallel, each an atomic run folder
//! under `results/<spec>/<point-id>/`, then the combined table), `moonlab
//! merge` (shards' points gathered, the table written as one run would)
//! and `moonlab table` (a table's summary across seeds).

use crate::output::{write_files_atomic, RunFolder};
use crate::sim_cmd::{render_run, TableFormat};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use moonlab_core::Request;
use moonlab_experiments::aggregate::{summarize, Format};
use moonlab_experiments::results::{combined_table, from_parquet, to_csv, to_parquet, PointResult};
use moonlab_experiments::spec::{Point, Shard, Spec};
use moonlab_sim::cluster::{simulate, ClusterConfig, Resolved};
use moonlab_traces::transform::Slice;
use moonlab_traces::{read_all, ReadOptions};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Args)]
pub struct RunArgs {
    /// Experiment spec (YAML): base config, traces, grid and/or points, seeds.
    spec: PathBuf,
    /// Results folder [default: results/<spec name>].
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

/// A point ready to run: its configuration loaded and resolved.
struct Prepared {
    point: Point,
    config: ClusterConfig,
    resolved: Resolved,
    trace: TraceKey,
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

/// Loads and resolves a point's configuration; an override's error names
/// the spec key it came from.
fn prepare(spec: &Spec, point: Point) -> Result<Prepared> {
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
        config,
        resolved,
        trace,
    })
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
    let start = std::time::Instant::now();
    let out = simulate(requests, p.resolved, false, |_| {});
    let wall_s = start.elapsed().as_secs_f64();
    let run = render_run(&out, &p.config, wall_s, format, false)?;
    folder.write("point.json", point_json(spec, &p.point).as_bytes())?;
    for (name, bytes) in &run.files {
        folder.write(name, bytes)?;
    }
    folder.commit()
}

#[allow(clippy::disallowed_methods)] // the binary may read the wall clock
pub fn run(a: RunArgs) -> Result<()> {
    let spec = Spec::load(&a.spec)?;
    let dir = results_dir(&spec, a.results.as_deref());
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
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the worker threads")?;
    let start = std::time::Instant::now();
    pool.install(|| {
        todo.into_par_iter().for_each(|p| {
            let index = p.point.index;
            let what = describe(&p.point);
            let requests = traces[&p.trace].clone();
            if let Err(e) = run_one(&spec, p, &requests, &dir, a.table_format) {
                if let Ok(mut f) = failures.lock() {
                    f.push((index, format!("{what}: {e:#}")));
                    bar.set_message(format!("{} failed", f.len()));
                }
            }
            bar.inc(1);
        })
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
        eprintln!("ran {} points in {wall:.1} s", owned - skipped);
    }
    match a.shard {
        Some(s) => {
            if !a.quiet {
                eprintln!(
                    "shard {}/{} done; when every shard is, `moonlab merge {}` writes the table",
                    s.index,
                    s.count,
                    a.spec.display()
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
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("--results {}: cannot create the folder", dir.display()))?;
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
    let file = if a.table.is_dir() {
        a.table.join("table.parquet")
    } else {
        a.table.clone()
    };
    let bytes = std::fs::read(&file).with_context(|| format!("{}: cannot read", file.display()))?;
    let df =
        from_parquet(bytes).with_context(|| format!("{}: not a Parquet table", file.display()))?;
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
