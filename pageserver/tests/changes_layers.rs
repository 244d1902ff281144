//! Checkpoints whose cost follows the change (issue #18, first step): after the first image, a
//! checkpoint uploads only the pages changed since the one before (a changes layer), the index
//! names the chain, and a pageserver restarted with an empty disk restores every page from the
//! chain — also a chain that mixes layers of two generations. Older generations' objects are
//! garbage-collected by the newest attachment, and every page still restores. The real `pageserver` binary
//! against in-process fake safekeepers that drop the log they are told to trim, checked against
//! a model of every page at every LSN.

mod support;

use borealis_core::{ErrorKind, Lsn, SegmentId, SegmentLayout, TenantId};
use borealis_wire::WireError;
use std::time::{Duration, Instant};
use support::{get_page, get_pages, FakeLog, FakeSafekeeper, History, PageServerProcess, Rng};

const EPOCH: u64 = 2;
const PAGES_PER_SEGMENT: u32 = 256;
const TENANT: TenantId = TenantId(0x500);
/// Bytes of an image layer of the whole segment: header, one 4,120-byte record and one 4-byte
/// directory entry per page, footer.
const IMAGE_BYTES: u64 = 48 + 24 + PAGES_PER_SEGMENT as u64 * 4124;

fn layout() -> SegmentLayout {
    SegmentLayout::new(PAGES_PER_SEGMENT)
}

/// What every test here runs against: one fake safekeeper, and a local object store.
struct Rig {
    sk: FakeSafekeeper,
    addrs: [String; 1],
    objects: tempfile::TempDir,
    store: String,
}

impl Rig {
    async fn start() -> Rig {
        let sk = FakeSafekeeper::start(EPOCH, layout()).await;
        let addrs = [sk.addr.clone()];
        let objects = tempfile::tempdir().unwrap();
        let store = format!("file://{}", objects.path().display());
        Rig {
            sk,
            addrs,
            objects,
            store,
        }
    }
}

fn set_log(sk: &FakeSafekeeper, h: &History, upto: u64) {
    sk.set_log(
        TENANT,
        FakeLog {
            records: h.records[..upto as usize].to_vec(),
            complete_upto: Lsn(upto),
            known_vdl: Lsn(upto),
        },
    );
}

fn checkpoint(status: &serde_json::Value) -> serde_json::Value {
    status["tenants"][0]["segments"]
        .as_array()
        .and_then(|segs| segs.iter().find(|s| s["segment"] == 0))
        .map(|s| s["checkpoint"].clone())
        .unwrap_or(serde_json::Value::Null)
}

async fn wait_checkpointed(ps: &PageServerProcess, lsn: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ck = checkpoint(&ps.status().await);
        if ck["checkpointed_lsn"].as_u64().unwrap_or(0) >= lsn {
            return ck;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint at {lsn} within 20 s: {ck}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Page `page` at `lsn` must be the model's, or "too old" for read points below
/// `too_old_below`.
async fn check_page(
    c: &borealis_wire::Client,
    h: &History,
    page: u32,
    lsn: u64,
    too_old_below: u64,
) {
    match get_page(c, TENANT, page, Lsn(lsn), EPOCH).await {
        Ok(got) => assert_eq!(got, h.page_at(page, Lsn(lsn)), "page {page} at lsn {lsn}"),
        Err(WireError::Remote {
            kind: ErrorKind::Invalid,
            message,
        }) if lsn < too_old_below && message.contains("too old") => {}
        Err(e) => panic!("page {page} at lsn {lsn}: {e}"),
    }
}

/// Applies the log in steps of `step` records up to `to`, waiting for a checkpoint at each.
async fn advance(
    ps: &PageServerProcess,
    c: &borealis_wire::Client,
    sk: &FakeSafekeeper,
    h: &History,
    from: u64,
    to: u64,
    step: u64,
) {
    let mut at = from;
    while at < to {
        at = (at + step).min(to);
        set_log(sk, h, at);
        // A read at `at` waits until the segment is applied up to it.
        check_page(c, h, h.records[at as usize - 1].page_no.0, at, 0).await;
        wait_checkpointed(ps, at).await;
    }
}

/// `n` changes, each to one of three pages of a window that moves every 40 changes.
fn hot_changes(h: &mut History, rng: &mut Rng, n: u64) {
    for _ in 0..n {
        let window = (h.records.len() as u64 / 40) * 3;
        h.change(((window + rng.below(3)) % u64::from(PAGES_PER_SEGMENT)) as u32);
    }
}

fn args(store: &str) -> Vec<String> {
    args_gc(store, "10m")
}

/// No retention window: these tests look at the chain and its garbage collection alone
/// (`args_window` adds one).
fn args_gc(store: &str, gc_delay: &str) -> Vec<String> {
    [
        "--pitr-window",
        "0s",
        "--gc-delay",
        gc_delay,
        "--pages-per-segment",
        &PAGES_PER_SEGMENT.to_string(),
        "--object-store",
        store,
        "--checkpoint-records",
        "1000",
        "--checkpoint-interval",
        "50ms",
    ]
    .map(str::to_string)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_upload_the_changed_pages_and_a_chain_restores_every_page() {
    let mut h = History::new(layout(), 5);
    let mut rng = Rng(77);
    // Every page once, then changes to a few hot pages.
    for page in 0..PAGES_PER_SEGMENT {
        h.change(page);
    }
    // 70 checkpoints of 20 changes: more changes layers than a chain holds.
    hot_changes(&mut h, &mut rng, 1400);
    let first_end = h.records.len() as u64;
    hot_changes(&mut h, &mut rng, 200);
    let end = h.records.len() as u64;

    let Rig {
        sk,
        addrs,
        objects,
        store,
    } = Rig::start().await;
    let args = args(&store);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // 1. The first checkpoint is an image; the next ones are changes layers, a chain.
    let ps = PageServerProcess::start(&addrs, &args).await;
    let c = ps.client().await;
    let image_at = u64::from(PAGES_PER_SEGMENT);
    advance(&ps, &c, &sk, &h, 0, image_at, image_at).await;
    let after_image = ps.metric("pageserver_bytes_uploaded_total").await as u64;
    assert!(after_image >= IMAGE_BYTES, "{after_image} bytes uploaded");
    advance(&ps, &c, &sk, &h, image_at, first_end, 20).await;
    let checkpoints = ps.metric("pageserver_checkpoints_total").await as u64;
    let images = ps.metric("pageserver_image_layers_written_total").await as u64;
    let changes = ps.metric("pageserver_changes_layers_written_total").await as u64;
    let uploaded = ps.metric("pageserver_bytes_uploaded_total").await as u64 - after_image;
    eprintln!(
        "{checkpoints} checkpoints ({images} images, {changes} changes layers); {uploaded} bytes \
         uploaded after the first image, whose layer is {IMAGE_BYTES} bytes"
    );
    assert!(
        changes >= 20,
        "{changes} changes layers of {checkpoints} checkpoints"
    );
    // Full images every time would have uploaded `IMAGE_BYTES` per checkpoint.
    let full = (checkpoints - 1) * IMAGE_BYTES;
    assert!(
        uploaded * 4 < full,
        "{uploaded} bytes uploaded by {} checkpoints after the first; full images: {full}",
        checkpoints - 1
    );
    let ck = checkpoint(&ps.status().await);
    // More changes layers than a chain may hold were written: merged into one since the image.
    let layers = ck["chain_layers"].as_u64().unwrap();
    assert!((2..=65).contains(&layers), "{ck}");
    // Below the newest layer, the chain holds less than 1.5 images' bytes.
    let newest_bytes = 72 + ck["last_layer_pages"].as_u64().unwrap() * 4124;
    assert!(
        (ck["chain_bytes"].as_u64().unwrap() - newest_bytes) * 2 < IMAGE_BYTES * 3,
        "a restore reads at most 1.5 images and the newest layer: {ck}"
    );
    drop(c);
    drop(ps); // SIGKILL

    // 2. Restarted with an empty disk: every page from the chain (the log below it is gone).
    assert!(
        sk.trimmed(TENANT, SegmentId(0)) > Lsn(image_at),
        "the safekeeper dropped the log the chain covers"
    );
    let ps = PageServerProcess::start(&addrs, &args).await;
    let c = ps.client().await;
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, first_end, 0).await;
    }
    let ck = checkpoint(&ps.status().await);
    assert_eq!(ck["generation"], 2, "{ck}");
    assert_eq!(ck["restored_from_generation"], 1, "{ck}");
    assert_eq!(ck["restored_lsn"], first_end, "{ck}");
    assert!(ck["chain_layers"].as_u64().unwrap() >= 2, "{ck}");
    let restored = ck["restored_lsn"].as_u64().unwrap();
    for _ in 0..200 {
        let (page, lsn) = (
            rng.below(u64::from(PAGES_PER_SEGMENT)) as u32,
            1 + rng.below(first_end),
        );
        check_page(&c, &h, page, lsn, restored).await;
    }

    // 3. Generation 2 extends generation 1's chain; a third start restores the mixed chain.
    advance(&ps, &c, &sk, &h, first_end, end, 20).await;
    let ck = checkpoint(&ps.status().await);
    drop(c);
    drop(ps);
    let index = read_index(objects.path(), "index-00000002.json");
    let generations: Vec<u64> = index["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["generation"].as_u64().unwrap())
        .collect();
    eprintln!("generation 2's chain: layers of generations {generations:?}; {ck}");
    assert!(
        generations.contains(&1) && generations.contains(&2),
        "generation 2 extended the chain it restored: {generations:?}"
    );
    for layer in named_layers(&index) {
        let file = segment_dir(objects.path()).join(layer);
        assert!(
            file.exists(),
            "{} named by the index is gone",
            file.display()
        );
    }
    let ps = PageServerProcess::start(&addrs, &args).await;
    let c = ps.client().await;
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, end, 0).await;
    }
    let ck = checkpoint(&ps.status().await);
    assert_eq!(ck["restored_from_generation"], 2, "{ck}");
    assert_eq!(ck["restored_lsn"], end, "{ck}");
    let restored = ck["restored_lsn"].as_u64().unwrap();
    for _ in 0..200 {
        let (page, lsn) = (
            rng.below(u64::from(PAGES_PER_SEGMENT)) as u32,
            1 + rng.below(end),
        );
        check_page(&c, &h, page, lsn, restored).await;
    }
}

/// On-demand download: a pageserver restarted on an empty disk reads each layer's directory and
/// then only the records of the pages it needs, for a GetPage or for a record applied to them,
/// never a whole layer (with `--hydrate false`); with hydration on, it then downloads the chain
/// in the background. Every read at every step matches the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fetches_only_the_pages_it_needs_then_hydrates() {
    let mut h = History::new(layout(), 13);
    let mut rng = Rng(131);
    for page in 0..PAGES_PER_SEGMENT {
        h.change(page);
    }
    hot_changes(&mut h, &mut rng, 200);
    let first_end = h.records.len() as u64;
    // After the restart: changes to pages no read fetched (the follower must fetch them).
    for page in [200u32, 201, 202, 17] {
        h.change(page);
    }
    let end = h.records.len() as u64;

    let Rig {
        sk,
        addrs,
        objects: _objects,
        store,
    } = Rig::start().await;
    let mut lazy = args(&store);
    lazy.extend(["--hydrate".to_string(), "false".to_string()]);
    let lazy: Vec<&str> = lazy.iter().map(String::as_str).collect();

    let ps = PageServerProcess::start(&addrs, &lazy).await;
    let c = ps.client().await;
    let image_at = u64::from(PAGES_PER_SEGMENT);
    advance(&ps, &c, &sk, &h, 0, image_at, image_at).await;
    advance(&ps, &c, &sk, &h, image_at, first_end, 40).await;
    let ck = checkpoint(&ps.status().await);
    assert!(ck["chain_layers"].as_u64().unwrap() >= 3, "{ck}");
    drop(c);
    drop(ps);

    // 1. The first read costs the directories and one record, not the segment.
    let ps = PageServerProcess::start(&addrs, &lazy).await;
    let c = ps.client().await;
    check_page(&c, &h, 5, first_end, 0).await;
    let ck = checkpoint(&ps.status().await);
    let downloaded = ps.metric("pageserver_bytes_downloaded_total").await as u64;
    eprintln!("first read after the restart: {downloaded} bytes downloaded; {ck}");
    assert_eq!(ck["pages_fetched"], 1, "{ck}");
    assert_eq!(ck["hydrated"], false, "{ck}");
    assert!(ck["remote_layers"].as_u64().unwrap() >= 3, "{ck}");
    assert_eq!(ps.metric("pageserver_layers_downloaded_total").await, 0.0);
    assert!(
        downloaded < IMAGE_BYTES / 20,
        "{downloaded} bytes for one page of a {IMAGE_BYTES}-byte image"
    );

    // 1b. A GetPages of 65 pages still in object storage, side by side in one layer: two ranged
    // reads (at most 64 records each), and each page what GetPage answers.
    let (reads, fetched) = (
        ps.metric("pageserver_page_fetch_reads_total").await,
        ck["pages_fetched"].as_u64().unwrap(),
    );
    let run: Vec<u32> = (100..165).collect();
    let got = get_pages(&c, TENANT, &run, Lsn(first_end), EPOCH)
        .await
        .unwrap();
    let model: Vec<_> = run
        .iter()
        .map(|&p| Ok(h.page_at(p, Lsn(first_end))))
        .collect();
    assert_eq!(got, model, "GetPages of pages 100..165 after the restart");
    let ck = checkpoint(&ps.status().await);
    assert_eq!(ck["pages_fetched"], fetched + 65, "{ck}");
    assert_eq!(
        ps.metric("pageserver_page_fetch_reads_total").await - reads,
        2.0,
        "65 side-by-side records in two ranged reads"
    );

    // 2. Records to pages still in object storage: fetched before they apply.
    set_log(&sk, &h, end);
    for page in [200u32, 201, 202, 17] {
        check_page(&c, &h, page, end, 0).await;
    }
    // 3. Every page at the newest LSN, and older read points: still no whole layer.
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, end, 0).await;
    }
    let restored = checkpoint(&ps.status().await)["restored_lsn"]
        .as_u64()
        .unwrap();
    for _ in 0..200 {
        let (page, lsn) = (
            rng.below(u64::from(PAGES_PER_SEGMENT)) as u32,
            1 + rng.below(end),
        );
        check_page(&c, &h, page, lsn, restored).await;
    }
    let ck = checkpoint(&ps.status().await);
    assert_eq!(ps.metric("pageserver_layers_downloaded_total").await, 0.0);
    let fetched = ck["pages_fetched"].as_u64().unwrap();
    assert!(
        (1..=u64::from(PAGES_PER_SEGMENT)).contains(&fetched),
        "each page fetched at most once: {ck}"
    );
    wait_checkpointed(&ps, end).await;
    drop(c);
    drop(ps);

    // 4. With hydration (the default): the chain comes down in the background.
    let args = args(&store);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ps = PageServerProcess::start(&addrs, &args).await;
    let c = ps.client().await;
    check_page(&c, &h, 9, end, 0).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ck = checkpoint(&ps.status().await);
        if ck["hydrated"] == true {
            assert_eq!(ck["remote_layers"], 0, "{ck}");
            break;
        }
        assert!(Instant::now() < deadline, "not hydrated within 20 s: {ck}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ps.metric("pageserver_layers_downloaded_total").await >= 1.0);
    assert_eq!(ps.metric("pageserver_hydrations_total").await, 1.0);
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, end, 0).await;
    }
}

/// The page file stays within about twice what its index names, however many times the same
/// pages are written: compaction drops versions older than `--page-history` and reclaims
/// extents. Reads at the newest LSN stay exact; a read point far behind gets "too old".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_file_stays_bounded_under_rewrites() {
    let mut h = History::new(layout(), 19);
    let mut rng = Rng(191);
    for page in 0..PAGES_PER_SEGMENT {
        h.change(page);
    }
    hot_changes(&mut h, &mut rng, 3000);
    let end = h.records.len() as u64;
    let Rig {
        sk,
        addrs,
        objects: _objects,
        store,
    } = Rig::start().await;
    let mut a = args(&store);
    a.extend(["--page-history", "0s", "--extent-records", "64"].map(str::to_string));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let ps = PageServerProcess::start(&addrs, &a).await;
    let c = ps.client().await;
    set_log(&sk, &h, end);
    check_page(&c, &h, 0, end, 0).await;
    let extent = 64 * 4120u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let (file, live) = loop {
        let status = ps.status().await;
        let t = &status["tenants"][0];
        let (file, live) = (
            t["file_bytes"].as_u64().unwrap(),
            t["live_bytes"].as_u64().unwrap(),
        );
        let removed = ps.metric("pageserver_extents_removed_total").await;
        if removed >= 1.0 && file <= 2 * live + 2 * extent && file * 4 < end * 4120 {
            break (file, live);
        }
        assert!(
            Instant::now() < deadline,
            "the page file did not shrink within 30 s: {file} bytes for {live} live, \
             {removed} extents removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let written = end * 4120;
    eprintln!(
        "{end} records written ({written} bytes of images): page file {file} bytes, {live} live"
    );
    assert!(file * 4 < written, "{file} bytes kept of {written} written");
    assert!(ps.metric("pageserver_extents_removed_total").await >= 1.0);
    assert!(ps.metric("pageserver_versions_dropped_total").await >= 1.0);
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, end, 0).await;
    }
    // Older read points: the model's page or "too old", never another page.
    for _ in 0..200 {
        let (page, lsn) = (
            rng.below(u64::from(PAGES_PER_SEGMENT)) as u32,
            1 + rng.below(end),
        );
        check_page(&c, &h, page, lsn, end).await;
    }
}

/// `--disk-cache-bytes`: eight extents of 16 records (the segment's pages take four times as
/// much).
const BUDGET_BYTES: u64 = 8 * 16 * 4120;

fn args_budget(store: &str) -> Vec<String> {
    with_budget(args(store))
}

fn with_budget(mut a: Vec<String>) -> Vec<String> {
    a.extend(
        [
            "--page-history",
            "0s",
            "--extent-records",
            "16",
            "--compaction-interval",
            "50ms",
            "--disk-cache-bytes",
            &BUDGET_BYTES.to_string(),
        ]
        .map(str::to_string),
    );
    a
}

/// Waits until the tenant's page file is within `--disk-cache-bytes` with pages evicted;
/// returns `(file_bytes, pages_evicted)`.
async fn wait_within_budget(ps: &PageServerProcess, evicted_before: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = ps.status().await;
        let t = &status["tenants"][0];
        let file = t["file_bytes"].as_u64().unwrap();
        let evicted = t["pages_evicted"].as_u64().unwrap();
        assert_eq!(t["disk_cache_bytes"], BUDGET_BYTES, "{t}");
        if file <= BUDGET_BYTES && evicted > evicted_before {
            return (file, evicted);
        }
        assert!(
            Instant::now() < deadline,
            "the page file is not back within its budget after 20 s: {file} bytes,              {evicted} pages evicted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Under `--disk-cache-bytes` the page file stays within its budget while a segment four times
/// its size is written, read whole, changed everywhere (records apply to evicted pages, which
/// the follower fetches first), compacted into a new image (which needs every page back for a
/// while) and restored on an empty disk: every page at every step is the model's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_budget_bounds_the_page_file_and_every_page_reads_back() {
    let mut h = History::new(layout(), 23);
    let mut rng = Rng(231);
    for page in 0..PAGES_PER_SEGMENT {
        h.change(page);
    }
    let first = h.records.len() as u64;
    let Rig {
        sk,
        addrs,
        objects: _objects,
        store,
    } = Rig::start().await;
    let a = args_budget(&store);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut ps = PageServerProcess::start(&addrs, &a).await;
    let mut c = ps.client().await;
    set_log(&sk, &h, first);
    check_page(&c, &h, 0, first, 0).await;
    wait_checkpointed(&ps, first).await;
    let (file, mut evicted) = wait_within_budget(&ps, 0).await;
    eprintln!("{first} pages written: page file {file} bytes, {evicted} pages evicted");

    // Every page read back: the evicted ones are fetched again, and evicted again after.
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, first, 0).await;
    }
    let fetched = ps.metric("pageserver_pages_fetched_total").await;
    assert!(fetched >= 128.0, "{fetched} pages fetched");
    (_, evicted) = wait_within_budget(&ps, evicted).await;

    // Changes everywhere, in steps: records apply to evicted pages; enough changes for the
    // chain to need a new image (which holds eviction and brings every page back first).
    let images_before = ps.metric("pageserver_image_layers_written_total").await;
    for _ in 0..4 {
        for _ in 0..80 {
            h.change(rng.below(u64::from(PAGES_PER_SEGMENT)) as u32);
        }
        let end = h.records.len() as u64;
        set_log(&sk, &h, end);
        check_page(&c, &h, h.records[end as usize - 1].page_no.0, end, 0).await;
        wait_checkpointed(&ps, end).await;
    }
    let end = h.records.len() as u64;
    let images = ps.metric("pageserver_image_layers_written_total").await - images_before;
    assert!(images >= 1.0, "no new image was written");
    (_, evicted) = wait_within_budget(&ps, evicted).await;
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, end, 0).await;
    }
    wait_within_budget(&ps, evicted).await;

    // An empty disk: every page restores.
    drop(c);
    drop(ps);
    ps = PageServerProcess::start(&addrs, &a).await;
    c = ps.client().await;
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, end, 0).await;
    }
    let t = &ps.status().await["tenants"][0];
    assert_eq!(
        checkpoint(&ps.status().await)["hydrated"],
        false,
        "a restored segment is not hydrated under a disk budget"
    );
    eprintln!("restored under the budget: {t}");
}

/// The segment's prefix in the local object store at `root`.
fn segment_dir(root: &std::path::Path) -> std::path::PathBuf {
    root.join(format!("tenants/{TENANT}/segments/0"))
}

/// The index object `file` (`index-<generation>.json`) of the segment, parsed.
fn read_index(root: &std::path::Path, file: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(segment_dir(root).join(file)).unwrap()).unwrap()
}

/// The layers `index` names, as paths under the segment's prefix (`layers/<name>-<generation>`).
fn named_layers(index: &serde_json::Value) -> Vec<String> {
    ["layers", "history", "deltas"]
        .iter()
        .filter_map(|field| index[field].as_array())
        .flatten()
        .map(|l| {
            format!(
                "layers/{}-{:08x}",
                l["name"].as_str().unwrap(),
                l["generation"].as_u64().unwrap()
            )
        })
        .collect()
}

/// Every layer each index in the store names exists: what no crash may break.
fn assert_every_named_layer_exists(root: &std::path::Path, when: &str) {
    let dir = segment_dir(root);
    let mut indexes = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        if !(name.starts_with("index-") && name.ends_with(".json")) {
            continue;
        }
        indexes += 1;
        for layer in named_layers(&read_index(root, &name)) {
            let file = dir.join(layer);
            assert!(
                file.exists(),
                "{when}: {} names {}, which is gone",
                name,
                file.display()
            );
        }
    }
    assert!(indexes > 0, "{when}: no index at all");
}

/// Feeds the log in steps of `step` records from `at`, reading as it goes (errors allowed: the
/// process is meant to die), until the pageserver exits at its crash point. Returns where the
/// log got to. Panics if it never crashes.
async fn run_until_crash(
    ps: &mut PageServerProcess,
    sk: &FakeSafekeeper,
    h: &History,
    mut at: u64,
    step: u64,
    point: &str,
) -> u64 {
    let c = ps.client().await;
    let end = h.records.len() as u64;
    while at < end {
        at = (at + step).min(end);
        set_log(sk, h, at);
        let _ = get_page(
            &c,
            TENANT,
            h.records[at as usize - 1].page_no.0,
            Lsn(at),
            EPOCH,
        )
        .await;
        if let Some(status) = ps.wait_exit(Duration::from_millis(300)).await {
            assert!(
                ps.log().contains(&format!("crash point {point} reached")),
                "the pageserver exited ({status}) but not at crash point {point}:\n{}",
                ps.log()
            );
            return at;
        }
    }
    panic!(
        "crash point {point} was never reached by lsn {end}; log:\n{}",
        ps.log()
    );
}

/// A pageserver killed in the middle of each step of hydration, compaction (an image that
/// replaces a chain), checkpoints of redo only and garbage collection, at crash points
/// (`--crash-at`): after every crash
/// every layer any index names is still there, and the next pageserver restores every page
/// exactly; at the end, garbage collection leaves nothing unnamed behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_any_step_of_compaction_or_gc_loses_nothing_an_index_names() {
    let mut h = History::new(layout(), 17);
    let mut rng = Rng(171);
    for page in 0..PAGES_PER_SEGMENT {
        h.change(page);
    }
    hot_changes(&mut h, &mut rng, 100);
    let first_end = h.records.len() as u64;
    // Then every page again (so the chain's changes outgrow half the image: an image is due),
    // and hot changes for the generations after.
    for _ in 0..2 {
        for page in 0..PAGES_PER_SEGMENT {
            h.change(page);
        }
    }
    hot_changes(&mut h, &mut rng, 2000);

    let Rig {
        sk,
        addrs,
        objects,
        store,
    } = Rig::start().await;
    let with = |point: &str, gc_delay: &str| {
        let mut a = args_gc(&store, gc_delay);
        if point.starts_with("delta") {
            // With a retention window: checkpoints of redo only (RFC 0011).
            a[1] = "1h".into();
        }
        a.extend(["--crash-at".to_string(), point.to_string()]);
        a
    };

    // Generation 1: an image and changes layers.
    let plain = args(&store);
    let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
    let ps = PageServerProcess::start(&addrs, &plain).await;
    let c = ps.client().await;
    let image_at = u64::from(PAGES_PER_SEGMENT);
    advance(&ps, &c, &sk, &h, 0, image_at, image_at).await;
    advance(&ps, &c, &sk, &h, image_at, first_end, 20).await;
    drop(c);
    drop(ps);

    let mut at = first_end;
    for (point, gc_delay, step) in [
        ("hydrating-layer-installed", "10m", 0),
        ("image-layer-uploaded", "10m", 40),
        ("compacted-index-uploaded", "10m", 40),
        ("changes-layer-uploaded", "10m", 20),
        // A checkpoint of redo only, cut before and after its index: the next pageserver (no
        // window) restores a chain that ends below the checkpoint, rebuilds the pages the
        // deltas hold, and its next checkpoint writes a changes layer since the chain top.
        ("delta-layer-uploaded", "10m", 20),
        ("delta-only-index-uploaded", "10m", 20),
        ("own-layer-deleted", "10m", 40),
        ("gc-index-deleted", "1s", 20),
        ("gc-layer-deleted", "1s", 20),
    ] {
        let a = with(point, gc_delay);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut ps = PageServerProcess::start(&addrs, &a).await;
        if gc_delay == "1s" {
            // Garbage collection waits until the claim is `--gc-delay` old.
            let c = ps.client().await;
            let _ = get_page(&c, TENANT, 0, Lsn(at), EPOCH).await;
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
        if step == 0 {
            // The first read attaches the segment; hydration starts in the background.
            let c = ps.client().await;
            let _ = get_page(&c, TENANT, 0, Lsn(at), EPOCH).await;
            let status = ps.wait_exit(Duration::from_secs(20)).await;
            assert!(
                status.is_some() && ps.log().contains(&format!("crash point {point} reached")),
                "no crash at {point}:\n{}",
                ps.log()
            );
        } else {
            at = run_until_crash(&mut ps, &sk, &h, at, step, point).await;
        }
        eprintln!("crashed at {point} with the log at lsn {at}");
        assert_every_named_layer_exists(objects.path(), point);
        drop(ps);
        // The next pageserver restores every page exactly.
        let ps = PageServerProcess::start(&addrs, &plain).await;
        let c = ps.client().await;
        for page in 0..PAGES_PER_SEGMENT {
            check_page(&c, &h, page, at, 0).await;
        }
        drop(c);
        drop(ps);
        assert_every_named_layer_exists(objects.path(), &format!("after {point}"));
    }

    // Finally a pageserver that runs on: garbage collection finishes what the crashes left.
    let a = args_gc(&store, "1s");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let ps = PageServerProcess::start(&addrs, &a).await;
    let c = ps.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let end = h.records.len() as u64;
    loop {
        at = (at + 20).min(end);
        set_log(&sk, &h, at);
        check_page(&c, &h, h.records[at as usize - 1].page_no.0, at, 0).await;
        wait_checkpointed(&ps, at).await;
        let objs = segment_objects(objects.path());
        let indexes = objs.iter().filter(|(p, _)| p.starts_with("index-")).count();
        let total: u64 = objs.iter().map(|(_, b)| b).sum();
        if indexes == 1 && total * 2 <= IMAGE_BYTES * 5 + 64 * 1024 {
            eprintln!("after the crashes: {} objects, {total} bytes", objs.len());
            break;
        }
        assert!(
            Instant::now() < deadline && at < end,
            "garbage collection did not finish: {objs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, at, 0).await;
    }
    assert_every_named_layer_exists(objects.path(), "at the end");
}

/// Every object under the segment's prefix: `(path relative to it, bytes)`. An upload cut off by
/// a kill leaves a staging file (`<key>#<n>`, the local store's multipart part): that is not an
/// object (listings do not show it, as S3 does not list incomplete multipart uploads; a bucket
/// lifecycle rule removes those), so it is left out.
fn segment_objects(root: &std::path::Path) -> Vec<(String, u64)> {
    let dir = segment_dir(root);
    let mut out = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if !path.display().to_string().contains('#') {
                // A file deleted meanwhile (the pageserver's GC runs) is not listed.
                let Ok(meta) = e.metadata() else { continue };
                let rel = path.strip_prefix(&dir).unwrap().display().to_string();
                out.push((rel, meta.len()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_generations_objects_are_collected_and_every_page_still_restores() {
    let mut h = History::new(layout(), 9);
    let mut rng = Rng(91);
    for page in 0..PAGES_PER_SEGMENT {
        h.change(page);
    }
    hot_changes(&mut h, &mut rng, 100);
    let first_end = h.records.len() as u64;
    // Generation 2 changes every page again: its chain needs a new image, and nothing of
    // generation 1's stays named.
    for page in 0..PAGES_PER_SEGMENT {
        h.change(page);
    }
    hot_changes(&mut h, &mut rng, 100);
    let second_end = h.records.len() as u64;

    let Rig {
        sk,
        addrs,
        objects,
        store,
    } = Rig::start().await;
    let args = args_gc(&store, "1s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    // Generation 1: an image and changes layers; killed.
    let ps = PageServerProcess::start(&addrs, &args).await;
    let c = ps.client().await;
    let image_at = u64::from(PAGES_PER_SEGMENT);
    advance(&ps, &c, &sk, &h, 0, image_at, image_at).await;
    advance(&ps, &c, &sk, &h, image_at, first_end, 20).await;
    drop(c);
    drop(ps);
    let leaked: Vec<String> = segment_objects(objects.path())
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| p.ends_with("00000001") || p.ends_with("00000001.json"))
        .collect();
    assert!(leaked.len() >= 4, "generation 1's objects: {leaked:?}");

    // Generation 2: restores, rewrites every page (a new image), and once its claim is 1 s old
    // deletes generation 1's index, layers and claim.
    let ps = PageServerProcess::start(&addrs, &args).await;
    let c = ps.client().await;
    advance(&ps, &c, &sk, &h, first_end, second_end, 20).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut at = second_end;
    loop {
        let objs = segment_objects(objects.path());
        let of_1: Vec<&String> = objs
            .iter()
            .map(|(p, _)| p)
            .filter(|p| p.contains("00000001"))
            .collect();
        if of_1.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "generation 1's objects still there: {of_1:?}; {}",
            checkpoint(&ps.status().await)
        );
        // A pass runs after a checkpoint: keep some coming.
        h.change(rng.below(u64::from(PAGES_PER_SEGMENT)) as u32);
        at += 1;
        set_log(&sk, &h, at);
        check_page(&c, &h, h.records[at as usize - 1].page_no.0, at, 0).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ck = wait_checkpointed(&ps, at).await;
    assert!(ck["gc_passes"].as_u64().unwrap() >= 1, "{ck}");
    assert!(ck["gc_objects_deleted"].as_u64().unwrap() >= 3, "{ck}");
    let total: u64 = segment_objects(objects.path()).iter().map(|(_, b)| b).sum();
    let logical = u64::from(PAGES_PER_SEGMENT) * 4096;
    eprintln!(
        "after garbage collection: {total} bytes under the segment for {logical} bytes of pages; {ck}"
    );
    assert!(
        total <= 2 * logical,
        "{total} bytes in the object store for {logical} bytes of pages: {:?}",
        segment_objects(objects.path())
    );
    drop(c);
    drop(ps);

    // Generation 3 restores every page from what is left.
    let ps = PageServerProcess::start(&addrs, &args).await;
    let c = ps.client().await;
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, at, 0).await;
    }
    let ck = checkpoint(&ps.status().await);
    assert_eq!(ck["restored_from_generation"], 2, "{ck}");
    assert_eq!(ck["restored_lsn"], at, "{ck}");
}

/// Random histories (issue #18's property, for what is built): writes to hot or spread pages,
/// checkpoints (changes layers, images, merges as the policy decides), restarts with an empty
/// disk (a new generation restores the chain and extends it) and garbage collection, in any
/// order. After every restart every page reads back as the model at the newest LSN, and a read
/// at any older LSN is the model's page or "too old", never another page. At the end only the
/// newest generation's objects are left, within 2.5 images.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_writes_checkpoints_restarts_and_gc_read_back_the_model() {
    for seed in [11u64, 12, 13] {
        random_history(seed, false).await;
    }
    // The same with the page file compacted all the time (no history kept, tiny extents) and
    // restored pages fetched only on demand (no hydration).
    for seed in [14u64, 15] {
        random_history(seed, true).await;
    }
}

/// The random histories again under a disk budget of a quarter of the segment: pages are
/// evicted all the time, and fetched again by reads and by the follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_histories_under_a_disk_budget_read_back_the_model() {
    for seed in [16u64, 17] {
        random_history_with(seed, true, |store| with_budget(args_gc(store, "1s"))).await;
    }
}

/// A retention window of an hour (RFC 0010): the local page file keeps no history
/// (`--page-history 0s`), so older read points are rebuilt from the window's layers.
fn args_window(store: &str) -> Vec<String> {
    let mut a = args_gc(store, "1s");
    a[1] = "1h".into();
    a.extend(
        [
            "--page-history",
            "0s",
            "--extent-records",
            "16",
            "--compaction-interval",
            "50ms",
        ]
        .map(str::to_string),
    );
    a
}

/// Issue #18's property: random writes, checkpoints, compactions, restarts on an empty disk and
/// GC passes, with a retention window; every page read at LSNs inside the window (from the
/// newest index's `history_from` to the end) equals the model exactly, while running and after
/// every restart: never "too old" inside the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_histories_inside_the_window_read_back_the_model() {
    for seed in [21u64, 22, 23] {
        random_history_with(seed, true, args_window).await;
    }
}

/// A window of a few seconds on a segment nobody writes any more: the window moves on without a
/// checkpoint, the index (re-uploaded by the attachment restarted meanwhile) names no history
/// and no delta layer, older generations' objects and the delta layers are collected, and
/// every page still reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_segments_window_moves_on_and_what_it_kept_is_collected() {
    let mut h = History::new(layout(), 31);
    let mut rng = Rng(311);
    let Rig {
        sk,
        addrs,
        objects,
        store,
    } = Rig::start().await;
    let mut a = args_window(&store);
    a[1] = "3s".into();
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut ps = PageServerProcess::start(&addrs, &a).await;
    let mut c = ps.client().await;
    for _ in 0..4 {
        hot_changes(&mut h, &mut rng, 60);
        let end = h.records.len() as u64;
        set_log(&sk, &h, end);
        check_page(&c, &h, h.records[end as usize - 1].page_no.0, end, 0).await;
        wait_checkpointed(&ps, end).await;
    }
    let end = h.records.len() as u64;
    let ck = checkpoint(&ps.status().await);
    assert!(ck["window_layers"].as_u64().unwrap() >= 4, "{ck}");
    let deltas = |objs: &[(String, u64)]| objs.iter().filter(|(p, _)| p.contains("delta-")).count();
    assert!(deltas(&segment_objects(objects.path())) >= 4);
    // Restarted on an empty disk, then left alone.
    drop(c);
    drop(ps);
    ps = PageServerProcess::start(&addrs, &a).await;
    c = ps.client().await;
    check_page(&c, &h, 0, end, 0).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ck = checkpoint(&ps.status().await);
        let objs = segment_objects(objects.path());
        let indexes = objs.iter().filter(|(p, _)| p.starts_with("index-")).count();
        if ck["window_layers"] == 0 && deltas(&objs) == 0 && indexes == 1 {
            assert_eq!(ck["history_from"], end, "{ck}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle window did not move on within 30 s: {ck}; objects {objs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, end, 0).await;
    }
}

async fn random_history(seed: u64, compact: bool) {
    random_history_with(seed, compact, |store| args_gc(store, "1s")).await
}

/// The window's start as the segment's status says it (`None`: no window).
fn history_from(status: &serde_json::Value) -> Option<u64> {
    checkpoint(status)["history_from"].as_u64()
}

/// Reads `n` random pages at random LSNs in `[from, end]`, and every LSN of `sweep` pages: all
/// must be the model's. Returns the reads made.
async fn check_window(
    c: &borealis_wire::Client,
    h: &History,
    rng: &mut Rng,
    (from, end): (u64, u64),
    n: usize,
    sweep: usize,
) -> usize {
    let mut reads = 0;
    let span = end - from + 1;
    for _ in 0..n {
        let (page, lsn) = (
            rng.below(u64::from(PAGES_PER_SEGMENT)) as u32,
            from + rng.below(span),
        );
        check_page(c, h, page, lsn, 0).await;
        reads += 1;
    }
    for _ in 0..sweep {
        let page = h.records[rng.below(end) as usize].page_no.0;
        for lsn in from..=end {
            check_page(c, h, page, lsn, 0).await;
            reads += 1;
        }
    }
    reads
}

async fn random_history_with(seed: u64, compact: bool, base_args: fn(&str) -> Vec<String>) {
    let mut h = History::new(layout(), seed);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9));
    let Rig {
        sk,
        addrs,
        objects,
        store,
    } = Rig::start().await;
    let mut args = base_args(&store);
    if compact && !args.iter().any(|a| a == "--extent-records") {
        args.extend(
            [
                "--page-history",
                "0s",
                "--extent-records",
                "16",
                "--hydrate",
                "false",
            ]
            .map(str::to_string),
        );
    }
    let window = args
        .windows(2)
        .any(|w| w[0] == "--pitr-window" && w[1] != "0s");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut ps = PageServerProcess::start(&addrs, &args).await;
    let mut c = ps.client().await;
    let (mut restarts, mut exact_old, mut too_old) = (0, 0, 0);
    let (mut window_checks, mut window_reads) = (0usize, 0.0);
    // Checkpoints of redo only, and pages rebuilt from their deltas (RFC 0011).
    let (mut delta_only, mut rebuilt) = (0.0, 0.0);
    let mut end = 0u64;
    for step in 0..30 {
        // Writes half the time; a restart three times in ten.
        match rng.below(10) {
            0..=4 => {
                // Writes: a burst on a hot window, or spread over the segment.
                let n = 1 + rng.below(80);
                let spread = rng.below(3) == 0;
                let base = rng.below(u64::from(PAGES_PER_SEGMENT));
                for _ in 0..n {
                    let page = if spread {
                        rng.below(u64::from(PAGES_PER_SEGMENT))
                    } else {
                        (base + rng.below(4)) % u64::from(PAGES_PER_SEGMENT)
                    };
                    h.change(page as u32);
                }
                end = h.records.len() as u64;
                set_log(&sk, &h, end);
                check_page(&c, &h, h.records[end as usize - 1].page_no.0, end, 0).await;
                if let Some(from) = history_from(&ps.status().await).filter(|_| window) {
                    window_checks +=
                        check_window(&c, &h, &mut rng, (from.max(1), end), 30, 0).await;
                }
            }
            5 if end > 0 => {
                wait_checkpointed(&ps, end).await;
                if let Some(from) = history_from(&ps.status().await).filter(|_| window) {
                    window_checks +=
                        check_window(&c, &h, &mut rng, (from.max(1), end), 30, 0).await;
                }
            }
            6 if end > 0 => {
                // Let the claim age past --gc-delay, then a checkpoint runs a pass.
                tokio::time::sleep(Duration::from_millis(1100)).await;
                h.change(rng.below(u64::from(PAGES_PER_SEGMENT)) as u32);
                end = h.records.len() as u64;
                set_log(&sk, &h, end);
                check_page(&c, &h, h.records[end as usize - 1].page_no.0, end, 0).await;
                wait_checkpointed(&ps, end).await;
            }
            _ if end > 0 => {
                // Killed, started again with an empty disk.
                window_reads += ps.metric("pageserver_window_reads_total").await;
                delta_only += ps.metric("pageserver_delta_only_checkpoints_total").await;
                rebuilt += ps.metric("pageserver_pages_rebuilt_total").await;
                drop(c);
                drop(ps);
                restarts += 1;
                ps = PageServerProcess::start(&addrs, &args).await;
                c = ps.client().await;
                for page in 0..PAGES_PER_SEGMENT {
                    check_page(&c, &h, page, end, 0).await;
                }
                if window {
                    // Everything from the window's start, exactly: also what the pageserver
                    // that was killed had applied above its last checkpoint. (If it was killed
                    // before its first checkpoint, the window starts with this one's.)
                    wait_checkpointed(&ps, end).await;
                    let from = history_from(&ps.status().await)
                        .unwrap_or_else(|| panic!("seed {seed}: no window after a restart"));
                    window_checks +=
                        check_window(&c, &h, &mut rng, (from.max(1), end), 150, 2).await;
                }
                // Read points from the checkpoint restored from on are served exactly; below it,
                // a page changed after its read point is "too old" (the chain holds its content
                // as of the checkpoint only). With no history kept, any older read point may be.
                let restored = checkpoint(&ps.status().await)["restored_lsn"]
                    .as_u64()
                    .unwrap_or(0);
                let restored = if compact { end } else { restored };
                for _ in 0..40 {
                    let (page, lsn) = (
                        rng.below(u64::from(PAGES_PER_SEGMENT)) as u32,
                        1 + rng.below(end),
                    );
                    match get_page(&c, TENANT, page, Lsn(lsn), EPOCH).await {
                        Ok(got) => {
                            assert_eq!(
                                got,
                                h.page_at(page, Lsn(lsn)),
                                "seed {seed} step {step}: page {page} at lsn {lsn}"
                            );
                            exact_old += 1;
                        }
                        Err(WireError::Remote {
                            kind: ErrorKind::Invalid,
                            message,
                        }) if lsn < restored && message.contains("too old") => too_old += 1,
                        Err(e) => panic!("seed {seed} step {step}: page {page} at lsn {lsn}: {e}"),
                    }
                }
            }
            _ => {}
        }
    }
    // Finally: every page at the end, and a pass that leaves only the newest generation.
    if end == 0 {
        h.change(0);
        end = 1;
        set_log(&sk, &h, end);
    }
    for page in 0..PAGES_PER_SEGMENT {
        check_page(&c, &h, page, end, 0).await;
    }
    let generation = checkpoint(&ps.status().await)["generation"]
        .as_u64()
        .unwrap();
    let newest = format!("{generation:08x}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.change(rng.below(u64::from(PAGES_PER_SEGMENT)) as u32);
        end = h.records.len() as u64;
        set_log(&sk, &h, end);
        check_page(&c, &h, h.records[end as usize - 1].page_no.0, end, 0).await;
        wait_checkpointed(&ps, end).await;
        let objs = segment_objects(objects.path());
        let older: Vec<&String> = objs
            .iter()
            .map(|(p, _)| p)
            .filter(|p| !p.contains(&newest))
            .collect();
        // The chain may still name older generations' layers; nothing else of theirs stays.
        let named = named_layers(&read_index(objects.path(), &format!("index-{newest}.json")));
        let unnamed_older: Vec<&&String> = older.iter().filter(|p| !named.contains(p)).collect();
        if unnamed_older.is_empty() {
            // Without a window, only the chain is left; a window keeps what it needs.
            let total: u64 = objs.iter().map(|(_, b)| b).sum();
            assert!(
                window || total * 2 <= IMAGE_BYTES * 5 + 64 * 1024,
                "seed {seed}: {total} bytes left: {objs:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: older generations' objects no index names are still there: {unnamed_older:?}"
        );
    }
    window_reads += ps.metric("pageserver_window_reads_total").await;
    delta_only += ps.metric("pageserver_delta_only_checkpoints_total").await;
    rebuilt += ps.metric("pageserver_pages_rebuilt_total").await;
    eprintln!(
        "seed {seed}: {end} records, {restarts} restarts, {exact_old} older reads exact, \
         {too_old} too old; {window_checks} reads inside the window, {window_reads} of them \
         rebuilt from its layers; {delta_only} checkpoints of redo only, {rebuilt} pages \
         fetched by rebuilding them from the deltas above the chain"
    );
    if window {
        assert!(
            delta_only > 0.0 && (restarts == 0 || rebuilt > 0.0),
            "seed {seed}: checkpoints of redo only were not exercised ({delta_only} of them, \
             {rebuilt} pages rebuilt)"
        );
        assert!(
            window_checks > 0 && window_reads > 0.0,
            "seed {seed}: the window was not exercised ({window_checks} reads, \
             {window_reads} rebuilt)"
        );
        assert_eq!(
            too_old, 0,
            "seed {seed}: a read inside the window was too old"
        );
    }
    assert!(
        restarts == 0 || exact_old > 0,
        "seed {seed}: no read below the newest LSN was answered after a restart"
    );
}
