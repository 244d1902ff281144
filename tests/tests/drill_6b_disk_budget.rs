//! Drill 6b (docs/design.md §6, "object store unavailable: writes yes, **bounded by safekeeper disk
//! budget**"): the object store stays down until the safekeepers' disk budget runs out.
//!
//! The cluster checkpoints to the real S3-protocol server (s3s-fs) often, so the safekeepers trim
//! their logs often, and every safekeeper gets a small disk budget
//! (`SAFEKEEPER_DISK_BUDGET_BYTES`, 256 KiB). Under load the object store is killed: checkpoints
//! stop, so trims stop, and the safekeepers' logs grow until their budget is exhausted. What must
//! hold:
//! - **the budget bounds the log**: no safekeeper retains much more than its budget (gossip fills
//!   may pass it by a few records; writers' appends may not);
//! - **writes are refused, with the reason**: `read_only`, naming the exhausted disk budget; reads
//!   go on;
//! - **it recovers by itself**: once the store is back, checkpoints resume, the safekeepers trim,
//!   the writer counts them writable again and writes are acknowledged, without a restart;
//! - every checker holds (nothing acknowledged lost, nothing refused present, no torn commit).

use borealis_tests::checkers::{log_lines, reads_between, writes_between, DrillReport};
use borealis_tests::cluster::{ClusterOptions, TestCluster};
use borealis_tests::s3::S3Server;
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use serde_json::Value;
use std::time::Duration;

const BUCKET: &str = "borealis";
const TENANT: &str = "bank";
/// Each safekeeper's disk budget: about 2,500 records of the drill's load (~100 bytes each),
/// 25 times what it retains while checkpoints run.
const BUDGET_BYTES: u64 = 256 * 1024;
/// How long the store stays down once the budget is exhausted: longer than the commit timeout,
/// so that clients whose commit was caught in flight get their answer and send writes that
/// must be refused while it lasts.
const EXHAUSTED_FOR: Duration = Duration::from_secs(4);
/// The gateway's commit timeout (`BOREALIS_COMMIT_TIMEOUT`) in this drill: each writer client
/// waits this long for a commit caught by the exhausted budget (the default 10 s would keep every
/// client of the load waiting past the whole exhaustion).
const COMMIT_TIMEOUT: &str = "2s";

/// Every safekeeper's `(id, retained_log_bytes, disk_budget_exhausted)`.
async fn budgets(c: &TestCluster) -> Vec<(String, u64, bool)> {
    let mut out = Vec::new();
    for sk in c.node_ids("safekeeper") {
        let s: Value = c.node_status(&sk).await.unwrap_or(Value::Null);
        out.push((
            sk,
            s["retained_log_bytes"].as_u64().unwrap_or(0),
            s["disk_budget_exhausted"].as_bool().unwrap_or(false),
        ));
    }
    out
}

/// The most log any safekeeper of `budgets` retains, in bytes.
fn most_retained(budgets: &[(String, u64, bool)]) -> u64 {
    budgets.iter().map(|b| b.1).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_6b_object_store_down_until_the_disk_budget_is_exhausted() {
    let mut s3 = S3Server::start(BUCKET);
    let c = TestCluster::start_with(ClusterOptions {
        object_store: Some(s3.url(BUCKET)),
        env: vec![
            ("PAGESERVER_CHECKPOINT_RECORDS".into(), "1000".into()),
            ("PAGESERVER_CHECKPOINT_INTERVAL".into(), "500ms".into()),
            (
                "SAFEKEEPER_DISK_BUDGET_BYTES".into(),
                BUDGET_BYTES.to_string(),
            ),
            ("BOREALIS_COMMIT_TIMEOUT".into(), COMMIT_TIMEOUT.into()),
        ],
        ..ClusterOptions::default()
    })
    .await;
    let w = Workload::setup(&c, TENANT, WorkloadConfig::default()).await;
    let probe_table = c
        .sql(
            TENANT,
            &c.admin_token,
            "CREATE TABLE probe (id INTEGER PRIMARY KEY)",
        )
        .await;
    assert_eq!(probe_table.status, 200, "{}", probe_table.body);
    let load = LoadConfig {
        duration: Duration::from_secs(24),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 6b: object store down until the safekeepers' disk budget ({} KiB) is exhausted",
        BUDGET_BYTES / 1024
    ));
    report.line(format!(
        "{}; checkpoint every 1,000 records or 0.5 s",
        w.describe(&load)
    ));

    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(3)).await;
    let before = budgets(&c).await;
    let fault = w.mark(format!(
        "s3s-fs killed; safekeepers retain {:?} bytes",
        before.iter().map(|b| b.1).collect::<Vec<_>>()
    ));
    s3.stop();

    // The logs grow until the budget is exhausted somewhere.
    let mut peak_retained_bytes = 0;
    let mut exhausted_at = None;
    while w.now() < fault + Duration::from_secs(15) {
        let b = budgets(&c).await;
        peak_retained_bytes = peak_retained_bytes.max(most_retained(&b));
        let full: Vec<&str> = b.iter().filter(|x| x.2).map(|x| x.0.as_str()).collect();
        if full.len() >= 3 {
            exhausted_at = Some(w.mark(format!(
                "disk budget exhausted on {full:?} (retained up to {peak_retained_bytes} bytes)"
            )));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(exhausted_at) = exhausted_at else {
        panic!(
            "the disk budget was not exhausted on 3 safekeepers within 15 s of the outage: {:?}",
            budgets(&c).await
        )
    };
    // Give the writer a moment to count them out, then probe: a write must be refused, saying why.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let probe = c
        .sql(TENANT, &c.admin_token, "INSERT INTO probe (id) VALUES (1)")
        .await;
    w.mark(format!(
        "probe write: {} {}",
        probe.status,
        probe.body["error"]["message"].as_str().unwrap_or("")
    ));
    while w.now() < exhausted_at + EXHAUSTED_FOR {
        let b = budgets(&c).await;
        peak_retained_bytes = peak_retained_bytes.max(most_retained(&b));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = w.mark("s3s-fs started again (same objects)");
    s3.start_again();
    let stats = running.await.expect("load phase");
    let end = w.now();
    let after = budgets(&c).await;

    let (history, checks) = w.check().await;
    let (acked_full, refused_full, _, unknown_full) =
        writes_between(&history, exhausted_at + Duration::from_secs(1), back);
    let (reads_ok_full, reads_failed_full, read_errors) = reads_between(&history, fault, end);
    let (acked_after, ..) = writes_between(&history, back, end);
    let first_ack_after = history
        .writes
        .iter()
        .filter(|x| x.outcome.is_acked() && x.start >= back)
        .map(|x| x.end)
        .min();
    let warned: Vec<String> = c
        .node_ids("safekeeper")
        .iter()
        .flat_map(|sk| log_lines(&c.log_path(sk), "disk budget exhausted"))
        .collect();

    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!(
        "peak retained log on any safekeeper: {peak_retained_bytes} bytes (budget {BUDGET_BYTES})"
    ));
    report.line(format!(
        "while exhausted: writes {acked_full} acknowledged, {refused_full} refused read_only, \
         {unknown_full} unknown; reads from the outage on: {reads_ok_full} ok, {reads_failed_full} \
         failed {read_errors:?}"
    ));
    report.line(format!(
        "after the store returned: {acked_after} writes acknowledged, the first {}",
        first_ack_after
            .map(|t| format!("{:.2} s after the restart", (t - back).as_secs_f64()))
            .unwrap_or_else(|| "never".into())
    ));
    report.line(format!(
        "safekeepers at the end: {:?}",
        after
            .iter()
            .map(|(id, bytes, full)| format!(
                "{id} {bytes} B{}",
                if *full { " (full)" } else { "" }
            ))
            .collect::<Vec<_>>()
    ));
    report.line(format!(
        "safekeeper log lines 'disk budget exhausted': {} (first: {})",
        warned.len(),
        warned.first().map(String::as_str).unwrap_or("-")
    ));
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert_eq!(
        probe.code(),
        "read_only",
        "a write with the disk budget exhausted must be refused read_only: {}",
        probe.body
    );
    let message = probe.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("disk budget exhausted"),
        "the refusal must say why: {message}"
    );
    assert!(
        refused_full > 0,
        "no client write was refused while the budget was exhausted"
    );
    assert_eq!(
        reads_failed_full, 0,
        "reads must go on while writes are refused: {read_errors:?}"
    );
    // Gossip fills are not refused (they only copy what peers accepted), so a member may pass
    // its budget by what its peers accepted before they were full: a few records, not the log.
    assert!(
        peak_retained_bytes <= BUDGET_BYTES + 64 * 1024,
        "a safekeeper retained {peak_retained_bytes} bytes, far past its {BUDGET_BYTES}-byte budget"
    );
    assert!(
        acked_after > 0,
        "writes did not resume after the object store returned"
    );
    assert!(
        after.iter().all(|b| !b.2),
        "a safekeeper is still out of budget at the end: {after:?}"
    );
}
