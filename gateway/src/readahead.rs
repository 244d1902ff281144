//! Sequential read-ahead for a compute's page misses, writer and reader alike: which pages to
//! fetch with the one the guest asked for (RFC 0016): [`ReadAhead`] decides (page numbers in,
//! page numbers out), and [`Window`] holds a run fetched in the background until the scan
//! reaches it. The backends (`crate::volume`, `crate::compute_pool::reader`) fetch the pages in
//! one `GetPages` and keep the ones their caches do not already hold.

use crate::page_client::{Page, PagesAnswer, PAGES_PER_CALL_MAX};
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentLayout};
use compute_host::BackendError;
use std::collections::BTreeSet;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

/// How many pages past the end of a run a miss may be and still continue it (pages between
/// that SQLite already holds in its own cache are skipped without a miss).
pub const RUN_GAP_PAGES_MAX: u32 = 8;

/// Sequential read-ahead: a miss that continues a run (the page right after the last one it
/// fetched, or a few further) doubles it, up to `--read-ahead-pages` (at most
/// [`PAGES_PER_CALL_MAX`]: one `GetPages`); any other miss fetches one page and starts a run.
/// A full scan thus costs about one round trip per 64 pages instead of one per page.
///
/// Two runs are followed, the newest and the one before it: a B-tree scan reads each interior
/// page when it moves on to that page's children, and the interior page (allocated after the
/// leaves before it) is far from the next leaf. With one run, each such read started the scan
/// over at one page, twice (measured: 34 pages per request on a 32 MB table instead of ~60);
/// with two, the leaf after it continues the leaves' run.
#[derive(Debug)]
pub struct ReadAhead {
    /// The newest run first.
    runs: [Option<Run>; 2],
    /// The longest run (1: no read-ahead).
    max: usize,
    /// Whether the next run may be fetched in the background ([`Window`]): only when the
    /// compute's host cache holds [`WINDOW_CACHE_FACTOR`] runs, so that landing a window does
    /// not evict the pages of the run SQLite is reading (measured with a 64-page cache and
    /// 64-page runs: 37 pages per request instead of 55).
    windows: bool,
}

/// How many runs a compute's host cache must hold for background windows.
pub const WINDOW_CACHE_FACTOR: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Run {
    /// The page after the last one the run fetched.
    next: PageNo,
    /// Pages it fetched last.
    len: usize,
}

impl Run {
    fn continued_by(&self, page: PageNo) -> bool {
        page >= self.next && page.0 - self.next.0 <= RUN_GAP_PAGES_MAX
    }
}

impl ReadAhead {
    pub fn new(max: usize) -> ReadAhead {
        ReadAhead {
            runs: [None, None],
            max: max.clamp(1, PAGES_PER_CALL_MAX),
            windows: max > 1,
        }
    }

    /// Read-ahead for a compute whose host cache holds `cache_pages` (windows only if it holds
    /// [`WINDOW_CACHE_FACTOR`] runs).
    pub fn for_cache(max: usize, cache_pages: usize) -> ReadAhead {
        let mut r = ReadAhead::new(max);
        r.windows = r.max > 1 && cache_pages >= WINDOW_CACHE_FACTOR * r.max;
        r
    }

    /// Whether a scan at full speed fetches its next run in the background.
    pub fn windows(&self) -> bool {
        self.windows
    }

    /// How many pages to fetch from `page` on: twice the run it continues, or 1.
    fn plan(&mut self, page: PageNo) -> usize {
        let continued = self
            .runs
            .iter()
            .position(|r| r.is_some_and(|r| r.continued_by(page)));
        let len = match continued.and_then(|i| self.runs[i]) {
            Some(r) => (r.len * 2).max(2).min(self.max),
            None => 1,
        };
        // The run planned now is the newest; the other one stays second.
        if continued != Some(0) {
            self.runs[1] = self.runs[0];
        }
        self.runs[0] = page.0.checked_add(len as u32).map(|next| Run {
            next: PageNo(next),
            len,
        });
        len
    }

    /// The run planned from `page` was cut to `len` pages (at a segment's end): the scan goes
    /// on at the page after them, with the run it had. (Without this, the first page of the
    /// next segment missed `next` and every segment's scan started over at one page.)
    fn cut(&mut self, page: PageNo, len: usize) {
        if let Some(r) = &mut self.runs[0] {
            r.next = PageNo(page.0.saturating_add(len as u32));
        }
    }

    /// The longest run.
    pub fn max(&self) -> usize {
        self.max
    }

    /// A window fetched in the background landed and the scan goes on after it: the newest run
    /// ends at `next`, `len` pages long.
    pub fn resume(&mut self, next: PageNo, len: usize) {
        if self.runs[0].is_none_or(|r| r.next != next) {
            self.runs[1] = self.runs[0];
        }
        self.runs[0] = Some(Run { next, len });
    }

    /// The pages of a window of `len` pages from `start`, cut at the end of `start`'s segment.
    pub fn window(start: PageNo, len: usize, layout: SegmentLayout) -> Vec<PageNo> {
        let segment = layout.segment_of(start);
        (0..len)
            .filter_map(|i| start.0.checked_add(u32::try_from(i).ok()?).map(PageNo))
            .take_while(|p| layout.segment_of(*p) == segment)
            .collect()
    }

    /// The pages to fetch for a miss on `page`: the run [`ReadAhead::plan`] decides, cut at the
    /// end of `page`'s segment (another segment may be served by another pageserver, or not
    /// exist; the scan goes on in the next one with the run it had).
    pub fn run(&mut self, page: PageNo, layout: SegmentLayout) -> Vec<PageNo> {
        let run = self.plan(page);
        let wanted = Self::window(page, run, layout);
        if wanted.len() < run {
            self.cut(page, wanted.len());
        }
        wanted
    }
}

/// The next run of a scan, fetched in the background while SQLite consumes the current one
/// (RFC 0016 §2): asked at `lsn`, landed into the compute's cache at the first miss on one of
/// its pages. A writer voids the pages it commits meanwhile (and those pending above `lsn` when
/// it asked): what the window brings for them is older than what the writer has. Dropping a
/// window stops its fetch.
pub struct Window {
    pages: Vec<PageNo>,
    lsn: Lsn,
    voided: BTreeSet<PageNo>,
    answer: Option<PagesAnswer>,
    fetch: Option<AbortHandle>,
}

impl Window {
    /// `pages` (ascending) asked at `lsn`, their answer to come on `answer`; `fetch` stops the
    /// task that fetches them.
    pub fn new(
        pages: Vec<PageNo>,
        lsn: Lsn,
        answer: PagesAnswer,
        fetch: Option<AbortHandle>,
    ) -> Window {
        assert!(
            pages.windows(2).all(|w| w[0] < w[1]),
            "a window's pages ascend"
        );
        Window {
            pages,
            lsn,
            voided: BTreeSet::new(),
            answer: Some(answer),
            fetch,
        }
    }

    pub fn covers(&self, page: PageNo) -> bool {
        self.pages.binary_search(&page).is_ok()
    }

    /// The read point it was asked at.
    pub fn lsn(&self) -> Lsn {
        self.lsn
    }

    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The page after its last.
    pub fn end(&self) -> Option<PageNo> {
        self.pages
            .last()
            .and_then(|p| p.0.checked_add(1))
            .map(PageNo)
    }

    /// `page` changed after the window was asked for: it must not land.
    pub fn void(&mut self, page: PageNo) {
        if self.covers(page) {
            self.voided.insert(page);
        }
    }

    /// Waits for the answer (the fetch is bounded by its own timeout) and gives the pages that
    /// were read and not voided; a page the pageserver failed to read is left out (the scan
    /// reads it synchronously if SQLite asks for it).
    pub fn land(mut self, rt: &Handle) -> Result<Vec<(PageNo, Option<Page>)>, BackendError> {
        let answer = self.answer.take().ok_or_else(|| {
            BackendError::new(ErrorKind::Internal, "a read-ahead window landed twice")
        })?;
        let got = rt.block_on(answer).map_err(|_| {
            BackendError::new(ErrorKind::Internal, "the read-ahead task ended unanswered")
        })??;
        let pages = std::mem::take(&mut self.pages);
        Ok(pages
            .into_iter()
            .zip(got)
            .filter(|(p, _)| !self.voided.contains(p))
            .filter_map(|(p, image)| Some((p, image.ok()?)))
            .collect())
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        if let Some(fetch) = &self.fetch {
            fetch.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_client::PageResult;
    use tokio::sync::oneshot;

    #[test]
    fn read_ahead_doubles_on_a_sequential_scan_and_resets_on_a_jump() {
        let mut off = ReadAhead::new(1);
        assert_eq!(
            (off.plan(PageNo(1)), off.plan(PageNo(2))),
            (1, 1),
            "read-ahead off"
        );
        let mut r = ReadAhead::new(PAGES_PER_CALL_MAX);
        assert_eq!(r.plan(PageNo(10)), 1);
        assert_eq!(r.plan(PageNo(11)), 2, "the page right after the last run");
        assert_eq!(r.plan(PageNo(13)), 4);
        assert_eq!(r.plan(PageNo(17)), 8);
        let mut next = 25;
        let mut runs = Vec::new();
        for _ in 0..5 {
            let run = r.plan(PageNo(next));
            runs.push(run);
            next += run as u32;
        }
        assert_eq!(runs, vec![16, 32, 64, 64, 64], "capped at one call's worth");
        // A miss a few pages past the run (pages SQLite holds itself, skipped) continues it.
        assert_eq!(
            r.plan(PageNo(next + 3)),
            64,
            "a small gap continues the scan"
        );
        next += 3 + 64;
        assert_eq!(
            r.plan(PageNo(next + RUN_GAP_PAGES_MAX + 1)),
            1,
            "a larger one does not"
        );
        assert_eq!(r.plan(PageNo(3)), 1, "a jump starts over");
        assert_eq!(r.plan(PageNo(3)), 1, "the same page again is no scan");
        assert_eq!(r.plan(PageNo(u32::MAX)), 1);
    }

    #[test]
    fn a_run_cut_at_a_segment_end_goes_on_in_the_next_segment() {
        let mut r = ReadAhead::new(PAGES_PER_CALL_MAX);
        assert_eq!(r.plan(PageNo(100)), 1);
        assert_eq!(r.plan(PageNo(101)), 2);
        assert_eq!(r.plan(PageNo(103)), 4);
        // Pages 107..=114 asked for, but the segment ends after 110: cut to 4 pages.
        assert_eq!(r.plan(PageNo(107)), 8);
        r.cut(PageNo(107), 4);
        // The next segment's first page continues the scan, doubling from the run it had.
        assert_eq!(r.plan(PageNo(111)), 16);
    }

    #[test]
    fn a_run_stops_at_its_segments_end() {
        let layout = SegmentLayout::new(16);
        let mut r = ReadAhead::new(PAGES_PER_CALL_MAX);
        assert_eq!(r.run(PageNo(9), layout), [PageNo(9)]);
        assert_eq!(r.run(PageNo(10), layout), [PageNo(10), PageNo(11)]);
        let four: Vec<PageNo> = (12..16).map(PageNo).collect();
        assert_eq!(r.run(PageNo(12), layout), four);
        // Eight planned from 16: all in segment 1.
        let eight: Vec<PageNo> = (16..24).map(PageNo).collect();
        assert_eq!(r.run(PageNo(16), layout), eight);
        // Sixteen planned from 24, cut to the 8 left in segment 1; 32 goes on doubling.
        let cut: Vec<PageNo> = (24..32).map(PageNo).collect();
        assert_eq!(r.run(PageNo(24), layout), cut);
        assert_eq!(r.run(PageNo(32), layout).len(), 16);
    }

    #[test]
    fn a_scan_goes_on_after_reading_an_interior_page_far_away() {
        // What a table scan does (traced): leaves 514.., then the next interior page (1043),
        // then the leaves after the last run.
        let mut r = ReadAhead::new(PAGES_PER_CALL_MAX);
        let mut next = 514;
        for _ in 0..7 {
            next += r.plan(PageNo(next)) as u32;
        }
        assert_eq!(next, 514 + 127, "1 + 2 + ... + 64");
        assert_eq!(r.plan(PageNo(1043)), 1, "the interior page alone");
        assert_eq!(r.plan(PageNo(next)), 64, "the leaves go on at full speed");
        assert_eq!(
            r.plan(PageNo(1044)),
            2,
            "and the interior page's run is still known"
        );
        // A third run pushes the oldest out.
        assert_eq!(r.plan(PageNo(9000)), 1);
        assert_eq!(r.plan(PageNo(20_000)), 1);
        assert_eq!(r.plan(PageNo(next + 64)), 1, "forgotten");
    }

    #[test]
    fn a_window_lands_what_was_not_voided() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let page = |n: u8| Some(std::sync::Arc::new(vec![n; 4]));
        let (tx, rx) = oneshot::channel();
        let pages: Vec<PageNo> = (4..8).map(PageNo).collect();
        let mut w = Window::new(pages, Lsn(9), rx, None);
        assert!(w.covers(PageNo(5)) && !w.covers(PageNo(8)) && !w.covers(PageNo(3)));
        assert_eq!((w.end(), w.len(), w.lsn()), (Some(PageNo(8)), 4, Lsn(9)));
        w.void(PageNo(5));
        w.void(PageNo(70));
        let failed = BackendError::new(ErrorKind::Corrupt, "bad record");
        tx.send(Ok(vec![Ok(page(4)), Ok(None), Ok(page(6)), Err(failed)]))
            .unwrap();
        let landed = w.land(rt.handle()).unwrap();
        assert_eq!(
            landed,
            vec![(PageNo(4), page(4)), (PageNo(6), page(6))],
            "page 5 voided, page 7 failed"
        );
        // A failed fetch, or a task gone, is an error for the caller to read synchronously.
        let (tx, rx) = oneshot::channel();
        let w = Window::new(vec![PageNo(1)], Lsn(1), rx, None);
        tx.send(Err(BackendError::new(ErrorKind::Unavailable, "down")))
            .unwrap();
        assert_eq!(
            w.land(rt.handle()).unwrap_err().kind,
            ErrorKind::Unavailable
        );
        let (tx, rx) = oneshot::channel::<Result<Vec<PageResult>, BackendError>>();
        drop(tx);
        let w = Window::new(vec![PageNo(1)], Lsn(1), rx, None);
        assert_eq!(w.land(rt.handle()).unwrap_err().kind, ErrorKind::Internal);
        // Dropping a window stops its fetch.
        let (_tx, rx) = oneshot::channel();
        let task = rt.spawn(std::future::pending::<()>());
        let w = Window::new(vec![PageNo(1)], Lsn(1), rx, Some(task.abort_handle()));
        drop(w);
        assert!(rt.block_on(task).unwrap_err().is_cancelled());
    }

    #[test]
    fn a_window_stops_at_its_segments_end_and_resume_continues_the_run() {
        let layout = SegmentLayout::new(16);
        assert_eq!(ReadAhead::window(PageNo(12), 8, layout).len(), 4);
        assert_eq!(ReadAhead::window(PageNo(16), 8, layout).len(), 8);
        let mut r = ReadAhead::new(PAGES_PER_CALL_MAX);
        r.resume(PageNo(100), 64);
        assert_eq!(
            r.plan(PageNo(100)),
            64,
            "a miss after a landed window continues at full length"
        );
    }

    #[test]
    fn windows_need_a_cache_of_four_runs() {
        assert!(ReadAhead::for_cache(64, 4096).windows());
        assert!(ReadAhead::for_cache(64, 256).windows());
        assert!(!ReadAhead::for_cache(64, 255).windows());
        assert!(
            !ReadAhead::for_cache(1, 4096).windows(),
            "no read-ahead, no windows"
        );
    }
}
