//! The safekeeper's errors: a rich enum here, the shared [`ErrorKind`] on the wire.

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

    pub fn kind(&self) -> ErrorKind {
        match self {
            SkError::Fenced { .. } => ErrorKind::Fenced,
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
