//! Placement: which safekeepers of a pool hold a segment, and which pageserver serves it
//! (RFC 0008 §3).
//!
//! A volume is cut into segments, and each segment is its own protection group of six
//! safekeepers, two in each of the three AZs ([`crate::quorum`]), drawn from a **pool** of
//! storage nodes that hold segments of many volumes. The choice is **rendezvous hashing**
//! (highest random weight): for segment `n` of tenant `t`, every node `i` of the pool scores
//!
//! ```text
//!     score(t, n, i) = splitmix64(t ⊕ rotl(n, 32) ⊕ i)
//! ```
//!
//! and the two best scores of each AZ form the group ([`choose_group`]); the best of `n`
//! pageservers serves the segment ([`choose_one`]). The load spreads without a coordinator, every
//! gateway and node computes the same answer, and a node added to the pool takes only the
//! segments it wins: every other segment keeps its group, because the scores of the nodes already
//! there do not change. (A table of fixed groups, written once per segment, records the outcome so
//! that a later change of the pool does not move anything: `borealis_quorum::placement`.)
//!
//! A pool is a list of AZs, one per node (`0`, `1`, `2` for a, b, c); a node's index in the list
//! is its id here. Nothing here does I/O.

use crate::quorum::{AZ_COUNT, MEMBERS_PER_AZ, PG_MEMBERS};
use crate::{SegmentId, TenantId};

/// The six safekeepers of a segment's protection group, as node indexes into the pool, in
/// **member order**: two of AZ a, two of b, two of c (so member `i` is in AZ `i / 2`, as
/// [`crate::quorum::az_of`] says); each pair ascending by node index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Group(pub [usize; PG_MEMBERS]);

impl Group {
    /// The member index (0..6) of pool node `node` in this group, if it is a member.
    pub fn member_of(&self, node: usize) -> Option<usize> {
        self.0.iter().position(|&n| n == node)
    }

    /// The pool node that is member `member` (0..6).
    pub fn node(&self, member: usize) -> usize {
        self.0[member]
    }

    pub fn contains(&self, node: usize) -> bool {
        self.0.contains(&node)
    }

    /// This group with `out` replaced by `in` in its AZ pair (the pair kept ascending). `None`
    /// when `out` is not a member or `in` already is.
    pub fn with_replaced(&self, out: usize, r#in: usize) -> Option<Group> {
        let member = self.member_of(out)?;
        if self.contains(r#in) {
            return None;
        }
        let mut g = self.0;
        g[member] = r#in;
        let pair = member / MEMBERS_PER_AZ * MEMBERS_PER_AZ;
        g[pair..pair + MEMBERS_PER_AZ].sort_unstable();
        Some(Group(g))
    }

    /// Whether this is a well-formed group of a pool with these AZs: six distinct nodes of the
    /// pool, two per AZ in member order, each pair ascending.
    pub fn fits(&self, pool_azs: &[u8]) -> bool {
        self.0.iter().enumerate().all(|(member, &node)| {
            pool_azs.get(node).map(|&az| usize::from(az)) == Some(member / MEMBERS_PER_AZ)
        }) && self.is_well_formed()
    }

    /// Whether this is a group of six distinct nodes with each AZ pair ascending, whatever the
    /// pool ([`Group::fits`] also checks each node's AZ against one).
    pub fn is_well_formed(&self) -> bool {
        let mut sorted = self.0;
        sorted.sort_unstable();
        sorted.windows(2).all(|w| w[0] < w[1])
            && self.0.chunks(MEMBERS_PER_AZ).all(|pair| pair[0] < pair[1])
    }
}

/// The SplitMix64 output function (Steele, Lea and Flood, 2014; the finalizer of
/// `java.util.SplittableRandom`): a bijection on `u64` whose every output bit depends on every
/// input bit. Part of the placement's definition: changing it moves segments.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Node `node`'s score for segment `segment` of `tenant` (see the module docs).
pub fn score(tenant: TenantId, segment: SegmentId, node: usize) -> u64 {
    splitmix64(tenant.0 ^ u64::from(segment.0).rotate_left(32) ^ node as u64)
}

/// Checks a pool of safekeepers: every AZ is 0, 1 or 2, and each has at least two nodes (a group
/// needs two per AZ).
pub fn validate_pool(azs: &[u8]) -> Result<(), String> {
    if let Some((node, az)) = azs
        .iter()
        .enumerate()
        .find(|(_, &az)| usize::from(az) >= AZ_COUNT)
    {
        return Err(format!(
            "pool node {node} is in AZ {az}; AZs are 0, 1 and 2 (a, b, c)"
        ));
    }
    for az in 0..AZ_COUNT {
        let n = azs.iter().filter(|&&a| usize::from(a) == az).count();
        if n < MEMBERS_PER_AZ {
            return Err(format!(
                "the pool has {n} node(s) in AZ {}; a protection group needs {MEMBERS_PER_AZ} in each AZ",
                (b'a' + az as u8) as char
            ));
        }
    }
    Ok(())
}

/// The AZs of a pool given as one list ordered by AZ, as `--safekeepers` lists it: the first
/// third of the nodes in AZ a, the second in b, the last in c (six nodes: a, a, b, b, c, c, the
/// member order of a group of six). `n` must be a multiple of three, at least six.
pub fn ordered_pool_azs(n: usize) -> Result<Vec<u8>, String> {
    if n < PG_MEMBERS || !n.is_multiple_of(AZ_COUNT) {
        return Err(format!(
            "a pool of {n} safekeepers: it needs a multiple of three, at least six (the same number in each AZ, listed AZ by AZ)"
        ));
    }
    let per_az = n / AZ_COUNT;
    Ok((0..n).map(|i| (i / per_az) as u8).collect())
}

/// Whether a new epoch installed on the nodes `fenced` of a pool (node `i` in AZ `pool_azs[i]`)
/// fences **every group the pool can form**: no choice of two nodes per AZ has more than three
/// members outside `fenced`, so no writer of an older epoch can gather a write quorum (4 of 6) in
/// any segment's group — not even the group of a segment nobody has written yet, which recovery
/// cannot ask about. Per AZ, a group can take at most two unfenced nodes; the rule is that these
/// maxima add up to three at most. With a pool of six it is "3 of the 6 fenced" (recovery needs
/// 4 anyway, to write).
pub fn fences_every_group(pool_azs: &[u8], fenced: &[usize]) -> bool {
    let unfenced_takeable: usize = (0..AZ_COUNT)
        .map(|az| {
            let unfenced = (0..pool_azs.len())
                .filter(|&i| usize::from(pool_azs[i]) == az && !fenced.contains(&i))
                .count();
            unfenced.min(MEMBERS_PER_AZ)
        })
        .sum();
    unfenced_takeable < crate::quorum::WRITE_QUORUM
}

/// The protection group of `segment` of `tenant` in a pool whose node `i` is in AZ
/// `pool_azs[i]`: the two best-scoring nodes of each AZ (ties: the lower node index), in member
/// order. The pool must be valid ([`validate_pool`]).
pub fn choose_group(tenant: TenantId, segment: SegmentId, pool_azs: &[u8]) -> Group {
    assert!(
        validate_pool(pool_azs).is_ok(),
        "choose_group needs a valid pool: {:?}",
        validate_pool(pool_azs)
    );
    let nodes: Vec<(usize, u8)> = pool_azs.iter().copied().enumerate().collect();
    choose_group_among(tenant, segment, &nodes).expect("a valid pool has two nodes per AZ")
}

/// [`choose_group`] over nodes named by id, `(id, AZ)` in any order: the group a segment gets
/// from the nodes that may take new segments (RFC 0012 §1: once nodes are removed, ids have gaps
/// and the pool is no longer a list indexed by id). `None` when an AZ has fewer than two.
pub fn choose_group_among(
    tenant: TenantId,
    segment: SegmentId,
    nodes: &[(usize, u8)],
) -> Option<Group> {
    let mut group = [0; PG_MEMBERS];
    for az in 0..AZ_COUNT {
        let mut in_az: Vec<usize> = nodes
            .iter()
            .filter(|(_, a)| usize::from(*a) == az)
            .map(|&(id, _)| id)
            .collect();
        // Best score first; equal scores (never seen, but possible) by node id.
        in_az.sort_unstable_by_key(|&i| (std::cmp::Reverse(score(tenant, segment, i)), i));
        in_az.dedup();
        let mut pair = [*in_az.first()?, *in_az.get(1)?];
        pair.sort_unstable();
        group[az * MEMBERS_PER_AZ..(az + 1) * MEMBERS_PER_AZ].copy_from_slice(&pair);
    }
    Some(Group(group))
}

/// The node that replaces `out` in `group` for `segment` of `tenant` (RFC 0012 §4): the
/// best-scoring of `candidates` (`(id, AZ)`, the nodes that may take new segments) in `out`'s AZ
/// and not already in the group. Deterministic, so a retried or restarted coordinator picks the
/// same node. `None` when `out` is not a member or its AZ has no spare node.
pub fn choose_replacement(
    tenant: TenantId,
    segment: SegmentId,
    group: &Group,
    out: usize,
    candidates: &[(usize, u8)],
) -> Option<usize> {
    let az = group.member_of(out)? / MEMBERS_PER_AZ;
    candidates
        .iter()
        .filter(|&&(id, a)| usize::from(a) == az && !group.contains(id))
        .map(|&(id, _)| id)
        .max_by_key(|&i| (score(tenant, segment, i), std::cmp::Reverse(i)))
}

/// The one node of `n` (a pageserver) that serves `segment` of `tenant`: the best score, ties to
/// the lower index.
pub fn choose_one(tenant: TenantId, segment: SegmentId, n: usize) -> usize {
    assert!(n > 0, "choose_one needs at least one node");
    (0..n)
        .max_by_key(|&i| (score(tenant, segment, i), std::cmp::Reverse(i)))
        .expect("n > 0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_epoch_fences_every_group_when_no_four_unfenced_fit_in_one() {
        let six = ordered_pool_azs(6).unwrap();
        assert!(fences_every_group(&six, &[0, 1, 2]));
        assert!(!fences_every_group(&six, &[0, 1]));
        let nine = ordered_pool_azs(9).unwrap();
        // Seven of nine: unfenced {2, 5} can fill two seats of any group, not four.
        assert!(fences_every_group(&nine, &[0, 1, 3, 4, 6, 7, 8]));
        // Six of nine, one unfenced per AZ: three seats at most.
        assert!(fences_every_group(&nine, &[0, 1, 3, 4, 6, 7]));
        // AZ c entirely unfenced (down): it fills two seats; a and b may leave one between them.
        assert!(fences_every_group(&nine, &[0, 1, 2, 3, 4]));
        assert!(!fences_every_group(&nine, &[0, 1, 3, 4]));
        // Exhaustive check against the definition on the pool of nine: for every fenced set,
        // the rule holds exactly when no two-per-AZ choice has four unfenced members.
        for mask in 0u32..(1 << 9) {
            let fenced: Vec<usize> = (0..9).filter(|i| mask & (1 << i) != 0).collect();
            let mut worst = 0;
            for a in 0..9usize {
                for b in a + 1..9 {
                    for c in 0..9usize {
                        for d in c + 1..9 {
                            for e in 0..9usize {
                                for f in e + 1..9 {
                                    let g = [a, b, c, d, e, f];
                                    if !Group(g).fits(&nine) {
                                        continue;
                                    }
                                    let out = g.iter().filter(|n| !fenced.contains(n)).count();
                                    worst = worst.max(out);
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(fences_every_group(&nine, &fenced), worst < 4, "{fenced:?}");
        }
    }

    #[test]
    fn an_ordered_pool_is_listed_az_by_az() {
        assert_eq!(ordered_pool_azs(6).unwrap(), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(
            ordered_pool_azs(9).unwrap(),
            vec![0, 0, 0, 1, 1, 1, 2, 2, 2]
        );
        for bad in [0, 3, 5, 7, 10] {
            assert!(ordered_pool_azs(bad).is_err(), "{bad}");
        }
    }

    const T: TenantId = TenantId(0x5eed_0042_dead_beef);
    const NINE: [u8; 9] = [0, 0, 0, 1, 1, 1, 2, 2, 2];

    #[test]
    fn splitmix64_is_the_published_function() {
        // The first outputs of SplitMix64 seeded with 0 (its state advances by the golden gamma
        // before each output): the reference values of the algorithm.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn pools_need_two_nodes_in_each_of_three_azs() {
        assert!(validate_pool(&[0, 0, 1, 1, 2, 2]).is_ok());
        assert!(validate_pool(&[2, 1, 0, 0, 1, 2]).is_ok());
        assert!(validate_pool(&NINE).is_ok());
        for bad in [
            &[0, 0, 1, 1, 2][..],
            &[0, 0, 1, 1, 2, 2, 3],
            &[],
            &[0, 1, 2, 0, 1, 1],
        ] {
            assert!(validate_pool(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pool_of_six_puts_every_segment_on_all_six_in_member_order() {
        for tenant in [TenantId(0), TenantId(1), T] {
            for s in 0..200 {
                let g = choose_group(tenant, SegmentId(s), &[0, 0, 1, 1, 2, 2]);
                assert_eq!(g, Group([0, 1, 2, 3, 4, 5]));
            }
        }
        // Member order follows the AZs, whatever order the pool lists its nodes in.
        let g = choose_group(T, SegmentId(7), &[2, 1, 0, 2, 1, 0]);
        assert_eq!(g, Group([2, 5, 1, 4, 0, 3]));
        assert!(g.fits(&[2, 1, 0, 2, 1, 0]));
        assert_eq!((g.member_of(4), g.member_of(9)), (Some(3), None));
    }

    #[test]
    fn a_pool_of_nine_gives_two_per_az_deterministically_and_spreads_the_load() {
        let mut load = [0usize; 9];
        let mut groups = std::collections::BTreeSet::new();
        const SEGMENTS: u32 = 1000;
        for s in 0..SEGMENTS {
            let g = choose_group(T, SegmentId(s), &NINE);
            assert!(g.fits(&NINE), "segment {s}: {g:?}");
            assert_eq!(g, choose_group(T, SegmentId(s), &NINE), "deterministic");
            for &n in &g.0 {
                load[n] += 1;
            }
            groups.insert(g);
        }
        // 3 AZs of 3 nodes, 2 of 3 chosen per AZ: 27 possible groups, each node in 2/3 of the
        // segments (666.7 of 1000; one standard deviation is 14.9). Every group shape occurs, and
        // every node holds within 10% of its share (more than 4 standard deviations).
        assert_eq!(groups.len(), 27);
        let share = f64::from(SEGMENTS) * 2.0 / 3.0;
        for (node, &n) in load.iter().enumerate() {
            assert!(
                (n as f64 - share).abs() < share * 0.10,
                "node {node} holds {n} of {SEGMENTS} segments, expected about {share:.0}: {load:?}"
            );
        }
        // Other tenants get other groups for the same segment numbers.
        let other: usize = (0..SEGMENTS)
            .filter(|&s| {
                choose_group(TenantId(1), SegmentId(s), &NINE)
                    != choose_group(T, SegmentId(s), &NINE)
            })
            .count();
        assert!(
            other > 800,
            "only {other} of {SEGMENTS} segments differ by tenant"
        );
    }

    #[test]
    fn adding_a_node_moves_only_the_segments_it_wins() {
        let mut ten = NINE.to_vec();
        ten.push(1); // a fourth node in AZ b, index 9
        let mut moved = 0;
        for s in 0..1000 {
            let (before, after) = (
                choose_group(T, SegmentId(s), &NINE),
                choose_group(T, SegmentId(s), &ten),
            );
            if before != after {
                moved += 1;
                // The new node took one slot of its AZ; the other AZs are untouched.
                assert!(after.contains(9), "segment {s}: {before:?} -> {after:?}");
                assert_eq!(before.0[..2], after.0[..2]);
                assert_eq!(before.0[4..], after.0[4..]);
                let kept = before.0[2..4]
                    .iter()
                    .filter(|n| after.contains(**n))
                    .count();
                assert_eq!(kept, 1, "segment {s}: {before:?} -> {after:?}");
            } else {
                assert!(!after.contains(9));
            }
        }
        // The new node is one of the two best of four in half the segments.
        assert!((400..600).contains(&moved), "{moved} of 1000 moved");
    }

    #[test]
    fn choosing_among_ids_ignores_their_order_and_their_gaps() {
        let nodes: Vec<(usize, u8)> = NINE.iter().copied().enumerate().collect();
        let mut reversed = nodes.clone();
        reversed.reverse();
        // Ids with gaps: node 4 removed, a node 12 added in AZ b.
        let mut gaps: Vec<(usize, u8)> = nodes.iter().copied().filter(|&(id, _)| id != 4).collect();
        gaps.push((12, 1));
        let mut moved = 0;
        for s in 0..500 {
            let g = choose_group(T, SegmentId(s), &NINE);
            assert_eq!(choose_group_among(T, SegmentId(s), &reversed), Some(g));
            let h = choose_group_among(T, SegmentId(s), &gaps).unwrap();
            // Only AZ b can change, and only where node 4 held a seat or node 12 won one.
            assert_eq!(
                (&g.0[..2], &g.0[4..]),
                (&h.0[..2], &h.0[4..]),
                "segment {s}"
            );
            assert!(!h.contains(4));
            if g != h {
                moved += 1;
                assert!(
                    g.contains(4) || h.contains(12),
                    "segment {s}: {g:?} -> {h:?}"
                );
            }
        }
        assert!(moved > 0);
        // An AZ with one node cannot form a group.
        assert_eq!(choose_group_among(T, SegmentId(0), &nodes[..7]), None);
    }

    #[test]
    fn a_replacement_is_the_best_spare_node_of_the_same_az() {
        let nodes: Vec<(usize, u8)> = NINE.iter().copied().enumerate().collect();
        for s in 0..300 {
            let g = choose_group(T, SegmentId(s), &NINE);
            for member in 0..PG_MEMBERS {
                let out = g.node(member);
                let r = choose_replacement(T, SegmentId(s), &g, out, &nodes).unwrap();
                // A pool of nine has exactly one spare per AZ.
                assert_eq!(usize::from(NINE[r]), member / MEMBERS_PER_AZ);
                assert!(!g.contains(r));
                let n = g.with_replaced(out, r).unwrap();
                assert!(
                    n.fits(&NINE) && !n.contains(out) && n.contains(r),
                    "{g:?} -> {n:?}"
                );
            }
            // Not a member, or no spare in the AZ (pool of six): no replacement.
            assert_eq!(choose_replacement(T, SegmentId(s), &g, 99, &nodes), None);
        }
        let six: Vec<(usize, u8)> = [0u8, 0, 1, 1, 2, 2].into_iter().enumerate().collect();
        let g = Group([0, 1, 2, 3, 4, 5]);
        assert_eq!(choose_replacement(T, SegmentId(0), &g, 2, &six), None);
        // With two spares in AZ a, the better score wins, whatever order they are listed in.
        let mut twelve: Vec<(usize, u8)> = six.clone();
        twelve.extend([(6, 0), (7, 0)]);
        let best = choose_replacement(T, SegmentId(0), &g, 0, &twelve).unwrap();
        twelve.reverse();
        assert_eq!(
            choose_replacement(T, SegmentId(0), &g, 0, &twelve),
            Some(best)
        );
        assert!(score(T, SegmentId(0), best) >= score(T, SegmentId(0), 13 - best));
        assert_eq!(g.with_replaced(0, 3), None);
        assert_eq!(g.with_replaced(9, 7), None);
    }

    #[test]
    fn one_of_n_spreads_and_keeps_its_choice_when_a_node_is_added() {
        let mut load = [0usize; 3];
        for s in 0..999 {
            let one = choose_one(T, SegmentId(s), 3);
            load[one] += 1;
            let four = choose_one(T, SegmentId(s), 4);
            assert!(four == one || four == 3, "segment {s}: {one} -> {four}");
        }
        // 333 each expected; one standard deviation is 14.9.
        assert!(load.iter().all(|&n| (283..=383).contains(&n)), "{load:?}");
        assert_eq!(choose_one(T, SegmentId(0), 1), 0);
    }
}
