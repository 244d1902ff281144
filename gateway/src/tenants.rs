//! The tenant registry: names, ids and hashed tokens, persisted in one JSON file.
//!
//! Tokens are 32 random bytes shown once, at creation; only their SHA-256 is stored, so a copy
//! of the gateway's data directory does not leak access. The file is replaced atomically
//! (write a temp file, fsync, rename, fsync the directory): a crash leaves the old or the new
//! registry, never a torn one.
//!
//! A deleted tenant moves from `tenants` to `deleting` in the same atomic write: it is gone for
//! clients at once (its name is free again; a new tenant of that name gets a new id), and stays
//! listed there until [`crate::reclaim`] has dropped its storage on every safekeeper and
//! pageserver, so a gateway restart resumes the reclaim instead of leaking the storage.

use borealis_core::TenantId;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

const REGISTRY_VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub id: TenantId,
    /// Hex SHA-256 of the tenant's token.
    pub token_sha256: String,
    /// The longest time limit this tenant's requests may ask for with `"timeout_ms"`, in
    /// milliseconds; `None` (and absent in registries written before it existed): the gateway's
    /// `--statement-timeout-max`. Between [`TIMEOUT_MAX_MS_MIN`] and `u32::MAX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout_max_ms: Option<u32>,
}

/// The lowest per-tenant maximum an admin may set: the gateway's own floor for a statement
/// timeout.
pub const TIMEOUT_MAX_MS_MIN: u32 = crate::config::STATEMENT_TIMEOUT_MS_MIN;

impl Tenant {
    /// The longest `"timeout_ms"` this tenant may ask for: its own maximum, else the gateway's.
    pub fn statement_timeout_max(&self, gateway_max: std::time::Duration) -> std::time::Duration {
        self.statement_timeout_max_ms.map_or(gateway_max, |ms| {
            std::time::Duration::from_millis(u64::from(ms))
        })
    }
}

/// A deleted tenant whose storage is still being reclaimed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub id: TenantId,
    pub name: String,
    /// When the tenant was deleted, in milliseconds since the Unix epoch.
    pub deleted_at_unix_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct RegistryFile {
    version: u32,
    tenants: Vec<Tenant>,
    /// Absent in registries written before deletion reclaimed storage: nothing pending.
    #[serde(default)]
    deleting: Vec<Deletion>,
}

pub struct Registry {
    path: PathBuf,
    tenants: BTreeMap<String, Tenant>,
    deleting: Vec<Deletion>,
}

/// DNS label: 1-63 of `a-z0-9-`, not starting or ending with `-` (docs/design.md §7).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tenant name {name:?}: use 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ))
    }
}

pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Compares two equal-length strings without an early exit.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// What a token's hash is compared against when no tenant has the name asked for: the same
/// length as a real hash, so the comparison does the same work, and (being all zeros) the
/// SHA-256 of no token anyone can find.
const NO_TENANT_TOKEN_SHA256: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

/// What a bearer token may do with the tenant a request names ([`Registry::authorize`]).
#[derive(Clone, Debug)]
pub enum Access {
    /// The tenant's own token, or the admin token on a tenant that exists.
    Granted(Tenant),
    /// The admin token on a name no tenant has: only the admin learns which names exist.
    NotFound,
    /// Another tenant's valid token, whether or not the name exists.
    Forbidden,
    /// A token that grants nothing, whether or not the name exists (docs/design.md §7).
    Unauthorized,
}

impl Registry {
    /// Decides a tenant-token request. The token is judged before the name: an unknown name
    /// never answers differently from a known one to a token that is not the admin's, so tenant
    /// names cannot be enumerated without the admin token. The work done is the same either way
    /// (the token's hash is compared against a dummy when the name is unknown, and every
    /// refusal scans all tenants), so the answer's timing does not tell either.
    pub fn authorize(&self, name: &str, token_sha256: &str, admin: bool) -> Access {
        let tenant = self.tenants.get(name);
        let expected = tenant.map_or(NO_TENANT_TOKEN_SHA256, |t| t.token_sha256.as_str());
        let own = constant_time_eq(expected, token_sha256);
        match tenant {
            Some(t) if own || admin => return Access::Granted(t.clone()),
            None if admin => return Access::NotFound,
            _ => {}
        }
        // Not a token for this name: is it some other tenant's? (`fold`, not `any`: no early
        // exit, so the scan takes as long whichever tenant the token belongs to.)
        let other = self.tenants.values().fold(false, |found, t| {
            constant_time_eq(&t.token_sha256, token_sha256) | found
        });
        if other {
            Access::Forbidden
        } else {
            Access::Unauthorized
        }
    }
}

impl Registry {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let (tenants, deleting) = match std::fs::read(path) {
            Ok(bytes) => {
                let file: RegistryFile = serde_json::from_slice(&bytes).map_err(|e| {
                    anyhow::anyhow!("tenant registry {} is unreadable: {e}", path.display())
                })?;
                anyhow::ensure!(
                    file.version == REGISTRY_VERSION,
                    "tenant registry {} has version {}, this gateway reads {REGISTRY_VERSION}",
                    path.display(),
                    file.version
                );
                let tenants = file
                    .tenants
                    .into_iter()
                    .map(|t| (t.name.clone(), t))
                    .collect();
                (tenants, file.deleting)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), Vec::new()),
            Err(e) => return Err(e.into()),
        };
        Ok(Self {
            path: path.to_path_buf(),
            tenants,
            deleting,
        })
    }

    pub fn get(&self, name: &str) -> Option<&Tenant> {
        self.tenants.get(name)
    }

    pub fn list(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values()
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Creates a tenant; returns it and its token (the only time the token exists in clear).
    /// `statement_timeout_max_ms`: its own maximum for `"timeout_ms"` (`None`: the gateway's).
    pub fn create(
        &mut self,
        name: &str,
        statement_timeout_max_ms: Option<u32>,
    ) -> anyhow::Result<Option<(Tenant, String)>> {
        check_timeout_max(statement_timeout_max_ms)?;
        if self.tenants.contains_key(name) {
            return Ok(None);
        }
        let mut rng = rand::rng();
        let mut raw = [0u8; 32];
        rng.fill_bytes(&mut raw);
        let token = format!("bt_{}", hex(&raw));
        let mut id = TenantId(rng.next_u64());
        while id.0 == 0
            || self.tenants.values().any(|t| t.id == id)
            || self.deleting.iter().any(|d| d.id == id)
        {
            id = TenantId(rng.next_u64());
        }
        let tenant = Tenant {
            name: name.to_string(),
            id,
            token_sha256: hash_token(&token),
            statement_timeout_max_ms,
        };
        self.tenants.insert(name.to_string(), tenant.clone());
        if let Err(e) = self.persist() {
            self.tenants.remove(name);
            return Err(e);
        }
        Ok(Some((tenant, token)))
    }

    /// Sets (or, with `None`, clears) a tenant's own maximum for `"timeout_ms"`; returns the
    /// tenant as it now is, or `None` if no tenant has the name.
    pub fn set_statement_timeout_max(
        &mut self,
        name: &str,
        statement_timeout_max_ms: Option<u32>,
    ) -> anyhow::Result<Option<Tenant>> {
        check_timeout_max(statement_timeout_max_ms)?;
        let Some(t) = self.tenants.get_mut(name) else {
            return Ok(None);
        };
        let before = std::mem::replace(&mut t.statement_timeout_max_ms, statement_timeout_max_ms);
        let now = t.clone();
        if let Err(e) = self.persist() {
            if let Some(t) = self.tenants.get_mut(name) {
                t.statement_timeout_max_ms = before;
            }
            return Err(e);
        }
        Ok(Some(now))
    }

    /// Deletes a tenant: it leaves `tenants` and joins `deleting` (one atomic write).
    pub fn remove(&mut self, name: &str) -> anyhow::Result<Option<Tenant>> {
        let Some(t) = self.tenants.remove(name) else {
            return Ok(None);
        };
        let deleted_at_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.deleting.push(Deletion {
            id: t.id,
            name: t.name.clone(),
            deleted_at_unix_ms,
        });
        if let Err(e) = self.persist() {
            self.deleting.pop();
            self.tenants.insert(name.to_string(), t);
            return Err(e);
        }
        Ok(Some(t))
    }

    /// Deleted tenants whose storage is not reclaimed yet, oldest first.
    pub fn deleting(&self) -> &[Deletion] {
        &self.deleting
    }

    /// Forgets a deleted tenant: its storage is reclaimed everywhere.
    pub fn reclaimed(&mut self, id: TenantId) -> anyhow::Result<()> {
        let Some(i) = self.deleting.iter().position(|d| d.id == id) else {
            return Ok(());
        };
        let d = self.deleting.remove(i);
        if let Err(e) = self.persist() {
            self.deleting.insert(i, d);
            return Err(e);
        }
        Ok(())
    }

    fn persist(&self) -> anyhow::Result<()> {
        let file = RegistryFile {
            version: REGISTRY_VERSION,
            tenants: self.tenants.values().cloned().collect(),
            deleting: self.deleting.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file)?;
        write_atomic(&self.path, &bytes)
    }
}

/// Refuses a per-tenant maximum below [`TIMEOUT_MAX_MS_MIN`] (the API checks first, with a
/// clearer message; this keeps the registry from ever holding one).
fn check_timeout_max(ms: Option<u32>) -> anyhow::Result<()> {
    match ms {
        Some(ms) if ms < TIMEOUT_MAX_MS_MIN => Err(anyhow::anyhow!(
            "a statement timeout maximum of {ms} ms is below the floor of {TIMEOUT_MAX_MS_MIN} ms"
        )),
        _ => Ok(()),
    }
}

/// Write a temp file, fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("{} has no parent", path.display()))?;
    let tmp = path.with_extension("tmp");
    {
        // Owner-only (docs/security.md): token hashes are no secret, but nobody else's business.
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // A temp file left by a crash keeps its old mode: set it again.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["a", "acme", "acme-2", "0", &"x".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "Acme", "a_b", "a.b", "ä", &"x".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_stored_hashed_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.json");
        let mut r = Registry::open(&path).unwrap();
        let (t, token) = r.create("acme", None).unwrap().unwrap();
        assert!(
            r.create("acme", None).unwrap().is_none(),
            "duplicate names are refused"
        );
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(
            !on_disk.contains(&token),
            "the clear token must never be stored"
        );
        let r2 = Registry::open(&path).unwrap();
        let back = r2.get("acme").unwrap();
        assert_eq!(back.id, t.id);
        assert!(constant_time_eq(&back.token_sha256, &hash_token(&token)));
        assert!(!constant_time_eq(
            &back.token_sha256,
            &hash_token("bt_wrong")
        ));
    }

    #[test]
    fn only_the_admin_token_tells_a_known_name_from_an_unknown_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Registry::open(&dir.path().join("tenants.json")).unwrap();
        let (a, token_a) = r.create("tenant-a", None).unwrap().unwrap();
        r.create("tenant-b", None).unwrap().unwrap();
        let a_hash = hash_token(&token_a);
        let wrong = hash_token("bt_wrong");
        let granted = |x: Access| match x {
            Access::Granted(t) => t.id,
            other => panic!("expected access, got {other:?}"),
        };
        assert_eq!(granted(r.authorize("tenant-a", &a_hash, false)), a.id);
        assert_eq!(granted(r.authorize("tenant-a", &wrong, true)), a.id);
        for name in ["tenant-a", "tenant-b", "nobody"] {
            assert!(
                matches!(r.authorize(name, &wrong, false), Access::Unauthorized),
                "{name}: a token that grants nothing"
            );
        }
        for name in ["tenant-b", "nobody"] {
            assert!(
                matches!(r.authorize(name, &a_hash, false), Access::Forbidden),
                "{name}: another tenant's token"
            );
        }
        assert!(matches!(
            r.authorize("nobody", &wrong, true),
            Access::NotFound
        ));
        // The dummy a token is compared against for an unknown name grants nothing, even to a
        // "token" whose hash it is.
        assert!(matches!(
            r.authorize("nobody", NO_TENANT_TOKEN_SHA256, false),
            Access::Unauthorized
        ));
    }

    #[cfg(unix)]
    #[test]
    fn the_registry_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.json");
        // A temp file left world-readable by an older gateway's crash.
        std::fs::write(path.with_extension("tmp"), b"").unwrap();
        std::fs::set_permissions(
            path.with_extension("tmp"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Registry::open(&path).unwrap().create("acme", None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "tenants.json is {mode:o}");
    }

    #[test]
    fn a_deleted_tenant_is_pending_reclaim_across_reopen_until_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.json");
        // A registry written before deletions were tracked still opens.
        std::fs::write(&path, br#"{"version":1,"tenants":[]}"#).unwrap();
        let mut r = Registry::open(&path).unwrap();
        let (old, _) = r.create("acme", None).unwrap().unwrap();
        let removed = r.remove("acme").unwrap().expect("acme existed");
        assert_eq!(removed.id, old.id);
        assert!(r.get("acme").is_none());
        assert_eq!(r.deleting().len(), 1);
        // The name is free at once, under a new id.
        let (new, _) = r.create("acme", None).unwrap().unwrap();
        assert_ne!(new.id, old.id);
        let mut r = Registry::open(&path).unwrap();
        assert_eq!(r.deleting()[0].id, old.id, "pending across a restart");
        assert_eq!(r.deleting()[0].name, "acme");
        r.reclaimed(old.id).unwrap();
        assert!(r.deleting().is_empty());
        assert!(Registry::open(&path).unwrap().deleting().is_empty());
        assert_eq!(
            Registry::open(&path).unwrap().get("acme").unwrap().id,
            new.id
        );
    }

    #[test]
    fn a_tenant_keeps_its_own_timeout_maximum_across_reopen_and_can_drop_it() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.json");
        // A registry written before tenants had settings: no maximum of their own.
        std::fs::write(
            &path,
            br#"{"version":1,"tenants":[{"name":"old","id":170,"token_sha256":"00"}]}"#,
        )
        .unwrap();
        let mut r = Registry::open(&path).unwrap();
        let gateway_max = Duration::from_secs(300);
        assert_eq!(r.get("old").unwrap().statement_timeout_max_ms, None);
        assert_eq!(
            r.get("old").unwrap().statement_timeout_max(gateway_max),
            gateway_max
        );
        let (t, _) = r.create("acme", Some(3_600_000)).unwrap().unwrap();
        assert_eq!(
            t.statement_timeout_max(gateway_max),
            Duration::from_secs(3600)
        );
        assert!(r.create("low", Some(9)).is_err(), "below the floor");
        assert!(r.get("low").is_none(), "a refused tenant is not created");
        let r2 = Registry::open(&path).unwrap();
        assert_eq!(
            r2.get("acme").unwrap().statement_timeout_max_ms,
            Some(3_600_000)
        );
        let mut r = r2;
        let now = r
            .set_statement_timeout_max("acme", Some(1_000))
            .unwrap()
            .unwrap();
        assert_eq!(now.statement_timeout_max_ms, Some(1_000));
        assert!(r.set_statement_timeout_max("acme", Some(0)).is_err());
        assert!(r
            .set_statement_timeout_max("nobody", Some(1_000))
            .unwrap()
            .is_none());
        assert_eq!(
            Registry::open(&path)
                .unwrap()
                .get("acme")
                .unwrap()
                .statement_timeout_max_ms,
            Some(1_000)
        );
        r.set_statement_timeout_max("acme", None).unwrap().unwrap();
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(!on_disk.contains("statement_timeout_max_ms"), "{on_disk}");
    }

    #[test]
    fn a_corrupt_registry_is_an_error_not_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenants.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(Registry::open(&path).is_err());
    }
}
