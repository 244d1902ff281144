//! The pageserver's configuration: long command-line flags or `PAGESERVER_*` environment
//! variables, validated in one place ([`Config::from_args`]).

use borealis_core::SegmentLayout;
use clap::Parser;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Longest allowed `--getpage-wait`: a GetPage holds a request slot while it waits.
pub const GETPAGE_WAIT_MAX: Duration = Duration::from_secs(600);
/// Bounds of `--checkpoint-interval`: more often than this is pointless work for the object store
/// (and each checkpoint is a full image of the segment); less often lets the safekeepers' log grow
/// for too long.
pub const CHECKPOINT_INTERVAL_MIN: Duration = Duration::from_millis(10);
pub const CHECKPOINT_INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);
/// Bounds of `--gc-delay`. Its safety argument (`pageserver::gc`) wants it far above the time
/// an object store PUT can be in flight: the default is 10 minutes; seconds are for tests.
pub const GC_DELAY_MIN: Duration = Duration::from_secs(1);
pub const GC_DELAY_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Parser)]
#[command(
    name = "pageserver",
    about = "Borealis pageserver: turns the log into pages, serves GetPage@LSN"
)]
pub struct Args {
    /// This node's id (logs, status).
    #[arg(long, env = "PAGESERVER_ID", default_value = "ps-1")]
    pub id: String,
    /// Address of the wire-protocol listener (GetPage).
    #[arg(long, env = "PAGESERVER_LISTEN", default_value = "127.0.0.1:7101")]
    pub listen: String,
    /// Address of the HTTP listener (/status, /metrics, /healthz).
    #[arg(long, env = "PAGESERVER_HTTP", default_value = "127.0.0.1:7181")]
    pub http: String,
    /// Local data directory. Its `tenants/` folder is wiped at start (local state is a cache of
    /// object storage and the safekeepers).
    #[arg(long, env = "PAGESERVER_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The safekeepers holding the log, `host:port,host:port,...`: the pool, listed AZ by AZ as the
    /// gateway's `--safekeepers` lists it. If their number is a multiple of three, at least six,
    /// each segment is read from the six of its protection group only (`crate::safekeepers`);
    /// otherwise every one listed is a source of every segment.
    #[arg(
        long,
        env = "PAGESERVER_SAFEKEEPERS",
        value_delimiter = ',',
        required = true
    )]
    pub safekeepers: Vec<String>,
    /// Page images kept in the in-memory LRU cache (4 KiB each).
    #[arg(long, env = "PAGESERVER_CACHE_PAGES", default_value_t = 16384)]
    pub cache_pages: usize,
    /// How long a GetPage waits for the log to be applied up to its LSN before answering
    /// `Unavailable`.
    #[arg(long, env = "PAGESERVER_GETPAGE_WAIT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub getpage_wait: Duration,
    /// A segment's follower stops polling safekeepers after this long without activity (no
    /// GetPage had to wait, no new record seen), until a GetPage needs it.
    #[arg(long, env = "PAGESERVER_DORMANT_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub dormant_after: Duration,
    /// Pages per segment (default: 10 GiB segments). Must match the writer's layout.
    #[arg(
        long,
        env = "PAGESERVER_PAGES_PER_SEGMENT",
        conflicts_with = "segment_size"
    )]
    pub pages_per_segment: Option<u32>,
    /// The segment size in bytes (`4MiB`, `10GiB`: a whole number of MiB), as the gateway's
    /// `--segment-size`; the same layout as `--pages-per-segment`, given as `borealis up` gives it.
    #[arg(long, env = "BOREALIS_SEGMENT_SIZE",
          value_parser = borealis_core::SegmentLayout::parse_segment_size)]
    pub segment_size: Option<borealis_core::SegmentLayout>,
    /// Where checkpoints go: `file:///path` or `s3://bucket?endpoint=...` (default:
    /// `file://<parent of --data-dir>/objects`, the local cluster's embedded store).
    #[arg(long, env = "PAGESERVER_OBJECT_STORE")]
    pub object_store: Option<String>,
    /// Checkpoint a segment once this many records were applied since its last checkpoint.
    #[arg(long, env = "PAGESERVER_CHECKPOINT_RECORDS", default_value_t = 10_000)]
    pub checkpoint_records: u64,
    /// Checkpoint a segment at least this often while records are applied to it.
    #[arg(long, env = "PAGESERVER_CHECKPOINT_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// The newest attachment of a segment deletes older generations' superseded objects once
    /// its claim is this old (`pageserver::gc` says why the wait makes it safe), and then at most
    /// once per this long.
    #[arg(long, env = "PAGESERVER_GC_DELAY", default_value = "10m", value_parser = humantime::parse_duration)]
    pub gc_delay: Duration,
    /// After restoring a segment (which downloads only its layers' directories, then pages as
    /// GetPages need them), download the rest of its layers in the background, at most
    /// `HYDRATIONS_MAX` segments at a time, so that scans go at local speed again. `false`
    /// keeps only what was read (a checkpoint that must write a new image still fetches all).
    #[arg(long, env = "PAGESERVER_HYDRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub hydrate: bool,
    /// A budget for each tenant's local page file (`512MiB`, `20GiB`; default: none). Above
    /// it, compaction evicts the least recently used pages whose newest version a durable
    /// checkpoint holds; a read fetches such a page again from object storage. What cannot be
    /// evicted yet (pages changed since the last checkpoint, history within `--page-history`)
    /// and an image checkpoint's hydration can take the file above it for a while. Restored
    /// segments are then not hydrated in the background. At least four page file extents.
    #[arg(long, env = "PAGESERVER_DISK_CACHE_BYTES", value_parser = parse_bytes)]
    pub disk_cache_bytes: Option<u64>,
    /// The retention window (RFC 0010): every page of a segment can be read as of any LSN
    /// checkpointed within this long (`0s`: none). Each checkpoint then also uploads the redo
    /// since the one before (a delta layer), and indexes keep the layers the window needs.
    #[arg(long, env = "PAGESERVER_PITR_WINDOW", default_value = "1h", value_parser = humantime::parse_duration)]
    pub pitr_window: Duration,
    /// How often every tenant's page file is compacted (testing aid).
    #[arg(long, env = "PAGESERVER_COMPACTION_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration, hide = true)]
    pub compaction_interval: Duration,
    /// How far behind its segment's newest applied record a read point still finds every page
    /// version it needs; older history is dropped from the local page files
    /// (`pageserver::compaction`), and such a read gets "lsn too old".
    #[arg(long, env = "PAGESERVER_PAGE_HISTORY", default_value = "60s", value_parser = humantime::parse_duration)]
    pub page_history: Duration,
    /// Records per extent file of a tenant's page file (testing aid: small extents make
    /// compaction visible in small tests).
    #[arg(long, env = "PAGESERVER_EXTENT_RECORDS", default_value_t = crate::page_file::EXTENT_RECORDS, hide = true)]
    pub extent_records: u64,
    /// Testing aid: abort the process when this crash point is reached, as `kill -9` would
    /// (`borealis_utils::crash_point`; the names are the `crash_point::hit` calls of
    /// `checkpoint.rs` and `restore.rs`).
    #[arg(long, env = "PAGESERVER_CRASH_AT", hide = true)]
    pub crash_at: Option<String>,
    /// The cluster's public key (`keys/verifying.key`, made by `borealis up`): every connection
    /// must present a storage token it verifies (docs/security.md). Required: a pageserver
    /// does not run open.
    #[arg(long, env = "PAGESERVER_AUTH_VERIFYING_KEY")]
    pub auth_verifying_key: PathBuf,
    /// This pageserver's own storage token (`keys/<id>.token`, 0600), presented to the
    /// safekeepers it reads the log from.
    #[arg(long, env = "PAGESERVER_TOKEN_FILE")]
    pub token_file: PathBuf,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--safekeepers lists no safekeeper")]
    NoSafekeepers,
    #[error("--safekeepers has an empty entry")]
    EmptySafekeeper,
    #[error("--safekeepers lists {0} twice")]
    DuplicateSafekeeper(String),
    #[error("--cache-pages must be at least 1")]
    NoCache,
    #[error("--getpage-wait must be between 1 ms and {GETPAGE_WAIT_MAX:?}")]
    GetPageWait,
    #[error("--pages-per-segment must be at least 1")]
    PagesPerSegment,
    #[error("--{0} must not be empty")]
    EmptyAddress(&'static str),
    #[error("--checkpoint-records must be at least 1")]
    CheckpointRecords,
    #[error("--checkpoint-interval must be between {CHECKPOINT_INTERVAL_MIN:?} and {CHECKPOINT_INTERVAL_MAX:?}")]
    CheckpointInterval,
    #[error("--gc-delay must be between {GC_DELAY_MIN:?} and {GC_DELAY_MAX:?}")]
    GcDelay,
    #[error("--disk-cache-bytes must hold at least four page file extents ({0} bytes)")]
    DiskCacheBytes(u64),
    #[error("--pitr-window must be at most {PITR_WINDOW_MAX:?}")]
    PitrWindow,
    #[error("--compaction-interval must be between 10ms and 1h")]
    CompactionInterval,
    #[error("--data-dir {0}: {1}")]
    DataDir(String, String),
    /// The URL is redacted: the point is not to show the secret.
    #[error(
        "--object-store {0} carries credentials, which every user of this machine can read on a \
         command line: give them as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the \
         environment instead"
    )]
    CredentialsInUrl(String),
}

/// `--disk-cache-bytes` must hold this many page file extents: one being filled, and room for
/// the live records at half of the rest (`crate::pages::TenantPages::compact`).
pub const DISK_CACHE_EXTENTS_MIN: u64 = 4;

/// The longest retention window: 30 days.
pub const PITR_WINDOW_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// A byte count: a number with an optional unit (`B`, `KiB`, `MiB`, `GiB`, `TiB`).
fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a number of bytes such as 512MiB or 20GiB"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use KiB, MiB, GiB or TiB)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: String,
    pub listen: String,
    pub http: String,
    pub data_dir: PathBuf,
    pub safekeepers: Vec<String>,
    pub cache_pages: NonZeroUsize,
    pub getpage_wait: Duration,
    pub dormant_after: Duration,
    pub layout: SegmentLayout,
    /// Versions retained per page ([`crate::pages::VERSIONS_PER_PAGE_MAX`]).
    pub retain_versions: usize,
    /// The object store URL (may hold credentials: log it through `remote::redact_url`).
    pub object_store: String,
    pub checkpoint_records: u64,
    pub checkpoint_interval: Duration,
    pub gc_delay: Duration,
    pub hydrate: bool,
    pub page_history: Duration,
    pub extent_records: u64,
    /// `--disk-cache-bytes`: the page file's budget per tenant, if any.
    pub disk_cache_bytes: Option<u64>,
    pub compaction_interval: Duration,
    pub pitr_window: Duration,
    /// `--auth-verifying-key` and `--token-file`, loaded by `server::start`.
    pub auth_verifying_key: PathBuf,
    pub token_file: PathBuf,
}

impl Config {
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        if let Some(point) = &args.crash_at {
            borealis_utils::crash_point::arm(point);
        }
        let safekeepers: Vec<String> = args
            .safekeepers
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        if safekeepers.is_empty() {
            return Err(ConfigError::NoSafekeepers);
        }
        for (i, s) in safekeepers.iter().enumerate() {
            if s.is_empty() {
                return Err(ConfigError::EmptySafekeeper);
            }
            if safekeepers[..i].contains(s) {
                return Err(ConfigError::DuplicateSafekeeper(s.clone()));
            }
        }
        let cache_pages = NonZeroUsize::new(args.cache_pages).ok_or(ConfigError::NoCache)?;
        if args.getpage_wait < Duration::from_millis(1) || args.getpage_wait > GETPAGE_WAIT_MAX {
            return Err(ConfigError::GetPageWait);
        }
        let layout = match (args.pages_per_segment, args.segment_size) {
            (Some(0), _) => return Err(ConfigError::PagesPerSegment),
            (Some(n), _) => SegmentLayout::new(n),
            (None, Some(layout)) => layout,
            (None, None) => SegmentLayout::default(),
        };
        if args.listen.trim().is_empty() {
            return Err(ConfigError::EmptyAddress("listen"));
        }
        if args.http.trim().is_empty() {
            return Err(ConfigError::EmptyAddress("http"));
        }
        if args.checkpoint_records == 0 {
            return Err(ConfigError::CheckpointRecords);
        }
        if args.checkpoint_interval < CHECKPOINT_INTERVAL_MIN
            || args.checkpoint_interval > CHECKPOINT_INTERVAL_MAX
        {
            return Err(ConfigError::CheckpointInterval);
        }
        if args.gc_delay < GC_DELAY_MIN || args.gc_delay > GC_DELAY_MAX {
            return Err(ConfigError::GcDelay);
        }
        let extent_records = args.extent_records.max(1);
        let extent_bytes = extent_records * crate::page_file::IMAGE_RECORD_BYTES as u64;
        if args
            .disk_cache_bytes
            .is_some_and(|b| b < DISK_CACHE_EXTENTS_MIN * extent_bytes)
        {
            return Err(ConfigError::DiskCacheBytes(
                DISK_CACHE_EXTENTS_MIN * extent_bytes,
            ));
        }
        if args.pitr_window > PITR_WINDOW_MAX {
            return Err(ConfigError::PitrWindow);
        }
        if args.compaction_interval < Duration::from_millis(10)
            || args.compaction_interval > Duration::from_secs(3600)
        {
            return Err(ConfigError::CompactionInterval);
        }
        let object_store = match args.object_store {
            Some(url) if borealis_objstore::has_credentials(&url) => {
                return Err(ConfigError::CredentialsInUrl(
                    borealis_objstore::redact_url(&url),
                ))
            }
            Some(url) => url,
            None => {
                let dir = std::path::absolute(&args.data_dir).map_err(|e| {
                    ConfigError::DataDir(args.data_dir.display().to_string(), e.to_string())
                })?;
                let parent = dir.parent().unwrap_or(&dir);
                format!("file://{}", parent.join("objects").display())
            }
        };
        Ok(Config {
            id: args.id,
            listen: args.listen,
            http: args.http,
            data_dir: args.data_dir,
            safekeepers,
            cache_pages,
            getpage_wait: args.getpage_wait,
            dormant_after: args.dormant_after,
            layout,
            retain_versions: crate::pages::VERSIONS_PER_PAGE_MAX,
            object_store,
            checkpoint_records: args.checkpoint_records,
            checkpoint_interval: args.checkpoint_interval,
            gc_delay: args.gc_delay,
            hydrate: args.hydrate,
            page_history: args.page_history,
            extent_records,
            disk_cache_bytes: args.disk_cache_bytes,
            compaction_interval: args.compaction_interval,
            pitr_window: args.pitr_window,
            auth_verifying_key: args.auth_verifying_key,
            token_file: args.token_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec![
            "pageserver",
            "--data-dir",
            "/tmp/x",
            "--auth-verifying-key",
            "/k",
            "--token-file",
            "/t",
        ];
        argv.extend_from_slice(extra);
        Config::from_args(Args::try_parse_from(argv).unwrap())
    }

    #[test]
    fn defaults_and_flags() {
        let c = parse(&["--safekeepers", "a:1,b:2"]).unwrap();
        assert_eq!(c.safekeepers, ["a:1", "b:2"]);
        assert_eq!(c.cache_pages.get(), 16384);
        assert_eq!(c.getpage_wait, Duration::from_secs(5));
        assert_eq!(c.layout, SegmentLayout::default());
        assert_eq!(
            (c.id.as_str(), c.listen.as_str()),
            ("ps-1", "127.0.0.1:7101")
        );
        let c = parse(&[
            "--safekeepers",
            "a:1",
            "--getpage-wait",
            "200ms",
            "--pages-per-segment",
            "4",
        ])
        .unwrap();
        assert_eq!(c.getpage_wait, Duration::from_millis(200));
        assert_eq!(c.layout, SegmentLayout::new(4));
    }

    #[test]
    fn checkpoint_flags() {
        let c = parse(&["--safekeepers", "a:1"]).unwrap();
        assert_eq!(c.object_store, "file:///tmp/objects");
        assert_eq!(c.checkpoint_records, 10_000);
        assert_eq!(c.checkpoint_interval, Duration::from_secs(60));
        let c = parse(&[
            "--safekeepers",
            "a:1",
            "--object-store",
            "s3://b?endpoint=http://127.0.0.1:9000",
            "--checkpoint-records",
            "5",
            "--checkpoint-interval",
            "250ms",
        ])
        .unwrap();
        assert_eq!(c.object_store, "s3://b?endpoint=http://127.0.0.1:9000");
        assert_eq!(c.checkpoint_records, 5);
        assert_eq!(c.checkpoint_interval, Duration::from_millis(250));
        assert_eq!(
            parse(&["--safekeepers", "a:1", "--checkpoint-records", "0"]).unwrap_err(),
            ConfigError::CheckpointRecords
        );
        assert_eq!(
            parse(&["--safekeepers", "a:1", "--checkpoint-interval", "1ms"]).unwrap_err(),
            ConfigError::CheckpointInterval
        );
        let err = parse(&[
            "--safekeepers",
            "a:1",
            "--object-store",
            "s3://b?endpoint=http://127.0.0.1:9000&access_key_id=k&secret_access_key=TOPSECRET",
        ])
        .unwrap_err();
        assert_eq!(err, ConfigError::CredentialsInUrl("s3://b?…".into()));
        assert!(!err.to_string().contains("TOPSECRET"), "{err}");
    }

    #[test]
    fn invalid_values_are_refused() {
        assert_eq!(
            parse(&["--safekeepers", "a:1,,b:2"]).unwrap_err(),
            ConfigError::EmptySafekeeper
        );
        assert!(matches!(
            parse(&["--safekeepers", "a:1,a:1"]),
            Err(ConfigError::DuplicateSafekeeper(_))
        ));
        assert_eq!(
            parse(&["--safekeepers", "a:1", "--cache-pages", "0"]).unwrap_err(),
            ConfigError::NoCache
        );
        assert_eq!(
            parse(&["--safekeepers", "a:1", "--getpage-wait", "0s"]).unwrap_err(),
            ConfigError::GetPageWait
        );
        assert_eq!(
            parse(&["--safekeepers", "a:1", "--pages-per-segment", "0"]).unwrap_err(),
            ConfigError::PagesPerSegment
        );
        assert!(
            Args::try_parse_from(["pageserver", "--data-dir", "/x"]).is_err(),
            "safekeepers are required"
        );
        assert_eq!(
            parse(&["--safekeepers", "a:1", "--disk-cache-bytes", "100MiB"]).unwrap_err(),
            ConfigError::DiskCacheBytes(4 * crate::page_file::EXTENT_RECORDS * 4120)
        );
        for bad in ["", "12XB", "99999999999TiB", "-1"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        let c = parse(&["--safekeepers", "a:1", "--disk-cache-bytes", "2GiB"]).unwrap();
        assert_eq!(c.disk_cache_bytes, Some(2 << 30));
        assert_eq!(parse_bytes("64 KiB"), Ok(64 << 10));
        assert_eq!(
            parse(&["--safekeepers", "a:1"]).unwrap().disk_cache_bytes,
            None
        );
    }
}
