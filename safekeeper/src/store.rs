//! Every tenant held on this safekeeper's disk, under `DIR/tenants/<tenant hex>/`.
//!
//! ## Deleted tenants
//!
//! A deleted tenant leaves a **tombstone**, the empty file `DIR/dropped/<tenant hex>`, made
//! durable before any of its log is removed ([`Store::drop_tenant`]). From then on the tenant
//! can never come back on this member: a `Hello` (from a late writer, or from gossip learning the
//! tenant from a peer that has not dropped it yet) is refused, and so are appends and reads. A
//! drop interrupted by a crash is finished at the next open (a tenant directory under a
//! tombstone is removed). Tombstones stay for good: tenant ids are random 64-bit numbers and are
//! never reused, and a tombstone is a name in a directory (no data).

use crate::disk_budget::SharedDiskBudget;
use crate::error::SkError;
use crate::metrics::Metrics;
use crate::segment_log::fsync_dir;
use crate::tenant::{ReadResult, Tenant};
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_utils::LockExt;
use borealis_wire::{Body, SegmentSummary};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tracing::{info, warn};

/// The most entries one `ReadLsns` answer carries: 17 bytes each at most on the wire, so about
/// 1 MiB, well inside a frame.
pub const LSN_INDEX_ENTRIES_MAX: usize = 65_536;

/// The most record bytes one `ReadLog` answer carries: well below a frame's limit, so the
/// answer's envelope always fits.
pub const LOG_READ_BYTES_MAX: usize = 4 * 1024 * 1024;
const _: () = assert!(
    LOG_READ_BYTES_MAX + 64 * 1024 <= borealis_wire::FRAME_BYTES_MAX,
    "a ReadLog answer must fit in a frame"
);

/// Written by `borealis up` into a new safekeeper's data directory: "this node is new, it never
/// acknowledged anything". Removed once the log exists ([`crate::rebuild`]).
pub const NEW_NODE_MARKER: &str = "new-node";
/// Present while the safekeeper is rebuilding after its disk was replaced ([`crate::rebuild`]).
pub const REBUILDING_MARKER: &str = "rebuilding";

/// What gossip's planning needs to know of one local tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalTenant {
    pub epoch: u64,
    pub scl: BTreeMap<SegmentId, Lsn>,
}

pub struct Store {
    tenants_dir: PathBuf,
    /// `DIR/dropped`: one tombstone per deleted tenant.
    dropped_dir: PathBuf,
    tenants: Mutex<BTreeMap<TenantId, Arc<Tenant>>>,
    /// The tombstones, as in `dropped_dir`.
    dropped: Mutex<BTreeSet<TenantId>>,
    metrics: Arc<Metrics>,
    /// The log retained over all tenants, against `--disk-budget-bytes`.
    budget: Arc<SharedDiskBudget>,
    /// Bumped after every publish (group commit, truncation, repair): `ReadLog` waits on it.
    commits: watch::Sender<u64>,
    /// `DIR/rebuilding`, present while this node rebuilds after its disk was replaced
    /// ([`crate::rebuild`]); `rebuilding` mirrors it.
    rebuilding_marker: PathBuf,
    rebuilding: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (creating if needed) the data directory and every tenant in it, recovering each
    /// segment file (torn tails cut, corrupt records dropped, interrupted truncations finished).
    /// What the segment files hold then is counted in `budget`.
    pub fn open(
        data_dir: &Path,
        metrics: Arc<Metrics>,
        budget: Arc<SharedDiskBudget>,
    ) -> Result<Store, SkError> {
        let tenants_dir = data_dir.join("tenants");
        let dropped_dir = data_dir.join("dropped");
        // No log yet: a node `borealis up` created (it says so with a marker), or a node whose
        // disk was replaced, which must not testify until it is rebuilt ([`crate::rebuild`]).
        // The marker is made durable before the log exists, so a crash in between leaves it.
        let rebuilding_marker = data_dir.join(REBUILDING_MARKER);
        let new_node_marker = data_dir.join(NEW_NODE_MARKER);
        if !tenants_dir.try_exists()? && !new_node_marker.try_exists()? {
            warn!(
                data_dir = %data_dir.display(),
                "no log here and no {NEW_NODE_MARKER} marker: this node's disk was replaced; it \
                 rebuilds from its peers and is no witness of what its groups hold until it has"
            );
            std::fs::File::create(&rebuilding_marker)?.sync_all()?;
            fsync_dir(data_dir)?;
        }
        for dir in [&tenants_dir, &dropped_dir] {
            if !dir.try_exists()? {
                std::fs::create_dir_all(dir)?;
                fsync_dir(data_dir)?;
            }
        }
        let mut dropped = BTreeSet::new();
        for entry in std::fs::read_dir(&dropped_dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            match name.parse::<TenantId>() {
                Ok(id) if name.len() == 16 => {
                    dropped.insert(id);
                }
                _ => warn!(entry = %name, "ignoring unknown entry in the dropped directory"),
            }
        }
        let mut tenants = BTreeMap::new();
        // Listed whole first: finishing a drop below removes entries of this directory.
        let entries = std::fs::read_dir(&tenants_dir)?.collect::<Result<Vec<_>, _>>()?;
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = match name.parse::<TenantId>() {
                Ok(id) if name.len() == 16 && entry.file_type()?.is_dir() => id,
                _ => {
                    warn!(entry = %name, "ignoring unknown entry in the tenants directory");
                    continue;
                }
            };
            if dropped.contains(&id) {
                // A drop the process did not finish before it stopped.
                std::fs::remove_dir_all(entry.path())?;
                fsync_dir(&tenants_dir)?;
                info!(tenant = %id, "finished dropping a deleted tenant's log");
                continue;
            }
            let tenant = Tenant::open(&entry.path(), id, metrics.clone(), budget.clone())?;
            let retained_bytes = tenant.retained_bytes();
            tenant.with_published(|p| {
                info!(tenant = %id, epoch = p.epoch, segments = p.segments.len(), retained_bytes, "opened tenant");
            });
            tenants.insert(id, Arc::new(tenant));
        }
        if new_node_marker.try_exists()? {
            // The log exists now: a restart is an ordinary restart.
            std::fs::remove_file(&new_node_marker)?;
            fsync_dir(data_dir)?;
        }
        let rebuilding = rebuilding_marker.try_exists()?;
        if rebuilding {
            info!("rebuilding: GetState is refused until this node holds what its peers hold");
        }
        metrics
            .rebuilding
            .store(u64::from(rebuilding), std::sync::atomic::Ordering::Relaxed);
        Ok(Store {
            tenants_dir,
            dropped_dir,
            tenants: Mutex::new(tenants),
            dropped: Mutex::new(dropped),
            metrics,
            budget,
            commits: watch::channel(0).0,
            rebuilding_marker,
            rebuilding: std::sync::atomic::AtomicBool::new(rebuilding),
        })
    }

    /// Whether this node is rebuilding after its disk was replaced ([`crate::rebuild`]).
    pub fn rebuilding(&self) -> bool {
        self.rebuilding.load(std::sync::atomic::Ordering::Acquire)
    }

    /// This node holds again what its peers held: it testifies from now on. The marker is gone
    /// durably before the flag clears; a crash before that leaves the node rebuilding, and it
    /// takes one more gossip round to find it rebuilt.
    pub fn finish_rebuild(&self) -> std::io::Result<()> {
        if let Err(e) = std::fs::remove_file(&self.rebuilding_marker) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e);
            }
        }
        if let Some(dir) = self.rebuilding_marker.parent() {
            fsync_dir(dir)?;
        }
        self.rebuilding
            .store(false, std::sync::atomic::Ordering::Release);
        self.metrics
            .rebuilding
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn budget(&self) -> &Arc<SharedDiskBudget> {
        &self.budget
    }

    pub fn tenant(&self, id: TenantId) -> Option<Arc<Tenant>> {
        self.tenants.locked().get(&id).cloned()
    }

    /// The tenant, created on disk if new. Only the log writer calls this (tenants are created by
    /// a `Hello`, from a writer or learnt through gossip).
    pub fn tenant_or_create(&self, id: TenantId) -> Result<Arc<Tenant>, SkError> {
        if let Some(t) = self.tenant(id) {
            return Ok(t);
        }
        if self.is_dropped(id) {
            return Err(SkError::Dropped { tenant: id });
        }
        let tenant = Arc::new(Tenant::create(
            &self.tenants_dir.join(id.to_string()),
            id,
            self.metrics.clone(),
            self.budget.clone(),
        )?);
        self.tenants.locked().insert(id, tenant.clone());
        Ok(tenant)
    }

    /// Whether the tenant was deleted here (it has a tombstone).
    pub fn is_dropped(&self, id: TenantId) -> bool {
        self.dropped.locked().contains(&id)
    }

    /// Why a request for tenant `id`, which this member does not hold, is refused: deleted, or
    /// not announced by a `Hello` yet.
    pub fn absent(&self, id: TenantId, epoch: u64) -> SkError {
        if self.is_dropped(id) {
            SkError::Dropped { tenant: id }
        } else {
            SkError::HelloFirst {
                tenant: id,
                ours: 0,
                theirs: epoch,
            }
        }
    }

    /// Deletes tenant `id` for good: the tombstone is made durable first, then the tenant leaves
    /// the map (new requests are refused) and its directory is removed. Returns the bytes of log
    /// freed. Only the log writer calls this (a barrier: nothing of the tenant is queued behind
    /// it un-written, and nothing after it can recreate it). Idempotent.
    pub fn drop_tenant(&self, id: TenantId) -> Result<u64, SkError> {
        if !self.is_dropped(id) {
            let tombstone = self.dropped_dir.join(id.to_string());
            std::fs::File::create(&tombstone)?.sync_all()?;
            fsync_dir(&self.dropped_dir)?;
            self.dropped.locked().insert(id);
        }
        let Some(tenant) = self.tenants.locked().remove(&id) else {
            return Ok(0);
        };
        let freed = tenant.retained_bytes();
        let dir = self.tenants_dir.join(id.to_string());
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        fsync_dir(&self.tenants_dir)?;
        self.budget.release(freed);
        crate::metrics::inc(&self.metrics.tenants_dropped_total, 1);
        info!(tenant = %id, freed_bytes = freed, "dropped a deleted tenant: tombstone written, log removed");
        Ok(freed)
    }

    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.tenants.locked().values().cloned().collect()
    }

    pub fn note_commit(&self) {
        self.commits.send_modify(|n| *n += 1);
    }

    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Answer to `GetState`: an unknown tenant is epoch 0 with no segments; a deleted one is an
    /// error (a writer must not recover it from nothing). While this node rebuilds after its disk
    /// was replaced, every tenant's is `unavailable`: what it lacks is not evidence of absence.
    pub fn get_state(&self, id: TenantId) -> Body {
        if self.rebuilding() {
            return SkError::Rebuilding.to_body();
        }
        match self.tenant(id) {
            None if self.is_dropped(id) => SkError::Dropped { tenant: id }.to_body(),
            None => Body::State {
                epoch: 0,
                epoch_start_lsn: Lsn::INVALID,
                history: vec![],
                known_vdl: Lsn::INVALID,
                segments: vec![],
                promised_epoch: 0,
            },
            Some(t) => t.with_published(crate::tenant::state_of),
        }
    }

    /// Answer to `ReadLsns` (RFC 0008): a recovering writer's index of one segment, at most
    /// [`LSN_INDEX_ENTRIES_MAX`] entries per answer. An unknown tenant or segment holds nothing.
    pub fn read_lsns(
        &self,
        id: TenantId,
        segment: SegmentId,
        after: Lsn,
        upto: Lsn,
        max_entries: u32,
    ) -> Body {
        let max = (max_entries as usize).min(LSN_INDEX_ENTRIES_MAX);
        match self.tenant(id) {
            None if self.is_dropped(id) => SkError::Dropped { tenant: id }.to_body(),
            None => Body::Lsns {
                before: Lsn::INVALID,
                entries: Vec::new(),
                scl: Lsn::INVALID,
            },
            Some(t) => match t.read_lsns(segment, after, upto, max) {
                Ok((before, entries, scl)) => Body::Lsns {
                    before,
                    entries,
                    scl,
                },
                Err(e) => e.to_body(),
            },
        }
    }

    /// Answer to `GossipSummary`: every segment's durable SCL.
    pub fn summary(&self) -> Vec<SegmentSummary> {
        let mut out = Vec::new();
        for t in self.tenants() {
            t.with_published(|p| {
                out.extend(p.segments.iter().map(|(s, c)| SegmentSummary {
                    tenant: t.id(),
                    segment: *s,
                    epoch: p.epoch,
                    scl: c.scl,
                }));
            });
        }
        out
    }

    /// What gossip planning needs to know of this safekeeper.
    pub fn local_view(&self) -> BTreeMap<TenantId, LocalTenant> {
        self.tenants()
            .into_iter()
            .map(|t| {
                let view = t.with_published(|p| LocalTenant {
                    epoch: p.epoch,
                    scl: p.segments.iter().map(|(s, st)| (*s, st.scl)).collect(),
                });
                (t.id(), view)
            })
            .collect()
    }

    /// Reads records for `ReadLog` (blocking: file reads). `epochs` is the request's exact and
    /// minimum epoch. Unknown tenant or segment: nothing, SCL 0 (it holds nothing, so nothing
    /// stale either).
    pub fn read_log(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        epochs: (Option<u64>, u64),
        range: (Lsn, Lsn),
        max_bytes: usize,
    ) -> Result<ReadResult, SkError> {
        match self.tenant(tenant) {
            None if self.is_dropped(tenant) => Err(SkError::Dropped { tenant }),
            None => Ok(ReadResult::default()),
            Some(t) => t.read_log(segment, epochs, range.0, range.1, max_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::parse_records;
    use borealis_core::{EpochStart, ErrorKind, PAGE_SIZE_BYTES};
    use std::sync::atomic::Ordering;

    /// Opens `dir` as a new node's (the marker `borealis up` writes) unless it has a log.
    fn open(dir: &Path) -> Store {
        if !dir.join("tenants").exists() {
            std::fs::write(dir.join(NEW_NODE_MARKER), b"").unwrap();
        }
        open_as_found(dir)
    }

    fn open_as_found(dir: &Path) -> Store {
        let metrics = Arc::new(Metrics::default());
        let budget = Arc::new(SharedDiskBudget::new(
            "sk-test".into(),
            crate::disk_budget::DISK_BUDGET_BYTES_DEFAULT,
            metrics.clone(),
        ));
        Store::open(dir, metrics, budget).unwrap()
    }

    /// A tenant with an epoch and two durable records of segment 0.
    fn tenant_with_log(store: &Store, id: TenantId) {
        let t = store.tenant_or_create(id).unwrap();
        t.hello(
            1,
            Lsn(0),
            &[EpochStart {
                epoch: 1,
                start: Lsn(0),
            }],
        )
        .unwrap();
        let raw = crate::tenant::tests::encode(&[(1, 0), (2, 1)]);
        let parsed = parse_records(&raw).unwrap();
        t.append(SegmentId(0), 1, Lsn(2), &raw, &parsed).unwrap();
        t.commit(&[SegmentId(0)].into(), &BTreeSet::new()).unwrap();
    }

    #[test]
    fn a_dropped_tenant_is_gone_for_good_and_cannot_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let (gone, kept) = (TenantId(0xdead), TenantId(0xbeef));
        let store = open(dir.path());
        tenant_with_log(&store, gone);
        tenant_with_log(&store, kept);
        let retained = store.budget().snapshot().retained_bytes;
        let freed = store.drop_tenant(gone).unwrap();
        assert!(freed > 2 * PAGE_SIZE_BYTES as u64, "freed {freed} bytes");
        assert_eq!(
            store.budget().snapshot().retained_bytes,
            retained - freed,
            "the budget gets the bytes back"
        );
        assert!(!dir.path().join("tenants").join(gone.to_string()).exists());
        assert!(dir.path().join("dropped").join(gone.to_string()).exists());
        // Nothing brings it back: not a Hello (writer or gossip), not a read, not a recovery.
        assert!(matches!(
            store.tenant_or_create(gone),
            Err(SkError::Dropped { .. })
        ));
        assert!(matches!(
            store.read_log(gone, SegmentId(0), (None, 0), (Lsn(0), Lsn(9)), 1 << 20),
            Err(SkError::Dropped { .. })
        ));
        assert!(matches!(
            store.get_state(gone),
            Body::Error { ref message, .. } if message.contains("was deleted")
        ));
        assert!(matches!(store.absent(gone, 1), SkError::Dropped { .. }));
        assert_eq!(store.drop_tenant(gone).unwrap(), 0, "idempotent");
        // The other tenant is untouched.
        let r = store
            .read_log(kept, SegmentId(0), (None, 0), (Lsn(0), Lsn(9)), 1 << 20)
            .unwrap();
        assert_eq!(r.scl, Lsn(2));
        drop(store);

        // After a restart the tombstone still holds.
        let store = open(dir.path());
        assert!(store.is_dropped(gone));
        assert!(store.tenant(gone).is_none());
        assert!(store.tenant(kept).is_some());
        assert!(matches!(
            store.tenant_or_create(gone),
            Err(SkError::Dropped { .. })
        ));
    }

    #[test]
    fn a_node_without_a_log_or_a_new_node_marker_rebuilds_before_it_testifies() {
        // A new node: the marker goes once the log exists, and it testifies.
        let new = tempfile::tempdir().unwrap();
        let store = open(new.path());
        assert!(!store.rebuilding());
        assert!(!new.path().join(NEW_NODE_MARKER).exists());
        assert!(matches!(store.get_state(TenantId(1)), Body::State { .. }));
        drop(store);
        assert!(
            !open_as_found(new.path()).rebuilding(),
            "a restart is a restart"
        );

        // A replaced disk: no log, no marker.
        let replaced = tempfile::tempdir().unwrap();
        let store = open_as_found(replaced.path());
        assert!(store.rebuilding());
        assert_eq!(store.metrics().rebuilding.load(Ordering::Relaxed), 1);
        assert!(matches!(
            store.get_state(TenantId(1)),
            Body::Error { kind: ErrorKind::Unavailable, ref message } if message.contains("rebuilding")
        ));
        tenant_with_log(&store, TenantId(1));
        drop(store);
        // A crash while rebuilding: still rebuilding.
        let store = open_as_found(replaced.path());
        assert!(store.rebuilding());
        store.finish_rebuild().unwrap();
        assert!(!store.rebuilding());
        assert_eq!(store.metrics().rebuilding.load(Ordering::Relaxed), 0);
        assert!(matches!(
            store.get_state(TenantId(1)),
            Body::State { epoch: 1, .. }
        ));
        drop(store);
        assert!(
            !open_as_found(replaced.path()).rebuilding(),
            "rebuilt for good"
        );
    }

    #[test]
    fn a_drop_interrupted_after_its_tombstone_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let id = TenantId(0x1234);
        let store = open(dir.path());
        tenant_with_log(&store, id);
        drop(store);
        // The crash: tombstone durable, directory not removed yet.
        std::fs::write(dir.path().join("dropped").join(id.to_string()), b"").unwrap();
        let store = open(dir.path());
        assert!(store.tenant(id).is_none());
        assert!(!dir.path().join("tenants").join(id.to_string()).exists());
        assert_eq!(store.budget().snapshot().retained_bytes, 0);
    }
}
