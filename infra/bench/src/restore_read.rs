//! The first read after every pageserver was killed and its disk wiped (issue #18), at two
//! database sizes side by side.
//!
//! For each size: a cluster as `borealis up` makes it (one 10 GiB segment, two pageservers),
//! pageservers checkpointing every 2 s; a table of that many MB of 4,000-byte rows; then, once
//! every byte is in a durable checkpoint (the tenant's segment `checkpointed_lsn` at its
//! `caught_up_to` on the pageserver that follows it), both pageservers are `kill -9`ed, their data
//! directories deleted and started again, and the gateway restarted (so no page cache of its own
//! answers). Then one point read of a random row is timed — it pays the tenant's cold start and
//! the pageserver's attach: the index, each layer's directory, and the few pages the B-tree walk
//! needs, one ranged read each — then 20 more, and the bytes the pageservers had downloaded by
//! the end of the first. Every answer is checked, and a final `count(*)` with the byte sum reads
//! every row back.
//!
//! Before on-demand download a restore downloaded the whole chain first, so the first read grew
//! with the database (and, for a 10 GiB segment, took minutes).

use crate::borealis::{prometheus_value, Api, Cluster, Tenant};
use crate::stats::Latencies;
use crate::workload::Checks;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const ROW_BYTES: u64 = 4_000;
/// Point reads after the first.
const MORE_READS: usize = 20;
/// Rows per statement of the final read of every row (40 MB).
const FULL_READ_CHUNK_ROWS: u64 = 10_000;
/// How long the last checkpoint may take after the load.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(120);

pub struct RestoreRun {
    pub mb: u64,
    pub rows: u64,
    /// The chain's bytes in object storage when the pageservers were killed.
    pub chain_bytes: u64,
    pub first_read: Duration,
    /// Bytes the pageservers had read by ranged reads (directories, single records) when the
    /// first read answered, and bytes of whole layers (hydration, in the background).
    pub ranged_at_first: u64,
    pub hydrated_at_first: u64,
    pub reads: Latencies,
    pub full_read: Duration,
}

/// Runs each size in its own cluster, in turn.
pub async fn measure(
    bin_dir: &Path,
    work: &Path,
    sizes_mb: &[u64],
    checks: &mut Checks,
) -> anyhow::Result<Vec<RestoreRun>> {
    let mut runs = Vec::new();
    for &mb in sizes_mb {
        let cluster = Cluster::start_with_env(
            bin_dir,
            work,
            &format!("restore-{mb}"),
            "60s",
            &[],
            &[("PAGESERVER_CHECKPOINT_INTERVAL", "2s")],
        )
        .await
        .with_context(|| format!("starting the cluster for {mb} MB"))?;
        let run = one(&cluster, mb, checks).await;
        drop(cluster);
        let run = run.with_context(|| format!("{mb} MB"))?;
        runs.push(run);
    }
    Ok(runs)
}

/// A pageserver of the cluster: its id, admin HTTP address and data directory.
struct Pageserver {
    id: String,
    http: String,
    data_dir: String,
}

fn pageservers(cluster: &Cluster) -> Vec<Pageserver> {
    cluster
        .nodes("pageserver")
        .filter_map(|n| {
            Some(Pageserver {
                id: n["id"].as_str()?.to_string(),
                http: n["http_addr"].as_str()?.to_string(),
                data_dir: n["data_dir"].as_str()?.to_string(),
            })
        })
        .collect()
}

/// The tenant's segments on every pageserver: `(checkpointed_lsn, caught_up_to, chain_bytes)`.
async fn segments(api: &Api, pageservers: &[Pageserver]) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for ps in pageservers {
        let Ok(text) = api.get_text(&format!("http://{}/status", ps.http)).await else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for t in v["tenants"].as_array().into_iter().flatten() {
            for s in t["segments"].as_array().into_iter().flatten() {
                let ck = &s["checkpoint"];
                out.push((
                    ck["checkpointed_lsn"].as_u64().unwrap_or(0),
                    s["caught_up_to"].as_u64().unwrap_or(0),
                    ck["chain_bytes"].as_u64().unwrap_or(0),
                ));
            }
        }
    }
    out
}

/// `(ranged, whole layers)` bytes every pageserver has read from object storage.
async fn downloaded(api: &Api, pageservers: &[Pageserver]) -> (u64, u64) {
    let (mut all, mut ranged) = (0.0, 0.0);
    for ps in pageservers {
        if let Ok(text) = api.get_text(&format!("http://{}/metrics", ps.http)).await {
            all += prometheus_value(&text, "pageserver_bytes_downloaded_total").unwrap_or(0.0);
            ranged += prometheus_value(&text, "pageserver_ranged_read_bytes_total").unwrap_or(0.0);
        }
    }
    (ranged as u64, (all - ranged).max(0.0) as u64)
}

async fn point_read(
    api: &Api,
    tenant: &Tenant,
    id: u64,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let v = api
        .sql(
            tenant,
            "SELECT length(pad) FROM big WHERE id = ?",
            json!([id]),
        )
        .await?;
    match v.pointer("/results/0/rows/0/0").and_then(Value::as_i64) {
        Some(4000) => checks.pass(),
        other => checks.fail(format!("restore: row {id} read back {other:?}")),
    }
    Ok(())
}

async fn one(cluster: &Cluster, mb: u64, checks: &mut Checks) -> anyhow::Result<RestoreRun> {
    let api = &cluster.api;
    let rows = (mb * 1_000_000 / ROW_BYTES).max(1);
    let tenant = api.create_tenant(&cluster.admin_token, "restore").await?;
    crate::scan::load_big_table(api, &tenant, rows).await?;
    let pageservers = pageservers(cluster);
    if pageservers.is_empty() {
        bail!("cluster.json lists no pageserver with an http address and a data directory");
    }
    // Every byte in a durable checkpoint.
    let began = Instant::now();
    let chain_bytes = loop {
        let segs = segments(api, &pageservers).await;
        let done: Vec<_> = segs
            .iter()
            .filter(|(ck, caught, _)| *caught > 0 && ck >= caught)
            .collect();
        if !segs.is_empty() && done.len() == segs.len() {
            break segs.iter().map(|s| s.2).sum::<u64>();
        }
        if began.elapsed() > CHECKPOINT_WAIT {
            bail!("no checkpoint of the whole table within {CHECKPOINT_WAIT:?}: {segs:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Kill and wipe every pageserver, start them again, and restart the gateway.
    for ps in &pageservers {
        cluster.node("kill", &ps.id)?;
    }
    for ps in &pageservers {
        match std::fs::remove_dir_all(&ps.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("wiping {}: {e}", ps.data_dir),
        }
    }
    for ps in &pageservers {
        cluster.node("start", &ps.id)?;
    }
    cluster.node("kill", "gateway")?;
    cluster.node("start", "gateway")?;
    // The gateway answers again (its first answers may be refusals while it starts).
    let began = Instant::now();
    while api.get_text(&format!("{}/healthz", api.url)).await.is_err() {
        if began.elapsed() > Duration::from_secs(30) {
            bail!("the gateway did not come back within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = downloaded(api, &pageservers).await;
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ mb;
    let mut next_id = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % rows
    };
    let t0 = Instant::now();
    point_read(api, &tenant, next_id(), checks).await?;
    let first_read = t0.elapsed();
    let after = downloaded(api, &pageservers).await;
    let (ranged_at_first, hydrated_at_first) = (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    );
    let mut reads = Latencies::default();
    for _ in 0..MORE_READS {
        let t0 = Instant::now();
        point_read(api, &tenant, next_id(), checks).await?;
        reads.push(t0.elapsed());
    }
    // Every row, in ranges that each fit in a statement's time limit.
    let t0 = Instant::now();
    let (mut count, mut bytes) = (0i64, 0i64);
    let mut from = 0;
    while from < rows {
        let to = (from + FULL_READ_CHUNK_ROWS).min(rows) - 1;
        let v = api
            .sql(
                &tenant,
                "SELECT count(*), sum(length(pad)) FROM big WHERE id BETWEEN ? AND ?",
                json!([from, to]),
            )
            .await
            .with_context(|| format!("reading rows {from}..={to} back"))?;
        count += v
            .pointer("/results/0/rows/0/0")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        bytes += v
            .pointer("/results/0/rows/0/1")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        from = to + 1;
    }
    let full_read = t0.elapsed();
    if (count, bytes) == (rows as i64, (rows * ROW_BYTES) as i64) {
        checks.pass();
    } else {
        checks.fail(format!(
            "restore {mb} MB: read back {count} rows of {bytes} bytes, expected {rows} rows"
        ));
    }
    Ok(RestoreRun {
        mb,
        rows,
        chain_bytes,
        first_read,
        ranged_at_first,
        hydrated_at_first,
        reads,
        full_read,
    })
}
