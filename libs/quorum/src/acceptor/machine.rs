//! The acceptor as a state machine: inputs in, ordered actions out.
//!
//! [`Acceptor`] owns every transition of one tenant's log on one safekeeper: what a `Hello`, an
//! append, a peer's repair, a group commit's fsync, a `Trim`, an adopted trim point or a record
//! found corrupt do to the epoch, the chains and the state this member vouches for. Each input
//! returns the [`Action`]s its driver must execute, **in the order given**, before it feeds the
//! next input:
//!
//! ```text
//!   input                          actions (in order)                     then
//!   ─────────────────────────────  ─────────────────────────────────────  ────────────────────
//!   hello (newer epoch)            StoreControl{pending truncation}       published: epoch,
//!                                  Truncate{above}, StoreControl{done}    every segment
//!                                  Publish{every segment}
//!   append / repair                Write{segment, records}                (nothing published)
//!   synced(segments)               Publish{segments}                      acks go out
//!   trim / adopt_trim              StoreControl{trim point}               published: segment
//!                                  DropThrough{segment, base}
//!                                  Publish{segment}
//!   dropped_corrupt                Publish{segment}                       SCL lowered
//! ```
//!
//! Two drivers execute them: the safekeeper's (`safekeeper::tenant::Tenant`, files and fsync) and
//! the protocol simulator's (`tests/src/sim`, an in-memory disk that loses what was not synced
//! when a member crashes, and may crash between any two actions). Both run this code, so the
//! simulator checks the order the service runs, not a copy of it.
//!
//! ## The ordering rules this machine keeps
//!
//! - **Nothing is published before it is durable.** Records join the chain when they are
//!   written (so duplicates and repeats are recognised at once), but the state that answers
//!   writers and peers ([`Published`]: acks, `GetState`, `GossipSummary`, the bound of `ReadLog`)
//!   is copied from the chain only by [`Acceptor::synced`], which the driver calls after the
//!   files it wrote are fsynced, and after barriers whose actions are durable by themselves.
//! - **The control file leads.** A new epoch, a trim point or an adopted trim point is stored
//!   in the control file before any record is removed for it; a crash in between leaves a state
//!   [`Acceptor::open`] finishes (its first actions repeat the removal).
//! - **Barriers.** `hello`, `trim` and `adopt_trim` may only arrive when every write was synced
//!   (the driver commits its group first): they publish, and must not publish unsynced records.
//!
//! A disk or fsync error is not an input: the driver stops the process (see
//! `safekeeper::log_writer`), and the member is rebuilt by [`Acceptor::open`] from what is on disk.
//!
//! ## Planted bugs
//!
//! [`PlantedBug`] breaks one of these rules on purpose. Only the simulator's own tests plant
//! one, to show that its checkers catch a wrong order in this code (`tests/tests/simulator.rs`).

use super::{
    AdoptVerdict, AppendVerdict, FenceVerdict, HelloVerdict, Link, TenantAcceptor, TrimPoint,
    TrimVerdict,
};
use borealis_core::history::EpochStart;
use borealis_core::{Lsn, SegmentId};
use std::collections::{BTreeMap, BTreeSet};

/// The durable control state of a tenant on this member: what [`Action::StoreControl`] writes
/// (whole, replacing the previous one) and [`Acceptor::open`] starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Control {
    /// The history of the current epoch (empty: no writer ever spoke to this member).
    pub history: Vec<EpochStart>,
    /// A new epoch's truncation that may not have happened yet: records above it are not part
    /// of the epoch's log.
    pub truncate_pending_above: Option<Lsn>,
    /// Every trimmed segment's trim point.
    pub trims: Vec<(SegmentId, TrimPoint)>,
    /// The highest epoch promised to a recovery's `Fence` (0: none; RFC 0014 §2).
    pub promised_epoch: u64,
}

/// What the driver must do, in order, before the next input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Store `Control` durably (atomically replacing the previous one).
    StoreControl(Control),
    /// Remove every record above `above` from every segment's file, durably.
    Truncate { above: Lsn },
    /// Remove every record at or below `base` from `segment`'s file, durably.
    DropThrough { segment: SegmentId, base: Lsn },
    /// Append these records of the input (indexes, in the order given) to `segment`'s file. Not
    /// durable until the driver fsyncs the file and says so with [`Acceptor::synced`].
    Write {
        segment: SegmentId,
        records: Vec<usize>,
    },
    /// The published state of these segments changed ([`Acceptor::published`]): copy it where
    /// answers are made from, and send acks.
    Publish { segments: Vec<SegmentId> },
}

/// A refused input: nothing changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The input's epoch is older than ours: a newer writer exists.
    Fenced { ours: u64, theirs: u64 },
    /// An append in an epoch we were never told about: the writer must `Hello` first.
    HelloFirst { ours: u64, theirs: u64 },
    /// The input is inconsistent with itself or with what we know.
    Invalid { reason: String },
}

/// Where records to write come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A writer's append, in its epoch, telling its VDL.
    Writer { epoch: u64, vdl: Lsn },
    /// A peer's records fetched by gossip while we were in `epoch` (refused if we no longer are),
    /// with the VDL the peer knew.
    Peer { epoch: u64, known_vdl: Lsn },
}

/// What an append or repair did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub written: usize,
    pub duplicates: usize,
    pub off_chain: usize,
}

/// What adopting a peer's trim point did ([`Acceptor::adopt_trim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdoptOutcome {
    /// The segment's log starts at `base` now: `dropped` records at or below it were dropped,
    /// and the SCL went from `old_scl` to `scl` (the base, or above over held records that
    /// chain onto it).
    Adopted {
        base: Lsn,
        last_cpl: Lsn,
        old_scl: Lsn,
        scl: Lsn,
        dropped: usize,
    },
    /// Our SCL is at or above the peer's trim point: nothing to adopt, fill normally.
    NotBehind { scl: Lsn },
}

/// One segment's chain as published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainState {
    pub scl: Lsn,
    pub last_cpl: Lsn,
    /// The highest LSN held, complete or not.
    pub end_lsn: Lsn,
    pub holes: usize,
    /// Where the log was trimmed (`INVALID`: never).
    pub base: Lsn,
}

/// What this member vouches for: everything in it is durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    pub epoch: u64,
    pub epoch_start_lsn: Lsn,
    pub history: Vec<EpochStart>,
    pub known_vdl: Lsn,
    pub segments: BTreeMap<SegmentId, ChainState>,
    /// The highest epoch promised to a recovery's `Fence` (0: none).
    pub promised_epoch: u64,
}

impl Published {
    /// The epoch acks are sent in: the installed one, or a higher one promised. A writer of a
    /// lower epoch counts none of them (RFC 0014 §2).
    pub fn ack_epoch(&self) -> u64 {
        self.epoch.max(self.promised_epoch)
    }
}

/// A rule broken on purpose, for the simulator's test that it catches the break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedBug {
    /// Publish (and so acknowledge) records as soon as they are written, before the fsync.
    PublishBeforeSync,
    /// Publish the highest LSN held as the SCL, counting records above a hole.
    PublishEndLsnAsScl,
}

/// The state machine of one tenant on one safekeeper (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Acceptor {
    judge: TenantAcceptor,
    published: Published,
    /// Per segment: the highest LSN written to its file since its last truncation. An upper bound
    /// of what the file holds (a record found corrupt leaves the chain, not the file).
    file_end: BTreeMap<SegmentId, Lsn>,
    /// Segments written since their last [`Acceptor::synced`].
    unsynced: BTreeSet<SegmentId>,
    planted: Option<PlantedBug>,
}

impl Acceptor {
    /// Starts from the durable control state after a start or a crash. The actions finish what a
    /// crash interrupted (a truncation, trims) and must run before the files' records are loaded
    /// with [`Acceptor::load`]; then [`Acceptor::opened`] publishes.
    pub fn open(control: Control) -> (Acceptor, Vec<Action>) {
        let mut judge = TenantAcceptor::new(control.history.clone());
        judge.restore_promise(control.promised_epoch);
        let mut actions = Vec::new();
        if let Some(above) = control.truncate_pending_above {
            actions.push(Action::Truncate { above });
        }
        for &(segment, point) in &control.trims {
            judge.restore_trim(segment, point);
            actions.push(Action::DropThrough {
                segment,
                base: point.base,
            });
        }
        if control.truncate_pending_above.is_some() {
            actions.push(Action::StoreControl(Control {
                truncate_pending_above: None,
                ..control.clone()
            }));
        }
        let acceptor = Acceptor {
            judge,
            ..Acceptor::default()
        };
        (acceptor, actions)
    }

    /// A record found in `segment`'s file at open (after the actions of [`Acceptor::open`]).
    /// Returns whether it joined the chain.
    pub fn load(&mut self, segment: SegmentId, lsn: Lsn, link: Link) -> bool {
        let end = self.file_end.entry(segment).or_default();
        *end = (*end).max(lsn);
        let chain = self.judge.segment_mut(segment);
        chain.would_accept(lsn) && chain.insert(lsn, link)
    }

    /// Everything is loaded: publish every segment.
    pub fn opened(&mut self) -> Vec<Action> {
        vec![self.publish_all()]
    }

    /// Breaks a rule on purpose (see [`PlantedBug`]). Only the simulator's tests call this.
    pub fn plant(&mut self, bug: PlantedBug) {
        self.planted = Some(bug);
    }

    /// The decisions (epoch, chains, verdicts), for reads.
    pub fn judge(&self) -> &TenantAcceptor {
        &self.judge
    }

    /// What this member vouches for: durable, safe to answer and acknowledge from.
    pub fn published(&self) -> &Published {
        &self.published
    }

    /// Whether something was written and not yet reported synced.
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// A `Hello` from a writer in `epoch`, started at `start`, with its `history`.
    pub fn hello(
        &mut self,
        epoch: u64,
        start: Lsn,
        history: &[EpochStart],
    ) -> Result<Vec<Action>, Refusal> {
        match self.judge.judge_hello(epoch, start, history) {
            HelloVerdict::Same => Ok(Vec::new()),
            HelloVerdict::Fenced { current } => Err(Refusal::Fenced {
                ours: current,
                theirs: epoch,
            }),
            HelloVerdict::Invalid { reason } => Err(Refusal::Invalid { reason }),
            HelloVerdict::NewEpoch { truncate_above } => {
                self.assert_barrier("a new epoch");
                let trims = self.judge.trim_points();
                if let Some((segment, t)) = trims.iter().find(|(_, t)| t.base > truncate_above) {
                    // Trimmed records were durable (checkpointed below a VDL), and recovery never
                    // truncates below a VDL: this is a bug somewhere. The trim stands.
                    tracing::warn!(%segment, base = %t.base, %truncate_above,
                        "a new epoch truncates below a trim point; records at or below it stay trimmed");
                }
                let pending = self.file_end.values().any(|end| *end > truncate_above);
                let mut control = Control {
                    history: history.to_vec(),
                    truncate_pending_above: pending.then_some(truncate_above),
                    trims,
                    ..self.control()
                };
                let mut actions = vec![Action::StoreControl(control.clone())];
                if pending {
                    actions.push(Action::Truncate {
                        above: truncate_above,
                    });
                    control.truncate_pending_above = None;
                    actions.push(Action::StoreControl(control));
                    for end in self.file_end.values_mut() {
                        *end = (*end).min(truncate_above);
                    }
                }
                self.judge.begin_epoch(history.to_vec(), truncate_above);
                actions.push(self.publish_all());
                Ok(actions)
            }
        }
    }

    /// `Fence { epoch }` from a recovering writer (RFC 0014 §2): the promise is stored, then
    /// published, so acks go out in `epoch` from now on and no writer below it counts them. The
    /// answer to the fence is the published state right after these actions (under the same
    /// lock in the driver): an SCL at least as high as any ack this member sent below `epoch`.
    ///
    /// Not a barrier: nothing is truncated, and the chains are not published again (records
    /// written and not yet synced stay unpublished); [`Action::Publish`] lists every published
    /// segment only so the driver sends their acks in the new epoch.
    pub fn fence(&mut self, epoch: u64) -> Result<Vec<Action>, Refusal> {
        match self.judge.judge_fence(epoch) {
            FenceVerdict::Promise => {}
            FenceVerdict::Fenced { current } => {
                return Err(Refusal::Fenced {
                    ours: current,
                    theirs: epoch,
                })
            }
            FenceVerdict::Invalid { reason } => return Err(Refusal::Invalid { reason }),
        }
        self.judge.promise(epoch);
        self.published.promised_epoch = epoch;
        Ok(vec![
            Action::StoreControl(self.control()),
            Action::Publish {
                segments: self.published.segments.keys().copied().collect(),
            },
        ])
    }

    /// Records arriving from a writer or a peer: `records` are `(lsn, link, encoded bytes)`.
    /// `admit` is asked for the bytes of the records that will be written before anything
    /// changes; its refusal (the disk budget) changes nothing.
    pub fn append<E>(
        &mut self,
        segment: SegmentId,
        source: Source,
        records: &[(Lsn, Link, u64)],
        admit: impl FnOnce(u64) -> Result<(), E>,
    ) -> Result<Result<(AppendOutcome, Vec<Action>), E>, Refusal> {
        match source {
            Source::Writer { epoch, .. } => match self.judge.judge_append(epoch) {
                AppendVerdict::Accept => {}
                AppendVerdict::Fenced { current } => {
                    return Err(Refusal::Fenced {
                        ours: current,
                        theirs: epoch,
                    })
                }
                AppendVerdict::HelloFirst { current } => {
                    return Err(Refusal::HelloFirst {
                        ours: current,
                        theirs: epoch,
                    })
                }
            },
            Source::Peer { epoch, .. } if epoch != self.judge.epoch() => {
                return Err(Refusal::Fenced {
                    ours: self.judge.epoch(),
                    theirs: epoch,
                })
            }
            Source::Peer { .. } => {}
        }
        let plan = self.judge.plan_append(segment, records.iter().map(|r| r.0));
        let new_bytes: u64 = plan.write.iter().map(|&i| records[i].2).sum();
        if let Err(e) = admit(new_bytes) {
            return Ok(Err(e));
        }
        self.judge.note_vdl(match source {
            Source::Writer { vdl, .. } => vdl,
            Source::Peer { known_vdl, .. } => known_vdl,
        });
        let outcome = AppendOutcome {
            written: plan.write.len(),
            duplicates: plan.duplicates,
            off_chain: plan.off_chain,
        };
        let mut actions = Vec::new();
        if !plan.write.is_empty() {
            let chain = self.judge.segment_mut(segment);
            for &i in &plan.write {
                let (lsn, link, _) = records[i];
                let new = chain.insert(lsn, link);
                assert!(new, "the plan writes only records the chain accepts");
            }
            let end = self.file_end.entry(segment).or_default();
            *end = (*end).max(records[*plan.write.last().expect("not empty")].0);
            self.unsynced.insert(segment);
            actions.push(Action::Write {
                segment,
                records: plan.write,
            });
            if self.planted == Some(PlantedBug::PublishBeforeSync) {
                actions.push(self.publish(&[segment]));
            }
        }
        Ok(Ok((outcome, actions)))
    }

    /// The driver fsynced every file it wrote for `segments` (and wrote nothing since): they
    /// are published. Segments an append touched without writing may be included, to ack again.
    pub fn synced(&mut self, segments: &BTreeSet<SegmentId>) -> Vec<Action> {
        for segment in segments {
            self.unsynced.remove(segment);
        }
        let list: Vec<SegmentId> = segments.iter().copied().collect();
        vec![self.publish(&list)]
    }

    /// `Trim { epoch, upto }` from a pageserver that checkpointed `segment` up to `upto`.
    /// Returns the segment's trim point after (`INVALID`: never trimmed), the records the chain
    /// dropped, and the actions.
    pub fn trim(
        &mut self,
        segment: SegmentId,
        epoch: u64,
        upto: Lsn,
    ) -> Result<(Lsn, usize, Vec<Action>), Refusal> {
        let point = match self.judge.judge_trim(segment, epoch, upto) {
            TrimVerdict::Behind { current } => {
                return Err(Refusal::Fenced {
                    ours: current,
                    theirs: epoch,
                })
            }
            TrimVerdict::Nothing { base } => return Ok((base, 0, Vec::new())),
            TrimVerdict::Trim(point) => point,
        };
        self.assert_barrier("a trim");
        let mut actions = self.store_trim_point_then_drop(segment, point);
        let dropped = self.judge.segment_mut(segment).trim(point);
        actions.push(self.publish(&[segment]));
        Ok((point.base, dropped, actions))
    }

    /// A peer's trim point learnt from its refusal of a gossip `ReadLog` in `epoch`, while its
    /// summary said its SCL is `peer_scl` (see [`TenantAcceptor::judge_adopt_trim`]).
    pub fn adopt_trim(
        &mut self,
        segment: SegmentId,
        epoch: u64,
        peer_scl: Lsn,
        peer: TrimPoint,
    ) -> Result<(AdoptOutcome, Vec<Action>), Refusal> {
        let point = match self.judge.judge_adopt_trim(segment, epoch, peer_scl, peer) {
            AdoptVerdict::Adopt(point) => point,
            AdoptVerdict::NotBehind { scl } => {
                return Ok((AdoptOutcome::NotBehind { scl }, Vec::new()))
            }
            AdoptVerdict::OtherEpoch { current } => {
                return Err(Refusal::Invalid {
                    reason: format!(
                        "a trim point learnt in epoch {epoch} is not adopted in epoch {current}"
                    ),
                })
            }
            AdoptVerdict::Implausible { reason } => return Err(Refusal::Invalid { reason }),
        };
        self.assert_barrier("adopting a trim point");
        let (old_base, old_scl) = self
            .judge
            .segment(segment)
            .map_or((Lsn::INVALID, Lsn::INVALID), |c| (c.base(), c.scl()));
        assert!(
            old_base <= old_scl && old_scl < point.base && point.base <= peer_scl,
            "an adopted base lies above our trim point and SCL, and at or below the peer's SCL"
        );
        let mut actions = self.store_trim_point_then_drop(segment, point);
        let chain = self.judge.segment_mut(segment);
        let dropped = chain.adopt_base(point);
        let scl = chain.scl();
        actions.push(self.publish(&[segment]));
        Ok((
            AdoptOutcome::Adopted {
                base: point.base,
                last_cpl: point.last_cpl,
                old_scl,
                scl,
                dropped,
            },
            actions,
        ))
    }

    /// A held record of `segment` failed its check when read: it leaves the chain (a peer
    /// supplies it again) and the SCL drops below it. The record was read within the published
    /// SCL, so everything the lowered SCL covers was synced: publishing it is safe.
    pub fn dropped_corrupt(&mut self, segment: SegmentId, lsn: Lsn) -> Vec<Action> {
        let chain = self.judge.segment_mut(segment);
        if !chain.remove(lsn) {
            return Vec::new();
        }
        assert!(
            chain.scl() < lsn,
            "the SCL cannot cover a record that is not held"
        );
        vec![self.publish(&[segment])]
    }

    /// The control state as it stands (no truncation pending): what a new `StoreControl` starts
    /// from, so every field it does not change is carried along.
    fn control(&self) -> Control {
        Control {
            history: self.judge.history().to_vec(),
            truncate_pending_above: None,
            trims: self.judge.trim_points(),
            promised_epoch: self.judge.promised_epoch(),
        }
    }

    /// The durable half of a trim or an adopted trim point: the control file names `point` as
    /// `segment`'s trim point, then the segment file loses the records at or below it.
    fn store_trim_point_then_drop(&self, segment: SegmentId, point: TrimPoint) -> Vec<Action> {
        let mut trims = self.judge.trim_points();
        trims.retain(|(s, _)| *s != segment);
        trims.push((segment, point));
        trims.sort_by_key(|(s, _)| *s);
        vec![
            Action::StoreControl(Control {
                trims,
                ..self.control()
            }),
            Action::DropThrough {
                segment,
                base: point.base,
            },
        ]
    }

    fn assert_barrier(&self, what: &str) {
        assert!(
            self.unsynced.is_empty(),
            "{what} is a barrier: the driver syncs what it wrote first (unsynced: {:?})",
            self.unsynced
        );
    }

    fn publish_all(&mut self) -> Action {
        let all: Vec<SegmentId> = self.judge.segments().keys().copied().collect();
        self.publish(&all)
    }

    /// Copies the chains of `segments` (and the epoch and known VDL) into the published state.
    fn publish(&mut self, segments: &[SegmentId]) -> Action {
        let p = &mut self.published;
        p.epoch = self.judge.epoch();
        p.epoch_start_lsn = self.judge.epoch_start_lsn();
        if p.history.as_slice() != self.judge.history() {
            p.history = self.judge.history().to_vec();
        }
        p.known_vdl = self.judge.known_vdl();
        p.promised_epoch = self.judge.promised_epoch();
        let mut published = Vec::with_capacity(segments.len());
        for &segment in segments {
            let Some(chain) = self.judge.segment(segment) else {
                continue;
            };
            let scl = match self.planted {
                Some(PlantedBug::PublishEndLsnAsScl) => chain.end_lsn(),
                _ => chain.scl(),
            };
            p.segments.insert(
                segment,
                ChainState {
                    scl,
                    last_cpl: chain.last_cpl(),
                    end_lsn: chain.end_lsn(),
                    holes: chain.holes(),
                    base: chain.base(),
                },
            );
            published.push(segment);
        }
        Action::Publish {
            segments: published,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: SegmentId = SegmentId(0);

    use borealis_core::history::from_pairs as h;

    fn rec(lsn: u64, prev: u64) -> (Lsn, Link, u64) {
        (
            Lsn(lsn),
            Link {
                prev_lsn_segment: Lsn(prev),
                is_cpl: true,
            },
            100,
        )
    }

    fn writer(epoch: u64) -> Source {
        Source::Writer {
            epoch,
            vdl: Lsn::INVALID,
        }
    }

    fn ok(r: Result<Result<(AppendOutcome, Vec<Action>), ()>, Refusal>) -> Vec<Action> {
        r.expect("not refused").expect("admitted").1
    }

    fn scl(a: &Acceptor) -> Lsn {
        a.published()
            .segments
            .get(&S)
            .map_or(Lsn::INVALID, |s| s.scl)
    }

    #[test]
    fn records_are_published_only_once_synced() {
        let (mut a, actions) = Acceptor::open(Control::default());
        assert!(actions.is_empty());
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        let actions = ok(a.append(S, writer(1), &[rec(1, 0), rec(2, 1)], |_| Ok(())));
        assert_eq!(
            actions,
            vec![Action::Write {
                segment: S,
                records: vec![0, 1]
            }]
        );
        assert_eq!(scl(&a), Lsn::INVALID, "written, not synced: not published");
        assert_eq!(a.judge().segment(S).unwrap().scl(), Lsn(2));
        let actions = a.synced(&BTreeSet::from([S]));
        assert_eq!(actions, vec![Action::Publish { segments: vec![S] }]);
        assert_eq!(scl(&a), Lsn(2));
    }

    #[test]
    fn a_planted_bug_publishes_before_the_sync() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.plant(PlantedBug::PublishBeforeSync);
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        ok(a.append(S, writer(1), &[rec(1, 0)], |_| Ok(())));
        assert_eq!(scl(&a), Lsn(1));
    }

    #[test]
    fn a_refused_admission_changes_nothing() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        let mut asked = 0;
        let r = a.append(S, writer(1), &[rec(1, 0), rec(2, 1)], |bytes| {
            asked = bytes;
            Err("full")
        });
        assert_eq!(r, Ok(Err("full")));
        assert_eq!(asked, 200);
        assert!(!a.has_unsynced());
        assert!(a.judge().segment(S).is_none_or(|c| c.records() == 0));
    }

    #[test]
    fn a_new_epoch_stores_its_control_then_truncates_then_publishes() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        ok(a.append(S, writer(1), &[rec(1, 0), rec(2, 1), rec(3, 2)], |_| Ok(())));
        a.synced(&BTreeSet::from([S]));
        let actions = a.hello(2, Lsn(2), &h(&[(1, 0), (2, 2)])).unwrap();
        let pending = Control {
            history: h(&[(1, 0), (2, 2)]),
            truncate_pending_above: Some(Lsn(2)),
            trims: Vec::new(),
            promised_epoch: 0,
        };
        assert_eq!(
            actions,
            vec![
                Action::StoreControl(pending.clone()),
                Action::Truncate { above: Lsn(2) },
                Action::StoreControl(Control {
                    truncate_pending_above: None,
                    ..pending
                }),
                Action::Publish { segments: vec![S] },
            ]
        );
        assert_eq!((a.published().epoch, scl(&a)), (2, Lsn(2)));
        // Nothing above the new start: one control store, no truncation.
        let actions = a.hello(3, Lsn(2), &h(&[(1, 0), (2, 2), (3, 2)])).unwrap();
        assert!(matches!(
            actions.as_slice(),
            [Action::StoreControl(_), Action::Publish { .. }]
        ));
    }

    #[test]
    fn open_finishes_an_interrupted_truncation_and_trims_first() {
        let trim = TrimPoint {
            base: Lsn(5),
            last_cpl: Lsn(5),
        };
        let control = Control {
            history: h(&[(1, 0), (2, 9)]),
            truncate_pending_above: Some(Lsn(9)),
            trims: vec![(S, trim)],
            promised_epoch: 0,
        };
        let (mut a, actions) = Acceptor::open(control.clone());
        assert_eq!(
            actions,
            vec![
                Action::Truncate { above: Lsn(9) },
                Action::DropThrough {
                    segment: S,
                    base: Lsn(5)
                },
                Action::StoreControl(Control {
                    truncate_pending_above: None,
                    ..control
                }),
            ]
        );
        assert!(a.load(S, Lsn(6), rec(6, 5).1));
        assert!(!a.load(S, Lsn(4), rec(4, 3).1), "below the trim point");
        a.opened();
        assert_eq!(scl(&a), Lsn(6));
        assert_eq!(a.published().epoch, 2);
    }

    #[test]
    #[should_panic(expected = "barrier")]
    fn a_hello_with_unsynced_writes_is_a_driver_bug() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        ok(a.append(S, writer(1), &[rec(1, 0)], |_| Ok(())));
        let _ = a.hello(2, Lsn(1), &h(&[(1, 0), (2, 1)]));
    }

    #[test]
    fn a_peers_records_need_our_epoch() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.hello(2, Lsn(0), &h(&[(2, 0)])).unwrap();
        let peer = Source::Peer {
            epoch: 1,
            known_vdl: Lsn(0),
        };
        assert_eq!(
            a.append(S, peer, &[rec(1, 0)], |_| Ok::<(), ()>(())),
            Err(Refusal::Fenced { ours: 2, theirs: 1 })
        );
    }

    #[test]
    fn a_new_epochs_start_is_not_a_known_vdl_until_a_writer_says_so() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        ok(a.append(S, writer(1), &[rec(1, 0), rec(2, 1), rec(3, 2)], |_| Ok(())));
        a.synced(&BTreeSet::from([S]));
        // A recovery that may yet fail installs epoch 2 starting at 3: 3 is not known durable.
        a.hello(2, Lsn(3), &h(&[(1, 0), (2, 3)])).unwrap();
        assert_eq!(a.published().known_vdl, Lsn::INVALID);
        // Its writer serves only once the start is durable, and says so with its appends.
        let vdl = Source::Writer {
            epoch: 2,
            vdl: Lsn(3),
        };
        ok(a.append(S, vdl, &[], |_| Ok(())));
        a.synced(&BTreeSet::from([S]));
        assert_eq!(a.published().known_vdl, Lsn(3));
        // A newer epoch keeps what a writer told us, and so does nothing after a restart.
        a.hello(3, Lsn(3), &h(&[(1, 0), (2, 3), (3, 3)])).unwrap();
        assert_eq!(a.published().known_vdl, Lsn(3));
        let (mut b, _) = Acceptor::open(Control {
            history: h(&[(1, 0), (2, 3)]),
            ..Control::default()
        });
        b.opened();
        assert_eq!(b.published().known_vdl, Lsn::INVALID);
    }

    #[test]
    fn a_trim_stores_its_point_before_dropping_records() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        ok(a.append(S, writer(1), &[rec(1, 0), rec(2, 1), rec(3, 2)], |_| Ok(())));
        a.synced(&BTreeSet::from([S]));
        let (base, dropped, actions) = a.trim(S, 1, Lsn(2)).unwrap();
        assert_eq!((base, dropped), (Lsn(2), 2));
        let point = TrimPoint {
            base: Lsn(2),
            last_cpl: Lsn(2),
        };
        assert_eq!(
            actions,
            vec![
                Action::StoreControl(Control {
                    history: h(&[(1, 0)]),
                    truncate_pending_above: None,
                    trims: vec![(S, point)],
                    promised_epoch: 0,
                }),
                Action::DropThrough {
                    segment: S,
                    base: Lsn(2)
                },
                Action::Publish { segments: vec![S] },
            ]
        );
        assert_eq!(a.published().segments[&S].base, Lsn(2));
    }

    #[test]
    fn a_fence_promises_an_epoch_and_refuses_the_writers_below_it() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        ok(a.append(S, writer(1), &[rec(1, 0), rec(2, 1)], |_| Ok(())));
        a.synced(&BTreeSet::from([S]));
        // Written, not synced: the fence must not publish it.
        ok(a.append(S, writer(1), &[rec(3, 2)], |_| Ok(())));
        let actions = a.fence(2).unwrap();
        assert_eq!(
            actions,
            vec![
                Action::StoreControl(Control {
                    history: h(&[(1, 0)]),
                    truncate_pending_above: None,
                    trims: Vec::new(),
                    promised_epoch: 2,
                }),
                Action::Publish { segments: vec![S] },
            ]
        );
        let p = a.published();
        assert_eq!((p.epoch, p.promised_epoch, p.ack_epoch()), (1, 2, 2));
        assert_eq!(
            scl(&a),
            Lsn(2),
            "an unsynced record is not published by a fence"
        );
        // The old writer: its appends and its Hello are refused, though epoch 1 is installed.
        assert_eq!(
            a.append(S, writer(1), &[rec(4, 3)], |_| Ok::<(), ()>(())),
            Err(Refusal::Fenced { ours: 2, theirs: 1 })
        );
        assert_eq!(
            a.hello(1, Lsn(0), &h(&[(1, 0)])),
            Err(Refusal::Fenced { ours: 2, theirs: 1 })
        );
        // A second recovery must go above the promise; a Fence of epoch 0 or far above is invalid.
        assert_eq!(a.fence(2), Err(Refusal::Fenced { ours: 2, theirs: 2 }));
        assert!(matches!(a.fence(0), Err(Refusal::Invalid { .. })));
        assert!(matches!(a.fence(u64::MAX), Err(Refusal::Invalid { .. })));
        // The recovery that holds the promise installs its epoch; its writer appends.
        a.synced(&BTreeSet::from([S]));
        a.hello(2, Lsn(3), &h(&[(1, 0), (2, 3)])).unwrap();
        ok(a.append(S, writer(2), &[rec(4, 3)], |_| Ok(())));
        assert_eq!(a.published().ack_epoch(), 2);
    }

    #[test]
    fn a_promise_survives_a_restart_and_later_control_stores() {
        let (mut a, _) = Acceptor::open(Control::default());
        a.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
        ok(a.append(S, writer(1), &[rec(1, 0), rec(2, 1)], |_| Ok(())));
        a.synced(&BTreeSet::from([S]));
        a.fence(3).unwrap();
        let (_, _, actions) = a.trim(S, 1, Lsn(1)).unwrap();
        let Some(Action::StoreControl(control)) = actions.first() else {
            panic!("a trim stores its control first: {actions:?}");
        };
        assert_eq!(control.promised_epoch, 3, "a trim keeps the promise");
        let (mut b, _) = Acceptor::open(control.clone());
        b.opened();
        assert_eq!(b.published().ack_epoch(), 3);
        assert_eq!(b.fence(3), Err(Refusal::Fenced { ours: 3, theirs: 3 }));
        assert_eq!(
            b.append(S, writer(1), &[rec(3, 2)], |_| Ok::<(), ()>(())),
            Err(Refusal::Fenced { ours: 3, theirs: 1 })
        );
    }
}
