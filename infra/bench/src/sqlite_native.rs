//! Native SQLite, in this process, on the local disk: the single-node baseline.
//!
//! Configured for durability comparable to the others: `journal_mode=WAL`, `synchronous=FULL`
//! (the WAL is fsynced at every commit). SQLite allows one writer at a time; the usual way to
//! serve many clients is what we do here: **one shared writer connection behind a mutex**, and
//! one reader connection per client (WAL readers never block the writer). A transfer therefore
//! waits for the writer mutex, then runs `BEGIN IMMEDIATE … COMMIT` with one fsync. SQLite has no
//! group commit, so its write throughput is bounded by one fsync per transaction.

use crate::stats::{drive_threads, Run};
use crate::workload::{
    account_for, bulk_row, transfer_for, System, Totals, ACCOUNTS_BATCH_ROWS, ACCOUNT_FILLER,
    BULK_BATCH_ROWS, INITIAL_BALANCE, SQLITE,
};
use anyhow::{bail, Context};
use borealis_utils::LockExt;
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct NativeSqlite {
    path: PathBuf,
    writer: Arc<Mutex<Connection>>,
}

/// Opens a connection with the benchmark's settings.
fn open(path: &Path) -> anyhow::Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mode: String = c.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!("SQLite refused WAL mode (got {mode})");
    }
    c.execute_batch("PRAGMA synchronous=FULL;")?;
    c.busy_timeout(Duration::from_secs(30))?;
    let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
    if sync != 2 {
        bail!("PRAGMA synchronous is {sync}, expected 2 (FULL)");
    }
    Ok(c)
}

impl NativeSqlite {
    pub fn create(dir: &Path) -> anyhow::Result<NativeSqlite> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("bench.sqlite");
        let writer = open(&path)?;
        for stmt in SQLITE.create {
            writer.execute(stmt, [])?;
        }
        Ok(NativeSqlite {
            path,
            writer: Arc::new(Mutex::new(writer)),
        })
    }

    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .context("SQLite worker thread")?
    }
}

impl System for NativeSqlite {
    /// SQLite runs inside the benchmark's own process, which the caller counts.
    fn processes(&self) -> Vec<crate::cpu::Proc> {
        Vec::new()
    }

    async fn load_accounts(&mut self, accounts: u64) -> anyhow::Result<()> {
        let writer = self.writer.clone();
        Self::blocking(move || {
            let mut c = writer.locked();
            let mut next = 0;
            while next < accounts {
                let end = (next + ACCOUNTS_BATCH_ROWS).min(accounts);
                let tx = c.transaction()?;
                {
                    let mut s = tx.prepare_cached(SQLITE.insert_account)?;
                    for id in next..end {
                        s.execute(params![id as i64 + 1, INITIAL_BALANCE, ACCOUNT_FILLER])?;
                    }
                }
                tx.commit()?;
                next = end;
            }
            Ok(())
        })
        .await
    }

    async fn transfers(
        &mut self,
        clients: usize,
        duration: Duration,
        accounts: u64,
    ) -> anyhow::Result<Run> {
        let writer = self.writer.clone();
        Self::blocking(move || {
            Ok(drive_threads(
                clients,
                duration,
                move |client| Ok((client, writer.clone())),
                move |(client, writer), seq| {
                    let t = transfer_for(*client, seq, accounts);
                    let mut c = writer.locked();
                    let tx =
                        c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    {
                        let mut upd = tx.prepare_cached(SQLITE.update_balance)?;
                        for (delta, id) in t.updates() {
                            if upd.execute(params![delta, id])? != 1 {
                                bail!("account {id} not found");
                            }
                        }
                        tx.prepare_cached(SQLITE.insert_history)?
                            .execute(params![t.src, t.dst, t.amount])?;
                    }
                    tx.commit()?;
                    Ok(())
                },
            ))
        })
        .await
    }

    async fn reads(
        &mut self,
        clients: usize,
        duration: Duration,
        accounts: u64,
    ) -> anyhow::Result<Run> {
        let path = self.path.clone();
        Self::blocking(move || {
            Ok(drive_threads(
                clients,
                duration,
                move |client| Ok((client, open(&path)?)),
                move |(client, c), seq| {
                    let id = account_for(*client, seq, accounts);
                    let mut s = c.prepare_cached(SQLITE.select_balance)?;
                    let mut rows = s.query(params![id])?;
                    let row = rows.next()?.context("no row")?;
                    let _balance: i64 = row.get(0).context("balance is not an integer")?;
                    if rows.next()?.is_some() {
                        bail!("more than one row for account {id}");
                    }
                    Ok(())
                },
            ))
        })
        .await
    }

    async fn bulk_load(&mut self, rows: u64) -> anyhow::Result<Duration> {
        let writer = self.writer.clone();
        Self::blocking(move || {
            let mut c = writer.locked();
            let started = Instant::now();
            let mut next = 0;
            while next < rows {
                let end = (next + BULK_BATCH_ROWS).min(rows);
                let tx = c.transaction()?;
                {
                    let mut s = tx.prepare_cached(SQLITE.insert_bulk)?;
                    for i in next..end {
                        let (id, k, v) = bulk_row(i);
                        s.execute(params![id, k, v])?;
                    }
                }
                tx.commit()?;
                next = end;
            }
            Ok(started.elapsed())
        })
        .await
    }

    async fn totals(&mut self) -> anyhow::Result<Totals> {
        let path = self.path.clone();
        Self::blocking(move || {
            let c = open(&path)?;
            let (accounts, balance_sum) = c.query_row(
                "SELECT count(*), coalesce(sum(balance), 0) FROM accounts",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let history_rows = c.query_row("SELECT count(*) FROM history", [], |r| r.get(0))?;
            let (bulk_rows, bulk_k_sum) =
                c.query_row("SELECT count(*), coalesce(sum(k), 0) FROM bulk", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok(Totals {
                accounts,
                balance_sum,
                history_rows,
                bulk_rows,
                bulk_k_sum,
            })
        })
        .await
    }
}
