//! Reading items: pages (newest first, or oldest first for pollers), one item with its changes and
//! transaction, the facets for filter pickers, and the JSON form of an item with its labels.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use uuid::Uuid;

use super::auth::{Caller, Role};
use super::error::{no_parameters, ok, ApiError};
use super::params::{self, ListParams};
use super::state::{AppState, Client};
use crate::capture::Lsn;
use crate::store::query::{self, Cursor, Order, ReadRow};

pub fn timestamp(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

/// The list form of an item.
pub fn item_json(r: &ReadRow) -> Value {
    json!({
        "id": r.id.to_string(),
        "event_id": r.event_id.to_string(),
        "timestamp": timestamp(r.occurred_at_us),
        "created_time": timestamp(r.ingested_at_us),
        "client_ip": r.client_ip,
        "action": r.action,
        "source": r.source,
        "display_name": r.display_name,
        "actor_email": r.actor_email,
        "organization_id": r.organization_id,
        "project_id": r.project_id,
        "principal_id": r.principal_id,
        "principal_type": r.principal_type,
        "on_behalf_of_id": r.on_behalf_of_id,
        "on_behalf_of_display": r.on_behalf_of_display,
        "resource_type": r.resource_type,
        "resource_id": r.resource_id,
        "resource_display": r.resource_display,
        "changed_fields": r.changed_fields,
        "summary": r.summary,
        "labels": labels(r),
        "actor_source": r.actor_source,
        "platform_wide": r.platform_wide != 0,
        "data": {
            "table": r.table_name,
            "xid": r.xid,
            "commit_lsn": Lsn(r.commit_lsn).to_string(),
            "source_id": r.source_id,
        },
    })
}

/// How the dashboard names an item's actor and vocabulary, from the same rules as the summary line, so
/// no client has to copy them.
fn labels(r: &ReadRow) -> Value {
    use crate::audit::summary;
    json!({
        "actor": summary::actor_label(
            &r.principal_type,
            &r.principal_id,
            &r.display_name,
            &r.actor_email,
            &r.on_behalf_of_id,
            &r.on_behalf_of_display,
        ),
        "action": summary::action_label(&r.action),
        "resource_type": summary::resource_noun(&r.resource_type),
        "source": summary::source_label(&r.source),
        "principal_type": summary::principal_label(&r.principal_type),
        "actor_source": summary::actor_source_label(&r.actor_source),
    })
}

pub(super) async fn list_org(
    State(s): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    client: Client,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, client, &org_id).await?;
    let p = params::parse(q.as_deref(), &s.vocab, false).map_err(ApiError::bad_request)?;
    list(&s, &caller, p).await
}

pub(super) async fn list_project(
    State(s): State<Arc<AppState>>,
    Path((org_id, project_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    client: Client,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, client, &org_id).await?;
    if caller.role == Role::Member && !caller.projects.contains(&project_id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this key does not belong to that project",
        ));
    }
    let mut p = params::parse(q.as_deref(), &s.vocab, false).map_err(ApiError::bad_request)?;
    if !p.filters.project_ids.is_empty() && p.filters.project_ids != [project_id.clone()] {
        return Err(ApiError::bad_request(
            "invalid parameter project_id: the path already names the project",
        ));
    }
    p.filters.project_ids = vec![project_id];
    list(&s, &caller, p).await
}

async fn list(s: &AppState, caller: &Caller, p: ListParams) -> Result<Response, ApiError> {
    let scope = s.scope(caller);
    let page = query::list(
        &s.ch,
        s.retention(),
        &scope,
        &p.filters,
        p.order,
        p.cursor.as_ref(),
        p.limit,
        p.order == Order::Desc && p.cursor.is_none(),
    )
    .await
    .map_err(|e| match e.downcast_ref::<query::TooManySources>() {
        Some(t) => ApiError::bad_request(format!("invalid parameter cursor: {t}")),
        None => ApiError::store(e),
    })?;
    let next = match p.order {
        Order::Desc => page.rows.last().map(|r| Cursor::Desc {
            occurred_at_us: r.occurred_at_us,
            id: r.id,
        }),
        // A poller keeps its place even when nothing new came.
        Order::Asc => page.next_asc.map(Cursor::Asc),
    };
    let mut data = json!({
        "items": page.rows.iter().map(item_json).collect::<Vec<_>>(),
        "next_cursor": match (p.order, page.has_more, next) {
            (Order::Desc, false, _) => String::new(),
            (_, _, Some(c)) => c.encode(),
            (_, _, None) => String::new(),
        },
        "has_more": page.has_more,
    });
    if let Some(poll) = &page.poll {
        data["poll_cursor"] = Value::String(poll.encode());
    }
    Ok(ok(data))
}

pub(super) async fn one(
    State(s): State<Arc<AppState>>,
    Path((org_id, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    client: Client,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, client, &org_id).await?;
    no_parameters(q.as_deref())?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::bad_request("invalid audit log id: expected a UUID"))?;
    let scope = s.scope(&caller);
    let row = query::get(&s.ch, s.retention(), &scope, id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "audit log item not found"))?;
    let siblings = query::transaction_ids(&s.ch, s.retention(), &scope, row.event_id)
        .await
        .map_err(ApiError::store)?;
    let mut data = item_json(&row);
    data["context"] = json!({
        "auth_method": row.auth_method,
        "key_id": row.key_id,
        "session_id": row.session_id,
        "request_id": row.request_id,
        "run_id": row.run_id,
        "context_status": row.context_status,
        "client_ip": row.client_ip,
        "user_agent": row.user_agent,
        "on_behalf_of_id": row.on_behalf_of_id,
        "on_behalf_of_display": row.on_behalf_of_display,
    });
    data["transaction_item_ids"] = json!(siblings
        .iter()
        .filter(|i| **i != row.id)
        .map(Uuid::to_string)
        .collect::<Vec<_>>());
    Ok(with_changes(data, &row.diff))
}

/// The item's answer with its diff spliced in as stored, not re-parsed: a jsonb value nested deeper than a
/// JSON parser's recursion limit is still shown (parsing it into a tree would fail, and hide the change).
/// The stored text is checked to be one JSON object first (a streaming check, without recursion); anything
/// else is answered as unreadable rather than passed on.
fn with_changes(mut data: Value, diff: &str) -> Response {
    let raw = serde_json::from_str::<&serde_json::value::RawValue>(diff)
        .ok()
        .filter(|r| r.get().starts_with('{'));
    let Some(raw) = raw else {
        tracing::error!("stored diff of an item is not a JSON object; answered as unreadable");
        data["changes"] = json!({"unreadable": true});
        return ok(data);
    };
    let Value::Object(fields) = &mut data else {
        return ok(data);
    };
    fields.remove("changes");
    let mut body =
        serde_json::to_string(&json!({"code": 200, "msg": "Request successful", "data": data}))
            .unwrap_or_default();
    // `...,"data":{...}}`: open the data object again at its end and add the raw changes.
    if body.ends_with("}}") {
        body.truncate(body.len() - 2);
        body.push_str(",\"changes\":");
        body.push_str(raw.get());
        body.push_str("}}");
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

pub(super) async fn facets(
    State(s): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    client: Client,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, client, &org_id).await?;
    no_parameters(q.as_deref())?;
    let f = query::facets(&s.ch, s.retention(), &s.scope(&caller))
        .await
        .map_err(ApiError::store)?;
    use crate::audit::summary;
    let label_map = |vals: &[String], rule: fn(&str) -> String| {
        vals.iter()
            .map(|v| (v.clone(), Value::String(rule(v))))
            .collect::<serde_json::Map<_, _>>()
    };
    let labels = json!({
        "action": label_map(&f.action, summary::action_label),
        "resource_type": label_map(&f.resource_type, summary::resource_noun),
        "source": label_map(&f.source, summary::source_label),
        "principal_type": label_map(&f.principal_type, summary::principal_label),
        "actor_source": label_map(&f.actor_source, summary::actor_source_label),
    });
    let mut data = serde_json::to_value(&f).unwrap_or(Value::Null);
    data["labels"] = labels;
    Ok(ok(data))
}
