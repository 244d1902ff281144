//! Turning figures into the tables printed at the end and written to `docs/benchmarks.md`.
//!
//! Tables are Markdown, column-aligned so they read well in a terminal too. A ratio column
//! `A ÷ B` is A's figure divided by B's: above 1 means A does more per second (or takes longer,
//! for latencies — each header says which).

use crate::cold_start::ColdStartFigures;
use crate::compute_bench::ComputeFigures;
use crate::recovery::{FailoverFigures, RecoveryPoint};
use crate::redo_sample::RedoSample;
use crate::replica_lag::ReplicaFigures;
use crate::safekeeper_append::AppendFigures;
use crate::scan::ScanFigures;
use crate::stats::{Latencies, Run};
use crate::workload::SystemFigures;
use std::fmt::Write as _;
use std::time::Duration;

/// Everything measured in one run; `None` where a part was skipped or failed.
#[derive(Default)]
pub struct Results {
    pub fsync: Option<Latencies>,
    pub appends: Vec<AppendFigures>,
    pub compute: Option<ComputeFigures>,
    pub borealis: Option<SystemFigures>,
    pub postgres: Option<SystemFigures>,
    pub sqlite: Option<SystemFigures>,
    pub redo: Option<RedoSample>,
    pub keyed: Option<crate::keyed::KeyedFigures>,
    /// One round per tenant count.
    pub cold_start: Vec<ColdStartFigures>,
    pub zipf: Option<crate::zipf::ZipfFigures>,
    pub scan: Option<ScanFigures>,
    pub segments: Option<crate::segments::SegmentsFigures>,
    pub get_page: Option<crate::get_page::GetPageFigures>,
    /// The first read after every pageserver was killed and wiped, per database size.
    pub restore: Vec<crate::restore_read::RestoreRun>,
    pub recovery: Vec<RecoveryPoint>,
    pub failover: Option<FailoverFigures>,
    pub replica: Option<ReplicaFigures>,
    /// Parts that could not be measured, with why.
    pub missing: Vec<(String, String)>,
}

pub fn dur(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.0} µs")
    } else if us < 10_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

pub fn rate(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if b <= 0.0 || a <= 0.0 {
        "–".into()
    } else if a / b >= 10.0 {
        format!("{:.0}×", a / b)
    } else {
        format!("{:.2}×", a / b)
    }
}

/// A column-aligned Markdown table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let parts: Vec<String> = cells
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                format!("{c}{}", " ".repeat(pad))
            })
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = line(&mut headers.iter().copied());
    out.push_str(&format!(
        "|{}|\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    ));
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

fn find(runs: &[(usize, Run)], clients: usize) -> Option<Run> {
    runs.iter()
        .find(|(c, _)| *c == clients)
        .map(|(_, r)| r.clone())
}

/// The side-by-side table of one workload (transfers or reads).
fn concurrency_table(
    res: &Results,
    pick: fn(&SystemFigures) -> &Vec<(usize, Run)>,
    unit: &str,
    with_fsync: bool,
) -> String {
    let systems: [(&str, &Option<SystemFigures>); 3] = [
        ("Borealis", &res.borealis),
        ("PostgreSQL", &res.postgres),
        ("SQLite", &res.sqlite),
    ];
    let mut levels: Vec<usize> = systems
        .iter()
        .filter_map(|(_, f)| f.as_ref())
        .flat_map(|f| pick(f).iter().map(|(c, _)| *c))
        .collect();
    levels.sort_unstable();
    levels.dedup();
    let mut headers: Vec<String> = vec!["clients".into()];
    for (name, f) in &systems {
        if f.is_some() {
            headers.push(format!("{name} {unit}"));
            headers.push("p50".into());
            headers.push("p99".into());
        }
    }
    headers.push("Borealis ÷ PostgreSQL (throughput)".into());
    headers.push("Borealis ÷ SQLite (throughput)".into());
    let fsync_p50 = res.fsync.clone().map(|mut l| l.p50());
    if with_fsync && fsync_p50.is_some() {
        headers.push("Borealis p50 ÷ fsync p50".into());
    }
    let mut rows = Vec::new();
    for c in levels {
        let mut row = vec![c.to_string()];
        let mut per_sec = [0.0f64; 3];
        let mut borealis_p50 = None;
        for (i, (_, f)) in systems.iter().enumerate() {
            let Some(f) = f else { continue };
            match find(pick(f), c) {
                Some(mut run) => {
                    per_sec[i] = run.per_sec();
                    let errors = if run.errors > 0 {
                        format!(" ({} err)", run.errors)
                    } else {
                        String::new()
                    };
                    row.push(format!("{}{errors}", rate(run.per_sec())));
                    row.push(dur(run.latencies.p50()));
                    row.push(dur(run.latencies.p99()));
                    if i == 0 {
                        borealis_p50 = Some(run.latencies.p50());
                    }
                }
                None => row.extend(["–".to_string(), "–".into(), "–".into()]),
            }
        }
        row.push(ratio(per_sec[0], per_sec[1]));
        row.push(ratio(per_sec[0], per_sec[2]));
        if with_fsync {
            if let Some(f) = fsync_p50 {
                row.push(match borealis_p50 {
                    Some(b) => ratio(b.as_secs_f64(), f.as_secs_f64()),
                    None => "–".into(),
                });
            }
        }
        rows.push(row);
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    table(&headers, &rows)
}

/// CPU per 1,000 operations of every system, workload and concurrency level ([`crate::cpu`]).
fn cpu_table(res: &Results) -> String {
    let systems = [
        ("Borealis", &res.borealis),
        ("PostgreSQL", &res.postgres),
        ("SQLite", &res.sqlite),
    ];
    let mut kinds: Vec<String> = Vec::new();
    let mut lines: Vec<(String, &str, usize, &Run)> = Vec::new();
    for (name, f) in systems {
        let Some(f) = f else { continue };
        for (workload, runs) in [("transfers", &f.transfers), ("point reads", &f.reads)] {
            for (c, run) in runs {
                for (kind, _) in &run.cpu_ms_per_1000 {
                    if kind != "total" && !kinds.contains(kind) {
                        kinds.push(kind.clone());
                    }
                }
                lines.push((name.to_string(), workload, *c, run));
            }
        }
    }
    if lines.iter().all(|l| l.3.cpu_ms_per_1000.is_empty()) {
        return "not measured\n".into();
    }
    kinds.push("total".into());
    let mut headers = vec!["system", "workload", "clients"];
    headers.extend(kinds.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|(name, workload, c, run)| {
            let mut row = vec![name.clone(), workload.to_string(), c.to_string()];
            for kind in &kinds {
                row.push(
                    run.cpu_ms_per_1000
                        .iter()
                        .find(|(k, _)| k == kind)
                        .map_or("–".into(), |(_, ms)| format!("{ms:.0}")),
                );
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// Renders every section; `goals` is the goals section ([`crate::goals`], which reads these
/// figures), placed after the figures.
pub fn render(res: &Results, goals: &str) -> String {
    let mut out = String::new();
    let mut fsync = res.fsync.clone();

    out.push_str("### Commit: TPC-B-like transfers (closed loop; latency per transaction)\n\n");
    if res.borealis.is_some() || res.postgres.is_some() || res.sqlite.is_some() {
        out.push_str(&concurrency_table(res, |f| &f.transfers, "tx/s", true));
    } else {
        out.push_str("not measured\n");
    }
    out.push_str("\n### Point reads by primary key (closed loop)\n\n");
    if res.borealis.is_some() || res.postgres.is_some() || res.sqlite.is_some() {
        out.push_str(&concurrency_table(res, |f| &f.reads, "reads/s", false));
    } else {
        out.push_str("not measured\n");
    }
    out.push_str(
        "\n### CPU per 1,000 operations, by process (ms of user + system time, from `/proc`)\n\n\
         Robust where the rates above are not: a busy machine slows a system down, but changes \
         little what each operation costs. \"bench client\" is the benchmark's own process: the \
         clients, and native SQLite itself.\n\n",
    );
    out.push_str(&cpu_table(res));

    out.push_str("\n### Bulk load (one client, transactions of 5,000 single-row INSERTs)\n\n");
    let mut rows = Vec::new();
    let borealis_rate = res
        .borealis
        .as_ref()
        .map(|f| f.bulk_rows as f64 / f.bulk_time.as_secs_f64().max(1e-9));
    for (name, f) in [
        ("Borealis", &res.borealis),
        ("PostgreSQL", &res.postgres),
        ("SQLite", &res.sqlite),
    ] {
        if let Some(f) = f {
            let r = f.bulk_rows as f64 / f.bulk_time.as_secs_f64().max(1e-9);
            rows.push(vec![
                name.to_string(),
                rate(f.bulk_rows as f64),
                dur(f.bulk_time),
                rate(r),
                borealis_rate.map_or("–".into(), |b| ratio(b, r)),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "system",
            "rows",
            "time",
            "rows/s",
            "Borealis ÷ this (rows/s)",
        ],
        &rows,
    ));

    out.push_str("\n### The physical floor, and the safekeepers' log\n\n");
    let mut rows = Vec::new();
    if let Some(f) = fsync.as_mut() {
        rows.push(vec![
            "bare 4 KiB append + fdatasync, data disk".into(),
            "–".into(),
            rate(f.len() as f64 / f.total().as_secs_f64().max(1e-9)),
            "–".into(),
            dur(f.p50()),
            dur(f.p99()),
        ]);
    }
    for a in &res.appends {
        let mut lat = a.latencies.clone();
        rows.push(vec![
            format!(
                "{} safekeeper{}, ack from {} of {}, {} in flight",
                a.members,
                if a.members == 1 { "" } else { "s" },
                a.quorum,
                a.members,
                a.window
            ),
            rate(a.per_sec()),
            rate(a.per_sec() * crate::safekeeper_append::RECORDS_PER_APPEND as f64),
            format!(
                "{:.1}",
                a.bytes as f64 / a.elapsed.as_secs_f64().max(1e-9) / 1e6
            ),
            dur(lat.p50()),
            dur(lat.p99()),
        ]);
    }
    out.push_str(&table(
        &[
            "what",
            "appends/s",
            "records/s (fsyncs/s for the floor)",
            "MB/s per member",
            "p50",
            "p99",
        ],
        &rows,
    ));

    out.push_str("\n### Redo shipped per transaction vs the pages it dirtied\n\n");
    let mut rows = Vec::new();
    if let Some(r) = &res.redo {
        if r.transactions > 0 {
            let n = r.transactions as f64;
            let bytes = r.bytes as f64 / n;
            let pages = r.records as f64 / n;
            rows.push(vec![
                format!(
                    "cluster: {} TPC-B transfers, read back from a safekeeper",
                    r.transactions
                ),
                format!("{bytes:.0} B"),
                format!("{pages:.2}"),
                format!("{:.0} B", pages * 4096.0),
                ratio(pages * 4096.0, bytes),
            ]);
        }
    }
    if let Some(c) = &res.compute {
        rows.push(vec![
            "compute alone: TPC-B transfer, redo records as stored".into(),
            format!("{:.0} B", c.transfer_redo_bytes),
            format!("{:.2}", c.transfer_pages),
            format!("{:.0} B", c.transfer_pages * 4096.0),
            ratio(c.transfer_pages * 4096.0, c.transfer_redo_bytes),
        ]);
    }
    out.push_str(&table(
        &[
            "measured",
            "redo per tx",
            "pages dirtied per tx",
            "page bytes per tx",
            "page bytes ÷ redo bytes",
        ],
        &rows,
    ));
    out.push_str("\nEach transaction's redo goes to all six safekeepers (6× the figure on the network and on disk, in total).\n");

    out.push_str("\n### Compute: SQLite in the wasmtime sandbox vs native SQLite (no storage, one thread)\n\n");
    if let Some(c) = &res.compute {
        let rows: Vec<Vec<String>> = c
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.what.to_string(),
                    rate(r.sandbox_per_sec),
                    rate(r.native_per_sec),
                    ratio(r.sandbox_per_sec, r.native_per_sec),
                ]
            })
            .collect();
        out.push_str(&table(
            &["workload", "sandbox", "native", "sandbox ÷ native"],
            &rows,
        ));
        let (mut a, mut b) = (c.start_empty.clone(), c.start_and_query.clone());
        out.push('\n');
        out.push_str(&table(
            &["compute start-up", "p50", "p99"],
            &[
                vec![
                    "compile the module (once per process)".into(),
                    dur(c.module_compile),
                    "–".into(),
                ],
                vec![
                    "instantiate + open (empty volume)".into(),
                    dur(a.p50()),
                    dur(a.p99()),
                ],
                vec![
                    "instantiate + open + first point query (populated volume, pages from memory)"
                        .into(),
                    dur(b.p50()),
                    dur(b.p99()),
                ],
            ],
        ));
        let (word, byte) = c.delta_scan_ns;
        out.push('\n');
        out.push_str(&table(
            &[
                "redo construction (`RedoBody::between`, native)",
                "ns per page",
                "pages timed",
            ],
            &[
                vec![
                    "word-wise scan (8 bytes per step)".into(),
                    format!("{word:.0}"),
                    c.delta_scan_pages.to_string(),
                ],
                vec![
                    "byte-wise scan (before; same pages, same run)".into(),
                    format!("{byte:.0}"),
                    format!("word-wise takes {}", ratio(word, byte)),
                ],
            ],
        ));
    } else {
        out.push_str("not measured\n");
    }

    out.push_str("\n### Full scan (`SELECT count(*), sum(length(pad))`, 4,000-byte rows, far larger than every cache)\n\n");
    match &res.scan {
        None => out.push_str("not measured\n"),
        Some(f) => {
            let median = |mut v: Vec<Duration>| {
                v.sort_unstable();
                v.get(v.len() / 2).copied()
            };
            let n = median(f.sqlite.clone());
            let mbps = |d: Duration| f.mb as f64 / d.as_secs_f64().max(1e-9);
            let row = |name: &str, scans: &[Result<Duration, String>]| {
                let ok: Vec<Duration> = scans
                    .iter()
                    .filter_map(|r| r.as_ref().ok().copied())
                    .collect();
                let failed: Vec<&String> = scans.iter().filter_map(|r| r.as_ref().err()).collect();
                let b = median(ok.clone());
                let notes = if failed.is_empty() {
                    format!("{} of {} scans done", ok.len(), scans.len())
                } else {
                    format!(
                        "{} of {} scans failed: {}",
                        failed.len(),
                        scans.len(),
                        failed[0]
                    )
                };
                let notes = match (b, n) {
                    (Some(b), Some(n)) => format!(
                        "{notes}; {} native SQLite's time",
                        ratio(b.as_secs_f64(), n.as_secs_f64())
                    ),
                    _ => notes,
                };
                vec![
                    name.to_string(),
                    b.map_or("–".into(), dur),
                    b.map_or("–".into(), |d| format!("{:.0}", mbps(d))),
                    notes,
                ]
            };
            let b = median(
                f.borealis
                    .iter()
                    .filter_map(|r| r.as_ref().ok().copied())
                    .collect(),
            );
            let rows = vec![
                row("Borealis (writer, read-ahead)", &f.borealis),
                row("Borealis (replica, read-ahead)", &f.replica),
                vec![
                    "native SQLite (local file, OS cache warm)".to_string(),
                    n.map_or("–".into(), dur),
                    n.map_or("–".into(), |d| format!("{:.0}", mbps(d))),
                    match (b, n) {
                        (Some(b), Some(n)) => {
                            format!("Borealis takes {}", ratio(b.as_secs_f64(), n.as_secs_f64()))
                        }
                        _ => "–".into(),
                    },
                ],
            ];
            let _ = writeln!(
                out,
                "{} MB, {} rows, loaded into Borealis in {} MB transactions in {:.1} s ({:.1} MB/s); the pageserver had applied it all {:.1} s after the last commit, and the scans started then. Median of 3 scans each.\n",
                f.mb,
                f.rows,
                crate::scan::LOAD_TRANSACTION_BYTES / 1_000_000,
                f.load.as_secs_f64(),
                f.mb as f64 / f.load.as_secs_f64().max(1e-9),
                f.catch_up.as_secs_f64()
            );
            out.push_str(&table(&["system", "scan", "MB/s", "notes"], &rows));
        }
    }

    out.push_str(
        "\n### One segment against many (issue #17: the same table, two clusters in turn)\n\n",
    );
    match &res.segments {
        None => out.push_str("not measured\n"),
        Some(f) => {
            let rows: Vec<Vec<String>> = f
                .runs
                .iter()
                .map(|r| {
                    let mut reads = r.reads.clone();
                    vec![
                        r.label.to_string(),
                        if r.args.is_empty() {
                            "`borealis up`".to_string()
                        } else {
                            format!("`borealis up {}`", r.args.join(" "))
                        },
                        r.segments.to_string(),
                        format!("{:.1}", f.mb as f64 / r.load.as_secs_f64().max(1e-9)),
                        dur(reads.p50()),
                        dur(reads.p99()),
                        reads.len().to_string(),
                    ]
                })
                .collect();
            let _ = writeln!(
                out,
                "{} MB, {} rows of 4,000 bytes, loaded in 2 MB transactions; then point reads of random rows by one client for 5 s (most from a pageserver: the table is many times the caches).\n",
                f.mb, f.rows
            );
            out.push_str(&table(
                &[
                    "volume",
                    "cluster",
                    "segments holding data",
                    "load MB/s",
                    "point read p50",
                    "p99",
                    "reads",
                ],
                &rows,
            ));
        }
    }

    out.push_str("\n### GetPage@LSN on loopback, page cached on the pageserver\n\n");
    match &res.get_page {
        None => out.push_str("not measured\n"),
        Some(f) => {
            let mut l = f.cached.clone();
            let rows = vec![vec![
                "1 (closed loop)".to_string(),
                dur(l.p50()),
                dur(l.p99()),
                l.len().to_string(),
            ]];
            let _ = writeln!(
                out,
                "Page 1 of a small tenant at its VDL and writer epoch, asked of the pageserver that serves it over the authenticated wire protocol (a gateway-role token), as the gateway's page client does; {:?} after 100 warm-up calls. Goal (issue #21): p99 ≤ 0.2 ms.\n",
                f.for_
            );
            out.push_str(&table(&["clients", "p50", "p99", "calls"], &rows));
        }
    }

    out.push_str(
        "\n### First read after every pageserver is killed and its disk wiped (issue #18)\n\n",
    );
    if res.restore.is_empty() {
        out.push_str("not measured\n");
    } else {
        let rows: Vec<Vec<String>> = res
            .restore
            .iter()
            .map(|r| {
                let mut reads = r.reads.clone();
                vec![
                    format!("{} MB ({} rows)", r.mb, r.rows),
                    format!("{:.1} MB", r.chain_bytes as f64 / 1e6),
                    dur(r.first_read),
                    format!("{:.1} KB", r.ranged_at_first as f64 / 1e3),
                    format!("{:.1} MB", r.hydrated_at_first as f64 / 1e6),
                    dur(reads.p50()),
                    format!("{:.1} s", r.full_read.as_secs_f64()),
                ]
            })
            .collect();
        out.push_str(
            "`borealis up` (one segment, two pageservers), checkpoints every 2 s; once the whole table is in a durable checkpoint, both pageservers are `kill -9`ed, their data directories deleted and started again, and the gateway restarted. The first point read of a random row pays the tenant's cold start and the segment's attach (the index, each layer's header and directory, then one ranged read per page the B-tree walk needs); \"ranged reads\" is what the pageservers had read that way when it answered, \"hydrated\" the whole layers the background hydration had downloaded meanwhile. Then 20 more point reads, and every row read back in 40 MB ranges (while the rest of the chain is hydrated in the background).\n\n",
        );
        out.push_str(&table(
            &[
                "database",
                "checkpoint chain",
                "first point read",
                "ranged reads by then",
                "hydrated by then",
                "next 20 reads p50",
                "every row read back",
            ],
            &rows,
        ));
    }

    out.push_str("\n### Commits with an `Idempotency-Key` (one client, closed loop)\n\n");
    match &res.keyed {
        None => out.push_str("not measured\n"),
        Some(f) => {
            let row = |what: &str, l: &Latencies| {
                let mut l = l.clone();
                vec![
                    what.to_string(),
                    dur(l.p50()),
                    dur(l.p99()),
                    l.len().to_string(),
                ]
            };
            let rows = vec![
                row("TPC-B transfer, no key", &f.plain),
                row(
                    "the same with a new key (transfer + key's row, then the lsn note)",
                    &f.keyed,
                ),
                row(
                    "a key sent again (answered from its record, nothing runs)",
                    &f.replays,
                ),
            ];
            out.push_str(
                "The same transfer on the TPC-B tenant, alternately without a key and with a new one; then every keyed transfer again with its key. Every repeat answered the original results and `lsn` (checked), and the history grew only by the transfers that ran.\n\n",
            );
            out.push_str(&table(&["request", "p50", "p99", "requests"], &rows));
        }
    }

    out.push_str("\n### Cold start of an idle tenant (first request → first result)\n\n");
    if res.cold_start.is_empty() {
        out.push_str("not measured\n");
    } else {
        let mut rows = Vec::new();
        for c in &res.cold_start {
            let (mut cold, mut warm) = (c.cold.clone(), c.warm.clone());
            rows.push(vec![
                c.tenants.to_string(),
                dur(cold.p50()),
                dur(cold.p99()),
                c.gateway_mean.map_or("–".into(), dur),
                format!("{} of {}", c.resumed, c.tenants),
                dur(warm.p50()),
                dur(warm.p99()),
            ]);
        }
        out.push_str(&table(
            &[
                "tenants on the cluster",
                "cold: idle tenant's first SELECT, p50",
                "p99",
                "gateway's cold-start histogram, mean (writer start + instantiate + open)",
                "writers resumed, not recovered (RFC 0017)",
                "warm: same SELECT, running compute, p50",
                "p99",
            ],
            &rows,
        ));
    }

    out.push_str("\n### Many tenants, few busy: Zipf reads (issue #21)\n\n");
    match &res.zipf {
        None => out.push_str("not measured\n"),
        Some(z) => {
            let mut l = z.latencies.clone();
            out.push_str(&table(
                &[
                    "tenants",
                    "clients",
                    "reads/s",
                    "p50",
                    "p99",
                    "reads that cold-started a compute",
                    "errors",
                    "setup (create, table, row)",
                ],
                &[vec![
                    rate(z.tenants as f64),
                    z.clients.to_string(),
                    rate(z.per_sec()),
                    dur(l.p50()),
                    dur(l.p99()),
                    format!(
                        "{} of {} ({:.0} %)",
                        rate(z.cold_starts as f64),
                        rate(z.reads as f64),
                        100.0 * z.cold_starts as f64 / (z.reads as f64).max(1.0)
                    ),
                    z.errors.to_string(),
                    dur(z.setup),
                ]],
            ));
            out.push_str("\nEach client picks a tenant by a Zipf law of exponent 1 over the tenants' ranks and reads one row by primary key; the cluster stops a compute after 1 s idle, so rarely asked tenants pay a cold start.\n");
        }
    }

    out.push_str("\n### Crash recovery vs log length (gateway SIGKILLed, restarted)\n\n");
    if res.recovery.is_empty() {
        out.push_str("not measured\n");
    } else {
        let rows: Vec<Vec<String>> = res
            .recovery
            .iter()
            .map(|p| {
                vec![
                    format!(
                        "{} (~{:.0} MB)",
                        rate(p.log_records as f64),
                        p.log_bytes as f64 / 1e6
                    ),
                    format!("{:.1} MB", p.retained_bytes as f64 / 1e6),
                    dur(p.to_healthy),
                    dur(p.to_first_write),
                    dur(p.to_first_write.saturating_sub(p.to_healthy)),
                    format!(
                        "{:.1} MB/s",
                        p.filled_bytes as f64 / 1e6 / p.fill_time.as_secs_f64().max(1e-9)
                    ),
                    dur(p.catch_up),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "log written: records (~redo bytes)",
                "retained on a safekeeper",
                "kill → gateway healthy",
                "kill → first successful write",
                "healthy → first write",
                "fill rate",
                "pageserver catch-up before the kill",
            ],
            &rows,
        ));
        out.push_str("\n\"Healthy → first write\" is recovery (states from the safekeepers, the new epoch promised with `Fence`, then installed, truncation) + instantiate + open + the write and its quorum commit; \"kill → healthy\" is the gateway process starting and compiling the SQLite module. Safekeepers trim log that a pageserver checkpoint covers, so what they retain does not grow with the history.\n");
    }

    out.push_str("\n### Failover and replicas\n\n");
    let mut rows = Vec::new();
    match &res.failover {
        Some(f) => rows.push(vec![
            format!(
                "failover: gateway SIGKILLed under {} transfer clients, restarted",
                f.clients
            ),
            format!(
                "kill → first successful transfer: {}",
                dur(f.kill_to_first_success)
            ),
            format!(
                "{} transfers acknowledged during the drill; {} attempts failed while the gateway was down (retried every 10 ms)",
                f.acked, f.failed
            ),
        ]),
        None => rows.push(vec!["failover".into(), "not measured".into(), "–".into()]),
    }
    match &res.replica {
        Some(r) => {
            let mut lag = r.lag.clone();
            rows.push(vec![
                format!(
                    "replica lag under {} transfer clients (staleness of replica answers)",
                    crate::replica_lag::TRANSFER_CLIENTS
                ),
                format!("p50 {}, p99 {}", dur(lag.p50()), dur(lag.p99())),
                format!(
                    "{} replica answers during {} transfers; read point behind the newest LSN acknowledged before the question by p50 {}, p99 {} records; gateway's replica-lag histogram mean {}",
                    r.answers,
                    r.transfers,
                    r.lag_lsn_p50,
                    r.lag_lsn_p99,
                    r.gateway_mean.map_or("–".into(), dur)
                ),
            ]);
        }
        None => rows.push(vec![
            "replica lag under TPC-B load".into(),
            "not measured".into(),
            "–".into(),
        ]),
    }
    out.push_str(&table(&["what", "figure", "notes"], &rows));

    out.push_str("\n### Issue #21's goals: met, or the gap and why\n\n");
    out.push_str(goals);

    if !res.missing.is_empty() {
        out.push_str("\n### Not measured in this run\n\n");
        for (what, why) in &res.missing {
            let _ = writeln!(out, "- {what}: {why}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(dur(Duration::from_micros(250)), "250 µs");
        assert_eq!(dur(Duration::from_micros(2500)), "2.50 ms");
        assert_eq!(dur(Duration::from_millis(250)), "250.0 ms");
        assert_eq!(dur(Duration::from_secs(3)), "3.00 s");
        assert_eq!(ratio(1.0, 4.0), "0.25×");
        assert_eq!(ratio(1.0, 0.0), "–");
    }

    #[test]
    fn tables_are_aligned() {
        let t = table(&["a", "bb"], &[vec!["ccc".into(), "d".into()]]);
        assert_eq!(t, "| a   | bb |\n|-----|----|\n| ccc | d  |\n");
    }
}
