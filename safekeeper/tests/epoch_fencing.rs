//! Acceptance (c): a Hello with a newer epoch truncates the log above its start, durably, and
//! the older writer is fenced from then on, also after a crash.

mod common;

use borealis_core::{EpochStart, ErrorKind, Lsn, SegmentId};
use borealis_wire::{Body, WireError};
use common::*;

fn is_fenced(r: Result<Body, WireError>) -> bool {
    matches!(
        r,
        Err(WireError::Remote {
            kind: ErrorKind::Fenced,
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_epoch_truncates_above_its_start_and_fences_the_old_writer() {
    let root = tempfile::tempdir().unwrap();
    let mut sk = Sk::new("sk-a1", root.path());
    sk.start();
    let (old_writer, mut acks) = sk.client_with_acks().await;
    hello(&old_writer, 1, 0).await.unwrap();
    // 1..=10, then 13..=20 (a hole), then 11 and 12: the file holds 13..=20 before 11 and 12,
    // so truncating above 12 must rewrite the file, not just cut it.
    append(&old_writer, 0, 1, &chain(1, 10)).await;
    append(&old_writer, 0, 1, &chain(13, 20)).await;
    wait_ack(&mut acks, 0, 10).await;
    append(&old_writer, 0, 1, &chain(11, 12)).await;
    wait_ack(&mut acks, 0, 20).await;

    // Recovery by a new writer found the VDL at 12.
    let new_writer = sk.client().await;
    let segments = hello(&new_writer, 2, 12).await.unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(
        (segments[0].scl, segments[0].end_lsn),
        (Lsn(12), Lsn(12)),
        "{segments:?}"
    );
    assert_eq!(read_all(&new_writer, 0, 100).await, chain(1, 12));
    let record_bytes = chain(1, 1)[0].encoded_len() as u64;
    let file_len = std::fs::metadata(sk.segment_file(TENANT, 0)).unwrap().len();
    assert_eq!(
        file_len,
        12 * record_bytes,
        "the records above 12 are gone from the file"
    );

    // The old writer is fenced: its appends and its hellos.
    let stale = Body::Append {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: 1,
        vdl: Lsn(0),
        records: encode(&chain(13, 13)),
    };
    assert!(
        is_fenced(old_writer.call(stale.clone(), T).await),
        "an append of epoch 1 is refused"
    );
    assert!(matches!(
        hello(&old_writer, 1, 0).await,
        Err(WireError::Remote {
            kind: ErrorKind::Fenced,
            ..
        })
    ));
    // An epoch nobody announced is refused too (the writer must Hello first).
    let unannounced = Body::Append {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: 3,
        vdl: Lsn(0),
        records: encode(&chain(13, 13)),
    };
    assert!(matches!(
        old_writer.call(unannounced, T).await,
        Err(WireError::Remote {
            kind: ErrorKind::Invalid,
            ..
        })
    ));
    // A peer asking for epoch 1's log is refused as well.
    let read = Body::ReadLog {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: Some(1),
        min_epoch: 0,
        after: Lsn(0),
        upto: Lsn(20),
        max_bytes: 1 << 20,
        wait_ms: 0,
    };
    assert!(is_fenced(new_writer.call(read, T).await));

    // The new writer continues the log from 12 with its own record 13.
    let (new_writer, mut new_acks) = sk.client_with_acks().await;
    hello(&new_writer, 2, 12).await.unwrap();
    let mut own = record(13, 12);
    own.is_cpl = true;
    append(&new_writer, 0, 2, std::slice::from_ref(&own)).await;
    wait_ack(&mut new_acks, 0, 13).await;

    // Everything holds across a crash.
    sk.kill();
    sk.start();
    let c = sk.client().await;
    let state = get_state(&c).await;
    assert_eq!(
        (state.epoch, state.epoch_start_lsn, state.scl(0)),
        (2, Lsn(12), Lsn(13))
    );
    let mut expected = chain(1, 12);
    expected.push(own);
    assert_eq!(read_all(&c, 0, 100).await, expected);
    assert!(
        is_fenced(c.call(stale, T).await),
        "still fenced after a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_that_missed_an_epoch_keeps_only_the_log_its_history_shares() {
    let root = tempfile::tempdir().unwrap();
    let mut sk = Sk::new("sk-a1", root.path());
    sk.start();
    let (w, mut acks) = sk.client_with_acks().await;
    hello(&w, 1, 0).await.unwrap();
    append(&w, 0, 1, &chain(1, 6)).await;
    wait_ack(&mut acks, 0, 6).await;

    // While this member was away, epoch 2 started at 3 (dropping epoch 1's 4..=6 everywhere else)
    // and wrote its own 4..=9; epoch 3 now starts at 9. Records 4..=6 here are epoch 1's: stale.
    let h = |e: &[(u64, u64)]| {
        e.iter()
            .map(|&(epoch, s)| EpochStart {
                epoch,
                start: Lsn(s),
            })
            .collect::<Vec<_>>()
    };
    let history = h(&[(1, 0), (2, 3), (3, 9)]);
    let segments = hello_with_history(&w, &history).await.unwrap();
    assert_eq!(
        (segments[0].scl, segments[0].end_lsn),
        (Lsn(3), Lsn(3)),
        "kept only 1..=3: {segments:?}"
    );
    assert_eq!(read_all(&w, 0, 100).await, chain(1, 3));

    sk.kill();
    sk.start();
    let c = sk.client().await;
    match c.call(Body::GetState { tenant: TENANT }, T).await.unwrap() {
        Body::State {
            epoch,
            epoch_start_lsn,
            history: got,
            segments,
            ..
        } => {
            assert_eq!((epoch, epoch_start_lsn), (3, Lsn(9)));
            assert_eq!(got, history, "the history is durable");
            assert_eq!(segments[0].scl, Lsn(3));
        }
        other => panic!("unexpected answer: {other:?}"),
    }
    // The same epoch with another history is a writer bug, refused.
    let other = h(&[(1, 0), (3, 9)]);
    assert!(matches!(
        hello_with_history(&c, &other).await,
        Err(WireError::Remote {
            kind: ErrorKind::Invalid,
            ..
        })
    ));
}

/// RFC 0014 §2: a recovery's `Fence` promises its epoch durably before it reads; from then on the
/// old writer (still running, its epoch still installed) is refused and hears it is superseded,
/// and the answer covers every ack it was sent. The promise survives a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fence_refuses_the_running_writer_before_the_new_epoch_is_installed() {
    let root = tempfile::tempdir().unwrap();
    let mut sk = Sk::new("sk-a1", root.path());
    sk.start();
    let (old_writer, mut acks) = sk.client_with_acks().await;
    hello(&old_writer, 1, 0).await.unwrap();
    append(&old_writer, 0, 1, &chain(1, 9)).await;
    wait_ack(&mut acks, 0, 9).await;

    let recovery = sk.client().await;
    let fence = |epoch| Body::Fence {
        tenant: TENANT,
        epoch,
    };
    match recovery.call(fence(2), T).await.unwrap() {
        Body::State {
            epoch,
            promised_epoch,
            segments,
            ..
        } => {
            assert_eq!((epoch, promised_epoch), (1, 2), "promised, not installed");
            assert_eq!(segments[0].scl, Lsn(9), "the answer covers every ack sent");
        }
        other => panic!("unexpected answer to fence: {other:?}"),
    }
    // The old writer's connection gets one last ack, in the promised epoch.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(deadline, acks.recv()).await {
            Ok(Some(Body::Ack { epoch: 2, .. })) => break,
            Ok(Some(Body::Ack { epoch: 1, .. })) => {}
            other => panic!("expected an ack in epoch 2, got {other:?}"),
        }
    }
    let stale = Body::Append {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: 1,
        vdl: Lsn(0),
        records: encode(&chain(10, 10)),
    };
    assert!(
        is_fenced(old_writer.call(stale.clone(), T).await),
        "epoch 1 is still installed, but promised away"
    );
    assert!(is_fenced(
        hello(&old_writer, 1, 0).await.map(|_| Body::GossipSummary)
    ));
    assert!(
        is_fenced(recovery.call(fence(2), T).await),
        "a second recovery must take a higher epoch"
    );
    assert!(matches!(
        recovery.call(fence(0), T).await,
        Err(WireError::Remote {
            kind: ErrorKind::Invalid,
            ..
        })
    ));

    // The promise is durable.
    sk.kill();
    sk.start();
    let c = sk.client().await;
    match c.call(Body::GetState { tenant: TENANT }, T).await.unwrap() {
        Body::State {
            epoch,
            promised_epoch,
            ..
        } => assert_eq!((epoch, promised_epoch), (1, 2)),
        other => panic!("unexpected answer: {other:?}"),
    }
    assert!(
        is_fenced(c.call(stale, T).await),
        "still refused after a restart"
    );
    // The recovery that holds the promise installs its epoch and writes on.
    let (new_writer, mut new_acks) = sk.client_with_acks().await;
    hello(&new_writer, 2, 9).await.unwrap();
    let mut own = record(10, 9);
    own.is_cpl = true;
    append(&new_writer, 0, 2, std::slice::from_ref(&own)).await;
    wait_ack(&mut new_acks, 0, 10).await;
}
