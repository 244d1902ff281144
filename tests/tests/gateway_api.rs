//! The HTTP API's contract (docs/design.md §7) against a real cluster: auth, errors, limits.

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
    // Another tenant's token learns nothing about which names exist (see
    // `a_wrong_token_is_unauthorized_whether_or_not_the_tenant_exists`).
    let r = c.sql("nobody", &a, "SELECT 1").await;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.body);
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
    // A request's own limit: shorter than the gateway's, and named in the error.
    let forever =
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n";
    let sql_path = "/v1/tenants/tenant-a/sql";
    let started = Instant::now();
    let r = c
        .request(
            reqwest::Method::POST,
            sql_path,
            &a,
            Some(json!({"sql": forever, "timeout_ms": 300})),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(r.code(), "timeout", "{}", r.body);
    assert!(r.body.to_string().contains("300 ms"), "{}", r.body);
    assert!(
        took < Duration::from_secs(4),
        "a 300 ms limit took {took:?}"
    );
    // Above the gateway's maximum, or not a positive whole number: refused, nothing run.
    for bad in [json!(400_000_000u64), json!(0), json!("1s")] {
        let r = c
            .request(
                reqwest::Method::POST,
                sql_path,
                &a,
                Some(json!({"sql": "SELECT 1", "timeout_ms": bad})),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{bad}: {}",
            r.body
        );
        assert!(r.body.to_string().contains("timeout_ms"), "{}", r.body);
    }
    // A longer limit than the gateway's is allowed up to the maximum.
    let r = c
        .request(
            reqwest::Method::POST,
            sql_path,
            &a,
            Some(json!({"sql": "SELECT 1", "timeout_ms": 60000})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A tenant's own maximum (issue #21): set by the admin, shown, enforced, dropped again.
    let tenant_path = "/v1/tenants/tenant-a";
    let patch = |body| {
        c.request(
            reqwest::Method::PATCH,
            tenant_path,
            &c.admin_token,
            Some(body),
        )
    };
    let r = patch(json!({"statement_timeout_max_ms": 500})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["statement_timeout_max_ms"], 500, "{}", r.body);
    assert_eq!(r.body["statement_timeout_max_from"], "tenant", "{}", r.body);
    let ask = |ms: u64| {
        c.request(
            reqwest::Method::POST,
            sql_path,
            &a,
            Some(json!({"sql": "SELECT 1", "timeout_ms": ms})),
        )
    };
    let r = ask(60_000).await;
    assert_eq!((r.status, r.code()), (400, "bad_request"), "{}", r.body);
    assert!(
        r.body
            .to_string()
            .contains("this tenant's maximum of 500 ms"),
        "{}",
        r.body
    );
    assert_eq!(ask(500).await.status, 200, "the maximum itself is allowed");
    // Another tenant is not affected by tenant-a's setting.
    let r = c
        .request(
            reqwest::Method::POST,
            "/v1/tenants/tenant-b/sql",
            &b,
            Some(json!({"sql": "SELECT 1", "timeout_ms": 60_000})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // Bad settings, unknown keys, a tenant token, an unknown tenant: refused, nothing changed.
    for (body, code, status) in [
        (json!({"statement_timeout_max_ms": 5}), "bad_request", 400),
        (json!({"statement_timeout_max_ms": -1}), "bad_request", 400),
        (
            json!({"statement_timeout_max_ms": 5_000_000_000u64}),
            "bad_request",
            400,
        ),
        (
            json!({"statement_timeout_max_ms": "1h"}),
            "bad_request",
            400,
        ),
        (json!({"statement_timeout_max": 1000}), "bad_request", 400),
        (json!({}), "bad_request", 400),
    ] {
        let r = patch(body.clone()).await;
        assert_eq!((r.status, r.code()), (status, code), "{body}: {}", r.body);
    }
    let r = c
        .request(
            reqwest::Method::PATCH,
            tenant_path,
            &a,
            Some(json!({"statement_timeout_max_ms": 3_600_000})),
        )
        .await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{}", r.body);
    let r = c
        .request(
            reqwest::Method::PATCH,
            "/v1/tenants/nobody",
            &c.admin_token,
            Some(json!({"statement_timeout_max_ms": 1000})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
    let r = c
        .request(reqwest::Method::GET, tenant_path, &c.admin_token, None)
        .await;
    assert_eq!(
        r.body["statement_timeout_max_ms"], 500,
        "unchanged: {}",
        r.body
    );
    // Above the gateway's default maximum, for a tenant that needs long statements.
    let r = patch(json!({"statement_timeout_max_ms": 400_000_000u64})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ask(400_000_000).await.status, 200);
    // Dropped: the gateway's maximum again.
    let r = patch(json!({"statement_timeout_max_ms": null})).await;
    assert_eq!(
        r.body["statement_timeout_max_from"], "gateway",
        "{}",
        r.body
    );
    assert_eq!(r.body["statement_timeout_max_ms"], 300_000, "{}", r.body);
    let r = ask(400_000_000).await;
    assert!(
        r.body.to_string().contains("this gateway's maximum"),
        "{}",
        r.body
    );
    // Set at creation, and refused there when out of range or misspelt.
    let r = c
        .request(
            reqwest::Method::POST,
            "/v1/tenants",
            &c.admin_token,
            Some(json!({"name": "tenant-long", "statement_timeout_max_ms": 3_600_000})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = c
        .request(
            reqwest::Method::GET,
            "/v1/tenants/tenant-long",
            &c.admin_token,
            None,
        )
        .await;
    assert_eq!(r.body["statement_timeout_max_ms"], 3_600_000, "{}", r.body);
    // The same through the command line.
    let out = c
        .borealis(&[
            "tenant",
            "set",
            "tenant-long",
            "--statement-timeout-max",
            "10m",
        ])
        .expect("borealis tenant set");
    assert!(out.contains("600000 ms (the tenant's maximum)"), "{out}");
    let out = c
        .borealis(&[
            "tenant",
            "set",
            "tenant-long",
            "--statement-timeout-max",
            "gateway",
        ])
        .expect("borealis tenant set ... gateway");
    assert!(out.contains("300000 ms (the gateway's maximum)"), "{out}");
    let err = c
        .borealis(&[
            "tenant",
            "set",
            "tenant-long",
            "--statement-timeout-max",
            "2ms",
        ])
        .expect_err("below the floor");
    assert!(err.contains("statement_timeout_max_ms"), "{err}");
    let err = c
        .borealis(&[
            "tenant",
            "set",
            "tenant-long",
            "--statement-timeout-max",
            "soon",
        ])
        .expect_err("not a duration");
    assert!(err.contains("--statement-timeout-max"), "{err}");
    for body in [
        json!({"name": "tenant-x", "statement_timeout_max_ms": 0}),
        json!({"name": "tenant-x", "colour": 1}),
    ] {
        let r = c
            .request(
                reqwest::Method::POST,
                "/v1/tenants",
                &c.admin_token,
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{body}: {}",
            r.body
        );
    }
    let r = c
        .request(
            reqwest::Method::GET,
            "/v1/tenants/tenant-x",
            &c.admin_token,
            None,
        )
        .await;
    assert_eq!(
        r.status, 404,
        "a refused creation creates nothing: {}",
        r.body
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
    // Gone at once: its token grants nothing now, and the admin sees no such tenant.
    let r = c.sql("tenant-b", &b, "SELECT 1").await;
    assert_eq!((r.status, r.code()), (401, "unauthorized"), "{}", r.body);
    let r = c.sql("tenant-b", &c.admin_token, "SELECT 1").await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
}

/// docs/design.md §7: a wrong token is `unauthorized` whether or not the tenant exists, so tenant
/// names cannot be enumerated without the admin token; the answer is the same, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_unauthorized_whether_or_not_the_tenant_exists() {
    let c = TestCluster::start().await;
    c.create_tenant("known").await;
    let random = format!("bt_{:064x}", rand::random::<u128>());
    let known = c.sql("known", &random, "SELECT 1").await;
    let unknown = c.sql("never-created", &random, "SELECT 1").await;
    assert_eq!(
        (known.status, known.code()),
        (401, "unauthorized"),
        "{}",
        known.body
    );
    assert_eq!(
        (unknown.status, unknown.code()),
        (401, "unauthorized"),
        "{}",
        unknown.body
    );
    assert_eq!(
        known.body, unknown.body,
        "the answers must not tell a known name from an unknown one"
    );
    // A missing or malformed header: the same rule.
    for name in ["known", "never-created"] {
        let r = c
            .request(
                reqwest::Method::POST,
                &format!("/v1/tenants/{name}/sql"),
                "",
                Some(json!({"sql": "SELECT 1"})),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthorized"),
            "{name}: {}",
            r.body
        );
    }
    // The admin token may learn that a name does not exist.
    let r = c.sql("never-created", &c.admin_token, "SELECT 1").await;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.body);
    let r = c.sql("known", &c.admin_token, "SELECT 1").await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Issue 15: a batch is one transaction however its statements are written, and SQL cannot
/// write the schema by hand (which made the tenant's database unopenable from its next compute
/// instance on, every request failing `unavailable` after a 5 s wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cannot_commit_half_way_and_sql_cannot_break_the_schema() {
    let c = TestCluster::start_with_idle("2s").await;
    let t = c.create_tenant("acme").await;
    c.sql(
        "acme",
        &t,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
    )
    .await
    .ok();
    let count = || async {
        c.sql("acme", &t, "SELECT count(*) FROM t")
            .await
            .ok()
            .scalar()
    };

    // The batch of the issue used to answer `sql_error` with its INSERT durable and visible.
    let refused: [&[&str]; 4] = [
        &[
            "INSERT INTO t VALUES (1, 'x')",
            ";COMMIT",
            "SELECT * FROM nosuch",
        ],
        &["INSERT INTO t VALUES (1, 'x'); COMMIT"],
        &["INSERT INTO t VALUES (1, 'x')", "SAVEPOINT s", "RELEASE s"],
        &[
            "INSERT INTO t VALUES (1, 'x')",
            "/* */ ROLLBACK",
            "INSERT INTO t VALUES (2, 'y')",
        ],
    ];
    for entries in refused {
        let r = c
            .batch(
                "acme",
                &t,
                entries.iter().map(|s| json!({ "sql": s })).collect(),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "bad_request"),
            "{entries:?}: {}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("not allowed inside a batch"),
            "{entries:?}: {message}"
        );
        assert_eq!(
            count().await,
            0,
            "{entries:?}: part of the batch is visible"
        );
    }

    // The schema cannot be written by hand, alone or in a batch.
    c.sql("acme", &t, "PRAGMA writable_schema = ON").await.ok();
    let r = c
        .sql(
            "acme",
            &t,
            "UPDATE sqlite_schema SET sql = 'garbage' WHERE name = 't'",
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "sql_error"), "{}", r.body);
    let r = c
        .batch(
            "acme",
            &t,
            vec![
                json!({"sql": "PRAGMA writable_schema = ON"}),
                json!({"sql": "UPDATE sqlite_schema SET sql = 'garbage' WHERE name = 't'"}),
            ],
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "sql_error"), "{}", r.body);

    // The tenant's next compute instance (after the idle timeout) opens the database and works.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = c
            .request(
                reqwest::Method::GET,
                "/v1/tenants/acme",
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
    let started = Instant::now();
    c.sql("acme", &t, "INSERT INTO t VALUES (3, 'after')")
        .await
        .ok();
    assert_eq!(count().await, 1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the restart took {:?}",
        started.elapsed()
    );
    // And a good batch commits whole.
    c.batch(
        "acme",
        &t,
        vec![
            json!({"sql": "INSERT INTO t VALUES (4, 'a')"}),
            json!({"sql": "INSERT INTO t VALUES (5, 'b')"}),
        ],
    )
    .await
    .ok();
    assert_eq!(count().await, 3);
}

/// RFC 0017: an idle tenant's next writer resumes its predecessor's epoch instead of recovering
/// (no new epoch, nothing lost), and a resume that a member refuses, because it promised a newer
/// epoch to a recovery (RFC 0014 §2's `Fence`, sent here by hand with the tenant's own
/// credentials), falls back to a recovery in the same request, above that epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tenant_resumes_its_writers_epoch_unless_a_member_promised_a_newer_one() {
    let c = TestCluster::start_with_idle("1s").await;
    let t = c.create_tenant("sleepy").await;
    let r = c
        .sql("sleepy", &t, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c.sql("sleepy", &t, "INSERT INTO t VALUES (1)").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let first_epoch = c.tenant_status("sleepy").await["epoch"]
        .as_u64()
        .expect("epoch");
    let idle = || async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.tenant_status("sleepy").await["compute"] != "idle" {
            assert!(Instant::now() < deadline, "the compute never went idle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let c = &c;
    let metric = |name: &'static str| async move {
        c.gateway_metric(name)
            .await
            .unwrap_or_else(|| panic!("gateway metric {name}"))
    };

    // Idle, then a write: the same epoch, resumed.
    idle().await;
    let r = c.sql("sleepy", &t, "INSERT INTO t VALUES (2)").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        c.tenant_status("sleepy").await["epoch"].as_u64(),
        Some(first_epoch),
        "a resumed writer keeps its predecessor's epoch"
    );
    assert_eq!(metric("borealis_gateway_writer_resumes_total").await, 1.0);

    // Idle again; a recovery elsewhere promises a newer epoch on one member (and dies).
    idle().await;
    let id: borealis_core::TenantId = c.tenant_status("sleepy").await["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("hex tenant id");
    let token = c.storage_keys().signing_key().issue_for(
        borealis_auth::Role::Gateway,
        Some(id),
        "gateway",
        600,
    );
    let sk = c.node_info("sk-b1");
    let client = borealis_wire::Client::connect(&sk.addr, &token, Duration::from_secs(5), None)
        .await
        .expect("connect to sk-b1");
    let promised = first_epoch + 1;
    let answer = client
        .call(
            borealis_wire::Body::Fence {
                tenant: id,
                epoch: promised,
            },
            Duration::from_secs(5),
        )
        .await
        .expect("sk-b1 promises the epoch");
    assert!(
        matches!(answer, borealis_wire::Body::State { promised_epoch, .. } if promised_epoch == promised),
        "{answer:?}"
    );
    drop(client);
    let r = c.sql("sleepy", &t, "INSERT INTO t VALUES (3)").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let epoch = c.tenant_status("sleepy").await["epoch"]
        .as_u64()
        .expect("epoch");
    assert!(
        epoch > promised,
        "refused by sk-b1, the resume falls back to a recovery above its promise: epoch {epoch}"
    );
    assert_eq!(
        metric("borealis_gateway_writer_resumes_failed_total").await,
        1.0
    );
    let r = c.sql("sleepy", &t, "SELECT count(*) FROM t").await;
    assert_eq!(r.ok().scalar(), 3, "nothing was lost on the way");
}
