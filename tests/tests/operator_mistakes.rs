//! Operator mistakes get a clear error and harm nothing: a second process started on a data
//! directory that a live node holds refuses to start, names the holder, and the live node (and
//! the cluster) go on as if nothing happened. And accidents heal without an operator: a node
//! that dies is started again by `borealis up`, unless someone holds it down.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_is_started_again_unless_held_down() {
    let c = TestCluster::start().await;
    let token = c.create_tenant("acme").await;
    c.sql("acme", &token, "CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .await
        .ok();
    let status = c.borealis(&["status"]).expect("borealis status");
    assert!(status.contains("supervised by `borealis up`"), "{status}");

    // A crash: killed without --hold, it comes back by itself, under a new pid.
    for id in ["sk-b1", "ps-1"] {
        let pid = c.node_info(id).pid.expect("running");
        let out = c
            .borealis(&["node", "kill", id])
            .expect("borealis node kill");
        assert!(out.contains("will start it again"), "{out}");
        let back = wait_for(Duration::from_secs(20), || {
            c.node_info(id)
                .pid
                .filter(|&p| p != pid && std::path::Path::new(&format!("/proc/{p}")).exists())
        })
        .await
        .unwrap_or_else(|| panic!("{id} was not started again within 20 s"));
        println!("{id}: pid {pid} killed, started again as pid {back}");
        let status = c.borealis(&["status"]).expect("borealis status");
        let line = status
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no {id} in {status}"));
        assert!(line.contains("restarted 1× by `borealis up`"), "{line}");
    }
    // The restarted nodes serve: commits go on, and read back.
    for i in 1..=3 {
        c.sql("acme", &token, &format!("INSERT INTO t VALUES ({i})"))
            .await
            .ok();
    }
    let r = c.sql("acme", &token, "SELECT count(*) FROM t").await.ok();
    assert_eq!(r.scalar(), 3);

    // Held down (a drill, or `node stop`): it stays down well past the restart delays.
    c.node("kill", "sk-b1");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        c.node_info("sk-b1").pid,
        None,
        "a held node was started again"
    );
    let status = c.borealis(&["status"]).expect("borealis status");
    let line = status.lines().find(|l| l.starts_with("sk-b1")).unwrap();
    assert!(line.contains("down (held"), "{line}");
    // `node start` releases it; a later crash is healed again.
    c.node("start", "sk-b1");
    let pid = c.node_info("sk-b1").pid.expect("started");
    c.borealis(&["node", "kill", "sk-b1"]).expect("kill");
    wait_for(Duration::from_secs(20), || {
        c.node_info("sk-b1").pid.filter(|&p| p != pid)
    })
    .await
    .expect("sk-b1 started again after its hold was released");
    c.sql("acme", &token, "INSERT INTO t VALUES (4)").await.ok();
}

/// Polls `f` every 100 ms until it gives a value, for at most `within`.
async fn wait_for<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
