//! `moonlab trace ...`: statistics, synthesis and slicing of trace files.

use crate::output::write_atomic;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use moonlab_core::Nanos;
use moonlab_traces::mooncake::MooncakeWriter;
use moonlab_traces::source::open_trace;
use moonlab_traces::stats::StatsBuilder;
use moonlab_traces::synth::{self, SynthSpec};
use moonlab_traces::transform::Slice;
use moonlab_traces::{read_all, ReadOptions, TraceFormat};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TraceCommand {
    /// Statistics of one or more traces.
    Stats(StatsArgs),
    /// Generate a Moonshot-style trace fitted to a source trace.
    Synth(SynthArgs),
    /// Cut a time window or the first N requests, and/or scale the rate.
    Slice(SliceArgs),
}

#[derive(Copy, Clone, ValueEnum)]
pub enum StatsFormat {
    Table,
    Json,
}

/// How to read input traces (shared by every command that reads one).
#[derive(Args, Clone)]
pub struct InputArgs {
    /// Tokens per block of the trace's hash_ids [default: 512; `sim`
    /// takes it from the configuration's `block_tokens`].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub block_tokens: Option<u32>,
    /// Sort requests by timestamp instead of rejecting an unsorted file
    /// (reads the whole file into memory).
    #[arg(long)]
    pub sort: bool,
    /// Input format; detected from the content when omitted.
    #[arg(long = "input-format", value_parser = parse_format)]
    pub input_format: Option<TraceFormat>,
}

impl InputArgs {
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            block_tokens: self
                .block_tokens
                .unwrap_or(moonlab_traces::DEFAULT_BLOCK_TOKENS),
            sort: self.sort,
            format: self.input_format,
        }
    }
}

fn parse_format(s: &str) -> Result<TraceFormat, String> {
    TraceFormat::parse(s)
        .ok_or_else(|| format!("unknown trace format `{s}` (expected mooncake, azure or burstgpt)"))
}

#[derive(Args)]
pub struct StatsArgs {
    /// Trace files (Mooncake JSONL, Azure CSV, BurstGPT CSV; `-`: standard
    /// input).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = StatsFormat::Table)]
    format: StatsFormat,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
pub struct SynthArgs {
    /// The trace to imitate (`-`: standard input).
    #[arg(long)]
    like: PathBuf,
    /// Arrival rate multiplier K (the output has K × the source's rate).
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Length of the generated trace in seconds (default: the source's span).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most requests to write: a duration and rate expected to give more
    /// are refused before anything is written.
    #[arg(long, default_value_t = synth::DEFAULT_MAX_REQUESTS, value_parser = clap::value_parser!(u64).range(1..))]
    max_requests: u64,
    /// Output file (Mooncake JSONL).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Also print the fitted model as JSON to stderr.
    #[arg(long)]
    show_model: bool,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
pub struct SliceArgs {
    /// The trace to cut (`-`: standard input).
    file: PathBuf,
    /// Keep requests arriving at or after this many seconds (trace clock).
    #[arg(long)]
    from: Option<f64>,
    /// Keep requests arriving before this many seconds (trace clock).
    #[arg(long)]
    to: Option<f64>,
    /// Keep at most the first N requests (after the window).
    #[arg(long)]
    first: Option<u64>,
    /// Divide timestamps by K (K > 1 raises the arrival rate K times).
    #[arg(long)]
    rate_scale: Option<f64>,
    /// Shift timestamps so that the first kept request arrives at 0.
    #[arg(long)]
    rebase: bool,
    /// Output file (Mooncake JSONL).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    #[command(flatten)]
    input: InputArgs,
}

pub fn run(cmd: TraceCommand) -> Result<()> {
    match cmd {
        TraceCommand::Stats(a) => stats(a),
        TraceCommand::Synth(a) => synth_cmd(a),
        TraceCommand::Slice(a) => slice(a),
    }
}

fn stats(a: StatsArgs) -> Result<()> {
    let opts = a.input.read_options();
    let mut all = Vec::new();
    for file in &a.files {
        let mut b = StatsBuilder::new(opts.block_tokens);
        let format = if opts.sort {
            let (format, reqs) = read_all(file, &opts)?;
            reqs.iter().for_each(|r| b.add(r));
            format
        } else {
            let stream = open_trace(file, &opts)?;
            for r in stream.requests {
                b.add(&r?);
            }
            stream.format
        };
        all.push((
            moonlab_traces::source::display_name(file),
            format,
            b.finish(),
        ));
    }
    match a.format {
        StatsFormat::Table => {
            let mut text = String::new();
            for (file, format, s) in &all {
                text.push_str(&format!(
                    "{} ({} format)\n{s}\n",
                    file.display(),
                    format.name()
                ));
            }
            crate::output::emit(&text)?;
        }
        StatsFormat::Json => {
            let v: Vec<serde_json::Value> = all
                .iter()
                .map(|(file, format, s)| {
                    serde_json::json!({"file": file.display().to_string(), "format": format.name(), "stats": s})
                })
                .collect();
            crate::output::emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
        }
    }
    Ok(())
}

fn synth_cmd(a: SynthArgs) -> Result<()> {
    let spec = SynthSpec {
        rate_scale: a.rate_scale,
        duration_s: a.duration,
        seed: a.seed,
        block_tokens: a.input.read_options().block_tokens,
        max_requests: a.max_requests,
    };
    spec.validate().context("trace synth")?;
    let opts = a.input.read_options();
    let model = if opts.sort {
        let (_, reqs) = read_all(&a.like, &opts)?;
        synth::fit(reqs, opts.block_tokens)
    } else {
        let stream = open_trace(&a.like, &opts)?;
        let mut err = None;
        let iter = stream
            .requests
            .map_while(|r| r.map_err(|e| err = Some(e)).ok());
        let model = synth::fit(iter, opts.block_tokens);
        if let Some(e) = err {
            return Err(e.into());
        }
        model
    }
    .with_context(|| format!("{}: cannot fit a model", a.like.display()))?;
    if a.show_model {
        eprintln!("{}", serde_json::to_string_pretty(&model)?);
    }
    let mut count = 0;
    write_atomic(&a.out, |w| {
        let mut writer = MooncakeWriter::new(w);
        count = synth::generate(&model, &spec, |r| {
            writer.write(&r).map_err(anyhow::Error::from)
        })?;
        if count == 0 {
            bail!("trace synth: the spec generates no requests (nothing was written)");
        }
        writer.finish()?;
        Ok(())
    })?;
    eprintln!("wrote {count} requests to {}", a.out.display());
    Ok(())
}

fn seconds(flag: &str, v: Option<f64>) -> Result<Option<Nanos>> {
    match v {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Nanos((s * 1e9).round() as u64))),
        Some(s) => bail!("--{flag} {s}: expected a non-negative number of seconds"),
    }
}

fn slice(a: SliceArgs) -> Result<()> {
    if let Some(k) = a.rate_scale {
        if !(k.is_finite() && k > 0.0) {
            bail!("--rate-scale {k}: expected a positive number");
        }
    }
    if let (Some(from), Some(to)) = (a.from, a.to) {
        if from >= to {
            bail!("--from {from} --to {to}: the window is empty (expected --from before --to)");
        }
    }
    if a.first == Some(0) {
        bail!("--first 0: keeps nothing (expected at least 1)");
    }
    let spec = Slice {
        from: seconds("from", a.from)?,
        to: seconds("to", a.to)?,
        first: a.first,
        rate_scale: a.rate_scale,
        rebase: a.rebase,
    };
    let opts = a.input.read_options();
    let name = moonlab_traces::source::display_name(&a.file);
    let mut kept = 0;
    write_atomic(&a.out, |w| {
        let mut writer = MooncakeWriter::new(w);
        let mut sink = |r: moonlab_core::Request| writer.write(&r).map_err(anyhow::Error::from);
        let hashed = |format: TraceFormat| {
            if format == TraceFormat::Mooncake {
                return Ok(());
            }
            Err(anyhow::anyhow!(
                "{}: slice writes the Mooncake format, which needs block hashes; this {} trace has none",
                name.display(),
                format.name()
            ))
        };
        kept = if opts.sort {
            let (format, reqs) = read_all(&a.file, &opts)?;
            hashed(format)?;
            spec.apply(reqs.into_iter().map(Ok), &mut sink)?
        } else {
            let stream = open_trace(&a.file, &opts)?;
            hashed(stream.format)?;
            spec.apply(
                stream.requests.map(|r| r.map_err(anyhow::Error::from)),
                &mut sink,
            )?
        };
        if kept == 0 {
            bail!(
                "{}: no request falls in the slice (nothing was written)",
                name.display()
            );
        }
        writer.finish()?;
        Ok(())
    })?;
    eprintln!("wrote {kept} requests to {}", a.out.display());
    Ok(())
}
