//! PostgreSQL from the distribution's packages, started by the harness in a temporary directory.
//!
//! `initdb` and `postgres` run as the `postgres` user when the harness runs as root (PostgreSQL
//! refuses to run as root); the temporary directory is handed to that user first. The server
//! listens on a free port on 127.0.0.1 only, with `fsync=on` and `synchronous_commit=on` (both
//! checked with `SHOW` once it is up) and otherwise the package's defaults. Each benchmark client
//! has its own connection (`tokio-postgres`) and prepared statements; a transfer is
//! `BEGIN; UPDATE; UPDATE; INSERT; COMMIT`. PostgreSQL commits with a WAL flush, which group
//! commit shares among concurrent transactions.
//!
//! On a machine without PostgreSQL: `apt-get install -y postgresql` (Debian), or pass
//! `--skip postgres`.

use crate::cpu::Proc;
use crate::stats::{drive_async, Run};
use crate::workload::{
    account_for, bulk_row, transfer_for, System, Totals, ACCOUNTS_BATCH_ROWS, ACCOUNT_FILLER,
    BULK_BATCH_ROWS, INITIAL_BALANCE, POSTGRES,
};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Statement};

/// How long the server may take to accept connections after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Postgres {
    _dir: tempfile::TempDir,
    log: PathBuf,
    child: Option<Child>,
    port: u16,
    pub version: String,
}

/// Where the server binaries are: the newest `/usr/lib/postgresql/<major>/bin` with `postgres`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).context(
        "PostgreSQL is not installed (no /usr/lib/postgresql/<version>/bin/postgres): \
         run `apt-get install -y postgresql`, or pass `--skip postgres`",
    )
}

/// The uid and gid of `user`, from the password database.
#[allow(unsafe_code)] // libc calls, each with its SAFETY comment
fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let name = std::ffi::CString::new(user)?;
    // SAFETY: getpwnam returns a pointer into static storage or null; we copy the two ids out
    // at once and do not keep the pointer.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!("PostgreSQL refuses to run as root, and there is no `{user}` user to run it as (the postgresql package creates it)");
    }
    // SAFETY: non-null, points to a valid passwd record (see above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok((uid, gid))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(borealis_utils::ports::free_port()?)
}

impl Postgres {
    #[allow(unsafe_code)] // libc calls, each with its SAFETY comment
    pub async fn start(work: &Path) -> anyhow::Result<Postgres> {
        let bin = find_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("postgres-")
            .tempdir_in(work)?;
        // SAFETY: geteuid has no preconditions.
        let ids = if unsafe { libc::geteuid() } == 0 {
            let (uid, gid) = user_ids("postgres")?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).with_context(|| {
                format!("handing {} to the postgres user", dir.path().display())
            })?;
            Some((uid, gid))
        } else {
            None
        };
        let command = |program: &str| {
            let mut c = Command::new(bin.join(program));
            use std::os::unix::process::CommandExt;
            if let Some((uid, gid)) = ids {
                c.uid(uid).gid(gid);
            }
            c.env("HOME", dir.path()).current_dir(dir.path());
            c
        };
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let out = command("initdb")
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let version = command("postgres")
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "postgres (version unknown)".into());
        let port = free_port()?;
        let log_file = std::fs::File::create(&log)?;
        if let Some((uid, gid)) = ids {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))?;
        }
        let child = command("postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
                "-c",
                "synchronous_commit=on",
                "-c",
                "max_connections=200",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting postgres")?;
        let mut pg = Postgres {
            _dir: dir,
            log,
            child: Some(child),
            port,
            version,
        };
        pg.wait_ready().await?;
        let c = pg.connect().await?;
        for (setting, want) in [("fsync", "on"), ("synchronous_commit", "on")] {
            let row = c.query_one(&format!("SHOW {setting}"), &[]).await?;
            let got: String = row.get(0);
            if got != want {
                bail!("PostgreSQL runs with {setting}={got}, expected {want}");
            }
        }
        for stmt in POSTGRES.create {
            c.batch_execute(stmt).await?;
        }
        Ok(pg)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if self.connect().await.is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "postgres exited at start-up ({status}):\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "postgres did not accept connections within {READY_TIMEOUT:?}:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=postgres dbname=postgres",
                self.port
            ),
            NoTls,
        )
        .await
        .context("connecting to postgres")?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the client then reports
            // the error on its next call.
            let _ = conn.await;
        });
        Ok(client)
    }

    /// `clients` connections, each with the prepared statements of `sqls`.
    async fn sessions(&self, clients: usize, sqls: &[&str]) -> anyhow::Result<Vec<Session>> {
        let mut out = Vec::with_capacity(clients);
        for _ in 0..clients {
            let client = self.connect().await?;
            let mut statements = Vec::new();
            for s in sqls {
                statements.push(client.prepare(s).await?);
            }
            out.push(Session { client, statements });
        }
        Ok(out)
    }

    /// Stops the server (fast shutdown: SIGINT) and waits for it.
    #[allow(unsafe_code)] // libc calls, each with its SAFETY comment
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Session {
    client: Client,
    statements: Vec<Statement>,
}

type Sessions = Arc<Vec<Mutex<Session>>>;

impl System for Postgres {
    /// The postmaster with its backends and helpers.
    fn processes(&self) -> Vec<Proc> {
        self.child
            .as_ref()
            .map(|c| Proc::new("postgres", c.id(), true))
            .into_iter()
            .collect()
    }

    async fn load_accounts(&mut self, accounts: u64) -> anyhow::Result<()> {
        let mut s = self.sessions(1, &[POSTGRES.insert_account]).await?;
        let Session {
            mut client,
            statements,
        } = s.remove(0);
        let mut next = 0;
        while next < accounts {
            let end = (next + ACCOUNTS_BATCH_ROWS).min(accounts);
            let tx = client.transaction().await?;
            let inserts = (next..end).map(|id| {
                let id = id as i64 + 1;
                let st = &statements[0];
                let tx = &tx;
                async move {
                    tx.execute(st, &[&id, &INITIAL_BALANCE, &ACCOUNT_FILLER])
                        .await
                }
            });
            futures::future::try_join_all(inserts).await?;
            tx.commit().await?;
            next = end;
        }
        client.batch_execute("ANALYZE").await?;
        Ok(())
    }

    async fn transfers(
        &mut self,
        clients: usize,
        duration: Duration,
        accounts: u64,
    ) -> anyhow::Result<Run> {
        let sessions: Sessions = Arc::new(
            self.sessions(clients, &[POSTGRES.update_balance, POSTGRES.insert_history])
                .await?
                .into_iter()
                .map(Mutex::new)
                .collect(),
        );
        Ok(drive_async(clients, duration, move |client, seq| {
            let sessions = sessions.clone();
            async move {
                let t = transfer_for(client, seq, accounts);
                let mut guard = sessions[client].lock().await;
                let Session { client, statements } = &mut *guard;
                let tx = client.transaction().await?;
                for (delta, id) in t.updates() {
                    if tx.execute(&statements[0], &[&delta, &id]).await? != 1 {
                        bail!("account {id} not found");
                    }
                }
                tx.execute(&statements[1], &[&t.src, &t.dst, &t.amount])
                    .await?;
                tx.commit().await?;
                Ok(())
            }
        })
        .await)
    }

    async fn reads(
        &mut self,
        clients: usize,
        duration: Duration,
        accounts: u64,
    ) -> anyhow::Result<Run> {
        let sessions: Sessions = Arc::new(
            self.sessions(clients, &[POSTGRES.select_balance])
                .await?
                .into_iter()
                .map(Mutex::new)
                .collect(),
        );
        Ok(drive_async(clients, duration, move |client, seq| {
            let sessions = sessions.clone();
            async move {
                let id = account_for(client, seq, accounts);
                let guard = sessions[client].lock().await;
                let rows = guard.client.query(&guard.statements[0], &[&id]).await?;
                match rows.as_slice() {
                    [row] => {
                        let _balance: i64 = row.try_get(0)?;
                        Ok(())
                    }
                    other => bail!("{} rows for account {id}", other.len()),
                }
            }
        })
        .await)
    }

    async fn bulk_load(&mut self, rows: u64) -> anyhow::Result<Duration> {
        let mut s = self.sessions(1, &[POSTGRES.insert_bulk]).await?;
        let Session {
            mut client,
            statements,
        } = s.remove(0);
        let started = Instant::now();
        let mut next = 0;
        while next < rows {
            let end = (next + BULK_BATCH_ROWS).min(rows);
            let tx = client.transaction().await?;
            // One round trip per batch: the executes are pipelined on the connection.
            let inserts = (next..end).map(|i| {
                let (id, k, v) = bulk_row(i);
                let st = &statements[0];
                let tx = &tx;
                async move { tx.execute(st, &[&id, &k, &v]).await }
            });
            futures::future::try_join_all(inserts).await?;
            tx.commit().await?;
            next = end;
        }
        Ok(started.elapsed())
    }

    async fn totals(&mut self) -> anyhow::Result<Totals> {
        let c = self.connect().await?;
        let a = c
            .query_one(
                "SELECT count(*), coalesce(sum(balance), 0)::bigint FROM accounts",
                &[],
            )
            .await?;
        let h = c.query_one("SELECT count(*) FROM history", &[]).await?;
        let b = c
            .query_one(
                "SELECT count(*), coalesce(sum(k), 0)::bigint FROM bulk",
                &[],
            )
            .await?;
        Ok(Totals {
            accounts: a.try_get(0)?,
            balance_sum: a.try_get(1)?,
            history_rows: h.try_get(0)?,
            bulk_rows: b.try_get(0)?,
            bulk_k_sum: b.try_get(1)?,
        })
    }
}
