//! Sequential read-ahead for a compute's page misses, writer and reader alike: which pages to
//! fetch with the one the guest asked for (RFC 0016). Page numbers in, page numbers out; the
//! backends (`crate::volume`, `crate::compute_pool::reader`) fetch them in one `GetPages` and
//! keep the ones their caches do not already hold.

use crate::page_client::PAGES_PER_CALL_MAX;
use borealis_core::{PageNo, SegmentLayout};

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
}

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
        }
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

    /// The pages to fetch for a miss on `page`: the run [`ReadAhead::plan`] decides, cut at the
    /// end of `page`'s segment (another segment may be served by another pageserver, or not
    /// exist; the scan goes on in the next one with the run it had).
    pub fn run(&mut self, page: PageNo, layout: SegmentLayout) -> Vec<PageNo> {
        let run = self.plan(page);
        let segment = layout.segment_of(page);
        let wanted: Vec<PageNo> = (0..run)
            .filter_map(|i| page.0.checked_add(u32::try_from(i).ok()?).map(PageNo))
            .take_while(|p| layout.segment_of(*p) == segment)
            .collect();
        if wanted.len() < run {
            self.cut(page, wanted.len());
        }
        wanted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
