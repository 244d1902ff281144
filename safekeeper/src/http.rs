//! The admin HTTP server: `/status` (JSON), `/metrics` (Prometheus text), `/healthz`.

use crate::store::Store;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use borealis_auth::{bearer_is_operator, VerifyingKey};
use serde::Serialize;
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    id: String,
    store: Arc<Store>,
    /// Checks the operator's token: only the operator sees tenant ids on `/status`.
    key: VerifyingKey,
}

/// `GET /status`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub id: String,
    /// `--disk-budget-bytes`.
    pub disk_budget_bytes: u64,
    /// Bytes of segment files on disk, over all tenants: what the budget is held against.
    pub retained_log_bytes: u64,
    /// Whether writers' appends were refused for the budget and trims have not made room for
    /// them yet.
    pub disk_budget_exhausted: bool,
    /// Whether it rebuilds after its disk was replaced: it refuses `GetState` until it holds
    /// what its peers hold ([`crate::rebuild`]).
    pub rebuilding: bool,
    /// How many tenants this safekeeper holds.
    pub tenant_count: usize,
    /// How many segments it holds, over all tenants (each a member of its protection group).
    pub segment_count: usize,
    /// Each tenant's state; empty unless the request carried the operator's storage token
    /// (`Authorization: Bearer <keys/operator.token>`): tenant ids are not for everyone.
    pub tenants: Vec<TenantStatus>,
}

#[derive(Debug, Serialize)]
pub struct TenantStatus {
    /// The tenant id in hex, as in the data directory.
    pub tenant: String,
    pub epoch: u64,
    pub epoch_start_lsn: u64,
    pub known_vdl: u64,
    pub segments: Vec<SegmentStatus>,
}

#[derive(Debug, Serialize)]
pub struct SegmentStatus {
    pub segment: u32,
    pub scl: u64,
    pub last_cpl: u64,
    pub end_lsn: u64,
    /// Size of the segment file.
    pub bytes: u64,
    /// Stretches of missing records above the SCL.
    pub holes: usize,
    /// Where the log was trimmed after a pageserver checkpointed it, or the peer's trim point
    /// this member adopted when it was behind it (0: never): every record at or below it is
    /// dropped from (or was never fetched by) this safekeeper.
    pub base: u64,
}

pub fn router(id: String, store: Arc<Store>, key: VerifyingKey) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(AppState { id, store, key })
}

pub fn status_of(id: &str, store: &Store) -> Status {
    let tenants: Vec<TenantStatus> = store
        .tenants()
        .into_iter()
        .map(|t| {
            t.with_published(|p| TenantStatus {
                tenant: t.id().to_string(),
                epoch: p.epoch,
                epoch_start_lsn: p.epoch_start_lsn.0,
                known_vdl: p.known_vdl.0,
                segments: p
                    .segments
                    .iter()
                    .map(|(id, s)| SegmentStatus {
                        segment: id.0,
                        scl: s.scl.0,
                        last_cpl: s.last_cpl.0,
                        end_lsn: s.end_lsn.0,
                        bytes: p.bytes.get(id).copied().unwrap_or(0),
                        holes: s.holes,
                        base: s.base.0,
                    })
                    .collect(),
            })
        })
        .collect();
    let budget = store.budget().snapshot();
    Status {
        id: id.to_string(),
        disk_budget_bytes: budget.budget_bytes,
        retained_log_bytes: budget.retained_bytes,
        disk_budget_exhausted: budget.exhausted,
        rebuilding: store.rebuilding(),
        tenant_count: tenants.len(),
        segment_count: tenants.iter().map(|t| t.segments.len()).sum(),
        tenants,
    }
}

async fn status(State(s): State<AppState>, headers: HeaderMap) -> Json<Status> {
    let mut status = status_of(&s.id, &s.store);
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !bearer_is_operator(&s.key, authorization) {
        status.tenants.clear();
    }
    Json(status)
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.store.metrics().render(),
    )
}
