//! moonlab-sim: simulators over moonlab-core's policies.
//!
//! - [`replay`]: the prefix-cache replayer — a trace's block reuse through
//!   caches under any eviction policy and capacity, pooled or split across
//!   nodes (the paper's §5.3.1 and, in cache-only form, §5.3.2).
//!
//! Everything here is a pure function of its inputs: no clock, no I/O.

pub mod cluster;
pub mod replay;
