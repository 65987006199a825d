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
use crate::audit::chain::ChainReport;

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
    let (status, verified_until, failure) = verdict(&reports, &caller.org_id);
    Ok(ok(json!({
        "status": status,
        "verified_until": verified_until.map(super::timestamp),
        "failure": failure,
        "chains": reports,
    })))
}

/// What the reports of an organization's chains say as one: `failed` (with the first failure), `verified`
/// (up to the oldest of its own chains' newest checkpoints), or `unsigned`.
fn verdict(reports: &[ChainReport], org_id: &str) -> (&'static str, Option<i64>, Option<String>) {
    if let Some(f) = reports.iter().find_map(|r| r.failure.clone()) {
        return ("failed", None, Some(f));
    }
    // Any chain the organization sees that nothing signed covers (its own, or the platform chain it
    // shares) leaves the trail unproven, as `waltrail verify` says.
    if reports.iter().any(|r| r.unproven.is_some()) {
        return ("unsigned", None, None);
    }
    // Each of its own chains holding items must be covered: one that is not is not verified beside others.
    let own = format!("{org_id} @");
    let verified_until = reports
        .iter()
        .filter(|r| r.chain.starts_with(&own) && r.items > 0)
        .map(|r| r.verified_until_us)
        .collect::<Option<Vec<i64>>>()
        .and_then(|t| t.into_iter().min());
    match verified_until {
        Some(t) => ("verified", Some(t), None),
        None => ("unsigned", None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(name: &str, items: u64, until: Option<i64>) -> ChainReport {
        ChainReport {
            chain: name.into(),
            items,
            verified_until_us: until,
            ..Default::default()
        }
    }

    #[test]
    fn every_chain_an_organization_sees_counts() {
        let org = chain("org1 @ s", 3, Some(10));
        let platform = chain("(platform) @ s", 2, Some(5));
        assert_eq!(
            verdict(&[org.clone(), platform.clone()], "org1"),
            ("verified", Some(10), None)
        );
        // The platform chain nothing signed covers: not verified, though the organization's own chain is.
        let mut bare = platform.clone();
        bare.verified_until_us = None;
        bare.unproven = Some("no signed checkpoint".into());
        assert_eq!(verdict(&[org.clone(), bare], "org1").0, "unsigned");
        // One of its own chains (another source) not covered.
        let other = chain("org1 @ s2", 1, None);
        assert_eq!(verdict(&[org.clone(), other], "org1").0, "unsigned");
        // A chain of another organization whose name starts alike is not its own.
        let alike = chain("org10 @ s", 1, None);
        assert_eq!(verdict(&[org.clone(), alike], "org1").0, "verified");
        let mut broken = platform;
        broken.failure = Some("altered".into());
        assert_eq!(
            verdict(&[org, broken], "org1"),
            ("failed", None, Some("altered".into()))
        );
    }
}
