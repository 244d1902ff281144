//! The HTTP endpoints: `GET /status` (JSON per tenant and segment), `GET /metrics` (Prometheus
//! text), `GET /healthz`.

use crate::tenant::{StatusDoc, Tenants};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use borealis_auth::{bearer_is_operator, VerifyingKey};
use std::sync::Arc;

#[derive(Clone)]
struct AppState {
    tenants: Arc<Tenants>,
    /// Checks the operator's token: only the operator sees tenant ids on `/status`.
    key: VerifyingKey,
}

pub fn router(tenants: Arc<Tenants>, key: VerifyingKey) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AppState { tenants, key })
}

/// Tenants are listed only with the operator's storage token (`Authorization: Bearer
/// <keys/operator.token>`); `tenant_count` is always there.
async fn status(State(s): State<AppState>, headers: HeaderMap) -> Json<StatusDoc> {
    let mut status = s.tenants.status();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !bearer_is_operator(&s.key, authorization) {
        status.tenants.clear();
    }
    Json(status)
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let shared = s.tenants.shared();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(&shared.cache),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}
