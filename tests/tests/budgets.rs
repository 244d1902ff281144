//! Budgets (issue 15): what a tenant's requests hold in the gateway is charged at its real
//! memory cost, not at the length of its text. The requests-in-flight budget and fairness
//! between tenants are in `fairness.rs`.

use borealis_tests::cluster::{ClusterOptions, TestCluster};
use serde_json::{json, Value};

/// The per-tenant byte budget counts memory, not text: parameters that are cheap to send but
/// expensive to hold, and rows that are small as the compute counts them but large in the
/// gateway, are `too_large` against a small budget, while the same number of bytes as one string
/// goes through. Nothing of a refused request runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_are_charged_at_their_real_memory_cost() {
    const BUDGET: u64 = 64 << 20;
    let c = TestCluster::start_with(ClusterOptions {
        env: vec![("BOREALIS_TENANT_INFLIGHT_BYTES".into(), BUDGET.to_string())],
        ..ClusterOptions::default()
    })
    .await;
    let t = c.create_tenant("t").await;
    c.sql("t", &t, "CREATE TABLE seen (n INTEGER)").await.ok();

    // 1.5 million zeros: 3 MB of JSON, about 100 MB as parsed values.
    let zeros = Value::Array(vec![json!(0); 1_500_000]);
    let r = c
        .sql_params("t", &t, "INSERT INTO seen VALUES (1)", zeros)
        .await;
    assert_eq!((r.status, r.code()), (413, "too_large"), "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("gateway memory")),
        "{}",
        r.body
    );
    // The same text as one string costs about its length.
    let text = "0,".repeat(1_500_000);
    let r = c
        .sql_params("t", &t, "SELECT length(?)", json!([text]))
        .await
        .ok();
    assert_eq!(r.scalar(), 3_000_000);

    // A million NULLs: 8 MB as the compute counts rows (under its 32 MiB limit), about 100 MB in
    // the gateway (a 32-byte value and a vector per row).
    let r = c
        .sql(
            "t",
            &t,
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 1000000) \
             SELECT NULL FROM n",
        )
        .await;
    assert_eq!((r.status, r.code()), (413, "too_large"), "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rows returned")),
        "{}",
        r.body
    );
    // Nothing of the refused insert ran, and the tenant goes on.
    let r = c.sql("t", &t, "SELECT count(*) FROM seen").await.ok();
    assert_eq!(r.scalar(), 0);
    let in_flight = c
        .gateway_metric("borealis_gateway_bytes_in_flight")
        .await
        .unwrap_or(-1.0);
    println!("refused at real cost; bytes in flight afterwards: {in_flight}");
}
