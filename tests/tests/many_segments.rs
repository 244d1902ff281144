//! A volume of many segments over a pool of storage nodes (issue #17, RFC 0008), through the
//! faults of drills 2, 3 and 4, on one cluster: `--safekeepers 9 --pageservers 3 --segment-size
//! 4MiB`, one tenant loaded with 256 MB (64 segments and more): issue #17's acceptance shape. Each segment's group is six of
//! the nine safekeepers, two per AZ, chosen by rendezvous hashing; each segment has one of the
//! three pageservers. Every commit that inserts touches two segments at least (the table's last
//! page and page 1, SQLite's header), so MTRs span groups.
//!
//! 1. The placement: at least 64 segments hold data, every group is two per AZ, every
//!    safekeeper and every pageserver holds some; `count(*)` and `sum(length(payload))` are
//!    exact.
//!    Then 5,000 random single-row updates: the checkpoints that cover them upload at most 10 %
//!    of the database's bytes in all (issue #18): the redo of the updates (delta layers, RFC
//!    0010: about a page per update here, as each rewrites a whole 4,000-byte row), and no page
//!    images, as a checkpoint with a retention window writes only its delta until the deltas
//!    pile up above the chain (RFC 0011).
//! 2. AZ c (three safekeepers) killed under the bank workload: no client error.
//! 3. AZ c + one member of segment 0's group (every bank commit touches segment 0): writes
//!    refused `read_only`, reads go on.
//! 4. The gateway killed and restarted under load: recovery finds the volume's end across every
//!    group (`borealis_quorum::volume_recovery`), fencing every group of the pool.
//! 5. The whole cluster stopped and started: every checker holds (every acknowledged transfer and
//!    insert present and whole, nothing refused present, balances sum to the total) and the
//!    preload reads back exact.
//! 6. Once the retention window (20 s here) passed, the object store holds at most twice the
//!    rows' bytes: garbage collection deleted older generations' objects and what the window
//!    no longer needs.
//!
//! The load is 256 MB in 4 MiB segments by default (about 4 minutes in a debug build on two
//! cores); `BOREALIS_MANY_SEGMENTS_MB=64 BOREALIS_MANY_SEGMENTS_SEGMENT_SIZE=1MiB` runs the same
//! test on a quarter of the data (about 80 s). The exact counts and the final read of the whole
//! database scan every page, cold after the full restart (about 30 s for 256 MB in a debug
//! build), so the statement and client timeouts are raised for this test.

use borealis_tests::checkers::{reads_between, write_availability, writes_between, DrillReport};
use borealis_tests::cluster::{ClusterOptions, TestCluster};
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const SEGMENT_SIZE_DEFAULT: &str = "4MiB";
const SAFEKEEPERS: usize = 9;
const PAGESERVERS: usize = 3;
const LOAD_MB_DEFAULT: usize = 256;
const PRELOAD_ROWS: usize = 128;
const PRELOAD_PAYLOAD_BYTES: usize = 4000;

fn segment_size() -> String {
    std::env::var("BOREALIS_MANY_SEGMENTS_SEGMENT_SIZE")
        .unwrap_or_else(|_| SEGMENT_SIZE_DEFAULT.into())
}

fn load_mb() -> usize {
    std::env::var("BOREALIS_MANY_SEGMENTS_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LOAD_MB_DEFAULT)
}

/// The pageservers' retention window (`--pitr-window`) in this test, in seconds.
const WINDOW_S: u64 = 20;

/// Single-row updates of phase 1b, and the clients sending them.
const UPDATES: usize = 5_000;
const UPDATE_CLIENTS: usize = 4;

/// Waits (at most 120 s) until every pageserver has checkpointed every segment of `tenant` up to
/// the last record it applied, and the bytes they uploaded stopped moving; returns those bytes:
/// all of them, and those of delta layers (the retention window's redo, RFC 0010).
async fn checkpoints_settled(c: &TestCluster, tenant: &str) -> (u64, u64) {
    let started = std::time::Instant::now();
    let mut last: Option<(u64, u64)> = None;
    loop {
        let (mut uploaded, mut deltas) = (0u64, 0u64);
        let mut settled = true;
        for id in c.node_ids("pageserver") {
            uploaded += c
                .node_metric(&id, "pageserver_bytes_uploaded_total")
                .await
                .unwrap_or(0.0) as u64;
            deltas += c
                .node_metric(&id, "pageserver_delta_bytes_uploaded_total")
                .await
                .unwrap_or(0.0) as u64;
            let status = c.node_status(&id).await.unwrap_or_default();
            for s in status["tenants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["tenant"] == tenant)
                .flat_map(|t| t["segments"].as_array().into_iter().flatten())
            {
                let applied = s["follow"]["last_applied"].as_u64().unwrap_or(0);
                let checkpointed = s["checkpoint"]["checkpointed_lsn"].as_u64().unwrap_or(0);
                settled &= checkpointed >= applied;
            }
        }
        if settled && last == Some((uploaded, deltas)) {
            return (uploaded, deltas);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "checkpoints did not settle within 120 s"
        );
        last = settled.then_some((uploaded, deltas));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Checkpoints by what they wrote, summed over the pageservers: image layers, changes layers,
/// and delta layers only (RFC 0011).
async fn checkpoint_kinds(c: &TestCluster) -> [u64; 3] {
    let mut kinds = [0u64; 3];
    for id in c.node_ids("pageserver") {
        for (k, name) in [
            "pageserver_image_layers_written_total",
            "pageserver_changes_layers_written_total",
            "pageserver_delta_only_checkpoints_total",
        ]
        .into_iter()
        .enumerate()
        {
            kinds[k] += c.node_metric(&id, name).await.unwrap_or(0.0) as u64;
        }
    }
    kinds
}

/// Bytes of every object under the tenant's prefix in the cluster's local object store (staging
/// files of uploads cut off by a kill, `<key>#<n>`, are not objects).
fn tenant_object_bytes(cluster_dir: &std::path::Path, tenant_hex: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![cluster_dir.join("objects/tenants").join(tenant_hex)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.to_string_lossy().contains('#') {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    assert!(
        total > 0,
        "no object of tenant {tenant_hex} in {}",
        cluster_dir.display()
    );
    total
}

async fn preload_count(c: &TestCluster) -> (Vec<Vec<Value>>, Duration) {
    let started = std::time::Instant::now();
    let rows = c
        .sql(
            "bank",
            &c.admin_token,
            "SELECT count(*), sum(length(payload)) FROM items WHERE client = -1",
        )
        .await
        .ok()
        .rows();
    (rows, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_of_many_segments_over_a_pool_keeps_every_acknowledged_commit_through_faults() {
    let mut c = TestCluster::start_with(ClusterOptions {
        segment_size: Some(segment_size()),
        pool: Some((SAFEKEEPERS, PAGESERVERS)),
        // The exact counts scan the whole table: longer than the default 5 s in a debug build.
        env: vec![
            ("BOREALIS_STATEMENT_TIMEOUT".into(), "120s".into()),
            // Checkpoints soon after the updates of phase 1b.
            ("PAGESERVER_CHECKPOINT_INTERVAL".into(), "10s".into()),
            // Older generations' objects collected soon after the full restart.
            ("PAGESERVER_GC_DELAY".into(), "1s".into()),
            // A retention window short enough to pass before step 6 measures the store (the
            // default hour keeps the load's redo and older images for an hour).
            ("PAGESERVER_PITR_WINDOW".into(), format!("{}s", WINDOW_S)),
        ],
        ..ClusterOptions::default()
    })
    .await;
    let w = Workload::setup(
        &c,
        "bank",
        WorkloadConfig {
            // The final read of the whole database, cold after the full restart.
            request_timeout: Duration::from_secs(150),
            ..WorkloadConfig::default()
        },
    )
    .await;
    let mut report = DrillReport::new(&format!(
        "many segments: {} MB in {} segments over {SAFEKEEPERS} safekeepers and \
         {PAGESERVERS} pageservers; AZ c killed, AZ c + 1, gateway killed, full restart",
        load_mb(),
        segment_size()
    ));

    // 1. Load, then the placement as the gateway and the nodes report it.
    let batches = load_mb() * (1 << 20) / (PRELOAD_ROWS * PRELOAD_PAYLOAD_BYTES);
    let loaded = w.now();
    w.preload(batches, PRELOAD_ROWS, PRELOAD_PAYLOAD_BYTES)
        .await;
    let load_s = (w.now() - loaded).as_secs_f64();
    let rows = (batches * PRELOAD_ROWS) as i64;
    let payload_bytes = rows * PRELOAD_PAYLOAD_BYTES as i64;
    report.line(format!(
        "preload: {rows} rows, {} MB in {load_s:.1} s",
        payload_bytes >> 20
    ));
    let expected = vec![vec![Value::from(rows), Value::from(payload_bytes)]];
    let (counted, scan) = preload_count(&c).await;
    report.line(format!(
        "count(*), sum(length(payload)) in {:.1} s",
        scan.as_secs_f64()
    ));
    assert_eq!(counted, expected, "the preload read back");

    let nodes = c.nodes();
    let node_of = |addr: &str| {
        nodes
            .iter()
            .find(|n| n.addr == addr)
            .unwrap_or_else(|| panic!("no node has address {addr}"))
    };
    let tenant = c.tenant_status("bank").await;
    let segments = tenant["segments"].as_array().cloned().unwrap_or_default();
    let segment_size_bytes = tenant["segment_size_bytes"].as_u64().expect("segment size");
    let segments_min = (payload_bytes as u64 / segment_size_bytes) as usize;
    report.line(format!("{} segments hold data", segments.len()));
    assert!(
        segments.len() >= segments_min,
        "{} segments hold data, {segments_min} expected at least",
        segments.len()
    );
    let mut safekeepers_used = BTreeSet::new();
    let mut pageservers_used = BTreeSet::new();
    let mut segment0_group = Vec::new();
    for s in &segments {
        let group: Vec<String> = s["safekeepers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| node_of(a.as_str().unwrap_or("?")).id.clone())
            .collect();
        let azs: Vec<String> = group
            .iter()
            .map(|id| {
                nodes
                    .iter()
                    .find(|n| &n.id == id)
                    .map_or("?".into(), |n| n.az.clone())
            })
            .collect();
        assert_eq!(
            azs,
            ["a", "a", "b", "b", "c", "c"],
            "segment {}: group {group:?} is not two per AZ in member order",
            s["segment"]
        );
        assert!(
            s["scls"]
                .as_array()
                .into_iter()
                .flatten()
                .all(Value::is_u64),
            "segment {}: a member holds nothing of it: {s}",
            s["segment"]
        );
        if s["segment"] == 0 {
            segment0_group = group.clone();
        }
        safekeepers_used.extend(group);
        pageservers_used.insert(node_of(s["pageserver"].as_str().unwrap_or("?")).id.clone());
    }
    report.line(format!(
        "groups use {} safekeepers, segments {} pageservers; segment 0's group {segment0_group:?}",
        safekeepers_used.len(),
        pageservers_used.len()
    ));
    assert_eq!(
        safekeepers_used.len(),
        SAFEKEEPERS,
        "every safekeeper holds data"
    );
    assert_eq!(
        pageservers_used.len(),
        PAGESERVERS,
        "every pageserver serves a segment"
    );
    for id in c.node_ids("safekeeper") {
        let status = c.node_status(&id).await.expect("safekeeper status");
        let held = status["segment_count"].as_u64().unwrap_or(0);
        assert!(held > 0, "{id} holds no segment");
        assert!(
            held < segments.len() as u64,
            "{id} holds {held} of {} segments: the pool does not spread them",
            segments.len()
        );
    }

    // 1b. Checkpoints upload the pages changed, not the database (issue #18).
    let tenant_id = borealis_tests::checkers::tenant_hex(&c, "bank").await;
    let before = checkpoints_settled(&c, &tenant_id).await;
    let kinds_before = checkpoint_kinds(&c).await;
    let updates_started = std::time::Instant::now();
    let payload = "u".repeat(PRELOAD_PAYLOAD_BYTES);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let ids: Vec<i64> = (0..UPDATES)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            1 + (rng % rows as u64) as i64
        })
        .collect();
    let clients = ids.chunks(UPDATES.div_ceil(UPDATE_CLIENTS)).map(|chunk| {
        let (c, payload) = (&c, &payload);
        async move {
            for id in chunk {
                c.sql_params(
                    "bank",
                    &c.admin_token,
                    "UPDATE items SET payload = ? WHERE id = ?",
                    serde_json::json!([payload, id]),
                )
                .await
                .ok();
            }
        }
    });
    futures::future::join_all(clients).await;
    let updates_s = updates_started.elapsed().as_secs_f64();
    let after = checkpoints_settled(&c, &tenant_id).await;
    let kinds_after = checkpoint_kinds(&c).await;
    let [images, changes, delta_only] =
        [0, 1, 2].map(|k| kinds_after[k].saturating_sub(kinds_before[k]));
    let deltas = after.1 - before.1;
    let total = after.0 - before.0;
    let layers = total - deltas;
    let database_bytes = payload_bytes as u64;
    report.line(format!(
        "{UPDATES} random single-row updates in {updates_s:.1} s: checkpoints uploaded {} KiB, \
         {:.1} % of the {} MiB loaded: {} KiB of redo in delta layers ({:.1} %: each update \
         rewrites a {PRELOAD_PAYLOAD_BYTES}-byte row, so its redo is about a page) and {} KiB \
         of image and changes layers and indexes ({:.1} %); checkpoints: {images} wrote an \
         image, {changes} a changes layer, {delta_only} only their delta",
        total >> 10,
        total as f64 * 100.0 / database_bytes as f64,
        database_bytes >> 20,
        deltas >> 10,
        deltas as f64 * 100.0 / database_bytes as f64,
        layers >> 10,
        layers as f64 * 100.0 / database_bytes as f64,
    ));
    assert!(
        total * 10 <= database_bytes,
        "checkpoints after {UPDATES} updates uploaded {total} bytes ({deltas} of delta layers; \
         {images} images, {changes} changes layers, {delta_only} checkpoints of a delta only), \
         more than 10 % of {database_bytes}"
    );
    // The window costs the redo, not more: each update's records (its row's page, and small
    // deltas of the pages above it) are at most three pages' worth of records.
    let redo_max = (UPDATES * 3 * (4096 + 44 + 64)) as u64;
    assert!(
        deltas > 0 && deltas <= redo_max,
        "{deltas} bytes of delta layers for {UPDATES} updates (at most {redo_max})"
    );

    // 2. AZ c killed under load: no client error.
    let az_c: Vec<String> = c
        .node_ids("safekeeper")
        .into_iter()
        .filter(|id| id.starts_with("sk-c"))
        .collect();
    assert_eq!(az_c.len(), SAFEKEEPERS / 3);
    let phase = LoadConfig {
        duration: Duration::from_secs(8),
        ..LoadConfig::default()
    };
    report.line(w.describe(&phase));
    let started = w.now();
    let running = w.spawn(phase.clone());
    w.sleep_until(started + Duration::from_secs(2)).await;
    let az_down = w.mark(format!("borealis node kill {}", az_c.join(", ")));
    for id in &az_c {
        c.node("kill", id);
    }
    let stats_az = running.await.expect("AZ phase");
    report.line(format!("AZ c down: {stats_az}"));
    assert_eq!(
        stats_az.client_errors(),
        (0, 0, 0, 0),
        "one AZ down must cost clients no error: {stats_az}"
    );
    let (acked_az, ..) = writes_between(&w.history(), az_down, w.now());
    assert!(acked_az > 0, "no write acknowledged with AZ c down");

    // 3. AZ c + a member of segment 0's group: writes refused read_only, reads go on.
    let plus_one = segment0_group
        .iter()
        .find(|id| !id.starts_with("sk-c"))
        .expect("segment 0's group has members outside AZ c")
        .clone();
    let quorum_lost = w.mark(format!("borealis node kill {plus_one} (AZ c + 1)"));
    c.node("kill", &plus_one);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats_lost = w
        .run(LoadConfig {
            duration: Duration::from_secs(4),
            ..LoadConfig::default()
        })
        .await;
    let repaired = w.mark("every safekeeper started again");
    for id in az_c.iter().chain([&plus_one]) {
        c.node("start", id);
    }
    let history = w.history();
    let (acked_lost, refused_lost, rejected_lost, unknown_lost) =
        writes_between(&history, quorum_lost, repaired);
    let (reads_ok_lost, reads_failed_lost, read_errors) =
        reads_between(&history, quorum_lost, repaired);
    report.line(format!(
        "AZ c + {plus_one} down: {stats_lost}; writes {acked_lost} acknowledged, {refused_lost} \
         refused, {unknown_lost} unknown; reads {reads_ok_lost} ok, {reads_failed_lost} failed"
    ));
    assert!(refused_lost > 0, "no write was tried with AZ c + 1 down");
    assert_eq!(
        (acked_lost, rejected_lost, unknown_lost),
        (0, 0, 0),
        "with segment 0's group at 3 of 6 every write must be refused read_only"
    );
    assert!(
        reads_ok_lost > 0 && reads_failed_lost == 0,
        "reads must go on with AZ c + 1 down: {reads_ok_lost} ok, {reads_failed_lost} failed {read_errors:?}"
    );

    // 4. The gateway killed under load and started again: recovery across every group.
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

    // 6. What the object store holds for the tenant, once the new generations' checkpoints
    // settled and the retention window passed (the indexes then name the chains only, and
    // garbage collection deletes the rest): at most twice the data.
    checkpoints_settled(&c, &tenant_id).await;
    let waited = std::time::Instant::now();
    let limit = Duration::from_secs(WINDOW_S * 3 + 30);
    let stored = loop {
        let stored = tenant_object_bytes(c.data_dir(), &tenant_id);
        if stored <= 2 * database_bytes || waited.elapsed() > limit {
            break stored;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    report.line(format!(
        "the window passed and garbage collection settled after {:.0} s",
        waited.elapsed().as_secs_f64()
    ));
    report.line(format!(
        "object store after the full restart: {} MiB for {} MiB of rows ({:.2}×)",
        stored >> 20,
        database_bytes >> 20,
        stored as f64 / database_bytes as f64
    ));
    assert!(
        stored <= 2 * database_bytes,
        "the object store holds {stored} bytes for the tenant, more than twice the {database_bytes} \
         bytes of rows"
    );
    report.timeline(&history);
    report.checks(&checks);
    report.emit();
    checks.assert_ok();
    assert_eq!(
        preload_count(&c).await.0,
        expected,
        "the preload after a full restart"
    );
}
