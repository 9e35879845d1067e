//! A Moonshot-style trace generator fitted to a source trace
//! (`moonlab trace synth --like FILE --rate-scale K --duration S --seed N`).
//!
//! [`fit`] reads the source once, in arrival order, and returns a
//! [`SynthModel`]; [`generate`] streams a new trace from the model in
//! non-decreasing arrival order. The output is a pure function of (model,
//! spec): every random draw comes from [`ChaCha8Rng`] seeded with
//! `spec.seed`, one stream per purpose (arrivals, prefix structure, lengths),
//! so one seed gives a byte-identical trace. No clock is read.
//!
//! # What is fitted, and how
//!
//! **Arrivals.** The mean and the coefficient of variation (CV, population
//! standard deviation over mean) of the gaps between consecutive source
//! arrivals; mean gap = span / (requests - 1). A CV within ±0.2 of 1
//! ([`POISSON_CV_BAND`]) gives a Poisson process (exponential gaps),
//! otherwise a Gamma renewal process with shape 1/CV² and the fitted mean
//! (CV > 1 is burstier than Poisson, CV < 1 more regular; the CV is clamped
//! to 0.01..=30 so the shape stays finite). Rate scale K divides the mean
//! gap by K. The first request arrives at 0; requests arrive until the
//! duration (default: the source's span) is over.
//!
//! **Prefix structure** (sources with `hash_ids` only). Every source request
//! is classified by its longest prefix match against all earlier requests
//! (an unbounded cache): `k` = its leading blocks already seen, `x` = its
//! block `k - 1`.
//! - *fresh*: `k = 0`.
//! - *continuation*: `x` is the last full block of an earlier request (the
//!   match covers all that request's full blocks: a multi-turn session
//!   growing by one turn) **and no earlier request has branched off at
//!   `x`**.
//! - *shared*: any other match (a shared system prompt or document prefix).
//!   The matched prefix, identified by `x`, is the request's *root*.
//!
//! The branching rule refines the plain "covers an earlier request's full
//! blocks" test: once a second request diverges after the same block, that
//! block is a shared prefix, not a session's tail. Without it a shared
//! one-block system prompt makes every later request a "continuation" of
//! whichever one-block request came first (in `conversation_trace.jsonl`
//! 61% of requests match only the system prompt), and the generated
//! sessions grow without bound (prototype: cache ratio 0.93 against the
//! source's 0.37, median input 10× too long).
//!
//! Fitted: the class frequencies; for continuations the new (unmatched)
//! tokens `input - k × block_tokens` and the gap to the parent's arrival
//! (the latest request whose last full block is `x`); for shared requests
//! the prefix length `k` in blocks (one sample per request), the new
//! tokens, the number of distinct roots, a Zipf exponent for root
//! popularity (least squares of ln(uses) on ln(rank) over all roots,
//! clamped to [`ZIPF_EXPONENT_RANGE`]) and the class of the request that
//! first held each root's blocks; for fresh requests the input length;
//! output lengths per class. A request matched in full (no new block) counts
//! 0 new tokens.
//!
//! Empirical distributions are deterministic reservoir samples of at most
//! [`RESERVOIR_CAPACITY`] values (exact below that), sampled by inverse CDF
//! on the sorted reservoir. Fitting memory is the per-distinct-block
//! bookkeeping (a flag per block, an arrival per last-full block, a count
//! per root, in hash maps) plus the reservoirs.
//!
//! **Sources without hashes** (Azure, BurstGPT: `blocks` empty) fit only
//! arrivals and lengths; every generated request is fresh (cache ratio 0).
//! A source output of 0 tokens (a failed request in the CSV traces) is
//! generated as 1 token.
//!
//! # How requests are generated
//!
//! Each request draws its class with the fitted frequencies:
//! - *fresh*: an input length from the fresh distribution, all blocks new.
//!   Block ids come from one counter, so generated requests share a block
//!   only through the structure below.
//! - *shared*: a root from a pool by Zipf rank. The pool size is solved so
//!   that the expected number of distinct roots drawn equals the source's
//!   distinct roots scaled by (expected generated shared requests / source
//!   shared requests), which keeps reuse per root (and so the hit ratio)
//!   comparable at any rate scale and duration (the pool is capped at 64
//!   roots per wanted distinct root, and at 2²² roots, for sources whose
//!   roots were each used about once). Root lengths are fixed per root
//!   and stratified by Zipf mass: the roots are laid out in random order
//!   along [0, 1), each over an interval as wide as its Zipf probability,
//!   and take the prefix-length quantile at the middle of their interval;
//!   roots are drawn on that same layout, so the use-weighted prefix
//!   lengths follow the fitted distribution while each root keeps its Zipf
//!   popularity. A root is materialised on first use by adopting the
//!   leading blocks of the most recent generated request that has that many
//!   full blocks, of a class drawn with the fitted root-creator weights (a
//!   document first sent fresh; a system prompt or branch point first seen
//!   inside a session); failing that, of any class. In the source a prefix
//!   is by definition first seen in an earlier request, so a shared request
//!   is a hit from its first use; giving each root new blocks instead made
//!   every first use a miss (prototype on `synthetic_trace.jsonl`: cache
//!   ratio 0.52-0.60 against 0.65). Only when no recent request is long
//!   enough does a root get new blocks of its own. The request is the
//!   root's blocks plus new tokens.
//! - *continuation*: a parent gap `g` is drawn; among the last
//!   [`SESSION_WINDOW`] sessions (one per conversation, keyed by its last
//!   turn's arrival) the one whose last turn is closest to `now - g` is
//!   continued: the request reuses all its full blocks (not the partial last
//!   one) and appends the drawn new tokens. Gaps are user think time and are
//!   not scaled by K (a higher rate means more concurrent users). With no
//!   session, or when the prompt would exceed [`MAX_INPUT_TOKENS`] (the
//!   session then ends), a fresh request is generated instead.
//!
//! Every generated request becomes a session (if it has a full block).
//! Length draws use stratified inverse-CDF sampling: the uniform variates
//! come in shuffled blocks of 64, one per 1/64 quantile band, which keeps
//! generated marginals close to the fitted ones on short traces without a
//! visible pattern in the sequence. Class and root draws are stratified the
//! same way. Every request satisfies `len(hash_ids) == ceil(input /
//! block_tokens)`, `1 <= input <= MAX_INPUT_TOKENS`,
//! `1 <= output <= MAX_OUTPUT_TOKENS`.
//!
//! # Fidelity (checked by the tests on both shipped traces)
//!
//! Over the source's span with K = 1 and K = 4 the generated trace matches
//! the source within: unbounded-cache ratio (Σ hit tokens / Σ input tokens,
//! hit = min(k × block_tokens, input)) ±0.05 absolute; input p50 and p90
//! ±15%; output p50 ±15%; arrival rate ±10% of K × the source's rate.
//!
//! # Known limits
//!
//! - A renewal process matches the gap mean and CV, not their correlation:
//!   `conversation_trace.jsonl` arrives in 3 s batches (CV 3.0 at the gap
//!   level, smooth per minute), the Gamma process with that CV clusters on
//!   longer scales (peak arrivals per minute about 380 against 247).
//! - The least-squares Zipf fit is dominated by the long tail of roots used
//!   once or twice and can overstate the head: on `synthetic_trace.jsonl`
//!   the most popular generated first block serves 2-3% of requests
//!   against 0.6% in the source.
//! - Parent sessions are chosen by time alone; a source whose continued
//!   requests differ in length from the rest is matched only on average.

use crate::{MAX_INPUT_TOKENS, MAX_OUTPUT_TOKENS};
use moonlab_core::types::blocks_for_tokens;
use moonlab_core::{BlockKey, Nanos, Request};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma};
use rustc_hash::FxHashMap;
use serde::ser::SerializeStruct;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Most values an empirical distribution keeps (a uniform reservoir sample
/// beyond that).
pub const RESERVOIR_CAPACITY: usize = 100_000;
/// A gap CV within this distance of 1 is fitted as Poisson.
pub const POISSON_CV_BAND: f64 = 0.2;
/// The fitted Zipf exponent is clamped to this range.
pub const ZIPF_EXPONENT_RANGE: (f64, f64) = (0.0, 3.0);
/// Sessions kept for continuation (the oldest is dropped beyond this).
pub const SESSION_WINDOW: usize = 65_536;

/// Gap CVs outside this range are clamped (the Gamma shape stays finite).
const CV_RANGE: (f64, f64) = (0.01, 30.0);
/// Uniform variates per stratified block.
const STRATA: usize = 64;
/// Recent requests remembered per power-of-two length class for root
/// adoption.
const ADOPT_PER_CLASS: usize = 64;
/// Largest root pool.
const MAX_ROOT_POOL: usize = 1 << 22;
/// Seed of the reservoir sampler (fitting is deterministic).
const RESERVOIR_SEED: u64 = 0x6d6f_6f6e_6c61_6221;
/// RNG stream ids, one per purpose.
const STREAM_ARRIVALS: u64 = 1;
const STREAM_PREFIX: u64 = 2;
const STREAM_LENGTHS: u64 = 3;

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthSpec {
    /// Arrival-rate multiplier K (> 0): the mean gap is divided by K.
    pub rate_scale: f64,
    /// Seconds to generate; `None` = the source's span.
    pub duration_s: Option<f64>,
    /// Seed of every random draw.
    pub seed: u64,
    /// Tokens per block of the generated `hash_ids`.
    pub block_tokens: u32,
    /// Most requests to generate: a spec whose expected count (duration
    /// over mean gap) is larger is refused before anything is written, and
    /// a run that draws more stops with an error.
    pub max_requests: u64,
}

/// The default of [`SynthSpec::max_requests`]: ten million requests, a few
/// gigabytes of JSONL at the shipped traces' lengths.
pub const DEFAULT_MAX_REQUESTS: u64 = 10_000_000;

impl SynthSpec {
    /// Checks the values: rate scale and duration positive and finite, block
    /// size at least 1.
    pub fn validate(&self) -> Result<(), SynthError> {
        if !(self.rate_scale.is_finite() && self.rate_scale > 0.0) {
            return Err(SynthError::BadRateScale(self.rate_scale));
        }
        if let Some(d) = self.duration_s {
            check_duration(d)?;
        }
        if self.block_tokens == 0 {
            return Err(SynthError::BadBlockTokens);
        }
        if self.max_requests == 0 {
            return Err(SynthError::BadMaxRequests);
        }
        Ok(())
    }
}

/// A duration must be positive, finite, and end at a representable arrival.
fn check_duration(d: f64) -> Result<(), SynthError> {
    if !(d.is_finite() && d > 0.0) {
        return Err(SynthError::BadDuration(d));
    }
    if d * 1e3 > crate::MAX_ARRIVAL_MS as f64 {
        return Err(SynthError::DurationTooLong(d));
    }
    Ok(())
}

/// Why a model could not be fitted or a spec is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error(
        "the source trace holds no requests (expected at least two to fit arrivals and lengths)"
    )]
    EmptySource,
    #[error("the source trace holds a single request (expected at least two: arrivals are fitted from the gaps between them)")]
    SingleRequest,
    #[error("all {requests} source requests arrive at the same instant (expected a positive span to fit an arrival rate)")]
    ZeroSpan { requests: u64 },
    #[error("source request {index} (0-based) arrives at {arrival_ms} ms, before the previous request's {previous_ms} ms (expected non-decreasing arrivals; sort the source first)")]
    Unsorted {
        index: u64,
        arrival_ms: f64,
        previous_ms: f64,
    },
    #[error("source request {index} (0-based) has {blocks} block ids but input {input_tokens} tokens needs ceil({input_tokens} / {block_tokens}) = {want} (was the source read with block size {block_tokens}?)")]
    BlockCount {
        index: u64,
        blocks: usize,
        input_tokens: u32,
        block_tokens: u32,
        want: u64,
    },
    #[error("source request {index} (0-based) has input {input_tokens} tokens (expected 1..={MAX_INPUT_TOKENS})")]
    BadInput { index: u64, input_tokens: u32 },
    #[error("rate scale {0} is not a positive finite number (expected K > 0: 1 keeps the source's rate, 4 quadruples it)")]
    BadRateScale(f64),
    #[error("duration {0} s is not a positive finite number of seconds (expected S > 0, or none for the source's span)")]
    BadDuration(f64),
    #[error("duration {0:e} s ends beyond the latest representable arrival (expected at most {max} s, about 317 years)", max = crate::MAX_ARRIVAL_MS / 1000)]
    DurationTooLong(f64),
    #[error("block size 0 tokens (expected at least 1; Moonshot's traces use 512)")]
    BadBlockTokens,
    #[error("a request cap of 0 (expected at least 1)")]
    BadMaxRequests,
    #[error("about {expected:.0} requests would be generated (duration {duration_s} s over a mean gap of {mean_gap_s:.3e} s), more than the cap of {max} (raise --max-requests, or shorten --duration / lower --rate-scale)")]
    TooManyRequests {
        expected: f64,
        duration_s: f64,
        mean_gap_s: f64,
        max: u64,
    },
    #[error("the draw reached the cap of {max} requests before the duration ended (raise --max-requests, or shorten --duration / lower --rate-scale)")]
    CapReached { max: u64 },
    #[error("the model is unusable: {0}")]
    BadModel(String),
}

/// An empirical distribution: a sorted sample of the values seen.
/// Serialised as a summary (population, sample size, mean, quantiles).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Empirical {
    sorted: Vec<u64>,
    population: u64,
}

impl Empirical {
    /// Values observed in the source (the sample may be smaller).
    pub fn population(&self) -> u64 {
        self.population
    }

    /// The kept sample, sorted.
    pub fn samples(&self) -> &[u64] {
        &self.sorted
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The value at quantile `u` in [0, 1) (inverse CDF of the sample).
    pub fn quantile(&self, u: f64) -> Option<u64> {
        if self.sorted.is_empty() {
            return None;
        }
        let n = self.sorted.len();
        let i = ((u.clamp(0.0, 1.0) * n as f64) as usize).min(n - 1);
        Some(self.sorted[i])
    }

    pub fn mean(&self) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        self.sorted.iter().map(|&v| v as f64).sum::<f64>() / self.sorted.len() as f64
    }
}

impl Serialize for Empirical {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let q = |u: f64| self.quantile(u);
        let mut st = s.serialize_struct("Empirical", 9)?;
        st.serialize_field("population", &self.population)?;
        st.serialize_field("sample", &self.sorted.len())?;
        st.serialize_field("mean", &self.mean())?;
        st.serialize_field("min", &self.sorted.first())?;
        st.serialize_field("p10", &q(0.1))?;
        st.serialize_field("p50", &q(0.5))?;
        st.serialize_field("p90", &q(0.9))?;
        st.serialize_field("p99", &q(0.99))?;
        st.serialize_field("max", &self.sorted.last())?;
        st.end()
    }
}

/// The fitted arrival process.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArrivalProcess {
    /// Exponential gaps (the gap CV was within ±[`POISSON_CV_BAND`] of 1).
    Poisson,
    /// Gamma-distributed gaps with this shape (1 / CV²) and the fitted mean.
    Gamma { shape: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArrivalModel {
    /// Mean gap between consecutive source arrivals (s): span / (n - 1).
    pub mean_gap_s: f64,
    /// Coefficient of variation of those gaps (unclamped).
    pub gap_cv: f64,
    pub process: ArrivalProcess,
}

/// How often each class occurs in the source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassModel {
    /// Requests with no prefix hit (all requests of a source without hashes).
    pub fresh: u64,
    /// Requests continuing an earlier request's full blocks.
    pub continuation: u64,
    /// Requests reusing a shared prefix (root).
    pub shared: u64,
    pub p_fresh: f64,
    pub p_continuation: f64,
    pub p_shared: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FreshModel {
    /// Input tokens of fresh requests.
    pub input_tokens: Empirical,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContinuationModel {
    /// Tokens a continuation adds after its parent's full blocks.
    pub new_tokens: Empirical,
    /// Time from the parent's arrival to the continuation's (ns).
    pub parent_gap_ns: Empirical,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SharedModel {
    /// Matched prefix of a shared request, in blocks of the model's
    /// `block_tokens` (one sample per shared request).
    pub prefix_blocks: Empirical,
    /// Tokens after the shared prefix.
    pub new_tokens: Empirical,
    /// Distinct roots (shared prefixes) in the source.
    pub distinct_roots: u64,
    /// Zipf exponent of root popularity (uses by rank).
    pub zipf_exponent: f64,
    /// Which class of request first held each root's blocks.
    pub root_creators: RootCreators,
}

/// How many source roots were first seen in a request of each class (a
/// document first sent fresh; a system prompt or a branch point first seen
/// inside a session). Generated roots adopt their blocks from a recent
/// request of a class drawn with these weights.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RootCreators {
    pub fresh: u64,
    pub continuation: u64,
    pub shared: u64,
}

/// Output tokens, by class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputModel {
    pub fresh: Empirical,
    pub continuation: Empirical,
    pub shared: Empirical,
}

/// A generator model fitted to a source trace (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SynthModel {
    /// Block size the prefix structure was fitted with (tokens).
    pub block_tokens: u32,
    /// Requests in the source.
    pub source_requests: u64,
    /// Last arrival minus first arrival in the source (s).
    pub source_span_s: f64,
    /// Whether the source carried prefix hashes; without, only fresh
    /// requests are generated.
    pub hashed: bool,
    /// The source's unbounded-cache prefix-hit ratio (Σ hit tokens / Σ input
    /// tokens), for reference.
    pub source_cache_ratio: f64,
    pub arrivals: ArrivalModel,
    pub classes: ClassModel,
    pub fresh: FreshModel,
    pub continuation: ContinuationModel,
    pub shared: SharedModel,
    pub output_tokens: OutputModel,
}

struct Reservoir {
    items: Vec<u64>,
    seen: u64,
}

impl Reservoir {
    fn new() -> Self {
        Reservoir {
            items: Vec::new(),
            seen: 0,
        }
    }

    /// Algorithm R.
    fn push(&mut self, value: u64, rng: &mut ChaCha8Rng) {
        self.seen += 1;
        if self.items.len() < RESERVOIR_CAPACITY {
            self.items.push(value);
        } else {
            let j = rng.random_range(0..self.seen);
            if (j as usize) < RESERVOIR_CAPACITY {
                self.items[j as usize] = value;
            }
        }
    }

    fn finish(mut self) -> Empirical {
        self.items.sort_unstable();
        Empirical {
            sorted: self.items,
            population: self.seen,
        }
    }
}

const NODE_LAST_FULL: u8 = 1;
const NODE_BRANCHED: u8 = 2;
/// Bits 2..4 of a node's flags: the class of the request that introduced it.
const NODE_CREATOR_SHIFT: u8 = 2;

#[derive(Copy, Clone, PartialEq, Eq)]
enum Class {
    Fresh,
    Continuation,
    Shared,
}

impl Class {
    const ALL: [Class; 3] = [Class::Fresh, Class::Continuation, Class::Shared];

    fn index(self) -> usize {
        match self {
            Class::Fresh => 0,
            Class::Continuation => 1,
            Class::Shared => 2,
        }
    }
}

/// Fits a [`SynthModel`] to `requests` (in non-decreasing arrival order) in
/// one streaming pass. `block_tokens` is the block size of their `blocks`.
pub fn fit(
    requests: impl IntoIterator<Item = Request>,
    block_tokens: u32,
) -> Result<SynthModel, SynthError> {
    if block_tokens == 0 {
        return Err(SynthError::BadBlockTokens);
    }
    let bt = block_tokens as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(RESERVOIR_SEED);
    let mut nodes: FxHashMap<u64, u8> = FxHashMap::default();
    let mut last_full_arrival: FxHashMap<u64, u64> = FxHashMap::default();
    let mut roots: FxHashMap<u64, (u64, u64)> = FxHashMap::default();
    let (mut fresh_in, mut cont_new, mut cont_gap) =
        (Reservoir::new(), Reservoir::new(), Reservoir::new());
    let (mut shared_len, mut shared_new) = (Reservoir::new(), Reservoir::new());
    let (mut out_fresh, mut out_cont, mut out_shared) =
        (Reservoir::new(), Reservoir::new(), Reservoir::new());
    let (mut n_fresh, mut n_cont, mut n_shared) = (0u64, 0u64, 0u64);
    let (mut hit_tokens, mut all_tokens) = (0u128, 0u128);
    let mut root_creators = [0u64; 3];
    let mut hashed = false;
    let mut count = 0u64;
    let (mut first, mut prev) = (0u64, 0u64);
    // Welford over gaps in seconds.
    let (mut gap_mean, mut gap_m2) = (0.0f64, 0.0f64);

    for r in requests {
        let index = count;
        let t = r.arrival.0;
        if count == 0 {
            first = t;
        } else {
            if t < prev {
                return Err(SynthError::Unsorted {
                    index,
                    arrival_ms: t as f64 / 1e6,
                    previous_ms: prev as f64 / 1e6,
                });
            }
            let gap = (t - prev) as f64 / 1e9;
            let k = count as f64; // gaps seen after this one
            let d = gap - gap_mean;
            gap_mean += d / k;
            gap_m2 += d * (gap - gap_mean);
        }
        prev = t;
        count += 1;
        if r.input_tokens == 0 || r.input_tokens as u64 > MAX_INPUT_TOKENS {
            return Err(SynthError::BadInput {
                index,
                input_tokens: r.input_tokens,
            });
        }
        let input = r.input_tokens as u64;
        let class = if r.blocks.is_empty() {
            Class::Fresh
        } else {
            let want = blocks_for_tokens(input, block_tokens);
            if r.blocks.len() as u64 != want {
                return Err(SynthError::BlockCount {
                    index,
                    blocks: r.blocks.len(),
                    input_tokens: r.input_tokens,
                    block_tokens,
                    want,
                });
            }
            hashed = true;
            let keys = &r.blocks;
            let k = keys.iter().take_while(|b| nodes.contains_key(&b.0)).count();
            hit_tokens += (k as u64 * bt).min(input) as u128;
            all_tokens += input as u128;
            let class = if k == 0 {
                Class::Fresh
            } else {
                let x = keys[k - 1].0;
                let flags = nodes.get(&x).copied().unwrap_or(0);
                let new_tokens = input.saturating_sub(k as u64 * bt);
                if flags & NODE_LAST_FULL != 0 && flags & NODE_BRANCHED == 0 {
                    let parent = last_full_arrival.get(&x).copied().unwrap_or(t);
                    cont_new.push(new_tokens, &mut rng);
                    cont_gap.push(t.saturating_sub(parent), &mut rng);
                    Class::Continuation
                } else {
                    let e = roots.entry(x).or_insert_with(|| {
                        let creator = (flags >> NODE_CREATOR_SHIFT) as usize;
                        root_creators[creator.min(2)] += 1;
                        (0, k as u64)
                    });
                    e.0 += 1;
                    shared_len.push(k as u64, &mut rng);
                    shared_new.push(new_tokens, &mut rng);
                    Class::Shared
                }
            };
            if k > 0 && k < keys.len() {
                if let Some(f) = nodes.get_mut(&keys[k - 1].0) {
                    *f |= NODE_BRANCHED;
                }
            }
            let creator = (class.index() as u8) << NODE_CREATOR_SHIFT;
            for b in &keys[k..] {
                nodes.entry(b.0).or_insert(creator);
            }
            let full = (input / bt) as usize;
            if full >= 1 {
                let x = keys[full - 1].0;
                if let Some(f) = nodes.get_mut(&x) {
                    *f |= NODE_LAST_FULL;
                }
                last_full_arrival.insert(x, t);
            }
            class
        };
        let output = r.output_tokens as u64;
        match class {
            Class::Fresh => {
                n_fresh += 1;
                fresh_in.push(input, &mut rng);
                out_fresh.push(output, &mut rng);
            }
            Class::Continuation => {
                n_cont += 1;
                out_cont.push(output, &mut rng);
            }
            Class::Shared => {
                n_shared += 1;
                out_shared.push(output, &mut rng);
            }
        }
    }

    match count {
        0 => return Err(SynthError::EmptySource),
        1 => return Err(SynthError::SingleRequest),
        _ => {}
    }
    let span = prev - first;
    if span == 0 {
        return Err(SynthError::ZeroSpan { requests: count });
    }
    let span_s = span as f64 / 1e9;
    let mean_gap_s = span_s / (count - 1) as f64;
    let gap_cv = (gap_m2 / (count - 1) as f64).max(0.0).sqrt() / mean_gap_s;
    let process = if (gap_cv - 1.0).abs() <= POISSON_CV_BAND {
        ArrivalProcess::Poisson
    } else {
        let cv = gap_cv.clamp(CV_RANGE.0, CV_RANGE.1);
        ArrivalProcess::Gamma {
            shape: 1.0 / (cv * cv),
        }
    };

    let mut uses: Vec<(u64, u64)> = roots.iter().map(|(&key, &(n, _))| (n, key)).collect();
    uses.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let zipf_exponent = fit_zipf(uses.iter().map(|u| u.0));

    let p = |n: u64| n as f64 / count as f64;
    Ok(SynthModel {
        block_tokens,
        source_requests: count,
        source_span_s: span_s,
        hashed,
        source_cache_ratio: if all_tokens == 0 {
            0.0
        } else {
            hit_tokens as f64 / all_tokens as f64
        },
        arrivals: ArrivalModel {
            mean_gap_s,
            gap_cv,
            process,
        },
        classes: ClassModel {
            fresh: n_fresh,
            continuation: n_cont,
            shared: n_shared,
            p_fresh: p(n_fresh),
            p_continuation: p(n_cont),
            p_shared: p(n_shared),
        },
        fresh: FreshModel {
            input_tokens: fresh_in.finish(),
        },
        continuation: ContinuationModel {
            new_tokens: cont_new.finish(),
            parent_gap_ns: cont_gap.finish(),
        },
        shared: SharedModel {
            prefix_blocks: shared_len.finish(),
            new_tokens: shared_new.finish(),
            distinct_roots: uses.len() as u64,
            zipf_exponent,
            root_creators: RootCreators {
                fresh: root_creators[0],
                continuation: root_creators[1],
                shared: root_creators[2],
            },
        },
        output_tokens: OutputModel {
            fresh: out_fresh.finish(),
            continuation: out_cont.finish(),
            shared: out_shared.finish(),
        },
    })
}

/// Least-squares slope of ln(uses) on ln(rank), negated and clamped; 0 (a
/// uniform pool) for fewer than two roots.
fn fit_zipf(uses_by_rank: impl Iterator<Item = u64>) -> f64 {
    let (mut n, mut sx, mut sy, mut sxx, mut sxy) = (0.0f64, 0.0, 0.0, 0.0, 0.0);
    for (i, u) in uses_by_rank.enumerate() {
        let x = ((i + 1) as f64).ln();
        let y = (u.max(1) as f64).ln();
        n += 1.0;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    let den = n * sxx - sx * sx;
    if n < 2.0 || den <= 0.0 {
        return 0.0;
    }
    let slope = (n * sxy - sx * sy) / den;
    (-slope).clamp(ZIPF_EXPONENT_RANGE.0, ZIPF_EXPONENT_RANGE.1)
}

/// Streams requests generated from `model` per `spec` into `emit`, in
/// non-decreasing arrival order, and returns how many were emitted. Stops at
/// the first error of `emit`. Call [`SynthSpec::validate`] first: with an
/// invalid spec (or a hand-edited, unusable model) nothing is generated and
/// the count is 0; [`stream`] reports why.
pub fn generate<E: From<SynthError>>(
    model: &SynthModel,
    spec: &SynthSpec,
    mut emit: impl FnMut(Request) -> Result<(), E>,
) -> Result<u64, E> {
    let mut count = 0u64;
    for r in stream(model, spec)? {
        if count == spec.max_requests {
            return Err(SynthError::CapReached {
                max: spec.max_requests,
            }
            .into());
        }
        emit(r)?;
        count += 1;
    }
    Ok(count)
}

/// The generated trace as an iterator (what [`generate`] drains).
pub fn stream<'m>(model: &'m SynthModel, spec: &SynthSpec) -> Result<SynthStream<'m>, SynthError> {
    spec.validate()?;
    SynthStream::new(model, spec)
}

/// A contiguous range of block ids.
#[derive(Copy, Clone, Debug)]
struct Run {
    start: u64,
    len: u64,
}

fn run_blocks(runs: &[Run]) -> u64 {
    runs.iter().map(|r| r.len).sum()
}

/// The first `n` blocks of `runs`.
fn truncate_runs(runs: &[Run], mut n: u64) -> Vec<Run> {
    let mut out = Vec::new();
    for r in runs {
        if n == 0 {
            break;
        }
        let take = r.len.min(n);
        out.push(Run {
            start: r.start,
            len: take,
        });
        n -= take;
    }
    out
}

/// Uniform variates in shuffled blocks of [`STRATA`], one per quantile band.
#[derive(Default)]
struct Strata {
    pending: Vec<f64>,
}

impl Strata {
    fn next(&mut self, rng: &mut ChaCha8Rng) -> f64 {
        if self.pending.is_empty() {
            for i in 0..STRATA {
                self.pending
                    .push((i as f64 + rng.random::<f64>()) / STRATA as f64);
            }
            for i in (1..STRATA).rev() {
                let j = rng.random_range(0..=i);
                self.pending.swap(i, j);
            }
        }
        self.pending.pop().unwrap_or(0.5)
    }

    fn draw(&mut self, dist: &Empirical, rng: &mut ChaCha8Rng) -> Option<u64> {
        let u = self.next(rng);
        dist.quantile(u)
    }
}

enum Gaps {
    Poisson(Exp<f64>),
    Gamma(Gamma<f64>),
}

/// The more recent of `best` and `e`.
fn newer<'a>(best: Option<&'a Recent>, e: &'a Recent) -> Option<&'a Recent> {
    match best {
        Some(b) if b.seq >= e.seq => Some(b),
        _ => Some(e),
    }
}

/// A recent generated request kept for root adoption.
struct Recent {
    seq: u64,
    full: u64,
    runs: Vec<Run>,
}

struct Session {
    runs: Vec<Run>,
    full: u64,
}

struct Root {
    blocks: u64,
    runs: Option<Vec<Run>>,
}

/// Per-distribution samplers.
#[derive(Default)]
struct Samplers {
    class: Strata,
    root: Strata,
    creator: Strata,
    parent_gap: Strata,
    fresh_in: Strata,
    cont_new: Strata,
    shared_new: Strata,
    out_fresh: Strata,
    out_cont: Strata,
    out_shared: Strata,
}

/// The generated requests, in arrival order (see [`stream`]).
pub struct SynthStream<'m> {
    model: &'m SynthModel,
    bt: u64,
    duration_s: f64,
    t_s: f64,
    gaps: Gaps,
    arrivals_rng: ChaCha8Rng,
    prefix_rng: ChaCha8Rng,
    lengths_rng: ChaCha8Rng,
    samplers: Samplers,
    next_id: u64,
    sessions: BTreeMap<(u64, u64), Session>,
    seq: u64,
    /// Recent requests by class, then by floor(log2(full blocks)):
    /// (seq, full blocks, their runs).
    recent: [Vec<VecDeque<Recent>>; 3],
    /// Cumulative Zipf weights of the root pool.
    root_cum: Vec<f64>,
    roots: Vec<Root>,
    done: bool,
}

impl<'m> SynthStream<'m> {
    fn new(model: &'m SynthModel, spec: &SynthSpec) -> Result<Self, SynthError> {
        let bad = |m: &str| SynthError::BadModel(m.to_string());
        let mean = model.arrivals.mean_gap_s / spec.rate_scale;
        if !(mean.is_finite() && mean > 0.0) {
            return Err(bad(
                "the mean gap divided by the rate scale is not a positive finite number of seconds",
            ));
        }
        let duration_s = spec.duration_s.unwrap_or(model.source_span_s);
        check_duration(duration_s)?;
        let expected = duration_s / mean + 1.0;
        if expected > spec.max_requests as f64 {
            return Err(SynthError::TooManyRequests {
                expected,
                duration_s,
                mean_gap_s: mean,
                max: spec.max_requests,
            });
        }
        if model.fresh.input_tokens.is_empty() || model.block_tokens == 0 {
            return Err(bad("no fresh input lengths were fitted"));
        }
        let probs = [
            model.classes.p_fresh,
            model.classes.p_continuation,
            model.classes.p_shared,
        ];
        if probs.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(bad("class probabilities must be finite and non-negative"));
        }
        let gaps = match model.arrivals.process {
            ArrivalProcess::Poisson => {
                Gaps::Poisson(Exp::new(1.0 / mean).map_err(|e| bad(&e.to_string()))?)
            }
            ArrivalProcess::Gamma { shape } => Gaps::Gamma(
                Gamma::new(shape, mean / shape)
                    .map_err(|e| bad(&format!("gamma shape {shape}: {e}")))?,
            ),
        };
        let stream_rng = |id: u64| {
            let mut r = ChaCha8Rng::seed_from_u64(spec.seed);
            r.set_stream(id);
            r
        };
        let mut s = SynthStream {
            model,
            bt: spec.block_tokens as u64,
            duration_s,
            t_s: 0.0,
            gaps,
            arrivals_rng: stream_rng(STREAM_ARRIVALS),
            prefix_rng: stream_rng(STREAM_PREFIX),
            lengths_rng: stream_rng(STREAM_LENGTHS),
            samplers: Samplers::default(),
            next_id: 0,
            sessions: BTreeMap::new(),
            seq: 0,
            recent: std::array::from_fn(|_| (0..64).map(|_| VecDeque::new()).collect()),
            root_cum: Vec::new(),
            roots: Vec::new(),
            done: false,
        };
        if model.hashed && model.classes.shared > 0 && !model.shared.prefix_blocks.is_empty() {
            let expected_requests = duration_s / mean + 1.0;
            s.build_root_pool(expected_requests);
        }
        Ok(s)
    }

    /// Sizes the root pool (see the module docs), fixes each root's length.
    fn build_root_pool(&mut self, expected_requests: f64) {
        let m = &self.model;
        let s = m
            .shared
            .zipf_exponent
            .clamp(ZIPF_EXPONENT_RANGE.0, ZIPF_EXPONENT_RANGE.1);
        let draws = (m.classes.p_shared * expected_requests).max(1.0);
        let target =
            (m.shared.distinct_roots.max(1) as f64 * draws / m.classes.shared as f64).max(1.0);
        // Zipf weights and their running sums, grown as the search needs.
        let (mut weights, mut sums): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
        let grow = |weights: &mut Vec<f64>, sums: &mut Vec<f64>, n: usize| {
            while weights.len() < n {
                let w = ((weights.len() + 1) as f64).powf(-s);
                sums.push(sums.last().copied().unwrap_or(0.0) + w);
                weights.push(w);
            }
        };
        // Expected distinct roots among `draws` Zipf draws over `pool`.
        let distinct = |weights: &[f64], sums: &[f64], pool: usize| {
            let total = sums[pool - 1];
            weights[..pool]
                .iter()
                .map(|w| {
                    let p = w / total;
                    if p >= 1.0 {
                        1.0
                    } else {
                        1.0 - (draws * (-p).ln_1p()).exp()
                    }
                })
                .sum::<f64>()
        };
        // When every source root was used about once, only an unbounded
        // pool reaches the target: stop at 64 roots per wanted root.
        let cap = ((target * 64.0).ceil() as usize).clamp(1, MAX_ROOT_POOL);
        let mut hi = 1usize;
        loop {
            grow(&mut weights, &mut sums, hi);
            if hi >= cap || distinct(&weights, &sums, hi) >= target {
                break;
            }
            hi = (hi * 2).min(cap);
        }
        // The answer lies in (hi / 2, hi].
        let mut lo = if hi == 1 { 1 } else { hi / 2 + 1 };
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if distinct(&weights, &sums, mid) < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let pool = lo.max(1);
        weights.truncate(pool);
        sums.truncate(pool);
        let total = sums[pool - 1];
        drop(sums);
        // Roots in random order along [0, 1), each spanning its Zipf mass
        // and taking the prefix-length quantile at the middle of its span.
        // Draws use the same layout, so stratified draws give stratified
        // prefix lengths while every root keeps its Zipf popularity.
        let mut order: Vec<usize> = (0..pool).collect();
        for i in (1..pool).rev() {
            let j = self.prefix_rng.random_range(0..=i);
            order.swap(i, j);
        }
        self.root_cum = Vec::with_capacity(pool);
        self.roots = Vec::with_capacity(pool);
        let mut c = 0.0;
        for &i in &order {
            let p = weights[i] / total;
            let blocks = m.shared.prefix_blocks.quantile(c + p / 2.0).unwrap_or(1);
            c += p;
            self.root_cum.push(c);
            self.roots.push(Root {
                // Converted from the model's block size to the generated one.
                blocks: blocks.saturating_mul(m.block_tokens as u64) / self.bt,
                runs: None,
            });
        }
    }

    fn new_run(&mut self, len: u64) -> Run {
        let run = Run {
            start: self.next_id,
            len,
        };
        self.next_id = self.next_id.saturating_add(len);
        run
    }

    /// Removes and returns the session whose last turn is closest to
    /// `target` (ties go to the more recent one).
    fn take_session(&mut self, target: u64) -> Option<Session> {
        let before = self
            .sessions
            .range(..=(target, u64::MAX))
            .next_back()
            .map(|(k, _)| *k);
        let after = self.sessions.range((target, 0)..).next().map(|(k, _)| *k);
        let key = match (before, after) {
            (Some(b), Some(a)) => {
                if a.0 - target <= target - b.0 {
                    a
                } else {
                    b
                }
            }
            (Some(k), None) | (None, Some(k)) => k,
            (None, None) => return None,
        };
        self.sessions.remove(&key)
    }

    /// The blocks of root `r`, adopting a recent request's prefix on first
    /// use.
    fn root_runs(&mut self, r: usize) -> Vec<Run> {
        if let Some(runs) = &self.roots[r].runs {
            return runs.clone();
        }
        let blocks = self.roots[r].blocks;
        let runs = if blocks == 0 {
            Vec::new()
        } else {
            let c = &self.model.shared.root_creators;
            let weights = [c.fresh, c.continuation, c.shared].map(|w| w as f64);
            let total: f64 = weights.iter().sum();
            let u = self.samplers.creator.next(&mut self.prefix_rng) * total;
            let mut creator = Class::Shared;
            let mut acc = 0.0;
            for (class, w) in Class::ALL.into_iter().zip(weights) {
                acc += w;
                if u < acc {
                    creator = class;
                    break;
                }
            }
            let adopted = self
                .recent_with(Some(creator), blocks)
                .or_else(|| self.recent_with(None, blocks));
            match adopted {
                Some(runs) => runs,
                None => vec![self.new_run(blocks)],
            }
        };
        self.roots[r].runs = Some(runs.clone());
        runs
    }

    /// The first `blocks` blocks of the most recent generated request (of
    /// `class`, or of any) with at least that many full blocks.
    fn recent_with(&self, class: Option<Class>, blocks: u64) -> Option<Vec<Run>> {
        let bucket = (63 - blocks.leading_zeros()) as usize;
        let mut best: Option<&Recent> = None;
        for (c, by_len) in Class::ALL.into_iter().zip(&self.recent) {
            if class.is_some_and(|want| want != c) {
                continue;
            }
            if let Some(e) = by_len
                .get(bucket)
                .and_then(|q| q.iter().rev().find(|e| e.full >= blocks))
            {
                best = newer(best, e);
            }
            for e in by_len.iter().skip(bucket + 1).filter_map(|q| q.back()) {
                best = newer(best, e);
            }
        }
        best.map(|e| truncate_runs(&e.runs, blocks))
    }

    fn pick_class(&mut self) -> Class {
        if !self.model.hashed {
            return Class::Fresh;
        }
        let c = &self.model.classes;
        let total = c.p_fresh + c.p_continuation + c.p_shared;
        if total <= 0.0 {
            return Class::Fresh;
        }
        let u = self.samplers.class.next(&mut self.prefix_rng) * total;
        if u < c.p_continuation {
            Class::Continuation
        } else if u < c.p_continuation + c.p_shared && !self.roots.is_empty() {
            Class::Shared
        } else {
            Class::Fresh
        }
    }

    fn make_request(&mut self, arrival: Nanos) -> Request {
        let m = self.model;
        let bt = self.bt;
        let max_in = MAX_INPUT_TOKENS;
        let mut class = self.pick_class();
        let mut prefix: Vec<Run> = Vec::new();
        let mut input = 0u64;
        if class == Class::Continuation {
            let gap = self
                .samplers
                .parent_gap
                .draw(&m.continuation.parent_gap_ns, &mut self.prefix_rng)
                .unwrap_or(0);
            match self.take_session(arrival.0.saturating_sub(gap)) {
                Some(parent) => {
                    let new = self
                        .samplers
                        .cont_new
                        .draw(&m.continuation.new_tokens, &mut self.lengths_rng)
                        .unwrap_or(1);
                    input = parent.full.saturating_mul(bt).saturating_add(new).max(1);
                    if input <= max_in {
                        prefix = parent.runs;
                    } else {
                        class = Class::Fresh;
                    }
                }
                None => class = Class::Fresh,
            }
        }
        if class == Class::Shared {
            let total = self.root_cum.last().copied().unwrap_or(0.0);
            let u = self.samplers.root.next(&mut self.prefix_rng) * total;
            let r = self
                .root_cum
                .partition_point(|&c| c <= u)
                .min(self.roots.len() - 1);
            prefix = self.root_runs(r);
            let new = self
                .samplers
                .shared_new
                .draw(&m.shared.new_tokens, &mut self.lengths_rng)
                .unwrap_or(1);
            input = run_blocks(&prefix)
                .saturating_mul(bt)
                .saturating_add(new)
                .clamp(1, max_in);
        }
        if class == Class::Fresh {
            prefix.clear();
            input = self
                .samplers
                .fresh_in
                .draw(&m.fresh.input_tokens, &mut self.lengths_rng)
                .unwrap_or(1)
                .clamp(1, max_in);
        }
        let (dist, sampler) = match class {
            Class::Fresh => (&m.output_tokens.fresh, &mut self.samplers.out_fresh),
            Class::Continuation => (&m.output_tokens.continuation, &mut self.samplers.out_cont),
            Class::Shared => (&m.output_tokens.shared, &mut self.samplers.out_shared),
        };
        let output = sampler
            .draw(dist, &mut self.lengths_rng)
            .unwrap_or(1)
            .clamp(1, MAX_OUTPUT_TOKENS);

        let need = blocks_for_tokens(input, self.bt as u32);
        let have = run_blocks(&prefix);
        let mut runs = prefix;
        if need > have {
            let run = self.new_run(need - have);
            runs.push(run);
        }
        let mut blocks = Vec::with_capacity(need as usize);
        for r in &runs {
            blocks.extend((r.start..r.start + r.len).map(BlockKey));
        }
        blocks.truncate(need as usize);

        let full = input / bt;
        if m.hashed && full >= 1 {
            let full_runs = truncate_runs(&runs, full);
            let bucket = (63 - full.leading_zeros()) as usize;
            if let Some(q) = self.recent[class.index()].get_mut(bucket) {
                if q.len() == ADOPT_PER_CLASS {
                    q.pop_front();
                }
                q.push_back(Recent {
                    seq: self.seq,
                    full,
                    runs: full_runs.clone(),
                });
            }
            self.sessions.insert(
                (arrival.0, self.seq),
                Session {
                    runs: full_runs,
                    full,
                },
            );
            self.seq += 1;
            if self.sessions.len() > SESSION_WINDOW {
                self.sessions.pop_first();
            }
        }
        Request {
            arrival,
            input_tokens: input as u32,
            output_tokens: output as u32,
            blocks,
        }
    }
}

impl Iterator for SynthStream<'_> {
    type Item = Request;

    fn next(&mut self) -> Option<Request> {
        if self.done || self.t_s > self.duration_s {
            self.done = true;
            return None;
        }
        let arrival = Nanos((self.t_s * 1e9).round() as u64);
        let r = self.make_request(arrival);
        let gap = match &self.gaps {
            Gaps::Poisson(d) => d.sample(&mut self.arrivals_rng),
            Gaps::Gamma(d) => d.sample(&mut self.arrivals_rng),
        };
        self.t_s += if gap.is_finite() { gap.max(0.0) } else { 0.0 };
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mooncake::{MooncakeReader, MooncakeWriter};
    use rustc_hash::FxHashSet;
    use std::path::Path;
    use std::sync::OnceLock;

    const BT: u32 = 512;
    const CONVERSATION: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/data/conversation_trace.jsonl");
    const SYNTHETIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/synthetic_trace.jsonl");

    fn read_file(path: &str) -> Vec<Request> {
        let file = std::fs::File::open(path).unwrap();
        MooncakeReader::new(std::io::BufReader::new(file), Path::new(path), BT, true)
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// (source requests, fitted model), read and fitted once per trace.
    fn source(path: &'static str) -> &'static (Vec<Request>, SynthModel) {
        static CONV: OnceLock<(Vec<Request>, SynthModel)> = OnceLock::new();
        static SYN: OnceLock<(Vec<Request>, SynthModel)> = OnceLock::new();
        let cell = if path == CONVERSATION { &CONV } else { &SYN };
        cell.get_or_init(|| {
            let reqs = read_file(path);
            let model = fit(reqs.iter().cloned(), BT).unwrap();
            (reqs, model)
        })
    }

    fn spec(rate_scale: f64, duration_s: Option<f64>, seed: u64) -> SynthSpec {
        SynthSpec {
            rate_scale,
            duration_s,
            seed,
            block_tokens: BT,
            max_requests: DEFAULT_MAX_REQUESTS,
        }
    }

    fn gen(model: &SynthModel, spec: &SynthSpec) -> Vec<Request> {
        let mut out = Vec::new();
        let n = generate(model, spec, |r| {
            out.push(r);
            Ok::<(), SynthError>(())
        })
        .unwrap();
        assert_eq!(n as usize, out.len());
        out
    }

    struct Stats {
        requests: usize,
        cache_ratio: f64,
        input_p50: u32,
        input_p90: u32,
        output_p50: u32,
    }

    fn quantile(mut v: Vec<u32>, q: f64) -> u32 {
        v.sort_unstable();
        v[((q * v.len() as f64) as usize).min(v.len() - 1)]
    }

    fn stats(reqs: &[Request]) -> Stats {
        let mut seen = FxHashSet::default();
        let (mut hit, mut all) = (0u64, 0u64);
        for r in reqs {
            let k = r.blocks.iter().take_while(|b| seen.contains(&b.0)).count();
            hit += r.hit_tokens(k, BT);
            all += r.input_tokens as u64;
            seen.extend(r.blocks.iter().map(|b| b.0));
        }
        Stats {
            requests: reqs.len(),
            cache_ratio: hit as f64 / all as f64,
            input_p50: quantile(reqs.iter().map(|r| r.input_tokens).collect(), 0.5),
            input_p90: quantile(reqs.iter().map(|r| r.input_tokens).collect(), 0.9),
            output_p50: quantile(reqs.iter().map(|r| r.output_tokens).collect(), 0.5),
        }
    }

    /// Cache ratio ±0.05 absolute; input p50/p90 and output p50 ±15%;
    /// arrival rate ±10% of K × the source's, over the source's span.
    fn check_tolerances(path: &'static str, k: f64, seed: u64) {
        let (src, model) = source(path);
        let span = model.source_span_s;
        let out = gen(model, &spec(k, None, seed));
        let (s, g) = (stats(src), stats(&out));
        let src_rate = s.requests as f64 / span;
        let gen_rate = g.requests as f64 / span;
        let name = Path::new(path).file_name().unwrap().to_string_lossy();
        println!(
            "{name} K={k} seed={seed}: cache ratio {:.3} -> {:.3}; input p50 {} -> {}; input p90 {} -> {}; output p50 {} -> {}; rate {:.3}/s (x{k} = {:.3}) -> {:.3}/s; requests {} -> {}",
            s.cache_ratio, g.cache_ratio, s.input_p50, g.input_p50, s.input_p90, g.input_p90,
            s.output_p50, g.output_p50, src_rate, k * src_rate, gen_rate, s.requests, g.requests
        );
        let rel = |a: u32, b: u32| (a as f64 - b as f64).abs() / b as f64;
        assert!(
            (g.cache_ratio - s.cache_ratio).abs() <= 0.05,
            "{name} K={k}: cache ratio {} vs {}",
            g.cache_ratio,
            s.cache_ratio
        );
        assert!(
            rel(g.input_p50, s.input_p50) <= 0.15,
            "{name} K={k}: input p50 {} vs {}",
            g.input_p50,
            s.input_p50
        );
        assert!(
            rel(g.input_p90, s.input_p90) <= 0.15,
            "{name} K={k}: input p90 {} vs {}",
            g.input_p90,
            s.input_p90
        );
        assert!(
            rel(g.output_p50, s.output_p50) <= 0.15,
            "{name} K={k}: output p50 {} vs {}",
            g.output_p50,
            s.output_p50
        );
        assert!(
            (gen_rate - k * src_rate).abs() <= 0.10 * k * src_rate,
            "{name} K={k}: rate {gen_rate} vs {}",
            k * src_rate
        );
    }

    #[test]
    fn conversation_k1_cache_ratio_005_lengths_15pct_rate_10pct() {
        check_tolerances(CONVERSATION, 1.0, 1);
    }

    #[test]
    fn conversation_k4_cache_ratio_005_lengths_15pct_rate_10pct() {
        check_tolerances(CONVERSATION, 4.0, 1);
    }

    #[test]
    fn synthetic_k1_cache_ratio_005_lengths_15pct_rate_10pct() {
        check_tolerances(SYNTHETIC, 1.0, 1);
    }

    #[test]
    fn synthetic_k4_cache_ratio_005_lengths_15pct_rate_10pct() {
        check_tolerances(SYNTHETIC, 4.0, 1);
    }

    #[test]
    fn fitted_models_describe_the_shipped_traces() {
        let (_, conv) = source(CONVERSATION);
        let (_, syn) = source(SYNTHETIC);
        for m in [conv, syn] {
            println!("{}", serde_json::to_string(m).unwrap());
            assert!(m.hashed);
            let p = m.classes.p_fresh + m.classes.p_continuation + m.classes.p_shared;
            assert!((p - 1.0).abs() < 1e-9);
        }
        // Conversation arrivals come in 3 s batches: very bursty.
        assert!(
            matches!(conv.arrivals.process, ArrivalProcess::Gamma { .. }),
            "{:?}",
            conv.arrivals
        );
        assert!(conv.arrivals.gap_cv > 2.0);
        // The synthetic trace is Poisson by construction.
        assert_eq!(syn.arrivals.process, ArrivalProcess::Poisson);
        assert!(
            (conv.source_cache_ratio - 0.3736).abs() < 0.001,
            "{}",
            conv.source_cache_ratio
        );
        assert!(
            (syn.source_cache_ratio - 0.6512).abs() < 0.001,
            "{}",
            syn.source_cache_ratio
        );
        assert_eq!(conv.source_requests, 12_031);
        assert_eq!(syn.source_requests, 3_993);
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        for path in [CONVERSATION, SYNTHETIC] {
            let (_, model) = source(path);
            let a = gen(model, &spec(2.0, Some(200.0), 7));
            let b = gen(model, &spec(2.0, Some(200.0), 7));
            let c = gen(model, &spec(2.0, Some(200.0), 8));
            assert!(a.len() > 100);
            assert_eq!(a, b);
            assert_ne!(a, c);
            // Byte-identical when written.
            let write = |reqs: &[Request]| {
                let mut w = MooncakeWriter::new(Vec::new());
                for r in reqs {
                    w.write(r).unwrap();
                }
                w.finish().unwrap()
            };
            assert_eq!(write(&a), write(&b));
        }
    }

    #[test]
    fn generated_traces_round_trip_through_the_validating_reader() {
        for path in [CONVERSATION, SYNTHETIC] {
            let (_, model) = source(path);
            let out = gen(model, &spec(4.0, None, 3));
            let mut w = MooncakeWriter::new(Vec::new());
            for r in &out {
                assert!(r.input_tokens >= 1 && r.output_tokens >= 1);
                assert!(r.input_tokens as u64 <= MAX_INPUT_TOKENS);
                assert_eq!(
                    r.blocks.len() as u64,
                    blocks_for_tokens(r.input_tokens as u64, BT)
                );
                w.write(r).unwrap();
            }
            let bytes = w.finish().unwrap();
            let back: Vec<Request> =
                MooncakeReader::new(bytes.as_slice(), Path::new("synth.jsonl"), BT, true)
                    .collect::<Result<_, _>>()
                    .unwrap();
            // Timestamps are written to the nanosecond; all else is exact.
            assert_eq!(back, out);
        }
    }

    #[test]
    fn a_source_without_hashes_gives_fresh_requests_only() {
        let src: Vec<Request> = (0..500u64)
            .map(|i| Request {
                arrival: Nanos(i * 1_000_000_000 + (i % 7) * 100_000_000),
                input_tokens: 100 + (i as u32 * 37) % 3000,
                output_tokens: (i as u32 * 13) % 200, // 0 = failed, in CSV traces
                blocks: Vec::new(),
            })
            .collect();
        let model = fit(src, BT).unwrap();
        assert!(!model.hashed);
        assert_eq!(model.classes.fresh, 500);
        let out = gen(&model, &spec(1.0, None, 1));
        assert!(out.len() > 400);
        let s = stats(&out);
        assert_eq!(s.cache_ratio, 0.0);
        for r in &out {
            assert!(r.output_tokens >= 1);
            assert_eq!(
                r.blocks.len() as u64,
                blocks_for_tokens(r.input_tokens as u64, BT)
            );
        }
    }

    #[test]
    fn continuations_never_outgrow_the_longest_prompt() {
        // Block size 1M tokens keeps near-limit prompts a few blocks long.
        let bt = 1_000_000u32;
        let mut src = Vec::new();
        for s in 0..50u64 {
            let a: Vec<BlockKey> = (0..4).map(|i| BlockKey(s * 100 + i)).collect();
            let mut b = a.clone();
            b.extend((4..9).map(|i| BlockKey(s * 100 + i)));
            src.push(Request {
                arrival: Nanos(s * 2_000_000_000),
                input_tokens: 4_000_000,
                output_tokens: 5,
                blocks: a,
            });
            src.push(Request {
                arrival: Nanos(s * 2_000_000_000 + 1_000_000_000),
                input_tokens: 8_500_000,
                output_tokens: 5,
                blocks: b,
            });
        }
        let model = fit(src, bt).unwrap();
        assert_eq!(model.classes.continuation, 50);
        let spec = SynthSpec {
            rate_scale: 3.0,
            duration_s: None,
            seed: 5,
            block_tokens: bt,
            max_requests: DEFAULT_MAX_REQUESTS,
        };
        let out = gen(&model, &spec);
        assert!(out.len() > 200);
        for r in &out {
            assert!(
                r.input_tokens as u64 <= MAX_INPUT_TOKENS,
                "{}",
                r.input_tokens
            );
            assert_eq!(
                r.blocks.len() as u64,
                blocks_for_tokens(r.input_tokens as u64, bt)
            );
        }
        assert!(
            stats_bt(&out, bt) > 0.1,
            "continuations still reuse their parents"
        );
    }

    fn stats_bt(reqs: &[Request], bt: u32) -> f64 {
        let mut seen = FxHashSet::default();
        let (mut hit, mut all) = (0u64, 0u64);
        for r in reqs {
            let k = r.blocks.iter().take_while(|b| seen.contains(&b.0)).count();
            hit += r.hit_tokens(k, bt);
            all += r.input_tokens as u64;
            seen.extend(r.blocks.iter().map(|b| b.0));
        }
        hit as f64 / all as f64
    }

    #[test]
    fn a_different_generated_block_size_still_gives_valid_requests() {
        let (_, model) = source(SYNTHETIC);
        let spec = SynthSpec {
            rate_scale: 1.0,
            duration_s: Some(120.0),
            seed: 9,
            block_tokens: 256,
            max_requests: DEFAULT_MAX_REQUESTS,
        };
        let out = gen(model, &spec);
        assert!(!out.is_empty());
        for r in &out {
            assert_eq!(
                r.blocks.len() as u64,
                blocks_for_tokens(r.input_tokens as u64, 256)
            );
        }
        assert!(stats_bt(&out, 256) > 0.3);
    }

    #[test]
    fn bad_specs_and_sources_are_explained() {
        let ok = spec(1.0, None, 0);
        assert!(ok.validate().is_ok());
        let e = |s: SynthSpec| s.validate().unwrap_err().to_string();
        assert!(e(spec(0.0, None, 0)).starts_with("rate scale 0 is not a positive finite number"));
        assert!(e(spec(-2.0, None, 0)).starts_with("rate scale -2 is not"));
        assert!(e(spec(f64::NAN, None, 0)).starts_with("rate scale NaN is not"));
        assert!(e(spec(1.0, Some(0.0), 0)).starts_with("duration 0 s is not"));
        assert!(e(spec(1.0, Some(-1.0), 0)).starts_with("duration -1 s is not"));
        assert!(e(spec(1.0, Some(f64::INFINITY), 0)).starts_with("duration inf s is not"));
        assert!(e(SynthSpec {
            block_tokens: 0,
            ..ok.clone()
        })
        .starts_with("block size 0 tokens"));

        assert!(e(spec(1.0, Some(1e300), 0)).starts_with("duration 1e300 s ends beyond"));
        assert!(e(SynthSpec {
            max_requests: 0,
            ..ok.clone()
        })
        .starts_with("a request cap of 0"));

        let (_, model) = source(SYNTHETIC);
        let ge = |s: SynthSpec| {
            generate(model, &s, |_| Ok::<(), SynthError>(()))
                .unwrap_err()
                .to_string()
        };
        assert!(ge(spec(0.0, None, 0)).starts_with("rate scale 0 is not"));
        assert!(stream(model, &spec(0.0, None, 0)).is_err());
        assert!(
            ge(spec(1e-320, None, 0)).starts_with("the model is unusable: the mean gap divided"),
            "{}",
            ge(spec(1e-320, None, 0))
        );
        let huge = ge(spec(1.0, Some(1e9), 0));
        assert!(
            huge.starts_with("about ") && huge.contains("more than the cap of 10000000"),
            "{huge}"
        );
        let capped = SynthSpec {
            max_requests: 10,
            ..spec(1.0, Some(1.0), 0)
        };
        let mean_gap = model.arrivals.mean_gap_s;
        let just_fits = SynthSpec {
            duration_s: Some(mean_gap * 8.0),
            ..capped.clone()
        };
        // Expected 9 requests: allowed; the draw is then held to the cap.
        match generate(model, &just_fits, |_| Ok::<(), SynthError>(())) {
            Ok(n) => assert!(n <= 10),
            Err(e) => assert!(
                e.to_string().starts_with("the draw reached the cap of 10"),
                "{e}"
            ),
        }

        let r = |ms: u64, input: u32, blocks: Vec<u64>| Request {
            arrival: Nanos::from_millis(ms),
            input_tokens: input,
            output_tokens: 1,
            blocks: blocks.into_iter().map(BlockKey).collect(),
        };
        let fe = |reqs: Vec<Request>| fit(reqs, BT).unwrap_err().to_string();
        assert!(fe(vec![]).starts_with("the source trace holds no requests"));
        assert!(fe(vec![r(0, 10, vec![1])]).starts_with("the source trace holds a single request"));
        assert!(fe(vec![r(5, 10, vec![1]), r(5, 10, vec![2])])
            .starts_with("all 2 source requests arrive at the same instant"));
        assert!(fe(vec![r(5, 10, vec![1]), r(4, 10, vec![2])]).starts_with(
            "source request 1 (0-based) arrives at 4 ms, before the previous request's 5 ms"
        ));
        assert!(fe(vec![r(0, 10, vec![1]), r(4, 600, vec![2])]).starts_with("source request 1 (0-based) has 1 block ids but input 600 tokens needs ceil(600 / 512) = 2"));
        assert!(
            fe(vec![r(0, 0, vec![])]).starts_with("source request 0 (0-based) has input 0 tokens")
        );
        assert!(fit(vec![r(0, 10, vec![1])], 0)
            .unwrap_err()
            .to_string()
            .starts_with("block size 0"));
    }

    #[test]
    fn zipf_fit_recovers_a_power_law() {
        let uses = (1..=500u64).map(|r| (10_000.0 * (r as f64).powf(-1.2)).round() as u64);
        let s = fit_zipf(uses);
        assert!((s - 1.2).abs() < 0.05, "{s}");
        assert_eq!(fit_zipf([7u64].into_iter()), 0.0);
        assert_eq!(fit_zipf([3u64, 3, 3].into_iter()), 0.0);
    }

    #[test]
    fn stratified_draws_cover_every_band() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut s = Strata::default();
        let mut bands: Vec<usize> = (0..STRATA)
            .map(|_| (s.next(&mut rng) * STRATA as f64) as usize)
            .collect();
        bands.sort_unstable();
        assert_eq!(bands, (0..STRATA).collect::<Vec<_>>());
    }

    #[test]
    fn random_sources_and_specs_never_panic_and_stay_valid() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        for case in 0..60 {
            let bt = [1u32, 4, 16, 512][case % 4];
            let n = rng.random_range(2..40usize);
            let mut src: Vec<Request> = Vec::new();
            let mut t = 0u64;
            for _ in 0..n {
                t += rng.random_range(0..3_000_000_000u64);
                let input = rng.random_range(1..200u32);
                let blocks = if case % 5 == 0 {
                    Vec::new()
                } else {
                    let want = blocks_for_tokens(input as u64, bt) as usize;
                    // Either extend an earlier request's blocks or draw from a
                    // small alphabet (not prefix-closed on purpose).
                    match src.get(rng.random_range(0..src.len().max(1))) {
                        Some(p) if rng.random_bool(0.5) && !p.blocks.is_empty() => {
                            let keep = rng.random_range(0..=p.blocks.len().min(want));
                            let mut b = p.blocks[..keep].to_vec();
                            b.extend(
                                (b.len()..want).map(|_| BlockKey(rng.random_range(0..1_000_000))),
                            );
                            b
                        }
                        _ => (0..want)
                            .map(|_| BlockKey(rng.random_range(0..30)))
                            .collect(),
                    }
                };
                src.push(Request {
                    arrival: Nanos(t),
                    input_tokens: input,
                    output_tokens: rng.random_range(0..50),
                    blocks,
                });
            }
            let Ok(model) = fit(src, bt) else {
                continue; // zero span
            };
            let spec = SynthSpec {
                rate_scale: [0.5, 1.0, 7.0][case % 3],
                duration_s: [None, Some(30.0)][case % 2],
                max_requests: DEFAULT_MAX_REQUESTS,
                seed: case as u64,
                block_tokens: [bt, 8][case % 2],
            };
            for r in stream(&model, &spec).unwrap() {
                assert!(r.input_tokens >= 1 && r.output_tokens >= 1);
                assert_eq!(
                    r.blocks.len() as u64,
                    blocks_for_tokens(r.input_tokens as u64, spec.block_tokens)
                );
            }
        }
    }
}
