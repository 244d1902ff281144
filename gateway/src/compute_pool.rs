//! Per-tenant writer computes: started on a tenant's first request, stopped when idle.
//!
//! Each running tenant has one OS thread that owns its [`Compute`] (a wasmtime store is not
//! `Sync`, and SQLite runs one statement at a time anyway) and a bounded queue of jobs. The
//! thread starts the compute on its first job, which includes recovering the volume (a new
//! writer epoch); after `idle_timeout` with no job it drops everything and exits: a tenant that is
//! idle costs no compute.
//!
//! After a statement, the thread answers with the LSN the response depends on (the newest LSN
//! the writer has assigned: anything the statement could have seen); the HTTP handler holds the
//! response until the VDL reaches it. What happens on failure:
//! - a commit refused for lack of a write quorum (`read_only`): nothing left the compute and
//!   SQLite rolled the transaction back; the instance is replaced (cheap) but the writer and its
//!   epoch are kept, so reads go on while the write quorum is lost;
//! - any other storage failure, a trap or a durability wait that times out: the writer is failed,
//!   the compute thrown away, and the next request recovers the volume under a new epoch.

use crate::error::ApiError;
use crate::log_writer::{LogWriter, LogWriterConfig};
use crate::metrics::Metrics;
use crate::volume::Volume;
use borealis_core::{ErrorKind, Lsn, TenantId};
use compute_abi::{ExecRequest, ExecResponse};
use compute_host::{Compute, ComputeEngine, ComputeError};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::{info, warn};

/// Jobs queued per tenant before new requests are refused as `unavailable`.
const TENANT_QUEUE_JOBS_MAX: usize = 256;

#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub idle_timeout: Duration,
    pub statement_timeout: Duration,
    /// How long a response may wait for the VDL before the commit is declared of unknown outcome.
    pub commit_timeout: Duration,
    pub cache_pages: u32,
    pub host_cache_pages: usize,
    pub log: LogWriterConfig,
    pub pageservers: Vec<String>,
}

/// What a job returns: the guest's response, and the LSN it depends on.
pub struct JobOutput {
    pub response: ExecResponse,
    pub depends_on: Lsn,
    pub writer: Arc<LogWriter>,
}

struct Job {
    request: ExecRequest,
    reply: oneshot::Sender<Result<JobOutput, ApiError>>,
}

/// A tenant's status as the API shows it.
#[derive(Default)]
pub struct TenantStatus {
    pub running: bool,
    pub vdl: Lsn,
    pub epoch: u64,
}

struct Slot {
    jobs: SyncSender<Job>,
    /// Tells a slot from its successor after an idle exit.
    generation: u64,
}

pub struct ComputePool {
    engine: ComputeEngine,
    config: PoolConfig,
    slots: Mutex<HashMap<TenantId, Slot>>,
    generations: std::sync::atomic::AtomicU64,
    statuses: Mutex<HashMap<TenantId, Arc<Mutex<TenantStatus>>>>,
    metrics: Arc<Metrics>,
    rt: Handle,
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
            generations: Default::default(),
            statuses: Mutex::default(),
            metrics,
            rt,
        })
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The pageserver that serves `tenant`.
    pub fn pageserver_for(&self, tenant: TenantId) -> &str {
        let n = self.config.pageservers.len() as u64;
        &self.config.pageservers[(tenant.0 % n) as usize]
    }

    pub fn status(&self, tenant: TenantId) -> (bool, Lsn, u64) {
        let statuses = self.statuses.lock().unwrap_or_else(|p| p.into_inner());
        match statuses.get(&tenant) {
            Some(s) => {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                (s.running, s.vdl, s.epoch)
            }
            None => (false, Lsn::INVALID, 0),
        }
    }

    /// Stops a tenant's compute (tenant deleted).
    pub fn stop(&self, tenant: TenantId) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&tenant);
    }

    /// Runs `request` on the tenant's writer compute.
    pub async fn execute(
        self: &Arc<Self>,
        tenant: TenantId,
        request: ExecRequest,
    ) -> Result<JobOutput, ApiError> {
        let (tx, rx) = oneshot::channel();
        let mut job = Job { request, reply: tx };
        for _ in 0..2 {
            let (sender, generation) = self.slot(tenant);
            match sender.try_send(job) {
                Ok(()) => {
                    return rx.await.unwrap_or_else(|_| {
                        Err(ApiError::unavailable(
                            "the tenant's compute stopped while running the request; retry",
                        ))
                    })
                }
                Err(TrySendError::Full(_)) => {
                    return Err(ApiError::unavailable(format!(
                        "tenant is busy: {TENANT_QUEUE_JOBS_MAX} requests already queued"
                    )))
                }
                Err(TrySendError::Disconnected(j)) => {
                    // The worker went idle and exited between lookup and send: start a new one.
                    job = j;
                    let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
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

    fn slot(self: &Arc<Self>, tenant: TenantId) -> (SyncSender<Job>, u64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get(&tenant) {
            return (s.jobs.clone(), s.generation);
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        let status = self
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(tenant)
            .or_default()
            .clone();
        let (tx, rx) = sync_channel(TENANT_QUEUE_JOBS_MAX);
        let pool = self.clone();
        std::thread::Builder::new()
            .name(format!("compute-{tenant}"))
            .spawn(move || pool.worker(tenant, rx, status))
            .expect("spawning a compute thread");
        slots.insert(
            tenant,
            Slot {
                jobs: tx.clone(),
                generation,
            },
        );
        (tx, generation)
    }

    fn worker(
        self: Arc<Self>,
        tenant: TenantId,
        jobs: Receiver<Job>,
        status: Arc<Mutex<TenantStatus>>,
    ) {
        let _span = tracing::info_span!("compute", tenant = %tenant).entered();
        let mut writer: Option<Arc<LogWriter>> = None;
        let mut compute: Option<Compute> = None;
        self.metrics
            .running_computes
            .fetch_add(1, Ordering::Relaxed);
        set_status(&status, |s| s.running = true);
        loop {
            let job = match jobs.recv_timeout(self.config.idle_timeout) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    // Idle: leave, unless a job slipped in while we decide (checked under the lock).
                    let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                    match jobs.try_recv() {
                        Ok(job) => {
                            drop(slots);
                            self.run_job(tenant, job, &mut writer, &mut compute, &status);
                            continue;
                        }
                        Err(_) => {
                            slots.remove(&tenant);
                            info!(
                                idle_s = self.config.idle_timeout.as_secs_f64(),
                                "compute stopped after idle timeout"
                            );
                            break;
                        }
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            self.run_job(tenant, job, &mut writer, &mut compute, &status);
        }
        drop(compute);
        if let Some(w) = writer {
            w.shutdown();
        }
        set_status(&status, |s| s.running = false);
        self.metrics
            .running_computes
            .fetch_sub(1, Ordering::Relaxed);
    }

    fn run_job(
        &self,
        tenant: TenantId,
        job: Job,
        writer: &mut Option<Arc<LogWriter>>,
        compute: &mut Option<Compute>,
        status: &Arc<Mutex<TenantStatus>>,
    ) {
        let result = self.run(tenant, job.request, writer, compute);
        if let Some(w) = writer.as_ref() {
            let (vdl, epoch) = (w.vdl(), w.epoch());
            set_status(status, |s| {
                s.vdl = vdl;
                s.epoch = epoch;
            });
        }
        let _ = job.reply.send(result);
    }

    fn run(
        &self,
        tenant: TenantId,
        request: ExecRequest,
        writer_slot: &mut Option<Arc<LogWriter>>,
        compute_slot: &mut Option<Compute>,
    ) -> Result<JobOutput, ApiError> {
        if let Some(w) = writer_slot.as_ref() {
            if let Some(why) = w.failure() {
                info!(why = %why, "replacing failed writer");
                *compute_slot = None;
                *writer_slot = None;
            }
        }
        let cold = compute_slot.is_none();
        let started = Instant::now();
        if writer_slot.is_none() {
            let w = self
                .rt
                .block_on(LogWriter::recover(tenant, self.config.log.clone()))
                .map_err(|e| {
                    self.metrics
                        .recoveries_failed
                        .fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "recovery failed");
                    ApiError::from_kind(e.kind(), e.to_string())
                })?;
            *writer_slot = Some(w);
        }
        let writer = writer_slot.clone().expect("set above");
        if compute_slot.is_none() {
            // A new instance reads pages from storage, so everything this writer shipped must be
            // durable first: the previous instance's pending pages died with its volume cache.
            let last = writer.last_lsn();
            if let Err(e) = self
                .rt
                .block_on(writer.wait_durable(last, self.config.commit_timeout))
            {
                writer.fail(e.to_string());
                *writer_slot = None;
                return Err(ApiError::unavailable(e.to_string()));
            }
            let volume = Volume::new(
                tenant,
                writer.clone(),
                self.pageserver_for(tenant).to_string(),
                self.config.host_cache_pages,
                self.rt.clone(),
            );
            let c = Compute::start(&self.engine, Box::new(volume), self.config.cache_pages)
                .map_err(|e| ApiError::unavailable(format!("compute failed to start: {e}")))?;
            *compute_slot = Some(c);
        }
        if cold {
            self.metrics.cold_starts.observe(started.elapsed());
        }
        let compute = compute_slot.as_mut().expect("set above");
        let before = writer.last_lsn();
        match compute.exec(&request, self.config.statement_timeout) {
            Ok(response) => Ok(JobOutput {
                response,
                depends_on: writer.last_lsn(),
                writer,
            }),
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
                Err(self.compute_error(e, &writer, writer_slot))
            }
        }
    }

    fn compute_error(
        &self,
        e: ComputeError,
        writer: &Arc<LogWriter>,
        writer_slot: &mut Option<Arc<LogWriter>>,
    ) -> ApiError {
        match e {
            ComputeError::Backend(be) if be.kind == ErrorKind::ReadOnly => ApiError::read_only(
                format!("write refused, nothing was written: {}", be.message),
            ),
            ComputeError::Timeout { .. } => ApiError::timeout(format!(
                "statement exceeded the {} ms limit and was stopped",
                self.config.statement_timeout.as_millis()
            )),
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
    f(&mut s.lock().unwrap_or_else(|p| p.into_inner()));
}
