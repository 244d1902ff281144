//! The pageserver's metrics, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Plain atomics: counters only go up, histograms have fixed buckets (seconds). One [`Metrics`]
//! per process, shared by reference; nothing here is global.

use crate::cache::PageCache;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 10.0,
];

pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len()],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // Buckets are cumulative when rendered; store each observation in its first bucket.
        if let Some(i) = LATENCY_BUCKETS_SECONDS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS_SECONDS.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// How a GetPage ended, for `pageserver_getpage_total{result=...}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetPageResult {
    Page,
    NoPage,
    TooOld,
    Timeout,
    Error,
}

#[derive(Default)]
pub struct Metrics {
    getpage_page: Counter,
    getpage_no_page: Counter,
    getpage_too_old: Counter,
    getpage_timeout: Counter,
    getpage_error: Counter,
    /// Whole GetPage handling time.
    pub getpage_seconds: Histogram,
    /// The part of it spent waiting for the segment to be applied up to the asked LSN.
    pub getpage_wait_seconds: Histogram,
    /// `GetPages` requests answered (not refused whole), the pages they answered, and the
    /// whole handling time of each.
    pub getpages: Counter,
    pub getpages_pages: Counter,
    pub getpages_seconds: Histogram,
    pub records_applied: Counter,
    pub log_reads: Counter,
    pub log_read_errors: Counter,
    pub safekeeper_switches: Counter,
    pub chain_holes: Counter,
    pub quorum_proofs: Counter,
    pub checkpoints: Counter,
    pub checkpoint_aborts: Counter,
    /// Checkpoints that wrote an image layer (every page) or a changes layer.
    pub image_layers_written: Counter,
    pub changes_layers_written: Counter,
    /// Delta layers (the redo between two checkpoints, for the retention window) uploaded, and
    /// pages read below the local page file's history from the window's layers.
    pub delta_layers_written: Counter,
    /// Bytes of those delta layers (part of `bytes_uploaded`): what the window costs.
    pub delta_bytes_uploaded: Counter,
    pub window_reads: Counter,
    /// Garbage collection passes over older generations' objects that deleted something, and
    /// the objects they deleted.
    pub gc_passes: Counter,
    pub gc_objects_deleted: Counter,
    pub bytes_uploaded: Counter,
    pub bytes_downloaded: Counter,
    pub layers_downloaded: Counter,
    /// Pages fetched from object storage, one by one (a ranged read of one record of a layer) or
    /// in runs (one ranged read of side-by-side records, `crate::restore::fetch_pages`), and
    /// the ranged reads that fetched them.
    pub pages_fetched: Counter,
    pub page_fetch_reads: Counter,
    /// Of those, pages rebuilt from the deltas above the chain (RFC 0011: checkpoints that
    /// wrote only a delta layer).
    pub pages_rebuilt: Counter,
    /// Checkpoints that uploaded only a delta layer (RFC 0011).
    pub delta_only_checkpoints: Counter,
    /// Bytes read by ranged reads (layer headers and directories, single records): what
    /// on-demand download costs, apart from whole layers.
    pub ranged_bytes: Counter,
    /// Restored segments whose chain became all local in the background.
    pub hydrations: Counter,
    /// Page file compaction (`crate::compaction`): passes, versions dropped below the history
    /// horizon, live records copied out of reclaimed extents, extents deleted.
    pub compaction_passes: Counter,
    pub versions_dropped: Counter,
    pub records_moved: Counter,
    pub extents_removed: Counter,
    /// Pages dropped from the page files under `--disk-cache-bytes` (fetched again when read).
    pub pages_evicted: Counter,
    pub layers_deleted: Counter,
    pub restores: Counter,
    pub object_store_errors: Counter,
    pub trims_sent: Counter,
    pub trim_errors: Counter,
    /// Connections whose storage token was refused, and requests it did not cover.
    pub auth_refused_total: Counter,
}

impl Metrics {
    pub fn getpage_done(&self, result: GetPageResult, elapsed: Duration) {
        self.getpage_counter(result).inc();
        self.getpage_seconds.observe(elapsed);
    }

    /// A `GetPages` refused whole, counted by how it ended as a GetPage would be.
    pub fn getpage_failed(&self, result: GetPageResult) {
        self.getpage_counter(result).inc();
    }

    pub fn getpages_done(&self, pages: usize, elapsed: Duration) {
        self.getpages.inc();
        self.getpages_pages.add(pages as u64);
        self.getpages_seconds.observe(elapsed);
    }

    fn getpage_counter(&self, result: GetPageResult) -> &Counter {
        match result {
            GetPageResult::Page => &self.getpage_page,
            GetPageResult::NoPage => &self.getpage_no_page,
            GetPageResult::TooOld => &self.getpage_too_old,
            GetPageResult::Timeout => &self.getpage_timeout,
            GetPageResult::Error => &self.getpage_error,
        }
    }

    pub fn render(&self, cache: &PageCache) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP pageserver_getpage_total GetPage requests answered, by result (and GetPages refused whole).\n\
             # TYPE pageserver_getpage_total counter"
        );
        for (label, result) in [
            ("page", GetPageResult::Page),
            ("no_page", GetPageResult::NoPage),
            ("too_old", GetPageResult::TooOld),
            ("timeout", GetPageResult::Timeout),
            ("error", GetPageResult::Error),
        ] {
            let n = self.getpage_counter(result).get();
            let _ = writeln!(out, "pageserver_getpage_total{{result=\"{label}\"}} {n}");
        }
        self.getpage_seconds.render(
            &mut out,
            "pageserver_getpage_seconds",
            "Time to answer a GetPage request.",
        );
        self.getpage_wait_seconds.render(
            &mut out,
            "pageserver_getpage_wait_seconds",
            "Time a GetPage waited for its segment to be applied up to the asked LSN.",
        );
        self.getpages_seconds.render(
            &mut out,
            "pageserver_getpages_seconds",
            "Time to answer a GetPages request (several pages of one segment).",
        );
        let counters: [(&str, &str, u64); 41] = [
            (
                "pageserver_page_fetch_reads_total",
                "Ranged reads of object storage that fetched pages: one per page, or one per run of side-by-side records a GetPages fetched together.",
                self.page_fetch_reads.get(),
            ),
            (
                "pageserver_getpages_total",
                "GetPages requests answered (several pages of one segment, one round trip).",
                self.getpages.get(),
            ),
            (
                "pageserver_getpages_pages_total",
                "Pages answered by GetPages requests, images, never-written pages and failed pages alike.",
                self.getpages_pages.get(),
            ),
            (
                "pageserver_checkpoints_total",
                "Checkpoints made durable (layer and index uploaded).",
                self.checkpoints.get(),
            ),
            (
                "pageserver_checkpoint_aborts_total",
                "Checkpoints abandoned before upload (a page moved on, or a local write failed).",
                self.checkpoint_aborts.get(),
            ),
            (
                "pageserver_image_layers_written_total",
                "Checkpoints that wrote an image layer: every page of the segment.",
                self.image_layers_written.get(),
            ),
            (
                "pageserver_changes_layers_written_total",
                "Checkpoints that wrote a changes layer: the pages changed since the last one.",
                self.changes_layers_written.get(),
            ),
            (
                "pageserver_delta_layers_written_total",
                "Delta layers (the redo between two checkpoints) uploaded for the retention window.",
                self.delta_layers_written.get(),
            ),
            (
                "pageserver_delta_bytes_uploaded_total",
                "Bytes of delta layers uploaded (included in pageserver_bytes_uploaded_total): what the retention window costs.",
                self.delta_bytes_uploaded.get(),
            ),
            (
                "pageserver_window_reads_total",
                "Pages rebuilt from the retention window's layers for a read below the local history.",
                self.window_reads.get(),
            ),
            (
                "pageserver_gc_passes_total",
                "Garbage collection passes that deleted older generations' superseded objects.",
                self.gc_passes.get(),
            ),
            (
                "pageserver_gc_objects_deleted_total",
                "Indexes, layers and claims of older generations deleted by garbage collection.",
                self.gc_objects_deleted.get(),
            ),
            (
                "pageserver_bytes_uploaded_total",
                "Bytes of layers and indexes uploaded to object storage.",
                self.bytes_uploaded.get(),
            ),
            (
                "pageserver_bytes_downloaded_total",
                "Bytes of layers downloaded from object storage (whole layers, their directories \
                 and single records).",
                self.bytes_downloaded.get(),
            ),
            (
                "pageserver_layers_downloaded_total",
                "Layers downloaded to restore segments.",
                self.layers_downloaded.get(),
            ),
            (
                "pageserver_pages_fetched_total",
                "Pages fetched from object storage one by one (ranged reads) by GetPage or ingest.",
                self.pages_fetched.get(),
            ),
            (
                "pageserver_pages_rebuilt_total",
                "Pages fetched by rebuilding them from the delta layers above their chain (included in pageserver_pages_fetched_total).",
                self.pages_rebuilt.get(),
            ),
            (
                "pageserver_delta_only_checkpoints_total",
                "Checkpoints that uploaded only the redo since the last one (a delta layer), no page images.",
                self.delta_only_checkpoints.get(),
            ),
            (
                "pageserver_ranged_read_bytes_total",
                "Bytes read from object storage by ranged reads (layer directories, single records).",
                self.ranged_bytes.get(),
            ),
            (
                "pageserver_compaction_passes_total",
                "Compaction passes over a tenant's page file.",
                self.compaction_passes.get(),
            ),
            (
                "pageserver_versions_dropped_total",
                "Page versions dropped from the page files for being older than --page-history.",
                self.versions_dropped.get(),
            ),
            (
                "pageserver_records_moved_total",
                "Live page records copied out of page file extents being reclaimed.",
                self.records_moved.get(),
            ),
            (
                "pageserver_extents_removed_total",
                "Page file extents deleted after their live records were copied forward.",
                self.extents_removed.get(),
            ),
            (
                "pageserver_pages_evicted_total",
                "Pages dropped from the page files under --disk-cache-bytes; a read fetches them \
                 again from object storage.",
                self.pages_evicted.get(),
            ),
            (
                "pageserver_hydrations_total",
                "Restored segments whose layers were all downloaded in the background.",
                self.hydrations.get(),
            ),
            (
                "pageserver_layers_deleted_total",
                "Layers deleted from object storage after a newer index was durable.",
                self.layers_deleted.get(),
            ),
            (
                "pageserver_restores_total",
                "Segments restored from a checkpoint in object storage.",
                self.restores.get(),
            ),
            (
                "pageserver_object_store_errors_total",
                "Object store operations that failed (and were retried).",
                self.object_store_errors.get(),
            ),
            (
                "pageserver_trims_sent_total",
                "Trim requests sent to safekeepers after a checkpoint.",
                self.trims_sent.get(),
            ),
            (
                "pageserver_trim_errors_total",
                "Trim requests that failed or were refused.",
                self.trim_errors.get(),
            ),
            (
                "pageserver_auth_refused_total",
                "Connections whose storage token was refused, and requests it did not cover.",
                self.auth_refused_total.get(),
            ),
            (
                "pageserver_records_applied_total",
                "Redo records applied.",
                self.records_applied.get(),
            ),
            (
                "pageserver_log_reads_total",
                "ReadLog requests sent to safekeepers.",
                self.log_reads.get(),
            ),
            (
                "pageserver_log_read_errors_total",
                "ReadLog requests that failed.",
                self.log_read_errors.get(),
            ),
            (
                "pageserver_safekeeper_switches_total",
                "Times a follower turned to another safekeeper.",
                self.safekeeper_switches.get(),
            ),
            (
                "pageserver_chain_holes_total",
                "Safekeeper answers whose records did not chain.",
                self.chain_holes.get(),
            ),
            (
                "pageserver_quorum_proofs_total",
                "Segments proved complete by a read quorum holding nothing newer.",
                self.quorum_proofs.get(),
            ),
            (
                "pageserver_page_cache_hits_total",
                "Page cache lookups that found the version.",
                cache.hits(),
            ),
            (
                "pageserver_page_cache_misses_total",
                "Page cache lookups that did not.",
                cache.misses(),
            ),
            (
                "pageserver_page_cache_pages",
                "Page images held in the cache.",
                cache.len() as u64,
            ),
            (
                "pageserver_page_cache_capacity_pages",
                "Page images the cache holds at most (--cache-pages).",
                cache.capacity() as u64,
            ),
        ];
        for (name, help, value) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroUsize;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.getpage_done(GetPageResult::Page, Duration::from_micros(300));
        m.getpage_done(GetPageResult::Timeout, Duration::from_secs(20));
        m.records_applied.add(5);
        let cache = PageCache::new(NonZeroUsize::new(4).unwrap());
        let text = m.render(&cache);
        assert!(
            text.contains("pageserver_getpage_total{result=\"page\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pageserver_getpage_seconds_bucket{le=\"0.0005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pageserver_getpage_seconds_bucket{le=\"10\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pageserver_getpage_seconds_bucket{le=\"+Inf\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("pageserver_getpage_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("pageserver_records_applied_total 5"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pageserver_page_cache_pages gauge"),
            "{text}"
        );
    }
}
