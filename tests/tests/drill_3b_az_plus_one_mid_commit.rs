//! Drill 3b: the fourth safekeeper is lost while commits are in flight (AZ c already dead).
//!
//! To be sure commits are in flight when it dies, sk-b1 is first frozen (`SIGSTOP`: its
//! connections stay open, it acknowledges nothing, so every commit shipped meanwhile waits for
//! it) for longer than the writer's member acknowledgement timeout (3 s), so the writer must
//! notice a silent member by itself, then killed (`SIGKILL`). Those commits reached three members at most:
//! their outcome cannot be settled until a fourth returns, and the writer is **in limbo**
//! (RFC 0004). sk-b1 is started again after longer than the gateway's commit timeout (10 s).
//!
//! What must hold (docs/design.md §6, "AZ + 1 down"): nothing is acknowledged while only three
//! members are up; **every read succeeds** (served at the VDL, the unsettled commits invisible),
//! and none waits for the commit timeout; every write sent after the loss is refused
//! `read_only`; the commits caught in flight are answered `unavailable` (outcome unknown) and
//! each is either wholly present or wholly absent at the end; the writer keeps its epoch (no
//! recovery: the fourth member's return settles the commits by gossip); once sk-b1 is back,
//! writes resume; and every checker holds.

use borealis_tests::checkers::{
    log_lines, longest_read_stall, reads_between, tenant_hex, unknown_reasons, wait_caught_up,
    write_availability, writes_between, DrillReport,
};
use borealis_tests::cluster::TestCluster;
use borealis_tests::workload::{LoadConfig, Outcome, Workload, WorkloadConfig};
use std::time::Duration;

/// Longer than the gateway's default `--commit-timeout` (10 s), so that the stalled commits are
/// answered before the member returns.
const OUTAGE: Duration = Duration::from_secs(13);
/// How long sk-b1 stays frozen before it is killed: longer than the gateway's member
/// acknowledgement timeout (3 s, `MEMBER_ACK_TIMEOUT`).
const FROZEN: Duration = Duration::from_secs(4);

/// The writer epoch of tenant `bank`, as the gateway reports it.
async fn epoch(c: &TestCluster) -> serde_json::Value {
    let r = c
        .request(
            reqwest::Method::GET,
            "/v1/tenants/bank",
            &c.admin_token,
            None,
        )
        .await
        .ok();
    r.body["epoch"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(unsafe_code)] // libc calls, each with its SAFETY comment
async fn drill_3b_az_plus_one_down_with_commits_in_flight() {
    let c = TestCluster::start().await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, "bank").await;
    let load = LoadConfig {
        duration: Duration::from_secs(26),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(
        "drill 3b: AZ c killed, then sk-b1 frozen mid-commit and killed; restarted after 13 s",
    );
    report.line(w.describe(&load));
    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(2)).await;
    w.mark("borealis node kill sk-c1; borealis node kill sk-c2");
    c.node("kill", "sk-c1");
    c.node("kill", "sk-c2");
    w.sleep_until(started + Duration::from_secs(4)).await;
    let epoch_before = epoch(&c).await;
    let pid = c
        .node_info("sk-b1")
        .pid
        .expect("sk-b1 has a pid in cluster.json");
    let frozen = w.mark(format!(
        "SIGSTOP sk-b1 (pid {pid}): commits now wait for it"
    ));
    // SAFETY: kill(2) has no memory-safety preconditions.
    let stopped = unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    assert_eq!(stopped, 0, "SIGSTOP sk-b1");
    w.sleep_until(frozen + FROZEN).await;
    let lost = w.mark("borealis node kill sk-b1 (3 of 6 left, commits in flight)");
    c.node("kill", "sk-b1");
    w.sleep_until(lost + OUTAGE).await;
    let back = w.mark("borealis node start sk-b1 (4 of 6)");
    c.node("start", "sk-b1");
    let stats = running.await.expect("load phase");
    let end = w.now();
    let catch_up = wait_caught_up(&c, "sk-b1", &tenant, Duration::from_secs(30)).await;

    let (history, checks) = w.check().await;
    // A commit durable just before the freeze may be answered a moment after it.
    let settled = frozen + Duration::from_millis(500);
    let (acked_out, refused_out, _, unknown_out) = writes_between(&history, settled, back);
    let (reads_ok_out, reads_failed_out, read_errors) = reads_between(&history, settled, back);
    let read_stall = longest_read_stall(&history, frozen, back);
    let (acked_after, ..) = writes_between(&history, back, end);
    let (reads_ok_after, ..) = reads_between(&history, back, end);
    let availability = write_availability(&history, frozen, end);

    let gateway_log = c.log_path("gateway");
    let limbo: Vec<String> = log_lines(&gateway_log, "limbo");
    let first_writer_failure = log_lines(&gateway_log, "writer failed")
        .into_iter()
        .next()
        .unwrap_or_else(|| "(none)".into());
    let epoch_after = epoch(&c).await;

    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!(
        "while 3 of 6 were up: writes {acked_out} acknowledged, {refused_out} refused read_only, \
         {unknown_out} unknown; reads {reads_ok_out} ok, {reads_failed_out} failed {read_errors:?}; \
         longest read stall {:.2} s",
        read_stall.as_secs_f64()
    ));
    report.line(format!("writes after the freeze: {availability}"));
    report.line(format!(
        "after sk-b1 returned: {acked_after} writes acknowledged, {reads_ok_after} reads ok"
    ));
    for (why, n) in unknown_reasons(&history) {
        report.line(format!("unknown outcome x{n}: {why}"));
    }
    for line in &limbo {
        report.line(format!("gateway log: {line}"));
    }
    report.line(format!(
        "gateway log, first writer failure: {first_writer_failure}"
    ));
    report.line(format!(
        "writer epoch {epoch_before} before the freeze, {epoch_after} at the end"
    ));
    report.outcome("after the load", &catch_up);
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert_eq!(
        acked_out, 0,
        "a write was acknowledged while only 3 of 6 safekeepers were up"
    );
    assert_eq!(
        reads_failed_out, 0,
        "reads failed while 3 of 6 safekeepers were up: {read_errors:?}"
    );
    assert!(
        read_stall < Duration::from_secs(5),
        "reads stalled {:.1} s with 3 of 6 up: they waited for the unsettled commits",
        read_stall.as_secs_f64()
    );
    // Writes sent once the silent member was noticed (the 3 s acknowledgement timeout; the
    // margin covers the client's own scheduling) must all be refused, none left in doubt.
    let noticed = frozen + Duration::from_millis(3500);
    let late_not_refused: Vec<_> = history
        .writes
        .iter()
        .filter(|w| w.start >= noticed && w.end <= back)
        .filter(|w| w.outcome != Outcome::Refused)
        .map(|w| format!("{:?} at {:.2} s", w.outcome, w.start.as_secs_f64()))
        .collect();
    assert!(
        late_not_refused.is_empty(),
        "writes sent with 3 of 6 up must be refused read_only: {late_not_refused:?}"
    );
    assert!(
        refused_out > 0,
        "no write was refused read_only while 3 of 6 were up"
    );
    assert!(
        unknown_out > 0,
        "the commits caught in flight should have been answered `unavailable` after the commit timeout"
    );
    assert_eq!(
        epoch_before, epoch_after,
        "the writer was replaced: the commits in flight should have settled by gossip when sk-b1 returned"
    );
    assert!(
        acked_after > 0 && reads_ok_after > 0,
        "after sk-b1 returned: {acked_after} writes acknowledged, {reads_ok_after} reads ok"
    );
    catch_up.expect("sk-b1 catching up");
}
