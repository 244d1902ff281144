//! The retention window (RFC 0010): a segment as of any LSN inside `--pitr-window`.
//!
//! Three parts:
//!
//! - **The records** ([`RecordBuffer`]). With a window set, the follower keeps the records it
//!   applied above the last checkpoint; a checkpoint writes those at or below its cursor as a
//!   **delta layer** ([`crate::delta`]), usually alone (RFC 0011: the chain stays, and the
//!   deltas above its newest layer hold what changed), sometimes beside an image or changes
//!   layer, and drops them once its index is durable. The buffer is bounded: past [`HISTORY_BUFFER_BYTES_MAX`] it drops what
//!   it holds and starts again above the last record it was given, and the next checkpoint has
//!   no complete delta: the window restarts there.
//! - **What an index keeps** ([`retain`]). Besides its chain, an index names the image and
//!   changes layers and the deltas that rebuild every LSN from `history_from` to its checkpoint:
//!   `history_from` is the highest layer LSN at or below the newest checkpoint at or before
//!   `now − window`, and never above the chain's newest layer (bounded by
//!   [`HISTORY_LAYERS_MAX`] layers); kept are every image or changes layer at or above the
//!   newest image at or below it, and every delta ending above it.
//! - **Reading a page at an LSN** (`crate::window_read::page_at`), when the local page file says "too old": the
//!   newest image or changes layer at or below the LSN that lists the page gives its content as
//!   of `X`, the highest layer LSN at or below the LSN (a layer of `X`'s chain would list a newer
//!   version); its records in `(X, lsn]` come from the deltas and are applied on top. Ranged
//!   reads only: one directory per layer (cached) and one record or run of records per layer.
//!
//! Above the last checkpoint the local page file answers: with a window, compaction keeps every
//! version above it ([`crate::compaction`]).

use crate::delta::DeltaEntry;
use crate::index::{LayerRef, SegmentIndex};
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_utils::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes of records a segment's buffer holds at most (the object store may be down for long).
pub const HISTORY_BUFFER_BYTES_MAX: usize = 64 << 20;
/// A checkpoint is due once a segment's buffer holds this many bytes of records.
pub const HISTORY_BUFFER_CHECKPOINT_BYTES: usize = 16 << 20;
/// Bytes of records all the segments' buffers of one pageserver hold at most: past it, the
/// segment adding records drops its buffer (its window restarts at its next checkpoint).
pub const HISTORY_BUFFERS_BYTES_MAX: u64 = 512 << 20;
/// Past this many bytes in all buffers, a segment adding records asks for its checkpoint (if it
/// holds at least [`HISTORY_BUFFER_NUDGE_BYTES`]), so that the buffers drain before the bound.
pub const HISTORY_BUFFERS_CHECKPOINT_BYTES: u64 = 128 << 20;
pub const HISTORY_BUFFER_NUDGE_BYTES: usize = 1 << 20;
/// Layers (chain, history and deltas) an index names at most: past it, the window is shortened.
pub const HISTORY_LAYERS_MAX: usize = 512;

/// The records a segment applied above its last checkpoint (see the module docs).
#[derive(Debug)]
pub struct RecordBuffer {
    /// Every record applied above this LSN is here (up to the newest pushed).
    above: Lsn,
    records: Vec<RedoRecord>,
    bytes: usize,
    /// Bytes in every buffer of the pageserver (this one's included).
    total: Arc<AtomicU64>,
    /// Times a bound was reached.
    pub overflows: u64,
}

impl Drop for RecordBuffer {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes as u64, Ordering::Relaxed);
    }
}

/// What [`RecordBuffer::push`] asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Kept,
    /// The pageserver's buffers are filling: checkpoint this segment soon.
    CheckpointSoon,
    /// A bound was reached: the buffer was emptied (the window restarts).
    Dropped,
}

impl RecordBuffer {
    /// A buffer of the records above `above` (the checkpoint the follower starts from), counted
    /// in `total` with every other buffer of the pageserver.
    pub fn new(above: Lsn, total: Arc<AtomicU64>) -> Self {
        RecordBuffer {
            above,
            records: Vec::new(),
            bytes: 0,
            total,
            overflows: 0,
        }
    }

    fn release(&mut self, bytes: usize) {
        self.bytes -= bytes;
        self.total.fetch_sub(bytes as u64, Ordering::Relaxed);
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds records just applied (in LSN order, above every record held). Past this buffer's
    /// bound or the pageserver's, it empties instead and holds the records above the last one.
    pub fn push(&mut self, records: &[RedoRecord]) -> Pushed {
        let Some(last) = records.last() else {
            return Pushed::Kept;
        };
        debug_assert!(self.records.last().is_none_or(|r| r.lsn < records[0].lsn));
        let bytes: usize = records.iter().map(|r| r.encoded_len()).sum();
        let total = self.total.load(Ordering::Relaxed);
        if self.bytes + bytes > HISTORY_BUFFER_BYTES_MAX
            || total + bytes as u64 > HISTORY_BUFFERS_BYTES_MAX
        {
            self.records.clear();
            self.release(self.bytes);
            self.above = last.lsn;
            self.overflows += 1;
            return Pushed::Dropped;
        }
        self.records.extend_from_slice(records);
        self.bytes += bytes;
        let total = self.total.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if total > HISTORY_BUFFERS_CHECKPOINT_BYTES && self.bytes >= HISTORY_BUFFER_NUDGE_BYTES {
            Pushed::CheckpointSoon
        } else {
            Pushed::Kept
        }
    }

    /// The records in `(from, to]`, if the buffer holds all of them.
    pub fn delta(&self, from: Lsn, to: Lsn) -> Option<Vec<RedoRecord>> {
        if self.above > from {
            return None;
        }
        Some(
            self.records
                .iter()
                .filter(|r| r.lsn > from && r.lsn <= to)
                .cloned()
                .collect(),
        )
    }

    /// Whether every record applied above `from` is here (a delta from `from` can be written).
    pub fn holds_above(&self, from: Lsn) -> bool {
        self.above <= from
    }

    /// The pages the records in `(from, to]` change, increasing, each once.
    pub fn pages_in(&self, from: Lsn, to: Lsn) -> Vec<u32> {
        let mut pages: Vec<u32> = self
            .records
            .iter()
            .filter(|r| r.lsn > from && r.lsn <= to)
            .map(|r| r.page_no.0)
            .collect();
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// A checkpoint at `lsn` is durable: its records leave.
    pub fn checkpointed(&mut self, lsn: Lsn) {
        let keep = self.records.partition_point(|r| r.lsn <= lsn);
        let gone: usize = self.records[..keep].iter().map(|r| r.encoded_len()).sum();
        self.records.drain(..keep);
        self.release(gone);
        self.above = self.above.max(lsn);
    }
}

/// What an index keeps for the window besides its chain (the version 3 fields of
/// [`crate::index::SegmentIndex`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    pub history: Vec<LayerRef>,
    pub deltas: Vec<LayerRef>,
    pub from: Option<Lsn>,
    pub checkpoints: Vec<(Lsn, u64)>,
}

impl Kept {
    /// `index` with what this keeps besides its chain (version 3's fields).
    pub fn onto(&self, mut index: SegmentIndex) -> SegmentIndex {
        index.history = self.history.clone();
        index.deltas = self.deltas.clone();
        index.history_from = self.from;
        index.checkpoints = self.checkpoints.clone();
        index
    }
}

/// What a checkpoint at `checkpoint` (wall clock `now_ms`) keeps, given what the previous index
/// kept and its chain (`old_chain`), the new chain, and the new delta layer (`None`: the records
/// were not all at hand, so the window restarts at this checkpoint). `window_ms` 0 keeps no
/// history.
pub fn retain(
    old: &Kept,
    old_chain: &[LayerRef],
    new_chain: &[LayerRef],
    new_delta: Option<LayerRef>,
    checkpoint: Lsn,
    (now_ms, window_ms): (u64, u64),
) -> Kept {
    let Some(new_delta) = new_delta.filter(|_| window_ms > 0) else {
        return Kept {
            from: (window_ms > 0).then_some(checkpoint),
            checkpoints: if window_ms > 0 {
                vec![(checkpoint, now_ms)]
            } else {
                Vec::new()
            },
            ..Kept::default()
        };
    };
    // Every image and changes layer known, by LSN; the new chain's are not history.
    let mut layers: Vec<LayerRef> = old.history.iter().chain(old_chain).cloned().collect();
    layers.retain(|l| !new_chain.contains(l));
    layers.sort_by_key(|l| l.lsn);
    layers.dedup();
    let mut deltas = old.deltas.clone();
    // A delta that does not start where the old ones end (a restore from another lineage's
    // index, in principle) restarts the deltas.
    if deltas.last().map(|d| d.lsn) != new_delta.from_lsn {
        deltas.clear();
    }
    deltas.push(new_delta);
    let deltas_from = deltas[0].from_lsn.unwrap_or(checkpoint);
    let mut checkpoints = old.checkpoints.clone();
    checkpoints.retain(|c| c.0 >= deltas_from && c.0 < checkpoint);
    checkpoints.push((checkpoint, now_ms));
    // The window's start: the newest checkpoint at or before `now - window`, else the oldest
    // from which the deltas run (the start of the old window, or of the log).
    let horizon_ms = now_ms.saturating_sub(window_ms);
    let wanted = checkpoints
        .iter()
        .rev()
        .find(|c| c.1 <= horizon_ms)
        .map_or(old.from.unwrap_or(deltas_from).max(deltas_from), |c| c.0);
    let mut from = window_start(&layers, new_chain, wanted);
    loop {
        let kept = keep_from(&layers, new_chain, &deltas, &checkpoints, from);
        let named = new_chain.len() + kept.history.len() + kept.deltas.len();
        if named <= HISTORY_LAYERS_MAX {
            return kept;
        }
        // Too many layers: the window starts at the next layer (never above the chain top).
        let Some(next) = layers
            .iter()
            .chain(new_chain)
            .map(|l| l.lsn)
            .filter(|&l| l > from)
            .min()
            .map(|l| window_start(&layers, new_chain, l))
            .filter(|&l| l > from)
        else {
            return kept;
        };
        from = next;
    }
}

/// Where a window that should start at `wanted` starts: at the highest layer LSN at or below it
/// (of `layers` or `chain`), as a read rebuilds from the highest layer below its LSN plus the
/// deltas above that layer; `wanted` itself if no layer is that low (the deltas then start
/// there). Never above the chain top: the deltas above it are the segment's current state (RFC
/// 0011).
fn window_start(layers: &[LayerRef], chain: &[LayerRef], wanted: Lsn) -> Lsn {
    let snapped = layers
        .iter()
        .chain(chain)
        .map(|l| l.lsn)
        .filter(|&l| l <= wanted)
        .max()
        .unwrap_or(wanted);
    chain.last().map_or(snapped, |top| snapped.min(top.lsn))
}

/// Directories read so far, by layer (name, generation).
pub(crate) type Cached<T> = HashMap<(String, u32), Arc<Vec<T>>>;

/// The directories of `cache` (if any) that belong to one of `refs`.
fn carried<T>(cache: Option<&Mutex<Cached<T>>>, refs: &[LayerRef]) -> Cached<T> {
    let Some(cache) = cache else {
        return Cached::new();
    };
    cache
        .locked()
        .iter()
        .filter(|(k, _)| refs.iter().any(|l| l.name == k.0 && l.generation == k.1))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What a window starting at `from` keeps of `layers` (image and changes layers not in `chain`),
/// `deltas` and `checkpoints`: the layers at or above the newest image at or below `from`, the
/// deltas ending above it, the checkpoint marks from it on.
fn keep_from(
    layers: &[LayerRef],
    chain: &[LayerRef],
    deltas: &[LayerRef],
    checkpoints: &[(Lsn, u64)],
    from: Lsn,
) -> Kept {
    let image_floor = layers
        .iter()
        .chain(chain)
        .filter(|l| l.is_image() && l.lsn <= from)
        .map(|l| l.lsn)
        .max()
        .unwrap_or(Lsn::INVALID);
    Kept {
        history: layers
            .iter()
            .filter(|l| l.lsn >= image_floor)
            .cloned()
            .collect(),
        deltas: deltas.iter().filter(|d| d.lsn > from).cloned().collect(),
        from: Some(from),
        checkpoints: checkpoints
            .iter()
            .filter(|c| c.0 >= from)
            .copied()
            .collect(),
    }
}

/// The window of an index that saw no checkpoint for a while, moved on to `now − window`: what
/// it keeps then, if that names fewer layers (else `None`: nothing to upload). A segment nobody
/// writes any more must not keep its history for ever.
pub fn expire(old: &Kept, chain: &[LayerRef], (now_ms, window_ms): (u64, u64)) -> Option<Kept> {
    let current = old.from?;
    if window_ms == 0 {
        return None;
    }
    let horizon_ms = now_ms.saturating_sub(window_ms);
    let from = old
        .checkpoints
        .iter()
        .rev()
        .find(|c| c.1 <= horizon_ms)
        .map(|c| window_start(&old.history, chain, c.0))
        .filter(|&f| f > current)?;
    let kept = keep_from(&old.history, chain, &old.deltas, &old.checkpoints, from);
    (kept.history.len() + kept.deltas.len() < old.history.len() + old.deltas.len()).then_some(kept)
}

/// Whether a segment whose index keeps `old` besides `chain` was idle for a whole window while
/// deltas are above the chain's newest layer: its newest checkpoint is older than `now − window`
/// and above that layer. Then the deltas are only the segment's current state, which a changes
/// layer can hold instead (RFC 0011, an idle segment's fold); a segment still written to keeps
/// them until [`crate::checkpoint`] writes a layer on its own.
pub fn idle_past_chain_top(
    old: &Kept,
    chain: &[LayerRef],
    (now_ms, window_ms): (u64, u64),
) -> bool {
    let (Some(top), Some(newest)) = (chain.last(), old.checkpoints.last()) else {
        return false;
    };
    window_ms > 0 && newest.1 <= now_ms.saturating_sub(window_ms) && newest.0 > top.lsn
}

/// A segment's window as of its newest durable index, for reads: the layers and deltas it
/// names, and the directories read so far.
#[derive(Debug)]
pub struct Window {
    pub tenant: TenantId,
    pub segment: SegmentId,
    /// Reads from `from` to `upto` (the index's checkpoint) are served.
    pub from: Lsn,
    pub upto: Lsn,
    /// Image and changes layers (history and chain), by increasing LSN.
    pub(crate) layers: Vec<LayerRef>,
    /// Delta layers, by increasing LSN.
    pub(crate) deltas: Vec<LayerRef>,
    /// Directories read so far (`crate::window_read`).
    pub(crate) directories: Mutex<Cached<u32>>,
    pub(crate) delta_directories: Mutex<Cached<DeltaEntry>>,
}

impl Window {
    /// The window of an index of `tenant`'s `segment` at `upto` with `chain` that kept `kept`;
    /// `None` if it keeps no history.
    pub fn new(
        (tenant, segment): (TenantId, SegmentId),
        upto: Lsn,
        chain: &[LayerRef],
        kept: &Kept,
    ) -> Option<Window> {
        let from = kept.from?;
        let mut layers: Vec<LayerRef> = kept.history.iter().chain(chain).cloned().collect();
        layers.sort_by_key(|l| l.lsn);
        Some(Window {
            tenant,
            segment,
            from,
            upto,
            layers,
            deltas: kept.deltas.clone(),
            directories: Mutex::default(),
            delta_directories: Mutex::default(),
        })
    }

    pub fn covers(&self, lsn: Lsn) -> bool {
        self.from <= lsn && lsn <= self.upto
    }

    /// The window that rebuilds a chain's checkpoint `upto` only (RFC 0011): the chain's layers
    /// and the `deltas` above its newest layer, no history (which the retention window may drop
    /// while the chain is still in use). Directories `previous` already read are carried over.
    pub fn of_chain(
        (tenant, segment): (TenantId, SegmentId),
        upto: Lsn,
        chain: &[LayerRef],
        deltas: &[LayerRef],
        previous: Option<&Window>,
    ) -> Window {
        let top = chain.last().map_or(Lsn::INVALID, |l| l.lsn);
        let deltas: Vec<LayerRef> = deltas.iter().filter(|d| d.lsn > top).cloned().collect();
        let mut layers = chain.to_vec();
        layers.sort_by_key(|l| l.lsn);
        let directories = carried(previous.map(|p| &p.directories), &layers);
        let delta_directories = carried(previous.map(|p| &p.delta_directories), &deltas);
        Window {
            tenant,
            segment,
            from: top,
            upto,
            layers,
            deltas,
            directories: Mutex::new(directories),
            delta_directories: Mutex::new(delta_directories),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{LayerKind, LayerMeta, LAYER_VERSION};
    use borealis_core::{PageNo, PAGE_SIZE_BYTES};
    use borealis_objstore::keys::Generation;

    fn meta(lsn: u64) -> LayerMeta {
        LayerMeta {
            version: LAYER_VERSION,
            kind: LayerKind::Image,
            tenant: TenantId(1),
            segment: SegmentId(0),
            lsn: Lsn(lsn),
            last_record_lsn: Lsn(lsn),
            page_count: 1,
        }
    }
    fn image(lsn: u64) -> LayerRef {
        LayerRef::image(format!("i{lsn}"), Generation(1), &meta(lsn), 0)
    }
    fn changes(from: u64, lsn: u64) -> LayerRef {
        LayerRef::changes(format!("c{lsn}"), Generation(1), Lsn(from), &meta(lsn), 0)
    }
    fn delta(from: u64, to: u64) -> LayerRef {
        LayerRef::delta(
            format!("d{to}"),
            Generation(1),
            (Lsn(from), Lsn(to)),
            1,
            100,
            0,
        )
    }

    #[test]
    fn the_buffer_holds_what_the_next_delta_needs_and_restarts_past_its_bound() {
        let rec = |lsn: u64| RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(lsn - 1),
            prev_lsn_page: Lsn::INVALID,
            page_no: PageNo(0),
            is_cpl: true,
            body: borealis_core::redo::RedoBody::Image(vec![0; PAGE_SIZE_BYTES]),
        };
        let total = Arc::new(AtomicU64::new(0));
        let mut b = RecordBuffer::new(Lsn(10), total.clone());
        assert_eq!(b.push(&[rec(11), rec(12), rec(13)]), Pushed::Kept);
        assert_eq!(
            total.load(Ordering::Relaxed),
            3 * rec(11).encoded_len() as u64
        );
        assert_eq!(b.delta(Lsn(10), Lsn(12)).unwrap().len(), 2);
        assert!(
            b.delta(Lsn(5), Lsn(12)).is_none(),
            "records at or below 10 are not here"
        );
        b.checkpointed(Lsn(12));
        assert_eq!(b.delta(Lsn(12), Lsn(13)).unwrap().len(), 1);
        assert_eq!(b.bytes(), rec(13).encoded_len());
        assert_eq!(total.load(Ordering::Relaxed), b.bytes() as u64);
        // Past the bound: everything goes, and the buffer restarts above the last record.
        let n = HISTORY_BUFFER_BYTES_MAX / rec(1).encoded_len();
        let many: Vec<RedoRecord> = (14..14 + n as u64).map(rec).collect();
        assert_eq!(b.push(&many), Pushed::Dropped);
        assert_eq!((b.bytes(), b.overflows), (0, 1));
        assert_eq!(total.load(Ordering::Relaxed), 0);
        assert!(b.delta(Lsn(12), Lsn(20)).is_none());
        let last = 13 + n as u64;
        b.push(&[rec(last + 1)]);
        assert_eq!(b.delta(Lsn(last), Lsn(last + 1)).unwrap().len(), 1);
        // The pageserver's bound: other buffers hold most of it; this one empties, and asks for
        // a checkpoint while the buffers are merely filling.
        let mut other = RecordBuffer::new(Lsn(0), total.clone());
        let big: Vec<RedoRecord> = (1..=(2 * HISTORY_BUFFER_NUDGE_BYTES / rec(1).encoded_len())
            as u64)
            .map(rec)
            .collect();
        total.fetch_add(HISTORY_BUFFERS_CHECKPOINT_BYTES, Ordering::Relaxed);
        assert_eq!(other.push(&big), Pushed::CheckpointSoon);
        total.fetch_add(HISTORY_BUFFERS_BYTES_MAX, Ordering::Relaxed);
        let next = big.len() as u64 + 1;
        assert_eq!(other.push(&[rec(next)]), Pushed::Dropped);
        assert_eq!(other.bytes(), 0);
        total.fetch_sub(
            HISTORY_BUFFERS_BYTES_MAX + HISTORY_BUFFERS_CHECKPOINT_BYTES,
            Ordering::Relaxed,
        );
        drop(b);
        drop(other);
        assert_eq!(
            total.load(Ordering::Relaxed),
            0,
            "a dropped buffer releases its bytes"
        );
    }

    #[test]
    fn retention_keeps_the_chain_of_the_windows_start_and_the_deltas_above_it() {
        let min = 60_000;
        // Checkpoints every minute at LSN 100, 200, ...; an image at 100 and 400.
        let mut kept = Kept::default();
        let mut chain: Vec<LayerRef> = Vec::new();
        for step in 1..=8u64 {
            let lsn = step * 100;
            let new_chain = if step == 1 || step == 4 {
                vec![image(lsn)]
            } else {
                let mut c = chain.clone();
                c.push(changes(lsn - 100, lsn));
                c
            };
            let d = delta(lsn - 100, lsn);
            kept = retain(
                &kept,
                &chain,
                &new_chain,
                Some(d),
                Lsn(lsn),
                (step * min, 3 * min),
            );
            chain = new_chain;
            let named: Vec<u64> = kept.history.iter().map(|l| l.lsn.0).collect();
            let deltas: Vec<u64> = kept.deltas.iter().map(|l| l.lsn.0).collect();
            match step {
                1 => {
                    // The window is younger than three minutes: from the log's start.
                    assert_eq!(kept.from, Some(Lsn(0)));
                    assert_eq!(deltas, [100]);
                }
                5 => {
                    // now = 5 min: the window starts at the checkpoint of minute 2 (LSN 200),
                    // whose chain is the image at 100 and the changes at 200.
                    assert_eq!(kept.from, Some(Lsn(200)));
                    assert_eq!(named, [100, 200, 300]);
                    assert_eq!(deltas, [300, 400, 500]);
                }
                8 => {
                    // now = 8 min: from 500, whose chain is the image at 400 and changes at 500.
                    assert_eq!(kept.from, Some(Lsn(500)));
                    assert!(
                        named.is_empty(),
                        "{named:?}: the chain at 800 holds 400..800"
                    );
                    assert_eq!(deltas, [600, 700, 800]);
                    assert_eq!(
                        kept.checkpoints.iter().map(|c| c.0 .0).collect::<Vec<_>>(),
                        [500, 600, 700, 800]
                    );
                }
                _ => {}
            }
        }
        // No delta: the window restarts at the checkpoint.
        let reset = retain(&kept, &chain, &chain, None, Lsn(900), (9 * min, 3 * min));
        assert_eq!(reset.from, Some(Lsn(900)));
        assert!(reset.history.is_empty() && reset.deltas.is_empty());
        // Idle: nothing new for three minutes, and the window moves on without a checkpoint:
        // at 11 min only the chain at 800 is left.
        assert_eq!(
            expire(&kept, &chain, (8 * min, 3 * min)),
            None,
            "nothing to drop yet"
        );
        assert_eq!(
            expire(&kept, &chain, (9 * min, 3 * min))
                .unwrap()
                .deltas
                .len(),
            2
        );
        let idle = expire(&kept, &chain, (11 * min, 3 * min)).unwrap();
        assert_eq!(idle.from, Some(Lsn(800)));
        assert!(
            idle.history.is_empty() && idle.deltas.is_empty(),
            "{idle:?}"
        );
        assert_eq!(expire(&idle, &chain, (60 * min, 3 * min)), None);
        assert_eq!(expire(&kept, &chain, (11 * min, 0)), None);
        // No window: nothing kept.
        let off = retain(
            &kept,
            &chain,
            &chain,
            Some(delta(800, 900)),
            Lsn(900),
            (9 * min, 0),
        );
        assert_eq!(off, Kept::default());
    }

    /// RFC 0011: checkpoints that write only a delta keep the chain; the window never starts
    /// above the chain top (its deltas are the segment's current state) and always at a layer
    /// (a read rebuilds from the highest layer below it), however old the checkpoints are.
    #[test]
    fn retention_keeps_every_delta_above_the_chain_top() {
        let min = 60_000;
        let chain = vec![image(100)];
        let mut kept = retain(
            &Kept::default(),
            &[],
            &chain,
            Some(delta(0, 100)),
            Lsn(100),
            (min, 3 * min),
        );
        for step in 2..=8u64 {
            let lsn = step * 100;
            kept = retain(
                &kept,
                &chain,
                &chain,
                Some(delta(lsn - 100, lsn)),
                Lsn(lsn),
                (step * min, 3 * min),
            );
            if step < 4 {
                // The window is younger than three minutes: from the log's start.
                assert_eq!(kept.from, Some(Lsn(0)), "step {step}");
                continue;
            }
            // The window's start (minute `step - 3`) is above the chain top: clamped to it.
            assert_eq!(kept.from, Some(Lsn(100)), "step {step}");
            let deltas: Vec<u64> = kept.deltas.iter().map(|l| l.lsn.0).collect();
            assert_eq!(deltas, (2..=step).map(|s| s * 100).collect::<Vec<_>>());
        }
        // Idle: the window cannot move past the chain top.
        assert_eq!(expire(&kept, &chain, (60 * min, 3 * min)), None);
        // A changes layer since the chain top at 900: the window (from minute 6, LSN 600)
        // snaps down to the highest layer at or below it, the image at 100, until the window
        // passes 900.
        let new_chain = vec![image(100), changes(100, 900)];
        let kept9 = retain(
            &kept,
            &chain,
            &new_chain,
            Some(delta(800, 900)),
            Lsn(900),
            (9 * min, 3 * min),
        );
        assert_eq!(kept9.from, Some(Lsn(100)));
        assert_eq!(kept9.deltas.len(), 8);
        let later = expire(&kept9, &new_chain, (13 * min, 3 * min)).unwrap();
        assert_eq!(later.from, Some(Lsn(900)));
        assert!(
            later.deltas.is_empty() && later.history.is_empty(),
            "{later:?}"
        );
    }

    /// The fold's trigger: deltas above the chain top, and no checkpoint for a whole window.
    #[test]
    fn an_idle_segment_folds_only_after_a_whole_window_without_a_checkpoint() {
        let min = 60_000;
        let chain = vec![image(100)];
        let kept = Kept {
            deltas: vec![delta(100, 200), delta(200, 300)],
            from: Some(Lsn(100)),
            checkpoints: vec![(Lsn(100), min), (Lsn(200), 2 * min), (Lsn(300), 3 * min)],
            ..Kept::default()
        };
        let window = 3 * min;
        // The newest checkpoint (minute 3) is not a window old yet.
        assert!(!idle_past_chain_top(&kept, &chain, (5 * min, window)));
        assert!(idle_past_chain_top(&kept, &chain, (6 * min, window)));
        // No window, or nothing above the chain top: nothing to fold.
        assert!(!idle_past_chain_top(&kept, &chain, (60 * min, 0)));
        let at_top = vec![image(100), changes(100, 300)];
        assert!(!idle_past_chain_top(&kept, &at_top, (60 * min, window)));
    }

    /// A chain's own window: its layers and the deltas above its top only, with the
    /// directories an earlier one read for the layers it still names.
    #[test]
    fn a_chain_window_keeps_the_deltas_above_the_top_and_what_was_read() {
        let ids = (TenantId(1), SegmentId(0));
        let chain = vec![image(100), changes(100, 200)];
        let deltas = vec![delta(100, 200), delta(200, 300), delta(300, 400)];
        let first = Window::of_chain(ids, Lsn(300), &chain, &deltas[..2], None);
        assert_eq!((first.from, first.upto), (Lsn(200), Lsn(300)));
        assert_eq!(first.deltas, [delta(200, 300)]);
        first
            .directories
            .locked()
            .insert(("i100".into(), 1), Arc::new(vec![1, 2]));
        first
            .delta_directories
            .locked()
            .insert(("d300".into(), 1), Arc::new(Vec::new()));
        first
            .delta_directories
            .locked()
            .insert(("gone".into(), 1), Arc::new(Vec::new()));
        let next = Window::of_chain(ids, Lsn(400), &chain, &deltas, Some(&first));
        assert_eq!(next.deltas, [delta(200, 300), delta(300, 400)]);
        assert!(next
            .directories
            .locked()
            .contains_key(&("i100".to_string(), 1)));
        let carried = next.delta_directories.locked();
        assert!(carried.contains_key(&("d300".to_string(), 1)));
        assert!(
            !carried.contains_key(&("gone".to_string(), 1)),
            "not named any more"
        );
    }

    #[test]
    fn retention_stays_within_the_layer_bound() {
        // Checkpoints every millisecond, a window of an hour: the bound shortens it.
        let mut kept = Kept::default();
        let mut chain = vec![image(1)];
        for lsn in 2..2000u64 {
            let mut new_chain = chain.clone();
            new_chain.push(changes(lsn - 1, lsn));
            if new_chain.len() > 60 {
                new_chain = vec![image(lsn)];
            }
            kept = retain(
                &kept,
                &chain,
                &new_chain,
                Some(delta(lsn - 1, lsn)),
                Lsn(lsn),
                (lsn, 3_600_000),
            );
            chain = new_chain;
            let named = chain.len() + kept.history.len() + kept.deltas.len();
            assert!(named <= HISTORY_LAYERS_MAX, "{named} layers at {lsn}");
            // Every LSN from `from` is rebuildable: a delta from at most `from`, and the
            // image at or below it is kept.
            let from = kept.from.unwrap();
            assert!(kept.deltas[0].from_lsn.unwrap() <= from);
            let all: Vec<&LayerRef> = kept.history.iter().chain(&chain).collect();
            assert!(
                all.iter().any(|l| l.is_image() && l.lsn <= from),
                "at {lsn}"
            );
        }
        assert!(kept.from.unwrap() > Lsn(1000), "{:?}", kept.from);
    }
}
