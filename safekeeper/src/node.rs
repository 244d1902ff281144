//! What each request means, independent of sockets: the safekeeper node as a whole.

use crate::error::SkError;
use crate::log_writer::{ErrorReturn, LogWriter};
use crate::metrics::inc;
use crate::records::parse_records;
use crate::store::{Store, LOG_READ_BYTES_MAX};
use borealis_core::{EpochStart, Lsn, SegmentId, TenantId};
use borealis_wire::{Body, Envelope};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The longest a `ReadLog` may wait for records to arrive.
pub const READ_WAIT_MS_MAX: u32 = 5_000;

/// A `ReadLog` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLogRequest {
    pub tenant: TenantId,
    pub segment: SegmentId,
    /// Answer only if the tenant's epoch is exactly this (gossip).
    pub epoch: Option<u64>,
    /// Answer only if the tenant's epoch is at least this (pageservers; 0: no check).
    pub min_epoch: u64,
    pub after: Lsn,
    pub upto: Lsn,
    pub max_bytes: u32,
    pub wait_ms: u32,
}

pub struct Node {
    pub id: String,
    pub store: Arc<Store>,
    pub writer: LogWriter,
}

impl Node {
    pub async fn hello(
        &self,
        tenant: TenantId,
        epoch: u64,
        epoch_start_lsn: Lsn,
        history: Vec<EpochStart>,
    ) -> Body {
        match self
            .writer
            .hello(tenant, epoch, epoch_start_lsn, history)
            .await
        {
            Ok(segments) => Body::HelloOk {
                epoch,
                segments,
                appends_refused: self.store.budget().refusing(),
            },
            Err(e) => e.to_body(),
        }
    }

    /// Validates an append and queues it for the log writer. Errors found here are returned;
    /// errors found by the writer go to `errors`. Waits when the writer's queue is full.
    #[allow(clippy::too_many_arguments)]
    pub async fn append(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        vdl: Lsn,
        records: Vec<u8>,
        errors: ErrorReturn,
    ) -> Result<(), SkError> {
        // An append without records is the writer telling us its VDL while it has nothing new
        // to ship (so pageservers can follow and checkpoint the tail); it is fenced like any
        // other append.
        let parsed = parse_records(&records).map_err(SkError::Corrupt);
        match parsed {
            Ok(parsed) => {
                self.writer
                    .append(tenant, segment, epoch, vdl, records, parsed, errors)
                    .await
            }
            Err(e) => {
                inc(&self.store.metrics().appends_refused_total, 1);
                Err(e)
            }
        }
    }

    /// Answers a `Trim`: `Trimmed { base }` once the trim point is durable.
    pub async fn trim(&self, tenant: TenantId, segment: SegmentId, epoch: u64, upto: Lsn) -> Body {
        match self.writer.trim(tenant, segment, epoch, upto).await {
            Ok(base) => Body::Trimmed { base },
            Err(e) => e.to_body(),
        }
    }

    /// Answers a `DropTenant`: `TenantDropped` once the tombstone is durable and the log gone.
    pub async fn drop_tenant(&self, tenant: TenantId) -> Body {
        match self.writer.drop_tenant(tenant).await {
            Ok(bytes_freed) => Body::TenantDropped {
                bytes_freed,
                objects_deleted: 0,
            },
            Err(e) => e.to_body(),
        }
    }

    /// Answers a `Fence`: `State` once the promise is durable. A rebuilding node records the
    /// promise too (a writer below it must be refused here as well) but answers `unavailable`:
    /// what it lacks proves nothing (as for `GetState`).
    pub async fn fence(&self, tenant: TenantId, epoch: u64) -> Body {
        let rebuilding = self.store.rebuilding();
        match self.writer.fence(tenant, epoch).await {
            Ok(_) if rebuilding => crate::error::SkError::Rebuilding.to_body(),
            Ok(state) => state,
            Err(e) => e.to_body(),
        }
    }

    pub fn get_state(&self, tenant: TenantId) -> Body {
        self.store.get_state(tenant)
    }

    pub fn summary(&self) -> Body {
        Body::Summary {
            segments: self.store.summary(),
        }
    }

    /// Answers a `ReadLog`, waiting (bounded) for records if there are none yet.
    pub async fn read_log(&self, req: ReadLogRequest) -> Body {
        let max_bytes = (req.max_bytes as usize).clamp(1, LOG_READ_BYTES_MAX);
        let wait = Duration::from_millis(u64::from(req.wait_ms.min(READ_WAIT_MS_MAX)));
        let deadline = tokio::time::Instant::now() + wait;
        // Subscribed before the first look, so a commit in between is not missed.
        let mut commits = self.store.subscribe_commits();
        loop {
            commits.borrow_and_update();
            let store = self.store.clone();
            let read = tokio::task::spawn_blocking(move || {
                store.read_log(
                    req.tenant,
                    req.segment,
                    (req.epoch, req.min_epoch),
                    (req.after, req.upto),
                    max_bytes,
                )
            })
            .await;
            let result = match read {
                Err(e) => return SkError::Internal(format!("read task failed: {e}")).to_body(),
                Ok(Err(e)) => return e.to_body(),
                Ok(Ok(r)) => r,
            };
            let found = !result.records.is_empty();
            let body = Body::Records {
                records: result.records,
                scl: result.scl,
                known_vdl: result.known_vdl,
            };
            if found || req.after >= req.upto {
                return body;
            }
            // Nothing yet: wait for the next commit anywhere, or give up at the deadline.
            if !matches!(
                tokio::time::timeout_at(deadline, commits.changed()).await,
                Ok(Ok(()))
            ) {
                return body;
            }
        }
    }
}

/// An answer to send back on a connection.
pub fn answer(request_id: u64, body: Body) -> Envelope {
    Envelope { request_id, body }
}

/// The sending side of a connection, for answers produced later.
pub type Outbox = mpsc::Sender<Envelope>;
