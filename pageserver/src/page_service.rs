//! The wire-protocol server: GetPage and GetPages over pipelined connections.
//!
//! Each connection has a reader that decodes frames and starts one task per request, and a writer
//! that sends answers as they complete, each carrying its request's id, so a slow GetPage (waiting
//! for the log) never holds up the ones behind it. Requests in flight per connection are bounded
//! ([`REQUESTS_IN_FLIGHT_MAX`]); beyond that the reader stops reading, which pushes back on the
//! client through TCP. A frame that fails its checks ends the connection: the byte stream cannot
//! be trusted after it.
//!
//! Every connection starts with an `Auth` frame (`borealis-auth`): a token that does not verify
//! gets `Unauthorized` and the connection is closed; every later request is checked against the
//! token's role and tenant (a gateway's token for tenant A gets no page of tenant B).

use crate::get_page::{get_page, get_pages};
use crate::tenant::Tenants;
use borealis_auth::{handshake, Handshake, VerifyingKey};
use borealis_core::ErrorKind;
use borealis_wire::{read_frame, write_frame, Body, Envelope, PageAnswer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, warn, Instrument};

/// GetPage requests one connection may have in flight.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 1024;
/// Answers queued for a connection's writer.
pub const ANSWERS_QUEUED_MAX: usize = 1024;

/// Pause after a failed `accept` (out of file descriptors, say) before trying again.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Accepts connections for ever; a failed `accept` is logged and retried.
pub async fn serve(
    listener: TcpListener,
    tenants: Arc<Tenants>,
    key: VerifyingKey,
) -> std::io::Result<()> {
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        let span = tracing::info_span!("conn", peer = %peer);
        tokio::spawn(serve_connection(sock, tenants.clone(), key.clone()).instrument(span));
    }
}

async fn serve_connection(sock: TcpStream, tenants: Arc<Tenants>, key: VerifyingKey) {
    if let Err(e) = sock.set_nodelay(true) {
        debug!(error = %e, "set_nodelay failed");
    }
    let (mut rd, wr) = sock.into_split();
    let (answers, mut answers_rx) = mpsc::channel::<Envelope>(ANSWERS_QUEUED_MAX);
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::new(wr);
        while let Some(env) = answers_rx.recv().await {
            if write_frame(&mut w, &env).await.is_err() {
                return;
            }
            while let Ok(env) = answers_rx.try_recv() {
                if write_frame(&mut w, &env).await.is_err() {
                    return;
                }
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });
    let claims = match handshake(&mut rd, &key).await {
        Handshake::Accepted { claims, answer } => {
            debug!(who = %claims.describe(), "authenticated");
            if answers.send(answer).await.is_err() {
                return;
            }
            claims
        }
        Handshake::Refused { error, answer } => {
            warn!(%error, "connection refused: authentication failed");
            tenants.shared().metrics.auth_refused_total.inc();
            let _ = answers.send(answer).await;
            drop(answers);
            let _ = writer.await;
            return;
        }
        Handshake::Gone(why) => {
            debug!(why, "connection closed before authenticating");
            return;
        }
    };
    let mut denials = 0u64;
    let slots = Arc::new(Semaphore::new(REQUESTS_IN_FLIGHT_MAX));
    loop {
        let env = match read_frame(&mut rd).await {
            Ok(Some(env)) => env,
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "dropping connection after a bad frame");
                break;
            }
        };
        if let Err(error) = claims.permits(&env.body) {
            // Logged once per connection; the metric counts every refusal.
            if denials == 0 {
                warn!(%error, "request refused");
            }
            denials += 1;
            tenants.shared().metrics.auth_refused_total.inc();
            let refusal = Envelope {
                request_id: env.request_id,
                body: error.to_body(),
            };
            if answers.send(refusal).await.is_err() {
                break;
            }
            continue;
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (tenants, answers) = (tenants.clone(), answers.clone());
        tokio::spawn(async move {
            let body = answer(&tenants, env.body).await;
            let _ = answers
                .send(Envelope {
                    request_id: env.request_id,
                    body,
                })
                .await;
            drop(slot);
        });
    }
    drop(answers);
    // In-flight requests finish and their answers are written before the writer ends.
    let _ = writer.await;
    debug!("connection closed");
}

async fn answer(tenants: &Tenants, request: Body) -> Body {
    match request {
        Body::GetPage {
            tenant,
            page,
            lsn,
            epoch,
        } => match get_page(tenants, tenant, page, lsn, epoch).await {
            Ok(image) => Body::Page {
                image: image.map(|i| i.to_vec()),
            },
            Err(e) => {
                debug!(tenant = %tenant, page = %page, lsn = %lsn, error = %e, "get_page failed");
                Body::error(e.kind(), e.to_string())
            }
        },
        Body::GetPages {
            tenant,
            lsn,
            epoch,
            pages,
        } => match get_pages(tenants, tenant, &pages, lsn, epoch).await {
            Ok(answers) => Body::Pages {
                pages: answers
                    .into_iter()
                    .zip(&pages)
                    .map(|(answer, page)| match answer {
                        Ok(Some(image)) => PageAnswer::Image(image.to_vec()),
                        Ok(None) => PageAnswer::NeverWritten,
                        Err(e) => {
                            debug!(tenant = %tenant, page = %page, lsn = %lsn, error = %e, "a page of get_pages failed");
                            PageAnswer::Failed {
                                kind: e.kind(),
                                message: e.to_string(),
                            }
                        }
                    })
                    .collect(),
            },
            Err(e) => {
                debug!(tenant = %tenant, pages = pages.len(), lsn = %lsn, error = %e, "get_pages failed");
                Body::error(e.kind(), e.to_string())
            }
        },
        Body::DropTenant { tenant } => match tenants.drop_tenant(tenant).await {
            Ok(d) => Body::TenantDropped {
                bytes_freed: d.local_bytes,
                objects_deleted: d.objects_deleted,
            },
            Err(e) => {
                warn!(tenant = %tenant, error = %e, "dropping a deleted tenant failed (the gateway retries)");
                Body::error(
                    if e.is_retryable() {
                        ErrorKind::Unavailable
                    } else {
                        ErrorKind::Internal
                    },
                    format!("dropping tenant {tenant}: {e}"),
                )
            }
        },
        other => Body::error(
            ErrorKind::Invalid,
            format!("a pageserver does not answer {}", other.name()),
        ),
    }
}
