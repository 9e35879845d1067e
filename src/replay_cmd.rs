//! `moonlab real …`: a trace replayed on the real store. `real replay` runs
//! the Conductor against a cluster of prefill and decode workers (its own
//! single-machine cluster, started and stopped around the run, or a running
//! one given with `--cluster`, such as the testbed's), and writes the same
//! run folder as `moonlab sim`. `real cluster` starts such a cluster and
//! keeps it up; `real worker` is one worker process (started by the other
//! two, or by `real/testbed/` inside a network namespace).
//!
//! The configuration is the simulator's (`moonlab config show`), with its
//! `real:` section saying how bytes are scaled; the same file runs in both.

use crate::output::{write_bytes_atomic, RunFolder};
use crate::real_cmd::{
    read_secret, runtime, shutdown_signal, terminate, until_signal, wait_for_file,
};
use crate::sim_cmd::{load_config, requests_table, RunFiles, TableFormat};
use crate::trace_cmd::InputArgs;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use moonlab_core::cost::CostModel;
use moonlab_core::metrics::{summarize, RequestRecord, Summary};
use moonlab_core::roles::RoleKind;
use moonlab_core::sched::{build_scheduler, SchedulerParams};
use moonlab_real::client::{random_client_id, ClientConfig};
use moonlab_real::node::MasterAddr;
use moonlab_real::replay::conductor::{replay, ReplayOutput, ReplayParams, ReplayTargets};
use moonlab_real::replay::worker::{run_worker, WorkerNode};
use moonlab_real::replay::{WorkerModel, WorkerRole};
use moonlab_sim::cluster::{ClusterConfig, Deployment, QueuePolicy, Resolved};
use moonlab_traces::read_all;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process};
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand)]
pub enum RealCommand {
    /// Replay a trace on a real cluster: the Conductor (core's scheduler)
    /// and prefill/decode workers that wait the cost model's time while
    /// storing, fetching, transferring and verifying real KV bytes.
    Replay(ReplayArgs),
    /// Start a replay cluster on this machine (a master, the
    /// configuration's prefill and decode workers) and keep it up until
    /// Ctrl-C; `real replay --cluster DIR` runs on it.
    Cluster(RealClusterArgs),
    /// One replay worker (started by `real replay`, `real cluster` or the
    /// testbed scripts).
    Worker(WorkerArgs),
    /// What a testbed needs of the configuration, as shell assignments:
    /// pool sizes, each node's NIC rate scaled by `real.bytes_scale` (bits
    /// per second), its store node's segment bytes.
    Plan(PlanArgs),
    /// The simulator's network model against transfers timed on a testbed
    /// (one flow, two sharing a link, incast).
    Netcheck(crate::netcheck_cmd::NetcheckArgs),
    /// Forward frames between two interfaces with a delay and a loss rate
    /// (the testbed's stand-in for netem where the kernel has none).
    Delayline(crate::delayline_cmd::DelayLineArgs),
}

#[derive(Args)]
pub struct PlanArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Also write the master's settings (`moonlab master --config`) here.
    #[arg(long)]
    master_yaml: Option<PathBuf>,
}

/// The configuration file and its overrides.
#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// Cluster configuration (YAML, as `moonlab sim`; its `real:` section
    /// scales bytes).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a configuration key (repeatable), as in `moonlab sim`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
}

#[derive(Args)]
pub struct ReplayArgs {
    #[arg(long)]
    trace: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
    /// The run folder to write (as `moonlab sim`'s).
    #[arg(long)]
    out: PathBuf,
    /// A running replay cluster's folder (`moonlab real cluster`, or the
    /// testbed's); without it the replay starts its own on this machine
    /// and stops it afterwards.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// Replay only the first N requests of the trace.
    #[arg(long)]
    requests: Option<usize>,
    #[arg(long, value_enum, default_value_t = TableFormat::Parquet)]
    table_format: TableFormat,
    /// Replace the run folder if it exists.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    input: InputArgs,
}

#[derive(Args)]
pub struct RealClusterArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Folder for the cluster's addresses, secret and logs.
    #[arg(long, default_value = "moonlab-replay-cluster")]
    dir: PathBuf,
    /// Run a private etcd (in DIR/etcd) where the masters elect a leader;
    /// store nodes, workers and the Conductor follow a failover.
    #[arg(long)]
    etcd: bool,
    /// Masters to start (more than one needs --etcd).
    #[arg(long, default_value_t = 1)]
    masters: u32,
    /// With --etcd: the masters' election lease in seconds.
    #[arg(long, default_value_t = 2.0)]
    lease_ttl: f64,
}

/// How a replay cluster's masters run.
struct Masters {
    count: u32,
    etcd: bool,
    lease_ttl: f64,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// prefill or decode.
    #[arg(long)]
    role: String,
    /// The worker's index in its pool.
    #[arg(long)]
    index: u32,
    #[command(flatten)]
    config: ConfigArgs,
    /// The master's address (or find the elected one with --metadata).
    #[arg(long)]
    master: Option<String>,
    /// `etcd://host:port`: the masters' election (the worker follows a
    /// failover).
    #[arg(long)]
    metadata: Option<String>,
    #[arg(long)]
    secret_file: PathBuf,
    /// Where the Conductor's calls arrive.
    #[arg(long, default_value = "127.0.0.1:0")]
    rpc_listen: SocketAddr,
    /// Write the RPC address actually bound here.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Map store segments on this host instead of using TCP (off: a
    /// replay's bytes cross the network as the model's do).
    #[arg(long)]
    same_host: bool,
}

/// The configuration a replay runs, checked for what the real backend
/// models.
pub fn replay_config(c: &ConfigArgs) -> Result<(ClusterConfig, Resolved)> {
    let (config, resolved) = load_config(Some(&c.config), &c.sets)?;
    let name = c.config.display();
    let unsupported = |key: &str, why: &str| {
        anyhow!("{name}: {key}: {why} (the real replay models disaggregated, static, single-node prefill instances with a DRAM cache)")
    };
    if config.deployment != Deployment::Disaggregated {
        return Err(unsupported("deployment", "expected disaggregated"));
    }
    if config.roles.policy != RoleKind::Static {
        return Err(unsupported("roles.policy", "expected static"));
    }
    if config.prefill.pipeline_nodes > 1 {
        return Err(unsupported("prefill.pipeline_nodes", "expected 1"));
    }
    if config.prefill.ssd_cache_blocks > 0 {
        return Err(unsupported("prefill.ssd_cache_blocks", "expected 0"));
    }
    if config.prefill.queue != QueuePolicy::Fifo {
        return Err(unsupported("prefill.queue", "expected fifo"));
    }
    if resolved.eviction.needs_future() {
        return Err(unsupported(
            "store.eviction",
            "an offline policy needs the trace's future, which a store does not have",
        ));
    }
    if config.prefill.instances == 0 || config.decode.instances == 0 {
        return Err(unsupported(
            "prefill.instances",
            "expected at least one of each",
        ));
    }
    Ok((config, resolved))
}

/// Real bytes per KV token: the model's, scaled (at least 1).
fn bytes_per_token(config: &ClusterConfig, r: &Resolved) -> u64 {
    ((r.prefill_cost.kv_bytes_per_token() as f64 * config.real.bytes_scale).ceil() as u64).max(1)
}

/// The DRAM segment of a worker's store node, in bytes.
pub fn segment_bytes(config: &ClusterConfig, r: &Resolved, role: WorkerRole) -> u64 {
    match role {
        WorkerRole::Prefill => prefill_segment_bytes(config, r),
        WorkerRole::Decode => decode_segment_bytes(config, r),
    }
}

/// A prefill worker's DRAM segment: its cache's blocks at the scaled size.
fn prefill_segment_bytes(config: &ClusterConfig, r: &Resolved) -> u64 {
    let bytes =
        config.prefill.dram_cache_blocks * config.block_tokens as u64 * bytes_per_token(config, r);
    bytes.max(1 << 20)
}

/// A decode worker's DRAM segment: room for its HBM's KV four times over
/// (requests' caches wait there until loaded), 64 MiB to 4 GiB.
fn decode_segment_bytes(config: &ClusterConfig, r: &Resolved) -> u64 {
    (4 * r.decode_kv_tokens * bytes_per_token(config, r)).clamp(64 << 20, 4 << 30)
}

fn worker_model(config: &ClusterConfig, r: &Resolved, role: WorkerRole, index: u32) -> WorkerModel {
    let (cost, node): (Arc<dyn CostModel>, _) = match role {
        WorkerRole::Prefill => (Arc::new(r.prefill_cost.node().clone()), &r.prefill_node),
        WorkerRole::Decode => (Arc::new(r.decode_cost.clone()), &r.decode_node),
    };
    WorkerModel {
        role,
        index,
        cost,
        block_tokens: config.block_tokens,
        chunk_tokens: config.prefill.chunk_tokens,
        bytes_per_token: bytes_per_token(config, r),
        h2d_bytes_per_s: node.h2d_bytes_per_s(),
        max_batch: config.decode.max_batch,
        kv_tokens: r.decode_kv_tokens,
    }
}

/// The master's settings from the configuration's `store:` section: the
/// eviction policy, watermarks and lease policy are the objects the
/// simulator builds from the same keys.
fn master_yaml(config: &ClusterConfig) -> String {
    let s = &config.store;
    format!(
        "policy: {}\nhigh_watermark: {}\neviction_ratio: {}\nlease: {}ms\nsoft_pin: {}ms\nlease_policy: {}\nsoft_pin_after_reads: {}\n",
        s.eviction,
        s.high_watermark,
        s.eviction_ratio,
        s.lease_s * 1e3,
        s.soft_pin_s * 1e3,
        s.lease_policy,
        s.soft_pin_after_reads
    )
}

pub fn plan(a: PlanArgs) -> Result<()> {
    let (config, r) = replay_config(&a.config)?;
    if let Some(f) = &a.master_yaml {
        write_bytes_atomic(f, master_yaml(&config).as_bytes())?;
    }
    let scale = config.real.bytes_scale;
    let bits = |bytes_per_s: f64| (bytes_per_s * 8.0 * scale).round() as u64;
    let text = format!(
        "prefill_instances={}\ndecode_instances={}\nprefill_bits_per_s={}\ndecode_bits_per_s={}\nprefill_segment_bytes={}\ndecode_segment_bytes={}\n",
        config.prefill.instances,
        config.decode.instances,
        bits(r.prefill_node.nic_bytes_per_s()),
        bits(r.decode_node.nic_bytes_per_s()),
        segment_bytes(&config, &r, WorkerRole::Prefill),
        segment_bytes(&config, &r, WorkerRole::Decode),
    );
    crate::output::emit(&text)
}

pub fn worker(a: WorkerArgs) -> Result<()> {
    let role = WorkerRole::parse(&a.role)
        .ok_or_else(|| anyhow!("--role: expected prefill or decode, got `{}`", a.role))?;
    let (config, resolved) = replay_config(&a.config)?;
    let pool = match role {
        WorkerRole::Prefill => config.prefill.instances,
        WorkerRole::Decode => config.decode.instances,
    };
    if a.index >= pool {
        bail!(
            "--index {}: the configuration has {pool} {} instances",
            a.index,
            role.name()
        );
    }
    let secret = read_secret(&a.secret_file)?;
    let model = worker_model(&config, &resolved, role, a.index);
    let rt = runtime()?;
    rt.block_on(async {
        let rpc = tokio::net::TcpListener::bind(a.rpc_listen)
            .await
            .with_context(|| format!("listening on {}", a.rpc_listen))?;
        let mut client = ClientConfig::new("", secret.clone());
        client.master = master_addr(a.master.as_deref(), a.metadata.as_deref()).await?;
        client.same_host = a.same_host;
        let node = WorkerNode {
            model,
            segment: role.segment(a.index),
            secret,
            client,
            rpc,
        };
        let (stop, rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let name = role.segment(a.index);
        let task = tokio::spawn(run_worker(node, rx, Some(ready_tx)));
        until_signal(task, ready_rx, stop, |addr| {
            if let Some(f) = &a.addr_file {
                write_bytes_atomic(f, addr.to_string().as_bytes())?;
            }
            eprintln!(
                "moonlab worker {name}: serving on {addr} (its segment is store node {name}'s)"
            );
            Ok(())
        })
        .await
    })?;
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// The master as flags give it: an address, or an etcd election.
async fn master_addr(master: Option<&str>, metadata: Option<&str>) -> Result<MasterAddr> {
    match (master, metadata) {
        (Some(m), None) => Ok(MasterAddr::Fixed(m.to_string())),
        (None, Some(url)) => {
            let meta = moonlab_real::metadata::connect(url)
                .await
                .map_err(|e| anyhow!("--metadata: {e}"))?;
            Ok(MasterAddr::Elected {
                meta,
                keys: moonlab_real::metadata::Keys::new(CLUSTER_ID),
            })
        }
        _ => bail!("give --master ADDR or --metadata etcd://…, one of them"),
    }
}

/// The cluster's name in the metadata service (as `moonlab master`'s
/// default).
const CLUSTER_ID: &str = "moonlab";

/// Where a replay cluster's folder keeps things.
const MASTER_ADDR: &str = "master.addr";
const SECRET: &str = "secret";
const WORKERS: &str = "workers";
/// A cluster with elected masters: its etcd's URL.
const METADATA: &str = "metadata";

/// A replay cluster started on this machine (stopped when dropped).
struct LocalCluster {
    children: Vec<(String, Child)>,
    /// Its private etcd, stopped after the processes.
    etcd: Option<moonlab_real::etcd_server::EtcdServer>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        terminate(&mut self.children);
        self.etcd.take();
    }
}

/// Starts a master and the configuration's workers as child processes,
/// writing the folder a replay reads (`master.addr`, `secret`, `workers`).
fn start_cluster(
    dir: &Path,
    c: &ConfigArgs,
    config: &ClusterConfig,
    resolved: &Resolved,
    masters: &Masters,
) -> Result<LocalCluster> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    for f in [MASTER_ADDR, WORKERS, METADATA] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let secret = format!("{:016x}{:016x}", random_client_id().0, random_client_id().0);
    let secret_path = dir.join(SECRET);
    write_bytes_atomic(&secret_path, secret.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600))?;
    }
    let master_cfg = dir.join("master.yaml");
    write_bytes_atomic(&master_cfg, master_yaml(config).as_bytes())?;
    let config_path = c
        .config
        .canonicalize()
        .with_context(|| format!("{}: cannot read", c.config.display()))?;
    let exe = std::env::current_exe().context("finding the moonlab binary")?;
    let log = |name: &str| -> Result<std::fs::File> {
        std::fs::File::create(dir.join(format!("{name}.log")))
            .with_context(|| format!("creating {name}.log"))
    };
    let mut cluster = LocalCluster {
        children: Vec::new(),
        etcd: None,
    };
    if masters.etcd {
        let etcd_dir = dir.join("etcd");
        let _ = std::fs::remove_dir_all(&etcd_dir);
        let server = moonlab_real::etcd_server::EtcdServer::start(&etcd_dir, false)
            .map_err(|e| anyhow!("--etcd: {e}"))?;
        cluster.etcd = Some(server);
    }
    let url = cluster.etcd.as_ref().map(|e| e.url());
    let mut master = String::new();
    for m in 0..masters.count {
        let name = if masters.count == 1 {
            "master".to_string()
        } else {
            format!("master-{m}")
        };
        let addr_path = dir.join(format!("{name}.addr"));
        let _ = std::fs::remove_file(&addr_path);
        let mut p = Process::new(&exe);
        p.args(["master", "--listen", "127.0.0.1:0", "--secret-file"])
            .arg(&secret_path)
            .arg("--addr-file")
            .arg(&addr_path)
            .arg("--config")
            .arg(&master_cfg)
            .stderr(log(&name)?);
        if let Some(url) = &url {
            p.args(["--metadata", url, "--lease-ttl"])
                .arg(masters.lease_ttl.to_string());
        }
        let child = p.spawn().with_context(|| format!("starting {name}"))?;
        write_bytes_atomic(
            &dir.join(format!("{name}.pid")),
            child.id().to_string().as_bytes(),
        )?;
        cluster.children.push((name, child));
        let last = cluster.children.len() - 1;
        let addr = wait_for_file(&addr_path, &mut cluster.children[last], &dir)?;
        if m == 0 {
            master = addr;
        }
    }
    // How the others find the master: its address, or the election.
    let find: Vec<String> = match &url {
        Some(url) => vec!["--metadata".into(), url.clone()],
        None => vec!["--master".into(), master.clone()],
    };
    let mut workers = String::new();
    let pools = [
        (WorkerRole::Prefill, config.prefill.instances),
        (WorkerRole::Decode, config.decode.instances),
    ];
    let mut files = Vec::new();
    for (role, n) in pools {
        for k in 0..n {
            let name = role.segment(k);
            let file = dir.join(format!("{name}.addr"));
            let _ = std::fs::remove_file(&file);
            // The worker's store node: its DRAM segment, a process of its own.
            let store = format!("{name}-store");
            let mut p = Process::new(&exe);
            p.args(["store", "--name", &name, "--size"])
                .arg(segment_bytes(config, resolved, role).to_string())
                .args(&find)
                .arg("--secret-file")
                .arg(&secret_path)
                .stderr(log(&store)?);
            let child = p.spawn().with_context(|| format!("starting {store}"))?;
            write_bytes_atomic(
                &dir.join(format!("{store}.pid")),
                child.id().to_string().as_bytes(),
            )?;
            cluster.children.push((store, child));
            let mut p = Process::new(&exe);
            p.args(["real", "worker", "--role", role.name(), "--index"])
                .arg(k.to_string())
                .arg("--config")
                .arg(&config_path)
                .args(&find)
                .arg("--secret-file")
                .arg(&secret_path)
                .arg("--addr-file")
                .arg(&file)
                .stderr(log(&name)?);
            for s in &c.sets {
                p.arg("--set").arg(s);
            }
            let child = p.spawn().with_context(|| format!("starting {name}"))?;
            write_bytes_atomic(
                &dir.join(format!("{name}.pid")),
                child.id().to_string().as_bytes(),
            )?;
            cluster.children.push((name.clone(), child));
            files.push((role, k, file, cluster.children.len() - 1));
        }
    }
    for (role, k, file, child) in files {
        let addr = wait_for_file(&file, &mut cluster.children[child], &dir)?;
        let _ = writeln!(workers, "{} {k} {}", role.name(), addr.trim());
    }
    write_bytes_atomic(&dir.join(WORKERS), workers.as_bytes())?;
    write_bytes_atomic(&dir.join(MASTER_ADDR), master.as_bytes())?;
    if let Some(url) = &url {
        write_bytes_atomic(&dir.join(METADATA), url.as_bytes())?;
    }
    Ok(cluster)
}

/// Reads a replay cluster's folder.
pub async fn read_cluster(dir: &Path) -> Result<ReplayTargets> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f)).with_context(|| {
            format!(
                "{}: cannot read (is the cluster up?)",
                dir.join(f).display()
            )
        })
    };
    let master = match std::fs::read_to_string(dir.join(METADATA)) {
        Ok(url) => master_addr(None, Some(url.trim())).await?,
        Err(_) => MasterAddr::Fixed(read(MASTER_ADDR)?.trim().to_string()),
    };
    let secret = read_secret(&dir.join(SECRET))?;
    let text = read(WORKERS)?;
    let (mut prefill, mut decode) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate() {
        let path = dir.join(WORKERS);
        let bad = || {
            anyhow!(
                "{}:{}: expected `prefill|decode INDEX HOST:PORT`, got `{line}`",
                path.display(),
                n + 1
            )
        };
        let w: Vec<&str> = line.split_whitespace().collect();
        let [role, index, addr] = w[..] else {
            return Err(bad());
        };
        let role = WorkerRole::parse(role).ok_or_else(bad)?;
        let index: usize = index.parse().map_err(|_| bad())?;
        addr.parse::<SocketAddr>().map_err(|_| bad())?;
        let pool = match role {
            WorkerRole::Prefill => &mut prefill,
            WorkerRole::Decode => &mut decode,
        };
        if index != pool.len() {
            return Err(anyhow!(
                "{}:{}: {} workers must be listed in index order from 0",
                path.display(),
                n + 1,
                role.name()
            ));
        }
        pool.push(addr.to_string());
    }
    Ok(ReplayTargets {
        master,
        secret,
        prefill,
        decode,
    })
}

pub fn cluster(a: RealClusterArgs) -> Result<()> {
    let (config, resolved) = replay_config(&a.config)?;
    if a.masters == 0 || a.masters > 8 || (a.masters > 1 && !a.etcd) {
        bail!(
            "--masters: expected 1 (or up to 8 with --etcd), got {}",
            a.masters
        );
    }
    if !(a.lease_ttl >= 1.0 && a.lease_ttl <= 60.0) {
        bail!("--lease-ttl: expected 1 to 60 seconds, got {}", a.lease_ttl);
    }
    let masters = Masters {
        count: a.masters,
        etcd: a.etcd,
        lease_ttl: a.lease_ttl,
    };
    let cluster = start_cluster(&a.dir, &a.config, &config, &resolved, &masters)?;
    eprintln!(
        "moonlab real cluster: a master, {} prefill and {} decode workers up; folder {} (Ctrl-C stops them)",
        config.prefill.instances,
        config.decode.instances,
        a.dir.display()
    );
    runtime()?.block_on(shutdown_signal());
    drop(cluster);
    Ok(())
}

/// Checks a cluster's pools against the configuration.
fn check_targets(t: &ReplayTargets, config: &ClusterConfig, dir: &Path) -> Result<()> {
    if t.prefill.len() != config.prefill.instances as usize
        || t.decode.len() != config.decode.instances as usize
    {
        bail!(
            "{}: the cluster has {} prefill and {} decode workers, the configuration {} and {}",
            dir.join(WORKERS).display(),
            t.prefill.len(),
            t.decode.len(),
            config.prefill.instances,
            config.decode.instances
        );
    }
    Ok(())
}

/// A run tag: unique per run, so that runs on one cluster do not share a
/// cache.
fn run_tag() -> String {
    format!("r{:012x}", random_client_id().0 & 0xffff_ffff_ffff)
}

/// Runs the replay of `requests` and returns what it produced.
pub fn run_replay(
    requests: &[moonlab_core::Request],
    c: &ConfigArgs,
    config: &ClusterConfig,
    resolved: &Resolved,
    cluster: Option<&Path>,
    scratch: &Path,
    mut progress: impl FnMut(u64),
) -> Result<ReplayOutput> {
    let rt = runtime()?;
    let (_local, dir) = match cluster {
        Some(dir) => (None, dir.to_path_buf()),
        None => {
            let dir = scratch.join("cluster");
            let one = Masters {
                count: 1,
                etcd: false,
                lease_ttl: 2.0,
            };
            let local = start_cluster(&dir, c, config, resolved, &one)?;
            (Some(local), dir)
        }
    };
    let targets = rt.block_on(read_cluster(&dir))?;
    check_targets(&targets, config, &dir)?;
    let params = ReplayParams {
        run: run_tag(),
        block_tokens: config.block_tokens,
        prefill_cost: Arc::new(resolved.prefill_cost.node().clone()),
        decode_cost: Arc::new(resolved.decode_cost.clone()),
        prefill_nic_bytes_per_s: resolved.prefill_node.nic_bytes_per_s(),
        prefill_h2d_bytes_per_s: resolved.prefill_node.h2d_bytes_per_s(),
        decode_kv_tokens: resolved.decode_kv_tokens,
        lead: Duration::from_secs_f64(config.real.lead_s),
    };
    let scheduler = build_scheduler(
        config.scheduler.name,
        SchedulerParams {
            admission: config.scheduler.admission,
            slo: config.slo,
            balancing_threshold: config.scheduler.balancing_threshold,
            seed: config.seed,
        },
    );
    rt.block_on(replay(requests, params, scheduler, targets, |n| {
        progress(n)
    }))
    .map_err(|e| anyhow!("the replay: {e}"))
}

/// The run folder's files for a replay.
pub fn render_replay(
    out: &ReplayOutput,
    config: &ClusterConfig,
    wall_s: f64,
    table_format: TableFormat,
) -> Result<RunFiles> {
    let mut summary = summarize(
        &out.records,
        config.scheduler.name.name(),
        config.slo,
        &out.totals,
    );
    summary.wall_s = wall_s;
    let (table_name, table) = requests_table(&out.records, table_format)?;
    let checks = &out.checks;
    let replay = serde_json::json!({
        "bytes_scale": out.bytes_scale,
        "wrong_bytes": checks.wrong_bytes,
        "lost_blocks": checks.lost_blocks,
        "dropped_blocks": checks.dropped_blocks,
        "lost_prefix_requests": out.lost_prefix_requests,
        "fetch_bytes": checks.fetch_bytes,
        "kv_bytes": checks.kv_bytes,
        "read_bytes": checks.read_bytes,
        "written_bytes": checks.written_bytes,
        "link_bytes": out.link_bytes,
        "failures": out.failures.iter().map(|(r, why)| serde_json::json!({"request": r, "error": why})).collect::<Vec<_>>(),
    });
    let files = vec![
        (table_name, table),
        ("config.yaml", config.to_yaml().into_bytes()),
        (
            "replay.json",
            (serde_json::to_string_pretty(&replay)? + "\n").into_bytes(),
        ),
        (
            "summary.json",
            (serde_json::to_string_pretty(&summary)? + "\n").into_bytes(),
        ),
    ];
    Ok(RunFiles { files, summary })
}

/// Reads a trace for a replay or a validation: Mooncake-format, block
/// size from the configuration, the first `limit` requests.
pub fn read_trace(
    path: &Path,
    input: &InputArgs,
    config: &ClusterConfig,
    limit: Option<usize>,
) -> Result<Vec<moonlab_core::Request>> {
    if let Some(bt) = input.block_tokens {
        if bt != config.block_tokens {
            bail!(
                "--block-tokens {bt} and the configuration's block_tokens {} disagree",
                config.block_tokens
            );
        }
    }
    let mut opts = input.read_options();
    opts.block_tokens = config.block_tokens;
    let (format, mut requests) = read_all(path, &opts)?;
    if !format.has_prefix_hashes() {
        bail!(
            "{}: this {} trace carries no block hashes; a replay needs a Mooncake trace",
            path.display(),
            format.name()
        );
    }
    if let Some(n) = limit {
        if n == 0 {
            bail!("--requests: expected at least 1");
        }
        requests.truncate(n);
    }
    if requests.is_empty() {
        bail!("{}: no requests to replay", path.display());
    }
    if let Some(n) = config.workload.output_tokens {
        for r in &mut requests {
            r.output_tokens = n;
        }
    }
    Ok(requests)
}

#[allow(clippy::disallowed_methods)] // the binary may read the wall clock
pub fn replay_cmd(a: ReplayArgs) -> Result<()> {
    let (config, resolved) = replay_config(&a.config)?;
    let requests = read_trace(&a.trace, &a.input, &config, a.requests)?;
    let folder = RunFolder::prepare(&a.out, a.force)?;
    let scratch = tempfile::tempdir().context("a scratch folder for the cluster")?;
    let bar = if a.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(requests.len() as u64)
    };
    let start = std::time::Instant::now();
    let out = run_replay(
        &requests,
        &a.config,
        &config,
        &resolved,
        a.cluster.as_deref(),
        scratch.path(),
        |n| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    let wall_s = start.elapsed().as_secs_f64();
    let run = render_replay(&out, &config, wall_s, a.table_format)?;
    for (name, bytes) in &run.files {
        folder.write(name, bytes)?;
    }
    folder.commit()?;
    print_replay(&a.out, &run.summary, &out)
}

fn print_replay(dir: &Path, s: &Summary, out: &ReplayOutput) -> Result<()> {
    let served: Vec<&RequestRecord> = out.records.iter().filter(|r| r.served).collect();
    let text = format!(
        "real replay, scheduler {}: {} requests, {} served, {} rejected, {} failed\n  TTFT mean {:.3} s, p90 {:.3} s   TBT mean {:.3} s\n  hit rate {:.1} %   wrong bytes {}   KV bytes moved {} (fetch {}, to decode {})\n  {:.1} s wall; run folder {}\n",
        s.scheduler,
        s.requests,
        served.len(),
        s.rejected,
        out.failures.len(),
        s.ttft_mean_s,
        s.ttft_p90_s,
        s.tbt_mean_s,
        100.0 * s.hit_rate,
        out.checks.wrong_bytes,
        out.checks.fetch_bytes + out.checks.kv_bytes,
        out.checks.fetch_bytes,
        out.checks.kv_bytes,
        s.wall_s,
        dir.display()
    );
    crate::output::emit(&text)?;
    if out.checks.wrong_bytes > 0 {
        bail!(
            "{} bytes read were not what was written (a store or transfer bug)",
            out.checks.wrong_bytes
        );
    }
    Ok(())
}
