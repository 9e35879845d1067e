//! The discrete-event cluster simulator: a trace replayed through X prefill
//! and Y decode instances with a KVCache pool in the prefill nodes' DRAM
//! (and SSD tiers), scheduled by a `Scheduler` from moonlab-core. One file
//! per part of the model:
//!
//! - [`config`]: the YAML configuration, defaults and validation;
//! - [`engine`]: the event queue, ordered by (time, sequence);
//! - [`flows`]: the max-min fair flow network;
//! - [`request`]: a request's phase and the handles it holds;
//! - [`node_store`]: the pool model on core's segments;
//! - [`arrival`]: scheduling, carrying out placements, prefix fetches;
//! - [`prefill`] and [`decode`]: the two kinds of instance;
//! - [`vllm`]: the paper's vLLM baselines, one engine per colocated node;
//! - [`view`]: the scheduler's `ClusterView`;
//! - [`roles`]: elastic P/D, nodes switching pools;
//! - [`sampler`]: time series and Figure 11's replica counts;
//! - [`world`]: the state, and event dispatch;
//! - [`invariants`]: the end-of-run checks;
//! - [`run`]: one run, start to end.

mod arrival;
pub mod config;
mod decode;
mod engine;
pub mod flows;
mod invariants;
mod node_store;
mod prefill;
mod request;
mod roles;
pub mod run;
pub mod sampler;
mod view;
mod vllm;
mod world;

pub use config::{
    parse_profile, ClusterConfig, ColocatedConfig, ColocatedPolicy, ConfigError, Deployment,
    PoolCost, QueuePolicy, RealConfig, Resolved, WorkloadConfig,
};
pub use moonlab_core::metrics::{RequestRecord, Summary};
pub use run::{simulate, summarize, SimOutput};
pub use sampler::{ReplicaSeries, Sample, REPLICA_RANKS};
