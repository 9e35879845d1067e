//! The store side of the seam: what a KVCache pool keeps and the rules it
//! enforces, shared by the simulator's pool model and the real master.
//!
//! - [`segment`]: one segment's objects in bytes, two-phase writes, leases,
//!   pins, soft pins and eviction by watermarks;
//! - [`pool`]: segments apart from instances, and the prefix index over them;
//! - [`scenario`]: a small text language of store scenarios (put, commit,
//!   revoke, read, advance time, expect kept / evicted / refused) that runs
//!   against any [`scenario::ObjectStore`], a segment or the real master.

pub mod pool;
pub mod scenario;
pub mod segment;

pub use pool::{prefix_spans, Pool, PoolPrefix, PrefixSpan, SegmentId, SegmentInfo, Tier};
pub use segment::{
    CommitError, EvictOutcome, Held, LeaseToken, Pin, RemoveError, Reservation, ReserveError,
    Segment, SegmentConfig, SegmentCounters, Touched, Watermarks,
};
