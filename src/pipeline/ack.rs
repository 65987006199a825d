//! Batches and acknowledgement: which position may be confirmed to Postgres, and when.
//!
//! The rule is the product's promise: a commit is confirmed only after its items, and every earlier item,
//! are stored in ClickHouse. Batches are stored strictly in order; a transaction without items is confirmed
//! at once only when nothing before it is still waiting.

use anyhow::anyhow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

use super::retry::Failure;
use crate::capture::metrics::CaptureMetrics;
use crate::capture::Lsn;
use crate::store::writer::EncodedRows;

/// A commit: its end position (what is confirmed) and its time.
pub type CommitPoint = (Lsn, i64);

/// Items of one or more transactions, encoded, and the commit to confirm once ClickHouse has them.
pub struct Batch {
    pub rows: bytes::Bytes,
    pub count: usize,
    /// Signed checkpoints over items in this batch or before it: stored after the rows.
    pub checkpoints: Vec<crate::store::row::CheckpointRow>,
    /// The source's signed rosters due in this batch: stored after the checkpoints.
    pub rosters: Vec<crate::store::row::RosterRow>,
    pub commit: Option<CommitPoint>,
    /// The batch ends inside a transaction: the next batch carries more of it, and the store task keeps
    /// one INSERT open across them (see `StoreTask`).
    pub more: bool,
}

/// Confirms positions to the reader. Shared by the assembler (transactions without items, when nothing is in
/// flight) and the store task (after each stored batch); `in_flight` keeps their confirmations in order.
pub struct Acker {
    acked: watch::Sender<Lsn>,
    metrics: Arc<CaptureMetrics>,
    /// Batches handed to the store task and not yet confirmed.
    in_flight: AtomicUsize,
    /// Woken when a batch is stored: the assembler may flush what waits instead of waiting out its delay.
    pub idle: tokio::sync::Notify,
}

impl Acker {
    pub fn new(acked: watch::Sender<Lsn>, metrics: Arc<CaptureMetrics>) -> Self {
        Acker {
            acked,
            metrics,
            in_flight: AtomicUsize::new(0),
            idle: tokio::sync::Notify::new(),
        }
    }

    pub fn confirm(&self, commit: Option<CommitPoint>) {
        if let Some((lsn, t)) = commit {
            self.metrics.last_commit_time_us.store(t, Ordering::Relaxed);
            self.acked.send_replace(lsn);
        }
    }

    /// A stored batch: confirm its commit, and let later item-less commits be confirmed at once again.
    pub fn stored(&self, commit: Option<CommitPoint>) {
        self.confirm(commit);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.idle.notify_one();
    }

    pub fn nothing_in_flight(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }
}

/// Aborts the task when dropped, so an aborted assembler takes its store task with it.
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The batch being filled, the last commit it completes, and the hand-off to the store task.
pub struct BatchQueue {
    pub filling: EncodedRows,
    pub checkpoints: Vec<crate::store::row::CheckpointRow>,
    pub rosters: Vec<crate::store::row::RosterRow>,
    /// Last commit seen whose items are all in `filling` or already handed on, not yet confirmed.
    pending_commit: Option<CommitPoint>,
    /// `filling` holds items of a transaction whose commit has not come yet.
    mid_transaction: bool,
    tx: mpsc::Sender<Batch>,
    store_task: AbortOnDrop<Result<(), Failure>>,
    acker: Arc<Acker>,
}

impl BatchQueue {
    pub fn new(
        filling: EncodedRows,
        tx: mpsc::Sender<Batch>,
        store_task: AbortOnDrop<Result<(), Failure>>,
        acker: Arc<Acker>,
    ) -> Self {
        BatchQueue {
            filling,
            checkpoints: Vec::new(),
            rosters: Vec::new(),
            pending_commit: None,
            mid_transaction: false,
            tx,
            store_task,
            acker,
        }
    }

    /// An item of the open transaction.
    pub fn push(&mut self, row: &crate::store::row::ItemRow) {
        self.filling.push(row);
        self.mid_transaction = true;
    }

    /// A transaction ended: its commit is confirmed with the batch that holds its last item, or at once
    /// when no item of it (or before it) waits for ClickHouse.
    pub fn committed(&mut self, commit: CommitPoint) {
        self.pending_commit = Some(commit);
        self.mid_transaction = false;
        self.confirm_if_nothing_waits();
    }

    pub fn has_work(&self) -> bool {
        !self.filling.is_empty()
            || !self.checkpoints.is_empty()
            || !self.rosters.is_empty()
            || self.pending_commit.is_some()
    }

    fn confirm_if_nothing_waits(&mut self) -> bool {
        if self.filling.is_empty()
            && self.checkpoints.is_empty()
            && self.rosters.is_empty()
            && self.acker.nothing_in_flight()
        {
            self.acker.confirm(self.pending_commit.take());
            return true;
        }
        false
    }

    /// Hand the batch (and the commit it completes) to the store task; one that ends inside a transaction
    /// says that more of it follows.
    pub async fn dispatch(&mut self) -> Result<(), Failure> {
        let more = self.mid_transaction;
        self.dispatch_with(more).await
    }

    /// Hand the batch on, to be stored before anything after it is assembled (`more` false: the store
    /// task ends its INSERT with it; a look-up of the trail waits for that).
    pub async fn dispatch_with(&mut self, more: bool) -> Result<(), Failure> {
        if self.filling.is_empty()
            && self.checkpoints.is_empty()
            && self.rosters.is_empty()
            && (self.pending_commit.is_none() || self.confirm_if_nothing_waits())
            // Nothing to send, but an INSERT the store task keeps open may wait for more: an empty batch
            // that says none follows ends it at once (a look-up of the trail waited 500 ms for it).
            && (more || self.acker.nothing_in_flight())
        {
            return Ok(());
        }
        // An INSERT stays open only inside one transaction: a batch holding a commit ends it (a backlog of
        // small transactions is never chained into one INSERT whose commits all wait for its end, QA46 M1).
        let more = more && self.pending_commit.is_none();
        let (rows, count) = self.filling.take();
        self.acker.in_flight.fetch_add(1, Ordering::AcqRel);
        let b = Batch {
            rows,
            count,
            checkpoints: std::mem::take(&mut self.checkpoints),
            rosters: std::mem::take(&mut self.rosters),
            commit: self.pending_commit.take(),
            more: more && count > 0,
        };
        if self.tx.send(b).await.is_err() {
            // The store task stopped: it only does so with an error.
            join(&mut self.store_task).await?;
            return Err(Failure::Retry(anyhow!("store task stopped")));
        }
        Ok(())
    }

    /// The store task ended while batches may still come: only an error ends it then (an open INSERT
    /// that failed with no batch behind it, QA46 M2); the session must end at once, not at the next batch.
    pub async fn store_stopped(&mut self) -> Failure {
        match (&mut self.store_task.0).await {
            Ok(Err(f)) => f,
            Ok(Ok(())) => Failure::Retry(anyhow!("store task stopped")),
            Err(e) => Failure::Fatal(anyhow!("store task failed: {e}")),
        }
    }

    /// Wait until every batch handed on is stored, or the store task stops with what failed (a batch that
    /// failed is never counted stored: waiting on the count alone hung for good, QA47 H1).
    pub async fn stored_all(&mut self) -> Result<(), Failure> {
        let acker = self.acker.clone();
        while !acker.nothing_in_flight() {
            tokio::select! {
                _ = acker.idle.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                f = self.store_stopped() => return Err(f),
            }
        }
        Ok(())
    }

    /// Graceful stop: store what is assembled, then wait until the store task has stored everything.
    pub async fn drain(mut self) -> Result<(), Failure> {
        self.dispatch_with(false).await?;
        let BatchQueue {
            tx, mut store_task, ..
        } = self;
        drop(tx);
        join(&mut store_task).await
    }
}

async fn join(task: &mut AbortOnDrop<Result<(), Failure>>) -> Result<(), Failure> {
    match (&mut task.0).await {
        Ok(r) => r,
        Err(e) => Err(Failure::Fatal(anyhow!("store task failed: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::row::ItemRow;

    fn row() -> ItemRow {
        ItemRow::from_item(crate::audit::item::AuditItem::sample(), 1)
    }

    /// A queue whose store task is a channel the test reads, standing in for ClickHouse.
    fn queue() -> (
        BatchQueue,
        mpsc::Receiver<Batch>,
        watch::Receiver<Lsn>,
        Arc<Acker>,
    ) {
        let (acked_tx, acked_rx) = watch::channel(Lsn(0));
        let acker = Arc::new(Acker::new(acked_tx, Default::default()));
        let (tx, rx) = mpsc::channel(4);
        let idle = AbortOnDrop(tokio::spawn(std::future::pending()));
        let q = BatchQueue::new(EncodedRows::default(), tx, idle, acker.clone());
        (q, rx, acked_rx, acker)
    }

    #[tokio::test]
    async fn a_commit_is_confirmed_only_after_its_batch_and_every_earlier_one() {
        let (mut q, mut rx, acked, acker) = queue();
        // Transaction 1 has an item; transaction 2 has none.
        q.filling.push(&row());
        q.committed((Lsn(10), 1));
        assert_eq!(*acked.borrow(), Lsn(0), "its item is not stored yet");
        q.dispatch().await.unwrap();
        q.committed((Lsn(20), 2));
        assert_eq!(*acked.borrow(), Lsn(0), "batch 1 is still in flight");
        q.dispatch().await.unwrap();
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        assert_eq!((first.count, first.commit), (1, Some((Lsn(10), 1))));
        assert_eq!((second.count, second.commit), (0, Some((Lsn(20), 2))));
        acker.stored(first.commit);
        assert_eq!(*acked.borrow(), Lsn(10));
        acker.stored(second.commit);
        assert_eq!(*acked.borrow(), Lsn(20));
        // Now nothing is in flight: an item-less commit is confirmed at once.
        q.committed((Lsn(30), 3));
        assert_eq!(*acked.borrow(), Lsn(30));
        assert!(!q.has_work());
    }

    /// QA47 H1: waiting for every batch to be stored ends with the store task's failure (a batch that
    /// failed is never counted stored), never hangs.
    #[tokio::test]
    async fn waiting_for_the_store_ends_when_the_store_task_fails() {
        let (acked_tx, _acked_rx) = watch::channel(Lsn(0));
        let acker = Arc::new(Acker::new(acked_tx, Default::default()));
        let (tx, _rx) = mpsc::channel(4);
        let failed = AbortOnDrop(tokio::spawn(async {
            Err(Failure::Retry(anyhow!("ClickHouse refused the insert")))
        }));
        let mut q = BatchQueue::new(EncodedRows::default(), tx, failed, acker);
        q.push(&row());
        q.dispatch_with(false).await.unwrap();
        let waited = tokio::time::timeout(std::time::Duration::from_secs(10), q.stored_all()).await;
        assert!(
            matches!(waited, Ok(Err(Failure::Retry(_)))),
            "the failure, not a hang"
        );
    }

    /// A batch that closes inside a transaction says more of it follows (the store task keeps its INSERT
    /// open); the one that holds the commit, or one handed on to be stored before a look-up, does not.
    #[tokio::test]
    async fn a_batch_closed_inside_a_transaction_says_more_follows() {
        let (mut q, mut rx, _acked, _acker) = queue();
        q.push(&row());
        q.dispatch().await.unwrap();
        q.push(&row());
        q.dispatch_with(false).await.unwrap();
        q.push(&row());
        q.committed((Lsn(10), 1));
        q.dispatch().await.unwrap();
        let more: Vec<bool> = [
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
            rx.recv().await.unwrap(),
        ]
        .iter()
        .map(|b| b.more)
        .collect();
        assert_eq!(more, [true, false, false]);
        // Nothing left to send while an INSERT may be open: an empty batch ends it for a look-up of the
        // trail (which waits for nothing in flight) instead of the store task's idle end.
        q.push(&row());
        q.dispatch().await.unwrap();
        q.dispatch_with(false).await.unwrap();
        let open = rx.recv().await.unwrap();
        let end = rx.recv().await.unwrap();
        assert!(open.more && !end.more && end.count == 0);
    }
}
