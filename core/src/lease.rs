//! Lease and soft-pin policies: how long a read protects an object from
//! eviction, and which objects are hot enough to be soft-pinned. The
//! [`crate::store::Segment`] enforces both on its read path
//! ([`crate::store::Segment::read`]); the policy only decides. Policies are
//! chosen by name ([`LeaseKind`]) like the eviction policies, and used as
//! trait objects.
//!
//! [`MooncakeLeases`] follows Mooncake Store (upstream
//! `mooncake-store/include/types.h`): every read grants a lease (default
//! 10 s) during which the object cannot be evicted; a soft pin (default
//! 30 min) keeps an object out of the first eviction pass. Upstream, a
//! client asks for a soft pin when it writes; here a block is soft-pinned
//! when its read count in its segment reaches `hot_after_reads` (0 = never),
//! which is how a simulation marks hot prefixes without a client to ask.
//! As upstream since its fixed soft-pin lifecycle (PR #2909), the pin lasts
//! its fixed time from then: later reads neither extend it nor, once it has
//! run out, bring it back.

use crate::types::{BlockKey, Nanos};
use std::fmt;

pub trait LeasePolicy: Send + Sync {
    fn name(&self) -> &'static str;
    /// Expiry of the lease that a read of `key` at `now` grants (`None`: no lease).
    fn lease_on_read(&self, key: BlockKey, now: Nanos) -> Option<Nanos>;
    /// Expiry of a soft pin that `key`'s `reads`-th read starts (`None`:
    /// none). A store applies it only to an object not soft-pinned yet.
    fn soft_pin(&self, key: BlockKey, reads: u64, now: Nanos) -> Option<Nanos>;
}

/// The lease policies moonlab ships, by configuration name.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LeaseKind {
    /// Mooncake Store's leases and soft pins ([`MooncakeLeases`]).
    Mooncake,
    /// No leases and no soft pins: reads protect nothing.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown lease policy `{name}` (expected one of: mooncake, none)")]
pub struct UnknownLeasePolicy {
    pub name: String,
}

/// The parameters of the lease policies.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LeaseParams {
    pub lease: Nanos,
    pub soft_pin: Nanos,
    pub hot_after_reads: u64,
}

impl Default for LeaseParams {
    fn default() -> Self {
        LeaseParams {
            lease: Nanos::from_secs(10),
            soft_pin: Nanos::from_secs(30 * 60),
            hot_after_reads: 0,
        }
    }
}

impl LeaseKind {
    pub const ALL: [LeaseKind; 2] = [LeaseKind::Mooncake, LeaseKind::None];

    pub fn name(self) -> &'static str {
        match self {
            LeaseKind::Mooncake => "mooncake",
            LeaseKind::None => "none",
        }
    }

    pub fn parse(name: &str) -> Result<LeaseKind, UnknownLeasePolicy> {
        let n = name.trim().to_ascii_lowercase();
        LeaseKind::ALL
            .into_iter()
            .find(|k| k.name() == n)
            .ok_or_else(|| UnknownLeasePolicy {
                name: name.to_string(),
            })
    }

    pub fn build(self, params: LeaseParams) -> Box<dyn LeasePolicy> {
        match self {
            LeaseKind::Mooncake => Box::new(MooncakeLeases {
                lease: params.lease,
                soft_pin: params.soft_pin,
                hot_after_reads: params.hot_after_reads,
            }),
            LeaseKind::None => Box::new(NoLeases),
        }
    }
}

impl fmt::Display for LeaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MooncakeLeases {
    pub lease: Nanos,
    pub soft_pin: Nanos,
    pub hot_after_reads: u64,
}

impl Default for MooncakeLeases {
    fn default() -> Self {
        let p = LeaseParams::default();
        MooncakeLeases {
            lease: p.lease,
            soft_pin: p.soft_pin,
            hot_after_reads: p.hot_after_reads,
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
        // Once, when the object becomes hot: reads do not renew a pin.
        (self.hot_after_reads > 0 && reads == self.hot_after_reads && self.soft_pin > Nanos::ZERO)
            .then(|| now.saturating_add(self.soft_pin))
    }
}

/// Reads grant nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NoLeases;

impl LeasePolicy for NoLeases {
    fn name(&self) -> &'static str {
        "none"
    }
    fn lease_on_read(&self, _key: BlockKey, _now: Nanos) -> Option<Nanos> {
        None
    }
    fn soft_pin(&self, _key: BlockKey, _reads: u64, _now: Nanos) -> Option<Nanos> {
        None
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
        assert_eq!(
            hot.soft_pin(BlockKey(1), 4, Nanos::from_secs(5)),
            None,
            "a later read does not renew the pin"
        );
        let none = MooncakeLeases {
            lease: Nanos::ZERO,
            ..p
        };
        assert_eq!(none.lease_on_read(BlockKey(1), Nanos::ZERO), None);
    }

    #[test]
    fn chosen_by_name() {
        for k in LeaseKind::ALL {
            assert_eq!(LeaseKind::parse(k.name()), Ok(k));
            assert_eq!(k.build(LeaseParams::default()).name(), k.name());
        }
        let e = LeaseKind::parse("forever").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown lease policy `forever` (expected one of: mooncake, none)"
        );
        let none = LeaseKind::None.build(LeaseParams::default());
        assert_eq!(none.lease_on_read(BlockKey(1), Nanos::ZERO), None);
    }
}
