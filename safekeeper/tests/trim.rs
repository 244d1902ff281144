//! Trimming the log after a pageserver checkpointed it: the trim point survives a restart,
//! reads below it are refused (never answered with a log that has a hole at its start),
//! recovery's `GetState` still reports the right SCL and last CPL, gossip goes on above the trim
//! point, and a member whose SCL is below every peer's trim point is refused below it (and
//! adopts it: see trim_adoption.rs).

mod common;

use borealis_core::{ErrorKind, Lsn, SegmentId};
use borealis_wire::{Body, Client, WireError};
use common::*;
use std::time::Duration;

async fn trim(c: &Client, epoch: u64, upto: u64) -> Result<Lsn, WireError> {
    let body = Body::Trim {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch,
        upto: Lsn(upto),
    };
    match c.call(body, T).await? {
        Body::Trimmed { base } => Ok(base),
        other => panic!("unexpected answer to trim: {other:?}"),
    }
}

async fn read_from(c: &Client, after: u64, upto: u64) -> Result<Vec<u64>, WireError> {
    let body = Body::ReadLog {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: None,
        min_epoch: 0,
        after: Lsn(after),
        upto: Lsn(upto),
        max_bytes: 1 << 22,
        wait_ms: 0,
    };
    match c.call(body, T).await? {
        Body::Records { records, .. } => Ok(borealis_core::redo::RedoRecord::decode_all(&records)
            .expect("records decode")
            .iter()
            .map(|r| r.lsn.0)
            .collect()),
        Body::LogTrimmed { base, last_cpl } => Err(WireError::Unexpected(format!(
            "log_trimmed: trimmed through lsn {base} with last cpl {last_cpl}"
        ))),
        other => panic!("unexpected answer to read_log: {other:?}"),
    }
}

fn base_on_status(sk: &Sk) -> u64 {
    let status: serde_json::Value = serde_json::from_str(&sk.http_get("/status")).unwrap();
    status["tenants"][0]["segments"][0]["base"]
        .as_u64()
        .expect("base on /status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trimmed_log_restarts_recovers_and_gossips_above_its_trim_point() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Sk::new("sk-a1", root.path());
    let mut b = Sk::new("sk-a2", root.path());
    let mut c = Sk::new("sk-b1", root.path());
    a.set_peers(&[&b, &c]);
    b.set_peers(&[&a, &c]);
    c.set_peers(&[&a, &b]);
    a.start();
    b.start();

    let (wa, mut acks_a) = a.client_with_acks().await;
    let (wb, mut acks_b) = b.client_with_acks().await;
    hello(&wa, 1, 0).await.unwrap();
    hello(&wb, 1, 0).await.unwrap();
    for batch in chain(1, 100).chunks(10) {
        append(&wa, 0, 1, batch).await;
        append(&wb, 0, 1, batch).await;
    }
    wait_ack(&mut acks_a, 0, 100).await;
    wait_ack(&mut acks_b, 0, 100).await;

    // A checkpoint of epoch 2's log is refused by members still at epoch 1.
    let err = trim(&wa, 2, 60).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    assert_eq!(trim(&wa, 1, 60).await.unwrap(), Lsn(60));
    assert_eq!(trim(&wb, 1, 60).await.unwrap(), Lsn(60));
    assert_eq!(trim(&wa, 1, 50).await.unwrap(), Lsn(60), "never backwards");
    assert_eq!(a.metric("safekeeper_records_trimmed_total"), 60);

    // Below the trim point: refused, not a log with a hole at its start.
    let err = read_from(&wa, 0, 100).await.unwrap_err();
    match &err {
        WireError::Unexpected(message) => {
            assert!(message.contains("trimmed through lsn 60"), "{message}");
        }
        other => panic!("expected a log_trimmed answer, got {other}"),
    }
    assert_eq!(
        read_from(&wa, 60, 100).await.unwrap(),
        (61..=100).collect::<Vec<_>>()
    );

    // The trim point is durable: after a crash the file holds only the records above it.
    drop(wa);
    a.kill();
    a.start();
    let wa = a.client().await;
    let state = get_state(&wa).await;
    assert_eq!(state.scl(0), Lsn(100));
    assert_eq!(state.segments[0].last_cpl, Lsn(99), "recovery sees the CPL");
    assert_eq!(base_on_status(&a), 60);
    let bytes = std::fs::metadata(a.segment_file(TENANT, 0)).unwrap().len() as usize;
    assert_eq!(bytes, encode(&chain(61, 100)).len());

    // Trimmed everywhere above its SCL: a fresh member is refused below the trim point, adopts
    // it as its own base and is filled above it (tests/trim_adoption.rs goes into detail).
    c.start();
    let wc = c.client().await;
    eventually(
        Duration::from_secs(8),
        "c adopts the trim point and catches up to 100",
        || async { get_state(&wc).await.scl(0) == Lsn(100) },
    )
    .await;
    assert!(c.metric("safekeeper_gossip_trimmed_refusals_total") > 0);
    assert_eq!(base_on_status(&c), 60);

    // Above the trim point gossip goes on: b misses 101..=150 and catches up from a.
    drop(wb);
    b.kill();
    let (wa, mut acks_a) = a.client_with_acks().await;
    hello(&wa, 1, 0).await.unwrap();
    for batch in chain(101, 150).chunks(10) {
        append(&wa, 0, 1, batch).await;
    }
    wait_ack(&mut acks_a, 0, 150).await;
    b.start();
    let wb = b.client().await;
    eventually(Duration::from_secs(8), "b catches up to 150", || async {
        get_state(&wb).await.scl(0) == Lsn(150)
    })
    .await;
    assert_eq!(
        read_from(&wb, 60, 150).await.unwrap(),
        (61..=150).collect::<Vec<_>>()
    );

    // Recovery: a new epoch starting at the last CPL truncates above it, and the trim stays.
    for client in [&wa, &wb] {
        assert_eq!(get_state(client).await.segments[0].last_cpl, Lsn(150));
        let segments = hello(client, 2, 147).await.unwrap();
        assert_eq!(segments[0].scl, Lsn(147));
        assert_eq!(segments[0].last_cpl, Lsn(147));
    }
    assert_eq!(base_on_status(&a), 60);
    assert_eq!(base_on_status(&b), 60);
    assert_eq!(trim(&wb, 2, 120).await.unwrap(), Lsn(120));
    assert_eq!(
        read_from(&wb, 120, 200).await.unwrap(),
        (121..=147).collect::<Vec<_>>()
    );
}
