//! DDL that changes audited rows' values without a row change: `ALTER TABLE … ALTER COLUMN … TYPE …
//! USING …` rewrites every row, `ALTER TYPE … RENAME VALUE` makes every stored label read as another, and
//! neither sends one row through the stream. The optional event trigger (`sql/postgres/waltrail_ddl.sql`)
//! writes a transactional message (`<prefix>:ddl`) in the DDL's own transaction; each mapped table it
//! names becomes an item of its own, at the DDL's place in the stream (QA41 H1).
//!
//! The message is not sealed: anyone who may call `pg_logical_emit_message` can write one. The item says
//! that a DDL event message reported it; a forged one adds an alarm to the trail, never hides a change.

use serde::Deserialize;

use crate::audit::mapping::{ItemDraft, TableMapping};
use crate::vocab::action;

/// Messages beyond this are not read: the trigger writes a few hundred bytes per table.
const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Names and labels are kept to this many bytes each in the item.
const MAX_NAME_BYTES: usize = 256;

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
    /// Its labels after the command, for an enum.
    #[serde(default)]
    labels: Option<Vec<String>>,
    tables: Vec<DdlTable>,
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
    /// The columns whose type was altered (`ALTER TYPE`); none for a rewrite.
    #[serde(default)]
    columns: Option<Vec<String>>,
}

/// The items a `<prefix>:ddl` message stands for: one per mapped table it names (found by `mapped`, from
/// the relation's OID, its name, or its partition tree's root). `Err` says why a message is unreadable;
/// the caller records that too, since a DDL it cannot read may have changed audited values.
pub fn drafts<'a>(
    content: &[u8],
    mapped: impl Fn(u32, &str, &str) -> Option<&'a TableMapping>,
) -> Result<Vec<ItemDraft>, String> {
    if content.len() > MAX_MESSAGE_BYTES {
        return Err(format!("{} bytes, over {MAX_MESSAGE_BYTES}", content.len()));
    }
    let msg: DdlMessage = serde_json::from_slice(content).map_err(|e| e.to_string())?;
    if msg.v != 1 {
        return Err(format!("unknown version {}", msg.v));
    }
    let cut = |s: &str| crate::audit::value::bounded_str(s, MAX_NAME_BYTES);
    let mut out: Vec<ItemDraft> = Vec::new();
    for t in &msg.tables {
        let m = mapped(t.oid, &t.schema, &t.name).or_else(|| {
            match (t.root_schema.as_deref(), t.root_name.as_deref()) {
                (Some(s), Some(n)) => mapped(0, s, n),
                _ => None,
            }
        });
        let Some(m) = m else { continue };
        let table = m.qualified();
        let relation = format!("{}.{}", cut(&t.schema), cut(&t.name));
        let columns: Vec<String> = t.columns.iter().flatten().map(|c| cut(c)).collect();
        let mut diff = serde_json::Map::new();
        diff.insert("command".into(), cut(&msg.command).into());
        diff.insert(
            "effect".into(),
            match msg.event.as_str() {
                "table_rewrite" => {
                    "every row rewritten: its values may have changed without a row change"
                }
                _ => "stored values may read differently from here on, without a row change",
            }
            .into(),
        );
        if relation != table {
            diff.insert("relation".into(), relation.into());
        }
        if let Some(ty) = &msg.r#type {
            diff.insert("type".into(), cut(ty).into());
        }
        // A type's labels are the values a column of it may hold: not said where a redacted column uses it.
        let redacted = columns
            .iter()
            .any(|c| m.config.redact_columns.iter().any(|r| r == c));
        match &msg.labels {
            Some(_) if redacted => {
                diff.insert("labels".into(), serde_json::json!({"redacted": true}));
            }
            Some(labels) => {
                let labels: Vec<String> = labels.iter().take(1000).map(|l| cut(l)).collect();
                diff.insert("labels".into(), labels.into());
            }
            None => {}
        }
        diff.insert(
            "reported_by".into(),
            "a DDL event message (not sealed)".into(),
        );
        // One item per table and statement: partitions rewritten one by one are named in it.
        if let Some(d) = out.iter_mut().find(|d| d.table_name == table) {
            merge_relation(d, &t.schema, &t.name, &columns);
            continue;
        }
        out.push(ItemDraft {
            action: action::ALTERED.into(),
            organization_id: String::new(),
            project_id: String::new(),
            resource_type: m.config.resource_type.clone(),
            resource_id: String::new(),
            resource_display: table.clone(),
            changed_fields: columns,
            diff: serde_json::Value::Object(diff).to_string(),
            table_name: table,
            actor_refs: Default::default(),
            // Every organization's rows at once, like a TRUNCATE.
            platform_wide: m.config.organization_column.is_some(),
            previous_scope: None,
        });
    }
    Ok(out)
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

/// Another relation of the same mapped table in one message (a partition): its name is added to the
/// item's `relations`, its columns to the changed fields.
fn merge_relation(d: &mut ItemDraft, schema: &str, name: &str, columns: &[String]) {
    let Ok(serde_json::Value::Object(mut diff)) = serde_json::from_str(&d.diff) else {
        return;
    };
    let name = format!(
        "{}.{}",
        crate::audit::value::bounded_str(schema, MAX_NAME_BYTES),
        crate::audit::value::bounded_str(name, MAX_NAME_BYTES)
    );
    let list = diff
        .entry("relations")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let serde_json::Value::Array(a) = list {
        if a.len() < 1000 {
            a.push(name.into());
        }
    }
    for c in columns {
        if !d.changed_fields.contains(c) {
            d.changed_fields.push(c.clone());
        }
    }
    d.diff = serde_json::Value::Object(diff).to_string();
}

#[cfg(test)]
mod tests {
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
        let d = drafts(msg, find).expect("read");
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
            "labels":["admin","owner"],"tables":[
            {"oid":7,"schema":"public","name":"m_1","root_schema":"public","root_name":"memberships","columns":["role"]},
            {"oid":8,"schema":"public","name":"m_2","root_schema":"public","root_name":"memberships","columns":["role","roles"]}]}"#;
        let d = drafts(msg, find).expect("read");
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].changed_fields, vec!["role", "roles"]);
        let diff: serde_json::Value = serde_json::from_str(&d[0].diff).expect("json");
        assert_eq!(diff["relations"], serde_json::json!(["public.m_2"]));
        assert_eq!(diff["labels"], serde_json::json!(["admin", "owner"]));
    }

    #[test]
    fn labels_of_a_type_a_redacted_column_uses_are_not_said() {
        let mut m = mapping();
        m.config.redact_columns = vec!["role".into()];
        let find = |_oid: u32, _s: &str, _n: &str| Some(&m);
        let msg = br#"{"v":1,"event":"ddl_command_end","command":"ALTER TYPE","type":"public.role_t",
            "labels":["admin","owner"],"tables":[{"oid":7,"schema":"public","name":"memberships","columns":["role"]}]}"#;
        let d = drafts(msg, find).expect("read");
        assert!(!d[0].diff.contains("admin"), "{}", d[0].diff);
    }

    #[test]
    fn an_unreadable_message_is_an_error_not_nothing() {
        let m = mapping();
        let find = |_oid: u32, _s: &str, _n: &str| Some(&m);
        assert!(drafts(b"not json", find).is_err());
        assert!(drafts(br#"{"v":2,"event":"x","command":"y","tables":[]}"#, find).is_err());
        assert!(drafts(&vec![b' '; MAX_MESSAGE_BYTES + 1], find).is_err());
    }
}
