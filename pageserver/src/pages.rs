//! The page store of one tenant: materialized versions of every page, by LSN.
//!
//! Applying a redo record produces a new *version* of its page: the previous version's image with
//! the record's body applied (a page never written before starts as zeros). Each version is
//! appended to the tenant's page file ([`crate::page_file`]) and put in the shared page cache
//! ([`crate::cache`]); the in-memory index remembers, per page, the LSNs and file offsets of the
//! retained versions, oldest first.
//!
//! ## Reading a page as of an LSN
//!
//! `GetPage@LSN` wants the newest version whose LSN is ≤ the asked LSN:
//!
//! - a page with no version at or below the LSN, and none ever dropped, was never written by
//!   then: the answer is "no page" (`None`);
//! - if older versions were dropped (see below) and the LSN is below the oldest retained one,
//!   the store cannot know the answer and says so ([`ReadError::LsnTooOld`]); it never guesses.
//!
//! The caller must make sure every record of the page's segment up to the LSN has been applied
//! before asking (the segment's `caught_up_to`, see [`crate::ingest`]); the store itself only
//! knows what it was given.
//!
//! ## Invariants, checked on every apply
//!
//! - A page's versions are strictly increasing in LSN.
//! - A record applies to the page's newest version and must be newer than it. Its
//!   `prev_lsn_page` backlink must name exactly that version's LSN. A mismatch means a record is
//!   missing or out of place: it is refused ([`ApplyError::PageChain`]), and the follower fetches
//!   the segment from another safekeeper. A backlink of [`Lsn::INVALID`] means "unknown" (the
//!   writer keeps a bounded map of page tails, and a new writer starts with none;
//!   `docs/formats/redo-record.md`), not "first record of the page", so it is not checked: the
//!   segment chain (`prev_lsn_segment`, checked by the follower) still guarantees that no record
//!   of the page is missing.
//!
//! ## Versions installed from a checkpoint
//!
//! A pageserver that starts from a checkpoint ([`crate::checkpoint`]) installs each page of the
//! image layer with [`TenantPages::install`]: the page's content as of the checkpoint, labelled
//! with the LSN of the record that last changed it. It is marked as having older versions
//! dropped, so a read below it is "too old", never "no page" or a later version.
//!
//! ## Pages still in object storage (on-demand download)
//!
//! A segment restored from a checkpoint need not download its layers first: the restore
//! ([`crate::restore`]) reads only each layer's directory and hands the store the chain
//! ([`TenantPages::set_remote`], a [`RemoteChain`]). A page with no local version that a layer of
//! the chain holds is then [`Lookup::Remote`]: the caller fetches its record from the newest
//! layer holding it (one ranged read) and installs it, as the restore would have, and looks again.
//! A page no layer holds and with no local version was never written at or below the checkpoint.
//! Applying a record to a page that is still remote is refused ([`ApplyError::NotFetched`]): its
//! previous version is not here yet, and starting from zeros would be wrong; the follower fetches
//! the pages of a batch first ([`TenantPages::remote_pages`]). The chain stays after hydration:
//! each checkpoint hands the store the chain of its durable index, and that is where evicted
//! pages are fetched from.
//!
//! When the index's chain ends below its checkpoint (RFC 0011: checkpoints that wrote only a
//! delta layer), the chain also lists the pages those deltas hold ([`RemoteChain::delta_pages`]):
//! such a page is [`RemoteSource::Deltas`], and is fetched by rebuilding it as of the checkpoint
//! from the chain's window (its newest layer version plus its records in the deltas).
//!
//! ## Eviction under a disk budget
//!
//! With `--disk-cache-bytes`, compaction ([`TenantPages::compact`]) keeps the live records within
//! half of the budget (less one extent), so that the file, at most twice its live records plus
//! the extent being filled, stays within it. It evicts the least recently used pages (an access
//! clock ticked by each compaction pass, [`PageVersions::touched`]) whose newest local version
//! the segment's chain holds exactly, i.e. at or below the chain's `evict_upto`: all their
//! versions leave the index, and a read finds them [`Lookup::Remote`] again. Never evicted: a
//! page being applied to, a page touched in the last [`EVICTION_MIN_IDLE_PASSES`] passes (just
//! fetched for the next records or a read), a page changed since the last checkpoint, and the
//! pages of a segment whose eviction is held ([`TenantPages::hold_eviction`]: an image
//! checkpoint needs them all until its index names the new layer; a stale attachment's chain
//! may be collected by the newest one).
//!
//! ## Bounds
//!
//! At most `retain_versions` versions per page stay reachable ([`VERSIONS_PER_PAGE_MAX`] by
//! default), and compaction ([`TenantPages::compact`], driven by [`crate::compaction`]) drops
//! versions older than the segment's history horizon (`--page-history`) and reclaims the page
//! file's extents that became mostly dead: the file stays within about twice the records the
//! index names, plus the extent being filled.

use crate::cache::PageCache;
use crate::page_file::{Extent, PageFile, PageFileError, EXTENT_RECORDS, IMAGE_RECORD_BYTES};
use borealis_core::redo::{CodecError, RedoBody, RedoRecord};
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout, TenantId, PAGE_SIZE_BYTES};
use borealis_utils::LockExt;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// Versions of one page that stay readable. A read point more than this many changes of a page
/// behind its newest version gets "lsn too old". Each retained version costs 16 bytes of index
/// (the image itself is on disk), so a generous bound is cheap; it matters for hot pages (SQLite's
/// header page changes with every commit) read by lagging replicas.
pub const VERSIONS_PER_PAGE_MAX: usize = 256;

#[derive(Debug, Error)]
pub enum ApplyError {
    #[error(
        "page {page} chain broken at lsn {lsn}: record says previous page lsn {prev_lsn_page} \
         (0: unknown), the newest version is at lsn {newest}"
    )]
    PageChain {
        page: PageNo,
        lsn: Lsn,
        prev_lsn_page: Lsn,
        newest: Lsn,
    },
    #[error("record at lsn {lsn} does not apply to page {page}: {source}")]
    Body {
        page: PageNo,
        lsn: Lsn,
        source: CodecError,
    },
    #[error(
        "cannot install page {page} at lsn {lsn} from a layer: it already has a version at lsn \
         {newest}"
    )]
    Install { page: PageNo, lsn: Lsn, newest: Lsn },
    #[error(
        "page {page} is still in object storage: fetch it before applying the record at lsn {lsn}"
    )]
    NotFetched { page: PageNo, lsn: Lsn },
    #[error(transparent)]
    File(#[from] PageFileError),
}

#[derive(Debug, Error)]
pub enum ReadError {
    #[error("lsn {lsn} too old for page {page}: its oldest retained version is at lsn {oldest}")]
    LsnTooOld { page: PageNo, lsn: Lsn, oldest: Lsn },
    #[error(transparent)]
    File(#[from] PageFileError),
}

/// A page's bytes, shared with the cache.
pub type PageImage = Arc<[u8]>;

/// Where the version a read wants can be found.
#[derive(Clone, Debug)]
pub enum Lookup {
    /// The page was never written at or below the LSN.
    NeverWritten,
    Cached(Arc<[u8]>),
    /// In the page file; read it with [`TenantPages::read_version`] (blocking i/o).
    OnDisk(Version),
    /// Still in object storage: fetch and install it, then look again.
    Remote(RemotePage),
}

/// One version of a page and where its image is: its address in the page file, and the open
/// extent holding it (taken under the index lock, so compaction deleting the extent afterwards
/// cannot pull it from under the read).
#[derive(Clone, Debug)]
pub struct Version {
    pub page: PageNo,
    pub lsn: Lsn,
    addr: u64,
    extent: Option<Extent>,
}

/// A version as the index keeps it (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stored {
    lsn: Lsn,
    addr: u64,
}

/// What one compaction pass ([`TenantPages::compact`]) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Versions older than their segment's history horizon, dropped from the index.
    pub versions_dropped: u64,
    /// Live records copied out of extents being reclaimed.
    pub records_moved: u64,
    pub extents_removed: u64,
    /// Pages dropped from the local disk under its budget (their newest version is in the
    /// segment's chain in object storage, where a read fetches it again).
    pub pages_evicted: u64,
}

/// Eviction frees this fraction (1/n) of the live records' bound more than needed, so that it
/// does not run again at the next write.
pub const EVICTION_HYSTERESIS_DIVISOR: u64 = 8;

/// Compaction passes a page stays unevictable after it was last read, written or fetched: a
/// page fetched for the next records or a read is used before it can be evicted again.
pub const EVICTION_MIN_IDLE_PASSES: u32 = 2;

/// Pages whose history one step of compaction looks at under the index lock.
pub const COMPACTION_CHUNK_PAGES: usize = 4096;

/// An extent is reclaimed once at most this fraction (1/n) of its records is still live.
pub const EXTENT_RECLAIM_LIVE_DIVISOR: u64 = 2;

#[derive(Default)]
struct PageVersions {
    /// Oldest first; never empty once the page has been written.
    versions: VecDeque<Stored>,
    /// Whether older versions were dropped (reads below the oldest retained must fail).
    trimmed: bool,
    /// The compaction pass ([`Index::clock`]) in which the page was last read, written or
    /// installed: eviction takes the least recently used pages first.
    touched: u32,
    /// A record is being applied to it (between looking at its newest version and publishing
    /// the new one): it is not evicted meanwhile.
    applying: bool,
}

/// Pages and retained versions of one segment, for the status page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SegmentCounts {
    pub pages: u64,
    pub versions: u64,
}

struct Index {
    /// Where the next image record goes.
    next_addr: u64,
    /// Bytes per extent of the page file.
    extent_bytes: u64,
    /// Records the index names, per extent.
    live: BTreeMap<u64, u64>,
    /// Records allocated and not yet published or abandoned, per extent: an extent with any is
    /// not reclaimed.
    in_flight: BTreeMap<u64, u64>,
    pages: HashMap<PageNo, PageVersions>,
    per_segment: HashMap<SegmentId, SegmentCounts>,
    /// Each segment's chain in object storage, as of its newest durable index: where a page
    /// with no local version is (restored and not fetched yet, or evicted).
    remote: HashMap<SegmentId, Arc<RemoteChain>>,
    /// Segments whose pages are not evicted for now: a checkpoint writing an image or a merge
    /// needs every page local until its index is published, and a stale attachment's chain may
    /// be collected by the newest one.
    eviction_held: std::collections::HashSet<SegmentId>,
    /// Compaction passes so far: the access clock of [`PageVersions::touched`].
    clock: u32,
    /// Pages evicted so far.
    evicted: u64,
}

impl Index {
    /// Where `page` is in object storage, if it has no local version and a remote chain holds
    /// it.
    /// Whether `page` has a version in the page file (else it may be only in object storage).
    fn has_local_version(&self, page: PageNo) -> bool {
        self.pages
            .get(&page)
            .is_some_and(|pv| !pv.versions.is_empty())
    }

    fn newest(&self, page: PageNo) -> Option<Stored> {
        self.pages.get(&page)?.versions.back().copied()
    }

    /// The address of the next record (in flight until [`Index::release`]).
    fn alloc(&mut self) -> u64 {
        let addr = self.next_addr;
        self.next_addr += IMAGE_RECORD_BYTES as u64;
        *self.in_flight.entry(addr / self.extent_bytes).or_default() += 1;
        addr
    }

    /// The record at `addr` is published or abandoned.
    fn release(&mut self, addr: u64) {
        let extent = addr / self.extent_bytes;
        if let Some(n) = self.in_flight.get_mut(&extent) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&extent);
            }
        }
    }

    fn add_live(&mut self, addr: u64) {
        *self.live.entry(addr / self.extent_bytes).or_default() += 1;
    }

    fn drop_live(&mut self, addr: u64) {
        let extent = addr / self.extent_bytes;
        let n = self.live.get_mut(&extent);
        assert!(
            n.as_ref().is_some_and(|n| **n > 0),
            "a record dropped from extent {extent}, which has no live record"
        );
        if let Some(n) = n {
            *n -= 1;
        }
    }
}

pub struct TenantPages {
    tenant: TenantId,
    layout: SegmentLayout,
    retain_versions: usize,
    file: PageFile,
    cache: Arc<PageCache>,
    index: Mutex<Index>,
}

impl TenantPages {
    /// Creates an empty store whose page file is in `dir` (emptied if a previous process left one).
    pub fn create(
        dir: &Path,
        tenant: TenantId,
        layout: SegmentLayout,
        retain_versions: usize,
        cache: Arc<PageCache>,
    ) -> io::Result<TenantPages> {
        Self::create_with_extents(dir, tenant, layout, retain_versions, cache, EXTENT_RECORDS)
    }

    /// Like [`TenantPages::create`], with extents of `extent_records` records (tests use small
    /// ones to exercise compaction).
    pub fn create_with_extents(
        dir: &Path,
        tenant: TenantId,
        layout: SegmentLayout,
        retain_versions: usize,
        cache: Arc<PageCache>,
        extent_records: u64,
    ) -> io::Result<TenantPages> {
        assert!(
            retain_versions >= 1,
            "the newest version of a page is always kept"
        );
        let file = PageFile::create(dir, extent_records)?;
        let extent_bytes = file.extent_bytes();
        Ok(TenantPages {
            tenant,
            layout,
            retain_versions,
            file,
            cache,
            index: Mutex::new(Index {
                next_addr: 0,
                extent_bytes,
                live: BTreeMap::new(),
                in_flight: BTreeMap::new(),
                pages: HashMap::new(),
                per_segment: HashMap::new(),
                remote: HashMap::new(),
                eviction_held: Default::default(),
                clock: 0,
                evicted: 0,
            }),
        })
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }

    /// The page file (tests look at its extents).
    pub fn page_file(&self) -> &PageFile {
        &self.file
    }

    /// A version of `page` as the index keeps it, with its extent's handle (call under the
    /// index lock).
    fn version(&self, page: PageNo, s: Stored) -> Version {
        Version {
            page,
            lsn: s.lsn,
            addr: s.addr,
            extent: self.file.handle(s.addr),
        }
    }

    /// Applies `records` in order; stops at the first that fails. Returns how many were applied
    /// and the error that stopped it, if any. Blocking (file i/o).
    pub fn apply_batch(&self, records: &[RedoRecord]) -> (usize, Option<ApplyError>) {
        for (i, r) in records.iter().enumerate() {
            if let Err(e) = self.apply(r) {
                return (i, Some(e));
            }
        }
        (records.len(), None)
    }

    /// Applies one record: a new version of its page. Blocking (file i/o).
    ///
    /// The index lock is held only to look and to publish, not across file i/o. That relies on
    /// one applier per page at a time (each page belongs to one segment, each segment has one
    /// follower), which the publish step checks.
    pub fn apply(&self, record: &RedoRecord) -> Result<(), ApplyError> {
        let applied = self.apply_one(record);
        if applied.is_err() {
            if let Some(pv) = self.index.locked().pages.get_mut(&record.page_no) {
                pv.applying = false;
            }
        }
        applied
    }

    /// [`TenantPages::apply`], leaving the page marked `applying` if it fails.
    fn apply_one(&self, record: &RedoRecord) -> Result<(), ApplyError> {
        let page = record.page_no;
        // The newest version, and for a delta where its image is (an image needs none). The
        // page is marked as being applied to, so that eviction leaves it alone until published.
        let (newest_lsn, base) = {
            let mut index = self.index.locked();
            if index.remote_page(self.layout, page).is_some() {
                return Err(ApplyError::NotFetched {
                    page,
                    lsn: record.lsn,
                });
            }
            let clock = index.clock;
            if let Some(pv) = index.pages.get_mut(&page) {
                pv.applying = true;
                pv.touched = clock;
            }
            match index.newest(page) {
                None => (Lsn::INVALID, None),
                Some(s) => (
                    s.lsn,
                    matches!(record.body, RedoBody::Delta(_)).then(|| self.resolve(page, s)),
                ),
            }
        };
        let chain_error = || ApplyError::PageChain {
            page,
            lsn: record.lsn,
            prev_lsn_page: record.prev_lsn_page,
            newest: newest_lsn,
        };
        let backlink_known = record.prev_lsn_page.is_valid();
        if (backlink_known && record.prev_lsn_page != newest_lsn) || record.lsn <= newest_lsn {
            return Err(chain_error());
        }

        let mut image = match base {
            None => vec![0u8; PAGE_SIZE_BYTES],
            Some(Resolved::Cached(image)) => image.to_vec(),
            Some(Resolved::OnDisk(v)) => self.read_version(v)?.to_vec(),
        };
        record
            .body
            .apply(&mut image)
            .map_err(|source| ApplyError::Body {
                page,
                lsn: record.lsn,
                source,
            })?;

        // A failed write leaves an unreferenced gap in the file, nothing else.
        let addr = self.append(|a| self.file.write_image(a, page, record.lsn, &image))?;

        let mut index = self.index.locked();
        index.release(addr);
        if index.newest(page).map(|s| s.lsn) != (newest_lsn.is_valid()).then_some(newest_lsn) {
            return Err(chain_error());
        }
        let segment = self.layout.segment_of(page);
        let clock = index.clock;
        let pv = index.pages.entry(page).or_default();
        pv.applying = false;
        pv.touched = clock;
        let first_version = pv.versions.is_empty();
        pv.versions.push_back(Stored {
            lsn: record.lsn,
            addr,
        });
        let mut dropped = Vec::new();
        while pv.versions.len() > self.retain_versions {
            dropped.extend(pv.versions.pop_front());
            pv.trimmed = true;
        }
        index.add_live(addr);
        for s in &dropped {
            index.drop_live(s.addr);
        }
        let counts = index.per_segment.entry(segment).or_default();
        counts.pages += u64::from(first_version);
        counts.versions = counts.versions + 1 - dropped.len() as u64;
        drop(index);

        self.cache
            .put((self.tenant, page, record.lsn), Arc::from(image));
        Ok(())
    }

    /// Installs a page version read from a layer (a checkpoint): the page's content as of the
    /// checkpoint, changed last by the record at `lsn`. It becomes the page's oldest retained
    /// version, and reads below it are "too old" (the layer does not say what the page was
    /// before). A page that already has a version at or above `lsn` keeps it and nothing is
    /// installed: the same version fetched twice (a GetPage and the hydration racing, a retried
    /// restore), or records applied on top of it since. A local version *below* `lsn` is an error
    /// (the chain's newest version of a page is never older than what was applied to it).
    /// Returns whether it was installed. Blocking (file i/o); the image is not cached (a restore
    /// must not evict the working set).
    pub fn install(&self, page: PageNo, lsn: Lsn, image: &[u8]) -> Result<bool, ApplyError> {
        let refuse = |newest: Lsn| {
            if newest >= lsn {
                Ok(false)
            } else {
                Err(ApplyError::Install { page, lsn, newest })
            }
        };
        if let Some(newest) = self.index.locked().newest(page) {
            return refuse(newest.lsn);
        }
        let addr = self.append(|a| self.file.write_image(a, page, lsn, image))?;
        let mut index = self.index.locked();
        index.release(addr);
        let segment = self.layout.segment_of(page);
        let clock = index.clock;
        let pv = index.pages.entry(page).or_default();
        if let Some(newest) = pv.versions.back() {
            // Fetched by someone else meanwhile: theirs stays (this write is an unused gap).
            return refuse(newest.lsn);
        }
        pv.versions.push_back(Stored { lsn, addr });
        pv.trimmed = true;
        pv.touched = clock;
        index.add_live(addr);
        let counts = index.per_segment.entry(segment).or_default();
        counts.pages += 1;
        counts.versions += 1;
        Ok(true)
    }

    /// Pages of `segment` that have at least one version, in increasing order.
    pub fn segment_pages(&self, segment: SegmentId) -> Vec<PageNo> {
        let mut pages: Vec<PageNo> = self
            .index
            .locked()
            .pages
            .iter()
            .filter(|(p, pv)| self.layout.segment_of(**p) == segment && !pv.versions.is_empty())
            .map(|(p, _)| *p)
            .collect();
        pages.sort();
        pages
    }

    /// Which version of `page` a checkpoint at `lsn` writes (`None`: never written at or below
    /// it), without reading it: a changes layer skips the pages not changed since the last
    /// checkpoint by their LSN alone.
    pub fn checkpoint_version(&self, page: PageNo, lsn: Lsn) -> Result<Option<Version>, ReadError> {
        let index = self.index.locked();
        let Some(pv) = index.pages.get(&page) else {
            return Ok(None);
        };
        match pv.versions.iter().rev().find(|v| v.lsn <= lsn) {
            Some(v) => Ok(Some(self.version(page, *v))),
            None if pv.trimmed => {
                let oldest = pv.versions.front().map_or(Lsn::INVALID, |v| v.lsn);
                Err(ReadError::LsnTooOld { page, lsn, oldest })
            }
            None => Ok(None),
        }
    }

    /// The version of `page` a checkpoint at `lsn` writes, and its LSN: like a read at `lsn`,
    /// but leaving the cache's order and counters alone and caching nothing it reads. Blocking
    /// (file i/o).
    pub fn version_for_checkpoint(
        &self,
        page: PageNo,
        lsn: Lsn,
    ) -> Result<Option<(Lsn, PageImage)>, ReadError> {
        let Some(version) = self.checkpoint_version(page, lsn)? else {
            return Ok(None);
        };
        Ok(Some((version.lsn, self.checkpoint_image(&version)?)))
    }

    /// The image of a version found by [`TenantPages::checkpoint_version`], leaving the cache's
    /// order and counters alone and caching nothing it reads. Blocking (file i/o).
    pub fn checkpoint_image(&self, version: &Version) -> Result<PageImage, PageFileError> {
        if let Some(image) = self.cache.peek(&(self.tenant, version.page, version.lsn)) {
            return Ok(image);
        }
        Ok(Arc::from(self.read_file(version)?))
    }

    /// Finds the version of `page` a read at `lsn` must see.
    pub fn lookup(&self, page: PageNo, lsn: Lsn) -> Result<Lookup, ReadError> {
        let mut index = self.index.locked();
        if let Some(remote) = index.remote_page(self.layout, page) {
            return Ok(Lookup::Remote(remote));
        }
        let clock = index.clock;
        let Some(pv) = index.pages.get_mut(&page) else {
            return Ok(Lookup::NeverWritten);
        };
        pv.touched = clock;
        match pv.versions.iter().rev().find(|v| v.lsn <= lsn) {
            Some(v) => Ok(match self.resolve(page, *v) {
                Resolved::Cached(image) => Lookup::Cached(image),
                Resolved::OnDisk(version) => Lookup::OnDisk(version),
            }),
            None if pv.trimmed => {
                let oldest = pv.versions.front().map_or(Lsn::INVALID, |v| v.lsn);
                Err(ReadError::LsnTooOld { page, lsn, oldest })
            }
            None => Ok(Lookup::NeverWritten),
        }
    }

    /// Reads a version found by [`TenantPages::lookup`] from the page file and caches it.
    /// Blocking (file i/o).
    pub fn read_version(&self, version: Version) -> Result<Arc<[u8]>, PageFileError> {
        let image: Arc<[u8]> = Arc::from(self.read_file(&version)?);
        self.cache
            .put((self.tenant, version.page, version.lsn), image.clone());
        Ok(image)
    }

    /// Reads a version found by [`TenantPages::lookup`] from the page file without caching it
    /// (a batch read for a scan, which must not flush the shared cache). Blocking (file i/o).
    pub fn read_version_uncached(&self, version: &Version) -> Result<Arc<[u8]>, PageFileError> {
        Ok(Arc::from(self.read_file(version)?))
    }

    /// Reads a version's record through the extent handle taken at its lookup.
    fn read_file(&self, v: &Version) -> Result<Vec<u8>, PageFileError> {
        match &v.extent {
            Some(extent) => self.file.read_image_in(extent, v.addr, v.page, v.lsn),
            None => self.file.read_image(v.addr, v.page, v.lsn),
        }
    }

    /// `page` as of `lsn`, reading the file if needed; panics on a page still in object storage
    /// (tests only). Blocking (file i/o).
    #[cfg(test)]
    pub fn get(&self, page: PageNo, lsn: Lsn) -> Result<Option<Arc<[u8]>>, ReadError> {
        match self.lookup(page, lsn)? {
            Lookup::NeverWritten => Ok(None),
            Lookup::Cached(image) => Ok(Some(image)),
            Lookup::OnDisk(v) => Ok(Some(self.read_version(v)?)),
            Lookup::Remote(r) => panic!("page {} is remote", r.page),
        }
    }

    /// Stops (`true`) or allows again (`false`) evicting `segment`'s pages.
    pub fn hold_eviction(&self, segment: SegmentId, held: bool) {
        let mut index = self.index.locked();
        if held {
            index.eviction_held.insert(segment);
        } else {
            index.eviction_held.remove(&segment);
        }
    }

    /// Pages and retained versions per segment.
    pub fn segment_counts(&self, segment: SegmentId) -> SegmentCounts {
        self.index
            .locked()
            .per_segment
            .get(&segment)
            .copied()
            .unwrap_or_default()
    }

    /// Bytes of the page file on disk (its extents; the newest one only as far as written).
    pub fn file_bytes(&self) -> u64 {
        let index = self.index.locked();
        let current = index.next_addr / index.extent_bytes;
        self.file
            .extents()
            .iter()
            .map(|&e| {
                if e < current {
                    index.extent_bytes
                } else {
                    index.next_addr % index.extent_bytes
                }
            })
            .sum()
    }

    /// Pages evicted under the disk budget since the store was created.
    pub fn pages_evicted(&self) -> u64 {
        self.index.locked().evicted
    }

    /// Bytes of the records the index names.
    pub fn live_bytes(&self) -> u64 {
        self.index.locked().live.values().sum::<u64>() * IMAGE_RECORD_BYTES as u64
    }

    /// One compaction pass (blocking file i/o):
    ///
    /// 1. **History.** For each page of a segment in `horizons`, the versions older than its
    ///    newest version at or below the segment's horizon are dropped from the index: a read
    ///    point below the horizon may then get "too old", never a wrong page (the page is marked
    ///    trimmed). The newest version at or below the horizon stays: it answers every read
    ///    point from its LSN up to the next version.
    /// 2. **Extents.** Every sealed extent (not the one appended to, no write in flight) whose
    ///    live records are at most `1 / EXTENT_RECLAIM_LIVE_DIVISOR` of it has them copied to the
    ///    end of the file (each copy checked first; the index is pointed at a copy only if it
    ///    still names the original), then is deleted. So the file holds at most about twice the
    ///    live records, plus the extent being filled.
    ///
    /// Reads and applies go on meanwhile: a read holds the handle of the extent its version was
    /// in, and the index moves a version only while holding its lock.
    pub fn compact(
        &self,
        horizons: &HashMap<SegmentId, Lsn>,
        disk_budget_bytes: Option<u64>,
    ) -> Result<Compacted, PageFileError> {
        let mut done = Compacted::default();
        self.index.locked().clock += 1;
        if !horizons.is_empty() {
            // In chunks, so that reads and applies of the tenant wait for one chunk at most.
            let pages: Vec<PageNo> = self.index.locked().pages.keys().copied().collect();
            for chunk in pages.chunks(COMPACTION_CHUNK_PAGES) {
                let mut index = self.index.locked();
                let mut dropped = Vec::new();
                let mut per_segment: HashMap<SegmentId, u64> = HashMap::new();
                for page in chunk {
                    let segment = self.layout.segment_of(*page);
                    let Some(&horizon) = horizons.get(&segment) else {
                        continue;
                    };
                    let Some(pv) = index.pages.get_mut(page) else {
                        continue;
                    };
                    // The newest version at or below the horizon, and how many are older.
                    let Some(keep_from) = pv.versions.iter().rposition(|v| v.lsn <= horizon) else {
                        continue;
                    };
                    for _ in 0..keep_from {
                        dropped.extend(pv.versions.pop_front());
                        *per_segment.entry(segment).or_default() += 1;
                    }
                    pv.trimmed |= keep_from > 0;
                }
                for s in &dropped {
                    index.drop_live(s.addr);
                }
                for (segment, n) in per_segment {
                    let counts = index.per_segment.entry(segment).or_default();
                    counts.versions -= n;
                }
                done.versions_dropped += dropped.len() as u64;
            }
        }

        if let Some(budget) = disk_budget_bytes {
            // Sealed extents are each more than half live once step 3 ran, so the file holds
            // at most twice the live records plus the extent being filled: keep the live
            // records within half of what the budget leaves beside that extent.
            let live_max = budget.saturating_sub(self.file.extent_bytes()) / 2;
            if self.live_bytes() > live_max {
                let target = live_max - live_max / EVICTION_HYSTERESIS_DIVISOR;
                done.pages_evicted = self.evict(target / IMAGE_RECORD_BYTES as u64);
            }
        }

        let victims: Vec<u64> = {
            let index = self.index.locked();
            let current = index.next_addr / index.extent_bytes;
            let records = index.extent_bytes / IMAGE_RECORD_BYTES as u64;
            self.file
                .extents()
                .into_iter()
                .filter(|e| *e < current && !index.in_flight.contains_key(e))
                .filter(|e| {
                    index.live.get(e).copied().unwrap_or(0) * EXTENT_RECLAIM_LIVE_DIVISOR <= records
                })
                .collect()
        };
        for extent in victims {
            done.records_moved += self.reclaim(extent)?;
            done.extents_removed += 1;
        }
        Ok(done)
    }

    /// Evicts the least recently used pages that may be evicted until at most `target_records`
    /// records are live (or none is left to evict); returns the pages evicted. A page may be
    /// evicted when its segment's chain in object storage holds its newest local version
    /// (that version is at or below the chain's `evict_upto`), its segment is not held, no
    /// record is being applied to it, and it was not touched in the last
    /// [`EVICTION_MIN_IDLE_PASSES`] passes. All its versions are dropped from the index: a
    /// read then finds it [`Lookup::Remote`] and fetches that version again; an older read
    /// point gets "too old".
    fn evict(&self, target_records: u64) -> u64 {
        let live = |index: &Index| index.live.values().sum::<u64>();
        let evictable = |index: &Index, page: PageNo| -> Option<(u32, usize)> {
            let pv = index.pages.get(&page)?;
            let newest = pv.versions.back()?;
            if pv.applying || pv.touched.saturating_add(EVICTION_MIN_IDLE_PASSES) > index.clock {
                return None;
            }
            let segment = self.layout.segment_of(page);
            if index.eviction_held.contains(&segment) {
                return None;
            }
            let chain = index.remote.get(&segment)?;
            if !chain.evict_upto.is_valid() || newest.lsn > chain.evict_upto {
                return None;
            }
            chain.find(page)?;
            Some((pv.touched, pv.versions.len()))
        };
        let pages: Vec<PageNo> = {
            let index = self.index.locked();
            if live(&index) <= target_records {
                return 0;
            }
            index.pages.keys().copied().collect()
        };
        // Least recently touched first.
        let mut candidates: Vec<(u32, PageNo)> = Vec::new();
        for chunk in pages.chunks(COMPACTION_CHUNK_PAGES) {
            let index = self.index.locked();
            candidates.extend(
                chunk
                    .iter()
                    .filter_map(|&p| evictable(&index, p).map(|(touched, _)| (touched, p))),
            );
        }
        candidates.sort_unstable();
        let mut evicted = 0;
        for chunk in candidates.chunks(COMPACTION_CHUNK_PAGES) {
            let mut index = self.index.locked();
            let mut live_records = live(&index);
            for &(_, page) in chunk {
                if live_records <= target_records {
                    return evicted;
                }
                // Looked at again: it may have been touched since.
                if evictable(&index, page).is_none() {
                    continue;
                }
                let Some(pv) = index.pages.remove(&page) else {
                    continue;
                };
                for v in &pv.versions {
                    index.drop_live(v.addr);
                }
                let counts = index
                    .per_segment
                    .entry(self.layout.segment_of(page))
                    .or_default();
                counts.pages -= 1;
                counts.versions -= pv.versions.len() as u64;
                live_records = live_records.saturating_sub(pv.versions.len() as u64);
                index.evicted += 1;
                evicted += 1;
            }
        }
        evicted
    }

    /// Copies the live records of sealed extent `extent` forward and deletes it; returns the
    /// records moved.
    fn reclaim(&self, extent: u64) -> Result<u64, PageFileError> {
        let record_bytes = IMAGE_RECORD_BYTES as u64;
        let buf = self.file.read_extent(extent)?;
        let base = extent * self.file.extent_bytes();
        let mut moved = 0;
        for (i, record) in buf.chunks_exact(IMAGE_RECORD_BYTES).enumerate() {
            let addr = base + i as u64 * record_bytes;
            let page = PageNo(u32::from_le_bytes([
                record[8], record[9], record[10], record[11],
            ]));
            let mut lsn = [0u8; 8];
            lsn.copy_from_slice(&record[12..20]);
            let lsn = Lsn(u64::from_le_bytes(lsn));
            let named = |index: &Index| {
                index
                    .pages
                    .get(&page)
                    .is_some_and(|pv| pv.versions.iter().any(|v| v.addr == addr && v.lsn == lsn))
            };
            if !named(&self.index.locked()) {
                continue; // dead, or never published (a gap)
            }
            // Named: it must check out before it is copied.
            crate::page_file::decode_image_record(record, addr, page, lsn)?;
            let to = self.append(|a| self.file.write_record(a, record))?;
            let mut index = self.index.locked();
            index.release(to);
            let mut repointed = false;
            if let Some(pv) = index.pages.get_mut(&page) {
                if let Some(v) = pv
                    .versions
                    .iter_mut()
                    .find(|v| v.addr == addr && v.lsn == lsn)
                {
                    v.addr = to;
                    repointed = true;
                }
            }
            if repointed {
                index.drop_live(addr);
                index.add_live(to);
                moved += 1;
            }
        }
        let mut index = self.index.locked();
        let left = index.live.get(&extent).copied().unwrap_or(0);
        if left > 0 {
            // Cannot happen: nothing is appended to a sealed extent. Keep it, loudly.
            tracing::error!(
                extent,
                left,
                "an extent still has live records after reclaiming it; kept"
            );
            return Ok(moved);
        }
        index.live.remove(&extent);
        drop(index);
        self.file.remove_extent(extent)?;
        Ok(moved)
    }

    /// Where version `s` of `page` is: in the cache, or on disk with its extent's handle. Call
    /// it under the index lock (the handle must be taken before compaction can move the
    /// version); a cached page costs no handle.
    fn resolve(&self, page: PageNo, s: Stored) -> Resolved {
        match self.cache.get(&(self.tenant, page, s.lsn)) {
            Some(image) => Resolved::Cached(image),
            None => Resolved::OnDisk(self.version(page, s)),
        }
    }

    /// Writes a new record at the next address (`write` is given it). The address stays in
    /// flight, so its extent is not reclaimed, until the caller releases it under the index
    /// lock as it publishes the record; a failed write releases it here and leaves an
    /// unreferenced gap.
    fn append(&self, write: impl FnOnce(u64) -> io::Result<()>) -> Result<u64, PageFileError> {
        let addr = self.index.locked().alloc();
        if let Err(e) = write(addr) {
            self.index.locked().release(addr);
            return Err(e.into());
        }
        Ok(addr)
    }
}

/// A version of a page found under the index lock ([`TenantPages::resolve`]).
enum Resolved {
    Cached(Arc<[u8]>),
    OnDisk(Version),
}

mod remote_chain;
pub use remote_chain::{RemoteChain, RemoteLayer, RemotePage, RemoteSource};

#[cfg(test)]
mod tests;
