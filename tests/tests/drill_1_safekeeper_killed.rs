//! Drill 1 (docs/design.md §6, "one safekeeper down"): `kill -9` one safekeeper under load. Clients
//! must not see a single error; the member comes back and catches up with its peers by gossip;
//! every checker holds.
//!
//! It runs on both shapes of volume ([`Shape`]): one segment on six safekeepers, and many 1 MiB
//! segments over a pool of nine, where the victim is a member of segment 0's group (every commit
//! touches segment 0) and must catch up on every segment it holds.

use borealis_tests::checkers::{
    tenant_hex, wait_caught_up, write_availability, writes_between, DrillReport,
};
use borealis_tests::shape::{member_in_az, one_cluster_at_a_time, segment_groups, Shape};
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_1_one_safekeeper_killed_under_load_one_segment() {
    let _one = one_cluster_at_a_time().await;
    drill(Shape::OneSegment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_1_one_safekeeper_killed_under_load_many_segments() {
    let _one = one_cluster_at_a_time().await;
    drill(Shape::ManySegments).await;
}

async fn drill(shape: Shape) {
    let c = shape.start().await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    shape.spread_workload(&c, &w).await;
    let tenant = tenant_hex(&c, "bank").await;
    // The second AZ b member of segment 0's group: sk-b2 on six safekeepers.
    let victim = member_in_az(&segment_groups(&c, "bank").await, 0, "b", 1);
    let victim = victim.as_str();
    let load = LoadConfig {
        duration: Duration::from_secs(14),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 1 ({}): one safekeeper ({victim}) killed under load",
        shape.name()
    ));
    report.line(w.describe(&load));

    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(3)).await;
    let fault = w.mark(format!("borealis node kill {victim}"));
    c.node("kill", victim);
    w.sleep_until(fault + Duration::from_secs(5)).await;
    let back = w.mark(format!("borealis node start {victim}"));
    c.node("start", victim);
    // Catch-up while the load goes on: the member must fill the range it missed.
    let during = wait_caught_up(&c, victim, &tenant, Duration::from_secs(30)).await;
    let stats = running.await.expect("load phase");
    let end = w.now();
    // And once the load stopped, it holds exactly what its peers hold.
    let after = wait_caught_up(&c, victim, &tenant, Duration::from_secs(30)).await;

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
        "writes acknowledged while {victim} was down: {acked_while_down}"
    ));
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert!(
        acked_while_down > 0,
        "no write was acknowledged while {victim} was down"
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
        "{victim} missed 5 s of load, yet repaired nothing from peers: {after}"
    );
}
