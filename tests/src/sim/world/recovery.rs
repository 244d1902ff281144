//! Recovery of the simulated volume when no writer serves, as the gateway's driver does it
//! (`gateway/src/volume_writer/recovery.rs`, RFC 0008 §1), with the sans-IO planner
//! (`borealis_quorum::volume_recovery`):
//!
//! 1. `GetState` from every node reached gives the highest epoch installed or promised; the new
//!    epoch is one above it, and, if those answers meet the quorums below, `Fence` promises it
//!    on every node reached (RFC 0014 §2; a crash point may stop a node inside it). From the `Fence` answers only (with
//!    [`super::SimConfig::read_before_fence`], the planted bug, from the `GetState` answers and no
//!    fence): the **anchor** is the highest `known_vdl` any reports; per segment any node
//!    reports, the reports of its group's members (a write quorum of each must answer, and the
//!    nodes answering must fence every group the pool can form, `fences_every_group`, or no
//!    recovery is tried);
//! 2. [`plan_sources`]: the new epoch, the newest history volume-wide, each segment's source;
//! 3. each source's index of record headers above the anchor (`ReadLsns`, paged, answered from
//!    the acceptor's chain as the service does; a source trimmed past the anchor raises it,
//!    [`VolumeSources::raise_anchor`]), then [`plan_end`]: the volume's end;
//! 4. checkers 3 and 6 on the log this recovery finds, before anything is truncated for it;
//! 5. `Hello` per node reached (each truncates above where its history leaves the new one),
//!    installed on a write quorum of every recovered segment's group and on a set that fences
//!    every group of the pool; then, per segment, gossip among its group until 4 of its 6 hold it
//!    up to its tail ([`VolumePlan::is_durable`]).

use super::{Mtr, World, Writer, MEMBER_ACK_TIMEOUT, TENANT};
use borealis_core::membership::Config;
use borealis_core::placement::fences_every_group;
use borealis_core::quorum::WRITE_QUORUM;
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId};
use borealis_quorum::acceptor::TrimPoint;
use borealis_quorum::placement::Placement;
use borealis_quorum::recovery::MemberReport;
use borealis_quorum::session::{SessionConfig, WriterSession};
use borealis_quorum::volume_recovery::{
    plan_end, plan_sources, Index, IndexEntry, VolumePlan, VolumeSources,
};
use borealis_quorum::QuorumWriter;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a writer that retired settled stopped (RFC 0017; the gateway's `ResumePoint`).
pub(super) struct ResumePoint {
    epoch: u64,
    history: Vec<borealis_core::history::EpochStart>,
    last_lsn: Lsn,
    tails: BTreeMap<SegmentId, Lsn>,
}

/// What steps 1–4 of a recovery decided, before any node is told.
pub(super) struct PlannedRecovery {
    plan: VolumePlan,
    /// The nodes reached by `GetState`: the `Hello` goes to them.
    reached: Vec<usize>,
    anchor: Lsn,
}

impl World {
    /// Recovery when no writer serves (see the module docs), or the resumption of the last
    /// writer's epoch if it retired settled (RFC 0017).
    pub(super) fn ensure_writer(&mut self, step: usize) {
        if self.current.is_some() {
            return;
        }
        if let Some(point) = self.resume_point.take() {
            if self.resume(step, point) {
                return;
            }
        }
        if let Some(planned) = self.plan_recovery(step) {
            self.install_recovery(step, planned);
        }
    }

    /// The pool's idle timeout: the serving writer retires, keeping a resume point if it is
    /// settled (its VDL is its last LSN, not in limbo; `resume_unsettled` plants the bug of
    /// keeping one regardless). A retired writer ships and hears nothing more.
    pub(super) fn retire_idle(&mut self, step: usize) {
        let Some(c) = self.current else { return };
        if self.pending_takeover.is_some() {
            return;
        }
        let w = &mut self.writers[c];
        let settled = w.session.vdl() == w.session.last_lsn() && !w.session.in_limbo();
        let point = (settled || self.config.resume_unsettled).then(|| ResumePoint {
            epoch: w.epoch,
            history: w.history.clone(),
            last_lsn: w.session.last_lsn(),
            tails: w.session.writer().segment_tails().clone(),
        });
        w.fenced = true;
        let (vdl, last) = (w.session.vdl(), w.session.last_lsn());
        self.current = None;
        self.log(format!(
            "{step}: writer {c} retired idle (vdl {vdl}, last lsn {last}){}",
            if point.is_some() {
                ", resume point kept"
            } else {
                ""
            }
        ));
        self.resume_point = point;
    }

    /// RFC 0017: a writer of the retired one's epoch, from its last LSN, once a write quorum of
    /// every group holding data took its `Hello` (same epoch, same history: nothing is written)
    /// and none of those it heard from refused; else `false` (the caller recovers). As the
    /// gateway's member tasks do, it may start before every member answered: the others say
    /// `Hello` later (`reconnect`), where a refusal fails the serving writer.
    fn resume(&mut self, step: usize, point: ResumePoint) -> bool {
        let mut accepted = Vec::new();
        for n in 0..self.members.len() {
            if !self.members[n].reachable() || self.rng.random_bool(0.15) {
                continue;
            }
            let crash = self.crash_point();
            match self.members[n].hello(&point.history, crash) {
                Ok(()) => accepted.push(n),
                Err(None) => {
                    self.crashes_mid_input += 1;
                    self.log(format!("{step}: node {n} crashed inside a resume's hello"));
                }
                Err(Some(current)) => {
                    self.log(format!(
                        "{step}: resume of epoch {} refused by node {n} (epoch {current}): recovering",
                        point.epoch
                    ));
                    return false;
                }
            }
        }
        let short = point.tails.keys().find(|s| {
            let g = self.group(**s);
            g.0.iter().filter(|n| accepted.contains(n)).count() < WRITE_QUORUM
        });
        if short.is_some() || accepted.len() < WRITE_QUORUM {
            self.log(format!(
                "{step}: resume of epoch {} accepted by {accepted:?} only: recovering",
                point.epoch
            ));
            return false;
        }
        let (epoch, last_lsn) = (point.epoch, point.last_lsn);
        self.serve(step, point, &accepted);
        self.resumes += 1;
        self.log(format!(
            "{step}: writer {} resumed epoch {epoch} at lsn {last_lsn} on {accepted:?}",
            self.writers.len() - 1,
        ));
        true
    }

    /// A second gateway taking a tenant over while its writer still serves, as several gateways
    /// would ([`super::SimConfig::takeover_while_serving`]): the recovery's fence, reads and plan
    /// now, its `Hello` at a later step, the old writer serving clients in between (refused by
    /// every member the fence reached).
    pub(super) fn start_takeover(&mut self, step: usize) {
        if self.pending_takeover.is_some() || self.current.is_none() {
            return;
        }
        if let Some(planned) = self.plan_recovery(step) {
            self.log(format!(
                "{step}: a takeover planned epoch {} at vdl {}; the old writer serves on",
                planned.plan.epoch, planned.plan.vdl
            ));
            self.pending_takeover = Some(planned);
        }
    }

    /// The takeover's `Hello`s: the old writer stops serving (it is a zombie from now on). A
    /// takeover overtaken by a newer recovery (its nodes promised a higher epoch since) is
    /// abandoned: its `Hello`s would all be refused.
    pub(super) fn finish_takeover(&mut self, step: usize) {
        if let Some(planned) = self.pending_takeover.take() {
            let newest = (0..self.members.len())
                .filter(|&n| self.members[n].reachable())
                .map(|n| self.members[n].ack_epoch())
                .max()
                .unwrap_or(0);
            if newest > planned.plan.epoch {
                self.log(format!(
                    "{step}: the takeover of epoch {} is overtaken by epoch {newest}",
                    planned.plan.epoch
                ));
                return;
            }
            self.current = None;
            self.install_recovery(step, planned);
            if self.current.is_some() {
                self.takeovers += 1;
            }
        }
    }

    /// Steps 1–4 of the module docs: the plan, checked, or `None` (no recovery possible now).
    fn plan_recovery(&mut self, step: usize) -> Option<PlannedRecovery> {
        let reached: Vec<usize> = (0..self.members.len())
            .filter(|&n| self.members[n].reachable())
            .collect();
        // 1. What GetState answers: the published state. A member rebuilding after its disk
        //    was replaced refuses (it is no witness: `safekeeper::rebuild`); it still gets the
        //    Hello below.
        let mut answered: Vec<usize> = reached
            .iter()
            .copied()
            .filter(|&n| self.members[n].testifies())
            .collect();
        let highest = answered
            .iter()
            .map(|&n| self.members[n].ack_epoch())
            .max()
            .unwrap_or(0);
        let mut epoch_floor = highest;
        if !self.config.read_before_fence {
            // As the gateway does: no promise unless these answers could start a writer (a
            // failed attempt would burn the epoch on the nodes it reached).
            if let Err(why) = self.quorum_groups(&answered) {
                self.log(format!(
                    "{step}: recovery impossible, nothing fenced: {why}"
                ));
                return None;
            }
            // 1b. Fence: every node reached promises the new epoch before anything is read for
            //     the plan (a rebuilding one too, though it does not answer).
            let epoch = highest + 1;
            let mut promised = Vec::new();
            for &n in &reached {
                let crash = self.crash_point();
                match self.members[n].fence(epoch, crash) {
                    Ok(()) => promised.push(n),
                    Err(None) => {
                        self.crashes_mid_input += 1;
                        self.log(format!(
                            "{step}: node {n} crashed inside the recovery's fence"
                        ));
                    }
                    Err(Some(_)) => {}
                }
                // Its ack loops see the promise: the old writer hears it is superseded.
                self.send_acks(n);
            }
            answered.retain(|n| promised.contains(n));
            epoch_floor = epoch - 1;
        }
        let anchor = answered
            .iter()
            .map(|&n| self.members[n].acceptor.published().known_vdl)
            .max()
            .unwrap_or(Lsn::INVALID);
        let groups = match self.quorum_groups(&answered) {
            Ok(groups) => groups,
            Err(why) => {
                self.log(format!("{step}: recovery impossible: {why}"));
                return None;
            }
        };
        // 2. Sources. The new epoch is above every node's (with nothing written there is no
        //    group to read).
        let sources = match plan_sources(
            &groups,
            |s| Config::stable(self.group(s)),
            anchor,
            epoch_floor,
        ) {
            Ok(s) => s,
            Err(e) => {
                self.log(format!("{step}: recovery impossible: {e}"));
                return None;
            }
        };
        // 3. Indexes above the anchor, paged as the gateway reads them. A source whose log is
        //    trimmed past the anchor raises it (its trim point is durable), and every index is
        //    read again from there.
        let mut sources = sources;
        let indexes = loop {
            match self.read_indexes(&sources) {
                Ok(indexes) => break indexes,
                Err((segment, node, trim)) => {
                    let from = sources.anchor;
                    if !sources.raise_anchor(trim) {
                        self.violation = Some(format!(
                            "node {node} refused segment {segment}'s index from {from} as trimmed through {}, which does not raise the anchor",
                            trim.base
                        ));
                        return None;
                    }
                    self.anchors_raised += 1;
                    self.log(format!(
                        "{step}: node {node}'s segment {segment} is trimmed through {} (last cpl {}): the anchor rises from {from}",
                        trim.base, trim.last_cpl
                    ));
                }
            }
        };
        let plan = match plan_end(&sources, &indexes) {
            Ok(p) => p,
            Err(e) => {
                self.violation = Some(format!("a source's index is inconsistent: {e}"));
                return None;
            }
        };
        if indexes
            .values()
            .any(|i| i.entries.last().is_some_and(|e| e.lsn > plan.vdl))
        {
            self.recovery_cuts += 1;
        }
        // 4. Checkers 3 and 6 on the log this recovery finds, before any node truncates for it.
        let mut log: BTreeMap<Lsn, RedoRecord> = BTreeMap::new();
        let segments: Vec<SegmentId> = self.groups.keys().copied().collect();
        for segment in segments {
            let source = plan.sources.get(&segment).copied();
            let tail = plan
                .segment_tails
                .get(&segment)
                .copied()
                .unwrap_or(Lsn::INVALID);
            let part = self.recovered_segment(segment, source, tail);
            if let Err(v) = self.check_follower(segment, &part, plan.vdl) {
                self.violation = Some(v);
                return None;
            }
            log.extend(part);
        }
        if let Err(v) = self.check_whole_mtrs(&log, &plan) {
            self.violation = Some(v);
            return None;
        }
        Some(PlannedRecovery {
            plan,
            reached,
            anchor,
        })
    }

    /// Step 5 of the module docs: the epoch installed, the recovered log made durable, the new
    /// writer serving.
    fn install_recovery(&mut self, step: usize, planned: PlannedRecovery) {
        let PlannedRecovery {
            plan,
            reached,
            anchor,
        } = planned;
        // 5. The epoch installed on every node reached (Hello per node).
        let mut installed = Vec::new();
        for &n in &reached {
            if !self.members[n].reachable() {
                // Crashed or cut off since the plan (inside the fence, or while a takeover
                // waited).
                continue;
            }
            let crash = self.crash_point();
            match self.members[n].hello(&plan.history, crash) {
                Ok(()) => installed.push(n),
                Err(None) => {
                    self.crashes_mid_input += 1;
                    self.log(format!(
                        "{step}: node {n} crashed inside the recovery's hello"
                    ));
                }
                Err(Some(_)) => {}
            }
        }
        // On a write quorum of every recovered segment's group, and on enough of the pool that
        // no group it can form, written or not, has four members outside the new epoch: an
        // older writer still running can make nothing durable anywhere.
        let short = plan.segment_tails.keys().find(|s| {
            let g = self.group(**s);
            g.0.iter().filter(|n| installed.contains(n)).count() < WRITE_QUORUM
        });
        if short.is_some() || !fences_every_group(&self.pool_azs, &installed) {
            self.log(format!(
                "{step}: epoch {} (vdl {}) installed on {:?} only ({}); no writer",
                plan.epoch,
                plan.vdl,
                installed,
                short.map_or("too few to fence every group".to_string(), |s| format!(
                    "short of a write quorum of segment {s}'s group"
                ))
            ));
            return;
        }
        // Durability of the recovered log: per segment, fill holes by gossip among the installed
        // members of its group (the real driver waits for this; here gossip runs to completion,
        // bounded). Members behind a peer's trim point adopt it (the log below it is in the
        // checkpoint).
        for _ in 0..12 {
            if plan.is_durable(&self.recovered_scls(&plan, &installed)) {
                break;
            }
            for &segment in plan.segment_tails.keys() {
                let group = self.group(segment);
                for m in group.0.into_iter().filter(|n| installed.contains(n)) {
                    for p in group.0.into_iter().filter(|n| installed.contains(n)) {
                        let (mine, theirs) =
                            (self.members[m].scl(segment), self.members[p].scl(segment));
                        if theirs > mine && self.members[m].reachable() {
                            self.fetch(step, m, p, segment, plan.epoch, (mine, theirs));
                        }
                    }
                }
            }
        }
        if !plan.is_durable(&self.recovered_scls(&plan, &installed)) {
            self.log(format!("{step}: recovered log not on a write quorum yet"));
            return;
        }
        self.recoveries += 1;
        // Checker 2 at recovery time.
        if let Some(mtr) = self.acked.iter().find(|m| m.commit > plan.vdl) {
            self.violation = Some(format!(
                "recovery to VDL {} (epoch {}) lost acknowledged MTR ending {}",
                plan.vdl, plan.epoch, mtr.commit
            ));
        }
        for old in self.writers.iter_mut() {
            if old.vdl_when_superseded.is_none() {
                old.vdl_when_superseded = Some(plan.vdl);
            }
        }
        let start = ResumePoint {
            epoch: plan.epoch,
            history: plan.history.clone(),
            last_lsn: plan.vdl,
            tails: plan.segment_tails.clone(),
        };
        self.serve(step, start, &installed);
        let sources: Vec<String> = plan
            .sources
            .iter()
            .map(|(s, &n)| format!("{s}: node {n}"))
            .collect();
        self.log(format!(
            "{step}: writer {} recovered: epoch {} vdl {} (anchor {anchor}, tails {:?}, sources {}) on {:?}",
            self.writers.len() - 1,
            plan.epoch,
            plan.vdl,
            plan.segment_tails,
            sources.join(", "),
            installed,
        ));
    }

    /// Per segment any of `answered` holds, the reports of its group's members among them, if
    /// they could start a writer, as the gateway's `quorum_groups` checks: a write quorum of
    /// every such group, and every group the pool can form has at least three of them (so every
    /// segment that holds a durable record is seen). Else why not.
    fn quorum_groups(
        &self,
        answered: &[usize],
    ) -> Result<BTreeMap<SegmentId, Vec<MemberReport>>, String> {
        let segments: BTreeSet<SegmentId> = answered
            .iter()
            .flat_map(|&n| self.members[n].segments())
            .collect();
        let mut groups: BTreeMap<SegmentId, Vec<MemberReport>> = BTreeMap::new();
        for segment in segments {
            let group = self.group(segment);
            let reports: Vec<MemberReport> = group
                .0
                .iter()
                .filter(|n| answered.contains(n))
                .map(|&n| {
                    let p = self.members[n].acceptor.published();
                    MemberReport {
                        member: n,
                        epoch: p.epoch,
                        history: p.history.clone(),
                        segments: p
                            .segments
                            .get(&segment)
                            .map(|c| vec![(segment, c.scl, c.last_cpl)])
                            .unwrap_or_default(),
                    }
                })
                .collect();
            if reports.len() < WRITE_QUORUM {
                return Err(format!(
                    "only {} of segment {segment}'s group answered",
                    reports.len()
                ));
            }
            groups.insert(segment, reports);
        }
        if answered.len() < WRITE_QUORUM || !fences_every_group(&self.pool_azs, answered) {
            return Err(format!(
                "{answered:?} answered, too few to fence every group"
            ));
        }
        Ok(groups)
    }

    /// A writer of `start`'s epoch from its last LSN (a recovered VDL, or a resumed writer's
    /// last LSN), connected to `nodes`, becomes the serving one: the gateway's
    /// `VolumeWriter::start`, which recovery and resume share. The segments that hold data
    /// keep their groups.
    fn serve(&mut self, step: usize, start: ResumePoint, nodes: &[usize]) {
        let mut placement =
            Placement::new(TENANT, self.pool_azs.clone()).expect("the simulated pool is valid");
        for &segment in start.tails.keys() {
            placement.fix(segment);
        }
        let mut session = WriterSession::new(
            QuorumWriter::new(
                start.epoch,
                start.last_lsn,
                start.tails,
                self.layout,
                64,
                placement,
            ),
            SessionConfig {
                member_ack_timeout: MEMBER_ACK_TIMEOUT,
            },
        );
        let mut connected = vec![false; self.members.len()];
        for &n in nodes {
            let held: Vec<(SegmentId, Lsn)> = self.members[n].scls();
            session.member_connected(n, None, &held, Self::now(step));
            connected[n] = true;
        }
        self.writers.push(Writer {
            session,
            epoch: start.epoch,
            connected,
            fenced: false,
            mtrs: Vec::new(),
            acked_upto: 0,
            last_vdl: start.last_lsn,
            vdl_when_superseded: None,
            history: start.history,
            vdl_seen: start.last_lsn,
            stalled_steps: 0,
            subscribed: BTreeSet::new(),
        });
        self.current = Some(self.writers.len() - 1);
    }

    /// Every source's index above the anchor, read in pages of a random size as the gateway
    /// reads them (`ReadLsns`), or the first refusal: `(segment, node, its trim point)`.
    fn read_indexes(
        &mut self,
        sources: &VolumeSources,
    ) -> Result<BTreeMap<SegmentId, Index>, (SegmentId, usize, TrimPoint)> {
        let mut indexes = BTreeMap::new();
        for (&segment, source) in &sources.sources {
            let node = source.node;
            let mut index: Option<Index> = None;
            let mut after = sources.anchor;
            loop {
                let max = self.rng.random_range(1..=16);
                let (before, entries) = self.members[node]
                    .read_lsns(segment, after, source.usable_scl, max)
                    .map_err(|trim| (segment, node, trim))?;
                let full = entries.len() >= max;
                let index = index.get_or_insert(Index {
                    before,
                    entries: Vec::new(),
                });
                index
                    .entries
                    .extend(entries.into_iter().map(|(lsn, link)| IndexEntry {
                        lsn,
                        prev_lsn_segment: link.prev_lsn_segment,
                        is_cpl: link.is_cpl,
                    }));
                match index.entries.last() {
                    Some(last) if full && last.lsn < source.usable_scl => after = last.lsn,
                    _ => break,
                }
            }
            indexes.insert(segment, index.unwrap_or_default());
        }
        Ok(indexes)
    }

    /// Each installed member's SCL of each recovered segment, by node id.
    fn recovered_scls(
        &self,
        plan: &VolumePlan,
        installed: &[usize],
    ) -> Vec<(usize, SegmentId, Lsn)> {
        let mut scls = Vec::new();
        for &segment in plan.segment_tails.keys() {
            for node in self.group(segment).0 {
                if installed.contains(&node) && self.members[node].reachable() {
                    scls.push((node, segment, self.members[node].scl(segment)));
                }
            }
        }
        scls
    }

    /// Checker 3, at every recovery: the log the recovery finds holds every LSN up to its VDL,
    /// and cut at its consistency points it is whole MTRs that a writer shipped, record for
    /// record: no MTR torn between groups (nor a splice of two writers' records) is visible.
    fn check_whole_mtrs(
        &self,
        log: &BTreeMap<Lsn, RedoRecord>,
        plan: &VolumePlan,
    ) -> Result<(), String> {
        let shipped: HashMap<Lsn, Vec<&Mtr>> =
            self.writers
                .iter()
                .flat_map(|w| &w.mtrs)
                .fold(HashMap::new(), |mut by, m| {
                    by.entry(m.commit).or_default().push(m);
                    by
                });
        let mut mtr: Vec<&RedoRecord> = Vec::new();
        for lsn in 1..=plan.vdl.0 {
            let Some(r) = log.get(&Lsn(lsn)) else {
                return Err(format!(
                    "recovery to VDL {} (epoch {}) finds no record at lsn {lsn}",
                    plan.vdl, plan.epoch
                ));
            };
            mtr.push(r);
            if r.is_cpl {
                let whole = shipped.get(&r.lsn).is_some_and(|candidates| {
                    candidates.iter().any(|m| {
                        let mut records: Vec<&RedoRecord> = m.records().collect();
                        records.sort_by_key(|r| r.lsn);
                        records == mtr
                    })
                });
                if !whole {
                    return Err(format!(
                        "recovery to VDL {} (epoch {}) finds the MTR ending {} torn or spliced: {:?}",
                        plan.vdl, plan.epoch, r.lsn, mtr
                    ));
                }
                mtr.clear();
            }
        }
        if !mtr.is_empty() {
            return Err(format!(
                "recovery to VDL {} (epoch {}) ends inside an MTR",
                plan.vdl, plan.epoch
            ));
        }
        Ok(())
    }
}
