//! The real backend's commands: `moonlab master` and `moonlab store` (the
//! processes), `moonlab cluster` (a master and store nodes on this machine,
//! as child processes), and `moonlab kv` (put, get, rm, ls, stat).
//!
//! Every process authenticates with the cluster secret, read from a file
//! (`--secret-file`); `moonlab cluster` makes one. Listeners bind to
//! loopback unless an address is given.

use crate::output::write_bytes_atomic;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use moonlab_core::eviction::PolicyKind;
use moonlab_core::store::scenario::{parse_duration, parse_size};
use moonlab_core::store::Watermarks;
use moonlab_core::types::Nanos;
use moonlab_real::client::{random_client_id, ClientConfig, StoreClient};
use moonlab_real::clock::{Clock, MonotonicClock};
use moonlab_real::etcd_server::EtcdServer;
use moonlab_real::master::{MasterConfig, PutOptions};
use moonlab_real::metadata::{Keys, Metadata};
use moonlab_real::node::{
    run_master, run_master_ha, run_store, MasterAddr, StoreConfig, HEARTBEAT,
};
use moonlab_real::rpc::Secret;
use moonlab_real::transfer::topology::Topology;
use serde::Deserialize;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process};
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Runs a node's task until SIGINT or SIGTERM: `on_ready` once the task
/// says it is up, the task's own error if it ends first; then tells it to
/// stop (the caller's runtime lets it finish).
pub(crate) async fn until_signal<R>(
    task: tokio::task::JoinHandle<Result<(), String>>,
    ready: tokio::sync::oneshot::Receiver<R>,
    stop: tokio::sync::watch::Sender<bool>,
    on_ready: impl FnOnce(R) -> Result<()>,
) -> Result<()> {
    tokio::select! {
        r = ready => {
            if let Ok(r) = r {
                on_ready(r)?;
            }
        }
        r = task => {
            return r.map_err(|e| anyhow!(e))?.map_err(|e| anyhow!(e));
        }
    }
    shutdown_signal().await;
    let _ = stop.send(true);
    Ok(())
}

pub(crate) fn read_secret(path: &Path) -> Result<Secret> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the cluster secret {}", path.display()))?;
    Secret::new(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

pub(crate) fn size_arg(flag: &str, s: &str) -> Result<u64> {
    parse_size(s).ok_or_else(|| anyhow!("{flag}: `{s}` is not a size such as 256MiB"))
}

/// The master's configuration file (YAML); every key is optional and
/// defaults to upstream Mooncake Store's compiled default.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MasterFile {
    /// Eviction policy of every segment (lru, fifo, lfu, sieve, s3fifo, arc, gdsf, prefix-aware).
    policy: Option<String>,
    high_watermark: Option<f64>,
    /// Fraction of capacity one eviction run frees (low = high − ratio).
    eviction_ratio: Option<f64>,
    lease: Option<String>,
    soft_pin: Option<String>,
    put_timeout: Option<String>,
    preempt_after: Option<String>,
    client_ttl: Option<String>,
    shards: Option<usize>,
    /// The lease policy: mooncake (leases on reads, soft pins) or none.
    lease_policy: Option<String>,
    /// Soft-pin an object once it has been read this many times (0: only
    /// when its put asks).
    soft_pin_after_reads: Option<u64>,
}

fn master_config(path: Option<&Path>) -> Result<MasterConfig> {
    let mut c = MasterConfig::default();
    let Some(path) = path else {
        return Ok(c);
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let f: MasterFile =
        serde_yaml_ng::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let dur = |key: &str, v: &Option<String>, into: &mut Nanos| -> Result<()> {
        if let Some(v) = v {
            *into = parse_duration(v).ok_or_else(|| {
                anyhow!(
                    "{}: {key}: `{v}` is not a duration such as 10s",
                    path.display()
                )
            })?;
        }
        Ok(())
    };
    if let Some(p) = &f.policy {
        c.policy = PolicyKind::parse(p).map_err(|e| anyhow!("{}: policy: {e}", path.display()))?;
    }
    let high = f.high_watermark.unwrap_or(c.watermarks.high);
    c.watermarks = match f.eviction_ratio {
        Some(r) => Watermarks::from_ratio(high, r),
        None => Watermarks {
            high,
            low: c.watermarks.low.min(high),
        },
    };
    dur("lease", &f.lease, &mut c.lease)?;
    dur("soft_pin", &f.soft_pin, &mut c.soft_pin)?;
    dur("put_timeout", &f.put_timeout, &mut c.put_timeout)?;
    dur("preempt_after", &f.preempt_after, &mut c.preempt_after)?;
    dur("client_ttl", &f.client_ttl, &mut c.client_ttl)?;
    if let Some(s) = f.shards {
        c.shards = s;
    }
    if let Some(p) = &f.lease_policy {
        c.lease_kind = moonlab_core::lease::LeaseKind::parse(p)
            .map_err(|e| anyhow!("{}: lease_policy: {e}", path.display()))?;
    }
    if let Some(n) = f.soft_pin_after_reads {
        c.hot_after_reads = n;
    }
    c.validate()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(c)
}

#[derive(Args)]
pub struct MasterArgs {
    /// Address to serve on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// File holding the cluster secret.
    #[arg(long)]
    secret_file: PathBuf,
    /// Master configuration (YAML: policy, high_watermark, eviction_ratio,
    /// lease, soft_pin, put_timeout, preempt_after, client_ttl, shards,
    /// lease_policy, soft_pin_after_reads).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the address actually bound here (for port 0).
    #[arg(long)]
    addr_file: Option<PathBuf>,
    #[command(flatten)]
    ha: MetadataArgs,
    /// With --metadata: the election lease in seconds (a standby takes
    /// over within about twice this after the leader dies).
    #[arg(long, default_value_t = 5.0)]
    lease_ttl: f64,
}

/// Where the metadata service is (for multi-node clusters and failover).
#[derive(Args, Clone)]
pub struct MetadataArgs {
    /// `etcd://host:port[,host:port…]`: masters elect a leader there and
    /// nodes and clients find it there.
    #[arg(long, env = "MOONLAB_METADATA")]
    metadata: Option<String>,
    /// The cluster's name in the metadata service.
    #[arg(long, default_value = "moonlab", env = "MOONLAB_CLUSTER_ID")]
    cluster_id: String,
}

impl MetadataArgs {
    async fn connect(&self) -> Result<Option<(Arc<dyn Metadata>, Keys)>> {
        match &self.metadata {
            None => Ok(None),
            Some(url) => {
                if url == "inproc" {
                    bail!("--metadata inproc: an in-process service cannot be shared between processes; give etcd://host:port");
                }
                let meta = moonlab_real::metadata::connect(url)
                    .await
                    .map_err(|e| anyhow!("--metadata: {e}"))?;
                Ok(Some((meta, Keys::new(&self.cluster_id))))
            }
        }
    }
}

pub fn master(a: MasterArgs) -> Result<()> {
    let config = master_config(a.config.as_deref())?;
    let secret = read_secret(&a.secret_file)?;
    let rt = runtime()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(a.listen)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.local_addr()?;
        if let Some(f) = &a.addr_file {
            write_bytes_atomic(f, addr.to_string().as_bytes())?;
        }
        eprintln!(
            "moonlab master: listening on {addr} (policy {}, {} shards)",
            config.policy.name(),
            config.shards
        );
        match a.ha.connect().await? {
            None => run_master(config, secret, listener, shutdown_signal())
                .await
                .map_err(|e| anyhow!(e)),
            Some((meta, keys)) => {
                eprintln!(
                    "moonlab master: campaigning at {} (lease {} s)",
                    keys.master(),
                    a.lease_ttl
                );
                let ttl = seconds("--lease-ttl", a.lease_ttl)?;
                run_master_ha(config, secret, listener, meta, keys, ttl, shutdown_signal())
                    .await
                    .map_err(|e| anyhow!(e))
            }
        }
    })
}

#[derive(Args)]
pub struct StoreArgs {
    /// The master's address (or find the elected one with --metadata).
    #[arg(long)]
    master: Option<String>,
    #[command(flatten)]
    ha: MetadataArgs,
    #[arg(long)]
    secret_file: PathBuf,
    /// The segment's name (unique in the cluster).
    #[arg(long)]
    name: String,
    /// DRAM segment size.
    #[arg(long, default_value = "256MiB")]
    size: String,
    /// Where the transfer engine listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A file on an SSD for the node's SSD segment (`<name>-ssd`).
    #[arg(long)]
    ssd_file: Option<PathBuf>,
    #[arg(long, default_value = "1GiB")]
    ssd_size: String,
    /// Use pread/pwrite instead of io_uring for the SSD segment.
    #[arg(long)]
    no_io_uring: bool,
}

pub fn store(a: StoreArgs) -> Result<()> {
    let size = size_arg("--size", &a.size)?;
    let ssd = match &a.ssd_file {
        Some(p) => Some(moonlab_real::node::SsdConfig {
            path: p.clone(),
            size: size_arg("--ssd-size", &a.ssd_size)?,
            io_uring: !a.no_io_uring,
        }),
        None => None,
    };
    let secret = read_secret(&a.secret_file)?;
    let rt = runtime()?;
    rt.block_on(async {
        let master = match (a.master, a.ha.connect().await?) {
            (Some(m), None) => MasterAddr::Fixed(m),
            (None, Some((meta, keys))) => MasterAddr::Elected { meta, keys },
            _ => bail!("give --master ADDR or --metadata etcd://…, one of them"),
        };
        let config = StoreConfig {
            master,
            secret,
            name: a.name,
            size,
            ssd,
            listen: a.listen,
            heartbeat: HEARTBEAT,
        };
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let name = config.name.clone();
        let node = tokio::spawn(run_store(config, rx, Some(ready_tx)));
        until_signal(node, ready_rx, stop, |r| {
            eprintln!(
                "moonlab store {name}: {size} bytes mounted, transfer engine on {}",
                r.endpoint
            );
            Ok(())
        })
        .await
    })?;
    // Let the node unmount (it does so when told to stop).
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// Where `moonlab cluster` keeps a cluster's address and secret.
const ADDR_FILE: &str = "master.addr";
const SECRET_FILE: &str = "secret";
/// A cluster started with --etcd: its metadata service's URL.
const METADATA_FILE: &str = "metadata";

#[derive(Args)]
pub struct ClusterArgs {
    /// Folder for the cluster's address, secret, logs and pid files.
    #[arg(long, default_value = "moonlab-cluster")]
    dir: PathBuf,
    /// Store nodes to start.
    #[arg(long, default_value_t = 2)]
    stores: u32,
    /// Each store node's DRAM segment.
    #[arg(long, default_value = "256MiB")]
    store_size: String,
    /// The master's configuration (YAML, as `moonlab master --config`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The master's address (without --etcd).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Run a private etcd (in DIR/etcd) as the metadata service: masters
    /// elect a leader there, store nodes and clients find it there.
    #[arg(long)]
    etcd: bool,
    /// Masters to start (more than one needs --etcd: the others are
    /// standbys that take over when the leader dies).
    #[arg(long, default_value_t = 1)]
    masters: u32,
    /// With --etcd: the masters' election lease in seconds.
    #[arg(long, default_value_t = 5.0)]
    lease_ttl: f64,
    /// Give each store node an SSD segment of this size, in a file in DIR
    /// (O_DIRECT: DIR must be on a disk, not tmpfs).
    #[arg(long)]
    ssd_size: Option<String>,
}

pub(crate) fn terminate(children: &mut [(String, Child)]) {
    for (_, c) in children.iter() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
    }
    let clock = MonotonicClock::new();
    for (_, c) in children.iter_mut() {
        while clock.now() < Nanos::from_secs(10) {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits up to 20 s for `path` to appear (a child writing its address).
pub(crate) fn wait_for_file(
    path: &Path,
    child: &mut (String, Child),
    dir: &Path,
) -> Result<String> {
    let started = MonotonicClock::new();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return Ok(s);
        }
        if let Ok(Some(st)) = child.1.try_wait() {
            bail!(
                "{} exited ({st}); see {}",
                child.0,
                dir.join(format!("{}.log", child.0)).display()
            );
        }
        if started.now() > Nanos::from_secs(20) {
            bail!(
                "{} did not start within 20 s; see {}",
                child.0,
                dir.join(format!("{}.log", child.0)).display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn cluster(a: ClusterArgs) -> Result<()> {
    size_arg("--store-size", &a.store_size)?;
    if a.stores == 0 || a.stores > 64 {
        bail!("--stores: expected 1 to 64, got {}", a.stores);
    }
    if a.masters == 0 || a.masters > 8 || (a.masters > 1 && !a.etcd) {
        bail!(
            "--masters: expected 1 (or up to 8 with --etcd), got {}",
            a.masters
        );
    }
    seconds("--lease-ttl", a.lease_ttl)?;
    if let Some(s) = &a.ssd_size {
        size_arg("--ssd-size", s)?;
    }
    if let Some(c) = &a.config {
        master_config(Some(c))?;
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let dir = a.dir.canonicalize()?;
    let secret_path = dir.join(SECRET_FILE);
    let addr_path = dir.join(ADDR_FILE);
    let meta_path = dir.join(METADATA_FILE);
    let _ = std::fs::remove_file(&addr_path);
    let _ = std::fs::remove_file(&meta_path);
    let secret = format!("{:016x}{:016x}", random_client_id().0, random_client_id().0);
    write_bytes_atomic(&secret_path, secret.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600))?;
    }
    let etcd = if a.etcd {
        let etcd_dir = dir.join("etcd");
        let _ = std::fs::remove_dir_all(&etcd_dir);
        let server = EtcdServer::start(&etcd_dir, false).map_err(|e| anyhow!("--etcd: {e}"))?;
        write_bytes_atomic(&meta_path, server.url().as_bytes())?;
        Some(server)
    } else {
        None
    };
    let exe = std::env::current_exe().context("finding the moonlab binary")?;
    let log = |name: &str| -> Result<std::fs::File> {
        std::fs::File::create(dir.join(format!("{name}.log")))
            .with_context(|| format!("creating {name}.log"))
    };
    let mut children: Vec<(String, Child)> = Vec::new();
    let started = (|| -> Result<String> {
        let mut first_addr = None;
        for m in 0..a.masters {
            let name = if a.masters == 1 {
                "master".to_string()
            } else {
                format!("master-{m}")
            };
            let file = if a.masters == 1 {
                addr_path.clone()
            } else {
                dir.join(format!("{name}.addr"))
            };
            let _ = std::fs::remove_file(&file);
            let mut p = Process::new(&exe);
            p.args(["master", "--listen", &a.listen.to_string(), "--secret-file"])
                .arg(&secret_path)
                .arg("--addr-file")
                .arg(&file)
                .stderr(log(&name)?);
            if let Some(c) = &a.config {
                p.arg("--config").arg(c);
            }
            if let Some(e) = &etcd {
                p.args([
                    "--metadata",
                    &e.url(),
                    "--lease-ttl",
                    &a.lease_ttl.to_string(),
                ]);
            }
            let child = p.spawn().with_context(|| format!("starting {name}"))?;
            write_bytes_atomic(
                &dir.join(format!("{name}.pid")),
                child.id().to_string().as_bytes(),
            )?;
            children.push((name.clone(), child));
            let last = children.len() - 1;
            let addr = wait_for_file(&file, &mut children[last], &dir)?;
            first_addr.get_or_insert(addr);
        }
        for i in 0..a.stores {
            let name = format!("store-{i}");
            let mut p = Process::new(&exe);
            p.args([
                "store",
                "--name",
                &name,
                "--size",
                &a.store_size,
                "--secret-file",
            ])
            .arg(&secret_path)
            .stderr(log(&name)?);
            match &etcd {
                Some(e) => p.args(["--metadata", &e.url()]),
                None => p.args(["--master", first_addr.as_deref().unwrap_or_default()]),
            };
            let child = p.spawn().with_context(|| format!("starting {name}"))?;
            write_bytes_atomic(
                &dir.join(format!("{name}.pid")),
                child.id().to_string().as_bytes(),
            )?;
            children.push((name.clone(), child));
        }
        Ok(first_addr.unwrap_or_default())
    })();
    let first_addr = match started {
        Ok(a) => a,
        Err(e) => {
            terminate(&mut children);
            return Err(e);
        }
    };
    let rt = runtime()?;
    let secret = Secret::new(&secret).map_err(|e| anyhow!(e))?;
    let want = a.stores as usize;
    let access = AccessArgs {
        cluster: Some(dir.clone()),
        master: None,
        secret_file: None,
        ha: MetadataArgs {
            metadata: None,
            cluster_id: "moonlab".into(),
        },
        nics: None,
        no_same_host: false,
        slice_size: None,
    };
    let mut up = false;
    for _ in 0..300 {
        // With etcd the first master must win its election and warm up.
        let addr = if etcd.is_some() {
            access.resolve().map(|(a, _)| a).ok()
        } else {
            Some(first_addr.clone())
        };
        if let Some(addr) = addr {
            let n = rt.block_on(async {
                match StoreClient::connect(ClientConfig::new(&addr, secret.clone())).await {
                    Ok(mut c) => c.stats().await.map(|(s, _)| s.len()).unwrap_or(0),
                    Err(_) => 0,
                }
            });
            if n >= want {
                up = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !up {
        terminate(&mut children);
        bail!(
            "the store nodes did not mount within 30 s; see the logs in {}",
            dir.display()
        );
    }
    match &etcd {
        Some(e) => println!(
            "moonlab cluster: {} master{} electing through etcd at {}, {} store nodes of {} each",
            a.masters,
            if a.masters == 1 { "" } else { "s" },
            e.endpoint,
            a.stores,
            a.store_size
        ),
        None => println!(
            "moonlab cluster: master at {first_addr}, {} store nodes of {} each",
            a.stores, a.store_size
        ),
    }
    println!(
        "  address and secret in {} (logs beside them)",
        dir.display()
    );
    println!(
        "  try: moonlab kv --cluster {} put hello --value world",
        dir.display()
    );
    println!("       moonlab kv --cluster {} get hello", dir.display());
    println!("  Ctrl-C stops the cluster.");
    let _ = std::io::stdout().flush();
    let died = rt.block_on(async {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = shutdown_signal() => return None,
                _ = every.tick() => {
                    let mut gone = Vec::new();
                    for (i, (name, c)) in children.iter_mut().enumerate() {
                        if let Ok(Some(st)) = c.try_wait() {
                            gone.push((i, format!("{name} exited ({st})")));
                        }
                    }
                    for (i, what) in gone.into_iter().rev() {
                        let name = children[i].0.clone();
                        let masters_left = children
                            .iter()
                            .enumerate()
                            .filter(|(j, (n, _))| *j != i && n.starts_with("master"))
                            .count();
                        if name.starts_with("master") && masters_left > 0 {
                            // A standby takes over: keep going.
                            eprintln!("moonlab cluster: {what}; a standby takes over");
                            children.remove(i);
                        } else {
                            return Some(what);
                        }
                    }
                }
            }
        }
    });
    // Store nodes first (they unmount), then the masters, then etcd.
    let (mut masters, mut stores): (Vec<_>, Vec<_>) = children
        .into_iter()
        .partition(|(n, _)| n.starts_with("master"));
    terminate(&mut stores);
    terminate(&mut masters);
    drop(etcd);
    let _ = std::fs::remove_file(&addr_path);
    let _ = std::fs::remove_file(&meta_path);
    match died {
        Some(what) => bail!("{what}; see the logs in {}", dir.display()),
        None => Ok(()),
    }
}

#[derive(Args)]
pub struct AccessArgs {
    /// A folder made by `moonlab cluster` (its master address and secret).
    #[arg(long, env = "MOONLAB_CLUSTER")]
    cluster: Option<PathBuf>,
    /// The master's address (instead of --cluster).
    #[arg(long, env = "MOONLAB_MASTER")]
    master: Option<String>,
    /// The cluster secret's file (instead of --cluster).
    #[arg(long, env = "MOONLAB_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Find the elected master in the metadata service (instead of
    /// --master).
    #[command(flatten)]
    ha: MetadataArgs,
    /// This host's NICs for the transfer engine, `name=addr[@numa],…`
    /// (default: loopback); slices are striped over those nearest the
    /// buffer.
    #[arg(long, env = "MOONLAB_NICS")]
    nics: Option<String>,
    /// Move bytes over the network even to store nodes on this host (no
    /// shared-memory path).
    #[arg(long)]
    no_same_host: bool,
    /// The slice size the transfer engine cuts requests into (default
    /// 1MiB): over TCP, a request's slices go over several connections at
    /// once; on the same-host path, several workers copy them.
    #[arg(long)]
    slice_size: Option<String>,
}

impl AccessArgs {
    /// The client configuration these flags describe.
    fn client(&self) -> Result<ClientConfig> {
        let (addr, secret) = self.resolve()?;
        let mut c = ClientConfig::new(&addr, secret);
        if let Some(n) = &self.nics {
            c.topology = Topology::parse(n).map_err(|e| anyhow!("--nics: {e}"))?;
        }
        c.same_host = !self.no_same_host;
        if let Some(s) = &self.slice_size {
            c.engine.slice_bytes = size_arg("--slice-size", s)?;
            if !(4096..=64 << 20).contains(&c.engine.slice_bytes) {
                bail!("--slice-size: `{s}`: expected 4KiB to 64MiB");
            }
        }
        Ok(c)
    }

    fn resolve(&self) -> Result<(String, Secret)> {
        let from_dir = self
            .cluster
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(METADATA_FILE)).ok());
        if let Some(url) = self.ha.metadata.clone().or(from_dir) {
            let secret = match (&self.secret_file, &self.cluster) {
                (Some(s), _) => read_secret(s)?,
                (None, Some(d)) => read_secret(&d.join(SECRET_FILE))?,
                (None, None) => bail!("--metadata needs --secret-file"),
            };
            let ha = MetadataArgs {
                metadata: Some(url.trim().to_string()),
                cluster_id: self.ha.cluster_id.clone(),
            };
            let addr = runtime()?.block_on(async {
                let (meta, keys) = ha
                    .connect()
                    .await?
                    .ok_or_else(|| anyhow!("no metadata service"))?;
                meta.leader(&keys.master())
                    .await
                    .map_err(|e| anyhow!("{e}"))?
                    .ok_or_else(|| anyhow!("no master is elected in {}", keys.master()))
            })?;
            return Ok((addr, secret));
        }
        let (addr, secret) = match (&self.cluster, &self.master, &self.secret_file) {
            (_, Some(m), Some(s)) => (m.clone(), read_secret(s)?),
            (Some(dir), m, s) => {
                let addr = match m {
                    Some(m) => m.clone(),
                    None => std::fs::read_to_string(dir.join(ADDR_FILE))
                        .with_context(|| format!("{}: no running cluster here (start one with `moonlab cluster --dir {}`)", dir.display(), dir.display()))?,
                };
                let secret = read_secret(s.as_deref().unwrap_or(&dir.join(SECRET_FILE)))?;
                (addr, secret)
            }
            _ => bail!(
                "say where the cluster is: --cluster DIR, or --master ADDR with --secret-file FILE"
            ),
        };
        Ok((addr.trim().to_string(), secret))
    }
}

#[derive(Args)]
pub struct KvArgs {
    #[command(flatten)]
    access: AccessArgs,
    #[command(subcommand)]
    command: KvCommand,
}

#[derive(Subcommand)]
pub enum KvCommand {
    /// Store an object (from FILE, `-` for stdin, or --value).
    Put {
        key: String,
        file: Option<PathBuf>,
        #[arg(long)]
        value: Option<String>,
        /// Replicas on distinct store nodes.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// Try this segment first.
        #[arg(long)]
        preferred: Option<String>,
        /// Keep the object out of the first eviction pass for the soft-pin time.
        #[arg(long)]
        soft_pin: bool,
    },
    /// Fetch an object (checksum verified) to stdout or a file.
    Get {
        key: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Remove an object (refused while leased unless --force).
    Rm {
        key: String,
        #[arg(long)]
        force: bool,
    },
    /// List objects by key prefix.
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// The segments, their use, and the object count.
    Stat,
}

pub fn kv(a: KvArgs) -> Result<()> {
    let config = a.access.client()?;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut c = StoreClient::connect(config)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        match a.command {
            KvCommand::Put {
                key,
                file,
                value,
                replicas,
                preferred,
                soft_pin,
            } => {
                let data = match (file, value) {
                    (Some(_), Some(_)) => bail!("give FILE or --value, not both"),
                    (None, Some(v)) => v.into_bytes(),
                    (Some(f), None) if f.as_os_str() == "-" => {
                        let mut v = Vec::new();
                        std::io::stdin().read_to_end(&mut v)?;
                        v
                    }
                    (Some(f), None) => {
                        std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?
                    }
                    (None, None) => bail!("give FILE (or - for stdin) or --value"),
                };
                let opts = PutOptions {
                    replicas,
                    preferred_segment: preferred,
                    soft_pin,
                    only_preferred: false,
                };
                c.put(&key, &data, &opts)
                    .await
                    .map_err(|e| anyhow!("put {key}: {e} (code {})", e.code()))?;
                eprintln!("stored {key}: {} bytes", data.len());
            }
            KvCommand::Get { key, output } => {
                let data = c
                    .get(&key)
                    .await
                    .map_err(|e| anyhow!("get {key}: {e} (code {})", e.code()))?;
                match output {
                    Some(p) => write_bytes_atomic(&p, &data)?,
                    None => std::io::stdout().write_all(&data)?,
                }
            }
            KvCommand::Rm { key, force } => {
                c.remove(&key, force)
                    .await
                    .map_err(|e| anyhow!("rm {key}: {e} (code {})", e.code()))?;
            }
            KvCommand::Ls { prefix, limit } => {
                let objs = c
                    .list(&prefix, limit)
                    .await
                    .map_err(|e| anyhow!("ls: {e}"))?;
                let mut out = String::new();
                for o in objs {
                    out.push_str(&format!(
                        "{}\t{}\t{} replica{}{}\n",
                        o.key,
                        o.size,
                        o.replicas,
                        if o.replicas == 1 { "" } else { "s" },
                        if o.committed { "" } else { "\t(being written)" }
                    ));
                }
                crate::output::emit(&out)?;
            }
            KvCommand::Stat => {
                let (segs, objects) = c.stats().await.map_err(|e| anyhow!("stat: {e}"))?;
                let mut out = format!("{objects} objects on {} segments\n", segs.len());
                for s in segs {
                    out.push_str(&format!(
                        "{}\t{}\t{} / {} bytes ({:.1} %)\t{} objects\n",
                        s.name,
                        s.endpoint,
                        s.used,
                        s.capacity,
                        100.0 * s.used as f64 / s.capacity.max(1) as f64,
                        s.objects
                    ));
                }
                crate::output::emit(&out)?;
            }
        }
        Ok(())
    })
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The transfer engine (upstream's transfer_engine_bench): batches of
    /// READ or WRITE requests from several threads for a duration.
    Te(TeBenchArgs),
    /// Store put/get throughput through the client library.
    Store(StoreBenchArgs),
    /// The SSD tier's direct I/O (O_DIRECT, io_uring), shaped like fio.
    Ssd(SsdBenchArgs),
}

#[derive(Args)]
pub struct SsdBenchArgs {
    /// The file to use (on the SSD; created and sized).
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value = "1GiB")]
    size: String,
    #[arg(long, default_value = "1MiB")]
    block_size: String,
    #[arg(long, default_value_t = 8)]
    iodepth: usize,
    /// read or write.
    #[arg(long, default_value = "read")]
    rw: String,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Use pread/pwrite on blocking threads instead of io_uring.
    #[arg(long)]
    no_io_uring: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct TeBenchArgs {
    /// read or write.
    #[arg(long, default_value = "write")]
    operation: String,
    #[arg(long, default_value = "64KiB")]
    block_size: String,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Slice size the engine cuts requests into.
    #[arg(long, default_value = "1MiB")]
    slice_size: String,
    /// TCP connections per path.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// This host's NICs, `name=addr[@numa],…` (default: loopback).
    #[arg(long, env = "MOONLAB_NICS")]
    nics: Option<String>,
    /// A running target (`moonlab store`'s transfer engine endpoint) with
    /// --secret-file; without it, a target runs in this process.
    #[arg(long)]
    target: Option<String>,
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Print one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct StoreBenchArgs {
    #[command(flatten)]
    access: AccessArgs,
    /// put, get, or exist (a missing key: one master round trip, no
    /// bytes).
    #[arg(long, default_value = "put")]
    op: String,
    #[arg(long, default_value = "1MiB")]
    value_size: String,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 1)]
    replicas: u32,
    /// Distinct keys a get cycles over.
    #[arg(long, default_value_t = 64)]
    keys: usize,
    /// Run all clients as tasks of one multi-threaded runtime (default:
    /// each client on a thread with its own event loop).
    #[arg(long)]
    shared_runtime: bool,
    #[arg(long)]
    json: bool,
}

fn seconds(flag: &str, s: f64) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
        bail!("{flag}: expected seconds in (0, 3600], got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

fn print_report(what: &str, r: &moonlab_real::bench::BenchReport, json: bool) {
    if json {
        println!(
            "{{\"bench\":\"{what}\",\"bytes\":{},\"seconds\":{:.6},\"gb_per_s\":{:.6},\"operations\":{},\"p50_us\":{:.1},\"p99_us\":{:.1}}}",
            r.bytes, r.seconds, r.gb_per_s, r.operations, r.p50_us, r.p99_us
        );
    } else {
        println!(
            "{what}: {:.3} GB/s ({} bytes in {:.2} s, {} operations; p50 {:.0} us, p99 {:.0} us)",
            r.gb_per_s, r.bytes, r.seconds, r.operations, r.p50_us, r.p99_us
        );
    }
}

pub fn bench(cmd: BenchCommand) -> Result<()> {
    let rt = runtime()?;
    match cmd {
        BenchCommand::Te(a) => {
            let operation = match a.operation.as_str() {
                "read" => moonlab_real::transfer::Opcode::Read,
                "write" => moonlab_real::transfer::Opcode::Write,
                o => bail!("--operation: `{o}`: expected read or write"),
            };
            let b = moonlab_real::bench::TeBench {
                operation,
                block_size: size_arg("--block-size", &a.block_size)?,
                batch_size: a.batch_size,
                threads: a.threads,
                duration: seconds("--duration", a.duration)?,
                engine: moonlab_real::transfer::EngineConfig {
                    slice_bytes: size_arg("--slice-size", &a.slice_size)?,
                    ..Default::default()
                },
                tcp: moonlab_real::transfer::tcp::TcpConfig {
                    conns_per_path: a.connections.clamp(1, 64),
                    ..Default::default()
                },
                topology: match &a.nics {
                    Some(n) => Topology::parse(n).map_err(|e| anyhow!("--nics: {e}"))?,
                    None => Topology::loopback(),
                },
            };
            let secret = match (&a.target, &a.secret_file) {
                (Some(_), Some(f)) => read_secret(f)?,
                (Some(_), None) => bail!("--target needs --secret-file"),
                (None, _) => Secret::new(&format!("{:032x}", random_client_id().0))
                    .map_err(|e| anyhow!(e))?,
            };
            let r = rt
                .block_on(moonlab_real::bench::transfer_engine(
                    &b,
                    a.target.as_deref(),
                    &secret,
                ))
                .map_err(|e| anyhow!(e))?;
            print_report(
                &format!(
                    "te {} block={} batch={} threads={}",
                    a.operation, a.block_size, a.batch_size, a.threads
                ),
                &r,
                a.json,
            );
        }
        BenchCommand::Ssd(a) => {
            let write = match a.rw.as_str() {
                "read" => false,
                "write" => true,
                o => bail!("--rw: `{o}`: expected read or write"),
            };
            let b = moonlab_real::bench::SsdBench {
                path: a.file.clone(),
                file_size: size_arg("--size", &a.size)?,
                block_size: size_arg("--block-size", &a.block_size)?,
                depth: a.iodepth.clamp(1, 1024),
                write,
                duration: seconds("--duration", a.duration)?,
                io_uring: !a.no_io_uring,
            };
            let (r, engine) = rt
                .block_on(moonlab_real::bench::ssd(&b))
                .map_err(|e| anyhow!("{}: {e}", a.file.display()))?;
            print_report(
                &format!(
                    "ssd {} block={} iodepth={} engine={engine:?}",
                    a.rw, a.block_size, a.iodepth
                ),
                &r,
                a.json,
            );
        }
        BenchCommand::Store(a) => {
            let client = a.access.client()?;
            use moonlab_real::bench::StoreOp;
            let op = match a.op.as_str() {
                "put" => StoreOp::Put,
                "get" => StoreOp::Get,
                "exist" => StoreOp::Exist,
                o => bail!("--op: `{o}`: expected put, get or exist"),
            };
            let b = moonlab_real::bench::StoreBench {
                op,
                value_size: size_arg("--value-size", &a.value_size)?,
                clients: a.clients.clamp(1, 256),
                duration: seconds("--duration", a.duration)?,
                replicas: a.replicas,
                keys: a.keys.max(1),
                client,
                shared_runtime: a.shared_runtime,
            };
            let r = rt
                .block_on(moonlab_real::bench::store(&b))
                .map_err(|e| anyhow!(e))?;
            print_report(
                &format!(
                    "store {} value={} clients={}",
                    a.op, a.value_size, a.clients
                ),
                &r,
                a.json,
            );
        }
    }
    Ok(())
}
