//! The acceptor: the sans-IO decisions of a safekeeper for one tenant.
//!
//! No files, no sockets, no clocks. The acceptor is told what is held and what arrives, and
//! answers two kinds of question:
//!
//! - **May this writer speak?** [`TenantAcceptor::judge_hello`] and
//!   [`TenantAcceptor::judge_append`] implement epoch fencing: an older epoch is refused with
//!   `Fenced`, a newer epoch must first be announced with a `Hello` carrying the writer's epoch
//!   history. The verdict says how much of the log survives: everything up to where this
//!   member's history and the writer's diverge ([`borealis_core::history::truncation_point`]),
//!   never above the new epoch's start. The caller makes the epoch durable and truncates the log
//!   before [`TenantAcceptor::begin_epoch`].
//! - **How complete is each segment?** [`SegmentChain`] follows the `prev_lsn_segment` backlinks of
//!   the records held. The segment complete LSN (SCL) is the highest LSN `L` such that the chain
//!   of backlinks from `L` reaches the segment's base (LSN 0, or where the log was trimmed)
//!   through records that are all held. Records may arrive out of order (after a lost packet, a
//!   restart, or from a peer filling a hole): they are held but the SCL waits until the hole is
//!   filled, then jumps over everything that was waiting.
//! - **How far may the log be trimmed?** [`SegmentChain::trim_point_for`]: once a pageserver has
//!   checkpointed a segment to object storage, its records up to the checkpoint may go — but
//!   only through a record of this member's complete chain (never above its SCL), and only if
//!   this member is at the epoch the checkpoint's log was read under
//!   ([`TenantAcceptor::judge_trim`]). The chain then starts at that record (its *base*), and
//!   keeps the last CPL at or below it, so recovery's `GetState` answers stay right.
//! - **May this member adopt a peer's trim point?** [`TenantAcceptor::judge_adopt_trim`]: a
//!   member whose SCL is below a peer's trim point cannot be filled from that peer (the records
//!   are gone there). It takes the peer's trim point as its own base instead
//!   ([`SegmentChain::adopt_base`]) and then fetches only what lies above it (see
//!   `safekeeper::gossip` for the driver).
//!
//! ## Adopting a peer's trim point: why it is safe
//!
//! A peer's trim point `B` (with `L`, the highest CPL at or below it) is a record of the peer's
//! complete chain, at or below the `upto` of a `Trim`. A pageserver sends `Trim { upto: C }` only
//! after the index of its checkpoint at `C` is durable in object storage, and `C` is at or below
//! a VDL some writer vouched for (`pageserver/src/checkpoint.rs`); [`TenantAcceptor::judge_trim`]
//! then caps the trim point at the peer's SCL and refuses a peer older than the checkpoint's
//! epoch. So every record at or below `B` is durable (no recovery truncates below a VDL) and
//! checkpointed: nobody needs it from a safekeeper again. A pageserver starts from its newest
//! checkpoint (at or above `C`), and a peer that asks us below `B` is refused as it would be by
//! the peer. That is what lets a member declare those records trimmed without ever holding them.
//!
//! Adoption requires that we are in the epoch the peer answered in (a gossip `ReadLog` carries
//! our epoch, and a peer in another epoch refuses it with `Fenced` before it looks at its trim
//! point): same epoch, same history, so every record we hold above `B` is the record of that
//! epoch's log at its LSN, and the peer's record `B` is on that log too. Records we hold at or
//! below `B` are dropped; those above it that chain onto `B` are kept and the SCL advances over
//! them exactly as on a trimmed peer (the next record names `B` as its `prev_lsn_segment`).
//!
//! What we then report is what a member that holds the chain through `B` reports: SCL `B` (or
//! more, over held records that chain onto it) and last CPL `L`, exactly the peer's (which is
//! why the peer's refusal carries `L`, not just `B`: an understated CPL would make a recovery
//! that picks us as its source pick too low a VDL). The SCL only moves forward (`B` is above our
//! old SCL), never past a record we do not hold above `B`, and never above what a write quorum
//! held: `B` is at or below a VDL, so acks of it cannot raise any writer's VCL or VDL, and
//! recovery (`libs/quorum/src/recovery.rs`: source = newest log, then highest SCL; VDL = its last
//! CPL) sees a state some member in our epoch legitimately had.
//!
//! ## Invariant
//!
//! Every held record at or below the SCL is a member of the chain. A record that arrives with an
//! LSN below the SCL and is not already held cannot be on the chain (the chain up to the SCL is
//! complete) and is refused by [`TenantAcceptor::plan_append`]. So serving "every held record in
//! `(after, SCL]`" serves exactly the segment's log.

mod chain;
mod machine;

pub use chain::{Link, SegmentChain, TrimPoint};
pub use machine::{
    Acceptor, Action, AdoptOutcome, AppendOutcome, ChainState, Control, PlantedBug, Published,
    Refusal, Source,
};

use borealis_core::history::{self, EpochStart};
use borealis_core::{Lsn, SegmentId};
use std::collections::BTreeMap;

/// The most a `Hello` may raise a member's epoch by. A recovering writer takes one above the
/// highest epoch a read quorum reports, so a member that missed a few recoveries sees small
/// steps; a huge one (`u64::MAX`, from a buggy or hostile client) would leave no epoch for the
/// next writer and is refused as invalid, changing nothing.
pub const EPOCH_STEP_MAX: u64 = 1 << 32;

/// What to do with a `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelloVerdict {
    /// The epoch is the current one: answer with the current state.
    Same,
    /// A newer epoch: make it durable, truncate the log above `truncate_above`, then answer.
    NewEpoch { truncate_above: Lsn },
    /// An older epoch: a newer writer exists.
    Fenced { current: u64 },
    /// A malformed hello (epoch 0, a history that does not end with the epoch), or the current
    /// epoch announced with a different history (a writer bug).
    Invalid { reason: String },
}

/// What to do with a `Fence` (RFC 0014 §2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceVerdict {
    /// Promise the epoch: store it durably, then answer with the published state.
    Promise,
    /// The epoch is at or below the current or promised one: a recovery of that epoch or a
    /// newer one exists.
    Fenced { current: u64 },
    /// Epoch 0, or a step above [`EPOCH_STEP_MAX`].
    Invalid { reason: String },
}

/// What to do with an `Append`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendVerdict {
    Accept,
    /// The append comes from an older epoch than the current one.
    Fenced {
        current: u64,
    },
    /// The append names an epoch this safekeeper was never told about: the writer must Hello.
    HelloFirst {
        current: u64,
    },
}

/// What to do with a `Trim`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimVerdict {
    /// Make `TrimPoint` durable, then drop the records at or below its base.
    Trim(TrimPoint),
    /// Nothing to drop: the log is already trimmed as far as it may be (answer with `base`).
    Nothing { base: Lsn },
    /// This member's epoch is older than the checkpoint's: it may hold records a newer writer
    /// truncated everywhere else, so it must not treat its log as the checkpointed one.
    Behind { current: u64 },
}

/// What to do with a peer's trim point learnt by gossip (see
/// [`TenantAcceptor::judge_adopt_trim`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdoptVerdict {
    /// Make `TrimPoint` durable as this segment's trim point, then drop the records at or below
    /// its base ([`SegmentChain::adopt_base`]).
    Adopt(TrimPoint),
    /// Our SCL is at or above the peer's base: the peer can fill us normally, nothing to adopt.
    NotBehind { scl: Lsn },
    /// We are not in the epoch the peer answered in (or in no epoch at all): our log may hold
    /// records that epoch's log does not, which must not be chained onto the peer's base.
    OtherEpoch { current: u64 },
    /// The peer's trim point does not fit what we know (not adopted; the next round asks again).
    Implausible { reason: String },
}

/// Which records of an append to write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppendPlan {
    /// Indexes (into the append's records) of the records to write, in their given order.
    pub write: Vec<usize>,
    /// Records already held (or repeated within the append): ignored.
    pub duplicates: usize,
    /// Records at or below the SCL that are not held: they cannot be on the chain. Ignored.
    pub off_chain: usize,
}

/// The acceptor of one tenant: its epoch and the chain of each of its segments.
#[derive(Clone, Debug, Default)]
pub struct TenantAcceptor {
    /// 0 until the first Hello: no writer has ever spoken to this safekeeper.
    epoch: u64,
    epoch_start_lsn: Lsn,
    /// The history of `epoch`, ending with `(epoch, epoch_start_lsn)`; empty for epoch 0.
    history: Vec<EpochStart>,
    /// The highest epoch a recovery's `Fence` was promised (0: none; durable, in the control
    /// file). Writers below it are refused even if their epoch is still the installed one: a
    /// recovery read this member's state for an epoch above them.
    promised: u64,
    /// The newest VDL a writer told us, directly or through a peer's repair (in memory; learnt
    /// again after a restart). Never the start of an epoch: a `Hello` carries the start of a
    /// recovery that may yet fail before a write quorum holds it (see [`Self::begin_epoch`]).
    known_vdl: Lsn,
    segments: BTreeMap<SegmentId, SegmentChain>,
}

impl TenantAcceptor {
    /// An acceptor restored from the durable history of its epoch (empty: epoch 0).
    pub fn new(history: Vec<EpochStart>) -> TenantAcceptor {
        assert!(
            history::is_valid(&history),
            "histories are validated when loaded"
        );
        let last = history.last().copied().unwrap_or(EpochStart {
            epoch: 0,
            start: Lsn::INVALID,
        });
        // Not the epoch's start: it may be a failed recovery's (see `begin_epoch`).
        TenantAcceptor {
            epoch: last.epoch,
            epoch_start_lsn: last.start,
            history,
            promised: 0,
            known_vdl: Lsn::INVALID,
            segments: BTreeMap::new(),
        }
    }

    /// The promised epoch read back from the control file after a restart.
    pub fn restore_promise(&mut self, promised: u64) {
        self.promised = self.promised.max(promised);
    }

    /// The highest epoch promised to a recovery's `Fence` (0: none).
    pub fn promised_epoch(&self) -> u64 {
        self.promised
    }

    /// The epoch this member answers writers in: the installed one, or a higher one promised. Acks
    /// are sent in it, so a writer below it hears that it is superseded and counts nothing.
    pub fn ack_epoch(&self) -> u64 {
        self.epoch.max(self.promised)
    }

    /// Judges `Fence { epoch }` from a recovering writer (RFC 0014 §2): only an epoch above both
    /// the installed and the promised one is promised, so two recoveries never hold one promise.
    pub fn judge_fence(&self, epoch: u64) -> FenceVerdict {
        if epoch == 0 {
            return FenceVerdict::Invalid {
                reason: "epoch 0 is reserved for \"no writer yet\"".into(),
            };
        }
        let current = self.ack_epoch();
        if epoch.saturating_sub(current) > EPOCH_STEP_MAX {
            return FenceVerdict::Invalid {
                reason: format!(
                    "epoch {epoch} is more than {EPOCH_STEP_MAX} above the current epoch {current}: \
                     a recovering writer takes the next epoch above those it read"
                ),
            };
        }
        if epoch <= current {
            FenceVerdict::Fenced { current }
        } else {
            FenceVerdict::Promise
        }
    }

    /// Records a promise the caller made durable (see [`Self::judge_fence`]).
    pub fn promise(&mut self, epoch: u64) {
        assert!(epoch > self.ack_epoch(), "promises only move forward");
        self.promised = epoch;
    }

    pub fn history(&self) -> &[EpochStart] {
        &self.history
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn epoch_start_lsn(&self) -> Lsn {
        self.epoch_start_lsn
    }

    pub fn known_vdl(&self) -> Lsn {
        self.known_vdl
    }

    pub fn segments(&self) -> &BTreeMap<SegmentId, SegmentChain> {
        &self.segments
    }

    pub fn segment(&self, segment: SegmentId) -> Option<&SegmentChain> {
        self.segments.get(&segment)
    }

    /// The chain of `segment`, created empty if new.
    pub fn segment_mut(&mut self, segment: SegmentId) -> &mut SegmentChain {
        self.segments.entry(segment).or_default()
    }

    pub fn judge_hello(
        &self,
        epoch: u64,
        epoch_start_lsn: Lsn,
        history: &[EpochStart],
    ) -> HelloVerdict {
        let invalid = |reason: String| HelloVerdict::Invalid { reason };
        if epoch == 0 {
            return invalid("epoch 0 is reserved for \"no writer yet\"".into());
        }
        if !history::is_valid(history)
            || history.last()
                != Some(&EpochStart {
                    epoch,
                    start: epoch_start_lsn,
                })
        {
            return invalid(format!(
                "the history {history:?} is not valid or does not end with epoch {epoch} at {epoch_start_lsn}"
            ));
        }
        if epoch < self.promised {
            // A recovery for a newer epoch read our state: this writer is superseded, whether
            // or not the newer epoch was installed here yet.
            return HelloVerdict::Fenced {
                current: self.promised,
            };
        }
        if epoch.saturating_sub(self.epoch) > EPOCH_STEP_MAX {
            return invalid(format!(
                "epoch {epoch} is more than {EPOCH_STEP_MAX} above the current epoch {}: a \
                 recovering writer takes the next epoch above those it read",
                self.epoch
            ));
        }
        match epoch.cmp(&self.epoch) {
            std::cmp::Ordering::Less => HelloVerdict::Fenced {
                current: self.epoch,
            },
            std::cmp::Ordering::Equal if history == self.history.as_slice() => HelloVerdict::Same,
            std::cmp::Ordering::Equal => invalid(format!(
                "epoch {epoch} was started with the history {:?}, not {history:?}",
                self.history
            )),
            std::cmp::Ordering::Greater => {
                let diverged = history::truncation_point(&self.history, history);
                HelloVerdict::NewEpoch {
                    truncate_above: diverged.min(epoch_start_lsn),
                }
            }
        }
    }

    /// Enters a new epoch (its history given) after the caller made it durable and truncated its
    /// log above `truncate_above`. Returns the number of records forgotten.
    pub fn begin_epoch(&mut self, history: Vec<EpochStart>, truncate_above: Lsn) -> usize {
        let last = *history.last().expect("a new epoch's history ends with it");
        assert!(last.epoch > self.epoch, "epochs only move forward");
        assert!(
            truncate_above <= last.start,
            "nothing above the epoch's start survives"
        );
        self.epoch = last.epoch;
        self.epoch_start_lsn = last.start;
        self.history = history;
        // The known VDL stays what a writer told us. The new epoch's start is *not* known to be
        // durable: the recovering writer sends its Hello before it waits for a write quorum to
        // hold the log up to the start, and an attempt that fails there (it reached fewer than
        // four members, or crashed) leaves a start that maybe one member holds records up to and
        // that a later recovery may truncate below. A pageserver raises its target to a
        // member's known VDL, and recovery of many segments anchors on it (RFC 0008): both need
        // a point some writer found durable. (Found by the protocol simulator's follower: a
        // failed attempt's start let it prove a range "complete" that held records of the log.)
        self.segments
            .values_mut()
            .map(|c| c.truncate_above(truncate_above))
            .sum()
    }

    /// Judges `Trim { epoch, upto }` for `segment` (see [`TrimVerdict`]).
    pub fn judge_trim(&self, segment: SegmentId, epoch: u64, upto: Lsn) -> TrimVerdict {
        if self.epoch < epoch || self.epoch == 0 {
            return TrimVerdict::Behind {
                current: self.epoch,
            };
        }
        let Some(chain) = self.segments.get(&segment) else {
            return TrimVerdict::Nothing { base: Lsn::INVALID };
        };
        match chain.trim_point_for(upto) {
            Some(point) => TrimVerdict::Trim(point),
            None => TrimVerdict::Nothing { base: chain.base() },
        }
    }

    /// Judges a peer's trim point `peer` for `segment`, learnt from the peer's refusal of a
    /// gossip `ReadLog` that asked for our `epoch` (so the peer was in `epoch` when it answered),
    /// while the peer's summary said its SCL is `peer_scl`. Adopted only if all hold:
    ///
    /// - we are still in `epoch` (and in some epoch at all);
    /// - the base is above our SCL (otherwise a normal fill works, and the SCL never moves back);
    ///   hence above our own trim point too;
    /// - the base is at or below the peer's SCL (a peer trims only within its complete chain;
    ///   a base above the SCL it reported is a summary older than the trim: ask again later);
    /// - its last CPL is at or below the base, and not below our own last CPL (our chain up to
    ///   our SCL is a prefix of the same log, so its CPLs are the peer's).
    pub fn judge_adopt_trim(
        &self,
        segment: SegmentId,
        epoch: u64,
        peer_scl: Lsn,
        peer: TrimPoint,
    ) -> AdoptVerdict {
        if self.epoch == 0 || self.epoch != epoch {
            return AdoptVerdict::OtherEpoch {
                current: self.epoch,
            };
        }
        let empty = SegmentChain::new();
        let chain = self.segments.get(&segment).unwrap_or(&empty);
        if peer.base <= chain.scl() {
            return AdoptVerdict::NotBehind { scl: chain.scl() };
        }
        let implausible = |reason: String| AdoptVerdict::Implausible { reason };
        if peer.base > peer_scl {
            return implausible(format!(
                "the peer's trim point {} is above the SCL {peer_scl} it reported",
                peer.base
            ));
        }
        if peer.last_cpl > peer.base {
            return implausible(format!(
                "the peer's last CPL {} is above its trim point {}",
                peer.last_cpl, peer.base
            ));
        }
        if peer.last_cpl < chain.last_cpl() {
            return implausible(format!(
                "the peer's last CPL {} at its trim point {} is below ours ({})",
                peer.last_cpl,
                peer.base,
                chain.last_cpl()
            ));
        }
        AdoptVerdict::Adopt(peer)
    }

    /// Every segment's trim point, for the control file (segments never trimmed are left out).
    pub fn trim_points(&self) -> Vec<(SegmentId, TrimPoint)> {
        self.segments
            .iter()
            .filter(|(_, c)| c.base().is_valid())
            .map(|(s, c)| (*s, c.trim_point()))
            .collect()
    }

    /// Restores a trim point read from the control file, before any record of the segment is
    /// inserted.
    pub fn restore_trim(&mut self, segment: SegmentId, trim: TrimPoint) {
        let previous = self.segments.insert(segment, SegmentChain::with_base(trim));
        assert!(
            previous.is_none_or(|c| c.records() == 0 && !c.base().is_valid()),
            "trim points are restored first"
        );
    }

    pub fn judge_append(&self, epoch: u64) -> AppendVerdict {
        if epoch < self.promised {
            AppendVerdict::Fenced {
                current: self.promised,
            }
        } else if self.epoch == 0 || epoch > self.epoch {
            AppendVerdict::HelloFirst {
                current: self.epoch,
            }
        } else if epoch < self.epoch {
            AppendVerdict::Fenced {
                current: self.epoch,
            }
        } else {
            AppendVerdict::Accept
        }
    }

    /// Raises the known VDL (never lowers it: VDLs arrive out of order across connections).
    pub fn note_vdl(&mut self, vdl: Lsn) {
        self.known_vdl = self.known_vdl.max(vdl);
    }

    /// Chooses which of `lsns` (an append's records, in order) to write to `segment`.
    pub fn plan_append(
        &self,
        segment: SegmentId,
        lsns: impl IntoIterator<Item = Lsn>,
    ) -> AppendPlan {
        let empty = SegmentChain::new();
        let chain = self.segments.get(&segment).unwrap_or(&empty);
        let mut plan = AppendPlan::default();
        let mut seen = std::collections::BTreeSet::new();
        for (i, lsn) in lsns.into_iter().enumerate() {
            if chain.contains(lsn) || !seen.insert(lsn) {
                plan.duplicates += 1;
            } else if !chain.would_accept(lsn) {
                plan.off_chain += 1;
            } else {
                plan.write.push(i);
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(prev: u64, is_cpl: bool) -> Link {
        Link {
            prev_lsn_segment: Lsn(prev),
            is_cpl,
        }
    }

    /// Inserts records given as (lsn, prev, cpl).
    fn fill(chain: &mut SegmentChain, recs: &[(u64, u64, bool)]) {
        for &(lsn, prev, cpl) in recs {
            chain.insert(Lsn(lsn), link(prev, cpl));
        }
    }

    #[test]
    fn in_order_records_advance_the_scl_and_last_cpl() {
        let mut c = SegmentChain::new();
        assert_eq!(
            (c.scl(), c.last_cpl(), c.end_lsn()),
            (Lsn(0), Lsn(0), Lsn(0))
        );
        fill(&mut c, &[(1, 0, false), (2, 1, true), (5, 2, false)]);
        assert_eq!(c.scl(), Lsn(5));
        assert_eq!(c.last_cpl(), Lsn(2));
        assert_eq!(c.end_lsn(), Lsn(5));
        assert_eq!(c.holes(), 0);
    }

    #[test]
    fn a_hole_holds_the_scl_until_it_is_filled() {
        let mut c = SegmentChain::new();
        // The segment's records are 1, 3, 4, 7 (LSNs 2, 5, 6 belong to other segments).
        fill(&mut c, &[(1, 0, true), (4, 3, true), (7, 4, false)]);
        assert_eq!(c.scl(), Lsn(1), "3 is missing");
        assert_eq!(c.last_cpl(), Lsn(1));
        assert_eq!(c.end_lsn(), Lsn(7));
        assert_eq!(c.holes(), 1);
        assert!(c.insert(Lsn(3), link(1, false)));
        assert_eq!(c.scl(), Lsn(7), "the SCL jumps over everything that waited");
        assert_eq!(c.last_cpl(), Lsn(4));
        assert_eq!(c.holes(), 0);
    }

    #[test]
    fn the_index_lists_the_complete_chain_only_with_the_record_below_it() {
        let mut c = SegmentChain::new();
        // Records 1, 3, 4, 7 (others belong to other segments); 9 waits above a hole at 8.
        fill(
            &mut c,
            &[
                (1, 0, true),
                (3, 1, false),
                (4, 3, true),
                (7, 4, true),
                (9, 8, true),
            ],
        );
        assert_eq!(c.scl(), Lsn(7));
        let lsns = |v: Vec<(Lsn, Link)>| v.into_iter().map(|(l, _)| l.0).collect::<Vec<_>>();
        let (before, entries) = c.index(Lsn(2), Lsn(100), 10).unwrap();
        assert_eq!(
            (before, lsns(entries)),
            (Lsn(1), vec![3, 4, 7]),
            "never past the SCL"
        );
        let (before, entries) = c.index(Lsn(0), Lsn(4), 10).unwrap();
        assert_eq!((before, lsns(entries)), (Lsn(0), vec![1, 3, 4]));
        let (_, entries) = c.index(Lsn(0), Lsn(100), 2).unwrap();
        assert_eq!(lsns(entries), vec![1, 3], "cut at the count asked for");
        let (before, entries) = c.index(Lsn(20), Lsn(30), 10).unwrap();
        assert_eq!(
            (before, entries.len()),
            (Lsn(7), 0),
            "above the SCL: its last record"
        );
        let mut trimmed = SegmentChain::with_base(TrimPoint {
            base: Lsn(4),
            last_cpl: Lsn(4),
        });
        fill(&mut trimmed, &[(7, 4, true)]);
        assert_eq!(
            trimmed.index(Lsn(3), Lsn(10), 10),
            None,
            "below the trim point"
        );
        let (before, entries) = trimmed.index(Lsn(5), Lsn(10), 10).unwrap();
        assert_eq!(
            (before, lsns(entries)),
            (Lsn(4), vec![7]),
            "the trim point links"
        );
    }

    #[test]
    fn two_holes_are_counted_and_filled_in_any_order() {
        let mut c = SegmentChain::new();
        fill(&mut c, &[(2, 1, false), (4, 3, false), (5, 4, true)]);
        assert_eq!(c.scl(), Lsn(0));
        assert_eq!(c.holes(), 2);
        fill(&mut c, &[(3, 2, false)]);
        assert_eq!(c.scl(), Lsn(0));
        assert_eq!(c.holes(), 1);
        fill(&mut c, &[(1, 0, false)]);
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(5), Lsn(5)));
    }

    #[test]
    fn duplicates_are_ignored() {
        let mut c = SegmentChain::new();
        fill(&mut c, &[(1, 0, false), (2, 1, true)]);
        assert!(!c.insert(Lsn(2), link(1, true)));
        assert!(!c.insert(Lsn(1), link(0, false)));
        assert_eq!((c.scl(), c.records()), (Lsn(2), 2));

        let a = TenantAcceptor {
            segments: [(SegmentId(0), c)].into(),
            ..TenantAcceptor::new(h(&[(1, 0)]))
        };
        let plan = a.plan_append(SegmentId(0), [Lsn(2), Lsn(3), Lsn(3), Lsn(4)]);
        assert_eq!(
            plan,
            AppendPlan {
                write: vec![1, 3],
                duplicates: 2,
                off_chain: 0
            }
        );
    }

    #[test]
    fn a_record_below_the_scl_that_is_not_held_is_refused() {
        let mut c = SegmentChain::new();
        fill(&mut c, &[(1, 0, false), (3, 1, false)]);
        assert_eq!(c.scl(), Lsn(3));
        assert!(
            !c.would_accept(Lsn(2)),
            "2 cannot be on a chain that goes 1 -> 3"
        );
        assert!(!c.insert(Lsn(2), link(1, false)));
        let a = TenantAcceptor {
            segments: [(SegmentId(0), c)].into(),
            ..TenantAcceptor::new(h(&[(1, 0)]))
        };
        assert_eq!(a.plan_append(SegmentId(0), [Lsn(2)]).off_chain, 1);
    }

    #[test]
    fn truncate_above_forgets_records_and_lowers_the_scl() {
        let mut c = SegmentChain::new();
        fill(
            &mut c,
            &[
                (1, 0, true),
                (2, 1, false),
                (3, 2, true),
                (4, 3, false),
                (9, 8, false),
            ],
        );
        assert_eq!(c.scl(), Lsn(4));
        assert_eq!(c.truncate_above(Lsn(2)), 3);
        assert_eq!(
            (c.scl(), c.last_cpl(), c.end_lsn()),
            (Lsn(2), Lsn(1), Lsn(2))
        );
        // The new epoch's writer continues from 2 with different records.
        fill(&mut c, &[(3, 2, true)]);
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(3), Lsn(3)));
    }

    #[test]
    fn removing_a_corrupt_record_lowers_the_scl_until_it_is_fetched_again() {
        let mut c = SegmentChain::new();
        fill(
            &mut c,
            &[(1, 0, true), (2, 1, true), (3, 2, true), (4, 3, true)],
        );
        assert!(c.remove(Lsn(2)));
        assert_eq!(
            (c.scl(), c.last_cpl(), c.end_lsn()),
            (Lsn(1), Lsn(1), Lsn(4))
        );
        assert!(c.would_accept(Lsn(2)), "the lost record may come back");
        assert!(c.insert(Lsn(2), link(1, true)));
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(4), Lsn(4)));
        assert!(!c.remove(Lsn(42)));
    }

    #[test]
    fn a_trimmed_chain_starts_at_its_base() {
        let mut c = SegmentChain::with_base(TrimPoint {
            base: Lsn(10),
            last_cpl: Lsn(8),
        });
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(10), Lsn(8)));
        assert!(!c.insert(Lsn(7), link(3, false)), "below the base");
        fill(&mut c, &[(12, 10, true)]);
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(12), Lsn(12)));
        c.remove(Lsn(12));
        assert_eq!(c.scl(), Lsn(10));
        assert_eq!(
            c.last_cpl(),
            Lsn(8),
            "recovery still sees the CPL below the base"
        );
    }

    #[test]
    fn trimming_cuts_through_a_chain_record_at_or_below_the_scl() {
        let mut c = SegmentChain::new();
        // The segment's records are 1, 3, 4, 7, 9 (CPLs 3 and 7); 12 waits above a hole.
        fill(
            &mut c,
            &[
                (1, 0, false),
                (3, 1, true),
                (4, 3, false),
                (7, 4, true),
                (9, 7, false),
                (12, 11, true),
            ],
        );
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(9), Lsn(7)));
        // Up to 6: through record 4 (the last at or below 6), whose last CPL is 3.
        let p = c.trim_point_for(Lsn(6)).unwrap();
        assert_eq!(
            p,
            TrimPoint {
                base: Lsn(4),
                last_cpl: Lsn(3)
            }
        );
        // Never above the SCL, even when asked for more: 12 is not on the complete chain.
        assert_eq!(c.trim_point_for(Lsn(50)).unwrap().base, Lsn(9));
        assert_eq!(c.trim(p), 3);
        assert_eq!((c.base(), c.scl(), c.last_cpl()), (Lsn(4), Lsn(9), Lsn(7)));
        assert_eq!(c.records(), 3);
        assert_eq!(
            c.trim_point_for(Lsn(5)),
            None,
            "nothing left to drop up to 5"
        );
        assert_eq!(c.trim_point_for(Lsn(4)), None);
        // The hole is filled: the chain goes on from the base as before.
        fill(&mut c, &[(11, 9, false)]);
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(12), Lsn(12)));
        // A truncation below the base (which recovery never asks for) cannot un-trim.
        c.truncate_above(Lsn(2));
        assert_eq!(
            (c.scl(), c.last_cpl(), c.end_lsn()),
            (Lsn(4), Lsn(3), Lsn(4))
        );
    }

    #[test]
    fn a_trim_needs_the_checkpoints_epoch() {
        let mut a = TenantAcceptor::new(h(&[(1, 0), (2, 3)]));
        fill(
            a.segment_mut(SegmentId(0)),
            &[(1, 0, true), (3, 1, true), (5, 3, true)],
        );
        assert_eq!(
            a.judge_trim(SegmentId(0), 3, Lsn(5)),
            TrimVerdict::Behind { current: 2 }
        );
        assert_eq!(
            a.judge_trim(SegmentId(0), 2, Lsn(4)),
            TrimVerdict::Trim(TrimPoint {
                base: Lsn(3),
                last_cpl: Lsn(3)
            })
        );
        assert_eq!(
            a.judge_trim(SegmentId(1), 2, Lsn(4)),
            TrimVerdict::Nothing { base: Lsn(0) }
        );
        assert_eq!(
            TenantAcceptor::default().judge_trim(SegmentId(0), 0, Lsn(4)),
            TrimVerdict::Behind { current: 0 }
        );
        let p = TrimPoint {
            base: Lsn(3),
            last_cpl: Lsn(3),
        };
        a.segment_mut(SegmentId(0)).trim(p);
        assert_eq!(a.trim_points(), vec![(SegmentId(0), p)]);
        assert_eq!(
            a.judge_trim(SegmentId(0), 1, Lsn(3)),
            TrimVerdict::Nothing { base: Lsn(3) }
        );
        let mut b = TenantAcceptor::new(h(&[(1, 0), (2, 3)]));
        b.restore_trim(SegmentId(0), p);
        fill(b.segment_mut(SegmentId(0)), &[(1, 0, true), (5, 3, true)]);
        assert_eq!(
            b.segment(SegmentId(0)).map(|c| (c.scl(), c.records())),
            Some((Lsn(5), 1))
        );
    }

    fn point(base: u64, last_cpl: u64) -> TrimPoint {
        TrimPoint {
            base: Lsn(base),
            last_cpl: Lsn(last_cpl),
        }
    }

    /// A member of epoch 2 holding 1..=3 (CPL 2) and, above a hole at 4..=5, 6 and 7.
    fn behind() -> TenantAcceptor {
        let mut a = TenantAcceptor::new(h(&[(1, 0), (2, 0)]));
        fill(
            a.segment_mut(SegmentId(0)),
            &[
                (1, 0, false),
                (2, 1, true),
                (3, 2, false),
                (6, 5, false),
                (7, 6, true),
            ],
        );
        a
    }

    #[test]
    fn a_peers_trim_point_above_our_scl_in_our_epoch_is_adopted() {
        let a = behind();
        assert_eq!(
            a.judge_adopt_trim(SegmentId(0), 2, Lsn(9), point(5, 4)),
            AdoptVerdict::Adopt(point(5, 4))
        );
        // A segment we never heard of: anything above 0.
        assert_eq!(
            a.judge_adopt_trim(SegmentId(4), 2, Lsn(9), point(5, 4)),
            AdoptVerdict::Adopt(point(5, 4))
        );
        // The base may be the peer's SCL itself.
        assert_eq!(
            a.judge_adopt_trim(SegmentId(0), 2, Lsn(5), point(5, 2)),
            AdoptVerdict::Adopt(point(5, 2))
        );
    }

    #[test]
    fn a_peers_trim_point_is_not_adopted_across_epochs() {
        let a = behind();
        for epoch in [1, 3] {
            assert_eq!(
                a.judge_adopt_trim(SegmentId(0), epoch, Lsn(9), point(5, 4)),
                AdoptVerdict::OtherEpoch { current: 2 }
            );
        }
        assert_eq!(
            TenantAcceptor::default().judge_adopt_trim(SegmentId(0), 0, Lsn(9), point(5, 4)),
            AdoptVerdict::OtherEpoch { current: 0 },
            "no epoch yet: adopt the epoch first"
        );
    }

    #[test]
    fn a_peers_trim_point_at_or_below_our_scl_is_not_adopted() {
        let a = behind();
        for base in [1, 3] {
            assert_eq!(
                a.judge_adopt_trim(SegmentId(0), 2, Lsn(9), point(base, 0)),
                AdoptVerdict::NotBehind { scl: Lsn(3) }
            );
        }
        // Nor below our own trim point (which is at or below our SCL).
        let mut t = behind();
        t.segment_mut(SegmentId(0)).trim(point(3, 2));
        assert_eq!(
            t.judge_adopt_trim(SegmentId(0), 2, Lsn(9), point(2, 2)),
            AdoptVerdict::NotBehind { scl: Lsn(3) }
        );
    }

    #[test]
    fn an_implausible_trim_point_is_not_adopted() {
        let a = behind();
        let implausible = |v: AdoptVerdict| matches!(v, AdoptVerdict::Implausible { .. });
        assert!(
            implausible(a.judge_adopt_trim(SegmentId(0), 2, Lsn(4), point(5, 4))),
            "above the peer's SCL"
        );
        assert!(
            implausible(a.judge_adopt_trim(SegmentId(0), 2, Lsn(9), point(5, 6))),
            "a CPL above the base"
        );
        assert!(
            implausible(a.judge_adopt_trim(SegmentId(0), 2, Lsn(9), point(5, 1))),
            "a CPL below our own last CPL (2)"
        );
    }

    #[test]
    fn an_adopted_base_drops_what_is_below_and_chains_what_is_above() {
        let mut a = behind();
        let AdoptVerdict::Adopt(p) = a.judge_adopt_trim(SegmentId(0), 2, Lsn(9), point(5, 4))
        else {
            panic!("adopted");
        };
        let c = a.segment_mut(SegmentId(0));
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(3), Lsn(2)));
        assert_eq!(c.adopt_base(p), 3, "1..=3 are dropped");
        // 6 names 5 as its predecessor: the SCL runs from the base over 6 and 7.
        assert_eq!(
            (c.base(), c.scl(), c.last_cpl(), c.records()),
            (Lsn(5), Lsn(7), Lsn(7), 2)
        );
        assert_eq!(a.trim_points(), vec![(SegmentId(0), p)]);
        // The next record chains on, and a record at or below the base is refused.
        let c = a.segment_mut(SegmentId(0));
        assert!(!c.would_accept(Lsn(4)));
        assert!(c.insert(Lsn(8), link(7, false)));
        assert_eq!(c.scl(), Lsn(8));
        // Losing 6 again falls back to the adopted base and its CPL, not below.
        c.remove(Lsn(6));
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(5), Lsn(4)));
        // A later trim on the adopted chain works as on any other.
        assert!(c.insert(Lsn(6), link(5, false)));
        assert_eq!(c.trim_point_for(Lsn(7)), Some(point(7, 7)));
    }

    #[test]
    fn an_adopted_base_with_nothing_above_it_is_the_scl() {
        let mut c = SegmentChain::new();
        assert_eq!(c.adopt_base(point(60, 60)), 0);
        assert_eq!(
            (c.base(), c.scl(), c.last_cpl(), c.end_lsn()),
            (Lsn(60), Lsn(60), Lsn(60), Lsn(60))
        );
        assert!(c.insert(Lsn(61), link(60, false)));
        assert_eq!((c.scl(), c.last_cpl()), (Lsn(61), Lsn(60)));
    }

    #[test]
    #[should_panic(expected = "an adopted base lies above the SCL")]
    fn adopting_a_base_at_or_below_the_scl_is_a_bug() {
        let mut a = behind();
        a.segment_mut(SegmentId(0)).adopt_base(point(3, 2));
    }

    use borealis_core::history::from_pairs as h;

    #[test]
    fn epoch_fencing() {
        let mut a = TenantAcceptor::default();
        assert_eq!(a.judge_append(1), AppendVerdict::HelloFirst { current: 0 });
        assert!(matches!(
            a.judge_hello(0, Lsn(0), &[]),
            HelloVerdict::Invalid { .. }
        ));
        assert!(matches!(
            a.judge_hello(1, Lsn(0), &h(&[(1, 5)])),
            HelloVerdict::Invalid { .. }
        ));
        assert!(matches!(
            a.judge_hello(2, Lsn(0), &h(&[(2, 0), (2, 0)])),
            HelloVerdict::Invalid { .. }
        ));
        assert_eq!(
            a.judge_hello(1, Lsn(0), &h(&[(1, 0)])),
            HelloVerdict::NewEpoch {
                truncate_above: Lsn(0)
            }
        );
        // A jump that would leave no epochs for later writers is refused (it once bricked a
        // tenant: recovery overflowed computing u64::MAX + 1).
        let max = h(&[(u64::MAX, 0)]);
        assert!(matches!(
            a.judge_hello(u64::MAX, Lsn(0), &max),
            HelloVerdict::Invalid { .. }
        ));
        let far = EPOCH_STEP_MAX + 1;
        assert!(matches!(
            a.judge_hello(far, Lsn(0), &h(&[(far, 0)])),
            HelloVerdict::Invalid { .. }
        ));
        assert!(matches!(
            a.judge_hello(EPOCH_STEP_MAX, Lsn(0), &h(&[(EPOCH_STEP_MAX, 0)])),
            HelloVerdict::NewEpoch { .. }
        ));
        a.begin_epoch(h(&[(1, 0)]), Lsn(0));
        assert_eq!(a.judge_hello(1, Lsn(0), &h(&[(1, 0)])), HelloVerdict::Same);
        assert!(matches!(
            a.judge_hello(1, Lsn(5), &h(&[(1, 5)])),
            HelloVerdict::Invalid { .. }
        ));
        assert_eq!(a.judge_append(1), AppendVerdict::Accept);
        assert_eq!(a.judge_append(2), AppendVerdict::HelloFirst { current: 1 });

        fill(
            a.segment_mut(SegmentId(3)),
            &[(1, 0, true), (2, 1, true), (3, 2, false)],
        );
        a.note_vdl(Lsn(2));
        a.note_vdl(Lsn(1));
        assert_eq!(a.known_vdl(), Lsn(2), "the known VDL never goes back");
        let next = h(&[(1, 0), (2, 2)]);
        assert_eq!(
            a.judge_hello(2, Lsn(2), &next),
            HelloVerdict::NewEpoch {
                truncate_above: Lsn(2)
            }
        );
        assert_eq!(a.begin_epoch(next.clone(), Lsn(2)), 1);
        assert_eq!(a.segment(SegmentId(3)).map(|c| c.scl()), Some(Lsn(2)));
        assert_eq!(a.judge_append(1), AppendVerdict::Fenced { current: 2 });
        assert_eq!(
            a.judge_hello(1, Lsn(0), &h(&[(1, 0)])),
            HelloVerdict::Fenced { current: 2 }
        );
        assert_eq!(a.judge_append(2), AppendVerdict::Accept);
        assert_eq!(
            (a.epoch(), a.epoch_start_lsn(), a.known_vdl()),
            (2, Lsn(2), Lsn(2))
        );
        assert_eq!(a.history(), next.as_slice());
    }

    #[test]
    fn a_member_that_missed_an_epoch_keeps_only_the_shared_log() {
        // This member took records 1..=6 from epoch 1's writer, then was down while epoch 2
        // started at 3 (dropping 4..=6 everywhere else) and wrote its own 4..=9. Epoch 3 starts
        // at 9: keeping everything up to 9 would keep epoch 1's stale 4..=6.
        let mut a = TenantAcceptor::new(h(&[(1, 0)]));
        fill(
            a.segment_mut(SegmentId(0)),
            &[
                (1, 0, true),
                (2, 1, false),
                (3, 2, true),
                (4, 3, false),
                (5, 4, false),
                (6, 5, true),
            ],
        );
        let writer = h(&[(1, 0), (2, 3), (3, 9)]);
        assert_eq!(
            a.judge_hello(3, Lsn(9), &writer),
            HelloVerdict::NewEpoch {
                truncate_above: Lsn(3)
            }
        );
        assert_eq!(a.begin_epoch(writer, Lsn(3)), 3);
        let c = a.segment(SegmentId(0)).map(|c| (c.scl(), c.end_lsn()));
        assert_eq!(c, Some((Lsn(3), Lsn(3))));
        // A member with no history at all keeps nothing it may hold.
        let fresh = TenantAcceptor::default();
        assert_eq!(
            fresh.judge_hello(3, Lsn(9), &h(&[(1, 0), (2, 3), (3, 9)])),
            HelloVerdict::NewEpoch {
                truncate_above: Lsn(0)
            }
        );
    }
}
