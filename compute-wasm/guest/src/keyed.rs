//! Requests with an idempotency key: each key's request takes effect once (RFC 0014 §6).
//!
//! The key, a fingerprint of the request and its answer go into a table of the tenant's own
//! database, [`IDEMPOTENCY_TABLE`], **in the transaction they answer**, so they are exactly as
//! durable as its effects: after any crash, the row is in the recovered database if and only if
//! the request's changes are.
//!
//! ```sql
//! CREATE TABLE _borealis_idempotency (
//!   key TEXT NOT NULL UNIQUE,        -- the Idempotency-Key header's value
//!   request BLOB NOT NULL,           -- SHA-256 of the statements, parameters and form (host's)
//!   answer BLOB NOT NULL,            -- the results, postcard, at most 1 MiB
//!   lsn INTEGER,                     -- the commit's LSN; NULL until the lsn note
//!   created_unix_ms INTEGER NOT NULL -- rowid order is creation order
//! )
//! ```
//!
//! [`Keyed::Run`]: `BEGIN IMMEDIATE`; look the key up. **Found** (and not expired) with the same
//! fingerprint: roll back, answer [`ExecResponse::Replayed`] with the recorded results and lsn;
//! found with another fingerprint: roll back, [`ExecErrorKind::Conflict`]. **Not found**: run
//! the entries as one transaction (transaction control refused, as in a batch); if any of them
//! is not read-only, insert the key's row (its lsn NULL; an expired row of the key is deleted
//! first) and commit: [`ExecResponse::Recorded`]. A request that only reads, or fails, records
//! nothing and is rolled back: it took no effect, and a retry runs it again.
//!
//! [`Keyed::Note`]: the host's second, tiny transaction, right after a `Recorded` commit (or
//! a replay whose lsn is NULL): the commit's LSN exists only once the page holding the row was
//! shipped, so the row cannot hold it; the note writes it (`WHERE lsn IS NULL`, so a written lsn
//! never changes) and deletes the expired rows among the [`EXPIRED_ROWS_PER_NOTE_MAX`] oldest.
//!
//! The table is created by the first keyed write. SQL from requests cannot touch it (the
//! authorizer in [`crate::exec`]); the statements here run with that guard lifted and are
//! prepared afresh each time, never through the statement cache an entry could reach.

use compute_abi::{
    ExecErrorKind, ExecRequest, ExecResponse, Keyed, StatementResult, EXPIRED_ROWS_PER_NOTE_MAX,
    IDEMPOTENCY_TABLE, IDEMPOTENT_ANSWER_BYTES_MAX,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::exec::{self, Budget, Failure};

// Every statement names the schema: a temp table of the same name (a tenant can rename one into
// it) would otherwise shadow the real one.

/// The table's definition after `CREATE TABLE main.`: SQLite keeps `CREATE TABLE ` and this text
/// in `sqlite_schema.sql`, which is how [`look_up`] knows the table is the guest's own.
const TABLE_DEFINITION: &str = "_borealis_idempotency (key TEXT NOT NULL UNIQUE, \
     request BLOB NOT NULL, answer BLOB NOT NULL, lsn INTEGER, created_unix_ms INTEGER NOT NULL)";
/// The table's definition as kept (NULL: no such table), and how many other schema objects
/// (triggers, indexes) name it besides its own UNIQUE index.
const SCHEMA: &str = "SELECT \
     (SELECT sql FROM main.sqlite_schema WHERE type = 'table' AND name = '_borealis_idempotency'), \
     (SELECT count(*) FROM main.sqlite_schema WHERE tbl_name = '_borealis_idempotency' \
        AND name NOT IN ('_borealis_idempotency', 'sqlite_autoindex__borealis_idempotency_1'))";
const LOOK_UP: &str = "SELECT request, answer, lsn, created_unix_ms \
     FROM main._borealis_idempotency WHERE key = ?1";
const DELETE_KEY: &str = "DELETE FROM main._borealis_idempotency WHERE key = ?1";
const INSERT: &str = "INSERT INTO main._borealis_idempotency (key, request, answer, lsn, \
     created_unix_ms) VALUES (?1, ?2, ?3, NULL, ?4)";
const NOTE_LSN: &str =
    "UPDATE main._borealis_idempotency SET lsn = ?2 WHERE key = ?1 AND lsn IS NULL";
/// The expired rows among the oldest few (rowid order is creation order): a note never scans
/// the table. A row created in the far future by a gateway with a wrong clock holds the
/// rows behind it until it expires.
const DELETE_EXPIRED: &str = "DELETE FROM main._borealis_idempotency WHERE rowid IN \
     (SELECT rowid FROM main._borealis_idempotency ORDER BY rowid LIMIT ?1) \
     AND created_unix_ms < ?2";

/// What the look-up of a key found.
enum Found {
    /// The table does not exist yet: the first keyed write creates it.
    NoTable,
    /// The table exists; the key has no row.
    Absent,
    Row(Recorded),
}

/// A key's row as recorded.
struct Recorded {
    request_sha256: Vec<u8>,
    answer: Vec<u8>,
    lsn: Option<i64>,
    created_unix_ms: i64,
}

/// Runs a keyed request (the module docs). Never leaves a transaction open.
pub(crate) fn run(
    conn: &Connection,
    req: &ExecRequest,
    keyed: &Keyed,
    budget: &mut Budget,
) -> ExecResponse {
    let response = match keyed {
        Keyed::Run {
            key,
            request_sha256,
            now_unix_ms,
            expired_before_unix_ms,
        } => run_once(
            conn,
            req,
            key,
            request_sha256,
            *now_unix_ms,
            *expired_before_unix_ms,
            budget,
        ),
        Keyed::Note {
            key,
            lsn,
            expired_before_unix_ms,
        } => note(conn, key, *lsn, *expired_before_unix_ms)
            .map(|updated| {
                ExecResponse::Ok(vec![StatementResult {
                    columns: Vec::new(),
                    rows: Vec::new(),
                    rows_affected: updated,
                    last_insert_rowid: None,
                }])
            })
            .unwrap_or_else(|f| exec::error_response(0, f)),
    };
    if !conn.is_autocommit() {
        exec::rollback(conn);
    }
    response
}

fn run_once(
    conn: &Connection,
    req: &ExecRequest,
    key: &str,
    request_sha256: &[u8],
    now_unix_ms: i64,
    expired_before_unix_ms: i64,
    budget: &mut Budget,
) -> ExecResponse {
    let last = req.statements.len().saturating_sub(1);
    if let Err(f) = exec::simple(conn, "BEGIN IMMEDIATE") {
        return exec::error_response(0, f);
    }
    let found = match internal(|| look_up(conn, key)) {
        Ok(found) => found,
        Err(f) => return exec::error_response(0, f),
    };
    let found = match found {
        Found::Row(row) if row.created_unix_ms >= expired_before_unix_ms => {
            exec::rollback(conn);
            return replay(key, row, request_sha256);
        }
        other => other,
    };
    exec::guard(|g| g.wrote = false);
    let results = match exec::run_entries_in_open_transaction(conn, &req.statements, budget) {
        Ok(results) => results,
        Err((index, f)) => return exec::error_response(index, f),
    };
    if !exec::guard(|g| g.wrote) {
        // Only reads: nothing to record, nothing took effect.
        exec::rollback(conn);
        return ExecResponse::Ok(results);
    }
    let answer = match postcard::to_allocvec(&results) {
        Ok(a) if a.len() <= IDEMPOTENT_ANSWER_BYTES_MAX => a,
        Ok(a) => {
            return exec::error_response(
                last,
                Failure {
                    kind: ExecErrorKind::TooLarge,
                    message: format!(
                        "the answer of a request with an Idempotency-Key is kept with its \
                         commit and may take at most {IDEMPOTENT_ANSWER_BYTES_MAX} bytes; this \
                         one takes {}: nothing was written",
                        a.len()
                    ),
                },
            )
        }
        Err(e) => {
            return exec::error_response(
                last,
                Failure::invalid(format!("encoding the answer: {e}")),
            )
        }
    };
    // The guest's insert must not show as the request's, or the next one's, last insert rowid.
    let rowid = conn.last_insert_rowid();
    let recorded = internal(|| -> Result<(), Failure> {
        match found {
            // Expired: its row makes way for the new one.
            Found::Row(_) => {
                execute(conn, DELETE_KEY, params![key])?;
            }
            Found::NoTable => {
                execute(conn, &format!("CREATE TABLE main.{TABLE_DEFINITION}"), [])?;
            }
            Found::Absent => {}
        }
        execute(
            conn,
            INSERT,
            params![key, request_sha256, answer, now_unix_ms],
        )?;
        Ok(())
    });
    // SAFETY: the open connection's handle, used on this thread; the call sets a counter.
    unsafe { rusqlite::ffi::sqlite3_set_last_insert_rowid(conn.handle(), rowid) };
    if let Err(f) = recorded {
        return exec::error_response(last, f);
    }
    match exec::simple(conn, "COMMIT") {
        Ok(()) => ExecResponse::Recorded(results),
        Err(f) => exec::error_response(last, f),
    }
}

/// The answer to a key found recorded: its results and lsn if the request is the same one.
fn replay(key: &str, row: Recorded, request_sha256: &[u8]) -> ExecResponse {
    if row.request_sha256 != request_sha256 {
        return exec::error_response(
            0,
            Failure {
                kind: ExecErrorKind::Conflict,
                message: format!(
                    "Idempotency-Key {key:?} was used for another request (other statements, \
                     parameters or form); nothing ran. Use a new key for a new request"
                ),
            },
        );
    }
    match postcard::from_bytes::<Vec<StatementResult>>(&row.answer) {
        Ok(results) => ExecResponse::Replayed {
            results,
            lsn: row.lsn.and_then(|l| u64::try_from(l).ok()),
        },
        Err(e) => exec::error_response(
            0,
            Failure::invalid(format!(
                "the answer recorded for Idempotency-Key {key:?} cannot be decoded ({e}); \
                 nothing ran"
            )),
        ),
    }
}

/// The lsn note (module docs): how many rows got their lsn (0 or 1).
fn note(
    conn: &Connection,
    key: &str,
    lsn: u64,
    expired_before_unix_ms: i64,
) -> Result<u64, Failure> {
    let lsn =
        i64::try_from(lsn).map_err(|_| Failure::invalid(format!("lsn {lsn} is above i64")))?;
    exec::simple(conn, "BEGIN IMMEDIATE")?;
    let updated = internal(|| -> Result<u64, Failure> {
        if !table_exists(conn)? {
            return Ok(0);
        }
        let updated = execute(conn, NOTE_LSN, params![key, lsn])?;
        execute(
            conn,
            DELETE_EXPIRED,
            params![EXPIRED_ROWS_PER_NOTE_MAX, expired_before_unix_ms],
        )?;
        Ok(updated)
    })?;
    exec::simple(conn, "COMMIT")?;
    Ok(updated)
}

/// Runs `f` with the idempotency table's guard lifted (the guest's own statements).
fn internal<R>(f: impl FnOnce() -> R) -> R {
    exec::guard(|g| g.internal = true);
    let r = f();
    exec::guard(|g| g.internal = false);
    r
}

/// Whether the table exists, and is the guest's own: created by it (its definition exactly
/// [`TABLE_DEFINITION`]; a table renamed into the name is kept quoted, another schema differs)
/// with no trigger or index of anyone else's on it. Anything else is refused: a tenant's table
/// there could hold forged records, or triggers that would run with the guard lifted.
fn table_exists(conn: &Connection) -> Result<bool, Failure> {
    let (sql, others) = conn
        .query_row(SCHEMA, [], |r| {
            Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(Failure::from_sqlite)?;
    let Some(sql) = sql else {
        return Ok(false);
    };
    if sql != format!("CREATE TABLE {TABLE_DEFINITION}") || others != 0 {
        return Err(Failure::invalid(format!(
            "this database has a table named {IDEMPOTENCY_TABLE} that is not Borealis's own \
             (another definition, or triggers or indexes on it): requests with an \
             Idempotency-Key cannot be recorded here"
        )));
    }
    Ok(true)
}

fn look_up(conn: &Connection, key: &str) -> Result<Found, Failure> {
    if !table_exists(conn)? {
        return Ok(Found::NoTable);
    }
    let mut stmt = conn.prepare(LOOK_UP).map_err(Failure::from_sqlite)?;
    let row = stmt
        .query_row(params![key], |r| {
            Ok(Recorded {
                request_sha256: r.get(0)?,
                answer: r.get(1)?,
                lsn: r.get(2)?,
                created_unix_ms: r.get(3)?,
            })
        })
        .optional()
        .map_err(Failure::from_sqlite)?;
    Ok(row.map_or(Found::Absent, Found::Row))
}

/// Runs one of the guest's own statements, prepared afresh; the rows it changed.
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<u64, Failure> {
    let mut stmt = conn.prepare(sql).map_err(Failure::from_sqlite)?;
    stmt.execute(params)
        .map(|n| n as u64)
        .map_err(Failure::from_sqlite)
}
