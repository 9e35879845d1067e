//! moonlab's real backend: a Mooncake-style distributed KVCache store whose
//! rules are core's (the same segments, leases, pins and eviction policies
//! the simulator runs), with real bytes.
//!
//! - [`master`]: the object table, replica placement, two-phase writes,
//!   leases, eviction, mounting and client heartbeats (a state machine
//!   with time handed in);
//! - [`rpc`]: the master over gRPC (server with its periodic work, client);
//! - [`transfer`]: the transfer engine (batches of READ/WRITE into
//!   registered memory, sliced and striped over paths; TCP transport);
//! - [`client`]: the client library (Put, Get, batches, Query, Remove;
//!   checksums verified on every read);
//! - [`ssd`]: the SSD tier's direct I/O (O_DIRECT; io_uring, or a fallback);
//! - [`catalog`]: what a store node holds, reported to a master that takes
//!   over;
//! - [`node`]: the master and store-node processes;
//! - [`replay`]: a trace replayed on the store: prefill and decode workers
//!   that wait the cost model's time while moving real KV bytes, and the
//!   Conductor (core's `Scheduler` on a view built from the master);
//! - [`bench`]: transfer-engine and store benchmarks (measure, never assert);
//! - [`metadata`]: the metadata service (in-process, etcd); [`etcd_server`]:
//!   a private etcd for `moonlab cluster --etcd` and tests;
//! - [`error`]: the error codes, with upstream's numbers;
//! - [`clock`]: the one place that reads a clock.
//!
//! Upstream semantics this follows, with file and line references, are in
//! `real/UPSTREAM.md` and `real/UPSTREAM-STORE.md`.

pub mod bench;
pub mod catalog;
pub mod client;
pub mod clock;
pub mod error;
pub mod etcd_server;
pub mod master;
pub mod metadata;
pub mod node;
pub mod replay;
pub mod rpc;
pub mod ssd;
pub mod transfer;
