//! The Conductor of a real replay: requests arrive on the trace's clock
//! (shifted to now), core's `Scheduler` places each one on a
//! [`ClusterView`] built from the master's metadata (which prefill instance
//! caches which prefix blocks, asked for in one `BatchContains`) and from the
//! workers' reports (queues, transfers under way, decode loads), and the
//! placement goes to the workers as jobs. What the workers report becomes
//! the per-request table of core's `RequestRecord`s, with TTFT in the
//! paper's parts (§5.4.3): queue (a prefix fetch included), prefill,
//! transfer to decode (what the prefill did not hide), load.
//!
//! The view mirrors the simulator's (`sim/src/cluster/view.rs`) field by
//! field; where the Conductor cannot see what the simulator sees, it says
//! so here:
//! - a decode instance's emitted tokens are counted from its first-token
//!   and done reports only (the simulator counts every iteration);
//! - a transfer's share of a link counts the fetches and KV streams the
//!   Conductor started and has not yet heard the end of.

use super::pb::{self, worker_client::WorkerClient};
use super::{Keys, WorkerRole, VERSION};
use crate::clock::{host_monotonic_ns, wait_until_ns};
use crate::error::ErrorCode;
use crate::node::MasterAddr;
use crate::rpc::client::{CallError, MasterClient, Present};
use crate::rpc::{Secret, MAX_BATCH, MAX_MESSAGE_BYTES};
use moonlab_core::cost::CostModel;
use moonlab_core::metrics::{RequestRecord, RunTotals};
use moonlab_core::placement::{KvBudget, KvReservation};
use moonlab_core::sched::{
    estimate_prefill, queue_time, ClusterView, DecodeLoad, DecodingRequest, InstanceId,
    LocalPrefix, Placement, Scheduler,
};
use moonlab_core::store::{prefix_spans, PoolPrefix, SegmentId};
use moonlab_core::{BlockKey, Nanos, Request};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

type Worker = WorkerClient<InterceptedService<Channel, Present>>;

/// What the Conductor models and decides with (the simulator's resolved
/// configuration, as far as a Conductor needs it).
pub struct ReplayParams {
    /// The run's tag: its objects are named under it.
    pub run: String,
    pub block_tokens: u32,
    pub prefill_cost: Arc<dyn CostModel>,
    pub decode_cost: Arc<dyn CostModel>,
    /// A prefill node's NIC, in the model's bytes per second.
    pub prefill_nic_bytes_per_s: f64,
    /// A prefill node's host-to-device link, in the model's bytes per second.
    pub prefill_h2d_bytes_per_s: f64,
    /// KV tokens a decode instance's HBM holds.
    pub decode_kv_tokens: u64,
    /// How long after the start the first request arrives (the workers'
    /// connections are warm by then).
    pub lead: Duration,
}

/// Where the cluster is.
pub struct ReplayTargets {
    /// The master: an address, or the leader of an etcd election (the
    /// Conductor follows a failover).
    pub master: MasterAddr,
    pub secret: Secret,
    /// Each prefill worker's RPC address, by index.
    pub prefill: Vec<String>,
    /// Each decode worker's RPC address, by index.
    pub decode: Vec<String>,
}

/// What a replay checked of the bytes it moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByteChecks {
    /// Bytes read that were not what was written there (must be zero).
    pub wrong_bytes: u64,
    /// Prefix blocks found at a prefill's start but gone when read.
    pub lost_blocks: u64,
    /// Blocks not cached for want of room in their segment.
    pub dropped_blocks: u64,
    /// Real bytes fetched between prefill nodes, sent to decode nodes,
    /// read from a node's own segment, and written into it.
    pub fetch_bytes: u64,
    pub kv_bytes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
}

/// What a replay produced.
pub struct ReplayOutput {
    pub records: Vec<RequestRecord>,
    pub totals: RunTotals,
    pub checks: ByteChecks,
    /// Real bytes per link: `prefill-<k> tx|rx`, `decode-<k> rx`.
    pub link_bytes: BTreeMap<String, u64>,
    /// Requests that failed, with why (they count as unfinished).
    pub failures: Vec<(u32, String)>,
    /// Real bytes per model byte of KV.
    pub bytes_scale: f64,
    /// Requests that found less of their prefix than they were placed for
    /// (evicted, or its store node lost, between placement and prefill), or
    /// lost blocks between finding and reading them.
    pub lost_prefix_requests: u64,
}

#[derive(Default)]
struct PrefillState {
    seq: u64,
    queued_work: Nanos,
    running: Option<u32>,
    running_end: u64,
    /// Transfers under way leaving and entering this node.
    tx_flows: u32,
    rx_flows: u32,
    busy_ns: u64,
}

struct DecodeState {
    kv: KvBudget,
    /// Requests placed here and not finished: (input, output, tokens out).
    requests: BTreeMap<u32, (u32, u32, u32)>,
    busy_ns: u64,
}

#[derive(Default)]
struct ReqState {
    p: usize,
    d: usize,
    estimate: Nanos,
    fetch_from: Option<usize>,
    fetch_start: usize,
    /// The prefix blocks the Conductor placed it for (after its fetch).
    will_have: usize,
    /// Its prefill's Done arrived (or it failed before).
    prefill_reported: bool,
    kv: Option<KvReservation>,
    prefill_end: u64,
    ended: u32,
}

enum Ev {
    Started { r: u32, at: u64, blocks: u32 },
    PrefillEnded { r: u32, end: u64 },
    PrefillDone { r: u32, done: pb::PrefillDone },
    FirstToken { r: u32, load_start: u64, at: u64 },
    DecodeDone { r: u32, done: pb::DecodeDone },
    Failed { r: u32, why: String },
}

struct View<'a> {
    now: Nanos,
    now_mono: u64,
    params: &'a ReplayParams,
    prefill_ids: &'a [InstanceId],
    decode_ids: &'a [InstanceId],
    segments: &'a [SegmentId],
    /// Per prefill instance, which of the request's blocks it holds.
    present: &'a [Vec<bool>],
    prefill: &'a [PrefillState],
    decode: &'a [DecodeState],
}

impl View<'_> {
    fn decode_index(&self, i: InstanceId) -> usize {
        i.0 as usize - self.prefill.len()
    }
}

impl ClusterView for View<'_> {
    fn now(&self) -> Nanos {
        self.now
    }
    fn block_tokens(&self) -> u32 {
        self.params.block_tokens
    }
    fn prefill_instances(&self) -> &[InstanceId] {
        self.prefill_ids
    }
    fn decode_instances(&self) -> &[InstanceId] {
        self.decode_ids
    }
    fn decode_candidates(&self, _prefill: InstanceId) -> &[InstanceId] {
        self.decode_ids
    }
    fn local_prefix(&self, instance: InstanceId, keys: &[BlockKey]) -> LocalPrefix {
        let held = &self.present[instance.0 as usize];
        LocalPrefix {
            blocks: held.iter().take(keys.len()).take_while(|&&h| h).count(),
            ssd_blocks: 0,
        }
    }
    fn pool_prefix(&self, keys: &[BlockKey]) -> PoolPrefix {
        let width = self.present.first().map_or(0, |p| p.len());
        prefix_spans(keys.len().min(width), self.segments, |s, j| {
            self.present[s][j]
        })
    }
    fn segment_owner(&self, segment: SegmentId) -> Option<InstanceId> {
        self.prefill_ids.get(segment.0 as usize).copied()
    }
    fn prefill_queue_time(&self, instance: InstanceId) -> Nanos {
        let p = &self.prefill[instance.0 as usize];
        let end = p.running.map(|_| Nanos(p.running_end));
        queue_time(end, Nanos(self.now_mono), p.queued_work)
    }
    fn transfer_time(&self, from: SegmentId, to: InstanceId, bytes: u64) -> Nanos {
        let Some(owner) = self.segment_owner(from) else {
            return Nanos::MAX;
        };
        let nic = self.params.prefill_nic_bytes_per_s;
        let tx = nic / (self.prefill[owner.0 as usize].tx_flows + 1) as f64;
        let rx = nic / (self.prefill[to.0 as usize].rx_flows + 1) as f64;
        Nanos((bytes as f64 / tx.min(rx) * 1e9).ceil() as u64)
    }
    fn load_time(&self, _instance: InstanceId, dram_bytes: u64, _ssd_bytes: u64) -> Nanos {
        Nanos((dram_bytes as f64 / self.params.prefill_h2d_bytes_per_s * 1e9).ceil() as u64)
    }
    fn decode_load(&self, instance: InstanceId) -> DecodeLoad {
        let d = &self.decode[self.decode_index(instance)];
        DecodeLoad {
            requests: d.requests.len() as u32,
            context_tokens: d
                .requests
                .values()
                .map(|&(i, _, t)| i as u64 + t as u64)
                .sum(),
            free_kv_tokens: d.kv.free_tokens(),
        }
    }
    fn decode_requests(&self, instance: InstanceId) -> Vec<DecodingRequest> {
        let d = &self.decode[self.decode_index(instance)];
        d.requests
            .values()
            .map(|&(i, o, t)| DecodingRequest {
                remaining_tokens: o.saturating_sub(t),
                context_tokens: i as u64 + t as u64,
                reserved_kv_tokens: i as u64 + o as u64,
            })
            .collect()
    }
    fn cost(&self, instance: InstanceId) -> &dyn CostModel {
        if (instance.0 as usize) < self.prefill.len() {
            self.params.prefill_cost.as_ref()
        } else {
            self.params.decode_cost.as_ref()
        }
    }
}

/// The Conductor's connection to the master, which finds the master again
/// when a call cannot reach it (a failover: the standby is elected within
/// about two election leases) and tries the call once more, for up to
/// [`FAILOVER_WAIT`].
struct Meta {
    addr: MasterAddr,
    secret: Secret,
    client: MasterClient,
}

/// How long the Conductor waits for a master to answer again.
const FAILOVER_WAIT: Duration = Duration::from_secs(60);

fn unreachable(e: &CallError) -> bool {
    matches!(e.code, ErrorCode::RpcFail | ErrorCode::RpcTimeout)
}

macro_rules! with_master {
    ($meta:ident, $call:expr) => {{
        let mut waited = Duration::ZERO;
        loop {
            let $meta = &mut *$meta;
            match $call {
                Err(e) if unreachable(&e) && waited < FAILOVER_WAIT => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    waited += Duration::from_millis(250);
                    $meta.reconnect().await;
                }
                r => break r.map_err(|e| e.to_string()),
            }
        }
    }};
}

impl Meta {
    /// Connects, waiting up to [`FAILOVER_WAIT`] for a master to be
    /// elected and to answer.
    async fn connect(addr: MasterAddr, secret: Secret) -> Result<Meta, String> {
        let id = crate::client::random_client_id();
        let mut waited = Duration::ZERO;
        loop {
            let e = match addr.resolve().await {
                Ok(at) => match MasterClient::connect(&at, &secret, id).await {
                    Ok(client) => {
                        return Ok(Meta {
                            addr,
                            secret,
                            client,
                        })
                    }
                    Err(e) if unreachable(&e) => format!("connecting to the master at {at}: {e}"),
                    Err(e) => return Err(format!("connecting to the master at {at}: {e}")),
                },
                Err(e) => format!("finding the master: {e}"),
            };
            if waited >= FAILOVER_WAIT {
                return Err(format!("{e} (waited {} s)", waited.as_secs()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            waited += Duration::from_millis(250);
        }
    }

    async fn reconnect(&mut self) {
        if let Ok(at) = self.addr.resolve().await {
            if let Ok(c) = MasterClient::connect(&at, &self.secret, self.client.id()).await {
                self.client = c;
            }
        }
    }

    async fn contains(&mut self, keys: &[String]) -> Result<Vec<bool>, String> {
        let m = self;
        with_master!(m, m.client.batch_contains(keys).await)
    }

    async fn stats(&mut self) -> Result<Vec<crate::master::SegmentStats>, String> {
        let m = self;
        with_master!(m, m.client.stats().await.map(|(s, _)| s))
    }

    async fn list(&mut self, prefix: &str) -> Result<Vec<crate::master::ObjectInfo>, String> {
        let m = self;
        with_master!(m, m.client.list(prefix, 16).await)
    }
}

async fn connect_worker(addr: &str, secret: &Secret) -> Result<Worker, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("worker address `{addr}`: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connecting to the worker at {addr}: {e}"))?;
    let value = MetadataValue::try_from(secret.header())
        .map_err(|_| "the cluster secret is not a header value".to_string())?;
    Ok(WorkerClient::with_interceptor(channel, Present(value))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Connects to every worker and checks it is the worker it should be;
/// returns the clients and the DRAM segments' names.
async fn connect_pool(
    addrs: &[String],
    role: WorkerRole,
    secret: &Secret,
    bytes_per_token: &mut Option<u64>,
) -> Result<(Vec<Worker>, Vec<String>), String> {
    let mut clients = Vec::new();
    let mut segments = Vec::new();
    for (k, addr) in addrs.iter().enumerate() {
        let mut c = connect_worker(addr, secret).await?;
        let d = c
            .describe(pb::DescribeRequest {})
            .await
            .map_err(|e| format!("asking the worker at {addr} what it is: {}", e.message()))?
            .into_inner();
        if d.version != VERSION {
            return Err(format!(
                "the worker at {addr} speaks replay protocol {}, this Conductor {VERSION}",
                d.version
            ));
        }
        if d.role != role.name() || d.index != k as u32 {
            return Err(format!(
                "the worker at {addr} is {} {}, expected {} {k}",
                d.role,
                d.index,
                role.name()
            ));
        }
        match bytes_per_token {
            Some(b) if *b != d.bytes_per_token => {
                return Err(format!(
                    "the worker at {addr} stores {} bytes per token, others {b}: start every worker with the same configuration",
                    d.bytes_per_token
                ))
            }
            _ => *bytes_per_token = Some(d.bytes_per_token),
        }
        clients.push(c);
        segments.push(d.segment);
    }
    Ok((clients, segments))
}

fn spawn_prefill(mut w: Worker, job: pb::PrefillJob, events: mpsc::UnboundedSender<Ev>) {
    let r = job.request;
    tokio::spawn(async move {
        let failed = |why: String| Ev::Failed { r, why };
        let mut stream = match w.prefill(job).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                let _ = events.send(failed(format!("prefill: {}", e.message())));
                return;
            }
        };
        loop {
            let ev = match stream.message().await {
                Ok(Some(pb::PrefillEvent {
                    event: Some(pb::prefill_event::Event::Started(s)),
                })) => Ev::Started {
                    r,
                    at: s.at_ns,
                    blocks: s.prefix_blocks,
                },
                Ok(Some(pb::PrefillEvent {
                    event: Some(pb::prefill_event::Event::Ended(e)),
                })) => Ev::PrefillEnded { r, end: e.end_ns },
                Ok(Some(pb::PrefillEvent {
                    event: Some(pb::prefill_event::Event::Done(done)),
                })) => Ev::PrefillDone { r, done },
                Ok(_) => failed("prefill: the worker's stream ended early".into()),
                Err(e) => failed(format!("prefill: {}", e.message())),
            };
            let last = !matches!(ev, Ev::Started { .. } | Ev::PrefillEnded { .. });
            let _ = events.send(ev);
            if last {
                return;
            }
        }
    });
}

fn spawn_decode(mut w: Worker, job: pb::DecodeJob, events: mpsc::UnboundedSender<Ev>) {
    let r = job.request;
    tokio::spawn(async move {
        let failed = |why: String| Ev::Failed { r, why };
        let mut stream = match w.decode(job).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                let _ = events.send(failed(format!("decode: {}", e.message())));
                return;
            }
        };
        loop {
            let ev = match stream.message().await {
                Ok(Some(pb::DecodeEvent {
                    event: Some(pb::decode_event::Event::FirstToken(f)),
                })) => Ev::FirstToken {
                    r,
                    load_start: f.load_start_ns,
                    at: f.at_ns,
                },
                Ok(Some(pb::DecodeEvent {
                    event: Some(pb::decode_event::Event::Done(done)),
                })) => Ev::DecodeDone { r, done },
                Ok(_) => failed("decode: the worker's stream ended early".into()),
                Err(e) => failed(format!("decode: {}", e.message())),
            };
            let last = !matches!(ev, Ev::FirstToken { .. });
            let _ = events.send(ev);
            if last {
                return;
            }
        }
    });
}

/// Replays `trace` (sorted by arrival, non-empty blocks) on the cluster at
/// `targets`, calling `progress(ended_requests)` now and then.
pub async fn replay(
    trace: &[Request],
    params: ReplayParams,
    mut scheduler: Box<dyn Scheduler>,
    targets: ReplayTargets,
    mut progress: impl FnMut(u64),
) -> Result<ReplayOutput, String> {
    let mut bpt = None;
    let (prefill_w, prefill_segments) = connect_pool(
        &targets.prefill,
        WorkerRole::Prefill,
        &targets.secret,
        &mut bpt,
    )
    .await?;
    let (decode_w, decode_segments) = connect_pool(
        &targets.decode,
        WorkerRole::Decode,
        &targets.secret,
        &mut bpt,
    )
    .await?;
    if prefill_w.is_empty() || decode_w.is_empty() {
        return Err("a replay needs at least one prefill and one decode worker".into());
    }
    let bytes_per_token = bpt.unwrap_or(1);
    let model_bpt = params.prefill_cost.kv_bytes_per_token().max(1);
    let scale = bytes_per_token as f64 / model_bpt as f64;
    let mut master = Meta::connect(targets.master.clone(), targets.secret.clone()).await?;
    // Every worker's segment must be mounted before the first arrival.
    let mut waited = 0;
    loop {
        let stats = master
            .stats()
            .await
            .map_err(|e| format!("asking the master for its segments: {e}"))?;
        let missing: Vec<&String> = prefill_segments
            .iter()
            .chain(&decode_segments)
            .filter(|s| !stats.iter().any(|m| &m.name == *s))
            .collect();
        if missing.is_empty() {
            break;
        }
        if waited >= 300 {
            return Err(format!(
                "segment {} is not mounted at the master after 30 s (is its store node up?)",
                missing[0]
            ));
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys = Keys {
        run: params.run.clone(),
    };
    let (np, nd) = (prefill_w.len(), decode_w.len());
    let prefill_ids: Vec<InstanceId> = (0..np as u32).map(InstanceId).collect();
    let decode_ids: Vec<InstanceId> = (np as u32..(np + nd) as u32).map(InstanceId).collect();
    let segments: Vec<SegmentId> = (0..np as u32).map(SegmentId).collect();
    let mut prefill: Vec<PrefillState> = (0..np).map(|_| PrefillState::default()).collect();
    let mut decode: Vec<DecodeState> = (0..nd)
        .map(|_| DecodeState {
            kv: KvBudget::new(params.decode_kv_tokens),
            requests: BTreeMap::new(),
            busy_ns: 0,
        })
        .collect();
    let mut reqs: Vec<ReqState> = (0..trace.len()).map(|_| ReqState::default()).collect();
    let mut records: Vec<RequestRecord> = trace
        .iter()
        .enumerate()
        .map(|(i, r)| RequestRecord::arrived(i as u32, r))
        .collect();
    let mut checks = ByteChecks::default();
    let mut link_bytes: BTreeMap<String, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut h2d_model_bytes = 0f64;
    let mut lost_prefix_requests = 0u64;
    let bt = params.block_tokens;
    let origin = trace.first().map_or(Nanos::ZERO, |r| r.arrival);
    let t0 = host_monotonic_ns().saturating_add(params.lead.as_nanos() as u64);
    let trace_time = |mono: u64| origin.saturating_add(Nanos(mono.saturating_sub(t0)));
    let secs = |mono: u64| trace_time(mono).as_secs_f64();
    let (tx, mut rx) = mpsc::unbounded_channel::<Ev>();
    let mut next = 0usize;
    let mut ended = 0usize;
    let mut last_end = t0;
    let mut reported = 0usize;
    let empty: Vec<Vec<bool>> = Vec::new();
    // Prefill jobs sent whose Done has not arrived (a request may end in
    // decode before its prefill's Done brings the byte counts).
    let mut prefill_outstanding = 0usize;
    while ended < trace.len() || prefill_outstanding > 0 {
        let due = trace
            .get(next)
            .map(|r| t0.saturating_add(r.arrival.saturating_sub(origin).0));
        tokio::select! {
            biased;
            Some(ev) = rx.recv() => {
                let end_request = |r: u32, reqs: &mut Vec<ReqState>, decode: &mut Vec<DecodeState>| {
                    let st = &mut reqs[r as usize];
                    st.ended += 1;
                    let d = &mut decode[st.d];
                    if let Some(kv) = st.kv.take() {
                        d.kv.release(kv);
                    }
                    d.requests.remove(&r);
                };
                match ev {
                    Ev::Started { r, at, blocks } => {
                        let st = &reqs[r as usize];
                        let (p, estimate) = (st.p, st.estimate);
                        if let Some(q) = st.fetch_from {
                            prefill[q].tx_flows -= 1;
                            prefill[p].rx_flows -= 1;
                        }
                        let req = &trace[r as usize];
                        let expected = {
                            let view = View {
                                now: trace_time(at),
                                now_mono: at,
                                params: &params,
                                prefill_ids: &prefill_ids,
                                decode_ids: &decode_ids,
                                segments: &segments,
                                present: &empty,
                                prefill: &prefill,
                                decode: &decode,
                            };
                            estimate_prefill(&view, prefill_ids[p], req, blocks as usize, 0)
                        };
                        let inst = &mut prefill[p];
                        inst.queued_work = inst.queued_work.saturating_sub(estimate);
                        inst.running = Some(r);
                        inst.running_end = at.saturating_add(expected.0);
                        if req.output_tokens > 1 {
                            inst.tx_flows += 1;
                        }
                    }
                    Ev::PrefillEnded { r, end } => {
                        // The prefill is over and the KV is in: the decode
                        // starts (the prompt's blocks are still being
                        // written; Done follows).
                        let st = &mut reqs[r as usize];
                        let req = &trace[r as usize];
                        st.prefill_end = end;
                        let inst = &mut prefill[st.p];
                        if inst.running == Some(r) {
                            inst.running = None;
                        }
                        if req.output_tokens > 1 {
                            inst.tx_flows = inst.tx_flows.saturating_sub(1);
                            let job = pb::DecodeJob {
                                request: r,
                                run: params.run.clone(),
                                input_tokens: req.input_tokens,
                                output_tokens: req.output_tokens,
                            };
                            spawn_decode(decode_w[st.d].clone(), job, tx.clone());
                        }
                    }
                    Ev::PrefillDone { r, done } => {
                        let st = &mut reqs[r as usize];
                        let req = &trace[r as usize];
                        let p = st.p;
                        st.prefill_reported = true;
                        prefill_outstanding -= 1;
                        prefill[p].busy_ns += done.end_ns.saturating_sub(done.start_ns);
                        checks.wrong_bytes += done.wrong_bytes;
                        checks.lost_blocks += done.lost_blocks;
                        checks.dropped_blocks += done.dropped_blocks;
                        checks.fetch_bytes += done.fetch_bytes;
                        checks.kv_bytes += done.kv_bytes;
                        checks.read_bytes += done.read_bytes;
                        checks.written_bytes += done.written_bytes;
                        if let Some(q) = st.fetch_from {
                            *link_bytes.entry(format!("prefill-{q} tx")).or_default() += done.fetch_bytes;
                            *link_bytes.entry(format!("prefill-{p} rx")).or_default() += done.fetch_bytes;
                        }
                        if done.kv_bytes > 0 {
                            *link_bytes.entry(format!("prefill-{p} tx")).or_default() += done.kv_bytes;
                            *link_bytes.entry(format!("decode-{} rx", st.d)).or_default() += done.kv_bytes;
                        }
                        let k = done.prefix_blocks as usize;
                        if k < st.will_have || done.lost_blocks > 0 {
                            lost_prefix_requests += 1;
                        }
                        let cached = req.reusable_tokens(k, bt);
                        h2d_model_bytes += (cached * model_bpt) as f64;
                        let rec = &mut records[r as usize];
                        rec.prefill = Some(p as u32);
                        rec.decode = Some((np + st.d) as u32);
                        rec.prefix_tokens = req.hit_tokens(k, bt);
                        // What the fetch brought of the prefix found (as
                        // the simulator counts it).
                        let fetched = st.fetch_start..st.fetch_start + done.fetched_blocks as usize;
                        rec.fetched_tokens = fetched
                            .filter(|&j| j < k)
                            .map(|j| req.block_tokens_at(j, bt) as u64)
                            .sum();
                        rec.fetch_bytes = (done.fetch_bytes as f64 / scale).round() as u64;
                        rec.fetch_s = Nanos(done.fetch_end_ns.saturating_sub(done.fetch_start_ns)).as_secs_f64();
                        rec.queue_s = secs(done.start_ns) - req.arrival.as_secs_f64();
                        rec.prefill_s = Nanos(done.end_ns.saturating_sub(done.start_ns)).as_secs_f64();
                        rec.compute_s = Nanos(done.compute_ns).as_secs_f64();
                        if req.output_tokens <= 1 {
                            rec.ttft_s = secs(done.end_ns) - req.arrival.as_secs_f64();
                            rec.served = true;
                            rec.finish_s = secs(done.end_ns);
                            last_end = last_end.max(done.end_ns);
                            end_request(r, &mut reqs, &mut decode);
                            ended += 1;
                        }
                    }
                    Ev::FirstToken { r, load_start, at } => {
                        let st = &reqs[r as usize];
                        let req = &trace[r as usize];
                        h2d_model_bytes += (req.input_tokens as u64 * model_bpt) as f64;
                        if let Some(e) = decode[st.d].requests.get_mut(&r) {
                            e.2 = 1;
                        }
                        let rec = &mut records[r as usize];
                        rec.transfer_s = Nanos(load_start.saturating_sub(st.prefill_end)).as_secs_f64();
                        rec.load_s = Nanos(at.saturating_sub(load_start)).as_secs_f64();
                        rec.ttft_s = secs(at) - req.arrival.as_secs_f64();
                        rec.decode_s = 0.0;
                        rec.finish_s = secs(at);
                    }
                    Ev::DecodeDone { r, done } => {
                        checks.wrong_bytes += done.wrong_bytes;
                        if reqs[r as usize].ended > 0 {
                            // It failed already (its prefill's job, after
                            // the decode had started): it stays failed.
                            continue;
                        }
                        let rec = &mut records[r as usize];
                        let first = rec.finish_s;
                        rec.served = true;
                        rec.tbt_s = done.tbt_s;
                        rec.finish_s = secs(done.finish_ns);
                        rec.decode_s = rec.finish_s - first;
                        last_end = last_end.max(done.finish_ns);
                        end_request(r, &mut reqs, &mut decode);
                        ended += 1;
                    }
                    Ev::Failed { r, why } => {
                        let st = &mut reqs[r as usize];
                        if !st.prefill_reported {
                            st.prefill_reported = true;
                            prefill_outstanding -= 1;
                        }
                        let p = st.p;
                        let inst = &mut prefill[p];
                        if inst.running == Some(r) {
                            inst.running = None;
                        }
                        failures.push((r, why));
                        records[r as usize].served = false;
                        // A request ends once, whichever of its jobs fails.
                        if reqs[r as usize].ended == 0 {
                            end_request(r, &mut reqs, &mut decode);
                            ended += 1;
                        }
                    }
                }
                if ended >= reported + 100 {
                    reported = ended;
                    progress(ended as u64);
                }
            }
            _ = wait_until_ns(due.unwrap_or(u64::MAX)), if due.is_some() => {
                let i = next;
                next += 1;
                let req = &trace[i];
                let r = i as u32;
                // Which prefill instance holds which of its blocks.
                let names: Vec<String> = (0..np as u32)
                    .flat_map(|q| req.blocks.iter().map(move |b| (q, b.0)))
                    .map(|(q, h)| keys.block(q, h))
                    .collect();
                let mut exists = Vec::with_capacity(names.len());
                for chunk in names.chunks(MAX_BATCH) {
                    exists.extend(
                        master
                            .contains(chunk)
                            .await
                            .map_err(|e| format!("asking the master for request {i}'s prefix: {e}"))?,
                    );
                }
                // What the decode instances are doing now (tokens each of
                // their requests has emitted), as they report it.
                for (k, w) in decode_w.iter().enumerate() {
                    if let Ok(load) = w.clone().load(pb::LoadRequest {}).await {
                        for l in load.into_inner().requests {
                            if let Some(e) = decode[k].requests.get_mut(&l.request) {
                                e.2 = e.2.max(l.tokens);
                            }
                        }
                    }
                }
                let n = req.blocks.len();
                let present: Vec<Vec<bool>> = exists.chunks(n.max(1)).map(|c| c.to_vec()).collect();
                let now_mono = host_monotonic_ns();
                let view = View {
                    now: trace_time(now_mono),
                    now_mono,
                    params: &params,
                    prefill_ids: &prefill_ids,
                    decode_ids: &decode_ids,
                    segments: &segments,
                    present: &present,
                    prefill: &prefill,
                    decode: &decode,
                };
                let placement = scheduler.place(req, &view, None);
                let (pi, di, fetch) = match placement {
                    Placement::Reject(reason) => {
                        let rec = &mut records[i];
                        rec.reject_reason = Some(reason.name());
                        rec.finish_s = req.arrival.as_secs_f64();
                        reqs[i].ended += 1;
                        ended += 1;
                        continue;
                    }
                    Placement::Run { prefill: p, decode: d, fetch, .. } => (p, d, fetch),
                };
                let p = pi.0 as usize;
                let d = view.decode_index(di);
                let local = view.local_prefix(pi, &req.blocks).blocks;
                let will_have = fetch.map_or(local, |f| f.blocks.max(local));
                let estimate = estimate_prefill(&view, pi, req, will_have, 0);
                let st = &mut reqs[i];
                st.p = p;
                st.d = d;
                st.estimate = estimate;
                st.will_have = will_have;
                st.kv = Some(decode[d].kv.reserve(req.input_tokens as u64 + req.output_tokens as u64));
                decode[d].requests.insert(r, (req.input_tokens, req.output_tokens, 0));
                let (fetch_from, fetch_start, fetch_end) = match fetch {
                    Some(f) if f.blocks > local => {
                        let q = f.from.0 as usize;
                        st.fetch_from = Some(q);
                        st.fetch_start = local;
                        prefill[q].tx_flows += 1;
                        prefill[p].rx_flows += 1;
                        (q as u32, local as u32, f.blocks as u32)
                    }
                    _ => (0, 0, 0),
                };
                let inst = &mut prefill[p];
                inst.queued_work = inst.queued_work.saturating_add(estimate);
                let seq = inst.seq;
                inst.seq += 1;
                let job = pb::PrefillJob {
                    request: r,
                    run: params.run.clone(),
                    blocks: req.blocks.iter().map(|b| b.0).collect(),
                    input_tokens: req.input_tokens,
                    output_tokens: req.output_tokens,
                    fetch_from,
                    fetch_start,
                    fetch_end,
                    decode_segment: if req.output_tokens > 1 {
                        decode_segments[d].clone()
                    } else {
                        String::new()
                    },
                    seq,
                };
                prefill_outstanding += 1;
                spawn_prefill(prefill_w[p].clone(), job, tx.clone());
            }
        }
    }
    progress(ended as u64);
    // Busy time as the workers measured it, and the prompt blocks they
    // tried again in the background (waited for: a few rounds of the
    // master's eviction).
    for (k, w) in prefill_w.iter().enumerate() {
        for attempt in 0..100 {
            let d = w
                .clone()
                .describe(pb::DescribeRequest {})
                .await
                .map_err(|e| format!("asking prefill worker {k} for its totals: {}", e.message()))?
                .into_inner();
            if d.retrying_blocks > 0 && attempt < 99 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            // (After 2 s, blocks still being tried count as not cached.)
            prefill[k].busy_ns = d.busy_ns;
            checks.dropped_blocks += d.dropped_blocks + d.retrying_blocks;
            checks.written_bytes += d.late_written_bytes;
            break;
        }
    }
    for (k, w) in decode_w.iter().enumerate() {
        decode[k].busy_ns = w
            .clone()
            .describe(pb::DescribeRequest {})
            .await
            .map_err(|e| format!("asking decode worker {k} for its totals: {}", e.message()))?
            .into_inner()
            .busy_ns;
    }
    if let Some((r, st)) = reqs.iter().enumerate().find(|(_, s)| s.ended != 1) {
        return Err(format!(
            "request {r} ended {} times (every request must end exactly once)",
            st.ended
        ));
    }
    if let Some((k, d)) = decode
        .iter()
        .enumerate()
        .find(|(_, d)| d.kv.reservations() > 0)
    {
        return Err(format!(
            "decode instance {k} still holds {} KV reservations after the run",
            d.kv.reservations()
        ));
    }
    let model_nic = (checks.fetch_bytes + checks.kv_bytes) as f64 / scale;
    let totals = RunTotals {
        nic_bytes: model_nic,
        h2d_bytes: h2d_model_bytes,
        ssd_bytes: 0.0,
        prefill_busy_s: prefill.iter().map(|p| p.busy_ns as f64 / 1e9).collect(),
        decode_busy_s: decode.iter().map(|d| d.busy_ns as f64 / 1e9).collect(),
        events: trace.len() as u64,
        end: trace_time(last_end),
    };
    // A run-level check of its own: the request KV objects are gone.
    let left = master
        .list(&format!("{}/kv/", params.run))
        .await
        .map_err(|e| format!("listing the run's objects: {e}"))?;
    let served_kv = records
        .iter()
        .filter(|r| r.served && r.output_tokens > 1)
        .count();
    if !left.is_empty() && failures.is_empty() {
        return Err(format!(
            "{} request KV objects are still in the store after {served_kv} requests were decoded (the first: {})",
            left.len(),
            left[0].key
        ));
    }
    Ok(ReplayOutput {
        records,
        totals,
        checks,
        link_bytes,
        failures,
        bytes_scale: scale,
        lost_prefix_requests,
    })
}

/// One timed transfer of a network check: from the host of worker `from`
/// (its role and index) into segment `to`.
#[derive(Clone, Debug)]
pub struct Flow {
    pub from: (WorkerRole, usize),
    pub to: String,
    pub bytes: u64,
}

/// Starts `flows` together (all at one instant a little ahead) and
/// returns each one's (start, end), in CLOCK_MONOTONIC nanoseconds.
pub async fn timed_flows(
    targets: &ReplayTargets,
    flows: &[Flow],
) -> Result<Vec<(u64, u64)>, String> {
    let mut clients = Vec::with_capacity(flows.len());
    for f in flows {
        let pool = match f.from.0 {
            WorkerRole::Prefill => &targets.prefill,
            WorkerRole::Decode => &targets.decode,
        };
        let addr = pool
            .get(f.from.1)
            .ok_or_else(|| format!("the cluster has no {} worker {}", f.from.0.name(), f.from.1))?;
        clients.push(connect_worker(addr, &targets.secret).await?);
    }
    let at = host_monotonic_ns() + 300_000_000;
    let tag = crate::client::random_client_id().0 & 0xffff_ffff;
    let tasks: Vec<_> = flows
        .iter()
        .zip(clients)
        .enumerate()
        .map(|(i, (f, mut c))| {
            let job = pb::SendJob {
                segment: f.to.clone(),
                bytes: f.bytes,
                key: format!("netcheck/{tag:08x}/{i}"),
                start_ns: at,
            };
            tokio::spawn(async move { c.send(job).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t
            .await
            .map_err(|e| format!("flow {i}: {e}"))?
            .map_err(|e| format!("flow {i}: {}", e.message()))?
            .into_inner();
        out.push((r.start_ns, r.end_ns));
    }
    Ok(out)
}
