//! A whole cluster in one process on loopback: a master and two store
//! nodes (their own tasks, their own sockets), and clients. Round trips,
//! replicas, checksums (a corrupted replica is never served), heartbeats
//! (a silent node is unmounted after the TTL and reads go to the other
//! replica), a restarted master (nodes mount again), and the end-of-run
//! invariants checked from outside.

use moonlab_core::types::Nanos;
use moonlab_real::client::{Buffer, ClientConfig, StoreClient};
use moonlab_real::error::ErrorCode;
use moonlab_real::master::{MasterConfig, PutOptions};
use moonlab_real::node::{run_master, run_store, MasterAddr, StoreConfig, StoreReady};
use moonlab_real::rpc::Secret;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

const SECRET: &str = "cluster-test-secret-0001";

type Store = (
    StoreReady,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), String>>,
);

struct Cluster {
    master: String,
    stop_master: Option<oneshot::Sender<()>>,
    master_task: tokio::task::JoinHandle<Result<(), String>>,
    stores: Vec<Store>,
}

fn config(ttl: Duration) -> MasterConfig {
    MasterConfig {
        client_ttl: Nanos(ttl.as_nanos() as u64),
        ..MasterConfig::default()
    }
}

async fn start_master(
    listener: TcpListener,
    config: MasterConfig,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_master(
        config,
        Secret::new(SECRET).unwrap(),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    (tx, task)
}

async fn start_store(
    master: &str,
    name: &str,
    size: u64,
) -> (
    StoreReady,
    watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), String>>,
) {
    let (stop, rx) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let cfg = StoreConfig {
        master: MasterAddr::Fixed(master.to_string()),
        secret: Secret::new(SECRET).unwrap(),
        name: name.to_string(),
        size,
        ssd: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        heartbeat: Duration::from_millis(100),
    };
    let task = tokio::spawn(run_store(cfg, rx, Some(ready_tx)));
    let ready = ready_rx.await.expect("the store node mounted its segment");
    (ready, stop, task)
}

async fn cluster(ttl: Duration) -> Cluster {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = listener.local_addr().unwrap().to_string();
    let (stop_master, master_task) = start_master(listener, config(ttl)).await;
    let mut stores = Vec::new();
    for name in ["store-a", "store-b"] {
        stores.push(start_store(&master, name, 16 << 20).await);
    }
    Cluster {
        master,
        stop_master: Some(stop_master),
        master_task,
        stores,
    }
}

/// A client on the store nodes' host: it maps their segments.
async fn client(c: &Cluster) -> StoreClient {
    StoreClient::connect(ClientConfig::new(&c.master, Secret::new(SECRET).unwrap()))
        .await
        .unwrap()
}

/// A client that moves bytes over TCP, as one on another host would.
async fn tcp_client(c: &Cluster) -> StoreClient {
    let mut config = ClientConfig::new(&c.master, Secret::new(SECRET).unwrap());
    config.same_host = false;
    StoreClient::connect(config).await.unwrap()
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_replicas_and_batches_on_the_same_host() {
    let c = cluster(Duration::from_secs(10)).await;
    let mut cl = client(&c).await;
    // Both nodes' segments mapped ahead of the first operation.
    assert_eq!(cl.open_segments().await, Ok(2));
    round_trips(cl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_round_trip_with_replicas_and_batches_over_tcp() {
    let c = cluster(Duration::from_secs(10)).await;
    let cl = tcp_client(&c).await;
    round_trips(cl).await;
    // Bytes written over TCP read the same through the mapping.
    let mut local = client(&c).await;
    assert_eq!(local.get("obj-3").await.unwrap(), bytes(3, (3 << 20) + 5));
}

async fn round_trips(mut cl: StoreClient) {
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    // The last is over 4 MiB: a mapped read of it leaves the worker.
    for (i, len) in [1usize, 1000, 1 << 20, (3 << 20) + 5, (5 << 20) + 3]
        .into_iter()
        .enumerate()
    {
        let key = format!("obj-{i}");
        let data = bytes(i as u8, len);
        cl.put(&key, &data, &two).await.unwrap();
        assert_eq!(cl.get(&key).await.unwrap(), data, "{key}");
        let q = cl.query(&key).await.unwrap();
        assert_eq!(q.replicas.len(), 2);
        assert_ne!(q.replicas[0].segment, q.replicas[1].segment);
    }
    assert_eq!(
        cl.put("obj-0", b"x", &two).await,
        Err(ErrorCode::ObjectAlreadyExists)
    );
    // Batches.
    let items: Vec<(String, Buffer)> = (0..20)
        .map(|i| {
            (
                format!("batch-{i}"),
                Buffer::copy_of(&bytes(i, 4096 + i as usize)).unwrap(),
            )
        })
        .collect();
    let r = cl
        .batch_put_from(&items, &PutOptions::default())
        .await
        .unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    let keys: Vec<String> = items
        .iter()
        .map(|(k, _)| k.clone())
        .chain(["missing".to_string()])
        .collect();
    let got = cl.batch_get(&keys).await.unwrap();
    for (i, g) in got.iter().take(20).enumerate() {
        assert_eq!(g.as_ref().unwrap(), &bytes(i as u8, 4096 + i), "batch-{i}");
    }
    assert_eq!(got[20], Err(ErrorCode::ObjectNotFound));
    // Remove, list, stats.
    // Just read: leased, so only a forced remove goes through.
    assert_eq!(
        cl.remove("obj-1", false).await,
        Err(ErrorCode::ObjectHasLease)
    );
    cl.remove("obj-1", true).await.unwrap();
    assert!(!cl.exist("obj-1").await.unwrap());
    let listed = cl.list("obj-", 100).await.unwrap();
    let names: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(names, ["obj-0", "obj-2", "obj-3", "obj-4"]);
    let (segs, objects) = cl.stats().await.unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(objects, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_replica_is_never_served() {
    let c = cluster(Duration::from_secs(10)).await;
    let mut cl = client(&c).await;
    let data = bytes(7, 100_000);
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    cl.put("k", &data, &two).await.unwrap();
    let q = cl.query("k").await.unwrap();
    let region_of = |seg: &str| {
        c.stores
            .iter()
            .find(|s| {
                // The TCP endpoint, then the same-host socket's.
                let ep = &q
                    .replicas
                    .iter()
                    .find(|r| r.segment == seg)
                    .unwrap()
                    .endpoint;
                ep.split(',').next() == Some(&s.0.endpoint.to_string())
            })
            .unwrap()
            .0
            .region
            .clone()
    };
    // Flip one byte of the first replica: the read falls to the second.
    let first = region_of(&q.replicas[0].segment);
    let mut b = [0u8; 1];
    first.read_at(q.replicas[0].offset + 500, &mut b).unwrap();
    first
        .write_at(q.replicas[0].offset + 500, &[b[0] ^ 0x40])
        .unwrap();
    assert_eq!(cl.get("k").await.unwrap(), data);
    // Both replicas corrupted: an error, never wrong bytes.
    let second = region_of(&q.replicas[1].segment);
    second
        .write_at(q.replicas[1].offset + 99_999, &[0xAA ^ data[99_999]])
        .unwrap();
    assert_eq!(cl.get("k").await, Err(ErrorCode::ChecksumMismatch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_store_is_unmounted_after_the_ttl_and_reads_go_elsewhere() {
    let mut c = cluster(Duration::from_millis(600)).await;
    let mut cl = client(&c).await;
    let data = bytes(3, 50_000);
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    cl.put("both", &data, &two).await.unwrap();
    let only_a = PutOptions {
        preferred_segment: Some("store-a".into()),
        ..PutOptions::default()
    };
    cl.put("only-a", &data, &only_a).await.unwrap();
    // store-a stops heartbeating (its task dies; its bytes stay served).
    let (_, _, task) = c.stores.remove(0);
    task.abort();
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !cl.exist("only-a").await.unwrap() {
            gone = true;
            break;
        }
    }
    assert!(gone, "store-a's objects must be gone after its TTL");
    let (segs, _) = cl.stats().await.unwrap();
    assert_eq!(
        segs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["store-b"]
    );
    let q = cl.query("both").await.unwrap();
    assert_eq!(q.replicas.len(), 1);
    assert_eq!(q.replicas[0].segment, "store-b");
    assert_eq!(cl.get("both").await.unwrap(), data);
    // New puts land on the survivor.
    cl.put("new", &data, &two).await.unwrap();
    assert_eq!(cl.query("new").await.unwrap().replicas.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_nodes_mount_again_on_a_restarted_master() {
    let mut c = cluster(Duration::from_secs(10)).await;
    let mut cl = client(&c).await;
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    let data = bytes(5, 300_000);
    cl.put("before", &data, &two).await.unwrap();
    cl.put("removed", b"gone", &PutOptions::default())
        .await
        .unwrap();
    cl.remove("removed", false).await.unwrap();
    // Let a heartbeat carry the removal to the store node.
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Restart the master on the same address: it starts empty.
    let _ = c.stop_master.take().unwrap().send(());
    let _ = (&mut c.master_task).await;
    let listener = TcpListener::bind(&c.master).await.unwrap();
    let (stop, task) = start_master(listener, config(Duration::from_secs(10))).await;
    c.stop_master = Some(stop);
    c.master_task = task;
    let mut mounted = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Ok(mut cl2) =
            StoreClient::connect(ClientConfig::new(&c.master, Secret::new(SECRET).unwrap())).await
        else {
            continue;
        };
        if cl2.stats().await.map(|(s, _)| s.len()).unwrap_or(0) == 2 {
            mounted = true;
            cl = cl2;
            break;
        }
    }
    assert!(mounted, "both store nodes must mount again");
    // The store nodes reported what they hold: the new master adopted it,
    // both replicas, and nothing that had been removed.
    assert_eq!(cl.query("before").await.unwrap().replicas.len(), 2);
    assert_eq!(cl.get("before").await.unwrap(), data);
    assert!(!cl.exist("removed").await.unwrap());
    cl.put("after", b"world", &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(cl.get("after").await.unwrap(), b"world");
    // Stop everything cleanly: stores unmount.
    for (_, stop, task) in c.stores.drain(..) {
        let _ = stop.send(true);
        task.await.unwrap().unwrap();
    }
    assert_eq!(cl.stats().await.unwrap().0.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ssd_tier_holds_objects_through_direct_io_and_a_master_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = listener.local_addr().unwrap().to_string();
    let (stop_master, task) = start_master(listener, config(Duration::from_secs(10))).await;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (stop, rx) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let cfg = StoreConfig {
        master: MasterAddr::Fixed(master.clone()),
        secret: Secret::new(SECRET).unwrap(),
        name: "node".into(),
        size: 4 << 20,
        ssd: Some(moonlab_real::node::SsdConfig {
            path: dir.path().join("ssd"),
            size: 64 << 20,
            io_uring: true,
        }),
        listen: "127.0.0.1:0".parse().unwrap(),
        heartbeat: Duration::from_millis(100),
    };
    let node = tokio::spawn(run_store(cfg, rx, Some(ready_tx)));
    let ready = ready_rx.await.unwrap();
    assert!(ready.ssd_endpoint.is_some());
    let mut cl = StoreClient::connect(ClientConfig::new(&master, Secret::new(SECRET).unwrap()))
        .await
        .unwrap();
    let (segs, _) = cl.stats().await.unwrap();
    let names: Vec<&str> = segs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["node", "node-ssd"]);
    // On the SSD by preference: odd sizes, padded to whole blocks there.
    let on_ssd = PutOptions {
        preferred_segment: Some("node-ssd".into()),
        ..PutOptions::default()
    };
    let mut kept = Vec::new();
    for (i, len) in [1usize, 4095, 4097, 1 << 20, (3 << 20) + 7]
        .into_iter()
        .enumerate()
    {
        let data = bytes(i as u8, len);
        cl.put(&format!("ssd-{i}"), &data, &on_ssd).await.unwrap();
        let q = cl.query(&format!("ssd-{i}")).await.unwrap();
        assert_eq!(q.replicas[0].segment, "node-ssd");
        assert_eq!(q.replicas[0].offset % 4096, 0);
        assert_eq!(cl.get(&format!("ssd-{i}")).await.unwrap(), data, "ssd-{i}");
        kept.push(data);
    }
    let (segs, _) = cl.stats().await.unwrap();
    assert_eq!(
        segs[1].used,
        4096 + 4096 + 8192 + (1 << 20) + (3 << 20) + 4096,
        "whole blocks"
    );
    // Two replicas on one node: DRAM and SSD; reads prefer DRAM.
    let two = PutOptions {
        replicas: 2,
        ..PutOptions::default()
    };
    cl.put("both", &bytes(9, 10_000), &two).await.unwrap();
    let q = cl.query("both").await.unwrap();
    assert_eq!(q.replicas.len(), 2);
    // The master restarts: the SSD segment's catalog is verified from disk
    // and adopted.
    let _ = stop_master.send(());
    let _ = task.await;
    let listener = TcpListener::bind(&master).await.unwrap();
    let (stop_master, _task) = start_master(listener, config(Duration::from_secs(10))).await;
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(mut c) =
            StoreClient::connect(ClientConfig::new(&master, Secret::new(SECRET).unwrap())).await
        {
            if c.stats().await.map(|(_, n)| n).unwrap_or(0) == 6 {
                back = true;
                cl = c;
                break;
            }
        }
    }
    assert!(back, "all six objects adopted after the restart");
    for (i, data) in kept.iter().enumerate() {
        assert_eq!(
            &cl.get(&format!("ssd-{i}")).await.unwrap(),
            data,
            "ssd-{i} after restart"
        );
    }
    assert_eq!(cl.query("both").await.unwrap().replicas.len(), 2);
    let _ = stop.send(true);
    node.await.unwrap().unwrap();
    let _ = stop_master.send(());
}
