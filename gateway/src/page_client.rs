//! GetPage@LSN against a tenant's pageserver, for writer ([`crate::volume`]) and reader
//! ([`crate::compute_pool::reader`]) computes alike.
//!
//! One persistent connection, opened on first use and again after it breaks. Every answer is
//! checked: a page must be exactly [`PAGE_SIZE_BYTES`] long, anything else is an error, never a
//! page.

use crate::storage_auth::StorageTokens;
use borealis_core::{ErrorKind, Lsn, PageNo, TenantId, PAGE_SIZE_BYTES};
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

pub struct PageClient {
    addr: String,
    client: Option<Client>,
    /// Mints the tenant-scoped token a new connection presents.
    tokens: Arc<StorageTokens>,
}

impl PageClient {
    pub fn new(addr: String, tokens: Arc<StorageTokens>) -> Self {
        Self {
            addr,
            client: None,
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

    /// Several pages as of `lsn`, in the order asked, in one round trip: the requests are
    /// pipelined on the one connection (the pageserver answers each as it is ready). At most
    /// [`PAGES_PER_CALL_MAX`]. Any page that fails fails the call.
    pub fn get_pages(
        &mut self,
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
        let addr = self.addr.clone();
        let tokens = self.tokens.clone();
        let mut client = self.client.take();
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
                let answer = c
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
                    .map_err(|e| {
                        BackendError::new(e.kind(), format!("GetPage {page}@{lsn}: {e}"))
                    })?;
                checked_page(page, answer)
            });
            futures::future::try_join_all(calls).await
        });
        self.client = client;
        result
    }
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
