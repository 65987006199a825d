//! The HTTP side: the REST API over ClickHouse, the dashboard's static files, health and metrics.
//!
//! `state` is what handlers share, `error` the envelope; each endpoint family has its own file.

pub mod auth;
mod error;
mod export;
mod health;
mod integrity;
mod items;
pub mod metrics;
pub mod params;
mod state;
pub mod web;

use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

pub use error::ApiError;
pub use items::{item_json, timestamp};
pub use state::AppState;

pub fn router(state: Arc<AppState>) -> Router {
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
