//! The admin routes of the HTTP API v1 (docs/design.md §7): create, list, show, change and
//! delete tenants. Every one needs the admin token. The SQL path is in the parent module.

use super::{body_json, finish, require_admin, AppState};
use crate::error::ApiError;
use crate::tenants::{validate_name, Tenant, TIMEOUT_MAX_MS_MIN};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use borealis_utils::RwLockExt;
use serde_json::{json, Map, Value as Json_};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) async fn create_tenant(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let r = async {
        require_admin(&st, &headers)?;
        let body = body_json(body).await?;
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::bad_request("expected {\"name\": \"<tenant>\"}"))?;
        refuse_other_keys(obj, &["name", "statement_timeout_max_ms"])?;
        let name = obj
            .get("name")
            .and_then(Json_::as_str)
            .ok_or_else(|| ApiError::bad_request("expected {\"name\": \"<tenant>\"}"))?;
        validate_name(name).map_err(ApiError::bad_request)?;
        let timeout_max_ms = match obj.get("statement_timeout_max_ms") {
            Some(v) => parse_timeout_max(v)?,
            None => None,
        };
        let created = st
            .registry
            .write_locked()
            .create(name, timeout_max_ms)
            .map_err(|e| ApiError::internal(format!("could not persist the tenant: {e}")))?;
        let (tenant, token) =
            created.ok_or_else(|| ApiError::conflict(format!("tenant {name:?} already exists")))?;
        tracing::info!(tenant = %tenant.id, name = %tenant.name, "tenant created");
        Ok::<_, ApiError>((
            StatusCode::CREATED,
            Json(json!({"name": tenant.name, "token": token})),
        ))
    }
    .await;
    finish(&st, "create_tenant", started, r)
}

/// `PATCH /v1/tenants/{name}` (admin): changes a tenant's settings. The one setting today is
/// `"statement_timeout_max_ms"`: the longest `"timeout_ms"` its requests may ask for (`null`:
/// the gateway's `--statement-timeout-max` again). Answers the tenant as `GET` does.
pub(super) async fn update_tenant(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let r = async {
        require_admin(&st, &headers)?;
        let body = body_json(body).await?;
        let obj = body.as_object().ok_or_else(|| {
            ApiError::bad_request("expected {\"statement_timeout_max_ms\": <ms> | null}")
        })?;
        refuse_other_keys(obj, &["statement_timeout_max_ms"])?;
        let value = obj.get("statement_timeout_max_ms").ok_or_else(|| {
            ApiError::bad_request("expected {\"statement_timeout_max_ms\": <ms> | null}")
        })?;
        let timeout_max_ms = parse_timeout_max(value)?;
        let updated = st
            .registry
            .write_locked()
            .set_statement_timeout_max(&name, timeout_max_ms)
            .map_err(|e| ApiError::internal(format!("could not persist the tenant: {e}")))?;
        let t = updated.ok_or_else(|| ApiError::not_found(format!("no tenant named {name:?}")))?;
        tracing::info!(
            tenant = %t.id,
            name = %t.name,
            statement_timeout_max_ms = ?t.statement_timeout_max_ms,
            "tenant settings changed"
        );
        Ok::<_, ApiError>(Json(tenant_json(&st, &t)))
    }
    .await;
    finish(&st, "update_tenant", started, r)
}

/// Refuses a body with a key outside `allowed`, naming it: a misspelt setting must not be
/// silently ignored.
fn refuse_other_keys(obj: &Map<String, Json_>, allowed: &[&str]) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown key {k:?}; expected {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// A tenant's `"statement_timeout_max_ms"`: `null` (the gateway's maximum) or a whole number of
/// milliseconds from [`TIMEOUT_MAX_MS_MIN`] to `u32::MAX` (about 49 days).
fn parse_timeout_max(v: &Json_) -> Result<Option<u32>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    v.as_u64()
        .and_then(|ms| u32::try_from(ms).ok())
        .filter(|&ms| ms >= TIMEOUT_MAX_MS_MIN)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "\"statement_timeout_max_ms\" must be null or a whole number of milliseconds \
                 from {TIMEOUT_MAX_MS_MIN} to {}, not {v}",
                u32::MAX
            ))
        })
}

pub(super) async fn list_tenants(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let started = Instant::now();
    let r = (|| {
        require_admin(&st, &headers)?;
        let reg = st.registry.read_locked();
        let tenants: Vec<Json_> = reg.list().map(|t| tenant_json(&st, t)).collect();
        // Deleted tenants whose storage is still being reclaimed (`crate::reclaim`).
        let deleting: Vec<Json_> = reg
            .deleting()
            .iter()
            .map(|d| {
                json!({
                    "name": d.name,
                    "id": d.id.to_string(),
                    "deleted_at_unix_ms": d.deleted_at_unix_ms,
                })
            })
            .collect();
        Ok::<_, ApiError>(Json(json!({ "tenants": tenants, "deleting": deleting })))
    })();
    finish(&st, "list_tenants", started, r)
}

fn tenant_json(st: &AppState, t: &Tenant) -> Json_ {
    let (running, vdl, epoch) = st.pool.status(t.id);
    json!({
        "name": t.name,
        "id": t.id.to_string(),
        "compute": if running { "running" } else { "idle" },
        "vdl": vdl.0,
        "epoch": epoch,
        "replica_read_point": st.pool.replica_read_point(t.id).0,
        // Segment 0's: the one every volume has (each segment's is in `GET /v1/tenants/{name}`).
        "pageserver": st.pool.pageserver_for(t.id, borealis_core::SegmentId(0)),
        // The longest `"timeout_ms"` a request may ask for, and whose setting that is.
        "statement_timeout_max_ms": t
            .statement_timeout_max(st.pool.config().statement_timeout_max)
            .as_millis() as u64,
        "statement_timeout_max_from": if t.statement_timeout_max_ms.is_some() { "tenant" } else { "gateway" },
    })
}

fn lookup(st: &AppState, name: &str) -> Result<Tenant, ApiError> {
    st.registry
        .read_locked()
        .get(name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no tenant named {name:?}")))
}

/// How long `GET /v1/tenants/{name}` waits for each safekeeper's state.
const SEGMENT_VIEW_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn get_tenant(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let started = Instant::now();
    let r = async {
        require_admin(&st, &headers)?;
        let t = lookup(&st, &name)?;
        let mut v = tenant_json(&st, &t);
        // The segments that hold data, each with its protection group (six safekeepers of the
        // pool, in member order), its pageserver and every member's SCL (`null`: no answer, or
        // nothing held).
        let log = &st.pool.config().log;
        let views = crate::volume_writer::segment_views(t.id, log, SEGMENT_VIEW_TIMEOUT).await;
        let azs = borealis_core::placement::ordered_pool_azs(log.safekeepers.len())
            .map_err(ApiError::internal)?;
        v["segment_size_bytes"] = json!(log.layout.segment_size_bytes());
        v["segments"] = Json_::Array(
            views
                .iter()
                .map(|s| {
                    let group = borealis_core::placement::choose_group(t.id, s.segment, &azs);
                    json!({
                        "segment": s.segment.0,
                        "safekeepers": group.0.iter().map(|&n| &log.safekeepers[n]).collect::<Vec<_>>(),
                        "pageserver": st.pool.pageserver_for(t.id, s.segment),
                        "scls": group.0.iter().map(|&n| s.scls[n].map(|l| l.0)).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        );
        Ok::<_, ApiError>(Json(v))
    }
    .await;
    finish(&st, "get_tenant", started, r)
}

pub(super) async fn delete_tenant(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        require_admin(&st, &headers)?;
        let removed = st
            .registry
            .write_locked()
            .remove(&name)
            .map_err(|e| ApiError::internal(format!("could not persist the deletion: {e}")))?;
        let t = removed.ok_or_else(|| ApiError::not_found(format!("no tenant named {name:?}")))?;
        st.pool.stop(t.id);
        st.reclaim.notify_one();
        tracing::info!(tenant = %t.id, name = %t.name, "tenant deleted; its storage is reclaimed in the background");
        Ok::<_, ApiError>(StatusCode::NO_CONTENT)
    })();
    finish(&st, "delete_tenant", started, r)
}
