//! API errors: every failure leaves the gateway as `{"error": {"code", "message"}}` with a status
//! that matches its code (docs/design.md §7).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use borealis_core::ErrorKind;

/// `Retry-After` of a `rate_limited` answer, in seconds.
pub const RETRY_AFTER_SECONDS: &str = "1";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", m)
    }
    pub fn sql(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "sql_error", m)
    }
    pub fn too_large(m: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", m)
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "timeout", m)
    }
    pub fn read_only(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "read_only", m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
    /// The tenant's database cannot be opened (SQLite finds it corrupt or its schema
    /// malformed): every request fails so until it is repaired; retrying does not help.
    pub fn corrupt(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", m)
    }
    /// Too much in flight for the tenant or the gateway ([`crate::budget`]): nothing of the
    /// request took effect. Answered with `Retry-After`.
    pub fn rate_limited(m: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m)
    }

    /// Maps a shared error kind to its HTTP form.
    pub fn from_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        match kind {
            ErrorKind::Invalid => Self::bad_request(message),
            ErrorKind::Sql => Self::sql(message),
            ErrorKind::ReadOnly => Self::read_only(message),
            ErrorKind::Timeout => Self::timeout(message),
            ErrorKind::Unavailable | ErrorKind::Fenced | ErrorKind::Corrupt => {
                Self::unavailable(message)
            }
            // A storage node refused the gateway's own credentials: a misconfigured cluster
            // (keys from another cluster), not the client's fault and not passing.
            ErrorKind::Internal | ErrorKind::Unauthorized => Self::internal(message),
            ErrorKind::DatabaseCorrupt => Self::corrupt(message),
            ErrorKind::RateLimited => Self::rate_limited(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        resp
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
