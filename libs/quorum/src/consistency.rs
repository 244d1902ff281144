//! The consistency tracker: from acknowledged SCLs to VCL and VDL.
//!
//! Acknowledgements are counted per segment by **pool node id**, against the segment's voting
//! configuration ([`Config`]): its group of six, or during a membership change the old and the
//! new group (RFC 0012 §3). The writer [adopts](ConsistencyTracker::adopt) a segment's config
//! before it ships the segment's first record; an acknowledgement from a node that does not vote
//! in it is ignored. A record is durable once its segment's [durable
//! point](Config::durable_point) reaches it — the 4th-highest SCL of its group, or of each group
//! while joint; VCL is the longest prefix of durable records in LSN order, VDL the highest CPL at
//! or below it. Both only ever grow (asserted), whatever config is adopted.

use borealis_core::membership::Config;
use borealis_core::{Lsn, SegmentId};
use std::collections::{BTreeMap, VecDeque};

/// Tracks which shipped records are durable and derives VCL and VDL.
#[derive(Debug)]
pub struct ConsistencyTracker {
    vcl: Lsn,
    vdl: Lsn,
    /// Records shipped but not yet known durable, in LSN order: `(lsn, segment, is_cpl)`.
    outstanding: VecDeque<(Lsn, SegmentId, bool)>,
    /// Per segment: its config and the last SCL each voter acknowledged.
    segments: BTreeMap<SegmentId, SegmentAcks>,
    /// Per segment with outstanding records: the last of them. A segment whose group has not
    /// made that record durable has records **in flight** (see [`Self::in_flight`]).
    outstanding_tails: BTreeMap<SegmentId, Lsn>,
}

#[derive(Debug)]
struct SegmentAcks {
    config: Config,
    /// By pool node id; a voter missing here has acknowledged nothing.
    scls: BTreeMap<usize, Lsn>,
}

impl SegmentAcks {
    fn durable(&self) -> Lsn {
        self.config
            .durable_point(|n| self.scls.get(&n).copied().unwrap_or(Lsn::INVALID))
    }
}

impl ConsistencyTracker {
    /// A tracker for a writer whose log is durable up to `start` (the recovered VDL).
    pub fn new(start: Lsn) -> Self {
        Self {
            vcl: start,
            vdl: start,
            outstanding: VecDeque::new(),
            segments: BTreeMap::new(),
            outstanding_tails: BTreeMap::new(),
        }
    }

    pub fn vcl(&self) -> Lsn {
        self.vcl
    }

    pub fn vdl(&self) -> Lsn {
        self.vdl
    }

    /// Records shipped but not yet durable.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// The config `segment`'s acknowledgements are counted by, once adopted.
    pub fn config(&self, segment: SegmentId) -> Option<&Config> {
        self.segments.get(&segment).map(|s| &s.config)
    }

    /// Counts `segment`'s acknowledgements by `config` from now on, and returns the new VDL if
    /// that made more durable. The first config of a segment may be anything; after that only a
    /// step of a membership change is accepted (stable O → joint O/N → stable N or stable O), or
    /// the same config again. Every record not yet durable is judged by the config in force:
    /// entering the joint state is stricter, completing or reverting it looser — which is safe
    /// only because the change's own rules (`crate::membership`) hold it back until the new
    /// group holds what the old one did. Acknowledgements of nodes that no longer vote are
    /// forgotten. Panics on any other step: that is a bug in the caller.
    pub fn adopt(&mut self, segment: SegmentId, config: Config) -> Option<Lsn> {
        match self.segments.get_mut(&segment) {
            None => {
                self.segments.insert(
                    segment,
                    SegmentAcks {
                        config,
                        scls: BTreeMap::new(),
                    },
                );
                return None;
            }
            Some(acks) => {
                let from = acks.config;
                let legal = config == from
                    || (!from.is_joint() && config.is_joint() && config.old() == from.old())
                    || (from.is_joint()
                        && (Ok(config) == from.complete() || Ok(config) == from.revert()));
                assert!(
                    legal,
                    "segment {}: {from:?} -> {config:?} is not a step of a membership change",
                    segment.0
                );
                acks.config = config;
                acks.scls.retain(|&node, _| config.contains(node));
            }
        }
        self.advance()
    }

    /// The LSN up to which `segment` is held completely by a write quorum (of each group, while
    /// joint).
    pub fn segment_durable(&self, segment: SegmentId) -> Lsn {
        self.segments
            .get(&segment)
            .map_or(Lsn::INVALID, SegmentAcks::durable)
    }

    /// The segments whose group has not yet made every record of theirs durable that the writer
    /// shipped: their records are in flight. A record above the VCL that its own group already
    /// holds on a write quorum is not in flight (it waits only for other segments' records).
    pub fn in_flight(&self) -> impl Iterator<Item = SegmentId> + '_ {
        self.outstanding_tails
            .iter()
            .filter(|&(&segment, &tail)| self.segment_durable(segment) < tail)
            .map(|(&segment, _)| segment)
    }

    /// Notes a record the writer is about to ship. Records must be noted in LSN order, of
    /// segments whose config was adopted.
    pub fn record_shipped(&mut self, lsn: Lsn, segment: SegmentId, is_cpl: bool) {
        let last = self.outstanding.back().map(|r| r.0).unwrap_or(self.vcl);
        assert!(
            lsn > last,
            "records must be shipped in LSN order ({lsn} after {last})"
        );
        assert!(
            self.segments.contains_key(&segment),
            "segment {}: a record shipped before its config was adopted",
            segment.0
        );
        self.outstanding.push_back((lsn, segment, is_cpl));
        self.outstanding_tails.insert(segment, lsn);
    }

    /// Pool node `node` acknowledged `scl` for `segment`. Returns the new VDL if it advanced. An
    /// acknowledgement for a segment without a config, or from a node that does not vote in it,
    /// is ignored.
    pub fn on_ack(&mut self, node: usize, segment: SegmentId, scl: Lsn) -> Option<Lsn> {
        let acks = self.segments.get_mut(&segment)?;
        if !acks.config.contains(node) {
            return None;
        }
        let entry = acks.scls.entry(node).or_insert(Lsn::INVALID);
        // SCLs can go down after a truncation under a new epoch, but a writer only hears from
        // members in its own epoch, where they only grow. Keep the max.
        if scl <= *entry {
            return None;
        }
        *entry = scl;
        self.advance()
    }

    /// What a member says it holds when it (re)connects: its SCL for `segment` is set to `scl`,
    /// even below what it acknowledged before. Lower only if it lost what it had acknowledged (a
    /// replaced disk, RFC 0013): an acknowledgement of a copy that no longer exists must not make
    /// anything durable later. Records already durable stay so (VCL and VDL never go back); call
    /// [`ConsistencyTracker::settle`] after the member's segments are set. Ignored, as
    /// [`Self::on_ack`], for a segment without a config or a node that does not vote in it.
    pub fn set_member_scl(&mut self, node: usize, segment: SegmentId, scl: Lsn) {
        if let Some(acks) = self.segments.get_mut(&segment) {
            if acks.config.contains(node) {
                acks.scls.insert(node, scl);
            }
        }
    }

    /// The segments whose config was adopted.
    pub fn acknowledged_segments(&self) -> Vec<SegmentId> {
        self.segments.keys().copied().collect()
    }

    /// Makes durable what the SCLs now allow. Returns the new VDL if it advanced.
    pub fn settle(&mut self) -> Option<Lsn> {
        self.advance()
    }

    fn advance(&mut self) -> Option<Lsn> {
        let before = self.vdl;
        while let Some(&(lsn, segment, is_cpl)) = self.outstanding.front() {
            if self.segment_durable(segment) < lsn {
                break;
            }
            self.outstanding.pop_front();
            if self.outstanding_tails.get(&segment) == Some(&lsn) {
                self.outstanding_tails.remove(&segment);
            }
            assert!(lsn > self.vcl, "VCL went backwards");
            self.vcl = lsn;
            if is_cpl {
                self.vdl = lsn;
            }
        }
        assert!(self.vdl >= before, "VDL went backwards");
        assert!(self.vdl <= self.vcl, "VDL above VCL");
        (self.vdl > before).then_some(self.vdl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::placement::Group;

    const S0: SegmentId = SegmentId(0);
    const S1: SegmentId = SegmentId(1);
    /// Segments 0 and 1 on the pool of six: node ids are member indexes.
    const SIX: Group = Group([0, 1, 2, 3, 4, 5]);

    fn tracker(start: u64) -> ConsistencyTracker {
        let mut t = ConsistencyTracker::new(Lsn(start));
        t.adopt(S0, Config::stable(SIX));
        t.adopt(S1, Config::stable(SIX));
        t
    }

    #[test]
    fn an_acknowledgement_of_a_lost_copy_stops_counting() {
        let mut t = tracker(0);
        t.record_shipped(Lsn(1), S0, true);
        t.record_shipped(Lsn(2), S0, true);
        for m in 0..3 {
            t.on_ack(m, S0, Lsn(2));
        }
        // Member 0's disk is replaced: it reconnects holding nothing.
        t.set_member_scl(0, S0, Lsn::INVALID);
        assert_eq!(t.settle(), None);
        assert_eq!(
            t.on_ack(3, S0, Lsn(2)),
            None,
            "three real copies are not durable"
        );
        assert_eq!(t.on_ack(4, S0, Lsn(1)), Some(Lsn(1)));
        // Lowering never takes back what was durable.
        t.set_member_scl(4, S0, Lsn::INVALID);
        assert_eq!((t.settle(), t.vdl()), (None, Lsn(1)));
        assert_eq!(t.acknowledged_segments(), vec![S0, S1]);
    }

    #[test]
    fn three_acks_do_not_make_durable_four_do() {
        let mut t = tracker(0);
        t.record_shipped(Lsn(1), S0, true);
        assert_eq!(t.on_ack(0, S0, Lsn(1)), None);
        assert_eq!(t.on_ack(2, S0, Lsn(1)), None);
        assert_eq!(t.on_ack(4, S0, Lsn(1)), None);
        assert_eq!(t.vdl(), Lsn(0));
        assert_eq!(t.on_ack(5, S0, Lsn(1)), Some(Lsn(1)));
        assert_eq!((t.vcl(), t.vdl()), (Lsn(1), Lsn(1)));
    }

    #[test]
    fn vdl_stops_at_the_last_complete_mtr() {
        let mut t = tracker(0);
        // MTR 1 = lsn 1..=2, MTR 2 = lsn 3..=5.
        for (lsn, cpl) in [(1, false), (2, true), (3, false), (4, false), (5, true)] {
            t.record_shipped(Lsn(lsn), S0, cpl);
        }
        for m in 0..4 {
            t.on_ack(m, S0, Lsn(4));
        }
        assert_eq!(t.vcl(), Lsn(4));
        assert_eq!(t.vdl(), Lsn(2), "MTR 2 is not complete");
        for m in 0..4 {
            t.on_ack(m, S0, Lsn(5));
        }
        assert_eq!(t.vdl(), Lsn(5));
    }

    #[test]
    fn one_lagging_segment_holds_back_vcl() {
        let mut t = tracker(0);
        t.record_shipped(Lsn(1), S0, false);
        t.record_shipped(Lsn(2), S1, true);
        t.record_shipped(Lsn(3), S0, true);
        for m in 0..6 {
            t.on_ack(m, S0, Lsn(3));
        }
        assert_eq!(t.vcl(), Lsn(1), "lsn 2 (segment 1) is not durable yet");
        assert_eq!(t.vdl(), Lsn(0));
        for m in 1..5 {
            t.on_ack(m, S1, Lsn(2));
        }
        assert_eq!((t.vcl(), t.vdl()), (Lsn(3), Lsn(3)));
    }

    #[test]
    fn an_az_down_still_makes_durable() {
        let mut t = tracker(10);
        t.record_shipped(Lsn(11), S0, true);
        for m in [2, 3, 4, 5] {
            t.on_ack(m, S0, Lsn(11));
        }
        assert_eq!(t.vdl(), Lsn(11));
    }

    #[test]
    fn stale_acks_are_ignored() {
        let mut t = tracker(0);
        t.record_shipped(Lsn(1), S0, true);
        for m in 0..4 {
            t.on_ack(m, S0, Lsn(1));
        }
        assert_eq!(t.on_ack(0, S0, Lsn(0)), None);
        assert_eq!(t.vdl(), Lsn(1));
    }

    #[test]
    fn in_flight_names_the_segments_whose_group_has_not_made_them_durable() {
        let mut t = tracker(0);
        t.record_shipped(Lsn(1), S0, false);
        t.record_shipped(Lsn(2), S1, false);
        t.record_shipped(Lsn(3), S0, true);
        assert_eq!(t.in_flight().collect::<Vec<_>>(), vec![S0, S1]);
        // S0's group holds its records: only S1 is in flight, though the VCL waits at 1.
        for m in 0..4 {
            t.on_ack(m, S0, Lsn(3));
        }
        assert_eq!(t.vcl(), Lsn(1));
        assert_eq!(t.in_flight().collect::<Vec<_>>(), vec![S1]);
        for m in 2..6 {
            t.on_ack(m, S1, Lsn(2));
        }
        assert_eq!(t.vdl(), Lsn(3));
        assert_eq!(t.in_flight().count(), 0);
    }

    #[test]
    #[should_panic(expected = "LSN order")]
    fn shipping_out_of_order_is_a_bug() {
        let mut t = tracker(5);
        t.record_shipped(Lsn(5), S0, true);
    }

    /// Segment 0 replacing node 0 by node 6 (same AZ).
    fn joint() -> Config {
        Config::joint(SIX, Group([1, 6, 2, 3, 4, 5])).unwrap()
    }

    #[test]
    fn while_joint_a_record_needs_four_of_each_group() {
        let mut t = tracker(0);
        t.record_shipped(Lsn(1), S0, true);
        assert_eq!(t.adopt(S0, joint()), None);
        // Nodes 0, 1, 2, 3: four of the old group, three of the new.
        for n in [0, 1, 2, 3] {
            assert_eq!(t.on_ack(n, S0, Lsn(1)), None, "node {n}");
        }
        assert_eq!(t.segment_durable(S0), Lsn(0));
        // Node 6 (joining) makes it four of the new group too.
        assert_eq!(t.on_ack(6, S0, Lsn(1)), Some(Lsn(1)));
        // A node outside both groups never counts.
        assert_eq!(t.on_ack(7, S0, Lsn(1)), None);
    }

    #[test]
    fn completing_counts_by_the_new_group_and_never_lowers_the_vdl() {
        let mut t = tracker(0);
        t.record_shipped(Lsn(1), S0, true);
        for n in 0..4 {
            t.on_ack(n, S0, Lsn(1));
        }
        assert_eq!(t.vdl(), Lsn(1));
        t.adopt(S0, joint());
        t.record_shipped(Lsn(2), S0, true);
        for n in [1, 2, 3, 6] {
            t.on_ack(n, S0, Lsn(2));
        }
        // Four of the new group, three of the old: not durable while joint.
        assert_eq!(t.vdl(), Lsn(1));
        // Completed: the new group alone counts, node 0's acknowledgements are forgotten.
        assert_eq!(t.adopt(S0, joint().complete().unwrap()), Some(Lsn(2)));
        assert_eq!(t.on_ack(0, S0, Lsn(2)), None);
        assert_eq!(t.vdl(), Lsn(2));
    }

    #[test]
    fn reverting_forgets_the_joining_node() {
        let mut t = tracker(0);
        t.adopt(S0, joint());
        t.record_shipped(Lsn(1), S0, true);
        for n in [1, 2, 6] {
            t.on_ack(n, S0, Lsn(1));
        }
        t.adopt(S0, joint().revert().unwrap());
        assert_eq!(t.on_ack(6, S0, Lsn(1)), None, "node 6 no longer votes");
        assert_eq!(t.on_ack(3, S0, Lsn(1)), None, "three of the old group");
        assert_eq!(t.on_ack(0, S0, Lsn(1)), Some(Lsn(1)));
    }

    #[test]
    #[should_panic(expected = "not a step of a membership change")]
    fn jumping_from_one_stable_group_to_another_is_a_bug() {
        let mut t = tracker(0);
        t.adopt(S0, joint().complete().unwrap());
    }

    #[test]
    #[should_panic(expected = "before its config was adopted")]
    fn shipping_to_a_segment_without_a_config_is_a_bug() {
        let mut t = tracker(0);
        t.record_shipped(Lsn(1), SegmentId(9), true);
    }
}
