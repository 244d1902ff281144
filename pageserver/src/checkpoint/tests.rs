//! Tests of the checkpointer's pure parts: the layer plan, and layers written from one store
//! read back through another.

use super::*;
use crate::cache::PageCache;
use crate::pages::ApplyError;
use crate::restore::{install_layer, AttachError, Expected, PageBitmap};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{PageNo, PAGE_SIZE_BYTES};
use std::num::NonZeroUsize;

/// A checkpoint written from one store and installed into another answers every read at or
/// above each page's layer LSN exactly as the original, and "too old" below it.
#[test]
fn the_layer_plan_bounds_the_chain_and_what_a_restore_reads() {
    let meta = |lsn: u64, pages: u32| LayerMeta {
        version: crate::layer::LAYER_VERSION_V1,
        kind: LayerKind::Changes,
        tenant: TenantId(1),
        segment: SegmentId(0),
        lsn: Lsn(lsn),
        last_record_lsn: Lsn(lsn),
        page_count: pages,
    };
    let image = LayerRef::image("i".into(), Generation(1), &meta(10, 1000), 0);
    let changes = |from: u64, to: u64, pages| {
        LayerRef::changes("c".into(), Generation(1), Lsn(from), &meta(to, pages), 0)
    };
    let none = DeltasAbove::default();
    let layer = |plan: Plan| match plan {
        Plan::Layer(p) => p,
        Plan::DeltaOnly => panic!("no layer planned"),
    };
    assert_eq!(layer(plan_layer(&[], none, true)).kind, LayerKind::Image);
    // Small changes extend the chain from its newest layer, without a window.
    let mut chain = vec![image.clone(), changes(10, 20, 2)];
    assert_eq!(
        plan_layer(&chain, none, false),
        Plan::Layer(LayerPlan {
            kind: LayerKind::Changes,
            since: Lsn(20),
            keep: 2
        })
    );
    // With the redo at hand, the delta alone is the checkpoint (RFC 0011)...
    assert_eq!(plan_layer(&chain, none, true), Plan::DeltaOnly);
    // ...until the deltas above the chain are many, or list many pages: then a changes layer
    // since the chain's newest layer.
    let many = DeltasAbove {
        count: DELTAS_ABOVE_CHAIN_MAX,
        pages: 40,
        bytes: 4000,
    };
    let since_top = Plan::Layer(LayerPlan {
        kind: LayerKind::Changes,
        since: Lsn(20),
        keep: 2,
    });
    assert_eq!(plan_layer(&chain, many, true), since_top);
    let wide = DeltasAbove {
        count: 3,
        pages: DELTA_PAGES_ABOVE_CHAIN_MAX,
        bytes: 4000,
    };
    assert_eq!(plan_layer(&chain, wide, true), since_top);
    // Deltas worth half the image count as changes: a new image.
    let heavy = DeltasAbove {
        count: 3,
        pages: 300,
        bytes: image.bytes / 2,
    };
    assert_eq!(
        layer(plan_layer(&chain, heavy, true)).kind,
        LayerKind::Image
    );
    // Changes worth half the image: a new image.
    chain.push(changes(20, 30, 499));
    assert_eq!(layer(plan_layer(&chain, none, true)).kind, LayerKind::Image);
    // A long chain of small changes: merged into one from the image.
    let mut chain = vec![image];
    for i in 0..CHANGES_LAYERS_MAX as u64 {
        chain.push(changes(10 + i, 11 + i, 1));
    }
    assert_eq!(
        plan_layer(&chain, none, false),
        Plan::Layer(LayerPlan {
            kind: LayerKind::Changes,
            since: Lsn(10),
            keep: 1
        })
    );
    chain.pop();
    assert_eq!(
        layer(plan_layer(&chain, none, false)).keep,
        CHANGES_LAYERS_MAX
    );
}

#[test]
fn a_layer_round_trips_through_a_fresh_store() {
    let dir = tempfile::tempdir().unwrap();
    let layout = SegmentLayout::new(4);
    let cache = Arc::new(PageCache::new(NonZeroUsize::new(2).unwrap()));
    let a = TenantPages::create(
        &dir.path().join("a"),
        TenantId(1),
        layout,
        16,
        cache.clone(),
    )
    .unwrap();
    let mut prev_segment = [Lsn::INVALID; 2];
    let mut prev_page = [Lsn::INVALID; 8];
    for lsn in 1..=40u64 {
        let page = ((lsn * 7) % 8) as u32;
        let seg = (page / 4) as usize;
        let mut image = vec![0u8; PAGE_SIZE_BYTES];
        image[..8].copy_from_slice(&lsn.to_le_bytes());
        a.apply(&RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: prev_segment[seg],
            prev_lsn_page: prev_page[page as usize],
            page_no: PageNo(page),
            is_cpl: true,
            body: RedoBody::Image(image),
        })
        .unwrap();
        prev_segment[seg] = Lsn(lsn);
        prev_page[page as usize] = Lsn(lsn);
    }
    // Segment 0 (pages 0..4) as of lsn 30: its last record at or below 30.
    let last = (1..=30u64).rev().find(|l| (l * 7) % 8 < 4).unwrap();
    let cursor = Cursor {
        caught_up_to: Lsn(30),
        last_applied: Lsn(last),
    };
    let ts = (TenantId(1), SegmentId(0));
    let expect = |kind, lsn: u64, pages, last_record_lsn| Expected {
        kind,
        lsn: Lsn(lsn),
        above: Lsn::INVALID,
        pages,
        last_record_lsn,
    };
    let path = dir.path().join("layer");
    let meta = write_layer(
        &a,
        &path,
        LayerKind::Image,
        Lsn::INVALID,
        ts,
        layout,
        cursor,
    )
    .unwrap()
    .0;
    assert_eq!(meta.page_count, 4);
    let b = TenantPages::create(
        &dir.path().join("b"),
        TenantId(1),
        layout,
        16,
        cache.clone(),
    )
    .unwrap();
    let whole = expect(LayerKind::Image, 30, 4, Some(Lsn(last)));
    let mut held = PageBitmap::new(4);
    let installed = install_layer(&b, &path, ts.0, ts.1, layout, &whole, &mut held).unwrap();
    assert_eq!(installed, 4);
    assert!(
        !path.exists(),
        "the downloaded file is removed once installed"
    );
    let same_reads = |b: &TenantPages| {
        for page in 0..4u32 {
            let (p_lsn, _) = a
                .version_for_checkpoint(PageNo(page), Lsn(30))
                .unwrap()
                .unwrap();
            for lsn in 0..=30u64 {
                let got = b.get(PageNo(page), Lsn(lsn));
                if lsn >= p_lsn.0 {
                    assert_eq!(
                        got.unwrap(),
                        a.get(PageNo(page), Lsn(lsn)).unwrap(),
                        "page {page} at {lsn}"
                    );
                } else {
                    assert!(
                        matches!(got, Err(ReadError::LsnTooOld { .. })),
                        "page {page} at {lsn}"
                    );
                }
            }
        }
    };
    same_reads(&b);
    // Installing again is a no-op (a retried restore); the segment's counts are right.
    write_layer(
        &a,
        &path,
        LayerKind::Image,
        Lsn::INVALID,
        ts,
        layout,
        cursor,
    )
    .unwrap();
    let mut held = PageBitmap::new(4);
    let again = install_layer(&b, &path, ts.0, ts.1, layout, &whole, &mut held).unwrap();
    assert_eq!(again, 0);
    assert_eq!(b.segment_counts(SegmentId(0)).pages, 4);
    // A layer whose header disagrees with the index is refused.
    write_layer(
        &a,
        &path,
        LayerKind::Image,
        Lsn::INVALID,
        ts,
        layout,
        cursor,
    )
    .unwrap();
    let mut held = PageBitmap::new(4);
    let wrong = expect(LayerKind::Image, 31, 4, Some(Lsn(last)));
    assert!(matches!(
        install_layer(&b, &path, ts.0, ts.1, layout, &wrong, &mut held),
        Err(AttachError::Mismatch(_))
    ));

    // The same state as a chain: an image at 25, then the pages changed in (25, 30].
    let last_at = |upto: u64| (1..=upto).rev().find(|l| (l * 7) % 8 < 4).unwrap();
    let at_20 = Cursor {
        caught_up_to: Lsn(25),
        last_applied: Lsn(last_at(25)),
    };
    let image_path = dir.path().join("image");
    let (image, _) = write_layer(
        &a,
        &image_path,
        LayerKind::Image,
        Lsn::INVALID,
        ts,
        layout,
        at_20,
    )
    .unwrap();
    let changes_path = dir.path().join("changes");
    let (changes, changes_directory) = write_layer(
        &a,
        &changes_path,
        LayerKind::Changes,
        Lsn(25),
        ts,
        layout,
        cursor,
    )
    .unwrap();
    let changed: Vec<u32> = (0..4u32)
        .filter(|&p| {
            a.version_for_checkpoint(PageNo(p), Lsn(30))
                .unwrap()
                .is_some_and(|(l, _)| l > Lsn(25))
        })
        .collect();
    assert!(!changed.is_empty() && changed.len() < 4, "{changed:?}");
    assert_eq!(changes.page_count as usize, changed.len());
    assert_eq!(
        changes_directory, changed,
        "the directory returned is the pages written"
    );
    assert_eq!(changes.kind, LayerKind::Changes);
    let c = TenantPages::create(&dir.path().join("c"), TenantId(1), layout, 16, cache).unwrap();
    let mut held = PageBitmap::new(4);
    let newest = Expected {
        above: Lsn(25),
        ..expect(LayerKind::Changes, 30, changes.page_count, Some(Lsn(last)))
    };
    let from_changes =
        install_layer(&c, &changes_path, ts.0, ts.1, layout, &newest, &mut held).unwrap();
    let oldest = expect(LayerKind::Image, 25, image.page_count, None);
    let from_image =
        install_layer(&c, &image_path, ts.0, ts.1, layout, &oldest, &mut held).unwrap();
    assert_eq!(
        (from_changes, from_image),
        (changed.len() as u64, 4 - changed.len() as u64)
    );
    same_reads(&c);

    // The same chain restored on demand: only the directories first, then each page's
    // record (what ranged reads of the layers return) when a read or a record needs it.
    let d = TenantPages::create(
        &dir.path().join("d"),
        TenantId(1),
        layout,
        16,
        Arc::new(PageCache::new(NonZeroUsize::new(2).unwrap())),
    )
    .unwrap();
    // (The installs above removed the files: write them again.)
    write_layer(
        &a,
        &image_path,
        LayerKind::Image,
        Lsn::INVALID,
        ts,
        layout,
        at_20,
    )
    .unwrap();
    write_layer(
        &a,
        &changes_path,
        LayerKind::Changes,
        Lsn(25),
        ts,
        layout,
        cursor,
    )
    .unwrap();
    let files = [
        (std::fs::read(&changes_path).unwrap(), changes, Lsn(25)),
        (std::fs::read(&image_path).unwrap(), image, Lsn::INVALID),
    ];
    let mut chain = crate::pages::RemoteChain::default();
    for (bytes, meta, above) in &files {
        let tail = layer::tail_range(meta.page_count);
        let directory = layer::decode_tail(
            &bytes[tail.start as usize..tail.end as usize],
            meta.page_count,
            ts.1,
            layout,
        )
        .unwrap();
        let name = if *above == Lsn::INVALID { "i" } else { "c" };
        chain.layers.push(Arc::new(crate::pages::RemoteLayer {
            layer: LayerRef::changes(name.into(), Generation(1), *above, meta, 0),
            directory,
            above: *above,
        }));
    }
    d.set_remote(ts.1, chain);
    let fetch = |remote: &crate::pages::RemotePage| {
        let crate::pages::RemoteSource::Layer { layer, slot } = remote.source else {
            panic!("{remote:?} is not in a layer");
        };
        let (bytes, meta, _) = &files[layer];
        let r = layer::record_range(slot);
        let (lsn, image) = layer::decode_record(
            &bytes[r.start as usize..r.end as usize],
            slot,
            remote.page,
            meta.lsn,
        )
        .unwrap();
        d.install(remote.page, lsn, image).unwrap()
    };
    // A record for a page still remote is refused until the page is fetched.
    let record = RedoRecord {
        lsn: Lsn(41),
        prev_lsn_segment: Lsn(last_at(40)),
        prev_lsn_page: Lsn::INVALID,
        page_no: PageNo(changed[0]),
        is_cpl: true,
        body: RedoBody::Image(vec![7u8; PAGE_SIZE_BYTES]),
    };
    assert!(matches!(
        d.apply(&record),
        Err(ApplyError::NotFetched { .. })
    ));
    let remote = d.remote_pages(std::slice::from_ref(&record));
    assert_eq!(remote.len(), 1);
    assert!(
        matches!(
            remote[0].source,
            crate::pages::RemoteSource::Layer { layer: 0, .. }
        ),
        "the newest layer holding the page"
    );
    assert!(fetch(&remote[0]), "fetched and installed");
    assert!(!fetch(&remote[0]), "a second fetch installs nothing");
    assert!(d.remote_pages(std::slice::from_ref(&record)).is_empty());
    // Every read of every page at every LSN fetches what it needs and answers as the
    // original (or "too old" below the version the chain holds).
    for page in 0..4u32 {
        let (p_lsn, _) = a
            .version_for_checkpoint(PageNo(page), Lsn(30))
            .unwrap()
            .unwrap();
        for lsn in 0..=30u64 {
            let got = match d.lookup(PageNo(page), Lsn(lsn)) {
                Ok(crate::pages::Lookup::Remote(remote)) => {
                    assert!(fetch(&remote));
                    d.get(PageNo(page), Lsn(lsn))
                }
                _ => d.get(PageNo(page), Lsn(lsn)),
            };
            if lsn >= p_lsn.0 {
                assert_eq!(got.unwrap(), a.get(PageNo(page), Lsn(lsn)).unwrap());
            } else {
                assert!(matches!(got, Err(ReadError::LsnTooOld { .. })));
            }
        }
    }
    // Once fetched, records apply on top; an older version installed late is ignored.
    d.apply(&record).unwrap();
    assert!(!fetch(&remote[0]));
    assert_eq!(
        d.get(PageNo(changed[0]), Lsn(41)).unwrap().unwrap()[..],
        [7u8; PAGE_SIZE_BYTES][..]
    );
    d.set_remote(ts.1, crate::pages::RemoteChain::default());
    assert!(d.remote_chain(ts.1).is_none());

    // A changes layer claiming to start above a version it holds is refused.
    write_layer(
        &a,
        &changes_path,
        LayerKind::Changes,
        Lsn(25),
        ts,
        layout,
        cursor,
    )
    .unwrap();
    let lying = Expected {
        above: Lsn(29),
        ..newest
    };
    let mut held = PageBitmap::new(4);
    assert!(install_layer(&c, &changes_path, ts.0, ts.1, layout, &lying, &mut held).is_err());
}
