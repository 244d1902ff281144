//! A safekeeper whose disk was replaced is not a witness until it is rebuilt (sans-IO).
//!
//! **The hole this closes.** Two readers decide from *absence* what a protection group holds:
//! a pageserver proves a segment complete when a read quorum (3 of 6) answers `GetState` holding
//! no record above its cursor (`borealis_quorum::follower::ProofTally`), and a recovering writer
//! reads members' states to find the volume's end. Both rely on every answer being *true*: a
//! member that says "nothing above 12" has never acknowledged anything above 12. A member whose
//! disk was replaced breaks that. It acknowledged records, lost them, and now says "nothing".
//! Say record R is durable on A, B, C, D; A's disk is replaced and it starts empty; E and F never
//! got R (they were down): A, E and F are a read quorum holding "nothing above" R's segment's
//! cursor, and a pageserver would skip R for ever. The protocol simulator found exactly this once
//! it could replace a disk (`tests/src/sim`, "disk replaced").
//!
//! **The rule.** A safekeeper that starts on a data directory with no log, unless the directory
//! carries the [`NEW_NODE_MARKER`] that `borealis up` writes when it creates a cluster, is
//! **rebuilding** (a [`REBUILDING_MARKER`] file keeps it so across restarts). While rebuilding it
//! refuses `GetState` (`unavailable`), so no proof and no recovery counts it; it still accepts
//! appends, acknowledges only what it holds completely (its SCL is honest: a complete chain), and
//! gossips as usual. It stops rebuilding once [`Rebuild::on_round`] says so:
//!
//! 1. In every gossip round where all but at most [`SILENT_PEERS_MAX`] peers answered (and at
//!    least [`READ_QUORUM`] of them, or all when it has fewer peers), it takes as **targets**,
//!    per segment of its groups, the highest SCL any answering peer reports, in whatever epoch.
//! 2. It is rebuilt when its own SCL is at least every target of such a round (this one or an
//!    earlier one).
//!
//! **Why that is enough.** A record it acknowledged before the loss and that was durable then is
//! held, complete, by at least 3 other members of the group (4 held it, this one lost it), and
//! their SCLs stay at or above it in every later epoch (no recovery truncates a durable record).
//! A group has five members besides this one and at most two of them are silent, so at least
//! three answered, and 3 of 5 always include one of the three holders: every round's target is
//! at or above the record. SCLs are compared across epochs on purpose: the holder may still be at
//! an older epoch than members that already took a newer (failed) recovery's `Hello`, and this
//! node's complete chain up to a target at or above a durable record holds that record whatever
//! its epoch. A record that became durable only after the loss never counts this node's lost
//! copy: the writer takes what a member's `HelloOk` reports as its SCL when it reconnects, even
//! below what it acknowledged before (`QuorumWriter::member_state`), so such a record is on four
//! real copies. Targets are taken afresh every round, so a target set by a peer's tail that no
//! recovery kept falls once that peer is truncated. Two disks of one group replaced before the
//! first is rebuilt are two failures of data, outside the failure model (docs/design.md §6).
//!
//! **Not covered.** A data directory restored from an old backup, a tenant directory lost on its
//! own, or records lost to corruption other than a torn tail still answer as if they were whole;
//! and `--peers` must list every other member of the node's groups (`borealis up` lists the whole
//! pool), or a silent group member goes uncounted.

use crate::pool::{shares_line, Membership};
use crate::store::LocalTenant;
use borealis_core::quorum::{PG_MEMBERS, READ_QUORUM};
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_wire::SegmentSummary;
use std::collections::BTreeMap;

pub use crate::store::{NEW_NODE_MARKER, REBUILDING_MARKER};
/// Peers that may stay silent in the round that sets the targets: with at most this many
/// silent, every group keeps [`READ_QUORUM`] answering members besides this one.
pub const SILENT_PEERS_MAX: usize = PG_MEMBERS - 1 - READ_QUORUM;

/// Per segment (of a tenant): the SCL a rebuilding node must reach.
pub type Targets = BTreeMap<(TenantId, SegmentId), Lsn>;

/// What a rebuilding safekeeper must hold again before it is a witness (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuild {
    /// The targets of the last round in which enough peers answered; `None` before the first.
    targets: Option<Targets>,
}

impl Rebuild {
    pub fn new() -> Rebuild {
        Rebuild::default()
    }

    /// The targets, once set.
    pub fn targets(&self) -> Option<&Targets> {
        self.targets.as_ref()
    }

    /// One gossip round: `local` is this node's view, `summaries[i]` peer `i`'s answer (`None`:
    /// no answer), `pool` places this node and its peers as for `plan_round_placed`. Returns
    /// whether the node is rebuilt: it holds the targets of an earlier round, or of this one if
    /// enough peers answered (every such round's targets are safe, see the module docs; taking
    /// the earlier ones too lets a node under load, a little behind its peers at every instant,
    /// finish).
    pub fn on_round(
        &mut self,
        local: &BTreeMap<TenantId, LocalTenant>,
        summaries: &[Option<Vec<SegmentSummary>>],
        pool: Option<&Membership>,
    ) -> bool {
        if self.targets.as_ref().is_some_and(|t| reached(local, t)) {
            return true;
        }
        let answered = summaries.iter().filter(|s| s.is_some()).count();
        // All but two (so every group keeps three answering members besides this node), and
        // never fewer than three, or all of them when there are fewer peers than that.
        let enough = answered + SILENT_PEERS_MAX >= summaries.len()
            && answered >= READ_QUORUM.min(summaries.len());
        if !enough {
            return false;
        }
        let mut targets = Targets::new();
        for (peer, summary) in summaries.iter().enumerate() {
            for line in summary.iter().flatten() {
                if shares_line(pool, peer, line) {
                    let t = targets.entry((line.tenant, line.segment)).or_default();
                    *t = (*t).max(line.scl);
                }
            }
        }
        // A first round that finds nothing to hold (a new cluster, an idle one) is done at once.
        let done = reached(local, &targets);
        self.targets = Some(targets);
        done
    }
}

/// Whether `local` holds every segment of `targets` up to its target SCL.
fn reached(local: &BTreeMap<TenantId, LocalTenant>, targets: &Targets) -> bool {
    targets.iter().all(|((tenant, segment), &scl)| {
        local
            .get(tenant)
            .is_some_and(|ours| ours.scl.get(segment).copied().unwrap_or(Lsn::INVALID) >= scl)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: TenantId = TenantId(7);

    fn line(segment: u32, epoch: u64, scl: u64) -> SegmentSummary {
        SegmentSummary {
            tenant: T,
            segment: SegmentId(segment),
            epoch,
            scl: Lsn(scl),
        }
    }

    fn local(epoch: u64, scls: &[(u32, u64)]) -> BTreeMap<TenantId, LocalTenant> {
        BTreeMap::from([(
            T,
            LocalTenant {
                epoch,
                scl: scls.iter().map(|&(s, l)| (SegmentId(s), Lsn(l))).collect(),
            },
        )])
    }

    #[test]
    fn waits_for_enough_peers_then_for_their_highest_scl() {
        let mut r = Rebuild::new();
        // Three of five silent: too few to know what was durable.
        let few = vec![Some(vec![line(0, 3, 50)]), Some(vec![]), None, None, None];
        assert!(!r.on_round(&local(0, &[]), &few, None));
        assert!(r.targets().is_none());
        // Two silent: targets are the highest SCL reported, whatever its epoch (a holder may
        // still be at an older epoch than members a failed recovery reached).
        let enough = vec![
            Some(vec![line(0, 3, 50), line(1, 3, 9)]),
            Some(vec![line(0, 3, 70)]),
            Some(vec![line(0, 2, 90)]),
            None,
            None,
        ];
        assert!(!r.on_round(&local(3, &[(0, 89), (1, 9)]), &enough, None));
        assert_eq!(r.targets().unwrap()[&(T, SegmentId(0))], Lsn(90));
        // Reached in a later round, while the peers moved on.
        let later = vec![Some(vec![line(0, 3, 99), line(1, 3, 20)]); 5];
        assert!(r.on_round(&local(3, &[(0, 90), (1, 9)]), &later, None));
    }

    #[test]
    fn a_node_that_knows_nothing_yet_is_not_rebuilt() {
        let all = vec![Some(vec![line(0, 1, 5)]); 5];
        let mut r = Rebuild::new();
        assert!(
            !r.on_round(&BTreeMap::new(), &all, None),
            "tenant unknown here"
        );
        assert!(!r.on_round(&local(0, &[]), &all, None), "nothing held");
        assert!(
            !r.on_round(&local(1, &[(0, 4)]), &all, None),
            "one record short"
        );
        assert!(r.on_round(&local(1, &[(0, 5)]), &all, None));
    }

    #[test]
    fn a_new_cluster_or_an_idle_one_rebuilds_at_the_first_round() {
        let mut r = Rebuild::new();
        assert!(r.on_round(&BTreeMap::new(), &vec![Some(vec![]); 5], None));
        let mut r = Rebuild::new();
        assert!(
            r.on_round(&BTreeMap::new(), &[], None),
            "no peers: nothing to learn"
        );
        // Two peers (a test's small group): both must answer.
        let mut r = Rebuild::new();
        assert!(!r.on_round(&BTreeMap::new(), &[Some(vec![]), None], None));
        assert!(r.on_round(&BTreeMap::new(), &[Some(vec![]), Some(vec![])], None));
    }

    #[test]
    fn targets_are_taken_afresh_so_a_tail_no_recovery_kept_stops_counting() {
        let mut r = Rebuild::new();
        // A peer still holds a tail of an old epoch up to 40 that the new epoch cut at 30.
        let first = vec![
            Some(vec![line(0, 2, 40), line(1, 2, 8)]),
            Some(vec![line(0, 3, 30)]),
            Some(vec![line(0, 3, 30)]),
            None,
            None,
        ];
        assert!(!r.on_round(&local(3, &[(0, 30)]), &first, None));
        // It took the new epoch and was truncated; segment 1's tenant part was deleted.
        let after = vec![Some(vec![line(0, 3, 30)]); 5];
        assert!(
            r.on_round(&local(3, &[(0, 30)]), &after, None),
            "40 is no target now"
        );
        assert_eq!(
            r.targets().unwrap().clone(),
            BTreeMap::from([((T, SegmentId(0)), Lsn(30))])
        );
    }

    #[test]
    fn only_lines_of_this_nodes_groups_set_targets() {
        // A pool of nine: node 0 and its eight peers. A segment whose group does not hold node 0
        // sets no target.
        let pool = Membership::of_nodes(9, 0, (1..9).collect()).unwrap();
        let azs = borealis_core::placement::ordered_pool_azs(9).unwrap();
        let (mine, other) = (0..64u32).map(SegmentId).fold((None, None), |(m, o), s| {
            let g = borealis_core::placement::choose_group(T, s, &azs);
            if g.contains(0) {
                (m.or(Some(s)), o)
            } else {
                (m, o.or(Some(s)))
            }
        });
        let (mine, other) = (mine.unwrap(), other.unwrap());
        let all = vec![Some(vec![line(mine.0, 1, 10), line(other.0, 1, 99)]); 8];
        let mut r = Rebuild::new();
        assert!(!r.on_round(&local(1, &[]), &all, Some(&pool)));
        assert!(r.on_round(&local(1, &[(mine.0, 10)]), &all, Some(&pool)));
    }
}
