//! Unit tests of the audit core, fed with hand-built pgoutput values: no server, no I/O.
//!
//! `mapping` checks how one row change becomes (at most) one item; `assembler` checks how a stream of
//! messages becomes items, transaction by transaction. The builders they share are here.

mod assembler;
mod mapping;
mod platform;
mod redaction;

use bytes::Bytes;

use crate::capture::catalog::TableInfo;
use crate::capture::pgoutput::{Relation, RelationColumn, Tuple, TupleValue};
use crate::config::Config;

/// Built-in type OIDs used by the fixtures.
pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const TIMESTAMPTZ: u32 = 1184;

/// A NULL column value.
pub const NULL: TupleValue = TupleValue::Null;
/// A TOASTed value that did not change, which pgoutput does not send.
pub const TOAST: TupleValue = TupleValue::UnchangedToast;

/// A text-format column value, as pgoutput sends every value.
pub fn t(text: &str) -> TupleValue {
    TupleValue::Text(Bytes::copy_from_slice(text.as_bytes()))
}

/// A Relation message for `schema.table` (or `table` in `public`) with the given columns and types.
pub fn relation(id: u32, table: &str, columns: &[(&str, u32)]) -> Relation {
    let (namespace, name) = crate::config::split_table(table);
    Relation {
        id,
        namespace: namespace.into(),
        name: name.into(),
        replica_identity: b'f',
        partition: None,
        dropped: Vec::new(),
        unplaced: false,
        columns: columns
            .iter()
            .map(|(name, type_oid)| RelationColumn {
                flags: 0,
                name: (*name).into(),
                type_oid: *type_oid,
                type_modifier: -1,
            })
            .collect(),
    }
}

/// A tuple of the given relation with every column as in `base`, except those named in `set`.
pub fn tuple(rel: &Relation, base: &[TupleValue], set: &[(&str, TupleValue)]) -> Tuple {
    assert_eq!(base.len(), rel.columns.len(), "base row of {}", rel.name);
    let mut row = base.to_vec();
    for (name, value) in set {
        let i = rel
            .columns
            .iter()
            .position(|c| c.name == *name)
            .unwrap_or_else(|| panic!("{} has no column {name}", rel.name));
        row[i] = value.clone();
    }
    row
}

/// A config with the given `[[tables]]` (and any other sections after them) that passes validation, as
/// `waltrail run` would have it.
pub fn config(rest: &str) -> Config {
    let text =
        format!("[postgres]\nurl = \"postgres://waltrail@db:5432/platform\"\n[clickhouse]\n{rest}");
    let cfg = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    cfg.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
    cfg
}

/// What the catalog says of a table (`from_catalog` pairs them with the configured tables by position).
pub fn info(exists: bool, primary_key: &[&str], columns: &[&str]) -> TableInfo {
    TableInfo {
        schema: String::new(),
        table: String::new(),
        exists,
        oid: 0,
        replica_identity: 'f',
        primary_key: primary_key.iter().map(|s| s.to_string()).collect(),
        columns: columns.iter().map(|s| s.to_string()).collect(),
        attnums: (1..=columns.len() as i16).collect(),
        generated: Vec::new(),
        partitioned: false,
        owned_by_us: true,
        partitions_not_full: Vec::new(),
        dropped_attnums: Vec::new(),
        column_types: Vec::new(),
        not_null: Vec::new(),
    }
}
