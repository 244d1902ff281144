//! Errors of the compute host: the backend's, and the compute's own.

use std::time::Duration;

use borealis_core::ErrorKind;
use thiserror::Error;

/// A [`Backend`](crate::Backend) call failed. `kind` tells the caller what it means:
/// [`ErrorKind::ReadOnly`] from `commit` = refused, nothing left; anything else from `commit` =
/// outcome unknown.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{message} ({})", kind.code())]
pub struct BackendError {
    pub kind: ErrorKind,
    pub message: String,
}

impl BackendError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Why a [`Compute`](crate::Compute) could not answer. SQL errors are not here: they are answers
/// (`ExecResponse::Err`). Every variant except [`ComputeError::RequestTooLarge`],
/// [`ComputeError::Startup`] and [`ComputeError::Unopenable`] poisons the instance (see the crate
/// docs).
#[derive(Debug, Error)]
pub enum ComputeError {
    /// The guest trapped (a bug, a stack overflow, running out of its memory cap). The instance
    /// is discarded.
    #[error("the compute trapped: {0}")]
    Trap(String),
    /// The statement needed more memory than the compute's cap (a transaction's changed pages
    /// are held in the compute until it commits; so are results). The instance is discarded;
    /// the same statement will fail again.
    #[error(
        "the statement needs more than the compute's {} MiB of memory: split the transaction \
         into smaller ones, or select less at once",
        limit_bytes >> 20
    )]
    OutOfMemory { limit_bytes: usize },
    /// The statement ran past its deadline and was interrupted. The instance is discarded.
    #[error("the statement exceeded its time limit of {limit:?} and was stopped")]
    Timeout { limit: Duration },
    /// A host import failed during the call (a page could not be read, a commit was refused or
    /// failed): the backend's own error, so the caller can answer read-only or unavailable
    /// precisely.
    #[error("storage failed underneath the compute: {0}")]
    Backend(BackendError),
    /// The guest broke the ABI (an undecodable response, a malformed mini-transaction, a
    /// storage failure the host did not see). A bug; the instance is discarded.
    #[error("the compute misbehaved: {0}")]
    Invalid(String),
    /// The instance could not be created (every instance slot is taken, most likely), or opening
    /// its volume ran past the startup deadline: a passing condition, worth another try.
    /// (A guest that misbehaves while opening is [`ComputeError::Invalid`] or
    /// [`ComputeError::Trap`]; a backend failure, [`ComputeError::Backend`].)
    #[error("the compute failed to start: {0}")]
    Startup(String),
    /// The instance started, but the tenant's database cannot be opened: SQLite reads its pages
    /// as corrupt, not a database, or with a malformed schema. Every instance on the same
    /// volume fails the same way; trying again does not help.
    #[error("the database cannot be opened: {0}")]
    Unopenable(String),
    /// An earlier failure poisoned this instance; start a new one.
    #[error("this compute instance is unusable after an earlier failure ({0}); start a new one")]
    Poisoned(String),
    /// The encoded request is larger than the guest could hold.
    #[error("the request is {bytes} bytes, more than the {max} a compute accepts")]
    RequestTooLarge { bytes: usize, max: usize },
}

impl ComputeError {
    /// What the caller should do about it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ComputeError::Trap(_) | ComputeError::Invalid(_) => ErrorKind::Internal,
            ComputeError::Timeout { .. } => ErrorKind::Timeout,
            ComputeError::Backend(e) => e.kind,
            ComputeError::Startup(_) | ComputeError::Poisoned(_) => ErrorKind::Unavailable,
            ComputeError::Unopenable(_) => ErrorKind::DatabaseCorrupt,
            ComputeError::RequestTooLarge { .. } | ComputeError::OutOfMemory { .. } => {
                ErrorKind::Invalid
            }
        }
    }

    /// Whether this error leaves the instance unusable.
    pub fn poisons(&self) -> bool {
        !matches!(
            self,
            ComputeError::RequestTooLarge { .. }
                | ComputeError::Startup(_)
                | ComputeError::Unopenable(_)
        )
    }
}
