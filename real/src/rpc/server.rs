//! The master as a gRPC service: each request is checked against the
//! protocol's limits, handed to the [`Master`] with the time read once
//! from the clock, and answered with upstream's error code. A background
//! task runs [`Master::tick`] every 10 ms (upstream's eviction period).
//!
//! Every request must carry the cluster secret; one without it is refused
//! with `UNAUTHENTICATED` before it reaches the master. Messages over
//! [`MAX_MESSAGE_BYTES`] are refused by the decoder.

use super::pb::{self, master_server};
use super::{
    code_of, token_from_pb, token_to_pb, Secret, AUTH_HEADER, MAX_BATCH, MAX_MESSAGE_BYTES,
    PROTOCOL,
};
use crate::clock::Clock;
use crate::error::ErrorCode;
use crate::master::{self, ClientId, Lease, Master, ObjectPins, MAX_KEY_BYTES};
use moonlab_core::types::Nanos;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How often the master's periodic work runs.
pub const TICK_PERIOD: Duration = Duration::from_millis(10);

type Reply<T> = Result<Response<T>, Status>;

/// The service: the master, its clock, and the pins clients hold.
pub struct MasterService {
    master: Arc<Master>,
    clock: Arc<dyn Clock>,
    /// Pins by id: (holder, taken at, the pins).
    pins: Mutex<HashMap<u64, (ClientId, Nanos, ObjectPins)>>,
    next_pin: AtomicU64,
}

impl MasterService {
    pub fn new(master: Arc<Master>, clock: Arc<dyn Clock>) -> Arc<MasterService> {
        Arc::new(MasterService {
            master,
            clock,
            pins: Mutex::new(HashMap::new()),
            next_pin: AtomicU64::new(1),
        })
    }

    pub fn master(&self) -> &Arc<Master> {
        &self.master
    }

    /// The periodic work: the master's tick, and pins held past the client
    /// TTL released (a transfer that long must pin again).
    pub fn tick(&self) -> master::TickReport {
        let now = self.clock.now();
        let report = self.master.tick(now);
        let ttl = self.master.config().client_ttl;
        let stale: Vec<ObjectPins> = {
            let mut pins = self.pins.lock();
            let ids: Vec<u64> = pins
                .iter()
                .filter(|(_, (c, at, _))| {
                    report.expired_clients.contains(c) || now >= at.saturating_add(ttl)
                })
                .map(|(&id, _)| id)
                .collect();
            ids.into_iter()
                .filter_map(|id| pins.remove(&id).map(|p| p.2))
                .collect()
        };
        for p in stale {
            self.master.unpin(p, now);
        }
        report
    }

    fn now(&self) -> Nanos {
        self.clock.now()
    }
}

fn check_key(key: &str) -> Result<(), ErrorCode> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        Err(ErrorCode::InvalidKey)
    } else {
        Ok(())
    }
}

fn check_batch(n: usize) -> Result<(), Status> {
    if n > MAX_BATCH {
        Err(Status::invalid_argument(format!(
            "a batch carries at most {MAX_BATCH} keys, this one {n}"
        )))
    } else {
        Ok(())
    }
}

fn replica_list_reply(
    r: Result<master::ReplicaList, ErrorCode>,
    now: Nanos,
) -> pb::GetReplicaListReply {
    match r {
        Ok(list) => pb::GetReplicaListReply {
            code: 0,
            size: list.size,
            checksum: list.checksum,
            lease_ttl_ns: list.lease.until.saturating_sub(now).0,
            lease: list
                .lease
                .tokens()
                .iter()
                .map(|(s, t)| token_to_pb(*s, t))
                .collect(),
            replicas: list.replicas.into_iter().map(Into::into).collect(),
        },
        Err(e) => pb::GetReplicaListReply {
            code: e.code(),
            ..Default::default()
        },
    }
}

fn put_start_reply(r: Result<Vec<master::ReplicaDesc>, ErrorCode>) -> pb::PutStartReply {
    match r {
        Ok(descs) => pb::PutStartReply {
            code: 0,
            replicas: descs.into_iter().map(Into::into).collect(),
        },
        Err(e) => pb::PutStartReply {
            code: e.code(),
            replicas: Vec::new(),
        },
    }
}

/// The service as tonic sees it (a thin handle on the shared state).
#[derive(Clone)]
pub struct Handler(pub Arc<MasterService>);

impl Handler {
    fn put_start_one(
        &self,
        client: u64,
        key: &str,
        size: u64,
        opts: &master::PutOptions,
    ) -> pb::PutStartReply {
        let r = check_key(key).and_then(|()| {
            self.0
                .master
                .put_start(ClientId(client), key, size, opts, self.0.now())
        });
        put_start_reply(r)
    }
}

#[tonic::async_trait]
impl master_server::Master for Handler {
    async fn service_ready(
        &self,
        _: Request<pb::ServiceReadyRequest>,
    ) -> Reply<pb::ServiceReadyReply> {
        Ok(Response::new(pb::ServiceReadyReply {
            protocol: PROTOCOL,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn mount_segment(
        &self,
        req: Request<pb::MountSegmentRequest>,
    ) -> Reply<pb::MountSegmentReply> {
        let req = req.into_inner();
        let Some(seg) = req.segment else {
            return Ok(Response::new(pb::MountSegmentReply {
                code: ErrorCode::InvalidParams.code(),
                ..Default::default()
            }));
        };
        let desc = master::SegmentDesc {
            name: seg.name,
            endpoint: seg.endpoint,
            size: seg.size,
            tier: super::tier_from_pb(seg.tier),
        };
        let objects: Vec<master::ReportedObject> =
            req.objects.into_iter().map(Into::into).collect();
        let now = self.0.now();
        let r = if objects.is_empty() {
            self.0
                .master
                .mount_segment(ClientId(req.client_id), desc, now)
                .map(|id| (id, Vec::new()))
        } else {
            self.0
                .master
                .mount_segment_with_objects(ClientId(req.client_id), desc, objects, now)
        };
        Ok(Response::new(match r {
            Ok((id, rejected)) => pb::MountSegmentReply {
                code: 0,
                segment_id: id.0,
                rejected: rejected.into_iter().map(Into::into).collect(),
            },
            Err(e) => pb::MountSegmentReply {
                code: e.code(),
                ..Default::default()
            },
        }))
    }

    async fn unmount_segment(
        &self,
        req: Request<pb::UnmountSegmentRequest>,
    ) -> Reply<pb::CodeReply> {
        let req = req.into_inner();
        let code = code_of(self.0.master.unmount_segment(&req.name, self.0.now()));
        Ok(Response::new(pb::CodeReply { code }))
    }

    async fn ping(&self, req: Request<pb::PingRequest>) -> Reply<pb::PingReply> {
        let req = req.into_inner();
        let client = ClientId(req.client_id);
        let status = self.0.master.ping(client, self.0.now());
        Ok(Response::new(pb::PingReply {
            code: 0,
            need_remount: status == master::PingStatus::NeedRemount,
            released: self.0.master.take_released(client),
        }))
    }

    async fn put_start(&self, req: Request<pb::PutStartRequest>) -> Reply<pb::PutStartReply> {
        let req = req.into_inner();
        let opts: master::PutOptions = req.options.map(Into::into).unwrap_or_default();
        Ok(Response::new(self.put_start_one(
            req.client_id,
            &req.key,
            req.size,
            &opts,
        )))
    }

    async fn put_end(&self, req: Request<pb::PutEndRequest>) -> Reply<pb::CodeReply> {
        let req = req.into_inner();
        let r = check_key(&req.key).and_then(|()| {
            self.0.master.put_end(
                ClientId(req.client_id),
                &req.key,
                req.checksum,
                self.0.now(),
            )
        });
        Ok(Response::new(pb::CodeReply { code: code_of(r) }))
    }

    async fn put_revoke(&self, req: Request<pb::KeyRequest>) -> Reply<pb::CodeReply> {
        let req = req.into_inner();
        let r = check_key(&req.key).and_then(|()| {
            self.0
                .master
                .put_revoke(ClientId(req.client_id), &req.key, self.0.now())
        });
        Ok(Response::new(pb::CodeReply { code: code_of(r) }))
    }

    async fn batch_put_start(
        &self,
        req: Request<pb::BatchPutStartRequest>,
    ) -> Reply<pb::BatchPutStartReply> {
        let req = req.into_inner();
        check_batch(req.keys.len())?;
        if req.keys.len() != req.sizes.len() {
            return Err(Status::invalid_argument(format!(
                "{} keys but {} sizes",
                req.keys.len(),
                req.sizes.len()
            )));
        }
        let opts: master::PutOptions = req.options.map(Into::into).unwrap_or_default();
        let results = req
            .keys
            .iter()
            .zip(&req.sizes)
            .map(|(k, &s)| self.put_start_one(req.client_id, k, s, &opts))
            .collect();
        Ok(Response::new(pb::BatchPutStartReply { results }))
    }

    async fn batch_put_end(
        &self,
        req: Request<pb::BatchPutEndRequest>,
    ) -> Reply<pb::BatchCodeReply> {
        let req = req.into_inner();
        check_batch(req.items.len())?;
        let now = self.0.now();
        let codes = req
            .items
            .iter()
            .map(|i| {
                code_of(check_key(&i.key).and_then(|()| {
                    self.0
                        .master
                        .put_end(ClientId(req.client_id), &i.key, i.checksum, now)
                }))
            })
            .collect();
        Ok(Response::new(pb::BatchCodeReply { codes }))
    }

    async fn batch_put_revoke(
        &self,
        req: Request<pb::BatchKeyRequest>,
    ) -> Reply<pb::BatchCodeReply> {
        let req = req.into_inner();
        check_batch(req.keys.len())?;
        let now = self.0.now();
        let codes = req
            .keys
            .iter()
            .map(|k| {
                code_of(
                    check_key(k)
                        .and_then(|()| self.0.master.put_revoke(ClientId(req.client_id), k, now)),
                )
            })
            .collect();
        Ok(Response::new(pb::BatchCodeReply { codes }))
    }

    async fn get_replica_list(
        &self,
        req: Request<pb::KeyRequest>,
    ) -> Reply<pb::GetReplicaListReply> {
        let req = req.into_inner();
        let now = self.0.now();
        let r = check_key(&req.key).and_then(|()| self.0.master.get_replica_list(&req.key, now));
        Ok(Response::new(replica_list_reply(r, now)))
    }

    async fn batch_get_replica_list(
        &self,
        req: Request<pb::BatchKeyRequest>,
    ) -> Reply<pb::BatchGetReplicaListReply> {
        let req = req.into_inner();
        check_batch(req.keys.len())?;
        let now = self.0.now();
        let results = req
            .keys
            .iter()
            .map(|k| {
                let r = check_key(k).and_then(|()| self.0.master.get_replica_list(k, now));
                replica_list_reply(r, now)
            })
            .collect();
        Ok(Response::new(pb::BatchGetReplicaListReply { results }))
    }

    async fn check_lease(&self, req: Request<pb::CheckLeaseRequest>) -> Reply<pb::CheckLeaseReply> {
        let req = req.into_inner();
        if req.lease.len() > master::MAX_REPLICAS as usize {
            return Err(Status::invalid_argument("more lease tokens than replicas"));
        }
        let lease = Lease::from_tokens(req.lease.iter().map(token_from_pb).collect());
        let valid = self.0.master.lease_valid(&lease, self.0.now());
        Ok(Response::new(pb::CheckLeaseReply { valid }))
    }

    async fn exist(&self, req: Request<pb::KeyRequest>) -> Reply<pb::ExistReply> {
        let req = req.into_inner();
        let r = check_key(&req.key).and_then(|()| self.0.master.exist(&req.key, self.0.now()));
        Ok(Response::new(exist_reply(r)))
    }

    async fn batch_contains(
        &self,
        req: Request<pb::BatchKeyRequest>,
    ) -> Reply<pb::BatchContainsReply> {
        let req = req.into_inner();
        check_batch(req.keys.len())?;
        let now = self.0.now();
        let results = req
            .keys
            .iter()
            .map(|k| exist_reply(check_key(k).and_then(|()| self.0.master.contains(k, now))))
            .collect();
        Ok(Response::new(pb::BatchContainsReply { results }))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Reply<pb::CodeReply> {
        let req = req.into_inner();
        let r = check_key(&req.key)
            .and_then(|()| self.0.master.remove(&req.key, req.force, self.0.now()));
        Ok(Response::new(pb::CodeReply { code: code_of(r) }))
    }

    async fn pin(&self, req: Request<pb::KeyRequest>) -> Reply<pb::PinReply> {
        let req = req.into_inner();
        let now = self.0.now();
        let r = check_key(&req.key).and_then(|()| self.0.master.pin(&req.key, now));
        Ok(Response::new(match r {
            Ok(p) => {
                let id = self.0.next_pin.fetch_add(1, Ordering::Relaxed);
                self.0
                    .pins
                    .lock()
                    .insert(id, (ClientId(req.client_id), now, p));
                pb::PinReply {
                    code: 0,
                    pin_id: id,
                }
            }
            Err(e) => pb::PinReply {
                code: e.code(),
                pin_id: 0,
            },
        }))
    }

    async fn unpin(&self, req: Request<pb::UnpinRequest>) -> Reply<pb::CodeReply> {
        let req = req.into_inner();
        let taken = {
            let mut pins = self.0.pins.lock();
            match pins.get(&req.pin_id) {
                Some((holder, _, _)) if *holder != ClientId(req.client_id) => {
                    Err(ErrorCode::IllegalClient)
                }
                Some(_) => pins
                    .remove(&req.pin_id)
                    .map(|p| p.2)
                    .ok_or(ErrorCode::ObjectNotFound),
                // Released already (by its TTL) or never taken.
                None => Err(ErrorCode::ObjectNotFound),
            }
        };
        let r = taken.and_then(|p| {
            if self.0.master.unpin(p, self.0.now()) {
                Ok(())
            } else {
                Err(ErrorCode::InvalidWrite)
            }
        });
        Ok(Response::new(pb::CodeReply { code: code_of(r) }))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Reply<pb::ListReply> {
        let req = req.into_inner();
        if req.prefix.len() > MAX_KEY_BYTES {
            return Err(Status::invalid_argument(
                "the prefix is longer than a key may be",
            ));
        }
        let limit = (req.limit as usize).clamp(1, 100_000);
        let objects = self
            .0
            .master
            .list(&req.prefix, limit, self.0.now())
            .into_iter()
            .map(|o| pb::ObjectInfo {
                key: o.key,
                size: o.size,
                replicas: o.replicas,
                committed: o.committed,
            })
            .collect();
        Ok(Response::new(pb::ListReply { objects }))
    }

    async fn stats(&self, _: Request<pb::StatsRequest>) -> Reply<pb::StatsReply> {
        let now = self.0.now();
        let segments = self
            .0
            .master
            .segment_stats(now)
            .into_iter()
            .map(|s| pb::SegmentStats {
                name: s.name,
                endpoint: s.endpoint,
                capacity: s.capacity,
                used: s.used,
                objects: s.objects,
            })
            .collect();
        Ok(Response::new(pb::StatsReply {
            segments,
            objects: self.0.master.count(),
        }))
    }
}

/// An Exist or Contains answer on the wire.
fn exist_reply(r: Result<bool, ErrorCode>) -> pb::ExistReply {
    match r {
        Ok(exists) => pb::ExistReply { code: 0, exists },
        Err(e) => pb::ExistReply {
            code: e.code(),
            exists: false,
        },
    }
}

/// Refuses a request that does not carry the cluster secret.
#[derive(Clone)]
pub struct Authenticate(pub Secret);

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match req.metadata().get(AUTH_HEADER) {
            Some(v) if self.0.accepts(v.as_bytes()) => Ok(req),
            _ => Err(Status::unauthenticated("missing or wrong cluster secret")),
        }
    }
}

/// Serves `service` on `listener` until `shutdown` resolves, with its
/// periodic work running beside it (when `tick` is true; tests that drive
/// time by hand tick themselves).
pub async fn serve(
    service: Arc<MasterService>,
    secret: Secret,
    listener: tokio::net::TcpListener,
    tick: bool,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let ticker = tick.then(|| {
        let svc = service.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(TICK_PERIOD);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                svc.tick();
            }
        })
    });
    let svc = master_server::MasterServer::new(Handler(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, Authenticate(secret));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let r = tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Some(t) = ticker {
        t.abort();
    }
    r
}

/// Binds `addr` (loopback unless the operator gave another address).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
