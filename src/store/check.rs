//! The store's half of `waltrail check`: ClickHouse reachable, and its schema at this version's.

use crate::config::ClickHouseConfig;
use crate::finding::Finding;

/// The ClickHouse half of `waltrail check`.
pub async fn clickhouse(cfg: &ClickHouseConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    match super::base_client(cfg)
        .query("SELECT version()")
        .fetch_one::<String>()
        .await
    {
        Ok(v) => out.push(Finding::ok(format!(
            "ClickHouse reachable at {} (version {v})",
            cfg.url
        ))),
        Err(e) => {
            out.push(Finding::fail(
                format!("ClickHouse unreachable at {}: {e}", cfg.url),
                "check clickhouse.url, user and password (WALTRAIL_CLICKHOUSE_PASSWORD), and that the server runs",
            ));
            return out;
        }
    }
    let applied = super::client(cfg)
        .query("SELECT max(version) FROM waltrail_migrations")
        .fetch_one::<u32>()
        .await;
    let latest = super::schema::MIGRATIONS
        .iter()
        .map(|m| m.0)
        .max()
        .unwrap_or(0);
    match applied {
        Ok(v) if v >= latest => out.push(Finding::ok(format!("ClickHouse schema at version {v}"))),
        _ => out.push(Finding::warn(
            "ClickHouse schema not yet at this version's",
            "waltrail run applies it, or run waltrail migrate",
        )),
    }
    out
}
