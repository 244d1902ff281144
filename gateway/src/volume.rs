//! A tenant's volume as its writer compute sees it: pages in, mini-transactions out.
//!
//! This is the [`compute_host::Backend`] of a writer. Page reads are served, in order, from:
//! 1. **pending pages**: after-images of this writer's commits that are not yet durable. They are
//!    never evicted (Aurora's rule: a page whose newest change is above the VDL stays cached),
//!    because no pageserver may serve them yet. The LAL bounds how many there can be.
//! 2. a bounded **LRU of clean pages**;
//! 3. the tenant's **pageserver**, asked for GetPage@VDL: every change to the page at or below
//!    the VDL is there, and every later one is in (1). A miss that continues a sequential run
//!    fetches the pages after it too, in one `GetPages` round trip ([`ReadAhead`]), into (2).
//!
//! Commits hand the MTR to the [`VolumeWriter`] (which assigns LSNs and ships) and keep the
//! after-images as pending pages until the VDL passes them.
//!
//! (1) and (2) are [`VolumePages`], which belong to the **writer**, not to one instance: when an
//! instance is thrown away while its writer stays (a statement timeout, a page read that failed,
//! an idle instance), the next instance gets the same pages. So it needs no pageserver to open the
//! volume again (docs/design.md §6: writes go on while the pageservers are down), and it need not wait
//! for the writer's pending commits to become durable first. This is sound because the pages
//! change only when the writer ships a commit, and an instance that fails after shipping takes its
//! writer (and so these pages) with it.

pub use crate::page_client::Page;
use crate::page_client::{PageClient, PageResult};
use crate::readahead::{ReadAhead, Window};
use crate::volume_writer::{LogError, VolumeWriter};
use borealis_core::redo::RedoBody;
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, TenantId, PAGE_SIZE_BYTES};
use borealis_utils::LockExt;
use compute_abi::{Mtr, PageChangeBody};
use compute_host::{Backend, BackendError};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::Handle;

/// How long a commit waits for LAL room before it fails.
const BACKPRESSURE_WAIT: Duration = Duration::from_secs(10);

/// One writer's host-side pages: pending (above the VDL, never evicted) and clean (an LRU).
pub struct VolumePages {
    /// The writer these pages belong to.
    epoch: u64,
    /// Segments this writer has written and whose pageserver was asked to follow them
    /// ([`PageClient::warm`]).
    warmed: std::collections::HashSet<borealis_core::SegmentId>,
    pending: BTreeMap<PageNo, (Lsn, Page)>,
    clean: lru::LruCache<PageNo, Option<Page>>,
}

impl VolumePages {
    pub fn new(writer: &VolumeWriter, cache_pages: usize) -> Arc<Mutex<VolumePages>> {
        let cap = NonZeroUsize::new(cache_pages.max(1)).expect("max(1) is non-zero");
        Arc::new(Mutex::new(VolumePages {
            epoch: writer.epoch(),
            warmed: Default::default(),
            pending: BTreeMap::new(),
            clean: lru::LruCache::new(cap),
        }))
    }

    /// The epoch of the writer whose pages these are.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Moves pending pages the VDL has passed to the clean cache.
    fn settle(&mut self, vdl: Lsn) {
        let durable: Vec<PageNo> = self
            .pending
            .iter()
            .filter(|(_, (lsn, _))| *lsn <= vdl)
            .map(|(p, _)| *p)
            .collect();
        for p in durable {
            if let Some((_, img)) = self.pending.remove(&p) {
                self.clean.put(p, Some(img));
            }
        }
    }
}

pub struct Volume {
    tenant: TenantId,
    writer: Arc<VolumeWriter>,
    pageserver: PageClient,
    pages: Arc<Mutex<VolumePages>>,
    rt: Handle,
    read_ahead: ReadAhead,
    /// The next run of a scan, being fetched in the background (at most one).
    window: Option<Window>,
}

impl Volume {
    /// A backend over `writer`'s `pages` (from [`VolumePages::new`] for the same writer).
    pub fn new(
        tenant: TenantId,
        writer: Arc<VolumeWriter>,
        pageserver: PageClient,
        pages: Arc<Mutex<VolumePages>>,
        rt: Handle,
        read_ahead_pages: usize,
        host_cache_pages: usize,
    ) -> Self {
        assert_eq!(
            pages.locked().epoch,
            writer.epoch(),
            "a volume's pages belong to one writer"
        );
        Self {
            tenant,
            writer,
            pageserver,
            pages,
            rt,
            read_ahead: ReadAhead::for_cache(read_ahead_pages, host_cache_pages),
            window: None,
        }
    }

    fn read(&mut self, page: PageNo) -> Result<Option<Page>, BackendError> {
        let vdl = self.writer.vdl();
        {
            let mut pages = self.pages.locked();
            pages.settle(vdl);
            if let Some((_, img)) = pages.pending.get(&page) {
                return Ok(Some(img.clone()));
            }
            if let Some(img) = pages.clean.get(&page) {
                return Ok(img.clone());
            }
        }
        // A scan reaching the window fetched in the background: land it (the page is then
        // clean, unless a commit voided it), and fetch the next one.
        if let Some(img) = self.land_window(page, vdl) {
            return Ok(img);
        }
        // Only this writer changes pages, and only on this thread: nothing can change `page`
        // between the miss above and the insert below. Pages read ahead are kept only where the
        // cache has nothing: a page in `pending` changed above the VDL (its pageserver version
        // is old), and one in `clean` is already the newest.
        // A page read ahead that failed alone is dropped (read again if SQLite asks for it);
        // the page asked for answers with its own result.
        let wanted = self.read_ahead.run(page, self.writer.layout());
        let fetched = self.fetch(&wanted, vdl)?;
        let mut pages = self.pages.locked();
        let mut asked = Ok(None);
        for (p, img) in wanted.iter().copied().zip(fetched) {
            if p == page {
                asked = img.clone();
            } else if pages.pending.contains_key(&p) || pages.clean.contains(&p) {
                continue;
            }
            if let Ok(img) = img {
                pages.clean.put(p, img);
            }
        }
        drop(pages);
        // A scan at full speed: fetch its next run while SQLite reads this one.
        // (A window in flight elsewhere belongs to a scan given up: this one replaces it.)
        if wanted.len() == self.read_ahead.max() && self.read_ahead.windows() {
            if let Some(next) = page.0.checked_add(wanted.len() as u32).map(PageNo) {
                self.window.take_if(|w| !w.covers(next));
                let segment = self.writer.layout().segment_of(page);
                self.issue_window(next, wanted.len(), vdl, segment);
            }
        }
        asked
    }

    /// If the window in flight holds `page`: waits for it, puts its pages in the clean cache
    /// where the cache has nothing, starts the next window, and answers `page` (`None`: no
    /// window holds it, it failed, or a commit voided the page; read it synchronously).
    fn land_window(&mut self, page: PageNo, vdl: Lsn) -> Option<Option<Page>> {
        if !self.window.as_ref().is_some_and(|w| w.covers(page)) {
            return None;
        }
        let w = self.window.take()?;
        let (end, len) = (w.end(), w.len());
        let segment = self.writer.layout().segment_of(page);
        let landed = match w.land(&self.rt) {
            Ok(landed) => landed,
            Err(e) => {
                tracing::debug!(tenant = %self.tenant, %page, error = %e.message, "a read-ahead window failed; reading synchronously");
                self.pageserver
                    .metrics()
                    .readahead_windows_failed
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
        self.pageserver
            .metrics()
            .readahead_windows_landed
            .fetch_add(1, Ordering::Relaxed);
        let hit = {
            let mut pages = self.pages.locked();
            for (p, img) in landed {
                if !pages.pending.contains_key(&p) && !pages.clean.contains(&p) {
                    pages.clean.put(p, img);
                }
            }
            pages.clean.get(&page).cloned()
        };
        if let Some(end) = end {
            // At full length again after a window cut at a segment's end.
            let max = self.read_ahead.max();
            self.read_ahead.resume(end, len);
            self.issue_window(end, max, vdl, segment);
        }
        hit
    }

    /// Starts fetching `len` pages from `start` at `vdl` in the background, unless a window is
    /// already in flight or `start` is past the end of `segment`, the scan's segment: the next
    /// segment may not exist (a window would make its pageserver attach and follow a segment
    /// nobody wrote), and the scan's first read there, synchronous, tells that it does.
    fn issue_window(&mut self, start: PageNo, len: usize, vdl: Lsn, segment: SegmentId) {
        let layout = self.writer.layout();
        if self.window.is_some() || layout.segment_of(start) != segment {
            return;
        }
        let pages = ReadAhead::window(start, len, layout);
        if pages.is_empty() {
            return;
        }
        let epoch = self.writer.epoch();
        let Some((answer, fetch)) =
            self.pageserver
                .spawn_get_pages(&self.rt, self.tenant, pages.clone(), vdl, epoch)
        else {
            return;
        };
        let range = pages[0]..=pages[pages.len() - 1];
        let mut w = Window::new(pages, vdl, answer, Some(fetch));
        // Pages changed above `vdl` are pending: the window's versions of them are older.
        let held = self.pages.locked();
        for p in held.pending.range(range).map(|(p, _)| *p) {
            w.void(p);
        }
        drop(held);
        self.window = Some(w);
    }

    fn fetch(&mut self, pages: &[PageNo], lsn: Lsn) -> Result<Vec<PageResult>, BackendError> {
        let epoch = self.writer.epoch();
        self.pageserver
            .get_pages(&self.rt, self.tenant, pages, lsn, epoch)
    }
}

fn log_error(e: LogError) -> BackendError {
    BackendError {
        kind: e.kind(),
        message: e.to_string(),
    }
}

impl Backend for Volume {
    fn get_page(&mut self, page: PageNo) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.read(page)?.map(|p| p.as_ref().clone()))
    }

    fn commit(&mut self, mtr: Mtr) -> Result<(), BackendError> {
        // Rebuild each page's after-image: the guest diffed against what we served it.
        let mut changes = Vec::with_capacity(mtr.changes.len());
        let mut images = Vec::with_capacity(mtr.changes.len());
        for change in mtr.changes {
            let page = PageNo(change.page_no);
            let body = match change.body {
                PageChangeBody::Image(b) => RedoBody::Image(b),
                PageChangeBody::Delta(d) => RedoBody::Delta(d),
            };
            // An image needs no previous version (and asking for one would make commits that
            // grow the volume depend on a pageserver answering).
            let mut img = match &body {
                RedoBody::Image(_) => vec![0u8; PAGE_SIZE_BYTES],
                RedoBody::Delta(_) => match self.read(page)? {
                    Some(p) => p.as_ref().clone(),
                    None => vec![0u8; PAGE_SIZE_BYTES],
                },
            };
            body.apply(&mut img).map_err(|e| BackendError {
                kind: ErrorKind::Invalid,
                message: format!("guest produced a bad change for page {page}: {e}"),
            })?;
            images.push((page, Arc::new(img)));
            changes.push((page, body));
        }
        let deadline = std::time::Instant::now() + BACKPRESSURE_WAIT;
        let lsn = loop {
            match self.writer.commit(changes.clone()) {
                Ok(lsn) => break lsn,
                Err(LogError::Write(borealis_quorum::WriteError::Backpressure { .. }))
                    if std::time::Instant::now() < deadline =>
                {
                    // Wait for the VDL to move, then try again.
                    let target = self.writer.vdl().next();
                    let w = self.writer.clone();
                    let _ = self
                        .rt
                        .block_on(w.wait_durable(target, Duration::from_millis(200)));
                }
                Err(e) => return Err(log_error(e)),
            }
        };
        let mut pages = self.pages.locked();
        let vdl = self.writer.vdl();
        let epoch = self.writer.epoch();
        self.pageserver.warm(
            &self.rt,
            self.tenant,
            images.iter().map(|(page, _)| *page),
            &mut pages.warmed,
            vdl,
            epoch,
        );
        for (page, img) in images {
            pages.clean.pop(&page);
            pages.pending.insert(page, (lsn, img));
            // A window asked before this commit brings an older version of the page.
            if let Some(w) = &mut self.window {
                w.void(page);
            }
        }
        Ok(())
    }
}
