//! Tests of the page store: reads against a model of every page at every LSN, compaction,
//! eviction, chain checks and corruption.

use super::*;
use crate::index::LayerRef;
use borealis_core::redo::RedoBody;
use std::collections::BTreeMap;
use std::num::NonZeroUsize;

/// A small deterministic generator (xorshift64*): the tests need variety, not quality.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn store(dir: &Path, retain: usize, cache_pages: usize) -> TenantPages {
    let cache = Arc::new(PageCache::new(NonZeroUsize::new(cache_pages).unwrap()));
    TenantPages::create(dir, TenantId(7), SegmentLayout::new(4), retain, cache).unwrap()
}

/// A store of two-page cache, 64 versions per page and extents of `extent_records` records
/// (small, so that compaction and eviction have extents to reclaim).
fn store_with_extents(dir: &Path, extent_records: u64) -> TenantPages {
    let cache = Arc::new(PageCache::new(NonZeroUsize::new(2).unwrap()));
    TenantPages::create_with_extents(
        dir,
        TenantId(7),
        SegmentLayout::new(4),
        64,
        cache,
        extent_records,
    )
    .unwrap()
}

/// The reference model: every page's full history, `lsn → image`.
type Model = BTreeMap<u32, BTreeMap<u64, Vec<u8>>>;

/// Random image and delta records over `pages` pages, with correct backlinks; returns the
/// records and the model of page contents at every LSN.
fn random_history(seed: u64, records: usize, pages: u32) -> (Vec<RedoRecord>, Model) {
    let mut rng = Rng(seed);
    let mut model: Model = BTreeMap::new();
    let mut out = Vec::new();
    let mut prev_lsn_segment: HashMap<u32, Lsn> = HashMap::new();
    let mut lsn = 0u64;
    for _ in 0..records {
        lsn += 1 + rng.below(3);
        let page = rng.below(u64::from(pages)) as u32;
        let history = model.entry(page).or_default();
        let old = history.values().next_back().cloned();
        let mut new = old.clone().unwrap_or_else(|| vec![0u8; PAGE_SIZE_BYTES]);
        if rng.below(5) == 0 {
            new.iter_mut().for_each(|b| *b = rng.next() as u8);
        } else {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(PAGE_SIZE_BYTES as u64 - 64) as usize;
                let len = 1 + rng.below(60) as usize;
                new[at..at + len]
                    .iter_mut()
                    .for_each(|b| *b = rng.next() as u8);
            }
        }
        let body = RedoBody::between(old.as_deref(), &new);
        let prev_page = history
            .keys()
            .next_back()
            .copied()
            .map_or(Lsn::INVALID, Lsn);
        let segment = page / 4;
        let prev_seg = prev_lsn_segment
            .insert(segment, Lsn(lsn))
            .unwrap_or(Lsn::INVALID);
        history.insert(lsn, new);
        out.push(RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: prev_seg,
            prev_lsn_page: prev_page,
            page_no: PageNo(page),
            is_cpl: true,
            body,
        });
    }
    (out, model)
}

/// What GetPage@lsn must answer according to the model: `None` if never written by then.
fn model_at(model: &Model, page: u32, lsn: u64) -> Option<&Vec<u8>> {
    model
        .get(&page)?
        .range(..=lsn)
        .next_back()
        .map(|(_, img)| img)
}

/// Property: for random histories, every (page, lsn) read that is retained equals the model,
/// and every read that is not retained says "too old" instead of answering wrongly. Reads are
/// checked while the history is applied too, not only at the end.
#[test]
fn get_page_at_lsn_matches_the_model() {
    for seed in 1..=12u64 {
        let dir = tempfile::tempdir().unwrap();
        // A tiny cache forces reads from the file; a small retention exercises trimming.
        let retain = 1 + (seed as usize % 6);
        let pages = store(dir.path(), retain, 3);
        let (mut records, model) = random_history(seed, 150, 6);
        let max_lsn = records.last().unwrap().lsn.0;
        let mut rng = Rng(seed * 977);
        // A writer that forgot a page's tail (or a new writer) sends an unknown backlink.
        for r in records.iter_mut() {
            if rng.below(3) == 0 {
                r.prev_lsn_page = Lsn::INVALID;
            }
        }
        let mut too_old = 0;
        for (i, r) in records.iter().enumerate() {
            pages.apply(r).unwrap();
            if i % 10 != 9 && i != records.len() - 1 {
                continue;
            }
            let applied_to = r.lsn.0;
            for _ in 0..40 {
                let page = rng.below(7) as u32; // page 6 is never written
                let lsn = rng.below(applied_to + 1);
                let want = model_at(&model, page, lsn);
                match pages.get(PageNo(page), Lsn(lsn)) {
                    Ok(got) => assert_eq!(
                        got.as_deref(),
                        want.map(|v| &v[..]),
                        "seed {seed} page {page} lsn {lsn}"
                    ),
                    Err(ReadError::LsnTooOld { oldest, .. }) => {
                        too_old += 1;
                        assert!(
                            Lsn(lsn) < oldest,
                            "seed {seed}: too old above the oldest version"
                        );
                        // It really was dropped: the page has more versions than retained.
                        let written = model[&page].range(..=applied_to).count();
                        assert!(written > retain, "seed {seed}: nothing was dropped");
                    }
                    Err(e) => panic!("seed {seed}: {e}"),
                }
            }
        }
        // The newest version of every page is always readable at the last LSN.
        for page in 0..6u32 {
            let got = pages.get(PageNo(page), Lsn(max_lsn)).unwrap();
            assert_eq!(
                got.as_deref(),
                model_at(&model, page, max_lsn).map(|v| &v[..])
            );
        }
        if retain < 3 {
            assert!(too_old > 0, "seed {seed}: trimming never showed");
        }
    }
}

/// Property: compaction passes between applies — dropping history below moving horizons,
/// reclaiming extents — never change an answer: every read is the model's or "too old",
/// and "too old" only below the newest version at or below the horizon. The file stays
/// within about twice its live records, and extents are reclaimed.
#[test]
fn compaction_keeps_every_answer_and_bounds_the_file() {
    for seed in 1..=10u64 {
        let dir = tempfile::tempdir().unwrap();
        let extent_records = 4 + seed % 5;
        let pages = store_with_extents(dir.path(), extent_records);
        let (records, model) = random_history(seed, 400, 8);
        let mut rng = Rng(seed * 31);
        // Per segment (pages 0..4 and 4..8), the horizon history was dropped below.
        let mut horizons: HashMap<SegmentId, Lsn> = HashMap::new();
        let mut totals = Compacted::default();
        for (i, r) in records.iter().enumerate() {
            pages.apply(r).unwrap();
            if rng.below(10) == 0 {
                let segment = SegmentId(rng.below(2) as u32);
                // A horizon somewhere in the applied history, never moving back.
                let h = Lsn(rng.below(r.lsn.0 + 1))
                    .max(horizons.get(&segment).copied().unwrap_or(Lsn::INVALID));
                horizons.insert(segment, h);
                let c = pages.compact(&horizons, None).unwrap();
                totals.versions_dropped += c.versions_dropped;
                totals.records_moved += c.records_moved;
                totals.extents_removed += c.extents_removed;
            }
            if i % 50 == 49 {
                let upto = r.lsn.0;
                for page in 0..8u32 {
                    let horizon = horizons
                        .get(&SegmentId(page / 4))
                        .copied()
                        .unwrap_or(Lsn::INVALID);
                    // The version a read at the horizon sees: at and above it, exact.
                    let floor = model
                        .get(&page)
                        .and_then(|h| h.range(..=horizon.0).next_back())
                        .map_or(0, |(l, _)| *l);
                    for lsn in 0..=upto {
                        match pages.get(PageNo(page), Lsn(lsn)) {
                            Ok(got) => assert_eq!(
                                got.as_deref(),
                                model_at(&model, page, lsn).map(|v| &v[..]),
                                "seed {seed}: page {page} at {lsn}"
                            ),
                            Err(ReadError::LsnTooOld { .. }) => assert!(
                                lsn < floor,
                                "seed {seed}: page {page} at {lsn} too old, floor {floor}"
                            ),
                            Err(e) => panic!("seed {seed}: {e}"),
                        }
                    }
                }
                let (file, live) = (pages.file_bytes(), pages.live_bytes());
                let extent = extent_records * IMAGE_RECORD_BYTES as u64;
                pages.compact(&horizons, None).unwrap();
                let after = pages.file_bytes();
                assert!(
                    after <= 2 * pages.live_bytes() + 2 * extent,
                    "seed {seed}: {after} bytes on disk for {live} live (before: {file})"
                );
            }
        }
        assert!(totals.versions_dropped > 0, "seed {seed}: {totals:?}");
        assert!(totals.extents_removed > 0, "seed {seed}: {totals:?}");
        assert!(totals.records_moved > 0, "seed {seed}: {totals:?}");
    }
}

/// A chain of one image layer holding `pages` (slot `i`: `pages[i]`), evictable up to
/// `evict_upto`.
fn chain_of(pages: &[u32], evict_upto: Lsn) -> RemoteChain {
    let meta = crate::layer::LayerMeta {
        version: crate::layer::LAYER_VERSION,
        kind: crate::layer::LayerKind::Image,
        tenant: TenantId(7),
        segment: SegmentId(0),
        lsn: evict_upto,
        last_record_lsn: evict_upto,
        page_count: pages.len() as u32,
    };
    RemoteChain {
        layers: vec![Arc::new(RemoteLayer {
            layer: LayerRef::image(
                "image".into(),
                borealis_objstore::keys::Generation(1),
                &meta,
                0,
            ),
            directory: pages.to_vec(),
            above: Lsn::INVALID,
        })],
        evict_upto,
        ..RemoteChain::default()
    }
}

/// Under a budget, compaction evicts only what the chain holds exactly, least recently
/// used first, never a page touched in the last passes, being applied to, newer than the
/// chain or of a held segment; an evicted page is remote again, refuses records until it
/// is fetched, and reads back exactly once installed.
#[test]
fn eviction_drops_only_what_the_chain_holds_and_it_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let pages = store_with_extents(dir.path(), 4);
    let (records, model) = random_history(5, 80, 8);
    for r in &records {
        pages.apply(r).unwrap();
    }
    let end = records.last().unwrap().lsn;
    // Segment 0's chain holds every page as of `end`; segment 1 has no chain.
    pages.set_remote(SegmentId(0), chain_of(&[0, 1, 2, 3], end));
    let budget = Some(4 * 4 * IMAGE_RECORD_BYTES as u64); // live records at most 6
    let none: HashMap<SegmentId, Lsn> = HashMap::new();
    // Touched by the applies: nothing goes before two passes.
    assert_eq!(pages.compact(&none, budget).unwrap().pages_evicted, 0);
    pages.hold_eviction(SegmentId(0), true);
    for _ in 0..3 {
        assert_eq!(pages.compact(&none, budget).unwrap().pages_evicted, 0);
    }
    pages.hold_eviction(SegmentId(0), false);
    // Page 2 was just read: it stays; the others of segment 0 go.
    pages.get(PageNo(2), end).unwrap();
    let c = pages.compact(&none, budget).unwrap();
    assert_eq!(c.pages_evicted, 3, "{c:?}");
    assert_eq!(pages.pages_evicted(), 3);
    for page in 0..8u32 {
        let remote = matches!(pages.lookup(PageNo(page), end), Ok(Lookup::Remote(_)));
        assert_eq!(remote, [0, 1, 3].contains(&page), "page {page}");
    }
    assert_eq!(pages.segment_counts(SegmentId(0)).pages, 1);
    // Nothing more can go: page 2 was touched, segment 1 has no chain.
    assert!(pages.live_bytes() > 6 * IMAGE_RECORD_BYTES as u64);
    assert_eq!(pages.compact(&none, budget).unwrap().pages_evicted, 0);

    // An evicted page refuses records until fetched; installed, it reads back exactly.
    let Ok(Lookup::Remote(r)) = pages.lookup(PageNo(1), end) else {
        panic!("page 1 is not remote");
    };
    assert_eq!(r.source, RemoteSource::Layer { layer: 0, slot: 1 });
    let (lsn, image) = model[&1].iter().next_back().unwrap();
    let next = RedoRecord {
        lsn: Lsn(end.0 + 1),
        prev_lsn_segment: Lsn::INVALID,
        prev_lsn_page: Lsn(*lsn),
        page_no: PageNo(1),
        is_cpl: true,
        body: RedoBody::Image(vec![9u8; PAGE_SIZE_BYTES]),
    };
    assert!(matches!(
        pages.apply(&next),
        Err(ApplyError::NotFetched { .. })
    ));
    assert!(pages.install(PageNo(1), Lsn(*lsn), image).unwrap());
    assert_eq!(
        pages.get(PageNo(1), end).unwrap().as_deref(),
        Some(&image[..])
    );
    pages.apply(&next).unwrap();
    // Its newest version is above the chain now: it is not evicted again.
    for _ in 0..3 {
        pages.compact(&none, budget).unwrap();
    }
    assert!(matches!(
        pages.lookup(PageNo(1), next.lsn),
        Ok(Lookup::Cached(_) | Lookup::OnDisk(_))
    ));
    assert_eq!(
        pages.get(PageNo(1), next.lsn).unwrap().as_deref(),
        Some(&[9u8; PAGE_SIZE_BYTES][..])
    );
}

#[test]
fn counts_per_segment_follow_trimming() {
    let dir = tempfile::tempdir().unwrap();
    let pages = store(dir.path(), 2, 16);
    let (records, _) = random_history(99, 60, 8);
    for r in &records {
        pages.apply(r).unwrap();
    }
    let total: u64 = (0..2)
        .map(|s| pages.segment_counts(SegmentId(s)).pages)
        .sum();
    assert_eq!(total, 8);
    for s in 0..2 {
        let c = pages.segment_counts(SegmentId(s));
        assert!(c.versions <= 2 * c.pages && c.versions >= c.pages, "{c:?}");
    }
    assert_eq!(pages.file_bytes(), 60 * IMAGE_RECORD_BYTES as u64);
}

#[test]
fn a_record_that_skips_a_version_of_its_page_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pages = store(dir.path(), 4, 16);
    let (records, _) = random_history(5, 30, 1);
    pages.apply(&records[0]).unwrap();
    let err = pages.apply(&records[2]).unwrap_err();
    assert!(matches!(err, ApplyError::PageChain { .. }), "{err}");
    // Nothing changed: the right next record still applies.
    pages.apply(&records[1]).unwrap();
    pages.apply(&records[2]).unwrap();
    // A record applied twice is refused as well, even with an unknown backlink.
    assert!(matches!(
        pages.apply(&records[2]),
        Err(ApplyError::PageChain { .. })
    ));
    let mut unknown = records[2].clone();
    unknown.prev_lsn_page = Lsn::INVALID;
    assert!(matches!(
        pages.apply(&unknown),
        Err(ApplyError::PageChain { .. })
    ));
    // An unknown backlink is not checked otherwise: it applies to the newest version.
    let mut next = records[3].clone();
    next.prev_lsn_page = Lsn::INVALID;
    pages.apply(&next).unwrap();
    pages.apply(&records[4]).unwrap();
}

#[test]
fn a_corrupted_file_is_an_error_never_a_page() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let pages = store(dir.path(), 4, 1);
    let (records, _) = random_history(11, 2, 1);
    pages.apply(&records[0]).unwrap();
    pages.apply(&records[1]).unwrap(); // evicts the first image from the 1-page cache
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(pages.page_file().extent_path(0))
        .unwrap();
    f.write_all_at(&[0xff], 100).unwrap();
    let err = pages.get(PageNo(0), records[0].lsn).unwrap_err();
    assert!(
        matches!(err, ReadError::File(PageFileError::Corrupt { .. })),
        "{err}"
    );
}

/// RFC 0011: a page the deltas above the chain hold is found there before any layer (its
/// version there is newer), once the chain has the window that rebuilds it; a restore's
/// hydration lists exactly those of them with no local version.
#[test]
fn a_page_the_deltas_hold_is_found_there_before_the_chain() {
    let mut chain = chain_of(&[0, 1, 2], Lsn(10));
    chain.delta_pages = vec![1, 3];
    // Without the window the deltas cannot be read: only the layer is known.
    assert_eq!(
        chain.find(PageNo(1)),
        Some(RemoteSource::Layer { layer: 0, slot: 1 })
    );
    assert_eq!(chain.find(PageNo(3)), None);
    chain.window = Some(Arc::new(crate::history::Window::of_chain(
        (TenantId(7), SegmentId(0)),
        Lsn(10),
        &[],
        &[],
        None,
    )));
    assert_eq!(chain.find(PageNo(1)), Some(RemoteSource::Deltas));
    assert_eq!(chain.find(PageNo(3)), Some(RemoteSource::Deltas));
    assert_eq!(
        chain.find(PageNo(0)),
        Some(RemoteSource::Layer { layer: 0, slot: 0 })
    );
    assert_eq!(chain.find(PageNo(4)), None);
    assert_eq!(chain.distinct_pages(), 4);

    let dir = tempfile::tempdir().unwrap();
    let pages = store_with_extents(dir.path(), 4);
    let (records, _) = random_history(3, 40, 2);
    for r in &records {
        pages.apply(r).unwrap();
    }
    // Pages 0 and 1 are local now; of the deltas' pages, only 3 is not.
    assert_eq!(pages.remote_only_in_deltas(&chain), [PageNo(3)]);
    chain.window = None;
    assert!(pages.remote_only_in_deltas(&chain).is_empty());
}
