//! Restoring a segment from object storage: attaching it, fetching its pages on demand, and
//! hydrating it in the background.
//!
//! ## Attaching a segment ([`attach`])
//!
//! When a segment is first asked for, before its log is followed, its attachment:
//!
//! 1. claims a new **generation** for the segment ([`crate::remote`] explains how, and what
//!    generations fence);
//! 2. loads the newest index (the highest checkpoint LSN of any generation) and, for each layer
//!    of its chain (an image layer and the changes layers above it, [`crate::index`]), reads the
//!    layer's header and **directory** only: one request of two ranges per layer, all layers at
//!    once ([`crate::layer`]: the directory lists the pages the layer holds). Every header is
//!    checked against the index, every directory against its CRC. The page store gets the chain
//!    ([`crate::pages::RemoteChain`]): a page's newest version in the chain is in the newest
//!    layer whose directory lists it. Layers of version 1 have no directory: they are downloaded
//!    whole, checked byte by byte, and their pages installed, skipping those a newer layer holds;
//!    When the chain ends below the checkpoint (RFC 0011), the directories of the delta layers
//!    above the chain's newest layer are read too (at most `DELTAS_ABOVE_CHAIN_MAX`, all at
//!    once): the pages they list are rebuilt from the deltas when needed;
//! 3. starts following the log from the checkpoint: `caught_up_to` is the checkpoint LSN and the
//!    next record must chain to the index's `last_record_lsn`.
//!
//! So the first GetPage after a restart or a wiped disk costs the index, one request per layer
//! of the chain (at most `CHANGES_LAYERS_MAX + 1`) and one ranged read for the page, whatever the
//! segment's size. GetPages wait (bounded) during the attachment. If the object store cannot be
//! read, the attachment retries with backoff: following the log from LSN 0 instead could be wrong
//! (the safekeepers may have dropped it), so the segment is unavailable until the store answers.
//!
//! ## Fetching a page ([`fetch_page`])
//!
//! A page still in object storage ([`crate::pages::Lookup::Remote`]) is fetched with one ranged
//! read of its record, checked (magic, CRC, the page the directory promised, a version at or
//! below the layer's LSN and, in a changes layer, above its lower bound) and installed as the
//! page's oldest version ([`crate::pages::TenantPages::install`]), exactly what a full restore
//! would have installed. A page the deltas above the chain hold is rebuilt as of the checkpoint
//! instead (`crate::window_read::version_at`: its layer version plus one ranged read per delta
//! holding records of it, each record checked) and installed at its last record's LSN. GetPage fetches the page it answers; the follower fetches the pages of a
//! batch of records before applying it (a record applies to the previous version).
//!
//! ## Hydration ([`hydrate`], [`spawn_hydration`])
//!
//! With `--hydrate` (the default) a restored segment then downloads its chain's layers in the
//! background, newest first, each whole and checked, and installs every page not yet local, at
//! most [`HYDRATIONS_MAX`] segments at a time; then every read is local. A layer none of whose
//! pages is still only remote is skipped. A checkpoint that must write an image or merge the
//! chain hydrates first (it needs every page), whatever `--hydrate` says; under
//! `--disk-cache-bytes` that is the only hydration (pages evicted since come back for the image,
//! and are evicted again once its index is durable). Installing is idempotent: a page fetched by
//! a GetPage meanwhile, or changed by a record since, keeps its newer version.
//!
//! **What a restored segment answers.** A page installed from a layer holds its content as of the
//! checkpoint, labelled with the LSN of the record that last changed it (`p ≤ checkpoint`). That
//! content is the right answer for every read point from `p` on: nothing changed the page between
//! `p` and the checkpoint, and the log after the checkpoint is applied on top. A read point below
//! `p` gets `Invalid` ("lsn too old"), never a wrong page; a page in no layer was never written
//! at or below the checkpoint, so "no page" is right at any read point up to it. A page fetched
//! on demand is installed with the same content and label, so the answers are the same whether a
//! page came early or late.
//!
//! **Why the layers stay readable.** The attachment relies on the restored chain's layers until
//! it is hydrated. Its own indexes name that chain (a changes layer extends it), and a new image
//! or a merged chain is only written after hydrating; garbage collection ([`crate::gc`]) deletes
//! only layers no index of a live generation names. A stale attachment (a newer generation
//! exists) may find a layer gone once the newer one's GC runs, `--gc-delay` after its claim: its
//! fetch then fails and the GetPage answers "unavailable", never a wrong page.

use crate::index::LayerRef;
use crate::layer::{self, LayerError, LayerKind};
use crate::pages::{ApplyError, RemoteChain, RemoteLayer, RemotePage, RemoteSource, TenantPages};
use crate::remote::{Backoff, RemoteError};
use crate::segment_cursor::Cursor;
use crate::tenant::{Segment, Shared, Tenant};
use borealis_core::{Lsn, PageNo, SegmentId, SegmentLayout, TenantId};
use borealis_objstore::keys::Generation;
use borealis_utils::LockExt;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;
use tracing::{debug, info, info_span, Instrument};

pub use crate::layer_read::AttachError;
pub(crate) use crate::layer_read::{read_directory, Expected};

/// Segments hydrating in the background at once, per pageserver: each streams one layer at a
/// time, so this bounds the download bandwidth and disk writes taken from the foreground.
pub const HYDRATIONS_MAX: usize = 2;
/// Layer directories read at once by an attachment.
const DIRECTORY_READS_MAX: usize = 16;

/// What [`attach`] found: where the segment's log is followed from.
#[derive(Clone, Debug)]
pub struct Attached {
    pub generation: Generation,
    pub cursor: Cursor,
    /// The checkpoint started from (`INVALID`: none).
    pub checkpointed: Lsn,
    /// Its index's chain of layers (empty: none), which the next checkpoint extends.
    pub chain: Vec<LayerRef>,
    /// When the generation was claimed (garbage collection waits `--gc-delay` after it).
    pub claimed_at: Instant,
    /// What that index keeps for the retention window besides its chain.
    pub kept: crate::history::Kept,
}

/// Where this segment's layer files are written and downloaded (a cache, wiped at start).
pub(crate) fn layers_dir(shared: &Shared, tenant: TenantId, segment: SegmentId) -> PathBuf {
    shared
        .config
        .data_dir
        .join("tenants")
        .join(tenant.to_string())
        .join("layers")
        .join(segment.0.to_string())
}

/// Attaches `segment` (see the module docs); retries until the object store answers.
pub async fn attach(shared: &Arc<Shared>, tenant: &Arc<Tenant>, segment: &Segment) -> Attached {
    segment.update_checkpoint(|c| c.restoring = true);
    let mut generation = None;
    let mut claimed_at = Instant::now();
    let mut backoff = Backoff::default();
    let mut attempts = 0u64;
    loop {
        match try_attach(shared, tenant, segment, &mut generation, &mut claimed_at).await {
            Ok(attached) => {
                segment.update_checkpoint(|c| {
                    c.restoring = false;
                    c.checkpointed_lsn = attached.checkpointed;
                });
                // With a retention window: the records above the checkpoint are kept for the
                // next delta layer, and the index's window serves older reads.
                if !shared.config.pitr_window.is_zero() {
                    *segment.records.locked() = Some(crate::history::RecordBuffer::new(
                        attached.checkpointed,
                        shared.history_bytes.clone(),
                    ));
                }
                segment.publish_window(
                    tenant.id,
                    attached.checkpointed,
                    &attached.chain,
                    &attached.kept,
                );
                return attached;
            }
            Err(e) => {
                attempts += 1;
                segment.note_failed_attempt(
                    &shared.metrics,
                    attempts,
                    "restoring the segment's checkpoint",
                    &e,
                );
                backoff.wait().await;
            }
        }
    }
}

async fn try_attach(
    shared: &Arc<Shared>,
    tenant: &Arc<Tenant>,
    segment: &Segment,
    generation: &mut Option<Generation>,
    claimed_at: &mut Instant,
) -> Result<Attached, AttachError> {
    let remote = &shared.remote;
    let generation = match *generation {
        Some(g) => g,
        None => {
            let g = remote.claim_generation(tenant.id, segment.id).await?;
            info!(generation = g.0, "claimed a generation for this attachment");
            segment.update_checkpoint(|c| c.generation = g.0);
            *generation = Some(g);
            *claimed_at = Instant::now();
            g
        }
    };
    let Some(index) = remote.newest_index(tenant.id, segment.id).await? else {
        info!("no checkpoint in object storage: following the log from its start");
        return Ok(Attached {
            generation,
            cursor: Cursor::default(),
            checkpointed: Lsn::INVALID,
            chain: Vec::new(),
            claimed_at: *claimed_at,
            kept: crate::history::Kept::default(),
        });
    };
    let layout = shared.config.layout;
    // Version 2 layers: header and directory, all at once (the order is kept).
    let reads: Vec<_> = index
        .layers
        .iter()
        .enumerate()
        .map(|(i, layer_ref)| {
            let expect = Expected::of(layer_ref, newest_record(&index, i));
            async move {
                match layer::version_from_size(layer_ref.pages, layer_ref.bytes) {
                    Some(layer::LAYER_VERSION) => {
                        read_directory(shared, tenant.id, segment.id, layer_ref, &expect)
                            .await
                            .map(Some)
                    }
                    Some(_) => Ok(None),
                    None => Err(AttachError::Mismatch(format!(
                        "layer {} of {} pages cannot be {} bytes long in any version",
                        layer_ref.name, layer_ref.pages, layer_ref.bytes
                    ))),
                }
            }
        })
        .collect();
    let directories: Vec<Option<Vec<u32>>> = futures::stream::iter(reads)
        .buffered(DIRECTORY_READS_MAX)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;

    // Newest layer first: a page's newest version in the chain is the one that counts; older
    // layers' versions of it are skipped (`held`: one bit per page of the segment).
    let mut held = PageBitmap::new(layout.pages_per_segment());
    let mut chain = RemoteChain::default();
    let mut installed = 0u64;
    let mut whole_chain = true;
    for (i, (layer_ref, directory)) in index.layers.iter().zip(directories).enumerate().rev() {
        let expect = Expected::of(layer_ref, newest_record(&index, i));
        if let Some(directory) = directory {
            for page in &directory {
                held.insert(PageNo(*page));
            }
            chain.layers.push(Arc::new(RemoteLayer {
                layer: layer_ref.clone(),
                directory,
                above: expect.above,
            }));
            continue;
        }
        whole_chain = false;
        // Version 1: no directory, so the whole layer.
        installed +=
            download_and_install(shared, tenant, segment.id, layer_ref, &expect, &mut held).await?;
    }
    let kept = crate::history::Kept {
        history: index.history.clone(),
        deltas: index.deltas.clone(),
        from: index.history_from,
        checkpoints: index.checkpoints.clone(),
    };
    // RFC 0011: the deltas above the chain's newest layer hold the pages changed since it.
    if let Some(top) = index.chain_top().filter(|&t| t < index.checkpoint_lsn) {
        if !whole_chain {
            return Err(AttachError::Mismatch(format!(
                "the chain ends at lsn {top}, below the checkpoint at {}, and holds a version 1 \
                 layer (no directory to rebuild pages from)",
                index.checkpoint_lsn,
            )));
        }
        let window = Arc::new(crate::history::Window::of_chain(
            (tenant.id, segment.id),
            index.checkpoint_lsn,
            &index.layers,
            &index.deltas,
            None,
        ));
        let reads: Vec<_> = window
            .deltas
            .iter()
            .map(|d| {
                let window = window.clone();
                async move {
                    crate::window_read::delta_directory(shared, &window, d)
                        .await
                        .map_err(|e| AttachError::Mismatch(e.to_string()))
                }
            })
            .collect();
        let directories: Vec<_> = futures::stream::iter(reads)
            .buffered(DIRECTORY_READS_MAX)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let mut pages: Vec<u32> = directories
            .iter()
            .flat_map(|d| d.iter().map(|e| e.page))
            .collect();
        pages.sort_unstable();
        pages.dedup();
        chain.delta_pages = pages;
        chain.window = Some(window);
    }
    let remote_layers = chain.layers.len();
    let remote_pages = chain.distinct_pages() as u64;
    // Pages may be evicted back to this chain only if it is known whole (no version 1 layer,
    // whose pages were installed and are not in `chain`).
    if whole_chain {
        chain.evict_upto = index.checkpoint_lsn;
    }
    tenant.pages.set_remote(segment.id, chain);
    info!(
        from_generation = index.generation, checkpoint_lsn = %index.checkpoint_lsn,
        last_record_lsn = %index.last_record_lsn, installed_pages = installed, remote_layers,
        remote_pages, "restored the segment from object storage (pages still there are fetched \
         when needed); following the log from the checkpoint"
    );
    shared.metrics.restores.inc();
    segment.update_checkpoint(|c| {
        c.restored_from_generation = Some(index.generation);
        c.restored_lsn = index.checkpoint_lsn;
        c.restored_pages = installed;
        c.remote_layers = remote_layers;
        c.remote_pages = remote_pages;
        c.hydrated = remote_layers == 0;
        c.chain_layers = index.layers.len();
        c.chain_bytes = index.layers.iter().map(|l| l.bytes).sum();
    });
    Ok(Attached {
        generation,
        cursor: Cursor {
            caught_up_to: index.checkpoint_lsn,
            last_applied: index.last_record_lsn,
        },
        checkpointed: index.checkpoint_lsn,
        kept,
        chain: index.layers,
        claimed_at: *claimed_at,
    })
}

/// What layer `i` of `index`'s chain must say its last record is: the index's, for the newest
/// layer when it is at the checkpoint (below it, records of the deltas came after it).
fn newest_record(index: &crate::index::SegmentIndex, i: usize) -> Option<Lsn> {
    let newest = i + 1 == index.layers.len();
    (newest && index.chain_top() == Some(index.checkpoint_lsn)).then_some(index.last_record_lsn)
}

/// One bit per page of a segment.
pub(crate) struct PageBitmap {
    words: Vec<u64>,
    pages_per_segment: u32,
}

impl PageBitmap {
    pub(crate) fn new(pages_per_segment: u32) -> Self {
        PageBitmap {
            words: vec![0; (pages_per_segment as usize).div_ceil(64)],
            pages_per_segment,
        }
    }

    /// Sets `page`'s bit; whether it was clear.
    fn insert(&mut self, page: PageNo) -> bool {
        let i = (page.0 % self.pages_per_segment) as usize;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let was_clear = self.words[word] & bit == 0;
        self.words[word] |= bit;
        was_clear
    }
}

/// Downloads a whole layer, checks it, and installs its pages that no newer layer of the chain
/// holds (`held`, which it extends). Returns the number of pages installed.
async fn download_and_install(
    shared: &Arc<Shared>,
    tenant: &Arc<Tenant>,
    segment: SegmentId,
    layer_ref: &LayerRef,
    expect: &Expected,
    held: &mut PageBitmap,
) -> Result<u64, AttachError> {
    let dir = layers_dir(shared, tenant.id, segment);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(RemoteError::from)?;
    let path = dir.join(format!(
        "{}-{:08x}.download",
        layer_ref.name, layer_ref.generation
    ));
    let bytes = shared
        .remote
        .download_layer(tenant.id, segment, layer_ref, &path)
        .await?;
    shared.metrics.layers_downloaded.inc();
    shared.metrics.bytes_downloaded.add(bytes);
    let pages = tenant.pages.clone();
    let (t, layout, expect) = (tenant.id, shared.config.layout, expect.clone());
    let mut bitmap = std::mem::replace(held, PageBitmap::new(0));
    let (result, bitmap) = tokio::task::spawn_blocking(move || {
        let r = install_layer(&pages, &path, t, segment, layout, &expect, &mut bitmap);
        (r, bitmap)
    })
    .await
    .map_err(|e| AttachError::Task(e.to_string()))?;
    *held = bitmap;
    result
}

#[derive(Debug, Error)]
pub enum FetchError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The ranged read of a run of pages ([`fetch_pages`]) failed: this page's share of it.
    #[error("{0}")]
    RemoteRun(String),
    /// Reading the deltas a page is rebuilt from failed.
    #[error("rebuilding the page from the deltas: {0}")]
    Window(String),
    #[error("page {page} from layer {layer}: {reason}")]
    Corrupt {
        page: PageNo,
        layer: String,
        reason: String,
    },
    #[error("installing a fetched page: {0}")]
    Install(#[from] ApplyError),
    #[error("page fetch task failed: {0}")]
    Task(String),
}

/// Fetches a page still in object storage (one ranged read), checks it and installs it (see the
/// module docs). Afterwards the page has a local version: look it up again.
pub async fn fetch_page(
    shared: &Shared,
    tenant: &Tenant,
    segment: &Segment,
    remote: &RemotePage,
) -> Result<(), FetchError> {
    let RemoteSource::Layer { layer, slot } = remote.source else {
        return rebuild_page(shared, tenant, segment, remote).await;
    };
    let rl = &remote.chain.layers[layer];
    shared.metrics.page_fetch_reads.inc();
    let buf = shared
        .remote
        .layer_record(tenant.id, segment.id, &rl.layer, slot)
        .await?;
    let corrupt = |reason: String| FetchError::Corrupt {
        page: remote.page,
        layer: rl.layer.name.clone(),
        reason,
    };
    let (lsn, image) =
        layer::decode_record(&buf, slot, remote.page, rl.layer.lsn).map_err(corrupt)?;
    if !rl.layer.is_image() && lsn <= rl.above {
        return Err(corrupt(format!(
            "version at lsn {lsn} in a changes layer above lsn {}",
            rl.above
        )));
    }
    let image = image.to_vec();
    let (pages, page) = (tenant.pages.clone(), remote.page);
    tokio::task::spawn_blocking(move || pages.install(page, lsn, &image))
        .await
        .map_err(|e| FetchError::Task(e.to_string()))??;
    shared.metrics.pages_fetched.inc();
    shared.metrics.bytes_downloaded.add(buf.len() as u64);
    shared.metrics.ranged_bytes.add(buf.len() as u64);
    segment.update_checkpoint(|c| c.pages_fetched += 1);
    Ok(())
}

/// Records one ranged read of [`fetch_pages`] covers at most (about 264 KB).
pub const RECORDS_PER_RANGED_READ_MAX: usize = 64;
/// Reads of object storage one [`fetch_pages`] has in flight at once (runs, or pages rebuilt
/// from deltas): about 8 MiB of buffers at most.
pub const FETCHES_AT_ONCE_MAX: usize = 32;

/// Fetches several pages still in object storage, as [`fetch_page`] fetches one, but reading
/// the records that lie side by side in one layer (consecutive slots: a scan's pages usually)
/// with one ranged read per run of at most [`RECORDS_PER_RANGED_READ_MAX`],
/// [`FETCHES_AT_ONCE_MAX`] runs at once.
/// Each record is checked on its own and the run's pages installed in one blocking task. A page
/// rebuilt from deltas goes through [`fetch_page`]. One result per page, in the order given.
pub async fn fetch_pages(
    shared: &Shared,
    tenant: &Tenant,
    segment: &Segment,
    remotes: &[RemotePage],
) -> Vec<Result<(), FetchError>> {
    // Runs: (indexes into `remotes`, by ascending slot), of one layer of one chain.
    let mut order: Vec<usize> = (0..remotes.len()).collect();
    let key = |r: &RemotePage| match r.source {
        RemoteSource::Layer { layer, slot } => Some((Arc::as_ptr(&r.chain) as usize, layer, slot)),
        RemoteSource::Deltas => None,
    };
    order.sort_by_key(|&i| key(&remotes[i]));
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut singles = Vec::new();
    for i in order {
        let Some((chain, layer, slot)) = key(&remotes[i]) else {
            singles.push(i);
            continue;
        };
        let continues = runs.last().and_then(|run| run.last()).is_some_and(|&j| {
            key(&remotes[j]) == Some((chain, layer, slot.wrapping_sub(1)))
                && runs
                    .last()
                    .is_some_and(|run| run.len() < RECORDS_PER_RANGED_READ_MAX)
        });
        if continues {
            runs.last_mut().expect("a run to continue").push(i);
        } else {
            runs.push(vec![i]);
        }
    }
    let mut out: Vec<Option<Result<(), FetchError>>> = remotes.iter().map(|_| None).collect();
    // At most FETCHES_AT_ONCE_MAX reads at once: runs first, then the pages rebuilt from deltas.
    for chunk in runs.chunks(FETCHES_AT_ONCE_MAX) {
        let reads = chunk
            .iter()
            .map(|run| fetch_run(shared, tenant, segment, remotes, run));
        for (run, results) in chunk.iter().zip(futures::future::join_all(reads).await) {
            for (&i, r) in run.iter().zip(results) {
                out[i] = Some(r);
            }
        }
    }
    for chunk in singles.chunks(FETCHES_AT_ONCE_MAX) {
        let reads = chunk
            .iter()
            .map(|&i| fetch_page(shared, tenant, segment, &remotes[i]));
        for (&i, r) in chunk.iter().zip(futures::future::join_all(reads).await) {
            out[i] = Some(r);
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(FetchError::Task("a page left unfetched".into()))))
        .collect()
}

/// One run of [`fetch_pages`]: records of consecutive slots of one layer, one ranged read.
async fn fetch_run(
    shared: &Shared,
    tenant: &Tenant,
    segment: &Segment,
    remotes: &[RemotePage],
    run: &[usize],
) -> Vec<Result<(), FetchError>> {
    let first = &remotes[run[0]];
    let RemoteSource::Layer { layer, slot } = first.source else {
        unreachable!("fetch_pages runs hold layer records only");
    };
    let rl = &first.chain.layers[layer];
    let range =
        layer::record_range(slot).start..layer::record_range(slot + run.len() as u32 - 1).end;
    shared.metrics.page_fetch_reads.inc();
    let buf = match shared
        .remote
        .layer_range(tenant.id, segment.id, &rl.layer, range)
        .await
    {
        Ok(buf) => buf,
        Err(e) => {
            // Every page of the run failed alike; each keeps the error's text.
            let message = e.to_string();
            return run
                .iter()
                .map(|_| Err(FetchError::RemoteRun(message.clone())))
                .collect();
        }
    };
    shared.metrics.bytes_downloaded.add(buf.len() as u64);
    shared.metrics.ranged_bytes.add(buf.len() as u64);
    // Per page of the run: (page, version LSN, image) once its record checked out.
    type Checked = Result<(PageNo, Lsn, Vec<u8>), FetchError>;
    let mut checked: Vec<Checked> = Vec::with_capacity(run.len());
    for (k, (&i, record)) in run
        .iter()
        .zip(buf.chunks(crate::page_file::IMAGE_RECORD_BYTES))
        .enumerate()
    {
        let remote = &remotes[i];
        let corrupt = |reason: String| FetchError::Corrupt {
            page: remote.page,
            layer: rl.layer.name.clone(),
            reason,
        };
        let slot = slot + k as u32;
        checked.push(
            layer::decode_record(record, slot, remote.page, rl.layer.lsn)
                .map_err(corrupt)
                .and_then(|(lsn, image)| {
                    if !rl.layer.is_image() && lsn <= rl.above {
                        Err(corrupt(format!(
                            "version at lsn {lsn} in a changes layer above lsn {}",
                            rl.above
                        )))
                    } else {
                        Ok((remote.page, lsn, image.to_vec()))
                    }
                }),
        );
    }
    let pages = tenant.pages.clone();
    let installed = tokio::task::spawn_blocking(move || {
        checked
            .into_iter()
            .map(|c| {
                let (page, lsn, image) = c?;
                pages.install(page, lsn, &image)?;
                Ok(())
            })
            .collect::<Vec<Result<(), FetchError>>>()
    })
    .await;
    match installed {
        Ok(results) => {
            let n = results.iter().filter(|r| r.is_ok()).count() as u64;
            shared.metrics.pages_fetched.add(n);
            segment.update_checkpoint(|c| c.pages_fetched += n);
            results
        }
        Err(e) => run
            .iter()
            .map(|_| Err(FetchError::Task(e.to_string())))
            .collect(),
    }
}

/// Fetches a page the deltas above the chain hold (RFC 0011): rebuilt as of the chain's
/// checkpoint (its window's end) and installed at the LSN of its last record.
async fn rebuild_page(
    shared: &Shared,
    tenant: &Tenant,
    segment: &Segment,
    remote: &RemotePage,
) -> Result<(), FetchError> {
    let chain = &remote.chain;
    let corrupt = |reason: String| FetchError::Corrupt {
        page: remote.page,
        layer: "the deltas above the chain".into(),
        reason,
    };
    let Some(window) = chain.window.as_ref() else {
        return Err(corrupt("the chain has no window to rebuild from".into()));
    };
    let rebuilt = crate::window_read::version_at(shared, window, remote.page, window.upto)
        .await
        .map_err(|e| match e {
            crate::window_read::HistoryError::Remote(e) => FetchError::Window(e),
            e => corrupt(e.to_string()),
        })?;
    let Some((lsn, image)) = rebuilt else {
        return Err(corrupt(
            "a delta lists the page, but no version of it was rebuilt".into(),
        ));
    };
    let (pages, page) = (tenant.pages.clone(), remote.page);
    tokio::task::spawn_blocking(move || pages.install(page, lsn, &image))
        .await
        .map_err(|e| FetchError::Task(e.to_string()))??;
    shared.metrics.pages_fetched.inc();
    shared.metrics.pages_rebuilt.inc();
    segment.update_checkpoint(|c| c.pages_fetched += 1);
    Ok(())
}

/// What [`hydrate`] makes local.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hydrate {
    /// Every page of the chain and its deltas (for an image or a merge).
    All,
    /// The pages the deltas above the chain hold (for a changes layer since the chain's newest
    /// layer, RFC 0011).
    Deltas,
}

/// Makes every page of `segment`'s chain in object storage local (see the module docs):
/// downloads each layer whole, newest first, and installs the pages not local yet. A layer with
/// no such page (none evicted or left unfetched) is not downloaded. Then the pages the deltas
/// above the chain hold, rebuilt one by one. The chain stays: it is where evicted pages are
/// fetched from.
pub async fn hydrate(
    shared: &Arc<Shared>,
    tenant: &Arc<Tenant>,
    segment: &Segment,
    what: Hydrate,
) -> Result<(), AttachError> {
    let Some(chain) = tenant.pages.remote_chain(segment.id) else {
        return Ok(());
    };
    let started = Instant::now();
    let mut held = PageBitmap::new(shared.config.layout.pages_per_segment());
    let (mut installed, mut downloaded) = (0u64, 0usize);
    let layers: &[Arc<RemoteLayer>] = match what {
        Hydrate::All => &chain.layers,
        Hydrate::Deltas => &[],
    };
    // A page the deltas above the chain hold has a newer version than any layer's: no layer
    // installs it (it is rebuilt below).
    if chain.window.is_some() {
        for page in &chain.delta_pages {
            held.insert(PageNo(*page));
        }
    }
    for (i, rl) in layers.iter().enumerate() {
        let pages = tenant.pages.clone();
        let chain_ = chain.clone();
        let wanted = tokio::task::spawn_blocking(move || pages.remote_only_in(&chain_, i))
            .await
            .map_err(|e| AttachError::Task(e.to_string()))?;
        if wanted == 0 {
            for page in &rl.directory {
                held.insert(PageNo(*page));
            }
            continue;
        }
        let expect = Expected::of(&rl.layer, None);
        installed +=
            download_and_install(shared, tenant, segment.id, &rl.layer, &expect, &mut held).await?;
        downloaded += 1;
        borealis_utils::crash_point::hit("hydrating-layer-installed");
    }
    // The pages the deltas above the chain hold (RFC 0011), rebuilt one by one (marked held
    // above, so no layer installed an older version of them).
    let pages = tenant.pages.clone();
    let chain_ = chain.clone();
    let rebuild = tokio::task::spawn_blocking(move || pages.remote_only_in_deltas(&chain_))
        .await
        .map_err(|e| AttachError::Task(e.to_string()))?;
    let rebuilt = rebuild.len();
    let fetches: Vec<_> = rebuild
        .into_iter()
        .map(|page| {
            let remote = RemotePage {
                page,
                chain: chain.clone(),
                source: RemoteSource::Deltas,
            };
            async move { rebuild_page(shared, tenant, segment, &remote).await }
        })
        .collect();
    let results: Vec<Result<(), FetchError>> = futures::stream::iter(fetches)
        .buffer_unordered(DIRECTORY_READS_MAX)
        .collect()
        .await;
    for r in results {
        r.map_err(|e| AttachError::Mismatch(format!("rebuilding a page from the deltas: {e}")))?;
    }
    installed += rebuilt as u64;
    if downloaded == 0 && rebuilt == 0 {
        return Ok(());
    }
    if what == Hydrate::All {
        shared.metrics.hydrations.inc();
        segment.update_checkpoint(|c| {
            c.hydrated = true;
            c.remote_layers = 0;
        });
    }
    info!(
        layers = downloaded,
        rebuilt,
        installed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "hydrated the segment: every page of its chain (or of its deltas: {what:?}) is local"
    );
    Ok(())
}

/// Hydrates a restored segment in the background (with `--hydrate`), at most
/// [`HYDRATIONS_MAX`] at a time, retrying with backoff until it succeeds.
pub(crate) fn spawn_hydration(shared: Arc<Shared>, tenant: Arc<Tenant>, segment: Arc<Segment>) {
    // Under a disk budget, pages stay in object storage until read.
    if !shared.config.hydrate
        || shared.config.disk_cache_bytes.is_some()
        || tenant.pages.remote_chain(segment.id).is_none()
    {
        return;
    }
    let span = info_span!("hydrate", tenant = %tenant.id, segment = %segment.id);
    let tracked = segment.clone();
    let task = tokio::spawn(
        async move {
            let Ok(_permit) = shared.hydrations.acquire().await else {
                return;
            };
            let mut backoff = Backoff::default();
            let mut attempts = 0u64;
            loop {
                if segment.checkpoint_status().stale {
                    // A newer attachment owns the segment; its GC may delete the layers.
                    info!("stale attachment: hydration stops (pages are still fetched on demand)");
                    return;
                }
                match hydrate(&shared, &tenant, &segment, Hydrate::All).await {
                    Ok(()) => return,
                    Err(e) => {
                        attempts += 1;
                        segment.note_failed_attempt(
                            &shared.metrics,
                            attempts,
                            "hydrating the segment",
                            &e,
                        );
                        backoff.wait().await;
                    }
                }
            }
        }
        .instrument(span),
    );
    tracked.track_task(task.abort_handle());
}

/// Checks every byte of a downloaded layer, then installs its pages that no newer layer of the
/// chain held (`held`, which it extends); removes the file. Returns the number of pages
/// installed. Blocking.
pub(crate) fn install_layer(
    pages: &TenantPages,
    path: &Path,
    tenant: TenantId,
    segment: SegmentId,
    layout: SegmentLayout,
    expect: &Expected,
    held: &mut PageBitmap,
) -> Result<u64, AttachError> {
    let meta = layer::verify(path, tenant, segment, layout)?;
    expect.check(&meta, &path.display().to_string())?;
    let mut installed = 0u64;
    let mut install_error = None;
    layer::for_each_page(path, tenant, segment, layout, |page, lsn, image| {
        if expect.kind == LayerKind::Changes && lsn <= expect.above {
            return Err(LayerError::Corrupt {
                path: path.display().to_string(),
                reason: format!(
                    "page {page} at lsn {lsn} in a changes layer above lsn {}",
                    expect.above
                ),
            });
        }
        if !held.insert(page) {
            // A newer layer of the chain holds a newer version of it.
            return Ok(());
        }
        match pages.install(page, lsn, image) {
            Ok(new) => installed += u64::from(new),
            Err(e) => {
                install_error = Some(e);
                return Err(LayerError::Corrupt {
                    path: path.display().to_string(),
                    reason: "install failed".into(),
                });
            }
        }
        Ok(())
    })
    .map_err(|e| match install_error.take() {
        Some(install) => AttachError::Install(install),
        None => AttachError::Layer(e),
    })?;
    if let Err(e) = std::fs::remove_file(path) {
        debug!(path = %path.display(), error = %e, "could not remove a downloaded layer");
    }
    Ok(installed)
}
