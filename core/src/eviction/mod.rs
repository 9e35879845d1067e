//! Block-granular eviction: the [`EvictionPolicy`] trait, the [`Access`] facts
//! a policy may rank by, and the catalogue of policies ([`PolicyKind`]).
//!
//! Division of labour: the [`crate::store::Segment`] owns the objects, maps
//! keys to dense [`Slot`]s and decides which may go (committed, not in use,
//! not leased, not soft-pinned). A policy only ranks the slots it was told
//! are evictable, so it never scans past pinned entries, and it never reads
//! a clock: time arrives in [`Access::now`] and in the `now` arguments. The
//! facts in an [`Access`] are built by [`facts::AccessFacts`], the same for
//! every caller.
//!
//! Contract every policy keeps (checked by `tests` below for all of them):
//! - `on_insert(slot, ..)`: the slot now holds a new block, resident and
//!   evictable.
//! - `on_hit(slot, ..)`: a resident block was accessed. It may be
//!   unevictable at the time: the policy updates its statistics; position
//!   changes take effect once the block is evictable again.
//! - `on_unevictable(slot)` / `on_evictable(slot, now)`: the block left or
//!   re-entered the candidate set; per-block statistics survive the trip.
//! - `on_remove(slot)`: the block left the cache other than through `evict`
//!   (either state); the slot may be reused afterwards.
//! - `evict(now)`: choose one evictable block, forget it and return its slot;
//!   `None` when nothing is evictable.

mod arc;
mod belady;
pub mod facts;
mod fifo;
mod gdsf;
mod heap;
mod lfu;
pub(crate) mod list;
mod lru;
mod prefix_aware;
mod s3fifo;
mod sieve;
mod slots;

pub use arc::Arc;
pub use belady::Belady;
pub use facts::{AccessFacts, NeedsFuture, TraceIndex};
pub use fifo::Fifo;
pub use gdsf::Gdsf;
pub use lfu::Lfu;
pub use lru::Lru;
pub use prefix_aware::PrefixAware;
pub use s3fifo::S3Fifo;
pub use sieve::Sieve;

use crate::types::{BlockKey, Nanos};
use std::fmt;

/// Dense handle of a resident block, assigned by the cache. Slots are reused
/// after a block leaves, so policies index per-block state by slot.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u32);

/// What is known about one access to a block.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Access {
    /// Time of the access (virtual or wall, since the start of the run).
    pub now: Nanos,
    /// Tokens the block holds (`block_tokens`, or fewer for a partial last block).
    pub tokens: u32,
    /// Position of the block in its prefix chain (0 = first block).
    pub depth: u32,
    /// Cost of recomputing the block if it is lost: the seconds the cost
    /// model needs to prefill its tokens given its prefix
    /// ([`crate::cost::CostModel::recompute_seconds`]).
    pub cost: f64,
    /// Oracle only: the logical time of the next access to this block
    /// (`u64::MAX` = never). Filled in for policies whose
    /// [`EvictionPolicy::needs_future`] is true; 0 otherwise.
    pub next_use: u64,
}

impl Access {
    /// An access that carries only a time (unit size, unit cost).
    pub fn at(now: Nanos) -> Access {
        Access {
            now,
            tokens: 1,
            depth: 0,
            cost: 1.0,
            next_use: 0,
        }
    }
}

/// A block eviction policy. See the module documentation for the contract.
pub trait EvictionPolicy: Send {
    /// The policy's name, as on the command line.
    fn name(&self) -> &'static str;
    /// True if the policy needs [`Access::next_use`] (offline policies).
    fn needs_future(&self) -> bool {
        false
    }
    fn on_insert(&mut self, slot: Slot, key: BlockKey, access: &Access);
    fn on_hit(&mut self, slot: Slot, access: &Access);
    fn on_unevictable(&mut self, slot: Slot);
    fn on_evictable(&mut self, slot: Slot, now: Nanos);
    fn on_remove(&mut self, slot: Slot);
    fn evict(&mut self, now: Nanos) -> Option<Slot>;
}

impl<P: EvictionPolicy + ?Sized> EvictionPolicy for Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn needs_future(&self) -> bool {
        (**self).needs_future()
    }
    #[inline]
    fn on_insert(&mut self, slot: Slot, key: BlockKey, access: &Access) {
        (**self).on_insert(slot, key, access)
    }
    #[inline]
    fn on_hit(&mut self, slot: Slot, access: &Access) {
        (**self).on_hit(slot, access)
    }
    fn on_unevictable(&mut self, slot: Slot) {
        (**self).on_unevictable(slot)
    }
    fn on_evictable(&mut self, slot: Slot, now: Nanos) {
        (**self).on_evictable(slot, now)
    }
    fn on_remove(&mut self, slot: Slot) {
        (**self).on_remove(slot)
    }
    #[inline]
    fn evict(&mut self, now: Nanos) -> Option<Slot> {
        (**self).evict(now)
    }
}

/// Every policy moonlab ships, by command-line name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PolicyKind {
    Lru,
    Fifo,
    Lfu,
    Sieve,
    S3Fifo,
    Arc,
    Gdsf,
    PrefixAware,
    Belady,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown eviction policy `{name}` (expected one of: {}, or `all`)", PolicyKind::names().join(", "))]
pub struct UnknownPolicy {
    pub name: String,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 9] = [
        PolicyKind::Lru,
        PolicyKind::Fifo,
        PolicyKind::Lfu,
        PolicyKind::Sieve,
        PolicyKind::S3Fifo,
        PolicyKind::Arc,
        PolicyKind::Gdsf,
        PolicyKind::PrefixAware,
        PolicyKind::Belady,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Lru => "lru",
            PolicyKind::Fifo => "fifo",
            PolicyKind::Lfu => "lfu",
            PolicyKind::Sieve => "sieve",
            PolicyKind::S3Fifo => "s3fifo",
            PolicyKind::Arc => "arc",
            PolicyKind::Gdsf => "gdsf",
            PolicyKind::PrefixAware => "prefix",
            PolicyKind::Belady => "belady",
        }
    }

    /// True for offline policies, which need each block's next use.
    pub fn needs_future(self) -> bool {
        self == PolicyKind::Belady
    }

    pub fn names() -> Vec<&'static str> {
        PolicyKind::ALL.iter().map(|p| p.name()).collect()
    }

    pub fn parse(name: &str) -> Result<PolicyKind, UnknownPolicy> {
        let n = name.trim().to_ascii_lowercase();
        let n = match n.as_str() {
            "s3-fifo" => "s3fifo",
            "prefix-aware" => "prefix",
            "opt" | "min" => "belady",
            other => other,
        };
        PolicyKind::ALL
            .iter()
            .copied()
            .find(|p| p.name() == n)
            .ok_or_else(|| UnknownPolicy {
                name: name.to_string(),
            })
    }

    /// Parses `lru,s3fifo,...` or `all`; keeps the order given, drops repeats.
    pub fn parse_list(text: &str) -> Result<Vec<PolicyKind>, UnknownPolicy> {
        let mut out = Vec::new();
        for part in text.split(',') {
            if part.trim().eq_ignore_ascii_case("all") {
                for p in PolicyKind::ALL {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
                continue;
            }
            let p = PolicyKind::parse(part)?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// A fresh policy for a cache of `capacity_blocks` (`None` = unbounded).
    pub fn build(self, capacity_blocks: Option<u64>) -> Box<dyn EvictionPolicy> {
        let cap = capacity_blocks.unwrap_or(u64::MAX);
        match self {
            PolicyKind::Lru => Box::new(Lru::new()),
            PolicyKind::Fifo => Box::new(Fifo::new()),
            PolicyKind::Lfu => Box::new(Lfu::new()),
            PolicyKind::Sieve => Box::new(Sieve::new()),
            PolicyKind::S3Fifo => Box::new(S3Fifo::new(cap)),
            PolicyKind::Arc => Box::new(Arc::new(cap)),
            PolicyKind::Gdsf => Box::new(Gdsf::new()),
            PolicyKind::PrefixAware => Box::new(PrefixAware::new()),
            PolicyKind::Belady => Box::new(Belady::new()),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PolicyKind::parse(s)
    }
}

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases() {
        for p in PolicyKind::ALL {
            assert_eq!(PolicyKind::parse(p.name()), Ok(p));
        }
        assert_eq!(PolicyKind::parse("S3-FIFO"), Ok(PolicyKind::S3Fifo));
        assert_eq!(PolicyKind::parse_list("all").unwrap().len(), 9);
        assert_eq!(
            PolicyKind::parse_list("lru,fifo,lru").unwrap(),
            vec![PolicyKind::Lru, PolicyKind::Fifo]
        );
        let e = PolicyKind::parse_list("lru,nope").unwrap_err();
        assert_eq!(e.name, "nope");
        assert!(e.to_string().contains("s3fifo"));
    }

    #[test]
    fn every_policy_keeps_the_contract() {
        for p in PolicyKind::ALL {
            testkit::check_contract(p);
        }
    }
}
