//! The wire protocol server: one task reading each connection, one writing it.
//!
//! Requests on one connection are handled in arrival order (a `Trim` waits for its rewrite of the
//! segment file), except `ReadLog`, which may wait for
//! records and so runs on its own task (answers are matched by request id, so order does not
//! matter to the client). `Hello` is handled before the next frame is read, so appends pipelined
//! behind it see the new epoch. `Append` is fire-and-forget: no answer on success, an `Error` with
//! its request id on failure. The first append to a segment in an epoch subscribes the connection
//! to that segment's published SCL; every publish (after an fsync, or when gossip fills a hole)
//! becomes an unsolicited `Ack` (request id 0) — **only while the published epoch is the one the
//! connection appended in** (RFC 0015): a superseded writer must not count the records a newer
//! writer put at LSNs it also used as its own.
//!
//! Every connection starts with an `Auth` frame (`borealis-auth`): a connection whose token does
//! not verify is answered `Unauthorized` and closed, and every later request is checked against
//! the token's role and tenant before it is looked at. A refused request changes nothing.

use crate::log_writer::ErrorReturn;
use crate::node::{answer, Node, ReadLogRequest};
use borealis_auth::{handshake, Handshake, VerifyingKey};
use borealis_core::{ErrorKind, Lsn, SegmentId, TenantId};
use borealis_wire::{read_frame, write_frame, Body, Envelope};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument};

/// Answers and acks queued for one connection before producers wait.
pub const CONNECTION_OUTBOX_MAX: usize = 1024;
/// `ReadLog`s one connection may have in flight; the next waits. A pageserver shares one
/// connection among the followers of all its segments, each parking a long poll here, so this
/// must exceed the segments one pageserver follows: at 16, the 17th tenant's reads queued behind
/// 2 s polls and cold starts went from 22 ms to 900 ms at 50 tenants (borealis-bench). A parked
/// poll holds no records; one that found some holds at most `LOG_READ_BYTES_MAX` (4 MiB). The
/// permit is released when the answer enters the connection's outbox, not when it is written,
/// so a peer that reads slowly can also have up to [`CONNECTION_OUTBOX_MAX`] answers queued
/// there: memory per connection is bounded by counts, not bytes (a known gap; a byte budget
/// that travels with the answer to the socket writer would bound it without making parked
/// polls wait on each other).
pub const READS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 256;
/// Socket write buffer: a burst of acks and answers goes out in few syscalls.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Accepts connections forever; each must authenticate with a token `key` verifies.
pub async fn serve(listener: TcpListener, node: Arc<Node>, key: VerifyingKey) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                let span = tracing::info_span!("conn", %peer);
                tokio::spawn(
                    handle_connection(node.clone(), socket, peer, key.clone()).instrument(span),
                );
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle_connection(
    node: Arc<Node>,
    socket: TcpStream,
    peer: SocketAddr,
    key: VerifyingKey,
) {
    if let Err(e) = socket.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    let (mut rd, wr) = socket.into_split();
    let (outbox, outbox_rx) = mpsc::channel::<Envelope>(CONNECTION_OUTBOX_MAX);
    tokio::spawn(write_loop(wr, outbox_rx));
    let metrics = node.store.metrics();
    let claims = match handshake(&mut rd, &key).await {
        Handshake::Accepted { claims, answer } => {
            debug!(%peer, who = %claims.describe(), "authenticated");
            if outbox.send(answer).await.is_err() {
                return;
            }
            claims
        }
        Handshake::Refused { error, answer } => {
            warn!(%peer, %error, "connection refused: authentication failed");
            crate::metrics::inc(&metrics.auth_refused_total, 1);
            let _ = outbox.send(answer).await;
            return;
        }
        Handshake::Gone(why) => {
            debug!(%peer, why, "connection closed before authenticating");
            return;
        }
    };
    let mut denials = 0u64;
    let mut acks = JoinSet::new();
    // Per (tenant, segment): the epoch this connection's acks are for.
    let mut subscribed: BTreeMap<(TenantId, SegmentId), u64> = BTreeMap::new();
    let reads = Arc::new(Semaphore::new(READS_IN_FLIGHT_PER_CONNECTION_MAX));
    loop {
        let env = match read_frame(&mut rd).await {
            Ok(Some(env)) => env,
            Ok(None) => break,
            Err(e) => {
                warn!(%peer, error = %e, "bad frame; closing the connection");
                break;
            }
        };
        let id = env.request_id;
        if let Err(error) = claims.permits(&env.body) {
            // Logged once per connection: a client sending many refused requests must not
            // flood the log; the metric counts them all.
            if denials == 0 {
                warn!(%peer, %error, "request refused");
            }
            denials += 1;
            crate::metrics::inc(&metrics.auth_refused_total, 1);
            if outbox.send(answer(id, error.to_body())).await.is_err() {
                break;
            }
            continue;
        }
        let reply = match env.body {
            Body::Hello {
                tenant,
                epoch,
                epoch_start_lsn,
                history,
            } => Some(node.hello(tenant, epoch, epoch_start_lsn, history).await),
            Body::Append {
                tenant,
                segment,
                epoch,
                vdl,
                records,
            } => {
                // A first append, or one of a newer epoch (the loop of the older one ends by
                // itself when it sees the newer epoch published).
                if subscribed
                    .get(&(tenant, segment))
                    .is_none_or(|&e| e < epoch)
                {
                    if let Some(t) = node.store.tenant(tenant) {
                        subscribed.insert((tenant, segment), epoch);
                        acks.spawn(ack_loop(
                            t.subscribe_acks(segment),
                            tenant,
                            segment,
                            epoch,
                            outbox.clone(),
                        ));
                    }
                }
                let errors = ErrorReturn {
                    request_id: id,
                    out: outbox.clone(),
                };
                node.append(tenant, segment, epoch, vdl, records, errors)
                    .await
                    .err()
                    .map(|e| e.to_body())
            }
            Body::GetState { tenant } => Some(node.get_state(tenant)),
            Body::Fence { tenant, epoch } => Some(node.fence(tenant, epoch).await),
            Body::ReadLsns {
                tenant,
                segment,
                after,
                upto,
                max_entries,
            } => Some(
                node.store
                    .read_lsns(tenant, segment, after, upto, max_entries),
            ),
            Body::Trim {
                tenant,
                segment,
                epoch,
                upto,
            } => Some(node.trim(tenant, segment, epoch, upto).await),
            Body::GossipSummary => Some(node.summary()),
            Body::DropTenant { tenant } => Some(node.drop_tenant(tenant).await),
            Body::ReadLog {
                tenant,
                segment,
                epoch,
                min_epoch,
                after,
                upto,
                max_bytes,
                wait_ms,
            } => {
                let req = ReadLogRequest {
                    tenant,
                    segment,
                    epoch,
                    min_epoch,
                    after,
                    upto,
                    max_bytes,
                    wait_ms,
                };
                let (node, outbox) = (node.clone(), outbox.clone());
                let Ok(permit) = reads.clone().acquire_owned().await else {
                    break;
                };
                tokio::spawn(async move {
                    let body = node.read_log(req).await;
                    drop(permit);
                    let _ = outbox.send(answer(id, body)).await;
                });
                None
            }
            other => Some(Body::error(
                ErrorKind::Invalid,
                format!("{} is not a request a safekeeper serves", other.name()),
            )),
        };
        if let Some(body) = reply {
            if outbox.send(answer(id, body)).await.is_err() {
                break;
            }
        }
    }
    // Dropping the JoinSet stops the ack tasks; the writer ends when the last sender is gone.
    acks.abort_all();
}

async fn write_loop(wr: tokio::net::tcp::OwnedWriteHalf, mut outbox: mpsc::Receiver<Envelope>) {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, wr);
    while let Some(env) = outbox.recv().await {
        if write_frame(&mut w, &env).await.is_err() {
            return;
        }
        while let Ok(env) = outbox.try_recv() {
            if write_frame(&mut w, &env).await.is_err() {
                return;
            }
        }
        if w.flush().await.is_err() {
            return;
        }
    }
}

/// Sends the segment's SCL as an `Ack` each time it is published in `epoch`, the epoch the
/// connection appended in (values in between coalesce). Once a newer epoch is published (a
/// recovery installed one, or was promised one by a `Fence`, RFC 0014 §2) it sends one last
/// `Ack` in that epoch, which tells the writer it is superseded, and ends: the SCLs published from
/// then on may vouch for the newer writer's records, which may sit at LSNs the old writer also
/// used (found by the simulator once its acks were sent regardless of epoch: a zombie writer
/// raised its VDL above its successor's start).
async fn ack_loop(
    mut published: watch::Receiver<(u64, Lsn)>,
    tenant: TenantId,
    segment: SegmentId,
    epoch: u64,
    outbox: mpsc::Sender<Envelope>,
) {
    while published.changed().await.is_ok() {
        let (published_epoch, value) = *published.borrow_and_update();
        if published_epoch < epoch {
            // Not yet published in the connection's epoch (cannot outlast its Hello's publish).
            continue;
        }
        let ack = Body::Ack {
            tenant,
            segment,
            scl: value,
            epoch: published_epoch,
        };
        if outbox.send(answer(0, ack)).await.is_err() || published_epoch > epoch {
            return;
        }
    }
}
