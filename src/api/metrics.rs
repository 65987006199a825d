//! Prometheus metrics: capture progress (items, batches, lag, LSNs) and API latency and errors.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::api::{ApiError, AppState};
use crate::store::row::now_us;
use sha2::{Digest, Sha256};

const BUCKETS_MS: [f64; 11] = [
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS_MS.len()],
    sum_ms: f64,
    total: u64,
}

#[derive(Default)]
pub struct HttpMetrics {
    latency: Mutex<BTreeMap<(String, u16), Histogram>>,
    errors: Mutex<BTreeMap<String, u64>>,
    pub(crate) started: std::sync::OnceLock<Instant>,
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, status: u16, ms: f64) {
        if let Ok(mut m) = self.latency.lock() {
            let h = m.entry((route.to_owned(), status)).or_default();
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                if ms <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum_ms += ms;
            h.total += 1;
        }
        if status >= 400 {
            self.error(match status {
                400 => "bad_request",
                401 => "unauthorized",
                403 => "forbidden",
                404 => "not_found",
                408 => "timeout",
                413 => "too_large",
                429 => "rate_limited",
                503 => "unavailable",
                _ => "server_error",
            });
        }
    }

    pub fn error(&self, kind: &str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(kind.to_owned()).or_default() += 1;
        }
    }
}

/// Middleware: time every request by its route pattern (never by its concrete path: ids are unbounded).
pub async fn track(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let t = Instant::now();
    let resp = next.run(req).await;
    s.http.observe(
        &route,
        resp.status().as_u16(),
        t.elapsed().as_secs_f64() * 1000.0,
    );
    resp
}

/// Whether the request may read `/metrics`: always without `api.metrics_token`, else only with
/// `Authorization: Bearer <token>`. Both sides are hashed first, then compared in constant time, so neither
/// the token's length nor how much of it matched shows in the time taken.
fn may_read(s: &AppState, headers: &HeaderMap) -> bool {
    let Some(token) = &s.cfg.api.metrics_token else {
        return true;
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(token.0.as_bytes());
    !presented.is_empty() && crate::api::auth::same(&a, &b)
}

pub async fn render(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if !may_read(&s, &headers) {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "/metrics needs `Authorization: Bearer <api.metrics_token>`",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let mut o = String::new();
    if let Some(m) = &s.capture {
        let g = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        let items = g(&m.items_written);
        let _ = writeln!(
            o,
            "# HELP waltrail_items_written_total Audit items stored in ClickHouse."
        );
        let _ = writeln!(o, "# TYPE waltrail_items_written_total counter");
        let _ = writeln!(o, "waltrail_items_written_total {items}");
        if let Some(start) = s.http.started.get() {
            let secs = start.elapsed().as_secs_f64().max(1.0);
            let _ = writeln!(
                o,
                "# HELP waltrail_items_per_second Average items stored per second since start."
            );
            let _ = writeln!(o, "# TYPE waltrail_items_per_second gauge");
            let _ = writeln!(o, "waltrail_items_per_second {:.3}", items as f64 / secs);
        }
        let _ = writeln!(o, "# TYPE waltrail_batches_written_total counter");
        let _ = writeln!(
            o,
            "waltrail_batches_written_total {}",
            g(&m.batches_written)
        );
        let _ = writeln!(
            o,
            "# HELP waltrail_last_batch_items Items in the last stored batch."
        );
        let _ = writeln!(o, "# TYPE waltrail_last_batch_items gauge");
        let _ = writeln!(o, "waltrail_last_batch_items {}", g(&m.batch_items_last));
        let _ = writeln!(o, "# TYPE waltrail_clickhouse_insert_errors_total counter");
        let _ = writeln!(
            o,
            "waltrail_clickhouse_insert_errors_total {}",
            g(&m.insert_errors)
        );
        let _ = writeln!(o, "# TYPE waltrail_reconnects_total counter");
        let _ = writeln!(o, "waltrail_reconnects_total {}", g(&m.reconnects));
        let status = g(&m.slot_wal_status);
        if status != 0 {
            let i = |v: &std::sync::atomic::AtomicI64| v.load(Ordering::Relaxed);
            let _ = writeln!(
                o,
                "# HELP waltrail_slot_wal_status The replication slot's wal_status (1 on the current one): unreserved means Postgres may remove WAL it needs, lost that it did (the trail has a gap)."
            );
            let _ = writeln!(o, "# TYPE waltrail_slot_wal_status gauge");
            for code in 1..=4 {
                let _ = writeln!(
                    o,
                    "waltrail_slot_wal_status{{status=\"{}\"}} {}",
                    crate::capture::metrics::slot_status_name(code),
                    u8::from(code == status)
                );
            }
            let _ = writeln!(
                o,
                "# HELP waltrail_slot_safe_wal_bytes WAL that may still be written before Postgres invalidates the slot (-1: no max_slot_wal_keep_size)."
            );
            let _ = writeln!(o, "# TYPE waltrail_slot_safe_wal_bytes gauge");
            let _ = writeln!(
                o,
                "waltrail_slot_safe_wal_bytes {}",
                i(&m.slot_safe_wal_bytes)
            );
            let _ = writeln!(
                o,
                "# HELP waltrail_slot_unconfirmed_bytes WAL written since the position waltrail confirmed: what waltrail has not stored yet."
            );
            let _ = writeln!(o, "# TYPE waltrail_slot_unconfirmed_bytes gauge");
            let _ = writeln!(
                o,
                "waltrail_slot_unconfirmed_bytes {}",
                i(&m.slot_unconfirmed_bytes)
            );
            let _ = writeln!(
                o,
                "# HELP waltrail_stream_lag_seconds How long after its commit Postgres sent the last transaction read (both times on the server's clock): near 0 when capture keeps up, growing while it catches up."
            );
            let _ = writeln!(o, "# TYPE waltrail_stream_lag_seconds gauge");
            let _ = writeln!(
                o,
                "waltrail_stream_lag_seconds {}",
                m.stream_lag_us
                    .load(std::sync::atomic::Ordering::Relaxed)
                    .max(0) as f64
                    / 1e6
            );
            let _ = writeln!(
                o,
                "# HELP waltrail_checkpoints_undelivered Checkpoints stored but not yet appended to integrity.checkpoint_file (it refuses them; they wait and are retried)."
            );
            let _ = writeln!(o, "# TYPE waltrail_checkpoints_undelivered gauge");
            let _ = writeln!(
                o,
                "waltrail_checkpoints_undelivered {}",
                g(&m.checkpoints_undelivered)
            );
            let _ = writeln!(
                o,
                "# HELP waltrail_unplaced_relations_total Relations in the stream placed in no mapped table (a partition detached or dropped before capture reached its changes, whose table could not be told): their changes are not in the trail."
            );
            let _ = writeln!(o, "# TYPE waltrail_unplaced_relations_total counter");
            let _ = writeln!(
                o,
                "waltrail_unplaced_relations_total {}",
                g(&m.unplaced_relations)
            );
            let _ = writeln!(
                o,
                "# HELP waltrail_slot_retained_bytes WAL Postgres keeps for the slot (from its restart position). Far above unconfirmed bytes: a long transaction on the source holds it, not waltrail."
            );
            let _ = writeln!(o, "# TYPE waltrail_slot_retained_bytes gauge");
            let _ = writeln!(
                o,
                "waltrail_slot_retained_bytes {}",
                i(&m.slot_retained_bytes)
            );
            let _ = writeln!(
                o,
                "# HELP waltrail_source_oldest_transaction_seconds Age of the oldest transaction open on the source database (-1: none)."
            );
            let _ = writeln!(o, "# TYPE waltrail_source_oldest_transaction_seconds gauge");
            let ms = i(&m.source_oldest_xact_ms);
            let _ = writeln!(
                o,
                "waltrail_source_oldest_transaction_seconds {}",
                if ms < 0 { -1.0 } else { ms as f64 / 1000.0 }
            );
        }
        let _ = writeln!(
            o,
            "# HELP waltrail_spill_bytes Bytes of large transactions streamed by Postgres while in progress, held (encrypted) in capture.spill_dir until they commit."
        );
        let _ = writeln!(o, "# TYPE waltrail_spill_bytes gauge");
        let _ = writeln!(o, "waltrail_spill_bytes {}", g(&m.spill_bytes));
        let _ = writeln!(
            o,
            "# HELP waltrail_rejected_events_total <prefix>:event messages waltrail did not seal, recorded as rejected items"
        );
        let _ = writeln!(o, "# TYPE waltrail_rejected_events_total counter");
        let _ = writeln!(
            o,
            "waltrail_rejected_events_total {}",
            g(&m.rejected_events)
        );
        let _ = writeln!(
            o,
            "# HELP waltrail_rejected_contexts_total context messages not trusted (unsigned or badly signed)"
        );
        let _ = writeln!(o, "# TYPE waltrail_rejected_contexts_total counter");
        let _ = writeln!(
            o,
            "waltrail_rejected_contexts_total {}",
            g(&m.rejected_contexts)
        );
        let acked = g(&m.acked_lsn);
        let server = g(&m.server_wal_end).max(g(&m.received_lsn));
        let _ = writeln!(
            o,
            "# HELP waltrail_confirmed_lsn Last WAL position confirmed to Postgres (as a number)."
        );
        let _ = writeln!(o, "# TYPE waltrail_confirmed_lsn gauge");
        let _ = writeln!(o, "waltrail_confirmed_lsn {acked}");
        let _ = writeln!(o, "# HELP waltrail_replication_lag_bytes Server WAL position minus the confirmed position.");
        let _ = writeln!(o, "# TYPE waltrail_replication_lag_bytes gauge");
        let _ = writeln!(
            o,
            "waltrail_replication_lag_bytes {}",
            server.saturating_sub(acked)
        );
        let last_commit = m.last_commit_time_us.load(Ordering::Relaxed);
        let lag_s = if server <= acked || last_commit == 0 {
            0.0
        } else {
            (now_us() - last_commit) as f64 / 1e6
        };
        let _ = writeln!(o, "# HELP waltrail_replication_lag_seconds Age of the last stored commit while more WAL waits.");
        let _ = writeln!(o, "# TYPE waltrail_replication_lag_seconds gauge");
        let _ = writeln!(o, "waltrail_replication_lag_seconds {lag_s:.3}");
    }
    sources(&mut o, &s.sources.reports(), now_us());
    let _ = writeln!(
        o,
        "# HELP waltrail_api_request_duration_ms API request latency."
    );
    let _ = writeln!(o, "# TYPE waltrail_api_request_duration_ms histogram");
    if let Ok(m) = s.http.latency.lock() {
        for ((route, status), h) in m.iter() {
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "waltrail_api_request_duration_ms_bucket{{route=\"{route}\",status=\"{status}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                o,
                "waltrail_api_request_duration_ms_bucket{{route=\"{route}\",status=\"{status}\",le=\"+Inf\"}} {}",
                h.total
            );
            let _ = writeln!(o, "waltrail_api_request_duration_ms_sum{{route=\"{route}\",status=\"{status}\"}} {:.3}", h.sum_ms);
            let _ = writeln!(o, "waltrail_api_request_duration_ms_count{{route=\"{route}\",status=\"{status}\"}} {}", h.total);
        }
    }
    let _ = writeln!(o, "# TYPE waltrail_api_errors_total counter");
    if let Ok(e) = s.http.errors.lock() {
        for (kind, n) in e.iter() {
            let _ = writeln!(o, "waltrail_api_errors_total{{kind=\"{kind}\"}} {n}");
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], o).into_response()
}

/// A label value in the Prometheus text format: backslash, double quote and line feed escaped.
fn label(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// Every source's lag, from the heartbeats its capture process writes (`store::sources`), as last read in
/// the background; ages are taken now, so they keep growing while nothing new is read.
fn sources(o: &mut String, reports: &[crate::store::sources::SourceReport], now: i64) {
    if reports.is_empty() {
        return;
    }
    type Figure = fn(&crate::store::sources::SourceReport, i64) -> String;
    let figures: [(&str, &str, Figure); 4] = [
        (
            "waltrail_source_heartbeat_age_seconds",
            "Seconds since the source's capture process last reported (every 5 s; waltrail check warns after 60 s).",
            |r, now| format!("{:.3}", r.age_s(now)),
        ),
        (
            "waltrail_source_pending_bytes",
            "WAL of the source's server beyond the position its capture confirmed (what is not stored yet), as last reported.",
            |r, _| r.pending_bytes().to_string(),
        ),
        (
            "waltrail_source_last_commit_timestamp_seconds",
            "Commit time of the last transaction the source's capture confirmed, as last reported (0: none since it started).",
            |r, _| format!("{:.6}", r.last_commit_time_us as f64 / 1e6),
        ),
        (
            "waltrail_source_confirmed_lsn",
            "WAL position the source's capture confirmed to Postgres (as a number), as last reported.",
            |r, _| r.confirmed_lsn.to_string(),
        ),
    ];
    for (name, help, value) in figures {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} gauge");
        for r in reports {
            let _ = writeln!(
                o,
                "{name}{{source_id=\"{}\"}} {}",
                label(&r.source_id),
                value(r, now)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP waltrail_source_info The machine and waltrail version that last reported for each source."
    );
    let _ = writeln!(o, "# TYPE waltrail_source_info gauge");
    for r in reports {
        let _ = writeln!(
            o,
            "waltrail_source_info{{source_id=\"{}\",host=\"{}\",version=\"{}\"}} 1",
            label(&r.source_id),
            label(&r.host),
            label(&r.version)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("x\ny"), "x\\ny");
        assert_eq!(label("ünï:,/"), "ünï:,/");
    }

    #[test]
    fn each_source_has_its_gauges() {
        let r = |id: &str, reported_at_us: u64| crate::store::sources::SourceReport {
            source_id: id.into(),
            confirmed_lsn: 100,
            server_lsn: 150,
            last_commit_time_us: 1_500_000,
            reported_at_us,
            host: "h".into(),
            version: "1".into(),
            confirm_bound_lsn: 150,
            redaction_baseline: String::new(),
            pending_gaps: String::new(),
            publication_stamp: String::new(),
        };
        let mut o = String::new();
        sources(
            &mut o,
            &[r("a\"1", 10_000_000), r("b", 12_000_000)],
            15_000_000,
        );
        for line in [
            r#"waltrail_source_heartbeat_age_seconds{source_id="a\"1"} 5.000"#,
            r#"waltrail_source_heartbeat_age_seconds{source_id="b"} 3.000"#,
            r#"waltrail_source_pending_bytes{source_id="b"} 50"#,
            r#"waltrail_source_last_commit_timestamp_seconds{source_id="a\"1"} 1.500000"#,
            r#"waltrail_source_confirmed_lsn{source_id="b"} 100"#,
            r#"waltrail_source_info{source_id="b",host="h",version="1"} 1"#,
        ] {
            assert!(o.lines().any(|l| l == line), "{line} in\n{o}");
        }
        assert_eq!(
            o.matches("# TYPE waltrail_source_pending_bytes gauge")
                .count(),
            1
        );
    }
}
