//! Recovery: where a new writer starts, computed from a read quorum of member reports.
//!
//! 1. Ask every member for its state (epoch, and per segment: SCL and the last CPL at or below
//!    it). At least [`READ_QUORUM`] must answer.
//! 2. [`plan`]: the new epoch is one above every epoch seen. Every durable record is held by 4
//!    members, so at least one of any 3 holds it *and everything before it in its segment* (acks
//!    carry SCLs, which count only complete chains). The source is the member whose log is the
//!    newest: highest epoch of its last record ([`last_log_epoch`]), then highest SCL. (A long
//!    log of an old writer may hold records a later epoch truncated everywhere else; comparing SCLs
//!    alone would resurrect them.) The VDL is the source's last CPL at or below its SCL. Records
//!    above the VDL were never acknowledged to anyone.
//! 3. The driver installs the epoch with `Hello { epoch, epoch_start_lsn: vdl }` on every member
//!    it reaches (each truncates above the VDL), and waits until a write quorum holds the log up
//!    to the VDL ([`is_durable`]); members short of it fill the gap from their peers by gossip.
//!    Only then does the new writer serve: otherwise a record only one member held could be
//!    shown to a client and be lost in the next recovery.
//!
//! Nothing here depends on how long the log is: recovery reads states, not records.
//!
//! Volumes are recovered one segment deep for now: with several segments the highest CPL whose
//! every earlier record exists needs a volume-wide backlink (docs/rfcs/0002).

use borealis_core::history::{last_log_epoch, prefix_for, EpochStart};
use borealis_core::quorum::{PG_MEMBERS, READ_QUORUM, WRITE_QUORUM};
use borealis_core::{Lsn, SegmentId};
use std::collections::BTreeMap;
use thiserror::Error;

/// What one member reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberReport {
    pub member: usize,
    pub epoch: u64,
    /// The history of the member's epoch (empty before its first epoch).
    pub history: Vec<EpochStart>,
    /// `(segment, scl, last_cpl)` for every segment the member holds.
    pub segments: Vec<(SegmentId, Lsn, Lsn)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    pub epoch: u64,
    pub vdl: Lsn,
    /// The new writer's epoch history, ending with `(epoch, vdl)`: what every member it reaches
    /// aligns its log to (`borealis_core::history::truncation_point`).
    pub history: Vec<EpochStart>,
    /// Last record of each segment at or below the VDL.
    pub segment_tails: BTreeMap<SegmentId, Lsn>,
    /// The member that holds the complete log up to the VDL.
    pub source_member: Option<usize>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecoveryError {
    #[error("only {0} of {PG_MEMBERS} safekeepers answered, {READ_QUORUM} needed to recover")]
    NoReadQuorum(usize),
    #[error("a member reports epoch {0}: no epoch is left above it for a new writer")]
    EpochsExhausted(u64),
    #[error("the volume has {0} segments; recovery of more than one is not supported yet")]
    MultiSegment(usize),
}

pub fn plan(reports: &[MemberReport]) -> Result<RecoveryPlan, RecoveryError> {
    let mut members: Vec<usize> = reports.iter().map(|r| r.member).collect();
    members.sort_unstable();
    members.dedup();
    if members.len() < READ_QUORUM {
        return Err(RecoveryError::NoReadQuorum(members.len()));
    }
    let highest = reports.iter().map(|r| r.epoch).max().unwrap_or(0);
    let epoch = highest
        .checked_add(1)
        .ok_or(RecoveryError::EpochsExhausted(highest))?;
    let mut segments: Vec<SegmentId> = reports
        .iter()
        .flat_map(|r| r.segments.iter().map(|s| s.0))
        .collect();
    segments.sort_unstable();
    segments.dedup();
    match segments.as_slice() {
        [] => {
            // Nothing was ever written; keep the newest history anyone has, for the record.
            Ok(RecoveryPlan {
                epoch,
                vdl: Lsn::INVALID,
                history: vec![EpochStart {
                    epoch,
                    start: Lsn::INVALID,
                }],
                segment_tails: BTreeMap::new(),
                source_member: None,
            })
        }
        [segment] => {
            let best = reports
                .iter()
                .filter_map(|r| {
                    let s = r.segments.iter().find(|s| s.0 == *segment)?;
                    Some((r, s.1, s.2))
                })
                .max_by_key(|&(r, scl, _)| (last_log_epoch(&r.history, scl), scl))
                .expect("a listed segment has a reporter");
            let (source, scl, last_cpl) = best;
            assert!(
                last_cpl <= scl,
                "member {} reports a CPL above its SCL",
                source.member
            );
            let mut history = prefix_for(&source.history, scl);
            assert!(
                history.last().is_none_or(|e| e.start <= last_cpl),
                "an epoch start is a consistency point, so the last CPL is at or above it"
            );
            history.push(EpochStart {
                epoch,
                start: last_cpl,
            });
            let mut tails = BTreeMap::new();
            if last_cpl.is_valid() {
                tails.insert(*segment, last_cpl);
            }
            Ok(RecoveryPlan {
                epoch,
                vdl: last_cpl,
                history,
                segment_tails: tails,
                source_member: Some(source.member),
            })
        }
        many => Err(RecoveryError::MultiSegment(many.len())),
    }
}

/// Whether a write quorum holds every segment up to its tail in `plan`, given each member's
/// SCLs after the new epoch was installed.
pub fn is_durable(plan: &RecoveryPlan, scls: &[(usize, SegmentId, Lsn)]) -> bool {
    tails_durable(&plan.segment_tails, scls)
}

/// Whether, for every segment of `segment_tails`, a write quorum of its group (`scls`: member
/// index in the segment's group, segment, SCL) holds it up to its tail.
pub(crate) fn tails_durable(
    segment_tails: &BTreeMap<SegmentId, Lsn>,
    scls: &[(usize, SegmentId, Lsn)],
) -> bool {
    segment_tails.iter().all(|(segment, tail)| {
        let mut holders = [false; PG_MEMBERS];
        for &(m, s, scl) in scls {
            if s == *segment && scl >= *tail && m < PG_MEMBERS {
                holders[m] = true;
            }
        }
        holders.iter().filter(|h| **h).count() >= WRITE_QUORUM
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(member: usize, epoch: u64, scl: u64, cpl: u64) -> MemberReport {
        let history = (1..=epoch)
            .map(|e| EpochStart {
                epoch: e,
                start: Lsn(0),
            })
            .collect();
        MemberReport {
            member,
            epoch,
            history,
            segments: vec![(SegmentId(0), Lsn(scl), Lsn(cpl))],
        }
    }

    #[test]
    fn needs_a_read_quorum() {
        assert_eq!(
            plan(&[rep(0, 1, 5, 5), rep(1, 1, 5, 5)]),
            Err(RecoveryError::NoReadQuorum(2))
        );
        assert_eq!(
            plan(&[rep(0, 1, 5, 5), rep(0, 1, 5, 5), rep(1, 1, 5, 5)]),
            Err(RecoveryError::NoReadQuorum(2))
        );
    }

    #[test]
    fn empty_volume_starts_at_zero_in_epoch_one() {
        let reports: Vec<_> = (0..3)
            .map(|m| MemberReport {
                member: m,
                epoch: 0,
                history: vec![],
                segments: vec![],
            })
            .collect();
        let p = plan(&reports).unwrap();
        assert_eq!((p.epoch, p.vdl), (1, Lsn(0)));
    }

    #[test]
    fn an_exhausted_epoch_space_is_an_error_not_an_overflow() {
        let reports: Vec<_> = (0..3)
            .map(|m| MemberReport {
                member: m,
                epoch: u64::MAX,
                history: vec![],
                segments: vec![],
            })
            .collect();
        assert_eq!(
            plan(&reports),
            Err(RecoveryError::EpochsExhausted(u64::MAX))
        );
    }

    #[test]
    fn picks_the_highest_complete_cpl_not_the_highest_lsn() {
        // Member 3 holds records up to 20 but has a hole at 12: its SCL is 11 (reported as such
        // by the safekeeper, which counts only complete chains). Member 1 holds everything to 17,
        // whose last CPL is 15. Records 16-17 belong to an MTR that never completed.
        let p = plan(&[rep(0, 2, 9, 9), rep(1, 2, 17, 15), rep(3, 2, 11, 10)]).unwrap();
        assert_eq!(p.vdl, Lsn(15));
        assert_eq!(p.epoch, 3);
        assert_eq!(p.source_member, Some(1));
        assert_eq!(p.segment_tails[&SegmentId(0)], Lsn(15));
        assert_eq!(
            p.history.last(),
            Some(&EpochStart {
                epoch: 3,
                start: Lsn(15)
            })
        );
    }

    #[test]
    fn a_newer_epochs_shorter_log_beats_an_old_writers_longer_one() {
        // Member 0 holds 1..9 written by epoch 1 and never made durable; epoch 2 started at 0
        // without it and wrote 1..4 durably on members 1..4.
        let old = MemberReport {
            member: 0,
            epoch: 1,
            history: vec![EpochStart {
                epoch: 1,
                start: Lsn(0),
            }],
            segments: vec![(SegmentId(0), Lsn(9), Lsn(9))],
        };
        let new = |m| MemberReport {
            member: m,
            epoch: 2,
            history: vec![
                EpochStart {
                    epoch: 1,
                    start: Lsn(0),
                },
                EpochStart {
                    epoch: 2,
                    start: Lsn(0),
                },
            ],
            segments: vec![(SegmentId(0), Lsn(4), Lsn(4))],
        };
        let p = plan(&[old, new(1), new(2)]).unwrap();
        assert_eq!(p.vdl, Lsn(4));
        assert!(
            matches!(p.source_member, Some(1 | 2)),
            "{:?}",
            p.source_member
        );
        assert_eq!(
            p.history,
            vec![
                EpochStart {
                    epoch: 1,
                    start: Lsn(0)
                },
                EpochStart {
                    epoch: 2,
                    start: Lsn(0)
                },
                EpochStart {
                    epoch: 3,
                    start: Lsn(4)
                }
            ]
        );
    }

    #[test]
    fn durable_only_when_four_members_hold_the_tail() {
        let p = plan(&[rep(0, 1, 15, 15), rep(1, 1, 10, 10), rep(2, 1, 15, 15)]).unwrap();
        let s = SegmentId(0);
        let mut scls = vec![
            (0, s, Lsn(15)),
            (1, s, Lsn(10)),
            (2, s, Lsn(15)),
            (4, s, Lsn(15)),
        ];
        assert!(!is_durable(&p, &scls));
        scls.push((5, s, Lsn(15)));
        assert!(is_durable(&p, &scls));
    }

    #[test]
    fn multi_segment_volumes_are_refused_not_guessed() {
        let mut r = rep(0, 1, 5, 5);
        r.segments.push((SegmentId(1), Lsn(4), Lsn(0)));
        assert_eq!(
            plan(&[r, rep(1, 1, 5, 5), rep(2, 1, 5, 5)]),
            Err(RecoveryError::MultiSegment(2))
        );
    }
}
