//! Versioned schema: the files under `sql/clickhouse/`, applied in order, each once.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::config::ClickHouseConfig;

/// (version, name, SQL). Embedded so the binary carries its schema.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_audit_items",
        include_str!("../../sql/clickhouse/0001_audit_items.sql"),
    ),
    (
        2,
        "0002_integrity",
        include_str!("../../sql/clickhouse/0002_integrity.sql"),
    ),
    (
        3,
        "0003_chain",
        include_str!("../../sql/clickhouse/0003_chain.sql"),
    ),
    (
        4,
        "0004_sources",
        include_str!("../../sql/clickhouse/0004_sources.sql"),
    ),
];

pub const ITEMS_TABLE: &str = "audit_items";

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Version {
    version: u32,
}

/// Apply the migrations not yet applied. Returns the versions it applied.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<Vec<u32>> {
    let base = super::base_client(cfg);
    base.query(&format!("CREATE DATABASE IF NOT EXISTS {}", cfg.database))
        .execute()
        .await
        .with_context(|| {
            format!(
                "creating ClickHouse database {} at {}",
                cfg.database, cfg.url
            )
        })?;
    let client = super::client(cfg);
    client
        .query(
            "CREATE TABLE IF NOT EXISTS waltrail_migrations (version UInt32, name String, applied_at DateTime) \
             ENGINE = MergeTree ORDER BY version",
        )
        .execute()
        .await
        .context("creating the migrations table")?;
    let applied: Vec<u32> = client
        .query("SELECT version FROM waltrail_migrations")
        .fetch_all::<Version>()
        .await
        .context("reading applied migrations")?
        .into_iter()
        .map(|v| v.version)
        .collect();
    let mut done = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for stmt in statements(sql) {
            // A migration interrupted after some of its columns were added is run again whole: skip those.
            if let Some(column) = added_column(&stmt) {
                if column_exists(&client, &cfg.database, column).await? {
                    continue;
                }
            }
            client
                .query(&stmt)
                .execute()
                .await
                .with_context(|| format!("applying migration {name}"))?;
        }
        client
            .query(
                "INSERT INTO waltrail_migrations (version, name, applied_at) VALUES (?, ?, now())",
            )
            .bind(*version)
            .bind(*name)
            .execute()
            .await
            .with_context(|| format!("recording migration {name}"))?;
        tracing::info!(migration = name, "applied ClickHouse migration");
        done.push(*version);
    }
    if let Some(max) = applied.iter().max() {
        let known = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
        if *max > known {
            bail!(
                "ClickHouse schema is at version {max}, newer than this waltrail knows ({known}); upgrade waltrail"
            );
        }
    }
    Ok(done)
}

/// Split a migration file into statements on `;` at line ends; comments are dropped.
/// The column an `ALTER TABLE t ADD COLUMN c ...` statement adds.
fn added_column(stmt: &str) -> Option<&str> {
    let upper = stmt.to_ascii_uppercase();
    let at = upper.find("ADD COLUMN ")? + "ADD COLUMN ".len();
    stmt[at..].split_whitespace().next()
}

async fn column_exists(client: &clickhouse::Client, database: &str, column: &str) -> Result<bool> {
    let n = client
        .query("SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?")
        .bind(database)
        .bind(ITEMS_TABLE)
        .bind(column)
        .fetch_one::<u64>()
        .await
        .context("reading system.columns")?;
    Ok(n > 0)
}

fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').to_owned();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn splits_statements() {
        let s = super::statements(
            "-- c\nCREATE TABLE a (x UInt8)\nENGINE = Log;\n\nALTER TABLE a ADD COLUMN y UInt8;\n",
        );
        assert_eq!(s.len(), 2);
        assert!(s[0].starts_with("CREATE TABLE a"));
    }
}
