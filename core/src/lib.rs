//! moonlab-core: the domain types, the policy traits and every policy.
//!
//! This crate is the seam between the simulator (`moonlab-sim`) and the real
//! backend: a policy written here runs unchanged in both. It does no I/O,
//! never reads a clock (time is handed in as [`Nanos`]) and never seeds a
//! random generator of its own.

pub mod capacity;
pub mod cost;
pub mod eviction;
pub mod fidelity;
pub mod lease;
pub mod metrics;
pub mod placement;
pub mod roles;
pub mod sched;
pub mod store;
pub mod types;

pub use capacity::{Capacity, CapacityError};
pub use types::{BlockKey, InstanceId, Nanos, Request};
