//! Steps 4 to 6 of a checkpoint (see the module docs of [`crate::checkpoint`]), once its index
//! is durable: this generation's layers the index no longer names, the safekeepers' log below
//! the checkpoint, and older generations' superseded objects ([`crate::gc`] says why deleting
//! them is safe).

use super::Checkpointer;
use crate::remote::RemoteError;
use crate::tenant::TrimAnswer;
use borealis_core::Lsn;
use borealis_objstore::keys::Generation;
use borealis_utils::crash_point;
use std::time::Instant;
use tracing::{debug, info, warn};

impl Checkpointer {
    /// This generation's layers the current index names (chain, history, deltas).
    pub(super) fn named_by_own_generation(&self) -> Vec<String> {
        self.chain
            .iter()
            .chain(&self.kept.history)
            .chain(&self.kept.deltas)
            .filter(|l| l.generation == self.generation.0)
            .map(|l| l.name.clone())
            .collect()
    }

    /// One garbage collection pass over older generations' objects ([`crate::gc`]): list, plan,
    /// delete. Any failure ends the pass; the next one starts over.
    async fn collect_older_generations(&mut self, own_checkpoint: Lsn) -> bool {
        let shared = self.shared.clone();
        let remote = &shared.remote;
        let (tenant, segment, generation) = (self.tenant.id, self.segment.id, self.generation);
        let objects = match remote.listing(tenant, segment).await {
            Ok(o) => o,
            Err(e) => {
                debug!(error = %e, "garbage collection: listing failed; next time");
                return false;
            }
        };
        let mut indexes = Vec::new();
        for g in &objects.indexes {
            let seen = match remote.load_index(tenant, segment, *g).await {
                Ok(index) => crate::gc::IndexSeen {
                    generation: *g,
                    checkpoint_lsn: Some(index.checkpoint_lsn),
                    layers: index
                        .named()
                        .map(|l| (l.name.clone(), Generation(l.generation)))
                        .collect(),
                },
                Err(RemoteError::Store(object_store::Error::NotFound { .. })) => continue,
                Err(RemoteError::Corrupt { key, reason }) => {
                    warn!(%key, %reason, "garbage collection: an index cannot be read; it and what it may name are kept");
                    crate::gc::IndexSeen {
                        generation: *g,
                        checkpoint_lsn: None,
                        layers: Vec::new(),
                    }
                }
                Err(e) => {
                    debug!(error = %e, "garbage collection: reading an index failed; next time");
                    return false;
                }
            };
            indexes.push(seen);
        }
        let listing = crate::gc::Listing {
            claims: objects.claims,
            indexes,
            layers: objects.layers,
        };
        let plan = crate::gc::plan(&listing, generation, own_checkpoint);
        self.segment
            .update_checkpoint(|c| c.object_store_bytes = objects.bytes);
        if plan.is_empty() {
            return true;
        }
        // Still the newest? (A newer claim since the listing makes this attachment stale.)
        if !self.still_newest("no garbage collection this time").await {
            return false;
        }
        let mut deleted = 0u64;
        let result: Result<(), RemoteError> = async {
            for g in &plan.indexes {
                remote.delete_index(tenant, segment, *g).await?;
                deleted += 1;
                crash_point::hit("gc-index-deleted");
            }
            for (name, g) in &plan.layers {
                remote.delete_layer(tenant, segment, name, *g).await?;
                deleted += 1;
                crash_point::hit("gc-layer-deleted");
            }
            for g in &plan.claims {
                remote.delete_claim(tenant, segment, *g).await?;
                deleted += 1;
            }
            Ok(())
        }
        .await;
        shared.metrics.gc_objects_deleted.add(deleted);
        shared.metrics.gc_passes.inc();
        self.segment.update_checkpoint(|c| {
            c.gc_passes += 1;
            c.gc_objects_deleted += deleted;
        });
        match result {
            Ok(()) => {
                info!(
                    indexes = plan.indexes.len(),
                    layers = plan.layers.len(),
                    claims = plan.claims.len(),
                    "garbage collection: older generations' superseded objects deleted"
                );
                true
            }
            Err(e) => {
                debug!(error = %e, deleted, "garbage collection: a deletion failed; the next pass finishes");
                false
            }
        }
    }

    /// Whether this attachment's generation is still the newest claim on the segment, asked
    /// once: a newer claim makes it stale ([`Checkpointer::become_stale`]); a failed check is
    /// logged (`then`: what happens instead) and answers no, so nothing is deleted.
    async fn still_newest(&mut self, then: &str) -> bool {
        let (tenant, segment) = (self.tenant.id, self.segment.id);
        match self.shared.remote.newest_claim(tenant, segment).await {
            Ok(newest) if newest > self.generation => {
                self.become_stale(newest);
                false
            }
            Ok(_) => true,
            Err(e) => {
                debug!(error = %e, "could not check the generation; {then}");
                false
            }
        }
    }

    /// A pass over older generations' objects, if one is pending (an index was uploaded since
    /// the last complete pass) and due (the claim is `--gc-delay` old, the last pass as long
    /// ago). Idle segments run it from their ticks: the pass after the last index change must
    /// not wait for a next checkpoint that may never come.
    pub(super) async fn maybe_collect_older(&mut self) {
        let config = &self.shared.config;
        let due = self.claimed_at.elapsed() >= config.gc_delay
            && self.last_gc.is_none_or(|t| t.elapsed() >= config.gc_delay);
        if self.gc_pending && due {
            self.last_gc = Some(Instant::now());
            self.gc_pending = !self.collect_older_generations(self.checkpointed).await;
        }
    }

    /// Deletes this generation's layers other than `keep` (the one the durable index names),
    /// unless a newer generation exists. Failures are left for the next checkpoint. Returns
    /// whether this generation was confirmed the newest (nothing may be deleted otherwise,
    /// the safekeepers' log included).
    pub(super) async fn collect_garbage(&mut self, keep: &[String]) -> bool {
        if !self.still_newest("no deletions this time").await {
            return false;
        }
        let remote = &self.shared.remote;
        let (tenant, segment, generation) = (self.tenant.id, self.segment.id, self.generation);
        let names = match remote.own_layers(tenant, segment, generation).await {
            Ok(names) => names,
            Err(e) => {
                debug!(error = %e, "could not list layers; no deletions this time");
                // Still the newest: listing failed, not the check.
                return true;
            }
        };
        for name in names.iter().filter(|n| !keep.contains(n)) {
            match remote.delete_layer(tenant, segment, name, generation).await {
                Ok(()) => {
                    self.shared.metrics.layers_deleted.inc();
                    debug!(layer = %name, "deleted a layer no index names");
                    crash_point::hit("own-layer-deleted");
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
    pub(super) async fn trim(&mut self, upto: Lsn) {
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
