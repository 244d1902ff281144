//! What an `Idempotency-Key` costs a commit (RFC 0014 §6): the same TPC-B transfer, one client,
//! closed loop, sent alternately without a key and with a new key each time; then every keyed
//! transfer sent again with its key, which the gateway answers from the record without running
//! it.
//!
//! A keyed write is two commits: the transfer with its key's row (the key, a SHA-256 of the
//! request and the answer), then the **lsn note** that writes the first commit's LSN into that
//! row; the answer waits until the note is durable. A replay runs one look-up and no commit.
//!
//! Checked: every replay's answer is byte for byte the original's (results and `lsn`), and the
//! history grew by exactly the transfers that ran (replays added nothing).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::borealis::{Api, Tenant};
use crate::stats::Latencies;
use crate::workload::{transfer_for, Checks, SQLITE};

/// What the comparison measured.
#[derive(Clone, Debug)]
pub struct KeyedFigures {
    /// Transfers without a key, and with a new key each.
    pub plain: Latencies,
    pub keyed: Latencies,
    /// The keyed transfers sent again with their keys.
    pub replays: Latencies,
}

/// The client number the transfers are drawn for (apart from the TPC-B suite's clients).
const CLIENT: usize = 9_001;

fn body(seq: u64, accounts: u64) -> Value {
    let t = transfer_for(CLIENT, seq, accounts);
    let [a, b] = t.updates();
    json!({"batch": [
        {"sql": SQLITE.update_balance, "params": [a.0, a.1]},
        {"sql": SQLITE.update_balance, "params": [b.0, b.1]},
        {"sql": SQLITE.insert_history, "params": [t.src, t.dst, t.amount]},
    ]})
}

async fn history_rows(api: &Api, tenant: &Tenant) -> anyhow::Result<i64> {
    let v = api
        .sql(tenant, "SELECT count(*) FROM history", json!([]))
        .await?;
    crate::borealis::scalar(&v, 0)
}

/// Runs the comparison for `duration` (half without keys, half with), then the replays.
pub async fn measure(
    api: &Api,
    tenant: &Tenant,
    accounts: u64,
    duration: Duration,
    checks: &mut Checks,
) -> anyhow::Result<KeyedFigures> {
    let before = history_rows(api, tenant).await?;
    let mut f = KeyedFigures {
        plain: Latencies::default(),
        keyed: Latencies::default(),
        replays: Latencies::default(),
    };
    let mut answers: Vec<(String, Value, Value)> = Vec::new();
    let run = format!("{:x}", rand_tag());
    let end = Instant::now() + duration;
    let mut seq = 0u64;
    while Instant::now() < end {
        seq += 1;
        let b = body(seq, accounts);
        let t = Instant::now();
        if seq.is_multiple_of(2) {
            api.request(tenant, &b)
                .await
                .context("a transfer without a key")?;
            f.plain.push(t.elapsed());
        } else {
            let key = format!("bench-{run}-{seq}");
            let (v, replayed) = api
                .keyed(tenant, &b, &key)
                .await
                .context("a transfer with a key")?;
            f.keyed.push(t.elapsed());
            if replayed {
                bail!("the first use of key {key} was answered as a replay");
            }
            answers.push((key, b, v));
        }
    }
    for (key, b, original) in &answers {
        let t = Instant::now();
        let (v, replayed) = api.keyed(tenant, b, key).await.context("a replay")?;
        f.replays.push(t.elapsed());
        if replayed && &v == original {
            checks.pass();
        } else {
            checks.fail(format!(
                "a repeat of key {key} was not the original answer (replayed: {replayed}): \
                 {v:.200} vs {original:.200}"
            ));
        }
    }
    let grew = history_rows(api, tenant).await? - before;
    let ran = (f.plain.len() + f.keyed.len()) as i64;
    if grew == ran {
        checks.pass();
    } else {
        checks.fail(format!(
            "keyed transfers: the history grew by {grew} rows for {ran} transfers run (and {} \
             replayed)",
            f.replays.len()
        ));
    }
    Ok(f)
}

/// A tag that keeps this run's keys apart from an earlier run's on the same cluster.
fn rand_tag() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
