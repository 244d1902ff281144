//! A volume of many segments (issue #17, RFC 0008) through the faults of drills 2, 3 and 4, on
//! one cluster: `--segment-size 1MiB` (256 pages a segment), one tenant loaded with 24 MB, so
//! every commit that inserts touches two segments at least (the table's last page and page 1,
//! SQLite's header) and the writer's MTRs span segments, each its own chain on the safekeepers.
//!
//! 1. The load is exact: every segment is on every safekeeper, `count(*)` and
//!    `sum(length(payload))` are what was written.
//! 2. AZ c killed under load (drill 2): no client error.
//! 3. AZ c + sk-b1 down (drill 3): every write refused `read_only`, reads go on.
//! 4. The gateway killed and restarted under load (drill 4): recovery finds the volume's end
//!    across every segment (anchor, LSN indexes: `borealis_quorum::volume_recovery`) and no
//!    acknowledged write is lost.
//! 5. The whole cluster stopped and started: the checkers hold (every acknowledged transfer and
//!    insert present and whole, nothing refused present, balances sum to the total).

use borealis_tests::checkers::{
    reads_between, tenant_hex, write_availability, writes_between, DrillReport,
};
use borealis_tests::cluster::{ClusterOptions, TestCluster};
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use serde_json::Value;
use std::time::Duration;

const SEGMENT_SIZE: &str = "1MiB";
const SEGMENT_SIZE_BYTES: u64 = 1 << 20;
const PRELOAD_BATCHES: usize = 48;
const PRELOAD_ROWS: usize = 128;
const PRELOAD_PAYLOAD_BYTES: usize = 4000;

/// `(segment, scl)` of every segment of `tenant` a safekeeper's `/status` lists.
fn segments_held(status: &Value, tenant: &str) -> Vec<(u64, u64)> {
    status["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["tenant"] == tenant)
        .flat_map(|t| t["segments"].as_array().into_iter().flatten())
        .filter_map(|s| Some((s["segment"].as_u64()?, s["scl"].as_u64()?)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_of_many_segments_keeps_every_acknowledged_commit_through_faults() {
    let mut c = TestCluster::start_with(ClusterOptions {
        segment_size: Some(SEGMENT_SIZE.into()),
        ..ClusterOptions::default()
    })
    .await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, "bank").await;
    let mut report = DrillReport::new(
        "many segments: 24 MB in 1 MiB segments; AZ c killed, AZ c + sk-b1, gateway killed, full restart",
    );

    // 1. Load well past one segment; every safekeeper holds every segment.
    let loaded = w.now();
    w.preload(PRELOAD_BATCHES, PRELOAD_ROWS, PRELOAD_PAYLOAD_BYTES)
        .await;
    let load_s = (w.now() - loaded).as_secs_f64();
    let rows = (PRELOAD_BATCHES * PRELOAD_ROWS) as i64;
    let payload_bytes = rows * PRELOAD_PAYLOAD_BYTES as i64;
    report.line(format!(
        "preload: {rows} rows, {} MB in {load_s:.1} s",
        payload_bytes >> 20
    ));
    let segments_min = (payload_bytes as u64 / SEGMENT_SIZE_BYTES) as usize;
    for sk in c.node_ids("safekeeper") {
        let status = c.node_status(&sk).await.expect("safekeeper status");
        let held = segments_held(&status, &tenant);
        report.line(format!("{sk} holds {} segments of the tenant", held.len()));
        assert!(
            held.len() >= segments_min,
            "{sk} holds {} segments, {segments_min} expected at least: {held:?}",
            held.len()
        );
    }
    let admin = c.admin_token.clone();
    let counted = c
        .sql(
            "bank",
            &admin,
            "SELECT count(*), sum(length(payload)) FROM items WHERE client = -1",
        )
        .await
        .ok();
    assert_eq!(
        counted.rows(),
        vec![vec![Value::from(rows), Value::from(payload_bytes)]],
        "the preload read back"
    );

    // 2. AZ c killed under load: no client error.
    let phase = LoadConfig {
        duration: Duration::from_secs(8),
        ..LoadConfig::default()
    };
    report.line(w.describe(&phase));
    let started = w.now();
    let running = w.spawn(phase.clone());
    w.sleep_until(started + Duration::from_secs(2)).await;
    let az_down = w.mark("borealis node kill sk-c1; borealis node kill sk-c2");
    c.node("kill", "sk-c1");
    c.node("kill", "sk-c2");
    let stats_az = running.await.expect("AZ phase");
    report.line(format!("AZ c down: {stats_az}"));
    assert_eq!(
        stats_az.client_errors(),
        (0, 0, 0, 0),
        "one AZ down must cost clients no error: {stats_az}"
    );
    let (acked_az, ..) = writes_between(&w.history(), az_down, w.now());
    assert!(acked_az > 0, "no write acknowledged with AZ c down");

    // 3. AZ c + sk-b1: writes refused read_only, reads go on.
    let quorum_lost = w.mark("borealis node kill sk-b1 (3 of 6 left)");
    c.node("kill", "sk-b1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let burst = LoadConfig {
        duration: Duration::from_secs(4),
        ..LoadConfig::default()
    };
    let stats_lost = w.run(burst).await;
    let repaired = w.mark("borealis node start sk-b1, sk-c1, sk-c2");
    for id in ["sk-b1", "sk-c1", "sk-c2"] {
        c.node("start", id);
    }
    let history = w.history();
    let (acked_lost, refused_lost, rejected_lost, unknown_lost) =
        writes_between(&history, quorum_lost, repaired);
    let (reads_ok_lost, reads_failed_lost, read_errors) =
        reads_between(&history, quorum_lost, repaired);
    report.line(format!(
        "AZ c + sk-b1 down: {stats_lost}; writes {acked_lost} acknowledged, {refused_lost} refused, \
         {unknown_lost} unknown; reads {reads_ok_lost} ok, {reads_failed_lost} failed"
    ));
    assert!(refused_lost > 0, "no write was tried with 3 of 6 up");
    assert_eq!(
        (acked_lost, rejected_lost, unknown_lost),
        (0, 0, 0),
        "with 3 of 6 up every write must be refused read_only"
    );
    assert!(
        reads_ok_lost > 0 && reads_failed_lost == 0,
        "reads must go on with 3 of 6 up: {reads_ok_lost} ok, {reads_failed_lost} failed {read_errors:?}"
    );

    // 4. The gateway killed under load and started again: recovery across every segment.
    let started = w.now();
    let running = w.spawn(LoadConfig {
        duration: Duration::from_secs(10),
        ..LoadConfig::default()
    });
    w.sleep_until(started + Duration::from_secs(3)).await;
    let killed = w.mark("borealis node kill gateway; borealis node start gateway");
    c.node("kill", "gateway");
    c.node("start", "gateway");
    let stats_gw = running.await.expect("gateway phase");
    let end = w.now();
    let availability = write_availability(&w.history(), killed, end);
    report.line(format!("gateway killed: {stats_gw}; {availability}"));
    let (acked_after, ..) = writes_between(&w.history(), killed, end);
    assert!(
        acked_after > 0,
        "no write acknowledged after the gateway came back ({availability})"
    );

    // 5. The whole cluster stopped and started; then every checker.
    c.down();
    c.up().await;
    let (history, checks) = w.check().await;
    report.timeline(&history);
    report.checks(&checks);
    report.emit();
    checks.assert_ok();
    let counted = c
        .sql(
            "bank",
            &admin,
            "SELECT count(*), sum(length(payload)) FROM items WHERE client = -1",
        )
        .await
        .ok();
    assert_eq!(
        counted.rows(),
        vec![vec![Value::from(rows), Value::from(payload_bytes)]],
        "the preload after a full restart"
    );
}
