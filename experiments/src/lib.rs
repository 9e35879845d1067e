//! moonlab-experiments: studies as data, and what runs write for analysis
//! and for papers. Polars lives here and only here, so the rest of the
//! workspace builds without it; so do plotters and the embedded font.
//!
//! - [`spec`]: experiment specs (`experiments/*.yaml`) and their expansion
//!   into points with stable ids; shards.
//! - [`report`]: a folder of specs' report: figures, tables, the paper's
//!   values beside ours.
//! - [`results`]: a sweep's combined table (one row per point), Parquet and
//!   CSV.
//! - [`aggregate`]: summaries across seeds (mean, 95 % interval) as
//!   Markdown, CSV or LaTeX.
//! - [`search`]: capacity planning: the cheapest deployment meeting
//!   requirements, or a deployment's saturation rate, by pruned searches.
//! - [`tables`]: the simulator's per-request table as Parquet.
//! - [`figures`]: paper-style figures (line, CDF, grouped and stacked bar,
//!   step charts) from plain data, as PNG and SVG.

pub mod aggregate;
pub mod figures;
pub mod report;
pub mod results;
pub mod search;
pub mod spec;
pub mod tables;
