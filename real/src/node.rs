//! The processes of a cluster, as async functions the `moonlab` binary
//! runs: the master ([`run_master`]) and a store node ([`run_store`]).
//!
//! A store node contributes one DRAM segment: a registered region served
//! by the transfer engine's TCP server, mounted on the master, kept alive
//! by a heartbeat every second. When the master answers a heartbeat with
//! `NeedRemount` (it restarted, or expired the node) the node mounts again;
//! after three failed heartbeats it reconnects. On shutdown it unmounts.

use crate::clock::MonotonicClock;
use crate::master::{Master, MasterConfig, PingStatus, SegmentDesc};
use crate::rpc::client::MasterClient;
use crate::rpc::server::{serve, MasterService};
use crate::rpc::Secret;
use crate::transfer::{tcp, Region};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The master's heartbeat period for clients (upstream: 1 s).
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Failed heartbeats before a node reconnects (upstream: 3).
pub const FAILED_PINGS_BEFORE_RECONNECT: u32 = 3;

/// Runs a master on `listener` until `shutdown`.
pub async fn run_master(
    config: MasterConfig,
    secret: Secret,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let master = Arc::new(Master::new(config)?);
    let service = MasterService::new(master, Arc::new(MonotonicClock::new()));
    serve(service, secret, listener, true, shutdown)
        .await
        .map_err(|e| format!("master: {e}"))
}

/// A store node's settings.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub master: String,
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
}

async fn connect_and_mount(
    config: &StoreConfig,
    desc: &SegmentDesc,
    id: crate::master::ClientId,
) -> Result<MasterClient, String> {
    let mut c = MasterClient::connect(&config.master, &config.secret, id)
        .await
        .map_err(|e| e.to_string())?;
    c.mount_segment(desc, Vec::new())
        .await
        .map_err(|e| format!("mounting segment `{}`: {e}", desc.name))?;
    Ok(c)
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
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("listening on {}: {e}", config.listen))?;
    let endpoint = listener.local_addr().map_err(|e| e.to_string())?;
    let mut te_stop = shutdown.clone();
    let te = tokio::spawn(tcp::serve(
        listener,
        region.clone(),
        config.secret.clone(),
        async move {
            let _ = te_stop.wait_for(|s| *s).await.map(|_| ());
        },
    ));
    let desc = SegmentDesc {
        name: config.name.clone(),
        endpoint: endpoint.to_string(),
        size: config.size,
    };
    let id = crate::client::random_client_id();
    // The master may still be starting: try for a while.
    let mut master = None;
    for _ in 0..50 {
        match connect_and_mount(&config, &desc, id).await {
            Ok(c) => {
                master = Some(c);
                break;
            }
            Err(e) if e.contains("connecting") => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(e) => return Err(e),
        }
    }
    let mut master = master.ok_or_else(|| format!("no master at {}", config.master))?;
    if let Some(r) = ready {
        let _ = r.send(StoreReady {
            endpoint,
            region: region.clone(),
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
                    Ok(PingStatus::Ok) => failed = 0,
                    Ok(PingStatus::NeedRemount) => {
                        failed = 0;
                        let _ = master.mount_segment(&desc, Vec::new()).await;
                    }
                    Err(_) => {
                        failed += 1;
                        if failed >= FAILED_PINGS_BEFORE_RECONNECT {
                            if let Ok(c) = connect_and_mount(&config, &desc, id).await {
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
    let _ = te.await;
    Ok(())
}
