//! The real `pageserver` binary against in-process fake safekeepers: GetPage@LSN answers, the
//! bounded wait, and the safekeepers a pageserver must not trust (down, with a hole, at an older
//! epoch).

mod support;

use borealis_core::redo::RedoBody;
use borealis_core::{ErrorKind, Lsn, SegmentLayout, TenantId, PAGE_SIZE_BYTES};
use borealis_wire::WireError;
use std::time::{Duration, Instant};
use support::{
    free_addr, get_page, get_pages, hung_safekeeper, FakeLog, FakeSafekeeper, History,
    PageServerProcess,
};

const EPOCH: u64 = 3;
const PAGES_PER_SEGMENT: u32 = 4;

fn layout() -> SegmentLayout {
    SegmentLayout::new(PAGES_PER_SEGMENT)
}

/// Six safekeepers: one down, one with a hole in segment 0's log (claiming it complete), one at
/// an older epoch holding different records, one whose answers are corrupted, two good. Every page at many LSNs must equal the
/// model; a segment idle since long before the asked LSN, and a segment nobody ever wrote, must
/// be answered too (proved complete by a read quorum holding nothing newer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_every_page_at_every_lsn_and_skips_bad_safekeepers() {
    let tenant = TenantId(0xa);
    let mut h = History::new(layout(), 1);
    // Segments 0 and 1 until LSN 40, then only segment 0: segment 1 is idle from then on.
    for i in 0..40u32 {
        h.change(i * 7 % 8);
    }
    for i in 0..20u32 {
        h.change(i % 4);
    }
    let last = Lsn(h.records.len() as u64);
    let full = FakeLog {
        records: h.records.clone(),
        complete_upto: last,
        known_vdl: last,
    };

    let down = free_addr();
    let holey = FakeSafekeeper::start(EPOCH, layout()).await;
    let mut with_hole = full.clone();
    let hole_at = with_hole
        .records
        .iter()
        .filter(|r| r.page_no.0 < 4)
        .nth(10)
        .unwrap()
        .lsn;
    with_hole.records.retain(|r| r.lsn != hole_at);
    holey.set_log(tenant, with_hole);
    let stale = FakeSafekeeper::start(EPOCH - 1, layout()).await;
    let mut wrong = full.clone();
    for r in wrong.records.iter_mut().filter(|r| r.lsn > Lsn(5)) {
        r.body = RedoBody::Image(vec![0xee; PAGE_SIZE_BYTES]);
    }
    stale.set_log(tenant, wrong);
    let corrupt = FakeSafekeeper::start(EPOCH, layout()).await;
    corrupt.set_log(tenant, full.clone());
    corrupt.corrupt_reads();
    let mut good = Vec::new();
    for _ in 0..2 {
        let sk = FakeSafekeeper::start(EPOCH, layout()).await;
        sk.set_log(tenant, full.clone());
        good.push(sk);
    }
    let mut addrs = vec![
        down,
        holey.addr.clone(),
        stale.addr.clone(),
        corrupt.addr.clone(),
    ];
    addrs.extend(good.iter().map(|s| s.addr.clone()));

    let ps = PageServerProcess::start(
        &addrs,
        &["--pages-per-segment", "4", "--getpage-wait", "10s"],
    )
    .await;
    let c = ps.client().await;
    // Newest first, then older read points, then pages of an idle and of an unwritten segment.
    for lsn in [last.0, 1, 7, hole_at.0 - 1, hole_at.0, 33, 40, 41, 52] {
        for page in 0..8u32 {
            let got = get_page(&c, tenant, page, Lsn(lsn), EPOCH).await.unwrap();
            assert_eq!(got, h.page_at(page, Lsn(lsn)), "page {page} at lsn {lsn}");
        }
    }
    for page in [9u32, 12, 40] {
        let got = get_page(&c, tenant, page, last, EPOCH).await.unwrap();
        assert_eq!(got, None, "page {page} was never written");
    }
    // The same pages by segment in one GetPages each: the same answers.
    for lsn in [last.0, 7, hole_at.0, 41] {
        for first in [0u32, 4, 8] {
            let pages: Vec<u32> = (first..first + 4).collect();
            let got = get_pages(&c, tenant, &pages, Lsn(lsn), EPOCH)
                .await
                .unwrap();
            let model: Vec<_> = pages.iter().map(|&p| Ok(h.page_at(p, Lsn(lsn)))).collect();
            assert_eq!(got, model, "pages {pages:?} at lsn {lsn}");
        }
    }
    assert!(
        ps.metric("pageserver_chain_holes_total").await >= 1.0,
        "the hole was never seen"
    );
    assert!(ps.metric("pageserver_quorum_proofs_total").await >= 1.0);
    assert!(
        stale.read_logs() > 0,
        "the stale safekeeper was never asked"
    );
    assert!(
        corrupt.read_logs() > 0,
        "the corrupting safekeeper was never asked"
    );

    let status = ps.status().await;
    let t = &status["tenants"][0];
    assert_eq!(t["tenant"], "000000000000000a");
    assert_eq!(t["vouched_vdl"], last.0);
    let seg0 = &t["segments"][0];
    assert_eq!(seg0["caught_up_to"], last.0);
    assert_eq!(seg0["pages"], 4);
}

/// A GetPage at an LSN that no safekeeper can prove complete (records above a hole, everyone
/// behind) waits the configured bound and answers Unavailable; the pageserver keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn getpage_above_what_exists_times_out_unavailable() {
    let tenant = TenantId(0xb);
    let mut h = History::new(layout(), 2);
    for i in 0..10u32 {
        h.change(i % 3);
    }
    let mut sks = Vec::new();
    for _ in 0..3 {
        let sk = FakeSafekeeper::start(EPOCH, layout()).await;
        // Every safekeeper misses LSN 11..19 but holds 20: complete only up to 10.
        let mut records = h.records.clone();
        let mut h2 = History::new(layout(), 2);
        for i in 0..20u32 {
            h2.change(i % 3);
        }
        records.push(h2.records[19].clone());
        sk.set_log(
            tenant,
            FakeLog {
                records,
                complete_upto: Lsn(10),
                known_vdl: Lsn(10),
            },
        );
        sks.push(sk);
    }
    let addrs: Vec<String> = sks.iter().map(|s| s.addr.clone()).collect();
    let ps = PageServerProcess::start(
        &addrs,
        &["--pages-per-segment", "4", "--getpage-wait", "1s"],
    )
    .await;
    let c = ps.client().await;
    assert_eq!(
        get_page(&c, tenant, 1, Lsn(10), EPOCH).await.unwrap(),
        h.page_at(1, Lsn(10))
    );

    let started = Instant::now();
    let err = get_page(&c, tenant, 1, Lsn(25), EPOCH).await.unwrap_err();
    let waited = started.elapsed();
    match err {
        WireError::Remote { kind, message } => {
            assert_eq!(kind, ErrorKind::Unavailable, "{message}");
            assert!(message.contains("applied up to lsn 10"), "{message}");
        }
        other => panic!("expected a remote error, got {other}"),
    }
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Still serving, and the timed-out read left nothing wrong behind.
    assert_eq!(
        get_page(&c, tenant, 2, Lsn(9), EPOCH).await.unwrap(),
        h.page_at(2, Lsn(9))
    );
    assert!(
        ps.metric("pageserver_getpage_total{result=\"timeout\"}")
            .await
            >= 1.0
    );
}

/// Records above the VDL are never applied: with `known_vdl` 20 and records up to 30 on every
/// safekeeper, the background follower stops at 20, and a GetPage at 20 sees nothing newer. Once
/// a GetPage vouches for 30, it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_applies_above_the_durable_point() {
    let tenant = TenantId(0xc);
    let mut h = History::new(layout(), 3);
    for i in 0..30u32 {
        h.change(i % 4);
    }
    let mut sks = Vec::new();
    for _ in 0..2 {
        let sk = FakeSafekeeper::start(EPOCH, layout()).await;
        sk.set_log(
            tenant,
            FakeLog {
                records: h.records.clone(),
                complete_upto: Lsn(30),
                known_vdl: Lsn(20),
            },
        );
        sks.push(sk);
    }
    let addrs: Vec<String> = sks.iter().map(|s| s.addr.clone()).collect();
    let ps = PageServerProcess::start(&addrs, &["--pages-per-segment", "4"]).await;
    let c = ps.client().await;
    assert_eq!(
        get_page(&c, tenant, 0, Lsn(5), EPOCH).await.unwrap(),
        h.page_at(0, Lsn(5))
    );

    // The background follower reaches the safekeepers' known VDL, and stops there.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = ps.status().await;
        let seg = &status["tenants"][0]["segments"][0];
        let caught = seg["caught_up_to"].as_u64().unwrap();
        assert!(caught <= 20, "applied above the durable point: {seg}");
        if caught == 20 {
            assert_eq!(seg["last_applied"], 20, "{seg}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background follow never reached known_vdl: {seg}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = ps.status().await;
    assert_eq!(status["tenants"][0]["segments"][0]["caught_up_to"], 20);
    assert!(ps.metric("pageserver_records_applied_total").await <= 20.0);

    for page in 0..4 {
        assert_eq!(
            get_page(&c, tenant, page, Lsn(20), EPOCH).await.unwrap(),
            h.page_at(page, Lsn(20))
        );
    }
    for page in 0..4 {
        assert_eq!(
            get_page(&c, tenant, page, Lsn(30), EPOCH).await.unwrap(),
            h.page_at(page, Lsn(30))
        );
    }
    assert_eq!(
        ps.status().await["tenants"][0]["segments"][0]["caught_up_to"],
        30
    );
}

/// Many GetPages pipelined on one connection, some waiting for the log, all answered correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_by_id() {
    let tenant = TenantId(0xd);
    let mut h = History::new(layout(), 4);
    for i in 0..50u32 {
        h.change(i % 8);
    }
    let sk = FakeSafekeeper::start(EPOCH, layout()).await;
    sk.set_log(
        tenant,
        FakeLog {
            records: h.records.clone(),
            complete_upto: Lsn(50),
            known_vdl: Lsn(1),
        },
    );
    let ps = PageServerProcess::start(
        std::slice::from_ref(&sk.addr),
        &["--pages-per-segment", "4", "--cache-pages", "3"],
    )
    .await;
    let c = ps.client().await;
    let asks: Vec<(u32, u64)> = (0..64u64)
        .map(|i| ((i * 5 % 8) as u32, 50 - i * 3 % 50))
        .collect();
    let answers = futures_join(&c, tenant, &asks).await;
    for ((page, lsn), got) in asks.iter().zip(answers) {
        assert_eq!(got, h.page_at(*page, Lsn(*lsn)), "page {page} at lsn {lsn}");
    }
}

async fn futures_join(
    c: &borealis_wire::Client,
    tenant: TenantId,
    asks: &[(u32, u64)],
) -> Vec<Option<Vec<u8>>> {
    let mut set = Vec::new();
    for &(page, lsn) in asks {
        set.push(get_page(c, tenant, page, Lsn(lsn), EPOCH));
    }
    let mut out = Vec::new();
    // Polled together: all requests are on the wire before the first answer is awaited.
    let results = join_all(set).await;
    for r in results {
        out.push(r.unwrap());
    }
    out
}

/// A minimal join_all (the crate has no `futures` dependency).
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future completed"))
        .collect()
}

/// A read point older than the versions a page retains is refused as "lsn too old" (Invalid),
/// never answered with another version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_point_older_than_retained_versions_is_invalid() {
    let tenant = TenantId(0xe);
    let mut h = History::new(layout(), 5);
    let retained = pageserver::pages::VERSIONS_PER_PAGE_MAX as u64;
    let changes = retained + 20;
    for _ in 0..changes {
        h.change(0);
    }
    h.change(1);
    let last = Lsn(h.records.len() as u64);
    let sk = FakeSafekeeper::start(EPOCH, layout()).await;
    sk.set_log(
        tenant,
        FakeLog {
            records: h.records.clone(),
            complete_upto: last,
            known_vdl: last,
        },
    );
    let ps = PageServerProcess::start(
        std::slice::from_ref(&sk.addr),
        &["--pages-per-segment", "4"],
    )
    .await;
    let c = ps.client().await;
    assert_eq!(
        get_page(&c, tenant, 0, last, EPOCH).await.unwrap(),
        h.page_at(0, last)
    );
    let oldest_kept = Lsn(changes - retained + 1);
    assert_eq!(
        get_page(&c, tenant, 0, oldest_kept, EPOCH).await.unwrap(),
        h.page_at(0, oldest_kept)
    );
    match get_page(&c, tenant, 0, Lsn(oldest_kept.0 - 1), EPOCH).await {
        Err(WireError::Remote {
            kind: ErrorKind::Invalid,
            message,
        }) => {
            assert!(message.contains("too old"), "{message}")
        }
        other => panic!("expected lsn too old, got {other:?}"),
    }
    // Page 1 was first written at the last LSN: before that it did not exist (not "too old").
    assert_eq!(get_page(&c, tenant, 1, Lsn(3), EPOCH).await.unwrap(), None);

    // GetPages answers each page as GetPage does, "too old" as that page's own entry.
    let batch = get_pages(&c, tenant, &[0, 1, 2, 3], last, EPOCH)
        .await
        .unwrap();
    let expected: Vec<_> = (0..4).map(|p| Ok(h.page_at(p, last))).collect();
    assert_eq!(batch, expected);
    assert!(batch[0].as_ref().unwrap().is_some() && batch[2] == Ok(None));
    let old = Lsn(oldest_kept.0 - 1);
    let batch = get_pages(&c, tenant, &[0, 1, 3], old, EPOCH).await.unwrap();
    match &batch[0] {
        Err((ErrorKind::Invalid, message)) => assert!(message.contains("too old"), "{message}"),
        other => panic!("expected page 0 too old, got {other:?}"),
    }
    assert_eq!(batch[1..], [Ok(None), Ok(None)]);
    // A request of the wrong shape is refused whole, and the connection goes on.
    let too_many: Vec<u32> = (0..=borealis_wire::PAGES_PER_BATCH_MAX as u32).collect();
    for (pages, why) in [
        (&[][..], "no pages"),
        (&[1, 0][..], "ascending"),
        (&[1, 1][..], "ascending"),
        (&[3, 4][..], "span segments"),
        (&too_many[..], "at most"),
    ] {
        match get_pages(&c, tenant, pages, last, EPOCH).await {
            Err(WireError::Remote {
                kind: ErrorKind::Invalid,
                message,
            }) => assert!(message.contains(why), "{pages:?}: {message}"),
            other => panic!("{pages:?}: expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(
        get_pages(&c, tenant, &[0], last, EPOCH).await.unwrap(),
        [Ok(h.page_at(0, last))]
    );
    assert!(ps.metric("pageserver_getpages_total").await >= 3.0);
}

/// A follower with nothing to do goes dormant (stops polling safekeepers), and a GetPage that
/// needs newer log wakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_follower_goes_dormant_and_a_getpage_wakes_it() {
    let tenant = TenantId(0xf);
    let mut h = History::new(layout(), 6);
    for i in 0..20u32 {
        h.change(i % 4);
    }
    let sk = FakeSafekeeper::start(EPOCH, layout()).await;
    let first: Vec<_> = h.records[..10].to_vec();
    sk.set_log(
        tenant,
        FakeLog {
            records: first,
            complete_upto: Lsn(10),
            known_vdl: Lsn(10),
        },
    );
    let ps = PageServerProcess::start(
        std::slice::from_ref(&sk.addr),
        &["--pages-per-segment", "4", "--dormant-after", "300ms"],
    )
    .await;
    let c = ps.client().await;
    assert_eq!(
        get_page(&c, tenant, 0, Lsn(10), EPOCH).await.unwrap(),
        h.page_at(0, Lsn(10))
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while ps.status().await["tenants"][0]["segments"][0]["dormant"] != true {
        assert!(Instant::now() < deadline, "the follower never went dormant");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dormant: no more reads (a parked poll may still finish, so allow for it first).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reads = sk.read_logs();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sk.read_logs(), reads, "a dormant follower kept polling");

    sk.set_log(
        tenant,
        FakeLog {
            records: h.records.clone(),
            complete_upto: Lsn(20),
            known_vdl: Lsn(20),
        },
    );
    for page in 0..4 {
        assert_eq!(
            get_page(&c, tenant, page, Lsn(20), EPOCH).await.unwrap(),
            h.page_at(page, Lsn(20))
        );
    }
    assert_eq!(
        ps.status().await["tenants"][0]["segments"][0]["dormant"],
        false
    );
}

/// A safekeeper that accepts connections but never answers is left for another well within a
/// GetPage's wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_safekeeper_is_left_within_the_wait() {
    let tenant = TenantId(0x10);
    let mut h = History::new(layout(), 7);
    for i in 0..10u32 {
        h.change(i % 4);
    }
    let hung = hung_safekeeper().await;
    let good = FakeSafekeeper::start(EPOCH, layout()).await;
    good.set_log(
        tenant,
        FakeLog {
            records: h.records.clone(),
            complete_upto: Lsn(10),
            known_vdl: Lsn(10),
        },
    );
    let ps =
        PageServerProcess::start(&[hung, good.addr.clone()], &["--pages-per-segment", "4"]).await;
    let c = ps.client().await;
    let started = Instant::now();
    assert_eq!(
        get_page(&c, tenant, 2, Lsn(10), EPOCH).await.unwrap(),
        h.page_at(2, Lsn(10))
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
