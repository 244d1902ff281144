//! GetPage@LSN against a tenant's pageservers, for writer ([`crate::volume`]) and reader
//! ([`crate::compute_pool::reader`]) computes alike.
//!
//! Each segment of a volume is served by one pageserver of the pool, chosen by rendezvous hashing
//! ([`pageserver_of`]), so a tenant's segments spread over the pageservers. One persistent
//! connection per pageserver, opened on first use and again after it breaks. Every answer is
//! checked: a page must be exactly [`PAGE_SIZE_BYTES`] long, anything else is an error, never a
//! page.

use crate::storage_auth::StorageTokens;
use borealis_core::{ErrorKind, Lsn, PageNo, SegmentId, SegmentLayout, TenantId, PAGE_SIZE_BYTES};
use borealis_wire::{Body, Client};
use compute_host::BackendError;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

const PAGESERVER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on one GetPage round trip, including the pageserver's wait for the log.
const GETPAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// A page image, shared between caches.
pub type Page = Arc<Vec<u8>>;

/// The pageserver (an index into `n`) that serves `segment` of `tenant`.
pub fn pageserver_of(tenant: TenantId, segment: SegmentId, n: usize) -> usize {
    borealis_core::placement::choose_one(tenant, segment, n)
}

pub struct PageClient {
    /// The pool of pageservers.
    addrs: Vec<String>,
    /// One connection per pageserver, opened when first needed.
    clients: Vec<Option<Client>>,
    layout: SegmentLayout,
    /// Mints the tenant-scoped token a new connection presents.
    tokens: Arc<StorageTokens>,
}

impl PageClient {
    pub fn new(addrs: Vec<String>, layout: SegmentLayout, tokens: Arc<StorageTokens>) -> Self {
        assert!(!addrs.is_empty(), "at least one pageserver");
        Self {
            clients: addrs.iter().map(|_| None).collect(),
            addrs,
            layout,
            tokens,
        }
    }

    /// The page as of `lsn` (which the caller vouches is durable, at writer epoch `epoch`), or
    /// `None` for a page never written. Blocks the calling thread (not a runtime thread) on `rt`.
    pub fn get_page(
        &mut self,
        rt: &Handle,
        tenant: TenantId,
        page: PageNo,
        lsn: Lsn,
        epoch: u64,
    ) -> Result<Option<Page>, BackendError> {
        let mut pages = self.get_pages(rt, tenant, &[page], lsn, epoch)?;
        Ok(pages.pop().flatten())
    }

    /// Several pages as of `lsn`, in the order asked, in one round trip per pageserver involved
    /// (a run of pages within one segment involves one): the requests are pipelined on its
    /// connection (the pageserver answers each as it is ready). At most [`PAGES_PER_CALL_MAX`].
    /// Any page that fails fails the call.
    pub fn get_pages(
        &mut self,
        rt: &Handle,
        tenant: TenantId,
        pages: &[PageNo],
        lsn: Lsn,
        epoch: u64,
    ) -> Result<Vec<Option<Page>>, BackendError> {
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
        let mut out: Vec<Option<Page>> = vec![None; pages.len()];
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
    ) -> Result<Vec<Option<Page>>, BackendError> {
        assert!(
            pages.len() <= PAGES_PER_CALL_MAX,
            "at most {PAGES_PER_CALL_MAX} pages per call"
        );
        let addr = self.addrs[server].clone();
        let tokens = self.tokens.clone();
        let mut client = self.clients[server].take();
        let result = rt.block_on(async {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = Some(
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
                );
            }
            let c = client.as_ref().expect("connected above");
            let calls = pages.iter().map(|&page| async move {
                let answer = call_get_page(c, tenant, page, lsn, epoch)
                    .await
                    .map_err(|e| {
                        BackendError::new(e.kind(), format!("GetPage {page}@{lsn}: {e}"))
                    })?;
                checked_page(page, answer)
            });
            futures::future::try_join_all(calls).await
        });
        self.clients[server] = client;
        result
    }
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
