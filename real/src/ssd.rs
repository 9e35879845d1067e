//! The SSD tier's I/O: one preallocated file opened with `O_DIRECT` (the
//! page cache bypassed, as a store of cold KV blocks wants), read and
//! written in 4 KiB-aligned units from page-aligned registered memory.
//! Requests go into an io_uring ring: the caller pushes its entry and
//! submits it itself (no thread hop), up to `depth` in flight; one thread
//! waits for completions and wakes the callers. Where the kernel refuses
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

/// The ring and what is in flight in it.
struct Ring {
    uring: io_uring::IoUring,
    fd: RawFdHolder,
    /// Held while pushing to the submission queue (callers and the
    /// completion thread resubmitting a short transfer).
    submit: parking_lot::Mutex<()>,
    /// In-flight requests by slot (the entries' user data), with bytes done.
    slots: parking_lot::Mutex<Slots>,
    /// One permit per free slot.
    permits: Arc<tokio::sync::Semaphore>,
    stop: std::sync::atomic::AtomicBool,
}

struct RawFdHolder(std::os::unix::io::RawFd);

struct Slots {
    entries: Vec<Option<(Request, u64)>>,
    free: Vec<usize>,
}

/// The slot a wake-up entry carries (no request).
const WAKE: u64 = u64::MAX;

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
    ring: Option<Arc<Ring>>,
}

impl Drop for SsdFile {
    fn drop(&mut self) {
        if let Some(ring) = &self.ring {
            ring.stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // Wake the completion thread so it sees the flag and leaves.
            let nop = io_uring::opcode::Nop::new().build().user_data(WAKE);
            ring.push(&nop);
        }
    }
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
            if len > u32::MAX as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a request over 4 GiB",
                ));
            }
            let permit = ring
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| io::Error::other("the ring is closed"))?;
            permit.forget();
            let (tx, rx) = oneshot::channel();
            let req = Request {
                op,
                buf: buf.clone(),
                buf_offset,
                len,
                file_offset,
                done: tx,
            };
            ring.start(req);
            return rx
                .await
                .unwrap_or_else(|_| Err(io::Error::other("the io_uring thread stopped")));
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

/// Starts the ring and its completion thread; fails if the kernel refuses
/// io_uring.
fn start_ring(file: Arc<File>, depth: u32) -> io::Result<Arc<Ring>> {
    // Completions are reaped by a task of the current tokio runtime, woken
    // by the ring's descriptor like a socket (no thread in between).
    let handle =
        tokio::runtime::Handle::try_current().map_err(|e| io::Error::other(e.to_string()))?;
    let uring = io_uring::IoUring::new(depth * 2)?;
    let ring_fd = RawFdHolder(uring.as_raw_fd());
    let ring = Arc::new(Ring {
        uring,
        fd: RawFdHolder(file.as_raw_fd()),
        submit: parking_lot::Mutex::new(()),
        slots: parking_lot::Mutex::new(Slots {
            entries: (0..depth).map(|_| None).collect(),
            free: (0..depth as usize).rev().collect(),
        }),
        permits: Arc::new(tokio::sync::Semaphore::new(depth as usize)),
        stop: std::sync::atomic::AtomicBool::new(false),
    });
    let readable = {
        let _enter = handle.enter();
        // SAFETY: the ring's descriptor stays open while the AsyncFd lives:
        // the task below drops the AsyncFd before its Arc of the ring.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(ring_fd, tokio::io::Interest::READABLE)
        }
        .map_err(|e| io::Error::other(e.to_string()))?
    };
    let r = ring.clone();
    // The task holds the file open as long as it runs.
    handle.spawn(async move {
        let _file = file;
        while !r.stop.load(std::sync::atomic::Ordering::SeqCst) {
            let Ok(mut ready) = readable.readable().await else {
                break;
            };
            if r.reap() == 0 {
                // Nothing yet: clear, then look once more so that a
                // completion posted in between is not missed.
                ready.clear_ready();
                r.reap();
            }
        }
        drop(readable);
        r.fail_all();
    });
    Ok(ring)
}

impl std::os::unix::io::AsRawFd for RawFdHolder {
    fn as_raw_fd(&self) -> std::os::unix::io::RawFd {
        self.0
    }
}

impl Ring {
    /// Pushes `entry` and submits it.
    fn push(&self, entry: &io_uring::squeue::Entry) -> bool {
        let _g = self.submit.lock();
        // SAFETY: the submission queue is only touched under `submit`.
        let pushed = unsafe { self.uring.submission_shared().push(entry).is_ok() };
        pushed && self.uring.submitter().submit().is_ok()
    }

    fn entry(&self, slot: usize, r: &Request, done: u64) -> Option<io_uring::squeue::Entry> {
        use io_uring::{opcode, types};
        // SAFETY: the buffer range lives in `r.buf` (an Arc held in the
        // slot until the completion arrives).
        let ptr = unsafe { r.buf.bytes_mut(r.buf_offset + done, r.len - done) }
            .ok()?
            .as_mut_ptr();
        let len = (r.len - done) as u32;
        let fd = types::Fd(self.fd.0);
        Some(
            match r.op {
                Op::Read => opcode::Read::new(fd, ptr, len)
                    .offset(r.file_offset + done)
                    .build(),
                Op::Write => opcode::Write::new(fd, ptr, len)
                    .offset(r.file_offset + done)
                    .build(),
            }
            .user_data(slot as u64),
        )
    }

    /// Takes a slot for `req` (a permit was taken for it) and submits it.
    fn start(&self, req: Request) {
        let slot = {
            let mut s = self.slots.lock();
            match s.free.pop() {
                Some(slot) => {
                    s.entries[slot] = None;
                    slot
                }
                None => {
                    let _ = req.done.send(Err(io::Error::other("no free slot")));
                    self.permits.add_permits(1);
                    return;
                }
            }
        };
        let Some(entry) = self.entry(slot, &req, 0) else {
            let _ = req.done.send(Err(io::Error::other("bad buffer range")));
            self.release(slot);
            return;
        };
        self.slots.lock().entries[slot] = Some((req, 0));
        if !self.push(&entry) {
            if let Some((r, _)) = self.slots.lock().entries[slot].take() {
                let _ = r
                    .done
                    .send(Err(io::Error::other("could not submit to io_uring")));
            }
            self.release(slot);
        }
    }

    fn release(&self, slot: usize) {
        self.slots.lock().free.push(slot);
        self.permits.add_permits(1);
    }

    /// Takes every completion posted so far and wakes its caller; a short
    /// transfer goes on from where it stopped. Returns how many it took.
    fn reap(&self) -> usize {
        // SAFETY: only the reaping task reads the completion queue.
        let done: Vec<(u64, i32)> = unsafe { self.uring.completion_shared() }
            .map(|c| (c.user_data(), c.result()))
            .collect();
        let n = done.len();
        for (slot, res) in done {
            if slot == WAKE {
                continue;
            }
            let slot = slot as usize;
            let Some((r, so_far)) = self
                .slots
                .lock()
                .entries
                .get_mut(slot)
                .and_then(Option::take)
            else {
                continue;
            };
            let outcome = if res < 0 {
                Err(io::Error::from_raw_os_error(-res))
            } else if res == 0 {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended",
                ))
            } else if so_far + (res as u64) < r.len {
                let so_far = so_far + res as u64;
                match self.entry(slot, &r, so_far) {
                    Some(e) => {
                        self.slots.lock().entries[slot] = Some((r, so_far));
                        if self.push(&e) {
                            continue;
                        }
                        let taken = self.slots.lock().entries[slot].take();
                        if let Some((r, _)) = taken {
                            let _ = r.done.send(Err(io::Error::other("could not resubmit")));
                        }
                        self.release(slot);
                        continue;
                    }
                    None => Err(io::Error::other("bad buffer range")),
                }
            } else {
                Ok(())
            };
            let _ = r.done.send(outcome);
            self.release(slot);
        }
        n
    }

    /// Fails whatever is still in flight (the file is closing).
    fn fail_all(&self) {
        for (r, _) in self
            .slots
            .lock()
            .entries
            .iter_mut()
            .filter_map(Option::take)
        {
            let _ = r
                .done
                .send(Err(io::Error::other("the SSD file was closed")));
        }
    }
}
