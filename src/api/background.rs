//! What the API's background task last saw (ClickHouse answering, the sources' heartbeats): answered
//! from memory, so no number of `/readyz` probes or `/metrics` scrapes reaches ClickHouse.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// How often the background task asks ClickHouse whether it answers: `/readyz` reads the last answer, so
/// no number of probes makes more than one query per period.
pub(super) const READY_PERIOD: Duration = Duration::from_secs(2);

/// The last ClickHouse check: when (µs since the epoch, 0 = never) and whether it answered.
#[derive(Default)]
pub(super) struct Readiness {
    pub(super) checked_at_us: AtomicI64,
    pub(super) clickhouse_ok: AtomicBool,
    /// Why the last check failed, in words fit for an unauthenticated probe (a kind, never the server's text).
    why: std::sync::Mutex<&'static str>,
}

impl Readiness {
    pub(super) async fn check(&self, ch: &clickhouse::Client) {
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            ch.query("SELECT 1").fetch_one::<u8>(),
        )
        .await;
        let why = match &r {
            Ok(Ok(1)) => "",
            Ok(Ok(_)) => "ClickHouse answered SELECT 1 with something else",
            Ok(Err(e)) => {
                let text = e.to_string();
                if text.contains("Code: 516") || text.contains("Code: 192") {
                    "ClickHouse refuses waltrail's user or password"
                } else if text.contains("Code: 164") {
                    "ClickHouse's user is read-only with readonly = 1 (waltrail needs readonly = 2 to set its query timeout)"
                } else {
                    "ClickHouse unreachable"
                }
            }
            Err(_) => "ClickHouse did not answer within 3 s",
        };
        if let Ok(mut w) = self.why.lock() {
            *w = why;
        }
        self.clickhouse_ok
            .store(matches!(r, Ok(Ok(1))), Ordering::Relaxed);
        self.checked_at_us
            .store(crate::store::row::now_us(), Ordering::Relaxed);
    }

    /// Why ClickHouse is not ready, as last checked.
    pub(super) fn why(&self) -> &'static str {
        self.why
            .lock()
            .map(|w| *w)
            .unwrap_or("ClickHouse unreachable")
    }
}

/// Every source's latest heartbeat (`waltrail_sources`), read in the background with the readiness check:
/// `/metrics` shows the last read, so scraping it never queries ClickHouse.
#[derive(Default)]
pub(super) struct SourcesSeen {
    reports: std::sync::Mutex<Vec<crate::store::sources::SourceReport>>,
}

impl SourcesSeen {
    pub(super) async fn refresh(&self, ch: &clickhouse::Client) {
        let r =
            tokio::time::timeout(Duration::from_secs(3), crate::store::sources::latest(ch)).await;
        match r {
            Ok(Ok(reports)) => {
                if let Ok(mut seen) = self.reports.lock() {
                    *seen = reports;
                }
            }
            // The last read stays: its reports' ages keep growing, which is what a scrape should see.
            Ok(Err(e)) => {
                tracing::debug!(error = %format!("{e:#}"), "reading the sources' heartbeats")
            }
            Err(_) => tracing::debug!("reading the sources' heartbeats timed out"),
        }
    }

    pub(super) fn reports(&self) -> Vec<crate::store::sources::SourceReport> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
