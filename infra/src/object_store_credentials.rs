//! Object-store credentials: never on a command line, never in a printed line.
//!
//! `borealis up --object-store 's3://bucket?endpoint=...&access_key_id=K&secret_access_key=S'`
//! is accepted (scripts do it), but the credentials go no further than this command. They are
//! taken out of the URL before it is saved in `cluster.json`, printed, or put on a pageserver's
//! command line (where `ps` shows it to every user of the machine); they are kept in
//! `DIR/object_store_credentials.json` (0600) and handed to each pageserver `borealis` starts in
//! its environment, as `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, which the S3 client reads.
//! Credentials given in the environment in the first place (the better way: this command's own
//! arguments are visible in the process list too) are inherited by the nodes and written
//! nowhere. The pageserver itself refuses a URL that carries credentials.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file under the cluster directory that holds credentials taken out of a URL.
pub const CREDENTIALS_FILE: &str = "object_store_credentials.json";
const FILE_VERSION: u32 = 1;
/// The query parameters `borealis_objstore` reads credentials from, and the environment
/// variables the S3 client reads them from instead.
const PARAMS: [(&str, &str); 2] = [
    ("access_key_id", "AWS_ACCESS_KEY_ID"),
    ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
];

/// Credentials taken out of an object-store URL (either may be absent: given by environment).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret_access_key: Option<String>,
}

/// Never prints the secret, whatever prints a `Credentials`.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "…"))
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .finish()
    }
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        self.access_key_id.is_none() && self.secret_access_key.is_none()
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join(CREDENTIALS_FILE)
    }

    /// Writes `DIR/object_store_credentials.json`, owner-only, atomically.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let mut saved = self.clone();
        saved.version = FILE_VERSION;
        borealis_auth::write_secret_file(&Self::path(dir), &serde_json::to_vec_pretty(&saved)?)?;
        Ok(())
    }

    /// The credentials kept for the cluster in `dir`, if any.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Credentials>> {
        let path = Self::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // Not `with_context(e)`: serde's message could quote the file's contents.
        let c: Credentials = serde_json::from_slice(&bytes)
            .map_err(|_| anyhow::anyhow!("{} does not parse", path.display()))?;
        if c.version != FILE_VERSION {
            bail!(
                "{} has version {}, this borealis reads {FILE_VERSION}",
                path.display(),
                c.version
            );
        }
        Ok(Some(c))
    }

    /// The environment a node gets: the credentials as the S3 client's variables.
    fn env(&self) -> Vec<(&'static str, String)> {
        let values = [&self.access_key_id, &self.secret_access_key];
        PARAMS
            .iter()
            .zip(values)
            .filter_map(|((_, var), v)| v.clone().map(|v| (*var, v)))
            .collect()
    }
}

/// Takes the credentials out of an object-store URL: the URL without them (the other
/// parameters as they were written), and what was taken. A `user:password@` part is refused:
/// the S3 client would ignore it. Errors never quote the URL's query.
pub fn split(url: &str) -> anyhow::Result<(String, Credentials)> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| anyhow::anyhow!("object store URL {} does not parse", redact_query(url)))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        bail!(
            "object store URL {}: give credentials as AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY in the environment, not as user:password@",
            redact_query(url).replace(&format!("{}@", authority_userinfo(url)), "…@")
        );
    }
    let mut creds = Credentials::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), creds));
    };
    let mut kept = Vec::new();
    for raw in query.split('&') {
        // Decoded as the object store decodes it (`application/x-www-form-urlencoded`).
        let mut one = reqwest::Url::parse("s3://x/").expect("a constant URL parses");
        one.set_query(Some(raw));
        let pair = one.query_pairs().next();
        match pair {
            Some((k, v)) if k == PARAMS[0].0 => creds.access_key_id = Some(v.into_owned()),
            Some((k, v)) if k == PARAMS[1].0 => creds.secret_access_key = Some(v.into_owned()),
            _ => kept.push(raw),
        }
    }
    let url = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, creds))
}

/// Everything before the query, for messages about a URL that may carry secrets.
fn redact_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

/// The `user:password` of `scheme://user:password@host...` ("" if none).
fn authority_userinfo(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    authority.rsplit_once('@').map_or("", |(u, _)| u)
}

/// The environment `borealis` gives a node it starts: the cluster's kept credentials, for
/// pageservers (the only nodes that use the object store).
pub fn node_env(dir: &Path, role: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    if role != "pageserver" {
        return Ok(Vec::new());
    }
    Ok(Credentials::load(dir)?.map(|c| c.env()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_and_the_rest_is_kept_as_written() {
        let (url, c) = split(
            "s3://b?endpoint=http://127.0.0.1:9&access_key_id=K&secret_access_key=a%2Fb%2Bc&region=r",
        )
        .unwrap();
        assert_eq!(url, "s3://b?endpoint=http://127.0.0.1:9&region=r");
        assert_eq!(
            c.env(),
            [
                ("AWS_ACCESS_KEY_ID", "K".to_string()),
                ("AWS_SECRET_ACCESS_KEY", "a/b+c".to_string())
            ]
        );
        let (url, c) = split("s3://b?secret_access_key=TOPSECRET").unwrap();
        assert_eq!(url, "s3://b");
        assert_eq!(
            c.env(),
            [("AWS_SECRET_ACCESS_KEY", "TOPSECRET".to_string())]
        );
        for plain in ["file:///tmp/objects", "s3://b?endpoint=http://x:9"] {
            let (url, c) = split(plain).unwrap();
            assert_eq!(url, plain);
            assert!(c.is_empty());
        }
        let err = split("s3://K:TOPSECRET@b?endpoint=http://x").unwrap_err();
        assert!(!format!("{err:#}").contains("TOPSECRET"), "{err:#}");
        let err = split("no url?secret_access_key=TOPSECRET").unwrap_err();
        assert!(!format!("{err:#}").contains("TOPSECRET"), "{err:#}");
        assert!(!format!("{c:?}").contains("TOPSECRET"), "{c:?}");
    }

    #[test]
    fn the_credentials_file_is_owner_only_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("borealis-infra-creds-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(Credentials::load(&dir).unwrap().is_none());
        let (_, c) = split("s3://b?access_key_id=K&secret_access_key=S").unwrap();
        c.save(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(CREDENTIALS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        assert_eq!(Credentials::load(&dir).unwrap().unwrap().env(), c.env());
        assert_eq!(node_env(&dir, "pageserver").unwrap(), c.env());
        assert!(node_env(&dir, "safekeeper").unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
