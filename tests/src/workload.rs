//! A bank-and-ledger workload for fault drills, driven over the gateway's HTTP API.
//!
//! **What it does.** A tenant holds a fixed set of accounts with a known total balance. Writer
//! clients run, concurrently and without coordination:
//!
//! - **transfers**: one `{"batch": [...]}` transaction of two `UPDATE`s (debit one account,
//!   credit another) and an `INSERT` into `history` of a row whose id the client chose;
//! - **inserts**: one `INSERT` into `items` with a client-chosen id.
//!
//! Reader clients read the number of accounts, the sum of balances and the number of history
//! rows in one transaction.
//!
//! **What it records.** Every request's start and end on one timeline ([`Workload::now`], which
//! drills also use to [`mark`](Workload::mark) their faults) and what the gateway answered, sorted
//! by what it means for the database ([`Outcome`]): a 200 is a promise that the commit is
//! durable; `read_only` is a promise that it never takes effect; `unavailable`, `timeout`, a
//! dropped connection or a client-side timeout promise nothing. The checkers
//! (`crate::checkers`) hold the database to exactly those promises.
//!
//! **Bounds.** A load phase ([`Workload::run`]) stops by itself after `LoadConfig::duration` or
//! `ops_per_client_max` operations per client, whichever comes first; every request has a
//! client-side timeout, so a phase never outlives its duration by more than one request timeout.

use crate::cluster::TestCluster;
use borealis_utils::LockExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The tables of the workload. `history.id` and `items.id` are chosen by the client, so a row
/// can be traced to the one request that may have written it.
pub const SCHEMA: [&str; 3] = [
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL)",
    "CREATE TABLE history (id INTEGER PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, \
     amount INTEGER NOT NULL, client INTEGER NOT NULL)",
    "CREATE TABLE items (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, payload TEXT NOT NULL)",
];

/// How long [`Workload::read_state`] keeps retrying before it gives up: longer than a recovery
/// after a gateway restart (commit timeout 10 s + recovery wait 10 s), with room to spare.
pub const READ_STATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The bank: fixed for the life of a [`Workload`].
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub accounts: i64,
    pub initial_balance: i64,
    /// Client-side timeout of one request: longer than the gateway's commit timeout (10 s), so
    /// that the gateway's own verdict normally arrives first.
    pub request_timeout: Duration,
    /// Seed of the clients' random choices (client `i` uses `seed + i`); printed by drills.
    pub seed: u64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            accounts: 16,
            initial_balance: 1_000,
            request_timeout: Duration::from_secs(20),
            seed: 0x00b0_5ea1,
        }
    }
}

/// One load phase.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub writers: usize,
    pub readers: usize,
    /// The phase stops after this long...
    pub duration: Duration,
    /// ...or after this many operations per client, whichever comes first.
    pub ops_per_client_max: u64,
    /// Every `insert_every`-th operation of a writer is an insert, the others are transfers.
    pub insert_every: u64,
    /// Pause between two operations of one client: scales the load.
    pub think: Duration,
    /// Pause after a failed request, so that a dead gateway is not hammered.
    pub backoff_after_error: Duration,
    /// Every write carries an `Idempotency-Key` (`write-<id>`), and a write whose outcome is
    /// unknown is sent again with the same key, after `backoff_after_error`, until an answer
    /// settles it or [`RETRY_FOR_MAX`] has passed since the phase's end: what a client that must
    /// not apply a transfer twice does. The write is recorded once, from its first attempt's
    /// start to its last attempt's end, with the last definite answer.
    pub retry_unknown_with_key: bool,
}

/// How long after a phase's end a write with [`LoadConfig::retry_unknown_with_key`] is still
/// retried.
pub const RETRY_FOR_MAX: Duration = Duration::from_secs(20);

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            writers: 3,
            readers: 1,
            duration: Duration::from_secs(15),
            ops_per_client_max: 5_000,
            insert_every: 4,
            think: Duration::from_millis(5),
            backoff_after_error: Duration::from_millis(100),
            retry_unknown_with_key: false,
        }
    }
}

/// What a write request's answer promises about its effect on the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 200: durable; must be present, whole.
    Acked { lsn: u64 },
    /// 503 `read_only`: refused before anything was written; must be absent.
    Refused,
    /// Another definite error (`sql_error`, `bad_request`, ...): rolled back; must be absent.
    Rejected { status: u16, code: String },
    /// No connection to the gateway could be made, so the request was never sent: must be
    /// absent.
    NotSent { why: String },
    /// `unavailable`, `timeout`, `internal`, an answer that is not ours, a broken connection or
    /// a client-side timeout: may be present or absent, but only whole.
    Unknown { why: String },
}

impl Outcome {
    pub fn is_acked(&self) -> bool {
        matches!(self, Outcome::Acked { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Transfer {
        id: i64,
        from: i64,
        to: i64,
        amount: i64,
    },
    Insert {
        id: i64,
    },
}

#[derive(Clone, Debug)]
pub struct WriteRecord {
    pub client: usize,
    pub op: WriteOp,
    /// On the workload's timeline ([`Workload::now`]).
    pub start: Duration,
    pub end: Duration,
    pub outcome: Outcome,
}

/// What one successful read saw (one transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadSample {
    pub lsn: u64,
    pub accounts: i64,
    pub balance_sum: i64,
    pub history_rows: i64,
}

#[derive(Clone, Debug)]
pub struct ReadRecord {
    pub client: usize,
    pub start: Duration,
    pub end: Duration,
    /// The sample, or the error code / client error.
    pub result: Result<ReadSample, String>,
}

/// Everything the clients did, across every phase of one workload.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub writes: Vec<WriteRecord>,
    pub reads: Vec<ReadRecord>,
    /// Faults and other events the drill marked, on the same timeline.
    pub events: Vec<(Duration, String)>,
}

/// Counts of one phase, for the drill's printout.
#[derive(Clone, Debug, Default)]
pub struct PhaseStats {
    pub elapsed: Duration,
    pub writes_acked: usize,
    pub writes_refused: usize,
    pub writes_rejected: usize,
    pub writes_not_sent: usize,
    pub writes_unknown: usize,
    pub reads_ok: usize,
    pub reads_failed: usize,
    /// Writes sent again with their key ([`LoadConfig::retry_unknown_with_key`]), and the
    /// answers that came from the record of an earlier attempt (`Idempotent-Replayed`): writes
    /// that had taken effect though their first answer was lost.
    pub retries: u64,
    pub replayed: u64,
}

impl PhaseStats {
    /// What clients saw fail, by kind: `(refused, rejected or never sent, unknown, reads
    /// failed)`. A fault the cluster must hide leaves all four at 0.
    pub fn client_errors(&self) -> (usize, usize, usize, usize) {
        (
            self.writes_refused,
            self.writes_rejected + self.writes_not_sent,
            self.writes_unknown,
            self.reads_failed,
        )
    }

    pub fn writes(&self) -> usize {
        self.writes_acked
            + self.writes_refused
            + self.writes_rejected
            + self.writes_not_sent
            + self.writes_unknown
    }
}

impl std::fmt::Display for PhaseStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        write!(
            f,
            "{:.1} s: writes {} acknowledged ({:.0}/s), {} refused read_only, {} rejected, {} not sent (no connection), {} outcome unknown; reads {} ok, {} failed",
            secs,
            self.writes_acked,
            self.writes_acked as f64 / secs,
            self.writes_refused,
            self.writes_rejected,
            self.writes_not_sent,
            self.writes_unknown,
            self.reads_ok,
            self.reads_failed
        )?;
        if self.retries > 0 {
            write!(
                f,
                "; {} retries with the same Idempotency-Key, {} answered from the record",
                self.retries, self.replayed
            )?;
        }
        Ok(())
    }
}

/// The database as read at the end of a drill, in one transaction.
#[derive(Clone, Debug)]
pub struct DbState {
    pub lsn: u64,
    pub balances: BTreeMap<i64, i64>,
    /// `(id, src, dst, amount)`, by id.
    pub history: Vec<(i64, i64, i64, i64)>,
    pub items: BTreeSet<i64>,
}

pub struct Workload {
    http: reqwest::Client,
    sql_url: String,
    token: String,
    pub tenant: String,
    pub config: WorkloadConfig,
    t0: Instant,
    next_id: AtomicI64,
    history: Mutex<History>,
    /// Retries with a key, and answers marked `Idempotent-Replayed`, since setup.
    retries: AtomicU64,
    replayed: AtomicU64,
}

impl Workload {
    /// Creates `tenant` on the cluster, its tables and its accounts.
    pub async fn setup(cluster: &TestCluster, tenant: &str, config: WorkloadConfig) -> Arc<Self> {
        assert!(config.accounts >= 2, "transfers need two accounts");
        let token = cluster.create_tenant(tenant).await;
        let w = Arc::new(Workload {
            http: reqwest::Client::builder()
                .timeout(config.request_timeout)
                .build()
                .expect("http client"),
            sql_url: format!("{}/v1/tenants/{tenant}/sql", cluster.url),
            token,
            tenant: tenant.to_string(),
            config,
            t0: Instant::now(),
            next_id: AtomicI64::new(1),
            history: Mutex::default(),
            retries: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
        });
        let schema: Vec<Value> = SCHEMA.iter().map(|s| json!({"sql": s})).collect();
        w.setup_request(json!({ "batch": schema })).await;
        let accounts: Vec<Value> = (1..=w.config.accounts)
            .map(|id| {
                json!({"sql": "INSERT INTO accounts (id, balance) VALUES (?, ?)",
                       "params": [id, w.config.initial_balance]})
            })
            .collect();
        w.setup_request(json!({ "batch": accounts })).await;
        w
    }

    async fn setup_request(&self, body: Value) {
        match self.post(&body).await {
            Ok((200, _)) => {}
            Ok((status, v)) => panic!("workload setup failed: HTTP {status} {v}"),
            Err(e) => panic!("workload setup failed: {}", e.message),
        }
    }

    /// Grows the log before a drill: `batches` transactions of `rows` inserts into `items` with
    /// `payload_bytes` of text each, recorded like any other insert (client `usize::MAX`).
    /// Panics if one is not acknowledged: this runs before any fault.
    pub async fn preload(&self, batches: usize, rows: usize, payload_bytes: usize) {
        let payload = "p".repeat(payload_bytes);
        for _ in 0..batches {
            let ids: Vec<i64> = (0..rows)
                .map(|_| self.next_id.fetch_add(1, Ordering::Relaxed))
                .collect();
            let statements: Vec<Value> = ids
                .iter()
                .map(|id| {
                    json!({"sql": "INSERT INTO items (id, client, payload) VALUES (?, ?, ?)",
                           "params": [id, -1, payload]})
                })
                .collect();
            let start = self.now();
            let outcome = classify_write(self.post(&json!({ "batch": statements })).await);
            let end = self.now();
            assert!(outcome.is_acked(), "preload batch failed: {outcome:?}");
            let mut h = self.lock();
            for id in ids {
                h.writes.push(WriteRecord {
                    client: usize::MAX,
                    op: WriteOp::Insert { id },
                    start,
                    end,
                    outcome: outcome.clone(),
                });
            }
        }
    }

    /// The sum of all balances, which no transfer changes.
    pub fn expected_total(&self) -> i64 {
        self.config.accounts * self.config.initial_balance
    }

    /// Time since the workload was set up: the timeline of every record and event.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Records a drill event (a fault, a restart) on the timeline and prints it.
    pub fn mark(&self, what: impl Into<String>) -> Duration {
        let at = self.now();
        let what = what.into();
        eprintln!("[drill t={:>6.2}s] {what}", at.as_secs_f64());
        self.lock().events.push((at, what));
        at
    }

    /// Sleeps until `at` on the workload's timeline (at once if that has passed).
    pub async fn sleep_until(&self, at: Duration) {
        if let Some(left) = at.checked_sub(self.now()) {
            tokio::time::sleep(left).await;
        }
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.locked()
    }

    /// Starts a load phase in the background.
    pub fn spawn(self: &Arc<Self>, load: LoadConfig) -> tokio::task::JoinHandle<PhaseStats> {
        let w = self.clone();
        tokio::spawn(async move { w.run(load).await })
    }

    /// Runs one load phase to its end and returns its counts.
    pub async fn run(self: &Arc<Self>, load: LoadConfig) -> PhaseStats {
        assert!(load.insert_every >= 1, "insert_every must be at least 1");
        let started = self.now();
        let deadline = Instant::now() + load.duration;
        let (first_write, first_read) = {
            let h = self.lock();
            (h.writes.len(), h.reads.len())
        };
        let retries_before = self.retries.load(Ordering::Relaxed);
        let replayed_before = self.replayed.load(Ordering::Relaxed);
        let mut tasks = Vec::new();
        for client in 0..load.writers {
            let (w, load) = (self.clone(), load.clone());
            tasks.push(tokio::spawn(async move {
                w.writer(client, load, deadline).await
            }));
        }
        for r in 0..load.readers {
            let (w, load) = (self.clone(), load.clone());
            let client = load.writers + r;
            tasks.push(tokio::spawn(async move {
                w.reader(client, load, deadline).await
            }));
        }
        for t in tasks {
            t.await.expect("a workload client panicked");
        }
        let h = self.lock();
        let mut stats = PhaseStats {
            elapsed: self.now() - started,
            retries: self.retries.load(Ordering::Relaxed) - retries_before,
            replayed: self.replayed.load(Ordering::Relaxed) - replayed_before,
            ..PhaseStats::default()
        };
        for w in &h.writes[first_write..] {
            match w.outcome {
                Outcome::Acked { .. } => stats.writes_acked += 1,
                Outcome::Refused => stats.writes_refused += 1,
                Outcome::Rejected { .. } => stats.writes_rejected += 1,
                Outcome::NotSent { .. } => stats.writes_not_sent += 1,
                Outcome::Unknown { .. } => stats.writes_unknown += 1,
            }
        }
        for r in &h.reads[first_read..] {
            if r.result.is_ok() {
                stats.reads_ok += 1;
            } else {
                stats.reads_failed += 1;
            }
        }
        stats
    }

    async fn writer(&self, client: usize, load: LoadConfig, deadline: Instant) {
        let mut rng = StdRng::seed_from_u64(self.config.seed.wrapping_add(client as u64));
        for n in 0..load.ops_per_client_max {
            if Instant::now() >= deadline {
                break;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let (op, body) = if n % load.insert_every == load.insert_every - 1 {
                let payload = format!("client {client} op {n} {}", "x".repeat(64));
                (
                    WriteOp::Insert { id },
                    json!({"sql": "INSERT INTO items (id, client, payload) VALUES (?, ?, ?)",
                           "params": [id, client, payload]}),
                )
            } else {
                let from = rng.random_range(1..=self.config.accounts);
                let to = loop {
                    let to = rng.random_range(1..=self.config.accounts);
                    if to != from {
                        break to;
                    }
                };
                let amount = rng.random_range(1..=100i64);
                (
                    WriteOp::Transfer {
                        id,
                        from,
                        to,
                        amount,
                    },
                    json!({"batch": [
                        {"sql": "UPDATE accounts SET balance = balance - ? WHERE id = ?", "params": [amount, from]},
                        {"sql": "UPDATE accounts SET balance = balance + ? WHERE id = ?", "params": [amount, to]},
                        {"sql": "INSERT INTO history (id, src, dst, amount, client) VALUES (?, ?, ?, ?, ?)",
                         "params": [id, from, to, amount, client]},
                    ]}),
                )
            };
            let start = self.now();
            let key = load.retry_unknown_with_key.then(|| format!("write-{id}"));
            let mut outcome = classify_write(self.post_keyed(&body, key.as_deref()).await);
            if let Some(key) = &key {
                // Once an attempt's outcome is unknown, the write may have taken effect: a later
                // attempt that is never sent settles nothing.
                let mut maybe_applied = matches!(outcome, Outcome::Unknown { .. });
                let retry_until = deadline + RETRY_FOR_MAX;
                while matches!(outcome, Outcome::Unknown { .. } | Outcome::NotSent { .. })
                    && Instant::now() < retry_until
                {
                    pause(load.backoff_after_error).await;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    outcome = match classify_write(self.post_keyed(&body, Some(key)).await) {
                        Outcome::NotSent { why } if maybe_applied => Outcome::Unknown {
                            why: format!("a retry after an unknown outcome was not sent: {why}"),
                        },
                        // Refused before its key was looked up: it says nothing of an earlier
                        // attempt.
                        Outcome::Rejected { code, .. }
                            if maybe_applied && code == "rate_limited" =>
                        {
                            Outcome::Unknown {
                                why: "a retry after an unknown outcome was rate limited".into(),
                            }
                        }
                        next => next,
                    };
                    maybe_applied |= matches!(outcome, Outcome::Unknown { .. });
                }
            }
            let end = self.now();
            let acked = outcome.is_acked();
            self.lock().writes.push(WriteRecord {
                client,
                op,
                start,
                end,
                outcome,
            });
            pause(if acked {
                load.think
            } else {
                load.backoff_after_error
            })
            .await;
        }
    }

    async fn reader(&self, client: usize, load: LoadConfig, deadline: Instant) {
        let body = json!({"batch": [
            {"sql": "SELECT count(*), COALESCE(sum(balance), 0) FROM accounts"},
            {"sql": "SELECT count(*) FROM history"},
        ]});
        for _ in 0..load.ops_per_client_max {
            if Instant::now() >= deadline {
                break;
            }
            let start = self.now();
            let result = parse_read(self.post(&body).await);
            let end = self.now();
            let ok = result.is_ok();
            self.lock().reads.push(ReadRecord {
                client,
                start,
                end,
                result,
            });
            pause(if ok {
                load.think
            } else {
                load.backoff_after_error
            })
            .await;
        }
    }

    /// One request: `Ok((status, body))` for any HTTP answer, `Err` when none came.
    async fn post(&self, body: &Value) -> Result<(u16, Value), NoAnswer> {
        self.post_keyed(body, None).await
    }

    /// [`Self::post`] with an `Idempotency-Key`; counts the answers replayed from a record.
    async fn post_keyed(&self, body: &Value, key: Option<&str>) -> Result<(u16, Value), NoAnswer> {
        let mut req = self
            .http
            .post(&self.sql_url)
            .bearer_auth(&self.token)
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req.send().await.map_err(|e| NoAnswer {
            // A connect error comes from the connector, before a byte of the request left.
            never_sent: e.is_connect(),
            message: format!("no answer: {e}"),
        })?;
        let status = resp.status().as_u16();
        if resp
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
        {
            self.replayed.fetch_add(1, Ordering::Relaxed);
        }
        let text = resp.text().await.map_err(|e| NoAnswer {
            never_sent: false,
            message: format!("HTTP {status}, body lost: {e}"),
        })?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The first line of a drill's report: the load, and the seed that replays it.
    pub fn describe(&self, load: &LoadConfig) -> String {
        format!(
            "load: {} writers, {} readers, {} s; {} accounts; seed {:#x}",
            load.writers,
            load.readers,
            load.duration.as_secs(),
            self.config.accounts,
            self.config.seed
        )
    }

    /// Reads the whole database in one transaction, retrying (bounded by
    /// [`READ_STATE_TIMEOUT`]) while the cluster recovers.
    pub async fn read_state(&self) -> DbState {
        let body = json!({"batch": [
            {"sql": "SELECT id, balance FROM accounts ORDER BY id"},
            {"sql": "SELECT id, src, dst, amount FROM history ORDER BY id"},
            {"sql": "SELECT id FROM items ORDER BY id"},
        ]});
        let deadline = Instant::now() + READ_STATE_TIMEOUT;
        let v = loop {
            let last = match self.post(&body).await {
                Ok((200, v)) => break v,
                Ok((status, v)) => format!("HTTP {status} {v}"),
                Err(e) => e.message,
            };
            assert!(
                Instant::now() < deadline,
                "could not read the final state within {} s; last answer: {last}",
                READ_STATE_TIMEOUT.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let rows = |i: usize| -> Vec<Vec<i64>> {
            v.pointer(&format!("/results/{i}/rows"))
                .and_then(Value::as_array)
                .unwrap_or_else(|| panic!("final state: no rows for statement {i}: {v}"))
                .iter()
                .map(|row| {
                    row.as_array()
                        .unwrap_or_else(|| panic!("final state: bad row {row}"))
                        .iter()
                        .map(|c| {
                            c.as_i64()
                                .unwrap_or_else(|| panic!("final state: not an integer: {c}"))
                        })
                        .collect()
                })
                .collect()
        };
        DbState {
            lsn: v["lsn"].as_u64().unwrap_or(0),
            balances: rows(0).into_iter().map(|r| (r[0], r[1])).collect(),
            history: rows(1)
                .into_iter()
                .map(|r| (r[0], r[1], r[2], r[3]))
                .collect(),
            items: rows(2).into_iter().map(|r| r[0]).collect(),
        }
    }
}

/// A request that got no HTTP answer.
#[derive(Clone, Debug)]
pub struct NoAnswer {
    /// No connection could be made: the request was certainly not sent.
    pub never_sent: bool,
    pub message: String,
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn error_code(v: &Value) -> Option<&str> {
    v.pointer("/error/code").and_then(Value::as_str)
}

/// What an answer to a write promises (see [`Outcome`]).
pub fn classify_write(answer: Result<(u16, Value), NoAnswer>) -> Outcome {
    match answer {
        Err(NoAnswer {
            never_sent: true,
            message,
        }) => Outcome::NotSent { why: message },
        Err(NoAnswer { message, .. }) => Outcome::Unknown { why: message },
        Ok((200, v)) => match v["lsn"].as_u64() {
            Some(lsn) => Outcome::Acked { lsn },
            None => Outcome::Unknown {
                why: format!("HTTP 200 without an lsn: {v}"),
            },
        },
        Ok((status, v)) => match error_code(&v) {
            Some("read_only") => Outcome::Refused,
            Some("unavailable" | "timeout" | "internal") | None => Outcome::Unknown {
                why: format!("HTTP {status} {v}"),
            },
            Some(code) if (400..500).contains(&status) => Outcome::Rejected {
                status,
                code: code.to_string(),
            },
            Some(_) => Outcome::Unknown {
                why: format!("HTTP {status} {v}"),
            },
        },
    }
}

fn parse_read(answer: Result<(u16, Value), NoAnswer>) -> Result<ReadSample, String> {
    let (status, v) = answer.map_err(|e| e.message)?;
    if status != 200 {
        return Err(format!(
            "{} (HTTP {status})",
            error_code(&v).unwrap_or("no error code")
        ));
    }
    let int = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("malformed read answer, no {p}: {v}"))
    };
    Ok(ReadSample {
        lsn: v["lsn"]
            .as_u64()
            .ok_or_else(|| format!("read answer without an lsn: {v}"))?,
        accounts: int("/results/0/rows/0/0")?,
        balance_sum: int("/results/0/rows/0/1")?,
        history_rows: int("/results/1/rows/0/0")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_by_what_they_promise() {
        assert_eq!(
            classify_write(Ok((200, json!({"results": [], "lsn": 7})))),
            Outcome::Acked { lsn: 7 }
        );
        let err = |status, code| Ok((status, json!({"error": {"code": code, "message": "m"}})));
        assert_eq!(classify_write(err(503, "read_only")), Outcome::Refused);
        assert!(matches!(
            classify_write(err(503, "unavailable")),
            Outcome::Unknown { .. }
        ));
        assert!(matches!(
            classify_write(err(408, "timeout")),
            Outcome::Unknown { .. }
        ));
        assert_eq!(
            classify_write(err(400, "sql_error")),
            Outcome::Rejected {
                status: 400,
                code: "sql_error".into()
            }
        );
        assert!(matches!(
            classify_write(Ok((502, Value::String("bad gateway".into())))),
            Outcome::Unknown { .. }
        ));
        let no_answer = |never_sent| {
            Err(NoAnswer {
                never_sent,
                message: "m".into(),
            })
        };
        assert!(matches!(
            classify_write(no_answer(false)),
            Outcome::Unknown { .. }
        ));
        assert!(matches!(
            classify_write(no_answer(true)),
            Outcome::NotSent { .. }
        ));
    }
}
