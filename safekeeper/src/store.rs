//! Every tenant held on this safekeeper's disk, under `DIR/tenants/<tenant hex>/`.

use crate::disk_budget::SharedDiskBudget;
use crate::error::SkError;
use crate::gossip::LocalTenant;
use crate::metrics::Metrics;
use crate::segment_log::fsync_dir;
use crate::tenant::{ReadResult, Tenant};
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_wire::{Body, SegmentSummary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;
use tracing::{info, warn};

pub struct Store {
    tenants_dir: PathBuf,
    tenants: Mutex<BTreeMap<TenantId, Arc<Tenant>>>,
    metrics: Arc<Metrics>,
    /// The log retained over all tenants, against `--disk-budget-bytes`.
    budget: Arc<SharedDiskBudget>,
    /// Bumped after every publish (group commit, truncation, repair): `ReadLog` waits on it.
    commits: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        if !tenants_dir.try_exists()? {
            std::fs::create_dir_all(&tenants_dir)?;
            fsync_dir(data_dir)?;
        }
        let mut tenants = BTreeMap::new();
        for entry in std::fs::read_dir(&tenants_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = match name.parse::<TenantId>() {
                Ok(id) if name.len() == 16 && entry.file_type()?.is_dir() => id,
                _ => {
                    warn!(entry = %name, "ignoring unknown entry in the tenants directory");
                    continue;
                }
            };
            let tenant = Tenant::open(&entry.path(), id, metrics.clone(), budget.clone())?;
            let retained_bytes = tenant.retained_bytes();
            tenant.with_published(|p| {
                info!(tenant = %id, epoch = p.epoch, segments = p.segments.len(), retained_bytes, "opened tenant");
            });
            tenants.insert(id, Arc::new(tenant));
        }
        Ok(Store {
            tenants_dir,
            tenants: Mutex::new(tenants),
            metrics,
            budget,
            commits: watch::channel(0).0,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn budget(&self) -> &Arc<SharedDiskBudget> {
        &self.budget
    }

    pub fn tenant(&self, id: TenantId) -> Option<Arc<Tenant>> {
        lock(&self.tenants).get(&id).cloned()
    }

    /// The tenant, created on disk if new. Only the log writer calls this (tenants are created by
    /// a `Hello`, from a writer or learnt through gossip).
    pub fn tenant_or_create(&self, id: TenantId) -> Result<Arc<Tenant>, SkError> {
        if let Some(t) = self.tenant(id) {
            return Ok(t);
        }
        let tenant = Arc::new(Tenant::create(
            &self.tenants_dir.join(id.to_string()),
            id,
            self.metrics.clone(),
            self.budget.clone(),
        )?);
        lock(&self.tenants).insert(id, tenant.clone());
        Ok(tenant)
    }

    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        lock(&self.tenants).values().cloned().collect()
    }

    pub fn note_commit(&self) {
        self.commits.send_modify(|n| *n += 1);
    }

    pub fn subscribe_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// Answer to `GetState`: an unknown tenant is epoch 0 with no segments.
    pub fn get_state(&self, id: TenantId) -> Body {
        match self.tenant(id) {
            None => Body::State {
                epoch: 0,
                epoch_start_lsn: Lsn::INVALID,
                history: vec![],
                known_vdl: Lsn::INVALID,
                segments: vec![],
            },
            Some(t) => t.with_published(|p| Body::State {
                epoch: p.epoch,
                epoch_start_lsn: p.epoch_start_lsn,
                history: p.history.clone(),
                known_vdl: p.known_vdl,
                segments: p.segments.values().map(|s| s.state.clone()).collect(),
            }),
        }
    }

    /// Answer to `GossipSummary`: every segment's durable SCL.
    pub fn summary(&self) -> Vec<SegmentSummary> {
        let mut out = Vec::new();
        for t in self.tenants() {
            t.with_published(|p| {
                out.extend(p.segments.values().map(|s| SegmentSummary {
                    tenant: t.id(),
                    segment: s.state.segment,
                    epoch: p.epoch,
                    scl: s.state.scl,
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
                    scl: p
                        .segments
                        .iter()
                        .map(|(s, st)| (*s, st.state.scl))
                        .collect(),
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
            None => Ok(ReadResult::default()),
            Some(t) => t.read_log(segment, epochs, range.0, range.1, max_bytes),
        }
    }
}
