//! The metadata service's contract, one body run on both implementations:
//! in-process, and a private etcd server started on loopback (etcd must be
//! installed: CI installs it; elsewhere set MOONLAB_SKIP_ETCD=1 to skip,
//! which the test says).

use moonlab_real::etcd_server::{etcd_available, EtcdServer};
use moonlab_real::metadata::{connect, InProcess, Keys, Metadata};
use std::sync::Arc;
use std::time::Duration;

async fn contract(meta: Arc<dyn Metadata>, what: &str) {
    let keys = Keys::new(&format!("test-{what}"));
    meta.put(&keys.node("a"), "127.0.0.1:1", None)
        .await
        .unwrap();
    meta.put(&keys.node("b"), "127.0.0.1:2", None)
        .await
        .unwrap();
    meta.put(&keys.segment("a"), "{}", None).await.unwrap();
    assert_eq!(
        meta.get(&keys.node("a")).await.unwrap().as_deref(),
        Some("127.0.0.1:1")
    );
    assert_eq!(meta.get(&keys.node("zz")).await.unwrap(), None);
    let nodes = meta.list(&keys.nodes()).await.unwrap();
    assert_eq!(
        nodes,
        vec![
            (keys.node("a"), "127.0.0.1:1".to_string()),
            (keys.node("b"), "127.0.0.1:2".to_string())
        ],
        "{what}: list is by prefix and sorted"
    );
    meta.delete(&keys.node("b")).await.unwrap();
    assert_eq!(meta.list(&keys.nodes()).await.unwrap().len(), 1);

    // A key under a lease goes with it.
    let lease = meta.lease(Duration::from_secs(2)).await.unwrap();
    meta.put(&keys.node("leased"), "x", Some(&lease))
        .await
        .unwrap();
    assert!(meta.get(&keys.node("leased")).await.unwrap().is_some());
    drop(lease);
    let mut gone = false;
    for _ in 0..60 {
        if meta.get(&keys.node("leased")).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "{what}: a revoked lease takes its keys");

    // Elections: one leader; the next takes over when it goes.
    let election = keys.master();
    assert_eq!(meta.leader(&election).await.unwrap(), None);
    let la = meta.lease(Duration::from_secs(2)).await.unwrap();
    meta.campaign(&election, "master-a", &la).await.unwrap();
    assert_eq!(
        meta.leader(&election).await.unwrap().as_deref(),
        Some("master-a")
    );
    let lb = meta.lease(Duration::from_secs(2)).await.unwrap();
    let m2 = meta.clone();
    let e2 = election.clone();
    let b = tokio::spawn(async move {
        m2.campaign(&e2, "master-b", &lb).await.unwrap();
        lb
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.is_finished(), "{what}: a second candidate waits");
    assert_eq!(
        meta.leader(&election).await.unwrap().as_deref(),
        Some("master-a")
    );
    drop(la);
    let lb = tokio::time::timeout(Duration::from_secs(10), b)
        .await
        .expect("the standby is elected once the leader's lease ends")
        .unwrap();
    assert_eq!(
        meta.leader(&election).await.unwrap().as_deref(),
        Some("master-b")
    );
    assert!(!lb.is_lost());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_metadata_keeps_the_contract() {
    contract(Arc::new(InProcess::new()), "inproc").await;
    assert!(connect("inproc").await.is_ok());
    let e = connect("zookeeper://x").await.err().unwrap();
    assert!(e.to_string().contains("expected inproc or etcd://"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_metadata_keeps_the_contract() {
    if !etcd_available() && std::env::var_os("MOONLAB_SKIP_ETCD").is_some() {
        eprintln!("SKIP: etcd is not installed and MOONLAB_SKIP_ETCD is set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = EtcdServer::start(&dir.path().join("etcd"), true).unwrap();
    let meta = connect(&server.url()).await.unwrap();
    contract(meta, "etcd").await;
}
