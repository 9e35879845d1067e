//! The SSD tier's I/O: one preallocated file opened with `O_DIRECT` (the
//! page cache bypassed, as a store of cold KV blocks wants), read and
//! written in 4 KiB-aligned units from page-aligned registered memory.
//! Requests go to an io_uring ring served by a dedicated thread, which
//! keeps up to `depth` of them in flight; where the kernel refuses
//! io_uring (or it is turned off) they fall back to `pread`/`pwrite` on
//! tokio's blocking threads. Either way the caller awaits a future.

use crate::transfer::Region;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The unit of direct I/O: offsets and lengths are multiples of it.
pub const BLOCK: u64 = 4096;

/// Rounds `n` up to a whole number of blocks.
pub fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

struct Request {
    op: Op,
    buf: Arc<Region>,
    buf_offset: u64,
    len: u64,
    file_offset: u64,
    done: oneshot::Sender<io::Result<()>>,
}

/// How requests reach the disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum IoEngine {
    IoUring,
    /// `pread`/`pwrite` on blocking threads.
    Blocking,
}

/// A file of the SSD tier.
pub struct SsdFile {
    file: Arc<File>,
    len: u64,
    ring: Option<std::sync::mpsc::Sender<Request>>,
}

impl SsdFile {
    /// Opens (creating) `path` with `O_DIRECT`, sized to `len` bytes (a
    /// multiple of [`BLOCK`]), with an io_uring of `depth` entries if
    /// `io_uring` is asked for and the kernel allows it.
    pub fn open(path: &Path, len: u64, io_uring: bool, depth: u32) -> io::Result<SsdFile> {
        if len == 0 || !len.is_multiple_of(BLOCK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "an SSD file's size must be a positive multiple of {BLOCK} bytes, not {len}"
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("opening {} with O_DIRECT: {e}", path.display()),
                )
            })?;
        if file.metadata()?.len() < len {
            // Reserve the blocks now (no holes to fill on the first write).
            // SAFETY: fallocate on a file descriptor we own.
            let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
            if r != 0 {
                file.set_len(len)?;
            }
        }
        let file = Arc::new(file);
        let ring = if io_uring {
            start_ring(file.clone(), depth.clamp(1, 4096)).ok()
        } else {
            None
        };
        Ok(SsdFile { file, len, ring })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn engine(&self) -> IoEngine {
        if self.ring.is_some() {
            IoEngine::IoUring
        } else {
            IoEngine::Blocking
        }
    }

    fn check(&self, buf: &Region, buf_offset: u64, len: u64, file_offset: u64) -> io::Result<()> {
        let aligned = file_offset.is_multiple_of(BLOCK)
            && len.is_multiple_of(BLOCK)
            && buf_offset.is_multiple_of(BLOCK);
        if !aligned {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("direct I/O needs {BLOCK}-byte alignment: file offset {file_offset}, length {len}, buffer offset {buf_offset}"),
            ));
        }
        if file_offset
            .checked_add(len)
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "bytes {file_offset}+{len} lie outside the {}-byte file",
                    self.len
                ),
            ));
        }
        buf.check(buf_offset, len)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }

    async fn submit(
        &self,
        op: Op,
        file_offset: u64,
        buf: &Arc<Region>,
        buf_offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.check(buf, buf_offset, len, file_offset)?;
        if len == 0 {
            return Ok(());
        }
        if let Some(ring) = &self.ring {
            let (tx, rx) = oneshot::channel();
            let req = Request {
                op,
                buf: buf.clone(),
                buf_offset,
                len,
                file_offset,
                done: tx,
            };
            if ring.send(req).is_ok() {
                return rx
                    .await
                    .unwrap_or_else(|_| Err(io::Error::other("the io_uring thread stopped")));
            }
        }
        let file = self.file.clone();
        let buf = buf.clone();
        tokio::task::spawn_blocking(move || {
            // SAFETY: the caller owns the buffer range for the request.
            match op {
                Op::Read => {
                    let b = unsafe { buf.bytes_mut(buf_offset, len) }
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    file.read_exact_at(b, file_offset)
                }
                Op::Write => {
                    let b = unsafe { buf.bytes(buf_offset, len) }
                        .map_err(|e| io::Error::other(e.to_string()))?;
                    file.write_all_at(b, file_offset)
                }
            }
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?
    }

    /// Reads `len` bytes at `offset` (any alignment) on this thread, for
    /// the rare synchronous reader (a store node verifying its catalog).
    pub fn read_blocking(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let from = offset / BLOCK * BLOCK;
        let to = round_up(offset.saturating_add(len));
        if to > self.len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "outside the file",
            ));
        }
        let buf = Region::new((to - from) as usize)?;
        // SAFETY: the buffer is this call's own.
        let b =
            unsafe { buf.bytes_mut(0, to - from) }.map_err(|e| io::Error::other(e.to_string()))?;
        self.file.read_exact_at(b, from)?;
        Ok(b[(offset - from) as usize..(offset - from + len) as usize].to_vec())
    }

    /// Reads `len` bytes at `file_offset` into `buf` at `buf_offset`.
    pub async fn read(
        &self,
        file_offset: u64,
        buf: &Arc<Region>,
        buf_offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.submit(Op::Read, file_offset, buf, buf_offset, len)
            .await
    }

    /// Writes `len` bytes of `buf` at `buf_offset` to `file_offset`.
    pub async fn write(
        &self,
        file_offset: u64,
        buf: &Arc<Region>,
        buf_offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.submit(Op::Write, file_offset, buf, buf_offset, len)
            .await
    }
}

/// Starts the thread that owns the ring; fails if the kernel refuses
/// io_uring.
fn start_ring(file: Arc<File>, depth: u32) -> io::Result<std::sync::mpsc::Sender<Request>> {
    let ring = io_uring::IoUring::new(depth)?;
    let (tx, rx) = std::sync::mpsc::channel::<Request>();
    std::thread::Builder::new()
        .name("moonlab-io-uring".into())
        .spawn(move || run_ring(ring, file, depth as usize, rx))?;
    Ok(tx)
}

fn run_ring(
    mut ring: io_uring::IoUring,
    file: Arc<File>,
    depth: usize,
    rx: std::sync::mpsc::Receiver<Request>,
) {
    use io_uring::{opcode, types};
    let fd = types::Fd(file.as_raw_fd());
    // In-flight requests by slot; a short read or write continues from
    // where it stopped.
    let mut slots: Vec<Option<(Request, u64)>> = (0..depth).map(|_| None).collect();
    let mut free: Vec<usize> = (0..depth).rev().collect();
    let mut in_flight = 0usize;
    let mut open = true;
    let push =
        |ring: &mut io_uring::IoUring, slot: usize, r: &Request, done: u64| -> io::Result<()> {
            // SAFETY: the buffer range lives in `r.buf` (an Arc held in the
            // slot until the completion arrives).
            let ptr = unsafe { r.buf.bytes_mut(r.buf_offset + done, r.len - done) }
                .map_err(|e| io::Error::other(e.to_string()))?
                .as_mut_ptr();
            let len = (r.len - done) as u32;
            let entry = match r.op {
                Op::Read => opcode::Read::new(fd, ptr, len)
                    .offset(r.file_offset + done)
                    .build(),
                Op::Write => opcode::Write::new(fd, ptr, len)
                    .offset(r.file_offset + done)
                    .build(),
            }
            .user_data(slot as u64);
            // SAFETY: the entry's buffer outlives the operation (see above).
            unsafe { ring.submission().push(&entry) }
                .map_err(|_| io::Error::other("submission queue full"))
        };
    loop {
        // Take new requests: block only when nothing is in flight.
        while open && !free.is_empty() {
            let next = if in_flight == 0 {
                rx.recv().ok()
            } else {
                rx.try_recv().ok()
            };
            let Some(r) = next else {
                if in_flight == 0 {
                    open = false;
                }
                break;
            };
            if r.len > u32::MAX as u64 {
                let _ = r.done.send(Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "request over 4 GiB",
                )));
                continue;
            }
            let slot = free.pop().unwrap_or(0);
            match push(&mut ring, slot, &r, 0) {
                Ok(()) => {
                    slots[slot] = Some((r, 0));
                    in_flight += 1;
                }
                Err(e) => {
                    free.push(slot);
                    let _ = r.done.send(Err(e));
                }
            }
        }
        if in_flight == 0 {
            if open {
                continue;
            }
            return;
        }
        if let Err(e) = ring.submit_and_wait(1) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            for s in slots.iter_mut() {
                if let Some((r, _)) = s.take() {
                    let _ = r.done.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
            return;
        }
        let done: Vec<(usize, i32)> = ring
            .completion()
            .map(|c| (c.user_data() as usize, c.result()))
            .collect();
        for (slot, res) in done {
            let Some((r, so_far)) = slots.get_mut(slot).and_then(Option::take) else {
                continue;
            };
            if res < 0 {
                let _ = r.done.send(Err(io::Error::from_raw_os_error(-res)));
            } else if res == 0 {
                let _ = r.done.send(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended",
                )));
            } else {
                let so_far = so_far + res as u64;
                if so_far >= r.len {
                    let _ = r.done.send(Ok(()));
                } else if push(&mut ring, slot, &r, so_far).is_ok() {
                    slots[slot] = Some((r, so_far));
                    continue;
                } else {
                    let _ = r
                        .done
                        .send(Err(io::Error::other("could not resubmit a short transfer")));
                }
            }
            in_flight -= 1;
            free.push(slot);
        }
    }
}
