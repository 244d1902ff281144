//! The async driver of a tenant's quorum writer: recovery, one connection per safekeeper,
//! shipping, acknowledgements, VDL waiters.
//!
//! The protocol decisions live in `borealis_quorum` (sans-IO); this module owns sockets, tasks
//! and timers. Each of the six members gets a task that connects, sends `Hello` (installing this
//! writer's epoch, which truncates whatever older writers left above the recovered VDL), then
//! forwards appends and feeds the member's acknowledgements (its SCL after fsync) into the
//! tracker. A member that drops is marked unreachable and reconnected with backoff; records it
//! missed reach it through gossip from its peers, not from us, so the writer keeps no log.
//!
//! `commit` is synchronous and never waits for durability (asynchronous commit, docs/design.md §3):
//! the gateway holds each response until the VDL covers the LSN the response depends on.
//!
//! ## The redo stream for readers
//!
//! A read replica ([`crate::reader`]) follows the writer through a [`RedoTap`]: every MTR the
//! writer ships is also handed, LSN-stamped, to each tap ([`PublishedMtr`]). Taps are filled
//! while the writer's state lock is held, so they see MTRs in LSN order, and an MTR is always
//! in the taps before the VDL can reach it: a reader that reads the VDL and *then* drains its tap
//! holds every MTR up to that VDL. A tap is bounded in bytes; a reader too slow to drain it loses
//! the stream (it is told, and starts over from the pageserver), never the writer's time.

use crate::storage_auth::StorageTokens;
use borealis_core::quorum::{az_of, PG_MEMBERS, READ_QUORUM, WRITE_QUORUM};
use borealis_core::redo::RedoBody;
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, SegmentLayout, TenantId};
use borealis_quorum::recovery::{self, MemberReport};
use borealis_quorum::writer::{ShippedMtr, LAL_LSNS_DEFAULT};
use borealis_quorum::{QuorumWriter, WriteError};
use borealis_wire::{Body, Client, WireError};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

/// Appends queued per member before the member counts as too slow and misses them (it then
/// catches up by gossip). Bounds the memory a stuck member can pin.
const MEMBER_QUEUE_APPENDS_MAX: usize = 4096;
/// Encoded record bytes one `Append` carries at most (one record may exceed it alone, up to a
/// page image plus its header): far below the wire's frame limit, small enough that members
/// write and acknowledge a large commit piece by piece.
pub const APPEND_BYTES_MAX: usize = 1024 * 1024;
const _: () = assert!(
    APPEND_BYTES_MAX + 2 * borealis_core::PAGE_SIZE_BYTES + 64 * 1024
        <= borealis_wire::FRAME_BYTES_MAX,
    "an append, with its largest record and envelope, must fit in a frame"
);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle member connection checks whether the member still needs the newest VDL.
const VDL_NOTICE_INTERVAL: Duration = Duration::from_millis(100);
/// How often a connected member that refuses appends (disk budget) is asked whether it has
/// room again.
const REFUSAL_RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a member may leave records it was sent unacknowledged before it counts as
/// unreachable (a frozen process or a partition that breaks no connection). Well above a slow
/// group-commit fsync; well below the commit timeout, so a lost write quorum is noticed (limbo,
/// RFC 0004) long before held commits give up.
const MEMBER_ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// How long recovery waits for a write quorum to hold the recovered log.
const RECOVERY_DURABLE_WAIT: Duration = Duration::from_secs(10);
/// Bytes of redo one [`RedoTap`] holds before its reader counts as lagging and loses the stream.
/// A reader drains its tap every few milliseconds; this covers seconds of heavy writing.
pub const REDO_TAP_BYTES_MAX: usize = 16 << 20;
/// Bookkeeping charged per record of a [`PublishedMtr`], on top of its body.
const PUBLISHED_RECORD_OVERHEAD_BYTES: usize = 48;

/// One commit as the writer shipped it: what a reader applies to the pages it has cached.
#[derive(Debug)]
pub struct PublishedMtr {
    /// LSN of the first record: the previous MTR's `commit_lsn` + 1 (LSNs are consecutive).
    pub first_lsn: Lsn,
    /// LSN of the last record, the consistency point: the MTR is visible once the VDL reaches it.
    pub commit_lsn: Lsn,
    /// Every page change of the commit, ascending by LSN.
    pub records: Vec<(Lsn, PageNo, RedoBody)>,
    /// When the writer shipped it (replica lag in time is measured from here).
    pub shipped_at: Instant,
}

impl PublishedMtr {
    /// Memory the MTR holds, roughly: what taps and reader queues are bounded by.
    pub fn bytes(&self) -> usize {
        self.records
            .iter()
            .map(|(_, _, b)| PUBLISHED_RECORD_OVERHEAD_BYTES + redo_body_len(b))
            .sum()
    }
}

fn redo_body_len(b: &RedoBody) -> usize {
    match b {
        RedoBody::Image(v) | RedoBody::Delta(v) => v.len(),
    }
}

/// A bounded, lossy subscription to a writer's shipped MTRs ([`LogWriter::subscribe`]).
///
/// The writer pushes and never waits; the reader drains. When the reader falls more than
/// [`REDO_TAP_BYTES_MAX`] behind, the tap drops everything it holds and remembers that it did
/// ([`TapDrain::overflowed`]); what it queues afterwards is again a gap-free run of MTRs.
#[derive(Debug, Default)]
pub struct RedoTap {
    inner: Mutex<TapInner>,
}

#[derive(Debug, Default)]
struct TapInner {
    mtrs: VecDeque<Arc<PublishedMtr>>,
    bytes: usize,
    overflowed: bool,
}

/// What [`RedoTap::drain`] returns.
#[derive(Debug, Default)]
pub struct TapDrain {
    /// MTRs were dropped before `mtrs` (the reader must give up what it derived from the stream).
    pub overflowed: bool,
    /// MTRs in LSN order, without gaps between them.
    pub mtrs: Vec<Arc<PublishedMtr>>,
}

impl RedoTap {
    fn push(&self, mtr: &Arc<PublishedMtr>) {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = mtr.bytes();
        if t.bytes + bytes > REDO_TAP_BYTES_MAX {
            t.mtrs.clear();
            t.bytes = 0;
            t.overflowed = true;
            if bytes > REDO_TAP_BYTES_MAX {
                return; // one MTR bigger than the whole tap: it is lost too
            }
        }
        t.bytes += bytes;
        t.mtrs.push_back(mtr.clone());
    }

    /// Takes everything queued since the last drain.
    pub fn drain(&self) -> TapDrain {
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.bytes = 0;
        TapDrain {
            overflowed: std::mem::take(&mut t.overflowed),
            mtrs: t.mtrs.drain(..).collect(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Write(#[from] WriteError),
    #[error("recovery failed: {0}")]
    Recovery(String),
    #[error("commit outcome unknown: the log did not become durable up to lsn {lsn} within {waited_ms} ms (VDL {vdl})")]
    NotDurable { lsn: Lsn, vdl: Lsn, waited_ms: u64 },
    #[error("this writer was fenced by a newer writer (epoch {0})")]
    Fenced(u64),
    #[error("this writer has failed and is being replaced: {0}")]
    Failed(String),
}

/// A writer in limbo ([`LogWriter::in_limbo`]).
#[derive(Debug, Default)]
struct Limbo {
    /// The last LSN assigned when the write quorum was lost with commits in flight: the writer
    /// stays in limbo, shipping nothing new, until the VDL reaches it.
    until: Option<Lsn>,
    /// Since when a write quorum is reachable again (while still in limbo).
    quorum_back_at: Option<Instant>,
}

/// What [`LogWriter::wait_settled`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The VDL reached the LSN waited for; it is the VDL now.
    Durable(Lsn),
    /// The write quorum is lost with commits below the LSN unsettled: it cannot become durable
    /// until a fourth member returns (see [`LogWriter::in_limbo`]).
    QuorumLost,
}

impl LogError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::Write(WriteError::ReadOnly { .. }) => ErrorKind::ReadOnly,
            LogError::Write(WriteError::VolumeTooLarge { .. }) => ErrorKind::Invalid,
            LogError::Write(_) => ErrorKind::Unavailable,
            LogError::Recovery(_) | LogError::NotDurable { .. } | LogError::Failed(_) => {
                ErrorKind::Unavailable
            }
            LogError::Fenced(_) => ErrorKind::Fenced,
        }
    }
}

#[derive(Clone, Debug)]
pub struct LogWriterConfig {
    /// The six safekeepers of the protection group, in member order (AZ a, a, b, b, c, c).
    pub safekeepers: Vec<String>,
    pub layout: SegmentLayout,
    pub lal_lsns: u64,
    /// Mints the tenant-scoped token each safekeeper connection presents.
    pub tokens: Arc<StorageTokens>,
}

impl LogWriterConfig {
    pub fn new(safekeepers: Vec<String>, tokens: Arc<StorageTokens>) -> Self {
        Self {
            safekeepers,
            tokens,
            layout: SegmentLayout::default(),
            lal_lsns: LAL_LSNS_DEFAULT,
        }
    }
}

pub struct LogWriter {
    tenant: TenantId,
    epoch: u64,
    start: Lsn,
    history: Vec<borealis_core::EpochStart>,
    state: Mutex<QuorumWriter>,
    /// Per member: appends to forward, each with the LSN of its last record.
    members: Vec<mpsc::Sender<(Arc<Body>, Lsn)>>,
    vdl: watch::Sender<Lsn>,
    failed: watch::Sender<Option<String>>,
    stopping: AtomicBool,
    /// Readers following this writer. Locked only while `state` is held, so taps get MTRs in
    /// LSN order and a subscription starts at a well-defined LSN.
    taps: Mutex<Vec<Weak<RedoTap>>>,
    /// Members reachable now: waiters watch it to notice a lost write quorum.
    reachable: watch::Sender<usize>,
    /// Commit LSNs above the VDL and when they were shipped, oldest first (locked only while
    /// `state` is held). Bounded by the LAL: one entry per commit, at most `lal_lsns` of them.
    unsettled: Mutex<VecDeque<(Lsn, Instant)>>,
    /// Whether and since when the writer is in limbo (locked only while `state` is held).
    limbo: Mutex<Limbo>,
    /// Per member: why it refuses appends while connected (its disk budget is exhausted).
    refusing: Mutex<[Option<String>; PG_MEMBERS]>,
}

fn lock(m: &Mutex<QuorumWriter>) -> std::sync::MutexGuard<'_, QuorumWriter> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogWriter {
    /// Recovers the tenant's volume and returns a writer ready to ship at a new epoch.
    pub async fn recover(
        tenant: TenantId,
        config: LogWriterConfig,
    ) -> Result<Arc<LogWriter>, LogError> {
        assert_eq!(
            config.safekeepers.len(),
            PG_MEMBERS,
            "a protection group has six members"
        );
        let started = std::time::Instant::now();
        let (epoch, plan) = recover_epoch(tenant, &config).await?;
        let (vdl_tx, _) = watch::channel(plan.vdl);
        let (failed_tx, _) = watch::channel(None);
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..PG_MEMBERS {
            let (tx, rx) = mpsc::channel(MEMBER_QUEUE_APPENDS_MAX);
            senders.push(tx);
            receivers.push(rx);
        }
        let writer = Arc::new(LogWriter {
            tenant,
            epoch,
            start: plan.vdl,
            history: plan.history.clone(),
            state: Mutex::new(QuorumWriter::new(
                epoch,
                plan.vdl,
                plan.segment_tails.clone(),
                config.layout,
                config.lal_lsns,
            )),
            members: senders,
            vdl: vdl_tx,
            failed: failed_tx,
            stopping: AtomicBool::new(false),
            taps: Mutex::default(),
            reachable: watch::channel(0).0,
            unsettled: Mutex::default(),
            limbo: Mutex::default(),
            refusing: Mutex::default(),
        });
        let mut up_rx = Vec::new();
        for (member, rx) in receivers.into_iter().enumerate() {
            let (up_tx, up) = watch::channel(false);
            up_rx.push(up);
            tokio::spawn(member_task(
                writer.clone(),
                member,
                config.safekeepers[member].clone(),
                rx,
                up_tx,
                config.tokens.clone(),
            ));
        }
        // Serve only once a write quorum of members is connected (or give up: the caller answers
        // unavailable and the next request tries again).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let up = up_rx.iter().filter(|u| *u.borrow()).count();
            if up >= WRITE_QUORUM {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                writer.shutdown();
                return Err(LogError::Recovery(format!(
                    "only {up} of {PG_MEMBERS} safekeepers accepted epoch {epoch}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(tenant = %tenant, epoch, vdl = %plan.vdl, elapsed_ms = started.elapsed().as_millis() as u64, "writer recovered");
        Ok(writer)
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// The VDL this writer started from.
    pub fn start_lsn(&self) -> Lsn {
        self.start
    }
    pub fn vdl(&self) -> Lsn {
        *self.vdl.borrow()
    }
    /// The last LSN assigned: what any response of this writer may depend on.
    pub fn last_lsn(&self) -> Lsn {
        lock(&self.state).last_lsn()
    }
    pub fn reachable_members(&self) -> usize {
        lock(&self.state).reachable().len()
    }

    /// The writer is **in limbo**: the write quorum was lost while commits it shipped were not
    /// durable, and they have not settled since. Those commits reached three members at most;
    /// none of them can become durable, nor be truncated by a recovery (which needs four members
    /// too), until a fourth member returns. Meanwhile the writer keeps its epoch and its VDL but
    /// ships nothing new: reads are served at the VDL by a fresh instance, writes are refused
    /// `read_only` (`docs/rfcs/0004-write-quorum-lost-in-flight.md`). It stays in limbo after a
    /// write quorum is back until the VDL reaches the last LSN shipped before the loss (gossip
    /// fills the returning members), or [`limbo_stuck`](Self::limbo_stuck) says it never will.
    pub fn in_limbo(&self) -> bool {
        let s = lock(&self.state);
        let limbo = self.limbo.lock().unwrap_or_else(|p| p.into_inner());
        limbo.until.is_some_and(|u| u > s.vdl())
            || (s.last_lsn() > s.vdl() && !s.reachable().is_write_quorum())
    }

    /// In limbo with a write quorum reachable again for longer than `grace`, and the commits
    /// still not durable: no returning member holds them (they reached only members still down,
    /// or none: a disk budget refused them everywhere). Only a recovery can settle them now.
    pub fn limbo_stuck(&self, grace: Duration) -> bool {
        let s = lock(&self.state);
        let limbo = self.limbo.lock().unwrap_or_else(|p| p.into_inner());
        limbo.until.is_some_and(|u| u > s.vdl())
            && limbo.quorum_back_at.is_some_and(|t| t.elapsed() > grace)
    }

    /// Why members refuse appends while connected, if any do: "N of 6 safekeepers refuse
    /// appends: <the first one's reason>". Appended to `read_only` refusals.
    pub fn refusing_summary(&self) -> Option<String> {
        let refusing = self.refusing.lock().unwrap_or_else(|p| p.into_inner());
        let reasons: Vec<&String> = refusing.iter().flatten().collect();
        let first = reasons.first()?;
        Some(format!(
            "{} of {PG_MEMBERS} safekeepers refuse appends: {first}",
            reasons.len()
        ))
    }

    fn set_refusing(&self, member: usize, why: Option<String>) {
        let mut refusing = self.refusing.lock().unwrap_or_else(|p| p.into_inner());
        if refusing[member] != why {
            match &why {
                Some(w) => {
                    warn!(tenant = %self.tenant, member, why = %w, "safekeeper refuses appends; not counted toward the write quorum")
                }
                None if refusing[member].is_some() => {
                    info!(tenant = %self.tenant, member, "safekeeper accepts appends again")
                }
                None => {}
            }
            refusing[member] = why;
        }
    }

    /// How long the oldest commit above the VDL has waited for durability, if one does.
    pub fn oldest_unsettled_age(&self) -> Option<Duration> {
        let _state = lock(&self.state);
        let unsettled = self.unsettled.lock().unwrap_or_else(|p| p.into_inner());
        unsettled.front().map(|(_, at)| at.elapsed())
    }

    /// Why this writer can no longer be used, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Marks the writer failed: its compute must be thrown away and the volume recovered anew.
    pub fn fail(&self, why: String) {
        warn!(tenant = %self.tenant, epoch = self.epoch, why = %why, "writer failed");
        self.failed.send_if_modified(|f| {
            if f.is_none() {
                *f = Some(why);
                true
            } else {
                false
            }
        });
        self.shutdown();
    }

    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether this writer still ships and its VDL still moves (neither failed nor shut down).
    pub fn is_live(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst) && self.failure().is_none()
    }

    /// Subscribes to the MTRs this writer ships from now on. Returns the tap and the last LSN
    /// assigned before it: every MTR above that LSN reaches the tap (unless it overflows), none
    /// at or below it does.
    pub fn subscribe(&self) -> (Arc<RedoTap>, Lsn) {
        let state = lock(&self.state);
        let tap = Arc::new(RedoTap::default());
        let mut taps = self.taps.lock().unwrap_or_else(|p| p.into_inner());
        taps.retain(|t| t.strong_count() > 0);
        taps.push(Arc::downgrade(&tap));
        (tap, state.last_lsn())
    }

    /// Hands a shipped MTR to every live tap. Called with the state lock held.
    fn publish(
        &self,
        commit_lsn: Lsn,
        segments: &[(SegmentId, Vec<borealis_core::redo::RedoRecord>)],
    ) {
        let mut taps = self.taps.lock().unwrap_or_else(|p| p.into_inner());
        taps.retain(|t| t.strong_count() > 0);
        if taps.is_empty() {
            return;
        }
        let mut records: Vec<(Lsn, PageNo, RedoBody)> = segments
            .iter()
            .flat_map(|(_, rs)| rs.iter().map(|r| (r.lsn, r.page_no, r.body.clone())))
            .collect();
        records.sort_by_key(|(lsn, _, _)| *lsn);
        let Some(first_lsn) = records.first().map(|(lsn, _, _)| *lsn) else {
            return;
        };
        let mtr = Arc::new(PublishedMtr {
            first_lsn,
            commit_lsn,
            records,
            shipped_at: Instant::now(),
        });
        for tap in taps.iter().filter_map(Weak::upgrade) {
            tap.push(&mtr);
        }
    }

    /// Ships one mini-transaction; returns its commit LSN. Never waits for durability.
    pub fn commit(&self, changes: Vec<(PageNo, RedoBody)>) -> Result<Lsn, LogError> {
        if let Some(why) = self.failure() {
            return Err(LogError::Failed(why));
        }
        let mut state = lock(&self.state);
        if self
            .limbo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .until
            .is_some_and(|u| u > state.vdl())
        {
            // Nothing new ships until the commits caught by the lost quorum are settled.
            return Err(LogError::Write(WriteError::ReadOnly {
                reachable: state.reachable().len(),
            }));
        }
        let ShippedMtr {
            commit_lsn,
            segments,
        } = state.submit(changes)?;
        self.publish(commit_lsn, &segments);
        self.unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((commit_lsn, Instant::now()));
        let vdl = state.vdl();
        for (segment, records) in segments {
            // A large MTR goes as several appends, in LSN order: one frame has a size limit,
            // and smaller appends let members acknowledge (and the VCL move) as they go.
            for chunk in append_chunks(&records, APPEND_BYTES_MAX) {
                let last = chunk.last().map_or(Lsn::INVALID, |r| r.lsn);
                let mut bytes = Vec::with_capacity(chunk.iter().map(|r| r.encoded_len()).sum());
                for r in chunk {
                    r.encode_into(&mut bytes);
                }
                let body = Arc::new(Body::Append {
                    tenant: self.tenant,
                    segment,
                    epoch: self.epoch,
                    vdl,
                    records: bytes,
                });
                for (member, tx) in self.members.iter().enumerate() {
                    if state.reachable().contains(member)
                        && tx.try_send((body.clone(), last)).is_err()
                    {
                        // Too slow or gone: it will fill the gap from its peers.
                        debug!(tenant = %self.tenant, member, "member queue full, append dropped for it");
                    }
                }
            }
        }
        Ok(commit_lsn)
    }

    /// Waits until the VDL reaches `lsn`, at most `timeout`.
    pub async fn wait_durable(&self, lsn: Lsn, timeout: Duration) -> Result<Lsn, LogError> {
        match self.wait(lsn, timeout, false).await? {
            Settled::Durable(vdl) => Ok(vdl),
            Settled::QuorumLost => unreachable!("wait() reports a lost quorum only when asked to"),
        }
    }

    /// Like [`wait_durable`](Self::wait_durable), but returns [`Settled::QuorumLost`] as soon as
    /// the writer is [in limbo](Self::in_limbo) below `lsn`: for a response that shipped nothing
    /// and only *saw* unsettled commits, which can be served again at the VDL instead.
    pub async fn wait_settled(&self, lsn: Lsn, timeout: Duration) -> Result<Settled, LogError> {
        self.wait(lsn, timeout, true).await
    }

    async fn wait(
        &self,
        lsn: Lsn,
        timeout: Duration,
        until_quorum_lost: bool,
    ) -> Result<Settled, LogError> {
        let mut rx = self.vdl.subscribe();
        let mut failed = self.failed.subscribe();
        let mut reachable = self.reachable.subscribe();
        let result = tokio::time::timeout(timeout, async {
            loop {
                let vdl = *rx.borrow_and_update();
                if vdl >= lsn {
                    return Ok(Settled::Durable(vdl));
                }
                if let Some(why) = failed.borrow_and_update().clone() {
                    return Err(LogError::Failed(why));
                }
                reachable.borrow_and_update();
                if until_quorum_lost && self.in_limbo() {
                    return Ok(Settled::QuorumLost);
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return Err(LogError::Failed("writer dropped".into())) },
                    r = failed.changed() => if r.is_err() { return Err(LogError::Failed("writer dropped".into())) },
                    r = reachable.changed() => if r.is_err() { return Err(LogError::Failed("writer dropped".into())) },
                }
            }
        })
        .await;
        match result {
            Ok(r) => r,
            Err(_) => Err(LogError::NotDurable {
                lsn,
                vdl: self.vdl(),
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    fn on_ack(&self, member: usize, segment: SegmentId, scl: Lsn) {
        let mut state = lock(&self.state);
        let new_vdl = state.on_ack(member, segment, scl);
        if let Some(vdl) = new_vdl {
            let mut unsettled = self.unsettled.lock().unwrap_or_else(|p| p.into_inner());
            while unsettled.front().is_some_and(|(lsn, _)| *lsn <= vdl) {
                unsettled.pop_front();
            }
            drop(unsettled);
            let mut limbo = self.limbo.lock().unwrap_or_else(|p| p.into_inner());
            let settled = limbo.until.is_some_and(|u| vdl >= u);
            if settled {
                *limbo = Limbo::default();
            }
            drop(limbo);
            drop(state);
            if settled {
                info!(tenant = %self.tenant, epoch = self.epoch, %vdl, "commits in flight settled: the writer is out of limbo");
            }
            // Two members' tasks may race here: never let a stale, lower VDL overwrite a newer one.
            self.vdl.send_if_modified(|v| {
                let newer = vdl > *v;
                if newer {
                    *v = vdl;
                }
                newer
            });
        }
    }

    fn set_reachable(&self, member: usize, up: bool) {
        let mut s = lock(&self.state);
        if up {
            s.member_up(member);
        } else {
            s.member_down(member);
        }
        let n = s.reachable().len();
        let (vdl, last) = (s.vdl(), s.last_lsn());
        let mut limbo = self.limbo.lock().unwrap_or_else(|p| p.into_inner());
        // A writer shutting down drops its members on purpose: that is not a lost quorum.
        let stopping = self.stopping.load(Ordering::SeqCst);
        match (n >= WRITE_QUORUM, limbo.until) {
            (false, None) if last > vdl && !stopping => {
                limbo.until = Some(last);
                warn!(tenant = %self.tenant, epoch = self.epoch, reachable = n, %vdl, last_lsn = %last,
                    "write quorum lost with commits in flight: writer in limbo, reads served at the VDL, writes refused until the commits settle");
            }
            (false, Some(_)) => limbo.quorum_back_at = None,
            (true, Some(until)) if limbo.quorum_back_at.is_none() => {
                limbo.quorum_back_at = Some(Instant::now());
                info!(tenant = %self.tenant, epoch = self.epoch, reachable = n, %vdl, until = %until,
                    "write quorum back: waiting for the commits in flight to settle");
            }
            _ => {}
        }
        drop(limbo);
        drop(s);
        self.reachable.send_replace(n);
    }
}

/// Steps 1-3 of recovery (see `borealis_quorum::recovery`): read quorum of states, plan, install
/// the epoch on every member reachable, wait for a write quorum to hold the log to the VDL.
async fn recover_epoch(
    tenant: TenantId,
    config: &LogWriterConfig,
) -> Result<(u64, recovery::RecoveryPlan), LogError> {
    let token = config.tokens.tenant(tenant);
    let clients = futures::future::join_all(
        config
            .safekeepers
            .iter()
            .map(|a| Client::connect(a, &token, CONNECT_TIMEOUT, None)),
    )
    .await;
    let clients: Vec<Option<Client>> = clients.into_iter().map(|c| c.ok()).collect();
    let states = futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
        let c = c.as_ref()?;
        match c.call(Body::GetState { tenant }, CALL_TIMEOUT).await {
            Ok(Body::State {
                epoch,
                segments,
                history,
                ..
            }) => Some(MemberReport {
                member: m,
                epoch,
                history,
                segments: segments
                    .iter()
                    .map(|s| (s.segment, s.scl, s.last_cpl))
                    .collect(),
            }),
            Ok(other) => {
                warn!(
                    member = m,
                    answer = other.name(),
                    "unexpected answer to GetState"
                );
                None
            }
            Err(e) => {
                debug!(member = m, error = %e, "GetState failed");
                None
            }
        }
    }))
    .await;
    let reports: Vec<MemberReport> = states.into_iter().flatten().collect();
    if reports.len() < READ_QUORUM {
        return Err(LogError::Recovery(format!(
            "only {} of {PG_MEMBERS} safekeepers answered, {READ_QUORUM} needed",
            reports.len()
        )));
    }
    let plan = recovery::plan(&reports).map_err(|e| LogError::Recovery(e.to_string()))?;
    let epoch = plan.epoch;
    // Installing an epoch on fewer members than a write quorum cannot produce a writer, and
    // each attempt would durably burn an epoch on the members it reached (found by drill 3b:
    // epochs 1 → 150 during one outage). Stop before any Hello.
    if reports.len() < WRITE_QUORUM {
        return Err(LogError::Recovery(format!(
            "write quorum lost: only {} of {PG_MEMBERS} safekeepers answered, {WRITE_QUORUM} needed to start a writer",
            reports.len()
        )));
    }

    // Install the epoch: each member aligns its log to our history (truncating at least above
    // the VDL) before answering.
    let plan_ref = &plan;
    let hellos = futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
        let c = c.as_ref()?;
        let hello = Body::Hello {
            tenant,
            epoch,
            epoch_start_lsn: plan_ref.vdl,
            history: plan_ref.history.clone(),
        };
        match c.call(hello, CALL_TIMEOUT).await {
            Ok(Body::HelloOk { .. }) => Some(m),
            Ok(_) => None,
            Err(WireError::Remote {
                kind: ErrorKind::Fenced,
                message,
            }) => {
                warn!(member = m, %message, "a newer writer exists");
                None
            }
            Err(_) => None,
        }
    }))
    .await;
    let installed = hellos.iter().flatten().count();
    if installed < WRITE_QUORUM {
        return Err(LogError::Recovery(format!(
            "epoch {epoch} installed on {installed} of {PG_MEMBERS} safekeepers, {WRITE_QUORUM} needed (write quorum lost)"
        )));
    }

    // Wait until a write quorum holds everything up to the VDL (gossip fills the gaps).
    let deadline = tokio::time::Instant::now() + RECOVERY_DURABLE_WAIT;
    loop {
        let states =
            futures::future::join_all(clients.iter().enumerate().map(|(m, c)| async move {
                let c = c.as_ref()?;
                match c.call(Body::GetState { tenant }, CALL_TIMEOUT).await {
                    Ok(Body::State {
                        epoch: e, segments, ..
                    }) if e == epoch => Some(
                        segments
                            .into_iter()
                            .map(move |s| (m, s.segment, s.scl))
                            .collect::<Vec<_>>(),
                    ),
                    _ => None,
                }
            }))
            .await;
        let scls: Vec<(usize, SegmentId, Lsn)> = states.into_iter().flatten().flatten().collect();
        if recovery::is_durable(&plan, &scls) {
            return Ok((epoch, plan));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(LogError::Recovery(format!(
                "the recovered log (VDL {}) did not reach a write quorum within {} s",
                plan.vdl,
                RECOVERY_DURABLE_WAIT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Splits one segment's records (in LSN order) into runs of at most `max_bytes` encoded bytes
/// each; a record larger than `max_bytes` is a run of its own. Never an empty run.
fn append_chunks(
    records: &[borealis_core::redo::RedoRecord],
    max_bytes: usize,
) -> Vec<&[borealis_core::redo::RedoRecord]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let len = r.encoded_len();
        if i > start && bytes + len > max_bytes {
            chunks.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < records.len() {
        chunks.push(&records[start..]);
    }
    chunks
}

/// One member: connect, Hello, forward appends, feed acks; reconnect with backoff.
async fn member_task(
    writer: Arc<LogWriter>,
    member: usize,
    addr: String,
    mut appends: mpsc::Receiver<(Arc<Body>, Lsn)>,
    up: watch::Sender<bool>,
    tokens: Arc<StorageTokens>,
) {
    let tenant = writer.tenant;
    let mut backoff = Duration::from_millis(50);
    while !writer.stopping.load(Ordering::SeqCst) {
        let (ack_tx, mut acks) = mpsc::channel::<Body>(1024);
        let token = tokens.tenant(tenant);
        let client = match Client::connect(&addr, &token, CONNECT_TIMEOUT, Some(ack_tx)).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        let hello = Body::Hello {
            tenant,
            epoch: writer.epoch,
            epoch_start_lsn: writer.start,
            history: writer.history.clone(),
        };
        let mut refusing = match client.call(hello.clone(), CALL_TIMEOUT).await {
            Ok(Body::HelloOk {
                segments,
                appends_refused,
                ..
            }) => {
                for s in segments {
                    writer.on_ack(member, s.segment, s.scl);
                }
                appends_refused
            }
            Err(WireError::Remote {
                kind: ErrorKind::Fenced,
                message,
            }) => {
                writer.fail(format!("fenced by safekeeper {addr}: {message}"));
                break;
            }
            Ok(_) | Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        // Appends queued while the member was down are stale: the member catches up by gossip.
        while appends.try_recv().is_ok() {}
        // Connected: it holds our epoch. It counts toward the write quorum only while it accepts
        // appends (a member whose disk budget is exhausted is connected but read-only).
        writer.set_refusing(member, refusing.clone());
        writer.set_reachable(member, refusing.is_none());
        up.send_replace(true);
        backoff = Duration::from_millis(50);
        info!(tenant = %tenant, member, az = %az_of(member), addr = %addr, "safekeeper connected");
        // The newest VDL this member has been told. Appends carry the VDL; when the writer goes
        // quiet, an append without records tells it the rest, so pageservers can follow (and
        // checkpoint) the tail without waiting for a reader to vouch for it.
        let mut told_vdl = Lsn::INVALID;
        // The highest LSN sent and acknowledged on this connection, and since when the member
        // has owed an acknowledgement.
        let (mut sent, mut acked) = (Lsn::INVALID, Lsn::INVALID);
        let mut owed_since: Option<Instant> = None;
        // While the member refuses appends, when we last asked it again (a repeated `Hello` of
        // our epoch changes nothing on it and answers whether it has room again).
        let mut refusal_checked = Instant::now();
        loop {
            if refusing.is_none() && owed_since.is_some_and(|t| t.elapsed() > MEMBER_ACK_TIMEOUT) {
                warn!(tenant = %tenant, member, addr = %addr, sent = %sent, acked = %acked,
                    timeout_ms = MEMBER_ACK_TIMEOUT.as_millis() as u64,
                    "safekeeper stopped acknowledging; counting it unreachable");
                break;
            }
            tokio::select! {
                a = appends.recv() => match a {
                    Some(_) if refusing.is_some() => {
                        // Queued before it refused: it would refuse this too (and fill it by
                        // gossip once it has room).
                    }
                    Some((body, last)) => {
                        if let Body::Append { vdl, .. } = &*body {
                            told_vdl = told_vdl.max(*vdl);
                        }
                        // A member that reads nothing fills its socket and then our queue:
                        // sending blocks. That is unresponsive too.
                        let sending = tokio::time::timeout(MEMBER_ACK_TIMEOUT, client.send((*body).clone()));
                        if !matches!(sending.await, Ok(Ok(()))) {
                            break;
                        }
                        if last > sent {
                            sent = last;
                            owed_since.get_or_insert_with(Instant::now);
                        }
                    }
                    None => break,
                },
                m = acks.recv() => match m {
                    Some(Body::Ack { segment, scl, .. }) => {
                        writer.on_ack(member, segment, scl);
                        acked = acked.max(scl);
                        owed_since = if acked >= sent { None } else { Some(Instant::now()) };
                    }
                    Some(Body::Error { kind: ErrorKind::Fenced, message }) => {
                        writer.fail(format!("fenced by safekeeper {addr}: {message}"));
                        break;
                    }
                    Some(Body::Error { kind: ErrorKind::ReadOnly, message }) => {
                        // Its disk budget is exhausted: connected, but not writable. What it
                        // missed it fills by gossip once it has room again.
                        writer.set_refusing(member, Some(message.clone()));
                        writer.set_reachable(member, false);
                        refusing = Some(message);
                        refusal_checked = Instant::now();
                        owed_since = None;
                    }
                    Some(Body::Error { kind, message }) => {
                        warn!(tenant = %tenant, member, ?kind, %message, "safekeeper refused an append");
                        break;
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep(VDL_NOTICE_INTERVAL) => {
                    if writer.stopping.load(Ordering::SeqCst) { break; }
                    if refusing.is_some() && refusal_checked.elapsed() >= REFUSAL_RECHECK_INTERVAL {
                        refusal_checked = Instant::now();
                        match client.call(hello.clone(), CALL_TIMEOUT).await {
                            Ok(Body::HelloOk { appends_refused, .. }) => {
                                if appends_refused.is_none() {
                                    writer.set_refusing(member, None);
                                    writer.set_reachable(member, true);
                                }
                                refusing = appends_refused;
                            }
                            _ => break,
                        }
                    }
                    let vdl = writer.vdl();
                    if vdl > told_vdl {
                        let notice = Body::Append {
                            tenant,
                            segment: SegmentId(0),
                            epoch: writer.epoch,
                            vdl,
                            records: Vec::new(),
                        };
                        if client.send(notice).await.is_err() {
                            break;
                        }
                        told_vdl = vdl;
                    }
                }
            }
        }
        writer.set_reachable(member, false);
        // Disconnected: whatever it said about its budget is no longer known.
        writer.refusing.lock().unwrap_or_else(|p| p.into_inner())[member] = None;
        up.send_replace(false);
        if !writer.stopping.load(Ordering::SeqCst) {
            warn!(tenant = %tenant, member, addr = %addr, "safekeeper connection lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::redo::{RedoBody, RedoRecord};
    use borealis_core::PAGE_SIZE_BYTES;

    fn image(lsn: u64) -> RedoRecord {
        RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(lsn - 1),
            prev_lsn_page: Lsn::INVALID,
            page_no: PageNo(lsn as u32),
            is_cpl: false,
            body: RedoBody::Image(vec![1; PAGE_SIZE_BYTES]),
        }
    }

    #[test]
    fn a_large_mtr_is_shipped_in_bounded_appends_in_lsn_order() {
        let records: Vec<RedoRecord> = (1..=1000).map(image).collect();
        let one = records[0].encoded_len();
        let chunks = append_chunks(&records, APPEND_BYTES_MAX);
        assert!(chunks.len() > 1, "4 MB of images is more than one append");
        let rejoined: Vec<Lsn> = chunks
            .iter()
            .flat_map(|c| c.iter().map(|r| r.lsn))
            .collect();
        assert_eq!(rejoined, (1..=1000).map(Lsn).collect::<Vec<_>>());
        for c in &chunks {
            let bytes: usize = c.iter().map(|r| r.encoded_len()).sum();
            assert!(bytes <= APPEND_BYTES_MAX && !c.is_empty(), "{bytes} bytes");
            assert!(bytes + one > APPEND_BYTES_MAX || std::ptr::eq(c, chunks.last().unwrap()));
        }
        // A record larger than the bound goes alone; nothing is ever empty.
        let chunks = append_chunks(&records[..3], one - 1);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        assert!(append_chunks(&[], APPEND_BYTES_MAX).is_empty());
    }
}
