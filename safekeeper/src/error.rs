//! The safekeeper's errors: a rich enum here, the shared [`ErrorKind`] on the wire.

use crate::acceptor::TrimPoint;
use crate::disk_budget::{BudgetExhausted, DISK_BUDGET_EXHAUSTED};
use borealis_core::redo::CodecError;
use borealis_core::{ErrorKind, Lsn, SegmentId, TenantId};
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
    /// A `ReadLog` asked for records this member dropped when the log was trimmed. On the wire
    /// it is the structured `LogTrimmed { base, last_cpl }` answer, so that a lagging peer can
    /// adopt the trim point ([`crate::gossip`]).
    #[error(
        "tenant {tenant} segment {segment}: the log is trimmed through lsn {base} with last cpl \
         {last_cpl} (checkpointed to object storage); records after lsn {after} are no longer here"
    )]
    Trimmed {
        tenant: TenantId,
        segment: SegmentId,
        base: Lsn,
        last_cpl: Lsn,
        after: Lsn,
    },
    /// A writer's append would take the log this safekeeper retains past `--disk-budget-bytes`
    /// (see [`crate::disk_budget`]). The message starts with [`DISK_BUDGET_EXHAUSTED`].
    #[error(transparent)]
    DiskBudgetExhausted(#[from] BudgetExhausted),
    /// The tenant was deleted ([`crate::store::Store::drop_tenant`]): nothing of it is here and
    /// nothing of it will be accepted again.
    #[error("tenant {tenant} was deleted: its log is gone from this safekeeper")]
    Dropped { tenant: TenantId },
    #[error("corrupt records: {0}")]
    Corrupt(#[from] CodecError),
    /// The local disk failed. Never sent for a write (the process stops instead).
    #[error("disk i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
    /// `GetState` on a node rebuilding after its disk was replaced ([`crate::rebuild`]).
    #[error(
        "this safekeeper's disk was replaced and it is rebuilding from its peers: until it holds \
         what they hold, what it lacks proves nothing, so it does not answer GetState"
    )]
    Rebuilding,
}

impl SkError {
    /// Whether an `Error` answer's message is a [`SkError::DiskBudgetExhausted`].
    pub fn is_disk_budget_message(message: &str) -> bool {
        message.starts_with(DISK_BUDGET_EXHAUSTED)
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            SkError::Fenced { .. } => ErrorKind::Fenced,
            // Writes are refused until trims free space; reads go on.
            SkError::DiskBudgetExhausted { .. } => ErrorKind::ReadOnly,
            SkError::HelloFirst { .. }
            | SkError::Invalid { .. }
            | SkError::Trimmed { .. }
            | SkError::Dropped { .. } => ErrorKind::Invalid,
            SkError::Corrupt(_) => ErrorKind::Corrupt,
            SkError::Io(_) | SkError::Rebuilding => ErrorKind::Unavailable,
            SkError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The wire answer for this error.
    pub fn to_body(&self) -> Body {
        match self {
            SkError::Trimmed { base, last_cpl, .. } => Body::LogTrimmed {
                base: *base,
                last_cpl: *last_cpl,
            },
            other => Body::error(other.kind(), other.to_string()),
        }
    }

    /// The trim point a `LogTrimmed` answer names, if a control file would hold it (`0 < base`,
    /// `last_cpl <= base`): what a lagging peer may adopt ([`crate::gossip`]).
    pub fn trim_point_of(base: Lsn, last_cpl: Lsn) -> Option<TrimPoint> {
        TrimPoint::from_refusal(base, last_cpl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmed_refusal_is_a_structured_answer() {
        let err = SkError::Trimmed {
            tenant: TenantId(1),
            segment: SegmentId(0),
            base: Lsn(9),
            last_cpl: Lsn(7),
            after: Lsn(0),
        };
        assert_eq!(
            err.to_body(),
            Body::LogTrimmed {
                base: Lsn(9),
                last_cpl: Lsn(7)
            }
        );
        assert!(err.to_string().contains("trimmed through lsn 9"), "{err}");
    }

    #[test]
    fn only_a_trim_point_a_control_file_would_hold_is_adoptable() {
        assert_eq!(
            SkError::trim_point_of(Lsn(60), Lsn(57)),
            Some(TrimPoint {
                base: Lsn(60),
                last_cpl: Lsn(57)
            })
        );
        assert_eq!(SkError::trim_point_of(Lsn(0), Lsn(0)), None);
        assert_eq!(SkError::trim_point_of(Lsn(5), Lsn(6)), None);
    }
}
