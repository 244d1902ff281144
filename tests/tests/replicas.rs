//! Read replicas against a real cluster (docs/design.md §5, §12 last bullet): a writer inserts rows
//! with increasing ids, one per commit, while replica clients read. Every replica answer must
//! be a state the writer actually passed through (a prefix of its commits), answers must never
//! go backwards for a client, all answers must agree on one order of states (no Long Fork), and
//! every reader must reach the final state. Writes to a replica are refused.
//!
//! Also: a writer statement that is stopped mid-transaction leaves no trace on the writer or on
//! replicas, and the tenant goes on working (issue #7, failover of the writer compute); replicas
//! keep answering with an AZ and one more safekeeper down.

use borealis_tests::cluster::{Reply, TestCluster};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TENANT: &str = "replicated";
/// Rows the writer inserts, one commit each.
const ROWS: i64 = 250;
const READERS: usize = 3;

async fn replica(c: &TestCluster, token: &str, body: Value) -> Reply {
    let mut body = body;
    body["replica"] = json!(true);
    c.request(
        reqwest::Method::POST,
        &format!("/v1/tenants/{TENANT}/sql"),
        token,
        Some(body),
    )
    .await
}

/// What replica readers ask: the prefix (`max`, `count`) and, to catch a page that is only
/// partly right, a digest of every row's content.
const READ: &str = "SELECT max(id), count(*), total(id), total(length(v)) FROM t";

/// One replica answer to [`READ`].
#[derive(Clone, Copy, Debug)]
struct Observation {
    read_point: u64,
    max: i64,
    count: i64,
    sum_ids: f64,
    sum_lengths: f64,
}

fn observe(r: &Reply) -> Observation {
    let row = r.rows().into_iter().next().expect("one row");
    Observation {
        read_point: r.body["read_point"]
            .as_u64()
            .unwrap_or_else(|| panic!("replica answer without read_point: {}", r.body)),
        max: row[0].as_i64().unwrap_or(0), // NULL on an empty table
        count: row[1].as_i64().expect("count(*) is an integer"),
        sum_ids: row[2].as_f64().expect("total() is a real"),
        sum_lengths: row[3].as_f64().expect("total() is a real"),
    }
}

/// The value the writer stores with row `id`.
fn value_of(id: i64) -> String {
    format!("row {id}")
}

/// The digest of rows 1..=n, as the writer wrote them.
fn digest_of_prefix(n: i64) -> (f64, f64) {
    let lengths: usize = (1..=n).map(|id| value_of(id).len()).sum();
    ((n * (n + 1) / 2) as f64, lengths as f64)
}

/// The history checker: each answer a prefix state, per client monotonic, and one global order
/// of states by read point.
fn check_history(histories: &[Vec<Observation>]) {
    let mut by_read_point: BTreeMap<u64, i64> = BTreeMap::new();
    for (client, history) in histories.iter().enumerate() {
        let mut previous: Option<Observation> = None;
        for o in history {
            assert_eq!(
                o.count, o.max,
                "client {client}: {o:?} is not a prefix of the writer's commits (ids 1..n, one per commit)"
            );
            assert_eq!(
                (o.sum_ids, o.sum_lengths),
                digest_of_prefix(o.count),
                "client {client}: {o:?} has the right rows but not their content"
            );
            if let Some(p) = previous {
                assert!(
                    o.read_point >= p.read_point && o.count >= p.count,
                    "client {client} went backwards: {p:?} then {o:?}"
                );
            }
            previous = Some(*o);
            let seen = *by_read_point.entry(o.read_point).or_insert(o.count);
            assert_eq!(
                seen, o.count,
                "two answers at read point {} disagree",
                o.read_point
            );
        }
    }
    // Ordered by read point, states must only grow: otherwise two clients saw commits in
    // different orders (Long Fork).
    let mut last = (0u64, 0i64);
    for (&rp, &count) in &by_read_point {
        assert!(
            count >= last.1,
            "read point {rp} shows {count} rows but read point {} showed {}",
            last.0,
            last.1
        );
        last = (rp, count);
    }
}

async fn wait_idle(c: &TestCluster) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = c
            .request(
                reqwest::Method::GET,
                &format!("/v1/tenants/{TENANT}"),
                &c.admin_token,
                None,
            )
            .await;
        if r.body["compute"] == "idle" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the tenant's compute did not go idle: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_show_the_writers_commits_in_order_and_refuse_writes() {
    let c = TestCluster::start_with_idle("3s").await;
    let token = c.create_tenant(TENANT).await;
    c.sql(
        TENANT,
        &token,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
    )
    .await
    .ok();

    // Writes through a replica are refused, whatever their shape, and change nothing.
    for body in [
        json!({"sql": "INSERT INTO t (id, v) VALUES (1000, 'no')"}),
        json!({"sql": "DELETE FROM t WHERE 0"}),
        json!({"sql": "CREATE TABLE u (x)"}),
        json!({"batch": [{"sql": "SELECT 1"}, {"sql": "INSERT INTO t (id) VALUES (1001)"}]}),
        // Switching query_only off does not help: the reader's storage refuses the commit.
        json!({"batch": [{"sql": "PRAGMA query_only = 0"}, {"sql": "INSERT INTO t (id) VALUES (1002)"}]}),
    ] {
        let r = replica(&c, &token, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{body}: {}",
            r.body
        );
        let message = r.body.pointer("/error/message").and_then(Value::as_str);
        assert!(
            message.is_some_and(|m| m.contains("replicas are read-only")),
            "{body}: {}",
            r.body
        );
    }
    let r = replica(&c, &token, json!({"sql": "SELECT count(*) FROM t"}))
        .await
        .ok();
    assert_eq!(r.scalar(), 0, "a refused replica write took effect");
    assert_eq!(
        c.sql(
            TENANT,
            &token,
            "SELECT count(*) FROM sqlite_master WHERE name = 'u'"
        )
        .await
        .ok()
        .scalar(),
        0
    );
    // The reader still serves reads (and batches of them) after refusing.
    let r = replica(
        &c,
        &token,
        json!({"batch": [{"sql": "SELECT 1"}, {"sql": "SELECT count(*) FROM t"}]}),
    )
    .await
    .ok();
    assert_eq!(r.body.pointer("/results/1/rows/0/0"), Some(&json!(0)));

    // One writer, several replica readers, at the same time.
    let writer = async {
        let mut last_lsn = 0;
        for id in 1..=ROWS {
            let r = c
                .sql_params(
                    TENANT,
                    &token,
                    "INSERT INTO t (id, v) VALUES (?, ?)",
                    json!([id, value_of(id)]),
                )
                .await
                .ok();
            last_lsn = r.body["lsn"].as_u64().expect("lsn");
        }
        last_lsn
    };
    let reader = |client: usize| {
        let (c, token) = (&c, &token);
        async move {
            let mut history = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let r = replica(c, token, json!({ "sql": READ })).await.ok();
                let o = observe(&r);
                history.push(o);
                if o.count == ROWS {
                    return history;
                }
                assert!(
                    Instant::now() < deadline,
                    "client {client} never reached the final state; last {o:?}"
                );
            }
        }
    };
    let (last_lsn, histories) =
        tokio::join!(writer, futures::future::join_all((0..READERS).map(reader)));
    check_history(&histories);
    let answers: usize = histories.iter().map(Vec::len).sum();
    let partial = histories
        .iter()
        .flatten()
        .filter(|o| o.count > 0 && o.count < ROWS)
        .count();
    eprintln!("{answers} replica answers, {partial} of them mid-way");
    assert!(
        partial > 0,
        "no replica answer showed a state between empty and full: the replica did not follow"
    );
    let final_rp = histories
        .iter()
        .flatten()
        .map(|o| o.read_point)
        .max()
        .unwrap();
    assert!(
        final_rp >= last_lsn,
        "the final state at read point {final_rp}, below the last commit {last_lsn}"
    );

    let resets = c
        .gateway_metric("borealis_gateway_replica_resets_total")
        .await;
    eprintln!("replica resets: {resets:?}");
    // Lag is reported.
    assert!(
        c.gateway_metric("borealis_gateway_replica_lag_lsn")
            .await
            .is_some(),
        "no replica lag gauge in /metrics"
    );
    let lag_answers = c
        .gateway_metric("borealis_gateway_replica_lag_seconds_count")
        .await
        .expect("replica lag histogram in /metrics");
    assert!(lag_answers >= answers as f64, "{lag_answers} < {answers}");

    // Once everything went idle (reader, then writer), a replica read starts what it needs and
    // still sees everything, never at an older read point.
    wait_idle(&c).await;
    let r = replica(&c, &token, json!({ "sql": READ })).await.ok();
    let o = observe(&r);
    assert_eq!((o.max, o.count), (ROWS, ROWS), "{}", r.body);
    assert!(o.read_point >= final_rp, "{o:?} after {final_rp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_stopped_mid_transaction_leaves_no_trace() {
    let c = TestCluster::start().await;
    let token = c.create_tenant(TENANT).await;
    c.sql(TENANT, &token, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .ok();
    c.sql(TENANT, &token, "INSERT INTO t VALUES (1)").await.ok();
    let forever =
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n";

    // The insert ran inside the writer's SQLite, then the statement after it was stopped: the
    // instance is thrown away, and nothing of the transaction may show anywhere. Requests queued
    // behind it are served by the next instance.
    let stopped = c.batch(
        TENANT,
        &token,
        vec![
            json!({"sql": "INSERT INTO t VALUES (2)"}),
            json!({"sql": forever}),
        ],
    );
    let queued = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.sql(TENANT, &token, "INSERT INTO t VALUES (3)").await
    };
    let (stopped, queued) = tokio::join!(stopped, queued);
    assert_eq!(stopped.code(), "timeout", "{}", stopped.body);
    assert_eq!(
        queued.status, 200,
        "a request queued behind: {}",
        queued.body
    );
    let ids = |r: Reply| -> Vec<i64> {
        r.ok()
            .rows()
            .iter()
            .map(|row| row[0].as_i64().expect("id"))
            .collect()
    };
    assert_eq!(
        ids(c.sql(TENANT, &token, "SELECT id FROM t ORDER BY id").await),
        vec![1, 3],
        "writer"
    );
    let r = replica(&c, &token, json!({"sql": "SELECT id FROM t ORDER BY id"})).await;
    assert_eq!(ids(r), vec![1, 3], "replica");

    // A replica query that never ends is stopped too, and the replica goes on serving.
    let r = replica(&c, &token, json!({ "sql": forever })).await;
    assert_eq!(r.code(), "timeout", "{}", r.body);
    let r = replica(&c, &token, json!({"sql": "SELECT count(*) FROM t"})).await;
    assert_eq!(r.ok().scalar(), 2);

    // An AZ and one more safekeeper down (docs/design.md §6): writes are refused, replicas still
    // answer, at the last durable state.
    for sk in ["sk-a1", "sk-a2", "sk-b1"] {
        c.node("kill", sk);
    }
    let r = c.sql(TENANT, &token, "INSERT INTO t VALUES (4)").await;
    assert_eq!(r.code(), "read_only", "{}", r.body);
    let r = replica(&c, &token, json!({"sql": "SELECT id FROM t ORDER BY id"})).await;
    assert_eq!(ids(r), vec![1, 3], "replica with AZ+1 down");
}
