//! Mapping rules: which table is which resource, and how one row change becomes (at most) one audit item.

use serde_json::Value;
use std::collections::HashMap;

use crate::audit::attribution::seal::hex;
use crate::audit::item::join_resource_id;
use crate::audit::redaction::SecretCopies;
use crate::audit::value::{
    bounded_snapshot, text_to_json, write_json_str, write_text_json, PgKind, TypeCatalog,
};
use crate::capture::catalog::TableInfo;
use crate::capture::pgoutput::{OldKind, Relation, Tuple, TupleValue};
use crate::config::{split_table, DerivedActionConfig, TableConfig};
use crate::vocab::{action, PrincipalType};

/// A table's rules, with names still unresolved (resolved per Relation message, since columns can change).
#[derive(Debug, Clone)]
pub struct TableMapping {
    pub schema: String,
    pub table: String,
    pub config: TableConfig,
    /// id columns: from the config, else the primary key found at start.
    pub id_columns: Vec<String>,
    /// `capture.max_value_bytes`: larger values are stored as a truncation marker.
    pub max_value_bytes: usize,
    /// The table's OID when capture started (0: unknown): its identity in the stream, whatever its name.
    pub oid: u32,
    /// The table's columns when capture started (None: not read): a column outside them and the config,
    /// appearing while a redacted column is missing, may be that column renamed (see `BoundRelation::bind`).
    pub start_columns: Option<Vec<String>>,
}

impl TableMapping {
    pub fn new(config: TableConfig, primary_key: Vec<String>) -> Self {
        let (schema, table) = split_table(&config.table);
        let id_columns = if config.id_columns.is_empty() {
            primary_key
        } else {
            config.id_columns.clone()
        };
        TableMapping {
            schema: schema.to_owned(),
            table: table.to_owned(),
            config,
            id_columns,
            max_value_bytes: 256 << 10,
            oid: 0,
            start_columns: None,
        }
    }

    pub fn with_max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

/// Turn each configured table, with what the catalog says of it (in config order), into its mapping;
/// fails with the fix when a table cannot be audited as configured.
/// `baseline`: the redaction baseline as this start carries it on, which tells a redacted column dropped
/// from one misspelt or renamed; `accept_columns` (`--accept-columns`) takes a table without any of its
/// redacted columns as it is.
pub fn from_catalog(
    tables: &[TableConfig],
    catalog: &[TableInfo],
    dbname: &str,
    baseline: Option<&crate::audit::redaction::Baseline>,
    accept_columns: bool,
) -> Result<Vec<TableMapping>, String> {
    let mut mappings = Vec::with_capacity(tables.len());
    for (t, info) in tables.iter().zip(catalog) {
        let (schema, table) = split_table(&t.table);
        if !info.exists {
            return Err(format!(
                "configured table {schema}.{table} does not exist in database {dbname}; fix the [[tables]] entry or create the table{}",
                crate::config::dotted_hint(schema, table)
            ));
        }
        if info.primary_key.is_empty() && t.id_columns.is_empty() {
            return Err(format!(
                "table {schema}.{table} has no primary key: add one, or set id_columns in its [[tables]] entry"
            ));
        }
        for c in t.required_columns() {
            if !info.columns.iter().any(|have| have == c) {
                return Err(format!(
                    "table {schema}.{table} has no column {c:?} named in its [[tables]] entry: if it was renamed, \
                     give the new name its role and the old one in former_names (`former_names = {{ new_name = \
                     [\"{c}\"] }}`: changes still in the slot carry it); if it was dropped, take it out of the entry, \
                     or list it in optional_columns while older changes carry it (not an id, organization or \
                     project column)"
                ));
            }
            if info.generated.iter().any(|g| g == c) {
                return Err(format!(
                    "table {schema}.{table}: {} ({c:?})",
                    crate::capture::catalog::GENERATED
                ));
            }
        }
        for (what, fix) in derived_action_mismatches(t, info)
            .into_iter()
            .chain(unscoped_table(t))
        {
            tracing::warn!("{what}: {fix}");
        }
        let missing = missing_redacted(t, info);
        let dropped = baseline.map_or_else(Vec::new, |b| b.dropped(t, info));
        if !t.redact_columns.is_empty()
            && missing.len() == t.redact_columns.len()
            && dropped.is_empty()
        {
            let why = none_redacted(&format!("{schema}.{table}"), &missing);
            if !accept_columns {
                return Err(why);
            }
            tracing::warn!(doubt = %why, "taken as it is (--accept-columns)");
        }
        for c in &dropped {
            tracing::warn!(table = %format!("{schema}.{table}"), column = %c, "redacted column was dropped (its column number is gone, as remembered in ClickHouse): keep it in redact_columns and optional_columns while older changes in the slot may carry it");
        }
        for c in missing.iter().filter(|c| !dropped.contains(c)) {
            tracing::warn!(table = %format!("{schema}.{table}"), column = %c, "redacted column is not in the table (optional_columns): it redacts nothing until it appears; if it is not the other name of a rename in progress, check its spelling");
        }
        let mut mapping = TableMapping::new(t.clone(), info.primary_key.clone());
        mapping.oid = info.oid;
        mapping.start_columns = Some(info.columns.clone());
        if let Some(c) = mapping
            .id_columns
            .iter()
            .find(|c| t.redact_columns.contains(c))
        {
            return Err(format!(
                "table {schema}.{table}: its resource id would be redacted column {c:?} (the primary key, as \
                 id_columns is not set): its value would leak as the item's resource id; set id_columns to \
                 other columns, or stop redacting it"
            ));
        }
        // The primary key as the id (id_columns not set) is checked here, where it is known; the config
        // refuses an ignored id_columns, organization or project column (QA48a M3).
        if let Some(c) = mapping
            .id_columns
            .iter()
            .find(|c| t.ignore_columns.contains(c))
        {
            return Err(crate::config::ignored_key(&format!("{schema}.{table}"), c));
        }
        mappings.push(mapping);
    }
    Ok(mappings)
}

/// A mapped table without an organization column: its items belong to no organization, so no organization's
/// API, dashboard or export shows them (the operator's `waltrail log` and ClickHouse do). As (what, fix).
pub fn unscoped_table(t: &TableConfig) -> Option<(String, String)> {
    t.organization_column.is_none().then(|| {
        (
            format!(
                "table {} has no organization_column: its items belong to no organization, so no organization's \
                 API key, dashboard or export shows them (waltrail log and ClickHouse do); they are linked into \
                 the platform chain, so every organization's export holds that chain with positions missing and \
                 `waltrail verify --export` says PART (exit 2) for it",
                t.table
            ),
            "set organization_column if its rows belong to organizations; a table of the whole platform is \
             audited for the operator only"
                .to_owned(),
        )
    })
}

/// Pairs of mapped tables where one could be attached (or made an inheritance child) under the other —
/// it has every column of the other — while the other redacts a column it does not. A row written through
/// the outer table while the inner one is nested under it is stored in the inner one's rows, and if no look
/// saw the nesting, capture records it as the inner table's, with the inner table's redaction (README,
/// Known limits). As (what, fix).
pub fn nestable_redaction_gaps(
    configs: &[TableConfig],
    infos: &[TableInfo],
) -> Vec<(String, String)> {
    let tables: Vec<(&TableConfig, &TableInfo)> = configs
        .iter()
        .zip(infos)
        .filter(|(_, i)| i.exists)
        .collect();
    let mut out = Vec::new();
    for (inner, inner_info) in &tables {
        for (outer, outer_info) in &tables {
            if std::ptr::eq(*inner, *outer) || outer.redact_columns.is_empty() {
                continue;
            }
            let fits = !outer_info.columns.is_empty()
                && outer_info
                    .columns
                    .iter()
                    .all(|c| inner_info.columns.contains(c));
            let open: Vec<&String> = outer
                .redact_columns
                .iter()
                .filter(|c| inner_info.columns.contains(c) && !inner.redact_columns.contains(c))
                .collect();
            if fits && !open.is_empty() {
                let open: Vec<&str> = open.iter().map(|c| c.as_str()).collect();
                out.push((
                    format!(
                        "table {} has every column of table {}, which redacts {} that {} does not: attached \
                         under {} (or made its inheritance child) by DDL no watchdog look sees, a row written \
                         through {} would be recorded as {}'s, those columns in clear",
                        inner.table,
                        outer.table,
                        open.join(", "),
                        inner.table,
                        outer.table,
                        outer.table,
                        inner.table
                    ),
                    format!(
                        "add {} to {}'s redact_columns (or keep DDL on both tables with people the audit is \
                         not about)",
                        open.join(", "),
                        inner.table
                    ),
                ));
            }
        }
    }
    out
}

/// The redacted columns (optional ones: the others are required) the table does not have now.
pub fn missing_redacted(t: &TableConfig, info: &TableInfo) -> Vec<String> {
    t.redact_columns
        .iter()
        .filter(|c| !info.columns.contains(c))
        .cloned()
        .collect()
}

/// Rules that silently never fire: derived actions (or a soft-delete column) on ignored columns alone, and
/// derived actions whose `from` or `to` can never equal a value of their column, by the column's type (a
/// number against a text column, a string against an integer). Each as (what, the fix), for `run` to log
/// at start and `check` to report.
pub fn derived_action_mismatches(t: &TableConfig, info: &TableInfo) -> Vec<(String, String)> {
    let mut out = Vec::new();
    // Ignored columns are left out before an update's action is decided: a rule on them alone never fires.
    let ignored = |c: &String| t.ignore_columns.contains(c);
    let fix = "remove the column from ignore_columns, or drop the rule".to_owned();
    for d in &t.derived_actions {
        let watched: Vec<&String> = d.column.iter().chain(&d.changed).collect();
        if !watched.is_empty() && watched.iter().all(|c| ignored(c)) {
            out.push((
                format!(
                    "table {}: derived action {} watches only ignored column(s) {}: ignored columns are left out \
                     before an update's action is decided, so the rule never fires",
                    t.table,
                    d.action,
                    watched.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                ),
                fix.clone(),
            ));
        }
    }
    if let Some(c) = t.soft_delete_column.as_ref().filter(|c| ignored(c)) {
        out.push((
            format!(
                "table {}: soft_delete_column {c:?} is also ignored, so a soft delete is never recognised",
                t.table
            ),
            fix,
        ));
    }
    // A soft delete is NULL → a value: a column that is never NULL (NOT NULL), or a boolean flag (false →
    // true), never makes one, and every soft delete is stored as an UPDATED (QA48a M4).
    if let Some(c) = &t.soft_delete_column {
        let at = info.columns.iter().position(|have| have == c);
        let boolean = at
            .and_then(|i| info.column_types.get(i))
            .is_some_and(|&(_, category)| category == 'B');
        let not_null = info.not_null.contains(c);
        if boolean || not_null {
            let shape = match (boolean, not_null) {
                (true, true) => "a boolean declared NOT NULL",
                (true, false) => "a boolean",
                _ => "declared NOT NULL",
            };
            out.push((
                format!(
                    "table {}: soft_delete_column {c:?} is {shape}, but a soft delete is the column going from \
                     NULL to a value (and a restore back to NULL): its soft deletes are stored as \
                     AUDIT_ACTION_UPDATED",
                    t.table
                ),
                if boolean {
                    format!(
                        "drop soft_delete_column and add two derived actions: {{ action = \"AUDIT_ACTION_DELETED\", \
                         column = {c:?}, from = false, to = true }} and {{ action = \"AUDIT_ACTION_RESTORED\", \
                         column = {c:?}, from = true, to = false }}; or name a nullable timestamp column \
                         (deleted_at) as soft_delete_column"
                    )
                } else {
                    "name a nullable column (deleted_at, NULL while the row is live) as soft_delete_column, \
                     or drop it and describe the soft delete with derived actions on this column's values"
                        .to_owned()
                },
            ));
        }
    }
    for d in &t.derived_actions {
        let Some(c) = &d.column else { continue };
        let Some(kind) = info
            .columns
            .iter()
            .position(|have| have == c)
            .and_then(|i| info.column_types.get(i))
            .and_then(|&(oid, category)| column_kind(oid, category))
        else {
            continue;
        };
        for (side, v) in [("from", &d.from), ("to", &d.to)] {
            let Some(v) = v else { continue };
            if let Some(expected) = never_matches(v, &kind) {
                out.push((
                    format!(
                        "table {}: derived action {} compares column {c:?} with {side} = {v}, which never \
                         equals a value of that column: the rule never fires",
                        t.table, d.action
                    ),
                    format!("write {side} as {expected}"),
                ));
            }
        }
    }
    out
}

/// How a column of this (domain-resolved) type and category is rendered, where that is certain.
fn column_kind(oid: u32, category: char) -> Option<PgKind> {
    // money is kept as its text ("$1.00"), which no number equals.
    if oid == 790 {
        return Some(PgKind::Text);
    }
    // Enums and user string types are text; other unknown types (a domain over a domain) are not judged.
    crate::audit::value::builtin_kind(oid).or(matches!(category, 'E' | 'S').then_some(PgKind::Text))
}

/// `None` when a rule value may equal some value of the kind; else what it should be written as.
fn never_matches(v: &toml::Value, kind: &PgKind) -> Option<&'static str> {
    use toml::Value as T;
    let expected = match kind {
        PgKind::Json => return None,
        PgKind::Bool => "true or false",
        PgKind::Int | PgKind::Float | PgKind::Numeric => "a number",
        PgKind::Array { .. } => "an array",
        PgKind::Text | PgKind::Timestamp | PgKind::TimestampTz | PgKind::Date | PgKind::Bytea => {
            "a string"
        }
    };
    let fits = match (v, kind) {
        (T::Float(f), _) if !f.is_finite() => false,
        (T::Integer(_) | T::Float(_), k) => {
            matches!(k, PgKind::Int | PgKind::Float | PgKind::Numeric)
        }
        (T::Boolean(_), k) => matches!(k, PgKind::Bool),
        // numeric is exact text, and a float's NaN and ±Infinity are strings.
        (T::String(s), PgKind::Float) => s.parse::<f64>().is_ok_and(|f| !f.is_finite()),
        (T::String(_) | T::Datetime(_), k) => {
            !matches!(k, PgKind::Bool | PgKind::Int | PgKind::Array { .. })
        }
        (T::Array(_) | T::Table(_), k) => matches!(k, PgKind::Array { .. }),
    };
    (!fits).then_some(if matches!(v, T::Float(f) if !f.is_finite()) {
        "a finite number (nan and inf equal no value)"
    } else {
        expected
    })
}

/// How a derived action matches, with column names resolved to positions.
#[derive(Debug, Clone)]
enum DerivedRule {
    AnyChanged(Vec<usize>),
    Transition {
        column: usize,
        from: Option<RuleValue>,
        to: Option<RuleValue>,
    },
}

/// A Relation with its mapping resolved to column positions.
#[derive(Debug)]
pub struct BoundRelation {
    pub relation: Relation,
    pub kinds: Vec<PgKind>,
    pub mapping: Option<BoundMapping>,
}

#[derive(Debug)]
pub struct BoundMapping {
    pub resource_type: String,
    max_value_bytes: usize,
    qualified: String,
    id: Vec<usize>,
    display: Option<usize>,
    organization: Option<usize>,
    project: Option<usize>,
    soft_delete: Option<usize>,
    ignored: Vec<bool>,
    redacted: Vec<bool>,
    derived: Vec<(String, DerivedRule)>,
    created_by: Option<usize>,
    updated_by: Option<usize>,
    /// `[tables.actor] updated_by_only_when_changed`.
    updated_by_changed_only: bool,
    deleted_by: Option<usize>,
    session: Option<usize>,
    actor_type: PrincipalType,
}

impl BoundMapping {
    /// Whether column `i` says who or where (the resource's id, organization, project, actor or session):
    /// its value places and attributes the item and is stored as it is, so the copy rule does not hide it
    /// in the diff either. A user who chose a secret equal to their own id must not hide who acted.
    fn identifies(&self, i: usize) -> bool {
        self.id.contains(&i)
            || [
                self.organization,
                self.project,
                self.created_by,
                self.updated_by,
                self.deleted_by,
                self.session,
            ]
            .contains(&Some(i))
    }

    /// Whether the table's rows belong to organizations (an organization column is configured).
    pub fn is_org_scoped(&self) -> bool {
        self.organization.is_some()
    }

    /// Whether a delete carrying only the key (no REPLICA IDENTITY FULL) lacks the row's organization or
    /// project: its item then belongs to no organization.
    pub fn scope_outside_key(&self, relation: &Relation) -> bool {
        [self.organization, self.project]
            .into_iter()
            .flatten()
            .any(|i| relation.columns.get(i).is_some_and(|c| !c.is_key()))
    }
}

/// What a change looked like, before becoming an item.
pub enum RowChange<'a> {
    Insert(&'a Tuple),
    Update {
        old: Option<(OldKind, &'a Tuple)>,
        new: &'a Tuple,
    },
    /// The old row: whole (REPLICA IDENTITY FULL), or only its key columns (the others are not sent).
    Delete(&'a Tuple, OldKind),
}

#[derive(Clone, Copy)]
enum ChangeKind {
    Insert,
    Update,
    Delete,
}

#[derive(Debug, Clone)]
pub struct ItemDraft {
    pub action: String,
    pub organization_id: String,
    pub project_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub resource_display: String,
    pub changed_fields: Vec<String>,
    /// The before/after diff as JSON text (an object keyed by column).
    pub diff: String,
    pub table_name: String,
    /// Actor and session ids found on the row, for attribution.
    pub actor_refs: ActorRefs,
    /// Concerns every organization (see [`crate::audit::item::AuditItem::platform_wide`]).
    pub platform_wide: bool,
    /// The organization, project and resource id the resource left, when an update moved it: the item is
    /// recorded in both, so the scope it left sees it go (under the id it had there, which differs when
    /// the organization is part of the key) and the one it joined sees it arrive.
    pub previous_scope: Option<PreviousScope>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousScope {
    pub organization_id: String,
    pub project_id: String,
    pub resource_id: String,
}

impl ItemDraft {
    /// About what the draft holds in memory, for bounding what waits for a context message.
    pub fn approx_bytes(&self) -> usize {
        128 + self.diff.len()
            + self.resource_id.len()
            + self.resource_display.len()
            + self.organization_id.len()
            + self.project_id.len()
            + self
                .changed_fields
                .iter()
                .map(|f| f.len() + 24)
                .sum::<usize>()
    }
}

/// Who the row itself says acted (from the table's actor columns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActorRefs {
    pub principal_id: Option<String>,
    pub principal_type: Option<PrincipalType>,
    pub session_id: Option<String>,
    /// Whether the row's `deleted_by` is this change's own write, for the assembler to tell a deleter from
    /// a stale one.
    pub deleted_by_write: OwnWrite,
    /// The same of the row's session column: a hard DELETE carries the old row's, the session of whoever
    /// wrote the row last, which names the deleter only when the same transaction wrote it.
    pub session_write: OwnWrite,
}

/// A hard DELETE carries the old row, whose actor columns were written by whoever wrote the row last:
/// `deleted_by` outlives the delete it named (a soft delete undone leaves it set, QA48a H3), and the
/// session column names the last writer. Such a column names the deleter only when the same transaction
/// wrote it (or, for `deleted_by`, when the DELETE finds the row soft-deleted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OwnWrite {
    /// Not a question for this change.
    #[default]
    Unused,
    /// This insert or update wrote the column (`deleted_by`: while the row is not soft-deleted): a DELETE
    /// of the row later in the transaction may name it.
    Written,
    /// A hard DELETE that names someone by the column: it stands only if the transaction wrote it before.
    Unproven,
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// A derived action's `from` or `to`, ready to compare with a column's value.
#[derive(Debug, Clone, PartialEq)]
enum RuleValue {
    /// A TOML number, as an exact decimal: compared with int, float and numeric columns by value.
    Number(Decimal),
    /// A TOML `nan` or `±inf`: equal to no value (not even a float column's NaN, which is no number).
    NotANumber,
    /// Anything else, compared with the value's JSON as it is (a string with the text, as written).
    Json(Value),
}

impl RuleValue {
    fn from_toml(v: &toml::Value) -> RuleValue {
        let number = match v {
            toml::Value::Integer(i) => Decimal::parse(&i.to_string()),
            // Display of an f64 is its shortest round-trip decimal, without exponent: 0.1 is "0.1".
            toml::Value::Float(f) if f.is_finite() => Decimal::parse(&f.to_string()),
            toml::Value::Float(_) => return RuleValue::NotANumber,
            other => return RuleValue::Json(toml_to_json(other)),
        };
        number.map_or(RuleValue::NotANumber, RuleValue::Number)
    }

    /// Whether a column of this kind holds `value`.
    fn matches(&self, kind: &PgKind, value: &Value) -> bool {
        match (self, value) {
            (RuleValue::Number(n), Value::Number(v)) => {
                Decimal::parse(&v.to_string()).as_ref() == Some(n)
            }
            // numeric is rendered as its exact text ("10.00", "-1.50000000000000000000"); NaN parses as
            // no number and so equals none.
            (RuleValue::Number(n), Value::String(v)) if matches!(kind, PgKind::Numeric) => {
                Decimal::parse(v).as_ref() == Some(n)
            }
            (RuleValue::Json(j), v) => j == v,
            _ => false,
        }
    }
}

/// An exact decimal number in one normal form, so that equal numbers compare equal whatever their spelling
/// ("10.00" and "10", "-0" and "0", "1.5e3" and "1500"). Parsed from text, never through f64: a 40-digit
/// numeric would be rounded, and 0.1 + 0.2 is not 0.3 there.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    negative: bool,
    /// Significant digits, without leading or trailing zeros ("" for zero).
    digits: String,
    /// The value is 0.`digits` × 10^`exponent` (0 for zero).
    exponent: i64,
}

impl Decimal {
    /// `[+-]digits[.digits][(e|E)[+-]digits]`, at least one digit; anything else (NaN, Infinity, a
    /// currency sign, spaces) is no number.
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let exp: i64 = match exp {
            Some(e) => {
                let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                // More than 18 digits of exponent is no value a column holds (and would overflow).
                if unsigned.is_empty() || unsigned.len() > 18 || !all_digits(unsigned) {
                    return None;
                }
                e.parse().ok()?
            }
            None => 0,
        };
        let all = format!("{int}{frac}");
        let leading = all.len() - all.trim_start_matches('0').len();
        let digits = all.trim_start_matches('0').trim_end_matches('0');
        if digits.is_empty() {
            // Zero, however written: "-0", "0.000", "0e5".
            return Some(Decimal {
                negative: false,
                digits: String::new(),
                exponent: 0,
            });
        }
        let exponent = exp.checked_add(int.len() as i64 - leading as i64)?;
        Some(Decimal {
            negative,
            digits: digits.to_owned(),
            exponent,
        })
    }
}

/// A table none of whose redacted columns is there, not known to be dropped: the message with its fixes.
fn none_redacted(table: &str, missing: &[String]) -> String {
    format!(
        "table {table} has none of its redact_columns ({}): a typo, or a secret column renamed to a name not \
         listed, would store the secret in clear. If the secret column was renamed, add its current name to \
         redact_columns (and keep the old one in optional_columns while older changes in the slot carry it); \
         if it was dropped, keep it in redact_columns and optional_columns: waltrail takes a drop once it sees \
         the column's number gone (remembered in ClickHouse from an earlier start), and otherwise `waltrail run \
         --accept-columns` takes the table as it is, once",
        missing.join(", ")
    )
}

/// About where Postgres moves a value out of line (TOAST): a secret this large may be left out of a change.
const TOASTED: usize = 2000;
/// What a display value that is a secret's copy reads as.
const REDACTED_DISPLAY: &str = "(redacted)";

/// Redaction fails closed on a Relation too: with redacted columns configured, none of them present, or
/// one the table had at start missing while a column appeared that was neither in the table at start nor
/// named by the config (the signature of a secret renamed to a name not listed), would store a secret in
/// clear.
fn redaction_holds(m: &TableMapping, b: &BoundMapping, relation: &Relation) -> Result<(), String> {
    let cfg = &m.config;
    if cfg.redact_columns.is_empty() {
        return Ok(());
    }
    let present: Vec<&str> = relation.columns.iter().map(|c| c.name.as_str()).collect();
    let table = format!("{}.{}", relation.namespace, relation.name);
    let missing: Vec<&String> = cfg
        .redact_columns
        .iter()
        .filter(|c| !present.contains(&c.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !b.redacted.iter().any(|r| *r) {
        // Dropped, as capture found by column number, with no name in this Relation that could be the column
        // under another name.
        // Every one of them: one proven drop says nothing of another redacted column renamed.
        if missing.iter().all(|c| relation.dropped.contains(c)) {
            return Ok(());
        }
        let missing: Vec<String> = missing.into_iter().cloned().collect();
        // Names this change carries that the table did not have at start: where a secret could be.
        let new_names: Vec<&str> = m.start_columns.as_ref().map_or_else(Vec::new, |start| {
            present
                .iter()
                .copied()
                .filter(|c| !start.iter().any(|s| s == c))
                .collect()
        });
        let carried = if new_names.is_empty() {
            String::new()
        } else {
            format!(
                " (this change carries column(s) {} the table did not have when capture started: a secret may be \
                 there under another name)",
                new_names.join(", ")
            )
        };
        return Err(format!(
            "{}{carried}. Nothing of this table is stored or confirmed until then; restart waltrail after the fix \
             (the change waits in the replication slot)",
            none_redacted(&table, &missing)
        ));
    }
    let Some(start) = &m.start_columns else {
        return Ok(());
    };
    // Only a redacted column the table had at start can have been renamed since (the other name of a
    // rename still to come is missing by design).
    let missing: Vec<&String> = missing.into_iter().filter(|c| start.contains(c)).collect();
    // Each such column taken over by a redacted name the table did not have at start: renames the config
    // foresaw.
    let took_over = cfg
        .redact_columns
        .iter()
        .filter(|c| present.contains(&c.as_str()) && !start.contains(c))
        .count();
    if missing.len() <= took_over {
        return Ok(());
    }
    let named: Vec<&String> = cfg.named_columns().collect();
    let appeared: Vec<&str> = present
        .iter()
        .copied()
        .filter(|c| !start.iter().any(|s| s == c) && !named.iter().any(|n| n.as_str() == *c))
        .collect();
    if appeared.is_empty() {
        return Ok(());
    }
    Err(format!(
        "table {table}: redacted column(s) {} are not in it while column(s) {} appeared since capture started: if \
         a redacted column was renamed, its new name is not redacted and would be stored in clear. Add the new name \
         to redact_columns (and to optional_columns while older changes in the slot carry the old one); if no \
         secret was renamed, remove the missing name(s) from redact_columns and optional_columns. Nothing of this \
         table is stored or confirmed until then; restart waltrail after the fix (the change waits in the \
         replication slot)",
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
        appeared.join(", ")
    ))
}

impl BoundRelation {
    /// Bind a relation to its mapping. Fails closed when a configured column is not in the relation (renamed
    /// or dropped): a renamed redacted column would otherwise be stored in clear under its new name, so
    /// nothing of the table may be stored until the config says what to do.
    pub fn bind(
        relation: Relation,
        mapping: Option<&TableMapping>,
        catalog: &TypeCatalog,
    ) -> Result<Self, String> {
        let kinds = relation
            .columns
            .iter()
            .map(|c| catalog.kind(c.type_oid))
            .collect();
        let mut missing: Vec<(String, &'static str)> = Vec::new();
        let bound = mapping.map(|m| {
            let index: HashMap<&str, usize> = relation
                .columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.as_str(), i))
                .collect();
            let optional = &m.config.optional_columns;
            let former = &m.config.former_names;
            // The id and scope roles are never optional: a change without them would be stored with no id
            // or in no organization, seen by nobody who should see it (QA48a M1, M2). Their old names come
            // from `former_names`.
            let mut find = |name: &str, role: &'static str| -> Option<usize> {
                let found = index.get(name).copied().or_else(|| {
                    former
                        .get(name)
                        .into_iter()
                        .flatten()
                        .find_map(|old| index.get(old.as_str()).copied())
                });
                let may_lack = optional.iter().any(|o| o == name)
                    && !matches!(
                        role,
                        "id_columns" | "organization_column" | "project_column"
                    );
                if found.is_none() && !may_lack {
                    missing.push((name.to_owned(), role));
                }
                found
            };
            let cfg = &m.config;
            let id = m
                .id_columns
                .iter()
                .filter_map(|c| find(c, "id_columns"))
                .collect();
            let display = cfg
                .display_column
                .as_deref()
                .and_then(|c| find(c, "display_column"));
            let organization = cfg
                .organization_column
                .as_deref()
                .and_then(|c| find(c, "organization_column"));
            let project = cfg
                .project_column
                .as_deref()
                .and_then(|c| find(c, "project_column"));
            let soft_delete = cfg
                .soft_delete_column
                .as_deref()
                .and_then(|c| find(c, "soft_delete_column"));
            let mut ignored = vec![false; relation.columns.len()];
            for c in &cfg.ignore_columns {
                if let Some(i) = find(c, "ignore_columns") {
                    ignored[i] = true;
                }
            }
            let mut redacted = vec![false; relation.columns.len()];
            for c in &cfg.redact_columns {
                if let Some(i) = find(c, "redact_columns") {
                    redacted[i] = true;
                }
            }
            let derived = cfg
                .derived_actions
                .iter()
                .filter_map(|d: &DerivedActionConfig| {
                    let rule = match &d.column {
                        Some(c) => DerivedRule::Transition {
                            column: find(c, "derived_actions")?,
                            from: d.from.as_ref().map(RuleValue::from_toml),
                            to: d.to.as_ref().map(RuleValue::from_toml),
                        },
                        None => DerivedRule::AnyChanged(
                            d.changed
                                .iter()
                                .filter_map(|c| find(c, "derived_actions"))
                                .collect(),
                        ),
                    };
                    Some((d.action.clone(), rule))
                })
                .collect();
            let actor = cfg.actor.clone().unwrap_or_default();
            let created_by = actor
                .created_by
                .as_deref()
                .and_then(|c| find(c, "actor.created_by"));
            let updated_by = actor
                .updated_by
                .as_deref()
                .and_then(|c| find(c, "actor.updated_by"));
            let deleted_by = actor
                .deleted_by
                .as_deref()
                .and_then(|c| find(c, "actor.deleted_by"));
            let session = actor
                .session
                .as_deref()
                .and_then(|c| find(c, "actor.session"));
            BoundMapping {
                max_value_bytes: m.max_value_bytes,
                created_by,
                updated_by,
                updated_by_changed_only: actor.updated_by_only_when_changed,
                deleted_by,
                session,
                actor_type: actor.principal_type,
                resource_type: cfg.resource_type.clone(),
                qualified: m.qualified(),
                id,
                display,
                organization,
                project,
                soft_delete,
                ignored,
                redacted,
                derived,
            }
        });
        if !missing.is_empty() {
            let list = missing
                .iter()
                .map(|(c, role)| format!("{c:?} ({role})"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(format!(
                "table {}.{} no longer has the configured column(s) {list}: renamed or dropped. Nothing of this \
                 table is stored or confirmed until the config says what to do (a renamed secret would otherwise \
                 be stored in clear): fix its [[tables]] entry (after a rename: give the column's new name the \
                 same role and name the old one in former_names, `former_names = {{ new_name = [\"old_name\"] }}`, \
                 since older changes still in the slot carry the old one; the id columns default to the primary \
                 key) and restart waltrail; the change waits in the replication slot",
                relation.namespace, relation.name
            ));
        }
        if let (Some(m), Some(b)) = (mapping, &bound) {
            redaction_holds(m, b, &relation)?;
        }
        Ok(BoundRelation {
            relation,
            kinds,
            mapping: bound,
        })
    }

    /// About how long the diff of a change will be, to allocate it once.
    fn diff_size_hint(&self, change: &RowChange<'_>) -> usize {
        let values = |t: &Tuple| -> usize {
            t.iter()
                .map(|v| match v {
                    TupleValue::Text(b) | TupleValue::Binary(b) => b.len() + 8,
                    _ => 4,
                })
                .sum()
        };
        let names: usize = self
            .relation
            .columns
            .iter()
            .map(|c| c.name.len() + 24)
            .sum();
        let hint = names
            + match change {
                RowChange::Insert(t) | RowChange::Delete(t, _) => values(t),
                RowChange::Update { old, new } => {
                    values(new) + old.map(|(_, t)| values(t)).unwrap_or(0)
                }
            };
        // A hint, not a promise: huge values become markers, so never reserve for them up front.
        hint.min(4 << 20)
    }

    /// Append the JSON of column `i`'s value to a diff being written.
    /// Write one value as JSON; a value larger than the limit is written as a marker instead, with its
    /// size and SHA-256, so one hostile row cannot blow up memory, the batch or ClickHouse.
    fn write_value(&self, out: &mut Vec<u8>, i: usize, v: &TupleValue) {
        let limit = self
            .mapping
            .as_ref()
            .map_or(usize::MAX, |m| m.max_value_bytes);
        let raw = match v {
            TupleValue::Text(b) | TupleValue::Binary(b) => b.as_ref(),
            _ => &[][..],
        };
        // JSON never renders a value shorter than its text, so a value already over the limit is not
        // rendered at all; one that grows past it (escaping makes control characters six bytes) is undone.
        if raw.len() > limit {
            return write_truncated(out, raw);
        }
        let start = out.len();
        self.write_value_full(out, i, v);
        if out.len() - start > limit {
            out.truncate(start);
            write_truncated(out, raw);
        }
    }

    fn write_value_full(&self, out: &mut Vec<u8>, i: usize, v: &TupleValue) {
        match v {
            TupleValue::Text(b) => match std::str::from_utf8(b) {
                Ok(t) => write_text_json(out, &self.kinds[i], t),
                Err(_) => write_text_json(out, &self.kinds[i], &String::from_utf8_lossy(b)),
            },
            TupleValue::Binary(b) => write_json_str(out, &format!("\\x{}", hex(b))),
            TupleValue::Null | TupleValue::UnchangedToast => out.extend_from_slice(b"null"),
        }
    }

    fn value_json(&self, i: usize, v: &TupleValue) -> Value {
        match v {
            TupleValue::Null => Value::Null,
            TupleValue::Text(b) => text_to_json(&self.kinds[i], &String::from_utf8_lossy(b)),
            // Binary format is never requested; keep the bytes visible rather than guess.
            TupleValue::Binary(b) => Value::String(format!("\\x{}", hex(b))),
            TupleValue::UnchangedToast => Value::Null,
        }
    }

    /// For a json/jsonb column, the sides that are SQL NULL: there `null` is also a JSON value, so a SQL
    /// NULL is named (`"sql_null": ["before"]`) to keep the two apart.
    fn sql_nulls(
        &self,
        i: usize,
        before: Option<&TupleValue>,
        after: Option<&TupleValue>,
    ) -> &'static [&'static str] {
        if !matches!(self.kinds.get(i), Some(PgKind::Json)) {
            return &[];
        }
        let null = |v: Option<&TupleValue>| matches!(v, Some(TupleValue::Null));
        match (null(before), null(after)) {
            (true, true) => &["before", "after"],
            (true, false) => &["before"],
            (false, true) => &["after"],
            (false, false) => &[],
        }
    }

    /// Build the item draft for one change of a mapped table; `None` when the change is not worth an item
    /// (an update that touched only ignored columns, or nothing at all).
    pub fn draft(&self, change: RowChange<'_>) -> Result<Option<ItemDraft>, String> {
        let Some(m) = &self.mapping else {
            return Ok(None);
        };
        let n = self.relation.columns.len();
        let check = |t: &Tuple, what: &str| {
            if t.len() != n {
                Err(format!(
                    "{} tuple of {} has {} columns, its Relation message {}",
                    what,
                    m.qualified,
                    t.len(),
                    n
                ))
            } else {
                Ok(())
            }
        };
        let name = |i: usize| self.relation.columns[i].name.clone();
        // The diff is written as JSON text in column order: {"col": {"before": .., "after": ..}, ..}.
        let mut diff = DiffWriter::with_capacity(self.diff_size_hint(&change));
        let mut changed = Vec::new();
        // The row as of the change: values to snapshot (id, display, org, project).
        let mut snapshot: Vec<Option<&TupleValue>> = vec![None; n];

        // Where the resource was before an update that moved it to another organization or project.
        let mut previous_scope = None;
        let kind = match change {
            RowChange::Insert(_) => ChangeKind::Insert,
            RowChange::Update { .. } => ChangeKind::Update,
            RowChange::Delete(..) => ChangeKind::Delete,
        };
        // The redacted columns' values in this change (either row): an ordinary column holding one of them
        // is a secret copied (`UPDATE … SET secret_new = secret`, the first step of moving a secret to a
        // new column), and is redacted too. Protects values, not only names, for as long as the source
        // column is in the row.
        let rows: [Option<&Vec<TupleValue>>; 2] = if !m.redacted.contains(&true) {
            [None, None]
        } else {
            match change {
                RowChange::Insert(t) | RowChange::Delete(t, _) => [Some(t), None],
                RowChange::Update { old, new } => [Some(new), old.as_ref().map(|(_, t)| &**t)],
            }
        };
        let secrets = SecretCopies::of(rows.into_iter().flatten().flat_map(|t| {
            t.iter()
                .zip(&m.redacted)
                .filter(|(_, r)| **r)
                .filter_map(|(v, _)| match v {
                    TupleValue::Text(b) | TupleValue::Binary(b) => Some(&b[..]),
                    _ => None,
                })
        }));
        // A large secret the change does not carry (TOASTed and unchanged, with no old row: the table not at
        // REPLICA IDENTITY FULL) cannot be compared: a large value beside it could be its copy, and is hidden.
        let secret_unknown = match change {
            RowChange::Update { old: None, new }
            | RowChange::Update {
                old: Some((OldKind::Key, _)),
                new,
            } => new
                .iter()
                .zip(&m.redacted)
                .any(|(v, r)| *r && matches!(v, TupleValue::UnchangedToast)),
            _ => false,
        };
        let copied = |v: Option<&TupleValue>| match v {
            Some(TupleValue::Text(b) | TupleValue::Binary(b)) => {
                secrets.within(b) || (secret_unknown && b.len() >= TOASTED)
            }
            _ => false,
        };
        let mut deleted_by_changed = false;
        let mut session_changed = false;
        let mut updated_by_changed = false;
        let action: String = match change {
            RowChange::Insert(new) => {
                check(new, "new")?;
                for i in 0..n {
                    snapshot[i] = Some(&new[i]);
                    if m.ignored[i] {
                        continue;
                    }
                    let col = &self.relation.columns[i].name;
                    if m.redacted[i] || (!m.identifies(i) && copied(Some(&new[i]))) {
                        diff.redacted(col);
                    } else {
                        diff.side(col, Side::OnlyAfter);
                        self.write_value(&mut diff.out, i, &new[i]);
                        diff.close(self.sql_nulls(i, None, Some(&new[i])));
                    }
                    changed.push(name(i));
                }
                action::CREATED.into()
            }
            RowChange::Delete(old, kind) => {
                check(old, "old")?;
                for i in 0..n {
                    // Without REPLICA IDENTITY FULL only the key columns are sent (the others come as
                    // NULL): never present what Postgres did not send as a value.
                    let sent = kind == OldKind::Full || self.relation.columns[i].is_key();
                    snapshot[i] = sent.then_some(&old[i]);
                    if m.ignored[i] {
                        continue;
                    }
                    let col = &self.relation.columns[i].name;
                    // Not sent is said first: a redacted column Postgres did not send holds no value to hide.
                    if !sent {
                        diff.not_sent(col);
                    } else if m.redacted[i] || (!m.identifies(i) && copied(Some(&old[i]))) {
                        diff.redacted(col);
                    } else {
                        diff.side(col, Side::OnlyBefore);
                        self.write_value(&mut diff.out, i, &old[i]);
                        diff.close(self.sql_nulls(i, Some(&old[i]), None));
                    }
                    changed.push(name(i));
                }
                action::DELETED.into()
            }
            RowChange::Update { old, new } => {
                check(new, "new")?;
                let (full_old, key_old) = match old {
                    Some((OldKind::Full, t)) => {
                        check(t, "old")?;
                        (Some(t), None)
                    }
                    Some((OldKind::Key, t)) => {
                        check(t, "old key")?;
                        (None, Some(t))
                    }
                    None => (None, None),
                };
                // Whether this update wrote the row's deleted_by (ignored or not: see OwnWrite). Without the
                // old row, a value sent is taken as written.
                let written = |col: Option<usize>| {
                    col.is_some_and(|i| {
                        !matches!(new[i], TupleValue::UnchangedToast)
                            && full_old.is_none_or(|o| o[i] != new[i])
                    })
                };
                deleted_by_changed = written(m.deleted_by);
                session_changed = written(m.session);
                // Strictly changed: without the old row nothing tells a value written from one left.
                updated_by_changed = full_old.is_some() && written(m.updated_by);
                let mut changed_idx = Vec::new();
                for i in 0..n {
                    // Without the old row, Postgres still sends the old key when a key column changed: its
                    // key columns' before-values are known (an id changed is then told, old and new).
                    let before = full_old.map(|t| &t[i]).or_else(|| {
                        key_old
                            .filter(|_| self.relation.columns[i].is_key())
                            .map(|t| &t[i])
                    });
                    // An unchanged TOASTed value is not sent; under REPLICA IDENTITY FULL the old row has it.
                    let after = match (&new[i], before) {
                        (TupleValue::UnchangedToast, Some(b)) => b,
                        (v, _) => v,
                    };
                    snapshot[i] = match after {
                        TupleValue::UnchangedToast => None,
                        v => Some(v),
                    };
                    if m.ignored[i] || matches!(new[i], TupleValue::UnchangedToast) {
                        continue;
                    }
                    let is_changed = match before {
                        Some(b) => b != after,
                        // Without the old row the before-value is unknown: report the value as set.
                        None => true,
                    };
                    if !is_changed {
                        continue;
                    }
                    changed_idx.push(i);
                    let col = &self.relation.columns[i].name;
                    if m.redacted[i]
                        || (!m.identifies(i) && (copied(Some(after)) || copied(before)))
                    {
                        diff.redacted(col);
                    } else {
                        if let Some(b) = before {
                            diff.side(col, Side::Before);
                            self.write_value(&mut diff.out, i, b);
                            diff.side(col, Side::AfterBefore);
                        } else {
                            diff.side(col, Side::OnlyAfter);
                        }
                        self.write_value(&mut diff.out, i, after);
                        diff.close(self.sql_nulls(i, before, Some(after)));
                    }
                    changed.push(name(i));
                }
                if changed_idx.is_empty() {
                    return Ok(None);
                }
                let scope_changed = [m.organization, m.project]
                    .into_iter()
                    .flatten()
                    .any(|i| changed_idx.contains(&i));
                if let (true, Some(old)) = (scope_changed, full_old) {
                    let text_of = |t: &[TupleValue], idx: Option<usize>| match idx.map(|i| &t[i]) {
                        Some(TupleValue::Text(b)) => bounded_snapshot(
                            String::from_utf8_lossy(b).into_owned(),
                            m.max_value_bytes,
                        ),
                        _ => String::new(),
                    };
                    // A scope is what is stored: NULL and '' are one scope, and a move between them is
                    // no move (one item, not two in the same scope: QA41 L1).
                    let moved = [m.organization, m.project]
                        .into_iter()
                        .flatten()
                        .filter(|i| changed_idx.contains(i))
                        .any(|i| text_of(old, Some(i)) != text_of(new, Some(i)));
                    if moved {
                        let old_id: Vec<String> =
                            m.id.iter().map(|&i| text_of(old, Some(i))).collect();
                        previous_scope = Some(PreviousScope {
                            organization_id: text_of(old, m.organization),
                            project_id: text_of(old, m.project),
                            resource_id: join_resource_id(old_id.iter().map(String::as_str)),
                        });
                    }
                } else if let (true, Some(old)) = (scope_changed, key_old) {
                    // Without the old row (no REPLICA IDENTITY FULL, e.g. a migration set it back), Postgres
                    // sends the old key when a key column changed: where the organization (or project) is
                    // part of the key, the scope the resource left is known, and it is told.
                    let is_key = |i: usize| self.relation.columns[i].is_key();
                    let text_of = |t: &[TupleValue], i: usize| match &t[i] {
                        TupleValue::Text(b) => bounded_snapshot(
                            String::from_utf8_lossy(b).into_owned(),
                            m.max_value_bytes,
                        ),
                        _ => String::new(),
                    };
                    let left = |idx: Option<usize>| {
                        idx.filter(|&i| is_key(i))
                            .map(|i| (text_of(old, i), text_of(new, i)))
                    };
                    let org = left(m.organization);
                    let project = left(m.project);
                    if org.iter().chain(project.iter()).any(|(a, b)| a != b) {
                        let id_from = |i: usize| {
                            if is_key(i) {
                                text_of(old, i)
                            } else {
                                text_of(new, i)
                            }
                        };
                        let old_id: Vec<String> = m.id.iter().map(|&i| id_from(i)).collect();
                        previous_scope = Some(PreviousScope {
                            organization_id: org.map_or_else(
                                || m.organization.map_or(String::new(), |i| text_of(new, i)),
                                |(a, _)| a,
                            ),
                            project_id: project.map_or(String::new(), |(a, _)| a),
                            resource_id: join_resource_id(old_id.iter().map(String::as_str)),
                        });
                    }
                }
                // A move is a move whatever else the update did (a derived action or soft delete with
                // it shows in the diff): filtering by MOVED finds every resource that changed scope.
                match previous_scope {
                    Some(_) => action::MOVED.into(),
                    None => self.update_action(m, &changed_idx, full_old, new),
                }
            }
        };

        let text = |idx: Option<usize>| -> String {
            match idx.and_then(|i| snapshot[i]) {
                Some(TupleValue::Text(b)) => {
                    bounded_snapshot(String::from_utf8_lossy(b).into_owned(), m.max_value_bytes)
                }
                _ => String::new(),
            }
        };
        // A value shown on its own (the display name, in summaries and lists) that is a secret's copy is
        // not shown: the diff hides it, so must every other place.
        let shown = |idx: Option<usize>| -> String {
            if copied(idx.and_then(|i| snapshot[i])) {
                return REDACTED_DISPLAY.to_owned();
            }
            let t = text(idx);
            // A json/jsonb display column (or a domain over one) holding a JSON string shows the string,
            // not its quotes.
            let json = idx.is_some_and(|i| matches!(self.kinds.get(i), Some(PgKind::Json)));
            match json.then(|| serde_json::from_str::<serde_json::Value>(&t)) {
                Some(Ok(serde_json::Value::String(s))) => s,
                _ => t,
            }
        };
        let id_parts: Vec<String> = m.id.iter().map(|&i| text(Some(i))).collect();
        // A delete with its key alone whose id lies outside that key (the table's identity changed after
        // the start checked it) is named by the key Postgres did send, and said to be so: never an empty
        // id that every such delete would share (QA41 M1).
        let resource_id =
            if matches!(kind, ChangeKind::Delete) && m.id.iter().any(|&i| snapshot[i].is_none()) {
                let key: Vec<String> = (0..n)
                    .filter(|&i| snapshot[i].is_some() && self.relation.columns[i].is_key())
                    .map(|i| {
                        let value = if m.redacted[i] || copied(snapshot[i]) {
                            REDACTED_DISPLAY.to_owned()
                        } else {
                            text(Some(i))
                        };
                        format!("{}={value}", self.relation.columns[i].name)
                    })
                    .collect();
                format!(
                    "(id not sent: deleted without REPLICA IDENTITY FULL; key {})",
                    key.join(", ")
                )
            } else {
                join_resource_id(id_parts.iter().map(String::as_str))
            };
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        let actor_col = match kind {
            ChangeKind::Insert => m.created_by,
            ChangeKind::Update => m.updated_by,
            ChangeKind::Delete => m.deleted_by,
        };
        let principal_id = nonempty(text(actor_col)).filter(|_| {
            !(matches!(kind, ChangeKind::Update)
                && m.updated_by_changed_only
                && !updated_by_changed)
        });
        // Whether the row is soft-deleted as the change leaves it (a DELETE: as it finds it): its soft-delete
        // column set, or a flag a derived action names DELETED when set to its `to` (`is_deleted = true`).
        // Asked only of a table with a deleted_by column (a closure: derived rules read values as JSON).
        let soft_deleted = || {
            m.soft_delete
                .is_some_and(|i| matches!(snapshot[i], Some(v) if *v != TupleValue::Null))
                || m.derived.iter().any(|(action, rule)| match rule {
                    DerivedRule::Transition {
                        column,
                        to: Some(to),
                        ..
                    } if action == action::DELETED => snapshot[*column].is_some_and(|v| {
                        *v != TupleValue::Null
                            && to.matches(&self.kinds[*column], &self.value_json(*column, v))
                    }),
                    _ => false,
                })
        };
        let deleted_by_write = match (kind, m.deleted_by) {
            (_, None) => OwnWrite::Unused,
            (ChangeKind::Delete, Some(_)) if principal_id.is_some() && !soft_deleted() => {
                OwnWrite::Unproven
            }
            (ChangeKind::Delete, Some(_)) => OwnWrite::Unused,
            // Written while soft-deleted needs no record: a DELETE then finds the row soft-deleted.
            (ChangeKind::Insert, Some(i))
                if !soft_deleted() && nonempty(text(Some(i))).is_some() =>
            {
                OwnWrite::Written
            }
            (ChangeKind::Update, Some(i))
                if deleted_by_changed && !soft_deleted() && nonempty(text(Some(i))).is_some() =>
            {
                OwnWrite::Written
            }
            _ => OwnWrite::Unused,
        };
        let session_id = nonempty(text(m.session));
        let session_write = match (kind, &session_id) {
            (_, None) => OwnWrite::Unused,
            (ChangeKind::Delete, Some(_)) => OwnWrite::Unproven,
            (ChangeKind::Insert, Some(_)) => OwnWrite::Written,
            (ChangeKind::Update, Some(_)) if session_changed => OwnWrite::Written,
            (ChangeKind::Update, Some(_)) => OwnWrite::Unused,
        };
        let actor_refs = ActorRefs {
            principal_type: principal_id.as_ref().map(|_| m.actor_type),
            principal_id,
            session_id,
            deleted_by_write,
            session_write,
        };
        Ok(Some(ItemDraft {
            action,
            organization_id: text(m.organization),
            project_id: text(m.project),
            resource_type: m.resource_type.clone(),
            resource_id,
            resource_display: shown(m.display),
            changed_fields: changed,
            diff: diff.finish(),
            table_name: m.qualified.clone(),
            actor_refs,
            platform_wide: false,
            previous_scope,
        }))
    }

    fn update_action(
        &self,
        m: &BoundMapping,
        changed: &[usize],
        old: Option<&Tuple>,
        new: &Tuple,
    ) -> String {
        let after_of = |i: usize| match (&new[i], old) {
            (TupleValue::UnchangedToast, Some(o)) => &o[i],
            (v, _) => v,
        };
        if let Some(sd) = m.soft_delete {
            if changed.contains(&sd) {
                let before_null = old.map(|o| o[sd] == TupleValue::Null).unwrap_or(true);
                let after_null = *after_of(sd) == TupleValue::Null;
                if before_null && !after_null {
                    return action::DELETED.into();
                }
                if !before_null && after_null {
                    return action::RESTORED.into();
                }
            }
        }
        for (action, rule) in &m.derived {
            let hit = match rule {
                DerivedRule::AnyChanged(cols) => cols.iter().any(|c| changed.contains(c)),
                DerivedRule::Transition { column, from, to } => {
                    changed.contains(column) && {
                        let before = old.map(|o| self.value_json(*column, &o[*column]));
                        let after = self.value_json(*column, after_of(*column));
                        let kind = &self.kinds[*column];
                        let from_ok = match (from, &before) {
                            (None, _) => true,
                            (Some(f), Some(b)) => f.matches(kind, b),
                            (Some(_), None) => false,
                        };
                        let to_ok = to.as_ref().is_none_or(|t| t.matches(kind, &after));
                        from_ok && to_ok
                    }
                }
            };
            if hit {
                return action.clone();
            }
        }
        action::UPDATED.into()
    }
}

/// Where a value goes in a diff entry.
enum Side {
    OnlyAfter,
    OnlyBefore,
    /// `before`, to be followed by `AfterBefore`.
    Before,
    AfterBefore,
}

/// Writes a diff object as JSON text, one column entry at a time.
/// `{"truncated":true,"bytes":N,"sha256":"..."}`: what stands in for a value over `capture.max_value_bytes`.
/// Size and hash are of the value's text as Postgres sent it, so it can be matched against the source.
fn write_truncated(out: &mut Vec<u8>, raw: &[u8]) {
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    out.extend_from_slice(
        format!(
            r#"{{"truncated":true,"bytes":{},"sha256":"{hash}"}}"#,
            raw.len()
        )
        .as_bytes(),
    );
}

struct DiffWriter {
    out: Vec<u8>,
}

impl DiffWriter {
    fn with_capacity(n: usize) -> Self {
        DiffWriter {
            out: Vec::with_capacity(n),
        }
    }

    fn key(&mut self, col: &str) {
        self.out.push(if self.out.is_empty() { b'{' } else { b',' });
        write_json_str(&mut self.out, col);
        self.out.push(b':');
    }

    /// Start a column's entry or its second side; the value follows in `out`, then `close`.
    fn side(&mut self, col: &str, side: Side) {
        match side {
            Side::OnlyAfter => {
                self.key(col);
                self.out.extend_from_slice(br#"{"after":"#);
            }
            Side::OnlyBefore | Side::Before => {
                self.key(col);
                self.out.extend_from_slice(br#"{"before":"#);
            }
            Side::AfterBefore => self.out.extend_from_slice(br#","after":"#),
        }
    }

    /// End a column's entry; `sql_null` lists the sides that are SQL NULL where `null` alone would be
    /// taken for the JSON value null (json/jsonb columns).
    fn close(&mut self, sql_null: &[&str]) {
        if !sql_null.is_empty() {
            self.out.extend_from_slice(br#","sql_null":["#);
            for (k, side) in sql_null.iter().enumerate() {
                if k > 0 {
                    self.out.push(b',');
                }
                write_json_str(&mut self.out, side);
            }
            self.out.push(b']');
        }
        self.out.push(b'}');
    }

    /// A redacted column: only that it changed.
    fn redacted(&mut self, col: &str) {
        self.key(col);
        self.out.extend_from_slice(br#"{"redacted":true}"#);
    }

    /// A value the WAL did not carry (a deleted row's non-key column without REPLICA IDENTITY FULL).
    fn not_sent(&mut self, col: &str) {
        self.key(col);
        self.out.extend_from_slice(br#"{"not_sent":true}"#);
    }

    fn finish(mut self) -> String {
        if self.out.is_empty() {
            return "{}".into();
        }
        self.out.push(b'}');
        // Every piece written is UTF-8 (str slices and serde_json output).
        String::from_utf8(self.out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(toml_value: &str) -> RuleValue {
        let v: toml::Table = toml::from_str(&format!("v = {toml_value}")).expect("toml");
        RuleValue::from_toml(&v["v"])
    }

    /// A derived action's number matches a column value that is the same number, whatever its spelling.
    #[test]
    fn rule_numbers_match_equal_numbers_exactly() {
        let numeric = |s: &str| json!(s);
        let cases: &[(&str, PgKind, Value, bool)] = &[
            ("10", PgKind::Numeric, numeric("10.00"), true),
            ("10", PgKind::Numeric, numeric("10.01"), false),
            ("0", PgKind::Numeric, numeric("0"), true),
            ("0", PgKind::Numeric, numeric("-0.000"), true),
            ("-0.0", PgKind::Numeric, numeric("0"), true),
            (
                "-1.5",
                PgKind::Numeric,
                numeric("-1.50000000000000000000"),
                true,
            ),
            (
                "1.5",
                PgKind::Numeric,
                numeric("-1.50000000000000000000"),
                false,
            ),
            ("0.3", PgKind::Numeric, numeric("0.30"), true),
            ("100", PgKind::Numeric, numeric("0100"), true),
            ("1000", PgKind::Numeric, numeric("1e3"), true),
            // 40 digits: f64 would take these two for the same number.
            (
                "1234567890123456789",
                PgKind::Numeric,
                numeric("1234567890123456789.000000000000000000001"),
                false,
            ),
            ("0", PgKind::Numeric, numeric("NaN"), false),
            ("nan", PgKind::Numeric, numeric("NaN"), false),
            ("inf", PgKind::Numeric, numeric("Infinity"), false),
            // Integers and floats are JSON numbers.
            ("0", PgKind::Int, json!(0), true),
            ("0.0", PgKind::Int, json!(0), true),
            ("7", PgKind::Int, json!(8), false),
            (
                "9007199254740993",
                PgKind::Int,
                json!(9007199254740992_i64),
                false,
            ),
            ("1.5", PgKind::Float, json!(1.5), true),
            (
                "0.1",
                PgKind::Float,
                serde_json::from_str("0.1").unwrap(),
                true,
            ),
            (
                "1e300",
                PgKind::Float,
                serde_json::from_str("1e+300").unwrap(),
                true,
            ),
            ("nan", PgKind::Float, json!("NaN"), false),
            ("inf", PgKind::Float, json!("Infinity"), false),
            // A number is no text, and a numeric-looking text column stays text.
            ("0", PgKind::Text, json!("0"), false),
            // A string compares with the text as written, as before.
            ("\"10.00\"", PgKind::Numeric, numeric("10.00"), true),
            ("\"10\"", PgKind::Numeric, numeric("10.00"), false),
            ("\"paid\"", PgKind::Text, json!("paid"), true),
            ("true", PgKind::Bool, json!(true), true),
            ("true", PgKind::Text, json!("true"), false),
            // A nan rule is not a NULL.
            ("nan", PgKind::Float, Value::Null, false),
        ];
        for (r, kind, value, want) in cases {
            assert_eq!(
                rule(r).matches(kind, value),
                *want,
                "rule {r} against {kind:?} value {value}"
            );
        }
    }

    #[test]
    fn decimals_are_read_exactly_or_not_at_all() {
        for no in [
            "",
            "-",
            "+",
            ".",
            "e5",
            "1e",
            "1e+",
            "NaN",
            "Infinity",
            "-Infinity",
            "$1.00",
            " 1",
            "1 ",
            "1.2.3",
            "0x10",
            "1e99999999999999999999",
        ] {
            assert_eq!(Decimal::parse(no), None, "{no:?}");
        }
        let d = |s: &str| Decimal::parse(s).unwrap_or_else(|| panic!("{s:?}"));
        assert_eq!(d("0.001"), d("1e-3"));
        assert_eq!(d("+12.50"), d("12.5"));
        assert_eq!(d(".5"), d("0.5"));
        assert_ne!(d("-12.5"), d("12.5"));
        assert_ne!(d("10"), d("1"));
    }
}
