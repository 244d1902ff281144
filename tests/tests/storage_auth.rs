//! The storage protocol's trust boundary (docs/security.md), tried from outside against a live
//! cluster: every storage message, sent to a safekeeper and a pageserver without credentials,
//! with a token signed by another cluster's key, and with a real gateway token of *another*
//! tenant, is refused; nothing changes on disk (the safekeeper's, the pageserver's, the object
//! store's); the tenant's data is intact afterwards, through a fresh recovery. A `Hello` with
//! epoch `u64::MAX` sent with the tenant's own valid credentials (it once bricked a tenant:
//! recovery overflowed) harms nothing either, nor does a `Fence` of that epoch. Admin `/status` pages list tenant ids only to the
//! operator.

use borealis_auth::{Role, SigningKey};
use borealis_core::{EpochStart, ErrorKind, Lsn, PageNo, SegmentId, TenantId};
use borealis_tests::cluster::TestCluster;
use borealis_wire::{Body, Client, WireError};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// Every request a storage node serves, for `tenant`.
fn every_request(tenant: TenantId) -> Vec<Body> {
    vec![
        Body::Hello {
            tenant,
            epoch: 1_000,
            epoch_start_lsn: Lsn(0),
            history: vec![EpochStart {
                epoch: 1_000,
                start: Lsn(0),
            }],
        },
        Body::Append {
            tenant,
            segment: SegmentId(0),
            epoch: 1_000,
            vdl: Lsn(0),
            records: vec![],
        },
        Body::GetState { tenant },
        Body::Fence {
            tenant,
            epoch: 1_000,
        },
        Body::ReadLog {
            tenant,
            segment: SegmentId(0),
            epoch: None,
            min_epoch: 0,
            after: Lsn(0),
            upto: Lsn(u64::MAX),
            max_bytes: 1 << 20,
            wait_ms: 0,
        },
        Body::GossipSummary,
        Body::GetPage {
            tenant,
            page: PageNo(0),
            lsn: Lsn(1),
            epoch: 1,
        },
        Body::GetPages {
            tenant,
            lsn: Lsn(1),
            epoch: 1,
            pages: vec![PageNo(0), PageNo(1)],
        },
        Body::Trim {
            tenant,
            segment: SegmentId(0),
            epoch: 1,
            upto: Lsn(u64::MAX),
        },
        Body::DropTenant { tenant },
    ]
}

/// Every file under `dir` (but the lock) with its contents: what "nothing changed" compares.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "LOCK") {
                let bytes = std::fs::read(&path).expect("read a data file");
                out.insert(path.display().to_string(), bytes);
            }
        }
    }
    out
}

async fn tenant_id(c: &TestCluster, name: &str) -> TenantId {
    let v = c.tenant_status(name).await;
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("tenant {name} has no id: {v}"))
        .parse::<TenantId>()
        .expect("hex tenant id")
}

/// A node's `/status` as anyone may read it: no token.
async fn anonymous_status(c: &TestCluster, node: &str) -> serde_json::Value {
    let http = c.node_info(node).http_addr.expect("an admin http address");
    reqwest::get(format!("http://{http}/status"))
        .await
        .expect("GET /status")
        .json()
        .await
        .expect("JSON")
}

fn is_unauthorized<T>(r: &Result<T, WireError>) -> bool {
    matches!(
        r,
        Err(WireError::Remote {
            kind: ErrorKind::Unauthorized,
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_messages_without_the_right_credentials_are_refused_and_change_nothing() {
    let c = TestCluster::start().await;
    let token_a = c.create_tenant("alpha").await;
    let token_b = c.create_tenant("beta").await;
    c.sql(
        "alpha",
        &token_a,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)",
    )
    .await
    .ok();
    c.sql(
        "alpha",
        &token_a,
        "INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three')",
    )
    .await
    .ok();
    c.sql("beta", &token_b, "CREATE TABLE u (x)").await.ok();
    let (alpha, beta) = (tenant_id(&c, "alpha").await, tenant_id(&c, "beta").await);

    // The operator sees tenant ids on /status; nobody else does.
    let anonymous = anonymous_status(&c, "sk-a1").await;
    assert_eq!(anonymous["tenants"], serde_json::json!([]), "{anonymous}");
    assert_eq!(anonymous["tenant_count"], 2, "{anonymous}");
    let operator = c.node_status("sk-a1").await.expect("sk-a1 /status");
    assert_eq!(
        operator["tenants"].as_array().map(Vec::len),
        Some(2),
        "{operator}"
    );
    let anonymous = anonymous_status(&c, "ps-1").await;
    assert_eq!(anonymous["tenants"], serde_json::json!([]), "{anonymous}");

    // Nothing legitimate writes while the attack runs: what changes on disk is the attack's.
    c.node("stop", "gateway");
    let sk = c.node_info("sk-a1");
    let ps = c.node_info("ps-1");
    let before = snapshot(&sk.data_dir);
    // The pageserver's local files and the object store (checkpoints, generations, indexes).
    let objects = c.data_dir().join("objects");
    let (ps_before, objects_before) = (snapshot(&ps.data_dir), snapshot(&objects));
    assert!(
        before.keys().any(|k| k.contains(&alpha.to_string())),
        "sk-a1 holds alpha's log: {:?}",
        before.keys()
    );

    let keys = c.storage_keys();
    let beta_gateway = keys
        .signing_key()
        .issue_for(Role::Gateway, Some(beta), "gateway", 600);
    let forged =
        SigningKey::generate().issue_for(borealis_auth::Roles::of(&Role::ALL), None, "forger", 0);
    let mut refused = 0;
    for node in [&sk, &ps] {
        for request in every_request(alpha) {
            let name = request.name();
            // 1. No credentials: the first frame is the request itself.
            let bare = Client::connect_unauthenticated(&node.addr, T, None)
                .await
                .expect("connect");
            let r = bare.call(request.clone(), T).await;
            assert!(
                is_unauthorized(&r),
                "{name} without credentials to {}: {r:?}",
                node.id
            );
            let after = bare.call(request.clone(), T).await;
            assert!(
                matches!(after, Err(WireError::Closed)),
                "{} keeps serving a connection that failed to authenticate: {after:?}",
                node.id
            );
            // 2. Another cluster's key, claiming every role.
            let r = Client::connect(&node.addr, &forged, T, None).await;
            assert!(
                is_unauthorized(&r),
                "a forged token was accepted by {}: {:?}",
                node.id,
                r.as_ref().err()
            );
            // 3. A real gateway token, for the other tenant.
            let other = Client::connect(&node.addr, &beta_gateway, T, None)
                .await
                .expect("beta's token is valid");
            let r = other.call(request, T).await;
            assert!(
                is_unauthorized(&r),
                "{name} for alpha with beta's token to {}: {r:?}",
                node.id
            );
            refused += 3;
        }
    }
    // The anonymous `GossipSummary` above would have listed every tenant id.
    assert_eq!(refused, 2 * 10 * 3);

    // The frame that once bricked a tenant, with alpha's own valid gateway credentials.
    let alpha_gateway = keys
        .signing_key()
        .issue_for(Role::Gateway, Some(alpha), "gateway", 600);
    let writer = Client::connect(&sk.addr, &alpha_gateway, T, None)
        .await
        .expect("alpha's token is valid");
    let r = writer
        .call(
            Body::Hello {
                tenant: alpha,
                epoch: u64::MAX,
                epoch_start_lsn: Lsn(0),
                history: vec![EpochStart {
                    epoch: u64::MAX,
                    start: Lsn(0),
                }],
            },
            T,
        )
        .await;
    assert!(
        matches!(
            r,
            Err(WireError::Remote {
                kind: ErrorKind::Invalid,
                ..
            })
        ),
        "a Hello with epoch u64::MAX: {r:?}"
    );
    // Nor does a recovery's promise of an epoch no writer could ever follow.
    let r = writer
        .call(
            Body::Fence {
                tenant: alpha,
                epoch: u64::MAX,
            },
            T,
        )
        .await;
    assert!(
        matches!(
            r,
            Err(WireError::Remote {
                kind: ErrorKind::Invalid,
                ..
            })
        ),
        "a Fence with epoch u64::MAX: {r:?}"
    );
    drop(writer);

    assert!(
        snapshot(&sk.data_dir) == before,
        "sk-a1's data directory changed under refused requests"
    );
    assert!(
        snapshot(&ps.data_dir) == ps_before,
        "ps-1's data directory changed under refused requests"
    );
    assert!(
        snapshot(&objects) == objects_before,
        "the object store changed under refused requests"
    );
    let refusals = c
        .node_metric("sk-a1", "safekeeper_auth_refused_total")
        .await
        .expect("sk-a1 metrics");
    assert!(refusals >= 24.0, "sk-a1 counted {refusals} refusals");

    // A new gateway recovers alpha at a new epoch (the Hello above left none behind to
    // overflow) and reads its pages from the pageserver (which dropped nothing).
    c.node("start", "gateway");
    c.wait_gateway_up(Duration::from_secs(30)).await;
    let rows = c
        .sql("alpha", &token_a, "SELECT v FROM t ORDER BY id")
        .await
        .ok()
        .rows();
    assert_eq!(rows.len(), 3, "{rows:?}");
    c.sql("alpha", &token_a, "INSERT INTO t VALUES (4, 'four')")
        .await
        .ok();
    let n = c
        .sql("alpha", &token_a, "SELECT count(*) FROM t")
        .await
        .ok()
        .scalar();
    assert_eq!(n, 4);
    let status = c.tenant_status("alpha").await;
    let epoch = status["epoch"].as_u64().expect("epoch");
    assert!(epoch < 1_000, "alpha's epoch is {epoch}: {status}");
}
