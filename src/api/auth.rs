//! Who is calling: Bearer keys (static keys hashed in the config, or keys resolved against the platform's
//! Postgres), their organization, role and projects; and the per-key rate limit.

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

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

/// Constant-time comparison (`subtle`): how much of a secret matched never shows in the time taken.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing or malformed Authorization header: use `Authorization: Bearer <key>`")]
    Missing,
    #[error("invalid API key")]
    Invalid,
    /// Too many failed authentications from this client address: retry after this many seconds.
    #[error("too many failed authentications from this address; retry in {0} s")]
    TooManyFailures(u64),
    /// Too many unknown keys are being looked up at once (from every address together).
    #[error("too many API keys being checked right now; retry in 1 s")]
    Busy,
    #[error("cannot check the key right now: {0}")]
    Unavailable(String),
}

/// How long a looked-up key is kept: a found key `cache_seconds`, a key not found `negative_cache_seconds`.
struct KeyExpiry {
    found: Duration,
    missing: Duration,
}

impl moka::Expiry<String, Option<Caller>> for KeyExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Option<Caller>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            self.found
        } else {
            self.missing
        })
    }
}

/// Keys resolved by the platform's Postgres: the query, a bounded cache of answers (found and not found),
/// and a bound on the lookups running at once.
struct Platform {
    query: String,
    /// Keyed by the key's hex SHA-256, never the key. Bounded in entries (TinyLFU admission, LRU eviction:
    /// amortized O(1), no scan), every entry with its own expiry.
    cache: moka::future::Cache<String, Option<Caller>>,
    lookups: Semaphore,
}

pub struct Authenticator {
    statics: Vec<(String, Caller)>,
    platform: Option<Platform>,
    /// Failed authentications per client address, checked before any lookup.
    failures: KeyedLimiter<IpAddr>,
}

impl Authenticator {
    pub fn new(cfg: &Config) -> Self {
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
        let platform = cfg
            .api
            .platform_keys
            .as_ref()
            .map(|p: &PlatformKeys| Platform {
                query: p.query.clone(),
                cache: moka::future::Cache::builder()
                    .max_capacity(p.cache_entries)
                    .expire_after(KeyExpiry {
                        found: Duration::from_secs(p.cache_seconds),
                        missing: Duration::from_secs(p.negative_cache_seconds),
                    })
                    .build(),
                // Lookups beyond the pool's connections queue for one; more than this many are refused.
                lookups: Semaphore::new(cfg.api.postgres_pool_size.saturating_mul(4).max(1)),
            });
        Authenticator {
            statics,
            platform,
            failures: KeyedLimiter::new(cfg.api.auth_failures_per_minute),
        }
    }

    /// Who presents this `Authorization` header from `client`. Anything but a static key or a key cached as
    /// valid spends one of the client address's failure allowance before it is looked up or refused.
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        client: IpAddr,
        pg: &deadpool_postgres::Pool,
    ) -> Result<Caller, AuthError> {
        let key = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let hash = key.map(sha256_hex);
        if let Some(hash) = &hash {
            if let Some((_, c)) = self
                .statics
                .iter()
                .find(|(h, _)| same(h.as_bytes(), hash.as_bytes()))
            {
                return Ok(c.clone());
            }
            if let Some(p) = &self.platform {
                if let Some(Some(c)) = p.cache.get(hash).await {
                    return Ok(c);
                }
            }
        }
        // From here on the key is missing, unknown, or known to be wrong: limited per client address.
        self.failures
            .check(&client_bucket(client))
            .map_err(AuthError::TooManyFailures)?;
        let (Some(hash), Some(p)) = (hash, &self.platform) else {
            return Err(if key.is_none() {
                AuthError::Missing
            } else {
                AuthError::Invalid
            });
        };
        // Concurrent requests with the same key share one lookup; its answer (found or not) is cached,
        // a failure to ask is not.
        let resolved = p
            .cache
            .try_get_with(hash.clone(), async {
                let _permit = tokio::time::timeout(Duration::from_millis(500), p.lookups.acquire())
                    .await
                    .map_err(|_| AuthError::Busy)?
                    .map_err(|_| AuthError::Busy)?;
                resolve_platform(pg, &p.query, &hash).await
            })
            .await
            .map_err(|e| match &*e {
                AuthError::Busy => AuthError::Busy,
                other => AuthError::Unavailable(other.to_string()),
            })?;
        resolved.ok_or(AuthError::Invalid)
    }

    /// Forget limiter state of addresses not seen lately (called now and then).
    pub fn tidy(&self) {
        self.failures.tidy();
    }
}

/// The address a failure allowance is kept for: an IPv4 address, or an IPv6 /64 (one host usually holds a
/// whole /64, so counting single IPv6 addresses would let it rotate through them).
fn client_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
        v4 => v4,
    }
}

async fn resolve_platform(
    pg: &deadpool_postgres::Pool,
    query: &str,
    hash: &str,
) -> Result<Option<Caller>, AuthError> {
    let client = pg
        .get()
        .await
        .map_err(|e| AuthError::Unavailable(crate::pg::pool_error_text(&e)))?;
    let stmt = client.prepare_cached(query).await.map_err(|e| {
        AuthError::Unavailable(format!(
            "api.platform_keys.query failed: {}",
            crate::pg::error_text(&e)
        ))
    })?;
    let row = client.query_opt(&stmt, &[&hash]).await.map_err(|e| {
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
        .unwrap_or_default()
        .into_iter()
        // An empty (or blank) project is the organization's own level: never a project a member is given
        // (QA36 L2, QA37 L2).
        .filter(|p| !p.trim().is_empty())
        .collect();
    // A key of no organization, or of nobody (an export it made could not be traced to anyone: QA36 L3;
    // blank counts as nobody, QA37 L2), is no key.
    if org_id.trim().is_empty() || principal_id.trim().is_empty() {
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

/// A keyed GCRA limiter (`governor`): `per_minute` per key, bursts up to `per_minute`, refilled evenly.
pub struct KeyedLimiter<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    clock: DefaultClock,
}

impl<K: std::hash::Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        KeyedLimiter {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
            clock: DefaultClock::default(),
        }
    }

    /// `Ok` to go ahead, or `Err(seconds)` to wait before the next request is allowed (at least 1).
    pub fn check(&self, key: &K) -> Result<(), u64> {
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }

    /// Drop the state of keys whose allowance is full again, and give the memory back.
    pub fn tidy(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// The per-key request limit.
pub type RateLimiter = KeyedLimiter<String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_the_budget_then_says_when() {
        let r = RateLimiter::new(3);
        let k = "k".to_owned();
        assert!(r.check(&k).is_ok());
        assert!(r.check(&k).is_ok());
        assert!(r.check(&k).is_ok());
        let wait = r.check(&"k".to_owned()).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(r.check(&"other".to_owned()).is_ok(), "per key");
    }

    #[test]
    fn ipv6_clients_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::7".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_bucket(a), client_bucket(b));
        assert_ne!(client_bucket(a), client_bucket(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            client_bucket(mapped),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }

    #[test]
    fn hashes_are_hex_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
