//! The store under concurrent load.
//!
//! - A bounded soak of the master (threads of writers, readers that hold
//!   leases, pinners, removers, and an eviction ticker, all on one shared
//!   clock): eviction never removes an object while a lease on it is valid
//!   or while it is pinned (in use), a pin never goes stale, and the
//!   master's own `check` holds throughout and `check_idle` at the end.
//!   `MOONLAB_SOAK_SECS` sets its length (2 s by default, so CI's time is
//!   bounded; the random interleavings of single operations are the
//!   property test in `master.rs`).
//! - Concurrent put, get and remove of one key through the client library,
//!   against a cluster in this process: as documented (README, "The real
//!   store"), a key has one writer at a time (`OBJECT_ALREADY_EXISTS` for
//!   the others), a reader sees nothing until the put ends and then the
//!   whole value of one writer, never a mix, or an error if a forced
//!   removal took the key from under the read; removal is refused while a
//!   read holds a lease (`OBJECT_HAS_LEASE`) unless forced.

use moonlab_core::types::Nanos;
use moonlab_real::client::{ClientConfig, StoreClient};
use moonlab_real::error::ErrorCode;
use moonlab_real::master::{ClientId, Master, MasterConfig, PutOptions, SegmentDesc};
use moonlab_real::node::{run_master, run_store, MasterAddr, StoreConfig};
use moonlab_real::rpc::Secret;
use moonlab_testkit::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn soak_secs() -> u64 {
    std::env::var("MOONLAB_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

#[test]
fn eviction_never_takes_a_leased_or_pinned_object_under_concurrent_load() {
    let config = MasterConfig {
        watermarks: moonlab_core::store::Watermarks {
            high: 0.6,
            low: 0.4,
        },
        lease: Nanos::from_millis(50),
        client_ttl: Nanos(u64::MAX),
        ..MasterConfig::default()
    };
    let m = Arc::new(Master::new(config).unwrap());
    for i in 0..3u64 {
        m.mount_segment(
            ClientId(100 + i),
            SegmentDesc {
                name: format!("s{i}"),
                endpoint: format!("127.0.0.1:{}", 9000 + i),
                size: 64 << 10,
                tier: moonlab_core::store::Tier::Dram,
            },
            Nanos::ZERO,
        )
        .unwrap();
    }
    // One clock for everyone, moved on by its own thread (a millisecond a
    // step, as fast as it can: leases of 50 "ms" start and end constantly).
    let now = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let counts = Arc::new(AtomicU64::new(0));
    let evicted = Arc::new(AtomicU64::new(0));
    let clock = |now: &AtomicU64| Nanos(now.load(Ordering::SeqCst));
    let mut threads = Vec::new();
    {
        let (now, stop) = (now.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                now.fetch_add(1_000_000, Ordering::SeqCst);
                std::thread::yield_now();
            }
        }));
    }
    // Writers: puts of random keys and sizes, one writer id each.
    for w in 0..2u64 {
        let (m, now, stop, counts) = (m.clone(), now.clone(), stop.clone(), counts.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9 + w);
            let me = ClientId(w + 1);
            while !stop.load(Ordering::SeqCst) {
                let key = format!("k{}", rng.below(64));
                let size = 512 + rng.below(4096);
                let opts = PutOptions {
                    replicas: 1 + rng.below(2) as u32,
                    ..PutOptions::default()
                };
                if m.put_start(me, &key, size, &opts, clock(&now)).is_ok() {
                    if rng.below(8) == 0 {
                        let _ = m.put_revoke(me, &key, clock(&now));
                    } else {
                        let _ = m.put_end(me, &key, None, clock(&now));
                    }
                }
                counts.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Readers: a read grants a lease; while it is valid the object must be
    // there, whatever the ticker evicts meanwhile.
    for r in 0..2u64 {
        let (m, now, stop, v, counts) = (
            m.clone(),
            now.clone(),
            stop.clone(),
            violations.clone(),
            counts.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0xC0FF_EE00 + r);
            while !stop.load(Ordering::SeqCst) {
                let key = format!("k{}", rng.below(64));
                let Ok(l) = m.get_replica_list(&key, clock(&now)) else {
                    continue;
                };
                for _ in 0..20 {
                    let readable = m.is_readable(&key);
                    let after = clock(&now);
                    if !readable && after < l.lease.until && m.lease_valid(&l.lease, after) {
                        v.lock().unwrap().push(format!(
                            "{key} left while its lease ran until {:?}",
                            l.lease.until
                        ));
                    }
                    std::thread::yield_now();
                }
                counts.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A pinner: an object in use (a transfer out of it) stays until unpinned.
    {
        let (m, now, stop, v, counts) = (
            m.clone(),
            now.clone(),
            stop.clone(),
            violations.clone(),
            counts.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0x5EED);
            while !stop.load(Ordering::SeqCst) {
                let key = format!("k{}", rng.below(64));
                let Ok(p) = m.pin(&key, clock(&now)) else {
                    continue;
                };
                for _ in 0..20 {
                    if !m.is_readable(&key) {
                        v.lock().unwrap().push(format!("{key} left while pinned"));
                    }
                    std::thread::yield_now();
                }
                if !m.unpin(p, clock(&now)) {
                    v.lock()
                        .unwrap()
                        .push(format!("the pin on {key} went stale"));
                }
                counts.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // A remover (never forced: a forced removal takes leased objects by
    // definition) and the eviction ticker, which also checks the master.
    {
        let (m, now, stop) = (m.clone(), now.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut rng = Rng(0xDEAD);
            while !stop.load(Ordering::SeqCst) {
                let _ = m.remove(&format!("k{}", rng.below(64)), false, clock(&now));
                std::thread::yield_now();
            }
        }));
    }
    {
        let (m, now, stop, v, evicted) = (
            m.clone(),
            now.clone(),
            stop.clone(),
            violations.clone(),
            evicted.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = m.tick(clock(&now));
                evicted.fetch_add(r.evicted, Ordering::Relaxed);
                if let Err(e) = m.check() {
                    v.lock().unwrap().push(format!("master check: {e}"));
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(soak_secs()));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a soak thread panicked");
    }
    let v = violations.lock().unwrap();
    assert!(v.is_empty(), "{} violations, first: {}", v.len(), v[0]);
    let (ops, evictions) = (
        counts.load(Ordering::Relaxed),
        evicted.load(Ordering::Relaxed),
    );
    eprintln!("soak: {ops} operations, {evictions} objects evicted");
    assert!(
        ops > 1000 && evictions > 100,
        "the soak did too little to mean anything: {ops} operations, {evictions} evictions"
    );
    // Everything released: nothing pinned or reserved is left behind.
    let end = Nanos(now.load(Ordering::SeqCst)).saturating_add(Nanos::from_secs(3600));
    m.tick(end);
    m.check_idle().unwrap();
}

const SECRET: &str = "concurrency-test-secret-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_put_get_remove_of_one_key_behave_as_documented() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = listener.local_addr().unwrap().to_string();
    let (stop_master, rx) = tokio::sync::oneshot::channel::<()>();
    // Short leases, so that removals find windows between reads.
    let master_task = tokio::spawn(run_master(
        MasterConfig {
            lease: Nanos::from_millis(20),
            ..MasterConfig::default()
        },
        Secret::new(SECRET).unwrap(),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    let (stop_store, srx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let store = tokio::spawn(run_store(
        StoreConfig {
            master: MasterAddr::Fixed(master.clone()),
            secret: Secret::new(SECRET).unwrap(),
            name: "s0".into(),
            size: 64 << 20,
            ssd: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            heartbeat: Duration::from_millis(100),
        },
        srx,
        Some(ready_tx),
    ));
    ready_rx.await.unwrap();
    let client = || async {
        let mut c = ClientConfig::new(&master, Secret::new(SECRET).unwrap());
        c.same_host = false;
        StoreClient::connect(c).await.unwrap()
    };
    // Each writer's value: 256 KiB of its own byte.
    const LEN: usize = 256 << 10;
    let value = |w: u8| vec![w; LEN];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for w in 1..=3u8 {
        let mut c = client().await;
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut busy) = (0u32, 0u32);
            while tokio::time::Instant::now() < deadline {
                match c.put("one", &value(w), &PutOptions::default()).await {
                    Ok(()) => ok += 1,
                    Err(ErrorCode::ObjectAlreadyExists) => busy += 1,
                    Err(e) => panic!("writer {w}: put failed with {e}"),
                }
            }
            (ok, busy)
        }));
    }
    let mut readers = Vec::new();
    for r in 0..2 {
        let mut c = client().await;
        readers.push(tokio::spawn(async move {
            let (mut whole, mut absent) = (0u32, 0u32);
            while tokio::time::Instant::now() < deadline {
                match c.get("one").await {
                    Ok(v) => {
                        assert_eq!(v.len(), LEN, "reader {r}: a value of the wrong length");
                        assert!(
                            (1..=3).contains(&v[0]) && v.iter().all(|&b| b == v[0]),
                            "reader {r}: a mix of writers' bytes"
                        );
                        whole += 1;
                    }
                    // Not there, or being replaced: never partial bytes.
                    Err(ErrorCode::ObjectNotFound | ErrorCode::ReplicaIsNotReady) => absent += 1,
                    // A read that outlived its lease fails (its bytes may
                    // have been replaced: the checksum says so).
                    Err(ErrorCode::LeaseExpired | ErrorCode::ChecksumMismatch) => absent += 1,
                    Err(e) => panic!("reader {r}: get failed with {e}"),
                }
            }
            (whole, absent)
        }));
    }
    let mut remover = client().await;
    let rm = tokio::spawn(async move {
        let (mut removed, mut leased) = (0u32, 0u32);
        let mut n = 0u32;
        while tokio::time::Instant::now() < deadline {
            // Every fourth removal is forced: it takes the key under a
            // reader's lease, while the reader may be copying it (and a
            // writer may reuse its space): the reader must then fail,
            // never return wrong bytes.
            n += 1;
            let force = n.is_multiple_of(4);
            match remover.remove("one", force).await {
                Ok(()) => removed += 1,
                Err(ErrorCode::ObjectHasLease) if !force => leased += 1,
                Err(ErrorCode::ObjectNotFound | ErrorCode::ReplicaIsNotReady) => {}
                Err(e) => panic!("remove failed with {e}"),
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (removed, leased)
    });
    let mut puts = 0;
    for t in tasks {
        let (ok, _) = t.await.unwrap();
        puts += ok;
    }
    let mut reads = 0;
    for t in readers {
        let (whole, _) = t.await.unwrap();
        reads += whole;
    }
    let (removed, _) = rm.await.unwrap();
    assert!(
        puts > 0 && reads > 0 && removed > 0,
        "puts {puts}, reads {reads}, removals {removed}"
    );
    // A forced removal takes the key even under a lease.
    let mut c = client().await;
    let _ = c.put("one", &value(1), &PutOptions::default()).await;
    let _ = c.get("one").await;
    assert_eq!(c.remove("one", false).await, Err(ErrorCode::ObjectHasLease));
    c.remove("one", true).await.unwrap();
    assert_eq!(c.get("one").await, Err(ErrorCode::ObjectNotFound));
    let _ = stop_store.send(true);
    let _ = store.await;
    let _ = stop_master.send(());
    let _ = master_task.await;
}
