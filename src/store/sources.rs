//! Each source's heartbeat (`waltrail_sources`): every capture process reports how far it has confirmed its
//! source, every [`HEARTBEAT_EVERY`]; `check` and the API's `/metrics` read every source's latest report, so
//! one place shows the lag of every Postgres database writing into the trail.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub const TABLE: &str = "waltrail_sources";

/// How often a capture process reports. A report is a ClickHouse part (merged away later), so not per batch:
/// a few seconds keeps the figures fresh for alerts at a fraction of an insert per second per source.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// A source whose last report is older than this is flagged by `check`: twelve missed reports, longer than a
/// reconnect after a Postgres or ClickHouse blip (backoff is capped at `capture.max_backoff_ms`, 30 s by
/// default), short enough that a capture process that stopped is noticed within a minute.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// At most this many sources are read back (bounds `/metrics` whatever the table holds).
pub const MAX_SOURCES: usize = 1000;

/// One report of one source's capture process.
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct SourceReport {
    pub source_id: String,
    /// The position confirmed to Postgres: everything before it is stored.
    pub confirmed_lsn: u64,
    /// The source server's WAL position, as last heard (keepalive or streamed data).
    pub server_lsn: u64,
    /// Commit time (µs) of the last transaction confirmed (0: none since the process started).
    pub last_commit_time_us: i64,
    pub reported_at_us: u64,
    /// Which machine reported, and which waltrail.
    pub host: String,
    pub version: String,
    /// Capture confirms nothing beyond this position to Postgres until a later report: written before
    /// any confirmation past it, so a slot found beyond every report's bound was moved by something else
    /// (0: a report of an earlier version, which bound nothing).
    pub confirm_bound_lsn: u64,
    /// What redaction looked like when this process started (JSON, see `audit::redaction`; '' in reports
    /// of earlier versions). Opaque here: the store keeps it, capture reads it back at its next start.
    pub redaction_baseline: String,
    /// Gaps found but not yet recorded in the trail (JSON, see `pipeline`; '' when none): the next start
    /// records them.
    pub pending_gaps: String,
    /// The publication's row versions as this process last saw them (see `capture::catalog`; '' in
    /// reports of earlier versions): the next start compares them with the publication's.
    pub publication_stamp: String,
}

impl SourceReport {
    /// WAL the source's server holds beyond what is stored: what the capture has still to do.
    pub fn pending_bytes(&self) -> u64 {
        self.server_lsn.saturating_sub(self.confirmed_lsn)
    }

    /// Seconds since this report, at `now_us`.
    pub fn age_s(&self, now_us: i64) -> f64 {
        (now_us - self.reported_at_us as i64).max(0) as f64 / 1e6
    }

    pub fn is_stale(&self, now_us: i64) -> bool {
        self.age_s(now_us) > STALE_AFTER.as_secs_f64()
    }
}

/// This machine's name, for reports.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

/// Store one report. Any error is the caller's to log: the next report comes soon.
pub async fn report(ch: &clickhouse::Client, r: &SourceReport) -> Result<()> {
    let mut insert = ch.insert::<SourceReport>(TABLE).await?;
    insert.write(r).await?;
    insert.end().await?;
    Ok(())
}

/// Every source's latest report, by source id.
pub async fn latest(ch: &clickhouse::Client) -> Result<Vec<SourceReport>> {
    latest_query(ch)
        .fetch_all()
        .await
        .context("reading the sources' reports from ClickHouse")
}

/// The furthest any report of this source allowed capture to confirm (0: none, or only reports of
/// versions before the bound).
pub async fn confirm_bound(ch: &clickhouse::Client, source_id: &str) -> Result<u64> {
    confirm_bound_query(ch, source_id)
        .fetch_one()
        .await
        .context("reading how far capture of this source may have confirmed its slot")
}

pub(crate) fn confirm_bound_query(
    ch: &clickhouse::Client,
    source_id: &str,
) -> crate::store::sql::Select<u64> {
    crate::store::sql::Select::new(
        ch.query(&format!(
            "SELECT max(confirm_bound_lsn) FROM {TABLE} WHERE source_id = ?"
        ))
        .bind(source_id),
    )
}

/// The redaction baseline this source's latest capture process started with (None: nothing remembered,
/// e.g. reports of earlier versions only).
pub async fn redaction_baseline(
    ch: &clickhouse::Client,
    source_id: &str,
) -> Result<Option<String>> {
    redaction_baseline_query(ch, source_id)
        .fetch_optional()
        .await
        .context("reading this source's redaction baseline from ClickHouse")
}

pub(crate) fn redaction_baseline_query(
    ch: &clickhouse::Client,
    source_id: &str,
) -> crate::store::sql::Select<String> {
    crate::store::sql::Select::new(
        ch.query(&format!(
            "SELECT redaction_baseline FROM {TABLE} WHERE source_id = ? AND redaction_baseline != '' \
             ORDER BY reported_at_us DESC LIMIT 1"
        ))
        .bind(source_id),
    )
}

/// The publication's row versions the source's latest report carries ('' when none).
pub async fn publication_stamp(ch: &clickhouse::Client, source_id: &str) -> Result<String> {
    Ok(crate::store::sql::Select::new(
        ch.query(&format!(
            "SELECT publication_stamp FROM {TABLE} WHERE source_id = ? AND publication_stamp != '' \
             ORDER BY reported_at_us DESC LIMIT 1"
        ))
        .bind(source_id),
    )
    .fetch_optional()
    .await
    .context("reading this source's last publication stamp from ClickHouse")?
    .unwrap_or_default())
}

/// The gaps the source's latest report says are pending ('' when none, or no report).
pub async fn pending_gaps(ch: &clickhouse::Client, source_id: &str) -> Result<String> {
    Ok(pending_gaps_query(ch, source_id)
        .fetch_optional()
        .await
        .context("reading this source's pending gaps from ClickHouse")?
        .unwrap_or_default())
}

pub(crate) fn pending_gaps_query(
    ch: &clickhouse::Client,
    source_id: &str,
) -> crate::store::sql::Select<String> {
    crate::store::sql::Select::new(
        ch.query(&format!(
            "SELECT pending_gaps FROM {TABLE} WHERE source_id = ? ORDER BY reported_at_us DESC LIMIT 1"
        ))
        .bind(source_id),
    )
}

pub(crate) fn latest_query(ch: &clickhouse::Client) -> crate::store::sql::Select<SourceReport> {
    crate::store::sql::Select::new(ch.query(&format!(
        "SELECT ?fields FROM {TABLE} ORDER BY source_id, reported_at_us DESC LIMIT 1 BY source_id LIMIT {MAX_SOURCES}"
    )))
}
