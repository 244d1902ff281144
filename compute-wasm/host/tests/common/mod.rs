//! Test support: an in-memory page store as the backend, a shared engine, and shorthands.
#![allow(dead_code)] // each test binary uses a different part of this

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use borealis_core::redo::RedoBody;
use borealis_core::{ErrorKind, PageNo, PAGE_SIZE_BYTES};
use compute_host::{
    Backend, BackendError, Compute, ComputeEngine, EngineConfig, ExecError, ExecRequest,
    ExecResponse, Mtr, PageChangeBody, Statement, StatementResult, Value,
};

pub const TIMEOUT: Duration = Duration::from_secs(30);
pub const RESULT_BYTES_MAX: u32 = 64 << 20;

/// What a test can make the backend do.
#[derive(Default)]
pub struct Store {
    pub pages: HashMap<u32, Vec<u8>>,
    /// Every MTR accepted, in order.
    pub commits: Vec<Mtr>,
    /// Refuse commits as if the write quorum were lost.
    pub refuse_commits: bool,
    /// Fail page reads as if the pageserver were down.
    pub fail_reads: bool,
    pub reads: u64,
}

/// A page store in memory, applying MTRs with `RedoBody::apply` (a test double of the
/// pageserver + safekeepers). Clones share the store.
#[derive(Clone, Default)]
pub struct MemBackend(pub Arc<Mutex<Store>>);

impl MemBackend {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.0.lock().unwrap()
    }

    /// A sorted copy of every page, to compare states.
    pub fn snapshot(&self) -> BTreeMap<u32, Vec<u8>> {
        self.lock()
            .pages
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }

    pub fn commit_count(&self) -> usize {
        self.lock().commits.len()
    }
}

impl Backend for MemBackend {
    fn get_page(&mut self, page: PageNo) -> Result<Option<Vec<u8>>, BackendError> {
        let mut s = self.lock();
        s.reads += 1;
        if s.fail_reads {
            return Err(BackendError::new(
                ErrorKind::Unavailable,
                "pageserver down (test)",
            ));
        }
        Ok(s.pages.get(&page.0).cloned())
    }

    fn commit(&mut self, mtr: Mtr) -> Result<(), BackendError> {
        let mut s = self.lock();
        if s.refuse_commits {
            return Err(BackendError::new(
                ErrorKind::ReadOnly,
                "no write quorum (test)",
            ));
        }
        for change in &mtr.changes {
            let mut page = s
                .pages
                .get(&change.page_no)
                .cloned()
                .unwrap_or_else(|| vec![0; PAGE_SIZE_BYTES]);
            let body = match &change.body {
                PageChangeBody::Image(b) => RedoBody::Image(b.clone()),
                PageChangeBody::Delta(d) => RedoBody::Delta(d.clone()),
            };
            body.apply(&mut page).expect("the guest ships valid redo");
            s.pages.insert(change.page_no, page);
        }
        s.commits.push(mtr);
        Ok(())
    }
}

/// One engine per test binary: compiling the module takes about a second.
pub fn engine() -> &'static ComputeEngine {
    static ENGINE: OnceLock<ComputeEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = EngineConfig {
            max_instances: 64,
            module_cache_dir: Some(
                std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasmtime-cache"),
            ),
            ..EngineConfig::default()
        };
        ComputeEngine::new(config).expect("engine")
    })
}

pub fn start(backend: &MemBackend) -> Compute {
    Compute::start(engine(), Box::new(backend.clone()), 256).expect("compute starts")
}

pub fn stmt(sql: &str, params: Vec<Value>) -> Statement {
    Statement {
        sql: sql.into(),
        params,
    }
}

pub fn request(statements: Vec<Statement>, transaction: bool) -> ExecRequest {
    ExecRequest {
        statements,
        transaction,
        result_bytes_max: RESULT_BYTES_MAX,
        timeout_ms: None,
        keyed: None,
    }
}

/// Runs one statement that must succeed.
pub fn q(c: &mut Compute, sql: &str, params: Vec<Value>) -> StatementResult {
    match c
        .exec(&request(vec![stmt(sql, params)], false), TIMEOUT)
        .expect("exec")
    {
        ExecResponse::Ok(mut r) => r.pop().expect("one result"),
        other => panic!("{sql}: {other:?}"),
    }
}

/// Runs one statement that must fail with an SQL-level error.
pub fn q_err(c: &mut Compute, sql: &str, params: Vec<Value>) -> ExecError {
    match c
        .exec(&request(vec![stmt(sql, params)], false), TIMEOUT)
        .expect("exec")
    {
        ExecResponse::Err(e) => e,
        other => panic!("{sql}: expected an error, got {other:?}"),
    }
}

/// The single integer a query returns.
pub fn int(c: &mut Compute, sql: &str) -> i64 {
    match q(c, sql, vec![]).rows.as_slice() {
        [row] => match row.as_slice() {
            [Value::Integer(i)] => *i,
            other => panic!("{sql}: not one integer: {other:?}"),
        },
        other => panic!("{sql}: not one row: {other:?}"),
    }
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// A small deterministic PRNG (splitmix64), so a failing seed replays exactly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
