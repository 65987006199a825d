//! Redaction by column number: what names alone cannot show.
//!
//! Inside one process, `mapping::redaction_holds` stops capture when a redacted column disappears while a
//! column nobody named appears (a secret renamed). That guard's baseline is the catalog at the process's
//! start, so a plain restart after it fired would take the renamed column for an old ordinary one and store
//! the secret in clear. The [`Baseline`] therefore outlives the process: each start remembers, with the
//! source's reports in the store, each redacted column by its number (`attnum`: kept by a rename, never
//! reused after a drop) and each table's highest column number; the next start compares the catalog with it.
//! And [`relation_hides_secret`] holds each Relation message of a redacted table (the names of its time)
//! to the relation's columns by number as they are now: swaps, rotations and renames undone since.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::audit::attribution::seal::{hex, unhex_upto, SealKey};
use crate::capture::catalog::{NumberedColumn, TableInfo};
use crate::config::TableConfig;

/// Bumped when the encoding changes; a start refuses a baseline of a version it does not know.
const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub v: u32,
    /// By table, as `schema.table`.
    pub tables: BTreeMap<String, TableBaseline>,
    /// HMAC-SHA256 of the rest (and the source id) with the deployment's event secret: a baseline only
    /// capture could have written. Only a sealed baseline proves a redacted column dropped; one without a
    /// seal (an earlier version's, or one whose seal was removed) compares as before, and a wrong seal stops
    /// the start.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub seal: String,
    /// Whether its entries may prove a column dropped: the seal held when read, or capture made it now
    /// (carrying dropped columns only from a sealed baseline). Never stored.
    #[serde(skip)]
    pub sealed: bool,
    /// Where the catalog it was made of was read ([`Baseline::seen_at`]); 0 when not made now.
    #[serde(skip)]
    pub read_at: u64,
    /// Every mapped table (`schema.table`, redacting or not) with the OIDs it had at starts, latest last:
    /// a relation gone from the catalog whose changes still wait in the slot under a mapped table's name
    /// is that table's earlier incarnation (dropped and created again) only when its OID is one of them,
    /// not a partition renamed to that name and dropped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub oids: BTreeMap<String, Vec<u32>>,
}

/// How many OIDs of each mapped table a baseline keeps.
const OIDS_KEPT: usize = 8;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableBaseline {
    /// The table's OID: a table dropped and created again numbers its columns afresh, so it is not compared.
    pub oid: u32,
    /// Every column added since has a higher number.
    pub max_attnum: i16,
    /// The redacted columns the table had.
    pub redacted: Vec<RedactedColumn>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedactedColumn {
    pub attnum: i16,
    pub name: String,
    /// Its type's category (`pg_type.typcategory`, a domain's base type's; "" not read): a secret moved to a
    /// new column keeps its kind of type (text to varchar is still a string).
    pub type_category: String,
    /// Already gone from the table at a start that remembered it (kept while the config still redacts the
    /// name: older changes in the slot may carry it, and only its number shows that it was dropped rather
    /// than misspelt or renamed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dropped: bool,
    /// The WAL insert position just after the catalog read of the last start that saw the column live, and
    /// the highest column number the table had then (dropped ones included). A change at or after that
    /// position whose every column is a column of the table now, numbered at most that, cannot hold this
    /// column under another name: every one of them existed then beside it, and still does.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seen_at_lsn: u64,
    #[serde(default, skip_serializing_if = "is_zero_i16")]
    pub live_max: i16,
    /// The same position of the first start that found it dropped: the drop was committed before it, so
    /// no change at or after it can hold the column, whatever its names.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub gone_at_lsn: u64,
    /// The table's generated columns (by number) at `seen_at_lsn`: never sent in a change then, so a change
    /// naming one (made plain since, `DROP EXPRESSION`) carries some other column under its name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub generated_then: Vec<i16>,
}

/// What a change proves of a table's dropped redacted columns ([`Baseline::drop_proof`]).
#[derive(Debug, Default, PartialEq)]
pub struct DropProof {
    /// Proven not in the change, and missing from its names: dropped, for the mapping.
    pub absent: Vec<String>,
    /// Could be in the change under another name: capture must not store it.
    pub unproven: Vec<String>,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_zero_i16(n: &i16) -> bool {
    *n == 0
}

fn qualified(info: &TableInfo) -> String {
    format!("{}.{}", info.schema, info.table)
}

impl Baseline {
    /// The baseline the catalog gives now, for the configured tables (paired by position) that redact.
    pub fn of(tables: &[TableConfig], infos: &[TableInfo]) -> Baseline {
        let tables = tables
            .iter()
            .zip(infos)
            .filter(|(t, i)| {
                i.exists && !t.redact_columns.is_empty() && i.attnums.len() == i.columns.len()
            })
            .map(|(t, i)| {
                let redacted = i
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| t.redact_columns.contains(c))
                    .map(|(p, c)| RedactedColumn {
                        attnum: i.attnums[p],
                        name: c.clone(),
                        type_category: i
                            .column_types
                            .get(p)
                            .map_or_else(String::new, |t| t.1.to_string()),
                        dropped: false,
                        seen_at_lsn: 0,
                        live_max: 0,
                        gone_at_lsn: 0,
                        generated_then: Vec::new(),
                    })
                    .collect();
                (
                    qualified(i),
                    TableBaseline {
                        oid: i.oid,
                        max_attnum: i.attnums.iter().copied().max().unwrap_or(0),
                        redacted,
                    },
                )
            })
            .collect();
        Baseline {
            v: VERSION,
            tables,
            ..Baseline::default()
        }
    }

    /// Where the catalog this baseline was made of was read: the WAL insert position just after the read
    /// (see [`RedactedColumn::seen_at_lsn`]), and each table's highest column number, dropped ones included.
    pub fn seen_at(mut self, lsn: u64, infos: &[TableInfo]) -> Baseline {
        self.read_at = lsn;
        for i in infos {
            let Some(t) = self.tables.get_mut(&qualified(i)) else {
                continue;
            };
            let max = i
                .attnums
                .iter()
                .chain(&i.dropped_attnums)
                .copied()
                .max()
                .unwrap_or(0);
            let generated: Vec<i16> = i
                .columns
                .iter()
                .zip(&i.attnums)
                .filter(|(c, _)| i.generated.contains(c))
                .map(|(_, n)| *n)
                .collect();
            for c in t.redacted.iter_mut().filter(|c| !c.dropped) {
                c.seen_at_lsn = lsn;
                c.live_max = max;
                c.generated_then = generated.clone();
            }
        }
        self
    }

    /// This baseline, keeping what `remembered` says of tables it has nothing of (a start whose config
    /// does not redact a table, or not map it, must not forget how the table's secrets were numbered), and
    /// of each table the redacted columns dropped since that the config still redacts (marked dropped).
    /// `tables` and `infos` are the ones this baseline was made [`of`](Baseline::of).
    pub fn carrying(
        mut self,
        remembered: Option<Baseline>,
        tables: &[TableConfig],
        infos: &[TableInfo],
    ) -> Baseline {
        // What was dropped is carried on only from a baseline capture sealed: this one is sealed when
        // stored, and must not vouch for entries someone else wrote.
        let sealed = remembered.as_ref().is_some_and(|b| b.sealed);
        let (mut remembered, remembered_oids) =
            remembered.map(|b| (b.tables, b.oids)).unwrap_or_default();
        // Only a sealed baseline's OIDs say what a mapped table was before (see `oids`).
        if sealed {
            self.oids = remembered_oids;
        }
        for i in infos.iter().filter(|i| i.exists) {
            let oids = self.oids.entry(qualified(i)).or_default();
            if !oids.contains(&i.oid) {
                oids.push(i.oid);
            }
            // The latest few: a table dropped and created again more often than that, with changes of
            // each incarnation still waiting, stops on the oldest (named like it, and not it).
            let over = oids.len().saturating_sub(OIDS_KEPT);
            oids.drain(..over);
        }
        for (t, i) in tables.iter().zip(infos) {
            let name = qualified(i);
            let (Some(now), Some(was)) = (self.tables.get_mut(&name), remembered.get(&name)) else {
                continue;
            };
            if was.oid != now.oid {
                continue;
            }
            for c in was.redacted.iter().filter(|_| sealed) {
                if t.redact_columns.contains(&c.name) && !i.attnums.contains(&c.attnum) {
                    // Found dropped now for the first time: gone before this start's catalog read.
                    let gone_at_lsn = if c.dropped && c.gone_at_lsn > 0 {
                        c.gone_at_lsn
                    } else {
                        self.read_at
                    };
                    now.redacted.push(RedactedColumn {
                        dropped: true,
                        gone_at_lsn,
                        ..c.clone()
                    });
                }
            }
            remembered.remove(&name);
        }
        for (table, mut was) in remembered {
            // Kept for what it says of renames; from an unsealed baseline, never as a proof of a drop once
            // this one is sealed.
            if !sealed {
                for c in &mut was.redacted {
                    c.dropped = false;
                    c.seen_at_lsn = 0;
                    c.live_max = 0;
                    c.gone_at_lsn = 0;
                    c.generated_then.clear();
                }
            }
            self.tables.entry(table).or_insert(was);
        }
        self.sealed = true;
        self
    }

    /// The redacted columns of table `t` that were dropped, as this baseline (sealed) remembers them and the
    /// config still redacts them: their numbers are columns Postgres keeps as dropped. A name missing from
    /// the table because the column is gone, not misspelt nor renamed (a rename keeps the number).
    pub fn dropped(&self, t: &TableConfig, i: &TableInfo) -> Vec<String> {
        self.dropped_columns(t, i).map(|c| c.name.clone()).collect()
    }

    fn dropped_columns<'a>(
        &'a self,
        t: &'a TableConfig,
        i: &'a TableInfo,
    ) -> impl Iterator<Item = &'a RedactedColumn> + 'a {
        let was = self
            .tables
            .get(&qualified(i))
            .filter(|was| self.sealed && i.exists && i.oid == was.oid);
        was.into_iter().flat_map(move |was| {
            was.redacted.iter().filter(move |c| {
                t.redact_columns.contains(&c.name)
                    && c.seen_at_lsn > 0
                    && !i.attnums.contains(&c.attnum)
                    && i.dropped_attnums.contains(&c.attnum)
            })
        })
    }

    /// The redacted columns of `t` missing from a change's columns (`shown`: names and type OIDs, at WAL
    /// position `position`) that cannot be in it under another name (see [`Baseline::drop_proof`]).
    #[cfg(test)]
    pub fn dropped_at(
        &self,
        t: &TableConfig,
        i: &TableInfo,
        numbered: &[NumberedColumn],
        shown: &[(&str, u32)],
        position: u64,
    ) -> Vec<String> {
        self.drop_proof(t, i, numbered, shown, position, &BTreeMap::new())
            .absent
    }

    /// What a change (`shown`: names and type OIDs, at WAL position `position`) proves of each redacted
    /// column of `t` this baseline remembers as dropped (see [`Baseline::dropped`]). Every such column is
    /// owed a proof by every change, whatever names it carries: a change made before the drop may carry
    /// the column under any name, while its redacted name is missing, or is another redacted column's, or
    /// a column added since under that name. A column is proven not in the change when the change was
    /// committed at or after a position where the catalog had it dropped already (`gone_at_lsn`, or
    /// `noticed_gone` by attnum: where this process first read it dropped) and every column of the change
    /// is a column of the table now; or when the change was committed at or after where a start saw it
    /// live and each of its columns is a column of the table now, of the same type, not generated then,
    /// that existed then, or the secret's own name, in number order (all of those are in any change since,
    /// so none is left over for the secret under another name). A change carrying another dropped secret's
    /// name proves nothing for this one.
    pub fn drop_proof(
        &self,
        t: &TableConfig,
        i: &TableInfo,
        numbered: &[NumberedColumn],
        shown: &[(&str, u32)],
        position: u64,
        noticed_gone: &BTreeMap<i16, u64>,
    ) -> DropProof {
        let live = |name: &str, type_oid: u32| {
            numbered
                .iter()
                .any(|n| !n.dropped && !n.generated && n.name == name && n.type_oid == type_oid)
        };
        let all_live = shown.iter().all(|(name, type_oid)| live(name, *type_oid));
        let mut out = DropProof::default();
        let owed: Vec<&RedactedColumn> = self.dropped_columns(t, i).collect();
        for c in &owed {
            let gone_at = [
                c.gone_at_lsn,
                noticed_gone.get(&c.attnum).copied().unwrap_or(0),
            ]
            .into_iter()
            .filter(|g| *g > 0)
            .min();
            let after_gone = gone_at.is_some_and(|g| position >= g) && all_live;
            let beside_then = position >= c.seen_at_lsn && {
                // Each column of the change given the number it must have: a live one's by its name now
                // (it must have existed beside the secret then, not generated, of the same type), a gone
                // one's only when it is this secret's remembered name (the change from before the drop
                // carrying it under its own name). Those numbers must rise in the change's order, as
                // Postgres lists columns: every live column of then is in the change, so with at most one
                // more name the change holds exactly those and perhaps the secret, in its own place.
                let mut last = i16::MIN;
                shown.iter().all(|(name, type_oid)| {
                    // This secret's own name stands for it, even where a column added since has the name:
                    // either way that column is redacted, and the count still leaves no room for the
                    // secret elsewhere. Only its own: another dropped secret's name frees a number for this
                    // one to sit under a live column's name (QA23).
                    let number = if c.name == *name {
                        Some(c.attnum)
                    } else {
                        numbered
                            .iter()
                            .find(|n| !n.dropped && n.name == *name)
                            .and_then(|n| {
                                (!n.generated
                                    && !c.generated_then.contains(&n.attnum)
                                    && n.type_oid == *type_oid
                                    && n.attnum <= c.live_max)
                                    .then_some(n.attnum)
                            })
                    };
                    match number {
                        Some(n) if n > last => {
                            last = n;
                            true
                        }
                        _ => false,
                    }
                })
            };
            if after_gone || beside_then {
                if !shown.iter().any(|(n, _)| *n == c.name) {
                    out.absent.push(c.name.clone());
                }
            } else {
                out.unproven.push(c.name.clone());
            }
        }
        out
    }

    /// The numbers of the redacted columns of `t` this baseline remembers as dropped.
    pub fn dropped_attnums(&self, t: &TableConfig, i: &TableInfo) -> Vec<i16> {
        self.dropped_columns(t, i).map(|c| c.attnum).collect()
    }

    /// The columns of a change (`shown`) that no start vouched for as existing beside the dropped redacted
    /// columns of `t`: not a column of the table now, generated, of another type, or added after the last
    /// start that saw one of them live. Where the secret could be.
    pub fn unvouched(
        &self,
        t: &TableConfig,
        i: &TableInfo,
        numbered: &[NumberedColumn],
        shown: &[(&str, u32)],
    ) -> Vec<String> {
        let live_max = self
            .dropped_columns(t, i)
            .map(|c| c.live_max)
            .max()
            .unwrap_or(0);
        shown
            .iter()
            .filter(|(name, type_oid)| {
                !numbered.iter().any(|n| {
                    !n.dropped
                        && !n.generated
                        && n.name == *name
                        && n.type_oid == *type_oid
                        && n.attnum <= live_max
                })
            })
            .map(|(name, _)| (*name).to_owned())
            .collect()
    }

    /// This baseline as stored: sealed for source `source_id` with `key`.
    pub fn sealed_json(&self, key: &SealKey, source_id: &str) -> String {
        let mut b = self.clone();
        b.seal = String::new();
        let body = b.to_json();
        b.seal = key.seal(seal_input(source_id, &body).as_bytes());
        b.to_json()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored baseline; an error (with the way out) when it cannot be read, since comparing nothing would
    /// pass a renamed secret, or when its seal does not hold under `key` (none: not checked, and it proves
    /// no drop).
    pub fn parse(stored: &str, source_id: &str, key: Option<&SealKey>) -> Result<Baseline, String> {
        let mut b: Baseline =
            serde_json::from_str(stored).map_err(|e| unreadable(source_id, &e))?;
        if b.v != VERSION {
            return Err(unreadable(
                source_id,
                &format!("version {} (this waltrail knows {VERSION})", b.v),
            ));
        }
        if let (false, Some(key)) = (b.seal.is_empty(), key) {
            let seal = std::mem::take(&mut b.seal);
            let body = b.to_json();
            if !key.verify(seal_input(source_id, &body).as_bytes(), &seal) {
                return Err(unreadable(
                    source_id,
                    &"its seal does not hold: written by someone other than capture, or under another \
                      security.event_secret",
                ));
            }
            b.seal = seal;
            b.sealed = true;
        }
        Ok(b)
    }

    /// What changed since this baseline that could put a secret in clear, one message with its fix per
    /// table: a redacted column renamed to a name `redact_columns` does not hold, or a redacted column
    /// dropped while columns nobody named were added and no redacted name took its place. A redacted name
    /// taken out of `redact_columns` is the operator's word that it holds no secret any more.
    pub fn changed_since(&self, tables: &[TableConfig], infos: &[TableInfo]) -> Vec<String> {
        let mut out = Vec::new();
        for (t, i) in tables.iter().zip(infos) {
            let Some(was) = self.tables.get(&qualified(i)) else {
                continue;
            };
            if !i.exists || i.oid != was.oid || i.attnums.len() != i.columns.len() {
                continue;
            }
            let name_of = |n: i16| {
                i.attnums
                    .iter()
                    .position(|&a| a == n)
                    .map(|p| i.columns[p].as_str())
            };
            let still_redacted: Vec<&RedactedColumn> = was
                .redacted
                .iter()
                .filter(|c| t.redact_columns.contains(&c.name))
                .collect();
            let renamed: Vec<(&str, &str)> = still_redacted
                .iter()
                .filter_map(|c| {
                    let (n, old) = (c.attnum, &c.name);
                    let now = name_of(n)?;
                    // An ignored column is not stored at all.
                    let covered = t
                        .redact_columns
                        .iter()
                        .chain(&t.ignore_columns)
                        .any(|r| r == now);
                    (now != old && !covered).then_some((old.as_str(), now))
                })
                .collect();
            if !renamed.is_empty() {
                out.push(format!(
                    "table {}: redacted column(s) {} renamed since waltrail last started (by column number, as \
                     remembered in ClickHouse), and redact_columns does not name the new name: its values would \
                     be stored in clear. Add the new name to redact_columns (and the old one to optional_columns \
                     while older changes in the slot carry it); if the column holds no secret any more, take the \
                     old name out of redact_columns. Nothing is stored or confirmed until then: the changes wait \
                     in the replication slot",
                    qualified(i),
                    renamed
                        .iter()
                        .map(|(old, now)| format!("{old:?} → {now:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                continue;
            }
            // Also one already gone at the last start: a column added since under the secret's name and
            // renamed before this start would otherwise pass for the old drop (the name is still redacted;
            // take it out of redact_columns once the drop is captured).
            let dropped: Vec<&RedactedColumn> = still_redacted
                .iter()
                .copied()
                .filter(|c| name_of(c.attnum).is_none())
                .collect();
            let added = |c: &&String| {
                i.columns
                    .iter()
                    .position(|have| have == *c)
                    .is_some_and(|p| i.attnums[p] > was.max_attnum)
            };
            let took_over = t.redact_columns.iter().filter(added).count();
            let named: Vec<&String> = t.named_columns().collect();
            // Only a new column that could hold what a dropped one held: of its kind of type (string,
            // number, date…; an unread one could be any).
            let could_hold = |c: &&String| {
                let category = i
                    .columns
                    .iter()
                    .position(|have| have == *c)
                    .and_then(|p| i.column_types.get(p))
                    .map_or_else(String::new, |t| t.1.to_string());
                dropped.iter().any(|d| {
                    d.type_category.is_empty() || category.is_empty() || d.type_category == category
                })
            };
            let appeared: Vec<&String> = i
                .columns
                .iter()
                .filter(added)
                .filter(|c| !named.contains(c))
                .filter(could_hold)
                .collect();
            if dropped.len() > took_over && !appeared.is_empty() {
                out.push(format!(
                    "table {}: redacted column(s) {} dropped and column(s) {} of the same kind of type added since \
                     waltrail last started (as remembered in ClickHouse): if a secret moved to a new column, it \
                     would be stored in clear. Add the new column's name to redact_columns; if no secret moved \
                     there, start once with --accept-columns (keep the dropped name in redact_columns and \
                     optional_columns while older changes in the slot carry it). Nothing is stored or confirmed \
                     until then: the changes wait in the replication slot",
                    qualified(i),
                    dropped
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    appeared
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        out
    }
}

fn seal_input(source_id: &str, body: &str) -> String {
    format!("waltrail-redaction-baseline-v1\n{source_id}\n{body}")
}

fn unreadable(source_id: &str, why: &dyn std::fmt::Display) -> String {
    let quoted = source_id.replace('\\', "\\\\").replace('\'', "\\'");
    format!(
        "the redaction baseline of source {source_id} stored in ClickHouse (waltrail_sources.redaction_baseline) \
         cannot be read ({why}): waltrail cannot tell whether a redacted column was renamed while it was stopped. \
         Check each redacted table's columns by hand, then clear it: ALTER TABLE waltrail_sources UPDATE \
         redaction_baseline = '' WHERE source_id = '{quoted}' (on a cluster: ALTER TABLE waltrail_sources_local ON \
         CLUSTER … UPDATE …)"
    )
}

/// What a Relation of table `t` (its columns' names and type OIDs, in order) says against the relation's
/// columns by number now: `None` when no redacted column could hide under another name; else what is in
/// doubt, said plainly, and the names in doubt (quoted), for the message and the fix.
pub fn relation_doubt(
    t: &TableConfig,
    shown: &[(&str, u32)],
    numbered: &[NumberedColumn],
) -> Option<(String, Vec<String>)> {
    let redacted = |c: &str| t.redact_columns.iter().any(|r| r == c);
    let covered = |c: &str| redacted(c) || t.ignore_columns.iter().any(|r| r == c);
    let doubts = relation_hides_secret(shown, numbered, redacted, covered);
    if doubts.is_empty() {
        return None;
    }
    let names: Vec<String> = doubts.iter().map(|(n, _)| format!("{n:?}")).collect();
    let pairs: Vec<String> = doubts
        .iter()
        .map(|(n, s)| format!("{n:?} may be what the table now calls {s:?}"))
        .collect();
    Some((
        format!(
            "table {}: at this point of the stream its columns carry other names than now ({}), renamed or \
             swapped since (and perhaps renamed back), or dropped and added again",
            t.table,
            pairs.join("; ")
        ),
        names,
    ))
}

/// The fix for a [`relation_doubt`]: what to do whether or not a secret moved.
pub fn relation_doubt_fix(names: &[String]) -> String {
    format!(
        "if a secret did move, add {} to redact_columns and optional_columns until the changes of that time are \
         captured (or to ignore_columns); if you know no secret moved (a column dropped and added again, an \
         ordinary rename), restart once with --accept-columns",
        names.join(", ")
    )
}

/// The names under which a Relation (its columns' names and type OIDs, in the order it lists them) could
/// carry a redacted column while they are neither redacted nor ignored: as (the name in the Relation, the
/// redacted column's name now).
///
/// A Relation lists the columns live at its time in column-number order, under the names of that time;
/// names may have changed since (renames, swaps, swaps undone), the catalog is as it is now. A name of a
/// live column of the same type is taken for that column (an anchor); the other names are columns renamed
/// or dropped since. Anchors in number order with a dropped column for each other name between them: no
/// rename at all, nothing hidden. Anchors in order: each other name could be any column between its
/// anchors. Anchors out of order mean the names themselves moved: then a column could be any at its
/// position, give or take the columns added or dropped since. Fail closed: a redacted live column such a
/// name could be is reported.
pub fn relation_hides_secret(
    shown: &[(&str, u32)],
    table: &[NumberedColumn],
    redacted: impl Fn(&str) -> bool,
    covered: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let cand: Vec<&NumberedColumn> = table.iter().filter(|c| !c.generated).collect();
    let suspect = |k: usize, range: std::ops::Range<usize>| {
        let name = shown[k].0;
        if covered(name) {
            return None;
        }
        cand.get(range)?
            .iter()
            .find(|c| !c.dropped && c.name != name && redacted(&c.name))
            .map(|c| (name.to_owned(), c.name.clone()))
    };
    let anchors: Vec<(usize, usize)> = shown
        .iter()
        .enumerate()
        .filter_map(|(k, (name, oid))| {
            cand.iter()
                .position(|c| {
                    !c.dropped
                        && c.name == *name
                        && (c.type_oid == *oid || c.type_oid == 0 || *oid == 0)
                })
                .map(|a| (k, a))
        })
        .collect();
    let ordered = anchors.windows(2).all(|w| w[0].1 < w[1].1);
    // Between consecutive anchors (and the ends): the other names, and the columns they could be.
    let gaps: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = anchors
        .iter()
        .copied()
        .chain(std::iter::once((shown.len(), cand.len())))
        .scan((0usize, 0usize), |from, (k, a)| {
            let gap = (from.0..k, from.1..a.max(from.1));
            *from = (k + 1, a + 1);
            Some(gap)
        })
        .collect();
    if ordered {
        let dropped_room = gaps.iter().all(|(names, cols)| {
            names.len() <= cand[cols.clone()].iter().filter(|c| c.dropped).count()
        });
        if dropped_room {
            return Vec::new();
        }
        if gaps.iter().all(|(names, cols)| names.len() <= cols.len()) {
            return gaps
                .iter()
                .flat_map(|(names, cols)| names.clone().filter_map(|k| suspect(k, cols.clone())))
                .collect();
        }
    }
    // The names moved: by position alone, give or take what was added or dropped since. Every name that
    // could be a secret is named at once, so one fix (or one acceptance) settles them all.
    let slack = cand.len().saturating_sub(shown.len());
    (0..shown.len())
        .filter_map(|k| suspect(k, k..k + slack + 1))
        .collect()
}

/// The shortest redacted value (or form of one) whose copies in ordinary columns are redacted too: shorter
/// values would hide ordinary ones that merely look alike ('1', 'active').
const MIN_COPIED_SECRET: usize = 8;
/// The largest redacted value (or string inside one) whose converted forms (hex, base64, escaped…) are
/// sought.
const MAX_CONVERTED_SECRET: usize = 16 * 1024;
/// Up to this many forms are sought one by one (building an automaton per change cost more than the
/// searches it saves).
const FEW_FORMS: usize = 24;
/// The most strings (and numbers) of one JSON secret taken as secrets of their own: bounds the work per
/// change (a document of thousands of strings would make every change of its table crawl).
const MAX_JSON_LEAVES: usize = 256;

/// The forms a redacted value takes when a migration or a mistake copies it into an ordinary column of the
/// same row: as it is, wrapped (`to_jsonb(secret)`, `'{"k": "' || secret || '"}'`, `char(n)` padding, a
/// prefix, an array), trimmed, escaped the way JSON, arrays, SQL literals and identifiers escape it, as
/// `bytea` (`convert_to(secret, 'UTF8')` shows as `\x` and hex), `encode(…)`d as hex, base64 (also after a
/// prefix such as `Bearer `) or escape, a `bytea` secret's bytes, and each string and long number of a
/// JSON secret in all those forms. An ordinary value that *contains* any form is taken for a copy. A
/// guard, not a proof: a copy converted in a way not listed here (upper-cased, hashed, encrypted, split) is
/// not recognised.
#[derive(Debug, Default)]
pub struct SecretCopies {
    finder: Finder,
}

#[derive(Debug, Default)]
enum Finder {
    #[default]
    Nothing,
    /// A secret's handful of forms (the common case): each sought on its own, nothing to build.
    Few(Vec<Vec<u8>>),
    /// One pass over a value finds any form (there can be hundreds: a JSON secret's strings).
    Forms(aho_corasick::AhoCorasick),
    /// The forms could not be made into an automaton (past its size limits, far beyond the bounds here):
    /// every value is taken for a copy, never the other way round.
    Everything,
}

impl SecretCopies {
    pub fn of<'a>(secrets: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut forms = Vec::new();
        for s in secrets {
            forms_of(s, &mut forms);
        }
        forms.sort();
        forms.dedup();
        let finder = if forms.is_empty() {
            Finder::Nothing
        } else if forms.len() <= FEW_FORMS {
            Finder::Few(forms)
        } else {
            // A non-contiguous NFA builds in time linear in the forms' bytes (a DFA of a few large
            // secrets' forms would take far longer to build than to search with).
            aho_corasick::AhoCorasick::builder()
                .kind(Some(aho_corasick::AhoCorasickKind::NoncontiguousNFA))
                .build(&forms)
                .map_or(Finder::Everything, Finder::Forms)
        };
        SecretCopies { finder }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self.finder, Finder::Nothing)
    }

    /// Whether `value` holds a copy of a secret in one of its forms.
    pub fn within(&self, value: &[u8]) -> bool {
        match &self.finder {
            Finder::Nothing => false,
            Finder::Few(forms) => forms
                .iter()
                .any(|f| value.len() >= f.len() && memchr::memmem::find(value, f).is_some()),
            Finder::Forms(f) => f.is_match(value),
            Finder::Everything => true,
        }
    }
}

/// The forms of one redacted value: its own, and those of what it holds (a JSON secret's strings, a
/// `bytea` secret's bytes).
fn forms_of(s: &[u8], out: &mut Vec<Vec<u8>>) {
    forms_of_one(s, out);
    let trimmed = s.trim_ascii();
    if let Ok(text) = std::str::from_utf8(trimmed) {
        if text.starts_with(['{', '[', '"']) && trimmed.len() <= 16 * MAX_CONVERTED_SECRET {
            for leaf in json_leaves(text).into_iter().take(MAX_JSON_LEAVES) {
                forms_of_one(leaf.as_bytes(), out);
            }
        }
    }
    // A bytea secret in text form: its bytes, in all their forms (its hex digits are its hex form).
    if let Some(digits) = trimmed.strip_prefix(b"\\x") {
        if digits.len() <= 2 * MAX_CONVERTED_SECRET {
            if let Some(bytes) = unhex_upto(digits, MAX_CONVERTED_SECRET) {
                forms_of_one(&bytes, out);
            }
        }
    }
}

fn forms_of_one(s: &[u8], out: &mut Vec<Vec<u8>>) {
    fn push(out: &mut Vec<Vec<u8>>, f: &[u8]) {
        // Blank values (an empty char(n) secret) would hide every padded value.
        if f.len() >= MIN_COPIED_SECRET && !f.iter().all(u8::is_ascii_whitespace) {
            out.push(f.to_vec());
        }
    }
    push(out, s);
    let trimmed = s.trim_ascii();
    if trimmed.len() != s.len() {
        push(out, trimmed);
    }
    // Converted forms are sought for secrets of a token's or a key's size, not for large redacted
    // documents (each change would copy them several times over); those are still found as they are.
    if trimmed.len() < MIN_COPIED_SECRET || trimmed.len() > MAX_CONVERTED_SECRET {
        return;
    }
    push(out, hex(trimmed).as_bytes());
    base64_forms(trimmed, out);
    // Escaped forms differ from the value only where it holds what they escape.
    if !trimmed
        .iter()
        .any(|&b| matches!(b, b'"' | b'\\' | b'\'' | 0..=0x1f | 0x7f..=0xff))
    {
        return;
    }
    // encode(…, 'escape'): high-bit and zero bytes as \ooo, backslashes doubled.
    let mut escaped = Vec::with_capacity(trimmed.len());
    for &b in trimmed {
        match b {
            b'\\' => escaped.extend_from_slice(b"\\\\"),
            0 | 0x80..=0xff => escaped.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            _ => escaped.push(b),
        }
    }
    push(out, &escaped);
    if let Ok(text) = std::str::from_utf8(trimmed) {
        if let Ok(quoted) = serde_json::to_string(text) {
            push(out, &quoted.as_bytes()[1..quoted.len() - 1]);
        }
        // An array's element (quotes and backslashes escaped, control characters kept), a SQL literal
        // (quote_literal) and a quoted identifier (format('%I')).
        push(
            out,
            text.replace('\\', "\\\\").replace('"', "\\\"").as_bytes(),
        );
        push(out, text.replace('\'', "''").as_bytes());
        push(out, text.replace('"', "\"\"").as_bytes());
    }
}

/// Base64 of a secret as it is (the whole value, Postgres breaking lines after 76 characters: the first
/// line is in every copy) and after a prefix of any length (`'Bearer ' || secret`): at each of the three
/// alignments, the characters that depend on the secret's bytes alone.
fn base64_forms(s: &[u8], out: &mut Vec<Vec<u8>>) {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let whole = base64::Engine::encode(b64, &s[..s.len().min(57)]);
    let mut push = |f: &str| {
        if f.len() >= MIN_COPIED_SECRET {
            out.push(f.as_bytes().to_vec());
        }
    };
    push(&whole);
    // 48 bytes keep the 64 characters taken within the first line after a prefix of up to 9 bytes.
    let head = &s[..s.len().min(48)];
    for shift in 0..3usize {
        let mut data = vec![0u8; shift];
        data.extend_from_slice(head);
        let enc = base64::Engine::encode(b64, &data);
        // The first group holds prefix bits when shifted; the last may hold what follows the secret.
        let from = if shift == 0 { 0 } else { 4 };
        let to = enc.len().saturating_sub(4);
        if to > from {
            push(&enc[from..to]);
        }
    }
}

/// The strings and long numbers of a JSON text, without its keys, however deep (no recursion: a document
/// nested past a parser's depth limit is read too). Malformed text yields what could be read.
fn json_leaves(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut leaves = Vec::new();
    let mut i = 0;
    while i < b.len() && leaves.len() < MAX_JSON_LEAVES {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                let end = (i + 1).min(b.len());
                i = end;
                let mut next = i;
                while next < b.len() && b[next].is_ascii_whitespace() {
                    next += 1;
                }
                // A key names what a value is ("token"); it is not secret.
                if next < b.len() && b[next] == b':' {
                    continue;
                }
                if let Ok(s) = serde_json::from_str::<String>(&text[start..end]) {
                    if s.len() >= MIN_COPIED_SECRET {
                        leaves.push(s);
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                if i - start >= MIN_COPIED_SECRET {
                    leaves.push(text[start..i].to_owned());
                }
            }
            _ => i += 1,
        }
    }
    leaves
}
