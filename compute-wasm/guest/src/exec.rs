//! Runs an [`ExecRequest`] against the open connection.
//!
//! ## Rules
//!
//! - **One statement per entry.** An entry's SQL may end in whitespace, semicolons and comments,
//!   but a second statement is refused with [`ExecErrorKind::Invalid`]: the caller splits its
//!   scripts, and a statement index in an error always means one thing. (rusqlite checks this by
//!   *preparing* what follows the first statement, before anything runs; leading semicolons are
//!   not a statement to SQLite, so `";COMMIT"` is the one statement `COMMIT`.)
//! - An entry's statement is prepared through rusqlite's statement cache, so a repeated SQL text
//!   is parsed once. The guest's own statements (`BEGIN IMMEDIATE`, `COMMIT`, `ROLLBACK`, the
//!   savepoint below) are prepared afresh each time and never cached: an entry reading `COMMIT`
//!   must never be handed the guest's own, already-authorized `COMMIT`.
//! - `transaction: true` (the API's `batch`) wraps the entries in `BEGIN IMMEDIATE … COMMIT`; any
//!   error rolls the whole request back. **Transaction control inside it is refused by SQLite
//!   itself**, not by reading the text: while the entries are prepared and run, the connection's
//!   authorizer ([`install_guard`], `sqlite3_set_authorizer`) denies `SQLITE_TRANSACTION`
//!   (`BEGIN`, `COMMIT`, `END`, `ROLLBACK`) and `SQLITE_SAVEPOINT` (`SAVEPOINT`, `RELEASE`,
//!   `ROLLBACK TO`), which SQLite's parser reports however the statement is written (`;COMMIT`,
//!   comments, `INSERT …; COMMIT`). The entry fails with [`ExecErrorKind::Invalid`] and the request
//!   is rolled back: nothing of it is committed. An authorizer is asked only when a statement is
//!   compiled, so a transaction-control statement that an earlier request left in the cache would
//!   slip past it: whenever one may be there, the cache is flushed before the entries run.
//! - `transaction: false` runs the entries one after another, each its own transaction (unless
//!   the entries open one themselves with `BEGIN … COMMIT`, which is allowed here), and stops at
//!   the first error. A request never leaves a transaction open: one still open at the end is
//!   rolled back and the request fails.
//! - A write statement that returns rows (`RETURNING`) runs inside a savepoint when it is not
//!   already inside a transaction, so that stopping it half-way (the result grew too large)
//!   takes none of its changes.
//! - `rows_affected` is SQLite's `changes()` for a statement that changed rows (0 otherwise);
//!   `last_insert_rowid` is set when a statement that changed rows is an `INSERT`/`REPLACE` or
//!   moved the connection's last insert rowid.
//! - **The idempotency table** ([`IDEMPOTENCY_TABLE`]) belongs to the guest (RFC 0014 §6): the
//!   authorizer refuses every action of a request's SQL whose table (or index) argument names it
//!   (read, insert, update, delete, create, drop, alter, index, trigger, pragma), also when the
//!   action comes from a view or a trigger compiled into the statement; the guest's own
//!   statements on it ([`crate::keyed`]) run with the guard lifted and are never cached.
//! - Errors: SQLite's own errors are [`ExecErrorKind::Sql`] with SQLite's message; anything the
//!   VFS saw go wrong underneath (a host import failed or refused, an I/O or corruption code) is
//!   [`ExecErrorKind::Storage`].

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::ptr;

use compute_abi::{
    ExecError, ExecErrorKind, ExecRequest, ExecResponse, Statement, StatementResult, Value,
    IDEMPOTENCY_TABLE,
};
use rusqlite::ffi;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{CachedStatement, Connection, ErrorCode};

use crate::{keyed, vfs};

/// Approximate per-value overhead charged against `result_bytes_max`.
const VALUE_OVERHEAD_BYTES: u64 = 8;

/// What an entry of a transactional request that tries to control the transaction is told.
const TRANSACTION_CONTROL_REFUSED: &str = "transaction control (BEGIN, COMMIT, END, ROLLBACK, \
     SAVEPOINT, RELEASE) is not allowed inside a batch or a request with an Idempotency-Key: \
     it already runs as one transaction, committed after its last statement or rolled back \
     whole; nothing of it was committed";

/// What an entry that names the idempotency table is told.
const IDEMPOTENCY_TABLE_REFUSED: &str = "_borealis_idempotency is Borealis's own table (the \
     Idempotency-Key records): SQL can neither read nor change it";

/// The state of the transaction-control guard (see the module docs).
#[derive(Clone, Copy)]
pub(crate) struct Guard {
    /// The entries of a transactional request are being prepared or run: the authorizer refuses
    /// transaction control.
    deny: bool,
    /// The authorizer was asked about transaction control since the current entry began.
    seen: bool,
    /// The statement cache may hold a transaction-control statement (one prepared by a
    /// non-transactional request), which the authorizer would never be asked about again.
    cached: bool,
    /// The guest's own statements on the idempotency table are being prepared: the table guard
    /// is lifted.
    pub(crate) internal: bool,
    /// The authorizer refused an action on the idempotency table since the current entry began.
    table_refused: bool,
    /// An entry that is not read-only (`sqlite3_stmt_readonly`) ran since this was last cleared:
    /// a keyed request records its key only then.
    pub(crate) wrote: bool,
}

thread_local! {
    static GUARD: Cell<Guard> = const {
        Cell::new(Guard {
            deny: false,
            seen: false,
            cached: false,
            internal: false,
            table_refused: false,
            wrote: false,
        })
    };
}

pub(crate) fn guard<R>(f: impl FnOnce(&mut Guard) -> R) -> R {
    GUARD.with(|g| {
        let mut state = g.get();
        let r = f(&mut state);
        g.set(state);
        r
    })
}

/// Installs the authorizer that refuses transaction control inside a transactional request.
/// `bx_open` calls it once, on the connection every request then runs on.
pub fn install_guard(conn: &Connection) -> Result<(), String> {
    // SAFETY: a valid connection handle, used on this thread; the callback keeps no pointer.
    let rc =
        unsafe { ffi::sqlite3_set_authorizer(conn.handle(), Some(authorize), ptr::null_mut()) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("sqlite3_set_authorizer failed with {rc}"))
    }
}

/// Whether an authorizer argument names the idempotency table or its automatic index
/// (`sqlite_autoindex__borealis_idempotency_1`), in any letter case.
///
/// # Safety
/// `arg` is null or a NUL-terminated string that SQLite keeps alive during the callback.
unsafe fn names_idempotency_table(arg: *const c_char) -> bool {
    if arg.is_null() {
        return false;
    }
    // SAFETY: per the contract.
    let name = unsafe { std::ffi::CStr::from_ptr(arg) }.to_bytes();
    let table = IDEMPOTENCY_TABLE.as_bytes();
    if name.eq_ignore_ascii_case(table) {
        return true;
    }
    // Its UNIQUE index: `sqlite_autoindex_<table>_<n>`.
    const AUTOINDEX: &[u8] = b"sqlite_autoindex_";
    name.len() > AUTOINDEX.len() + table.len()
        && name[..AUTOINDEX.len()].eq_ignore_ascii_case(AUTOINDEX)
        && name[AUTOINDEX.len()..AUTOINDEX.len() + table.len()].eq_ignore_ascii_case(table)
        && name[AUTOINDEX.len() + table.len()] == b'_'
}

/// SQLite's authorizer callback, asked for every action of every statement it compiles.
unsafe extern "C" fn authorize(
    _: *mut c_void,
    action: c_int,
    arg1: *const c_char,
    arg2: *const c_char,
    _: *const c_char,
    _: *const c_char,
) -> c_int {
    // The first argument names a table, view, index or trigger (or a pragma, a file, nothing);
    // the second names the table only for these actions (for a read or an update it is a
    // column). ANALYZE and REINDEX may touch the table: they read nothing out, and `ANALYZE`,
    // `REINDEX` and `PRAGMA optimize` with no argument go through every table.
    let arg2_is_table = matches!(
        action,
        ffi::SQLITE_CREATE_INDEX
            | ffi::SQLITE_CREATE_TEMP_INDEX
            | ffi::SQLITE_CREATE_TRIGGER
            | ffi::SQLITE_CREATE_TEMP_TRIGGER
            | ffi::SQLITE_DROP_INDEX
            | ffi::SQLITE_DROP_TEMP_INDEX
            | ffi::SQLITE_DROP_TRIGGER
            | ffi::SQLITE_DROP_TEMP_TRIGGER
            | ffi::SQLITE_ALTER_TABLE
            | ffi::SQLITE_PRAGMA
    );
    let exempt = matches!(action, ffi::SQLITE_ANALYZE | ffi::SQLITE_REINDEX);
    // SAFETY: SQLite passes NUL-terminated strings (or nulls) valid for this call.
    let named = unsafe {
        names_idempotency_table(arg1) || (arg2_is_table && names_idempotency_table(arg2))
    };
    if named && !exempt && !guard(|g| g.internal) {
        guard(|g| g.table_refused = true);
        return ffi::SQLITE_DENY;
    }
    if action != ffi::SQLITE_TRANSACTION && action != ffi::SQLITE_SAVEPOINT {
        return ffi::SQLITE_OK;
    }
    guard(|g| {
        g.seen = true;
        if g.deny {
            ffi::SQLITE_DENY
        } else {
            ffi::SQLITE_OK
        }
    })
}

pub(crate) struct Failure {
    pub(crate) kind: ExecErrorKind,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            kind: ExecErrorKind::Invalid,
            message: message.into(),
        }
    }

    /// Classifies a rusqlite error; a storage failure seen by the VFS wins over SQLite's view,
    /// and the guard's refusal is said in words rather than SQLite's "not authorized".
    pub(crate) fn from_sqlite(e: rusqlite::Error) -> Failure {
        if let Some(storage) = vfs::take_storage_failure() {
            return Failure {
                kind: ExecErrorKind::Storage,
                message: format!("{storage} ({e})"),
            };
        }
        if e.sqlite_error_code() == Some(ErrorCode::AuthorizationForStatementDenied) {
            if guard(|g| g.table_refused) {
                return Failure::invalid(IDEMPOTENCY_TABLE_REFUSED);
            }
            if guard(|g| g.deny && g.seen) {
                return Failure::invalid(TRANSACTION_CONTROL_REFUSED);
            }
        }
        match e {
            rusqlite::Error::SqliteFailure(err, msg) => {
                let primary = err.extended_code & 0xff;
                let kind = match primary {
                    ffi::SQLITE_IOERR | ffi::SQLITE_CORRUPT | ffi::SQLITE_NOTADB => {
                        ExecErrorKind::Storage
                    }
                    _ => ExecErrorKind::Sql,
                };
                Failure {
                    kind,
                    message: msg.unwrap_or_else(|| err.to_string()),
                }
            }
            rusqlite::Error::SqlInputError { error, msg, .. } => {
                Failure::from_sqlite(rusqlite::Error::SqliteFailure(error, Some(msg)))
            }
            rusqlite::Error::MultipleStatement => Failure::invalid(
                "more than one statement in one entry: send one statement per entry",
            ),
            rusqlite::Error::Empty => Failure::invalid("the entry holds no SQL statement"),
            other => Failure::invalid(other.to_string()),
        }
    }
}

/// Rows returned so far, against `result_bytes_max`.
pub(crate) struct Budget {
    left: u64,
}

impl Budget {
    fn charge(&mut self, bytes: u64) -> Result<(), Failure> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => Err(Failure {
                kind: ExecErrorKind::TooLarge,
                message: "the result exceeds the size limit".into(),
            }),
        }
    }
}

/// Runs a request. Never leaves a transaction open.
pub fn run(conn: &Connection, req: &ExecRequest) -> ExecResponse {
    // A failure left over from outside a request (there should be none) must not be blamed on it.
    let _ = vfs::take_storage_failure();
    let mut budget = Budget {
        left: u64::from(req.result_bytes_max),
    };
    if let Some(k) = &req.keyed {
        return keyed::run(conn, req, k, &mut budget);
    }
    let outcome = if req.transaction {
        run_in_transaction(conn, &req.statements, &mut budget)
    } else {
        run_each(conn, &req.statements, &mut budget)
    };
    let outcome = match outcome {
        Ok(_) if !conn.is_autocommit() => {
            rollback(conn);
            let last = req.statements.len().saturating_sub(1);
            Err((
                last,
                Failure::invalid("the request left a transaction open: rolled back"),
            ))
        }
        Err(e) => {
            if !conn.is_autocommit() {
                rollback(conn);
            }
            Err(e)
        }
        ok => ok,
    };
    match outcome {
        Ok(results) => ExecResponse::Ok(results),
        Err((index, f)) => error_response(index, f),
    }
}

/// `f`, blamed on entry `index`, as the guest's answer.
pub(crate) fn error_response(index: usize, f: Failure) -> ExecResponse {
    ExecResponse::Err(ExecError {
        kind: f.kind,
        message: f.message,
        statement: u32::try_from(index).unwrap_or(u32::MAX),
    })
}

pub(crate) type Outcome = Result<Vec<StatementResult>, (usize, Failure)>;

fn run_each(conn: &Connection, statements: &[Statement], budget: &mut Budget) -> Outcome {
    let mut results = Vec::with_capacity(statements.len());
    for (i, st) in statements.iter().enumerate() {
        results.push(run_statement(conn, st, budget).map_err(|f| (i, f))?);
    }
    Ok(results)
}

fn run_in_transaction(conn: &Connection, statements: &[Statement], budget: &mut Budget) -> Outcome {
    simple(conn, "BEGIN IMMEDIATE").map_err(|f| (0, f))?;
    let results = run_entries_in_open_transaction(conn, statements, budget)?;
    // A failed COMMIT is blamed on the last statement.
    let last = statements.len().saturating_sub(1);
    simple(conn, "COMMIT").map_err(|f| (last, f))?;
    Ok(results)
}

/// Runs the entries inside the transaction the caller opened, with transaction control refused;
/// the caller commits or rolls back.
pub(crate) fn run_entries_in_open_transaction(
    conn: &Connection,
    statements: &[Statement],
    budget: &mut Budget,
) -> Outcome {
    // A cached statement is not compiled again, so the authorizer would not see it.
    if guard(|g| std::mem::replace(&mut g.cached, false)) {
        conn.flush_prepared_statement_cache();
    }
    guard(|g| g.deny = true);
    let ran = run_each(conn, statements, budget);
    guard(|g| g.deny = false);
    ran
}

/// Runs one of the guest's own statements, prepared afresh: never through the statement cache,
/// where an entry with the same text could find it (module docs).
pub(crate) fn simple(conn: &Connection, sql: &str) -> Result<(), Failure> {
    let mut stmt = conn.prepare(sql).map_err(Failure::from_sqlite)?;
    stmt.raw_execute().map(|_| ()).map_err(Failure::from_sqlite)
}

/// Prepares an entry's statement through the statement cache, under the guard: refused if it
/// controls the transaction of a transactional request; otherwise, if it controls a transaction
/// and was compiled now, the cache is marked as holding one.
fn prepare_entry<'c>(conn: &'c Connection, sql: &str) -> Result<CachedStatement<'c>, Failure> {
    guard(|g| {
        g.seen = false;
        g.table_refused = false;
    });
    let stmt = conn.prepare_cached(sql).map_err(Failure::from_sqlite)?;
    guard(|g| {
        if g.seen {
            g.cached = true;
        }
    });
    Ok(stmt)
}

pub(crate) fn rollback(conn: &Connection) {
    if let Err(f) = simple(conn, "ROLLBACK") {
        eprintln!("borealis exec: ROLLBACK failed: {}", f.message);
    }
}

fn run_statement(
    conn: &Connection,
    st: &Statement,
    budget: &mut Budget,
) -> Result<StatementResult, Failure> {
    if !is_plain_vacuum(&st.sql) {
        return run_statement_guarded(conn, st, budget);
    }
    // VACUUM copies every table through statements of its own, the idempotency table's too:
    // the guard is lifted while it runs. Only for the plain statement: `VACUUM INTO` takes an
    // expression, which could read the table.
    guard(|g| g.internal = true);
    let r = run_statement_guarded(conn, st, budget);
    guard(|g| g.internal = false);
    r
}

/// `VACUUM` or `VACUUM main`, any letter case, nothing else but whitespace and semicolons.
fn is_plain_vacuum(sql: &str) -> bool {
    let t = sql.trim().trim_end_matches([';', ' ', '\t', '\n', '\r']);
    t.eq_ignore_ascii_case("VACUUM") || t.eq_ignore_ascii_case("VACUUM main")
}

fn run_statement_guarded(
    conn: &Connection,
    st: &Statement,
    budget: &mut Budget,
) -> Result<StatementResult, Failure> {
    let mut stmt = prepare_entry(conn, &st.sql)?;
    let expected = stmt.parameter_count();
    if expected != st.params.len() {
        return Err(Failure::invalid(format!(
            "the statement has {expected} parameters, {} were given",
            st.params.len()
        )));
    }
    for (i, v) in st.params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, to_sql(v))
            .map_err(Failure::from_sqlite)?;
    }
    let columns: Vec<String> = stmt.column_names().map(String::from).collect();
    let readonly = stmt.readonly();
    guard(|g| g.wrote |= !readonly);
    // A write that returns rows may be stopped half-way: give it a savepoint to fall back to.
    let guarded = !readonly && !columns.is_empty() && conn.is_autocommit();
    if guarded {
        simple(conn, "SAVEPOINT bx_returning")?;
    }
    // SAFETY: the handle is only used for plain counters, on this thread.
    let db = unsafe { conn.handle() };
    // SAFETY: `db` is the open connection's handle; the call only reads a counter.
    let total_before = unsafe { ffi::sqlite3_total_changes64(db) };
    let rowid_before = conn.last_insert_rowid();

    let mut rows_out = Vec::new();
    let stepped = collect_rows(&mut stmt, columns.len(), budget, &mut rows_out);
    drop(stmt);
    if guarded {
        // The savepoint opened the transaction, so a plain ROLLBACK undoes exactly this
        // statement (ROLLBACK TO + RELEASE would commit an empty transaction).
        match stepped {
            Ok(()) => simple(conn, "RELEASE bx_returning")?,
            Err(_) => rollback(conn),
        }
    }
    stepped?;

    // SAFETY: as above; `conn` (and so `db`) is still open.
    let changed = unsafe { ffi::sqlite3_total_changes64(db) } != total_before;
    let rows_affected = if !readonly && changed {
        conn.changes()
    } else {
        0
    };
    let rowid = conn.last_insert_rowid();
    let inserted = !readonly && changed && (rowid != rowid_before || starts_insert(&st.sql));
    Ok(StatementResult {
        columns,
        rows: rows_out,
        rows_affected,
        last_insert_rowid: inserted.then_some(rowid),
    })
}

fn collect_rows(
    stmt: &mut rusqlite::Statement<'_>,
    ncols: usize,
    budget: &mut Budget,
    out: &mut Vec<Vec<Value>>,
) -> Result<(), Failure> {
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next().map_err(Failure::from_sqlite)? {
        let mut values = Vec::with_capacity(ncols);
        for c in 0..ncols {
            let v = from_sql(row.get_ref_unwrap(c));
            budget.charge(value_bytes(&v))?;
            values.push(v);
        }
        out.push(values);
    }
    Ok(())
}

fn value_bytes(v: &Value) -> u64 {
    VALUE_OVERHEAD_BYTES
        + match v {
            Value::Text(s) => s.len() as u64,
            Value::Blob(b) => b.len() as u64,
            Value::Null | Value::Integer(_) | Value::Real(_) => 0,
        }
}

fn to_sql(v: &Value) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match v {
        Value::Null => ValueRef::Null,
        Value::Integer(i) => ValueRef::Integer(*i),
        Value::Real(f) => ValueRef::Real(*f),
        Value::Text(s) => ValueRef::Text(s.as_bytes()),
        Value::Blob(b) => ValueRef::Blob(b),
    })
}

fn from_sql(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        // SQLite does not check that TEXT is UTF-8 (CAST(x'ff' AS TEXT)); such bytes are replaced.
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// The first `n` keywords of `sql`, upper-cased, skipping whitespace and comments.
fn leading_keywords(sql: &str, n: usize) -> Vec<String> {
    let b = sql.as_bytes();
    let mut i = 0;
    let mut words = Vec::with_capacity(n);
    while words.len() < n && i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() => i += 1,
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                words.push(sql[start..i].to_ascii_uppercase());
            }
            _ => break,
        }
    }
    words
}

fn starts_insert(sql: &str) -> bool {
    matches!(
        leading_keywords(sql, 1).first().map(String::as_str),
        Some("INSERT" | "REPLACE")
    )
}
