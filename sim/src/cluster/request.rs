//! One request's life in the simulated cluster: an explicit [`Phase`], and
//! the handles of everything it holds (pins in the pool, a fetch in flight,
//! its decode KV reservation), each released through the handle that took
//! it. Following one request through the simulator means following its
//! phase: `Queued` (or `Fetching`, then `Queued`) → `Prefilling` →
//! `AwaitingKv` (the rest of its cache on the way to the decode node) →
//! `Loading` (the cache into the decode node's HBM) → `Decoding` → `Done`;
//! or `Rejected` at arrival.

use moonlab_core::metrics::LongestIntervals;
use moonlab_core::placement::{FetchPlan, Hold, KvReservation};
use moonlab_core::Nanos;

/// Where a request is in its workflow (the paper's §3.1).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Not yet arrived.
    #[default]
    Pending,
    /// In its prefill instance's queue, a remote prefix on its way there.
    Fetching,
    /// In its prefill instance's queue, ready to run.
    Queued,
    /// Prefill running: compute, the prefix's load into HBM and any SSD
    /// read (`prefill_parts` of them still running).
    Prefilling,
    /// Prefill done; the KV stream to the decode instance is still running.
    AwaitingKv,
    /// The cache is on the decode node, loading from its DRAM into HBM.
    Loading,
    /// In its decode instance's waiting queue or running batch.
    Decoding,
    /// Served: the last token is out.
    Done,
    /// Turned away at arrival.
    Rejected,
}

/// What the simulator tracks of one request.
#[derive(Default)]
pub struct RequestState {
    pub phase: Phase,
    /// Index of its prefill instance in the prefill pool.
    pub prefill: u32,
    /// Index of its decode instance in the decode pool.
    pub decode: u32,
    /// The prefix fetch in flight (source pins included).
    pub fetch: Option<FetchPlan>,
    pub fetch_started: Nanos,
    /// Fetched replicas pinned on the prefill node until prefill ends.
    pub fetched: Hold,
    /// The prefix read at prefill start, pinned where it is (DRAM or SSD);
    /// with vLLM prefix caching, the prompt's blocks in the node's HBM
    /// cache, pinned from admission until the request finishes.
    pub prefix: Hold,
    /// Parts of the prefill still running (compute, HBM load, SSD read).
    pub prefill_parts: u8,
    /// On a pipelined group: what must end before the group takes its next
    /// request (its first stage's share, HBM load, SSD read).
    pub node_parts: u8,
    /// The KV stream to the decode instance has arrived (or was not needed).
    pub kv_arrived: bool,
    /// The decode instance's KV memory reserved for this request.
    pub kv: Option<KvReservation>,
    pub queued_at: Nanos,
    pub prefill_started: Nanos,
    pub prefill_ended: Nanos,
    pub load_started: Nanos,
    /// When the user saw the first token.
    pub first_token: Nanos,
    /// The estimated prefill time the queue counts for it.
    pub estimate: Nanos,
    /// Tokens emitted so far (the first comes from prefill).
    pub tokens: u32,
    /// vLLM baselines: prompt tokens whose KV exists (the cached prefix,
    /// then each chunk computed).
    pub prefilled: u64,
    pub last_token: Nanos,
    pub intervals: LongestIntervals,
    /// How many times the request ended (served or rejected): exactly once
    /// by the end of a run.
    pub ends: u8,
}

impl RequestState {
    /// True while the request waits in a prefill queue for its fetch.
    pub fn fetching(&self) -> bool {
        self.phase == Phase::Fetching
    }
}
