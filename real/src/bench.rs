//! Benchmarks of the real backend, shaped like upstream's
//! `transfer_engine_bench` (operation, block size, batch size, threads,
//! duration): each thread submits a batch of `batch_size` requests of
//! `block_size` bytes, waits for it, and submits the next, for `duration`.
//! Throughput is bytes moved over wall time; latency is per batch.
//!
//! The store benchmark puts or gets objects of one size from `clients`
//! concurrent clients through the client library (checksums included).
//! As redis-benchmark does, it connects its clients first: the clock
//! starts once every client is connected and has opened (for the
//! same-host path, mapped) the store nodes' segments.
//!
//! These measure; they assert nothing. Ratios against iperf3, redis and fio
//! are taken by `experiments/bench/real.sh` in the same run.

use crate::client::{Buffer, ClientConfig, StoreClient};
use crate::clock::{Clock, MonotonicClock};
use crate::error::ErrorCode;
use crate::master::PutOptions;
use crate::rpc::Secret;
use crate::transfer::tcp::{serve, TcpConfig, TcpTransport};
use crate::transfer::topology::Topology;
use crate::transfer::{EngineConfig, Opcode, Region, TaskStatus, TransferEngine, TransferRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most memory a benchmark's buffers may take on either side.
pub const MAX_BUFFER_BYTES: u64 = 512 << 20;

/// One transfer-engine benchmark.
#[derive(Clone, Debug)]
pub struct TeBench {
    pub operation: Opcode,
    pub block_size: u64,
    pub batch_size: usize,
    pub threads: usize,
    pub duration: Duration,
    pub engine: EngineConfig,
    pub tcp: TcpConfig,
    /// The NICs slices are striped over.
    pub topology: Topology,
}

/// What a benchmark measured.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub bytes: u64,
    pub seconds: f64,
    /// Bytes per second / 1e9.
    pub gb_per_s: f64,
    pub operations: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

fn report(bytes: u64, ops: u64, seconds: f64, mut lat_ns: Vec<u64>) -> BenchReport {
    lat_ns.sort_unstable();
    let q = |f: f64| {
        if lat_ns.is_empty() {
            0.0
        } else {
            lat_ns[((lat_ns.len() - 1) as f64 * f).round() as usize] as f64 / 1e3
        }
    };
    BenchReport {
        bytes,
        seconds,
        gb_per_s: bytes as f64 / seconds.max(1e-9) / 1e9,
        operations: ops,
        p50_us: q(0.5),
        p99_us: q(0.99),
    }
}

/// Runs `b` against a transfer-engine target: the one at `target`, or one
/// started in this process on loopback.
pub async fn transfer_engine(
    b: &TeBench,
    target: Option<&str>,
    secret: &Secret,
) -> Result<BenchReport, String> {
    if b.block_size == 0 || b.batch_size == 0 || b.threads == 0 {
        return Err("block size, batch size and threads must be positive".into());
    }
    let span = (b.block_size * b.batch_size as u64)
        .min(MAX_BUFFER_BYTES)
        .max(b.block_size);
    if b.block_size > MAX_BUFFER_BYTES {
        return Err(format!("block size over {MAX_BUFFER_BYTES} bytes"));
    }
    let mut stop_target = None;
    let endpoint = match target {
        Some(t) => t.to_string(),
        None => {
            let region = Arc::new(Region::new(span as usize).map_err(|e| e.to_string())?);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| e.to_string())?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(serve(listener, region, secret.clone(), async {
                let _ = rx.await;
            }));
            stop_target = Some(tx);
            addr.to_string()
        }
    };
    let engine = Arc::new(TransferEngine::new(
        Arc::new(TcpTransport::new(b.tcp.clone(), secret.clone())),
        b.topology.clone(),
        b.engine.clone(),
    ));
    let seg = engine
        .open_segment(&endpoint)
        .await
        .map_err(|e| format!("opening {endpoint}: {e}"))?;
    if seg.len < b.block_size {
        return Err(format!(
            "the target's segment ({} bytes) is smaller than a block",
            seg.len
        ));
    }
    let local = Arc::new(Region::new(span as usize).map_err(|e| e.to_string())?);
    let clock = MonotonicClock::new();
    let bytes = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let deadline = clock.now().0 + b.duration.as_nanos() as u64;
    let mut threads = tokio::task::JoinSet::new();
    for t in 0..b.threads {
        let (engine, seg, local, bytes, ops) = (
            engine.clone(),
            seg.clone(),
            local.clone(),
            bytes.clone(),
            ops.clone(),
        );
        let b = b.clone();
        threads.spawn(async move {
            let mut lat = Vec::new();
            let slots = (seg.len.min(span) / b.block_size).max(1);
            let mut k = t as u64;
            while clock.now().0 < deadline {
                let reqs: Vec<TransferRequest> = (0..b.batch_size)
                    .map(|i| {
                        let slot = (k + i as u64) % slots;
                        TransferRequest {
                            opcode: b.operation,
                            local: local.clone(),
                            local_offset: (i as u64 % slots) * b.block_size,
                            target: seg.clone(),
                            target_offset: slot * b.block_size,
                            length: b.block_size,
                        }
                    })
                    .collect();
                k += b.batch_size as u64;
                let t0 = clock.now().0;
                let st = engine.transfer(reqs).await;
                if let Some(bad) = st.iter().find(|s| **s != TaskStatus::Completed) {
                    return Err(format!("a transfer failed: {bad:?}"));
                }
                lat.push(clock.now().0 - t0);
                bytes.fetch_add(b.block_size * b.batch_size as u64, Ordering::Relaxed);
                ops.fetch_add(b.batch_size as u64, Ordering::Relaxed);
            }
            Ok(lat)
        });
    }
    let start = clock.now().0;
    let mut lat = Vec::new();
    while let Some(r) = threads.join_next().await {
        lat.extend(r.map_err(|e| e.to_string())??);
    }
    let seconds = (clock.now().0.saturating_sub(start)) as f64 / 1e9;
    if let Some(s) = stop_target {
        let _ = s.send(());
    }
    Ok(report(
        bytes.load(Ordering::Relaxed),
        ops.load(Ordering::Relaxed),
        seconds,
        lat,
    ))
}

/// What a store benchmark's clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Put objects under distinct keys.
    Put,
    /// Get objects put beforehand.
    Get,
    /// Ask whether a key that is not there exists: one master round trip
    /// and nothing else (the floor under a put's two and a get's one).
    Exist,
}

/// One store benchmark: `clients` clients putting (distinct keys) or
/// getting (keys put beforehand) objects of `value_size` bytes, or asking
/// the master about a missing key (then no bytes move: the report's
/// throughput is zero and its latencies are round trips).
#[derive(Clone, Debug)]
pub struct StoreBench {
    pub op: StoreOp,
    pub value_size: u64,
    pub clients: usize,
    pub duration: Duration,
    pub replicas: u32,
    /// Distinct keys a get cycles over.
    pub keys: usize,
    /// How the clients reach the store nodes (same-host path or not, NICs).
    pub client: ClientConfig,
    /// All clients as tasks of the caller's runtime; otherwise each client
    /// has a thread with an event loop of its own (as one inference
    /// worker's thread would).
    pub shared_runtime: bool,
}

/// Runs `b` against the cluster its client configuration names.
pub async fn store(b: &StoreBench) -> Result<BenchReport, String> {
    if b.value_size == 0 || b.clients == 0 || b.keys == 0 {
        return Err("value size, clients and keys must be positive".into());
    }
    let opts = PutOptions {
        replicas: b.replicas,
        ..PutOptions::default()
    };
    let run = crate::client::random_client_id().0;
    let value: Vec<u8> = (0..b.value_size).map(|i| (i * 131 % 251) as u8).collect();
    if b.op == StoreOp::Get {
        let mut c = StoreClient::connect(b.client.clone())
            .await
            .map_err(|e| e.to_string())?;
        let buf = Buffer::copy_of(&value).map_err(|e| e.to_string())?;
        for k in 0..b.keys {
            c.put_from(&format!("bench-{run:x}-{k}"), &buf, &opts)
                .await
                .map_err(|e| format!("preparing key {k}: {e}"))?;
        }
    }
    let shared = Shared {
        clock: MonotonicClock::new(),
        ready: Arc::new(tokio::sync::Barrier::new(b.clients)),
        start_at: Arc::new(AtomicU64::new(0)),
        run,
        opts,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();
    let mut failed = None;
    for t in 0..b.clients {
        let buf = Buffer::copy_of(&value).map_err(|e| e.to_string())?;
        let client = store_client(b.clone(), shared.clone(), t, buf);
        if b.shared_runtime {
            tasks.spawn(client);
            continue;
        }
        let tx = tx.clone();
        let started = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("client {t}'s event loop: {e}"))
            .and_then(|rt| {
                std::thread::Builder::new()
                    .name(format!("bench-client-{t}"))
                    .spawn(move || {
                        let _ = tx.send(rt.block_on(client));
                    })
                    .map_err(|e| format!("client {t}'s thread: {e}"))
            });
        if let Err(e) = started {
            // Stand in for it at the start line, so that the others go on
            // (and end) instead of waiting for it.
            shared.ready.wait().await;
            shared.ready.wait().await;
            failed.get_or_insert(e);
        }
    }
    drop(tx);
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.map_err(|e| e.to_string())?);
    }
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let (mut bytes, mut lat, mut start, mut end) = (0, Vec::new(), u64::MAX, 0);
    for r in results {
        let (b, l, began, finished) = r?;
        bytes += b;
        lat.extend(l);
        start = start.min(began);
        end = end.max(finished);
    }
    let seconds = (end.saturating_sub(start)) as f64 / 1e9;
    let ops = lat.len() as u64;
    Ok(report(bytes, ops, seconds, lat))
}

/// What a store benchmark's clients share: the clock, the start line
/// and the run's key prefix.
#[derive(Clone)]
struct Shared {
    clock: MonotonicClock,
    ready: Arc<tokio::sync::Barrier>,
    start_at: Arc<AtomicU64>,
    run: u64,
    opts: PutOptions,
}

/// One store-benchmark client: connects and opens the segments, waits for
/// the others, then puts or gets until the deadline. Returns the bytes
/// moved, the latencies, and when it started and finished.
async fn store_client(
    b: StoreBench,
    s: Shared,
    t: usize,
    buf: Buffer,
) -> Result<(u64, Vec<u64>, u64, u64), String> {
    let connected = async {
        let mut c = StoreClient::connect(b.client.clone())
            .await
            .map_err(|e| e.to_string())?;
        c.open_segments()
            .await
            .map_err(|e| format!("opening the segments: {e}"))?;
        Ok::<_, String>(c)
    }
    .await;
    // Everyone reaches the start line, even a client that failed, so that
    // the others do not wait for it forever; the last one there sets it.
    if s.ready.wait().await.is_leader() {
        s.start_at.store(s.clock.now().0, Ordering::Release);
    }
    s.ready.wait().await;
    let mut c = connected?;
    let start = s.start_at.load(Ordering::Acquire);
    let deadline = start + b.duration.as_nanos() as u64;
    let (run, clock) = (s.run, s.clock);
    let mut lat = Vec::new();
    let mut i = t;
    let mut bytes = 0u64;
    let mut written = Vec::new();
    while clock.now().0 < deadline {
        let t0 = clock.now().0;
        match b.op {
            StoreOp::Put => {
                let key = format!("bench-{run:x}-{t}-{i}");
                match c.put_from(&key, &buf, &s.opts).await {
                    Ok(()) => written.push(key),
                    // Full: make room by removing what this client wrote.
                    Err(ErrorCode::NoAvailableHandle) => {
                        for k in written.drain(..) {
                            let _ = c.remove(&k, true).await;
                        }
                        continue;
                    }
                    Err(e) => return Err(format!("put: {e}")),
                }
                bytes += b.value_size;
            }
            StoreOp::Get => {
                let key = format!("bench-{run:x}-{}", i % b.keys);
                c.get_into(&key, &buf)
                    .await
                    .map_err(|e| format!("get: {e}"))?;
                bytes += b.value_size;
            }
            StoreOp::Exist => {
                let key = format!("bench-{run:x}-missing");
                if c.exist(&key).await.map_err(|e| format!("exist: {e}"))? {
                    return Err(format!("exist: {key} is there"));
                }
            }
        }
        lat.push(clock.now().0 - t0);
        i += b.clients;
    }
    // The clock stops with the last operation: the clean-up below is not
    // part of the measurement.
    let finished = clock.now().0;
    for k in written {
        let _ = c.remove(&k, true).await;
    }
    Ok((bytes, lat, start, finished))
}

/// One SSD-tier benchmark, shaped like `fio --direct=1 --rw=read|write
/// --bs=B --iodepth=D`: `depth` requests of `block_size` bytes kept in
/// flight over a file of `file_size`, sequential per request stream.
#[derive(Clone, Debug)]
pub struct SsdBench {
    pub path: std::path::PathBuf,
    pub file_size: u64,
    pub block_size: u64,
    pub depth: usize,
    pub write: bool,
    pub duration: Duration,
    pub io_uring: bool,
}

/// Runs `b`; the file is written through once first when reading (as fio
/// lays out its file).
pub async fn ssd(b: &SsdBench) -> Result<(BenchReport, crate::ssd::IoEngine), String> {
    use crate::ssd::{SsdFile, BLOCK};
    if b.block_size == 0 || !b.block_size.is_multiple_of(BLOCK) || b.depth == 0 {
        return Err(format!(
            "the block size must be a positive multiple of {BLOCK} and the depth positive"
        ));
    }
    let blocks = b.file_size / b.block_size;
    if blocks < b.depth as u64 {
        return Err("the file must hold at least one block per request in flight".into());
    }
    let file = Arc::new(
        SsdFile::open(&b.path, blocks * b.block_size, b.io_uring, b.depth as u32)
            .map_err(|e| e.to_string())?,
    );
    let engine = file.engine();
    let bufs: Vec<Arc<Region>> = (0..b.depth)
        .map(|_| Region::new(b.block_size as usize).map(Arc::new))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    for (i, buf) in bufs.iter().enumerate() {
        buf.write_at(0, &vec![(i % 251) as u8 + 1; b.block_size as usize])
            .map_err(|e| e.to_string())?;
    }
    if !b.write {
        for k in 0..blocks {
            file.write(k * b.block_size, &bufs[0], 0, b.block_size)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    let clock = MonotonicClock::new();
    let deadline = clock.now().0 + b.duration.as_nanos() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    for (t, buf) in bufs.into_iter().enumerate() {
        let (file, b) = (file.clone(), b.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut k = t as u64;
            while clock.now().0 < deadline {
                let off = (k % blocks) * b.block_size;
                let t0 = clock.now().0;
                if b.write {
                    file.write(off, &buf, 0, b.block_size).await
                } else {
                    file.read(off, &buf, 0, b.block_size).await
                }
                .map_err(|e| e.to_string())?;
                lat.push(clock.now().0 - t0);
                k += b.depth as u64;
            }
            Ok::<_, String>(lat)
        });
    }
    let start = clock.now().0;
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r.map_err(|e| e.to_string())??);
    }
    let seconds = clock.now().0.saturating_sub(start) as f64 / 1e9;
    let ops = lat.len() as u64;
    Ok((report(ops * b.block_size, ops, seconds, lat), engine))
}
