//! Starting a tenant's writer: resume the epoch of its last writer, or recover.
//!
//! A writer that retires idle and settled (every record it assigned durable, not in limbo, not
//! failed) leaves the pool a [`ResumePoint`]; the tenant's next writer takes it (once) and says
//! `Hello` in that same epoch, which changes nothing on a member, instead of recovering the
//! volume under a new epoch. A member that installed or promised a newer epoch refuses it, and
//! the pool recovers in the same request. Why that is safe: RFC 0017. Points live in memory,
//! at most [`RESUME_POINTS_MAX`]; a restarted gateway recovers every tenant once.

use super::{Compute, ComputePool};
use crate::error::ApiError;
use crate::volume_writer::{ResumePoint, VolumeWriter};
use borealis_core::TenantId;
use borealis_utils::LockExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{info, warn};

/// Idle tenants whose writers' resume points the pool keeps at most (a few hundred bytes each).
/// Past it, another tenant's point is dropped; that tenant recovers on its next request.
const RESUME_POINTS_MAX: usize = 100_000;

impl ComputePool {
    /// Keeps where a writer that retired settled stopped, for the tenant's next writer (RFC
    /// 0017). Past [`RESUME_POINTS_MAX`] tenants another tenant's point goes (that tenant's next
    /// writer recovers), so the tenants that went idle last keep theirs.
    pub(super) fn keep_resume_point(&self, tenant: TenantId, point: ResumePoint) {
        let mut points = self.resume_points.locked();
        if points.len() >= RESUME_POINTS_MAX && !points.contains_key(&tenant) {
            if let Some(other) = points.keys().next().copied() {
                points.remove(&other);
            }
        }
        points.insert(tenant, point);
    }

    /// The writer: resumed from the epoch of the tenant's last writer if it retired settled
    /// (RFC 0017), else recovered anew; also if there is none or it failed (its compute goes
    /// with it).
    pub(super) fn ensure_writer(
        &self,
        tenant: TenantId,
        writer_slot: &mut Option<Arc<VolumeWriter>>,
        compute_slot: &mut Option<Compute>,
    ) -> Result<Arc<VolumeWriter>, ApiError> {
        if let Some(w) = writer_slot.as_ref() {
            if let Some(why) = w.failure() {
                info!(why = %why, "replacing failed writer");
                *compute_slot = None;
                *writer_slot = None;
            }
        }
        if let Some(w) = writer_slot.as_ref() {
            return Ok(w.clone());
        }
        let point = self.resume_points.locked().remove(&tenant);
        if let Some(point) = point {
            let epoch = point.epoch;
            match self
                .rt
                .block_on(VolumeWriter::resume(tenant, self.config.log.clone(), point))
            {
                Ok(w) => {
                    self.metrics.writer_resumes.fetch_add(1, Ordering::Relaxed);
                    *writer_slot = Some(w.clone());
                    return Ok(w);
                }
                Err(e) => {
                    self.metrics
                        .writer_resumes_failed
                        .fetch_add(1, Ordering::Relaxed);
                    info!(epoch, error = %e, "resuming the idle writer's epoch failed: recovering");
                }
            }
        }
        let w = self
            .rt
            .block_on(VolumeWriter::recover(tenant, self.config.log.clone()))
            .map_err(|e| {
                self.metrics
                    .recoveries_failed
                    .fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "recovery failed");
                ApiError::from_kind(e.kind(), e.to_string())
            })?;
        *writer_slot = Some(w.clone());
        Ok(w)
    }

    /// Drops the tenant's resume point (the tenant is deleted).
    pub(super) fn forget_resume_point(&self, tenant: TenantId) {
        self.resume_points.locked().remove(&tenant);
    }
}
