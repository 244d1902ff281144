//! Reading a layer's header and directory from object storage, checked against what its index
//! says of it: what an attachment ([`crate::restore`]) and a read inside the retention window
//! ([`crate::window_read`]) both need before they read a page's record.

use crate::index::LayerRef;
use crate::layer::{self, LayerError, LayerKind};
use crate::pages::ApplyError;
use crate::remote::RemoteError;
use crate::tenant::Shared;
use borealis_core::{Lsn, SegmentId, TenantId};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AttachError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("installing pages: {0}")]
    Install(#[from] ApplyError),
    #[error("{0}")]
    Mismatch(String),
    #[error("restore task failed: {0}")]
    Task(String),
}

/// What the index says of a layer, checked against the layer's own header and pages.
#[derive(Clone, Debug)]
pub(crate) struct Expected {
    pub(crate) kind: LayerKind,
    pub(crate) lsn: Lsn,
    /// Every page version of a changes layer is above it (`INVALID` for an image).
    pub(crate) above: Lsn,
    pub(crate) pages: u32,
    /// `Some` for the chain's newest layer: the index's `last_record_lsn`.
    pub(crate) last_record_lsn: Option<Lsn>,
}

impl Expected {
    pub(crate) fn of(layer_ref: &LayerRef, last_record_lsn: Option<Lsn>) -> Expected {
        Expected {
            kind: if layer_ref.is_image() {
                LayerKind::Image
            } else {
                LayerKind::Changes
            },
            lsn: layer_ref.lsn,
            above: layer_ref.from_lsn.unwrap_or(Lsn::INVALID),
            pages: layer_ref.pages,
            last_record_lsn,
        }
    }

    /// Whether a layer's header agrees with the index.
    pub(crate) fn check(&self, meta: &layer::LayerMeta, what: &str) -> Result<(), AttachError> {
        if (meta.kind, meta.lsn, meta.page_count) == (self.kind, self.lsn, self.pages)
            && self
                .last_record_lsn
                .is_none_or(|l| l == meta.last_record_lsn)
        {
            return Ok(());
        }
        Err(AttachError::Mismatch(format!(
            "layer {what} is a {:?} layer at lsn {} (last record {}) of {} pages, the index says \
             {:?} at {} (last record {:?}) of {}",
            meta.kind,
            meta.lsn,
            meta.last_record_lsn,
            meta.page_count,
            self.kind,
            self.lsn,
            self.last_record_lsn,
            self.pages
        )))
    }
}

/// Reads a version 2 layer's header and directory (one request) and checks both against the
/// index: the pages the layer holds.
pub(crate) async fn read_directory(
    shared: &Shared,
    tenant: TenantId,
    segment: SegmentId,
    layer_ref: &LayerRef,
    expect: &Expected,
) -> Result<Vec<u32>, AttachError> {
    let (head, tail) = shared
        .remote
        .layer_head_and_tail(tenant, segment, layer_ref)
        .await?;
    let bytes = (head.len() + tail.len()) as u64;
    shared.metrics.bytes_downloaded.add(bytes);
    shared.metrics.ranged_bytes.add(bytes);
    let corrupt = |reason: String| {
        AttachError::Layer(LayerError::Corrupt {
            path: layer_ref.name.clone(),
            reason,
        })
    };
    let header: &[u8; layer::LAYER_HEADER_BYTES] = head[..]
        .try_into()
        .map_err(|_| corrupt(format!("a header of {} bytes", head.len())))?;
    let meta = layer::decode_header(header).map_err(corrupt)?;
    if (meta.tenant, meta.segment, meta.version) != (tenant, segment, layer::LAYER_VERSION) {
        return Err(corrupt(format!(
            "a version {} layer of tenant {} segment {}, expected version {} of tenant {tenant} \
             segment {segment}",
            meta.version,
            meta.tenant,
            meta.segment,
            layer::LAYER_VERSION
        )));
    }
    expect.check(&meta, &layer_ref.name)?;
    layer::decode_tail(&tail, layer_ref.pages, segment, shared.config.layout).map_err(corrupt)
}
