//! Budgets: how much one tenant, and all tenants together, may have in flight in the gateway.
//!
//! A tenant with a valid token could otherwise exhaust the gateway: every request holds memory
//! (its body, the parsed parameters, the rows it returns, the encoded answer) from the moment it
//! is read until its answer has been sent, and a tenant's requests wait in its compute's queue
//! for as long as its statements take. Two kinds of budget, each per tenant and gateway-wide:
//!
//! | budget | flag (env) | default |
//! |---|---|---|
//! | requests in flight, per tenant | `--tenant-inflight-requests` (`BOREALIS_TENANT_INFLIGHT_REQUESTS`) | [`TENANT_INFLIGHT_REQUESTS_DEFAULT`] |
//! | requests in flight, in total | `--inflight-requests` (`BOREALIS_INFLIGHT_REQUESTS`) | [`INFLIGHT_REQUESTS_DEFAULT`] |
//! | bytes held for requests in flight, per tenant | `--tenant-inflight-bytes` (`BOREALIS_TENANT_INFLIGHT_BYTES`) | [`TENANT_INFLIGHT_BYTES_DEFAULT`] |
//! | bytes held for requests in flight, in total | `--inflight-bytes` (`BOREALIS_INFLIGHT_BYTES`) | [`INFLIGHT_BYTES_DEFAULT`] |
//!
//! A request is **admitted** ([`Budgets::admit`]) right after its token is checked, before its
//! body is read; over either request budget it is refused at once with `429 rate_limited` and
//! `Retry-After: 1`. Its [`Admission`] then travels with it, and is only given back when the
//! answer's body has been sent (or the client went away).
//!
//! **Bytes are charged at their real memory cost**, not at the size of their text: a body's
//! bytes as they arrive; before parsing, a bound on what `serde_json` will build from them
//! ([`json_parse_bound`]: a `serde_json::Value` is 32 bytes, an object a B-tree node of about
//! 630, so `[0,0,…]` costs 16 times its text and `{"base64":""}` 50 times); then the exact cost
//! of the parsed tree ([`json_cost`]) and of the request handed to the compute
//! ([`exec_request_cost`]); the rows the compute returns ([`results_cost`]: 32 bytes per value,
//! a vector per row, the heap of every text and blob); the encoded answer. A charge that does not
//! fit is refused with `rate_limited` while nothing of the request has taken effect (the memory
//! is freed at once); one that could never fit, even in an empty budget, is `too_large`. Rows of
//! a request that **took effect** (a write with `RETURNING`) are charged even over the budget —
//! refusing them would tell the client "retry" about a committed write — and then hold off
//! other requests of the tenant until they are sent.
//!
//! **CPU: one lane per tenant.** A tenant's statements on its writer compute (together: they run
//! on the compute's one thread) and each piece of its heavy work off the async workers (parsing
//! a large body, measuring and encoding large rows, on blocking threads) take turns on the
//! tenant's lane ([`Admission::statement_lane`], [`Admission::heavy_lane`]), so one tenant keeps at most
//! one thread busy, however many requests it sends: on a small machine, its flood of large
//! answers cannot take every core from the others (`tests/tests/fairness.rs`). The tenant's
//! reader (`"replica": true`) is a second compute by design and runs outside the lane.
//!
//! Requests of other tenants are unaffected by one tenant's budget, until the gateway-wide
//! budgets are reached.

use crate::error::ApiError;
use crate::metrics::Metrics;
pub use crate::metrics::Refusal;
use borealis_core::TenantId;
use borealis_utils::LockExt;
use compute_abi::{ExecRequest, StatementResult, Value};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// Requests one tenant may have in flight at once: room for a connection pool of a hundred or
/// so clients (PostgreSQL's default `max_connections` is 100), an eighth of the gateway's.
pub const TENANT_INFLIGHT_REQUESTS_DEFAULT: u32 = 128;
/// Requests the gateway has in flight at once, all tenants together.
pub const INFLIGHT_REQUESTS_DEFAULT: u32 = 1024;
/// Bytes one tenant's requests in flight may hold, at real memory cost. Room for the largest
/// answer the compute returns ([`crate::api::RESULT_BYTES_MAX`] as the guest counts it, about
/// four times that in the gateway's memory for narrow integer rows) next to smaller requests.
pub const TENANT_INFLIGHT_BYTES_DEFAULT: u64 = 256 << 20;
/// Bytes all requests in flight may hold, at real memory cost.
pub const INFLIGHT_BYTES_DEFAULT: u64 = 2 << 30;
/// The smallest per-tenant byte budget accepted: a maximal body (8 MiB) and its parse.
pub const TENANT_INFLIGHT_BYTES_MIN: u64 = 64 << 20;
/// What an allocator adds to each heap block (glibc: 8 bytes of header, 16-byte alignment).
const ALLOC_OVERHEAD: u64 = 16;
/// A `serde_json` object's first B-tree leaf (11 keys, 11 values, links), whatever it holds.
const JSON_OBJECT_BYTES: u64 = 640;
/// Each object entry beyond what the first node holds (nodes are at least half full).
const JSON_ENTRY_BYTES: u64 = 128;
/// Refusals are logged at most this often (with a count of those not logged).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct BudgetConfig {
    pub tenant_requests: u32,
    pub requests: u32,
    pub tenant_bytes: u64,
    pub bytes: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            tenant_requests: TENANT_INFLIGHT_REQUESTS_DEFAULT,
            requests: INFLIGHT_REQUESTS_DEFAULT,
            tenant_bytes: TENANT_INFLIGHT_BYTES_DEFAULT,
            bytes: INFLIGHT_BYTES_DEFAULT,
        }
    }
}

/// What one tenant has in flight.
struct TenantUse {
    requests: AtomicU64,
    bytes: AtomicU64,
    /// The tenant's lane (see [`Admission::statement_lane`] and [`Admission::heavy_lane`]).
    lane: Arc<RwLock<()>>,
}

impl Default for TenantUse {
    fn default() -> Self {
        TenantUse {
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            lane: Arc::new(RwLock::new(())),
        }
    }
}

pub struct Budgets {
    config: BudgetConfig,
    /// Tenants with something in flight. An entry goes when its last [`Admission`] does.
    tenants: Mutex<HashMap<TenantId, Arc<TenantUse>>>,
    /// The gateway-wide counts are the metrics' gauges `requests_in_flight`, `bytes_in_flight`.
    metrics: Arc<Metrics>,
    /// When a refusal was last logged, and how many were not logged since.
    last_log: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

/// Adds `n` to `counter` unless that would take it past `max`.
fn try_add(counter: &AtomicU64, n: u64, max: u64) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
            used.checked_add(n).filter(|v| *v <= max)
        })
        .is_ok()
}

impl Budgets {
    pub fn new(config: BudgetConfig, metrics: Arc<Metrics>) -> Arc<Budgets> {
        Arc::new(Budgets {
            config,
            tenants: Mutex::default(),
            metrics,
            last_log: Mutex::new(None),
            unlogged: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Admits one request of `tenant`, or refuses it `rate_limited` if the tenant or the gateway
    /// has as many requests in flight as its budget allows.
    pub fn admit(self: &Arc<Self>, tenant: TenantId) -> Result<Admission, ApiError> {
        let usage = self.tenants.locked().entry(tenant).or_default().clone();
        // From here on, dropping the admission undoes whatever was counted.
        let mut admission = Admission {
            budgets: self.clone(),
            tenant,
            usage,
            counted: false,
            held: 0,
        };
        if !try_add(
            &admission.usage.requests,
            1,
            u64::from(self.config.tenant_requests),
        ) {
            return Err(self.refuse(
                tenant,
                Refusal::TenantRequests,
                format!(
                    "the tenant has {} requests in flight, its limit; retry shortly",
                    self.config.tenant_requests
                ),
            ));
        }
        if !try_add(
            &self.metrics.requests_in_flight,
            1,
            u64::from(self.config.requests),
        ) {
            admission.usage.requests.fetch_sub(1, Ordering::AcqRel);
            return Err(self.refuse(
                tenant,
                Refusal::Requests,
                format!(
                    "the gateway has {} requests in flight, its limit; retry shortly",
                    self.config.requests
                ),
            ));
        }
        admission.counted = true;
        Ok(admission)
    }

    fn refuse(&self, tenant: TenantId, why: Refusal, message: String) -> ApiError {
        self.metrics.budget_refusals[why.index()].fetch_add(1, Ordering::Relaxed);
        let mut last = self.last_log.locked();
        if last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
            *last = Some(Instant::now());
            let unlogged = self.unlogged.swap(0, Ordering::Relaxed);
            tracing::warn!(
                tenant = %tenant,
                budget = why.label(),
                unlogged_refusals = unlogged,
                "request refused (rate_limited): {message}"
            );
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
        }
        ApiError::rate_limited(message)
    }
}

/// One admitted request: counted against its tenant's and the gateway's budgets until dropped
/// (attach it to the answer's body: [`crate::api`] does).
pub struct Admission {
    budgets: Arc<Budgets>,
    tenant: TenantId,
    usage: Arc<TenantUse>,
    /// Whether the request counts against the request budgets (it passed both).
    counted: bool,
    /// Bytes charged.
    held: u64,
}

impl Admission {
    /// Bytes charged to this request now.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Takes the tenant's lane for statements on its writer compute, until the guard is dropped.
    /// Statements share the lane with each other: they all run on the compute's one thread
    /// anyway, and several queued there keep that thread busy without a hand-off between them
    /// (taking turns one request at a time halved the throughput of 8 and more clients). They
    /// exclude heavy work ([`Admission::heavy_lane`]), and the lane is fair: heavy work waiting
    /// for it holds back statements that come after it.
    pub async fn statement_lane(&self) -> OwnedRwLockReadGuard<()> {
        self.usage.lane.clone().read_owned().await
    }

    /// Takes the tenant's lane alone for a piece of heavy work off the async workers (parsing a
    /// large body, measuring and encoding large rows), until the guard is dropped. With
    /// [`Admission::statement_lane`], however many requests a tenant floods the gateway with,
    /// it keeps one thread busy at a time: its compute's, or one blocking thread (plus its
    /// reader's, for `"replica": true`, which is a second compute by design). Other tenants'
    /// work is never behind it.
    pub async fn heavy_lane(&self) -> OwnedRwLockWriteGuard<()> {
        self.usage.lane.clone().write_owned().await
    }

    /// Charges `bytes` more for `what`. Refused with nothing charged: `rate_limited` if the
    /// tenant's or the gateway's byte budget has no room now, `too_large` if the request would
    /// need more than a tenant may ever hold.
    pub fn charge(&mut self, bytes: u64, what: &str) -> Result<(), ApiError> {
        let config = self.budgets.config;
        let needed = self.held.saturating_add(bytes);
        if needed > config.tenant_bytes.min(config.bytes) {
            return Err(ApiError::too_large(format!(
                "{what} would bring the request to {needed} bytes of gateway memory, more than a \
                 tenant may hold ({} bytes)",
                config.tenant_bytes.min(config.bytes)
            )));
        }
        if !try_add(&self.usage.bytes, bytes, config.tenant_bytes) {
            return Err(self.budgets.refuse(
                self.tenant,
                Refusal::TenantBytes,
                format!(
                    "the tenant's requests in flight hold {} bytes, and {what} needs {bytes} more \
                     (its limit is {}); retry shortly",
                    self.usage.bytes.load(Ordering::Relaxed),
                    config.tenant_bytes
                ),
            ));
        }
        if !try_add(&self.budgets.metrics.bytes_in_flight, bytes, config.bytes) {
            self.usage.bytes.fetch_sub(bytes, Ordering::AcqRel);
            return Err(self.budgets.refuse(
                self.tenant,
                Refusal::Bytes,
                format!(
                    "the gateway's requests in flight hold {} bytes, and {what} needs {bytes} \
                     more (its limit is {}); retry shortly",
                    self.budgets.metrics.bytes_in_flight.load(Ordering::Relaxed),
                    config.bytes
                ),
            ));
        }
        self.held = needed;
        Ok(())
    }

    /// Charges `bytes` more even past the budgets: memory that is in use already and cannot be
    /// given up (the rows of a request that took effect). Other requests are refused until it
    /// is given back.
    pub fn force(&mut self, bytes: u64) {
        self.usage.bytes.fetch_add(bytes, Ordering::AcqRel);
        self.budgets
            .metrics
            .bytes_in_flight
            .fetch_add(bytes, Ordering::AcqRel);
        self.held = self.held.saturating_add(bytes);
    }

    /// Gives back `bytes` of what is charged (at most all of it).
    pub fn release(&mut self, bytes: u64) {
        let bytes = bytes.min(self.held);
        self.usage.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.budgets
            .metrics
            .bytes_in_flight
            .fetch_sub(bytes, Ordering::AcqRel);
        self.held -= bytes;
    }

    /// Makes the charge exactly `bytes`: gives back the excess, or forces the difference (the
    /// memory exists already).
    pub fn set(&mut self, bytes: u64) {
        if bytes < self.held {
            self.release(self.held - bytes);
        } else {
            self.force(bytes - self.held);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.release(self.held);
        if self.counted {
            self.usage.requests.fetch_sub(1, Ordering::AcqRel);
            self.budgets
                .metrics
                .requests_in_flight
                .fetch_sub(1, Ordering::AcqRel);
        }
        // Entries are cloned only under this lock: two references are the map's and ours.
        let mut tenants = self.budgets.tenants.locked();
        if Arc::strong_count(&self.usage) == 2 {
            tenants.remove(&self.tenant);
        }
    }
}

/// A bound on the memory `serde_json` builds from `text` (a `Value` tree), computed without
/// parsing: every value counted at twice `size_of::<Value>()` (arrays grow by doubling), every
/// object at a B-tree node, every object entry beyond, every byte of text once more.
pub fn json_parse_bound(text: &[u8]) -> u64 {
    let (mut values, mut objects, mut entries) = (1u64, 0u64, 0u64);
    let (mut in_string, mut escaped) = (false, false);
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b',' | b'[' => values += 1,
            b'{' => {
                values += 1;
                objects += 1;
            }
            b':' => entries += 1,
            _ => {}
        }
    }
    values * 2 * size_of::<Json>() as u64
        + objects * JSON_OBJECT_BYTES
        + entries * JSON_ENTRY_BYTES
        + text.len() as u64
}

/// The memory a parsed JSON tree holds (the root value included).
pub fn json_cost(v: &Json) -> u64 {
    size_of::<Json>() as u64 + json_heap(v)
}

fn json_heap(v: &Json) -> u64 {
    match v {
        Json::Null | Json::Bool(_) | Json::Number(_) => 0,
        Json::String(s) => heap(s.capacity()),
        Json::Array(a) => {
            heap(a.capacity() * size_of::<Json>()) + a.iter().map(json_heap).sum::<u64>()
        }
        Json::Object(o) => {
            JSON_OBJECT_BYTES
                + o.len().saturating_sub(11) as u64 * JSON_ENTRY_BYTES
                + o.iter()
                    .map(|(k, v)| heap(k.capacity()) + json_heap(v))
                    .sum::<u64>()
        }
    }
}

/// A heap block of `bytes` (none if empty).
fn heap(bytes: usize) -> u64 {
    if bytes == 0 {
        0
    } else {
        bytes as u64 + ALLOC_OVERHEAD
    }
}

fn value_heap(v: &Value) -> u64 {
    match v {
        Value::Null | Value::Integer(_) | Value::Real(_) => 0,
        Value::Text(s) => heap(s.capacity()),
        Value::Blob(b) => heap(b.capacity()),
    }
}

fn values_cost(values: &Vec<Value>) -> u64 {
    heap(values.capacity() * size_of::<Value>()) + values.iter().map(value_heap).sum::<u64>()
}

/// The memory an [`ExecRequest`] holds: statements, SQL text, parameters.
pub fn exec_request_cost(r: &ExecRequest) -> u64 {
    size_of::<ExecRequest>() as u64
        + heap(r.statements.capacity() * size_of::<compute_abi::Statement>())
        + r.statements
            .iter()
            .map(|s| heap(s.sql.capacity()) + values_cost(&s.params))
            .sum::<u64>()
}

/// The memory the statements' results hold: columns, one vector per row, every value.
pub fn results_cost(results: &Vec<StatementResult>) -> u64 {
    heap(results.capacity() * size_of::<StatementResult>())
        + results
            .iter()
            .map(|r| {
                heap(r.columns.capacity() * size_of::<String>())
                    + r.columns.iter().map(|c| heap(c.capacity())).sum::<u64>()
                    + heap(r.rows.capacity() * size_of::<Vec<Value>>())
                    + r.rows.iter().map(values_cost).sum::<u64>()
            })
            .sum::<u64>()
}

/// How many values the results hold: a cheap measure of the work their cost and encoding take.
pub fn results_values(results: &[StatementResult]) -> usize {
    results
        .iter()
        .map(|r| r.rows.len().saturating_mul(r.columns.len().max(1)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn budgets(tenant_requests: u32, requests: u32, tenant_bytes: u64, bytes: u64) -> Arc<Budgets> {
        Budgets::new(
            BudgetConfig {
                tenant_requests,
                requests,
                tenant_bytes,
                bytes,
            },
            Arc::new(Metrics::default()),
        )
    }

    #[test]
    fn requests_over_a_tenants_budget_are_refused_and_others_are_not() {
        let b = budgets(2, 3, 1 << 20, 1 << 30);
        let (a, other) = (TenantId(1), TenantId(2));
        let first = b.admit(a).unwrap();
        let _second = b.admit(a).unwrap();
        let e = b.admit(a).err().expect("third of tenant a refused");
        assert_eq!((e.status.as_u16(), e.code), (429, "rate_limited"));
        let o = b.admit(other).unwrap();
        // The gateway-wide budget (3) is full now: tenant b's next is refused too.
        let e = b.admit(other).err().expect("over the gateway's budget");
        assert_eq!(e.code, "rate_limited");
        assert!(e.message.contains("gateway"), "{}", e.message);
        drop(first);
        let _again = b.admit(a).unwrap();
        drop(o);
        assert_eq!(b.metrics.requests_in_flight.load(Ordering::Relaxed), 2);
        assert_eq!(
            b.metrics.budget_refusals[Refusal::TenantRequests.index()].load(Ordering::Relaxed),
            1
        );
        assert_eq!(
            b.metrics.budget_refusals[Refusal::Requests.index()].load(Ordering::Relaxed),
            1
        );
        assert!(
            !b.tenants.lock().unwrap().contains_key(&other),
            "a tenant's entry goes with its last request"
        );
    }

    #[test]
    fn bytes_are_charged_refused_forced_and_given_back() {
        let b = budgets(8, 8, 1000, 1500);
        let mut x = b.admit(TenantId(1)).unwrap();
        let mut y = b.admit(TenantId(1)).unwrap();
        x.charge(600, "x").unwrap();
        let e = y.charge(500, "y").unwrap_err();
        assert_eq!(e.code, "rate_limited", "{e}");
        assert_eq!(y.held(), 0, "a refused charge charges nothing");
        let e = y.charge(1001, "y").unwrap_err();
        assert_eq!(e.code, "too_large", "could never fit: {e}");
        // Another tenant is held back only by the gateway-wide budget.
        let mut z = b.admit(TenantId(2)).unwrap();
        z.charge(900, "z").unwrap();
        assert_eq!(z.charge(1, "z").unwrap_err().code, "rate_limited");
        // Forced past the budget, then given back.
        y.force(700);
        assert_eq!(b.metrics.bytes_in_flight.load(Ordering::Relaxed), 2200);
        y.set(100);
        assert_eq!(y.held(), 100);
        drop((x, y, z));
        assert_eq!(b.metrics.bytes_in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(b.metrics.requests_in_flight.load(Ordering::Relaxed), 0);
        assert!(b.tenants.lock().unwrap().is_empty());
    }

    #[test]
    fn json_costs_reflect_real_memory_and_the_bound_holds() {
        for text in [
            "[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]".to_string(),
            r#"{"sql": "SELECT ?", "params": [1, 2.5, "x,[{:", null, {"base64": "AAE="}]}"#
                .to_string(),
            format!(
                r#"{{"batch": [{}]}}"#,
                vec![r#"{"sql": "INSERT INTO t VALUES (?)", "params": ["a\"b"]}"#; 50].join(",")
            ),
            format!("[{}]", vec![r#"{"base64":""}"#; 100].join(",")),
        ] {
            let parsed: Json = serde_json::from_str(&text).unwrap();
            let cost = json_cost(&parsed);
            let bound = json_parse_bound(text.as_bytes());
            assert!(cost <= bound, "{text}: cost {cost} > bound {bound}");
            assert!(cost as usize > text.len(), "{text}: cost {cost}");
        }
        // A number costs a whole value, not its digit.
        let zeros: Json =
            serde_json::from_str(&format!("[{}]", vec!["0"; 1000].join(","))).unwrap();
        assert!(json_cost(&zeros) >= 32 * 1000);
        // An object costs a B-tree node.
        assert!(json_cost(&json!({"base64": ""})) >= JSON_OBJECT_BYTES);
    }

    #[test]
    fn results_cost_counts_values_rows_and_heap() {
        let r = StatementResult {
            columns: vec!["a".into(), "b".into()],
            rows: (0..100)
                .map(|i| vec![Value::Integer(i), Value::Text("hello".into())])
                .collect(),
            rows_affected: 0,
            last_insert_rowid: None,
        };
        let cost = results_cost(&vec![r]);
        // 200 values of 32 bytes, 100 row vectors, 100 strings.
        let floor = 200 * size_of::<Value>() as u64 + 100 * 24 + 100 * 5;
        assert!(cost >= floor, "{cost} < {floor}");
        assert!(cost < floor * 2, "{cost}");
    }
}
