//! Acceptance (d): a record corrupted on disk is detected by its CRC and repaired from a peer,
//! both when found at start-up and when found by a read while running.

mod common;

use common::*;
use std::time::Duration;

/// Flips one byte of the body of record `lsn` in a file of equal-sized records `1..`.
fn flip_body_byte(path: &std::path::Path, lsn: u64) {
    use std::os::unix::fs::FileExt;
    let record_bytes = chain(1, 1)[0].encoded_len() as u64;
    let offset = (lsn - 1) * record_bytes + 44 + 1000;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x5a;
    f.write_all_at(&b, offset).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_corrupt_record_is_detected_and_repaired_from_a_peer() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Sk::new("sk-a1", root.path());
    let mut b = Sk::new("sk-a2", root.path());
    a.set_peers(&[&b]);
    b.set_peers(&[&a]);
    a.start();
    b.start();
    let (wa, mut acks_a) = a.client_with_acks().await;
    let (wb, mut acks_b) = b.client_with_acks().await;
    hello(&wa, 1, 0).await.unwrap();
    hello(&wb, 1, 0).await.unwrap();
    for batch in chain(1, 50).chunks(5) {
        append(&wa, 0, 1, batch).await;
        append(&wb, 0, 1, batch).await;
    }
    wait_ack(&mut acks_a, 0, 50).await;
    wait_ack(&mut acks_b, 0, 50).await;
    drop(wb);

    // 1. Found at start-up: b is stopped, record 25 (mid-file) rots, b restarts next to a.
    b.kill();
    flip_body_byte(&b.segment_file(TENANT, 0), 25);
    b.start();
    let cb = b.client().await;
    eventually(
        Duration::from_secs(8),
        "b repairs record 25 from a",
        || async { get_state(&cb).await.scl(0).0 == 50 },
    )
    .await;
    assert_eq!(
        read_all(&cb, 0, 50).await,
        chain(1, 50),
        "every record intact after the repair"
    );
    assert!(
        b.metric("safekeeper_crc_failures_total") >= 1,
        "the corruption was counted"
    );
    assert!(
        b.metric("safekeeper_gossip_records_repaired_total") >= 1,
        "the record came from the peer"
    );
    assert!(
        b.logs().contains("corrupt range in segment file dropped"),
        "and logged:\n{}",
        b.logs()
    );

    // 2. Found by a read while running: record 10 rots under a live b.
    let crc_before = b.metric("safekeeper_crc_failures_total");
    flip_body_byte(&b.segment_file(TENANT, 0), 10);
    let partial = read_all(&cb, 0, 50).await;
    assert_eq!(
        partial,
        chain(1, 9),
        "the read stops before the bad record instead of serving it"
    );
    assert_eq!(b.metric("safekeeper_crc_failures_total"), crc_before + 1);
    eventually(
        Duration::from_secs(8),
        "b repairs record 10 from a",
        || async { get_state(&cb).await.scl(0).0 == 50 },
    )
    .await;
    assert_eq!(read_all(&cb, 0, 50).await, chain(1, 50));
}
