//! The master's RPC protocol (`proto/moonlab/store/v1/master.proto`, gRPC
//! through tonic/prost): the generated code, the limits every message is
//! held to, the cluster secret, and conversions between the wire and the
//! master's types. [`server`] serves a [`Master`](crate::master::Master);
//! [`client`] calls one.

pub mod client;
pub mod server;

use crate::error::ErrorCode;
use crate::master;
use moonlab_core::store::Tier;

/// The generated messages and services.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("moonlab.store.v1");
}

/// This build's protocol number; a client refuses a master with another.
pub const PROTOCOL: u32 = 1;
/// The largest message either side decodes (a batch of [`MAX_BATCH`] keys
/// of [`master::MAX_KEY_BYTES`] fits, with room for its framing).
pub const MAX_MESSAGE_BYTES: usize = 24 << 20;
/// The most keys one batch may carry.
pub const MAX_BATCH: usize = 4096;
/// The metadata key that carries the cluster secret.
pub const AUTH_HEADER: &str = "authorization";

/// The cluster secret every connection presents (`Bearer <secret>`).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A secret must be 16 to 256 printable ASCII characters.
    pub fn new(s: &str) -> Result<Secret, String> {
        let s = s.trim();
        if !(16..=256).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the cluster secret must be 16 to 256 printable ASCII characters".into());
        }
        Ok(Secret(s.to_string()))
    }

    /// The raw secret (the transfer engine's hello carries it).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub(crate) fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// True if `presented` is this secret's header (compared in constant
    /// time).
    pub(crate) fn accepts(&self, presented: &[u8]) -> bool {
        let want = self.header();
        let want = want.as_bytes();
        if presented.len() != want.len() {
            return false;
        }
        presented
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A lease token on the wire.
pub fn token_to_pb(
    segment: master::SegmentId,
    t: &moonlab_core::store::LeaseToken,
) -> pb::LeaseToken {
    pb::LeaseToken {
        segment: segment.0,
        object: t.key.0,
        slot: t.slot,
        generation: t.generation,
        expiry_ns: t.expiry.0,
    }
}

/// A lease token from the wire.
pub fn token_from_pb(t: &pb::LeaseToken) -> (master::SegmentId, moonlab_core::store::LeaseToken) {
    (
        master::SegmentId(t.segment),
        moonlab_core::store::LeaseToken {
            key: moonlab_core::types::BlockKey(t.object),
            slot: t.slot,
            generation: t.generation,
            expiry: moonlab_core::types::Nanos(t.expiry_ns),
        },
    )
}

/// A reply's code as a result: 0 is success; a code this build does not
/// know is an internal error.
pub fn code_result(code: i32) -> Result<(), ErrorCode> {
    if code == 0 {
        Ok(())
    } else {
        Err(ErrorCode::from_code(code).unwrap_or(ErrorCode::Internal))
    }
}

pub(crate) fn code_of(r: Result<(), ErrorCode>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => e.code(),
    }
}

/// A tier on the wire (HBM is not a store tier: sent as DRAM).
pub fn tier_to_pb(t: Tier) -> pb::Tier {
    match t {
        Tier::Ssd => pb::Tier::Ssd,
        _ => pb::Tier::Dram,
    }
}

/// A tier from the wire (unknown values: DRAM).
pub fn tier_from_pb(t: i32) -> Tier {
    match pb::Tier::try_from(t) {
        Ok(pb::Tier::Ssd) => Tier::Ssd,
        _ => Tier::Dram,
    }
}

impl From<master::ReplicaDesc> for pb::ReplicaDesc {
    fn from(d: master::ReplicaDesc) -> Self {
        pb::ReplicaDesc {
            tier: tier_to_pb(d.tier) as i32,
            object: d.object,
            segment: d.segment,
            endpoint: d.endpoint,
            offset: d.offset,
            size: d.size,
        }
    }
}

impl From<pb::ReplicaDesc> for master::ReplicaDesc {
    fn from(d: pb::ReplicaDesc) -> Self {
        master::ReplicaDesc {
            tier: tier_from_pb(d.tier),
            object: d.object,
            segment: d.segment,
            endpoint: d.endpoint,
            offset: d.offset,
            size: d.size,
        }
    }
}

impl From<master::ReportedObject> for pb::ReportedObject {
    fn from(o: master::ReportedObject) -> Self {
        pb::ReportedObject {
            object: o.object,
            key: o.key,
            offset: o.offset,
            size: o.size,
            checksum: o.checksum,
        }
    }
}

impl From<pb::ReportedObject> for master::ReportedObject {
    fn from(o: pb::ReportedObject) -> Self {
        master::ReportedObject {
            object: o.object,
            key: o.key,
            offset: o.offset,
            size: o.size,
            checksum: o.checksum,
        }
    }
}

impl From<&master::PutOptions> for pb::PutOptions {
    fn from(o: &master::PutOptions) -> Self {
        pb::PutOptions {
            replicas: o.replicas,
            preferred_segment: o.preferred_segment.clone(),
            soft_pin: o.soft_pin,
            only_preferred: o.only_preferred,
        }
    }
}

impl From<pb::PutOptions> for master::PutOptions {
    fn from(o: pb::PutOptions) -> Self {
        master::PutOptions {
            replicas: o.replicas,
            preferred_segment: o.preferred_segment,
            soft_pin: o.soft_pin,
            only_preferred: o.only_preferred,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_whole() {
        let s = Secret::new("0123456789abcdef").unwrap();
        assert!(s.accepts(b"Bearer 0123456789abcdef"));
        assert!(!s.accepts(b"Bearer 0123456789abcdeF"));
        assert!(!s.accepts(b"Bearer 0123456789abcde"));
        assert!(!s.accepts(b""));
        assert!(Secret::new("short").is_err());
        assert!(Secret::new("with a space in it!!").is_err());
    }

    #[test]
    fn codes_map_both_ways() {
        assert_eq!(code_result(0), Ok(()));
        assert_eq!(code_result(-704), Err(ErrorCode::ObjectNotFound));
        assert_eq!(code_result(-31337), Err(ErrorCode::Internal));
        assert_eq!(code_of(Err(ErrorCode::ObjectHasLease)), -706);
    }
}
