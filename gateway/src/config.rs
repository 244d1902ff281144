//! The gateway's configuration: long flags or environment variables, validated in one place.

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// The shortest statement timeout the gateway accepts, in milliseconds: the floor of
/// `--statement-timeout` and of a tenant's own `"timeout_ms"` maximum ([`crate::tenants`]).
pub const STATEMENT_TIMEOUT_MS_MIN: u32 = 10;
/// `--idempotency-retention` bounds: a minute (a retry loop's span) to a week.
pub const IDEMPOTENCY_RETENTION_MIN: Duration = Duration::from_secs(60);
pub const IDEMPOTENCY_RETENTION_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Parser, Debug, Clone)]
#[command(name = "gateway", about = "Borealis HTTP query gateway")]
pub struct Config {
    /// Address to serve HTTP on.
    #[arg(
        long,
        env = "BOREALIS_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,
    /// Directory for the tenant registry.
    #[arg(long, env = "BOREALIS_GATEWAY_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The pool of safekeepers' wire addresses, comma-separated, AZ by AZ: a multiple of three, at
    /// least six, the first third in AZ a, then b, then c (six: a, a, b, b, c, c). Each segment's
    /// protection group is six of them, two per AZ, chosen by rendezvous hashing.
    #[arg(
        long,
        env = "BOREALIS_SAFEKEEPERS",
        value_delimiter = ',',
        required = true
    )]
    pub safekeepers: Vec<String>,
    /// How a volume's pages are cut into segments (each its own protection group and its own
    /// checkpoints): `10GiB` by default, any whole number of MiB from `1MiB`. Every gateway and
    /// pageserver of a cluster must use the same size (`borealis up --segment-size` sees to it).
    #[arg(long, env = "BOREALIS_SEGMENT_SIZE", default_value = "10GiB",
          value_parser = borealis_core::SegmentLayout::parse_segment_size)]
    pub segment_size: borealis_core::SegmentLayout,
    /// Pageservers' wire addresses, comma-separated; tenants are spread over them.
    #[arg(
        long,
        env = "BOREALIS_PAGESERVERS",
        value_delimiter = ',',
        required = true
    )]
    pub pageservers: Vec<String>,
    /// The cluster's storage signing key (`keys/signing.key`, 0600, made by `borealis up`): the
    /// gateway mints a tenant-scoped storage token for every connection it opens to a
    /// safekeeper or pageserver (docs/security.md). Required.
    #[arg(long, env = "BOREALIS_AUTH_SIGNING_KEY")]
    pub auth_signing_key: PathBuf,
    /// File holding the admin token (first line). Preferred over --admin-token.
    #[arg(long, env = "BOREALIS_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The admin token itself (visible in the process list: prefer --admin-token-file).
    #[arg(long, env = "BOREALIS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A tenant's compute stops after this long without requests.
    #[arg(long, env = "BOREALIS_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// A statement running longer is stopped with a `timeout` error.
    #[arg(long, env = "BOREALIS_STATEMENT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub statement_timeout: Duration,
    /// The most a request may ask for with `"timeout_ms"` (a longer ask is refused
    /// `bad_request`, never silently shortened).
    #[arg(long, env = "BOREALIS_STATEMENT_TIMEOUT_MAX", default_value = "300s", value_parser = humantime::parse_duration)]
    pub statement_timeout_max: Duration,
    /// How long an `Idempotency-Key` is honoured after its request was recorded (a repeat
    /// later runs again); keys take room in the tenant's own database for that long.
    #[arg(long, env = "BOREALIS_IDEMPOTENCY_RETENTION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub idempotency_retention: Duration,
    /// A response waits at most this long for its commit to become durable.
    #[arg(long, env = "BOREALIS_COMMIT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub commit_timeout: Duration,
    /// SQLite's page cache per compute, in pages.
    #[arg(long, default_value_t = 2000)]
    pub cache_pages: u32,
    /// The host's clean-page cache per compute, in pages.
    #[arg(long, env = "BOREALIS_HOST_CACHE_PAGES", default_value_t = 4096)]
    pub host_cache_pages: usize,
    /// The longest run of pages a compute fetches at once when it reads sequentially
    /// (one GetPages round trip), writer or reader; 1 turns read-ahead off.
    #[arg(long, env = "BOREALIS_READ_AHEAD_PAGES", default_value_t = crate::page_client::PAGES_PER_CALL_MAX,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=crate::page_client::PAGES_PER_CALL_MAX as u64))]
    pub read_ahead_pages: usize,
    /// Compute instances alive at once (writers and readers). When all are taken, idle ones
    /// are given back for a new one (their tenants keep their writers).
    #[arg(long, env = "BOREALIS_MAX_COMPUTES", default_value_t = 256)]
    pub max_computes: u32,
    /// `.../sql` requests one tenant may have in flight; more are refused `rate_limited` (429).
    #[arg(long, env = "BOREALIS_TENANT_INFLIGHT_REQUESTS", default_value_t = crate::budget::TENANT_INFLIGHT_REQUESTS_DEFAULT)]
    pub tenant_inflight_requests: u32,
    /// `.../sql` requests in flight, all tenants together; more are refused `rate_limited`.
    #[arg(long, env = "BOREALIS_INFLIGHT_REQUESTS", default_value_t = crate::budget::INFLIGHT_REQUESTS_DEFAULT)]
    pub inflight_requests: u32,
    /// Bytes one tenant's requests in flight may hold (bodies, parameters, rows, encoded
    /// answers, at real memory cost); a request that needs more now is refused `rate_limited`.
    #[arg(long, env = "BOREALIS_TENANT_INFLIGHT_BYTES", default_value_t = crate::budget::TENANT_INFLIGHT_BYTES_DEFAULT)]
    pub tenant_inflight_bytes: u64,
    /// Bytes all requests in flight may hold, at real memory cost.
    #[arg(long, env = "BOREALIS_INFLIGHT_BYTES", default_value_t = crate::budget::INFLIGHT_BYTES_DEFAULT)]
    pub inflight_bytes: u64,
}

impl Config {
    /// The request budgets ([`crate::budget`]).
    pub fn budgets(&self) -> crate::budget::BudgetConfig {
        crate::budget::BudgetConfig {
            tenant_requests: self.tenant_inflight_requests,
            requests: self.inflight_requests,
            tenant_bytes: self.tenant_inflight_bytes,
            bytes: self.inflight_bytes,
        }
    }

    pub fn validate(&self) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.max_computes >= 2,
            "--max-computes must be at least 2 (a tenant's writer and reader)"
        );
        anyhow::ensure!(
            (1..=self.inflight_requests).contains(&self.tenant_inflight_requests),
            "--tenant-inflight-requests must be at least 1 and at most --inflight-requests ({})",
            self.inflight_requests
        );
        anyhow::ensure!(
            (crate::budget::TENANT_INFLIGHT_BYTES_MIN..=self.inflight_bytes)
                .contains(&self.tenant_inflight_bytes),
            "--tenant-inflight-bytes must be at least {} (a maximal body and its parse) and at \
             most --inflight-bytes ({})",
            crate::budget::TENANT_INFLIGHT_BYTES_MIN,
            self.inflight_bytes
        );
        borealis_core::placement::ordered_pool_azs(self.safekeepers.len()).map_err(|e| {
            anyhow::anyhow!(
                "--safekeepers lists {} addresses: {e}",
                self.safekeepers.len()
            )
        })?;
        anyhow::ensure!(
            !self.pageservers.is_empty(),
            "--pageservers needs at least one address"
        );
        anyhow::ensure!(
            self.statement_timeout >= Duration::from_millis(u64::from(STATEMENT_TIMEOUT_MS_MIN)),
            "--statement-timeout too small"
        );
        anyhow::ensure!(
            self.statement_timeout_max >= self.statement_timeout
                && self.statement_timeout_max <= Duration::from_millis(u64::from(u32::MAX)),
            "--statement-timeout-max must be at least --statement-timeout and at most 49 days"
        );
        anyhow::ensure!(
            (IDEMPOTENCY_RETENTION_MIN..=IDEMPOTENCY_RETENTION_MAX)
                .contains(&self.idempotency_retention),
            "--idempotency-retention must be between {} and {}",
            humantime::format_duration(IDEMPOTENCY_RETENTION_MIN),
            humantime::format_duration(IDEMPOTENCY_RETENTION_MAX)
        );
        anyhow::ensure!(
            self.idle_timeout >= Duration::from_millis(100),
            "--idle-timeout too small"
        );
        let token = match (&self.admin_token_file, &self.admin_token) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading admin token file {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => anyhow::bail!(
                "an admin token is needed: --admin-token-file or BOREALIS_ADMIN_TOKEN"
            ),
        };
        anyhow::ensure!(
            token.len() >= 16,
            "the admin token must be at least 16 characters"
        );
        Ok(token)
    }
}
