//! The redo stream for readers: every MTR the writer ships is also handed, LSN-stamped, to each
//! [`RedoTap`] ([`PublishedMtr`]).
//!
//! Taps are filled while the writer's session lock is held ([`Taps::publish`] is called from
//! [`super::VolumeWriter::commit`]), so they see MTRs in LSN order, and an MTR is always in the
//! taps before the VDL can reach it: a reader that reads the VDL and *then* drains its tap holds
//! every MTR up to that VDL. A tap is bounded in bytes; a reader too slow to drain it loses the
//! stream (it is told, and starts over from the pageserver), never the writer's time.

use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{Lsn, PageNo, SegmentId};
use borealis_utils::LockExt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

/// Bytes of redo one [`RedoTap`] holds before its reader counts as lagging and loses the stream.
/// A reader drains its tap every few milliseconds; this covers seconds of heavy writing.
pub const REDO_TAP_BYTES_MAX: usize = 16 << 20;
/// Bookkeeping charged per record of a [`PublishedMtr`], on top of its body.
const PUBLISHED_RECORD_OVERHEAD_BYTES: usize = 48;

/// One commit as the writer shipped it: what a reader applies to the pages it has cached.
#[derive(Debug)]
pub struct PublishedMtr {
    /// LSN of the first record: the previous MTR's `commit_lsn` + 1 (LSNs are consecutive).
    pub first_lsn: Lsn,
    /// LSN of the last record, the consistency point: the MTR is visible once the VDL reaches it.
    pub commit_lsn: Lsn,
    /// Every page change of the commit, ascending by LSN.
    pub records: Vec<(Lsn, PageNo, RedoBody)>,
    /// When the writer shipped it (replica lag in time is measured from here).
    pub shipped_at: Instant,
}

impl PublishedMtr {
    /// Memory the MTR holds, roughly: what taps and reader queues are bounded by.
    pub fn bytes(&self) -> usize {
        self.records
            .iter()
            .map(|(_, _, b)| PUBLISHED_RECORD_OVERHEAD_BYTES + redo_body_len(b))
            .sum()
    }
}

fn redo_body_len(b: &RedoBody) -> usize {
    match b {
        RedoBody::Image(v) | RedoBody::Delta(v) => v.len(),
    }
}

/// A bounded, lossy subscription to a writer's shipped MTRs ([`super::VolumeWriter::subscribe`]).
///
/// The writer pushes and never waits; the reader drains. When the reader falls more than
/// [`REDO_TAP_BYTES_MAX`] behind, the tap drops everything it holds and remembers that it did
/// ([`TapDrain::overflowed`]); what it queues afterwards is again a gap-free run of MTRs.
#[derive(Debug, Default)]
pub struct RedoTap {
    inner: Mutex<TapInner>,
}

#[derive(Debug, Default)]
struct TapInner {
    mtrs: VecDeque<Arc<PublishedMtr>>,
    bytes: usize,
    overflowed: bool,
}

/// What [`RedoTap::drain`] returns.
#[derive(Debug, Default)]
pub struct TapDrain {
    /// MTRs were dropped before `mtrs` (the reader must give up what it derived from the stream).
    pub overflowed: bool,
    /// MTRs in LSN order, without gaps between them.
    pub mtrs: Vec<Arc<PublishedMtr>>,
}

impl RedoTap {
    fn push(&self, mtr: &Arc<PublishedMtr>) {
        let mut t = self.inner.locked();
        let bytes = mtr.bytes();
        if t.bytes + bytes > REDO_TAP_BYTES_MAX {
            t.mtrs.clear();
            t.bytes = 0;
            t.overflowed = true;
            if bytes > REDO_TAP_BYTES_MAX {
                return; // one MTR bigger than the whole tap: it is lost too
            }
        }
        t.bytes += bytes;
        t.mtrs.push_back(mtr.clone());
    }

    /// Takes everything queued since the last drain.
    pub fn drain(&self) -> TapDrain {
        let mut t = self.inner.locked();
        t.bytes = 0;
        TapDrain {
            overflowed: std::mem::take(&mut t.overflowed),
            mtrs: t.mtrs.drain(..).collect(),
        }
    }
}

/// The taps of one writer: readers following it.
#[derive(Debug, Default)]
pub(super) struct Taps {
    taps: Mutex<Vec<Weak<RedoTap>>>,
}

impl Taps {
    /// A new tap. The caller holds the writer's session lock, so the tap receives exactly the
    /// MTRs shipped after the LSN it reads under that lock.
    pub(super) fn subscribe(&self) -> Arc<RedoTap> {
        let tap = Arc::new(RedoTap::default());
        let mut taps = self.taps.locked();
        taps.retain(|t| t.strong_count() > 0);
        taps.push(Arc::downgrade(&tap));
        tap
    }

    /// Hands a shipped MTR to every live tap. Called with the session lock held.
    pub(super) fn publish(&self, commit_lsn: Lsn, segments: &[(SegmentId, Vec<RedoRecord>)]) {
        let mut taps = self.taps.locked();
        taps.retain(|t| t.strong_count() > 0);
        if taps.is_empty() {
            return;
        }
        let mut records: Vec<(Lsn, PageNo, RedoBody)> = segments
            .iter()
            .flat_map(|(_, rs)| rs.iter().map(|r| (r.lsn, r.page_no, r.body.clone())))
            .collect();
        records.sort_by_key(|(lsn, _, _)| *lsn);
        let Some(first_lsn) = records.first().map(|(lsn, _, _)| *lsn) else {
            return;
        };
        let mtr = Arc::new(PublishedMtr {
            first_lsn,
            commit_lsn,
            records,
            shipped_at: Instant::now(),
        });
        for tap in taps.iter().filter_map(Weak::upgrade) {
            tap.push(&mtr);
        }
    }
}
