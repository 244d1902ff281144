//! The quorum writer: mini-transactions in, LSN-stamped redo records per segment out.
//!
//! One writer per volume assigns dense, volume-wide LSNs; an MTR's records may belong to several
//! segments, each its own protection group of six safekeepers drawn from a pool
//! ([`crate::placement`]). Each record links to the previous record of its own segment
//! (`prev_lsn_segment`) and of its page (`prev_lsn_page`); the MTR's last record is its
//! consistency point (CPL).
//!
//! **Admission.** [`QuorumWriter::submit`] refuses an MTR — before it assigns any LSN, so nothing
//! leaves the writer — when a segment it touches has fewer than a write quorum (4) of its group
//! reachable (`ReadOnly`, with the count of the worst such group), and when the writer is more
//! than the LAL ahead of its VDL (`Backpressure`). A group that lost its quorum refuses only the
//! MTRs that touch it: the rest of the volume stays writable.
//!
//! **Durability.** Reachability and acknowledgements come from the driver by pool node; the
//! [`ConsistencyTracker`] counts them by node against each segment's config (its group, adopted
//! when the writer first uses the segment; a node that is not a member is ignored) and takes the
//! 4th-highest SCL of that group. An MTR over two groups is durable only when both hold their
//! part.

use crate::consistency::ConsistencyTracker;
use crate::placement::{NodeSet, Placement};
use borealis_core::membership::Config;
use borealis_core::placement::Group;
use borealis_core::quorum::{PG_MEMBERS, WRITE_QUORUM};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout, SEGMENTS_PER_VOLUME_MAX};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use thiserror::Error;

/// Default LSN allocation limit: how far the writer may run ahead of the VDL, in LSNs (one LSN
/// per changed page, so about this many pages of un-durable redo, ≤ 64 MiB of images).
pub const LAL_LSNS_DEFAULT: u64 = 16 * 1024;

/// Pages whose last LSN the writer remembers for `prev_lsn_page`; beyond it the backlink is
/// written as unknown ([`Lsn::INVALID`]) and pageservers do not check it.
pub const PAGE_TAILS_MAX: usize = 64 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WriteError {
    /// A segment the MTR touches has fewer than a write quorum of its group reachable (`reachable`
    /// of its six, in the worst such group): nothing was shipped.
    #[error("write quorum lost: only {reachable} of {PG_MEMBERS} safekeepers reachable, 4 needed")]
    ReadOnly { reachable: usize },
    /// The writer is more than the LAL ahead of the VDL; wait for the VDL to advance.
    #[error("log allocation limit reached: {ahead} LSNs ahead of the VDL")]
    Backpressure { ahead: u64 },
    /// The mini-transaction touches a page beyond the volume's last possible segment.
    #[error(
        "page {page} lies in segment {segment}; a volume has at most {SEGMENTS_PER_VOLUME_MAX} segments of {segment_size_bytes} bytes"
    )]
    VolumeTooLarge {
        page: PageNo,
        segment: SegmentId,
        segment_size_bytes: u64,
    },
    #[error("empty mini-transaction")]
    Empty,
}

/// The records of one shipped mini-transaction, grouped by segment, in LSN order. Each segment's
/// records go to the six nodes of its group ([`QuorumWriter::group`]).
#[derive(Debug)]
pub struct ShippedMtr {
    /// LSN of the MTR's consistency point: the MTR is durable once the VDL reaches it.
    pub commit_lsn: Lsn,
    pub segments: Vec<(SegmentId, Vec<RedoRecord>)>,
}

#[derive(Debug)]
pub struct QuorumWriter {
    epoch: u64,
    next_lsn: Lsn,
    layout: SegmentLayout,
    lal_lsns: u64,
    /// Last LSN assigned in each segment: the next record's `prev_lsn_segment`.
    segment_tails: BTreeMap<SegmentId, Lsn>,
    page_tails: HashMap<PageNo, Lsn>,
    /// Which nodes of the pool hold each segment.
    placement: Placement,
    /// Pool nodes reachable now.
    reachable: NodeSet,
    tracker: ConsistencyTracker,
}

impl QuorumWriter {
    /// A writer of `epoch` whose log is durable up to `start` (the recovered VDL), where the last
    /// record of each segment at or below `start` is `segment_tails[segment]`, over the pool and
    /// groups of `placement`.
    pub fn new(
        epoch: u64,
        start: Lsn,
        segment_tails: BTreeMap<SegmentId, Lsn>,
        layout: SegmentLayout,
        lal_lsns: u64,
        placement: Placement,
    ) -> Self {
        assert!(
            epoch > 0,
            "epoch 0 is the epoch of an empty volume, no writer has it"
        );
        assert!(
            segment_tails.values().all(|&t| t <= start),
            "segment tail above the start"
        );
        Self {
            epoch,
            next_lsn: start.next(),
            layout,
            lal_lsns,
            segment_tails,
            page_tails: HashMap::new(),
            reachable: NodeSet::new(placement.pool_size()),
            placement,
            tracker: ConsistencyTracker::new(start),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn vdl(&self) -> Lsn {
        self.tracker.vdl()
    }
    pub fn vcl(&self) -> Lsn {
        self.tracker.vcl()
    }
    /// The last LSN assigned so far.
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.next_lsn.0 - 1)
    }
    /// The last LSN assigned in each segment (the next record's `prev_lsn_segment`): with
    /// [`Self::last_lsn`] and the epoch, what a writer resuming this one's epoch starts from
    /// (RFC 0017).
    pub fn segment_tails(&self) -> &BTreeMap<SegmentId, Lsn> {
        &self.segment_tails
    }
    /// The pool nodes reachable now.
    pub fn reachable(&self) -> &NodeSet {
        &self.reachable
    }
    pub fn tracker(&self) -> &ConsistencyTracker {
        &self.tracker
    }
    pub fn placement(&self) -> &Placement {
        &self.placement
    }
    /// The six pool nodes of `segment`'s group, in member order.
    pub fn group(&self, segment: SegmentId) -> Group {
        self.placement.group(segment)
    }
    /// How many members of `segment`'s group are reachable.
    pub fn reachable_in(&self, segment: SegmentId) -> usize {
        self.reachable.count_in(&self.placement.group(segment))
    }

    /// The fewest reachable members of any group with records in flight (shipped, not yet
    /// durable in that group); `None` when nothing is in flight. Below a write quorum, those
    /// records can neither become durable nor be truncated until members return (limbo).
    pub fn in_flight_reachable(&self) -> Option<usize> {
        self.tracker
            .in_flight()
            .map(|segment| self.reachable_in(segment))
            .min()
    }

    /// Pool node `node` is reachable (connected and accepting appends).
    pub fn member_up(&mut self, node: usize) {
        self.reachable.insert(node);
    }

    pub fn member_down(&mut self, node: usize) {
        self.reachable.remove(node);
    }

    /// Turns one commit's page changes into records. Refuses, shipping nothing, when a segment
    /// it touches has no write quorum of its group reachable or the LAL is exhausted.
    pub fn submit(&mut self, changes: Vec<(PageNo, RedoBody)>) -> Result<ShippedMtr, WriteError> {
        if changes.is_empty() {
            return Err(WriteError::Empty);
        }
        let mut touched = BTreeSet::new();
        for (page, _) in &changes {
            let segment = self.layout.segment_of(*page);
            if segment.0 >= SEGMENTS_PER_VOLUME_MAX {
                return Err(WriteError::VolumeTooLarge {
                    page: *page,
                    segment,
                    segment_size_bytes: self.layout.segment_size_bytes(),
                });
            }
            touched.insert(segment);
        }
        let worst = touched
            .iter()
            .map(|&segment| self.reachable_in(segment))
            .min()
            .expect("an MTR touches at least one segment");
        if worst < WRITE_QUORUM {
            return Err(WriteError::ReadOnly { reachable: worst });
        }
        let ahead = self.next_lsn.0 - 1 - self.tracker.vdl().0;
        if ahead >= self.lal_lsns {
            return Err(WriteError::Backpressure { ahead });
        }
        // Admitted: each touched segment's group is fixed from now on (its first use).
        for &segment in &touched {
            self.placement.fix(segment);
            self.tracked(segment);
        }
        if self.page_tails.len() + changes.len() > PAGE_TAILS_MAX {
            self.page_tails.clear();
        }
        let count = changes.len();
        let mut by_segment: BTreeMap<SegmentId, Vec<RedoRecord>> = BTreeMap::new();
        let mut commit_lsn = Lsn::INVALID;
        for (i, (page, body)) in changes.into_iter().enumerate() {
            let lsn = self.next_lsn;
            self.next_lsn = lsn.next();
            let segment = self.layout.segment_of(page);
            let prev_lsn_segment = self
                .segment_tails
                .insert(segment, lsn)
                .unwrap_or(Lsn::INVALID);
            let prev_lsn_page = self.page_tails.insert(page, lsn).unwrap_or(Lsn::INVALID);
            let is_cpl = i + 1 == count;
            self.tracker.record_shipped(lsn, segment, is_cpl);
            by_segment.entry(segment).or_default().push(RedoRecord {
                lsn,
                prev_lsn_segment,
                prev_lsn_page,
                page_no: page,
                is_cpl,
                body,
            });
            commit_lsn = lsn;
        }
        Ok(ShippedMtr {
            commit_lsn,
            segments: by_segment.into_iter().collect(),
        })
    }

    /// Pool node `node` acknowledged `scl` for `segment`; returns the new VDL if it advanced. A
    /// node that is not a member of the segment's group is ignored.
    /// Pool node `node` (re)connected, and its `HelloOk` said what it holds (`held`: per segment,
    /// its SCL). Its SCL for every segment whose group it is in becomes exactly that (nothing
    /// held: none), even where it had acknowledged more: a node whose disk was replaced lost
    /// those copies, and they must not count again (RFC 0013). Returns the new VDL if it
    /// advanced.
    pub fn member_state(&mut self, node: usize, held: &[(SegmentId, Lsn)]) -> Option<Lsn> {
        let last = self.last_lsn();
        let reported = |segment: SegmentId| {
            held.iter()
                .find(|(s, _)| *s == segment)
                .map_or(Lsn::INVALID, |(_, scl)| *scl)
        };
        let mut segments = self.tracker.acknowledged_segments();
        segments.extend(held.iter().map(|(s, _)| *s));
        segments.sort_unstable();
        segments.dedup();
        for segment in segments {
            if !self.placement.group(segment).contains(node) {
                continue;
            }
            let scl = reported(segment);
            // A member cannot hold records this writer never assigned: not in our epoch.
            if scl <= last {
                self.tracked(segment);
                self.tracker.set_member_scl(node, segment, scl);
            }
        }
        self.tracker.settle()
    }

    pub fn on_ack(&mut self, node: usize, segment: SegmentId, scl: Lsn) -> Option<Lsn> {
        if scl > self.last_lsn() {
            // A member cannot hold records this writer never assigned: it is not in our epoch.
            return None;
        }
        if !self.placement.group(segment).contains(node) {
            return None;
        }
        self.tracked(segment);
        self.tracker.on_ack(node, segment, scl)
    }

    /// Makes sure the tracker counts `segment` by its group: a segment's config is adopted on
    /// the writer's first use of it (a record shipped, or a member reporting it).
    fn tracked(&mut self, segment: SegmentId) {
        if self.tracker.config(segment).is_none() {
            let group = self.placement.group(segment);
            self.tracker.adopt(segment, Config::stable(group));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::TenantId;

    fn six() -> Placement {
        Placement::pool_of_six(TenantId(1))
    }

    fn img(b: u8) -> RedoBody {
        RedoBody::Image(vec![b; borealis_core::PAGE_SIZE_BYTES])
    }

    fn writer(up: &[usize]) -> QuorumWriter {
        let mut w = QuorumWriter::new(
            1,
            Lsn(0),
            BTreeMap::new(),
            SegmentLayout::default(),
            100,
            six(),
        );
        for &m in up {
            w.member_up(m);
        }
        w
    }

    #[test]
    fn assigns_consecutive_lsns_backlinks_and_one_cpl() {
        let mut w = writer(&[0, 1, 2, 3, 4, 5]);
        let a = w
            .submit(vec![(PageNo(0), img(1)), (PageNo(5), img(2))])
            .unwrap();
        assert_eq!(a.commit_lsn, Lsn(2));
        let recs = &a.segments[0].1;
        assert_eq!(recs.iter().map(|r| r.lsn.0).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(recs[1].prev_lsn_segment, Lsn(1));
        assert_eq!(
            recs.iter().map(|r| r.is_cpl).collect::<Vec<_>>(),
            vec![false, true]
        );
        let b = w.submit(vec![(PageNo(5), img(3))]).unwrap();
        let r = &b.segments[0].1[0];
        assert_eq!(
            (r.lsn, r.prev_lsn_segment, r.prev_lsn_page),
            (Lsn(3), Lsn(2), Lsn(2))
        );
    }

    #[test]
    fn az_down_writes_az_plus_one_down_refuses() {
        let mut w = writer(&[2, 3, 4, 5]);
        assert!(w.submit(vec![(PageNo(0), img(1))]).is_ok());
        w.member_down(5);
        assert_eq!(
            w.submit(vec![(PageNo(0), img(1))]).unwrap_err(),
            WriteError::ReadOnly { reachable: 3 }
        );
        assert_eq!(w.last_lsn(), Lsn(1), "a refused MTR takes no LSN");
        w.member_up(0);
        assert!(w.submit(vec![(PageNo(0), img(1))]).is_ok());
    }

    #[test]
    fn lal_stalls_allocation_until_vdl_moves() {
        let mut w = QuorumWriter::new(
            1,
            Lsn(0),
            BTreeMap::new(),
            SegmentLayout::default(),
            2,
            six(),
        );
        for m in 0..6 {
            w.member_up(m);
        }
        w.submit(vec![(PageNo(0), img(1)), (PageNo(1), img(1))])
            .unwrap();
        assert_eq!(
            w.submit(vec![(PageNo(0), img(2))]).unwrap_err(),
            WriteError::Backpressure { ahead: 2 }
        );
        for m in 0..4 {
            w.on_ack(m, SegmentId(0), Lsn(2));
        }
        assert_eq!(w.vdl(), Lsn(2));
        assert!(w.submit(vec![(PageNo(0), img(2))]).is_ok());
    }

    #[test]
    fn acks_from_beyond_our_log_are_ignored() {
        let mut w = writer(&[0, 1, 2, 3]);
        w.submit(vec![(PageNo(0), img(1))]).unwrap();
        for m in 0..4 {
            assert_eq!(w.on_ack(m, SegmentId(0), Lsn(99)), None);
        }
        assert_eq!(w.vdl(), Lsn(0));
    }

    #[test]
    fn an_mtr_over_several_segments_chains_each_segment_and_ends_in_one_cpl() {
        let mut w = QuorumWriter::new(
            1,
            Lsn(0),
            BTreeMap::new(),
            SegmentLayout::new(4),
            100,
            six(),
        );
        for m in 0..6 {
            w.member_up(m);
        }
        let a = w
            .submit(vec![
                (PageNo(1), img(1)),
                (PageNo(9), img(2)),
                (PageNo(2), img(3)),
            ])
            .unwrap();
        assert_eq!(a.commit_lsn, Lsn(3));
        let by: BTreeMap<_, _> = a.segments.iter().cloned().collect();
        let s0: Vec<_> = by[&SegmentId(0)]
            .iter()
            .map(|r| (r.lsn.0, r.prev_lsn_segment.0, r.is_cpl))
            .collect();
        let s2: Vec<_> = by[&SegmentId(2)]
            .iter()
            .map(|r| (r.lsn.0, r.prev_lsn_segment.0, r.is_cpl))
            .collect();
        assert_eq!(s0, vec![(1, 0, false), (3, 1, true)]);
        assert_eq!(s2, vec![(2, 0, false)]);
        // Durable only when every segment's group holds its part: segment 0 alone is not enough.
        for m in 0..4 {
            w.on_ack(m, SegmentId(0), Lsn(3));
        }
        assert_eq!(w.vdl(), Lsn(0));
        for m in 0..4 {
            w.on_ack(m, SegmentId(2), Lsn(2));
        }
        assert_eq!(w.vdl(), Lsn(3));
    }

    #[test]
    fn pages_beyond_the_last_possible_segment_are_refused() {
        let mut w = QuorumWriter::new(
            1,
            Lsn(0),
            BTreeMap::new(),
            SegmentLayout::new(4),
            100,
            six(),
        );
        for m in 0..6 {
            w.member_up(m);
        }
        let last = PageNo(4 * SEGMENTS_PER_VOLUME_MAX - 1);
        assert!(w.submit(vec![(last, img(1))]).is_ok());
        assert!(matches!(
            w.submit(vec![(PageNo(last.0 + 1), img(1))]),
            Err(WriteError::VolumeTooLarge {
                segment: SegmentId(4096),
                segment_size_bytes: 16384,
                ..
            })
        ));
    }

    const NINE: [u8; 9] = [0, 0, 0, 1, 1, 1, 2, 2, 2];

    /// A writer over a pool of nine (three per AZ), segments of 4 pages, every node reachable.
    fn nine() -> QuorumWriter {
        let placement = Placement::new(TenantId(1), NINE.to_vec()).unwrap();
        let mut w = QuorumWriter::new(
            1,
            Lsn(0),
            BTreeMap::new(),
            SegmentLayout::new(4),
            100,
            placement,
        );
        for n in 0..9 {
            w.member_up(n);
        }
        w
    }

    /// Segment 0 and the first segment whose group differs from segment 0's in AZ `y`, with `y`.
    fn two_groups(w: &QuorumWriter) -> (SegmentId, SegmentId, usize) {
        let a = w.group(SegmentId(0));
        (1..)
            .map(SegmentId)
            .find_map(|b| {
                let g = w.group(b);
                (0..3)
                    .find(|&y| g.0[2 * y..2 * y + 2] != a.0[2 * y..2 * y + 2])
                    .map(|y| (SegmentId(0), b, y))
            })
            .unwrap()
    }

    fn page_in(s: SegmentId) -> PageNo {
        PageNo(s.0 * 4 + 1)
    }

    #[test]
    fn an_mtr_over_two_groups_is_durable_only_when_both_groups_hold_it() {
        let mut w = nine();
        let (a, b, _) = two_groups(&w);
        let (ga, gb) = (w.group(a), w.group(b));
        assert_ne!(ga, gb);
        let mtr = w
            .submit(vec![(page_in(a), img(1)), (page_in(b), img(2))])
            .unwrap();
        assert_eq!(mtr.commit_lsn, Lsn(2));
        assert_eq!(
            w.placement().table().len(),
            2,
            "both groups fixed on first use"
        );
        for &n in &ga.0[..4] {
            w.on_ack(n, a, Lsn(1));
        }
        assert_eq!(w.vdl(), Lsn(0), "group a holds its part, group b nothing");
        // Acks for b from nodes outside b's group do not count, however many.
        for n in (0..9).filter(|&n| !gb.contains(n)) {
            w.on_ack(n, b, Lsn(2));
        }
        assert_eq!(w.vdl(), Lsn(0));
        for &n in &gb.0[..3] {
            w.on_ack(n, b, Lsn(2));
        }
        assert_eq!(w.vdl(), Lsn(0), "three of b's group are not a write quorum");
        assert_eq!(w.on_ack(gb.0[5], b, Lsn(2)), Some(Lsn(2)));
    }

    #[test]
    fn a_group_that_lost_its_quorum_refuses_only_the_mtrs_that_touch_it() {
        let mut w = nine();
        let (a, b, y) = two_groups(&w);
        let (ga, gb) = (w.group(a), w.group(b));
        // a loses its pair of an AZ x other than y, and its node of AZ y that b does not have.
        let x = (y + 1) % 3;
        let extra = *ga.0[2 * y..2 * y + 2]
            .iter()
            .find(|&&n| !gb.contains(n))
            .unwrap();
        for n in [ga.0[2 * x], ga.0[2 * x + 1], extra] {
            w.member_down(n);
        }
        assert_eq!(w.reachable_in(a), 3);
        assert!(w.reachable_in(b) >= 4, "{gb:?}");
        assert_eq!(
            w.submit(vec![(page_in(a), img(1))]).unwrap_err(),
            WriteError::ReadOnly { reachable: 3 }
        );
        assert_eq!(
            w.submit(vec![(page_in(b), img(1)), (page_in(a), img(1))])
                .unwrap_err(),
            WriteError::ReadOnly { reachable: 3 }
        );
        assert_eq!(w.last_lsn(), Lsn(0), "refused MTRs take no LSN");
        assert!(w.placement().table().is_empty(), "nor fix a group");
        let ok = w.submit(vec![(page_in(b), img(2))]).unwrap();
        assert_eq!(ok.commit_lsn, Lsn(1));
        w.member_up(extra);
        assert!(w.submit(vec![(page_in(a), img(3))]).is_ok());
    }

    #[test]
    fn in_flight_counts_the_worst_group_with_records_not_yet_durable() {
        let mut w = nine();
        let (a, b, _) = two_groups(&w);
        let (ga, gb) = (w.group(a), w.group(b));
        assert_eq!(w.in_flight_reachable(), None);
        w.submit(vec![(page_in(a), img(1)), (page_in(b), img(2))])
            .unwrap();
        let only_b = *gb.0.iter().find(|&&n| !ga.contains(n)).unwrap();
        w.member_down(only_b);
        assert_eq!(w.in_flight_reachable(), Some(5));
        for &n in gb.0.iter().filter(|&&n| n != only_b).take(4) {
            w.on_ack(n, b, Lsn(2));
        }
        // b is durable in its group; a, with all six reachable, still has its record in flight.
        assert_eq!(w.in_flight_reachable(), Some(6));
        for &n in &ga.0[..4] {
            w.on_ack(n, a, Lsn(1));
        }
        assert_eq!((w.vdl(), w.in_flight_reachable()), (Lsn(2), None));
    }
}
