//! A connection to the master: typed calls that return the master's
//! [`ErrorCode`]s, with the cluster secret on every request, the protocol
//! version checked on connect, a deadline on every call ([`CALL_TIMEOUT`];
//! a call past it is [`ErrorCode::RpcTimeout`]) and transport failures
//! reported as [`ErrorCode::RpcFail`].

use super::pb::{self, master_client::MasterClient as Raw};
use super::{code_result, Secret, AUTH_HEADER, MAX_MESSAGE_BYTES, PROTOCOL};
use crate::error::ErrorCode;
use crate::master::{
    ClientId, Lease, ObjectInfo, PingStatus, PutOptions, ReplicaDesc, ReportedObject, SegmentDesc,
    SegmentId, SegmentStats,
};
use moonlab_core::types::Nanos;
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// The deadline of one call (upstream's client: 30 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub(crate) struct Present(pub(crate) MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Present {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(AUTH_HEADER, self.0.clone());
        Ok(req)
    }
}

/// An error from a call: the master's code, or what the transport said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}{}", if detail.is_empty() { String::new() } else { format!(": {detail}") })]
pub struct CallError {
    pub code: ErrorCode,
    pub detail: String,
}

impl From<ErrorCode> for CallError {
    fn from(code: ErrorCode) -> Self {
        CallError {
            code,
            detail: String::new(),
        }
    }
}

fn transport(s: Status) -> CallError {
    let code = match s.code() {
        Code::DeadlineExceeded => ErrorCode::RpcTimeout,
        Code::Unauthenticated => ErrorCode::Unauthenticated,
        Code::InvalidArgument => ErrorCode::InvalidParams,
        _ => ErrorCode::RpcFail,
    };
    CallError {
        code,
        detail: s.message().to_string(),
    }
}

fn check(code: i32) -> Result<(), CallError> {
    code_result(code).map_err(CallError::from)
}

/// What a read got: the replicas, the object's checksum, and its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    pub size: u64,
    pub checksum: Option<u64>,
    pub replicas: Vec<ReplicaDesc>,
    /// How long the lease runs from when the request was sent.
    pub lease_ttl: Nanos,
    pub lease: Lease,
}

fn located(r: pb::GetReplicaListReply) -> Result<Located, CallError> {
    check(r.code)?;
    let tokens = r.lease.iter().map(super::token_from_pb).collect();
    Ok(Located {
        size: r.size,
        checksum: r.checksum,
        replicas: r.replicas.into_iter().map(Into::into).collect(),
        lease_ttl: Nanos(r.lease_ttl_ns),
        lease: Lease::from_tokens(tokens),
    })
}

/// A client of the master.
#[derive(Clone)]
pub struct MasterClient {
    raw: Raw<InterceptedService<Channel, Present>>,
    id: ClientId,
}

impl MasterClient {
    /// Connects to the master at `addr` (`host:port`) as client `id`, and
    /// checks that it speaks this protocol.
    pub async fn connect(
        addr: &str,
        secret: &Secret,
        id: ClientId,
    ) -> Result<MasterClient, CallError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| CallError {
                code: ErrorCode::InvalidParams,
                detail: format!("master address `{addr}`: {e}"),
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| CallError {
            code: ErrorCode::RpcFail,
            detail: format!("connecting to the master at {addr}: {e}"),
        })?;
        let value =
            MetadataValue::try_from(secret.header()).map_err(|_| ErrorCode::InvalidParams)?;
        let raw = Raw::with_interceptor(channel, Present(value))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut c = MasterClient { raw, id };
        let ready = c
            .raw
            .service_ready(pb::ServiceReadyRequest {})
            .await
            .map_err(transport)?
            .into_inner();
        if ready.protocol != PROTOCOL {
            return Err(CallError {
                code: ErrorCode::InvalidVersion,
                detail: format!(
                    "the master at {addr} speaks protocol {} (version {}), this client {PROTOCOL}",
                    ready.protocol, ready.version
                ),
            });
        }
        Ok(c)
    }

    pub fn id(&self) -> ClientId {
        self.id
    }

    pub async fn mount_segment(
        &mut self,
        desc: &SegmentDesc,
        objects: Vec<ReportedObject>,
    ) -> Result<(SegmentId, Vec<ReportedObject>), CallError> {
        let r = self
            .raw
            .mount_segment(pb::MountSegmentRequest {
                client_id: self.id.0,
                segment: Some(pb::SegmentDesc {
                    name: desc.name.clone(),
                    endpoint: desc.endpoint.clone(),
                    size: desc.size,
                    tier: super::tier_to_pb(desc.tier) as i32,
                }),
                objects: objects.into_iter().map(Into::into).collect(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        check(r.code)?;
        Ok((
            SegmentId(r.segment_id),
            r.rejected.into_iter().map(Into::into).collect(),
        ))
    }

    pub async fn unmount_segment(&mut self, name: &str) -> Result<(), CallError> {
        let r = self
            .raw
            .unmount_segment(pb::UnmountSegmentRequest {
                client_id: self.id.0,
                name: name.to_string(),
            })
            .await
            .map_err(transport)?;
        check(r.into_inner().code)
    }

    /// A heartbeat: the master's answer, and the ids of objects freed in
    /// this client's segments since the last one.
    pub async fn ping(&mut self) -> Result<(PingStatus, Vec<u64>), CallError> {
        let r = self
            .raw
            .ping(pb::PingRequest {
                client_id: self.id.0,
            })
            .await
            .map_err(transport)?
            .into_inner();
        check(r.code)?;
        let status = if r.need_remount {
            PingStatus::NeedRemount
        } else {
            PingStatus::Ok
        };
        Ok((status, r.released))
    }

    pub async fn put_start(
        &mut self,
        key: &str,
        size: u64,
        opts: &PutOptions,
    ) -> Result<Vec<ReplicaDesc>, CallError> {
        let r = self
            .raw
            .put_start(pb::PutStartRequest {
                client_id: self.id.0,
                key: key.to_string(),
                size,
                options: Some(opts.into()),
            })
            .await
            .map_err(transport)?
            .into_inner();
        check(r.code)?;
        Ok(r.replicas.into_iter().map(Into::into).collect())
    }

    pub async fn put_end(&mut self, key: &str, checksum: Option<u64>) -> Result<(), CallError> {
        let r = self
            .raw
            .put_end(pb::PutEndRequest {
                client_id: self.id.0,
                key: key.to_string(),
                checksum,
            })
            .await
            .map_err(transport)?;
        check(r.into_inner().code)
    }

    pub async fn put_revoke(&mut self, key: &str) -> Result<(), CallError> {
        let r = self
            .raw
            .put_revoke(pb::KeyRequest {
                client_id: self.id.0,
                key: key.to_string(),
            })
            .await
            .map_err(transport)?;
        check(r.into_inner().code)
    }

    /// PutStart for many keys (independent results, as upstream).
    pub async fn batch_put_start(
        &mut self,
        items: &[(String, u64)],
        opts: &PutOptions,
    ) -> Result<Vec<Result<Vec<ReplicaDesc>, CallError>>, CallError> {
        let r = self
            .raw
            .batch_put_start(pb::BatchPutStartRequest {
                client_id: self.id.0,
                keys: items.iter().map(|(k, _)| k.clone()).collect(),
                sizes: items.iter().map(|(_, s)| *s).collect(),
                options: Some(opts.into()),
            })
            .await
            .map_err(transport)?
            .into_inner();
        Ok(r.results
            .into_iter()
            .map(|x| check(x.code).map(|()| x.replicas.into_iter().map(Into::into).collect()))
            .collect())
    }

    pub async fn batch_put_end(
        &mut self,
        items: &[(String, Option<u64>)],
    ) -> Result<Vec<Result<(), CallError>>, CallError> {
        let r = self
            .raw
            .batch_put_end(pb::BatchPutEndRequest {
                client_id: self.id.0,
                items: items
                    .iter()
                    .map(|(k, c)| pb::PutEndRequest {
                        client_id: self.id.0,
                        key: k.clone(),
                        checksum: *c,
                    })
                    .collect(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        Ok(r.codes.into_iter().map(check).collect())
    }

    pub async fn batch_put_revoke(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Result<(), CallError>>, CallError> {
        let r = self
            .raw
            .batch_put_revoke(pb::BatchKeyRequest {
                client_id: self.id.0,
                keys: keys.to_vec(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        Ok(r.codes.into_iter().map(check).collect())
    }

    /// GetReplicaList: where the object is, with a read lease.
    pub async fn get_replica_list(&mut self, key: &str) -> Result<Located, CallError> {
        let r = self
            .raw
            .get_replica_list(pb::KeyRequest {
                client_id: self.id.0,
                key: key.to_string(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        located(r)
    }

    pub async fn batch_get_replica_list(
        &mut self,
        keys: &[String],
    ) -> Result<Vec<Result<Located, CallError>>, CallError> {
        let r = self
            .raw
            .batch_get_replica_list(pb::BatchKeyRequest {
                client_id: self.id.0,
                keys: keys.to_vec(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        Ok(r.results.into_iter().map(located).collect())
    }

    /// True while the read that was granted `lease` is still covered.
    pub async fn check_lease(&mut self, lease: &Lease) -> Result<bool, CallError> {
        let r = self
            .raw
            .check_lease(pb::CheckLeaseRequest {
                lease: lease
                    .tokens()
                    .iter()
                    .map(|(s, t)| super::token_to_pb(*s, t))
                    .collect(),
            })
            .await
            .map_err(transport)?;
        Ok(r.into_inner().valid)
    }

    pub async fn exist(&mut self, key: &str) -> Result<bool, CallError> {
        let r = self
            .raw
            .exist(pb::KeyRequest {
                client_id: self.id.0,
                key: key.to_string(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        check(r.code)?;
        Ok(r.exists)
    }

    /// Per key, whether a committed object with a live replica is there,
    /// without touching it (no lease, no access counted).
    pub async fn batch_contains(&mut self, keys: &[String]) -> Result<Vec<bool>, CallError> {
        let r = self
            .raw
            .batch_contains(pb::BatchKeyRequest {
                client_id: self.id.0,
                keys: keys.to_vec(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        if r.results.len() != keys.len() {
            return Err(CallError {
                code: ErrorCode::RpcFail,
                detail: format!(
                    "BatchContains: {} answers for {} keys",
                    r.results.len(),
                    keys.len()
                ),
            });
        }
        r.results
            .into_iter()
            .map(|e| check(e.code).map(|()| e.exists))
            .collect()
    }

    pub async fn remove(&mut self, key: &str, force: bool) -> Result<(), CallError> {
        let r = self
            .raw
            .remove(pb::RemoveRequest {
                client_id: self.id.0,
                key: key.to_string(),
                force,
            })
            .await
            .map_err(transport)?;
        check(r.into_inner().code)
    }

    /// Pins every replica of `key`; returns the pin's id for [`Self::unpin`].
    pub async fn pin(&mut self, key: &str) -> Result<u64, CallError> {
        let r = self
            .raw
            .pin(pb::KeyRequest {
                client_id: self.id.0,
                key: key.to_string(),
            })
            .await
            .map_err(transport)?
            .into_inner();
        check(r.code)?;
        Ok(r.pin_id)
    }

    pub async fn unpin(&mut self, pin_id: u64) -> Result<(), CallError> {
        let r = self
            .raw
            .unpin(pb::UnpinRequest {
                client_id: self.id.0,
                pin_id,
            })
            .await
            .map_err(transport)?;
        check(r.into_inner().code)
    }

    pub async fn list(&mut self, prefix: &str, limit: u32) -> Result<Vec<ObjectInfo>, CallError> {
        let r = self
            .raw
            .list(pb::ListRequest {
                prefix: prefix.to_string(),
                limit,
            })
            .await
            .map_err(transport)?
            .into_inner();
        Ok(r.objects
            .into_iter()
            .map(|o| ObjectInfo {
                key: o.key,
                size: o.size,
                replicas: o.replicas,
                committed: o.committed,
            })
            .collect())
    }

    /// The segments and the number of committed objects.
    pub async fn stats(&mut self) -> Result<(Vec<SegmentStats>, u64), CallError> {
        let r = self
            .raw
            .stats(pb::StatsRequest {})
            .await
            .map_err(transport)?
            .into_inner();
        Ok((
            r.segments
                .into_iter()
                .map(|s| SegmentStats {
                    name: s.name,
                    endpoint: s.endpoint,
                    capacity: s.capacity,
                    used: s.used,
                    objects: s.objects,
                })
                .collect(),
            r.objects,
        ))
    }
}
