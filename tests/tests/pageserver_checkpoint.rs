//! Pageserver checkpoints to object storage (the real S3-protocol server, s3s-fs), as real
//! processes (issue 5's acceptance):
//!
//! - both pageservers killed and their disks wiped: every acknowledged row is read back, from
//!   the checkpoints in object storage plus the log tail, and the safekeepers have trimmed the
//!   log the checkpoints cover;
//! - the object store down for a while: SQL goes on (writes, and reads that miss the compute's
//!   cache), checkpoints wait, and complete once it is back.

use borealis_tests::cluster::{checkpointed_lsn, ClusterOptions, TestCluster};
use borealis_tests::s3::S3Server;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BUCKET: &str = "borealis";
const TENANT: &str = "acme";
/// Bytes of payload per row: a batch of 50 rows spans a few pages.
const PAYLOAD_BYTES: usize = 300;

fn options(s3: &S3Server) -> ClusterOptions {
    ClusterOptions {
        // The writer compute stops after 2 s idle, so the next statement reads its pages from the
        // pageserver again.
        idle_timeout: "2s".into(),
        object_store: Some(s3.url(BUCKET)),
        env: vec![
            ("PAGESERVER_CHECKPOINT_INTERVAL".into(), "300ms".into()),
            ("PAGESERVER_CHECKPOINT_RECORDS".into(), "100".into()),
        ],
        segment_size: None,
        pool: None,
    }
}

fn payload(id: i64) -> String {
    format!("{id:08}-").repeat(PAYLOAD_BYTES / 9)
}

/// Inserts rows `from..from + n` in one transaction; returns the commit's LSN.
async fn insert(c: &TestCluster, token: &str, from: i64, n: i64) -> u64 {
    let batch: Vec<Value> = (from..from + n)
        .map(|i| json!({"sql": "INSERT INTO t (id, v) VALUES (?, ?)", "params": [i, payload(i)]}))
        .collect();
    let r = c.batch(TENANT, token, batch).await.ok();
    r.body["lsn"].as_u64().expect("a commit has an LSN")
}

/// The tenant's test table and how many rows it holds (ids `1..=rows`).
struct Table {
    token: String,
    rows: i64,
}

impl Table {
    /// Creates the tenant and its empty table.
    async fn create(c: &TestCluster) -> Table {
        let token = c.create_tenant(TENANT).await;
        c.sql(
            TENANT,
            &token,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)",
        )
        .await
        .ok();
        Table { token, rows: 0 }
    }

    /// Adds `transactions` transactions of 50 rows each; returns the last one's LSN.
    async fn fill(&mut self, c: &TestCluster, transactions: usize) -> u64 {
        let mut last_lsn = 0;
        for _ in 0..transactions {
            last_lsn = insert(c, &self.token, self.rows + 1, 50).await;
            self.rows += 50;
        }
        last_lsn
    }
}

/// Runs `sql`, retrying while the answer is `unavailable` (retryable by contract: a pageserver
/// restoring, a compute restarting), at most `within`.
async fn sql_retrying(c: &TestCluster, token: &str, sql: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let r = c.sql(TENANT, token, sql).await;
        if r.status == 200 {
            return r.body;
        }
        assert!(
            r.code() == "unavailable" && Instant::now() < deadline,
            "{sql}: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every row `1..=n` is there with its payload.
async fn check_rows(c: &TestCluster, token: &str, n: i64) {
    let body = sql_retrying(
        c,
        token,
        "SELECT count(*), sum(id), min(id), max(id) FROM t",
        Duration::from_secs(60),
    )
    .await;
    let row = &body["results"][0]["rows"][0];
    assert_eq!(
        row,
        &json!([n, n * (n + 1) / 2, 1, n]),
        "acknowledged rows after restore"
    );
    for id in [1, n / 3, n / 2, n] {
        let body = sql_retrying(
            c,
            token,
            &format!("SELECT v FROM t WHERE id = {id}"),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            body["results"][0]["rows"][0][0],
            json!(payload(id)),
            "row {id}"
        );
    }
}

/// Waits until the tenant's compute has stopped (idle timeout).
async fn wait_compute_idle(c: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .request(
                reqwest::Method::GET,
                &format!("/v1/tenants/{TENANT}"),
                &c.admin_token,
                None,
            )
            .await
            .ok();
        if r.body["compute"] == "idle" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "compute never went idle: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tenant's segment 0 on a pageserver's `/status` (`Null` if not there, or no answer).
async fn segment_status(c: &TestCluster, ps: &str) -> Value {
    let Some(status) = c.node_status(ps).await else {
        return Value::Null;
    };
    status["tenants"]
        .as_array()
        .and_then(|t| t.first())
        .and_then(|t| t["segments"].as_array())
        .and_then(|s| s.iter().find(|s| s["segment"] == 0).cloned())
        .unwrap_or(Value::Null)
}

/// Polls the serving pageserver's segment status until `f` holds, at most `within`.
async fn wait_segment(
    c: &TestCluster,
    ps: &str,
    within: Duration,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let seg = segment_status(c, ps).await;
        if f(&seg) {
            return seg;
        }
        assert!(
            Instant::now() < deadline,
            "{ps}: not within {within:?}: {what}\n{seg:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every safekeeper's trim point of the tenant's segment 0 (0: not trimmed or no answer).
async fn safekeeper_bases(c: &TestCluster) -> Vec<u64> {
    let mut out = Vec::new();
    for sk in c.node_ids("safekeeper") {
        let base = c
            .node_status(&sk)
            .await
            .and_then(|s| {
                s["tenants"].as_array()?.iter().find_map(|t| {
                    t["segments"]
                        .as_array()?
                        .iter()
                        .find(|s| s["segment"] == 0)?["base"]
                        .as_u64()
                })
            })
            .unwrap_or(0);
        out.push(base);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_pageservers_restore_from_object_storage_and_safekeepers_trim() {
    let s3 = S3Server::start(BUCKET);
    let c = TestCluster::start_with(options(&s3)).await;
    let mut table = Table::create(&c).await;
    let mut last_lsn = table.fill(&c, 12).await;
    let ps = c.serving_pageserver(TENANT).await;
    // A pageserver applies only what somebody vouched is durable; the safekeepers learn the VDL
    // from the writer's next append, so the last commit is vouched by the next read: a new
    // compute's, which reads its pages from the pageserver.
    wait_compute_idle(&c).await;
    check_rows(&c, &table.token, table.rows).await;

    // Checkpoints reach the last commit, and every safekeeper trims the log they cover.
    let seg = wait_segment(
        &c,
        &ps,
        Duration::from_secs(60),
        "checkpointed the last commit",
        |s| checkpointed_lsn(s) >= last_lsn,
    )
    .await;
    assert_eq!(seg["checkpoint"]["generation"], 1, "{seg}");
    assert!(seg["checkpoint"]["checkpoints"].as_u64().unwrap_or(0) >= 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bases = safekeeper_bases(&c).await;
        if bases.iter().all(|&b| b > 0) {
            // Never above what a durable index covers.
            let now = checkpointed_lsn(&segment_status(&c, &ps).await);
            assert!(bases.iter().all(|&b| b <= now), "{bases:?} above {now}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "safekeepers never trimmed: {bases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cache = &c.node_status(&ps).await.expect("pageserver status")["cache"];
    assert!(
        cache["pages"].as_u64() <= cache["capacity"].as_u64(),
        "{cache}"
    );

    // Both pageservers killed, their disks wiped, started again.
    for id in ["ps-1", "ps-2"] {
        c.node("kill", id);
        c.wipe_node_data(id);
    }
    for id in ["ps-1", "ps-2"] {
        c.node("start", id);
    }
    // The compute must read its pages again: wait for it to stop.
    wait_compute_idle(&c).await;
    check_rows(&c, &table.token, table.rows).await;
    let seg = segment_status(&c, &ps).await;
    let ck = &seg["checkpoint"];
    assert_eq!(ck["restored_from_generation"], 1, "{seg}");
    assert!(ck["generation"].as_u64().unwrap_or(0) >= 2, "{seg}");
    assert!(
        ck["restored_lsn"].as_u64().unwrap_or(0) >= last_lsn,
        "{seg}"
    );
    assert!(
        ck["remote_pages"].as_u64().unwrap_or(0) + ck["restored_pages"].as_u64().unwrap_or(0) > 1,
        "the restored chain held the table's pages: {seg}"
    );

    // It goes on: new rows, checkpointed by the new generation, read back after another restart
    // of the compute.
    last_lsn = table.fill(&c, 2).await;
    wait_compute_idle(&c).await;
    check_rows(&c, &table.token, table.rows).await;
    let seg = wait_segment(
        &c,
        &ps,
        Duration::from_secs(60),
        "checkpointed the new rows",
        |s| checkpointed_lsn(s) >= last_lsn,
    )
    .await;
    assert_eq!(seg["checkpoint"]["stale"], false, "{seg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_goes_on_while_the_object_store_is_down_and_checkpoints_complete_after() {
    let mut s3 = S3Server::start(BUCKET);
    let c = TestCluster::start_with(options(&s3)).await;
    let mut table = Table::create(&c).await;
    table.fill(&c, 4).await;
    let ps = c.serving_pageserver(TENANT).await;
    wait_segment(
        &c,
        &ps,
        Duration::from_secs(60),
        "a first checkpoint",
        |s| checkpointed_lsn(s) > 0,
    )
    .await;

    // The object store goes away. Writes go on.
    s3.stop();
    // (A checkpoint in flight when it went away has finished or failed by now.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let checkpointed_before = checkpointed_lsn(&segment_status(&c, &ps).await);
    assert!(checkpointed_before > 0);
    let last_lsn = table.fill(&c, 6).await;
    // Reads that miss the compute's cache go on too: a new compute reads every page from the
    // pageserver, which answers from what it applied (and so learns the last commit is durable).
    wait_compute_idle(&c).await;
    check_rows(&c, &table.token, table.rows).await;
    // Checkpoints wait for the store, and say so.
    let seg = wait_segment(&c, &ps, Duration::from_secs(30), "uploads failing", |s| {
        s["checkpoint"]["object_store_failures"]
            .as_u64()
            .unwrap_or(0)
            > 0
    })
    .await;
    assert_eq!(checkpointed_lsn(&seg), checkpointed_before, "{seg}");
    assert!(
        seg["caught_up_to"].as_u64().unwrap_or(0) >= last_lsn,
        "{seg}"
    );

    // Back: the waiting checkpoint completes, then one covering every commit.
    s3.start_again();
    let seg = wait_segment(
        &c,
        &ps,
        Duration::from_secs(60),
        "checkpoints caught up",
        |s| checkpointed_lsn(s) >= last_lsn,
    )
    .await;
    assert!(checkpointed_lsn(&seg) > checkpointed_before);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bases = safekeeper_bases(&c).await;
        if bases.iter().all(|&b| b > checkpointed_before) {
            break;
        }
        assert!(Instant::now() < deadline, "trims did not follow: {bases:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // And what was uploaded is complete: a wiped pageserver serves every row from it.
    c.node("kill", &ps);
    c.wipe_node_data(&ps);
    c.node("start", &ps);
    wait_compute_idle(&c).await;
    check_rows(&c, &table.token, table.rows).await;
}
