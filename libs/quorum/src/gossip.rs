//! Gossip's fetch from one peer, as a state machine: what to ask next, what an answer proves,
//! when to write, adopt or stop.
//!
//! A member whose SCL of a segment is below a peer's (both in the same epoch) fills the gap
//! `(after, upto]` from that peer. [`PeerFetch`] makes every decision of that fetch; its driver
//! only carries requests and answers (the safekeeper's `gossip::fetch` over the wire and its log
//! writer; the simulator's gossip over in-memory members and their acceptors):
//!
//! ```text
//!   step (what the driver does)        answer fed back
//!   ─────────────────────────────────  ───────────────────────────────────────────────────
//!   GetState                           on_state(peer epoch, peer history)
//!   Read { after, upto }               on_records(records, known_vdl) | on_trimmed(base, last_cpl)
//!   Repair { records, known_vdl }      on_repaired(ok or why not)        (written and fsynced)
//!   AdoptTrim { point, peer_scl }      on_adopted(outcome or why not)    (durable, a barrier)
//!   Done(why)                          —
//! ```
//!
//! Its rules:
//!
//! - **Same history, not just the same epoch number.** The first step asks the peer's state, and
//!   records are read only if the peer's history is ours: an epoch number can have been taken
//!   twice by failed recovery attempts (RFC 0007), and records of one such epoch must never be
//!   chained into a log of the other. The reads themselves carry our epoch
//!   (`ReadLog { epoch: Some(ours) }`), so a peer that moved on meanwhile refuses them; a member
//!   never changes its history within one epoch number.
//! - **Only what was asked for.** An answer whose records do not all lie in `(after, upto]` ends
//!   the fetch: nothing of it is written.
//! - **Progress from what is durable.** After a repair the next read starts after its last
//!   record (records we already held are skipped by the acceptor, so reading across them is
//!   cheap); an answer with no records ends the fetch.
//! - **A trimmed peer's trim point.** A peer that trimmed its log past `after` refuses the read
//!   with its trim point `(base, last_cpl)`. The records at or below it are checkpointed to object
//!   storage: nobody needs them from a safekeeper again, so we adopt the trim point as our own
//!   base ([`crate::acceptor::Acceptor::adopt_trim`], judged by
//!   [`crate::acceptor::TenantAcceptor::judge_adopt_trim`] with the peer's SCL `upto`) and go on
//!   reading from the SCL that gives. A trim point the acceptor does not accept ends the fetch.
//! - **Bounded.** At most [`FETCHES_PER_SEGMENT_PER_ROUND_MAX`] reads per fetch: one lagging
//!   segment cannot starve the others; the next gossip round goes on where this one stopped.

use crate::acceptor::{AdoptOutcome, TrimPoint};
use borealis_core::history::EpochStart;
use borealis_core::{Lsn, SegmentId};
use std::marker::PhantomData;

/// `ReadLog` calls for one segment in one round: one lagging segment cannot starve the others
/// (the next round continues where this one stopped).
pub const FETCHES_PER_SEGMENT_PER_ROUND_MAX: usize = 64;

/// What the driver does next. `R` is the driver's record (parsed, with whatever it needs to write
/// it): the machine only looks at LSNs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchStep<R> {
    /// Ask the peer's `GetState`; feed its epoch and history to [`PeerFetch::on_state`].
    GetState,
    /// Send `ReadLog { segment, epoch: Some(epoch), min_epoch: epoch, after, upto }`; feed the
    /// records to [`PeerFetch::on_records`] or a trim refusal to [`PeerFetch::on_trimmed`].
    Read { after: Lsn, upto: Lsn },
    /// Write `records` as a peer's repair in our epoch (`Source::Peer { epoch, known_vdl }`),
    /// make them durable, and feed the outcome to [`PeerFetch::on_repaired`].
    Repair { records: Vec<R>, known_vdl: Lsn },
    /// Adopt the peer's trim point (`Acceptor::adopt_trim(segment, epoch, peer_scl, point)`),
    /// durably, and feed the outcome to [`PeerFetch::on_adopted`].
    AdoptTrim { point: TrimPoint, peer_scl: Lsn },
    /// The fetch is over.
    Done(FetchEnd),
}

/// Why a fetch ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchEnd {
    /// Nothing is left to fetch: we hold the segment up to `upto` (or beyond).
    CaughtUp,
    /// [`FETCHES_PER_SEGMENT_PER_ROUND_MAX`] reads were made; the next round goes on.
    RoundBudgetSpent,
    /// The peer is in another epoch than the one we fetch in.
    PeerInAnotherEpoch { theirs: u64 },
    /// The peer holds our epoch number with another history (RFC 0007): never fetched from.
    OtherHistory,
    /// The peer had nothing more in the range asked for.
    NothingMore,
    /// The peer sent records outside `(after, upto]`: nothing of the answer was written.
    OutOfRange { after: Lsn, upto: Lsn },
    /// Our acceptor refused the repair.
    RepairRefused { reason: String },
    /// The peer trimmed its log past `after` through `(base, last_cpl)`, and its trim point was
    /// not adopted: this peer cannot fill us.
    TrimNotAdopted {
        after: Lsn,
        base: Lsn,
        last_cpl: Lsn,
        reason: String,
    },
}

/// What the machine waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    Start,
    State,
    Records,
    /// A repair whose last record is this LSN.
    Repair(Lsn),
    /// An adoption of this trim point.
    Adopt(TrimPoint),
    Done,
}

/// One fetch of `(after, upto]` of a segment from one peer (see the module docs).
#[derive(Clone, Debug)]
pub struct PeerFetch<R> {
    segment: SegmentId,
    epoch: u64,
    history: Vec<EpochStart>,
    after: Lsn,
    upto: Lsn,
    reads: usize,
    waiting: Waiting,
    records: PhantomData<fn() -> R>,
}

impl<R> PeerFetch<R> {
    /// A fetch of `(after, upto]` of `segment` in our `epoch`, whose history is `history`;
    /// `upto` is the SCL the peer's summary reported. Start it with [`PeerFetch::start`].
    pub fn new(
        segment: SegmentId,
        epoch: u64,
        history: Vec<EpochStart>,
        after: Lsn,
        upto: Lsn,
    ) -> PeerFetch<R> {
        PeerFetch {
            segment,
            epoch,
            history,
            after,
            upto,
            reads: 0,
            waiting: Waiting::Start,
            records: PhantomData,
        }
    }

    pub fn segment(&self) -> SegmentId {
        self.segment
    }

    /// The epoch the fetch runs in (what its reads and repairs carry).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// What we hold the segment up to, as far as this fetch knows.
    pub fn after(&self) -> Lsn {
        self.after
    }

    /// How many reads were asked for so far.
    pub fn reads(&self) -> usize {
        self.reads
    }

    /// The first step: ask the peer's state (or nothing at all, if there is nothing to fetch).
    pub fn start(&mut self) -> FetchStep<R> {
        self.expect(Waiting::Start, "start");
        if self.after >= self.upto {
            return self.done(FetchEnd::CaughtUp);
        }
        self.waiting = Waiting::State;
        FetchStep::GetState
    }

    /// The peer's `GetState`: its epoch and the history of that epoch.
    pub fn on_state(&mut self, epoch: u64, history: &[EpochStart]) -> FetchStep<R> {
        self.expect(Waiting::State, "a state");
        if history == self.history.as_slice() {
            return self.next_read();
        }
        if epoch == self.epoch {
            return self.done(FetchEnd::OtherHistory);
        }
        self.done(FetchEnd::PeerInAnotherEpoch { theirs: epoch })
    }

    /// The peer's records for the last [`FetchStep::Read`] (decoded, in the order sent), and the
    /// VDL it knew. `lsn` tells a record's LSN.
    pub fn on_records(
        &mut self,
        records: Vec<R>,
        lsn: impl Fn(&R) -> Lsn,
        known_vdl: Lsn,
    ) -> FetchStep<R> {
        self.expect(Waiting::Records, "records");
        let Some(last) = records.last().map(&lsn) else {
            return self.done(FetchEnd::NothingMore);
        };
        if records
            .iter()
            .any(|r| lsn(r) <= self.after || lsn(r) > self.upto)
        {
            return self.done(FetchEnd::OutOfRange {
                after: self.after,
                upto: self.upto,
            });
        }
        self.waiting = Waiting::Repair(last);
        FetchStep::Repair { records, known_vdl }
    }

    /// The peer refused the last [`FetchStep::Read`]: its log is trimmed past `after`, through
    /// `base`, whose last consistency point is `last_cpl`.
    pub fn on_trimmed(&mut self, base: Lsn, last_cpl: Lsn) -> FetchStep<R> {
        self.expect(Waiting::Records, "a trim refusal");
        match TrimPoint::from_refusal(base, last_cpl) {
            Some(point) => {
                self.waiting = Waiting::Adopt(point);
                FetchStep::AdoptTrim {
                    point,
                    peer_scl: self.upto,
                }
            }
            None => self.done(FetchEnd::TrimNotAdopted {
                after: self.after,
                base,
                last_cpl,
                reason: "the refusal names no trim point a control file could hold".into(),
            }),
        }
    }

    /// The repair asked for is durable (`Ok`), or was refused.
    pub fn on_repaired(&mut self, outcome: Result<(), String>) -> FetchStep<R> {
        let Waiting::Repair(last) = self.waiting else {
            panic!(
                "a repair's outcome while waiting for {:?}: a driver bug",
                self.waiting
            );
        };
        match outcome {
            Ok(()) => {
                self.after = last;
                self.next_read()
            }
            Err(reason) => self.done(FetchEnd::RepairRefused { reason }),
        }
    }

    /// What adopting the trim point asked for did, or why it was refused.
    pub fn on_adopted(&mut self, outcome: Result<AdoptOutcome, String>) -> FetchStep<R> {
        let Waiting::Adopt(point) = self.waiting else {
            panic!(
                "an adoption's outcome while waiting for {:?}: a driver bug",
                self.waiting
            );
        };
        let not_adopted = |after: Lsn, reason: String| FetchEnd::TrimNotAdopted {
            after,
            base: point.base,
            last_cpl: point.last_cpl,
            reason,
        };
        match outcome {
            // Go on from the adopted base (or beyond, over records we held above it).
            Ok(AdoptOutcome::Adopted { scl, .. }) => {
                self.after = self.after.max(scl);
                self.next_read()
            }
            // Filled meanwhile (by a writer or another peer): fetch on from there.
            Ok(AdoptOutcome::NotBehind { scl }) if scl > self.after => {
                self.after = scl;
                self.next_read()
            }
            Ok(AdoptOutcome::NotBehind { scl }) => {
                let end = not_adopted(
                    self.after,
                    format!("its trim point {} is not above our SCL {scl}", point.base),
                );
                self.done(end)
            }
            Err(reason) => {
                let end = not_adopted(self.after, reason);
                self.done(end)
            }
        }
    }

    fn next_read(&mut self) -> FetchStep<R> {
        if self.after >= self.upto {
            return self.done(FetchEnd::CaughtUp);
        }
        if self.reads >= FETCHES_PER_SEGMENT_PER_ROUND_MAX {
            return self.done(FetchEnd::RoundBudgetSpent);
        }
        self.reads += 1;
        self.waiting = Waiting::Records;
        FetchStep::Read {
            after: self.after,
            upto: self.upto,
        }
    }

    fn done(&mut self, end: FetchEnd) -> FetchStep<R> {
        self.waiting = Waiting::Done;
        FetchStep::Done(end)
    }

    fn expect(&self, waiting: Waiting, what: &str) {
        assert_eq!(
            self.waiting, waiting,
            "{what} fed to a peer fetch in the wrong state: a driver bug"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: SegmentId = SegmentId(0);

    use borealis_core::history::from_pairs as h;

    fn fetch(after: u64, upto: u64) -> PeerFetch<u64> {
        PeerFetch::new(S, 2, h(&[(1, 0), (2, 5)]), Lsn(after), Lsn(upto))
    }

    fn records(f: &mut PeerFetch<u64>, lsns: &[u64]) -> FetchStep<u64> {
        f.on_records(lsns.to_vec(), |l| Lsn(*l), Lsn(7))
    }

    fn read(after: u64, upto: u64) -> FetchStep<u64> {
        FetchStep::Read {
            after: Lsn(after),
            upto: Lsn(upto),
        }
    }

    #[test]
    fn reads_repairs_and_goes_on_from_the_last_record_until_caught_up() {
        let mut f = fetch(10, 30);
        assert_eq!(f.start(), FetchStep::GetState);
        assert_eq!(f.on_state(2, &h(&[(1, 0), (2, 5)])), read(10, 30));
        assert_eq!(
            records(&mut f, &[12, 15]),
            FetchStep::Repair {
                records: vec![12, 15],
                known_vdl: Lsn(7)
            }
        );
        assert_eq!(f.on_repaired(Ok(())), read(15, 30));
        assert_eq!(f.after(), Lsn(15));
        records(&mut f, &[30]);
        assert_eq!(f.on_repaired(Ok(())), FetchStep::Done(FetchEnd::CaughtUp));
        assert_eq!(f.reads(), 2);
    }

    #[test]
    fn nothing_to_fetch_asks_nothing() {
        assert_eq!(fetch(30, 30).start(), FetchStep::Done(FetchEnd::CaughtUp));
    }

    #[test]
    fn only_a_peer_with_our_history_is_read_from() {
        let mut f = fetch(10, 30);
        f.start();
        assert_eq!(
            f.on_state(2, &h(&[(1, 0), (2, 9)])),
            FetchStep::Done(FetchEnd::OtherHistory),
            "the same epoch number started elsewhere: a failed recovery attempt's"
        );
        let mut f = fetch(10, 30);
        f.start();
        assert_eq!(
            f.on_state(3, &h(&[(1, 0), (2, 5), (3, 20)])),
            FetchStep::Done(FetchEnd::PeerInAnotherEpoch { theirs: 3 })
        );
    }

    #[test]
    fn an_answer_outside_the_range_asked_for_is_not_written() {
        for bad in [[10, 12], [12, 31]] {
            let mut f = fetch(10, 30);
            f.start();
            f.on_state(2, &h(&[(1, 0), (2, 5)]));
            assert_eq!(
                records(&mut f, &bad),
                FetchStep::Done(FetchEnd::OutOfRange {
                    after: Lsn(10),
                    upto: Lsn(30)
                })
            );
        }
    }

    #[test]
    fn an_empty_answer_or_a_refused_repair_ends_the_fetch() {
        let mut f = fetch(10, 30);
        f.start();
        f.on_state(2, &h(&[(1, 0), (2, 5)]));
        assert_eq!(records(&mut f, &[]), FetchStep::Done(FetchEnd::NothingMore));
        let mut f = fetch(10, 30);
        f.start();
        f.on_state(2, &h(&[(1, 0), (2, 5)]));
        records(&mut f, &[11]);
        assert_eq!(
            f.on_repaired(Err("fenced".into())),
            FetchStep::Done(FetchEnd::RepairRefused {
                reason: "fenced".into()
            })
        );
        assert_eq!(f.after(), Lsn(10));
    }

    #[test]
    fn a_trimmed_peers_trim_point_is_adopted_and_the_fetch_goes_on_from_our_new_scl() {
        let mut f = fetch(10, 30);
        f.start();
        f.on_state(2, &h(&[(1, 0), (2, 5)]));
        let point = TrimPoint {
            base: Lsn(20),
            last_cpl: Lsn(18),
        };
        assert_eq!(
            f.on_trimmed(Lsn(20), Lsn(18)),
            FetchStep::AdoptTrim {
                point,
                peer_scl: Lsn(30)
            }
        );
        let adopted = AdoptOutcome::Adopted {
            base: Lsn(20),
            last_cpl: Lsn(18),
            old_scl: Lsn(10),
            scl: Lsn(22),
            dropped: 3,
        };
        assert_eq!(f.on_adopted(Ok(adopted)), read(22, 30));
        // Not behind any more, but filled above where we were: go on from there.
        f.on_trimmed(Lsn(24), Lsn(24));
        assert_eq!(
            f.on_adopted(Ok(AdoptOutcome::NotBehind { scl: Lsn(26) })),
            read(26, 30)
        );
    }

    #[test]
    fn a_trim_point_not_adopted_ends_the_fetch() {
        let start = || {
            let mut f = fetch(10, 30);
            f.start();
            f.on_state(2, &h(&[(1, 0), (2, 5)]));
            f
        };
        let not_adopted = |base: u64, last_cpl: u64, reason: &str| {
            FetchStep::Done(FetchEnd::TrimNotAdopted {
                after: Lsn(10),
                base: Lsn(base),
                last_cpl: Lsn(last_cpl),
                reason: reason.into(),
            })
        };
        // A refusal no control file could hold: a CPL above the base.
        assert_eq!(
            start().on_trimmed(Lsn(20), Lsn(21)),
            not_adopted(
                20,
                21,
                "the refusal names no trim point a control file could hold"
            )
        );
        let mut f = start();
        f.on_trimmed(Lsn(20), Lsn(18));
        assert_eq!(
            f.on_adopted(Err("other epoch".into())),
            not_adopted(20, 18, "other epoch")
        );
        let mut f = start();
        f.on_trimmed(Lsn(20), Lsn(18));
        assert_eq!(
            f.on_adopted(Ok(AdoptOutcome::NotBehind { scl: Lsn(10) })),
            not_adopted(20, 18, "its trim point 20 is not above our SCL 10")
        );
    }

    #[test]
    fn a_round_reads_at_most_its_budget() {
        let mut f = fetch(0, 1000);
        f.start();
        let mut step = f.on_state(2, &h(&[(1, 0), (2, 5)]));
        let mut lsn = 0;
        while let FetchStep::Read { .. } = step {
            lsn += 1;
            records(&mut f, &[lsn]);
            step = f.on_repaired(Ok(()));
        }
        assert_eq!(step, FetchStep::Done(FetchEnd::RoundBudgetSpent));
        assert_eq!(f.reads(), FETCHES_PER_SEGMENT_PER_ROUND_MAX);
        assert_eq!(f.after(), Lsn(FETCHES_PER_SEGMENT_PER_ROUND_MAX as u64));
    }

    #[test]
    #[should_panic(expected = "driver bug")]
    fn an_answer_nobody_asked_for_is_a_driver_bug() {
        let mut f = fetch(10, 30);
        f.start();
        records(&mut f, &[12]);
    }
}
