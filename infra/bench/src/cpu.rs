//! CPU time per operation, by process, read from `/proc`.
//!
//! Throughput on a shared two-core machine moves with whatever else runs; the CPU a system spends
//! per transaction does not (much). So every closed-loop run also records, for each process of
//! the system under test and for the benchmark client itself, the user + system CPU time it used
//! during the run, divided by the operations completed: **milliseconds of CPU per 1,000
//! operations**. A change that makes a path cheaper or dearer shows here even when the machine is
//! busy and the rates are noisy.
//!
//! Read from `/proc/<pid>/stat` (fields 14–17: `utime`, `stime`, and the reaped children's
//! `cutime`, `cstime`, in clock ticks, usually 10 ms). A process counted "with descendants" adds
//! its live descendants (PostgreSQL's backends) and its reaped children. Resolution is one tick
//! per process per run, which is why runs last seconds.

use std::collections::BTreeMap;
use std::time::Duration;

/// One process to account for: a name shared by processes of one kind (their times add up), the
/// pid, and whether its descendants count too.
#[derive(Clone, Debug)]
pub struct Proc {
    pub kind: String,
    pub pid: u32,
    pub with_descendants: bool,
}

impl Proc {
    pub fn new(kind: &str, pid: u32, with_descendants: bool) -> Proc {
        Proc {
            kind: kind.to_string(),
            pid,
            with_descendants,
        }
    }
}

/// CPU time used so far, per kind.
#[derive(Clone, Debug, Default)]
pub struct Sample(BTreeMap<String, Duration>);

/// The fields of `/proc/<pid>/stat` after the command name: `(ppid, utime + stime, cutime +
/// cstime)` in ticks. The name is in parentheses and may hold spaces or parentheses itself, so
/// fields are counted from the last `)`.
fn parse_stat(text: &str) -> Option<(u32, u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17); `fields[0]`
    // is field 3.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let ppid = u32::try_from(field(4)?).ok()?;
    Some((ppid, field(14)? + field(15)?, field(16)? + field(17)?))
}

fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every live process's parent, for finding descendants.
fn parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?.0)))
        .collect()
}

#[allow(unsafe_code)] // sysconf(3), see SAFETY below
fn tick() -> Duration {
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs(1) / u32::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100)
}

/// CPU time used so far by each kind of `procs`.
pub fn sample(procs: &[Proc]) -> Sample {
    let tick = tick();
    let tree = if procs.iter().any(|p| p.with_descendants) {
        parents()
    } else {
        Vec::new()
    };
    let mut out = Sample::default();
    for p in procs {
        let Some((_, own, reaped)) = stat(p.pid) else {
            continue;
        };
        let mut ticks = own;
        if p.with_descendants {
            ticks += reaped;
            let mut frontier = vec![p.pid];
            while let Some(parent) = frontier.pop() {
                for &(child, _) in tree.iter().filter(|(_, pp)| *pp == parent) {
                    if let Some((_, t, _)) = stat(child) {
                        ticks += t;
                    }
                    frontier.push(child);
                }
            }
        }
        *out.0.entry(p.kind.clone()).or_default() +=
            tick * u32::try_from(ticks).unwrap_or(u32::MAX);
    }
    out
}

/// Milliseconds of CPU per 1,000 operations between two samples, per kind, and their total
/// (`"total"`, last). Empty when nothing was completed.
pub fn per_thousand(before: &Sample, after: &Sample, ops: u64) -> Vec<(String, f64)> {
    if ops == 0 {
        return Vec::new();
    }
    let mut out: Vec<(String, f64)> = after
        .0
        .iter()
        .map(|(kind, t)| {
            let used = t.saturating_sub(before.0.get(kind).copied().unwrap_or_default());
            (
                kind.clone(),
                used.as_secs_f64() * 1e3 * 1_000.0 / ops as f64,
            )
        })
        .collect();
    let total = out.iter().map(|(_, ms)| ms).sum();
    out.push(("total".into(), total));
    out
}

/// The benchmark's own process (the clients, and native SQLite when that is measured).
pub fn this_process() -> Proc {
    Proc::new("bench client", std::process::id(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_odd_names() {
        let line = "4242 (tokio (rt) 1) S 7 4242 4242 0 -1 4194560 100 0 0 0 250 30 4 6 20 0 8 0";
        assert_eq!(parse_stat(line), Some((7, 280, 10)));
        assert_eq!(parse_stat("1 (x) S"), None);
    }

    #[test]
    fn this_process_is_charged_for_work_it_does() {
        let me = [this_process()];
        let before = sample(&me);
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample(&me);
        let per = per_thousand(&before, &after, 1_000);
        let (kind, ms) = &per[0];
        assert_eq!(kind, "bench client");
        // 300 ms of spinning is at least 100 ms of CPU even on a loaded machine.
        assert!(*ms >= 100.0, "{per:?}");
        assert_eq!(per.last().map(|p| p.0.as_str()), Some("total"));
    }
}
