//! The `moonlab` command line: parse, validate, call the library crates,
//! print. No logic of its own lives here beyond formatting.

mod cache_cmd;
mod delayline_cmd;
mod netcheck_cmd;
mod output;
mod plot;
mod real_cmd;
mod replay_cmd;
mod run_cmd;
mod sim_cmd;
mod trace_cmd;
mod validate_cmd;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "moonlab",
    version,
    about = "KVCache-centric disaggregated LLM serving testbed (after Mooncake, FAST'25)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Trace toolkit: statistics, synthesis, slicing.
    #[command(subcommand)]
    Trace(trace_cmd::TraceCommand),
    /// Prefix-cache replay: hit rate per eviction policy and capacity.
    Cache(cache_cmd::CacheArgs),
    /// Replay a trace through the simulated disaggregated cluster.
    Sim(sim_cmd::SimArgs),
    /// Run an experiment spec: every point (in parallel, resumable), then
    /// the combined table.
    Run(run_cmd::RunArgs),
    /// Gather a sharded sweep's points and write its table.
    Merge(run_cmd::MergeArgs),
    /// Summarize a sweep's table across seeds (Markdown, CSV, LaTeX).
    Table(run_cmd::TableArgs),
    /// Capacity planning: the cheapest deployment meeting a spec's
    /// requirements, or a deployment's saturation rate (pruned searches).
    Search(run_cmd::SearchArgs),
    /// Draw any column pair of a sweep's table (mean and 95 % interval
    /// across seeds), as PNG or SVG.
    Plot(run_cmd::PlotArgs),
    /// Regenerate a folder of specs' report: figures, tables and the
    /// paper's values beside ours.
    Report(run_cmd::ReportArgs),
    /// Cluster configuration helpers.
    #[command(subcommand)]
    Config(sim_cmd::ConfigCommand),
    /// Run the real store's master (object table, leases, eviction).
    Master(real_cmd::MasterArgs),
    /// Run a real store node (a DRAM segment served by the transfer engine).
    Store(real_cmd::StoreArgs),
    /// Start a single-machine real cluster: a master and store nodes.
    Cluster(real_cmd::ClusterArgs),
    /// Put, get, remove and list objects in a real cluster.
    Kv(real_cmd::KvArgs),
    /// A trace replayed on the real store (Conductor, prefill and decode
    /// workers), and its cluster.
    #[command(subcommand)]
    Real(replay_cmd::RealCommand),
    /// One scaled trace through the simulator and the real backend with the
    /// same configuration: the fidelity table between them.
    Validate(validate_cmd::ValidateArgs),
    /// Benchmarks of the real backend (transfer engine, store).
    #[command(subcommand)]
    Bench(real_cmd::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The real backend's processes shut down on their own signals.
    if !matches!(
        cli.command,
        Command::Master(_)
            | Command::Store(_)
            | Command::Cluster(_)
            | Command::Real(replay_cmd::RealCommand::Worker(_))
            | Command::Real(replay_cmd::RealCommand::Cluster(_))
            | Command::Real(replay_cmd::RealCommand::Delayline(_))
    ) {
        output::install_signal_cleanup();
    }
    let result = match cli.command {
        Command::Master(args) => real_cmd::master(args),
        Command::Store(args) => real_cmd::store(args),
        Command::Cluster(args) => real_cmd::cluster(args),
        Command::Kv(args) => real_cmd::kv(args),
        Command::Bench(cmd) => real_cmd::bench(cmd),
        Command::Validate(args) => validate_cmd::run(args),
        Command::Real(replay_cmd::RealCommand::Replay(args)) => replay_cmd::replay_cmd(args),
        Command::Real(replay_cmd::RealCommand::Cluster(args)) => replay_cmd::cluster(args),
        Command::Real(replay_cmd::RealCommand::Worker(args)) => replay_cmd::worker(args),
        Command::Real(replay_cmd::RealCommand::Plan(args)) => replay_cmd::plan(args),
        Command::Real(replay_cmd::RealCommand::Netcheck(args)) => netcheck_cmd::run(args),
        Command::Real(replay_cmd::RealCommand::Delayline(args)) => delayline_cmd::run(args),
        Command::Trace(cmd) => trace_cmd::run(cmd),
        Command::Cache(args) => cache_cmd::run(args),
        Command::Sim(args) => sim_cmd::run(args),
        Command::Config(cmd) => sim_cmd::config(cmd),
        Command::Run(args) => run_cmd::run(args),
        Command::Merge(args) => run_cmd::merge(args),
        Command::Table(args) => run_cmd::table(args),
        Command::Search(args) => run_cmd::search(args),
        Command::Report(args) => run_cmd::report(args),
        Command::Plot(args) => run_cmd::plot(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
