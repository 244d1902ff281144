//! The HTTP API's contract (DESIGN.md §7) against a real cluster: auth, errors, limits.

use borealis_tests::cluster::TestCluster;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_clear_and_harm_nothing() {
    let c = TestCluster::start_with_idle("2s").await;
    let a = c.create_tenant("tenant-a").await;
    let b = c.create_tenant("tenant-b").await;
    c.sql(
        "tenant-a",
        &a,
        "CREATE TABLE s (k TEXT PRIMARY KEY, v BLOB)",
    )
    .await
    .ok();
    c.sql_params(
        "tenant-a",
        &a,
        "INSERT INTO s VALUES (?, ?)",
        json!(["secret", {"base64": "AAEC"}]),
    )
    .await
    .ok();
    c.sql("tenant-b", &b, "CREATE TABLE other (x)").await.ok();

    // Tenant names, duplicates.
    let r = c
        .request(
            reqwest::Method::POST,
            "/v1/tenants",
            &c.admin_token,
            Some(json!({"name": "Bad_Name"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"), "{}", r.body);
    let r = c
        .request(
            reqwest::Method::POST,
            "/v1/tenants",
            &c.admin_token,
            Some(json!({"name": "tenant-a"})),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let r = c
        .request(
            reqwest::Method::POST,
            "/v1/tenants",
            &a,
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (401, "unauthorized"),
        "a tenant token is not an admin token"
    );

    // Wrong token, unknown tenant, cross-tenant access.
    let r = c.sql("tenant-a", "bt_wrong", "SELECT 1").await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{}", r.body);
    let r = c
        .request(
            reqwest::Method::POST,
            "/v1/tenants/tenant-a/sql",
            "",
            Some(json!({"sql": "SELECT 1"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{}", r.body);
    let r = c.sql("nobody", &a, "SELECT 1").await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
    let r = c.sql("tenant-b", &a, "SELECT * FROM s").await;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "tenant A's token must not read tenant B: {}",
        r.body
    );

    // Bad SQL: a clear error, and the tenant still works.
    let r = c.sql("tenant-a", &a, "SELEKT nonsense").await;
    assert_eq!((r.status, r.code()), (400, "sql_error"), "{}", r.body);
    let r = c
        .sql("tenant-a", &a, "INSERT INTO s VALUES ('secret', NULL)")
        .await;
    assert_eq!(
        (r.status, r.code()),
        (400, "sql_error"),
        "constraint violation: {}",
        r.body
    );
    let r = c.sql("tenant-a", &a, "SELECT k, v FROM s").await.ok();
    assert_eq!(
        r.rows(),
        vec![vec![json!("secret"), json!({"base64": "AAEC"})]]
    );

    // A batch is all or nothing.
    let r = c
        .batch(
            "tenant-a",
            &a,
            vec![
                json!({"sql": "INSERT INTO s VALUES ('one', NULL)"}),
                json!({"sql": "INSERT INTO s VALUES ('secret', NULL)"}),
            ],
        )
        .await;
    assert_eq!(r.code(), "sql_error", "{}", r.body);
    assert_eq!(
        c.sql("tenant-a", &a, "SELECT count(*) FROM s")
            .await
            .ok()
            .scalar(),
        1,
        "half a batch is visible"
    );

    // Malformed and huge bodies.
    let r = c
        .request(
            reqwest::Method::POST,
            "/v1/tenants/tenant-a/sql",
            &a,
            Some(json!({"sequel": "x"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "bad_request"), "{}", r.body);
    let huge = "x".repeat(100 * 1024 * 1024);
    let r = c
        .sql_params("tenant-a", &a, "SELECT ?", json!([huge]))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (413, "too_large"),
        "a 100 MB body: {}",
        r.body
    );

    // A query that never ends: a timeout, and the tenant still works.
    let started = Instant::now();
    let r = c
        .sql("tenant-a", &a, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n")
        .await;
    assert_eq!(r.code(), "timeout", "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "timeout took {:?}",
        started.elapsed()
    );
    assert_eq!(
        c.sql("tenant-a", &a, "SELECT count(*) FROM s")
            .await
            .ok()
            .scalar(),
        1
    );

    // Idle compute stops, and the next request starts it again with all the data.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .request(
                reqwest::Method::GET,
                "/v1/tenants/tenant-a",
                &c.admin_token,
                None,
            )
            .await;
        if r.body["compute"] == "idle" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "compute still running after the idle timeout: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        c.sql("tenant-a", &a, "SELECT count(*) FROM s")
            .await
            .ok()
            .scalar(),
        1
    );
    let metrics = reqwest::get(format!("{}/metrics", c.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cold: u64 = metrics
        .lines()
        .find(|l| l.starts_with("borealis_gateway_cold_start_seconds_count"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("cold start count in /metrics");
    assert!(
        cold >= 3,
        "two tenants started, then tenant-a again: {cold} cold starts"
    );

    // Deleting a tenant.
    let r = c
        .request(
            reqwest::Method::DELETE,
            "/v1/tenants/tenant-b",
            &c.admin_token,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(c.sql("tenant-b", &b, "SELECT 1").await.status, 404);
}
