//! A mounted segment as the master keeps it: core's [`Segment`] (the rules:
//! reservations, leases, pins, soft pins, eviction by the configured
//! policy, all in bytes) beside a range allocator that places each object
//! at an offset inside the store node's registered memory. The two agree
//! by construction: every object the core segment holds has exactly one
//! allocated range here, taken when it is reserved and freed through the
//! object's id (its handle) when the master releases it.
//!
//! The allocator is `range-alloc` (best fit, neighbours merged on free).
//! Unlike a size-class allocator it can be rebuilt from a list of occupied
//! ranges, which a standby master needs to take over the store nodes'
//! objects where they lie (see [`SegmentState::adopt`]).

use super::{ClientId, SegmentDesc};
use crate::error::ErrorCode;
use moonlab_core::eviction::Access;
use moonlab_core::store::{Reservation, ReserveError, Segment};
use moonlab_core::types::{BlockKey, Nanos};
use parking_lot::Mutex;
use range_alloc::RangeAllocator;
use rustc_hash::FxHashMap;
use std::ops::Range;
use std::sync::Arc;

/// The master's id of a mounted segment (never reused while it runs).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u32);

/// One mounted segment.
pub(crate) struct MountedSegment {
    pub id: SegmentId,
    pub desc: SegmentDesc,
    pub owner: ClientId,
    pub state: Mutex<SegmentState>,
}

/// What an object holds in a segment: its bytes and the key it was
/// written under (so an eviction can find its table entry).
struct Placed {
    range: Range<u64>,
    key: Arc<str>,
}

pub(crate) struct SegmentState {
    pub core: Segment,
    alloc: RangeAllocator<u64>,
    placed: FxHashMap<BlockKey, Placed>,
    /// Bytes a put could not find since the last eviction run: the next
    /// run makes room for them even below the high watermark (upstream's
    /// `need_mem_eviction_`).
    pub pending_room: u64,
    /// False once unmounted: its replicas are gone.
    pub mounted: bool,
    /// Objects take whole units of this many bytes (1 in DRAM; the SSD
    /// tier's 4 KiB blocks), in core's accounting and in the allocator.
    granularity: u64,
    /// Ids of objects whose ranges were freed since the owner last asked
    /// ([`SegmentState::take_released`]): the store node drops them from
    /// the catalog it reports after a failover.
    released: Vec<u64>,
}

/// The most released ids kept for a store node that does not ask; past it
/// the oldest are dropped (the node then reports objects the master no
/// longer has, and their checksums or ranges decide).
pub const MAX_RELEASED: usize = 1 << 20;

impl SegmentState {
    pub fn new(core: Segment, size: u64, granularity: u64) -> SegmentState {
        SegmentState {
            core,
            alloc: RangeAllocator::new(0..size),
            placed: FxHashMap::default(),
            pending_room: 0,
            mounted: true,
            released: Vec::new(),
            granularity: granularity.max(1),
        }
    }

    /// PutStart on this segment: space in core's accounting and a range in
    /// the store node's memory, or neither.
    pub fn reserve(
        &mut self,
        id: BlockKey,
        key: &Arc<str>,
        bytes: u64,
        now: Nanos,
    ) -> Result<(Reservation, u64), ErrorCode> {
        if !self.mounted {
            return Err(ErrorCode::NoAvailableHandle);
        }
        let bytes = bytes.div_ceil(self.granularity) * self.granularity;
        let r = match self.core.reserve(id, bytes, now) {
            Ok(r) => r,
            Err(ReserveError::NoSpace { .. }) => return Err(ErrorCode::NoAvailableHandle),
            // Object ids are never reused, so this is a master bug.
            Err(ReserveError::Exists) => return Err(ErrorCode::Internal),
        };
        match self.alloc.allocate_range(bytes) {
            Ok(range) => {
                let offset = range.start;
                self.placed.insert(
                    id,
                    Placed {
                        range,
                        key: key.clone(),
                    },
                );
                Ok((r, offset))
            }
            Err(_) => {
                // Fragmentation: the bytes fit in sum but not in one piece.
                self.core.revoke(r);
                Err(ErrorCode::NoAvailableHandle)
            }
        }
    }

    /// Frees the range object `id` holds; false if it holds none.
    pub fn free(&mut self, id: BlockKey) -> bool {
        match self.placed.remove(&id) {
            Some(p) => {
                self.alloc.free_range(p.range);
                self.note_released(id);
                true
            }
            None => false,
        }
    }

    fn note_released(&mut self, id: BlockKey) {
        if self.released.len() >= MAX_RELEASED {
            self.released.drain(..MAX_RELEASED / 2);
        }
        self.released.push(id.0);
    }

    /// The ids released since the last call.
    pub fn take_released(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.released)
    }

    /// The offset of object `id`, if it holds a range here.
    pub fn offset(&self, id: BlockKey) -> Option<u64> {
        self.placed.get(&id).map(|p| p.range.start)
    }

    /// One eviction run: room for the bytes a failed put wanted, then the
    /// watermarks. Victims' ranges are freed; their (id, key) are pushed to
    /// `out` for the object table.
    pub fn evict(&mut self, now: Nanos, out: &mut Vec<(BlockKey, Arc<str>)>) -> u64 {
        let mut victims = Vec::new();
        if self.pending_room > 0 {
            // At most the whole segment (more can never fit).
            let room = self.pending_room.min(self.alloc.initial_range().end);
            self.core.make_room(room, now, &mut victims);
            self.pending_room = 0;
        }
        self.core.evict(now, &mut victims);
        let n = victims.len() as u64;
        for (id, _) in victims {
            if let Some(p) = self.placed.remove(&id) {
                self.alloc.free_range(p.range);
                self.note_released(id);
                out.push((id, p.key));
            }
        }
        n
    }

    /// Unmounts: every object here is gone. Returns their (id, key).
    pub fn unmount(&mut self) -> Vec<(BlockKey, Arc<str>)> {
        self.mounted = false;
        let mut out: Vec<_> = self.placed.drain().map(|(id, p)| (id, p.key)).collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Takes over an object a store node reports, at the range where it
    /// lies (a standby master rebuilding its table). The range must lie in
    /// the segment and overlap nothing already placed; the object is
    /// committed at once. False if it cannot be adopted.
    pub fn adopt(&mut self, id: BlockKey, key: &Arc<str>, range: Range<u64>, now: Nanos) -> bool {
        let size = self.alloc.initial_range().end;
        let g = self.granularity;
        let range = range.start..range.end.div_ceil(g) * g;
        if range.start >= range.end || range.end > size || range.start % g != 0 {
            return false;
        }
        if self
            .placed
            .values()
            .any(|p| p.range.start < range.end && range.start < p.range.end)
        {
            return false;
        }
        let Ok(r) = self.core.reserve(id, range.end - range.start, now) else {
            return false;
        };
        if self.core.commit(r, &Access::at(now), now).is_err() {
            return false;
        }
        self.placed.insert(
            id,
            Placed {
                range,
                key: key.clone(),
            },
        );
        true
    }

    /// After every object is adopted: the allocator is rebuilt so that
    /// exactly the gaps between placed ranges are free.
    pub fn rebuild_allocator(&mut self) {
        let size = self.alloc.initial_range().end;
        let mut alloc = RangeAllocator::new(0..size);
        // Take everything, then give back the gaps.
        if size > 0 && alloc.allocate_range(size).is_err() {
            return;
        }
        let mut ranges: Vec<Range<u64>> = self.placed.values().map(|p| p.range.clone()).collect();
        ranges.sort_by_key(|r| r.start);
        let mut at = 0;
        for r in ranges {
            if r.start > at {
                alloc.free_range(at..r.start);
            }
            at = at.max(r.end);
        }
        if at < size {
            alloc.free_range(at..size);
        }
        self.alloc = alloc;
    }

    /// Checks that core's accounting and the allocator agree: the ranges
    /// lie inside the segment, do not overlap, and sum to core's bytes in
    /// use; every committed core object holds a range.
    pub fn check(&self) -> Result<(), String> {
        self.core.check()?;
        let size = self.alloc.initial_range().end;
        let mut ranges: Vec<(Range<u64>, BlockKey)> = self
            .placed
            .iter()
            .map(|(id, p)| (p.range.clone(), *id))
            .collect();
        ranges.sort_by_key(|(r, _)| r.start);
        let mut end = 0;
        let mut sum = 0u64;
        for (r, id) in &ranges {
            if r.start < end || r.end > size || r.start >= r.end {
                return Err(format!(
                    "object {id:?}: range {r:?} overlaps or leaves the segment"
                ));
            }
            end = r.end;
            sum += r.end - r.start;
        }
        if sum != self.core.used_bytes() {
            return Err(format!(
                "allocated ranges sum to {sum} bytes, core counts {}",
                self.core.used_bytes()
            ));
        }
        for id in self.core.keys() {
            if !self.placed.contains_key(&id) {
                return Err(format!("committed object {id:?} holds no range"));
            }
        }
        Ok(())
    }
}
