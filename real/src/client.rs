//! The store's client library (Mooncake Store's `Client`): Put, Get,
//! BatchPut, BatchGet, Query, Exist, Remove. Metadata goes through the
//! master; bytes go straight between the caller's registered memory and
//! the store nodes through the transfer engine.
//!
//! - **Put**: PutStart places the replicas; the bytes are written to every
//!   replica while each replica's node is told what is coming (its
//!   catalog's note); then PutEnd with the object's checksum, or PutRevoke
//!   if any write or note failed (the object never becomes visible
//!   half-written).
//! - **Get**: GetReplicaList (a leased read); the replica on this host
//!   first, then the one with the fewest bytes in flight from this client;
//!   the bytes are checked against the checksum, and a replica whose bytes
//!   do not match is skipped for the next; a read that outlived its lease
//!   fails with `LeaseExpired` (counted from before the request was sent,
//!   as upstream). A read returns the right bytes or an error, never wrong
//!   bytes.
//!
//! Checksums are XXH3-64 over the object's bytes (fast enough not to
//! matter next to a copy; upstream uses CRC-64).

use crate::clock::{Clock, MonotonicClock};
use crate::error::ErrorCode;
use crate::master::{ClientId, ObjectInfo, PutOptions, ReplicaDesc, SegmentStats};
use crate::node::MasterAddr;
use crate::rpc::client::{CallError, Located, MasterClient};
use crate::rpc::Secret;
use crate::transfer::tcp::{TcpConfig, TcpTransport};
use crate::transfer::topology::Topology;
use crate::transfer::wire::Note;
use crate::transfer::{
    EngineConfig, Opcode, Region, SegmentHandle, TaskStatus, TransferEngine, TransferRequest,
};
use moonlab_core::store::Tier;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::hash::Hasher as _;
use std::sync::Arc;

/// Runs a call; if the master could not be reached, finds it again (a
/// failover may have moved it) and runs the call once more.
macro_rules! with_failover {
    ($self:ident, $call:expr) => {{
        match $call {
            Err(ErrorCode::RpcFail | ErrorCode::RpcTimeout) => {
                $self.reconnect().await?;
                $call
            }
            r => r,
        }
    }};
}

/// The checksum every object carries.
pub fn checksum(bytes: &[u8]) -> u64 {
    twox_hash::XxHash3_64::oneshot(bytes)
}

/// A fresh random client id (the master tells writers apart by it).
pub fn random_client_id() -> ClientId {
    let mut b = [0u8; 8];
    // With no OS randomness, fall back to the pid and the clock.
    if getrandom::fill(&mut b).is_err() {
        let t = MonotonicClock::new().now().0;
        b = (t ^ (std::process::id() as u64) << 32).to_le_bytes();
    }
    ClientId(u64::from_le_bytes(b) | 1)
}

/// Where a client's bytes are: a registered region and a range in it.
#[derive(Clone, Debug)]
pub struct Buffer {
    pub region: Arc<Region>,
    pub offset: u64,
    pub len: u64,
}

impl Buffer {
    /// A fresh registered buffer holding a copy of `data`.
    pub fn copy_of(data: &[u8]) -> std::io::Result<Buffer> {
        let region = Arc::new(Region::new(data.len())?);
        region
            .write_at(0, data)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Buffer {
            region,
            offset: 0,
            len: data.len() as u64,
        })
    }

    /// A fresh zeroed buffer of `len` bytes.
    pub fn zeroed(len: u64) -> std::io::Result<Buffer> {
        Ok(Buffer {
            region: Arc::new(Region::new(len as usize)?),
            offset: 0,
            len,
        })
    }

    /// The bytes, copied out.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len as usize];
        // The range was checked when the buffer was made.
        let _ = self.region.read_at(self.offset, &mut v);
        v
    }

    fn checksum(&self) -> Result<u64, ErrorCode> {
        // SAFETY: the caller owns its buffer for the duration of the call.
        let bytes = unsafe { self.region.bytes(self.offset, self.len) }
            .map_err(|_| ErrorCode::InvalidParams)?;
        Ok(checksum(bytes))
    }
}

/// Settings of a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Where the master is: an address, or the leader of an election.
    pub master: MasterAddr,
    pub secret: Secret,
    /// Segment names on this host (read from first).
    pub local_segments: Vec<String>,
    pub topology: Topology,
    pub engine: EngineConfig,
    pub tcp: TcpConfig,
    /// Map the segments of store nodes on this host and copy in place
    /// (the same-host path) instead of going through sockets.
    pub same_host: bool,
}

impl ClientConfig {
    pub fn new(master: &str, secret: Secret) -> ClientConfig {
        ClientConfig {
            master: MasterAddr::Fixed(master.to_string()),
            secret,
            local_segments: Vec::new(),
            topology: Topology::loopback(),
            engine: EngineConfig::default(),
            tcp: TcpConfig::default(),
            same_host: true,
        }
    }
}

/// A client of the store.
pub struct StoreClient {
    master: MasterClient,
    addr: MasterAddr,
    secret: Secret,
    engine: TransferEngine,
    local: HashSet<String>,
    segments: Mutex<HashMap<String, SegmentHandle>>,
    inflight: Mutex<HashMap<String, u64>>,
    clock: MonotonicClock,
}

fn call(e: CallError) -> ErrorCode {
    e.code
}

impl StoreClient {
    pub async fn connect(config: ClientConfig) -> Result<StoreClient, CallError> {
        let addr = config.master.resolve().await.map_err(|e| CallError {
            code: ErrorCode::RpcFail,
            detail: e,
        })?;
        let master = MasterClient::connect(&addr, &config.secret, random_client_id()).await?;
        let mut engine = TransferEngine::new(
            Arc::new(TcpTransport::new(config.tcp.clone(), config.secret.clone())),
            config.topology.clone(),
            config.engine.clone(),
        );
        if config.same_host {
            engine = engine.with_same_host(config.secret.clone());
        }
        Ok(StoreClient {
            master,
            addr: config.master.clone(),
            secret: config.secret.clone(),
            engine,
            local: config.local_segments.into_iter().collect(),
            segments: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            clock: MonotonicClock::new(),
        })
    }

    pub fn master(&mut self) -> &mut MasterClient {
        &mut self.master
    }

    async fn segment(&self, endpoint: &str) -> Result<SegmentHandle, ErrorCode> {
        if let Some(h) = self.segments.lock().get(endpoint) {
            return Ok(h.clone());
        }
        let h = self.engine.open_segment(endpoint).await?;
        self.segments.lock().insert(endpoint.to_string(), h.clone());
        Ok(h)
    }

    async fn write_replicas(
        &self,
        buf: &Buffer,
        replicas: &[ReplicaDesc],
    ) -> Result<(), ErrorCode> {
        let mut reqs = Vec::with_capacity(replicas.len());
        for r in replicas {
            let target = self.segment(&r.endpoint).await?;
            reqs.push(TransferRequest {
                opcode: Opcode::Write,
                local: buf.region.clone(),
                local_offset: buf.offset,
                target,
                target_offset: r.offset,
                length: buf.len,
            });
        }
        let st = self.engine.transfer(reqs).await;
        match st.into_iter().find(|s| *s != TaskStatus::Completed) {
            None => Ok(()),
            Some(TaskStatus::Failed(e)) => Err(e),
            Some(_) => Err(ErrorCode::TransferFail),
        }
    }

    /// Tells each replica's store node what was put there (its catalog,
    /// which a master that takes over rebuilds its table from).
    async fn note_replicas(
        &self,
        key: &str,
        sum: u64,
        len: u64,
        replicas: &[ReplicaDesc],
    ) -> Result<(), ErrorCode> {
        for r in replicas {
            let target = self.segment(&r.endpoint).await?;
            let note = Note {
                object: r.object,
                offset: r.offset,
                size: len,
                checksum: sum,
                key: key.to_string(),
            };
            self.engine.note(&target, &note).await?;
        }
        Ok(())
    }

    /// Withdraws the notes of a put that failed (best effort: the master
    /// frees the object's range anyway, and a note left behind is released
    /// by the next heartbeat that reports it freed).
    async fn withdraw_notes(&self, key: &str, replicas: &[ReplicaDesc]) {
        for r in replicas {
            if let Ok(target) = self.segment(&r.endpoint).await {
                let withdraw = Note {
                    object: r.object,
                    offset: r.offset,
                    size: 0,
                    checksum: 0,
                    key: key.to_string(),
                };
                let _ = self.engine.note(&target, &withdraw).await;
            }
        }
    }

    /// Put: stores `buf` under `key` (the bytes go from `buf` to every
    /// replica with no staging copy).
    async fn put_from_once(
        &mut self,
        key: &str,
        buf: &Buffer,
        opts: &PutOptions,
    ) -> Result<(), ErrorCode> {
        // The checksum is computed while PutStart is on its way (after
        // yielding once, so that on a single-threaded runtime the request
        // is sent first).
        let (replicas, sum) = tokio::join!(self.master.put_start(key, buf.len, opts), async {
            tokio::task::yield_now().await;
            buf.checksum()
        });
        let replicas = replicas.map_err(call)?;
        let sum = match sum {
            Ok(sum) => sum,
            Err(e) => {
                let _ = self.master.put_revoke(key).await;
                return Err(e);
            }
        };
        // The node's note travels with the bytes, not after them: a note
        // whose bytes never landed fails its checksum when the node
        // reports its catalog, and a failed put withdraws its notes before
        // it is revoked. (The segments are opened first, once.)
        let mut opened = Ok(());
        for r in &replicas {
            if let Err(e) = self.segment(&r.endpoint).await {
                opened = Err(e);
                break;
            }
        }
        let done = match opened {
            Ok(()) => {
                let (written, noted) = tokio::join!(
                    self.write_replicas(buf, &replicas),
                    self.note_replicas(key, sum, buf.len, &replicas)
                );
                written.and(noted)
            }
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => self.master.put_end(key, Some(sum)).await.map_err(call),
            Err(e) => {
                // Never visible half-written, nor after a failover.
                self.withdraw_notes(key, &replicas).await;
                let _ = self.master.put_revoke(key).await;
                Err(e)
            }
        }
    }

    /// Put of bytes in ordinary memory (copied once into a registered
    /// buffer).
    async fn put_once(
        &mut self,
        key: &str,
        data: &[u8],
        opts: &PutOptions,
    ) -> Result<(), ErrorCode> {
        let buf = Buffer::copy_of(data).map_err(|_| ErrorCode::Internal)?;
        self.put_from_once(key, &buf, opts).await
    }

    /// BatchPut: one PutStart batch, one transfer batch, one PutEnd batch;
    /// results per key.
    async fn batch_put_from_once(
        &mut self,
        items: &[(String, Buffer)],
        opts: &PutOptions,
    ) -> Result<Vec<Result<(), ErrorCode>>, ErrorCode> {
        let sums: Vec<Result<u64, ErrorCode>> = items.iter().map(|(_, b)| b.checksum()).collect();
        let starts = self
            .master
            .batch_put_start(
                &items
                    .iter()
                    .map(|(k, b)| (k.clone(), b.len))
                    .collect::<Vec<_>>(),
                opts,
            )
            .await
            .map_err(call)?;
        let mut results: Vec<Result<(), ErrorCode>> = vec![Ok(()); items.len()];
        let mut reqs = Vec::new();
        let mut owner = Vec::new();
        for (i, ((_, buf), start)) in items.iter().zip(&starts).enumerate() {
            match (start, &sums[i]) {
                (Ok(replicas), Ok(_)) => {
                    for r in replicas {
                        match self.segment(&r.endpoint).await {
                            Ok(target) => {
                                reqs.push(TransferRequest {
                                    opcode: Opcode::Write,
                                    local: buf.region.clone(),
                                    local_offset: buf.offset,
                                    target,
                                    target_offset: r.offset,
                                    length: buf.len,
                                });
                                owner.push(i);
                            }
                            Err(e) => results[i] = Err(e),
                        }
                    }
                }
                (Err(e), _) => results[i] = Err(e.code),
                (_, Err(e)) => results[i] = Err(*e),
            }
        }
        // Notes travel with the bytes (as for one put).
        let noting = async {
            let mut noted = Vec::new();
            for (i, ((k, buf), start)) in items.iter().zip(&starts).enumerate() {
                if let (Ok(replicas), Ok(()), Ok(sum)) = (start, &results[i], &sums[i]) {
                    noted.push((i, self.note_replicas(k, *sum, buf.len, replicas).await));
                }
            }
            noted
        };
        let (st, noted) = tokio::join!(self.engine.transfer(reqs), noting);
        for (i, r) in noted {
            if let Err(e) = r {
                results[i] = Err(e);
            }
        }
        for (s, &i) in st.iter().zip(&owner) {
            if results[i].is_ok() && *s != TaskStatus::Completed {
                results[i] = Err(match s {
                    TaskStatus::Failed(e) => *e,
                    _ => ErrorCode::TransferFail,
                });
            }
        }
        let mut ends = Vec::new();
        let mut revokes = Vec::new();
        for (i, (k, _)) in items.iter().enumerate() {
            match (&starts[i], &results[i]) {
                (Ok(_), Ok(())) => ends.push((k.clone(), sums[i].as_ref().ok().copied())),
                (Ok(replicas), Err(_)) => {
                    self.withdraw_notes(k, replicas).await;
                    revokes.push(k.clone());
                }
                _ => {}
            }
        }
        if !revokes.is_empty() {
            let _ = self.master.batch_put_revoke(&revokes).await;
        }
        if !ends.is_empty() {
            let done = self.master.batch_put_end(&ends).await.map_err(call)?;
            let mut it = done.into_iter();
            for (i, r) in results.iter_mut().enumerate() {
                if starts[i].is_ok() && r.is_ok() {
                    if let Some(Err(e)) = it.next() {
                        *r = Err(e.code);
                    }
                }
            }
        }
        Ok(results)
    }

    /// The order replicas are tried in: this host's first, then DRAM
    /// before SSD, then the fewest bytes in flight from this client.
    fn order(&self, replicas: &[ReplicaDesc]) -> Vec<ReplicaDesc> {
        let inflight = self.inflight.lock();
        let mut v: Vec<(bool, bool, u64, usize, ReplicaDesc)> = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    !self.local.contains(&r.segment),
                    r.tier != Tier::Dram,
                    inflight.get(&r.endpoint).copied().unwrap_or(0),
                    i,
                    r.clone(),
                )
            })
            .collect();
        v.sort_by_key(|x| (x.0, x.1, x.2, x.3));
        v.into_iter().map(|x| x.4).collect()
    }

    /// Reads replica `r` into `into`; returns the checksum of what was
    /// read when it was computed on the way (a mapped segment).
    async fn read_one(&self, r: &ReplicaDesc, into: &Buffer) -> Result<Option<u64>, ErrorCode> {
        let target = self.segment(&r.endpoint).await?;
        let mut sum = twox_hash::XxHash3_64::new();
        if let Some(read) = self.engine.read_mapped(
            &target,
            r.offset,
            &into.region,
            into.offset,
            into.len,
            &mut |piece| sum.write(piece),
        ) {
            return read.map(|()| Some(sum.finish()));
        }
        *self.inflight.lock().entry(r.endpoint.clone()).or_default() += into.len;
        let st = self
            .engine
            .transfer(vec![TransferRequest {
                opcode: Opcode::Read,
                local: into.region.clone(),
                local_offset: into.offset,
                target,
                target_offset: r.offset,
                length: into.len,
            }])
            .await;
        if let Some(n) = self.inflight.lock().get_mut(&r.endpoint) {
            *n = n.saturating_sub(into.len);
        }
        match st.first() {
            Some(TaskStatus::Completed) => Ok(None),
            Some(TaskStatus::Failed(e)) => Err(*e),
            _ => Err(ErrorCode::TransferFail),
        }
    }

    /// Reads a located object into `into` (its length must be the
    /// object's), verifying the checksum and the lease.
    async fn fetch(&self, located: &Located, started: u64, into: &Buffer) -> Result<(), ErrorCode> {
        if into.len != located.size {
            return Err(ErrorCode::InvalidParams);
        }
        let mut last = ErrorCode::ObjectNotFound;
        for r in self.order(&located.replicas) {
            let read_sum = match self.read_one(&r, into).await {
                Ok(s) => s,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            if self.clock.now().0.saturating_sub(started) >= located.lease_ttl.0 {
                // The bytes may have been evicted and reused while we read.
                return Err(ErrorCode::LeaseExpired);
            }
            match located.checksum {
                Some(sum) if read_sum.map_or_else(|| into.checksum(), Ok)? != sum => {
                    last = ErrorCode::ChecksumMismatch
                }
                _ => return Ok(()),
            }
        }
        Err(last)
    }

    /// Get into a registered buffer of the object's size.
    async fn get_into_once(&mut self, key: &str, into: &Buffer) -> Result<(), ErrorCode> {
        let started = self.clock.now().0;
        let located = self.master.get_replica_list(key).await.map_err(call)?;
        self.fetch(&located, started, into).await
    }

    /// Get: the object's bytes.
    async fn get_once(&mut self, key: &str) -> Result<Vec<u8>, ErrorCode> {
        let started = self.clock.now().0;
        let located = self.master.get_replica_list(key).await.map_err(call)?;
        let buf = Buffer::zeroed(located.size).map_err(|_| ErrorCode::Internal)?;
        self.fetch(&located, started, &buf).await?;
        Ok(buf.to_vec())
    }

    /// BatchGet: one lookup batch, then each object read (results per key).
    async fn batch_get_once(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Result<Vec<u8>, ErrorCode>>, ErrorCode> {
        let started = self.clock.now().0;
        let located = self
            .master
            .batch_get_replica_list(keys)
            .await
            .map_err(call)?;
        let mut out = Vec::with_capacity(keys.len());
        for l in located {
            out.push(match l {
                Ok(l) => match Buffer::zeroed(l.size) {
                    Ok(buf) => self.fetch(&l, started, &buf).await.map(|()| buf.to_vec()),
                    Err(_) => Err(ErrorCode::Internal),
                },
                Err(e) => Err(e.code),
            });
        }
        Ok(out)
    }

    /// Query: where the object is (a leased read of its metadata).
    async fn query_once(&mut self, key: &str) -> Result<Located, ErrorCode> {
        self.master.get_replica_list(key).await.map_err(call)
    }

    async fn exist_once(&mut self, key: &str) -> Result<bool, ErrorCode> {
        self.master.exist(key).await.map_err(call)
    }

    async fn remove_once(&mut self, key: &str, force: bool) -> Result<(), ErrorCode> {
        self.master.remove(key, force).await.map_err(call)
    }

    async fn list_once(&mut self, prefix: &str, limit: u32) -> Result<Vec<ObjectInfo>, ErrorCode> {
        self.master.list(prefix, limit).await.map_err(call)
    }

    async fn stats_once(&mut self) -> Result<(Vec<SegmentStats>, u64), ErrorCode> {
        self.master.stats().await.map_err(call)
    }

    /// Put: stores `buf` under `key` (the bytes go from `buf` to every
    /// replica with no staging copy).
    pub async fn put_from(
        &mut self,
        key: &str,
        buf: &Buffer,
        opts: &PutOptions,
    ) -> Result<(), ErrorCode> {
        with_failover!(self, self.put_from_once(key, buf, opts).await)
    }

    /// Put of bytes in ordinary memory (copied once into a registered
    /// buffer).
    pub async fn put(
        &mut self,
        key: &str,
        data: &[u8],
        opts: &PutOptions,
    ) -> Result<(), ErrorCode> {
        with_failover!(self, self.put_once(key, data, opts).await)
    }

    /// BatchPut: one PutStart batch, one transfer batch, one PutEnd batch;
    /// results per key.
    pub async fn batch_put_from(
        &mut self,
        items: &[(String, Buffer)],
        opts: &PutOptions,
    ) -> Result<Vec<Result<(), ErrorCode>>, ErrorCode> {
        with_failover!(self, self.batch_put_from_once(items, opts).await)
    }

    /// Get into a registered buffer of the object's size.
    pub async fn get_into(&mut self, key: &str, into: &Buffer) -> Result<(), ErrorCode> {
        with_failover!(self, self.get_into_once(key, into).await)
    }

    /// Get: the object's bytes.
    pub async fn get(&mut self, key: &str) -> Result<Vec<u8>, ErrorCode> {
        with_failover!(self, self.get_once(key).await)
    }

    /// BatchGet: one lookup batch, then each object read (results per key).
    pub async fn batch_get(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Result<Vec<u8>, ErrorCode>>, ErrorCode> {
        with_failover!(self, self.batch_get_once(keys).await)
    }

    /// Query: where the object is (a leased read of its metadata).
    pub async fn query(&mut self, key: &str) -> Result<Located, ErrorCode> {
        with_failover!(self, self.query_once(key).await)
    }

    /// Exist: true if the object is readable (and then leased).
    pub async fn exist(&mut self, key: &str) -> Result<bool, ErrorCode> {
        with_failover!(self, self.exist_once(key).await)
    }

    /// Per key, whether it is there, without touching it (no lease, no
    /// access counted): for a scheduler's view.
    pub async fn batch_contains(&mut self, keys: &[String]) -> Result<Vec<bool>, ErrorCode> {
        with_failover!(self, self.master.batch_contains(keys).await.map_err(call))
    }

    /// Remove (refused while leased unless `force`).
    pub async fn remove(&mut self, key: &str, force: bool) -> Result<(), ErrorCode> {
        with_failover!(self, self.remove_once(key, force).await)
    }

    /// The objects whose key starts with `prefix`.
    pub async fn list(&mut self, prefix: &str, limit: u32) -> Result<Vec<ObjectInfo>, ErrorCode> {
        with_failover!(self, self.list_once(prefix, limit).await)
    }

    /// The segments and the number of committed objects.
    pub async fn stats(&mut self) -> Result<(Vec<SegmentStats>, u64), ErrorCode> {
        with_failover!(self, self.stats_once().await)
    }

    /// Opens every mounted segment now (maps the same-host ones), so that
    /// the first operations on them do not pay for it; returns how many
    /// are open. A segment that cannot be opened is left for the first
    /// operation that needs it to report.
    pub async fn open_segments(&mut self) -> Result<usize, ErrorCode> {
        let (segments, _) = self.stats().await?;
        let mut open = 0;
        for s in segments {
            if self.segment(&s.endpoint).await.is_ok() {
                open += 1;
            }
        }
        Ok(open)
    }

    /// Finds the master again (the elected one, when there is an election)
    /// and connects to it with the same client id.
    pub async fn reconnect(&mut self) -> Result<(), ErrorCode> {
        let addr = self.addr.resolve().await.map_err(|_| ErrorCode::RpcFail)?;
        self.master = MasterClient::connect(&addr, &self.secret, self.master.id())
            .await
            .map_err(call)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_is_xxh3_64_and_the_same_hashed_in_pieces() {
        // XXH3-64 of nothing, seed 0 (the reference implementation's value).
        assert_eq!(checksum(b""), 0x2D06_8005_38D3_94C2);
        let bytes: Vec<u8> = (0..(3usize << 20) + 7)
            .map(|i| (i * 131 % 251) as u8)
            .collect();
        for len in [0, 1, 240, 241, 1024, 65_536, 65_537, bytes.len()] {
            let mut h = twox_hash::XxHash3_64::new();
            for piece in bytes[..len].chunks(64 << 10) {
                h.write(piece);
            }
            assert_eq!(h.finish(), checksum(&bytes[..len]), "{len} bytes");
        }
    }
}
