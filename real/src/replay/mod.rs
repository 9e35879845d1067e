//! A trace replayed on the real store. The Conductor ([`conductor`]) is
//! core's `Scheduler` on a `ClusterView` built from the master's metadata
//! and the workers' reports; prefill and decode workers ([`worker`]) are
//! processes that stand in for GPUs by waiting the cost model's time, but
//! really produce, store, fetch, transfer and verify the KV bytes (the
//! model's bytes per token scaled by a factor, so that a trace fits one
//! machine). The control protocol is `proto/moonlab/replay/v1/worker.proto`.
//!
//! Objects of a run are named under the run's tag ([`Keys`]): prefix block
//! `h` cached by prefill instance `q` is `<run>/b<q>/<h>`, in `q`'s own
//! DRAM segment; request `r`'s KV on its decode node is `<run>/kv/<r>`.
//! Every object's bytes are a pattern of what it holds ([`pattern`]: a
//! block's hash, a request's id), so a reader checks not only the store's
//! checksum but that it got the object it asked for.

pub mod conductor;
pub mod pattern;
pub mod worker;

use moonlab_core::cost::CostModel;
use std::sync::Arc;

/// The replay protocol's generated code.
pub mod pb {
    tonic::include_proto!("moonlab.replay.v1");
}

/// This build's replay protocol version.
pub const VERSION: u32 = pb::Version::Version1 as u32;

/// The two kinds of worker.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WorkerRole {
    Prefill,
    Decode,
}

impl WorkerRole {
    pub fn name(self) -> &'static str {
        match self {
            WorkerRole::Prefill => "prefill",
            WorkerRole::Decode => "decode",
        }
    }
    pub fn parse(s: &str) -> Option<WorkerRole> {
        match s {
            "prefill" => Some(WorkerRole::Prefill),
            "decode" => Some(WorkerRole::Decode),
            _ => None,
        }
    }
    /// The DRAM segment's name of worker `index` in this pool.
    pub fn segment(self, index: u32) -> String {
        format!("{}-{index}", self.name())
    }
}

/// What a worker models: its pool's cost model and links, and how many real
/// bytes stand for one token of KV.
#[derive(Clone)]
pub struct WorkerModel {
    pub role: WorkerRole,
    pub index: u32,
    pub cost: Arc<dyn CostModel>,
    pub block_tokens: u32,
    /// Prefill chunk size in tokens (0: the whole prompt at once).
    pub chunk_tokens: u32,
    /// Real bytes stored and moved per KV token (the model's, scaled).
    pub bytes_per_token: u64,
    /// The node's host-to-device link, in the model's bytes per second
    /// (a prefix's or a request's cache loading into HBM is waited for at
    /// this rate, in the model's bytes).
    pub h2d_bytes_per_s: f64,
    /// Decode: the most requests in a batch, and the KV tokens HBM holds.
    pub max_batch: u32,
    pub kv_tokens: u64,
}

impl WorkerModel {
    /// The model's time to load `tokens` of KV over the host-to-device link.
    pub fn load_ns(&self, tokens: u64) -> u64 {
        let bytes = tokens as f64 * self.cost.kv_bytes_per_token() as f64;
        (bytes / self.h2d_bytes_per_s * 1e9).ceil() as u64
    }
}

/// Object names of one run.
#[derive(Clone, Debug)]
pub struct Keys {
    pub run: String,
}

impl Keys {
    /// Prefix block `hash` as cached by prefill instance `instance`.
    pub fn block(&self, instance: u32, hash: u64) -> String {
        format!("{}/b{instance}/{hash:016x}", self.run)
    }
    /// What every copy of prefix block `hash` holds (the pattern's name: a
    /// block's bytes are the same on every instance, as a real KV block's
    /// are).
    pub fn block_content(&self, hash: u64) -> String {
        format!("{}/block/{hash:016x}", self.run)
    }
    /// Request `request`'s KV on its decode node.
    pub fn kv(&self, request: u32) -> String {
        format!("{}/kv/{request}", self.run)
    }
}
