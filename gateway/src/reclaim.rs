//! Reclaiming a deleted tenant's storage.
//!
//! `DELETE /v1/tenants/{name}` answers as soon as the tenant is out of the registry (clients get
//! `not_found` from then on) and its compute is stopped. Its storage is still everywhere: the log
//! on six safekeepers, pages on the pageservers, checkpoints in object storage. This task drops
//! it, and keeps trying until every one of those nodes has confirmed:
//!
//! 1. **Pageservers first**, each sent `DropTenant`: it stops following the tenant (so nothing
//!    reads the log or uploads checkpoints after), removes its local files and deletes every
//!    object under `tenants/<id>/` in object storage. Every pageserver is asked, not only the
//!    one serving the tenant: any of them may hold a stale attachment.
//! 2. **Then the safekeepers**, each sent `DropTenant`: it writes a durable tombstone, then
//!    removes the tenant's log. The tombstone is what makes the order of the six irrelevant: a
//!    safekeeper that dropped the tenant never learns it back from a peer that has not yet.
//! 3. When all have answered `TenantDropped`, the tenant leaves the registry's `deleting` list.
//!
//! A node that is down or fails is retried with backoff ([`RETRY_MIN`] to [`RETRY_MAX`]), and
//! the `deleting` list is durable, so a gateway restart resumes where the reclaim stood (every
//! step is idempotent; which nodes had confirmed is not persisted, they are simply asked
//! again). Progress is logged per node and counted in `borealis_gateway_tenants_reclaiming` and
//! `borealis_gateway_tenants_reclaimed_total`.

use crate::metrics::Metrics;
use crate::storage_auth::StorageTokens;
use crate::tenants::{Deletion, Registry};
use borealis_core::TenantId;
use borealis_utils::RwLockExt;
use borealis_wire::{Body, Client, WireError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// The first wait before retrying a node that failed; it doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Connecting to a node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A safekeeper's answer: one fsynced tombstone and a directory removal.
pub const SAFEKEEPER_DROP_TIMEOUT: Duration = Duration::from_secs(10);
/// A pageserver's answer: stopping the tenant's tasks and deleting its objects, a page of keys
/// at a time.
pub const PAGESERVER_DROP_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a deleted tenant's storage lives.
#[derive(Clone, Debug)]
pub struct Nodes {
    pub pageservers: Vec<String>,
    pub safekeepers: Vec<String>,
    /// Mints the operator token `DropTenant` needs.
    pub tokens: Arc<StorageTokens>,
}

/// What the reclaim of one tenant has achieved so far (in memory only).
#[derive(Default)]
struct Progress {
    done: BTreeSet<String>,
    bytes_freed: u64,
    objects_deleted: u64,
}

/// Runs until the process stops: reclaims every tenant in the registry's `deleting` list.
/// `wake` is notified when a tenant is deleted.
pub async fn run(
    registry: Arc<RwLock<Registry>>,
    nodes: Nodes,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
) {
    let mut progress: BTreeMap<TenantId, Progress> = BTreeMap::new();
    let mut retry = RETRY_MIN;
    loop {
        let pending: Vec<Deletion> = registry.read_locked().deleting().to_vec();
        metrics
            .tenants_reclaiming
            .store(pending.len() as u64, Ordering::Relaxed);
        progress.retain(|id, _| pending.iter().any(|d| d.id == *id));
        let mut failed = false;
        for d in &pending {
            let p = progress.entry(d.id).or_default();
            if !reclaim_one(d, &nodes, p).await {
                failed = true;
                continue;
            }
            let persisted = registry.write_locked().reclaimed(d.id);
            match persisted {
                Ok(()) => {
                    metrics.tenants_reclaimed.fetch_add(1, Ordering::Relaxed);
                    info!(tenant = %d.id, name = %d.name, bytes_freed = p.bytes_freed,
                        objects_deleted = p.objects_deleted,
                        "deleted tenant's storage reclaimed on every pageserver and safekeeper");
                }
                Err(e) => {
                    failed = true;
                    warn!(tenant = %d.id, error = %e, "could not record a finished reclaim in the registry; retrying");
                }
            }
        }
        let still = registry.read_locked().deleting().len();
        metrics
            .tenants_reclaiming
            .store(still as u64, Ordering::Relaxed);
        if failed {
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = wake.notified() => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        } else {
            retry = RETRY_MIN;
            if still == 0 {
                wake.notified().await;
            }
        }
    }
}

/// One pass over the nodes that have not confirmed yet: pageservers, then (once all of them
/// have) safekeepers. Returns whether every node has confirmed.
async fn reclaim_one(d: &Deletion, nodes: &Nodes, p: &mut Progress) -> bool {
    let phases = [
        ("pageserver", &nodes.pageservers, PAGESERVER_DROP_TIMEOUT),
        ("safekeeper", &nodes.safekeepers, SAFEKEEPER_DROP_TIMEOUT),
    ];
    for (role, addrs, timeout) in phases {
        let mut all = true;
        for addr in addrs.iter() {
            let key = format!("{role} {addr}");
            if p.done.contains(&key) {
                continue;
            }
            match drop_on(addr, &nodes.tokens.operator(), d.id, timeout).await {
                Ok((bytes, objects)) => {
                    info!(tenant = %d.id, node = %addr, role, bytes_freed = bytes,
                        objects_deleted = objects, "deleted tenant dropped");
                    p.bytes_freed += bytes;
                    p.objects_deleted += objects;
                    p.done.insert(key);
                }
                Err(e) => {
                    all = false;
                    warn!(tenant = %d.id, node = %addr, role, error = %e,
                        "could not drop a deleted tenant yet; retrying");
                }
            }
        }
        if !all {
            // Safekeepers wait until no pageserver can read their log any more.
            return false;
        }
    }
    true
}

async fn drop_on(
    addr: &str,
    token: &str,
    tenant: TenantId,
    timeout: Duration,
) -> Result<(u64, u64), WireError> {
    let client = Client::connect(addr, token, CONNECT_TIMEOUT, None).await?;
    match client.call(Body::DropTenant { tenant }, timeout).await? {
        Body::TenantDropped {
            bytes_freed,
            objects_deleted,
        } => Ok((bytes_freed, objects_deleted)),
        other => Err(WireError::Unexpected(other.name().to_string())),
    }
}
