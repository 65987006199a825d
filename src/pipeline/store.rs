//! The store task: inserts batches into ClickHouse in order, retrying each until ClickHouse takes it, and
//! confirms its commit after. It talks only to ClickHouse.

use anyhow::anyhow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

use super::ack::{Acker, Batch};
use super::retry::{Failure, InsertBackoff};
use crate::capture::metrics::CaptureMetrics;
use crate::store::sources::{report, SourceReport, HEARTBEAT_EVERY};
use crate::store::writer::{insert_encoded, items_insert_sql, send_encoded};
use std::time::Instant;

/// An INSERT kept open across the batches of one large transaction (each batch but the last says `more`):
/// ClickHouse makes one part of it instead of one per batch, and does not merge those parts again at once
/// (a 300k-row transaction made 15 parts and every row was merged once more while it was being stored).
/// Memory stays what a batch takes: each batch's rows are sent on as it comes. The price: what was sent
/// cannot be sent again, so a failure ends the session and the transaction is read again from the slot
/// (nothing of it was confirmed); batches' checkpoints, rosters and commits wait for the INSERT's end.
struct OpenInsert {
    insert: clickhouse::insert_formatted::InsertFormatted,
    rows: usize,
    bytes: usize,
    /// The batches sent into it (their rows dropped), in order: stored once it ends.
    batches: Vec<Batch>,
    /// Ended when no batch comes for this long (the stream stalled inside the transaction).
    idle_until: tokio::time::Instant,
}

/// An open INSERT that receives nothing for this long ends (its rows become queryable, its commits are
/// confirmed): a stall inside a transaction never keeps stored rows waiting.
const OPEN_IDLE: std::time::Duration = std::time::Duration::from_millis(500);

pub struct StoreTask {
    pub ch: clickhouse::Client,
    /// Where to append each stored checkpoint as a JSON line (`integrity.checkpoint_file`).
    pub checkpoint_file: Option<std::path::PathBuf>,
    pub timeout: std::time::Duration,
    pub acker: Arc<Acker>,
    pub metrics: Arc<CaptureMetrics>,
    pub shutdown: watch::Receiver<bool>,
    /// Who reports the heartbeat (see `store::sources`).
    pub reporter: Reporter,
    /// Checkpoint lines the file has not taken yet, in order: appended before any later one.
    pub undelivered: std::sync::Mutex<Vec<String>>,
    /// Each chain's last checkpoint the file has (or is given): one signed again by a replay is not
    /// appended twice.
    pub copied: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// How soon a report follows when capture has heard past what it may confirm (confirmations wait for
    /// it): half the status interval, within 1–5 s. Confirmations go out once a status interval anyway, so
    /// reporting more often would only add inserts beside the batches (each one a part).
    pub bound_every: std::time::Duration,
    /// An open INSERT ends at this many items (`capture.insert_max_items`; 0: none is kept open)...
    pub insert_max_items: usize,
    /// ...or at this many bytes (`capture.insert_max_bytes`).
    pub insert_max_bytes: usize,
}

/// What becomes of signed rows not stored when capture stops: their commit is not confirmed.
const SIGNED_AGAIN: &str = "they are signed again at the next start";

/// At most this many checkpoint lines wait for the file (about 40 MB); past it the oldest are given up,
/// each named in the log (the store keeps them, and the next start appends what the file lacks).
const MAX_UNDELIVERED: usize = 100_000;

/// The furthest position capture has heard of from Postgres: it never confirms beyond it.
fn heard(m: &CaptureMetrics) -> u64 {
    m.server_wal_end
        .load(Ordering::Relaxed)
        .max(m.received_lsn.load(Ordering::Relaxed))
        .max(m.acked_lsn.load(Ordering::Relaxed))
}

/// What every report of this process says of itself.
#[derive(Debug, Clone)]
pub struct Reporter {
    pub source_id: String,
    pub host: String,
    /// What redaction looked like at this process's start (see `audit::redaction`): each report carries it,
    /// so the latest process's is the one the next start compares with.
    pub redaction_baseline: String,
    /// Gaps found but not yet recorded in the trail: every report carries them, so the next start records
    /// them even when this process stops (or is killed) first.
    pub pending_gaps: PendingGaps,
    /// The publication's row versions as capture last saw them (see `capture::catalog::PublicationStamp`):
    /// every report carries them, for the next start to compare with.
    pub publication_stamp: std::sync::Arc<std::sync::Mutex<String>>,
}

/// Between a found gap's cause and when it was found.
const FOUND_AT: &str = " (found at ";

/// A gap of one table (`schema.table`) capture found itself, to record at the next start: "cause (found
/// at <now>): effect". The cause alone tells two findings of one cause from two causes.
pub fn found_gap(table: String, cause: String, effect: &str) -> crate::audit::item::Gap {
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
    crate::audit::item::Gap {
        reason: format!("{cause}{FOUND_AT}{now}): {effect}"),
        table: Some(table),
        ..Default::default()
    }
}

/// Gaps found where they cannot be recorded in the trail at once (while streaming, or by a start that
/// refuses): shared by the tasks that find them and the reports that carry them.
#[derive(Debug, Clone, Default)]
pub struct PendingGaps(std::sync::Arc<std::sync::Mutex<Vec<crate::audit::item::Gap>>>);

impl PendingGaps {
    pub fn new(gaps: Vec<crate::audit::item::Gap>) -> Self {
        PendingGaps(std::sync::Arc::new(std::sync::Mutex::new(gaps)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<crate::audit::item::Gap>> {
        // A panic elsewhere while holding it leaves a list that is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a gap, unless one of the same table for the same cause is pending already (a stop, and the
    /// start that refuses for the same cause, find it twice; the first finding's time is kept).
    pub fn add(&self, gap: crate::audit::item::Gap) {
        // A reason says when it was found after its cause (see `found_gap`).
        let cause = |r: &str| r.split(FOUND_AT).next().unwrap_or_default().to_owned();
        let mut gaps = self.lock();
        if !gaps
            .iter()
            .any(|g| g.table == gap.table && cause(&g.reason) == cause(&gap.reason))
        {
            gaps.push(gap);
        }
    }

    pub fn list(&self) -> Vec<crate::audit::item::Gap> {
        self.lock().clone()
    }

    /// Forgets the gaps recorded (those still listed; others found meanwhile stay).
    pub fn recorded(&self, done: &[crate::audit::item::Gap]) {
        self.lock().retain(|g| !done.contains(g));
    }

    fn to_json(&self) -> String {
        let gaps = self.lock();
        if gaps.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&*gaps).unwrap_or_default()
        }
    }
}

/// A report of this source as the metrics stand, allowing confirmations up to `bound`.
pub fn source_report(m: &CaptureMetrics, who: &Reporter, bound: u64) -> SourceReport {
    SourceReport {
        source_id: who.source_id.clone(),
        confirmed_lsn: m.acked_lsn.load(Ordering::Relaxed),
        server_lsn: m
            .server_wal_end
            .load(Ordering::Relaxed)
            .max(m.received_lsn.load(Ordering::Relaxed)),
        last_commit_time_us: m.last_commit_time_us.load(Ordering::Relaxed),
        reported_at_us: crate::store::row::now_us().max(0) as u64,
        host: who.host.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        confirm_bound_lsn: bound,
        redaction_baseline: who.redaction_baseline.clone(),
        pending_gaps: who.pending_gaps.to_json(),
        publication_stamp: who
            .publication_stamp
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone()),
    }
}

/// Store one report, then raise the confirmation bound to what it names (see `StoreTask::heartbeat`).
async fn send_report(
    ch: &clickhouse::Client,
    metrics: &CaptureMetrics,
    who: &Reporter,
    timeout: std::time::Duration,
) {
    let bound = heard(metrics);
    let r = source_report(metrics, who, bound);
    match tokio::time::timeout(timeout.min(HEARTBEAT_EVERY), report(ch, &r)).await {
        Ok(Ok(())) => {
            metrics.confirm_bound.fetch_max(bound, Ordering::AcqRel);
        }
        Ok(Err(e)) => tracing::debug!(error = %format!("{e:#}"), "source heartbeat not stored"),
        Err(_) => tracing::debug!("source heartbeat timed out"),
    }
}

impl StoreTask {
    pub async fn run(self, mut rx: mpsc::Receiver<Batch>) -> Result<(), Failure> {
        // The heartbeat goes out from here, between batches: a process that cannot store does not report
        // (its heartbeat goes stale), and an idle one still does.
        let mut heartbeat = tokio::time::interval(self.bound_every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: Option<Instant> = None;
        // A report goes out beside the batches, never in front of one (an insert of its own; awaited in
        // line it delayed the batch behind it, which showed in commit → queryable p99).
        let mut report_task: Option<tokio::task::JoinHandle<()>> = None;
        let mut open: Option<OpenInsert> = None;
        loop {
            let idle_until = open.as_ref().map(|o| o.idle_until);
            tokio::select! {
                b = rx.recv() => {
                    let Some(b) = b else {
                        if let Some(o) = open.take() {
                            self.end_open(o).await?;
                        }
                        // Drained: one last report lets the final confirmation cover everything stored.
                        if let Some(t) = report_task.take() {
                            let _ = t.await;
                        }
                        self.heartbeat().await;
                        return Ok(());
                    };
                    let open_ok = self.insert_max_items > 0
                        && !self.metrics.open_inserts_off.load(Ordering::Relaxed);
                    if (b.more && open_ok) || open.is_some() {
                        open = self.send_open(open.take(), b).await?;
                    } else {
                        if b.count > 0 {
                            self.store(&b).await?;
                        }
                        self.after_rows(b).await?;
                    }
                }
                _ = sleep_until(idle_until) => {
                    if let Some(o) = open.take() {
                        self.end_open(o).await?;
                    }
                }
                _ = heartbeat.tick() => {}
            }
            self.deliver_checkpoints(Vec::new());
            // Every few seconds, and sooner while what capture has heard is past what it may confirm.
            let due = reported.is_none_or(|t| {
                t.elapsed() >= HEARTBEAT_EVERY
                    || (t.elapsed() >= self.bound_every
                        && heard(&self.metrics)
                            > self.metrics.confirm_bound.load(Ordering::Acquire))
            });
            if due && report_task.as_ref().is_none_or(|t| t.is_finished()) {
                reported = Some(Instant::now());
                let (ch, metrics, timeout) = (self.ch.clone(), self.metrics.clone(), self.timeout);
                let who = self.reporter.clone();
                report_task = Some(tokio::spawn(async move {
                    send_report(&ch, &metrics, &who, timeout).await
                }));
            }
        }
    }

    /// What follows a batch's rows once they are stored: its checkpoints, its rosters, its commit.
    async fn after_rows(&self, b: Batch) -> Result<(), Failure> {
        if !b.checkpoints.is_empty() {
            self.store_checkpoints(&b.checkpoints).await?;
        }
        if !b.rosters.is_empty() {
            self.store_rosters(&b.rosters).await?;
        }
        self.acker.stored(b.commit);
        Ok(())
    }

    /// Send a batch's rows into the open INSERT (opening one if none is), and end it with the batch that
    /// says no more follows, or at `insert_max_items` or `insert_max_bytes`.
    async fn send_open(
        &self,
        open: Option<OpenInsert>,
        mut b: Batch,
    ) -> Result<Option<OpenInsert>, Failure> {
        let mut o = match open {
            Some(o) => o,
            None => OpenInsert {
                insert: self
                    .ch
                    .insert_formatted_with(items_insert_sql())
                    .with_timeouts(Some(self.timeout), Some(self.timeout)),
                rows: 0,
                bytes: 0,
                batches: Vec::new(),
                idle_until: tokio::time::Instant::now(),
            },
        };
        if let Err(e) = send_encoded(&mut o.insert, &b.rows).await {
            return Err(self.open_failed(o.rows + b.count, &e.to_string()));
        }
        o.rows += b.count;
        o.bytes += b.rows.len();
        o.idle_until = tokio::time::Instant::now() + OPEN_IDLE;
        b.rows = bytes::Bytes::new();
        let last = !b.more;
        o.batches.push(b);
        if last || o.rows >= self.insert_max_items || o.bytes >= self.insert_max_bytes {
            self.end_open(o).await?;
            return Ok(None);
        }
        Ok(Some(o))
    }

    /// End the open INSERT, then store what its batches carried besides rows and confirm their commits.
    async fn end_open(&self, o: OpenInsert) -> Result<(), Failure> {
        let OpenInsert {
            insert,
            rows,
            bytes,
            batches,
            ..
        } = o;
        let ended = match tokio::time::timeout(self.timeout, insert.end()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("insert timed out after {:?}", self.timeout)),
        };
        if let Err(e) = ended {
            return Err(self.open_failed(rows, &e));
        }
        self.metrics
            .items_written
            .fetch_add(rows as u64, Ordering::Relaxed);
        self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .batch_items_last
            .store(rows as u64, Ordering::Relaxed);
        tracing::debug!(
            items = rows,
            bytes,
            batches = batches.len(),
            "open insert stored"
        );
        for b in batches {
            self.after_rows(b).await?;
        }
        Ok(())
    }

    /// An open INSERT failed while its rows were being sent: what it held is gone from memory, so the
    /// session ends and the slot gives the transaction again.
    fn open_failed(&self, rows: usize, e: &str) -> Failure {
        self.metrics.insert_errors.fetch_add(1, Ordering::Relaxed);
        if !self.metrics.open_inserts_off.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "an INSERT kept open across a large transaction's batches failed: this process now stores every batch as an INSERT of its own (retried in place)");
        }
        Failure::Retry(anyhow!(
            "storing {rows} items of one large transaction in one insert failed ({e}); the session starts \
             over and they are read again from the slot (nothing of them was confirmed), stored batch by \
             batch from now on"
        ))
    }

    /// Report how far this source is (`waltrail_sources`), and raise the bound of what capture may
    /// confirm to what it has heard from Postgres once the report is stored. Not retried: the next one
    /// comes soon, and a ClickHouse that refuses it shows in the batches' errors (confirmations then wait).
    async fn heartbeat(&self) {
        send_report(&self.ch, &self.metrics, &self.reporter, self.timeout).await
    }

    /// Checkpoints are stored after the items they cover, retried the same way, and then copied to the
    /// checkpoint file. A copy that cannot be written is logged, not retried: the store holds them.
    async fn store_checkpoints(
        &self,
        rows: &[crate::store::row::CheckpointRow],
    ) -> Result<(), Failure> {
        self.insert_retrying("checkpoints", SIGNED_AGAIN, || {
            crate::store::writer::insert_checkpoints(&self.ch, rows)
        })
        .await?;
        let mut copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
        let fresh: Vec<String> = rows
            .iter()
            .filter(|r| {
                let last = copied.entry(r.organization_id.clone()).or_default();
                let new = r.chain_seq > *last;
                *last = (*last).max(r.chain_seq);
                new
            })
            .map(|r| serde_json::json!({"checkpoint": r.checkpoint()}).to_string() + "\n")
            .collect();
        drop(copied);
        self.deliver_checkpoints(fresh);
        Ok(())
    }

    /// Rosters are stored after the checkpoints, retried the same way (before the batch's commit is
    /// confirmed: a replay signs the very same roster).
    async fn store_rosters(&self, rows: &[crate::store::row::RosterRow]) -> Result<(), Failure> {
        self.insert_retrying("rosters", SIGNED_AGAIN, || {
            crate::store::writer::insert_rosters(&self.ch, rows)
        })
        .await
    }

    /// An insert retried until stored (nothing is confirmed to Postgres meanwhile); while stopping, given up
    /// after three tries, saying what becomes of the rows (`then`): their commit is not confirmed.
    async fn insert_retrying<F, Fut>(
        &self,
        what: &str,
        then: &str,
        insert: F,
    ) -> Result<(), Failure>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), clickhouse::error::Error>>,
    {
        let mut backoff = InsertBackoff::default();
        let mut attempts = 0u32;
        loop {
            let err = match tokio::time::timeout(self.timeout, insert()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("insert timed out after {:?}", self.timeout),
            };
            attempts += 1;
            self.metrics.insert_errors.fetch_add(1, Ordering::Relaxed);
            if *self.shutdown.borrow() && attempts >= 3 {
                return Err(Failure::Retry(anyhow!(
                    "stopping while ClickHouse refuses {what} ({err}); {then}"
                )));
            }
            tracing::warn!(error = %err, attempt = attempts, "storing {what} failed; retrying (nothing is confirmed to Postgres meanwhile)");
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }

    /// Append checkpoint lines to `integrity.checkpoint_file`, after those it has not taken yet: a copy
    /// that cannot be written keeps them (retried with every batch and heartbeat, counted in
    /// `waltrail_checkpoints_undelivered`), never skips them.
    fn deliver_checkpoints(&self, new: Vec<String>) {
        let Some(path) = &self.checkpoint_file else {
            return;
        };
        let Ok(mut waiting) = self.undelivered.lock() else {
            return;
        };
        if new.is_empty() && waiting.is_empty() {
            return;
        }
        waiting.extend(new);
        if waiting.len() > MAX_UNDELIVERED {
            let over = waiting.len() - MAX_UNDELIVERED;
            for line in waiting.drain(..over) {
                tracing::error!(file = %path.display(), checkpoint = %line.trim_end(), "integrity.checkpoint_file has not taken checkpoints for too long: this one is given up here (the store has it; the next start appends what the file lacks)");
            }
        }
        let written = crate::audit::chain::append_checkpoint_lines(path, &waiting.concat());
        match written {
            Ok(()) => {
                if self
                    .metrics
                    .checkpoints_undelivered
                    .swap(0, Ordering::Relaxed)
                    > 0
                {
                    tracing::info!(file = %path.display(), checkpoints = waiting.len(), "integrity.checkpoint_file takes checkpoints again: the waiting ones are appended");
                }
                waiting.clear();
            }
            Err(e) => {
                let before = self
                    .metrics
                    .checkpoints_undelivered
                    .swap(waiting.len() as u64, Ordering::Relaxed);
                if before == 0 {
                    tracing::error!(file = %path.display(), error = %e, "cannot append checkpoints to integrity.checkpoint_file: they wait and are retried (waltrail_checkpoints_undelivered)");
                }
            }
        }
    }

    async fn store(&self, b: &Batch) -> Result<(), Failure> {
        self.insert_retrying(
            &format!("{} items", b.count),
            "those not stored stay unconfirmed in the slot and are read again at the next start",
            || insert_encoded(&self.ch, &b.rows),
        )
        .await?;
        self.metrics
            .items_written
            .fetch_add(b.count as u64, Ordering::Relaxed);
        self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .batch_items_last
            .store(b.count as u64, Ordering::Relaxed);
        tracing::debug!(items = b.count, bytes = b.rows.len(), "batch stored");
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::PendingGaps;
    use crate::audit::item::Gap;

    /// A cause found twice (by the stop, then by the start that refuses) is one gap, kept as first found;
    /// recorded gaps leave the list, gaps found meanwhile stay.
    #[test]
    fn pending_gaps_keep_one_per_cause_until_recorded() {
        let gap = |table: &str, reason: &str| Gap {
            reason: reason.into(),
            table: Some(table.into()),
            ..Default::default()
        };
        let p = PendingGaps::default();
        p.add(gap("public.t", "t was UNLOGGED (found at 10:00:01)"));
        p.add(gap("public.t", "t was UNLOGGED (found at 10:00:02)"));
        p.add(gap("public.u", "u was UNLOGGED (found at 10:00:02)"));
        p.add(gap("public.t", "t held rows (found at 10:00:03)"));
        let listed = p.list();
        assert_eq!(listed.len(), 3, "{listed:#?}");
        assert!(listed[0].reason.ends_with("10:00:01)"));
        p.recorded(&listed[..2]);
        p.add(gap("public.v", "v held rows (found at 10:00:04)"));
        let left: Vec<_> = p.list().into_iter().map(|g| g.table).collect();
        assert_eq!(
            left,
            [Some("public.t".to_owned()), Some("public.v".to_owned())]
        );
        assert!(p.to_json().contains("v held rows"));
        assert_eq!(PendingGaps::default().to_json(), "");
    }
}
