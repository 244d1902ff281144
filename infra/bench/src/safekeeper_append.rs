//! Safekeeper append throughput and append-to-ack latency, for one member and for a full
//! protection group of six, against real `safekeeper` processes over `borealis_wire`.
//!
//! The harness plays the writer: it opens one connection per member, says `Hello` (epoch 1),
//! and sends `Append`s of [`RECORDS_PER_APPEND`] redo records each — small deltas, like a
//! TPC-B commit's — with a correct backlink chain (`prev_lsn_segment` = the previous LSN), the
//! last record of each append flagged as a consistency point. Acknowledgements (`Ack{scl}`) come
//! back unsolicited, after the member's group commit has fsynced the records.
//!
//! An append counts as acknowledged when the **quorum** holds it: its last LSN is at or below
//! the SCL acknowledged by 1 of 1 members, or by 4 of 6 (the write quorum). Latency is measured
//! from just before the append is queued on the first connection to the ack that completes its
//! quorum. `window` appends are kept in flight: with a window of 1 this is the latency of a lone
//! commit; with a larger window, group commit shares each fsync among many appends.
//!
//! The six members run on one machine and one disk here, so they share one device's fsync
//! bandwidth — the opposite of a real deployment, where each has its own disk in its own AZ.

use crate::stats::Latencies;
use anyhow::{bail, Context};
use borealis_auth::{ClusterKeys, Role};
use borealis_core::redo::{RedoBody, RedoRecord};
use borealis_core::{EpochStart, Lsn, PageNo, SegmentId, TenantId, PAGE_SIZE_BYTES};
use borealis_utils::LockExt;
use borealis_wire::{Body, Client};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// Records per append: about what one small OLTP commit dirties.
pub const RECORDS_PER_APPEND: u64 = 4;
const TENANT: TenantId = TenantId(0x00be_ec40);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the harness waits for the appends still in flight after the clock stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Acks buffered per connection before the reader waits: far above any window used here.
const ACK_QUEUE_MAX: usize = 65_536;

pub struct AppendFigures {
    pub members: usize,
    pub quorum: usize,
    pub window: usize,
    pub appends: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

impl AppendFigures {
    pub fn per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Safekeeper processes owned by the harness; SIGKILLed when dropped.
struct Members {
    children: Vec<Child>,
    listen: Vec<String>,
    /// The harness plays the writer: a token with the gateway's role for every tenant.
    token: String,
}

impl Drop for Members {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

async fn start_members(bin_dir: &Path, root: &Path, n: usize) -> anyhow::Result<Members> {
    let bin = bin_dir.join("safekeeper");
    if !bin.exists() {
        bail!(
            "{} is missing: build it first (`cargo build -p safekeeper`)",
            bin.display()
        );
    }
    let ids: Vec<String> = (0..n).map(|i| format!("sk-{i}")).collect();
    let listen: Vec<String> = (0..n).map(|_| free_addr()).collect::<anyhow::Result<_>>()?;
    let http: Vec<String> = (0..n).map(|_| free_addr()).collect::<anyhow::Result<_>>()?;
    let keys = ClusterKeys::ensure(root)?;
    let mut members = Members {
        children: Vec::new(),
        listen: listen.clone(),
        token: keys
            .signing_key()
            .issue_for(Role::Gateway, None, "bench", 0),
    };
    for i in 0..n {
        let peers: Vec<String> = (0..n)
            .filter(|&j| j != i)
            .map(|j| format!("{}={}", ids[j], listen[j]))
            .collect();
        let data: PathBuf = root.join(&ids[i]);
        // A new node (`safekeeper::rebuild`): it never acknowledged anything.
        std::fs::create_dir_all(&data)?;
        std::fs::write(data.join("new-node"), b"")?;
        let log = std::fs::File::create(root.join(format!("{}.log", ids[i])))?;
        let child = Command::new(&bin)
            .args(["--id", &ids[i], "--listen", &listen[i], "--http", &http[i]])
            .arg("--data-dir")
            .arg(&data)
            .args(["--peers", &peers.join(",")])
            .arg("--auth-verifying-key")
            .arg(keys.verifying_key_path())
            .arg("--token-file")
            .arg(keys.node_token_file(&ids[i], Role::Safekeeper)?)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        members.children.push(child);
    }
    let started = Instant::now();
    for (i, addr) in listen.iter().enumerate() {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = members.children[i].try_wait() {
                let log = std::fs::read_to_string(root.join(format!("{}.log", ids[i])))
                    .unwrap_or_default();
                bail!(
                    "safekeeper {} exited at start-up ({status}):\n{log}",
                    ids[i]
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "safekeeper {} did not listen on {addr} within {START_TIMEOUT:?}",
                    ids[i]
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(members)
}

/// The encoded records of the append whose first LSN is `first`.
fn append_records(first: u64, delta: &RedoBody) -> Vec<u8> {
    let mut out = Vec::new();
    for lsn in first..first + RECORDS_PER_APPEND {
        RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(lsn - 1),
            prev_lsn_page: Lsn::INVALID,
            page_no: PageNo((lsn % 64) as u32),
            is_cpl: lsn == first + RECORDS_PER_APPEND - 1,
            body: delta.clone(),
        }
        .encode_into(&mut out);
    }
    out
}

/// A delta like an `UPDATE` of one row makes: two short runs.
fn sample_delta() -> RedoBody {
    let old = vec![0u8; PAGE_SIZE_BYTES];
    let mut new = old.clone();
    new[100..140].fill(7);
    new[3000..3080].fill(9);
    RedoBody::between(Some(&old), &new)
}

/// `k`-th highest of `scls` (1-based): the LSN a quorum of `k` members holds.
fn quorum_scl(scls: &[u64], k: usize) -> u64 {
    let mut v = scls.to_vec();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v[k - 1]
}

/// Runs appends for `duration` with `window` in flight against `members` fresh safekeepers.
pub async fn measure(
    bin_dir: &Path,
    work: &Path,
    members: usize,
    window: usize,
    duration: Duration,
) -> anyhow::Result<AppendFigures> {
    let root = tempfile::Builder::new()
        .prefix(&format!("sk-append-{members}-"))
        .tempdir_in(work)?;
    let procs = start_members(bin_dir, root.path(), members).await?;
    let quorum = if members >= borealis_core::quorum::PG_MEMBERS {
        borealis_core::quorum::WRITE_QUORUM
    } else {
        members
    };
    let (ack_tx, mut ack_rx) = mpsc::channel::<(usize, Body)>(ACK_QUEUE_MAX);
    let mut clients = Vec::new();
    for (i, addr) in procs.listen.iter().enumerate() {
        let (tx, mut rx) = mpsc::channel(ACK_QUEUE_MAX);
        let c = Client::connect(addr, &procs.token, CALL_TIMEOUT, Some(tx))
            .await
            .with_context(|| format!("connecting to safekeeper {addr}"))?;
        let history = vec![EpochStart {
            epoch: 1,
            start: Lsn(0),
        }];
        match c
            .call(
                Body::Hello {
                    tenant: TENANT,
                    epoch: 1,
                    epoch_start_lsn: Lsn(0),
                    history,
                },
                CALL_TIMEOUT,
            )
            .await?
        {
            Body::HelloOk { .. } => {}
            other => bail!("unexpected answer to Hello: {}", other.name()),
        }
        let ack_tx = ack_tx.clone();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if ack_tx.send((i, b)).await.is_err() {
                    break;
                }
            }
        });
        clients.push(c);
    }
    drop(ack_tx);

    // In flight: (last LSN of the append, when it was sent), in LSN order.
    let in_flight: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(window));
    let acker = {
        let (in_flight, permits) = (in_flight.clone(), permits.clone());
        tokio::spawn(async move {
            let mut scls = vec![0u64; members];
            let mut lat = Latencies::default();
            let mut last_ack = Instant::now();
            while let Some((member, body)) = ack_rx.recv().await {
                match body {
                    Body::Ack { scl, .. } => {
                        scls[member] = scls[member].max(scl.0);
                        let held = quorum_scl(&scls, quorum);
                        let mut q = in_flight.locked();
                        let mut released = 0;
                        while q.front().is_some_and(|(lsn, _)| *lsn <= held) {
                            if let Some((_, sent)) = q.pop_front() {
                                lat.push(sent.elapsed());
                                released += 1;
                            }
                        }
                        if released > 0 {
                            last_ack = Instant::now();
                            permits.add_permits(released);
                        }
                    }
                    Body::Error { kind, message } => {
                        return Err(anyhow::anyhow!(
                            "safekeeper {member} refused an append: {kind:?}: {message}"
                        ))
                    }
                    other => {
                        return Err(anyhow::anyhow!(
                            "unexpected unsolicited message from safekeeper {member}: {}",
                            other.name()
                        ))
                    }
                }
            }
            Ok((lat, last_ack))
        })
    };

    let delta = sample_delta();
    let started = Instant::now();
    let mut next_lsn = 1u64;
    let mut appends = 0u64;
    let mut bytes = 0u64;
    while started.elapsed() < duration {
        let permit = tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire())
            .await
            .context("no acknowledgement within the drain timeout")?
            .context("semaphore closed")?;
        permit.forget();
        let records = append_records(next_lsn, &delta);
        let last = next_lsn + RECORDS_PER_APPEND - 1;
        bytes += records.len() as u64;
        in_flight.locked().push_back((last, Instant::now()));
        for c in &clients {
            c.send(Body::Append {
                tenant: TENANT,
                segment: SegmentId(0),
                epoch: 1,
                vdl: Lsn(0),
                records: records.clone(),
            })
            .await
            .with_context(|| format!("sending an append to {}", c.addr()))?;
        }
        next_lsn = last + 1;
        appends += 1;
    }
    // Wait for everything in flight.
    let drain_started = Instant::now();
    while !in_flight.locked().is_empty() {
        if drain_started.elapsed() > DRAIN_TIMEOUT || acker.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let left = in_flight.locked().len();
    drop(clients);
    drop(procs);
    let (latencies, last_ack) = acker.await.context("ack task")??;
    if left > 0 {
        bail!("{left} appends were never acknowledged by a quorum of {quorum}");
    }
    Ok(AppendFigures {
        members,
        quorum,
        window,
        appends,
        bytes,
        elapsed: last_ack.saturating_duration_since(started),
        latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_the_kth_highest() {
        assert_eq!(quorum_scl(&[5, 9, 7, 1, 3, 8], 4), 5);
        assert_eq!(quorum_scl(&[4], 1), 4);
    }

    #[test]
    fn appends_chain_and_end_in_a_cpl() {
        let recs = RedoRecord::decode_all(&append_records(5, &sample_delta())).unwrap();
        assert_eq!(recs.len() as u64, RECORDS_PER_APPEND);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.lsn.0, 5 + i as u64);
            assert_eq!(r.prev_lsn_segment.0, r.lsn.0 - 1);
            assert_eq!(r.is_cpl, i as u64 == RECORDS_PER_APPEND - 1);
        }
    }
}
