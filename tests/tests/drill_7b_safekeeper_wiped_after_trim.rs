//! Drill 7b (docs/design.md §5 "segment repair": rebuilt "from peers **and object storage**"): a
//! safekeeper's disk is replaced under load **after its peers trimmed their logs**.
//!
//! The pageservers checkpoint often (every 1,000 records or 0.5 s) to the object store, and the
//! safekeepers trim their logs behind each checkpoint. So when sk-b1's data directory is deleted,
//! no peer holds the start of the log any more: it is in the checkpoint in object storage. The
//! empty member must learn the epoch from its peers, be refused below their trim point
//! (`LogTrimmed`), adopt that trim point as its own base, and fetch only the log above it. Before
//! this was built it stayed at SCL 0 for ever, and the protection group ran on five members.
//!
//! What must hold: clients see no error; sk-b1 adopts a trim point (metric
//! `safekeeper_trim_points_adopted_total`) at least as high as its peers' base when it was wiped;
//! it catches up to its peers' SCL; read back with it stopped, its segment file holds every
//! record from its base to its SCL, CRC-clean; a restart keeps that; every checker holds.

use borealis_tests::checkers::{
    peers_scl_and_base, tenant_hex, wait_caught_up, DiskReadBack, DrillReport,
};
use borealis_tests::cluster::{ClusterOptions, TestCluster};
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use std::time::{Duration, Instant};

const VICTIM: &str = "sk-b1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_7b_safekeeper_disk_wiped_after_its_peers_trimmed() {
    let c = TestCluster::start_with(ClusterOptions {
        env: vec![
            ("PAGESERVER_CHECKPOINT_RECORDS".into(), "1000".into()),
            ("PAGESERVER_CHECKPOINT_INTERVAL".into(), "500ms".into()),
        ],
        ..ClusterOptions::default()
    })
    .await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, "bank").await;
    let load = LoadConfig {
        duration: Duration::from_secs(12),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 7b: {VICTIM}'s data directory wiped under load after its peers trimmed"
    ));
    report.line(format!(
        "{}; checkpoint every 1,000 records or 0.5 s",
        w.describe(&load)
    ));

    let started = w.now();
    let running = w.spawn(load);
    // Wait until the peers have trimmed well into the log.
    let waited = Instant::now();
    let (scl_at_kill, base_at_kill) = loop {
        let (scl, base) = peers_scl_and_base(&c, VICTIM, &tenant).await;
        if base >= 1_000 || waited.elapsed() > Duration::from_secs(8) {
            break (scl, base);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    w.sleep_until(started + Duration::from_secs(4)).await;
    let fault = w.mark(format!(
        "borealis node kill {VICTIM}; peers' SCL {scl_at_kill}, trimmed through {base_at_kill}"
    ));
    c.node("kill", VICTIM);
    c.wipe_node_data(VICTIM);
    w.sleep_until(fault + Duration::from_secs(1)).await;
    w.mark(format!("borealis node start {VICTIM} (empty disk)"));
    c.node("start", VICTIM);
    let rebuilt = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;
    let adopted = c
        .node_metric(VICTIM, "safekeeper_trim_points_adopted_total")
        .await
        .unwrap_or(0.0) as u64;
    let stats = running.await.expect("load phase");
    let after = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;

    // Read its disk back with it stopped, then restart it and check it kept its state.
    let disk = DiskReadBack::of(&c, VICTIM, &tenant, after.as_ref().ok());
    let restarted = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;

    let (history, checks) = w.check().await;
    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    match &rebuilt {
        Ok(cu) => report.line(format!(
            "rebuilt under load: {cu}; trim points adopted: {adopted}"
        )),
        Err(e) => report.line(format!("not rebuilt under load: {e}")),
    }
    report.outcome("after the load", &after);
    report.line(format!("its disk read back: {disk}"));
    report.outcome("restarted", &restarted);
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert!(
        base_at_kill > 0,
        "the peers never trimmed before the wipe: the drill tests nothing"
    );
    assert_eq!(
        stats.client_errors(),
        (0, 0, 0, 0),
        "one safekeeper's disk replaced must cost clients no error: {stats}"
    );
    let rebuilt = rebuilt.expect("rebuilt under load");
    assert!(
        adopted >= 1,
        "{VICTIM} caught up without adopting a trim point: {rebuilt}"
    );
    assert!(
        rebuilt.base >= base_at_kill,
        "{VICTIM}'s base {} is below its peers' {base_at_kill} at the wipe",
        rebuilt.base
    );
    let after = after.expect("caught up after the load");
    disk.assert_complete(VICTIM);
    let restarted = restarted.expect("caught up after a restart");
    assert!(
        restarted.base >= after.base && restarted.scl_after >= after.scl_after,
        "a restart lost the rebuilt state: {after} then {restarted}"
    );
}
