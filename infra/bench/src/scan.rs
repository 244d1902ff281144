//! A full scan: `SELECT count(*), sum(length(pad))` over a table far larger than every cache.
//!
//! A tenant is loaded with `--scan-mb` MB of 4,000-byte rows (one B-tree page each), in
//! transactions of 10 MB sent as `INSERT ... SELECT` over a recursive CTE, so the load costs the
//! cluster, not the harness (and is issue #21's "bulk load, 10 MB transactions" figure). The table is many times the gateway's host page cache (16 MiB by
//! default) and SQLite's own (8 MiB), so every scan reads nearly every page from the pageserver:
//! this is what sequential read-ahead (runs of pages in one `GetPages`) is for, in the writer's
//! compute and in a reader's (`"replica": true`, scanned too). The same rows in
//! a native SQLite file on local disk (warm in the OS page cache) are the baseline, in the same
//! run. Each scan is timed three times; the answer is checked (row count and byte sum).
//!
//! The scans start once the pageserver has applied the load (how long that took is reported
//! apart): a scan that starts while it is still applying a gigabyte of redo competes with it for
//! the two cores, and its first pages may wait for the apply (one run had a scan fail after a
//! GetPage waited 5 s for an apply 37,000 records behind, and the others take 7-8 s instead of
//! about 3).

use crate::borealis::{Api, Cluster, Tenant};
use crate::workload::Checks;
use anyhow::Context;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes of one row's blob: one row per 4 KiB page.
const ROW_BYTES: u64 = 4_000;
/// Rows per load transaction (10 MB).
const LOAD_BATCH_ROWS: u64 = 2_500;
/// Bytes of rows per load transaction.
pub const LOAD_TRANSACTION_BYTES: u64 = LOAD_BATCH_ROWS * ROW_BYTES;
/// Scans per system.
const SCANS: usize = 3;
/// Each Borealis scan's own time limit (`"timeout_ms"`): a slow scan is a figure, not the
/// gateway's 5 s statement timeout.
const SCAN_TIMEOUT_MS: u64 = 120_000;

pub struct ScanFigures {
    pub mb: u64,
    pub rows: u64,
    pub load: Duration,
    /// From the load's last commit until the pageserver had applied it all.
    pub catch_up: Duration,
    /// Each Borealis scan through the writer: its time, or the error that stopped it.
    pub borealis: Vec<Result<Duration, String>>,
    /// The same through a reader compute (`"replica": true`).
    pub replica: Vec<Result<Duration, String>>,
    pub sqlite: Vec<Duration>,
}

fn scan_sql() -> &'static str {
    "SELECT count(*), sum(length(pad)) FROM big"
}

/// Loads the table into a new tenant, scans it, then does the same on native SQLite.
pub async fn measure(
    cluster: &Cluster,
    work: &Path,
    mb: u64,
    checks: &mut Checks,
) -> anyhow::Result<ScanFigures> {
    let api = &cluster.api;
    let rows = (mb * 1_000_000 / ROW_BYTES).max(1);
    let tenant: Tenant = api.create_tenant(&cluster.admin_token, "scan").await?;
    let load = load_big_table(api, &tenant, rows).await?;
    let catch_up = crate::recovery::wait_pageserver_caught_up(cluster, &tenant).await?;
    let expected = (rows as i64, (rows * ROW_BYTES) as i64);
    let mut borealis = Vec::new();
    let mut replica = Vec::new();
    for (on_replica, out) in [(false, &mut borealis), (true, &mut replica)] {
        let body = json!({"sql": scan_sql(), "timeout_ms": SCAN_TIMEOUT_MS, "replica": on_replica});
        for _ in 0..SCANS {
            let t0 = Instant::now();
            let outcome = match api.request(&tenant, &body).await {
                Ok(v) => match count_and_bytes(&v) {
                    Some(got) if got == expected => Ok(t0.elapsed()),
                    other => Err(format!("wrong answer {other:?}, expected {expected:?}")),
                },
                Err(e) => Err(format!("{e:#}")),
            };
            match &outcome {
                Ok(_) => checks.pass(),
                Err(e) if e.contains("wrong answer") => {
                    checks.fail(format!("Borealis scan (replica: {on_replica}): {e}"))
                }
                Err(_) => {}
            }
            out.push(outcome);
        }
    }
    let sqlite = sqlite_scans(work, rows, expected, checks)?;
    Ok(ScanFigures {
        mb,
        rows,
        load,
        catch_up,
        borealis,
        replica,
        sqlite,
    })
}

/// Creates `big (id, pad)` in `tenant` and loads `rows` rows of 4,000 random bytes in 2 MB
/// transactions; returns how long the load took.
pub async fn load_big_table(api: &Api, tenant: &Tenant, rows: u64) -> anyhow::Result<Duration> {
    api.sql(
        tenant,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB)",
        json!([]),
    )
    .await?;
    let started = Instant::now();
    let mut next = 0;
    while next < rows {
        let last = (next + LOAD_BATCH_ROWS).min(rows) - 1;
        api.sql(
            tenant,
            "WITH RECURSIVE s(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM s WHERE x < ?2) \
             INSERT INTO big SELECT x, randomblob(4000) FROM s",
            json!([next, last]),
        )
        .await
        .with_context(|| format!("loading rows {next}..={last}"))?;
        next = last + 1;
    }
    Ok(started.elapsed())
}

fn count_and_bytes(v: &Value) -> Option<(i64, i64)> {
    let row = v.pointer("/results/0/rows/0")?.as_array()?;
    Some((row.first()?.as_i64()?, row.get(1)?.as_i64()?))
}

fn sqlite_scans(
    work: &Path,
    rows: u64,
    expected: (i64, i64),
    checks: &mut Checks,
) -> anyhow::Result<Vec<Duration>> {
    let path = work.join("scan.sqlite");
    let _ = std::fs::remove_file(&path);
    let c = rusqlite::Connection::open(&path)?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB);",
    )?;
    c.execute(
        "WITH RECURSIVE s(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM s WHERE x < ?1) \
         INSERT INTO big SELECT x, randomblob(4000) FROM s",
        [rows as i64 - 1],
    )?;
    let mut out = Vec::new();
    for _ in 0..SCANS {
        let t0 = Instant::now();
        let got: (i64, i64) = c.query_row(scan_sql(), [], |r| Ok((r.get(0)?, r.get(1)?)))?;
        out.push(t0.elapsed());
        if got == expected {
            checks.pass();
        } else {
            checks.fail(format!(
                "native SQLite scan: {got:?}, expected {expected:?}"
            ));
        }
    }
    drop(c);
    let _ = std::fs::remove_file(&path);
    Ok(out)
}
