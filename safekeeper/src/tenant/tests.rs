//! Unit tests of [`super::Tenant`]: its files, control state and acceptor against real files in
//! a temporary directory.

use super::*;
use crate::records::parse_records;
use borealis_core::redo::RedoBody;
use borealis_core::redo::RedoRecord;
use borealis_core::{PageNo, PAGE_SIZE_BYTES};
use borealis_wire::Body;

/// A budget no test of the log itself comes near.
fn budget(metrics: &Arc<Metrics>) -> Arc<SharedDiskBudget> {
    Arc::new(SharedDiskBudget::new(
        "sk-test".into(),
        crate::disk_budget::DISK_BUDGET_BYTES_DEFAULT,
        metrics.clone(),
    ))
}

use borealis_core::history::from_pairs as h;

/// `(lsn, prev_lsn_segment)` records of page 0, each a CPL with a full image (also used by
/// the store's tests).
pub(crate) fn encode(recs: &[(u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(lsn, prev) in recs {
        RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(prev),
            prev_lsn_page: Lsn::INVALID,
            page_no: PageNo(0),
            is_cpl: true,
            body: RedoBody::Image(vec![lsn as u8; PAGE_SIZE_BYTES]),
        }
        .encode_into(&mut out);
    }
    out
}

fn append(t: &Tenant, epoch: u64, recs: &[(u64, u64)]) -> Result<AppendOutcome, SkError> {
    let raw = encode(recs);
    let parsed = parse_records(&raw)?;
    let out = t.append(SegmentId(0), epoch, Lsn(1), &raw, &parsed)?;
    t.commit(&[SegmentId(0)].into(), &BTreeSet::new())?;
    Ok(out)
}

fn scl(t: &Tenant) -> Lsn {
    t.with_published(|p| p.segments[&SegmentId(0)].scl)
}

#[test]
fn hello_append_truncate_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    assert!(matches!(
        append(&t, 1, &[(1, 0)]),
        Err(SkError::HelloFirst { .. })
    ));
    assert!(t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap().is_empty());
    // Out of order: 3 waits for 2.
    append(&t, 1, &[(1, 0), (3, 2)]).unwrap();
    assert_eq!(scl(&t), Lsn(1));
    append(&t, 1, &[(2, 1), (4, 3)]).unwrap();
    assert_eq!(scl(&t), Lsn(4));
    let r = t
        .read_log(SegmentId(0), (Some(1), 0), Lsn(1), Lsn(3), 1 << 20)
        .unwrap();
    assert_eq!(r.records, encode(&[(2, 1), (3, 2)]));
    assert!(matches!(
        t.read_log(SegmentId(0), (Some(2), 0), Lsn(0), Lsn(9), 1),
        Err(SkError::Fenced { .. })
    ));

    // Epoch 2 starting at 2 drops 3 and 4, which are stored before 2 in the file: a rewrite.
    let states = t.hello(2, Lsn(2), &h(&[(1, 0), (2, 2)])).unwrap();
    assert_eq!(states[0].scl, Lsn(2));
    assert_eq!(states[0].end_lsn, Lsn(2));
    assert!(matches!(
        append(&t, 1, &[(3, 2)]),
        Err(SkError::Fenced {
            ours: 2,
            theirs: 1,
            ..
        })
    ));
    assert!(matches!(
        t.hello(1, Lsn(0), &h(&[(1, 0)])),
        Err(SkError::Fenced { .. })
    ));
    drop(t);

    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    assert_eq!(t.epoch(), 2);
    assert_eq!(scl(&t), Lsn(2));
    let r = t
        .read_log(SegmentId(0), (None, 2), Lsn(0), Lsn(9), 1 << 20)
        .unwrap();
    assert_eq!(r.records, encode(&[(1, 0), (2, 1)]));
}

#[test]
fn an_interrupted_truncation_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    append(&t, 1, &[(1, 0), (2, 1), (3, 2)]).unwrap();
    drop(t);
    // The crash came after the pending state was stored, before any file was truncated.
    control::store(
        &tdir,
        &ControlState::new(h(&[(1, 0), (2, 1)]), Some(Lsn(1))),
    )
    .unwrap();
    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    assert_eq!((t.epoch(), scl(&t)), (2, Lsn(1)));
    assert_eq!(
        control::load(&tdir).unwrap(),
        Some(ControlState::new(h(&[(1, 0), (2, 1)]), None))
    );
}

#[test]
fn latent_corruption_on_read_lowers_the_scl() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    append(&t, 1, &[(1, 0), (2, 1), (3, 2)]).unwrap();
    // Flip a body byte of record 2 behind the safekeeper's back.
    let path = tdir.join("seg-0.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let rec_len = bytes.len() / 3;
    bytes[rec_len + 100] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let r = t
        .read_log(SegmentId(0), (None, 0), Lsn(0), Lsn(3), 1 << 20)
        .unwrap();
    assert_eq!(r.records, encode(&[(1, 0)]), "stops before the bad record");
    assert_eq!(r.scl, Lsn(1));
    assert_eq!(
        metrics
            .crc_failures_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // A peer supplies it again.
    let raw = encode(&[(2, 1)]);
    let out = t
        .repair(SegmentId(0), 1, Lsn(0), &raw, &parse_records(&raw).unwrap())
        .unwrap();
    assert_eq!(out.written, 1);
    t.commit(&[SegmentId(0)].into(), &BTreeSet::new()).unwrap();
    assert_eq!(scl(&t), Lsn(3));
}

#[test]
fn a_trim_is_durable_refuses_reads_below_it_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    append(&t, 1, &[(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]).unwrap();
    // A member behind the checkpoint's epoch refuses.
    assert!(matches!(
        t.trim(SegmentId(0), 2, Lsn(3)),
        Err(SkError::Fenced { .. })
    ));
    assert_eq!(t.trim(SegmentId(0), 1, Lsn(3)).unwrap(), Lsn(3));
    let published = |t: &Tenant| {
        t.with_published(|p| {
            let s = &p.segments[&SegmentId(0)];
            (s.base, s.scl, s.last_cpl)
        })
    };
    assert_eq!(published(&t), (Lsn(3), Lsn(5), Lsn(5)));
    // Above own SCL: only through what is held on the chain.
    assert_eq!(t.trim(SegmentId(0), 1, Lsn(99)).unwrap(), Lsn(5));
    assert_eq!(published(&t), (Lsn(5), Lsn(5), Lsn(5)));
    append(&t, 1, &[(6, 5), (7, 6)]).unwrap();
    let err = t
        .read_log(SegmentId(0), (None, 0), Lsn(2), Lsn(9), 1 << 20)
        .unwrap_err();
    assert!(
        matches!(err, SkError::Trimmed { base: Lsn(5), .. }),
        "{err}"
    );
    assert!(matches!(
        err.to_body(),
        Body::LogTrimmed { base: Lsn(5), .. }
    ));
    let r = t
        .read_log(SegmentId(0), (None, 0), Lsn(5), Lsn(9), 1 << 20)
        .unwrap();
    assert_eq!(r.records, encode(&[(6, 5), (7, 6)]));
    drop(t);

    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    assert_eq!(published(&t), (Lsn(5), Lsn(7), Lsn(7)));
    let bytes = std::fs::metadata(tdir.join("seg-0.log")).unwrap().len();
    assert_eq!(bytes as usize, encode(&[(6, 5), (7, 6)]).len());
    // A new epoch keeps the trim points in the control file.
    t.hello(2, Lsn(7), &h(&[(1, 0), (2, 7)])).unwrap();
    let state = control::load(&tdir).unwrap().unwrap();
    assert_eq!(state.trims.len(), 1);
    assert_eq!(state.trims[0].point.base, Lsn(5));
}

#[test]
fn the_lsn_index_holds_only_durable_records_and_refuses_below_the_trim_point() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(
        &dir.path().join("t"),
        TenantId(7),
        metrics.clone(),
        budget(&metrics),
    )
    .unwrap();
    let s0 = SegmentId(0);
    assert_eq!(
        t.read_lsns(s0, Lsn(0), Lsn(9), 10).unwrap(),
        (Lsn::INVALID, vec![], Lsn::INVALID),
        "a segment never written holds nothing"
    );
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    append(&t, 1, &[(1, 0), (2, 1), (4, 2)]).unwrap();
    // Appended, not yet fsynced: not in the index.
    let raw = encode(&[(5, 4)]);
    t.append(s0, 1, Lsn(1), &raw, &parse_records(&raw).unwrap())
        .unwrap();
    let lsns = |(before, entries, scl): (Lsn, Vec<LsnEntry>, Lsn)| {
        let l: Vec<u64> = entries.iter().map(|e| e.lsn.0).collect();
        (before.0, l, scl.0)
    };
    assert_eq!(
        lsns(t.read_lsns(s0, Lsn(1), Lsn(9), 10).unwrap()),
        (1, vec![2, 4], 4)
    );
    t.commit(&[s0].into(), &BTreeSet::new()).unwrap();
    let (_, entries, _) = t.read_lsns(s0, Lsn(0), Lsn(9), 10).unwrap();
    assert_eq!(
        entries.last(),
        Some(&LsnEntry {
            lsn: Lsn(5),
            prev_lsn_segment: Lsn(4),
            is_cpl: true
        })
    );
    assert_eq!(t.trim(s0, 1, Lsn(2)).unwrap(), Lsn(2));
    assert!(matches!(
        t.read_lsns(s0, Lsn(1), Lsn(9), 10),
        Err(SkError::Trimmed { base: Lsn(2), .. })
    ));
    assert_eq!(
        lsns(t.read_lsns(s0, Lsn(2), Lsn(9), 1).unwrap()),
        (2, vec![4], 5)
    );
}

#[test]
fn a_trim_interrupted_after_its_control_file_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    append(&t, 1, &[(1, 0), (2, 1), (3, 2)]).unwrap();
    drop(t);
    // The crash came after the trim point was stored, before the file was rewritten.
    let point = crate::acceptor::TrimPoint {
        base: Lsn(2),
        last_cpl: Lsn(2),
    };
    control::store(
        &tdir,
        &ControlState::new(h(&[(1, 0)]), None).with_trims(&[(SegmentId(0), point)]),
    )
    .unwrap();
    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    let (base, scl) = t.with_published(|p| {
        let s = &p.segments[&SegmentId(0)];
        (s.base, s.scl)
    });
    assert_eq!((base, scl), (Lsn(2), Lsn(3)));
    let bytes = std::fs::metadata(tdir.join("seg-0.log")).unwrap().len();
    assert_eq!(bytes as usize, encode(&[(3, 2)]).len());
}

/// Many segments, each with a trim the crash interrupted after its control file and in the
/// middle of its rewrite (a temporary copy left behind): the open removes the leftovers and
/// finishes every trim. It once failed here, for good: finishing a trim consumed the
/// temporary name the open then tried to remove.
#[test]
fn many_interrupted_trims_are_finished_in_one_open() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    let segments: Vec<SegmentId> = (0..64).map(SegmentId).collect();
    let raw = encode(&[(1, 0), (2, 1), (3, 2)]);
    let parsed = parse_records(&raw).unwrap();
    for &s in &segments {
        t.append(s, 1, Lsn(1), &raw, &parsed).unwrap();
    }
    t.commit(&segments.iter().copied().collect(), &BTreeSet::new())
        .unwrap();
    drop(t);
    // The crash stopped the rewrite of every file after its temporary copy was written.
    for s in &segments {
        std::fs::write(tdir.join(format!("seg-{}.log.tmp", s.0)), b"partial copy").unwrap();
    }
    let trims: Vec<(SegmentId, TrimPoint)> =
        segments.iter().map(|&s| (s, trim_point(2, 2))).collect();
    control::store(
        &tdir,
        &ControlState::new(h(&[(1, 0)]), None).with_trims(&trims),
    )
    .unwrap();
    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    for s in &segments {
        let (base, scl) = t.with_published(|p| (p.segments[s].base, p.segments[s].scl));
        assert_eq!((base, scl), (Lsn(2), Lsn(3)), "segment {s}");
        let bytes = std::fs::metadata(tdir.join(format!("seg-{}.log", s.0)))
            .unwrap()
            .len();
        assert_eq!(bytes as usize, encode(&[(3, 2)]).len(), "segment {s}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&tdir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn trim_point(base: u64, last_cpl: u64) -> TrimPoint {
    TrimPoint {
        base: Lsn(base),
        last_cpl: Lsn(last_cpl),
    }
}

/// `(base, scl, last_cpl)` of segment 0 as published.
fn base_scl_cpl(t: &Tenant) -> (Lsn, Lsn, Lsn) {
    t.with_published(|p| {
        let s = &p.segments[&SegmentId(0)];
        (s.base, s.scl, s.last_cpl)
    })
}

#[test]
fn a_peers_trim_point_is_adopted_durably_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    // 1..=3, then a hole at 4..=5 the peers trimmed away, then 6 and 7.
    append(&t, 1, &[(1, 0), (2, 1), (3, 2), (6, 5), (7, 6)]).unwrap();
    assert_eq!(base_scl_cpl(&t), (Lsn(0), Lsn(3), Lsn(3)));

    // Not adopted: another epoch, not behind, above the peer's SCL. Nothing changes.
    let adopt = |epoch, peer_scl, p| t.adopt_trim(SegmentId(0), epoch, Lsn(peer_scl), p);
    let err = adopt(2, 9, trim_point(5, 5)).unwrap_err();
    assert!(err.to_string().contains("not adopted in epoch 1"), "{err}");
    assert_eq!(
        adopt(1, 9, trim_point(3, 3)).unwrap(),
        AdoptOutcome::NotBehind { scl: Lsn(3) }
    );
    assert!(matches!(
        adopt(1, 4, trim_point(5, 5)),
        Err(SkError::Invalid { .. })
    ));
    assert_eq!(control::load(&tdir).unwrap().unwrap().trims, vec![]);
    assert_eq!(
        metrics
            .trim_points_adopted_total
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    assert_eq!(
        adopt(1, 9, trim_point(5, 5)).unwrap(),
        AdoptOutcome::Adopted {
            base: Lsn(5),
            last_cpl: Lsn(5),
            old_scl: Lsn(3),
            scl: Lsn(7),
            dropped: 3
        }
    );
    assert_eq!(
        metrics
            .trim_points_adopted_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(base_scl_cpl(&t), (Lsn(5), Lsn(7), Lsn(7)));
    let state = control::load(&tdir).unwrap().unwrap();
    assert_eq!(state.trim_points(), vec![(SegmentId(0), trim_point(5, 5))]);
    assert_eq!(on_disk(&tdir), encode(&[(6, 5), (7, 6)]).len() as u64);
    // Below the adopted base: refused like any trimmed member, naming the adopted point.
    let err = t
        .read_log(SegmentId(0), (None, 0), Lsn(3), Lsn(9), 1 << 20)
        .unwrap_err();
    assert_eq!(
        err.to_body(),
        Body::LogTrimmed {
            base: Lsn(5),
            last_cpl: Lsn(5)
        }
    );
    // A peer's fill goes on from the base.
    let raw = encode(&[(8, 7)]);
    t.repair(SegmentId(0), 1, Lsn(0), &raw, &parse_records(&raw).unwrap())
        .unwrap();
    t.commit(&[SegmentId(0)].into(), &BTreeSet::new()).unwrap();
    assert_eq!(scl(&t), Lsn(8));
    drop(t);

    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    assert_eq!(base_scl_cpl(&t), (Lsn(5), Lsn(8), Lsn(8)));
    let r = t
        .read_log(SegmentId(0), (None, 0), Lsn(5), Lsn(9), 1 << 20)
        .unwrap();
    assert_eq!(r.records, encode(&[(6, 5), (7, 6), (8, 7)]));
}

#[test]
fn an_adoption_interrupted_after_its_control_file_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    append(&t, 1, &[(1, 0), (2, 1), (6, 5), (7, 6)]).unwrap();
    assert_eq!(scl(&t), Lsn(2));
    drop(t);
    // The crash came after the adopted trim point (above the SCL) was stored, before the
    // file was rewritten: the open finishes it exactly as an interrupted trim.
    control::store(
        &tdir,
        &ControlState::new(h(&[(1, 0)]), None).with_trims(&[(SegmentId(0), trim_point(5, 4))]),
    )
    .unwrap();
    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    assert_eq!(base_scl_cpl(&t), (Lsn(5), Lsn(7), Lsn(7)));
    assert_eq!(on_disk(&tdir), encode(&[(6, 5), (7, 6)]).len() as u64);
}

#[test]
fn a_trim_point_adopted_by_an_empty_member_needs_no_segment_file() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    assert_eq!(
        t.adopt_trim(SegmentId(0), 1, Lsn(61), trim_point(60, 60))
            .unwrap(),
        AdoptOutcome::Adopted {
            base: Lsn(60),
            last_cpl: Lsn(60),
            old_scl: Lsn(0),
            scl: Lsn(60),
            dropped: 0
        }
    );
    assert_eq!(base_scl_cpl(&t), (Lsn(60), Lsn(60), Lsn(60)));
    assert!(!tdir.join("seg-0.log").exists());
    drop(t);
    // Recovery's GetState after a crash: the adopted SCL and last CPL, nothing held.
    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), budget(&metrics)).unwrap();
    assert_eq!(base_scl_cpl(&t), (Lsn(60), Lsn(60), Lsn(60)));
    let raw = encode(&[(61, 60)]);
    t.repair(SegmentId(0), 1, Lsn(0), &raw, &parse_records(&raw).unwrap())
        .unwrap();
    t.commit(&[SegmentId(0)].into(), &BTreeSet::new()).unwrap();
    assert_eq!(base_scl_cpl(&t), (Lsn(60), Lsn(61), Lsn(61)));
}

/// The lengths of the tenant's segment files, from the file system.
fn on_disk(tdir: &Path) -> u64 {
    std::fs::read_dir(tdir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| parse_segment_file_name(&e.file_name().to_string_lossy()).is_some())
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
fn the_disk_budget_counts_every_change_to_the_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let b = budget(&metrics);
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), b.clone()).unwrap();
    let counted = |b: &SharedDiskBudget| b.snapshot().retained_bytes;
    assert_eq!(counted(&b), 0);
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    // Out of order, so the truncation below has to rewrite the file.
    append(&t, 1, &[(1, 0), (2, 1), (5, 4)]).unwrap();
    append(&t, 1, &[(3, 2)]).unwrap();
    assert_eq!(
        counted(&b),
        encode(&[(1, 0), (2, 1), (5, 4), (3, 2)]).len() as u64
    );
    assert_eq!(counted(&b), on_disk(&tdir));
    // A duplicate writes nothing and counts nothing; a peer's fill counts.
    append(&t, 1, &[(3, 2)]).unwrap();
    let raw = encode(&[(4, 3), (6, 5)]);
    t.repair(SegmentId(0), 1, Lsn(0), &raw, &parse_records(&raw).unwrap())
        .unwrap();
    t.commit(&[SegmentId(0)].into(), &BTreeSet::new()).unwrap();
    assert_eq!(counted(&b), on_disk(&tdir));
    assert_eq!(counted(&b), t.retained_bytes());
    assert_eq!(
        metrics
            .retained_log_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        on_disk(&tdir)
    );
    // A new epoch truncates above 4 (5 and 6 go, by a rewrite), a trim drops 1 and 2.
    t.hello(2, Lsn(4), &h(&[(1, 0), (2, 4)])).unwrap();
    assert_eq!(
        on_disk(&tdir),
        encode(&[(1, 0), (2, 1), (3, 2), (4, 3)]).len() as u64
    );
    assert_eq!(counted(&b), on_disk(&tdir));
    assert_eq!(t.trim(SegmentId(0), 2, Lsn(2)).unwrap(), Lsn(2));
    assert_eq!(counted(&b), encode(&[(3, 2), (4, 3)]).len() as u64);
    assert_eq!(counted(&b), on_disk(&tdir));
    // A second segment and a restart: counted again from what is opened.
    let raw = encode(&[(1, 0)]);
    t.append(SegmentId(3), 2, Lsn(4), &raw, &parse_records(&raw).unwrap())
        .unwrap();
    assert_eq!(counted(&b), on_disk(&tdir));
    drop(t);
    let b = budget(&metrics);
    let t = Tenant::open(&tdir, TenantId(7), metrics.clone(), b.clone()).unwrap();
    assert_eq!(counted(&b), on_disk(&tdir));
    assert_eq!(counted(&b), t.retained_bytes());
}

#[test]
fn an_append_over_the_budget_is_refused_whole_until_a_trim_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let metrics = Arc::new(Metrics::default());
    let record_bytes = encode(&[(1, 0)]).len() as u64;
    // Room for three and a half records.
    let b = Arc::new(SharedDiskBudget::new(
        "sk-a1".into(),
        record_bytes * 7 / 2,
        metrics.clone(),
    ));
    let t = Tenant::create(&tdir, TenantId(7), metrics.clone(), b.clone()).unwrap();
    t.hello(1, Lsn(0), &h(&[(1, 0)])).unwrap();
    append(&t, 1, &[(1, 0), (2, 1), (3, 2)]).unwrap();
    assert_eq!(scl(&t), Lsn(3));

    let raw = encode(&[(4, 3), (5, 4)]);
    let err = t
        .append(SegmentId(0), 1, Lsn(3), &raw, &parse_records(&raw).unwrap())
        .unwrap_err();
    assert!(matches!(err, SkError::DiskBudgetExhausted(_)), "{err}");
    assert_eq!(err.kind(), borealis_core::ErrorKind::ReadOnly);
    assert!(
        err.to_string()
            .starts_with("disk budget exhausted on safekeeper sk-a1: "),
        "{err}"
    );
    // Nothing of it happened: not in the file, not on the chain, not even its VDL.
    assert_eq!(on_disk(&tdir), 3 * record_bytes);
    assert!(b.snapshot().exhausted);
    t.commit(&[SegmentId(0)].into(), &BTreeSet::new()).unwrap();
    assert_eq!(scl(&t), Lsn(3));
    assert_eq!(t.with_published(|p| p.known_vdl), Lsn(1));

    // A VDL notice (no records) and a repeat of a held record are accepted.
    let out = t.append(SegmentId(0), 1, Lsn(2), &[], &[]).unwrap();
    assert_eq!(out, AppendOutcome::default());
    let raw = encode(&[(3, 2)]);
    let out = t
        .append(SegmentId(0), 1, Lsn(2), &raw, &parse_records(&raw).unwrap())
        .unwrap();
    assert_eq!(out.duplicates, 1);
    t.commit(&BTreeSet::new(), &[SegmentId(0)].into()).unwrap();
    assert_eq!(t.with_published(|p| p.known_vdl), Lsn(2));

    // A peer's fill is never refused, even past the budget; the writer's next append is.
    let raw = encode(&[(4, 3)]);
    t.repair(SegmentId(0), 1, Lsn(0), &raw, &parse_records(&raw).unwrap())
        .unwrap();
    t.commit(&[SegmentId(0)].into(), &BTreeSet::new()).unwrap();
    assert_eq!(scl(&t), Lsn(4));
    assert_eq!(b.snapshot().retained_bytes, 4 * record_bytes);
    assert!(matches!(
        append(&t, 1, &[(5, 4)]),
        Err(SkError::DiskBudgetExhausted(_))
    ));

    // The pageserver checkpointed through 3: room again, without a restart.
    assert_eq!(t.trim(SegmentId(0), 1, Lsn(3)).unwrap(), Lsn(3));
    assert!(!b.snapshot().exhausted);
    assert_eq!(b.snapshot().retained_bytes, record_bytes);
    append(&t, 1, &[(5, 4), (6, 5)]).unwrap();
    assert_eq!(scl(&t), Lsn(6));
    assert_eq!(b.snapshot().retained_bytes, on_disk(&tdir));
}

#[test]
fn segment_file_names() {
    assert_eq!(
        parse_segment_file_name(&segment_file_name(SegmentId(12))),
        Some(SegmentId(12))
    );
    assert_eq!(parse_segment_file_name("seg-.log"), None);
    assert_eq!(parse_segment_file_name("seg-+1.log"), None);
    assert_eq!(parse_segment_file_name("seg-1.log.tmp"), None);
}
