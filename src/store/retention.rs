//! Retention: drop day partitions older than the window. (TTL clauses are not available on every
//! ClickHouse waltrail supports; a partition drop is cheap and exact to the day.)

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::store::schema::ITEMS_TABLE;

#[derive(clickhouse::Row, Deserialize)]
struct Part {
    partition: String,
}

/// Drop every partition whose whole day ends before the cutoff; returns the dropped partition ids.
pub async fn drop_expired(
    ch: &clickhouse::Client,
    database: &str,
    days: u32,
) -> Result<Vec<String>> {
    let cutoff = chrono::Utc::now() - chrono::Duration::days(days as i64);
    // A partition holds one UTC day (toYYYYMMDD); it is expired when that day is before the cutoff's day.
    let cutoff_day: u32 = cutoff.format("%Y%m%d").to_string().parse().unwrap_or(0);
    let parts = ch
        .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active")
        .bind(database)
        .bind(ITEMS_TABLE)
        .fetch_all::<Part>()
        .await
        .context("listing partitions")?;
    let mut dropped = Vec::new();
    for p in parts {
        let Ok(day) = p.partition.trim_matches('\'').parse::<u32>() else {
            continue;
        };
        if day < cutoff_day {
            // A partition is a day of commit times; an item committed that day may have been stored much
            // later (a replication origin's old commit time). It stays until its own window from storage ends.
            let newest_stored = ch
                .query(
                    "SELECT max(ingested_at_us) FROM audit_items \
                     WHERE toYYYYMMDD(toDateTime(intDiv(occurred_at_us, 1000000))) = ?",
                )
                .bind(day)
                .fetch_one::<i64>()
                .await
                .with_context(|| format!("reading partition {day}"))?;
            if newest_stored >= cutoff.timestamp_micros() {
                tracing::debug!(
                    partition = day,
                    "retention: partition holds recently stored items; kept"
                );
                continue;
            }
            // The partition id is a number we just parsed: safe to place in the statement.
            ch.query(&format!("ALTER TABLE {ITEMS_TABLE} DROP PARTITION {day}"))
                .execute()
                .await
                .with_context(|| format!("dropping partition {day}"))?;
            tracing::info!(partition = day, "retention: dropped partition");
            dropped.push(day.to_string());
        }
    }
    Ok(dropped)
}

/// Run `drop_expired` every `interval` until shutdown.
pub async fn run(
    ch: clickhouse::Client,
    database: String,
    days: u32,
    interval: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = drop_expired(&ch, &database, days).await {
            tracing::warn!(error = %format!("{e:#}"), "retention pass failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
