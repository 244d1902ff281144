//! The safekeeper's errors: a rich enum here, the shared [`ErrorKind`] on the wire.

use crate::disk_budget::{self, Refusal, DISK_BUDGET_EXHAUSTED};
use borealis_core::redo::CodecError;
use borealis_core::{ErrorKind, Lsn, SegmentId, TenantId};
use borealis_wire::Body;

/// Part of every [`SkError::Trimmed`] message: how a peer recognizes that answer (on the wire it
/// is an `Invalid` error like others).
pub const TRIMMED_MARKER: &str = "the log is trimmed through lsn";

#[derive(Debug, thiserror::Error)]
pub enum SkError {
    #[error("tenant {tenant}: epoch {theirs} is older than the current epoch {ours}: fenced")]
    Fenced {
        tenant: TenantId,
        ours: u64,
        theirs: u64,
    },
    #[error(
        "tenant {tenant}: epoch {theirs} was never announced (current {ours}): send Hello first"
    )]
    HelloFirst {
        tenant: TenantId,
        ours: u64,
        theirs: u64,
    },
    #[error("tenant {tenant}: {message}")]
    Invalid { tenant: TenantId, message: String },
    /// A `ReadLog` asked for records this member dropped when the log was trimmed.
    #[error(
        "tenant {tenant} segment {segment}: {TRIMMED_MARKER} {base} (checkpointed to object \
         storage); records after lsn {after} are no longer here"
    )]
    Trimmed {
        tenant: TenantId,
        segment: SegmentId,
        base: Lsn,
        after: Lsn,
    },
    /// A writer's append would take the log this safekeeper retains past `--disk-budget-bytes`
    /// (see [`crate::disk_budget`]). The message starts with [`DISK_BUDGET_EXHAUSTED`].
    #[error("{}", disk_budget::refusal_message(node, refusal))]
    DiskBudgetExhausted { node: String, refusal: Refusal },
    #[error("corrupt records: {0}")]
    Corrupt(#[from] CodecError),
    /// The local disk failed. Never sent for a write (the process stops instead).
    #[error("disk i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SkError {
    /// Whether an `Error` answer's message is a [`SkError::Trimmed`].
    pub fn is_trimmed_message(message: &str) -> bool {
        message.contains(TRIMMED_MARKER)
    }

    /// Whether an `Error` answer's message is a [`SkError::DiskBudgetExhausted`].
    pub fn is_disk_budget_message(message: &str) -> bool {
        message.starts_with(DISK_BUDGET_EXHAUSTED)
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            SkError::Fenced { .. } => ErrorKind::Fenced,
            // Writes are refused until trims free space; reads go on.
            SkError::DiskBudgetExhausted { .. } => ErrorKind::ReadOnly,
            SkError::HelloFirst { .. } | SkError::Invalid { .. } | SkError::Trimmed { .. } => {
                ErrorKind::Invalid
            }
            SkError::Corrupt(_) => ErrorKind::Corrupt,
            SkError::Io(_) => ErrorKind::Unavailable,
            SkError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The wire answer for this error.
    pub fn to_body(&self) -> Body {
        Body::error(self.kind(), self.to_string())
    }
}
