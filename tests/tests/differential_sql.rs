//! Differential test (issue "Compute" acceptance): the same seeded random statement stream runs
//! against native in-memory SQLite (rusqlite, in this process) and against Borealis — SQLite in
//! the wasm sandbox over real storage (safekeepers, pageservers) through the HTTP API. Every
//! answer must be identical: the rows, the number of rows affected, and whether it failed.
//!
//! It runs on both shapes of volume ([`Shape`]): one segment, and many 1 MiB segments over a
//! pool of nine safekeepers and three pageservers, with the tables starting near the end of
//! segment 0 (after 0.9 MiB of padding) so that they grow across segment boundaries, every
//! commit is an MTR over several groups, and reads fetch pages from several pageservers.

use base64::Engine as _;
use borealis_tests::shape::{one_cluster_at_a_time, segment_groups, Shape};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::types::ValueRef;
use serde_json::{json, Value};

/// One statement with its parameters.
#[derive(Clone, Debug)]
struct Stmt {
    sql: String,
    params: Vec<Value>,
}

fn text(rng: &mut StdRng) -> Value {
    // Now and then a value long enough to spill onto overflow pages.
    let len = if rng.random_range(0..10) == 0 {
        rng.random_range(3000..20000)
    } else {
        rng.random_range(0..40)
    };
    let c = (b'a' + rng.random_range(0..26)) as char;
    json!(std::iter::repeat_n(c, len).collect::<String>())
}

fn value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..6) {
        0 => Value::Null,
        1 => json!(rng.random_range(-1000i64..1000)),
        2 => json!(rng.random_range(-1000..1000) as f64 / 8.0),
        3 => {
            json!({"base64": base64::engine::general_purpose::STANDARD.encode((0..rng.random_range(0..64)).map(|i| i as u8).collect::<Vec<u8>>())})
        }
        _ => text(rng),
    }
}

fn statement(rng: &mut StdRng) -> Stmt {
    let id = rng.random_range(1..60);
    let (sql, params): (&str, Vec<Value>) = match rng.random_range(0..14) {
        0..=3 => ("INSERT INTO t (id, b, c, d) VALUES (?, ?, ?, ?)", vec![json!(id), text(rng), value(rng), value(rng)]),
        4 => ("INSERT OR REPLACE INTO t (id, b, c) VALUES (?, ?, ?)", vec![json!(id), text(rng), value(rng)]),
        5 => ("UPDATE t SET c = ?, b = b || 'x' WHERE id % 7 = ?", vec![value(rng), json!(id % 7)]),
        6 => ("DELETE FROM t WHERE id BETWEEN ? AND ?", vec![json!(id), json!(id + rng.random_range(0..5))]),
        7 => ("INSERT INTO u (t_id, note) VALUES (?, ?)", vec![json!(id), text(rng)]),
        8 => ("SELECT id, b, c, d FROM t ORDER BY id", vec![]),
        9 => ("SELECT count(*), sum(length(b)), total(CASE WHEN typeof(c) IN ('integer','real') THEN c END) FROM t", vec![]),
        10 => ("SELECT t.id, count(u.rowid), max(length(u.note)) FROM t LEFT JOIN u ON u.t_id = t.id GROUP BY t.id ORDER BY t.id", vec![]),
        11 => ("SELECT typeof(c), count(*) FROM t GROUP BY 1 ORDER BY 1", vec![]),
        12 => ("SELECT id FROM t WHERE b > ? ORDER BY b, id LIMIT 5", vec![text(rng)]),
        _ => ("INSERT INTO t (id, b) VALUES (?, NULL)", vec![json!(id)]), // NOT NULL violation
    };
    Stmt {
        sql: sql.to_string(),
        params,
    }
}

const SCHEMA: [&str; 3] = [
    "CREATE TABLE t (id INTEGER PRIMARY KEY, b TEXT NOT NULL, c, d)",
    "CREATE TABLE u (t_id INTEGER NOT NULL, note TEXT)",
    "CREATE INDEX u_t ON u (t_id)",
];

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Number(n) => n
            .as_i64()
            .map(V::Integer)
            .unwrap_or_else(|| V::Real(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => V::Text(s.clone()),
        Value::Object(o) => V::Blob(
            base64::engine::general_purpose::STANDARD
                .decode(o["base64"].as_str().unwrap_or(""))
                .expect("test blobs are valid"),
        ),
        other => panic!("no such test value {other}"),
    }
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => json!(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(b)}),
    }
}

/// Runs one statement natively: `Ok((rows, rows_affected))` or `Err(())` for an SQL error.
fn native(conn: &rusqlite::Connection, s: &Stmt) -> Result<(Vec<Vec<Value>>, u64), ()> {
    let mut st = conn.prepare(&s.sql).map_err(|_| ())?;
    let params: Vec<rusqlite::types::Value> = s.params.iter().map(to_sql).collect();
    let ncol = st.column_count();
    let readonly = st.readonly();
    let mut rows = st
        .query(rusqlite::params_from_iter(params))
        .map_err(|_| ())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|_| ())? {
        out.push(
            (0..ncol)
                .map(|i| from_sql(row.get_ref(i).expect("column in range")))
                .collect(),
        );
    }
    drop(rows);
    let affected = if readonly { 0 } else { conn.changes() };
    Ok((out, affected))
}

/// Padding before the tables on [`Shape::ManySegments`]: they start near the end of segment 0.
const PAD_BYTES: usize = 900 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_statement_streams_match_native_sqlite_one_segment() {
    let _one = one_cluster_at_a_time().await;
    differential(Shape::OneSegment).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_statement_streams_match_native_sqlite_many_segments() {
    let _one = one_cluster_at_a_time().await;
    differential(Shape::ManySegments).await;
}

async fn differential(shape: Shape) {
    let c = shape.start().await;
    let token = c.create_tenant("diff").await;
    shape.pad_before_tables(&c, "diff", &token, PAD_BYTES).await;
    let conn = rusqlite::Connection::open_in_memory().expect("native sqlite");
    for ddl in SCHEMA {
        conn.execute(ddl, []).expect("native schema");
        c.sql("diff", &token, ddl).await.ok();
    }
    let (mut compared, mut errors, mut batches) = (0, 0, 0);
    for seed in 0..3u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        for step in 0..120 {
            if rng.random_range(0..8) == 0 {
                // An all-or-nothing batch, natively BEGIN ... COMMIT or ROLLBACK on error.
                let stmts: Vec<Stmt> = (0..rng.random_range(2..6))
                    .map(|_| statement(&mut rng))
                    .collect();
                conn.execute_batch("BEGIN").expect("begin");
                let native_ok = stmts.iter().all(|s| native(&conn, s).is_ok());
                conn.execute_batch(if native_ok { "COMMIT" } else { "ROLLBACK" })
                    .expect("end");
                let body: Vec<Value> = stmts
                    .iter()
                    .map(|s| json!({"sql": s.sql, "params": s.params}))
                    .collect();
                let r = c.batch("diff", &token, body).await;
                assert_eq!(
                    r.status == 200,
                    native_ok,
                    "seed {seed} step {step}: batch {stmts:?}: {}",
                    r.body
                );
                if !native_ok {
                    assert_eq!(r.code(), "sql_error", "{}", r.body);
                }
                batches += 1;
                continue;
            }
            let s = statement(&mut rng);
            let expected = native(&conn, &s);
            let r = c.sql_params("diff", &token, &s.sql, json!(s.params)).await;
            match expected {
                Ok((rows, affected)) => {
                    assert_eq!(
                        r.status, 200,
                        "seed {seed} step {step}: {} failed on Borealis: {}",
                        s.sql, r.body
                    );
                    assert_eq!(r.rows(), rows, "seed {seed} step {step}: {}", s.sql);
                    let got = r
                        .body
                        .pointer("/results/0/rows_affected")
                        .and_then(Value::as_u64);
                    assert_eq!(
                        got,
                        Some(affected),
                        "seed {seed} step {step}: rows affected by {}",
                        s.sql
                    );
                }
                Err(()) => {
                    assert_eq!(
                        (r.status, r.code()),
                        (400, "sql_error"),
                        "seed {seed} step {step}: {} must fail: {}",
                        s.sql,
                        r.body
                    );
                    errors += 1;
                }
            }
            compared += 1;
        }
    }
    // The final states agree too, row for row.
    let all = Stmt {
        sql: "SELECT * FROM t ORDER BY id".into(),
        params: vec![],
    };
    let (rows, _) = native(&conn, &all).expect("native select");
    assert_eq!(c.sql("diff", &token, &all.sql).await.ok().rows(), rows);
    let segments = segment_groups(&c, "diff").await.len();
    eprintln!(
        "{}: compared {compared} statements ({errors} expected SQL errors) and {batches} batches; \
         {segments} segment(s) hold data",
        shape.name()
    );
    if shape == Shape::ManySegments {
        assert!(
            segments >= 2,
            "the tables did not grow across segments: {segments} hold data"
        );
    }
    assert!(
        errors > 0 && batches > 0,
        "the stream must exercise errors and batches"
    );
}
