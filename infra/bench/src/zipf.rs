//! Many tenants, few of them busy: point reads spread over many tenants by a Zipf law (issue #21,
//! "2,000 tenants, Zipf reads by 16 clients, computes idle after 2 s").
//!
//! The harness creates `--zipf-tenants` tenants (2,000 by default), each with one small table and
//! one row, a few at a time. Then closed-loop clients (16) each pick a tenant by a Zipf law of
//! exponent 1 over the tenants' ranks (rank 1 is asked most; a tenant of rank k about 1/k as
//! often) and read its row by primary key, checking the value. The cluster runs with a short
//! idle timeout (the Borealis cluster of this harness: 1 s), so popular tenants keep a running
//! compute and rare ones pay a cold start (recovery, instantiate, open) on their next read: the
//! figure is what serving many mostly idle tenants costs. The gateway's cold-start count over the
//! run says how many reads were cold. Sampling uses its own seeded generator: the same run asks
//! the same tenants in the same order.

use crate::borealis::{create_kv_tenant, prometheus_value, scalar, Cluster, Tenant};
use crate::stats::Latencies;
use crate::workload::Checks;
use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tenants created at once while setting up.
const SETUP_CONCURRENCY: usize = 8;
/// Closed-loop clients reading.
pub const CLIENTS: usize = 16;
/// The Zipf law's exponent.
const EXPONENT: f64 = 1.0;

pub struct ZipfFigures {
    pub tenants: usize,
    pub clients: usize,
    pub reads: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// Cold starts the gateway counted during the reads.
    pub cold_starts: u64,
    pub setup: Duration,
}

impl ZipfFigures {
    pub fn per_sec(&self) -> f64 {
        self.reads as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A seeded SplitMix64 generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The cumulative distribution of a Zipf law over `n` ranks.
fn zipf_cdf(n: usize, exponent: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(exponent)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

/// The rank (0-based) `u` in `[0, 1)` falls on.
fn sample(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
}

async fn cold_starts(cluster: &Cluster) -> anyhow::Result<f64> {
    let text = cluster
        .api
        .get_text(&format!("{}/metrics", cluster.api.url))
        .await?;
    prometheus_value(&text, "borealis_gateway_cold_start_seconds_count")
        .context("no cold-start histogram on the gateway's /metrics")
}

fn value_of(i: usize) -> i64 {
    i as i64 * 11 + 3
}

pub async fn measure(
    cluster: &Cluster,
    tenants: usize,
    duration: Duration,
    checks: &mut Checks,
) -> anyhow::Result<ZipfFigures> {
    let api = &cluster.api;
    let started = Instant::now();
    let mut created: Vec<(usize, Tenant)> = futures::stream::iter(0..tenants)
        .map(|i| async move {
            let name = format!("zipf-{i}");
            let t = create_kv_tenant(api, &cluster.admin_token, &name, value_of(i)).await?;
            anyhow::Ok((i, t))
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    created.sort_by_key(|(i, _)| *i);
    let setup = started.elapsed();
    println!(
        "  {tenants} tenants created in {:.1} s; reading by a Zipf law with {CLIENTS} clients",
        setup.as_secs_f64()
    );
    // Let the setup's computes go idle, so the run starts from a cluster at rest.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cdf = Arc::new(zipf_cdf(tenants, EXPONENT));
    let created = Arc::new(created);
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Latencies::default()));
    let wrong: Arc<Mutex<Vec<String>>> = Arc::default();
    let cold_before = cold_starts(cluster).await?;
    let run_started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (api, cdf, created, stop, latencies, wrong) = (
                api.clone(),
                cdf.clone(),
                created.clone(),
                stop.clone(),
                latencies.clone(),
                wrong.clone(),
            );
            tokio::spawn(async move {
                let mut rng = Rng(0x5eed_0000 + c as u64);
                let (mut ok, mut errors) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let rank = sample(&cdf, rng.next_f64());
                    let (i, t) = &created[rank];
                    let t0 = Instant::now();
                    match api.sql(t, "SELECT v FROM kv WHERE k = 1", json!([])).await {
                        Ok(v) => {
                            latencies.lock().expect("latencies lock").push(t0.elapsed());
                            ok += 1;
                            if scalar(&v, 0).ok() != Some(value_of(*i)) {
                                wrong.lock().expect("wrong lock").push(format!(
                                    "tenant zipf-{i} answered {v}, expected {}",
                                    value_of(*i)
                                ));
                            }
                        }
                        Err(_) => errors += 1,
                    }
                }
                (ok, errors)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let (mut reads, mut errors) = (0, 0);
    for c in clients {
        let (ok, e) = c.await?;
        reads += ok;
        errors += e;
    }
    let elapsed = run_started.elapsed();
    let cold = cold_starts(cluster).await? - cold_before;
    let wrong = wrong.lock().expect("wrong lock").clone();
    if wrong.is_empty() && reads > 0 {
        checks.pass();
    }
    for w in wrong.iter().take(5) {
        checks.fail(w.clone());
    }
    if reads == 0 {
        bail!("no Zipf read succeeded in {duration:?} ({errors} errors)");
    }
    let latencies = latencies.lock().expect("latencies lock").clone();
    Ok(ZipfFigures {
        tenants,
        clients: CLIENTS,
        reads,
        errors,
        elapsed,
        latencies,
        cold_starts: cold.max(0.0) as u64,
        setup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zipf_law_favours_low_ranks_as_it_should() {
        let cdf = zipf_cdf(2000, 1.0);
        assert!((cdf[cdf.len() - 1] - 1.0).abs() < 1e-9);
        let mut rng = Rng(1);
        let mut counts = vec![0u32; 2000];
        for _ in 0..200_000 {
            counts[sample(&cdf, rng.next_f64())] += 1;
        }
        // Rank 1 over rank 2 is about 2, and rank 1's share is 1 / H(2000) ≈ 12 %.
        let ratio = f64::from(counts[0]) / f64::from(counts[1]);
        assert!((1.8..2.2).contains(&ratio), "rank 1 ÷ rank 2 = {ratio}");
        let share = f64::from(counts[0]) / 200_000.0;
        assert!((0.11..0.14).contains(&share), "rank 1's share {share}");
        assert!(counts[1999] > 0, "the last rank is asked too");
    }
}
