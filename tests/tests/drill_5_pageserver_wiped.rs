//! Drill 5 (docs/design.md §6, "pageserver killed, local disk wiped"): under load, once the tenant's
//! segment has been checkpointed to object storage and the safekeepers have trimmed the log the
//! checkpoint covers, both pageservers are `kill -9`ed, their data directories deleted, and
//! started again empty 4 s later.
//!
//! - **Writes go on** while they are down: the writer compute serves the pages it holds from its
//!   cache, ships pages a commit adds as full images (asking no pageserver), and ships its log to
//!   the safekeepers. Clients see no error.
//! - **Restore**: the restarted pageserver has nothing on disk and the safekeepers no longer hold
//!   the start of the log, so it must restore the segment from its checkpoint in object storage
//!   and follow the log from there. To make every page come from it, the load pauses until the
//!   tenant's compute stops (idle timeout) and goes on with a new compute, which has no page
//!   cached; at the end the compute is let go idle once more, so the final state the checkers
//!   read comes from the pageserver, not from a cache.
//!
//! - **An instance replaced during the outage keeps writing**: while the pageservers are down a
//!   runaway statement is sent; the statement timeout (1 s here) throws its instance away, and the
//!   next one must open the volume from the writer's page cache, which outlives its instances
//!   (`gateway/src/volume.rs`), since no pageserver can serve page 0.
//!
//! The drill prints the restore figures of the pageserver's `/status` (generation, the index it
//! restored from, its LSN and pages, the new checkpoints).

use borealis_tests::checkers::{
    base_of, log_lines, reads_between, tenant_hex, unknown_reasons, write_availability,
    writes_between, DrillReport,
};
use borealis_tests::cluster::{checkpointed_lsn, ClusterOptions, TestCluster};
use borealis_tests::workload::{LoadConfig, Outcome, Workload, WorkloadConfig};
use serde_json::Value;
use std::time::{Duration, Instant};

const TENANT: &str = "bank";
const PAGESERVERS: [&str; 2] = ["ps-1", "ps-2"];
/// The compute stops after this long without a request: the pause between the two load phases
/// that makes the next compute read its pages from the pageserver.
const IDLE_TIMEOUT: &str = "1s";
/// The gateway's statement timeout: the runaway statement sent during the outage is stopped
/// after this, and its instance replaced.
const STATEMENT_TIMEOUT: &str = "1s";
/// How long the pageservers stay down.
const DOWN: Duration = Duration::from_secs(4);

fn options() -> ClusterOptions {
    ClusterOptions {
        idle_timeout: IDLE_TIMEOUT.into(),
        // The default embedded file object store (`DIR/objects`). The load applies ~650
        // records/s: the default 10,000 records (or 60 s) per checkpoint would take most of the
        // drill to come round.
        object_store: None,
        env: vec![
            ("PAGESERVER_CHECKPOINT_RECORDS".into(), "1000".into()),
            ("PAGESERVER_CHECKPOINT_INTERVAL".into(), "1s".into()),
            (
                "BOREALIS_STATEMENT_TIMEOUT".into(),
                STATEMENT_TIMEOUT.into(),
            ),
        ],
        segment_size: None,
        pool: None,
    }
}

/// Every safekeeper's trim base of the tenant's segment 0 (0: never trimmed, or no answer).
async fn safekeeper_bases(c: &TestCluster, tenant: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for sk in c.node_ids("safekeeper") {
        out.push(
            c.node_status(&sk)
                .await
                .map(|s| base_of(&s, tenant))
                .unwrap_or(0),
        );
    }
    out
}

/// Whether the gateway reports the tenant's compute running.
async fn compute_running(c: &TestCluster) -> bool {
    let r = c
        .request(
            reqwest::Method::GET,
            &format!("/v1/tenants/{TENANT}"),
            &c.admin_token,
            None,
        )
        .await
        .ok();
    r.body["compute"] != "idle"
}

/// Waits (at most `within`) until the tenant's compute has stopped; returns how long it took.
async fn wait_compute_idle(c: &TestCluster, within: Duration) -> Duration {
    let started = Instant::now();
    while compute_running(c).await {
        assert!(
            started.elapsed() < within,
            "the compute did not go idle within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// The highest LSN an acknowledged write returned.
fn last_acked_lsn(w: &Workload) -> u64 {
    w.history()
        .writes
        .iter()
        .filter_map(|w| match w.outcome {
            Outcome::Acked { lsn } => Some(lsn),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

fn restore_figures(seg: &Value) -> String {
    let ck = &seg["checkpoint"];
    format!(
        "generation {}, restored from generation {} at lsn {} ({} pages), checkpointed lsn {} \
         ({} checkpoints by this generation), caught up to {}",
        ck["generation"],
        ck["restored_from_generation"],
        ck["restored_lsn"],
        ck["restored_pages"],
        ck["checkpointed_lsn"],
        ck["checkpoints"],
        seg["caught_up_to"]
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_5_pageservers_wiped_restore_from_object_storage() {
    let c = TestCluster::start_with(options()).await;
    let w = Workload::setup(&c, TENANT, WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, TENANT).await;
    let ps = c.serving_pageserver(TENANT).await;
    let load_1 = LoadConfig {
        duration: Duration::from_secs(12),
        ..LoadConfig::default()
    };
    let load_2 = LoadConfig {
        duration: Duration::from_secs(5),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(
        "drill 5: both pageservers killed and their disks wiped under load (restore from object storage)",
    );
    report.line(format!(
        "load: {} writers, {} readers, {} s with the fault, then {} s on a new compute; seed {:#x}; \
         checkpoint every 1,000 records or 1 s; idle timeout {IDLE_TIMEOUT}; {TENANT} served by {ps}",
        load_1.writers,
        load_1.readers,
        load_1.duration.as_secs(),
        load_2.duration.as_secs(),
        w.config.seed
    ));

    // Phase 1: load; after a few checkpoints, once every safekeeper has trimmed the log up to one
    // (so the log alone can no longer rebuild the segment), the pageservers lose everything.
    let started = w.now();
    let running = w.spawn(load_1);
    w.sleep_until(started + Duration::from_secs(4)).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    let (seg_before, bases_before) = loop {
        let seg = c.pageserver_segment(&ps, &tenant).await;
        let bases = safekeeper_bases(&c, &tenant).await;
        if checkpointed_lsn(&seg) > 0 && bases.iter().all(|&b| b > 0) {
            break (seg, bases);
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint with every safekeeper trimmed within 12 s of load; {ps}: {seg:#}; \
             safekeeper bases {bases:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let getpages = (
        c.node_metric(&ps, "pageserver_getpage_total{result=\"page\"}")
            .await
            .unwrap_or(0.0),
        c.node_metric(&ps, "pageserver_getpage_total{result=\"no_page\"}")
            .await
            .unwrap_or(0.0),
    );
    let load_before_kill = w.now() - started;
    let checkpointed_at_kill = checkpointed_lsn(&seg_before);
    w.mark(format!(
        "{ps} checkpointed lsn {checkpointed_at_kill} (generation {}, {} checkpoints); safekeepers \
         trimmed through {bases_before:?}",
        seg_before["checkpoint"]["generation"], seg_before["checkpoint"]["checkpoints"]
    ));
    let fault = w.mark("borealis node kill ps-1 ps-2; data directories deleted");
    for id in PAGESERVERS {
        c.node("kill", id);
        c.wipe_node_data(id);
    }
    w.sleep_until(fault + Duration::from_millis(500)).await;
    let runaway = c
        .sql(
            TENANT,
            &c.admin_token,
            "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n",
        )
        .await;
    let replaced = w.mark(format!(
        "runaway statement answered {} {}: its instance is replaced while no pageserver runs",
        runaway.status,
        runaway.code()
    ));
    w.sleep_until(fault + DOWN).await;
    let back = w.mark("borealis node start ps-1 ps-2 (empty)");
    for id in PAGESERVERS {
        c.node("start", id);
    }
    let stats_1 = running.await.expect("load phase 1");
    let end_1 = w.now();
    let restored_under_load = !c.pageserver_segment(&ps, &tenant).await.is_null();

    // The compute (and its page cache) goes; the next one reads every page from the pageserver.
    let idle_wait = wait_compute_idle(&c, Duration::from_secs(20)).await;
    let start_2 = w.mark(format!(
        "compute idle ({:.1} s after the load paused); load again, on a new compute",
        idle_wait.as_secs_f64()
    ));
    let stats_2 = w.run(load_2).await;
    let end = w.now();
    let last_lsn = last_acked_lsn(&w);
    let seg_restored = c.pageserver_segment(&ps, &tenant).await;

    // The new generation checkpoints what came after (the idle writer vouches for its last
    // commits), and the safekeepers trim behind it.
    let waited = Instant::now();
    let seg_after = loop {
        let seg = c.pageserver_segment(&ps, &tenant).await;
        if checkpointed_lsn(&seg) >= last_lsn {
            break Ok(seg);
        }
        if waited.elapsed() > Duration::from_secs(30) {
            break Err(seg);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let checkpoint_wait = waited.elapsed();
    let bases_after = safekeeper_bases(&c, &tenant).await;

    // Final state from the pageserver alone: one more new compute.
    wait_compute_idle(&c, Duration::from_secs(20)).await;
    w.mark("compute idle again: the final state is read by a new compute from the pageserver");
    let (history, checks) = w.check().await;

    // What the fault cost.
    let availability = write_availability(&history, fault, end_1);
    let (acked_while_down, ..) = writes_between(&history, fault, back);
    let (reads_ok_down, reads_failed_down, _) = reads_between(&history, fault, back);
    let availability_2 = write_availability(&history, start_2, end);
    let first_ack_2 = history
        .writes
        .iter()
        .filter(|r| r.outcome.is_acked() && r.start >= start_2)
        .map(|r| r.end - start_2)
        .min();
    let restored_log = log_lines(&c.log_path(&ps), "restored the segment from object storage");
    let mut other_ps = Vec::new();
    for id in PAGESERVERS.iter().filter(|id| **id != ps) {
        let seg = c.pageserver_segment(id, &tenant).await;
        other_ps.push(format!(
            "{id}: {}",
            if seg.is_null() {
                "does not serve the tenant; nothing attached".to_string()
            } else {
                restore_figures(&seg)
            }
        ));
    }

    report.timeline(&history);
    report.line(format!(
        "before the kill ({:.1} s of load), {ps}: {}; it had answered {} GetPages with a page and \
         {} for pages never written",
        load_before_kill.as_secs_f64(),
        restore_figures(&seg_before),
        getpages.0,
        getpages.1
    ));
    report.line(format!("phase 1 (fault): {stats_1}"));
    report.line(format!(
        "  while the pageservers were down ({:.1} s): {acked_while_down} writes acknowledged, \
         {reads_ok_down} reads ok, {reads_failed_down} failed",
        (back - fault).as_secs_f64()
    ));
    report.line(format!("  writes after the kill: {availability}"));
    let (acked_after_replace, ..) = writes_between(&history, replaced, back);
    report.line(format!(
        "  after the runaway statement's instance was replaced: {acked_after_replace} writes \
         acknowledged before the pageservers returned"
    ));
    report.line(format!(
        "  the segment was restored {}",
        if restored_under_load {
            "in phase 1 already (a compute asked it for a page)"
        } else {
            "for phase 2's new compute (no page was missed while they were down)"
        }
    ));
    for (why, n) in unknown_reasons(&history) {
        report.line(format!("  outcome unknown x{n}: {why}"));
    }
    report.line(format!("phase 2 (new compute): {stats_2}"));
    report.line(format!(
        "  first write acknowledged {} after phase 2 began (a new compute: recovery, then its \
         pages from the restored {ps}); {availability_2}",
        first_ack_2.map_or("never".into(), |d| format!("{:.2} s", d.as_secs_f64())),
    ));
    for line in &restored_log {
        report.line(format!("  {ps} log: {line}"));
    }
    report.line(format!(
        "restored {ps} after phase 2: {}",
        restore_figures(&seg_restored)
    ));
    match &seg_after {
        Ok(seg) => report.line(format!(
            "the new generation checkpointed the last acknowledged lsn {last_lsn} {:.1} s after \
             the load: {}",
            checkpoint_wait.as_secs_f64(),
            restore_figures(seg)
        )),
        Err(seg) => report.line(format!(
            "the new generation did NOT checkpoint lsn {last_lsn} within 30 s: {}",
            restore_figures(seg)
        )),
    }
    report.line(format!(
        "safekeeper trim bases: before the kill {bases_before:?}, at the end {bases_after:?}"
    ));
    for line in &other_ps {
        report.line(line);
    }
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert_eq!(
        runaway.code(),
        "timeout",
        "the runaway statement: {}",
        runaway.body
    );
    let (acked_after_replace, ..) = writes_between(&history, replaced, back);
    assert!(
        acked_after_replace > 0,
        "no write was acknowledged by the instance that replaced the timed-out one while the \
         pageservers were down"
    );
    assert_eq!(
        (
            stats_1.writes_refused + stats_2.writes_refused,
            stats_1.writes_rejected
                + stats_1.writes_not_sent
                + stats_2.writes_rejected
                + stats_2.writes_not_sent,
            stats_1.writes_unknown + stats_2.writes_unknown,
            stats_1.reads_failed + stats_2.reads_failed,
        ),
        (0, 0, 0, 0),
        "the pageservers down and restored must cost clients no error:\n{stats_1}\n{stats_2}"
    );
    assert!(
        acked_while_down > 0,
        "no write was acknowledged while the pageservers were down"
    );
    assert!(
        stats_2.writes_acked > 0 && stats_2.reads_ok > 0,
        "the new compute never worked on the restored pageserver: {stats_2}"
    );
    let ck = &seg_restored["checkpoint"];
    let generation_before = seg_before["checkpoint"]["generation"].as_u64().unwrap_or(0);
    assert_eq!(
        ck["restored_from_generation"].as_u64(),
        Some(generation_before),
        "{ps} must restore from the checkpoint written before the kill: {seg_restored:#}"
    );
    assert!(
        ck["generation"].as_u64().unwrap_or(0) > generation_before,
        "the restored attachment claims a new generation: {seg_restored:#}"
    );
    assert!(
        ck["restored_lsn"].as_u64().unwrap_or(0) >= checkpointed_at_kill,
        "restored below the checkpoint durable at the kill ({checkpointed_at_kill}): {seg_restored:#}"
    );
    // The restored chain held the segment's pages (fetched on demand or hydrated since; a
    // version 1 layer's are installed at the restore).
    assert!(
        ck["remote_pages"].as_u64().unwrap_or(0) + ck["restored_pages"].as_u64().unwrap_or(0) > 1,
        "{seg_restored:#}"
    );
    let seg_after = seg_after.unwrap_or_else(|seg| {
        panic!("the new generation did not checkpoint lsn {last_lsn} within 30 s: {seg:#}")
    });
    assert_eq!(seg_after["checkpoint"]["stale"], false, "{seg_after:#}");
}
