//! A seeded random workload checked against a model (a `BTreeMap`), run twice: once with a tiny
//! SQLite cache (so pages are evicted and re-read from the backend all the time) and once with a
//! large one. Both runs must match the model at every check, every fresh instance started on
//! their page stores must match too, and the two page stores must end byte-for-byte equal.
//!
//! (A differential run against native SQLite would need rusqlite in the root workspace, which it
//! does not have; the model plays that part.) Replay a failure with its seed.

mod common;

use std::collections::BTreeMap;

use common::*;
use compute_host::{Compute, ExecResponse, Statement, Value};

type Model = BTreeMap<i64, (String, Vec<u8>, i64)>;

const OPS: usize = 400;
const KEYS: u64 = 400;

struct Run {
    backend: MemBackend,
    compute: Compute,
}

fn random_text(rng: &mut Rng) -> String {
    let len = rng.below(120) as usize;
    (0..len)
        .map(|_| (b'a' + rng.below(26) as u8) as char)
        .collect()
}

fn random_blob(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 5_000 + rng.below(20_000) as usize, // overflow pages
        1..=3 => 0,
        _ => rng.below(600) as usize,
    };
    (0..len).map(|_| rng.next() as u8).collect()
}

/// One write: the statement and what it does to the model.
fn random_write(rng: &mut Rng, model: &mut Model) -> Statement {
    match rng.below(10) {
        0..=5 => {
            let k = rng.below(KEYS) as i64;
            let v = random_text(rng);
            let b = random_blob(rng);
            let n = rng.below(1000) as i64;
            model.insert(k, (v.clone(), b.clone(), n));
            stmt(
                "INSERT OR REPLACE INTO kv(k, v, b, n) VALUES (?1, ?2, ?3, ?4)",
                vec![
                    Value::Integer(k),
                    Value::Text(v),
                    Value::Blob(b),
                    Value::Integer(n),
                ],
            )
        }
        6..=8 => {
            let lo = rng.below(KEYS) as i64;
            let hi = lo + rng.below(40) as i64;
            let d = rng.below(100) as i64 - 50;
            for (_, row) in model.range_mut(lo..=hi) {
                row.2 += d;
            }
            stmt(
                "UPDATE kv SET n = n + ?3 WHERE k BETWEEN ?1 AND ?2",
                vec![Value::Integer(lo), Value::Integer(hi), Value::Integer(d)],
            )
        }
        _ => {
            let lo = rng.below(KEYS) as i64;
            let hi = lo + rng.below(6) as i64;
            model.retain(|k, _| !(lo..=hi).contains(k));
            stmt(
                "DELETE FROM kv WHERE k BETWEEN ?1 AND ?2",
                vec![Value::Integer(lo), Value::Integer(hi)],
            )
        }
    }
}

fn run_ok(c: &mut Compute, statements: Vec<Statement>, transaction: bool) {
    match c
        .exec(&request(statements.clone(), transaction), TIMEOUT)
        .expect("exec")
    {
        ExecResponse::Ok(_) => {}
        other => panic!("{statements:?}: {other:?}"),
    }
}

fn dump(c: &mut Compute) -> Model {
    q(c, "SELECT k, v, b, n FROM kv ORDER BY k", vec![])
        .rows
        .into_iter()
        .map(|r| match r.as_slice() {
            [Value::Integer(k), Value::Text(v), Value::Blob(b), Value::Integer(n)] => {
                (*k, (v.clone(), b.clone(), *n))
            }
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

fn check_range(c: &mut Compute, model: &Model, lo: i64, hi: i64) {
    let r = q(
        c,
        "SELECT count(*), total(n) FROM kv WHERE n BETWEEN ?1 AND ?2",
        vec![Value::Integer(lo), Value::Integer(hi)],
    );
    let rows: Vec<i64> = model
        .values()
        .map(|r| r.2)
        .filter(|n| (lo..=hi).contains(n))
        .collect();
    assert_eq!(
        r.rows,
        vec![vec![
            Value::Integer(rows.len() as i64),
            Value::Real(rows.iter().sum::<i64>() as f64)
        ]],
        "index range {lo}..={hi}"
    );
}

fn workload(seed: u64, cache_pages: u32) -> MemBackend {
    let mut rng = Rng(seed);
    let mut model = Model::new();
    let backend = MemBackend::default();
    let compute = Compute::start(engine(), Box::new(backend.clone()), cache_pages).unwrap();
    let mut run = Run { backend, compute };
    let c = &mut run.compute;
    q(c, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT NOT NULL, b BLOB NOT NULL, n INTEGER NOT NULL)", vec![]);
    q(c, "CREATE INDEX kv_n ON kv(n)", vec![]);
    for op in 0..OPS {
        let c = &mut run.compute;
        match rng.below(20) {
            0..=11 => {
                let s = random_write(&mut rng, &mut model);
                run_ok(c, vec![s], false);
            }
            12..=14 => {
                // A transactional batch.
                let n = 2 + rng.below(4);
                let statements = (0..n).map(|_| random_write(&mut rng, &mut model)).collect();
                run_ok(c, statements, true);
            }
            15 | 16 => {
                // A batch that fails at its end: none of it may take effect.
                let mut scratch = model.clone();
                let n = 1 + rng.below(4);
                let mut statements: Vec<_> = (0..n)
                    .map(|_| random_write(&mut rng, &mut scratch))
                    .collect();
                statements.push(stmt("INSERT INTO missing VALUES (1)", vec![]));
                let commits = run.backend.commit_count();
                let r = c.exec(&request(statements, true), TIMEOUT).unwrap();
                assert!(
                    matches!(r, ExecResponse::Err(_)),
                    "seed {seed} op {op}: {r:?}"
                );
                assert_eq!(
                    run.backend.commit_count(),
                    commits,
                    "seed {seed} op {op}: a failed batch shipped"
                );
            }
            17 => {
                // An explicit transaction rolled back.
                let mut scratch = model.clone();
                let mut statements = vec![stmt("BEGIN", vec![])];
                statements.push(random_write(&mut rng, &mut scratch));
                statements.push(stmt("ROLLBACK", vec![]));
                run_ok(c, statements, false);
            }
            18 => {
                let lo = rng.below(1000) as i64 - 100;
                check_range(c, &model, lo, lo + rng.below(300) as i64);
            }
            _ => {
                if rng.below(5) == 0 {
                    q(c, "VACUUM", vec![]);
                }
            }
        }
        if op % 60 == 59 {
            assert_eq!(
                dump(&mut run.compute),
                model,
                "seed {seed} op {op}: the running instance"
            );
            let mut fresh =
                Compute::start(engine(), Box::new(run.backend.clone()), cache_pages).unwrap();
            assert_eq!(
                dump(&mut fresh),
                model,
                "seed {seed} op {op}: a fresh instance"
            );
            assert_eq!(
                q(&mut fresh, "PRAGMA integrity_check", vec![]).rows,
                vec![vec![text("ok")]]
            );
        }
    }
    assert_eq!(dump(&mut run.compute), model, "seed {seed}: at the end");
    let stats = run.compute.stats();
    println!(
        "seed {seed} cache {cache_pages}: {} rows at the end, {stats:?}",
        model.len()
    );
    assert!(
        stats.commits > OPS as u64 / 2,
        "seed {seed}: most operations commit"
    );
    if cache_pages < 16 {
        assert!(
            stats.pages_read > 5 * stats.commits,
            "seed {seed}: a tiny cache re-reads pages"
        );
    }
    run.backend
}

#[test]
fn random_workloads_match_the_model_with_any_cache_size() {
    for seed in [1, 0xb0_4ea1, 20_260_101] {
        let tiny = workload(seed, 8);
        let large = workload(seed, 4096);
        assert_eq!(
            tiny.snapshot(),
            large.snapshot(),
            "seed {seed}: cache size changed what was stored"
        );
        assert_eq!(
            tiny.commit_count(),
            large.commit_count(),
            "seed {seed}: cache size changed the commits"
        );
    }
}
