//! GetPage@LSN against a tenant's pageservers, for writer ([`crate::volume`]) and reader
//! ([`crate::compute_pool::reader`]) computes alike.
//!
//! Each segment of a volume is served by one pageserver of the pool, chosen by rendezvous hashing
//! ([`pageserver_of`]), so a tenant's segments spread over the pageservers. One persistent
//! connection per pageserver, opened on first use and again after it breaks. Every answer is
//! checked: a page must be exactly [`PAGE_SIZE_BYTES`] long, anything else is an error, never a
//! page.

use crate::metrics::Metrics;
use crate::storage_auth::StorageTokens;
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, SegmentLayout, TenantId, PAGE_SIZE_BYTES};
use borealis_wire::{Body, Client, PageAnswer, PAGES_PER_BATCH_MAX};
use compute_host::BackendError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

const PAGESERVER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on one GetPage round trip, including the pageserver's wait for the log.
const GETPAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A page image, shared between caches.
pub type Page = Arc<Vec<u8>>;

/// One page of a multi-page read: its image, `None` (never written at the asked LSN), or why
/// that page alone could not be read.
pub type PageResult = Result<Option<Page>, BackendError>;

/// Where the answer of a fetch started by [`PageClient::spawn_get_pages`] arrives.
pub type PagesAnswer = oneshot::Receiver<Result<Vec<PageResult>, BackendError>>;

/// The pageserver (an index into `n`) that serves `segment` of `tenant`.
pub fn pageserver_of(tenant: TenantId, segment: SegmentId, n: usize) -> usize {
    borealis_core::placement::choose_one(tenant, segment, n)
}

pub struct PageClient {
    /// The pool of pageservers.
    addrs: Vec<String>,
    /// One connection per pageserver, opened when first needed.
    clients: Vec<Option<Arc<Client>>>,
    layout: SegmentLayout,
    /// Mints the tenant-scoped token a new connection presents.
    tokens: Arc<StorageTokens>,
    /// Counts the requests sent and the pages they asked for.
    metrics: Arc<Metrics>,
}

impl PageClient {
    pub fn new(
        addrs: Vec<String>,
        layout: SegmentLayout,
        tokens: Arc<StorageTokens>,
        metrics: Arc<Metrics>,
    ) -> Self {
        assert!(!addrs.is_empty(), "at least one pageserver");
        Self {
            clients: addrs.iter().map(|_| None).collect(),
            addrs,
            layout,
            tokens,
            metrics,
        }
    }

    /// The gateway's metrics, which this client counts its requests in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// How the volume's pages fall into segments.
    pub fn layout(&self) -> SegmentLayout {
        self.layout
    }

    /// Several pages as of `lsn`, in the order asked, in one round trip per pageserver involved
    /// (a run of pages within one segment involves one): one `GetPages` per ascending run of
    /// one segment, pipelined on its connection (one page alone is a `GetPage`). At most
    /// [`PAGES_PER_CALL_MAX`]. What concerns the whole request (the pageserver unreachable, an
    /// answer that breaks its shape) fails the call; a page that failed alone is its entry, so
    /// a caller reading ahead drops it and keeps the page it was asked for.
    pub fn get_pages(
        &mut self,
        rt: &Handle,
        tenant: TenantId,
        pages: &[PageNo],
        lsn: Lsn,
        epoch: u64,
    ) -> Result<Vec<PageResult>, BackendError> {
        let n = self.addrs.len();
        let server = |p: &PageNo| pageserver_of(tenant, self.layout.segment_of(*p), n);
        let first = pages.first().map(server);
        if pages.iter().all(|p| Some(server(p)) == first) {
            return match first {
                Some(i) => self.get_pages_from(i, rt, tenant, pages, lsn, epoch),
                None => Ok(Vec::new()),
            };
        }
        // Pages of segments on different pageservers: one call to each, answers put back in order.
        let mut by_server: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
        for (i, p) in pages.iter().enumerate() {
            by_server.entry(server(p)).or_default().push(i);
        }
        let mut out: Vec<PageResult> = pages.iter().map(|_| Ok(None)).collect();
        for (srv, idx) in by_server {
            let asked: Vec<PageNo> = idx.iter().map(|&i| pages[i]).collect();
            let got = self.get_pages_from(srv, rt, tenant, &asked, lsn, epoch)?;
            for (i, page) in idx.into_iter().zip(got) {
                out[i] = page;
            }
        }
        Ok(out)
    }

    fn get_pages_from(
        &mut self,
        server: usize,
        rt: &Handle,
        tenant: TenantId,
        pages: &[PageNo],
        lsn: Lsn,
        epoch: u64,
    ) -> Result<Vec<PageResult>, BackendError> {
        assert!(
            pages.len() <= PAGES_PER_CALL_MAX,
            "at most {PAGES_PER_CALL_MAX} pages per call"
        );
        let addr = self.addrs[server].clone();
        let tokens = self.tokens.clone();
        let (layout, metrics) = (self.layout, self.metrics.clone());
        let mut client = self.clients[server].take();
        let result = rt.block_on(async {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = Some(Arc::new(
                    Client::connect(
                        &addr,
                        &tokens.tenant(tenant),
                        PAGESERVER_CONNECT_TIMEOUT,
                        None,
                    )
                    .await
                    .map_err(|e| {
                        BackendError::new(
                            ErrorKind::Unavailable,
                            format!("pageserver {addr} unreachable: {e}"),
                        )
                    })?,
                ));
            }
            let c = client.as_ref().expect("connected above");
            fetch(c, layout, &metrics, tenant, pages, lsn, epoch).await
        });
        self.clients[server] = client;
        result
    }

    /// Starts fetching `pages` (ascending, one segment, at most [`PAGES_PER_CALL_MAX`]) as of
    /// `lsn` in the background, on the connection a read of that segment already opened; the
    /// answer comes on the returned channel, and the handle stops the fetch when its answer is
    /// no longer wanted. `None` when there is no open connection to use (the caller reads
    /// synchronously instead, which opens one).
    pub fn spawn_get_pages(
        &self,
        rt: &Handle,
        tenant: TenantId,
        pages: Vec<PageNo>,
        lsn: Lsn,
        epoch: u64,
    ) -> Option<(PagesAnswer, AbortHandle)> {
        let first = *pages.first()?;
        let segment = self.layout.segment_of(first);
        assert!(
            pages.len() <= PAGES_PER_CALL_MAX
                && pages.windows(2).all(|w| w[0] < w[1])
                && pages.iter().all(|p| self.layout.segment_of(*p) == segment),
            "a background fetch is one ascending run of one segment"
        );
        let server = pageserver_of(tenant, segment, self.addrs.len());
        let client = self.clients[server].clone().filter(|c| !c.is_closed())?;
        let (layout, metrics) = (self.layout, self.metrics.clone());
        let (tx, rx) = oneshot::channel();
        let task = rt.spawn(async move {
            let got = fetch(&client, layout, &metrics, tenant, &pages, lsn, epoch).await;
            let _ = tx.send(got);
        });
        Some((rx, task.abort_handle()))
    }
}

/// `pages` as of `lsn` on `client`: one `GetPage` for one page, else one `GetPages` per
/// ascending run of one segment, pipelined.
async fn fetch(
    client: &Client,
    layout: SegmentLayout,
    metrics: &Metrics,
    tenant: TenantId,
    pages: &[PageNo],
    lsn: Lsn,
    epoch: u64,
) -> Result<Vec<PageResult>, BackendError> {
    metrics
        .pages_requested
        .fetch_add(pages.len() as u64, Ordering::Relaxed);
    if let [page] = pages {
        metrics.page_requests_one.fetch_add(1, Ordering::Relaxed);
        let answer = call_get_page(client, tenant, *page, lsn, epoch)
            .await
            .map_err(|e| BackendError::new(e.kind(), format!("GetPage {page}@{lsn}: {e}")))?;
        return Ok(vec![checked_page(*page, answer)]);
    }
    let batches = batches(pages, |p| layout.segment_of(p));
    metrics
        .page_requests_batch
        .fetch_add(batches.len() as u64, Ordering::Relaxed);
    let calls = batches.iter().map(|batch| async move {
        let asked = &pages[batch.clone()];
        let answer = call_get_pages(client, tenant, asked, lsn, epoch)
            .await
            .map_err(|e| {
                BackendError::new(
                    e.kind(),
                    format!(
                        "GetPages of {} pages from {}@{lsn}: {e}",
                        asked.len(),
                        asked[0]
                    ),
                )
            })?;
        checked_pages(asked, answer)
    });
    let answers = futures::future::try_join_all(calls).await?;
    Ok(answers.into_iter().flatten().collect())
}

impl PageClient {
    /// Makes the pageservers of the segments of `pages` not in `warmed` start following them now,
    /// in the background, instead of at their first read: one `GetPage` of a page of the segment
    /// at `lsn` (durable, at `epoch`), whose answer is dropped. A pageserver attaches a segment
    /// and follows its log from its first `GetPage` on; a bulk load writes new pages without
    /// reading them, so without this the first read of each segment it filled would wait for the
    /// pageserver to replay the segment's whole log (about 0.2 s per 16 MiB segment, measured).
    pub fn warm(
        &self,
        rt: &Handle,
        tenant: TenantId,
        pages: impl IntoIterator<Item = PageNo>,
        warmed: &mut std::collections::HashSet<SegmentId>,
        lsn: Lsn,
        epoch: u64,
    ) {
        if !lsn.is_valid() {
            return;
        }
        for page in pages {
            let segment = self.layout.segment_of(page);
            if !warmed.insert(segment) {
                continue;
            }
            let addr = self.addrs[pageserver_of(tenant, segment, self.addrs.len())].clone();
            let token = self.tokens.tenant(tenant);
            rt.spawn(async move {
                let answer = async {
                    let client =
                        Client::connect(&addr, &token, PAGESERVER_CONNECT_TIMEOUT, None).await?;
                    call_get_page(&client, tenant, page, lsn, epoch).await
                }
                .await;
                if let Err(e) = answer {
                    tracing::debug!(%tenant, %segment, pageserver = %addr, error = %e, "warming a segment failed; its first read attaches it");
                }
            });
        }
    }
}

/// One `GetPage` round trip on `client`, bounded by [`GETPAGE_TIMEOUT`].
async fn call_get_page(
    client: &Client,
    tenant: TenantId,
    page: PageNo,
    lsn: Lsn,
    epoch: u64,
) -> Result<Body, borealis_wire::WireError> {
    client
        .call(
            Body::GetPage {
                tenant,
                page,
                lsn,
                epoch,
            },
            GETPAGE_TIMEOUT,
        )
        .await
}

/// One `GetPages` round trip on `client`, bounded by [`GETPAGE_TIMEOUT`].
async fn call_get_pages(
    client: &Client,
    tenant: TenantId,
    pages: &[PageNo],
    lsn: Lsn,
    epoch: u64,
) -> Result<Body, borealis_wire::WireError> {
    client
        .call(
            Body::GetPages {
                tenant,
                lsn,
                epoch,
                pages: pages.to_vec(),
            },
            GETPAGE_TIMEOUT,
        )
        .await
}

/// `pages` cut into the index ranges one `GetPages` each may ask: strictly ascending, one
/// segment, at most [`PAGES_PER_BATCH_MAX`].
fn batches(
    pages: &[PageNo],
    segment_of: impl Fn(PageNo) -> SegmentId,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=pages.len() {
        let ends = i == pages.len()
            || pages[i] <= pages[i - 1]
            || segment_of(pages[i]) != segment_of(pages[start])
            || i - start == PAGES_PER_BATCH_MAX;
        if ends {
            out.push(start..i);
            start = i;
        }
    }
    out
}

/// The pages of a `GetPages` answer, checked: one entry per page asked, or the whole answer is
/// refused; each image exactly [`PAGE_SIZE_BYTES`], or that entry is corrupt; a page the
/// pageserver could not read is that entry's error.
fn checked_pages(asked: &[PageNo], answer: Body) -> Result<Vec<PageResult>, BackendError> {
    let Body::Pages { pages: answers } = answer else {
        return Err(BackendError::new(
            ErrorKind::Internal,
            format!("unexpected answer to GetPages: {}", answer.name()),
        ));
    };
    if answers.len() != asked.len() {
        return Err(BackendError::new(
            ErrorKind::Corrupt,
            format!(
                "pageserver answered {} pages to a GetPages of {}",
                answers.len(),
                asked.len()
            ),
        ));
    }
    Ok(asked
        .iter()
        .zip(answers)
        .map(|(page, answer)| match answer {
            PageAnswer::Image(img) if img.len() == PAGE_SIZE_BYTES => Ok(Some(Arc::new(img))),
            PageAnswer::Image(img) => Err(BackendError::new(
                ErrorKind::Corrupt,
                format!("pageserver returned {} bytes for page {page}", img.len()),
            )),
            PageAnswer::NeverWritten => Ok(None),
            PageAnswer::Failed { kind, message } => Err(BackendError::new(
                kind,
                format!("GetPages, page {page}: {message}"),
            )),
        })
        .collect())
}

/// Pages one [`PageClient::get_pages`] asks for at most.
pub const PAGES_PER_CALL_MAX: usize = 64;

/// The page in a `GetPage` answer, checked: exactly [`PAGE_SIZE_BYTES`] or none.
fn checked_page(page: PageNo, answer: Body) -> Result<Option<Page>, BackendError> {
    match answer {
        Body::Page { image: None } => Ok(None),
        Body::Page { image: Some(img) } if img.len() == PAGE_SIZE_BYTES => Ok(Some(Arc::new(img))),
        Body::Page { image: Some(img) } => Err(BackendError::new(
            ErrorKind::Corrupt,
            format!("pageserver returned {} bytes for page {page}", img.len()),
        )),
        other => Err(BackendError::new(
            ErrorKind::Internal,
            format!("unexpected answer to GetPage: {}", other.name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages(ns: &[u32]) -> Vec<PageNo> {
        ns.iter().map(|n| PageNo(*n)).collect()
    }

    #[test]
    fn a_call_is_cut_into_ascending_runs_of_one_segment() {
        let by_four = |p: PageNo| SegmentId(p.0 / 4);
        assert_eq!(batches(&pages(&[0, 1, 2, 3]), by_four), vec![(0..4)]);
        assert_eq!(batches(&pages(&[2, 3, 4, 5]), by_four), [0..2, 2..4]);
        assert_eq!(batches(&pages(&[1, 0]), by_four), [0..1, 1..2]);
        assert_eq!(batches(&pages(&[1, 1, 2]), by_four), [0..1, 1..3]);
        assert!(batches(&[], by_four).is_empty());
        let long: Vec<PageNo> = (0..600).map(PageNo).collect();
        let one = |_: PageNo| SegmentId(0);
        assert_eq!(batches(&long, one), [0..256, 256..512, 512..600]);
    }

    #[test]
    fn a_pages_answer_is_checked_entry_by_entry() {
        let asked = pages(&[7, 8, 9]);
        let good = Body::Pages {
            pages: vec![
                PageAnswer::Image(vec![1; PAGE_SIZE_BYTES]),
                PageAnswer::NeverWritten,
                PageAnswer::Image(vec![2; PAGE_SIZE_BYTES]),
            ],
        };
        let got = checked_pages(&asked, good).unwrap();
        assert_eq!(
            got[0].as_ref().unwrap().as_deref(),
            Some(&vec![1; PAGE_SIZE_BYTES])
        );
        assert_eq!(got[1].as_ref().unwrap(), &None);
        assert_eq!(
            got[2].as_ref().unwrap().as_deref(),
            Some(&vec![2; PAGE_SIZE_BYTES])
        );
        // One entry too few: the whole answer is corrupt.
        let short = Body::Pages {
            pages: vec![PageAnswer::NeverWritten, PageAnswer::NeverWritten],
        };
        assert_eq!(
            checked_pages(&asked, short).unwrap_err().kind,
            ErrorKind::Corrupt
        );
        // An image of the wrong size, a page that failed: those entries only.
        let mixed = Body::Pages {
            pages: vec![
                PageAnswer::NeverWritten,
                PageAnswer::Image(vec![0; 100]),
                PageAnswer::Failed {
                    kind: ErrorKind::Unavailable,
                    message: "object store down".into(),
                },
            ],
        };
        let got = checked_pages(&asked, mixed).unwrap();
        assert!(matches!(got[0], Ok(None)));
        let torn = got[1].as_ref().unwrap_err();
        assert_eq!(torn.kind, ErrorKind::Corrupt);
        assert!(torn.message.contains("page 8"), "{}", torn.message);
        let failed = got[2].as_ref().unwrap_err();
        assert_eq!(failed.kind, ErrorKind::Unavailable);
        assert!(
            failed.message.contains("object store down"),
            "{}",
            failed.message
        );
        // Not a `Pages` answer at all.
        assert_eq!(
            checked_pages(&asked, Body::Page { image: None })
                .unwrap_err()
                .kind,
            ErrorKind::Internal
        );
    }
}
