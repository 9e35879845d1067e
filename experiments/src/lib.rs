//! moonlab-experiments: the tables that runs write for analysis. Polars
//! lives here and only here, so the rest of the workspace builds without it.
//!
//! - [`tables`]: the simulator's per-request table as Parquet.

pub mod tables;
