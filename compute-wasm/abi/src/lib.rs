//! # compute-abi: the contract between the compute host and the SQLite guest
//!
//! The guest is SQLite compiled to `wasm32-wasip1` (`compute-wasm/guest`); the host runs it in
//! wasmtime (`compute-wasm/host`). They share linear memory and a handful of functions, and they
//! exchange a few `postcard`-encoded structures defined here. Keep this crate tiny: both sides
//! compile it, one for wasm, one natively.
//!
//! ## Host imports (module [`IMPORT_MODULE`])
//!
//! | import                                   | meaning                                                 |
//! |------------------------------------------|---------------------------------------------------------|
//! | `get_page(page_no: u32, out: u32) -> i32` | copy page `page_no` (4096 bytes) to guest address `out` |
//! | `commit(ptr: u32, len: u32) -> i32`      | ship one mini-transaction: a postcard [`Mtr`] at `ptr`  |
//!
//! `get_page` returns [`PAGE_OK`], [`PAGE_ABSENT`] (never written: the guest uses zeros) or
//! [`HOST_ERROR`]. `commit` returns [`COMMIT_OK`], [`COMMIT_REFUSED`] (no write quorum: nothing
//! left the compute, the transaction must roll back) or [`HOST_ERROR`]. After a `HOST_ERROR` the
//! host knows what went wrong and reports it itself; the guest only has to fail the statement.
//!
//! ## Guest exports
//!
//! | export                                | meaning                                                   |
//! |---------------------------------------|-----------------------------------------------------------|
//! | `bx_alloc(len: u32) -> u32`           | allocate `len` bytes in guest memory for the host to fill |
//! | `bx_free(ptr: u32, len: u32)`         | free what `bx_alloc` or `bx_exec` returned                |
//! | `bx_open(cache_pages: u32) -> i32`    | open the volume: [`OPEN_OK`], [`OPEN_UNREADABLE`] or [`OPEN_FAILED`] |
//! | `bx_exec(ptr: u32, len: u32) -> u64`  | run a postcard [`ExecRequest`]; returns `ptr << 32 \| len` of a postcard [`ExecResponse`] |
//!
//! Buffers: the host writes a request into a `bx_alloc` buffer, calls `bx_exec` (which only
//! borrows it), copies the response out, then frees both with `bx_free`.
//!
//! (Never name a guest export `open`, `read`, `write` or `exec`: they would replace libc's.)

use serde::{Deserialize, Serialize};

pub const IMPORT_MODULE: &str = "borealis";

pub const PAGE_OK: i32 = 0;
pub const PAGE_ABSENT: i32 = 1;
pub const COMMIT_OK: i32 = 0;
pub const COMMIT_REFUSED: i32 = 1;
pub const HOST_ERROR: i32 = -1;

/// `bx_open`: the volume is open.
pub const OPEN_OK: i32 = 0;
/// `bx_open` failed for a reason of the compute's own (the reason is on the guest's stderr).
pub const OPEN_FAILED: i32 = 1;
/// `bx_open` failed because the database itself cannot be opened: SQLite reads its bytes as
/// corrupt, not a database, or with a malformed schema. Every instance will fail the same way.
pub const OPEN_UNREADABLE: i32 = 2;

/// An SQL value. BLOBs travel as bytes; the gateway renders them as `{"base64": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// One statement with its positional parameters (`?1`, `?2`, ... or `?`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

/// What the host asks the guest to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub statements: Vec<Statement>,
    /// Run all statements in one transaction: all take effect or none does.
    pub transaction: bool,
    /// Stop with [`ExecErrorKind::TooLarge`] once the rows returned exceed this many bytes
    /// (about): bounds guest and host memory for a runaway `SELECT`.
    pub result_bytes_max: u32,
    /// The request's own time limit, when it asked for one (`"timeout_ms"`); else the
    /// gateway's `--statement-timeout`. The host enforces it: it is never sent to the guest
    /// (skipped by the encoding, so the guest's view of the request is unchanged).
    #[serde(skip)]
    pub timeout_ms: Option<u32>,
    /// The request carried an `Idempotency-Key` (or is the host's lsn note for one): see
    /// [`Keyed`]. `None` for every other request.
    pub keyed: Option<Keyed>,
}

/// The table that holds a tenant's idempotency keys, in its own database (RFC 0014 §6). SQL
/// from a request can neither read nor change it: only the guest's own statements can.
pub const IDEMPOTENCY_TABLE: &str = "_borealis_idempotency";

/// The most bytes a keyed request's answer (its results, postcard) may take in
/// [`IDEMPOTENCY_TABLE`]; a larger answer fails the request with [`ExecErrorKind::TooLarge`] and
/// nothing is written.
pub const IDEMPOTENT_ANSWER_BYTES_MAX: usize = 1 << 20;

/// What an idempotency key asks of the guest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Keyed {
    /// Run the request's statements once per key, as one transaction: `BEGIN IMMEDIATE`, look
    /// the key up (a row created before `expired_before_unix_ms` does not count); found with the
    /// same `request_sha256`: roll back and answer [`ExecResponse::Replayed`]; found with
    /// another: [`ExecErrorKind::Conflict`]; not found: run the statements, and if any of them
    /// writes, insert the key's row (its `lsn` NULL) in the same transaction and answer
    /// [`ExecResponse::Recorded`]. A request that only reads, or fails, records nothing.
    Run {
        key: String,
        /// SHA-256 of the request's statements, parameters and form.
        request_sha256: Vec<u8>,
        /// The host's wall clock, stored as the row's creation time.
        now_unix_ms: i64,
        expired_before_unix_ms: i64,
    },
    /// The **lsn note**: a second, tiny transaction that writes the LSN of the commit that
    /// recorded `key` into its row (`WHERE lsn IS NULL`: a note never changes a written lsn), and
    /// deletes the expired rows among the [`EXPIRED_ROWS_PER_NOTE_MAX`] oldest. The
    /// request carries no statements; the answer is `Ok` with no results.
    Note {
        key: String,
        lsn: u64,
        expired_before_unix_ms: i64,
    },
}

/// Expired key rows one lsn note deletes at most: the table shrinks as fast as it grows (one
/// row per keyed write) while a note stays a small transaction.
pub const EXPIRED_ROWS_PER_NOTE_MAX: u32 = 4;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatementResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    pub rows_affected: u64,
    pub last_insert_rowid: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecErrorKind {
    /// SQLite refused the statement (syntax, constraint, missing table, ...).
    Sql,
    /// The request itself is malformed (undecodable, more params than placeholders, ...).
    Invalid,
    /// The result grew past `result_bytes_max`.
    TooLarge,
    /// Storage failed underneath (a page could not be read, a commit could not be shipped). The
    /// host holds the detail.
    Storage,
    /// The request's idempotency key was recorded for another request (statements, parameters
    /// or form differ): nothing ran.
    Conflict,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecError {
    pub kind: ExecErrorKind,
    pub message: String,
    /// Index of the statement that failed.
    pub statement: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ExecResponse {
    Ok(Vec<StatementResult>),
    Err(ExecError),
    /// A [`Keyed::Run`] that wrote: its key's row was committed with these results, `lsn` NULL.
    /// The host writes the commit's LSN with a [`Keyed::Note`] before it answers.
    Recorded(Vec<StatementResult>),
    /// A [`Keyed::Run`] whose key was already recorded for the same request: nothing ran; these
    /// are the results recorded then, and the LSN its note wrote (`None`: no note was written,
    /// the host writes one now).
    Replayed {
        results: Vec<StatementResult>,
        lsn: Option<u64>,
    },
}

/// How one page changed in a mini-transaction, as the guest hands it to the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageChangeBody {
    /// The full new image (4096 bytes).
    Image(Vec<u8>),
    /// Runs against the previous image, in `borealis_core::redo` delta encoding.
    Delta(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageChange {
    pub page_no: u32,
    pub body: PageChangeBody,
}

/// A mini-transaction: every page one SQLite commit changed, ascending by page number. The host
/// assigns consecutive LSNs; the last record is the consistency point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mtr {
    pub changes: Vec<PageChange>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_request_round_trips() {
        let req = ExecRequest {
            statements: vec![Statement {
                sql: "SELECT ?".into(),
                params: vec![Value::Blob(vec![1, 2]), Value::Real(1.5), Value::Null],
            }],
            transaction: true,
            result_bytes_max: 1 << 20,
            timeout_ms: None,
            keyed: Some(Keyed::Run {
                key: "k-1".into(),
                request_sha256: vec![7; 32],
                now_unix_ms: 1_700_000_000_000,
                expired_before_unix_ms: 1_699_999_000_000,
            }),
        };
        let bytes = postcard::to_allocvec(&req).unwrap();
        assert_eq!(postcard::from_bytes::<ExecRequest>(&bytes).unwrap(), req);
        // The time limit stays with the host: the guest's bytes are the same without it.
        let limited = ExecRequest {
            timeout_ms: Some(250),
            ..req.clone()
        };
        assert_eq!(postcard::to_allocvec(&limited).unwrap(), bytes);
    }
}
