//! Redo shipped per transaction, read back from a safekeeper, against the pages it dirtied.
//!
//! A page-shipping database writes every page a transaction dirtied (4 KiB each, plus a
//! full-page image in the WAL after each checkpoint, in PostgreSQL's case). Borealis ships only
//! redo: per changed page, a record with a byte-range delta against the page's previous image
//! (or a full image when that is smaller). One record per changed page, so the number of records
//! *is* the number of pages dirtied.
//!
//! The harness runs [`SAMPLE_TRANSFERS`] TPC-B transfers on the cluster, notes the tenant's LSN
//! before and after (every SQL answer carries the LSN it depends on), and reads exactly that
//! LSN range back from the first safekeeper over `borealis_wire` (`ReadLog`). The bytes are the
//! records as the safekeeper stores them (44-byte header + body). Safekeepers trim log that a
//! pageserver checkpoint covers; if the range was trimmed before it could be read, the sample is
//! taken again.

use crate::borealis::{transfer, Api, Cluster, Tenant};
use anyhow::{bail, Context};
use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId, TenantId};
use borealis_wire::{Body, Client};
use serde_json::{json, Value};
use std::time::Duration;

/// Transfers per sample: small enough that a checkpoint rarely trims it before it is read.
pub const SAMPLE_TRANSFERS: u64 = 240;
const SAMPLE_CLIENTS: usize = 8;
const ATTEMPTS: usize = 3;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct RedoSample {
    pub transactions: u64,
    pub records: u64,
    pub bytes: u64,
}

async fn current_lsn(api: &Api, t: &Tenant) -> anyhow::Result<u64> {
    let v: Value = api.sql(t, "SELECT 1", json!([])).await?;
    v["lsn"].as_u64().context("SQL answer without an lsn")
}

/// Takes the sample on `tenant` (a TPC-B tenant with `accounts` accounts). Returns the sample
/// and how many transfers were acknowledged (they are in the history from now on).
pub async fn measure(
    cluster: &Cluster,
    t: &Tenant,
    accounts: u64,
) -> anyhow::Result<(RedoSample, u64)> {
    let sk_addr = cluster
        .safekeeper_wire()
        .into_iter()
        .next()
        .context("cluster.json lists no safekeeper")?;
    let tenant: TenantId =
        t.id.parse()
            .map_err(|e| anyhow::anyhow!("tenant id {:?}: {e:?}", t.id))?;
    let client = Client::connect(&sk_addr, &cluster.log_reader_token()?, CALL_TIMEOUT, None)
        .await
        .with_context(|| format!("connecting to safekeeper {sk_addr}"))?;
    let mut acked_total = 0;
    for attempt in 1..=ATTEMPTS {
        let from = current_lsn(&cluster.api, t).await?;
        let mut tasks = Vec::new();
        for c in 0..SAMPLE_CLIENTS {
            let (api, t) = (cluster.api.clone(), t.clone());
            tasks.push(tokio::spawn(async move {
                let per_client = SAMPLE_TRANSFERS / SAMPLE_CLIENTS as u64;
                for i in 0..per_client {
                    // Client ids and sequence numbers unused by the other workloads.
                    transfer(&api, &t, 1000 + c, (attempt as u64) << 48 | i, accounts).await?;
                }
                anyhow::Ok(per_client)
            }));
        }
        for task in tasks {
            acked_total += task.await.context("a sample client failed")??;
        }
        let to = current_lsn(&cluster.api, t).await?;
        match read_range(&client, tenant, from, to).await? {
            Some((records, bytes)) => {
                return Ok((
                    RedoSample {
                        transactions: SAMPLE_TRANSFERS / SAMPLE_CLIENTS as u64
                            * SAMPLE_CLIENTS as u64,
                        records,
                        bytes,
                    },
                    acked_total,
                ))
            }
            None => eprintln!(
                "  redo sample {attempt}: the range was trimmed before it was read; again"
            ),
        }
    }
    bail!("every redo sample was trimmed before it could be read")
}

/// Reads records `(from, to]` of segment 0; `None` if the safekeeper no longer has all of them.
async fn read_range(
    client: &Client,
    tenant: TenantId,
    from: u64,
    to: u64,
) -> anyhow::Result<Option<(u64, u64)>> {
    let (mut after, mut records, mut bytes) = (from, 0u64, 0u64);
    let mut idle_rounds = 0;
    while after < to {
        let answer = client
            .call(
                Body::ReadLog {
                    tenant,
                    segment: SegmentId(0),
                    epoch: None,
                    min_epoch: 0,
                    after: Lsn(after),
                    upto: Lsn(to),
                    max_bytes: 1 << 20,
                    wait_ms: 200,
                },
                CALL_TIMEOUT,
            )
            .await
            .context("ReadLog")?;
        let raw = match answer {
            Body::Records { records, .. } => records,
            // A checkpoint let the safekeeper drop the start of the range: sample again.
            Body::LogTrimmed { .. } => return Ok(None),
            other => bail!("unexpected answer to ReadLog: {}", other.name()),
        };
        let batch = RedoRecord::decode_all(&raw).context("records from ReadLog do not decode")?;
        let Some(first) = batch.first() else {
            // This member has not caught up yet (it was outside the write quorum).
            idle_rounds += 1;
            if idle_rounds > 50 {
                bail!("safekeeper held nothing after LSN {after} (of {to}) for 10 s");
            }
            continue;
        };
        if first.lsn.0 != after + 1 {
            // Trimmed (or a gap): this sample cannot be counted.
            return Ok(None);
        }
        records += batch.len() as u64;
        bytes += raw.len() as u64;
        after = batch.last().map_or(after, |r| r.lsn.0);
    }
    if records != to - from {
        return Ok(None);
    }
    Ok(Some((records, bytes)))
}
