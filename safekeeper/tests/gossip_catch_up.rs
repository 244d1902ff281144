//! Acceptance (b): a safekeeper that was down catches up with its peer through gossip alone;
//! a brand-new one learns the tenant (and its epoch) from a peer and copies its log.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_safekeeper_catches_up_through_gossip_alone() {
    let root = tempfile::tempdir().unwrap();
    let mut a = Sk::new("sk-a1", root.path());
    let mut b = Sk::new("sk-a2", root.path());
    let mut c = Sk::new("sk-b1", root.path());
    a.set_peers(&[&b]);
    b.set_peers(&[&a]);
    c.set_peers(&[&a]);
    a.start();
    b.start();

    // The writer says hello to both and ships records 1..=100 to both.
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

    // b goes down; a alone takes 101..=300.
    drop(wb);
    b.kill();
    for batch in chain(101, 300).chunks(10) {
        append(&wa, 0, 1, batch).await;
    }
    wait_ack(&mut acks_a, 0, 300).await;

    // b comes back, and a brand-new c starts with a as its peer. Nobody writes to them.
    b.start();
    c.start();
    let (cb, cc) = (b.client().await, c.client().await);
    for (name, client) in [("b", &cb), ("c", &cc)] {
        eventually(
            Duration::from_secs(8),
            &format!("{name} reaches SCL 300 by gossip"),
            || async { get_state(client).await.scl(0).0 == 300 },
        )
        .await;
        let state = get_state(client).await;
        assert_eq!(state.epoch, 1, "{name} holds the writer's epoch");
        let records = read_all(client, 0, 300).await;
        assert_eq!(
            records,
            chain(1, 300),
            "{name} holds every record, intact and in order"
        );
    }
    assert!(b.metric("safekeeper_gossip_records_repaired_total") >= 200);
    assert!(c.metric("safekeeper_gossip_records_repaired_total") >= 300);

    // b's /status shows the caught-up segment.
    let status: serde_json::Value = serde_json::from_str(&b.http_get("/status")).unwrap();
    assert_eq!(status["id"], "sk-a2");
    let seg = &status["tenants"][0]["segments"][0];
    assert_eq!(seg["scl"], 300);
    assert_eq!(seg["end_lsn"], 300);
    assert_eq!(seg["holes"], 0);
    assert_eq!(b.http_get("/healthz"), "ok");
}
