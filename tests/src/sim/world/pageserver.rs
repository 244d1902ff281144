//! The simulated pageservers: checkpoints that trim the members' logs, and a follower of each
//! segment's log driven by the pageserver's sans-IO cursor (`borealis_quorum::follower`). Every
//! segment has its own checkpoint and its own follower, and talks only to the six nodes of its
//! group.
//!
//! **Checkpoints.** Now and then a pageserver checkpoints a segment up to an LSN `C` at or
//! below a VDL a writer vouched for (durable: no recovery truncates below it) and tells every
//! member it reaches `Trim { epoch, upto: C }`, `epoch` being the writer's; each member's
//! acceptor judges it (a member behind that epoch refuses) and trims through a record of its
//! complete chain. Either the follower below checkpoints at its own cursor, with the records it
//! applied (as `pageserver/src/checkpoint.rs` does), or another pageserver that owns the segment
//! does, at an LSN of its choice at or below the current writer's VDL, with the log a member that
//! holds the writer's log has up to it. The world keeps the newest checkpoint, the log up to `C`
//! as "object storage" holds it: the checkers count what a member trimmed as held there.
//!
//! **The follower.** A pageserver follows the segment as `pageserver/src/ingest.rs` does: it
//! reads `ReadLog { after: caught_up_to, upto: target, min_epoch: vouched epoch }` from one
//! member at a time, where the target is the VDL its GetPages vouched for (the current writer's
//! VDL and epoch) or the `known_vdl` that member reported, whichever is higher (checked: never
//! above the current writer's VDL). It checks the answer with [`plan_batch`], applies what it
//! says, and turns to the next member on a fenced or trimmed refusal, a hole or a bad answer. A
//! member that is behind makes it either wait (the real follower's idle state) or, when a GetPage
//! waits, ask every member's state: a read quorum holding nothing newer proves the segment
//! complete ([`ProofTally`]: with several segments the target, a VDL, is often a record of
//! another segment, and the proof is how an idle segment catches up to it).
//! When every member it tried refused because its log is trimmed past the follower (another
//! pageserver checkpointed while this one lagged), it attaches again from the newest checkpoint,
//! as a pageserver does at start: the real follower has no such path (it would keep turning from
//! one refusing member to the next; RFC 0007, "Not yet").

use super::member::{ReadAnswer, TrimFailed};
use super::World;
use borealis_core::quorum::PG_MEMBERS;
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId};
use borealis_quorum::follower::{plan_batch, proof_quorum, Cursor, ProofTally, SourceProblem};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;

/// A segment's log up to `lsn`, as checkpointed to object storage.
#[derive(Default)]
pub(super) struct Checkpoint {
    pub(super) lsn: Lsn,
    pub(super) records: BTreeMap<Lsn, RedoRecord>,
}

/// A pageserver following one segment.
#[derive(Default)]
pub(super) struct Follower {
    pub(super) cursor: Cursor,
    /// Every record applied, by LSN (the follower's page store, as a log).
    pub(super) applied: BTreeMap<Lsn, RedoRecord>,
    /// The newest VDL and epoch GetPages vouched for (each only ever rises, as in
    /// `pageserver::tenant::Tenant::vouch`).
    vouched: (Lsn, u64),
    /// The member of the segment's group it reads from (its member index).
    source: usize,
    /// Trim refusals since the last good answer.
    trimmed_in_a_row: usize,
    /// The newest `known_vdl` its current source reported (reset when it turns to another).
    source_vdl: Lsn,
}

impl Follower {
    fn rotate(&mut self) {
        self.source = (self.source + 1) % PG_MEMBERS;
        self.source_vdl = Lsn::INVALID;
    }
}

impl World {
    /// A pageserver checkpoints the segment up to a durable LSN and trims every member it
    /// reaches: the follower, at its own cursor with the records it applied (what the real
    /// pageserver does), or another pageserver that owns the segment, at an LSN of its choice at
    /// or below the current writer's VDL.
    pub(super) fn checkpoint(&mut self, step: usize) {
        let segment = self.some_segment();
        let group = self.group(segment);
        let from = self.checkpoints_of[&segment].lsn;
        let (upto, epoch, tail, by) = if self.rng.random_bool(0.5) {
            let f = &self.followers[&segment];
            let upto = f.cursor.caught_up_to;
            if upto <= from {
                return;
            }
            let tail: Vec<(Lsn, RedoRecord)> = f
                .applied
                .range(Lsn(from.0 + 1)..=upto)
                .map(|(l, r)| (*l, r.clone()))
                .collect();
            (upto, f.vouched.1, tail, "the follower".to_string())
        } else {
            let Some(c) = self.current else { return };
            let (epoch, vdl, history) = {
                let w = &self.writers[c];
                (w.epoch, w.session.vdl(), w.history.clone())
            };
            // The log up to `upto` is the writer's: a member in its epoch with its history
            // holds it up to its SCL (above its trim point, which is at or below the previous
            // checkpoint). An idle segment's SCL stays at its last record, below the VDL.
            let Some((held, source)) = group
                .0
                .into_iter()
                .filter(|&m| {
                    let x = &self.members[m];
                    x.reachable() && x.epoch() == epoch && x.history() == history
                })
                .map(|m| (self.members[m].scl(segment), m))
                .max()
            else {
                return;
            };
            let cap = vdl.min(held);
            if cap <= from {
                return;
            }
            let upto = Lsn(self.rng.random_range(from.0 + 1..=cap.0));
            let x = &self.members[source];
            assert!(
                x.base(segment) <= from,
                "every trim point is at or below a checkpoint"
            );
            let tail: Vec<(Lsn, RedoRecord)> = x
                .records(segment, Lsn(from.0 + 1)..=upto)
                .map(|(l, r)| (*l, r.clone()))
                .collect();
            (
                upto,
                epoch,
                tail,
                format!("the owner, from member {source}"),
            )
        };
        let c = self
            .checkpoints_of
            .get_mut(&segment)
            .expect("every segment");
        c.records.extend(tail);
        c.lsn = upto;
        self.checkpoints += 1;
        self.log(format!(
            "{step}: checkpoint of segment {segment} by {by} up to {upto}; trim in epoch {epoch}"
        ));
        for m in group.0 {
            if !self.members[m].reachable() {
                continue;
            }
            let crash = self.crash_point();
            match self.members[m].trim(segment, epoch, upto, crash) {
                Ok((base, dropped, published)) => {
                    if dropped > 0 {
                        self.trims += 1;
                        self.log(format!(
                            "{step}: member {m} trimmed segment {segment} through {base} ({dropped} dropped)"
                        ));
                    }
                    if published {
                        self.send_acks(m);
                    }
                }
                Err(TrimFailed::Crashed) => {
                    self.crashes_mid_input += 1;
                    self.log(format!("{step}: member {m} crashed inside a trim"));
                }
                Err(TrimFailed::Refused(why)) => {
                    self.log(format!("{step}: member {m} refused the trim: {why}"));
                }
            }
        }
    }

    /// One turn of a segment's follower (see the module docs).
    pub(super) fn follow(&mut self, step: usize) {
        let segment = self.some_segment();
        let group = self.group(segment);
        let current = self.current.map(|c| {
            let w = &self.writers[c];
            (w.session.vdl(), w.epoch)
        });
        let f = self.followers.get_mut(&segment).expect("every segment");
        if let Some((vdl, epoch)) = current {
            // The current writer's computes ask GetPage at its VDL.
            f.vouched = (f.vouched.0.max(vdl), f.vouched.1.max(epoch));
        }
        let (vouched, epoch) = f.vouched;
        // As `pageserver/src/ingest.rs`: a member's known VDL raises the target for reads from
        // that member.
        let target = vouched.max(f.source_vdl);
        if let Some((vdl, _)) = current {
            if target > vdl {
                self.violation = Some(format!(
                    "segment {segment}'s follower's target {target} (vouched {vouched}, node {}'s known VDL {}) is above the current writer's VDL {vdl}",
                    group.node(f.source), f.source_vdl
                ));
                return;
            }
        }
        let before = f.cursor;
        if before.caught_up_to >= target {
            return;
        }
        let src = group.node(f.source);
        if !self.members[src].reachable() {
            f.rotate();
            return;
        }
        // `max_bytes` cuts an answer short now and then.
        let max = self.rng.random_range(1..=32);
        let answer =
            self.members[src].read_log(segment, None, epoch, (before.caught_up_to, target), max);
        let f = self.followers.get_mut(&segment).expect("every segment");
        let (records, scl) = match answer {
            ReadAnswer::Fenced => {
                f.rotate();
                return;
            }
            ReadAnswer::Trimmed { base, .. } => {
                self.follower_trim_refusals += 1;
                f.trimmed_in_a_row += 1;
                if f.trimmed_in_a_row >= PG_MEMBERS
                    && self.checkpoints_of[&segment].lsn > before.caught_up_to
                {
                    self.attach(step, segment);
                } else {
                    f.rotate();
                    self.log(format!(
                        "{step}: segment {segment}'s follower at {} refused by node {src}: trimmed through {base}",
                        before.caught_up_to
                    ));
                }
                return;
            }
            ReadAnswer::Records {
                records,
                scl,
                known_vdl,
            } => {
                f.source_vdl = f.source_vdl.max(known_vdl);
                (records, scl)
            }
        };
        f.trimmed_in_a_row = 0;
        let mut bytes = Vec::new();
        for r in &records {
            r.encode_into(&mut bytes);
        }
        let plan = plan_batch(before, self.layout, segment, target, &bytes, scl);
        for r in &plan.to_apply {
            if let Some(held) = self.writers_log(segment, r.lsn) {
                if held != r {
                    self.violation = Some(format!(
                        "segment {segment}'s follower applies {r:?} from node {src}, but the current writer's log holds {held:?}"
                    ));
                }
            }
            let f = self.followers.get_mut(&segment).expect("every segment");
            if let Some(old) = f.applied.insert(r.lsn, r.clone()) {
                self.violation = Some(format!(
                    "segment {segment}'s follower applied lsn {} twice (first {:?}, now {:?})",
                    r.lsn, old, r
                ));
            }
        }
        let f = self.followers.get_mut(&segment).expect("every segment");
        f.cursor.commit(&plan, plan.to_apply.len());
        let caught = f.cursor.caught_up_to;
        if caught > target.max(before.caught_up_to) {
            self.violation = Some(format!(
                "segment {segment}'s follower caught up to {caught}, above its target {target}"
            ));
        }
        if !plan.to_apply.is_empty() {
            self.follower_batches += 1;
            self.log(format!(
                "{step}: segment {segment}'s follower applies {} records from node {src}: caught up {} -> {caught}",
                plan.to_apply.len(),
                before.caught_up_to,
            ));
        }
        match plan.problem {
            None => {}
            Some(SourceProblem::Hole { .. } | SourceProblem::Bad(_)) => {
                self.log(format!(
                    "{step}: segment {segment}'s follower turns from node {src}: {:?}",
                    plan.problem
                ));
                self.followers
                    .get_mut(&segment)
                    .expect("every segment")
                    .rotate();
            }
            // A GetPage waits: ask every member's state.
            Some(SourceProblem::Behind { .. }) if self.rng.random_bool(0.5) => {
                self.prove_complete(step, segment, target)
            }
            // Idle: the real follower long-polls its source until something new shows.
            Some(SourceProblem::Behind { .. }) => {}
        }
    }

    /// The record at `lsn` of `segment` in the current writer's log, if a member of its group
    /// that holds that log up to `lsn` (its epoch and history, its SCL at or above `lsn`) still
    /// has it.
    fn writers_log(&self, segment: SegmentId, lsn: Lsn) -> Option<&RedoRecord> {
        let w = &self.writers[self.current?];
        self.group(segment).0.into_iter().find_map(|m| {
            let x = &self.members[m];
            (x.epoch() == w.epoch && x.history() == w.history && x.scl(segment) >= lsn)
                .then(|| x.record(segment, lsn))
                .flatten()
        })
    }

    /// `GetState` from every member of the group it reaches, in the order the answers arrive: a
    /// read quorum holding nothing above `caught_up_to` proves the segment complete up to
    /// `target`.
    fn prove_complete(&mut self, step: usize, segment: SegmentId, target: Lsn) {
        let group = self.group(segment);
        let caught = self.followers[&segment].cursor.caught_up_to;
        let mut tally = ProofTally::new(caught, target, proof_quorum(PG_MEMBERS));
        // A member rebuilding after its disk was replaced refuses `GetState`.
        let mut order: Vec<usize> = (0..PG_MEMBERS)
            .filter(|&i| self.members[group.node(i)].testifies())
            .collect();
        order.shuffle(&mut self.rng);
        for i in order {
            tally.add(i, self.members[group.node(i)].held(segment));
            if tally.proven() {
                self.follower_proofs += 1;
                let f = self.followers.get_mut(&segment).expect("every segment");
                f.cursor.prove_complete(target);
                self.log(format!(
                    "{step}: segment {segment}'s follower proves it complete from {caught} to {target}"
                ));
                return;
            }
        }
        let f = self.followers.get_mut(&segment).expect("every segment");
        match tally.complete_source {
            Some(i) => f.source = i,
            None => f.rotate(),
        }
    }

    /// Every member refused: the log below them is in the checkpoint only. The pageserver
    /// attaches from the newest checkpoint (its pages as of `C`; the next record chains to the
    /// last record at or below `C`).
    fn attach(&mut self, step: usize, segment: SegmentId) {
        let c = &self.checkpoints_of[&segment];
        let f = self.followers.get_mut(&segment).expect("every segment");
        f.applied = c.records.clone();
        f.cursor = Cursor {
            caught_up_to: c.lsn,
            last_applied: c.records.keys().next_back().copied().unwrap_or_default(),
        };
        f.trimmed_in_a_row = 0;
        self.follower_attaches += 1;
        let lsn = c.lsn;
        self.log(format!(
            "{step}: segment {segment}'s follower trimmed past everywhere: attaches from the checkpoint at {lsn}"
        ));
    }

    /// `segment`'s part of the recovered log (checkers 3 and 6): what a recovery finds from its
    /// source node `source` up to the segment's tail `tail`, the checkpoint below the source's
    /// trim point and the source's records above it (`source: None`: no member reported the
    /// segment, so it holds nothing).
    pub(super) fn recovered_segment(
        &self,
        segment: SegmentId,
        source: Option<usize>,
        tail: Lsn,
    ) -> BTreeMap<Lsn, RedoRecord> {
        let Some(source) = source else {
            return BTreeMap::new();
        };
        let x = &self.members[source];
        let base = x.base(segment);
        let mut log: BTreeMap<Lsn, RedoRecord> = self.checkpoints_of[&segment]
            .records
            .range(..=base.min(tail))
            .map(|(l, r)| (*l, r.clone()))
            .collect();
        if base < tail {
            log.extend(
                x.records(segment, Lsn(base.0 + 1)..=tail)
                    .map(|(l, r)| (*l, r.clone())),
            );
        }
        log
    }

    /// Checker 6, at every recovery plan, for each segment: the follower applied only records
    /// of the log the recovery finds (`log`, the segment's part), all of them up to where it is
    /// caught up, and nothing it needs is truncated (the volume's recovered VDL is `vdl`); the
    /// checkpoint is part of that log too.
    pub(super) fn check_follower(
        &self,
        segment: SegmentId,
        log: &BTreeMap<Lsn, RedoRecord>,
        vdl: Lsn,
    ) -> Result<(), String> {
        let f = &self.followers[&segment];
        let caught = f.cursor.caught_up_to;
        if caught > vdl {
            return Err(format!(
                "recovery to VDL {vdl} truncates below segment {segment}'s follower, caught up to {caught}"
            ));
        }
        for (lsn, r) in &f.applied {
            if log.get(lsn) != Some(r) {
                return Err(format!(
                    "segment {segment}'s follower applied {r:?}, but the log recovery finds (to VDL {vdl}) holds {:?} at lsn {lsn}",
                    log.get(lsn)
                ));
            }
        }
        if let Some((lsn, _)) = log
            .range(..=caught)
            .find(|(lsn, _)| !f.applied.contains_key(lsn))
        {
            return Err(format!(
                "segment {segment}'s follower is caught up to {caught} but never applied lsn {lsn} of the recovered log"
            ));
        }
        let c = &self.checkpoints_of[&segment];
        if c.lsn > vdl {
            return Err(format!(
                "recovery to VDL {vdl} truncates below segment {segment}'s checkpoint at {}",
                c.lsn
            ));
        }
        for (lsn, r) in c.records.range(..=c.lsn) {
            if log.get(lsn) != Some(r) {
                return Err(format!(
                    "segment {segment}'s checkpoint holds {r:?} at lsn {lsn}, the log recovery finds {:?}",
                    log.get(lsn)
                ));
            }
        }
        Ok(())
    }
}
