//! The volume writer: the async driver of a tenant's writer session — recovery, one connection
//! per safekeeper, shipping, acknowledgements, VDL waiters, redo taps for readers.
//!
//! The protocol decisions live in `borealis_quorum` (sans-IO): the quorum writer (LSNs, VCL,
//! VDL), and the session around it ([`borealis_quorum::session::WriterSession`]: limbo, unsettled
//! commits, acknowledgement timeouts), which this driver feeds with the time. The parts:
//!
//! - [`recovery`]: a read quorum of states, the plan, the new epoch installed, the recovered log
//!   durable on a write quorum;
//! - [`members`]: one task per member that connects, says `Hello`, forwards appends and feeds the
//!   member's acknowledgements (its SCL after fsync) into the session. A member that drops is
//!   counted out and reconnected with backoff; records it missed reach it through gossip from its
//!   peers, not from us, so the writer keeps no log;
//! - [`taps`]: the redo stream for read replicas.
//!
//! `commit` is synchronous and never waits for durability (asynchronous commit, docs/design.md §3):
//! the gateway holds each response until the VDL covers the LSN the response depends on.

mod members;
mod recovery;
mod taps;

pub use recovery::{segment_views, SegmentView};
pub use taps::{PublishedMtr, RedoTap, TapDrain, REDO_TAP_BYTES_MAX};

use crate::storage_auth::StorageTokens;
use borealis_core::quorum::{PG_MEMBERS, WRITE_QUORUM};
use borealis_core::redo::RedoBody;
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, SegmentLayout, TenantId};
use borealis_quorum::placement::Placement;
use borealis_quorum::session::{Event, SessionConfig, WriterSession};
use borealis_quorum::writer::{ShippedMtr, LAL_LSNS_DEFAULT};
use borealis_quorum::{QuorumWriter, WriteError};
use borealis_utils::LockExt;
use borealis_wire::Body;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a member may leave records it was sent unacknowledged before it counts as
/// unreachable (a frozen process or a partition that breaks no connection). Well above a slow
/// group-commit fsync; well below the commit timeout, so a lost write quorum is noticed (limbo,
/// RFC 0004) long before held commits give up.
pub(crate) const MEMBER_ACK_TIMEOUT: Duration = Duration::from_secs(3);
/// After the groups that hold data have a write quorum connected, how long a new writer waits
/// for the rest of the pool (the groups of segments not written yet) before it serves.
const POOL_CONNECT_GRACE: Duration = Duration::from_millis(200);
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

/// What [`VolumeWriter::wait_settled`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The VDL reached the LSN waited for; it is the VDL now.
    Durable(Lsn),
    /// The write quorum is lost with commits below the LSN unsettled: it cannot become durable
    /// until a fourth member returns (see [`VolumeWriter::in_limbo`]).
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
pub struct VolumeWriterConfig {
    /// The pool of safekeepers, listed AZ by AZ (a third in each: six are a, a, b, b, c, c).
    /// Each segment's protection group is six of them, two per AZ, chosen by rendezvous hashing
    /// (`borealis_core::placement::choose_group`); with six, every group is all of them.
    pub safekeepers: Vec<String>,
    pub layout: SegmentLayout,
    pub lal_lsns: u64,
    /// Mints the tenant-scoped token each safekeeper connection presents.
    pub tokens: Arc<StorageTokens>,
}

impl VolumeWriterConfig {
    pub fn new(safekeepers: Vec<String>, tokens: Arc<StorageTokens>) -> Self {
        Self {
            safekeepers,
            tokens,
            layout: SegmentLayout::default(),
            lal_lsns: LAL_LSNS_DEFAULT,
        }
    }
}

/// Where a writer that retired settled stopped: what a writer resuming its epoch starts from
/// instead of a recovery (RFC 0017). A few hundred bytes; the pool keeps one per idle tenant.
#[derive(Clone, Debug)]
pub struct ResumePoint {
    pub epoch: u64,
    /// The epoch's start (the VDL its recovery found): the history ends with `(epoch, start)`.
    pub start: Lsn,
    pub history: Vec<borealis_core::EpochStart>,
    /// The last LSN the writer assigned, durable (its VDL): the resumed writer's VDL.
    pub last_lsn: Lsn,
    /// The last LSN assigned in each segment.
    pub segment_tails: BTreeMap<SegmentId, Lsn>,
}

/// The tenant's placement over `--safekeepers` (listed AZ by AZ).
fn placement_of(tenant: TenantId, config: &VolumeWriterConfig) -> Result<Placement, LogError> {
    let pool_azs = borealis_core::placement::ordered_pool_azs(config.safekeepers.len())
        .map_err(|e| LogError::Recovery(format!("--safekeepers: {e}")))?;
    Placement::new(tenant, pool_azs).map_err(|e| LogError::Recovery(format!("--safekeepers: {e}")))
}

pub struct VolumeWriter {
    tenant: TenantId,
    epoch: u64,
    start: Lsn,
    history: Vec<borealis_core::EpochStart>,
    /// How pages map to segments.
    layout: SegmentLayout,
    /// The sans-IO session: the quorum writer, limbo, acknowledgements owed. Taps are filled and
    /// the VDL published while it is held, so both see commits in LSN order.
    session: Mutex<WriterSession>,
    /// The session's clock: time is the duration since this instant.
    origin: Instant,
    /// Per member: appends to forward, each with the LSN of its last record.
    members: Vec<mpsc::Sender<(Arc<Body>, Lsn)>>,
    vdl: watch::Sender<Lsn>,
    failed: watch::Sender<Option<String>>,
    stopping: AtomicBool,
    /// Readers following this writer.
    taps: taps::Taps,
    /// Members reachable now: waiters watch it to notice a lost write quorum.
    reachable: watch::Sender<usize>,
}

impl VolumeWriter {
    /// Recovers the tenant's volume and returns a writer ready to ship at a new epoch.
    pub async fn recover(
        tenant: TenantId,
        config: VolumeWriterConfig,
    ) -> Result<Arc<VolumeWriter>, LogError> {
        let placement = placement_of(tenant, &config)?;
        let started = Instant::now();
        let plan = recovery::recover_epoch(tenant, &config, &placement).await?;
        let point = ResumePoint {
            epoch: plan.epoch,
            start: plan.vdl,
            history: plan.history.clone(),
            last_lsn: plan.vdl,
            segment_tails: plan.segment_tails.clone(),
        };
        let writer = Self::start(tenant, config, placement, point).await?;
        info!(tenant = %tenant, epoch = writer.epoch, vdl = %writer.start, elapsed_ms = started.elapsed().as_millis() as u64, "writer recovered");
        Ok(writer)
    }

    /// Resumes the epoch of a writer that retired settled (RFC 0017): the same epoch, history
    /// and segment tails, from its last LSN, without a recovery. Fails if a member refuses its
    /// `Hello` (a newer epoch was installed or promised there) or a write quorum of a group that
    /// holds data does not accept it in time: the caller then recovers.
    pub async fn resume(
        tenant: TenantId,
        config: VolumeWriterConfig,
        point: ResumePoint,
    ) -> Result<Arc<VolumeWriter>, LogError> {
        let placement = placement_of(tenant, &config)?;
        let started = Instant::now();
        let (epoch, vdl) = (point.epoch, point.last_lsn);
        let writer = Self::start(tenant, config, placement, point).await?;
        debug!(tenant = %tenant, epoch, %vdl, elapsed_us = started.elapsed().as_micros() as u64, "writer resumed");
        Ok(writer)
    }

    /// What a writer that resumes this one's epoch starts from, if this one is settled: not
    /// failed, not stopping, not in limbo, and everything it assigned durable (RFC 0017).
    pub fn resume_point(&self) -> Option<ResumePoint> {
        if self.failure().is_some() || self.stopping.load(Ordering::SeqCst) {
            return None;
        }
        let session = self.session.locked();
        let last_lsn = session.last_lsn();
        if session.in_limbo() || session.vdl() != last_lsn {
            return None;
        }
        Some(ResumePoint {
            epoch: self.epoch,
            start: self.start,
            history: self.history.clone(),
            last_lsn,
            segment_tails: session.writer().segment_tails().clone(),
        })
    }

    /// A writer of `point`'s epoch from its last LSN: member tasks say `Hello` in that epoch,
    /// and it serves once a write quorum of every group holding data accepted it.
    async fn start(
        tenant: TenantId,
        config: VolumeWriterConfig,
        mut placement: Placement,
        point: ResumePoint,
    ) -> Result<Arc<VolumeWriter>, LogError> {
        let pool = config.safekeepers.len();
        let epoch = point.epoch;
        // The segments that hold data keep the groups they have.
        for segment in point.segment_tails.keys() {
            placement.fix(*segment);
        }
        let (vdl_tx, _) = watch::channel(point.last_lsn);
        let (failed_tx, _) = watch::channel(None);
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..pool {
            let (tx, rx) = mpsc::channel(MEMBER_QUEUE_APPENDS_MAX);
            senders.push(tx);
            receivers.push(rx);
        }
        let session = WriterSession::new(
            QuorumWriter::new(
                epoch,
                point.last_lsn,
                point.segment_tails.clone(),
                config.layout,
                config.lal_lsns,
                // Node index = position in `--safekeepers`; each segment's group is six of them.
                placement,
            ),
            SessionConfig {
                member_ack_timeout: MEMBER_ACK_TIMEOUT,
            },
        );
        let writer = Arc::new(VolumeWriter {
            tenant,
            epoch,
            start: point.start,
            history: point.history,
            layout: config.layout,
            session: Mutex::new(session),
            origin: Instant::now(),
            members: senders,
            vdl: vdl_tx,
            failed: failed_tx,
            stopping: AtomicBool::new(false),
            taps: taps::Taps::default(),
            reachable: watch::channel(0).0,
        });
        let (up_tx, mut up_rx) = watch::channel(vec![false; pool]);
        let up_tx = Arc::new(up_tx);
        for (member, rx) in receivers.into_iter().enumerate() {
            tokio::spawn(members::member_task(
                writer.clone(),
                member,
                config.safekeepers[member].clone(),
                rx,
                up_tx.clone(),
                config.tokens.clone(),
            ));
        }
        drop(up_tx);
        let mut failed = writer.failed.subscribe();
        // Serve only once a write quorum of every group that holds data is connected (or give
        // up: the caller answers unavailable, or recovers, and the next request tries again).
        // Other nodes of the pool get a moment more to connect, so that the first commits to a
        // new segment find its group. Woken by the members' connections, not polled.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let quorum_at = loop {
            if let Some(why) = failed.borrow_and_update().clone() {
                writer.shutdown();
                return Err(LogError::Recovery(why));
            }
            let up: Vec<bool> = up_rx.borrow_and_update().clone();
            let short = writer.groups_short_of_quorum(&point.segment_tails, &up);
            let total = up.iter().filter(|u| **u).count();
            if short.is_none() && total >= WRITE_QUORUM {
                break tokio::time::Instant::now();
            }
            let woken = tokio::select! {
                r = up_rx.changed() => r.is_ok(),
                r = failed.changed() => r.is_ok(),
                _ = tokio::time::sleep_until(deadline) => false,
            };
            if !woken {
                // The deadline, or every member task gone (after a failure, which says why).
                writer.shutdown();
                let why = failed.borrow().clone().unwrap_or_else(|| match short {
                    Some((segment, n)) => format!(
                        "only {n} of {PG_MEMBERS} safekeepers of segment {segment}'s group accepted epoch {epoch}"
                    ),
                    None => format!("only {total} of {pool} safekeepers accepted epoch {epoch}"),
                });
                return Err(LogError::Recovery(why));
            }
        };
        let grace = quorum_at + POOL_CONNECT_GRACE;
        while up_rx.borrow_and_update().iter().any(|u| !*u) && failed.borrow().is_none() {
            tokio::select! {
                r = up_rx.changed() => if r.is_err() { break },
                _ = failed.changed() => {}
                _ = tokio::time::sleep_until(grace) => break,
            }
        }
        // A member that refused us meanwhile (a newer epoch there) failed the writer: the
        // caller must not serve with it (a resume then recovers instead).
        if let Some(why) = failed.borrow().clone() {
            writer.shutdown();
            return Err(LogError::Recovery(why));
        }
        Ok(writer)
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// How pages map to segments.
    pub fn layout(&self) -> SegmentLayout {
        self.layout
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
        self.session.locked().last_lsn()
    }
    /// Reachable members of the group that matters now: the fewest of any group with records in
    /// flight, else of any group written so far (0 to 6).
    pub fn reachable_members(&self) -> usize {
        let session = self.session.locked();
        let w = session.writer();
        w.in_flight_reachable().unwrap_or_else(|| {
            w.placement()
                .table()
                .keys()
                .map(|s| w.reachable_in(*s))
                .min()
                .unwrap_or_else(|| w.reachable().len().min(PG_MEMBERS))
        })
    }

    /// A segment whose group has `node` as a member, to carry a VDL notice to it (an append
    /// without records): a node hears only of segments placed on it.
    fn notice_segment(&self, node: usize) -> Option<SegmentId> {
        let session = self.session.locked();
        let placement = session.writer().placement();
        placement
            .table()
            .iter()
            .find(|(_, g)| g.contains(node))
            .map(|(s, _)| *s)
    }

    /// The first segment of `segments` whose group has fewer than a write quorum of `up` nodes,
    /// with how many it has.
    fn groups_short_of_quorum(
        &self,
        segments: &std::collections::BTreeMap<SegmentId, Lsn>,
        up: &[bool],
    ) -> Option<(SegmentId, usize)> {
        let session = self.session.locked();
        segments.keys().find_map(|s| {
            let group = session.writer().group(*s);
            let n = group.0.iter().filter(|&&node| up[node]).count();
            (n < WRITE_QUORUM).then_some((*s, n))
        })
    }

    /// The session's time: since this writer was created.
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The writer is **in limbo**: the write quorum was lost while commits it shipped were not
    /// durable, and they have not settled since. Those commits reached three members at most;
    /// none of them can become durable, nor be truncated by a recovery (which needs four members
    /// too), until a fourth member returns. Meanwhile the writer keeps its epoch and its VDL but
    /// ships nothing new: reads are served at the VDL by a fresh instance, writes are refused
    /// `read_only` (`docs/rfcs/0004-write-quorum-lost-in-flight.md`). It stays in limbo after a
    /// write quorum is back until the VDL reaches the last LSN shipped before the loss (gossip
    /// fills the returning members), or [`limbo_stuck`](Self::limbo_stuck) says it never will.
    /// The rule is the session's ([`WriterSession::in_limbo`]).
    pub fn in_limbo(&self) -> bool {
        self.session.locked().in_limbo()
    }

    /// In limbo with a write quorum reachable again for longer than `grace`, and the commits
    /// still not durable: no returning member holds them (they reached only members still down,
    /// or none: a disk budget refused them everywhere). Only a recovery can settle them now.
    pub fn limbo_stuck(&self, grace: Duration) -> bool {
        let now = self.now();
        self.session.locked().limbo_stuck(grace, now)
    }

    /// Why members refuse appends while connected, if any do: "N of 6 safekeepers refuse
    /// appends: <the first one's reason>". Appended to `read_only` refusals.
    pub fn refusing_summary(&self) -> Option<String> {
        self.session.locked().refusing_summary()
    }

    /// How long the oldest commit above the VDL has waited for durability, if one does.
    pub fn oldest_unsettled_age(&self) -> Option<Duration> {
        let now = self.now();
        self.session.locked().oldest_unsettled_age(now)
    }

    /// Why this writer can no longer be used, if it cannot.
    pub fn failure(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    /// Marks the writer failed: its compute must be thrown away and the volume recovered anew.
    pub fn fail(&self, why: String) {
        self.failed.send_if_modified(|f| {
            if f.is_none() {
                // Logged once: every member task of a superseded writer reports it.
                warn!(tenant = %self.tenant, epoch = self.epoch, why = %why, "writer failed");
                *f = Some(why);
                true
            } else {
                false
            }
        });
        self.shutdown();
    }

    pub fn shutdown(&self) {
        // Members dropped from now on are dropped on purpose: not a lost quorum.
        self.session.locked().shut_down();
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
        let session = self.session.locked();
        (self.taps.subscribe(), session.last_lsn())
    }

    /// Ships one mini-transaction; returns its commit LSN. Never waits for durability.
    pub fn commit(&self, changes: Vec<(PageNo, RedoBody)>) -> Result<Lsn, LogError> {
        if let Some(why) = self.failure() {
            return Err(LogError::Failed(why));
        }
        let now = self.now();
        let mut session = self.session.locked();
        let ShippedMtr {
            commit_lsn,
            segments,
        } = session.commit(changes, now)?;
        self.taps.publish(commit_lsn, &segments);
        let vdl = session.vdl();
        let writer = session.writer();
        for (segment, records) in segments {
            // Each segment's records go to the six nodes of its group.
            let group = writer.group(segment);
            // A large MTR goes as several appends, in LSN order: one frame has a size limit,
            // and smaller appends let members acknowledge (and the VCL move) as they go.
            for chunk in members::append_chunks(&records, APPEND_BYTES_MAX) {
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
                for &node in &group.0 {
                    if writer.reachable().contains(node)
                        && self.members[node].try_send((body.clone(), last)).is_err()
                    {
                        // Too slow or gone: it will fill the gap from its peers.
                        debug!(tenant = %self.tenant, node, "member queue full, append dropped for it");
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

    /// `member` acknowledged `scl` for `segment` in `epoch`. Returns false if the ack says this
    /// writer is superseded (a newer epoch was installed or promised there): the caller fails it.
    fn on_ack(&self, member: usize, segment: SegmentId, epoch: u64, scl: Lsn) -> bool {
        let now = self.now();
        let mut session = self.session.locked();
        let (new_vdl, events) = session.on_ack(member, segment, epoch, scl, now);
        if let Some(vdl) = new_vdl {
            self.publish_vdl(vdl);
        }
        drop(session);
        self.log_events(&events);
        !events.iter().any(|e| matches!(e, Event::Superseded { .. }))
    }

    /// Publishes a new VDL. Two members' tasks may race here: never let a stale, lower VDL
    /// overwrite a newer one (callers hold the session lock, so this cannot happen, but the
    /// watch is cheap to guard).
    fn publish_vdl(&self, vdl: Lsn) {
        self.vdl.send_if_modified(|v| {
            let newer = vdl > *v;
            if newer {
                *v = vdl;
            }
            newer
        });
    }

    /// `member` accepted our `Hello`; `refusing`: it refuses appends (its disk budget); `held`:
    /// what its `HelloOk` says it holds, which replaces what it acknowledged before (a replaced
    /// disk's acknowledgements stop counting, RFC 0013).
    fn member_connected(&self, member: usize, refusing: Option<String>, held: &[(SegmentId, Lsn)]) {
        let now = self.now();
        let mut session = self.session.locked();
        let (new_vdl, events) = session.member_connected(member, refusing, held, now);
        if let Some(vdl) = new_vdl {
            self.publish_vdl(vdl);
        }
        self.after_membership(session, &events);
    }

    /// `member` says whether it refuses appends while connected.
    fn member_refusing(&self, member: usize, why: Option<String>) {
        let now = self.now();
        let mut session = self.session.locked();
        let events = session.member_refusing(member, why, now);
        self.after_membership(session, &events);
    }

    /// `member`'s connection is gone.
    fn member_lost(&self, member: usize) {
        let now = self.now();
        let mut session = self.session.locked();
        let events = session.member_lost(member, now);
        self.after_membership(session, &events);
    }

    /// Records up to `last` were sent to `member`.
    fn sent(&self, member: usize, last: Lsn) {
        let now = self.now();
        self.session.locked().sent(member, last, now);
    }

    /// `Some((sent, acked))` if `member` owes an acknowledgement for longer than
    /// [`MEMBER_ACK_TIMEOUT`]: its task drops the connection.
    fn ack_overdue(&self, member: usize) -> Option<(Lsn, Lsn)> {
        let now = self.now();
        self.session
            .locked()
            .tick(now)
            .into_iter()
            .find_map(|e| match e {
                Event::AckTimeout {
                    member: m,
                    sent,
                    acked,
                } if m == member => Some((sent, acked)),
                _ => None,
            })
    }

    fn after_membership(
        &self,
        session: std::sync::MutexGuard<'_, WriterSession>,
        events: &[Event],
    ) {
        let n = session.writer().reachable().len();
        drop(session);
        self.log_events(events);
        self.reachable.send_replace(n);
    }

    fn log_events(&self, events: &[Event]) {
        for e in events {
            match e {
                Event::LimboEntered {
                    reachable,
                    vdl,
                    until,
                } => {
                    warn!(tenant = %self.tenant, epoch = self.epoch, reachable, %vdl, last_lsn = %until,
                    "write quorum lost with commits in flight: writer in limbo, reads served at the VDL, writes refused until the commits settle")
                }
                Event::QuorumBack { reachable, until } => {
                    info!(tenant = %self.tenant, epoch = self.epoch, reachable, %until,
                    "write quorum back: waiting for the commits in flight to settle")
                }
                Event::Settled { vdl } => info!(tenant = %self.tenant, epoch = self.epoch, %vdl,
                    "commits in flight settled: the writer is out of limbo"),
                Event::Refusing {
                    member,
                    why: Some(w),
                } => warn!(tenant = %self.tenant, member, why = %w,
                    "safekeeper refuses appends; not counted toward the write quorum"),
                Event::Refusing { member, why: None } => {
                    info!(tenant = %self.tenant, member, "safekeeper accepts appends again")
                }
                Event::Superseded { member, epoch } => {
                    info!(tenant = %self.tenant, epoch = self.epoch, member, newer_epoch = epoch,
                        "a safekeeper acknowledged in a newer epoch: this writer is superseded")
                }
                Event::AckTimeout { .. } => {}
            }
        }
    }
}
