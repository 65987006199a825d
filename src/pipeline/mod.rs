//! The capture pipeline: capture → audit → store, with acknowledgement. This module starts it up (provision
//! Postgres, load attribution's platform tables, find where to resume) and reconnects; the work is done by
//! three tasks, each in its own file:
//!
//! * [`read`]: the WAL reader (replication socket → decoded messages, status updates to Postgres);
//! * [`assemble`]: decoded messages → items → encoded rows, cut into batches;
//! * [`store`]: batches → ClickHouse, in order, retried until stored.
//!
//! [`ack`] holds the rule for what may be confirmed to Postgres; [`retry`] which errors end the run.

pub mod ack;
pub mod assemble;
mod chains;
pub mod read;
pub mod replay;
pub mod retry;
pub mod store;
mod trail_tables;

use anyhow::anyhow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::audit::assembler::Assembler;
use crate::audit::attribution::Attribution;
use crate::audit::chain::{Chainer, SigningKey};
use crate::audit::item::Gap;
use crate::audit::mapping;
use crate::audit::redaction;
use crate::capture::catalog;
use crate::capture::metrics::CaptureMetrics;
use crate::capture::pgoutput::LogicalMessage;
use crate::capture::provision::{self, SlotError};
use crate::capture::replication::ReplicationConnection;
use crate::capture::spill::Spill;
use crate::capture::Lsn;
use crate::config::{Config, Signing};
use ack::Acker;
use assemble::AssembleTask;
use read::{Delivery, WalReader, DELIVERY_MAX_MSGS};
use retry::{Backoff, Failure};
use store::StoreTask;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Start a new slot even though the store holds items from this source (accepting a gap).
    pub accept_gap: bool,
    /// Take redacted tables' columns as they are now, though a redacted column was dropped while new
    /// columns of its type appeared (the operator checked that no secret moved; see `audit::redaction`).
    pub accept_columns: bool,
}

pub struct Pipeline {
    cfg: Arc<Config>,
    opts: RunOptions,
    /// `--accept-gap` still applies: until a session streams. A process left running with the flag (a
    /// unit file not changed back) does not accept a later, unrelated gap (QA38 L1).
    accepting: std::sync::atomic::AtomicBool,
    pub metrics: Arc<CaptureMetrics>,
    ch: clickhouse::Client,
}

impl Pipeline {
    pub fn new(cfg: Arc<Config>, opts: RunOptions) -> Self {
        let ch = crate::store::client(&cfg.clickhouse);
        Pipeline {
            accepting: std::sync::atomic::AtomicBool::new(opts.accept_gap),
            cfg,
            opts,
            metrics: Arc::new(CaptureMetrics::default()),
            ch,
        }
    }

    /// Run until `shutdown` turns true (then finish the batch, acknowledge, return Ok) or a fatal error.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(self.cfg.capture.max_backoff_ms));
        let mut resume = Lsn(0);
        let mut migrated = false;
        let mut stuck = retry::Stuck::default();
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
                    let reached = self
                        .metrics
                        .received_lsn
                        .load(Ordering::Acquire)
                        .max(self.metrics.acked_lsn.load(Ordering::Acquire));
                    if let Some(why) = stuck.again(&e, reached, self.cfg.postgres.streaming) {
                        return Err(e.context(why));
                    }
                    let wait = backoff.after(started);
                    self.metrics.reconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "capture interrupted; will reconnect");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
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
        // Whether this session accepts the gaps it finds (see `accepting`).
        let accept_gap = self.accepting.load(Ordering::Acquire);
        let params = crate::pg::params(cfg).map_err(Failure::Fatal)?;
        let mut repl = ReplicationConnection::connect(&params).await?;
        let ident = repl.identify_system().await?;
        let source_id = cfg.capture.source_id.clone().unwrap_or_else(|| {
            format!(
                "{}/{}/{}",
                ident.system_id, params.dbname, cfg.postgres.slot
            )
        });
        let sql = crate::pg::connect(cfg).await.map_err(Failure::Retry)?;
        let names = cfg.table_names();
        // Before anything is made in Postgres: a signing rule the keys break, a copy of the checkpoints
        // that could never be written.
        signing_key(cfg).map_err(Failure::Fatal)?;
        if let Some(f) = &cfg.integrity.checkpoint_file {
            crate::audit::chain::checkpoint_file_writable(f)
                .map_err(|e| Failure::Fatal(anyhow!(e)))?;
        }
        let infos = catalog::tables(&sql, &names)
            .await
            .map_err(Failure::Fatal)?;
        // Changes from here on were committed after that read (see `redaction::RedactedColumn::seen_at_lsn`).
        let seen_at = catalog::wal_insert_lsn(&sql)
            .await
            .map_err(Failure::Retry)?;
        let seal_key = crate::audit::attribution::seal::SealKey::new(cfg.event_secret.0.as_bytes());
        // A redacted column renamed (or dropped for a new one) since the last start, the change that stopped
        // the last process included: refused before anything is read, or the new name would be stored in
        // clear (the in-process guard's baseline starts afresh with each process).
        let remembered = crate::store::sources::redaction_baseline(&self.ch, &source_id)
            .await
            .map_err(Failure::Retry)?;
        let remembered = if let Some(stored) = remembered {
            let was = redaction::Baseline::parse(&stored, &source_id, Some(&seal_key))
                .map_err(|e| Failure::Fatal(anyhow!(e)))?;
            let changed = was.changed_since(&cfg.tables, &infos);
            if !changed.is_empty() {
                if !self.opts.accept_columns {
                    return Err(Failure::Fatal(anyhow!(changed.join("; "))));
                }
                for c in &changed {
                    tracing::warn!(change = %c, "redacted tables' columns taken as they are now (--accept-columns)");
                }
            }
            Some(was)
        } else {
            None
        };
        for (what, fix) in mapping::nestable_redaction_gaps(&cfg.tables, &infos) {
            tracing::warn!(fix = %fix, "{what}");
        }
        let baseline = redaction::Baseline::of(&cfg.tables, &infos)
            .seen_at(seen_at, &infos)
            .carrying(remembered, &cfg.tables, &infos);
        let mappings: Vec<_> = mapping::from_catalog(
            &cfg.tables,
            &infos,
            &params.dbname,
            Some(&baseline),
            self.opts.accept_columns,
        )
        .map_err(|e| Failure::Fatal(anyhow!(e)))?
        .into_iter()
        .map(|m| m.with_max_value_bytes(cfg.capture.max_value_bytes))
        .collect();
        // What --accept-columns takes as it is: tables none of whose redacted columns is there (a drop
        // remembered or not: changes from before this start that the columns of the table now cannot vouch
        // for, such as a column added since the last start, are then the operator's to vouch for). Only
        // their changes may lack every redacted column in the stream without a proof.
        let accepted_none: std::collections::HashSet<String> = cfg
            .tables
            .iter()
            .zip(&infos)
            .filter(|(t, i)| {
                self.opts.accept_columns
                    && i.exists
                    && !t.redact_columns.is_empty()
                    && mapping::missing_redacted(t, i).len() == t.redact_columns.len()
            })
            .map(|(t, _)| t.table.clone())
            .collect();
        // Gaps an earlier process (or a refused start) found and could not record where it found them.
        let pending = read_pending_gaps(&self.ch, &source_id).await?;
        let reporter = crate::pipeline::store::Reporter {
            source_id: source_id.clone(),
            host: crate::store::sources::host_name(),
            redaction_baseline: baseline.sealed_json(&seal_key, &source_id),
            pending_gaps: crate::pipeline::store::PendingGaps::new(pending.clone()),
            publication_stamp: Default::default(),
        };
        let stored = crate::store::query::history(&self.ch, &source_id, None)
            .await
            .map_err(Failure::Retry)?;
        // The last commit stored is known before the first one is confirmed (reported in the heartbeat).
        if let Some(t) = stored.last_time_us {
            let _ = self.metrics.last_commit_time_us.compare_exchange(
                0,
                t,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        // A store that holds nothing of this source while the checkpoints copied out of it say it held
        // items: it was wiped or replaced, and chains starting again at 1 would verify. A gap, refused unless
        // accepted.
        let wiped = match (&cfg.integrity.checkpoint_file, stored.items) {
            // Only checkpoints over items retention keeps (a source whose items all expired is not wiped),
            // and signed after the last recorded gap (a wipe accepted before is recorded already).
            (Some(f), 0) => {
                let gap = crate::store::query::last_gap_us(&self.ch, &source_id)
                    .await
                    .map_err(Failure::Retry)?;
                copied_checkpoints(
                    f,
                    &source_id,
                    crate::store::query::retention_cutoff_us(cfg.retention.days)
                        .max(gap.map_or(i64::MIN, |t| t.saturating_add(1))),
                )
            }
            _ => None,
        };
        if let Some(w) = &wiped {
            refuse_gap(accept_gap, || {
                format!(
                    "ClickHouse holds no item of source {source_id}, but integrity.checkpoint_file holds {} of its \
                     checkpoints (up to commit time {}): the store was wiped or replaced. Restore it if you can; \
                     to go on, run once with --accept-gap (the gap is recorded in the trail)",
                    w.0,
                    chrono::DateTime::from_timestamp_micros(w.2)
                        .map_or_else(|| w.2.to_string(), |t| t.to_rfc3339())
                )
            })?;
        }
        // The copy's last checkpoint of each chain once caught up: one signed again by a replay is not
        // appended a second time.
        let mut copied = std::collections::HashMap::new();
        if let (Some(f), false) = (&cfg.integrity.checkpoint_file, wiped.is_some()) {
            let keys = crate::audit::chain::configured_keys(cfg)
                .map(|(_, keys)| keys)
                .unwrap_or_default();
            let (last, unlike) = catch_up_checkpoint_file(&self.ch, f, &source_id, &keys).await;
            copied = last;
            if !unlike.is_empty() {
                refuse_gap(accept_gap, || {
                    format!(
                        "the store does not hold the checkpoints integrity.checkpoint_file last copied of source \
                         {source_id} ({}): they were removed or altered, perhaps with the items they cover (or the \
                         store was restored from an older backup). Verify it (waltrail verify --config … --org … \
                         --checkpoints {f}) and restore the store if you can; to sign on from it as it is, run \
                         once with --accept-gap (the file keeps the evidence)",
                        unlike.join("; ")
                    )
                })?;
                tracing::error!(checkpoints = %unlike.join("; "), "signing on from a store that lacks checkpoints integrity.checkpoint_file copied (--accept-gap)");
            }
        }
        if let Some(why) = provision::exposed_context_secret(&sql, cfg)
            .await
            .map_err(Failure::Retry)?
        {
            return Err(Failure::Fatal(anyhow!(why)));
        }
        let mapped: Vec<u32> = infos.iter().filter(|i| i.exists).map(|i| i.oid).collect();
        let unlogged = crate::capture::catalog::unlogged_members(&sql, &mapped)
            .await
            .map_err(Failure::Retry)?;
        if !unlogged.is_empty() {
            for t in &unlogged {
                reporter.pending_gaps.add(read::unlogged_gap(t));
            }
            self.report_pending(&reporter).await;
            return Err(Failure::Fatal(anyhow!(read::unlogged_message(&unlogged))));
        }
        let several = crate::capture::catalog::children_of_several(&sql, &mapped)
            .await
            .map_err(Failure::Retry)?;
        if !several.is_empty() {
            return Err(Failure::Fatal(anyhow!(read::several_message(&several))));
        }
        // Tables the trail holds changes of that the config no longer maps, or maps again. The tables the
        // publication holds stand for what the last start mapped only while it is as capture last saw it:
        // one edited since may hold tables someone else put there, never mapped (QA40 M3).
        // The publication as the last process reported it (read once: the edit check below uses it too).
        let last_stamp = crate::store::sources::publication_stamp(&self.ch, &source_id)
            .await
            .map_err(Failure::Retry)?;
        let members_vouched = {
            let last = &last_stamp;
            let now = catalog::publication_stamp(&sql, &cfg.postgres.publication)
                .await
                .map_err(Failure::Retry)?;
            !last.is_empty() && now.is_some_and(|n| n.to_text() == *last)
        };
        let tables_then =
            trail_tables::compare(cfg, &self.ch, &source_id, &sql, members_vouched).await?;
        let trail_tables::Compared {
            unmapped_gaps,
            remapped,
            not_mapped,
            not_mapped_oids,
            not_mapped_shapes,
        } = tables_then;
        // A mapped table the publication lost (dropped and created again, or removed from it, while waltrail
        // was not watching) whose changes the trail held before: a gap, refused unless accepted (one mapped
        // again after its [[tables]] entry was removed is said in the trail as such).
        let mut table_gaps = Vec::new();
        for t in provision::mapped_out_of_publication(cfg, &sql)
            .await
            .map_err(Failure::Fatal)?
        {
            if remapped.contains_key(&t) {
                continue;
            }
            let h = crate::store::query::history(&self.ch, &source_id, Some(&t))
                .await
                .map_err(Failure::Retry)?;
            if h.items > 0 {
                table_gaps.push((t, h));
            }
        }
        if !table_gaps.is_empty() {
            refuse_gap(accept_gap, || {
                let names: Vec<&str> = table_gaps.iter().map(|(t, _)| t.as_str()).collect();
                format!(
                    "mapped table(s) {} are not in publication {} although the trail holds their changes: they \
                     were dropped and created again, or removed from the publication, and their changes since are \
                     not in the WAL stream. To re-add them and go on, run once with --accept-gap (the gap is \
                     recorded in the trail; restoring the publication by hand instead would leave it unrecorded)",
                    names.join(", "),
                    cfg.postgres.publication
                )
            })?;
        }
        // Likewise a publication that stopped publishing some kind of change while waltrail was not
        // watching: what it left out is a gap of the whole source.
        let flag_problems = match provision::publication_losses(
            &sql,
            &cfg.postgres.publication,
            &provision::publication_tables(cfg)
                .into_iter()
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(Failure::Fatal)?
        {
            Some(lost) if stored.items > 0 => lost,
            _ => Vec::new(),
        };
        if !flag_problems.is_empty() && !cfg.postgres.manage_publication {
            // waltrail cannot set back a publication it does not keep: the operator does, and the start
            // after that records the gap (QA33 M1: --accept-gap was refused and a set-back by hand left none).
            reporter.pending_gaps.add(read::publication_gap(
                &cfg.postgres.publication,
                &flag_problems,
            ));
            self.report_pending(&reporter).await;
            return Err(Failure::Fatal(anyhow!(
                "publication {} cannot have fed the trail every change since it was last read: {}. Set it back \
                 ({} for its options; no row filter or column list on a mapped table) and restart: that start \
                 records the gap in the trail",
                cfg.postgres.publication,
                flag_problems.join("; "),
                provision::publication_fix(&cfg.postgres.publication)
            )));
        }
        if !flag_problems.is_empty() {
            refuse_gap(accept_gap, || {
                format!(
                    "publication {} cannot have fed the trail every change since it was last read: {}. To set it \
                     back and go on, run once with --accept-gap (the gap is recorded in the trail; setting it back \
                     by hand instead would leave it unrecorded)",
                    cfg.postgres.publication,
                    flag_problems.join("; ")
                )
            })?;
        }
        // Accepted: pending from here, before this start sets the publication back and reports it so (QA38
        // H1): a start that fails after that, before recording them, leaves them to the next, which finds
        // the publication whole and its stamp as reported.
        let publication_gaps: Vec<Gap> = table_gaps
            .iter()
            .map(|(t, h)| Gap {
                reason: format!(
                    "{t} was out of publication {} (dropped and created again, or removed from it)",
                    cfg.postgres.publication
                ),
                from_lsn: h.last_lsn,
                from_time_us: h.last_time_us,
                table: Some(t.clone()),
                ..Default::default()
            })
            .chain((!flag_problems.is_empty()).then(|| Gap {
                reason: format!(
                    "publication {} left changes out: {}",
                    cfg.postgres.publication,
                    flag_problems.join("; ")
                ),
                from_lsn: stored.last_lsn,
                from_time_us: stored.last_time_us,
                ..Default::default()
            }))
            .collect();
        // Their stretch goes on until this start has set the publication back (QA40 M2): bounded once it has.
        let repaired_gaps = publication_gaps.clone();
        if !publication_gaps.is_empty() {
            for g in publication_gaps {
                reporter.pending_gaps.add(g);
            }
            self.report_pending(&reporter).await;
        }
        // Children that joined a mapped table while capture was stopped, which the publication takes now:
        // the rows they held never reached the WAL stream (the watchdog says the same of those it adds).
        // Carried by the reports from here (stored before the publication takes them): a start refused or
        // killed after publishing them, before recording, would leave them found by nobody.
        if cfg.postgres.manage_publication && stored.items > 0 {
            let mut found = false;
            for (schema, table) in
                catalog::unpublished_children(&sql, &mapped, &cfg.postgres.publication)
                    .await
                    .map_err(Failure::Retry)?
            {
                if let Some(g) = read::member_rows_gap(&sql, &schema, &table).await {
                    reporter.pending_gaps.add(g);
                    found = true;
                }
            }
            if found {
                self.report_pending(&reporter).await;
            }
        }
        provision::ensure_replica_identity(cfg, &sql, &infos)
            .await
            .map_err(Failure::Fatal)?;
        provision::identity_covers_ids(cfg, &sql, &infos)
            .await
            .map_err(Failure::Fatal)?;
        provision::warn_without_ddl_events(&sql, &cfg.attribution.message_prefix).await;
        // The platform tables too: their deletes and updates then carry the old rows that wind attribution
        // back to where streaming resumes (see `rewind_platform_tables`).
        let mut attribution = Attribution::new(cfg, self.metrics.clone());
        let platform_names: Vec<(String, String)> = attribution
            .platform
            .snapshot_requests()
            .into_iter()
            .map(|r| (r.schema, r.table))
            .collect();
        let platform_infos: Vec<_> = catalog::tables(&sql, &platform_names)
            .await
            .map_err(Failure::Fatal)?
            .into_iter()
            .filter(|i| i.exists)
            .collect();
        provision::ensure_replica_identity(cfg, &sql, &platform_infos)
            .await
            .map_err(Failure::Fatal)?;
        // The publication as capture last saw it, against what it is before this start sets it: an edit
        // made while capture was stopped, even one set back since, may have left changes out (QA35 H4).
        let name = &cfg.postgres.publication;
        let was = if stored.items > 0 {
            last_stamp
        } else {
            String::new()
        };
        let stopped_edit = if stored.items > 0 {
            let now = catalog::publication_stamp(&sql, name)
                .await
                .map_err(Failure::Retry)?;
            match (catalog::PublicationStamp::parse(&was), now) {
                // Dropped and created again (QA37 M4, QA38 M2): what was written while no publication of this
                // name existed lies ahead of where capture resumes (it decoded everything before with the
                // old one), and Postgres cannot decode it through the new one. Recorded with its bounds once
                // this start has set the publication.
                (Some(was), Some(now)) if was.recreated(&now) => Some((
                    format!(
                        "publication {name} was dropped and created again since capture last saw it: the \
                         changes committed while no publication of that name existed (and all that \
                         transactions open across the drop wrote) are not in the trail{SKIPPED_OR_STOPS}"
                    ),
                    Ahead::Yes,
                )),
                (Some(was), Some(now)) => {
                    let there = catalog::existing(&sql, &was.tables_gone(&now))
                        .await
                        .map_err(Failure::Retry)?;
                    was.edited_since(&now, &|oid| there.contains(&oid)).then(|| {
                        (
                            format!(
                                "publication {name} was edited while capture was stopped (its options, or a \
                                 table's or a schema's entry in it), perhaps set back since: what it did not \
                                 publish meanwhile, if anything, is not in the trail"
                            ),
                            Ahead::No,
                        )
                    })
                }
                // Dropped (QA37 M4): Postgres cannot decode what was written before a publication of this
                // name exists again.
                (Some(_), None) => Some((
                    format!(
                        "publication {name} was dropped since capture last saw it (this start creates it \
                         again): the changes committed while it did not exist (and all that transactions \
                         open across the drop wrote) are not in the trail{SKIPPED_OR_STOPS}"
                    ),
                    Ahead::Yes,
                )),
                // A report that says something unreadable (altered in the store): what it remembered
                // cannot be compared, so nothing vouches for the publication meanwhile.
                (None, _) if !was.is_empty() => {
                    tracing::warn!("the last report's publication stamp is unreadable (altered in the store?): the publication is taken as edited while capture was stopped");
                    Some((
                        format!(
                            "publication {name} was edited while capture was stopped (its last stamp in the \
                             store is unreadable), perhaps set back since: what it did not publish meanwhile, \
                             if anything, is not in the trail"
                        ),
                        Ahead::No,
                    ))
                }
                _ => None,
            }
        } else {
            None
        };
        // Kept pending at once, before this start sets the publication or reports its new stamp: a start
        // that fails before it records its gaps leaves it to the next (QA37 H3). Once per cause: not when
        // the publication is wrong now, a mapped table is missing from it (each recorded as that), or an
        // earlier process left the publication's gap pending.
        // A drop is said once by the ahead record an earlier start left pending; an edit by any of the
        // publication's records. Another cause pending vouches for no drop (QA40 L3).
        let pending_now = reporter.pending_gaps.list();
        let said = |ahead: &Ahead| {
            pending_now.iter().any(|g| {
                g.table.is_none()
                    && g.reason.starts_with(&format!("publication {name} "))
                    && (matches!(ahead, Ahead::No) || g.until_lsn.is_some())
            })
        };
        // A drop is a gap of the whole source, past what a table's or the options' record covers (QA40 M2).
        let stopped_edit = stopped_edit.filter(|(_, ahead)| {
            !said(ahead)
                && (matches!(ahead, Ahead::Yes)
                    || (flag_problems.is_empty() && table_gaps.is_empty()))
        });
        let (ahead, stopped_edit) = match stopped_edit {
            Some((r, Ahead::Yes)) => (Some(r), None),
            Some((r, Ahead::No)) => (None, Some(r)),
            None => (None, None),
        };
        let mut repaired_gaps = repaired_gaps;
        if let Some(reason) = stopped_edit {
            let gap = Gap {
                reason,
                from_lsn: stored.last_lsn,
                from_time_us: stored.last_time_us,
                ..Default::default()
            };
            reporter.pending_gaps.add(gap.clone());
            repaired_gaps.push(gap);
            self.report_pending(&reporter).await;
        }
        provision::ensure_publication(cfg, &sql)
            .await
            .map_err(Failure::Fatal)?;
        // A transaction with a newer id wrote only after the publication was set as it is now (see
        // `read::membership`: what it listed before, it may no longer show).
        let listed_since_xid = catalog::fresh_xid(&sql).await.map_err(Failure::Retry)?;
        let publication_stamp = catalog::publication_stamp(&sql, &cfg.postgres.publication)
            .await
            .map_err(Failure::Retry)?;
        // What an accepted stop is checked against: a publication dropped since this start is another.
        let start_stamp = publication_stamp.clone();
        if let (Some(s), Ok(mut out)) = (&publication_stamp, reporter.publication_stamp.lock()) {
            *out = s.to_text();
        }
        // The stretch a publication of this name did not exist in ends before here: it exists now. Kept
        // pending with the new stamp (reported just below, as the stamp changed); a start that ends before
        // that report leaves the old stamp, and the next start finds the same drop.
        // With --accept-gap, the drop the operator was told of lies before here: Postgres stops at a change
        // written before the publication was created again, so before it has streamed past this. One it
        // stops at after reaching here was dropped since this start (QA39 M1, M3).
        let accept_before = if accept_gap || ahead.is_some() || !repaired_gaps.is_empty() {
            Some(wal_position(&sql, "pg_current_wal_flush_lsn").await?)
        } else {
            None
        };
        // What the publication left out of a table (or of a kind of change) it lacked, or while it was
        // edited and set back, lies ahead of where capture resumes too: Postgres decodes the changes waiting
        // in the slot through the publication as it was when each was written. Their records end here, where
        // this start set it back (QA40 M2).
        if let (false, Some(until)) = (repaired_gaps.is_empty(), accept_before) {
            reporter.pending_gaps.recorded(&repaired_gaps);
            for g in repaired_gaps {
                reporter.pending_gaps.add(Gap {
                    until_lsn: Some(until.0),
                    ..g
                });
            }
            self.report_pending(&reporter).await;
        }
        if let (Some(reason), Some(now)) = (ahead, accept_before) {
            reporter.pending_gaps.add(Gap {
                reason,
                from_lsn: stored.last_lsn,
                from_time_us: stored.last_time_us,
                until_lsn: Some(now.0),
                ..Default::default()
            });
        }
        // This start's own edit of the publication is kept at once: a start refused after it (the slot,
        // ClickHouse) must not leave the next one taking it for an edit made while stopped (QA37 M1).
        if stored.items > 0
            && publication_stamp
                .as_ref()
                .is_some_and(|s| s.to_text() != was)
        {
            self.report_pending(&reporter).await;
        }
        // How far capture may have confirmed the slot (0: never said, e.g. by an earlier version).
        let confirm_bound = crate::store::sources::confirm_bound(&self.ch, &source_id)
            .await
            .map_err(Failure::Retry)?;
        let slot_start =
            match provision::ensure_slot(cfg, &sql, &mut repl, &stored, confirm_bound, accept_gap)
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    return Err(match e.downcast_ref::<SlotError>() {
                        Some(SlotError::InUse { .. }) => Failure::Retry(e),
                        Some(SlotError::Refuse(_)) => Failure::Fatal(e),
                        None => Failure::Retry(e),
                    })
                }
            };
        let mut gaps: Vec<Gap> = slot_start
            .gap
            .iter()
            .map(|g| Gap {
                reason: g.reason.clone(),
                from_lsn: g.from_lsn,
                from_time_us: g.from_time_us,
                to_lsn: slot_start.start.0,
                ..Default::default()
            })
            .collect();
        gaps.extend(unmapped_gaps.into_iter().map(|(t, last, n)| Gap {
            reason: format!(
                "{t} is {UNMAPPED} (its [[tables]] entry was removed): its changes from here on are not in the trail \
                 until it is mapped again"
            ),
            from_lsn: last.map(|(l, _)| l),
            from_time_us: last.map(|(_, w)| w),
            to_lsn: slot_start.start.0,
            table: Some(t),
            // Its own item even where an earlier start's record of the same cause sits (that start
            // crashed before confirming, and this one resumes at the same place).
            occurrence: n,
            open: true,
            until_lsn: None,
        }));
        gaps.extend(remapped.into_iter().map(|(t, (at, n))| Gap {
            reason: format!(
                "{t} {MAPPED_AGAIN}: its changes while it was not audited (since its [[tables]] entry was removed) are \
                 not in the trail"
            ),
            from_lsn: Some(at),
            to_lsn: slot_start.start.0,
            table: Some(t),
            occurrence: n,
            ..Default::default()
        }));
        if let Some((n, lsn, time)) = wiped {
            gaps.push(Gap {
                reason: format!(
                    "the store held no item of this source, though integrity.checkpoint_file holds {n} of its checkpoints: it was wiped or replaced"
                ),
                from_lsn: Some(lsn),
                from_time_us: Some(time),
                to_lsn: slot_start.start.0,
                ..Default::default()
            });
        }
        let pending = reporter.pending_gaps.list();
        gaps.extend(pending.iter().map(|g| Gap {
            to_lsn: slot_start.start.0,
            // A stretch found ahead by an earlier start that capture now resumes past (a slot made anew at
            // the present) lies behind: recorded up to where capture resumes (QA40 M4).
            until_lsn: g.until_lsn.filter(|u| *u > slot_start.start.0),
            ..g.clone()
        }));
        // A reconnect in the same process resumes after what it confirmed, which Postgres may not know yet.
        let start = (*resume).max(slot_start.start);
        // Where this session may confirm from, reported before any confirmation (a new slot's own position
        // included: without it, the next start would take that slot for one moved by something else).
        let first = crate::pipeline::store::source_report(&self.metrics, &reporter, start.0);
        crate::store::sources::report(&self.ch, &first)
            .await
            .map_err(Failure::Retry)?;
        self.metrics
            .confirm_bound
            .fetch_max(start.0, Ordering::AcqRel);
        let resumed = chains::resume(cfg, &self.ch, &source_id, start, accept_gap).await?;
        let (signing_gap, signing_off_at) = (resumed.signing_gap, resumed.signing_off_at);
        let mut chainer = resumed.chainer;
        // Loaded and wound back before the gaps are written: one that could not be wound back is a record
        // of its own, placed with them.
        load_platform_tables(&mut attribution, &sql)
            .await
            .map_err(Failure::Fatal)?;
        let as_now =
            rewind_platform_tables(cfg, &mut attribution, &sql, &platform_infos, start).await?;
        let (last_ingested_us, mut gap_checkpoints) = record_gaps(
            &self.ch,
            &source_id,
            &gaps,
            signing_gap.then_some(start.0),
            as_now.as_ref().map(|a| (start.0, a)),
            chainer.as_mut(),
            following_ingestion(stored.last_ingested_us),
        )
        .await?;
        // Signing again after a stretch with it off: each chain is signed as it stands, or one that gains
        // nothing more (the platform chain holding only the record that signing stopped) stays unproven.
        if let Some(c) = chainer.as_mut() {
            // (A record this start wrote goes with no key: nothing to sign then.)
            let again = signing_off_at
                .map(|l| c.sign_heads_after(l))
                .unwrap_or_default();
            if !again.is_empty() {
                let now = crate::store::row::now_us();
                let rows: Vec<_> = again
                    .iter()
                    .map(|cp| crate::store::row::CheckpointRow::from_checkpoint(cp, now))
                    .collect();
                crate::store::writer::insert_checkpoints(&self.ch, &rows)
                    .await
                    .map_err(|e| {
                        Failure::Retry(anyhow!("signing the chains again in ClickHouse: {e}"))
                    })?;
                tracing::info!(
                    chains = again.len(),
                    "signing again: each chain signed as it stands"
                );
                gap_checkpoints.extend(
                    again
                        .iter()
                        .map(|cp| serde_json::json!({ "checkpoint": cp }).to_string() + "\n"),
                );
            }
        }
        if !pending.is_empty() {
            // Recorded: the reports stop carrying them (at once, so a start after a crash does not record
            // them a second time).
            reporter.pending_gaps.recorded(&pending);
            self.report_pending(&reporter).await;
        }
        // Large transactions streamed while in progress (Postgres 14+) cost the source less than spilled to
        // its disk; they wait here, encrypted, until they commit.
        let spill = match cfg.postgres.streaming && repl.server_major().is_some_and(|v| v >= 14) {
            true => {
                let dir = cfg
                    .capture
                    .spill_dir
                    .as_ref()
                    .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
                Some(
                    Spill::new(&dir, self.metrics.spill_bytes.clone())
                        .map_err(|e| Failure::Fatal(e.into()))?
                        .with_message_prefix(&cfg.attribution.message_prefix),
                )
            }
            false => None,
        };
        repl.start_replication(
            &cfg.postgres.slot,
            start,
            &cfg.postgres.publication,
            true,
            spill.is_some(),
        )
        .await?;
        tracing::info!(slot = %cfg.postgres.slot, start = %start, source_id = %source_id, server_version = repl.server_version.as_deref().unwrap_or("?"), streaming = spill.is_some(), "streaming");
        self.metrics.started.notify_one();
        *resume = start;
        self.metrics.acked_lsn.store(start.0, Ordering::Relaxed);

        let (acked_tx, acked_rx) = watch::channel(start);
        // channel_capacity bounds the decoded messages waiting for the assembler: deliveries of up to
        // `per_delivery` messages, in as many channel slots as make up the capacity.
        let capacity = cfg.capture.channel_capacity.max(1);
        let per_delivery = DELIVERY_MAX_MSGS.min(capacity);
        let (tx, rx) = mpsc::channel::<Delivery>(capacity.div_ceil(per_delivery));
        let budget_total = cfg.capture.buffer_bytes.clamp(1, u32::MAX as usize);
        let acker = Arc::new(Acker::new(acked_tx, self.metrics.clone()));
        let window =
            replay::StoredWindow::new(self.ch.clone(), source_id.clone(), start, stored.last_lsn)
                .map(|w| w.with_pending_gaps(reporter.pending_gaps.clone()));
        let reporter_copy = reporter.clone();
        let assemble = AssembleTask {
            cfg: self.cfg.clone(),
            chainer,
            assembler: Assembler::new(
                source_id,
                mappings,
                attribution,
                cfg.attribution.max_pending_items,
            )
            .with_max_pending_bytes(cfg.attribution.max_pending_bytes),
            store: Some(StoreTask {
                ch: self.ch.clone(),
                checkpoint_file: cfg
                    .integrity
                    .checkpoint_file
                    .as_ref()
                    .map(std::path::PathBuf::from),
                timeout: crate::store::timeout(&cfg.clickhouse),
                insert_max_items: cfg.capture.insert_max_items,
                insert_max_bytes: cfg.capture.insert_max_bytes,
                acker: acker.clone(),
                metrics: self.metrics.clone(),
                shutdown: shutdown.clone(),
                reporter,
                // Delivered with the first batch or heartbeat, like any checkpoint.
                undelivered: std::sync::Mutex::new(gap_checkpoints),
                copied: std::sync::Mutex::new(copied),
                bound_every: (Duration::from_millis(cfg.postgres.status_interval_ms) / 2).clamp(
                    Duration::from_secs(1),
                    crate::store::sources::HEARTBEAT_EVERY,
                ),
            }),
            acker,
            last_ingested_us,
            stored: window,
        };
        let mut assemble_task = tokio::spawn(assemble.run(rx));
        let pending_gaps = reporter_copy.pending_gaps.clone();
        let reader = WalReader {
            conn: repl,
            sql,
            tx: Some(tx),
            budget: Arc::new(Semaphore::new(budget_total)),
            budget_total,
            acked: acked_rx.clone(),
            txn_open: false,
            txn_lsn: 0,
            txn_xid: 0,
            txn_begin_at: None,
            out: Vec::new(),
            out_bytes: 0,
            out_commit_end: None,
            out_max_msgs: per_delivery,
            out_max_bytes: (budget_total / 8).clamp(1, 1 << 20),
            out_types: Vec::new(),
            known_types: Default::default(),
            forwarded_end: start,
            keepalive_end: start,
            received: start,
            reported: start,
            sent_at_us: 0,
            data_at: Instant::now(),
            spill,
            stream_block: None,
            metrics: self.metrics.clone(),
            status_interval: Duration::from_millis(cfg.postgres.status_interval_ms),
            watchdog: read::Watchdog {
                pending_gaps: reporter_copy.pending_gaps.clone(),
                slot: cfg.postgres.slot.clone(),
                publication: cfg.postgres.publication.clone(),
                tables: infos
                    .iter()
                    .map(|i| ((i.schema.clone(), i.table.clone()), i.oid))
                    .collect(),
                set_full: cfg.postgres.set_replica_identity_full,
                warned_identity: Default::default(),
                warned_relations: Default::default(),
                identity_retry: Default::default(),
                manage_publication: cfg.postgres.manage_publication,
                platform: platform_infos
                    .iter()
                    .map(|i| ((i.schema.clone(), i.table.clone()), i.oid))
                    .collect(),
                links_seen: Default::default(),
                detach_pending: Default::default(),
                partitioned_seen: Default::default(),
                publication_stamp,
                stamp_out: reporter_copy.publication_stamp.clone(),
                doubts: Default::default(),
                listed_since_xid,
                every: Duration::from_millis(cfg.postgres.watch_interval_ms),
                last: None,
                redaction: baseline,
                not_mapped,
                not_mapped_oids,
                not_mapped_shapes,
                redacting: cfg
                    .tables
                    .iter()
                    .filter(|t| !t.redact_columns.is_empty())
                    .cloned()
                    .collect(),
                accept: read::Acceptance::new(self.opts.accept_columns, seen_at),
                gone_noticed: Default::default(),
                accepted_none,
                start_columns: cfg
                    .tables
                    .iter()
                    .zip(&infos)
                    .filter(|(t, i)| i.exists && !t.redact_columns.is_empty())
                    .map(|(t, i)| (t.table.clone(), i.columns.clone()))
                    .collect(),
                metrics: self.metrics.clone(),
            },
        };
        // The gaps this start found are recorded: later sessions of this process accept no more.
        self.accepting.store(false, Ordering::Release);
        let outcome = match reader.run(shutdown, &mut assemble_task).await {
            Err(Failure::Fatal(e)) if retry::missing_publication(&e, &cfg.postgres.publication) => {
                let acked = *acked_rx.borrow();
                // Accepted only for the stretch the operator was told of: one Postgres met before it streamed
                // (or said it had read) past the WAL's end at this start. Not by what capture stored: a
                // stream that replays stored changes goes past the start on its way to the same drop.
                let reached = Lsn(self
                    .metrics
                    .received_lsn
                    .load(Ordering::Acquire)
                    .max(self.metrics.server_wal_end.load(Ordering::Acquire)));
                let accept = accept_gap && accept_before.is_some_and(|b| reached < b);
                Err(self
                    .publication_missing(e, &reporter_copy, acked, accept, start_stamp.as_ref())
                    .await)
            }
            // The transactions sent before the stop could not be stored, so nothing was accepted: the
            // retry may (QA40 L2).
            Err(Failure::Retry(e))
                if accept_gap && retry::missing_publication(&e, &cfg.postgres.publication) =>
            {
                self.accepting.store(true, Ordering::Release);
                Err(Failure::Retry(e))
            }
            o => o,
        };
        // Gaps found while streaming (one that stopped it too) go out in a report before the process
        // ends, however it ends.
        if !pending_gaps.list().is_empty() {
            self.report_pending(&reporter_copy).await;
        }
        *resume = (*resume).max(*acked_rx.borrow());
        outcome
    }
}

/// Write the accepted gaps into the trail before streaming on: an auditor must see the hole without
/// waltrail's logs. Ids are stable for the same gap, so a retry or a second acceptance stores it once.
/// Returns the latest ingestion time of the source's items (`last_ingested_us`, or the gaps' if later), and
/// the checkpoint lines of the gaps for `integrity.checkpoint_file`.
async fn record_gaps(
    ch: &clickhouse::Client,
    source_id: &str,
    gaps: &[Gap],
    unsigned_from: Option<u64>,
    attribution: Option<(u64, &AsNow)>,
    mut chainer: Option<&mut Chainer>,
    last_ingested_us: i64,
) -> Result<(i64, Vec<String>), Failure> {
    if gaps.is_empty() && unsigned_from.is_none() && attribution.is_none() {
        return Ok((last_ingested_us, Vec::new()));
    }
    let now = crate::store::row::now_us().max(last_ingested_us);
    let mut items: Vec<_> = gaps
        .iter()
        .enumerate()
        .map(|(i, g)| crate::audit::item::gap_item(source_id, g, now, i as u32))
        .chain(unsigned_from.map(|lsn| {
            crate::audit::item::signing_gap_item(source_id, lsn, now, gaps.len() as u32)
        }))
        .collect();
    if let Some((resume, a)) = attribution {
        let sub = items.len() as u32;
        items.push(crate::audit::item::attribution_gap_item(
            source_id,
            (resume, a.to),
            &a.why,
            now,
            sub,
        ));
    }
    // A record already stored (a start that recorded it crashed before capture confirmed anything, or
    // before the report that stops carrying a pending gap) is not linked a second time: read collapsed by
    // id, the second copy's chain position would be a hole.
    let ids: Vec<String> = items.iter().map(|i| i.id.to_string()).collect();
    let stored = crate::store::query::stored_ids(ch, source_id, &ids)
        .await
        .map_err(Failure::Retry)?;
    let items: Vec<_> = items
        .into_iter()
        .filter(|i| !stored.contains(&i.id.to_string()))
        .collect();
    if items.is_empty() {
        return Ok((last_ingested_us, Vec::new()));
    }
    let rows: Vec<_> = items
        .into_iter()
        .map(|item| {
            let mut row = crate::store::row::ItemRow::from_item(item, now);
            // A gap is part of the trail: it is chained like any item (platform chain).
            if let Some(c) = chainer.as_deref_mut() {
                let f = c.link(
                    Chainer::chain_of(&row.organization_id, row.platform_wide != 0),
                    &row.record(),
                );
                row.chain_seq = f.chain_seq;
                row.chain_prev = f.chain_prev;
                row.chain_hash = f.chain_hash;
            }
            row
        })
        .collect();
    crate::store::writer::insert_batch(ch, &rows)
        .await
        .map_err(|e| Failure::Retry(anyhow!("recording the accepted gap in ClickHouse: {e}")))?;
    // A gap's record is checkpointed at once: at the tail of a chain it could otherwise be cut off unseen
    // until the chain's next checkpoint, which a quiet platform chain may not reach for long.
    let mut checkpoints = Vec::new();
    let mut chainer = chainer;
    if let Some(c) = chainer.as_deref_mut() {
        // A turn of day the gaps' linking passed comes first.
        checkpoints.extend(c.take_pending());
        for (i, row) in rows.iter().enumerate() {
            let chain = Chainer::chain_of(&row.organization_id, row.platform_wide != 0);
            let last_of_chain = !rows[i + 1..]
                .iter()
                .any(|r| Chainer::chain_of(&r.organization_id, r.platform_wide != 0) == chain);
            if last_of_chain {
                checkpoints.extend(c.checkpoint_now(
                    chain,
                    row.commit_lsn,
                    &row.id.to_string(),
                    row.occurred_at_us,
                ));
            }
        }
    }
    let cp_rows: Vec<_> = checkpoints
        .iter()
        .map(|cp| crate::store::row::CheckpointRow::from_checkpoint(cp, now))
        .collect();
    crate::store::writer::insert_checkpoints(ch, &cp_rows)
        .await
        .map_err(|e| {
            Failure::Retry(anyhow!("checkpointing the accepted gap in ClickHouse: {e}"))
        })?;
    // Its checkpoints come with the source's roster, as a transaction's do.
    let roster = match (chainer, rows.last()) {
        (Some(c), Some(last)) => c.roster_due(last.commit_lsn, last.occurred_at_us),
        _ => None,
    };
    if let Some(r) = roster {
        crate::store::writer::insert_rosters(
            ch,
            &[crate::store::row::RosterRow::from_roster(&r, now)],
        )
        .await
        .map_err(|e| Failure::Retry(anyhow!("storing the source's roster in ClickHouse: {e}")))?;
    }
    for g in gaps {
        tracing::warn!(reason = %g.reason, table = g.table.as_deref().unwrap_or("(all)"), "gap recorded in the trail");
    }
    if unsigned_from.is_some() {
        tracing::warn!("checkpoint signing turned off: recorded in the trail");
    }
    if let Some((_, a)) = attribution {
        tracing::warn!(to = %Lsn(a.to), why = %a.why, "attribution of the changes streamed again is as of this start: recorded in the trail");
    }
    let lines = checkpoints
        .iter()
        .map(|cp| serde_json::json!({ "checkpoint": cp }).to_string() + "\n")
        .collect();
    Ok((now, lines))
}

/// The gaps the source's latest report says are pending. Bounded and parsed strictly: the store is not
/// trusted to hand capture anything but what capture wrote.
async fn read_pending_gaps(ch: &clickhouse::Client, source_id: &str) -> Result<Vec<Gap>, Failure> {
    let text = crate::store::sources::pending_gaps(ch, source_id)
        .await
        .map_err(Failure::Retry)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let unreadable = |why: &dyn std::fmt::Display| {
        Failure::Fatal(anyhow!(
            "the latest report of source {source_id} in ClickHouse (waltrail_sources.pending_gaps) lists gaps to \
             record that waltrail cannot read ({why}): not written by waltrail. Read them (SELECT pending_gaps \
             FROM waltrail_sources WHERE source_id = '…' ORDER BY reported_at_us DESC LIMIT 1), then clear them \
             (ALTER TABLE waltrail_sources UPDATE pending_gaps = '' WHERE source_id = '…') and start again"
        ))
    };
    let gaps: Vec<Gap> = serde_json::from_str(&text).map_err(|e| unreadable(&e))?;
    if gaps.len() > MAX_PENDING_GAPS || gaps.iter().any(|g| g.reason.len() > 4096) {
        return Err(unreadable(
            &"more gaps, or longer reasons, than capture ever writes",
        ));
    }
    Ok(gaps)
}

/// How long an accepted stop waits for the transactions open across a publication's re-creation.
const OPEN_ACROSS_WAIT: Duration = Duration::from_secs(20);

/// The transactions of this database (backend pids, prepared ones by name) that have written under an id
/// older than the publication's catalog row: begun before it was created (or last altered), still open.
async fn open_across(
    sql: &tokio_postgres::Client,
    publication: &str,
) -> anyhow::Result<Vec<String>> {
    let rows = sql
        .query(
            "SELECT 'pid ' || a.pid FROM pg_stat_activity a, pg_publication p \
             WHERE p.pubname = $1 AND a.datname = current_database() AND a.backend_xid IS NOT NULL \
               AND age(a.backend_xid) > age(p.xmin) \
             UNION ALL \
             SELECT 'prepared ' || quote_literal(x.gid) FROM pg_prepared_xacts x, pg_publication p \
             WHERE p.pubname = $1 AND x.database = current_database() AND age(x.transaction) > age(p.xmin)",
            &[&publication],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the transactions open across publication {publication}'s re-creation: {}",
                crate::pg::error_text(&e)
            )
        })?;
    rows.iter()
        .map(|r| r.try_get::<_, String>(0).map_err(anyhow::Error::from))
        .collect()
}

/// Whether a publication's gap found at start lies ahead of where capture resumes (what was written while
/// it did not exist) or behind it (an edit while capture was stopped).
enum Ahead {
    Yes,
    No,
}
/// What Postgres does with changes written while a publication did not exist.
const SKIPPED_OR_STOPS: &str = " (Postgres 18 skips such changes; Postgres 15 to 17 stop the stream at the first \
     with 'publication does not exist', and the start with --accept-gap that moves past them records that \
     stretch as a gap of its own)";

/// What a gap record says of a table whose [[tables]] entry was removed (found again by the start that
/// maps it anew).
const UNMAPPED: &str = "no longer mapped";
const MAPPED_AGAIN: &str = "is mapped again";

/// More pending gaps than capture finds between two starts (each stops capture, or names a table).
const MAX_PENDING_GAPS: usize = 256;

impl Pipeline {
    /// Stores a report carrying the pending gaps now (best effort: each later report carries them too).
    /// The stream stopped at a change written while no publication of this name existed: Postgres cannot
    /// decode it, nor anything after it up to the publication's return (QA37 M4). Refused with the fix;
    /// accepted (`--accept-gap`), the slot moves to the present and the skipped stretch is a recorded gap.
    async fn publication_missing(
        &self,
        e: anyhow::Error,
        reporter: &crate::pipeline::store::Reporter,
        acked: Lsn,
        accept: bool,
        start_stamp: Option<&catalog::PublicationStamp>,
    ) -> Failure {
        let name = &self.cfg.postgres.publication;
        let slot = &self.cfg.postgres.slot;
        let refuse = |e: anyhow::Error| {
            Failure::Fatal(e.context(format!(
                "publication {name} did not exist where the stream reached (after {acked}): it was dropped, \
                 and perhaps created again, since those changes were written, and Postgres cannot decode them \
                 through a publication made after them. They are lost to the trail. To go on, run once with \
                 --accept-gap: waltrail moves slot {slot} to the present and records the gap in the trail"
            )))
        };
        if !accept {
            return refuse(e);
        }
        let sql = match crate::pg::connect(&self.cfg).await {
            Ok(c) => c,
            Err(err) => return self.not_accepted_now(err),
        };
        // The publication this start found (or made) is still there: one dropped and created again since
        // is a drop the operator was not told of, whatever positions Postgres reported (QA40).
        match catalog::publication_stamp(&sql, name).await {
            Ok(now) => {
                let same = match (start_stamp, &now) {
                    (Some(then), Some(now)) => !then.recreated(now),
                    _ => false,
                };
                if !same {
                    return refuse(e);
                }
            }
            Err(err) => return self.not_accepted_now(err),
        }
        // Transactions that began writing before the publication was created again and are still open:
        // what they wrote without it cannot be decoded either, and Postgres meets it at their commit, after
        // the slot moved; the process would stop again for the drop it was told to accept (QA40 M1).
        let waiting_since = Instant::now();
        loop {
            match open_across(&sql, name).await {
                Ok(open) if open.is_empty() => break,
                Ok(open) if waiting_since.elapsed() >= OPEN_ACROSS_WAIT => {
                    return self.not_accepted_now(anyhow!(
                        "transaction(s) {} began writing before publication {name} was created again and are \
                         still open: Postgres cannot decode what they wrote without it either, and would stop \
                         capture again at their commit, so slot {slot} is not moved before they end. Commit or \
                         roll them back; capture retries and moves the slot once they have (--accept-gap)",
                        open.join(", ")
                    ));
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                Err(err) => return self.not_accepted_now(err),
            }
        }
        let at = self.metrics.last_commit_time_us.load(Ordering::Relaxed);
        let what = |e: tokio_postgres::Error| {
            anyhow!(
                "moving slot {slot} past the changes it cannot decode: {}",
                crate::pg::error_text(&e)
            )
        };
        let now = match wal_position(&sql, "pg_current_wal_lsn").await {
            Ok(now) => now,
            Err(Failure::Retry(err) | Failure::Fatal(err)) => return self.not_accepted_now(err),
        };
        // Pending, and the slot's new place declared as one capture may confirm, before the slot moves: the
        // next start records the gap, and does not take the slot for one moved by another.
        let gap = Gap {
            reason: format!(
                "publication {name} did not exist when changes committed after {acked} were written (it was \
                 dropped, and created again since): Postgres cannot decode them, and the slot was moved past \
                 them, and past what was committed after them until the present (--accept-gap)"
            ),
            from_lsn: Some(acked.0),
            from_time_us: (at > 0).then_some(at),
            ..Default::default()
        };
        reporter.pending_gaps.add(gap.clone());
        self.metrics
            .confirm_bound
            .fetch_max(now.0, Ordering::AcqRel);
        let moved = async {
            let report = crate::pipeline::store::source_report(&self.metrics, reporter, now.0);
            crate::store::sources::report(&self.ch, &report).await?;
            sql.query_one(
                "SELECT end_lsn::text FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
                &[slot, &now.to_string()],
            )
            .await
            .map_err(what)?;
            anyhow::Ok(())
        }
        .await;
        match moved {
            Ok(()) => {
                tracing::warn!(slot = %slot, from = %acked, to = %now, "publication missing at the stream's position: slot moved to the present (--accept-gap); the gap is recorded in the trail");
                Failure::Retry(anyhow!(
                    "slot {slot} moved past the changes written without publication {name}"
                ))
            }
            // The walsender may not have let the slot go yet: the next session meets the same change. The
            // slot did not move, so the gap is not one (QA40 L2).
            Err(err) => {
                reporter.pending_gaps.recorded(std::slice::from_ref(&gap));
                self.report_pending(reporter).await;
                self.not_accepted_now(err)
            }
        }
    }

    /// An accepted stop that could not be acted on this time: the next session meets the same stop and
    /// accepts it (QA40 L2).
    fn not_accepted_now(&self, e: anyhow::Error) -> Failure {
        self.accepting.store(true, Ordering::Release);
        Failure::Retry(e)
    }

    async fn report_pending(&self, reporter: &crate::pipeline::store::Reporter) {
        let bound = self.metrics.confirm_bound.load(Ordering::Acquire);
        let mut r = crate::pipeline::store::source_report(&self.metrics, reporter, bound);
        // Before this process confirmed anything, the positions are the last process's, not zeros.
        if self.metrics.acked_lsn.load(Ordering::Relaxed) == 0 {
            if let Ok(reports) = crate::store::sources::latest(&self.ch).await {
                if let Some(last) = reports.iter().find(|l| l.source_id == r.source_id) {
                    r.confirmed_lsn = last.confirmed_lsn;
                    r.server_lsn = last.server_lsn;
                    r.last_commit_time_us = last.last_commit_time_us;
                    r.confirm_bound_lsn = r.confirm_bound_lsn.max(last.confirm_bound_lsn);
                }
            }
        }
        if let Err(e) = crate::store::sources::report(&self.ch, &r).await {
            tracing::error!(error = %format!("{e:#}"), "the gaps found could not be reported to ClickHouse: the next start may not record them (the log above names them)");
        }
    }
}

/// Where the WAL is now, by `function` (`pg_current_wal_lsn` or `pg_current_wal_flush_lsn`).
async fn wal_position(sql: &tokio_postgres::Client, function: &str) -> Result<Lsn, Failure> {
    let at: String = sql
        .query_one(&format!("SELECT {function}()::text"), &[])
        .await
        .map_err(|e| {
            Failure::Retry(anyhow!(
                "reading the WAL position: {}",
                crate::pg::error_text(&e)
            ))
        })?
        .try_get(0)
        .map_err(|e| Failure::Retry(e.into()))?;
    at.parse().map_err(|e| {
        Failure::Retry(anyhow!(
            "Postgres gave an unreadable WAL position {at:?}: {e}"
        ))
    })
}

/// A gap found at start stops capture with `why` (what happened and the fix), unless the operator
/// accepted gaps for this run (`--accept-gap`): then it is recorded in the trail.
fn refuse_gap(accepted: bool, why: impl FnOnce() -> String) -> Result<(), Failure> {
    if accepted {
        Ok(())
    } else {
        Err(Failure::Fatal(anyhow!(why())))
    }
}

/// How many checkpoints of `source_id` committed at or after `since_us` (over items retention keeps) the
/// external copy holds, with the last one's commit position and time; `None` when it holds none (or cannot
/// be read: `run` checked it can be written).
fn copied_checkpoints(path: &str, source_id: &str, since_us: i64) -> Option<(u64, u64, i64)> {
    crate::audit::chain::checkpoints_in_file(path, source_id)?
        .into_iter()
        .filter(|c| c.commit_time_us >= since_us)
        .fold(None, |found, c| {
            let (n, lsn, t) = found.unwrap_or((0, 0, i64::MIN));
            Some((n + 1, lsn.max(c.commit_lsn), t.max(c.commit_time_us)))
        })
}

/// Append to the external copy the checkpoints of this source the store holds beyond the copy's last one
/// of each chain: those a copy that refused them, or a process stopped before writing them, never took.
/// Only checkpoints whose signature holds under a configured key are copied: one written into the store by
/// hand never reaches the copy the customer keeps. Trouble here is logged (capture goes on; the store has
/// them).
async fn catch_up_checkpoint_file(
    ch: &clickhouse::Client,
    path: &str,
    source_id: &str,
    keys: &[crate::audit::chain::PublicKey],
) -> (std::collections::HashMap<String, u64>, Vec<String>) {
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    // Each chain's checkpoint the file took last (after a wipe accepted, the new chain's, appended after
    // the old one's): the store must hold it as copied.
    let mut newest: std::collections::HashMap<String, crate::audit::chain::Checkpoint> =
        Default::default();
    for c in crate::audit::chain::checkpoints_in_file(path, source_id).unwrap_or_default() {
        let e = last.entry(c.organization_id.clone()).or_default();
        *e = (*e).max(c.chain_seq);
        newest.insert(c.organization_id.clone(), c);
    }
    let stored = match crate::store::query::source_checkpoints(ch, source_id).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the stored checkpoints to catch up integrity.checkpoint_file");
            return (last, Vec::new());
        }
    };
    let held: std::collections::HashMap<(&str, u64), crate::audit::chain::Checkpoint> = stored
        .iter()
        .map(|c| ((c.organization_id.as_str(), c.chain_seq), c.checkpoint()))
        .collect();
    // The same statement of the chain, whatever key signed it: a replay after a key rotation signs again.
    let mut unlike: Vec<String> = newest
        .values()
        .filter(|c| {
            !held
                .get(&(c.organization_id.as_str(), c.chain_seq))
                .is_some_and(|h| {
                    h.same_statement(c) && (keys.is_empty() || keys.iter().any(|k| k.verifies(h)))
                })
        })
        .map(|c| {
            format!(
                "chain {} at position {}",
                crate::audit::chain::chain_key(source_id, &c.organization_id),
                c.chain_seq
            )
        })
        .collect();
    unlike.sort();
    let mut lines = String::new();
    let mut appended: Vec<(String, u64)> = Vec::new();
    for c in stored
        .iter()
        .filter(|c| c.chain_seq > last.get(&c.organization_id).copied().unwrap_or(0))
    {
        let cp = c.checkpoint();
        if !keys
            .iter()
            .any(|k| k.key_id == cp.key_id && k.verifies(&cp))
        {
            tracing::error!(organization = %cp.organization_id, chain_seq = cp.chain_seq, key_id = %cp.key_id, "a stored checkpoint's signature does not hold under any configured key: not copied to integrity.checkpoint_file (waltrail verify names it)");
            continue;
        }
        appended.push((cp.organization_id.clone(), cp.chain_seq));
        lines.push_str(&(serde_json::json!({ "checkpoint": cp }).to_string() + "\n"));
    }
    if lines.is_empty() {
        return (last, unlike);
    }
    let n = lines.lines().count();
    let written = crate::audit::chain::append_checkpoint_lines(std::path::Path::new(path), &lines);
    match written {
        Ok(()) => {
            tracing::warn!(file = %path, checkpoints = n, "integrity.checkpoint_file lacked stored checkpoints of this source: appended");
            for (chain, seq) in appended {
                let e = last.entry(chain).or_default();
                *e = (*e).max(seq);
            }
        }
        Err(e) => {
            tracing::error!(file = %path, error = %e, checkpoints = n, "integrity.checkpoint_file lacks stored checkpoints of this source and cannot take them")
        }
    }
    (last, unlike)
}

/// Where this source's ingestion times go on from: the store's latest, so they never go back when the
/// clock does; but not one more than a day ahead of this host's clock (no clock step of ours; a row written
/// into the store), which would pin every later item's ingestion time there and keep it from expiring.
fn following_ingestion(stored: Option<i64>) -> i64 {
    let stored = stored.unwrap_or(0);
    let now = crate::store::row::now_us();
    if stored > now.saturating_add(86_400_000_000) {
        tracing::warn!(
            stored_ingested_at_us = stored,
            now_us = now,
            "the store's latest ingestion time of this source is more than a day ahead of this host's clock: \
             not followed (a row written into the store, or a clock far off); new items take this host's time"
        );
        return 0;
    }
    stored
}

/// The checkpoint signing key, if one is configured.
fn signing_key(cfg: &Config) -> anyhow::Result<Option<SigningKey>> {
    let key = crate::audit::chain::configured_keys(cfg)
        .map(|(k, _)| k)
        .map_err(|e| anyhow!("integrity: {e}"))?;
    match (cfg.integrity.signing, &key) {
        (Signing::Required, None) => Err(anyhow!(
            "integrity.signing = \"required\" but no signing key is configured: set integrity.signing_key_file or \
             WALTRAIL_SIGNING_KEY (waltrail keygen --out FILE writes one)"
        )),
        (Signing::Off, Some(_)) => Err(anyhow!(
            "integrity.signing = \"off\" but a signing key is configured (integrity.signing_key_file or \
             WALTRAIL_SIGNING_KEY): to go on unsigned, put its public key (waltrail keys prints it) in \
             integrity.trusted_keys, so that what it signed still verifies, and remove the key; or remove the \
             setting to sign"
        )),
        _ => Ok(key),
    }
}

/// Wind attribution's copy of the platform tables (loaded as they are now) back to where streaming resumes,
/// from what the slot holds beyond it: a change streamed again after a restart is then joined with the
/// sessions and accounts as they were at its commit, not as they are now (a session ended or re-pointed
/// while waltrail was down). Must run after the copy is loaded and before streaming starts (the slot is
/// read without being consumed, which needs it free).
async fn rewind_platform_tables(
    cfg: &Config,
    attribution: &mut Attribution,
    sql: &tokio_postgres::Client,
    platform: &[catalog::TableInfo],
    start: Lsn,
) -> Result<Option<AsNow>, Failure> {
    let max = cfg.attribution.rewind_max_bytes;
    if platform.is_empty() || max == 0 {
        return Ok(None);
    }
    // Not a partitioned one: its own publication names a partition's change after it (through the root),
    // and a table attached under it while waltrail was stopped, a mapped one with secrets among them,
    // would be wound back into it as its rows: a secret in an actor's name, or an actor made up (QA33 H3).
    // Its copy stays as it is now; the main stream's look stops at such a table.
    for i in platform.iter().filter(|i| i.partitioned) {
        tracing::warn!(table = %format!("{}.{}", i.schema, i.table), "attribution table is partitioned: not wound back to where streaming resumes (a change through its root cannot be told from one of a table attached under it); the changes streamed again are joined with it as it is now");
    }
    let oids: Vec<u32> = platform
        .iter()
        .filter(|i| !i.partitioned)
        .map(|i| i.oid)
        .collect();
    if oids.is_empty() {
        return Ok(None);
    }
    // The changes streamed again are those committed up to here: the copy was loaded before.
    let window_end = wal_position(sql, "pg_current_wal_lsn").await?;
    // Not wound back, while changes wait to be streamed again: the trail says which ones (QA36 M2).
    let as_now = |why: String| {
        (window_end > start).then_some(AsNow {
            to: window_end.0,
            why,
        })
    };
    let started = Instant::now();
    // Through the platform tables' own publication when there is one; it may be younger than the window
    // (Postgres then refuses it, as it decodes with the catalog of each change's time): the main one then.
    let mut publications: Vec<String> = provision::ensure_context_publication(cfg, sql)
        .await
        .into_iter()
        .collect();
    publications.push(cfg.postgres.publication.clone());
    // Only transactions streaming will deliver again: a reconnect in the same process resumes after what
    // it confirmed, which Postgres may not know yet. Applied as they arrive: a window with many changes to
    // the platform tables is never held whole.
    let mut rewinding = crate::audit::attribution::Rewinding::default();
    let mut changes = 0u64;
    let mut read = false;
    let mut through = "";
    for (i, publication) in publications.iter().enumerate() {
        let mut replayed = false;
        let platform = &mut attribution.platform;
        let r = crate::capture::peek::changes(
            sql,
            (&cfg.postgres.slot, publication),
            &oids,
            (crate::capture::peek::Messages::Rows, max),
            |b| {
                let m = crate::capture::pgoutput::decode(b)
                    .map_err(|e| anyhow!("decoding the platform tables' changes: {e}"))?;
                match &m {
                    LogicalMessage::Begin(b) => replayed = b.final_lsn >= start.0,
                    LogicalMessage::Relation(_) => platform.rewind_step(&mut rewinding, &m),
                    _ if replayed => {
                        changes += 1;
                        platform.rewind_step(&mut rewinding, &m);
                    }
                    _ => {}
                }
                Ok(())
            },
        )
        .await;
        match r {
            Ok(r) => {
                read = r;
                through = publication;
                break;
            }
            // Half wound back is neither then nor now: start over (the copy is loaded again).
            Err(e) if changes > 0 => return Err(Failure::Retry(e)),
            Err(e) if i + 1 < publications.len() => {
                tracing::debug!(publication = %publication, error = %format!("{e:#}"), "rewind through the platform tables' publication refused; trying the main one");
            }
            // Capture goes on without it (the same role streams the slot, so this should not fail):
            // stopping would hold every change back for a lesser precision of some attributions, which
            // the log says.
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot wind the platform tables back to where streaming resumes: the changes streamed again are joined with them as they are now");
                return Ok(as_now(
                    "the slot could not be read ahead to wind the platform tables back".into(),
                ));
            }
        }
    }
    if !read {
        tracing::warn!(
            rewind_max_bytes = max,
            "more WAL lies beyond the resume position than attribution.rewind_max_bytes: the changes streamed \
             again are joined with the platform tables as they are now, not as they were at their commit"
        );
        return Ok(as_now(format!(
            "more WAL lay in the slot than attribution.rewind_max_bytes ({max} bytes) allows to read ahead"
        )));
    }
    let r = rewinding.done;
    if r.restored + r.unknown > 0 {
        tracing::info!(
            rows_wound_back = r.restored,
            changes,
            publication = %through,
            took_ms = started.elapsed().as_millis() as u64,
            "platform tables wound back to where streaming resumes"
        );
    }
    if r.unknown > 0 {
        tracing::warn!(
            rows = r.unknown,
            "platform rows changed since the resume position whose earlier values the WAL does not hold (their \
             table is not at REPLICA IDENTITY FULL): the changes streamed again see them as they are now"
        );
    }
    Ok(None)
}

/// Changes streamed again after a restart, up to `to`, joined with the platform tables as they were at the
/// restart, not at their commit, and why.
struct AsNow {
    to: u64,
    why: String,
}

/// Start attribution's copy of the platform tables from what they hold now; the stream keeps it current.
async fn load_platform_tables(
    attribution: &mut Attribution,
    sql: &tokio_postgres::Client,
) -> anyhow::Result<()> {
    for (i, req) in attribution
        .platform
        .snapshot_requests()
        .into_iter()
        .enumerate()
    {
        let columns: Vec<&str> = req.columns.iter().map(String::as_str).collect();
        let rows = catalog::snapshot(sql, &req.schema, &req.table, &columns)
            .await
            .map_err(|e| {
                anyhow!(
                    "loading attribution table {}.{}: {e:#} (check the [attribution] column names)",
                    req.schema,
                    req.table
                )
            })?;
        attribution.platform.fill(i, rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{copied_checkpoints, following_ingestion};
    use crate::store::row::now_us;

    #[test]
    fn checkpoints_of_expired_items_do_not_make_a_store_look_wiped() {
        let day = 86_400_000_000;
        let line = |t: i64, source: &str| {
            let c = crate::audit::chain::Checkpoint {
                source_id: source.into(),
                organization_id: "org1".into(),
                chain_seq: 1,
                head_hash: String::new(),
                commit_lsn: t as u64,
                item_id: String::new(),
                commit_time_us: t,
                key_id: String::new(),
                signature: String::new(),
                format: 2,
                opens_after_us: None,
                signed_from: 1,
                every_items: 1000,
                roster_seq: 0,
            };
            serde_json::json!({ "checkpoint": c }).to_string()
        };
        let path = std::env::temp_dir().join(format!("waltrail-cp-{}.ndjson", std::process::id()));
        let now = now_us();
        let text = [
            line(now - 40 * day, "s"),
            line(now - 10 * day, "s"),
            line(now - day, "other"),
        ]
        .join("\n");
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap();
        // Thirty days kept: one of this source's checkpoints is over items still kept.
        assert_eq!(
            copied_checkpoints(p, "s", now - 30 * day).map(|c| c.0),
            Some(1)
        );
        // Three days kept: every item they cover expired, so an empty store is no wipe.
        assert_eq!(copied_checkpoints(p, "s", now - 3 * day), None);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn ingestion_follows_the_store_except_a_time_far_ahead() {
        assert_eq!(following_ingestion(None), 0);
        let hour_ahead = now_us() + 3_600_000_000;
        assert_eq!(
            following_ingestion(Some(hour_ahead)),
            hour_ahead,
            "a clock step back is followed"
        );
        let year_2100 = 4_102_444_800_000_000;
        assert_eq!(
            following_ingestion(Some(year_2100)),
            0,
            "a forged row is not"
        );
    }
}
