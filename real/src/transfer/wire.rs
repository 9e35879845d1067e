//! The transfer engine's TCP wire format (version 1), little-endian, fixed
//! size, so a malformed message is recognised from its header alone:
//!
//! - hello, client → server, once per connection: magic `MLTE`, version
//!   (u16), secret length (u16), the cluster secret; the server answers one
//!   byte (0 = accepted, then the region's length as u64) or closes.
//! - request, 32 bytes: magic, opcode (u8: 1 read, 2 write, 3 note), 3
//!   bytes zero, request id (u64), offset (u64), length (u64); a write's
//!   payload follows, or a note's ([`Note`]: what a writer tells a store
//!   node it put there, so that the node can report its objects to a
//!   master that takes over).
//! - reply, 16 bytes: request id (u64), status (i32: 0 or an
//!   [`ErrorCode`](crate::error::ErrorCode)), 4 bytes zero; a successful
//!   read's payload follows.
//!
//! A request for bytes outside the region is answered with an error; a bad
//! magic, opcode or oversized length closes the connection (after a bad
//! write header the payload's framing cannot be trusted).

/// `MLTE`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"MLTE");
pub const VERSION: u16 = 1;
pub const REQUEST_BYTES: usize = 32;
pub const REPLY_BYTES: usize = 16;
/// The largest slice one request may carry.
pub const MAX_SLICE_BYTES: u64 = 64 << 20;
/// The longest secret a hello may carry.
pub const MAX_SECRET_BYTES: usize = 256;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Opcode {
    Read = 1,
    Write = 2,
    Note = 3,
    /// Connection setup of another transport over this TCP connection
    /// (RDMA: queue pair addresses); the reply's payload follows its
    /// header as a u32 length and the bytes.
    Connect = 4,
}

/// The longest connection-setup message.
pub const MAX_CONNECT_BYTES: u64 = 256;

/// The longest note (its key is at most 4 KiB).
pub const MAX_NOTE_BYTES: u64 = 34 + 4096;

/// A writer's note to a store node: object `object` (the master's id) of
/// `size` bytes with checksum `checksum` is committed at `offset` under
/// `key`. A note of size 0 withdraws object `object`'s note (its put
/// failed; objects are never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub object: u64,
    pub offset: u64,
    pub size: u64,
    pub checksum: u64,
    pub key: String,
}

impl Note {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(34 + self.key.len());
        for w in [self.object, self.offset, self.size, self.checksum] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&(self.key.len().min(u16::MAX as usize) as u16).to_le_bytes());
        b.extend_from_slice(self.key.as_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Note> {
        if b.len() < 34 || b.len() as u64 > MAX_NOTE_BYTES {
            return None;
        }
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let len = u16::from_le_bytes([b[32], b[33]]) as usize;
        if b.len() != 34 + len || len == 0 {
            return None;
        }
        let key = std::str::from_utf8(&b[34..]).ok()?.to_string();
        Some(Note {
            object: w(0),
            offset: w(8),
            size: w(16),
            checksum: w(24),
            key,
        })
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    pub opcode: Opcode,
    pub id: u64,
    pub offset: u64,
    pub len: u64,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad magic {0:#010x}")]
    Magic(u32),
    #[error("unknown opcode {0}")]
    Opcode(u8),
    #[error("nonzero reserved bytes")]
    Reserved,
    #[error("a request of {0} bytes is over its limit")]
    TooLong(u64),
}

impl RequestHeader {
    pub fn encode(&self) -> [u8; REQUEST_BYTES] {
        let mut b = [0u8; REQUEST_BYTES];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = self.opcode as u8;
        b[8..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..24].copy_from_slice(&self.offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; REQUEST_BYTES]) -> Result<RequestHeader, WireError> {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let magic = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if magic != MAGIC {
            return Err(WireError::Magic(magic));
        }
        let opcode = match b[4] {
            1 => Opcode::Read,
            2 => Opcode::Write,
            3 => Opcode::Note,
            4 => Opcode::Connect,
            o => return Err(WireError::Opcode(o)),
        };
        if b[5..8] != [0, 0, 0] {
            return Err(WireError::Reserved);
        }
        let len = word(24);
        let limit = if opcode == Opcode::Note {
            MAX_NOTE_BYTES
        } else {
            MAX_SLICE_BYTES
        };
        if len > limit {
            return Err(WireError::TooLong(len));
        }
        Ok(RequestHeader {
            opcode,
            id: word(8),
            offset: word(16),
            len,
        })
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ReplyHeader {
    pub id: u64,
    pub status: i32,
}

impl ReplyHeader {
    pub fn encode(&self) -> [u8; REPLY_BYTES] {
        let mut b = [0u8; REPLY_BYTES];
        b[0..8].copy_from_slice(&self.id.to_le_bytes());
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; REPLY_BYTES]) -> ReplyHeader {
        ReplyHeader {
            id: u64::from_le_bytes(b[0..8].try_into().unwrap_or([0; 8])),
            status: i32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// The hello a client sends first.
pub fn encode_hello(secret: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + secret.len());
    b.extend_from_slice(&MAGIC.to_le_bytes());
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&(secret.len() as u16).to_le_bytes());
    b.extend_from_slice(secret);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_round_trip() {
        let h = RequestHeader {
            opcode: Opcode::Write,
            id: 7,
            offset: 1 << 40,
            len: 65536,
        };
        assert_eq!(RequestHeader::decode(&h.encode()), Ok(h));
        let r = ReplyHeader {
            id: 9,
            status: -801,
        };
        assert_eq!(ReplyHeader::decode(&r.encode()), r);
    }

    #[test]
    fn bad_headers_are_named() {
        let mut b = RequestHeader {
            opcode: Opcode::Read,
            id: 1,
            offset: 0,
            len: 1,
        }
        .encode();
        b[4] = 9;
        assert_eq!(RequestHeader::decode(&b), Err(WireError::Opcode(9)));
        b[4] = 1;
        b[24..32].copy_from_slice(&(MAX_SLICE_BYTES + 1).to_le_bytes());
        assert!(matches!(
            RequestHeader::decode(&b),
            Err(WireError::TooLong(_))
        ));
        b[0] = b'X';
        assert!(matches!(
            RequestHeader::decode(&b),
            Err(WireError::Magic(_))
        ));
    }

    #[test]
    fn notes_round_trip_and_bad_ones_are_refused() {
        let n = Note {
            object: 5,
            offset: 4096,
            size: 100,
            checksum: 77,
            key: "k/ü".into(),
        };
        assert_eq!(Note::decode(&n.encode()), Some(n.clone()));
        let mut b = n.encode();
        b.pop();
        assert_eq!(Note::decode(&b), None, "truncated");
        b.push(0xff);
        assert_eq!(Note::decode(&b), None, "not UTF-8");
        assert_eq!(Note::decode(&[0; 10]), None);
    }

    proptest! {
        /// Any bytes decode to a note or nothing, never a panic.
        #[test]
        fn arbitrary_notes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Note::decode(&bytes);
        }

        /// Any 32 bytes decode to a header or an error, never a panic, and
        /// a decoded header is within the limits.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::array::uniform32(any::<u8>())) {
            if let Ok(h) = RequestHeader::decode(&bytes) {
                prop_assert!(h.len <= MAX_SLICE_BYTES);
                prop_assert_eq!(h.encode(), bytes);
            }
        }
    }
}
