//! The disk budget: how much log a safekeeper keeps before it refuses writers' appends.
//!
//! A safekeeper may drop a segment's records only after a pageserver has checkpointed them to
//! object storage (see [`crate::tenant::Tenant::trim`]). While the object store is down nothing
//! is checkpointed, nothing is trimmed, and every accepted append stays on this disk. docs/design.md
//! §6 keeps writes going through such an outage, but *bounded by the safekeeper disk budget*:
//! this module is that bound.
//!
//! ## What is counted
//!
//! The **retained bytes** are the lengths of every segment file of every tenant on this
//! safekeeper: what the disk actually holds, including bytes of records that failed their CRC
//! on a later read (they stay in the file until its next rewrite). The count is taken once at
//! start-up from the files opened, then kept current by the code that changes a file's length —
//! appends, gossip and repair fills, truncations by a new epoch, trims — from the lengths the
//! segment files already track. No file is scanned per append.
//!
//! ## The rule
//!
//! An `Append` from a writer that would write `n` new bytes (duplicates and records off the
//! chain are not written, so they do not count) is refused whole when `retained + n > budget`:
//! nothing is written, nothing fsynced, and the writer gets `Error { kind: ReadOnly }` with a
//! message that starts with [`DISK_BUDGET_EXHAUSTED`]. An append that would write nothing (the
//! writer's VDL notices, repeats of held records) is always accepted. Gossip and repair fills
//! from peers are **never** refused: they carry records a write quorum may count on this member
//! to hold, and refusing them would leave holes; they are bounded by what the peers accepted,
//! so they may take the retained bytes past the budget, and are counted all the same.
//!
//! Once trims (or a new epoch's truncation) bring the retained bytes down, appends are accepted
//! again: there is nothing to reset and no restart.
//!
//! ## The exhausted state
//!
//! The first refusal enters the *exhausted* state; it is left when bytes are released and the
//! append refused last would now fit. The driver logs one WARN on entering and one INFO on
//! leaving, not one line per refused append. Appends that fit are accepted in either state: the
//! state only exists so an operator hears about an episode once.
//!
//! ## Layout
//!
//! [`DiskBudget`] is the sans-IO core (numbers in, verdicts out, no locks, no logs), like the
//! [`crate::acceptor`]. [`SharedDiskBudget`] is its driver: one per process behind a mutex that
//! is a leaf in the lock order (taken after a tenant's log lock, never held across I/O), setting
//! the gauges and writing the two log lines.

use crate::metrics::Metrics;
use crate::segment_log::RECORD_BYTES_MAX;
use borealis_core::{SegmentId, TenantId};
use borealis_utils::LockExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// The default `--disk-budget-bytes`: 16 GiB, room for hours of a busy tenant's log while the
/// object store is down, on the smallest disks we deploy safekeepers on.
pub const DISK_BUDGET_BYTES_DEFAULT: u64 = 16 * 1024 * 1024 * 1024;
/// The smallest budget accepted: one maximal record. Below it no append with records could
/// ever be accepted.
pub const DISK_BUDGET_BYTES_MIN: u64 = RECORD_BYTES_MAX as u64;
const _: () = assert!(DISK_BUDGET_BYTES_MIN <= DISK_BUDGET_BYTES_DEFAULT);

/// How every budget refusal's message starts, so a client (or a human grepping logs) can tell
/// it from other `ReadOnly` answers.
pub const DISK_BUDGET_EXHAUSTED: &str = "disk budget exhausted";

/// Why an append was refused: the numbers at the time, for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Bytes of log retained when the append arrived.
    pub retained_bytes: u64,
    /// Bytes the append would have written.
    pub needed_bytes: u64,
    pub budget_bytes: u64,
}

/// The verdict on an append's new bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The bytes are reserved (counted as retained): write them, or [`DiskBudget::release`]
    /// them if the write does not happen.
    Accept,
    /// Refused. `entered` is true for the refusal that entered the exhausted state.
    Refuse { refusal: Refusal, entered: bool },
}

/// The sans-IO budget of one safekeeper (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskBudget {
    budget_bytes: u64,
    retained_bytes: u64,
    /// While exhausted: the bytes the last refused append needed.
    exhausted_needing_bytes: Option<u64>,
}

impl DiskBudget {
    /// A budget with nothing retained yet (start-up adds what it opens with [`Self::grow`]).
    pub fn new(budget_bytes: u64) -> DiskBudget {
        assert!(budget_bytes > 0, "the budget is validated with the config");
        DiskBudget {
            budget_bytes,
            retained_bytes: 0,
            exhausted_needing_bytes: None,
        }
    }

    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    pub fn is_exhausted(&self) -> bool {
        self.exhausted_needing_bytes.is_some()
    }

    /// Judges a writer's append that would write `new_bytes`. Accepting reserves them.
    pub fn admit(&mut self, new_bytes: u64) -> Admission {
        if new_bytes == 0 {
            // Nothing would be written, so nothing more would be retained.
            return Admission::Accept;
        }
        match self.retained_bytes.checked_add(new_bytes) {
            Some(after) if after <= self.budget_bytes => {
                self.retained_bytes = after;
                Admission::Accept
            }
            _ => {
                let entered = self.exhausted_needing_bytes.is_none();
                self.exhausted_needing_bytes = Some(new_bytes);
                Admission::Refuse {
                    refusal: Refusal {
                        retained_bytes: self.retained_bytes,
                        needed_bytes: new_bytes,
                        budget_bytes: self.budget_bytes,
                    },
                    entered,
                }
            }
        }
    }

    /// Counts bytes that are kept whatever the budget: gossip and repair fills, files found at
    /// start-up. They may take the retained bytes past the budget.
    pub fn grow(&mut self, bytes: u64) {
        self.retained_bytes = self
            .retained_bytes
            .checked_add(bytes)
            .expect("retained bytes are file lengths: they cannot overflow u64");
    }

    /// Un-counts bytes that left the disk (a trim, a truncation, a rewrite) or a reservation
    /// that was never written. Returns true if this left the exhausted state.
    pub fn release(&mut self, bytes: u64) -> bool {
        self.retained_bytes = self.retained_bytes.checked_sub(bytes).unwrap_or_else(|| {
            panic!(
                "released {bytes} bytes but only {} are retained: the accounting missed a write",
                self.retained_bytes
            )
        });
        match self.exhausted_needing_bytes {
            Some(needed) if self.retained_bytes.saturating_add(needed) <= self.budget_bytes => {
                self.exhausted_needing_bytes = None;
                true
            }
            _ => false,
        }
    }

    /// Counts a file whose length went from `before` to `after` (either way). Returns true if
    /// this left the exhausted state.
    pub fn resize(&mut self, before: u64, after: u64) -> bool {
        if after >= before {
            self.grow(after - before);
            false
        } else {
            self.release(before - after)
        }
    }
}

/// Bytes for humans: `512 B`, `256.00 KiB`, `1.02 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", UNITS[unit])
}

/// A writer's append refused by the budget: the node and the figures. Its message starts with
/// [`DISK_BUDGET_EXHAUSTED`]; the safekeeper answers it as `SkError::DiskBudgetExhausted`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", refusal_message(node, refusal))]
pub struct BudgetExhausted {
    pub node: String,
    pub refusal: Refusal,
}

/// The message of a refusal.
pub fn refusal_message(node: &str, r: &Refusal) -> String {
    format!(
        "{DISK_BUDGET_EXHAUSTED} on safekeeper {node}: {} of log retained and this append needs {} \
         more (budget {}); appends refused until checkpoints to object storage let the log be \
         trimmed",
        human_bytes(r.retained_bytes),
        human_bytes(r.needed_bytes),
        human_bytes(r.budget_bytes),
    )
}

/// What `/status` shows of the budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetSnapshot {
    pub budget_bytes: u64,
    pub retained_bytes: u64,
    pub exhausted: bool,
}

/// The process's [`DiskBudget`], shared by its tenants: gauges and the two log lines.
pub struct SharedDiskBudget {
    node: String,
    state: Mutex<DiskBudget>,
    metrics: Arc<Metrics>,
}

impl SharedDiskBudget {
    pub fn new(node: String, budget_bytes: u64, metrics: Arc<Metrics>) -> SharedDiskBudget {
        metrics
            .disk_budget_bytes
            .store(budget_bytes, Ordering::Relaxed);
        metrics.retained_log_bytes.store(0, Ordering::Relaxed);
        SharedDiskBudget {
            node,
            state: Mutex::new(DiskBudget::new(budget_bytes)),
            metrics,
        }
    }

    /// Runs `f` on the state and publishes the retained bytes while still holding the lock, so
    /// the gauge never goes back in time.
    fn update<R>(&self, f: impl FnOnce(&mut DiskBudget) -> R) -> (R, u64, u64) {
        let mut state = self.state.locked();
        let r = f(&mut state);
        let retained = state.retained_bytes();
        self.metrics
            .retained_log_bytes
            .store(retained, Ordering::Relaxed);
        (r, retained, state.budget_bytes())
    }

    pub fn snapshot(&self) -> BudgetSnapshot {
        let state = self.state.locked();
        BudgetSnapshot {
            budget_bytes: state.budget_bytes(),
            retained_bytes: state.retained_bytes(),
            exhausted: state.is_exhausted(),
        }
    }

    /// While exhausted, why writers' appends are refused (sent in `HelloOk`, so a writer does not
    /// count this safekeeper toward a write quorum until it has room again).
    pub fn refusing(&self) -> Option<String> {
        let state = self.state.locked();
        state.is_exhausted().then(|| {
            format!(
                "{DISK_BUDGET_EXHAUSTED} on safekeeper {}: {} of log retained (budget {})",
                self.node,
                human_bytes(state.retained_bytes()),
                human_bytes(state.budget_bytes())
            )
        })
    }

    /// Admits (and reserves) a writer's append of `new_bytes` to `segment` of `tenant`, or
    /// refuses it ([`BudgetExhausted`]).
    pub fn admit(
        &self,
        tenant: TenantId,
        segment: SegmentId,
        new_bytes: u64,
    ) -> Result<(), BudgetExhausted> {
        let (admission, _, _) = self.update(|b| b.admit(new_bytes));
        match admission {
            Admission::Accept => Ok(()),
            Admission::Refuse { refusal, entered } => {
                if entered {
                    warn!(node = %self.node, %tenant, %segment, retained_log_bytes = refusal.retained_bytes,
                        needed_bytes = refusal.needed_bytes, disk_budget_bytes = refusal.budget_bytes,
                        "disk budget exhausted: refusing writers' appends until checkpoints to object storage let the log be trimmed");
                }
                Err(BudgetExhausted {
                    node: self.node.clone(),
                    refusal,
                })
            }
        }
    }

    /// See [`DiskBudget::grow`].
    pub fn grow(&self, bytes: u64) {
        self.update(|b| b.grow(bytes));
    }

    /// See [`DiskBudget::release`].
    pub fn release(&self, bytes: u64) {
        let (left, retained, budget) = self.update(|b| b.release(bytes));
        self.log_left(left, retained, budget);
    }

    /// See [`DiskBudget::resize`].
    pub fn resize(&self, before: u64, after: u64) {
        let (left, retained, budget) = self.update(|b| b.resize(before, after));
        self.log_left(left, retained, budget);
    }

    fn log_left(&self, left: bool, retained: u64, budget: u64) {
        if left {
            info!(node = %self.node, retained_log_bytes = retained, disk_budget_bytes = budget,
                "disk budget has room again: accepting writers' appends");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_reserved_until_the_budget_is_full() {
        let mut b = DiskBudget::new(100);
        assert_eq!(b.admit(60), Admission::Accept);
        assert_eq!(b.admit(40), Admission::Accept, "exactly full is within");
        assert_eq!(b.retained_bytes(), 100);
        assert_eq!(
            b.admit(1),
            Admission::Refuse {
                refusal: Refusal {
                    retained_bytes: 100,
                    needed_bytes: 1,
                    budget_bytes: 100
                },
                entered: true
            }
        );
        assert_eq!(b.retained_bytes(), 100, "a refusal reserves nothing");
        assert!(b.is_exhausted());
        assert!(
            matches!(b.admit(5), Admission::Refuse { entered: false, .. }),
            "one episode, entered once"
        );
        assert_eq!(b.admit(0), Admission::Accept, "nothing to write: accepted");
        assert!(matches!(
            b.admit(u64::MAX),
            Admission::Refuse { entered: false, .. }
        ));
    }

    #[test]
    fn a_refusal_below_the_budget_names_what_the_append_needed() {
        let mut b = DiskBudget::new(100);
        b.grow(90);
        let Admission::Refuse { refusal, entered } = b.admit(20) else {
            panic!("90 + 20 > 100 must be refused");
        };
        assert!(entered);
        assert_eq!((refusal.retained_bytes, refusal.needed_bytes), (90, 20));
        assert_eq!(
            b.admit(10),
            Admission::Accept,
            "what still fits is accepted"
        );
        assert!(b.is_exhausted(), "the state is left only by releases");
    }

    #[test]
    fn releases_leave_the_exhausted_state_once_the_last_refused_append_fits() {
        let mut b = DiskBudget::new(100);
        b.grow(95);
        assert!(matches!(b.admit(10), Admission::Refuse { .. }));
        assert!(!b.release(4), "91 + 10 > 100: still exhausted");
        assert!(b.is_exhausted());
        assert!(b.release(1), "90 + 10 fits");
        assert!(!b.is_exhausted());
        assert!(!b.release(10), "not exhausted: nothing to leave");
        assert_eq!(b.admit(10), Admission::Accept);
        assert_eq!(b.retained_bytes(), 90);
    }

    #[test]
    fn fills_count_past_the_budget_and_resize_goes_both_ways() {
        let mut b = DiskBudget::new(100);
        b.grow(150);
        assert_eq!(b.retained_bytes(), 150);
        assert!(matches!(
            b.admit(1),
            Admission::Refuse { entered: true, .. }
        ));
        assert!(!b.resize(150, 160));
        assert_eq!(b.retained_bytes(), 160);
        assert!(!b.resize(60, 60));
        assert!(b.resize(160, 0), "a trim emptied a file");
        assert_eq!(b.retained_bytes(), 0);
    }

    #[test]
    #[should_panic(expected = "the accounting missed a write")]
    fn releasing_more_than_is_retained_is_a_bug() {
        let mut b = DiskBudget::new(100);
        b.grow(10);
        b.release(11);
    }

    #[test]
    fn bytes_for_humans() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(262_144), "256.00 KiB");
        assert_eq!(human_bytes(1_095_216_660), "1.02 GiB");
        assert_eq!(human_bytes(DISK_BUDGET_BYTES_DEFAULT), "16.00 GiB");
        assert_eq!(human_bytes(u64::MAX), "16384.00 PiB");
    }

    #[test]
    fn the_refusal_is_read_only_and_says_what_to_do() {
        let metrics = Arc::new(Metrics::default());
        let budget = SharedDiskBudget::new("sk-a1".into(), 1024 * 1024, metrics.clone());
        budget.grow(1_000_000);
        assert_eq!(
            metrics.retained_log_bytes.load(Ordering::Relaxed),
            1_000_000
        );
        assert_eq!(metrics.disk_budget_bytes.load(Ordering::Relaxed), 1 << 20);
        let err = crate::error::SkError::from(
            budget
                .admit(TenantId(7), SegmentId(0), 100_000)
                .unwrap_err(),
        );
        assert_eq!(err.kind(), borealis_core::ErrorKind::ReadOnly);
        let message = err.to_string();
        assert_eq!(
            message,
            "disk budget exhausted on safekeeper sk-a1: 976.56 KiB of log retained and this \
             append needs 97.66 KiB more (budget 1.00 MiB); appends refused until checkpoints to \
             object storage let the log be trimmed"
        );
        assert!(crate::error::SkError::is_disk_budget_message(&message));
        assert!(budget.snapshot().exhausted);
        budget.resize(1_000_000, 0);
        assert_eq!(
            budget.snapshot(),
            BudgetSnapshot {
                budget_bytes: 1 << 20,
                retained_bytes: 0,
                exhausted: false
            }
        );
        budget.admit(TenantId(7), SegmentId(0), 100_000).unwrap();
        assert_eq!(metrics.retained_log_bytes.load(Ordering::Relaxed), 100_000);
    }
}
