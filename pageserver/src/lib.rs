//! # The Borealis pageserver: the log, turned back into pages
//!
//! In Borealis the log *is* the database (DESIGN.md §3): a tenant's writer ships only redo
//! records to six safekeepers and never writes a page anywhere. Somebody still has to answer
//! "what did page 17 look like at LSN 5000?" when a compute's cache misses. That is the
//! pageserver: it follows each segment's log from the safekeepers, applies the records to build
//! page versions, and answers **GetPage@LSN** over the wire protocol ([`borealis_wire`]).
//!
//! ## A read, end to end
//!
//! 1. A compute host sends `GetPage { tenant, page, lsn, epoch }` ([`page_service`]). The `lsn`
//!    is the compute's read point, at or below the VDL of its writer (of epoch `epoch`): by
//!    asking, the compute **vouches** that every record up to `lsn` is durable.
//! 2. [`get_page`] raises the tenant's vouched VDL ([`tenant`]) and waits, bounded by
//!    `--getpage-wait`, until the page's segment is applied up to `lsn`.
//! 3. Meanwhile the segment's follower ([`ingest`]) reads `ReadLog` answers from a safekeeper
//!    ([`safekeepers`]) at that epoch or newer, checks that every record chains to the previous
//!    one of its segment ([`segment_cursor`]), and applies them to the tenant's page store
//!    ([`pages`]). A segment with no record since may instead be proved complete by a read
//!    quorum of safekeepers holding nothing newer.
//! 4. The newest version of the page at or below `lsn` is read from the LRU cache ([`cache`]) or
//!    the local page file ([`page_file`]) and returned.
//!
//! ## Contracts
//!
//! - **Never above the durable point.** A record is applied only if its LSN is at or below a VDL
//!   somebody vouched for: a GetPage's LSN, or the `known_vdl` of the safekeeper it is read from.
//!   So a page served can never reflect a record that recovery might truncate (DESIGN.md §5: the
//!   pageserver takes the "apply only what is known durable" option, and needs no action on an
//!   epoch change). Log is read only from safekeepers at the newest epoch a GetPage named
//!   (`ReadLog.min_epoch`), so a member that missed a recovery cannot serve what it truncated.
//! - **In order, without gaps.** Each segment's records are applied in LSN order, and each must
//!   name the previous applied record of its segment (`prev_lsn_segment`) and, when the writer
//!   knew it, of its page (`prev_lsn_page`). A safekeeper whose log has a hole, or whose answer
//!   fails its CRC, is left for another.
//! - **Never a wrong page.** A GetPage answers the exact version for its LSN, or an error:
//!   `Unavailable` when the log could not be applied that far in time (retry), `Invalid`
//!   ("lsn too old") when that version is no longer retained.
//!
//! ## Current state and its limits
//!
//! Local state is a cache: page images are appended to `DATA_DIR/tenants/<tenant>/pages.dat`
//! without fsync, and the whole `tenants/` folder is **wiped at start**; everything is rebuilt
//! lazily from the safekeepers, which in this version keep the full log. Each page keeps at most
//! [`pages::VERSIONS_PER_PAGE_MAX`] versions reachable; the page file is never compacted. A
//! follower that sees no activity goes dormant (no polling) until a GetPage needs it.
//! Checkpoints of image and delta layers to object storage (and letting safekeepers drop log
//! below them) are a later step.

pub mod cache;
pub mod config;
pub mod get_page;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod page_file;
pub mod page_service;
pub mod pages;
pub mod safekeepers;
pub mod segment_cursor;
pub mod server;
pub mod tenant;

pub use config::{Args, Config};
pub use get_page::{get_page, GetPageError};
pub use server::{start, Running, StartError};
