//! The safekeeper's errors: a rich enum here, the shared [`ErrorKind`] on the wire.

use borealis_core::redo::CodecError;
use borealis_core::{ErrorKind, TenantId};
use borealis_wire::Body;

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
    #[error("corrupt records: {0}")]
    Corrupt(#[from] CodecError),
    /// The local disk failed. Never sent for a write (the process stops instead).
    #[error("disk i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SkError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SkError::Fenced { .. } => ErrorKind::Fenced,
            SkError::HelloFirst { .. } | SkError::Invalid { .. } => ErrorKind::Invalid,
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
