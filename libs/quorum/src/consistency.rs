//! The consistency tracker: from acknowledged SCLs to VCL and VDL.
//!
//! Acknowledgements are counted per segment by **member index** (0..6) in the segment's own
//! protection group: with several groups ([`crate::placement`]) the writer translates a pool node
//! to its member index in the segment's group before it reports an ack here. A record is durable
//! once the 4th-highest SCL of its segment's group reaches it; VCL is the longest prefix of
//! durable records in LSN order, VDL the highest CPL at or below it.

use borealis_core::quorum::{quorum_value, PG_MEMBERS, WRITE_QUORUM};
use borealis_core::{Lsn, SegmentId};
use std::collections::{BTreeMap, VecDeque};

/// Tracks which shipped records are durable and derives VCL and VDL.
#[derive(Debug)]
pub struct ConsistencyTracker {
    vcl: Lsn,
    vdl: Lsn,
    /// Records shipped but not yet known durable, in LSN order: `(lsn, segment, is_cpl)`.
    outstanding: VecDeque<(Lsn, SegmentId, bool)>,
    /// Per segment, the last SCL each member acknowledged.
    scls: BTreeMap<SegmentId, [Lsn; PG_MEMBERS]>,
    /// Per segment with outstanding records: the last of them. A segment whose group has not
    /// made that record durable has records **in flight** (see [`Self::in_flight`]).
    outstanding_tails: BTreeMap<SegmentId, Lsn>,
}

impl ConsistencyTracker {
    /// A tracker for a writer whose log is durable up to `start` (the recovered VDL).
    pub fn new(start: Lsn) -> Self {
        Self {
            vcl: start,
            vdl: start,
            outstanding: VecDeque::new(),
            scls: BTreeMap::new(),
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

    /// The LSN up to which `segment` is held completely by a write quorum.
    pub fn segment_durable(&self, segment: SegmentId) -> Lsn {
        self.scls
            .get(&segment)
            .and_then(|s| quorum_value(s, WRITE_QUORUM))
            .unwrap_or(Lsn::INVALID)
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

    /// Notes a record the writer is about to ship. Records must be noted in LSN order.
    pub fn record_shipped(&mut self, lsn: Lsn, segment: SegmentId, is_cpl: bool) {
        let last = self.outstanding.back().map(|r| r.0).unwrap_or(self.vcl);
        assert!(
            lsn > last,
            "records must be shipped in LSN order ({lsn} after {last})"
        );
        self.outstanding.push_back((lsn, segment, is_cpl));
        self.outstanding_tails.insert(segment, lsn);
    }

    /// A member acknowledged `scl` for `segment`. Returns the new VDL if it advanced.
    pub fn on_ack(&mut self, member: usize, segment: SegmentId, scl: Lsn) -> Option<Lsn> {
        assert!(member < PG_MEMBERS, "member index out of range");
        let entry = self
            .scls
            .entry(segment)
            .or_insert([Lsn::INVALID; PG_MEMBERS]);
        // SCLs can go down after a truncation under a new epoch, but a writer only hears from
        // members in its own epoch, where they only grow. Keep the max.
        if scl <= entry[member] {
            return None;
        }
        entry[member] = scl;
        self.advance()
    }

    /// What a member says it holds when it (re)connects: its SCL for `segment` is set to `scl`,
    /// even below what it acknowledged before. Lower only if it lost what it had acknowledged (a
    /// replaced disk, RFC 0013): an acknowledgement of a copy that no longer exists must not make
    /// anything durable later. Records already durable stay so (VCL and VDL never go back); call
    /// [`ConsistencyTracker::settle`] after the member's segments are set.
    pub fn set_member_scl(&mut self, member: usize, segment: SegmentId, scl: Lsn) {
        assert!(member < PG_MEMBERS, "member index out of range");
        self.scls
            .entry(segment)
            .or_insert([Lsn::INVALID; PG_MEMBERS])[member] = scl;
    }

    /// The segments some member has acknowledged.
    pub fn acknowledged_segments(&self) -> Vec<SegmentId> {
        self.scls.keys().copied().collect()
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

    const S0: SegmentId = SegmentId(0);
    const S1: SegmentId = SegmentId(1);

    #[test]
    fn an_acknowledgement_of_a_lost_copy_stops_counting() {
        let mut t = ConsistencyTracker::new(Lsn(0));
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
        assert_eq!(t.acknowledged_segments(), vec![S0]);
    }

    #[test]
    fn three_acks_do_not_make_durable_four_do() {
        let mut t = ConsistencyTracker::new(Lsn(0));
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
        let mut t = ConsistencyTracker::new(Lsn(0));
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
        let mut t = ConsistencyTracker::new(Lsn(0));
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
        let mut t = ConsistencyTracker::new(Lsn(10));
        t.record_shipped(Lsn(11), S0, true);
        for m in [2, 3, 4, 5] {
            t.on_ack(m, S0, Lsn(11));
        }
        assert_eq!(t.vdl(), Lsn(11));
    }

    #[test]
    fn stale_acks_are_ignored() {
        let mut t = ConsistencyTracker::new(Lsn(0));
        t.record_shipped(Lsn(1), S0, true);
        for m in 0..4 {
            t.on_ack(m, S0, Lsn(1));
        }
        assert_eq!(t.on_ack(0, S0, Lsn(0)), None);
        assert_eq!(t.vdl(), Lsn(1));
    }

    #[test]
    fn in_flight_names_the_segments_whose_group_has_not_made_them_durable() {
        let mut t = ConsistencyTracker::new(Lsn(0));
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
        let mut t = ConsistencyTracker::new(Lsn(5));
        t.record_shipped(Lsn(5), S0, true);
    }
}
