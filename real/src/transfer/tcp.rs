//! The TCP transport (tokio): the server side, which serves a store node's
//! registered region, and the client side, a pool of connections per path
//! (local NIC × remote endpoint; [`TcpConfig::conns_per_path`], upstream
//! uses 4). Payloads go between the socket and registered memory directly:
//! a write's bytes are read from the socket into the target region, a
//! read's are written from it, with no copy beyond the kernel's.
//!
//! A connection starts with a hello carrying the cluster secret
//! ([`wire`]); a server refuses (closes) a connection without the right
//! one. Every request is answered only after it was applied, so a write
//! reported complete is in the target's memory.

use super::region::Region;
use super::wire::{self, Opcode, ReplyHeader, RequestHeader, REPLY_BYTES, REQUEST_BYTES};
use super::{Path, Slice};
use crate::catalog::Catalog;
use crate::error::ErrorCode;
use crate::rpc::Secret;
use crate::ssd::{round_up, SsdFile, BLOCK};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// How long a hello may take.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes all of `bufs` (header and payload in one system call where the
/// kernel takes them).
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    mut a: &[u8],
    mut b: &[u8],
) -> std::io::Result<()> {
    while !a.is_empty() {
        let n = w
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    w.write_all(b).await
}

pub async fn read_hello<R: AsyncRead + Unpin>(r: &mut R, secret: &Secret) -> Result<(), String> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head).await.map_err(|e| e.to_string())?;
    let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let version = u16::from_le_bytes([head[4], head[5]]);
    let len = u16::from_le_bytes([head[6], head[7]]) as usize;
    if magic != wire::MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    if version != wire::VERSION {
        return Err(format!(
            "protocol version {version}, this server speaks {}",
            wire::VERSION
        ));
    }
    if len > wire::MAX_SECRET_BYTES {
        return Err(format!("a secret of {len} bytes"));
    }
    let mut presented = vec![0u8; len];
    r.read_exact(&mut presented)
        .await
        .map_err(|e| e.to_string())?;
    let mut header = b"Bearer ".to_vec();
    header.extend_from_slice(&presented);
    if !secret.accepts(&header) {
        return Err("wrong cluster secret".into());
    }
    Ok(())
}

/// Serves `region` to transfer-engine clients on `listener` until
/// `shutdown` resolves. Each connection runs as its own task; a connection
/// that breaks the protocol is closed and the others go on.
pub async fn serve(
    listener: TcpListener,
    region: Arc<Region>,
    secret: Secret,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with_catalog(
        listener,
        Backing::Memory(region),
        secret,
        None,
        None,
        shutdown,
    )
    .await
}

/// What a transfer-engine server serves: registered memory (a DRAM
/// segment) or a file of the SSD tier.
#[derive(Clone)]
pub enum Backing {
    Memory(Arc<Region>),
    /// Reads and writes go through direct I/O in whole 4 KiB blocks; a
    /// write must start on a block (the master places SSD objects in whole
    /// blocks) and its last block is padded with zeros.
    File(Arc<SsdFile>),
}

impl Backing {
    pub fn len(&self) -> u64 {
        match self {
            Backing::Memory(r) => r.len() as u64,
            Backing::File(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn in_range(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len())
    }
}

/// Connection setup for another transport (RDMA) carried over a TCP
/// connection: the client's message in, the reply out, and whatever must
/// live as long as the connection (the server's queue pair).
pub trait Handshake: Send + Sync {
    fn accept(&self, payload: &[u8])
        -> Result<(Vec<u8>, Box<dyn std::any::Any + Send>), ErrorCode>;
}

/// As [`serve`], for any [`Backing`], recording writers' notes in `catalog`
/// (a store node's; without one, notes are refused) and answering
/// connection setup with `handshake` (without one, it is refused).
pub async fn serve_with_catalog(
    listener: TcpListener,
    backing: Backing,
    secret: Secret,
    catalog: Option<Arc<Mutex<Catalog>>>,
    handshake: Option<Arc<dyn Handshake>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let backing = backing.clone();
                let secret = secret.clone();
                let catalog = catalog.clone();
                let handshake = handshake.clone();
                conns.spawn(async move {
                    let _ = serve_connection(stream, backing, secret, catalog, handshake).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
    Ok(())
}

async fn reply(s: &mut TcpStream, id: u64, status: i32) -> Result<(), String> {
    s.write_all(&ReplyHeader { id, status }.encode())
        .await
        .map_err(|e| e.to_string())
}

async fn serve_connection(
    mut s: TcpStream,
    backing: Backing,
    secret: Secret,
    catalog: Option<Arc<Mutex<Catalog>>>,
    handshake: Option<Arc<dyn Handshake>>,
) -> Result<(), String> {
    // What connection setup made (a queue pair) lives as long as this.
    let mut _kept: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    match tokio::time::timeout(HELLO_TIMEOUT, read_hello(&mut s, &secret)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("no hello in time".into()),
    }
    let mut accept = [0u8; 9];
    accept[1..].copy_from_slice(&backing.len().to_le_bytes());
    s.write_all(&accept).await.map_err(|e| e.to_string())?;
    let mut head = [0u8; REQUEST_BYTES];
    loop {
        match s.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let h = RequestHeader::decode(&head).map_err(|e| e.to_string())?;
        let in_range = backing.in_range(h.offset, h.len);
        match (h.opcode, &backing) {
            (Opcode::Note, _) => {
                let mut payload = vec![0u8; h.len as usize];
                s.read_exact(&mut payload)
                    .await
                    .map_err(|e| e.to_string())?;
                let status = match (wire::Note::decode(&payload), &catalog) {
                    (Some(n), Some(c)) if backing.in_range(n.offset, n.size) => {
                        c.lock().record(n);
                        0
                    }
                    _ => ErrorCode::InvalidParams.code(),
                };
                reply(&mut s, h.id, status).await?;
            }
            (Opcode::Connect, _) => {
                let mut payload = vec![0u8; h.len as usize];
                s.read_exact(&mut payload)
                    .await
                    .map_err(|e| e.to_string())?;
                let answer = match &handshake {
                    Some(hs) => hs.accept(&payload),
                    None => Err(ErrorCode::InvalidParams),
                };
                match answer {
                    Ok((bytes, keep)) if _kept.len() < 64 => {
                        _kept.push(keep);
                        let mut out = (bytes.len() as u32).to_le_bytes().to_vec();
                        out.extend_from_slice(&bytes);
                        write_all_vectored(
                            &mut s,
                            &ReplyHeader {
                                id: h.id,
                                status: 0,
                            }
                            .encode(),
                            &out,
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    }
                    Ok(_) => reply(&mut s, h.id, ErrorCode::InvalidParams.code()).await?,
                    Err(e) => reply(&mut s, h.id, e.code()).await?,
                }
            }
            (Opcode::Read, Backing::Memory(region)) if in_range => {
                let head = ReplyHeader {
                    id: h.id,
                    status: 0,
                }
                .encode();
                // SAFETY: the client owns the range it reads (a replica the
                // master leased to it).
                let bytes = unsafe { region.bytes(h.offset, h.len) }.map_err(|e| e.to_string())?;
                write_all_vectored(&mut s, &head, bytes)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            (Opcode::Write, Backing::Memory(region)) if in_range => {
                // SAFETY: the client owns the range it writes (a replica the
                // master reserved for it).
                let bytes =
                    unsafe { region.bytes_mut(h.offset, h.len) }.map_err(|e| e.to_string())?;
                s.read_exact(bytes).await.map_err(|e| e.to_string())?;
                reply(&mut s, h.id, 0).await?;
            }
            (Opcode::Read, Backing::File(file)) if in_range => {
                let from = h.offset / BLOCK * BLOCK;
                let to = round_up(h.offset + h.len).min(file.len());
                let buf = Arc::new(Region::new((to - from) as usize).map_err(|e| e.to_string())?);
                match file.read(from, &buf, 0, to - from).await {
                    Ok(()) => {
                        let head = ReplyHeader {
                            id: h.id,
                            status: 0,
                        }
                        .encode();
                        // SAFETY: the buffer is this request's own.
                        let bytes = unsafe { buf.bytes(h.offset - from, h.len) }
                            .map_err(|e| e.to_string())?;
                        write_all_vectored(&mut s, &head, bytes)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Err(_) => reply(&mut s, h.id, ErrorCode::TransferFail.code()).await?,
                }
            }
            (Opcode::Write, Backing::File(file)) if in_range && h.offset % BLOCK == 0 => {
                let padded = round_up(h.len).min(file.len() - h.offset);
                let buf = Arc::new(Region::new(padded.max(1) as usize).map_err(|e| e.to_string())?);
                // SAFETY: the buffer is this request's own.
                let bytes = unsafe { buf.bytes_mut(0, h.len) }.map_err(|e| e.to_string())?;
                s.read_exact(bytes).await.map_err(|e| e.to_string())?;
                let status = match file.write(h.offset, &buf, 0, padded).await {
                    Ok(()) => 0,
                    Err(_) => ErrorCode::TransferFail.code(),
                };
                reply(&mut s, h.id, status).await?;
            }
            (op, _) => {
                reply(&mut s, h.id, ErrorCode::InvalidParams.code()).await?;
                if op == Opcode::Write {
                    // The payload that follows cannot be skipped safely.
                    return Err("a write outside the segment (or off a block on SSD)".into());
                }
            }
        }
    }
}

/// Settings of the TCP transport.
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// Connections per path (upstream: 4).
    pub conns_per_path: usize,
    /// How long one slice may take before it fails (and is retried on
    /// another path).
    pub slice_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            conns_per_path: 4,
            slice_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

enum Work {
    Slice(Slice),
    Note(Vec<u8>),
}

type Job = (Work, oneshot::Sender<Result<(), ErrorCode>>);

struct Pool {
    conns: Vec<mpsc::Sender<Job>>,
    next: AtomicUsize,
}

/// The client side of the TCP transport.
pub struct TcpTransport {
    config: TcpConfig,
    secret: Secret,
    pools: Mutex<HashMap<Path, Arc<Pool>>>,
    next_id: Arc<AtomicU64>,
}

impl TcpTransport {
    pub fn new(config: TcpConfig, secret: Secret) -> TcpTransport {
        TcpTransport {
            config,
            secret,
            pools: Mutex::new(HashMap::new()),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    fn pool(&self, path: &Path) -> Arc<Pool> {
        let mut pools = self.pools.lock();
        pools
            .entry(path.clone())
            .or_insert_with(|| {
                let conns = (0..self.config.conns_per_path.max(1))
                    .map(|_| {
                        let (tx, rx) = mpsc::channel::<Job>(64);
                        let path = path.clone();
                        let config = self.config.clone();
                        let secret = self.secret.clone();
                        let ids = self.next_id.clone();
                        tokio::spawn(connection(path, config, secret, ids, rx));
                        tx
                    })
                    .collect();
                Arc::new(Pool {
                    conns,
                    next: AtomicUsize::new(0),
                })
            })
            .clone()
    }
}

/// Connects through `path` and says hello; returns the stream and the
/// remote region's length.
pub async fn connect(
    path: &Path,
    secret: &Secret,
    timeout: Duration,
) -> Result<(TcpStream, u64), String> {
    let socket = match path.remote {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|e| e.to_string())?;
    if let Some(local) = path.local {
        socket
            .bind(SocketAddr::new(local, 0))
            .map_err(|e| format!("binding to {local}: {e}"))?;
    }
    let mut s = tokio::time::timeout(timeout, socket.connect(path.remote))
        .await
        .map_err(|_| format!("connecting to {}: timed out", path.remote))?
        .map_err(|e| format!("connecting to {}: {e}", path.remote))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(&wire::encode_hello(secret.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    let mut accept = [0u8; 9];
    tokio::time::timeout(timeout, s.read_exact(&mut accept))
        .await
        .map_err(|_| "no answer to hello".to_string())?
        .map_err(|_| {
            format!(
                "{} refused the connection (wrong secret or protocol)",
                path.remote
            )
        })?;
    if accept[0] != 0 {
        return Err(format!("{} refused the connection", path.remote));
    }
    let len = u64::from_le_bytes(accept[1..9].try_into().unwrap_or([0; 8]));
    Ok((s, len))
}

/// Sends a writer's note on an established connection `s`.
pub async fn note_on(s: &mut TcpStream, note: &[u8]) -> Result<(), ErrorCode> {
    one_note(s, 1, note).await
}

/// Connection setup for another transport over an established connection
/// `s`: sends `payload`, returns the server's answer.
pub async fn handshake(s: &mut TcpStream, payload: &[u8]) -> Result<Vec<u8>, ErrorCode> {
    let io = |_| ErrorCode::TransferFail;
    let head = RequestHeader {
        opcode: Opcode::Connect,
        id: 1,
        offset: 0,
        len: payload.len() as u64,
    };
    exchange(s, head, payload).await?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.map_err(io)?;
    let len = u32::from_le_bytes(len) as u64;
    if len > wire::MAX_CONNECT_BYTES {
        return Err(ErrorCode::TransferFail);
    }
    let mut out = vec![0u8; len as usize];
    s.read_exact(&mut out).await.map_err(io)?;
    Ok(out)
}

/// Sends a request (header and `payload`) and reads its reply's header;
/// the reply must answer this request.
async fn exchange(s: &mut TcpStream, head: RequestHeader, payload: &[u8]) -> Result<(), ErrorCode> {
    let io = |_| ErrorCode::TransferFail;
    write_all_vectored(s, &head.encode(), payload)
        .await
        .map_err(io)?;
    let mut r = [0u8; REPLY_BYTES];
    s.read_exact(&mut r).await.map_err(io)?;
    let r = ReplyHeader::decode(&r);
    if r.id != head.id {
        return Err(ErrorCode::TransferFail);
    }
    crate::rpc::code_result(r.status)
}

async fn one_note(s: &mut TcpStream, id: u64, note: &[u8]) -> Result<(), ErrorCode> {
    let head = RequestHeader {
        opcode: Opcode::Note,
        id,
        offset: 0,
        len: note.len() as u64,
    };
    exchange(s, head, note).await
}

async fn one_slice(s: &mut TcpStream, id: u64, slice: &Slice) -> Result<(), ErrorCode> {
    let head = RequestHeader {
        opcode: slice.opcode,
        id,
        offset: slice.remote_offset,
        len: slice.len,
    };
    match slice.opcode {
        Opcode::Note | Opcode::Connect => Err(ErrorCode::InvalidParams),
        Opcode::Write => {
            // SAFETY: the caller owns the local range for the transfer.
            let bytes = unsafe { slice.local.bytes(slice.local_offset, slice.len) }
                .map_err(|_| ErrorCode::InvalidParams)?;
            exchange(s, head, bytes).await
        }
        Opcode::Read => {
            exchange(s, head, &[]).await?;
            // SAFETY: as above.
            let bytes = unsafe { slice.local.bytes_mut(slice.local_offset, slice.len) }
                .map_err(|_| ErrorCode::InvalidParams)?;
            s.read_exact(bytes)
                .await
                .map_err(|_| ErrorCode::TransferFail)
                .map(|_| ())
        }
    }
}

/// One connection: carries slices one after another, reconnecting after a
/// failure (the failed slice is reported; the engine retries it).
async fn connection(
    path: Path,
    config: TcpConfig,
    secret: Secret,
    ids: Arc<AtomicU64>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut stream: Option<TcpStream> = None;
    while let Some((work, done)) = rx.recv().await {
        if stream.is_none() {
            match connect(&path, &secret, config.connect_timeout).await {
                Ok((s, _)) => stream = Some(s),
                Err(_) => {
                    let _ = done.send(Err(ErrorCode::TransferFail));
                    continue;
                }
            }
        }
        let Some(s) = stream.as_mut() else { continue };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let step = async {
            match &work {
                Work::Slice(slice) => one_slice(s, id, slice).await,
                Work::Note(note) => one_note(s, id, note).await,
            }
        };
        let r = match tokio::time::timeout(config.slice_timeout, step).await {
            Ok(r) => r,
            Err(_) => Err(ErrorCode::TransferFail),
        };
        if matches!(r, Err(ErrorCode::TransferFail)) {
            // The stream's framing is lost: start afresh.
            stream = None;
        }
        let _ = done.send(r);
    }
}

impl TcpTransport {
    /// Hands `work` to the next connection of `path`'s pool and awaits it.
    fn dispatch(
        &self,
        path: &Path,
        work: Work,
    ) -> Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>> {
        let pool = self.pool(path);
        Box::pin(async move {
            let i = pool.next.fetch_add(1, Ordering::Relaxed) % pool.conns.len();
            let (tx, rx) = oneshot::channel();
            if pool.conns[i].send((work, tx)).await.is_err() {
                return Err(ErrorCode::TransferFail);
            }
            rx.await.unwrap_or(Err(ErrorCode::TransferFail))
        })
    }

    /// Moves one slice on a connection of `path`'s pool.
    pub fn move_slice(
        &self,
        path: &Path,
        slice: Slice,
    ) -> Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>> {
        self.dispatch(path, Work::Slice(slice))
    }

    /// Sends a writer's note on a connection of `path`'s pool.
    pub fn send_note(
        &self,
        path: &Path,
        note: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>> {
        self.dispatch(path, Work::Note(note))
    }

    /// Connects through `path` once; the target's segment length.
    pub fn probe(
        &self,
        path: &Path,
    ) -> Pin<Box<dyn Future<Output = Result<u64, ErrorCode>> + Send>> {
        let path = path.clone();
        let secret = self.secret.clone();
        let timeout = self.config.connect_timeout;
        Box::pin(async move {
            connect(&path, &secret, timeout)
                .await
                .map(|(_, len)| len)
                .map_err(|_| ErrorCode::TransferFail)
        })
    }
}
