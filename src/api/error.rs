//! The API's envelope: `{"code", "msg", "data"}` for answers and errors alike.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// What ClickHouse says when no replica of a shard answered a distributed query.
const SHARD_DOWN: &[&str] = &[
    "Code: 279",
    "ALL_CONNECTION_TRIES_FAILED",
    "Code: 210",
    "NETWORK_ERROR",
];

/// An error in the API's envelope.
#[derive(Debug)]
pub struct ApiError {
    pub(super) status: StatusCode,
    pub(super) msg: String,
    pub(super) retry_after: Option<u64>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: msg.into(),
            retry_after: None,
        }
    }

    pub(super) fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    pub(super) fn store(e: anyhow::Error) -> Self {
        let text = format!("{e:#}");
        tracing::error!(error = %text, "ClickHouse query failed");
        // On a cluster, a shard that no replica answers for fails the whole query (waltrail never sets
        // skip_unavailable_shards): a page without that shard's items would look complete and be wrong.
        let msg = if SHARD_DOWN.iter().any(|m| text.contains(m)) {
            "a shard of the audit store is unavailable; an answer from the other shards would silently miss items, so none is given; retry shortly"
        } else {
            "the audit store is unavailable; retry shortly"
        };
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            msg: msg.into(),
            retry_after: Some(5),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"code": self.status.as_u16(), "msg": self.msg, "data": null})),
        )
            .into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// A successful answer in the API's envelope.
pub(super) fn ok(data: Value) -> Response {
    Json(json!({"code": 200, "msg": "Request successful", "data": data})).into_response()
}

/// For endpoints that take no query parameters: any given is a 400 naming it.
pub(super) fn no_parameters(q: Option<&str>) -> Result<(), ApiError> {
    match q.filter(|q| !q.is_empty()) {
        Some(q) => {
            let name = q.split(['=', '&']).next().unwrap_or("");
            Err(ApiError::bad_request(format!("unknown parameter {name}")))
        }
        None => Ok(()),
    }
}

/// Answers made by a layer rather than a handler (408 from the request timeout, 413 from the body limit;
/// no handler answers either) come with an empty or plain-text body: give them the envelope like every
/// other error.
pub(super) async fn envelope_for_bare_errors(r: Response) -> Response {
    let msg = match r.status() {
        StatusCode::REQUEST_TIMEOUT => "the request took too long and was abandoned; retry",
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large (no endpoint takes a body)",
        _ => return r,
    };
    ApiError::new(r.status(), msg).into_response()
}
