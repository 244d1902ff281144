//! The SQL workloads every system runs, and the checks that make their figures trustworthy.
//!
//! Three workloads, the same statements on every system (only the placeholder syntax differs):
//!
//! - **TPC-B-like transfer**: one transaction that moves `amount` from one account to another
//!   (two `UPDATE accounts SET balance = balance + ?`) and records it (`INSERT INTO history`).
//!   The two updates run in account-id order so that concurrent transfers cannot deadlock on
//!   PostgreSQL's row locks. Accounts carry an 80-byte filler, like TPC-B's.
//! - **Point read**: `SELECT balance FROM accounts WHERE id = ?`, one statement, no transaction.
//! - **Bulk load**: `INSERT INTO bulk (id, k, v) VALUES (?, ?, ?)` for N rows, in transactions of
//!   [`BULK_BATCH_ROWS`] rows (on Borealis: one `{"batch": [...]}` request per transaction).
//!
//! Which account a transfer touches is a pure function of `(client, seq)` ([`transfer_for`]), so
//! every system is offered the same sequence of transfers.
//!
//! **Correctness.** Money is neither made nor lost: after the transfers, `sum(balance)` must equal
//! `accounts × INITIAL_BALANCE` on every system; the history must hold at least every transfer
//! the system acknowledged, and at most those plus the ones that failed (a failed commit on
//! Borealis may be of unknown outcome, never half-applied). A bulk load must leave exactly N
//! rows with the expected `sum(k)`. Every point read must return exactly one integer. A system
//! that breaks any of these makes the harness exit non-zero ([`Checks`]).

use crate::cpu::{self, Proc};
use crate::stats::{Rng, Run};
use std::time::Duration;

/// Every account starts with this balance.
pub const INITIAL_BALANCE: i64 = 1_000;
/// Rows per transaction of a bulk load (and per Borealis batch request: below the gateway's
/// 10,000-statement and 8 MiB limits).
pub const BULK_BATCH_ROWS: u64 = 5_000;
/// Rows per transaction when the accounts table is filled.
pub const ACCOUNTS_BATCH_ROWS: u64 = 5_000;
/// The TPC-B filler of an account row.
pub const ACCOUNT_FILLER: &str =
    "tpcb-filler-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuv";

/// The SQL of one system (SQLite syntax for SQLite and Borealis, PostgreSQL's for PostgreSQL).
pub struct Dialect {
    pub create: &'static [&'static str],
    pub update_balance: &'static str,
    pub insert_history: &'static str,
    pub select_balance: &'static str,
    pub insert_account: &'static str,
    pub insert_bulk: &'static str,
}

pub const SQLITE: Dialect = Dialect {
    create: &[
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, filler TEXT NOT NULL)",
        "CREATE TABLE history (src INTEGER NOT NULL, dst INTEGER NOT NULL, amount INTEGER NOT NULL)",
        "CREATE TABLE bulk (id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL)",
    ],
    update_balance: "UPDATE accounts SET balance = balance + ?1 WHERE id = ?2",
    insert_history: "INSERT INTO history (src, dst, amount) VALUES (?1, ?2, ?3)",
    select_balance: "SELECT balance FROM accounts WHERE id = ?1",
    insert_account: "INSERT INTO accounts (id, balance, filler) VALUES (?1, ?2, ?3)",
    insert_bulk: "INSERT INTO bulk (id, k, v) VALUES (?1, ?2, ?3)",
};

pub const POSTGRES: Dialect = Dialect {
    create: &[
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL, filler TEXT NOT NULL)",
        "CREATE TABLE history (src BIGINT NOT NULL, dst BIGINT NOT NULL, amount BIGINT NOT NULL)",
        "CREATE TABLE bulk (id BIGINT PRIMARY KEY, k BIGINT NOT NULL, v TEXT NOT NULL)",
    ],
    update_balance: "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
    insert_history: "INSERT INTO history (src, dst, amount) VALUES ($1, $2, $3)",
    select_balance: "SELECT balance FROM accounts WHERE id = $1",
    insert_account: "INSERT INTO accounts (id, balance, filler) VALUES ($1, $2, $3)",
    insert_bulk: "INSERT INTO bulk (id, k, v) VALUES ($1, $2, $3)",
};

/// One transfer: `amount` from `src` to `dst`, as two balance changes in id order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub src: i64,
    pub dst: i64,
    pub amount: i64,
}

impl Transfer {
    /// `(delta, account id)` of the two updates, lower id first.
    pub fn updates(&self) -> [(i64, i64); 2] {
        let debit = (-self.amount, self.src);
        let credit = (self.amount, self.dst);
        if self.src < self.dst {
            [debit, credit]
        } else {
            [credit, debit]
        }
    }
}

/// The transfer client `client` issues as its `seq`-th operation, over `accounts` accounts.
pub fn transfer_for(client: usize, seq: u64, accounts: u64) -> Transfer {
    assert!(accounts >= 2, "a transfer needs two accounts");
    let mut rng = Rng::new(((client as u64) << 40) ^ seq ^ 0x7470_6362);
    let src = rng.below(accounts) as i64 + 1;
    let mut dst = rng.below(accounts - 1) as i64 + 1;
    if dst >= src {
        dst += 1;
    }
    let amount = rng.below(100) as i64 + 1;
    Transfer { src, dst, amount }
}

/// The account client `client` reads as its `seq`-th operation.
pub fn account_for(client: usize, seq: u64, accounts: u64) -> i64 {
    let mut rng = Rng::new(((client as u64) << 40) ^ seq ^ 0x7265_6164);
    rng.below(accounts) as i64 + 1
}

/// Bulk row `i` (0-based): `(id, k, v)`.
pub fn bulk_row(i: u64) -> (i64, i64, String) {
    let k = ((i * 7919) % 1_000_003) as i64;
    (
        i as i64 + 1,
        k,
        format!("bulk-row-{i:010}-payload-abcdefgh"),
    )
}

/// `sum(k)` over the first `n` bulk rows.
pub fn bulk_k_sum(n: u64) -> i64 {
    (0..n).map(|i| bulk_row(i).1).sum()
}

/// What a system reports about its tables after the workloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub accounts: i64,
    pub balance_sum: i64,
    pub history_rows: i64,
    pub bulk_rows: i64,
    pub bulk_k_sum: i64,
}

/// Sizes and durations of one run.
#[derive(Clone, Debug)]
pub struct Scale {
    pub accounts: u64,
    pub bulk_rows: u64,
    pub clients: Vec<usize>,
    /// How long each closed-loop measurement runs.
    pub duration: Duration,
}

/// One system under test, as the shared workload sees it.
#[allow(async_fn_in_trait)] // used generically within this binary, never as a trait object
pub trait System {
    /// Creates the tables and fills `accounts` accounts with [`INITIAL_BALANCE`].
    async fn load_accounts(&mut self, accounts: u64) -> anyhow::Result<()>;
    /// Transfers at `clients` concurrency for `duration` (closed loop).
    async fn transfers(
        &mut self,
        clients: usize,
        duration: Duration,
        accounts: u64,
    ) -> anyhow::Result<Run>;
    /// Point reads; each must see exactly one integer balance (else it counts as an error).
    async fn reads(
        &mut self,
        clients: usize,
        duration: Duration,
        accounts: u64,
    ) -> anyhow::Result<Run>;
    /// Loads bulk rows `[0, rows)`; returns how long it took.
    async fn bulk_load(&mut self, rows: u64) -> anyhow::Result<Duration>;
    async fn totals(&mut self) -> anyhow::Result<Totals>;
    /// The processes of the system, for CPU per operation ([`crate::cpu`]); the benchmark's own
    /// process is added by the caller.
    fn processes(&self) -> Vec<Proc>;
}

/// Runs `run` with CPU accounting: the run's [`Run::cpu_ms_per_1000`] is filled from `procs`.
async fn with_cpu<F: std::future::Future<Output = anyhow::Result<Run>>>(
    procs: Vec<Proc>,
    run: F,
) -> anyhow::Result<Run> {
    let before = cpu::sample(&procs);
    let mut run = run.await?;
    let after = cpu::sample(&procs);
    run.cpu_ms_per_1000 = cpu::per_thousand(&before, &after, run.ok);
    Ok(run)
}

/// The processes of `system` and the benchmark's own.
fn all_processes<S: System>(system: &S) -> Vec<Proc> {
    let mut procs = system.processes();
    procs.push(cpu::this_process());
    procs
}

/// The figures of one system.
#[derive(Clone, Debug, Default)]
pub struct SystemFigures {
    /// `(clients, run)` per concurrency level.
    pub transfers: Vec<(usize, Run)>,
    pub reads: Vec<(usize, Run)>,
    pub bulk_rows: u64,
    pub bulk_time: Duration,
    pub totals: Totals,
}

/// Runs every workload on `system`, checks the results into `checks`.
pub async fn run_suite<S: System>(
    name: &str,
    system: &mut S,
    scale: &Scale,
    checks: &mut Checks,
) -> anyhow::Result<SystemFigures> {
    let mut fig = SystemFigures::default();
    let t0 = std::time::Instant::now();
    system.load_accounts(scale.accounts).await?;
    println!(
        "  {name}: {} accounts loaded in {:.1} s",
        scale.accounts,
        t0.elapsed().as_secs_f64()
    );
    for &c in &scale.clients {
        let procs = all_processes(system);
        let run = with_cpu(procs, system.transfers(c, scale.duration, scale.accounts)).await?;
        println!(
            "  {name}: transfers, {c:>2} clients: {:>8.0} tx/s{}{}",
            run.per_sec(),
            errors_note(&run),
            cpu_note(&run)
        );
        fig.transfers.push((c, run));
    }
    let after_transfers = system.totals().await?;
    let acked: u64 = fig.transfers.iter().map(|(_, r)| r.ok).sum();
    let failed: u64 = fig.transfers.iter().map(|(_, r)| r.errors).sum();
    check_transfers(
        name,
        scale.accounts,
        acked,
        failed,
        &after_transfers,
        checks,
    );
    for &c in &scale.clients {
        let procs = all_processes(system);
        let run = with_cpu(procs, system.reads(c, scale.duration, scale.accounts)).await?;
        println!(
            "  {name}: point reads, {c:>2} clients: {:>8.0} reads/s{}{}",
            run.per_sec(),
            errors_note(&run),
            cpu_note(&run)
        );
        if run.errors == 0 {
            checks.pass();
        } else {
            checks.fail(format!(
                "{name}: {} point reads failed or returned a wrong shape ({})",
                run.errors,
                run.first_error.clone().unwrap_or_default()
            ));
        }
        fig.reads.push((c, run));
    }
    fig.bulk_rows = scale.bulk_rows;
    fig.bulk_time = system.bulk_load(scale.bulk_rows).await?;
    println!(
        "  {name}: bulk load of {} rows: {:.1} s",
        scale.bulk_rows,
        fig.bulk_time.as_secs_f64()
    );
    fig.totals = system.totals().await?;
    let t = &fig.totals;
    if t.bulk_rows == scale.bulk_rows as i64 && t.bulk_k_sum == bulk_k_sum(scale.bulk_rows) {
        checks.pass();
    } else {
        checks.fail(format!(
            "{name}: after the bulk load: {} rows with sum(k) {}, expected {} rows with sum(k) {}",
            t.bulk_rows,
            t.bulk_k_sum,
            scale.bulk_rows,
            bulk_k_sum(scale.bulk_rows)
        ));
    }
    if t.balance_sum != after_transfers.balance_sum
        || t.history_rows != after_transfers.history_rows
    {
        checks.fail(format!(
            "{name}: reads and the bulk load changed the accounts: {after_transfers:?} -> {t:?}"
        ));
    }
    Ok(fig)
}

/// `; CPU ms per 1,000: gateway 210, ...` for the progress line.
fn cpu_note(run: &Run) -> String {
    if run.cpu_ms_per_1000.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = run
        .cpu_ms_per_1000
        .iter()
        .map(|(kind, ms)| format!("{kind} {ms:.0}"))
        .collect();
    format!("; CPU ms per 1,000: {}", parts.join(", "))
}

fn errors_note(run: &Run) -> String {
    if run.errors == 0 {
        String::new()
    } else {
        format!(
            "  ({} errors; first: {})",
            run.errors,
            run.first_error.as_deref().unwrap_or("?")
        )
    }
}

/// The transfer invariants (see the module docs).
pub fn check_transfers(
    name: &str,
    accounts: u64,
    acked: u64,
    failed: u64,
    t: &Totals,
    checks: &mut Checks,
) {
    let expected_sum = accounts as i64 * INITIAL_BALANCE;
    let failures_before = checks.failures.len();
    if t.accounts != accounts as i64 {
        checks.fail(format!(
            "{name}: {} accounts, expected {accounts}",
            t.accounts
        ));
    }
    if t.balance_sum != expected_sum {
        checks.fail(format!(
            "{name}: sum(balance) is {}, expected {expected_sum}: a transfer was half-applied",
            t.balance_sum
        ));
    }
    let history = t.history_rows.max(0) as u64;
    if history < acked || history > acked + failed {
        checks.fail(format!(
            "{name}: history holds {history} transfers; {acked} were acknowledged and {failed} failed, \
             so it must hold between {acked} and {}",
            acked + failed
        ));
    }
    if checks.failures.len() == failures_before {
        checks.pass();
    }
}

/// Wrong answers found during the run; any makes the harness exit non-zero.
#[derive(Debug, Default)]
pub struct Checks {
    pub failures: Vec<String>,
    pub passed: u64,
}

impl Checks {
    pub fn fail(&mut self, what: String) {
        eprintln!("CHECK FAILED: {what}");
        self.failures.push(what);
    }

    pub fn pass(&mut self) {
        self.passed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_are_deterministic_distinct_and_ordered() {
        for seq in 0..1000 {
            let t = transfer_for(3, seq, 10);
            assert_eq!(t, transfer_for(3, seq, 10));
            assert_ne!(t.src, t.dst);
            assert!((1..=10).contains(&t.src) && (1..=10).contains(&t.dst));
            let [a, b] = t.updates();
            assert!(a.1 < b.1);
            assert_eq!(a.0 + b.0, 0);
        }
    }

    #[test]
    fn the_history_bounds_catch_lost_and_invented_commits() {
        let ok = Totals {
            accounts: 10,
            balance_sum: 10 * INITIAL_BALANCE,
            history_rows: 12,
            ..Totals::default()
        };
        let mut c = Checks::default();
        check_transfers("x", 10, 10, 2, &ok, &mut c);
        assert!(c.failures.is_empty());
        check_transfers("x", 10, 13, 0, &ok, &mut c);
        check_transfers("x", 10, 10, 1, &ok, &mut c);
        let torn = Totals {
            balance_sum: 10 * INITIAL_BALANCE - 5,
            ..ok
        };
        check_transfers("x", 10, 12, 0, &torn, &mut c);
        assert_eq!(c.failures.len(), 3);
    }
}
