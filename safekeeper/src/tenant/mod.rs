//! One tenant on this safekeeper's disk: its control state, its segment logs, its acceptor, and
//! the durable state it has published.
//!
//! Two views of the same tenant live side by side:
//!
//! - the **log** (behind one mutex): the acceptor and the segment files. Only the log writer
//!   thread changes it ([`crate::log_writer`]); readers lock it to read records.
//! - the **published** state (behind a second, never-held-across-I/O mutex): per segment the SCL,
//!   last CPL and end LSN as of the last fsync, plus epoch and known VDL. Everything that answers
//!   a peer or a writer (acks, `GetState`, `GossipSummary`, the bound of `ReadLog`) reads this, so
//!   nothing that was written but not yet fsynced is ever promised.
//!
//! Lock order: log, then published. Published is updated only while the log lock is held, at
//! points where everything the chain covers is synced: after a group commit's fsyncs, after a
//! truncation, after a trim, after a corrupt record was dropped.
//!
//! ## Trimming
//!
//! A pageserver that has checkpointed a segment to object storage sends `Trim { upto }`
//! ([`Tenant::trim`]). The acceptor picks the trim point (the highest record of the complete
//! chain at or below `upto`); the control file records it durably; only then are the records at
//! or below it dropped from the segment file (an atomic rewrite). A crash in between leaves
//! records the control file says are trimmed: [`Tenant::open`] drops them. A `ReadLog` that asks
//! for records below the trim point is refused ([`SkError::Trimmed`]): they are gone from here,
//! and serving what is left would hand out a log with a hole at its start. The refusal names the
//! trim point and its last CPL, so a peer behind it can adopt it.
//!
//! ## Adopting a peer's trim point
//!
//! A member whose SCL is below a peer's trim point (its disk was replaced, or it was down while
//! the others trimmed) takes that trim point as its own ([`Tenant::adopt_trim`], decided by
//! [`crate::acceptor::TenantAcceptor::judge_adopt_trim`], why it is safe in [`crate::acceptor`]). The durability
//! order is a trim's: the control file records the new trim point first, then the records at or
//! below it are dropped from the segment file (if there is one). A crash in between is the
//! interrupted trim [`Tenant::open`] already finishes. The chain then starts at the adopted base,
//! and gossip fetches what lies above it.
//!
//! ## The disk budget
//!
//! Every change to a segment file's length is counted in the process's
//! [`SharedDiskBudget`]: the files found at [`Tenant::open`], appends and repairs, truncations
//! and trims (measured as the file's length before and after, so rewrites that also drop bytes
//! of records found corrupt are right too). A writer's append is admitted by the budget before
//! anything is written: a refusal leaves the files, the chain and the known VDL as they were.

use crate::acceptor::{
    self, Acceptor, Action, ChainState, Control, Link, Refusal, Source, TrimPoint,
};
use crate::acceptor::{AdoptOutcome, AppendOutcome};
use crate::control::{self, ControlError, ControlState};
use crate::disk_budget::SharedDiskBudget;
use crate::error::SkError;
use crate::metrics::{inc, Metrics};
use crate::records::ParsedRecord;
use crate::segment_log::{FileStorage, ReadError, SegmentLog};
use borealis_core::{EpochStart, Lsn, SegmentId, TenantId};
use borealis_utils::LockExt;
use borealis_wire::{Body, LsnEntry, SegmentState};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{Excluded, Included};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::{info, warn};

/// What this safekeeper vouches for about a tenant, as of the last fsync: the acceptor's
/// published state (copied where answers are made from, so that readers never take the log
/// lock), with each segment file's length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub vouched: acceptor::Published,
    /// Per segment, the length of its file (what `/status` shows).
    pub bytes: BTreeMap<SegmentId, u64>,
}

impl std::ops::Deref for Published {
    type Target = acceptor::Published;

    fn deref(&self) -> &acceptor::Published {
        &self.vouched
    }
}

/// A segment's chain as the wire states it.
/// The answer to `GetState` and `Fence`: what this member vouches for.
pub fn state_of(p: &Published) -> Body {
    Body::State {
        epoch: p.epoch,
        epoch_start_lsn: p.epoch_start_lsn,
        history: p.history.clone(),
        known_vdl: p.known_vdl,
        segments: p
            .segments
            .iter()
            .map(|(s, c)| segment_state(*s, c))
            .collect(),
        promised_epoch: p.promised_epoch,
    }
}

pub fn segment_state(segment: SegmentId, chain: &ChainState) -> SegmentState {
    SegmentState {
        segment,
        scl: chain.scl,
        last_cpl: chain.last_cpl,
        end_lsn: chain.end_lsn,
    }
}

/// Records read for `ReadLog`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadResult {
    pub records: Vec<u8>,
    pub scl: Lsn,
    pub known_vdl: Lsn,
}

/// The bytes of log held by `segments`: the lengths of their files.
fn retained_bytes(segments: &BTreeMap<SegmentId, SegmentLog<FileStorage>>) -> u64 {
    segments.values().map(|s| s.len_bytes()).sum()
}

struct TenantLog {
    acceptor: Acceptor,
    segments: BTreeMap<SegmentId, SegmentLog<FileStorage>>,
}

pub struct Tenant {
    id: TenantId,
    dir: PathBuf,
    log: Mutex<TenantLog>,
    published: Mutex<Published>,
    /// Per segment, the published epoch and durable SCL; every writer connection that appended
    /// to the segment watches it and sends an `Ack` whenever it is published (even unchanged),
    /// as long as the epoch is the one it appended in (RFC 0015).
    acks: Mutex<BTreeMap<SegmentId, watch::Sender<(u64, Lsn)>>>,
    metrics: Arc<Metrics>,
    /// The process's disk budget, shared by every tenant (a leaf lock, after `log`).
    budget: Arc<SharedDiskBudget>,
}

fn segment_file_name(segment: SegmentId) -> String {
    format!("seg-{}.log", segment.0)
}

/// The segment of a file name `seg-<n>.log`, if it is one.
fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let n = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().map(SegmentId)
}

impl From<ControlError> for SkError {
    fn from(e: ControlError) -> SkError {
        match e {
            ControlError::Io(e) => SkError::Io(e),
            e => SkError::Internal(e.to_string()),
        }
    }
}

impl Tenant {
    /// A tenant new to this safekeeper: its directory is created (durably) but holds nothing
    /// until a `Hello` stores its first epoch.
    pub fn create(
        dir: &Path,
        id: TenantId,
        metrics: Arc<Metrics>,
        budget: Arc<SharedDiskBudget>,
    ) -> Result<Tenant, SkError> {
        std::fs::create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            crate::segment_log::fsync_dir(parent)?;
        }
        Tenant::open(dir, id, metrics, budget)
    }

    /// Opens a tenant directory: loads the control state, opens (and recovers) every segment
    /// file, and finishes what a crash interrupted (the acceptor's [`Acceptor::open`] says
    /// what). What its segment files hold after that is counted in `budget`.
    pub fn open(
        dir: &Path,
        id: TenantId,
        metrics: Arc<Metrics>,
        budget: Arc<SharedDiskBudget>,
    ) -> Result<Tenant, SkError> {
        control::remove_leftovers(dir)?;
        let state = control::load(dir)?.unwrap_or(ControlState::new(Vec::new(), None));
        let (acceptor, finish) = Acceptor::open(Control {
            history: state.history.clone(),
            truncate_pending_above: state.pending_truncation_above,
            trims: state.trim_points(),
            promised_epoch: state.promised_epoch,
        });
        let mut segments = BTreeMap::new();
        // Leftovers first, then the segments, each from a listing taken whole. A rewrite a
        // crash stopped before its rename leaves `seg-<n>.log.tmp` (the original file is
        // intact): it must be gone before anything below rewrites a segment file, because
        // finishing an interrupted trim writes and renames that same temporary name. (A drill
        // found the other order: the open finished a trim of `seg-0.log`, which consumed the
        // temporary name, then tried to remove the leftover it had listed, failed with "not
        // found", and the member could never start again.)
        let listing = |dir: &Path| -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
            let mut entries = std::fs::read_dir(dir)?
                .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
                .collect::<Result<Vec<_>, _>>()?;
            entries.sort();
            Ok(entries)
        };
        for (name, path) in listing(dir)? {
            if name.starts_with("seg-") && name.ends_with(".log.tmp") {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
        }
        for (name, path) in listing(dir)? {
            let Some(segment) = parse_segment_file_name(&name) else {
                if name != control::CONTROL_FILE_NAME {
                    warn!(tenant = %id, file = %name, "ignoring unknown file in tenant directory");
                }
                continue;
            };
            let (log, report) = SegmentLog::open(FileStorage::open(&path)?)?;
            for bad in &report.corrupt {
                inc(&metrics.crc_failures_total, 1);
                warn!(tenant = %id, %segment, offset = bad.offset, bytes = bad.len_bytes, error = %bad.error,
                    "corrupt range in segment file dropped; its records will be fetched from peers");
            }
            if report.torn_tail_bytes > 0 {
                inc(&metrics.torn_tail_bytes_total, report.torn_tail_bytes);
                info!(tenant = %id, %segment, bytes = report.torn_tail_bytes, "cut torn tail of segment file");
            }
            segments.insert(segment, log);
        }
        budget.grow(retained_bytes(&segments));
        let tenant = Tenant {
            id,
            dir: dir.to_path_buf(),
            log: Mutex::new(TenantLog { acceptor, segments }),
            published: Mutex::default(),
            acks: Mutex::default(),
            metrics,
            budget,
        };
        {
            let mut guard = tenant.log.locked();
            let log = &mut *guard;
            if let Some(above) = state.pending_truncation_above {
                info!(tenant = %id, epoch = state.epoch, %above, "finishing an interrupted truncation");
            }
            tenant.execute(log, finish, None)?;
            for (&segment, file) in &log.segments {
                for (lsn, entry) in file.index() {
                    log.acceptor.load(segment, *lsn, entry.link);
                }
            }
            let publish = log.acceptor.opened();
            tenant.execute(log, publish, None)?;
        }
        Ok(tenant)
    }

    pub fn id(&self) -> TenantId {
        self.id
    }

    /// The bytes of log this tenant's segment files hold (their lengths, no file is read).
    pub fn retained_bytes(&self) -> u64 {
        retained_bytes(&self.log.locked().segments)
    }

    /// Runs `f` on the published state.
    pub fn with_published<R>(&self, f: impl FnOnce(&Published) -> R) -> R {
        f(&self.published.locked())
    }

    pub fn epoch(&self) -> u64 {
        self.published.locked().epoch
    }

    /// A receiver of the segment's published `(epoch, SCL)`, for sending acks.
    pub fn subscribe_acks(&self, segment: SegmentId) -> watch::Receiver<(u64, Lsn)> {
        let mut acks = self.acks.locked();
        let tx = acks
            .entry(segment)
            .or_insert_with(|| watch::channel((0, Lsn::INVALID)).0);
        tx.subscribe()
    }

    /// Handles a `Hello` carrying the writer's epoch `history`: a newer epoch is made durable and
    /// the log truncated (above the acceptor's verdict) before this returns. Returns the
    /// segments' states to answer with.
    pub fn hello(
        &self,
        epoch: u64,
        epoch_start_lsn: Lsn,
        history: &[EpochStart],
    ) -> Result<Vec<SegmentState>, SkError> {
        let mut guard = self.log.locked();
        let log = &mut *guard;
        let old = log.acceptor.judge().epoch();
        let actions = log
            .acceptor
            .hello(epoch, epoch_start_lsn, history)
            .map_err(|r| self.refused(r))?;
        if !actions.is_empty() {
            self.execute(log, actions, None)?;
            info!(tenant = %self.id, old_epoch = old, epoch, start = %epoch_start_lsn,
                "entered a new epoch");
        }
        Ok(self.with_published(|p| {
            p.segments
                .iter()
                .map(|(s, c)| segment_state(*s, c))
                .collect()
        }))
    }

    /// Handles `Fence { epoch }` (RFC 0014 §2): the promise is made durable and published (acks
    /// go out in `epoch` from now on), then the published state is returned, read under the log
    /// lock the promise was made under: no ack below `epoch` leaves after it, and none before it
    /// reported more than it says.
    pub fn fence(&self, epoch: u64) -> Result<Body, SkError> {
        let mut guard = self.log.locked();
        let log = &mut *guard;
        let actions = log.acceptor.fence(epoch).map_err(|r| self.refused(r))?;
        self.execute(log, actions, None)?;
        info!(tenant = %self.id, epoch, installed = log.acceptor.judge().epoch(),
            "promised an epoch to a recovery: writers below it are refused");
        Ok(self.with_published(state_of))
    }

    /// Handles `Trim { epoch, upto }` for `segment` (see the module docs): the trim point is
    /// made durable, then the records at or below it are dropped, before this returns. Returns
    /// the segment's trim point after (`INVALID`: never trimmed).
    pub fn trim(&self, segment: SegmentId, epoch: u64, upto: Lsn) -> Result<Lsn, SkError> {
        let mut guard = self.log.locked();
        let log = &mut *guard;
        let (base, dropped, actions) = log
            .acceptor
            .trim(segment, epoch, upto)
            .map_err(|r| self.refused(r))?;
        if actions.is_empty() {
            return Ok(base);
        }
        let dropped_from_file = self.execute(log, actions, None)?;
        if dropped != dropped_from_file {
            warn!(tenant = %self.id, %segment, chain = dropped, file = dropped_from_file,
                "trim dropped a different number of records from the chain and the file");
        }
        inc(&self.metrics.trims_total, 1);
        inc(&self.metrics.records_trimmed_total, dropped as u64);
        info!(tenant = %self.id, %segment, %upto, %base, dropped,
            "trimmed the log (checkpointed to object storage)");
        Ok(base)
    }

    /// Adopts a peer's trim point `peer` for `segment` (see the module docs and
    /// [`crate::acceptor`]): learnt from the peer's refusal of a gossip `ReadLog` in `epoch`,
    /// while its summary said its SCL is `peer_scl`. Like a trim, the trim point is made durable
    /// in the control file first, then the records at or below it are dropped from the segment
    /// file, before this returns; then the chain starts at the adopted base.
    pub fn adopt_trim(
        &self,
        segment: SegmentId,
        epoch: u64,
        peer_scl: Lsn,
        peer: TrimPoint,
    ) -> Result<AdoptOutcome, SkError> {
        let mut guard = self.log.locked();
        let log = &mut *guard;
        let (outcome, actions) = log
            .acceptor
            .adopt_trim(segment, epoch, peer_scl, peer)
            .map_err(|r| self.refused(r))?;
        let dropped_from_file = self.execute(log, actions, None)?;
        if let AdoptOutcome::Adopted { dropped, .. } = outcome {
            if dropped != dropped_from_file {
                warn!(tenant = %self.id, %segment, chain = dropped, file = dropped_from_file,
                    "adopting a trim point dropped a different number of records from the chain and the file");
            }
            inc(&self.metrics.trim_points_adopted_total, 1);
        }
        Ok(outcome)
    }

    /// Writes a writer's records (not yet durable: see [`Tenant::commit`]). The disk budget
    /// admits them first: a refusal changes nothing.
    pub fn append(
        &self,
        segment: SegmentId,
        epoch: u64,
        vdl: Lsn,
        raw: &[u8],
        parsed: &[ParsedRecord],
    ) -> Result<AppendOutcome, SkError> {
        let mut guard = self.log.locked();
        let log = &mut *guard;
        let records = parsed_meta(parsed);
        let (outcome, actions) = log
            .acceptor
            .append(segment, Source::Writer { epoch, vdl }, &records, |bytes| {
                self.budget
                    .admit(self.id, segment, bytes)
                    .map_err(SkError::from)
            })
            .map_err(|r| self.refused(r))??;
        self.after_append(log, segment, &outcome, actions, raw, parsed)?;
        Ok(outcome)
    }

    /// Writes records a peer supplied (gossip), if the tenant is still in `epoch`. Counted in
    /// the disk budget, never refused by it (they fill what a write quorum already holds).
    pub fn repair(
        &self,
        segment: SegmentId,
        epoch: u64,
        known_vdl: Lsn,
        raw: &[u8],
        parsed: &[ParsedRecord],
    ) -> Result<AppendOutcome, SkError> {
        let mut guard = self.log.locked();
        let log = &mut *guard;
        let records = parsed_meta(parsed);
        let (outcome, actions) = log
            .acceptor
            .append(
                segment,
                Source::Peer { epoch, known_vdl },
                &records,
                |bytes| {
                    self.budget.grow(bytes);
                    Ok::<(), SkError>(())
                },
            )
            .map_err(|r| self.refused(r))??;
        self.after_append(log, segment, &outcome, actions, raw, parsed)?;
        Ok(outcome)
    }

    fn after_append(
        &self,
        log: &mut TenantLog,
        segment: SegmentId,
        outcome: &AppendOutcome,
        actions: Vec<Action>,
        raw: &[u8],
        parsed: &[ParsedRecord],
    ) -> Result<(), SkError> {
        if outcome.off_chain > 0 {
            warn!(tenant = %self.id, %segment, records = outcome.off_chain,
                "ignored records below the SCL that are not on the segment's chain");
        }
        self.execute(log, actions, Some((raw, parsed)))?;
        Ok(())
    }

    /// The group commit of this tenant: fsyncs every `dirty` segment, then publishes the new
    /// state of `dirty` and `touched` segments and acks them. Returns the number of fsyncs.
    pub fn commit(
        &self,
        dirty: &BTreeSet<SegmentId>,
        touched: &BTreeSet<SegmentId>,
    ) -> std::io::Result<usize> {
        let mut guard = self.log.locked();
        let log = &mut *guard;
        let mut fsyncs = 0;
        for segment in dirty {
            if let Some(file) = log.segments.get_mut(segment) {
                file.sync()?;
                fsyncs += 1;
            }
        }
        let changed: BTreeSet<SegmentId> = dirty.union(touched).copied().collect();
        let actions = log.acceptor.synced(&changed);
        self.execute(log, actions, None).map_err(|e| match e {
            SkError::Io(e) => e,
            e => std::io::Error::other(e.to_string()),
        })?;
        Ok(fsyncs)
    }

    /// Records of `segment` with `after < lsn <= min(upto, published SCL)`, in LSN order, about
    /// `max_bytes` at most (always at least one record if any). `(exact, min)` epoch checks fail
    /// with `Fenced`. A record that fails its check on the way is dropped (and the SCL lowered);
    /// the answer stops before it.
    pub fn read_log(
        &self,
        segment: SegmentId,
        (exact_epoch, min_epoch): (Option<u64>, u64),
        after: Lsn,
        upto: Lsn,
        max_bytes: usize,
    ) -> Result<ReadResult, SkError> {
        let mut guard = self.log.locked();
        let log = &mut *guard;
        let ours = log.acceptor.judge().epoch();
        if exact_epoch.is_some_and(|e| e != ours) {
            let theirs = exact_epoch.unwrap_or_default();
            return Err(SkError::Fenced {
                tenant: self.id,
                ours,
                theirs,
            });
        }
        if ours < min_epoch {
            return Err(SkError::Fenced {
                tenant: self.id,
                ours,
                theirs: min_epoch,
            });
        }
        let (scl, known_vdl) = self.with_published(|p| {
            (
                p.segments.get(&segment).map_or(Lsn::INVALID, |s| s.scl),
                p.known_vdl,
            )
        });
        let limit = upto.min(scl);
        let trim = log
            .acceptor
            .judge()
            .segment(segment)
            .map_or(TrimPoint::default(), |c| c.trim_point());
        if after < trim.base && after < upto {
            return Err(self.trimmed(segment, trim, after));
        }
        let Some(file) = log.segments.get_mut(&segment) else {
            return Ok(ReadResult {
                records: Vec::new(),
                scl: Lsn::INVALID,
                known_vdl,
            });
        };
        if after >= limit {
            return Ok(ReadResult {
                records: Vec::new(),
                scl,
                known_vdl,
            });
        }
        let mut wanted = Vec::new();
        let mut total = 0usize;
        for (lsn, entry) in file.index().range((Excluded(after), Included(limit))) {
            let len = entry.len_bytes as usize;
            if !wanted.is_empty() && total + len > max_bytes {
                break;
            }
            total += len;
            wanted.push(*lsn);
        }
        let mut records = Vec::with_capacity(total);
        let mut corrupt = None;
        for lsn in wanted {
            match file.read_record(lsn) {
                Ok(bytes) => records.extend_from_slice(&bytes),
                Err(ReadError::Corrupt { lsn, reason }) => {
                    inc(&self.metrics.crc_failures_total, 1);
                    warn!(tenant = %self.id, %segment, %lsn, %reason,
                        "stored record failed its check; dropped, a peer will supply it again");
                    corrupt = Some(lsn);
                    break;
                }
                Err(ReadError::Missing(lsn)) => {
                    return Err(SkError::Internal(format!(
                        "record {lsn} is below the SCL but not indexed"
                    )))
                }
            }
        }
        if let Some(lsn) = corrupt {
            let actions = log.acceptor.dropped_corrupt(segment, lsn);
            self.execute(log, actions, None)?;
        }
        let scl = self.with_published(|p| p.segments.get(&segment).map_or(Lsn::INVALID, |s| s.scl));
        Ok(ReadResult {
            records,
            scl,
            known_vdl,
        })
    }

    /// The driver: executes the acceptor's actions in order (see [`crate::acceptor::Acceptor`]).
    /// `input` is the append whose records `Write` names. Returns the records the
    /// `DropThrough`s removed from the files. An I/O error leaves the rest undone: the log
    /// writer then stops the process, and [`Tenant::open`] finishes the job.
    fn execute(
        &self,
        log: &mut TenantLog,
        actions: Vec<Action>,
        input: Option<(&[u8], &[ParsedRecord])>,
    ) -> Result<usize, SkError> {
        let mut dropped = 0;
        for action in actions {
            match action {
                Action::StoreControl(c) => control::store(
                    &self.dir,
                    &ControlState::new(c.history, c.truncate_pending_above)
                        .with_trims(&c.trims)
                        .with_promise(c.promised_epoch),
                )?,
                Action::Truncate { above } => {
                    for file in log.segments.values_mut() {
                        let before = file.len_bytes();
                        let result = file.truncate_above(above);
                        self.budget.resize(before, file.len_bytes());
                        result?;
                    }
                }
                Action::DropThrough { segment, base } => {
                    if let Some(file) = log.segments.get_mut(&segment) {
                        let before = file.len_bytes();
                        let result = file.drop_through(base);
                        self.budget.resize(before, file.len_bytes());
                        dropped += result?;
                    }
                }
                Action::Write { segment, records } => {
                    let (raw, parsed) = input.expect("a Write answers an append");
                    let new_bytes: u64 =
                        records.iter().map(|&i| parsed[i].range.len() as u64).sum();
                    // The acceptor had the budget admit (or count) `new_bytes`: from here they
                    // are written, or released on failure.
                    let file = match log.segments.entry(segment) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let path = self.dir.join(segment_file_name(segment));
                            let opened = FileStorage::open(&path).and_then(SegmentLog::open);
                            let (file, _) =
                                opened.inspect_err(|_| self.budget.release(new_bytes))?;
                            // A new segment's file is empty; should one have been left behind,
                            // count it.
                            self.budget.grow(file.len_bytes());
                            e.insert(file)
                        }
                    };
                    let before = file.len_bytes();
                    let written = match file.append(records.iter().map(|&i| {
                        let p = &parsed[i];
                        (p.lsn, p.link, &raw[p.range.clone()])
                    })) {
                        Ok(written) => written,
                        Err(e) => {
                            // Not written (and the writer thread stops anyway).
                            self.budget.release(new_bytes);
                            self.budget.resize(before, file.len_bytes());
                            return Err(e.into());
                        }
                    };
                    assert_eq!(
                        written,
                        records.len(),
                        "segment file and chain hold the same records"
                    );
                    assert_eq!(
                        file.len_bytes() - before,
                        new_bytes,
                        "the file grew by the bytes the disk budget counted"
                    );
                }
                Action::Publish { segments } => {
                    self.publish(log, &segments);
                    self.notify_acks(&segments);
                }
            }
        }
        Ok(dropped)
    }

    /// A refusal of the acceptor as the error answered.
    fn refused(&self, refusal: Refusal) -> SkError {
        match refusal {
            Refusal::Fenced { ours, theirs } => SkError::Fenced {
                tenant: self.id,
                ours,
                theirs,
            },
            Refusal::HelloFirst { ours, theirs } => SkError::HelloFirst {
                tenant: self.id,
                ours,
                theirs,
            },
            Refusal::Invalid { reason } => SkError::Invalid {
                tenant: self.id,
                message: reason,
            },
        }
    }

    /// The refusal of a read that starts at `after`, below the segment's `trim` point.
    fn trimmed(&self, segment: SegmentId, trim: TrimPoint, after: Lsn) -> SkError {
        SkError::Trimmed {
            tenant: self.id,
            segment,
            base: trim.base,
            last_cpl: trim.last_cpl,
            after,
        }
    }

    /// Answer to `ReadLsns`: the headers of the segment's durable records in `(after, upto]`, at
    /// most `max`, and the record at or below `after` the first links to (RFC 0008). Read from
    /// the acceptor's chain in memory, cut at the published (fsynced) SCL: no file is read.
    pub fn read_lsns(
        &self,
        segment: SegmentId,
        after: Lsn,
        upto: Lsn,
        max: usize,
    ) -> Result<(Lsn, Vec<LsnEntry>, Lsn), SkError> {
        // Lock order: log, then published (which changes only under the log lock).
        let log = self.log.locked();
        let scl = self
            .published
            .locked()
            .segments
            .get(&segment)
            .map_or(Lsn::INVALID, |c| c.scl);
        let Some(chain) = log.acceptor.judge().segment(segment) else {
            return Ok((Lsn::INVALID, Vec::new(), scl));
        };
        let Some((before, held)) = chain.index(after, upto.min(scl), max) else {
            return Err(self.trimmed(segment, chain.trim_point(), after));
        };
        let entries = held
            .into_iter()
            .map(|(lsn, link)| LsnEntry {
                lsn,
                prev_lsn_segment: link.prev_lsn_segment,
                is_cpl: link.is_cpl,
            })
            .collect();
        Ok((before, entries, scl))
    }

    /// Copies the acceptor's published state of `segments` (and the tenant's epoch and VDL)
    /// where answers are made from, with each segment file's length.
    fn publish(&self, log: &TenantLog, segments: &[SegmentId]) {
        let from = log.acceptor.published();
        let mut p = self.published.locked();
        let v = &mut p.vouched;
        v.epoch = from.epoch;
        v.epoch_start_lsn = from.epoch_start_lsn;
        if v.history != from.history {
            v.history = from.history.clone();
        }
        v.known_vdl = from.known_vdl;
        v.promised_epoch = from.promised_epoch;
        for &segment in segments {
            let Some(chain) = from.segments.get(&segment) else {
                continue;
            };
            p.vouched.segments.insert(segment, *chain);
            let bytes = log.segments.get(&segment).map_or(0, |s| s.len_bytes());
            p.bytes.insert(segment, bytes);
        }
    }

    fn notify_acks(&self, segments: &[SegmentId]) {
        let acks = self.acks.locked();
        let published = self.published.locked();
        for segment in segments {
            if let (Some(tx), Some(s)) = (acks.get(segment), published.segments.get(segment)) {
                tx.send_replace((published.ack_epoch(), s.scl));
            }
        }
    }
}

/// What the acceptor needs of an append's records.
fn parsed_meta(parsed: &[ParsedRecord]) -> Vec<(Lsn, Link, u64)> {
    parsed
        .iter()
        .map(|p| (p.lsn, p.link, p.range.len() as u64))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
