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
    /// Moved into a task of its own when the assembling starts.
    pub store: Option<StoreTask>,
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
        let store = self
            .store
            .take()
            .ok_or_else(|| Failure::Fatal(anyhow!("the assemble task was started twice")))?;
        let ch = store.ch.clone();
        let metrics = store.metrics.clone();
        let store_task = AbortOnDrop(tokio::spawn(store.run(batch_rx)));
        let mut queue = BatchQueue::new(
            EncodedRows::with_batch_bytes(max_bytes),
            batch_tx,
            store_task,
            self.acker.clone(),
        );
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut items = Vec::new();
        // The chains the open transaction touched, with the last item of each (for its checkpoint).
        let mut touched = Touched::default();
        let mut held = Held::default();
        loop {
            // Group commit: when the stream goes quiet and no insert is in flight, what waits is flushed at
            // once (no fixed delay); while one insert is in flight the next batch fills. `batch_max_delay_ms`
            // stays the bound, and `batch_min_interval_ms` keeps ClickHouse from one insert per change.
            // Not while catching up (what is read was committed long ago): there a pause in the stream is
            // the reader's, not the source going quiet, and flushing at each made many small inserts
            // (ClickHouse's CPU doubled in a catch-up of one-row transactions); batches then close at
            // their size or `batch_max_delay_ms`.
            let group_commit = (queue.has_work() || !held.is_empty())
                && self.acker.nothing_in_flight()
                && metrics.stream_lag_us.load(Ordering::Relaxed) < CATCHING_UP_US;
            if group_commit && rx.is_empty() && last_dispatch.elapsed() >= min_interval {
                deadline = None;
                self.release(&ch, &mut queue, &mut touched, &mut held)
                    .await?;
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
                        self.release(&ch, &mut queue, &mut touched, &mut held)
                            .await?;
                        last_dispatch = tokio::time::Instant::now();
                        queue.dispatch().await?;
                    }
                    continue;
                }
                _ = self.acker.idle.notified(), if queue.has_work() || !held.is_empty() => continue,
                f = queue.store_stopped() => return Err(f),
            };
            let Some(delivery) = delivery else {
                // Channel closed: graceful stop. Store what is assembled, then wait for the store task.
                self.release(&ch, &mut queue, &mut touched, &mut held)
                    .await?;
                return queue.drain().await;
            };
            if !delivery.types.is_empty() {
                self.assembler.catalog.learn(&delivery.types);
            }
            let now = now_us().max(self.last_ingested_us);
            self.last_ingested_us = now;
            let mut msgs = delivery.msgs.into_iter().peekable();
            while let Some(msg) = msgs.next() {
                let applied = self
                    .assembler
                    .apply(msg, &mut items)
                    .map_err(|e| Failure::Fatal(anyhow!(e)))?;
                for item in items.drain(..) {
                    let row = ItemRow::from_item(item, now);
                    // A key-only delete's scope comes from the trail: it and all after it wait (in order:
                    // chains link in commit order) until one look-up answers for all that wait.
                    if !held.is_empty() || needs_scope_from_trail(&row) {
                        held.push(row);
                    } else {
                        self.place(&mut queue, &mut touched, row).await?;
                    }
                }
                if let Applied::Committed(c) = applied {
                    if held.is_empty() {
                        self.commit(&mut queue, &mut touched, &c, now).await?;
                    } else {
                        held.commit(c, now);
                    }
                }
                if held.full() {
                    self.release(&ch, &mut queue, &mut touched, &mut held)
                        .await?;
                }
                if (queue.has_work() || !held.is_empty()) && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + max_delay);
                }
                // A batch full right before its transaction's commit waits for it: closed with the
                // commit, it says no more of the transaction follows (a backlog of small transactions
                // is then not chained into one open INSERT whose commits wait for its end).
                let commit_next = matches!(
                    msgs.peek(),
                    Some(crate::capture::pgoutput::LogicalMessage::Commit(_))
                );
                if (queue.filling.len() >= max_items || queue.filling.bytes() >= max_bytes)
                    && !commit_next
                {
                    deadline = None;
                    last_dispatch = tokio::time::Instant::now();
                    queue.dispatch().await?;
                }
            }
        }
    }
}

/// Rows (and the commits between them) held back from the chain behind a key-only delete, until one
/// look-up of the trail gives the scope of every such delete among them (see [`scopes_from_trail`]).
#[derive(Default)]
struct Held {
    rows: Vec<ItemRow>,
    /// Commits, each after the rows before it (by how many rows preceded it), with its ingestion time.
    commits: Vec<(usize, crate::capture::pgoutput::Commit, i64)>,
    bytes: usize,
}

impl Held {
    /// Enough held to look up and let go (a bulk delete waits no longer, and memory stays bounded).
    const MAX_ROWS: usize = 10_000;
    const MAX_BYTES: usize = 16 << 20;

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.commits.is_empty()
    }

    fn push(&mut self, row: ItemRow) {
        self.bytes += row.diff.len() + row.summary.len() + 512;
        self.rows.push(row);
    }

    fn commit(&mut self, c: crate::capture::pgoutput::Commit, now: i64) {
        self.commits.push((self.rows.len(), c, now));
    }

    fn full(&self) -> bool {
        self.rows.len() >= Self::MAX_ROWS || self.bytes >= Self::MAX_BYTES
    }
}

/// The chains the open transaction touched, in the order it first touched them (checkpoints come out in
/// that order, the same in a replay), with the last item of each; indexed, since one transaction may
/// touch every organization's chain.
#[derive(Default)]
struct Touched {
    list: Vec<(String, u64, uuid::Uuid)>,
    index: std::collections::HashMap<String, usize>,
}

impl Touched {
    fn note(&mut self, chain: &str, lsn: u64, id: uuid::Uuid) {
        // Rows of one organization tend to come together: the last chain is checked before the index.
        if let Some(t) = self.list.last_mut().filter(|t| t.0 == chain) {
            (t.1, t.2) = (lsn, id);
            return;
        }
        match self.index.get(chain) {
            Some(&i) => (self.list[i].1, self.list[i].2) = (lsn, id),
            None => {
                self.index.insert(chain.to_owned(), self.list.len());
                self.list.push((chain.to_owned(), lsn, id));
            }
        }
    }
}

impl AssembleTask {
    /// One row into its chain (or taken as stored, in a replay) and the batch being filled.
    async fn place(
        &mut self,
        queue: &mut BatchQueue,
        touched: &mut Touched,
        mut row: ItemRow,
    ) -> Result<(), Failure> {
        let stored = stored_copy(&mut self.stored, &row).await?;
        if let (None, Some(w)) = (&stored, &mut self.stored) {
            if w.stored_after(&row) {
                w.more(&row);
                return Ok(());
            }
        }
        if let Some(chainer) = &mut self.chainer {
            // The stored copy's chain when there is one: after a replay that went otherwise it may be
            // another change, of another chain, and it is the one kept (QA45 H2/H3).
            let of = stored.as_ref().unwrap_or(&row);
            let chain = Chainer::chain_of(&of.organization_id, of.platform_wide != 0).to_owned();
            let chain = chain.as_str();
            match &stored {
                Some(s) => {
                    let problem = s.with_record_ref(|r| chainer.adopt(chain, r, &s.chain_fields()));
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
            touched.note(chain, row.commit_lsn, row.id);
        }
        if stored.is_none() {
            queue.push(&row);
        }
        Ok(())
    }

    /// A transaction's end: the stored items of it a replay did not come to, the checkpoints and roster
    /// it makes due, and its position to confirm once stored.
    async fn commit(
        &mut self,
        queue: &mut BatchQueue,
        touched: &mut Touched,
        c: &crate::capture::pgoutput::Commit,
        now: i64,
    ) -> Result<(), Failure> {
        if let Some(w) = &mut self.stored {
            let mut unfit = 0;
            let chainer = &mut self.chainer;
            w.unmet(c.commit_lsn, |s| {
                let Some(chainer) = chainer.as_mut() else {
                    return;
                };
                let chain = Chainer::chain_of(&s.organization_id, s.platform_wide != 0);
                let problem = s.with_record_ref(|r| chainer.adopt(chain, r, &s.chain_fields()));
                if let Some(problem) = problem {
                    unfit += 1;
                    if unfit <= 10 {
                        tracing::warn!(item = %s.id, chain = %chain, problem = %problem, "an item stored before the restart does not follow its chain; kept as stored (verification reports it)");
                    }
                }
                touched.note(chain, s.commit_lsn, s.id);
            })
            .await
            .map_err(Failure::Retry)?;
            w.unfit += unfit;
        }
        close_past(&mut self.stored, c.commit_lsn);
        if let Some(chainer) = &mut self.chainer {
            let last: Vec<(String, u64, String)> = touched
                .list
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
        touched.list.clear();
        touched.index.clear();
        queue.committed((Lsn(c.end_lsn), c.commit_time_us));
        Ok(())
    }

    /// Let go of what is held: the key-only deletes among it take their scope from the trail (what came
    /// before them stored first, so that it is found), then every row and commit goes on in order.
    async fn release(
        &mut self,
        ch: &clickhouse::Client,
        queue: &mut BatchQueue,
        touched: &mut Touched,
        held: &mut Held,
    ) -> Result<(), Failure> {
        if held.is_empty() {
            return Ok(());
        }
        let Held { rows, commits, .. } = std::mem::take(held);
        // Parsed once: the test reads each row's diff.
        let needs: Vec<bool> = rows.iter().map(needs_scope_from_trail).collect();
        if needs.iter().any(|n| *n) {
            queue.dispatch_with(false).await?;
            queue.stored_all().await?;
        }
        let mut scopes = scopes_from_trail(ch, &rows, &needs).await?;
        let mut commits = commits.into_iter().peekable();
        for (i, mut row) in rows.into_iter().enumerate() {
            while let Some((_, c, now)) = commits.next_if(|(before, _, _)| *before <= i) {
                self.commit(queue, touched, &c, now).await?;
            }
            let key = (row.table_name.clone(), row.resource_id.clone());
            if needs[i] {
                if let Some(s) = scopes.get(&key) {
                    row.organization_id = s.organization_id.clone();
                    if row.project_id.is_empty() {
                        row.project_id = s.project_id.clone();
                    }
                    if row.resource_display.is_empty() && !s.resource_display.is_empty() {
                        row.resource_display = s.resource_display.clone();
                        // The line was written before the display was known, naming the key: it names
                        // the resource as the item does.
                        row.summary = summary_of(&row);
                    }
                }
            }
            // What a later delete held with it finds: this row, as the trail would have it by then (a
            // move's copy in the scope it left, next after the one it joined, does not replace that; a
            // resource moved to no organization is in none).
            if row.platform_wide == 0 {
                let s = crate::store::query::LastScope {
                    resource_id: row.resource_id.clone(),
                    organization_id: row.organization_id.clone(),
                    project_id: row.project_id.clone(),
                    resource_display: row.resource_display.clone(),
                    position: (row.commit_lsn, row.seq),
                    joined: row.id
                        == crate::audit::item::item_id(&row.source_id, row.commit_lsn, row.seq, 0),
                };
                if scopes.get(&key).is_none_or(|e| s.supersedes(e)) {
                    scopes.insert(key, s);
                }
            }
            self.place(queue, touched, row).await?;
        }
        for (_, c, now) in commits {
            self.commit(queue, touched, &c, now).await?;
        }
        Ok(())
    }
}

/// A delete that carried its key alone (the table not at REPLICA IDENTITY FULL) names no organization:
/// the WAL did not hold it. Its resource's last item in the trail says where the resource was; the item
/// goes there (its diff still marks the organization column as not sent). Found nowhere, it stays of no
/// organization. For all such deletes among `rows` (held in order from the first of them; `needs[i]`
/// says whether row i is one), by their resources' last items before the first held row; the rows held
/// with them are applied in order by the caller.
async fn scopes_from_trail(
    ch: &clickhouse::Client,
    rows: &[ItemRow],
    needs: &[bool],
) -> Result<std::collections::HashMap<(String, String), crate::store::query::LastScope>, Failure> {
    let mut out = std::collections::HashMap::new();
    let Some(first) = rows.first() else {
        return Ok(out);
    };
    let mut wanted: std::collections::BTreeMap<(&str, &str), std::collections::BTreeSet<&str>> =
        Default::default();
    for (r, _) in rows.iter().zip(needs).filter(|(_, n)| **n) {
        wanted
            .entry((r.source_id.as_str(), r.table_name.as_str()))
            .or_default()
            .insert(r.resource_id.as_str());
    }
    for ((source_id, table), ids) in wanted {
        let ids: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        for chunk in crate::store::query::last_scopes_chunks(&ids) {
            for s in crate::store::query::last_scopes(
                ch,
                source_id,
                table,
                chunk,
                (first.commit_lsn, first.seq),
            )
            .await
            .map_err(Failure::Retry)?
            {
                out.insert((table.to_owned(), s.resource_id.clone()), s);
            }
        }
    }
    Ok(out)
}

/// `row`'s plain-language line from its stored fields, as the assembler writes it from the same values.
fn summary_of(row: &ItemRow) -> String {
    let label = crate::audit::summary::actor_label(
        &row.principal_type,
        &row.principal_id,
        &row.display_name,
        &row.actor_email,
        &row.on_behalf_of_id,
        &row.on_behalf_of_display,
    );
    crate::audit::summary::summary(
        &label,
        &row.action,
        &row.resource_type,
        &row.resource_display,
        &row.resource_id,
    )
}

/// A delete of no organization whose columns the WAL did not all carry (see [`scopes_from_trail`]).
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
        if !StoredWindow::same_change(s, row) {
            w.diverged(s, row);
        } else if s.with_record_ref(|r| r.content_hash())
            != row.with_record_ref(|r| r.content_hash())
        {
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
