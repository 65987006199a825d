//! Which mapped table a partition's change belongs to. pgoutput (with `publish_via_partition_root = false`,
//! which a partition's own TRUNCATE needs) names the partition, and the catalog says where it belongs
//! *now*, not when a change still waiting in the slot was made. So a change is placed only by evidence that
//! its membership held when it was made (a link older than the slot, made with the partition, or read by
//! this process before the change; for a partition gone since, read intact before and after it), and
//! otherwise capture stops or records a gap: never a guess, unless the operator's `--accept-columns` says.

use anyhow::anyhow;
use std::sync::atomic::Ordering;

use super::Watchdog;
use crate::capture::catalog;
use crate::capture::Lsn;
use crate::pipeline::retry::Failure;
use crate::pipeline::store::found_gap;

/// Where this process read a membership link: from `first` on it held (made before that read: a writer of
/// the child holds an attach back until its own commit, so a change committed after the link is a change
/// made under it); and, while read untouched at each look, up to `last` (0: not yet). Between the two it
/// held without a break, whatever became of it since: a detached or dropped partition's changes committed
/// there are that table's.
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub first: u64,
    pub last: u64,
}

/// Whose member a relation was, as this process saw it.
pub(super) enum Holder {
    Known(u32),
    NotMapped,
}

impl Watchdog {
    /// The tables whose partitions are theirs: the mapped ones and the attribution ones.
    pub(super) fn known(&self) -> impl Iterator<Item = &((String, String), u32)> {
        self.tables.iter().chain(self.platform.iter())
    }

    /// Learn the known tables' partitions and children as they are now (at start, and at each look): the
    /// links there are now hold for changes committed after this read (see `resolve_partition`).
    pub async fn learn_partitions(&mut self, sql: &tokio_postgres::Client) -> Result<(), Failure> {
        let oids: Vec<u32> = self.known().map(|(_, oid)| *oid).collect();
        let (known_partitioned, _) = catalog::partitioned_among(sql, &oids)
            .await
            .map_err(Failure::Retry)?;
        let published = catalog::publishable_partitioned(sql, &self.publication)
            .await
            .map_err(Failure::Retry)?;
        self.partitioned_seen
            .extend(known_partitioned.into_iter().chain(published));
        // Read before the links: a link read untouched held there (see `catalog::links_below`).
        let before = catalog::wal_insert_lsn(sql).await.map_err(Failure::Retry)?;
        let links = catalog::links_below(sql, &oids)
            .await
            .map_err(Failure::Retry)?;
        // Read after: a link read was made before it.
        let after = if links
            .iter()
            .any(|(l, _, _)| !self.links_seen.contains_key(l))
        {
            catalog::wal_insert_lsn(sql).await.map_err(Failure::Retry)?
        } else {
            0
        };
        for (l, untouched, pending) in links {
            if pending && self.detach_pending.insert(l) {
                self.found_detach_pending(sql, l.0, l.1).await?;
            }
            let seen = self.links_seen.entry(l).or_insert(Seen {
                first: after,
                last: 0,
            });
            if untouched && seen.first <= before {
                seen.last = seen.last.max(before);
            }
        }
        Ok(())
    }

    /// A partition pending detach (`DETACH PARTITION … CONCURRENTLY`, between its steps or cancelled
    /// there): Postgres publishes no change written into it, neither one made in it directly nor one a
    /// transaction older than the detach routed into it through the mapped table (QA32 M1), so what it
    /// took while pending is missing from the trail, and the trail says so, not only the log.
    async fn found_detach_pending(
        &mut self,
        sql: &tokio_postgres::Client,
        child: u32,
        parent: u32,
    ) -> Result<(), Failure> {
        let name = |n: Option<(String, String)>, oid: u32| {
            n.map_or_else(|| format!("relation {oid}"), |(s, t)| format!("{s}.{t}"))
        };
        let partition = name(
            catalog::relation_name(sql, child)
                .await
                .map_err(Failure::Retry)?,
            child,
        );
        let table = name(
            catalog::relation_name(sql, parent)
                .await
                .map_err(Failure::Retry)?,
            parent,
        );
        tracing::warn!(partition = %partition, table = %table, "a partition of a mapped table is pending detach (DETACH PARTITION … CONCURRENTLY): Postgres publishes no change written into it until the detach ends; recorded as a gap. A detach cancelled between its steps stays pending: end it with ALTER TABLE … DETACH PARTITION … FINALIZE");
        self.pending_gaps.add(found_gap(
            partition.clone(),
            format!(
                "partition {partition} of {table} was pending detach (DETACH PARTITION … CONCURRENTLY), and \
                 Postgres publishes no change written into a partition pending detach"
            ),
            "changes written into it while pending (directly, or through the table by a transaction older than \
             the detach) are not in the trail",
        ));
        Ok(())
    }

    /// The known partitioned tables with exactly the column names of `rel` (what a partition of theirs would
    /// have), and "a table no longer mapped" beside them when one of those could have held it too.
    async fn same_columns(
        &self,
        sql: &tokio_postgres::Client,
        rel: &crate::capture::pgoutput::Relation,
    ) -> Result<Vec<(String, u32)>, Failure> {
        let mut names: Vec<&str> = rel.columns.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let mut matches = Vec::new();
        for ((schema, table), oid) in self.known() {
            let info = catalog::table_info(sql, schema, table)
                .await
                .map_err(Failure::Retry)?;
            if !info.partitioned {
                continue;
            }
            let mut have: Vec<&str> = info
                .columns
                .iter()
                .filter(|c| !info.generated.contains(c))
                .map(|c| c.as_str())
                .collect();
            have.sort_unstable();
            if have == names {
                matches.push((format!("{schema}.{table}"), *oid));
            }
        }
        // A table no longer mapped could have held it as well: never guessed then.
        let also_unmapped = self.not_mapped_shapes.some_gone
            || self
                .not_mapped_shapes
                .columns
                .iter()
                .any(|c| c.iter().map(String::as_str).eq(names.iter().copied()));
        if also_unmapped && !matches.is_empty() {
            matches.push((String::from("a table no longer mapped"), 0));
        }
        Ok(matches)
    }

    /// A relation in the stream that is no table waltrail knows and no partition of one now, its membership
    /// when its change was made unproven: most likely a partition detached or dropped before its changes
    /// were decoded (the publication sent them while it was attached). A partition has exactly its table's
    /// columns, so the one known partitioned table with the same column names is what it most likely was;
    /// but that is a guess (a partition moved between two tables of the same columns, or a table altered
    /// since, fools it), so capture stops and only `--accept-columns` takes it, for that transaction.
    /// None or several: its changes cannot be placed even so, which the log says,
    /// `waltrail_unplaced_relations_total` counts and (with a publication waltrail keeps) a gap records.
    /// `(exists, matches)`: whether the relation exists now, and [`Self::same_columns`] of it.
    fn former_partition_of(
        &mut self,
        rel: &crate::capture::pgoutput::Relation,
        (exists, matches): (bool, &[(String, u32)]),
        seen: &std::collections::BTreeSet<u32>,
        position: u64,
    ) -> Result<Option<u32>, Failure> {
        let what = format!("{}.{} (relation {})", rel.namespace, rel.name, rel.id);
        // Seen by this process under another table (or several): it may have been moved since, so the
        // columns alone do not tell.
        let agrees = seen.is_empty()
            || (seen.len() == 1 && matches.len() == 1 && seen.contains(&matches[0].1));
        match (agrees, matches) {
            (true, [(table, oid)]) => {
                let now = if exists { "detached" } else { "it is gone" };
                if !self.doubt(
                    position,
                    format!(
                        "{what} is no partition or child of a mapped table now ({now}), and this process \
                         did not see where it belonged when its change was made (it was detached or \
                         dropped while capture was stopped, or before capture read it). Its columns are \
                         those of mapped table {table} alone, but columns prove nothing (a partition \
                         moved between two tables, or a table altered since, reads the same); \
                         --accept-columns takes its changes as {table}'s"
                    ),
                ) {
                    return Ok(None);
                }
                tracing::warn!(relation = %what, table = %table, position = %Lsn(position), "a relation no longer any mapped table's member placed by its columns (--accept-columns): its changes are {table}'s (items name the partition)");
                Ok(Some(*oid))
            }
            _ => {
                self.metrics
                    .unplaced_relations
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(relation = %what, candidates = matches.len(), "a relation in the stream is no table waltrail maps and no partition of one: its changes are not audited. If it was a partition of a mapped table detached or dropped before capture reached its changes, those changes are missing from the trail");
                // A publication waltrail keeps lists nothing but mapped tables, their members and the
                // platform tables: a relation it sent was one of them, and its changes are a gap. One kept
                // by hand may publish any table, whose changes are nobody's loss while it exists; gone, it
                // may have been a partitioned table a mapped one was under (QA33 H2): a gap too.
                if self.manage_publication || !exists {
                    self.pending_gaps.add(found_gap(
                        format!("{}.{}", rel.namespace, rel.name),
                        format!(
                            "the changes of {what} were published while it belonged to a mapped table, but it was \
                             detached or dropped before capture decoded them and its table cannot be told ({} \
                             candidates)",
                            matches.len()
                        ),
                        "they are not in the trail",
                    ));
                }
                Ok(None)
            }
        }
    }

    /// A partition's Relation names the partition: make it name the mapped table it belongs to (the
    /// partition's own name kept beside), so its changes are that table's.
    ///
    /// The catalog says what a partition (or inheritance child) belongs to now, not when the change at
    /// `position` (transaction `xid`) was made: one detached from a table and attached to another while its
    /// changes waited in the slot would put them under the wrong table, with the wrong redaction (QA22).
    /// So the membership is taken only where it is certain for that change (see [`Watchdog::link_held`] and
    /// `held_when_seen`); otherwise the relation is a doubt (capture stops at the transaction's commit,
    /// naming it) or, where even the columns cannot tell, a gap.
    pub(super) async fn resolve_partition(
        &mut self,
        sql: &tokio_postgres::Client,
        rel: &mut crate::capture::pgoutput::Relation,
        position: u64,
        xid: u32,
    ) -> Result<(), Failure> {
        // A partitioned table has no rows of its own: a change under its name was published through the
        // root (publish_via_partition_root, on when it was made), and may have been made in any table
        // below it, a mapped table attached there with its own redaction among them (QA32). pgoutput does
        // not say which. A publication is refused with that setting from now on; a change it already
        // named so waits in the slot for the operator.
        let (partitioned, _) = catalog::partitioned_among(sql, &[rel.id])
            .await
            .map_err(Failure::Retry)?;
        if !partitioned.is_empty() || self.partitioned_seen.contains(&rel.id) {
            let what = format!("{}.{} (relation {})", rel.namespace, rel.name, rel.id);
            let now = match self.known().find(|(_, oid)| *oid == rel.id) {
                Some(((s, t), _)) => format!("as mapped table {s}.{t}'s"),
                None => "as not audited (a table the publication lists that is no mapped table)"
                    .to_owned(),
            };
            if !self.doubt(
                position,
                format!(
                    "a change came under the name of partitioned table {what}: the publication published \
                     partitions through their root (publish_via_partition_root) when it was made, so it may \
                     have been made in any table below {what}, a mapped table attached there with its own \
                     redaction among them, and pgoutput does not say which. Set publish_via_partition_root = \
                     false (waltrail refuses a publication with it from now on); if no mapped table was below \
                     {what} while this change waited, --accept-columns takes it {now}"
                ),
            ) {
                rel.unplaced = true;
                return Ok(());
            }
            tracing::warn!(relation = %what, position = %Lsn(position), "a change published through its root taken under that root (--accept-columns)");
        }
        // By OID only: a partition renamed to a mapped table's name for its change is still a partition.
        if let Some(((s, t), _)) = self.known().find(|(_, oid)| *oid == rel.id) {
            // A mapped table that is (or was seen as) a partition or child of another one: a row written
            // through that one lands in this one's rows, and which table's change it is (and whose
            // redaction holds) cannot be told.
            let name = format!("{s}.{t}");
            let links = catalog::member_links(sql, rel.id, &self.slot)
                .await
                .map_err(Failure::Retry)?;
            let under = links
                .iter()
                .map(|l| l.parent)
                .chain(
                    self.links_seen
                        .keys()
                        .filter(|(child, _, _)| *child == rel.id)
                        .map(|(_, parent, _)| *parent),
                )
                .find_map(|p| self.known().find(|(_, oid)| *oid == p))
                .map(|((s, t), _)| format!("{s}.{t}"));
            if let Some(parent) = under {
                return Err(Failure::Fatal(anyhow!(
                    "mapped table {name} is (or was, while capture ran) a partition or child of mapped table \
                     {parent}: a row written through {parent} is stored in {name}'s rows, so whose change it \
                     is, and whose redaction holds, cannot be told. Nothing of it is stored or confirmed (it \
                     waits in the replication slot). Detach it, or map only one of the two, and restart"
                )));
            }
            return Ok(());
        }
        let named_like = self
            .known()
            .find(|((schema, table), _)| *schema == rel.namespace && *table == rel.name)
            .map(|((s, t), _)| format!("{s}.{t}"));
        let what = format!("{}.{} (relation {})", rel.namespace, rel.name, rel.id);
        let links = catalog::member_links(sql, rel.id, &self.slot)
            .await
            .map_err(Failure::Retry)?;
        let ancestors: Vec<u32> = links.iter().map(|l| l.parent).collect();
        let now_in = ancestors
            .iter()
            .copied()
            .find(|a| self.known().any(|(_, oid)| oid == a));
        // A mapped table under another one: see above (a leaf of the inner one, here).
        let known_in_chain: Vec<String> = ancestors
            .iter()
            .filter_map(|a| self.known().find(|(_, oid)| oid == a))
            .map(|((s, t), _)| format!("{s}.{t}"))
            .collect();
        if let [inner, outer, ..] = known_in_chain.as_slice() {
            return Err(Failure::Fatal(anyhow!(
                "{what} belongs to mapped table {inner}, which is a partition or child of mapped table \
                 {outer}: a row written through {outer} is stored in {inner}'s rows, so whose change it is, \
                 and whose redaction holds, cannot be told. Nothing of it is stored or confirmed (it waits in \
                 the replication slot). Detach {inner}, or map only one of the two, and restart"
            )));
        }
        let unmapped = self
            .not_mapped
            .contains(&format!("{}.{}", rel.namespace, rel.name))
            || std::iter::once(&rel.id)
                .chain(&ancestors)
                .any(|a| self.not_mapped_oids.contains(a));
        if now_in.is_some() || unmapped {
            // Links read now hold for changes committed from here on.
            let unseen = links
                .iter()
                .any(|l| !self.links_seen.contains_key(&(l.child, l.parent, l.xmin)));
            if unseen {
                let at = catalog::wal_insert_lsn(sql).await.map_err(Failure::Retry)?;
                for l in &links {
                    self.links_seen
                        .entry((l.child, l.parent, l.xmin))
                        .or_insert(Seen { first: at, last: 0 });
                }
            }
            let mut held = links.iter().all(|l| self.link_held(l, position, xid));
            if !held {
                if let Some(table) = now_in {
                    held = self
                        .only_partitioned_holder(sql, rel.id, table, xid)
                        .await?;
                }
            }
            if !held {
                let now_name = now_in
                    .and_then(|t| self.known().find(|(_, oid)| *oid == t))
                    .map_or_else(
                        || "a table no longer mapped".to_owned(),
                        |((s, t), _)| format!("{s}.{t}"),
                    );
                if !self.doubt(
                    position,
                    format!(
                        "{what} belongs to {now_name} now, but nothing proves it did when its change was made: \
                         it was attached there after the slot's oldest change, not by an earlier transaction \
                         that created it, and this process had not seen it there before the change. It may \
                         have belonged to another table then, whose redaction and trail it is owed. If it was \
                         not moved from another table while its changes waited (a table created, attached \
                         and loaded at once is the usual case), --accept-columns takes its changes where the \
                         catalog places them now. To avoid this stop, create partitions with CREATE TABLE … \
                         PARTITION OF, or write to one attached apart only after waltrail has looked \
                         (postgres.watch_interval_ms)"
                    ),
                ) {
                    rel.unplaced = true;
                    return Ok(());
                }
                tracing::warn!(relation = %what, table = %now_name, position = %Lsn(position), "a change placed where its relation belongs now (--accept-columns)");
            }
            if now_in.is_none() {
                // A table no longer mapped, or a member of one: what its "no longer mapped" record says is
                // not in the trail, never another table's changes.
                tracing::info!(relation = %what, "changes of a table no longer mapped (its [[tables]] entry was removed) are not audited, as the trail records");
                // Bound to nothing, whatever name it carried then (a mapped table's, after a swap).
                rel.unplaced = true;
                return Ok(());
            }
        }
        // The tables this process saw it a partition or child of (at start, at looks, at its Relations).
        let seen: std::collections::BTreeSet<u32> = self
            .links_seen
            .keys()
            .filter(|(child, _, _)| *child == rel.id)
            .map(|(_, parent, _)| *parent)
            .collect();
        let table = match now_in {
            Some(t) => Some(t),
            None => {
                // Gone, named like a mapped table, one of the OIDs a start saw it with, and never seen as
                // anything's partition: that table before it was dropped and created again (its changes
                // still in the slot are its own; the recreation is a gap of its own). A partition renamed
                // to the name and dropped is not.
                let was_it = seen.is_empty()
                    && named_like.as_ref().is_some_and(|like| {
                        self.redaction
                            .oids
                            .get(like)
                            .is_some_and(|o| o.contains(&rel.id))
                    });
                if was_it
                    && catalog::relation_name(sql, rel.id)
                        .await
                        .map_err(Failure::Retry)?
                        .is_none()
                {
                    // Partitioned now, it most likely was then too, and a partitioned table has no rows
                    // of its own: its change came through the root, from any table below it (QA33 H1).
                    let now: Vec<u32> = self
                        .known()
                        .filter(|((s, t), _)| named_like.as_deref() == Some(&format!("{s}.{t}")))
                        .map(|(_, oid)| *oid)
                        .collect();
                    let (partitioned, _) = catalog::partitioned_among(sql, &now)
                        .await
                        .map_err(Failure::Retry)?;
                    if !partitioned.is_empty()
                        && !self.doubt(
                            position,
                            format!(
                                "a change came under the name of {what}, an earlier incarnation (dropped and \
                                 created again) of mapped table {}, which is partitioned: a change under a \
                                 partitioned table's name was published through the root \
                                 (publish_via_partition_root) and may have been made in any table below it, \
                                 a mapped table with its own redaction among them. If it was not partitioned \
                                 then, or nothing else was below it, --accept-columns takes it as its own",
                                named_like.as_deref().unwrap_or_default()
                            ),
                        )
                    {
                        rel.unplaced = true;
                    }
                    return Ok(());
                }
                match self.held_when_seen(rel.id, position) {
                    Some(Holder::Known(t)) => Some(t),
                    Some(Holder::NotMapped) => {
                        rel.unplaced = true;
                        return Ok(());
                    }
                    None => self.not_placed(sql, rel, &seen, position).await?,
                }
            }
        };
        if let Some(((schema, name), _)) =
            table.and_then(|t| self.known().find(|(_, oid)| *oid == t))
        {
            rel.partition = Some(format!("{}.{}", rel.namespace, rel.name));
            rel.namespace = schema.clone();
            rel.name = name.clone();
        } else if let Some(like) = named_like {
            // Placed nowhere, yet named like a mapped table: bound by that name, its changes would be stored
            // as that table's (with its redaction). Gone, it is said as unplaced (logged, counted, a gap
            // when waltrail keeps the publication: see `former_partition_of`) and bound to nothing.
            if catalog::relation_name(sql, rel.id)
                .await
                .map_err(Failure::Retry)?
                .is_none()
            {
                rel.unplaced = true;
                return Ok(());
            }
            rel.unplaced = true;
            return Err(Failure::Fatal(anyhow!(
                "{what} carries the name of mapped table {like} but is not that table (nor a partition of a \
                 mapped table now): its changes cannot be placed, so nothing of them is stored or confirmed \
                 (they wait in the replication slot). Rename it, or take it out of the publication, and \
                 restart"
            )));
        } else {
            rel.unplaced = true;
        }
        Ok(())
    }

    /// The table a relation that is nothing's member now belonged to when the change committed at
    /// `position` was made, if this process read each link up the chain held then (see [`Seen`]): a known
    /// table, or one no longer mapped.
    fn held_when_seen(&self, relation: u32, position: u64) -> Option<Holder> {
        let mut at = relation;
        for _ in 0..64 {
            let parents: std::collections::BTreeSet<u32> = self
                .links_seen
                .iter()
                .filter(|((child, _, _), seen)| {
                    *child == at && seen.first <= position && position <= seen.last
                })
                .map(|((_, parent, _), _)| *parent)
                .collect();
            let [parent] = parents.into_iter().collect::<Vec<_>>()[..] else {
                return None;
            };
            if let Some((_, oid)) = self.known().find(|(_, oid)| *oid == parent) {
                return Some(Holder::Known(*oid));
            }
            if self.not_mapped_oids.contains(&parent) {
                return Some(Holder::NotMapped);
            }
            at = parent;
        }
        None
    }

    /// A relation the publication sent that belongs to no known table now, and whose membership when its
    /// change was made nothing proves: a partition detached or dropped (with its changes waiting in the
    /// slot) while capture was stopped, or before it read the partition. See `former_partition_of`. A
    /// table a publication kept by hand lists is its own business: not audited, said in the log.
    async fn not_placed(
        &mut self,
        sql: &tokio_postgres::Client,
        rel: &crate::capture::pgoutput::Relation,
        seen: &std::collections::BTreeSet<u32>,
        position: u64,
    ) -> Result<Option<u32>, Failure> {
        let what = format!("{}.{} (relation {})", rel.namespace, rel.name, rel.id);
        let exists = catalog::relation_name(sql, rel.id)
            .await
            .map_err(Failure::Retry)?
            .is_some();
        // Seen as a member by this process, or shaped like a partition of a mapped table (exactly its
        // columns), it may be a moved partition listed by hand too, not one of the publication's own
        // tables: its changes are a doubt, or said as unplaced, like any other.
        let matches = self.same_columns(sql, rel).await?;
        if !self.manage_publication
            && seen.is_empty()
            && exists
            && matches.is_empty()
            && catalog::published_as_itself(sql, &self.publication, rel.id)
                .await
                .map_err(Failure::Retry)?
        {
            tracing::info!(relation = %what, publication = %self.publication, "a table the publication lists that is no mapped table nor a member of one: not audited");
            return Ok(None);
        }
        self.former_partition_of(rel, (exists, &matches), seen, position)
    }

    /// Whether `table` is the one table the change of partition `relation` can have been made under: a
    /// partition's change reaches the stream only if, by the catalog of the change's time (pgoutput's
    /// decision), it was under a partitioned table the publication listed; a table under none is not
    /// published at all. When the only partitioned table waltrail's publication can have listed is
    /// `table`, that is where the change was, whatever the links' dates (the usual attach and load, back to
    /// back). Tables no longer mapped, the platform tables and every mapped table as this start found it
    /// count too (listed then); one of them gone leaves the kind unknown, and a publication kept by hand, or one listing the partition itself,
    /// proves nothing. Only for a transaction (`xid`) that wrote after this start set the publication:
    /// what it listed before (a table mapped then, an inheritance child waltrail added) it no longer shows,
    /// and such a relation's change was published as its own (QA30).
    async fn only_partitioned_holder(
        &self,
        sql: &tokio_postgres::Client,
        relation: u32,
        table: u32,
        xid: u32,
    ) -> Result<bool, Failure> {
        if !self.manage_publication
            || (xid.wrapping_sub(self.listed_since_xid) as i32) <= 0
            || self.not_mapped_shapes.some_gone
            || catalog::published_as_itself(sql, &self.publication, relation)
                .await
                .map_err(Failure::Retry)?
        {
            return Ok(false);
        }
        let Some(listed) = catalog::published_partitioned(sql, &self.publication)
            .await
            .map_err(Failure::Retry)?
        else {
            return Ok(false);
        };
        // The mapped tables as this start found them count whether the publication lists them now or not:
        // one dropped (in the change's own transaction, say) is no longer listed, yet held partitions then
        // (QA31 H1), and gone, its kind is unknown.
        let others: Vec<u32> = self
            .not_mapped_oids
            .iter()
            .copied()
            .chain(self.platform.iter().map(|(_, oid)| *oid))
            .chain(self.tables.iter().map(|(_, oid)| *oid))
            .collect();
        let (also, gone) = catalog::partitioned_among(sql, &others)
            .await
            .map_err(Failure::Retry)?;
        let all: std::collections::BTreeSet<u32> = listed.into_iter().chain(also).collect();
        Ok(!gone && all.len() == 1 && all.contains(&table))
    }

    /// Whether link `l` held when the change at `position` (transaction `xid`) was made: attached before
    /// anything the slot holds, attached where the child was created by a transaction older than the
    /// change's (inside the creating transaction it could have been moved after the change; a subtransaction
    /// of the change's own has a newer id than it, never an older one), or seen by this process at or
    /// before the change's position (it is still there now, so it was never detached between).
    fn link_held(&self, l: &catalog::MemberLink, position: u64, xid: u32) -> bool {
        // Transaction ids compare modulo 2^32, as Postgres compares them.
        let older = |x: u32| (xid.wrapping_sub(x) as i32) > 0;
        l.before_slot
            || (l.with_child && older(l.xmin))
            || self
                .links_seen
                .get(&(l.child, l.parent, l.xmin))
                .is_some_and(|seen| seen.first <= position)
    }
}
