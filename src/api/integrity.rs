//! Tamper evidence over HTTP: the public keys checkpoints verify with, and the verified range of an
//! organization's trail (its chain and the platform chain), checked against the store on request.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;

use super::auth::Role;
use super::error::{ok, ApiError};
use super::state::{AppState, Client};

/// The public keys (current and trusted), for customers to keep beside their exports. Public by nature.
pub(super) async fn keys(State(s): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let keys: Vec<_> = s
        .integrity_keys
        .iter()
        .map(|k| {
            json!({
                "key_id": k.key_id,
                "public_key": k.to_text(),
                "verifies": if k.exports_only { "exports" } else { "checkpoints and exports" },
            })
        })
        .collect();
    Ok(ok(json!({ "keys": keys })))
}

/// `?since=&until=` (RFC 3339; default: the retention window). Admins only: the chain covers every project.
pub(super) async fn verify(
    State(s): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    client: Client,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, client, &org_id).await?;
    if caller.role != Role::Admin {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "verifying the trail needs an admin key: the chain covers every project",
        ));
    }
    let mut since = None;
    let mut until = None;
    for (k, v) in form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes()) {
        let t = chrono::DateTime::parse_from_rfc3339(&v).map_err(|_| {
            ApiError::bad_request(format!(
                "invalid parameter {k}: {v:?} is not an RFC 3339 time like 2026-11-27T10:00:00Z"
            ))
        })?;
        match k.as_ref() {
            "since" => since = Some(t.timestamp_micros()),
            "until" => until = Some(t.timestamp_micros()),
            other => return Err(ApiError::bad_request(format!("unknown parameter {other}"))),
        }
    }
    let since = since.or(Some(crate::store::query::retained_since_us(s.retention())));
    let reports =
        crate::store::integrity::verify_org(&s.ch, &caller.org_id, since, until, &s.integrity_keys)
            .await
            .map_err(ApiError::store)?;
    let failed = reports.iter().find(|r| r.failure.is_some());
    // Verified up to the oldest of the organization's chains' checkpoints, and only when each of its chains
    // holding items has one: a chain nothing signed covers is not verified, beside others that are.
    let own: Vec<_> = reports
        .iter()
        .filter(|r| r.chain.starts_with(&format!("{} @", caller.org_id)) && r.items > 0)
        .collect();
    let verified_until = own
        .iter()
        .map(|r| r.verified_until_us)
        .collect::<Option<Vec<i64>>>()
        .and_then(|t| t.into_iter().min());
    let status = match (failed, verified_until) {
        (Some(_), _) => "failed",
        (None, Some(_)) => "verified",
        (None, None) => "unsigned",
    };
    Ok(ok(json!({
        "status": status,
        "verified_until": verified_until.map(super::timestamp),
        "failure": failed.and_then(|r| r.failure.clone()),
        "chains": reports,
    })))
}
