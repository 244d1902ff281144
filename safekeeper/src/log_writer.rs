//! The log writer: one thread that makes everything durable, with group commit.
//!
//! Every change to the disk — writers' appends, peers' repairs, `Hello`s that start an epoch —
//! goes through one bounded queue to one OS thread. The thread takes whatever is queued (up to a
//! bound), writes it all, then fsyncs each segment file it wrote **once**, then publishes the new
//! SCLs, which sends an `Ack` to every writer connection that appended to those segments. While it
//! fsyncs, new appends queue up and become the next group: the busier the safekeeper, the more
//! records each fsync covers.
//!
//! Nothing is acknowledged before its fsync returned. If an fsync (or any write) fails, the data
//! is not known to be on disk and retrying could silently succeed on a clean page cache
//! (PostgreSQL's "fsyncgate"): the process logs at ERROR and exits, and the member is rebuilt from
//! its peers.
//!
//! A `Hello` is a barrier: the group before it is committed first, then the epoch change is made
//! durable on its own, so no append of the old epoch is written after the truncation. A `Trim`
//! is a barrier too: the records it drops must be synced, and it rewrites the segment file. So is
//! adopting a peer's trim point (gossip), which does the same, and dropping a deleted tenant.
//! And so is a recovery's `Fence` (RFC 0014 §2): the appends queued before it are committed
//! (and acked in their epoch) first; those after it are judged against the promise.

use crate::acceptor::TrimPoint;
use crate::acceptor::{AdoptOutcome, AppendOutcome};
use crate::error::SkError;
use crate::metrics::inc;
use crate::records::ParsedRecord;
use crate::store::Store;
use borealis_core::{EpochStart, Lsn, SegmentId, TenantId};
use borealis_wire::{Body, Envelope, SegmentState};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, warn};

/// Operations queued before submitters wait (backpressure on their connections).
pub const WRITE_QUEUE_OPS_MAX: usize = 1024;
/// Bytes of records queued before submitters wait: bounds the memory of the queue.
pub const WRITE_QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;
const _: () = assert!(
    WRITE_QUEUE_BYTES_MAX >= borealis_wire::FRAME_BYTES_MAX,
    "one maximal append must fit the queue"
);
/// Operations one group commit takes at most, so acks are not delayed without bound.
pub const GROUP_OPS_MAX: usize = 512;
/// Record bytes after which a group commit stops taking more: a large commit is fsynced and
/// acknowledged piece by piece, so its writer sees progress (and does not take a busy member
/// for an unresponsive one).
pub const GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Where the error of a fire-and-forget append goes: the connection it came from.
pub struct ErrorReturn {
    pub request_id: u64,
    pub out: mpsc::Sender<Envelope>,
}

pub enum WriteOp {
    Append {
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        vdl: Lsn,
        records: Vec<u8>,
        parsed: Vec<ParsedRecord>,
        errors: ErrorReturn,
        queued_at: Instant,
        _permit: OwnedSemaphorePermit,
    },
    Repair {
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        known_vdl: Lsn,
        records: Vec<u8>,
        parsed: Vec<ParsedRecord>,
        done: oneshot::Sender<Result<AppendOutcome, SkError>>,
        _permit: OwnedSemaphorePermit,
    },
    Hello {
        tenant: TenantId,
        epoch: u64,
        epoch_start_lsn: Lsn,
        history: Vec<EpochStart>,
        done: oneshot::Sender<Result<Vec<SegmentState>, SkError>>,
    },
    Trim {
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        upto: Lsn,
        done: oneshot::Sender<Result<Lsn, SkError>>,
    },
    Fence {
        tenant: TenantId,
        epoch: u64,
        done: oneshot::Sender<Result<Body, SkError>>,
    },
    AdoptTrim {
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        peer_scl: Lsn,
        point: TrimPoint,
        done: oneshot::Sender<Result<AdoptOutcome, SkError>>,
    },
    DropTenant {
        tenant: TenantId,
        done: oneshot::Sender<Result<u64, SkError>>,
    },
}

/// The submitting side of the log writer.
#[derive(Clone)]
pub struct LogWriter {
    ops: mpsc::Sender<WriteOp>,
    bytes: Arc<Semaphore>,
}

impl LogWriter {
    /// Starts the writer thread.
    pub fn spawn(store: Arc<Store>) -> std::io::Result<LogWriter> {
        let (ops, rx) = mpsc::channel(WRITE_QUEUE_OPS_MAX);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(store, rx))?;
        Ok(LogWriter {
            ops,
            bytes: Arc::new(Semaphore::new(WRITE_QUEUE_BYTES_MAX)),
        })
    }

    async fn permit(&self, len: usize) -> Result<OwnedSemaphorePermit, SkError> {
        let n = len.clamp(1, WRITE_QUEUE_BYTES_MAX) as u32;
        self.bytes
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| stopped())
    }

    /// Queues a writer's append; its error (if any) is sent to `errors`.
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        vdl: Lsn,
        records: Vec<u8>,
        parsed: Vec<ParsedRecord>,
        errors: ErrorReturn,
    ) -> Result<(), SkError> {
        let queued_at = Instant::now();
        let _permit = self.permit(records.len()).await?;
        let op = WriteOp::Append {
            tenant,
            segment,
            epoch,
            vdl,
            records,
            parsed,
            errors,
            queued_at,
            _permit,
        };
        self.ops.send(op).await.map_err(|_| stopped())
    }

    /// Writes records a peer supplied and waits until they are durable.
    pub async fn repair(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        known_vdl: Lsn,
        records: Vec<u8>,
        parsed: Vec<ParsedRecord>,
    ) -> Result<AppendOutcome, SkError> {
        let _permit = self.permit(records.len()).await?;
        let (done, rx) = oneshot::channel();
        let op = WriteOp::Repair {
            tenant,
            segment,
            epoch,
            known_vdl,
            records,
            parsed,
            done,
            _permit,
        };
        self.ops.send(op).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Handles a `Hello` and waits until its effects are durable.
    pub async fn hello(
        &self,
        tenant: TenantId,
        epoch: u64,
        epoch_start_lsn: Lsn,
        history: Vec<EpochStart>,
    ) -> Result<Vec<SegmentState>, SkError> {
        let (done, rx) = oneshot::channel();
        self.ops
            .send(WriteOp::Hello {
                tenant,
                epoch,
                epoch_start_lsn,
                history,
                done,
            })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl LogWriter {
    /// Trims a segment's log through what was checkpointed up to `upto`, and waits until the
    /// trim is durable. Returns the segment's trim point after.
    pub async fn trim(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        upto: Lsn,
    ) -> Result<Lsn, SkError> {
        self.barrier(|done| WriteOp::Trim {
            tenant,
            segment,
            epoch,
            upto,
            done,
        })
        .await
    }

    /// Promises `epoch` to a recovering writer (see [`crate::tenant::Tenant::fence`]) once
    /// everything queued before is committed, and waits until the promise is durable. Returns
    /// the `State` to answer with.
    pub async fn fence(&self, tenant: TenantId, epoch: u64) -> Result<Body, SkError> {
        self.barrier(|done| WriteOp::Fence {
            tenant,
            epoch,
            done,
        })
        .await
    }

    /// Deletes a tenant from this safekeeper for good (see [`Store::drop_tenant`]) once
    /// everything queued before is written. Returns the bytes of log freed.
    pub async fn drop_tenant(&self, tenant: TenantId) -> Result<u64, SkError> {
        self.barrier(|done| WriteOp::DropTenant { tenant, done })
            .await
    }

    /// Adopts a peer's trim point learnt by gossip (see [`crate::tenant::Tenant::adopt_trim`]),
    /// and waits until it is durable.
    pub async fn adopt_trim(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        peer_scl: Lsn,
        point: TrimPoint,
    ) -> Result<AdoptOutcome, SkError> {
        self.barrier(|done| WriteOp::AdoptTrim {
            tenant,
            segment,
            epoch,
            peer_scl,
            point,
            done,
        })
        .await
    }

    /// Queues an operation that answers on `done` once it is durable, and waits for the answer.
    async fn barrier<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<Result<T, SkError>>) -> WriteOp,
    ) -> Result<T, SkError> {
        let (done, rx) = oneshot::channel();
        self.ops.send(op(done)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> SkError {
    SkError::Internal("the log writer stopped".into())
}

/// The work of one group commit.
#[derive(Default)]
struct Group {
    /// Per tenant: segments written (to fsync) and segments appended to (to ack).
    dirty: BTreeMap<TenantId, (BTreeSet<SegmentId>, BTreeSet<SegmentId>)>,
    records: usize,
    /// Record bytes taken (written or not: duplicates cost a read of them too).
    bytes: usize,
    appends: Vec<Instant>,
    repairs: Vec<(
        oneshot::Sender<Result<AppendOutcome, SkError>>,
        AppendOutcome,
    )>,
}

/// Stops the process after a disk failure (see the module docs). Never returns.
fn fatal(what: &str, err: &dyn std::fmt::Display) -> ! {
    error!(error = %err, "{what} failed; data is not known to be durable: stopping (rebuild from peers)");
    std::process::exit(70)
}

/// The end of every barrier: a disk failure stops the process (see [`fatal`]); anything else
/// is published (`ReadLog`s waiting on the store wake up) and answered.
fn answer_barrier<T>(
    store: &Store,
    result: Result<T, SkError>,
    what: &str,
    done: oneshot::Sender<Result<T, SkError>>,
) {
    if let Err(SkError::Io(e)) = &result {
        fatal(what, e);
    }
    store.note_commit();
    let _ = done.send(result);
}

fn run(store: Arc<Store>, mut rx: mpsc::Receiver<WriteOp>) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = Group::default();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(op) = next.take() {
            taken += 1;
            match op {
                WriteOp::Hello {
                    tenant,
                    epoch,
                    epoch_start_lsn,
                    history,
                    done,
                } => {
                    commit(&store, std::mem::take(&mut group));
                    let result = if epoch == 0 {
                        Err(SkError::Invalid {
                            tenant,
                            message: "epoch 0 is reserved for \"no writer yet\"".into(),
                        })
                    } else {
                        store
                            .tenant_or_create(tenant)
                            .and_then(|t| t.hello(epoch, epoch_start_lsn, &history))
                    };
                    answer_barrier(
                        &store,
                        result,
                        "writing the epoch or truncating the log",
                        done,
                    );
                }
                WriteOp::Trim {
                    tenant,
                    segment,
                    epoch,
                    upto,
                    done,
                } => {
                    commit(&store, std::mem::take(&mut group));
                    let result = match store.tenant(tenant) {
                        None => Ok(Lsn::INVALID),
                        Some(t) => t.trim(segment, epoch, upto),
                    };
                    let what = "recording a trim point or rewriting a segment file";
                    answer_barrier(&store, result, what, done);
                }
                WriteOp::Fence {
                    tenant,
                    epoch,
                    done,
                } => {
                    commit(&store, std::mem::take(&mut group));
                    // An epoch no writer could ever follow (0, or far above) is refused before
                    // a tenant a node never held is created for it.
                    let fresh = crate::acceptor::TenantAcceptor::default();
                    let result = match (store.tenant(tenant), fresh.judge_fence(epoch)) {
                        (None, crate::acceptor::FenceVerdict::Invalid { reason }) => {
                            Err(SkError::Invalid {
                                tenant,
                                message: reason,
                            })
                        }
                        _ => store.tenant_or_create(tenant).and_then(|t| t.fence(epoch)),
                    };
                    answer_barrier(&store, result, "recording a promised epoch", done);
                }
                WriteOp::AdoptTrim {
                    tenant,
                    segment,
                    epoch,
                    peer_scl,
                    point,
                    done,
                } => {
                    commit(&store, std::mem::take(&mut group));
                    let result = match store.tenant(tenant) {
                        None => Err(store.absent(tenant, epoch)),
                        Some(t) => t.adopt_trim(segment, epoch, peer_scl, point),
                    };
                    let what = "recording an adopted trim point or rewriting a segment file";
                    answer_barrier(&store, result, what, done);
                }
                WriteOp::DropTenant { tenant, done } => {
                    commit(&store, std::mem::take(&mut group));
                    let result = store.drop_tenant(tenant);
                    let what = "writing a tombstone or removing a deleted tenant's log";
                    answer_barrier(&store, result, what, done);
                }
                op => apply(&store, op, &mut group),
            }
            if taken < GROUP_OPS_MAX && group.bytes < GROUP_BYTES_MAX {
                next = rx.try_recv().ok();
            }
        }
        commit(&store, group);
    }
    debug!("log writer stopped: every submitter is gone");
}

fn apply(store: &Store, op: WriteOp, group: &mut Group) {
    let metrics = store.metrics();
    match op {
        WriteOp::Append {
            tenant,
            segment,
            epoch,
            vdl,
            records,
            parsed,
            errors,
            queued_at,
            _permit,
        } => {
            group.bytes += records.len();
            let result = match store.tenant(tenant) {
                None => Err(store.absent(tenant, epoch)),
                Some(t) => t.append(segment, epoch, vdl, &records, &parsed),
            };
            match result {
                Ok(outcome) => {
                    inc(&metrics.appends_total, 1);
                    inc(&metrics.records_appended_total, outcome.written as u64);
                    group.note(tenant, segment, &outcome);
                    group.appends.push(queued_at);
                }
                Err(SkError::Io(e)) => fatal("writing records", &e),
                Err(e) => {
                    inc(&metrics.appends_refused_total, 1);
                    if matches!(e, SkError::DiskBudgetExhausted(_)) {
                        // Logged once per episode by the budget; counted here, per append.
                        inc(&metrics.appends_refused_budget_total, 1);
                    }
                    debug!(%tenant, %segment, error = %e, "append refused");
                    let env = Envelope {
                        request_id: errors.request_id,
                        body: e.to_body(),
                    };
                    if errors.out.try_send(env).is_err() {
                        warn!(%tenant, %segment, error = %e, "could not return an append's error: connection busy or gone");
                    }
                }
            }
        }
        WriteOp::Repair {
            tenant,
            segment,
            epoch,
            known_vdl,
            records,
            parsed,
            done,
            _permit,
        } => {
            group.bytes += records.len();
            let result = match store.tenant(tenant) {
                None => Err(store.absent(tenant, epoch)),
                Some(t) => t.repair(segment, epoch, known_vdl, &records, &parsed),
            };
            match result {
                Ok(outcome) => {
                    inc(
                        &metrics.gossip_records_repaired_total,
                        outcome.written as u64,
                    );
                    group.note(tenant, segment, &outcome);
                    group.repairs.push((done, outcome));
                }
                Err(SkError::Io(e)) => fatal("writing repaired records", &e),
                Err(e) => {
                    let _ = done.send(Err(e));
                }
            }
        }
        WriteOp::Hello { .. }
        | WriteOp::Trim { .. }
        | WriteOp::Fence { .. }
        | WriteOp::AdoptTrim { .. }
        | WriteOp::DropTenant { .. } => {
            unreachable!(
                "hellos, trims, adopted trim points and drops are barriers handled by run()"
            )
        }
    }
}

impl Group {
    fn note(&mut self, tenant: TenantId, segment: SegmentId, outcome: &AppendOutcome) {
        let (dirty, touched) = self.dirty.entry(tenant).or_default();
        if outcome.written > 0 {
            dirty.insert(segment);
        }
        touched.insert(segment);
        self.records += outcome.written;
    }
}

/// fsyncs everything the group wrote, then publishes and acks it.
fn commit(store: &Store, group: Group) {
    if group.dirty.is_empty() {
        return;
    }
    let metrics = store.metrics();
    for (tenant, (dirty, touched)) in &group.dirty {
        let Some(t) = store.tenant(*tenant) else {
            continue;
        };
        match t.commit(dirty, touched) {
            Ok(fsyncs) => inc(&metrics.fsyncs_total, fsyncs as u64),
            Err(e) => fatal("fsync of a segment file", &e),
        }
    }
    store.note_commit();
    if group.records > 0 {
        metrics.commit_batch_records.observe(group.records as u64);
    }
    for queued_at in group.appends {
        metrics.observe_append_latency(queued_at.elapsed());
    }
    for (done, outcome) in group.repairs {
        let _ = done.send(Ok(outcome));
    }
}
