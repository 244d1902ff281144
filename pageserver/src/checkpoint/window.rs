//! The checkpointer's work for the retention window (RFC 0010, RFC 0011): each checkpoint's
//! delta layer, what the deltas above the chain hold, and an idle segment's window moving on
//! (and folding those deltas into a changes layer once it was idle for a whole window).

use super::{remove_quietly, unix_ms, Checkpointer, DeltasAbove, LayerPlan, WrittenLayer};
use crate::index::LayerRef;
use crate::layer::LayerKind;
use crate::restore::layers_dir;
use crate::segment_cursor::Cursor;
use borealis_core::Lsn;
use borealis_objstore::keys;
use borealis_utils::crash_point;
use borealis_utils::LockExt;
use tracing::{error, info, warn};

impl Checkpointer {
    /// The delta layers the current index names above its chain's newest layer (RFC 0011).
    pub(super) fn deltas_above_chain(&self) -> DeltasAbove {
        let top = self.chain.last().map_or(Lsn::INVALID, |l| l.lsn);
        let above = self.kept.deltas.iter().filter(|d| d.lsn > top);
        DeltasAbove {
            count: above.clone().count(),
            pages: above.clone().map(|d| u64::from(d.pages)).sum(),
            bytes: above.map(|d| d.bytes).sum(),
        }
    }

    /// The pages the deltas above the chain hold once a delta up to `upto` is added: those the
    /// page store's chain knew, and those of the buffered records in `(checkpointed, upto]`.
    pub(super) fn delta_pages(&self, upto: Lsn) -> Vec<u32> {
        let mut pages: Vec<u32> = self
            .tenant
            .pages
            .remote_chain(self.segment.id)
            .map(|c| c.delta_pages.clone())
            .unwrap_or_default();
        if let Some(b) = self.segment.records.locked().as_ref() {
            pages.extend(b.pages_in(self.checkpointed, upto));
        }
        pages.sort_unstable();
        pages.dedup();
        pages
    }

    /// With no new record to checkpoint, the retention window still moves on: once its start can
    /// advance past layers it keeps, the index is uploaded again (same checkpoint, fewer layers),
    /// and what it no longer names is collected as after a checkpoint. Once the segment was idle
    /// for a whole window with deltas above the chain's newest layer, they are **folded** first:
    /// a changes layer since that layer, at the same checkpoint, holds what they changed (RFC
    /// 0011), so an idle segment sheds them one window later, and its reads after a restart
    /// cost one record each again.
    pub(super) async fn expire_window(&mut self) {
        let shared = self.shared.clone();
        let window_ms = shared.config.pitr_window.as_millis() as u64;
        if window_ms == 0 || self.segment.checkpoint_status().stale {
            return;
        }
        let now_ms = unix_ms();
        let tenant = self.tenant.id;
        let mut chain = self.chain.clone();
        let mut folded = None;
        if self.deltas_above_chain().count > 0
            && crate::history::idle_past_chain_top(&self.kept, &self.chain, (now_ms, window_ms))
        {
            let Some((plan, w)) = self.fold_deltas().await else {
                return;
            };
            chain = self.chain_with(plan, &w);
            folded = Some(w);
        }
        let kept = match crate::history::expire(&self.kept, &chain, (now_ms, window_ms)) {
            Some(kept) => kept,
            None if folded.is_some() => self.kept.clone(),
            None => return,
        };
        let local = folded.as_ref().map(|w| w.local.clone());
        let done = |this: &Self| {
            if let Some(local) = &local {
                remove_quietly(local);
                this.segment.update_checkpoint(|c| c.uploading = false);
            }
            if !this.segment.checkpoint_status().stale {
                this.tenant.pages.hold_eviction(this.segment.id, false);
            }
        };
        if !self
            .upload_index(&chain, &kept, (self.checkpointed, self.last_record))
            .await
        {
            done(self);
            return;
        }
        let dropped = (self.kept.history.len() + self.kept.deltas.len())
            .saturating_sub(kept.history.len() + kept.deltas.len());
        info!(from = ?kept.from, dropped, folded = folded.is_some(), "the retention window moved on: the index names {dropped} layers fewer");
        self.segment
            .publish_window(tenant, self.checkpointed, &chain, &kept);
        if let Some(w) = &folded {
            shared.metrics.changes_layers_written.inc();
            self.publish_chain(
                &chain,
                Some(w.directory.clone()),
                Vec::new(),
                &kept.deltas,
                self.checkpointed,
            );
            let (name, pages) = (w.name.clone(), w.meta.page_count);
            self.segment.update_checkpoint(|c| {
                c.last_layer = Some(name);
                c.last_layer_pages = pages;
                c.chain_layers = chain.len();
                c.chain_bytes = chain.iter().map(|l| l.bytes).sum();
            });
        }
        self.kept = kept;
        self.chain = chain;
        done(self);
        let keep = self.named_by_own_generation();
        if self.collect_garbage(&keep).await {
            self.gc_pending = true;
            self.maybe_collect_older().await;
        }
    }

    /// The changes layer that folds the deltas above the chain into it, at the last checkpoint
    /// (see [`Checkpointer::expire_window`]), and the plan that wrote it; written and uploaded,
    /// not yet named by an index. Eviction stays held until the caller is done.
    async fn fold_deltas(&self) -> Option<(LayerPlan, WrittenLayer)> {
        let shared = self.shared.clone();
        let top = self.chain.last()?.lsn;
        self.tenant.pages.hold_eviction(self.segment.id, true);
        let hydrated = crate::restore::hydrate(
            &shared,
            &self.tenant,
            &self.segment,
            crate::restore::Hydrate::Deltas,
        )
        .await;
        let written = match hydrated {
            Ok(()) => {
                let plan = LayerPlan {
                    kind: LayerKind::Changes,
                    since: top,
                    keep: self.chain.len(),
                };
                let cursor = Cursor {
                    caught_up_to: self.checkpointed,
                    last_applied: self.last_record,
                };
                self.write_and_upload(plan, cursor).await.map(|w| (plan, w))
            }
            Err(e) => {
                shared.metrics.object_store_errors.inc();
                warn!(error = %e, "hydrating before folding the deltas failed; next time");
                None
            }
        };
        if written.is_none() && !self.segment.checkpoint_status().stale {
            self.tenant.pages.hold_eviction(self.segment.id, false);
        }
        written
    }

    /// Writes and uploads the delta layer of the records in `(checkpointed, upto]` (RFC 0010).
    pub(super) async fn upload_delta(&self, upto: Lsn) -> DeltaUpload {
        let shared = self.shared.clone();
        let (tenant, segment, generation) = (self.tenant.id, self.segment.id, self.generation);
        let from = self.checkpointed;
        let Some(records) = self
            .segment
            .records
            .locked()
            .as_ref()
            .and_then(|b| b.delta(from, upto))
        else {
            return DeltaUpload::Missing;
        };
        let name = crate::delta::delta_layer_name(from, upto);
        let dir = layers_dir(&shared, tenant, segment);
        let local = dir.join(format!("{name}-{:08x}.upload", generation.0));
        let path = local.clone();
        let layout = shared.config.layout;
        let written = tokio::task::spawn_blocking(move || {
            let (bytes, meta) = crate::delta::encode(tenant, segment, layout, from, upto, &records);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&path, &bytes)?;
            Ok::<_, std::io::Error>(meta)
        })
        .await;
        let meta = match written {
            Ok(Ok(meta)) => meta,
            Ok(Err(e)) => {
                error!(error = %e, path = %local.display(), "writing a delta layer failed");
                self.note_problem(format!("writing a delta layer: {e}"));
                remove_quietly(&local);
                return DeltaUpload::Failed;
            }
            Err(e) => {
                error!(error = %e, "the delta layer writing task failed");
                remove_quietly(&local);
                return DeltaUpload::Failed;
            }
        };
        let key = keys::layer_key(tenant, segment, &name, generation);
        let uploaded = self
            .retry("uploading a delta layer", || {
                shared.remote.upload_file(&local, &key)
            })
            .await;
        remove_quietly(&local);
        let Some(uploaded) = uploaded else {
            return DeltaUpload::Failed;
        };
        shared.metrics.bytes_uploaded.add(uploaded.bytes);
        crash_point::hit("delta-layer-uploaded");
        shared.metrics.delta_layers_written.inc();
        shared.metrics.delta_bytes_uploaded.add(uploaded.bytes);
        DeltaUpload::Uploaded(LayerRef::delta(
            name,
            generation,
            (from, upto),
            meta.page_count,
            meta.file_bytes,
            uploaded.crc32c,
        ))
    }
}

/// What became of a checkpoint's delta layer.
pub(super) enum DeltaUpload {
    Uploaded(LayerRef),
    /// The buffer does not hold every record since the previous checkpoint: no delta, and the
    /// window restarts at this checkpoint.
    Missing,
    /// Writing or uploading it failed: the checkpoint is abandoned (tried again later).
    Failed,
}
