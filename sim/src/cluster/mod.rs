//! The discrete-event cluster simulator: a trace replayed through X prefill
//! and Y decode instances with a KVCache pool in the prefill nodes' DRAM,
//! scheduled by a `Scheduler` from moonlab-core.
//!
//! - [`config`]: the YAML configuration, defaults and validation;
//! - [`flows`]: the max-min fair flow network;
//! - [`world`]: instances, requests and the event loop;
//! - [`metrics`]: the run's aggregates.

pub mod config;
pub mod flows;
pub mod metrics;
pub mod world;

pub use config::{
    parse_profile, ClusterConfig, ConfigError, Deployment, PoolCost, QueuePolicy, Resolved,
    WorkloadConfig,
};
pub use metrics::{rank_keys, replica_series, summarize, ReplicaSeries, Summary};
pub use world::{simulate, RequestRecord, Sample, SimOutput, REPLICA_RANKS};
