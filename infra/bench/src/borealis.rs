//! Borealis as the benchmark sees it: a real local cluster started with `borealis up`, and its
//! HTTP API (docs/design.md §7) spoken with `reqwest`.
//!
//! The cluster is the one a user gets: six safekeeper processes (fsync on every group commit),
//! two pageservers and the gateway, each its own process, all on this machine's disk. The
//! harness finds the binaries next to its own executable (`target/<profile>/`), starts
//! `borealis up --data-dir <tmp> --idle-timeout <t>`, waits for its "Borealis is up" line, and
//! stops it with SIGINT (which stops every node) when done. Fault drills go through
//! `borealis node kill|start`, exactly as a user would run them.
//!
//! A transfer is one `{"batch": [...]}` request (one transaction); a point read is one
//! `{"sql", "params"}` request; a bulk load sends one batch request per
//! [`BULK_BATCH_ROWS`] rows. Every answer is checked (rows affected, row shapes).

use crate::cpu::Proc;
use crate::stats::{drive_async, Run};
use crate::workload::{
    account_for, bulk_row, transfer_for, System, Totals, ACCOUNTS_BATCH_ROWS, ACCOUNT_FILLER,
    BULK_BATCH_ROWS, INITIAL_BALANCE, SQLITE,
};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `borealis up` may take to report the cluster up (it compiles the SQLite module).
const UP_TIMEOUT: Duration = Duration::from_secs(180);
/// Per-request HTTP timeout: above the gateway's own statement and commit timeouts.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of the gateway's HTTP API.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    pub url: String,
    /// The operator's storage token (`DIR/keys/operator.token`), sent on [`Api::get_text`]: a
    /// storage node's `/status` lists tenants only to the operator.
    operator_token: Option<String>,
}

/// A tenant and its token.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub name: String,
    pub token: String,
    /// The tenant id as the safekeepers' `/status` shows it.
    pub id: String,
}

impl Api {
    pub fn new(url: &str) -> anyhow::Result<Api> {
        Ok(Api {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .pool_max_idle_per_host(256)
                .build()
                .context("building the HTTP client")?,
            url: url.trim_end_matches('/').to_string(),
            operator_token: None,
        })
    }

    /// Calls the API; a non-2xx answer becomes an error naming its code and message.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.call_keyed(method, path, token, body, None)
            .await
            .map(|(v, _)| v)
    }

    /// A `.../sql` request with an `Idempotency-Key`: the answer, and whether it was replayed
    /// from the key's record (`Idempotent-Replayed: true`).
    pub async fn keyed(
        &self,
        t: &Tenant,
        body: &Value,
        key: &str,
    ) -> anyhow::Result<(Value, bool)> {
        self.call_keyed(
            reqwest::Method::POST,
            &format!("/v1/tenants/{}/sql", t.name),
            &t.token,
            Some(body),
            Some(key),
        )
        .await
    }

    async fn call_keyed(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        key: Option<&str>,
    ) -> anyhow::Result<(Value, bool)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{path}: no answer"))?;
        let status = resp.status();
        let replayed = resp
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true");
        let text = resp
            .text()
            .await
            .with_context(|| format!("{path}: reading the answer"))?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("{path}: answer is not JSON: {text:.200}"))?
        };
        if !status.is_success() {
            let code = v
                .pointer("/error/code")
                .and_then(Value::as_str)
                .unwrap_or("?");
            let msg = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("");
            bail!("{path}: {code} (HTTP {}): {msg}", status.as_u16());
        }
        Ok((v, replayed))
    }

    pub async fn create_tenant(&self, admin_token: &str, name: &str) -> anyhow::Result<Tenant> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/v1/tenants",
                admin_token,
                Some(&json!({ "name": name })),
            )
            .await?;
        let token = v["token"]
            .as_str()
            .context("tenant creation answered without a token")?
            .to_string();
        let info = self.tenant_status(admin_token, name).await?;
        let id = info["id"]
            .as_str()
            .context("tenant info without an id")?
            .to_string();
        Ok(Tenant {
            name: name.to_string(),
            token,
            id,
        })
    }

    /// One statement.
    pub async fn sql(&self, t: &Tenant, sql: &str, params: Value) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/tenants/{}/sql", t.name),
            &t.token,
            Some(&json!({ "sql": sql, "params": params })),
        )
        .await
    }

    /// One request body as given (`{"sql": ..., "timeout_ms": ..., "replica": ...}`).
    pub async fn request(&self, t: &Tenant, body: &Value) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/tenants/{}/sql", t.name),
            &t.token,
            Some(body),
        )
        .await
    }

    /// Statements `[(sql, params)]` as one transaction.
    pub async fn batch(&self, t: &Tenant, statements: Vec<Value>) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/tenants/{}/sql", t.name),
            &t.token,
            Some(&json!({ "batch": statements })),
        )
        .await
    }

    /// `GET /v1/tenants/{name}`: the tenant's id, compute, VDL, epoch, pageserver, segments.
    pub async fn tenant_status(&self, admin_token: &str, name: &str) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/tenants/{name}"),
            admin_token,
            None,
        )
        .await
    }

    /// Whether the tenant's compute is running.
    pub async fn compute_running(&self, admin_token: &str, name: &str) -> anyhow::Result<bool> {
        let v = self.tenant_status(admin_token, name).await?;
        Ok(v["compute"].as_str() == Some("running"))
    }

    pub async fn get_text(&self, url: &str) -> anyhow::Result<String> {
        let mut request = self.http.get(url).timeout(Duration::from_secs(5));
        if let Some(token) = &self.operator_token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await?;
        if !r.status().is_success() {
            bail!("GET {url}: HTTP {}", r.status());
        }
        Ok(r.text().await?)
    }
}

/// The rows of result `i` of an answer.
pub fn rows(v: &Value, i: usize) -> anyhow::Result<&Vec<Value>> {
    v.pointer(&format!("/results/{i}/rows"))
        .and_then(Value::as_array)
        .with_context(|| format!("answer without results[{i}].rows: {v:.300}"))
}

/// The single integer of a one-row, one-column result `i`.
/// Creates tenant `name` with one table, `kv`, holding the row `(1, value)`: the small tenant
/// the cold-start and Zipf parts read ([`crate::cold_start`], [`crate::zipf`]).
pub async fn create_kv_tenant(
    api: &Api,
    admin_token: &str,
    name: &str,
    value: i64,
) -> anyhow::Result<Tenant> {
    let t = api.create_tenant(admin_token, name).await?;
    api.sql(
        &t,
        "CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)",
        json!([]),
    )
    .await?;
    api.sql(&t, "INSERT INTO kv (k, v) VALUES (1, ?1)", json!([value]))
        .await?;
    Ok(t)
}

pub fn scalar(v: &Value, i: usize) -> anyhow::Result<i64> {
    match rows(v, i)?.as_slice() {
        [row] => row
            .get(0)
            .and_then(Value::as_i64)
            .with_context(|| format!("not an integer: {row}")),
        other => bail!("expected one row, got {}", other.len()),
    }
}

fn rows_affected(v: &Value, i: usize) -> Option<u64> {
    v.pointer(&format!("/results/{i}/rows_affected"))
        .and_then(Value::as_u64)
}

/// A local cluster run by `borealis up`.
pub struct Cluster {
    dir: PathBuf,
    bin_dir: PathBuf,
    up: Option<Child>,
    pub api: Api,
    pub admin_token: String,
    /// `DIR/cluster.json` as read once the cluster was up.
    layout: Value,
}

impl Cluster {
    /// A storage token for reading any tenant's log, as a pageserver does (made with the
    /// cluster's signing key, `DIR/keys/`).
    pub fn log_reader_token(&self) -> anyhow::Result<String> {
        let keys = borealis_auth::ClusterKeys::open(&self.dir)?;
        Ok(keys
            .signing_key()
            .issue_for(borealis_auth::Role::Pageserver, None, "bench", 0))
    }

    /// Starts `borealis up` on a new directory under `work`.
    pub async fn start(bin_dir: &Path, work: &Path, idle_timeout: &str) -> anyhow::Result<Cluster> {
        Self::start_with(bin_dir, work, "borealis", idle_timeout, &[]).await
    }

    /// Starts `borealis up` on `work/name`, with `extra` arguments (`--segment-size`,
    /// `--safekeepers`, `--pageservers`).
    pub async fn start_with(
        bin_dir: &Path,
        work: &Path,
        name: &str,
        idle_timeout: &str,
        extra: &[&str],
    ) -> anyhow::Result<Cluster> {
        Self::start_with_env(bin_dir, work, name, idle_timeout, extra, &[]).await
    }

    /// Like [`Cluster::start_with`], with environment variables for `borealis up` and so for
    /// the nodes it starts (`PAGESERVER_CHECKPOINT_INTERVAL`, say).
    pub async fn start_with_env(
        bin_dir: &Path,
        work: &Path,
        name: &str,
        idle_timeout: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Cluster> {
        let borealis = bin_dir.join("borealis");
        for bin in ["borealis", "gateway", "safekeeper", "pageserver"] {
            if !bin_dir.join(bin).exists() {
                bail!(
                    "{} is missing: build the services first (`cargo build --bins -p borealis -p gateway -p safekeeper -p pageserver -p borealis-bench`, with --release for a release run)",
                    bin_dir.join(bin).display()
                );
            }
        }
        let dir = work.join(name);
        std::fs::create_dir_all(&dir)?;
        let up_log = work.join(format!("{name}-up.log"));
        let log = std::fs::File::create(&up_log)?;
        let child = Command::new(&borealis)
            .args(["up", "--data-dir"])
            .arg(&dir)
            .args(["--idle-timeout", idle_timeout])
            .args(extra)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", borealis.display()))?;
        let mut cluster = Cluster {
            dir: dir.clone(),
            bin_dir: bin_dir.to_path_buf(),
            up: Some(child),
            api: Api::new("http://unset")?,
            admin_token: String::new(),
            layout: Value::Null,
        };
        let started = Instant::now();
        loop {
            let out = std::fs::read_to_string(&up_log).unwrap_or_default();
            if out.lines().any(|l| l.starts_with("Borealis is up")) {
                break;
            }
            if let Some(Ok(Some(status))) = cluster.up.as_mut().map(Child::try_wait) {
                cluster.up = None;
                bail!("borealis up exited ({status}):\n{out}");
            }
            if started.elapsed() > UP_TIMEOUT {
                bail!("borealis up did not report the cluster up within {UP_TIMEOUT:?}:\n{out}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let layout: Value = serde_json::from_slice(
            &std::fs::read(dir.join("cluster.json")).context("reading cluster.json")?,
        )
        .context("parsing cluster.json")?;
        let url = layout
            .pointer("/gateway/url")
            .and_then(Value::as_str)
            .context("cluster.json has no gateway url")?;
        cluster.api = Api::new(url)?;
        cluster.api.operator_token =
            Some(borealis_auth::ClusterKeys::open(&cluster.dir)?.operator_token()?);
        cluster.admin_token = layout["admin_token"]
            .as_str()
            .context("cluster.json has no admin token")?
            .to_string();
        cluster.layout = layout;
        Ok(cluster)
    }

    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// `borealis node ACTION ID --data-dir DIR`.
    pub fn node(&self, action: &str, id: &str) -> anyhow::Result<()> {
        let out = Command::new(self.bin_dir.join("borealis"))
            .args(["node", action, id, "--data-dir"])
            .arg(&self.dir)
            .output()
            .context("running borealis node")?;
        if !out.status.success() {
            bail!(
                "borealis node {action} {id} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The nodes of `role` in `cluster.json`, in cluster order.
    pub fn nodes<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.layout["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(move |n| n["role"].as_str() == Some(role))
    }

    /// Wire addresses of the safekeepers, in cluster order.
    pub fn safekeeper_wire(&self) -> Vec<String> {
        self.nodes("safekeeper")
            .filter_map(|n| n["addr"].as_str().map(str::to_string))
            .collect()
    }

    /// Admin HTTP addresses of the safekeepers, in cluster order.
    pub fn safekeeper_http(&self) -> Vec<String> {
        self.nodes("safekeeper")
            .filter_map(|n| n["http_addr"].as_str().map(str::to_string))
            .collect()
    }

    /// Field `field` of the node whose wire address is `addr` (e.g. a pageserver's `http_addr`).
    pub fn node_field_by_addr(&self, addr: &str, field: &str) -> Option<String> {
        self.layout["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["addr"].as_str() == Some(addr))
            .and_then(|n| n[field].as_str().map(str::to_string))
    }

    /// See [`log_size`]; asks the first safekeeper.
    pub async fn log_size(&self, tenant: &Tenant) -> anyhow::Result<(u64, u64)> {
        let http = self
            .safekeeper_http()
            .into_iter()
            .next()
            .context("cluster.json lists no safekeeper")?;
        log_size(&self.api, &http, tenant).await
    }

    /// Stops the cluster (SIGINT to `borealis up`, which stops every node) and waits.
    #[allow(unsafe_code)] // libc calls, each with its SAFETY comment
    pub fn stop(&mut self) {
        if let Some(mut child) = self.up.take() {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("borealis up did not stop within 60 s; killing it");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `(segment file bytes, records appended)` on the safekeeper whose admin HTTP address is
/// `sk_http`: the size of `tenant`'s log on that member (every segment file, record headers
/// included), and the member's count of records appended (all tenants).
pub async fn log_size(api: &Api, sk_http: &str, tenant: &Tenant) -> anyhow::Result<(u64, u64)> {
    let status: Value =
        serde_json::from_str(&api.get_text(&format!("http://{sk_http}/status")).await?)
            .context("safekeeper /status is not JSON")?;
    let bytes = status["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["tenant"].as_str() == Some(&tenant.id))
        .flat_map(|t| t["segments"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["bytes"].as_u64())
        .sum();
    let metrics = api.get_text(&format!("http://{sk_http}/metrics")).await?;
    let records = prometheus_value(&metrics, "safekeeper_records_appended_total")
        .context("safekeeper_records_appended_total missing from /metrics")?;
    Ok((bytes, records as u64))
}

/// The value of an unlabelled series in Prometheus text.
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix("{}").unwrap_or(rest);
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// One tenant of a running cluster, as a [`System`].
pub struct BorealisSql {
    pub api: Api,
    pub tenant: Tenant,
    /// The cluster's directory, whose `cluster.json` names its processes.
    pub dir: PathBuf,
}

fn stmt(sql: &str, params: Value) -> Value {
    json!({ "sql": sql, "params": params })
}

/// One transfer as one batch request; checks that both updates hit one row. Returns the LSN
/// the answer depends on (at or above the transfer's commit LSN).
pub async fn transfer(
    api: &Api,
    tenant: &Tenant,
    client: usize,
    seq: u64,
    accounts: u64,
) -> anyhow::Result<u64> {
    let t = transfer_for(client, seq, accounts);
    let [a, b] = t.updates();
    let v = api
        .batch(
            tenant,
            vec![
                stmt(SQLITE.update_balance, json!([a.0, a.1])),
                stmt(SQLITE.update_balance, json!([b.0, b.1])),
                stmt(SQLITE.insert_history, json!([t.src, t.dst, t.amount])),
            ],
        )
        .await?;
    for i in 0..2 {
        if rows_affected(&v, i) != Some(1) {
            bail!(
                "update {i} of a transfer changed {:?} rows: {v:.300}",
                rows_affected(&v, i)
            );
        }
    }
    v["lsn"]
        .as_u64()
        .context("a transfer answered without an lsn")
}

impl System for BorealisSql {
    /// The gateway, the safekeepers and the pageservers, as `cluster.json` names them now (a
    /// drill may have restarted one).
    fn processes(&self) -> Vec<Proc> {
        let Ok(bytes) = std::fs::read(self.dir.join("cluster.json")) else {
            return Vec::new();
        };
        let Ok(layout) = serde_json::from_slice::<Value>(&bytes) else {
            return Vec::new();
        };
        let pid = |v: &Value| {
            v.get("pid")
                .and_then(Value::as_u64)
                .and_then(|p| u32::try_from(p).ok())
        };
        let mut procs: Vec<Proc> = layout
            .get("gateway")
            .and_then(pid)
            .map(|p| Proc::new("gateway", p, false))
            .into_iter()
            .collect();
        for node in layout
            .get("nodes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let kind = match node.get("role").and_then(Value::as_str) {
                Some("safekeeper") => "safekeepers",
                Some("pageserver") => "pageservers",
                _ => continue,
            };
            if let Some(p) = pid(node) {
                procs.push(Proc::new(kind, p, false));
            }
        }
        procs
    }

    async fn load_accounts(&mut self, accounts: u64) -> anyhow::Result<()> {
        for s in SQLITE.create {
            self.api.sql(&self.tenant, s, json!([])).await?;
        }
        let mut next = 0;
        while next < accounts {
            let end = (next + ACCOUNTS_BATCH_ROWS).min(accounts);
            let batch = (next..end)
                .map(|id| {
                    stmt(
                        SQLITE.insert_account,
                        json!([id + 1, INITIAL_BALANCE, ACCOUNT_FILLER]),
                    )
                })
                .collect();
            self.api.batch(&self.tenant, batch).await?;
            next = end;
        }
        Ok(())
    }

    async fn transfers(
        &mut self,
        clients: usize,
        duration: Duration,
        accounts: u64,
    ) -> anyhow::Result<Run> {
        let (api, tenant) = (self.api.clone(), self.tenant.clone());
        // The first request after an idle spell starts the compute: not part of the figures.
        self.api.sql(&self.tenant, "SELECT 1", json!([])).await?;
        Ok(drive_async(clients, duration, move |client, seq| {
            let (api, tenant) = (api.clone(), tenant.clone());
            async move {
                transfer(&api, &tenant, client, seq, accounts)
                    .await
                    .map(drop)
            }
        })
        .await)
    }

    async fn reads(
        &mut self,
        clients: usize,
        duration: Duration,
        accounts: u64,
    ) -> anyhow::Result<Run> {
        let (api, tenant) = (self.api.clone(), self.tenant.clone());
        self.api.sql(&self.tenant, "SELECT 1", json!([])).await?;
        Ok(drive_async(clients, duration, move |client, seq| {
            let (api, tenant) = (api.clone(), tenant.clone());
            async move {
                let id = account_for(client, seq, accounts);
                let v = api.sql(&tenant, SQLITE.select_balance, json!([id])).await?;
                scalar(&v, 0).with_context(|| format!("account {id}"))?;
                Ok(())
            }
        })
        .await)
    }

    async fn bulk_load(&mut self, rows: u64) -> anyhow::Result<Duration> {
        self.api.sql(&self.tenant, "SELECT 1", json!([])).await?;
        let started = Instant::now();
        let mut next = 0;
        while next < rows {
            let end = (next + BULK_BATCH_ROWS).min(rows);
            let batch = (next..end)
                .map(|i| {
                    let (id, k, v) = bulk_row(i);
                    stmt(SQLITE.insert_bulk, json!([id, k, v]))
                })
                .collect();
            self.api.batch(&self.tenant, batch).await?;
            next = end;
        }
        Ok(started.elapsed())
    }

    async fn totals(&mut self) -> anyhow::Result<Totals> {
        let (accounts, balance_sum) = self.count_and_sum("accounts", "balance").await?;
        let (history_rows, _) = self.count_and_sum("history", "0").await?;
        let (bulk_rows, bulk_k_sum) = self.count_and_sum("bulk", "k").await?;
        Ok(Totals {
            accounts,
            balance_sum,
            history_rows,
            bulk_rows,
            bulk_k_sum,
        })
    }
}

/// Rows counted per request by [`BorealisSql::count_and_sum`].
const TOTALS_CHUNK_ROWS: i64 = 50_000;

impl BorealisSql {
    /// `(count(*), sum(column))` of `table`, by rowid ranges, one request each: a scan of a
    /// large table in one statement could outlast the gateway's statement timeout while its
    /// pages stream in from the pageserver.
    async fn count_and_sum(&self, table: &str, column: &str) -> anyhow::Result<(i64, i64)> {
        let v = self
            .api
            .sql(
                &self.tenant,
                &format!("SELECT coalesce(max(rowid), 0) FROM {table}"),
                json!([]),
            )
            .await?;
        let max = scalar(&v, 0)?;
        let (mut count, mut sum, mut lo) = (0i64, 0i64, 0i64);
        while lo < max {
            let hi = lo + TOTALS_CHUNK_ROWS;
            let v = self
                .api
                .sql(
                    &self.tenant,
                    &format!(
                        "SELECT count(*), coalesce(sum({column}), 0) FROM {table} WHERE rowid > ?1 AND rowid <= ?2"
                    ),
                    json!([lo, hi]),
                )
                .await?;
            match rows(&v, 0)?.as_slice() {
                [row] => match (
                    row.get(0).and_then(Value::as_i64),
                    row.get(1).and_then(Value::as_i64),
                ) {
                    (Some(c), Some(s)) => {
                        count += c;
                        sum += s;
                    }
                    _ => bail!("{table}: count and sum are not integers: {row}"),
                },
                other => bail!("{table}: expected one row of totals, got {}", other.len()),
            }
            lo = hi;
        }
        Ok((count, sum))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_values_are_found_with_or_without_braces() {
        let text = "# TYPE a counter\na 3\nab 4\nc{} 5\nd{x=\"1\"} 6\n";
        assert_eq!(prometheus_value(text, "a"), Some(3.0));
        assert_eq!(prometheus_value(text, "ab"), Some(4.0));
        assert_eq!(prometheus_value(text, "c"), Some(5.0));
        assert_eq!(prometheus_value(text, "d"), None);
    }

    #[test]
    fn results_are_read_strictly() {
        let v = json!({"results": [{"rows": [[7]], "rows_affected": 1}, {"rows": [[1], [2]]}]});
        assert_eq!(scalar(&v, 0).unwrap(), 7);
        assert!(scalar(&v, 1).is_err());
        assert!(scalar(&v, 2).is_err());
        assert_eq!(rows_affected(&v, 0), Some(1));
    }
}
