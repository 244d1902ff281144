//! Per-tenant writer computes: started on a tenant's first request, stopped when idle.
//!
//! Each running tenant has one OS thread that owns its [`Compute`] (a wasmtime store is not
//! `Sync`, and SQLite runs one statement at a time anyway) and a bounded queue of jobs. The
//! thread starts the compute on its first job, which includes starting a writer (resuming the
//! epoch of the tenant's last writer, or recovering the volume under a new one: `writer_start`);
//! after `idle_timeout` with no job it drops everything and exits: a tenant that is idle costs
//! no compute.
//!
//! After a statement, the thread answers with the LSN the response depends on (the newest LSN
//! the writer has assigned: anything the statement could have seen); the HTTP handler holds the
//! response until the VDL reaches it. What happens on failure:
//! - a commit refused for lack of a write quorum (`read_only`): nothing left the compute and
//!   SQLite rolled the transaction back; the instance is replaced (cheap) but the writer and its
//!   epoch are kept, so reads go on while the write quorum is lost;
//! - any other storage failure, a trap or a durability wait that times out: the writer is failed,
//!   the compute thrown away, and the next request recovers the volume under a new epoch.
//!   Requests queued behind it run on the new writer; responses held for durability by the
//!   failed writer fail with a retryable `unavailable` (their commits' fate is settled by the
//!   recovery, not guessed);
//! - a statement timeout: the instance is thrown away (its SQLite may hold half a transaction
//!   that never left it); the writer is kept unless something was shipped during the statement;
//! - the write quorum lost **with commits in flight** (AZ + 1 down under load): the writer is
//!   [in limbo](VolumeWriter::in_limbo). Those commits reached three members at most, so they can
//!   neither become durable nor be truncated (recovery needs four members too) until a fourth
//!   returns. The writer, its epoch and its instance are kept; requests are handed to the
//!   tenant's reader and run read-only at the VDL (reads answered, writes refused `read_only`);
//!   responses held for the unsettled commits are answered `unavailable` (outcome unknown) at the
//!   commit timeout, without failing the writer, and held responses that shipped nothing run
//!   again at the VDL at once. When a fourth member returns, gossip makes the commits durable and
//!   the writer serves as before; if they cannot be filled, the next request fails the writer
//!   and recovery settles them. RFC 0004.
//!
//! ## More active tenants than instance slots
//!
//! The engine has `--max-computes` instance slots (writers and readers alike). A start that
//! finds them all taken marks the pool **under pressure** for [`PRESSURE_HOLD`] and tries again
//! for up to [`START_WAIT_MAX`]. Only an instance that could not be created counts: one that
//! started but cannot open its tenant's database ([`ComputeError::Unopenable`]: corrupt, or a
//! malformed schema) is that tenant's own error, answered at once with `corrupt`, and costs the
//! other tenants nothing. Meanwhile every writer and reader thread that has been idle for
//! [`PRESSURE_IDLE_MIN`] drops its instance (it checks every [`PRESSURE_TICK`]). A tenant that
//! gives its instance back keeps its writer, its epoch and its page cache: its next request
//! starts a new instance (about a millisecond) and no recovery.
//!
//! ## Readers
//!
//! `"replica": true` requests go to the tenant's **reader** thread instead ([`crate::compute_pool::reader`]),
//! which has its own queue and idle timeout. A reader needs a live writer (its VDL and redo
//! stream): it asks the writer's thread for one with a `Job::StartWriter`, and replica traffic
//! keeps the writer's thread from stopping while the reader serves.

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::page_client::PageClient;
pub mod reader;
mod writer_start;

use crate::volume::{Volume, VolumePages};
use crate::volume_writer::{ResumePoint, VolumeWriter, VolumeWriterConfig};
use borealis_core::quorum::WRITE_QUORUM;
use borealis_core::{ErrorKind, Lsn, SegmentId, TenantId};
use borealis_utils::LockExt;
use compute_abi::{ExecRequest, ExecResponse, Keyed};
use compute_host::{Compute, ComputeEngine, ComputeError};
use reader::{run_reader, ReadMode, ReaderJob, ReplicaOutput};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Jobs queued per tenant (writer and reader each) before new requests are refused as
/// `unavailable`.
const TENANT_QUEUE_JOBS_MAX: usize = 256;
/// How long a writer in limbo waits, once a write quorum is back, for gossip to make the commits
/// caught by the loss durable before it gives up on them and recovery settles them. Gossip fills
/// a returning member in well under a second (drills 1, 3b).
const LIMBO_SETTLE_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub idle_timeout: Duration,
    /// A statement's time limit when its request asks for none.
    pub statement_timeout: Duration,
    /// The most a request may ask for (`"timeout_ms"`).
    pub statement_timeout_max: Duration,
    /// How long an `Idempotency-Key` is honoured after its request was recorded.
    pub idempotency_retention: Duration,
    /// How long a response may wait for the VDL before the commit is declared of unknown outcome.
    pub commit_timeout: Duration,
    pub cache_pages: u32,
    pub host_cache_pages: usize,
    /// The longest sequential read-ahead of a compute (writer or reader), in pages (1: none).
    pub read_ahead_pages: usize,
    pub log: VolumeWriterConfig,
    pub pageservers: Vec<String>,
}

impl PoolConfig {
    /// The time limit `request` runs under: its own (`"timeout_ms"`, checked against
    /// `statement_timeout_max` when it was parsed) or the gateway's.
    pub fn timeout_of(&self, request: &ExecRequest) -> Duration {
        request.timeout_ms.map_or(self.statement_timeout, |ms| {
            Duration::from_millis(u64::from(ms))
        })
    }
}

/// What a job returns: the guest's response, and the LSN it depends on.
pub struct JobOutput {
    pub response: ExecResponse,
    pub depends_on: Lsn,
    pub writer: Arc<VolumeWriter>,
    /// The request, when it shipped nothing: if the commits it saw are caught by a lost write
    /// quorum, it can be run again read-only at the VDL instead of waiting for them. Never for a
    /// request with an idempotency key.
    pub rerun: Option<ExecRequest>,
    /// A request with an idempotency key that wrote, now or in an earlier run: the LSN of the
    /// commit that recorded it, which every answer for the key carries.
    pub keyed: Option<KeyedAnswer>,
    /// The job shipped a commit: the request may have taken effect.
    pub shipped: bool,
}

/// How a request with an idempotency key was answered (RFC 0014 §6).
#[derive(Clone, Copy, Debug)]
pub struct KeyedAnswer {
    /// The commit's LSN as its lsn note recorded it.
    pub lsn: Lsn,
    /// Answered from the record of an earlier run; nothing ran now.
    pub replayed: bool,
}

/// Where a request ran.
pub enum Executed {
    /// On the writer's instance; the response waits until `depends_on` is durable.
    Writer(JobOutput),
    /// Read-only at the VDL, because the writer is [in limbo](VolumeWriter::in_limbo): a write in
    /// it was refused `read_only`. Durable already.
    AtVdl(ReplicaOutput),
}

/// What the writer's thread did with an `Exec` job.
enum Ran {
    Output(JobOutput),
    /// The writer is in limbo: the request is handed back, to be run at the VDL.
    QuorumLost(ExecRequest),
}

/// After a compute instance could not be created (every instance slot is taken, most likely), how
/// long idle computes keep giving their instances back.
pub const PRESSURE_HOLD: Duration = Duration::from_secs(5);
/// Under pressure, an instance idle this long is given back (its tenant keeps its writer; the
/// next request starts a new instance over the writer's warm page cache).
pub const PRESSURE_IDLE_MIN: Duration = Duration::from_millis(500);
/// How long starting a compute waits for an instance slot to be given back.
pub const START_WAIT_MAX: Duration = Duration::from_secs(3);
/// How often a waiting writer thread looks for pressure.
const PRESSURE_TICK: Duration = Duration::from_millis(250);

/// What the writer's thread is asked to do.
enum Job {
    /// Run statements on the writer compute.
    Exec {
        request: ExecRequest,
        reply: oneshot::Sender<Result<Ran, ApiError>>,
    },
    /// A reader needs a live writer (its VDL and redo stream): recover one if none runs.
    StartWriter {
        reply: oneshot::Sender<Result<Arc<VolumeWriter>, ApiError>>,
    },
}

/// A tenant's status as the API shows it.
#[derive(Default)]
pub struct TenantStatus {
    pub running: bool,
    pub vdl: Lsn,
    pub epoch: u64,
    /// When the tenant's reader last took a request (keeps the writer from going idle).
    pub replica_active_at: Option<Instant>,
    /// The newest read point a reader of this tenant served at: a new reader never starts below.
    pub replica_read_point: Lsn,
}

struct Slot<J> {
    jobs: SyncSender<J>,
    /// Tells a slot from its successor after an idle exit.
    generation: u64,
}

type Slots<J> = Mutex<HashMap<TenantId, Slot<J>>>;

pub struct ComputePool {
    engine: ComputeEngine,
    config: PoolConfig,
    slots: Slots<Job>,
    readers: Slots<ReaderJob>,
    generations: std::sync::atomic::AtomicU64,
    statuses: Mutex<HashMap<TenantId, Arc<Mutex<TenantStatus>>>>,
    metrics: Arc<Metrics>,
    rt: Handle,
    /// Until when idle computes give their instances back ([`PRESSURE_HOLD`]).
    pressure_until: Mutex<Option<Instant>>,
    /// Per idle tenant whose writer retired settled: where the next writer resumes its epoch
    /// instead of recovering (RFC 0017). Bounded: `writer_start::RESUME_POINTS_MAX`.
    resume_points: Mutex<HashMap<TenantId, ResumePoint>>,
}

impl ComputePool {
    pub fn new(
        engine: ComputeEngine,
        config: PoolConfig,
        metrics: Arc<Metrics>,
        rt: Handle,
    ) -> Arc<Self> {
        assert!(!config.pageservers.is_empty(), "at least one pageserver");
        Arc::new(Self {
            engine,
            config,
            slots: Mutex::default(),
            readers: Mutex::default(),
            generations: Default::default(),
            statuses: Mutex::default(),
            metrics,
            rt,
            pressure_until: Mutex::new(None),
            resume_points: Mutex::default(),
        })
    }

    /// Whether computes should give back idle instances: one failed to start lately.
    pub(crate) fn under_pressure(&self) -> bool {
        self.pressure_until
            .locked()
            .is_some_and(|u| Instant::now() < u)
    }

    /// Whether an instance idle for `idle` is to be given back now (the caller drops it).
    pub(crate) fn give_back(&self, idle: Duration) -> bool {
        let give = self.under_pressure() && idle >= PRESSURE_IDLE_MIN;
        if give {
            self.metrics
                .computes_given_back
                .fetch_add(1, Ordering::Relaxed);
            debug!(
                idle_ms = idle.as_millis() as u64,
                "gave back an idle compute instance: every slot is taken"
            );
        }
        give
    }

    /// Starts a compute over the backend `backend()` makes. A start that fails with
    /// [`ComputeError::Startup`] (every instance slot taken, most likely) asks idle computes to
    /// give theirs back and tries again, for up to [`START_WAIT_MAX`]; any other failure (the
    /// tenant's database cannot be opened, a backend error, a bug) is returned at once and puts
    /// no pressure on the pool.
    pub(crate) fn start_compute(
        &self,
        mut backend: impl FnMut() -> Box<dyn compute_host::Backend>,
    ) -> Result<Compute, ComputeError> {
        let deadline = Instant::now() + START_WAIT_MAX;
        loop {
            match Compute::start(&self.engine, backend(), self.config.cache_pages) {
                Err(ComputeError::Startup(why)) if Instant::now() < deadline => {
                    let first = !self.under_pressure();
                    *self.pressure_until.locked() = Some(Instant::now() + PRESSURE_HOLD);
                    if first {
                        warn!(error = %why, "a compute could not start: asking idle computes to give their instances back");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn runtime(&self) -> &Handle {
        &self.rt
    }

    /// A client of the pageservers, which serve a tenant's segments (each its own).
    pub fn page_client(&self) -> PageClient {
        PageClient::new(
            self.config.pageservers.clone(),
            self.config.log.layout,
            self.config.log.tokens.clone(),
            self.metrics.clone(),
        )
    }

    /// The pageserver that serves `segment` of `tenant` (each segment has its own, chosen by
    /// rendezvous hashing over the pool).
    pub fn pageserver_for(&self, tenant: TenantId, segment: SegmentId) -> &str {
        let n = self.config.pageservers.len();
        &self.config.pageservers[crate::page_client::pageserver_of(tenant, segment, n)]
    }

    pub fn status(&self, tenant: TenantId) -> (bool, Lsn, u64) {
        let statuses = self.statuses.locked();
        match statuses.get(&tenant) {
            Some(s) => {
                let s = s.locked();
                (s.running, s.vdl, s.epoch)
            }
            None => (false, Lsn::INVALID, 0),
        }
    }

    fn tenant_status(&self, tenant: TenantId) -> Arc<Mutex<TenantStatus>> {
        self.statuses.locked().entry(tenant).or_default().clone()
    }

    /// Stops a tenant's computes, writer and reader (tenant deleted).
    pub fn stop(&self, tenant: TenantId) {
        let mut slots = self.slots.locked();
        slots.remove(&tenant);
        // Under the slots lock, which a retiring writer keeps its resume point under.
        self.forget_resume_point(tenant);
        drop(slots);
        self.readers.locked().remove(&tenant);
    }

    /// Runs `request` on the tenant's reader, at its read point (a durable VDL). The answer
    /// needs no durability wait.
    pub async fn execute_replica(
        self: &Arc<Self>,
        tenant: TenantId,
        request: ExecRequest,
    ) -> Result<ReplicaOutput, ApiError> {
        self.run_on_reader(tenant, request, ReadMode::Replica).await
    }

    /// Runs `request` read-only at the writer's VDL, on the tenant's reader, because the writer
    /// is in limbo (write quorum lost with commits in flight): reads are answered, writes
    /// refused `read_only`.
    pub async fn execute_at_vdl(
        self: &Arc<Self>,
        tenant: TenantId,
        request: ExecRequest,
    ) -> Result<ReplicaOutput, ApiError> {
        self.metrics
            .quorum_lost_requests
            .fetch_add(1, Ordering::Relaxed);
        self.run_on_reader(tenant, request, ReadMode::QuorumLost)
            .await
    }

    async fn run_on_reader(
        self: &Arc<Self>,
        tenant: TenantId,
        request: ExecRequest,
        mode: ReadMode,
    ) -> Result<ReplicaOutput, ApiError> {
        let (tx, rx) = oneshot::channel();
        let job = ReaderJob {
            request,
            mode,
            reply: tx,
        };
        self.enqueue(&self.readers, tenant, job, move |pool, generation, rx| {
            std::thread::Builder::new()
                .name(format!("reader-{tenant}"))
                .spawn(move || run_reader(pool, tenant, generation, rx))
        })?;
        rx.await.unwrap_or_else(|_| {
            Err(ApiError::unavailable(
                "the tenant's reader stopped while running the request; retry",
            ))
        })
    }

    /// A live writer for `tenant`, started (recovered) if none runs. Blocks: call it from a
    /// compute thread, never from the runtime.
    pub(crate) fn live_writer(
        self: &Arc<Self>,
        tenant: TenantId,
    ) -> Result<Arc<VolumeWriter>, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue_writer(tenant, Job::StartWriter { reply: tx })?;
        self.rt.block_on(rx).unwrap_or_else(|_| {
            Err(ApiError::unavailable(
                "the tenant's writer stopped while starting; retry",
            ))
        })
    }

    /// A reader took a request: its writer must not go idle.
    pub(crate) fn note_replica_activity(&self, tenant: TenantId) {
        set_status(&self.tenant_status(tenant), |s| {
            s.replica_active_at = Some(Instant::now())
        });
    }

    /// The newest read point the tenant's replicas served at (0 if none ever did).
    pub fn replica_read_point(&self, tenant: TenantId) -> Lsn {
        let statuses = self.statuses.locked();
        statuses
            .get(&tenant)
            .map_or(Lsn::INVALID, |s| s.locked().replica_read_point)
    }

    pub(crate) fn set_replica_read_point(&self, tenant: TenantId, read_point: Lsn) {
        set_status(&self.tenant_status(tenant), |s| {
            assert!(
                read_point >= s.replica_read_point,
                "replica read point went backwards: {} after {}",
                read_point,
                s.replica_read_point
            );
            s.replica_read_point = read_point;
        });
    }

    /// An idle reader asks to stop: `None` once its slot is gone (no job can reach it any
    /// more), or the job that slipped in meanwhile.
    pub(crate) fn retire_reader(
        &self,
        tenant: TenantId,
        generation: u64,
        jobs: &Receiver<ReaderJob>,
    ) -> Option<ReaderJob> {
        retire(&self.readers, tenant, generation, jobs, || {
            self.metrics.forget_replica(tenant)
        })
    }

    /// Runs `request` on the tenant's writer compute, or read-only at the VDL while the writer
    /// is in limbo.
    pub async fn execute(
        self: &Arc<Self>,
        tenant: TenantId,
        request: ExecRequest,
    ) -> Result<Executed, ApiError> {
        let (tx, rx) = oneshot::channel();
        self.enqueue_writer(tenant, Job::Exec { request, reply: tx })?;
        let ran = rx.await.unwrap_or_else(|_| {
            Err(ApiError::unavailable(
                "the tenant's compute stopped while running the request; retry",
            ))
        })?;
        match ran {
            Ran::Output(out) => Ok(Executed::Writer(out)),
            Ran::QuorumLost(request) => self
                .execute_at_vdl(tenant, request)
                .await
                .map(Executed::AtVdl),
        }
    }

    fn enqueue_writer(self: &Arc<Self>, tenant: TenantId, job: Job) -> Result<(), ApiError> {
        let status = self.tenant_status(tenant);
        self.enqueue(&self.slots, tenant, job, move |pool, generation, rx| {
            std::thread::Builder::new()
                .name(format!("compute-{tenant}"))
                .spawn(move || pool.worker(tenant, generation, rx, status))
        })
    }

    /// Queues `job` on the tenant's thread in `slots`, starting the thread (`spawn`) if none
    /// runs.
    fn enqueue<J: Send + 'static>(
        self: &Arc<Self>,
        slots: &Slots<J>,
        tenant: TenantId,
        mut job: J,
        spawn: impl FnOnce(Arc<Self>, u64, Receiver<J>) -> std::io::Result<std::thread::JoinHandle<()>>,
    ) -> Result<(), ApiError> {
        let mut spawn = Some(spawn);
        for _ in 0..2 {
            let (sender, generation) = {
                let mut slots = slots.locked();
                match slots.get(&tenant) {
                    Some(s) => (s.jobs.clone(), s.generation),
                    None => {
                        let Some(spawn) = spawn.take() else { break };
                        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
                        let (tx, rx) = sync_channel(TENANT_QUEUE_JOBS_MAX);
                        spawn(self.clone(), generation, rx).map_err(|e| {
                            ApiError::unavailable(format!("could not start a compute thread: {e}"))
                        })?;
                        slots.insert(
                            tenant,
                            Slot {
                                jobs: tx.clone(),
                                generation,
                            },
                        );
                        (tx, generation)
                    }
                }
            };
            match sender.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(_)) => {
                    return Err(ApiError::unavailable(format!(
                        "tenant is busy: {TENANT_QUEUE_JOBS_MAX} requests already queued"
                    )))
                }
                Err(TrySendError::Disconnected(j)) => {
                    // The thread went idle and exited between lookup and send: start a new one.
                    job = j;
                    let mut slots = slots.locked();
                    if slots
                        .get(&tenant)
                        .is_some_and(|s| s.generation == generation)
                    {
                        slots.remove(&tenant);
                    }
                }
            }
        }
        Err(ApiError::unavailable(
            "could not start the tenant's compute; retry",
        ))
    }

    fn worker(
        self: Arc<Self>,
        tenant: TenantId,
        generation: u64,
        jobs: Receiver<Job>,
        status: Arc<Mutex<TenantStatus>>,
    ) {
        let _span = tracing::info_span!("compute", tenant = %tenant).entered();
        let mut writer: Option<Arc<VolumeWriter>> = None;
        let mut compute: Option<Compute> = None;
        // The writer's pages, kept across its instances (`volume.rs`).
        let mut pages: Option<Arc<Mutex<VolumePages>>> = None;
        self.metrics
            .running_computes
            .fetch_add(1, Ordering::Relaxed);
        set_status(&status, |s| s.running = true);
        let mut tenant_deleted = false;
        // When the last job ended (or the idle clock was last restarted).
        let mut idle_since = Instant::now();
        loop {
            // Wakes every PRESSURE_TICK to give the instance back if the pool is full.
            let wait = self
                .config
                .idle_timeout
                .saturating_sub(idle_since.elapsed())
                .clamp(Duration::from_millis(1), PRESSURE_TICK);
            let job = match jobs.recv_timeout(wait) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout)
                    if idle_since.elapsed() < self.config.idle_timeout =>
                {
                    if compute.is_some() && self.give_back(idle_since.elapsed()) {
                        compute = None;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    let replica_active = status
                        .locked()
                        .replica_active_at
                        .is_some_and(|t| t.elapsed() < self.config.idle_timeout);
                    let unsettled = writer.as_ref().is_some_and(|w| {
                        w.is_live() && w.last_lsn() > w.vdl() && !w.limbo_stuck(LIMBO_SETTLE_GRACE)
                    });
                    if unsettled {
                        // Responses still wait for its commits (a large commit's fsyncs can
                        // outlast the idle timeout; in limbo they wait for a fourth member, and
                        // it is what serves reads meanwhile): retiring now would stop its log
                        // and fail them. Stuck in limbo with a quorum back, or failed, it
                        // retires like any idle writer: the next recovery settles the commits.
                        compute = None;
                        idle_since = Instant::now();
                        continue;
                    }
                    if replica_active {
                        // Its reader needs this writer's VDL and redo stream, not its SQLite:
                        // the instance goes, the writer stays.
                        compute = None;
                        idle_since = Instant::now();
                        continue;
                    }
                    // Under the slots lock: once a successor can start, this writer is no longer
                    // live, so a reader never follows an old writer next to a new one.
                    let retired = retire(&self.slots, tenant, generation, &jobs, || {
                        if let Some(w) = &writer {
                            let point = w.resume_point();
                            w.shutdown();
                            if let Some(point) = point {
                                self.keep_resume_point(tenant, point);
                            }
                        }
                        set_status(&status, |s| s.running = false)
                    });
                    match retired {
                        Some(job) => job,
                        None => {
                            info!(
                                idle_s = self.config.idle_timeout.as_secs_f64(),
                                "compute stopped after idle timeout"
                            );
                            break;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    tenant_deleted = true;
                    break;
                }
            };
            self.run_job(tenant, job, &mut writer, &mut compute, &mut pages, &status);
            idle_since = Instant::now();
        }
        drop(compute);
        if let Some(w) = writer {
            w.shutdown();
        }
        if tenant_deleted {
            // Tenant deleted (no successor can share its id): not covered by `retire`.
            set_status(&status, |s| s.running = false);
            self.forget_resume_point(tenant);
        }
        self.metrics
            .running_computes
            .fetch_sub(1, Ordering::Relaxed);
    }

    fn run_job(
        &self,
        tenant: TenantId,
        job: Job,
        writer: &mut Option<Arc<VolumeWriter>>,
        compute: &mut Option<Compute>,
        pages: &mut Option<Arc<Mutex<VolumePages>>>,
        status: &Arc<Mutex<TenantStatus>>,
    ) {
        let publish = |writer: &Option<Arc<VolumeWriter>>| {
            if let Some(w) = writer.as_ref() {
                let (vdl, epoch) = (w.vdl(), w.epoch());
                set_status(status, |s| {
                    s.vdl = vdl;
                    s.epoch = epoch;
                });
            }
        };
        match job {
            Job::Exec { request, reply } => {
                let result = self.run(tenant, request, writer, compute, pages);
                publish(writer);
                let _ = reply.send(result);
            }
            Job::StartWriter { reply } => {
                let result = self.ensure_writer(tenant, writer, compute);
                publish(writer);
                let _ = reply.send(result);
            }
        }
    }

    fn run(
        &self,
        tenant: TenantId,
        request: ExecRequest,
        writer_slot: &mut Option<Arc<VolumeWriter>>,
        compute_slot: &mut Option<Compute>,
        pages_slot: &mut Option<Arc<Mutex<VolumePages>>>,
    ) -> Result<Ran, ApiError> {
        let started = Instant::now();
        let mut writer = self.ensure_writer(tenant, writer_slot, compute_slot)?;
        // Commits that can no longer become durable, though a write quorum is reachable, are
        // settled under a new epoch (recovery truncates what no quorum holds) rather than
        // waited for: none of the members that returned after a lost quorum holds them, or
        // they have waited past the commit timeout with a quorum up all along.
        let unsettleable = if writer.limbo_stuck(LIMBO_SETTLE_GRACE) {
            Some(format!(
                "commits in flight when the write quorum was lost did not settle within {} ms of its return",
                LIMBO_SETTLE_GRACE.as_millis()
            ))
        } else if !writer.in_limbo()
            && writer.reachable_members() >= WRITE_QUORUM
            && writer
                .oldest_unsettled_age()
                .is_some_and(|age| age > self.config.commit_timeout)
        {
            Some(format!(
                "commits did not become durable within {} ms with a write quorum reachable",
                self.config.commit_timeout.as_millis()
            ))
        } else {
            None
        };
        if let Some(why) = unsettleable {
            writer.fail(why);
            writer = self.ensure_writer(tenant, writer_slot, compute_slot)?;
        }
        if writer.in_limbo() {
            if request.keyed.is_some() {
                // Run read-only at the VDL, it could answer "not recorded" for a key whose
                // commit is caught in limbo and may still settle.
                return Err(ApiError::unavailable(
                    "the write quorum is lost with commits in flight: a request with an \
                     Idempotency-Key waits until they settle; retry with the same key",
                ));
            }
            return Ok(Ran::QuorumLost(request));
        }
        let cold = compute_slot.is_none();
        if compute_slot.is_none() {
            let reusable = pages_slot
                .as_ref()
                .filter(|p| p.locked().epoch() == writer.epoch());
            info!(
                epoch = writer.epoch(),
                pages_reused = reusable.is_some(),
                "starting a compute instance"
            );
            let pages = match reusable {
                // The writer's pages, pending ones included: the instance sees every commit.
                Some(p) => p.clone(),
                None => {
                    // New pages start empty and read from storage, so everything this writer
                    // shipped must be durable first (nothing, unless its pages were lost).
                    let last = writer.last_lsn();
                    if let Err(e) = self
                        .rt
                        .block_on(writer.wait_durable(last, self.config.commit_timeout))
                    {
                        writer.fail(e.to_string());
                        *writer_slot = None;
                        return Err(ApiError::unavailable(e.to_string()));
                    }
                    let p = VolumePages::new(&writer, self.config.host_cache_pages);
                    *pages_slot = Some(p.clone());
                    p
                }
            };
            let c = self
                .start_compute(|| {
                    Box::new(Volume::new(
                        tenant,
                        writer.clone(),
                        self.page_client(),
                        pages.clone(),
                        self.rt.clone(),
                        self.config.read_ahead_pages,
                        self.config.host_cache_pages,
                    ))
                })
                .map_err(|e| match e {
                    // The tenant's own database: the writer is fine, and so is the pool.
                    ComputeError::Unopenable(_) => ApiError::from_kind(e.kind(), e.to_string()),
                    e => ApiError::unavailable(format!("compute failed to start: {e}")),
                })?;
            *compute_slot = Some(c);
        }
        if cold {
            self.metrics.cold_starts.observe(started.elapsed());
        }
        let compute = compute_slot.as_mut().expect("set above");
        let before = writer.last_lsn();
        let timeout = self.config.timeout_of(&request);
        let ran = compute
            .exec(&request, timeout)
            .and_then(|response| self.note_keyed(compute, &request, response, &writer));
        match ran {
            Ok((response, keyed)) => {
                let last = writer.last_lsn();
                let rerun = last == before && request.keyed.is_none();
                Ok(Ran::Output(JobOutput {
                    response,
                    depends_on: last,
                    rerun: rerun.then_some(request),
                    keyed,
                    shipped: last != before,
                    writer,
                }))
            }
            Err(e @ ComputeError::RequestTooLarge { .. }) => {
                // Refused before the guest saw it: the instance is fine.
                Err(ApiError::too_large(e.to_string()))
            }
            Err(e) => {
                *compute_slot = None;
                if writer.last_lsn() != before && !matches!(e, ComputeError::Backend(_)) {
                    // Something was shipped before the instance died: whether it commits is
                    // not ours to know any more. Settle it under a new epoch.
                    writer.fail(format!("compute failed after shipping a commit: {e}"));
                    *writer_slot = None;
                    self.metrics
                        .commits_unknown_outcome
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::unavailable(format!(
                        "commit outcome unknown: {e}"
                    )));
                }
                let shipped = writer.last_lsn() != before;
                Err(self.compute_error(e, shipped, &writer, writer_slot))
            }
        }
    }

    /// A keyed request's answer (RFC 0014 §6): a run that recorded its key, or a replay of a
    /// key whose lsn was never noted (a crash came between), gets its lsn note now, in the same
    /// job (no other job of the tenant runs between): `L = writer.last_lsn()`, which right after
    /// a `Recorded` commit is that commit's consistency point. The answer then carries L and
    /// waits, like every answer, for everything shipped before it (the note included) to be
    /// durable, so no client ever sees an lsn that a later answer for the key would not repeat.
    /// A note that fails, however it fails (refused `read_only`, timed out, a trap), is a
    /// [`ComputeError::Invalid`]: never "nothing was written", since the key's write took effect
    /// or may have. After a commit shipped by this job the answer is "commit outcome unknown"
    /// and the writer is replaced; a retry with the same key notes the lsn then. The note runs
    /// under the gateway's `--statement-timeout`, not the request's own `"timeout_ms"`.
    fn note_keyed(
        &self,
        compute: &mut Compute,
        request: &ExecRequest,
        response: ExecResponse,
        writer: &VolumeWriter,
    ) -> Result<(ExecResponse, Option<KeyedAnswer>), ComputeError> {
        let Some(Keyed::Run {
            key,
            expired_before_unix_ms,
            ..
        }) = &request.keyed
        else {
            return Ok((response, None));
        };
        let (results, noted, replayed) = match response {
            ExecResponse::Recorded(results) => (results, None, false),
            ExecResponse::Replayed { results, lsn } => (results, lsn, true),
            other => return Ok((other, None)),
        };
        let lsn = match noted {
            Some(lsn) => Lsn(lsn),
            None => {
                let lsn = writer.last_lsn();
                let note = ExecRequest {
                    statements: Vec::new(),
                    transaction: true,
                    result_bytes_max: 0,
                    timeout_ms: None,
                    keyed: Some(Keyed::Note {
                        key: key.clone(),
                        lsn: lsn.0,
                        expired_before_unix_ms: *expired_before_unix_ms,
                    }),
                };
                let failed = |why: String| {
                    ComputeError::Invalid(format!(
                        "recording the lsn of Idempotency-Key {key:?} failed: {why}"
                    ))
                };
                match compute.exec(&note, self.config.statement_timeout) {
                    // The key's row, and only it, got its lsn.
                    Ok(ExecResponse::Ok(r)) if r.first().is_some_and(|r| r.rows_affected == 1) => {}
                    Ok(other) => return Err(failed(format!("{other:?}"))),
                    Err(e) => return Err(failed(e.to_string())),
                }
                lsn
            }
        };
        let counter = if replayed {
            &self.metrics.idempotent_replays
        } else {
            &self.metrics.idempotency_keys_recorded
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok((
            ExecResponse::Ok(results),
            Some(KeyedAnswer { lsn, replayed }),
        ))
    }

    fn compute_error(
        &self,
        e: ComputeError,
        shipped: bool,
        writer: &Arc<VolumeWriter>,
        writer_slot: &mut Option<Arc<VolumeWriter>>,
    ) -> ApiError {
        match e {
            ComputeError::Backend(be) if be.kind == ErrorKind::ReadOnly && !shipped => {
                let why = writer
                    .refusing_summary()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default();
                ApiError::read_only(format!(
                    "write refused, nothing was written: {}{why}",
                    be.message
                ))
            }
            ComputeError::Timeout { limit } => ApiError::timeout(format!(
                "statement exceeded the {} ms limit and was stopped",
                limit.as_millis()
            )),
            e @ ComputeError::OutOfMemory { .. } if !shipped => {
                // Nothing left the compute: the writer and its epoch stay; only the instance
                // goes. The same statement would fail again: not `unavailable`.
                ApiError::too_large(e.to_string())
            }
            ComputeError::Backend(be) if !shipped => {
                // Storage failed under the statement (a page could not be read) and nothing of
                // it left the compute: the writer and its epoch stay; only the instance goes.
                ApiError::from_kind(be.kind, format!("nothing was written: {}", be.message))
            }
            ComputeError::Backend(be) => {
                writer.fail(be.message.clone());
                *writer_slot = None;
                self.metrics
                    .commits_unknown_outcome
                    .fetch_add(1, Ordering::Relaxed);
                ApiError::from_kind(be.kind, be.message)
            }
            other => {
                writer.fail(other.to_string());
                *writer_slot = None;
                ApiError::unavailable(format!("compute failed: {other}; retry"))
            }
        }
    }
}

fn set_status(s: &Mutex<TenantStatus>, f: impl FnOnce(&mut TenantStatus)) {
    f(&mut s.locked());
}

/// An idle thread asks to stop. Under the slots lock (so no sender can pick the slot up, and
/// no successor thread can start, meanwhile): a job that slipped in is returned to be served;
/// otherwise the thread's slot is removed and `on_retire` runs (still under the lock, so what it
/// records cannot overwrite what a successor records).
fn retire<J>(
    slots: &Slots<J>,
    tenant: TenantId,
    generation: u64,
    jobs: &Receiver<J>,
    on_retire: impl FnOnce(),
) -> Option<J> {
    let mut slots = slots.locked();
    match jobs.try_recv() {
        Ok(job) => Some(job),
        Err(_) => {
            if slots
                .get(&tenant)
                .is_some_and(|s| s.generation == generation)
            {
                slots.remove(&tenant);
                on_retire();
            }
            None
        }
    }
}
