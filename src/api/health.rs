//! Who am I (`/api/v1/me`) and is this process ready (`/readyz`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::auth::Role;
use super::background::READY_PERIOD;
use super::error::{ok, ApiError};
use super::state::{AppState, Client};

/// Check ClickHouse now, then every [`READY_PERIOD`] until `shutdown`.
pub(super) async fn keep_checking(
    s: Arc<AppState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        s.ready.check(&s.ch).await;
        s.sources.refresh(&s.ch).await;
        tokio::select! {
            _ = tokio::time::sleep(READY_PERIOD) => {}
            _ = shutdown.changed() => return,
        }
    }
}

pub(super) async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    let mut problems = Vec::new();
    let now = crate::store::row::now_us();
    let checked = s.ready.checked_at_us.load(Ordering::Relaxed);
    let age_s = (now - checked) / 1_000_000;
    if checked == 0 {
        problems.push("ClickHouse not checked yet".to_owned());
    } else if age_s > 10 {
        problems.push(format!("ClickHouse not checked for {age_s} s"));
    } else if !s.ready.clickhouse_ok.load(Ordering::Relaxed) {
        let why = s.ready.why();
        problems.push(
            if why.is_empty() {
                "ClickHouse unreachable"
            } else {
                why
            }
            .to_owned(),
        );
    }
    if let Some(m) = &s.capture {
        let last = m.last_server_contact_us.load(Ordering::Relaxed);
        let age_s = (now - last) / 1_000_000;
        if m.slot_wal_status.load(Ordering::Relaxed) == 4 {
            problems.push("replication slot lost (wal_status = lost): the trail has a gap; see waltrail's log for the fix".to_owned());
        }
        if last == 0 {
            problems.push(
                "capture has not reached Postgres yet (starting, or failing to connect: see waltrail's log)"
                    .to_owned(),
            );
        } else if age_s > 120 {
            problems.push(format!(
                "capture stalled: no word from Postgres for {age_s} s"
            ));
        }
    }
    if problems.is_empty() {
        ok(json!({
            "ready": true,
            "checked_at": super::items::timestamp(checked),
            "checked_ms_ago": (now - checked).max(0) / 1000,
        }))
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, problems.join("; ")).into_response()
    }
}

pub(super) async fn me(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    client: Client,
) -> Result<Response, ApiError> {
    let caller = s.authenticated(&headers, client).await?;
    Ok(ok(json!({
        "org_id": caller.org_id,
        "role": if caller.role == Role::Admin { "admin" } else { "member" },
        "principal_id": caller.principal_id,
        "key_name": caller.key_name,
        "projects": if caller.role == Role::Admin { vec![] } else { caller.projects.clone() },
    })))
}
