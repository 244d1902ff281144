//! One task per member of the protection group: connect, `Hello` (installing this writer's
//! epoch, which truncates whatever older writers left above the recovered VDL), forward appends,
//! feed the member's acknowledgements (its SCL after fsync) into the session; reconnect with
//! backoff. What counts a member in or out of the write quorum — connected, accepting appends,
//! acknowledging in time — is decided by the session (`borealis_quorum::session`); this task
//! reports what it sees and drops the connection when the session says the member owes an
//! acknowledgement too long.

use super::{VolumeWriter, CALL_TIMEOUT, CONNECT_TIMEOUT, MEMBER_ACK_TIMEOUT};
use crate::storage_auth::StorageTokens;
use borealis_core::redo::RedoRecord;
use borealis_core::{ErrorKind, Lsn};
use borealis_wire::{Body, Client, WireError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often an idle member connection checks whether the member still needs the newest VDL.
const VDL_NOTICE_INTERVAL: Duration = Duration::from_millis(100);
/// How often a connected member that refuses appends (disk budget) is asked whether it has
/// room again.
const REFUSAL_RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Splits one segment's records (in LSN order) into runs of at most `max_bytes` encoded bytes
/// each; a record larger than `max_bytes` is a run of its own. Never an empty run.
pub(super) fn append_chunks(records: &[RedoRecord], max_bytes: usize) -> Vec<&[RedoRecord]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        let len = r.encoded_len();
        if i > start && bytes + len > max_bytes {
            chunks.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < records.len() {
        chunks.push(&records[start..]);
    }
    chunks
}

/// One member: connect, Hello, forward appends, feed acks; reconnect with backoff.
pub(super) async fn member_task(
    writer: Arc<VolumeWriter>,
    member: usize,
    addr: String,
    mut appends: mpsc::Receiver<(Arc<Body>, Lsn)>,
    up: Arc<watch::Sender<Vec<bool>>>,
    tokens: Arc<StorageTokens>,
) {
    let tenant = writer.tenant;
    let mut backoff = Duration::from_millis(50);
    while !writer.stopping.load(Ordering::SeqCst) {
        let (ack_tx, mut acks) = mpsc::channel::<Body>(1024);
        let token = tokens.tenant(tenant);
        let client = match Client::connect(&addr, &token, CONNECT_TIMEOUT, Some(ack_tx)).await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        let hello = Body::Hello {
            tenant,
            epoch: writer.epoch,
            epoch_start_lsn: writer.start,
            history: writer.history.clone(),
        };
        let (mut refusing, held) = match client.call(hello.clone(), CALL_TIMEOUT).await {
            Ok(Body::HelloOk {
                segments,
                appends_refused,
                ..
            }) => (
                appends_refused,
                segments
                    .iter()
                    .map(|s| (s.segment, s.scl))
                    .collect::<Vec<_>>(),
            ),
            Err(WireError::Remote {
                kind: ErrorKind::Fenced,
                message,
            }) => {
                writer.fail(format!("fenced by safekeeper {addr}: {message}"));
                break;
            }
            Err(WireError::Remote {
                kind: ErrorKind::Invalid,
                message,
            }) => {
                // Our epoch with another history: an earlier recovery attempt that reached
                // fewer than a write quorum left the same epoch number on this member, and this
                // recovery did not hear from it. It will never take our Hello; a new recovery
                // sees its epoch and takes a higher one (found by the simulator).
                writer.fail(format!(
                    "safekeeper {addr} holds epoch {} with another history: {message}",
                    writer.epoch
                ));
                break;
            }
            Ok(_) | Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                continue;
            }
        };
        // Appends queued while the member was down are stale: the member catches up by gossip.
        while appends.try_recv().is_ok() {}
        // Connected: it holds our epoch. It counts toward the write quorum only while it accepts
        // appends (a member whose disk budget is exhausted is connected but read-only).
        writer.member_connected(member, refusing.clone(), &held);
        up.send_modify(|u| u[member] = true);
        backoff = Duration::from_millis(50);
        info!(tenant = %tenant, node = member, addr = %addr, "safekeeper connected");
        // The newest VDL this member has been told. Appends carry the VDL; when the writer goes
        // quiet, an append without records tells it the rest, so pageservers can follow (and
        // checkpoint) the tail without waiting for a reader to vouch for it.
        let mut told_vdl = Lsn::INVALID;
        // While the member refuses appends, when we last asked it again (a repeated `Hello` of
        // our epoch changes nothing on it and answers whether it has room again).
        let mut refusal_checked = Instant::now();
        loop {
            if let Some((sent, acked)) = writer.ack_overdue(member) {
                warn!(tenant = %tenant, member, addr = %addr, sent = %sent, acked = %acked,
                    timeout_ms = MEMBER_ACK_TIMEOUT.as_millis() as u64,
                    "safekeeper stopped acknowledging; counting it unreachable");
                break;
            }
            tokio::select! {
                a = appends.recv() => match a {
                    Some(_) if refusing.is_some() => {
                        // Queued before it refused: it would refuse this too (and fill it by
                        // gossip once it has room).
                    }
                    Some((body, last)) => {
                        if let Body::Append { vdl, .. } = &*body {
                            told_vdl = told_vdl.max(*vdl);
                        }
                        // A member that reads nothing fills its socket and then our queue:
                        // sending blocks. That is unresponsive too.
                        let sending = tokio::time::timeout(MEMBER_ACK_TIMEOUT, client.send((*body).clone()));
                        if !matches!(sending.await, Ok(Ok(()))) {
                            break;
                        }
                        writer.sent(member, last);
                    }
                    None => break,
                },
                m = acks.recv() => match m {
                    Some(Body::Ack { segment, scl, epoch, .. }) => {
                        if !writer.on_ack(member, segment, epoch, scl) {
                            writer.fail(format!(
                                "superseded: safekeeper {addr} acknowledged in epoch {epoch}, a newer writer's"
                            ));
                            break;
                        }
                    }
                    Some(Body::Error { kind: ErrorKind::Fenced, message }) => {
                        writer.fail(format!("fenced by safekeeper {addr}: {message}"));
                        break;
                    }
                    Some(Body::Error { kind: ErrorKind::ReadOnly, message }) => {
                        // Its disk budget is exhausted: connected, but not writable. What it
                        // missed it fills by gossip once it has room again.
                        writer.member_refusing(member, Some(message.clone()));
                        refusing = Some(message);
                        refusal_checked = Instant::now();
                    }
                    Some(Body::Error { kind, message }) => {
                        warn!(tenant = %tenant, member, ?kind, %message, "safekeeper refused an append");
                        break;
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep(VDL_NOTICE_INTERVAL) => {
                    if writer.stopping.load(Ordering::SeqCst) { break; }
                    if refusing.is_some() && refusal_checked.elapsed() >= REFUSAL_RECHECK_INTERVAL {
                        refusal_checked = Instant::now();
                        match client.call(hello.clone(), CALL_TIMEOUT).await {
                            Ok(Body::HelloOk { appends_refused, .. }) => {
                                if appends_refused.is_none() {
                                    writer.member_refusing(member, None);
                                }
                                refusing = appends_refused;
                            }
                            _ => break,
                        }
                    }
                    let vdl = writer.vdl();
                    let notice_segment = if vdl > told_vdl { writer.notice_segment(member) } else { None };
                    if let Some(segment) = notice_segment {
                        let notice = Body::Append {
                            tenant,
                            segment,
                            epoch: writer.epoch,
                            vdl,
                            records: Vec::new(),
                        };
                        if client.send(notice).await.is_err() {
                            break;
                        }
                        told_vdl = vdl;
                    }
                }
            }
        }
        // Disconnected: whatever it said about its budget is no longer known.
        writer.member_lost(member);
        up.send_modify(|u| u[member] = false);
        if !writer.stopping.load(Ordering::SeqCst) {
            warn!(tenant = %tenant, member, addr = %addr, "safekeeper connection lost");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::APPEND_BYTES_MAX;
    use super::*;
    use borealis_core::redo::RedoBody;
    use borealis_core::PageNo;
    use borealis_core::PAGE_SIZE_BYTES;

    fn image(lsn: u64) -> RedoRecord {
        RedoRecord {
            lsn: Lsn(lsn),
            prev_lsn_segment: Lsn(lsn - 1),
            prev_lsn_page: Lsn::INVALID,
            page_no: PageNo(lsn as u32),
            is_cpl: false,
            body: RedoBody::Image(vec![1; PAGE_SIZE_BYTES]),
        }
    }

    #[test]
    fn a_large_mtr_is_shipped_in_bounded_appends_in_lsn_order() {
        let records: Vec<RedoRecord> = (1..=1000).map(image).collect();
        let one = records[0].encoded_len();
        let chunks = append_chunks(&records, APPEND_BYTES_MAX);
        assert!(chunks.len() > 1, "4 MB of images is more than one append");
        let rejoined: Vec<Lsn> = chunks
            .iter()
            .flat_map(|c| c.iter().map(|r| r.lsn))
            .collect();
        assert_eq!(rejoined, (1..=1000).map(Lsn).collect::<Vec<_>>());
        for c in &chunks {
            let bytes: usize = c.iter().map(|r| r.encoded_len()).sum();
            assert!(bytes <= APPEND_BYTES_MAX && !c.is_empty(), "{bytes} bytes");
            assert!(bytes + one > APPEND_BYTES_MAX || std::ptr::eq(c, chunks.last().unwrap()));
        }
        // A record larger than the bound goes alone; nothing is ever empty.
        let chunks = append_chunks(&records[..3], one - 1);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        assert!(append_chunks(&[], APPEND_BYTES_MAX).is_empty());
    }
}
