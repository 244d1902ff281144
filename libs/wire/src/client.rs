//! A pipelined client connection: many requests in flight, answers matched by request id.
//!
//! Two tasks own the socket: a writer that drains a bounded queue of encoded frames (flushing
//! when the queue runs dry, so bursts go out in few syscalls) and a reader that routes each answer
//! to the caller waiting for it. Messages nobody waits for (safekeeper acknowledgements, errors
//! for fire-and-forget appends) go to the `unsolicited` channel. When the connection breaks, every
//! waiting caller gets [`WireError::Closed`] and the unsolicited channel ends; a broken client is
//! never reused (callers reconnect).

use crate::frame::{encode_frame, read_frame, WireError};
use crate::message::{Body, Envelope};
use borealis_utils::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// Frames queued for the socket before senders wait: bounds a connection's memory.
pub const SEND_QUEUE_FRAMES_MAX: usize = 1024;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Body>>>>;

pub struct Client {
    addr: String,
    frames: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    closed: Arc<AtomicBool>,
}

impl Client {
    /// Connects to `addr` and authenticates with `token` (a storage token, see `borealis-auth`),
    /// each within `timeout`. Unsolicited messages go to `unsolicited` if given. A server that
    /// refuses the token answers [`WireError::Remote`] with `ErrorKind::Unauthorized`.
    pub async fn connect(
        addr: &str,
        token: &str,
        timeout: Duration,
        unsolicited: Option<mpsc::Sender<Body>>,
    ) -> Result<Client, WireError> {
        let client = Self::connect_unauthenticated(addr, timeout, unsolicited).await?;
        let auth = Body::Auth {
            token: token.to_string(),
        };
        match client.call(auth, timeout).await? {
            Body::Authenticated { .. } => Ok(client),
            other => Err(WireError::Unexpected(format!(
                "{} in answer to auth",
                other.name()
            ))),
        }
    }

    /// Connects without the `Auth` handshake: only for tests of what a server does with a
    /// connection that never authenticates.
    pub async fn connect_unauthenticated(
        addr: &str,
        timeout: Duration,
        unsolicited: Option<mpsc::Sender<Body>>,
    ) -> Result<Client, WireError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| WireError::Timeout(timeout.as_millis() as u64))??;
        stream.set_nodelay(true)?;
        let (mut rd, wr) = stream.into_split();
        let (frames, mut frames_rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE_FRAMES_MAX);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));

        let closed_w = closed.clone();
        tokio::spawn(async move {
            let mut w = BufWriter::with_capacity(256 * 1024, wr);
            while let Some(frame) = frames_rx.recv().await {
                if w.write_all(&frame).await.is_err() {
                    break;
                }
                while let Ok(frame) = frames_rx.try_recv() {
                    if w.write_all(&frame).await.is_err() {
                        closed_w.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                if w.flush().await.is_err() {
                    break;
                }
            }
            closed_w.store(true, Ordering::SeqCst);
        });

        let (pending_r, closed_r, peer) = (pending.clone(), closed.clone(), addr.to_string());
        tokio::spawn(async move {
            loop {
                match read_frame(&mut rd).await {
                    Ok(Some(env)) => {
                        let waiter = if env.request_id == 0 {
                            None
                        } else {
                            pending_r.locked().remove(&env.request_id)
                        };
                        match waiter {
                            Some(tx) => {
                                let _ = tx.send(env.body);
                            }
                            None => {
                                if let Some(u) = &unsolicited {
                                    if u.send(env.body).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %e, "connection read failed");
                        break;
                    }
                }
            }
            closed_r.store(true, Ordering::SeqCst);
            // Dropping the senders wakes every waiter with Closed.
            pending_r.locked().clear();
        });

        Ok(Client {
            addr: addr.to_string(),
            frames,
            pending,
            next_id: AtomicU64::new(1),
            closed,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) || self.frames.is_closed()
    }

    /// Sends `body` and waits up to `timeout` for its answer. An `Error` answer becomes
    /// [`WireError::Remote`].
    pub async fn call(&self, body: Body, timeout: Duration) -> Result<Body, WireError> {
        if self.is_closed() {
            return Err(WireError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.locked().insert(id, tx);
        let result = async {
            self.enqueue(&Envelope {
                request_id: id,
                body,
            })
            .await?;
            match tokio::time::timeout(timeout, rx).await {
                Err(_) => Err(WireError::Timeout(timeout.as_millis() as u64)),
                Ok(Err(_)) => Err(WireError::Closed),
                Ok(Ok(Body::Error { kind, message })) => Err(WireError::Remote { kind, message }),
                Ok(Ok(body)) => Ok(body),
            }
        }
        .await;
        self.pending.locked().remove(&id);
        result
    }

    /// Sends `body` without waiting for an answer; whatever comes back for it is unsolicited.
    pub async fn send(&self, body: Body) -> Result<(), WireError> {
        if self.is_closed() {
            return Err(WireError::Closed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.enqueue(&Envelope {
            request_id: id,
            body,
        })
        .await
    }

    async fn enqueue(&self, env: &Envelope) -> Result<(), WireError> {
        let frame = encode_frame(env)?;
        self.frames.send(frame).await.map_err(|_| WireError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::write_frame;
    use borealis_core::{ErrorKind, Lsn, TenantId};
    use tokio::net::TcpListener;

    /// A tiny server answering GetState with State and anything else with an error, plus one
    /// unsolicited Ack per request.
    async fn serve(listener: TcpListener) {
        let (sock, _) = listener.accept().await.unwrap();
        let (mut rd, mut wr) = sock.into_split();
        while let Ok(Some(env)) = read_frame(&mut rd).await {
            let body = match env.body {
                Body::Auth { token } if token == "good" => Body::Authenticated {
                    role: "test".into(),
                },
                Body::Auth { .. } => Body::error(ErrorKind::Unauthorized, "bad token"),
                Body::GetState { .. } => Body::State {
                    epoch: 1,
                    epoch_start_lsn: Lsn(0),
                    history: vec![],
                    known_vdl: Lsn(5),
                    segments: vec![],
                    promised_epoch: 0,
                },
                _ => Body::error(ErrorKind::Invalid, "nope"),
            };
            write_frame(
                &mut wr,
                &Envelope {
                    request_id: env.request_id,
                    body,
                },
            )
            .await
            .unwrap();
            let ack = Body::Ack {
                tenant: TenantId(1),
                segment: borealis_core::SegmentId(0),
                scl: Lsn(9),
                epoch: 1,
            };
            write_frame(
                &mut wr,
                &Envelope {
                    request_id: 0,
                    body: ack,
                },
            )
            .await
            .unwrap();
        }
    }

    #[tokio::test]
    async fn calls_are_matched_and_unsolicited_messages_routed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(serve(listener));
        let (utx, mut urx) = mpsc::channel(16);
        let c = Client::connect(&addr, "good", Duration::from_secs(5), Some(utx))
            .await
            .unwrap();
        let t = Duration::from_secs(5);
        let (a, b) = tokio::join!(
            c.call(
                Body::GetState {
                    tenant: TenantId(1)
                },
                t
            ),
            c.call(Body::GossipSummary, t)
        );
        assert!(matches!(
            a.unwrap(),
            Body::State {
                known_vdl: Lsn(5),
                ..
            }
        ));
        assert!(matches!(
            b,
            Err(WireError::Remote {
                kind: ErrorKind::Invalid,
                ..
            })
        ));
        assert!(matches!(
            urx.recv().await,
            Some(Body::Ack { scl: Lsn(9), .. })
        ));
        drop(c);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_dead_peer_fails_waiters_instead_of_hanging() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            drop(sock);
        });
        let c = Client::connect_unauthenticated(&addr, Duration::from_secs(5), None)
            .await
            .unwrap();
        server.await.unwrap();
        let r = c.call(Body::GossipSummary, Duration::from_secs(5)).await;
        assert!(matches!(r, Err(WireError::Closed)), "{r:?}");
    }

    #[tokio::test]
    async fn a_refused_token_fails_the_connect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(serve(listener));
        let r = Client::connect(&addr, "bad", Duration::from_secs(5), None).await;
        assert!(
            matches!(
                r,
                Err(WireError::Remote {
                    kind: ErrorKind::Unauthorized,
                    ..
                })
            ),
            "{:?}",
            r.err()
        );
        server.abort();
    }
}
