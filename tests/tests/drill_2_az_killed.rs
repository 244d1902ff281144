//! Drill 2 (docs/design.md §6, "one AZ down"): `kill -9` both safekeepers of AZ c under load. With
//! exactly a write quorum (4 of 6) left, writes and reads go on without a single error; the two
//! come back and catch up by gossip; every checker holds.
//!
//! It runs on both shapes of volume ([`Shape`]): one segment on six safekeepers, and many 1 MiB
//! segments over a pool of nine, where AZ c is three safekeepers and every group loses two.

use borealis_tests::checkers::{
    tenant_hex, wait_caught_up, write_availability, writes_between, DrillReport,
};
use borealis_tests::shape::{az_of, one_cluster_at_a_time, segment_groups, Shape};
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_2_one_az_killed_under_load_one_segment() {
    let _one = one_cluster_at_a_time().await;
    drill(Shape::OneSegment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_2_one_az_killed_under_load_many_segments() {
    let _one = one_cluster_at_a_time().await;
    drill(Shape::ManySegments).await;
}

async fn drill(shape: Shape) {
    let c = shape.start().await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    shape.spread_workload(&c, &w).await;
    let tenant = tenant_hex(&c, "bank").await;
    let az_c: Vec<String> = c
        .node_ids("safekeeper")
        .into_iter()
        .filter(|id| az_of(id) == "c")
        .collect();
    let names = az_c.join(", ");
    // The members of AZ c that some group holding data counts on: each must catch up.
    let groups = segment_groups(&c, "bank").await;
    let members: Vec<&String> = az_c
        .iter()
        .filter(|id| groups.values().any(|g| g.contains(id)))
        .collect();
    let load = LoadConfig {
        duration: Duration::from_secs(14),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 2 ({}): one AZ ({names}) killed under load",
        shape.name()
    ));
    report.line(w.describe(&load));

    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(3)).await;
    let fault = w.mark(format!("borealis node kill {names}"));
    for id in &az_c {
        c.node("kill", id);
    }
    w.sleep_until(fault + Duration::from_secs(6)).await;
    let back = w.mark(format!("borealis node start {names}"));
    for id in &az_c {
        c.node("start", id);
    }
    let stats = running.await.expect("load phase");
    let end = w.now();
    let mut catch_up = Vec::new();
    for id in members {
        catch_up.push(wait_caught_up(&c, id, &tenant, Duration::from_secs(30)).await);
    }

    let (history, checks) = w.check().await;
    let availability = write_availability(&history, fault, end);
    let (acked_while_down, ..) = writes_between(&history, fault, back);
    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!("writes after the AZ died: {availability}"));
    for cu in &catch_up {
        match cu {
            Ok(cu) => report.line(format!("caught up after the load: {cu}")),
            Err(e) => report.line(format!("did not catch up: {e}")),
        }
    }
    report.line(format!(
        "writes acknowledged while AZ c was down: {acked_while_down}"
    ));
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert!(
        acked_while_down > 0,
        "no write was acknowledged while AZ c was down"
    );
    assert_eq!(
        stats.client_errors(),
        (0, 0, 0, 0),
        "one AZ down must cost clients no error: {stats}"
    );
    assert!(
        stats.writes_acked > 0 && stats.reads_ok > 0,
        "no load ran: {stats}"
    );
    for cu in catch_up {
        let cu = cu.expect("an AZ c member catching up");
        assert!(
            cu.records_repaired > 0,
            "{} missed 6 s of load, yet repaired nothing from peers: {cu}",
            cu.node
        );
    }
}
