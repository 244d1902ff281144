//! Drill 3 (docs/design.md §6, "AZ + 1 down"): with AZ c already dead, a third safekeeper dies
//! between two bursts of load, while the tenant's writer compute is running. Reads go on, served
//! by that writer; every write is refused with `read_only` (never an unknown outcome) and none of
//! them appears; a member of the dead AZ comes back, catches up, and writes resume.
//!
//! The third member dies while no commit is in flight (the first burst has ended, so every
//! commit was answered), and the second burst starts once the writer has seen its connection
//! close. What happens when it dies in the middle of a commit is drill 3b.
//!
//! It runs on both shapes of volume ([`Shape`]): one segment on six safekeepers, and many 1 MiB
//! segments over a pool of nine. There AZ c is three safekeepers, the fourth member lost is one
//! of segment 0's group (every commit touches segment 0, so every write is refused), and the
//! members of AZ c started again are those that give every group holding data its write quorum
//! back.

use borealis_tests::checkers::{
    reads_between, tenant_hex, wait_caught_up, write_availability, writes_between, DrillReport,
};
use borealis_tests::shape::{
    az_of, member_in_az, one_cluster_at_a_time, restore_write_quorum, segment_groups, Shape,
};
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use std::time::Duration;

/// How long the writer is given to notice a dead member's connection closing.
const WRITER_NOTICES: Duration = Duration::from_secs(1);
/// How long a refusal may take, at most: it is decided before anything is shipped.
const REFUSAL_LATENCY_MAX: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_3_az_plus_one_down_reads_go_on_writes_refused_one_segment() {
    let _one = one_cluster_at_a_time().await;
    drill(Shape::OneSegment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_3_az_plus_one_down_reads_go_on_writes_refused_many_segments() {
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
    let groups = segment_groups(&c, "bank").await;
    // The first AZ b member of segment 0's group: sk-b1 on six safekeepers.
    let plus_one = member_in_az(&groups, 0, "b", 0);
    let mut down = az_c.clone();
    down.push(plus_one.clone());
    // sk-c1 on six safekeepers.
    let restarted = restore_write_quorum(&groups, &down, &az_c);
    let mut report = DrillReport::new(&format!(
        "drill 3 ({}): AZ c ({}) + {plus_one} killed (4th member lost between bursts), then {} \
         restarted",
        shape.name(),
        az_c.join(", "),
        restarted.join(", ")
    ));

    // Burst 1: AZ c dies under load; writes go on with exactly four members. Burst 2 runs
    // against three.
    let burst1 = LoadConfig {
        duration: Duration::from_secs(6),
        ..LoadConfig::default()
    };
    let burst2 = LoadConfig {
        duration: Duration::from_secs(10),
        ..LoadConfig::default()
    };
    report.line(format!(
        "load: {} writers, {} readers; burst 1 {} s, burst 2 {} s; seed {:#x}",
        burst1.writers,
        burst1.readers,
        burst1.duration.as_secs(),
        burst2.duration.as_secs(),
        w.config.seed
    ));
    let started = w.now();
    let running = w.spawn(burst1);
    w.sleep_until(started + Duration::from_secs(2)).await;
    let az_down = w.mark(format!("borealis node kill {}", az_c.join(", ")));
    for id in &az_c {
        c.node("kill", id);
    }
    let stats1 = running.await.expect("burst 1");

    // The fourth member dies between the bursts.
    let quorum_lost = w.mark(format!(
        "borealis node kill {plus_one} (3 of 6 left in segment 0's group)"
    ));
    c.node("kill", &plus_one);
    // Let the writer see the connection close, so that the next commit is refused rather than
    // shipped to a member that is already dead (that race is drill 3b's subject).
    tokio::time::sleep(WRITER_NOTICES).await;
    let running = w.spawn(burst2);
    w.sleep_until(quorum_lost + Duration::from_secs(5)).await;
    let repaired = w.mark(format!(
        "borealis node start {} (4 of 6 in every group)",
        restarted.join(", ")
    ));
    for id in &restarted {
        c.node("start", id);
    }
    let stats2 = running.await.expect("burst 2");
    let end = w.now();
    let mut catch_up = Vec::new();
    for id in &restarted {
        catch_up.push(wait_caught_up(&c, id, &tenant, Duration::from_secs(30)).await);
    }

    let (history, checks) = w.check().await;
    let (acked_az, refused_az, rejected_az, unknown_az) =
        writes_between(&history, az_down, quorum_lost);
    let (acked_lost, refused_lost, rejected_lost, unknown_lost) =
        writes_between(&history, quorum_lost, repaired);
    let (reads_ok_lost, reads_failed_lost, read_errors) =
        reads_between(&history, quorum_lost, repaired);
    let (acked_after, ..) = writes_between(&history, repaired, end);
    let slowest_refusal = history
        .writes
        .iter()
        .filter(|x| x.end >= quorum_lost && x.end <= repaired)
        .map(|x| x.end - x.start)
        .max()
        .unwrap_or_default();
    let availability = write_availability(&history, quorum_lost, end);

    report.timeline(&history);
    report.line(format!("burst 1: {stats1}"));
    report.line(format!("burst 2: {stats2}"));
    report.line(format!(
        "AZ c down: writes {acked_az} acknowledged, {refused_az} refused, {unknown_az} unknown"
    ));
    report.line(format!(
        "AZ c + {plus_one} down: writes {acked_lost} acknowledged, {refused_lost} refused read_only \
         (slowest answer {:.3} s), {unknown_lost} unknown; reads {reads_ok_lost} ok, \
         {reads_failed_lost} failed {read_errors:?}",
        slowest_refusal.as_secs_f64()
    ));
    report.line(format!("writes after the quorum was lost: {availability}"));
    report.line(format!(
        "writes acknowledged after {} returned: {acked_after}",
        restarted.join(", ")
    ));
    for cu in &catch_up {
        report.outcome("after the load", cu);
    }
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert!(
        acked_az > 0 && refused_az + rejected_az + unknown_az == 0,
        "with one AZ down every write must succeed: {acked_az} ok, {refused_az} refused, {unknown_az} unknown"
    );
    assert!(
        refused_lost > 0,
        "no write was even tried while 3 of 6 were up"
    );
    assert_eq!(
        (acked_lost, rejected_lost, unknown_lost),
        (0, 0, 0),
        "with 3 of 6 up every write must be refused with read_only"
    );
    assert!(
        slowest_refusal < REFUSAL_LATENCY_MAX,
        "a read_only refusal took {slowest_refusal:?}"
    );
    assert!(
        reads_ok_lost > 0 && reads_failed_lost == 0,
        "reads must go on with 3 of 6 up: {reads_ok_lost} ok, {reads_failed_lost} failed {read_errors:?}"
    );
    assert!(
        acked_after > 0,
        "writes did not resume after {} came back ({availability})",
        restarted.join(", ")
    );
    for cu in catch_up {
        cu.expect("an AZ c member catching up");
    }
}
