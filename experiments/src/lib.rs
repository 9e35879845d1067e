//! moonlab-experiments: studies as data. Polars lives here and only here,
//! so the rest of the workspace builds without it.
//!
//! - [`spec`]: experiment specs (`experiments/*.yaml`) and their expansion
//!   into points with stable ids; shards.
//! - [`results`]: a sweep's combined table (one row per point), Parquet and
//!   CSV.
//! - [`aggregate`]: summaries across seeds (mean, 95 % interval) as
//!   Markdown, CSV or LaTeX.
//! - [`tables`]: the simulator's per-request table as Parquet.

pub mod aggregate;
pub mod results;
pub mod spec;
pub mod tables;
