//! The ClickHouse side: schema migrations, the batch writer, each source's heartbeat, and (for the read side)
//! queries and retention.

pub mod check;
pub mod cluster;
pub mod integrity;
pub mod query;
pub mod retention;
pub mod row;
pub mod schema;
pub mod shapes;
pub mod sources;
pub mod sql;
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
    if cfg.cluster.is_some() {
        // An insert into a Distributed table returns only when every shard it touched has its rows (not
        // when they are queued on the node we talk to): only then may Postgres be confirmed. With a quorum,
        // when that many replicas of each shard have them. The block of a retried insert is the same bytes,
        // which replicated tables drop as a duplicate: a retry after an unknown outcome is exact.
        c = c.with_setting("insert_distributed_sync", "1");
        if cfg.insert_quorum > 0 {
            c = c
                .with_setting("insert_quorum", cfg.insert_quorum.to_string())
                .with_setting("insert_quorum_timeout", cfg.timeout_ms.to_string());
        }
    }
    c
}

pub fn timeout(cfg: &ClickHouseConfig) -> Duration {
    Duration::from_millis(cfg.timeout_ms)
}
