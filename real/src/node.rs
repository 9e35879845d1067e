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
use crate::ssd::SsdFile;
use crate::transfer::tcp::{self as tcp, Backing};
use crate::transfer::Region;
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

/// The SSD tier of a store node: a file on the SSD.
#[derive(Clone, Debug)]
pub struct SsdConfig {
    pub path: std::path::PathBuf,
    pub size: u64,
    /// Use io_uring where the kernel allows it.
    pub io_uring: bool,
}

/// A store node's settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub master: MasterAddr,
    pub secret: Secret,
    /// The DRAM segment's name (unique in the cluster); the SSD segment is
    /// `<name>-ssd`.
    pub name: String,
    /// DRAM segment bytes.
    pub size: u64,
    /// An SSD segment beside the DRAM one.
    pub ssd: Option<SsdConfig>,
    /// Where the transfer engine listens (loopback unless given; the SSD
    /// segment's server takes the next free port on the same address).
    pub listen: SocketAddr,
    pub heartbeat: Duration,
}

/// What a running store node tells its caller once it is mounted.
#[derive(Clone, Debug)]
pub struct StoreReady {
    pub endpoint: SocketAddr,
    pub region: Arc<Region>,
    pub catalog: Arc<Mutex<Catalog>>,
    /// The SSD segment's endpoint, if there is one.
    pub ssd_endpoint: Option<SocketAddr>,
}

/// One segment a node contributes.
struct Side {
    desc: SegmentDesc,
    backing: Backing,
    catalog: Arc<Mutex<Catalog>>,
}

impl Side {
    fn report(&self) -> Vec<crate::master::ReportedObject> {
        let mut cat = self.catalog.lock();
        match &self.backing {
            Backing::Memory(r) => cat.report(r),
            Backing::File(f) => cat.report_verified(|n| {
                f.read_blocking(n.offset, n.size)
                    .is_ok_and(|b| crate::client::checksum(&b) == n.checksum)
            }),
        }
    }
}

struct Node {
    config: StoreConfig,
    id: ClientId,
    sides: Vec<Side>,
}

impl Node {
    /// Finds the master, connects, and mounts, reporting the catalogs.
    async fn connect_and_mount(&self) -> Result<MasterClient, String> {
        let addr = self.config.master.resolve().await?;
        let mut c = MasterClient::connect(&addr, &self.config.secret, self.id)
            .await
            .map_err(|e| e.to_string())?;
        self.mount(&mut c).await?;
        Ok(c)
    }

    async fn mount(&self, c: &mut MasterClient) -> Result<(), String> {
        for side in &self.sides {
            let report = side.report();
            let (_, rejected) = c
                .mount_segment(&side.desc, report)
                .await
                .map_err(|e| format!("mounting segment `{}`: {e}", side.desc.name))?;
            let mut cat = side.catalog.lock();
            for r in rejected {
                cat.release(r.object);
            }
        }
        Ok(())
    }

    fn released(&self, ids: &[u64]) {
        for side in &self.sides {
            let mut cat = side.catalog.lock();
            for &id in ids {
                cat.release(id);
            }
        }
    }
}

async fn serve_side(
    listen: SocketAddr,
    name: String,
    size: u64,
    tier: moonlab_core::store::Tier,
    backing: Backing,
    secret: &Secret,
    shutdown: &watch::Receiver<bool>,
) -> Result<
    (
        Side,
        SocketAddr,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ),
    String,
> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listening on {listen}: {e}"))?;
    let endpoint = listener.local_addr().map_err(|e| e.to_string())?;
    let catalog = Arc::new(Mutex::new(Catalog::new()));
    let mut stop = shutdown.clone();
    let task = tokio::spawn(tcp::serve_with_catalog(
        listener,
        backing.clone(),
        secret.clone(),
        Some(catalog.clone()),
        None,
        async move {
            let _ = stop.wait_for(|s| *s).await.map(|_| ());
        },
    ));
    let desc = SegmentDesc {
        name,
        endpoint: endpoint.to_string(),
        size,
        tier,
    };
    Ok((
        Side {
            desc,
            backing,
            catalog,
        },
        endpoint,
        task,
    ))
}

/// Runs a store node until `shutdown` changes to true; `ready` is sent once
/// its segments are mounted.
pub async fn run_store(
    config: StoreConfig,
    mut shutdown: watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<StoreReady>>,
) -> Result<(), String> {
    use moonlab_core::store::Tier;
    let region = Arc::new(
        Region::shared(config.size as usize, &config.name)
            .map_err(|e| format!("allocating the {}-byte segment: {e}", config.size))?,
    );
    let (mut dram, endpoint, dram_task) = serve_side(
        config.listen,
        config.name.clone(),
        config.size,
        Tier::Dram,
        Backing::Memory(region.clone()),
        &config.secret,
        &shutdown,
    )
    .await?;
    let catalog = dram.catalog.clone();
    // The same-host socket: clients on this host map the segment.
    let shm_path = std::env::temp_dir().join(format!(
        "moonlab-{}-{}-{:x}.sock",
        config.name,
        std::process::id(),
        crate::client::random_client_id().0 & 0xffff_ffff
    ));
    let _ = std::fs::remove_file(&shm_path);
    let shm_task = match tokio::net::UnixListener::bind(&shm_path) {
        Ok(listener) => {
            if let Some(ep) = crate::transfer::shm::endpoint(&shm_path) {
                dram.desc.endpoint = format!("{},{ep}", dram.desc.endpoint);
            }
            let mut stop = shutdown.clone();
            Some(tokio::spawn(crate::transfer::shm::serve(
                listener,
                region.clone(),
                config.secret.clone(),
                catalog.clone(),
                async move {
                    let _ = stop.wait_for(|s| *s).await.map(|_| ());
                },
            )))
        }
        // Without the socket, same-host clients use TCP like the rest.
        Err(_) => None,
    };
    let mut sides = vec![dram];
    let mut tasks = vec![dram_task];
    let mut ssd_endpoint = None;
    if let Some(ssd) = &config.ssd {
        let size = ssd.size / crate::ssd::BLOCK * crate::ssd::BLOCK;
        let file = SsdFile::open(&ssd.path, size, ssd.io_uring, 64)
            .map_err(|e| format!("the SSD tier at {}: {e}", ssd.path.display()))?;
        let listen = SocketAddr::new(config.listen.ip(), 0);
        let (side, ep, task) = serve_side(
            listen,
            format!("{}-ssd", config.name),
            size,
            Tier::Ssd,
            Backing::File(Arc::new(file)),
            &config.secret,
            &shutdown,
        )
        .await?;
        sides.push(side);
        tasks.push(task);
        ssd_endpoint = Some(ep);
    }
    // Membership in the metadata service, under the node's own lease.
    let membership = match &config.master {
        MasterAddr::Elected { meta, keys } => {
            let lease = meta.lease(MASTER_LEASE).await.map_err(|e| e.to_string())?;
            for side in &sides {
                meta.put(
                    &keys.node(&side.desc.name),
                    &side.desc.endpoint,
                    Some(&lease),
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Some(lease)
        }
        MasterAddr::Fixed(_) => None,
    };
    let node = Node {
        config: config.clone(),
        id: crate::client::random_client_id(),
        sides,
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
            catalog,
            ssd_endpoint,
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
                        node.released(&released);
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
    for side in &node.sides {
        let _ = master.unmount_segment(&side.desc.name).await;
    }
    drop(membership);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(t) = shm_task {
        let _ = t.await;
        let _ = std::fs::remove_file(&shm_path);
    }
    Ok(())
}
