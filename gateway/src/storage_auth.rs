//! The gateway's storage credentials.
//!
//! The gateway holds the cluster's signing key (`--auth-signing-key`, made by `borealis up`):
//! it is the control plane that creates tenants, and it mints a fresh token scoped to one
//! tenant for each connection it opens to a safekeeper or pageserver on that tenant's behalf
//! (`role gateway`, valid [`TENANT_TOKEN_VALID_SECS`]; a connection is authenticated once, when
//! it opens), and an operator token for reclaiming deleted tenants. A bug that sent tenant A's
//! appends or GetPages down tenant B's connection is refused by the storage node, not obeyed.

use borealis_auth::{Role, SigningKey};
use borealis_core::TenantId;
use std::path::Path;

/// How long a minted tenant token is accepted for a new connection.
pub const TENANT_TOKEN_VALID_SECS: u64 = 3600;

pub struct StorageTokens {
    key: SigningKey,
}

/// Never prints the key.
impl std::fmt::Debug for StorageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StorageTokens { .. }")
    }
}

impl StorageTokens {
    pub fn new(key: SigningKey) -> StorageTokens {
        StorageTokens { key }
    }

    pub fn load(path: &Path) -> Result<StorageTokens, borealis_auth::AuthError> {
        SigningKey::load(path).map(StorageTokens::new)
    }

    /// A token for writing `tenant`'s log and reading its pages.
    pub fn tenant(&self, tenant: TenantId) -> String {
        self.key.issue_for(
            Role::Gateway,
            Some(tenant),
            "gateway",
            TENANT_TOKEN_VALID_SECS,
        )
    }

    /// A token for dropping deleted tenants.
    pub fn operator(&self) -> String {
        self.key
            .issue_for(Role::Operator, None, "gateway", TENANT_TOKEN_VALID_SECS)
    }
}
