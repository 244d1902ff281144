//! The wire protocol's finer points against a real process: holes, waiting reads, duplicates,
//! read limits, corrupt appends, unknown tenants.

mod common;

use borealis_core::{ErrorKind, Lsn, SegmentId, TenantId};
use borealis_wire::{Body, WireError};
use common::*;
use std::time::{Duration, Instant};

fn read(tenant: TenantId, after: u64, upto: u64, max_bytes: u32, wait_ms: u32) -> Body {
    Body::ReadLog {
        tenant,
        segment: SegmentId(0),
        epoch: None,
        min_epoch: 0,
        after: Lsn(after),
        upto: Lsn(upto),
        max_bytes,
        wait_ms,
    }
}

fn records_of(answer: Body) -> (Vec<u64>, Lsn) {
    match answer {
        Body::Records { records, scl, .. } => {
            let lsns = borealis_core::redo::RedoRecord::decode_all(&records)
                .unwrap()
                .iter()
                .map(|r| r.lsn.0)
                .collect();
            (lsns, scl)
        }
        other => panic!("unexpected answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn holes_waiting_reads_duplicates_and_refusals() {
    let root = tempfile::tempdir().unwrap();
    let mut sk = Sk::new("sk-a1", root.path());
    sk.start();
    let (w, mut acks) = sk.client_with_acks().await;
    let reader = sk.client().await;

    // An unknown tenant holds nothing: not an error.
    let (lsns, scl) = records_of(
        reader
            .call(read(TenantId(404), 0, 10, 1 << 20, 0), T)
            .await
            .unwrap(),
    );
    assert_eq!((lsns, scl), (vec![], Lsn(0)));
    // Appends before any Hello are refused: the writer must announce its epoch.
    let early = Body::Append {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: 1,
        vdl: Lsn(0),
        records: encode(&chain(1, 1)),
    };
    assert!(matches!(
        w.call(early, T).await,
        Err(WireError::Remote {
            kind: ErrorKind::Invalid,
            ..
        })
    ));

    hello(&w, 1, 0).await.unwrap();
    // A read that waits is answered as soon as a record arrives.
    let waiting = {
        let reader = sk.client().await;
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = reader
                .call(read(TENANT, 0, 100, 1 << 20, 4000), T)
                .await
                .unwrap();
            (records_of(answer), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&w, 0, 1, &chain(1, 5)).await;
    let ((lsns, _), waited) = waiting.await.unwrap();
    assert_eq!(lsns, vec![1, 2, 3, 4, 5]);
    assert!(
        waited < Duration::from_millis(3000),
        "answered when the records came, not at the deadline: {waited:?}"
    );
    wait_ack(&mut acks, 0, 5).await;

    // A hole (6 and 7 lost in transit): 8..=10 are held but neither acked nor served.
    append(&w, 0, 1, &chain(8, 10)).await;
    append(&w, 0, 1, &chain(1, 2)).await; // a duplicate, to get an ack for this point in time
    wait_ack(&mut acks, 0, 5).await;
    let (lsns, scl) = records_of(
        reader
            .call(read(TENANT, 0, 100, 1 << 20, 0), T)
            .await
            .unwrap(),
    );
    assert_eq!((lsns, scl), (vec![1, 2, 3, 4, 5], Lsn(5)));
    let status: serde_json::Value = serde_json::from_str(&sk.http_get("/status")).unwrap();
    let seg = &status["tenants"][0]["segments"][0];
    assert_eq!(
        (
            seg["scl"].as_u64(),
            seg["end_lsn"].as_u64(),
            seg["holes"].as_u64()
        ),
        (Some(5), Some(10), Some(1))
    );

    // The hole is filled: the SCL jumps to 10 and the writer is told.
    append(&w, 0, 1, &chain(6, 7)).await;
    wait_ack(&mut acks, 0, 10).await;
    // Resending what is held is harmless and still acknowledged (a writer after a reconnect).
    append(&w, 0, 1, &chain(1, 10)).await;
    wait_ack(&mut acks, 0, 10).await;
    assert_eq!(read_all(&reader, 0, 10).await, chain(1, 10));

    // Reads honour upto and max_bytes (but always return at least one record).
    let (lsns, _) = records_of(
        reader
            .call(read(TENANT, 2, 4, 1 << 20, 0), T)
            .await
            .unwrap(),
    );
    assert_eq!(lsns, vec![3, 4]);
    let (lsns, _) = records_of(reader.call(read(TENANT, 0, 10, 1, 0), T).await.unwrap());
    assert_eq!(lsns, vec![1]);

    // A reader demanding a newer epoch than this safekeeper's is refused.
    let mut demanding = read(TENANT, 0, 10, 1 << 20, 0);
    if let Body::ReadLog { min_epoch, .. } = &mut demanding {
        *min_epoch = 2;
    }
    assert!(matches!(
        reader.call(demanding, T).await,
        Err(WireError::Remote {
            kind: ErrorKind::Fenced,
            ..
        })
    ));

    // A corrupt append is refused with its request id, and nothing of it is stored.
    let mut bytes = encode(&chain(11, 12));
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let corrupt = Body::Append {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch: 1,
        vdl: Lsn(0),
        records: bytes,
    };
    assert!(matches!(
        w.call(corrupt, T).await,
        Err(WireError::Remote {
            kind: ErrorKind::Corrupt,
            ..
        })
    ));
    assert_eq!(get_state(&reader).await.segments[0].end_lsn, Lsn(10));

    let metrics = sk.http_get("/metrics");
    assert!(
        metrics.contains("safekeeper_append_ack_latency_seconds_count"),
        "{metrics}"
    );
    assert!(sk.metric("safekeeper_fsyncs_total") >= 3);
    assert!(sk.metric("safekeeper_appends_refused_total") >= 2);
}
