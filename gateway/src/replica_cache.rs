//! The page cache of a read replica: pages as of one read point, moved forward by the writer's
//! redo stream. Sans-IO: it is fed MTRs and targets and asked for pages; the reader thread
//! ([`crate::compute_pool::reader`]) owns the tap, the pageserver connection and the clock.
//!
//! ## The rule
//!
//! Every page in the cache is the page **as of the read point** — no older, no newer. A page the
//! cache does not hold is fetched by the caller from the pageserver at the read point
//! (GetPage@read point) and inserted. The read point is always a VDL the writer reached, i.e. a
//! consistency point (the last record of a commit) that is durable; so a reader shows a prefix of
//! the writer's commits, whole, in LSN order, and nothing that could still be lost.
//!
//! ## Moving the read point
//!
//! [`ReplicaCache::advance`] moves the read point to a newer VDL. When the cache holds, gap-free,
//! every MTR between the old read point and the target ("synced"), it applies them, in LSN order,
//! to the pages it has cached (pages it does not have are skipped: the pageserver will serve them
//! at the new read point) — a warm cache stays warm. When it does not (it just started, the
//! stream was lost, the target is not a commit it has seen), it **drops every page** and jumps:
//! pages then come from the pageserver at the new read point. Either way the rule holds; only
//! the cost differs. The read point never moves backwards ([`ReplicaCache::advance`] ignores
//! older targets; [`ReplicaCache::follow`] keeps it).
//!
//! ## The stream
//!
//! MTRs arrive with [`ReplicaCache::receive`] in LSN order. Each must start right after the
//! previous one (`first_lsn == previous commit_lsn + 1`); a gap, an overflowed tap
//! ([`ReplicaCache::stream_lost`]) or a queue over [`READER_QUEUE_BYTES_MAX`] makes the cache
//! unsynced until the stream again reaches right above the read point. MTRs at or below the read
//! point are dropped on arrival: the pageserver already serves their effect.

use crate::page_client::Page;
use crate::volume_writer::{PublishedMtr, REDO_TAP_BYTES_MAX};
use borealis_core::{Lsn, PageNo, PAGE_SIZE_BYTES};
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

/// Redo bytes a reader keeps queued above its read point before it gives up the stream and
/// starts over from the pageserver. The LAL bounds what is above the writer's VDL; this bounds
/// what a reader that has not advanced recently holds.
pub const READER_QUEUE_BYTES_MAX: usize = 32 << 20;
// A whole tap must fit in the queue, or every drain of a full tap would lose the stream.
const _: () = assert!(READER_QUEUE_BYTES_MAX >= REDO_TAP_BYTES_MAX);

/// What [`ReplicaCache::advance`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advanced {
    /// The target was not newer than the read point.
    Unchanged,
    /// The read point moved by applying `mtrs` commits to the cached pages.
    Streamed { mtrs: usize },
    /// The read point jumped; every cached page was dropped.
    Reset,
}

/// Counters for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub resets: u64,
    pub mtrs_applied: u64,
    /// Records applied to a cached page.
    pub records_applied: u64,
    /// Records for pages not cached (nothing to do).
    pub records_skipped: u64,
    /// Times the stream was lost (overflow, gap, queue bound).
    pub streams_lost: u64,
    /// Records that did not apply to the cached image (the page was dropped instead).
    pub records_failed: u64,
}

pub struct ReplicaCache {
    read_point: Lsn,
    /// Pages as of `read_point`; `None` = never written.
    pages: lru::LruCache<PageNo, Option<Page>>,
    /// Received MTRs above the read point, gap-free, in LSN order.
    queue: VecDeque<Arc<PublishedMtr>>,
    queue_bytes: usize,
    /// First LSN of the next MTR the stream will deliver, when known.
    next_expected: Option<Lsn>,
    /// Every MTR above the read point is in `queue` or still to come from the stream.
    synced: bool,
    stats: CacheStats,
}

impl ReplicaCache {
    /// An empty cache at `read_point`, following no stream yet.
    pub fn new(capacity_pages: usize, read_point: Lsn) -> Self {
        let cap = NonZeroUsize::new(capacity_pages.max(1)).expect("max(1) is non-zero");
        Self {
            read_point,
            pages: lru::LruCache::new(cap),
            queue: VecDeque::new(),
            queue_bytes: 0,
            next_expected: None,
            synced: false,
            stats: CacheStats::default(),
        }
    }

    pub fn read_point(&self) -> Lsn {
        self.read_point
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// Whether the cache can move forward by applying redo (rather than dropping its pages).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Starts following a new stream whose first MTR will start right after `stream_after`
    /// (what [`VolumeWriter::subscribe`](crate::volume_writer::VolumeWriter::subscribe) returned).
    /// Everything derived from an earlier stream is dropped; the read point stays.
    pub fn follow(&mut self, stream_after: Lsn) {
        self.drop_derived();
        self.next_expected = Some(stream_after.next());
        self.synced = stream_after == self.read_point;
    }

    /// The stream lost MTRs (the tap overflowed): give up what depended on it being whole.
    pub fn stream_lost(&mut self) {
        self.stats.streams_lost += 1;
        self.drop_derived();
        self.next_expected = None;
    }

    fn drop_derived(&mut self) {
        self.pages.clear();
        self.queue.clear();
        self.queue_bytes = 0;
        self.synced = false;
    }

    /// Takes the next MTR of the stream.
    pub fn receive(&mut self, mtr: Arc<PublishedMtr>) {
        assert!(
            mtr.first_lsn.is_valid() && mtr.first_lsn <= mtr.commit_lsn,
            "malformed MTR {}..{}",
            mtr.first_lsn,
            mtr.commit_lsn
        );
        if self.next_expected.is_some_and(|n| n != mtr.first_lsn) {
            self.stream_lost();
        }
        self.next_expected = Some(mtr.commit_lsn.next());
        if mtr.commit_lsn <= self.read_point {
            return; // the pageserver serves it at the read point already
        }
        if mtr.first_lsn <= self.read_point {
            // Straddles the read point, which is always a commit: not a stream we understand.
            self.stream_lost();
            self.next_expected = Some(mtr.commit_lsn.next());
            return;
        }
        self.queue_bytes += mtr.bytes();
        self.queue.push_back(mtr);
        if self.queue_bytes > READER_QUEUE_BYTES_MAX {
            let next = self.next_expected;
            self.stream_lost();
            self.next_expected = next;
        }
    }

    /// Moves the read point to `target`, a VDL of the writer whose stream this cache follows.
    /// The caller must have received every MTR the stream delivered *after* reading `target`.
    pub fn advance(&mut self, target: Lsn) -> Advanced {
        if target <= self.read_point {
            return Advanced::Unchanged;
        }
        if self.synced {
            let mut at = self.read_point;
            let mut mtrs = 0;
            while self
                .queue
                .front()
                .is_some_and(|m| m.commit_lsn <= target && m.first_lsn == at.next())
            {
                let mtr = self.queue.pop_front().expect("front checked");
                self.queue_bytes -= mtr.bytes();
                self.apply(&mtr);
                at = mtr.commit_lsn;
                mtrs += 1;
            }
            if at == target {
                self.read_point = target;
                self.stats.mtrs_applied += mtrs as u64;
                return Advanced::Streamed { mtrs };
            }
            // The target is not a commit boundary of the stream we hold: jump instead.
        }
        self.stats.resets += 1;
        self.pages.clear();
        self.read_point = target;
        while self.queue.front().is_some_and(|m| m.first_lsn <= target) {
            let mtr = self.queue.pop_front().expect("front checked");
            self.queue_bytes -= mtr.bytes();
        }
        self.synced = match self.queue.front() {
            Some(m) => m.first_lsn == target.next(),
            None => self.next_expected == Some(target.next()),
        };
        Advanced::Reset
    }

    fn apply(&mut self, mtr: &PublishedMtr) {
        for (lsn, page, body) in &mtr.records {
            // peek_mut: following the stream must not reorder the LRU.
            let Some(slot) = self.pages.peek_mut(page) else {
                self.stats.records_skipped += 1;
                continue;
            };
            let img = slot.get_or_insert_with(|| Arc::new(vec![0u8; PAGE_SIZE_BYTES]));
            match body.apply(Arc::make_mut(img).as_mut_slice()) {
                Ok(()) => self.stats.records_applied += 1,
                Err(e) => {
                    // The writer applied this very record to the same image: a bug somewhere.
                    // The page from the pageserver is right, so drop ours rather than guess.
                    tracing::error!(page = %page, lsn = %lsn, error = %e, "replica could not apply a record; page dropped");
                    self.stats.records_failed += 1;
                    self.pages.pop(page);
                }
            }
        }
    }

    /// The cached page as of the read point: `Some(None)` for a page known never written,
    /// `None` if it must be fetched.
    pub fn get(&mut self, page: PageNo) -> Option<Option<Page>> {
        self.pages.get(&page).cloned()
    }

    /// Whether `page` is cached (without touching its place in the LRU).
    pub fn contains(&self, page: PageNo) -> bool {
        self.pages.contains(&page)
    }

    /// Caches `page` as fetched from the pageserver **at the current read point**.
    pub fn insert(&mut self, page: PageNo, image: Option<Page>) {
        self.pages.put(page, image);
    }

    /// When the oldest commit that is durable (≤ `vdl`) but not yet shown was shipped: how far
    /// behind in time an answer at the read point is. `None` when nothing durable is missing
    /// or the cache does not know (not synced).
    pub fn oldest_unshown_shipped_at(&self, vdl: Lsn) -> Option<Instant> {
        if !self.synced {
            return None;
        }
        self.queue
            .front()
            .filter(|m| m.commit_lsn <= vdl)
            .map(|m| m.shipped_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::redo::RedoBody;
    use std::collections::BTreeMap;

    /// A tiny deterministic RNG (xorshift64*), so failures replay from the seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The writer's truth: every page's image after every commit.
    struct Truth {
        /// page → [(lsn, image)], ascending.
        history: BTreeMap<u32, Vec<(Lsn, Vec<u8>)>>,
        next_lsn: Lsn,
        commits: Vec<Lsn>,
    }

    impl Truth {
        fn new(start: Lsn) -> Self {
            Self {
                history: BTreeMap::new(),
                next_lsn: start.next(),
                commits: vec![start],
            }
        }
        fn page_at(&self, page: u32, lsn: Lsn) -> Option<Page> {
            self.history.get(&page).and_then(|h| {
                h.iter()
                    .rev()
                    .find(|(l, _)| *l <= lsn)
                    .map(|(_, img)| Arc::new(img.clone()))
            })
        }
        /// A commit changing 1-3 of `pages` pages, as deltas or images.
        fn commit(&mut self, rng: &mut Rng, pages: u32) -> Arc<PublishedMtr> {
            let mut touched: Vec<u32> = (0..1 + rng.below(3))
                .map(|_| rng.below(u64::from(pages)) as u32)
                .collect();
            touched.sort_unstable();
            touched.dedup();
            let first_lsn = self.next_lsn;
            let mut records = Vec::new();
            for page in touched {
                let lsn = self.next_lsn;
                self.next_lsn = lsn.next();
                let old = self.page_at(page, lsn);
                let mut new = old
                    .as_deref()
                    .cloned()
                    .unwrap_or_else(|| vec![0u8; PAGE_SIZE_BYTES]);
                let at = rng.below(PAGE_SIZE_BYTES as u64 - 8) as usize;
                new[at..at + 8].copy_from_slice(&lsn.0.to_le_bytes());
                let body = RedoBody::between(old.as_deref().map(|v| &v[..]), &new);
                self.history.entry(page).or_default().push((lsn, new));
                records.push((lsn, PageNo(page), body));
            }
            let commit_lsn = Lsn(self.next_lsn.0 - 1);
            self.commits.push(commit_lsn);
            Arc::new(PublishedMtr {
                first_lsn,
                commit_lsn,
                records,
                shipped_at: Instant::now(),
            })
        }
    }

    /// Reads `page` through the cache the way the reader's backend does.
    fn read(cache: &mut ReplicaCache, truth: &Truth, page: u32) -> Option<Page> {
        match cache.get(PageNo(page)) {
            Some(img) => img,
            None => {
                let img = truth.page_at(page, cache.read_point());
                cache.insert(PageNo(page), img.clone());
                img
            }
        }
    }

    #[test]
    fn streamed_pages_match_the_pageserver_at_every_read_point() {
        let mut total = CacheStats::default();
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let pages = 1 + rng.below(12) as u32;
            let mut truth = Truth::new(Lsn(rng.below(5)));
            // The stream starts after some commits already happened (subscribe mid-way).
            for _ in 0..rng.below(4) {
                truth.commit(&mut rng, pages);
            }
            let mut durable = rng.below(truth.commits.len() as u64) as usize;
            let mut cache = ReplicaCache::new(1 + rng.below(8) as usize, truth.commits[0]);
            cache.follow(Lsn(truth.next_lsn.0 - 1));
            let mut tap: VecDeque<Arc<PublishedMtr>> = VecDeque::new();
            let mut last_rp = cache.read_point();
            for _ in 0..400 {
                match rng.below(10) {
                    0..=2 => tap.push_back(truth.commit(&mut rng, pages)),
                    3 => {
                        durable = (durable + 1 + rng.below(3) as usize).min(truth.commits.len() - 1)
                    }
                    4 if rng.below(8) == 0 => {
                        // The tap overflows: everything queued in it is gone.
                        tap.clear();
                        cache.stream_lost();
                    }
                    4..=5 => {
                        // What the reader does: read the VDL, then drain, then advance.
                        let target = truth.commits[durable];
                        for m in tap.drain(..) {
                            cache.receive(m);
                        }
                        cache.advance(target);
                        assert!(
                            cache.read_point() >= last_rp,
                            "seed {seed}: read point went back"
                        );
                        assert!(cache.read_point() >= target, "seed {seed}");
                        last_rp = cache.read_point();
                    }
                    _ => {
                        let page = rng.below(u64::from(pages)) as u32;
                        let got = read(&mut cache, &truth, page);
                        let want = truth.page_at(page, cache.read_point());
                        assert_eq!(
                            got,
                            want,
                            "seed {seed}: page {page} at read point {}",
                            cache.read_point()
                        );
                    }
                }
            }
            let st = cache.stats();
            assert_eq!(st.records_failed, 0, "seed {seed}");
            total.records_applied += st.records_applied;
            total.mtrs_applied += st.mtrs_applied;
            total.resets += st.resets;
            total.streams_lost += st.streams_lost;
        }
        // The seeds must exercise both ways of moving forward, or the test proves little.
        assert!(total.records_applied > 1000, "{total:?}");
        assert!(total.resets > 100 && total.streams_lost > 10, "{total:?}");
    }

    #[test]
    fn a_warm_cache_stays_warm_while_synced() {
        let mut rng = Rng(7);
        let mut truth = Truth::new(Lsn(10));
        let mut cache = ReplicaCache::new(16, Lsn(10));
        cache.follow(Lsn(10));
        assert!(cache.is_synced(), "subscribed right at the read point");
        for p in 0..4 {
            assert_eq!(read(&mut cache, &truth, p), None);
        }
        let m = truth.commit(&mut rng, 4);
        let target = m.commit_lsn;
        cache.receive(m);
        assert_eq!(
            cache.read_point(),
            Lsn(10),
            "not durable yet: nothing moves"
        );
        assert_eq!(cache.advance(target), Advanced::Streamed { mtrs: 1 });
        let m2 = truth.commit(&mut rng, 4);
        let m3 = truth.commit(&mut rng, 4);
        let t3 = m3.commit_lsn;
        cache.receive(m2);
        cache.receive(m3);
        assert_eq!(cache.advance(t3), Advanced::Streamed { mtrs: 2 });
        for p in 0..4 {
            let cached = cache.get(PageNo(p)).expect("still cached: no fetch needed");
            assert_eq!(cached, truth.page_at(p, t3), "page {p}");
        }
        assert!(cache.stats().records_applied > 0, "{:?}", cache.stats());
        assert_eq!(cache.stats().resets, 0);
    }

    #[test]
    fn a_gap_in_the_stream_drops_the_pages_and_jumps() {
        let mut rng = Rng(11);
        let mut truth = Truth::new(Lsn(0));
        let mut cache = ReplicaCache::new(16, Lsn(0));
        let m1 = truth.commit(&mut rng, 2);
        cache.follow(m1.commit_lsn); // subscribed after m1 was shipped
        assert!(!cache.is_synced());
        assert_eq!(cache.advance(m1.commit_lsn), Advanced::Reset);
        assert!(cache.is_synced());
        read(&mut cache, &truth, 0);
        let _lost = truth.commit(&mut rng, 2); // never delivered
        let m3 = truth.commit(&mut rng, 2);
        cache.receive(m3.clone());
        assert!(!cache.is_synced());
        assert_eq!(cache.stats().streams_lost, 1);
        assert_eq!(cache.advance(m3.commit_lsn), Advanced::Reset);
        assert_eq!(cache.get(PageNo(0)), None, "pages dropped at the jump");
        assert_eq!(read(&mut cache, &truth, 0), truth.page_at(0, m3.commit_lsn));
    }

    #[test]
    fn the_read_point_never_goes_back() {
        let mut cache = ReplicaCache::new(4, Lsn(50));
        cache.follow(Lsn(70));
        assert_eq!(cache.advance(Lsn(40)), Advanced::Unchanged);
        assert_eq!(cache.read_point(), Lsn(50));
        assert_eq!(cache.advance(Lsn(70)), Advanced::Reset);
        assert!(cache.is_synced(), "stream starts right after 70");
        cache.follow(Lsn(60));
        assert_eq!(cache.read_point(), Lsn(70), "follow keeps the read point");
    }
}
