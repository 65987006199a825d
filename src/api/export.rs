//! Export: every matching item streamed as NDJSON or CSV, after the export itself is recorded in the
//! trail (through the WAL, like every other item). No record, no export.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use std::sync::Arc;

use super::auth::Caller;
use super::error::ApiError;
use super::items::{item_json, timestamp};
use super::params;
use super::state::{AppState, Client, ExportsFull};
use crate::audit::attribution::{Attribution, EventPayload};
use crate::audit::chain::{ExportDigest, ExportInfo, SigningKey};
use crate::store::query::{self, Order, ReadRow};

/// Later columns were added at the end, so a column keeps its place across versions.
const CSV_COLUMNS: [&str; 21] = [
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
    "actor_source",
    "on_behalf_of_id",
    "client_ip",
    "platform_wide",
];

fn csv_field(s: &str) -> String {
    // Cells starting with = + - @ are formulas to a spreadsheet, and so are cells starting with a tab or a
    // carriage return (some spreadsheets skip them and read the formula after). A leading line feed too:
    // it is the same trick for tools that trim any leading whitespace. Prefix them all so they stay text.
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r', '\n']) {
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

/// The changed fields in one cell, `;` between names; a `;` or a backslash inside a name is escaped with a
/// backslash, so a column named `a;b` never reads as two.
fn changed_fields_cell(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| f.replace('\\', "\\\\").replace(';', "\\;"))
        .collect::<Vec<_>>()
        .join(";")
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
        changed_fields_cell(&r.changed_fields),
        r.summary.clone(),
        r.actor_source.clone(),
        r.on_behalf_of_id.clone(),
        r.client_ip.clone(),
        r.platform_wide.to_string(),
    ];
    let mut line = cells
        .iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

pub(super) async fn export(
    State(s): State<Arc<AppState>>,
    Path(org_id): Path<String>,
    RawQuery(q): RawQuery,
    method: Method,
    headers: HeaderMap,
    client: Client,
) -> Result<Response, ApiError> {
    let caller = s.caller(&headers, client, &org_id).await?;
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
    // A HEAD asks what a GET would answer, without the body: no data leaves, so no export is recorded.
    let csv = format == "csv";
    let (ctype, ext) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "ndjson")
    };
    if method == Method::HEAD {
        let mut resp = Response::new(Body::empty());
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        return Ok(resp);
    }
    // Exports hold a ClickHouse query open while they stream: only `api.max_exports` at once, and
    // `max_exports_per_org` of one organization. The place is taken before the export is recorded (a
    // refused export is not one) and lives as long as the body.
    let permit = s.exports.take(&org_id).map_err(|full| ApiError {
        status: StatusCode::TOO_MANY_REQUESTS,
        msg: match full {
            ExportsFull::Server(n) => {
                format!("{n} exports are running, the most this server runs at once; retry in 5 s")
            }
            ExportsFull::Organization(n) => format!(
                "{n} exports of this organization are running, the most one organization runs at once; \
                 retry in 5 s"
            ),
        },
        retry_after: Some(5),
    })?;
    // The export is itself audited, through the WAL like every other item; no record, no export.
    // Every export arrives over the API with a key: that is what the server knows. What the client says it
    // is (the dashboard sends a header any client can set) is kept as a claim, never as the source.
    let claimed_client: Option<String> = headers
        .get("x-waltrail-client")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect());
    record_export(
        &s,
        &caller,
        q.as_deref().unwrap_or(""),
        &format,
        claimed_client.as_deref(),
    )
        .await
        .map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "cannot record the export");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot record this export in the audit trail right now, so it is refused; retry shortly",
            )
        })?;
    let scope = s.scope(&caller);
    // NDJSON carries what an offline verifier needs: each item's stored fields and chain fields, then the
    // signed checkpoints of the organization's chains (read before the items, so each covers items the
    // export holds), and last what the export is (whole or filtered), signed with every line before it.
    let cursor = query::export(&s.ch, s.retention(), &scope, &p.filters);
    let tail = if csv {
        None
    } else {
        let complete = p.filters == query::Filters::default() && scope.projects.is_none();
        let mut checkpoints = Vec::new();
        for chain in [caller.org_id.as_str(), ""] {
            let cps = query::checkpoints(&s.ch, chain)
                .await
                .map_err(ApiError::store)?;
            checkpoints.extend(
                cps.into_iter()
                    .map(|c| json!({"checkpoint": c.checkpoint()}).to_string()),
            );
        }
        // What the sources' rosters list of the organization's chains and the platform chain (read before
        // the items, like the checkpoints): an offline verifier holds the export's chains to it, so a
        // chain deleted whole from the store does not leave a whole-looking export.
        if complete {
            let rosters = query::rosters(&s.ch, Some(cursor.floor()), None)
                .await
                .map_err(ApiError::store)?;
            checkpoints.extend(
                crate::audit::chain::roster_claims(&rosters, &s.integrity_keys, &caller.org_id)
                    .into_iter()
                    .map(|c| json!({ "roster": c }).to_string()),
            );
        }
        let platform_complete = complete
            && !query::has_unscoped_items(&s.ch)
                .await
                .map_err(ApiError::store)?;
        Some(Tail {
            checkpoints,
            info: ExportInfo {
                complete,
                platform_complete: Some(platform_complete),
                seal: None,
            },
            digest: Default::default(),
            key: s.export_key.clone(),
            organization_id: caller.org_id.clone(),
            query: q.clone().unwrap_or_default(),
            since_us: cursor.floor(),
        })
    };
    let header_line = csv.then(|| format!("{}\r\n", CSV_COLUMNS.join(",")));
    // Rows are read one by one and sent in chunks of about 64 KiB: memory stays flat whatever the size.
    let stream = futures_util::stream::unfold(
        (cursor, header_line, false, tail, Some(permit)),
        move |(mut cursor, header_line, done, mut tail, mut permit)| async move {
            if done {
                return None;
            }
            let mut chunk = header_line.unwrap_or_default();
            loop {
                match cursor.next().await {
                    Ok(Some(r)) => {
                        match tail.as_mut() {
                            None => chunk.push_str(&csv_row(&r)),
                            Some(t) => {
                                let mut line = item_json(&r);
                                line["record"] =
                                    serde_json::to_value(r.record()).unwrap_or(Value::Null);
                                line["chain"] =
                                    serde_json::to_value(r.chain_fields()).unwrap_or(Value::Null);
                                let line = line.to_string();
                                t.digest.add(&line);
                                chunk.push_str(&line);
                                chunk.push('\n');
                            }
                        }
                        if chunk.len() >= 64 * 1024 {
                            return Some((
                                Ok::<_, std::io::Error>(chunk),
                                (cursor, None, false, tail, permit),
                            ));
                        }
                    }
                    Ok(None) => {
                        if let Some(t) = tail.take() {
                            chunk.push_str(&t.finish());
                        }
                        // The query is done: free the export's place before the last bytes are sent.
                        permit.take();
                        return Some((Ok(chunk), (cursor, None, true, None, permit)));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "export interrupted");
                        return Some((
                            Err(std::io::Error::other(e.to_string())),
                            (cursor, None, true, None, None),
                        ));
                    }
                }
            }
        },
    );
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

/// What an NDJSON export sends after its items: the checkpoints, then its last line.
struct Tail {
    checkpoints: Vec<String>,
    info: ExportInfo,
    /// Every line sent so far.
    digest: ExportDigest,
    key: Option<Arc<SigningKey>>,
    organization_id: String,
    query: String,
    since_us: i64,
}

impl Tail {
    /// The checkpoint lines and the last line, signed (when the server has the key) over everything sent
    /// before it: a verifier then knows the export is exactly what was sent, whole chains and oldest items
    /// included.
    fn finish(mut self) -> String {
        let mut out = String::new();
        for c in &self.checkpoints {
            self.digest.add(c);
            out.push_str(c);
            out.push('\n');
        }
        if let Some(key) = &self.key {
            self.info.seal(
                key,
                &self.organization_id,
                &self.query,
                (crate::store::row::now_us(), self.since_us),
                &self.digest,
            );
        }
        out.push_str(&json!({ "export": self.info }).to_string());
        out.push('\n');
        out
    }
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
    claimed_client: Option<&str>,
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
            "source": "API",
            "auth_method": "API_KEY",
        }))?,
        data: json!({"filters": filters, "format": format, "client_claimed": claimed_client}),
        issued_at_us: crate::store::row::now_us(),
        nonce: uuid::Uuid::new_v4().to_string(),
    };
    // A connection from the API's bounded pool (the wait for one is bounded by the pool).
    let client =
        s.pg.get()
            .await
            .map_err(|e| anyhow::anyhow!(crate::pg::pool_error_text(&e)))?;
    let prefix = format!("{}:event", s.cfg.attribution.message_prefix);
    let sealed = Attribution::seal_event(&s.event_key, &prefix, &payload);
    client
        .execute(
            "SELECT pg_logical_emit_message(true, $1::text, $2::text)",
            &[&prefix, &sealed],
        )
        .await
        .map_err(|e| anyhow::anyhow!(crate::pg::error_text(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{changed_fields_cell, csv_field};

    #[test]
    fn changed_field_names_holding_the_separator_stay_one() {
        let f = |names: &[&str]| {
            changed_fields_cell(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(f(&["name", "org_id"]), "name;org_id");
        assert_eq!(f(&["a;b", "c"]), r"a\;b;c");
        assert_eq!(f(&["a", "b", "c"]), "a;b;c");
        assert_eq!(f(&[r"x\", "y"]), r"x\\;y");
        assert_eq!(f(&[]), "");
    }

    #[test]
    fn formula_cells_stay_text() {
        for (cell, want) in [
            ("=1+1", "'=1+1"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1+1", "'\t=1+1"),
            ("\r=1+1", "\"'\r=1+1\""),
            ("\n=1+1", "\"'\n=1+1\""),
            ("plain", "plain"),
            ("a=b", "a=b"),
            ("", ""),
            ("say \"hi\", =x", "\"say \"\"hi\"\", =x\""),
        ] {
            assert_eq!(csv_field(cell), want, "{cell:?}");
        }
    }
}
