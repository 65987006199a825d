//! A copy of the platform's own session, account, key and agent tables, kept in WAL order.
//!
//! It starts from a snapshot (read by capture at start-up) and follows every change streamed for those
//! tables, so a change is joined with the rows as they were at its commit, not as they are when it is read.

use std::collections::{HashMap, HashSet};

use super::message::CONTEXT_FIELD_MAX_BYTES;
use crate::audit::value::bounded_str;
use crate::capture::pgoutput::{LogicalMessage, OldKind, Relation, Tuple, TupleValue};
use crate::config::{split_table, Config};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Accounts,
    Sessions,
    Keys,
    Agents,
}

// Column roles, per kind, in the order they are stored.
pub(super) const ACCOUNT_EMAIL: usize = 0;
pub(super) const ACCOUNT_DISPLAY: usize = 1;
pub(super) const SESSION_ACCOUNT: usize = 0;
pub(super) const SESSION_SOURCE: usize = 1;
pub(super) const SESSION_AUTH: usize = 2;
pub(super) const SESSION_KEY: usize = 3;
pub(super) const SESSION_AGENT: usize = 4;
pub(super) const SESSION_IP: usize = 5;
pub(super) const SESSION_UA: usize = 6;
pub(super) const NAME: usize = 0;
pub(super) const OWNER: usize = 1;

/// One platform table kept in memory: id → configured columns as text.
#[derive(Debug)]
struct PlatformTable {
    kind: Kind,
    schema: String,
    table: String,
    id_column: String,
    columns: Vec<Option<String>>,
    /// Relation id → positions of the id column and of each configured column.
    positions: HashMap<u32, (Option<usize>, Vec<Option<usize>>)>,
    rows: HashMap<String, Vec<Option<String>>>,
}

impl PlatformTable {
    fn get(&self, id: &str, role: usize) -> Option<&str> {
        self.rows
            .get(id)
            .and_then(|r| r.get(role))
            .and_then(|v| v.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// What to read for one table's snapshot: its name and the columns, id first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub schema: String,
    pub table: String,
    pub columns: Vec<String>,
}

/// What a platform row was at an earlier position, by its first change since.
enum Was {
    Absent,
    Row(Vec<Option<String>>),
    /// The change carries no old row (no REPLICA IDENTITY FULL).
    Unknown,
}

/// A rewind in progress (see [`PlatformTables::rewind_step`]): the rows already wound back (only a row's
/// first change counts).
#[derive(Debug, Default)]
pub struct Rewinding {
    seen: HashSet<(usize, String)>,
    pub done: Rewound,
}

/// What winding the platform tables back found (see [`PlatformTables::rewind_step`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewound {
    /// Rows put back as they were (or taken out, where they were inserted since).
    pub restored: u64,
    /// Rows changed since whose earlier values the WAL does not hold: kept as they are now.
    pub unknown: u64,
}

/// The platform tables configured under `[attribution]`.
#[derive(Debug, Default)]
pub struct PlatformTables {
    tables: Vec<PlatformTable>,
}

fn text(v: &TupleValue) -> Option<String> {
    match v {
        TupleValue::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

impl PlatformTables {
    pub fn new(cfg: &Config) -> Self {
        let a = &cfg.attribution;
        let mut tables = Vec::new();
        let mut add = |kind, table: &str, id: &str, cols: Vec<Option<String>>| {
            let (s, t) = split_table(table);
            tables.push(PlatformTable {
                kind,
                schema: s.to_owned(),
                table: t.to_owned(),
                id_column: id.to_owned(),
                columns: cols,
                positions: HashMap::new(),
                rows: HashMap::new(),
            });
        };
        if let Some(t) = &a.accounts {
            add(
                Kind::Accounts,
                &t.table,
                &t.id_column,
                vec![t.email_column.clone(), t.display_column.clone()],
            );
        }
        if let Some(t) = &a.sessions {
            add(
                Kind::Sessions,
                &t.table,
                &t.id_column,
                vec![
                    t.account_column.clone(),
                    t.source_column.clone(),
                    t.auth_method_column.clone(),
                    t.key_column.clone(),
                    t.agent_column.clone(),
                    t.client_ip_column.clone(),
                    t.user_agent_column.clone(),
                ],
            );
        }
        if let Some(t) = &a.keys {
            add(
                Kind::Keys,
                &t.table,
                &t.id_column,
                vec![t.name_column.clone(), t.owner_column.clone()],
            );
        }
        if let Some(t) = &a.agents {
            add(
                Kind::Agents,
                &t.table,
                &t.id_column,
                vec![t.name_column.clone(), t.owner_column.clone()],
            );
        }
        PlatformTables { tables }
    }

    /// The snapshots to read at start-up, one per table, in the order [`PlatformTables::fill`] takes them.
    pub fn snapshot_requests(&self) -> Vec<SnapshotRequest> {
        self.tables
            .iter()
            .map(|t| SnapshotRequest {
                schema: t.schema.clone(),
                table: t.table.clone(),
                columns: std::iter::once(&t.id_column)
                    .chain(t.columns.iter().flatten())
                    .cloned()
                    .collect(),
            })
            .collect()
    }

    /// Replace table `index`'s rows with a snapshot read as [`PlatformTables::snapshot_requests`] asked.
    pub fn fill(&mut self, index: usize, rows: Vec<Vec<Option<String>>>) {
        let Some(t) = self.tables.get_mut(index) else {
            return;
        };
        t.rows.clear();
        for r in rows {
            let mut values = r.into_iter();
            let Some(Some(id)) = values.next() else {
                continue;
            };
            let vals = t
                .columns
                .iter()
                .map(|c| match c {
                    Some(_) => values.next().flatten(),
                    None => None,
                })
                .collect();
            t.rows.insert(id, vals);
        }
        tracing::info!(table = %format!("{}.{}", t.schema, t.table), rows = t.rows.len(), "loaded attribution context");
    }

    pub fn on_relation(&mut self, rel: &Relation) {
        for t in &mut self.tables {
            if t.schema != rel.namespace || t.table != rel.name {
                continue;
            }
            let find = |name: &str| rel.columns.iter().position(|c| c.name == name);
            let id = find(&t.id_column);
            if id.is_none() {
                tracing::warn!(table = %format!("{}.{}", t.schema, t.table), column = %t.id_column, "attribution table has no such id column; its changes are not tracked");
            }
            let cols = t
                .columns
                .iter()
                .map(|c| c.as_deref().and_then(find))
                .collect();
            t.positions.insert(rel.id, (id, cols));
        }
    }

    fn upsert(&mut self, rel: &Relation, new: &Tuple, old: Option<&Tuple>) {
        for t in &mut self.tables {
            let Some((Some(id_pos), cols)) = t.positions.get(&rel.id) else {
                continue;
            };
            let old_id = old.and_then(|o| o.get(*id_pos)).and_then(text);
            let new_id = new.get(*id_pos).and_then(text).or_else(|| old_id.clone());
            let Some(new_id) = new_id else {
                continue;
            };
            let previous = match &old_id {
                Some(o) if *o != new_id => t.rows.remove(o),
                _ => t.rows.get(&new_id).cloned(),
            };
            let vals = cols
                .iter()
                .enumerate()
                .map(|(role, pos)| {
                    let pos = (*pos)?;
                    match new.get(pos)? {
                        TupleValue::UnchangedToast => {
                            old.and_then(|o| o.get(pos)).and_then(text).or_else(|| {
                                previous
                                    .as_ref()
                                    .and_then(|p| p.get(role).cloned().flatten())
                            })
                        }
                        v => text(v),
                    }
                })
                .collect();
            t.rows.insert(new_id, vals);
        }
    }

    pub fn on_insert(&mut self, rel: &Relation, new: &Tuple) {
        self.upsert(rel, new, None);
    }

    pub fn on_update(&mut self, rel: &Relation, old: Option<&Tuple>, new: &Tuple) {
        self.upsert(rel, new, old);
    }

    pub fn on_delete(&mut self, rel: &Relation, old: &Tuple) {
        for t in &mut self.tables {
            if let Some((Some(id_pos), _)) = t.positions.get(&rel.id) {
                if let Some(id) = old.get(*id_pos).and_then(text) {
                    t.rows.remove(&id);
                }
            }
        }
    }

    pub fn on_truncate(&mut self, rel: &Relation) {
        for t in &mut self.tables {
            if t.positions.contains_key(&rel.id) {
                t.rows.clear();
            }
        }
    }

    /// Wind the copy (loaded from the tables as they are now) back to an earlier position of the stream:
    /// fed, one at a time in stream order, the platform tables' messages committed since then (a window
    /// read as a stream is never held whole). A row's first change since then says what it was there:
    /// absent before an insert, the old row of an update or a delete. Without REPLICA IDENTITY FULL an update or delete carries no old row: that row stays as it is
    /// now, counted in `unknown`.
    pub fn rewind_step(&mut self, r: &mut Rewinding, m: &LogicalMessage) {
        let (seen, out) = (&mut r.seen, &mut r.done);
        if let LogicalMessage::Relation(rel) = m {
            self.on_relation(rel);
            return;
        }
        let rel = match m {
            LogicalMessage::Insert { relation_id, .. }
            | LogicalMessage::Update { relation_id, .. }
            | LogicalMessage::Delete { relation_id, .. } => *relation_id,
            _ => return,
        };
        for (ti, t) in self.tables.iter_mut().enumerate() {
            let Some((Some(id_pos), cols)) = t.positions.get(&rel) else {
                continue;
            };
            let id_pos = *id_pos;
            let values = |tuple: &Tuple| -> Vec<Option<String>> {
                cols.iter()
                    .map(|pos| pos.and_then(|p| tuple.get(p)).and_then(text))
                    .collect()
            };
            let key_of = |tuple: &Tuple| tuple.get(id_pos).and_then(text);
            let mut firsts: Vec<(String, Was)> = Vec::new();
            match m {
                LogicalMessage::Insert { new, .. } => {
                    if let Some(k) = key_of(new) {
                        firsts.push((k, Was::Absent));
                    }
                }
                LogicalMessage::Update { old, new, .. } => {
                    let new_key = key_of(new);
                    let old_key = old.as_ref().and_then(|(_, o)| key_of(o));
                    match (old_key, new_key) {
                        (Some(ok), Some(nk)) if ok != nk => {
                            // The key changed: the new key did not exist before.
                            firsts.push((nk, Was::Absent));
                            let was = match old {
                                Some((OldKind::Full, o)) => Was::Row(values(o)),
                                _ => Was::Unknown,
                            };
                            firsts.push((ok, was));
                        }
                        (_, Some(k)) => {
                            let was = match old {
                                Some((OldKind::Full, o)) => Was::Row(values(o)),
                                _ => Was::Unknown,
                            };
                            firsts.push((k, was));
                        }
                        _ => {}
                    }
                }
                LogicalMessage::Delete { old_kind, old, .. } => {
                    if let Some(k) = key_of(old) {
                        let was = match old_kind {
                            OldKind::Full => Was::Row(values(old)),
                            OldKind::Key => Was::Unknown,
                        };
                        firsts.push((k, was));
                    }
                }
                _ => {}
            }
            for (k, was) in firsts {
                if !seen.insert((ti, k.clone())) {
                    continue;
                }
                match was {
                    Was::Row(v) => {
                        t.rows.insert(k, v);
                        out.restored += 1;
                    }
                    Was::Absent => {
                        t.rows.remove(&k);
                        out.restored += 1;
                    }
                    Was::Unknown => out.unknown += 1,
                }
            }
        }
    }

    /// A value of the copy, as an item may store it: bounded like a context message's fields, since one
    /// session's user agent (a client's words) is copied into every item it attributes.
    pub(super) fn lookup(&self, kind: Kind, id: &str, role: usize) -> Option<String> {
        self.tables
            .iter()
            .find(|t| t.kind == kind)
            .and_then(|t| t.get(id, role))
            .map(|v| bounded_str(v, CONTEXT_FIELD_MAX_BYTES))
    }
}
