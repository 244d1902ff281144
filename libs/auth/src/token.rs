//! Storage tokens and the keys that sign and verify them.
//!
//! A token is `bst1_` followed by the unpadded URL-safe base64 of a signed payload:
//!
//! ```text
//! 0      4  magic "BRLT"
//! 4      1  version (1)
//! 5      1  roles, a bit set: 1 gateway, 2 pageserver, 4 safekeeper, 8 operator
//! 6      1  1 if a tenant follows, 0 for all tenants
//! 7      8  tenant id, u64 little-endian (0 when none)
//! 15     8  expires at, seconds since the Unix epoch, u64 LE (0: never)
//! 23     1  subject length n (at most 64)
//! 24     n  subject, UTF-8 (the node id, or "gateway")
//! 24+n   4  CRC32C of bytes 0..24+n
//! 28+n  64  Ed25519 signature of bytes 0..28+n
//! ```
//!
//! Every field is checked before the signature is (length, magic, version, role, CRC), so a
//! corrupt token gets an error that says what is wrong; then the signature decides.

use crate::AuthError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use borealis_core::TenantId;
use ed25519_dalek::{Signer, Verifier};

pub const TOKEN_PREFIX: &str = "bst1_";
const TOKEN_MAGIC: [u8; 4] = *b"BRLT";
const TOKEN_VERSION: u8 = 1;
const SUBJECT_BYTES_MAX: usize = 64;
const FIXED_BYTES: usize = 24;
const CRC_BYTES: usize = 4;
const SIGNATURE_BYTES: usize = 64;
/// No token is longer: bounds what a peer can make the handshake decode.
const TOKEN_CHARS_MAX: usize = 512;

/// What a storage node may be asked by the holder of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The writer of a tenant's log and reader of its pages.
    Gateway,
    /// Follows every tenant's log, trims it after checkpoints.
    Pageserver,
    /// A peer filling holes by gossip.
    Safekeeper,
    /// Drops deleted tenants; reads states and summaries.
    Operator,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Pageserver => "pageserver",
            Role::Safekeeper => "safekeeper",
            Role::Operator => "operator",
        }
    }

    pub const ALL: [Role; 4] = [
        Role::Gateway,
        Role::Pageserver,
        Role::Safekeeper,
        Role::Operator,
    ];

    fn bit(self) -> u8 {
        match self {
            Role::Gateway => 1,
            Role::Pageserver => 2,
            Role::Safekeeper => 4,
            Role::Operator => 8,
        }
    }
}

/// The roles a token grants. Services are issued one role each; a token with several is made
/// only by test harnesses that play every part against one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |bits, r| bits | r.bit()))
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// `gateway+operator`, for errors and logs.
    pub fn names(self) -> String {
        Role::ALL
            .iter()
            .filter(|r| self.contains(**r))
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join("+")
    }

    fn from_bits(bits: u8) -> Option<Roles> {
        let known = Roles::of(&Role::ALL).0;
        (bits != 0 && bits & !known == 0).then_some(Roles(bits))
    }
}

impl From<Role> for Roles {
    fn from(role: Role) -> Roles {
        Roles::of(&[role])
    }
}

/// What a token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub roles: Roles,
    /// The one tenant the token covers; `None`: every tenant.
    pub tenant: Option<TenantId>,
    /// Who holds it, for logs: a node id, or "gateway".
    pub subject: String,
    /// Seconds since the Unix epoch after which the token is refused; 0: never.
    pub expires_at_secs: u64,
}

impl Claims {
    fn encode(&self) -> Vec<u8> {
        let subject = truncate_utf8(&self.subject, SUBJECT_BYTES_MAX);
        let mut out = Vec::with_capacity(FIXED_BYTES + subject.len() + CRC_BYTES);
        out.extend_from_slice(&TOKEN_MAGIC);
        out.push(TOKEN_VERSION);
        out.push(self.roles.0);
        out.push(u8::from(self.tenant.is_some()));
        out.extend_from_slice(&self.tenant.map_or(0, |t| t.0).to_le_bytes());
        out.extend_from_slice(&self.expires_at_secs.to_le_bytes());
        out.push(subject.len() as u8);
        out.extend_from_slice(subject.as_bytes());
        out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
        out
    }

    /// Decodes a payload (without the signature), checking every field.
    fn decode(p: &[u8]) -> Result<Claims, AuthError> {
        let bad = |why: &str| AuthError::Malformed(why.to_string());
        if p.len() < FIXED_BYTES + CRC_BYTES {
            return Err(bad("too short"));
        }
        if p[0..4] != TOKEN_MAGIC {
            return Err(bad("bad magic"));
        }
        if p[4] != TOKEN_VERSION {
            return Err(AuthError::Malformed(format!(
                "unsupported version {}",
                p[4]
            )));
        }
        let n = usize::from(p[23]);
        if n > SUBJECT_BYTES_MAX || p.len() != FIXED_BYTES + n + CRC_BYTES {
            return Err(bad("length does not match the subject length"));
        }
        let body = &p[..FIXED_BYTES + n];
        let stored = u32::from_le_bytes(read_array(&p[FIXED_BYTES + n..]));
        if crc32c::crc32c(body) != stored {
            return Err(bad("CRC mismatch"));
        }
        let roles = Roles::from_bits(p[5])
            .ok_or_else(|| AuthError::Malformed(format!("unknown roles {:#04x}", p[5])))?;
        let tenant = match p[6] {
            0 => None,
            1 => Some(TenantId(u64::from_le_bytes(read_array(&p[7..15])))),
            other => return Err(AuthError::Malformed(format!("bad tenant flag {other}"))),
        };
        let subject = std::str::from_utf8(&p[FIXED_BYTES..FIXED_BYTES + n])
            .map_err(|_| bad("subject is not UTF-8"))?
            .to_string();
        Ok(Claims {
            roles,
            tenant,
            subject,
            expires_at_secs: u64::from_le_bytes(read_array(&p[15..23])),
        })
    }
}

fn read_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The cluster's signing key: whoever holds it can mint any token.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    /// A new random key (from the operating system's CSPRNG, through `rand`'s thread RNG).
    pub fn generate() -> SigningKey {
        SigningKey::from_bytes(rand::random::<[u8; 32]>())
    }

    pub fn from_bytes(secret: [u8; 32]) -> SigningKey {
        SigningKey(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey(self.0.verifying_key())
    }

    /// A token carrying `claims`.
    pub fn issue(&self, claims: &Claims) -> String {
        let mut bytes = claims.encode();
        let signature = self.0.sign(&bytes);
        bytes.extend_from_slice(&signature.to_bytes());
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token for `roles`, covering `tenant` (or all), valid for `valid_secs` from now (0: no
    /// expiry).
    pub fn issue_for(
        &self,
        roles: impl Into<Roles>,
        tenant: Option<TenantId>,
        subject: &str,
        valid_secs: u64,
    ) -> String {
        let expires_at_secs = match valid_secs {
            0 => 0,
            s => now_secs().saturating_add(s),
        };
        self.issue(&Claims {
            roles: roles.into(),
            tenant,
            subject: subject.to_string(),
            expires_at_secs,
        })
    }
}

/// What storage nodes hold: checks tokens, cannot make them.
#[derive(Clone)]
pub struct VerifyingKey(ed25519_dalek::VerifyingKey);

impl VerifyingKey {
    pub fn from_bytes(public: [u8; 32]) -> Result<VerifyingKey, AuthError> {
        ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map(VerifyingKey)
            .map_err(|_| AuthError::Malformed("not an Ed25519 public key".into()))
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The claims of `token` if its signature verifies and it has not expired at `now_secs`.
    pub fn verify(&self, token: &str, now_secs: u64) -> Result<Claims, AuthError> {
        if token.len() > TOKEN_CHARS_MAX {
            return Err(AuthError::Malformed(format!(
                "{} characters, at most {TOKEN_CHARS_MAX}",
                token.len()
            )));
        }
        let encoded = token
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| AuthError::Malformed(format!("does not start with {TOKEN_PREFIX}")))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|e| AuthError::Malformed(format!("not base64: {e}")))?;
        if bytes.len() < SIGNATURE_BYTES {
            return Err(AuthError::Malformed("too short".into()));
        }
        let (payload, signature) = bytes.split_at(bytes.len() - SIGNATURE_BYTES);
        let claims = Claims::decode(payload)?;
        let signature = ed25519_dalek::Signature::from_bytes(&read_array(signature));
        self.0
            .verify(payload, &signature)
            .map_err(|_| AuthError::BadSignature)?;
        if claims.expires_at_secs != 0 && claims.expires_at_secs <= now_secs {
            return Err(AuthError::Expired {
                expired_at_secs: claims.expires_at_secs,
                now_secs,
            });
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            roles: Role::Gateway.into(),
            tenant: Some(TenantId(0x0102)),
            subject: "gateway".into(),
            expires_at_secs: 0,
        }
    }

    #[test]
    fn a_token_round_trips_and_is_checked() {
        let key = SigningKey::from_bytes([7; 32]);
        let token = key.issue(&claims());
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(key.verifying_key().verify(&token, 1).unwrap(), claims());
    }

    /// Pins the payload layout drawn in docs/formats/storage-token.md.
    #[test]
    fn payload_snapshot() {
        let hex: String = claims()
            .encode()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "42524c540101010201000000000000000000000000000007676174657761795d72c5d1"
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let key = SigningKey::from_bytes([9; 32]);
        let token = key.issue(&claims());
        let bytes = URL_SAFE_NO_PAD
            .decode(token.strip_prefix(TOKEN_PREFIX).unwrap())
            .unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let forged = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&b));
                assert!(
                    key.verifying_key().verify(&forged, 1).is_err(),
                    "bit {bit} of byte {i} flipped went unnoticed"
                );
            }
        }
    }

    #[test]
    fn expired_tokens_and_garbage_are_refused() {
        let key = SigningKey::generate();
        let token = key.issue(&Claims {
            expires_at_secs: 100,
            ..claims()
        });
        assert!(key.verifying_key().verify(&token, 99).is_ok());
        assert!(matches!(
            key.verifying_key().verify(&token, 100),
            Err(AuthError::Expired { .. })
        ));
        for garbage in ["", "bst1_", "bst1_!!!!", "Bearer x", &"a".repeat(10_000)] {
            assert!(key.verifying_key().verify(garbage, 1).is_err(), "{garbage}");
        }
    }
}
