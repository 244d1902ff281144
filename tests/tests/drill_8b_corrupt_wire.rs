//! Drill 8b (docs/design.md §6, "corrupt record on **wire**"): bits flipped on the wire between the
//! gateway's writer and one safekeeper, under load.
//!
//! A [`CorruptingProxy`] is put between the gateway and sk-a1 (the gateway is restarted with the
//! proxy's address in sk-a1's place; the safekeepers and pageservers still talk to sk-a1
//! directly). For 6 s it flips one bit every 16 KiB of the byte stream, in both directions:
//! appends and their redo records one way, acknowledgements the other, wherever the bit falls
//! (frame header, message, record). What must hold:
//! - **detected**: sk-a1 refuses the damaged frames (frame magic/length/CRC checks: "bad frame;
//!   closing the connection") instead of acting on them, and the writer reconnects;
//! - **nothing corrupt is kept**: read back with it stopped, sk-a1's segment file is CRC-clean
//!   and holds every LSN from its base to its SCL: a damaged append never reached its disk;
//! - **repaired from peers**: sk-a1 ends at its peers' SCL (gossip fills what the writer's
//!   dropped appends did not bring);
//! - clients see no error (five members keep the write quorum) and every checker holds.

use borealis_tests::checkers::{log_lines, tenant_hex, wait_caught_up, DiskReadBack, DrillReport};
use borealis_tests::cluster::TestCluster;
use borealis_tests::proxy::CorruptingProxy;
use borealis_tests::workload::{LoadConfig, Workload, WorkloadConfig};
use std::time::Duration;

const VICTIM: &str = "sk-a1";
/// One bit flipped per this many bytes, each way, while corrupting.
const FLIP_EVERY_BYTES: u64 = 16 * 1024;
const CORRUPTING_FOR: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_8b_bits_flipped_on_the_wire_are_detected() {
    let c = TestCluster::start().await;
    let sk = c.node_info(VICTIM).addr;
    let proxy = CorruptingProxy::start(sk.clone(), FLIP_EVERY_BYTES).await;
    c.node("stop", "gateway");
    let via = proxy.addr().to_string();
    c.edit_node_command("gateway", |args| {
        let at = args
            .iter()
            .position(|a| a == "--safekeepers")
            .expect("the gateway is started with --safekeepers");
        let list = &mut args[at + 1];
        assert!(list.contains(&sk), "{VICTIM} ({sk}) not in {list}");
        *list = list.replace(&sk, &via);
    });
    c.node("start", "gateway");
    c.wait_gateway_up(Duration::from_secs(30)).await;

    let w = Workload::setup(&c, "bank", WorkloadConfig::default()).await;
    let tenant = tenant_hex(&c, "bank").await;
    let load = LoadConfig {
        duration: Duration::from_secs(14),
        ..LoadConfig::default()
    };
    let mut report = DrillReport::new(&format!(
        "drill 8b: one bit in every {} KiB flipped on the wire between the gateway and {VICTIM}",
        FLIP_EVERY_BYTES / 1024
    ));
    report.line(format!(
        "{}; the gateway reaches {VICTIM} ({sk}) through a corrupting proxy at {via}",
        w.describe(&load)
    ));

    let started = w.now();
    let running = w.spawn(load);
    w.sleep_until(started + Duration::from_secs(3)).await;
    let connections_before = proxy.connections();
    let on = w.mark("corruption on");
    proxy.set_corrupting(true);
    w.sleep_until(on + CORRUPTING_FOR).await;
    proxy.set_corrupting(false);
    w.mark(format!(
        "corruption off: {} bits flipped, {} connections through the proxy ({} before)",
        proxy.flips(),
        proxy.connections(),
        connections_before
    ));
    let stats = running.await.expect("load phase");
    let caught_up = wait_caught_up(&c, VICTIM, &tenant, Duration::from_secs(30)).await;

    let bad_frames = log_lines(&c.log_path(VICTIM), "bad frame");
    let gateway_read_failures = log_lines(&c.log_path("gateway"), "connection read failed");
    // sk-a1's disk, read back with it stopped.
    let disk = DiskReadBack::of(&c, VICTIM, &tenant, caught_up.as_ref().ok());

    let (history, checks) = w.check().await;
    report.timeline(&history);
    report.line(format!("phase: {stats}"));
    report.line(format!(
        "detected: {} frames refused by {VICTIM} (first: {}); {} connections from its side \
         failed at the gateway",
        bad_frames.len(),
        bad_frames.first().map(String::as_str).unwrap_or("-"),
        gateway_read_failures.len()
    ));
    report.outcome("after the load", &caught_up);
    report.line(format!("{VICTIM}'s disk read back: {disk}"));
    report.checks(&checks);
    report.emit();

    checks.assert_ok();
    assert!(
        proxy.flips() >= 3,
        "the proxy flipped only {} bits: the drill tested little",
        proxy.flips()
    );
    assert!(
        !bad_frames.is_empty(),
        "{} bits flipped, yet {VICTIM} refused no frame",
        proxy.flips()
    );
    assert!(
        proxy.connections() > connections_before,
        "the writer never reconnected to {VICTIM} after a damaged frame"
    );
    assert_eq!(
        stats.client_errors(),
        (0, 0, 0, 0),
        "corruption on one member's wire must cost clients no error: {stats}"
    );
    caught_up.expect("caught up after the load");
    // No damaged append reached its disk.
    disk.assert_complete(VICTIM);
}
