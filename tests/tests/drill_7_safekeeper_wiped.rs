//! Drill 7 (docs/design.md §5 "segment repair", §6): a safekeeper's disk is replaced under load —
//! `kill -9`, its data directory deleted, started again empty. It must learn the tenant and its
//! epoch from its peers and rebuild the whole log from them by gossip (this drill checkpoints
//! rarely, so the peers still hold the whole log and the rebuild is measured on ~12 MiB; drill 7b
//! replaces a disk after the peers trimmed, so the prefix is in the checkpoint in object storage
//! and only the tail comes from peers). Clients see no error. The drill prints the time and rate
//! of the rebuild.

use borealis_tests::checkers::{
    peers_scl_and_base, tenant_hex, wait_caught_up, write_availability, writes_between,
    DiskReadBack, DrillReport,
};
use borealis_tests::cluster::TestCluster;
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use std::time::Duration;

const VICTIM: &str = "sk-b1";
/// The preload: 8 x 500 rows of 3,000 bytes, about 16 MiB of redo (one row per page or so).
const PRELOAD_BATCHES: usize = 8;
const PRELOAD_ROWS: usize = 500;
const PRELOAD_PAYLOAD_BYTES: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_7_safekeeper_disk_wiped_is_rebuilt_from_peers() {
    let c = TestCluster::start().await;
    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, "bank").await;
    let load = LoadConfig {
        duration: Duration::from_secs(14),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 7: {VICTIM}'s data directory wiped under load (disk replaced)"
    ));
    report.line(w.describe(&load));

    // A log worth rebuilding: ~16 MiB of page images before the load starts.
    let preload_started = w.now();
    w.preload(PRELOAD_BATCHES, PRELOAD_ROWS, PRELOAD_PAYLOAD_BYTES)
        .await;
    report.line(format!(
        "preload: {PRELOAD_BATCHES} transactions of {PRELOAD_ROWS} rows x {PRELOAD_PAYLOAD_BYTES} bytes in {:.1} s",
        (w.now() - preload_started).as_secs_f64()
    ));

    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(6)).await;
    let fault = w.mark(format!("borealis node kill {VICTIM}"));
    c.node("kill", VICTIM);
    // Everything up to here was shipped before the kill, and the writer never ships a record
    // twice: the rebuilt member can have it only from its peers.
    let (scl_at_kill, _) = peers_scl_and_base(&c, VICTIM, &tenant).await;
    let data_dir = c.node_info(VICTIM).data_dir;
    c.wipe_node_data(VICTIM);
    w.mark(format!("deleted {}", data_dir.display()));
    w.sleep_until(fault + Duration::from_secs(1)).await;
    let back = w.mark(format!("borealis node start {VICTIM} (empty)"));
    c.node("start", VICTIM);
    let rebuilt = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(40)).await;
    let stats = running.await.expect("load phase");
    let end = w.now();
    let after = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;
    let (_, peers_base) = peers_scl_and_base(&c, VICTIM, &tenant).await;

    // Read the rebuilt disk back with the member stopped: every record from its trim base (0:
    // the whole log) to its SCL must be there and pass its CRC.
    let disk = DiskReadBack::of(&c, VICTIM, &tenant, after.as_ref().ok());

    let (history, checks) = w.check().await;
    let availability = write_availability(&history, fault, end);
    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!(
        "peers' SCL when {VICTIM} was killed: {scl_at_kill}"
    ));
    report.line(format!("writes after the kill: {availability}"));
    match &rebuilt {
        Ok(cu) => {
            let secs = cu.took.as_secs_f64().max(1e-3);
            let (acked_while_rebuilding, ..) = writes_between(&history, back, back + cu.took);
            report.line(format!("rebuilt under load: {cu}"));
            report.line(format!(
                "rebuild rate: {:.0} records/s, {:.1} MiB/s ({} writes acknowledged meanwhile)",
                cu.records_repaired as f64 / secs,
                cu.bytes as f64 / secs / (1024.0 * 1024.0),
                acked_while_rebuilding
            ));
        }
        Err(e) => report.line(format!("not rebuilt under load: {e}")),
    }
    report.outcome("after the load", &after);
    report.line(format!("rebuilt disk read back: {disk}"));
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert_eq!(
        stats.client_errors(),
        (0, 0, 0, 0),
        "one safekeeper's disk replaced must cost clients no error: {stats}"
    );
    rebuilt.expect("rebuilding under load");
    let after = after.expect("caught up after the load");
    // Records the peers trimmed (checkpointed to object storage) need not come from them.
    let lost_with_the_disk = scl_at_kill.saturating_sub(peers_base);
    assert!(
        after.records_repaired >= lost_with_the_disk,
        "{VICTIM} holds the log up to {} but fetched only {} records from peers, fewer than the \
         {lost_with_the_disk} above the peers' trim base ({peers_base}) it lost with its disk",
        after.scl_after,
        after.records_repaired
    );
    disk.assert_complete(VICTIM);
    // It knew its disk was replaced, refused to testify (GetState) while it rebuilt, and became
    // a witness again once it held what its peers held (`safekeeper::rebuild`).
    let log = std::fs::read_to_string(c.log_path(VICTIM)).expect("the victim's log");
    for line in [
        "this node's disk was replaced",
        "rebuilt: this node holds what its peers held",
    ] {
        assert!(log.contains(line), "{VICTIM}'s log says {line:?}");
    }
}
