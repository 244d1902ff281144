//! Key and token files, and the cluster's `keys/` directory.
//!
//! ```text
//! keys/                      0700, made by `borealis up` on first start
//!   signing.key              0600  the cluster's Ed25519 signing key (borealis, gateway)
//!   verifying.key            0600  its public half (every safekeeper and pageserver)
//!   <node>.token             0600  each storage node's own token (role by node kind, all tenants)
//!   operator.token           0600  the operator's token (`borealis status` with tenant ids)
//! ```
//!
//! A key file is 44 bytes: magic `"BRLK"`, version 1, kind (1 signing, 2 verifying), two zero
//! bytes, the 32-byte key, CRC32C of the 40 bytes before it (docs/formats/storage-token.md).
//! Secret files are written owner-only, through a temporary file and a rename, and a secret
//! file that group or others can read is refused when loaded (as ssh refuses such a key).

use crate::token::{Role, Roles, SigningKey, VerifyingKey};
use crate::AuthError;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const KEYS_DIR: &str = "keys";
pub const SIGNING_KEY_FILE: &str = "signing.key";
pub const VERIFYING_KEY_FILE: &str = "verifying.key";
pub const OPERATOR_TOKEN_FILE: &str = "operator.token";

const KEY_MAGIC: [u8; 4] = *b"BRLK";
const KEY_VERSION: u8 = 1;
const KIND_SIGNING: u8 = 1;
const KIND_VERIFYING: u8 = 2;
const KEY_FILE_BYTES: usize = 44;
/// Secret files are small; anything larger is not one of ours.
const SECRET_FILE_BYTES_MAX: u64 = 4096;

fn key_error(path: &Path, reason: impl Into<String>) -> AuthError {
    AuthError::KeyFile {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Writes `bytes` to `path` readable by the owner only (0600), durably, replacing any file there.
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| key_error(path, e.to_string());
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// Reads a secret file, refusing one that group or others may read or that is too large.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, AuthError> {
    let meta = fs::metadata(path).map_err(|e| key_error(path, e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_error(
            path,
            format!("mode {mode:03o} lets others read a secret; chmod 600 it"),
        ));
    }
    if meta.len() > SECRET_FILE_BYTES_MAX {
        return Err(key_error(
            path,
            format!("{} bytes is not a key", meta.len()),
        ));
    }
    fs::read(path).map_err(|e| key_error(path, e.to_string()))
}

fn encode_key(kind: u8, key: [u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEY_FILE_BYTES);
    out.extend_from_slice(&KEY_MAGIC);
    out.extend_from_slice(&[KEY_VERSION, kind, 0, 0]);
    out.extend_from_slice(&key);
    out.extend_from_slice(&crc32c::crc32c(&out).to_le_bytes());
    out
}

fn decode_key(path: &Path, kind: u8, bytes: &[u8]) -> Result<[u8; 32], AuthError> {
    if bytes.len() != KEY_FILE_BYTES {
        return Err(key_error(
            path,
            format!("{} bytes, expected {KEY_FILE_BYTES}", bytes.len()),
        ));
    }
    if bytes[0..4] != KEY_MAGIC {
        return Err(key_error(path, "bad magic: not a Borealis key file"));
    }
    if bytes[4] != KEY_VERSION || bytes[6..8] != [0, 0] {
        return Err(key_error(path, format!("unsupported version {}", bytes[4])));
    }
    if bytes[5] != kind {
        return Err(key_error(
            path,
            format!("key kind {}, expected {kind}", bytes[5]),
        ));
    }
    let stored = u32::from_le_bytes([bytes[40], bytes[41], bytes[42], bytes[43]]);
    if crc32c::crc32c(&bytes[..40]) != stored {
        return Err(key_error(path, "CRC mismatch"));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&bytes[8..40]);
    Ok(key)
}

impl SigningKey {
    pub fn load(path: &Path) -> Result<SigningKey, AuthError> {
        let bytes = read_secret_file(path)?;
        decode_key(path, KIND_SIGNING, &bytes).map(SigningKey::from_bytes)
    }

    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        write_secret_file(path, &encode_key(KIND_SIGNING, self.to_bytes()))
    }
}

impl VerifyingKey {
    pub fn load(path: &Path) -> Result<VerifyingKey, AuthError> {
        let bytes = read_secret_file(path)?;
        VerifyingKey::from_bytes(decode_key(path, KIND_VERIFYING, &bytes)?)
    }

    pub fn save(&self, path: &Path) -> Result<(), AuthError> {
        write_secret_file(path, &encode_key(KIND_VERIFYING, self.to_bytes()))
    }
}

/// Reads a token file (one line).
pub fn read_token_file(path: &Path) -> Result<String, AuthError> {
    let bytes = read_secret_file(path)?;
    let text = String::from_utf8(bytes).map_err(|_| key_error(path, "not UTF-8"))?;
    Ok(text.trim().to_string())
}

/// A cluster's `keys/` directory (see the module docs).
pub struct ClusterKeys {
    dir: PathBuf,
    signing: SigningKey,
}

impl ClusterKeys {
    /// Opens `cluster_dir/keys`, making the directory, the signing key and its public half if
    /// they are not there yet (a cluster's first start).
    pub fn ensure(cluster_dir: &Path) -> Result<ClusterKeys, AuthError> {
        let dir = cluster_dir.join(KEYS_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| key_error(&dir, e.to_string()))?;
        let signing_path = dir.join(SIGNING_KEY_FILE);
        let signing = if signing_path.exists() {
            SigningKey::load(&signing_path)?
        } else {
            let key = SigningKey::generate();
            key.save(&signing_path)?;
            key
        };
        signing
            .verifying_key()
            .save(&dir.join(VERIFYING_KEY_FILE))?;
        let keys = ClusterKeys { dir, signing };
        keys.write_token(OPERATOR_TOKEN_FILE, Role::Operator.into(), "operator")?;
        Ok(keys)
    }

    /// Opens an existing `cluster_dir/keys` (the operator's tools, tests).
    pub fn open(cluster_dir: &Path) -> Result<ClusterKeys, AuthError> {
        let dir = cluster_dir.join(KEYS_DIR);
        let signing = SigningKey::load(&dir.join(SIGNING_KEY_FILE))?;
        Ok(ClusterKeys { dir, signing })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn signing_key_path(&self) -> PathBuf {
        self.dir.join(SIGNING_KEY_FILE)
    }

    pub fn verifying_key_path(&self) -> PathBuf {
        self.dir.join(VERIFYING_KEY_FILE)
    }

    /// The operator's token (made by [`ClusterKeys::ensure`]).
    pub fn operator_token(&self) -> Result<String, AuthError> {
        read_token_file(&self.dir.join(OPERATOR_TOKEN_FILE))
    }

    /// Writes (or rewrites) the token file of a storage node and returns its path.
    pub fn node_token_file(&self, node: &str, role: Role) -> Result<PathBuf, AuthError> {
        self.write_token(&format!("{node}.token"), role.into(), node)
    }

    /// A token with every role for every tenant: for test harnesses that play every part
    /// against one node. Nothing in a running cluster is given one.
    pub fn all_roles_token(&self) -> String {
        self.signing
            .issue_for(Roles::of(&Role::ALL), None, "test-harness", 0)
    }

    fn write_token(&self, file: &str, roles: Roles, subject: &str) -> Result<PathBuf, AuthError> {
        let path = self.dir.join(file);
        let token = self.signing.issue_for(roles, None, subject, 0);
        write_secret_file(&path, format!("{token}\n").as_bytes())?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_once_owner_only_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = ClusterKeys::ensure(dir.path()).unwrap();
        let again = ClusterKeys::ensure(dir.path()).unwrap();
        assert_eq!(
            first.signing_key().to_bytes(),
            again.signing_key().to_bytes()
        );
        for entry in fs::read_dir(first.dir()).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let mode = fs::metadata(first.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let token = first.operator_token().unwrap();
        let verifying = VerifyingKey::load(&first.verifying_key_path()).unwrap();
        assert_eq!(
            verifying.verify(&token, 1).unwrap().roles,
            Role::Operator.into()
        );
    }

    #[test]
    fn a_secret_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ClusterKeys::ensure(dir.path()).unwrap();
        let path = keys.signing_key_path();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::load(&path).err().unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn a_corrupt_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ClusterKeys::ensure(dir.path()).unwrap();
        let path = keys.verifying_key_path();
        let good = fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            write_secret_file(&path, &bad).unwrap();
            assert!(VerifyingKey::load(&path).is_err(), "flip at byte {i}");
        }
        // A signing key is not a verifying key.
        let signing = fs::read(keys.signing_key_path()).unwrap();
        write_secret_file(&path, &signing).unwrap();
        assert!(VerifyingKey::load(&path).is_err());
    }
}
