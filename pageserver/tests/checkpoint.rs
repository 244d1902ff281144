//! Checkpoints to object storage and restarts from them: the real `pageserver` binary against
//! in-process fake safekeepers (which drop the log they are told to trim, so a restarted
//! pageserver can only get it back from the checkpoint), checked against a reference model of
//! every page at every LSN.

mod support;

use borealis_core::{ErrorKind, Lsn, SegmentId, SegmentLayout, TenantId};
use borealis_wire::WireError;
use std::time::{Duration, Instant};
use support::{get_page, FakeLog, FakeSafekeeper, History, PageServerProcess, Rng};

const EPOCH: u64 = 2;
const PAGES_PER_SEGMENT: u32 = 4;
/// Pages written: segments 0, 1 and 2 (page 9 only); segment 3 is never written.
const PAGES: u32 = 10;

fn layout() -> SegmentLayout {
    SegmentLayout::new(PAGES_PER_SEGMENT)
}

fn log_upto(h: &History, upto: u64) -> FakeLog {
    FakeLog {
        records: h.records[..upto as usize].to_vec(),
        complete_upto: Lsn(upto),
        known_vdl: Lsn(upto),
    }
}

fn set_logs(sks: &[FakeSafekeeper], tenant: TenantId, h: &History, upto: u64) {
    for sk in sks {
        sk.set_log(tenant, log_upto(h, upto));
    }
}

/// Polls `/status` until `f` holds for it, at most `within`.
async fn wait_status(
    ps: &PageServerProcess,
    within: Duration,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let status = ps.status().await;
        if f(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {what}\n{status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The checkpoint part of segment `segment`'s status.
fn checkpoint_of(status: &serde_json::Value, segment: u32) -> serde_json::Value {
    status["tenants"][0]["segments"]
        .as_array()
        .and_then(|segs| segs.iter().find(|s| s["segment"] == segment))
        .map(|s| s["checkpoint"].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// The newest record of `segment` at or below `upto` (0: none): a checkpoint at any LSN from
/// there to `upto` covers the segment up to `upto`.
fn last_record(h: &History, segment: u32, upto: u64) -> u64 {
    h.records[..upto as usize]
        .iter()
        .filter(|r| layout().segment_of(r.page_no) == SegmentId(segment))
        .map(|r| r.lsn.0)
        .max()
        .unwrap_or(0)
}

/// Whether every written segment's `field` covers the log up to `upto`.
fn covers(status: &serde_json::Value, h: &History, field: &str, upto: u64) -> bool {
    written_segments().iter().all(|&seg| {
        let at = checkpoint_of(status, seg)[field].as_u64().unwrap_or(0);
        at >= last_record(h, seg, upto) && at <= upto
    })
}

fn written_segments() -> Vec<u32> {
    (0..PAGES.div_ceil(PAGES_PER_SEGMENT)).collect()
}

/// Asks `page` at `lsn`; the answer must be the model's, or — only for read points below
/// `too_old_below` — "lsn too old". Returns whether it was too old.
async fn check_page(
    c: &borealis_wire::Client,
    tenant: TenantId,
    h: &History,
    page: u32,
    lsn: u64,
    too_old_below: u64,
) -> bool {
    match get_page(c, tenant, page, Lsn(lsn), EPOCH).await {
        Ok(got) => {
            assert_eq!(got, h.page_at(page, Lsn(lsn)), "page {page} at lsn {lsn}");
            false
        }
        Err(WireError::Remote {
            kind: ErrorKind::Invalid,
            message,
        }) if lsn < too_old_below && message.contains("too old") => true,
        Err(e) => panic!("page {page} at lsn {lsn}: {e}"),
    }
}

/// Random records against the model: GetPage@LSN equals the model before and after checkpoints,
/// and after restarts with an empty disk (from the checkpoint plus the log tail); read points
/// below a restored checkpoint answer the model's page or "too old", never anything else; the
/// safekeepers are told to trim exactly what is checkpointed; a clean stop checkpoints what was
/// applied since the last checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_match_the_model_across_checkpoints_and_restarts() {
    for seed in [1u64, 2] {
        run_seed(seed).await;
    }
}

async fn run_seed(seed: u64) {
    let tenant = TenantId(0x100 + seed);
    let mut h = History::new(layout(), seed);
    let mut rng = Rng(seed * 7919);
    for _ in 0..330 {
        let page = rng.below(u64::from(PAGES)) as u32;
        h.change(page);
    }
    let mut sks = Vec::new();
    for _ in 0..3 {
        sks.push(FakeSafekeeper::start(EPOCH, layout()).await);
    }
    let addrs: Vec<String> = sks.iter().map(|s| s.addr.clone()).collect();
    set_logs(&sks, tenant, &h, 150);
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    // Without a retention window, a read point below the checkpoint restored from may be "too
    // old" (`changes_layers.rs` reads inside a window).
    let frequent = [
        "--pitr-window",
        "0s",
        "--pages-per-segment",
        "4",
        "--object-store",
        &store,
        "--checkpoint-records",
        "25",
        "--checkpoint-interval",
        "100ms",
    ];

    // 1. Before and after the first checkpoints.
    let ps = PageServerProcess::start(&addrs, &frequent).await;
    let c = ps.client().await;
    for page in 0..PAGES + 4 {
        check_page(&c, tenant, &h, page, 150, 0).await;
    }
    for _ in 0..100 {
        let (page, lsn) = (rng.below(u64::from(PAGES)) as u32, 1 + rng.below(150));
        check_page(&c, tenant, &h, page, lsn, 0).await;
    }
    let status = wait_status(&ps, Duration::from_secs(20), "checkpoints cover 150", |s| {
        covers(s, &h, "checkpointed_lsn", 150)
    })
    .await;
    let first: Vec<u64> = written_segments()
        .iter()
        .map(|&seg| {
            checkpoint_of(&status, seg)["checkpointed_lsn"]
                .as_u64()
                .unwrap()
        })
        .collect();
    for seg in written_segments() {
        let ck = checkpoint_of(&status, seg);
        assert_eq!(ck["generation"], 1, "{ck}");
        assert_eq!(ck["restored_from_generation"], serde_json::Value::Null);
    }
    // The never-written segment has nothing to checkpoint.
    assert_eq!(checkpoint_of(&status, 3)["checkpoints"], 0);
    // The safekeepers were told to trim, at the GetPages' epoch, and dropped the log.
    wait_status(&ps, Duration::from_secs(10), "trims answered", |s| {
        covers(s, &h, "trimmed_upto", 150)
    })
    .await;
    for sk in &sks {
        for seg in written_segments() {
            let base = sk.trimmed(tenant, SegmentId(seg));
            assert_eq!(base, Lsn(last_record(&h, seg, 150)), "segment {seg}");
            assert!(sk
                .held(tenant, SegmentId(seg))
                .iter()
                .all(|l| *l > Lsn(150)));
        }
        assert!(sk
            .trim_requests()
            .iter()
            .all(|t| t.epoch == EPOCH && t.upto <= Lsn(150)));
    }
    // Same answers after the checkpoint.
    for _ in 0..100 {
        let (page, lsn) = (rng.below(u64::from(PAGES)) as u32, 1 + rng.below(150));
        check_page(&c, tenant, &h, page, lsn, 0).await;
    }
    drop(c);
    drop(ps); // SIGKILL

    // 2. A restart with an empty disk: the checkpoint, then the log tail.
    set_logs(&sks, tenant, &h, 300);
    let ps = PageServerProcess::start(&addrs, &frequent).await;
    let c = ps.client().await;
    for lsn in [150u64, 151, 220, 300] {
        for page in 0..PAGES + 4 {
            check_page(&c, tenant, &h, page, lsn, 0).await;
        }
    }
    let (mut too_old, mut exact_below) = (0, 0);
    for _ in 0..300 {
        let (page, lsn) = (rng.below(u64::from(PAGES)) as u32, 1 + rng.below(300));
        let old = check_page(&c, tenant, &h, page, lsn, 150).await;
        too_old += usize::from(old);
        exact_below += usize::from(!old && lsn < 150);
    }
    assert!(
        too_old > 0,
        "no read point below the checkpoint was refused"
    );
    assert!(
        exact_below > 0,
        "no read point below the checkpoint was answered"
    );
    let status = wait_status(&ps, Duration::from_secs(20), "checkpoints cover 300", |s| {
        covers(s, &h, "checkpointed_lsn", 300)
    })
    .await;
    for (i, seg) in written_segments().into_iter().enumerate() {
        let ck = checkpoint_of(&status, seg);
        assert_eq!(ck["generation"], 2, "{ck}");
        assert_eq!(ck["restored_from_generation"], 1, "{ck}");
        assert_eq!(ck["restored_lsn"], first[i], "{ck}");
        assert_eq!(ck["stale"], false, "{ck}");
    }
    let second: Vec<u64> = written_segments()
        .iter()
        .map(|&seg| {
            checkpoint_of(&status, seg)["checkpointed_lsn"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(ps.metric("pageserver_restores_total").await >= 3.0);
    // Each generation keeps exactly the layer its index names (older ones were deleted once a
    // newer index was durable); the first generation's stays, the second may not delete it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for seg in written_segments() {
        let dir = objects
            .path()
            .join(format!("tenants/{tenant}/segments/{seg}/layers"));
        loop {
            let names: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let of = |g: &str| names.iter().filter(|n| n.ends_with(g)).count();
            if of("-00000001") == 1 && of("-00000002") == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "segment {seg}: layers {names:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    drop(c);
    drop(ps);

    // 3. A clean stop checkpoints what was applied since the last checkpoint.
    set_logs(&sks, tenant, &h, 330);
    let rare = [
        "--pages-per-segment",
        "4",
        "--object-store",
        &store,
        "--checkpoint-records",
        "100000",
        "--checkpoint-interval",
        "1h",
    ];
    let mut ps = PageServerProcess::start(&addrs, &rare).await;
    let c = ps.client().await;
    for page in 0..PAGES {
        check_page(&c, tenant, &h, page, 330, 0).await;
    }
    let status = ps.status().await;
    for (i, seg) in written_segments().into_iter().enumerate() {
        assert_eq!(checkpoint_of(&status, seg)["checkpointed_lsn"], second[i]);
    }
    drop(c);
    let exit = ps.terminate(Duration::from_secs(15));
    assert!(exit.success(), "{exit}");
    assert!(ps.log().contains("final checkpoints done"), "{}", ps.log());
    drop(ps);
    // Nothing more is served from the log below 330 (trimmed), so only the checkpoint can answer.
    for sk in &sks {
        for seg in written_segments() {
            let base = Lsn(last_record(&h, seg, 330));
            assert_eq!(sk.trimmed(tenant, SegmentId(seg)), base, "segment {seg}");
        }
    }
    let ps = PageServerProcess::start(&addrs, &rare).await;
    let c = ps.client().await;
    for page in 0..PAGES + 4 {
        check_page(&c, tenant, &h, page, 330, 0).await;
    }
    let status = ps.status().await;
    for (i, seg) in written_segments().into_iter().enumerate() {
        let ck = checkpoint_of(&status, seg);
        // Segments that took records in (300, 330] were checkpointed at the clean stop.
        let changed = last_record(&h, seg, 330) > 300;
        let expected = if changed { 330 } else { second[i] };
        assert_eq!(ck["restored_lsn"], expected, "segment {seg}: {ck}");
        assert_eq!(ck["generation"], 4, "{ck}");
    }
}

/// A workload far larger than `--cache-pages` keeps the cache within its bound (and the process
/// small): pages live in the local page file, not in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_its_bound_under_a_larger_workload() {
    let tenant = TenantId(0x200);
    let layout = SegmentLayout::default();
    let mut h = History::new(layout, 42);
    let pages = 4000u32;
    let changes = 48_000u32;
    for i in 0..changes {
        h.change((i * 7919) % pages);
    }
    let last = h.records.len() as u64;
    let sk = FakeSafekeeper::start(EPOCH, layout).await;
    sk.set_log(
        tenant,
        FakeLog {
            records: h.records.clone(),
            complete_upto: Lsn(last),
            known_vdl: Lsn(last),
        },
    );
    let cache_pages = 32;
    let ps = PageServerProcess::start(
        std::slice::from_ref(&sk.addr),
        &[
            "--cache-pages",
            &cache_pages.to_string(),
            "--getpage-wait",
            "60s",
            // The retention window's redo buffer is bounded on its own (`history.rs`, up to
            // 64 MiB a segment); this test is about the page cache.
            "--pitr-window",
            "0s",
        ],
    )
    .await;
    let c = ps.client().await;
    // What the process holds before the workload (code, runtime, one page read).
    check_page(&c, tenant, &h, 0, 1, 0).await;
    let rss_before = ps.rss_bytes();
    for page in (0..pages).step_by(7) {
        check_page(&c, tenant, &h, page, last, 0).await;
    }
    for page in (0..pages).step_by(13) {
        check_page(&c, tenant, &h, page, last / 2, 0).await;
    }
    let status = ps.status().await;
    assert_eq!(status["cache"]["capacity"], cache_pages);
    let held = status["cache"]["pages"].as_u64().unwrap();
    assert!(held <= cache_pages, "{}", status["cache"]);
    assert!(ps.metric("pageserver_page_cache_pages").await <= cache_pages as f64);
    assert!(ps.metric("pageserver_page_cache_misses_total").await > 0.0);
    // 48,000 page versions (187.5 MiB of images) went through; the process grew by a fraction
    // of that (what it holds besides the pages varies with the allocator and the machine, so
    // the growth is measured, not the total).
    let file_bytes = status["tenants"][0]["file_bytes"].as_u64().unwrap();
    assert!(file_bytes >= u64::from(changes) * 4096, "{file_bytes}");
    let rss = ps.rss_bytes();
    eprintln!(
        "resident memory {} MiB before the workload, {} MiB after",
        rss_before >> 20,
        rss >> 20
    );
    assert!(
        rss.saturating_sub(rss_before) < 24 * 1024 * 1024,
        "resident memory grew from {} MiB to {} MiB",
        rss_before >> 20,
        rss >> 20
    );
}

/// Two pageservers following one segment at once (split brain, Neon RFC 025): each writes under
/// its own generation, the older one notices the newer generation before it uploads its next
/// index and uploads and deletes nothing from then on, every layer an index names stays in place, and a third pageserver restores correctly from
/// whichever index is newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pageservers_on_one_segment_never_delete_what_an_index_names() {
    let tenant = TenantId(0x300);
    let mut h = History::new(layout(), 9);
    for i in 0..200u32 {
        h.change(i * 5 % 4);
    }
    let sk = FakeSafekeeper::start(EPOCH, layout()).await;
    let addrs = [sk.addr.clone()];
    sk.set_log(tenant, log_upto(&h, 100));
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let args = frequent_checkpoints(&store);
    let first = PageServerProcess::start(&addrs, &args).await;
    let c1 = first.client().await;
    for page in 0..4 {
        check_page(&c1, tenant, &h, page, 100, 0).await;
    }
    wait_status(&first, Duration::from_secs(20), "first checkpoint", |s| {
        checkpoint_of(s, 0)["checkpointed_lsn"] == 100
    })
    .await;
    let second = PageServerProcess::start(&addrs, &args).await;
    let c2 = second.client().await;
    for page in 0..4 {
        check_page(&c2, tenant, &h, page, 100, 0).await;
    }
    assert_eq!(checkpoint_of(&second.status().await, 0)["generation"], 2);

    // Both go on following the same log; the second checkpoints it, the first finds its claim
    // superseded before it uploads an index and uploads nothing more (it is stale).
    sk.set_log(tenant, log_upto(&h, 200));
    for (_, c) in [(&first, &c1), (&second, &c2)] {
        for page in 0..4 {
            check_page(c, tenant, &h, page, 200, 0).await;
        }
    }
    wait_status(&second, Duration::from_secs(20), "checkpointed 200", |s| {
        checkpoint_of(s, 0)["checkpointed_lsn"] == 200
    })
    .await;
    let stale = wait_status(
        &first,
        Duration::from_secs(10),
        "the first sees it is stale",
        |s| checkpoint_of(s, 0)["stale"] == true,
    )
    .await;
    assert_eq!(checkpoint_of(&stale, 0)["generation"], 1);
    assert_eq!(checkpoint_of(&stale, 0)["checkpointed_lsn"], 100);
    assert_eq!(checkpoint_of(&second.status().await, 0)["stale"], false);

    // Every layer every index names is there.
    let segment_dir = objects.path().join(format!("tenants/{tenant}/segments/0"));
    let mut indexes = 0;
    for entry in std::fs::read_dir(&segment_dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(generation) = name
            .strip_prefix("index-")
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        indexes += 1;
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(segment_dir.join(&name)).unwrap()).unwrap();
        let expected = if generation == "00000001" { 100 } else { 200 };
        assert_eq!(index["checkpoint_lsn"], expected, "{index}");
        // A chain may name layers of an older generation (the one it was restored from).
        for layer in index["layers"].as_array().unwrap() {
            let file = format!(
                "{}-{:08x}",
                layer["name"].as_str().unwrap(),
                layer["generation"].as_u64().unwrap()
            );
            assert!(
                segment_dir.join("layers").join(&file).exists(),
                "{file} named by index {generation} is gone"
            );
        }
    }
    assert_eq!(indexes, 2);
    drop((c1, c2));
    drop((first, second));

    let third = PageServerProcess::start(&addrs, &args).await;
    let c3 = third.client().await;
    for page in 0..4 {
        check_page(&c3, tenant, &h, page, 200, 0).await;
    }
    let ck = checkpoint_of(&third.status().await, 0);
    assert_eq!(ck["generation"], 3, "{ck}");
    assert_eq!(ck["restored_lsn"], 200, "{ck}");
    // Same checkpoint LSN: the newest generation's index wins the tie.
    assert_eq!(ck["restored_from_generation"], 2, "{ck}");
}

/// `DropTenant`: the tenant's tasks stop, its local files and every object under its prefix go,
/// GetPage refuses it from then on (it is never attached again), and another tenant's objects
/// and pages are untouched. Asked again, it answers the same (idempotent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_tenant_leaves_nothing_behind_and_is_not_attached_again() {
    let (gone, kept) = (TenantId(0x400), TenantId(0x401));
    let mut h = History::new(layout(), 11);
    for i in 0..120u32 {
        h.change(i * 3 % PAGES);
    }
    let sk = FakeSafekeeper::start(EPOCH, layout()).await;
    sk.set_log(gone, log_upto(&h, 120));
    sk.set_log(kept, log_upto(&h, 120));
    let objects = tempfile::tempdir().unwrap();
    let store = format!("file://{}", objects.path().display());
    let ps = PageServerProcess::start(
        std::slice::from_ref(&sk.addr),
        &frequent_checkpoints(&store),
    )
    .await;
    let c = ps.client().await;
    for tenant in [gone, kept] {
        for page in 0..PAGES {
            check_page(&c, tenant, &h, page, 120, 0).await;
        }
    }
    wait_status(&ps, Duration::from_secs(20), "both checkpointed", |s| {
        s["tenants"].as_array().is_some_and(|ts| {
            ts.len() == 2
                && ts.iter().all(|t| {
                    t["segments"].as_array().is_some_and(|ss| {
                        ss.iter()
                            .all(|s| s["checkpoint"]["checkpointed_lsn"].as_u64() > Some(0))
                    })
                })
        })
    })
    .await;
    let prefix = |t: TenantId| objects.path().join("tenants").join(t.to_string());
    let files = |t: TenantId| walk(&prefix(t)).len();
    assert!(files(gone) > 0 && files(kept) > 0, "both checkpointed");
    let kept_before = files(kept);

    let (bytes_freed, objects_deleted) = drop_tenant(&c, gone).await;
    assert!(bytes_freed > 0, "its local files were removed");
    assert!(objects_deleted > 0, "its objects were deleted");
    assert_eq!(files(gone), 0, "nothing of it is left in object storage");
    assert!(
        !ps.data_dir()
            .join("tenants")
            .join(gone.to_string())
            .exists(),
        "nothing of it is left on the local disk"
    );
    // Its checkpointer is stopped: nothing is uploaded for it after the drop.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(files(gone), 0, "an upload came after the drop");
    match get_page(&c, gone, 0, Lsn(120), EPOCH).await {
        Err(WireError::Remote { kind, message }) => {
            assert_eq!(kind, ErrorKind::Invalid);
            assert!(message.contains("was deleted"), "{message}");
        }
        other => panic!("a deleted tenant's page: {other:?}"),
    }
    assert!(files(gone) == 0, "the refused GetPage attached nothing");
    // The other tenant is untouched.
    assert!(files(kept) >= kept_before);
    for page in 0..PAGES {
        check_page(&c, kept, &h, page, 120, 0).await;
    }
    // Idempotent: nothing left to delete.
    let (_, objects_deleted) = drop_tenant(&c, gone).await;
    assert_eq!(objects_deleted, 0, "a second drop deletes nothing");
}

/// Sends `DropTenant`; the answer's `(bytes_freed, objects_deleted)`.
async fn drop_tenant(c: &borealis_wire::Client, tenant: TenantId) -> (u64, u64) {
    let answer = c
        .call(
            borealis_wire::Body::DropTenant { tenant },
            Duration::from_secs(30),
        )
        .await
        .expect("DropTenant answered");
    match answer {
        borealis_wire::Body::TenantDropped {
            bytes_freed,
            objects_deleted,
        } => (bytes_freed, objects_deleted),
        other => panic!("not TenantDropped: {other:?}"),
    }
}

/// Tiny segments, checkpointed every 10 records or 100 ms into `store`.
fn frequent_checkpoints(store: &str) -> [&str; 8] {
    [
        "--pages-per-segment",
        "4",
        "--object-store",
        store,
        "--checkpoint-records",
        "10",
        "--checkpoint-interval",
        "100ms",
    ]
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}
