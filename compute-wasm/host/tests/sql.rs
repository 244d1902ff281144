//! SQL semantics through the compute, against an in-memory page store.

mod common;

use common::*;
use compute_host::{ExecErrorKind, ExecResponse, Value};

#[test]
fn ddl_inserts_indexes_joins_aggregates() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(
        &mut c,
        "CREATE TABLE author(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        vec![],
    );
    q(
        &mut c,
        "CREATE TABLE book(id INTEGER PRIMARY KEY, author INTEGER REFERENCES author(id), title TEXT, year INTEGER, price REAL)",
        vec![],
    );
    q(&mut c, "CREATE INDEX book_year ON book(year)", vec![]);
    for (i, name) in ["Le Guin", "Lem", "Banks"].iter().enumerate() {
        let r = q(
            &mut c,
            "INSERT INTO author(id, name) VALUES (?, ?)",
            vec![Value::Integer(i as i64 + 1), text(name)],
        );
        assert_eq!(r.rows_affected, 1);
        assert_eq!(r.last_insert_rowid, Some(i as i64 + 1));
    }
    for i in 0..300i64 {
        q(
            &mut c,
            "INSERT INTO book(author, title, year, price) VALUES (?1, ?2, ?3, ?4)",
            vec![
                Value::Integer(i % 3 + 1),
                text(&format!("title {i}")),
                Value::Integer(1950 + i % 60),
                Value::Real(i as f64 * 0.5),
            ],
        );
    }
    let r = q(
        &mut c,
        "SELECT a.name, count(*), sum(b.price), min(b.year), max(b.year)
           FROM book b JOIN author a ON a.id = b.author
          GROUP BY a.name ORDER BY a.name",
        vec![],
    );
    assert_eq!(
        r.columns,
        [
            "name",
            "count(*)",
            "sum(b.price)",
            "min(b.year)",
            "max(b.year)"
        ]
    );
    assert_eq!(r.rows.len(), 3);
    assert_eq!(r.rows[0][0], text("Banks"));
    assert_eq!(r.rows[0][1], Value::Integer(100));
    let total: f64 = (0..300).map(|i| i as f64 * 0.5).sum();
    let sum: f64 = r
        .rows
        .iter()
        .map(|row| match row[2] {
            Value::Real(f) => f,
            _ => panic!(),
        })
        .sum();
    assert_eq!(sum, total);
    // The index is used and agrees with a scan.
    let plan = q(
        &mut c,
        "EXPLAIN QUERY PLAN SELECT count(*) FROM book WHERE year = 1960",
        vec![],
    );
    assert!(format!("{plan:?}").contains("book_year"), "{plan:?}");
    assert_eq!(
        int(&mut c, "SELECT count(*) FROM book WHERE year = 1960"),
        5
    );
    assert_eq!(
        int(
            &mut c,
            "SELECT count(*) FROM book NOT INDEXED WHERE year = 1960"
        ),
        5
    );
    let r = q(
        &mut c,
        "UPDATE book SET price = price + 1 WHERE year < 1960",
        vec![],
    );
    assert_eq!(r.rows_affected, 50);
    assert_eq!(r.last_insert_rowid, None);
    let r = q(&mut c, "DELETE FROM book WHERE author = 2", vec![]);
    assert_eq!(r.rows_affected, 100);
    let r = q(&mut c, "ALTER TABLE book ADD COLUMN isbn TEXT", vec![]);
    assert_eq!(r.rows_affected, 0);
    assert_eq!(
        int(&mut c, "SELECT count(*) FROM book WHERE isbn IS NULL"),
        200
    );
    let by_index = int(
        &mut c,
        "SELECT count(*) FROM book WHERE year BETWEEN 1960 AND 1970",
    );
    q(&mut c, "DROP INDEX book_year", vec![]);
    assert_eq!(
        int(
            &mut c,
            "SELECT count(*) FROM book WHERE year BETWEEN 1960 AND 1970"
        ),
        by_index
    );
    assert_eq!(
        by_index,
        (0..300)
            .filter(|i| i % 3 != 1 && (10..=20).contains(&(i % 60)))
            .count() as i64
    );
    let r = q(&mut c, "SELECT 1, 2.5, 'x', x'0102', NULL", vec![]);
    assert_eq!(
        r.rows,
        vec![vec![
            Value::Integer(1),
            Value::Real(2.5),
            text("x"),
            Value::Blob(vec![1, 2]),
            Value::Null
        ]]
    );
    int_ok(&mut c);
}

/// `PRAGMA integrity_check` answers the text "ok"; this returns "ok" or panics with the answer.
fn int_ok(c: &mut compute_host::Compute) -> String {
    let r = q(c, "PRAGMA integrity_check", vec![]);
    assert_eq!(r.rows, vec![vec![text("ok")]]);
    "ok".into()
}

#[test]
fn transactional_request_is_all_or_nothing() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(
        &mut c,
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT UNIQUE)",
        vec![],
    );
    let before = backend.commit_count();
    let snapshot = backend.snapshot();
    let req = request(
        vec![
            stmt("INSERT INTO t(b) VALUES ('one')", vec![]),
            stmt("INSERT INTO t(b) VALUES ('two')", vec![]),
            stmt("INSERT INTO t(b) VALUES ('one')", vec![]), // violates UNIQUE
        ],
        true,
    );
    match c.exec(&req, TIMEOUT).unwrap() {
        ExecResponse::Err(e) => {
            assert_eq!(e.kind, ExecErrorKind::Sql);
            assert_eq!(e.statement, 2);
            assert!(e.message.contains("UNIQUE"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 0);
    assert_eq!(backend.commit_count(), before, "nothing was shipped");
    assert_eq!(backend.snapshot(), snapshot);

    let req = request(
        vec![
            stmt("INSERT INTO t(b) VALUES ('one')", vec![]),
            stmt("INSERT INTO t(b) VALUES ('two')", vec![]),
            stmt("SELECT count(*) FROM t", vec![]),
        ],
        true,
    );
    match c.exec(&req, TIMEOUT).unwrap() {
        ExecResponse::Ok(r) => {
            assert_eq!(r.len(), 3);
            assert_eq!(r[1].last_insert_rowid, Some(2));
            assert_eq!(r[2].rows, vec![vec![Value::Integer(2)]]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        backend.commit_count(),
        before + 1,
        "one transaction, one MTR"
    );

    // Transaction control inside a transactional request would break the all-or-nothing.
    let req = request(
        vec![
            stmt("INSERT INTO t(b) VALUES ('three')", vec![]),
            stmt("COMMIT", vec![]),
        ],
        true,
    );
    match c.exec(&req, TIMEOUT).unwrap() {
        ExecResponse::Err(e) => assert_eq!((e.kind, e.statement), (ExecErrorKind::Invalid, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 2);
}

#[test]
fn begin_commit_rollback_statements() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(&mut c, "CREATE TABLE t(a)", vec![]);
    let commits = backend.commit_count();
    let run = |c: &mut compute_host::Compute, sqls: &[&str]| {
        let req = request(sqls.iter().map(|s| stmt(s, vec![])).collect(), false);
        c.exec(&req, TIMEOUT).unwrap()
    };
    assert!(matches!(
        run(
            &mut c,
            &[
                "BEGIN",
                "INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (2)",
                "ROLLBACK"
            ]
        ),
        ExecResponse::Ok(_)
    ));
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 0);
    assert_eq!(backend.commit_count(), commits);
    assert!(matches!(
        run(
            &mut c,
            &[
                "BEGIN",
                "INSERT INTO t VALUES (1)",
                "INSERT INTO t VALUES (2)",
                "COMMIT"
            ]
        ),
        ExecResponse::Ok(_)
    ));
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 2);
    assert_eq!(backend.commit_count(), commits + 1);
    // Savepoints inside a transaction.
    let r = run(
        &mut c,
        &[
            "BEGIN",
            "INSERT INTO t VALUES (3)",
            "SAVEPOINT s",
            "INSERT INTO t VALUES (4)",
            "ROLLBACK TO s",
            "RELEASE s",
            "COMMIT",
        ],
    );
    assert!(matches!(r, ExecResponse::Ok(_)), "{r:?}");
    assert_eq!(int(&mut c, "SELECT sum(a) FROM t"), 6);
    // A request never leaves a transaction open: it is rolled back and the request fails.
    match run(&mut c, &["BEGIN", "INSERT INTO t VALUES (100)"]) {
        ExecResponse::Err(e) => assert_eq!(e.kind, ExecErrorKind::Invalid),
        other => panic!("{other:?}"),
    }
    assert_eq!(int(&mut c, "SELECT sum(a) FROM t"), 6);
    // An error inside a user transaction rolls the whole of it back too.
    match run(
        &mut c,
        &[
            "BEGIN",
            "INSERT INTO t VALUES (100)",
            "INSERT INTO nope VALUES (1)",
            "COMMIT",
        ],
    ) {
        ExecResponse::Err(e) => assert_eq!((e.kind, e.statement), (ExecErrorKind::Sql, 2)),
        other => panic!("{other:?}"),
    }
    assert_eq!(int(&mut c, "SELECT sum(a) FROM t"), 6);
    assert_eq!(backend.commit_count(), commits + 2);
}

#[test]
fn constraint_and_other_sql_errors_are_sql_errors() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(&mut c, "CREATE TABLE p(id INTEGER PRIMARY KEY)", vec![]);
    q(
        &mut c,
        "CREATE TABLE t(a INTEGER NOT NULL CHECK (a > 0), p INTEGER REFERENCES p(id))",
        vec![],
    );
    for (sql, needle) in [
        ("INSERT INTO t(a) VALUES (NULL)", "NOT NULL"),
        ("INSERT INTO t(a) VALUES (-1)", "CHECK"),
        ("INSERT INTO t(a, p) VALUES (1, 42)", "FOREIGN KEY"),
        ("SELEC 1", "syntax error"),
        ("SELECT * FROM missing", "no such table"),
    ] {
        let e = q_err(&mut c, sql, vec![]);
        assert_eq!(e.kind, ExecErrorKind::Sql, "{sql}");
        assert!(e.message.contains(needle), "{sql}: {}", e.message);
    }
    // The compute carries on after SQL errors.
    q(&mut c, "INSERT INTO t(a) VALUES (1)", vec![]);
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 1);
    assert!(c.poisoned().is_none());
}

#[test]
fn a_row_larger_than_a_page_round_trips() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(
        &mut c,
        "CREATE TABLE blobs(id INTEGER PRIMARY KEY, data BLOB, note TEXT)",
        vec![],
    );
    let blob: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let note = "é".repeat(20_000);
    let before = backend.commit_count();
    q(
        &mut c,
        "INSERT INTO blobs(data, note) VALUES (?1, ?2)",
        vec![Value::Blob(blob.clone()), text(&note)],
    );
    assert_eq!(
        backend.commit_count(),
        before + 1,
        "one insert, one MTR, however many pages"
    );
    assert!(
        backend.lock().commits.last().unwrap().changes.len() > 30,
        "overflow pages were shipped"
    );
    let r = q(&mut c, "SELECT data, note FROM blobs WHERE id = 1", vec![]);
    assert_eq!(r.rows, vec![vec![Value::Blob(blob.clone()), text(&note)]]);
    // And from storage alone, in a fresh instance.
    let mut fresh = start(&backend);
    let r = q(
        &mut fresh,
        "SELECT data, note FROM blobs WHERE id = 1",
        vec![],
    );
    assert_eq!(r.rows, vec![vec![Value::Blob(blob), text(&note)]]);
}

#[test]
fn request_errors_are_invalid() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(&mut c, "CREATE TABLE t(a)", vec![]);
    let e = q_err(
        &mut c,
        "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)",
        vec![],
    );
    assert_eq!(e.kind, ExecErrorKind::Invalid, "{e:?}");
    assert_eq!(
        int(&mut c, "SELECT count(*) FROM t"),
        0,
        "nothing of a multi-statement entry ran"
    );
    let e = q_err(&mut c, "INSERT INTO t VALUES (?1)", vec![]);
    assert_eq!(e.kind, ExecErrorKind::Invalid, "{e:?}");
    let e = q_err(
        &mut c,
        "INSERT INTO t VALUES (?1)",
        vec![Value::Integer(1), Value::Integer(2)],
    );
    assert_eq!(e.kind, ExecErrorKind::Invalid, "{e:?}");
    let e = q_err(&mut c, "  -- only a comment", vec![]);
    assert_eq!(e.kind, ExecErrorKind::Invalid, "{e:?}");
    // Trailing semicolons, whitespace and comments are fine.
    q(&mut c, "INSERT INTO t VALUES (1);; -- done\n ", vec![]);
    assert_eq!(int(&mut c, "SELECT count(*) FROM t;"), 1);
}

#[test]
fn the_storage_model_pragmas_cannot_be_changed() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    for sql in [
        "PRAGMA page_size = 8192",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA journal_mode = WAL",
        "PRAGMA main.locking_mode = NORMAL",
        "PRAGMA synchronous = OFF",
        "PRAGMA cache_spill = ON",
        "PRAGMA cache_size = 1000000",
    ] {
        let e = q_err(&mut c, sql, vec![]);
        assert_eq!(e.kind, ExecErrorKind::Sql, "{sql}");
        assert!(
            e.message.contains("cannot be changed"),
            "{sql}: {}",
            e.message
        );
    }
    // Reading them is fine.
    assert_eq!(
        q(&mut c, "PRAGMA journal_mode", vec![]).rows,
        vec![vec![text("memory")]]
    );
    assert_eq!(int(&mut c, "PRAGMA page_size"), 4096);
    // Other files cannot be opened.
    let e = q_err(&mut c, "ATTACH 'other.db' AS other", vec![]);
    assert_eq!(e.kind, ExecErrorKind::Sql, "{e:?}");
    let e = q_err(&mut c, "VACUUM INTO 'copy.db'", vec![]);
    assert_ne!(e.kind, ExecErrorKind::Storage, "{e:?}");
    // In-memory attachments are the tenant's own business.
    q(&mut c, "ATTACH ':memory:' AS scratch", vec![]);
    q(&mut c, "CREATE TABLE scratch.x(a)", vec![]);
}

#[test]
fn results_past_the_limit_are_too_large_and_take_no_effect() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(
        &mut c,
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT)",
        vec![],
    );
    q(&mut c, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO t(b) SELECT printf('%0100d', i) FROM n", vec![]);
    let small = |statements| compute_host::ExecRequest {
        statements,
        transaction: false,
        result_bytes_max: 10_000,
        timeout_ms: None,
        keyed: None,
    };
    match c
        .exec(&small(vec![stmt("SELECT * FROM t", vec![])]), TIMEOUT)
        .unwrap()
    {
        ExecResponse::Err(e) => assert_eq!(e.kind, ExecErrorKind::TooLarge),
        other => panic!("{other:?}"),
    }
    // A write that returns too much is undone as a whole.
    let commits = backend.commit_count();
    match c
        .exec(
            &small(vec![stmt("UPDATE t SET b = b || 'x' RETURNING b", vec![])]),
            TIMEOUT,
        )
        .unwrap()
    {
        ExecResponse::Err(e) => assert_eq!(e.kind, ExecErrorKind::TooLarge),
        other => panic!("{other:?}"),
    }
    assert_eq!(backend.commit_count(), commits);
    assert_eq!(int(&mut c, "SELECT count(*) FROM t WHERE b LIKE '%x'"), 0);
    let r = q(&mut c, "DELETE FROM t WHERE a <= 2 RETURNING a", vec![]);
    assert_eq!(
        r.rows,
        vec![vec![Value::Integer(1)], vec![Value::Integer(2)]]
    );
    assert_eq!(r.rows_affected, 2);
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 998);
}

#[test]
fn rows_affected_and_last_insert_rowid() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    let r = q(&mut c, "CREATE TABLE t(a INTEGER PRIMARY KEY, b)", vec![]);
    assert_eq!((r.rows_affected, r.last_insert_rowid), (0, None));
    let r = q(&mut c, "INSERT INTO t VALUES (10, 'x'), (20, 'y')", vec![]);
    assert_eq!((r.rows_affected, r.last_insert_rowid), (2, Some(20)));
    let r = q(&mut c, "SELECT * FROM t", vec![]);
    assert_eq!((r.rows_affected, r.last_insert_rowid), (0, None));
    let r = q(&mut c, "UPDATE t SET b = 'z'", vec![]);
    assert_eq!((r.rows_affected, r.last_insert_rowid), (2, None));
    let r = q(&mut c, "INSERT OR IGNORE INTO t VALUES (10, 'dup')", vec![]);
    assert_eq!((r.rows_affected, r.last_insert_rowid), (0, None));
    let r = q(&mut c, "REPLACE INTO t VALUES (10, 'new')", vec![]);
    assert_eq!((r.rows_affected, r.last_insert_rowid), (1, Some(10)));
    let r = q(&mut c, "DELETE FROM t", vec![]);
    assert_eq!((r.rows_affected, r.last_insert_rowid), (2, None));
    let r = q(
        &mut c,
        "SELECT typeof(?1), typeof(?2), ?3, length(?4)",
        vec![
            Value::Null,
            Value::Real(1.0),
            text("ü"),
            Value::Blob(vec![0; 5]),
        ],
    );
    assert_eq!(
        r.rows,
        vec![vec![
            text("null"),
            text("real"),
            text("ü"),
            Value::Integer(5)
        ]]
    );
}

#[test]
fn vacuum_shrinks_the_volume_and_a_fresh_instance_agrees() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(
        &mut c,
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b BLOB)",
        vec![],
    );
    q(&mut c, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) INSERT INTO t(b) SELECT randomblob(500) FROM n", vec![]);
    let pages_before = int(&mut c, "PRAGMA page_count");
    q(&mut c, "DELETE FROM t WHERE a > 100", vec![]);
    q(&mut c, "VACUUM", vec![]);
    let pages_after = int(&mut c, "PRAGMA page_count");
    assert!(
        pages_after < pages_before / 5,
        "{pages_before} -> {pages_after}"
    );
    let sum = int(&mut c, "SELECT sum(length(b)) FROM t");
    let mut fresh = start(&backend);
    assert_eq!(int(&mut fresh, "PRAGMA page_count"), pages_after);
    assert_eq!(int(&mut fresh, "SELECT sum(length(b)) FROM t"), sum);
    int_ok(&mut fresh);
    // Growing again after the shrink works too (pages beyond the old end are rewritten whole).
    q(&mut fresh, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) INSERT INTO t(b) SELECT zeroblob(700) FROM n", vec![]);
    let mut third = start(&backend);
    assert_eq!(int(&mut third, "SELECT count(*) FROM t"), 600);
    int_ok(&mut third);
}

#[test]
fn deep_expressions_are_answered_not_trapped() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    // Within SQLite's depth limit: answered.
    let nested = format!("SELECT {}1{}", "(".repeat(900), ")".repeat(900));
    assert_eq!(int(&mut c, &nested), 1);
    let sum = format!("SELECT {}", vec!["1"; 990].join(" + "));
    assert_eq!(int(&mut c, &sum), 990);
    // Past it: an SQL error, and the instance carries on.
    let too_deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let e = q_err(&mut c, &too_deep, vec![]);
    assert_eq!(e.kind, ExecErrorKind::Sql, "{e:?}");
    let r = q(&mut c, "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 100000) SELECT count(*), sum(i) FROM r", vec![]);
    assert_eq!(
        r.rows,
        vec![vec![Value::Integer(100_000), Value::Integer(5_000_050_000)]]
    );
    assert!(c.poisoned().is_none());
}

#[test]
fn big_sorts_and_temp_structures_stay_in_memory() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(&mut c, "CREATE TABLE t(a INTEGER, b TEXT)", vec![]);
    q(&mut c, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) INSERT INTO t SELECT (i * 7919) % 50000, printf('%080d', i) FROM n", vec![]);
    // ORDER BY without an index, DISTINCT, GROUP BY, an index build: sorters and ephemeral
    // tables, none of which may open a file.
    let r = q(&mut c, "SELECT a FROM t ORDER BY b DESC LIMIT 1", vec![]);
    assert_eq!(r.rows.len(), 1);
    assert_eq!(int(&mut c, "SELECT count(DISTINCT b) FROM t"), 50_000);
    assert_eq!(
        int(&mut c, "SELECT count(*) FROM (SELECT a FROM t GROUP BY a)"),
        50_000
    );
    q(&mut c, "CREATE INDEX t_b ON t(b)", vec![]);
    assert_eq!(
        int(
            &mut start(&backend),
            "SELECT count(*) FROM t INDEXED BY t_b WHERE b > ''"
        ),
        50_000
    );
}

#[test]
fn a_transaction_larger_than_the_compute_memory_is_out_of_memory_and_takes_no_effect() {
    let limit_bytes = 48 << 20;
    let engine = compute_host::ComputeEngine::new(compute_host::EngineConfig {
        max_instances: 4,
        memory_bytes_max: limit_bytes,
        module_cache_dir: Some(
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasmtime-cache"),
        ),
        ..compute_host::EngineConfig::default()
    })
    .expect("engine");
    let backend = MemBackend::default();
    let mut c = compute_host::Compute::start(&engine, Box::new(backend.clone()), 64)
        .expect("compute starts");
    q(&mut c, "CREATE TABLE t(b BLOB)", vec![]);
    let commits = backend.commit_count();
    // Far more changed pages than the compute can hold. Whichever allocation fails first —
    // SQLite's (an SQL error) or the guest's own, holding the transaction's pages (a trap the
    // host classifies by the refused memory growth) — the answer names memory and nothing
    // commits. Small rows (this shape) fail on the guest's side; large blobs on SQLite's.
    let mut classified = 0;
    for (rows, bytes) in [(200_000, 100), (25_000, 4000)] {
        let big = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) \
             INSERT INTO t SELECT randomblob({bytes}) FROM n"
        );
        match c.exec(&request(vec![stmt(&big, vec![])], false), TIMEOUT) {
            Err(e @ compute_host::ComputeError::OutOfMemory { .. }) => {
                assert!(e.to_string().contains("48 MiB"), "{e}");
                assert_eq!(e.kind(), borealis_core::ErrorKind::Invalid);
                println!("{rows} rows of {bytes} bytes: {e}");
                classified += 1;
                c = compute_host::Compute::start(&engine, Box::new(backend.clone()), 64)
                    .expect("compute starts");
            }
            Ok(ExecResponse::Err(e)) if e.message.contains("out of memory") => {
                println!("{rows} rows of {bytes} bytes: SQL error {e:?}");
            }
            other => panic!("expected running out of memory, got {other:?}"),
        }
    }
    assert!(
        classified > 0,
        "the guest's own allocation failure (a trap) was reported as out of memory"
    );
    assert_eq!(backend.commit_count(), commits, "nothing was committed");
    // A new instance on the same volume sees the table, empty, and small work goes on.
    let mut c = compute_host::Compute::start(&engine, Box::new(backend.clone()), 64)
        .expect("compute starts");
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 0);
    q(&mut c, "INSERT INTO t VALUES (randomblob(10))", vec![]);
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 1);
}

/// Runs `sqls` as one transactional request (the API's `batch`).
fn batch(c: &mut compute_host::Compute, sqls: &[&str]) -> ExecResponse {
    let req = request(sqls.iter().map(|s| stmt(s, vec![])).collect(), true);
    c.exec(&req, TIMEOUT).unwrap()
}

#[test]
fn transaction_control_inside_a_batch_is_refused_by_sqlite_and_nothing_commits() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(&mut c, "CREATE TABLE t(a)", vec![]);
    // Outside a batch, transaction control is the request's own business: these texts are now
    // in the statement cache, authorized, and must not be reused inside a batch. A failed
    // request also runs the guest's own ROLLBACK.
    let req = request(
        [
            "BEGIN",
            "INSERT INTO t VALUES (1)",
            ";COMMIT",
            "SAVEPOINT s",
            "RELEASE s",
        ]
        .iter()
        .map(|s| stmt(s, vec![]))
        .collect(),
        false,
    );
    let r = c.exec(&req, TIMEOUT).unwrap();
    assert!(matches!(r, ExecResponse::Ok(_)), "{r:?}");
    let e = q_err(&mut c, "INSERT INTO nosuch VALUES (1)", vec![]);
    assert_eq!(e.kind, ExecErrorKind::Sql);
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 1);
    let commits = backend.commit_count();
    let snapshot = backend.snapshot();

    // (entries, index of the refused one)
    let cases: &[(&[&str], u32)] = &[
        // Issue 15: the INSERT used to be committed by the `;COMMIT` before the batch failed.
        (
            &[
                "INSERT INTO t VALUES (2)",
                ";COMMIT",
                "SELECT * FROM nosuch",
            ],
            1,
        ),
        (&["INSERT INTO t VALUES (2)", "COMMIT"], 1),
        (
            &[
                "INSERT INTO t VALUES (2)",
                " ;; /* hidden */ commit transaction ;",
            ],
            1,
        ),
        (&["INSERT INTO t VALUES (2)", "-- a comment\nEND"], 1),
        (
            &[
                "INSERT INTO t VALUES (2)",
                ";ROLLBACK",
                "INSERT INTO t VALUES (3)",
            ],
            1,
        ),
        (&["INSERT INTO t VALUES (2)", "BEGIN"], 1),
        (&["INSERT INTO t VALUES (2); COMMIT"], 0),
        (&["INSERT INTO t VALUES (2) ;COMMIT; SELECT 1"], 0),
        (
            &[
                "INSERT INTO t VALUES (2)",
                "SAVEPOINT s",
                "INSERT INTO t VALUES (3)",
            ],
            1,
        ),
        (&["SAVEPOINT s", "INSERT INTO t VALUES (2)", "RELEASE s"], 0),
        (&["INSERT INTO t VALUES (2)", "RELEASE s"], 1),
        (&["INSERT INTO t VALUES (2)", "ROLLBACK TO s"], 1),
        (
            &[
                "INSERT INTO t VALUES (2)",
                "ROLLBACK TRANSACTION TO SAVEPOINT s",
            ],
            1,
        ),
    ];
    for (entries, refused) in cases {
        match batch(&mut c, entries) {
            ExecResponse::Err(e) => {
                assert_eq!(
                    (e.kind, e.statement),
                    (ExecErrorKind::Invalid, *refused),
                    "{entries:?}: {e:?}"
                );
                assert!(
                    e.message.contains("not allowed inside a batch"),
                    "{entries:?}: {}",
                    e.message
                );
            }
            other => panic!("{entries:?}: expected a refusal, got {other:?}"),
        }
        assert_eq!(
            int(&mut c, "SELECT count(*) FROM t"),
            1,
            "{entries:?}: nothing of the batch is visible"
        );
        assert_eq!(
            backend.commit_count(),
            commits,
            "{entries:?}: nothing shipped"
        );
        assert_eq!(backend.snapshot(), snapshot, "{entries:?}");
    }
    // Nothing of it reached storage: a fresh instance agrees.
    let mut fresh = start(&backend);
    assert_eq!(int(&mut fresh, "SELECT count(*) FROM t"), 1);

    // The guard covers batches only: outside one, BEGIN/COMMIT and savepoints work as before,
    // and good batches commit whole.
    let req = request(
        [
            "BEGIN",
            "INSERT INTO t VALUES (10)",
            "SAVEPOINT s",
            "INSERT INTO t VALUES (11)",
            "ROLLBACK TO s",
            "RELEASE s",
            "COMMIT",
        ]
        .iter()
        .map(|s| stmt(s, vec![]))
        .collect(),
        false,
    );
    let r = c.exec(&req, TIMEOUT).unwrap();
    assert!(matches!(r, ExecResponse::Ok(_)), "{r:?}");
    let r = batch(
        &mut c,
        &[
            "INSERT INTO t VALUES (20)",
            "INSERT INTO t VALUES (21) RETURNING a",
        ],
    );
    assert!(matches!(r, ExecResponse::Ok(_)), "{r:?}");
    assert_eq!(int(&mut c, "SELECT sum(a) FROM t"), 1 + 10 + 20 + 21);
    assert_eq!(backend.commit_count(), commits + 2);
    assert!(c.poisoned().is_none());
}

#[test]
fn the_schema_cannot_be_written_and_the_database_stays_openable() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(&mut c, "CREATE TABLE t(a)", vec![]);
    q(&mut c, "INSERT INTO t VALUES (1)", vec![]);
    let version = int(&mut c, "PRAGMA schema_version");
    // Issue 15: this used to be accepted, and every later instance failed to open the volume.
    q(&mut c, "PRAGMA writable_schema = ON", vec![]);
    assert_eq!(
        int(&mut c, "PRAGMA writable_schema"),
        0,
        "defensive mode ignores it"
    );
    for sql in [
        "UPDATE sqlite_schema SET sql = 'garbage' WHERE name = 't'",
        "UPDATE sqlite_master SET sql = 'CREATE TABLE t(a, b)' WHERE name = 't'",
        "DELETE FROM sqlite_schema",
        "INSERT INTO sqlite_schema VALUES ('table', 'x', 'x', 0, 'nonsense')",
    ] {
        let e = q_err(&mut c, sql, vec![]);
        assert_eq!(e.kind, ExecErrorKind::Sql, "{sql}");
        assert!(
            e.message.contains("may not be modified"),
            "{sql}: {}",
            e.message
        );
    }
    match batch(
        &mut c,
        &[
            "PRAGMA writable_schema = 1",
            "UPDATE sqlite_schema SET sql = 'garbage' WHERE name = 't'",
        ],
    ) {
        ExecResponse::Err(e) => assert_eq!((e.kind, e.statement), (ExecErrorKind::Sql, 1)),
        other => panic!("{other:?}"),
    }
    // Nor can the schema cookie be set by hand.
    q(&mut c, "PRAGMA schema_version = 1", vec![]);
    assert_eq!(int(&mut c, "PRAGMA schema_version"), version);
    // The database works, here and in a fresh instance.
    q(&mut c, "INSERT INTO t VALUES (2)", vec![]);
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 2);
    let mut fresh = start(&backend);
    assert_eq!(int(&mut fresh, "SELECT sum(a) FROM t"), 3);
    int_ok(&mut fresh);
}

/// Replaces the first occurrence of `from` (same length as `to`) in any stored page.
fn patch_pages(backend: &MemBackend, from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut store = backend.lock();
    for page in store.pages.values_mut() {
        if let Some(at) = page.windows(from.len()).position(|w| w == from) {
            page[at..at + to.len()].copy_from_slice(to);
            return;
        }
    }
    panic!("{:?} is in no page", String::from_utf8_lossy(from));
}

#[test]
fn a_database_that_cannot_be_opened_fails_to_start_at_once_as_unopenable() {
    use borealis_core::ErrorKind;
    use compute_host::ComputeError;
    for (what, from, to, needle) in [
        (
            "a malformed schema",
            &b"CREATE TABLE t(a)"[..],
            &b"CREATE TABLX t(a)"[..],
            "malformed database schema",
        ),
        (
            "a damaged header",
            &b"SQLite format 3\0"[..],
            &b"SQLite formax 3\0"[..],
            "not a database",
        ),
    ] {
        let backend = MemBackend::default();
        let mut c = start(&backend);
        q(&mut c, "CREATE TABLE t(a)", vec![]);
        q(&mut c, "INSERT INTO t VALUES (1)", vec![]);
        drop(c);
        patch_pages(&backend, from, to);
        let started = std::time::Instant::now();
        match compute_host::Compute::start(engine(), Box::new(backend.clone()), 256) {
            Err(e @ ComputeError::Unopenable(_)) => {
                let message = e.to_string();
                assert!(message.contains(needle), "{what}: {message}");
                assert!(
                    message.starts_with("the database cannot be opened: "),
                    "{what}: {message}"
                );
                assert!(!message.contains("bx_open"), "{what}: {message}");
                assert_eq!(e.kind(), ErrorKind::DatabaseCorrupt);
                assert_eq!(e.kind().code(), "corrupt");
                assert!(!e.kind().is_retryable());
            }
            Err(other) => panic!("{what}: expected Unopenable, got {other:?}"),
            Ok(_) => panic!("{what}: the damaged database opened"),
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{what}: answered at once"
        );
        // Repaired, it opens again: nothing else was wrong.
        patch_pages(&backend, to, from);
        let mut c = start(&backend);
        assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 1);
    }
}
