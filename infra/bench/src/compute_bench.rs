//! The compute alone: SQLite in the wasmtime sandbox against native SQLite, same statements.
//!
//! Storage is taken out of the picture on both sides so that only the SQL engine is compared:
//! the sandbox runs on an in-memory page store (a [`Backend`] that applies each commit's redo to
//! a map of pages, as the pageserver would), native SQLite runs on `:memory:`. Each statement is
//! one call with SQL text and parameters: `Compute::exec` for the sandbox (the request crosses
//! the host/guest boundary encoded, and SQLite runs it), a cached prepared statement for native.
//!
//! Measured: single-row `INSERT`s each in its own transaction (one commit, one MTR each), point
//! `SELECT`s by primary key (one per call, and 100 per call, which amortises the host/guest
//! boundary and so compares the two SQLite builds themselves), and the TPC-B transfer (three statements in one transaction). Also
//! the start-up of a tenant's compute (instantiate the module + open the volume; then the same
//! with a first point query on a populated volume), and the redo each transfer ships against the
//! page bytes it dirtied — what a page-shipping design would write.

use crate::stats::Latencies;
use crate::workload::{transfer_for, ACCOUNT_FILLER, INITIAL_BALANCE, SQLITE};
use anyhow::{bail, Context};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{ErrorKind, Lsn, PageNo, PAGE_SIZE_BYTES};
use borealis_utils::LockExt;
use compute_host::{
    Backend, BackendError, Compute, ComputeEngine, EngineConfig, ExecRequest, ExecResponse, Mtr,
    PageChangeBody, Statement, Value,
};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);
const RESULT_BYTES_MAX: u32 = 16 << 20;
/// Statements per call in the amortised read workload.
const SELECTS_PER_CALL: usize = 100;
/// SQLite's page cache in the sandbox, in pages (the gateway's default).
const CACHE_PAGES: u32 = 2000;

/// Pages in memory, with the redo that built them counted.
#[derive(Default)]
struct Store {
    pages: HashMap<u32, Vec<u8>>,
    commits: u64,
    /// Pages changed by those commits (each change one redo record).
    pages_dirtied: u64,
    /// Those records as a safekeeper stores them (header + body).
    redo_bytes: u64,
    /// `(before, after)` of the first page changes committed, at most [`SCAN_SAMPLES_MAX`]:
    /// real pages for timing the redo construction's scan.
    samples: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Page changes kept to time `RedoBody::between` on.
const SCAN_SAMPLES_MAX: usize = 4096;

#[derive(Clone, Default)]
struct MemBackend(Arc<Mutex<Store>>);

impl MemBackend {
    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.locked()
    }
}

impl Backend for MemBackend {
    fn get_page(&mut self, page: PageNo) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().pages.get(&page.0).cloned())
    }

    fn commit(&mut self, mtr: Mtr) -> Result<(), BackendError> {
        let mut s = self.lock();
        let n = mtr.changes.len();
        for (i, change) in mtr.changes.into_iter().enumerate() {
            let body = match change.body {
                PageChangeBody::Image(b) => RedoBody::Image(b),
                PageChangeBody::Delta(d) => RedoBody::Delta(d),
            };
            let mut page = s
                .pages
                .get(&change.page_no)
                .cloned()
                .unwrap_or_else(|| vec![0; PAGE_SIZE_BYTES]);
            let before = (s.samples.len() < SCAN_SAMPLES_MAX).then(|| page.clone());
            body.apply(&mut page).map_err(|e| {
                BackendError::new(
                    ErrorKind::Invalid,
                    format!("the guest shipped bad redo: {e}"),
                )
            })?;
            let record = RedoRecord {
                lsn: Lsn(1),
                prev_lsn_segment: Lsn(0),
                prev_lsn_page: Lsn(0),
                page_no: PageNo(change.page_no),
                is_cpl: i + 1 == n,
                body,
            };
            s.redo_bytes += record.encoded_len() as u64;
            if let Some(before) = before {
                s.samples.push((before, page.clone()));
            }
            s.pages.insert(change.page_no, page);
        }
        s.commits += 1;
        s.pages_dirtied += n as u64;
        Ok(())
    }
}

fn exec(
    c: &mut Compute,
    statements: Vec<Statement>,
    transaction: bool,
) -> anyhow::Result<Vec<compute_host::StatementResult>> {
    let req = ExecRequest {
        statements,
        transaction,
        result_bytes_max: RESULT_BYTES_MAX,
        timeout_ms: None,
        keyed: None,
    };
    match c.exec(&req, TIMEOUT).context("sandbox exec")? {
        ExecResponse::Ok(r) => Ok(r),
        ExecResponse::Err(e) => bail!("sandbox SQL error: {e:?}"),
        other => bail!("unexpected sandbox answer: {other:?}"),
    }
}

fn stmt(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: sql.into(),
        params,
    }
}

/// Statements (or transactions) per second of one workload on both engines.
pub struct EngineRow {
    pub what: &'static str,
    pub sandbox_per_sec: f64,
    pub native_per_sec: f64,
}

pub struct ComputeFigures {
    pub rows: Vec<EngineRow>,
    pub module_compile: Duration,
    /// Instantiate + open an empty volume.
    pub start_empty: Latencies,
    /// Instantiate + open + one point query on the populated volume.
    pub start_and_query: Latencies,
    pub transfer_redo_bytes: f64,
    pub transfer_pages: f64,
    /// Building one page's redo (`RedoBody::between`) on the pages the transfers changed, native,
    /// ns per page: the word-wise scan, and the byte-wise scan it replaced (same pages, same run).
    pub delta_scan_ns: (f64, f64),
    pub delta_scan_pages: usize,
}

/// Runs each workload for about `duration` per engine.
pub fn measure(duration: Duration, accounts: u64) -> anyhow::Result<ComputeFigures> {
    let engine = ComputeEngine::new(EngineConfig {
        max_instances: 8,
        ..EngineConfig::default()
    })
    .context("compiling the SQLite module")?;
    let backend = MemBackend::default();
    let mut c = Compute::start(&engine, Box::new(backend.clone()), CACHE_PAGES)?;
    let native = Connection::open_in_memory()?;
    for s in SQLITE.create {
        exec(&mut c, vec![stmt(s, vec![])], false)?;
        native.execute(s, [])?;
    }
    let mut rows = Vec::new();

    // Accounts for the later workloads, in transactions of 1,000.
    for chunk in (0..accounts).collect::<Vec<_>>().chunks(1000) {
        let statements = chunk
            .iter()
            .map(|&id| {
                stmt(
                    SQLITE.insert_account,
                    vec![
                        Value::Integer(id as i64 + 1),
                        Value::Integer(INITIAL_BALANCE),
                        Value::Text(ACCOUNT_FILLER.into()),
                    ],
                )
            })
            .collect();
        exec(&mut c, statements, true)?;
        native.execute_batch("BEGIN")?;
        for &id in chunk {
            native
                .prepare_cached(SQLITE.insert_account)?
                .execute(params![id as i64 + 1, INITIAL_BALANCE, ACCOUNT_FILLER])?;
        }
        native.execute_batch("COMMIT")?;
    }

    // Autocommit INSERTs.
    let sandbox = per_sec(duration, |i| {
        exec(
            &mut c,
            vec![stmt(
                SQLITE.insert_history,
                vec![
                    Value::Integer(i as i64),
                    Value::Integer(1),
                    Value::Integer(2),
                ],
            )],
            false,
        )
        .map(drop)
    })?;
    let nat = per_sec(duration, |i| {
        native
            .prepare_cached(SQLITE.insert_history)?
            .execute(params![i as i64, 1, 2])?;
        Ok(())
    })?;
    rows.push(EngineRow {
        what: "INSERT, one commit per exec call (statements/s)",
        sandbox_per_sec: sandbox,
        native_per_sec: nat,
    });

    // Point SELECTs.
    let sandbox = per_sec(duration, |i| {
        let id = (i as u64 * 7919) % accounts + 1;
        let r = exec(
            &mut c,
            vec![stmt(SQLITE.select_balance, vec![Value::Integer(id as i64)])],
            false,
        )?;
        match r.first().map(|r| r.rows.as_slice()) {
            Some([row]) if matches!(row.as_slice(), [Value::Integer(_)]) => Ok(()),
            other => bail!("sandbox point read of {id}: {other:?}"),
        }
    })?;
    let nat = per_sec(duration, |i| {
        let id = (i as u64 * 7919) % accounts + 1;
        let _b: i64 = native
            .prepare_cached(SQLITE.select_balance)?
            .query_row(params![id as i64], |r| r.get(0))?;
        Ok(())
    })?;
    rows.push(EngineRow {
        what: "point SELECT, one exec call each (statements/s)",
        sandbox_per_sec: sandbox,
        native_per_sec: nat,
    });

    // The same SELECTs, 100 per call: the host/guest boundary amortised, SQLite itself compared.
    let sandbox = per_sec(duration, |i| {
        let statements = (0..SELECTS_PER_CALL)
            .map(|j| {
                let id = ((i * SELECTS_PER_CALL + j) as u64 * 7919) % accounts + 1;
                stmt(SQLITE.select_balance, vec![Value::Integer(id as i64)])
            })
            .collect();
        let r = exec(&mut c, statements, false)?;
        if r.len() != SELECTS_PER_CALL || r.iter().any(|r| r.rows.len() != 1) {
            bail!("a batch of sandbox point reads came back short");
        }
        Ok(())
    })? * SELECTS_PER_CALL as f64;
    let nat = per_sec(duration, |i| {
        for j in 0..SELECTS_PER_CALL {
            let id = ((i * SELECTS_PER_CALL + j) as u64 * 7919) % accounts + 1;
            let _b: i64 = native
                .prepare_cached(SQLITE.select_balance)?
                .query_row(params![id as i64], |r| r.get(0))?;
        }
        Ok(())
    })? * SELECTS_PER_CALL as f64;
    rows.push(EngineRow {
        what: "point SELECT, 100 per exec call (statements/s)",
        sandbox_per_sec: sandbox,
        native_per_sec: nat,
    });

    // Transfers; count the redo they ship.
    let (commits0, pages0, bytes0) = {
        let s = backend.lock();
        (s.commits, s.pages_dirtied, s.redo_bytes)
    };
    let mut transfers = 0u64;
    let sandbox = per_sec(duration, |i| {
        let t = transfer_for(0, i as u64, accounts);
        let [a, b] = t.updates();
        exec(
            &mut c,
            vec![
                stmt(
                    SQLITE.update_balance,
                    vec![Value::Integer(a.0), Value::Integer(a.1)],
                ),
                stmt(
                    SQLITE.update_balance,
                    vec![Value::Integer(b.0), Value::Integer(b.1)],
                ),
                stmt(
                    SQLITE.insert_history,
                    vec![
                        Value::Integer(t.src),
                        Value::Integer(t.dst),
                        Value::Integer(t.amount),
                    ],
                ),
            ],
            true,
        )?;
        transfers += 1;
        Ok(())
    })?;
    let (commits1, pages1, bytes1) = {
        let s = backend.lock();
        (s.commits, s.pages_dirtied, s.redo_bytes)
    };
    if commits1 - commits0 != transfers {
        bail!(
            "{transfers} transfers made {} commits in the sandbox: expected one MTR per transaction",
            commits1 - commits0
        );
    }
    let nat = per_sec(duration, |i| {
        let t = transfer_for(0, i as u64, accounts);
        native.execute_batch("BEGIN")?;
        for (delta, id) in t.updates() {
            native
                .prepare_cached(SQLITE.update_balance)?
                .execute(params![delta, id])?;
        }
        native
            .prepare_cached(SQLITE.insert_history)?
            .execute(params![t.src, t.dst, t.amount])?;
        native.execute_batch("COMMIT")?;
        Ok(())
    })?;
    rows.push(EngineRow {
        what: "TPC-B transfer, 3 statements (transactions/s)",
        sandbox_per_sec: sandbox,
        native_per_sec: nat,
    });
    drop(c);

    // Start-up.
    let mut start_empty = Latencies::default();
    for _ in 0..100 {
        let t0 = Instant::now();
        let fresh = Compute::start(&engine, Box::new(MemBackend::default()), CACHE_PAGES)?;
        start_empty.push(t0.elapsed());
        drop(fresh);
    }
    let mut start_and_query = Latencies::default();
    for i in 0..100u64 {
        let t0 = Instant::now();
        let mut fresh = Compute::start(&engine, Box::new(backend.clone()), CACHE_PAGES)?;
        let id = (i * 7919) % accounts + 1;
        let r = exec(
            &mut fresh,
            vec![stmt(SQLITE.select_balance, vec![Value::Integer(id as i64)])],
            false,
        )?;
        start_and_query.push(t0.elapsed());
        if r.first().map(|r| r.rows.len()) != Some(1) {
            bail!("a fresh compute did not find account {id}");
        }
    }
    let (delta_scan_ns, delta_scan_pages) = time_delta_scans(&backend.lock().samples)?;
    let n = transfers.max(1) as f64;
    Ok(ComputeFigures {
        rows,
        module_compile: engine.compile_time(),
        start_empty,
        start_and_query,
        transfer_redo_bytes: (bytes1 - bytes0) as f64 / n,
        transfer_pages: (pages1 - pages0) as f64 / n,
        delta_scan_ns,
        delta_scan_pages,
    })
}

/// ns per page of the word-wise and the byte-wise delta scan over `samples`, best of 5 rounds
/// each (interleaved, so that the machine's load hits both alike); checks they agree.
fn time_delta_scans(samples: &[(Vec<u8>, Vec<u8>)]) -> anyhow::Result<((f64, f64), usize)> {
    if samples.is_empty() {
        bail!("no page change was recorded to time the delta scan on");
    }
    for (old, new) in samples {
        if RedoBody::between(Some(old), new) != RedoBody::between_bytewise(Some(old), new) {
            bail!("the word-wise and byte-wise delta scans disagree on a page");
        }
    }
    let per_page = |f: fn(Option<&[u8]>, &[u8]) -> RedoBody| {
        let t0 = Instant::now();
        let mut bytes = 0usize;
        for (old, new) in samples {
            bytes += match std::hint::black_box(f(Some(old), new)) {
                RedoBody::Image(b) | RedoBody::Delta(b) => b.len(),
            };
        }
        std::hint::black_box(bytes);
        t0.elapsed().as_nanos() as f64 / samples.len() as f64
    };
    let (mut word, mut byte) = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        word = word.min(per_page(RedoBody::between));
        byte = byte.min(per_page(RedoBody::between_bytewise));
    }
    Ok(((word, byte), samples.len()))
}

/// Calls `f(i)` for i = 0, 1, ... for about `duration`; returns calls per second.
fn per_sec(
    duration: Duration,
    mut f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < duration {
        for _ in 0..64 {
            f(i)?;
            i += 1;
        }
    }
    Ok(i as f64 / started.elapsed().as_secs_f64())
}
