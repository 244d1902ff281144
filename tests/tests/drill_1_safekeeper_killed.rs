//! Drill 1 (docs/design.md §6, "one safekeeper down"): `kill -9` one safekeeper under load. Clients
//! must not see a single error; the member comes back and catches up with its peers by gossip;
//! every checker holds.

use borealis_tests::checkers::{
    tenant_hex, wait_caught_up, write_availability, writes_between, DrillReport,
};
use borealis_tests::cluster::TestCluster;
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use std::time::Duration;

const VICTIM: &str = "sk-b2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_1_one_safekeeper_killed_under_load() {
    let c = TestCluster::start().await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, "bank").await;
    let load = LoadConfig {
        duration: Duration::from_secs(14),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 1: one safekeeper ({VICTIM}) killed under load"
    ));
    report.line(w.describe(&load));

    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(3)).await;
    let fault = w.mark(format!("borealis node kill {VICTIM}"));
    c.node("kill", VICTIM);
    w.sleep_until(fault + Duration::from_secs(5)).await;
    let back = w.mark(format!("borealis node start {VICTIM}"));
    c.node("start", VICTIM);
    // Catch-up while the load goes on: the member must fill the range it missed.
    let during = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;
    let stats = running.await.expect("load phase");
    let end = w.now();
    // And once the load stopped, it holds exactly what its peers hold.
    let after = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;

    let (history, checks) = w.check().await;
    let availability = write_availability(&history, fault, end);
    let (acked_while_down, ..) = writes_between(&history, fault, back);
    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!("writes after the kill: {availability}"));
    match &during {
        Ok(cu) => report.line(format!("caught up under load after its restart: {cu}")),
        Err(e) => report.line(format!("did not catch up under load: {e}")),
    }
    report.outcome("after the load", &after);
    report.line(format!(
        "writes acknowledged while {VICTIM} was down: {acked_while_down}"
    ));
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert!(
        acked_while_down > 0,
        "no write was acknowledged while {VICTIM} was down"
    );
    assert_eq!(
        stats.client_errors(),
        (0, 0, 0, 0),
        "one safekeeper down must cost clients no error: {stats}"
    );
    assert!(
        stats.writes_acked > 0 && stats.reads_ok > 0,
        "no load ran: {stats}"
    );
    during.expect("catching up under load");
    let after = after.expect("catching up after the load");
    assert!(
        after.records_repaired > 0,
        "{VICTIM} missed 5 s of load, yet repaired nothing from peers: {after}"
    );
}
