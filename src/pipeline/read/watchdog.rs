//! The watchdog: looks at the source while streaming, so what the stream itself cannot say is never
//! silent (a mapped table dropped, renamed or out of the publication, a publication edited, a redacted
//! column renamed, the slot's state). Its partition bookkeeping is in `membership`.

use anyhow::anyhow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::membership;
use super::{member_rows_gap, publication_gap, several_message, unlogged_gap, unlogged_message};
use crate::capture::catalog;
use crate::capture::metrics::CaptureMetrics;
use crate::capture::Lsn;
use crate::pipeline::retry::Failure;
use crate::pipeline::store::found_gap;

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

/// Looks at the source while streaming, so what the stream itself cannot say is never silent: a mapped
/// table dropped and created again (Postgres takes it out of the publication; the new one is not in it),
/// renamed, or removed from the publication; and the slot's state and what holds its WAL.
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
    pub(super) async fn look(
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
    pub(super) async fn publication_edited(
        &mut self,
        sql: &tokio_postgres::Client,
    ) -> Result<(), Failure> {
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
    pub(super) async fn keep_members_published(
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
    pub(super) async fn redaction_holds(
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
    pub(super) async fn identity_not_full(
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
    pub(super) async fn keep_identity_full(
        &mut self,
        sql: &tokio_postgres::Client,
    ) -> Result<(), Failure> {
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
