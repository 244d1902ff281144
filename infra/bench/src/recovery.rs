//! Crash recovery time against log length, and failover under load.
//!
//! **Recovery.** Borealis recovers a volume by reading *states*, never records (RFC 0002): ask
//! the safekeepers for their states, promise a new epoch (`Fence`), compute the VDL from the
//! promises, install the epoch, truncate above the VDL.
//! So the time from a crash to the first successful write should not grow with the log. To check
//! that, the harness fills one tenant's log to each target size in turn (rows of 3,000 random
//! bytes: one new page each, so the log grows by about a page image per row), waits until the
//! pageserver has applied everything known durable (reported separately as "pageserver catch-up": the apply
//! backlog is a pageserver property, not recovery), then:
//!
//! 1. `borealis node kill gateway` (SIGKILL: the writer and its compute die mid-flight),
//! 2. `borealis node start gateway`,
//! 3. retries a one-row `INSERT` every 10 ms until it succeeds.
//!
//! It reports kill → gateway healthy (process start, compiling the SQLite module) and kill → first
//! successful write (adds recovery, instantiate, open, the write and its quorum commit). Every
//! filled row must still be there afterwards.
//!
//! **Failover** is the same event under load: eight clients run transfers on the TPC-B tenant,
//! the gateway is killed and restarted, and the time from the kill to the first transfer that
//! succeeds is measured. There is no standby gateway or reader compute to promote yet, so this
//! is restart-based failover. Money must still add up afterwards, and every acknowledged
//! transfer must be in the history.

use crate::borealis::{scalar, transfer, Api, Cluster, Tenant};
use crate::workload::{check_transfers, Checks, Totals};
use anyhow::{bail, Context};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{Lsn, PageNo, PAGE_SIZE_BYTES};
use borealis_utils::LockExt;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Rows (one page each) per fill statement: ~1.7 MB of redo, well below the 8 MiB frame limit
/// and the statement timeout.
const FILL_ROWS_PER_STATEMENT: u64 = 400;
/// Fill requests in flight at once (the tenant runs one statement at a time; the others wait
/// for durability meanwhile).
const FILL_CONCURRENCY: usize = 4;
/// Filled rows read back after each recovery.
const SAMPLED_ROWS: u64 = 8;
/// How long the harness waits for the pageserver to apply a fill, and for a first write.
const CATCH_UP_MAX: Duration = Duration::from_secs(300);
const FIRST_WRITE_MAX: Duration = Duration::from_secs(120);
const RETRY_EVERY: Duration = Duration::from_millis(10);

const FILL_SQL: &str = "INSERT INTO fill (b) SELECT randomblob(3000) FROM \
    (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?1) SELECT x FROM c)";

pub struct RecoveryPoint {
    /// Records in the tenant's log when the gateway was killed (its last LSN: one per page
    /// change).
    pub log_records: u64,
    /// About how many bytes of redo that is: [`image_record_bytes`] per record.
    pub log_bytes: u64,
    /// What the first safekeeper still held (the rest was trimmed after pageserver checkpoints).
    pub retained_bytes: u64,
    /// Log bytes added by this step's fill (in `fill_time`).
    pub filled_bytes: u64,
    pub fill_time: Duration,
    pub catch_up: Duration,
    pub to_healthy: Duration,
    pub to_first_write: Duration,
}

/// Waits until the tenant's pageserver has applied the log up to the VDL the safekeepers know.
pub async fn wait_pageserver_caught_up(cluster: &Cluster, t: &Tenant) -> anyhow::Result<Duration> {
    let api = &cluster.api;
    let started = Instant::now();
    let info = api.tenant_status(&cluster.admin_token, &t.name).await?;
    let ps_addr = info["pageserver"]
        .as_str()
        .context("tenant info names no pageserver")?;
    let ps_http = cluster
        .node_field_by_addr(ps_addr, "http_addr")
        .with_context(|| format!("no pageserver at {ps_addr} in cluster.json"))?;
    let sk_http = cluster
        .safekeeper_http()
        .into_iter()
        .next()
        .context("no safekeeper")?;
    loop {
        let sk: Value =
            serde_json::from_str(&api.get_text(&format!("http://{sk_http}/status")).await?)?;
        let ps: Value =
            serde_json::from_str(&api.get_text(&format!("http://{ps_http}/status")).await?)?;
        // The pageserver applies only what a writer vouched durable: the VDL the safekeepers
        // were told (it trails the log by the last few commits until a GetPage asks for more).
        let known_vdl = sk["tenants"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["tenant"].as_str() == Some(&t.id))
            .and_then(|x| x["known_vdl"].as_u64())
            .unwrap_or(0);
        let applied = segments_of(&ps, &t.id)
            .iter()
            .filter_map(|s| s["caught_up_to"].as_u64())
            .max()
            .unwrap_or(0);
        if applied >= known_vdl {
            return Ok(started.elapsed());
        }
        if started.elapsed() > CATCH_UP_MAX {
            bail!("the pageserver applied up to {applied} of the known VDL {known_vdl} within {CATCH_UP_MAX:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn segments_of(status: &Value, tenant: &str) -> Vec<Value> {
    status["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["tenant"].as_str() == Some(tenant))
        .flat_map(|t| t["segments"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The size of one full-page-image redo record as stored: what a fill row costs in the log.
pub fn image_record_bytes() -> u64 {
    RedoRecord {
        lsn: Lsn(1),
        prev_lsn_segment: Lsn(0),
        prev_lsn_page: Lsn(0),
        page_no: PageNo(1),
        is_cpl: false,
        body: RedoBody::Image(vec![0; PAGE_SIZE_BYTES]),
    }
    .encoded_len() as u64
}

/// The LSN an answer depends on (the writer's newest LSN when the statement finished).
fn lsn_of(v: &Value) -> anyhow::Result<u64> {
    v["lsn"].as_u64().context("SQL answer without an lsn")
}

/// Fills the log until its last LSN reaches `target_records`; returns `(rows added, last LSN)`.
///
/// The log is counted in records (LSNs), not in the bytes a safekeeper holds: safekeepers
/// trim what a pageserver checkpoint covers, so their files stop growing with the history.
async fn fill_to(
    t: &Tenant,
    api: &Api,
    mut lsn: u64,
    target_records: u64,
) -> anyhow::Result<(u64, u64)> {
    let mut rows = 0;
    while lsn < target_records {
        // Enough statements for the rest (a row is about one record), in parallel waves.
        let statements = (target_records - lsn)
            .div_ceil(FILL_ROWS_PER_STATEMENT)
            .min(FILL_CONCURRENCY as u64 * 8);
        let mut wave = futures::stream::iter(0..statements)
            .map(|_| api.sql(t, FILL_SQL, json!([FILL_ROWS_PER_STATEMENT])))
            .buffer_unordered(FILL_CONCURRENCY);
        while let Some(r) = wave.next().await {
            lsn = lsn.max(lsn_of(&r.context("filling the log")?)?);
            rows += FILL_ROWS_PER_STATEMENT;
        }
    }
    Ok((rows, lsn))
}

/// Kill and restart the gateway; `(to healthy, to first successful write)`.
async fn crash_and_first_write(
    cluster: &Cluster,
    t: &Tenant,
    probe: i64,
) -> anyhow::Result<(Duration, Duration)> {
    cluster.node("kill", "gateway")?;
    let killed = Instant::now();
    cluster.node("start", "gateway")?;
    let api = &cluster.api;
    let health = format!("{}/healthz", api.url);
    let to_healthy = loop {
        if api.get_text(&health).await.is_ok() {
            break killed.elapsed();
        }
        if killed.elapsed() > FIRST_WRITE_MAX {
            bail!("the gateway was not healthy {FIRST_WRITE_MAX:?} after a restart");
        }
        tokio::time::sleep(RETRY_EVERY).await;
    };
    loop {
        let error = match api
            .sql(t, "INSERT INTO probe (id) VALUES (?1)", json!([probe]))
            .await
        {
            Ok(_) => return Ok((to_healthy, killed.elapsed())),
            Err(e) => e,
        };
        if killed.elapsed() > FIRST_WRITE_MAX {
            bail!(
                "no successful write {FIRST_WRITE_MAX:?} after the restart; last error: {error:#}"
            );
        }
        tokio::time::sleep(RETRY_EVERY).await;
    }
}

/// Recovery time at each log size in `sizes` (bytes, ascending).
pub async fn recovery_vs_log(
    cluster: &Cluster,
    sizes: &[u64],
    checks: &mut Checks,
) -> anyhow::Result<Vec<RecoveryPoint>> {
    let api = &cluster.api;
    let t = api.create_tenant(&cluster.admin_token, "recovery").await?;
    api.sql(
        &t,
        "CREATE TABLE fill (id INTEGER PRIMARY KEY, b BLOB NOT NULL)",
        json!([]),
    )
    .await?;
    let v = api
        .sql(&t, "CREATE TABLE probe (id INTEGER PRIMARY KEY)", json!([]))
        .await?;
    let mut lsn = lsn_of(&v)?;
    let record_bytes = image_record_bytes();
    let mut points = Vec::new();
    let mut rows = 0u64;
    for (i, &target) in sizes.iter().enumerate() {
        let t0 = Instant::now();
        let lsn_before = lsn;
        let (added, reached) = fill_to(&t, api, lsn, target.div_ceil(record_bytes)).await?;
        rows += added;
        let fill_time = t0.elapsed();
        let catch_up = wait_pageserver_caught_up(cluster, &t).await?;
        let (retained_bytes, _) = cluster.log_size(&t).await?;
        let (to_healthy, to_first_write) = crash_and_first_write(cluster, &t, i as i64 + 1).await?;
        let log_bytes = reached * record_bytes;
        println!(
            "  recovery at {reached} records (~{:.1} MB) of log: kill -> healthy {:>6.0} ms, kill -> first write {:>6.0} ms (fill {:.1} s, pageserver catch-up {:.1} s, {:.1} MB retained on a safekeeper)",
            log_bytes as f64 / 1e6,
            to_healthy.as_secs_f64() * 1e3,
            to_first_write.as_secs_f64() * 1e3,
            fill_time.as_secs_f64(),
            catch_up.as_secs_f64(),
            retained_bytes as f64 / 1e6
        );
        // The probe write advanced the log by a few records.
        lsn = reached;
        // Every filled row must have survived: ids are dense (no deletes), so max(id) counts
        // them without scanning the table; a few rows are read back in full.
        let mut statements = vec![
            json!({"sql": "SELECT coalesce(max(id), 0) FROM fill", "params": []}),
            json!({"sql": "SELECT count(*) FROM probe", "params": []}),
        ];
        let samples: Vec<u64> = (0..SAMPLED_ROWS)
            .map(|k| 1 + k * rows.max(1) / SAMPLED_ROWS)
            .collect();
        for id in &samples {
            statements
                .push(json!({"sql": "SELECT length(b) FROM fill WHERE id = ?1", "params": [id]}));
        }
        let v = api.batch(&t, statements).await?;
        let (got_rows, got_probes) = (scalar(&v, 0)?, scalar(&v, 1)?);
        let intact = (0..samples.len()).all(|k| matches!(scalar(&v, k + 2), Ok(3000)));
        if got_rows == rows as i64 && got_probes == i as i64 + 1 && intact {
            checks.pass();
        } else {
            checks.fail(format!(
                "after recovery at {log_bytes} bytes of log: max(id) {got_rows} and {got_probes} probes, expected {rows} and {}; sampled rows intact: {intact}",
                i + 1
            ));
        }
        points.push(RecoveryPoint {
            log_records: reached,
            log_bytes,
            retained_bytes,
            filled_bytes: (reached - lsn_before) * record_bytes,
            fill_time,
            catch_up,
            to_healthy,
            to_first_write,
        });
    }
    Ok(points)
}

pub struct FailoverFigures {
    pub clients: usize,
    pub kill_to_first_success: Duration,
    pub acked: u64,
    pub failed: u64,
}

/// Failover under a transfer load on the TPC-B tenant (`before`: its totals before).
pub async fn failover_under_load(
    cluster: &Cluster,
    t: &Tenant,
    accounts: u64,
    before: Totals,
    checks: &mut Checks,
) -> anyhow::Result<FailoverFigures> {
    const CLIENTS: usize = 8;
    let stop = Arc::new(AtomicBool::new(false));
    let successes: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (api, t, stop, successes) = (
            cluster.api.clone(),
            t.clone(),
            stop.clone(),
            successes.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // Sequence numbers far from the suite's, so these are new transfers.
            let (mut seq, mut failed) = (1u64 << 32, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match transfer(&api, &t, client + 100, seq, accounts).await {
                    Ok(_) => successes.locked().push(Instant::now()),
                    Err(_) => {
                        failed += 1;
                        tokio::time::sleep(RETRY_EVERY).await;
                    }
                }
                seq += 1;
            }
            failed
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.node("kill", "gateway")?;
    let killed = Instant::now();
    cluster.node("start", "gateway")?;
    let first = loop {
        let after = successes
            .locked()
            .iter()
            .copied()
            .filter(|s| *s > killed)
            .min();
        if let Some(s) = after {
            break s - killed;
        }
        if killed.elapsed() > FIRST_WRITE_MAX {
            stop.store(true, Ordering::Relaxed);
            bail!("no transfer succeeded within {FIRST_WRITE_MAX:?} of the gateway kill");
        }
        tokio::time::sleep(RETRY_EVERY).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for task in tasks {
        failed += task.await.context("a failover client task failed")?;
    }
    let acked = successes.locked().len() as u64;
    let after = totals_of(&cluster.api, t).await?;
    let delta = Totals {
        history_rows: after.history_rows - before.history_rows,
        ..after
    };
    let before_checks = checks.failures.len();
    check_transfers(
        "Borealis (failover)",
        accounts,
        acked,
        failed,
        &delta,
        checks,
    );
    if checks.failures.len() == before_checks {
        checks.pass();
    }
    Ok(FailoverFigures {
        clients: CLIENTS,
        kill_to_first_success: first,
        acked,
        failed,
    })
}

async fn totals_of(api: &Api, t: &Tenant) -> anyhow::Result<Totals> {
    let v = api
        .batch(
            t,
            vec![
                json!({"sql": "SELECT count(*) FROM accounts", "params": []}),
                json!({"sql": "SELECT coalesce(sum(balance), 0) FROM accounts", "params": []}),
                json!({"sql": "SELECT count(*) FROM history", "params": []}),
            ],
        )
        .await?;
    Ok(Totals {
        accounts: scalar(&v, 0)?,
        balance_sum: scalar(&v, 1)?,
        history_rows: scalar(&v, 2)?,
        ..Totals::default()
    })
}
