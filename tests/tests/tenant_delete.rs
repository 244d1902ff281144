//! Deleting a tenant reclaims its storage everywhere — the log on the six safekeepers, the
//! pageservers' local state, its checkpoints in object storage (a real S3 server) — even with a
//! safekeeper down and the gateway killed half-way, and touches no other tenant.

use borealis_tests::checkers::tenant_hex;
use borealis_tests::cluster::{ClusterOptions, TestCluster};
use borealis_tests::s3::S3Server;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BUCKET: &str = "borealis";

/// Files under `dir`, recursively (none if it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                files_under(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

/// Waits until `f` holds, at most `within`; panics with `what` and `state()` if it does not.
async fn wait_until(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> bool,
    state: impl Fn() -> String,
) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < within,
            "{what}: not within {within:?}; {}",
            state()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_reclaims_its_storage_everywhere_and_nothing_else() {
    let s3 = S3Server::start(BUCKET);
    let c = TestCluster::start_with(ClusterOptions {
        object_store: Some(s3.url(BUCKET)),
        env: vec![("PAGESERVER_CHECKPOINT_INTERVAL".into(), "300ms".into())],
        ..ClusterOptions::default()
    })
    .await;
    let objects_of = |hex: &str| files_under(&s3.root().join(BUCKET).join("tenants").join(hex));
    let safekeepers = c.node_ids("safekeeper");
    let sk_dir = |sk: &str, hex: &str| c.node_info(sk).data_dir.join("tenants").join(hex);
    let tombstone = |sk: &str, hex: &str| c.node_info(sk).data_dir.join("dropped").join(hex);

    // Two tenants with data, checkpointed to object storage.
    let mut tokens = Vec::new();
    for name in ["gone", "kept"] {
        let token = c.create_tenant(name).await;
        c.sql(
            name,
            &token,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
        )
        .await
        .ok();
        let rows: Vec<_> = (1..=200)
            .map(|i| json!({"sql": "INSERT INTO t VALUES (?, ?)", "params": [i, "x".repeat(200)]}))
            .collect();
        c.batch(name, &token, rows).await.ok();
        tokens.push(token);
    }
    let (gone, kept) = (tenant_hex(&c, "gone").await, tenant_hex(&c, "kept").await);
    for hex in [&gone, &kept] {
        wait_until(
            Duration::from_secs(20),
            "the tenant is checkpointed to object storage (an index names its layers)",
            || {
                objects_of(hex).iter().any(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("index-"))
                })
            },
            || format!("objects of {hex}: none"),
        )
        .await;
    }
    for sk in &safekeepers {
        assert!(sk_dir(sk, &gone).is_dir(), "{sk} holds the tenant's log");
    }
    let kept_objects_before = objects_of(&kept).len();
    println!(
        "before: {} objects of 'gone', {kept_objects_before} of 'kept' in s3; 'gone' on {} safekeepers",
        objects_of(&gone).len(),
        safekeepers.len()
    );

    // One safekeeper is down when the tenant is deleted.
    let down = "sk-c2";
    c.node("kill", down);
    let deleted_at = Instant::now();
    let r = c
        .request(
            reqwest::Method::DELETE,
            "/v1/tenants/gone",
            &c.admin_token,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "delete: {:?}", r.body);
    // Gone for clients at once: its token grants nothing (401, as any wrong token: names are
    // not told to tokens that grant nothing), and the admin finds no such tenant.
    let r = c.sql("gone", &tokens[0], "SELECT count(*) FROM t").await;
    assert_eq!(r.status, 401, "a deleted tenant's token: {:?}", r.body);
    let r = c
        .sql("gone", &c.admin_token, "SELECT count(*) FROM t")
        .await;
    assert_eq!(r.status, 404, "a deleted tenant is not found: {:?}", r.body);

    let live: Vec<&String> = safekeepers.iter().filter(|s| *s != down).collect();
    let took = wait_until(
        Duration::from_secs(30),
        "the objects and the five live safekeepers' logs are gone",
        || {
            objects_of(&gone).is_empty()
                && live
                    .iter()
                    .all(|sk| !sk_dir(sk, &gone).exists() && tombstone(sk, &gone).exists())
        },
        || {
            format!(
                "{} objects left; logs left on {:?}",
                objects_of(&gone).len(),
                live.iter()
                    .filter(|sk| sk_dir(sk, &gone).exists())
                    .collect::<Vec<_>>()
            )
        },
    )
    .await;
    println!(
        "deleted with {down} down: objects and 5 logs gone {:.1} s after the DELETE",
        took.as_secs_f64()
    );
    assert!(
        sk_dir(down, &gone).is_dir(),
        "the down safekeeper still holds its copy"
    );
    assert_eq!(
        c.gateway_metric("borealis_gateway_tenants_reclaiming")
            .await,
        Some(1.0),
        "the reclaim waits for {down}"
    );
    let listed = c
        .request(reqwest::Method::GET, "/v1/tenants", &c.admin_token, None)
        .await
        .ok();
    assert_eq!(
        listed.body["deleting"][0]["name"], "gone",
        "the tenant list shows the pending reclaim: {}",
        listed.body
    );

    // The gateway dies half-way: the reclaim is resumed from its registry after the restart.
    let gateway = c.node_ids("gateway").remove(0);
    c.node("kill", &gateway);
    c.node("start", &gateway);
    c.wait_gateway_up(Duration::from_secs(60)).await;
    c.node("start", down);
    let took = wait_until(
        Duration::from_secs(60),
        "the restarted safekeeper drops its copy",
        || !sk_dir(down, &gone).exists() && tombstone(down, &gone).exists(),
        || format!("{down} still holds tenants/{gone}"),
    )
    .await;
    println!(
        "{down} restarted (gateway restarted too): its copy dropped {:.1} s later",
        took.as_secs_f64()
    );
    let started = Instant::now();
    loop {
        let reclaiming = c
            .gateway_metric("borealis_gateway_tenants_reclaiming")
            .await;
        if reclaiming == Some(0.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reclaim did not finish: reclaiming = {reclaiming:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "reclaimed everywhere {:.1} s after the DELETE",
        deleted_at.elapsed().as_secs_f64()
    );
    // Gossip never brings it back: no safekeeper holds it a few rounds later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for sk in &safekeepers {
        assert!(
            !sk_dir(sk, &gone).exists(),
            "{sk} holds the deleted tenant again"
        );
    }
    assert!(objects_of(&gone).is_empty(), "objects came back");

    // The other tenant is untouched and goes on.
    let r = c
        .sql("kept", &tokens[1], "SELECT count(*) FROM t")
        .await
        .ok();
    assert_eq!(r.scalar(), 200);
    c.sql("kept", &tokens[1], "INSERT INTO t VALUES (201, 'after')")
        .await
        .ok();
    assert!(
        objects_of(&kept).len() >= kept_objects_before.min(1),
        "the kept tenant's checkpoints are still in object storage"
    );
    for sk in &safekeepers {
        assert!(sk_dir(sk, &kept).is_dir(), "{sk} still holds 'kept'");
    }

    // The name is free again, for a new, empty database.
    let token = c.create_tenant("gone").await;
    let fresh = tenant_hex(&c, "gone").await;
    assert_ne!(fresh, gone, "a new tenant gets a new id");
    let r = c.sql("gone", &token, "SELECT count(*) FROM t").await;
    assert_eq!(
        r.code(),
        "sql_error",
        "the new 'gone' has no table t: {:?}",
        r.body
    );
    c.sql("gone", &token, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .ok();
}
