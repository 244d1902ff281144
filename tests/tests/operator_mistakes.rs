//! Operator mistakes get a clear error and harm nothing: a second process started on a data
//! directory that a live node holds refuses to start, names the holder, and the live node (and
//! the cluster) go on as if nothing happened.

use borealis_tests::cluster::TestCluster;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `command` to completion (at most `within`), returning its exit status and stderr.
fn run_to_exit(command: &[String], within: Duration) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        // What an operator would see (no backtraces from a test environment).
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the second process") {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("piped stderr")
                .read_to_string(&mut err)
                .expect("reading stderr");
            return (status, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{command:?} was still running {within:?} after it started on a data directory \
                 in use"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_a_live_nodes_data_directory_refuses_to_start() {
    let c = TestCluster::start().await;
    let token = c.create_tenant("acme").await;
    c.sql("acme", &token, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .ok();
    c.sql("acme", &token, "INSERT INTO t VALUES (1)").await.ok();

    let scl_before = sk_scl(&c).await;
    assert!(scl_before > 0, "sk-a1 holds the tenant's log");
    let gateway = c.node_ids("gateway");
    let ids = ["sk-a1", "ps-1"]
        .into_iter()
        .map(str::to_string)
        .chain(gateway)
        .collect::<Vec<_>>();
    assert_eq!(ids.len(), 3, "one safekeeper, one pageserver, the gateway");
    for id in &ids {
        let node = c.node_info(id);
        let pid = node.pid.unwrap_or_else(|| panic!("{id} is running"));
        let command = c.node_command(id);
        let (status, stderr) = run_to_exit(&command, Duration::from_secs(30));
        assert!(
            !status.success(),
            "a second {id} on {} exited with success: {stderr}",
            node.data_dir.display()
        );
        assert!(
            stderr.contains("is in use by another process")
                && stderr.contains(&format!("(pid {pid})")),
            "a second {id} must name the data directory's holder (pid {pid}): {stderr}"
        );
        println!("second {id}: {}", stderr.trim());
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the live {id} (pid {pid}) is still running"
        );
    }

    // Nothing was harmed: the live nodes still commit and read.
    c.sql("acme", &token, "INSERT INTO t VALUES (2)").await.ok();
    let r = c.sql("acme", &token, "SELECT count(*) FROM t").await.ok();
    assert_eq!(r.scalar(), 2);
    // sk-a1 still appends: its consistent point moved past where it was before the mistake.
    let scl_after = sk_scl(&c).await;
    assert!(
        scl_after > scl_before,
        "sk-a1's SCL did not move after the mistake: {scl_before} -> {scl_after}"
    );
}

/// sk-a1's highest SCL over its tenants' segments.
async fn sk_scl(c: &TestCluster) -> u64 {
    let status = c.node_status("sk-a1").await.expect("sk-a1 answers /status");
    status["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["segments"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["scl"].as_u64())
        .max()
        .unwrap_or(0)
}
