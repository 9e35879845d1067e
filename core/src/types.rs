//! The plain domain types every crate shares: virtual or wall time
//! ([`Nanos`]), block keys ([`BlockKey`]), serving instances
//! ([`InstanceId`]) and a trace request ([`Request`]).

use serde::{Deserialize, Serialize};

/// A count of nanoseconds, used for both instants and durations.
///
/// As an instant it is measured from one epoch per run: in the simulator,
/// time zero of the trace (a request's `arrival` is its trace timestamp);
/// on the real backend, the start of the master's monotonic clock, which
/// every process of a cluster receives from the master. A duration is the
/// difference of two instants of the same run (`saturating_sub`), never an
/// instant of its own. Policies receive time, never read it.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);
    pub const MAX: Nanos = Nanos(u64::MAX);

    pub const fn from_millis(ms: u64) -> Nanos {
        Nanos(ms.saturating_mul(1_000_000))
    }
    pub const fn from_secs(s: u64) -> Nanos {
        Nanos(s.saturating_mul(1_000_000_000))
    }
    /// Whole milliseconds, rounded to the nearest.
    pub const fn as_millis_rounded(self) -> u64 {
        self.0.saturating_add(500_000) / 1_000_000
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    pub const fn saturating_add(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(other.0))
    }
    pub const fn saturating_sub(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_sub(other.0))
    }
}

/// The key of one KV block. In Mooncake traces it is the block's `hash_id`:
/// it hashes the block together with every block before it, so two requests
/// share block `i` only if they share the whole prefix up to block `i`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockKey(pub u64);

/// An instance (one serving node) of the cluster.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId(pub u32);

/// One request of a trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Arrival time since the start of the trace.
    pub arrival: Nanos,
    /// Prompt length in tokens (> 0).
    pub input_tokens: u32,
    /// Generated tokens (> 0 in Mooncake traces; may be 0 in CSV traces,
    /// where it marks a failed request).
    pub output_tokens: u32,
    /// Prefix-chained block keys, one per `block_tokens` of the prompt (the
    /// last block may be partial). Empty for formats that carry no hashes
    /// (Azure, BurstGPT).
    pub blocks: Vec<BlockKey>,
}

impl Request {
    /// Tokens held by block `index` of this request: `block_tokens`, except a
    /// partial last block.
    pub fn block_tokens_at(&self, index: usize, block_tokens: u32) -> u32 {
        let start = index as u64 * block_tokens as u64;
        let end = ((index as u64 + 1) * block_tokens as u64).min(self.input_tokens as u64);
        end.saturating_sub(start) as u32
    }

    /// Prefix-hit tokens when the first `hit_blocks` blocks are cached:
    /// `min(hit_blocks × block_tokens, input_tokens)`.
    pub fn hit_tokens(&self, hit_blocks: usize, block_tokens: u32) -> u64 {
        (hit_blocks as u64 * block_tokens as u64).min(self.input_tokens as u64)
    }

    /// Prefix tokens a prefill can skip when the first `prefix_blocks`
    /// blocks are cached: `min(prefix_blocks × block_tokens, input − 1)`.
    /// At least one token is always computed, since the first output token
    /// comes from the last prompt token's forward pass.
    pub fn reusable_tokens(&self, prefix_blocks: usize, block_tokens: u32) -> u64 {
        (prefix_blocks as u64 * block_tokens as u64)
            .min((self.input_tokens as u64).saturating_sub(1))
    }
}

/// `ceil(input_tokens / block_tokens)`: the number of blocks a prompt needs.
pub const fn blocks_for_tokens(input_tokens: u64, block_tokens: u32) -> u64 {
    input_tokens.div_ceil(block_tokens as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(input: u32, n: u64) -> Request {
        Request {
            arrival: Nanos::ZERO,
            input_tokens: input,
            output_tokens: 1,
            blocks: (0..n).map(BlockKey).collect(),
        }
    }

    #[test]
    fn partial_last_block_and_hit_tokens() {
        let r = req(1100, 3);
        assert_eq!(r.block_tokens_at(0, 512), 512);
        assert_eq!(r.block_tokens_at(2, 512), 76);
        assert_eq!(r.hit_tokens(2, 512), 1024);
        assert_eq!(r.hit_tokens(3, 512), 1100);
        assert_eq!(blocks_for_tokens(1100, 512), 3);
        assert_eq!(blocks_for_tokens(1024, 512), 2);
    }

    #[test]
    fn millis_round_trip() {
        assert_eq!(Nanos::from_millis(27482).as_millis_rounded(), 27482);
        assert_eq!(Nanos(1_499_999).as_millis_rounded(), 1);
        assert_eq!(Nanos(1_500_000).as_millis_rounded(), 2);
    }
}
