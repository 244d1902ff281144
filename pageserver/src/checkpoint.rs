//! Checkpoints: each segment's pages written to object storage, so that a pageserver can start
//! from them and safekeepers can drop the log below them.
//!
//! A segment starts from its newest checkpoint: [`crate::restore`] attaches it (claims a
//! generation, reads the index and its layers' directories) and fetches its pages on demand.
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
//!    it) and decide what to write (`plan_layer`). With a retention window and every record of
//!    `(P, C]` at hand (`P` the previous checkpoint), usually **no layer**: the delta layer of
//!    those records (step 2b) is the checkpoint, and the chain stays; its newest layer `T` (the
//!    chain top) is then below `C`, and the deltas above `T` hold what changed since (RFC 0011).
//!    Otherwise write a layer of the segment as of `C` to a local file (ingest goes on: a page's
//!    versions at or below `C` never change; if a page has already dropped the version `C` needs,
//!    the checkpoint is abandoned and tried again later): a **changes layer** of the pages
//!    whose version at `C` was written above `T`, once [`DELTAS_ABOVE_CHAIN_MAX`] deltas are
//!    above it (or without a window, where `T = P`), so what a checkpoint uploads follows the
//!    bytes changed, not the segment's size. An **image layer** of every page instead when
//!    there is no chain yet or the changes layers' and deltas' bytes reach half the image's, and
//!    one changes layer of every page changed since the image once the chain holds
//!    [`CHANGES_LAYERS_MAX`] changes layers: a restore reads one image, at most that many
//!    changes layers and 32 deltas, and below the newest layer less than 1.5 times the image's
//!    bytes;
//! 2. upload the layer under this generation; with a window, then the delta layer (2b);
//! 3. check that this attachment's claim is still the newest (else it is **stale**: it uploads
//!    and deletes nothing from then on), then upload the index naming the chain (the previous
//!    chain plus the new changes layer, the new image alone, or the previous chain with one more
//!    delta above it): now the checkpoint is durable
//!    (`checkpointed_lsn` on `/status`);
//! 4. delete this generation's layers that the new index does not name (idempotent; skipped when
//!    a newer generation exists, see [`crate::remote`]). Layers of an older generation that the
//!    chain names stay; those it no longer names are an older generation's garbage, which this
//!    attachment never deletes;
//! 5. tell every safekeeper of the segment's group (`crate::safekeepers::sources`)
//!    `Trim { upto: C, epoch }`, where `epoch` is the newest writer epoch a
//!    GetPage vouched for: a safekeeper that has not seen that epoch refuses;
//! 6. once the claim is `--gc-delay` old, and at most once per `--gc-delay`: delete older
//!    generations' superseded indexes, the layers no index names any more, and their claims
//!    ([`crate::gc`], which says why that is safe).
//!
//! `C` is at or below a VDL someone vouched for, so every record in the checkpoint is durable and
//! no recovery will ever truncate it: any index, of any generation, is a correct starting point.
//!
//! An image, or a merge of the chain, needs every page of the segment locally: while a restored
//! chain still has pages only in object storage, the checkpoint hydrates it first
//! ([`crate::restore::hydrate`]).
//!
//! A changes layer since `T < P` needs the pages changed in `(T, P]`, which may have been
//! evicted or never fetched since a restore: they are rebuilt from the deltas first
//! (`restore::hydrate` with [`crate::restore::Hydrate::Deltas`]), eviction held meanwhile. A
//! segment idle for a whole window folds the deltas above `T` into such a changes layer at
//! the same checkpoint ([`Checkpointer::expire_window`]), so it sheds them one window later.

use crate::index::{LayerRef, SegmentIndex};
use crate::layer::{self, LayerError, LayerKind, LayerMeta, LayerWriter};
use crate::pages::{ReadError, RemoteChain, RemoteLayer, TenantPages};
use crate::remote::{Backoff, RemoteError};
use crate::restore::{layers_dir, Attached};
use crate::segment_cursor::Cursor;
use crate::tenant::{Segment, Shared, Tenant, Tenants};
use borealis_core::{Lsn, SegmentId, SegmentLayout, TenantId};
use borealis_objstore::keys::{self, Generation};
use borealis_utils::crash_point;
use borealis_utils::LockExt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;
use tracing::{debug, error, info, info_span, warn, Instrument};
use window::DeltaUpload;

/// Bound on the final checkpoints of a clean shutdown: below the grace `borealis` gives a node
/// between SIGTERM and SIGKILL (10 s).
pub const SHUTDOWN_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(8);
/// Changes layers a chain may hold above its image; past it, the next checkpoint writes one
/// changes layer of every page changed since the image instead of extending the chain.
pub const CHANGES_LAYERS_MAX: usize = 64;

/// Delta layers the chain may have above its newest layer (RFC 0011): past it, the next
/// checkpoint writes a changes layer since that layer, so a page fetched from object storage
/// crosses at most this many deltas.
pub const DELTAS_ABOVE_CHAIN_MAX: usize = 32;
/// Page entries (a page per delta holding records of it) the deltas above the chain may hold in
/// all: the page store keeps the pages they list in memory.
pub const DELTA_PAGES_ABOVE_CHAIN_MAX: u64 = 1 << 18;

/// The layer a checkpoint writes, given the chain of the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LayerPlan {
    kind: LayerKind,
    /// A changes layer holds the pages changed above it (`INVALID` for an image).
    since: Lsn,
    /// How many layers of the chain the new index keeps below the new layer.
    keep: usize,
}

/// What the next checkpoint writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// No layer: the delta layer of the redo since the last checkpoint is the checkpoint, and
    /// the chain stays (RFC 0011).
    DeltaOnly,
    Layer(LayerPlan),
}

/// The delta layers an index names above its chain's newest layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct DeltasAbove {
    count: usize,
    /// Page entries: the sum of each delta's pages.
    pages: u64,
    bytes: u64,
}

/// A layer written and uploaded by steps 1 and 2 of a checkpoint.
struct WrittenLayer {
    name: String,
    meta: LayerMeta,
    directory: Vec<u32>,
    local: std::path::PathBuf,
    uploaded: crate::remote::Uploaded,
}

/// The layer policy (see the module docs), given the chain, the deltas the index names above
/// its newest layer, and whether this checkpoint's delta can be written (a window is set and
/// the records since the last checkpoint are all at hand):
/// - an **image** when there is no chain, or its changes layers' and those deltas' bytes reach
///   half the image's (below its newest layer a chain then holds less than 1.5 times the
///   image, and each byte changed costs about three uploaded: its changes layer or delta and
///   its share of the next image);
/// - one **merged changes layer** of every page changed since the image when the chain holds
///   [`CHANGES_LAYERS_MAX`] changes layers (a restore reads a bounded number of layers; the
///   merged layer is smaller than half the image, by the rule above, and much smaller when the
///   changes keep to a hot set of pages). Merges re-upload what changed since the image, so they
///   must be rare: with 64 layers and the default 60 s interval, at most one an hour;
/// - **no layer** (the delta is the checkpoint, RFC 0011) when the delta can be written and the
///   deltas above the chain stay within [`DELTAS_ABOVE_CHAIN_MAX`] and
///   [`DELTA_PAGES_ABOVE_CHAIN_MAX`];
/// - otherwise the **changes layer** of the pages changed since the chain's newest layer (the
///   last checkpoint, unless deltas are above it).
fn plan_layer(chain: &[LayerRef], above: DeltasAbove, delta_at_hand: bool) -> Plan {
    let image = Plan::Layer(LayerPlan {
        kind: LayerKind::Image,
        since: Lsn::INVALID,
        keep: 0,
    });
    let (Some(first), Some(top)) = (chain.first(), chain.last()) else {
        return image;
    };
    let changes_bytes: u64 = chain.iter().skip(1).map(|l| l.bytes).sum::<u64>() + above.bytes;
    if changes_bytes.saturating_mul(2) >= first.bytes {
        return image;
    }
    if chain.len() > CHANGES_LAYERS_MAX {
        return Plan::Layer(LayerPlan {
            kind: LayerKind::Changes,
            since: first.lsn,
            keep: 1,
        });
    }
    if delta_at_hand
        && above.count < DELTAS_ABOVE_CHAIN_MAX
        && above.pages < DELTA_PAGES_ABOVE_CHAIN_MAX
    {
        return Plan::DeltaOnly;
    }
    Plan::Layer(LayerPlan {
        kind: LayerKind::Changes,
        since: top.lsn,
        keep: chain.len(),
    })
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
        chain: attached.chain,
        kept: attached.kept,
        last_record: attached.cursor.last_applied,
        claimed_at: attached.claimed_at,
        last_gc: None,
        gc_pending: false,
        records_at_checkpoint,
        trim_incomplete: false,
        layer_owed: false,
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
    /// The chain of layers of that checkpoint's index (empty: none yet).
    chain: Vec<LayerRef>,
    /// What that index keeps for the retention window besides the chain.
    kept: crate::history::Kept,
    /// That index's `last_record_lsn`.
    last_record: Lsn,
    claimed_at: Instant,
    /// When the last pass over older generations' objects ran.
    last_gc: Option<Instant>,
    /// An index was uploaded since the last complete pass: one is due.
    gc_pending: bool,
    /// The segment's `records_applied` when the last checkpoint's cursor was taken.
    records_at_checkpoint: u64,
    /// The last trim did not reach every safekeeper: retry it even without a new checkpoint.
    trim_incomplete: bool,
    /// The next checkpoint writes a layer, even with its delta at hand.
    layer_owed: bool,
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
            // The redo kept for the next delta layer is bounded too.
            let buffered = self
                .segment
                .records
                .locked()
                .as_ref()
                .map_or(0, |b| b.bytes());
            let due = match trigger {
                Trigger::Tick | Trigger::Request(_) => new_records > 0,
                Trigger::Progress => {
                    new_records >= config.checkpoint_records
                        || buffered >= crate::history::HISTORY_BUFFER_CHECKPOINT_BYTES
                }
            };
            if due {
                self.checkpoint().await;
                ticker.reset();
            } else if trigger == Trigger::Tick {
                if self.trim_incomplete {
                    self.trim(self.checkpointed).await;
                }
                self.expire_window().await;
                self.maybe_collect_older().await;
            }
            if let Trigger::Request(n) = trigger {
                self.segment.checkpoint_served(n);
            }
        }
    }

    /// One checkpoint (see the module docs); returns once it is durable, or abandoned. Pages
    /// held back from eviction for an image or a merge may be evicted again afterwards (unless
    /// the attachment went stale).
    async fn checkpoint(&mut self) {
        self.checkpoint_once().await;
        if !self.segment.checkpoint_status().stale {
            self.tenant.pages.hold_eviction(self.segment.id, false);
        }
    }

    async fn checkpoint_once(&mut self) {
        let shared = self.shared.clone();
        let (tenant, segment) = (self.tenant.id, self.segment.id);
        let records_before = self.segment.follow_status().records_applied;
        let cursor = self.segment.applied();
        // A stale attachment uploads nothing (see step 3).
        if cursor.caught_up_to <= self.checkpointed || self.segment.checkpoint_status().stale {
            self.records_at_checkpoint = records_before;
            return;
        }
        let window_ms = shared.config.pitr_window.as_millis() as u64;
        let delta_at_hand = window_ms > 0
            && !self.layer_owed
            && self
                .segment
                .records
                .locked()
                .as_ref()
                .is_some_and(|b| b.holds_above(self.checkpointed))
            // Pages above a chain with a version 1 layer (no directory) could not be rebuilt.
            && self.chain.iter().all(|l| {
                layer::version_from_size(l.pages, l.bytes) == Some(layer::LAYER_VERSION)
            });
        let mut plan = plan_layer(&self.chain, self.deltas_above_chain(), delta_at_hand);
        if let Plan::Layer(p) = plan {
            let merge = p.keep < self.chain.len();
            if merge || p.since < self.checkpointed {
                // An image or a merge needs every page here, and a changes layer since the chain
                // top below the last checkpoint the pages changed since that top (RFC 0011),
                // until its index names the new layer: no eviction meanwhile, and the pages
                // still only in object storage (not fetched since a restore, or evicted) come
                // first (a failure is tried again at the next checkpoint; ingest and GetPage go
                // on meanwhile).
                self.tenant.pages.hold_eviction(segment, true);
                let what = if merge {
                    crate::restore::Hydrate::All
                } else {
                    crate::restore::Hydrate::Deltas
                };
                if let Err(e) =
                    crate::restore::hydrate(&shared, &self.tenant, &self.segment, what).await
                {
                    shared.metrics.object_store_errors.inc();
                    warn!(error = %e, "hydrating before writing a layer failed; checkpoint postponed");
                    self.note_problem(format!("hydrating before a layer: {e}"));
                    return;
                }
                plan = plan_layer(&self.chain, self.deltas_above_chain(), delta_at_hand);
            }
        }

        // 1–2. The layer, written locally and uploaded (none for a checkpoint of redo only).
        let written = match plan {
            Plan::DeltaOnly => None,
            Plan::Layer(p) => match self.write_and_upload(p, cursor).await {
                Some(w) => Some((p, w)),
                None => return,
            },
        };
        let local = written.as_ref().map(|(_, w)| w.local.clone());
        let abandon = |this: &Self| {
            this.segment.update_checkpoint(|c| c.uploading = false);
            if let Some(local) = &local {
                remove_quietly(local);
            }
        };

        // 2b. With a retention window, the redo since the previous checkpoint (RFC 0010): the
        // whole checkpoint when no layer was written (RFC 0011).
        let delta = if window_ms > 0 {
            self.segment.update_checkpoint(|c| c.uploading = true);
            match self.upload_delta(cursor.caught_up_to).await {
                DeltaUpload::Uploaded(d) => Some(d),
                DeltaUpload::Missing if written.is_some() => None,
                DeltaUpload::Missing | DeltaUpload::Failed => {
                    // Without its delta, a checkpoint of redo only has nothing: the next one
                    // sees the records are not all at hand and writes a layer.
                    abandon(self);
                    return;
                }
            }
        } else {
            None
        };
        // The pages the deltas above the chain hold, for the page store: none once a layer is
        // written (its chain top is the checkpoint).
        let delta_pages = if written.is_none() && delta.is_some() {
            self.delta_pages(cursor.caught_up_to)
        } else {
            Vec::new()
        };

        // 3. The index: the checkpoint is durable once it is (`upload_index`).
        let chain = match &written {
            None => self.chain.clone(),
            Some((p, w)) => self.chain_with(*p, w),
        };
        let now_ms = unix_ms();
        let restarts_window = window_ms > 0 && delta.is_none();
        let delta_name = delta.as_ref().map(|d| d.name.clone());
        let kept = crate::history::retain(
            &self.kept,
            &self.chain,
            &chain,
            delta,
            cursor.caught_up_to,
            (now_ms, window_ms),
        );
        // A chain that ends below the checkpoint needs the deltas from its top on (index
        // version 4): `retain` keeps them; an index that broke this rule would be refused by
        // every restore, so it is never uploaded.
        if !crate::index::deltas_reach_chain_top(&chain, cursor.caught_up_to, kept.from) {
            debug_assert!(false, "the window does not reach the chain top");
            let top = chain.last().map(|l| l.lsn);
            error!(?top, from = ?kept.from, "the deltas kept do not reach down to the chain top; checkpoint abandoned");
            self.note_problem("the deltas kept do not reach down to the chain top".into());
            abandon(self);
            self.layer_owed = true;
            return;
        }
        if !self
            .upload_index(&chain, &kept, (cursor.caught_up_to, cursor.last_applied))
            .await
        {
            abandon(self);
            return;
        }
        // The window and the page store's chain follow the durable index: pages whose newest
        // version it holds may be evicted from now on.
        self.segment
            .publish_window(tenant, cursor.caught_up_to, &chain, &kept);
        let directory = written.as_ref().map(|(_, w)| w.directory.clone());
        self.publish_chain(
            &chain,
            directory,
            delta_pages,
            &kept.deltas,
            cursor.caught_up_to,
        );
        let merged = written
            .as_ref()
            .is_some_and(|(p, _)| p.keep < self.chain.len());
        if merged {
            // An image or a merge: the layers it replaces are garbage from now on.
            crash_point::hit("compacted-index-uploaded");
        }
        if written.is_none() {
            // The index's chain ends below its checkpoint now (RFC 0011).
            crash_point::hit("delta-only-index-uploaded");
        }
        shared.metrics.checkpoints.inc();
        self.layer_owed &= written.is_none();
        match written.as_ref().map(|(p, _)| p.kind) {
            Some(LayerKind::Image) => shared.metrics.image_layers_written.inc(),
            Some(LayerKind::Changes) => shared.metrics.changes_layers_written.inc(),
            None => shared.metrics.delta_only_checkpoints.inc(),
        }
        self.checkpointed = cursor.caught_up_to;
        self.last_record = cursor.last_applied;
        // The records the window's new delta covers leave the buffer.
        if let Some(buffer) = self.segment.records.locked().as_mut() {
            buffer.checkpointed(cursor.caught_up_to);
        }
        if restarts_window {
            warn!(lsn = %cursor.caught_up_to, "the redo since the last checkpoint was not all kept (buffer bound reached): the retention window restarts at this checkpoint");
        }
        self.kept = kept;
        self.chain = chain;
        self.records_at_checkpoint = records_before;
        let (kind, last_layer, pages, bytes) = match &written {
            Some((p, w)) => (
                p.kind.name(),
                Some(w.name.clone()),
                w.meta.page_count,
                w.uploaded.bytes,
            ),
            None => ("delta", delta_name, 0, 0),
        };
        self.segment.update_checkpoint(|c| {
            c.uploading = false;
            c.checkpointed_lsn = cursor.caught_up_to;
            c.checkpoints += 1;
            c.last_layer = last_layer.clone();
            c.last_layer_pages = pages;
            c.chain_layers = self.chain.len();
            c.chain_bytes = self.chain.iter().map(|l| l.bytes).sum();
            c.window_restarts += u64::from(restarts_window);
            c.last_problem = None;
        });
        info!(lsn = %cursor.caught_up_to, kind, pages, bytes, chain = self.chain.len(), "checkpoint durable");
        if let Some(local) = &local {
            remove_quietly(local);
        }

        // 4. This generation's layers the index no longer names.
        let keep = self.named_by_own_generation();
        let newest = self.collect_garbage(&keep).await;

        // 5. The safekeepers may drop the log it covers, if this is still the newest generation.
        // Trimming the log is a deletion too: a newer attachment may have restored from an
        // older checkpoint than this one and still need the log above it. Ordering makes the
        // check sufficient: this index was uploaded before the claims were read, and a newer
        // attachment claims its generation before it reads the newest index, so one that this
        // check missed restored from this checkpoint or a later one.
        if newest {
            self.trim(cursor.caught_up_to).await;
            // 6. Older generations' superseded objects, once this claim is old enough.
            self.gc_pending = true;
            self.maybe_collect_older().await;
        }
    }

    /// Step 3: the index naming `chain` and keeping `kept`, at `(checkpoint, last_record)`,
    /// uploaded only while this attachment's claim is the newest: a stale one uploads no index
    /// any more (`crate::gc` relies on it; it is marked stale here). `false`: not uploaded.
    async fn upload_index(
        &self,
        chain: &[LayerRef],
        kept: &crate::history::Kept,
        (checkpoint, last_record): (Lsn, Lsn),
    ) -> bool {
        let shared = self.shared.clone();
        let (tenant, segment, generation) = (self.tenant.id, self.segment.id, self.generation);
        let Some(newest_claim) = self
            .retry("checking the generation", || {
                shared.remote.newest_claim(tenant, segment)
            })
            .await
        else {
            return false;
        };
        if newest_claim > generation {
            self.become_stale(newest_claim);
            return false;
        }
        let index = kept.onto(SegmentIndex::new(
            tenant,
            segment,
            generation,
            checkpoint,
            last_record,
            chain.to_vec(),
        ));
        let Some(index_bytes) = self
            .retry("uploading the index", || {
                shared.remote.upload_index(tenant, segment, &index)
            })
            .await
        else {
            return false;
        };
        shared.metrics.bytes_uploaded.add(index_bytes);
        true
    }

    /// The chain of an index that names the layer `w` written by `plan`: the new image alone, or
    /// the `plan.keep` oldest layers of the current chain and the new changes layer above them.
    fn chain_with(&self, plan: LayerPlan, w: &WrittenLayer) -> Vec<LayerRef> {
        match plan.kind {
            LayerKind::Image => vec![LayerRef::image(
                w.name.clone(),
                self.generation,
                &w.meta,
                w.uploaded.crc32c,
            )],
            LayerKind::Changes => {
                let mut chain = self.chain[..plan.keep].to_vec();
                chain.push(LayerRef::changes(
                    w.name.clone(),
                    self.generation,
                    plan.since,
                    &w.meta,
                    w.uploaded.crc32c,
                ));
                chain
            }
        }
    }

    /// Steps 1 and 2 of a checkpoint that writes a layer: the layer written to a local file as
    /// of `cursor`, then uploaded under this generation. `None`: abandoned (tried again later).
    async fn write_and_upload(&self, plan: LayerPlan, cursor: Cursor) -> Option<WrittenLayer> {
        let shared = self.shared.clone();
        let (tenant, segment, generation) = (self.tenant.id, self.segment.id, self.generation);
        let (kind, since) = (plan.kind, plan.since);
        let name = match kind {
            LayerKind::Image => layer::image_layer_name(cursor.caught_up_to),
            LayerKind::Changes => layer::changes_layer_name(since, cursor.caught_up_to),
        };
        let dir = layers_dir(&shared, tenant, segment);
        let local = dir.join(format!("{name}-{:08x}.upload", generation.0));
        let pages = self.tenant.pages.clone();
        let layout = shared.config.layout;
        let path = local.clone();
        let written = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            write_layer(
                &pages,
                &path,
                kind,
                since,
                (tenant, segment),
                layout,
                cursor,
            )
        })
        .await;
        let (meta, directory) = match written {
            Ok(Ok(written)) => written,
            Ok(Err(WriteError::TooOld(e))) => {
                shared.metrics.checkpoint_aborts.inc();
                debug!(error = %e, "checkpoint abandoned: a page moved on; trying again later");
                self.note_problem(format!("checkpoint abandoned: {e}"));
                remove_quietly(&local);
                return None;
            }
            Ok(Err(e)) => {
                shared.metrics.checkpoint_aborts.inc();
                error!(error = %e, path = %local.display(), "writing a layer file failed");
                self.note_problem(format!("writing a layer: {e}"));
                remove_quietly(&local);
                return None;
            }
            Err(e) => {
                error!(error = %e, "the layer writing task failed");
                remove_quietly(&local);
                return None;
            }
        };
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
            return None;
        };
        shared.metrics.bytes_uploaded.add(uploaded.bytes);
        crash_point::hit(match kind {
            LayerKind::Image => "image-layer-uploaded",
            LayerKind::Changes => "changes-layer-uploaded",
        });
        if uploaded.bytes != meta.file_bytes() {
            error!(
                uploaded = uploaded.bytes,
                expected = meta.file_bytes(),
                "the local layer file changed under the upload"
            );
            self.segment.update_checkpoint(|c| c.uploading = false);
            remove_quietly(&local);
            return None;
        }
        Some(WrittenLayer {
            name,
            meta,
            directory,
            local,
            uploaded,
        })
    }

    /// Hands the page store the chain of the index just uploaded, newest layer first: the new
    /// layer (if one was written) with the `directory` it was written with, then the kept layers
    /// with the directories the store already had, and the pages the `deltas` above the chain
    /// hold with the window that rebuilds them (RFC 0011). If a kept layer is unknown (a
    /// version 1 layer the restore downloaded whole), the chain is handed over without it and
    /// nothing of the segment is evicted (its pages were all installed; none of them is fetched
    /// from it).
    fn publish_chain(
        &self,
        chain: &[LayerRef],
        directory: Option<Vec<u32>>,
        delta_pages: Vec<u32>,
        deltas: &[LayerRef],
        checkpoint_lsn: Lsn,
    ) {
        let pages = &self.tenant.pages;
        let known = pages.remote_chain(self.segment.id);
        let (kept, mut remote) = match (directory, chain.split_last()) {
            (Some(directory), Some((newest, kept))) => (
                kept,
                RemoteChain {
                    layers: vec![Arc::new(RemoteLayer {
                        layer: newest.clone(),
                        directory,
                        above: newest.from_lsn.unwrap_or(Lsn::INVALID),
                    })],
                    ..RemoteChain::default()
                },
            ),
            _ => (chain, RemoteChain::default()),
        };
        remote.evict_upto = checkpoint_lsn;
        for layer_ref in kept.iter().rev() {
            let found = known.as_ref().and_then(|k| {
                k.layers.iter().find(|l| {
                    l.layer.name == layer_ref.name && l.layer.generation == layer_ref.generation
                })
            });
            match found {
                Some(l) => remote.layers.push(l.clone()),
                None => remote.evict_upto = Lsn::INVALID,
            }
        }
        if !delta_pages.is_empty() {
            remote.window = Some(Arc::new(crate::history::Window::of_chain(
                (self.tenant.id, self.segment.id),
                checkpoint_lsn,
                chain,
                deltas,
                known.as_ref().and_then(|k| k.window.as_deref()),
            )));
            remote.delta_pages = delta_pages;
        }
        pages.set_remote(self.segment.id, remote);
    }

    /// Marks this attachment stale: a newer generation was claimed. Its pages are not evicted
    /// any more: the newest attachment's GC may delete the layers they would be fetched from.
    fn become_stale(&self, newest: Generation) {
        self.tenant.pages.hold_eviction(self.segment.id, true);
        if !self.segment.checkpoint_status().stale {
            warn!(newest = newest.0, "a newer generation of this segment exists: this attachment uploads and deletes nothing from now on");
        }
        self.segment.update_checkpoint(|c| c.stale = true);
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
                    // Ingest and GetPage go on meanwhile.
                    attempts += 1;
                    self.segment
                        .note_failed_attempt(&self.shared.metrics, attempts, what, &e);
                    backoff.wait().await;
                }
            }
        }
    }

    fn note_problem(&self, problem: String) {
        self.segment
            .update_checkpoint(|c| c.last_problem = Some(problem));
    }
}

/// Wall-clock milliseconds since the Unix epoch: the retention window's checkpoint marks.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

/// Writes the layer of `kind` of `segment` as of `cursor` to `path`: every page, or (changes)
/// the pages whose version at the cursor is above `since`. Returns its meta and directory (the
/// pages written, increasing). Blocking.
fn write_layer(
    pages: &TenantPages,
    path: &Path,
    kind: LayerKind,
    since: Lsn,
    (tenant, segment): (TenantId, SegmentId),
    layout: SegmentLayout,
    cursor: Cursor,
) -> Result<(LayerMeta, Vec<u32>), WriteError> {
    let mut writer = LayerWriter::create(
        path,
        kind,
        tenant,
        segment,
        layout,
        cursor.caught_up_to,
        cursor.last_applied,
    )?;
    let mut directory = Vec::new();
    for page in pages.segment_pages(segment) {
        // One lookup per page: which version, then (unless a changes layer skips it) its image.
        let version = match pages.checkpoint_version(page, cursor.caught_up_to) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e @ ReadError::LsnTooOld { .. }) => return Err(WriteError::TooOld(e)),
            Err(e) => return Err(WriteError::Read(e)),
        };
        if kind == LayerKind::Changes && version.lsn <= since {
            continue;
        }
        let image = pages
            .checkpoint_image(&version)
            .map_err(|e| WriteError::Read(e.into()))?;
        writer.push(page, version.lsn, &image)?;
        directory.push(page.0);
    }
    Ok((writer.finish()?, directory))
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

mod cleanup;
mod window;

#[cfg(test)]
mod tests;
