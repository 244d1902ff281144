//! A tenant's volume as its writer compute sees it: pages in, mini-transactions out.
//!
//! This is the [`compute_host::Backend`] of a writer. Page reads are served, in order, from:
//! 1. **pending pages**: after-images of this writer's commits that are not yet durable. They are
//!    never evicted (Aurora's rule: a page whose newest change is above the VDL stays cached),
//!    because no pageserver may serve them yet. The LAL bounds how many there can be.
//! 2. a bounded **LRU of clean pages**;
//! 3. the tenant's **pageserver**, asked for GetPage@VDL: every change to the page at or below
//!    the VDL is there, and every later one is in (1).
//!
//! Commits hand the MTR to the [`LogWriter`] (which assigns LSNs and ships) and keep the
//! after-images as pending pages until the VDL passes them.

use crate::log_writer::{LogError, LogWriter};
pub use crate::page_client::Page;
use crate::page_client::PageClient;
use borealis_core::redo::RedoBody;
use borealis_core::{ErrorKind, Lsn, PageNo, TenantId, PAGE_SIZE_BYTES};
use compute_abi::{Mtr, PageChangeBody};
use compute_host::{Backend, BackendError};
use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// How long a commit waits for LAL room before it fails.
const BACKPRESSURE_WAIT: Duration = Duration::from_secs(10);

pub struct Volume {
    tenant: TenantId,
    writer: Arc<LogWriter>,
    pageserver: PageClient,
    pending: BTreeMap<PageNo, (Lsn, Page)>,
    clean: lru::LruCache<PageNo, Option<Page>>,
    rt: Handle,
}

impl Volume {
    pub fn new(
        tenant: TenantId,
        writer: Arc<LogWriter>,
        pageserver_addr: String,
        cache_pages: usize,
        rt: Handle,
    ) -> Self {
        let cap = NonZeroUsize::new(cache_pages.max(1)).expect("max(1) is non-zero");
        Self {
            tenant,
            writer,
            pageserver: PageClient::new(pageserver_addr),
            pending: BTreeMap::new(),
            clean: lru::LruCache::new(cap),
            rt,
        }
    }

    /// Moves pending pages the VDL has passed to the clean cache.
    fn settle(&mut self) {
        let vdl = self.writer.vdl();
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

    fn read(&mut self, page: PageNo) -> Result<Option<Page>, BackendError> {
        self.settle();
        if let Some((_, img)) = self.pending.get(&page) {
            return Ok(Some(img.clone()));
        }
        if let Some(img) = self.clean.get(&page) {
            return Ok(img.clone());
        }
        let lsn = self.writer.vdl();
        let img = self.fetch(page, lsn)?;
        self.clean.put(page, img.clone());
        Ok(img)
    }

    fn fetch(&mut self, page: PageNo, lsn: Lsn) -> Result<Option<Page>, BackendError> {
        let epoch = self.writer.epoch();
        self.pageserver
            .get_page(&self.rt, self.tenant, page, lsn, epoch)
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
        for (page, img) in images {
            self.clean.pop(&page);
            self.pending.insert(page, (lsn, img));
        }
        Ok(())
    }
}
