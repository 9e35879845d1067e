//! moonlab-experiments: what runs write for analysis and for papers.
//! Polars lives here and only here, so the rest of the workspace builds
//! without it; so do plotters and the embedded font.
//!
//! - [`tables`]: the simulator's per-request table as Parquet.
//! - [`figures`]: paper-style figures (line, CDF, grouped and stacked bar,
//!   step charts) from plain data, as PNG and SVG.

pub mod figures;
pub mod tables;
