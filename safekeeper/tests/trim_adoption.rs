//! A member behind its peers' trim point adopts it: a safekeeper whose disk was replaced (or
//! that was down, or never up, while the others trimmed) cannot be filled below the peers' trim
//! point, because those records are gone there (checkpointed to object storage). It takes the
//! peers' trim point as its own base, fetches everything above it from them, reports the same
//! SCL and last CPL as they do, and keeps all of that across a crash.

mod common;

use borealis_core::redo::RedoRecord;
use borealis_core::{Lsn, SegmentId};
use borealis_wire::{Body, Client, WireError};
use common::*;
use std::time::Duration;

/// Sends `Trim` as a pageserver does once its checkpoint at `upto` is durable.
async fn trim(c: &Client, epoch: u64, upto: u64) -> Lsn {
    let body = Body::Trim {
        tenant: TENANT,
        segment: SegmentId(0),
        epoch,
        upto: Lsn(upto),
    };
    match c.call(body, T).await.expect("trim") {
        Body::Trimmed { base } => base,
        other => panic!("unexpected answer to trim: {other:?}"),
    }
}

/// Every record of segment 0 in `(after, upto]` the safekeeper serves.
async fn read_from(c: &Client, after: u64, upto: u64) -> Result<Vec<RedoRecord>, WireError> {
    let mut out: Vec<RedoRecord> = Vec::new();
    loop {
        let from = out.last().map_or(Lsn(after), |r| r.lsn);
        let body = Body::ReadLog {
            tenant: TENANT,
            segment: SegmentId(0),
            epoch: None,
            min_epoch: 0,
            after: from,
            upto: Lsn(upto),
            max_bytes: 1 << 20,
            wait_ms: 0,
        };
        match c.call(body, T).await? {
            Body::Records { records, .. } => {
                let batch = RedoRecord::decode_all(&records).expect("records decode");
                if batch.is_empty() {
                    return Ok(out);
                }
                out.extend(batch);
            }
            Body::LogTrimmed { base, last_cpl } => {
                return Err(WireError::Unexpected(format!(
                    "log_trimmed: trimmed through lsn {base} with last cpl {last_cpl}"
                )))
            }
            other => panic!("unexpected answer to read_log: {other:?}"),
        }
    }
}

/// `(base, scl, last_cpl, holes)` of segment 0 on `/status`.
fn status_of(sk: &Sk) -> (u64, u64, u64, u64) {
    let status: serde_json::Value =
        serde_json::from_str(&sk.http_get("/status")).expect("/status is JSON");
    let seg = &status["tenants"][0]["segments"][0];
    let field = |name: &str| {
        seg[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} missing from /status: {status}"))
    };
    (
        field("base"),
        field("scl"),
        field("last_cpl"),
        field("holes"),
    )
}

/// What a caught-up member must show after adopting the trim point `base` and filling up to
/// `scl`: the base and SCL on `/status` and in `GetState`, every record above the base intact,
/// reads below the base refused naming the adopted trim point, and a segment file holding only
/// the records above the base.
async fn assert_rebuilt(sk: &Sk, base: u64, scl: u64, last_cpl: u64) {
    let c = sk.client().await;
    let state = get_state(&c).await;
    assert_eq!(state.epoch, 1, "{}: the writer's epoch", sk.id);
    assert_eq!(state.scl(0), Lsn(scl), "{}: SCL", sk.id);
    assert_eq!(
        state.segments[0].last_cpl,
        Lsn(last_cpl),
        "{}: last CPL",
        sk.id
    );
    assert_eq!(
        status_of(sk),
        (base, scl, last_cpl, 0),
        "{}: /status",
        sk.id
    );
    assert_eq!(
        read_from(&c, base, scl).await.expect("read above the base"),
        chain(base + 1, scl),
        "{}: every record above the base, intact and in order",
        sk.id
    );
    match read_from(&c, 0, scl).await {
        Err(WireError::Unexpected(message)) => {
            assert!(
                message.contains(&format!(
                    "trimmed through lsn {base} with last cpl {}",
                    base - base % 3
                )),
                "{}: {message}",
                sk.id
            );
        }
        other => panic!(
            "{}: a read below the base must be refused: {other:?}",
            sk.id
        ),
    }
    let bytes = std::fs::metadata(sk.segment_file(TENANT, 0))
        .expect("segment file")
        .len() as usize;
    assert_eq!(bytes, encode(&chain(base + 1, scl)).len(), "{}", sk.id);
}

/// SIGKILL, then a restart without peers (no gossip can repair what the crash lost), and the
/// state checked as [`assert_rebuilt`]. Leaves `sk` running without peers.
async fn crash_and_check_alone(sk: &mut Sk, base: u64, scl: u64, last_cpl: u64) {
    sk.kill();
    sk.set_peers(&[]);
    sk.start();
    assert_rebuilt(sk, base, scl, last_cpl).await;
}

async fn wait_scl(sk: &Sk, scl: u64) {
    let c = sk.client().await;
    eventually(
        Duration::from_secs(10),
        &format!("{} reaches SCL {scl} by gossip", sk.id),
        || async { get_state(&c).await.scl(0) == Lsn(scl) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_member_adopts_its_peers_trim_point_and_refills_above_it() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Sk::new("sk-a1", root.path());
    let mut b = Sk::new("sk-a2", root.path());
    let mut c = Sk::new("sk-b1", root.path());
    a.set_peers(&[&b, &c]);
    b.set_peers(&[&a, &c]);
    c.set_peers(&[&a, &b]);
    a.start();
    b.start();
    c.start();

    let (wa, mut acks_a) = a.client_with_acks().await;
    let (wb, mut acks_b) = b.client_with_acks().await;
    let (wc, mut acks_c) = c.client_with_acks().await;
    for w in [&wa, &wb, &wc] {
        hello(w, 1, 0).await.unwrap();
    }
    for batch in chain(1, 100).chunks(10) {
        for w in [&wa, &wb, &wc] {
            append(w, 0, 1, batch).await;
        }
    }
    wait_ack(&mut acks_a, 0, 100).await;
    wait_ack(&mut acks_b, 0, 100).await;
    wait_ack(&mut acks_c, 0, 100).await;
    for w in [&wa, &wb, &wc] {
        assert_eq!(trim(w, 1, 60).await, Lsn(60));
    }

    // c's disk is replaced: killed, its data directory deleted.
    drop(wc);
    c.kill();
    std::fs::remove_dir_all(&c.data_dir).unwrap();

    // Meanwhile the log goes on and the pageserver checkpoints again, on a and b.
    for batch in chain(101, 150).chunks(10) {
        append(&wa, 0, 1, batch).await;
        append(&wb, 0, 1, batch).await;
    }
    wait_ack(&mut acks_a, 0, 150).await;
    wait_ack(&mut acks_b, 0, 150).await;
    assert_eq!(trim(&wa, 1, 121).await, Lsn(121));
    assert_eq!(trim(&wb, 1, 121).await, Lsn(121));

    // c starts empty: it learns the epoch, is refused below 121, adopts 121, fetches the rest.
    // It knows its disk was replaced (no log, no new-node marker), so it answers no GetState
    // until it holds what its peers hold (`safekeeper::rebuild`).
    c.start();
    eventually(Duration::from_secs(10), "sk-b1 is rebuilt", || async {
        c.metric("safekeeper_rebuilding") == 0
    })
    .await;
    for line in [
        "this node's disk was replaced",
        "rebuilt: this node holds what its peers held",
    ] {
        assert!(c.logs().contains(line), "{line:?} is logged:\n{}", c.logs());
    }
    wait_scl(&c, 150).await;
    assert_rebuilt(&c, 121, 150, 150).await;
    assert_eq!(c.metric("safekeeper_trim_points_adopted_total"), 1);
    assert!(c.metric("safekeeper_gossip_trimmed_refusals_total") >= 1);
    assert_eq!(c.metric("safekeeper_gossip_records_repaired_total"), 29);
    assert!(
        c.logs()
            .contains("adopted the peer's trim point as our base"),
        "the adoption is logged:\n{}",
        c.logs()
    );

    // A crash right after: the adopted trim point and everything fetched above it survive (seen
    // first without peers, so gossip could not have repaired anything), and nothing is adopted
    // again.
    crash_and_check_alone(&mut c, 121, 150, 150).await;
    c.set_peers(&[&a, &b]);
    c.kill();
    c.start();
    assert_rebuilt(&c, 121, 150, 150).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.metric("safekeeper_trim_points_adopted_total"), 0);
    assert_eq!(c.metric("safekeeper_gossip_trimmed_refusals_total"), 0);

    // c is a full member again: the writer's next records chain onto what it holds, and a later
    // trim works on the adopted chain as on any other.
    let (wc, mut acks_c) = c.client_with_acks().await;
    hello(&wc, 1, 0).await.unwrap();
    append(&wc, 0, 1, &chain(151, 160)).await;
    wait_ack(&mut acks_c, 0, 160).await;
    assert_eq!(trim(&wc, 1, 140).await, Lsn(140));
    assert_eq!(read_from(&wc, 140, 160).await.unwrap(), chain(141, 160));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_down_or_never_up_while_the_peers_trimmed_adopt_their_trim_point() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Sk::new("sk-a1", root.path());
    let mut b = Sk::new("sk-a2", root.path());
    let mut c = Sk::new("sk-b1", root.path());
    let mut d = Sk::new("sk-b2", root.path());
    a.set_peers(&[&b, &c, &d]);
    b.set_peers(&[&a, &c, &d]);
    c.set_peers(&[&a, &b, &d]);
    d.set_peers(&[&a, &b, &c]);
    a.start();
    b.start();
    c.start();

    // c takes 1..=40, then goes down for a long time.
    let (wa, mut acks_a) = a.client_with_acks().await;
    let (wb, mut acks_b) = b.client_with_acks().await;
    let (wc, mut acks_c) = c.client_with_acks().await;
    for w in [&wa, &wb, &wc] {
        hello(w, 1, 0).await.unwrap();
    }
    for batch in chain(1, 40).chunks(10) {
        for w in [&wa, &wb, &wc] {
            append(w, 0, 1, batch).await;
        }
    }
    wait_ack(&mut acks_c, 0, 40).await;
    drop(wc);
    c.kill();

    // a and b go on to 100 and trim through 60.
    for batch in chain(41, 100).chunks(10) {
        append(&wa, 0, 1, batch).await;
        append(&wb, 0, 1, batch).await;
    }
    wait_ack(&mut acks_a, 0, 100).await;
    wait_ack(&mut acks_b, 0, 100).await;
    assert_eq!(trim(&wa, 1, 60).await, Lsn(60));
    assert_eq!(trim(&wb, 1, 60).await, Lsn(60));

    // c comes back holding 1..=40; d, never up before, starts with nothing.
    c.start();
    d.start();
    for sk in [&c, &d] {
        wait_scl(sk, 100).await;
        assert_rebuilt(sk, 60, 100, 99).await;
        assert_eq!(
            sk.metric("safekeeper_trim_points_adopted_total"),
            1,
            "{}",
            sk.id
        );
    }
    // c dropped its 40 records below the adopted base, and fetched only what lies above it.
    assert_eq!(c.metric("safekeeper_gossip_records_repaired_total"), 40);

    for sk in [&mut c, &mut d] {
        crash_and_check_alone(sk, 60, 100, 99).await;
    }
}
