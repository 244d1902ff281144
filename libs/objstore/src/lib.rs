//! # borealis-objstore: where checkpoints live
//!
//! Pageservers checkpoint segments to object storage so that a pageserver with an empty disk, or
//! a new one, can rebuild a segment without replaying its whole log. This crate turns a URL into
//! an [`object_store::ObjectStore`]:
//!
//! - `file:///abs/path` — the local filesystem, the embedded default of `borealis up`;
//! - `s3://bucket?endpoint=http://127.0.0.1:9000&region=us-east-1` — any S3-compatible server
//!   (credentials from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, or the `access_key_id` /
//!   `secret_access_key` query parameters). Plain-HTTP endpoints are allowed for loopback tests.
//!
//! ## Credentials never travel in a printed URL
//!
//! The query parameters are for callers that hold the URL in memory (tests). A URL on a command
//! line is visible to every user of the machine (`ps`), so the binaries refuse one that
//! [`has_credentials`] (the pageserver) or take the credentials out of it (`borealis up`), and
//! the credentials reach the client through the environment. Anything that logs or prints a URL
//! passes it through [`redact_url`], and this crate's own errors do (docs/security.md).
//!
//! It also fixes the key layout ([`keys`]): every object a pageserver writes carries that
//! pageserver attachment's **generation**, so two pageservers that both believe they own a
//! segment can never overwrite each other's objects (Neon RFC 025).
//!
//! For tests, [`faulty::FaultyStore`] wraps any store and fails or delays its operations on
//! demand.
//!
//! The code stays server-agnostic: nothing here knows which S3 implementation answers.
//!
//! ## Retries belong to the caller
//!
//! `object_store`'s S3 client retries a refused connection up to 10 times with backoff up to
//! 15 s (3 min in all) before it returns an error. Inside that loop an outage is invisible: no
//! error is counted, nothing is logged at WARN, and a 6 s outage could pass with no failure
//! reported at all (a drill caught exactly that). So one call here makes at most
//! [`S3_RETRIES_MAX`] quick retries (absorbing a dropped pooled connection) and then fails,
//! within [`S3_RETRY_TIMEOUT`]; the pageserver's own loop retries with backoff, counts the
//! failure in its metrics and status, and logs it.

pub mod faulty;
pub mod keys;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Retries of one S3 request inside the client (see "Retries belong to the caller").
pub const S3_RETRIES_MAX: usize = 2;
/// No retry inside the client starts after this long since the first attempt.
pub const S3_RETRY_TIMEOUT: Duration = Duration::from_secs(5);
/// Establishing a TCP (and TLS) connection to the object store.
pub const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One whole request, body included: parts of multipart uploads are 8 MiB, so this allows
/// about 140 KiB/s before a part is abandoned (and retried by the caller).
pub const S3_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Query parameters of an `s3://` URL that carry credentials.
pub const CREDENTIAL_PARAMS: [&str; 2] = ["access_key_id", "secret_access_key"];

#[derive(Debug, Error)]
pub enum ObjStoreError {
    /// The URL in the message is redacted ([`redact_url`]).
    #[error("unsupported object store URL {0:?}: use file:///path or s3://bucket?endpoint=...")]
    BadUrl(String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A URL fit for logs, status pages and error messages: scheme, host and path, never the query
/// (which may hold credentials) or a `user:password@`.
pub fn redact_url(url: &str) -> String {
    let base = match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    };
    let Some((scheme, rest)) = base.split_once("://") else {
        return base;
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://…@{host}{path}"),
        None => base,
    }
}

/// Whether the URL carries credentials: an [`CREDENTIAL_PARAMS`] query parameter, or a
/// `user:password@` part.
pub fn has_credentials(url: &str) -> bool {
    let Ok(parsed) = url::Url::parse(url) else {
        return false;
    };
    !parsed.username().is_empty()
        || parsed.password().is_some()
        || parsed
            .query_pairs()
            .any(|(k, _)| CREDENTIAL_PARAMS.contains(&k.as_ref()))
}

/// Opens the object store a URL names.
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>, ObjStoreError> {
    let bad = || ObjStoreError::BadUrl(redact_url(url));
    let parsed = url::Url::parse(url).map_err(|_| bad())?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // The S3 client would ignore it: refuse rather than run without the credentials meant.
        return Err(ObjStoreError::BadUrl(format!(
            "{} (credentials go in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, not user:password@)",
            redact_url(url)
        )));
    }
    match parsed.scheme() {
        "file" => {
            let path = parsed.to_file_path().map_err(|_| bad())?;
            std::fs::create_dir_all(&path)?;
            Ok(Arc::new(LocalFileSystem::new_with_prefix(path)?))
        }
        "s3" => {
            let bucket = parsed.host_str().ok_or_else(bad)?;
            let retry = RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_millis(500),
                    base: 2.0,
                },
                max_retries: S3_RETRIES_MAX,
                retry_timeout: S3_RETRY_TIMEOUT,
            };
            let client = ClientOptions::new()
                .with_connect_timeout(S3_CONNECT_TIMEOUT)
                .with_timeout(S3_REQUEST_TIMEOUT);
            // Client options first: `with_allow_http` below writes into them.
            let mut b = AmazonS3Builder::from_env()
                .with_client_options(client)
                .with_retry(retry)
                .with_bucket_name(bucket);
            let mut region_set = false;
            for (k, v) in parsed.query_pairs() {
                b = match k.as_ref() {
                    "endpoint" => b
                        .with_endpoint(v.as_ref())
                        .with_allow_http(v.starts_with("http://")),
                    "region" => {
                        region_set = true;
                        b.with_region(v.as_ref())
                    }
                    "access_key_id" => b.with_access_key_id(v.as_ref()),
                    "secret_access_key" => b.with_secret_access_key(v.as_ref()),
                    _ => {
                        return Err(ObjStoreError::BadUrl(format!(
                            "{} (unknown parameter {k})",
                            redact_url(url)
                        )))
                    }
                };
            }
            if !region_set && std::env::var_os("AWS_REGION").is_none() {
                b = b.with_region("us-east-1");
            }
            // Path-style requests: what self-hosted servers expect.
            Ok(Arc::new(
                b.with_virtual_hosted_style_request(false).build()?,
            ))
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path;

    #[test]
    fn unknown_schemes_are_refused() {
        for bad in ["ftp://x", "not a url", "s3://", "s3://b?colour=red"] {
            assert!(open(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_never_reach_an_error_or_a_log() {
        assert_eq!(
            redact_url("s3://b?endpoint=http://x&secret_access_key=s"),
            "s3://b?…"
        );
        assert_eq!(redact_url("s3://k:s@b/p?x=1"), "s3://…@b/p?…");
        assert_eq!(redact_url("file:///tmp/objects"), "file:///tmp/objects");
        assert_eq!(redact_url("file:///tmp/a@b"), "file:///tmp/a@b");
        for url in [
            "s3://b?colour=red&secret_access_key=TOPSECRET",
            "s3://user:TOPSECRET@b?endpoint=http://127.0.0.1:9",
            "ftp://x?secret_access_key=TOPSECRET",
        ] {
            let err = open(url).map(|_| ()).expect_err(url).to_string();
            assert!(!err.contains("TOPSECRET"), "{err}");
        }
        assert!(has_credentials("s3://b?endpoint=http://x&access_key_id=k"));
        assert!(has_credentials("s3://b?secret_access_key=s"));
        assert!(has_credentials("s3://k:s@b"));
        assert!(!has_credentials("s3://b?endpoint=http://x&region=r"));
        assert!(!has_credentials("file:///tmp/objects"));
    }

    #[tokio::test]
    async fn local_filesystem_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&format!("file://{}", dir.path().display())).unwrap();
        let key = Path::from("tenants/1/index");
        store.put(&key, b"hello".to_vec().into()).await.unwrap();
        let got = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"hello");
    }

    /// An S3 server that is down is reported as an error within seconds, not after the client's
    /// default three minutes of silent retries: the caller must see the outage to count it.
    #[tokio::test]
    async fn an_unreachable_s3_endpoint_fails_fast() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        }; // Closed again: connections to it are refused.
        let store = open(&format!(
            "s3://b?endpoint=http://127.0.0.1:{port}&access_key_id=k&secret_access_key=s"
        ))
        .unwrap();
        let started = std::time::Instant::now();
        let got = store.head(&Path::from("x")).await;
        let took = started.elapsed();
        let err = got
            .expect_err("a refused connection is an error")
            .to_string();
        assert!(
            err.contains(&format!(
                "after {S3_RETRIES_MAX} retries, max_retries: {S3_RETRIES_MAX}"
            )),
            "the client retries a refused connection {S3_RETRIES_MAX} times, then fails: {err}"
        );
        // Backoffs of at most 500 ms: well under the 1 s that the client's default ten retries
        // take at the least.
        assert!(
            took < Duration::from_secs(3),
            "the error took {took:?}: the client retried for too long"
        );
    }
}
