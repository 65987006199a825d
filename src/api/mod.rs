//! The HTTP side: the REST API over ClickHouse, the dashboard's static files, health and metrics.
//!
//! `state` is what handlers share, `error` the envelope; each endpoint family has its own file.

pub mod auth;
mod background;
mod error;
mod export;
mod health;
mod integrity;
mod items;
pub mod metrics;
pub mod params;
mod state;
pub mod web;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceExt;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;
pub use items::{item_json, timestamp};
pub use state::AppState;

/// No endpoint takes a request body: anything longer than this is refused (413) before a handler runs.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Request line and headers together may not exceed this: 431 past it (and hyper's read buffer is bounded
/// at twice this).
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// File descriptors kept out of the API's connection cap for everything else in the process: capture's
/// replication, SQL and ClickHouse sockets, logs, the runtime's own; the API's pool and its ClickHouse
/// queries are added to it from the config.
const FD_RESERVE: u64 = 64;

pub fn router(state: Arc<AppState>) -> Router {
    let api = &state.cfg.api;
    Router::new()
        .merge(web::router())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::render))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(health::me))
        .route("/api/v1/orgs/{org_id}/audit_logs", get(items::list_org))
        .route(
            "/api/v1/orgs/{org_id}/audit_logs/facets",
            get(items::facets),
        )
        .route(
            "/api/v1/orgs/{org_id}/audit_logs/integrity",
            get(integrity::verify),
        )
        .route("/api/v1/integrity/keys", get(integrity::keys))
        .route(
            "/api/v1/orgs/{org_id}/audit_logs/export",
            get(export::export),
        )
        .route("/api/v1/orgs/{org_id}/audit_logs/{id}", get(items::one))
        .route(
            "/api/v1/orgs/{org_id}/projects/{project_id}/audit_logs",
            get(items::list_project),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint answers GET (and HEAD) only",
            )
        })
        // Each `.layer` wraps the one before it (the last is outermost). They are separate calls on purpose:
        // axum puts a route boundary between them, whose readiness is immediate, so the concurrency limit's
        // wait for a place happens inside the timeout's call and is bounded by it too.
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(GlobalConcurrencyLimitLayer::new(
            api.max_concurrent_requests,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(api.request_timeout_ms),
        ))
        .layer(axum::middleware::map_response(
            error::envelope_for_bare_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Raise this process's soft open-file limit to its hard limit (a service started with the usual soft
/// limit of 1024 would otherwise run out of descriptors under a connection flood, and capture with it).
/// Returns (before, after).
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    let (before, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let after = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok((before, after))
}

/// The connections the API may hold: `api.max_connections`, lowered so that with the reserve for the rest
/// of the process they fit under the open-file limit `nofile`.
pub fn connection_cap(api: &crate::config::ApiConfig, nofile: u64) -> usize {
    let reserve = FD_RESERVE
        + api.postgres_pool_size as u64
        + api.max_concurrent_requests as u64
        + api.max_exports as u64;
    let fits = nofile.saturating_sub(reserve).max(1);
    (api.max_connections as u64).min(fits) as usize
}

/// Serve until `shutdown` turns true.
///
/// The accept loop is written out (hyper-util connections rather than `axum::serve`) for what axum's
/// server cannot be told: it takes a place from a semaphore *before* accepting, so at most the connection
/// cap is open at once and a flood of connections waits in the kernel's listen queue instead of using up
/// the process's file descriptors (which capture needs too); and each connection gets hyper's header read
/// timeout (which also closes idle keep-alive connections) and a write timeout on the socket
/// (`tokio-io-timeout`) for clients that stop reading. Everything per request is tower layers (`router`).
pub async fn serve(
    state: Arc<AppState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let api = state.cfg.api.clone();
    let addr = api.listen.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (api.listen): {e}"))?;
    let nofile = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let cap = connection_cap(&api, nofile);
    if cap < api.max_connections {
        tracing::warn!(
            max_connections = api.max_connections,
            open_file_limit = nofile,
            cap,
            "api.max_connections lowered to fit the open-file limit (capture, the Postgres pool and ClickHouse queries need descriptors too); raise the hard limit (e.g. LimitNOFILE=) to allow more"
        );
    }
    if state.cfg.api.metrics_token.is_none() && !is_loopback(&addr) {
        tracing::warn!(%addr, "/metrics is open to anyone who reaches api.listen: set api.metrics_token (WALTRAIL_METRICS_TOKEN)");
    }
    tracing::info!(%addr, max_connections = cap, "API and dashboard listening");
    tokio::spawn(health::keep_checking(state.clone(), shutdown.clone()));
    tokio::spawn(tidy_limiters(state.clone(), shutdown.clone()));

    let app = router(state.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(cap));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(api.header_read_timeout_ms))
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(2 * MAX_HEAD_BYTES);
    let send_timeout = Duration::from_millis(api.send_timeout_ms);
    let mut last_accept_warning: Option<std::time::Instant> = None;
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors (or the like): wait a little rather than spin; say so once a minute.
                    if last_accept_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::warn!(error = %e, "API cannot accept a connection");
                        last_accept_warning = Some(std::time::Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let mut io = tokio_io_timeout::TimeoutStream::new(stream);
        io.set_write_timeout(Some(send_timeout));
        let io = hyper_util::rt::TokioIo::new(Box::pin(io));
        let app = app.clone();
        let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(Body::new))
        });
        let conn = graceful.watch(http.serve_connection(io, svc));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                // Header timeouts, clients gone, write timeouts: the client's doing, not an error here.
                tracing::debug!(error = %e, "API connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Let requests in flight finish, but not forever (a slow export must not hold the process).
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    Ok(())
}

fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

/// Limiter state of keys and addresses not seen lately is dropped every minute, so a flood of addresses
/// leaves no memory behind.
async fn tidy_limiters(s: Arc<AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = shutdown.changed() => return,
        }
        s.limiter.tidy();
        s.auth.tidy();
    }
}

async fn openapi() -> Response {
    web::static_file("application/json", include_str!("openapi.json"))
}
