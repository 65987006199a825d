//! What every request handler shares: the config, the ClickHouse client, key checks and rate limits, and
//! the rule that turns a caller into what it may read.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::auth::{AuthError, Authenticator, Caller, RateLimiter, Role};
use super::background::{Readiness, SourcesSeen};
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
    /// Signs NDJSON exports (`integrity.export_signing_key_file`'s key, else the checkpoints'): without it
    /// exports go out unsigned.
    pub(super) export_key: Option<Arc<crate::audit::chain::SigningKey>>,
    /// The API's Postgres connections (key lookups, export records), at most `api.postgres_pool_size`.
    pub(super) pg: deadpool_postgres::Pool,
    /// Exports streaming now, at most `api.max_exports` (and `max_exports_per_org` of one organization); a
    /// place lives as long as its response body.
    pub(super) exports: ExportPlaces,
    /// The last ClickHouse check, refreshed in the background (see `health`).
    pub(super) ready: Readiness,
    /// Every source's latest heartbeat, read in the background with `ready`.
    pub(super) sources: SourcesSeen,
}

impl AppState {
    /// Fails only on a config the connection pool cannot be built from (checked by `Config::validate`).
    pub fn new(
        cfg: Arc<Config>,
        capture: Option<Arc<CaptureMetrics>>,
    ) -> anyhow::Result<Arc<AppState>> {
        let mut vocab = Vocabulary::default();
        for t in &cfg.tables {
            vocab.resource_types.push(t.resource_type.clone());
            for d in &t.derived_actions {
                vocab.actions.push(d.action.clone());
            }
        }
        let http = HttpMetrics::default();
        let _ = http.started.get_or_init(std::time::Instant::now);
        let pg = crate::pg::pool(&cfg, cfg.api.postgres_pool_size, Duration::from_secs(2))?;
        let keys = crate::audit::chain::configured_keys(&cfg)
            .and_then(|(_, keys)| Ok((crate::audit::chain::export_key(&cfg)?, keys)));
        let (export_key, integrity_keys) = keys.unwrap_or_else(|e| {
            tracing::error!("integrity keys: {e}");
            (None, Vec::new())
        });
        Ok(Arc::new(AppState {
            ch: crate::store::client(&cfg.clickhouse),
            auth: Authenticator::new(&cfg),
            limiter: RateLimiter::new(cfg.api.rate_limit_per_minute),
            vocab,
            capture,
            http,
            event_key: SealKey::new(cfg.event_secret.0.as_bytes()),
            integrity_keys,
            export_key: export_key.map(Arc::new),
            pg,
            exports: ExportPlaces::new(cfg.api.max_exports, cfg.api.max_exports_per_org),
            ready: Readiness::default(),
            sources: SourcesSeen::default(),
            cfg,
        }))
    }

    pub(super) fn retention(&self) -> u32 {
        self.cfg.retention.days
    }

    /// Authenticate and rate-limit (no organization check: `/api/v1/me`).
    pub(super) async fn authenticated(
        &self,
        headers: &HeaderMap,
        client: Client,
    ) -> Result<Caller, ApiError> {
        // Two keys in one request: which one is meant? Neither is taken.
        if headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(ApiError::bad_request(
                "the request carries more than one Authorization header; send one".to_owned(),
            ));
        }
        let header = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let caller = self
            .auth
            .authenticate(header, client.0, &self.pg)
            .await
            .map_err(|e| match e {
                AuthError::Missing | AuthError::Invalid => {
                    ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
                }
                AuthError::TooManyFailures(wait) => ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    msg: e.to_string(),
                    retry_after: Some(wait),
                },
                AuthError::Busy => ApiError {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    msg: e.to_string(),
                    retry_after: Some(1),
                },
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
        Ok(caller)
    }

    /// Authenticate, rate-limit, and check the caller may read this organization.
    pub(super) async fn caller(
        &self,
        headers: &HeaderMap,
        client: Client,
        org_id: &str,
    ) -> Result<Caller, ApiError> {
        let caller = self.authenticated(headers, client).await?;
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

/// The client's address, for limits kept per client: the peer's, or with `api.client_address_header` the
/// last address in that header (the one the proxy in front appended; earlier ones are the client's word).
#[derive(Debug, Clone, Copy)]
pub(super) struct Client(pub IpAddr);

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        s: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let from_header = s.cfg.api.client_address_header.as_deref().and_then(|name| {
            let v = parts.headers.get_all(name).iter().next_back()?;
            let last = v.to_str().ok()?.rsplit(',').next()?.trim();
            last.parse::<IpAddr>()
                .ok()
                .or_else(|| last.parse::<SocketAddr>().ok().map(|a| a.ip()))
        });
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(Client(
            from_header
                .or(peer)
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// The places exports stream in: so many for the server, fewer for one organization, so that one tenant's
/// clients that open exports and never read cannot hold every place (QA36 M3).
pub(super) struct ExportPlaces {
    all: Arc<tokio::sync::Semaphore>,
    max: usize,
    per_org: usize,
    held: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// Why no place was free.
pub(super) enum ExportsFull {
    Server(usize),
    Organization(usize),
}

/// One export's place, given back when dropped (with the response body).
pub(super) struct ExportPlace {
    _permit: tokio::sync::OwnedSemaphorePermit,
    org: String,
    held: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl ExportPlaces {
    pub(super) fn new(max: usize, per_org: usize) -> ExportPlaces {
        ExportPlaces {
            all: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
            per_org,
            held: Default::default(),
        }
    }

    pub(super) fn take(&self, org: &str) -> Result<ExportPlace, ExportsFull> {
        // A poisoned count is still a count: the lock guards no invariant a panic elsewhere could break.
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.get(org).copied().unwrap_or(0);
        if n >= self.per_org {
            return Err(ExportsFull::Organization(self.per_org));
        }
        let permit = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| ExportsFull::Server(self.max))?;
        held.insert(org.to_owned(), n + 1);
        Ok(ExportPlace {
            _permit: permit,
            org: org.to_owned(),
            held: self.held.clone(),
        })
    }
}

impl Drop for ExportPlace {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod export_places {
    use super::{ExportPlaces, ExportsFull};

    #[test]
    fn one_organization_cannot_hold_every_place() {
        let places = ExportPlaces::new(3, 2);
        let a1 = places.take("a").ok().expect("first of a");
        let _a2 = places.take("a").ok().expect("second of a");
        assert!(matches!(
            places.take("a"),
            Err(ExportsFull::Organization(2))
        ));
        let b1 = places.take("b").ok().expect("b still has a place");
        assert!(matches!(places.take("c"), Err(ExportsFull::Server(3))));
        // Places come back with their bodies.
        drop(a1);
        let _a3 = places.take("a").ok().expect("a's place came back");
        drop(b1);
        let _c = places.take("c").ok().expect("the server's place came back");
        assert!(places.held.lock().unwrap().get("b").is_none());
    }
}
