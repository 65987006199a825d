//! The capture pipeline: replication reader → assembler → ClickHouse writer, with acknowledgement.
//!
//! Reading and writing are separate tasks joined by a bounded channel (bounded in messages and in bytes).
//! The reader keeps talking to Postgres (status updates on a timer and on request) even while the writer
//! waits on a slow or absent ClickHouse, so the walsender never times us out. The writer publishes the end
//! LSN of the last transaction whose items ClickHouse acknowledged; only that position is confirmed as
//! flushed, so Postgres keeps every change not yet stored. Status updates go out on the timer (and when the
//! server asks), not on every batch: one update per interval is what the walsender needs.

use anyhow::{anyhow, Context};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::audit::assembler::{Assembler, Step};
use crate::audit::context::ContextStore;
use crate::capture::pgoutput::{self, LogicalMessage};
use crate::capture::replication::{ReplicationConnection, ReplicationError, ReplicationFrame};
use crate::capture::setup::{self, SlotError};
use crate::capture::Lsn;
use crate::config::Config;
use crate::store::writer::{insert_batch, now_us, ItemRow};

/// Figures the API's /metrics exposes.
#[derive(Debug, Default)]
pub struct Metrics {
    pub items_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub batch_items_last: AtomicU64,
    pub insert_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub acked_lsn: AtomicU64,
    pub received_lsn: AtomicU64,
    pub server_wal_end: AtomicU64,
    /// Commit time (µs) of the last acknowledged transaction.
    pub last_commit_time_us: AtomicI64,
    /// When (µs) the reader last heard from Postgres.
    pub last_server_contact_us: AtomicI64,
}

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Start a new slot even though the store holds items from this source (accepting a gap).
    pub accept_gap: bool,
}

/// An error that ends the run (bad config, refused start, undecodable stream) versus one worth a reconnect.
#[derive(Debug)]
enum Failure {
    Fatal(anyhow::Error),
    Retry(anyhow::Error),
}

impl From<ReplicationError> for Failure {
    fn from(e: ReplicationError) -> Self {
        match &e {
            ReplicationError::Auth(_) => Failure::Fatal(e.into()),
            // 28xxx: authentication; 3D000: no such database; 42501: privilege; 42704: no such object (slot).
            ReplicationError::Server { code, .. }
                if code.starts_with("28")
                    || code == "3D000"
                    || code == "42501"
                    || code == "42704" =>
            {
                Failure::Fatal(e.into())
            }
            _ => Failure::Retry(e.into()),
        }
    }
}

/// A decoded message on its way to the writer, holding its share of the byte budget.
struct Envelope {
    msg: LogicalMessage,
    _budget: OwnedSemaphorePermit,
}

pub struct Pipeline {
    cfg: Arc<Config>,
    opts: RunOptions,
    pub metrics: Arc<Metrics>,
    ch: clickhouse::Client,
}

impl Pipeline {
    pub fn new(cfg: Arc<Config>, opts: RunOptions) -> Self {
        let ch = crate::store::client(&cfg.clickhouse);
        Pipeline {
            cfg,
            opts,
            metrics: Arc::new(Metrics::default()),
            ch,
        }
    }

    /// Run until `shutdown` turns true (then finish the batch, acknowledge, return Ok) or a fatal error.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let max_backoff = Duration::from_millis(self.cfg.capture.max_backoff_ms);
        let mut backoff = Duration::from_millis(250);
        let mut resume = Lsn(0);
        let mut migrated = false;
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            let started = Instant::now();
            let result = async {
                if !migrated {
                    crate::store::schema::migrate(&self.cfg.clickhouse)
                        .await
                        .map_err(|e| Failure::Retry(e.context("ClickHouse not ready")))?;
                    migrated = true;
                }
                self.session(&mut resume, shutdown.clone()).await
            }
            .await;
            match result {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(e)) => {
                    if *shutdown.borrow() {
                        return Ok(());
                    }
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = Duration::from_millis(250);
                    }
                    self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "capture interrupted; will reconnect");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }

    async fn session(
        &self,
        resume: &mut Lsn,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), Failure> {
        let cfg = &self.cfg;
        let params = cfg.pg_params().map_err(|e| Failure::Fatal(e.into()))?;
        let mut repl = ReplicationConnection::connect(&params).await?;
        let ident = repl.identify_system().await?;
        let source_id = cfg.capture.source_id.clone().unwrap_or_else(|| {
            format!(
                "{}/{}/{}",
                ident.system_id, params.dbname, cfg.postgres.slot
            )
        });
        let sql = setup::connect_sql(cfg).await.map_err(Failure::Retry)?;
        let (mappings, infos) = setup::build_mappings(cfg, &sql)
            .await
            .map_err(Failure::Fatal)?;
        setup::ensure_replica_identity(cfg, &sql, &infos)
            .await
            .map_err(Failure::Fatal)?;
        setup::ensure_publication(cfg, &sql)
            .await
            .map_err(Failure::Fatal)?;
        let stored = count_items_from(&self.ch, &source_id)
            .await
            .map_err(Failure::Retry)?;
        let slot_start =
            match setup::ensure_slot(cfg, &sql, &mut repl, stored, self.opts.accept_gap).await {
                Ok(l) => l,
                Err(e) => {
                    return Err(match e.downcast_ref::<SlotError>() {
                        Some(SlotError::InUse { .. }) => Failure::Retry(e),
                        Some(SlotError::Refuse(_)) => Failure::Fatal(e),
                        None => Failure::Retry(e),
                    })
                }
            };
        let start = (*resume).max(slot_start);
        repl.start_replication(&cfg.postgres.slot, start, &cfg.postgres.publication, true)
            .await?;
        tracing::info!(slot = %cfg.postgres.slot, start = %start, source_id = %source_id, server_version = repl.server_version.as_deref().unwrap_or("?"), "streaming");
        *resume = start;
        self.metrics.acked_lsn.store(start.0, Ordering::Relaxed);

        let (acked_tx, acked_rx) = watch::channel(start);
        let (tx, rx) = mpsc::channel::<Envelope>(cfg.capture.channel_capacity);
        let budget_total = cfg.capture.buffer_bytes.clamp(1, u32::MAX as usize);
        let budget = Arc::new(Semaphore::new(budget_total));
        let mut context = ContextStore::new(cfg);
        context.load(&sql).await.map_err(Failure::Fatal)?;
        let assembler = Assembler::new(
            source_id,
            mappings,
            context,
            cfg.attribution.max_pending_items,
        );
        let writer = Writer {
            cfg: self.cfg.clone(),
            ch: self.ch.clone(),
            sql,
            assembler,
            acked: acked_tx,
            metrics: self.metrics.clone(),
            shutdown: shutdown.clone(),
        };
        let mut writer_task = tokio::spawn(writer.run(rx));
        let reader = Reader {
            conn: repl,
            tx: Some(tx),
            budget,
            budget_total,
            acked: acked_rx.clone(),
            in_txn: false,
            forwarded_end: start,
            keepalive_end: start,
            received: start,
            reported: start,
            metrics: self.metrics.clone(),
            status_interval: Duration::from_millis(cfg.postgres.status_interval_ms),
        };
        let outcome = reader.run(shutdown, &mut writer_task).await;
        *resume = (*resume).max(*acked_rx.borrow());
        outcome
    }
}

async fn count_items_from(ch: &clickhouse::Client, source_id: &str) -> anyhow::Result<u64> {
    ch.query("SELECT count() FROM audit_items WHERE source_id = ?")
        .bind(source_id)
        .fetch_one::<u64>()
        .await
        .context("counting stored items of this source in ClickHouse")
}

struct Reader {
    conn: ReplicationConnection,
    tx: Option<mpsc::Sender<Envelope>>,
    budget: Arc<Semaphore>,
    budget_total: usize,
    acked: watch::Receiver<Lsn>,
    in_txn: bool,
    /// End of the last commit handed to the writer.
    forwarded_end: Lsn,
    /// Server's WAL position from the last keepalive.
    keepalive_end: Lsn,
    received: Lsn,
    reported: Lsn,
    metrics: Arc<Metrics>,
    status_interval: Duration,
}

type WriterTask = tokio::task::JoinHandle<Result<(), Failure>>;

impl Reader {
    /// The position safe to confirm: what ClickHouse has, or, when every forwarded transaction is stored and
    /// none is open, the server's own position (so an idle or filtered slot does not hold WAL).
    fn flush_position(&self, sending: bool) -> Lsn {
        let acked = *self.acked.borrow();
        let idle = !sending && !self.in_txn && acked >= self.forwarded_end;
        let pos = if idle {
            acked.max(self.keepalive_end)
        } else {
            acked
        };
        pos.max(self.reported)
    }

    async fn status(&mut self, sending: bool, reply: bool) -> Result<(), Failure> {
        let flush = self.flush_position(sending);
        let written = self.received.max(flush);
        self.conn.send_status(written, flush, reply).await?;
        self.reported = flush;
        self.metrics.acked_lsn.store(flush.0, Ordering::Relaxed);
        Ok(())
    }

    async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        writer: &mut WriterTask,
    ) -> Result<(), Failure> {
        let mut ticker = tokio::time::interval(self.status_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break Ok(()),
                res = &mut *writer => {
                    // The writer only stops on its own after an error.
                    break match res {
                        Ok(Err(f)) => Err(f),
                        Ok(Ok(())) => Err(Failure::Retry(anyhow!("writer stopped"))),
                        Err(e) => Err(Failure::Fatal(anyhow!("writer task failed: {e}"))),
                    };
                }
                frame = self.conn.next_frame() => {
                    let frame = match frame {
                        Ok(f) => f,
                        Err(e) => break Err(e.into()),
                    };
                    self.metrics.last_server_contact_us.store(now_us(), Ordering::Relaxed);
                    match frame {
                        ReplicationFrame::XLogData { wal_start, data, .. } => {
                            self.received = self.received.max(wal_start);
                            self.metrics.received_lsn.store(self.received.0, Ordering::Relaxed);
                            let size = data.len();
                            let msg = match pgoutput::decode(data) {
                                Ok(m) => m,
                                Err(e) => break Err(Failure::Fatal(anyhow!(e).context(format!("decoding the change at {wal_start}")))),
                            };
                            let commit_end = match &msg {
                                LogicalMessage::Begin(_) => { self.in_txn = true; None }
                                LogicalMessage::Commit(c) => Some(Lsn(c.end_lsn)),
                                _ => None,
                            };
                            if let Err(f) = self.forward(msg, size, &mut ticker, writer).await {
                                break Err(f);
                            }
                            if let Some(end) = commit_end {
                                self.in_txn = false;
                                self.forwarded_end = end;
                            }
                        }
                        ReplicationFrame::Keepalive { wal_end, reply_requested } => {
                            self.keepalive_end = self.keepalive_end.max(wal_end);
                            self.metrics.server_wal_end.store(wal_end.0, Ordering::Relaxed);
                            if reply_requested {
                                if let Err(f) = self.status(false, false).await { break Err(f); }
                            }
                        }
                        ReplicationFrame::End => break Err(Failure::Retry(anyhow!("Postgres ended the replication stream"))),
                    }
                }
                _ = ticker.tick() => {
                    if let Err(f) = self.status(false, false).await { break Err(f); }
                }
            }
        };
        match result {
            Ok(()) => {
                // Graceful stop: let the writer drain and store what it has, then confirm it.
                drop(self.tx.take());
                let res = writer.await;
                let writer_result = match res {
                    Ok(r) => r,
                    Err(e) => Err(Failure::Fatal(anyhow!("writer task failed: {e}"))),
                };
                let _ = self.status(false, false).await;
                let acked = *self.acked.borrow();
                tracing::info!(confirmed = %acked, "stopped; stored items are acknowledged");
                let _ = self.conn.close().await;
                writer_result
            }
            Err(f) => {
                writer.abort();
                Err(f)
            }
        }
    }

    /// Hand a message to the writer, waiting for room while still answering Postgres on schedule.
    async fn forward(
        &mut self,
        msg: LogicalMessage,
        size: usize,
        ticker: &mut tokio::time::Interval,
        writer: &mut WriterTask,
    ) -> Result<(), Failure> {
        let Some(tx) = self.tx.clone() else {
            return Ok(());
        };
        let budget = self.budget.clone();
        // A message larger than the whole budget takes all of it rather than waiting forever.
        let cost = size.clamp(1, self.budget_total) as u32;
        let send = async move {
            let permit = budget
                .acquire_many_owned(cost)
                .await
                .map_err(|_| anyhow!("buffer closed"))?;
            tx.send(Envelope {
                msg,
                _budget: permit,
            })
            .await
            .map_err(|_| anyhow!("writer stopped"))
        };
        tokio::pin!(send);
        loop {
            tokio::select! {
                r = &mut send => return r.map_err(Failure::Retry),
                res = &mut *writer => {
                    return Err(match res {
                        Ok(Err(f)) => f,
                        Ok(Ok(())) => Failure::Retry(anyhow!("writer stopped")),
                        Err(e) => Failure::Fatal(anyhow!("writer task failed: {e}")),
                    });
                }
                _ = ticker.tick() => self.status(true, false).await?,
            }
        }
    }
}

struct Writer {
    cfg: Arc<Config>,
    ch: clickhouse::Client,
    sql: tokio_postgres::Client,
    assembler: Assembler,
    acked: watch::Sender<Lsn>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Envelope>) -> Result<(), Failure> {
        let max_items = self.cfg.capture.batch_max_items;
        let max_bytes = self.cfg.capture.batch_max_bytes;
        let max_delay = Duration::from_millis(self.cfg.capture.batch_max_delay_ms);
        let mut batch: Vec<ItemRow> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut deadline: Option<tokio::time::Instant> = None;
        // Last commit seen, and its commit time, not yet confirmed.
        let mut pending_commit: Option<(Lsn, i64)> = None;
        let mut items = Vec::new();
        loop {
            let env = tokio::select! {
                env = rx.recv() => env,
                _ = sleep_until(deadline) => {
                    self.flush(&mut batch, &mut pending_commit).await?;
                    batch_bytes = 0;
                    deadline = None;
                    continue;
                }
            };
            let Some(env) = env else {
                // Channel closed: graceful stop.
                self.flush(&mut batch, &mut pending_commit).await?;
                return Ok(());
            };
            if let LogicalMessage::Relation(r) = &env.msg {
                let missing = self.assembler.unknown_types(r);
                if !missing.is_empty() {
                    let rows = setup::fetch_types(&self.sql, &missing)
                        .await
                        .map_err(Failure::Retry)?;
                    self.assembler.catalog.learn(&rows);
                }
            }
            let step = self
                .assembler
                .apply(env.msg, &mut items)
                .map_err(|e| Failure::Fatal(anyhow!(e)))?;
            drop(env._budget);
            let now = now_us();
            for item in items.drain(..) {
                let row = ItemRow::from_item(item, now);
                batch_bytes += row_size(&row);
                batch.push(row);
            }
            if !batch.is_empty() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + max_delay);
            }
            if let Step::Committed(c) = step {
                pending_commit = Some((Lsn(c.end_lsn), c.commit_time_us));
                if batch.is_empty() {
                    self.ack(&mut pending_commit);
                }
            }
            if batch.len() >= max_items || batch_bytes >= max_bytes {
                self.flush(&mut batch, &mut pending_commit).await?;
                batch_bytes = 0;
                deadline = None;
            }
        }
    }

    fn ack(&self, pending: &mut Option<(Lsn, i64)>) {
        if let Some((lsn, t)) = pending.take() {
            self.metrics.last_commit_time_us.store(t, Ordering::Relaxed);
            self.acked.send_replace(lsn);
        }
    }

    /// Insert the batch, retrying until ClickHouse takes it; then confirm the last commit seen.
    async fn flush(
        &mut self,
        batch: &mut Vec<ItemRow>,
        pending: &mut Option<(Lsn, i64)>,
    ) -> Result<(), Failure> {
        if batch.is_empty() {
            self.ack(pending);
            return Ok(());
        }
        let timeout = crate::store::timeout(&self.cfg.clickhouse);
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            let r = tokio::time::timeout(timeout, insert_batch(&self.ch, batch)).await;
            let err = match r {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("insert timed out after {timeout:?}"),
            };
            attempts += 1;
            self.metrics.insert_errors.fetch_add(1, Ordering::Relaxed);
            if *self.shutdown.borrow() && attempts >= 3 {
                return Err(Failure::Retry(anyhow!(
                    "stopping while ClickHouse refuses inserts ({err}); {} items not stored stay unconfirmed in the slot and are read again at the next start",
                    batch.len()
                )));
            }
            tracing::warn!(error = %err, items = batch.len(), attempt = attempts, "ClickHouse insert failed; retrying (nothing is confirmed to Postgres meanwhile)");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.metrics
            .items_written
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.metrics.batches_written.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .batch_items_last
            .store(batch.len() as u64, Ordering::Relaxed);
        tracing::debug!(items = batch.len(), "batch stored");
        batch.clear();
        self.ack(pending);
        Ok(())
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn row_size(r: &ItemRow) -> usize {
    r.diff.len()
        + r.resource_display.len()
        + r.changed_fields.iter().map(String::len).sum::<usize>()
        + 512
}
