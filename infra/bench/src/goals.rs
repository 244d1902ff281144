//! Issue #21's goals ("the hot path"), each judged against this run's own figures: met, or the
//! measured gap and why.
//!
//! Every figure comes from the tables of the same run ([`crate::report::Results`]); nothing here
//! is measured on its own. The reasons are what the profiles and the CPU table say
//! (`docs/perf/README.md`); where a reason is a figure of this run, it is computed, not written.
//! A goal whose figure the run did not measure says so.

use crate::report::{dur, table, Results};
use crate::stats::Run;
use std::time::Duration;

/// One goal of issue #21 and how this run did against it.
struct Goal {
    what: &'static str,
    goal: &'static str,
    measured: String,
    /// `Some(true)`: met; `Some(false)`: not met; `None`: not measured.
    met: Option<bool>,
    /// How far off, when not met (e.g. "needs 3.1× less CPU per transfer").
    gap: String,
    why: String,
}

impl Goal {
    fn row(&self) -> Vec<String> {
        vec![
            self.what.to_string(),
            self.goal.to_string(),
            self.measured.clone(),
            match self.met {
                Some(true) => "**met**".into(),
                Some(false) => format!("gap: {}", self.gap),
                None => "not measured".into(),
            },
            self.why.clone(),
        ]
    }
}

fn not_measured(what: &'static str, goal: &'static str, why: &str) -> Goal {
    Goal {
        what,
        goal,
        measured: "–".into(),
        met: None,
        gap: String::new(),
        why: why.to_string(),
    }
}

fn run_at(runs: &[(usize, Run)], clients: usize) -> Option<&Run> {
    runs.iter().find(|(c, _)| *c == clients).map(|(_, r)| r)
}

fn cpu(run: &Run, kind: &str) -> Option<f64> {
    run.cpu_ms_per_1000
        .iter()
        .find(|(k, _)| k == kind)
        .map(|(_, ms)| *ms)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The section written into `docs/benchmarks.md`.
pub fn render(res: &Results) -> String {
    let goals = [
        throughput(res),
        commit_latency(res),
        sandbox(res),
        cold_start(res),
        zipf(res),
        recovery(res),
        get_page(res),
        scan(res),
        bulk_load(res),
    ];
    let rows: Vec<Vec<String>> = goals.iter().map(Goal::row).collect();
    let mut out = table(&["figure", "goal", "this run", "verdict", "why"], &rows);
    out.push_str(
        "\nNo goal is met by weakening durability: every commit above was acknowledged only after 4 \
         of 6 safekeepers fsynced it, on one shared disk. Where the time goes is in \
         `docs/perf/README.md` (CPU per process, profiles).\n",
    );
    out
}

fn throughput(res: &Results) -> Goal {
    let what = "TPC-B transfers, 32 clients, Borealis ÷ PostgreSQL";
    let goal = "≥ 2×";
    let (Some(b), Some(p)) = (
        res.borealis.as_ref().and_then(|f| run_at(&f.transfers, 32)),
        res.postgres.as_ref().and_then(|f| run_at(&f.transfers, 32)),
    ) else {
        return not_measured(what, goal, "a system was not measured at 32 clients");
    };
    let ratio = b.per_sec() / p.per_sec().max(1e-9);
    let why = match (cpu(b, "total"), cpu(p, "total")) {
        (Some(bt), Some(pt)) if pt > 0.0 => format!(
            "on two shared cores throughput follows CPU: Borealis spends {bt:.0} ms of CPU per \
             1,000 transfers (safekeepers {:.0}, gateway {:.0}, pageservers {:.0}, bench client \
             {:.0}) against PostgreSQL's {pt:.0}; 2× needs about {:.1}× less CPU per transfer",
            cpu(b, "safekeepers").unwrap_or(0.0),
            cpu(b, "gateway").unwrap_or(0.0),
            cpu(b, "pageservers").unwrap_or(0.0),
            cpu(b, "bench client").unwrap_or(0.0),
            bt / (pt / 2.0)
        ),
        _ => "CPU per transfer was not measured".into(),
    };
    Goal {
        what,
        goal,
        measured: format!("{ratio:.2}×"),
        met: Some(ratio >= 2.0),
        gap: format!("{:.1}× short", 2.0 / ratio.max(1e-9)),
        why: format!(
            "{why}. (The issue's second figure, pgbench's TPC-B against one HTTP batch driven \
             by wrk, is not run by this harness.)"
        ),
    }
}

fn commit_latency(res: &Results) -> Goal {
    let what = "commit p50, 1 client, ÷ bare fdatasync p50";
    let goal = "≤ 3×";
    let (Some(mut fsync), Some(b)) = (
        res.fsync.clone(),
        res.borealis.as_ref().and_then(|f| run_at(&f.transfers, 1)),
    ) else {
        return not_measured(what, goal, "fsync or single-client transfers not measured");
    };
    let f = fsync.p50();
    let c = b.latencies.clone().p50();
    let ratio = ms(c) / ms(f).max(1e-9);
    let log_path = res
        .appends
        .iter()
        .find(|a| a.members == 6 && a.quorum == 4 && a.window == 1)
        .map(|a| a.latencies.clone().p50());
    let why = match log_path {
        Some(l) => format!(
            "the log path alone (six safekeepers driven over the wire, 4 of 6 acknowledging, \
             one append in flight) takes p50 {} = {:.1}× a bare fdatasync: the 4th of six \
             fdatasyncs on one shared disk, plus six wake-ups; HTTP, JSON, the sandbox and \
             redo construction add {} on the gateway",
            dur(l),
            ms(l) / ms(f).max(1e-9),
            dur(c.saturating_sub(l))
        ),
        None => "the safekeepers' log path was not measured".into(),
    };
    Goal {
        what,
        goal,
        measured: format!("{} ÷ {} = {ratio:.1}×", dur(c), dur(f)),
        met: Some(ratio <= 3.0),
        gap: format!("{:.1}× over", ratio / 3.0),
        why,
    }
}

fn sandbox(res: &Results) -> Goal {
    let what = "SQLite in the sandbox ÷ native: TPC-B transaction / INSERT / point SELECT";
    let goal = "≥ 0.7× each";
    let Some(c) = &res.compute else {
        return not_measured(what, goal, "the compute part did not run");
    };
    let ratio = |prefix: &str| {
        c.rows
            .iter()
            .find(|r| r.what.starts_with(prefix))
            .map(|r| r.sandbox_per_sec / r.native_per_sec.max(1e-9))
    };
    let (Some(tx), Some(ins), Some(sel), many) = (
        ratio("TPC-B"),
        ratio("INSERT"),
        ratio("point SELECT, one"),
        ratio("point SELECT, 100"),
    ) else {
        return not_measured(what, goal, "a compute workload is missing");
    };
    let worst = tx.min(ins).min(sel);
    Goal {
        what,
        goal,
        measured: format!("{tx:.2}× / {ins:.2}× / {sel:.2}×"),
        met: Some(worst >= 0.7),
        gap: format!("{:.1}× short at worst", 0.7 / worst.max(1e-9)),
        why: format!(
            "two costs: SQLite compiled to wasm32 and run by wasmtime (every memory access \
             bounds-checked, no SIMD), which 100 point SELECTs per call show alone ({}); and \
             the host/guest boundary of every call (request and result encoding, copies), which \
             one statement per call adds. A commit also builds redo for every changed page. \
             SQLite's compile flags and wasmtime's settings are not yet tuned",
            many.map_or("not measured".into(), |m| format!("{m:.2}×"))
        ),
    }
}

fn cold_start(res: &Results) -> Goal {
    let what = "cold start of an idle tenant, added to a warm request";
    let goal = "≤ 2 ms, flat up to 10,000 tenants";
    let Some(c) = res.cold_start.iter().max_by_key(|c| c.tenants) else {
        return not_measured(what, goal, "the cold-start part did not run");
    };
    let added = c.cold.clone().p50().saturating_sub(c.warm.clone().p50());
    Goal {
        what,
        goal,
        measured: format!(
            "{} at {} tenants (p50 cold − p50 warm)",
            dur(added),
            c.tenants
        ),
        met: Some(ms(added) <= 2.0),
        gap: format!(
            "{:.1}× over, and tenants measured only up to {}",
            ms(added) / 2.0,
            c.tenants
        ),
        why: format!(
            "{} of {} cold starts resumed their last writer's epoch (a Hello to each \
             safekeeper, nothing fsynced; RFC 0017) instead of recovering; the gateway's \
             cold-start histogram puts writer start + instantiate + open at {} (instantiate + \
             open alone: {} in the compute table); the rest is the six connections' handshakes \
             and the first pages read from the pageserver",
            c.resumed,
            c.tenants,
            c.gateway_mean.map_or("–".into(), dur),
            res.compute
                .as_ref()
                .map_or("–".into(), |c| dur(c.start_empty.clone().p50()))
        ),
    }
}

fn zipf(res: &Results) -> Goal {
    let what = "many tenants, Zipf reads by 16 clients, computes idle after a short timeout";
    let goal = "2,000 tenants: ≥ 5,000 reads/s, p99 ≤ 20 ms";
    let Some(z) = &res.zipf else {
        return not_measured(what, goal, "the zipf part did not run");
    };
    let mut l = z.latencies.clone();
    let (rate, p99) = (z.per_sec(), l.p99());
    Goal {
        what,
        goal,
        measured: format!(
            "{:.0} reads/s, p99 {} over {} tenants ({:.0} % of reads cold)",
            rate,
            dur(p99),
            z.tenants,
            100.0 * z.cold_starts as f64 / (z.reads as f64).max(1.0)
        ),
        met: Some(z.tenants >= 2000 && rate >= 5000.0 && ms(p99) <= 20.0),
        gap: format!(
            "{:.1}× short on reads/s, {:.1}× over on p99",
            5000.0 / rate.max(1e-9),
            ms(p99) / 20.0
        ),
        why: format!(
            "a read of a tenant whose compute stopped pays a whole cold start (a writer resumed \
             or recovered, instantiate, open), and the rare tenants of a Zipf law are asked less \
             often than the idle timeout. Alone, a cold start takes {} (row above); here up to {} \
             clients cold-start at once on two cores shared with six safekeepers and two \
             pageservers, so they queue: p50 {}",
            res.cold_start
                .iter()
                .max_by_key(|c| c.tenants)
                .map_or("–".into(), |c| dur(c.cold.clone().p50())),
            z.clients,
            dur(l.p50())
        ),
    }
}

fn recovery(res: &Results) -> Goal {
    let what = "crash recovery, kill → first write";
    let goal = "≤ 100 ms, flat in log size";
    if res.recovery.is_empty() {
        return not_measured(what, goal, "the recovery part did not run");
    }
    let worst = res
        .recovery
        .iter()
        .map(|p| p.to_first_write)
        .max()
        .unwrap_or_default();
    let first = &res.recovery[0];
    let last = &res.recovery[res.recovery.len() - 1];
    let measured = res
        .recovery
        .iter()
        .map(|p| {
            format!(
                "{} at {:.0} MB",
                dur(p.to_first_write),
                p.log_bytes as f64 / 1e6
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let grows = ms(last.to_first_write) > 2.0 * ms(first.to_first_write).max(1.0);
    let after_healthy = |p: &crate::recovery::RecoveryPoint| {
        format!(
            "{} at {:.0} MB written, {:.0} MB retained",
            dur(p.to_first_write.saturating_sub(p.to_healthy)),
            p.log_bytes as f64 / 1e6,
            p.retained_bytes as f64 / 1e6
        )
    };
    let why = if grows {
        format!(
            "the gateway is healthy {} after the kill at every size; healthy → first write grows \
             ({} to {}). Recovery reads states, never records. The growth follows the log the \
             safekeepers retain, not the log written (a run whose checkpoints kept the retained \
             log at 19 MB took 55 ms at 1 GB): a trim after a checkpoint rewrites the retained \
             part of a segment file on the safekeeper's one log-writer thread \
             (`segment_log.rs` `keep_only`), and appends, the first write's included, wait \
             behind it. Not yet confirmed by a controlled run; trims that drop whole files \
             instead of rewriting are the fix",
            dur(last.to_healthy),
            after_healthy(first),
            after_healthy(last)
        )
    } else {
        format!(
            "it does not grow with the log: the gateway is healthy {} to {} after the kill \
             (process start, loading the compiled SQLite module), then recovery (states from \
             six safekeepers, the new epoch promised and then installed, each fsynced on every \
             one), instantiate, open and the write's \
             quorum commit take {} to {}. Recovery reads states, never records. A trim that \
             rewrites a large retained segment file on a safekeeper's log-writer thread at the \
             wrong moment (`segment_log.rs` `keep_only`) delays the first write by its length: \
             one earlier run took 1.2 s at 1 GB with 296 MB retained",
            dur(res
                .recovery
                .iter()
                .map(|p| p.to_healthy)
                .min()
                .unwrap_or_default()),
            dur(res
                .recovery
                .iter()
                .map(|p| p.to_healthy)
                .max()
                .unwrap_or_default()),
            after_healthy(first),
            after_healthy(last)
        )
    };
    Goal {
        what,
        goal,
        measured,
        met: Some(ms(worst) <= 100.0 && !grows),
        gap: format!("{:.1}× over at worst", ms(worst) / 100.0),
        why,
    }
}

fn get_page(res: &Results) -> Goal {
    let what = "GetPage@LSN p99, loopback, page cached on the pageserver";
    let goal = "≤ 0.2 ms";
    let Some(g) = &res.get_page else {
        return not_measured(what, goal, "the getpage part did not run");
    };
    let mut l = g.cached.clone();
    let p99 = l.p99();
    Goal {
        what,
        goal,
        measured: format!("p99 {} (p50 {})", dur(p99), dur(l.p50())),
        met: Some(ms(p99) <= 0.2),
        gap: format!("{:.2}× over", ms(p99) / 0.2),
        why: "one authenticated wire request per page: frame, CRC32C and a copy each way, a \
              tokio wake-up on each side, on two cores shared with the client"
            .into(),
    }
}

fn scan(res: &Results) -> Goal {
    let what = "`SELECT count(*)` over a large table, ÷ native SQLite on the same rows";
    let goal = "done, ≤ 10×";
    let Some(s) = &res.scan else {
        return not_measured(what, goal, "the scan part did not run");
    };
    let mut done: Vec<Duration> = s.borealis.iter().filter_map(|r| r.clone().ok()).collect();
    let mut native = s.sqlite.clone();
    if done.is_empty() || native.is_empty() {
        return Goal {
            measured: "not done".into(),
            met: Some(false),
            gap: "no scan finished".into(),
            ..not_measured(
                what,
                goal,
                "every Borealis scan failed (see the scan table)",
            )
        };
    }
    done.sort();
    native.sort();
    let (b, n) = (done[done.len() / 2], native[native.len() / 2]);
    let ratio = ms(b) / ms(n).max(1e-9);
    Goal {
        what,
        goal,
        measured: format!(
            "{ratio:.1}× ({} vs {} over {} MB{})",
            dur(b),
            dur(n),
            s.mb,
            if s.mb < 1000 {
                "; the issue asks 1 GB"
            } else {
                ""
            }
        ),
        met: Some(ratio <= 10.0 && s.mb >= 1000),
        gap: if ratio <= 10.0 {
            "measured below the issue's 1 GB".into()
        } else {
            format!("{:.1}× over", ratio / 10.0)
        },
        why: "read-ahead fetches runs of up to 64 pages in one GetPages answer, the next run \
              in the background while SQLite reads the current one (RFC 0016); what is left is \
              the pageserver's page reads and the copies through the wire, the host cache and \
              the sandbox, on two cores shared with the cluster, against native SQLite reading \
              a warm OS page cache in-process. Runs of this table have measured 8× to 14×"
            .into(),
    }
}

fn bulk_load(res: &Results) -> Goal {
    let what = "bulk load, 10 MB transactions";
    let goal = "≥ 50 MB/s";
    let Some(s) = &res.scan else {
        return not_measured(
            what,
            goal,
            "the scan part (whose table is the load) did not run",
        );
    };
    let mbps = s.mb as f64 / s.load.as_secs_f64().max(1e-9);
    Goal {
        what,
        goal,
        measured: format!(
            "{mbps:.1} MB/s ({} MB of 4,000-byte rows, {} MB per transaction)",
            s.mb,
            crate::scan::LOAD_TRANSACTION_BYTES / 1_000_000
        ),
        met: Some(mbps >= 50.0),
        gap: format!("{:.1}× short", 50.0 / mbps.max(1e-9)),
        why: "each transaction ships its pages as full images: ~10 MB of redo to each of six \
              safekeepers, 60 MB written and fsynced on one shared disk before the commit is \
              acknowledged, plus the pageservers applying it"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_without_figures_says_not_measured_for_every_goal() {
        let text = render(&Results::default());
        assert_eq!(text.matches("| not measured ").count(), 9, "{text}");
        assert!(!text.contains("**met**"));
    }
}
