//! Requests with an idempotency key, through the compute against an in-memory page store
//! (RFC 0014 §6, `compute-wasm/guest/src/keyed.rs`): a key's write runs once and its repeats
//! replay the recorded answer; the record commits with the write and nowhere else; SQL cannot
//! reach the table that holds the records.

mod common;

use common::*;
use compute_host::{
    Compute, ExecErrorKind, ExecRequest, ExecResponse, Keyed, StatementResult, Value,
    IDEMPOTENT_ANSWER_BYTES_MAX,
};

const NOW_MS: i64 = 1_700_000_000_000;

fn keyed(statements: Vec<compute_host::Statement>, transaction: bool, key: &str) -> ExecRequest {
    keyed_at(statements, transaction, key, NOW_MS, 0)
}

fn keyed_at(
    statements: Vec<compute_host::Statement>,
    transaction: bool,
    key: &str,
    now_unix_ms: i64,
    expired_before_unix_ms: i64,
) -> ExecRequest {
    // The fingerprint is the host's business: any bytes that differ between requests do.
    let fingerprint = format!("{statements:?}{transaction}").into_bytes();
    ExecRequest {
        keyed: Some(Keyed::Run {
            key: key.into(),
            request_sha256: fingerprint,
            now_unix_ms,
            expired_before_unix_ms,
        }),
        ..request(statements, transaction)
    }
}

fn note(c: &mut Compute, key: &str, lsn: u64, expired_before_unix_ms: i64) -> u64 {
    let req = ExecRequest {
        keyed: Some(Keyed::Note {
            key: key.into(),
            lsn,
            expired_before_unix_ms,
        }),
        ..request(Vec::new(), true)
    };
    match c.exec(&req, TIMEOUT).expect("exec") {
        ExecResponse::Ok(r) => r[0].rows_affected,
        other => panic!("note: {other:?}"),
    }
}

fn run(c: &mut Compute, req: &ExecRequest) -> ExecResponse {
    c.exec(req, TIMEOUT).expect("exec")
}

fn insert(v: i64) -> Vec<compute_host::Statement> {
    vec![stmt("INSERT INTO t(v) VALUES (?)", vec![Value::Integer(v)])]
}

fn recorded(r: ExecResponse) -> Vec<StatementResult> {
    match r {
        ExecResponse::Recorded(results) => results,
        other => panic!("expected Recorded, got {other:?}"),
    }
}

fn replayed(r: ExecResponse) -> (Vec<StatementResult>, Option<u64>) {
    match r {
        ExecResponse::Replayed { results, lsn } => (results, lsn),
        other => panic!("expected Replayed, got {other:?}"),
    }
}

fn table(backend: &MemBackend) -> Compute {
    let mut c = start(backend);
    q(
        &mut c,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER UNIQUE)",
        vec![],
    );
    c
}

#[test]
fn a_keyed_write_runs_once_and_every_repeat_replays_its_answer_and_lsn() {
    let backend = MemBackend::default();
    let mut c = table(&backend);
    let commits = backend.commit_count();
    let req = keyed(insert(7), false, "transfer-1");
    let first = recorded(run(&mut c, &req));
    assert_eq!(first[0].rows_affected, 1);
    assert_eq!(first[0].last_insert_rowid, Some(1));
    assert_eq!(
        backend.commit_count(),
        commits + 1,
        "the write and its record are one commit"
    );
    // Before the note, a repeat replays with no lsn: the host notes one then.
    let (again, lsn) = replayed(run(&mut c, &req));
    assert_eq!((again, lsn), (first.clone(), None));
    assert_eq!(note(&mut c, "transfer-1", 77, 0), 1);
    assert_eq!(
        backend.commit_count(),
        commits + 2,
        "the note is its own commit"
    );
    // A note never changes an lsn once written (and one that changes nothing ships nothing).
    assert_eq!(note(&mut c, "transfer-1", 99, 0), 0);
    let (again, lsn) = replayed(run(&mut c, &req));
    assert_eq!((again, lsn), (first.clone(), Some(77)));
    assert_eq!(
        backend.commit_count(),
        commits + 2,
        "replays commit nothing"
    );
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 1);
    // The record is in storage, not in the instance: a fresh one replays the same.
    drop(c);
    let mut fresh = start(&backend);
    let (again, lsn) = replayed(run(&mut fresh, &req));
    assert_eq!((again, lsn), (first, Some(77)));
    assert_eq!(int(&mut fresh, "SELECT count(*) FROM t"), 1);
}

#[test]
fn the_key_with_another_request_is_a_conflict_and_runs_nothing() {
    let backend = MemBackend::default();
    let mut c = table(&backend);
    recorded(run(&mut c, &keyed(insert(1), false, "k")));
    for other in [
        keyed(insert(2), false, "k"),
        keyed(insert(1), true, "k"),
        keyed(
            vec![stmt("INSERT INTO t(v) VALUES (1) ", vec![])],
            false,
            "k",
        ),
    ] {
        match run(&mut c, &other) {
            ExecResponse::Err(e) => {
                assert_eq!(e.kind, ExecErrorKind::Conflict);
                assert!(e.message.contains("another request"), "{}", e.message);
            }
            r => panic!("expected a conflict, got {r:?}"),
        }
    }
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 1);
    // Keys are independent.
    recorded(run(&mut c, &keyed(insert(2), false, "k2")));
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 2);
}

#[test]
fn a_keyed_request_that_only_reads_or_fails_records_nothing_and_runs_again() {
    let backend = MemBackend::default();
    let mut c = table(&backend);
    let commits = backend.commit_count();
    let read = keyed(vec![stmt("SELECT count(*) FROM t", vec![])], false, "r");
    for expected in [0, 1] {
        match run(&mut c, &read) {
            ExecResponse::Ok(r) => assert_eq!(r[0].rows, vec![vec![Value::Integer(expected)]]),
            other => panic!("a read runs every time: {other:?}"),
        }
        q(
            &mut c,
            "INSERT INTO t(v) VALUES (?)",
            vec![Value::Integer(100 + expected)],
        );
    }
    assert_eq!(
        backend.commit_count(),
        commits + 2,
        "only the unkeyed inserts committed"
    );
    // A keyed write that fails (UNIQUE) takes no effect and records nothing: the same key with
    // the same request fails again, and the key stays free.
    let failing = keyed(insert(100), false, "f");
    for _ in 0..2 {
        match run(&mut c, &failing) {
            ExecResponse::Err(e) => assert_eq!(e.kind, ExecErrorKind::Sql, "{}", e.message),
            other => panic!("expected the UNIQUE failure, got {other:?}"),
        }
    }
    assert_eq!(backend.commit_count(), commits + 2);
    q(&mut c, "DELETE FROM t WHERE v = 100", vec![]);
    recorded(run(&mut c, &failing));
}

#[test]
fn a_keyed_request_is_one_transaction() {
    let backend = MemBackend::default();
    let mut c = table(&backend);
    // A batch whose second statement fails takes nothing, the record included.
    let batch = keyed(
        vec![
            stmt("INSERT INTO t(v) VALUES (1)", vec![]),
            stmt("INSERT INTO t(v) VALUES (1)", vec![]),
        ],
        true,
        "b",
    );
    match run(&mut c, &batch) {
        ExecResponse::Err(e) => assert_eq!((e.kind, e.statement), (ExecErrorKind::Sql, 1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 0);
    // Transaction control is refused even in a single keyed statement.
    for sql in ["BEGIN", "COMMIT", "SAVEPOINT s"] {
        match run(&mut c, &keyed(vec![stmt(sql, vec![])], false, sql)) {
            ExecResponse::Err(e) => assert_eq!(e.kind, ExecErrorKind::Invalid, "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // An answer too large to keep fails the request, and nothing is written.
    let big = keyed(
        vec![stmt(
            "INSERT INTO t(v) VALUES (5) RETURNING zeroblob(?)",
            vec![Value::Integer(IDEMPOTENT_ANSWER_BYTES_MAX as i64 + 1)],
        )],
        false,
        "big",
    );
    match run(&mut c, &big) {
        ExecResponse::Err(e) => assert_eq!(e.kind, ExecErrorKind::TooLarge, "{}", e.message),
        other => panic!("{other:?}"),
    }
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 0);
}

#[test]
fn an_expired_key_runs_again_and_notes_delete_the_oldest_expired_rows() {
    let backend = MemBackend::default();
    let mut c = start(&backend);
    q(&mut c, "CREATE TABLE u(v INTEGER)", vec![]);
    let put = |v: i64| vec![stmt("INSERT INTO u(v) VALUES (?)", vec![Value::Integer(v)])];
    let rows = |c: &mut Compute| int(c, "SELECT count(*) FROM u");
    for i in 1..=6 {
        let req = keyed_at(put(i), false, &format!("k{i}"), i * 1000, 0);
        recorded(run(&mut c, &req));
    }
    // Within its retention a key replays; past it, its request runs again and is recorded anew.
    replayed(run(&mut c, &keyed_at(put(1), false, "k1", 9_000, 500)));
    assert_eq!(rows(&mut c), 6);
    recorded(run(&mut c, &keyed_at(put(1), false, "k1", 9_000, 1_500)));
    assert_eq!(rows(&mut c), 7);
    // A note deletes at most four expired rows, oldest first: k2..k5 (k1's new row is the
    // newest); k6 is expired too but fifth in line.
    note(&mut c, "k1", 5, 6_500);
    for i in 2..=5 {
        let req = keyed_at(put(i), false, &format!("k{i}"), 10_000, 0);
        recorded(run(&mut c, &req));
    }
    assert_eq!(rows(&mut c), 11);
    let (_, lsn) = replayed(run(&mut c, &keyed_at(put(6), false, "k6", 10_000, 0)));
    assert_eq!(lsn, None, "k6 stays until a later note");
    let (_, lsn) = replayed(run(&mut c, &keyed_at(put(1), false, "k1", 10_000, 0)));
    assert_eq!(lsn, Some(5));
}

#[test]
fn sql_can_neither_read_nor_change_the_idempotency_table() {
    let backend = MemBackend::default();
    let mut c = table(&backend);
    // Not even create it before Borealis does.
    let e = q_err(
        &mut c,
        "CREATE TABLE _borealis_idempotency(key TEXT)",
        vec![],
    );
    assert_eq!(e.kind, ExecErrorKind::Invalid, "{}", e.message);
    let req = keyed(insert(1), false, "k");
    recorded(run(&mut c, &req));
    note(&mut c, "k", 42, 0);
    q(&mut c, "CREATE TABLE other(x)", vec![]);
    for sql in [
        "SELECT * FROM _borealis_idempotency",
        "SELECT count(*) FROM main._borealis_idempotency",
        "SELECT * FROM \"_BOREALIS_IDEMPOTENCY\"",
        "INSERT INTO _borealis_idempotency(key, request, answer, created_unix_ms) VALUES ('x', x'', x'', 0)",
        "UPDATE _borealis_idempotency SET lsn = 1",
        "DELETE FROM _borealis_idempotency",
        "DROP TABLE _borealis_idempotency",
        "ALTER TABLE _borealis_idempotency RENAME TO mine",
        "ALTER TABLE _borealis_idempotency ADD COLUMN y",
        "CREATE INDEX i ON _borealis_idempotency(lsn)",
        "CREATE TRIGGER tr AFTER DELETE ON _borealis_idempotency BEGIN SELECT 1; END",
        "PRAGMA table_info(_borealis_idempotency)",
        "VACUUM INTO (SELECT key FROM _borealis_idempotency)",
    ] {
        let e = q_err(&mut c, sql, vec![]);
        assert_eq!(e.kind, ExecErrorKind::Invalid, "{sql}: {}", e.message);
        assert!(
            e.message.contains("_borealis_idempotency is Borealis's own table"),
            "{sql}: {}",
            e.message
        );
    }
    // Through a view or a trigger on another table: refused when the statement that would
    // run them is compiled, whether or not creating them was.
    let _ = run(
        &mut c,
        &request(
            vec![stmt(
                "CREATE VIEW v AS SELECT * FROM _borealis_idempotency",
                vec![],
            )],
            false,
        ),
    );
    let _ = run(
        &mut c,
        &request(
            vec![stmt(
                "CREATE TRIGGER wipe AFTER INSERT ON other BEGIN DELETE FROM _borealis_idempotency; END",
                vec![],
            )],
            false,
        ),
    );
    for sql in ["SELECT * FROM v", "INSERT INTO other VALUES (1)"] {
        match run(&mut c, &request(vec![stmt(sql, vec![])], false)) {
            ExecResponse::Err(e) => assert!(
                e.message.contains("no such table") || e.message.contains("Borealis's own table"),
                "{sql}: {}",
                e.message
            ),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // A temp table renamed into the name does not shadow the records: the guest names `main`.
    q(&mut c, "CREATE TEMP TABLE shadow(key TEXT, request BLOB, answer BLOB, lsn INTEGER, created_unix_ms INTEGER)", vec![]);
    q(
        &mut c,
        "ALTER TABLE temp.shadow RENAME TO _borealis_idempotency",
        vec![],
    );
    // The record is intact.
    let (_, lsn) = replayed(run(&mut c, &req));
    assert_eq!(lsn, Some(42));
}

#[test]
fn whole_database_maintenance_still_works_and_the_name_is_only_refused_as_a_table() {
    let backend = MemBackend::default();
    let mut c = table(&backend);
    let req = keyed(insert(1), false, "k");
    recorded(run(&mut c, &req));
    note(&mut c, "k", 9, 0);
    // These go through every table, Borealis's own too.
    for sql in [
        "ANALYZE",
        "REINDEX",
        "PRAGMA optimize",
        "VACUUM",
        " vacuum main ; ",
    ] {
        match run(&mut c, &request(vec![stmt(sql, vec![])], false)) {
            ExecResponse::Ok(_) => {}
            other => panic!("{sql}: {other:?}"),
        }
    }
    let (_, lsn) = replayed(run(&mut c, &req));
    assert_eq!(lsn, Some(9), "the record survived VACUUM");
    // A column of that name in a tenant's own table is the tenant's business.
    q(
        &mut c,
        "CREATE TABLE mine(_borealis_idempotency INTEGER)",
        vec![],
    );
    q(&mut c, "INSERT INTO mine VALUES (1)", vec![]);
    q(&mut c, "UPDATE mine SET _borealis_idempotency = 2", vec![]);
    assert_eq!(int(&mut c, "SELECT _borealis_idempotency FROM mine"), 2);
}

#[test]
fn a_table_renamed_into_the_name_is_not_taken_for_the_records() {
    let backend = MemBackend::default();
    let mut c = table(&backend);
    // Same columns, a forged row, and a trigger that would run with the guard lifted.
    q(&mut c, "CREATE TABLE forged(key TEXT NOT NULL UNIQUE, request BLOB NOT NULL, answer BLOB NOT NULL, lsn INTEGER, created_unix_ms INTEGER NOT NULL)", vec![]);
    q(
        &mut c,
        "ALTER TABLE forged RENAME TO _borealis_idempotency",
        vec![],
    );
    match run(&mut c, &keyed(insert(1), false, "k")) {
        ExecResponse::Err(e) => {
            assert_eq!(e.kind, ExecErrorKind::Invalid);
            assert!(e.message.contains("not Borealis's own"), "{}", e.message);
        }
        other => panic!("a renamed table must not hold records: {other:?}"),
    }
    assert_eq!(int(&mut c, "SELECT count(*) FROM t"), 0, "nothing ran");
}
