//! The same-host path: a client on the store node's host maps the node's
//! DRAM segment and moves bytes with a memory copy instead of a socket.
//!
//! A store node's segment is a memory file ([`Region::shared`]). Beside its
//! TCP endpoint the node listens on a Unix socket and advertises it in the
//! segment's endpoint as `shm:<boot id>:<path>` (the boot id tells a client
//! whether it is on the same host). A client connects, says hello with the
//! cluster secret (the TCP transport's hello), and receives the memory
//! file's descriptor (`SCM_RIGHTS`) and the segment's length; it maps the
//! file and from then on reads and writes replicas in place. The same
//! connection carries the writers' notes to the node's catalog. Leases,
//! placement and checksums are the same as over TCP: only the copy changes.
//! (Upstream's equivalent is its shared-memory client mode.)

use super::region::Region;
use super::wire::{self, Opcode, ReplyHeader, RequestHeader, REPLY_BYTES, REQUEST_BYTES};
use crate::catalog::Catalog;
use crate::error::ErrorCode;
use crate::rpc::Secret;
use parking_lot::Mutex;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// This host's boot id (`/proc/sys/kernel/random/boot_id`): two processes
/// share memory files only if theirs are equal.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The endpoint entry advertising a same-host socket.
pub fn endpoint(path: &Path) -> Option<String> {
    Some(format!("shm:{}:{}", boot_id()?, path.display()))
}

/// The socket path in `endpoints` (a comma list) usable from this host.
pub fn local_socket(endpoints: &str) -> Option<PathBuf> {
    let me = boot_id()?;
    endpoints.split(',').map(str::trim).find_map(|e| {
        let rest = e.strip_prefix("shm:")?;
        let (boot, path) = rest.split_once(':')?;
        (boot == me).then(|| PathBuf::from(path))
    })
}

/// A message header over one buffer with room for one descriptor; `f`
/// runs with it while the buffers live.
fn with_message<R>(buf: *mut u8, len: usize, f: impl FnOnce(&mut libc::msghdr) -> R) -> R {
    // SAFETY: plain C structs; the pointers stay valid for `f`'s duration.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf as *mut libc::c_void,
            iov_len: len,
        };
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        let mut control = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        f(&mut msg)
    }
}

fn send_fd(sock: RawFd, fd: RawFd, payload: &[u8]) -> io::Result<()> {
    with_message(payload.as_ptr() as *mut u8, payload.len(), |msg| {
        // SAFETY: a standard SCM_RIGHTS sendmsg on the header built above.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
            if libc::sendmsg(sock, msg, libc::MSG_NOSIGNAL) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })
}

fn recv_fd(sock: RawFd, payload: &mut [u8]) -> io::Result<Option<std::fs::File>> {
    let want = payload.len();
    with_message(payload.as_mut_ptr(), want, |msg| {
        // SAFETY: a standard SCM_RIGHTS recvmsg; a received descriptor is
        // owned by the returned File.
        unsafe {
            let n = libc::recvmsg(sock, msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n as usize != want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "a short answer to hello",
                ));
            }
            let cmsg = libc::CMSG_FIRSTHDR(msg);
            if cmsg.is_null()
                || (*cmsg).cmsg_level != libc::SOL_SOCKET
                || (*cmsg).cmsg_type != libc::SCM_RIGHTS
            {
                return Ok(None);
            }
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
            Ok(Some(std::fs::File::from_raw_fd(fd)))
        }
    })
}

/// Serves `region` (a shared region) to same-host clients on `listener`
/// until `shutdown`, recording their notes in `catalog`.
pub async fn serve(
    listener: UnixListener,
    region: Arc<Region>,
    secret: Secret,
    catalog: Arc<Mutex<Catalog>>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let fd = region.file().map(|f| f.as_raw_fd()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the region is not shared (no memory file)",
        )
    })?;
    tokio::pin!(shutdown);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (region, secret, catalog) = (region.clone(), secret.clone(), catalog.clone());
                conns.spawn(async move {
                    let _ = serve_connection(stream, fd, region, secret, catalog).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
    Ok(())
}

async fn serve_connection(
    mut s: UnixStream,
    fd: RawFd,
    region: Arc<Region>,
    secret: Secret,
    catalog: Arc<Mutex<Catalog>>,
) -> Result<(), String> {
    match tokio::time::timeout(
        super::tcp::HELLO_TIMEOUT,
        super::tcp::read_hello(&mut s, &secret),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err("no hello in time".into()),
    }
    let mut accept = [0u8; 9];
    accept[1..].copy_from_slice(&(region.len() as u64).to_le_bytes());
    s.writable().await.map_err(|e| e.to_string())?;
    send_fd(s.as_raw_fd(), fd, &accept).map_err(|e| e.to_string())?;
    let mut head = [0u8; REQUEST_BYTES];
    loop {
        match s.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let h = RequestHeader::decode(&head).map_err(|e| e.to_string())?;
        if h.opcode != Opcode::Note {
            // Bytes move through the mapping; only notes come this way.
            return Err("only notes travel over the same-host socket".into());
        }
        let mut payload = vec![0u8; h.len as usize];
        s.read_exact(&mut payload)
            .await
            .map_err(|e| e.to_string())?;
        let status = match wire::Note::decode(&payload) {
            Some(n) if region.check(n.offset, n.size).is_ok() => {
                catalog.lock().record(n);
                0
            }
            _ => ErrorCode::InvalidParams.code(),
        };
        s.write_all(&ReplyHeader { id: h.id, status }.encode())
            .await
            .map_err(|e| e.to_string())?;
    }
}

/// A store node's segment mapped into this process.
pub struct Attached {
    pub region: Arc<Region>,
    control: tokio::sync::Mutex<UnixStream>,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("len", &self.region.len())
            .finish()
    }
}

impl Attached {
    /// Sends a writer's note to the node.
    pub async fn note(&self, note: &[u8]) -> Result<(), ErrorCode> {
        let io = |_| ErrorCode::TransferFail;
        let mut s = self.control.lock().await;
        let head = RequestHeader {
            opcode: Opcode::Note,
            id: 1,
            offset: 0,
            len: note.len() as u64,
        }
        .encode();
        s.write_all(&head).await.map_err(io)?;
        s.write_all(note).await.map_err(io)?;
        let mut r = [0u8; REPLY_BYTES];
        s.read_exact(&mut r).await.map_err(io)?;
        crate::rpc::code_result(ReplyHeader::decode(&r).status)
    }
}

/// Connects to a node's same-host socket and maps its segment.
pub async fn attach(path: &Path, secret: &Secret) -> Result<Attached, String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(path))
        .await
        .map_err(|_| format!("{}: timed out", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    s.write_all(&wire::encode_hello(secret.as_bytes()))
        .await
        .map_err(|e| e.to_string())?;
    let mut accept = [0u8; 9];
    let mut file = None;
    let mut tries = 0;
    while file.is_none() {
        tries += 1;
        if tries > 100 {
            return Err("no answer to hello".into());
        }
        tokio::time::timeout(Duration::from_secs(5), s.readable())
            .await
            .map_err(|_| "no answer to hello (wrong secret?)".to_string())?
            .map_err(|e| e.to_string())?;
        match recv_fd(s.as_raw_fd(), &mut accept) {
            Ok(Some(f)) => file = Some(f),
            Ok(None) => return Err("the node sent no memory file".into()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(format!("the node refused the connection: {e}")),
        }
    }
    if accept[0] != 0 {
        return Err("the node refused the connection".into());
    }
    let len = u64::from_le_bytes(accept[1..9].try_into().unwrap_or([0; 8]));
    let region =
        Region::map_file(file.ok_or("no memory file")?, len as usize).map_err(|e| e.to_string())?;
    Ok(Attached {
        region: Arc::new(region),
        control: tokio::sync::Mutex::new(s),
    })
}
