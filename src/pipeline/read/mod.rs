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

/// Looks at the source while streaming, so what the stream itself cannot say is never silent: a mapped
/// table dropped and created again (Postgres takes it out of the publication; the new one is not in it),
/// renamed, or removed from the publication; and the slot's state and what holds its WAL.
/// The tables no longer mapped as a relation's columns can be told against: a former partition whose
/// columns match one of them, or tables of theirs that are gone, may be theirs as well as a mapped table's.
#[derive(Debug, Default)]
pub struct UnmappedShapes {
    /// Each present one's column names (generated ones left out), sorted.
    pub columns: Vec<Vec<String>>,
    /// One of them is gone: its columns, and so its former partitions, cannot be told.
    pub some_gone: bool,
}

/// `run --accept-columns` is the operator's word for the change capture refused, which they checked: the
/// first transaction in doubt (where the last process stopped), committed before this start's catalog
/// read. A doubt about any other transaction, earlier in the slot's backlog or made while this process
/// runs, stops capture as always.
#[derive(Debug, Default)]
pub struct Acceptance {
    /// Changes committed at or after this position are never taken (0: the flag is off).
    pub before: u64,
    /// The commit position of the transaction taken.
    pub taken: Option<u64>,
}

impl Acceptance {
    pub fn new(on: bool, start: u64) -> Acceptance {
        Acceptance {
            before: if on { start } else { 0 },
            taken: None,
        }
    }

    /// Whether a doubt about the change of the transaction committed at `position` is taken.
    pub fn take(&mut self, position: u64) -> bool {
        if position >= self.before {
            return false;
        }
        match self.taken {
            None => {
                self.taken = Some(position);
                true
            }
            Some(p) => p == position,
        }
    }
}

pub struct Watchdog {
    /// Gaps found while streaming, carried by the source's reports until the next start records them.
    pub pending_gaps: crate::pipeline::store::PendingGaps,
    pub slot: String,
    pub publication: String,
    /// Mapped tables by schema and name, with the OID each had when capture started.
    pub tables: Vec<((String, String), u32)>,
    /// Whether waltrail may set REPLICA IDENTITY FULL (on a partition created while it streams, or a
    /// table set back by a migration).
    pub set_full: bool,
    /// Tables already warned about (not at FULL, and not set by waltrail).
    pub warned_identity: std::collections::HashSet<(String, String)>,
    /// Relations (by OID) whose changes were said to arrive without their old row.
    pub warned_relations: std::collections::HashSet<u32>,
    /// Tables whose REPLICA IDENTITY FULL could not be set (a lock held): not tried again before then, and
    /// how many times it failed (each failure doubles the wait), so a long transaction holding a new
    /// partition does not have every look queue an exclusive lock in front of the platform's queries.
    pub identity_retry: std::collections::HashMap<(String, String), (std::time::Instant, u32)>,
    /// Whether waltrail keeps the publication (adds an inheritance child created while it streams).
    pub manage_publication: bool,
    /// The attribution (platform) tables, by schema and name with their OIDs: their partitions' changes
    /// are theirs too (the publication sends them under the partitions' names).
    pub platform: Vec<((String, String), u32)>,
    /// Membership links (child, parent, `pg_inherits.xmin`) and where this process read each (see
    /// [`Seen`]).
    pub links_seen: std::collections::HashMap<(u32, u32, u32), membership::Seen>,
    /// Partitioned tables (OIDs) the publication could publish through, as this process saw them at start
    /// and at each look: a change under one of their names came through the root even when the table is
    /// gone by the time it is decoded (QA33 H1).
    pub partitioned_seen: std::collections::HashSet<u32>,
    /// The publication's row versions as the start left it and each look found it (see
    /// `catalog::publication_stamp`): a look that finds them changed knows it was edited since, even if
    /// set back before the look (QA33 H5).
    pub publication_stamp: Option<catalog::PublicationStamp>,
    /// Where the reports take the stamp from (see `pipeline::store::Reporter`).
    pub stamp_out: std::sync::Arc<std::sync::Mutex<String>>,
    /// Links a look found pending detach, recorded as a gap once each.
    pub detach_pending: std::collections::HashSet<(u32, u32, u32)>,
    /// What membership could not prove for relations of the transaction being read: capture stops at its
    /// commit naming every one, so that the operator's `--accept-columns` (which takes the whole
    /// transaction) is given knowing all it takes.
    pub doubts: Vec<String>,
    /// An id given out after this start set the publication as it is now: transactions with newer ids
    /// wrote under that publication (see `membership::only_partitioned_holder`).
    pub listed_since_xid: u32,
    pub every: Duration,
    pub last: Option<std::time::Instant>,
    /// What redaction looked like at start, and the configured tables that redact: each Relation of such a
    /// table (sent at its first change and after each schema change) is held to it, by column number, so
    /// a secret swapped under an ordinary column's name while capture runs is caught too (names alone would
    /// all still be there).
    pub redaction: crate::audit::redaction::Baseline,
    pub redacting: Vec<crate::config::TableConfig>,
    /// Tables (`schema.table`) the trail holds changes of whose [[tables]] entry was removed: their
    /// changes still in the slot are covered by their "no longer mapped" record, not lost partitions'.
    pub not_mapped: std::collections::HashSet<String>,
    /// Those tables by OID: their partitions and children arrive under their own names.
    pub not_mapped_oids: std::collections::HashSet<u32>,
    /// Those tables' shapes, for a relation no catalog explains any more (see `former_partition_of`).
    pub not_mapped_shapes: UnmappedShapes,
    /// `run --accept-columns`: the change capture refused, taken at face value (logged).
    pub accept: Acceptance,
    /// By table (as configured), the dropped redacted columns (by number) this process read dropped, and
    /// where: no change committed from there on can hold them.
    pub gone_noticed: std::collections::HashMap<String, std::collections::BTreeMap<i16, u64>>,
    /// Tables (as configured) that start took with none of their redacted columns (`--accept-columns`, no
    /// drop remembered): only these may have a change without them taken for one after a drop.
    pub accepted_none: std::collections::HashSet<String>,
    /// Each redacting table's columns (as configured) when capture started.
    pub start_columns: std::collections::HashMap<String, Vec<String>>,
    /// Counts relations placed in no mapped table (see `former_partition_of`).
    pub metrics: Arc<CaptureMetrics>,
}

impl Watchdog {
    async fn look(
        &mut self,
        sql: &tokio_postgres::Client,
        metrics: &CaptureMetrics,
    ) -> Result<(), Failure> {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            return Ok(());
        }
        self.last = Some(std::time::Instant::now());
        let health = catalog::slot_health(sql, &self.slot)
            .await
            .map_err(Failure::Retry)?;
        let code = crate::capture::metrics::slot_status_code(health.wal_status.as_deref());
        let previous = metrics.slot_wal_status.swap(code, Ordering::Relaxed);
        metrics
            .slot_safe_wal_bytes
            .store(health.safe_wal_size.unwrap_or(-1), Ordering::Relaxed);
        metrics
            .slot_retained_bytes
            .store(health.retained_bytes.unwrap_or(-1), Ordering::Relaxed);
        metrics
            .slot_unconfirmed_bytes
            .store(health.unconfirmed_bytes.unwrap_or(-1), Ordering::Relaxed);
        metrics.source_oldest_xact_ms.store(
            health.oldest_xact_age_s.map_or(-1, |s| (s * 1000.0) as i64),
            Ordering::Relaxed,
        );
        if code == 3 && previous != 3 {
            tracing::warn!(slot = %self.slot, safe_wal_bytes = health.safe_wal_size.unwrap_or(-1), "replication slot is unreserved: Postgres may remove WAL it still needs (max_slot_wal_keep_size); the trail will have a gap unless waltrail catches up");
        }
        if code == 4 {
            return Err(Failure::Fatal(anyhow!(
                crate::capture::provision::lost_slot_message(&self.slot, None)
            )));
        }
        // Checked before the table list, so the message names the real cause.
        let names: Vec<(String, String)> = self
            .tables
            .iter()
            .chain(&self.platform)
            .map(|(n, _)| n.clone())
            .collect();
        let losses = crate::capture::provision::publication_losses(sql, &self.publication, &names)
            .await
            .map_err(Failure::Retry)?;
        if let Some(problems) = losses {
            // Kinds of change left out, publishing through the root, row filters or column lists.
            if !problems.is_empty() && !self.manage_publication {
                self.pending_gaps
                    .add(publication_gap(&self.publication, &problems));
                return Err(Failure::Fatal(anyhow!(
                    "publication {} was changed while waltrail streamed: {}. What it left out or named after \
                     another table since is not in the WAL stream as it was made, so capture stops rather than \
                     leave a silent hole. Set it back ({} for its options; no row filter or column list on a \
                     mapped table) and restart waltrail: that start records the gap in the trail",
                    self.publication,
                    problems.join("; "),
                    crate::capture::provision::publication_fix(&self.publication)
                )));
            }
            if !problems.is_empty() {
                return Err(Failure::Fatal(anyhow!(
                    "publication {} was changed while waltrail streamed: {}. What it left out or named after \
                     another table since is not in the WAL stream as it was made, so capture stops rather than \
                     leave a silent hole. Restart waltrail once with --accept-gap: it sets the publication back \
                     and records the gap in the trail",
                    self.publication,
                    problems.join("; ")
                )));
            }
        }
        self.publication_edited(sql).await?;
        let names: Vec<(String, String)> = self.tables.iter().map(|(n, _)| n.clone()).collect();
        let now = catalog::published_oids(sql, &self.publication, &names)
            .await
            .map_err(Failure::Retry)?;
        for (((schema, table), oid), (current, published)) in self.tables.iter().zip(now) {
            // Renamed: the same table (its OID) under another name stays in the publication, and its changes
            // come on under the new name; nothing is missing, only the config's name is stale.
            if current.is_none() && *oid != 0 {
                if let Some((s, t)) = catalog::relation_name(sql, *oid)
                    .await
                    .map_err(Failure::Retry)?
                {
                    return Err(Failure::Fatal(anyhow!(
                        "mapped table {schema}.{table} was renamed to {s}.{t} (the same table, still in publication \
                         {}): nothing is missing from the WAL stream, but its [[tables]] entry names it no more. \
                         Set table = \"{}\" in that entry and restart waltrail (no --accept-gap: the changes wait \
                         in the replication slot)",
                        self.publication,
                        if s == "public" { t.clone() } else { format!("{s}.{t}") }
                    )));
                }
            }
            let what = match current {
                None => "is gone: dropped, or renamed (update its [[tables]] entry to the new name and restart)",
                Some(c) if c != *oid && *oid != 0 => {
                    "was dropped and created again: the rows it held went without a DELETE in the WAL, and the new table is not in the publication"
                }
                Some(_) if !published => "was removed from the publication",
                Some(_) => continue,
            };
            return Err(Failure::Fatal(anyhow!(
                "mapped table {schema}.{table} {what}. Its changes since are not in the WAL stream, so capture stops \
                 rather than leave a silent hole. Restart waltrail once with --accept-gap: it puts the table back in \
                 publication {} and records the gap in the trail",
                self.publication
            )));
        }
        self.learn_partitions(sql).await?;
        self.keep_members_published(sql).await?;
        self.keep_identity_full(sql).await
    }

    /// The publication edited since the last look, and now as it should be (a look stops at what it
    /// leaves out now): narrowed and set back between two looks, or in one transaction, it may have left
    /// changes out meanwhile (a delete with `publish` narrowed, a partition's TRUNCATE through the root)
    /// that never reach the stream. Nothing says which: the trail records a gap for that stretch.
    async fn publication_edited(&mut self, sql: &tokio_postgres::Client) -> Result<(), Failure> {
        let stamp = catalog::publication_stamp(sql, &self.publication)
            .await
            .map_err(Failure::Retry)?;
        if let (Some(was), Some(now)) = (&self.publication_stamp, &stamp) {
            let there = catalog::existing(sql, &was.tables_gone(now))
                .await
                .map_err(Failure::Retry)?;
            if was.edited_since(now, &|oid| there.contains(&oid)) {
                tracing::error!(publication = %self.publication, "the publication was edited since the last look (its options, or a table's or a schema's entry): what it left out meanwhile, if anything, is not in the trail (recorded as a gap at the next start)");
                let mut gap = found_gap(
                    String::new(),
                    format!(
                        "publication {} was edited while capture streamed (its options, or a table's or a \
                         schema's entry in it), and set as it should be again before a look read it",
                        self.publication
                    ),
                    "changes it did not publish meanwhile, if any, are not in the trail",
                );
                gap.table = None;
                self.pending_gaps.add(gap);
            }
        }
        if let Some(s) = &stamp {
            if let Ok(mut out) = self.stamp_out.lock() {
                *out = s.to_text();
            }
            self.publication_stamp = stamp;
        }
        Ok(())
    }

    /// A mapped table's partition or inheritance child made UNLOGGED (Postgres allows it for a partition,
    /// not for a published table) writes no WAL: its changes would never reach the trail, so capture stops.
    /// An inheritance child created while capture streams is not in the publication (partitions are, with
    /// their table): it is added, and what it held before is said to be outside the trail.
    async fn keep_members_published(
        &mut self,
        sql: &tokio_postgres::Client,
    ) -> Result<(), Failure> {
        let mapped: Vec<u32> = self.tables.iter().map(|(_, oid)| *oid).collect();
        let unlogged = catalog::unlogged_members(sql, &mapped)
            .await
            .map_err(Failure::Retry)?;
        if !unlogged.is_empty() {
            for t in &unlogged {
                self.pending_gaps.add(unlogged_gap(t));
            }
            return Err(Failure::Fatal(anyhow!(unlogged_message(&unlogged))));
        }
        let several = catalog::children_of_several(sql, &mapped)
            .await
            .map_err(Failure::Retry)?;
        if !several.is_empty() {
            return Err(Failure::Fatal(anyhow!(several_message(&several))));
        }
        for (schema, table) in catalog::unpublished_children(sql, &mapped, &self.publication)
            .await
            .map_err(Failure::Retry)?
        {
            let name = crate::pg::qualified(&schema, &table);
            if !self.manage_publication {
                return Err(Failure::Fatal(anyhow!(
                    "{name} inherits from a mapped table but is not in publication {}: its changes are not \
                     published. Add it (ALTER PUBLICATION {} ADD TABLE {name}) and restart; changes made to it \
                     before then are not in the trail",
                    self.publication,
                    crate::pg::quote_ident(&self.publication)
                )));
            }
            // Its identity first, in one transaction with adding it: published without one, Postgres would
            // refuse the platform's updates and deletes of it. ONLY: its own children are added on their own
            // (with them, adding it after one of them fails as a duplicate).
            let stmt = format!(
                "BEGIN; SET LOCAL lock_timeout = '100ms'; ALTER TABLE {name} REPLICA IDENTITY FULL; \
                 ALTER PUBLICATION {} ADD TABLE ONLY {name}; COMMIT",
                crate::pg::quote_ident(&self.publication)
            );
            match sql.batch_execute(&stmt).await {
                Ok(()) => match member_rows_gap(sql, &schema, &table).await {
                    None => {
                        tracing::info!(table = %name, "added an inheritance child of a mapped table to the publication")
                    }
                    Some(gap) => {
                        tracing::error!(table = %name, "added an inheritance child of a mapped table to the publication; the rows it held before (written before it was published) have no item in the trail (recorded as a gap at the next start)");
                        self.pending_gaps.add(gap);
                    }
                },
                Err(e) => {
                    let _ = sql.batch_execute("ROLLBACK").await;
                    tracing::warn!(table = %name, error = %crate::pg::error_text(&e), "cannot add an inheritance child of a mapped table to the publication yet (its changes are not published meanwhile): tried again at the next look")
                }
            }
        }
        Ok(())
    }

    /// A doubt `--accept-columns` may take, about the change committed at `position`: `true` when taken
    /// (the first transaction in doubt, committed before this start), else kept (once) for the stop at the
    /// transaction's commit, which names every doubt of it; from here on nothing of that transaction goes
    /// further than the reader (see `WalReader::on_message`).
    pub(super) fn doubt(&mut self, position: u64, text: String) -> bool {
        if self.accept.take(position) {
            return true;
        }
        if !self.doubts.contains(&text) {
            self.doubts.push(text);
        }
        false
    }

    /// A Relation of a redacted table whose columns, by number, no longer match what redaction started
    /// with (see `audit::redaction`): capture stops before anything of it is stored or confirmed. A redacted
    /// column missing from it because it was dropped is marked so on the Relation (`dropped`), for the
    /// mapping, which otherwise cannot tell a drop from a rename.
    async fn redaction_holds(
        &mut self,
        sql: &tokio_postgres::Client,
        rel: &mut crate::capture::pgoutput::Relation,
        position: u64,
    ) -> Result<(), Failure> {
        if rel.unplaced {
            return Ok(());
        }
        // The mapped table by name (a partition's Relation names it already), or by OID: a table renamed
        // in the change's own time is still the mapped table (capture binds it by OID), and its Relation
        // must be held like any other.
        let by_name = |s: &str, n: &str| {
            self.redacting.iter().find(|t| {
                let (schema, table) = crate::config::split_table(&t.table);
                schema == s && table == n
            })
        };
        // By OID first: a table renamed to another mapped table's name is still itself.
        let configured = self
            .tables
            .iter()
            .find(|(_, oid)| *oid == rel.id)
            .or_else(|| {
                self.tables
                    .iter()
                    .find(|((s, n), _)| *s == rel.namespace && *n == rel.name)
            });
        let Some(((schema, table), oid)) = configured.cloned() else {
            return Ok(());
        };
        // Owned: acceptance below changes what the watchdog holds.
        let Some(t) = by_name(&schema, &table).cloned() else {
            return Ok(());
        };
        let (schema, table, oid, t) = (&schema, &table, &oid, &t);
        // The table as it is now (by OID: under whatever name it has now): at or past this Relation, never
        // before it, so a rename still to come in the stream stops capture a little early rather than too
        // late.
        let now = catalog::relation_name(sql, *oid)
            .await
            .map_err(Failure::Retry)?;
        let Some((now_schema, now_table)) = now else {
            return Err(Failure::Fatal(anyhow!(
                "mapped table {schema}.{table} (relation {oid}) is gone: the redaction of its changes still in \
                 the slot cannot be checked against its columns. Nothing of it is stored or confirmed; if it \
                 was dropped on purpose, take its [[tables]] entry out and restart waltrail"
            )));
        };
        let mut info = catalog::table_info(sql, &now_schema, &now_table)
            .await
            .map_err(Failure::Retry)?;
        // Named as configured: what redaction remembers it by.
        (info.schema, info.table) = (schema.clone(), table.clone());
        let changed = self
            .redaction
            .changed_since(std::slice::from_ref(t), std::slice::from_ref(&info));
        if !changed.is_empty() {
            return Err(Failure::Fatal(anyhow!(changed.join("; "))));
        }
        // The Relation's own names against the relation's columns by number (a partition's own), for names
        // swapped, rotated or undone since its time, which the catalog alone cannot show.
        let numbered = catalog::numbered_columns(sql, rel.id)
            .await
            .map_err(Failure::Retry)?;
        let shown: Vec<(&str, u32)> = rel
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.type_oid))
            .collect();
        if let Some((what, names)) = crate::audit::redaction::relation_doubt(t, &shown, &numbered) {
            if !self.doubt(
                position,
                format!(
                    "{what}: a secret would then be stored in clear. {}",
                    crate::audit::redaction::relation_doubt_fix(&names)
                ),
            ) {
                return Ok(());
            }
            tracing::warn!(doubt = %what, position = %Lsn(position), "taken at face value (--accept-columns, a change from before this start): the changes of that time are stored under the names they carry");
        }
        let missing = t
            .redact_columns
            .iter()
            .any(|c| !rel.columns.iter().any(|have| have.name == *c));
        let owed = self.redaction.dropped_attnums(t, &info);
        if !missing && owed.is_empty() {
            return Ok(());
        }
        // Told by the table's own columns by number (the mapped table's, also for a partition's Relation:
        // the remembered numbers are the table's).
        let member = numbered;
        let numbered = if rel.id != info.oid {
            catalog::numbered_columns(sql, info.oid)
                .await
                .map_err(Failure::Retry)?
        } else {
            member.clone()
        };
        let live = |cols: &[crate::capture::catalog::NumberedColumn], name: &str| {
            cols.iter().any(|c| !c.dropped && c.name == name)
        };
        // A dropped secret first read dropped by this process: changes committed from here on cannot hold
        // it (the drop was committed before this read).
        if owed.iter().any(|n| {
            !self
                .gone_noticed
                .get(&t.table)
                .is_some_and(|g| g.contains_key(n))
        }) {
            let at = catalog::wal_insert_lsn(sql).await.map_err(Failure::Retry)?;
            let noticed = self.gone_noticed.entry(t.table.clone()).or_default();
            for n in &owed {
                noticed.entry(*n).or_insert(at);
            }
        }
        let noticed = self.gone_noticed.get(&t.table).cloned().unwrap_or_default();
        let mut proof = self
            .redaction
            .drop_proof(t, &info, &numbered, &shown, position, &noticed);
        // An inheritance child may keep a copy of the secret column the table's drop left it (its own, under
        // any name, merged with a column the table added since): the table's numbers prove nothing of it.
        // A partition's columns are its table's.
        if rel.id != info.oid
            && !owed.is_empty()
            && !catalog::is_partition(sql, rel.id)
                .await
                .map_err(Failure::Retry)?
        {
            let absent = std::mem::take(&mut proof.absent);
            proof.unproven.extend(absent);
            proof.unproven.sort();
            proof.unproven.dedup();
        }
        if !proof.unproven.is_empty() {
            let unvouched = self.redaction.unvouched(t, &info, &numbered, &shown);
            let text = format!(
                    "table {}{}: redacted column(s) {} were dropped, and this change (committed at {}) may be from \
                     before the drop{}: one of its columns may be the secret under another name (a redacted name \
                     it carries may be a column added since). If no secret was renamed before the drop, \
                     --accept-columns takes it; once the drop is captured, take the dropped name(s) out of \
                     redact_columns",
                    t.table,
                    rel.partition
                        .as_ref()
                        .map_or_else(String::new, |p| format!(" (its member {p})")),
                    proof.unproven.join(", "),
                    Lsn(position),
                    if unvouched.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " and carries column(s) {} that no start saw beside them (added since, of another \
                             type, or gone)",
                            unvouched.join(", ")
                        )
                    }
                );
            if !self.doubt(position, text) {
                return Ok(());
            }
            tracing::warn!(table = %t.table, columns = %proof.unproven.join(", "), position = %Lsn(position), "a change from before this start taken as not holding the dropped redacted column(s) (--accept-columns)");
            proof.absent.extend(std::mem::take(&mut proof.unproven));
            proof.absent.retain(|c| !shown.iter().any(|(n, _)| n == c));
        }
        rel.dropped = proof.absent;
        // A column that appeared since this process started, in a change without any redacted column: a
        // secret column added again under its old name and renamed would be one (the drop proven long ago
        // says nothing of it), live or gone again. A member's own columns are not the table's.
        let appeared: Vec<&str> = self
            .start_columns
            .get(&t.table)
            .map(|start| {
                shown
                    .iter()
                    .map(|(n, _)| *n)
                    .filter(|n| !start.iter().any(|c| c == n))
                    .filter(|n| live(&numbered, n) || !live(&member, n))
                    .collect()
            })
            .unwrap_or_default();
        let none_there = t
            .redact_columns
            .iter()
            .all(|c| !rel.columns.iter().any(|have| have.name == *c));
        if !rel.dropped.is_empty()
            && !appeared.is_empty()
            && !self.accepted_none.contains(&t.table)
            && !self.doubt(
                position,
                format!(
                    "table {}: a change lacks redacted column(s) {} and carries column(s) {} that appeared \
                     since capture started: one of them may be a secret column under another name. If none \
                     holds a secret, --accept-columns takes it; if one does, add its name to redact_columns",
                    t.table,
                    rel.dropped.join(", "),
                    appeared.join(", ")
                ),
            )
        {
            return Ok(());
        }
        if rel.dropped.is_empty() && none_there && !self.accepted_none.contains(&t.table) {
            // Redacted columns the table has now: renamed away for this change and back since, so the
            // change carries the secret under a name the config does not redact.
            let renamed_back = t
                .redact_columns
                .iter()
                .any(|c| numbered.iter().any(|n| !n.dropped && n.name == *c));
            let carried: Vec<&str> = rel
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .filter(|n| !numbered.iter().any(|c| !c.dropped && c.name == *n))
                .collect();
            return Err(Failure::Fatal(anyhow!(
                "table {}: a change has none of its redacted columns ({}). A secret may be stored in clear \
                 under another name, so nothing of the table is stored or confirmed (the change waits in the \
                 replication slot). {}",
                t.table,
                t.redact_columns.join(", "),
                if renamed_back {
                    format!(
                        "The table has them again: renamed for this change and back. Add the name(s) it \
                         carries instead ({}) to redact_columns and optional_columns until the changes of \
                         that time are captured, and restart",
                        if carried.is_empty() {
                            "see the columns of that time".to_owned()
                        } else {
                            carried.join(", ")
                        }
                    )
                } else {
                    "If the redacted columns were dropped and no secret moved, restart once with `waltrail \
                     run --accept-columns`; if a secret was renamed, add its new name to redact_columns"
                        .to_owned()
                }
            )));
        }
        if rel.dropped.is_empty() && self.accepted_none.contains(&t.table) {
            // The operator took this table as it is at start (`--accept-columns`, none of its redacted
            // columns there and no drop remembered): a change whose every column is a column of the table
            // now, of the same type, holds none of them under another name it could be stored by.
            let plain = shown.iter().all(|(name, type_oid)| {
                numbered.iter().any(|n| {
                    !n.dropped && !n.generated && n.name == *name && n.type_oid == *type_oid
                })
            });
            if plain {
                tracing::warn!(table = %t.table, "redacted column(s) missing from the stream's columns taken for dropped (--accept-columns at start)");
                rel.dropped = t.redact_columns.clone();
            }
        }
        Ok(())
    }

    /// A Relation of a mapped table (or a member of one) not at REPLICA IDENTITY FULL: its changes from
    /// here carry no old row (an update that moves a resource to another organization is then seen in the
    /// new one only). Said once per relation, and FULL is set now rather than at the next look, so that the
    /// stretch ends with the changes already in the WAL.
    async fn identity_not_full(
        &mut self,
        sql: &tokio_postgres::Client,
        rel: &crate::capture::pgoutput::Relation,
    ) -> Result<(), Failure> {
        let mapped = self
            .known()
            .any(|((s, t), oid)| (*s == rel.namespace && *t == rel.name) || *oid == rel.id);
        if rel.replica_identity == b'f' || !mapped {
            return Ok(());
        }
        let name = rel
            .partition
            .clone()
            .unwrap_or_else(|| format!("{}.{}", rel.namespace, rel.name));
        if self.warned_relations.insert(rel.id) {
            tracing::warn!(table = %format!("{}.{}", rel.namespace, rel.name), relation = %name, "changes of a mapped table arrive without their old row (REPLICA IDENTITY was not FULL when they were written: a partition or child just created, or a migration set it back): their updates show no before-values and cannot show a resource moving to another organization (it is recorded in the new one only), and their deletes take their organization from the trail");
        }
        if self.set_full {
            self.keep_identity_full(sql).await?;
        }
        Ok(())
    }

    /// A partition created while streaming starts at REPLICA IDENTITY DEFAULT, and a migration may set a
    /// table back: their deletes would then carry the key alone (no organization, no before-values), and a
    /// platform table's changes could not be wound back at the next start.
    async fn keep_identity_full(&mut self, sql: &tokio_postgres::Client) -> Result<(), Failure> {
        let oids: Vec<u32> = self.known().map(|(_, oid)| *oid).collect();
        let not_full = catalog::not_at_identity_full(sql, &oids)
            .await
            .map_err(Failure::Retry)?;
        for (schema, table) in not_full {
            let name = format!("{schema}.{table}");
            let key = (schema.clone(), table.clone());
            if self
                .identity_retry
                .get(&key)
                .is_some_and(|(at, _)| std::time::Instant::now() < *at)
            {
                continue;
            }
            if self.set_full {
                // The reader waits for this, and while the ALTER waits for its lock every query on the table
                // (a partitioned one: every query not pruned to other partitions) queues behind it: a short
                // wait, and a doubling pause after each failure (a long transaction holding the table).
                // The setting stays on this connection, whose other statements are catalog reads.
                let stmt = format!(
                    "SET lock_timeout = '100ms'; ALTER TABLE {} REPLICA IDENTITY FULL",
                    crate::pg::qualified(&schema, &table)
                );
                match sql.batch_execute(&stmt).await {
                    Ok(()) => {
                        self.identity_retry.remove(&key);
                        tracing::info!(table = %name, "set REPLICA IDENTITY FULL (a new partition or child, or set back since)");
                        continue;
                    }
                    Err(e) => {
                        let failures = self.identity_retry.get(&key).map_or(0, |(_, n)| *n) + 1;
                        let pause = self.every.saturating_mul(1 << failures.min(6));
                        self.identity_retry
                            .insert(key.clone(), (std::time::Instant::now() + pause, failures));
                        if self.warned_identity.insert(key) {
                            tracing::warn!(table = %name, error = %crate::pg::error_text(&e), "cannot set REPLICA IDENTITY FULL (tried again later, after a longer pause each time): meanwhile its updates lack before-values and its deletes carry the key alone (their organization is then taken from the trail), and on a table without a primary key Postgres refuses the platform's updates and deletes; a lock timeout means a long transaction holds the table (it passes once that ends), any other error that waltrail's role must own the table");
                        }
                    }
                }
            } else if self.warned_identity.insert((schema, table)) {
                tracing::warn!(table = %name, "table is not at REPLICA IDENTITY FULL (postgres.set_replica_identity_full = false): its deletes carry the key alone (their organization is then taken from the trail) and its updates lack before-values; run ALTER TABLE ... REPLICA IDENTITY FULL");
            }
        }
        Ok(())
    }
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
