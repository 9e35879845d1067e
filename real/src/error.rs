//! The error codes of the real store, with upstream Mooncake Store's numeric
//! values (`mooncake-store/include/types.h`, `ErrorCode`), so that a reply
//! from our master reads like one from theirs. The RPC layer carries the
//! number; transport problems (a dead connection, a timeout) are reported
//! on the client side as [`ErrorCode::RpcFail`] / [`ErrorCode::RpcTimeout`].

use moonlab_core::store::scenario::StoreError;

/// A store error: what went wrong, by upstream's code.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(i32)]
pub enum ErrorCode {
    #[error("internal error")]
    Internal = -1,
    #[error("segment not found")]
    SegmentNotFound = -101,
    #[error("segment already exists")]
    SegmentAlreadyExists = -102,
    #[error("client not found")]
    ClientNotFound = -103,
    /// No segment has room for the object (upstream `NO_AVAILABLE_HANDLE`).
    #[error("no space for the object")]
    NoAvailableHandle = -200,
    #[error("protocol version mismatch")]
    InvalidVersion = -300,
    #[error("invalid key")]
    InvalidKey = -400,
    #[error("invalid parameters")]
    InvalidParams = -600,
    /// PutEnd / PutRevoke by a client other than the writer.
    #[error("the object is being written by another client")]
    IllegalClient = -601,
    /// PutEnd / PutRevoke of a write that is not in progress (it was
    /// revoked, reclaimed after the put timeout, or taken over).
    #[error("no such write in progress (revoked, reclaimed or taken over)")]
    InvalidWrite = -700,
    #[error("the object is being written")]
    ReplicaIsNotReady = -703,
    #[error("object not found")]
    ObjectNotFound = -704,
    #[error("object already exists")]
    ObjectAlreadyExists = -705,
    #[error("object is leased")]
    ObjectHasLease = -706,
    /// Client side: the read outlived its lease.
    #[error("the read outlived its lease")]
    LeaseExpired = -707,
    /// The object is in use by a transfer (upstream: a replica's refcnt).
    #[error("object is in use")]
    ObjectReplicaBusy = -714,
    #[error("transfer failed")]
    TransferFail = -800,
    /// The bytes read do not match the object's checksum.
    #[error("checksum mismatch")]
    ChecksumMismatch = -801,
    #[error("rpc failed")]
    RpcFail = -900,
    #[error("rpc timed out")]
    RpcTimeout = -901,
    #[error("unavailable in the current status")]
    UnavailableInCurrentStatus = -1010,
    /// moonlab's own: the request did not carry the cluster's secret.
    #[error("unauthenticated")]
    Unauthenticated = -1900,
}

impl ErrorCode {
    const ALL: [ErrorCode; 22] = [
        ErrorCode::Internal,
        ErrorCode::SegmentNotFound,
        ErrorCode::SegmentAlreadyExists,
        ErrorCode::ClientNotFound,
        ErrorCode::NoAvailableHandle,
        ErrorCode::InvalidVersion,
        ErrorCode::InvalidKey,
        ErrorCode::InvalidParams,
        ErrorCode::IllegalClient,
        ErrorCode::InvalidWrite,
        ErrorCode::ReplicaIsNotReady,
        ErrorCode::ObjectNotFound,
        ErrorCode::ObjectAlreadyExists,
        ErrorCode::ObjectHasLease,
        ErrorCode::LeaseExpired,
        ErrorCode::ObjectReplicaBusy,
        ErrorCode::TransferFail,
        ErrorCode::ChecksumMismatch,
        ErrorCode::RpcFail,
        ErrorCode::RpcTimeout,
        ErrorCode::UnavailableInCurrentStatus,
        ErrorCode::Unauthenticated,
    ];

    /// The code as sent on the wire.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The error a wire code stands for; `None` for 0 (success) and for
    /// codes this version does not know.
    pub fn from_code(code: i32) -> Option<ErrorCode> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }

    /// The scenario language's name for this error, where it has one.
    pub fn as_store_error(self) -> Option<StoreError> {
        Some(match self {
            ErrorCode::ObjectAlreadyExists => StoreError::Exists,
            ErrorCode::NoAvailableHandle => StoreError::NoSpace,
            ErrorCode::ObjectNotFound => StoreError::NotFound,
            ErrorCode::ReplicaIsNotReady => StoreError::NotReady,
            ErrorCode::ObjectHasLease => StoreError::Leased,
            ErrorCode::ObjectReplicaBusy => StoreError::Busy,
            ErrorCode::InvalidWrite | ErrorCode::LeaseExpired => StoreError::Expired,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_round_trip_and_match_upstream() {
        for e in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(e.code()), Some(e));
        }
        assert_eq!(ErrorCode::from_code(0), None);
        assert_eq!(ErrorCode::from_code(12345), None);
        // A few values checked by hand against upstream's types.h.
        assert_eq!(ErrorCode::NoAvailableHandle.code(), -200);
        assert_eq!(ErrorCode::ObjectNotFound.code(), -704);
        assert_eq!(ErrorCode::ObjectHasLease.code(), -706);
        assert_eq!(ErrorCode::ChecksumMismatch.code(), -801);
    }
}
