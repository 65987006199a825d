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
        let i = match found.iter().position(|f| std::ptr::eq(f.mapping, m)) {
            Some(i) => i,
            None => {
                found.push(Found {
                    mapping: m,
                    relations: Default::default(),
                    columns: Vec::new(),
                });
                found.len() - 1
            }
        };
        let f = &mut found[i];
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
    for r in relations(next) {
        if all.len() >= MAX_LIST {
            break;
        }
        all.insert(r);
    }
    if let Ok(serde_json::Value::Object(mut diff)) = serde_json::from_str(&held.diff) {
        diff.insert(
            "relations".into(),
            all.into_iter().collect::<Vec<_>>().into(),
        );
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
}
