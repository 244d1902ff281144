//! The shared error kinds: the small public layer of Borealis's two-layer errors.
//!
//! Each crate has its own rich `thiserror` enum; every such error can say which [`ErrorKind`] it
//! is, and that is what callers branch on. The gateway maps each kind to an HTTP status and a
//! stable `code` string (docs/design.md §7).

use serde::{Deserialize, Serialize};

/// What a caller should do about a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The request itself is wrong (malformed, too large, bad SQL); retrying it will not help.
    Invalid,
    /// The request was well formed but the SQL engine refused it (syntax, constraint, ...).
    Sql,
    /// A write quorum cannot be reached: writes are refused, reads may still work. The write was
    /// refused before its redo left the compute, so it will never take effect.
    ReadOnly,
    /// A passing condition (a member down, a compute restarting); retry later. If it concerns a
    /// commit, the commit's outcome may be unknown and the message says so.
    Unavailable,
    /// A newer writer epoch exists; this writer must stop.
    Fenced,
    /// The work took longer than allowed and was stopped.
    Timeout,
    /// Data on disk or on the wire failed its checks (magic, version, length, CRC).
    Corrupt,
    /// A bug of ours. Logged at ERROR.
    Internal,
    // New variants go below this line, never above: postcard encodes a variant by its index.
    /// The asker's credentials are missing, invalid, or do not cover what it asked.
    Unauthorized,
    /// The asker has too much in flight (requests, or bytes held for them): refused before any
    /// of it took effect. Retry after a moment.
    RateLimited,
    /// The tenant's database itself cannot be opened: SQLite reads its pages, exactly as
    /// storage holds them, as corrupt, not a database, or with a malformed schema. Every request
    /// fails the same way until the data is repaired, so retrying will not help. (Unlike
    /// [`ErrorKind::Corrupt`]: bytes damaged at rest or on the wire, caught by a check, and
    /// served again from a good copy.)
    DatabaseCorrupt,
}

impl ErrorKind {
    /// The stable error code used by the HTTP API.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "bad_request",
            ErrorKind::Sql => "sql_error",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::Unavailable | ErrorKind::Fenced | ErrorKind::Corrupt => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::DatabaseCorrupt => "corrupt",
        }
    }

    /// Whether the same request may succeed if simply tried again later.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable
                | ErrorKind::Fenced
                | ErrorKind::Corrupt
                | ErrorKind::RateLimited
        )
    }
}
