//! `moonlab sim` (a trace through the simulated cluster, written to a run
//! folder) and `moonlab config show` (the default configuration).

use crate::output::RunFolder;
use crate::trace_cmd::InputArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use moonlab_core::metrics::requests_csv;
use moonlab_sim::cluster::{simulate, summarize, ClusterConfig, SimOutput, Summary};
use moonlab_traces::read_all;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct SimArgs {
    /// Trace with block hashes (Mooncake JSONL; `-`: standard input).
    #[arg(long)]
    trace: PathBuf,
    /// Cluster configuration (YAML); `moonlab config show` prints the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override a configuration key, e.g. `--set scheduler=random` or
    /// `--set prefill.instances=12` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Run folder: requests.parquet (or .csv), timeseries.csv, replicas.csv,
    /// summary.json, config.yaml (and explain.jsonl).
    #[arg(long)]
    out: PathBuf,
    /// Per-request table format: parquet (requests.parquet) or csv
    /// (requests.csv).
    #[arg(long, value_enum, default_value_t = TableFormat::Parquet)]
    table_format: TableFormat,
    /// Write each request's candidate estimates and why the winner won.
    #[arg(long)]
    explain: bool,
    /// Replace a non-empty run folder at --out (it is refused otherwise).
    #[arg(long)]
    force: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Copy, Clone, PartialEq, Eq, clap::ValueEnum)]
pub enum TableFormat {
    Parquet,
    Csv,
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the default cluster configuration as YAML.
    Show,
}

pub fn config(cmd: ConfigCommand) -> Result<()> {
    match cmd {
        ConfigCommand::Show => crate::output::emit(&ClusterConfig::default().to_yaml()),
    }
}

#[allow(clippy::disallowed_methods)] // the binary may read the wall clock
pub fn run(a: SimArgs) -> Result<()> {
    // --block-tokens is the configuration's block_tokens (the trace's
    // hash_ids and the cluster's blocks are one size).
    let mut sets = a.sets.clone();
    if let Some(bt) = a.input.block_tokens {
        let clash = sets.iter().find(|s| {
            s.split_once('=')
                .is_some_and(|(k, v)| k.trim() == "block_tokens" && v.trim() != bt.to_string())
        });
        if let Some(clash) = clash {
            bail!("--block-tokens {bt} and --set {clash} disagree (expected one block size)");
        }
        sets.insert(0, format!("block_tokens={bt}"));
    }
    let (config, resolved) = load_config(a.config.as_deref(), &sets)?;
    let mut opts = a.input.read_options();
    opts.block_tokens = config.block_tokens;
    let (format, requests) = read_all(&a.trace, &opts)?;
    if !format.has_prefix_hashes() {
        bail!(
            "{}: this {} trace carries no block hashes; the simulator needs a Mooncake trace",
            a.trace.display(),
            format.name()
        );
    }
    // The run folder is checked (and its temporary twin created) before
    // the simulation: an unusable --out costs nothing.
    let folder = RunFolder::prepare(&a.out, a.force)?;
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(requests.len() as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} requests {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let start = std::time::Instant::now();
    let out = simulate(&requests, resolved, a.explain, |done| {
        bar.set_position(done)
    });
    let wall_s = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let run = render_run(&out, &config, wall_s, a.table_format, a.explain)?;
    for (name, bytes) in &run.files {
        folder.write(name, bytes)?;
    }
    // The run takes its place whole, or not at all.
    folder.commit()?;
    print_summary(&a.out, &run.summary)
}

/// Reads a configuration file (or the defaults) with `--set` overrides and
/// resolves it, reading cost-profile files.
pub fn load_config(
    path: Option<&Path>,
    sets: &[String],
) -> Result<(ClusterConfig, moonlab_sim::cluster::Resolved)> {
    let config = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            ClusterConfig::load_file(&text, p, sets)?
        }
        None => ClusterConfig::load("", "(defaults)", sets)?,
    };
    let resolved = config.resolve_with(&|path: &str| {
        std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
    })?;
    Ok((config, resolved))
}

/// A finished run, rendered: the run folder's files (summary.json last)
/// and its summary.
/// The per-request table of a run folder, named for its format.
pub fn requests_table(
    records: &[moonlab_core::metrics::RequestRecord],
    format: TableFormat,
) -> Result<(&'static str, Vec<u8>)> {
    Ok(match format {
        TableFormat::Parquet => (
            "requests.parquet",
            moonlab_experiments::tables::requests_parquet(records)?,
        ),
        TableFormat::Csv => ("requests.csv", requests_csv(records).into_bytes()),
    })
}

pub struct RunFiles {
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub summary: Summary,
}

/// Checks a simulation's end-of-run invariants and renders its run folder;
/// a run that broke an invariant or hit a limit is an error, and nothing
/// of it is written.
pub fn render_run(
    out: &SimOutput,
    config: &ClusterConfig,
    wall_s: f64,
    table_format: TableFormat,
    explain: bool,
) -> Result<RunFiles> {
    if !out.violations.is_empty() {
        let unfinished = out
            .records
            .iter()
            .filter(|r| r.outcome() == "unfinished")
            .count();
        bail!(
            "the run broke {} end-of-run invariants, with {unfinished} of {} requests unfinished (a simulator bug; nothing was written):\n  {}",
            out.violations.len(),
            out.records.len(),
            out.violations.join("\n  ")
        );
    }
    if let Some(why) = &out.limit_reached {
        bail!("{why} (nothing was written)");
    }
    let mut summary = summarize(out, config.scheduler.name.name(), config.slo);
    summary.wall_s = wall_s;
    let (table_name, table) = requests_table(&out.records, table_format)?;
    let mut files = vec![
        (table_name, table),
        (
            "timeseries.csv",
            render_timeseries(out, out.prefill_instances as u32).into_bytes(),
        ),
        ("replicas.csv", render_replicas(out).into_bytes()),
        ("config.yaml", config.to_yaml().into_bytes()),
    ];
    if explain {
        let mut s = String::new();
        for (id, cands, why) in &out.explain {
            let line = serde_json::json!({"request": id, "decision": why, "candidates": cands});
            let _ = writeln!(s, "{line}");
        }
        files.push(("explain.jsonl", s.into_bytes()));
    }
    if config.roles.policy != moonlab_core::roles::RoleKind::Static {
        let mut s = String::from("time_s,node,role\n");
        for (t, node, role) in &out.role_changes {
            let name = match role {
                moonlab_core::roles::Role::Prefill => "prefill",
                moonlab_core::roles::Role::Decode => "decode",
            };
            let _ = writeln!(s, "{},{node},{name}", t.as_secs_f64());
        }
        files.push(("roles.csv", s.into_bytes()));
    }
    files.push((
        "summary.json",
        (serde_json::to_string_pretty(&summary)? + "\n").into_bytes(),
    ));
    Ok(RunFiles { files, summary })
}

fn print_summary(dir: &Path, s: &moonlab_sim::cluster::Summary) -> Result<()> {
    let text = format!(
        "scheduler {}: {} requests, {} served, {} rejected, {} unfinished\n  TTFT mean {:.2} s, p90 {:.2} s   TBT mean {:.3} s, p90 {:.3} s\n  hit rate {:.1} %   effective request capacity {:.1} % (TTFT <= {} s, TBT <= {} s)\n  {} events in {:.2} s wall; run folder {}\n",
        s.scheduler,
        s.requests,
        s.served,
        s.rejected,
        s.unfinished,
        s.ttft_mean_s,
        s.ttft_p90_s,
        s.tbt_mean_s,
        s.tbt_p90_s,
        100.0 * s.hit_rate,
        100.0 * s.effective_request_capacity,
        s.slo_ttft_s,
        s.slo_tbt_s,
        s.events,
        s.wall_s,
        dir.display()
    );
    crate::output::emit(&text)
}

/// One row per sample and instance: utilisation of the interval that ends
/// at the sample, queue or batch at the sample, cache occupancy.
fn render_timeseries(out: &SimOutput, prefill_instances: u32) -> String {
    let mut s = String::from("time_s,instance,role,utilization,queued,batch,cache_blocks\n");
    for (i, sample) in out.samples.iter().enumerate() {
        let t = sample.time.as_secs_f64();
        for (inst, util) in out.utilization.iter().enumerate() {
            let u = util.get(i).copied().unwrap_or(0.0);
            if inst < prefill_instances as usize {
                let _ = writeln!(
                    s,
                    "{t},{inst},prefill,{u},{},,{}",
                    sample.prefill_queue[inst], sample.prefill_cache_blocks[inst]
                );
            } else {
                let d = inst - prefill_instances as usize;
                let _ = writeln!(
                    s,
                    "{t},{inst},decode,{u},{},{},",
                    sample.decode_waiting[d], sample.decode_batch[d]
                );
            }
        }
    }
    s
}

/// Replica counts over time of the keys ranked 10th, 100th, 1000th and
/// 10000th by use (the paper's Figure 11).
fn render_replicas(out: &SimOutput) -> String {
    let mut s = String::from("time_s,rank,key,replicas\n");
    for series in &out.replicas {
        for (sample, n) in out.samples.iter().zip(&series.replicas) {
            let _ = writeln!(
                s,
                "{},{},{},{n}",
                sample.time.as_secs_f64(),
                series.rank,
                series.key.0
            );
        }
    }
    s
}
