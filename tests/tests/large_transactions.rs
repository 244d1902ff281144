//! Large transactions: one that is big but fits commits whole (it is shipped to the safekeepers
//! as many bounded appends, not one frame past the wire's limit); one that does not fit in the
//! compute's memory gets a clear `too_large` error, takes no effect and costs the writer nothing.

use borealis_tests::cluster::{ClusterOptions, TestCluster};
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_commit_is_durable_and_one_past_the_compute_memory_is_refused_cleanly() {
    // Sizes, not speed, are under test: generous timeouts keep a slow machine from failing it.
    let c = TestCluster::start_with(ClusterOptions {
        env: vec![
            ("BOREALIS_STATEMENT_TIMEOUT".into(), "60s".into()),
            ("BOREALIS_COMMIT_TIMEOUT".into(), "60s".into()),
        ],
        ..ClusterOptions::default()
    })
    .await;
    let token = c.create_tenant("big").await;
    c.sql(
        "big",
        &token,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB)",
    )
    .await
    .ok();
    let rows_sql = |n: u64| {
        format!(
            "INSERT INTO t (b) SELECT randomblob(100) FROM (WITH RECURSIVE c(x) AS \
             (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c)"
        )
    };

    // ~13 MB of pages in one commit: 1.6 times the wire's frame limit. Before appends were
    // bounded, every safekeeper connection broke on the oversized frame and the commit ended
    // `unavailable` (outcome unknown), then was rolled back.
    let started = Instant::now();
    let r = c.sql("big", &token, &rows_sql(120_000)).await.ok();
    let lsn = r.body["lsn"].as_u64().unwrap_or(0);
    println!(
        "120,000 rows (~13 MB of pages) in one commit: {:.1} s, commit lsn {lsn}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        lsn * borealis_core::PAGE_SIZE_BYTES as u64 > borealis_wire::FRAME_BYTES_MAX as u64,
        "one commit of more pages than a frame holds: lsn {lsn}"
    );
    let r = c
        .sql("big", &token, "SELECT count(*), sum(length(b)) FROM t")
        .await
        .ok();
    assert_eq!(
        r.rows()[0],
        vec![serde_json::json!(120_000), serde_json::json!(12_000_000)]
    );
    let epoch_before = c.tenant_status("big").await["epoch"].clone();

    // Past the compute's memory (256 MiB by default): refused, nothing of it visible, and the
    // writer (its epoch) carries on.
    let r = c.sql("big", &token, &rows_sql(1_500_000)).await;
    assert_eq!(r.status, 413, "{:?}", r.body);
    assert_eq!(r.code(), "too_large", "{:?}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("MiB of memory") && message.contains("split the transaction"),
        "the error says what to do: {message}"
    );
    let r = c.sql("big", &token, "SELECT count(*) FROM t").await.ok();
    assert_eq!(
        r.scalar(),
        120_000,
        "nothing of the refused insert is visible"
    );
    c.sql("big", &token, "INSERT INTO t (b) VALUES (x'00')")
        .await
        .ok();
    assert_eq!(
        c.tenant_status("big").await["epoch"],
        epoch_before,
        "the writer was not failed (no new epoch)"
    );
}
