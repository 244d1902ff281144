//! The `Idempotency-Key` request header: a request that carries one takes effect at most once
//! per key (RFC 0014 §6; `compute-wasm/guest/src/keyed.rs` keeps the record).
//!
//! The key is 1 to [`KEY_BYTES_MAX`] visible ASCII characters, chosen by the client, per tenant.
//! A repeat of a recorded key with the same request (statements, parameters, form) is answered
//! from the record, with the original results and `lsn` and the header
//! `Idempotent-Replayed: true`, without running again; with another request it is refused
//! `409 conflict`. A keyed request runs as one transaction (a `{"sql"}` one too), so transaction
//! control in it is refused. Only a request that writes records its key: one that only reads, or
//! fails, runs again when repeated (it took no effect). Keys are honoured for
//! `--idempotency-retention` after they were recorded, by the gateway's wall clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use compute_abi::{ExecRequest, Keyed};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The request header.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// The response header of an answer replayed from the record (`true`).
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";
/// The longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 255;

/// The request's key, if it carries one; a malformed one is `bad_request`.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad_request(
            "more than one Idempotency-Key header: send one",
        ));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty()
        || bytes.len() > KEY_BYTES_MAX
        || !bytes.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {KEY_BYTES_MAX} visible ASCII characters (no spaces)"
        )));
    }
    // All visible ASCII: valid UTF-8.
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

/// SHA-256 of what the request asks: its statements with their parameters, and its form (one
/// statement or a batch). The time limit is not part of it: a retry may allow more time.
pub fn fingerprint(exec: &ExecRequest) -> Result<Vec<u8>, ApiError> {
    let bytes = postcard::to_allocvec(&(&exec.statements, exec.transaction))
        .map_err(|e| ApiError::internal(format!("encoding the request's fingerprint: {e}")))?;
    Ok(Sha256::digest(bytes).to_vec())
}

/// What the guest is asked for `key` on `exec`, at wall-clock time `now`.
pub fn run(
    key: String,
    exec: &ExecRequest,
    retention: Duration,
    now: SystemTime,
) -> Result<Keyed, ApiError> {
    let now_unix_ms = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    Ok(Keyed::Run {
        key,
        request_sha256: fingerprint(exec)?,
        now_unix_ms,
        expired_before_unix_ms: now_unix_ms.saturating_sub(retention_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use compute_abi::{Statement, Value};

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        assert_eq!(key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            key(&headers(&[b"transfer-7f3a:2"])).unwrap().as_deref(),
            Some("transfer-7f3a:2")
        );
        let longest = vec![b'k'; KEY_BYTES_MAX];
        assert_eq!(key(&headers(&[&longest])).unwrap().unwrap().len(), 255);
        let too_long = vec![b'k'; KEY_BYTES_MAX + 1];
        for bad in [
            &too_long[..],
            b"",
            b"two words",
            b"tab\there",
            "é".as_bytes(),
        ] {
            let e = key(&headers(&[bad])).unwrap_err();
            assert_eq!(e.code, "bad_request", "{bad:?}");
        }
        let e = key(&headers(&[b"a", b"b"])).unwrap_err();
        assert!(e.message.contains("more than one"), "{}", e.message);
    }

    #[test]
    fn the_fingerprint_is_statements_parameters_and_form_not_the_time_limit() {
        let req = |sql: &str, p: i64, transaction: bool, timeout_ms| ExecRequest {
            statements: vec![Statement {
                sql: sql.into(),
                params: vec![Value::Integer(p)],
            }],
            transaction,
            result_bytes_max: 1,
            timeout_ms,
            keyed: None,
        };
        let base = fingerprint(&req("INSERT INTO t VALUES (?)", 1, false, None)).unwrap();
        assert_eq!(base.len(), 32);
        assert_eq!(
            base,
            fingerprint(&req("INSERT INTO t VALUES (?)", 1, false, Some(9_000))).unwrap()
        );
        for other in [
            req("INSERT INTO t VALUES (?)", 2, false, None),
            req("INSERT INTO u VALUES (?)", 1, false, None),
            req("INSERT INTO t VALUES (?)", 1, true, None),
        ] {
            assert_ne!(base, fingerprint(&other).unwrap());
        }
    }

    #[test]
    fn a_key_expires_after_the_retention() {
        let exec = ExecRequest {
            statements: Vec::new(),
            transaction: true,
            result_bytes_max: 1,
            timeout_ms: None,
            keyed: None,
        };
        let now = UNIX_EPOCH + Duration::from_millis(1_000_000);
        let Keyed::Run {
            now_unix_ms,
            expired_before_unix_ms,
            ..
        } = run("k".into(), &exec, Duration::from_secs(60), now).unwrap()
        else {
            panic!("a run")
        };
        assert_eq!(now_unix_ms, 1_000_000);
        assert_eq!(expired_before_unix_ms, 940_000);
    }
}
