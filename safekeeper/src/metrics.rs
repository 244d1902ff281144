//! The safekeeper's counters and histograms, rendered as Prometheus text on `GET /metrics`.
//!
//! Hand-rolled on atomics: a handful of series does not justify a metrics framework, and every
//! update is one relaxed atomic add on the hot path.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A fixed-bucket histogram of `u64` observations in some base unit (microseconds, records).
/// Rendering divides by `scale`, so latency observed in microseconds is exported in seconds.
pub struct Histogram {
    bounds: &'static [u64],
    /// One counter per bound, plus the overflow bucket (`+Inf`). Not cumulative: rendering sums.
    counts: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
    scale: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64], scale: f64) -> Histogram {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must increase"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    pub fn observe(&self, value: u64) {
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let le = *bound as f64 / self.scale;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Append-to-ack latency buckets, in microseconds (exported in seconds): one fsync on a fast
/// SSD is ~0.1–2 ms, on a cloud disk 1–10 ms; anything past a second is a stall.
const LATENCY_BUCKETS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];
/// Records made durable by one group commit (one round of fsyncs).
const BATCH_BUCKETS_RECORDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/// Every metric of one safekeeper process.
pub struct Metrics {
    /// Append requests accepted from writers (each may carry many records).
    pub appends_total: AtomicU64,
    /// Records written for the first time by writer appends (duplicates excluded).
    pub records_appended_total: AtomicU64,
    /// Append requests refused (fenced, no Hello, corrupt payload, disk budget).
    pub appends_refused_total: AtomicU64,
    pub fsyncs_total: AtomicU64,
    /// Records made durable per group commit.
    pub commit_batch_records: Histogram,
    /// From an append being queued to its acknowledgement being published (after fsync).
    pub append_ack_latency: Histogram,
    /// Records fetched from a peer that this safekeeper lacked (hole filling, catch-up, repair).
    pub gossip_records_repaired_total: AtomicU64,
    pub gossip_rounds_total: AtomicU64,
    /// Records whose CRC (or read) failed on this safekeeper's disk, at open or on a later read.
    pub crc_failures_total: AtomicU64,
    /// Bytes of torn tails cut off segment files when opening them after a crash.
    pub torn_tail_bytes_total: AtomicU64,
    /// Trims that dropped records (a pageserver checkpointed the segment to object storage).
    pub trims_total: AtomicU64,
    /// Records dropped by trims.
    pub records_trimmed_total: AtomicU64,
    /// Gossip fetches a peer refused because it trimmed its log past this member's SCL.
    pub gossip_trimmed_refusals_total: AtomicU64,
    /// Peers' trim points this member adopted as its own base (it was behind them).
    pub trim_points_adopted_total: AtomicU64,
    /// Append requests refused because they would take the retained log past the disk budget
    /// (also counted in `appends_refused_total`).
    pub appends_refused_budget_total: AtomicU64,
    /// Tenants dropped (deleted) from this safekeeper, with every byte of their log.
    pub tenants_dropped_total: AtomicU64,
    /// Connections whose token was refused, and requests their token did not cover.
    pub auth_refused_total: AtomicU64,
    /// Gauge: `--disk-budget-bytes`.
    pub disk_budget_bytes: AtomicU64,
    /// Gauge: bytes of segment files on this safekeeper's disk, over all tenants.
    pub retained_log_bytes: AtomicU64,
    /// Gauge: 1 while this node rebuilds after its disk was replaced ([`crate::rebuild`]).
    pub rebuilding: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            appends_total: AtomicU64::new(0),
            records_appended_total: AtomicU64::new(0),
            appends_refused_total: AtomicU64::new(0),
            fsyncs_total: AtomicU64::new(0),
            commit_batch_records: Histogram::new(BATCH_BUCKETS_RECORDS, 1.0),
            append_ack_latency: Histogram::new(LATENCY_BUCKETS_US, 1e6),
            gossip_records_repaired_total: AtomicU64::new(0),
            gossip_rounds_total: AtomicU64::new(0),
            crc_failures_total: AtomicU64::new(0),
            torn_tail_bytes_total: AtomicU64::new(0),
            trims_total: AtomicU64::new(0),
            records_trimmed_total: AtomicU64::new(0),
            gossip_trimmed_refusals_total: AtomicU64::new(0),
            trim_points_adopted_total: AtomicU64::new(0),
            appends_refused_budget_total: AtomicU64::new(0),
            tenants_dropped_total: AtomicU64::new(0),
            auth_refused_total: AtomicU64::new(0),
            disk_budget_bytes: AtomicU64::new(0),
            retained_log_bytes: AtomicU64::new(0),
            rebuilding: AtomicU64::new(0),
        }
    }
}

/// Adds `n` to a counter.
pub fn inc(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn observe_append_latency(&self, latency: Duration) {
        self.append_ack_latency
            .observe(latency.as_micros().min(u128::from(u64::MAX)) as u64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &AtomicU64, &str); 15] = [
            (
                "safekeeper_auth_refused_total",
                &self.auth_refused_total,
                "Connections whose storage token was refused, and requests it did not cover.",
            ),
            (
                "safekeeper_tenants_dropped_total",
                &self.tenants_dropped_total,
                "Tenants deleted from this safekeeper (tombstoned, log removed).",
            ),
            (
                "safekeeper_gossip_trimmed_refusals_total",
                &self.gossip_trimmed_refusals_total,
                "Gossip fetches refused because the peer trimmed its log past this member's SCL.",
            ),
            (
                "safekeeper_trim_points_adopted_total",
                &self.trim_points_adopted_total,
                "Peers' trim points adopted as this member's base because it was behind them.",
            ),
            (
                "safekeeper_trims_total",
                &self.trims_total,
                "Trims that dropped records checkpointed to object storage.",
            ),
            (
                "safekeeper_records_trimmed_total",
                &self.records_trimmed_total,
                "Records dropped by trims.",
            ),
            (
                "safekeeper_appends_total",
                &self.appends_total,
                "Append requests accepted.",
            ),
            (
                "safekeeper_records_appended_total",
                &self.records_appended_total,
                "Records written for the first time by writer appends.",
            ),
            (
                "safekeeper_appends_refused_total",
                &self.appends_refused_total,
                "Append requests refused (fenced, no hello, corrupt, disk budget).",
            ),
            (
                "safekeeper_appends_refused_budget_total",
                &self.appends_refused_budget_total,
                "Append requests refused because the retained log would exceed the disk budget.",
            ),
            (
                "safekeeper_fsyncs_total",
                &self.fsyncs_total,
                "fsync calls on segment files.",
            ),
            (
                "safekeeper_gossip_records_repaired_total",
                &self.gossip_records_repaired_total,
                "Records fetched from peers that this safekeeper lacked.",
            ),
            (
                "safekeeper_gossip_rounds_total",
                &self.gossip_rounds_total,
                "Gossip rounds run.",
            ),
            (
                "safekeeper_crc_failures_total",
                &self.crc_failures_total,
                "Stored records that failed their CRC or could not be read.",
            ),
            (
                "safekeeper_torn_tail_bytes_total",
                &self.torn_tail_bytes_total,
                "Bytes of torn tails cut from segment files at open.",
            ),
        ];
        for (name, value, help) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let gauges: [(&str, &AtomicU64, &str); 3] = [
            (
                "safekeeper_rebuilding",
                &self.rebuilding,
                "1 while this node rebuilds after its disk was replaced: it refuses GetState until it holds what its peers hold.",
            ),
            (
                "safekeeper_disk_budget_bytes",
                &self.disk_budget_bytes,
                "Bytes of log this safekeeper retains before it refuses appends (--disk-budget-bytes).",
            ),
            (
                "safekeeper_retained_log_bytes",
                &self.retained_log_bytes,
                "Bytes of segment files on disk, over all tenants.",
            ),
        ];
        for (name, value, help) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        self.commit_batch_records.render(
            &mut out,
            "safekeeper_append_batch_records",
            "Records made durable by one group commit.",
        );
        self.append_ack_latency.render(
            &mut out,
            "safekeeper_append_ack_latency_seconds",
            "Time from an append being queued to its ack being published (after fsync).",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_renders_cumulative_buckets_in_base_units() {
        let m = Metrics::default();
        m.observe_append_latency(Duration::from_micros(300));
        m.observe_append_latency(Duration::from_secs(10));
        inc(&m.fsyncs_total, 3);
        m.retained_log_bytes.store(4096, Ordering::Relaxed);
        let text = m.render();
        assert!(text.contains("safekeeper_fsyncs_total 3\n"), "{text}");
        assert!(text.contains(
            "# TYPE safekeeper_retained_log_bytes gauge\nsafekeeper_retained_log_bytes 4096\n"
        ));
        assert!(text.contains("safekeeper_appends_refused_budget_total 0\n"));
        assert!(text.contains("safekeeper_trim_points_adopted_total 0\n"));
        assert!(text.contains("safekeeper_append_ack_latency_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("safekeeper_append_ack_latency_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("safekeeper_append_ack_latency_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("safekeeper_append_ack_latency_seconds_count 2\n"));
        assert!(
            text.contains("safekeeper_append_ack_latency_seconds_sum 10.0003\n"),
            "{text}"
        );
    }
}
