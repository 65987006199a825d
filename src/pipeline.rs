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
use crate::store::writer::{insert_encoded, now_us, EncodedRows, ItemRow};

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

/// Decoded messages on their way to the writer, in stream order, holding their share of the byte budget.
/// Handing them over in groups rather than one by one spares a cross-thread wake-up per change.
struct Envelope {
    msgs: Vec<LogicalMessage>,
    _budget: OwnedSemaphorePermit,
}

/// At most this many decoded messages go to the writer in one envelope.
const ENVELOPE_MAX_MSGS: usize = 1024;

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
        // channel_capacity bounds the decoded messages waiting for the writer: envelopes of up to
        // `per_envelope` messages, in as many channel slots as make up the capacity.
        let capacity = cfg.capture.channel_capacity.max(1);
        let per_envelope = ENVELOPE_MAX_MSGS.min(capacity);
        let (tx, rx) = mpsc::channel::<Envelope>(capacity.div_ceil(per_envelope));
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
        let acker = Arc::new(Acker {
            acked: acked_tx,
            metrics: self.metrics.clone(),
            in_flight: Default::default(),
        });
        let writer = Writer {
            cfg: self.cfg.clone(),
            ch: self.ch.clone(),
            sql,
            assembler,
            acker,
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
            txn_open: false,
            out: Vec::new(),
            out_bytes: 0,
            out_commit_end: None,
            out_max_msgs: per_envelope,
            out_max_bytes: (budget_total / 8).clamp(1, 1 << 20),
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
    /// A Begin was decoded whose Commit was not yet.
    txn_open: bool,
    /// Decoded messages not yet handed to the writer, their wire size, and the end of the last Commit among them.
    out: Vec<LogicalMessage>,
    out_bytes: usize,
    out_commit_end: Option<Lsn>,
    out_max_msgs: usize,
    out_max_bytes: usize,
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
        let idle = !sending && self.out.is_empty() && !self.txn_open && acked >= self.forwarded_end;
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
            // Decoded messages are grouped while more frames are already buffered, and handed over as soon
            // as reading would have to wait for the socket (whatever kind of frame came last).
            if !self.out.is_empty() && !self.conn.frame_ready() {
                if let Err(f) = self.forward(&mut ticker, writer).await {
                    break Err(f);
                }
            }
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
                            match &msg {
                                LogicalMessage::Begin(_) => self.txn_open = true,
                                LogicalMessage::Commit(c) => {
                                    self.txn_open = false;
                                    self.out_commit_end = Some(Lsn(c.end_lsn));
                                }
                                _ => {}
                            }
                            self.out.push(msg);
                            self.out_bytes += size;
                            if self.out.len() >= self.out_max_msgs || self.out_bytes >= self.out_max_bytes {
                                if let Err(f) = self.forward(&mut ticker, writer).await {
                                    break Err(f);
                                }
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

    /// Hand the decoded messages to the writer, waiting for room while still answering Postgres on schedule.
    async fn forward(
        &mut self,
        ticker: &mut tokio::time::Interval,
        writer: &mut WriterTask,
    ) -> Result<(), Failure> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(tx) = self.tx.clone() else {
            return Ok(());
        };
        let msgs = std::mem::take(&mut self.out);
        let size = std::mem::take(&mut self.out_bytes);
        let commit_end = self.out_commit_end.take();
        let budget = self.budget.clone();
        // A group larger than the whole budget takes all of it rather than waiting forever.
        let cost = size.clamp(1, self.budget_total) as u32;
        let send = async move {
            let permit = budget
                .acquire_many_owned(cost)
                .await
                .map_err(|_| anyhow!("buffer closed"))?;
            tx.send(Envelope {
                msgs,
                _budget: permit,
            })
            .await
            .map_err(|_| anyhow!("writer stopped"))
        };
        tokio::pin!(send);
        loop {
            tokio::select! {
                r = &mut send => {
                    r.map_err(Failure::Retry)?;
                    if let Some(end) = commit_end {
                        self.forwarded_end = end;
                    }
                    return Ok(());
                }
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

/// Items of one or more transactions, encoded, and the commit to confirm once ClickHouse has them.
struct Batch {
    rows: bytes::Bytes,
    count: usize,
    commit: Option<(Lsn, i64)>,
}

/// Confirms positions to the reader. Shared by the writer (transactions without items, when nothing is
/// in flight) and the inserter (after each stored batch); `in_flight` keeps their confirmations in order.
struct Acker {
    acked: watch::Sender<Lsn>,
    metrics: Arc<Metrics>,
    /// Batches handed to the inserter and not yet confirmed.
    in_flight: std::sync::atomic::AtomicUsize,
}

impl Acker {
    fn ack(&self, commit: Option<(Lsn, i64)>) {
        if let Some((lsn, t)) = commit {
            self.metrics.last_commit_time_us.store(t, Ordering::Relaxed);
            self.acked.send_replace(lsn);
        }
    }
}

/// Aborts the task when dropped, so an aborted writer takes its inserter with it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Turns decoded messages into encoded items and cuts them into batches. Inserting is a separate task
/// (the inserter) so the next batch is assembled while ClickHouse takes the previous one.
struct Writer {
    cfg: Arc<Config>,
    ch: clickhouse::Client,
    sql: tokio_postgres::Client,
    assembler: Assembler,
    acker: Arc<Acker>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Envelope>) -> Result<(), Failure> {
        let max_items = self.cfg.capture.batch_max_items;
        let max_bytes = self.cfg.capture.batch_max_bytes;
        let max_delay = Duration::from_millis(self.cfg.capture.batch_max_delay_ms);
        // One batch queued while another is being inserted: assembling never waits on ClickHouse unless
        // ClickHouse falls two batches behind, and memory stays bounded by about three batches.
        let (batch_tx, batch_rx) = mpsc::channel::<Batch>(1);
        let inserter = Inserter {
            cfg: self.cfg.clone(),
            ch: self.ch.clone(),
            acker: self.acker.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.clone(),
        };
        let mut out = Outgoing {
            batch: EncodedRows::with_batch_bytes(max_bytes),
            pending_commit: None,
            tx: batch_tx,
            inserter: AbortOnDrop(tokio::spawn(inserter.run(batch_rx))),
            acker: self.acker.clone(),
        };
        let mut deadline: Option<tokio::time::Instant> = None;
        let mut items = Vec::new();
        loop {
            let env = tokio::select! {
                env = rx.recv() => env,
                _ = sleep_until(deadline) => {
                    deadline = None;
                    out.dispatch().await?;
                    continue;
                }
            };
            let Some(env) = env else {
                // Channel closed: graceful stop. Store what is assembled, then wait for the inserter.
                return out.finish().await;
            };
            let now = now_us();
            for msg in env.msgs {
                if let LogicalMessage::Relation(r) = &msg {
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
                    .apply(msg, &mut items)
                    .map_err(|e| Failure::Fatal(anyhow!(e)))?;
                for item in items.drain(..) {
                    out.batch.push(&ItemRow::from_item(item, now));
                }
                if let Step::Committed(c) = step {
                    out.pending_commit = Some((Lsn(c.end_lsn), c.commit_time_us));
                    out.ack_if_nothing_waits();
                }
                if (!out.batch.is_empty() || out.pending_commit.is_some()) && deadline.is_none() {
                    deadline = Some(tokio::time::Instant::now() + max_delay);
                }
                if out.batch.len() >= max_items || out.batch.bytes() >= max_bytes {
                    deadline = None;
                    out.dispatch().await?;
                }
            }
        }
    }
}

/// What the writer has assembled and not yet handed on, and where it goes.
struct Outgoing {
    batch: EncodedRows,
    /// Last commit seen whose items are all in `batch` or already handed on, not yet confirmed.
    pending_commit: Option<(Lsn, i64)>,
    tx: mpsc::Sender<Batch>,
    inserter: AbortOnDrop<Result<(), Failure>>,
    acker: Arc<Acker>,
}

impl Outgoing {
    /// Confirm the pending commit at once when no item of it (or before it) waits for ClickHouse.
    fn ack_if_nothing_waits(&mut self) -> bool {
        if self.batch.is_empty() && self.acker.in_flight.load(Ordering::Acquire) == 0 {
            self.acker.ack(self.pending_commit.take());
            return true;
        }
        false
    }

    /// Hand the batch (and the commit it completes) to the inserter.
    async fn dispatch(&mut self) -> Result<(), Failure> {
        if self.batch.is_empty() && (self.pending_commit.is_none() || self.ack_if_nothing_waits()) {
            return Ok(());
        }
        let (rows, count) = self.batch.take();
        self.acker.in_flight.fetch_add(1, Ordering::AcqRel);
        let b = Batch {
            rows,
            count,
            commit: self.pending_commit.take(),
        };
        if self.tx.send(b).await.is_err() {
            // The inserter stopped: it only does so with an error.
            join_inserter(&mut self.inserter).await?;
            return Err(Failure::Retry(anyhow!("inserter stopped")));
        }
        Ok(())
    }

    /// Graceful stop: store what is assembled, then wait for the inserter to store everything.
    async fn finish(mut self) -> Result<(), Failure> {
        self.dispatch().await?;
        let Outgoing {
            tx, mut inserter, ..
        } = self;
        drop(tx);
        join_inserter(&mut inserter).await
    }
}

async fn join_inserter(task: &mut AbortOnDrop<Result<(), Failure>>) -> Result<(), Failure> {
    match (&mut task.0).await {
        Ok(r) => r,
        Err(e) => Err(Failure::Fatal(anyhow!("inserter task failed: {e}"))),
    }
}

/// Inserts batches in order, retrying each until ClickHouse takes it, and confirms its commit after.
struct Inserter {
    cfg: Arc<Config>,
    ch: clickhouse::Client,
    acker: Arc<Acker>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
}

impl Inserter {
    async fn run(self, mut rx: mpsc::Receiver<Batch>) -> Result<(), Failure> {
        while let Some(b) = rx.recv().await {
            if b.count > 0 {
                self.store(&b).await?;
            }
            self.acker.ack(b.commit);
            self.acker.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        Ok(())
    }

    async fn store(&self, b: &Batch) -> Result<(), Failure> {
        let timeout = crate::store::timeout(&self.cfg.clickhouse);
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            let r = tokio::time::timeout(timeout, insert_encoded(&self.ch, &b.rows)).await;
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
                    b.count
                )));
            }
            tracing::warn!(error = %err, items = b.count, attempt = attempts, "ClickHouse insert failed; retrying (nothing is confirmed to Postgres meanwhile)");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
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
