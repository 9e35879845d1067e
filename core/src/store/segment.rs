//! [`Segment`]: one contiguous contribution to the KVCache pool (a GPU
//! node's spare DRAM, a storage node's memory, an SSD tier) as a table of
//! objects with sizes in bytes and a capacity in bytes. It owns the rules a
//! store enforces, so the simulator's pool model and the real master keep
//! them by construction:
//!
//! - **Two-phase writes** (Mooncake's PutStart / PutEnd / PutRevoke):
//!   [`Segment::reserve`] takes space and hands back a [`Reservation`]; the
//!   object is invisible to lookups, reads and eviction until
//!   [`Segment::commit`], and [`Segment::revoke`] gives the space back. A
//!   reservation older than [`SegmentConfig::put_timeout`] is reclaimed; one
//!   older than [`SegmentConfig::preempt_after`] may be taken over by a new
//!   write of the same key.
//!   [`Segment::access`] is the one-phase form (a hit, or a write committed
//!   at once) that replays use.
//! - **Leases**: [`Segment::read`] grants a lease as the [`LeasePolicy`]
//!   says and returns a [`LeaseToken`]; [`Segment::lease_valid`] tells later
//!   whether a read that began with it is still covered, so a read that
//!   outlives its lease can be failed. Leased objects are never evicted and
//!   [`Segment::remove`] refuses them unless forced. Leases end by the clock
//!   handed in: every operation that takes `now` first retires what expired.
//! - **Pins**: [`Segment::pin`] marks an object in use and returns a [`Pin`]
//!   that only [`Segment::unpin`] consumes; nothing is ever released by
//!   searching for its holder. A pin from an object that has since left the
//!   segment is recognised as stale (slot generations).
//! - **Soft pins** keep hot objects out of the first eviction pass.
//! - **Eviction by watermarks, in batches** ([`Segment::evict`]): above the
//!   high watermark the [`EvictionPolicy`] names victims among the objects
//!   that may go (committed, not pinned, not leased, not soft-pinned) until
//!   the low watermark is reached; soft-pinned objects are taken only in a
//!   second pass (the pin that ends first goes first), down to the midway
//!   bound, as upstream Mooncake Store does. With both watermarks at 1.0
//!   (the default) a segment is brought exactly back within capacity.
//!
//! Objects are keyed by [`BlockKey`]: an object that holds one KV block (or
//! the partial last block of a prompt) is found by the prefix index
//! ([`Segment::prefix_len`]); any other object (several blocks, a blob a
//! client stored) is sized in bytes like the rest. The replayer weighs every
//! block as one unit, so its capacity counts blocks.
//!
//! Upstream semantics and defaults: kvcache-ai/Mooncake `mooncake-store`
//! (`include/types.h`, `src/master_service.cpp`): lease 10 s, soft pin 30 min,
//! high watermark 0.90, eviction ratio 0.05 ([`Watermarks::MOONCAKE`]).
//! Where we differ: a preempted reservation frees its space at once
//! (upstream parks it until `put_start_release_timeout`); eviction runs when
//! the owner calls [`Segment::evict`] (upstream: a thread every 10 ms, and
//! on a failed PutStart); watermarks apply per segment (upstream: to the
//! whole pool); and victims come from the configured [`EvictionPolicy`]
//! (upstream: oldest lease first, which is approximately LRU).

use crate::eviction::{Access, EvictionPolicy, Slot};
use crate::lease::LeasePolicy;
use crate::types::{BlockKey, Nanos};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// Eviction thresholds as fractions of capacity: eviction starts when the
/// bytes in use exceed `high × capacity` and frees down to `low × capacity`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Watermarks {
    pub high: f64,
    pub low: f64,
}

impl Watermarks {
    /// Evict exactly back to capacity (the replayer and the simulator's default).
    pub const EXACT: Watermarks = Watermarks {
        high: 1.0,
        low: 1.0,
    };
    /// Upstream Mooncake Store's defaults: high watermark 0.90, eviction
    /// ratio 0.05 (low = high − ratio).
    pub const MOONCAKE: Watermarks = Watermarks {
        high: 0.90,
        low: 0.85,
    };

    /// Watermarks from upstream's two parameters: the high watermark and the
    /// share of capacity one eviction frees.
    pub fn from_ratio(high: f64, eviction_ratio: f64) -> Watermarks {
        Watermarks {
            high,
            low: (high - eviction_ratio).max(0.0),
        }
    }

    /// True if both lie in [0, 1] and `low <= high`.
    pub fn is_valid(&self) -> bool {
        (0.0..=1.0).contains(&self.high) && (0.0..=1.0).contains(&self.low) && self.low <= self.high
    }
}

/// How a segment is sized and when it reclaims abandoned writes.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct SegmentConfig {
    /// Capacity in bytes (`None` = unbounded).
    pub capacity_bytes: Option<u64>,
    pub watermarks: Watermarks,
    /// A reservation not committed or revoked within this time is reclaimed
    /// and its space freed (upstream's `put_start_release_timeout`, 600 s).
    pub put_timeout: Nanos,
    /// After this time a new write of the same key may take over an
    /// uncommitted reservation (upstream's `put_start_discard_timeout`, 30 s).
    pub preempt_after: Nanos,
}

impl SegmentConfig {
    /// A segment of `capacity_bytes` that evicts exactly back to capacity.
    pub fn exact(capacity_bytes: Option<u64>) -> SegmentConfig {
        SegmentConfig {
            capacity_bytes,
            watermarks: Watermarks::EXACT,
            put_timeout: Nanos::from_secs(600),
            preempt_after: Nanos::from_secs(30),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Free,
    Reserved,
    Committed,
}

#[derive(Clone, Debug)]
struct SlotState {
    key: BlockKey,
    bytes: u64,
    state: State,
    pins: u32,
    lease_until: Nanos,
    soft_until: Nanos,
    /// Reads of the object since it entered this segment.
    reads: u64,
    /// When a reservation was taken.
    reserved_at: Nanos,
    /// Bumped whenever the slot is freed, so stale handles and heap entries
    /// are recognised.
    generation: u32,
}

impl SlotState {
    fn evictable(&self) -> bool {
        self.state == State::Committed
            && self.pins == 0
            && self.lease_until == Nanos::ZERO
            && self.soft_until == Nanos::ZERO
    }

    /// Evictable in the second pass: only a soft pin holds it.
    fn soft_only(&self) -> bool {
        self.state == State::Committed
            && self.pins == 0
            && self.lease_until == Nanos::ZERO
            && self.soft_until != Nanos::ZERO
    }
}

/// Space taken by [`Segment::reserve`]: the object is written but not yet
/// visible. Consumed by [`Segment::commit`] or [`Segment::revoke`].
#[must_use = "a reservation holds space until it is committed or revoked"]
#[derive(Debug, PartialEq, Eq)]
pub struct Reservation {
    key: BlockKey,
    slot: u32,
    generation: u32,
    bytes: u64,
}

impl Reservation {
    pub fn key(&self) -> BlockKey {
        self.key
    }
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// One use of an object ([`Segment::pin`]); it cannot be evicted or removed
/// until the pin is handed back to [`Segment::unpin`].
#[must_use = "a pin keeps its object in the segment until it is released"]
#[derive(Debug, PartialEq, Eq)]
pub struct Pin {
    key: BlockKey,
    slot: u32,
    generation: u32,
}

impl Pin {
    pub fn key(&self) -> BlockKey {
        self.key
    }
}

/// What a read was granted: checkable later with [`Segment::lease_valid`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LeaseToken {
    pub key: BlockKey,
    pub slot: u32,
    pub generation: u32,
    /// The lease ends at this time (the read's own time when the policy
    /// grants no lease: such a read is never covered, as upstream with a
    /// lease of 0).
    pub expiry: Nanos,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// The key is committed or being written (upstream `OBJECT_ALREADY_EXISTS`).
    #[error("object already exists")]
    Exists,
    /// Not enough free space (upstream `NO_AVAILABLE_HANDLE`).
    #[error("no space: {needed} bytes needed, {free} free")]
    NoSpace { needed: u64, free: u64 },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The reservation was reclaimed after the put timeout.
    #[error("the reservation expired and was reclaimed")]
    Expired,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemoveError {
    #[error("object not found")]
    NotFound,
    /// Being written (upstream `REPLICA_IS_NOT_READY`; force does not help).
    #[error("object is being written")]
    NotReady,
    /// Under a read lease (upstream `OBJECT_HAS_LEASE`); force removes it.
    #[error("object is leased")]
    Leased,
    /// In use by a transfer (a pin); never removed.
    #[error("object is in use")]
    Busy,
}

/// What [`Segment::access`] found.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    /// The object was committed here: a hit.
    Hit,
    /// It was absent and is now committed.
    Inserted,
    /// It is being written (reserved) and was left alone.
    Writing,
}

impl Touched {
    pub fn is_hit(self) -> bool {
        self == Touched::Hit
    }
}

/// What one eviction did.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EvictOutcome {
    pub objects: u64,
    pub bytes: u64,
    /// Of those, soft-pinned objects taken in the second pass.
    pub soft_pinned: u64,
    /// True if the segment is within its capacity afterwards.
    pub within_capacity: bool,
}

/// Counters kept by a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    /// Evictions of soft-pinned objects in the second pass.
    pub soft_pin_evictions: u64,
    /// Reservations reclaimed after the put timeout.
    pub expired_reservations: u64,
}

/// What is still held in a segment: the end-of-run invariants read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub pinned_objects: u64,
    pub pins: u64,
    pub reserved_objects: u64,
    pub reserved_bytes: u64,
}

pub struct Segment<P: EvictionPolicy = Box<dyn EvictionPolicy>> {
    policy: P,
    config: SegmentConfig,
    map: FxHashMap<BlockKey, u32>,
    slots: Vec<SlotState>,
    free: Vec<u32>,
    /// Bytes of committed and reserved objects.
    used_bytes: u64,
    /// Bytes of committed objects with at least one pin.
    pinned_bytes: u64,
    committed: usize,
    /// (expiry, slot, generation) of leases, earliest first.
    leases: BinaryHeap<Reverse<(Nanos, u32, u32)>>,
    /// Soft-pinned slots by pin expiry (the second-pass order).
    soft: BTreeSet<(Nanos, u32)>,
    /// (deadline, slot, generation) of reservations, earliest first.
    reservations: BinaryHeap<Reverse<(Nanos, u32, u32)>>,
    counters: SegmentCounters,
}

impl<P: EvictionPolicy> Segment<P> {
    pub fn new(policy: P, config: SegmentConfig) -> Self {
        Segment {
            policy,
            config,
            map: FxHashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            used_bytes: 0,
            pinned_bytes: 0,
            committed: 0,
            leases: BinaryHeap::new(),
            soft: BTreeSet::new(),
            reservations: BinaryHeap::new(),
            counters: SegmentCounters::default(),
        }
    }

    pub fn policy(&self) -> &P {
        &self.policy
    }
    pub fn config(&self) -> &SegmentConfig {
        &self.config
    }
    pub fn capacity_bytes(&self) -> Option<u64> {
        self.config.capacity_bytes
    }
    /// Bytes taken by committed objects and reservations.
    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }
    /// Bytes of the committed objects that are pinned (in use): what no
    /// eviction can free. A cache that shares its memory with other users
    /// (a GPU's KV blocks) sizes what it may take from it.
    pub fn pinned_bytes(&self) -> u64 {
        self.pinned_bytes
    }
    /// Committed objects.
    pub fn len(&self) -> usize {
        self.committed
    }
    pub fn is_empty(&self) -> bool {
        self.committed == 0
    }
    pub fn counters(&self) -> SegmentCounters {
        self.counters
    }
    /// True if the bytes in use are within capacity.
    pub fn within_capacity(&self) -> bool {
        self.config
            .capacity_bytes
            .is_none_or(|c| self.used_bytes <= c)
    }

    #[inline]
    fn committed_slot(&self, key: BlockKey) -> Option<u32> {
        self.map
            .get(&key)
            .copied()
            .filter(|&s| self.slots[s as usize].state == State::Committed)
    }

    /// True if `key` is committed here (reservations are invisible).
    #[inline]
    pub fn contains(&self, key: BlockKey) -> bool {
        self.committed_slot(key).is_some()
    }

    /// Bytes of the committed object `key`.
    pub fn object_bytes(&self, key: BlockKey) -> Option<u64> {
        self.committed_slot(key)
            .map(|s| self.slots[s as usize].bytes)
    }

    /// The number of leading `keys` committed here: the prefix a request can
    /// reuse from this segment.
    pub fn prefix_len(&self, keys: &[BlockKey]) -> usize {
        keys.iter().take_while(|k| self.contains(**k)).count()
    }

    /// True if `key` is committed and could be evicted in the first pass
    /// at `now` (not pinned, no lease running at `now`, not soft-pinned).
    pub fn is_evictable(&self, key: BlockKey, now: Nanos) -> bool {
        self.committed_slot(key).is_some_and(|s| {
            let st = &self.slots[s as usize];
            st.pins == 0
                && st.lease_until <= now
                && (st.soft_until == Nanos::ZERO || st.soft_until <= now)
        })
    }

    /// True if `key` is committed and soft-pinned.
    pub fn is_soft_pinned(&self, key: BlockKey) -> bool {
        self.committed_slot(key)
            .is_some_and(|s| self.slots[s as usize].soft_until != Nanos::ZERO)
    }

    /// When `key`'s reservation will be reclaimed, if it is being written.
    pub fn reserved_until(&self, key: BlockKey) -> Option<Nanos> {
        self.map
            .get(&key)
            .map(|&s| &self.slots[s as usize])
            .filter(|st| st.state == State::Reserved)
            .map(|st| st.reserved_at.saturating_add(self.config.put_timeout))
    }

    /// Reads of `key` since it entered this segment.
    pub fn reads(&self, key: BlockKey) -> u64 {
        self.committed_slot(key)
            .map_or(0, |s| self.slots[s as usize].reads)
    }

    /// What is pinned and reserved right now.
    pub fn held(&self) -> Held {
        let mut h = Held::default();
        for s in &self.slots {
            match s.state {
                State::Committed if s.pins > 0 => {
                    h.pinned_objects += 1;
                    h.pins += s.pins as u64;
                }
                State::Reserved => {
                    h.reserved_objects += 1;
                    h.reserved_bytes += s.bytes;
                }
                _ => {}
            }
        }
        h
    }

    /// Committed keys in slot order (deterministic for a given history).
    pub fn keys(&self) -> impl Iterator<Item = BlockKey> + '_ {
        self.slots
            .iter()
            .filter(|s| s.state == State::Committed)
            .map(|s| s.key)
    }

    /// Accesses `key` (one-phase): a hit updates the policy; a miss writes
    /// an object of `bytes` and commits it at once. Never evicts (call
    /// [`Segment::evict`] after a batch of accesses); a key that is being
    /// written is left alone and counts as a miss.
    #[inline]
    pub fn access(&mut self, key: BlockKey, bytes: u64, access: &Access) -> Touched {
        match self.map.get(&key) {
            Some(&s) => {
                if self.slots[s as usize].state == State::Committed {
                    self.counters.hits += 1;
                    self.policy.on_hit(Slot(s), access);
                    Touched::Hit
                } else {
                    self.counters.misses += 1;
                    Touched::Writing
                }
            }
            None => {
                self.counters.misses += 1;
                let s = self.alloc(key, bytes, State::Committed);
                self.policy.on_insert(Slot(s), key, access);
                Touched::Inserted
            }
        }
    }

    /// PutStart: takes `bytes` for `key`, invisible until committed. Does not
    /// evict: on [`ReserveError::NoSpace`] call [`Segment::make_room`] and
    /// try again (upstream fails the put and evicts in the background).
    pub fn reserve(
        &mut self,
        key: BlockKey,
        bytes: u64,
        now: Nanos,
    ) -> Result<Reservation, ReserveError> {
        self.advance(now);
        if let Some(&s) = self.map.get(&key) {
            let st = &self.slots[s as usize];
            let stale = st.state == State::Reserved
                && now >= st.reserved_at.saturating_add(self.config.preempt_after);
            if !stale {
                return Err(ReserveError::Exists);
            }
            // An abandoned write: the new one takes over (its holder's
            // commit will fail).
            self.counters.expired_reservations += 1;
            self.release(s);
        }
        if let Some(cap) = self.config.capacity_bytes {
            if self
                .used_bytes
                .checked_add(bytes)
                .is_none_or(|total| total > cap)
            {
                return Err(ReserveError::NoSpace {
                    needed: bytes,
                    free: cap.saturating_sub(self.used_bytes),
                });
            }
        }
        let s = self.alloc(key, bytes, State::Reserved);
        let generation = self.slots[s as usize].generation;
        let deadline = now.saturating_add(self.config.put_timeout);
        self.slots[s as usize].reserved_at = now;
        self.reservations.push(Reverse((deadline, s, generation)));
        Ok(Reservation {
            key,
            slot: s,
            generation,
            bytes,
        })
    }

    /// PutEnd: the reserved object becomes visible and evictable.
    pub fn commit(
        &mut self,
        r: Reservation,
        access: &Access,
        now: Nanos,
    ) -> Result<(), CommitError> {
        self.advance(now);
        let st = &mut self.slots[r.slot as usize];
        if st.state != State::Reserved || st.generation != r.generation {
            return Err(CommitError::Expired);
        }
        st.state = State::Committed;
        self.committed += 1;
        self.policy.on_insert(Slot(r.slot), r.key, access);
        Ok(())
    }

    /// PutRevoke: gives the reserved space back. Returns false if the
    /// reservation had already been reclaimed.
    pub fn revoke(&mut self, r: Reservation) -> bool {
        let st = &self.slots[r.slot as usize];
        if st.state != State::Reserved || st.generation != r.generation {
            return false;
        }
        self.release(r.slot);
        true
    }

    /// Evicts (first pass only) until `bytes` more would fit; true if they do.
    pub fn make_room(
        &mut self,
        bytes: u64,
        now: Nanos,
        evicted: &mut Vec<(BlockKey, u64)>,
    ) -> bool {
        self.advance(now);
        let Some(cap) = self.config.capacity_bytes else {
            return true;
        };
        let Some(target) = cap.checked_sub(bytes) else {
            return false;
        };
        let low = self.threshold(self.config.watermarks.low).min(target);
        if self.used_bytes > target {
            self.evict_first_pass(low, now, evicted, &mut EvictOutcome::default());
        }
        self.used_bytes <= target
    }

    /// A read of `key` at `now`: grants the lease the policy gives, counts
    /// the read and soft-pins the object if the policy finds it hot.
    /// `None` if `key` is not committed here.
    pub fn read(
        &mut self,
        key: BlockKey,
        now: Nanos,
        leases: &dyn LeasePolicy,
    ) -> Option<LeaseToken> {
        self.advance(now);
        let s = self.committed_slot(key)?;
        let reads = {
            let st = &mut self.slots[s as usize];
            st.reads += 1;
            st.reads
        };
        if let Some(until) = leases.lease_on_read(key, now) {
            self.lease_slot(s, until);
        }
        if let Some(until) = leases.soft_pin(key, reads, now) {
            self.soft_pin_slot(s, until);
        }
        let st = &self.slots[s as usize];
        Some(LeaseToken {
            key,
            slot: s,
            generation: st.generation,
            expiry: st.lease_until.max(now),
        })
    }

    /// True if the read that received `token` is still covered at `now`:
    /// the object is the same one and the lease has not run out.
    pub fn lease_valid(&self, token: &LeaseToken, now: Nanos) -> bool {
        self.slots.get(token.slot as usize).is_some_and(|st| {
            st.state == State::Committed && st.generation == token.generation && st.key == token.key
        }) && now < token.expiry
    }

    /// Grants (or extends) a lease on `key` until `until`. False if absent.
    pub fn lease(&mut self, key: BlockKey, until: Nanos) -> bool {
        let Some(s) = self.committed_slot(key) else {
            return false;
        };
        self.lease_slot(s, until);
        true
    }

    /// Soft-pins `key` until `until` (extending an earlier pin). False if absent.
    pub fn soft_pin(&mut self, key: BlockKey, until: Nanos) -> bool {
        let Some(s) = self.committed_slot(key) else {
            return false;
        };
        self.soft_pin_slot(s, until);
        true
    }

    /// Marks `key` in use; `None` if it is not committed here.
    pub fn pin(&mut self, key: BlockKey) -> Option<Pin> {
        let s = self.committed_slot(key)?;
        let st = &mut self.slots[s as usize];
        let was = st.evictable();
        if st.pins == 0 {
            self.pinned_bytes += st.bytes;
        }
        st.pins += 1;
        if was {
            self.policy.on_unevictable(Slot(s));
        }
        Some(Pin {
            key,
            slot: s,
            generation: st.generation,
        })
    }

    /// Ends the use `pin` stands for. False if the pin is stale (cannot
    /// happen while pinned objects are never evicted or removed).
    pub fn unpin(&mut self, pin: Pin, now: Nanos) -> bool {
        let st = &mut self.slots[pin.slot as usize];
        if st.state != State::Committed || st.generation != pin.generation || st.pins == 0 {
            return false;
        }
        st.pins -= 1;
        if st.pins == 0 {
            self.pinned_bytes -= st.bytes;
        }
        if st.evictable() {
            self.policy.on_evictable(Slot(pin.slot), now);
        }
        true
    }

    /// Removes `key`: refused while it is being written or in use, and while
    /// it is leased unless `force`.
    pub fn remove(&mut self, key: BlockKey, now: Nanos, force: bool) -> Result<u64, RemoveError> {
        self.advance(now);
        let &s = self.map.get(&key).ok_or(RemoveError::NotFound)?;
        let st = &self.slots[s as usize];
        if st.state == State::Reserved {
            return Err(RemoveError::NotReady);
        }
        if st.pins > 0 {
            return Err(RemoveError::Busy);
        }
        if st.lease_until != Nanos::ZERO && !force {
            return Err(RemoveError::Leased);
        }
        let bytes = st.bytes;
        self.policy.on_remove(Slot(s));
        self.release(s);
        Ok(bytes)
    }

    /// Eviction by watermarks: if more than `high × capacity` is in use,
    /// victims named by the policy go until `low × capacity` is reached;
    /// soft-pinned objects (the one whose pin ends first, first) only then,
    /// down to midway between the watermarks. Victims are pushed to
    /// `evicted` as (key, bytes).
    pub fn evict(&mut self, now: Nanos, evicted: &mut Vec<(BlockKey, u64)>) -> EvictOutcome {
        self.advance(now);
        let mut out = EvictOutcome::default();
        let Some(_) = self.config.capacity_bytes else {
            out.within_capacity = true;
            return out;
        };
        let w = self.config.watermarks;
        if self.used_bytes > self.threshold(w.high) {
            let low = self.threshold(w.low);
            self.evict_first_pass(low, now, evicted, &mut out);
            let bound = self.threshold((w.high + w.low) / 2.0);
            while self.used_bytes > bound {
                let victim = self
                    .soft
                    .iter()
                    .map(|&(_, s)| s)
                    .find(|&s| self.slots[s as usize].soft_only());
                let Some(s) = victim else { break };
                self.policy.on_remove(Slot(s));
                self.counters.evictions += 1;
                self.counters.soft_pin_evictions += 1;
                out.objects += 1;
                out.soft_pinned += 1;
                out.bytes += self.slots[s as usize].bytes;
                evicted.push(self.release(s));
            }
        }
        out.within_capacity = self.within_capacity();
        out
    }

    fn evict_first_pass(
        &mut self,
        target: u64,
        now: Nanos,
        evicted: &mut Vec<(BlockKey, u64)>,
        out: &mut EvictOutcome,
    ) {
        while self.used_bytes > target {
            let Some(Slot(s)) = self.policy.evict(now) else {
                break;
            };
            debug_assert!(
                self.slots[s as usize].evictable(),
                "the policy evicted a held object"
            );
            self.counters.evictions += 1;
            out.objects += 1;
            out.bytes += self.slots[s as usize].bytes;
            evicted.push(self.release(s));
        }
    }

    fn threshold(&self, fraction: f64) -> u64 {
        let cap = self.config.capacity_bytes.unwrap_or(u64::MAX);
        if fraction >= 1.0 {
            cap
        } else {
            (cap as f64 * fraction) as u64
        }
    }

    /// Retires every lease, soft pin and reservation that ended by `now`.
    /// Every operation that takes `now` calls it first.
    pub fn advance(&mut self, now: Nanos) {
        while let Some(&(until, s)) = self.soft.first() {
            if until > now {
                break;
            }
            self.soft.pop_first();
            let st = &mut self.slots[s as usize];
            st.soft_until = Nanos::ZERO;
            if st.evictable() {
                self.policy.on_evictable(Slot(s), now);
            }
        }
        while let Some(&Reverse((until, s, generation))) = self.leases.peek() {
            if until > now {
                break;
            }
            self.leases.pop();
            let st = &mut self.slots[s as usize];
            if st.state != State::Committed
                || st.generation != generation
                || st.lease_until != until
            {
                continue;
            }
            st.lease_until = Nanos::ZERO;
            if st.evictable() {
                self.policy.on_evictable(Slot(s), now);
            }
        }
        while let Some(&Reverse((deadline, s, generation))) = self.reservations.peek() {
            if deadline > now {
                break;
            }
            self.reservations.pop();
            let st = &self.slots[s as usize];
            if st.state == State::Reserved && st.generation == generation {
                self.counters.expired_reservations += 1;
                self.release(s);
            }
        }
    }

    fn lease_slot(&mut self, s: u32, until: Nanos) {
        let st = &mut self.slots[s as usize];
        if until <= st.lease_until {
            return;
        }
        let was = st.evictable();
        st.lease_until = until;
        self.leases.push(Reverse((until, s, st.generation)));
        if was {
            self.policy.on_unevictable(Slot(s));
        }
    }

    fn soft_pin_slot(&mut self, s: u32, until: Nanos) {
        let st = &mut self.slots[s as usize];
        if until <= st.soft_until {
            return;
        }
        let was = st.evictable();
        if st.soft_until != Nanos::ZERO {
            self.soft.remove(&(st.soft_until, s));
        }
        st.soft_until = until;
        self.soft.insert((until, s));
        if was {
            self.policy.on_unevictable(Slot(s));
        }
    }

    fn alloc(&mut self, key: BlockKey, bytes: u64, state: State) -> u32 {
        let s = match self.free.pop() {
            Some(s) => {
                let st = &mut self.slots[s as usize];
                st.key = key;
                st.bytes = bytes;
                st.state = state;
                st.pins = 0;
                st.lease_until = Nanos::ZERO;
                st.soft_until = Nanos::ZERO;
                st.reads = 0;
                st.reserved_at = Nanos::ZERO;
                s
            }
            None => {
                self.slots.push(SlotState {
                    key,
                    bytes,
                    state,
                    pins: 0,
                    lease_until: Nanos::ZERO,
                    soft_until: Nanos::ZERO,
                    reads: 0,
                    reserved_at: Nanos::ZERO,
                    generation: 0,
                });
                (self.slots.len() - 1) as u32
            }
        };
        // Sizes come from the caller's model (tokens × KV bytes): a sum past
        // u64 is a caller bug, kept from wrapping.
        debug_assert!(
            self.used_bytes.checked_add(bytes).is_some(),
            "bytes overflow"
        );
        self.used_bytes = self.used_bytes.saturating_add(bytes);
        if state == State::Committed {
            self.committed += 1;
        }
        self.map.insert(key, s);
        s
    }

    fn release(&mut self, s: u32) -> (BlockKey, u64) {
        let st = &mut self.slots[s as usize];
        debug_assert!(st.state != State::Free);
        if st.state == State::Committed {
            self.committed -= 1;
            if st.pins > 0 {
                self.pinned_bytes -= st.bytes;
            }
        }
        st.state = State::Free;
        st.pins = 0;
        st.lease_until = Nanos::ZERO;
        if st.soft_until != Nanos::ZERO {
            self.soft.remove(&(st.soft_until, s));
            st.soft_until = Nanos::ZERO;
        }
        st.generation = st.generation.wrapping_add(1);
        let (key, bytes) = (st.key, st.bytes);
        self.used_bytes -= bytes;
        self.map.remove(&key);
        self.free.push(s);
        (key, bytes)
    }

    /// Checks the segment's own bookkeeping (used bytes, counts, the key
    /// map); for tests and end-of-run checks.
    pub fn check(&self) -> Result<(), String> {
        let (mut used, mut committed, mut live) = (0u64, 0usize, 0usize);
        let mut pinned = 0u64;
        for (i, s) in self.slots.iter().enumerate() {
            if s.state == State::Free {
                continue;
            }
            live += 1;
            used += s.bytes;
            if s.state == State::Committed {
                committed += 1;
                if s.pins > 0 {
                    pinned += s.bytes;
                }
            }
            if self.map.get(&s.key) != Some(&(i as u32)) {
                return Err(format!("slot {i} (key {}) is not in the key map", s.key.0));
            }
        }
        if used != self.used_bytes {
            return Err(format!(
                "used bytes {} but the objects add up to {used}",
                self.used_bytes
            ));
        }
        if pinned != self.pinned_bytes {
            return Err(format!(
                "pinned bytes {} but the pinned objects add up to {pinned}",
                self.pinned_bytes
            ));
        }
        if committed != self.committed || live != self.map.len() {
            return Err(format!(
                "{} committed and {} keys counted, {committed} and {live} found",
                self.committed,
                self.map.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::PolicyKind;
    use crate::lease::{MooncakeLeases, NoLeases};

    fn seg(cap: u64) -> Segment {
        Segment::new(
            PolicyKind::Lru.build(Some(cap)),
            SegmentConfig::exact(Some(cap)),
        )
    }

    fn at(t: u64) -> Access {
        Access::at(Nanos(t))
    }

    fn lease_for(ns: u64) -> MooncakeLeases {
        MooncakeLeases {
            lease: Nanos(ns),
            ..MooncakeLeases::default()
        }
    }

    #[test]
    fn sizes_in_bytes_and_eviction_back_to_capacity() {
        let mut s = seg(100);
        let mut out = vec![];
        s.access(BlockKey(1), 40, &at(1));
        s.access(BlockKey(2), 40, &at(2));
        s.access(BlockKey(3), 30, &at(3));
        assert_eq!((s.used_bytes(), s.len()), (110, 3));
        let o = s.evict(Nanos(3), &mut out);
        assert_eq!(out, vec![(BlockKey(1), 40)]);
        assert_eq!((o.objects, o.bytes, o.within_capacity), (1, 40, true));
        assert_eq!(s.prefix_len(&[BlockKey(2), BlockKey(3), BlockKey(1)]), 2);
        assert!(s.check().is_ok());
    }

    #[test]
    fn pinned_and_leased_objects_survive_and_leases_end_by_the_clock() {
        let mut s = seg(1);
        let mut out = vec![];
        s.access(BlockKey(1), 1, &at(0));
        s.access(BlockKey(2), 1, &at(1));
        let pin = s.pin(BlockKey(1)).unwrap();
        let token = s.read(BlockKey(2), Nanos(0), &lease_for(100)).unwrap();
        assert_eq!(token.expiry, Nanos(100));
        let o = s.evict(Nanos(2), &mut out);
        assert!(!o.within_capacity && out.is_empty());
        assert!(s.lease_valid(&token, Nanos(99)));
        // No explicit expiry call: the eviction's own clock ends the lease.
        assert!(!s.evict(Nanos(99), &mut out).within_capacity);
        assert!(s.evict(Nanos(100), &mut out).within_capacity);
        assert_eq!(out, vec![(BlockKey(2), 1)]);
        assert!(
            !s.lease_valid(&token, Nanos(100)),
            "a read that outlived its lease"
        );
        assert!(s.unpin(pin, Nanos(101)));
        assert!(s.is_evictable(BlockKey(1), Nanos(101)));
    }

    #[test]
    fn pinned_bytes_count_each_pinned_object_once() {
        let mut s = seg(100);
        s.access(BlockKey(1), 40, &at(0));
        s.access(BlockKey(2), 30, &at(1));
        assert_eq!(s.pinned_bytes(), 0);
        let a = s.pin(BlockKey(1)).unwrap();
        let b = s.pin(BlockKey(1)).unwrap();
        let c = s.pin(BlockKey(2)).unwrap();
        // Two pins of one object count its bytes once.
        assert_eq!(s.pinned_bytes(), 70);
        assert!(s.unpin(a, Nanos(2)));
        assert_eq!(s.pinned_bytes(), 70);
        assert!(s.unpin(b, Nanos(2)));
        assert_eq!(s.pinned_bytes(), 30);
        assert!(s.check().is_ok());
        // What eviction may free is what is not pinned.
        let mut out = vec![];
        assert!(s.make_room(70, Nanos(3), &mut out));
        assert_eq!(out, vec![(BlockKey(1), 40)]);
        assert!(!s.make_room(71, Nanos(3), &mut out));
        assert!(s.unpin(c, Nanos(4)));
        assert_eq!(s.pinned_bytes(), 0);
        assert!(s.check().is_ok());
    }

    #[test]
    fn an_extended_lease_is_not_ended_by_the_old_expiry() {
        let mut s = seg(0);
        let mut out = vec![];
        s.access(BlockKey(7), 1, &at(0));
        s.read(BlockKey(7), Nanos(0), &lease_for(10));
        let t = s.read(BlockKey(7), Nanos(10), &lease_for(10)).unwrap();
        assert_eq!(t.expiry, Nanos(20));
        assert!(!s.evict(Nanos(15), &mut out).within_capacity);
        assert!(s.evict(Nanos(20), &mut out).within_capacity);
        assert_eq!(out, vec![(BlockKey(7), 1)]);
    }

    #[test]
    fn tokens_and_pins_of_a_departed_object_are_stale() {
        let mut s = seg(1);
        let mut out = vec![];
        s.access(BlockKey(1), 1, &at(0));
        let t = s.read(BlockKey(1), Nanos(0), &lease_for(10)).unwrap();
        assert_eq!(s.remove(BlockKey(1), Nanos(1), true), Ok(1));
        // The slot is reused by another object, pinned.
        s.access(BlockKey(2), 1, &at(1));
        let p2 = s.pin(BlockKey(2)).unwrap();
        assert!(!s.lease_valid(&t, Nanos(2)));
        s.evict(Nanos(10), &mut out);
        assert!(
            out.is_empty() && s.contains(BlockKey(2)),
            "the old lease's expiry left the new object alone"
        );
        // The same key put again is another object: the old token stays stale.
        assert!(s.unpin(p2, Nanos(11)));
        s.access(BlockKey(1), 1, &at(11));
        s.evict(Nanos(11), &mut out);
        assert!(!s.lease_valid(&t, Nanos(11)));
    }

    #[test]
    fn soft_pins_are_taken_only_in_the_second_pass() {
        let mut s = seg(2);
        let mut out = vec![];
        for k in 1..=3 {
            s.access(BlockKey(k), 1, &at(k));
        }
        // LRU would drop 1; soft-pinned, 2 goes instead.
        s.soft_pin(BlockKey(1), Nanos(100));
        s.evict(Nanos(4), &mut out);
        assert_eq!(out, vec![(BlockKey(2), 1)]);
        // Capacity 0 is reached only by the soft-pinned objects, the pin
        // that ends first first, and never a leased one.
        let mut z = seg(0);
        z.access(BlockKey(7), 1, &at(0));
        z.access(BlockKey(8), 1, &at(1));
        z.soft_pin(BlockKey(7), Nanos(50));
        z.soft_pin(BlockKey(8), Nanos(40));
        z.lease(BlockKey(8), Nanos(60));
        let mut out = vec![];
        let o = z.evict(Nanos(2), &mut out);
        assert_eq!(out, vec![(BlockKey(7), 1)]);
        assert_eq!((o.soft_pinned, o.within_capacity), (1, false));
        assert_eq!(z.counters().soft_pin_evictions, 1);
        // Expiry hands the object back to the policy, at the MRU end.
        let mut c = seg(1);
        c.access(BlockKey(1), 1, &at(0));
        c.access(BlockKey(2), 1, &at(1));
        c.soft_pin(BlockKey(1), Nanos(10));
        let mut out = vec![];
        c.evict(Nanos(11), &mut out);
        assert!(!c.is_soft_pinned(BlockKey(1)));
        assert_eq!(out, vec![(BlockKey(2), 1)]);
    }

    #[test]
    fn a_soft_pin_starts_once_and_reads_do_not_renew_it() {
        let hot = MooncakeLeases {
            lease: Nanos::ZERO,
            soft_pin: Nanos(100),
            hot_after_reads: 2,
        };
        let mut s = seg(1);
        let mut out = vec![];
        s.access(BlockKey(1), 1, &at(0));
        s.read(BlockKey(1), Nanos(10), &hot);
        assert!(!s.is_soft_pinned(BlockKey(1)));
        s.read(BlockKey(1), Nanos(20), &hot);
        assert!(s.is_soft_pinned(BlockKey(1)), "hot at the second read");
        s.read(BlockKey(1), Nanos(90), &hot);
        // The pin ends at 20 + 100, whatever the read at 90 did.
        s.access(BlockKey(2), 1, &at(100));
        s.evict(Nanos(119), &mut out);
        assert_eq!(out, vec![(BlockKey(2), 1)]);
        s.access(BlockKey(3), 1, &at(120));
        s.evict(Nanos(120), &mut out);
        assert!(!s.is_soft_pinned(BlockKey(1)));
        // Ordinary again, and reads do not bring the pin back.
        s.read(BlockKey(1), Nanos(121), &hot);
        assert!(!s.is_soft_pinned(BlockKey(1)));
    }

    #[test]
    fn watermarks_evict_in_batches() {
        // 100 bytes, high 0.9, low 0.6: nothing happens at 90; at 91 the
        // oldest go until 60 remain.
        let mut s = Segment::new(
            PolicyKind::Lru.build(None),
            SegmentConfig {
                watermarks: Watermarks::from_ratio(0.9, 0.3),
                ..SegmentConfig::exact(Some(100))
            },
        );
        let mut out = vec![];
        for k in 0..9 {
            s.access(BlockKey(k), 10, &at(k));
        }
        assert_eq!(s.evict(Nanos(9), &mut out).objects, 0);
        s.access(BlockKey(9), 1, &at(9));
        let o = s.evict(Nanos(10), &mut out);
        assert_eq!(o.objects, 4, "{out:?}");
        assert_eq!(s.used_bytes(), 51);
        assert_eq!(
            out.iter().map(|e| e.0 .0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
    }

    #[test]
    fn two_phase_writes() {
        let mut s = seg(10);
        let r = s.reserve(BlockKey(1), 6, Nanos(0)).unwrap();
        assert_eq!(s.used_bytes(), 6);
        assert!(!s.contains(BlockKey(1)) && s.prefix_len(&[BlockKey(1)]) == 0);
        assert!(s.read(BlockKey(1), Nanos(0), &NoLeases).is_none());
        assert_eq!(
            s.remove(BlockKey(1), Nanos(0), true),
            Err(RemoveError::NotReady)
        );
        assert_eq!(
            s.reserve(BlockKey(1), 6, Nanos(1)),
            Err(ReserveError::Exists)
        );
        assert_eq!(
            s.reserve(BlockKey(2), 5, Nanos(1)),
            Err(ReserveError::NoSpace { needed: 5, free: 4 })
        );
        // Invisible to eviction: over-full by reservations alone, nothing goes.
        let mut out = vec![];
        s.access(BlockKey(3), 5, &at(1));
        s.evict(Nanos(1), &mut out);
        assert_eq!(out, vec![(BlockKey(3), 5)]);
        assert_eq!(s.commit(r, &at(2), Nanos(2)), Ok(()));
        assert!(s.contains(BlockKey(1)));
        let r2 = s.reserve(BlockKey(2), 4, Nanos(3)).unwrap();
        assert!(s.revoke(r2));
        assert_eq!(s.used_bytes(), 6);
        // No room for 8 more: make_room evicts what may go.
        assert!(s.make_room(8, Nanos(4), &mut out));
        assert_eq!(s.used_bytes(), 0);
        assert!(s.check().is_ok());
    }

    #[test]
    fn abandoned_reservations_are_taken_over_then_reclaimed() {
        let mut s = Segment::new(
            PolicyKind::Lru.build(None),
            SegmentConfig {
                put_timeout: Nanos::from_secs(600),
                preempt_after: Nanos::from_secs(30),
                ..SegmentConfig::exact(Some(100))
            },
        );
        let old = s.reserve(BlockKey(1), 10, Nanos::ZERO).unwrap();
        assert_eq!(
            s.reserve(BlockKey(1), 10, Nanos::from_secs(29)),
            Err(ReserveError::Exists)
        );
        let new = s.reserve(BlockKey(1), 10, Nanos::from_secs(30)).unwrap();
        assert_eq!(s.used_bytes(), 10);
        assert_eq!(
            s.commit(old, &at(0), Nanos::from_secs(31)),
            Err(CommitError::Expired)
        );
        assert_eq!(s.reserved_until(BlockKey(1)), Some(Nanos::from_secs(630)));
        s.advance(Nanos::from_secs(630));
        assert_eq!(s.used_bytes(), 0);
        assert_eq!(
            s.commit(new, &at(0), Nanos::from_secs(631)),
            Err(CommitError::Expired)
        );
        assert_eq!(s.counters().expired_reservations, 2);
        assert_eq!(s.held(), Held::default());
    }

    #[test]
    fn remove_refuses_what_is_in_use_or_leased() {
        let mut s = seg(10);
        s.access(BlockKey(1), 1, &at(0));
        assert_eq!(
            s.remove(BlockKey(9), Nanos(0), false),
            Err(RemoveError::NotFound)
        );
        let p = s.pin(BlockKey(1)).unwrap();
        assert_eq!(
            s.remove(BlockKey(1), Nanos(0), true),
            Err(RemoveError::Busy)
        );
        assert!(s.unpin(p, Nanos(0)));
        s.read(BlockKey(1), Nanos(0), &lease_for(10));
        assert_eq!(
            s.remove(BlockKey(1), Nanos(5), false),
            Err(RemoveError::Leased)
        );
        assert_eq!(s.remove(BlockKey(1), Nanos(10), false), Ok(1));
        s.access(BlockKey(2), 1, &at(11));
        s.read(BlockKey(2), Nanos(11), &lease_for(10));
        assert_eq!(s.remove(BlockKey(2), Nanos(12), true), Ok(1));
        assert!(s.is_empty());
    }

    #[test]
    fn unbounded_never_evicts() {
        let mut s: Segment = Segment::new(PolicyKind::Lru.build(None), SegmentConfig::exact(None));
        let mut out = vec![];
        for k in 0..1000 {
            s.access(BlockKey(k), 7, &at(k));
        }
        assert!(s.evict(Nanos(1000), &mut out).within_capacity);
        assert_eq!((s.len(), s.used_bytes()), (1000, 7000));
    }
}
