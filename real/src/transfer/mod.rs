//! The transfer engine, in Mooncake's batch shape
//! (`mooncake-transfer-engine/include/transfer_engine.h`): register local
//! memory ([`Region`]), open a remote segment, allocate a batch, submit
//! READ/WRITE requests (local buffer and offset, target segment and
//! offset, length), then poll each task's status or await the batch.
//!
//! The engine cuts each request into slices ([`EngineConfig::slice_bytes`])
//! and stripes them over the paths nearest the local buffer (NICs on its
//! NUMA node × the target's endpoints, [`topology`]); a slice that fails is
//! retried on the next path. Moving one slice is the [`Transport`]'s job:
//! [`tcp`], and `rdma` (one-sided READ/WRITE over RC queue pairs) behind
//! the cargo feature `rdma`.

#[cfg(feature = "rdma")]
pub mod rdma;
pub mod region;
pub mod shm;
pub mod tcp;
pub mod topology;
pub mod wire;

pub use region::Region;
pub use wire::Opcode;

use crate::error::ErrorCode;
use parking_lot::Mutex;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};
use std::sync::Arc;
use tokio::task::JoinSet;
use topology::Topology;

/// One way from here to a target: the local address to send from (a NIC;
/// `None`: the kernel chooses) and the target's endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Path {
    pub local: Option<IpAddr>,
    pub remote: SocketAddr,
}

/// One slice of a request, as a transport moves it.
#[derive(Clone, Debug)]
pub struct Slice {
    pub opcode: Opcode,
    pub local: Arc<Region>,
    pub local_offset: u64,
    pub remote_offset: u64,
    pub len: u64,
}

type SliceFuture = Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>>;
type OpenFuture = Pin<Box<dyn Future<Output = Result<u64, ErrorCode>> + Send>>;

/// How slices travel: TCP, RDMA.
pub trait Transport: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Moves one slice on `path`; resolves once the target applied a write,
    /// or once a read's bytes are in local memory.
    fn move_slice(&self, path: &Path, slice: Slice) -> SliceFuture;
    /// Reaches the target through `path`; resolves to its segment's length.
    fn probe(&self, path: &Path) -> OpenFuture;
    /// Delivers a writer's note ([`wire::Note`], encoded) to the target.
    fn send_note(&self, path: &Path, note: Vec<u8>) -> SliceFuture;
}

impl Transport for tcp::TcpTransport {
    fn name(&self) -> &'static str {
        "tcp"
    }

    fn move_slice(&self, path: &Path, slice: Slice) -> SliceFuture {
        tcp::TcpTransport::move_slice(self, path, slice)
    }

    fn probe(&self, path: &Path) -> OpenFuture {
        tcp::TcpTransport::probe(self, path)
    }

    fn send_note(&self, path: &Path, note: Vec<u8>) -> SliceFuture {
        tcp::TcpTransport::send_note(self, path, note)
    }
}

/// An opened remote segment.
#[derive(Clone, Debug)]
pub struct SegmentHandle {
    pub endpoints: Vec<SocketAddr>,
    pub len: u64,
    /// The segment mapped into this process (a store node on this host):
    /// bytes move by memory copy ([`shm`]).
    pub shm: Option<Arc<shm::Attached>>,
}

impl PartialEq for SegmentHandle {
    fn eq(&self, other: &Self) -> bool {
        self.endpoints == other.endpoints
            && self.len == other.len
            && self.shm.is_some() == other.shm.is_some()
    }
}

impl Eq for SegmentHandle {}

/// One request of a batch.
#[derive(Clone, Debug)]
pub struct TransferRequest {
    pub opcode: Opcode,
    pub local: Arc<Region>,
    pub local_offset: u64,
    pub target: SegmentHandle,
    pub target_offset: u64,
    pub length: u64,
}

/// A task's state, as upstream's `getTransferStatus`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Waiting,
    Pending,
    Completed,
    Failed(ErrorCode),
}

struct TaskState {
    /// 0 waiting, 1 pending, 2 completed, 3 failed.
    state: AtomicU8,
    code: AtomicI32,
}

impl TaskState {
    fn status(&self) -> TaskStatus {
        match self.state.load(Ordering::Acquire) {
            0 => TaskStatus::Waiting,
            1 => TaskStatus::Pending,
            2 => TaskStatus::Completed,
            _ => TaskStatus::Failed(
                ErrorCode::from_code(self.code.load(Ordering::Acquire))
                    .unwrap_or(ErrorCode::TransferFail),
            ),
        }
    }
    fn finish(&self, r: Result<(), ErrorCode>) {
        match r {
            Ok(()) => self.state.store(2, Ordering::Release),
            Err(e) => {
                self.code.store(e.code(), Ordering::Release);
                self.state.store(3, Ordering::Release);
            }
        }
    }
}

/// A batch of transfers (upstream's BatchID): at most `capacity` tasks.
pub struct Batch {
    capacity: usize,
    tasks: Mutex<Vec<Arc<TaskState>>>,
    running: Mutex<JoinSet<()>>,
}

/// Settings of the engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Requests are cut into slices of this many bytes.
    pub slice_bytes: u64,
    /// A failed slice is tried again on this many other paths.
    pub retries: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            slice_bytes: 1 << 20,
            retries: 2,
        }
    }
}

/// The transfer engine.
pub struct TransferEngine {
    transport: Arc<dyn Transport>,
    topology: Topology,
    config: EngineConfig,
    /// With a secret, segments on this host are mapped and copied in place.
    same_host: Option<crate::rpc::Secret>,
}

/// Parses `host:port[,host:port…]` (numeric addresses; `shm:` entries,
/// the same-host socket, are skipped).
pub fn parse_endpoints(s: &str) -> Result<Vec<SocketAddr>, String> {
    let eps: Result<Vec<SocketAddr>, String> = s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with("shm:"))
        .map(|e| {
            e.parse()
                .map_err(|_| format!("`{e}` is not an address such as 127.0.0.1:7000"))
        })
        .collect();
    let eps = eps?;
    if eps.is_empty() {
        return Err(format!("`{s}`: expected host:port[,host:port…]"));
    }
    Ok(eps)
}

impl TransferEngine {
    pub fn new(
        transport: Arc<dyn Transport>,
        topology: Topology,
        config: EngineConfig,
    ) -> TransferEngine {
        TransferEngine {
            transport,
            topology,
            config,
            same_host: None,
        }
    }

    /// Maps segments of store nodes on this host (their `shm:` endpoint)
    /// and moves their bytes by memory copy.
    pub fn with_same_host(mut self, secret: crate::rpc::Secret) -> TransferEngine {
        self.same_host = Some(secret);
        self
    }

    pub fn transport_name(&self) -> &'static str {
        self.transport.name()
    }

    /// Opens the segment served at `endpoints` (one per NIC of the target).
    pub async fn open_segment(&self, endpoints: &str) -> Result<SegmentHandle, ErrorCode> {
        let eps = parse_endpoints(endpoints).map_err(|_| ErrorCode::InvalidParams)?;
        if let (Some(secret), Some(sock)) = (&self.same_host, shm::local_socket(endpoints)) {
            // Same host: map it (or fall back to the network if that fails).
            if let Ok(att) = shm::attach(&sock, secret).await {
                let len = att.region.len() as u64;
                return Ok(SegmentHandle {
                    endpoints: eps,
                    len,
                    shm: Some(Arc::new(att)),
                });
            }
        }
        let mut last = ErrorCode::TransferFail;
        for path in self.paths(&eps, 0) {
            match self.transport.probe(&path).await {
                Ok(len) => {
                    return Ok(SegmentHandle {
                        endpoints: eps,
                        len,
                        shm: None,
                    })
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Every path to `eps` for a buffer on `numa_node`, nearest first.
    fn paths(&self, eps: &[SocketAddr], numa_node: u32) -> Vec<Path> {
        let (near, far) = self.topology.order_for(numa_node);
        near.iter()
            .chain(far.iter())
            .flat_map(|&n| {
                let local = self.topology.nics()[n].addr;
                eps.iter().map(move |&remote| Path {
                    local: Some(local).filter(|a| a.is_loopback() == remote.ip().is_loopback()),
                    remote,
                })
            })
            .collect()
    }

    pub fn allocate_batch(&self, capacity: usize) -> Batch {
        Batch {
            capacity,
            tasks: Mutex::new(Vec::new()),
            running: Mutex::new(JoinSet::new()),
        }
    }

    /// Submits `requests` to `batch`; they run at once. Refused (nothing
    /// submitted) if the batch would exceed its capacity. A request outside
    /// the local or the target's range fails at once with `InvalidParams`.
    pub fn submit(&self, batch: &Batch, requests: Vec<TransferRequest>) -> Result<(), ErrorCode> {
        let mut tasks = batch.tasks.lock();
        if tasks.len() + requests.len() > batch.capacity {
            return Err(ErrorCode::InvalidParams);
        }
        let mut running = batch.running.lock();
        for req in requests {
            let task = Arc::new(TaskState {
                state: AtomicU8::new(1),
                code: AtomicI32::new(0),
            });
            tasks.push(task.clone());
            let in_range = req.local.check(req.local_offset, req.length).is_ok()
                && req
                    .target_offset
                    .checked_add(req.length)
                    .is_some_and(|end| end <= req.target.len);
            if !in_range {
                task.finish(Err(ErrorCode::InvalidParams));
                continue;
            }
            if let Some(att) = req.target.shm.clone() {
                // Mapped: one copy per slice, the slices on whichever
                // workers are free (a big request is copied by several).
                let slice_bytes = self.config.slice_bytes.max(1);
                if req.length <= slice_bytes {
                    running.spawn(async move {
                        task.finish(copy_in_place(&req, &att.region, 0, req.length));
                    });
                    continue;
                }
                let req = Arc::new(req);
                running.spawn(async move {
                    let mut slices = JoinSet::new();
                    let mut at = 0;
                    while at < req.length {
                        let len = slice_bytes.min(req.length - at);
                        let (req, att) = (req.clone(), att.clone());
                        slices.spawn(async move { copy_in_place(&req, &att.region, at, len) });
                        at += len;
                    }
                    task.finish(all_slices(slices).await);
                });
                continue;
            }
            let near = self.topology.order_for(req.local.numa_node()).0.len();
            let paths = Arc::new(self.paths(&req.target.endpoints, req.local.numa_node()));
            let stripe = (near * req.target.endpoints.len()).max(1);
            let transport = self.transport.clone();
            let slice_bytes = self.config.slice_bytes.max(1);
            let retries = self.config.retries;
            running.spawn(async move {
                let mut slices = JoinSet::new();
                let mut at = 0;
                let mut k = 0usize;
                while at < req.length {
                    let len = slice_bytes.min(req.length - at);
                    let slice = Slice {
                        opcode: req.opcode,
                        local: req.local.clone(),
                        local_offset: req.local_offset + at,
                        remote_offset: req.target_offset + at,
                        len,
                    };
                    slices.spawn(run_slice(
                        transport.clone(),
                        paths.clone(),
                        k % stripe,
                        slice,
                        retries,
                    ));
                    at += len;
                    k += 1;
                }
                task.finish(all_slices(slices).await);
            });
        }
        Ok(())
    }

    /// The status of task `index` of `batch` (in submission order).
    pub fn status(&self, batch: &Batch, index: usize) -> Option<TaskStatus> {
        batch.tasks.lock().get(index).map(|t| t.status())
    }

    /// Waits for every task of `batch`; returns their statuses.
    pub async fn wait(&self, batch: &Batch) -> Vec<TaskStatus> {
        let mut running = std::mem::take(&mut *batch.running.lock());
        while running.join_next().await.is_some() {}
        batch.tasks.lock().iter().map(|t| t.status()).collect()
    }

    /// Tells the store node serving `target` what a writer put there (its
    /// catalog, reported after a failover); tried on each path in turn.
    pub async fn note(&self, target: &SegmentHandle, note: &wire::Note) -> Result<(), ErrorCode> {
        let bytes = note.encode();
        if let Some(att) = &target.shm {
            return att.note(&bytes).await;
        }
        let mut last = ErrorCode::TransferFail;
        for path in self.paths(&target.endpoints, 0) {
            match self.transport.send_note(&path, bytes.clone()).await {
                Ok(()) => return Ok(()),
                Err(ErrorCode::InvalidParams) => return Err(ErrorCode::InvalidParams),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Reads `len` bytes at `offset` of `target` into `local` at
    /// `local_offset` when the segment is mapped into this process,
    /// showing each copied piece to `inspect` as it lands, while it is
    /// still in cache (a reader checksums on the way instead of reading
    /// the bytes twice). `None` when `target` is not mapped: use
    /// [`TransferEngine::transfer`].
    pub fn read_mapped(
        &self,
        target: &SegmentHandle,
        offset: u64,
        local: &Region,
        local_offset: u64,
        len: u64,
        inspect: &mut dyn FnMut(&[u8]),
    ) -> Option<Result<(), ErrorCode>> {
        const PIECE: usize = 64 << 10;
        let att = target.shm.as_ref()?;
        let in_range = offset.checked_add(len).is_some_and(|end| end <= target.len);
        // SAFETY: both ranges are checked here; the caller owns its local
        // range and the replica range the master gave it.
        let (from, to) = match unsafe {
            (
                att.region.bytes(offset, len),
                local.bytes_mut(local_offset, len),
            )
        } {
            (Ok(f), Ok(t)) if in_range => (f, t),
            _ => return Some(Err(ErrorCode::InvalidParams)),
        };
        let mut copy = || {
            for (to, from) in to.chunks_mut(PIECE).zip(from.chunks(PIECE)) {
                to.copy_from_slice(from);
                inspect(to);
            }
        };
        // A big read leaves the async worker free for others.
        if len > 4 << 20
            && tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        {
            tokio::task::block_in_place(copy);
        } else {
            copy();
        }
        Some(Ok(()))
    }

    /// Submits `requests` as one batch and waits for it.
    pub async fn transfer(&self, requests: Vec<TransferRequest>) -> Vec<TaskStatus> {
        let batch = self.allocate_batch(requests.len());
        if let Err(e) = self.submit(&batch, requests) {
            return vec![TaskStatus::Failed(e)];
        }
        self.wait(&batch).await
    }
}

/// Waits for every slice of a request: done when all are, else the first
/// failure seen.
async fn all_slices(mut slices: JoinSet<Result<(), ErrorCode>>) -> Result<(), ErrorCode> {
    let mut result = Ok(());
    while let Some(r) = slices.join_next().await {
        let r = r.unwrap_or(Err(ErrorCode::Internal));
        if result.is_ok() {
            result = r;
        }
    }
    result
}

/// Bytes `at..at + len` of a request against a segment mapped into this
/// process: one copy.
fn copy_in_place(
    req: &TransferRequest,
    remote: &Region,
    at: u64,
    len: u64,
) -> Result<(), ErrorCode> {
    // SAFETY: both ranges were checked (the slice lies inside the request);
    // the caller owns its local range and the replica range the master
    // gave it.
    let (local, there) = unsafe {
        (
            req.local.bytes_mut(req.local_offset + at, len),
            remote.bytes_mut(req.target_offset + at, len),
        )
    };
    let (local, there) = match (local, there) {
        (Ok(l), Ok(t)) => (l, t),
        _ => return Err(ErrorCode::InvalidParams),
    };
    match req.opcode {
        Opcode::Write => there.copy_from_slice(local),
        Opcode::Read => local.copy_from_slice(there),
        _ => return Err(ErrorCode::InvalidParams),
    }
    Ok(())
}

async fn run_slice(
    transport: Arc<dyn Transport>,
    paths: Arc<Vec<Path>>,
    first: usize,
    slice: Slice,
    retries: u32,
) -> Result<(), ErrorCode> {
    let mut last = ErrorCode::TransferFail;
    for attempt in 0..=retries as usize {
        let path = &paths[(first + attempt) % paths.len()];
        match transport.move_slice(path, slice.clone()).await {
            Ok(()) => return Ok(()),
            // A request the target refused is refused on every path.
            Err(ErrorCode::InvalidParams) => return Err(ErrorCode::InvalidParams),
            Err(e) => last = e,
        }
    }
    Err(last)
}
