//! Checkpoints: each segment's pages written to object storage, so that a pageserver can start
//! from them and safekeepers can drop the log below them.
//!
//! ## Attaching a segment ([`attach`])
//!
//! When a segment is first asked for, before its log is followed, its attachment:
//!
//! 1. claims a new **generation** for the segment ([`crate::remote`] explains how, and what
//!    generations fence);
//! 2. loads the newest index (the highest checkpoint LSN of any generation), downloads its image
//!    layer, checks every byte of it ([`crate::layer`]), and installs each page as the page's
//!    oldest retained version ([`crate::pages::TenantPages::install`]);
//! 3. starts following the log from the checkpoint: `caught_up_to` is the checkpoint LSN and the
//!    next record must chain to the index's `last_record_lsn`.
//!
//! GetPages wait (bounded) meanwhile. If the object store cannot be read, the attachment retries
//! with backoff: following the log from LSN 0 instead could be wrong (the safekeepers may have
//! dropped it), so the segment is unavailable until the store answers.
//!
//! **What a restored segment answers.** A page installed from a layer holds its content as of the
//! checkpoint, labelled with the LSN of the record that last changed it (`p ≤ checkpoint`). That
//! content is the right answer for every read point from `p` on: nothing changed the page between
//! `p` and the checkpoint, and the log after the checkpoint is applied on top. A read point below
//! `p` gets `Invalid` ("lsn too old"), never a wrong page; a page not in the layer was never
//! written at or below the checkpoint, so "no page" is right at any read point up to it.
//!
//! ## Checkpointing a segment (the checkpointer task)
//!
//! A checkpoint is due when `--checkpoint-records` records were applied since the last one, when
//! `--checkpoint-interval` passes with any record applied, and at a clean shutdown
//! ([`shutdown`]). Then, one step after another, each retried with backoff until it succeeds
//! (ingest and GetPage go on meanwhile; a segment has at most one checkpoint in flight, so the
//! work waiting for the object store is bounded):
//!
//! 1. take the follower's cursor `C` (`caught_up_to`, and the newest record applied at or below
//!    it) and write an image layer of every page of the segment as of `C` to a local file (ingest
//!    goes on: a page's versions at or below `C` never change; if a page has already dropped the
//!    version `C` needs, the checkpoint is abandoned and tried again later);
//! 2. upload the layer under this generation;
//! 3. upload the index naming it: now the checkpoint is durable (`checkpointed_lsn` on
//!    `/status`);
//! 4. delete this generation's layers that the new index does not name (idempotent; skipped when
//!    a newer generation exists, see [`crate::remote`]);
//! 5. tell every safekeeper of the segment's group (`crate::safekeepers::sources`)
//!    `Trim { upto: C, epoch }`, where `epoch` is the newest writer epoch a
//!    GetPage vouched for: a safekeeper that has not seen that epoch refuses.
//!
//! `C` is at or below a VDL someone vouched for, so every record in the checkpoint is durable and
//! no recovery will ever truncate it: any index, of any generation, is a correct starting point.
//!
//! Every checkpoint is a full image of the segment; delta layers (and compaction) are not built.
//! That is fine for the small segments of tests and of young volumes; a 10 GiB segment would
//! want an incremental scheme before checkpoints are frequent.

use crate::index::{LayerRef, SegmentIndex};
use crate::layer::{self, LayerError, LayerMeta, LayerWriter};
use crate::pages::{ApplyError, ReadError, TenantPages};
use crate::remote::{Backoff, RemoteError};
use crate::segment_cursor::Cursor;
use crate::tenant::{Segment, Shared, Tenant, Tenants, TrimAnswer};
use borealis_core::{Lsn, SegmentId, SegmentLayout, TenantId};
use borealis_objstore::keys::{self, Generation};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Bound on the final checkpoints of a clean shutdown: below the grace `borealis` gives a node
/// between SIGTERM and SIGKILL (10 s).
pub const SHUTDOWN_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(8);
/// A failing object store operation is logged at WARN on its first failure and then once every
/// this many attempts (DEBUG in between): a store that is down for an hour must not flood the log.
const WARN_EVERY_ATTEMPTS: u64 = 20;

/// What [`attach`] found: where the segment's log is followed from.
#[derive(Clone, Copy, Debug)]
pub struct Attached {
    pub generation: Generation,
    pub cursor: Cursor,
    /// The checkpoint started from (`INVALID`: none).
    pub checkpointed: Lsn,
}

#[derive(Debug, Error)]
enum AttachError {
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

/// Where this segment's layer files are written and downloaded (a cache, wiped at start).
fn layers_dir(shared: &Shared, tenant: TenantId, segment: SegmentId) -> PathBuf {
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
    let mut backoff = Backoff::default();
    let mut attempts = 0u64;
    loop {
        match try_attach(shared, tenant, segment, &mut generation).await {
            Ok(attached) => {
                segment.update_checkpoint(|c| {
                    c.restoring = false;
                    c.checkpointed_lsn = attached.checkpointed;
                });
                return attached;
            }
            Err(e) => {
                attempts += 1;
                shared.metrics.object_store_errors.inc();
                if attempts % WARN_EVERY_ATTEMPTS == 1 {
                    warn!(error = %e, attempts, "restoring the segment's checkpoint failed; retrying");
                } else {
                    debug!(error = %e, attempts, "restoring the segment's checkpoint failed; retrying");
                }
                segment.update_checkpoint(|c| {
                    c.object_store_failures += 1;
                    c.last_problem = Some(format!("restoring: {e}"));
                });
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
) -> Result<Attached, AttachError> {
    let remote = &shared.remote;
    let generation = match *generation {
        Some(g) => g,
        None => {
            let g = remote.claim_generation(tenant.id, segment.id).await?;
            info!(generation = g.0, "claimed a generation for this attachment");
            segment.update_checkpoint(|c| c.generation = g.0);
            *generation = Some(g);
            g
        }
    };
    let Some(index) = remote.newest_index(tenant.id, segment.id).await? else {
        info!("no checkpoint in object storage: following the log from its start");
        return Ok(Attached {
            generation,
            cursor: Cursor::default(),
            checkpointed: Lsn::INVALID,
        });
    };
    let dir = layers_dir(shared, tenant.id, segment.id);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(RemoteError::from)?;
    let mut installed = 0u64;
    for layer_ref in &index.layers {
        let path = dir.join(format!(
            "{}-{:08x}.download",
            layer_ref.name, layer_ref.generation
        ));
        let bytes = remote
            .download_layer(tenant.id, segment.id, layer_ref, &path)
            .await?;
        shared.metrics.layers_downloaded.inc();
        shared.metrics.bytes_downloaded.add(bytes);
        let pages = tenant.pages.clone();
        let (t, s, layout) = (tenant.id, segment.id, shared.config.layout);
        let expect = (index.checkpoint_lsn, index.last_record_lsn);
        let installed_here =
            tokio::task::spawn_blocking(move || install_layer(&pages, &path, t, s, layout, expect))
                .await
                .map_err(|e| AttachError::Task(e.to_string()))??;
        installed += installed_here;
    }
    info!(
        from_generation = index.generation, checkpoint_lsn = %index.checkpoint_lsn,
        last_record_lsn = %index.last_record_lsn, pages = installed,
        "restored the segment from object storage; following the log from the checkpoint"
    );
    shared.metrics.restores.inc();
    segment.update_checkpoint(|c| {
        c.restored_from_generation = Some(index.generation);
        c.restored_lsn = index.checkpoint_lsn;
        c.restored_pages = installed;
    });
    Ok(Attached {
        generation,
        cursor: Cursor {
            caught_up_to: index.checkpoint_lsn,
            last_applied: index.last_record_lsn,
        },
        checkpointed: index.checkpoint_lsn,
    })
}

/// Checks every byte of a downloaded layer, then installs its pages; removes the file. Returns
/// the number of pages installed. Blocking.
fn install_layer(
    pages: &TenantPages,
    path: &Path,
    tenant: TenantId,
    segment: SegmentId,
    layout: SegmentLayout,
    (lsn, last_record_lsn): (Lsn, Lsn),
) -> Result<u64, AttachError> {
    let meta = layer::verify(path, tenant, segment, layout)?;
    if (meta.lsn, meta.last_record_lsn) != (lsn, last_record_lsn) {
        return Err(AttachError::Mismatch(format!(
            "layer {} is at lsn {} (last record {}), the index says {lsn} ({last_record_lsn})",
            path.display(),
            meta.lsn,
            meta.last_record_lsn
        )));
    }
    let mut installed = 0u64;
    let mut install_error = None;
    layer::for_each_page(path, tenant, segment, layout, |page, lsn, image| {
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

/// Starts the checkpointer of an attached segment.
pub(crate) fn spawn_checkpointer(
    shared: Arc<Shared>,
    tenant: Arc<Tenant>,
    segment: Arc<Segment>,
    attached: Attached,
) {
    let span = info_span!("checkpoint", tenant = %tenant.id, segment = %segment.id, generation = attached.generation.0);
    let records_at_checkpoint = segment.follow_status().records_applied;
    let checkpointer = Checkpointer {
        shared,
        tenant,
        segment,
        generation: attached.generation,
        checkpointed: attached.checkpointed,
        records_at_checkpoint,
        trim_incomplete: false,
    };
    let (tenant, segment) = (checkpointer.tenant.id, checkpointer.segment.id);
    let tracked = checkpointer.segment.clone();
    let task = tokio::spawn(checkpointer.run().instrument(span));
    tracked.track_task(task.abort_handle());
    tokio::spawn(async move {
        match task.await {
            Err(e) if e.is_cancelled() => {
                info!(tenant = %tenant, segment = %segment, "checkpointer stopped")
            }
            Err(e) => error!(tenant = %tenant, segment = %segment, error = %e, "checkpointer died"),
            Ok(()) => {}
        }
    });
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    Tick,
    Progress,
    Request(u64),
}

struct Checkpointer {
    shared: Arc<Shared>,
    tenant: Arc<Tenant>,
    segment: Arc<Segment>,
    generation: Generation,
    /// The newest durable checkpoint of this segment this attachment knows (its own or restored).
    checkpointed: Lsn,
    /// The segment's `records_applied` when the last checkpoint's cursor was taken.
    records_at_checkpoint: u64,
    /// The last trim did not reach every safekeeper: retry it even without a new checkpoint.
    trim_incomplete: bool,
}

impl Checkpointer {
    async fn run(mut self) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let mut requests = self.segment.subscribe_checkpoint_requests();
        let mut progress = self.segment.subscribe_caught_up_to();
        let mut ticker = tokio::time::interval(config.checkpoint_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate
                             // Requests are only made to active checkpointers, and this one listens from here on.
        self.segment.update_checkpoint(|c| c.active = true);
        loop {
            let trigger = tokio::select! {
                _ = ticker.tick() => Trigger::Tick,
                changed = progress.changed() => match changed {
                    Ok(()) => Trigger::Progress,
                    Err(_) => return,
                },
                changed = requests.changed() => match changed {
                    Ok(()) => Trigger::Request(*requests.borrow_and_update()),
                    Err(_) => return,
                },
            };
            let applied = self.segment.follow_status().records_applied;
            let new_records = applied.saturating_sub(self.records_at_checkpoint);
            let due = match trigger {
                Trigger::Tick | Trigger::Request(_) => new_records > 0,
                Trigger::Progress => new_records >= config.checkpoint_records,
            };
            if due {
                self.checkpoint().await;
                ticker.reset();
            } else if trigger == Trigger::Tick && self.trim_incomplete {
                self.trim(self.checkpointed).await;
            }
            if let Trigger::Request(n) = trigger {
                self.segment.checkpoint_served(n);
            }
        }
    }

    /// One checkpoint (see the module docs); returns once it is durable, or abandoned.
    async fn checkpoint(&mut self) {
        let shared = self.shared.clone();
        let (tenant, segment, generation) = (self.tenant.id, self.segment.id, self.generation);
        let records_before = self.segment.follow_status().records_applied;
        let cursor = self.segment.applied();
        if cursor.caught_up_to <= self.checkpointed {
            self.records_at_checkpoint = records_before;
            return;
        }
        let name = layer::image_layer_name(cursor.caught_up_to);

        // 1. The layer, written locally.
        let dir = layers_dir(&shared, tenant, segment);
        let local = dir.join(format!("{name}-{:08x}.upload", generation.0));
        let pages = self.tenant.pages.clone();
        let layout = shared.config.layout;
        let path = local.clone();
        let written = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            write_layer(&pages, &path, tenant, segment, layout, cursor)
        })
        .await;
        let meta = match written {
            Ok(Ok(meta)) => meta,
            Ok(Err(WriteError::TooOld(e))) => {
                shared.metrics.checkpoint_aborts.inc();
                debug!(error = %e, "checkpoint abandoned: a page moved on; trying again later");
                self.note_problem(format!("checkpoint abandoned: {e}"));
                remove_quietly(&local);
                return;
            }
            Ok(Err(e)) => {
                shared.metrics.checkpoint_aborts.inc();
                error!(error = %e, path = %local.display(), "writing a layer file failed");
                self.note_problem(format!("writing a layer: {e}"));
                remove_quietly(&local);
                return;
            }
            Err(e) => {
                error!(error = %e, "the layer writing task failed");
                remove_quietly(&local);
                return;
            }
        };

        // 2. The layer, uploaded.
        self.segment.update_checkpoint(|c| c.uploading = true);
        let key = keys::layer_key(tenant, segment, &name, generation);
        let Some(uploaded) = self
            .retry("uploading a layer", || {
                shared.remote.upload_file(&local, &key)
            })
            .await
        else {
            self.segment.update_checkpoint(|c| c.uploading = false);
            remove_quietly(&local);
            return;
        };
        shared.metrics.bytes_uploaded.add(uploaded.bytes);
        if uploaded.bytes != meta.file_bytes() {
            error!(
                uploaded = uploaded.bytes,
                expected = meta.file_bytes(),
                "the local layer file changed under the upload"
            );
            self.segment.update_checkpoint(|c| c.uploading = false);
            remove_quietly(&local);
            return;
        }

        // 3. The index: the checkpoint is durable once it is.
        let layer_ref = LayerRef::image(name.clone(), generation, &meta, uploaded.crc32c);
        let index = SegmentIndex::new(
            tenant,
            segment,
            generation,
            cursor.caught_up_to,
            cursor.last_applied,
            vec![layer_ref],
        );
        let Some(index_bytes) = self
            .retry("uploading the index", || {
                shared.remote.upload_index(tenant, segment, &index)
            })
            .await
        else {
            self.segment.update_checkpoint(|c| c.uploading = false);
            remove_quietly(&local);
            return;
        };
        shared.metrics.bytes_uploaded.add(index_bytes);
        shared.metrics.checkpoints.inc();
        self.checkpointed = cursor.caught_up_to;
        self.records_at_checkpoint = records_before;
        self.segment.update_checkpoint(|c| {
            c.uploading = false;
            c.checkpointed_lsn = cursor.caught_up_to;
            c.checkpoints += 1;
            c.last_layer = Some(name.clone());
            c.last_layer_pages = meta.page_count;
            c.last_problem = None;
        });
        info!(lsn = %cursor.caught_up_to, pages = meta.page_count, bytes = uploaded.bytes, "checkpoint durable");
        remove_quietly(&local);

        // 4. This generation's layers the index no longer names.
        let newest = self.collect_garbage(&name).await;

        // 5. The safekeepers may drop the log it covers, if this is still the newest generation.
        // Trimming the log is a deletion too: a newer attachment may have restored from an
        // older checkpoint than this one and still need the log above it. Ordering makes the
        // check sufficient: this index was uploaded before the claims were read, and a newer
        // attachment claims its generation before it reads the newest index, so one that this
        // check missed restored from this checkpoint or a later one.
        if newest {
            self.trim(cursor.caught_up_to).await;
        }
    }

    /// Retries `op` with backoff until it succeeds (`Some`), or fails in a way retrying cannot
    /// fix (`None`: a local file problem, logged at ERROR).
    async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RemoteError>>,
    {
        let mut backoff = Backoff::default();
        let mut attempts = 0u64;
        loop {
            match op().await {
                Ok(v) => {
                    if attempts > 0 {
                        info!(attempts, "{what}: succeeded after retrying");
                    }
                    return Some(v);
                }
                Err(e) if !e.is_retryable() => {
                    self.shared.metrics.checkpoint_aborts.inc();
                    error!(error = %e, "{what} failed; checkpoint abandoned");
                    self.note_problem(format!("{what}: {e}"));
                    return None;
                }
                Err(e) => {
                    attempts += 1;
                    self.shared.metrics.object_store_errors.inc();
                    if attempts % WARN_EVERY_ATTEMPTS == 1 {
                        warn!(error = %e, attempts, "{what} failed; retrying (ingest and GetPage go on)");
                    } else {
                        debug!(error = %e, attempts, "{what} failed; retrying");
                    }
                    self.segment.update_checkpoint(|c| {
                        c.object_store_failures += 1;
                        c.last_problem = Some(format!("{what}: {e}"));
                    });
                    backoff.wait().await;
                }
            }
        }
    }

    fn note_problem(&self, problem: String) {
        self.segment
            .update_checkpoint(|c| c.last_problem = Some(problem));
    }

    /// Deletes this generation's layers other than `keep` (the one the durable index names),
    /// unless a newer generation exists. Failures are left for the next checkpoint. Returns
    /// whether this generation was confirmed the newest (nothing may be deleted otherwise,
    /// the safekeepers' log included).
    async fn collect_garbage(&mut self, keep: &str) -> bool {
        let remote = &self.shared.remote;
        let (tenant, segment, generation) = (self.tenant.id, self.segment.id, self.generation);
        match remote.newest_claim(tenant, segment).await {
            Ok(newest) if newest > generation => {
                if !self.segment.checkpoint_status().stale {
                    warn!(newest = newest.0, "a newer generation of this segment exists: this attachment deletes nothing from now on");
                }
                self.segment.update_checkpoint(|c| c.stale = true);
                return false;
            }
            Ok(_) => {}
            Err(e) => {
                debug!(error = %e, "could not check the generation; no deletions this time");
                return false;
            }
        }
        let names = match remote.own_layers(tenant, segment, generation).await {
            Ok(names) => names,
            Err(e) => {
                debug!(error = %e, "could not list layers; no deletions this time");
                // Still the newest: listing failed, not the check.
                return true;
            }
        };
        for name in names.iter().filter(|n| n.as_str() != keep) {
            match remote.delete_layer(tenant, segment, name, generation).await {
                Ok(()) => {
                    self.shared.metrics.layers_deleted.inc();
                    debug!(layer = %name, "deleted a layer no index names");
                }
                Err(e) => {
                    debug!(layer = %name, error = %e, "deleting a layer failed; retried later")
                }
            }
        }
        true
    }

    /// Tells every safekeeper holding the segment (its group, in a pool) the log up to `upto` is
    /// checkpointed.
    async fn trim(&mut self, upto: Lsn) {
        let epoch = self.tenant.vouched().epoch;
        if epoch == 0 || !upto.is_valid() {
            return;
        }
        let answers = self
            .shared
            .safekeepers
            .trim_sources(self.tenant.id, self.segment.id, epoch, upto)
            .await;
        let mut failed = 0usize;
        let answers: Vec<TrimAnswer> = answers
            .into_iter()
            .map(|(safekeeper, answer)| match answer {
                Ok(base) => TrimAnswer {
                    safekeeper,
                    base: Some(base),
                    error: None,
                },
                Err(e) => {
                    failed += 1;
                    debug!(safekeeper = %safekeeper, error = %e, "trim failed");
                    TrimAnswer {
                        safekeeper,
                        base: None,
                        error: Some(e.to_string()),
                    }
                }
            })
            .collect();
        self.shared.metrics.trims_sent.add(answers.len() as u64);
        self.shared.metrics.trim_errors.add(failed as u64);
        self.trim_incomplete = failed > 0;
        debug!(%upto, epoch, failed, "trim sent");
        self.segment.update_checkpoint(|c| {
            c.trimmed_upto = upto;
            c.trim = answers;
        });
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            debug!(path = %path.display(), error = %e, "could not remove a local layer file");
        }
    }
}

#[derive(Debug, Error)]
enum WriteError {
    #[error(transparent)]
    TooOld(ReadError),
    #[error(transparent)]
    Read(ReadError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("layer directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the image layer of `segment` as of `cursor` to `path`. Blocking.
fn write_layer(
    pages: &TenantPages,
    path: &Path,
    tenant: TenantId,
    segment: SegmentId,
    layout: SegmentLayout,
    cursor: Cursor,
) -> Result<LayerMeta, WriteError> {
    let mut writer = LayerWriter::create(
        path,
        tenant,
        segment,
        layout,
        cursor.caught_up_to,
        cursor.last_applied,
    )?;
    for page in pages.segment_pages(segment) {
        match pages.version_for_checkpoint(page, cursor.caught_up_to) {
            Ok(Some((lsn, image))) => writer.push(page, lsn, &image)?,
            Ok(None) => {}
            Err(e @ ReadError::LsnTooOld { .. }) => return Err(WriteError::TooOld(e)),
            Err(e) => return Err(WriteError::Read(e)),
        }
    }
    Ok(writer.finish()?)
}

/// A clean shutdown's last checkpoints: every active segment with records applied since its last
/// checkpoint makes one more, waiting at most `timeout` in all (the object store may be down).
pub async fn shutdown(tenants: &Tenants, timeout: Duration) {
    let mut waits = Vec::new();
    for (tenant, segment) in tenants.all_segments() {
        if !segment.checkpoint_status().active {
            continue;
        }
        let n = segment.request_checkpoint();
        let mut served = segment.subscribe_checkpoint_served();
        waits.push(async move {
            let done = served.wait_for(|s| *s >= n).await.is_ok();
            (tenant.id, segment.id, done)
        });
    }
    if waits.is_empty() {
        return;
    }
    let count = waits.len();
    match tokio::time::timeout(timeout, futures::future::join_all(waits)).await {
        Ok(done) => {
            let served = done.iter().filter(|(_, _, d)| *d).count();
            info!(segments = count, served, "final checkpoints done");
        }
        Err(_) => warn!(
            segments = count,
            ?timeout,
            "final checkpoints did not finish in time (object store or safekeepers unreachable?); what they did not cover stays on the safekeepers"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::PageCache;
    use borealis_core::redo::{RedoBody, RedoRecord};
    use borealis_core::{PageNo, PAGE_SIZE_BYTES};
    use std::num::NonZeroUsize;

    /// A checkpoint written from one store and installed into another answers every read at or
    /// above each page's layer LSN exactly as the original, and "too old" below it.
    #[test]
    fn a_layer_round_trips_through_a_fresh_store() {
        let dir = tempfile::tempdir().unwrap();
        let layout = SegmentLayout::new(4);
        let cache = Arc::new(PageCache::new(NonZeroUsize::new(2).unwrap()));
        let a = TenantPages::create(
            &dir.path().join("a"),
            TenantId(1),
            layout,
            16,
            cache.clone(),
        )
        .unwrap();
        let mut prev_segment = [Lsn::INVALID; 2];
        let mut prev_page = [Lsn::INVALID; 8];
        for lsn in 1..=40u64 {
            let page = ((lsn * 7) % 8) as u32;
            let seg = (page / 4) as usize;
            let mut image = vec![0u8; PAGE_SIZE_BYTES];
            image[..8].copy_from_slice(&lsn.to_le_bytes());
            a.apply(&RedoRecord {
                lsn: Lsn(lsn),
                prev_lsn_segment: prev_segment[seg],
                prev_lsn_page: prev_page[page as usize],
                page_no: PageNo(page),
                is_cpl: true,
                body: RedoBody::Image(image),
            })
            .unwrap();
            prev_segment[seg] = Lsn(lsn);
            prev_page[page as usize] = Lsn(lsn);
        }
        // Segment 0 (pages 0..4) as of lsn 30: its last record at or below 30.
        let last = (1..=30u64).rev().find(|l| (l * 7) % 8 < 4).unwrap();
        let cursor = Cursor {
            caught_up_to: Lsn(30),
            last_applied: Lsn(last),
        };
        let path = dir.path().join("layer");
        let meta = write_layer(&a, &path, TenantId(1), SegmentId(0), layout, cursor).unwrap();
        assert_eq!(meta.page_count, 4);
        let b = TenantPages::create(&dir.path().join("b"), TenantId(1), layout, 16, cache).unwrap();
        let installed = install_layer(
            &b,
            &path,
            TenantId(1),
            SegmentId(0),
            layout,
            (Lsn(30), Lsn(last)),
        )
        .unwrap();
        assert_eq!(installed, 4);
        assert!(
            !path.exists(),
            "the downloaded file is removed once installed"
        );
        for page in 0..4u32 {
            let (p_lsn, _) = a
                .version_for_checkpoint(PageNo(page), Lsn(30))
                .unwrap()
                .unwrap();
            for lsn in 0..=30u64 {
                let got = b.get(PageNo(page), Lsn(lsn));
                if lsn >= p_lsn.0 {
                    assert_eq!(
                        got.unwrap(),
                        a.get(PageNo(page), Lsn(lsn)).unwrap(),
                        "page {page} at {lsn}"
                    );
                } else {
                    assert!(
                        matches!(got, Err(ReadError::LsnTooOld { .. })),
                        "page {page} at {lsn}"
                    );
                }
            }
        }
        // Installing again is a no-op (a retried restore); the segment's counts are right.
        write_layer(&a, &path, TenantId(1), SegmentId(0), layout, cursor).unwrap();
        let again = install_layer(
            &b,
            &path,
            TenantId(1),
            SegmentId(0),
            layout,
            (Lsn(30), Lsn(last)),
        )
        .unwrap();
        assert_eq!(again, 0);
        assert_eq!(b.segment_counts(SegmentId(0)).pages, 4);
        // A layer whose header disagrees with the index is refused.
        write_layer(&a, &path, TenantId(1), SegmentId(0), layout, cursor).unwrap();
        assert!(matches!(
            install_layer(
                &b,
                &path,
                TenantId(1),
                SegmentId(0),
                layout,
                (Lsn(31), Lsn(last))
            ),
            Err(AttachError::Mismatch(_))
        ));
    }
}
