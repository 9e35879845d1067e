//! Model arithmetic from the paper's Table 1 that policies may need without a
//! full cost model: KV bytes per token and the prefill FLOPs of Eq. 1.
//!
//! The cluster simulator's `CostModel` builds on these definitions.

use serde::{Deserialize, Serialize};

/// The dense-transformer shape Eq. 1 needs (Table 1 notation).
#[derive(Copy, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// `l`: number of layers.
    pub layers: u32,
    /// `d`: model (hidden) dimension.
    pub hidden: u32,
    /// `gqa`: query heads per KV head.
    pub gqa: u32,
    /// `s`: bytes per element of the KV cache.
    pub element_bytes: u32,
    /// `a`, `b`: the attention and linear-layer constants of Eq. 1.
    pub a: f64,
    pub b: f64,
}

impl ModelShape {
    /// LLaMA3-70B exactly as Table 1: l = 80, d = 8192, gqa = 8, s = 2 B,
    /// a = 4, b = 22.
    pub const LLAMA3_70B: ModelShape = ModelShape {
        layers: 80,
        hidden: 8192,
        gqa: 8,
        element_bytes: 2,
        a: 4.0,
        b: 22.0,
    };

    /// KV bytes per token = 2 × l × (d / gqa) × s (320 KiB for LLaMA3-70B).
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * self.layers as u64 * (self.hidden / self.gqa) as u64 * self.element_bytes as u64
    }

    /// Eq. 1: flops(n) = l × (a·n²·d + b·n·d²).
    pub fn prefill_flops(&self, n: u64) -> f64 {
        let (n, d) = (n as f64, self.hidden as f64);
        self.layers as f64 * (self.a * n * n * d + self.b * n * d * d)
    }

    /// FLOPs to recompute tokens `[start, end)` of a prompt given the KV of
    /// `[0, start)`: flops(end) − flops(start). Deeper blocks cost more
    /// because attention is quadratic in the context.
    pub fn recompute_flops(&self, start: u64, end: u64) -> f64 {
        self.prefill_flops(end) - self.prefill_flops(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_70b_kv_is_320_kib_per_token() {
        assert_eq!(ModelShape::LLAMA3_70B.kv_bytes_per_token(), 320 * 1024);
    }

    #[test]
    fn eq1_by_hand() {
        let m = ModelShape::LLAMA3_70B;
        // n = 1: 80 × (4·8192 + 22·8192²)
        let expect = 80.0 * (4.0 * 8192.0 + 22.0 * 8192.0 * 8192.0);
        assert_eq!(m.prefill_flops(1), expect);
        assert!(m.recompute_flops(512, 1024) > m.recompute_flops(0, 512));
        assert_eq!(m.recompute_flops(0, 512), m.prefill_flops(512));
    }
}
