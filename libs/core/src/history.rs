//! Epoch histories: which log a member may keep when a new writer's epoch reaches it.
//!
//! Every recovery starts a new epoch at the VDL it recovered (`(epoch, start)`). A writer's
//! **history** is the list of `(epoch, start)` of every epoch its log descends from, oldest first,
//! ending with its own. Each safekeeper keeps the history of the last epoch it accepted.
//!
//! Why a member needs the whole history and not just the new epoch's start: a member that was down
//! through an epoch may still hold records of an older writer that the missed epoch truncated
//! everywhere else — *below* the new epoch's start. Truncating above the new start alone would
//! keep them, and gossip (which skips LSNs already held) would then link the new history onto
//! stale records. (The simulator found exactly this; `tests/src/sim`, seed 260.) As in Neon's safekeepers'
//! term histories, the member keeps its log only up to the point where its history and the
//! writer's diverge ([`truncation_point`]).
//!
//! Recovery compares members by the epoch of the last record they hold ([`last_log_epoch`]), then
//! by SCL: a long log written by an old writer loses to a shorter one of a newer writer.

use crate::Lsn;
use serde::{Deserialize, Serialize};

/// The start of one epoch: records above `start` in this history were written by `epoch`'s writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochStart {
    pub epoch: u64,
    pub start: Lsn,
}

/// A history from `(epoch, start)` pairs, as tests and tools write one.
pub fn from_pairs(pairs: &[(u64, u64)]) -> Vec<EpochStart> {
    pairs
        .iter()
        .map(|&(epoch, start)| EpochStart {
            epoch,
            start: Lsn(start),
        })
        .collect()
}

/// Checks that a history is well formed: epochs strictly increasing.
pub fn is_valid(history: &[EpochStart]) -> bool {
    history.windows(2).all(|w| w[0].epoch < w[1].epoch) && history.iter().all(|e| e.epoch > 0)
}

/// The epoch whose writer wrote the record at `scl` (the last record of a complete log): the
/// latest epoch of `history` that started below `scl`; 0 for an empty log.
pub fn last_log_epoch(history: &[EpochStart], scl: Lsn) -> u64 {
    history
        .iter()
        .rev()
        .find(|e| e.start < scl)
        .map_or(0, |e| e.epoch)
}

/// The prefix of `history` that describes a log ending at `scl`: entries up to and including
/// the one of [`last_log_epoch`].
pub fn prefix_for(history: &[EpochStart], scl: Lsn) -> Vec<EpochStart> {
    match history.iter().rposition(|e| e.start < scl) {
        Some(i) => history[..=i].to_vec(),
        None => Vec::new(),
    }
}

/// How far a member whose log follows `member` may keep it when it adopts `writer`: every record
/// above the returned LSN must be truncated.
pub fn truncation_point(member: &[EpochStart], writer: &[EpochStart]) -> Lsn {
    let common = member
        .iter()
        .zip(writer)
        .take_while(|(a, b)| a == b)
        .count();
    if common == 0 {
        // No shared epoch: nothing the member holds is known to be in the writer's history.
        return Lsn::INVALID;
    }
    // The member's records are valid in the writer's history up to where either history moved on
    // after the last shared epoch.
    let writer_next = writer[common..].iter().map(|e| e.start).min();
    let member_next = member[common..].iter().map(|e| e.start).min();
    match (writer_next, member_next) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) => a,
        (None, Some(b)) => b,
        (None, None) => Lsn(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::from_pairs as h;

    #[test]
    fn a_member_that_missed_an_epoch_drops_what_it_truncated() {
        // Epoch 1 wrote 1..5 to this member only; epoch 2 started at 0 without it and wrote a new
        // 1..10; epoch 3 starts at 10. The member's 1..5 are not the history: keep nothing.
        let member = h(&[(1, 0)]);
        let writer = h(&[(1, 0), (2, 0), (3, 10)]);
        assert_eq!(truncation_point(&member, &writer), Lsn(0));
    }

    #[test]
    fn a_member_one_epoch_behind_keeps_up_to_the_new_start() {
        let member = h(&[(1, 0), (2, 7)]);
        let writer = h(&[(1, 0), (2, 7), (3, 20)]);
        assert_eq!(truncation_point(&member, &writer), Lsn(20));
    }

    #[test]
    fn a_member_of_an_abandoned_epoch_keeps_only_the_shared_part() {
        // Epoch 3 was installed on this member only (its recovery failed); epoch 4 descends from 2.
        let member = h(&[(1, 0), (2, 7), (3, 15)]);
        let writer = h(&[(1, 0), (2, 7), (4, 12)]);
        assert_eq!(truncation_point(&member, &writer), Lsn(12));
        let writer = h(&[(1, 0), (2, 7), (4, 30)]);
        assert_eq!(truncation_point(&member, &writer), Lsn(15));
    }

    #[test]
    fn a_member_with_no_history_keeps_nothing() {
        assert_eq!(truncation_point(&[], &h(&[(1, 0)])), Lsn(0));
    }

    #[test]
    fn last_log_epoch_is_the_writer_of_the_last_record() {
        let hist = h(&[(1, 0), (2, 5), (3, 10)]);
        assert_eq!(last_log_epoch(&hist, Lsn(0)), 0);
        assert_eq!(last_log_epoch(&hist, Lsn(3)), 1);
        assert_eq!(last_log_epoch(&hist, Lsn(5)), 1);
        assert_eq!(last_log_epoch(&hist, Lsn(6)), 2);
        assert_eq!(
            last_log_epoch(&hist, Lsn(10)),
            2,
            "epoch 3 wrote nothing yet"
        );
        assert_eq!(last_log_epoch(&hist, Lsn(11)), 3);
        assert_eq!(prefix_for(&hist, Lsn(10)), h(&[(1, 0), (2, 5)]));
        assert!(is_valid(&hist) && !is_valid(&h(&[(2, 0), (2, 3)])));
    }
}
