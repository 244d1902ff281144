//! The real `pageserver` binary with a `--safekeepers` pool of nine fake safekeepers (RFC 0008
//! §3): each segment lives on the six of its protection group only, and the pageserver must read
//! it, prove it complete and trim it there, never anywhere else.

mod support;

use borealis_core::placement::{choose_group, ordered_pool_azs};
use borealis_core::{Lsn, SegmentId, SegmentLayout, TenantId};
use std::time::{Duration, Instant};
use support::{get_page, FakeLog, FakeSafekeeper, History, PageServerProcess};

const EPOCH: u64 = 3;
const PAGES_PER_SEGMENT: u32 = 4;
const POOL: usize = 9;

fn layout() -> SegmentLayout {
    SegmentLayout::new(PAGES_PER_SEGMENT)
}

fn group(tenant: TenantId, segment: u32) -> Vec<usize> {
    let azs = ordered_pool_azs(POOL).unwrap();
    choose_group(tenant, SegmentId(segment), &azs).0.to_vec()
}

/// Nine safekeepers; segments 0 and 1 of the tenant are written (segment 1 idle after LSN 40).
/// Each safekeeper holds only the segments placed on it, and the first member of each group holds
/// its segment only half-way. A follower that read from, or counted the "nothing" of, a
/// safekeeper outside the group would answer old pages: three non-members hold nothing of the
/// segment, which is a read quorum of six but proves nothing. Every page must equal the model,
/// trims go to the group only, and `/status` names the group as the segment's sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_segment_is_read_proved_and_trimmed_on_its_own_group_only() {
    // A tenant whose two segments have different groups (most do: 27 group shapes).
    let tenant = (1..)
        .map(TenantId)
        .find(|&t| group(t, 0) != group(t, 1))
        .unwrap();
    let groups = [group(tenant, 0), group(tenant, 1)];
    let mut h = History::new(layout(), 5);
    for i in 0..40u32 {
        h.change(i * 7 % 8);
    }
    for i in 0..20u32 {
        h.change(i % 4);
    }
    let last = Lsn(h.records.len() as u64);

    let mut sks = Vec::new();
    for node in 0..POOL {
        let sk = FakeSafekeeper::start(EPOCH, layout()).await;
        // Only the segments placed on this node; the first member of a group half-way.
        let mut complete_upto = last;
        let records = h
            .records
            .iter()
            .filter(|r| {
                let segment = layout().segment_of(r.page_no).0 as usize;
                groups[segment].contains(&node)
            })
            .cloned()
            .collect();
        if groups.iter().any(|g| g[0] == node) {
            complete_upto = Lsn(last.0 / 2);
        }
        sk.set_log(
            tenant,
            FakeLog {
                records,
                complete_upto,
                known_vdl: complete_upto,
            },
        );
        sks.push(sk);
    }
    let addrs: Vec<String> = sks.iter().map(|s| s.addr.clone()).collect();
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let ps = PageServerProcess::start(
        &addrs,
        &[
            "--pages-per-segment",
            "4",
            "--getpage-wait",
            "10s",
            "--object-store",
            &store,
            "--checkpoint-records",
            "10",
            "--checkpoint-interval",
            "100ms",
        ],
    )
    .await;
    let c = ps.client().await;
    for lsn in [last.0, 1, 20, 40, 41, 55] {
        for page in 0..8u32 {
            let got = get_page(&c, tenant, page, Lsn(lsn), EPOCH).await.unwrap();
            assert_eq!(got, h.page_at(page, Lsn(lsn)), "page {page} at lsn {lsn}");
        }
    }

    // The status names each segment's group as its sources.
    let status = ps.status().await;
    let segments = status["tenants"][0]["segments"].as_array().unwrap().clone();
    for seg in &segments {
        let n = seg["segment"].as_u64().unwrap() as usize;
        let want: Vec<&str> = groups[n].iter().map(|&i| addrs[i].as_str()).collect();
        let got: Vec<&str> = seg["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(got, want, "segment {n}");
        assert!(want.contains(&seg["safekeeper"].as_str().unwrap()));
    }

    // Checkpoints trim every member of the segment's group, and nobody else.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all_told = (0..2u32).all(|s| {
            groups[s as usize].iter().all(|&node| {
                sks[node]
                    .trim_requests()
                    .iter()
                    .any(|t| t.tenant == tenant && t.segment == SegmentId(s))
            })
        });
        if all_told {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every member was told to trim: {:#}",
            ps.status().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (node, sk) in sks.iter().enumerate() {
        for t in sk.trim_requests() {
            assert!(
                groups[t.segment.0 as usize].contains(&node),
                "safekeeper {node} is not in segment {}'s group {:?} but was told {t:?}",
                t.segment,
                groups[t.segment.0 as usize]
            );
            assert_eq!(t.epoch, EPOCH);
        }
    }
}
