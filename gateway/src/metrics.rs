//! The gateway's metrics, rendered in Prometheus text format at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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

#[derive(Default)]
pub struct Metrics {
    /// (route, status) → latency.
    requests: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
    pub cold_starts: Histogram,
    pub running_computes: AtomicU64,
    pub recoveries_failed: AtomicU64,
    pub commits_unknown_outcome: AtomicU64,
}

impl Metrics {
    pub fn observe_request(&self, route: &'static str, status: u16, d: Duration) {
        let mut m = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        m.entry((route, status)).or_default().observe(d);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# TYPE borealis_gateway_request_seconds histogram\n");
        for ((route, status), h) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
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
            "# TYPE borealis_gateway_commits_unknown_outcome_total counter\nborealis_gateway_commits_unknown_outcome_total {}",
            self.commits_unknown_outcome.load(Ordering::Relaxed)
        );
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
}
