//! Carrying out a placement, the same for the simulator and the real
//! backend: a scheduler's [`crate::sched::Placement`] is a decision taken on
//! a view of the cluster; this module turns it into what the request holds.
//!
//! - [`plan_fetch`] re-checks the remote prefix against the pool now,
//!   reserves the replicas' space on the target (a two-phase put: PutStart
//!   now, PutEnd when the bytes have arrived; a block the target cannot make
//!   room for ends the fetch there), reads the prefix at the source (a
//!   lease, by the lease policy) and pins it there for the transfer, pins
//!   the target's own part of the prefix so the transfer is not wasted, and
//!   sizes the transfer from the objects' bytes;
//! - [`finish_fetch`] releases exactly the source pins the plan took and
//!   commits the replicas into the target segment, pinned for the request;
//! - [`KvBudget`] reserves a decode instance's KV memory for the request and
//!   gives it back through the [`KvReservation`] handle;
//! - [`Hold`] is what a request holds in one segment; releasing it releases
//!   exactly those pins;
//! - [`carry_out`] does all of it for one placement.
//!
//! Every resource is released through the handle that took it, never by
//! searching for its holder.

use crate::eviction::AccessFacts;
use crate::lease::LeasePolicy;
use crate::sched::PrefixFetch;
use crate::store::{LeaseToken, Pin, Pool, Reservation, ReserveError, SegmentId};
use crate::types::{BlockKey, Nanos, Request};

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

/// Pins a request holds, each with its segment.
#[must_use = "a hold keeps its objects pinned until released"]
#[derive(Debug, Default)]
pub struct Hold {
    pins: Vec<(SegmentId, Pin)>,
}

impl Hold {
    pub fn new() -> Hold {
        Hold::default()
    }
    /// Pins `key` in `segment` and keeps the pin; false if it is not there.
    pub fn pin(&mut self, pool: &mut Pool, segment: SegmentId, key: BlockKey) -> bool {
        match pool.segment_mut(segment).pin(key) {
            Some(pin) => {
                self.pins.push((segment, pin));
                true
            }
            None => false,
        }
    }
    pub fn len(&self) -> usize {
        self.pins.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
    /// Pins held in `segment`.
    pub fn in_segment(&self, segment: SegmentId) -> usize {
        self.pins.iter().filter(|(s, _)| *s == segment).count()
    }
    /// Releases every pin, in the order they were taken.
    pub fn release(self, pool: &mut Pool, now: Nanos) {
        for (seg, pin) in self.pins {
            let ok = pool.segment_mut(seg).unpin(pin, now);
            debug_assert!(ok, "a pin outlived its object");
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
    /// Where the node's own prefix ended when the fetch was planned.
    pub first: usize,
    /// Bytes that cross the network (the objects' sizes at the source).
    pub bytes: u64,
    /// Bytes of each prefix block's object at the source, `[0, blocks)`.
    sizes: Vec<u64>,
    /// The reads' leases at the source.
    pub leases: Vec<LeaseToken>,
    source_hold: Hold,
    /// The prefill node's segments.
    pub local: Vec<SegmentId>,
    /// What the node held of the prefix, pinned where it is.
    local_hold: Hold,
    /// Space reserved on the target, by block index.
    reservations: Vec<(usize, Reservation)>,
}

impl FetchPlan {
    /// Pins the plan holds at the source.
    pub fn source_pins(&self) -> usize {
        self.source_hold.len()
    }
    /// Pins the plan holds on the prefill node.
    pub fn local_pins(&self) -> usize {
        self.local_hold.len()
    }
    /// Blocks whose space the plan reserved on the target.
    pub fn reserved(&self) -> usize {
        self.reservations.len()
    }
}

/// Re-checks a scheduler's `fetch` for `req` against the pool at `now`.
/// `local` are the prefill node's segments (its DRAM, the `target` of the
/// replicas, and any SSD tier): the prefix blocks the source holds and the
/// node does not cross the network. Block by block from the end of the
/// node's own prefix, a block the node already holds is pinned where it is,
/// and any other has its space reserved on the target (evicting there if
/// needed; the victims are pushed to `evicted`); the fetch ends at a block
/// the target cannot make room for or that another transfer is already
/// writing there. The source then reads each block that crosses (a lease,
/// by `leases`) and pins it until [`finish_fetch`]. `None` if nothing is
/// left to fetch.
#[allow(clippy::too_many_arguments)]
pub fn plan_fetch(
    pool: &mut Pool,
    req: &Request,
    fetch: PrefixFetch,
    target: SegmentId,
    local: &[SegmentId],
    leases: &dyn LeasePolicy,
    now: Nanos,
    evicted: &mut Vec<(BlockKey, u64)>,
) -> Option<FetchPlan> {
    debug_assert!(local.contains(&target));
    if local.contains(&fetch.from) {
        return None;
    }
    let first = pool.prefix_over(local, &req.blocks);
    let mut blocks = fetch
        .blocks
        .min(pool.segment(fetch.from).prefix_len(&req.blocks));
    if blocks <= first {
        return None;
    }
    let src = pool.segment(fetch.from);
    let mut sizes: Vec<u64> = req.blocks[..blocks]
        .iter()
        .map(|k| src.object_bytes(*k).unwrap_or(0))
        .collect();
    // What the node holds of the prefix, wherever in it, stays while the
    // rest is on its way (pinned before any room is made).
    let mut local_hold = Hold::new();
    let pin_locally = |hold: &mut Hold, pool: &mut Pool, key: BlockKey| {
        local.iter().any(|&seg| hold.pin(pool, seg, key))
    };
    let mut local_blocks = vec![false; blocks];
    for (j, k) in req.blocks[..blocks].iter().enumerate() {
        local_blocks[j] = pin_locally(&mut local_hold, pool, *k);
    }
    let mut reservations = Vec::new();
    for (j, &size) in sizes.iter().enumerate().take(blocks).skip(first) {
        let key = req.blocks[j];
        if local_blocks[j] {
            continue;
        }
        let tgt = pool.segment_mut(target);
        let mut attempt = tgt.reserve(key, size, now);
        if matches!(attempt, Err(ReserveError::NoSpace { .. })) && tgt.make_room(size, now, evicted)
        {
            attempt = tgt.reserve(key, size, now);
        }
        match attempt {
            Ok(r) => reservations.push((j, r)),
            // No room, or another transfer is writing it here: the fetch
            // ends before it.
            Err(ReserveError::NoSpace { .. } | ReserveError::Exists) => {
                blocks = j;
                break;
            }
        }
    }
    if reservations.is_empty() {
        local_hold.release(pool, now);
        return None;
    }
    let mut source_hold = Hold::new();
    let mut tokens = Vec::with_capacity(reservations.len());
    let mut bytes = 0;
    for (j, _) in &reservations {
        // Held since the prefix check above: present, so read and pinned.
        let key = req.blocks[*j];
        tokens.extend(pool.segment_mut(fetch.from).read(key, now, leases));
        source_hold.pin(pool, fetch.from, key);
        bytes += sizes[*j];
    }
    sizes.truncate(blocks);
    Some(FetchPlan {
        source: fetch.from,
        target,
        blocks,
        first,
        bytes,
        sizes,
        leases: tokens,
        source_hold,
        local: local.to_vec(),
        local_hold,
        reservations,
    })
}

/// What a placed request holds once its placement is carried out.
#[derive(Debug)]
pub struct Carried {
    /// The remote prefix on its way, if the scheduler chose one and the
    /// pool still offers more than the prefill node holds.
    pub fetch: Option<FetchPlan>,
    /// The decode instance's KV memory for the request.
    pub kv: KvReservation,
    /// Prefix blocks the request will find on its prefill node when it
    /// starts (its own, or the fetch's): what the queue should expect.
    pub prefix_blocks: usize,
}

/// Carries out a placement of `req` on the prefill node whose segments are
/// `local` (its DRAM, `target`, first), decoding on the instance whose KV
/// budget is `kv`: reserves the decode KV (prompt and all output), then
/// plans the fetch if the scheduler chose one ([`plan_fetch`]; evictions on
/// the target are pushed to `evicted`).
#[allow(clippy::too_many_arguments)]
pub fn carry_out(
    pool: &mut Pool,
    req: &Request,
    fetch: Option<PrefixFetch>,
    target: SegmentId,
    local: &[SegmentId],
    kv: &mut KvBudget,
    leases: &dyn LeasePolicy,
    now: Nanos,
    evicted: &mut Vec<(BlockKey, u64)>,
) -> Carried {
    let kv = kv.reserve(req.input_tokens as u64 + req.output_tokens as u64);
    let fetch = fetch.and_then(|f| plan_fetch(pool, req, f, target, local, leases, now, evicted));
    let prefix_blocks = match &fetch {
        Some(plan) => plan.blocks,
        None => pool.prefix_over(local, &req.blocks),
    };
    Carried {
        fetch,
        kv,
        prefix_blocks,
    }
}

/// What a finished fetch left on the target.
#[derive(Debug)]
pub struct Fetched {
    /// The prefix on the target, pinned for the request until its prefill
    /// is done.
    pub hold: Hold,
    /// Leading blocks of the request now on the target.
    pub prefix_blocks: usize,
    /// Blocks written by this fetch, in block order (a reservation taken
    /// over by another writer after its timeout writes nothing).
    pub written: Vec<usize>,
}

/// Ends the fetch `plan` for `req` (the trace's `request`-th request): the
/// source pins are released, the replicas reserved on the target are
/// committed (tail first, as a request's blocks always are; blocks already
/// there count as hits), and the prefix on the target stays pinned for the
/// request until its prefill is done.
pub fn finish_fetch(
    pool: &mut Pool,
    plan: FetchPlan,
    req: &Request,
    request: usize,
    facts: &mut AccessFacts<'_>,
    now: Nanos,
) -> Fetched {
    let FetchPlan {
        target,
        blocks,
        sizes,
        local,
        local_hold,
        source_hold,
        mut reservations,
        ..
    } = plan;
    source_hold.release(pool, now);
    let mut hold = local_hold;
    let tgt = pool.segment_mut(target);
    let mut written = Vec::with_capacity(reservations.len());
    for j in (0..blocks).rev() {
        let key = req.blocks[j];
        let access = facts.block(now, request, req, j);
        if reservations.last().is_some_and(|(i, _)| *i == j) {
            if let Some((_, r)) = reservations.pop() {
                if tgt.commit(r, &access, now).is_ok() {
                    written.push(j);
                }
            }
        } else if tgt.contains(key) {
            tgt.access(key, sizes[j], &access);
        }
    }
    written.reverse();
    for &j in &written {
        hold.pin(pool, target, req.blocks[j]);
    }
    Fetched {
        hold,
        prefix_blocks: pool.prefix_over(&local, &req.blocks[..blocks]),
        written,
    }
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
        pool_with(&vec![1000; n as usize])
    }

    /// One DRAM segment per capacity, owned by instances 0, 1, ...
    fn pool_with(caps: &[u64]) -> Pool {
        let mut pool = Pool::new();
        for (i, &cap) in caps.iter().enumerate() {
            pool.add(
                Segment::new(PolicyKind::Lru.build(None), SegmentConfig::exact(Some(cap))),
                SegmentInfo {
                    owner: Some(InstanceId(i as u32)),
                    tier: Tier::Dram,
                    shared: true,
                },
            );
        }
        pool
    }

    /// A 2048-token prompt of blocks 0..4.
    fn four_blocks() -> Request {
        Request {
            arrival: Nanos::ZERO,
            input_tokens: 2048,
            output_tokens: 2,
            blocks: (0..4).map(BlockKey).collect(),
        }
    }

    /// Writes `keys` into `seg`, 10 bytes each.
    fn fill(pool: &mut Pool, seg: SegmentId, keys: &[BlockKey]) {
        for k in keys {
            pool.segment_mut(seg)
                .access(*k, 10, &Access::at(Nanos::ZERO));
        }
    }

    fn lru_facts() -> AccessFacts<'static> {
        let cost = AnalyticCost::new(ModelSpec::llama3_70b(), NodeSpec::a800x8());
        AccessFacts::new(PolicyKind::Lru, 512, Box::new(cost), None, "").unwrap()
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
        let mut evicted = Vec::new();
        let plan = plan_fetch(
            &mut pool,
            &req,
            fetch,
            SegmentId(3),
            &[SegmentId(3)],
            &leases,
            Nanos(5),
            &mut evicted,
        )
        .unwrap();
        assert_eq!(
            (plan.first, plan.blocks, plan.bytes, plan.reserved()),
            (1, 4, 30, 3)
        );
        // The replicas' space is taken on the target, invisible until they arrive.
        assert_eq!(pool.segment(SegmentId(3)).held().reserved_bytes, 30);
        assert_eq!(pool.segment(SegmentId(3)).prefix_len(&req.blocks), 1);
        assert_eq!(
            pool.segment(SegmentId(3)).held().pins,
            1,
            "its own block 0 stays"
        );
        assert_eq!(
            pool.segment(SegmentId(2)).held().pins,
            3,
            "only what crosses is read"
        );
        assert_eq!(pool.segment(SegmentId(0)).held().pins, 0);
        let token = plan.leases[2];
        assert!(pool.segment(SegmentId(2)).lease_valid(&token, Nanos(5)));
        assert!(!pool
            .segment(SegmentId(2))
            .lease_valid(&token, Nanos::from_secs(11)));
        let mut facts = lru_facts();
        let done = finish_fetch(&mut pool, plan, &req, 0, &mut facts, Nanos(9));
        assert_eq!(
            (done.prefix_blocks, done.written.clone()),
            (4, vec![1, 2, 3])
        );
        let hold = done.hold;
        assert_eq!(pool.segment(SegmentId(3)).held().reserved_objects, 0);
        for s in 0..3 {
            assert_eq!(pool.segment(SegmentId(s)).held().pins, 0, "segment {s}");
        }
        assert_eq!(pool.segment(SegmentId(3)).held().pins, 4);
        assert_eq!(pool.segment(SegmentId(3)).prefix_len(&req.blocks), 4);
        hold.release(&mut pool, Nanos(10));
        assert_eq!(pool.segment(SegmentId(3)).held().pins, 0);
        // Nothing to fetch when the target already has the prefix.
        assert!(plan_fetch(
            &mut pool,
            &req,
            fetch,
            SegmentId(3),
            &[SegmentId(3)],
            &leases,
            Nanos(11),
            &mut evicted
        )
        .is_none());
        assert!(evicted.is_empty());
    }

    #[test]
    fn a_fetch_ends_where_the_target_has_no_room() {
        // The target holds 25 bytes; block 0 is its own (10 bytes, pinned
        // for the fetch), one 10-byte object of another prefix can be
        // evicted: room for blocks 1 and (after evicting) 2, not 3.
        let mut pool = pool_with(&[1000, 25]);
        let req = four_blocks();
        fill(&mut pool, SegmentId(0), &req.blocks);
        let tgt = pool.segment_mut(SegmentId(1));
        tgt.access(BlockKey(99), 10, &Access::at(Nanos::ZERO));
        tgt.access(BlockKey(0), 10, &Access::at(Nanos(1)));
        let fetch = PrefixFetch {
            from: SegmentId(0),
            blocks: 4,
        };
        let mut evicted = Vec::new();
        let plan = plan_fetch(
            &mut pool,
            &req,
            fetch,
            SegmentId(1),
            &[SegmentId(1)],
            &MooncakeLeases::default(),
            Nanos(2),
            &mut evicted,
        )
        .unwrap();
        assert_eq!((plan.first, plan.blocks, plan.bytes), (1, 2, 10));
        assert_eq!(plan.reserved(), 1);
        assert_eq!(evicted, vec![(BlockKey(99), 10)]);
        assert_eq!(
            pool.segment(SegmentId(0)).held().pins,
            1,
            "only what crosses is read"
        );
        assert!(pool.segment(SegmentId(1)).within_capacity());
        let mut facts = lru_facts();
        let done = finish_fetch(&mut pool, plan, &req, 0, &mut facts, Nanos(3));
        let hold = done.hold;
        assert_eq!((hold.len(), done.prefix_blocks), (2, 2));
        assert_eq!(pool.segment(SegmentId(1)).prefix_len(&req.blocks), 2);
        hold.release(&mut pool, Nanos(4));
        assert_eq!(pool.segment(SegmentId(0)).held(), Default::default());
        assert_eq!(pool.segment(SegmentId(1)).held(), Default::default());
    }

    #[test]
    fn a_fetch_never_claims_blocks_it_does_not_bring() {
        // The target (25 bytes) holds block 1 of the prefix but not block 0.
        // Block 0 is reserved; block 1, already there, is pinned so that the
        // room made for block 2 cannot take it; block 2 finds no room: the
        // fetch brings block 0 only, and the request finds blocks 0 and 1.
        let mut pool = pool_with(&[1000, 25]);
        let req = four_blocks();
        fill(&mut pool, SegmentId(0), &req.blocks);
        pool.segment_mut(SegmentId(1))
            .access(BlockKey(1), 10, &Access::at(Nanos::ZERO));
        let fetch = PrefixFetch {
            from: SegmentId(0),
            blocks: 4,
        };
        let leases = MooncakeLeases::default();
        let mut evicted = Vec::new();
        let plan = plan_fetch(
            &mut pool,
            &req,
            fetch,
            SegmentId(1),
            &[SegmentId(1)],
            &leases,
            Nanos(1),
            &mut evicted,
        )
        .unwrap();
        assert_eq!(
            (plan.first, plan.blocks, plan.bytes, plan.reserved()),
            (0, 2, 10, 1)
        );
        assert!(evicted.is_empty());
        // A second fetch of the same prefix into the same node while the
        // first is on its way: block 0 is being written, so nothing is left.
        assert!(plan_fetch(
            &mut pool,
            &req,
            fetch,
            SegmentId(1),
            &[SegmentId(1)],
            &leases,
            Nanos(2),
            &mut evicted
        )
        .is_none());
        let mut facts = lru_facts();
        let done = finish_fetch(&mut pool, plan, &req, 0, &mut facts, Nanos(3));
        assert_eq!((done.prefix_blocks, done.written.clone()), (2, vec![0]));
        done.hold.release(&mut pool, Nanos(4));
        assert_eq!(pool.segment(SegmentId(0)).held(), Default::default());
        assert_eq!(pool.segment(SegmentId(1)).held(), Default::default());
    }

    #[test]
    fn blocks_on_the_nodes_ssd_tier_do_not_cross() {
        // The node's SSD tier holds blocks 0 and 1 (read back at prefill
        // start, as the scheduler's estimate counts them); only 2 and 3
        // cross, into DRAM.
        let mut pool = pool_of(3);
        let req = Request {
            arrival: Nanos::ZERO,
            input_tokens: 2048,
            output_tokens: 2,
            blocks: (0..4).map(BlockKey).collect(),
        };
        for k in &req.blocks {
            pool.segment_mut(SegmentId(0))
                .access(*k, 10, &Access::at(Nanos::ZERO));
        }
        for k in &req.blocks[..2] {
            pool.segment_mut(SegmentId(2))
                .access(*k, 10, &Access::at(Nanos::ZERO));
        }
        let fetch = PrefixFetch {
            from: SegmentId(0),
            blocks: 4,
        };
        let local = [SegmentId(1), SegmentId(2)];
        let mut evicted = Vec::new();
        let plan = plan_fetch(
            &mut pool,
            &req,
            fetch,
            SegmentId(1),
            &local,
            &MooncakeLeases::default(),
            Nanos(1),
            &mut evicted,
        )
        .unwrap();
        assert_eq!(
            (plan.first, plan.blocks, plan.bytes, plan.reserved()),
            (2, 4, 20, 2)
        );
        assert_eq!(
            pool.segment(SegmentId(2)).held().pins,
            2,
            "the SSD part stays"
        );
        let mut facts = lru_facts();
        let done = finish_fetch(&mut pool, plan, &req, 0, &mut facts, Nanos(2));
        assert_eq!((done.prefix_blocks, done.written.clone()), (4, vec![2, 3]));
        assert_eq!(done.hold.in_segment(SegmentId(2)), 2);
        done.hold.release(&mut pool, Nanos(3));
        for s in 0..3 {
            assert_eq!(pool.segment(SegmentId(s)).held(), Default::default());
        }
    }

    #[test]
    fn room_for_a_fetch_never_evicts_the_prefix_it_completes() {
        // The target (30 bytes) holds blocks 0 and 2 of the prefix and an
        // unrelated object 99. Block 1 needs room: 99 goes, not block 2,
        // which stays pinned and does not cross again.
        let mut pool = pool_with(&[1000, 30]);
        let req = four_blocks();
        fill(&mut pool, SegmentId(0), &req.blocks);
        fill(
            &mut pool,
            SegmentId(1),
            &[BlockKey(2), BlockKey(99), BlockKey(0)],
        );
        let fetch = PrefixFetch {
            from: SegmentId(0),
            blocks: 3,
        };
        let mut evicted = Vec::new();
        let plan = plan_fetch(
            &mut pool,
            &req,
            fetch,
            SegmentId(1),
            &[SegmentId(1)],
            &MooncakeLeases::default(),
            Nanos(1),
            &mut evicted,
        )
        .unwrap();
        assert_eq!(evicted, vec![(BlockKey(99), 10)]);
        assert_eq!(
            (plan.first, plan.blocks, plan.bytes, plan.reserved()),
            (1, 3, 10, 1)
        );
        let done = finish_fetch(&mut pool, plan, &req, 0, &mut lru_facts(), Nanos(2));
        assert_eq!((done.prefix_blocks, done.written.clone()), (3, vec![1]));
        done.hold.release(&mut pool, Nanos(3));
        assert_eq!(pool.segment(SegmentId(1)).held(), Default::default());
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
