//! The assemble task: turns decoded messages into items (audit), encodes them as rows (store) and cuts
//! them into batches for the store task, so the next batch is assembled while ClickHouse takes the last.

use anyhow::anyhow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use super::ack::{AbortOnDrop, Acker, Batch, BatchQueue};
use super::read::Delivery;
use super::replay::StoredWindow;
use super::retry::Failure;
use super::store::StoreTask;
use crate::audit::assembler::{Applied, Assembler};
use crate::audit::chain::Chainer;
use crate::capture::Lsn;
use crate::config::Config;
use crate::store::row::CheckpointRow;
use crate::store::row::{now_us, ItemRow};
use crate::store::writer::EncodedRows;

pub struct AssembleTask {
    pub cfg: Arc<Config>,
    pub assembler: Assembler,
    /// Links items into their organization's hash chain; `None` when `integrity.chain` is off.
    pub chainer: Option<Chainer>,
    pub store: StoreTask,
    pub acker: Arc<Acker>,
    /// The ingestion time given to the last delivery's rows (at start: the store's latest of this source).
    /// Each delivery's is at least this: a source's ingestion times never go back, even when the clock
    /// does, so ordering its items by when they were stored keeps its commit order (what pollers rely on).
    pub last_ingested_us: i64,
    /// What a replay after a restart finds stored (kept as stored, not written again); `None` when
    /// nothing after the resume position is stored.
    pub stored: Option<StoredWindow>,
}

impl AssembleTask {
    pub async fn run(mut self, mut rx: mpsc::Receiver<Delivery>) -> Result<(), Failure> {
        /// Transactions sent this long after their commit are history being caught up on.
        const CATCHING_UP_US: i64 = 1_000_000;
        let max_items = self.cfg.capture.batch_max_items;
        let max_bytes = self.cfg.capture.batch_max_bytes;
        let max_delay = Duration::from_millis(self.cfg.capture.batch_max_delay_ms);
        let min_interval = Duration::from_millis(self.cfg.capture.batch_min_interval_ms);
        let mut last_dispatch = tokio::time::Instant::now();
        // One batch queued while another is being inserted: assembling never waits on ClickHouse unless
        // ClickHouse falls two batches behind, and memory stays bounded by about three batches.
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
        // Reads of the trail while assembling (a key-only delete's scope) go to the store's ClickHouse.
        let ch = self.store.ch.clone();
        let metrics = self.store.metrics.clone();
        let store_task = AbortOnDrop(tokio::spawn(self.store.run(batch_rx)));
        let mut queue = BatchQueue::new(
            EncodedRows::with_batch_bytes(max_bytes),
            batch_tx,
            store_task,
            self.acker.clone(),
        );
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut items = Vec::new();
        // The chains the open transaction touched, with the last item of each (for its checkpoint).
        let mut touched: Vec<(String, u64, uuid::Uuid)> = Vec::new();
        loop {
            // Group commit: when the stream goes quiet and no insert is in flight, what waits is flushed at
            // once (no fixed delay); while one insert is in flight the next batch fills. `batch_max_delay_ms`
            // stays the bound, and `batch_min_interval_ms` keeps ClickHouse from one insert per change.
            // Not while catching up (what is read was committed long ago): there a pause in the stream is
            // the reader's, not the source going quiet, and flushing at each made many small inserts
            // (ClickHouse's CPU doubled in a catch-up of one-row transactions); batches then close at
            // their size or `batch_max_delay_ms`.
            let group_commit = queue.has_work()
                && self.acker.nothing_in_flight()
                && metrics.stream_lag_us.load(Ordering::Relaxed) < CATCHING_UP_US;
            if group_commit && rx.is_empty() && last_dispatch.elapsed() >= min_interval {
                deadline = None;
                last_dispatch = tokio::time::Instant::now();
                queue.dispatch().await?;
            }
            let wake_at = if group_commit {
                let next = last_dispatch + min_interval;
                Some(deadline.map_or(next, |d| d.min(next)))
            } else {
                deadline
            };
            let delivery = tokio::select! {
                d = rx.recv() => d,
                _ = sleep_until(wake_at) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        deadline = None;
                        last_dispatch = tokio::time::Instant::now();
                        queue.dispatch().await?;
                    }
                    continue;
                }
                _ = self.acker.idle.notified(), if queue.has_work() => continue,
            };
            let Some(delivery) = delivery else {
                // Channel closed: graceful stop. Store what is assembled, then wait for the store task.
                return queue.drain().await;
            };
            if !delivery.types.is_empty() {
                self.assembler.catalog.learn(&delivery.types);
            }
            let now = now_us().max(self.last_ingested_us);
            self.last_ingested_us = now;
            for msg in delivery.msgs {
                let applied = self
                    .assembler
                    .apply(msg, &mut items)
                    .map_err(|e| Failure::Fatal(anyhow!(e)))?;
                for item in items.drain(..) {
                    let mut row = ItemRow::from_item(item, now);
                    if needs_scope_from_trail(&row) {
                        // What came before it must be in the store to be found there: store it first.
                        queue.dispatch().await?;
                        while !self.acker.nothing_in_flight() {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        scope_from_trail(&ch, &mut row).await?;
                    }
                    let stored = stored_copy(&mut self.stored, &row).await?;
                    if let Some(chainer) = &mut self.chainer {
                        let chain = Chainer::chain_of(&row.organization_id, row.platform_wide != 0);
                        match &stored {
                            Some(s) => {
                                let problem = s.with_record_ref(|r| {
                                    chainer.adopt(chain, r, &s.chain_fields())
                                });
                                if let (Some(problem), Some(w)) = (problem, &mut self.stored) {
                                    w.unfit += 1;
                                    // The first few by name; the count comes with the replay's summary.
                                    if w.unfit <= 10 {
                                        tracing::warn!(item = %s.id, chain = %chain, problem = %problem, "an item stored before the restart does not follow its chain; kept as stored (verification reports it)");
                                    }
                                }
                            }
                            None => {
                                let f = row.with_record_ref(|r| chainer.link_ref(chain, r));
                                row.chain_seq = f.chain_seq;
                                row.chain_prev = f.chain_prev;
                                row.chain_hash = f.chain_hash;
                            }
                        }
                        match touched.iter_mut().find(|t| t.0 == chain) {
                            Some(t) => {
                                t.1 = row.commit_lsn;
                                t.2 = row.id;
                            }
                            None => touched.push((chain.to_owned(), row.commit_lsn, row.id)),
                        }
                    }
                    if stored.is_none() {
                        queue.filling.push(&row);
                    }
                }
                if let Applied::Committed(c) = applied {
                    close_past(&mut self.stored, c.commit_lsn);
                    if let Some(chainer) = &mut self.chainer {
                        let last: Vec<(String, u64, String)> = touched
                            .iter()
                            .map(|(c, lsn, id)| (c.clone(), *lsn, id.to_string()))
                            .collect();
                        let due = chainer.checkpoints_due(&last, c.commit_time_us);
                        queue
                            .checkpoints
                            .extend(due.iter().map(|cp| CheckpointRow::from_checkpoint(cp, now)));
                        if let Some(r) = chainer.roster_due(c.commit_lsn, c.commit_time_us) {
                            queue
                                .rosters
                                .push(crate::store::row::RosterRow::from_roster(&r, now));
                        }
                    }
                    touched.clear();
                    queue.committed((Lsn(c.end_lsn), c.commit_time_us));
                }
                if queue.has_work() && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + max_delay);
                }
                if queue.filling.len() >= max_items || queue.filling.bytes() >= max_bytes {
                    deadline = None;
                    last_dispatch = tokio::time::Instant::now();
                    queue.dispatch().await?;
                }
            }
        }
    }
}

/// A delete that carried its key alone (the table not at REPLICA IDENTITY FULL) names no organization:
/// the WAL did not hold it. Its resource's last item in the trail says where the resource was; the item
/// goes there (its diff still marks the organization column as not sent). Found nowhere, it stays of no
/// organization.
async fn scope_from_trail(ch: &clickhouse::Client, row: &mut ItemRow) -> Result<(), Failure> {
    let found = crate::store::query::last_scope(
        ch,
        &row.source_id,
        &row.table_name,
        &row.resource_id,
        (row.commit_lsn, row.seq),
    )
    .await
    .map_err(Failure::Retry)?;
    if let Some(s) = found {
        row.organization_id = s.organization_id;
        if row.project_id.is_empty() {
            row.project_id = s.project_id;
        }
        if row.resource_display.is_empty() {
            row.resource_display = s.resource_display;
        }
    }
    Ok(())
}

/// A delete of no organization whose columns the WAL did not all carry (see [`scope_from_trail`]).
fn needs_scope_from_trail(row: &ItemRow) -> bool {
    row.organization_id.is_empty()
        && row.platform_wide == 0
        && row.action == crate::vocab::action::DELETED
        && !row.resource_id.is_empty()
        && row.diff.contains(r#"{"not_sent":true}"#)
        // A column marked not sent, not a value that merely looks like the marker.
        && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&row.diff)
            .is_ok_and(|d| {
                d.values()
                    .any(|v| *v == serde_json::json!({"not_sent": true}))
            })
}

/// The copy of `row` stored before a restart, if any (see [`StoredWindow`]).
async fn stored_copy(
    window: &mut Option<StoredWindow>,
    row: &ItemRow,
) -> Result<Option<ItemRow>, Failure> {
    let Some(w) = window else {
        return Ok(None);
    };
    if !w.covers(row.commit_lsn) {
        close_past(window, row.commit_lsn);
        return Ok(None);
    }
    let found = w.stored_copy(row).await.map_err(Failure::Retry)?;
    if let Some(s) = &found {
        w.kept += 1;
        if s.with_record_ref(|r| r.content_hash()) != row.with_record_ref(|r| r.content_hash()) {
            w.differing += 1;
        }
    }
    Ok(found)
}

/// Drop the window once the replay has passed the last commit stored, saying what it kept.
fn close_past(window: &mut Option<StoredWindow>, commit_lsn: u64) {
    if let Some(w) = window.take_if(|w| !w.covers(commit_lsn) || w.last(commit_lsn)) {
        w.report();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
