//! The master of the real store (Mooncake Store's `MasterService`): which
//! objects exist, where their replicas lie, who may read and remove them.
//! No object byte passes through it; store nodes hold the bytes and
//! clients move them with the transfer engine.
//!
//! The rules are core's: every mounted segment is a core
//! [`Segment`](moonlab_core::store::Segment) (two-phase writes, leases,
//! pins, soft pins, eviction by the configured [`PolicyKind`] past the
//! watermarks), with a range allocator beside it for offsets
//! ([`segments`]). What the master adds is what core does not know:
//! objects with several replicas on distinct segments, clients and their
//! heartbeats, mounting, and the object table.
//!
//! Concurrency: the object table is split into [`MasterConfig::shards`]
//! shards (upstream: 1024) by key hash, each behind its own lock, so no
//! global lock serialises clients; each segment has its own lock. Locks are
//! taken shard first, then segment, never the other way: an eviction frees
//! its victims under the segment's lock and only then, with that lock
//! released, removes them from their shards. A replica whose segment no
//! longer holds its object (evicted, unmounted) is never handed out: the
//! segment is the truth and the table its index.
//!
//! Time is handed in (`now`) to every call; the RPC service reads its clock
//! once per request.

mod segments;

pub use segments::SegmentId;

use crate::error::ErrorCode;
use moonlab_core::eviction::{Access, PolicyKind};
use moonlab_core::lease::{LeaseKind, LeaseParams, LeasePolicy};
use moonlab_core::store::{
    LeaseToken, Pin, RemoveError, Reservation, SegmentConfig, Tier, Watermarks,
};
use moonlab_core::types::{BlockKey, Nanos};
use parking_lot::{Mutex, RwLock};
use rustc_hash::{FxHashMap, FxHasher};
use segments::{MountedSegment, SegmentState};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// The most replicas one object may ask for.
pub const MAX_REPLICAS: u32 = 16;
/// The largest object (1 TiB, upstream's largest segment).
pub const MAX_OBJECT_BYTES: u64 = 1 << 40;
/// Segment sizes a store node may mount (upstream: 1 KiB … 1 TiB).
pub const SEGMENT_BYTES: std::ops::RangeInclusive<u64> = 1024..=(1 << 40);
/// The longest segment name or endpoint.
pub const MAX_NAME_BYTES: usize = 256;

/// The master's rules and timeouts. The defaults are upstream's compiled
/// defaults (`mooncake-store/include/types.h`).
#[derive(Clone, Debug, PartialEq)]
pub struct MasterConfig {
    /// Per segment: eviction starts above `high` and frees down to `low`
    /// (upstream: 0.90 with an eviction ratio of 0.05).
    pub watermarks: Watermarks,
    /// The eviction policy each segment runs.
    pub policy: PolicyKind,
    /// The lease a read grants (10 s).
    pub lease: Nanos,
    /// How long a soft pin requested by a put lasts (30 min).
    pub soft_pin: Nanos,
    /// An unfinished put is reclaimed after this (600 s).
    pub put_timeout: Nanos,
    /// A new put of the same key may take over an unfinished one after this
    /// (30 s).
    pub preempt_after: Nanos,
    /// A client silent for this long has its segments unmounted (10 s).
    pub client_ttl: Nanos,
    /// Object-table shards (1024).
    pub shards: usize,
    /// The lease policy a read goes through (core's: `mooncake` leases and
    /// soft-pins, `none`), and after how many reads an object is soft-pinned
    /// (0: only when its put asks, as upstream).
    pub lease_kind: LeaseKind,
    pub hot_after_reads: u64,
    /// The high bits of this master's object ids (a random value per
    /// master process), so that ids stay unique across a failover: a
    /// standby adopts the ids the store nodes report.
    pub id_epoch: u32,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            watermarks: Watermarks::MOONCAKE,
            policy: PolicyKind::Lru,
            lease: Nanos::from_secs(10),
            soft_pin: Nanos::from_secs(30 * 60),
            put_timeout: Nanos::from_secs(600),
            preempt_after: Nanos::from_secs(30),
            client_ttl: Nanos::from_secs(10),
            shards: 1024,
            id_epoch: 0,
            lease_kind: LeaseKind::Mooncake,
            hot_after_reads: 0,
        }
    }
}

impl MasterConfig {
    /// Checks the configuration; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.watermarks.is_valid() {
            return Err("watermarks: expected 0 <= low <= high <= 1".into());
        }
        if self.policy.needs_future() {
            return Err(format!(
                "policy: `{}` needs to know the future, which a store cannot",
                self.policy.name()
            ));
        }
        if self.preempt_after >= self.put_timeout {
            return Err("preempt_after: must be shorter than put_timeout".into());
        }
        if self.shards == 0 || self.shards > 1 << 16 {
            return Err("shards: expected 1 to 65536".into());
        }
        Ok(())
    }
}

/// A client of the master (a store node or a user of the store).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// What a store node offers: a named region of its memory, reachable at an
/// endpoint through the transfer engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentDesc {
    pub name: String,
    pub endpoint: String,
    pub size: u64,
    /// DRAM, or the SSD tier (placed in 4 KiB blocks, tried after DRAM).
    pub tier: Tier,
}

/// How a put wants its object kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOptions {
    /// Replicas on distinct segments; best effort, as upstream: a put gets
    /// as many as have room, and fails only if none has.
    pub replicas: u32,
    /// A segment to try first (a store node on the writer's own host).
    pub preferred_segment: Option<String>,
    /// Keep the object out of the first eviction pass for the soft-pin time.
    pub soft_pin: bool,
    /// Place replicas on the preferred segment only (a node's own cache):
    /// no room there fails the put rather than spilling elsewhere.
    pub only_preferred: bool,
}

impl Default for PutOptions {
    fn default() -> Self {
        PutOptions {
            replicas: 1,
            preferred_segment: None,
            soft_pin: false,
            only_preferred: false,
        }
    }
}

/// Where one replica lies: the bytes `offset .. offset + size` of segment
/// `segment`, served at `endpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaDesc {
    /// The object's id (the same on every replica).
    pub object: u64,
    pub tier: Tier,
    pub segment: String,
    pub endpoint: String,
    pub offset: u64,
    pub size: u64,
}

/// The lease a read was granted: its end, and the tokens that tell later
/// whether the read is still covered ([`Master::lease_valid`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub until: Nanos,
    tokens: Vec<(SegmentId, LeaseToken)>,
}

impl Lease {
    /// A lease as a client sent it back (to check it).
    pub fn from_tokens(tokens: Vec<(SegmentId, LeaseToken)>) -> Lease {
        let until = tokens
            .iter()
            .map(|(_, t)| t.expiry)
            .min()
            .unwrap_or(Nanos::ZERO);
        Lease { until, tokens }
    }
    pub fn tokens(&self) -> &[(SegmentId, LeaseToken)] {
        &self.tokens
    }
}

/// The answer to a read: where the replicas are, and the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaList {
    pub size: u64,
    pub checksum: Option<u64>,
    pub replicas: Vec<ReplicaDesc>,
    pub lease: Lease,
}

/// The master's answer to a heartbeat.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PingStatus {
    Ok,
    /// The master does not know the client (it restarted, or the client
    /// was expired): mount the segments again.
    NeedRemount,
}

/// Pins on every replica of one object, from [`Master::pin`]; only
/// [`Master::unpin`] releases them.
#[must_use = "pins keep the object until they are released"]
pub struct ObjectPins {
    pins: Vec<(Arc<MountedSegment>, Pin)>,
}

impl std::fmt::Debug for ObjectPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectPins")
            .field("replicas", &self.pins.len())
            .finish()
    }
}

/// What one [`Master::tick`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    pub evicted: u64,
    pub reclaimed_puts: u64,
    pub expired_clients: Vec<ClientId>,
}

/// A segment as `moonlab kv stat` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentStats {
    pub name: String,
    pub endpoint: String,
    pub capacity: u64,
    pub used: u64,
    pub objects: u64,
}

/// An object as `moonlab kv ls` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub replicas: u32,
    pub committed: bool,
}

/// An object a store node reports when it mounts its segment on a master
/// that does not know it (a standby that took over).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedObject {
    /// The id the object had on the master that placed it.
    pub object: u64,
    pub key: String,
    pub offset: u64,
    pub size: u64,
    pub checksum: Option<u64>,
}

struct Replica {
    segment: Arc<MountedSegment>,
    offset: u64,
    /// Held until PutEnd (commit) or PutRevoke.
    reservation: Option<Reservation>,
}

struct Object {
    id: BlockKey,
    size: u64,
    writer: ClientId,
    started: Nanos,
    soft_pin: bool,
    checksum: Option<u64>,
    committed: bool,
    replicas: Vec<Replica>,
}

#[derive(Default)]
struct Shard {
    objects: FxHashMap<Arc<str>, Object>,
    /// Unfinished puts by reclaim deadline: (deadline, object id) → key.
    pending: BTreeMap<(Nanos, u64), Arc<str>>,
}

#[derive(Default)]
struct Segments {
    by_id: BTreeMap<SegmentId, Arc<MountedSegment>>,
    by_name: HashMap<String, SegmentId>,
}

struct ClientState {
    deadline: Nanos,
    segments: Vec<SegmentId>,
}

/// The master's state machine. Every method takes `&self`; locks inside.
pub struct Master {
    config: MasterConfig,
    leases: Box<dyn LeasePolicy>,
    shards: Box<[RwLock<Shard>]>,
    segments: RwLock<Segments>,
    clients: Mutex<FxHashMap<ClientId, ClientState>>,
    next_object: AtomicU64,
    next_segment: AtomicU32,
}

fn check_key(key: &str) -> Result<(), ErrorCode> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ErrorCode::InvalidKey);
    }
    Ok(())
}

impl Master {
    pub fn new(config: MasterConfig) -> Result<Master, String> {
        config.validate()?;
        let first_id = ((config.id_epoch as u64) << 40) | 1;
        let leases = config.lease_kind.build(LeaseParams {
            lease: config.lease,
            soft_pin: config.soft_pin,
            hot_after_reads: config.hot_after_reads,
        });
        let shards = (0..config.shards).map(|_| RwLock::default()).collect();
        Ok(Master {
            config,
            leases,
            shards,
            segments: RwLock::default(),
            clients: Mutex::default(),
            next_object: AtomicU64::new(first_id),
            next_segment: AtomicU32::new(1),
        })
    }

    pub fn config(&self) -> &MasterConfig {
        &self.config
    }

    fn shard(&self, key: &str) -> &RwLock<Shard> {
        let mut h = FxHasher::default();
        key.hash(&mut h);
        &self.shards[(h.finish() % self.shards.len() as u64) as usize]
    }

    fn segment(&self, id: SegmentId) -> Option<Arc<MountedSegment>> {
        self.segments.read().by_id.get(&id).cloned()
    }

    // ---- segments and clients -------------------------------------------

    /// MountSegment: `client` offers `desc`. Mounting the same segment
    /// again (same name, owner and size) is an idempotent retry.
    pub fn mount_segment(
        &self,
        client: ClientId,
        desc: SegmentDesc,
        now: Nanos,
    ) -> Result<SegmentId, ErrorCode> {
        if desc.name.is_empty()
            || desc.name.len() > MAX_NAME_BYTES
            || desc.endpoint.len() > MAX_NAME_BYTES
            || !SEGMENT_BYTES.contains(&desc.size)
        {
            return Err(ErrorCode::InvalidParams);
        }
        // The client's clock starts before the segment is visible (upstream
        // does the same, so a client that dies at once is still expired).
        let mut segments = self.segments.write();
        if let Some(&id) = segments.by_name.get(&desc.name) {
            let seg = &segments.by_id[&id];
            return if seg.owner == client && seg.desc == desc {
                self.touch_client(client, Some(id), now);
                Ok(id)
            } else {
                Err(ErrorCode::SegmentAlreadyExists)
            };
        }
        let id = SegmentId(self.next_segment.fetch_add(1, Ordering::Relaxed));
        let core = moonlab_core::store::Segment::new(
            self.config.policy.build(None),
            SegmentConfig {
                capacity_bytes: Some(desc.size),
                watermarks: self.config.watermarks,
                put_timeout: self.config.put_timeout,
                preempt_after: self.config.preempt_after,
            },
        );
        let size = desc.size;
        let granularity = match desc.tier {
            Tier::Ssd => crate::ssd::BLOCK,
            _ => 1,
        };
        segments.by_name.insert(desc.name.clone(), id);
        segments.by_id.insert(
            id,
            Arc::new(MountedSegment {
                id,
                desc,
                owner: client,
                state: Mutex::new(SegmentState::new(core, size, granularity)),
            }),
        );
        drop(segments);
        self.touch_client(client, Some(id), now);
        Ok(id)
    }

    /// MountSegment for a segment that already holds objects: a store node
    /// reporting to a master that does not know it (a standby that took
    /// over, or a restarted master). Each reported object is adopted where
    /// it lies and becomes readable at once; one reported by several
    /// segments gets a replica on each. Objects that cannot be adopted (a
    /// range outside the segment or overlapping another, a key being
    /// written, a key known with another size or checksum) are returned,
    /// and the store node must drop them.
    pub fn mount_segment_with_objects(
        &self,
        client: ClientId,
        desc: SegmentDesc,
        objects: Vec<ReportedObject>,
        now: Nanos,
    ) -> Result<(SegmentId, Vec<ReportedObject>), ErrorCode> {
        if self.segments.read().by_name.contains_key(&desc.name) {
            // Already mounted (a retry): the master knows its objects.
            return self
                .mount_segment(client, desc, now)
                .map(|id| (id, Vec::new()));
        }
        let id = self.mount_segment(client, desc, now)?;
        let Some(seg) = self.segment(id) else {
            return Err(ErrorCode::SegmentNotFound);
        };
        let mut rejected = Vec::new();
        let mut sorted = objects;
        sorted.sort_by_key(|o| o.offset);
        for o in sorted {
            if check_key(&o.key).is_err() || o.size == 0 {
                rejected.push(o);
                continue;
            }
            let key: Arc<str> = Arc::from(o.key.as_str());
            let mut shard = self.shard(&key).write();
            let range = o.offset..o.offset.saturating_add(o.size);
            let adopted = match shard.objects.get_mut(&key) {
                Some(obj) => {
                    let same = obj.committed
                        && obj.id.0 == o.object
                        && obj.size == o.size
                        && obj.checksum == o.checksum
                        && !obj.replicas.iter().any(|r| r.segment.id == id);
                    if same && seg.state.lock().adopt(obj.id, &key, range, now) {
                        obj.replicas.push(Replica {
                            segment: seg.clone(),
                            offset: o.offset,
                            reservation: None,
                        });
                        true
                    } else {
                        false
                    }
                }
                None => {
                    let oid = BlockKey(o.object);
                    // This master's own ids never meet an adopted one.
                    self.next_object
                        .fetch_max(o.object.saturating_add(1), Ordering::Relaxed);
                    if o.object != 0 && seg.state.lock().adopt(oid, &key, range, now) {
                        shard.objects.insert(
                            key.clone(),
                            Object {
                                id: oid,
                                size: o.size,
                                writer: client,
                                started: now,
                                soft_pin: false,
                                checksum: o.checksum,
                                committed: true,
                                replicas: vec![Replica {
                                    segment: seg.clone(),
                                    offset: o.offset,
                                    reservation: None,
                                }],
                            },
                        );
                        true
                    } else {
                        false
                    }
                }
            };
            if !adopted {
                rejected.push(o);
            }
        }
        seg.state.lock().rebuild_allocator();
        Ok((id, rejected))
    }

    fn touch_client(&self, client: ClientId, segment: Option<SegmentId>, now: Nanos) {
        let mut clients = self.clients.lock();
        let st = clients.entry(client).or_insert(ClientState {
            deadline: now,
            segments: Vec::new(),
        });
        st.deadline = now.saturating_add(self.config.client_ttl);
        if let Some(id) = segment {
            if !st.segments.contains(&id) {
                st.segments.push(id);
            }
        }
    }

    /// UnmountSegment: the segment and every replica in it are gone at once
    /// (leases do not hold a segment, as upstream). Unknown names are an
    /// idempotent success.
    pub fn unmount_segment(&self, name: &str, _now: Nanos) -> Result<(), ErrorCode> {
        let seg = {
            let mut segments = self.segments.write();
            let Some(id) = segments.by_name.remove(name) else {
                return Ok(());
            };
            segments.by_id.remove(&id)
        };
        if let Some(seg) = seg {
            if let Some(st) = self.clients.lock().get_mut(&seg.owner) {
                st.segments.retain(|&s| s != seg.id);
            }
            self.drop_segment(&seg);
        }
        Ok(())
    }

    fn drop_segment(&self, seg: &Arc<MountedSegment>) {
        let gone = seg.state.lock().unmount();
        self.forget_replicas(seg.id, gone);
    }

    /// Removes the replicas in `segment` of the objects `gone` from the
    /// table (after their segment freed them), and objects left with none.
    fn forget_replicas(&self, segment: SegmentId, gone: Vec<(BlockKey, Arc<str>)>) {
        for (id, key) in gone {
            let mut shard = self.shard(&key).write();
            let Some(obj) = shard.objects.get_mut(&key) else {
                continue;
            };
            if obj.id != id {
                continue;
            }
            obj.replicas.retain(|r| r.segment.id != segment);
            if obj.replicas.is_empty() {
                if let Some(o) = shard.objects.remove(&key) {
                    if !o.committed {
                        shard.pending.remove(&(self.deadline(&o), o.id.0));
                    }
                    // Its segment freed it already; nothing else is held.
                    self.release(o);
                }
            }
        }
    }

    fn deadline(&self, o: &Object) -> Nanos {
        o.started.saturating_add(self.config.put_timeout)
    }

    /// A heartbeat. `NeedRemount` if the master does not know the client.
    pub fn ping(&self, client: ClientId, now: Nanos) -> PingStatus {
        let mut clients = self.clients.lock();
        match clients.get_mut(&client) {
            Some(st) => {
                st.deadline = now.saturating_add(self.config.client_ttl);
                PingStatus::Ok
            }
            None => PingStatus::NeedRemount,
        }
    }

    /// The ids of objects freed in `client`'s segments since it last asked
    /// (the heartbeat carries them to the store node).
    pub fn take_released(&self, client: ClientId) -> Vec<u64> {
        let segs: Vec<SegmentId> = self
            .clients
            .lock()
            .get(&client)
            .map(|c| c.segments.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for id in segs {
            if let Some(s) = self.segment(id) {
                out.extend(s.state.lock().take_released());
            }
        }
        out
    }

    // ---- two-phase writes -----------------------------------------------

    /// PutStart: places `size` bytes for `key` on up to `opts.replicas`
    /// distinct segments (the preferred one first, then those with the most
    /// free bytes) and returns where to write them. The object is invisible
    /// until [`Master::put_end`].
    pub fn put_start(
        &self,
        client: ClientId,
        key: &str,
        size: u64,
        opts: &PutOptions,
        now: Nanos,
    ) -> Result<Vec<ReplicaDesc>, ErrorCode> {
        check_key(key)?;
        if size == 0
            || size > MAX_OBJECT_BYTES
            || opts.replicas == 0
            || opts.replicas > MAX_REPLICAS
        {
            return Err(ErrorCode::InvalidParams);
        }
        let mut shard = self.shard(key).write();
        if let Some(old) = shard.objects.get(key) {
            let live = if old.committed {
                self.live_replicas(old) > 0
            } else {
                // An unfinished put holds the key until a new one may take
                // it over (core's rule: `preempt_after`), or it timed out.
                now < old.started.saturating_add(self.config.preempt_after)
            };
            if live {
                return Err(ErrorCode::ObjectAlreadyExists);
            }
            if let Some(old) = shard.objects.remove(key) {
                shard.pending.remove(&(self.deadline(&old), old.id.0));
                self.release(old);
            }
        }
        let key: Arc<str> = Arc::from(key);
        let mut candidates = self.candidates(opts.preferred_segment.as_deref());
        if opts.only_preferred {
            let Some(want) = opts.preferred_segment.as_deref() else {
                return Err(ErrorCode::InvalidParams);
            };
            candidates.retain(|s| s.desc.name == want);
            if candidates.is_empty() {
                return Err(ErrorCode::SegmentNotFound);
            }
        }
        let id = BlockKey(self.next_object.fetch_add(1, Ordering::Relaxed));
        let mut replicas = Vec::new();
        for seg in &candidates {
            if replicas.len() as u32 == opts.replicas {
                break;
            }
            let got = seg.state.lock().reserve(id, &key, size, now);
            if let Ok((reservation, offset)) = got {
                replicas.push(Replica {
                    segment: seg.clone(),
                    offset,
                    reservation: Some(reservation),
                });
            }
        }
        if replicas.is_empty() {
            // The next eviction run makes room (upstream's
            // need_mem_eviction_) for every put refused since the last run:
            // a batch refused whole gets room for all of it.
            for seg in &candidates {
                let mut st = seg.state.lock();
                st.pending_room = st.pending_room.saturating_add(size);
            }
            return Err(ErrorCode::NoAvailableHandle);
        }
        let descs = replicas.iter().map(|r| describe(r, id, size)).collect();
        let obj = Object {
            id,
            size,
            writer: client,
            started: now,
            soft_pin: opts.soft_pin,
            checksum: None,
            committed: false,
            replicas,
        };
        shard
            .pending
            .insert((self.deadline(&obj), id.0), key.clone());
        shard.objects.insert(key, obj);
        Ok(descs)
    }

    /// Mounted segments in the order a put tries them.
    fn candidates(&self, preferred: Option<&str>) -> Vec<Arc<MountedSegment>> {
        let segs: Vec<Arc<MountedSegment>> = self.segments.read().by_id.values().cloned().collect();
        // The preferred segment first, then DRAM before SSD, then the most
        // free bytes, then the oldest mount.
        let mut ranked: Vec<(bool, bool, u64, SegmentId, Arc<MountedSegment>)> = segs
            .into_iter()
            .map(|s| {
                let free = {
                    let st = s.state.lock();
                    s.desc.size.saturating_sub(st.core.used_bytes())
                };
                let pref = preferred.is_some_and(|p| p == s.desc.name);
                (!pref, s.desc.tier != Tier::Dram, u64::MAX - free, s.id, s)
            })
            .collect();
        ranked.sort_by_key(|a| (a.0, a.1, a.2, a.3));
        ranked.into_iter().map(|r| r.4).collect()
    }

    fn live_replicas(&self, obj: &Object) -> usize {
        obj.replicas
            .iter()
            .filter(|r| {
                let st = r.segment.state.lock();
                st.mounted && st.core.contains(obj.id)
            })
            .count()
    }

    /// Gives back everything an object holds: reservations revoked, pins
    /// none (callers check), ranges freed through its id. Returns false if
    /// any reservation had already been reclaimed by its segment.
    fn release(&self, obj: Object) -> bool {
        let mut all = true;
        for r in obj.replicas {
            let mut st = r.segment.state.lock();
            if let Some(res) = r.reservation {
                all &= st.core.revoke(res);
            }
            st.free(obj.id);
        }
        all
    }

    /// PutEnd: the object becomes readable. Ending a committed object again
    /// is an idempotent retry.
    pub fn put_end(
        &self,
        client: ClientId,
        key: &str,
        checksum: Option<u64>,
        now: Nanos,
    ) -> Result<(), ErrorCode> {
        check_key(key)?;
        let mut guard = self.shard(key).write();
        let shard = &mut *guard;
        let obj = shard
            .objects
            .get_mut(key)
            .ok_or(ErrorCode::ObjectNotFound)?;
        if obj.writer != client {
            return Err(ErrorCode::IllegalClient);
        }
        if obj.committed {
            return Ok(());
        }
        // Every reservation must still be live: core reclaims one at its
        // put timeout, and then the whole write is void.
        let all_live = obj.replicas.iter().all(|r| {
            let mut st = r.segment.state.lock();
            st.core.advance(now);
            st.mounted && st.core.reserved_until(obj.id).is_some()
        });
        let deadline = self.deadline(obj);
        if !all_live {
            let id = obj.id;
            if let Some(obj) = shard.objects.remove(key) {
                self.release(obj);
            }
            shard.pending.remove(&(deadline, id.0));
            return Err(ErrorCode::InvalidWrite);
        }
        let soft_until = (obj.soft_pin && self.config.soft_pin > Nanos::ZERO)
            .then(|| now.saturating_add(self.config.soft_pin));
        for r in &mut obj.replicas {
            let mut st = r.segment.state.lock();
            if let Some(res) = r.reservation.take() {
                // Checked live above, under the same shard lock.
                if st.core.commit(res, &Access::at(now), now).is_err() {
                    return Err(ErrorCode::Internal);
                }
            }
            if let Some(until) = soft_until {
                st.core.soft_pin(obj.id, until);
            }
        }
        obj.committed = true;
        obj.checksum = checksum;
        let id = obj.id;
        shard.pending.remove(&(deadline, id.0));
        Ok(())
    }

    /// PutRevoke: the write is abandoned and its space freed at once.
    pub fn put_revoke(&self, client: ClientId, key: &str, _now: Nanos) -> Result<(), ErrorCode> {
        check_key(key)?;
        let mut shard = self.shard(key).write();
        let obj = shard.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
        if obj.writer != client {
            return Err(ErrorCode::IllegalClient);
        }
        if obj.committed {
            return Err(ErrorCode::InvalidWrite);
        }
        let Some(obj) = shard.objects.remove(key) else {
            return Err(ErrorCode::ObjectNotFound);
        };
        shard.pending.remove(&(self.deadline(&obj), obj.id.0));
        if self.release(obj) {
            Ok(())
        } else {
            Err(ErrorCode::InvalidWrite)
        }
    }

    // ---- reads ----------------------------------------------------------

    /// GetReplicaList: where the object's readable replicas are, with a
    /// read lease on it.
    pub fn get_replica_list(&self, key: &str, now: Nanos) -> Result<ReplicaList, ErrorCode> {
        check_key(key)?;
        let shard = self.shard(key).read();
        let obj = shard.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
        if !obj.committed {
            return if now < self.deadline(obj) {
                Err(ErrorCode::ReplicaIsNotReady)
            } else {
                Err(ErrorCode::ObjectNotFound)
            };
        }
        let mut replicas = Vec::new();
        let mut tokens = Vec::new();
        for r in &obj.replicas {
            let mut st = r.segment.state.lock();
            if !st.mounted {
                continue;
            }
            if let Some(t) = st.core.read(obj.id, now, self.leases.as_ref()) {
                tokens.push((r.segment.id, t));
                replicas.push(describe(r, obj.id, obj.size));
            }
        }
        if replicas.is_empty() {
            return Err(ErrorCode::ObjectNotFound);
        }
        let until = tokens.iter().map(|(_, t)| t.expiry).min().unwrap_or(now);
        Ok(ReplicaList {
            size: obj.size,
            checksum: obj.checksum,
            replicas,
            lease: Lease { until, tokens },
        })
    }

    /// True if the read that was granted `lease` is still covered at `now`:
    /// every replica it named still holds the same object and the lease has
    /// not run out.
    pub fn lease_valid(&self, lease: &Lease, now: Nanos) -> bool {
        !lease.tokens.is_empty()
            && lease.tokens.iter().all(|(seg, t)| {
                self.segment(*seg).is_some_and(|s| {
                    let st = s.state.lock();
                    st.mounted && st.core.lease_valid(t, now)
                })
            })
    }

    /// ExistKey: true if the object is readable (and then leased, as
    /// upstream); an object being written does not exist yet.
    pub fn exist(&self, key: &str, now: Nanos) -> Result<bool, ErrorCode> {
        match self.get_replica_list(key, now) {
            Ok(_) => Ok(true),
            Err(ErrorCode::ObjectNotFound | ErrorCode::ReplicaIsNotReady) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `key` is a committed object with a live replica, without
    /// touching it: no lease, no access (a scheduler looking, not a read).
    pub fn contains(&self, key: &str, now: Nanos) -> Result<bool, ErrorCode> {
        check_key(key)?;
        let shard = self.shard(key).read();
        let Some(obj) = shard.objects.get(key) else {
            return Ok(false);
        };
        if !obj.committed {
            return Ok(false);
        }
        Ok(obj.replicas.iter().any(|r| {
            let mut st = r.segment.state.lock();
            st.core.advance(now);
            st.mounted && st.core.contains(obj.id)
        }))
    }

    /// Marks every replica of `key` in use (a transfer out of it): it is
    /// neither evicted nor removed until [`Master::unpin`].
    pub fn pin(&self, key: &str, _now: Nanos) -> Result<ObjectPins, ErrorCode> {
        check_key(key)?;
        let shard = self.shard(key).read();
        let obj = shard.objects.get(key).ok_or(ErrorCode::ObjectNotFound)?;
        if !obj.committed {
            return Err(ErrorCode::ReplicaIsNotReady);
        }
        let mut pins = Vec::new();
        for r in &obj.replicas {
            let mut st = r.segment.state.lock();
            if !st.mounted {
                continue;
            }
            if let Some(p) = st.core.pin(obj.id) {
                pins.push((r.segment.clone(), p));
            }
        }
        if pins.is_empty() {
            return Err(ErrorCode::ObjectNotFound);
        }
        Ok(ObjectPins { pins })
    }

    /// Releases exactly the pins `pins` took. False if any was stale.
    pub fn unpin(&self, pins: ObjectPins, now: Nanos) -> bool {
        let mut all = true;
        for (seg, p) in pins.pins {
            all &= seg.state.lock().core.unpin(p, now);
        }
        all
    }

    /// Remove: refused while being written (even with force), while in use,
    /// and while leased unless `force`.
    pub fn remove(&self, key: &str, force: bool, now: Nanos) -> Result<(), ErrorCode> {
        check_key(key)?;
        let mut shard = self.shard(key).write();
        let obj = shard
            .objects
            .get_mut(key)
            .ok_or(ErrorCode::ObjectNotFound)?;
        if !obj.committed {
            return if now < self.deadline(obj) {
                Err(ErrorCode::ReplicaIsNotReady)
            } else {
                Err(ErrorCode::ObjectNotFound)
            };
        }
        let id = obj.id;
        let mut removed = 0;
        let mut refused = None;
        obj.replicas.retain(|r| {
            let mut st = r.segment.state.lock();
            if refused.is_some() {
                return true;
            }
            match st.core.remove(id, now, force) {
                Ok(_) => {
                    st.free(id);
                    removed += 1;
                    false
                }
                Err(RemoveError::NotFound) => {
                    // Already gone from this segment (evicted, unmounted).
                    st.free(id);
                    false
                }
                Err(e) => {
                    refused = Some(match e {
                        RemoveError::Leased => ErrorCode::ObjectHasLease,
                        RemoveError::Busy => ErrorCode::ObjectReplicaBusy,
                        _ => ErrorCode::ReplicaIsNotReady,
                    });
                    true
                }
            }
        });
        if obj.replicas.is_empty() {
            shard.objects.remove(key);
        }
        match refused {
            Some(e) => Err(e),
            None if removed == 0 => Err(ErrorCode::ObjectNotFound),
            None => Ok(()),
        }
    }

    // ---- background work ------------------------------------------------

    /// The master's periodic work at `now` (upstream: the 10 ms eviction
    /// thread and the 1 s client monitor): clients silent past their TTL
    /// lose their segments; unfinished puts past the put timeout are
    /// reclaimed; each segment evicts by its watermarks and makes room for
    /// puts that failed since the last run.
    pub fn tick(&self, now: Nanos) -> TickReport {
        let mut report = TickReport::default();
        let expired: Vec<(ClientId, Vec<SegmentId>)> = {
            let mut clients = self.clients.lock();
            let dead: Vec<ClientId> = clients
                .iter()
                .filter(|(_, st)| st.deadline <= now)
                .map(|(&c, _)| c)
                .collect();
            dead.into_iter()
                .filter_map(|c| clients.remove(&c).map(|st| (c, st.segments)))
                .collect()
        };
        for (client, segs) in expired {
            for id in segs {
                let seg = {
                    let mut segments = self.segments.write();
                    let seg = segments.by_id.remove(&id);
                    if let Some(s) = &seg {
                        segments.by_name.remove(&s.desc.name);
                    }
                    seg
                };
                if let Some(seg) = seg {
                    self.drop_segment(&seg);
                }
            }
            report.expired_clients.push(client);
        }
        report.expired_clients.sort();
        for shard in self.shards.iter() {
            let mut guard = shard.write();
            let shard = &mut *guard;
            while let Some((&(deadline, id), _)) = shard.pending.first_key_value() {
                if deadline > now {
                    break;
                }
                let Some((_, key)) = shard.pending.pop_first() else {
                    break;
                };
                let matches = shard
                    .objects
                    .get(&key)
                    .is_some_and(|o| o.id.0 == id && !o.committed);
                if matches {
                    if let Some(obj) = shard.objects.remove(&key) {
                        self.release(obj);
                        report.reclaimed_puts += 1;
                    }
                }
            }
        }
        let segs: Vec<Arc<MountedSegment>> = self.segments.read().by_id.values().cloned().collect();
        for seg in segs {
            let mut gone = Vec::new();
            report.evicted += seg.state.lock().evict(now, &mut gone);
            self.forget_replicas(seg.id, gone);
        }
        report
    }

    // ---- inspection -----------------------------------------------------

    /// Mounted segments, by id.
    pub fn segment_stats(&self, now: Nanos) -> Vec<SegmentStats> {
        let segs: Vec<Arc<MountedSegment>> = self.segments.read().by_id.values().cloned().collect();
        segs.iter()
            .map(|s| {
                let mut st = s.state.lock();
                st.core.advance(now);
                SegmentStats {
                    name: s.desc.name.clone(),
                    endpoint: s.desc.endpoint.clone(),
                    capacity: s.desc.size,
                    used: st.core.used_bytes(),
                    objects: st.core.len() as u64,
                }
            })
            .collect()
    }

    /// Bytes in use over all segments at `now`.
    pub fn used_bytes(&self, now: Nanos) -> u64 {
        self.segment_stats(now).iter().map(|s| s.used).sum()
    }

    /// The objects with a key starting with `prefix` that are readable
    /// (`committed`) or being written at `now`, sorted by key (at most
    /// `limit`). Listing grants no lease and changes nothing.
    pub fn list(&self, prefix: &str, limit: usize, now: Nanos) -> Vec<ObjectInfo> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            for (k, o) in &shard.objects {
                let present = if o.committed {
                    self.live_replicas(o) > 0
                } else {
                    now < self.deadline(o)
                };
                if present && k.starts_with(prefix) {
                    out.push(ObjectInfo {
                        key: k.to_string(),
                        size: o.size,
                        replicas: o.replicas.len() as u32,
                        committed: o.committed,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.truncate(limit);
        out
    }

    /// Committed objects.
    pub fn count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().objects.values().filter(|o| o.committed).count() as u64)
            .sum()
    }

    /// True if `key` is being written and its write has not timed out.
    pub fn is_writing(&self, key: &str, now: Nanos) -> bool {
        self.shard(key)
            .read()
            .objects
            .get(key)
            .is_some_and(|o| !o.committed && now < self.deadline(o))
    }

    /// True if `key` is committed with a replica still held.
    pub fn is_readable(&self, key: &str) -> bool {
        self.shard(key)
            .read()
            .objects
            .get(key)
            .is_some_and(|o| o.committed && self.live_replicas(o) > 0)
    }

    /// The end-of-run invariants: [`Master::check`], and nothing pinned.
    pub fn check_idle(&self) -> Result<(), String> {
        self.check()?;
        let segs: Vec<Arc<MountedSegment>> = self.segments.read().by_id.values().cloned().collect();
        for s in &segs {
            let held = s.state.lock().core.held();
            if held.pins != 0 {
                return Err(format!(
                    "segment {}: {} pins still held",
                    s.desc.name, held.pins
                ));
            }
        }
        Ok(())
    }

    /// The invariants, checked from outside after a [`Master::tick`] at the
    /// same `now`: each segment's core bookkeeping holds and agrees with
    /// its allocator; every replica in the table is held by its segment;
    /// replicas of one object lie on distinct segments.
    pub fn check(&self) -> Result<(), String> {
        let segs: Vec<Arc<MountedSegment>> = self.segments.read().by_id.values().cloned().collect();
        for s in &segs {
            let st = s.state.lock();
            st.check()
                .map_err(|e| format!("segment {}: {e}", s.desc.name))?;
        }
        for shard in self.shards.iter() {
            let shard = shard.read();
            for (k, o) in &shard.objects {
                let mut ids: Vec<SegmentId> = o.replicas.iter().map(|r| r.segment.id).collect();
                ids.sort();
                ids.dedup();
                if ids.len() != o.replicas.len() {
                    return Err(format!("{k}: two replicas on one segment"));
                }
                for r in &o.replicas {
                    let st = r.segment.state.lock();
                    if st.mounted && st.offset(o.id) != Some(r.offset) {
                        return Err(format!(
                            "{k}: replica on {} holds no range",
                            r.segment.desc.name
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn describe(r: &Replica, id: BlockKey, size: u64) -> ReplicaDesc {
    ReplicaDesc {
        object: id.0,
        tier: r.segment.desc.tier,
        segment: r.segment.desc.name.clone(),
        endpoint: r.segment.desc.endpoint.clone(),
        offset: r.offset,
        size,
    }
}

pub mod scenario;
