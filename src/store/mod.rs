//! The ClickHouse side: schema migrations, the batch writer, and (for the read side) queries and retention.

pub mod query;
pub mod retention;
pub mod schema;
pub mod writer;

use crate::config::ClickHouseConfig;
use std::time::Duration;

/// A client for the configured database. Validation is off: with it on the crate sends a setting that
/// ClickHouse 18.16 rejects, and our row types are checked by the tests against both versions' schema.
pub fn client(cfg: &ClickHouseConfig) -> clickhouse::Client {
    base_client(cfg).with_database(&cfg.database)
}

/// A client without a default database (to create it).
pub fn base_client(cfg: &ClickHouseConfig) -> clickhouse::Client {
    let mut c = clickhouse::Client::default()
        .with_url(&cfg.url)
        .with_user(&cfg.user)
        .with_validation(false)
        .with_compression(match cfg.compression {
            crate::config::ChCompression::Lz4 => clickhouse::Compression::Lz4,
            crate::config::ChCompression::None => clickhouse::Compression::None,
        })
        .with_setting(
            "max_execution_time",
            (cfg.timeout_ms / 1000).max(1).to_string(),
        );
    if let Some(p) = &cfg.password {
        c = c.with_password(&p.0);
    }
    c
}

pub fn timeout(cfg: &ClickHouseConfig) -> Duration {
    Duration::from_millis(cfg.timeout_ms)
}

/// The ClickHouse half of `waltrail check`.
pub async fn check(cfg: &ClickHouseConfig) -> Vec<crate::capture::setup::Check> {
    use crate::capture::setup::{Check, CheckStatus};
    let mut out = Vec::new();
    match base_client(cfg)
        .query("SELECT version()")
        .fetch_one::<String>()
        .await
    {
        Ok(v) => out.push(Check {
            status: CheckStatus::Ok,
            what: format!("ClickHouse reachable at {} (version {v})", cfg.url),
            fix: None,
        }),
        Err(e) => {
            out.push(Check {
                status: CheckStatus::Fail,
                what: format!("ClickHouse unreachable at {}: {e}", cfg.url),
                fix: Some("check clickhouse.url, user and password (WALTRAIL_CLICKHOUSE_PASSWORD), and that the server runs".into()),
            });
            return out;
        }
    }
    let applied = client(cfg)
        .query("SELECT max(version) FROM waltrail_migrations")
        .fetch_one::<u32>()
        .await;
    let latest = schema::MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
    match applied {
        Ok(v) if v >= latest => out.push(Check {
            status: CheckStatus::Ok,
            what: format!("ClickHouse schema at version {v}"),
            fix: None,
        }),
        _ => out.push(Check {
            status: CheckStatus::Warn,
            what: "ClickHouse schema not yet at this version's".into(),
            fix: Some("waltrail run applies it, or run waltrail migrate".into()),
        }),
    }
    out
}
