//! # borealis-auth: who may say what to a storage node
//!
//! Safekeepers and pageservers hold every tenant's data, so their ports are a trust boundary
//! (docs/security.md). Every connection to them starts with an `Auth` frame carrying a **storage
//! token**; the node verifies it, remembers the [`Claims`] for the connection's life, and checks
//! every later request against them ([`Claims::permits`]). A request its claims do not cover is
//! answered `Error { kind: Unauthorized }` and changes nothing.
//!
//! Tokens are **signed with Ed25519**. The cluster has one signing key; only the operator's
//! tooling (`borealis up`) and the gateway (the control plane: it creates tenants and mints a
//! tenant-scoped token for each connection it opens) hold it. Storage nodes hold only the
//! public key, so a compromised safekeeper can read what it stores but cannot mint a token that
//! would let it write or drop another node's tenants. This is the shape of Neon's per-tenant
//! JWTs, without a JSON parser on the storage nodes' hot path: authentication happens once per
//! connection, never per record.
//!
//! | role         | may send                                                         | tenants                   |
//! |--------------|------------------------------------------------------------------|---------------------------|
//! | `gateway`    | `Hello`, `Append`, `GetState`, `Fence`, `ReadLsns`, `GetPage`, `GetPages` | the one its token names   |
//! | `pageserver` | `ReadLog`, `GetState`, `Trim`                                             | all                       |
//! | `safekeeper` | `GossipSummary`, `ReadLog`, `GetState`                                    | all (peers filling holes) |
//! | `operator`   | `DropTenant`, `GetState`, `GossipSummary`                                 | all                       |
//!
//! A token names its tenant or, with `tenant: None`, covers all of them; a gateway token minted
//! for tenant A is refused for anything of tenant B. The byte layout of tokens and key files is
//! drawn in `docs/formats/storage-token.md`.

mod files;
mod token;

pub use files::{
    read_secret_file, read_token_file, write_secret_file, ClusterKeys, KEYS_DIR,
    OPERATOR_TOKEN_FILE, SIGNING_KEY_FILE, VERIFYING_KEY_FILE,
};
pub use token::{Claims, Role, Roles, SigningKey, VerifyingKey, TOKEN_PREFIX};

use borealis_core::{ErrorKind, TenantId};
use borealis_wire::{read_frame, Body, Envelope};
use std::time::Duration;
use thiserror::Error;
use tokio::io::AsyncRead;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("malformed storage token: {0}")]
    Malformed(String),
    #[error("storage token signature does not verify (signed by another cluster's key?)")]
    BadSignature,
    #[error("storage token expired at {expired_at_secs} (now {now_secs})")]
    Expired { expired_at_secs: u64, now_secs: u64 },
    #[error("the first frame on a storage connection must be Auth, not {0}")]
    NotAuth(&'static str),
    #[error("{0}")]
    Denied(String),
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
}

impl AuthError {
    /// The wire error answered for this failure.
    pub fn to_body(&self) -> Body {
        Body::error(ErrorKind::Unauthorized, self.to_string())
    }
}

/// The tenant a request concerns, if it names one.
pub fn tenant_of(body: &Body) -> Option<TenantId> {
    match body {
        Body::Hello { tenant, .. }
        | Body::Append { tenant, .. }
        | Body::GetState { tenant }
        | Body::Fence { tenant, .. }
        | Body::ReadLog { tenant, .. }
        | Body::GetPage { tenant, .. }
        | Body::GetPages { tenant, .. }
        | Body::Trim { tenant, .. }
        | Body::ReadLsns { tenant, .. }
        | Body::DropTenant { tenant } => Some(*tenant),
        // Listed, not `_`: a new request naming a tenant must be added above, or this fails to
        // compile instead of letting a tenant-scoped token reach another tenant.
        Body::GossipSummary
        | Body::HelloOk { .. }
        | Body::Ack { .. }
        | Body::State { .. }
        | Body::Records { .. }
        | Body::Summary { .. }
        | Body::Page { .. }
        | Body::Error { .. }
        | Body::Trimmed { .. }
        | Body::LogTrimmed { .. }
        | Body::TenantDropped { .. }
        | Body::Auth { .. }
        | Body::Authenticated { .. }
        | Body::Lsns { .. }
        | Body::Pages { .. } => None,
    }
}

impl Claims {
    /// Whether these claims allow `request`. The error says who asked for what.
    pub fn permits(&self, request: &Body) -> Result<(), AuthError> {
        let allowed = Role::ALL
            .iter()
            .any(|r| self.roles.contains(*r) && role_permits(*r, request));
        if !allowed {
            return Err(AuthError::Denied(format!(
                "{} may not send {}",
                self.describe(),
                request.name()
            )));
        }
        match (self.tenant, tenant_of(request)) {
            (Some(mine), Some(asked)) if mine != asked => Err(AuthError::Denied(format!(
                "{} may not send {} for tenant {asked}",
                self.describe(),
                request.name()
            ))),
            _ => Ok(()),
        }
    }

    /// `role 'gateway' (subject 'gw', tenant 00..01)`, for errors and logs.
    pub fn describe(&self) -> String {
        match self.tenant {
            Some(t) => format!(
                "role '{}' (subject '{}', tenant {t})",
                self.roles.names(),
                self.subject
            ),
            None => format!("role '{}' (subject '{}')", self.roles.names(), self.subject),
        }
    }
}

/// The permission table of the crate docs.
fn role_permits(role: Role, request: &Body) -> bool {
    match role {
        Role::Gateway => matches!(
            request,
            Body::Hello { .. }
                | Body::Append { .. }
                | Body::GetState { .. }
                | Body::Fence { .. }
                | Body::ReadLsns { .. }
                | Body::GetPage { .. }
                | Body::GetPages { .. }
        ),
        Role::Pageserver => matches!(
            request,
            Body::ReadLog { .. } | Body::GetState { .. } | Body::Trim { .. }
        ),
        Role::Safekeeper => matches!(
            request,
            Body::GossipSummary | Body::ReadLog { .. } | Body::GetState { .. }
        ),
        Role::Operator => matches!(
            request,
            Body::DropTenant { .. } | Body::GetState { .. } | Body::GossipSummary
        ),
    }
}

/// Whether an HTTP `Authorization` header value is `Bearer <token>` with a storage token that
/// `key` verifies and that grants the operator role. Admin pages (`/status`) list tenant ids
/// only to the operator.
pub fn bearer_is_operator(key: &VerifyingKey, authorization: Option<&str>) -> bool {
    authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| key.verify(t.trim(), token::now_secs()).ok())
        .is_some_and(|c| c.roles.contains(Role::Operator))
}

/// A connection that has not sent its `Auth` within this long is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection's handshake ended.
pub enum Handshake {
    /// Send `answer`, then serve the connection under `claims`.
    Accepted { claims: Claims, answer: Envelope },
    /// Send `answer` (an `Unauthorized` error), then close the connection.
    Refused { error: AuthError, answer: Envelope },
    /// The peer closed, sent a broken frame, or sent nothing in time: close without answering.
    Gone(String),
}

/// Reads a connection's first frame and authenticates it against `key` (the server side of
/// the handshake, for safekeepers and pageservers alike).
pub async fn handshake<R: AsyncRead + Unpin>(rd: &mut R, key: &VerifyingKey) -> Handshake {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, read_frame(rd)).await {
        Err(_) => Handshake::Gone(format!("no Auth within {HANDSHAKE_TIMEOUT:?}")),
        Ok(Ok(None)) => Handshake::Gone("closed before Auth".into()),
        Ok(Err(e)) => Handshake::Gone(format!("bad first frame: {e}")),
        Ok(Ok(Some(first))) => match accept(key, first) {
            (Ok(claims), answer) => Handshake::Accepted { claims, answer },
            (Err(error), answer) => Handshake::Refused { error, answer },
        },
    }
}

/// The server side of the handshake: checks that `first` (the connection's first frame) is an
/// `Auth` whose token `key` verifies, and returns the claims with the answer to send. On an
/// error the answer is an `Unauthorized` error and the caller closes the connection.
pub fn accept(key: &VerifyingKey, first: Envelope) -> (Result<Claims, AuthError>, Envelope) {
    let result = match first.body {
        Body::Auth { token } => key.verify(&token, token::now_secs()),
        other => Err(AuthError::NotAuth(other.name())),
    };
    let body = match &result {
        Ok(claims) => Body::Authenticated {
            role: claims.roles.names(),
        },
        Err(e) => e.to_body(),
    };
    (
        result,
        Envelope {
            request_id: first.request_id,
            body,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use borealis_core::{Lsn, SegmentId};

    fn claims(role: Role, tenant: Option<u64>) -> Claims {
        Claims {
            roles: role.into(),
            tenant: tenant.map(TenantId),
            subject: "t".into(),
            expires_at_secs: 0,
        }
    }

    fn drop_tenant(t: u64) -> Body {
        Body::DropTenant {
            tenant: TenantId(t),
        }
    }

    fn append(t: u64) -> Body {
        Body::Append {
            tenant: TenantId(t),
            segment: SegmentId(0),
            epoch: 1,
            vdl: Lsn(0),
            records: vec![],
        }
    }

    #[test]
    fn each_role_may_send_only_its_own_requests() {
        let gw = claims(Role::Gateway, Some(1));
        assert!(gw.permits(&append(1)).is_ok());
        assert!(gw.permits(&drop_tenant(1)).is_err());
        assert!(gw.permits(&Body::GossipSummary).is_err());
        let ps = claims(Role::Pageserver, None);
        assert!(ps.permits(&append(1)).is_err());
        assert!(ps.permits(&drop_tenant(1)).is_err());
        let op = claims(Role::Operator, None);
        assert!(op.permits(&drop_tenant(7)).is_ok());
        assert!(op.permits(&append(7)).is_err());
        let sk = claims(Role::Safekeeper, None);
        assert!(sk.permits(&Body::GossipSummary).is_ok());
        assert!(sk.permits(&append(1)).is_err());
        // Answers are never requests.
        assert!(op.permits(&Body::Trimmed { base: Lsn(0) }).is_err());
    }

    #[test]
    fn a_tenant_scoped_token_covers_only_its_tenant() {
        let gw = claims(Role::Gateway, Some(1));
        let err = gw.permits(&append(2)).unwrap_err();
        assert!(err.to_string().contains("tenant 0000000000000002"), "{err}");
        let read_lsns = |t: u64| Body::ReadLsns {
            tenant: TenantId(t),
            segment: SegmentId(0),
            after: Lsn(0),
            upto: Lsn(9),
            max_entries: 9,
        };
        assert!(gw.permits(&read_lsns(1)).is_ok());
        assert!(gw.permits(&read_lsns(2)).is_err(), "another tenant's index");
        assert!(claims(Role::Safekeeper, None)
            .permits(&read_lsns(1))
            .is_err());
        let get_pages = |t: u64| Body::GetPages {
            tenant: TenantId(t),
            lsn: Lsn(1),
            epoch: 1,
            pages: vec![borealis_core::PageNo(0)],
        };
        assert!(gw.permits(&get_pages(1)).is_ok());
        assert!(gw.permits(&get_pages(2)).is_err(), "another tenant's pages");
        assert!(claims(Role::Pageserver, None)
            .permits(&get_pages(1))
            .is_err());
    }

    #[test]
    fn the_handshake_accepts_a_good_token_and_refuses_anything_else() {
        let key = SigningKey::generate();
        let token = key.issue(&claims(Role::Pageserver, None));
        let (ok, answer) = accept(
            &key.verifying_key(),
            Envelope {
                request_id: 1,
                body: Body::Auth { token },
            },
        );
        assert_eq!(ok.unwrap().roles, Role::Pageserver.into());
        assert!(matches!(answer.body, Body::Authenticated { .. }));

        let (err, answer) = accept(
            &key.verifying_key(),
            Envelope {
                request_id: 1,
                body: Body::GossipSummary,
            },
        );
        assert_eq!(err.unwrap_err(), AuthError::NotAuth("gossip_summary"));
        assert!(matches!(
            answer.body,
            Body::Error {
                kind: ErrorKind::Unauthorized,
                ..
            }
        ));

        let other = SigningKey::generate().issue(&claims(Role::Operator, None));
        let (err, _) = accept(
            &key.verifying_key(),
            Envelope {
                request_id: 1,
                body: Body::Auth { token: other },
            },
        );
        assert_eq!(err.unwrap_err(), AuthError::BadSignature);
    }
}
