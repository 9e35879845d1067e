//! The processes of a cluster, as async functions the `moonlab` binary
//! runs: the master ([`run_master`], or [`run_master_ha`] with a standby
//! taking over through leader election) and a store node ([`run_store`]).
//!
//! A store node contributes one DRAM segment: a registered region served
//! by the transfer engine's TCP server, mounted on the master, kept alive
//! by a heartbeat every second. It keeps a catalog of what writers put in
//! its segment ([`Catalog`]), pruned by the objects the master reports
//! freed in its heartbeat replies. Whenever it mounts on a master that does
//! not know it (a standby that took over, a restarted master), it reports
//! the catalog's entries whose bytes still match their checksums, and the
//! master adopts them where they lie: no object that still has a live
//! replica is lost. After three failed heartbeats it finds the master again
//! (through the metadata service's election when there is one) and
//! mounts there. On shutdown it unmounts.

use crate::catalog::Catalog;
use crate::clock::MonotonicClock;
use crate::master::{ClientId, Master, MasterConfig, PingStatus, SegmentDesc};
use crate::metadata::{Keys, Metadata};
use crate::rpc::client::MasterClient;
use crate::rpc::server::{serve, MasterService};
use crate::rpc::Secret;
use crate::transfer::{tcp, Region};
use parking_lot::Mutex;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The master's heartbeat period for clients (upstream: 1 s).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Failed heartbeats before a node looks for the master again (upstream: 3).
pub const FAILED_PINGS_BEFORE_RECONNECT: u32 = 3;
/// The master's election lease (upstream: 5 s).
pub const MASTER_LEASE: Duration = Duration::from_secs(5);

/// A random id epoch for a master process, unless one was set, so that
/// its object ids differ from any earlier master's.
fn with_epoch(mut config: MasterConfig) -> MasterConfig {
    if config.id_epoch == 0 {
        config.id_epoch = (crate::client::random_client_id().0 >> 40) as u32 | 1;
    }
    config
}

/// Runs a master on `listener` until `shutdown`.
pub async fn run_master(
    config: MasterConfig,
    secret: Secret,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let master = Arc::new(Master::new(with_epoch(config))?);
    let service = MasterService::new(master, Arc::new(MonotonicClock::new()));
    serve(service, secret, listener, true, shutdown)
        .await
        .map_err(|e| format!("master: {e}"))
}

/// Runs a master that serves only while it leads the cluster's election
/// (upstream's HA mode): it campaigns with its address under a lease of
/// `lease_ttl`, waits one more TTL once elected (so a previous leader has
/// surely stopped), serves, and stops with an error if it loses the lease.
/// A standby starts with an empty table and rebuilds it from the store
/// nodes' reports as they mount again.
pub async fn run_master_ha(
    config: MasterConfig,
    secret: Secret,
    listener: TcpListener,
    meta: Arc<dyn Metadata>,
    keys: Keys,
    lease_ttl: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let addr = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let lease = meta.lease(lease_ttl).await.map_err(|e| e.to_string())?;
    let mut shutdown = Box::pin(shutdown);
    let election = keys.master();
    tokio::select! {
        r = meta.campaign(&election, &addr, &lease) => r.map_err(|e| e.to_string())?,
        _ = &mut shutdown => return Ok(()),
    }
    tokio::select! {
        _ = tokio::time::sleep(lease_ttl) => {}
        _ = lease.lost() => return Err("lost the election lease while warming up".into()),
        _ = &mut shutdown => return Ok(()),
    }
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = lost.clone();
    let master = Arc::new(Master::new(with_epoch(config))?);
    let service = MasterService::new(master, Arc::new(MonotonicClock::new()));
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = lease.lost() => flag.store(true, std::sync::atomic::Ordering::SeqCst),
        }
    };
    serve(service, secret, listener, true, stop)
        .await
        .map_err(|e| format!("master: {e}"))?;
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("lost the election lease: stepped down".into());
    }
    Ok(())
}

/// Where a node finds the master.
#[derive(Clone)]
pub enum MasterAddr {
    Fixed(String),
    /// The leader of the cluster's election in the metadata service.
    Elected {
        meta: Arc<dyn Metadata>,
        keys: Keys,
    },
}

impl std::fmt::Debug for MasterAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterAddr::Fixed(a) => write!(f, "{a}"),
            MasterAddr::Elected { keys, .. } => write!(f, "elected at {}", keys.master()),
        }
    }
}

impl MasterAddr {
    pub async fn resolve(&self) -> Result<String, String> {
        match self {
            MasterAddr::Fixed(a) => Ok(a.clone()),
            MasterAddr::Elected { meta, keys } => meta
                .leader(&keys.master())
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no master elected yet".to_string()),
        }
    }
}

/// A store node's settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub master: MasterAddr,
    pub secret: Secret,
    /// The segment's name (unique in the cluster).
    pub name: String,
    /// DRAM segment bytes.
    pub size: u64,
    /// Where the transfer engine listens (loopback unless given).
    pub listen: SocketAddr,
    pub heartbeat: Duration,
}

/// What a running store node tells its caller once it is mounted.
#[derive(Clone, Debug)]
pub struct StoreReady {
    pub endpoint: SocketAddr,
    pub region: Arc<Region>,
    pub catalog: Arc<Mutex<Catalog>>,
}

struct Node {
    config: StoreConfig,
    desc: SegmentDesc,
    id: ClientId,
    region: Arc<Region>,
    catalog: Arc<Mutex<Catalog>>,
}

impl Node {
    /// Finds the master, connects, and mounts, reporting the catalog.
    async fn connect_and_mount(&self) -> Result<MasterClient, String> {
        let addr = self.config.master.resolve().await?;
        let mut c = MasterClient::connect(&addr, &self.config.secret, self.id)
            .await
            .map_err(|e| e.to_string())?;
        self.mount(&mut c).await?;
        Ok(c)
    }

    async fn mount(&self, c: &mut MasterClient) -> Result<(), String> {
        let report = self.catalog.lock().report(&self.region);
        let (_, rejected) = c
            .mount_segment(&self.desc, report)
            .await
            .map_err(|e| format!("mounting segment `{}`: {e}", self.desc.name))?;
        let mut cat = self.catalog.lock();
        for r in rejected {
            cat.release(r.object);
        }
        Ok(())
    }
}

/// Runs a store node until `shutdown` changes to true; `ready` is sent once
/// the segment is mounted.
pub async fn run_store(
    config: StoreConfig,
    mut shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<StoreReady>>,
) -> Result<(), String> {
    let region = Arc::new(
        Region::new(config.size as usize)
            .map_err(|e| format!("allocating the {}-byte segment: {e}", config.size))?,
    );
    let catalog = Arc::new(Mutex::new(Catalog::new()));
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", config.listen))?;
    let endpoint = listener.local_addr().map_err(|e| e.to_string())?;
    let mut te_stop = shutdown.clone();
    let te = tokio::spawn(tcp::serve_with_catalog(
        listener,
        region.clone(),
        config.secret.clone(),
        Some(catalog.clone()),
        async move {
            let _ = te_stop.wait_for(|s| *s).await.map(|_| ());
        },
    ));
    let desc = SegmentDesc {
        name: config.name.clone(),
        endpoint: endpoint.to_string(),
        size: config.size,
    };
    // Membership in the metadata service, under the node's own lease.
    let membership = match &config.master {
        MasterAddr::Elected { meta, keys } => {
            let lease = meta.lease(MASTER_LEASE).await.map_err(|e| e.to_string())?;
            meta.put(&keys.node(&desc.name), &desc.endpoint, Some(&lease))
                .await
                .map_err(|e| e.to_string())?;
            Some(lease)
        }
        MasterAddr::Fixed(_) => None,
    };
    let node = Node {
        config: config.clone(),
        desc: desc.clone(),
        id: crate::client::random_client_id(),
        region: region.clone(),
        catalog: catalog.clone(),
    };
    // The master may still be starting (or being elected): try for a while.
    let mut master = None;
    let mut last = String::new();
    for _ in 0..150 {
        match node.connect_and_mount().await {
            Ok(c) => {
                master = Some(c);
                break;
            }
            Err(e) if e.contains("mounting") => return Err(e),
            Err(e) => {
                last = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let mut master = master.ok_or_else(|| format!("no master ({:?}): {last}", config.master))?;
    if let Some(r) = ready {
        let _ = r.send(StoreReady {
            endpoint,
            region: region.clone(),
            catalog: catalog.clone(),
        });
    }
    let mut every = tokio::time::interval(config.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = 0;
    loop {
        tokio::select! {
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
            _ = every.tick() => {
                match master.ping().await {
                    Ok((PingStatus::Ok, released)) => {
                        failed = 0;
                        let mut cat = catalog.lock();
                        for id in released {
                            cat.release(id);
                        }
                    }
                    Ok((PingStatus::NeedRemount, _)) => {
                        failed = 0;
                        let _ = node.mount(&mut master).await;
                    }
                    Err(_) => {
                        failed += 1;
                        if failed >= FAILED_PINGS_BEFORE_RECONNECT {
                            if let Ok(c) = node.connect_and_mount().await {
                                master = c;
                                failed = 0;
                            }
                        }
                    }
                }
            }
        }
    }
    let _ = master.unmount_segment(&desc.name).await;
    drop(membership);
    let _ = te.await;
    Ok(())
}
