//! Drill 8 (docs/design.md §6, "corrupt record on disk"): stop a safekeeper under load, flip one byte
//! in the body of a record in the middle of its segment log (docs/formats/segment-log.md), start
//! it. The record's CRC must catch it at start-up (`safekeeper_crc_failures_total`), the records
//! of the corrupt range must be fetched again from peers (its SCL catches up), and no client may
//! see an error. Finally the member is stopped once more and its file read back: every byte of it
//! is a good record again, the repaired LSN among them, and a fresh start finds no corruption.

use borealis_core::redo::REDO_HEADER_BYTES;
use borealis_tests::checkers::{
    log_lines, scan_segment_file, segment_file, tenant_hex, wait_caught_up, write_availability,
    DrillReport,
};
use borealis_tests::cluster::TestCluster;
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use std::time::Duration;

const VICTIM: &str = "sk-a1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_8_corrupt_record_on_disk_is_repaired() {
    let c = TestCluster::start().await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, "bank").await;
    let load = LoadConfig {
        duration: Duration::from_secs(14),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 8: one byte flipped in a record in the middle of {VICTIM}'s segment log"
    ));
    report.line(w.describe(&load));

    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(5)).await;
    let fault = w.mark(format!("borealis node stop {VICTIM}"));
    c.node("stop", VICTIM);
    let path = segment_file(&c, VICTIM, &tenant);
    // A torn tail (un-acknowledged bytes cut short by the stop) would end the scan early; the
    // middle of what scans is still the middle of acknowledged records.
    let (records, _) = scan_segment_file(&path);
    assert!(
        records.len() > 100,
        "too few records to corrupt one in the middle: {}",
        records.len()
    );
    let file_len: usize = records.iter().map(|r| r.1).sum();
    let (offset, len, lsn) = *records
        .iter()
        .find(|(o, l, _)| o + l > file_len / 2)
        .expect("a record in the middle");
    // The middle of the record's body: only its CRC can tell (a header byte may fail an earlier
    // check, such as the body length).
    let flip_at = offset + REDO_HEADER_BYTES + (len - REDO_HEADER_BYTES) / 2;
    let mut bytes = std::fs::read(&path).expect("segment file");
    bytes[flip_at] ^= 0xff;
    std::fs::write(&path, &bytes).expect("writing the corrupted segment file");
    w.mark(format!(
        "flipped byte {flip_at} of {} ({} records, {file_len} bytes): in the body of the record of lsn {lsn} at offset {offset}, {len} bytes",
        path.file_name().unwrap_or_default().to_string_lossy(),
        records.len()
    ));
    w.mark(format!("borealis node start {VICTIM}"));
    c.node("start", VICTIM);
    let under_load = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;
    let stats = running.await.expect("load phase");
    let end = w.now();
    let after = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;
    let detected = log_lines(&c.log_path(VICTIM), "corrupt range");

    // Read the repaired file back with the member stopped, then start it on it once more.
    c.node("stop", VICTIM);
    let rescan = scan_segment_file(&path);
    c.node("start", VICTIM);
    let fresh = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;

    let (history, checks) = w.check().await;
    let availability = write_availability(&history, fault, end);
    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!("writes after the stop: {availability}"));
    for l in &detected {
        report.line(format!("{VICTIM} log: {l}"));
    }
    for (when, cu) in [
        ("under load", &under_load),
        ("after the load", &after),
        ("restarted on the repaired file", &fresh),
    ] {
        report.outcome(when, cu);
    }
    report.line(format!(
        "repaired file read back: {} good records{}; lsn {lsn} present {} time(s)",
        rescan.0.len(),
        rescan
            .1
            .as_deref()
            .map(|e| format!(", then a bad one at {e}"))
            .unwrap_or_default(),
        rescan.0.iter().filter(|x| x.2 == lsn).count()
    ));
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert_eq!(
        stats.client_errors(),
        (0, 0, 0, 0),
        "a corrupt record on one safekeeper must cost clients no error: {stats}"
    );
    let under_load = under_load.expect("catching up under load");
    assert!(
        under_load.crc_failures >= 1,
        "the flipped byte was not detected: {under_load}"
    );
    assert!(
        !detected.is_empty(),
        "{VICTIM}'s log does not report the corrupt range"
    );
    let after = after.expect("catching up after the load");
    assert!(
        after.records_repaired > 0,
        "nothing was repaired from peers: {after}"
    );
    assert_eq!(
        rescan.1, None,
        "the repaired segment file must scan cleanly"
    );
    let fresh = fresh.expect("catching up on the repaired file");
    let held = rescan.0.iter().filter(|x| x.2 == lsn).count();
    // A pageserver checkpoint may have trimmed the log past the record since: then it is gone
    // legitimately (from every member).
    if after.base.max(fresh.base) >= lsn {
        assert!(held <= 1, "lsn {lsn} held {held} times");
    } else {
        assert_eq!(
            held, 1,
            "the corrupted record (lsn {lsn}) must be held exactly once after the repair"
        );
    }
    assert_eq!(
        fresh.crc_failures, 0,
        "a fresh start on the repaired file still finds corruption: {fresh}"
    );
}
