//! Drill 6 (docs/design.md §6, "object store unavailable"): the cluster checkpoints to the real
//! S3-protocol server (s3s-fs). Under load, once checkpoints run and the safekeepers trim behind
//! them, s3s-fs is killed for several seconds, then started again over the same objects.
//!
//! - **SQL goes on**: no pageserver or compute path waits for the object store, so clients see
//!   no error at all.
//! - **Checkpoints wait, and say so**: the pageserver's checkpointed LSN stays where it was while
//!   its ingest goes on, and its object-store failure counter rises (the safekeepers keep the log
//!   meanwhile: the drill prints how much they hold above their trim base).
//! - **They catch up**: once the store is back, checkpoints complete up to (and past) the LSN the
//!   last acknowledged write returned, and every safekeeper trims up to there.

use borealis_tests::checkers::{
    base_of, log_lines, scl_of, tenant_hex, write_availability, DrillReport,
};
use borealis_tests::cluster::{checkpointed_lsn, ClusterOptions, TestCluster};
use borealis_tests::s3::S3Server;
use borealis_tests::workload::{LoadConfig, Outcome, Workload, WorkloadConfig};
use serde_json::Value;
use std::time::{Duration, Instant};

const BUCKET: &str = "borealis";
const TENANT: &str = "bank";
/// How long the object store stays down.
const OUTAGE: Duration = Duration::from_secs(6);

fn options(s3: &S3Server) -> ClusterOptions {
    ClusterOptions {
        object_store: Some(s3.url(BUCKET)),
        // The load applies ~650 records/s: checkpoint often, so that the outage stops several.
        env: vec![
            ("PAGESERVER_CHECKPOINT_RECORDS".into(), "1000".into()),
            ("PAGESERVER_CHECKPOINT_INTERVAL".into(), "500ms".into()),
        ],
        ..ClusterOptions::default()
    }
}

fn failures(seg: &Value) -> u64 {
    seg["checkpoint"]["object_store_failures"]
        .as_u64()
        .unwrap_or(0)
}

fn caught_up(seg: &Value) -> u64 {
    seg["caught_up_to"].as_u64().unwrap_or(0)
}

/// Every safekeeper's `(trim base, SCL)` of the tenant's segment 0 (`(0, 0)`: no answer).
async fn safekeeper_logs(c: &TestCluster, tenant: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for sk in c.node_ids("safekeeper") {
        out.push(
            c.node_status(&sk)
                .await
                .map(|s| (base_of(&s, tenant), scl_of(&s, tenant)))
                .unwrap_or((0, 0)),
        );
    }
    out
}

fn bases(logs: &[(u64, u64)]) -> Vec<u64> {
    logs.iter().map(|l| l.0).collect()
}

/// The most log any safekeeper holds above its trim base, in records.
fn held_above_base(logs: &[(u64, u64)]) -> u64 {
    logs.iter()
        .map(|(base, scl)| scl.saturating_sub(*base))
        .max()
        .unwrap_or(0)
}

/// The highest LSN an acknowledged write returned.
fn last_acked_lsn(w: &Workload) -> u64 {
    w.history()
        .writes
        .iter()
        .filter_map(|w| match w.outcome {
            Outcome::Acked { lsn } => Some(lsn),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// Polls the segment until `f` holds, at most `within`: `Ok((segment, waited))`, or `Err` with
/// the last segment status.
async fn wait_segment(
    c: &TestCluster,
    ps: &str,
    tenant: &str,
    within: Duration,
    f: impl Fn(&Value) -> bool,
) -> Result<(Value, Duration), Value> {
    let started = Instant::now();
    loop {
        let seg = c.pageserver_segment(ps, tenant).await;
        if f(&seg) {
            return Ok((seg, started.elapsed()));
        }
        if started.elapsed() > within {
            return Err(seg);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_6_object_store_down_under_load() {
    let mut s3 = S3Server::start(BUCKET);
    let c = TestCluster::start_with(options(&s3)).await;
    let w = Workload::setup(&c, TENANT, WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, TENANT).await;
    let ps = c.serving_pageserver(TENANT).await;
    let load = LoadConfig {
        duration: Duration::from_secs(15),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 6: the object store (s3s-fs) stopped for {} s under load",
        OUTAGE.as_secs()
    ));
    report.line(format!(
        "load: {} writers, {} readers, {} s; seed {:#x}; checkpoint every 1,000 records or 0.5 s; \
         {TENANT} served by {ps}",
        load.writers,
        load.readers,
        load.duration.as_secs(),
        w.config.seed
    ));

    let started = w.now();
    let running = w.spawn(load);
    // Checkpoints and trims run before the fault.
    let before = wait_segment(&c, &ps, &tenant, Duration::from_secs(10), |s| {
        checkpointed_lsn(s) > 0
    })
    .await
    .unwrap_or_else(|seg| panic!("no checkpoint within 10 s of load: {seg:#}"));
    w.sleep_until(started + Duration::from_secs(3)).await;
    let logs_before = safekeeper_logs(&c, &tenant).await;
    let seg_before = c.pageserver_segment(&ps, &tenant).await;
    w.mark(format!(
        "{ps}: checkpointed lsn {} ({} checkpoints, first after {:.1} s); safekeepers trimmed \
         through {:?}",
        checkpointed_lsn(&seg_before),
        seg_before["checkpoint"]["checkpoints"],
        before.1.as_secs_f64(),
        bases(&logs_before)
    ));

    let fault = w.mark("s3s-fs killed");
    s3.stop();
    // A checkpoint in flight at the kill fails (or had just finished) within this.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seg_down = c.pageserver_segment(&ps, &tenant).await;
    let frozen = checkpointed_lsn(&seg_down);
    let failures_down = failures(&seg_down);
    let metric_down = c
        .node_metric(&ps, "pageserver_object_store_errors_total")
        .await
        .unwrap_or(0.0);
    // While it is down: the checkpointed LSN must not move; ingest goes on.
    let mut moved = Vec::new();
    let mut samples = 0;
    while w.now() < fault + OUTAGE {
        let seg = c.pageserver_segment(&ps, &tenant).await;
        samples += 1;
        if checkpointed_lsn(&seg) != frozen {
            moved.push(format!(
                "t={:.2}s checkpointed lsn {}",
                w.now().as_secs_f64(),
                checkpointed_lsn(&seg)
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seg_outage_end = c.pageserver_segment(&ps, &tenant).await;
    let logs_outage_end = safekeeper_logs(&c, &tenant).await;
    let metric_outage_end = c
        .node_metric(&ps, "pageserver_object_store_errors_total")
        .await
        .unwrap_or(0.0);
    let lsn_outage_end = last_acked_lsn(&w);

    let back = w.mark("s3s-fs started again (same objects)");
    s3.start_again();
    let first_after = wait_segment(&c, &ps, &tenant, Duration::from_secs(30), |s| {
        checkpointed_lsn(s) > frozen
    })
    .await;
    if let Ok((seg, _)) = &first_after {
        w.mark(format!(
            "{ps}: first checkpoint after the outage, lsn {}",
            checkpointed_lsn(seg)
        ));
    }
    let stats = running.await.expect("load phase");
    let end = w.now();
    let last_lsn = last_acked_lsn(&w);

    // Checkpoints catch up past the last acknowledged write (the idle writer vouches for its last
    // commits), and every safekeeper trims up to there.
    let caught = wait_segment(&c, &ps, &tenant, Duration::from_secs(30), |s| {
        checkpointed_lsn(s) >= last_lsn
    })
    .await;
    let trim_started = Instant::now();
    let logs_after = loop {
        let logs = safekeeper_logs(&c, &tenant).await;
        if logs.iter().all(|&(base, _)| base >= last_lsn)
            || trim_started.elapsed() > Duration::from_secs(30)
        {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let trim_wait = trim_started.elapsed();
    let seg_end = c.pageserver_segment(&ps, &tenant).await;

    let (history, checks) = w.check().await;
    let availability = write_availability(&history, fault, end);
    let warned = log_lines(&c.log_path(&ps), "failed; retrying");

    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!(
        "writes after the object store went down: {availability}"
    ));
    report.line(format!(
        "before: checkpointed lsn {}, caught up to {}; safekeepers hold <= {} records above their \
         trim base",
        checkpointed_lsn(&seg_before),
        caught_up(&seg_before),
        held_above_base(&logs_before)
    ));
    report.line(format!(
        "down ({:.1} s): checkpointed lsn frozen at {frozen} in {samples} samples ({} moved); \
         caught up to {} -> {} (last acknowledged lsn {lsn_outage_end}); object store failures {} \
         -> {} (pageserver_object_store_errors_total {metric_down} -> {metric_outage_end}); \
         last problem: {}",
        (back - fault).as_secs_f64(),
        moved.len(),
        caught_up(&seg_down),
        caught_up(&seg_outage_end),
        failures_down,
        failures(&seg_outage_end),
        seg_outage_end["checkpoint"]["last_problem"]
    ));
    report.line(format!(
        "  safekeepers kept the log meanwhile: trim bases {:?}, up to {} records above the base \
         (before the outage: {})",
        bases(&logs_outage_end),
        held_above_base(&logs_outage_end),
        held_above_base(&logs_before)
    ));
    report.line(format!(
        "  pageserver log: {} WARN lines about retries (first: {})",
        warned.len(),
        warned.first().map(String::as_str).unwrap_or("none")
    ));
    match &first_after {
        Ok((seg, took)) => report.line(format!(
            "back: first checkpoint {:.2} s after s3s-fs restarted, lsn {} (under load)",
            took.as_secs_f64(),
            checkpointed_lsn(seg)
        )),
        Err(seg) => report.line(format!(
            "back: NO checkpoint within 30 s of s3s-fs restarting: {seg}"
        )),
    }
    match &caught {
        Ok((seg, took)) => report.line(format!(
            "caught up: checkpointed lsn {} >= last acknowledged lsn {last_lsn}, {:.2} s after the \
             load ended",
            checkpointed_lsn(seg),
            took.as_secs_f64()
        )),
        Err(seg) => report.line(format!(
            "NOT caught up within 30 s: checkpointed lsn {} < last acknowledged lsn {last_lsn}",
            checkpointed_lsn(seg)
        )),
    }
    report.line(format!(
        "safekeepers trimmed to {:?} ({:.2} s later); {} checkpoints by this attachment, {} \
         object store failures in all",
        bases(&logs_after),
        trim_wait.as_secs_f64(),
        seg_end["checkpoint"]["checkpoints"],
        failures(&seg_end)
    ));
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert_eq!(
        stats.client_errors(),
        (0, 0, 0, 0),
        "the object store down must cost clients no error: {stats}"
    );
    assert!(
        stats.writes_acked > 0 && stats.reads_ok > 0,
        "no load ran: {stats}"
    );
    assert!(
        moved.is_empty(),
        "the checkpointed lsn moved while the object store was down: {moved:?}"
    );
    assert!(
        caught_up(&seg_outage_end) > frozen,
        "ingest did not go on past the frozen checkpoint {frozen}: {seg_outage_end:#}"
    );
    assert!(
        failures(&seg_outage_end) > failures_down,
        "the object store failure counter did not rise while it was down: {} -> {}",
        failures_down,
        failures(&seg_outage_end)
    );
    assert!(
        bases(&logs_outage_end).iter().all(|&b| b <= frozen),
        "a safekeeper trimmed above the durable checkpoint {frozen}: {logs_outage_end:?}"
    );
    first_after.unwrap_or_else(|seg| {
        panic!("no checkpoint within 30 s of the object store's return: {seg:#}")
    });
    caught.unwrap_or_else(|seg| {
        panic!(
            "checkpoints did not catch up with the last acknowledged lsn {last_lsn} within 30 s: \
             {seg:#}"
        )
    });
    assert!(
        logs_after.iter().all(|&(base, _)| base >= last_lsn),
        "the safekeepers did not trim up to the last acknowledged lsn {last_lsn}: {logs_after:?}"
    );
    assert!(
        availability.unavailable().is_none(),
        "writes failed: {availability}"
    );
}
