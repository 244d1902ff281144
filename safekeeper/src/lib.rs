//! # The Borealis safekeeper: the durable, fenced, self-healing redo log
//!
//! In Borealis the log *is* the database. A tenant's writer ships every change as a redo record
//! to the six safekeepers of each segment's protection group (two in each of three AZs) and
//! counts a record durable once four of them hold it. A safekeeper therefore has one job: **never
//! lose a record it acknowledged, and never pretend to hold one it does not.** This crate is that
//! job; the rest of this page explains the ideas it rests on.
//!
//! ## Records, backlinks and the SCL
//!
//! Every redo record carries its own LSN and `prev_lsn_segment`, the LSN of the previous record
//! of the same segment. Records can arrive with gaps (a connection broke, this member was down),
//! so "the highest LSN I hold" proves nothing. What a safekeeper can prove is its **segment
//! complete LSN (SCL)**: the highest LSN from which the backlinks lead all the way back to the
//! start of the segment through records it holds. Out-of-order records are stored anyway; when
//! the missing one arrives the SCL jumps over everything that waited. The writer's consistency
//! tracker turns acknowledged SCLs into the volume's VCL and VDL. See [`acceptor`].
//!
//! ## Epochs and fencing
//!
//! A volume has one writer at a time. When a writer is replaced, the new one runs recovery: it
//! reads the SCLs of a read quorum, computes the VDL, and opens a new **epoch** with a `Hello
//! {epoch, epoch_start_lsn: VDL, history}`. The history lists where every epoch the new log
//! descends from started. A safekeeper that accepts the epoch writes it durably ([`control`]),
//! truncates its log where its own history and the writer's part ways — at the latest at the
//! new start: records above it are an older writer's unfinished work, and a member that missed a
//! whole epoch may hold such records even below it — and only then answers. From then on any
//! append or hello from an older epoch is refused with `Fenced`: a writer that was thought dead
//! cannot add to the log.
//!
//! ## Group commit
//!
//! Appends from all connections go to one [`log_writer`] thread. It writes everything queued,
//! fsyncs each file it touched once, then publishes the new SCLs, which become `Ack`s to the
//! writers. Nothing is acknowledged before its fsync; under load one fsync covers many appends.
//! An fsync that fails stops the process (after "fsyncgate" nobody knows what is on disk).
//!
//! ## Crashes and corrupt disks
//!
//! Each segment's log is one append-only file of records back to back ([`segment_log`],
//! `docs/formats/segment-log.md`). On start-up every record's CRC is checked: a torn tail (the
//! un-fsynced end of the file after a crash, never acknowledged) is cut; a bad record in the
//! middle (a latent sector error, a misdirected write) is dropped. A record that fails its CRC
//! when read later is dropped too. Either way the SCL falls below the lost record and gossip
//! fetches it again.
//!
//! ## Hole filling
//!
//! Every `--gossip-interval` each safekeeper compares its SCLs with its peers' ([`gossip`]). Where
//! a peer in the same epoch is ahead, it reads the missing range from that peer and appends it
//! through the same durable path. A member that was down catches up this way, a lost append is
//! filled in, and a corrupt record is repaired, without the writer's help. With `--pool` (a pool
//! of more than six safekeepers), a segment is held and gossiped only by the six of its own
//! protection group ([`pool`]); the safekeeper still accepts an authenticated writer's appends
//! for any segment, since placing records is the writer's job.
//!
//! ## Trimming
//!
//! The log does not have to be kept forever. Once a pageserver has made a checkpoint of a segment
//! durable in object storage it sends `Trim { upto, epoch }`; the safekeeper drops the records up
//! to the highest one of its complete chain at or below `upto` (never above its own SCL), after
//! recording that trim point durably in the control file. The chain then starts there, recovery's
//! SCL and last CPL stay right, and reads below the trim point are refused. A member at an older
//! epoch than the checkpoint's refuses to trim. A member whose SCL is below its peers' trim
//! points (its disk was replaced, or it was down while they trimmed) cannot be filled below them
//! by gossip; it **adopts** a peer's trim point as its own base instead — those records are
//! durable and checkpointed in object storage — and fetches only what lies above it. See
//! [`acceptor::SegmentChain::trim_point_for`], [`tenant::Tenant::trim`],
//! [`acceptor::TenantAcceptor::judge_adopt_trim`] (and why adopting is safe, in [`acceptor`]),
//! and `docs/formats/segment-log.md`.
//!
//! ## The disk budget
//!
//! Trimming waits for checkpoints, and checkpoints wait for the object store: during an outage
//! the log only grows. `--disk-budget-bytes` bounds it. The bytes of every segment file are
//! counted (at start-up, then on every append, fill, truncation and trim), and a writer's append
//! that would take them past the budget is refused whole with `ReadOnly` ("disk budget
//! exhausted ..."); appends without records, `Hello`s and fills from peers go on. When trims
//! free space, appends are accepted again. See [`disk_budget`].
//!
//! ## Layout
//!
//! | module | what it is |
//! |---|---|
//! | [`acceptor`] | sans-IO: epoch verdicts, chain and SCL per segment |
//! | [`disk_budget`] | sans-IO: the bytes retained against `--disk-budget-bytes`; its shared driver |
//! | [`gossip`] | sans-IO round planning, plus the loop that talks to peers |
//! | [`pool`] | sans-IO: this node's and its peers' places in `--pool`, each segment's group |
//! | [`segment_log`] | a segment file behind the [`segment_log::LogStorage`] trait; recovery scan |
//! | [`fault_storage`] | an in-memory disk that tears writes, loses un-synced bytes, flips bits |
//! | [`control`] | the per-tenant epoch and trim-point file, replaced atomically |
//! | [`tenant`], [`store`] | one tenant on disk; all tenants |
//! | [`log_writer`] | the group-commit thread |
//! | [`node`], [`service`] | request semantics; the TCP server |
//! | [`http`], [`metrics`] | `/status`, `/metrics`, `/healthz` |

/// The acceptor's state machine lives with the other protocol cores (sans-IO, simulated).
pub use borealis_quorum::acceptor;
pub mod config;
pub mod control;
pub mod disk_budget;
pub mod error;
pub mod fault_storage;
pub mod gossip;
pub mod http;
pub mod log_writer;
pub mod metrics;
pub mod node;
pub mod pool;
pub mod rebuild;
pub mod records;
pub mod segment_log;
pub mod service;
pub mod store;
pub mod tenant;

pub use config::Config;
pub use error::SkError;

use anyhow::Context;
use std::sync::Arc;
use tracing::{info, warn};

/// Runs a safekeeper until interrupted (SIGINT or SIGTERM). Everything acknowledged is already
/// durable, so stopping needs no clean-up.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let membership = config.membership().map_err(anyhow::Error::msg)?;
    let metrics = Arc::new(metrics::Metrics::default());
    // Held until the process exits: two safekeepers appending to one segment log would corrupt
    // it, so the second refuses to start before it reads anything.
    let _lock = borealis_utils::lock_data_dir(&config.data_dir)?;
    let verifying_key = borealis_auth::VerifyingKey::load(&config.auth_verifying_key).context(
        "loading --auth-verifying-key (a safekeeper does not run without authentication)",
    )?;
    let token =
        borealis_auth::read_token_file(&config.token_file).context("loading --token-file")?;
    let data_dir = config.data_dir.clone();
    let budget = Arc::new(disk_budget::SharedDiskBudget::new(
        config.id.clone(),
        config.disk_budget_bytes,
        metrics.clone(),
    ));
    let store = tokio::task::spawn_blocking(move || store::Store::open(&data_dir, metrics, budget))
        .await?
        .with_context(|| format!("opening data directory {}", config.data_dir.display()))?;
    let store = Arc::new(store);
    let writer = log_writer::LogWriter::spawn(store.clone()).context("starting the log writer")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding --listen {}", config.listen))?;
    let http_listener = tokio::net::TcpListener::bind(config.http)
        .await
        .with_context(|| format!("binding --http {}", config.http))?;
    let node = Arc::new(node::Node {
        id: config.id.clone(),
        store: store.clone(),
        writer: writer.clone(),
    });
    let peers: Vec<String> = config
        .peers
        .0
        .iter()
        .map(|p| format!("{}={}", p.id, p.addr))
        .collect();
    let budget = store.budget().snapshot();
    info!(id = %config.id, listen = %config.listen, http = %config.http, data_dir = %config.data_dir.display(),
        peers = %peers.join(","), tenants = store.tenants().len(), retained_log_bytes = budget.retained_bytes,
        disk_budget_bytes = budget.budget_bytes, "safekeeper started");
    match &membership {
        Some(m) => {
            info!(pool = %config.pool.0.join(","), node = m.me(), pool_size = m.pool_len(),
                "member of a pool: each segment is held and gossiped only by the six of its protection group");
            let unreached: Vec<&str> = m
                .unreached()
                .iter()
                .map(|&n| config.pool.0[n].as_str())
                .collect();
            if !unreached.is_empty() {
                warn!(unreached = %unreached.join(","),
                    "--peers does not name every other safekeeper of --pool: segments shared with these are never filled from them");
            }
        }
        None => info!("no --pool: every peer shares every segment"),
    }
    if budget.retained_bytes > budget.budget_bytes {
        warn!(retained_log_bytes = budget.retained_bytes, disk_budget_bytes = budget.budget_bytes,
            "the log on disk already exceeds --disk-budget-bytes: writers' appends will be refused until trims free space");
    }

    tokio::spawn(gossip::run(
        store.clone(),
        writer,
        config.peers.0.clone(),
        membership,
        config.gossip_interval,
        token,
    ));
    let http = axum::serve(
        http_listener,
        http::router(config.id.clone(), store, verifying_key.clone()),
    );
    tokio::select! {
        _ = service::serve(listener, node, verifying_key) => Ok(()),
        r = http => r.context("admin HTTP server failed"),
        r = shutdown_signal() => {
            r?;
            info!("stopping on signal");
            Ok(())
        }
    }
}

async fn shutdown_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
