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
//! 1. In a gossip round where all but at most [`SILENT_PEERS_MAX`] peers answered (and at least
//!    [`READ_QUORUM`] of them, or all when it has fewer peers), it takes as
//!    **targets**, per segment of its groups, the newest epoch the peers report and the highest SCL
//!    reported in it.
//! 2. It is rebuilt when, for every target, its own epoch is at least the target's and its SCL at
//!    least the target SCL.
//!
//! **Why that is enough.** A record it acknowledged before the loss and that became durable is
//! held, complete, by at least 3 other members of the group (4 held it, this one lost it), so
//! their SCLs are at or above it (SCLs never fall below a durable point). A group has five
//! members besides this one and at most two of them are silent, so at least three answered, and
//! 3 of 5 always include one of the three holders: the target is at or above the record. A record
//! acknowledged after the restart is held because it arrived here. Targets move to a newer epoch
//! when the peers report one (a recovery happened meanwhile; its truncation never reaches a
//! durable record), and a segment no answering peer reports any more (its tenant was deleted) is
//! dropped. Two disks of one group replaced before the first is rebuilt are two failures of data,
//! outside the failure model (docs/design.md §6).

use crate::gossip::{shares_line, Membership};
use crate::store::LocalTenant;
use borealis_core::quorum::{PG_MEMBERS, READ_QUORUM};
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_wire::SegmentSummary;
use std::collections::BTreeMap;

/// Written by `borealis up` into a new safekeeper's data directory: "this node is new, it never
/// acknowledged anything". Removed once the log exists.
pub const NEW_NODE_MARKER: &str = "new-node";
/// Present while the safekeeper is rebuilding after its disk was replaced.
pub const REBUILDING_MARKER: &str = "rebuilding";
/// Peers that may stay silent in the round that sets the targets: with at most this many
/// silent, every group keeps [`READ_QUORUM`] answering members besides this one.
pub const SILENT_PEERS_MAX: usize = PG_MEMBERS - 1 - READ_QUORUM;

/// Per segment (of a tenant): the epoch and the SCL a rebuilding node must reach.
pub type Targets = BTreeMap<(TenantId, SegmentId), (u64, Lsn)>;

/// What a rebuilding safekeeper must hold again before it is a witness (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rebuild {
    /// Per segment of this node's groups: the epoch and SCL to reach; `None` until a round
    /// with enough answers.
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
    /// whether the node is rebuilt.
    pub fn on_round(
        &mut self,
        local: &BTreeMap<TenantId, LocalTenant>,
        summaries: &[Option<Vec<SegmentSummary>>],
        pool: Option<&Membership>,
    ) -> bool {
        let answered = summaries.iter().filter(|s| s.is_some()).count();
        // All but two (so every group keeps three answering members besides this node), and
        // never fewer than three, or all of them when there are fewer peers than that.
        let enough = answered + SILENT_PEERS_MAX >= summaries.len()
            && answered >= READ_QUORUM.min(summaries.len());
        if enough {
            let mut reported = Targets::new();
            for (peer, summary) in summaries.iter().enumerate() {
                for line in summary.iter().flatten() {
                    if !shares_line(pool, peer, line) {
                        continue;
                    }
                    let t = reported
                        .entry((line.tenant, line.segment))
                        .or_insert((line.epoch, line.scl));
                    if (line.epoch, line.scl) > *t {
                        *t = (line.epoch, line.scl);
                    }
                }
            }
            match &mut self.targets {
                None => self.targets = Some(reported),
                Some(targets) => {
                    targets.retain(|key, _| reported.contains_key(key));
                    for (key, target) in targets.iter_mut() {
                        let now = reported[key];
                        if now.0 > target.0 {
                            *target = now;
                        }
                    }
                }
            }
        }
        let Some(targets) = &self.targets else {
            return false;
        };
        targets.iter().all(|((tenant, segment), &(epoch, scl))| {
            local.get(tenant).is_some_and(|ours| {
                ours.epoch >= epoch && ours.scl.get(segment).copied().unwrap_or(Lsn::INVALID) >= scl
            })
        })
    }
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
        // Two silent: targets are the highest SCL of the newest epoch.
        let enough = vec![
            Some(vec![line(0, 3, 50), line(1, 3, 9)]),
            Some(vec![line(0, 3, 70)]),
            Some(vec![line(0, 2, 90)]),
            None,
            None,
        ];
        assert!(!r.on_round(&local(3, &[(0, 69), (1, 9)]), &enough, None));
        assert_eq!(r.targets().unwrap()[&(T, SegmentId(0))], (3, Lsn(70)));
        // The targets stay where they were set, while the peers move on.
        let later = vec![Some(vec![line(0, 3, 99), line(1, 3, 20)]); 5];
        assert!(r.on_round(&local(3, &[(0, 70), (1, 9)]), &later, None));
    }

    #[test]
    fn a_node_that_knows_nothing_yet_is_not_rebuilt() {
        let mut r = Rebuild::new();
        let all = vec![Some(vec![line(0, 1, 5)]); 5];
        assert!(
            !r.on_round(&BTreeMap::new(), &all, None),
            "tenant unknown here"
        );
        assert!(!r.on_round(&local(0, &[]), &all, None), "epoch not adopted");
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
    fn targets_follow_a_newer_epoch_and_forget_deleted_tenants() {
        let mut r = Rebuild::new();
        let first = vec![Some(vec![line(0, 2, 40), line(1, 2, 8)]); 5];
        assert!(!r.on_round(&local(2, &[]), &first, None));
        // A recovery: the peers are at epoch 3 now, truncated to 30; segment 1 is gone.
        let after = vec![Some(vec![line(0, 3, 30)]); 5];
        assert!(r.on_round(&local(3, &[(0, 30)]), &after, None));
        assert_eq!(
            r.targets().unwrap().clone(),
            BTreeMap::from([((T, SegmentId(0)), (3, Lsn(30)))])
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
        assert!(!r_on(&pool, &all, &local(1, &[])));
        assert!(r_on(&pool, &all, &local(1, &[(mine.0, 10)])));
        fn r_on(
            pool: &Membership,
            all: &[Option<Vec<SegmentSummary>>],
            l: &BTreeMap<TenantId, LocalTenant>,
        ) -> bool {
            Rebuild::new().on_round(l, all, Some(pool))
        }
    }
}
