//! The walking skeleton: one SQL statement through every component, as real processes, with
//! safekeepers killed along the way (issue "Walking skeleton" acceptance).

use borealis_tests::cluster::TestCluster;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_through_every_component_survives_az_loss_and_cluster_restart() {
    let mut c = TestCluster::start().await;
    let token = c.create_tenant("acme").await;

    c.sql(
        "acme",
        &token,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
    )
    .await
    .ok();
    let batch: Vec<_> = (1..=100)
        .map(|i| json!({"sql": "INSERT INTO t (id, name) VALUES (?, ?)", "params": [i, format!("row-{i}")]}))
        .collect();
    let r = c.batch("acme", &token, batch).await.ok();
    assert_eq!(r.body["results"].as_array().map(Vec::len), Some(100));
    assert!(
        r.body["lsn"].as_u64().unwrap_or(0) > 0,
        "a commit has an LSN: {}",
        r.body
    );
    let mut acknowledged: Vec<i64> = (1..=100).collect();

    let r = c
        .sql("acme", &token, "SELECT count(*), sum(id), max(name) FROM t")
        .await
        .ok();
    assert_eq!(r.rows()[0], vec![json!(100), json!(5050), json!("row-99")]);

    // One AZ down (both its safekeepers): writes go on.
    c.node("kill", "sk-a1");
    c.node("kill", "sk-a2");
    c.sql(
        "acme",
        &token,
        "INSERT INTO t VALUES (101, 'after AZ a died')",
    )
    .await
    .ok();
    acknowledged.push(101);

    // AZ + 1 down: a write fails with a clear error, quickly, and nothing of it shows.
    c.node("kill", "sk-b1");
    let started = Instant::now();
    let r = c
        .sql(
            "acme",
            &token,
            "INSERT INTO t VALUES (102, 'must not stick')",
        )
        .await;
    let took = started.elapsed();
    assert_eq!(r.status, 503, "write with 3 of 6 safekeepers: {}", r.body);
    assert_eq!(r.code(), "read_only", "{}", r.body);
    assert!(took < Duration::from_secs(15), "the refusal took {took:?}");

    // Reads go on while writes are refused.
    let r = c.sql("acme", &token, "SELECT count(*) FROM t").await.ok();
    assert_eq!(r.scalar(), 101);

    // One comes back: writes resume (the member catches up through gossip first).
    c.node("start", "sk-a1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .sql(
                "acme",
                &token,
                "INSERT INTO t VALUES (103, 'after sk-a1 came back')",
            )
            .await;
        if r.status == 200 {
            acknowledged.push(103);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes did not resume within 30 s: {}",
            r.body
        );
        assert!(
            matches!(r.code(), "read_only" | "unavailable"),
            "unexpected error: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The whole cluster stopped and started on the same directory: every acknowledged row.
    c.down();
    c.up().await;
    let r = c
        .sql("acme", &token, "SELECT id FROM t ORDER BY id")
        .await
        .ok();
    let ids: Vec<i64> = r
        .rows()
        .iter()
        .map(|row| row[0].as_i64().expect("id"))
        .collect();
    assert_eq!(ids, acknowledged, "after restart");
    let r = c
        .sql("acme", &token, "SELECT name FROM t WHERE id = 101")
        .await
        .ok();
    assert_eq!(r.rows()[0][0], json!("after AZ a died"));
    // And it still takes writes.
    c.sql(
        "acme",
        &token,
        "INSERT INTO t VALUES (104, 'after restart')",
    )
    .await
    .ok();
    assert_eq!(
        c.sql("acme", &token, "SELECT count(*) FROM t")
            .await
            .ok()
            .scalar(),
        103
    );
}
