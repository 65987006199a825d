//! What every request handler shares: the config, the ClickHouse client, key checks and rate limits, and
//! the rule that turns a caller into what it may read.

use axum::http::{header, HeaderMap, StatusCode};
use std::sync::Arc;

use super::auth::{AuthError, Authenticator, Caller, RateLimiter, Role};
use super::error::ApiError;
use super::metrics::HttpMetrics;
use super::params::Vocabulary;
use crate::audit::attribution::seal::SealKey;
use crate::capture::metrics::CaptureMetrics;
use crate::config::Config;
use crate::store::query::Scope;

pub struct AppState {
    pub cfg: Arc<Config>,
    pub ch: clickhouse::Client,
    pub(super) auth: Authenticator,
    pub(super) limiter: RateLimiter,
    pub(super) vocab: Vocabulary,
    /// Present when this process also captures (`waltrail run`).
    pub capture: Option<Arc<CaptureMetrics>>,
    pub http: HttpMetrics,
    /// Seals the export events this process writes (see `audit::attribution::seal`).
    pub(super) event_key: SealKey,
    /// The public keys checkpoints verify with (current and trusted).
    pub(super) integrity_keys: Vec<crate::audit::chain::PublicKey>,
}

impl AppState {
    pub fn new(cfg: Arc<Config>, capture: Option<Arc<CaptureMetrics>>) -> Arc<AppState> {
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
            event_key: SealKey::new(cfg.event_secret.0.as_bytes()),
            integrity_keys: crate::audit::chain::configured_keys(&cfg)
                .map(|(_, k)| k)
                .unwrap_or_else(|e| {
                    tracing::error!("integrity keys: {e}");
                    Vec::new()
                }),
            cfg,
        })
    }

    pub(super) fn retention(&self) -> u32 {
        self.cfg.retention.days
    }

    /// Authenticate, rate-limit, and check the caller may read this organization.
    pub(super) async fn caller(
        &self,
        headers: &HeaderMap,
        org_id: &str,
    ) -> Result<Caller, ApiError> {
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

    pub(super) fn scope(&self, caller: &Caller) -> Scope {
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
