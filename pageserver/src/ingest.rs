//! Following a segment's log: one task per (tenant, segment) reads records from safekeepers and
//! applies them to the page store, strictly in LSN order, without gaps, and never above the
//! tenant's vouched VDL.
//!
//! ## The loop
//!
//! The follower's *target* is the highest LSN it knows to be durable: the tenant's vouched VDL
//! (from GetPage requests) or the `known_vdl` its current safekeeper reported, whichever is
//! higher. (A safekeeper's `known_vdl` only ever raises the target for reads *from that
//! safekeeper*: its log up to the VDL its own writer told it is that writer's durable log, while
//! another safekeeper might be at an older epoch. It is only ever a VDL a writer sent, never the
//! start of an epoch, which a recovery that fails before making it durable may leave behind:
//! `borealis_quorum::acceptor::TenantAcceptor::begin_epoch`.) Every read passes the vouched epoch as
//! `min_epoch`. Each turn the follower does one of three things:
//!
//! 1. **Hurry** when a GetPage waits for an LSN above `caught_up_to`: fetch
//!    `ReadLog { after: caught_up_to, upto: target }` from its source safekeeper and apply what
//!    [`plan_batch`] accepts. If the source has nothing more but its SCL is below the target, the
//!    segment may simply have had no records since (an idle segment's SCL stays at its last
//!    record): ask every safekeeper of its group `GetState` and, if a read quorum holds no record of the
//!    segment above `caught_up_to`, the segment is complete up to the target (see below).
//!    Otherwise turn to another safekeeper.
//! 2. **Catch up in the background** when the target moved above `caught_up_to` (a safekeeper's
//!    `known_vdl` usually moves it before any GetPage asks): the same fetch, without the quorum
//!    question; a source that has nothing more marks the segment *idle*.
//! 3. **Long-poll** otherwise: `ReadLog { after, upto: ∞, wait_ms }` parks on the safekeeper until
//!    records arrive. The answer is not applied (it may lie above the VDL); it brings a newer
//!    `known_vdl` and shows whether the segment has new records. A GetPage that needs more
//!    interrupts the poll.
//! 4. **Go dormant** when nothing happened for `--dormant-after` (no GetPage had to wait, no new
//!    record was seen): an idle tenant costs the safekeepers nothing until a GetPage wakes the
//!    follower.
//!
//! Errors, holes and protocol violations rotate to the next safekeeper of the segment's group (all
//! of `--safekeepers` if it is no pool: see the last section); after a full round without
//! progress the follower backs off ([`BACKOFF_MAX`] at most).
//!
//! ## Why a read quorum holding nothing proves completeness
//!
//! A GetPage's LSN, or a `known_vdl`, is at or below the VDL, so every record at or below it was
//! on a write quorum (4 of 6) of the segment's protection group *before* we learned of it, and
//! safekeepers never drop durable records. Any read quorum (3 of 6) meets every write quorum, so if
//! three members of the group, asked afterwards, hold no record of the segment above
//! `caught_up_to` (`end_lsn ≤ caught_up_to`), there is no durable record in
//! `(caught_up_to, target]`.
//!
//! Which six form the group, the pageserver computes itself: `--safekeepers` is the pool in AZ
//! order, and when its length is a valid pool (a multiple of three, at least six) the group of
//! segment `s` of tenant `t` is `choose_group(t, s, ordered_pool_azs(n))`, the same six the writer
//! sends the segment to (RFC 0008 §3; [`crate::safekeepers::sources`]). The follower reads only
//! from those six and asks only them, so the three answers that make a proof are three members of
//! *that* group: three nodes of a pool of nine holding nothing would prove nothing if some of them
//! were not in the group, since a non-member never holds the segment. With six safekeepers the
//! group is all six. A `--safekeepers` list that is no valid pool (one address, in tests) does not
//! tell the group, and then all of the listed safekeepers must agree.
//!
//! ## Durability
//!
//! Records are fetched with `upto` at most the target, and [`plan_batch`] refuses any record
//! above `upto`. So the page store never holds a version above a VDL somebody vouched for, and
//! an epoch change (recovery truncating the log above its VDL) can never leave a page built from
//! a record that was not durable. This is the option docs/design.md §5 offers as "apply only what is
//! known durable".

use crate::pages::ApplyError;
use crate::safekeepers::{HeldState, LogAnswer, LogRequest, LogSource};
use crate::segment_cursor::{plan_batch, Cursor, HeldSegment, Plan, SourceProblem};
pub use crate::segment_cursor::{proof_quorum, ProofTally};
use crate::tenant::{Segment, Shared, Tenant, Vouch};
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId};
use borealis_utils::LockExt;
use borealis_wire::FRAME_BYTES_MAX;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, error, info_span, warn, Instrument};

/// Pages a follower fetches from object storage at once before applying a batch.
const PAGE_FETCHES_MAX: usize = 16;
/// Bytes of records asked per fetch.
pub const LOG_READ_BYTES_MAX: u32 = 1024 * 1024;
/// Bytes of records asked per long poll: its records are only looked at, not applied.
pub const POLL_BYTES_MAX: u32 = 64 * 1024;
/// How long a safekeeper may park a long poll.
pub const FOLLOW_POLL_WAIT_MS: u32 = 2000;
/// Bound on a fetch round trip. A healthy safekeeper answers a fetch (no waiting) in
/// milliseconds; a hung one must be left well within a GetPage's wait (`--getpage-wait`, 5 s).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(1);
/// Extra time a long poll may take beyond `FOLLOW_POLL_WAIT_MS` before it counts as failed.
pub const POLL_TIMEOUT_SLACK: Duration = Duration::from_secs(3);
/// A long poll answered empty faster than this was not parked (a safekeeper that ignores
/// `wait_ms`): pause [`POLL_PAUSE`] before the next one so the loop cannot spin.
pub const POLL_QUICK_RETURN: Duration = Duration::from_millis(10);
pub const POLL_PAUSE: Duration = Duration::from_millis(100);
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
pub const BACKOFF_MAX: Duration = Duration::from_millis(500);

const _: () = assert!(
    LOG_READ_BYTES_MAX as usize * 2 <= FRAME_BYTES_MAX,
    "answers fit in a frame"
);
const _: () = assert!(POLL_BYTES_MAX <= LOG_READ_BYTES_MAX);
const _: () = assert!(BACKOFF_MIN.as_millis() <= BACKOFF_MAX.as_millis());

/// Starts following `segment` of `tenant`.
pub(crate) fn spawn_follower(shared: Arc<Shared>, tenant: Arc<Tenant>, segment: Arc<Segment>) {
    let span = info_span!("follow", tenant = %tenant.id, segment = %segment.id);
    let source = LogSource::new(shared.safekeepers.clone(), tenant.id, segment.id);
    segment.update_status(|s| {
        s.safekeeper = source.addr().to_string();
        s.sources = source.addrs();
    });
    let mut follower = Follower {
        shared,
        tenant,
        segment,
        source,
        cursor: Cursor::default(),
        idle: false,
        peek: Lsn::INVALID,
        source_vdl: Lsn::INVALID,
        last_activity: Instant::now(),
    };
    let (tenant, segment) = (follower.tenant.id, follower.segment.id);
    let follower_segment = follower.segment.clone();
    let task = tokio::spawn(
        async move {
            // First the checkpoint, if there is one: the log is followed from there.
            let attached =
                crate::restore::attach(&follower.shared, &follower.tenant, &follower.segment).await;
            follower.cursor = attached.cursor;
            follower.segment.publish_applied(follower.cursor);
            crate::checkpoint::spawn_checkpointer(
                follower.shared.clone(),
                follower.tenant.clone(),
                follower.segment.clone(),
                attached,
            );
            crate::restore::spawn_hydration(
                follower.shared.clone(),
                follower.tenant.clone(),
                follower.segment.clone(),
            );
            follower.run().await
        }
        .instrument(span),
    );
    follower_segment.track_task(task.abort_handle());
    // A follower only ends by panicking (a bug of ours): say so loudly, its GetPages will time
    // out. Or it is aborted because the tenant was deleted.
    tokio::spawn(async move {
        match task.await {
            Err(e) if e.is_cancelled() => {
                tracing::info!(tenant = %tenant, segment = %segment, "segment follower stopped")
            }
            Err(e) => {
                error!(tenant = %tenant, segment = %segment, error = %e, "segment follower died")
            }
            Ok(()) => {}
        }
    });
}

/// How a turn of the loop went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    Progress,
    Quiet,
    Failed,
}

enum Proof {
    Complete,
    /// Safekeeper `node` (an index into `--safekeepers`) holds the segment completely up to the
    /// target: read from it.
    ReadFrom(usize),
    Unproven,
}

struct Follower {
    shared: Arc<Shared>,
    tenant: Arc<Tenant>,
    segment: Arc<Segment>,
    source: LogSource,
    cursor: Cursor,
    /// The source had nothing newer than `caught_up_to`: wait for a poll to show new records
    /// (or a GetPage) before fetching again.
    idle: bool,
    /// The newest LSN a long poll has shown (possibly above the VDL): the next poll waits for
    /// records after it.
    peek: Lsn,
    /// The newest `known_vdl` the current source reported; reset when the source changes.
    source_vdl: Lsn,
    /// When a GetPage last had to wait, or new records were last seen.
    last_activity: Instant,
}

impl Follower {
    async fn run(mut self) {
        let mut vouched_rx = self.tenant.subscribe_vouched();
        let mut wanted_rx = self.segment.subscribe_wanted();
        let mut failures = 0usize;
        let mut backoff = BACKOFF_MIN;
        loop {
            let vouched = *vouched_rx.borrow_and_update();
            let wanted = *wanted_rx.borrow_and_update();
            // A GetPage vouches for its LSN before it waits, so the target covers what it wants.
            let target = vouched.lsn.max(wanted).max(self.source_vdl);
            let caught = self.cursor.caught_up_to;
            let turn = if caught < wanted {
                self.last_activity = Instant::now();
                self.fetch(target, vouched.epoch, true).await
            } else if caught < target && !self.idle {
                self.fetch(target, vouched.epoch, false).await
            } else if self.last_activity.elapsed() >= self.shared.config.dormant_after {
                self.sleep_until_asked(&mut wanted_rx).await
            } else {
                self.poll(&mut vouched_rx, &mut wanted_rx).await
            };
            match turn {
                Turn::Progress | Turn::Quiet => {
                    failures = 0;
                    backoff = BACKOFF_MIN;
                }
                Turn::Failed => {
                    failures += 1;
                    if failures >= self.source.len() {
                        failures = 0;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// Turns to the next of the segment's sources.
    fn rotate(&mut self, why: &str) {
        let from = self.source.addr().to_string();
        self.source.rotate();
        self.switched(from, why);
    }

    /// Turns to safekeeper `node` (an index into `--safekeepers`), one of the segment's sources.
    fn switch_to(&mut self, node: usize, why: &str) {
        let from = self.source.addr().to_string();
        if self.source.switch_to(node) {
            self.switched(from, why);
        } else {
            // Only the segment's sources are asked, so only they can answer: a bug of ours if
            // not, and harmless (the source stays as it is).
            error!(
                node,
                why, "asked to read from a safekeeper that does not hold the segment"
            );
        }
    }

    fn switched(&mut self, from: String, why: &str) {
        self.source_vdl = Lsn::INVALID;
        self.shared.metrics.safekeeper_switches.inc();
        debug!(from = %from, to = %self.source.addr(), why, "switching safekeeper");
        let to = self.source.addr().to_string();
        self.segment.update_status(|s| {
            s.safekeeper = to;
            s.safekeeper_known_vdl = Lsn::INVALID;
        });
    }

    fn note_known_vdl(&mut self, known_vdl: Lsn) {
        if known_vdl > self.source_vdl {
            self.source_vdl = known_vdl;
            self.segment
                .update_status(|s| s.safekeeper_known_vdl = known_vdl);
        }
    }

    fn note_problem(&self, problem: String) {
        self.segment
            .update_status(|s| s.last_problem = Some(problem));
    }

    /// One fetch towards `target` from safekeepers at `epoch` or newer; `urgent` when a GetPage
    /// waits.
    async fn fetch(&mut self, target: Lsn, epoch: u64, urgent: bool) -> Turn {
        let before = self.cursor;
        self.shared.metrics.log_reads.inc();
        let request = LogRequest {
            tenant: self.tenant.id,
            segment: self.segment.id,
            min_epoch: epoch,
            after: before.caught_up_to,
            upto: target,
            max_bytes: LOG_READ_BYTES_MAX,
            wait_ms: 0,
            timeout: FETCH_TIMEOUT,
        };
        let answer = match self.source.read_log(request).await {
            Ok(a) => a,
            Err(e) => {
                self.shared.metrics.log_read_errors.inc();
                debug!(safekeeper = %self.source.addr(), error = %e, "read_log failed");
                self.note_problem(format!("{}: {e}", self.source.addr()));
                self.rotate("read failed");
                return Turn::Failed;
            }
        };
        self.note_known_vdl(answer.known_vdl);
        let mut plan = plan_batch(
            before,
            self.shared.config.layout,
            self.segment.id,
            target,
            &answer.records,
            answer.scl,
        );
        let Some((applied, apply_error)) = self.apply(&mut plan).await else {
            return Turn::Failed;
        };
        let pushed = self
            .segment
            .records
            .locked()
            .as_mut()
            .map(|b| b.push(&plan.to_apply[..applied]));
        match pushed {
            Some(crate::history::Pushed::CheckpointSoon) => {
                self.segment.request_checkpoint();
            }
            Some(crate::history::Pushed::Dropped) => {
                warn!("the redo kept for the retention window reached its bound and was dropped: the window restarts at the next checkpoint");
            }
            _ => {}
        }
        self.cursor.commit(&plan, applied);
        assert!(
            self.cursor.caught_up_to <= target.max(before.caught_up_to),
            "applied above the target"
        );
        self.publish(applied);

        let mut failed = false;
        if let Some(e) = apply_error {
            failed = true;
            match e {
                ApplyError::PageChain { .. } | ApplyError::Body { .. } => {
                    self.shared.metrics.chain_holes.inc();
                    warn!(safekeeper = %self.source.addr(), error = %e, "record refused by the page store");
                    self.note_problem(e.to_string());
                    self.rotate("record refused");
                }
                ApplyError::File(_) | ApplyError::Install { .. } => {
                    error!(error = %e, "writing the page file failed");
                    self.note_problem(e.to_string());
                }
                ApplyError::NotFetched { .. } => {
                    // The object store, not the safekeeper: stay with this source.
                    self.note_problem(e.to_string());
                }
            }
        } else {
            match plan.problem {
                None => {}
                Some(SourceProblem::Hole {
                    lsn,
                    prev_lsn_segment,
                    expected,
                }) => {
                    failed = true;
                    self.shared.metrics.chain_holes.inc();
                    warn!(
                        safekeeper = %self.source.addr(), lsn = %lsn, prev_lsn_segment = %prev_lsn_segment,
                        expected = %expected, "hole in a safekeeper's log"
                    );
                    self.note_problem(format!("{}: hole before lsn {lsn}", self.source.addr()));
                    self.rotate("hole");
                }
                Some(SourceProblem::Bad(why)) => {
                    failed = true;
                    warn!(safekeeper = %self.source.addr(), why = %why, "bad read_log answer");
                    self.note_problem(format!("{}: {why}", self.source.addr()));
                    self.rotate("bad answer");
                }
                Some(SourceProblem::Behind { scl }) if urgent => {
                    match self.prove_complete(target).await {
                        Proof::Complete => {
                            self.cursor.prove_complete(target);
                            self.shared.metrics.quorum_proofs.inc();
                            self.publish(0);
                        }
                        Proof::ReadFrom(node) => {
                            // Reading again from the source that just came up short would spin.
                            failed = node == self.source.node();
                            self.switch_to(node, "holds the segment up to the target");
                        }
                        Proof::Unproven => {
                            failed = true;
                            debug!(safekeeper = %self.source.addr(), scl = %scl, target = %target, "safekeeper behind");
                            self.rotate("behind");
                        }
                    }
                }
                Some(SourceProblem::Behind { .. }) => {
                    self.idle = true;
                    self.segment.update_status(|s| s.idle = true);
                }
            }
        }
        if self.cursor.caught_up_to > before.caught_up_to {
            Turn::Progress
        } else if failed {
            Turn::Failed
        } else {
            Turn::Quiet
        }
    }

    /// Applies the plan's records on a blocking thread; returns how many were applied, or `None`
    /// if the blocking task was cancelled (runtime shutting down): then nothing may be committed.
    async fn apply(&self, plan: &mut Plan) -> Option<(usize, Option<ApplyError>)> {
        if plan.to_apply.is_empty() {
            return Some((0, None));
        }
        // Pages still in object storage first: a record applies to the previous version.
        let remote = self.tenant.pages.remote_pages(&plan.to_apply);
        let fetches: Vec<_> = remote
            .iter()
            .map(|r| crate::restore::fetch_page(&self.shared, &self.tenant, &self.segment, r))
            .collect();
        let fetched = futures::stream::iter(fetches)
            .buffered(PAGE_FETCHES_MAX)
            .collect::<Vec<_>>()
            .await;
        if let Some((r, Err(e))) = remote.iter().zip(fetched).find(|(_, f)| f.is_err()) {
            // Nothing applied: the batch is tried again after a backoff (the store may be down).
            warn!(page = %r.page, error = %e, "fetching a page the next records apply to failed");
            self.shared.metrics.object_store_errors.inc();
            let lsn = plan.to_apply.first().map_or(Lsn::INVALID, |rec| rec.lsn);
            return Some((0, Some(ApplyError::NotFetched { page: r.page, lsn })));
        }
        let pages = self.tenant.pages.clone();
        let records = std::mem::take(&mut plan.to_apply);
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = pages.apply_batch(&records);
            (outcome, records)
        })
        .await;
        match joined {
            Ok((outcome, records)) => {
                plan.to_apply = records;
                Some(outcome)
            }
            Err(e) if e.is_panic() => {
                // A bug of ours; what was applied is unknown, so this segment cannot go on
                // safely: the follower dies with it (its GetPages time out), loudly.
                error!("applying records panicked; the segment stops following");
                std::panic::resume_unwind(e.into_panic())
            }
            Err(_) => None,
        }
    }

    /// Publishes the cursor (every record up to it is in the store by now).
    fn publish(&mut self, applied: usize) {
        self.shared.metrics.records_applied.add(applied as u64);
        if applied > 0 {
            self.last_activity = Instant::now();
        }
        if applied > 0 && self.idle {
            self.idle = false;
            self.segment.update_status(|s| s.idle = false);
        }
        let last_applied = self.cursor.last_applied;
        self.segment.update_status(|s| {
            s.records_applied += applied as u64;
            s.last_applied = last_applied;
        });
        self.segment.publish_applied(self.cursor);
    }

    /// Asks every safekeeper of the segment's sources (its protection group, in a pool) what it
    /// holds of the segment (see the module docs); decides as soon as a quorum has answered.
    async fn prove_complete(&mut self, target: Lsn) -> Proof {
        let mut tally = ProofTally::new(
            self.cursor.caught_up_to,
            target,
            proof_quorum(self.source.len()),
        );
        let mut answers = self
            .shared
            .safekeepers
            .ask_states(self.tenant.id, self.source.nodes());
        while let Some(state) = answers.next().await {
            tally.add(state.index, held_segment(&state, self.segment.id));
            if tally.proven() {
                debug!(caught_up_to = %tally.range().0, target = %target, "segment proved complete");
                return Proof::Complete;
            }
        }
        match tally.complete_source {
            Some(index) => Proof::ReadFrom(index),
            None => Proof::Unproven,
        }
    }

    /// Dormant: no polling until a GetPage waits for more than `caught_up_to`.
    async fn sleep_until_asked(&mut self, wanted_rx: &mut watch::Receiver<Lsn>) -> Turn {
        let caught = self.cursor.caught_up_to;
        debug!(caught_up_to = %caught, "no activity: dormant until a GetPage needs more");
        self.segment.update_status(|s| s.dormant = true);
        // The sender lives in the segment, which this follower holds: this cannot fail.
        let _ = wanted_rx.wait_for(|w| *w > caught).await;
        self.segment.update_status(|s| s.dormant = false);
        self.last_activity = Instant::now();
        Turn::Quiet
    }

    /// A long poll, interrupted when a GetPage needs more or the VDL moved for a busy segment.
    async fn poll(
        &mut self,
        vouched_rx: &mut watch::Receiver<Vouch>,
        wanted_rx: &mut watch::Receiver<Lsn>,
    ) -> Turn {
        let caught = self.cursor.caught_up_to;
        let idle = self.idle;
        let request = LogRequest {
            tenant: self.tenant.id,
            segment: self.segment.id,
            min_epoch: self.tenant.vouched().epoch,
            after: caught.max(self.peek),
            upto: Lsn(u64::MAX),
            max_bytes: POLL_BYTES_MAX,
            wait_ms: FOLLOW_POLL_WAIT_MS,
            timeout: Duration::from_millis(u64::from(FOLLOW_POLL_WAIT_MS)) + POLL_TIMEOUT_SLACK,
        };
        let source = &self.source;
        let polled = async {
            let started = Instant::now();
            let answer = source.read_log(request).await;
            let quick_and_empty = matches!(&answer, Ok(a) if a.records.is_empty())
                && started.elapsed() < POLL_QUICK_RETURN;
            if quick_and_empty {
                tokio::time::sleep(POLL_PAUSE).await;
            }
            Some(answer)
        };
        let woke: Option<Result<LogAnswer, _>> = tokio::select! {
            answer = polled => answer,
            _ = wanted_rx.wait_for(|w| *w > caught) => None,
            _ = vouched_rx.wait_for(|v| !idle && v.lsn > caught) => None,
        };
        let Some(answer) = woke else {
            // The abandoned poll stays parked on the safekeeper until its wait ends; the client
            // drops its late answer.
            return Turn::Quiet;
        };
        match answer {
            Ok(a) => {
                self.note_known_vdl(a.known_vdl);
                match last_lsn(&a.records) {
                    Ok(Some(lsn)) if lsn > caught => {
                        self.peek = self.peek.max(lsn);
                        self.last_activity = Instant::now();
                        if self.idle {
                            self.idle = false;
                            self.segment.update_status(|s| s.idle = false);
                        }
                        Turn::Quiet
                    }
                    Ok(_) => Turn::Quiet,
                    Err(e) => {
                        warn!(safekeeper = %self.source.addr(), error = %e, "undecodable records in a poll answer");
                        self.rotate("bad poll answer");
                        Turn::Failed
                    }
                }
            }
            Err(e) => {
                self.shared.metrics.log_read_errors.inc();
                debug!(safekeeper = %self.source.addr(), error = %e, "long poll failed");
                self.note_problem(format!("{}: {e}", self.source.addr()));
                self.rotate("poll failed");
                Turn::Failed
            }
        }
    }
}

/// What `state` says its safekeeper holds of `segment` (`None`: nothing).
fn held_segment(state: &HeldState, segment: SegmentId) -> Option<HeldSegment> {
    state
        .segments
        .iter()
        .find(|s| s.segment == segment)
        .map(|s| HeldSegment {
            scl: s.scl,
            end_lsn: s.end_lsn,
        })
}

/// The LSN of the last record of a concatenation (each record checked), `None` if empty.
fn last_lsn(mut buf: &[u8]) -> Result<Option<Lsn>, borealis_core::redo::CodecError> {
    let mut last = None;
    while !buf.is_empty() {
        let (r, used) = RedoRecord::decode(buf)?;
        last = Some(r.lsn);
        buf = &buf[used..];
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(index: usize, segments: &[(u32, u64, u64)]) -> HeldState {
        HeldState {
            index,
            known_vdl: Lsn::INVALID,
            segments: segments
                .iter()
                .map(|&(segment, scl, end_lsn)| borealis_wire::SegmentState {
                    segment: SegmentId(segment),
                    scl: Lsn(scl),
                    last_cpl: Lsn(scl),
                    end_lsn: Lsn(end_lsn),
                })
                .collect(),
        }
    }

    #[test]
    fn a_get_state_answer_counts_for_the_segment_asked_about_only() {
        // Segment 1 applied up to 10; is it complete up to 50?
        let mut t = ProofTally::new(Lsn(10), Lsn(50), 3);
        let answers = [
            held(0, &[(0, 50, 50), (1, 10, 10)]), // its last record of segment 1 is 10
            held(1, &[(0, 50, 50)]),              // holds nothing of segment 1 at all
            held(2, &[(1, 12, 30)]),              // holds records above 10: counts against
        ];
        for a in &answers {
            t.add(a.index, held_segment(a, SegmentId(1)));
        }
        assert!(!t.proven());
        let behind = held(3, &[(1, 8, 9)]);
        t.add(3, held_segment(&behind, SegmentId(1)));
        assert!(t.proven());
        assert_eq!(
            held_segment(&answers[0], SegmentId(1)),
            Some(HeldSegment {
                scl: Lsn(10),
                end_lsn: Lsn(10)
            })
        );
    }
}
