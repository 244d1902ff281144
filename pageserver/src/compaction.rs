//! Compaction of the local page files: old history dropped, dead space reclaimed.
//!
//! Every applied record appends a full page image to its tenant's page file
//! ([`crate::page_file`]), so without this the file grows with every write for as long as the
//! process runs (a write-heavy tenant: gigabytes an hour). One task per pageserver, every
//! 5 s (`--compaction-interval`), for every tenant ([`crate::pages::TenantPages::compact`]):
//!
//! 1. **History.** A page keeps the versions a read point up to `--page-history` (60 s) behind
//!    its segment can need: the segment's **horizon** is the LSN it had applied that long ago
//!    (sampled every pass), and a page's versions older than its newest one at or below the
//!    horizon are dropped. A read point older than the horizon may then get "lsn too old"
//!    (`Invalid`), never another page: readers run at their writer's VDL, milliseconds behind,
//!    and a replica that falls minutes behind restarts at a newer read point anyway. The count
//!    bound (`VERSIONS_PER_PAGE_MAX` per page) still applies on top.
//!    With a retention window (`--pitr-window`), the horizon is never above the segment's last
//!    durable checkpoint: the versions above it serve the window's newest part
//!    ([`crate::history`]).
//! 2. **Eviction** (with `--disk-cache-bytes`). When the live records pass half
//!    the budget (less one extent), the least recently used pages whose newest version a
//!    durable checkpoint holds are dropped until they are 1/8 below it
//!    (`crate::pages::TenantPages::compact` says which pages may go). A read fetches an evicted
//!    page again with one ranged read ([`crate::restore::fetch_page`]), and the follower fetches
//!    the ones its next records change.
//! 3. **Extents.** An extent whose live records fell to half or less has them copied forward
//!    and is deleted: the file stays within about twice the records the index names, plus the
//!    extent being filled.
//!
//! Without a budget, what bounds the local disk is the pages written (their newest versions)
//! plus `--page-history` of changes; pages of a restored segment not read yet stay in object
//! storage until hydrated ([`crate::restore`]). With one, the page file stays within it, except
//! for what cannot be evicted yet (pages changed since the segment's last checkpoint, history
//! within `--page-history`) and, for a while, an image checkpoint's hydration.

use crate::tenant::{Tenant, Tenants};
use borealis_core::{Lsn, SegmentId, TenantId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, error, info_span, Instrument};

/// `(when, applied LSN)` samples of one segment, oldest first, spanning a little more than the
/// history window (so at most `window / interval + 2` of them).
#[derive(Default)]
struct Samples(VecDeque<(Instant, Lsn)>);

impl Samples {
    /// Records `lsn` at `now`, forgets samples no longer needed, and returns the horizon: the
    /// LSN applied at least `window` ago (`None` until the segment has been followed that long).
    fn horizon(&mut self, now: Instant, lsn: Lsn, window: Duration) -> Option<Lsn> {
        self.0.push_back((now, lsn));
        while self.0.len() >= 2 && now.duration_since(self.0[1].0) >= window {
            self.0.pop_front();
        }
        self.0
            .front()
            .filter(|(t, _)| now.duration_since(*t) >= window)
            .map(|(_, l)| *l)
    }
}

/// Starts the compaction task.
pub fn spawn(tenants: Arc<Tenants>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(tenants).instrument(info_span!("compaction")))
}

async fn run(tenants: Arc<Tenants>) {
    let shared = tenants.shared().clone();
    let window = shared.config.page_history;
    let budget = shared.config.disk_cache_bytes;
    let window_kept = !shared.config.pitr_window.is_zero();
    let mut samples: HashMap<(TenantId, SegmentId), Samples> = HashMap::new();
    let mut tick = tokio::time::interval(shared.config.compaction_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut work: BTreeMap<TenantId, (Arc<Tenant>, HashMap<SegmentId, Lsn>)> = BTreeMap::new();
        for (tenant, segment) in tenants.all_segments() {
            let entry = work
                .entry(tenant.id)
                .or_insert_with(|| (tenant.clone(), HashMap::new()));
            let horizon = samples.entry((tenant.id, segment.id)).or_default().horizon(
                now,
                segment.caught_up_to(),
                window,
            );
            // With a retention window, every version above the last durable checkpoint stays:
            // the window's layers serve reads at or below it, the page file those above.
            let horizon = if window_kept {
                horizon.map(|h| h.min(segment.checkpoint_status().checkpointed_lsn))
            } else {
                horizon
            };
            if let Some(h) = horizon.filter(|h| h.is_valid()) {
                entry.1.insert(segment.id, h);
            }
        }
        samples.retain(|(t, _), _| work.contains_key(t));
        for (id, (tenant, horizons)) in work {
            if tenants.is_dropped(id) {
                continue;
            }
            let pages = tenant.pages.clone();
            let started = Instant::now();
            let done = tokio::task::spawn_blocking(move || pages.compact(&horizons, budget)).await;
            match done {
                Ok(Ok(c)) => {
                    let m = &shared.metrics;
                    m.compaction_passes.inc();
                    m.versions_dropped.add(c.versions_dropped);
                    m.records_moved.add(c.records_moved);
                    m.extents_removed.add(c.extents_removed);
                    m.pages_evicted.add(c.pages_evicted);
                    if c.extents_removed > 0 || c.pages_evicted > 0 {
                        debug!(
                            tenant = %id, versions_dropped = c.versions_dropped,
                            records_moved = c.records_moved, extents_removed = c.extents_removed,
                            pages_evicted = c.pages_evicted,
                            file_bytes = tenant.pages.file_bytes(),
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "page file compacted"
                        );
                    }
                }
                Ok(Err(e)) => {
                    error!(tenant = %id, error = %e, "compacting the page file failed; tried again next pass")
                }
                Err(e) => error!(tenant = %id, error = %e, "the compaction task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_what_was_applied_a_window_ago() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut samples = Samples::default();
        let w = Duration::from_secs(60);
        assert_eq!(samples.horizon(s(0), Lsn(10), w), None);
        assert_eq!(samples.horizon(s(30), Lsn(20), w), None);
        assert_eq!(samples.horizon(s(60), Lsn(30), w), Some(Lsn(10)));
        assert_eq!(samples.horizon(s(65), Lsn(40), w), Some(Lsn(10)));
        assert_eq!(samples.horizon(s(95), Lsn(50), w), Some(Lsn(20)));
        assert!(samples.0.len() <= 4, "{}", samples.0.len());
        // No history kept: the horizon is what is applied now.
        let mut none = Samples::default();
        assert_eq!(none.horizon(s(0), Lsn(7), Duration::ZERO), Some(Lsn(7)));
        assert_eq!(none.horizon(s(5), Lsn(9), Duration::ZERO), Some(Lsn(9)));
        assert_eq!(none.0.len(), 1);
    }
}
