//! Cost models: how long a prefill or a decode step takes on an instance,
//! and how many bytes a token's KV occupies. The [`CostModel`] trait is what
//! schedulers and the simulator see; two implementations:
//!
//! - [`AnalyticCost`]: the paper's model. Prefill FLOPs follow Eq. 1,
//!   `l·(a·n²·d + b·n·d²)`, minus the reused prefix's share, divided by
//!   `G × MFU`; a decode step is `max(compute, (weights + batch KV bytes) /
//!   HBM bandwidth)`, and so is an iteration that mixes prefill chunks with
//!   decodes (chunked prefill): one pass, the weights read once.
//! - [`ProfileCost`]: measured latencies interpolated from a table (the CLI
//!   reads it from CSV), for users with real measurements.
//!
//! Hardware and model presets ([`NodeSpec`], [`ModelSpec`]) come from the
//! paper's Table 1 and from vendors' public data sheets; each constant says
//! where it is from. MFU is not given by the paper: it is a parameter with a
//! documented default that users should set from their own measurements.

use crate::types::Nanos;
use serde::{Deserialize, Serialize};

/// What the scheduler and the simulator ask of a cost model.
pub trait CostModel: Send + Sync {
    /// Time to prefill tokens `[cached_tokens, input_tokens)` of a prompt
    /// whose first `cached_tokens` already have KV on the GPU. A chunk
    /// `[s, e)` of a chunked prefill is `prefill_time(e, s)`.
    fn prefill_time(&self, input_tokens: u64, cached_tokens: u64) -> Nanos;
    /// Time of one decode iteration of `batch_requests` requests holding
    /// `batch_context_tokens` tokens of KV in total.
    fn decode_step_time(&self, batch_requests: u32, batch_context_tokens: u64) -> Nanos;
    /// KV bytes per token of the model.
    fn kv_bytes_per_token(&self) -> u64;

    /// Seconds to recompute tokens `[start, end)` given the KV of
    /// `[0, start)`, unrounded: the cost an eviction policy weighs a lost
    /// block by.
    fn recompute_seconds(&self, start: u64, end: u64) -> f64 {
        self.prefill_time(end, start).as_secs_f64()
    }

    /// Time of one iteration that runs, in one forward pass, the prefill
    /// chunks `chunks` — each `(s, e)`: tokens `[s, e)` of a prompt,
    /// computed given the KV of `[0, s)` — beside a decode step of
    /// `decode_requests` requests holding `decode_context_tokens` tokens of
    /// KV (chunked prefill as Sarathi-Serve and vLLM run it). By default the
    /// parts add up, `Σ prefill_time(e, s) + decode_step_time(..)`: all that
    /// separately measured latencies say. With no chunks it is the decode
    /// step; with no decodes, the chunks' prefill times.
    fn mixed_step_time(
        &self,
        chunks: &[(u64, u64)],
        decode_requests: u32,
        decode_context_tokens: u64,
    ) -> Nanos {
        chunks.iter().fold(
            self.decode_step_time(decode_requests, decode_context_tokens),
            |t, &(s, e)| t.saturating_add(self.prefill_time(e, s)),
        )
    }

    /// Time of a chunked prefill of tokens `[cached_tokens, input_tokens)`,
    /// `chunk_tokens` at a time (0 = all at once): each chunk `[s, e)` is
    /// computed given everything before it, `prefill_time(e, s)`.
    fn chunked_prefill_time(
        &self,
        input_tokens: u64,
        cached_tokens: u64,
        chunk_tokens: u64,
    ) -> Nanos {
        chunk_bounds(input_tokens, cached_tokens, chunk_tokens).fold(Nanos::ZERO, |t, (s, e)| {
            t.saturating_add(self.prefill_time(e, s))
        })
    }
}

/// The time of each chunk of a chunked prefill of tokens
/// `[cached_tokens, input_tokens)`, `chunk_tokens` at a time (0 = one
/// chunk): chunk `[s, e)` takes `prefill_time(e, s)` on one node.
pub fn chunk_times(
    cost: &dyn CostModel,
    input_tokens: u64,
    cached_tokens: u64,
    chunk_tokens: u64,
) -> Vec<Nanos> {
    chunk_bounds(input_tokens, cached_tokens, chunk_tokens)
        .map(|(s, e)| cost.prefill_time(e, s))
        .collect()
}

/// The chunks `[s, e)` of tokens `[cached_tokens, input_tokens)`,
/// `chunk_tokens` at a time (0 = one chunk).
pub fn chunk_bounds(
    input_tokens: u64,
    cached_tokens: u64,
    chunk_tokens: u64,
) -> impl Iterator<Item = (u64, u64)> {
    let mut s = cached_tokens.min(input_tokens);
    std::iter::from_fn(move || {
        if s >= input_tokens {
            return None;
        }
        let e = if chunk_tokens == 0 {
            input_tokens
        } else {
            (s + chunk_tokens).min(input_tokens)
        };
        let chunk = (s, e);
        s = e;
        Some(chunk)
    })
}

/// When each stage of a pipeline is free and what one request's chunks
/// occupy: chunked pipeline parallelism (the paper's §3.3). A group of
/// `stage_free.len()` prefill nodes splits the model's layers evenly; each
/// chunk of a prompt passes the stages in order, a stage takes a chunk once
/// it has finished the one before (of this request or an earlier one), and
/// spends `chunk_time / stages` on it. Chunks of one request, and of
/// successive requests, are in different stages at once.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PipelineRun {
    /// When the first stage finished the request's last chunk: the group
    /// can take the next request's first chunk then.
    pub first_stage_end: Nanos,
    /// When the last stage finished the last chunk: the prefill is done.
    pub end: Nanos,
}

/// Schedules chunks of `chunk_times` (each as on one node) through the
/// pipeline whose stages are free at `stage_free` (updated), starting at
/// `start`. With one stage it is `start + Σ chunk_times`.
pub fn run_pipeline(stage_free: &mut [Nanos], start: Nanos, chunk_times: &[Nanos]) -> PipelineRun {
    run_pipeline_with(stage_free, start, chunk_times, |_, _, _| {})
}

/// [`run_pipeline`], calling `busy(stage, begin, end)` for every chunk's
/// time on every stage.
pub fn run_pipeline_with(
    stage_free: &mut [Nanos],
    start: Nanos,
    chunk_times: &[Nanos],
    mut busy: impl FnMut(usize, Nanos, Nanos),
) -> PipelineRun {
    let stages = stage_free.len().max(1) as u64;
    let mut first_stage_end = start;
    let mut end = start;
    for &t in chunk_times {
        let per_stage = Nanos(t.0 / stages);
        let mut ready = start;
        for (s, free) in stage_free.iter_mut().enumerate() {
            let begin = ready.max(*free);
            let done = begin.saturating_add(per_stage);
            busy(s, begin, done);
            *free = done;
            ready = done;
            if s == 0 {
                first_stage_end = done;
            }
        }
        end = ready;
    }
    PipelineRun {
        first_stage_end,
        end,
    }
}

/// A GPU's public data-sheet numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub name: String,
    /// Dense BF16 tensor throughput, TFLOP/s.
    pub bf16_tflops: f64,
    /// HBM capacity, GB (10⁹ bytes).
    pub hbm_gb: f64,
    /// HBM bandwidth, GB/s.
    pub hbm_gb_per_s: f64,
}

/// One serving node (= one instance in the paper's experiments): GPUs and
/// the host links KV moves over.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub gpu: GpuSpec,
    pub gpus: u32,
    /// Host-to-device bandwidth of the node, GB/s (B_h2d).
    pub h2d_gb_per_s: f64,
    /// Aggregate RDMA NIC bandwidth of the node, Gbit/s (B_nic).
    pub nic_gbit_per_s: f64,
}

impl NodeSpec {
    fn a800() -> GpuSpec {
        // NVIDIA A800 80GB SXM: A100-class silicon, 312 TFLOPS dense BF16
        // (Table 1: G = 8 × 312 TFLOPS), 80 GB HBM2e at 2,039 GB/s.
        GpuSpec {
            name: "A800-80GB".into(),
            bf16_tflops: 312.0,
            hbm_gb: 80.0,
            hbm_gb_per_s: 2039.0,
        }
    }

    /// 8×A800 exactly as Table 1: G = 8 × 312 TFLOPS, B_h2d = 128 GB/s,
    /// B_nic = 800 Gbps.
    pub fn a800x8() -> NodeSpec {
        NodeSpec {
            name: "8xA800".into(),
            gpu: Self::a800(),
            gpus: 8,
            h2d_gb_per_s: 128.0,
            nic_gbit_per_s: 800.0,
        }
    }

    /// H100/H800/H200 SXM nodes: 989 TFLOPS dense BF16 per GPU (NVIDIA H100
    /// data sheet; H800 and H200 share the compute die). Host links: PCIe
    /// Gen5 doubles Gen4's per-lane rate, so 2 × Table 1's 128 GB/s; NICs:
    /// 8 × 400 Gbps ConnectX-7 (the DGX H100 reference design, and the
    /// paper's own 8 × 400 Gbps testbed in §5.4.1).
    fn hopper(name: &str, gpu: &str, hbm_gb: f64, hbm_gb_per_s: f64) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            gpu: GpuSpec {
                name: gpu.into(),
                bf16_tflops: 989.0,
                hbm_gb,
                hbm_gb_per_s,
            },
            gpus: 8,
            h2d_gb_per_s: 256.0,
            nic_gbit_per_s: 3200.0,
        }
    }

    /// 8×H800 SXM: 80 GB HBM3 at 3,350 GB/s.
    pub fn h800x8() -> NodeSpec {
        Self::hopper("8xH800", "H800-80GB", 80.0, 3350.0)
    }
    /// 8×H100 SXM: 80 GB HBM3 at 3,350 GB/s.
    pub fn h100x8() -> NodeSpec {
        Self::hopper("8xH100", "H100-80GB", 80.0, 3350.0)
    }
    /// 8×H200 SXM: 141 GB HBM3e at 4,800 GB/s.
    pub fn h200x8() -> NodeSpec {
        Self::hopper("8xH200", "H200-141GB", 141.0, 4800.0)
    }

    pub fn preset(name: &str) -> Option<NodeSpec> {
        match name.to_ascii_lowercase().as_str() {
            "8xa800" => Some(Self::a800x8()),
            "8xh800" => Some(Self::h800x8()),
            "8xh100" => Some(Self::h100x8()),
            "8xh200" => Some(Self::h200x8()),
            _ => None,
        }
    }

    pub const PRESETS: [&'static str; 4] = ["8xA800", "8xH800", "8xH100", "8xH200"];

    /// Total dense BF16 FLOP/s of the node (G).
    pub fn flops_per_s(&self) -> f64 {
        self.gpus as f64 * self.gpu.bf16_tflops * 1e12
    }
    /// Total HBM bytes of the node.
    pub fn hbm_bytes(&self) -> f64 {
        self.gpus as f64 * self.gpu.hbm_gb * 1e9
    }
    /// Aggregate HBM bandwidth of the node, bytes/s.
    pub fn hbm_bytes_per_s(&self) -> f64 {
        self.gpus as f64 * self.gpu.hbm_gb_per_s * 1e9
    }
    pub fn h2d_bytes_per_s(&self) -> f64 {
        self.h2d_gb_per_s * 1e9
    }
    pub fn nic_bytes_per_s(&self) -> f64 {
        self.nic_gbit_per_s * 1e9 / 8.0
    }
}

/// A model's shape for Eq. 1 and its memory footprint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    /// l: layers.
    pub layers: u32,
    /// d: hidden dimension.
    pub hidden: u32,
    /// a: Eq. 1's attention coefficient.
    pub a: f64,
    /// b: Eq. 1's linear-layer coefficient; for models other than Table 1's
    /// it is derived from the active parameters: b = 2·P_active / (l·d²).
    pub b: f64,
    /// Parameters held in HBM (bytes = params × weight_bytes), billions.
    pub params_b: f64,
    pub weight_bytes: f64,
    /// KV bytes per token: 2 × l × (d / gqa) × s for GQA models, the
    /// compressed latent for MLA models.
    pub kv_bytes_per_token: u64,
}

impl ModelSpec {
    /// LLaMA3-70B as Table 1: l = 80, d = 8192, a = 4, b = 22, gqa = 8,
    /// s = 2 B → 2 × 80 × 1024 × 2 = 320 KiB per token; 70.6 B parameters.
    pub fn llama3_70b() -> ModelSpec {
        ModelSpec {
            name: "llama3-70b".into(),
            layers: 80,
            hidden: 8192,
            a: 4.0,
            b: 22.0,
            params_b: 70.6,
            weight_bytes: 2.0,
            kv_bytes_per_token: 2 * 80 * (8192 / 8) * 2,
        }
    }

    /// LLaMA3-8B (Meta's model card and config): l = 32, d = 4096, 32 query
    /// and 8 KV heads (gqa = 4), 8.03 B parameters, BF16 →
    /// 2 × 32 × 1024 × 2 = 128 KiB per token.
    pub fn llama3_8b() -> ModelSpec {
        let (l, d, p) = (32u32, 4096u32, 8.03);
        ModelSpec {
            name: "llama3-8b".into(),
            layers: l,
            hidden: d,
            a: 4.0,
            b: 2.0 * p * 1e9 / (l as f64 * d as f64 * d as f64),
            params_b: p,
            weight_bytes: 2.0,
            kv_bytes_per_token: 2 * l as u64 * (d / 4) as u64 * 2,
        }
    }

    /// DeepSeek-V3 (its technical report and config): 61 layers, d = 7168,
    /// MLA with a 512-wide compressed KV plus 64 RoPE dims per layer, BF16 →
    /// 61 × 576 × 2 = 70,272 B per token (about 1/4.7 of LLaMA3-70B's); MoE
    /// with 671 B parameters held (FP8, 1 B each) and 37 B active per token.
    pub fn deepseek_v3() -> ModelSpec {
        let (l, d, active) = (61u32, 7168u32, 37.0);
        ModelSpec {
            name: "deepseek-v3".into(),
            layers: l,
            hidden: d,
            a: 4.0,
            b: 2.0 * active * 1e9 / (l as f64 * d as f64 * d as f64),
            params_b: 671.0,
            weight_bytes: 1.0,
            kv_bytes_per_token: l as u64 * 576 * 2,
        }
    }

    pub fn preset(name: &str) -> Option<ModelSpec> {
        match name.to_ascii_lowercase().as_str() {
            "llama3-70b" => Some(Self::llama3_70b()),
            "llama3-8b" => Some(Self::llama3_8b()),
            "deepseek-v3" => Some(Self::deepseek_v3()),
            _ => None,
        }
    }

    pub const PRESETS: [&'static str; 3] = ["llama3-70b", "llama3-8b", "deepseek-v3"];

    /// Eq. 1: flops(n) = l·(a·n²·d + b·n·d²).
    pub fn prefill_flops(&self, n: u64) -> f64 {
        let (n, d) = (n as f64, self.hidden as f64);
        self.layers as f64 * (self.a * n * n * d + self.b * n * d * d)
    }

    /// FLOPs to compute tokens `[start, end)` given the KV of `[0, start)`:
    /// flops(end) − flops(start). Deeper blocks cost more: attention is
    /// quadratic in the context.
    pub fn recompute_flops(&self, start: u64, end: u64) -> f64 {
        self.prefill_flops(end) - self.prefill_flops(start)
    }

    pub fn weight_bytes_total(&self) -> f64 {
        self.params_b * 1e9 * self.weight_bytes
    }
}

/// How the attention term of Eq. 1 counts.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attention {
    /// Eq. 1 as the paper writes it: every token against every token,
    /// `a·n²·d` per layer (the default, because it is the paper's).
    #[default]
    Full,
    /// Causal attention as real kernels compute it: the masked half is
    /// skipped, so the attention term is halved (`a·n²·d / 2`; a decoded
    /// token against its `c` predecessors costs `a·c·d`, not `a·2c·d`).
    Causal,
}

impl Attention {
    fn factor(self) -> f64 {
        match self {
            Attention::Full => 1.0,
            Attention::Causal => 0.5,
        }
    }
}

/// The paper's analytic cost model for one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticCost {
    pub model: ModelSpec,
    pub node: NodeSpec,
    /// Model FLOPs utilisation of prefill (not in the paper; default 0.5).
    pub prefill_mfu: f64,
    /// Model FLOPs utilisation of a decode step's compute bound (default 0.5).
    pub decode_mfu: f64,
    /// Eq. 1's attention term, full (the paper's) or causal.
    pub attention: Attention,
}

impl AnalyticCost {
    pub fn new(model: ModelSpec, node: NodeSpec) -> AnalyticCost {
        AnalyticCost {
            model,
            node,
            prefill_mfu: 0.5,
            decode_mfu: 0.5,
            attention: Attention::Full,
        }
    }

    /// Eq. 1's FLOPs to compute tokens `[start, end)` given the KV of
    /// `[0, start)`, with the attention term as configured.
    fn flops(&self, start: u64, end: u64) -> f64 {
        let m = &self.model;
        let (l, d) = (m.layers as f64, m.hidden as f64);
        let (s, e) = (start as f64, end.max(start) as f64);
        let attention = self.attention.factor() * m.a * (e * e - s * s) * d;
        l * (attention + m.b * (e - s) * d * d)
    }
}

impl AnalyticCost {
    /// FLOPs of one decode step: one new token per request at context c
    /// costs flops(c+1) − flops(c) = l·(a·(2c+1)·d + b·d²) (halved
    /// attention when causal); summed over the batch.
    fn decode_flops(&self, batch_requests: u32, batch_context_tokens: u64) -> f64 {
        let (l, d) = (self.model.layers as f64, self.model.hidden as f64);
        let (bsz, ctx) = (batch_requests as f64, batch_context_tokens as f64);
        let attention = self.attention.factor() * self.model.a * (2.0 * ctx + bsz) * d;
        l * (attention + bsz * self.model.b * d * d)
    }

    /// Seconds to read the weights and `kv_tokens` tokens of KV from HBM.
    fn pass_memory_s(&self, kv_tokens: u64) -> f64 {
        let bytes = self.model.weight_bytes_total()
            + kv_tokens as f64 * self.model.kv_bytes_per_token as f64;
        bytes / self.node.hbm_bytes_per_s()
    }
}

fn secs(s: f64) -> Nanos {
    Nanos((s * 1e9).round().max(0.0) as u64)
}

impl CostModel for AnalyticCost {
    fn prefill_time(&self, input_tokens: u64, cached_tokens: u64) -> Nanos {
        let p = cached_tokens.min(input_tokens);
        secs(self.flops(p, input_tokens) / (self.node.flops_per_s() * self.prefill_mfu))
    }

    fn decode_step_time(&self, batch_requests: u32, batch_context_tokens: u64) -> Nanos {
        if batch_requests == 0 {
            return Nanos::ZERO;
        }
        let compute = self.decode_flops(batch_requests, batch_context_tokens)
            / (self.node.flops_per_s() * self.decode_mfu);
        secs(compute.max(self.pass_memory_s(batch_context_tokens)))
    }

    /// One forward pass over the chunks and the decoding requests: the
    /// roofline of the whole pass, as for a decode step. Its compute is the
    /// chunks' Eq. 1 FLOPs at the prefill MFU plus the decode tokens' at
    /// the decode MFU; its memory traffic reads the weights once and the KV
    /// the pass attends to (the decoding requests' contexts and each
    /// chunk's `[0, e)`). So decode tokens ride on a compute-bound chunk
    /// almost for free (Sarathi-Serve's point), and a chunk of a few tokens
    /// still pays for reading the weights. Without chunks it is exactly
    /// [`CostModel::decode_step_time`].
    fn mixed_step_time(
        &self,
        chunks: &[(u64, u64)],
        decode_requests: u32,
        decode_context_tokens: u64,
    ) -> Nanos {
        if chunks.is_empty() {
            return self.decode_step_time(decode_requests, decode_context_tokens);
        }
        let g = self.node.flops_per_s();
        let prefill: f64 = chunks.iter().map(|&(s, e)| self.flops(s, e)).sum();
        let decode = if decode_requests == 0 {
            0.0
        } else {
            self.decode_flops(decode_requests, decode_context_tokens)
        };
        let compute = prefill / (g * self.prefill_mfu) + decode / (g * self.decode_mfu);
        let attended = decode_context_tokens.saturating_add(chunks.iter().map(|c| c.1).sum());
        secs(compute.max(self.pass_memory_s(attended)))
    }

    fn kv_bytes_per_token(&self) -> u64 {
        self.model.kv_bytes_per_token
    }

    fn recompute_seconds(&self, start: u64, end: u64) -> f64 {
        self.flops(start, end) / (self.node.flops_per_s() * self.prefill_mfu)
    }
}

/// Measured latencies, linearly interpolated (and extrapolated from the end
/// segments) — for users who profile their own deployment. A lookup of
/// (x, y) interpolates along x within the two measured y rows around y,
/// then between those rows (beyond the measured rows, the nearest row).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileCost {
    /// (new tokens, prefix tokens, seconds), sorted by prefix then new tokens.
    pub prefill: Vec<ProfilePoint>,
    /// (batch size, context tokens per request, seconds).
    pub decode: Vec<ProfilePoint>,
    pub kv_bytes_per_token: u64,
}

/// One measured latency: `x` is new tokens (prefill) or batch size
/// (decode), `y` the prefix tokens (prefill) or context tokens per request
/// (decode).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfilePoint {
    pub x: f64,
    pub y: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProfileError {
    #[error("the {table} table has {points} measured point(s) (expected at least two)")]
    TooFew { table: &'static str, points: usize },
    #[error("the {table} table has a negative or non-finite value at row {row}")]
    Bad { table: &'static str, row: usize },
    #[error("the {table} table measures x = {x}, y = {y} twice (rows {first} and {second}; expected one time per point: average repeated measurements first)")]
    Duplicate {
        table: &'static str,
        x: f64,
        y: f64,
        first: usize,
        second: usize,
    },
    #[error("every time in the {table} table is 0 seconds (expected measured times)")]
    AllZero { table: &'static str },
}

impl ProfileCost {
    pub fn new(
        mut prefill: Vec<ProfilePoint>,
        mut decode: Vec<ProfilePoint>,
        kv_bytes_per_token: u64,
    ) -> Result<ProfileCost, ProfileError> {
        for (name, t) in [("prefill", &prefill), ("decode", &decode)] {
            if t.len() < 2 {
                return Err(ProfileError::TooFew {
                    table: name,
                    points: t.len(),
                });
            }
            if let Some(row) = t.iter().position(|p| {
                !(p.x.is_finite() && p.y.is_finite() && p.seconds.is_finite())
                    || p.x < 0.0
                    || p.y < 0.0
                    || p.seconds < 0.0
            }) {
                return Err(ProfileError::Bad {
                    table: name,
                    row: row + 1,
                });
            }
            if t.iter().all(|p| p.seconds == 0.0) {
                return Err(ProfileError::AllZero { table: name });
            }
            let mut order: Vec<usize> = (0..t.len()).collect();
            order.sort_by(|&a, &b| {
                (t[a].y.total_cmp(&t[b].y))
                    .then(t[a].x.total_cmp(&t[b].x))
                    .then(a.cmp(&b))
            });
            if let Some(w) = order
                .windows(2)
                .find(|w| t[w[0]].x == t[w[1]].x && t[w[0]].y == t[w[1]].y)
            {
                return Err(ProfileError::Duplicate {
                    table: name,
                    x: t[w[0]].x,
                    y: t[w[0]].y,
                    first: w[0] + 1,
                    second: w[1] + 1,
                });
            }
        }
        let key =
            |a: &ProfilePoint, b: &ProfilePoint| a.y.total_cmp(&b.y).then(a.x.total_cmp(&b.x));
        prefill.sort_by(key);
        decode.sort_by(key);
        Ok(ProfileCost {
            prefill,
            decode,
            kv_bytes_per_token,
        })
    }

    /// Bilinear-ish lookup: interpolate along x within the two measured y
    /// rows around `y`, then between those rows.
    fn lookup(table: &[ProfilePoint], x: f64, y: f64) -> f64 {
        let mut ys: Vec<f64> = table.iter().map(|p| p.y).collect();
        ys.dedup();
        let along = |row_y: f64| {
            let row: Vec<&ProfilePoint> = table.iter().filter(|p| p.y == row_y).collect();
            interp(&row.iter().map(|p| (p.x, p.seconds)).collect::<Vec<_>>(), x)
        };
        let i = ys.partition_point(|&v| v <= y);
        match (i.checked_sub(1).map(|j| ys[j]), ys.get(i).copied()) {
            (Some(lo), Some(hi)) if hi > lo => {
                let t = (y - lo) / (hi - lo);
                along(lo) * (1.0 - t) + along(hi) * t
            }
            (Some(lo), _) => along(lo),
            (None, Some(hi)) => along(hi),
            (None, None) => 0.0,
        }
    }
}

/// Piecewise-linear interpolation through sorted points, extrapolating from
/// the end segments, never below zero.
fn interp(points: &[(f64, f64)], x: f64) -> f64 {
    match points {
        [] => 0.0,
        [(_, y)] => *y,
        _ => {
            let i = points
                .partition_point(|p| p.0 <= x)
                .clamp(1, points.len() - 1);
            let ((x0, y0), (x1, y1)) = (points[i - 1], points[i]);
            let v = if x1 > x0 {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            } else {
                y1
            };
            v.max(0.0)
        }
    }
}

impl CostModel for ProfileCost {
    fn prefill_time(&self, input_tokens: u64, cached_tokens: u64) -> Nanos {
        let p = cached_tokens.min(input_tokens);
        let new = (input_tokens - p) as f64;
        if new == 0.0 {
            return Nanos::ZERO;
        }
        secs(Self::lookup(&self.prefill, new, p as f64))
    }

    fn decode_step_time(&self, batch_requests: u32, batch_context_tokens: u64) -> Nanos {
        if batch_requests == 0 {
            return Nanos::ZERO;
        }
        let per = batch_context_tokens as f64 / batch_requests as f64;
        secs(Self::lookup(&self.decode, batch_requests as f64, per))
    }

    fn kv_bytes_per_token(&self) -> u64 {
        self.kv_bytes_per_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq1_and_kv_bytes_of_table1() {
        let m = ModelSpec::llama3_70b();
        assert_eq!(m.kv_bytes_per_token, 320 * 1024);
        assert_eq!(
            m.prefill_flops(1),
            80.0 * (4.0 * 8192.0 + 22.0 * 8192.0 * 8192.0)
        );
        assert!(m.recompute_flops(512, 1024) > m.recompute_flops(0, 512));
        assert_eq!(m.recompute_flops(0, 512), m.prefill_flops(512));
    }

    #[test]
    fn table1_prefill_by_hand() {
        let c = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        // n = 8192, no prefix: 80 × (4·8192²·8192 + 22·8192·8192²) = 80 × 26 × 8192³
        let flops = 80.0 * 26.0 * 8192f64.powi(3);
        let want = flops / (8.0 * 312e12 * 0.5);
        let got = c.prefill_time(8192, 0).as_secs_f64();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        // A reused prefix saves its own Eq. 1 share.
        let with_prefix = c.prefill_time(8192, 4096).as_secs_f64();
        let saved = 80.0 * (4.0 * 4096f64.powi(2) * 8192.0 + 22.0 * 4096.0 * 8192f64.powi(2));
        assert!((with_prefix - (flops - saved) / (8.0 * 312e12 * 0.5)).abs() < 1e-9);
        assert_eq!(c.prefill_time(100, 100), Nanos::ZERO);
        assert_eq!(c.kv_bytes_per_token(), 320 * 1024);
    }

    #[test]
    fn a_pipeline_of_chunks_by_hand() {
        // Chunks of 8, 12 and 16 ns through 4 stages (2, 3, 4 ns each):
        //   stage 0: [0,2] [2,5] [5,9]
        //   stage 1: [2,4] [5,8] [9,13]
        //   stage 2: [4,6] [8,11] [13,17]
        //   stage 3: [6,8] [11,14] [17,21]
        let mut free = vec![Nanos::ZERO; 4];
        let chunks = [Nanos(8), Nanos(12), Nanos(16)];
        let run = run_pipeline(&mut free, Nanos::ZERO, &chunks);
        assert_eq!(
            run,
            PipelineRun {
                first_stage_end: Nanos(9),
                end: Nanos(21)
            }
        );
        assert_eq!(free, vec![Nanos(9), Nanos(13), Nanos(17), Nanos(21)]);
        // The next request's first chunk (8 ns) starts at stage 0 at 9.
        let next = run_pipeline(&mut free, Nanos(9), &[Nanos(8)]);
        assert_eq!(
            next,
            PipelineRun {
                first_stage_end: Nanos(11),
                end: Nanos(23)
            }
        );
        // One stage: the chunks back to back.
        let mut one = vec![Nanos(0)];
        assert_eq!(run_pipeline(&mut one, Nanos(5), &chunks).end, Nanos(41));
        // Chunk times sum to the unchunked time under Eq. 1.
        let c = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        let times = chunk_times(&c, 20_000, 0, 8192);
        assert_eq!(times.len(), 3);
        let sum: u64 = times.iter().map(|t| t.0).sum();
        assert!(sum.abs_diff(c.prefill_time(20_000, 0).0) <= 3);
    }

    #[test]
    fn causal_attention_halves_the_attention_term() {
        let full = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        let causal = AnalyticCost {
            attention: Attention::Causal,
            ..full.clone()
        };
        // n = 8192 from scratch: full 80·(4·n²·d + 22·n·d²), causal 80·(2·n²·d + 22·n·d²).
        let n = 8192f64;
        let g = 8.0 * 312e12 * 0.5;
        let want = 80.0 * (2.0 * n * n * 8192.0 + 22.0 * n * 8192f64.powi(2)) / g;
        assert!((causal.prefill_time(8192, 0).as_secs_f64() - want).abs() < 1e-9);
        assert!(causal.prefill_time(128_000, 0) < full.prefill_time(128_000, 0));
        assert_eq!(full.prefill_time(8192, 0), full.prefill_time(8192, 0));
        assert!((full.recompute_seconds(0, 512) - causal.recompute_seconds(0, 512)) > 0.0);
    }

    #[test]
    fn decode_is_memory_bound_at_small_batch() {
        let c = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        // batch 1, 1000 tokens: weights 141.2 GB + 1000 × 320 KiB over 8 × 2039 GB/s.
        let want = (70.6e9 * 2.0 + 1000.0 * 327_680.0) / (8.0 * 2039e9);
        let got = c.decode_step_time(1, 1000).as_secs_f64();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        // Big batches become compute bound and grow with batch size.
        assert!(c.decode_step_time(512, 512 * 4000) > c.decode_step_time(64, 64 * 4000));
        assert_eq!(c.decode_step_time(0, 0), Nanos::ZERO);
    }

    #[test]
    fn a_mixed_iteration_by_hand() {
        let c = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        let g = 8.0 * 312e12 * 0.5;
        let bw = 8.0 * 2039e9;
        let d = 8192f64;
        // No chunk: exactly the decode step.
        assert_eq!(
            c.mixed_step_time(&[], 10, 10_000),
            c.decode_step_time(10, 10_000)
        );
        assert_eq!(c.mixed_step_time(&[], 0, 0), Nanos::ZERO);
        // A 512-token chunk beside 10 decodes of 1000 tokens each: one pass,
        // compute bound. Chunk: 80·(4·512²·d + 22·512·d²); decodes:
        // 80·(4·(2·10000 + 10)·d + 10·22·d²).
        let chunk = 80.0 * (4.0 * 512f64.powi(2) * d + 22.0 * 512.0 * d * d);
        let decodes = 80.0 * (4.0 * 20_010.0 * d + 10.0 * 22.0 * d * d);
        let want = (chunk + decodes) / g;
        let memory = (141.2e9 + 10_512.0 * 327_680.0) / bw;
        assert!(want > memory);
        let got = c.mixed_step_time(&[(0, 512)], 10, 10_000).as_secs_f64();
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        // Less than the chunk and the step one after the other: the weights
        // are read once.
        let apart = c
            .prefill_time(512, 0)
            .saturating_add(c.decode_step_time(10, 10_000));
        assert!(c.mixed_step_time(&[(0, 512)], 10, 10_000) < apart);
        // A later chunk of a prompt attends to what is before it.
        let later = 80.0 * (4.0 * (1024f64.powi(2) - 512f64.powi(2)) * d + 22.0 * 512.0 * d * d);
        let got = c.mixed_step_time(&[(512, 1024)], 0, 0).as_secs_f64();
        assert!((got - later / g).abs() < 1e-9, "{got}");
        // A 4-token chunk alone is bound by reading the weights.
        let got = c.mixed_step_time(&[(0, 4)], 0, 0).as_secs_f64();
        let want = (141.2e9 + 4.0 * 327_680.0) / bw;
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }

    #[test]
    fn presets_resolve_and_mla_is_small() {
        for n in NodeSpec::PRESETS {
            assert!(NodeSpec::preset(n).is_some(), "{n}");
        }
        for m in ModelSpec::PRESETS {
            assert!(ModelSpec::preset(m).is_some(), "{m}");
        }
        assert_eq!(ModelSpec::llama3_8b().kv_bytes_per_token, 128 * 1024);
        assert_eq!(ModelSpec::deepseek_v3().kv_bytes_per_token, 70_272);
        // b derived from active parameters reproduces 2·P FLOPs per token.
        let m = ModelSpec::llama3_8b();
        let per_token = m.layers as f64 * m.b * (m.hidden as f64).powi(2);
        assert!((per_token - 2.0 * 8.03e9).abs() < 1.0);
    }

    #[test]
    fn profile_interpolates_and_validates() {
        let pts = |v: &[(f64, f64, f64)]| {
            v.iter()
                .map(|&(x, y, s)| ProfilePoint { x, y, seconds: s })
                .collect::<Vec<_>>()
        };
        let c = ProfileCost::new(
            pts(&[
                (1000.0, 0.0, 1.0),
                (2000.0, 0.0, 3.0),
                (1000.0, 1000.0, 2.0),
                (2000.0, 1000.0, 4.0),
            ]),
            pts(&[(1.0, 1000.0, 0.02), (8.0, 1000.0, 0.03)]),
            1024,
        )
        .unwrap();
        assert_eq!(c.prefill_time(1500, 0), secs(2.0));
        assert_eq!(c.prefill_time(2000, 500), secs(2.5)); // 1500 new at prefix 500
        assert_eq!(c.decode_step_time(4, 4000), secs(0.02 + 0.01 * 3.0 / 7.0));
        // Measured separately, a mixed iteration adds its parts.
        assert_eq!(
            c.mixed_step_time(&[(0, 1500), (500, 2000)], 4, 4000),
            secs(0.02 + 0.01 * 3.0 / 7.0)
                .saturating_add(secs(2.0))
                .saturating_add(secs(2.5))
        );
        let two = pts(&[(1.0, 1.0, 1.0), (2.0, 1.0, 2.0)]);
        assert!(ProfileCost::new(vec![], two.clone(), 1).is_err());
        let e = ProfileCost::new(pts(&[(1.0, 1.0, 1.0)]), two.clone(), 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the prefill table has 1 measured point(s) (expected at least two)"
        );
        let bad = ProfileCost::new(pts(&[(1.0, 0.0, -1.0), (2.0, 0.0, 1.0)]), two, 1).unwrap_err();
        assert_eq!(
            bad,
            ProfileError::Bad {
                table: "prefill",
                row: 1
            }
        );
    }
}
