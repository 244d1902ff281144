//! Cold start of an idle tenant: from the first request to the first result.
//!
//! A Borealis tenant that has been idle for `--idle-timeout` has no compute at all: no wasm
//! instance, no writer, no connections. Its next request must (1) start a writer: resume the
//! epoch of its last writer if that one retired settled (a `Hello` in the same epoch to the six
//! safekeepers, nothing fsynced; RFC 0017), else recover the volume (states, a `Fence` and a new
//! epoch fsynced on each member, the VDL) — then (2) instantiate the SQLite module and open the
//! volume, whose first pages come from the pageserver (GetPage@VDL), and only then (3) run the
//! statement. The gateway's `borealis_gateway_writer_resumes_total` says how many resumed.
//!
//! The harness creates tenants, each with one small table, lets every compute go idle
//! (the cluster runs with a short idle timeout, and the harness waits until the API reports
//! each compute `idle`), then sends each tenant one point `SELECT` in turn and times it at the
//! client. The gateway's own `borealis_gateway_cold_start_seconds` histogram (recovery +
//! instantiate + open, without the statement and HTTP) is read before and after for its mean.
//! For scale, the same `SELECT` against a running compute is timed too ("warm"). This is done
//! for a few tenant counts in turn (10, 30 and 50 by default): a cold start should not depend on
//! how many other tenants the cluster holds.

use crate::borealis::{create_kv_tenant, prometheus_value, scalar, Cluster, Tenant};
use crate::stats::Latencies;
use crate::workload::Checks;
use anyhow::{bail, Context};
use serde_json::json;
use std::time::{Duration, Instant};

/// How long the harness waits for every compute to be reported idle.
const IDLE_WAIT_MAX: Duration = Duration::from_secs(60);

pub struct ColdStartFigures {
    /// Tenants on the cluster in this round (each cold-started once).
    pub tenants: usize,
    pub cold: Latencies,
    /// The tenants created in this round, right after their insert.
    pub warm: Latencies,
    /// Mean of the gateway's cold-start histogram over the measured starts (server side).
    pub gateway_mean: Option<Duration>,
    /// Of those starts, how many resumed their last writer's epoch instead of recovering.
    pub resumed: u64,
}

async fn gateway_cold_starts(cluster: &Cluster) -> anyhow::Result<(f64, f64)> {
    let text = cluster
        .api
        .get_text(&format!("{}/metrics", cluster.api.url))
        .await?;
    let sum = prometheus_value(&text, "borealis_gateway_cold_start_seconds_sum")
        .context("no cold-start histogram on the gateway's /metrics")?;
    let count = prometheus_value(&text, "borealis_gateway_cold_start_seconds_count")
        .context("no cold-start histogram on the gateway's /metrics")?;
    Ok((sum, count))
}

/// Measures cold starts over `counts` tenants in turn (ascending): the tenants of one round
/// are kept for the next, which adds more, so each round shows how cold start behaves with that
/// many tenants on the cluster.
pub async fn measure(
    cluster: &Cluster,
    counts: &[usize],
    checks: &mut Checks,
) -> anyhow::Result<Vec<ColdStartFigures>> {
    let api = &cluster.api;
    let mut created: Vec<Tenant> = Vec::new();
    let mut rounds = Vec::new();
    for &tenants in counts {
        let mut warm = Latencies::default();
        for i in created.len()..tenants {
            let t = create_kv_tenant(
                api,
                &cluster.admin_token,
                &format!("cold-{i}"),
                i as i64 * 7,
            )
            .await?;
            let t0 = Instant::now();
            let v = api
                .sql(&t, "SELECT v FROM kv WHERE k = 1", json!([]))
                .await?;
            warm.push(t0.elapsed());
            if scalar(&v, 0)? != i as i64 * 7 {
                bail!("tenant cold-{i} returned {v} right after its insert");
            }
            created.push(t);
        }
        rounds.push(measure_round(cluster, &created, warm, checks).await?);
    }
    Ok(rounds)
}

/// Lets every compute stop, then sends each tenant one point `SELECT`, in turn.
async fn measure_round(
    cluster: &Cluster,
    created: &[Tenant],
    warm: Latencies,
    checks: &mut Checks,
) -> anyhow::Result<ColdStartFigures> {
    let api = &cluster.api;
    let tenants = created.len();
    // Wait until every compute has stopped.
    let started = Instant::now();
    for t in created {
        while api.compute_running(&cluster.admin_token, &t.name).await? {
            if started.elapsed() > IDLE_WAIT_MAX {
                bail!(
                    "tenant {}'s compute was still running {IDLE_WAIT_MAX:?} after its last request: is the idle timeout short?",
                    t.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (sum0, count0) = gateway_cold_starts(cluster).await?;
    let resumes0 = writer_resumes(cluster).await?;
    let mut cold = Latencies::default();
    for (i, t) in created.iter().enumerate() {
        let t0 = Instant::now();
        let v = api
            .sql(t, "SELECT v FROM kv WHERE k = 1", json!([]))
            .await?;
        cold.push(t0.elapsed());
        match scalar(&v, 0) {
            Ok(x) if x == i as i64 * 7 => checks.pass(),
            other => checks.fail(format!(
                "cold start of {}: expected {}, got {other:?}",
                t.name,
                i as i64 * 7
            )),
        }
    }
    let (sum1, count1) = gateway_cold_starts(cluster).await?;
    let resumed = (writer_resumes(cluster).await? - resumes0).max(0.0) as u64;
    let starts = count1 - count0;
    let gateway_mean =
        (starts >= 1.0).then(|| Duration::from_secs_f64(((sum1 - sum0) / starts).max(0.0)));
    if starts < tenants as f64 {
        checks.fail(format!(
            "the gateway counted {starts} cold starts for {tenants} requests to idle tenants"
        ));
    }
    Ok(ColdStartFigures {
        tenants,
        cold,
        warm,
        gateway_mean,
        resumed,
    })
}

/// The gateway's count of writers that resumed an idle writer's epoch (RFC 0017).
async fn writer_resumes(cluster: &Cluster) -> anyhow::Result<f64> {
    let text = cluster
        .api
        .get_text(&format!("{}/metrics", cluster.api.url))
        .await?;
    prometheus_value(&text, "borealis_gateway_writer_resumes_total")
        .context("no writer-resume counter on the gateway's /metrics")
}
