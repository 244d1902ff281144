//! Checkers: hold the database, and what clients saw, to what the gateway promised.
//!
//! [`check`] takes the workload's [`History`] and the final [`DbState`] and verifies:
//!
//! 1. **Conservation.** The sum of balances equals the initial total, at the end and in every
//!    sampled read (transfers only move money).
//! 2. **No torn transaction.** Replaying the `history` table (in any order: transfers commute)
//!    from the initial balances gives the current balances exactly. A transfer whose history row
//!    is present but whose updates are not (or the other way round) breaks the equality, so a
//!    history row exists iff both of its updates took effect.
//! 3. **Nothing acknowledged is lost.** Every acknowledged transfer's history row (with the
//!    same accounts and amount) and every acknowledged insert's item is present.
//! 4. **Nothing refused appears.** Writes answered `read_only` (or another definite error) are
//!    absent; no row exists that no client tried to write.
//! 5. **Reads never go backwards.** Per client, the `lsn` of successive answers never
//!    decreases, nor do a reader's history counts; across clients, a read that started after
//!    another ended sees at least as many history rows, and at least as many as the transfers
//!    acknowledged before it started.
//!
//! Writes of unknown outcome may be present or absent, but only whole; their split is reported.
//!
//! The rest of the module measures a fault's effect: [`write_availability`] (how long writes
//! failed) and [`wait_caught_up`] (how long a safekeeper took to hold the log its peers hold).

use crate::cluster::TestCluster;
use crate::workload::{DbState, History, Outcome, Workload, WriteOp};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Violations listed per check before the rest are only counted.
const VIOLATIONS_SHOWN_MAX: usize = 5;

/// The result of [`check`]: figures, and every violation found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub expected_total: i64,
    pub final_total: i64,
    pub sampled_reads: usize,
    pub history_rows: usize,
    pub items: usize,
    pub acked_transfers: usize,
    pub acked_inserts: usize,
    /// Writes refused (`read_only`), rejected or never sent, all checked absent.
    pub failed_absent: usize,
    pub unknown_present: usize,
    pub unknown_absent: usize,
    /// `(check, violations)` in the order of the module docs; empty violations = passed.
    pub checks: Vec<(&'static str, Vec<String>)>,
}

impl CheckReport {
    pub fn violations(&self) -> usize {
        self.checks.iter().map(|(_, v)| v.len()).sum()
    }

    /// Panics with every violation, if there is any.
    #[track_caller]
    pub fn assert_ok(&self) {
        assert!(self.violations() == 0, "checkers failed:\n{self}");
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "  data: sum of balances {} (expected {}); {} history rows, {} items; acknowledged {} \
             transfers + {} inserts; {} refused/rejected/never sent, all absent; unknown outcome: \
             {} present, {} absent; {} sampled reads",
            self.final_total,
            self.expected_total,
            self.history_rows,
            self.items,
            self.acked_transfers,
            self.acked_inserts,
            self.failed_absent,
            self.unknown_present,
            self.unknown_absent,
            self.sampled_reads
        )?;
        for (name, violations) in &self.checks {
            if violations.is_empty() {
                writeln!(f, "  [ok]     {name}")?;
            } else {
                writeln!(f, "  [FAILED] {name}: {} violation(s)", violations.len())?;
                for v in violations.iter().take(VIOLATIONS_SHOWN_MAX) {
                    writeln!(f, "             {v}")?;
                }
            }
        }
        Ok(())
    }
}

/// Runs every check of the module docs.
pub fn check(
    history: &History,
    state: &DbState,
    accounts: i64,
    initial_balance: i64,
) -> CheckReport {
    let expected_total = accounts * initial_balance;
    let mut r = CheckReport {
        expected_total,
        final_total: state.balances.values().sum(),
        history_rows: state.history.len(),
        items: state.items.len(),
        ..CheckReport::default()
    };

    // 1. Conservation, at the end and in every sampled read.
    let mut v = Vec::new();
    if state.balances.len() as i64 != accounts {
        v.push(format!(
            "{} accounts at the end, {accounts} created",
            state.balances.len()
        ));
    }
    if r.final_total != expected_total {
        v.push(format!(
            "final sum of balances {} != {expected_total}",
            r.final_total
        ));
    }
    for read in &history.reads {
        if let Ok(s) = &read.result {
            r.sampled_reads += 1;
            if s.balance_sum != expected_total || s.accounts != accounts {
                v.push(format!(
                    "client {} read at t={:.2}s saw {} accounts summing to {} (lsn {})",
                    read.client,
                    read.end.as_secs_f64(),
                    s.accounts,
                    s.balance_sum,
                    s.lsn
                ));
            }
        }
    }
    r.checks
        .push(("sum of balances constant (final and sampled)", v));

    // 2. No torn transaction: replay the history from the initial balances.
    let mut v = Vec::new();
    let mut replayed: BTreeMap<i64, i64> = (1..=accounts).map(|a| (a, initial_balance)).collect();
    for &(id, src, dst, amount) in &state.history {
        match (replayed.contains_key(&src), replayed.contains_key(&dst)) {
            (true, true) => {
                *replayed.get_mut(&src).expect("checked") -= amount;
                *replayed.get_mut(&dst).expect("checked") += amount;
            }
            _ => v.push(format!(
                "history row {id} names unknown accounts {src} -> {dst}"
            )),
        }
    }
    for (account, balance) in &state.balances {
        let want = replayed.get(account).copied().unwrap_or(i64::MIN);
        if *balance != want {
            v.push(format!(
                "account {account}: balance {balance}, but replaying the history gives {want}"
            ));
        }
    }
    r.checks
        .push(("history replays to the balances (no torn transfer)", v));

    // 3 and 4: every write against what its answer promised.
    let rows: HashMap<i64, (i64, i64, i64)> = state
        .history
        .iter()
        .map(|&(id, s, d, a)| (id, (s, d, a)))
        .collect();
    let mut lost = Vec::new();
    let mut appeared = Vec::new();
    let mut attempted_transfers = HashMap::new();
    let mut attempted_items = std::collections::HashSet::new();
    for w in &history.writes {
        let present = match &w.op {
            WriteOp::Transfer {
                id,
                from,
                to,
                amount,
            } => {
                attempted_transfers.insert(*id, (*from, *to, *amount));
                match rows.get(id) {
                    None => false,
                    Some(&row) if row == (*from, *to, *amount) => true,
                    Some(row) => {
                        appeared.push(format!(
                            "history row {id} is {row:?}, but client {} wrote {:?}",
                            w.client,
                            (from, to, amount)
                        ));
                        true
                    }
                }
            }
            WriteOp::Insert { id } => {
                attempted_items.insert(*id);
                state.items.contains(id)
            }
        };
        let what = || {
            format!(
                "{:?} by client {} ({:.2}s..{:.2}s)",
                w.op,
                w.client,
                w.start.as_secs_f64(),
                w.end.as_secs_f64()
            )
        };
        match (&w.outcome, present) {
            (Outcome::Acked { .. }, true) => match w.op {
                WriteOp::Transfer { .. } => r.acked_transfers += 1,
                WriteOp::Insert { .. } => r.acked_inserts += 1,
            },
            (Outcome::Acked { lsn }, false) => {
                lost.push(format!("acknowledged at lsn {lsn} but absent: {}", what()))
            }
            (Outcome::Refused | Outcome::Rejected { .. } | Outcome::NotSent { .. }, false) => {
                r.failed_absent += 1
            }
            (Outcome::Refused | Outcome::Rejected { .. } | Outcome::NotSent { .. }, true) => {
                appeared.push(format!("answered {:?} but present: {}", w.outcome, what()))
            }
            (Outcome::Unknown { .. }, true) => r.unknown_present += 1,
            (Outcome::Unknown { .. }, false) => r.unknown_absent += 1,
        }
    }
    for &(id, ..) in &state.history {
        if !attempted_transfers.contains_key(&id) {
            appeared.push(format!("history row {id} was never written by any client"));
        }
    }
    for id in &state.items {
        if !attempted_items.contains(id) {
            appeared.push(format!("item {id} was never written by any client"));
        }
    }
    r.checks
        .push(("every acknowledged transfer and insert present", lost));
    r.checks
        .push(("nothing refused or never written present", appeared));

    // 5. Reads never go backwards.
    r.checks
        .push(("reads never go backwards", monotonic_reads(history)));
    r
}

/// Check 5 of the module docs.
fn monotonic_reads(history: &History) -> Vec<String> {
    let mut v = Vec::new();
    // Per client, in the order the client sent its requests (one at a time).
    let mut by_client: BTreeMap<usize, Vec<(Duration, u64, Option<i64>)>> = BTreeMap::new();
    for w in &history.writes {
        if let Outcome::Acked { lsn } = w.outcome {
            by_client
                .entry(w.client)
                .or_default()
                .push((w.start, lsn, None));
        }
    }
    for r in &history.reads {
        if let Ok(s) = &r.result {
            by_client
                .entry(r.client)
                .or_default()
                .push((r.start, s.lsn, Some(s.history_rows)));
        }
    }
    for (client, mut seen) in by_client {
        seen.sort_by_key(|s| s.0);
        let (mut lsn, mut rows) = (0u64, 0i64);
        for (at, l, h) in seen {
            if l < lsn {
                v.push(format!(
                    "client {client} at t={:.2}s: lsn {l} after lsn {lsn}",
                    at.as_secs_f64()
                ));
            }
            lsn = lsn.max(l);
            if let Some(h) = h {
                if h < rows {
                    v.push(format!(
                        "client {client} at t={:.2}s: {h} history rows after {rows}",
                        at.as_secs_f64()
                    ));
                }
                rows = rows.max(h);
            }
        }
    }
    // Across clients, in real time: what ended before a read started bounds what it sees.
    let mut ended: Vec<(Duration, i64, &'static str)> = history
        .reads
        .iter()
        .filter_map(|r| {
            r.result
                .as_ref()
                .ok()
                .map(|s| (r.end, s.history_rows, "a read saw"))
        })
        .collect();
    let mut acked: Vec<Duration> = history
        .writes
        .iter()
        .filter(|w| w.outcome.is_acked() && matches!(w.op, WriteOp::Transfer { .. }))
        .map(|w| w.end)
        .collect();
    acked.sort();
    ended.sort_by_key(|e| e.0);
    // prefix_max[i] = the most rows seen by reads ended[..=i].
    let prefix_max: Vec<i64> = ended
        .iter()
        .scan(0i64, |m, e| {
            *m = (*m).max(e.1);
            Some(*m)
        })
        .collect();
    for r in &history.reads {
        let Ok(s) = &r.result else { continue };
        let before = ended.partition_point(|e| e.0 < r.start);
        if before > 0 && prefix_max[before - 1] > s.history_rows {
            v.push(format!(
                "read by client {} started t={:.2}s saw {} history rows; an earlier read had seen {}",
                r.client, r.start.as_secs_f64(), s.history_rows, prefix_max[before - 1]
            ));
        }
        let acked_before = acked.partition_point(|&e| e < r.start) as i64;
        if acked_before > s.history_rows {
            v.push(format!(
                "read by client {} started t={:.2}s saw {} history rows; {acked_before} transfers were acknowledged before it",
                r.client, r.start.as_secs_f64(), s.history_rows
            ));
        }
    }
    v
}

/// How writes fared after a fault.
#[derive(Clone, Debug, Default)]
pub struct WriteAvailability {
    /// Writes that ended after the fault without an acknowledgement.
    pub failed: usize,
    /// When the first of them ended.
    pub first_failure: Option<Duration>,
    /// When the first write acknowledged after that ended.
    pub first_success_after: Option<Duration>,
    /// The longest time without any acknowledged write, from the fault to `until`.
    pub longest_stall: Duration,
    pub until: Duration,
}

impl WriteAvailability {
    /// First failed to first succeeded write; `None` if writes never failed.
    pub fn unavailable(&self) -> Option<Duration> {
        let first = self.first_failure?;
        Some(
            self.first_success_after
                .unwrap_or(self.until)
                .saturating_sub(first),
        )
    }
}

impl std::fmt::Display for WriteAvailability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.first_failure, self.first_success_after) {
            (None, _) => write!(f, "no write failed")?,
            (Some(a), Some(b)) => write!(
                f,
                "{} writes failed; unavailable {:.2} s (first failure t={:.2}s, next success t={:.2}s)",
                self.failed,
                (b.saturating_sub(a)).as_secs_f64(),
                a.as_secs_f64(),
                b.as_secs_f64()
            )?,
            (Some(a), None) => write!(
                f,
                "{} writes failed; unavailable from t={:.2}s to the end of the phase (t={:.2}s)",
                self.failed,
                a.as_secs_f64(),
                self.until.as_secs_f64()
            )?,
        }
        write!(
            f,
            "; longest stall between acknowledged writes {:.2} s",
            self.longest_stall.as_secs_f64()
        )
    }
}

/// Write availability between `from` (the fault) and `until`.
pub fn write_availability(history: &History, from: Duration, until: Duration) -> WriteAvailability {
    let in_window = |end: Duration| end >= from && end <= until;
    let failed: Vec<Duration> = history
        .writes
        .iter()
        .filter(|w| !w.outcome.is_acked() && in_window(w.end))
        .map(|w| w.end)
        .collect();
    let mut acked: Vec<Duration> = history
        .writes
        .iter()
        .filter(|w| w.outcome.is_acked() && in_window(w.end))
        .map(|w| w.end)
        .collect();
    acked.sort();
    let first_failure = failed.iter().min().copied();
    let first_success_after = first_failure.and_then(|f| acked.iter().find(|&&a| a > f).copied());
    let mut longest_stall = Duration::ZERO;
    let mut last = from;
    for &a in acked.iter().chain(std::iter::once(&until)) {
        longest_stall = longest_stall.max(a.saturating_sub(last));
        last = a;
    }
    WriteAvailability {
        failed: failed.len(),
        first_failure,
        first_success_after,
        longest_stall,
        until,
    }
}

/// The longest time in `[from, until]` during which no read succeeded.
pub fn longest_read_stall(history: &History, from: Duration, until: Duration) -> Duration {
    let mut ok: Vec<Duration> = history
        .reads
        .iter()
        .filter(|r| r.result.is_ok() && r.end >= from && r.end <= until)
        .map(|r| r.end)
        .collect();
    ok.sort();
    let mut longest = Duration::ZERO;
    let mut last = from;
    for &t in ok.iter().chain(std::iter::once(&until)) {
        longest = longest.max(t.saturating_sub(last));
        last = t;
    }
    longest
}

/// Reads that ended in `[from, until]`: `(ok, failed)`, and the failures' error codes.
pub fn reads_between(
    history: &History,
    from: Duration,
    until: Duration,
) -> (usize, usize, Vec<String>) {
    let (mut ok, mut failed, mut codes) = (0, 0, Vec::new());
    for r in history
        .reads
        .iter()
        .filter(|r| r.end >= from && r.end <= until)
    {
        match &r.result {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                if !codes.contains(e) {
                    codes.push(e.clone());
                }
            }
        }
    }
    (ok, failed, codes)
}

/// Write outcomes that ended in `[from, until]`, by kind: `(acked, refused, rejected or never
/// sent, unknown)`.
pub fn writes_between(
    history: &History,
    from: Duration,
    until: Duration,
) -> (usize, usize, usize, usize) {
    let mut n = (0, 0, 0, 0);
    for w in history
        .writes
        .iter()
        .filter(|w| w.end >= from && w.end <= until)
    {
        match w.outcome {
            Outcome::Acked { .. } => n.0 += 1,
            Outcome::Refused => n.1 += 1,
            Outcome::Rejected { .. } | Outcome::NotSent { .. } => n.2 += 1,
            Outcome::Unknown { .. } => n.3 += 1,
        }
    }
    n
}

/// The distinct kinds of reasons given for writes of unknown outcome, with how often each was
/// given (numbers in messages, such as LSNs and epochs, are folded into `#`).
pub fn unknown_reasons(history: &History) -> Vec<(String, usize)> {
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for w in &history.writes {
        if let Outcome::Unknown { why } = &w.outcome {
            let mut kind = String::new();
            for ch in why.chars() {
                if ch.is_ascii_digit() {
                    if !kind.ends_with('#') {
                        kind.push('#');
                    }
                } else if ch != '\\' && ch != '"' {
                    kind.push(ch);
                }
            }
            let kind: String = kind.chars().take(110).collect();
            match reasons.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, n)) => *n += 1,
                None => reasons.push((kind, 1)),
            }
        }
    }
    reasons
}

/// The SCL of segment 0 of `tenant` (16 hex digits) in a safekeeper's `/status`; 0 if the
/// safekeeper does not hold the tenant.
pub fn scl_of(status: &Value, tenant: &str) -> u64 {
    segment_scls(status, tenant)
        .into_iter()
        .filter(|&(segment, _)| segment == 0)
        .map(|(_, scl)| scl)
        .max()
        .unwrap_or(0)
}

/// The tenant's id as safekeepers name it (16 hex digits), from the gateway.
pub async fn tenant_hex(cluster: &TestCluster, tenant: &str) -> String {
    let status = cluster.tenant_status(tenant).await;
    status["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id for tenant {tenant}: {status}"))
        .to_string()
}

/// How a safekeeper caught up with its peers, on every segment of the tenant its groups hold.
#[derive(Clone, Debug)]
pub struct CatchUp {
    pub node: String,
    /// How many segments of the tenant it is a member of (that hold data).
    pub segments: usize,
    /// Its SCL of its lowest such segment when the wait began (segment 0 on a one-segment
    /// volume)...
    pub scl_before: u64,
    /// ...the highest SCL among that segment's other members when the wait began...
    pub target: u64,
    /// ...and its SCL of that segment when it had caught up on every segment.
    pub scl_after: u64,
    pub took: Duration,
    /// `safekeeper_gossip_records_repaired_total` of the node's current process.
    pub records_repaired: u64,
    pub crc_failures: u64,
    /// Size of its segment files of the tenant afterwards.
    pub bytes: u64,
    /// Where its log of that segment is trimmed (after a pageserver checkpoint; 0: never).
    pub base: u64,
}

impl std::fmt::Display for CatchUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} SCL {} -> {} (peers' {}){} in {:.2} s; {} records repaired from peers, {} CRC failures, segment files {} KiB{}",
            self.node,
            self.scl_before,
            self.scl_after,
            self.target,
            if self.segments > 1 {
                format!(" on the first of {} segments it holds, all caught up", self.segments)
            } else {
                String::new()
            },
            self.took.as_secs_f64(),
            self.records_repaired,
            self.crc_failures,
            self.bytes / 1024,
            if self.base > 0 {
                format!(" (log trimmed through lsn {})", self.base)
            } else {
                String::new()
            }
        )
    }
}

/// Each segment of `tenant` that some safekeeper holds, with the SCL of each safekeeper that
/// answers (`None`: it holds nothing of that segment).
async fn scls_by_segment(
    cluster: &TestCluster,
    tenant: &str,
) -> BTreeMap<u64, BTreeMap<String, u64>> {
    let mut out: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for id in cluster.node_ids("safekeeper") {
        let Some(status) = cluster.node_status(&id).await else {
            continue;
        };
        for (segment, scl) in segment_scls(&status, tenant) {
            out.entry(segment).or_default().insert(id.clone(), scl);
        }
    }
    out
}

/// `(segment, SCL)` of every segment of `tenant` in a safekeeper's `/status`.
fn segment_scls(status: &Value, tenant: &str) -> Vec<(u64, u64)> {
    status["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["tenant"] == tenant)
        .flat_map(|t| t["segments"].as_array().into_iter().flatten())
        .filter_map(|s| Some((s["segment"].as_u64()?, s["scl"].as_u64()?)))
        .collect()
}

/// The members (node ids, member order) of segment `segment`'s protection group of tenant
/// `tenant` (16 hex digits), computed as every node computes it (`borealis_core::placement`)
/// from the pool in `cluster.json`, listed AZ by AZ.
pub fn group_of(cluster: &TestCluster, tenant: &str, segment: u64) -> Vec<String> {
    let pool = cluster.node_ids("safekeeper");
    let azs = borealis_core::placement::ordered_pool_azs(pool.len())
        .unwrap_or_else(|e| panic!("the pool {pool:?}: {e}"));
    let tenant: borealis_core::TenantId = tenant
        .parse()
        .unwrap_or_else(|e| panic!("tenant id {tenant:?}: {e}"));
    borealis_core::placement::choose_group(
        tenant,
        borealis_core::SegmentId(u32::try_from(segment).expect("segment number fits u32")),
        &azs,
    )
    .0
    .iter()
    .map(|&n| pool[n].clone())
    .collect()
}

/// Waits (at most `timeout`) until safekeeper `node` holds the log of `tenant` up to the highest
/// SCL its peers have now, on every segment whose group it is a member of. `Err` says where
/// everyone stood when time ran out.
pub async fn wait_caught_up(
    cluster: &TestCluster,
    node: &str,
    tenant: &str,
    timeout: Duration,
) -> Result<CatchUp, String> {
    let started = Instant::now();
    // Per segment of `node`'s: the highest SCL among the other members.
    let targets: BTreeMap<u64, u64> = scls_by_segment(cluster, tenant)
        .await
        .into_iter()
        .filter(|(segment, _)| {
            group_of(cluster, tenant, *segment)
                .iter()
                .any(|m| m == node)
        })
        .map(|(segment, scls)| {
            let target = scls
                .iter()
                .filter(|(id, _)| id.as_str() != node)
                .map(|(_, &scl)| scl)
                .max()
                .unwrap_or(0);
            (segment, target)
        })
        .collect();
    let first = targets.keys().next().copied();
    let mut scl_before = None;
    loop {
        let status = cluster.node_status(node).await;
        let held: BTreeMap<u64, u64> = status
            .as_ref()
            .map(|s| segment_scls(s, tenant).into_iter().collect())
            .unwrap_or_default();
        let scl_first = first.map_or(0, |f| held.get(&f).copied().unwrap_or(0));
        if scl_before.is_none() && status.is_some() {
            scl_before = Some(scl_first);
        }
        let behind: Vec<(u64, u64, u64)> = targets
            .iter()
            .filter_map(|(&segment, &target)| {
                let scl = held.get(&segment).copied().unwrap_or(0);
                (scl < target).then_some((segment, scl, target))
            })
            .collect();
        if let (true, Some(status)) = (behind.is_empty(), &status) {
            let bytes = status["tenants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["tenant"] == tenant)
                .flat_map(|t| t["segments"].as_array().into_iter().flatten())
                .filter_map(|s| s["bytes"].as_u64())
                .sum();
            let metric = |name: &'static str| async move {
                cluster.node_metric(node, name).await.unwrap_or(0.0) as u64
            };
            return Ok(CatchUp {
                node: node.to_string(),
                segments: targets.len(),
                scl_before: scl_before.unwrap_or(0),
                target: first.map_or(0, |f| targets[&f]),
                scl_after: scl_first,
                took: started.elapsed(),
                records_repaired: metric("safekeeper_gossip_records_repaired_total").await,
                crc_failures: metric("safekeeper_crc_failures_total").await,
                bytes,
                base: first.map_or(0, |f| base_of_segment(status, tenant, f)),
            });
        }
        if started.elapsed() > timeout {
            let mut where_ = String::new();
            for (segment, _, target) in behind.iter().take(4) {
                let _ = write!(where_, " segment {segment} (target {target}):");
                for id in group_of(cluster, tenant, *segment) {
                    let scl = cluster.node_status(&id).await.map(|s| {
                        segment_scls(&s, tenant)
                            .into_iter()
                            .find(|x| x.0 == *segment)
                            .map(|x| x.1)
                    });
                    let _ = write!(where_, " {id}={scl:?}");
                }
                where_.push(';');
            }
            return Err(format!(
                "{node} did not catch up on {} of its {} segments within {} s; SCLs now:{where_}",
                behind.len(),
                targets.len(),
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A drill's printout, written straight to stderr when emitted so that it shows in the normal
/// test output (the test harness captures only `print!`/`eprint!`).
pub struct DrillReport {
    text: String,
}

impl DrillReport {
    pub fn new(title: &str) -> DrillReport {
        DrillReport {
            text: format!("\n=== {title}\n"),
        }
    }

    /// Adds a line (indented) to the report.
    pub fn line(&mut self, line: impl AsRef<str>) {
        for l in line.as_ref().lines() {
            let _ = writeln!(self.text, "  {}", l.trim_start());
        }
    }

    /// A line `label: <what came of it>`, whether it went well (`Ok`) or not (`Err`).
    pub fn outcome<T: std::fmt::Display, E: std::fmt::Display>(
        &mut self,
        label: &str,
        result: &Result<T, E>,
    ) {
        match result {
            Ok(v) => self.line(format!("{label}: {v}")),
            Err(e) => self.line(format!("{label}: {e}")),
        }
    }

    /// Adds the events the drill marked on the workload's timeline.
    pub fn timeline(&mut self, history: &History) {
        for (at, what) in &history.events {
            let _ = writeln!(self.text, "  t={:>6.2}s  {what}", at.as_secs_f64());
        }
    }

    /// Adds a checker report as it prints.
    pub fn checks(&mut self, report: &CheckReport) {
        let _ = write!(self.text, "  checkers:\n{report}");
    }

    /// Writes the report to stderr, bypassing the test harness's capture.
    pub fn emit(&self) {
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(self.text.as_bytes());
        let _ = err.flush();
    }
}

/// The lines of a node's log that contain `needle`, without terminal colour codes.
pub fn log_lines(path: &std::path::Path, needle: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(strip_ansi)
        .filter(|l| l.contains(needle))
        .collect()
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out.trim().to_string()
}

/// Where a safekeeper trimmed `tenant`'s segment 0 after a pageserver checkpoint (its `/status`
/// `base`; 0 if it never trimmed, or does not report it).
pub fn base_of(status: &Value, tenant: &str) -> u64 {
    base_of_segment(status, tenant, 0)
}

/// Where a safekeeper's log of `tenant`'s segment `segment` is trimmed (0: never, or not held).
pub fn base_of_segment(status: &Value, tenant: &str, segment: u64) -> u64 {
    status["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["tenant"] == tenant)
        .flat_map(|t| t["segments"].as_array().into_iter().flatten())
        .filter(|s| s["segment"] == segment)
        .filter_map(|s| s["base"].as_u64())
        .max()
        .unwrap_or(0)
}

/// The highest SCL and the highest trim base among the safekeepers other than `except` that
/// answer now.
pub async fn peers_scl_and_base(cluster: &TestCluster, except: &str, tenant: &str) -> (u64, u64) {
    let (mut scl, mut base) = (0, 0);
    for id in cluster.node_ids("safekeeper") {
        if id == except {
            continue;
        }
        if let Some(s) = cluster.node_status(&id).await {
            scl = scl.max(scl_of(&s, tenant));
            base = base.max(base_of(&s, tenant));
        }
    }
    (scl, base)
}

/// The segment log of `tenant`'s segment 0 on safekeeper `node` (docs/formats/segment-log.md).
pub fn segment_file(cluster: &TestCluster, node: &str, tenant: &str) -> std::path::PathBuf {
    cluster
        .node_info(node)
        .data_dir
        .join("tenants")
        .join(tenant)
        .join("seg-0.log")
}

/// A safekeeper's segment file read back with the node stopped: whether it holds every record
/// from its trim base to its SCL, each passing its CRC. LSNs are consecutive (one per page
/// change) within one writer epoch, so for a drill with one epoch "every" is a range.
#[derive(Debug)]
pub struct DiskReadBack {
    /// Records that decoded, from the start of the file.
    pub records: usize,
    /// Where decoding first failed, if it did.
    pub scan_error: Option<String>,
    /// The range expected: `(base, scl]`.
    pub base: u64,
    pub scl: u64,
    /// LSNs of that range the file does not hold.
    pub missing: Vec<u64>,
}

impl DiskReadBack {
    /// Stops `node`, reads its segment file of `tenant`, starts it again; expects the range of
    /// `caught_up` (nothing, if it never caught up).
    pub fn of(
        cluster: &TestCluster,
        node: &str,
        tenant: &str,
        caught_up: Option<&CatchUp>,
    ) -> Self {
        cluster.node("stop", node);
        let (on_disk, scan_error) = scan_segment_file(&segment_file(cluster, node, tenant));
        cluster.node("start", node);
        let held: std::collections::BTreeSet<u64> = on_disk.iter().map(|r| r.2).collect();
        let (base, scl) = caught_up
            .map(|cu| (cu.base, cu.scl_after))
            .unwrap_or_default();
        DiskReadBack {
            records: on_disk.len(),
            scan_error,
            base,
            scl,
            missing: (base + 1..=scl).filter(|l| !held.contains(l)).collect(),
        }
    }

    /// Panics unless the file scanned cleanly and holds the whole range.
    #[track_caller]
    pub fn assert_complete(&self, node: &str) {
        assert_eq!(
            self.scan_error, None,
            "{node}'s segment file does not scan cleanly: a corrupt or torn record is on its disk"
        );
        assert!(
            self.missing.is_empty(),
            "{node}'s disk lacks {} records between its base {} and its SCL {}, first {:?}",
            self.missing.len(),
            self.base,
            self.scl,
            &self.missing[..self.missing.len().min(5)]
        );
    }
}

impl std::fmt::Display for DiskReadBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} records", self.records)?;
        if let Some(e) = &self.scan_error {
            write!(f, ", then a bad one at {e}")?;
        }
        write!(
            f,
            "; lsns {}..={} missing: {}",
            self.base + 1,
            self.scl,
            self.missing.len()
        )
    }
}

/// One record of a segment file: `(offset, encoded length, lsn)`.
pub type LocatedRecord = (usize, usize, u64);

/// Every record of a segment file from its start, decoded with all the codec's checks (CRC
/// included), and where decoding first failed, if it did. Read it only while its safekeeper is
/// stopped: a running one may be half-way through an append.
pub fn scan_segment_file(path: &std::path::Path) -> (Vec<LocatedRecord>, Option<String>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match borealis_core::redo::RedoRecord::decode(&bytes[at..]) {
            Ok((r, len)) => {
                records.push((at, len, r.lsn.0));
                at += len;
            }
            Err(e) => {
                return (
                    records,
                    Some(format!("offset {at} of {}: {e}", bytes.len())),
                )
            }
        }
    }
    (records, None)
}

impl Workload {
    /// Reads the final state and holds it and the whole history to every checker.
    pub async fn check(&self) -> (History, CheckReport) {
        let state = self.read_state().await;
        let history = self.history();
        let checks = check(
            &history,
            &state,
            self.config.accounts,
            self.config.initial_balance,
        );
        (history, checks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{ReadRecord, ReadSample, WriteRecord};
    use std::collections::BTreeSet;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn transfer(id: i64, from: i64, to: i64, amount: i64, t: u64, outcome: Outcome) -> WriteRecord {
        WriteRecord {
            client: 0,
            op: WriteOp::Transfer {
                id,
                from,
                to,
                amount,
            },
            start: secs(t),
            end: secs(t) + Duration::from_millis(500),
            outcome,
        }
    }

    fn read(client: usize, t: u64, lsn: u64, history_rows: i64, balance_sum: i64) -> ReadRecord {
        ReadRecord {
            client,
            start: secs(t),
            end: secs(t) + Duration::from_millis(500),
            result: Ok(ReadSample {
                lsn,
                accounts: 2,
                balance_sum,
                history_rows,
            }),
        }
    }

    /// Two accounts of 100: transfer 1 (10 from 1 to 2) acknowledged, 2 refused, 3 unknown and
    /// absent; two reads, in order.
    fn good() -> (History, DbState) {
        let history = History {
            writes: vec![
                transfer(1, 1, 2, 10, 0, Outcome::Acked { lsn: 5 }),
                transfer(2, 2, 1, 7, 1, Outcome::Refused),
                transfer(
                    3,
                    2,
                    1,
                    3,
                    2,
                    Outcome::Unknown {
                        why: "reset".into(),
                    },
                ),
            ],
            reads: vec![read(1, 1, 5, 1, 200), read(2, 3, 6, 1, 200)],
            events: vec![],
        };
        let state = DbState {
            lsn: 6,
            balances: [(1, 90), (2, 110)].into_iter().collect(),
            history: vec![(1, 1, 2, 10)],
            items: BTreeSet::new(),
        };
        (history, state)
    }

    fn failed(report: &CheckReport) -> Vec<&'static str> {
        report
            .checks
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(name, _)| *name)
            .collect()
    }

    #[test]
    fn a_consistent_history_passes() {
        let (h, s) = good();
        let r = check(&h, &s, 2, 100);
        assert_eq!(r.violations(), 0, "{r}");
        assert_eq!(
            (r.acked_transfers, r.failed_absent, r.unknown_absent),
            (1, 1, 1)
        );
    }

    #[test]
    fn a_torn_transfer_fails_the_replay() {
        let (h, mut s) = good();
        // The unknown transfer 3 half-applied: its updates, not its history row.
        s.balances = [(1, 93), (2, 107)].into_iter().collect();
        assert_eq!(
            failed(&check(&h, &s, 2, 100)),
            vec!["history replays to the balances (no torn transfer)"]
        );
    }

    #[test]
    fn a_lost_acknowledged_transfer_fails() {
        let (h, mut s) = good();
        s.history.clear();
        s.balances = [(1, 100), (2, 100)].into_iter().collect();
        assert!(failed(&check(&h, &s, 2, 100))
            .contains(&"every acknowledged transfer and insert present"));
    }

    #[test]
    fn a_refused_transfer_that_appears_fails() {
        let (h, mut s) = good();
        s.history.push((2, 2, 1, 7));
        s.balances = [(1, 97), (2, 103)].into_iter().collect();
        assert_eq!(
            failed(&check(&h, &s, 2, 100)),
            vec!["nothing refused or never written present"]
        );
    }

    #[test]
    fn money_created_in_a_sampled_read_fails() {
        let (mut h, s) = good();
        h.reads.push(read(1, 4, 7, 1, 201));
        assert_eq!(
            failed(&check(&h, &s, 2, 100)),
            vec!["sum of balances constant (final and sampled)"]
        );
    }

    #[test]
    fn reads_going_backwards_fail() {
        // Across clients in real time: a later read sees fewer rows than an earlier one.
        let (mut h, s) = good();
        h.reads.push(read(3, 5, 7, 0, 200));
        assert_eq!(
            failed(&check(&h, &s, 2, 100)),
            vec!["reads never go backwards"]
        );
        // Per client: an LSN that goes down.
        let (mut h, s) = good();
        h.reads.push(read(1, 4, 4, 1, 200));
        assert_eq!(
            failed(&check(&h, &s, 2, 100)),
            vec!["reads never go backwards"]
        );
    }

    #[test]
    fn availability_is_first_failure_to_next_success() {
        let mut h = History::default();
        h.writes
            .push(transfer(1, 1, 2, 1, 1, Outcome::Acked { lsn: 1 }));
        h.writes.push(transfer(2, 1, 2, 1, 3, Outcome::Refused));
        h.writes
            .push(transfer(3, 1, 2, 1, 8, Outcome::Acked { lsn: 2 }));
        let a = write_availability(&h, secs(2), secs(10));
        assert_eq!(a.failed, 1);
        assert_eq!(a.unavailable(), Some(secs(5)));
        assert_eq!(a.longest_stall, Duration::from_millis(6_500));
    }
}
