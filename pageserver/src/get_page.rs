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
use crate::pages::{Lookup, ReadError};
use crate::restore::FetchError;
use crate::tenant::{AttachError, Tenants};
use crate::window_read::HistoryError;
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, TenantId};
use borealis_utils::LockExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Fetches of one page a read makes at most: one, and another if the page was evicted again, or
/// its segment's chain moved to a newer index, before the read looked at it.
const PAGE_FETCHES_PER_READ_MAX: u32 = 3;

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
    let tenant = tenants.get_or_create(tenant_id).map_err(|e| match e {
        AttachError::Deleted(id) => GetPageError::TenantDeleted(id),
        AttachError::Io(e) => GetPageError::Io(format!("attaching tenant {tenant_id}: {e}")),
    })?;
    let segment_id = shared.config.layout.segment_of(page);
    let segment = tenants.segment(&tenant, segment_id).ok_or_else(|| {
        if tenants.is_dropped(tenant_id) {
            GetPageError::TenantDeleted(tenant_id)
        } else {
            GetPageError::TooManySegments {
                segment: segment_id,
            }
        }
    })?;
    tenant.vouch(lsn, epoch);

    let mut caught_up_to = segment.subscribe_caught_up_to();
    let wait_started = Instant::now();
    if *caught_up_to.borrow_and_update() < lsn {
        let _waiter = segment.wait_for(lsn);
        let wait = shared.config.getpage_wait;
        let waited = tokio::time::timeout(wait, caught_up_to.wait_for(|c| *c >= lsn)).await;
        shared
            .metrics
            .getpage_wait_seconds
            .observe(wait_started.elapsed());
        match waited {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                return Err(GetPageError::Internal(
                    "the segment's follower is gone".into(),
                ))
            }
            Err(_) => {
                return Err(GetPageError::NotCaughtUp {
                    segment: segment.id,
                    lsn,
                    caught_up_to: segment.caught_up_to(),
                    waited_ms: duration_ms(wait),
                })
            }
        }
    } else {
        shared.metrics.getpage_wait_seconds.observe(Duration::ZERO);
    }

    match read_local(shared, &tenant, &segment, page, lsn).await {
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
