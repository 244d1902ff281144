//! A segment's membership: one group of six, or two during a change (RFC 0012 §3).
//!
//! A protection group is six safekeepers, two per AZ ([`crate::placement::Group`]). To replace one
//! member F by a new node G without stopping writes or reads, the segment passes through a
//! **joint** configuration of two groups, O (the old six) and N (the old six with F swapped for G,
//! same AZ), where
//!
//! > a record is **durable** iff 4 of O **and** 4 of N hold it; a **read quorum** is 3 of O
//! > **and** 3 of N.
//!
//! There is deliberately no quorum over the seven nodes of O ∪ N: {A, B, F, G} is four of seven
//! (three of each group) and a read quorum of O, {C, D, E}, misses it. Why the joint state is
//! needed at all: two write quorums of O and of N always meet (each holds at least three of the
//! five shared nodes, 3 + 3 > 5), but a read quorum of 3 of O need not meet a write quorum of N,
//! and reads of 3 are what keep a segment readable with an AZ and one more node down. A joint read
//! quorum holds 3 of O, which meets every write quorum of O (3 + 4 > 6), and 3 of N, which meets
//! every write quorum of N — so it meets whatever a writer on the version before, during or after
//! the change counts by. The tests below check these claims exhaustively, over every subset of
//! the seven nodes.
//!
//! A change ends by [`Config::complete`] (stable on N, once G is filled) or [`Config::revert`]
//! (stable on O; no fill needed, since the joint state kept O's write quorum). Nothing here does
//! I/O; which version of the placement table holds which config is
//! the placement table's business (RFC 0012 §2).

use crate::placement::Group;
use crate::quorum::{quorum_value, MEMBERS_PER_AZ, PG_MEMBERS, READ_QUORUM, WRITE_QUORUM};
use crate::Lsn;

/// The voting configuration of one segment: a stable group, or the old and new groups of a
/// one-member change. Build it with [`Config::stable`] (or [`Config::try_stable`] for a group
/// read from outside) or [`Config::joint`], which check the shape; a `Config` in hand is always
/// well formed (six distinct nodes per group, at most seven voters, one swap, same AZ).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Config {
    old: Group,
    new: Option<Group>,
}

/// One member swapped: `out` leaves, `in` joins, both in `az` (0, 1, 2 for a, b, c).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Swap {
    pub out: usize,
    pub r#in: usize,
    pub az: usize,
}

impl Config {
    /// A segment that is not changing: the six of `group`. Panics if `group` is not six
    /// distinct nodes with each AZ pair ascending (a group computed by `placement` always is).
    pub fn stable(group: Group) -> Config {
        Config::try_stable(group).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Config::stable`] for a group that may be malformed (read from a table): refused so.
    pub fn try_stable(group: Group) -> Result<Config, String> {
        if !group.is_well_formed() {
            return Err(format!(
                "the group {:?} is not six distinct nodes with each AZ pair ascending",
                group.0
            ));
        }
        Ok(Config {
            old: group,
            new: None,
        })
    }

    /// A segment in the middle of replacing one member: `old` is the group before, `new` the
    /// group after. Refused unless both are groups of six distinct nodes with each AZ pair
    /// ascending, and `new` is `old` with exactly one node swapped for one of the same AZ.
    pub fn joint(old: Group, new: Group) -> Result<Config, String> {
        for (name, g) in [("old", &old), ("new", &new)] {
            if !g.is_well_formed() {
                return Err(format!(
                    "the {name} group {:?} is not six distinct nodes with each AZ pair ascending",
                    g.0
                ));
            }
        }
        let out: Vec<usize> = old
            .0
            .iter()
            .copied()
            .filter(|n| !new.contains(*n))
            .collect();
        let inn: Vec<usize> = new
            .0
            .iter()
            .copied()
            .filter(|n| !old.contains(*n))
            .collect();
        let ([out], [inn]) = (out.as_slice(), inn.as_slice()) else {
            return Err(format!(
                "a membership change swaps exactly one node: {:?} -> {:?} swaps {} out and {} in",
                old.0,
                new.0,
                out.len(),
                inn.len()
            ));
        };
        let az = |g: &Group, n: usize| g.member_of(n).map(|m| m / MEMBERS_PER_AZ);
        if let Some(&moved) = old
            .0
            .iter()
            .find(|&&n| new.contains(n) && az(&old, n) != az(&new, n))
        {
            return Err(format!(
                "node {moved} sits in another AZ's pair in {:?} than in {:?}",
                new.0, old.0
            ));
        }
        let az_out = old.member_of(*out).map(|m| m / MEMBERS_PER_AZ);
        let az_in = new.member_of(*inn).map(|m| m / MEMBERS_PER_AZ);
        if az_out != az_in {
            return Err(format!(
                "node {inn} would replace node {out} from another AZ ({az_in:?} for {az_out:?}): \
                 a group keeps two nodes in each AZ"
            ));
        }
        Ok(Config {
            old,
            new: Some(new),
        })
    }

    /// The group before the change (the only group when stable).
    pub fn old(&self) -> &Group {
        &self.old
    }

    pub fn is_joint(&self) -> bool {
        self.new.is_some()
    }

    /// The change in progress, if any.
    pub fn swap(&self) -> Option<Swap> {
        let new = self.new.as_ref()?;
        let out = *self.old.0.iter().find(|n| !new.contains(**n))?;
        let r#in = *new.0.iter().find(|n| !self.old.contains(**n))?;
        let az = self.old.member_of(out)? / MEMBERS_PER_AZ;
        Some(Swap { out, r#in, az })
    }

    /// The groups whose quorums count: one when stable, two when joint.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        std::iter::once(&self.old).chain(self.new.as_ref())
    }

    /// Every voter, ascending: six when stable, seven when joint.
    pub fn voters(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.groups().flat_map(|g| g.0).collect();
        v.sort_unstable();
        v.dedup();
        debug_assert_eq!(v.len(), PG_MEMBERS + usize::from(self.is_joint()));
        v
    }

    /// Whether `node` votes in this config (in O or in N).
    pub fn contains(&self, node: usize) -> bool {
        self.groups().any(|g| g.contains(node))
    }

    /// Whether the nodes for which `holds` is true are a write quorum: 4 of every group.
    pub fn is_write_quorum(&self, holds: impl Fn(usize) -> bool) -> bool {
        self.groups()
            .all(|g| g.0.iter().filter(|&&n| holds(n)).count() >= WRITE_QUORUM)
    }

    /// Whether the nodes for which `answered` is true are a read quorum: 3 of every group.
    pub fn is_read_quorum(&self, answered: impl Fn(usize) -> bool) -> bool {
        self.groups()
            .all(|g| g.0.iter().filter(|&&n| answered(n)).count() >= READ_QUORUM)
    }

    /// The highest LSN a write quorum holds complete, given each voter's SCL: per group the 4th
    /// highest SCL of its six, and the lowest of those over the groups.
    pub fn durable_point(&self, scl_of: impl Fn(usize) -> Lsn) -> Lsn {
        self.groups()
            .map(|g| {
                let scls = g.0.map(&scl_of);
                quorum_value(&scls, WRITE_QUORUM).expect("six values, quorum of four")
            })
            .min()
            .expect("at least one group")
    }

    /// The change done: stable on the new group. Refused when stable.
    pub fn complete(&self) -> Result<Config, String> {
        match self.new {
            Some(new) => Ok(Config::stable(new)),
            None => Err("no membership change to complete".into()),
        }
    }

    /// The change undone: stable on the old group. Refused when stable.
    pub fn revert(&self) -> Result<Config, String> {
        match self.new {
            Some(_) => Ok(Config::stable(self.old)),
            None => Err("no membership change to revert".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// O = nodes 0..6 (AZ pairs {0,1}, {2,3}, {4,5}); node 6 is the spare, put in whichever AZ
    /// the swapped node is in.
    const O: Group = Group([0, 1, 2, 3, 4, 5]);

    /// Every joint config from O: each of its six nodes swapped for node 6 placed in the
    /// swapped node's AZ.
    fn joints() -> Vec<Config> {
        (0..PG_MEMBERS)
            .map(|member| {
                let mut new = O;
                new.0[member] = 6;
                let az = member / MEMBERS_PER_AZ;
                new.0[az * 2..az * 2 + 2].sort_unstable();
                Config::joint(O, new).expect("one swap in one AZ")
            })
            .collect()
    }

    fn set(mask: u8) -> impl Fn(usize) -> bool {
        move |n| n < 7 && mask & (1 << n) != 0
    }

    /// The three configs a reader of a joint segment may meet writers by: O alone, N alone,
    /// and the joint state.
    fn configs_around(joint: &Config) -> [Config; 3] {
        [joint.revert().unwrap(), joint.complete().unwrap(), *joint]
    }

    #[test]
    fn every_joint_read_quorum_meets_every_write_quorum_of_old_new_and_joint() {
        for joint in joints() {
            for r in 0u8..128 {
                if !joint.is_read_quorum(set(r)) {
                    continue;
                }
                for c in configs_around(&joint) {
                    for w in 0u8..128 {
                        if c.is_write_quorum(set(w)) {
                            assert!(
                                r & w != 0,
                                "{joint:?}: read {r:07b} misses write {w:07b} of {c:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn two_write_quorums_always_meet_across_old_new_and_joint() {
        for joint in joints() {
            for a in configs_around(&joint) {
                for b in configs_around(&joint) {
                    for x in 0u8..128 {
                        if !a.is_write_quorum(set(x)) {
                            continue;
                        }
                        for y in 0u8..128 {
                            if b.is_write_quorum(set(y)) {
                                assert!(x & y != 0, "{a:?} {x:07b} and {b:?} {y:07b} are disjoint");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn four_of_seven_is_not_a_joint_write_quorum_unless_four_of_each() {
        for joint in joints() {
            let swap = joint.swap().unwrap();
            let mut refused = 0;
            for w in 0u8..128 {
                if w.count_ones() != 4 {
                    continue;
                }
                let of_each = joint
                    .groups()
                    .all(|g| g.0.iter().filter(|&&n| set(w)(n)).count() >= 4);
                assert_eq!(joint.is_write_quorum(set(w)), of_each, "{w:07b}");
                if !of_each {
                    refused += 1;
                }
                // Four of seven that hold both F and G are three of each group: never a quorum.
                if set(w)(swap.out) && set(w)(swap.r#in) {
                    assert!(!joint.is_write_quorum(set(w)), "{w:07b}");
                }
            }
            // Of the 35 four-sets of seven, only the five-shared-node ones (5 of them) count.
            assert_eq!(refused, 35 - 5, "{joint:?}");
        }
    }

    #[test]
    fn a_single_member_change_without_the_joint_state_would_lose_reads() {
        // The reason the joint state exists: 3 of O can miss 4 of N.
        let joint = joints()[0];
        let (old, new) = (joint.revert().unwrap(), joint.complete().unwrap());
        let missed = (0u8..128).any(|r| {
            old.is_read_quorum(set(r))
                && (0u8..128).any(|w| new.is_write_quorum(set(w)) && r & w == 0)
        });
        assert!(missed);
    }

    #[test]
    fn an_az_down_keeps_joint_writes_only_with_the_new_node_filled_in() {
        // O ∪ N with AZ c down (4, 5): writes need 4 of each; F = 0 swapped for G = 6 (AZ a).
        let joint = joints()[0];
        let up = |n: usize| n != 4 && n != 5;
        assert!(joint.is_write_quorum(up));
        // F dead as well: 1, 2, 3 and G are four of N but three of O.
        assert!(!joint.is_write_quorum(|n| up(n) && n != 0));
        // Reads go on with AZ c and one more down.
        assert!(joint.is_read_quorum(|n| up(n) && n != 0));
    }

    #[test]
    fn the_durable_point_is_the_highest_lsn_a_joint_write_quorum_holds() {
        // Every assignment of SCLs 0..4 to the seven voters, against the definition.
        for joint in joints() {
            for code in 0u32..4u32.pow(7) {
                let scl = |n: usize| Lsn(u64::from(code / 4u32.pow(n as u32) % 4));
                let got = joint.durable_point(scl);
                let by_definition = (0..4u64)
                    .rev()
                    .find(|&l| joint.is_write_quorum(|n| scl(n) >= Lsn(l)))
                    .map(Lsn)
                    .unwrap();
                assert_eq!(got, by_definition, "{joint:?} code {code}");
            }
        }
        // A record on 4 of O but only 3 of N is not durable.
        let joint = joints()[0]; // F = 0, G = 6
        let scl = |n: usize| {
            if [0, 1, 2, 3].contains(&n) {
                Lsn(9)
            } else {
                Lsn(1)
            }
        };
        assert_eq!(joint.revert().unwrap().durable_point(scl), Lsn(9));
        assert_eq!(joint.durable_point(scl), Lsn(1));
    }

    #[test]
    fn every_replacement_placement_chooses_makes_a_joint_config() {
        use crate::placement::{choose_group, choose_replacement};
        use crate::{SegmentId, TenantId};
        let nine = [0u8, 0, 0, 1, 1, 1, 2, 2, 2];
        let nodes: Vec<(usize, u8)> = nine.iter().copied().enumerate().collect();
        for s in 0..200 {
            let (t, s) = (TenantId(0xfeed), SegmentId(s));
            let g = choose_group(t, s, &nine);
            for out in g.0 {
                let r = choose_replacement(t, s, &g, out, &nodes).unwrap();
                let joint = Config::joint(g, g.with_replaced(out, r).unwrap()).unwrap();
                assert_eq!(joint.swap().map(|w| (w.out, w.r#in)), Some((out, r)));
            }
        }
    }

    #[test]
    fn joint_configs_are_one_swap_in_one_az() {
        let c = joints()[3]; // node 3 (AZ b) swapped for 6
        assert_eq!(
            c.swap(),
            Some(Swap {
                out: 3,
                r#in: 6,
                az: 1
            })
        );
        assert_eq!(c.voters(), vec![0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(c.complete().unwrap().voters(), vec![0, 1, 2, 4, 5, 6]);
        assert_eq!(c.revert().unwrap(), Config::stable(O));
        assert!(Config::stable(O).complete().is_err());
        assert!(Config::stable(O).revert().is_err());
        assert_eq!(Config::stable(O).swap(), None);
        assert!(Config::try_stable(Group([0, 0, 2, 3, 4, 5])).is_err());
        assert!(Config::try_stable(Group([1, 0, 2, 3, 4, 5])).is_err());
        // Two swaps, no swap, another AZ, a malformed group: refused.
        for bad in [
            Group([0, 1, 6, 7, 4, 5]),
            O,
            Group([1, 2, 3, 6, 4, 5]),
            Group([0, 1, 3, 2, 4, 5]),
            Group([0, 0, 2, 3, 4, 5]),
        ] {
            assert!(Config::joint(O, bad).is_err(), "{bad:?}");
        }
    }
}
