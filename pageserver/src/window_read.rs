//! Reads inside the retention window ([`crate::history`], RFC 0010): a page as of an LSN the
//! local page file no longer has, rebuilt from the layers and delta layers the segment's newest
//! index keeps.
//!
//! The newest image or changes layer at or below the LSN that lists the page gives its content
//! as of `X`, the highest layer LSN at or below the LSN (a layer of `X`'s chain would list a newer
//! version); its records in `(X, lsn]` come from the delta layers and are applied on top, each
//! checked. Ranged reads only: one directory per layer (cached in the [`Window`]) and one record,
//! or one page's run of records, per layer.

use crate::delta;
use crate::history::Window;
use crate::index::LayerRef;
use crate::layer;
use crate::layer_read::{read_directory, Expected};
use crate::tenant::Shared;
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, PageNo, PAGE_SIZE_BYTES};
use borealis_utils::LockExt;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HistoryError {
    #[error("lsn {lsn} is outside the retention window [{from}, {upto}]")]
    NotRetained { lsn: Lsn, from: Lsn, upto: Lsn },
    #[error("reading the window from object storage: {0}")]
    Remote(String),
    #[error("rebuilding page {page} at lsn {lsn}: {reason}")]
    Corrupt {
        page: PageNo,
        lsn: Lsn,
        reason: String,
    },
}

/// `page` as of `lsn`, rebuilt from the window's layers (see the module docs); `None` if it was
/// never written by then.
pub async fn page_at(
    shared: &Shared,
    window: &Window,
    page: PageNo,
    lsn: Lsn,
) -> Result<Option<Vec<u8>>, HistoryError> {
    Ok(version_at(shared, window, page, lsn)
        .await?
        .map(|(_, image)| image))
}

/// [`page_at`], with the LSN of the version rebuilt (its last record's, or its layer's).
pub async fn version_at(
    shared: &Shared,
    window: &Window,
    page: PageNo,
    lsn: Lsn,
) -> Result<Option<(Lsn, Vec<u8>)>, HistoryError> {
    if !window.covers(lsn) {
        return Err(HistoryError::NotRetained {
            lsn,
            from: window.from,
            upto: window.upto,
        });
    }
    let corrupt = |reason: String| HistoryError::Corrupt { page, lsn, reason };
    let below: Vec<&LayerRef> = window.layers.iter().filter(|l| l.lsn <= lsn).collect();
    let x = below.last().map_or(Lsn::INVALID, |l| l.lsn);

    // 1. The page as of `x`.
    let mut base: Option<(Lsn, Vec<u8>)> = None;
    for l in below.iter().rev() {
        let directory = layer_directory(shared, window, l).await?;
        if let Ok(slot) = directory.binary_search(&page.0) {
            let slot = slot as u32;
            let buf = shared
                .remote
                .layer_record(window.tenant, window.segment, l, slot)
                .await
                .map_err(|e| HistoryError::Remote(e.to_string()))?;
            let (version, image) =
                layer::decode_record(&buf, slot, page, l.lsn).map_err(corrupt)?;
            base = Some((version, image.to_vec()));
            break;
        }
        if l.is_image() {
            break;
        }
    }

    // 2. Its records in `(x, lsn]`, from the deltas covering that range.
    let mut records: Vec<RedoRecord> = Vec::new();
    let mut covered = x;
    for d in window.deltas.iter().filter(|d| d.lsn > x) {
        let from = d.from_lsn.unwrap_or(Lsn::INVALID);
        if from > covered {
            break;
        }
        if from >= lsn {
            break;
        }
        let directory = delta_directory(shared, window, d).await?;
        if let Ok(i) = directory.binary_search_by_key(&page.0, |e| e.page) {
            let entry = directory[i];
            let buf = shared
                .remote
                .layer_range(window.tenant, window.segment, d, entry.range())
                .await
                .map_err(|e| HistoryError::Remote(e.to_string()))?;
            let got = delta::decode_page_records(&buf, &entry, from, d.lsn).map_err(corrupt)?;
            records.extend(got.into_iter().filter(|r| r.lsn > x && r.lsn <= lsn));
        }
        covered = d.lsn;
        if covered >= lsn {
            break;
        }
    }
    if covered < lsn {
        return Err(corrupt(format!(
            "the deltas cover ({x}, {covered}], not up to {lsn}"
        )));
    }
    records.sort_by_key(|r| r.lsn);
    records.dedup_by_key(|r| r.lsn);

    // 3. Applied in order, each on the version before it.
    if base.is_none() && records.is_empty() {
        return Ok(None);
    }
    let (mut at, mut image) = base.unwrap_or((Lsn::INVALID, vec![0u8; PAGE_SIZE_BYTES]));
    for r in &records {
        if r.prev_lsn_page.is_valid() && r.prev_lsn_page != at {
            return Err(corrupt(format!(
                "record at lsn {} follows lsn {}, the version at hand is at lsn {at}",
                r.lsn, r.prev_lsn_page
            )));
        }
        r.body
            .apply(&mut image)
            .map_err(|e| corrupt(format!("record at lsn {}: {e}", r.lsn)))?;
        at = r.lsn;
    }
    Ok(Some((at, image)))
}

async fn layer_directory(
    shared: &Shared,
    window: &Window,
    l: &LayerRef,
) -> Result<Arc<Vec<u32>>, HistoryError> {
    let key = (l.name.clone(), l.generation);
    if let Some(d) = window.directories.locked().get(&key) {
        return Ok(d.clone());
    }
    let directory = read_directory(
        shared,
        window.tenant,
        window.segment,
        l,
        &Expected::of(l, None),
    )
    .await
    .map_err(|e| HistoryError::Remote(e.to_string()))?;
    let directory = Arc::new(directory);
    window.directories.locked().insert(key, directory.clone());
    Ok(directory)
}

pub(crate) async fn delta_directory(
    shared: &Shared,
    window: &Window,
    d: &LayerRef,
) -> Result<Arc<Vec<delta::DeltaEntry>>, HistoryError> {
    let key = (d.name.clone(), d.generation);
    if let Some(dir) = window.delta_directories.locked().get(&key) {
        return Ok(dir.clone());
    }
    let range = delta::tail_range(d.pages, d.bytes);
    let tail = shared
        .remote
        .layer_range(window.tenant, window.segment, d, range)
        .await
        .map_err(|e| HistoryError::Remote(e.to_string()))?;
    let directory = delta::decode_tail(
        &tail,
        d.pages,
        d.bytes,
        window.segment,
        shared.config.layout,
    )
    .map_err(|reason| HistoryError::Corrupt {
        page: PageNo(0),
        lsn: d.lsn,
        reason: format!("delta layer {}: {reason}", d.name),
    })?;
    let directory = Arc::new(directory);
    window
        .delta_directories
        .locked()
        .insert(key, directory.clone());
    Ok(directory)
}
