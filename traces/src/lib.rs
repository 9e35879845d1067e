//! moonlab-traces: request traces in, statistics and new traces out.
//!
//! - [`mooncake`]: the Mooncake JSONL format (reader with validation, writer).
//! - [`csv`]: the Azure LLM inference trace and BurstGPT CSV formats. They
//!   carry no prefix hashes: they feed arrival and length statistics and the
//!   synthesizer, never prefix-cache replay.
//! - [`source`]: opening any supported file by format, streaming.
//! - [`stats`]: streaming trace statistics (`moonlab trace stats`).
//! - [`reuse`]: block reuse distances (LRU stack distance and reuse time).
//! - [`synth`]: a Moonshot-style trace generator fitted to a source trace.
//! - [`transform`]: slicing and rate scaling.
//!
//! Every reader streams: memory follows what the analysis keeps, not the file.

pub mod csv;
pub mod error;
mod lines;
pub mod mooncake;
pub mod reuse;
pub mod source;
pub mod stats;
pub mod synth;
pub mod transform;

pub use error::TraceError;
pub use source::{open_trace, read_all, ReadOptions, TraceFormat};

/// Tokens per block in Moonshot's released traces.
pub const DEFAULT_BLOCK_TOKENS: u32 = 512;
/// Longest prompt a trace may carry before it is called absurd (tokens).
pub const MAX_INPUT_TOKENS: u64 = 10_000_000;
/// Latest arrival a trace may carry, in milliseconds of its own clock:
/// 1e13 ms is about 317 years, so epoch-millisecond timestamps fit (until
/// the year 2286) and a simulation still has centuries of nanoseconds
/// (`u64`, about 584 years in all) left to run after the last arrival.
pub const MAX_ARRIVAL_MS: u64 = 10_000_000_000_000;
/// [`MAX_ARRIVAL_MS`] as a simulation time.
pub const MAX_ARRIVAL: moonlab_core::Nanos = moonlab_core::Nanos(MAX_ARRIVAL_MS * 1_000_000);
/// Longest generation a trace may carry before it is called absurd (tokens).
pub const MAX_OUTPUT_TOKENS: u64 = 1_000_000;
