//! Registered memory: one page-aligned region of plain bytes that the
//! transfer engine reads from and writes into directly (no staging copy).
//! A store node's DRAM segment is one region; a client's buffers are
//! others.
//!
//! A region is shared by the tasks that move bytes in and out of it, so it
//! hands out raw byte ranges. Bytes carry no invariants, so concurrent
//! access is memory-safe; keeping ranges of concurrent transfers disjoint
//! is the master's job (its allocator never places two live objects on one
//! byte), and a client that breaks that gets torn bytes, which the
//! object's checksum catches on read.

use memmap2::MmapMut;
use std::fmt;

/// A registered memory region.
pub struct Region {
    /// Owns the mapping `ptr` points into (moving it does not move the
    /// pages).
    _map: MmapMut,
    ptr: *mut u8,
    len: usize,
    /// The NUMA node the memory sits on (its location, as upstream's
    /// `registerLocalMemory(…, location)`); 0 where there is one node.
    numa_node: u32,
    /// The memory file behind a shareable region ([`Region::shared`]).
    file: Option<std::fs::File>,
}

// SAFETY: the region is plain bytes behind a raw pointer; see the module
// documentation for why concurrent access is sound for bytes.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

/// A range that does not lie inside the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bytes {offset}..{offset}+{len} lie outside a region of {region} bytes")]
pub struct OutOfRange {
    pub offset: u64,
    pub len: u64,
    pub region: u64,
}

impl Region {
    /// Allocates `len` bytes of zeroed, page-aligned anonymous memory.
    pub fn new(len: usize) -> std::io::Result<Region> {
        Self::on_node(len, 0)
    }

    /// As [`Region::new`], recording the NUMA node the memory is on.
    pub fn on_node(len: usize, numa_node: u32) -> std::io::Result<Region> {
        let mut map = MmapMut::map_anon(len.max(1))?;
        let ptr = map.as_mut_ptr();
        Ok(Region {
            _map: map,
            ptr,
            len,
            numa_node,
            file: None,
        })
    }

    /// A region backed by a memory file (memfd), which another process on
    /// this host can map too ([`Region::map_file`]): a store node's DRAM
    /// segment, for same-host clients.
    pub fn shared(len: usize, name: &str) -> std::io::Result<Region> {
        use std::os::fd::FromRawFd;
        let cname =
            std::ffi::CString::new(format!("moonlab-{name}")).map_err(std::io::Error::other)?;
        // SAFETY: memfd_create with a valid C string; the fd is owned below.
        let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        file.set_len(len.max(1) as u64)?;
        Self::map_file(file, len)
    }

    /// Maps the memory file `file` of `len` bytes (shared with its owner).
    pub fn map_file(file: std::fs::File, len: usize) -> std::io::Result<Region> {
        if file.metadata()?.len() < len as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the memory file is shorter than its region",
            ));
        }
        // SAFETY: the file is a memory file only moonlab processes map; the
        // bytes carry no invariants (see the module documentation).
        // Populated: the page tables are filled now, not by a fault on each
        // page's first copy (which costs more than the copy itself).
        let mut map = unsafe {
            memmap2::MmapOptions::new()
                .len(len.max(1))
                .populate()
                .map_mut(&file)?
        };
        let ptr = map.as_mut_ptr();
        Ok(Region {
            _map: map,
            ptr,
            len,
            numa_node: 0,
            file: Some(file),
        })
    }

    /// The memory file of a shared region.
    pub fn file(&self) -> Option<&std::fs::File> {
        self.file.as_ref()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn numa_node(&self) -> u32 {
        self.numa_node
    }

    /// Checks that `offset .. offset + len` lies inside the region.
    pub fn check(&self, offset: u64, len: u64) -> Result<(), OutOfRange> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len as u64 => Ok(()),
            _ => Err(OutOfRange {
                offset,
                len,
                region: self.len as u64,
            }),
        }
    }

    /// The bytes `offset .. offset + len`, to read from.
    ///
    /// # Safety
    /// No one may write these bytes while the slice lives (the caller owns
    /// the range: an object placed by the master, a buffer it filled).
    pub unsafe fn bytes(&self, offset: u64, len: u64) -> Result<&[u8], OutOfRange> {
        self.check(offset, len)?;
        Ok(std::slice::from_raw_parts(
            self.ptr.add(offset as usize),
            len as usize,
        ))
    }

    /// The bytes `offset .. offset + len`, to write into.
    ///
    /// # Safety
    /// No one else may touch these bytes while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn bytes_mut(&self, offset: u64, len: u64) -> Result<&mut [u8], OutOfRange> {
        self.check(offset, len)?;
        Ok(std::slice::from_raw_parts_mut(
            self.ptr.add(offset as usize),
            len as usize,
        ))
    }

    /// Copies `data` into the region at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), OutOfRange> {
        // SAFETY: the copy is the only access this call makes; the caller
        // owns the range as every writer must.
        unsafe {
            self.bytes_mut(offset, data.len() as u64)?
                .copy_from_slice(data)
        };
        Ok(())
    }

    /// Copies the bytes at `offset` into `out`.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), OutOfRange> {
        // SAFETY: as in write_at.
        unsafe { out.copy_from_slice(self.bytes(offset, out.len() as u64)?) };
        Ok(())
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.len)
            .field("numa_node", &self.numa_node)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_outside_are_refused() {
        let r = Region::new(4096).unwrap();
        r.write_at(4000, &[7; 96]).unwrap();
        let mut out = [0u8; 96];
        r.read_at(4000, &mut out).unwrap();
        assert_eq!(out, [7; 96]);
        assert!(r.write_at(4001, &[0; 96]).is_err());
        assert!(r.check(u64::MAX, 2).is_err(), "no overflow");
        assert_eq!(r.as_ptr_for_tests() as usize % 4096, 0, "page aligned");
    }

    impl Region {
        fn as_ptr_for_tests(&self) -> *const u8 {
            self.ptr
        }
    }
}
