//! The transfer engine over TCP on loopback: byte-exact reads and writes of
//! every size class, batches, bounds, the cluster secret, retries on
//! another path, a dead peer (fails, never hangs), garbage on the wire,
//! and slices striped over the NICs nearest the buffer.

use moonlab_real::error::ErrorCode;
use moonlab_real::rpc::Secret;
use moonlab_real::transfer::tcp::{serve, TcpConfig, TcpTransport};
use moonlab_real::transfer::topology::Topology;
use moonlab_real::transfer::{
    EngineConfig, Opcode, Path, Region, Slice, TaskStatus, TransferEngine, TransferRequest,
    Transport,
};
use parking_lot::Mutex;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const SECRET: &str = "transfer-test-secret-42";

fn secret() -> Secret {
    Secret::new(SECRET).unwrap()
}

struct Target {
    addr: String,
    region: Arc<Region>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Target {
    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn target(len: usize) -> Target {
    let region = Arc::new(Region::new(len).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, region.clone(), secret(), async {
        let _ = rx.await;
    }));
    Target {
        addr,
        region,
        stop: Some(tx),
    }
}

fn engine(config: EngineConfig) -> TransferEngine {
    TransferEngine::new(
        Arc::new(TcpTransport::new(TcpConfig::default(), secret())),
        Topology::loopback(),
        config,
    )
}

/// Deterministic bytes (a simple LCG; the test needs variety, not quality).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

fn request(
    op: Opcode,
    local: &Arc<Region>,
    lo: u64,
    seg: &moonlab_real::transfer::SegmentHandle,
    to: u64,
    len: u64,
) -> TransferRequest {
    TransferRequest {
        opcode: op,
        local: local.clone(),
        local_offset: lo,
        target: seg.clone(),
        target_offset: to,
        length: len,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_are_byte_exact_at_every_size() {
    let t = target(48 << 20).await;
    let e = engine(EngineConfig {
        slice_bytes: 256 << 10,
        retries: 2,
    });
    let seg = e.open_segment(&t.addr).await.unwrap();
    assert_eq!(seg.len, 48 << 20);
    let local = Arc::new(Region::new(48 << 20).unwrap());
    let back = Arc::new(Region::new(48 << 20).unwrap());
    let mut at = 0u64;
    for (i, &len) in [
        1u64,
        4096,
        (64 << 10) + 3,
        1 << 20,
        (8 << 20) + 17,
        16 << 20,
    ]
    .iter()
    .enumerate()
    {
        let data = pattern(i as u64, len as usize);
        local.write_at(at, &data).unwrap();
        let st = e
            .transfer(vec![request(Opcode::Write, &local, at, &seg, at, len)])
            .await;
        assert_eq!(st, [TaskStatus::Completed], "write of {len}");
        // The bytes are in the target's memory when the write completes.
        let mut there = vec![0u8; len as usize];
        t.region.read_at(at, &mut there).unwrap();
        assert!(there == data, "target bytes of {len}");
        let st = e
            .transfer(vec![request(Opcode::Read, &back, at, &seg, at, len)])
            .await;
        assert_eq!(st, [TaskStatus::Completed], "read of {len}");
        let mut got = vec![0u8; len as usize];
        back.read_at(at, &mut got).unwrap();
        assert!(got == data, "read back {len}");
        at += len;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_128_tasks_reports_each() {
    let t = target(4 << 20).await;
    let e = engine(EngineConfig::default());
    let seg = e.open_segment(&t.addr).await.unwrap();
    let local = Arc::new(Region::new(4 << 20).unwrap());
    let data = pattern(9, 128 * 16384);
    local.write_at(0, &data).unwrap();
    let batch = e.allocate_batch(130);
    let reqs: Vec<_> = (0..128u64)
        .map(|i| {
            request(
                Opcode::Write,
                &local,
                i * 16384,
                &seg,
                (127 - i) * 16384,
                16384,
            )
        })
        .collect();
    e.submit(&batch, reqs).unwrap();
    // Out of bounds on either side fails at once, alone.
    e.submit(
        &batch,
        vec![
            request(Opcode::Write, &local, 0, &seg, (4 << 20) - 10, 11),
            request(Opcode::Read, &local, (4 << 20) - 1, &seg, 0, 2),
        ],
    )
    .unwrap();
    // Over capacity: refused whole.
    assert_eq!(
        e.submit(&batch, vec![request(Opcode::Write, &local, 0, &seg, 0, 1)]),
        Err(ErrorCode::InvalidParams)
    );
    let st = e.wait(&batch).await;
    assert_eq!(st.len(), 130);
    assert!(
        st[..128].iter().all(|s| *s == TaskStatus::Completed),
        "{st:?}"
    );
    assert_eq!(st[128], TaskStatus::Failed(ErrorCode::InvalidParams));
    assert_eq!(st[129], TaskStatus::Failed(ErrorCode::InvalidParams));
    assert_eq!(e.status(&batch, 5), Some(TaskStatus::Completed));
    for i in 0..128usize {
        let mut got = vec![0u8; 16384];
        t.region
            .read_at((127 - i as u64) * 16384, &mut got)
            .unwrap();
        assert!(got[..] == data[i * 16384..(i + 1) * 16384], "task {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused() {
    let t = target(1 << 20).await;
    let e = TransferEngine::new(
        Arc::new(TcpTransport::new(
            TcpConfig::default(),
            Secret::new("some-other-secret-x").unwrap(),
        )),
        Topology::loopback(),
        EngineConfig::default(),
    );
    assert_eq!(e.open_segment(&t.addr).await, Err(ErrorCode::TransferFail));
    // A forged handle does not help: every slice fails.
    let seg = moonlab_real::transfer::SegmentHandle {
        endpoints: vec![t.addr.parse().unwrap()],
        len: 1 << 20,
        shm: None,
    };
    let local = Arc::new(Region::new(4096).unwrap());
    let st = e
        .transfer(vec![request(Opcode::Read, &local, 0, &seg, 0, 4096)])
        .await;
    assert_eq!(st, [TaskStatus::Failed(ErrorCode::TransferFail)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_path_is_retried_on_another() {
    let t = target(8 << 20).await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = engine(EngineConfig {
        slice_bytes: 64 << 10,
        retries: 1,
    });
    // Half the slices go to the dead endpoint first.
    let seg = e.open_segment(&format!("{dead},{}", t.addr)).await.unwrap();
    let local = Arc::new(Region::new(8 << 20).unwrap());
    let data = pattern(3, 8 << 20);
    local.write_at(0, &data).unwrap();
    let st = e
        .transfer(vec![request(Opcode::Write, &local, 0, &seg, 0, 8 << 20)])
        .await;
    assert_eq!(st, [TaskStatus::Completed]);
    let mut got = vec![0u8; 8 << 20];
    t.region.read_at(0, &mut got).unwrap();
    assert!(got == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_fails_the_batch_and_never_hangs() {
    let mut t = target(64 << 20).await;
    let e = engine(EngineConfig {
        slice_bytes: 64 << 10,
        retries: 2,
    });
    let seg = e.open_segment(&t.addr).await.unwrap();
    let local = Arc::new(Region::new(64 << 20).unwrap());
    // Killed mid-batch: whatever was in flight completes or fails.
    let batch = e.allocate_batch(1);
    e.submit(
        &batch,
        vec![request(Opcode::Write, &local, 0, &seg, 0, 64 << 20)],
    )
    .unwrap();
    t.stop();
    let st = tokio::time::timeout(Duration::from_secs(60), e.wait(&batch))
        .await
        .expect("a transfer to a dead peer must not hang");
    assert!(
        matches!(
            st[0],
            TaskStatus::Completed | TaskStatus::Failed(ErrorCode::TransferFail)
        ),
        "{st:?}"
    );
    // Dead before the batch: it fails.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = tokio::time::timeout(
        Duration::from_secs(60),
        e.transfer(vec![request(Opcode::Read, &local, 0, &seg, 0, 1 << 20)]),
    )
    .await
    .unwrap();
    assert_eq!(st, [TaskStatus::Failed(ErrorCode::TransferFail)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_its_connection_and_the_server_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = target(1 << 20).await;
    for junk in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0u8; 64],
        // A good hello, then a request with a bad opcode.
        {
            let mut v = moonlab_real::transfer::wire::encode_hello(SECRET.as_bytes());
            let mut h = moonlab_real::transfer::wire::RequestHeader {
                opcode: Opcode::Read,
                id: 1,
                offset: 0,
                len: 8,
            }
            .encode();
            h[4] = 77;
            v.extend_from_slice(&h);
            v
        },
        // A good hello, then a write far outside the region.
        {
            let mut v = moonlab_real::transfer::wire::encode_hello(SECRET.as_bytes());
            v.extend_from_slice(
                &moonlab_real::transfer::wire::RequestHeader {
                    opcode: Opcode::Write,
                    id: 1,
                    offset: 1 << 40,
                    len: 8,
                }
                .encode(),
            );
            v
        },
    ] {
        let mut s = tokio::net::TcpStream::connect(&t.addr).await.unwrap();
        s.write_all(&junk).await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "the server must close the connection");
    }
    let e = engine(EngineConfig::default());
    let seg = e.open_segment(&t.addr).await.unwrap();
    let local = Arc::new(Region::new(4096).unwrap());
    let st = e
        .transfer(vec![request(Opcode::Write, &local, 0, &seg, 0, 4096)])
        .await;
    assert_eq!(st, [TaskStatus::Completed]);
}

/// A transport that records the paths slices took, then moves them by TCP.
struct Recording {
    inner: TcpTransport,
    used: Mutex<Vec<Path>>,
}

impl Transport for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn move_slice(
        &self,
        path: &Path,
        slice: Slice,
    ) -> Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>> {
        self.used.lock().push(path.clone());
        self.inner.move_slice(path, slice)
    }
    fn probe(&self, path: &Path) -> Pin<Box<dyn Future<Output = Result<u64, ErrorCode>> + Send>> {
        self.inner.probe(path)
    }
    fn send_note(
        &self,
        path: &Path,
        note: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ErrorCode>> + Send>> {
        self.inner.send_note(path, note)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_are_striped_over_the_nics_near_the_buffer() {
    let t = target(4 << 20).await;
    let rec = Arc::new(Recording {
        inner: TcpTransport::new(TcpConfig::default(), secret()),
        used: Mutex::new(Vec::new()),
    });
    let topo = Topology::parse("a=127.0.0.1@0,b=127.0.0.2@1,c=127.0.0.3@1").unwrap();
    let e = TransferEngine::new(
        rec.clone(),
        topo,
        EngineConfig {
            slice_bytes: 64 << 10,
            retries: 1,
        },
    );
    let seg = e.open_segment(&t.addr).await.unwrap();
    rec.used.lock().clear();
    // A buffer on NUMA node 1: NICs b and c, alternately; never a.
    let local = Arc::new(Region::on_node(1 << 20, 1).unwrap());
    let st = e
        .transfer(vec![request(Opcode::Write, &local, 0, &seg, 0, 1 << 20)])
        .await;
    assert_eq!(st, [TaskStatus::Completed]);
    let used = rec.used.lock().clone();
    assert_eq!(used.len(), 16);
    let from = |ip: [u8; 4]| used.iter().filter(|p| p.local == Some(ip.into())).count();
    assert_eq!(
        (
            from([127, 0, 0, 1]),
            from([127, 0, 0, 2]),
            from([127, 0, 0, 3])
        ),
        (0, 8, 8)
    );
}
