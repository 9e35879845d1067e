//! Carrying out a placement, the same for the simulator and the real
//! backend: a scheduler's [`crate::sched::Placement`] is a decision taken on
//! a view of the cluster; this module turns it into what the request holds.
//!
//! - [`plan_fetch`] re-checks the remote prefix against the pool now, reads
//!   it at the source (a lease, by the lease policy) and pins it there for
//!   the transfer, and sizes the transfer from the objects' bytes;
//! - [`finish_fetch`] releases exactly the source pins the plan took and
//!   writes the replicas into the target segment, pinned for the request;
//! - [`KvBudget`] reserves a decode instance's KV memory for the request and
//!   gives it back through the [`KvReservation`] handle;
//! - [`Hold`] is what a request holds in one segment; releasing it releases
//!   exactly those pins.
//!
//! Every resource is released through the handle that took it, never by
//! searching for its holder.

use crate::eviction::AccessFacts;
use crate::lease::LeasePolicy;
use crate::sched::PrefixFetch;
use crate::store::{LeaseToken, Pin, Pool, SegmentId};
use crate::types::{Nanos, Request};

/// KV memory of a decode instance, in tokens, and what requests reserved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvBudget {
    capacity_tokens: u64,
    reserved_tokens: u64,
    reservations: u64,
}

/// KV tokens reserved on a decode instance for one request.
#[must_use = "a KV reservation is released with KvBudget::release"]
#[derive(Debug, PartialEq, Eq)]
pub struct KvReservation {
    tokens: u64,
}

impl KvReservation {
    pub fn tokens(&self) -> u64 {
        self.tokens
    }
}

impl KvBudget {
    pub fn new(capacity_tokens: u64) -> KvBudget {
        KvBudget {
            capacity_tokens,
            reserved_tokens: 0,
            reservations: 0,
        }
    }
    pub fn capacity_tokens(&self) -> u64 {
        self.capacity_tokens
    }
    pub fn reserved_tokens(&self) -> u64 {
        self.reserved_tokens
    }
    /// Reservations not yet released.
    pub fn reservations(&self) -> u64 {
        self.reservations
    }
    /// Tokens not reserved (0 when over-reserved).
    pub fn free_tokens(&self) -> u64 {
        self.capacity_tokens.saturating_sub(self.reserved_tokens)
    }
    /// Reserves `tokens` (a request's prompt and all its output). Never
    /// refused: a decode instance admits a request to its batch only when
    /// its KV fits, so an over-reserved instance queues instead.
    pub fn reserve(&mut self, tokens: u64) -> KvReservation {
        self.reserved_tokens += tokens;
        self.reservations += 1;
        KvReservation { tokens }
    }
    pub fn release(&mut self, r: KvReservation) {
        debug_assert!(self.reserved_tokens >= r.tokens && self.reservations > 0);
        self.reserved_tokens -= r.tokens;
        self.reservations -= 1;
    }
}

/// Pins a request holds in one segment.
#[must_use = "a hold keeps its objects pinned until released"]
#[derive(Debug, Default)]
pub struct Hold {
    segment: Option<SegmentId>,
    pins: Vec<Pin>,
}

impl Hold {
    pub fn new(segment: SegmentId) -> Hold {
        Hold {
            segment: Some(segment),
            pins: Vec::new(),
        }
    }
    pub fn push(&mut self, pin: Pin) {
        self.pins.push(pin);
    }
    pub fn len(&self) -> usize {
        self.pins.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
    /// Releases every pin, in the order they were taken.
    pub fn release(self, pool: &mut Pool, now: Nanos) {
        if let Some(seg) = self.segment {
            let s = pool.segment_mut(seg);
            for pin in self.pins {
                let ok = s.unpin(pin, now);
                debug_assert!(ok, "a pin outlived its object");
            }
        }
    }
}

/// A prefix transfer in flight: what crosses the network and what it holds.
#[derive(Debug)]
pub struct FetchPlan {
    pub source: SegmentId,
    pub target: SegmentId,
    /// Prefix blocks the request finds on its prefill node once the fetch
    /// is done.
    pub blocks: usize,
    /// The first block that crosses the network: the target's own prefix
    /// ends there.
    pub first: usize,
    /// Bytes that cross the network (the objects' sizes at the source).
    pub bytes: u64,
    /// Bytes of each prefix block's object at the source, `[0, blocks)`.
    sizes: Vec<u64>,
    /// The reads' leases at the source.
    pub leases: Vec<LeaseToken>,
    source_hold: Hold,
}

impl FetchPlan {
    /// Pins the plan holds at the source.
    pub fn source_pins(&self) -> usize {
        self.source_hold.len()
    }
}

/// Re-checks a scheduler's `fetch` for `req` against the pool at `now`: the
/// blocks the source still holds beyond the target segment's own prefix
/// cross the network. The source reads every block of the prefix (a lease,
/// by `leases`) and pins it until [`finish_fetch`]. `None` if the source no
/// longer holds more than the target.
pub fn plan_fetch(
    pool: &mut Pool,
    req: &Request,
    fetch: PrefixFetch,
    target: SegmentId,
    leases: &dyn LeasePolicy,
    now: Nanos,
) -> Option<FetchPlan> {
    let first = pool.segment(target).prefix_len(&req.blocks);
    let blocks = fetch
        .blocks
        .min(pool.segment(fetch.from).prefix_len(&req.blocks));
    if blocks <= first || fetch.from == target {
        return None;
    }
    let src = pool.segment_mut(fetch.from);
    let mut hold = Hold::new(fetch.from);
    let mut tokens = Vec::with_capacity(blocks);
    let mut sizes = Vec::with_capacity(blocks);
    for k in &req.blocks[..blocks] {
        // Held since the prefix check above: present, so read and pinned.
        tokens.extend(src.read(*k, now, leases));
        hold.pins.extend(src.pin(*k));
        sizes.push(src.object_bytes(*k).unwrap_or(0));
    }
    Some(FetchPlan {
        source: fetch.from,
        target,
        blocks,
        first,
        bytes: sizes[first..].iter().sum(),
        sizes,
        leases: tokens,
        source_hold: hold,
    })
}

/// Ends the fetch `plan` for `req` (the trace's `request`-th request): the
/// source pins are released, and the prefix's blocks are written into the
/// target segment (tail first, as a request's blocks always are) and pinned
/// there for the request until its prefill is done.
pub fn finish_fetch(
    pool: &mut Pool,
    plan: FetchPlan,
    req: &Request,
    request: usize,
    facts: &mut AccessFacts<'_>,
    now: Nanos,
) -> Hold {
    plan.source_hold.release(pool, now);
    let tgt = pool.segment_mut(plan.target);
    let mut hold = Hold::new(plan.target);
    for j in (0..plan.blocks).rev() {
        let key = req.blocks[j];
        tgt.access(key, plan.sizes[j], &facts.block(now, request, req, j));
        hold.pins.extend(tgt.pin(key));
    }
    // Released head first, as they were read.
    hold.pins.reverse();
    hold
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{AnalyticCost, ModelSpec, NodeSpec};
    use crate::eviction::{Access, PolicyKind};
    use crate::lease::MooncakeLeases;
    use crate::store::{Segment, SegmentConfig, SegmentInfo, Tier};
    use crate::types::{BlockKey, InstanceId};

    fn pool_of(n: u32) -> Pool {
        let mut pool = Pool::new();
        for i in 0..n {
            pool.add(
                Segment::new(
                    PolicyKind::Lru.build(None),
                    SegmentConfig::exact(Some(1000)),
                ),
                SegmentInfo {
                    owner: Some(InstanceId(i)),
                    tier: Tier::Dram,
                    shared: true,
                },
            );
        }
        pool
    }

    #[test]
    fn a_fetch_pins_exactly_its_source_and_releases_exactly_that() {
        // Three segments hold the same prefix; the fetch reads from the
        // third. After it, no segment holds a pin except the target's,
        // which the request releases at the end of its prefill.
        let mut pool = pool_of(4);
        let req = Request {
            arrival: Nanos::ZERO,
            input_tokens: 2048,
            output_tokens: 2,
            blocks: (0..4).map(BlockKey).collect(),
        };
        for s in 0..3 {
            for k in &req.blocks {
                pool.segment_mut(SegmentId(s))
                    .access(*k, 10, &Access::at(Nanos::ZERO));
            }
        }
        // The target already holds block 0.
        pool.segment_mut(SegmentId(3))
            .access(BlockKey(0), 10, &Access::at(Nanos::ZERO));
        let leases = MooncakeLeases::default();
        let fetch = PrefixFetch {
            from: SegmentId(2),
            blocks: 4,
        };
        let plan = plan_fetch(&mut pool, &req, fetch, SegmentId(3), &leases, Nanos(5)).unwrap();
        assert_eq!((plan.first, plan.blocks, plan.bytes), (1, 4, 30));
        assert_eq!(pool.segment(SegmentId(2)).held().pins, 4);
        assert_eq!(pool.segment(SegmentId(0)).held().pins, 0);
        let token = plan.leases[3];
        assert!(pool.segment(SegmentId(2)).lease_valid(&token, Nanos(5)));
        assert!(!pool
            .segment(SegmentId(2))
            .lease_valid(&token, Nanos::from_secs(11)));
        let cost = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        let mut facts = AccessFacts::new(PolicyKind::Lru, 512, Box::new(cost), None, "").unwrap();
        let hold = finish_fetch(&mut pool, plan, &req, 0, &mut facts, Nanos(9));
        for s in 0..3 {
            assert_eq!(pool.segment(SegmentId(s)).held().pins, 0, "segment {s}");
        }
        assert_eq!(pool.segment(SegmentId(3)).held().pins, 4);
        assert_eq!(pool.segment(SegmentId(3)).prefix_len(&req.blocks), 4);
        hold.release(&mut pool, Nanos(10));
        assert_eq!(pool.segment(SegmentId(3)).held().pins, 0);
        // Nothing to fetch when the target already has the prefix.
        assert!(plan_fetch(&mut pool, &req, fetch, SegmentId(3), &leases, Nanos(11)).is_none());
    }

    #[test]
    fn kv_budget_returns_to_zero() {
        let mut b = KvBudget::new(100);
        let r1 = b.reserve(60);
        let r2 = b.reserve(60);
        assert_eq!(
            (b.reserved_tokens(), b.free_tokens(), b.reservations()),
            (120, 0, 2)
        );
        b.release(r1);
        b.release(r2);
        assert_eq!((b.reserved_tokens(), b.reservations()), (0, 0));
    }
}
