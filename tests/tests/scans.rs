//! Full scans through the writer and through a replica read their pages in batches: a
//! sequential run of misses is fetched by read-ahead, many pages per `GetPages` round trip
//! (RFC 0016), across segment boundaries and pageservers, and the answers are right.
//!
//! The caches are made small so that the scan must go to the pageservers: the gateway's host
//! cache holds 64 pages, the table is 32 MB (about 8,000 pages, four times SQLite's own cache)
//! over 4 MiB segments served by two pageservers. What is asserted is counted, never timed: the
//! scan's answer, that it fetched thousands of pages, and that it did so in few requests, most
//! of them in the background while SQLite read the run before (RFC 0016 §2); then, after an
//! update of every third row, that both scans see every change.

use borealis_tests::cluster::{ClusterOptions, Reply, TestCluster};
use serde_json::json;

/// Rows of one 4,000-byte blob each: one B-tree leaf page per row.
const ROWS: i64 = 8_000;
const ROW_BYTES: i64 = 4_000;
/// The gateway's host page cache in this test (`--host-cache-pages`), in pages.
const HOST_CACHE_PAGES: &str = "256";
/// Pages per page request the scans must average at least. Read-ahead doubles its run from 1 to
/// 64 pages (`--read-ahead-pages`) and the B-tree's interior pages are read one by one, so this
/// scan averages about 53 (measured); without read-ahead it would be 1, and with a read-ahead
/// that starts over at each interior page, 34.
const PAGES_PER_REQUEST_MIN: f64 = 45.0;

/// The gateway's page request counters: (requests of both kinds, pages asked for).
async fn page_requests(c: &TestCluster) -> (f64, f64) {
    let one = metric(c, "borealis_gateway_page_requests_total{kind=\"get_page\"}").await;
    let batch = metric(
        c,
        "borealis_gateway_page_requests_total{kind=\"get_pages\"}",
    )
    .await;
    let pages = metric(c, "borealis_gateway_pages_requested_total").await;
    (one + batch, pages)
}

/// `sql` on tenant `scan`, through the writer or a replica; the answer must be a success.
async fn query(c: &TestCluster, token: &str, sql: &str, replica: bool) -> Reply {
    c.request(
        reqwest::Method::POST,
        "/v1/tenants/scan/sql",
        token,
        Some(json!({"sql": sql, "replica": replica})),
    )
    .await
    .ok()
}

async fn metric(c: &TestCluster, name: &str) -> f64 {
    c.gateway_metric(name)
        .await
        .unwrap_or_else(|| panic!("the gateway exports no {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_replica_scans_read_their_pages_in_batches() {
    let c = TestCluster::start_with(ClusterOptions {
        env: vec![
            ("BOREALIS_HOST_CACHE_PAGES".into(), HOST_CACHE_PAGES.into()),
            // Counts are under test, not speed: a slow machine must not time the scan out.
            ("BOREALIS_STATEMENT_TIMEOUT".into(), "120s".into()),
            ("BOREALIS_COMMIT_TIMEOUT".into(), "60s".into()),
        ],
        segment_size: Some("4MiB".into()),
        ..ClusterOptions::default()
    })
    .await;
    let token = c.create_tenant("scan").await;
    c.sql(
        "scan",
        &token,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, pad BLOB)",
    )
    .await
    .ok();
    for _ in 0..4 {
        c.sql_params(
            "scan",
            &token,
            "INSERT INTO big (pad) SELECT randomblob(?) FROM (WITH RECURSIVE n(x) AS \
             (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?) SELECT x FROM n)",
            json!([ROW_BYTES, ROWS / 4]),
        )
        .await
        .ok();
    }
    let tenant = c.tenant_status("scan").await;
    let segments = tenant["segments"].as_array().map_or(0, Vec::len);
    assert!(segments >= 4, "32 MB over 4 MiB segments: {tenant}");

    let scan = "SELECT count(*), sum(length(pad)) FROM big";
    for replica in [false, true] {
        let who = if replica { "replica" } else { "writer" };
        let (requests_before, pages_before) = page_requests(&c).await;
        let r = query(&c, &token, scan, replica).await;
        assert_eq!(
            r.rows(),
            vec![vec![json!(ROWS), json!(ROWS * ROW_BYTES)]],
            "{who}'s scan"
        );
        let (requests_after, pages_after) = page_requests(&c).await;
        let (requests, pages) = (requests_after - requests_before, pages_after - pages_before);
        println!(
            "{who}: {pages} pages fetched in {requests} requests ({:.1} per request)",
            pages / requests.max(1.0)
        );
        assert!(
            pages >= (ROWS / 2) as f64,
            "the {who}'s scan fetched only {pages} pages: the caches were not bypassed, so this \
             test shows nothing"
        );
        assert!(
            pages / requests >= PAGES_PER_REQUEST_MIN,
            "the {who}'s scan fetched {pages} pages in {requests} requests: read-ahead is not \
             batching"
        );
    }
    // Background windows did the work: nearly every batch after the first of a scan.
    let landed = metric(
        &c,
        "borealis_gateway_readahead_windows_total{outcome=\"landed\"}",
    )
    .await;
    assert!(landed >= 100.0, "only {landed} read-ahead windows landed");

    // Change every third row, then scan again through both: the new pads. (This does not reach
    // the case a window's voids are for, a page committed, made durable and evicted from the
    // host cache while a window holding it is in flight: RFC 0016 §6 (b) argues it.)
    c.sql(
        "scan",
        &token,
        "UPDATE big SET pad = zeroblob(4000) WHERE id % 3 = 0",
    )
    .await
    .ok();
    let zeroed = ROWS / 3;
    let rescan = "SELECT count(*), sum(length(pad)), sum(pad = zeroblob(4000)) FROM big";
    for replica in [false, true] {
        let r = query(&c, &token, rescan, replica).await;
        assert_eq!(
            r.rows(),
            vec![vec![json!(ROWS), json!(ROWS * ROW_BYTES), json!(zeroed)]],
            "scan after the update (replica: {replica})"
        );
    }

    let batches = metric(
        &c,
        "borealis_gateway_page_requests_total{kind=\"get_pages\"}",
    )
    .await;
    let served = c
        .node_metric("ps-1", "pageserver_getpages_total")
        .await
        .unwrap_or(0.0)
        + c.node_metric("ps-2", "pageserver_getpages_total")
            .await
            .unwrap_or(0.0);
    assert!(
        served >= batches,
        "the gateway sent {batches} GetPages, the pageservers answered {served}"
    );
}
