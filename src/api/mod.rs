//! The HTTP side: the REST API over ClickHouse, the dashboard's static files, health and metrics.

pub mod auth;
pub mod metrics;
pub mod params;
pub mod web;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::api::auth::{AuthError, Authenticator, Caller, RateLimiter, Role};
use crate::api::metrics::HttpMetrics;
use crate::api::params::{ListParams, Vocabulary};
use crate::audit::context::EventPayload;
use crate::capture::Lsn;
use crate::config::Config;
use crate::pipeline::Metrics;
use crate::store::query::{self, Cursor, Order, ReadRow, Scope};

pub struct AppState {
    pub cfg: Arc<Config>,
    pub ch: clickhouse::Client,
    auth: Authenticator,
    limiter: RateLimiter,
    vocab: Vocabulary,
    /// Present when this process also captures (`waltrail run`).
    pub capture: Option<Arc<Metrics>>,
    pub http: HttpMetrics,
}

impl AppState {
    pub fn new(cfg: Arc<Config>, capture: Option<Arc<Metrics>>) -> Arc<AppState> {
        let mut vocab = Vocabulary::default();
        for t in &cfg.tables {
            vocab.resource_types.push(t.resource_type.clone());
            for d in &t.derived_actions {
                vocab.actions.push(d.action.clone());
            }
        }
        let http = HttpMetrics::default();
        let _ = http.started.get_or_init(std::time::Instant::now);
        Arc::new(AppState {
            ch: crate::store::client(&cfg.clickhouse),
            auth: Authenticator::new(cfg.clone()),
            limiter: RateLimiter::new(cfg.api.rate_limit_per_minute),
            vocab,
            capture,
            http,
            cfg,
        })
    }

    fn retention(&self) -> u32 {
        self.cfg.retention.days
    }

    /// Authenticate, rate-limit, and check the caller may read this organization.
    async fn caller(&self, headers: &HeaderMap, org_id: &str) -> Result<Caller, ApiError> {
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let caller = self.auth.authenticate(header).await.map_err(|e| match e {
            AuthError::Missing | AuthError::Invalid => {
                ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
            AuthError::Unavailable(m) => {
                tracing::warn!(error = %m, "key check unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot check the API key right now; retry",
                )
            }
        })?;
        if let Err(wait) = self.limiter.check(&caller.key_hash) {
            return Err(ApiError {
                status: StatusCode::TOO_MANY_REQUESTS,
                msg: format!(
                    "rate limit of {} requests a minute exceeded; retry in {wait} s",
                    self.cfg.api.rate_limit_per_minute
                ),
                retry_after: Some(wait),
            });
        }
        // Another organization's id answers exactly like one that does not exist.
        if caller.org_id != org_id {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "organization not found",
            ));
        }
        Ok(caller)
    }

    fn scope(&self, caller: &Caller) -> Scope {
        Scope {
            org_id: caller.org_id.clone(),
            projects: match caller.role {
                Role::Admin => None,
                Role::Member => Some(caller.projects.clone()),
            },
            include_org_level: self.cfg.api.members_see_org_items,
        }
    }
}

/// An error in the API's envelope.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    msg: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: msg.into(),
            retry_after: None,
        }
    }

    fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    fn store(e: anyhow::Error) -> Self {
        tracing::error!(error = %format!("{e:#}"), "ClickHouse query failed");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit store is unavailable; retry shortly",
        )
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

fn ok(data: Value) -> Response {
    Json(json!({"code": 200, "msg": "Request successful", "data": data})).into_response()
}

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
        "data": {"table": r.table_name, "xid": r.xid, "commit_lsn": Lsn(r.commit_lsn).to_string()},
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
    })
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(web::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(me))
        .route("/api/v1/orgs/{org_id}/audit_logs", get(list_org))
        .route("/api/v1/orgs/{org_id}/audit_logs/facets", get(facets))
        .route("/api/v1/orgs/{org_id}/audit_logs/export", get(export))
        .route("/api/v1/orgs/{org_id}/audit_logs/{id}", get(one))
        .route(
            "/api/v1/orgs/{org_id}/projects/{project_id}/audit_logs",
            get(list_project),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Serve until `shutdown` turns true.
pub async fn serve(
    state: Arc<AppState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr = state.cfg.api.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (api.listen): {e}"))?;
    tracing::info!(%addr, "API and dashboard listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await?;
    Ok(())
}

async fn openapi() -> Response {
    web::static_file("application/json", include_str!("openapi.json"))
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
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
        let age_s = (crate::store::writer::now_us() - last) / 1_000_000;
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

async fn me(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
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

async fn list_org(
    State(s): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, &org_id).await?;
    let p = params::parse(q.as_deref(), &s.vocab, false).map_err(ApiError::bad_request)?;
    list(&s, &caller, p).await
}

async fn list_project(
    State(s): State<Arc<AppState>>,
    Path((org_id, project_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, &org_id).await?;
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
    .map_err(ApiError::store)?;
    let next = match p.order {
        Order::Desc => page.rows.last().map(|r| Cursor::Desc {
            occurred_at_us: r.occurred_at_us,
            id: r.id,
        }),
        Order::Asc => page
            .rows
            .last()
            .map(|r| Cursor::Asc {
                commit_lsn: r.commit_lsn,
                seq: r.seq,
                id: r.id,
                occurred_at_us: r.occurred_at_us,
            })
            // A poller keeps its place even when nothing new came.
            .or(p.cursor),
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

async fn one(
    State(s): State<Arc<AppState>>,
    Path((org_id, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, &org_id).await?;
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
    data["changes"] = serde_json::from_str(&row.diff).unwrap_or(Value::Object(Default::default()));
    data["context"] = json!({
        "auth_method": row.auth_method,
        "key_id": row.key_id,
        "session_id": row.session_id,
        "request_id": row.request_id,
        "run_id": row.run_id,
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
    Ok(ok(data))
}

/// For endpoints that take no query parameters: any given is a 400 naming it.
fn no_parameters(q: Option<&str>) -> Result<(), ApiError> {
    match q.filter(|q| !q.is_empty()) {
        Some(q) => {
            let name = q.split(['=', '&']).next().unwrap_or("");
            Err(ApiError::bad_request(format!("unknown parameter {name}")))
        }
        None => Ok(()),
    }
}

async fn facets(
    State(s): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, &org_id).await?;
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
    });
    let mut data = serde_json::to_value(&f).unwrap_or(Value::Null);
    data["labels"] = labels;
    Ok(ok(data))
}

const CSV_COLUMNS: [&str; 17] = [
    "id",
    "event_id",
    "timestamp",
    "created_time",
    "action",
    "source",
    "principal_type",
    "principal_id",
    "display_name",
    "actor_email",
    "organization_id",
    "project_id",
    "resource_type",
    "resource_id",
    "resource_display",
    "changed_fields",
    "summary",
];

fn csv_field(s: &str) -> String {
    // Cells starting with = + - @ are formulas to a spreadsheet: prefix them so they stay text.
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv_row(r: &ReadRow) -> String {
    let cells = [
        r.id.to_string(),
        r.event_id.to_string(),
        timestamp(r.occurred_at_us),
        timestamp(r.ingested_at_us),
        r.action.clone(),
        r.source.clone(),
        r.principal_type.clone(),
        r.principal_id.clone(),
        r.display_name.clone(),
        r.actor_email.clone(),
        r.organization_id.clone(),
        r.project_id.clone(),
        r.resource_type.clone(),
        r.resource_id.clone(),
        r.resource_display.clone(),
        r.changed_fields.join(";"),
        r.summary.clone(),
    ];
    let mut line = cells
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

async fn export(
    State(s): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, &org_id).await?;
    let p = params::parse(q.as_deref(), &s.vocab, true).map_err(ApiError::bad_request)?;
    if p.cursor.is_some()
        || p.order != Order::Desc
        || q.as_deref().is_some_and(|q| q.contains("limit="))
    {
        return Err(ApiError::bad_request(
            "invalid parameter: export takes filters and format only (no cursor, order or limit)",
        ));
    }
    let format = p.format.clone().unwrap_or_else(|| "ndjson".into());
    // The export is itself audited, through the WAL like every other item; no record, no export.
    let from_dashboard = headers
        .get("x-waltrail-client")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("dashboard"));
    let source = if from_dashboard { "DASHBOARD" } else { "API" };
    record_export(&s, &caller, q.as_deref().unwrap_or(""), &format, source)
        .await
        .map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "cannot record the export");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record this export in the audit trail right now, so it is refused; retry shortly",
            )
        })?;
    let scope = s.scope(&caller);
    let cursor = query::export(&s.ch, s.retention(), &scope, &p.filters);
    let csv = format == "csv";
    let header_line = csv.then(|| format!("{}\r\n", CSV_COLUMNS.join(",")));
    // Rows are read one by one and sent in chunks of about 64 KiB: memory stays flat whatever the size.
    let stream = futures_util::stream::unfold(
        (cursor, header_line, false),
        move |(mut cursor, header_line, done)| async move {
            if done {
                return None;
            }
            let mut chunk = header_line.unwrap_or_default();
            loop {
                match cursor.next().await {
                    Ok(Some(r)) => {
                        if csv {
                            chunk.push_str(&csv_row(&r));
                        } else {
                            chunk.push_str(&item_json(&r).to_string());
                            chunk.push('\n');
                        }
                        if chunk.len() >= 64 * 1024 {
                            return Some((Ok::<_, std::io::Error>(chunk), (cursor, None, false)));
                        }
                    }
                    Ok(None) => return Some((Ok(chunk), (cursor, None, true))),
                    Err(e) => {
                        tracing::error!(error = %e, "export interrupted");
                        return Some((
                            Err(std::io::Error::other(e.to_string())),
                            (cursor, None, true),
                        ));
                    }
                }
            }
        },
    );
    let (ctype, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "ndjson")
    };
    let disposition = format!(
        "attachment; filename=\"audit_logs-{}.{ext}\"",
        sanitize_filename(&org_id)
    );
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

fn sanitize_filename(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Write an EXPORTED audit event into the WAL (a transactional logical message); the capture turns it into
/// an item like any other, with a position and a deterministic id.
async fn record_export(
    s: &AppState,
    caller: &Caller,
    query: &str,
    format: &str,
    source: &str,
) -> anyhow::Result<()> {
    let filters: serde_json::Map<String, Value> =
        form_urlencoded::parse(query.as_bytes()).fold(serde_json::Map::new(), |mut m, (k, v)| {
            let e = m
                .entry(k.into_owned())
                .or_insert_with(|| Value::Array(vec![]));
            if let Value::Array(a) = e {
                a.push(Value::String(v.into_owned()));
            }
            m
        });
    let payload = EventPayload {
        action: "AUDIT_ACTION_EXPORTED".into(),
        resource_type: "RESOURCE_TYPE_AUDIT_LOG".into(),
        resource_id: caller.org_id.clone(),
        resource_display: "audit log".into(),
        organization_id: caller.org_id.clone(),
        project_id: String::new(),
        actor: serde_json::from_value(json!({
            "actor_id": caller.principal_id,
            "actor_type": caller.principal_type,
            "actor_display": caller.key_name,
            "source": source,
            "auth_method": "API_KEY",
        }))?,
        data: json!({"filters": filters, "format": format}),
    };
    let client = tokio::time::timeout(
        Duration::from_secs(10),
        crate::capture::setup::connect_sql(&s.cfg),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timed out connecting to Postgres"))??;
    let prefix = format!("{}:event", s.cfg.attribution.message_prefix);
    client
        .execute(
            "SELECT pg_logical_emit_message(true, $1::text, $2::text)",
            &[&prefix, &serde_json::to_string(&payload)?],
        )
        .await
        .map_err(|e| anyhow::anyhow!(crate::capture::setup::pg_error_text(&e)))?;
    Ok(())
}
