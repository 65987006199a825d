//! The WAL reader task: reads the replication socket, decodes frames, and hands decoded messages over in
//! groups to the assemble task, through a channel bounded in messages and in bytes.
//!
//! It never waits on ClickHouse, so it keeps answering Postgres (status updates on a timer and whenever the
//! server asks) while an insert is slow or ClickHouse is down, and the walsender does not time us out. It
//! confirms only what the acknowledgement says ClickHouse holds.

use anyhow::anyhow;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

mod membership;
mod watchdog;

pub use watchdog::{Acceptance, UnmappedShapes, Watchdog};

use super::retry::Failure;
use crate::audit::item::Gap;
use crate::capture::catalog::{self, TypeRow};
use crate::capture::metrics::CaptureMetrics;
use crate::capture::pgoutput::{self, Begin, Commit, LogicalMessage, StreamPart};
use crate::capture::replication::{ReplicationConnection, ReplicationFrame};
use crate::capture::spill::{Replay, Spill, SpillError};
use crate::capture::Lsn;
use crate::pipeline::store::found_gap;
use crate::store::row::now_us;

/// Decoded messages on their way to the assemble task, in stream order, with the type rows their Relations
/// need, holding their share of the byte budget. Handing them over in groups rather than one by one spares
/// a cross-thread wake-up per change.
pub struct Delivery {
    pub msgs: Vec<LogicalMessage>,
    pub types: Vec<TypeRow>,
    pub _budget: OwnedSemaphorePermit,
}

/// At most this many decoded messages go to the assemble task in one delivery.
pub const DELIVERY_MAX_MSGS: usize = 1024;

pub struct WalReader {
    pub conn: ReplicationConnection,
    /// Catalog reads for the types of columns the stream introduces.
    pub sql: tokio_postgres::Client,
    pub tx: Option<mpsc::Sender<Delivery>>,
    pub budget: Arc<Semaphore>,
    pub budget_total: usize,
    pub acked: watch::Receiver<Lsn>,
    /// A Begin was decoded whose Commit was not yet.
    pub txn_open: bool,
    /// The commit position of the transaction being decoded (its Begin's).
    pub txn_lsn: u64,
    /// The transaction being read (see `Watchdog::resolve_partition`).
    pub txn_xid: u32,
    /// Where its Begin is in `out`, while it is there (see `drain_before_txn`).
    pub txn_begin_at: Option<usize>,
    /// Decoded messages not yet handed to the assembler, their wire size, and the end of the last Commit among them.
    pub out: Vec<LogicalMessage>,
    pub out_bytes: usize,
    pub out_commit_end: Option<Lsn>,
    pub out_max_msgs: usize,
    pub out_max_bytes: usize,
    /// Rows of `pg_type` fetched for the types in `out`, and every type fetched this session.
    pub out_types: Vec<TypeRow>,
    pub known_types: HashSet<u32>,
    /// End of the last commit handed to the assembler.
    pub forwarded_end: Lsn,
    /// Server's WAL position from the last keepalive.
    pub keepalive_end: Lsn,
    pub received: Lsn,
    pub reported: Lsn,
    /// The server's send time of the last XLogData frame (its clock), and when it arrived (ours).
    pub sent_at_us: i64,
    pub data_at: std::time::Instant,
    pub metrics: Arc<CaptureMetrics>,
    pub status_interval: Duration,
    pub watchdog: Watchdog,
    /// Streamed transactions in progress, when the stream was started with streaming on.
    pub spill: Option<Spill>,
    /// The transaction whose stream block is open.
    pub stream_block: Option<u32>,
}

pub type AssembleHandle = tokio::task::JoinHandle<Result<(), Failure>>;

/// Doubts as one line: "(1) …; (2) …".
fn numbered(doubts: &[String]) -> String {
    doubts
        .iter()
        .enumerate()
        .map(|(i, d)| format!("({}) {d}", i + 1))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why the assemble task ended while the reader waited on it.
fn assembler_ended(res: Result<Result<(), Failure>, tokio::task::JoinError>) -> Failure {
    match res {
        Ok(Err(f)) => f,
        Ok(Ok(())) => Failure::Retry(anyhow!("assembler stopped")),
        Err(e) => Failure::Fatal(anyhow!("assembler task failed: {e}")),
    }
}

/// A spill that cannot go on is retried from Postgres: after a reconnect it streams open transactions again
/// from their start (an altered or missing spill is never used).
fn spill_failure(e: SpillError) -> Failure {
    Failure::Retry(anyhow!(e))
}

impl WalReader {
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
        // Never past what the store says capture may confirm (see `CaptureMetrics::confirm_bound`).
        let bound = Lsn(self.metrics.confirm_bound.load(Ordering::Acquire));
        pos.min(bound).max(self.reported)
    }

    async fn status(&mut self, sending: bool, reply: bool) -> Result<(), Failure> {
        let flush = self.flush_position(sending);
        let written = self.received.max(flush);
        self.conn.send_status(written, flush, reply).await?;
        self.reported = flush;
        self.metrics.acked_lsn.store(flush.0, Ordering::Relaxed);
        Ok(())
    }

    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        assembler: &mut AssembleHandle,
    ) -> Result<(), Failure> {
        let mut ticker = tokio::time::interval(self.status_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The partitions there are now, so a change decoded after its partition was detached still finds
        // its table.
        let preload = self.watchdog.learn_partitions(&self.sql).await;
        let result = if let Err(f) = preload {
            Err(f)
        } else {
            loop {
                // Decoded messages are grouped while more frames are already buffered, and handed over as soon
                // as reading would have to wait for the socket (whatever kind of frame came last).
                if !self.out.is_empty() && !self.conn.frame_ready() {
                    if let Err(f) = self.forward(&mut ticker, assembler).await {
                        break Err(f);
                    }
                }
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break Ok(()),
                    res = &mut *assembler => {
                        // The assembler only stops on its own after an error.
                        break Err(assembler_ended(res));
                    }
                    frame = self.conn.next_frame() => {
                        let frame = match frame {
                            Ok(f) => f,
                            Err(e) => break Err(e.into()),
                        };
                        self.metrics.last_server_contact_us.store(now_us(), Ordering::Relaxed);
                        match frame {
                            ReplicationFrame::XLogData { wal_start, send_time_us, data, .. } => {
                                self.sent_at_us = send_time_us;
                                self.data_at = std::time::Instant::now();
                                self.received = self.received.max(wal_start);
                                self.metrics.received_lsn.store(self.received.0, Ordering::Relaxed);
                                if let Err(f) = self.on_data(data, wal_start, &mut ticker, assembler).await {
                                    break Err(f);
                                }
                            }
                            ReplicationFrame::Keepalive { wal_end, reply_requested } => {
                                self.keepalive_end = self.keepalive_end.max(wal_end);
                                self.metrics.server_wal_end.store(wal_end.0, Ordering::Relaxed);
                                // No data for a second between transactions: nothing is behind, whatever the
                                // last one's lag was (the gauge must not keep a backlog's figure while idle).
                                if !self.txn_open && self.data_at.elapsed() >= Duration::from_secs(1) {
                                    self.metrics.stream_lag_us.store(0, Ordering::Relaxed);
                                }
                                if reply_requested {
                                    if let Err(f) = self.status(false, false).await { break Err(f); }
                                }
                            }
                            ReplicationFrame::End => break Err(Failure::Retry(anyhow!("Postgres ended the replication stream"))),
                        }
                    }
                    _ = ticker.tick() => {
                        if let Err(f) = self.status(false, false).await { break Err(f); }
                        if let Err(f) = self.watchdog.look(&self.sql, &self.metrics).await { break Err(f); }
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                // Graceful stop: let the assembler drain and store what it has, then confirm it.
                drop(self.tx.take());
                let res = assembler.await;
                let assembler_result = match res {
                    Ok(r) => r,
                    Err(e) => Err(Failure::Fatal(anyhow!("assembler task failed: {e}"))),
                };
                let _ = self.status(false, false).await;
                let acked = *self.acked.borrow();
                tracing::info!(confirmed = %acked, "stopped; stored items are acknowledged");
                let _ = self.conn.close().await;
                assembler_result
            }
            // Postgres stops the stream at the first change it cannot decode without the publication. Every
            // transaction it sent whole before that committed before the drop: stored first, so that a
            // stretch moved past from the confirmed position on (--accept-gap) holds only what came after it
            // (QA39 M2). When they cannot be stored, the slot is not moved this time.
            Err(Failure::Fatal(e))
                if crate::pipeline::retry::missing_publication(&e, &self.watchdog.publication) =>
            {
                match self.store_sent(assembler).await {
                    Ok(()) => Err(Failure::Fatal(e)),
                    Err(why) => {
                        assembler.abort();
                        Err(Failure::Retry(e.context(format!(
                            "the transactions Postgres sent before it could not be stored: {why:#}"
                        ))))
                    }
                }
            }
            Err(f) => {
                assembler.abort();
                Err(f)
            }
        }
    }

    /// The whole transactions received and not yet stored go to the store, the stream being over: what the
    /// assembler holds of one still open is left, as at a graceful stop.
    async fn store_sent(&mut self, assembler: &mut AssembleHandle) -> anyhow::Result<()> {
        if let Some(at) = self.txn_begin_at.take() {
            self.out.truncate(at);
        }
        let stored = async {
            if let Some(send) = self.take_delivery() {
                send.await?;
            }
            drop(self.tx.take());
            match (&mut *assembler).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(Failure::Fatal(e) | Failure::Retry(e))) => Err(e),
                Err(e) => Err(anyhow!("assembler task failed: {e}")),
            }
        };
        // ClickHouse unreachable: the slot stays, and the next session meets the same change.
        tokio::time::timeout(Duration::from_secs(60), stored)
            .await
            .map_err(|_| anyhow!("ClickHouse did not take them within a minute"))?
    }

    /// One XLogData payload: a message of the stream, or of a streamed transaction's framing.
    async fn on_data(
        &mut self,
        data: bytes::Bytes,
        wal_start: Lsn,
        ticker: &mut tokio::time::Interval,
        assembler: &mut AssembleHandle,
    ) -> Result<(), Failure> {
        let bad = |e: pgoutput::DecodeError| {
            Failure::Fatal(anyhow!(e).context(format!("decoding the change at {wal_start}")))
        };
        if let Some(spill) = self.spill.as_mut() {
            match pgoutput::stream_part(&data, self.stream_block.is_some()).map_err(bad)? {
                StreamPart::Plain => {}
                StreamPart::Start { xid, first } => {
                    spill.start(xid, first).map_err(spill_failure)?;
                    self.stream_block = Some(xid);
                    return Ok(());
                }
                StreamPart::Stop => {
                    spill.update_held();
                    self.stream_block = None;
                    return Ok(());
                }
                StreamPart::Change { xid, tag, body } => {
                    let top = self.stream_block.unwrap_or_default();
                    return spill.append(top, xid, tag, &body).map_err(spill_failure);
                }
                StreamPart::Abort { xid, subxid } => {
                    return spill.abort(xid, subxid).map_err(spill_failure);
                }
                StreamPart::Commit { xid, commit } => {
                    let replay = spill.finish(xid).map_err(spill_failure)?;
                    return self.replay(xid, commit, replay, ticker, assembler).await;
                }
            }
        }
        let size = data.len();
        let msg = pgoutput::decode(data).map_err(bad)?;
        self.on_message(msg, size, ticker, assembler).await
    }

    /// A streamed transaction committed: its changes go on as one ordinary transaction would have, so
    /// items, ids and chains are the same whether Postgres streamed it or sent it at commit.
    async fn replay(
        &mut self,
        xid: u32,
        commit: Commit,
        mut replay: Replay,
        ticker: &mut tokio::time::Interval,
        assembler: &mut AssembleHandle,
    ) -> Result<(), Failure> {
        let begin = Begin {
            final_lsn: commit.commit_lsn,
            commit_time_us: commit.commit_time_us,
            xid,
        };
        self.on_message(LogicalMessage::Begin(begin), 0, ticker, assembler)
            .await?;
        while let Some(m) = replay.next_message().map_err(spill_failure)? {
            let size = m.len();
            let msg = pgoutput::decode(m).map_err(|e| {
                Failure::Fatal(anyhow!(e).context(format!(
                    "decoding a change of streamed transaction {xid} (commit {})",
                    Lsn(commit.commit_lsn)
                )))
            })?;
            self.on_message(msg, size, ticker, assembler).await?;
        }
        self.on_message(LogicalMessage::Commit(commit), 0, ticker, assembler)
            .await
    }

    async fn on_message(
        &mut self,
        mut msg: LogicalMessage,
        size: usize,
        ticker: &mut tokio::time::Interval,
        assembler: &mut AssembleHandle,
    ) -> Result<(), Failure> {
        // A transaction in doubt goes no further than its doubt: nothing from there on reaches the assembler
        // (which would store a large transaction's items before its commit, and feeds the attribution
        // tables' copies whatever a relation's mapping), and only its Relations are still read, so that the
        // stop at its commit names every doubt in it.
        if !self.watchdog.doubts.is_empty()
            && !matches!(msg, LogicalMessage::Relation(_) | LogicalMessage::Commit(_))
        {
            return Ok(());
        }
        if let LogicalMessage::Relation(r) = &mut msg {
            // The catalog is read below as of this transaction's commit at least: read before the
            // committing backend made it visible, it would show the state before it (a partition still under
            // the table it was moved from in this very transaction). Visible in microseconds, but a loaded
            // machine can hold that backend off the CPU for long; never read stale.
            let mut waited = Duration::ZERO;
            let mut pause = Duration::from_millis(1);
            while catalog::in_progress(&self.sql, self.txn_xid)
                .await
                .map_err(Failure::Retry)?
            {
                if waited >= Duration::from_secs(10) {
                    return Err(Failure::Retry(anyhow!(
                        "transaction {} (commit {}) was decoded but is still not visible to other sessions \
                         after {waited:?}: its catalog changes cannot be read yet. If waltrail's replication \
                         connection is a synchronous standby (synchronous_standby_names lists it, or '*'), \
                         that transaction waits for waltrail while waltrail waits for it: take waltrail out of \
                         synchronous_standby_names",
                        self.txn_xid,
                        Lsn(self.txn_lsn)
                    )));
                }
                tokio::time::sleep(pause).await;
                waited += pause;
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            let held = match self
                .watchdog
                .resolve_partition(&self.sql, r, self.txn_lsn, self.txn_xid)
                .await
            {
                Ok(()) => {
                    self.watchdog
                        .redaction_holds(&self.sql, r, self.txn_lsn)
                        .await
                }
                Err(f) => Err(f),
            };
            if let Err(Failure::Fatal(e)) = held {
                // After a transaction taken on the operator's word, what came before this one is stored and
                // confirmed first: the next start must begin here, not take that one again and stop here
                // again.
                if self.watchdog.accept.taken.is_some() {
                    self.drain_before_txn(ticker, assembler).await?;
                }
                // Doubts already found in this transaction are said too: once the cause is fixed, the
                // operator's --accept-columns takes them with it.
                let doubts = std::mem::take(&mut self.watchdog.doubts);
                if doubts.is_empty() {
                    return Err(Failure::Fatal(e));
                }
                return Err(Failure::Fatal(e.context(format!(
                    "the same transaction also holds what capture cannot prove, which --accept-columns would \
                     take with it: {}",
                    numbered(&doubts)
                ))));
            }
            held?;
            if !self.watchdog.doubts.is_empty() {
                return Ok(());
            }
            self.watchdog.identity_not_full(&self.sql, r).await?;
            self.learn_types(r).await?;
        }
        match &msg {
            LogicalMessage::Begin(b) => {
                self.watchdog.doubts.clear();
                self.txn_begin_at = Some(self.out.len());
                self.txn_open = true;
                self.txn_lsn = b.final_lsn;
                self.txn_xid = b.xid;
            }
            LogicalMessage::Commit(c) => {
                if !self.watchdog.doubts.is_empty() {
                    let doubts = std::mem::take(&mut self.watchdog.doubts);
                    if self.watchdog.accept.taken.is_some() {
                        self.drain_before_txn(ticker, assembler).await?;
                    }
                    return Err(Failure::Fatal(anyhow!(
                        "the transaction committed at {} holds {} change(s) capture cannot prove safe to store, \
                         so nothing of it is confirmed (it waits in the replication slot) and nothing of it from \
                         the first of them on is stored: {}. Restart once with `waltrail run --accept-columns` \
                         only if every one of them is as said: it takes this whole transaction",
                        Lsn(self.txn_lsn),
                        doubts.len(),
                        numbered(&doubts)
                    )));
                }
                self.txn_open = false;
                self.out_commit_end = Some(Lsn(c.end_lsn));
                self.metrics.stream_lag_us.store(
                    self.sent_at_us.saturating_sub(c.commit_time_us),
                    Ordering::Relaxed,
                );
            }
            _ => {}
        }
        self.out.push(msg);
        self.out_bytes += size;
        if self.out.len() >= self.out_max_msgs || self.out_bytes >= self.out_max_bytes {
            self.forward(ticker, assembler).await?;
        }
        Ok(())
    }

    /// Look up the column types of a Relation not yet seen this session, so the assembler can render their
    /// values (enums, domains, arrays of them); the rows travel with the Relation to the assemble task.
    async fn learn_types(
        &mut self,
        rel: &crate::capture::pgoutput::Relation,
    ) -> Result<(), Failure> {
        let mut new: Vec<u32> = rel
            .columns
            .iter()
            .map(|c| c.type_oid)
            .filter(|o| !self.known_types.contains(o))
            .collect();
        new.sort_unstable();
        new.dedup();
        if new.is_empty() {
            return Ok(());
        }
        let rows = catalog::fetch_types(&self.sql, &new)
            .await
            .map_err(Failure::Retry)?;
        // A type dropped since the change was written (a migration that retyped the column and dropped
        // its enum or domain) cannot be read back: its values are shown as Postgres's text, and said so
        // (QA41 M2).
        for oid in &new {
            if rows.iter().all(|r| r.oid != *oid)
                && crate::audit::value::builtin_kind(*oid).is_none()
            {
                let columns: Vec<&str> = rel
                    .columns
                    .iter()
                    .filter(|c| c.type_oid == *oid)
                    .map(|c| c.name.as_str())
                    .collect();
                tracing::warn!(
                    table = %format!("{}.{}", rel.namespace, rel.name),
                    columns = %columns.join(", "),
                    type_oid = oid,
                    "a column's type is gone from the catalog (dropped since these changes were written): its values are stored as Postgres's text, not as the type would render them"
                );
            }
        }
        self.known_types.extend(new);
        self.known_types.extend(rows.iter().map(|r| r.oid));
        self.out_types.extend(rows);
        Ok(())
    }

    /// Hand the decoded messages to the assembler, waiting for room while still answering Postgres on schedule.
    /// Store and confirm everything before the transaction being read (left out), then return: that
    /// transaction is not stored.
    async fn drain_before_txn(
        &mut self,
        ticker: &mut tokio::time::Interval,
        assembler: &mut AssembleHandle,
    ) -> Result<(), Failure> {
        if let Some(at) = self.txn_begin_at.take() {
            self.out.truncate(at);
        }
        self.forward(ticker, assembler).await?;
        let target = self.forwarded_end;
        // Stored, and reported as stored (what capture may confirm rises with the source's report).
        while *self.acked.borrow() < target
            || Lsn(self.metrics.confirm_bound.load(Ordering::Acquire)) < target
        {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                res = &mut *assembler => return Err(assembler_ended(res)),
                _ = ticker.tick() => {
                    self.status(true, false).await?;
                    // Held back by the store, capture still watches: what a look reads while the backlog
                    // waits (a partition seen intact after a change) is what places it if the partition is
                    // dropped before the change is decoded.
                    self.watchdog.look(&self.sql, &self.metrics).await?;
                }
            }
        }
        self.status(false, true).await
    }

    /// The messages gathered in `out` as one send to the assembler, once their share of the buffer budget
    /// is free; `None` when there is nothing to send or the assembler is gone.
    fn take_delivery(
        &mut self,
    ) -> Option<impl std::future::Future<Output = anyhow::Result<()>> + 'static> {
        if self.out.is_empty() {
            return None;
        }
        let tx = self.tx.clone()?;
        let msgs = std::mem::take(&mut self.out);
        let types = std::mem::take(&mut self.out_types);
        let size = std::mem::take(&mut self.out_bytes);
        let budget = self.budget.clone();
        // A group larger than the whole budget takes all of it rather than waiting forever.
        let cost = size.clamp(1, self.budget_total) as u32;
        Some(async move {
            let permit = budget
                .acquire_many_owned(cost)
                .await
                .map_err(|_| anyhow!("buffer closed"))?;
            tx.send(Delivery {
                msgs,
                types,
                _budget: permit,
            })
            .await
            .map_err(|_| anyhow!("assembler stopped"))
        })
    }

    /// Hands the gathered messages to the assembler; while the buffer is full, status updates and the
    /// watchdog's looks go on so the server does not time the session out.
    async fn forward(
        &mut self,
        ticker: &mut tokio::time::Interval,
        assembler: &mut AssembleHandle,
    ) -> Result<(), Failure> {
        self.txn_begin_at = None;
        let Some(send) = self.take_delivery() else {
            return Ok(());
        };
        let commit_end = self.out_commit_end.take();
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
                res = &mut *assembler => return Err(assembler_ended(res)),
                _ = ticker.tick() => {
                    self.status(true, false).await?;
                    // Held back by the store, capture still watches: what a look reads while the backlog
                    // waits (a partition seen intact after a change) is what places it if the partition is
                    // dropped before the change is decoded.
                    self.watchdog.look(&self.sql, &self.metrics).await?;
                }
            }
        }
    }
}

/// The gap a table that became a member of a mapped table (an inheritance child) leaves when it held rows
/// before it was published: they never reached the WAL stream. `None` when it holds none.
pub async fn member_rows_gap(
    sql: &tokio_postgres::Client,
    schema: &str,
    table: &str,
) -> Option<Gap> {
    let name = crate::pg::qualified(schema, table);
    let rows: i64 = sql
        .query_one(
            &format!("SELECT count(*) FROM (SELECT 1 FROM ONLY {name} LIMIT 1000) x"),
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    let held = match rows {
        0 => return None,
        r if r < 0 => "rows".to_owned(),
        r if r >= 1000 => "1,000 rows or more".to_owned(),
        r => format!("{r} row(s)"),
    };
    Some(found_gap(
        format!("{schema}.{table}"),
        format!("{name} became a member of a mapped table holding {held}"),
        "rows written before it was published never reached the WAL stream",
    ))
}

/// The gap a publication kept by hand leaves while it leaves changes out (recorded by the start after it
/// is set back: `--accept-gap` cannot set back a publication waltrail does not keep, QA33 M1).
pub fn publication_gap(publication: &str, problems: &[String]) -> Gap {
    let mut gap = found_gap(
        String::new(),
        format!(
            "publication {publication} left changes out of the WAL stream: {}",
            problems.join("; ")
        ),
        "what it left out is not in the trail",
    );
    gap.table = None;
    gap
}

/// The gap an UNLOGGED member leaves (recorded by the next start, once it is LOGGED again): from when it
/// was made UNLOGGED, which the catalog does not say, until it was set LOGGED.
pub fn unlogged_gap((schema, table): &(String, String)) -> Gap {
    found_gap(
        format!("{schema}.{table}"),
        format!("{} was UNLOGGED", crate::pg::qualified(schema, table)),
        "its changes from when it was set UNLOGGED until it was set LOGGED again were never written to the WAL",
    )
}

/// Why capture stops for UNLOGGED members of mapped tables, and the fix.
pub fn unlogged_message(tables: &[(String, String)]) -> String {
    let tables: Vec<String> = tables
        .iter()
        .map(|(s, t)| crate::pg::qualified(s, t))
        .collect();
    format!(
        "{} belong(s) to a mapped table but are UNLOGGED: their changes are never written to the WAL, so they \
         cannot reach the trail. Run ALTER TABLE … SET LOGGED on each, then restart; changes made while a table \
         was unlogged are not in the trail (the audit of that window must come from elsewhere)",
        tables.join(", ")
    )
}

/// Why capture stops for a relation that inherits from several mapped tables, and the fix.
pub fn several_message(tables: &[String]) -> String {
    format!(
        "{} inherit(s) from more than one mapped table: its changes cannot be one table's, and only one table's \
         redaction would hold for them. Map it in a [[tables]] entry of its own (naming every secret column of \
         its parents), or remove the extra inheritance (ALTER TABLE … NO INHERIT …), then restart",
        tables.join(", ")
    )
}
