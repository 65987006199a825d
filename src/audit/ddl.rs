//! DDL that changes audited rows' values without a row change: `ALTER TABLE … ALTER COLUMN … TYPE …
//! USING …` rewrites every row, `ALTER TYPE … RENAME VALUE` makes every stored label read as another, and
//! neither sends one row through the stream. The optional event trigger (`sql/postgres/waltrail_ddl.sql`)
//! writes a transactional message (`<prefix>:ddl`) in the DDL's own transaction; each mapped table it
//! names becomes an item of its own, at the DDL's place in the stream (QA41 H1).
//!
//! ALTER TABLE also changes what rows read without a rewrite (QA43 H3/H4: columns renamed, dropped, added
//! with a constant default, retyped binary-coercibly). Its triggers write the published tables' columns
//! before the statement (`layout_before`) and the touched tables' after it (`layout_after`); [`layout`]
//! compares an after with every before of the transaction since the last after, by attnum.
//!
//! The message is not sealed: anyone who may call `pg_logical_emit_message` can write one. The item says
//! that a DDL event message reported it; a forged one adds an alarm to the trail, never hides a change.

use serde::Deserialize;

use crate::audit::mapping::{ItemDraft, TableMapping};
use crate::vocab::action;

/// Messages beyond this are not read: the trigger writes a few hundred bytes per table.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Table entries beyond this make the message unreadable (a statement touches a few; a partition tree a
/// few thousand at most).
const MAX_TABLES: usize = 10_000;
/// Names, labels and the lists of them are kept to these sizes in an item.
const MAX_NAME_BYTES: usize = 256;
const MAX_LIST: usize = 1_000;

#[derive(Debug, Deserialize)]
struct DdlMessage {
    v: u32,
    /// `table_rewrite` or `ddl_command_end`.
    event: String,
    /// The command tag (`ALTER TABLE`, `ALTER TYPE`).
    command: String,
    /// The type altered (`ALTER TYPE`), as Postgres names it.
    #[serde(default)]
    r#type: Option<String>,
    /// The labels an `ALTER TYPE` renamed.
    #[serde(default)]
    renamed: Option<Vec<Renamed>>,
    tables: Vec<DdlTable>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
struct Renamed {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
struct DdlTable {
    oid: u32,
    schema: String,
    name: String,
    /// The top of its partition tree (itself when it is in none).
    #[serde(default)]
    root_schema: Option<String>,
    #[serde(default)]
    root_name: Option<String>,
    /// The columns of the type altered (`ALTER TYPE`); none for a rewrite.
    #[serde(default)]
    columns: Option<Vec<String>>,
    /// Every table it inherits from, at any depth (partitions and inheritance children alike), by OID.
    #[serde(default)]
    ancestors: Option<Vec<u32>>,
}

/// What one mapped table's item gathers from the message.
/// The entry of `found` for mapping `m`, added by `new` if there is none: a statement's relations of one
/// mapped table (its partitions, say) make one item.
fn entry<'v, 'a, T>(
    found: &'v mut Vec<T>,
    m: &'a TableMapping,
    mapping_of: impl Fn(&T) -> &'a TableMapping,
    new: impl FnOnce() -> T,
) -> &'v mut T {
    let i = match found.iter().position(|f| std::ptr::eq(mapping_of(f), m)) {
        Some(i) => i,
        None => {
            found.push(new());
            found.len() - 1
        }
    };
    &mut found[i]
}

struct Found<'a> {
    mapping: &'a TableMapping,
    relations: std::collections::BTreeSet<String>,
    columns: Vec<String>,
}

/// The items a `<prefix>:ddl` message stands for: one per mapped table it names (found by `mapped`, from
/// the relation's OID, its name, or its partition tree's root). `Err` says why a message is unreadable
/// (in words of waltrail's, never quoting it: anyone may write one); the caller records that too, since
/// a DDL it cannot read may have changed audited values.
/// The items of one message, and whether it reports a table rewrite (one relation: the assembler joins a
/// statement's rewrites of one table's partitions, which come one message each, into one item).
#[derive(Debug)]
pub struct Drafts {
    pub items: Vec<ItemDraft>,
    pub rewrite: bool,
}

pub fn drafts<'a>(
    content: &[u8],
    mapped: impl Fn(u32, &str, &str) -> Option<&'a TableMapping>,
) -> Result<Drafts, String> {
    if content.len() > MAX_MESSAGE_BYTES {
        return Err(format!("{} bytes, over {MAX_MESSAGE_BYTES}", content.len()));
    }
    let msg: DdlMessage = serde_json::from_slice(content).map_err(|e| {
        format!(
            "not the trigger's JSON ({:?} at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    if msg.v != 1 {
        return Err("an unknown version".into());
    }
    // Only what the triggers write: anything else is somebody's text, not a DDL's account.
    let effect = match (msg.event.as_str(), msg.command.as_str()) {
        ("table_rewrite", "ALTER TABLE" | "ALTER TYPE") => {
            "every row rewritten: its values may have changed without a row change"
        }
        ("ddl_command_end", "ALTER TYPE") if msg.renamed.is_some() => {
            "labels renamed: stored values read as the new labels from here on, without a row change"
        }
        _ => return Err("an event or command the triggers do not write".into()),
    };
    if msg.tables.len() > MAX_TABLES {
        return Err(format!("{} tables, over {MAX_TABLES}", msg.tables.len()));
    }
    let cut = |s: &str| crate::audit::value::bounded_str(s, MAX_NAME_BYTES);
    let mut found: Vec<Found<'a>> = Vec::new();
    for t in &msg.tables {
        let m = mapped(t.oid, &t.schema, &t.name)
            .or_else(|| {
                t.ancestors
                    .iter()
                    .flatten()
                    .find_map(|&a| mapped(a, "", ""))
            })
            .or_else(
                || match (t.root_schema.as_deref(), t.root_name.as_deref()) {
                    (Some(s), Some(n)) => mapped(0, s, n),
                    _ => None,
                },
            );
        let Some(m) = m else { continue };
        // One item per table and statement: partitions rewritten one by one are named in it.
        let f = entry(
            &mut found,
            m,
            |f| f.mapping,
            || Found {
                mapping: m,
                relations: Default::default(),
                columns: Vec::new(),
            },
        );
        let relation = format!("{}.{}", cut(&t.schema), cut(&t.name));
        if relation != m.qualified() && f.relations.len() < MAX_LIST {
            f.relations.insert(relation);
        }
        for c in t.columns.iter().flatten() {
            let c = cut(c);
            if f.columns.len() < MAX_LIST && !f.columns.contains(&c) {
                f.columns.push(c);
            }
        }
    }
    // QA44: the trigger names one relation per rewrite: only such a message may join a held item.
    let rewrite = msg.event == "table_rewrite" && msg.tables.len() == 1;
    let items = found
        .into_iter()
        .map(|f| {
            let m = f.mapping;
            let mut diff = serde_json::Map::new();
            diff.insert("command".into(), msg.command.clone().into());
            diff.insert("effect".into(), effect.into());
            if !f.relations.is_empty() {
                diff.insert(
                    "relations".into(),
                    f.relations.into_iter().collect::<Vec<_>>().into(),
                );
            }
            if let Some(ty) = &msg.r#type {
                diff.insert("type".into(), cut(ty).into());
            }
            // A type's labels are the values a column of it may hold: not said where a redacted column
            // uses it.
            let redacted = f
                .columns
                .iter()
                .any(|c| m.config.redact_columns.iter().any(|r| r == c));
            match &msg.renamed {
                Some(_) if redacted => {
                    diff.insert("renamed".into(), serde_json::json!({"redacted": true}));
                }
                Some(renamed) => {
                    let renamed: Vec<serde_json::Value> = renamed
                        .iter()
                        .take(MAX_LIST)
                        .map(|r| serde_json::json!({"from": cut(&r.from), "to": cut(&r.to)}))
                        .collect();
                    diff.insert("renamed".into(), renamed.into());
                }
                None => {}
            }
            diff.insert(
                "reported_by".into(),
                "a DDL event message (not sealed)".into(),
            );
            let table = m.qualified();
            ItemDraft {
                action: action::ALTERED.into(),
                organization_id: String::new(),
                project_id: String::new(),
                resource_type: m.config.resource_type.clone(),
                resource_id: String::new(),
                resource_display: table.clone(),
                changed_fields: f.columns,
                diff: serde_json::Value::Object(diff).to_string(),
                table_name: table,
                actor_refs: Default::default(),
                // Every organization's rows at once, like a TRUNCATE.
                platform_wide: m.config.organization_column.is_some(),
                previous_scope: None,
            }
        })
        .collect();
    Ok(Drafts { items, rewrite })
}

/// Another relation's rewrite by the same statement (a partition after another) joins the item held.
pub fn merge_rewrite(held: &mut ItemDraft, next: &ItemDraft) {
    let relations = |d: &ItemDraft| -> Vec<String> {
        serde_json::from_str::<serde_json::Value>(&d.diff)
            .ok()
            .and_then(|v| v.get("relations").cloned())
            .and_then(|r| serde_json::from_value::<Vec<String>>(r).ok())
            .unwrap_or_default()
    };
    let mut all: std::collections::BTreeSet<String> = relations(held).into_iter().collect();
    // Past the cap, names are counted, not dropped unsaid: anyone may write one-table messages naming the
    // table as an ancestor (QA45 L1), and the item must not read as the whole list when it is not.
    let mut not_listed = 0u64;
    for r in relations(next) {
        if all.len() >= MAX_LIST && !all.contains(&r) {
            not_listed += 1;
            continue;
        }
        all.insert(r);
    }
    if let Ok(serde_json::Value::Object(mut diff)) = serde_json::from_str(&held.diff) {
        diff.insert(
            "relations".into(),
            all.into_iter().collect::<Vec<_>>().into(),
        );
        if not_listed > 0 {
            let before = diff
                .get("relations_not_listed")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            diff.insert("relations_not_listed".into(), (before + not_listed).into());
        }
        held.diff = serde_json::Value::Object(diff).to_string();
    }
}

/// The record of a DDL event message that could not be read: on the audit log, for every organization.
pub fn unreadable(why: &str) -> ItemDraft {
    ItemDraft {
        action: action::ALTERED.into(),
        organization_id: String::new(),
        project_id: String::new(),
        resource_type: "RESOURCE_TYPE_AUDIT_LOG".into(),
        resource_id: String::new(),
        resource_display: "audit log".into(),
        changed_fields: Vec::new(),
        diff: serde_json::json!({
            "effect": "a DDL event message could not be read: the DDL it stood for may have changed audited values without a row change",
            "why": crate::audit::value::bounded_str(why, MAX_NAME_BYTES),
            "reported_by": "a DDL event message (not sealed)",
        })
        .to_string(),
        table_name: String::new(),
        actor_refs: Default::default(),
        platform_wide: true,
        previous_scope: None,
    }
}

/// Layout messages (`layout_before`, `layout_after`) may be this large: the one before an ALTER TABLE holds
/// every published table's columns (~40 bytes each). Larger ones are unreadable, which fails closed.
const MAX_LAYOUT_BYTES: usize = 16 << 20;
/// Tables in one layout message (every published table, with inheritance children).
const MAX_LAYOUT_TABLES: usize = 100_000;
/// Postgres allows 1,600 attributes a table (dropped ones included): a layout with more is not its.
const MAX_COLUMNS: usize = 1_600;
/// Before-layouts kept per transaction between two after-layouts (a real statement writes one; more are
/// nested statements or forged), and the columns they may hold in all. Past either, the next after-layout
/// reports every mapped table it names, its columns before not all known (fail closed).
const MAX_BEFORES: usize = 32;
/// The triggers' nonces are UUIDs (36 bytes).
const MAX_NONCE_BYTES: usize = 64;
const MAX_HELD_COLUMNS: usize = 200_000;

/// One column as a layout message gives it: `[attnum, name, type, dropped, has_missing]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct LayoutColumn(i64, String, String, bool, bool);

#[derive(Debug, Deserialize)]
struct LayoutTable {
    oid: u32,
    schema: String,
    name: String,
    #[serde(default)]
    ancestors: Option<Vec<u32>>,
    #[serde(default)]
    columns: Option<Vec<LayoutColumn>>,
    /// `layout_dropped`: the names of the columns the statement dropped (their layout after has them
    /// under Postgres's placeholder name, so only the drop says which they were).
    #[serde(default)]
    dropped: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct LayoutMessage {
    v: u32,
    event: String,
    command: String,
    tables: Vec<LayoutTable>,
    /// A `layout_before`'s statement nonce (QA48 H2): only an after naming it in `ends` ends it.
    #[serde(default)]
    nonce: Option<String>,
    /// A `layout_after`'s statement nonces it ends.
    #[serde(default)]
    ends: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Head {
    event: String,
}

/// A column of a layout, as kept: names and types cut to `MAX_NAME_BYTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    name: String,
    ty: String,
    dropped: bool,
    has_missing: bool,
}

/// A table's columns by attnum.
pub type Columns = std::collections::BTreeMap<i64, Column>;

/// The before-layouts of a transaction since its last after-layout: only the tables that are (or are
/// members of) mapped tables, by OID. Held in the transaction, so an item depends on its WAL alone.
#[derive(Debug, Default)]
pub struct Befores {
    layouts: Vec<Before>,
    columns: usize,
    /// A before-layout was not kept (too many, or too large) or a DDL message could not be read since
    /// the befores held were last all ended: an after cannot trust that it saw every before.
    incomplete: bool,
}

/// One `layout_before`: its statement's nonce (none from a script before QA48, or forged) and the mapped
/// tables' columns.
#[derive(Debug)]
struct Before {
    nonce: Option<String>,
    tables: std::collections::HashMap<u32, Columns>,
    columns: usize,
}

impl Befores {
    /// A DDL message that could not be read: it may have been a before-layout.
    pub fn unreadable(&mut self) {
        self.incomplete = true;
    }
}

/// What a layout message is, once read.
pub enum Layout {
    /// Kept in `Befores`; no item.
    Before,
    /// The items of an after-layout (none when no mapped table's columns changed).
    After(Vec<ItemDraft>),
}

/// Whether a DDL message is a layout message (`Some`), and then what it gives: before-layouts are kept
/// in `befores`, an after-layout is compared with each of them. `Err` says why it cannot be read.
pub fn layout<'a>(
    content: &[u8],
    befores: &mut Befores,
    mapped: impl Fn(u32, &str, &str) -> Option<&'a TableMapping>,
) -> Option<Result<Layout, String>> {
    if content.len() > MAX_LAYOUT_BYTES {
        // Whatever it is, `drafts` refuses it as too large (over its own, lower, bound).
        return None;
    }
    let head: Head = serde_json::from_slice(content).ok()?;
    if !head.event.starts_with("layout_") {
        return None;
    }
    Some(read_layout(content, befores, mapped))
}

fn read_layout<'a>(
    content: &[u8],
    befores: &mut Befores,
    mapped: impl Fn(u32, &str, &str) -> Option<&'a TableMapping>,
) -> Result<Layout, String> {
    let msg: LayoutMessage = serde_json::from_slice(content).map_err(|e| {
        format!(
            "a layout message not of the trigger's shape ({:?} at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    if msg.v != 1 {
        return Err("an unknown version".into());
    }
    let known = match msg.event.as_str() {
        "layout_before" | "layout_after" => matches!(
            msg.command.as_str(),
            "ALTER TABLE"
                | "ALTER TYPE"
                | "DROP TYPE"
                | "DROP DOMAIN"
                // Postgres renames a table's columns by these too (QA48 H1).
                | "ALTER VIEW"
                | "ALTER MATERIALIZED VIEW"
                | "ALTER FOREIGN TABLE"
        ),
        // Any other statement that drops objects (DROP EXTENSION, SCHEMA, COLLATION, FUNCTION, OWNED …
        // CASCADE) names itself by its command tag: "DROP " and capitals.
        "layout_dropped" => {
            msg.command.len() <= 40
                && msg.command.starts_with("DROP ")
                && msg
                    .command
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b == b' ')
                && !matches!(msg.command.as_str(), "DROP TYPE" | "DROP DOMAIN")
        }
        _ => false,
    };
    if !known {
        return Err("an event or command the triggers do not write".into());
    }
    let nonces = msg.nonce.iter().chain(msg.ends.iter().flatten());
    if msg.ends.as_ref().is_some_and(|e| e.len() > MAX_BEFORES)
        || nonces.into_iter().any(|n| n.len() > MAX_NONCE_BYTES)
    {
        return Err("statement nonces the triggers do not write".into());
    }
    if msg.tables.len() > MAX_LAYOUT_TABLES {
        return Err(format!(
            "{} tables, over {MAX_LAYOUT_TABLES}",
            msg.tables.len()
        ));
    }
    let cut = |s: &str| crate::audit::value::bounded_str(s, MAX_NAME_BYTES);
    // Each table's columns by attnum, checked as Postgres would have them.
    let columns = |t: &LayoutTable| -> Result<Columns, String> {
        let cols = t.columns.as_deref().unwrap_or_default();
        if cols.len() > MAX_COLUMNS {
            return Err(format!(
                "a table of {} columns, over {MAX_COLUMNS}",
                cols.len()
            ));
        }
        let mut out = Columns::new();
        for LayoutColumn(attnum, name, ty, dropped, has_missing) in cols {
            if !(1..=MAX_COLUMNS as i64).contains(attnum) {
                return Err("a column number Postgres does not give".into());
            }
            let col = Column {
                name: cut(name),
                ty: cut(ty),
                dropped: *dropped,
                has_missing: *has_missing,
            };
            if out.insert(*attnum, col).is_some() {
                return Err("a column number given twice".into());
            }
        }
        Ok(out)
    };
    let find = |t: &LayoutTable| {
        mapped(t.oid, &t.schema, &t.name).or_else(|| {
            t.ancestors
                .iter()
                .flatten()
                .find_map(|&a| mapped(a, "", ""))
        })
    };
    if msg.event == "layout_before" {
        let mut kept = std::collections::HashMap::new();
        let mut n = 0;
        for t in &msg.tables {
            if find(t).is_none() {
                continue;
            }
            let c = columns(t)?;
            n += c.len();
            kept.insert(t.oid, c);
        }
        if befores.layouts.len() >= MAX_BEFORES || befores.columns + n > MAX_HELD_COLUMNS {
            befores.incomplete = true;
        } else {
            befores.columns += n;
            befores.layouts.push(Before {
                nonce: msg.nonce.clone(),
                tables: kept,
                columns: n,
            });
        }
        return Ok(Layout::Before);
    }
    if msg.event == "layout_dropped" {
        return Ok(Layout::After(dropped(&msg, find)?));
    }
    // An after-layout is compared with every before held. It ends the befores whose nonces it names (its
    // own statement's: QA48 H2, a forged after names none it could know), or, naming none (a script before
    // QA48, or forged), only the befores without one. A nonce it names that no before held carries is a
    // before lost (unreadable, or past the bounds): its tables' columns before are not known.
    let lost = msg.ends.iter().flatten().any(|n| {
        !befores
            .layouts
            .iter()
            .any(|b| b.nonce.as_deref() == Some(n.as_str()))
    });
    let unsure = befores.incomplete || lost;
    let held = std::mem::take(&mut befores.layouts);
    let mut found: Vec<Changed<'a>> = Vec::new();
    for t in &msg.tables {
        let Some(m) = find(t) else { continue };
        let after = columns(t)?;
        let f = entry(
            &mut found,
            m,
            |f| f.mapping,
            || Changed {
                mapping: m,
                changes: Vec::new(),
                unknown: Vec::new(),
            },
        );
        let relation = format!("{}.{}", cut(&t.schema), cut(&t.name));
        let relation = (relation != m.qualified()).then_some(relation);
        let mut seen = false;
        for before in &held {
            let Some(before) = before.tables.get(&t.oid) else {
                continue;
            };
            seen = true;
            for c in compare(before, &after) {
                let c = (relation.clone(), c);
                if f.changes.len() < MAX_LIST && !f.changes.contains(&c) {
                    f.changes.push(c);
                }
            }
        }
        if (!seen || unsure) && f.unknown.len() < MAX_LIST {
            let r = relation.unwrap_or_else(|| m.qualified());
            if !f.unknown.contains(&r) {
                f.unknown.push(r);
            }
        }
    }
    let ended = |b: &Before| match (&msg.ends, &b.nonce) {
        (Some(ends), Some(n)) => ends.contains(n),
        (Some(_), None) => false,
        (None, nonce) => nonce.is_none(),
    };
    befores.layouts = held.into_iter().filter(|b| !ended(b)).collect();
    befores.columns = befores.layouts.iter().map(|b| b.columns).sum();
    // Trust comes back once nothing is held: the next statement's before is then all there is.
    if befores.layouts.is_empty() {
        befores.incomplete = false;
    }
    let items = found
        .into_iter()
        .filter(|f| !f.changes.is_empty() || !f.unknown.is_empty())
        .map(|f| f.draft(&msg.command))
        .collect();
    Ok(Layout::After(items))
}

/// The items of a `layout_dropped` message: the columns a statement dropped by a cascade from another
/// object (an extension's type, a schema's domain, a collation, a function a generated column calls),
/// named by the statement's own account of what it dropped. It stands alone: no layout before it is
/// written (those statements are not known at ddl_command_start), and it ends none.
fn dropped<'a>(
    msg: &LayoutMessage,
    find: impl Fn(&LayoutTable) -> Option<&'a TableMapping>,
) -> Result<Vec<ItemDraft>, String> {
    let cut = |s: &str| crate::audit::value::bounded_str(s, MAX_NAME_BYTES);
    let mut found: Vec<Changed<'a>> = Vec::new();
    for t in &msg.tables {
        let Some(m) = find(t) else { continue };
        let names = t.dropped.as_deref().unwrap_or_default();
        if names.len() > MAX_COLUMNS {
            return Err(format!(
                "{} columns dropped from one table, over {MAX_COLUMNS}",
                names.len()
            ));
        }
        let f = entry(
            &mut found,
            m,
            |f| f.mapping,
            || Changed {
                mapping: m,
                changes: Vec::new(),
                unknown: Vec::new(),
            },
        );
        let relation = format!("{}.{}", cut(&t.schema), cut(&t.name));
        let relation = (relation != m.qualified()).then_some(relation);
        for name in names {
            let c = (
                relation.clone(),
                ColumnChange::Dropped { column: cut(name) },
            );
            if f.changes.len() < MAX_LIST && !f.changes.contains(&c) {
                f.changes.push(c);
            }
        }
    }
    Ok(found
        .into_iter()
        .filter(|f| !f.changes.is_empty())
        .map(|f| f.draft(&msg.command))
        .collect())
}

/// A column's change between a before- and an after-layout, by attnum.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ColumnChange {
    Renamed {
        from: String,
        to: String,
    },
    Retyped {
        column: String,
        from: String,
        to: String,
    },
    Dropped {
        column: String,
    },
    Added {
        column: String,
        ty: String,
        default: bool,
    },
}

impl ColumnChange {
    fn words(&self) -> String {
        match self {
            ColumnChange::Renamed { from, to } => format!("column {from} renamed to {to}"),
            ColumnChange::Retyped { column, from, to } => {
                format!("column {column} retyped from {from} to {to}")
            }
            ColumnChange::Dropped { column } => {
                format!("column {column} dropped (every row's value gone)")
            }
            ColumnChange::Added {
                column,
                ty,
                default: true,
            } => format!("column {column} ({ty}) added: every existing row reads its default"),
            ColumnChange::Added {
                column,
                ty,
                default: false,
            } => format!(
                "column {column} ({ty}) added: existing rows read null, unless the table was rewritten"
            ),
        }
    }

    fn json(&self, relation: Option<&str>) -> serde_json::Value {
        let mut v = match self {
            ColumnChange::Renamed { from, to } => {
                serde_json::json!({"change": "renamed", "from": from, "to": to})
            }
            ColumnChange::Retyped { column, from, to } => {
                serde_json::json!({"change": "retyped", "column": column, "from": from, "to": to})
            }
            ColumnChange::Dropped { column } => {
                serde_json::json!({"change": "dropped", "column": column})
            }
            ColumnChange::Added {
                column,
                ty,
                default,
            } => serde_json::json!({"change": "added", "column": column, "type": ty,
                "existing_rows_read": if *default { "its default" } else { "null, unless rewritten" }}),
        };
        if let (Some(r), serde_json::Value::Object(o)) = (relation, &mut v) {
            o.insert("relation".into(), r.into());
        }
        v
    }

    /// The columns it concerns, by their names after it (a dropped one by its name before).
    fn fields(&self) -> Vec<&str> {
        match self {
            ColumnChange::Renamed { from, to } => vec![from, to],
            ColumnChange::Retyped { column, .. }
            | ColumnChange::Dropped { column }
            | ColumnChange::Added { column, .. } => vec![column],
        }
    }
}

/// What changed between two layouts of one table: same attnum under another name (renamed), another
/// type text (retyped, typmod included), dropped now and not before, a new attnum (added). A rewrite's
/// `has_missing` cleared is no change of what rows read; default values are never looked at.
fn compare(before: &Columns, after: &Columns) -> Vec<ColumnChange> {
    let mut out = Vec::new();
    for (attnum, b) in before {
        if b.dropped {
            continue;
        }
        match after.get(attnum) {
            None => out.push(ColumnChange::Dropped {
                column: b.name.clone(),
            }),
            Some(a) if a.dropped => out.push(ColumnChange::Dropped {
                column: b.name.clone(),
            }),
            Some(a) => {
                if a.name != b.name {
                    out.push(ColumnChange::Renamed {
                        from: b.name.clone(),
                        to: a.name.clone(),
                    });
                }
                if a.ty != b.ty {
                    out.push(ColumnChange::Retyped {
                        column: a.name.clone(),
                        from: b.ty.clone(),
                        to: a.ty.clone(),
                    });
                }
            }
        }
    }
    for (attnum, a) in after {
        if a.dropped {
            continue;
        }
        // New, or dropped before and back (never so in Postgres: only a forged layout says it).
        if before.get(attnum).is_none_or(|b| b.dropped) {
            out.push(ColumnChange::Added {
                column: a.name.clone(),
                ty: a.ty.clone(),
                default: a.has_missing,
            });
        }
    }
    out
}

/// One mapped table's column changes in one statement, with the relation (a member's) each is of.
struct Changed<'a> {
    mapping: &'a TableMapping,
    changes: Vec<(Option<String>, ColumnChange)>,
    /// Relations whose columns before the statement are not known.
    unknown: Vec<String>,
}

impl Changed<'_> {
    fn draft(self, command: &str) -> ItemDraft {
        let m = self.mapping;
        let mut words: Vec<String> = self
            .changes
            .iter()
            .map(|(r, c)| match r {
                Some(r) => format!("{} (of {r})", c.words()),
                None => c.words(),
            })
            .collect();
        if !self.unknown.is_empty() {
            words.push(format!(
                "the columns before it are not known for {} (a before-layout missing or unreadable): they may have been renamed, dropped, added or retyped",
                self.unknown.join(", ")
            ));
        }
        let mut diff = serde_json::Map::new();
        diff.insert("command".into(), command.into());
        diff.insert(
            "effect".into(),
            format!(
                "columns changed without a row change, so rows read otherwise from here on: {}",
                words.join("; ")
            )
            .into(),
        );
        diff.insert(
            "columns".into(),
            self.changes
                .iter()
                .map(|(r, c)| c.json(r.as_deref()))
                .collect::<Vec<_>>()
                .into(),
        );
        if !self.unknown.is_empty() {
            diff.insert("columns_before_unknown".into(), self.unknown.into());
        }
        diff.insert(
            "reported_by".into(),
            "a DDL event message (not sealed)".into(),
        );
        let mut fields: Vec<String> = Vec::new();
        for f in self.changes.iter().flat_map(|(_, c)| c.fields()) {
            if fields.len() < MAX_LIST && !fields.iter().any(|x| x == f) {
                fields.push(f.to_owned());
            }
        }
        let table = m.qualified();
        ItemDraft {
            action: action::ALTERED.into(),
            organization_id: String::new(),
            project_id: String::new(),
            resource_type: m.config.resource_type.clone(),
            resource_id: String::new(),
            resource_display: table.clone(),
            changed_fields: fields,
            diff: serde_json::Value::Object(diff).to_string(),
            table_name: table,
            actor_refs: Default::default(),
            // Every organization's rows at once, like a rewrite.
            platform_wide: m.config.organization_column.is_some(),
            previous_scope: None,
        }
    }
}

#[cfg(test)]
mod tests {

    /// QA45 L1: past the cap, the names a merged message adds are counted in the item, never dropped
    /// unsaid.
    #[test]
    fn merged_names_past_the_cap_are_counted() {
        let with = |names: Vec<String>| {
            let mut d = unreadable("test");
            d.diff = serde_json::json!({"relations": names}).to_string();
            d
        };
        let mut held = with((0..MAX_LIST).map(|i| format!("public.p{i:04}")).collect());
        merge_rewrite(
            &mut held,
            &with(vec!["public.p0001".into(), "public.real".into()]),
        );
        merge_rewrite(&mut held, &with(vec!["public.other".into()]));
        let v: serde_json::Value = serde_json::from_str(&held.diff).unwrap();
        assert_eq!(v["relations"].as_array().map(Vec::len), Some(MAX_LIST));
        assert_eq!(v["relations_not_listed"], 2, "{v}");
    }
    use super::*;
    use crate::config::TableConfig;

    fn mapping() -> TableMapping {
        let config: TableConfig = toml::from_str(
            r#"
table = "public.memberships"
resource_type = "RESOURCE_TYPE_PROJECT_MEMBER"
organization_column = "org_id"
"#,
        )
        .expect("table config");
        TableMapping::new(config, vec!["id".into()])
    }

    #[test]
    fn a_rewrite_of_a_mapped_table_is_one_platform_wide_item() {
        let m = mapping();
        let find =
            |_oid: u32, s: &str, n: &str| (s == "public" && n == "memberships").then_some(&m);
        let msg = br#"{"v":1,"event":"table_rewrite","command":"ALTER TABLE","tables":[
            {"oid":5,"schema":"public","name":"memberships","root_schema":"public","root_name":"memberships"},
            {"oid":6,"schema":"public","name":"other"}]}"#;
        let d = drafts(msg, find).expect("read").items;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].action, "AUDIT_ACTION_ALTERED");
        assert!(d[0].platform_wide);
        assert_eq!(d[0].resource_display, "public.memberships");
        assert!(d[0].diff.contains("every row rewritten"), "{}", d[0].diff);
    }

    #[test]
    fn partitions_are_found_by_their_root_and_named_in_one_item() {
        let m = mapping();
        let find =
            |_oid: u32, s: &str, n: &str| (s == "public" && n == "memberships").then_some(&m);
        let msg = br#"{"v":1,"event":"ddl_command_end","command":"ALTER TYPE","type":"public.role_t",
            "renamed":[{"from":"viewer","to":"owner"}],"tables":[
            {"oid":7,"schema":"public","name":"m_1","root_schema":"public","root_name":"memberships","columns":["role"]},
            {"oid":8,"schema":"public","name":"m_2","root_schema":"public","root_name":"memberships","columns":["role","roles"]},
            {"oid":8,"schema":"public","name":"m_2","root_schema":"public","root_name":"memberships","columns":["role"]}]}"#;
        let d = drafts(msg, find).expect("read").items;
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].changed_fields, vec!["role", "roles"]);
        let diff: serde_json::Value = serde_json::from_str(&d[0].diff).expect("json");
        assert_eq!(
            diff["relations"],
            serde_json::json!(["public.m_1", "public.m_2"])
        );
        assert_eq!(
            diff["renamed"],
            serde_json::json!([{"from": "viewer", "to": "owner"}])
        );
    }

    #[test]
    fn labels_of_a_type_a_redacted_column_uses_are_not_said() {
        let mut m = mapping();
        m.config.redact_columns = vec!["role".into()];
        let find = |_oid: u32, _s: &str, _n: &str| Some(&m);
        let msg = br#"{"v":1,"event":"ddl_command_end","command":"ALTER TYPE","type":"public.role_t",
            "renamed":[{"from":"admin","to":"owner"}],"tables":[{"oid":7,"schema":"public","name":"memberships","columns":["role"]}]}"#;
        let d = drafts(msg, find).expect("read").items;
        assert!(
            !d[0].diff.contains("admin") && !d[0].diff.contains("owner"),
            "{}",
            d[0].diff
        );
    }

    #[test]
    fn an_unreadable_message_is_an_error_not_nothing() {
        let m = mapping();
        let find = |_oid: u32, _s: &str, _n: &str| Some(&m);
        assert!(drafts(b"not json", find).is_err());
        assert!(drafts(br#"{"v":2,"event":"x","command":"y","tables":[]}"#, find).is_err());
        assert!(drafts(&vec![b' '; MAX_MESSAGE_BYTES + 1], find).is_err());
        // What the triggers never write is not taken, and not quoted.
        let forged = br#"{"v":1,"event":"table_rewrite","command":"Send money to X","tables":[]}"#;
        let why = drafts(forged, find).expect_err("refused");
        assert!(!why.contains("money"), "{why}");
        let quoted = drafts(br#"{"v":1,"event":"<script>"#, find).expect_err("refused");
        assert!(!quoted.contains("script"), "{quoted}");
    }

    fn layout_msg(event: &str, cols: &str) -> Vec<u8> {
        format!(
            r#"{{"v":1,"event":"{event}","command":"ALTER TABLE","tables":[
            {{"oid":5,"schema":"public","name":"memberships","ancestors":null,"columns":{cols}}},
            {{"oid":6,"schema":"public","name":"other","ancestors":null,"columns":[[1,"x","text",false,false]]}}]}}"#
        )
        .into_bytes()
    }

    const BEFORE: &str = r#"[[1,"id","integer",false,false],[2,"plan","text",false,false],[3,"tier","text",false,false],[4,"n","integer",false,false]]"#;

    fn after_items(befores: &[&str], after: &str) -> Vec<ItemDraft> {
        let mut m = mapping();
        m.oid = 5;
        let find = |oid: u32, _s: &str, _n: &str| (oid == 5).then_some(&m);
        let mut held = Befores::default();
        for b in befores {
            match layout(&layout_msg("layout_before", b), &mut held, find) {
                Some(Ok(Layout::Before)) => {}
                _ => panic!("a before-layout"),
            }
        }
        match layout(&layout_msg("layout_after", after), &mut held, find) {
            Some(Ok(Layout::After(items))) => items,
            _ => panic!("an after-layout"),
        }
    }

    #[test]
    fn renames_drops_adds_and_retypes_are_named() {
        let after = r#"[[1,"id","integer",false,false],[2,"tier","text",false,false],[3,"........pg.dropped.3........","-",true,false],[4,"n","oid",false,false],[5,"plan","text",false,true]]"#;
        let d = after_items(&[BEFORE], after);
        assert_eq!(d.len(), 1, "{d:?}");
        let diff: serde_json::Value = serde_json::from_str(&d[0].diff).expect("json");
        assert_eq!(
            diff["columns"],
            serde_json::json!([
                {"change": "renamed", "from": "plan", "to": "tier"},
                {"change": "dropped", "column": "tier"},
                {"change": "retyped", "column": "n", "from": "integer", "to": "oid"},
                {"change": "added", "column": "plan", "type": "text", "existing_rows_read": "its default"},
            ])
        );
        assert!(d[0].platform_wide);
        assert_eq!(d[0].changed_fields, vec!["plan", "tier", "n"]);
        let effect = diff["effect"].as_str().expect("effect");
        assert!(effect.contains("column plan renamed to tier"), "{effect}");
        assert!(
            effect.contains("every existing row reads its default"),
            "{effect}"
        );
    }

    #[test]
    fn the_same_columns_give_no_item() {
        assert!(after_items(&[BEFORE], BEFORE).is_empty());
    }

    #[test]
    fn a_forged_before_only_adds_to_the_real_one() {
        let after = r#"[[1,"id","integer",false,false],[2,"tmp","text",false,false],[3,"tier","text",false,false],[4,"n","integer",false,false]]"#;
        // The forged layout equals the after: the real one still shows the rename.
        let d = after_items(&[BEFORE, after], after);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].diff.contains(r#""from":"plan","to":"tmp""#),
            "{}",
            d[0].diff
        );
    }

    #[test]
    fn an_after_without_a_before_is_an_item_saying_so() {
        let d = after_items(&[], BEFORE);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].diff.contains("columns_before_unknown"),
            "{}",
            d[0].diff
        );
    }

    #[test]
    fn each_after_ends_the_befores_before_it() {
        let mut m = mapping();
        m.oid = 5;
        let find = |oid: u32, _s: &str, _n: &str| (oid == 5).then_some(&m);
        let mut held = Befores::default();
        let after = r#"[[1,"id","integer",false,false]]"#;
        assert!(matches!(
            layout(&layout_msg("layout_before", BEFORE), &mut held, find),
            Some(Ok(Layout::Before))
        ));
        assert!(
            matches!(layout(&layout_msg("layout_after", after), &mut held, find), Some(Ok(Layout::After(i))) if i.len() == 1)
        );
        assert!(matches!(
            layout(&layout_msg("layout_before", after), &mut held, find),
            Some(Ok(Layout::Before))
        ));
        assert!(
            matches!(layout(&layout_msg("layout_after", after), &mut held, find), Some(Ok(Layout::After(i))) if i.is_empty())
        );
        // Too many befores: the next after cannot trust what it kept.
        for _ in 0..=MAX_BEFORES {
            assert!(matches!(
                layout(&layout_msg("layout_before", after), &mut held, find),
                Some(Ok(Layout::Before))
            ));
        }
        assert!(
            matches!(layout(&layout_msg("layout_after", after), &mut held, find), Some(Ok(Layout::After(i))) if i.len() == 1)
        );
    }

    /// A layout message of `memberships` (OID 5) with statement nonces: `extra` is `"nonce":…` or
    /// `"ends":[…]`.
    fn nonced(event: &str, extra: &str, cols: &str) -> Vec<u8> {
        format!(
            r#"{{"v":1,"event":"{event}","command":"ALTER TABLE",{extra},"tables":[
            {{"oid":5,"schema":"public","name":"memberships","ancestors":null,"columns":{cols}}}]}}"#
        )
        .into_bytes()
    }

    /// QA48 H2: the statement's own code writes an after naming no nonce (which ended every before) and
    /// then a before equal to the table after the statement. The real before stays held, so the real
    /// after still finds the dropped column; the forged before stays too, an alarm for later afters.
    #[test]
    fn a_forged_after_cannot_end_a_before_it_cannot_name() {
        let mut m = mapping();
        m.oid = 5;
        let find = |oid: u32, _s: &str, _n: &str| (oid == 5).then_some(&m);
        let mut held = Befores::default();
        let after_cols = r#"[[1,"id","integer",false,false],[2,"plan","text",false,false],[3,"x","-",true,false],[4,"n","integer",false,false]]"#;
        let run = |held: &mut Befores, msg: Vec<u8>| match layout(&msg, held, find) {
            Some(Ok(Layout::After(items))) => items,
            Some(Ok(Layout::Before)) => Vec::new(),
            other => panic!("{:?}", other.map(|r| r.err())),
        };
        run(
            &mut held,
            nonced("layout_before", r#""nonce":"n1""#, BEFORE),
        );
        run(
            &mut held,
            br#"{"v":1,"event":"layout_after","command":"ALTER TABLE","tables":[]}"#.to_vec(),
        );
        run(
            &mut held,
            nonced("layout_before", r#""nonce":"guess""#, after_cols),
        );
        let items = run(
            &mut held,
            nonced("layout_after", r#""ends":["n1"]"#, after_cols),
        );
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(
            items[0]
                .diff
                .contains(r#""change":"dropped","column":"tier""#),
            "{}",
            items[0].diff
        );
        assert!(
            !items[0].diff.contains("columns_before_unknown"),
            "{}",
            items[0].diff
        );
        // The real before is ended; the forged one is not, and makes the next statement's item say so.
        assert_eq!(held.layouts.len(), 1);
        run(
            &mut held,
            nonced("layout_before", r#""nonce":"n2""#, after_cols),
        );
        let items = run(
            &mut held,
            nonced("layout_after", r#""ends":["n2"]"#, after_cols),
        );
        assert!(
            items.is_empty(),
            "the forged before equals this after: {items:?}"
        );
        // An after naming a nonce no before held carries: that before was lost.
        let items = run(
            &mut held,
            nonced("layout_after", r#""ends":["n9"]"#, after_cols),
        );
        assert_eq!(items.len(), 1, "{items:?}");
        assert!(
            items[0].diff.contains("columns_before_unknown"),
            "{}",
            items[0].diff
        );
    }

    #[test]
    fn a_cascades_drop_names_its_columns_and_ends_no_before() {
        let mut m = mapping();
        m.oid = 5;
        let find = |oid: u32, _s: &str, _n: &str| (oid == 5).then_some(&m);
        let mut held = Befores::default();
        assert!(matches!(
            layout(&layout_msg("layout_before", BEFORE), &mut held, find),
            Some(Ok(Layout::Before))
        ));
        let msg = br#"{"v":1,"event":"layout_dropped","command":"DROP EXTENSION","tables":[
            {"oid":5,"schema":"public","name":"memberships","ancestors":null,"dropped":["email","email"]},
            {"oid":6,"schema":"public","name":"other","ancestors":null,"dropped":["x"]}]}"#;
        let Some(Ok(Layout::After(items))) = layout(msg, &mut held, find) else {
            panic!("items")
        };
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(items[0].changed_fields, vec!["email"]);
        assert!(
            items[0].diff.contains("DROP EXTENSION"),
            "{}",
            items[0].diff
        );
        assert_eq!(
            held.layouts.len(),
            1,
            "the before of another statement stays"
        );
    }

    #[test]
    fn hostile_layouts_are_unreadable_not_nothing() {
        let m = mapping();
        let find = |_oid: u32, _s: &str, _n: &str| Some(&m);
        let mut held = Befores::default();
        let bad = [
            layout_msg("layout_before", r#"[[0,"x","text",false,false]]"#),
            layout_msg(
                "layout_before",
                r#"[[1,"x","text",false,false],[1,"y","text",false,false]]"#,
            ),
            layout_msg("layout_before", r#"[["1","x","text",false,false]]"#),
            layout_msg("layout_after", r#"[[1,"x","text",false]]"#),
            br#"{"v":1,"event":"layout_before","command":"DROP TABLE","tables":[]}"#.to_vec(),
            br#"{"v":1,"event":"layout_sideways","command":"ALTER TABLE","tables":[]}"#.to_vec(),
            br#"{"v":2,"event":"layout_after","command":"ALTER TABLE","tables":[]}"#.to_vec(),
            // A cascade's drop names a DROP command tag, never one the layout triggers cover.
            br#"{"v":1,"event":"layout_dropped","command":"ALTER TABLE","tables":[]}"#.to_vec(),
            br#"{"v":1,"event":"layout_dropped","command":"DROP TYPE","tables":[]}"#.to_vec(),
            br#"{"v":1,"event":"layout_dropped","command":"DROP schema; oops","tables":[]}"#
                .to_vec(),
        ];
        for b in bad {
            assert!(
                matches!(layout(&b, &mut held, find), Some(Err(_))),
                "{}",
                String::from_utf8_lossy(&b)
            );
        }
        let many: String = (1..=MAX_COLUMNS + 1)
            .map(|i| format!(r#"[{i},"c","text",false,false]"#))
            .collect::<Vec<_>>()
            .join(",");
        assert!(matches!(
            layout(
                &layout_msg("layout_before", &format!("[{many}]")),
                &mut held,
                find
            ),
            Some(Err(_))
        ));
        // Not a layout message: left to `drafts`.
        assert!(layout(b"not json", &mut held, find).is_none());
        assert!(layout(
            br#"{"v":1,"event":"table_rewrite","command":"ALTER TABLE","tables":[]}"#,
            &mut held,
            find
        )
        .is_none());
    }
}
