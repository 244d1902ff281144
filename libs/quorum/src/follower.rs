//! How far a follower (a pageserver) has applied a segment's log, and what a safekeeper's answers
//! prove (sans-IO).
//!
//! A follower reads a segment's log from one safekeeper at a time with
//! `ReadLog { after: caught_up_to, upto: target }`, where `target` is at or below a VDL someone
//! vouched for, so every record it can get back is durable. [`plan_batch`] checks the answer and
//! says which records to apply and how far the segment is then known complete:
//!
//! - every record must be newer than the last one, at or below `upto`, of this segment, and
//!   **chain**: its `prev_lsn_segment` must be the LSN of the last record applied. A record that
//!   does not chain means the safekeeper has a hole (or worse); the records before it are still
//!   good, the rest of the answer is dropped and the follower turns to another safekeeper;
//! - an answer with no records proves that no record lies in `(after, min(upto, scl)]`: the
//!   safekeeper holds the segment completely up to its SCL and would have returned them. If
//!   `scl ≥ upto` the segment is caught up to `upto`; otherwise the safekeeper is *behind*;
//! - an answer with records proves completeness only up to its last record, because the
//!   safekeeper may have cut it at `max_bytes`; the next read starts from there.
//!
//! A safekeeper that is behind does not prove that nothing lies between its SCL and the target:
//! a segment with no record since may simply be idle. [`ProofTally`] counts `GetState` answers
//! instead: if a read quorum holds no record of the segment above `caught_up_to`, no durable
//! record lies in `(caught_up_to, target]` (every durable record is on a write quorum, and every
//! read quorum meets every write quorum).
//!
//! The cursor's invariant: every record of the segment at or below `caught_up_to` has been
//! applied, and `last_applied` (≤ `caught_up_to`) is the newest of them.
//!
//! The pageserver's follower (`pageserver/src/ingest.rs`, which re-exports this module as
//! `pageserver::segment_cursor`) and the protocol simulator's (`tests/src/sim`) drive it.

use borealis_core::quorum::{PG_MEMBERS, READ_QUORUM};
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId, SegmentLayout};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Every record of the segment at or below this LSN has been applied.
    pub caught_up_to: Lsn,
    /// The LSN of the newest record applied (`INVALID` before the first): the next record must
    /// name it as its `prev_lsn_segment`.
    pub last_applied: Lsn,
}

/// What is wrong with the safekeeper that answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceProblem {
    /// A record does not chain to the last one applied: the safekeeper misses records.
    Hole {
        lsn: Lsn,
        prev_lsn_segment: Lsn,
        expected: Lsn,
    },
    /// No records, and the safekeeper's SCL is below the target.
    Behind { scl: Lsn },
    /// The answer breaks the protocol (undecodable, out of order, out of range, wrong segment).
    Bad(String),
}

/// The records to apply and what the cursor becomes once they are.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub to_apply: Vec<RedoRecord>,
    /// `caught_up_to` once every record of `to_apply` is applied.
    pub caught_up_to: Lsn,
    pub problem: Option<SourceProblem>,
}

/// Checks the answer `records` (concatenated encodings) with `scl` to
/// `ReadLog { after: cursor.caught_up_to, upto }` for `segment`.
pub fn plan_batch(
    cursor: Cursor,
    layout: SegmentLayout,
    segment: SegmentId,
    upto: Lsn,
    records: &[u8],
    scl: Lsn,
) -> Plan {
    assert!(
        cursor.last_applied <= cursor.caught_up_to,
        "cursor invariant"
    );
    let mut to_apply: Vec<RedoRecord> = Vec::new();
    let mut last = cursor.last_applied;
    let mut newest = cursor.caught_up_to;
    let mut problem = None;
    let mut buf = records;
    while !buf.is_empty() {
        let (r, used) = match RedoRecord::decode(buf) {
            Ok(x) => x,
            Err(e) => {
                problem = Some(SourceProblem::Bad(format!("undecodable record: {e}")));
                break;
            }
        };
        buf = &buf[used..];
        if r.lsn <= newest || r.lsn > upto {
            problem = Some(SourceProblem::Bad(format!(
                "record at lsn {} outside ({newest}, {upto}]",
                r.lsn
            )));
            break;
        }
        if layout.segment_of(r.page_no) != segment {
            problem = Some(SourceProblem::Bad(format!(
                "record at lsn {} is for page {} of segment {}, not {segment}",
                r.lsn,
                r.page_no,
                layout.segment_of(r.page_no)
            )));
            break;
        }
        if r.prev_lsn_segment != last {
            problem = Some(SourceProblem::Hole {
                lsn: r.lsn,
                prev_lsn_segment: r.prev_lsn_segment,
                expected: last,
            });
            break;
        }
        last = r.lsn;
        newest = r.lsn;
        to_apply.push(r);
    }
    let caught_up_to = if problem.is_some() || !to_apply.is_empty() {
        // Complete only up to the last good record (the answer may have been cut short).
        newest
    } else if scl >= upto {
        upto
    } else {
        problem = Some(SourceProblem::Behind { scl });
        // Still, nothing lies in (after, scl].
        cursor.caught_up_to.max(scl)
    };
    Plan {
        to_apply,
        caught_up_to,
        problem,
    }
}

impl Cursor {
    /// Records the outcome of a plan of which the first `applied` records were applied.
    pub fn commit(&mut self, plan: &Plan, applied: usize) {
        assert!(applied <= plan.to_apply.len(), "applied more than planned");
        let before = *self;
        if let Some(last) = applied.checked_sub(1).map(|i| plan.to_apply[i].lsn) {
            self.last_applied = last;
        }
        self.caught_up_to = if applied == plan.to_apply.len() {
            self.caught_up_to.max(plan.caught_up_to)
        } else {
            self.caught_up_to.max(self.last_applied)
        };
        assert!(
            self.caught_up_to >= before.caught_up_to,
            "caught_up_to went backwards"
        );
        assert!(self.last_applied <= self.caught_up_to, "cursor invariant");
    }

    /// Another proof (a read quorum holding nothing newer) that the segment is complete to `lsn`.
    pub fn prove_complete(&mut self, lsn: Lsn) {
        self.caught_up_to = self.caught_up_to.max(lsn);
    }
}

/// Safekeepers that must hold nothing newer to prove a segment complete (see the module docs).
pub fn proof_quorum(safekeepers: usize) -> usize {
    if safekeepers == PG_MEMBERS {
        READ_QUORUM
    } else {
        safekeepers
    }
}

/// What one safekeeper's `GetState` says it holds of the segment a proof is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldSegment {
    pub scl: Lsn,
    /// The highest LSN it holds, complete or not.
    pub end_lsn: Lsn,
}

/// Counts `GetState` answers towards proving that a segment has no durable record in
/// `(caught, target]` (see the module docs).
#[derive(Debug)]
pub struct ProofTally {
    caught: Lsn,
    target: Lsn,
    quorum: usize,
    /// Safekeepers that hold no record of the segment above `caught`.
    holding_nothing_newer: usize,
    /// A safekeeper holding the segment completely up to `target`, if any answered.
    pub complete_source: Option<usize>,
}

impl ProofTally {
    pub fn new(caught: Lsn, target: Lsn, quorum: usize) -> ProofTally {
        assert!(quorum >= 1, "a proof needs at least one answer");
        ProofTally {
            caught,
            target,
            quorum,
            holding_nothing_newer: 0,
            complete_source: None,
        }
    }

    /// Safekeeper `index` answered; `held` is what it holds of the segment (`None`: nothing).
    pub fn add(&mut self, index: usize, held: Option<HeldSegment>) {
        match held {
            None => self.holding_nothing_newer += 1,
            Some(s) => {
                if s.end_lsn <= self.caught {
                    self.holding_nothing_newer += 1;
                }
                if s.scl >= self.target && self.complete_source.is_none() {
                    self.complete_source = Some(index);
                }
            }
        }
    }

    pub fn proven(&self) -> bool {
        self.holding_nothing_newer >= self.quorum
    }

    /// What the proof is about: no durable record in `(caught, target]`.
    pub fn range(&self) -> (Lsn, Lsn) {
        (self.caught, self.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::redo::RedoBody;
    use borealis_core::{PageNo, PAGE_SIZE_BYTES};

    const SEG: SegmentId = SegmentId(0);

    fn layout() -> SegmentLayout {
        SegmentLayout::new(4)
    }

    fn rec(lsn: u64, prev: u64, page: u32) -> RedoRecord {
        RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(prev),
            prev_lsn_page: Lsn::INVALID,
            page_no: PageNo(page),
            is_cpl: true,
            body: RedoBody::Image(vec![lsn as u8; PAGE_SIZE_BYTES]),
        }
    }

    fn enc(rs: &[RedoRecord]) -> Vec<u8> {
        let mut out = Vec::new();
        rs.iter().for_each(|r| r.encode_into(&mut out));
        out
    }

    fn lsns(p: &Plan) -> Vec<u64> {
        p.to_apply.iter().map(|r| r.lsn.0).collect()
    }

    #[test]
    fn a_chained_answer_is_applied_and_proves_up_to_its_last_record() {
        let c = Cursor::default();
        let p = plan_batch(
            c,
            layout(),
            SEG,
            Lsn(20),
            &enc(&[rec(3, 0, 1), rec(7, 3, 2)]),
            Lsn(30),
        );
        assert_eq!(lsns(&p), [3, 7]);
        assert_eq!((p.caught_up_to, p.problem.clone()), (Lsn(7), None));
        let mut c = c;
        c.commit(&p, 2);
        assert_eq!(
            c,
            Cursor {
                caught_up_to: Lsn(7),
                last_applied: Lsn(7)
            }
        );
        // Nothing more up to 20 and an SCL beyond: caught up to 20, though the last record is 7.
        let p = plan_batch(c, layout(), SEG, Lsn(20), &[], Lsn(25));
        assert_eq!((p.caught_up_to, p.problem.clone()), (Lsn(20), None));
        c.commit(&p, 0);
        assert_eq!(
            c,
            Cursor {
                caught_up_to: Lsn(20),
                last_applied: Lsn(7)
            }
        );
        // The next record chains to 7 even though the read starts after 20.
        let p = plan_batch(c, layout(), SEG, Lsn(40), &enc(&[rec(33, 7, 0)]), Lsn(40));
        assert_eq!((lsns(&p), p.problem), (vec![33], None));
    }

    #[test]
    fn a_hole_keeps_the_good_prefix_and_blames_the_source() {
        let c = Cursor::default();
        let p = plan_batch(
            c,
            layout(),
            SEG,
            Lsn(20),
            &enc(&[rec(3, 0, 1), rec(9, 7, 2)]),
            Lsn(30),
        );
        assert_eq!(lsns(&p), [3]);
        assert_eq!(p.caught_up_to, Lsn(3));
        assert_eq!(
            p.problem,
            Some(SourceProblem::Hole {
                lsn: Lsn(9),
                prev_lsn_segment: Lsn(7),
                expected: Lsn(3)
            })
        );
    }

    #[test]
    fn an_empty_answer_below_the_target_is_a_safekeeper_behind() {
        let c = Cursor {
            caught_up_to: Lsn(5),
            last_applied: Lsn(5),
        };
        let p = plan_batch(c, layout(), SEG, Lsn(20), &[], Lsn(12));
        assert_eq!(p.problem, Some(SourceProblem::Behind { scl: Lsn(12) }));
        assert_eq!(p.caught_up_to, Lsn(12), "nothing lies in (5, 12]");
        let p = plan_batch(c, layout(), SEG, Lsn(20), &[], Lsn(2));
        assert_eq!(p.caught_up_to, Lsn(5), "never backwards");
    }

    #[test]
    fn protocol_violations_are_refused() {
        let c = Cursor {
            caught_up_to: Lsn(5),
            last_applied: Lsn(5),
        };
        // At or below `after`.
        let p = plan_batch(c, layout(), SEG, Lsn(20), &enc(&[rec(5, 4, 1)]), Lsn(30));
        assert!(matches!(p.problem, Some(SourceProblem::Bad(_))) && p.to_apply.is_empty());
        // Above `upto`: never apply what nobody vouched for.
        let p = plan_batch(c, layout(), SEG, Lsn(20), &enc(&[rec(21, 5, 1)]), Lsn(30));
        assert!(matches!(p.problem, Some(SourceProblem::Bad(_))) && p.to_apply.is_empty());
        // Another segment's page.
        let p = plan_batch(c, layout(), SEG, Lsn(20), &enc(&[rec(6, 5, 9)]), Lsn(30));
        assert!(matches!(p.problem, Some(SourceProblem::Bad(_))));
        // A torn record after a good one.
        let mut bytes = enc(&[rec(6, 5, 1), rec(8, 6, 1)]);
        bytes.truncate(bytes.len() - 1);
        let p = plan_batch(c, layout(), SEG, Lsn(20), &bytes, Lsn(30));
        assert_eq!(lsns(&p), [6]);
        assert!(matches!(p.problem, Some(SourceProblem::Bad(_))));
        assert_eq!(p.caught_up_to, Lsn(6));
    }

    #[test]
    fn a_partly_applied_plan_proves_only_what_was_applied() {
        let c = Cursor::default();
        let p = plan_batch(
            c,
            layout(),
            SEG,
            Lsn(20),
            &enc(&[rec(3, 0, 1), rec(7, 3, 2)]),
            Lsn(30),
        );
        let mut c2 = c;
        c2.commit(&p, 1);
        assert_eq!(
            c2,
            Cursor {
                caught_up_to: Lsn(3),
                last_applied: Lsn(3)
            }
        );
        let mut c3 = c;
        c3.commit(&p, 0);
        assert_eq!(c3, c);
    }

    fn held(scl: u64, end_lsn: u64) -> Option<HeldSegment> {
        Some(HeldSegment {
            scl: Lsn(scl),
            end_lsn: Lsn(end_lsn),
        })
    }

    #[test]
    fn a_read_quorum_holding_nothing_newer_proves_the_segment_complete() {
        // Applied up to 10; is the segment complete up to 50?
        let mut t = ProofTally::new(Lsn(10), Lsn(50), 3);
        t.add(0, held(10, 10)); // its last record of the segment is 10
        t.add(1, None); // holds nothing of the segment at all
        assert!(!t.proven());
        t.add(2, held(12, 30)); // holds records above 10: counts against
        assert!(!t.proven());
        t.add(3, held(8, 9)); // behind, but holds nothing above 10 either
        assert!(t.proven());
        assert_eq!(t.complete_source, None);
        assert_eq!(t.range(), (Lsn(10), Lsn(50)));
    }

    #[test]
    fn a_safekeeper_complete_up_to_the_target_is_a_source_not_a_proof() {
        let mut t = ProofTally::new(Lsn(10), Lsn(50), 3);
        t.add(4, held(60, 70));
        t.add(5, held(55, 55));
        assert!(!t.proven());
        assert_eq!(t.complete_source, Some(4));
    }

    #[test]
    fn proof_needs_a_read_quorum_of_six_or_everyone_otherwise() {
        assert_eq!(proof_quorum(6), 3);
        assert_eq!(proof_quorum(1), 1);
        assert_eq!(proof_quorum(3), 3);
        assert_eq!(proof_quorum(7), 7);
    }
}
