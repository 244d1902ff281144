//! A volume of many segments over a pool of storage nodes (issue #17) against a volume of one.
//!
//! The same table of `--segments-mb` MB (4,000-byte rows, one B-tree page each, loaded in 2 MB
//! transactions of `INSERT ... SELECT randomblob(4000)` over a recursive CTE) goes into a tenant
//! of two clusters started side by side in turn:
//!
//! - **one segment**: `borealis up` as it comes (10 GiB segments, six safekeepers, two
//!   pageservers), so the whole volume is one protection group and one pageserver;
//! - **many segments**: `--segment-size 16MiB --safekeepers 9 --pageservers 3`, so the volume is
//!   dozens of groups of six drawn from nine safekeepers, spread over three pageservers, and
//!   every commit that grows the table is an MTR over two groups (the table's new page and page
//!   1, SQLite's header).
//!
//! For each: the load rate, then the latency of point reads of random rows (one client, closed
//! loop, `SELECT length(pad) FROM big WHERE id = ?`: the table is many times the gateway's page
//! caches, so most reads go to a pageserver), every answer checked; and the number of segments
//! that hold data, from `GET /v1/tenants/{name}`.

use crate::borealis::{Api, Cluster, Tenant};
use crate::stats::Latencies;
use crate::workload::Checks;
use anyhow::Context;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const ROW_BYTES: u64 = 4_000;
/// How long point reads are measured per configuration.
const READS_FOR: Duration = Duration::from_secs(5);

/// One configuration's figures.
pub struct SegmentsRun {
    pub label: &'static str,
    pub args: &'static [&'static str],
    pub segments: usize,
    pub load: Duration,
    pub reads: Latencies,
}

pub struct SegmentsFigures {
    pub mb: u64,
    pub rows: u64,
    pub runs: Vec<SegmentsRun>,
}

const CONFIGS: [(&str, &[&str]); 2] = [
    (
        "one segment (10 GiB segments, 6 safekeepers, 2 pageservers)",
        &[],
    ),
    (
        "many segments (16 MiB, 9 safekeepers, 3 pageservers)",
        &[
            "--segment-size",
            "16MiB",
            "--safekeepers",
            "9",
            "--pageservers",
            "3",
        ],
    ),
];

/// Loads and reads the table on each configuration in turn.
pub async fn measure(
    bin_dir: &Path,
    work: &Path,
    mb: u64,
    checks: &mut Checks,
) -> anyhow::Result<SegmentsFigures> {
    let rows = (mb * 1_000_000 / ROW_BYTES).max(1);
    let mut runs = Vec::new();
    for (i, (label, args)) in CONFIGS.iter().enumerate() {
        let cluster = Cluster::start_with(bin_dir, work, &format!("segments-{i}"), "60s", args)
            .await
            .with_context(|| format!("starting the cluster: {label}"))?;
        let run = one(&cluster, label, args, rows, checks).await;
        drop(cluster);
        runs.push(run.with_context(|| label.to_string())?);
    }
    Ok(SegmentsFigures { mb, rows, runs })
}

async fn one(
    cluster: &Cluster,
    label: &'static str,
    args: &'static [&'static str],
    rows: u64,
    checks: &mut Checks,
) -> anyhow::Result<SegmentsRun> {
    let api: &Api = &cluster.api;
    let tenant: Tenant = api.create_tenant(&cluster.admin_token, "big").await?;
    let load = crate::scan::load_big_table(api, &tenant, rows).await?;
    let status = api
        .tenant_status(&cluster.admin_token, &tenant.name)
        .await?;
    let segments = status["segments"].as_array().map_or(0, Vec::len);
    let mut reads = Latencies::default();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let began = Instant::now();
    while began.elapsed() < READS_FOR {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = (state % rows) as i64;
        let t0 = Instant::now();
        let v = api
            .sql(
                &tenant,
                "SELECT length(pad) FROM big WHERE id = ?",
                json!([id]),
            )
            .await?;
        reads.push(t0.elapsed());
        match v.pointer("/results/0/rows/0/0").and_then(|x| x.as_i64()) {
            Some(4000) => checks.pass(),
            other => checks.fail(format!("{label}: row {id} read back {other:?}")),
        }
    }
    Ok(SegmentsRun {
        label,
        args,
        segments,
        load,
        reads,
    })
}
