//! The HTTP endpoints: `GET /status` (JSON per tenant and segment), `GET /metrics` (Prometheus
//! text), `GET /healthz`.

use crate::tenant::{StatusDoc, Tenants};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

pub fn router(tenants: Arc<Tenants>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(tenants)
}

async fn status(State(tenants): State<Arc<Tenants>>) -> Json<StatusDoc> {
    Json(tenants.status())
}

async fn metrics(State(tenants): State<Arc<Tenants>>) -> impl IntoResponse {
    let shared = tenants.shared();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(&shared.cache),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}
