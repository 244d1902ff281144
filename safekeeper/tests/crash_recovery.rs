//! Acceptance (a): kill -9 in the middle of a stream of appends loses nothing acknowledged.

mod common;

use borealis_core::{Lsn, SegmentId};
use borealis_wire::Body;
use common::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Records in the whole stream; the kill comes long before the end.
const STREAM_RECORDS: u64 = 40_000;
/// Records per append message.
const RECORDS_PER_APPEND: u64 = 4;
/// The kill comes once this LSN is acknowledged on both segments.
const KILL_AFTER_ACKED: u64 = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_appends_loses_no_acknowledged_record() {
    let root = tempfile::tempdir().unwrap();
    let mut sk = Sk::new("sk-a1", root.path());
    sk.start();
    let (client, mut acks) = sk.client_with_acks().await;
    hello(&client, 1, 0).await.unwrap();

    // The writer: records alternate between segments 0 and 1, each with its backlink.
    let sent = Arc::new(AtomicU64::new(0));
    let client = Arc::new(client);
    let sender = {
        let (client, sent) = (client.clone(), sent.clone());
        tokio::spawn(async move {
            let mut lsn = 1;
            while lsn <= STREAM_RECORDS {
                for segment in [0u32, 1] {
                    let batch: Vec<_> = (lsn..lsn + 2 * RECORDS_PER_APPEND)
                        .filter(|l| segment_of(*l) == SegmentId(segment))
                        .map(two_segment_record)
                        .collect();
                    let body = Body::Append {
                        tenant: TENANT,
                        segment: SegmentId(segment),
                        epoch: 1,
                        vdl: Lsn(0),
                        records: encode(&batch),
                    };
                    if client.send(body).await.is_err() {
                        return;
                    }
                }
                lsn += 2 * RECORDS_PER_APPEND;
                sent.store(lsn - 1, Ordering::SeqCst);
            }
        })
    };

    // Collect acks; kill the safekeeper mid-stream.
    let mut acked: BTreeMap<SegmentId, Lsn> = BTreeMap::new();
    let mut killed_at_sent = None;
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let msg = tokio::time::timeout_at(deadline, acks.recv())
            .await
            .expect("acks keep coming until the kill");
        match msg {
            Some(Body::Ack { segment, scl, .. }) => {
                let a = acked.entry(segment).or_default();
                assert!(scl >= *a, "acks never go back: {scl} after {a}");
                *a = scl;
            }
            Some(other) => panic!("unexpected message: {other:?}"),
            None => break, // the connection died with the process
        }
        if killed_at_sent.is_none()
            && acked.len() == 2
            && acked.values().all(|l| l.0 >= KILL_AFTER_ACKED)
        {
            killed_at_sent = Some(sent.load(Ordering::SeqCst));
            sk.kill();
        }
    }
    let killed_at_sent = killed_at_sent.expect("the safekeeper was killed");
    assert!(
        killed_at_sent < STREAM_RECORDS,
        "the kill must come while appends are still streaming"
    );
    sender.await.unwrap();
    let max_acked = acked.values().copied().max().unwrap_or_default();
    assert!(max_acked.0 >= KILL_AFTER_ACKED);

    sk.start();
    let c = sk.client().await;
    let state = get_state(&c).await;
    eprintln!(
        "killed with {killed_at_sent} records sent, acked {acked:?}; after restart: {:?}",
        state.segments
    );
    assert_eq!(state.epoch, 1, "the epoch survived the crash");
    for (segment, acked) in &acked {
        let scl = state.scl(segment.0);
        assert!(
            scl >= *acked,
            "segment {segment}: SCL {scl} after restart is below the acked {acked}"
        );
        let records = read_all(&c, segment.0, acked.0).await;
        let expected: Vec<_> = (1..=acked.0)
            .filter(|l| segment_of(*l) == *segment)
            .map(two_segment_record)
            .collect();
        assert_eq!(
            records.len(),
            expected.len(),
            "segment {segment}: every acked record is returned"
        );
        for (got, want) in records.iter().zip(&expected) {
            assert_eq!(
                got, want,
                "segment {segment}: record {} comes back intact",
                want.lsn
            );
        }
    }
    // The log is still writable after the crash: the next record of each segment extends it.
    let (client, mut acks) = sk.client_with_acks().await;
    hello(&client, 1, 0).await.unwrap();
    for segment in [0u32, 1] {
        let scl = state.scl(segment).0;
        let next = scl + 2;
        assert_eq!(segment_of(next), SegmentId(segment));
        append(&client, segment, 1, &[record(next, scl)]).await;
        wait_ack(&mut acks, segment, next).await;
    }
}
