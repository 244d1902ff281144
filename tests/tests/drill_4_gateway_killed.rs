//! Drill 4 (docs/design.md §6, "writer compute / gateway killed at any instant"): `kill -9` the
//! gateway, and the tenant's writer compute inside it, under load; start it again. Requests in
//! flight get no answer (outcome unknown). After recovery (a new writer epoch) every checker
//! holds: each acknowledged commit is present, each unknown one is wholly present or wholly
//! absent, no read goes backwards across the crash, and the money adds up.
//!
//! It runs on both shapes of volume ([`Shape`]): one segment on six safekeepers, and many 1 MiB
//! segments over a pool of nine, where recovery finds the volume's end across every group and
//! a commit torn by the kill may have reached some of its segments' groups and not others.
//!
//! On one segment the clients behave as a client that must not apply a transfer twice does
//! (RFC 0014 §6): every write carries an `Idempotency-Key`, and a write whose outcome is unknown
//! is sent again with the same key until an answer settles it. There, no outcome stays unknown,
//! and the checkers hold as before: no history row appears twice, no transfer moved money twice.

use borealis_tests::checkers::{
    longest_read_stall, unknown_reasons, write_availability, DrillReport,
};
use borealis_tests::cluster::TestCluster;
use borealis_tests::shape::{one_cluster_at_a_time, Shape};
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use serde_json::Value;
use std::time::Duration;

async fn epoch(c: &TestCluster) -> Value {
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
async fn drill_4_gateway_killed_under_load_one_segment() {
    let _one = one_cluster_at_a_time().await;
    drill(Shape::OneSegment, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_4_gateway_killed_under_load_many_segments() {
    let _one = one_cluster_at_a_time().await;
    drill(Shape::ManySegments, false).await;
}

/// `retry`: writes carry keys and unknown outcomes are retried with them.
async fn drill(shape: Shape, retry: bool) {
    let c = shape.start().await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    shape.spread_workload(&c, &w).await;
    let load = LoadConfig {
        duration: Duration::from_secs(16),
        retry_unknown_with_key: retry,
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 4 ({}{}): gateway (with the writer compute) killed under load",
        shape.name(),
        if retry {
            ", clients retry unknown outcomes with their Idempotency-Key"
        } else {
            ""
        }
    ));
    report.line(w.describe(&load));

    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(4)).await;
    let epoch_before = epoch(&c).await;
    let fault = w.mark("borealis node kill gateway (SIGKILL, writer compute inside)");
    c.node("kill", "gateway");
    w.sleep_until(fault + Duration::from_secs(2)).await;
    let restart = w.mark("borealis node start gateway");
    c.node("start", "gateway");
    let stats = running.await.expect("load phase");
    let end = w.now();

    let (history, checks) = w.check().await;
    let epoch_after = epoch(&c).await;
    let availability = write_availability(&history, fault, end);
    let first_ok_after_restart = history
        .writes
        .iter()
        .filter(|x| x.outcome.is_acked() && x.end > restart)
        .map(|x| x.end)
        .min();

    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!("writes after the kill: {availability}"));
    report.line(format!(
        "first write acknowledged {} after `node start gateway`; longest read stall {:.2} s",
        first_ok_after_restart
            .map(|t| format!("{:.2} s", (t - restart).as_secs_f64()))
            .unwrap_or_else(|| "never".into()),
        longest_read_stall(&history, fault, end).as_secs_f64()
    ));
    report.line(format!(
        "writer epoch {epoch_before} before the kill, {epoch_after} after"
    ));
    for (why, n) in unknown_reasons(&history) {
        report.line(format!("unknown outcome x{n}: {why}"));
    }
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    if retry {
        assert_eq!(
            stats.writes_unknown, 0,
            "a retry with the write's key settles every unknown outcome: {stats}"
        );
        assert!(
            stats.retries > 0,
            "the kill left no write to retry: {stats}"
        );
    }
    assert!(
        first_ok_after_restart.is_some(),
        "no write succeeded after the gateway restarted ({availability})"
    );
    assert!(
        stats.writes_acked > 0 && stats.reads_ok > 0,
        "no load ran: {stats}"
    );
    assert!(
        epoch_after.as_u64() > epoch_before.as_u64(),
        "the restarted gateway must run a new writer epoch: {epoch_before} -> {epoch_after}"
    );
}
