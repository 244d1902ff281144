//! # borealis-core: the words every Borealis component shares
//!
//! Borealis follows Aurora's rule that *the log is the database*: the only thing a tenant's SQL
//! engine ever ships to storage is a stream of **redo records**, each naming one page of the
//! tenant's **volume** and describing how that page changed. This crate holds the vocabulary that
//! the compute host, the safekeepers and the pageservers must agree on byte for byte:
//!
//! - [`Lsn`]: the log sequence number, a strictly increasing `u64` assigned by the tenant's single
//!   writer. LSN 0 ([`Lsn::INVALID`]) means "no record".
//! - [`PageNo`], [`SegmentId`], [`TenantId`] and [`SegmentLayout`]: a volume is a space of
//!   4 KiB pages cut into segments; every segment's log is held by its own protection group.
//! - [`redo::RedoRecord`] and its binary codec: magic, version, length and CRC32C, so a torn,
//!   truncated, misdirected or bit-flipped record is an error, never a silently wrong page.
//! - [`history`]: epoch histories, which decide what log a safekeeper keeps when a new writer's
//!   epoch reaches it.
//! - [`quorum`]: the arithmetic of six members in three AZs, write quorum 4, read quorum 3.
//! - [`placement`]: which six safekeepers of a pool form a segment's protection group (two per
//!   AZ, by rendezvous hashing), and which pageserver serves it.
//! - [`membership`]: a segment's voting configuration, one group or the two of a one-member
//!   change, and the joint quorum rule that keeps every read meeting every write meanwhile.
//! - [`ErrorKind`]: the small, shared classification of failures that tells a caller what to do
//!   (retry, give up, report read-only, ...) and maps to the gateway's HTTP error codes.
//!
//! Nothing here does I/O.

pub mod error;
pub mod history;
pub mod ids;
pub mod lsn;
pub mod membership;
pub mod placement;
pub mod quorum;
pub mod redo;

pub use error::ErrorKind;
pub use history::EpochStart;
pub use ids::{
    PageNo, SegmentId, SegmentLayout, TenantId, PAGE_SIZE_BYTES, SEGMENTS_PER_VOLUME_MAX,
    SEGMENT_SIZE_BYTES_DEFAULT, SEGMENT_SIZE_BYTES_MIN,
};
pub use lsn::Lsn;
