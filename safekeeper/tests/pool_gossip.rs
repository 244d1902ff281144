//! A pool of nine safekeepers (`--pool`, RFC 0008 §3): gossip fills a segment among the six of
//! its protection group, and never brings it (or its tenant's epoch) to the three others.

mod common;

use borealis_core::placement::{choose_group, ordered_pool_azs};
use borealis_core::{Lsn, SegmentId};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gossip_fills_a_segment_within_its_group_and_nowhere_else() {
    let root = tempfile::tempdir().unwrap();
    // AZ by AZ: sk-a1..a3, sk-b1..b3, sk-c1..c3.
    let mut sks: Vec<Sk> = ["a", "b", "c"]
        .iter()
        .flat_map(|az| (1..=3).map(move |i| format!("sk-{az}{i}")))
        .map(|id| Sk::new(&id, root.path()))
        .collect();
    let pool = sks
        .iter()
        .map(|s| s.listen.clone())
        .collect::<Vec<_>>()
        .join(",");
    for i in 0..sks.len() {
        let (before, rest) = sks.split_at_mut(i);
        let (me, after) = rest.split_first_mut().expect("i < len");
        let others: Vec<&Sk> = before.iter().chain(after.iter()).collect();
        me.set_peers(&others);
        me.set_args(&["--pool", &pool]);
        me.start();
    }
    let group = choose_group(TENANT, SegmentId(0), &ordered_pool_azs(9).unwrap()).0;
    let outsiders: Vec<usize> = (0..9).filter(|n| !group.contains(n)).collect();
    assert_eq!(outsiders.len(), 3);

    // The writer reaches four members of segment 0's group only: hello, then records 1..=60.
    for &node in &group[..4] {
        let (c, mut acks) = sks[node].client_with_acks().await;
        hello(&c, 1, 0).await.unwrap();
        for batch in chain(1, 60).chunks(10) {
            append(&c, 0, 1, batch).await;
        }
        wait_ack(&mut acks, 0, 60).await;
    }

    // The other two members learn the epoch from their group and fetch the segment.
    for &node in &group[4..] {
        let c = sks[node].client().await;
        eventually(Duration::from_secs(20), "a member fills by gossip", || {
            let c = &c;
            async move {
                let s = get_state(c).await;
                s.epoch == 1 && s.scl(0) == Lsn(60)
            }
        })
        .await;
        assert_eq!(read_all(&c, 0, 60).await, chain(1, 60));
    }
    // Many gossip rounds later (100 ms each), the three others hold nothing of it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for &node in &outsiders {
        let c = sks[node].client().await;
        let s = get_state(&c).await;
        assert_eq!(
            (s.epoch, s.scl(0)),
            (0, Lsn(0)),
            "{} is not in segment 0's group {group:?}",
            sks[node].id
        );
        assert!(!sks[node].segment_file(TENANT, 0).exists());
        assert!(
            sks[node].logs().contains("member of a pool"),
            "{}",
            sks[node].logs()
        );
    }
}
