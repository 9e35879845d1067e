//! The master over gRPC on loopback: the core store scenarios, unchanged,
//! through the client (time driven by a shared manual clock); the cluster
//! secret; and bad messages (oversized, truncated, garbage, out of bounds)
//! answered with an error or a closed connection while the server keeps
//! serving.

use moonlab_core::store::scenario::{run, KeyState, ObjectStore, StoreError, StoreSetup};
use moonlab_core::types::Nanos;
use moonlab_real::clock::ManualClock;
use moonlab_real::error::ErrorCode;
use moonlab_real::master::scenario::{config_for, SCENARIO_CLIENT};
use moonlab_real::master::{ClientId, Lease, Master, MasterConfig, PutOptions, SegmentDesc};
use moonlab_real::rpc::client::{CallError, MasterClient};
use moonlab_real::rpc::server::{serve, MasterService};
use moonlab_real::rpc::{pb, Secret, MAX_BATCH};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::runtime::Runtime;

mod common;

const SECRET: &str = "test-secret-0123456789";

struct Served {
    addr: String,
    service: Arc<MasterService>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn start(rt: &Runtime, config: MasterConfig, clock: ManualClock) -> Served {
    let master = Arc::new(Master::new(config).unwrap());
    let service = MasterService::new(master, Arc::new(clock));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let svc = service.clone();
    rt.spawn(async move {
        serve(svc, Secret::new(SECRET).unwrap(), listener, false, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Served {
        addr,
        service,
        stop: Some(tx),
    }
}

/// The master behind gRPC as a scenario's store.
struct RpcStore {
    rt: Arc<Runtime>,
    served: Served,
    clock: ManualClock,
    client: MasterClient,
    leases: HashMap<String, Lease>,
    pins: HashMap<String, Vec<u64>>,
}

fn code(e: CallError) -> StoreError {
    e.code.as_store_error().unwrap_or(StoreError::Busy)
}

impl RpcStore {
    fn new(rt: Arc<Runtime>, setup: &StoreSetup) -> RpcStore {
        let clock = ManualClock::new();
        let served = start(&rt, config_for(setup), clock.clone());
        let secret = Secret::new(SECRET).unwrap();
        let mut client = rt
            .block_on(MasterClient::connect(
                &served.addr,
                &secret,
                SCENARIO_CLIENT,
            ))
            .unwrap();
        let desc = SegmentDesc {
            name: "scenario".into(),
            endpoint: "local".into(),
            size: setup.capacity_bytes,
            tier: moonlab_core::store::Tier::Dram,
        };
        rt.block_on(client.mount_segment(&desc, Vec::new()))
            .unwrap();
        RpcStore {
            rt,
            served,
            clock,
            client,
            leases: HashMap::new(),
            pins: HashMap::new(),
        }
    }

    fn at(&mut self, now: Nanos) -> &mut MasterClient {
        self.clock.set(now);
        &mut self.client
    }
}

impl ObjectStore for RpcStore {
    fn put_start(
        &mut self,
        key: &str,
        bytes: u64,
        soft_pin: bool,
        now: Nanos,
    ) -> Result<(), StoreError> {
        let rt = self.rt.clone();
        let opts = PutOptions {
            soft_pin,
            ..PutOptions::default()
        };
        rt.block_on(self.at(now).put_start(key, bytes, &opts))
            .map(|_| ())
            .map_err(code)
    }
    fn put_end(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let rt = self.rt.clone();
        rt.block_on(self.at(now).put_end(key, None)).map_err(code)
    }
    fn put_revoke(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let rt = self.rt.clone();
        rt.block_on(self.at(now).put_revoke(key)).map_err(code)
    }
    fn read(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let rt = self.rt.clone();
        let got = rt
            .block_on(self.at(now).get_replica_list(key))
            .map_err(code)?;
        self.leases.insert(key.to_string(), got.lease);
        Ok(())
    }
    fn lease_valid(&self, key: &str, now: Nanos) -> bool {
        let Some(lease) = self.leases.get(key) else {
            return false;
        };
        self.clock.set(now);
        let mut c = self.client.clone();
        self.rt.block_on(c.check_lease(lease)).unwrap()
    }
    fn pin(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let rt = self.rt.clone();
        let id = rt.block_on(self.at(now).pin(key)).map_err(code)?;
        self.pins.entry(key.to_string()).or_default().push(id);
        Ok(())
    }
    fn unpin(&mut self, key: &str, now: Nanos) -> Result<(), StoreError> {
        let id = self
            .pins
            .get_mut(key)
            .and_then(Vec::pop)
            .ok_or(StoreError::NotFound)?;
        let rt = self.rt.clone();
        rt.block_on(self.at(now).unpin(id)).map_err(code)
    }
    fn remove(&mut self, key: &str, force: bool, now: Nanos) -> Result<(), StoreError> {
        let rt = self.rt.clone();
        rt.block_on(self.at(now).remove(key, force)).map_err(code)
    }
    fn evict(&mut self, now: Nanos) {
        // The server's periodic work, at the scenario's time.
        self.clock.set(now);
        self.served.service.tick();
    }
    fn state(&self, key: &str, now: Nanos) -> KeyState {
        self.clock.set(now);
        let mut c = self.client.clone();
        // Listing changes nothing (a read would grant a lease).
        let listed = self.rt.block_on(c.list(key, 1)).unwrap();
        match listed.first().filter(|o| o.key == key) {
            None => KeyState::Missing,
            Some(o) if o.committed => KeyState::Kept,
            Some(_) => KeyState::NotReady,
        }
    }
    fn used_bytes(&mut self, now: Nanos) -> u64 {
        let rt = self.rt.clone();
        let (segs, _) = rt.block_on(self.at(now).stats()).unwrap();
        segs.iter().map(|s| s.used).sum()
    }
    fn count(&mut self, now: Nanos) -> u64 {
        let rt = self.rt.clone();
        rt.block_on(self.at(now).stats()).unwrap().1
    }
}

fn runtime() -> Arc<Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    )
}

#[test]
fn every_core_scenario_holds_over_rpc() {
    let rt = runtime();
    let mut failures = Vec::new();
    for (name, text) in common::core_scenarios() {
        if let Err(e) = run(&text, &name, &mut |s| {
            Box::new(RpcStore::new(rt.clone(), s))
        }) {
            failures.push(e.to_string());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // And a wrong expectation fails over RPC too.
    let text = "store capacity=4KiB lease=10s\nput a 1KiB\nread a\nremove a\n";
    let e = run(text, "wrong.scn", &mut |s| {
        Box::new(RpcStore::new(rt.clone(), s))
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "wrong.scn:4: remove a: failed with `leased`, expected success"
    );
}

#[test]
fn requests_without_the_secret_are_refused() {
    let rt = runtime();
    let served = start(&rt, MasterConfig::default(), ManualClock::new());
    let wrong = Secret::new("not-the-secret-at-all").unwrap();
    let e = rt
        .block_on(MasterClient::connect(&served.addr, &wrong, ClientId(1)))
        .err()
        .expect("a wrong secret must be refused");
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    // No secret at all: a raw client without the interceptor.
    let raw = rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", served.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut raw = pb::master_client::MasterClient::new(ch);
        raw.stats(pb::StatsRequest {}).await
    });
    assert_eq!(raw.unwrap_err().code(), tonic::Code::Unauthenticated);
}

/// Sends `body` as the raw protobuf payload of `method`.
async fn send_raw(
    addr: &str,
    method: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            use bytes::BufMut;
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            use bytes::Buf;
            let mut v = vec![0; src.remaining()];
            src.copy_to_slice(&mut v);
            Ok(Some(v))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(ch).max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut req = tonic::Request::new(body);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {SECRET}").parse().unwrap());
    grpc.unary(
        req,
        tonic::codegen::http::uri::PathAndQuery::from_static(method),
        Raw,
    )
    .await
    .map(|r| r.into_inner())
}

#[test]
fn bad_messages_get_an_error_and_the_server_keeps_serving() {
    let rt = runtime();
    let served = start(&rt, MasterConfig::default(), ManualClock::new());
    let secret = Secret::new(SECRET).unwrap();
    let mut client = rt
        .block_on(MasterClient::connect(&served.addr, &secret, ClientId(5)))
        .unwrap();
    let desc = SegmentDesc {
        name: "s".into(),
        endpoint: "e".into(),
        size: 1 << 20,
        tier: moonlab_core::store::Tier::Dram,
    };
    rt.block_on(client.mount_segment(&desc, Vec::new()))
        .unwrap();

    // Truncated protobuf: a length-delimited field that claims more bytes
    // than follow.
    let truncated = vec![0x12, 0x40, b'k'];
    let e = rt
        .block_on(send_raw(
            &served.addr,
            "/moonlab.store.v1.Master/PutStart",
            truncated,
        ))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    // Garbage bytes.
    let e = rt
        .block_on(send_raw(
            &served.addr,
            "/moonlab.store.v1.Master/GetReplicaList",
            vec![0xff; 64],
        ))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Internal, "{e:?}");
    // Oversized: 30 MiB, over the 24 MiB limit.
    let big = pb::KeyRequest {
        client_id: 5,
        key: "k".repeat(30 << 20),
    };
    let e = rt
        .block_on(send_raw(
            &served.addr,
            "/moonlab.store.v1.Master/Exist",
            prost::Message::encode_to_vec(&big),
        ))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    // A key over 4 KiB inside the limit: the master's own error.
    let long = "k".repeat(5000);
    let e = rt
        .block_on(client.put_start(&long, 10, &PutOptions::default()))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidKey);
    // A batch over the limit.
    let keys: Vec<String> = (0..=MAX_BATCH).map(|i| format!("k{i}")).collect();
    let e = rt
        .block_on(client.batch_get_replica_list(&keys))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidParams);
    // Not HTTP/2 at all: the connection is closed.
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(&served.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\nthis is not a gRPC request\0\xff\xfe")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "the server must close a garbage connection");
    });
    // Still serving.
    rt.block_on(client.put_start("after", 10, &PutOptions::default()))
        .unwrap();
    rt.block_on(client.put_end("after", Some(1))).unwrap();
    assert!(rt.block_on(client.exist("after")).unwrap());
}

#[test]
fn batches_return_one_result_per_key() {
    let rt = runtime();
    let served = start(&rt, MasterConfig::default(), ManualClock::new());
    let secret = Secret::new(SECRET).unwrap();
    let mut c = rt
        .block_on(MasterClient::connect(&served.addr, &secret, ClientId(5)))
        .unwrap();
    let desc = SegmentDesc {
        name: "s".into(),
        endpoint: "e".into(),
        size: 4096,
        tier: moonlab_core::store::Tier::Dram,
    };
    rt.block_on(c.mount_segment(&desc, Vec::new())).unwrap();
    let items = vec![
        ("a".to_string(), 1000),
        ("b".to_string(), 5000),
        ("c".to_string(), 1000),
    ];
    let r = rt
        .block_on(c.batch_put_start(&items, &PutOptions::default()))
        .unwrap();
    assert!(r[0].is_ok());
    assert_eq!(
        r[1].as_ref().unwrap_err().code,
        ErrorCode::NoAvailableHandle
    );
    assert!(r[2].is_ok());
    let ends = vec![
        ("a".to_string(), Some(1)),
        ("b".to_string(), None),
        ("c".to_string(), Some(3)),
    ];
    let r = rt.block_on(c.batch_put_end(&ends)).unwrap();
    assert!(r[0].is_ok() && r[2].is_ok());
    assert_eq!(r[1].as_ref().unwrap_err().code, ErrorCode::ObjectNotFound);
    let keys = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    let got = rt.block_on(c.batch_get_replica_list(&keys)).unwrap();
    assert_eq!(got[0].as_ref().unwrap().checksum, Some(1));
    assert_eq!(got[1].as_ref().unwrap_err().code, ErrorCode::ObjectNotFound);
    assert_eq!(got[2].as_ref().unwrap().replicas[0].size, 1000);
    assert_eq!(got[2].as_ref().unwrap().lease_ttl, Nanos::from_secs(10));
}
