//! Hygiene at the trust boundaries (docs/security.md), against real processes:
//!
//! - everything `borealis up` and the nodes write is owner-only: the cluster directory,
//!   `cluster.json` (which holds the admin token), the admin token file, every node's data
//!   directory, the logs and the object store, down to the last file, also after a restart
//!   over a directory an older `borealis` left readable by others;
//! - object-store credentials given in `--object-store` reach the pageservers (checkpoints are
//!   written, also by a pageserver started again with `borealis node start`) but no command
//!   line, no printed line, no log and not `cluster.json`.

use borealis_tests::checkers::tenant_hex;
use borealis_tests::cluster::{checkpointed_lsn, ClusterOptions, TestCluster};
use borealis_tests::s3::{S3Server, SECRET_KEY};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every file and directory under `root` (and `root` itself) with a permission bit for group or
/// others, with its mode.
fn readable_by_others(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Removed while we walked (a temp file renamed into place).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let mode = meta.permissions().mode() & 0o777;
        if !meta.file_type().is_symlink() && mode & 0o077 != 0 {
            out.push((path.clone(), mode));
        }
        if meta.is_dir() {
            // (Gone since: a tenant's directory removed by a trim or a restart.)
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            stack.extend(entries.map_while(Result::ok).map(|e| e.path()));
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// How many files are under `root` (0 if it does not exist).
fn files_under(root: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    entries
        .map_while(Result::ok)
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_borealis_up_writes_is_owner_only() {
    let mut c = TestCluster::start_with(ClusterOptions {
        env: vec![
            ("PAGESERVER_CHECKPOINT_INTERVAL".into(), "300ms".into()),
            ("PAGESERVER_CHECKPOINT_RECORDS".into(), "10".into()),
        ],
        ..ClusterOptions::default()
    })
    .await;
    let token = c.create_tenant("acme").await;
    c.sql("acme", &token, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .ok();
    for i in 0..20 {
        c.sql_params("acme", &token, "INSERT INTO t VALUES (?)", json!([i]))
            .await
            .ok();
    }
    // A checkpoint in the embedded object store, so that it holds files too.
    let objects = c.data_dir().join("objects");
    let deadline = Instant::now() + Duration::from_secs(30);
    while files_under(&objects.join("tenants")) == 0 {
        assert!(Instant::now() < deadline, "no checkpoint within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let dir = c.data_dir().to_path_buf();
    assert_eq!(mode(&dir), 0o700, "the cluster directory");
    assert_eq!(mode(&dir.join("cluster.json")), 0o600, "cluster.json");
    assert_eq!(
        mode(&dir.join("admin_token")),
        0o600,
        "the admin token file"
    );
    for node in c.nodes() {
        assert_eq!(mode(&node.data_dir), 0o700, "{}'s data directory", node.id);
    }
    assert_eq!(mode(&dir.join("logs")), 0o700, "the logs");
    assert_eq!(mode(&objects), 0o700, "the object store");
    let open = readable_by_others(&dir);
    assert!(
        open.is_empty(),
        "readable by other users: {:#?}",
        open.iter()
            .map(|(p, m)| format!("{:o} {}", m, p.display()))
            .collect::<Vec<_>>()
    );

    // A cluster directory an older borealis left open: `up` closes it again, and every file it
    // rewrites is owner-only again.
    c.down();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.join("cluster.json"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    c.up().await;
    assert_eq!(mode(&dir), 0o700, "the cluster directory after a restart");
    assert_eq!(
        mode(&dir.join("cluster.json")),
        0o600,
        "cluster.json after a restart"
    );
    let r = c.sql("acme", &token, "SELECT count(*) FROM t").await.ok();
    assert_eq!(r.scalar(), 20);
}

const BUCKET: &str = "borealis";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_store_credentials_reach_the_pageservers_and_nothing_else() {
    let s3 = S3Server::start(BUCKET);
    let url = s3.url(BUCKET);
    assert!(
        url.contains(SECRET_KEY),
        "the test gives the secret in the URL"
    );
    let c = TestCluster::start_with(ClusterOptions {
        object_store: Some(url),
        // The compute stops soon, so that its next start reads pages from the pageserver.
        idle_timeout: "2s".into(),
        env: vec![
            ("PAGESERVER_CHECKPOINT_INTERVAL".into(), "300ms".into()),
            ("PAGESERVER_CHECKPOINT_RECORDS".into(), "10".into()),
        ],
        segment_size: None,
        pool: None,
    })
    .await;
    let token = c.create_tenant("acme").await;
    c.sql("acme", &token, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .ok();
    let tenant = tenant_hex(&c, "acme").await;
    let ps = c.serving_pageserver("acme").await;

    // Inserts rows until the serving pageserver has checkpointed them to S3: it holds the
    // credentials.
    let checkpointed = |from: i64| {
        let (c, token, ps, tenant) = (&c, &token, &ps, &tenant);
        async move {
            let mut lsn = 0;
            for i in from..from + 20 {
                let r = c
                    .sql_params("acme", token, "INSERT INTO t VALUES (?)", json!([i]))
                    .await
                    .ok();
                lsn = r.body["lsn"].as_u64().expect("an lsn");
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let seg = c.pageserver_segment(ps, tenant).await;
                if checkpointed_lsn(&seg) >= lsn {
                    return seg;
                }
                assert!(
                    Instant::now() < deadline,
                    "{ps} did not checkpoint LSN {lsn} to S3 within 30 s: {seg:#}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    checkpointed(0).await;

    // Started again by `borealis node start` (whose environment has no credentials): it gets
    // them from the cluster's owner-only credentials file. It starts with an empty disk, so the
    // compute's next cold start makes it attach the segment from its checkpoint in S3.
    c.node("kill", &ps);
    c.node("start", &ps);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.tenant_status("acme").await["compute"] != "idle" {
        assert!(Instant::now() < deadline, "the compute never went idle");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = c.sql("acme", &token, "SELECT count(*) FROM t").await;
        if r.status == 200 {
            assert_eq!(r.scalar(), 20, "the rows, read through the restarted {ps}");
            break;
        }
        assert!(
            r.code() == "unavailable" && Instant::now() < deadline,
            "reading after {ps} restarted: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let seg = checkpointed(100).await;
    assert_eq!(
        seg["checkpoint"]["object_store_failures"].as_u64(),
        Some(0),
        "{seg:#}"
    );

    let dir = c.data_dir();
    let kept = dir.join("object_store_credentials.json");
    assert_eq!(mode(&kept), 0o600, "the credentials file");
    assert!(std::fs::read_to_string(&kept).unwrap().contains(SECRET_KEY));

    let mut leaks = Vec::new();
    for line in c.up_output() {
        if line.contains(SECRET_KEY) {
            leaks.push(format!("printed by borealis up: {line}"));
        }
    }
    assert!(
        c.up_output().iter().any(|l| l.contains("object store:")),
        "borealis up names the object store"
    );
    let cluster_json = std::fs::read_to_string(dir.join("cluster.json")).unwrap();
    if cluster_json.contains(SECRET_KEY) {
        leaks.push("cluster.json".into());
    }
    for node in c.nodes() {
        let log = std::fs::read_to_string(c.log_path(&node.id)).unwrap_or_default();
        if log.contains(SECRET_KEY) {
            leaks.push(format!("{}'s log", node.id));
        }
        if let Some(pid) = node.pid {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(SECRET_KEY) {
                leaks.push(format!("{}'s command line", node.id));
            }
        }
        if node.role == "pageserver" {
            let status = c.node_http(&node.id, "/status").await.unwrap_or_default();
            if status.contains(SECRET_KEY) {
                leaks.push(format!("{}'s /status", node.id));
            }
        }
    }
    assert!(leaks.is_empty(), "the secret leaked into: {leaks:#?}");
}
