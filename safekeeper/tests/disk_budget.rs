//! The disk budget against the real binary: with `--disk-budget-bytes` small, a writer's appends
//! are refused whole (`ReadOnly`, "disk budget exhausted ...") once the log on disk would go
//! past it, VDL notices are still accepted, and a trim (what a pageserver sends after a
//! checkpoint) makes room again without a restart. The retained bytes show on `/metrics` and
//! `/status` and are counted again from the files at start-up.

mod common;

use borealis_core::redo::RedoRecord;
use borealis_core::{ErrorKind, Lsn, SegmentId};
use borealis_wire::{Body, Client, WireError};
use common::*;
use tokio::sync::mpsc::Receiver;

const BUDGET_BYTES: u64 = 256 * 1024;

/// Sends an append of `batch` to segment 0 and waits for its ack, or for its refusal.
async fn append_and_wait(
    c: &Client,
    acks: &mut Receiver<Body>,
    batch: &[RedoRecord],
) -> Result<(), (ErrorKind, String)> {
    let last = batch.last().expect("a batch has records").lsn;
    append(c, 0, 1, batch).await;
    loop {
        match tokio::time::timeout(T, acks.recv()).await {
            Ok(Some(Body::Ack { segment, scl, .. })) if segment == SegmentId(0) && scl >= last => {
                return Ok(())
            }
            Ok(Some(Body::Ack { .. })) => {}
            Ok(Some(Body::Error { kind, message })) => return Err((kind, message)),
            Ok(Some(other)) => panic!("unexpected unsolicited message: {other:?}"),
            Ok(None) => panic!("connection closed while appending through {last}"),
            Err(_) => panic!("neither an ack nor an error for the append through {last}"),
        }
    }
}

fn status(sk: &Sk) -> serde_json::Value {
    serde_json::from_str(&sk.http_get("/status")).expect("/status is JSON")
}

fn file_len(sk: &Sk) -> u64 {
    std::fs::metadata(sk.segment_file(TENANT, 0))
        .map(|m| m.len())
        .unwrap_or(0)
}

async fn known_vdl(c: &Client) -> Lsn {
    match c.call(Body::GetState { tenant: TENANT }, T).await {
        Ok(Body::State { known_vdl, .. }) => known_vdl,
        other => panic!("unexpected answer to get_state: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_past_the_disk_budget_are_refused_until_a_trim_makes_room() {
    let root = tempfile::tempdir().unwrap();
    let mut sk = Sk::new("sk-a1", root.path());
    sk.set_args(&["--disk-budget-bytes", &BUDGET_BYTES.to_string()]);
    sk.start();
    assert_eq!(sk.metric("safekeeper_disk_budget_bytes"), BUDGET_BYTES);
    assert_eq!(sk.metric("safekeeper_retained_log_bytes"), 0);
    assert_eq!(status(&sk)["disk_budget_bytes"], BUDGET_BYTES);

    let (w, mut acks) = sk.client_with_acks().await;
    hello(&w, 1, 0).await.unwrap();

    // Batches of five records (about 20 KiB) until one is refused.
    let mut next = 1;
    let (kind, message) = loop {
        assert!(next < 1_000, "never refused: the budget is not enforced");
        match append_and_wait(&w, &mut acks, &chain(next, next + 4)).await {
            Ok(()) => next += 5,
            Err(refusal) => break refusal,
        }
    };
    let accepted = next - 1;
    let refused = chain(next, next + 4);
    assert_eq!(kind, ErrorKind::ReadOnly, "{message}");
    assert!(message.starts_with("disk budget exhausted"), "{message}");
    assert!(message.contains("sk-a1"), "{message}");
    assert!(message.contains("(budget 256.00 KiB)"), "{message}");

    // The refused append left nothing behind: the SCL, the file and the count are as before.
    let retained = encode(&chain(1, accepted)).len() as u64;
    assert!(retained <= BUDGET_BYTES);
    assert!(retained + encode(&refused).len() as u64 > BUDGET_BYTES);
    assert_eq!(get_state(&w).await.scl(0), Lsn(accepted));
    assert_eq!(file_len(&sk), retained);
    assert_eq!(sk.metric("safekeeper_retained_log_bytes"), retained);
    assert_eq!(sk.metric("safekeeper_appends_refused_budget_total"), 1);
    let s = status(&sk);
    assert_eq!(s["retained_log_bytes"], retained);
    assert_eq!(s["disk_budget_exhausted"], true);

    // Refused again (answered under the append's request id), and logged only once.
    let again = Body::Append {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: 1,
        vdl: Lsn(accepted),
        records: encode(&refused),
    };
    match w.call(again, T).await {
        Err(WireError::Remote { kind, message }) => {
            assert_eq!(kind, ErrorKind::ReadOnly);
            assert!(message.starts_with("disk budget exhausted"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(sk.metric("safekeeper_appends_refused_budget_total"), 2);
    assert_eq!(get_state(&w).await.scl(0), Lsn(accepted));
    assert_eq!(
        known_vdl(&w).await,
        Lsn(0),
        "a refused append does not even tell its VDL"
    );
    assert_eq!(
        sk.logs()
            .matches("disk budget exhausted: refusing writers' appends")
            .count(),
        1,
        "one WARN per episode:\n{}",
        sk.logs()
    );

    // The writer's VDL notice (an append without records) is still accepted and acked.
    while acks.try_recv().is_ok() {}
    let appends_before = sk.metric("safekeeper_appends_total");
    let notice = Body::Append {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: 1,
        vdl: Lsn(accepted),
        records: Vec::new(),
    };
    w.send(notice).await.unwrap();
    match tokio::time::timeout(T, acks.recv()).await {
        Ok(Some(Body::Ack { scl, .. })) => assert_eq!(scl, Lsn(accepted)),
        other => panic!("expected the notice's ack, got {other:?}"),
    }
    assert_eq!(sk.metric("safekeeper_appends_total"), appends_before + 1);
    assert_eq!(known_vdl(&w).await, Lsn(accepted));

    // The pageserver checkpointed everything and trims: room again, without a restart.
    let trim = Body::Trim {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: 1,
        upto: Lsn(accepted),
    };
    match w.call(trim, T).await {
        Ok(Body::Trimmed { base }) => assert_eq!(base, Lsn(accepted)),
        other => panic!("unexpected answer to trim: {other:?}"),
    }
    assert_eq!(file_len(&sk), 0);
    assert_eq!(sk.metric("safekeeper_retained_log_bytes"), 0);
    assert_eq!(status(&sk)["disk_budget_exhausted"], false);
    assert_eq!(
        sk.logs().matches("disk budget has room again").count(),
        1,
        "one INFO when it ends:\n{}",
        sk.logs()
    );
    append_and_wait(&w, &mut acks, &refused)
        .await
        .expect("accepted after the trim");
    let retained = encode(&refused).len() as u64;
    assert_eq!(get_state(&w).await.scl(0), Lsn(next + 4));
    assert_eq!(file_len(&sk), retained);
    assert_eq!(sk.metric("safekeeper_retained_log_bytes"), retained);
    assert_eq!(sk.metric("safekeeper_appends_refused_budget_total"), 2);

    // After a crash the count starts from the files.
    drop(w);
    sk.kill();
    sk.start();
    assert_eq!(sk.metric("safekeeper_retained_log_bytes"), retained);
    assert_eq!(status(&sk)["retained_log_bytes"], retained);
}
