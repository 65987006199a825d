//! Who am I (`/api/v1/me`) and is this process ready (`/readyz`).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use super::auth::{AuthError, Role};
use super::error::{ok, ApiError};
use super::state::AppState;

pub(super) async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let ch = tokio::time::timeout(
        Duration::from_secs(3),
        s.ch.query("SELECT 1").fetch_one::<u8>(),
    )
    .await;
    let mut problems = Vec::new();
    if !matches!(ch, Ok(Ok(1))) {
        problems.push("ClickHouse unreachable".to_owned());
    }
    if let Some(m) = &s.capture {
        let last = m
            .last_server_contact_us
            .load(std::sync::atomic::Ordering::Relaxed);
        let age_s = (crate::store::row::now_us() - last) / 1_000_000;
        let slot = m.slot_wal_status.load(std::sync::atomic::Ordering::Relaxed);
        if slot == 4 {
            problems.push("replication slot lost (wal_status = lost): the trail has a gap; see waltrail's log for the fix".to_owned());
        }
        if last == 0 || age_s > 120 {
            problems.push(format!(
                "capture stalled: no word from Postgres for {age_s} s"
            ));
        }
    }
    if problems.is_empty() {
        ok(json!({"ready": true}))
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, problems.join("; ")).into_response()
    }
}

pub(super) async fn me(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = s.auth.authenticate(header).await.map_err(|e| match e {
        AuthError::Unavailable(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot check the API key right now",
        ),
        e => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
    })?;
    if let Err(wait) = s.limiter.check(&caller.key_hash) {
        return Err(ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            msg: format!("rate limit exceeded; retry in {wait} s"),
            retry_after: Some(wait),
        });
    }
    Ok(ok(json!({
        "org_id": caller.org_id,
        "role": if caller.role == Role::Admin { "admin" } else { "member" },
        "principal_id": caller.principal_id,
        "key_name": caller.key_name,
        "projects": if caller.role == Role::Admin { vec![] } else { caller.projects.clone() },
    })))
}
