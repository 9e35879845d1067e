//! The cluster simulator's configuration: every field documented, defaults
//! from the paper (Table 1, §5.1), unknown keys rejected with their path.
//! YAML in and out (`moonlab config show` prints [`ClusterConfig::default`]).

use moonlab_core::cost::{
    chunk_times, run_pipeline, AnalyticCost, Attention, CostModel, ModelSpec, NodeSpec,
    ProfileCost, ProfileError, ProfilePoint,
};
use moonlab_core::eviction::PolicyKind;
use moonlab_core::lease::{LeaseKind, LeaseParams};
use moonlab_core::roles::{LoadDrivenParams, RoleKind};
use moonlab_core::sched::{Admission, SchedulerKind, Slo};
use moonlab_core::store::Watermarks;
use moonlab_core::Nanos;
use moonlab_traces::error::shorten;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrefillConfig {
    /// Number of instances (one instance = one node).
    pub instances: u32,
    /// Hardware preset: 8xA800 (Table 1), 8xH800, 8xH100, 8xH200.
    pub node: String,
    /// GPUs per instance (tensor parallelism), overriding the preset's 8;
    /// compute and HBM scale with it, the node's NIC and H2D links do not.
    pub gpus: Option<u32>,
    /// NIC bandwidth per node in Gbit/s, overriding the preset (the paper's
    /// bandwidth study, §5.4.2, varies it).
    pub nic_gbit_per_s: Option<f64>,
    /// Model FLOPs utilisation for the analytic cost model (not given by
    /// the paper; set it from your own measurements).
    pub mfu: f64,
    /// Order of each prefill instance's queue: fifo, or shortest-first
    /// (smallest estimated prefill time first).
    pub queue: QueuePolicy,
    /// Chunked prefill: tokens per chunk (0 = the whole prompt at once).
    /// Under Eq. 1 chunking alone does not change the time; with
    /// `pipeline_nodes` > 1 the chunks are what the pipeline overlaps.
    pub chunk_tokens: u32,
    /// Chunked pipeline parallelism (the paper's §3.3): every this many
    /// prefill nodes form one pipelined group that splits the model's
    /// layers, and a prompt's chunks pass its nodes as pipeline stages, so
    /// a long prompt's chunks are processed on all of them at once. The
    /// scheduler then sees one prefill instance per group (its DRAM, links
    /// and compute are the group's). 1 = off. Must divide
    /// `prefill.instances`.
    pub pipeline_nodes: u32,
    /// DRAM KVCache per prefill node, in blocks (5859 blocks of 512 tokens =
    /// the paper's 3M tokens per node, §5.3.2). The vLLM baselines have no
    /// DRAM pool: they ignore it, and the SSD tier.
    pub dram_cache_blocks: u64,
    /// Measured latencies instead of the analytic model: a CSV file with
    /// the header `phase,x,y,seconds` — `prefill` rows give x = new tokens,
    /// y = prefix tokens; `decode` rows give x = batch size, y = context
    /// tokens per request (null = the analytic model).
    pub cost_profile: Option<String>,
    /// SSD tier below DRAM per prefill node, in blocks (0 = none). Blocks
    /// evicted from DRAM are demoted here; a prefix found here is read back
    /// (promoted) at prefill start.
    pub ssd_cache_blocks: u64,
    /// SSD bandwidth per prefill node, GB/s, shared by reads and writes
    /// (default: one PCIe 4.0 x4 NVMe drive's ~7 GB/s sequential read, as
    /// data sheets of that class give).
    pub ssd_gb_per_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Number of instances (one instance = one node).
    pub instances: u32,
    /// Hardware preset: 8xA800 (Table 1), 8xH800, 8xH100, 8xH200.
    pub node: String,
    /// GPUs per instance (tensor parallelism), overriding the preset's 8;
    /// compute and HBM scale with it, the node's NIC and H2D links do not.
    pub gpus: Option<u32>,
    /// NIC bandwidth per node in Gbit/s, overriding the preset (the paper's
    /// bandwidth study, §5.4.2, varies it).
    pub nic_gbit_per_s: Option<f64>,
    /// Model FLOPs utilisation for the analytic cost model (not given by
    /// the paper; set it from your own measurements).
    pub mfu: f64,
    /// Measured latencies for the decode pool (same CSV format as
    /// `prefill.cost_profile`; null = the analytic model).
    pub cost_profile: Option<String>,
    /// Most requests in one continuous batch (for the vLLM baselines,
    /// vLLM's `max_num_seqs`: requests running, prefilling included).
    pub max_batch: u32,
    /// Share of the HBM left after the weights that holds KV (for the
    /// vLLM baselines the node's KV memory, which with prefix caching also
    /// holds the cache; vLLM's own `gpu_memory_utilization` defaults to
    /// 0.9 too, of all HBM).
    pub kv_memory_fraction: f64,
    /// Fixed time added to every decode iteration, milliseconds: the
    /// scheduling, sampling and launch overheads a serving engine spends per
    /// step beyond the model's FLOPs and bytes (Eq. 1 leaves them out; the
    /// paper publishes none for Mooncake). 0 = none.
    pub step_overhead_ms: f64,
    /// Simulate a batch's iterations until its membership next changes in
    /// one event (same times and token intervals as one event per
    /// iteration, far fewer events); false = one event per iteration.
    /// Colocated deployments always step one iteration at a time.
    pub fast_forward: bool,
}

/// The Mooncake Store parameters that matter to the simulator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Eviction policy of each node's DRAM segment (and SSD tier): lru,
    /// fifo, lfu, sieve, s3fifo, arc, gdsf, prefix, belady (offline: it
    /// sees the trace's future).
    pub eviction: String,
    /// Eviction starts when a segment holds more than this share of its
    /// capacity (upstream Mooncake Store: 0.90; 1.0 = exactly at capacity).
    pub high_watermark: f64,
    /// Share of the capacity one eviction frees below the high watermark
    /// (upstream: 0.05; 0 = evict back to the high watermark exactly).
    pub eviction_ratio: f64,
    /// Lease policy by name: mooncake (leases on reads, soft pins of hot
    /// blocks) or none.
    pub lease_policy: String,
    /// A read grants a lease of this many seconds (upstream default 10 s):
    /// the blocks cannot be evicted meanwhile.
    pub lease_s: f64,
    /// Length of a soft pin, seconds (upstream default 30 min).
    pub soft_pin_s: f64,
    /// Soft-pin a block once it has been read this many times (0 = never).
    pub soft_pin_after_reads: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// random, round-robin, least-loaded, local-cache-aware, kvcache-centric
    /// (the vLLM baselines have no Conductor: `colocated.routing` routes).
    pub name: SchedulerKind,
    /// Algorithm 1's kvcache_balancing_threshold (a ratio; the paper tunes
    /// it by hand and does not publish it).
    pub balancing_threshold: f64,
    /// none; slo (reject when the estimated TTFT or TBT breaks its SLO); or
    /// predictive (the TBT estimated from the decode load predicted for when
    /// the request reaches decode).
    pub admission: Admission,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Model preset: llama3-70b (Table 1), llama3-8b, deepseek-v3.
    pub model: String,
    /// Eq. 1's attention term: full (the paper's: every token against every
    /// token) or causal (the masked half skipped, as real kernels do).
    pub attention: Attention,
    /// Tokens per KV block (the traces' hash granularity: 512).
    pub block_tokens: u32,
    pub prefill: PrefillConfig,
    pub decode: DecodeConfig,
    pub store: StoreConfig,
    pub scheduler: SchedulerConfig,
    /// Thresholds for SLO attainment and effective request capacity
    /// (the paper: TTFT 30 s; TBT 100/200/300 ms).
    pub slo: Slo,
    /// Seed of every random stream of the run.
    pub seed: u64,
    /// Time series and replica sampling.
    pub metrics: MetricsConfig,
    /// disaggregated (Mooncake: separate prefill and decode nodes) or
    /// colocated (the baseline: every node prefills and decodes on the same
    /// GPUs; `colocated.policy` says how). In colocated mode
    /// `decode.instances` and `decode.node` must equal the prefill pool's.
    pub deployment: Deployment,
    /// Changes to the trace's requests.
    pub workload: WorkloadConfig,
    /// Elastic P/D: a role policy that moves nodes between the prefill and
    /// decode pools as load changes.
    pub roles: RolesConfig,
    /// How a colocated node serves (with `deployment: colocated`): the
    /// pool model as configured, or one of the paper's vLLM baselines.
    pub colocated: ColocatedConfig,
    /// The real backend's replay of this configuration (`moonlab real
    /// replay`, `moonlab validate`); the simulator ignores it.
    #[serde(skip_serializing_if = "RealConfig::is_default")]
    pub real: RealConfig,
}

/// How `moonlab real replay` scales this configuration onto one machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealConfig {
    /// Real bytes stored and moved per byte of the model's KV (0 < x <= 1):
    /// the model's 320 KiB per token of llama3-70b at 1e-4 are 32 bytes.
    /// Segments are sized by it (a prefill node's DRAM segment holds
    /// `prefill.dram_cache_blocks` blocks), and so is every transfer; a
    /// testbed's links are shaped to the NIC's rate times it.
    pub bytes_scale: f64,
    /// Seconds between the start of a replay and its first arrival (the
    /// workers' connections are made and warm by then), 0 to 60.
    pub lead_s: f64,
}

impl Default for RealConfig {
    fn default() -> Self {
        RealConfig {
            bytes_scale: 1e-4,
            lead_s: 1.0,
        }
    }
}

impl RealConfig {
    pub fn is_default(&self) -> bool {
        *self == RealConfig::default()
    }
}

/// A colocated deployment's serving engine: moonlab's own colocated mode,
/// or one of the three vLLM configurations the paper compares Mooncake
/// against (§5.2, Figures 1, 6 and 7: vLLM 0.5.1, prefix caching and
/// chunked prefill tested separately).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColocatedConfig {
    /// pool: the node's DRAM KVCache pool and `scheduler.name` as
    /// configured, one prefill at a time ahead of decode steps (moonlab's
    /// colocated Mooncake). vllm: no prefix reuse at all; a prefill
    /// iteration (the waiting prompts that fit the token budget) pauses
    /// every running decode (vLLM's default scheduler). vllm-prefix-cache:
    /// the same with automatic prefix caching, a per-node prefix cache in
    /// the HBM KV blocks running requests do not use, evicted LRU when they
    /// need the memory; no DRAM pool, no fetch between nodes. vllm-chunked:
    /// chunked prefill (Sarathi-Serve): each iteration runs every decode
    /// (one token each), then prefill chunks up to `token_budget`; no
    /// prefix reuse.
    pub policy: ColocatedPolicy,
    /// vLLM policies: the load balancer that spreads requests over the
    /// nodes — round-robin (default: the paper runs vLLM without a
    /// cache-aware router; a plain HTTP balancer's default), random,
    /// least-loaded (least queued prefill work), or local-cache-aware
    /// (longest prefix in the node's HBM cache against its queue).
    /// `scheduler.name` (Mooncake's Conductor) is not used by them;
    /// `scheduler.admission` still is.
    pub routing: SchedulerKind,
    /// vLLM policies: tokens one iteration may schedule (vLLM's
    /// `max_num_batched_tokens`), 1 to 1048576. null = vLLM 0.5.1's
    /// default: 512 with chunked prefill, else max(max_model_len, 2048) =
    /// 131072 for a 128k context (LLaMA 3.1's, which the conversation
    /// trace's longest prompt, 126,195 tokens, needs). With chunked prefill
    /// it must be at least `decode.max_batch` (vLLM's `max_num_seqs`), as
    /// vLLM requires; without, a longer prompt runs alone in its iteration.
    pub token_budget: Option<u32>,
}

impl Default for ColocatedConfig {
    fn default() -> Self {
        ColocatedConfig {
            policy: ColocatedPolicy::Pool,
            routing: SchedulerKind::RoundRobin,
            token_budget: None,
        }
    }
}

/// The serving engine of a colocated node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColocatedPolicy {
    Pool,
    Vllm,
    VllmPrefixCache,
    VllmChunked,
}

impl ColocatedPolicy {
    pub fn name(self) -> &'static str {
        match self {
            ColocatedPolicy::Pool => "pool",
            ColocatedPolicy::Vllm => "vllm",
            ColocatedPolicy::VllmPrefixCache => "vllm-prefix-cache",
            ColocatedPolicy::VllmChunked => "vllm-chunked",
        }
    }

    /// One of the vLLM engines (not moonlab's pool model).
    pub fn is_vllm(self) -> bool {
        self != ColocatedPolicy::Pool
    }

    /// vLLM 0.5.1's `max_num_batched_tokens` when none is given: 512 with
    /// chunked prefill ("the best balance between ITL and TTFT on A100",
    /// vllm/config.py), else max(max_model_len, 2048) for a 128k context.
    pub fn default_token_budget(self) -> u32 {
        match self {
            ColocatedPolicy::VllmChunked => 512,
            _ => VLLM_MAX_MODEL_LEN.max(2048),
        }
    }
}

/// The context length the vLLM baselines are served with (128k tokens:
/// LLaMA 3.1's; the conversation trace's longest prompt is 126,195).
pub const VLLM_MAX_MODEL_LEN: u32 = 131_072;

/// Elastic P/D (core's `roles` seam). With a policy other than `static`,
/// every node can serve either role (prefill and decode nodes must then be
/// the same hardware); a node asked to switch drains first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    /// static (roles never change) or load-driven.
    pub policy: RoleKind,
    /// Seconds between two decisions.
    pub interval_s: f64,
    /// The load-driven policy's thresholds (shares of the SLOs) and the
    /// nodes each pool keeps.
    pub load_driven: LoadDrivenParams,
}

impl Default for RolesConfig {
    fn default() -> Self {
        RolesConfig {
            policy: RoleKind::Static,
            interval_s: 30.0,
            load_driven: LoadDrivenParams::default(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadConfig {
    /// Replace every request's output length (the paper's §5.3.2 uses 1 to
    /// isolate prefill); null keeps the trace's.
    pub output_tokens: Option<u32>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueuePolicy {
    Fifo,
    ShortestFirst,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Deployment {
    Disaggregated,
    Colocated,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Sampling interval of the time series and of the replica counts, in
    /// seconds of simulated time (the paper's Figure 11 samples every 30 s);
    /// 0.1 to 86400.
    pub sample_interval_s: f64,
    /// Most samples a run may take (1 to 100 million), and as many role
    /// decisions: a run whose simulated time needs more (an unrealistically
    /// slow configuration, or a very fine interval) fails naming this key
    /// instead of filling memory. The time series holds one row per sample
    /// and instance.
    pub max_samples: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            sample_interval_s: 30.0,
            max_samples: 1_000_000,
        }
    }
}

impl Default for PrefillConfig {
    fn default() -> Self {
        PrefillConfig {
            instances: 8,
            node: "8xA800".into(),
            gpus: None,
            nic_gbit_per_s: None,
            mfu: 0.5,
            cost_profile: None,
            queue: QueuePolicy::Fifo,
            chunk_tokens: 8192,
            pipeline_nodes: 1,
            dram_cache_blocks: 5859,
            ssd_cache_blocks: 0,
            ssd_gb_per_s: 7.0,
        }
    }
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            instances: 8,
            node: "8xA800".into(),
            gpus: None,
            nic_gbit_per_s: None,
            mfu: 0.5,
            cost_profile: None,
            max_batch: 128,
            kv_memory_fraction: 0.9,
            step_overhead_ms: 0.0,
            fast_forward: true,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            eviction: "lru".into(),
            high_watermark: 1.0,
            eviction_ratio: 0.0,
            lease_policy: "mooncake".into(),
            lease_s: 10.0,
            soft_pin_s: 1800.0,
            soft_pin_after_reads: 0,
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            name: SchedulerKind::KvcacheCentric,
            balancing_threshold: 2.0,
            admission: Admission::None,
        }
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            model: "llama3-70b".into(),
            attention: Attention::Full,
            block_tokens: 512,
            prefill: PrefillConfig::default(),
            decode: DecodeConfig::default(),
            store: StoreConfig::default(),
            scheduler: SchedulerConfig::default(),
            slo: Slo::default(),
            seed: 0,
            metrics: MetricsConfig::default(),
            deployment: Deployment::Disaggregated,
            workload: WorkloadConfig::default(),
            roles: RolesConfig::default(),
            colocated: ColocatedConfig::default(),
            real: RealConfig::default(),
        }
    }
}

/// A configuration error, naming its source and key. Messages quote input
/// (a YAML value, a `--set` flag): both are shortened, so one huge value
/// cannot flood a terminal or a log.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{source_name}: {}", shorten(.message, MESSAGE_CHARS))]
    Parse {
        source_name: String,
        message: String,
    },
    #[error("--set {}: {}", shorten(.assignment, MESSAGE_CHARS), shorten(.message, MESSAGE_CHARS))]
    Set { assignment: String, message: String },
    #[error("{key}: {}", shorten(.message, MESSAGE_CHARS))]
    Invalid { key: String, message: String },
}

/// Longest message (or flag) an error repeats whole, in characters.
const MESSAGE_CHARS: usize = 300;

/// Most prefill or decode instances a configuration may ask for.
pub const MAX_INSTANCES: u64 = 4096;
/// Most tokens a block, a chunk or a forced output may hold (2^20).
pub const MAX_TOKENS: u64 = 1 << 20;
/// Most blocks a DRAM or SSD tier may hold (its bytes must fit in u64).
pub const MAX_BLOCKS: u64 = 1 << 32;

/// A pool's cost model: the paper's analytic model or measured latencies,
/// per node, and for a pipelined group of prefill nodes (§3.3) the group's
/// prefill latency over that.
#[derive(Clone, Debug)]
pub enum PoolCost {
    Analytic(AnalyticCost),
    Profile(ProfileCost),
    /// A prompt's chunks (`chunk_tokens` each) through `stages` nodes that
    /// split the layers, from an empty pipeline ([`run_pipeline`]); every
    /// other cost is the node's.
    Pipelined {
        node: Box<PoolCost>,
        stages: u32,
        chunk_tokens: u64,
    },
    /// A fixed overhead added to every decode iteration of `inner`.
    StepOverhead {
        inner: Box<PoolCost>,
        step: Nanos,
    },
    /// A colocated node's GPUs with measured latencies: prefill from the
    /// prefill pool's model, decode steps from the decode pool's; a mixed
    /// iteration adds the two (the trait's default).
    Colocated {
        prefill: Box<PoolCost>,
        decode: Box<PoolCost>,
    },
}

impl PoolCost {
    /// The cost model of one node of the pool.
    pub fn node(&self) -> &PoolCost {
        match self {
            PoolCost::Pipelined { node, .. } => node,
            other => other,
        }
    }

    fn inner(&self) -> Option<&PoolCost> {
        match self {
            PoolCost::Pipelined { node, .. } => Some(node),
            PoolCost::StepOverhead { inner, .. } => Some(inner),
            PoolCost::Colocated { prefill, .. } => Some(prefill),
            _ => None,
        }
    }
}

impl CostModel for PoolCost {
    fn prefill_time(&self, input_tokens: u64, cached_tokens: u64) -> Nanos {
        match self {
            PoolCost::Analytic(c) => c.prefill_time(input_tokens, cached_tokens),
            PoolCost::Profile(c) => c.prefill_time(input_tokens, cached_tokens),
            PoolCost::Pipelined {
                node,
                stages,
                chunk_tokens,
            } => {
                let chunks = chunk_times(node.as_ref(), input_tokens, cached_tokens, *chunk_tokens);
                let mut free = vec![Nanos::ZERO; *stages as usize];
                run_pipeline(&mut free, Nanos::ZERO, &chunks).end
            }
            PoolCost::StepOverhead { inner, .. } => inner.prefill_time(input_tokens, cached_tokens),
            PoolCost::Colocated { prefill, .. } => {
                prefill.prefill_time(input_tokens, cached_tokens)
            }
        }
    }
    fn decode_step_time(&self, batch_requests: u32, batch_context_tokens: u64) -> Nanos {
        match self {
            PoolCost::Analytic(c) => c.decode_step_time(batch_requests, batch_context_tokens),
            PoolCost::Profile(c) => c.decode_step_time(batch_requests, batch_context_tokens),
            PoolCost::Pipelined { node, .. } => {
                node.decode_step_time(batch_requests, batch_context_tokens)
            }
            PoolCost::StepOverhead { inner, step } => {
                let t = inner.decode_step_time(batch_requests, batch_context_tokens);
                if batch_requests == 0 {
                    t
                } else {
                    t.saturating_add(*step)
                }
            }
            PoolCost::Colocated { decode, .. } => {
                decode.decode_step_time(batch_requests, batch_context_tokens)
            }
        }
    }
    fn mixed_step_time(
        &self,
        chunks: &[(u64, u64)],
        decode_requests: u32,
        decode_context_tokens: u64,
    ) -> Nanos {
        match self {
            PoolCost::Analytic(c) => {
                c.mixed_step_time(chunks, decode_requests, decode_context_tokens)
            }
            PoolCost::Pipelined { node, .. } => {
                node.mixed_step_time(chunks, decode_requests, decode_context_tokens)
            }
            // The engine's overhead per iteration, as for a decode step.
            PoolCost::StepOverhead { inner, step } => {
                let t = inner.mixed_step_time(chunks, decode_requests, decode_context_tokens);
                if decode_requests == 0 {
                    t
                } else {
                    t.saturating_add(*step)
                }
            }
            // Measured apart: the parts add up (each from its own table).
            PoolCost::Profile(_) | PoolCost::Colocated { .. } => chunks.iter().fold(
                self.decode_step_time(decode_requests, decode_context_tokens),
                |t, &(s, e)| t.saturating_add(self.prefill_time(e, s)),
            ),
        }
    }
    fn kv_bytes_per_token(&self) -> u64 {
        match self {
            PoolCost::Analytic(c) => c.kv_bytes_per_token(),
            PoolCost::Profile(c) => c.kv_bytes_per_token(),
            other => other.inner().map_or(0, |c| c.kv_bytes_per_token()),
        }
    }
    fn recompute_seconds(&self, start: u64, end: u64) -> f64 {
        match self {
            PoolCost::Analytic(c) => c.recompute_seconds(start, end),
            PoolCost::Profile(c) => c.recompute_seconds(start, end),
            other => other
                .inner()
                .map_or(0.0, |c| c.recompute_seconds(start, end)),
        }
    }
}

/// Parses a cost-profile CSV (`phase,x,y,seconds`); errors name the source,
/// the line and what was expected.
pub fn parse_profile(
    text: &str,
    source: &str,
    kv_bytes_per_token: u64,
) -> Result<ProfileCost, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = lines.next().map(|(_, l)| l.trim().to_ascii_lowercase());
    if header.as_deref() != Some("phase,x,y,seconds") {
        return Err(format!(
            "{source}:1: expected the header `phase,x,y,seconds`"
        ));
    }
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    // The file line of each table row, to name lines in the table's errors.
    let (mut prefill_lines, mut decode_lines) = (Vec::new(), Vec::new());
    for (i, line) in lines {
        let n = i + 1;
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 4 {
            return Err(format!(
                "{source}:{n}: expected 4 fields (phase,x,y,seconds), found {}",
                f.len()
            ));
        }
        let num = |j: usize, name: &str| -> Result<f64, String> {
            f[j].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    format!(
                        "{source}:{n}: {name}: `{}` is not a non-negative number",
                        f[j]
                    )
                })
        };
        let point = ProfilePoint {
            x: num(1, "x")?,
            y: num(2, "y")?,
            seconds: num(3, "seconds")?,
        };
        match f[0] {
            "prefill" => {
                prefill.push(point);
                prefill_lines.push(n);
            }
            "decode" => {
                decode.push(point);
                decode_lines.push(n);
            }
            other => {
                return Err(format!(
                    "{source}:{n}: phase: `{other}` (expected prefill or decode)"
                ))
            }
        }
    }
    ProfileCost::new(prefill, decode, kv_bytes_per_token).map_err(|e| {
        let line_of = |table: &str, row: usize| {
            if table == "prefill" {
                prefill_lines[row - 1]
            } else {
                decode_lines[row - 1]
            }
        };
        match e {
            ProfileError::Duplicate {
                table,
                x,
                y,
                first,
                second,
            } => format!(
                "{source}:{}: {table} x = {x}, y = {y} is measured a second time (first on line {}; expected one time per point: average repeated measurements first)",
                line_of(table, second),
                line_of(table, first)
            ),
            ProfileError::Bad { table, row } => format!("{source}:{}: {e}", line_of(table, row)),
            other => format!("{source}: {other}"),
        }
    })
}

/// The config with presets resolved, ready to simulate.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub config: ClusterConfig,
    pub lease_kind: LeaseKind,
    pub lease_params: LeaseParams,
    pub watermarks: Watermarks,
    pub prefill_cost: PoolCost,
    pub decode_cost: PoolCost,
    pub prefill_node: NodeSpec,
    pub decode_node: NodeSpec,
    pub eviction: PolicyKind,
    pub decode_kv_tokens: u64,
    /// A colocated node's cost model, prefill and decode on the same GPUs:
    /// prefill with `prefill.mfu` (or its profile), decode steps with
    /// `decode.mfu` and `decode.step_overhead_ms` (or the decode profile).
    /// `None` when disaggregated.
    pub colocated_cost: Option<PoolCost>,
    /// vLLM policies: the iteration's token budget (`colocated.token_budget`
    /// or the policy's default).
    pub token_budget: u32,
}

impl ClusterConfig {
    /// The prefill instances the scheduler sees: one per pipelined group of
    /// `prefill.pipeline_nodes` nodes (one per node without pipelining).
    pub fn prefill_groups(&self) -> u32 {
        self.prefill.instances / self.prefill.pipeline_nodes.max(1)
    }

    /// Parses YAML text, applies `key=value` overrides (dotted paths; the
    /// scheduler name also as `scheduler=NAME`), and validates. Relative
    /// `cost_profile` paths are left as they are (relative to the working
    /// folder); [`ClusterConfig::load_file`] resolves a file's own against
    /// its folder.
    pub fn load(
        text: &str,
        source_name: &str,
        sets: &[String],
    ) -> Result<ClusterConfig, ConfigError> {
        Self::load_relative(text, source_name, None, sets)
    }

    /// [`ClusterConfig::load`] for the text of the file at `path`: a
    /// relative `cost_profile` written in the file names a file beside the
    /// config (as a user reading the config expects); one given with
    /// `--set` stays relative to the working folder, like any path typed
    /// on a command line.
    pub fn load_file(
        text: &str,
        path: &std::path::Path,
        sets: &[String],
    ) -> Result<ClusterConfig, ConfigError> {
        let folder = path.parent().unwrap_or(std::path::Path::new(""));
        Self::load_relative(text, &path.display().to_string(), Some(folder), sets)
    }

    fn load_relative(
        text: &str,
        source_name: &str,
        folder: Option<&std::path::Path>,
        sets: &[String],
    ) -> Result<ClusterConfig, ConfigError> {
        let parse = |message: String| ConfigError::Parse {
            source_name: source_name.into(),
            message,
        };
        let mut shape =
            serde_yaml_ng::to_value(ClusterConfig::default()).map_err(|e| parse(e.to_string()))?;
        // `real` is left out of a default config's YAML, but is a key.
        if let Some(m) = shape.as_mapping_mut() {
            let real =
                serde_yaml_ng::to_value(RealConfig::default()).map_err(|e| parse(e.to_string()))?;
            m.insert("real".into(), real);
        }
        let at_line = |e: &serde_yaml_ng::Error| ConfigError::Parse {
            source_name: match e.location() {
                Some(l) => format!("{source_name}:{}", l.line()),
                None => source_name.into(),
            },
            message: without_location(e),
        };
        let mut value: serde_yaml_ng::Value = if text.trim().is_empty() {
            serde_yaml_ng::Value::Mapping(Default::default())
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| at_line(&e))?
        };
        // The file alone first: its errors name its line and the key.
        check_keys(&value, &shape, "").map_err(parse)?;
        // (serde_yaml_ng's messages name the key path.)
        if !text.trim().is_empty() {
            serde_yaml_ng::from_str::<ClusterConfig>(text).map_err(|e| at_line(&e))?;
        }
        if let Some(folder) = folder {
            for pool in ["prefill", "decode"] {
                let slot = value.get_mut(pool).and_then(|p| p.get_mut("cost_profile"));
                if let Some(serde_yaml_ng::Value::String(p)) = slot {
                    if std::path::Path::new(p.as_str()).is_relative() {
                        *p = folder.join(p.as_str()).display().to_string();
                    }
                }
            }
        }
        // Then each --set in turn: its errors name the flag and the key.
        for s in sets {
            apply_set(&mut value, &shape, s)?;
            let set_error = |message: String| ConfigError::Set {
                assignment: s.clone(),
                message,
            };
            check_keys(&value, &shape, "").map_err(set_error)?;
            serde_yaml_ng::from_value::<ClusterConfig>(value.clone()).map_err(|e| {
                // A tree built from values loses paths: name the key set.
                let key = s.split_once('=').map_or(s.as_str(), |(k, _)| k.trim());
                set_error(format!("{key}: {}", without_location(&e)))
            })?;
        }
        let config: ClusterConfig =
            serde_yaml_ng::from_value(value).map_err(|e| parse(e.to_string()))?;
        // Validate everything but the profile files (read later, with I/O).
        let mut check = config.clone();
        check.prefill.cost_profile = None;
        check.decode.cost_profile = None;
        check.resolve()?;
        Ok(config)
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// Resolves presets and checks every value's range. Cost-profile files
    /// cannot be read here (no I/O): use [`ClusterConfig::resolve_with`].
    pub fn resolve(&self) -> Result<Resolved, ConfigError> {
        self.resolve_with(&|path: &str| Err(format!("{path}: cannot read files here")))
    }

    /// Like [`ClusterConfig::resolve`], reading cost-profile files with `read`.
    pub fn resolve_with(
        &self,
        read: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Resolved, ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        let scale = self.real.bytes_scale;
        if !(scale > 0.0 && scale <= 1.0) {
            return Err(bad(
                "real.bytes_scale",
                format!("expected a share above 0 and at most 1, got {scale}"),
            ));
        }
        if !(0.0..=60.0).contains(&self.real.lead_s) {
            return Err(bad(
                "real.lead_s",
                format!("expected 0 to 60 seconds, got {}", self.real.lead_s),
            ));
        }
        let model = ModelSpec::preset(&self.model).ok_or_else(|| {
            bad(
                "model",
                format!(
                    "unknown preset `{}` (expected one of {})",
                    self.model,
                    ModelSpec::PRESETS.join(", ")
                ),
            )
        })?;
        let node = |key: &str, name: &str| {
            NodeSpec::preset(name).ok_or_else(|| {
                bad(
                    key,
                    format!(
                        "unknown preset `{name}` (expected one of {})",
                        NodeSpec::PRESETS.join(", ")
                    ),
                )
            })
        };
        let mut pnode = node("prefill.node", &self.prefill.node)?;
        let mut dnode = node("decode.node", &self.decode.node)?;
        for (key, spec, nic) in [
            (
                "prefill.nic_gbit_per_s",
                &mut pnode,
                self.prefill.nic_gbit_per_s,
            ),
            (
                "decode.nic_gbit_per_s",
                &mut dnode,
                self.decode.nic_gbit_per_s,
            ),
        ] {
            if let Some(g) = nic {
                if !(g.is_finite() && g > 0.0) {
                    return Err(bad(
                        key,
                        format!("{} (expected a positive bandwidth in Gbit/s)", show(g)),
                    ));
                }
                spec.nic_gbit_per_s = g;
            }
        }
        // Values that size memory or loops have documented ranges.
        let counts: [(&str, u64, u64, u64); 9] = [
            (
                "prefill.instances",
                self.prefill.instances as u64,
                1,
                MAX_INSTANCES,
            ),
            (
                "decode.instances",
                self.decode.instances as u64,
                1,
                MAX_INSTANCES,
            ),
            ("decode.max_batch", self.decode.max_batch as u64, 1, 65_536),
            ("block_tokens", self.block_tokens as u64, 1, MAX_TOKENS),
            (
                "prefill.chunk_tokens",
                self.prefill.chunk_tokens as u64,
                0,
                MAX_TOKENS,
            ),
            (
                "prefill.dram_cache_blocks",
                self.prefill.dram_cache_blocks,
                0,
                MAX_BLOCKS,
            ),
            (
                "prefill.ssd_cache_blocks",
                self.prefill.ssd_cache_blocks,
                0,
                MAX_BLOCKS,
            ),
            (
                "workload.output_tokens",
                self.workload.output_tokens.map_or(1, u64::from),
                1,
                MAX_TOKENS,
            ),
            (
                "metrics.max_samples",
                self.metrics.max_samples,
                1,
                100_000_000,
            ),
        ];
        for (key, v, lo, hi) in counts {
            if v < lo || v > hi {
                return Err(bad(key, format!("{v} (expected {lo} to {hi})")));
            }
        }
        let seconds: [(&str, f64, f64, f64); 5] = [
            (
                "metrics.sample_interval_s",
                self.metrics.sample_interval_s,
                0.1,
                86_400.0,
            ),
            ("store.lease_s", self.store.lease_s, 0.0, 1e7),
            ("store.soft_pin_s", self.store.soft_pin_s, 0.0, 1e7),
            ("slo.ttft_s", self.slo.ttft_s, 1e-6, 1e6),
            ("slo.tbt_s", self.slo.tbt_s, 1e-6, 1e6),
        ];
        for (key, v, lo, hi) in seconds {
            if !(v.is_finite() && v >= lo && v <= hi) {
                return Err(bad(
                    key,
                    format!("{} (expected {lo} to {hi} seconds)", show(v)),
                ));
            }
        }
        for (key, spec, gpus) in [
            ("prefill.gpus", &mut pnode, self.prefill.gpus),
            ("decode.gpus", &mut dnode, self.decode.gpus),
        ] {
            if let Some(g) = gpus {
                if g == 0 || g > 64 {
                    return Err(bad(
                        key,
                        format!("{g} (expected 1 to 64 GPUs per instance)"),
                    ));
                }
                spec.gpus = g;
                spec.name = format!("{}x{}", g, spec.gpu.name);
            }
        }
        for (key, v) in [
            ("prefill.mfu", self.prefill.mfu),
            ("decode.mfu", self.decode.mfu),
            ("decode.kv_memory_fraction", self.decode.kv_memory_fraction),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                return Err(bad(
                    key,
                    format!("{} is out of range (expected 0 < x <= 1)", show(v)),
                ));
            }
        }
        if !(self.prefill.ssd_gb_per_s.is_finite() && self.prefill.ssd_gb_per_s > 0.0) {
            return Err(bad(
                "prefill.ssd_gb_per_s",
                format!(
                    "{} (expected a positive bandwidth in GB/s)",
                    show(self.prefill.ssd_gb_per_s)
                ),
            ));
        }
        if self.deployment == Deployment::Colocated {
            if self.decode.instances != self.prefill.instances {
                return Err(bad(
                    "decode.instances",
                    format!(
                        "{} (a colocated deployment needs as many as prefill.instances, {})",
                        self.decode.instances, self.prefill.instances
                    ),
                ));
            }
            if self.decode.node != self.prefill.node {
                return Err(bad(
                    "decode.node",
                    format!(
                        "{} (a colocated deployment runs on prefill.node, {})",
                        self.decode.node, self.prefill.node
                    ),
                ));
            }
        }
        let col = &self.colocated;
        if col.policy.is_vllm() && self.deployment != Deployment::Colocated {
            return Err(bad(
                "colocated.policy",
                format!(
                    "{} (a vLLM baseline serves colocated: set deployment: colocated)",
                    col.policy.name()
                ),
            ));
        }
        if col.routing == SchedulerKind::KvcacheCentric {
            return Err(bad(
                "colocated.routing",
                "kvcache-centric (vLLM instances share no KVCache pool: expected random, round-robin, least-loaded or local-cache-aware)".into(),
            ));
        }
        let token_budget = col
            .token_budget
            .unwrap_or(col.policy.default_token_budget());
        if token_budget == 0 || token_budget as u64 > MAX_TOKENS {
            return Err(bad(
                "colocated.token_budget",
                format!("{token_budget} (expected 1 to {MAX_TOKENS})"),
            ));
        }
        if col.policy == ColocatedPolicy::VllmChunked && token_budget < self.decode.max_batch {
            return Err(bad(
                "colocated.token_budget",
                format!(
                    "{token_budget} (chunked prefill needs at least decode.max_batch, {}, tokens per iteration: every running request decodes one)",
                    self.decode.max_batch
                ),
            ));
        }
        if !(self.scheduler.balancing_threshold.is_finite()
            && self.scheduler.balancing_threshold >= 1.0)
        {
            return Err(bad(
                "scheduler.balancing_threshold",
                format!(
                    "{} (expected a ratio >= 1)",
                    self.scheduler.balancing_threshold
                ),
            ));
        }
        let eviction = PolicyKind::parse(&self.store.eviction).map_err(|_| {
            bad(
                "store.eviction",
                format!(
                    "unknown eviction policy `{}` (expected one of: {})",
                    self.store.eviction,
                    PolicyKind::names().join(", ")
                ),
            )
        })?;
        let lease_kind = LeaseKind::parse(&self.store.lease_policy)
            .map_err(|e| bad("store.lease_policy", e.to_string()))?;
        for (key, v) in [
            ("store.high_watermark", self.store.high_watermark),
            ("store.eviction_ratio", self.store.eviction_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(
                    key,
                    format!("{} is out of range (expected 0 <= x <= 1)", show(v)),
                ));
            }
        }
        let watermarks =
            Watermarks::from_ratio(self.store.high_watermark, self.store.eviction_ratio);
        let pool_cost =
            |key: &str, node: &NodeSpec, mfu: f64, profile: &Option<String>| match profile {
                Some(path) => {
                    let text = read(path).map_err(|e| bad(key, e))?;
                    parse_profile(&text, path, model.kv_bytes_per_token)
                        .map(PoolCost::Profile)
                        .map_err(|e| bad(key, e))
                }
                None => {
                    let mut c = AnalyticCost::new(model.clone(), node.clone());
                    c.prefill_mfu = mfu;
                    c.decode_mfu = mfu;
                    c.attention = self.attention;
                    Ok(PoolCost::Analytic(c))
                }
            };
        let x = self.prefill.pipeline_nodes;
        if x == 0 || x > 64 || !self.prefill.instances.is_multiple_of(x) {
            return Err(bad(
                "prefill.pipeline_nodes",
                format!(
                    "{x} (expected 1 to 64 nodes per pipelined group, dividing prefill.instances, {})",
                    self.prefill.instances
                ),
            ));
        }
        if x > 1 && self.prefill.chunk_tokens == 0 {
            return Err(bad(
                "prefill.pipeline_nodes",
                format!("{x} (a pipeline needs chunks: set prefill.chunk_tokens)"),
            ));
        }
        if x > 1 && self.deployment == Deployment::Colocated {
            return Err(bad(
                "prefill.pipeline_nodes",
                format!("{x} (pipelined prefill groups need a disaggregated deployment)"),
            ));
        }
        if self.roles.policy != RoleKind::Static {
            let r = &self.roles;
            if self.deployment != Deployment::Disaggregated || x > 1 {
                return Err(bad(
                    "roles.policy",
                    format!(
                        "{} (elastic roles need a disaggregated deployment without pipelined groups)",
                        r.policy.name()
                    ),
                ));
            }
            if self.prefill.node != self.decode.node || self.prefill.gpus != self.decode.gpus {
                return Err(bad(
                    "roles.policy",
                    format!(
                        "{} (nodes that switch roles must be alike: prefill.node and decode.node, and their gpus, must match)",
                        r.policy.name()
                    ),
                ));
            }
            if !(r.interval_s.is_finite() && (0.1..=86_400.0).contains(&r.interval_s)) {
                return Err(bad(
                    "roles.interval_s",
                    format!("{} (expected 0.1 to 86400 seconds)", show(r.interval_s)),
                ));
            }
            let t = &r.load_driven;
            if !(t.low >= 0.0 && t.low <= t.high && t.high.is_finite()) {
                return Err(bad(
                    "roles.load_driven",
                    format!(
                        "low {} and high {} (expected 0 <= low <= high)",
                        t.low, t.high
                    ),
                ));
            }
            if t.min_prefill == 0 || t.min_decode == 0 {
                return Err(bad(
                    "roles.load_driven",
                    "min_prefill and min_decode must be at least 1".into(),
                ));
            }
        }
        let node_cost = pool_cost(
            "prefill.cost_profile",
            &pnode,
            self.prefill.mfu,
            &self.prefill.cost_profile,
        )?;
        let prefill_node_cost = node_cost.clone();
        let prefill_cost = if x > 1 {
            PoolCost::Pipelined {
                node: Box::new(node_cost),
                stages: x,
                chunk_tokens: self.prefill.chunk_tokens as u64,
            }
        } else {
            node_cost
        };
        let decode_cost = pool_cost(
            "decode.cost_profile",
            &dnode,
            self.decode.mfu,
            &self.decode.cost_profile,
        )?;
        let o = self.decode.step_overhead_ms;
        if !(o.is_finite() && (0.0..=10_000.0).contains(&o)) {
            return Err(bad(
                "decode.step_overhead_ms",
                format!("{} (expected 0 to 10000 milliseconds)", show(o)),
            ));
        }
        let decode_cost = if o > 0.0 {
            PoolCost::StepOverhead {
                inner: Box::new(decode_cost),
                step: Nanos((o * 1e6).round() as u64),
            }
        } else {
            decode_cost
        };
        // A colocated node: prefill and decode on the same GPUs.
        let colocated_cost = (self.deployment == Deployment::Colocated).then(|| {
            match (&self.prefill.cost_profile, &self.decode.cost_profile) {
                (None, None) => {
                    let mut c = AnalyticCost::new(model.clone(), pnode.clone());
                    c.prefill_mfu = self.prefill.mfu;
                    c.decode_mfu = self.decode.mfu;
                    c.attention = self.attention;
                    let c = PoolCost::Analytic(c);
                    match &decode_cost {
                        PoolCost::StepOverhead { step, .. } => PoolCost::StepOverhead {
                            inner: Box::new(c),
                            step: *step,
                        },
                        _ => c,
                    }
                }
                _ => PoolCost::Colocated {
                    prefill: Box::new(prefill_node_cost),
                    decode: Box::new(decode_cost.clone()),
                },
            }
        });
        let free = dnode.hbm_bytes() - model.weight_bytes_total();
        if free <= 0.0 {
            return Err(bad(
                "decode.node",
                format!("{} cannot hold {}'s weights", dnode.name, model.name),
            ));
        }
        let decode_kv_tokens =
            (free * self.decode.kv_memory_fraction / model.kv_bytes_per_token as f64) as u64;
        Ok(Resolved {
            config: self.clone(),
            lease_kind,
            lease_params: LeaseParams {
                lease: Nanos((self.store.lease_s * 1e9) as u64),
                soft_pin: Nanos((self.store.soft_pin_s * 1e9) as u64),
                hot_after_reads: self.store.soft_pin_after_reads,
            },
            watermarks,
            prefill_cost,
            decode_cost,
            prefill_node: pnode,
            decode_node: dnode,
            eviction,
            decode_kv_tokens,
            colocated_cost,
            token_budget,
        })
    }
}

/// A number as an error message shows it: plainly, or in scientific
/// notation when it is very large or very small (`1e-300`, not 300 zeros).
fn show(v: f64) -> String {
    if v != 0.0 && v.is_finite() && !(1e-4..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A YAML error's message without the " at line L column C" it may end with.
fn without_location(e: &serde_yaml_ng::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Rejects any key that the default configuration (which spells out every
/// field) does not have at the same path, naming its path.
fn check_keys(
    value: &serde_yaml_ng::Value,
    shape: &serde_yaml_ng::Value,
    path: &str,
) -> Result<(), String> {
    let (Some(map), Some(known)) = (value.as_mapping(), shape.as_mapping()) else {
        return Ok(());
    };
    for (k, v) in map {
        let name = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
        let full = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        match known.get(k) {
            Some(sub) => check_keys(v, sub, &full)?,
            None => {
                let expected: Vec<&str> = known.keys().filter_map(|k| k.as_str()).collect();
                return Err(format!(
                    "{full}: unknown key (expected one of {})",
                    expected.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Applies `a.b.c=value` to a YAML tree; `scheduler=NAME` is short for
/// `scheduler.name=NAME`. The value is parsed as YAML (numbers, booleans,
/// strings).
fn apply_set(
    root: &mut serde_yaml_ng::Value,
    shape: &serde_yaml_ng::Value,
    assignment: &str,
) -> Result<(), ConfigError> {
    use serde_yaml_ng::Value;
    let err = |message: &str| ConfigError::Set {
        assignment: assignment.into(),
        message: message.into(),
    };
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| err("expected key=value"))?;
    let path = path.trim();
    let path = if path == "scheduler" {
        "scheduler.name"
    } else {
        path
    };
    if path.is_empty() || path.split('.').any(str::is_empty) {
        return Err(err("expected a dotted key such as prefill.instances"));
    }
    let value: Value =
        serde_yaml_ng::from_str(raw).map_err(|_| err("the value is not valid YAML"))?;
    let default = path.split('.').try_fold(shape, |node, part| node.get(part));
    if let Some(section) = default.and_then(Value::as_mapping) {
        if !value.is_mapping() {
            let example = section
                .keys()
                .next()
                .and_then(Value::as_str)
                .map_or(String::new(), |k| format!(" such as {path}.{k}"));
            return Err(err(&format!(
                "`{path}` is a section (expected a key inside it{example}, or a YAML mapping)"
            )));
        }
    }
    let mut node = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !node.is_mapping() {
            if node.is_null() {
                *node = Value::Mapping(Default::default());
            } else {
                return Err(err(&format!("`{}` is not a section", parts[..i].join("."))));
            }
        }
        let map = node.as_mapping_mut().ok_or_else(|| err("not a section"))?;
        let key = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(key, value);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_yaml() {
        let c = ClusterConfig::default();
        let back = ClusterConfig::load(&c.to_yaml(), "defaults", &[]).unwrap();
        assert_eq!(back, c);
        let r = c.resolve().unwrap();
        // 8 × 80 GB − 141.2 GB of weights, 90 % of it, at 320 KiB a token.
        let want = ((640e9 - 141.2e9) * 0.9 / 327_680.0) as u64;
        assert_eq!(r.decode_kv_tokens, want);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_path() {
        let e = ClusterConfig::load("prefill:\n  instancez: 3\n", "c.yaml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml: ") && e.contains("instancez") && e.contains("prefill"),
            "{e}"
        );
        let e = ClusterConfig::load("", "c.yaml", &["decode.mfu=2".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "decode.mfu: 2 is out of range (expected 0 < x <= 1)");
        let e = ClusterConfig::load("", "c", &["scheduler=fastest".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fastest") && e.contains("kvcache-centric"),
            "{e}"
        );
        let e = ClusterConfig::load("", "c", &["noequals".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--set noequals: expected key=value");
        let e = ClusterConfig::load("model: gpt5\n", "c", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("model: unknown preset `gpt5`"), "{e}");
        let e = ClusterConfig::load("", "c", &["store.lease_policy=forever".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "store.lease_policy: unknown lease policy `forever` (expected one of: mooncake, none)"
        );
        let e = ClusterConfig::load("", "c", &["store.high_watermark=1.5".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "store.high_watermark: 1.5 is out of range (expected 0 <= x <= 1)"
        );
        let e = ClusterConfig::load("store:\n  eviction: nope\n", "c", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("store.eviction: unknown eviction policy"),
            "{e}"
        );
    }

    #[test]
    fn values_that_size_memory_or_loops_have_ranges() {
        let err = |set: &str| {
            ClusterConfig::load("", "c", &[set.to_string()])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("prefill.instances=4294967295"),
            "prefill.instances: 4294967295 (expected 1 to 4096)"
        );
        assert_eq!(
            err("workload.output_tokens=4294967295"),
            "workload.output_tokens: 4294967295 (expected 1 to 1048576)"
        );
        assert_eq!(
            err("metrics.sample_interval_s=0.001"),
            "metrics.sample_interval_s: 0.001 (expected 0.1 to 86400 seconds)"
        );
        assert_eq!(
            err("decode.max_batch=0"),
            "decode.max_batch: 0 (expected 1 to 65536)"
        );
        assert_eq!(
            err("prefill.dram_cache_blocks=18446744073709551615"),
            "prefill.dram_cache_blocks: 18446744073709551615 (expected 0 to 4294967296)"
        );
        assert!(err("store.lease_s=1e300").starts_with("store.lease_s: "));
        // A single policy is asked for: `all` is not offered.
        let e = err("store.eviction=all");
        assert!(
            e.starts_with("store.eviction: unknown eviction policy `all`") && !e.contains("`all`)"),
            "{e}"
        );
    }

    #[test]
    fn colocated_baselines_and_their_errors_name_the_key() {
        let load = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            ClusterConfig::load("", "c", &sets)
        };
        let err = |sets: &[&str]| load(sets).unwrap_err().to_string();
        // Defaults: moonlab's pool model; vLLM's budgets when a baseline is
        // asked for (512 with chunked prefill, 131072 without).
        let c = ClusterConfig::default();
        assert_eq!(c.colocated.policy, ColocatedPolicy::Pool);
        assert_eq!(c.colocated.routing, SchedulerKind::RoundRobin);
        assert_eq!(c.colocated.token_budget, None);
        assert!(c.to_yaml().contains("colocated:\n  policy: pool\n"));
        let chunked = load(&["deployment=colocated", "colocated.policy=vllm-chunked"]).unwrap();
        assert_eq!(chunked.resolve().unwrap().token_budget, 512);
        let plain = load(&["deployment=colocated", "colocated.policy=vllm"]).unwrap();
        let r = plain.resolve().unwrap();
        assert_eq!(r.token_budget, 131_072);
        assert!(r.colocated_cost.is_some());
        assert!(ClusterConfig::default()
            .resolve()
            .unwrap()
            .colocated_cost
            .is_none());
        // A file's section works like --set.
        let c = ClusterConfig::load(
            "deployment: colocated\ncolocated:\n  policy: vllm-prefix-cache\n  routing: least-loaded\n  token_budget: 4096\n",
            "c.yaml",
            &[],
        )
        .unwrap();
        assert_eq!(c.colocated.policy, ColocatedPolicy::VllmPrefixCache);
        assert_eq!(c.resolve().unwrap().token_budget, 4096);
        // Errors name the key.
        assert_eq!(
            err(&["colocated.policy=vllm"]),
            "colocated.policy: vllm (a vLLM baseline serves colocated: set deployment: colocated)"
        );
        let e = err(&["colocated.policy=sglang"]);
        assert!(
            e.starts_with(
                "--set colocated.policy=sglang: colocated.policy: unknown variant `sglang`"
            ) && e.contains("vllm-chunked"),
            "{e}"
        );
        assert!(err(&["colocated.routing=kvcache-centric"]).starts_with(
            "colocated.routing: kvcache-centric (vLLM instances share no KVCache pool"
        ));
        assert_eq!(
            err(&["colocated.token_budget=0"]),
            "colocated.token_budget: 0 (expected 1 to 1048576)"
        );
        assert_eq!(
            err(&["colocated.token_budget=2000000"]),
            "colocated.token_budget: 2000000 (expected 1 to 1048576)"
        );
        assert_eq!(
            err(&[
                "deployment=colocated",
                "colocated.policy=vllm-chunked",
                "decode.max_batch=256",
                "colocated.token_budget=255",
            ]),
            "colocated.token_budget: 255 (chunked prefill needs at least decode.max_batch, 256, tokens per iteration: every running request decodes one)"
        );
        let e = ClusterConfig::load("colocated:\n  polcy: vllm\n", "c.yaml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("c.yaml: colocated.polcy: unknown key (expected one of policy, routing, token_budget)"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_the_source_the_line_and_the_key() {
        let e = ClusterConfig::load(
            "model: llama3-70b\nprefill:\n  instances: \"four\"\n",
            "c.yaml",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "c.yaml:3: prefill.instances: invalid type: string \"four\", expected u32"
        );
        let e = ClusterConfig::load(
            "prefill:\n  instances: 4\n",
            "c.yaml",
            &["prefill.mfu=high".into()],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "--set prefill.mfu=high: prefill.mfu: invalid type: string \"high\", expected f64"
        );
        let e = ClusterConfig::load("prefill: [\n", "c.yaml", &[])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.yaml:2: "), "{e}");
    }

    #[test]
    fn a_relative_cost_profile_in_a_file_is_beside_the_file() {
        let text = "prefill:\n  cost_profile: p.csv\ndecode:\n  cost_profile: /abs/d.csv\n";
        let c =
            ClusterConfig::load_file(text, std::path::Path::new("configs/c.yaml"), &[]).unwrap();
        assert_eq!(c.prefill.cost_profile.as_deref(), Some("configs/p.csv"));
        assert_eq!(c.decode.cost_profile.as_deref(), Some("/abs/d.csv"));
        // A path typed with --set is relative to the working folder.
        let c = ClusterConfig::load_file(
            text,
            std::path::Path::new("configs/c.yaml"),
            &["prefill.cost_profile=q.csv".into()],
        )
        .unwrap();
        assert_eq!(c.prefill.cost_profile.as_deref(), Some("q.csv"));
        let c = ClusterConfig::load(text, "c.yaml", &[]).unwrap();
        assert_eq!(c.prefill.cost_profile.as_deref(), Some("p.csv"));
    }

    #[test]
    fn cost_profiles_parse_and_errors_name_the_line() {
        let text = "phase,x,y,seconds\nprefill,1000,0,1\nprefill,2000,0,3\ndecode,1,1000,0.02\ndecode,8,1000,0.03\n";
        let c = parse_profile(text, "p.csv", 1024).unwrap();
        assert_eq!(c.prefill_time(1500, 0), Nanos(2_000_000_000));
        let e = parse_profile("phase,x,y,seconds\nprefill,1,2\n", "p.csv", 1).unwrap_err();
        assert_eq!(e, "p.csv:2: expected 4 fields (phase,x,y,seconds), found 3");
        let e = parse_profile("phase,x,y,seconds\nwarmup,1,2,3\n", "p.csv", 1).unwrap_err();
        assert_eq!(e, "p.csv:2: phase: `warmup` (expected prefill or decode)");
        let e = parse_profile("phase,x,y,seconds\nprefill,1,2,-3\n", "p.csv", 1).unwrap_err();
        assert_eq!(e, "p.csv:2: seconds: `-3` is not a non-negative number");
        let dup = "phase,x,y,seconds\nprefill,1000,0,1\ndecode,1,1000,0.02\nprefill,2000,0,3\nprefill,1000,0,1.2\ndecode,8,1000,0.03\n";
        assert_eq!(
            parse_profile(dup, "p.csv", 1).unwrap_err(),
            "p.csv:5: prefill x = 1000, y = 0 is measured a second time (first on line 2; expected one time per point: average repeated measurements first)"
        );
        let zero = "phase,x,y,seconds\nprefill,1000,0,1\nprefill,2000,0,3\ndecode,1,1000,0\ndecode,8,1000,0\n";
        assert_eq!(
            parse_profile(zero, "p.csv", 1).unwrap_err(),
            "p.csv: every time in the decode table is 0 seconds (expected measured times)"
        );
        assert!(parse_profile("x\n", "p.csv", 1)
            .unwrap_err()
            .starts_with("p.csv:1: expected the header"));
        // Through the config: the file is read by the caller's reader.
        let cfg = ClusterConfig::load("", "c", &["prefill.cost_profile=p.csv".into()]).unwrap();
        let r = cfg
            .resolve_with(&|p| {
                if p == "p.csv" {
                    Ok(text.to_string())
                } else {
                    Err("no".into())
                }
            })
            .unwrap();
        assert!(matches!(r.prefill_cost, PoolCost::Profile(_)));
        assert!(matches!(r.decode_cost, PoolCost::Analytic(_)));
        let e = cfg.resolve().unwrap_err().to_string();
        assert_eq!(e, "prefill.cost_profile: p.csv: cannot read files here");
    }

    #[test]
    fn heterogeneous_pools() {
        let c = ClusterConfig::load(
            "",
            "c",
            &[
                "prefill.node=8xH800".into(),
                "decode.node=8xA800".into(),
                "decode.gpus=4".into(),
            ],
        )
        .unwrap();
        let r = c.resolve().unwrap();
        assert_eq!(r.prefill_node.gpu.bf16_tflops, 989.0);
        assert_eq!(r.decode_node.gpus, 4);
        // 4 × 80 GB − 141.2 GB of weights, 90 % of it, at 320 KiB a token.
        assert_eq!(
            r.decode_kv_tokens,
            ((320e9 - 141.2e9) * 0.9 / 327_680.0) as u64
        );
        let e = ClusterConfig::load("", "c", &["prefill.gpus=0".into()])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "prefill.gpus: 0 (expected 1 to 64 GPUs per instance)");
        let e = ClusterConfig::load("", "c", &["decode.gpus=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("decode.node: 1xA800-80GB cannot hold llama3-70b"),
            "{e}"
        );
    }

    #[test]
    fn sets_override_nested_and_short_keys() {
        let c = ClusterConfig::load(
            "prefill:\n  instances: 4\n",
            "c",
            &[
                "prefill.instances=12".into(),
                "scheduler=random".into(),
                "decode.node=8xH200".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.prefill.instances, 12);
        assert_eq!(c.scheduler.name, SchedulerKind::Random);
        assert_eq!(c.decode.node, "8xH200");
    }
}
