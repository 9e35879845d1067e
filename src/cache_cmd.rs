//! `moonlab cache`: the policy × capacity cross product of prefix-cache
//! replays, in parallel across cores, as a table, JSONL or CSV, and a plot.

use crate::output::write_files_atomic;
use crate::plot;
use crate::trace_cmd::InputArgs;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use moonlab_core::eviction::PolicyKind;
use moonlab_core::Capacity;
use moonlab_sim::replay::{replay, replay_grid, PreparedTrace, ReplayConfig, ReplayResult};
use moonlab_traces::read_all;
use std::path::{Path, PathBuf};

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
pub enum CacheFormat {
    Table,
    Jsonl,
    Csv,
}

#[derive(Args)]
pub struct CacheArgs {
    /// Trace file(s) with block hashes (Mooncake JSONL); repeat for several.
    #[arg(long = "trace", required = true)]
    traces: Vec<PathBuf>,
    /// Eviction policies, comma-separated, or `all`
    /// (lru, fifo, lfu, sieve, s3fifo, arc, gdsf, prefix, belady).
    #[arg(long, default_value = "all")]
    policy: String,
    /// Capacities, comma-separated: blocks (`5859`, `20k`), tokens (`3Mtok`) or `inf`.
    #[arg(long, default_value = "1000,5859,20000,inf")]
    capacity: String,
    /// Split each capacity into N local caches (requests routed to the
    /// longest match, ties to the least loaded) and report them next to one
    /// pooled cache of the same total size.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    nodes: u32,
    /// With --nodes: only nodes whose load (prefill tokens computed so far)
    /// is within (1 + SLACK) × the least load compete on match length.
    /// Without it, the longest match alone decides.
    #[arg(long, value_name = "SLACK")]
    balance_slack: Option<f64>,
    #[arg(long, value_enum, default_value_t = CacheFormat::Table)]
    format: CacheFormat,
    /// Write the results here (atomically) instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Draw hit rate against capacity, one line per policy (.png or .svg).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Worker threads, 1 to 256 (default: all cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: Option<u16>,
    /// Run the replays one after another and print each one's wall time and
    /// block accesses per second to standard error (for benchmarks).
    #[arg(long)]
    timing: bool,
    #[command(flatten)]
    input: InputArgs,
}

pub fn run(a: CacheArgs) -> Result<()> {
    let policies = PolicyKind::parse_list(&a.policy).context("--policy")?;
    let capacities = Capacity::parse_list(&a.capacity).context("--capacity")?;
    if let Some(p) = &a.plot {
        plot::check_extension(p)?;
    }
    if let Some(n) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build_global()
            .context("--threads")?;
    }
    if let Some(slack) = a.balance_slack {
        if !(slack.is_finite() && slack >= 0.0) {
            bail!("--balance-slack {slack}: expected a non-negative number");
        }
        if a.nodes == 1 {
            bail!("--balance-slack needs --nodes N with N > 1");
        }
    }
    let opts = a.input.read_options();
    let labels = trace_labels(&a.traces);
    let mut traces = Vec::new();
    for (path, name) in a.traces.iter().zip(labels) {
        let (format, requests) = read_all(path, &opts)?;
        if !format.has_prefix_hashes() {
            bail!(
                "{}: this {} trace carries no block hashes; cache replay needs a Mooncake trace with hash_ids",
                path.display(),
                format.name()
            );
        }
        traces.push(PreparedTrace::new(name, requests, opts.block_tokens));
    }
    let mut configs = Vec::new();
    let node_modes: Vec<u32> = if a.nodes > 1 {
        vec![1, a.nodes]
    } else {
        vec![1]
    };
    for &nodes in &node_modes {
        for &policy in &policies {
            for &cap in &capacities {
                configs.push(ReplayConfig {
                    policy,
                    capacity_blocks: cap.blocks(opts.block_tokens),
                    nodes,
                    balance_slack: a.balance_slack,
                });
            }
        }
    }
    let results = if a.timing {
        timed_sequential(&traces, &configs)
    } else {
        replay_grid(&traces, &configs)
    };
    let rendered = match a.format {
        CacheFormat::Table => render_table(
            &results,
            &policies,
            &capacities,
            &node_modes,
            opts.block_tokens,
        ),
        CacheFormat::Jsonl => render_jsonl(&results)?,
        CacheFormat::Csv => render_csv(&results),
    };
    // The outputs are one unit: the plot is drawn before anything is
    // written, and the files take their places together.
    let plot = match &a.plot {
        Some(path) => Some((
            path,
            plot::hit_rate_vs_capacity(&results, opts.block_tokens, path)?,
        )),
        None => None,
    };
    let mut files: Vec<(&Path, &[u8])> = Vec::new();
    if let Some(path) = &a.out {
        files.push((path, rendered.as_bytes()));
    }
    if let Some((path, bytes)) = &plot {
        files.push((path, bytes));
    }
    write_files_atomic(&files)?;
    if a.out.is_none() {
        crate::output::emit(&rendered)?;
    }
    Ok(())
}

/// One label per trace, told apart: the file's stem (`conversation_trace`),
/// with as many parent folders as it takes to differ from the others
/// (`a/trace`, `b/trace`), and `#2`, `#3`... for a file given again.
fn trace_labels(paths: &[PathBuf]) -> Vec<String> {
    let parts: Vec<Vec<String>> = paths
        .iter()
        .map(|p| {
            let p = moonlab_traces::source::display_name(p);
            let mut parts: Vec<String> = p
                .parent()
                .into_iter()
                .flat_map(|d| d.components())
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .filter(|c| c != "/" && c != ".")
                .collect();
            parts.push(p.file_stem().map_or_else(
                || p.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            ));
            parts
        })
        .collect();
    let label = |i: usize, depth: usize| parts[i][parts[i].len() - depth..].join("/");
    let mut depth = vec![1usize; paths.len()];
    loop {
        let labels: Vec<String> = (0..paths.len()).map(|i| label(i, depth[i])).collect();
        let mut grew = false;
        for i in 0..paths.len() {
            let clashes = labels.iter().filter(|l| **l == labels[i]).count() > 1;
            if clashes && depth[i] < parts[i].len() {
                depth[i] += 1;
                grew = true;
            }
        }
        if !grew {
            // What still clashes is the same path given again.
            let mut seen: std::collections::HashMap<String, usize> = Default::default();
            return labels
                .into_iter()
                .map(|l| {
                    let n = seen.entry(l.clone()).or_insert(0);
                    *n += 1;
                    if *n == 1 {
                        l
                    } else {
                        format!("{l} #{n}")
                    }
                })
                .collect();
        }
    }
}

/// Replays one at a time, reporting each one's wall time on stderr.
#[allow(clippy::disallowed_methods)] // the binary may read the wall clock
fn timed_sequential(traces: &[PreparedTrace], configs: &[ReplayConfig]) -> Vec<ReplayResult> {
    let mut out = Vec::with_capacity(traces.len() * configs.len());
    for t in traces {
        for &c in configs {
            let start = std::time::Instant::now();
            let r = replay(t, c);
            let seconds = start.elapsed().as_secs_f64();
            eprintln!(
                "timing trace={} policy={} capacity={} nodes={} accesses={} seconds={seconds:.6}",
                r.trace,
                r.policy,
                cap_label(r.capacity_blocks),
                r.nodes,
                r.blocks
            );
            out.push(r);
        }
    }
    out
}

fn cap_label(c: Option<u64>) -> String {
    c.map_or_else(|| "inf".to_string(), |b| b.to_string())
}

fn render_table(
    results: &[ReplayResult],
    policies: &[PolicyKind],
    capacities: &[Capacity],
    node_modes: &[u32],
    block_tokens: u32,
) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let per_trace = policies.len() * capacities.len() * node_modes.len();
    for chunk in results.chunks(per_trace) {
        let first = &chunk[0];
        let _ = writeln!(
            s,
            "{}: {} requests, {} input tokens, {} blocks of {block_tokens} tokens",
            first.trace, first.requests, first.input_tokens, first.blocks
        );
        for mode in chunk.chunks(policies.len() * capacities.len()) {
            let m = &mode[0];
            let title = if m.nodes == 1 {
                "one pooled cache".to_string()
            } else {
                match m.balance_slack {
                    Some(slack) => format!(
                        "{} local caches, capacity split evenly, balance slack {slack}",
                        m.nodes
                    ),
                    None => format!(
                        "{} local caches, capacity split evenly, longest match routing",
                        m.nodes
                    ),
                }
            };
            let _ = writeln!(
                s,
                "hit rate (% of input tokens), {title}; capacity in blocks"
            );
            let _ = write!(s, "  {:<8}", "policy");
            for r in &mode[..capacities.len()] {
                let _ = write!(s, " {:>9}", cap_label(r.capacity_blocks));
            }
            s.push('\n');
            for row in mode.chunks(capacities.len()) {
                let _ = write!(s, "  {:<8}", row[0].policy);
                for r in row {
                    let _ = write!(s, " {:>9.2}", 100.0 * r.hit_rate);
                }
                s.push('\n');
            }
        }
        s.push('\n');
    }
    s
}

fn render_jsonl(results: &[ReplayResult]) -> Result<String> {
    let mut s = String::new();
    for r in results {
        s.push_str(&serde_json::to_string(r)?);
        s.push('\n');
    }
    Ok(s)
}

fn render_csv(results: &[ReplayResult]) -> String {
    let mut s = String::from(
        "trace,policy,capacity_blocks,nodes,balance_slack,cache,requests,input_tokens,hit_tokens,hit_rate,blocks,hit_blocks,block_hit_rate,evictions\n",
    );
    for r in results {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            csv_field(&r.trace),
            r.policy,
            r.capacity_blocks.map_or(String::new(), |c| c.to_string()),
            r.nodes,
            r.balance_slack.map_or(String::new(), |c| c.to_string()),
            r.cache,
            r.requests,
            r.input_tokens,
            r.hit_tokens,
            r.hit_rate,
            r.blocks,
            r.hit_blocks,
            r.block_hit_rate,
            r.evictions
        ));
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::trace_labels;
    use std::path::PathBuf;

    fn labels(paths: &[&str]) -> Vec<String> {
        trace_labels(&paths.iter().map(PathBuf::from).collect::<Vec<_>>())
    }

    #[test]
    fn traces_with_the_same_file_name_get_different_labels() {
        assert_eq!(labels(&["a/conv.jsonl", "b/x.jsonl"]), ["conv", "x"]);
        assert_eq!(
            labels(&["runs/a/trace.jsonl", "runs/b/trace.jsonl", "c.jsonl"]),
            ["a/trace", "b/trace", "c"]
        );
        assert_eq!(
            labels(&["/x/a/t.jsonl", "/y/a/t.jsonl"]),
            ["x/a/t", "y/a/t"]
        );
        assert_eq!(labels(&["t.jsonl", "t.jsonl"]), ["t", "t #2"]);
        assert_eq!(labels(&["t.jsonl", "d/t.jsonl"]), ["t", "d/t"]);
        assert_eq!(labels(&["-"]), ["<stdin>"]);
    }
}
