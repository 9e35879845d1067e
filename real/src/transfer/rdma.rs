//! The RDMA transport (cargo feature `rdma`): reliable-connected queue
//! pairs and one-sided RDMA READ / WRITE straight between registered
//! regions, through libibverbs (the `ibverbs` crate lists devices; its
//! `ibverbs-sys` layer posts work requests and polls completions, which
//! the safe crate does not expose for one-sided operations).
//!
//! Connection setup: the client opens the target's TCP transfer-engine
//! endpoint, says hello with the cluster secret, and sends an
//! `RdmaConnect` request carrying its queue pair's address (QP number, LID,
//! GID, first packet sequence number); the server creates a queue pair for
//! that client, connects it, and answers with its own address and the
//! segment's memory key, base address and length. From then on the
//! server's CPU takes no part: slices (64 KiB by default, as upstream) are
//! posted as RDMA READ or WRITE work requests and complete on the client's
//! completion queue, polled by one thread per queue pair.
//!
//! Running it needs an RDMA device (`/sys/class/infiniband`): a RoCE or
//! InfiniBand NIC, or Soft-RoCE (`rdma link add rxe0 type rxe netdev eth0`,
//! which needs the `rdma_rxe` kernel module). See `real/RDMA.md`.

use super::region::Region;
use super::{Path, Slice};
use crate::error::ErrorCode;
use ibverbs_sys as ffi;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

const PORT: u8 = 1;
/// Work requests a queue pair keeps in flight.
const QUEUE_DEPTH: u32 = 256;

/// Why RDMA cannot run here, or `None` if a device is present.
pub fn unavailable() -> Option<String> {
    match ibverbs::devices() {
        Ok(list) if !list.is_empty() => None,
        Ok(_) => Some(
            "no RDMA device (none in /sys/class/infiniband; Soft-RoCE needs the rdma_rxe module)"
                .into(),
        ),
        Err(e) => Some(format!("listing RDMA devices failed: {e}")),
    }
}

/// A queue pair's address, exchanged at connection setup.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct QpAddress {
    pub qp_num: u32,
    pub lid: u16,
    pub gid: [u8; 16],
    pub psn: u32,
}

/// What the server answers: its queue pair and the segment's memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RdmaAccept {
    pub qp: QpAddress,
    pub rkey: u32,
    pub base: u64,
    pub len: u64,
}

impl QpAddress {
    pub const BYTES: usize = 26;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(Self::BYTES);
        b.extend_from_slice(&self.qp_num.to_le_bytes());
        b.extend_from_slice(&self.lid.to_le_bytes());
        b.extend_from_slice(&self.gid);
        b.extend_from_slice(&self.psn.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<QpAddress> {
        if b.len() != Self::BYTES {
            return None;
        }
        let mut gid = [0u8; 16];
        gid.copy_from_slice(&b[6..22]);
        Some(QpAddress {
            qp_num: u32::from_le_bytes(b[0..4].try_into().ok()?),
            lid: u16::from_le_bytes(b[4..6].try_into().ok()?),
            gid,
            psn: u32::from_le_bytes(b[22..26].try_into().ok()?),
        })
    }
}

impl RdmaAccept {
    pub const BYTES: usize = QpAddress::BYTES + 20;

    pub fn encode(&self) -> Vec<u8> {
        let mut b = self.qp.encode();
        b.extend_from_slice(&self.rkey.to_le_bytes());
        b.extend_from_slice(&self.base.to_le_bytes());
        b.extend_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<RdmaAccept> {
        if b.len() != Self::BYTES {
            return None;
        }
        let q = QpAddress::BYTES;
        Some(RdmaAccept {
            qp: QpAddress::decode(&b[..q])?,
            rkey: u32::from_le_bytes(b[q..q + 4].try_into().ok()?),
            base: u64::from_le_bytes(b[q + 4..q + 12].try_into().ok()?),
            len: u64::from_le_bytes(b[q + 12..q + 20].try_into().ok()?),
        })
    }
}

/// An opened device with its protection domain.
pub struct Device {
    ctx: *mut ffi::ibv_context,
    pd: *mut ffi::ibv_pd,
    lid: u16,
    gid: [u8; 16],
    gid_index: i32,
}

// SAFETY: libibverbs objects may be used from any thread.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

impl Device {
    /// Opens the first RDMA device (or the one named `name`).
    pub fn open(name: Option<&str>) -> io::Result<Arc<Device>> {
        // SAFETY: plain libibverbs calls; every pointer is checked.
        unsafe {
            let mut n = 0;
            let list = ffi::ibv_get_device_list(&mut n);
            if list.is_null() || n == 0 {
                if !list.is_null() {
                    ffi::ibv_free_device_list(list);
                }
                return Err(io::Error::new(io::ErrorKind::NotFound, "no RDMA device"));
            }
            let mut chosen = ptr::null_mut();
            for i in 0..n as usize {
                let dev = *list.add(i);
                let dev_name = std::ffi::CStr::from_ptr((*dev).name.as_ptr()).to_string_lossy();
                if name.is_none_or(|w| w == dev_name) {
                    chosen = dev;
                    break;
                }
            }
            if chosen.is_null() {
                ffi::ibv_free_device_list(list);
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no RDMA device {name:?}"),
                ));
            }
            let ctx = ffi::ibv_open_device(chosen);
            ffi::ibv_free_device_list(list);
            if ctx.is_null() {
                return Err(io::Error::last_os_error());
            }
            let mut port: ffi::ibv_port_attr = std::mem::zeroed();
            if ffi::ibv_query_port(ctx, PORT, &mut port as *mut ffi::ibv_port_attr as *mut _) != 0 {
                ffi::ibv_close_device(ctx);
                return Err(io::Error::last_os_error());
            }
            // RoCE needs a GID (index 0 here; RoCE v2 deployments pick the
            // index of their IPv4-mapped GID with MOONLAB_RDMA_GID_INDEX).
            let gid_index: i32 = std::env::var("MOONLAB_RDMA_GID_INDEX")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut gid: ffi::ibv_gid = std::mem::zeroed();
            if ffi::ibv_query_gid(ctx, PORT, gid_index, &mut gid) != 0 {
                ffi::ibv_close_device(ctx);
                return Err(io::Error::last_os_error());
            }
            let pd = ffi::ibv_alloc_pd(ctx);
            if pd.is_null() {
                ffi::ibv_close_device(ctx);
                return Err(io::Error::last_os_error());
            }
            Ok(Arc::new(Device {
                ctx,
                pd,
                lid: port.lid,
                gid: gid.raw,
                gid_index,
            }))
        }
    }

    /// Registers `region` for local and remote access.
    pub fn register(self: &Arc<Self>, region: &Arc<Region>) -> io::Result<Arc<MemoryRegion>> {
        let access = ffi::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_READ;
        // SAFETY: the region outlives the registration (held below).
        let base = unsafe { region.bytes(0, region.len() as u64) }
            .map_err(|e| io::Error::other(e.to_string()))?
            .as_ptr() as *mut std::ffi::c_void;
        let mr = unsafe { ffi::ibv_reg_mr(self.pd, base, region.len().max(1), access.0 as i32) };
        if mr.is_null() {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(MemoryRegion {
            mr,
            base: base as u64,
            _region: region.clone(),
            _device: self.clone(),
        }))
    }

    /// A queue pair in the INIT state, with its completion queue and the
    /// thread that polls it.
    pub fn queue_pair(self: &Arc<Self>) -> io::Result<QueuePair> {
        // SAFETY: plain libibverbs calls; every pointer is checked.
        unsafe {
            let cq = ffi::ibv_create_cq(
                self.ctx,
                QUEUE_DEPTH as i32 * 2,
                ptr::null_mut(),
                ptr::null_mut(),
                0,
            );
            if cq.is_null() {
                return Err(io::Error::last_os_error());
            }
            let mut init = ffi::ibv_qp_init_attr {
                qp_context: ptr::null_mut(),
                send_cq: cq,
                recv_cq: cq,
                srq: ptr::null_mut(),
                cap: ffi::ibv_qp_cap {
                    max_send_wr: QUEUE_DEPTH,
                    max_recv_wr: 1,
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: 0,
                },
                qp_type: ffi::ibv_qp_type::IBV_QPT_RC,
                sq_sig_all: 1,
            };
            let qp = ffi::ibv_create_qp(self.pd, &mut init);
            if qp.is_null() {
                let e = io::Error::last_os_error();
                ffi::ibv_destroy_cq(cq);
                return Err(e);
            }
            let mut attr = ffi::ibv_qp_attr {
                qp_state: ffi::ibv_qp_state::IBV_QPS_INIT,
                pkey_index: 0,
                port_num: PORT,
                qp_access_flags: (ffi::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
                    | ffi::ibv_access_flags::IBV_ACCESS_REMOTE_READ)
                    .0,
                ..Default::default()
            };
            let mask = ffi::ibv_qp_attr_mask::IBV_QP_STATE
                | ffi::ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ffi::ibv_qp_attr_mask::IBV_QP_PORT
                | ffi::ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
            let errno = ffi::ibv_modify_qp(qp, &mut attr, mask.0 as i32);
            if errno != 0 {
                ffi::ibv_destroy_qp(qp);
                ffi::ibv_destroy_cq(cq);
                return Err(io::Error::from_raw_os_error(errno));
            }
            let psn = (crate::client::random_client_id().0 & 0xff_ffff) as u32;
            Ok(QueuePair {
                qp,
                cq,
                device: self.clone(),
                psn,
                waiters: Arc::new(Mutex::new(HashMap::new())),
                next_wr: AtomicU64::new(1),
                stop: Arc::new(AtomicBool::new(false)),
                poller: None,
            })
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every queue pair and memory region holds an Arc<Device>,
        // so none is left.
        unsafe {
            ffi::ibv_dealloc_pd(self.pd);
            ffi::ibv_close_device(self.ctx);
        }
    }
}

/// A registered region.
pub struct MemoryRegion {
    mr: *mut ffi::ibv_mr,
    base: u64,
    _region: Arc<Region>,
    _device: Arc<Device>,
}

// SAFETY: the registration is immutable once made.
unsafe impl Send for MemoryRegion {}
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    pub fn lkey(&self) -> u32 {
        // SAFETY: mr is valid while self lives.
        unsafe { (*self.mr).lkey }
    }
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { (*self.mr).rkey }
    }
    pub fn base(&self) -> u64 {
        self.base
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: no work request uses it (they hold Arcs to it).
        unsafe {
            ffi::ibv_dereg_mr(self.mr);
        }
    }
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<(), ErrorCode>>>>>;

/// A reliable-connected queue pair.
pub struct QueuePair {
    qp: *mut ffi::ibv_qp,
    cq: *mut ffi::ibv_cq,
    device: Arc<Device>,
    psn: u32,
    waiters: Waiters,
    next_wr: AtomicU64,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

// SAFETY: libibverbs queue pairs may be posted to from any thread.
unsafe impl Send for QueuePair {}
unsafe impl Sync for QueuePair {}

struct CqPtr(*mut ffi::ibv_cq);
// SAFETY: polled by one thread only.
unsafe impl Send for CqPtr {}

impl QueuePair {
    pub fn address(&self) -> QpAddress {
        QpAddress {
            // SAFETY: qp is valid while self lives.
            qp_num: unsafe { (*self.qp).qp_num },
            lid: self.device.lid,
            gid: self.device.gid,
            psn: self.psn,
        }
    }

    /// INIT → RTR → RTS towards `remote`; then starts polling completions.
    pub fn connect(&mut self, remote: &QpAddress) -> io::Result<()> {
        // SAFETY: plain libibverbs calls on our own queue pair.
        unsafe {
            let mut attr = ffi::ibv_qp_attr {
                qp_state: ffi::ibv_qp_state::IBV_QPS_RTR,
                path_mtu: ffi::IBV_MTU_1024,
                dest_qp_num: remote.qp_num,
                rq_psn: remote.psn,
                max_dest_rd_atomic: 16,
                min_rnr_timer: 12,
                ah_attr: ffi::ibv_ah_attr {
                    dlid: remote.lid,
                    port_num: PORT,
                    ..Default::default()
                },
                ..Default::default()
            };
            if remote.gid != [0; 16] {
                attr.ah_attr.is_global = 1;
                attr.ah_attr.grh.dgid.raw = remote.gid;
                attr.ah_attr.grh.hop_limit = 0xff;
                attr.ah_attr.grh.sgid_index = self.device.gid_index as u8;
            }
            let mask = ffi::ibv_qp_attr_mask::IBV_QP_STATE
                | ffi::ibv_qp_attr_mask::IBV_QP_AV
                | ffi::ibv_qp_attr_mask::IBV_QP_PATH_MTU
                | ffi::ibv_qp_attr_mask::IBV_QP_DEST_QPN
                | ffi::ibv_qp_attr_mask::IBV_QP_RQ_PSN
                | ffi::ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
                | ffi::ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
            let errno = ffi::ibv_modify_qp(self.qp, &mut attr, mask.0 as i32);
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
            let mut attr = ffi::ibv_qp_attr {
                qp_state: ffi::ibv_qp_state::IBV_QPS_RTS,
                sq_psn: self.psn,
                timeout: 14,
                retry_cnt: 7,
                rnr_retry: 7,
                max_rd_atomic: 16,
                ..Default::default()
            };
            let mask = ffi::ibv_qp_attr_mask::IBV_QP_STATE
                | ffi::ibv_qp_attr_mask::IBV_QP_SQ_PSN
                | ffi::ibv_qp_attr_mask::IBV_QP_TIMEOUT
                | ffi::ibv_qp_attr_mask::IBV_QP_RETRY_CNT
                | ffi::ibv_qp_attr_mask::IBV_QP_RNR_RETRY
                | ffi::ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
            let errno = ffi::ibv_modify_qp(self.qp, &mut attr, mask.0 as i32);
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        let cq = CqPtr(self.cq);
        let (waiters, stop) = (self.waiters.clone(), self.stop.clone());
        self.poller = Some(
            std::thread::Builder::new()
                .name("moonlab-rdma-cq".into())
                .spawn(move || poll_loop(cq, waiters, stop))?,
        );
        Ok(())
    }

    /// Posts one RDMA READ or WRITE of `len` bytes between local
    /// `local_addr` (registered under `lkey`) and remote `remote_addr`
    /// (under `rkey`); resolves when it completes.
    pub fn post(
        &self,
        write: bool,
        local_addr: u64,
        lkey: u32,
        len: u32,
        remote_addr: u64,
        rkey: u32,
    ) -> oneshot::Receiver<Result<(), ErrorCode>> {
        let (tx, rx) = oneshot::channel();
        let wr_id = self.next_wr.fetch_add(1, Ordering::Relaxed);
        self.waiters.lock().insert(wr_id, tx);
        let mut sge = ffi::ibv_sge {
            addr: local_addr,
            length: len,
            lkey,
        };
        let mut wr = ffi::ibv_send_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
            opcode: if write {
                ffi::ibv_wr_opcode::IBV_WR_RDMA_WRITE
            } else {
                ffi::ibv_wr_opcode::IBV_WR_RDMA_READ
            },
            send_flags: ffi::ibv_send_flags::IBV_SEND_SIGNALED.0,
            ..Default::default()
        };
        wr.wr.rdma = ffi::ibv_send_wr__bindgen_ty_2__bindgen_ty_1 { remote_addr, rkey };
        let mut bad: *mut ffi::ibv_send_wr = ptr::null_mut();
        // SAFETY: ibv_post_send is an inline function in verbs.h: call the
        // provider's op, as libibverbs does. The buffers outlive the
        // request (the caller holds the regions until it resolves).
        let errno = unsafe {
            let ctx = (*self.qp).context;
            match (*ctx).ops.post_send {
                Some(f) => f(self.qp, &mut wr, &mut bad),
                None => libc::ENOSYS,
            }
        };
        if errno != 0 {
            if let Some(tx) = self.waiters.lock().remove(&wr_id) {
                let _ = tx.send(Err(ErrorCode::TransferFail));
            }
        }
        rx
    }
}

fn poll_loop(cq: CqPtr, waiters: Waiters, stop: Arc<AtomicBool>) {
    let mut wcs: Vec<ffi::ibv_wc> = vec![ffi::ibv_wc::default(); 64];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: ibv_poll_cq is inline in verbs.h: the provider's op.
        let n = unsafe {
            let ctx = (*cq.0).context;
            match (*ctx).ops.poll_cq {
                Some(f) => f(cq.0, wcs.len() as i32, wcs.as_mut_ptr()),
                None => -1,
            }
        };
        if n < 0 {
            break;
        }
        if n == 0 {
            std::thread::yield_now();
            continue;
        }
        let mut w = waiters.lock();
        for wc in &wcs[..n as usize] {
            if let Some(tx) = w.remove(&wc.wr_id()) {
                let _ = tx.send(if wc.is_valid() {
                    Ok(())
                } else {
                    Err(ErrorCode::TransferFail)
                });
            }
        }
    }
    for (_, tx) in waiters.lock().drain() {
        let _ = tx.send(Err(ErrorCode::TransferFail));
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        // SAFETY: the poller has stopped; nothing else uses them.
        unsafe {
            ffi::ibv_destroy_qp(self.qp);
            ffi::ibv_destroy_cq(self.cq);
        }
    }
}

/// The server side: answers a client's `RdmaConnect` with a queue pair
/// connected to it and the segment's memory key.
pub struct RdmaTarget {
    device: Arc<Device>,
    mr: Arc<MemoryRegion>,
    len: u64,
}

impl RdmaTarget {
    pub fn new(device: Arc<Device>, region: &Arc<Region>) -> io::Result<RdmaTarget> {
        let mr = device.register(region)?;
        Ok(RdmaTarget {
            device,
            mr,
            len: region.len() as u64,
        })
    }

    /// Connects a queue pair to the client at `remote`; the queue pair must
    /// live as long as the client's connection.
    pub fn accept(&self, remote: &QpAddress) -> io::Result<(RdmaAccept, QueuePair)> {
        let mut qp = self.device.queue_pair()?;
        qp.connect(remote)?;
        Ok((
            RdmaAccept {
                qp: qp.address(),
                rkey: self.mr.rkey(),
                base: self.mr.base(),
                len: self.len,
            },
            qp,
        ))
    }
}

impl super::tcp::Handshake for RdmaTarget {
    fn accept(
        &self,
        payload: &[u8],
    ) -> Result<(Vec<u8>, Box<dyn std::any::Any + Send>), ErrorCode> {
        let remote = QpAddress::decode(payload).ok_or(ErrorCode::InvalidParams)?;
        let (acc, qp) = RdmaTarget::accept(self, &remote).map_err(|_| ErrorCode::TransferFail)?;
        Ok((acc.encode(), Box::new(qp)))
    }
}

/// A connection to one target: the queue pair and the target's memory.
struct Connection {
    qp: QueuePair,
    remote: RdmaAccept,
    /// The TCP connection the handshake used; the server keeps the queue
    /// pair while it is open.
    _control: tokio::net::TcpStream,
}

/// The client side of the RDMA transport.
#[derive(Clone)]
pub struct RdmaTransport {
    inner: Arc<Inner>,
}

struct Inner {
    device: Arc<Device>,
    secret: crate::rpc::Secret,
    conns: tokio::sync::Mutex<HashMap<Path, Arc<Connection>>>,
    registered: Mutex<HashMap<usize, Arc<MemoryRegion>>>,
}

impl RdmaTransport {
    pub fn new(device: Arc<Device>, secret: crate::rpc::Secret) -> RdmaTransport {
        RdmaTransport {
            inner: Arc::new(Inner {
                device,
                secret,
                conns: tokio::sync::Mutex::new(HashMap::new()),
                registered: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl Inner {
    fn registration(&self, region: &Arc<Region>) -> Result<Arc<MemoryRegion>, ErrorCode> {
        let key = Arc::as_ptr(region) as usize;
        if let Some(mr) = self.registered.lock().get(&key) {
            return Ok(mr.clone());
        }
        let mr = self
            .device
            .register(region)
            .map_err(|_| ErrorCode::TransferFail)?;
        self.registered.lock().insert(key, mr.clone());
        Ok(mr)
    }

    async fn connection(&self, path: &Path) -> Result<Arc<Connection>, ErrorCode> {
        let mut conns = self.conns.lock().await;
        if let Some(c) = conns.get(path) {
            return Ok(c.clone());
        }
        let (mut control, _) =
            super::tcp::connect(path, &self.secret, std::time::Duration::from_secs(5))
                .await
                .map_err(|_| ErrorCode::TransferFail)?;
        let mut qp = self
            .device
            .queue_pair()
            .map_err(|_| ErrorCode::TransferFail)?;
        let reply = super::tcp::handshake(&mut control, &qp.address().encode()).await?;
        let remote = RdmaAccept::decode(&reply).ok_or(ErrorCode::TransferFail)?;
        qp.connect(&remote.qp)
            .map_err(|_| ErrorCode::TransferFail)?;
        let c = Arc::new(Connection {
            qp,
            remote,
            _control: control,
        });
        conns.insert(path.clone(), c.clone());
        Ok(c)
    }
}

type SliceFuture = Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>>;

impl super::Transport for RdmaTransport {
    fn name(&self) -> &'static str {
        "rdma"
    }

    /// Moves one slice by RDMA READ or WRITE.
    fn move_slice(&self, path: &Path, slice: Slice) -> SliceFuture {
        let (inner, path) = (self.inner.clone(), path.clone());
        Box::pin(async move {
            let conn = inner.connection(&path).await?;
            if slice
                .remote_offset
                .checked_add(slice.len)
                .is_none_or(|e| e > conn.remote.len)
                || slice.len > u32::MAX as u64
            {
                return Err(ErrorCode::InvalidParams);
            }
            let mr = inner.registration(&slice.local)?;
            let rx = conn.qp.post(
                slice.opcode == super::Opcode::Write,
                mr.base() + slice.local_offset,
                mr.lkey(),
                slice.len as u32,
                conn.remote.base + slice.remote_offset,
                conn.remote.rkey,
            );
            let r = rx.await.unwrap_or(Err(ErrorCode::TransferFail));
            if r.is_err() {
                // A failed RC queue pair is in the error state: start afresh.
                inner.conns.lock().await.remove(&path);
            }
            drop(mr);
            r
        })
    }

    fn probe(&self, path: &Path) -> Pin<Box<dyn Future<Output = Result<u64, ErrorCode>> + Send>> {
        let (inner, path) = (self.inner.clone(), path.clone());
        Box::pin(async move { inner.connection(&path).await.map(|c| c.remote.len) })
    }

    /// Notes travel over the connection's TCP side, as a TCP client's do.
    fn send_note(&self, path: &Path, note: Vec<u8>) -> SliceFuture {
        let (inner, path) = (self.inner.clone(), path.clone());
        Box::pin(async move {
            let (mut s, _) =
                super::tcp::connect(&path, &inner.secret, std::time::Duration::from_secs(5))
                    .await
                    .map_err(|_| ErrorCode::TransferFail)?;
            super::tcp::note_on(&mut s, &note).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_messages_round_trip() {
        let a = RdmaAccept {
            qp: QpAddress {
                qp_num: 77,
                lid: 3,
                gid: [9; 16],
                psn: 0xabcdef,
            },
            rkey: 42,
            base: 1 << 40,
            len: 1 << 30,
        };
        assert_eq!(RdmaAccept::decode(&a.encode()), Some(a));
        assert_eq!(QpAddress::decode(&a.qp.encode()), Some(a.qp));
        assert_eq!(QpAddress::decode(&[0; 5]), None);
        assert_eq!(RdmaAccept::decode(&[0; 5]), None);
    }
}
