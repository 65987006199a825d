//! Who is calling: Bearer keys (static keys hashed in the config, or keys resolved against the platform's
//! Postgres), their organization, role and projects; and the per-key rate limit.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::{Config, PlatformKeys};
use crate::vocab::PrincipalType;
pub use crate::vocab::Role;

/// A resolved caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_name: String,
    /// Hex SHA-256 of the key: identifies it for rate limiting without keeping the key.
    pub key_hash: String,
    pub principal_id: String,
    pub principal_type: PrincipalType,
    pub org_id: String,
    pub role: Role,
    pub projects: Vec<String>,
}

pub fn sha256_hex(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time comparison of two hex digests.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed Authorization header: use `Authorization: Bearer <key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    #[error("cannot check the key right now: {0}")]
    Unavailable(String),
}

pub struct Authenticator {
    statics: Vec<(String, Caller)>,
    platform: Option<PlatformKeys>,
    cfg: std::sync::Arc<Config>,
    cache: Mutex<HashMap<String, (Instant, Option<Caller>)>>,
}

impl Authenticator {
    pub fn new(cfg: std::sync::Arc<Config>) -> Self {
        let statics = cfg
            .api
            .keys
            .iter()
            .map(|k| {
                (
                    k.sha256.to_ascii_lowercase(),
                    Caller {
                        key_name: k.name.clone(),
                        key_hash: k.sha256.to_ascii_lowercase(),
                        principal_id: k.name.clone(),
                        principal_type: PrincipalType::ServiceKey,
                        org_id: k.org_id.clone(),
                        role: k.role,
                        projects: k.projects.clone(),
                    },
                )
            })
            .collect();
        Authenticator {
            statics,
            platform: cfg.api.platform_keys.clone(),
            cfg: cfg.clone(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn authenticate(&self, header: Option<&str>) -> Result<Caller, AuthError> {
        let key = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Missing)?;
        let hash = sha256_hex(key);
        if let Some((_, c)) = self.statics.iter().find(|(h, _)| same(h, &hash)) {
            return Ok(c.clone());
        }
        let Some(platform) = &self.platform else {
            return Err(AuthError::Invalid);
        };
        let ttl = Duration::from_secs(platform.cache_seconds);
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, c)) = cache.get(&hash) {
                if at.elapsed() < ttl {
                    return c.clone().ok_or(AuthError::Invalid);
                }
            }
        }
        let resolved = self.resolve_platform(platform, &hash).await?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 10_000 {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            cache.insert(hash, (Instant::now(), resolved.clone()));
        }
        resolved.ok_or(AuthError::Invalid)
    }

    async fn resolve_platform(
        &self,
        platform: &PlatformKeys,
        hash: &str,
    ) -> Result<Option<Caller>, AuthError> {
        let client = crate::pg::connect(&self.cfg)
            .await
            .map_err(|e| AuthError::Unavailable(format!("{e:#}")))?;
        let row = client
            .query_opt(&platform.query, &[&hash])
            .await
            .map_err(|e| {
                AuthError::Unavailable(format!(
                    "api.platform_keys.query failed: {}",
                    crate::pg::error_text(&e)
                ))
            })?;
        drop(client);
        let Some(row) = row else {
            return Ok(None);
        };
        let get = |name: &str| -> Result<Option<String>, AuthError> {
            row.try_get::<_, Option<String>>(name).map_err(|e| {
                AuthError::Unavailable(format!(
                    "api.platform_keys.query must return text column {name}: {e}"
                ))
            })
        };
        let principal_id = get("principal_id")?.unwrap_or_default();
        let org_id = get("org_id")?.unwrap_or_default();
        let role = get("role")?.unwrap_or_default();
        let projects: Vec<String> = row
            .try_get::<_, Option<Vec<String>>>("projects")
            .map_err(|e| {
                AuthError::Unavailable(format!(
                    "api.platform_keys.query must return text[] column projects: {e}"
                ))
            })?
            .unwrap_or_default();
        if org_id.is_empty() {
            return Ok(None);
        }
        Ok(Some(Caller {
            key_name: principal_id.clone(),
            key_hash: hash.to_owned(),
            principal_id,
            principal_type: PrincipalType::Account,
            org_id,
            // Anything but a clear "admin" gets the narrower view.
            role: Role::parse(&role).unwrap_or(Role::Member),
            projects,
        }))
    }
}

/// Token bucket per key: `per_minute` requests, refilled continuously.
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: per_minute as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` to go ahead, or `Err(seconds)` to wait before the next request is allowed.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        let rate = self.per_minute / 60.0;
        let (tokens, last) = buckets
            .entry(key.to_owned())
            .or_insert((self.per_minute, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(self.per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_the_budget_then_says_when() {
        let r = RateLimiter::new(3);
        assert!(r.check("k").is_ok());
        assert!(r.check("k").is_ok());
        assert!(r.check("k").is_ok());
        let wait = r.check("k").unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(r.check("other").is_ok(), "per key");
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
