//! Retention: drop day partitions older than the window. (TTL clauses are not available on every
//! ClickHouse waltrail supports; a partition drop is cheap and exact to the day.)

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::store::cluster::Layout;
use crate::store::schema::ITEMS_TABLE;
use crate::store::sql::Select;

#[derive(clickhouse::Row, Deserialize)]
pub(crate) struct Day {
    day: u32,
    newest_stored_us: i64,
}

/// Drop every partition whose whole day ends before the cutoff; returns the dropped partition ids.
///
/// The expired days are found from the data (through the Distributed table on a cluster, so every shard's
/// days are seen; the time filter reads only the expired partitions), not from `system.parts`, which on a
/// cluster lists only the connected node's.
pub async fn drop_expired(
    ch: &clickhouse::Client,
    layout: &Layout,
    days: u32,
) -> Result<Vec<String>> {
    let cutoff = chrono::Utc::now() - chrono::Duration::days(days as i64);
    // A partition holds one day (toYYYYMMDD, in the server's time zone); it is expired when all of it is
    // before the start of the cutoff's UTC day, from which verification holds the trail whole.
    let cutoff_day_start = cutoff
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|d| d.and_utc().timestamp_micros())
        .unwrap_or(0);
    let expired = expired_days_query(ch, cutoff_day_start)
        .fetch_all()
        .await
        .context("listing expired days")?;
    let mut dropped = Vec::new();
    for d in expired {
        // A partition is a day of commit times; an item committed that day may have been stored much
        // later (a replication origin's old commit time). It stays until the day it was stored leaves the
        // window, as the items stored beside it do (dropping it a day sooner cut chains' tails).
        if d.newest_stored_us >= cutoff_day_start {
            tracing::debug!(
                partition = d.day,
                "retention: partition holds recently stored items; kept"
            );
            continue;
        }
        // Retention shortens chains from their oldest end; a day holding positions past items that other
        // days keep (a clock stepped back, or a replication origin's old commit times) would leave holes
        // that verification reads as deletions. It waits until it is the oldest of its chains.
        let cut: u64 = cuts_chains_query(ch, d.day)
            .fetch_one()
            .await
            .with_context(|| format!("checking partition {} against its chains", d.day))?;
        if cut > 0 {
            tracing::warn!(
                partition = d.day,
                chains = cut,
                "retention: partition not dropped: it holds chain positions newer than items other days keep \
                 (a clock stepped back, or old commit times), and dropping it would cut those chains in the \
                 middle; it goes once the days before it in those chains are gone"
            );
            continue;
        }
        drop_partition_query(ch, layout, d.day)
            .execute()
            .await
            .with_context(|| format!("dropping partition {}", d.day))?;
        tracing::info!(partition = d.day, "retention: dropped partition");
        dropped.push(d.day.to_string());
    }
    Ok(dropped)
}

/// The days committed before `cutoff_day_start`, each with when its newest item was stored.
pub(crate) fn expired_days_query(ch: &clickhouse::Client, cutoff_day_start: i64) -> Select<Day> {
    Select::new(
        ch.query(&format!(
            "SELECT toYYYYMMDD(toDateTime(intDiv(occurred_at_us, 1000000))) AS day, \
             max(ingested_at_us) AS newest_stored_us FROM {ITEMS_TABLE} \
             WHERE occurred_at_us < ? GROUP BY day HAVING max(occurred_at_us) < ? ORDER BY day"
        ))
        // Partitions are days in the server's time zone, which need not be UTC: one may run past the UTC
        // cutoff day's start by up to 14 hours. It is expired only when every item in it is older, so the
        // rows of the two days after the cutoff are read too.
        .bind(cutoff_day_start.saturating_add(2 * crate::audit::chain::DAY_US))
        .bind(cutoff_day_start),
    )
}

/// How many chains (per source) hold items in day `day` at positions past some item of the same chain in
/// another day: dropping that day would leave a hole in them. (Current ClickHouse wants each joined
/// subquery named.)
pub(crate) fn cuts_chains_query(ch: &clickhouse::Client, day: u32) -> clickhouse::query::Query {
    ch.query(&format!(
        "SELECT count() FROM (\
           SELECT source_id, if(platform_wide = 1, '', organization_id) AS chain, max(chain_seq) AS hi \
           FROM {ITEMS_TABLE} WHERE chain_seq > 0 AND {DAY} = ? GROUP BY source_id, chain) AS in_day \
         ALL INNER JOIN (\
           SELECT source_id, if(platform_wide = 1, '', organization_id) AS chain, min(chain_seq) AS lo \
           FROM {ITEMS_TABLE} WHERE chain_seq > 0 AND {DAY} != ? GROUP BY source_id, chain) AS other_days \
         USING (source_id, chain) WHERE hi > lo"
    ))
    .bind(day)
    .bind(day)
}

/// An item's day partition, as the table's partition key computes it (the server's time zone).
const DAY: &str = "toYYYYMMDD(toDateTime(intDiv(occurred_at_us, 1000000)))";

/// Drops one day's partition (of every node's local table on a cluster).
pub(crate) fn drop_partition_query(
    ch: &clickhouse::Client,
    layout: &Layout,
    day: u32,
) -> clickhouse::query::Query {
    // The partition id is a number ClickHouse computed: safe to place in the statement.
    ch.query(&format!(
        "ALTER TABLE {}{} DROP PARTITION {}",
        layout.data_table(ITEMS_TABLE),
        layout.on_cluster(),
        day
    ))
}

/// Run `drop_expired` every `interval` until shutdown.
pub async fn run(
    ch: clickhouse::Client,
    layout: Layout,
    days: u32,
    interval: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = drop_expired(&ch, &layout, days).await {
            let e = format!("{e:#}");
            // A first start races capture's migration: no database or table yet is nothing to drop yet.
            if e.contains("Code: 81") || e.contains("Code: 60") {
                tracing::debug!(error = %e, "retention: the schema is not made yet");
            } else {
                tracing::warn!(error = %e, "retention pass failed; will retry");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}
