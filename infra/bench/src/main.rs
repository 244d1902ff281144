//! # borealis-bench: Borealis against PostgreSQL and SQLite, side by side, in one run
//!
//! Borealis claims Aurora's trade: a commit costs a quorum of fsyncs on six log servers instead
//! of a page write, recovery reads states instead of replaying a log, and an idle tenant costs
//! nothing. This program measures those claims on *this* machine against the two systems a user
//! would otherwise pick, running the same workloads in the same run:
//!
//! - **Borealis**: a real cluster started with `borealis up` (six safekeeper processes with
//!   fsync, two pageservers, the gateway), driven over its HTTP API ([`borealis`]);
//! - **PostgreSQL** from the distribution's packages, `synchronous_commit=on` ([`postgres`]);
//! - **native SQLite** in process, WAL mode, `synchronous=FULL` ([`sqlite_native`]).
//!
//! The workloads and their correctness checks are in [`workload`]; how a concurrency figure is
//! measured is in [`stats`]. Around them, Borealis-specific figures: the bare fsync floor
//! ([`fsync`]), the safekeepers' append path on its own ([`safekeeper_append`]), the compute
//! sandbox against native SQLite ([`compute_bench`]), redo bytes against dirtied page bytes
//! ([`redo_sample`]), replica lag under load ([`replica_lag`]), cold start ([`cold_start`]),
//! crash recovery against log length and failover ([`recovery`]). [`report`] prints the tables
//! and writes them, with the machine ([`machine`]) and the command, to a Markdown file.
//!
//! ## Reading the figures honestly
//!
//! Everything — every server process and the load generator — shares this machine's cores and
//! its one disk. Borealis's six safekeepers fsync to the same device, where a real deployment
//! has six disks in three AZs; its client talks HTTP+JSON, the others their native protocols or
//! in-process calls. Figures are as noisy as the machine is busy: the load average is recorded at
//! the start and the end. The harness exits non-zero if any system returned a wrong answer.
//!
//! ## Running it
//!
//! ```text
//! cargo build --bins -p borealis -p gateway -p safekeeper -p pageserver -p borealis-bench
//! target/debug/borealis-bench [--quick] [--write-doc docs/benchmarks.md]
//! ```
//! (`borealis bench ...` runs the same binary.) `--skip` / `--only` choose parts.

mod borealis;
mod cold_start;
mod compute_bench;
mod cpu;
mod fsync;
mod get_page;
mod goals;
mod keyed;
mod machine;
mod postgres;
mod recovery;
mod redo_sample;
mod replica_lag;
mod report;
mod restore_read;
mod safekeeper_append;
mod scan;
mod segments;
mod sqlite_native;
mod stats;
mod workload;
mod zipf;

use anyhow::Context;
use clap::Parser;
use report::Results;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use workload::{Checks, Scale};

/// The parts of a run, in the order they run.
const PARTS: &[&str] = &[
    "fsync",
    "safekeeper",
    "compute",
    "borealis",
    "keyed",
    "replica",
    "failover",
    "cold-start",
    "zipf",
    "scan",
    "recovery",
    "segments",
    "restore",
    "getpage",
    "postgres",
    "sqlite",
];

#[derive(Parser, Debug)]
#[command(
    name = "borealis-bench",
    about = "Benchmark Borealis against PostgreSQL and native SQLite on this machine, in one run."
)]
struct Cli {
    /// A smoke run of about a minute: smaller tables, shorter measurements, a shorter log.
    #[arg(long)]
    quick: bool,
    /// Also write the tables, the machine and the command to this Markdown file.
    #[arg(long)]
    write_doc: Option<PathBuf>,
    /// Where the systems keep their data (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work directory (data and logs) afterwards.
    #[arg(long)]
    keep: bool,
    /// Parts to skip, comma-separated (fsync, safekeeper, compute, borealis, keyed, replica,
    /// failover, cold-start, zipf, scan, recovery, segments, restore, getpage, postgres, sqlite).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Run only these parts, comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Length of each closed-loop measurement (default 5s, 1s with --quick).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Concurrency levels (clients) of the transfer and read workloads.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,64")]
    clients: Vec<usize>,
    /// Accounts of the TPC-B table (default 100000, 10000 with --quick).
    #[arg(long)]
    accounts: Option<u64>,
    /// Rows of the bulk load (default 1000000, 50000 with --quick).
    #[arg(long)]
    bulk_rows: Option<u64>,
    /// Log lengths for the recovery measurement, in MB of redo written (default 10,100,1000;
    /// 2,8,32 with --quick).
    #[arg(long, value_delimiter = ',')]
    log_mb: Vec<u64>,
    /// Tenant counts for the cold-start measurement, ascending (default 10,30,50; 5,20 with
    /// --quick).
    #[arg(long, value_delimiter = ',')]
    cold_tenants: Vec<usize>,
    /// Tenants of the Zipf-reads measurement (default 2000; 100 with --quick).
    #[arg(long)]
    zipf_tenants: Option<usize>,
    /// Size of the table the many-segments comparison loads and reads, in MB (default 1024; 32
    /// with --quick).
    #[arg(long)]
    segments_mb: Option<u64>,
    /// Database sizes of the first-read-after-a-wipe measurement, in MB (default 64,512; 8,32
    /// with --quick).
    #[arg(long, value_delimiter = ',')]
    restore_mb: Vec<u64>,
    /// Size of the table the full-scan measurement reads, in MB (default 1024, issue #21's size;
    /// 16 with --quick).
    #[arg(long)]
    scan_mb: Option<u64>,
}

impl Cli {
    fn wants(&self, part: &str) -> bool {
        (self.only.is_empty() || self.only.iter().any(|p| p == part))
            && !self.skip.iter().any(|p| p == part)
    }
}

fn main() {
    let cli = Cli::parse();
    for p in cli.skip.iter().chain(&cli.only) {
        if !PARTS.contains(&p.as_str()) {
            eprintln!("error: unknown part {p:?}; parts: {}", PARTS.join(", "));
            std::process::exit(2);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    // On Ctrl-C or SIGTERM the run is dropped, and with it every process it started (the
    // cluster, PostgreSQL, safekeepers): their guards stop them.
    let outcome = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(cli) => r,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            _ = term.recv() => anyhow::bail!("terminated"),
        }
    });
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Records a part's failure: the run goes on, and ends non-zero.
fn missed(res: &mut Results, failed: &mut Vec<String>, part: &str, e: anyhow::Error) {
    eprintln!("{part}: FAILED: {e:#}");
    res.missing
        .push((part.to_string(), format!("failed: {e:#}")));
    failed.push(format!("{part}: {e:#}"));
}

async fn run(cli: Cli) -> anyhow::Result<bool> {
    let started = Instant::now();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("no directory for this executable")?
        .to_path_buf();
    let mut work_holder: Option<tempfile::TempDir> = None;
    let work: PathBuf = match &cli.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            std::fs::canonicalize(d)?
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("borealis-bench-")
                .tempdir()?;
            let p = t.path().to_path_buf();
            work_holder = Some(t);
            p
        }
    };
    let quick = cli.quick;
    let scale = Scale {
        accounts: cli.accounts.unwrap_or(if quick { 10_000 } else { 100_000 }),
        bulk_rows: cli
            .bulk_rows
            .unwrap_or(if quick { 50_000 } else { 1_000_000 }),
        clients: cli.clients.clone(),
        duration: cli
            .duration
            .unwrap_or(Duration::from_secs(if quick { 1 } else { 5 })),
    };
    anyhow::ensure!(scale.accounts >= 2, "--accounts must be at least 2");
    anyhow::ensure!(
        !scale.clients.is_empty() && !scale.clients.contains(&0),
        "--clients needs positive levels"
    );
    let log_mb: Vec<u64> = if cli.log_mb.is_empty() {
        if quick {
            vec![2, 8, 32]
        } else {
            vec![10, 100, 1000]
        }
    } else {
        cli.log_mb.clone()
    };
    let mut cold_tenants: Vec<usize> = if cli.cold_tenants.is_empty() {
        if quick {
            vec![5, 20]
        } else {
            vec![10, 30, 50]
        }
    } else {
        cli.cold_tenants.clone()
    };
    cold_tenants.sort_unstable();
    cold_tenants.dedup();
    cold_tenants.retain(|&n| n > 0);
    let short = if quick {
        Duration::from_millis(700)
    } else {
        Duration::from_secs(3)
    };
    let load_start = machine::load_average();
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    println!("borealis-bench: work directory {}", work.display());
    println!(
        "  binaries from {} ({profile} profile); load average at start {load_start}",
        bin_dir.display()
    );

    // Fail now rather than after minutes of other measurements.
    if cli.wants("postgres") {
        postgres::find_bin_dir()?;
    }

    let mut res = Results::default();
    let mut checks = Checks::default();
    let mut failed: Vec<String> = Vec::new();

    if cli.wants("fsync") {
        println!("== bare fsync of the data disk");
        match fsync::measure(&work, short) {
            Ok(mut l) => {
                println!(
                    "  4 KiB append + fdatasync: p50 {}, p99 {}",
                    report::dur(l.p50()),
                    report::dur(l.p99())
                );
                res.fsync = Some(l);
            }
            Err(e) => missed(&mut res, &mut failed, "fsync", e),
        }
    }

    if cli.wants("safekeeper") {
        println!("== safekeeper appends (real processes, borealis_wire)");
        for (members, window) in [(1, 1), (1, 32), (6, 1), (6, 32)] {
            match safekeeper_append::measure(&bin_dir, &work, members, window, short).await {
                Ok(mut f) => {
                    println!(
                        "  {members} member(s), {window} in flight: {} appends/s, p50 {}, p99 {}",
                        report::rate(f.per_sec()),
                        report::dur(f.latencies.p50()),
                        report::dur(f.latencies.p99())
                    );
                    res.appends.push(f);
                }
                Err(e) => missed(
                    &mut res,
                    &mut failed,
                    &format!("safekeeper ({members} members)"),
                    e,
                ),
            }
        }
    }

    if cli.wants("compute") {
        println!("== compute: sandbox vs native SQLite");
        let d = if quick {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(2)
        };
        let accounts = scale.accounts.min(20_000);
        match tokio::task::spawn_blocking(move || compute_bench::measure(d, accounts)).await? {
            Ok(c) => {
                for r in &c.rows {
                    println!(
                        "  {}: sandbox {} /s, native {} /s",
                        r.what,
                        report::rate(r.sandbox_per_sec),
                        report::rate(r.native_per_sec)
                    );
                }
                res.compute = Some(c);
            }
            Err(e) => missed(&mut res, &mut failed, "compute", e),
        }
    }

    let borealis_parts = [
        "borealis",
        "replica",
        "failover",
        "cold-start",
        "zipf",
        "scan",
        "recovery",
    ];
    if borealis_parts.iter().any(|p| cli.wants(p)) {
        println!("== Borealis: starting a cluster with `borealis up`");
        let missing_before = res.missing.len();
        let outcome = borealis_parts_run(
            &cli,
            &bin_dir,
            &work,
            &scale,
            &log_mb,
            &cold_tenants,
            &mut res,
            &mut checks,
        )
        .await;
        // Parts that failed inside (replica lag, failover, the redo sample) fail the run too.
        for (what, why) in &res.missing[missing_before..] {
            if why.starts_with("failed") {
                failed.push(format!("{what}: {why}"));
            }
        }
        if let Err(e) = outcome {
            missed(&mut res, &mut failed, "borealis", e);
        }
    }

    if cli.wants("segments") {
        let mb = cli.segments_mb.unwrap_or(if cli.quick { 32 } else { 1024 });
        println!("== Borealis: a {mb} MB table in one segment and in many (two clusters in turn)");
        match segments::measure(&bin_dir, &work, mb, &mut checks).await {
            Ok(f) => {
                for r in &f.runs {
                    let mut reads = r.reads.clone();
                    println!(
                        "  {}: {} segments; loaded in {:.1} s ({:.1} MB/s); point reads p50 {}, p99 {} ({} reads)",
                        r.label,
                        r.segments,
                        r.load.as_secs_f64(),
                        f.mb as f64 / r.load.as_secs_f64(),
                        report::dur(reads.p50()),
                        report::dur(reads.p99()),
                        reads.len()
                    );
                }
                res.segments = Some(f);
            }
            Err(e) => missed(&mut res, &mut failed, "segments", e),
        }
    }

    if cli.wants("restore") {
        let sizes = if !cli.restore_mb.is_empty() {
            cli.restore_mb.clone()
        } else if cli.quick {
            vec![8, 32]
        } else {
            vec![64, 512]
        };
        println!(
            "== Borealis: the first read after every pageserver is killed and wiped, at {sizes:?} MB"
        );
        match restore_read::measure(&bin_dir, &work, &sizes, &mut checks).await {
            Ok(runs) => {
                for r in &runs {
                    let mut reads = r.reads.clone();
                    println!(
                        "  {} MB: first point read after the wipe {} ({} KB by ranged reads, {} KB of whole layers by then; chain {} MB); next {} reads p50 {}; every row read back in {:.1} s",
                        r.mb,
                        report::dur(r.first_read),
                        r.ranged_at_first / 1000,
                        r.hydrated_at_first / 1000,
                        r.chain_bytes / 1_000_000,
                        reads.len(),
                        report::dur(reads.p50()),
                        r.full_read.as_secs_f64()
                    );
                }
                res.restore = runs;
            }
            Err(e) => missed(&mut res, &mut failed, "restore", e),
        }
    }

    if cli.wants("getpage") {
        println!("== Borealis: GetPage@LSN on loopback, page cached on the pageserver");
        match get_page::measure(&bin_dir, &work, scale.duration, &mut checks).await {
            Ok(mut f) => {
                println!(
                    "  one client: p50 {}, p99 {} ({} calls in {:?})",
                    report::dur(f.cached.p50()),
                    report::dur(f.cached.p99()),
                    f.cached.len(),
                    f.for_
                );
                res.get_page = Some(f);
            }
            Err(e) => missed(&mut res, &mut failed, "getpage", e),
        }
    }

    if cli.wants("postgres") {
        println!("== PostgreSQL");
        let r = async {
            let mut pg = postgres::Postgres::start(&work).await?;
            println!(
                "  {} on 127.0.0.1, synchronous_commit=on, fsync=on",
                pg.version
            );
            let fig = workload::run_suite("PostgreSQL", &mut pg, &scale, &mut checks).await?;
            pg.stop();
            anyhow::Ok(fig)
        }
        .await;
        match r {
            Ok(f) => res.postgres = Some(f),
            Err(e) => missed(&mut res, &mut failed, "postgres", e),
        }
    }

    if cli.wants("sqlite") {
        println!(
            "== native SQLite {} (WAL, synchronous=FULL)",
            rusqlite::version()
        );
        let r = async {
            let mut db = sqlite_native::NativeSqlite::create(&work.join("sqlite"))?;
            workload::run_suite("SQLite", &mut db, &scale, &mut checks).await
        }
        .await;
        match r {
            Ok(f) => res.sqlite = Some(f),
            Err(e) => missed(&mut res, &mut failed, "sqlite", e),
        }
    }

    let load_end = machine::load_average();
    let tables = report::render(&res, &goals::render(&res));
    println!("\n{tables}");
    let ok = checks.failures.is_empty() && failed.is_empty();
    let verdict = format!(
        "Checks: {} passed, {} failed; {} part(s) failed. Load average at start {load_start}, at end {load_end}. Took {:.0} s.",
        checks.passed,
        checks.failures.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    println!("{verdict}");
    for f in checks.failures.iter().chain(&failed) {
        println!("  FAILED: {f}");
    }
    if let Some(path) = &cli.write_doc {
        let doc = document(&DocInput {
            command: &command,
            work: &work,
            profile,
            quick,
            scale: &scale,
            log_mb: &log_mb,
            load_start: &load_start,
            load_end: &load_end,
            tables: &tables,
            verdict: &verdict,
            failures: &checks.failures,
            took: started.elapsed(),
        });
        std::fs::write(path, doc).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if cli.keep || !ok {
        if let Some(holder) = work_holder.take() {
            let _ = holder.keep();
        }
        println!("work directory (data and logs) kept: {}", work.display());
    }
    Ok(ok)
}

#[allow(clippy::too_many_arguments)]
async fn borealis_parts_run(
    cli: &Cli,
    bin_dir: &Path,
    work: &Path,
    scale: &Scale,
    log_mb: &[u64],
    cold_tenants: &[usize],
    res: &mut Results,
    checks: &mut Checks,
) -> anyhow::Result<()> {
    let cluster = borealis::Cluster::start(bin_dir, work, "1s").await?;
    println!(
        "  up at {} (data in {})",
        cluster.api.url,
        cluster.data_dir().display()
    );
    if cli.wants("borealis") || cli.wants("replica") || cli.wants("failover") {
        let tenant = cluster
            .api
            .create_tenant(&cluster.admin_token, "tpcb")
            .await?;
        let mut sys = borealis::BorealisSql {
            api: cluster.api.clone(),
            tenant: tenant.clone(),
            dir: cluster.data_dir().to_path_buf(),
        };
        if cli.wants("borealis") {
            let fig = workload::run_suite("Borealis", &mut sys, scale, checks).await?;
            res.borealis = Some(fig);
            match redo_sample::measure(&cluster, &tenant, scale.accounts).await {
                Ok((sample, _)) => {
                    println!(
                        "  redo: {:.0} bytes and {:.2} records (pages) per transfer",
                        sample.bytes as f64 / sample.transactions as f64,
                        sample.records as f64 / sample.transactions as f64
                    );
                    res.redo = Some(sample);
                }
                Err(e) => res
                    .missing
                    .push(("redo sample".into(), format!("failed: {e:#}"))),
            }
            if cli.wants("replica") {
                println!(
                    "  replica lag under {} transfer clients",
                    replica_lag::TRANSFER_CLIENTS
                );
                let before = workload::System::totals(&mut sys).await?;
                match replica_lag::measure(
                    &cluster,
                    &tenant,
                    scale.accounts,
                    scale.duration,
                    checks,
                )
                .await
                {
                    Ok((mut f, acked, failed)) => {
                        let after = workload::System::totals(&mut sys).await?;
                        let delta = workload::Totals {
                            history_rows: after.history_rows - before.history_rows,
                            ..after
                        };
                        workload::check_transfers(
                            "Borealis (replica load)",
                            scale.accounts,
                            acked,
                            failed,
                            &delta,
                            checks,
                        );
                        println!(
                            "  replica lag: p50 {}, p99 {} over {} answers",
                            report::dur(f.lag.p50()),
                            report::dur(f.lag.p99()),
                            f.answers
                        );
                        res.replica = Some(f);
                    }
                    Err(e) => res
                        .missing
                        .push(("replica lag".into(), format!("failed: {e:#}"))),
                }
            }
            if cli.wants("keyed") {
                println!("  commits with and without an Idempotency-Key, one client");
                match keyed::measure(
                    &cluster.api,
                    &tenant,
                    scale.accounts,
                    scale.duration,
                    checks,
                )
                .await
                {
                    Ok(mut f) => {
                        println!(
                            "  unkeyed p50 {}, keyed p50 {}, replay p50 {} ({} / {} / {})",
                            report::dur(f.plain.p50()),
                            report::dur(f.keyed.p50()),
                            report::dur(f.replays.p50()),
                            f.plain.len(),
                            f.keyed.len(),
                            f.replays.len()
                        );
                        res.keyed = Some(f);
                    }
                    Err(e) => res
                        .missing
                        .push(("keyed commits".into(), format!("failed: {e:#}"))),
                }
            }
            let before = workload::System::totals(&mut sys).await?;
            if cli.wants("failover") {
                println!("  failover: killing the gateway under load");
                match recovery::failover_under_load(
                    &cluster,
                    &tenant,
                    scale.accounts,
                    before,
                    checks,
                )
                .await
                {
                    Ok(f) => {
                        println!(
                            "  failover: kill -> first successful transfer {}",
                            report::dur(f.kill_to_first_success)
                        );
                        res.failover = Some(f);
                    }
                    Err(e) => res
                        .missing
                        .push(("failover".into(), format!("failed: {e:#}"))),
                }
            }
        } else {
            res.missing.push((
                "failover".into(),
                "needs the borealis part (its TPC-B tenant)".into(),
            ));
        }
    }
    if cli.wants("cold-start") {
        println!("== Borealis: cold start of idle tenants ({cold_tenants:?} tenants)");
        let rounds = cold_start::measure(&cluster, cold_tenants, checks).await?;
        for c in &rounds {
            let (mut cold, mut warm) = (c.cold.clone(), c.warm.clone());
            println!(
                "  {} tenants: cold p50 {}, p99 {}; warm p50 {}",
                c.tenants,
                report::dur(cold.p50()),
                report::dur(cold.p99()),
                report::dur(warm.p50())
            );
        }
        res.cold_start = rounds;
    }
    if cli.wants("zipf") {
        let tenants = cli
            .zipf_tenants
            .unwrap_or(if cli.quick { 100 } else { 2000 });
        println!(
            "== Borealis: Zipf reads over {tenants} tenants, {} clients, computes idle after 1 s",
            zipf::CLIENTS
        );
        match zipf::measure(&cluster, tenants, scale.duration, checks).await {
            Ok(f) => {
                let mut l = f.latencies.clone();
                println!(
                    "  {} reads/s, p50 {}, p99 {}; {} cold starts, {} errors",
                    report::rate(f.per_sec()),
                    report::dur(l.p50()),
                    report::dur(l.p99()),
                    f.cold_starts,
                    f.errors
                );
                res.zipf = Some(f);
            }
            Err(e) => res.missing.push((
                "Zipf reads over many tenants".into(),
                format!("failed: {e:#}"),
            )),
        }
    }
    if cli.wants("scan") {
        let mb = cli.scan_mb.unwrap_or(if cli.quick { 16 } else { 1024 });
        println!("== Borealis: full scan of a {mb} MB table (and native SQLite)");
        let f = scan::measure(&cluster, work, mb, checks).await?;
        println!(
            "  loaded {} rows in {:.1} s; Borealis scans: {}; native SQLite: {}",
            f.rows,
            f.load.as_secs_f64(),
            f.borealis
                .iter()
                .map(|r| match r {
                    Ok(d) => report::dur(*d),
                    Err(e) => format!("failed ({e})"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            f.sqlite
                .iter()
                .map(|d| report::dur(*d))
                .collect::<Vec<_>>()
                .join(", ")
        );
        res.scan = Some(f);
    }
    if cli.wants("recovery") {
        println!(
            "== Borealis: crash recovery vs log length ({} MB)",
            log_mb
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let sizes: Vec<u64> = log_mb.iter().map(|mb| mb * 1_000_000).collect();
        res.recovery = recovery::recovery_vs_log(&cluster, &sizes, checks).await?;
    }
    Ok(())
}

struct DocInput<'a> {
    command: &'a str,
    work: &'a Path,
    profile: &'a str,
    quick: bool,
    scale: &'a Scale,
    log_mb: &'a [u64],
    load_start: &'a str,
    load_end: &'a str,
    tables: &'a str,
    verdict: &'a str,
    failures: &'a [String],
    took: Duration,
}

fn document(d: &DocInput) -> String {
    let m = machine::describe(d.work);
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let pg = postgres::find_bin_dir()
        .ok()
        .and_then(|b| {
            std::process::Command::new(b.join("postgres"))
                .arg("--version")
                .output()
                .ok()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "not installed".into());
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str("Borealis against PostgreSQL and native SQLite on one machine, in one run, by `borealis-bench` \
(`infra/bench`; what each figure means is in the module docs of `infra/bench/src/`). \
Written by the harness: do not edit by hand, run it again.\n\n");
    out.push_str(&format!("- **Date**: {date}\n"));
    out.push_str(&format!(
        "- **Command**: `{}` ({} profile{})\n",
        d.command,
        d.profile,
        if d.quick { ", quick smoke run" } else { "" }
    ));
    out.push_str(&format!(
        "- **Machine**: {} CPUs ({}), {} memory, kernel {}\n",
        m.cpus, m.cpu_model, m.memory, m.kernel
    ));
    out.push_str(&format!("- **Data disk**: {}\n", m.disk));
    out.push_str(&format!(
        "- **Load average** (1, 5, 15 min): {} at the start, {} at the end\n",
        d.load_start, d.load_end
    ));
    out.push_str(&format!("- **Systems**: Borealis (this tree, `borealis up`: 6 safekeepers, 2 pageservers, gateway); {pg} (`synchronous_commit=on`, `fsync=on`, package defaults otherwise); SQLite {} via rusqlite (WAL, `synchronous=FULL`)\n", rusqlite::version()));
    out.push_str(&format!(
        "- **Scale**: {} accounts, {} bulk rows, clients {:?}, {} per measurement, recovery at {} MB of log; took {:.0} s\n\n",
        d.scale.accounts,
        d.scale.bulk_rows,
        d.scale.clients,
        humantime::format_duration(d.scale.duration),
        d.log_mb.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        d.took.as_secs_f64()
    ));
    out.push_str("## What is measured, and what is not\n\n");
    out.push_str("- All processes — the cluster, PostgreSQL, the load generator — share the machine's cores and one disk; other work on the machine during the run shows in the load average above. On a busy machine (load average above the core count, as here) single-client figures have differed by up to 2× between runs: compare systems within one run, and rerun when a figure matters.\n");
    out.push_str("- Borealis's six safekeepers fsync to the **same** device; in production each has its own disk in its own AZ. Its clients speak HTTP + JSON; PostgreSQL's speak its binary protocol; SQLite runs in process with no network at all.\n");
    out.push_str("- Latency is per operation at the client, closed loop (each client waits for its answer before the next request), so it includes queueing. p50/p99 are exact nearest-rank percentiles.\n");
    out.push_str("- Native SQLite serves writes through one shared connection (SQLite has one writer) and reads through a connection per client. It has no group commit: one fsync per transaction.\n");
    out.push_str("- Bulk load: Borealis sends each 5,000-row transaction as one `{\"batch\"}` request; PostgreSQL pipelines the 5,000 prepared INSERTs of a transaction on its connection; SQLite runs them in process.\n");
    out.push_str("- The compute comparison takes storage out of both sides: the sandbox runs on an in-memory page store, native SQLite on `:memory:`, where a commit costs almost nothing while the sandbox's commit builds redo (deltas) and hands it to the host. One statement per call mostly measures the host/guest boundary (request and result encoding); 100 statements per call compares the two SQLite builds.\n");
    out.push_str("- Safekeeper append figures come from fresh safekeeper processes driven directly over `borealis_wire` (no gateway, no SQL): the log path alone.\n");
    if d.profile.starts_with("dev") {
        out.push_str("- The binaries were built with the workspace's **dev profile**: dependencies (wasmtime, SQLite, tokio, axum, serde) are optimised, but of our own crates only `borealis-core`, `borealis-quorum` and `safekeeper` are; the gateway, pageserver and compute host run unoptimised. A `--release` build gives Borealis figures closer to what the design can do.\n");
    }
    if d.quick {
        out.push_str("- This is a `--quick` smoke run: smaller tables, shorter measurements, and a shorter log in the recovery table (not the 10 MB / 100 MB / 1 GB of the full run).\n");
    }
    out.push_str("- Replica lag is staleness as a client sees it: how long before a replica *question* the earliest acknowledged commit its answer does not show was acknowledged (0 when the answer shows every commit acknowledged before the question was sent). The gateway's own replica-lag histogram measures from the answer instead, so it includes the replica query's run time. Failover is measured by killing the gateway (which runs the writer) and restarting it: there is no standby to promote.\n\n");
    out.push_str("## Figures\n\n");
    out.push_str(d.tables);
    out.push_str("\n## Verdict\n\n");
    out.push_str(d.verdict);
    out.push('\n');
    for f in d.failures {
        out.push_str(&format!("- FAILED: {f}\n"));
    }
    out
}
