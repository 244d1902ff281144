//! The HTTP API v1 (docs/design.md §7): routes, authentication, JSON in and out.
//!
//! `POST /v1/tenants/{name}/sql` goes to the tenant's writer compute, or with `"replica": true`
//! to its reader ([`crate::compute_pool::reader`]), which answers at its read point (`"read_point"` in the
//! answer). A request may carry its own time limit, `"timeout_ms"` (at most the tenant's own
//! maximum, else `--statement-timeout-max`; without one `--statement-timeout` applies). The
//! admin routes, which create, show, change and delete tenants, are in [`tenants`]. With `Accept: application/vnd.apache.arrow.stream` the last statement's rows come
//! back as an Arrow IPC stream ([`crate::arrow_stream`]) instead of JSON; the LSNs then travel in
//! the `Borealis-Lsn` and `Borealis-Read-Point` headers. Errors are always JSON. A request with
//! an `Idempotency-Key` header takes effect at most once per key ([`idempotency`]).
//!
//! Every `.../sql` request is admitted against its tenant's and the gateway's budgets
//! ([`crate::budget`]) once its token is checked, and charged, at real memory cost, for its body,
//! its parameters, its rows and its encoded answer; it keeps its place until the answer's body
//! has been sent ([`HeldBody`]). Large bodies are parsed, and large answers encoded, on blocking
//! threads: the async workers that serve every tenant only move bytes. That work and the
//! tenant's statements on its writer take turns on the tenant's lane
//! ([`crate::budget::Admission::statement_lane`]).

use crate::arrow_stream::{self, accepts_arrow};
use crate::budget::{self, Admission, Budgets};
use crate::compute_pool::{ComputePool, Executed};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::tenants::{constant_time_eq, hash_token, Access, Registry, Tenant};
use crate::volume_writer::{LogError, Settled};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use borealis_core::quorum::PG_MEMBERS;
use borealis_core::Lsn;
use borealis_utils::RwLockExt;
use compute_abi::{ExecErrorKind, ExecRequest, ExecResponse, Statement, StatementResult, Value};
use futures::StreamExt;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value as Json_};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

/// Largest request body accepted (a batch of statements with their parameters).
pub const REQUEST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// An oversized body is read and thrown away up to this much before the `too_large` answer, so
/// that an ordinary client, still sending, gets the answer rather than a reset connection.
/// Beyond it the connection is closed.
pub const DRAIN_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Statements in one batch, at most.
pub const BATCH_STATEMENTS_MAX: usize = 10_000;
/// Result size (rows) one request may return before it fails with `too_large`.
pub const RESULT_BYTES_MAX: u32 = 32 * 1024 * 1024;
/// Response header carrying the LSN an Arrow answer depends on (`"lsn"` in JSON).
pub const LSN_HEADER: &str = "borealis-lsn";
/// Response header carrying a replica answer's read point (`"read_point"` in JSON).
pub const READ_POINT_HEADER: &str = "borealis-read-point";
/// A body larger than this is parsed on a blocking thread, not on an async worker.
const INLINE_BODY_BYTES_MAX: usize = 64 * 1024;
/// Rows with more values than this, or holding more bytes than [`INLINE_BODY_BYTES_MAX`], are
/// measured and encoded on a blocking thread, not on an async worker.
const INLINE_VALUES_MAX: usize = 4096;

/// A parsed `POST .../sql` body.
#[derive(Debug)]
pub struct SqlRequest {
    pub exec: ExecRequest,
    /// Serve from the tenant's reader at its read point, not from the writer.
    pub replica: bool,
}

pub struct AppState {
    pub registry: Arc<RwLock<Registry>>,
    /// Woken when a tenant is deleted: [`crate::reclaim`] drops its storage.
    pub reclaim: Arc<tokio::sync::Notify>,
    pub admin_token_sha256: String,
    pub pool: Arc<ComputePool>,
    /// Requests and bytes in flight, per tenant and in total ([`crate::budget`]).
    pub budgets: Arc<Budgets>,
    pub metrics: Arc<Metrics>,
}

pub mod idempotency;
mod tenants;

use tenants::{create_tenant, delete_tenant, get_tenant, list_tenants, update_tenant};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/v1/tenants/{name}",
            get(get_tenant).patch(update_tenant).delete(delete_tenant),
        )
        .route("/v1/tenants/{name}/sql", post(sql))
        .fallback(|| async { ApiError::not_found("no such route") })
        // Bodies are limited by `read_body`, which answers `too_large` in our error format.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn metrics(State(st): State<Arc<AppState>>) -> String {
    st.metrics.render()
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token> header"))?;
    let v = v
        .to_str()
        .map_err(|_| ApiError::unauthorized("malformed Authorization header"))?;
    v.strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))
}

fn is_admin(st: &AppState, token: &str) -> bool {
    constant_time_eq(&hash_token(token), &st.admin_token_sha256)
}

fn require_admin(st: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = bearer(headers)?;
    if is_admin(st, token) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("this route needs the admin token"))
    }
}

/// Reads a request body of at most [`REQUEST_BYTES_MAX`] bytes and parses it as JSON.
async fn body_json(body: Body) -> Result<Json_, ApiError> {
    let bytes = read_body(body, |_| Ok(())).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))
}

/// Reads a request body of at most [`REQUEST_BYTES_MAX`] bytes. `charge` is asked before the
/// buffer grows, for the bytes it grows by; once it refuses, the buffer is dropped, the rest of
/// the body drained like an oversized one's, and its error returned.
async fn read_body(
    body: Body,
    mut charge: impl FnMut(usize) -> Result<(), ApiError>,
) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    let mut refused = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("unreadable body: {e}")))?;
        seen += chunk.len();
        if seen <= REQUEST_BYTES_MAX && refused.is_none() {
            let needed = bytes.len() + chunk.len();
            if needed > bytes.capacity() {
                // Grows as a `Vec` does (doubling), but only once the growth is charged.
                let capacity = needed.max(bytes.capacity() * 2);
                if let Err(e) = charge(capacity - bytes.capacity()) {
                    refused = Some(e);
                    bytes = Vec::new();
                    continue;
                }
                bytes.reserve_exact(capacity - bytes.len());
            }
            bytes.extend_from_slice(&chunk);
        } else if seen > DRAIN_BYTES_MAX {
            break;
        }
    }
    if seen > REQUEST_BYTES_MAX {
        return Err(ApiError::too_large(format!(
            "request body of {seen}{} bytes exceeds the limit of {REQUEST_BYTES_MAX}",
            if seen > DRAIN_BYTES_MAX { "+" } else { "" }
        )));
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(bytes),
    }
}

async fn sql(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut route = "sql";
    let mut held = None;
    let r = run_sql(&st, &headers, &name, body, &mut route, &mut held).await;
    // The request keeps its place in the budgets until its answer has been sent.
    let r = r.map(|resp| match held {
        Some(held) => hold_until_sent(resp, held),
        None => resp,
    });
    finish(&st, route, started, r)
}

/// The tenant a `.../sql` request may use. The token is judged before the name is looked up
/// ([`Registry::authorize`]): a token that grants nothing is `unauthorized` whether or not the
/// tenant exists, another tenant's token is `forbidden` whether or not it exists, and only the
/// admin token learns `not_found` (docs/design.md §7, docs/security.md). The messages name the
/// tenant as the request did, never whether it exists.
fn authorize(st: &AppState, headers: &HeaderMap, name: &str) -> Result<Tenant, ApiError> {
    let token = bearer(headers)?;
    let token_hash = hash_token(token);
    let admin = constant_time_eq(&token_hash, &st.admin_token_sha256);
    let access = st
        .registry
        .read_locked()
        .authorize(name, &token_hash, admin);
    match access {
        Access::Granted(t) => Ok(t),
        Access::NotFound => Err(ApiError::not_found(format!("no tenant named {name:?}"))),
        Access::Forbidden => Err(ApiError::forbidden(format!(
            "this token does not grant access to tenant {name:?}"
        ))),
        Access::Unauthorized => Err(ApiError::unauthorized("invalid token")),
    }
}

async fn run_sql(
    st: &AppState,
    headers: &HeaderMap,
    name: &str,
    body: Body,
    route: &mut &'static str,
    held: &mut Option<Admission>,
) -> Result<Response, ApiError> {
    let tenant = authorize(st, headers, name)?;
    // Over the tenant's (or the gateway's) budget: refused before the body is even read.
    let held = held.insert(st.budgets.admit(tenant.id)?);
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(accepts_arrow);
    let key = idempotency::key(headers)?;
    let request = sql_request(body, held).await?;
    if let Some(ms) = request.exec.timeout_ms {
        let max = tenant.statement_timeout_max(st.pool.config().statement_timeout_max);
        if Duration::from_millis(u64::from(ms)) > max {
            let whose = match tenant.statement_timeout_max_ms {
                Some(_) => "this tenant's maximum",
                None => "this gateway's maximum (--statement-timeout-max)",
            };
            return Err(ApiError::bad_request(format!(
                "\"timeout_ms\" {ms} is above {whose} of {} ms",
                max.as_millis()
            )));
        }
    }
    if request.replica {
        if key.is_some() {
            return Err(ApiError::bad_request(
                "an Idempotency-Key is for writes, which a replica never runs: drop the key or \
                 \"replica\"",
            ));
        }
        *route = "sql_replica";
        let out = st.pool.execute_replica(tenant.id, request.exec).await?;
        let results = statement_results(hold_response(held, out.response, false).await?)?;
        return answer(results, out.read_point, Some(out.read_point), arrow, held).await;
    }
    let mut exec = request.exec;
    if let Some(key) = key {
        let retention = st.pool.config().idempotency_retention;
        exec.keyed = Some(idempotency::run(key, &exec, retention, SystemTime::now())?);
    }
    let request_bytes = held.held();
    // A request that shipped nothing runs at most twice: again when the writer it ran on failed
    // while its response waited (it wrote nothing, so running it on the next writer is safe).
    for attempt in 0..2 {
        // The tenant's statements take turns with its heavy parsing and encoding on its lane
        // ([`Admission::statement_lane`]): whatever it sends, it keeps one thread busy at a time.
        let lane = held.statement_lane().await;
        let executed = st.pool.execute(tenant.id, exec).await;
        drop(lane);
        let mut out = match executed? {
            Executed::Writer(out) => out,
            // The writer is in limbo: served read-only at the VDL, durable already.
            Executed::AtVdl(r) => {
                let results = statement_results(hold_response(held, r.response, false).await?)?;
                return answer(results, r.read_point, None, arrow, held).await;
            }
        };
        // The rows are held while the response waits: charged now. Those of a request that
        // shipped something are charged even over the budget (it may have taken effect).
        let response = std::mem::replace(&mut out.response, ExecResponse::Ok(Vec::new()));
        out.response = hold_response(held, response, out.shipped).await?;
        // Hold the response until everything it may depend on is durable (asynchronous commit).
        let timeout = st.pool.config().commit_timeout;
        let settled = match out.rerun {
            // It shipped nothing: if the commits it saw are caught by a lost write quorum, it
            // runs again at the VDL rather than wait for them.
            Some(_) => out.writer.wait_settled(out.depends_on, timeout).await,
            None => out
                .writer
                .wait_durable(out.depends_on, timeout)
                .await
                .map(Settled::Durable),
        };
        match settled {
            Ok(Settled::Durable(_)) => {
                let results = statement_results(out.response)?;
                // A keyed write answers with the lsn of the commit that recorded it, every time.
                let lsn = out.keyed.map_or(out.depends_on, |k| k.lsn);
                let mut resp = answer(results, lsn, None, arrow, held).await?;
                if out.keyed.is_some_and(|k| k.replayed) {
                    resp.headers_mut().insert(
                        idempotency::IDEMPOTENT_REPLAYED_HEADER,
                        HeaderValue::from_static("true"),
                    );
                }
                return Ok(resp);
            }
            Ok(Settled::QuorumLost) => {
                let request = out.rerun.expect("only a request that shipped nothing asks");
                discard(out.response).await;
                held.set(request_bytes);
                let lane = held.statement_lane().await;
                let r = st.pool.execute_at_vdl(tenant.id, request).await;
                drop(lane);
                let r = r?;
                let results = statement_results(hold_response(held, r.response, false).await?)?;
                return answer(results, r.read_point, None, arrow, held).await;
            }
            Err(LogError::Failed(_)) if attempt == 0 && out.rerun.is_some() => {
                exec = out.rerun.expect("checked");
                discard(out.response).await;
                held.set(request_bytes);
            }
            Err(e) => {
                st.metrics
                    .commits_unknown_outcome
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let reachable = out.writer.reachable_members();
                if out.writer.in_limbo() && !matches!(e, LogError::Failed(_)) {
                    // In limbo: the commit is on three members at most and nobody can settle it
                    // until a fourth returns. The writer keeps its epoch and serves reads.
                    let quorum = if reachable >= borealis_core::quorum::WRITE_QUORUM {
                        format!(
                            "the write quorum was lost while it was in flight and is back \
                             ({reachable} of {PG_MEMBERS} safekeepers writable now)"
                        )
                    } else {
                        format!(
                            "the write quorum is lost ({reachable} of {PG_MEMBERS} safekeepers \
                             writable)"
                        )
                    };
                    return Err(ApiError::unavailable(format!(
                        "{e}; {quorum}: the commit takes effect, or not, when it settles"
                    )));
                }
                out.writer.fail(e.to_string());
                return Err(ApiError::unavailable(e.to_string()));
            }
        }
    }
    Err(ApiError::unavailable(
        "the tenant's writer failed twice while the request waited; retry",
    ))
}

/// Reads, charges and parses a `.../sql` body ([`crate::budget`]): its bytes are charged as
/// they arrive, a bound on what parsing builds before it runs, then what the parsed request
/// holds. A large body is parsed on a blocking thread.
async fn sql_request(body: Body, held: &mut Admission) -> Result<SqlRequest, ApiError> {
    let bytes = read_body(body, |grown| held.charge(grown as u64, "the request body")).await?;
    let heavy = bytes.len() > INLINE_BODY_BYTES_MAX;
    let (bytes, bound) = off_worker(held, heavy, move || {
        let bound = budget::json_parse_bound(&bytes);
        (bytes, bound)
    })
    .await?;
    held.charge(bound, "parsing the request body")?;
    let (request, cost) = off_worker(held, heavy, move || {
        let json: Json_ = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("body is not valid JSON: {e}")))?;
        drop(bytes);
        let request = parse_request(&json)?;
        drop(json);
        let cost = budget::exec_request_cost(&request.exec);
        Ok::<_, ApiError>((request, cost))
    })
    .await??;
    // The body and its JSON are gone: the request holds its statements and parameters.
    held.set(cost);
    Ok(request)
}

/// Runs `f` here, or, if it is `heavy`, on a blocking thread once the tenant's lane for heavy
/// work is free ([`Admission::heavy_lane`]): the async workers never run it, and a tenant's heavy
/// work runs one piece at a time.
async fn off_worker<T: Send + 'static>(
    held: &Admission,
    heavy: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    if !heavy {
        return Ok(f());
    }
    let lane = held.heavy_lane().await;
    tokio::task::spawn_blocking(move || {
        let _lane = lane;
        f()
    })
    .await
    .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))
}

/// Whether measuring or encoding `results` is too much work for an async worker.
fn heavy(results: &Vec<StatementResult>) -> bool {
    budget::results_values(results) > INLINE_VALUES_MAX
        || budget::results_cost(results) > INLINE_BODY_BYTES_MAX as u64
}

/// Charges the rows of `response` at their real memory cost. Refused (`rate_limited`, the rows
/// dropped at once) when they do not fit the budgets, unless the request `took_effect`: then
/// they are charged over the budget, since "retry" would be a lie about a write that happened.
async fn hold_response(
    held: &mut Admission,
    response: ExecResponse,
    took_effect: bool,
) -> Result<ExecResponse, ApiError> {
    let ExecResponse::Ok(results) = &response else {
        return Ok(response);
    };
    let (response, cost) = off_worker(held, heavy(results), move || {
        let cost = match &response {
            ExecResponse::Ok(results) => budget::results_cost(results),
            _ => 0,
        };
        (response, cost)
    })
    .await?;
    if took_effect {
        held.force(cost);
        return Ok(response);
    }
    match held.charge(cost, "the rows returned") {
        Ok(()) => Ok(response),
        Err(e) => {
            discard(response).await;
            Err(e)
        }
    }
}

/// Drops a response, on a blocking thread if freeing it is much work.
async fn discard(response: ExecResponse) {
    if let ExecResponse::Ok(results) = &response {
        if heavy(results) {
            tokio::task::spawn_blocking(move || drop(response));
        }
    }
}

/// The answer to a successful request: JSON, or the last statement's rows as Arrow. Large rows
/// are encoded on a blocking thread; the request then holds the encoded answer only.
async fn answer(
    results: Vec<StatementResult>,
    lsn: Lsn,
    read_point: Option<Lsn>,
    arrow: bool,
    held: &mut Admission,
) -> Result<Response, ApiError> {
    let body = off_worker(held, heavy(&results), move || {
        encode_answer(results, lsn, read_point, arrow)
    })
    .await??;
    held.set(body.capacity() as u64);
    let content_type = if arrow {
        arrow_stream::CONTENT_TYPE
    } else {
        "application/json"
    };
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    if arrow {
        let h = resp.headers_mut();
        h.insert(LSN_HEADER, HeaderValue::from(lsn.0));
        if let Some(rp) = read_point {
            h.insert(READ_POINT_HEADER, HeaderValue::from(rp.0));
        }
    }
    Ok(resp)
}

/// The body of a successful answer. JSON is written straight from the rows, with no
/// `serde_json::Value` tree in between (which would take 32 bytes per value more).
fn encode_answer(
    results: Vec<StatementResult>,
    lsn: Lsn,
    read_point: Option<Lsn>,
    arrow: bool,
) -> Result<Vec<u8>, ApiError> {
    if !arrow {
        let answer = AnswerJson {
            results: &results,
            lsn,
            read_point,
        };
        return serde_json::to_vec(&answer)
            .map_err(|e| ApiError::internal(format!("encoding the answer as JSON failed: {e}")));
    }
    let last = results
        .last()
        .ok_or_else(|| ApiError::internal("the compute returned no statement results"))?;
    arrow_stream::encode(last)
        .map_err(|e| ApiError::internal(format!("encoding the rows as Arrow failed: {e}")))
}

/// An answer's body that keeps its request's [`Admission`] (its place in the budgets and the
/// bytes charged for the body) until the body has been sent, or dropped with its connection.
struct HeldBody {
    body: Body,
    _held: Admission,
}

impl http_body::Body for HeldBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn hold_until_sent(resp: Response, held: Admission) -> Response {
    resp.map(|body| Body::new(HeldBody { body, _held: held }))
}

/// The statements' results, or the error the guest reported, in API form.
fn statement_results(response: ExecResponse) -> Result<Vec<StatementResult>, ApiError> {
    match response {
        ExecResponse::Ok(results) => Ok(results),
        ExecResponse::Err(e) => Err(match e.kind {
            ExecErrorKind::Sql => ApiError::sql(statement_message(&e.message, e.statement)),
            ExecErrorKind::Invalid => {
                ApiError::bad_request(statement_message(&e.message, e.statement))
            }
            ExecErrorKind::TooLarge => {
                ApiError::too_large(statement_message(&e.message, e.statement))
            }
            ExecErrorKind::Storage => {
                ApiError::unavailable(statement_message(&e.message, e.statement))
            }
            ExecErrorKind::Conflict => ApiError::conflict(e.message),
        }),
        // The pool answers keyed runs as `Ok` once their lsn is noted; these never get here.
        ExecResponse::Recorded(_) | ExecResponse::Replayed { .. } => Err(ApiError::internal(
            "a keyed answer reached the API without its lsn",
        )),
    }
}

fn statement_message(message: &str, index: u32) -> String {
    format!("statement {index}: {message}")
}

fn finish<T: IntoResponse>(
    st: &AppState,
    route: &'static str,
    started: Instant,
    r: Result<T, ApiError>,
) -> Response {
    let resp = match r {
        Ok(v) => v.into_response(),
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(route, code = e.code, message = %e.message, "request failed");
            }
            e.into_response()
        }
    };
    st.metrics
        .observe_request(route, resp.status().as_u16(), started.elapsed());
    resp
}

/// `{"sql","params"}` or `{"batch":[...]}`, optionally with `"replica": true` and a time limit
/// of its own, `"timeout_ms"` (checked against `--statement-timeout-max` by the route) → a
/// [`SqlRequest`].
pub fn parse_request(body: &Json_) -> Result<SqlRequest, ApiError> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::bad_request("body must be a JSON object"))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "sql" | "params" | "batch" | "replica" | "timeout_ms"
        ) {
            return Err(ApiError::bad_request(format!("unknown field {key:?}")));
        }
    }
    let replica = match obj.get("replica") {
        None => false,
        Some(r) => r
            .as_bool()
            .ok_or_else(|| ApiError::bad_request("\"replica\" must be true or false"))?,
    };
    let exec = match (obj.get("sql"), obj.get("batch")) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give either \"sql\" or \"batch\", not both",
        )),
        (Some(_), None) => Ok(ExecRequest {
            statements: vec![parse_statement(obj)?],
            transaction: false,
            result_bytes_max: RESULT_BYTES_MAX,
            timeout_ms: None,
            keyed: None,
        }),
        (None, Some(b)) => {
            let items = b
                .as_array()
                .ok_or_else(|| ApiError::bad_request("\"batch\" must be an array"))?;
            if items.is_empty() || items.len() > BATCH_STATEMENTS_MAX {
                return Err(ApiError::bad_request(format!(
                    "\"batch\" must hold 1 to {BATCH_STATEMENTS_MAX} statements"
                )));
            }
            let statements = items
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let o = s.as_object().ok_or_else(|| {
                        ApiError::bad_request(format!("batch[{i}] must be an object"))
                    })?;
                    parse_statement(o)
                        .map_err(|e| ApiError::bad_request(format!("batch[{i}]: {}", e.message)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(ExecRequest {
                statements,
                transaction: true,
                result_bytes_max: RESULT_BYTES_MAX,
                timeout_ms: None,
                keyed: None,
            })
        }
        (None, None) => Err(ApiError::bad_request(
            "expected {\"sql\": ..., \"params\": [...]} or {\"batch\": [...]}",
        )),
    }?;
    let mut exec = exec;
    exec.timeout_ms = match obj.get("timeout_ms") {
        None | Some(Json_::Null) => None,
        Some(t) => Some(
            t.as_u64()
                .and_then(|ms| u32::try_from(ms).ok())
                .filter(|ms| *ms > 0)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "\"timeout_ms\" must be a whole number of milliseconds above 0",
                    )
                })?,
        ),
    };
    Ok(SqlRequest { exec, replica })
}

fn parse_statement(o: &Map<String, Json_>) -> Result<Statement, ApiError> {
    let sql = o
        .get("sql")
        .and_then(Json_::as_str)
        .ok_or_else(|| ApiError::bad_request("\"sql\" must be a string"))?;
    let params = match o.get("params") {
        None | Some(Json_::Null) => vec![],
        Some(Json_::Array(a)) => a.iter().map(json_to_value).collect::<Result<_, _>>()?,
        Some(_) => return Err(ApiError::bad_request("\"params\" must be an array")),
    };
    Ok(Statement {
        sql: sql.to_string(),
        params,
    })
}

fn json_to_value(v: &Json_) -> Result<Value, ApiError> {
    Ok(match v {
        Json_::Null => Value::Null,
        Json_::Bool(b) => Value::Integer(i64::from(*b)),
        Json_::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(
                n.as_f64()
                    .ok_or_else(|| ApiError::bad_request(format!("number {n} out of range")))?,
            ),
        },
        Json_::String(s) => Value::Text(s.clone()),
        Json_::Object(o) if o.len() == 1 && o.contains_key("base64") => {
            let s = o["base64"]
                .as_str()
                .ok_or_else(|| ApiError::bad_request("\"base64\" must be a string"))?;
            Value::Blob(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| ApiError::bad_request(format!("bad base64: {e}")))?,
            )
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unsupported parameter {other}: use a number, string, null or {{\"base64\": ...}}"
            )))
        }
    })
}

/// A successful JSON answer, `{"lsn", "read_point"?, "results"}`, serialized straight from the
/// rows (keys in the order a `serde_json::Map` would sort them).
struct AnswerJson<'a> {
    results: &'a [StatementResult],
    lsn: Lsn,
    read_point: Option<Lsn>,
}

impl Serialize for AnswerJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("lsn", &self.lsn.0)?;
        if let Some(rp) = self.read_point {
            m.serialize_entry("read_point", &rp.0)?;
        }
        m.serialize_entry("results", &ResultsJson(self.results))?;
        m.end()
    }
}

struct ResultsJson<'a>(&'a [StatementResult]);

impl Serialize for ResultsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ResultJson))
    }
}

/// `{"columns", "last_insert_rowid", "rows", "rows_affected"}`.
struct ResultJson<'a>(&'a StatementResult);

impl Serialize for ResultJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("columns", &r.columns)?;
        m.serialize_entry("last_insert_rowid", &r.last_insert_rowid)?;
        m.serialize_entry("rows", &RowsJson(&r.rows))?;
        m.serialize_entry("rows_affected", &r.rows_affected)?;
        m.end()
    }
}

struct RowsJson<'a>(&'a [Vec<Value>]);

impl Serialize for RowsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|row| RowJson(row.as_slice())))
    }
}

struct RowJson<'a>(&'a [Value]);

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ValueJson))
    }
}

/// A value as the contract renders it: a REAL that is not finite as `null`, a BLOB as
/// `{"base64": ...}`.
struct ValueJson<'a>(&'a Value);

impl Serialize for ValueJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(f) if f.is_finite() => s.serialize_f64(*f),
            Value::Real(_) => s.serialize_unit(),
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(b),
                )?;
                m.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value_json(v: &Value) -> Json_ {
        serde_json::to_value(ValueJson(v)).unwrap()
    }

    /// The answer as it was built before it was streamed: a `serde_json::Value` tree.
    fn tree_answer(results: &[StatementResult], lsn: Lsn, read_point: Option<Lsn>) -> Json_ {
        let tree_value = |v: &Value| match v {
            Value::Null => Json_::Null,
            Value::Integer(i) => json!(i),
            Value::Real(f) => serde_json::Number::from_f64(*f)
                .map(Json_::Number)
                .unwrap_or(Json_::Null),
            Value::Text(s) => json!(s),
            Value::Blob(b) => {
                json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)})
            }
        };
        let mut body = json!({
            "results": results.iter().map(|r| json!({
                "columns": r.columns,
                "rows": r.rows.iter().map(|row| row.iter().map(tree_value).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "rows_affected": r.rows_affected,
                "last_insert_rowid": r.last_insert_rowid,
            })).collect::<Vec<_>>(),
            "lsn": lsn.0,
        });
        if let Some(rp) = read_point {
            body["read_point"] = json!(rp.0);
        }
        body
    }

    #[test]
    fn streamed_answers_are_byte_for_byte_the_tree_they_replace() {
        let results = vec![
            StatementResult {
                columns: vec!["a".into(), "b \"q\"".into()],
                rows: vec![
                    vec![Value::Integer(-3), Value::Real(2.0)],
                    vec![
                        Value::Real(f64::INFINITY),
                        Value::Text("x\u{1}\"\\é".into()),
                    ],
                    vec![Value::Blob(vec![0, 1, 255]), Value::Null],
                    vec![Value::Real(1e300), Value::Real(-0.5)],
                ],
                rows_affected: 0,
                last_insert_rowid: None,
            },
            StatementResult {
                columns: vec![],
                rows: vec![],
                rows_affected: 2,
                last_insert_rowid: Some(7),
            },
        ];
        for read_point in [None, Some(Lsn(9))] {
            let streamed = encode_answer(results.clone(), Lsn(42), read_point, false).unwrap();
            let tree = serde_json::to_vec(&tree_answer(&results, Lsn(42), read_point)).unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(tree).unwrap()
            );
        }
    }

    #[test]
    fn parses_single_and_batch() {
        let r = parse_request(
            &json!({"sql": "SELECT ?", "params": [1, 2.5, "x", null, {"base64": "AAE="}, true]}),
        )
        .unwrap();
        assert!(!r.replica);
        let r = r.exec;
        assert!(!r.transaction);
        assert_eq!(
            r.statements[0].params,
            vec![
                Value::Integer(1),
                Value::Real(2.5),
                Value::Text("x".into()),
                Value::Null,
                Value::Blob(vec![0, 1]),
                Value::Integer(1)
            ]
        );
        let b = parse_request(
            &json!({"batch": [{"sql": "A"}, {"sql": "B", "params": []}], "replica": true}),
        )
        .unwrap();
        assert!(b.replica);
        assert!(b.exec.transaction);
        assert_eq!(b.exec.statements.len(), 2);
        assert_eq!(b.exec.timeout_ms, None);
        let t = parse_request(&json!({"sql": "x", "timeout_ms": 60000})).unwrap();
        assert_eq!(t.exec.timeout_ms, Some(60_000));
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("5s"),
            json!(1u64 << 40),
        ] {
            let e = parse_request(&json!({"sql": "x", "timeout_ms": bad})).unwrap_err();
            assert!(e.message.contains("timeout_ms"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn rejects_malformed_bodies_clearly() {
        for (body, needle) in [
            (json!([1]), "JSON object"),
            (json!({}), "expected"),
            (json!({"sql": 1}), "string"),
            (json!({"sql": "x", "batch": []}), "not both"),
            (json!({"batch": []}), "1 to"),
            (
                json!({"sql": "x", "params": [[1]]}),
                "unsupported parameter",
            ),
            (json!({"sql": "x", "params": [{"base64": "!!"}]}), "base64"),
            (json!({"sql": "x", "colour": 1}), "unknown field"),
            (json!({"sql": "x", "replica": "yes"}), "true or false"),
        ] {
            let e = parse_request(&body).unwrap_err();
            assert_eq!(e.code, "bad_request");
            assert!(e.message.contains(needle), "{body}: {}", e.message);
        }
    }

    #[test]
    fn values_render_as_the_contract_says() {
        assert_eq!(
            value_json(&Value::Blob(vec![0, 1])),
            json!({"base64": "AAE="})
        );
        assert_eq!(value_json(&Value::Real(f64::NAN)), Json_::Null);
        assert_eq!(value_json(&Value::Integer(-3)), json!(-3));
    }
}
