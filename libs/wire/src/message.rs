//! The messages. Every request names its tenant; segment-level requests name the segment too.
//!
//! | request (→)                  | answer (←)          | who asks                        |
//! |------------------------------|---------------------|---------------------------------|
//! | `Hello`                      | `HelloOk` / `Error` | writer → safekeeper, per tenant |
//! | `Append` (pipelined)         | `Ack` (id 0), `Error` | writer → safekeeper           |
//! | `GetState`                   | `State`             | recovering writer → safekeeper  |
//! | `Fence`                      | `State`             | recovering writer → safekeeper  |
//! | `ReadLog`                    | `Records`           | pageserver, peer → safekeeper   |
//! | `GossipSummary`              | `Summary`           | peer → safekeeper               |
//! | `GetPage`                    | `Page`              | compute host → pageserver       |
//! | `GetPages` (one segment)     | `Pages`             | compute host → pageserver       |
//! | `Trim`                       | `Trimmed`           | pageserver → safekeeper         |
//! | `DropTenant`                 | `TenantDropped`     | operator → safekeeper, pageserver |
//! | `Auth` (first on a connection) | `Authenticated`   | everyone → safekeeper, pageserver |
//!
//! Any request may be answered with `Error { kind, message }`.

use borealis_core::{EpochStart, ErrorKind, Lsn, PageNo, SegmentId, TenantId};
use serde::{Deserialize, Serialize};

/// A message and the id that pairs an answer with its request (0: unsolicited).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub request_id: u64,
    pub body: Body,
}

/// One segment as a safekeeper holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentState {
    pub segment: SegmentId,
    /// Segment complete LSN: every record of the segment up to it is held (backlink chain).
    pub scl: Lsn,
    /// The highest consistency point (last record of an MTR) at or below `scl`.
    pub last_cpl: Lsn,
    /// The highest LSN held at all, complete or not.
    pub end_lsn: Lsn,
}

/// A gossip summary line: how far a safekeeper holds one segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSummary {
    pub tenant: TenantId,
    pub segment: SegmentId,
    pub epoch: u64,
    pub scl: Lsn,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// Opens a writer session for `tenant`. `history` is the writer's epoch history, ending with
    /// `(epoch, epoch_start_lsn)`. If `epoch` is newer than the safekeeper's, it truncates its log
    /// above `borealis_core::history::truncation_point(own history, history)` — at most
    /// `epoch_start_lsn`, less if it holds records of an epoch the writer's history does not
    /// descend from — and durably records the new epoch and history, before answering.
    /// An `epoch` older than the safekeeper's is refused with `ErrorKind::Fenced`.
    Hello {
        tenant: TenantId,
        epoch: u64,
        epoch_start_lsn: Lsn,
        history: Vec<EpochStart>,
    },
    /// Answer to `Hello`: the segments this safekeeper holds for the tenant, after truncation.
    /// `appends_refused` is set while the safekeeper refuses writers' appends (its disk budget
    /// is exhausted), with the reason: the writer must not count it toward a write quorum.
    HelloOk {
        epoch: u64,
        segments: Vec<SegmentState>,
        appends_refused: Option<String>,
    },
    /// Redo records of one segment, concatenated in their own encoding, in LSN order. `vdl` is the
    /// writer's current VDL: everything at or below it is durable, so pageservers may apply it.
    Append {
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        vdl: Lsn,
        #[serde(with = "serde_bytes")]
        records: Vec<u8>,
    },
    /// Unsolicited (request id 0), after an fsync or a gossip repair: the segment's SCL now, in
    /// `epoch`, the safekeeper's installed epoch or a higher one it promised to a `Fence`. A
    /// writer counts only an ack in its own epoch; a higher one means it is superseded.
    Ack {
        tenant: TenantId,
        segment: SegmentId,
        scl: Lsn,
        epoch: u64,
    },
    /// Recovery's question: the epoch and every segment's state.
    GetState {
        tenant: TenantId,
    },
    State {
        epoch: u64,
        epoch_start_lsn: Lsn,
        /// The history of `epoch` (empty before the first epoch).
        history: Vec<EpochStart>,
        known_vdl: Lsn,
        segments: Vec<SegmentState>,
        /// The highest epoch promised to a `Fence` (0: none). A recovery takes its epoch above
        /// both this and `epoch`.
        promised_epoch: u64,
    },
    /// Records of a segment with `after < lsn <= upto`, in LSN order, as far as the safekeeper
    /// holds them completely (never past its SCL), at most about `max_bytes`. If there are none
    /// yet, the safekeeper may hold the request up to `wait_ms` for some to arrive.
    ///
    /// Epoch checks (answer `Error{kind: Fenced}` when they fail):
    /// - `epoch: Some(e)`: answer only if the safekeeper's epoch for the tenant is exactly `e`
    ///   (gossip: a peer filling a hole must never copy records an older writer left behind, nor
    ///   mix a newer writer's records into a log not yet truncated for it).
    /// - `min_epoch: m` (0: no check): answer only if the safekeeper's epoch is at least `m`. A
    ///   pageserver passes the epoch of the writer that vouched for `upto`: a safekeeper still
    ///   at an older epoch may hold records above the new epoch's start that were truncated
    ///   everywhere else, and must not serve them.
    ReadLog {
        tenant: TenantId,
        segment: SegmentId,
        epoch: Option<u64>,
        min_epoch: u64,
        after: Lsn,
        upto: Lsn,
        max_bytes: u32,
        wait_ms: u32,
    },
    /// Answer to `ReadLog`. `known_vdl` is the newest VDL the writer told this safekeeper.
    Records {
        #[serde(with = "serde_bytes")]
        records: Vec<u8>,
        scl: Lsn,
        known_vdl: Lsn,
    },
    GossipSummary,
    Summary {
        segments: Vec<SegmentSummary>,
    },
    /// The page as of `lsn`. The asker vouches that `lsn` is durable (at or below the VDL of the
    /// writer of epoch `epoch`); the pageserver reads the log for it only from safekeepers whose
    /// epoch is at least `epoch` (`ReadLog.min_epoch`).
    GetPage {
        tenant: TenantId,
        page: PageNo,
        lsn: Lsn,
        epoch: u64,
    },
    /// Answer to `GetPage`; `image: None` means the page has never been written.
    Page {
        #[serde(with = "serde_bytes")]
        image: Option<Vec<u8>>,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    // New variants go below this line, never above: postcard encodes a variant by its index.
    /// The segment's log up to `upto` is checkpointed to object storage under a durable index:
    /// the safekeeper may drop its records at or below `upto`. It trims only through the highest
    /// record it holds on its chain at or below both `upto` and its own SCL, records that trim
    /// point durably before dropping anything, and refuses (`Fenced`) while its epoch for the
    /// tenant is older than `epoch` (the newest writer epoch the checkpoint's log was read under:
    /// a member that has not seen that epoch may hold records it truncated).
    Trim {
        tenant: TenantId,
        segment: SegmentId,
        epoch: u64,
        upto: Lsn,
    },
    /// Answer to `Trim`: the segment's log is now trimmed through `base` (every record at or
    /// below it is dropped; 0: nothing trimmed). `base` may be below `upto`.
    Trimmed {
        base: Lsn,
    },
    /// Answer to `ReadLog`, instead of `Records`, when records after its `after` are gone from
    /// this safekeeper: the segment's log is trimmed through `base` (covered by a checkpoint in
    /// object storage), and `last_cpl` is the last CPL at or below `base`. A member behind that
    /// point adopts it as its own trim point (safekeeper gossip).
    LogTrimmed {
        base: Lsn,
        last_cpl: Lsn,
    },
    /// The tenant was deleted: drop everything held for it, for good. A safekeeper records a
    /// durable tombstone first (so neither a late writer nor a peer's gossip can bring the
    /// tenant back), then deletes its log; a pageserver stops following the tenant, refuses
    /// its GetPages from then on, and deletes the tenant's objects in object storage.
    /// Idempotent: answered `TenantDropped` whether or not anything was there.
    DropTenant {
        tenant: TenantId,
    },
    /// Answer to `DropTenant`: nothing of the tenant is left here. `objects_deleted` counts the
    /// objects a pageserver deleted from object storage (0 from a safekeeper).
    TenantDropped {
        bytes_freed: u64,
        objects_deleted: u64,
    },
    /// The first frame of every connection to a safekeeper or pageserver: a storage token
    /// (`borealis-auth`, docs/security.md). Answered `Authenticated`, or `Error { kind:
    /// Unauthorized }` after which the server closes the connection. Every later request is
    /// checked against what the token's role and tenant allow.
    Auth {
        token: String,
    },
    /// Answer to `Auth`: the role the server will hold this connection to.
    Authenticated {
        role: String,
    },
    /// The headers of a segment's records with `after < lsn <= upto` on the safekeeper's complete
    /// chain (never past its durable SCL), at most `max_entries` of them: what a recovering
    /// writer of a volume of many segments needs to find the volume's end (RFC 0008). No record
    /// bodies are read. Refused `LogTrimmed` when `after` is below the trim point.
    ReadLsns {
        tenant: TenantId,
        segment: SegmentId,
        after: Lsn,
        upto: Lsn,
        max_entries: u32,
    },
    /// Answer to `ReadLsns`: `before` is the segment's last record at or below `after` (or the
    /// trim point; `INVALID`: none), which the first entry links to; `scl` is the durable SCL the
    /// answer was cut at. Fewer entries than asked and the last below `min(upto, scl)` means the
    /// answer was cut at `max_entries`: ask again after the last one.
    Lsns {
        before: Lsn,
        entries: Vec<LsnEntry>,
        scl: Lsn,
    },
    /// Several pages of one segment as of `lsn`, in one round trip (RFC 0016): 1 to
    /// [`PAGES_PER_BATCH_MAX`] page numbers, strictly ascending, all in one segment. `lsn` and
    /// `epoch` mean what they mean for `GetPage`. A request breaking that shape is answered
    /// `Error { kind: Invalid }` whole, as is what concerns the whole request (the tenant
    /// deleted, the segment not yet applied up to `lsn`); what concerns one page is its entry.
    GetPages {
        tenant: TenantId,
        lsn: Lsn,
        epoch: u64,
        pages: Vec<PageNo>,
    },
    /// Answer to `GetPages`: one entry per page asked, in the order asked.
    Pages {
        pages: Vec<PageAnswer>,
    },
    /// A recovering writer's first step after `GetState` (RFC 0014 §2): promise `epoch`, which
    /// must be above the safekeeper's installed and promised epochs (else `Fenced`), durably,
    /// then answer `State`, read under the same lock. From then on the safekeeper refuses
    /// `Hello` and `Append` of any lower epoch and acks in `epoch`, so a writer still running
    /// in an older one cannot make anything durable that this answer does not cover. A
    /// rebuilding safekeeper records the promise and answers `Unavailable`. (Added in frame
    /// version 4, last, so no other variant's index moves.)
    Fence {
        tenant: TenantId,
        epoch: u64,
    },
}

/// The most pages one `GetPages` may ask for. Its answer (at most 256 × (4,096 + a few) bytes,
/// about 1 MiB) stays far under the frame limit.
pub const PAGES_PER_BATCH_MAX: usize = 256;
const _: () = assert!(
    PAGES_PER_BATCH_MAX * (borealis_core::PAGE_SIZE_BYTES + 64) + 1024 < crate::FRAME_BYTES_MAX
);

/// One page of a `Pages` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PageAnswer {
    /// The page's newest version at or below the asked LSN.
    Image(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The page was never written at or below the asked LSN.
    NeverWritten,
    /// This page could not be read (its version is no longer retained, a corrupt record, an
    /// I/O or object-store failure): what `GetPage` of it alone would have answered.
    Failed { kind: ErrorKind, message: String },
}

/// One record's header in a `Lsns` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsnEntry {
    pub lsn: Lsn,
    pub prev_lsn_segment: Lsn,
    pub is_cpl: bool,
}

impl Body {
    /// A short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Hello { .. } => "hello",
            Body::HelloOk { .. } => "hello_ok",
            Body::Append { .. } => "append",
            Body::Ack { .. } => "ack",
            Body::GetState { .. } => "get_state",
            Body::Fence { .. } => "fence",
            Body::State { .. } => "state",
            Body::ReadLog { .. } => "read_log",
            Body::Records { .. } => "records",
            Body::GossipSummary => "gossip_summary",
            Body::Summary { .. } => "summary",
            Body::GetPage { .. } => "get_page",
            Body::Page { .. } => "page",
            Body::Error { .. } => "error",
            Body::Trim { .. } => "trim",
            Body::Trimmed { .. } => "trimmed",
            Body::LogTrimmed { .. } => "log_trimmed",
            Body::DropTenant { .. } => "drop_tenant",
            Body::TenantDropped { .. } => "tenant_dropped",
            Body::Auth { .. } => "auth",
            Body::Authenticated { .. } => "authenticated",
            Body::ReadLsns { .. } => "read_lsns",
            Body::Lsns { .. } => "lsns",
            Body::GetPages { .. } => "get_pages",
            Body::Pages { .. } => "pages",
        }
    }

    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Body {
        Body::Error {
            kind,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the variant indexes of the messages added after the first release: postcard encodes
    /// a variant by its index, so these must never move.
    #[test]
    fn later_variants_keep_their_indexes() {
        let trim = Body::Trim {
            tenant: TenantId(1),
            segment: SegmentId(2),
            epoch: 3,
            upto: Lsn(4),
        };
        assert_eq!(postcard::to_allocvec(&trim).unwrap(), [13, 1, 2, 3, 4]);
        let trimmed = Body::Trimmed { base: Lsn(300) };
        assert_eq!(postcard::to_allocvec(&trimmed).unwrap(), [14, 0xac, 0x02]);
        let log_trimmed = Body::LogTrimmed {
            base: Lsn(300),
            last_cpl: Lsn(2),
        };
        assert_eq!(
            postcard::to_allocvec(&log_trimmed).unwrap(),
            [15, 0xac, 0x02, 2]
        );
        let drop = Body::DropTenant {
            tenant: TenantId(5),
        };
        assert_eq!(postcard::to_allocvec(&drop).unwrap(), [16, 5]);
        let dropped = Body::TenantDropped {
            bytes_freed: 6,
            objects_deleted: 7,
        };
        assert_eq!(postcard::to_allocvec(&dropped).unwrap(), [17, 6, 7]);
        let auth = Body::Auth { token: "t".into() };
        assert_eq!(postcard::to_allocvec(&auth).unwrap(), [18, 1, b't']);
        let authenticated = Body::Authenticated { role: "r".into() };
        assert_eq!(
            postcard::to_allocvec(&authenticated).unwrap(),
            [19, 1, b'r']
        );
        let error = Body::error(ErrorKind::Invalid, "");
        assert_eq!(postcard::to_allocvec(&error).unwrap()[0], 12);
        let get_pages = Body::GetPages {
            tenant: TenantId(1),
            lsn: Lsn(2),
            epoch: 3,
            pages: vec![PageNo(4), PageNo(5)],
        };
        assert_eq!(
            postcard::to_allocvec(&get_pages).unwrap(),
            [22, 1, 2, 3, 2, 4, 5]
        );
        let pages = Body::Pages {
            pages: vec![
                PageAnswer::Image(vec![9, 8]),
                PageAnswer::NeverWritten,
                PageAnswer::Failed {
                    kind: ErrorKind::Invalid,
                    message: "m".into(),
                },
            ],
        };
        let encoded = postcard::to_allocvec(&pages).unwrap();
        assert_eq!(encoded[..7], [23, 3, 0, 2, 9, 8, 1]);
        assert_eq!(encoded[7], 2);
        assert_eq!(encoded[encoded.len() - 2..], [1, b'm']);
        assert_eq!(postcard::from_bytes::<Body>(&encoded).unwrap(), pages);
        let fence = Body::Fence {
            tenant: TenantId(1),
            epoch: 2,
        };
        assert_eq!(postcard::to_allocvec(&fence).unwrap(), [24, 1, 2]);
    }

    /// The byte fields are (de)serialized as one byte string (`serde_bytes`) rather than as a
    /// sequence of `u8`s, which serde walks one byte at a time (a profile of a scan put that
    /// at ~8 % of all CPU). Postcard encodes both the same way, a varint length and the raw
    /// bytes, so the wire format is unchanged: this pins it against a plain `Vec<u8>`.
    #[test]
    fn byte_fields_encode_as_a_plain_vec_of_u8_would() {
        let bytes: Vec<u8> = (0..=255).collect();
        let plain = postcard::to_allocvec(&bytes).unwrap();
        let page = Body::Page {
            image: Some(bytes.clone()),
        };
        let encoded = postcard::to_allocvec(&page).unwrap();
        assert_eq!(encoded[..2], [11, 1]);
        assert_eq!(encoded[2..], plain[..]);
        assert_eq!(postcard::from_bytes::<Body>(&encoded).unwrap(), page);
        let none = Body::Page { image: None };
        assert_eq!(postcard::to_allocvec(&none).unwrap(), [11, 0]);
        let records = Body::Records {
            records: bytes.clone(),
            scl: Lsn(1),
            known_vdl: Lsn(2),
        };
        let encoded = postcard::to_allocvec(&records).unwrap();
        assert_eq!(encoded[0], 7);
        assert_eq!(encoded[1..1 + plain.len()], plain[..]);
        assert_eq!(encoded[1 + plain.len()..], [1, 2]);
        let append = Body::Append {
            tenant: TenantId(1),
            segment: SegmentId(2),
            epoch: 3,
            vdl: Lsn(4),
            records: bytes,
        };
        let encoded = postcard::to_allocvec(&append).unwrap();
        assert_eq!(encoded[..5], [2, 1, 2, 3, 4]);
        assert_eq!(encoded[5..], plain[..]);
        assert_eq!(postcard::from_bytes::<Body>(&encoded).unwrap(), append);
    }
}
