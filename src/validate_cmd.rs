//! `moonlab validate`: one scaled trace through the simulator and through
//! the real backend (`moonlab real replay`) with the same configuration and
//! policies, and the fidelity table between them (core's `fidelity`):
//! per-request error of TTFT and each of its parts, hit-rate and placement
//! agreement, throughput, and KV bytes per link. With `--out`, both run
//! folders and the table are kept.

use crate::output::RunFolder;
use crate::replay_cmd::{read_trace, render_replay, replay_config, run_replay, ConfigArgs};
use crate::sim_cmd::{render_run, TableFormat};
use crate::trace_cmd::InputArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use moonlab_core::cost::CostModel;
use moonlab_core::fidelity::{compare, render_markdown};
use moonlab_sim::cluster::simulate;
use std::path::PathBuf;

#[derive(Args)]
pub struct ValidateArgs {
    #[arg(long)]
    trace: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
    /// A running replay cluster's folder (the testbed's, or `moonlab real
    /// cluster`'s); without it a single-machine cluster is started.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Only the first N requests of the trace.
    #[arg(long)]
    requests: Option<usize>,
    /// The target: median TTFT error at most this share.
    #[arg(long, default_value_t = 0.10)]
    target: f64,
    /// Keep both runs and the table here (`sim/`, `real/`, `fidelity.md`,
    /// `fidelity.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
    /// Exit with an error when the target is missed.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    input: InputArgs,
}

#[allow(clippy::disallowed_methods)] // the binary may read the wall clock
pub fn run(a: ValidateArgs) -> Result<()> {
    if !(a.target > 0.0 && a.target < 10.0) {
        bail!("--target: expected a share such as 0.10, got {}", a.target);
    }
    let (config, resolved) = replay_config(&a.config)?;
    let requests = read_trace(&a.trace, &a.input, &config, a.requests)?;
    let folder = match &a.out {
        Some(p) => Some(RunFolder::prepare(p, a.force)?),
        None => None,
    };
    let started = std::time::Instant::now();
    let sim = simulate(&requests, resolved.clone(), false, |_| {});
    let sim_wall = started.elapsed().as_secs_f64();
    let sim_files = render_run(&sim, &config, sim_wall, TableFormat::Csv, false)?;
    let scratch = tempfile::tempdir().context("a scratch folder for the cluster")?;
    let started = std::time::Instant::now();
    let real = run_replay(
        &requests,
        &a.config,
        &config,
        &resolved,
        a.cluster.as_deref(),
        scratch.path(),
        |_| {},
    )?;
    let real_wall = started.elapsed().as_secs_f64();
    let real_files = render_replay(&real, &config, real_wall, TableFormat::Csv)?;
    let fidelity = compare(
        &sim.records,
        &real.records,
        resolved.prefill_cost.kv_bytes_per_token(),
        config.prefill.instances,
        a.target,
    );
    let mut table = render_markdown(&fidelity);
    table.push_str(&format!(
        "\nBytes checked on the real side: {} wrong of {} read and moved; {} requests failed; {} prefix blocks not cached for want of room, {} evicted between lookup and read.\n",
        real.checks.wrong_bytes,
        real.checks.fetch_bytes + real.checks.kv_bytes + real.checks.read_bytes,
        real.failures.len(),
        real.checks.dropped_blocks,
        real.checks.lost_blocks
    ));
    if let Some(folder) = folder {
        for (name, bytes) in &sim_files.files {
            folder.write_in("sim", name, bytes)?;
        }
        for (name, bytes) in &real_files.files {
            folder.write_in("real", name, bytes)?;
        }
        folder.write("fidelity.md", table.as_bytes())?;
        folder.write(
            "fidelity.json",
            (serde_json::to_string_pretty(&fidelity)? + "\n").as_bytes(),
        )?;
        folder.commit()?;
    }
    crate::output::emit(&table)?;
    if real.checks.wrong_bytes > 0 {
        bail!(
            "{} bytes read on the real side were not what was written",
            real.checks.wrong_bytes
        );
    }
    if a.strict && !fidelity.meets_target() {
        bail!("the fidelity target was missed (--strict)");
    }
    Ok(())
}
