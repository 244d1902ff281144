//! More active tenants than compute instance slots: when every slot is taken, idle computes
//! give their instances back (their tenants keep their writers), so a new tenant's request
//! waits a moment instead of failing.

use borealis_tests::cluster::{ClusterOptions, TestCluster};
use serde_json::json;

const MAX_COMPUTES: usize = 4;
const TENANTS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_active_tenants_than_compute_slots_all_get_answers() {
    let c = TestCluster::start_with(ClusterOptions {
        env: vec![("BOREALIS_MAX_COMPUTES".into(), MAX_COMPUTES.to_string())],
        ..ClusterOptions::default()
    })
    .await;
    let mut tokens = Vec::new();
    for i in 0..TENANTS {
        tokens.push(c.create_tenant(&format!("t{i}")).await);
    }
    // Three rounds over every tenant: each round needs more instances than there are slots.
    for round in 0..3i64 {
        for (i, token) in tokens.iter().enumerate() {
            let name = format!("t{i}");
            if round == 0 {
                c.sql(&name, token, "CREATE TABLE t (round INTEGER)")
                    .await
                    .ok();
            }
            c.sql_params(&name, token, "INSERT INTO t VALUES (?)", json!([round]))
                .await
                .ok();
            // Every statement above answered (`ok()` asserts it).
        }
    }
    for (i, token) in tokens.iter().enumerate() {
        let r = c
            .sql(&format!("t{i}"), token, "SELECT count(*) FROM t")
            .await
            .ok();
        assert_eq!(r.scalar(), 3, "tenant t{i} has its three rows");
    }
    let given_back = c
        .gateway_metric("borealis_gateway_computes_given_back_total")
        .await
        .unwrap_or(0.0);
    println!(
        "{TENANTS} tenants over {MAX_COMPUTES} compute slots: every request answered, \
         {given_back} idle instances given back"
    );
    assert!(
        given_back >= (TENANTS - MAX_COMPUTES) as f64,
        "instances were given back to make room: {given_back}"
    );
}
