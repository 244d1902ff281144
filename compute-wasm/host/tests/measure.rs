//! Measurements, not assertions: `cargo test -p compute-host --test measure -- --ignored --nocapture`
//! (add `--release` for numbers that do not include an unoptimised host crate).

mod common;

use std::time::{Duration, Instant};

use common::*;
use compute_host::{Compute, ComputeEngine, EngineConfig, ExecResponse, Value, GUEST_WASM};

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

#[test]
#[ignore = "measurement; run explicitly"]
fn measure() {
    println!("guest module: {} bytes", GUEST_WASM.len());

    let started = Instant::now();
    let engine = ComputeEngine::new(EngineConfig {
        max_instances: 64,
        ..EngineConfig::default()
    })
    .unwrap();
    println!(
        "engine without a module cache: Module::new {:?}, whole ComputeEngine::new {:?}",
        engine.compile_time(),
        started.elapsed()
    );
    let cache_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasmtime-cache");
    let cached = EngineConfig {
        max_instances: 64,
        module_cache_dir: Some(cache_dir),
        ..EngineConfig::default()
    };
    drop(ComputeEngine::new(cached.clone()).unwrap());
    let started = Instant::now();
    let warm = ComputeEngine::new(cached).unwrap();
    println!(
        "engine with a warm module cache: load {:?}, whole new {:?}",
        warm.compile_time(),
        started.elapsed()
    );
    drop(warm);

    // Instantiate + open an empty volume.
    let n = 200;
    let backend = MemBackend::default();
    let started = Instant::now();
    for _ in 0..n {
        drop(Compute::start(&engine, Box::new(backend.clone()), 1000).unwrap());
    }
    println!(
        "instantiate + open (empty volume): {:?} each",
        started.elapsed() / n
    );

    // Single-row INSERTs, each its own commit (one MTR each).
    let mut c = Compute::start(&engine, Box::new(backend.clone()), 4000).unwrap();
    q(
        &mut c,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score INTEGER)",
        vec![],
    );
    let n = 20_000;
    let started = Instant::now();
    for i in 0..n {
        let req = request(
            vec![stmt(
                "INSERT INTO t(name, score) VALUES (?1, ?2)",
                vec![text(&format!("name-{i}")), Value::Integer(i as i64)],
            )],
            false,
        );
        assert!(matches!(
            c.exec(&req, TIMEOUT).unwrap(),
            ExecResponse::Ok(_)
        ));
    }
    let took = started.elapsed();
    println!(
        "autocommit INSERT, one exec each: {:.0}/s ({:?} each)",
        per_sec(n, took),
        took / n as u32
    );
    println!("  {:?}", c.stats());

    // 100 INSERTs per transactional request.
    let batches = 200;
    let started = Instant::now();
    for b in 0..batches {
        let statements = (0..100)
            .map(|i| {
                stmt(
                    "INSERT INTO t(name, score) VALUES (?1, ?2)",
                    vec![text(&format!("batch-{b}-{i}")), Value::Integer(i)],
                )
            })
            .collect();
        assert!(matches!(
            c.exec(&request(statements, true), TIMEOUT).unwrap(),
            ExecResponse::Ok(_)
        ));
    }
    println!(
        "INSERT in transactions of 100: {:.0}/s",
        per_sec(batches * 100, started.elapsed())
    );

    // Point SELECTs by primary key.
    let n = 20_000;
    let started = Instant::now();
    for i in 0..n {
        let req = request(
            vec![stmt(
                "SELECT name, score FROM t WHERE id = ?1",
                vec![Value::Integer(1 + (i * 7919) % 40_000)],
            )],
            false,
        );
        assert!(matches!(
            c.exec(&req, TIMEOUT).unwrap(),
            ExecResponse::Ok(_)
        ));
    }
    println!(
        "point SELECT, one exec each: {:.0}/s",
        per_sec(n as usize, started.elapsed())
    );
    drop(c);

    // A fresh instance on a 40k-row volume answering a point query (cold start of a tenant).
    let n = 100;
    let started = Instant::now();
    for i in 0..n {
        let mut c = Compute::start(&engine, Box::new(backend.clone()), 1000).unwrap();
        let r = q(
            &mut c,
            "SELECT score FROM t WHERE id = ?1",
            vec![Value::Integer(1 + i * 37)],
        );
        assert_eq!(r.rows.len(), 1);
    }
    println!(
        "start + open + point query on a 40k-row volume: {:?} each",
        started.elapsed() / n as u32
    );
    println!("volume: {} pages", backend.lock().pages.len());
}
