//! GetPage@LSN: the one question the pageserver answers.
//!
//! 1. The asker vouches that `lsn` is durable (at or below the VDL of its writer, of epoch
//!    `epoch`): the tenant's vouched VDL is raised to it, which lets the segment's follower fetch
//!    and apply records up to it, from safekeepers at that epoch or newer.
//! 2. Wait, at most `--getpage-wait`, until the page's segment is applied up to `lsn`
//!    (`caught_up_to ≥ lsn`). Timing out answers [`ErrorKind::Unavailable`]: retry later.
//! 3. If the page is still in object storage (a restored segment, [`crate::restore`], or a page
//!    evicted under `--disk-cache-bytes`, [`crate::compaction`]), fetch it.
//! 4. Answer the newest version of the page at or below `lsn`, or "no page" if it was never
//!    written by then. If that version is no longer retained the answer is
//!    [`ErrorKind::Invalid`] ("lsn too old"), never a different version.

use crate::metrics::GetPageResult;
use crate::page_file::PageFileError;
use crate::pages::{Lookup, ReadError, RemotePage};
use crate::restore::FetchError;
use crate::tenant::{AttachError, Tenants};
use crate::window_read::HistoryError;
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, TenantId};
use borealis_utils::LockExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{debug, warn};

/// Fetches of one page a read makes at most: one, and another if the page was evicted again, or
/// its segment's chain moved to a newer index, before the read looked at it.
const PAGE_FETCHES_PER_READ_MAX: u32 = 3;

/// Pages of one `GetPages` read from object storage (or the retention window) at once.
const SLOW_READS_PER_BATCH_MAX: usize = 32;
/// `GetPages` reading the page file at once, pageserver-wide (each one blocking task of up to
/// 256 reads): scans share the disk and two cores without crowding out point reads.
pub const BATCH_READS_MAX: usize = 4;

#[derive(Debug, Error)]
pub enum GetPageError {
    #[error("lsn {lsn} too old for page {page}: the oldest retained version is at lsn {oldest}")]
    LsnTooOld { page: PageNo, lsn: Lsn, oldest: Lsn },
    #[error(
        "segment {segment} is applied up to lsn {caught_up_to}, not yet up to lsn {lsn}, after \
         waiting {waited_ms} ms; retry"
    )]
    NotCaughtUp {
        segment: SegmentId,
        lsn: Lsn,
        caught_up_to: Lsn,
        waited_ms: u64,
    },
    #[error(
        "segment {segment} not followed: the tenant already has {} segments",
        crate::tenant::SEGMENTS_PER_TENANT_MAX
    )]
    TooManySegments { segment: SegmentId },
    #[error("tenant {0} was deleted")]
    TenantDeleted(TenantId),
    #[error("local page file corrupt: {0}")]
    Corrupt(String),
    #[error("local page store: {0}")]
    Io(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl GetPageError {
    /// What the asker should do.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GetPageError::LsnTooOld { .. }
            | GetPageError::TooManySegments { .. }
            | GetPageError::TenantDeleted(_) => ErrorKind::Invalid,
            GetPageError::NotCaughtUp { .. } | GetPageError::Io(_) => ErrorKind::Unavailable,
            GetPageError::Corrupt(_) => ErrorKind::Corrupt,
            GetPageError::Internal(_) => ErrorKind::Internal,
        }
    }

    fn result(&self) -> GetPageResult {
        match self {
            GetPageError::LsnTooOld { .. } => GetPageResult::TooOld,
            GetPageError::NotCaughtUp { .. } => GetPageResult::Timeout,
            _ => GetPageResult::Error,
        }
    }
}

impl From<PageFileError> for GetPageError {
    fn from(e: PageFileError) -> Self {
        match e {
            PageFileError::Io(e) => GetPageError::Io(e.to_string()),
            PageFileError::Corrupt { .. } => GetPageError::Corrupt(e.to_string()),
        }
    }
}

impl From<ReadError> for GetPageError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::LsnTooOld { page, lsn, oldest } => {
                GetPageError::LsnTooOld { page, lsn, oldest }
            }
            ReadError::File(e) => e.into(),
        }
    }
}

/// `page` of `tenant` as of `lsn` (`None`: never written at or below `lsn`), as asked by a
/// reader of the writer of epoch `epoch`.
pub async fn get_page(
    tenants: &Tenants,
    tenant: TenantId,
    page: PageNo,
    lsn: Lsn,
    epoch: u64,
) -> Result<Option<Arc<[u8]>>, GetPageError> {
    let started = Instant::now();
    let result = get_page_inner(tenants, tenant, page, lsn, epoch).await;
    let metrics = &tenants.shared().metrics;
    let outcome = match &result {
        Ok(Some(_)) => GetPageResult::Page,
        Ok(None) => GetPageResult::NoPage,
        Err(e) => e.result(),
    };
    metrics.getpage_done(outcome, started.elapsed());
    result
}

async fn get_page_inner(
    tenants: &Tenants,
    tenant_id: TenantId,
    page: PageNo,
    lsn: Lsn,
    epoch: u64,
) -> Result<Option<Arc<[u8]>>, GetPageError> {
    let shared = tenants.shared();
    let segment_id = shared.config.layout.segment_of(page);
    let (tenant, segment) = attach(tenants, tenant_id, segment_id)?;
    tenant.vouch(lsn, epoch);
    wait_caught_up(shared, &segment, lsn).await?;
    read_at(shared, &tenant, &segment, page, lsn).await
}

/// The tenant and its segment `segment_id`, attached (and followed) from the first read on.
fn attach(
    tenants: &Tenants,
    tenant_id: TenantId,
    segment_id: SegmentId,
) -> Result<(Arc<crate::tenant::Tenant>, Arc<crate::tenant::Segment>), GetPageError> {
    let tenant = tenants.get_or_create(tenant_id).map_err(|e| match e {
        AttachError::Deleted(id) => GetPageError::TenantDeleted(id),
        AttachError::Io(e) => GetPageError::Io(format!("attaching tenant {tenant_id}: {e}")),
    })?;
    let segment = tenants.segment(&tenant, segment_id).ok_or_else(|| {
        if tenants.is_dropped(tenant_id) {
            GetPageError::TenantDeleted(tenant_id)
        } else {
            GetPageError::TooManySegments {
                segment: segment_id,
            }
        }
    })?;
    Ok((tenant, segment))
}

/// Waits, at most `--getpage-wait`, until `segment` is applied up to `lsn`.
async fn wait_caught_up(
    shared: &crate::tenant::Shared,
    segment: &Arc<crate::tenant::Segment>,
    lsn: Lsn,
) -> Result<(), GetPageError> {
    let mut caught_up_to = segment.subscribe_caught_up_to();
    let wait_started = Instant::now();
    if *caught_up_to.borrow_and_update() >= lsn {
        shared.metrics.getpage_wait_seconds.observe(Duration::ZERO);
        return Ok(());
    }
    let _waiter = segment.wait_for(lsn);
    let wait = shared.config.getpage_wait;
    let waited = tokio::time::timeout(wait, caught_up_to.wait_for(|c| *c >= lsn)).await;
    shared
        .metrics
        .getpage_wait_seconds
        .observe(wait_started.elapsed());
    match waited {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(GetPageError::Internal(
            "the segment's follower is gone".into(),
        )),
        Err(_) => Err(GetPageError::NotCaughtUp {
            segment: segment.id,
            lsn,
            caught_up_to: segment.caught_up_to(),
            waited_ms: duration_ms(wait),
        }),
    }
}

/// `page` as of `lsn` in a segment applied up to `lsn`: from the local page file, or from the
/// retention window's layers below the local history.
async fn read_at(
    shared: &crate::tenant::Shared,
    tenant: &Arc<crate::tenant::Tenant>,
    segment: &Arc<crate::tenant::Segment>,
    page: PageNo,
    lsn: Lsn,
) -> Result<Option<Arc<[u8]>>, GetPageError> {
    match read_local(shared, tenant, segment, page, lsn).await {
        Err(GetPageError::LsnTooOld { page, lsn, oldest }) => {
            // Below the local history: the retention window's layers, if they cover it.
            let window = segment.window.locked().clone();
            let Some(window) = window.filter(|w| w.covers(lsn)) else {
                return Err(GetPageError::LsnTooOld { page, lsn, oldest });
            };
            let rebuilt = crate::window_read::page_at(shared, &window, page, lsn)
                .await
                .map_err(|e| match e {
                    HistoryError::NotRetained { .. } => {
                        GetPageError::LsnTooOld { page, lsn, oldest }
                    }
                    HistoryError::Remote(e) => GetPageError::Io(e),
                    HistoryError::Corrupt { .. } => GetPageError::Corrupt(e.to_string()),
                })?;
            shared.metrics.window_reads.inc();
            Ok(rebuilt.map(Arc::from))
        }
        other => other,
    }
}

/// One page's answer: its image, `None` (never written at or below the LSN), or why it failed.
pub type PageRead = Result<Option<Arc<[u8]>>, GetPageError>;

/// Why a `GetPages` request was refused whole (what concerns one page is its entry).
#[derive(Debug, Error)]
pub enum GetPagesError {
    #[error("invalid GetPages: {0}")]
    Shape(String),
    #[error(transparent)]
    Request(#[from] GetPageError),
}

impl GetPagesError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            GetPagesError::Shape(_) => ErrorKind::Invalid,
            GetPagesError::Request(e) => e.kind(),
        }
    }
}

/// Pages of one segment of `tenant` as of `lsn`, in one answer (RFC 0016 §4): each page what
/// [`get_page`] of it alone answers, or that answer's error. The request is checked, vouched and
/// waited for once; pages in the page file are read together in one blocking task, and are not
/// put in the shared page cache (one tenant's scan must not flush the pages every tenant's point
/// reads use); pages only in object storage are fetched together
/// ([`crate::restore::fetch_pages`]: side-by-side records in one ranged read), and those whose
/// fetch failed or that lie below the local history take the one-page path,
/// [`SLOW_READS_PER_BATCH_MAX`] at once.
pub async fn get_pages(
    tenants: &Tenants,
    tenant_id: TenantId,
    pages: &[PageNo],
    lsn: Lsn,
    epoch: u64,
) -> Result<Vec<PageRead>, GetPagesError> {
    let started = Instant::now();
    let shared = tenants.shared();
    let layout = shared.config.layout;
    let (Some(first), Some(last)) = (pages.first(), pages.last()) else {
        return Err(GetPagesError::Shape("no pages asked".into()));
    };
    if pages.len() > borealis_wire::PAGES_PER_BATCH_MAX {
        return Err(GetPagesError::Shape(format!(
            "{} pages asked, at most {} in one request",
            pages.len(),
            borealis_wire::PAGES_PER_BATCH_MAX
        )));
    }
    if pages.windows(2).any(|w| w[0] >= w[1]) {
        return Err(GetPagesError::Shape(
            "page numbers must be strictly ascending".into(),
        ));
    }
    let segment_id = layout.segment_of(*first);
    if layout.segment_of(*last) != segment_id {
        return Err(GetPagesError::Shape(format!(
            "pages {first} to {last} span segments {segment_id} to {}: one segment per request",
            layout.segment_of(*last)
        )));
    }
    let (tenant, segment) = attach(tenants, tenant_id, segment_id)?;
    tenant.vouch(lsn, epoch);
    if let Err(e) = wait_caught_up(shared, &segment, lsn).await {
        // Counted where GetPage's timeouts are, so that alerts on them see scans too.
        shared.metrics.getpage_failed(e.result());
        return Err(e.into());
    }

    let mut answers: Vec<Option<PageRead>> = pages.iter().map(|_| None).collect();
    let all: Vec<usize> = (0..pages.len()).collect();
    let remote = read_local_batch(shared, &tenant, pages, lsn, &all, &mut answers).await?;
    // Pages still in object storage: fetched together (side-by-side records in one ranged
    // read), then read like the others. A page whose fetch failed takes the one-page path below,
    // which tries again and tells why.
    if !remote.is_empty() {
        let (indexes, remotes): (Vec<usize>, Vec<RemotePage>) = remote.into_iter().unzip();
        let fetched = crate::restore::fetch_pages(shared, &tenant, &segment, &remotes).await;
        let mut again = Vec::with_capacity(indexes.len());
        for (i, f) in indexes.into_iter().zip(fetched) {
            match f {
                Ok(()) => again.push(i),
                Err(e @ FetchError::Corrupt { .. }) => {
                    warn!(tenant = %tenant_id, page = %pages[i], error = %e, "a page fetched from object storage is corrupt; fetching it again alone");
                }
                Err(e) => {
                    debug!(tenant = %tenant_id, page = %pages[i], error = %e, "fetching a page with others failed; fetching it again alone");
                }
            }
        }
        read_local_batch(shared, &tenant, pages, lsn, &again, &mut answers).await?;
    }
    // The rest (in object storage, or below the local history) each wait on a ranged read:
    // several at once, as separate GetPages of them would be.
    let slow: Vec<usize> = (0..pages.len()).filter(|&i| answers[i].is_none()).collect();
    for chunk in slow.chunks(SLOW_READS_PER_BATCH_MAX) {
        let mut reads = Vec::with_capacity(chunk.len());
        for &i in chunk {
            reads.push(read_at(shared, &tenant, &segment, pages[i], lsn));
        }
        for (&i, read) in chunk.iter().zip(futures::future::join_all(reads).await) {
            answers[i] = Some(read);
        }
    }
    let out: Vec<_> = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(GetPageError::Internal("a page left unread".into()))))
        .collect();
    shared.metrics.getpages_done(out.len(), started.elapsed());
    Ok(out)
}

/// Answers, of `pages` at `indexes`, those the local page file (or the shared cache) has:
/// one lookup each, the page file's versions read in one blocking task. Returns the pages still
/// in object storage; pages below the local history are left unanswered, as are those.
async fn read_local_batch(
    shared: &crate::tenant::Shared,
    tenant: &Arc<crate::tenant::Tenant>,
    pages: &[PageNo],
    lsn: Lsn,
    indexes: &[usize],
    answers: &mut [Option<PageRead>],
) -> Result<Vec<(usize, RemotePage)>, GetPagesError> {
    let mut on_disk = Vec::new();
    let mut remote = Vec::new();
    for &i in indexes {
        match tenant.pages.lookup(pages[i], lsn) {
            Ok(Lookup::NeverWritten) => answers[i] = Some(Ok(None)),
            Ok(Lookup::Cached(image)) => answers[i] = Some(Ok(Some(image))),
            Ok(Lookup::OnDisk(version)) => on_disk.push((i, version)),
            Ok(Lookup::Remote(r)) => remote.push((i, r)),
            // Below the local history: the one-page path reads the retention window.
            Err(ReadError::LsnTooOld { .. }) => {}
            Err(e) => answers[i] = Some(Err(e.into())),
        }
    }
    if on_disk.is_empty() {
        return Ok(remote);
    }
    let _permit = shared
        .batch_reads
        .acquire()
        .await
        .map_err(|_| GetPageError::Internal("the pageserver is stopping".into()))?;
    let file = tenant.pages.clone();
    let read = tokio::task::spawn_blocking(move || {
        on_disk
            .into_iter()
            .map(|(i, version)| (i, file.read_version_uncached(&version)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| GetPageError::Internal(format!("page read task failed: {e}")))?;
    for (i, image) in read {
        answers[i] = Some(image.map(Some).map_err(GetPageError::from));
    }
    Ok(remote)
}

/// `page` as of `lsn` from the local page file (fetching it first if it is still only in
/// object storage).
async fn read_local(
    shared: &crate::tenant::Shared,
    tenant: &Arc<crate::tenant::Tenant>,
    segment: &Arc<crate::tenant::Segment>,
    page: PageNo,
    lsn: Lsn,
) -> Result<Option<Arc<[u8]>>, GetPageError> {
    let mut lookup = tenant.pages.lookup(page, lsn)?;
    // Still in object storage (a restored segment, or an evicted page): fetch it, then it is
    // local. Again if it was evicted once more in between, or the chain moved on to a newer
    // index (whose GC may have deleted the layer it was fetched from).
    let mut fetches = 0;
    while let Lookup::Remote(remote) = &lookup {
        fetches += 1;
        let fetched = crate::restore::fetch_page(shared, tenant, segment, remote).await;
        let moved = || {
            tenant
                .pages
                .remote_chain(segment.id)
                .is_some_and(|c| !Arc::ptr_eq(&c, &remote.chain))
        };
        match fetched {
            Ok(()) => {}
            Err(_) if fetches < PAGE_FETCHES_PER_READ_MAX && moved() => {}
            Err(e) => {
                return Err(match e {
                    FetchError::Remote(e) => GetPageError::Io(format!("fetching the page: {e}")),
                    FetchError::RemoteRun(e) => GetPageError::Io(format!("fetching the page: {e}")),
                    FetchError::Window(e) => GetPageError::Io(format!("fetching the page: {e}")),
                    FetchError::Corrupt { .. } => GetPageError::Corrupt(e.to_string()),
                    FetchError::Install(e) => GetPageError::Io(e.to_string()),
                    FetchError::Task(e) => GetPageError::Internal(e),
                })
            }
        }
        lookup = tenant.pages.lookup(page, lsn)?;
        if fetches >= PAGE_FETCHES_PER_READ_MAX {
            break;
        }
    }
    match lookup {
        Lookup::NeverWritten => Ok(None),
        Lookup::Cached(image) => Ok(Some(image)),
        Lookup::Remote(_) => Err(GetPageError::Internal(format!(
            "page {page} is still remote after fetching it"
        ))),
        Lookup::OnDisk(version) => {
            let pages = tenant.pages.clone();
            match tokio::task::spawn_blocking(move || pages.read_version(version)).await {
                Ok(read) => Ok(Some(read?)),
                Err(e) => Err(GetPageError::Internal(format!(
                    "page read task failed: {e}"
                ))),
            }
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
