//! The storage contract: one commit = one MTR of exactly the dirty pages, statelessness,
//! refused commits, failing reads, deadlines, poisoning.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use borealis_core::ErrorKind;
use common::*;
use compute_host::{Compute, ComputeEngine, ComputeError, ExecResponse, PageChangeBody, Value};

fn fill(c: &mut Compute, rows: i64) {
    q(
        c,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB)",
        vec![],
    );
    q(c, "CREATE INDEX t_k ON t(k)", vec![]);
    q(
        c,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO t(k, v) SELECT printf('key-%06d', i), randomblob(400) FROM n",
        vec![Value::Integer(rows)],
    );
}

#[test]
fn a_commit_is_one_mtr_of_exactly_the_dirty_pages() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    fill(&mut c, 500);
    assert!(backend.snapshot().len() > 50, "the table spans many pages");

    // Reads ship nothing.
    let commits = backend.commit_count();
    q(&mut c, "SELECT count(*), sum(length(v)) FROM t", vec![]);
    assert_eq!(backend.commit_count(), commits);

    for (label, statements) in [
        (
            "one row",
            vec!["UPDATE t SET v = substr(v, 1, 399) || x'00' WHERE id = 250"],
        ),
        (
            "a transaction over several pages",
            vec![
                "UPDATE t SET v = randomblob(400) WHERE id % 50 = 0",
                "DELETE FROM t WHERE id BETWEEN 100 AND 120",
                "INSERT INTO t(k, v) VALUES ('new', randomblob(9000))",
            ],
        ),
    ] {
        let before = backend.snapshot();
        let commits = backend.commit_count();
        let req = request(statements.iter().map(|s| stmt(s, vec![])).collect(), true);
        assert!(
            matches!(c.exec(&req, TIMEOUT).unwrap(), ExecResponse::Ok(_)),
            "{label}"
        );
        assert_eq!(
            backend.commit_count(),
            commits + 1,
            "{label}: one commit call"
        );
        let after = backend.snapshot();
        let changed: BTreeSet<u32> = after
            .iter()
            .filter(|(p, img)| before.get(p) != Some(img))
            .map(|(p, _)| *p)
            .collect();
        let store = backend.lock();
        let mtr = store.commits.last().unwrap();
        let shipped: Vec<u32> = mtr.changes.iter().map(|ch| ch.page_no).collect();
        assert!(
            shipped.windows(2).all(|w| w[0] < w[1]),
            "{label}: ascending, no duplicates"
        );
        assert_eq!(
            shipped.iter().copied().collect::<BTreeSet<_>>(),
            changed,
            "{label}: exactly the dirty pages"
        );
        if label == "one row" {
            // In exclusive mode the change counter moves once per session, so the header page
            // is not dirty here: only the row's leaf page is.
            assert_eq!(shipped.len(), 1, "just the leaf page");
            assert!(
                mtr.changes
                    .iter()
                    .all(|ch| matches!(ch.body, PageChangeBody::Delta(_))),
                "small changes ship as deltas"
            );
        }
    }
    assert_eq!(c.stats().commits as usize, backend.commit_count());
}

#[test]
fn a_fresh_instance_sees_everything_committed() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    fill(&mut c, 2000);
    q(&mut c, "UPDATE t SET k = upper(k) WHERE id % 7 = 0", vec![]);
    q(&mut c, "DELETE FROM t WHERE id % 11 = 0", vec![]);
    let dump = |c: &mut Compute| q(c, "SELECT id, k, v FROM t ORDER BY id", vec![]).rows;
    let expected = dump(&mut c);
    drop(c);
    let mut fresh = start(&backend);
    assert_eq!(dump(&mut fresh), expected);
    let r = q(&mut fresh, "PRAGMA integrity_check", vec![]);
    assert_eq!(r.rows, vec![vec![text("ok")]]);
    // The index agrees with the table in the fresh instance too.
    assert_eq!(
        int(
            &mut fresh,
            "SELECT count(*) FROM t INDEXED BY t_k WHERE k >= ''"
        ),
        expected.len() as i64
    );
}

#[test]
fn a_refused_commit_fails_the_statement_and_stores_nothing() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    fill(&mut c, 100);
    let snapshot = backend.snapshot();
    let commits = backend.commit_count();
    backend.lock().refuse_commits = true;
    let err = c
        .exec(
            &request(
                vec![stmt("INSERT INTO t(k) VALUES ('lost')", vec![])],
                false,
            ),
            TIMEOUT,
        )
        .expect_err("the commit was refused");
    match &err {
        ComputeError::Backend(e) => assert_eq!(e.kind, ErrorKind::ReadOnly),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.kind(), ErrorKind::ReadOnly);
    assert_eq!(backend.snapshot(), snapshot, "the page store is unchanged");
    assert_eq!(backend.commit_count(), commits);
    // The instance is poisoned; a new one sees the state before the refused write.
    assert!(c.poisoned().is_some());
    let again = c.exec(&request(vec![stmt("SELECT 1", vec![])], false), TIMEOUT);
    assert!(matches!(again, Err(ComputeError::Poisoned(_))), "{again:?}");
    backend.lock().refuse_commits = false;
    let mut fresh = start(&backend);
    assert_eq!(
        int(&mut fresh, "SELECT count(*) FROM t WHERE k = 'lost'"),
        0
    );
    assert_eq!(int(&mut fresh, "SELECT count(*) FROM t"), 100);
    q(&mut fresh, "INSERT INTO t(k) VALUES ('kept')", vec![]);
    assert_eq!(
        int(
            &mut start(&backend),
            "SELECT count(*) FROM t WHERE k = 'kept'"
        ),
        1
    );
}

#[test]
fn a_failing_page_read_is_a_backend_error() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    fill(&mut c, 1000);
    // A fresh instance with a tiny cache must read pages from the backend.
    let mut small = Compute::start(engine(), Box::new(backend.clone()), 8).unwrap();
    assert_eq!(int(&mut small, "SELECT count(*) FROM t"), 1000);
    backend.lock().fail_reads = true;
    let err = small
        .exec(
            &request(vec![stmt("SELECT sum(length(v)) FROM t", vec![])], false),
            TIMEOUT,
        )
        .expect_err("pages cannot be read");
    match &err {
        ComputeError::Backend(e) => assert_eq!(e.kind, ErrorKind::Unavailable),
        other => panic!("{other:?}"),
    }
    assert!(small.poisoned().is_some());
    // Opening needs page 0.
    let started = Compute::start(engine(), Box::new(backend.clone()), 8);
    assert!(
        matches!(started, Err(ComputeError::Backend(ref e)) if e.kind == ErrorKind::Unavailable)
    );
}

#[test]
fn an_endless_query_times_out_and_poisons_only_its_instance() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(&mut c, "CREATE TABLE t(a)", vec![]);
    let limit = Duration::from_millis(300);
    let started = Instant::now();
    let endless =
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c";
    let err = c
        .exec(&request(vec![stmt(endless, vec![])], false), limit)
        .expect_err("endless");
    let took = started.elapsed();
    println!("a {limit:?} deadline stopped the endless query after {took:?}");
    assert!(
        matches!(err, ComputeError::Timeout { limit: l } if l == limit),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(took >= limit && took < 2 * limit, "took {took:?}");
    assert!(matches!(
        c.exec(&request(vec![], false), TIMEOUT),
        Err(ComputeError::Poisoned(_))
    ));
    // Other instances are unaffected, and the table is still there.
    let mut other = start(&backend);
    assert_eq!(int(&mut other, "SELECT count(*) FROM t"), 0);
}

#[test]
fn running_out_of_guest_memory_fails_cleanly() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    // 400 MB does not fit in a 256 MiB instance.
    let r = c.exec(
        &request(
            vec![stmt("SELECT length(randomblob(400000000))", vec![])],
            false,
        ),
        TIMEOUT,
    );
    println!("400 MB in a 256 MiB instance: {r:?}");
    match r {
        Ok(ExecResponse::Err(e)) => assert!(
            e.message.contains("memory") || e.message.contains("too big"),
            "{e:?}"
        ),
        Err(ComputeError::Trap(_)) => {}
        other => panic!("{other:?}"),
    }
    // Whatever happened, the engine serves new instances.
    let mut fresh = start(&backend);
    assert_eq!(int(&mut fresh, "SELECT 41 + 1"), 42);
}

#[test]
fn computes_run_on_many_threads() {
    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send::<Compute>();
    assert_send_sync::<ComputeEngine>();
    assert_send_sync::<ComputeError>();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            std::thread::spawn(move || {
                let backend = MemBackend::default();
                let mut c = start(&backend);
                q(&mut c, "CREATE TABLE t(a)", vec![]);
                for j in 0..200 {
                    q(
                        &mut c,
                        "INSERT INTO t VALUES (?1)",
                        vec![Value::Integer(i * 1000 + j)],
                    );
                }
                int(&mut start(&backend), "SELECT sum(a) FROM t")
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let i = i as i64;
        assert_eq!(
            h.join().unwrap(),
            (0..200).map(|j| i * 1000 + j).sum::<i64>()
        );
    }
}

#[test]
fn a_backend_serving_a_malformed_page_is_an_error_not_a_panic() {
    struct ShortPages;
    impl compute_host::Backend for ShortPages {
        fn get_page(
            &mut self,
            _: borealis_core::PageNo,
        ) -> Result<Option<Vec<u8>>, compute_host::BackendError> {
            Ok(Some(vec![0; 100]))
        }
        fn commit(&mut self, _: compute_host::Mtr) -> Result<(), compute_host::BackendError> {
            Ok(())
        }
    }
    let started = Compute::start(engine(), Box::new(ShortPages), 100);
    assert!(
        matches!(started, Err(ComputeError::Backend(ref e)) if e.kind == ErrorKind::Internal),
        "{:?}",
        started.err()
    );
}
