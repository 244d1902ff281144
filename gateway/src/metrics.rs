//! The gateway's metrics, rendered in Prometheus text format at `GET /metrics`.
//!
//! Replica lag (see [`crate::compute_pool::reader`]) is a gauge per tenant with a running reader,
//! `borealis_gateway_replica_lag_lsn{tenant}` (writer VDL minus read point when the reader last
//! answered or followed), and a histogram over every replica answer,
//! `borealis_gateway_replica_lag_seconds` (how long ago the oldest durable commit the answer does
//! not show was shipped).
//!
//! Budgets ([`crate::budget`]): `borealis_gateway_requests_in_flight` and
//! `borealis_gateway_bytes_in_flight` (gauges, all tenants), and
//! `borealis_gateway_requests_refused_total{reason}` (requests answered `rate_limited`, by the
//! budget that refused them: `tenant_requests`, `requests`, `tenant_bytes`, `bytes`).

use borealis_utils::LockExt;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use borealis_core::TenantId;

/// Latency histogram bucket bounds, in seconds.
const BUCKETS_SECONDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS_SECONDS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS_SECONDS.iter().enumerate() {
            cum += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        cum += self.counts[BUCKETS_SECONDS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cum}");
    }
}

/// Which budget refused a request (the `reason` label of
/// `borealis_gateway_requests_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    TenantRequests,
    Requests,
    TenantBytes,
    Bytes,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::TenantRequests,
        Refusal::Requests,
        Refusal::TenantBytes,
        Refusal::Bytes,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::TenantRequests => "tenant_requests",
            Refusal::Requests => "requests",
            Refusal::TenantBytes => "tenant_bytes",
            Refusal::Bytes => "bytes",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Default)]
pub struct Metrics {
    /// (route, status) → latency.
    requests: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    pub cold_starts: Histogram,
    pub running_computes: AtomicU64,
    pub recoveries_failed: AtomicU64,
    /// Writers started by resuming an idle writer's epoch (RFC 0017), and resumes that failed
    /// (a newer epoch on a member, or no quorum) and recovered instead.
    pub writer_resumes: AtomicU64,
    pub writer_resumes_failed: AtomicU64,
    pub commits_unknown_outcome: AtomicU64,
    /// Requests with an `Idempotency-Key` that wrote, and so recorded their key.
    pub idempotency_keys_recorded: AtomicU64,
    /// Requests with an `Idempotency-Key` answered from the record of an earlier run.
    pub idempotent_replays: AtomicU64,
    /// Requests run read-only at the VDL because their tenant's writer was in limbo (write
    /// quorum lost with commits in flight).
    pub quorum_lost_requests: AtomicU64,
    pub running_readers: AtomicU64,
    /// Replica answers by how far in time they were behind the writer's VDL.
    pub replica_lag: Histogram,
    /// Times a reader dropped its cache and jumped to the VDL (start, writer change, lag).
    pub replica_resets: AtomicU64,
    /// Idle compute instances given back because every instance slot was taken.
    pub computes_given_back: AtomicU64,
    /// Gauge: deleted tenants whose storage is not reclaimed everywhere yet.
    pub tenants_reclaiming: AtomicU64,
    /// Deleted tenants whose storage was reclaimed on every safekeeper and pageserver.
    pub tenants_reclaimed: AtomicU64,
    /// Tenant → writer VDL minus the reader's read point, in LSNs.
    replica_lag_lsn: Mutex<BTreeMap<TenantId, u64>>,
    /// Gauge: `POST .../sql` requests admitted and not yet answered (the gateway-wide count
    /// [`crate::budget::Budgets`] admits against).
    pub requests_in_flight: AtomicU64,
    /// Gauge: bytes held for requests in flight, at real memory cost ([`crate::budget`]).
    pub bytes_in_flight: AtomicU64,
    /// Requests refused `rate_limited`, by the budget that refused them
    /// ([`Refusal::index`]).
    pub budget_refusals: [AtomicU64; 4],
    /// Page requests computes sent to pageservers: `GetPage` (one page) and `GetPages` (a
    /// read-ahead run), and the pages both asked for.
    pub page_requests_one: AtomicU64,
    pub page_requests_batch: AtomicU64,
    pub pages_requested: AtomicU64,
    /// Read-ahead windows fetched in the background that a scan reached and landed, and those
    /// whose fetch failed (the page was then read synchronously).
    pub readahead_windows_landed: AtomicU64,
    pub readahead_windows_failed: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, route: &'static str, status: u16, d: Duration) {
        let mut m = self.requests.locked();
        m.entry((route, status)).or_default().observe(d);
    }

    pub fn set_replica_lag_lsn(&self, tenant: TenantId, lag: u64) {
        let mut m = self.replica_lag_lsn.locked();
        m.insert(tenant, lag);
    }

    /// A tenant's reader stopped: its gauge goes away with it.
    pub fn forget_replica(&self, tenant: TenantId) {
        let mut m = self.replica_lag_lsn.locked();
        m.remove(&tenant);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE borealis_gateway_request_seconds histogram\n");
        for ((route, status), h) in self.requests.locked().iter() {
            h.render(
                &mut out,
                "borealis_gateway_request_seconds",
                &format!("route=\"{route}\",status=\"{status}\""),
            );
        }
        out.push_str("# TYPE borealis_gateway_cold_start_seconds histogram\n");
        self.cold_starts
            .render(&mut out, "borealis_gateway_cold_start_seconds", "");
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_running_computes gauge\nborealis_gateway_running_computes {}",
            self.running_computes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_recoveries_failed_total counter\nborealis_gateway_recoveries_failed_total {}",
            self.recoveries_failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_writer_resumes_total counter\nborealis_gateway_writer_resumes_total {}",
            self.writer_resumes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_writer_resumes_failed_total counter\nborealis_gateway_writer_resumes_failed_total {}",
            self.writer_resumes_failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_commits_unknown_outcome_total counter\nborealis_gateway_commits_unknown_outcome_total {}",
            self.commits_unknown_outcome.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_idempotency_keys_recorded_total counter\nborealis_gateway_idempotency_keys_recorded_total {}",
            self.idempotency_keys_recorded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_idempotent_replays_total counter\nborealis_gateway_idempotent_replays_total {}",
            self.idempotent_replays.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_quorum_lost_requests_total counter\nborealis_gateway_quorum_lost_requests_total {}",
            self.quorum_lost_requests.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_running_readers gauge\nborealis_gateway_running_readers {}",
            self.running_readers.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_replica_resets_total counter\nborealis_gateway_replica_resets_total {}",
            self.replica_resets.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_computes_given_back_total counter\nborealis_gateway_computes_given_back_total {}",
            self.computes_given_back.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_tenants_reclaiming gauge\nborealis_gateway_tenants_reclaiming {}",
            self.tenants_reclaiming.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_tenants_reclaimed_total counter\nborealis_gateway_tenants_reclaimed_total {}",
            self.tenants_reclaimed.load(Ordering::Relaxed)
        );
        out.push_str("# TYPE borealis_gateway_replica_lag_lsn gauge\n");
        for (tenant, lag) in self.replica_lag_lsn.locked().iter() {
            let _ = writeln!(
                out,
                "borealis_gateway_replica_lag_lsn{{tenant=\"{tenant}\"}} {lag}"
            );
        }
        out.push_str("# TYPE borealis_gateway_replica_lag_seconds histogram\n");
        self.replica_lag
            .render(&mut out, "borealis_gateway_replica_lag_seconds", "");
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_requests_in_flight gauge\nborealis_gateway_requests_in_flight {}",
            self.requests_in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_bytes_in_flight gauge\nborealis_gateway_bytes_in_flight {}",
            self.bytes_in_flight.load(Ordering::Relaxed)
        );
        out.push_str("# TYPE borealis_gateway_page_requests_total counter\n");
        for (kind, n) in [
            ("get_page", &self.page_requests_one),
            ("get_pages", &self.page_requests_batch),
        ] {
            let _ = writeln!(
                out,
                "borealis_gateway_page_requests_total{{kind=\"{kind}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# TYPE borealis_gateway_pages_requested_total counter\nborealis_gateway_pages_requested_total {}",
            self.pages_requested.load(Ordering::Relaxed)
        );
        out.push_str("# TYPE borealis_gateway_readahead_windows_total counter\n");
        for (outcome, n) in [
            ("landed", &self.readahead_windows_landed),
            ("failed", &self.readahead_windows_failed),
        ] {
            let _ = writeln!(
                out,
                "borealis_gateway_readahead_windows_total{{outcome=\"{outcome}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# TYPE borealis_gateway_requests_refused_total counter\n");
        for why in Refusal::ALL {
            let _ = writeln!(
                out,
                "borealis_gateway_requests_refused_total{{reason=\"{}\"}} {}",
                why.label(),
                self.budget_refusals[why.index()].load(Ordering::Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.observe_request("sql", 200, Duration::from_micros(300));
        m.observe_request("sql", 200, Duration::from_millis(30));
        m.cold_starts.observe(Duration::from_millis(2));
        let text = m.render();
        assert!(text.contains("borealis_gateway_request_seconds_bucket{route=\"sql\",status=\"200\",le=\"0.0005\"} 1"), "{text}");
        assert!(text.contains("borealis_gateway_request_seconds_bucket{route=\"sql\",status=\"200\",le=\"0.05\"} 2"), "{text}");
        assert!(
            text.contains("borealis_gateway_cold_start_seconds_count{} 1"),
            "{text}"
        );
    }

    #[test]
    fn replica_lag_is_a_gauge_per_tenant_and_a_histogram() {
        let m = Metrics::default();
        m.set_replica_lag_lsn(TenantId(0xab), 7);
        m.set_replica_lag_lsn(TenantId(0xab), 3);
        m.replica_lag.observe(Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains("borealis_gateway_replica_lag_lsn{tenant=\"00000000000000ab\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("borealis_gateway_replica_lag_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        m.forget_replica(TenantId(0xab));
        assert!(!m.render().contains("replica_lag_lsn{"), "gauge removed");
    }
}
