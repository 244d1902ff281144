//! The quorum writer: mini-transactions in, LSN-stamped redo records per segment out.

use crate::consistency::ConsistencyTracker;
use borealis_core::quorum::{MemberSet, PG_MEMBERS};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout, SEGMENTS_PER_VOLUME_MAX};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

/// Default LSN allocation limit: how far the writer may run ahead of the VDL, in LSNs (one LSN
/// per changed page, so about this many pages of un-durable redo, ≤ 64 MiB of images).
pub const LAL_LSNS_DEFAULT: u64 = 16 * 1024;

/// Pages whose last LSN the writer remembers for `prev_lsn_page`; beyond it the backlink is
/// written as unknown ([`Lsn::INVALID`]) and pageservers do not check it.
pub const PAGE_TAILS_MAX: usize = 64 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WriteError {
    /// Fewer than a write quorum of members is reachable: nothing was shipped.
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

/// The records of one shipped mini-transaction, grouped by segment, in LSN order.
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
    reachable: MemberSet,
    tracker: ConsistencyTracker,
}

impl QuorumWriter {
    /// A writer of `epoch` whose log is durable up to `start` (the recovered VDL), where the last
    /// record of each segment at or below `start` is `segment_tails[segment]`.
    pub fn new(
        epoch: u64,
        start: Lsn,
        segment_tails: BTreeMap<SegmentId, Lsn>,
        layout: SegmentLayout,
        lal_lsns: u64,
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
            reachable: MemberSet::default(),
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
    pub fn reachable(&self) -> MemberSet {
        self.reachable
    }
    pub fn tracker(&self) -> &ConsistencyTracker {
        &self.tracker
    }

    pub fn member_up(&mut self, member: usize) {
        self.reachable.insert(member);
    }

    pub fn member_down(&mut self, member: usize) {
        self.reachable.remove(member);
    }

    /// Turns one commit's page changes into records. Refuses, shipping nothing, when no write
    /// quorum is reachable or the LAL is exhausted.
    pub fn submit(&mut self, changes: Vec<(PageNo, RedoBody)>) -> Result<ShippedMtr, WriteError> {
        if changes.is_empty() {
            return Err(WriteError::Empty);
        }
        if !self.reachable.is_write_quorum() {
            return Err(WriteError::ReadOnly {
                reachable: self.reachable.len(),
            });
        }
        let ahead = self.next_lsn.0 - 1 - self.tracker.vdl().0;
        if ahead >= self.lal_lsns {
            return Err(WriteError::Backpressure { ahead });
        }
        for (page, _) in &changes {
            let segment = self.layout.segment_of(*page);
            if segment.0 >= SEGMENTS_PER_VOLUME_MAX {
                return Err(WriteError::VolumeTooLarge {
                    page: *page,
                    segment,
                    segment_size_bytes: self.layout.segment_size_bytes(),
                });
            }
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

    /// A member acknowledged `scl` for `segment`; returns the new VDL if it advanced.
    pub fn on_ack(&mut self, member: usize, segment: SegmentId, scl: Lsn) -> Option<Lsn> {
        if scl > self.last_lsn() {
            // A member cannot hold records this writer never assigned: it is not in our epoch.
            return None;
        }
        self.tracker.on_ack(member, segment, scl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(b: u8) -> RedoBody {
        RedoBody::Image(vec![b; borealis_core::PAGE_SIZE_BYTES])
    }

    fn writer(up: &[usize]) -> QuorumWriter {
        let mut w = QuorumWriter::new(1, Lsn(0), BTreeMap::new(), SegmentLayout::default(), 100);
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
        let mut w = QuorumWriter::new(1, Lsn(0), BTreeMap::new(), SegmentLayout::default(), 2);
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
        let mut w = QuorumWriter::new(1, Lsn(0), BTreeMap::new(), SegmentLayout::new(4), 100);
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
        let mut w = QuorumWriter::new(1, Lsn(0), BTreeMap::new(), SegmentLayout::new(4), 100);
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
}
