//! # compute-guest: SQLite for Borealis, built for `wasm32-wasip1`
//!
//! This crate is the *guest* half of a Borealis compute: SQLite (rusqlite's bundled build,
//! compiled with `SQLITE_OS_OTHER=1` so that it has no OS layer of its own) plus a VFS written in
//! Rust whose page reads and commits are host imports ([`compute_abi`] documents the ABI).
//!
//! - [`vfs`]: the main database file as pages served by the host; every SQLite commit becomes one
//!   mini-transaction (`Mtr`) handed to the host's `commit` import. Nothing else leaves.
//! - [`exec`]: runs an `ExecRequest` (prepared-statement cache, parameters, rows, limits) and
//!   classifies failures as SQL, invalid-request, too-large or storage errors.
//! - [`keyed`]: requests with an idempotency key, recorded in the tenant's own database in the
//!   transaction they answer, and the host's lsn note.
//!
//! `bx_open` opens the volume in SQLite's **defensive mode** (`SQLITE_DBCONFIG_DEFENSIVE`: no
//! `writable_schema`, no hand-set `schema_version`, ...): SQL cannot write the schema by hand,
//! which is how a tenant could make its own database unopenable. A database that cannot be
//! opened all the same (SQLite reads it as corrupt) is reported as such ([`compute_abi::OPEN_UNREADABLE`]), apart from every other
//! failure to open. It also installs the authorizer that keeps a transactional request one
//! transaction ([`exec`]).
//!
//! The exports are `bx_alloc`, `bx_free`, `bx_open` and `bx_exec`. Buffer ownership: the host
//! fills a `bx_alloc`ed buffer with a request, calls `bx_exec`, copies the response out, and frees
//! both buffers with `bx_free` (`bx_exec` only borrows its input).
//!
//! The guest keeps no durable state: a fresh instance opened on the same volume sees everything
//! committed before. A guest panic aborts (a trap): the host throws the instance away, and since
//! pages only leave in `commit`, nothing half-done can leak out.

use std::cell::RefCell;
use std::ffi::c_int;

use compute_abi::{
    ExecError, ExecErrorKind, ExecRequest, ExecResponse, OPEN_FAILED, OPEN_OK, OPEN_UNREADABLE,
};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

pub mod exec;
mod host;
pub mod keyed;
pub mod vfs;

/// How many distinct SQL texts keep a prepared statement.
const STATEMENT_CACHE_CAPACITY: usize = 256;

thread_local! {
    static CONN: RefCell<Option<Connection>> = const { RefCell::new(None) };
}

/// Called by `sqlite3_initialize` (SQLITE_OS_OTHER=1 leaves it to us).
#[no_mangle]
pub extern "C" fn sqlite3_os_init() -> c_int {
    vfs::register()
}

#[no_mangle]
pub extern "C" fn sqlite3_os_end() -> c_int {
    rusqlite::ffi::SQLITE_OK
}

/// Allocates `len` bytes for the host to fill; free with [`bx_free`].
#[no_mangle]
pub extern "C" fn bx_alloc(len: u32) -> u32 {
    let buf = vec![0u8; len as usize].into_boxed_slice();
    Box::into_raw(buf).cast::<u8>() as u32
}

/// Frees a buffer from [`bx_alloc`] or [`bx_exec`].
///
/// # Safety
/// `ptr`/`len` must be exactly what one of those returned, freed once.
#[no_mangle]
pub unsafe extern "C" fn bx_free(ptr: u32, len: u32) {
    let slice = std::ptr::slice_from_raw_parts_mut(ptr as *mut u8, len as usize);
    // SAFETY: per the contract, this is a Box<[u8]> we handed out.
    drop(unsafe { Box::from_raw(slice) });
}

/// Opens the volume with a page cache of `cache_pages` pages. [`OPEN_OK`] on success;
/// [`OPEN_UNREADABLE`] if the database itself cannot be opened (SQLite finds it corrupt, not a
/// database, or its schema malformed); [`OPEN_FAILED`] for anything else. The reason was printed
/// to stderr.
#[no_mangle]
pub extern "C" fn bx_open(cache_pages: u32) -> i32 {
    match open(cache_pages) {
        Ok(conn) => {
            CONN.with(|c| *c.borrow_mut() = Some(conn));
            OPEN_OK
        }
        Err(OpenError::Unreadable(e)) => {
            eprintln!("bx_open: {e}");
            OPEN_UNREADABLE
        }
        Err(OpenError::Failed(e)) => {
            eprintln!("bx_open: {e}");
            OPEN_FAILED
        }
    }
}

/// Why [`open`] failed.
enum OpenError {
    /// The database's own bytes: SQLite reads them as corrupt, not a database, or with a
    /// malformed schema. Every instance opened on this volume will fail the same way.
    Unreadable(String),
    /// Anything else (a bug, a storage failure the VFS saw).
    Failed(String),
}

impl From<String> for OpenError {
    fn from(message: String) -> Self {
        OpenError::Failed(message)
    }
}

/// Classifies an SQLite error met while opening, `what` saying what was being done.
fn open_error(what: &str, e: rusqlite::Error) -> OpenError {
    let message = format!("{what}: {e}");
    if let Some(storage) = vfs::take_storage_failure() {
        return OpenError::Failed(format!("{message} ({storage})"));
    }
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            OpenError::Unreadable(message)
        }
        _ => OpenError::Failed(message),
    }
}

fn open(cache_pages: u32) -> Result<Connection, OpenError> {
    if CONN.with(|c| c.borrow().is_some()) {
        return Err(OpenError::Failed("the volume is already open".into()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_EXRESCODE;
    let conn = Connection::open_with_flags_and_vfs("volume", flags, vfs::VFS_NAME)
        .map_err(|e| open_error("opening the volume", e))?;
    // Defensive mode: the schema cannot be written directly (`PRAGMA writable_schema` is
    // ignored, `sqlite_schema` refuses updates), nor can anything else that lets SQL corrupt
    // the file. A tenant must not be able to make its own database unopenable.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)
        .map_err(|e| format!("enabling SQLITE_DBCONFIG_DEFENSIVE: {e}"))?;
    if !conn
        .db_config(DbConfig::SQLITE_DBCONFIG_DEFENSIVE)
        .map_err(|e| format!("reading SQLITE_DBCONFIG_DEFENSIVE: {e}"))?
    {
        return Err(OpenError::Failed(
            "SQLITE_DBCONFIG_DEFENSIVE did not turn on".into(),
        ));
    }
    let cache_kib = u64::from(cache_pages.max(1)) * (borealis_core::PAGE_SIZE_BYTES as u64 / 1024);
    // locking_mode=EXCLUSIVE + journal_mode=MEMORY + synchronous not OFF make the pager use batch
    // atomic writes (one COMMIT_ATOMIC_WRITE per commit); cache_spill=OFF keeps dirty pages in
    // the cache until commit, so no page is ever written outside a batch.
    let config = format!(
        "PRAGMA locking_mode=EXCLUSIVE;
         PRAGMA journal_mode=MEMORY;
         PRAGMA synchronous=NORMAL;
         PRAGMA cache_spill=OFF;
         PRAGMA cache_size=-{cache_kib};"
    );
    vfs::allow_config_pragmas(true);
    let configured = conn.execute_batch(&config);
    vfs::allow_config_pragmas(false);
    configured.map_err(|e| open_error("configuring the connection", e))?;
    let check = |pragma: &str| -> Result<String, OpenError> {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| {
            r.get::<_, rusqlite::types::Value>(0)
        })
        .map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string(),
            rusqlite::types::Value::Text(t) => t,
            other => format!("{other:?}"),
        })
        .map_err(|e| open_error(&format!("reading PRAGMA {pragma}"), e))
    };
    for (pragma, want) in [
        ("journal_mode", "memory"),
        ("locking_mode", "exclusive"),
        ("page_size", "4096"),
        ("cache_spill", "0"),
    ] {
        let got = check(pragma)?;
        if got != want {
            // (A page 0 with another page size never gets here: the VFS refuses it at open.)
            return Err(OpenError::Failed(format!(
                "PRAGMA {pragma} is {got}, expected {want}"
            )));
        }
    }
    // SQLite loads the schema lazily: read it now, so that a malformed one fails the open and
    // not the first request.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| open_error("reading the schema", e))?;
    exec::install_guard(&conn)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
    Ok(conn)
}

/// Runs the postcard [`ExecRequest`] at `ptr..ptr+len` and returns `resp_ptr << 32 | resp_len`
/// of a postcard [`ExecResponse`]; free it with [`bx_free`]. The input stays the caller's.
///
/// # Safety
/// `ptr..ptr+len` must be readable guest memory (a buffer from [`bx_alloc`]).
#[no_mangle]
pub unsafe extern "C" fn bx_exec(ptr: u32, len: u32) -> u64 {
    // SAFETY: per the contract.
    let input = unsafe { std::slice::from_raw_parts(ptr as *const u8, len as usize) };
    let response = match postcard::from_bytes::<ExecRequest>(input) {
        Ok(req) => CONN.with(|c| match c.borrow().as_ref() {
            Some(conn) => exec::run(conn, &req),
            None => invalid("bx_exec before a successful bx_open".into()),
        }),
        Err(e) => invalid(format!("undecodable request: {e}")),
    };
    let bytes = match postcard::to_allocvec(&response) {
        Ok(b) => b,
        // Encoding a response cannot fail short of running out of memory (which aborts first).
        Err(e) => postcard::to_allocvec(&invalid(format!("encoding the response: {e}")))
            .unwrap_or_default(),
    };
    let bytes = bytes.into_boxed_slice();
    let len = bytes.len() as u64;
    let ptr = Box::into_raw(bytes).cast::<u8>() as u32;
    (u64::from(ptr) << 32) | len
}

fn invalid(message: String) -> ExecResponse {
    ExecResponse::Err(ExecError {
        kind: ExecErrorKind::Invalid,
        message,
        statement: 0,
    })
}
