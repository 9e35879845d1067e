//! Lease and soft-pin policies: how long a read protects a block from
//! eviction, and which blocks are hot enough to be soft-pinned. The
//! [`crate::cache::BlockCache`] enforces both; the policy only decides.
//!
//! [`MooncakeLeases`] follows Mooncake Store's semantics (upstream
//! `mooncake-store/include/types.h`): every read grants a lease (default
//! 10 s) during which the object cannot be evicted; a soft pin (default
//! 30 min) keeps an object until nothing else can be evicted. Upstream,
//! clients ask for soft pins explicitly; here a block is soft-pinned once it
//! has been read `hot_after_reads` times (0 = never), which is how a
//! simulation marks hot prefixes without a client to ask.

use crate::types::{BlockKey, Nanos};

pub trait LeasePolicy: Send {
    fn name(&self) -> &'static str;
    /// Expiry of the lease that a read of `key` at `now` grants (`None`: no lease).
    fn lease_on_read(&self, key: BlockKey, now: Nanos) -> Option<Nanos>;
    /// Expiry of a soft pin for `key` after its `reads`-th read (`None`: no pin).
    fn soft_pin(&self, key: BlockKey, reads: u64, now: Nanos) -> Option<Nanos>;
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MooncakeLeases {
    pub lease: Nanos,
    pub soft_pin: Nanos,
    pub hot_after_reads: u64,
}

impl Default for MooncakeLeases {
    fn default() -> Self {
        MooncakeLeases {
            lease: Nanos::from_secs(10),
            soft_pin: Nanos::from_secs(30 * 60),
            hot_after_reads: 0,
        }
    }
}

impl LeasePolicy for MooncakeLeases {
    fn name(&self) -> &'static str {
        "mooncake"
    }
    fn lease_on_read(&self, _key: BlockKey, now: Nanos) -> Option<Nanos> {
        (self.lease > Nanos::ZERO).then(|| now.saturating_add(self.lease))
    }
    fn soft_pin(&self, _key: BlockKey, reads: u64, now: Nanos) -> Option<Nanos> {
        (self.hot_after_reads > 0 && reads >= self.hot_after_reads && self.soft_pin > Nanos::ZERO)
            .then(|| now.saturating_add(self.soft_pin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_defaults_and_hot_threshold() {
        let p = MooncakeLeases::default();
        assert_eq!(
            p.lease_on_read(BlockKey(1), Nanos::from_secs(5)),
            Some(Nanos::from_secs(15))
        );
        assert_eq!(
            p.soft_pin(BlockKey(1), 1000, Nanos::ZERO),
            None,
            "soft pins off by default"
        );
        let hot = MooncakeLeases {
            hot_after_reads: 3,
            ..p
        };
        assert_eq!(hot.soft_pin(BlockKey(1), 2, Nanos::ZERO), None);
        assert_eq!(
            hot.soft_pin(BlockKey(1), 3, Nanos::ZERO),
            Some(Nanos::from_secs(1800))
        );
        let none = MooncakeLeases {
            lease: Nanos::ZERO,
            ..p
        };
        assert_eq!(none.lease_on_read(BlockKey(1), Nanos::ZERO), None);
    }
}
