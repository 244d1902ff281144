//! # The Borealis pageserver: the log, turned back into pages
//!
//! In Borealis the log *is* the database (docs/design.md §3): a tenant's writer ships only redo
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
//! 2. [`get_page`](mod@get_page) raises the tenant's vouched VDL ([`tenant`]) and waits, bounded by
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
//!   So a page served can never reflect a record that recovery might truncate (docs/design.md §5: the
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
//! ## Checkpoints, restarts and trimming
//!
//! Local state is a cache. What makes a pageserver replaceable is **object storage**
//! (`--object-store`, any S3-compatible server or a local folder): per segment, a checkpoint is
//! an immutable **image layer** of every page as of a checkpoint LSN ([`layer`],
//! `docs/formats/layer-file.md`) plus an **index** naming it ([`index`],
//! `docs/formats/segment-index.md`), uploaded in that order, so a durable index always names
//! complete layers ([`checkpoint`], [`remote`]).
//!
//! - **When.** Every `--checkpoint-records` records applied, at least every
//!   `--checkpoint-interval` while records are applied, and at a clean stop (SIGTERM / Ctrl-C,
//!   bounded by [`checkpoint::SHUTDOWN_CHECKPOINT_TIMEOUT`]). At most one checkpoint per segment
//!   is in flight; while the object store is down it retries with backoff, and ingest and GetPage
//!   go on (the log it would let the safekeepers drop stays there meanwhile).
//! - **Who may write.** Each attachment of a segment (one process following it) claims a new
//!   **generation**; every object key carries it, so two pageservers that both believe they own a
//!   segment never overwrite each other, and an attachment deletes only its own superseded layers,
//!   only while no newer generation exists ([`remote`] explains the rules, after Neon RFC 025).
//! - **Restarting.** A segment's first GetPage attaches it: the newest checkpoint (highest
//!   checkpoint LSN of any generation) is downloaded, checked byte by byte, and installed; the log
//!   is followed from there. A page installed from a layer answers every read point from the
//!   record that last changed it; an older read point is `Invalid` ("lsn too old"), never a
//!   wrong page.
//! - **Trimming.** Once an index is durable, and only while no newer generation exists (a newer
//!   attachment may have restored from an older checkpoint and still need the log above it),
//!   every safekeeper of the segment's group is told `Trim { upto: checkpoint LSN, epoch }`
//!   ([`safekeepers`]: a segment's group is six of the `--safekeepers` pool); each drops its records up to
//!   the highest record of its complete chain at or below that (`docs/formats/segment-log.md`).
//!   The checkpoint LSN is at or below a vouched VDL, so nothing trimmed can ever be truncated by
//!   a recovery. (Found by `two_pageservers_on_one_segment_never_delete_what_an_index_names`: a
//!   stale attachment trimmed past the checkpoint a new one had restored from, which then could
//!   never catch up.)
//!
//! ## Current state and its limits
//!
//! Page images are appended to `DATA_DIR/tenants/<tenant>/pages-<extent>.dat` without fsync, and the whole
//! `tenants/` folder is **wiped at start**: everything is rebuilt lazily from object storage and
//! the safekeepers' log tail. Each page keeps at most [`pages::VERSIONS_PER_PAGE_MAX`] versions
//! reachable, and none older than `--page-history` (60 s) behind its segment; [`compaction`]
//! reclaims the page file's dead extents. A follower that sees no activity goes dormant (no
//! polling) until a GetPage needs it. With a retention window (the default) a checkpoint uploads
//! the redo since the last one (a delta layer) and, once the deltas pile up, the pages changed
//! since the chain's newest layer (a changes layer); without one, a changes layer each time;
//! now and then an image of the whole segment ([`checkpoint`], RFC 0011); a
//! restart reads each layer's directory and fetches pages when they are first needed, then
//! downloads the rest in the background ([`restore`]); objects of older generations are deleted
//! by garbage collection once nothing can need them ([`gc`]).
//! A safekeeper whose log is behind its peers' trim point does not need what they trimmed (it is
//! in this crate's checkpoints): it adopts their trim point and fetches only the log above it.

pub mod cache;
pub mod checkpoint;
pub mod compaction;
pub mod config;
pub mod delta;
pub mod gc;
pub mod get_page;
pub mod history;
pub mod http;
pub mod index;
pub mod ingest;
pub mod layer;
pub mod layer_read;
pub mod metrics;
pub mod page_file;
pub mod page_service;
pub mod pages;
pub mod remote;
pub mod restore;
pub mod safekeepers;
/// The follower's sans-IO core (the cursor, [`segment_cursor::plan_batch`], the proof of
/// completeness), shared with the protocol simulator.
pub use borealis_quorum::follower as segment_cursor;
pub mod server;
pub mod tenant;
pub mod window_read;

pub use config::{Args, Config};
pub use get_page::{get_page, GetPageError};
pub use server::{start, Running, StartError};
