//! Replica lag under the TPC-B load: how stale a read replica's answers are.
//!
//! A replica request (`{"sql", "replica": true}`) is served by the tenant's reader compute at its
//! read point, which trails the writer: the reader applies the writer's redo stream
//! asynchronously. Each replica answer carries its `read_point` (an LSN).
//!
//! While [`TRANSFER_CLIENTS`] clients run transfers on the writer (each acknowledgement noted
//! with the LSN it depends on and when it arrived), [`READERS`] clients read from the replica in
//! a loop. For each replica request, sent at time `T` and answered at read point `R`, the **lag**
//! is `T − A`, where `A` is when the earliest acknowledged transfer the answer does not show
//! (acknowledged with an LSN above `R`) was acknowledged; zero if the answer shows every transfer
//! acknowledged before the request was sent. That is the staleness a client sees: how long
//! before its question a commit it could have known about was acknowledged, yet the answer
//! does not show it. (Measured from the request, not the answer, so the query's own run time —
//! a scan of every account — does not count as lag.) (An acknowledgement carries the newest LSN the
//! writer had when the transfer finished, at or above its commit LSN, so this errs towards
//! more lag, never less.) The gateway's own `borealis_gateway_replica_lag_seconds` mean is read
//! too.
//!
//! **Correctness.** The replica query is `sum(balance)` over all accounts: a replica must never
//! show half a transfer, so every answer must be exactly `accounts × INITIAL_BALANCE`; and one
//! reader's read points must never go backwards.

use crate::borealis::{prometheus_value, scalar, transfer, Api, Cluster, Tenant};
use crate::stats::Latencies;
use crate::workload::{Checks, INITIAL_BALANCE};
use anyhow::Context;
use borealis_utils::LockExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TRANSFER_CLIENTS: usize = 8;
pub const READERS: usize = 2;

pub struct ReplicaFigures {
    pub transfers: u64,
    pub answers: u64,
    pub lag: Latencies,
    /// LSNs between the newest acknowledgement before a question and its answer's read
    /// point: p50 and p99.
    pub lag_lsn_p50: u64,
    pub lag_lsn_p99: u64,
    /// Mean of the gateway's replica-lag histogram over the run.
    pub gateway_mean: Option<Duration>,
}

async fn gateway_lag(api: &Api) -> anyhow::Result<(f64, f64)> {
    let text = api.get_text(&format!("{}/metrics", api.url)).await?;
    let sum = prometheus_value(&text, "borealis_gateway_replica_lag_seconds_sum")
        .context("no replica-lag histogram on the gateway's /metrics")?;
    let count = prometheus_value(&text, "borealis_gateway_replica_lag_seconds_count")
        .context("no replica-lag histogram on the gateway's /metrics")?;
    Ok((sum, count))
}

/// Runs the load for `duration` on the TPC-B tenant `t`. Returns the figures and the number of
/// transfers acknowledged and failed (they are in the history from now on).
pub async fn measure(
    cluster: &Cluster,
    t: &Tenant,
    accounts: u64,
    duration: Duration,
    checks: &mut Checks,
) -> anyhow::Result<(ReplicaFigures, u64, u64)> {
    let api = &cluster.api;
    // Start the reader (its first request is a cold start) before the clock.
    replica_sum(api, t).await?;
    let (sum0, count0) = gateway_lag(api).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut writers = Vec::new();
    for c in 0..TRANSFER_CLIENTS {
        let (api, t, stop, acks) = (api.clone(), t.clone(), stop.clone(), acks.clone());
        writers.push(tokio::spawn(async move {
            let (mut seq, mut failed) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                // Client ids and sequence numbers unused by the other workloads.
                match transfer(&api, &t, 2000 + c, seq, accounts).await {
                    Ok(lsn) => acks.locked().push((lsn, Instant::now())),
                    Err(_) => failed += 1,
                }
                seq += 1;
            }
            failed
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (api, t, stop) = (api.clone(), t.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut answers: Vec<(u64, Instant, i64)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let (read_point, sum) = replica_sum(&api, &t).await?;
                answers.push((read_point, asked, sum));
            }
            anyhow::Ok(answers)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut failed = 0;
    for w in writers {
        failed += w.await.context("a transfer client failed")?;
    }
    let mut answers = Vec::new();
    let expected = accounts as i64 * INITIAL_BALANCE;
    for r in readers {
        let mine = r.await.context("a replica reader failed")??;
        if mine.windows(2).any(|w| w[1].0 < w[0].0) {
            checks.fail("a replica reader's read point went backwards".into());
        } else {
            checks.pass();
        }
        answers.extend(mine);
    }
    let torn = answers.iter().filter(|a| a.2 != expected).count();
    if torn == 0 {
        checks.pass();
    } else {
        checks.fail(format!(
            "{torn} of {} replica answers saw sum(balance) other than {expected}: a transfer was half-visible",
            answers.len()
        ));
    }
    let (sum1, count1) = gateway_lag(api).await?;
    let n = count1 - count0;
    let gateway_mean = (n >= 1.0).then(|| Duration::from_secs_f64(((sum1 - sum0) / n).max(0.0)));
    let acks = Arc::try_unwrap(acks)
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .unwrap_or_else(|a| a.locked().clone());
    let (lag, mut lag_lsn) = staleness(&acks, &answers);
    lag_lsn.sort_unstable();
    let pick = |p: f64| -> u64 {
        if lag_lsn.is_empty() {
            0
        } else {
            lag_lsn
                [(((p / 100.0) * lag_lsn.len() as f64).ceil() as usize).clamp(1, lag_lsn.len()) - 1]
        }
    };
    let figures = ReplicaFigures {
        transfers: acks.len() as u64,
        answers: answers.len() as u64,
        lag,
        lag_lsn_p50: pick(50.0),
        lag_lsn_p99: pick(99.0),
        gateway_mean,
    };
    Ok((figures, acks.len() as u64, failed))
}

/// `(read point, sum(balance))` from the replica.
async fn replica_sum(api: &Api, t: &Tenant) -> anyhow::Result<(u64, i64)> {
    let v: Value = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/tenants/{}/sql", t.name),
            &t.token,
            Some(&json!({
                "sql": "SELECT coalesce(sum(balance), 0) FROM accounts",
                "params": [],
                "replica": true,
            })),
        )
        .await?;
    let read_point = v["read_point"]
        .as_u64()
        .context("a replica answer without a read_point")?;
    Ok((read_point, scalar(&v, 0)?))
}

/// For each answer `(read point, time asked, _)`: how long before the question the earliest
/// acknowledged commit the answer does not show was acknowledged (see the module docs), and how many LSNs the newest
/// acknowledgement before it was ahead of its read point.
fn staleness(acks: &[(u64, Instant)], answers: &[(u64, Instant, i64)]) -> (Latencies, Vec<u64>) {
    let mut by_lsn = acks.to_vec();
    by_lsn.sort_unstable_by_key(|a| a.0);
    // earliest[i]: the earliest acknowledgement among by_lsn[i..].
    let mut earliest: Vec<Instant> = Vec::with_capacity(by_lsn.len());
    for (_, at) in by_lsn.iter().rev() {
        let e = earliest
            .last()
            .map_or(*at, |prev: &Instant| (*prev).min(*at));
        earliest.push(e);
    }
    earliest.reverse();
    let mut by_time = acks.to_vec();
    by_time.sort_unstable_by_key(|a| a.1);
    // newest[i]: the highest LSN among by_time[..=i].
    let newest: Vec<u64> = by_time
        .iter()
        .scan(0u64, |max, a| {
            *max = (*max).max(a.0);
            Some(*max)
        })
        .collect();
    let mut lag = Latencies::default();
    let mut lag_lsn = Vec::with_capacity(answers.len());
    for &(read_point, at, _) in answers {
        let first_unseen = by_lsn.partition_point(|a| a.0 <= read_point);
        let stale = earliest
            .get(first_unseen)
            .filter(|e| **e < at)
            .map_or(Duration::ZERO, |e| at - *e);
        lag.push(stale);
        // The newest LSN acknowledged before the question.
        let before = by_time.partition_point(|a| a.1 < at);
        let newest_lsn = before.checked_sub(1).map_or(0, |i| newest[i]);
        lag_lsn.push(newest_lsn.saturating_sub(read_point));
    }
    (lag, lag_lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_counts_from_the_earliest_unseen_acknowledgement() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let acks = [(10, at(0)), (20, at(5)), (30, at(8))];
        let answers = [(10, at(10), 0), (30, at(12), 0), (5, at(3), 0)];
        let (mut lag, lsn) = staleness(&acks, &answers);
        // Sees 10, misses 20 (acked at 5) and 30: 10 - 5 = 5 ms.
        // Sees everything: 0. Misses 10 (acked at 0) at 3: 3 ms.
        assert_eq!(lsn, vec![20, 0, 5]);
        // Sorted lags: 0, 3, 5 ms.
        assert_eq!(lag.percentile(100.0), Duration::from_millis(5));
        assert_eq!(lag.p50(), Duration::from_millis(3));
        assert_eq!(lag.percentile(1.0), Duration::ZERO);
    }
}
