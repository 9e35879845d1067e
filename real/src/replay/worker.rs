//! A replay worker: one process standing in for a GPU node. It contributes
//! its DRAM segment to the store (a store node, in-process) and serves the
//! Conductor's jobs over gRPC (`proto/moonlab/replay/v1/worker.proto`):
//!
//! - **prefill**: fetch the remote prefix the Conductor chose (read from
//!   the holder's segment, written into this node's own: a replica), wait
//!   for its turn (the jobs run one at a time, in the Conductor's order),
//!   find its prefix in its own segment, read it, wait the cost model's
//!   prefill time (compute, chunk by chunk, overlapped with the prefix's
//!   load into HBM), while the request's KV streams into the decode node's
//!   segment; then write the prompt's new blocks into its own segment;
//! - **decode**: read the request's KV from its own segment, wait its load
//!   into HBM, then decode it in a continuous batch (bounded by the batch
//!   size and the HBM's KV tokens), each iteration waiting the cost model's
//!   step time.
//!
//! Every byte read is checked against the pattern it was written with;
//! mismatches are reported, never hidden. Times are the host's
//! CLOCK_MONOTONIC.

use super::pb::{self, worker_server::WorkerServer};
use super::{pattern, Keys, WorkerModel, WorkerRole, VERSION};
use crate::client::{Buffer, ClientConfig, StoreClient};
use crate::clock::{host_monotonic_ns, wait_until_ns};
use crate::error::ErrorCode;
use crate::master::PutOptions;
use crate::rpc::server::Authenticate;
use crate::rpc::{Secret, MAX_BATCH, MAX_MESSAGE_BYTES};
use moonlab_core::cost::chunk_times;
use moonlab_core::metrics::LongestIntervals;
use moonlab_core::{BlockKey, Nanos, Request};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

/// The most blocks one prefill job may carry (a prompt of 4096 blocks is
/// two million tokens at 512 per block).
pub const MAX_JOB_BLOCKS: usize = MAX_BATCH;

/// The largest timed send.
pub const MAX_SEND_BYTES: u64 = 1 << 30;

/// Blocks refused for want of room are tried again this long after (the
/// master evicts every 10 ms), for at most this many rounds.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(12);
const RETRY_ROUNDS: usize = 8;

/// A request joining a decode worker's batch.
struct Joining {
    request: u32,
    input: u64,
    output: u32,
    first_token: u64,
    done: oneshot::Sender<(u64, f64, u32)>,
}

/// A worker's state, shared by its jobs.
pub struct Worker {
    model: WorkerModel,
    segment: String,
    client_config: ClientConfig,
    clients: Mutex<Vec<StoreClient>>,
    /// Prefill: the job sequence number whose turn it is.
    serving: watch::Sender<u64>,
    /// Decode: the batch loop's inbox.
    joining: Option<mpsc::UnboundedSender<Joining>>,
    /// Decode: each request in the batch and the tokens it has emitted.
    emitted: Arc<Mutex<std::collections::BTreeMap<u32, u32>>>,
    busy_ns: Arc<AtomicU64>,
    /// Prompt blocks being tried again in the background, those that never
    /// got in, and the bytes that did.
    retrying: AtomicU64,
    dropped: AtomicU64,
    late_written: AtomicU64,
}

fn status(what: &str, e: ErrorCode) -> Status {
    Status::unavailable(format!("{what}: {e}"))
}

/// Moves the prefill queue on when a job's turn ends, however it ends.
struct Turn<'a>(&'a watch::Sender<u64>);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|s| *s += 1);
    }
}

impl Worker {
    /// A worker for `model` whose own DRAM segment is `segment`, using
    /// `client_config` to reach the store. A decode worker starts its batch
    /// loop (it ends when the worker is dropped).
    pub fn new(model: WorkerModel, segment: String, client_config: ClientConfig) -> Arc<Worker> {
        let busy_ns = Arc::new(AtomicU64::new(0));
        let emitted = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let joining = (model.role == WorkerRole::Decode).then(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(decode_loop(
                model.clone(),
                rx,
                busy_ns.clone(),
                emitted.clone(),
            ));
            tx
        });
        Arc::new(Worker {
            model,
            segment,
            client_config,
            clients: Mutex::new(Vec::new()),
            serving: watch::channel(0).0,
            joining,
            emitted,
            busy_ns,
            retrying: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            late_written: AtomicU64::new(0),
        })
    }

    async fn client(&self) -> Result<StoreClient, Status> {
        if let Some(c) = self.clients.lock().pop() {
            return Ok(c);
        }
        StoreClient::connect(self.client_config.clone())
            .await
            .map_err(|e| Status::unavailable(format!("connecting to the store: {e}")))
    }

    fn give_back(&self, c: StoreClient) {
        self.clients.lock().push(c);
    }

    fn own_put(&self) -> PutOptions {
        PutOptions {
            replicas: 1,
            preferred_segment: Some(self.segment.clone()),
            soft_pin: false,
            only_preferred: true,
        }
    }

    /// The buffers of blocks `range` of `req`, named as this instance's
    /// copies and filled with each block's pattern.
    fn block_items(
        &self,
        keys: &Keys,
        req: &Request,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<(String, Buffer)>, Status> {
        let bt = self.model.block_tokens;
        let mut items = Vec::with_capacity(range.len());
        for j in range {
            let h = req.blocks[j].0;
            let len = req.block_tokens_at(j, bt) as u64 * self.model.bytes_per_token;
            let buf = Buffer::zeroed(len.max(1))
                .map_err(|e| Status::resource_exhausted(format!("a block buffer: {e}")))?;
            // SAFETY: the buffer is fresh and ours alone.
            let bytes = unsafe { buf.region.bytes_mut(buf.offset, buf.len) }
                .map_err(|e| Status::internal(e.to_string()))?;
            pattern::fill(&keys.block_content(h), bytes);
            items.push((keys.block(self.model.index, h), buf));
        }
        Ok(items)
    }

    /// Puts `items` into this node's own segment; returns the bytes
    /// written and the items refused for want of room (to try again once
    /// the master's eviction has run).
    async fn put_own(
        &self,
        client: &mut StoreClient,
        items: Vec<(String, Buffer)>,
    ) -> Result<(u64, Vec<(String, Buffer)>), Status> {
        if items.is_empty() {
            return Ok((0, items));
        }
        // A store that cannot take them (gone, or unreachable) costs the
        // cache these blocks, never the request.
        let Ok(results) = client.batch_put_from(&items, &self.own_put()).await else {
            return Ok((0, items));
        };
        let mut written = 0;
        let mut refused = Vec::new();
        for (item, r) in items.into_iter().zip(results) {
            match r {
                Ok(()) => written += item.1.len,
                Err(ErrorCode::ObjectAlreadyExists) => {}
                Err(_) => refused.push(item),
            }
        }
        Ok((written, refused))
    }

    /// Tries refused blocks again after each of the master's eviction runs
    /// (a store evicts in the background, past its high watermark, where
    /// the simulator evicts at the write): up to [`RETRY_ROUNDS`] rounds,
    /// while each round stores some. Returns (bytes written, blocks that
    /// stayed out).
    async fn retry_own(
        &self,
        client: &mut StoreClient,
        mut items: Vec<(String, Buffer)>,
    ) -> Result<(u64, u64), Status> {
        let mut written = 0;
        for _ in 0..RETRY_ROUNDS {
            if items.is_empty() {
                break;
            }
            tokio::time::sleep(RETRY_AFTER).await;
            let before = items.len();
            let (w, left) = self.put_own(client, items).await?;
            written += w;
            items = left;
            if items.len() == before {
                break;
            }
        }
        Ok((written, items.len() as u64))
    }

    /// Fetches blocks `[fetch_start, fetch_end)` of `req` from the holder's
    /// segment into this node's own (the prefix ends at the first block gone
    /// from the holder); returns the client for the rest of the job.
    async fn fetch(
        &self,
        job: &pb::PrefillJob,
        keys: &Keys,
        req: &Request,
        done: &mut pb::PrefillDone,
    ) -> Result<StoreClient, Status> {
        let mut client = self.client().await?;
        let (fs, fe) = (job.fetch_start as usize, job.fetch_end as usize);
        if fe <= fs {
            return Ok(client);
        }
        let src: Vec<String> = (fs..fe)
            .map(|j| keys.block(job.fetch_from, req.blocks[j].0))
            .collect();
        // A holder that cannot be read costs the request its fetch (it
        // computes those tokens), never the request.
        let Ok(got) = client.batch_get(&src).await else {
            return Ok(client);
        };
        let mut items = Vec::new();
        for (j, r) in (fs..fe).zip(got) {
            let Ok(bytes) = r else { break };
            let h = req.blocks[j].0;
            done.wrong_bytes += pattern::wrong_bytes(&keys.block_content(h), &bytes);
            done.fetch_bytes += bytes.len() as u64;
            let buf = Buffer::copy_of(&bytes)
                .map_err(|e| Status::resource_exhausted(format!("a block buffer: {e}")))?;
            items.push((keys.block(self.model.index, h), buf));
        }
        let stored = items.len() as u64;
        let (_, refused) = self.put_own(&mut client, items).await?;
        let (_, dropped) = self.retry_own(&mut client, refused).await?;
        done.fetched_blocks += stored - dropped;
        done.dropped_blocks += dropped;
        Ok(client)
    }

    async fn prefill(
        self: Arc<Self>,
        job: pb::PrefillJob,
        events: mpsc::Sender<Result<pb::PrefillEvent, Status>>,
    ) -> Result<(), Status> {
        let m = &self.model;
        let bt = m.block_tokens;
        let keys = Keys {
            run: job.run.clone(),
        };
        let req = Request {
            arrival: Nanos::ZERO,
            input_tokens: job.input_tokens,
            output_tokens: job.output_tokens,
            blocks: job.blocks.iter().map(|&h| BlockKey(h)).collect(),
        };
        let me = m.index;
        // 1. The remote prefix, read from its holder and written here. Its
        // outcome waits for the job's turn, so that a failed job still
        // passes its turn on.
        let mut done = pb::PrefillDone {
            fetch_start_ns: host_monotonic_ns(),
            ..Default::default()
        };
        let fetched = self.fetch(&job, &keys, &req, &mut done).await;
        done.fetch_end_ns = host_monotonic_ns();
        // 2. Its turn, in the Conductor's order.
        let mut serving = self.serving.subscribe();
        serving
            .wait_for(|&s| s >= job.seq)
            .await
            .map_err(|_| Status::internal("the prefill queue closed"))?;
        if *serving.borrow() != job.seq {
            return Err(Status::invalid_argument(format!(
                "prefill job sequence {} already served",
                job.seq
            )));
        }
        let turn = Turn(&self.serving);
        let mut client = fetched?;
        let start = host_monotonic_ns();
        // 3. The prefix it finds here now.
        let own: Vec<String> = req.blocks.iter().map(|b| keys.block(me, b.0)).collect();
        let mut k = 0;
        for chunk in own.chunks(MAX_BATCH) {
            let exists = client
                .batch_contains(chunk)
                .await
                .map_err(|e| status("looking up the prefix", e))?;
            let run = exists.iter().take_while(|&&e| e).count();
            k += run;
            if run < chunk.len() {
                break;
            }
        }
        let _ = events
            .send(Ok(pb::PrefillEvent {
                event: Some(pb::prefill_event::Event::Started(pb::PrefillStarted {
                    at_ns: start,
                    prefix_blocks: k as u32,
                })),
            }))
            .await;
        let cached = req.reusable_tokens(k, bt);
        let compute = chunk_times(
            m.cost.as_ref(),
            req.input_tokens as u64,
            cached,
            m.chunk_tokens as u64,
        )
        .iter()
        .fold(0u64, |a, t| a.saturating_add(t.0));
        let deadline = start.saturating_add(compute.max(m.load_ns(cached)));
        // 4. The KV streams to the decode node while the prefill runs.
        let kv = (!job.decode_segment.is_empty()).then(|| {
            let me = self.clone();
            let (name, seg) = (keys.kv(job.request), job.decode_segment.clone());
            let len = req.input_tokens as u64 * m.bytes_per_token;
            tokio::spawn(async move {
                let mut c = me.client().await?;
                let buf = Buffer::zeroed(len.max(1))
                    .map_err(|e| Status::resource_exhausted(format!("a KV buffer: {e}")))?;
                // SAFETY: the buffer is fresh and ours alone.
                let bytes = unsafe { buf.region.bytes_mut(buf.offset, buf.len) }
                    .map_err(|e| Status::internal(e.to_string()))?;
                pattern::fill(&name, bytes);
                let opts = PutOptions {
                    replicas: 1,
                    preferred_segment: Some(seg),
                    soft_pin: false,
                    only_preferred: true,
                };
                let r = c.put_from(&name, &buf, &opts).await;
                let at = host_monotonic_ns();
                me.give_back(c);
                r.map_err(|e| status("sending the KV to the decode node", e))?;
                Ok::<(u64, u64), Status>((at, buf.len))
            })
        });
        // 5. The prefix read back (the lease of each read keeps it from
        // eviction while it is in use), and the compute waited for.
        let got = match client.batch_get(&own[..k]).await {
            Ok(got) => got,
            Err(e) => vec![Err(e); k],
        };
        for (j, r) in got.into_iter().enumerate() {
            match r {
                Ok(bytes) => {
                    done.read_bytes += bytes.len() as u64;
                    done.wrong_bytes +=
                        pattern::wrong_bytes(&keys.block_content(req.blocks[j].0), &bytes);
                }
                Err(_) => done.lost_blocks += 1,
            }
        }
        wait_until_ns(deadline).await;
        let end = host_monotonic_ns();
        self.busy_ns
            .fetch_add(end.saturating_sub(start), Ordering::Relaxed);
        // The decode may start once the prefill ended and the KV is in.
        let ended = {
            let events = events.clone();
            tokio::spawn(async move {
                let got = match kv {
                    Some(kv) => kv
                        .await
                        .map_err(|e| Status::internal(format!("the KV transfer task: {e}")))?
                        .map(Some)?,
                    None => None,
                };
                let kv_ns = got.map_or(end, |(at, _)| at);
                let _ = events
                    .send(Ok(pb::PrefillEvent {
                        event: Some(pb::prefill_event::Event::Ended(pb::PrefillEnded {
                            end_ns: end,
                            kv_ns,
                        })),
                    }))
                    .await;
                Ok::<_, Status>(got)
            })
        };
        // 6. The prompt's blocks enter this node's segment; those refused
        // for want of room are tried again after the master's eviction,
        // once the next request has its turn.
        let items = self.block_items(&keys, &req, k..req.blocks.len())?;
        let (written, refused) = self.put_own(&mut client, items).await?;
        drop(turn);
        done.written_bytes = written;
        self.give_back(client);
        if !refused.is_empty() {
            let n = refused.len() as u64;
            self.retrying.fetch_add(n, Ordering::SeqCst);
            let me = self.clone();
            tokio::spawn(async move {
                let (w, dropped) = match me.client().await {
                    Ok(mut c) => {
                        let r = me.retry_own(&mut c, refused).await;
                        me.give_back(c);
                        r.unwrap_or((0, n))
                    }
                    Err(_) => (0, n),
                };
                me.late_written.fetch_add(w, Ordering::SeqCst);
                me.dropped.fetch_add(dropped, Ordering::SeqCst);
                me.retrying.fetch_sub(n, Ordering::SeqCst);
            });
        }
        if let Some((at, bytes)) = ended
            .await
            .map_err(|e| Status::internal(format!("the KV transfer task: {e}")))??
        {
            done.kv_ns = at;
            done.kv_bytes = bytes;
        }
        done.start_ns = start;
        done.end_ns = end;
        done.compute_ns = compute;
        done.prefix_blocks = k as u64;
        let _ = events
            .send(Ok(pb::PrefillEvent {
                event: Some(pb::prefill_event::Event::Done(done)),
            }))
            .await;
        Ok(())
    }

    async fn decode(
        self: Arc<Self>,
        job: pb::DecodeJob,
        events: mpsc::Sender<Result<pb::DecodeEvent, Status>>,
    ) -> Result<(), Status> {
        let Some(joining) = self.joining.clone() else {
            return Err(Status::failed_precondition("not a decode worker"));
        };
        let keys = Keys {
            run: job.run.clone(),
        };
        let name = keys.kv(job.request);
        let load_start = host_monotonic_ns();
        let mut client = self.client().await?;
        let bytes = client
            .get(&name)
            .await
            .map_err(|e| status("reading the request's KV", e))?;
        let wrong = pattern::wrong_bytes(&name, &bytes);
        // In HBM now: the DRAM copy goes (forced: this read's own lease).
        let _ = client.remove(&name, true).await;
        self.give_back(client);
        wait_until_ns(load_start.saturating_add(self.model.load_ns(job.input_tokens as u64))).await;
        let first = host_monotonic_ns();
        let _ = events
            .send(Ok(pb::DecodeEvent {
                event: Some(pb::decode_event::Event::FirstToken(pb::DecodeFirstToken {
                    load_start_ns: load_start,
                    at_ns: first,
                })),
            }))
            .await;
        let (tx, rx) = oneshot::channel();
        joining
            .send(Joining {
                request: job.request,
                input: job.input_tokens as u64,
                output: job.output_tokens,
                first_token: first,
                done: tx,
            })
            .map_err(|_| Status::internal("the decode batch stopped"))?;
        let (finish, tbt_s, tokens) = rx
            .await
            .map_err(|_| Status::internal("the decode batch stopped"))?;
        let _ = events
            .send(Ok(pb::DecodeEvent {
                event: Some(pb::decode_event::Event::Done(pb::DecodeDone {
                    finish_ns: finish,
                    tbt_s,
                    tokens: tokens as u64,
                    kv_bytes: bytes.len() as u64,
                    wrong_bytes: wrong,
                })),
            }))
            .await;
        Ok(())
    }
}

/// A request in a decode batch.
struct Running {
    request: u32,
    input: u64,
    output: u32,
    tokens: u32,
    last: u64,
    intervals: LongestIntervals,
    done: oneshot::Sender<(u64, f64, u32)>,
}

/// Continuous batching, as the simulator's decode instance: at each
/// iteration's start the waiting requests whose KV fits join (a request
/// larger than the whole budget runs alone rather than never), then every
/// request in the batch emits one token after the cost model's step time.
async fn decode_loop(
    model: WorkerModel,
    mut inbox: mpsc::UnboundedReceiver<Joining>,
    busy: Arc<AtomicU64>,
    emitted: Arc<Mutex<std::collections::BTreeMap<u32, u32>>>,
) {
    let mut waiting: VecDeque<Joining> = VecDeque::new();
    let mut batch: Vec<Running> = Vec::new();
    let need = |input: u64, output: u32| input + output as u64;
    loop {
        if batch.is_empty() && waiting.is_empty() {
            match inbox.recv().await {
                Some(j) => {
                    emitted.lock().insert(j.request, 1);
                    waiting.push_back(j);
                }
                None => return,
            }
        }
        while let Ok(j) = inbox.try_recv() {
            emitted.lock().insert(j.request, 1);
            waiting.push_back(j);
        }
        let mut in_batch: u64 = batch.iter().map(|r| need(r.input, r.output)).sum();
        while let Some(j) = waiting.front() {
            let fits = in_batch + need(j.input, j.output) <= model.kv_tokens || batch.is_empty();
            if batch.len() >= model.max_batch as usize || !fits {
                break;
            }
            let Some(j) = waiting.pop_front() else { break };
            in_batch += need(j.input, j.output);
            if j.output <= 1 {
                emitted.lock().remove(&j.request);
                let _ = j.done.send((j.first_token, 0.0, 1));
                continue;
            }
            batch.push(Running {
                request: j.request,
                input: j.input,
                output: j.output,
                tokens: 1,
                last: j.first_token,
                intervals: LongestIntervals::for_output(j.output),
                done: j.done,
            });
        }
        if batch.is_empty() {
            continue;
        }
        let ctx: u64 = batch.iter().map(|r| r.input + r.tokens as u64).sum();
        let start = host_monotonic_ns();
        let step = model
            .cost
            .decode_step_time(batch.len() as u32, ctx)
            .0
            .max(1);
        wait_until_ns(start.saturating_add(step)).await;
        let end = host_monotonic_ns();
        busy.fetch_add(end - start, Ordering::Relaxed);
        let mut keep = Vec::with_capacity(batch.len());
        let mut shown = emitted.lock();
        for mut r in batch.drain(..) {
            r.intervals.push(Nanos(end.saturating_sub(r.last)));
            r.last = end;
            r.tokens += 1;
            if r.tokens >= r.output {
                shown.remove(&r.request);
                let tbt = r.intervals.tbt_s();
                let _ = r.done.send((end, tbt, r.tokens));
            } else {
                shown.insert(r.request, r.tokens);
                keep.push(r);
            }
        }
        drop(shown);
        batch = keep;
    }
}

type EventStream<T> = ReceiverStream<Result<T, Status>>;

/// The gRPC face of a [`Worker`].
pub struct WorkerService(pub Arc<Worker>);

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    async fn describe(
        &self,
        _req: tonic::Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeReply>, Status> {
        let w = &self.0;
        Ok(Response::new(pb::DescribeReply {
            version: VERSION,
            role: w.model.role.name().to_string(),
            index: w.model.index,
            segment: w.segment.clone(),
            bytes_per_token: w.model.bytes_per_token,
            busy_ns: w.busy_ns.load(Ordering::Relaxed),
            retrying_blocks: w.retrying.load(Ordering::SeqCst),
            dropped_blocks: w.dropped.load(Ordering::SeqCst),
            late_written_bytes: w.late_written.load(Ordering::SeqCst),
        }))
    }

    async fn send(
        &self,
        req: tonic::Request<pb::SendJob>,
    ) -> Result<Response<pb::SendReply>, Status> {
        let job = req.into_inner();
        if job.bytes == 0 || job.bytes > MAX_SEND_BYTES {
            return Err(Status::invalid_argument(format!(
                "a send of 1 to {MAX_SEND_BYTES} bytes, got {}",
                job.bytes
            )));
        }
        let w = &self.0;
        let mut client = w.client().await?;
        let buf = Buffer::zeroed(job.bytes)
            .map_err(|e| Status::resource_exhausted(format!("a send buffer: {e}")))?;
        let opts = PutOptions {
            replicas: 1,
            preferred_segment: Some(job.segment),
            soft_pin: false,
            only_preferred: true,
        };
        wait_until_ns(job.start_ns).await;
        let start = host_monotonic_ns();
        let r = client.put_from(&job.key, &buf, &opts).await;
        let end = host_monotonic_ns();
        if r.is_ok() {
            let _ = client.remove(&job.key, true).await;
        }
        w.give_back(client);
        r.map_err(|e| status("the send", e))?;
        Ok(Response::new(pb::SendReply {
            start_ns: start,
            end_ns: end,
        }))
    }

    async fn load(
        &self,
        _req: tonic::Request<pb::LoadRequest>,
    ) -> Result<Response<pb::LoadReply>, Status> {
        let requests = self
            .0
            .emitted
            .lock()
            .iter()
            .map(|(&request, &tokens)| pb::RequestLoad { request, tokens })
            .collect();
        Ok(Response::new(pb::LoadReply { requests }))
    }

    type PrefillStream = EventStream<pb::PrefillEvent>;

    async fn prefill(
        &self,
        req: tonic::Request<pb::PrefillJob>,
    ) -> Result<Response<Self::PrefillStream>, Status> {
        let job = req.into_inner();
        if self.0.model.role != WorkerRole::Prefill {
            return Err(Status::failed_precondition("not a prefill worker"));
        }
        check_prefill(&job, self.0.model.block_tokens)?;
        let (tx, rx) = mpsc::channel(4);
        let w = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = w.prefill(job, tx.clone()).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DecodeStream = EventStream<pb::DecodeEvent>;

    async fn decode(
        &self,
        req: tonic::Request<pb::DecodeJob>,
    ) -> Result<Response<Self::DecodeStream>, Status> {
        let job = req.into_inner();
        if job.input_tokens == 0 || job.output_tokens < 2 {
            return Err(Status::invalid_argument(
                "a decode job needs input tokens and at least 2 output tokens",
            ));
        }
        let (tx, rx) = mpsc::channel(4);
        let w = self.0.clone();
        tokio::spawn(async move {
            if let Err(e) = w.decode(job, tx.clone()).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A prefill job's fields agree with each other.
fn check_prefill(job: &pb::PrefillJob, block_tokens: u32) -> Result<(), Status> {
    let blocks = (job.input_tokens as u64).div_ceil(block_tokens as u64);
    if job.input_tokens == 0 || job.blocks.len() as u64 != blocks {
        return Err(Status::invalid_argument(format!(
            "a prefill job of {} input tokens needs {blocks} blocks of {block_tokens} tokens, got {}",
            job.input_tokens,
            job.blocks.len()
        )));
    }
    if job.blocks.len() > MAX_JOB_BLOCKS {
        return Err(Status::invalid_argument(format!(
            "a prefill job carries at most {MAX_JOB_BLOCKS} blocks"
        )));
    }
    if job.fetch_end as usize > job.blocks.len() || job.fetch_start > job.fetch_end {
        return Err(Status::invalid_argument(format!(
            "fetch range {}..{} outside the request's {} blocks",
            job.fetch_start,
            job.fetch_end,
            job.blocks.len()
        )));
    }
    if job.run.is_empty() || job.run.len() > 64 {
        return Err(Status::invalid_argument("a run tag of 1 to 64 bytes"));
    }
    Ok(())
}

/// Serves `worker` on `listener` until `shutdown` completes; every call
/// must carry the cluster secret.
pub async fn serve(
    worker: Arc<Worker>,
    secret: Secret,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let svc = WorkerServer::new(WorkerService(worker))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, Authenticate(secret));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("the worker's RPC server: {e}"))
}

/// A worker process's settings.
pub struct WorkerNode {
    pub model: WorkerModel,
    /// Its own DRAM segment's name (served by the store node beside it:
    /// [`WorkerRole::segment`]).
    pub segment: String,
    pub secret: Secret,
    /// How its jobs reach the store.
    pub client: ClientConfig,
    /// Where the Conductor's calls arrive.
    pub rpc: tokio::net::TcpListener,
}

/// Runs a worker until `shutdown` turns true. Its DRAM segment is a store
/// node's (a separate process, so that the store can fail while the worker
/// lives on). `ready` gets the RPC address once it serves.
pub async fn run_worker(
    node: WorkerNode,
    shutdown: watch::Receiver<bool>,
    ready: Option<oneshot::Sender<std::net::SocketAddr>>,
) -> Result<(), String> {
    let addr = node
        .rpc
        .local_addr()
        .map_err(|e| format!("the worker's RPC address: {e}"))?;
    let worker = Worker::new(node.model, node.segment, node.client);
    if let Some(r) = ready {
        let _ = r.send(addr);
    }
    let mut stop = shutdown.clone();
    serve(worker, node.secret, node.rpc, async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await
}
