//! The `moonlab` command line: parse, validate, call the library crates,
//! print. No logic of its own lives here beyond formatting.

mod cache_cmd;
mod output;
mod plot;
mod trace_cmd;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(cmd) => trace_cmd::run(cmd),
        Command::Cache(args) => cache_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
