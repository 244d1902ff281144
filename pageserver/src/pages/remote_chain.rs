//! Pages still in object storage (see the module docs of [`crate::pages`], "Pages still in
//! object storage"): the picture of a segment's chain the store keeps ([`RemoteChain`]), where
//! a page not local yet can be found in it ([`RemoteSource`]), and the store's questions about
//! it (which pages a layer or the deltas would install, which pages a batch of records needs
//! fetched first).

use super::{Index, TenantPages, COMPACTION_CHUNK_PAGES};
use crate::index::LayerRef;
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout};
use borealis_utils::LockExt;
use std::sync::Arc;

/// A layer of a segment's chain in object storage, whose pages can be fetched when needed.
#[derive(Debug)]
pub struct RemoteLayer {
    /// What the index says of it (its object key follows from it).
    pub layer: LayerRef,
    /// The pages it holds, increasing: record `i` holds page `directory[i]`.
    pub directory: Vec<u32>,
    /// Every version in it is above this (a changes layer's lower bound; `INVALID` for an image).
    pub above: Lsn,
}

/// The layers of a segment's chain in object storage (its newest durable index), newest first:
/// the chain restored from, then the chain of each checkpoint this attachment makes.
#[derive(Debug, Default)]
pub struct RemoteChain {
    pub layers: Vec<Arc<RemoteLayer>>,
    /// A page whose newest local version is at or below this LSN may be evicted: the chain (and
    /// the deltas above it) holds exactly that version. `INVALID` when the chain is not known
    /// whole (a version 1 layer has no directory), so nothing of the segment is evicted. It is
    /// the index's checkpoint.
    pub evict_upto: Lsn,
    /// The pages the delta layers above the chain's newest layer hold records of, increasing
    /// (RFC 0011; empty when the chain ends at the checkpoint).
    pub delta_pages: Vec<u32>,
    /// The index's window, which rebuilds those pages (`Some` whenever `delta_pages` is not
    /// empty).
    pub window: Option<Arc<crate::history::Window>>,
}

/// Where a page still in object storage is (see [`RemoteChain`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteSource {
    /// Record `slot` of layer `layer` (newest first) holds its version as of the checkpoint.
    Layer { layer: usize, slot: u32 },
    /// Deltas above the chain's newest layer hold records of it: it is rebuilt from the window.
    Deltas,
}

impl RemoteChain {
    /// Where `page`'s version as of the checkpoint is.
    pub fn find(&self, page: PageNo) -> Option<RemoteSource> {
        if self.window.is_some() && self.delta_pages.binary_search(&page.0).is_ok() {
            return Some(RemoteSource::Deltas);
        }
        self.layers.iter().enumerate().find_map(|(i, l)| {
            let slot = l.directory.binary_search(&page.0).ok()?;
            Some(RemoteSource::Layer {
                layer: i,
                slot: u32::try_from(slot).ok()?,
            })
        })
    }

    /// Pages held by the chain and its deltas (a page in several layers counts once).
    pub fn distinct_pages(&self) -> usize {
        let mut all: Vec<u32> = self
            .layers
            .iter()
            .flat_map(|l| l.directory.iter().copied())
            .chain(self.delta_pages.iter().copied())
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
}

/// A page still in object storage: where in `chain` it is.
#[derive(Clone, Debug)]
pub struct RemotePage {
    pub page: PageNo,
    pub chain: Arc<RemoteChain>,
    pub source: RemoteSource,
}

impl Index {
    pub(super) fn remote_page(&self, layout: SegmentLayout, page: PageNo) -> Option<RemotePage> {
        if self.has_local_version(page) {
            return None;
        }
        let chain = self.remote.get(&layout.segment_of(page))?;
        let source = chain.find(page)?;
        Some(RemotePage {
            page,
            chain: chain.clone(),
            source,
        })
    }
}

impl TenantPages {
    /// Hands the store `segment`'s chain in object storage: the chain a restore attached (its
    /// pages are fetched when needed, see the module docs), or the chain of a checkpoint's
    /// index once it is durable. An empty chain removes it. Evicting the segment's pages is
    /// allowed again ([`TenantPages::hold_eviction`]).
    pub fn set_remote(&self, segment: SegmentId, chain: RemoteChain) {
        let mut index = self.index.locked();
        if chain.layers.is_empty() {
            index.remote.remove(&segment);
        } else {
            index.remote.insert(segment, Arc::new(chain));
        }
        index.eviction_held.remove(&segment);
    }

    /// How many pages of `layer` (the layer at that position of `chain`) have no local version
    /// and no newer layer of the chain holding them: what downloading the layer would install.
    /// Looks in chunks, so that reads and applies wait for one chunk at most.
    pub fn remote_only_in(&self, chain: &RemoteChain, layer: usize) -> u64 {
        let Some(rl) = chain.layers.get(layer) else {
            return 0;
        };
        let mut n = 0;
        for chunk in rl.directory.chunks(COMPACTION_CHUNK_PAGES) {
            let index = self.index.locked();
            n += chunk
                .iter()
                .filter(|&&p| !index.has_local_version(PageNo(p)))
                .filter(|&&p| {
                    matches!(chain.find(PageNo(p)), Some(RemoteSource::Layer { layer: i, .. }) if i == layer)
                })
                .count() as u64;
        }
        n
    }

    /// The pages the chain's deltas hold that have no local version: what rebuilding them
    /// would install (RFC 0011). Looks in chunks, as [`TenantPages::remote_only_in`].
    pub fn remote_only_in_deltas(&self, chain: &RemoteChain) -> Vec<PageNo> {
        if chain.window.is_none() {
            return Vec::new();
        }
        let mut pages = Vec::new();
        for chunk in chain.delta_pages.chunks(COMPACTION_CHUNK_PAGES) {
            let index = self.index.locked();
            pages.extend(
                chunk
                    .iter()
                    .filter(|&&p| !index.has_local_version(PageNo(p)))
                    .map(|&p| PageNo(p)),
            );
        }
        pages
    }

    /// `segment`'s remote chain, if some of its pages may still be in object storage only.
    pub fn remote_chain(&self, segment: SegmentId) -> Option<Arc<RemoteChain>> {
        self.index.locked().remote.get(&segment).cloned()
    }

    /// The pages `records` name that are still in object storage only, each once: fetch them
    /// before applying the records.
    pub fn remote_pages(&self, records: &[RedoRecord]) -> Vec<RemotePage> {
        let index = self.index.locked();
        if index.remote.is_empty() {
            return Vec::new();
        }
        let mut seen = std::collections::HashSet::new();
        records
            .iter()
            .filter(|r| seen.insert(r.page_no))
            .filter_map(|r| index.remote_page(self.layout, r.page_no))
            .collect()
    }
}
