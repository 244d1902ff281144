//! The writer's view of placement: which pool nodes form each segment's protection group
//! (RFC 0008 §3), and which of them it can reach.
//!
//! A volume's segments each have their own group of six safekeepers, two per AZ, drawn from a
//! **pool** ([`borealis_core::placement`]: rendezvous hashing). A [`Placement`] holds the tenant,
//! the pool's AZs and a **table** of fixed groups: a segment's group is fixed the first time the
//! writer ships a record of it ([`Placement::fix`]), from [`choose_group`] unless the table
//! already names one ([`Placement::insert`]: the durable table of RFC 0008 §3, read from the
//! object store, pre-fills it). Once fixed, a group never changes under this writer, whatever the
//! pool does.
//!
//! Nodes are named by their index in the pool; a node's **member index** in a group (0..6, two
//! per AZ in AZ order) is what the consistency tracker counts acknowledgements by. With a pool
//! of six in AZ order a, a, b, b, c, c, every segment's group is the whole pool and the member
//! index of a node is the node index: the one-group volume of RFC 0002.

use borealis_core::placement::{choose_group, validate_pool, Group};
use borealis_core::quorum::WRITE_QUORUM;
use borealis_core::{SegmentId, TenantId};
use std::collections::BTreeMap;

/// The six-node pool of a one-group cluster: node `i` in AZ `i / 2`.
pub const POOL_OF_SIX_AZS: [u8; 6] = [0, 0, 1, 1, 2, 2];

/// A set of pool nodes (by index).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet {
    nodes: Vec<bool>,
}

impl NodeSet {
    /// An empty set of a pool of `pool_size` nodes.
    pub fn new(pool_size: usize) -> NodeSet {
        NodeSet {
            nodes: vec![false; pool_size],
        }
    }

    pub fn insert(&mut self, node: usize) {
        assert!(node < self.nodes.len(), "node {node} is not in the pool");
        self.nodes[node] = true;
    }

    pub fn remove(&mut self, node: usize) {
        assert!(node < self.nodes.len(), "node {node} is not in the pool");
        self.nodes[node] = false;
    }

    pub fn contains(&self, node: usize) -> bool {
        self.nodes.get(node).copied().unwrap_or(false)
    }

    /// How many nodes are in the set.
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|&&n| n).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many members of `group` are in the set.
    pub fn count_in(&self, group: &Group) -> usize {
        group.0.iter().filter(|&&n| self.contains(n)).count()
    }

    /// Whether a write quorum (4) of `group` is in the set.
    pub fn has_write_quorum_of(&self, group: &Group) -> bool {
        self.count_in(group) >= WRITE_QUORUM
    }
}

/// The tenant's pool and its table of fixed groups (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    tenant: TenantId,
    pool_azs: Vec<u8>,
    groups: BTreeMap<SegmentId, Group>,
}

impl Placement {
    /// The placement of `tenant` over a pool whose node `i` is in AZ `pool_azs[i]`, with an
    /// empty table. Refused if the pool cannot form a group ([`validate_pool`]).
    pub fn new(tenant: TenantId, pool_azs: Vec<u8>) -> Result<Placement, String> {
        validate_pool(&pool_azs)?;
        Ok(Placement {
            tenant,
            pool_azs,
            groups: BTreeMap::new(),
        })
    }

    /// The placement of `tenant` over the six-node pool [`POOL_OF_SIX_AZS`]: every segment's group
    /// is nodes 0..6 in order.
    pub fn pool_of_six(tenant: TenantId) -> Placement {
        Placement::new(tenant, POOL_OF_SIX_AZS.to_vec()).expect("the pool of six is valid")
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    pub fn pool_azs(&self) -> &[u8] {
        &self.pool_azs
    }

    pub fn pool_size(&self) -> usize {
        self.pool_azs.len()
    }

    /// The group of `segment`: its table entry, or the one rendezvous hashing chooses (which
    /// [`Placement::fix`] would make its entry).
    pub fn group(&self, segment: SegmentId) -> Group {
        self.groups
            .get(&segment)
            .copied()
            .unwrap_or_else(|| choose_group(self.tenant, segment, &self.pool_azs))
    }

    /// Fixes `segment`'s group in the table (on its first use) and returns it.
    pub fn fix(&mut self, segment: SegmentId) -> Group {
        let group = self.group(segment);
        self.groups.entry(segment).or_insert(group);
        group
    }

    /// Enters a group read from a durable table. Refused if the group does not fit the pool (six
    /// distinct nodes, two per AZ in member order) or the table already fixed another one.
    pub fn insert(&mut self, segment: SegmentId, group: Group) -> Result<(), String> {
        if !group.fits(&self.pool_azs) {
            return Err(format!(
                "segment {segment}: group {:?} is not two nodes per AZ of the pool {:?} in member order",
                group.0, self.pool_azs
            ));
        }
        match self.groups.get(&segment) {
            Some(fixed) if *fixed != group => Err(format!(
                "segment {segment}: group {:?} is already fixed as {:?}",
                group.0, fixed.0
            )),
            _ => {
                self.groups.insert(segment, group);
                Ok(())
            }
        }
    }

    /// The fixed groups, by segment.
    pub fn table(&self) -> &BTreeMap<SegmentId, Group> {
        &self.groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NINE: [u8; 9] = [0, 0, 0, 1, 1, 1, 2, 2, 2];

    #[test]
    fn a_pool_of_six_is_one_group_and_node_index_is_member_index() {
        let p = Placement::pool_of_six(TenantId(7));
        for s in 0..50 {
            let g = p.group(SegmentId(s));
            assert_eq!(g, Group([0, 1, 2, 3, 4, 5]));
            assert!((0..6).all(|n| g.member_of(n) == Some(n)));
        }
    }

    #[test]
    fn groups_are_fixed_on_first_use_and_table_entries_win() {
        let mut p = Placement::new(TenantId(7), NINE.to_vec()).unwrap();
        assert!(p.table().is_empty());
        let chosen = p.fix(SegmentId(3));
        assert_eq!(chosen, choose_group(TenantId(7), SegmentId(3), &NINE));
        assert_eq!(p.table().len(), 1);
        assert_eq!(p.fix(SegmentId(3)), chosen);
        // A table read from the store names another group for segment 4: it is the group.
        let other = Group([0, 1, 3, 4, 6, 7]);
        p.insert(SegmentId(4), other).unwrap();
        assert_eq!(p.group(SegmentId(4)), other);
        assert_eq!(p.fix(SegmentId(4)), other);
        // Fixed means fixed; and a group must fit the pool.
        let err = p.insert(SegmentId(3), other).unwrap_err();
        assert!(err.contains("already fixed"), "{err}");
        assert!(p.insert(SegmentId(5), Group([0, 1, 2, 3, 4, 5])).is_err());
        assert!(p.insert(SegmentId(5), Group([1, 0, 3, 4, 6, 7])).is_err());
        assert!(Placement::new(TenantId(7), vec![0, 1, 2]).is_err());
    }

    #[test]
    fn node_sets_count_the_members_of_a_group() {
        let mut s = NodeSet::new(9);
        for n in [0, 1, 3, 6, 8] {
            s.insert(n);
        }
        s.remove(8);
        assert_eq!(s.len(), 4);
        let g = Group([0, 1, 3, 4, 6, 7]);
        assert_eq!(s.count_in(&g), 4);
        assert!(s.has_write_quorum_of(&g));
        assert!(!s.has_write_quorum_of(&Group([0, 2, 4, 5, 7, 8])));
        assert!(!s.contains(42));
    }
}
