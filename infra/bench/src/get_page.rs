//! GetPage@LSN on loopback, the page cached on the pageserver (issue #21's table).
//!
//! A tenant with one small table on a cluster of its own; then one client, closed loop, asks
//! the pageserver that serves segment 0 for page 1 (the table's root, written by the load) at
//! the tenant's VDL and writer epoch, as the gateway's page client does — over the same
//! authenticated wire protocol, with a gateway-role storage token. The first answers warm the
//! pageserver's cache; the rest are timed. Every answer is checked to be a 4,096-byte page.

use crate::borealis::{Api, Cluster};
use crate::stats::Latencies;
use crate::workload::Checks;
use anyhow::{bail, Context};
use borealis_core::{Lsn, PageNo, TenantId};
use borealis_wire::{Body, Client};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const WARM_CALLS: usize = 100;

pub struct GetPageFigures {
    pub cached: Latencies,
    pub for_: Duration,
}

pub async fn measure(
    bin_dir: &Path,
    work: &Path,
    for_: Duration,
    checks: &mut Checks,
) -> anyhow::Result<GetPageFigures> {
    let cluster = Cluster::start_with(bin_dir, work, "getpage", "60s", &[])
        .await
        .context("starting the cluster")?;
    let api: &Api = &cluster.api;
    let t = api.create_tenant(&cluster.admin_token, "getpage").await?;
    api.sql(
        &t,
        "CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT)",
        json!([]),
    )
    .await?;
    api.sql(&t, "INSERT INTO kv VALUES (1, 'one')", json!([]))
        .await?;
    let status = api.tenant_status(&cluster.admin_token, &t.name).await?;
    let (vdl, epoch) = (
        status["vdl"]
            .as_u64()
            .context("no vdl in the tenant's status")?,
        status["epoch"]
            .as_u64()
            .context("no epoch in the tenant's status")?,
    );
    let addr = status["pageserver"]
        .as_str()
        .context("no pageserver in the tenant's status")?
        .to_string();
    let tenant: TenantId =
        t.id.parse()
            .map_err(|e| anyhow::anyhow!("tenant id {:?}: {e:?}", t.id))?;
    let token = borealis_auth::ClusterKeys::open(cluster.data_dir())?
        .signing_key()
        .issue_for(borealis_auth::Role::Gateway, None, "bench", 0);
    let client = Client::connect(&addr, &token, CALL_TIMEOUT, None)
        .await
        .with_context(|| format!("connecting to pageserver {addr}"))?;
    let get = || {
        client.call(
            Body::GetPage {
                tenant,
                page: PageNo(1),
                lsn: Lsn(vdl),
                epoch,
            },
            CALL_TIMEOUT,
        )
    };
    for _ in 0..WARM_CALLS {
        get().await.context("GetPage")?;
    }
    let mut cached = Latencies::default();
    let began = Instant::now();
    while began.elapsed() < for_ {
        let t0 = Instant::now();
        let answer = get().await.context("GetPage")?;
        cached.push(t0.elapsed());
        match answer {
            Body::Page { image: Some(p) } if p.len() == 4096 => checks.pass(),
            Body::Page { image } => checks.fail(format!(
                "GetPage of page 1 answered {:?} bytes",
                image.map(|i| i.len())
            )),
            other => bail!("GetPage answered {}", other.name()),
        }
    }
    drop(cluster);
    Ok(GetPageFigures { cached, for_ })
}
