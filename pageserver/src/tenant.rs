//! Tenants and their segments, learned lazily.
//!
//! A tenant appears the first time a GetPage names it; a segment appears the first time a GetPage
//! asks for one of its pages, and from then on a follower task ([`crate::ingest`]) keeps applying
//! its log. Per tenant the pageserver remembers the **vouched VDL** ([`Vouch`]): the highest LSN
//! a GetPage asked for (the asker guarantees it is at or below the VDL of its writer) and the
//! newest writer epoch a GetPage named. Log is read only from safekeepers at that epoch or newer
//! (`ReadLog.min_epoch`): an older one may still hold records a newer writer's recovery truncated
//! everywhere else.

use crate::cache::PageCache;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pages::{SegmentCounts, TenantPages};
use crate::remote::Remote;
use crate::safekeepers::SafekeeperPool;
use crate::segment_cursor::Cursor;
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_utils::LockExt;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Segments followed per tenant at most (each costs a task and a long poll): as many as a volume
/// can have (the writer refuses pages beyond them). A GetPage beyond the bound is refused rather
/// than growing without limit.
pub const SEGMENTS_PER_TENANT_MAX: usize = borealis_core::SEGMENTS_PER_VOLUME_MAX as usize;

/// A failing object store operation is logged at WARN on its first failure and then once every
/// this many attempts (DEBUG in between): a store that is down for an hour must not flood the log.
pub const WARN_EVERY_ATTEMPTS: u64 = 20;

/// What every part of the pageserver shares.
pub struct Shared {
    pub config: Config,
    pub metrics: Metrics,
    pub cache: Arc<PageCache>,
    pub safekeepers: Arc<SafekeeperPool>,
    pub remote: Remote,
    /// Background hydrations running at once (`crate::restore::spawn_hydration`).
    pub hydrations: tokio::sync::Semaphore,
    /// `GetPages` page-file reads running at once ([`crate::get_page::BATCH_READS_MAX`]): a
    /// point `GetPage` takes none, so it never waits behind a queue of scans for the disk.
    pub batch_reads: tokio::sync::Semaphore,
    /// Bytes of records in every segment's history buffer (`crate::history::RecordBuffer`).
    pub history_bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// What GetPage requests have vouched for: every LSN up to `lsn` is durable, and the newest
/// writer epoch is at least `epoch`. Both only grow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Vouch {
    pub lsn: Lsn,
    pub epoch: u64,
}

pub struct Tenant {
    pub id: TenantId,
    vouched: watch::Sender<Vouch>,
    pub pages: Arc<TenantPages>,
    segments: Mutex<BTreeMap<SegmentId, Arc<Segment>>>,
}

impl Tenant {
    /// Records that every LSN up to `lsn` is durable, as a writer of epoch `epoch` says (the VDL
    /// never goes backwards, nor does the epoch).
    pub fn vouch(&self, lsn: Lsn, epoch: u64) {
        self.vouched.send_if_modified(|v| {
            let raise = lsn > v.lsn || epoch > v.epoch;
            v.lsn = v.lsn.max(lsn);
            v.epoch = v.epoch.max(epoch);
            raise
        });
    }

    pub fn vouched(&self) -> Vouch {
        *self.vouched.borrow()
    }

    pub fn subscribe_vouched(&self) -> watch::Receiver<Vouch> {
        self.vouched.subscribe()
    }

    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.locked().values().cloned().collect()
    }
}

/// What a follower last did, for the status page.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FollowStatus {
    pub last_applied: Lsn,
    /// The safekeeper the segment is read from now.
    pub safekeeper: String,
    /// Every safekeeper it may be read from: its protection group if `--safekeepers` is a pool,
    /// else all of them.
    pub sources: Vec<String>,
    /// The newest `known_vdl` the current safekeeper reported.
    pub safekeeper_known_vdl: Lsn,
    pub records_applied: u64,
    /// The segment looked idle: no record newer than `caught_up_to` known to its safekeeper.
    pub idle: bool,
    /// The follower stopped polling (no activity for a while) until a GetPage needs it.
    pub dormant: bool,
    pub last_problem: Option<String>,
}

/// One followed segment of a tenant.
pub struct Segment {
    pub id: SegmentId,
    caught_up_to: watch::Sender<Lsn>,
    /// The follower's cursor as last published: `caught_up_to` and the newest record applied at
    /// or below it, together (a checkpoint needs both of the same moment).
    applied: Mutex<Cursor>,
    /// Checkpoint requests (a counter, bumped by a clean shutdown) and the last one served.
    checkpoint_requested: watch::Sender<u64>,
    checkpoint_served: watch::Sender<u64>,
    checkpoint: Mutex<CheckpointStatus>,
    /// The LSNs GetPage requests wait for now (with how many wait for each); its maximum is
    /// published in `wanted`.
    waiters: Mutex<BTreeMap<Lsn, usize>>,
    wanted: watch::Sender<Lsn>,
    status: Mutex<FollowStatus>,
    /// The segment's follower and checkpointer tasks: aborted when the tenant is deleted.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// With a retention window: the records applied above the last checkpoint
    /// (`crate::history`), set when the segment is attached.
    pub records: Mutex<Option<crate::history::RecordBuffer>>,
    /// With a retention window: what the newest durable index keeps, for reads below the
    /// local page file's history.
    pub window: Mutex<Option<Arc<crate::history::Window>>>,
}

impl Segment {
    fn new(id: SegmentId) -> Segment {
        Segment {
            id,
            caught_up_to: watch::channel(Lsn::INVALID).0,
            applied: Mutex::new(Cursor::default()),
            checkpoint_requested: watch::channel(0).0,
            checkpoint_served: watch::channel(0).0,
            checkpoint: Mutex::new(CheckpointStatus::default()),
            waiters: Mutex::new(BTreeMap::new()),
            wanted: watch::channel(Lsn::INVALID).0,
            status: Mutex::new(FollowStatus::default()),
            tasks: Mutex::new(Vec::new()),
            records: Mutex::new(None),
            window: Mutex::new(None),
        }
    }

    /// Makes the window of the newest durable index of this segment (of `tenant`, at `upto`,
    /// naming `chain` and keeping `kept`) the one reads below the local history use, and shows
    /// it on the status page.
    pub fn publish_window(
        &self,
        tenant: TenantId,
        upto: Lsn,
        chain: &[crate::index::LayerRef],
        kept: &crate::history::Kept,
    ) {
        *self.window.locked() =
            crate::history::Window::new((tenant, self.id), upto, chain, kept).map(Arc::new);
        self.update_checkpoint(|c| {
            c.history_from = kept.from;
            c.window_layers = kept.history.len() + kept.deltas.len();
        });
    }

    /// Registers a task working on this segment, to be stopped if the tenant is deleted.
    pub fn track_task(&self, task: tokio::task::AbortHandle) {
        self.tasks.locked().push(task);
    }

    /// Aborts every task working on this segment and waits (at most `within`) until they have
    /// stopped: then nothing of it writes to object storage any more. Returns whether they did.
    async fn stop_tasks(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Again until none is left: the follower spawns the checkpointer, and may have
            // registered it just after the list was taken (before its abort took effect).
            let tasks: Vec<_> = std::mem::take(&mut *self.tasks.locked());
            if tasks.is_empty() {
                return true;
            }
            for t in &tasks {
                t.abort();
            }
            while !tasks.iter().all(|t| t.is_finished()) {
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }

    pub fn caught_up_to(&self) -> Lsn {
        *self.caught_up_to.borrow()
    }

    pub fn subscribe_caught_up_to(&self) -> watch::Receiver<Lsn> {
        self.caught_up_to.subscribe()
    }

    pub fn subscribe_wanted(&self) -> watch::Receiver<Lsn> {
        self.wanted.subscribe()
    }

    /// Publishes progress. Every record at or below `cursor.caught_up_to` must already be in the
    /// page store, and `cursor.last_applied` must be the newest of them.
    pub fn publish_applied(&self, cursor: Cursor) {
        *self.applied.locked() = cursor;
        let lsn = cursor.caught_up_to;
        self.caught_up_to.send_if_modified(|c| {
            assert!(lsn >= *c, "caught_up_to went backwards");
            let raise = lsn > *c;
            *c = lsn;
            raise
        });
    }

    /// The cursor as last published.
    pub fn applied(&self) -> Cursor {
        *self.applied.locked()
    }

    pub fn follow_status(&self) -> FollowStatus {
        self.status.locked().clone()
    }

    /// Notes the `attempts`-th failure in a row of an object store step that is retried until
    /// it succeeds (`what` failed with `error`): counted in the metrics and on `/status`, and
    /// logged at WARN on the first failure and then once every [`WARN_EVERY_ATTEMPTS`] (DEBUG
    /// in between).
    pub fn note_failed_attempt(
        &self,
        metrics: &Metrics,
        attempts: u64,
        what: &str,
        error: &dyn std::fmt::Display,
    ) {
        metrics.object_store_errors.inc();
        if attempts % WARN_EVERY_ATTEMPTS == 1 {
            tracing::warn!(error = %error, attempts, "{what} failed; retrying");
        } else {
            tracing::debug!(error = %error, attempts, "{what} failed; retrying");
        }
        self.update_checkpoint(|c| {
            c.object_store_failures += 1;
            c.last_problem = Some(format!("{what}: {error}"));
        });
    }

    pub fn update_checkpoint(&self, f: impl FnOnce(&mut CheckpointStatus)) {
        f(&mut self.checkpoint.locked());
    }

    pub fn checkpoint_status(&self) -> CheckpointStatus {
        self.checkpoint.locked().clone()
    }

    /// Asks the checkpointer for a checkpoint now; returns the request's number.
    pub fn request_checkpoint(&self) -> u64 {
        let mut n = 0;
        self.checkpoint_requested.send_modify(|r| {
            *r += 1;
            n = *r;
        });
        n
    }

    pub fn subscribe_checkpoint_requests(&self) -> watch::Receiver<u64> {
        self.checkpoint_requested.subscribe()
    }

    /// Marks requests up to `n` served.
    pub fn checkpoint_served(&self, n: u64) {
        self.checkpoint_served.send_if_modified(|s| {
            let raise = n > *s;
            *s = (*s).max(n);
            raise
        });
    }

    pub fn subscribe_checkpoint_served(&self) -> watch::Receiver<u64> {
        self.checkpoint_served.subscribe()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut FollowStatus)) {
        f(&mut self.status.locked());
    }

    /// Registers a GetPage waiting for `lsn`; the follower hurries while any waits.
    pub fn wait_for(self: &Arc<Self>, lsn: Lsn) -> Waiter {
        *self.waiters.locked().entry(lsn).or_insert(0) += 1;
        self.publish_wanted();
        Waiter {
            segment: self.clone(),
            lsn,
        }
    }

    fn publish_wanted(&self) {
        let max = self
            .waiters
            .locked()
            .keys()
            .next_back()
            .copied()
            .unwrap_or(Lsn::INVALID);
        self.wanted.send_if_modified(|w| {
            let changed = *w != max;
            *w = max;
            changed
        });
    }
}

/// A registered GetPage wait; unregisters on drop.
pub struct Waiter {
    segment: Arc<Segment>,
    lsn: Lsn,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        {
            let mut w = self.segment.waiters.locked();
            if let Some(n) = w.get_mut(&self.lsn) {
                *n -= 1;
                if *n == 0 {
                    w.remove(&self.lsn);
                }
            }
        }
        self.segment.publish_wanted();
    }
}

/// One safekeeper's answer to the last trim.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TrimAnswer {
    pub safekeeper: String,
    /// Its trim point after the trim.
    pub base: Option<Lsn>,
    pub error: Option<String>,
}

/// The checkpoint side of a segment, for `/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointStatus {
    /// This attachment's generation (0 until claimed).
    pub generation: u32,
    /// Loading the checkpoint the segment starts from.
    pub restoring: bool,
    /// The checkpointer runs (after the restore).
    pub active: bool,
    /// The generation of the index this attachment started from (`None`: no checkpoint existed).
    pub restored_from_generation: Option<u32>,
    pub restored_lsn: Lsn,
    /// Pages installed at the restore (from version 1 layers, downloaded whole).
    pub restored_pages: u64,
    /// Layers of the restored chain whose pages are still fetched on demand (0 once hydrated),
    /// and the pages they hold.
    pub remote_layers: usize,
    pub remote_pages: u64,
    /// Pages fetched from object storage one by one, for a GetPage or a record applied to them.
    pub pages_fetched: u64,
    /// The restored chain is all local (or there was none).
    pub hydrated: bool,
    /// The newest checkpoint whose index is durable: restored, or written by this attachment.
    pub checkpointed_lsn: Lsn,
    /// Checkpoints this attachment made durable.
    pub checkpoints: u64,
    pub last_layer: Option<String>,
    pub last_layer_pages: u32,
    /// The layers the newest index names (an image and the changes layers above it), and their
    /// bytes: what a restore downloads.
    pub chain_layers: usize,
    pub chain_bytes: u64,
    /// The retention window (RFC 0010): reads from this LSN to `checkpointed_lsn` are served
    /// from the layers the newest index keeps (`null`: no window), the layers it keeps for it
    /// (history and deltas), and the windows restarted because the redo buffer overflowed.
    pub history_from: Option<Lsn>,
    pub window_layers: usize,
    pub window_restarts: u64,
    /// A checkpoint waits for the object store.
    pub uploading: bool,
    pub object_store_failures: u64,
    pub last_problem: Option<String>,
    /// A newer generation was claimed: this attachment uploads and deletes nothing any more.
    pub stale: bool,
    /// Garbage collection of older generations' objects (`pageserver::gc`): passes that deleted
    /// something, objects deleted, and the bytes under the segment's prefix at the last pass.
    pub gc_passes: u64,
    pub gc_objects_deleted: u64,
    pub object_store_bytes: u64,
    /// What the last trim asked for, and what each safekeeper answered.
    pub trimmed_upto: Lsn,
    pub trim: Vec<TrimAnswer>,
}

/// Every tenant this pageserver has seen.
pub struct Tenants {
    shared: Arc<Shared>,
    /// Starts following a segment (`crate::ingest::spawn_follower` in the service): given by
    /// the caller so that the registry does not depend on the tasks it starts.
    follow: Follow,
    map: Mutex<HashMap<TenantId, Arc<Tenant>>>,
    /// Tenants deleted since this process started: never attached again. (After a restart
    /// nobody asks for them: the gateway deletes a tenant from its registry first.)
    dropped: Mutex<HashSet<TenantId>>,
}

/// Starts the tasks that follow a newly attached segment.
pub type Follow = Box<dyn Fn(Arc<Shared>, Arc<Tenant>, Arc<Segment>) + Send + Sync>;

/// Why a tenant could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("tenant {0} was deleted")]
    Deleted(TenantId),
    #[error("creating its local page store: {0}")]
    Io(#[from] io::Error),
}

/// What deleting a tenant removed here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub local_bytes: u64,
    pub objects_deleted: u64,
}

/// How long after stopping a deleted tenant's checkpointer its objects are listed and deleted a
/// second time: a PUT already on the wire when it was aborted lands within this.
pub const LATE_UPLOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest a deleted tenant's tasks may take to stop.
pub const DROP_TASKS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Tenants {
    pub fn new(shared: Arc<Shared>, follow: Follow) -> Tenants {
        Tenants {
            follow,
            shared,
            map: Mutex::new(HashMap::new()),
            dropped: Mutex::new(HashSet::new()),
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The tenant `id`, created (with an empty page file) on first use.
    pub fn get_or_create(&self, id: TenantId) -> Result<Arc<Tenant>, AttachError> {
        let mut map = self.map.locked();
        if let Some(t) = map.get(&id) {
            return Ok(t.clone());
        }
        // Checked under the map's lock, which `drop_tenant` holds when it marks the tenant.
        if self.dropped.locked().contains(&id) {
            return Err(AttachError::Deleted(id));
        }
        let config = &self.shared.config;
        let dir = config.data_dir.join("tenants").join(id.to_string());
        let pages = TenantPages::create_with_extents(
            &dir,
            id,
            config.layout,
            config.retain_versions,
            self.shared.cache.clone(),
            config.extent_records,
        )?;
        let tenant = Arc::new(Tenant {
            id,
            vouched: watch::channel(Vouch::default()).0,
            pages: Arc::new(pages),
            segments: Mutex::new(BTreeMap::new()),
        });
        tracing::info!(tenant = %id, dir = %dir.display(), "tenant attached");
        map.insert(id, tenant.clone());
        Ok(tenant)
    }

    /// Deletes tenant `id` from this pageserver and from object storage: no GetPage attaches it
    /// again, its follower and checkpointer tasks stop (so nothing of it is uploaded after),
    /// its local files are removed, then every object under its prefix is deleted. Idempotent:
    /// each call deletes whatever objects are there (a retry finishes a failed deletion).
    pub async fn drop_tenant(&self, id: TenantId) -> Result<Dropped, crate::remote::RemoteError> {
        let tenant = {
            let mut map = self.map.locked();
            self.dropped.locked().insert(id);
            map.remove(&id)
        };
        let mut dropped = Dropped::default();
        let attached = tenant.is_some();
        if let Some(tenant) = tenant {
            for segment in tenant.segments() {
                if !segment.stop_tasks(DROP_TASKS_WAIT).await {
                    return Err(crate::remote::RemoteError::Transfer(io::Error::other(
                        format!(
                        "tenant {id} segment {}: its tasks did not stop within {DROP_TASKS_WAIT:?}",
                        segment.id
                    ),
                    )));
                }
            }
            let dir = self
                .shared
                .config
                .data_dir
                .join("tenants")
                .join(id.to_string());
            dropped.local_bytes = dir_bytes(&dir);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        dropped.objects_deleted = self.shared.remote.delete_tenant(id).await?;
        if attached {
            // An upload the aborted checkpointer had already sent may still land after the
            // listing above: look again once it would have.
            tokio::time::sleep(LATE_UPLOAD_GRACE).await;
            dropped.objects_deleted += self.shared.remote.delete_tenant(id).await?;
        }
        tracing::info!(tenant = %id, local_bytes = dropped.local_bytes,
            objects_deleted = dropped.objects_deleted, "deleted tenant dropped");
        Ok(dropped)
    }

    /// Whether tenant `id` was deleted (since this process started).
    pub fn is_dropped(&self, id: TenantId) -> bool {
        self.dropped.locked().contains(&id)
    }

    /// The segment `id` of `tenant`, followed from now on; `None` if the tenant already has
    /// [`SEGMENTS_PER_TENANT_MAX`] followed segments, or was deleted meanwhile (a GetPage that
    /// attached it just before must not start a follower after the drop stopped them).
    pub fn segment(&self, tenant: &Arc<Tenant>, id: SegmentId) -> Option<Arc<Segment>> {
        let mut segments = tenant.segments.locked();
        // Checked under the tenant's segments lock, which `drop_tenant` takes (after marking
        // the tenant) to stop every segment's tasks: a follower started here is either seen and
        // stopped by it, or never started.
        if self.is_dropped(tenant.id) {
            return None;
        }
        if let Some(s) = segments.get(&id) {
            return Some(s.clone());
        }
        if segments.len() >= SEGMENTS_PER_TENANT_MAX {
            return None;
        }
        let segment = Arc::new(Segment::new(id));
        segments.insert(id, segment.clone());
        (self.follow)(self.shared.clone(), tenant.clone(), segment.clone());
        Some(segment)
    }

    /// Every followed segment of every tenant.
    pub fn all_segments(&self) -> Vec<(Arc<Tenant>, Arc<Segment>)> {
        let tenants: Vec<Arc<Tenant>> = self.map.locked().values().cloned().collect();
        tenants
            .into_iter()
            .flat_map(|t| t.segments().into_iter().map(move |s| (t.clone(), s)))
            .collect()
    }

    pub fn status(&self) -> StatusDoc {
        let mut tenants: Vec<Arc<Tenant>> = self.map.locked().values().cloned().collect();
        tenants.sort_by_key(|t| t.id);
        let cache = &self.shared.cache;
        StatusDoc {
            id: self.shared.config.id.clone(),
            object_store: crate::remote::redact_url(&self.shared.config.object_store),
            cache: CacheStatus {
                pages: cache.len(),
                capacity: cache.capacity(),
                hits: cache.hits(),
                misses: cache.misses(),
            },
            tenant_count: tenants.len(),
            segment_count: tenants.iter().map(|t| t.segments().len()).sum(),
            tenants: tenants
                .iter()
                .map(|t| TenantStatus {
                    tenant: t.id.to_string(),
                    vouched_vdl: t.vouched().lsn,
                    vouched_epoch: t.vouched().epoch,
                    file_bytes: t.pages.file_bytes(),
                    live_bytes: t.pages.live_bytes(),
                    disk_cache_bytes: self.shared.config.disk_cache_bytes,
                    pages_evicted: t.pages.pages_evicted(),
                    segments: t
                        .segments()
                        .iter()
                        .map(|s| SegmentStatusDoc {
                            segment: s.id.0,
                            caught_up_to: s.caught_up_to(),
                            vouched_vdl: t.vouched().lsn,
                            waiting_for: *s.wanted.borrow(),
                            counts: t.pages.segment_counts(s.id),
                            follow: s.status.locked().clone(),
                            checkpoint: s.checkpoint_status(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// `GET /status`.
#[derive(Debug, Serialize)]
pub struct StatusDoc {
    pub id: String,
    /// Where checkpoints go (credentials left out).
    pub object_store: String,
    pub cache: CacheStatus,
    /// How many tenants this pageserver has attached.
    pub tenant_count: usize,
    /// How many segments it follows, over all tenants.
    pub segment_count: usize,
    pub tenants: Vec<TenantStatus>,
}

#[derive(Debug, Serialize)]
pub struct CacheStatus {
    pub pages: usize,
    pub capacity: usize,
    pub hits: u64,
    pub misses: u64,
}

#[derive(Debug, Serialize)]
pub struct TenantStatus {
    pub tenant: String,
    pub vouched_vdl: Lsn,
    pub vouched_epoch: u64,
    /// The tenant's page file on disk, and the records its index names (compaction keeps the
    /// first within about twice the second: `crate::compaction`).
    pub file_bytes: u64,
    pub live_bytes: u64,
    /// `--disk-cache-bytes`, the page file's budget (`null`: none), and the pages evicted under
    /// it (a read fetches them again).
    pub disk_cache_bytes: Option<u64>,
    pub pages_evicted: u64,
    pub segments: Vec<SegmentStatusDoc>,
}

#[derive(Debug, Serialize)]
pub struct SegmentStatusDoc {
    pub segment: u32,
    pub caught_up_to: Lsn,
    pub vouched_vdl: Lsn,
    /// The highest LSN a GetPage waits for now (0: none waits).
    pub waiting_for: Lsn,
    #[serde(flatten)]
    pub counts: SegmentCounts,
    #[serde(flatten)]
    pub follow: FollowStatus,
    pub checkpoint: CheckpointStatus,
}

/// Bytes of the files under `dir` (best effort: what can be read).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
