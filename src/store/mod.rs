//! The ClickHouse side: schema migrations, the batch writer, each source's heartbeat, and (for the read side)
//! queries and retention.

pub mod check;
pub mod integrity;
pub mod query;
pub mod retention;
pub mod row;
pub mod schema;
pub mod sources;
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
