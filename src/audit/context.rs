//! Session context: who acted, and how, joined inside the stream.
//!
//! Three sources, in this order of precedence (field by field, the first that knows wins):
//! 1. the transaction's logical-decoding message (`pg_logical_emit_message(true, '<prefix>', json)`), the most
//!    recent one before the change, or the first one of the transaction for changes made before it;
//! 2. actor columns on the changed row (`created_by`, `updated_by`, `deleted_by`, a session column);
//! 3. the platform's own tables (sessions, accounts, API keys, agents), kept in memory and updated in WAL
//!    order, so a change is joined with the rows as they were at its commit.
//!
//! What none of them knows stays unknown (`UNKNOWN`, `AUDIT_SOURCE_UNSPECIFIED`); the item is never dropped.
//! Names and emails are copied into the item at capture: deleting an account later changes no item.

use anyhow::anyhow;
use serde_json::Value;
use std::collections::HashMap;

use crate::audit::item::{Actor, PRINCIPAL_UNKNOWN, SOURCE_UNSPECIFIED};
use crate::audit::mapping::{ActorRefs, ItemDraft};
use crate::capture::pgoutput::{Relation, Tuple, TupleValue};
use crate::capture::replication::quote_ident;
use crate::config::{split_table, Config};

pub const PRINCIPAL_TYPES: [&str; 5] = ["ACCOUNT", "SERVICE_KEY", "AGENT", "SYSTEM", "UNKNOWN"];

/// Fields a context message may carry. Unknown fields are reported and ignored.
const MESSAGE_FIELDS: [&str; 14] = [
    "actor_id",
    "actor_type",
    "actor_display",
    "actor_email",
    "on_behalf_of",
    "on_behalf_of_display",
    "source",
    "auth_method",
    "key_id",
    "session_id",
    "request_id",
    "run_id",
    "client_ip",
    "user_agent",
];

/// A parsed context message: field name → value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextMessage(HashMap<&'static str, String>);

impl ContextMessage {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// Parse a payload; returns what could be used, and a warning when something could not.
    pub fn parse(content: &[u8]) -> (Option<ContextMessage>, Option<String>) {
        let value: Value = match serde_json::from_slice(content) {
            Ok(v) => v,
            Err(e) => {
                return (
                    None,
                    Some(format!("context message is not JSON ({e}); ignored")),
                )
            }
        };
        let Value::Object(obj) = value else {
            return (
                None,
                Some("context message is not a JSON object; ignored".into()),
            );
        };
        let mut out = HashMap::new();
        let mut unknown = Vec::new();
        for (k, v) in obj {
            let Some(field) = MESSAGE_FIELDS.iter().find(|f| **f == k) else {
                unknown.push(k);
                continue;
            };
            let text = match v {
                Value::String(s) => s,
                Value::Null => continue,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    unknown.push(format!("{k} (not a string: {})", kind_of(&other)));
                    continue;
                }
            };
            out.insert(*field, text);
        }
        let mut warning = None;
        if let Some(t) = out.get("actor_type").cloned() {
            let upper = t.to_ascii_uppercase();
            if PRINCIPAL_TYPES.contains(&upper.as_str()) {
                out.insert("actor_type", upper);
            } else {
                out.remove("actor_type");
                unknown.push(format!(
                    "actor_type {t:?} (expected one of {PRINCIPAL_TYPES:?})"
                ));
            }
        }
        if !unknown.is_empty() {
            warning = Some(format!(
                "context message has fields waltrail does not use: {}; the rest applies",
                unknown.join(", ")
            ));
        }
        (Some(ContextMessage(out)), warning)
    }
}

/// An item described by a message rather than by a row change.
pub struct AuditEvent {
    pub draft: ItemDraft,
    pub actor: ContextMessage,
}

/// The JSON waltrail writes for its own events (see `api::record_event`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EventPayload {
    pub action: String,
    pub resource_type: String,
    #[serde(default)]
    pub resource_id: String,
    #[serde(default)]
    pub resource_display: String,
    pub organization_id: String,
    #[serde(default)]
    pub project_id: String,
    /// Actor and "how" fields, as in a context message.
    #[serde(default)]
    pub actor: serde_json::Map<String, Value>,
    /// Free-form details, stored as the item's diff.
    #[serde(default)]
    pub data: Value,
}

impl AuditEvent {
    fn parse(content: &[u8]) -> anyhow::Result<AuditEvent> {
        let p: EventPayload = serde_json::from_slice(content)?;
        let actor_json = serde_json::to_vec(&Value::Object(p.actor.clone()))?;
        let (actor, _) = ContextMessage::parse(&actor_json);
        Ok(AuditEvent {
            draft: ItemDraft {
                action: p.action,
                organization_id: p.organization_id,
                project_id: p.project_id,
                resource_type: p.resource_type,
                resource_id: p.resource_id,
                resource_display: p.resource_display,
                changed_fields: Vec::new(),
                diff: p.data.to_string(),
                table_name: String::new(),
                actor_refs: ActorRefs::default(),
            },
            actor: actor.unwrap_or_default(),
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        _ => "a scalar",
    }
}

/// Context gathered inside one transaction.
#[derive(Debug, Default)]
pub struct TxnContext {
    pub message: Option<ContextMessage>,
    pub origin: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Accounts,
    Sessions,
    Keys,
    Agents,
}

// Column roles, per kind, in the order they are stored.
const ACCOUNT_EMAIL: usize = 0;
const ACCOUNT_DISPLAY: usize = 1;
const SESSION_ACCOUNT: usize = 0;
const SESSION_SOURCE: usize = 1;
const SESSION_AUTH: usize = 2;
const SESSION_KEY: usize = 3;
const SESSION_AGENT: usize = 4;
const SESSION_IP: usize = 5;
const SESSION_UA: usize = 6;
const NAME: usize = 0;
const OWNER: usize = 1;

/// One platform table kept in memory: id → configured columns as text.
#[derive(Debug)]
struct ContextTable {
    kind: Kind,
    schema: String,
    table: String,
    id_column: String,
    columns: Vec<Option<String>>,
    /// Relation id → positions of the id column and of each configured column.
    positions: HashMap<u32, (Option<usize>, Vec<Option<usize>>)>,
    rows: HashMap<String, Vec<Option<String>>>,
}

impl ContextTable {
    fn get(&self, id: &str, role: usize) -> Option<&str> {
        self.rows
            .get(id)
            .and_then(|r| r.get(role))
            .and_then(|v| v.as_deref())
            .filter(|s| !s.is_empty())
    }
}

/// Context kept across transactions.
#[derive(Debug, Default)]
pub struct ContextStore {
    prefix: String,
    system_origins: Vec<String>,
    tables: Vec<ContextTable>,
}

fn text(v: &TupleValue) -> Option<String> {
    match v {
        TupleValue::Text(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

impl ContextStore {
    pub fn new(cfg: &Config) -> Self {
        let a = &cfg.attribution;
        let mut tables = Vec::new();
        let mut add = |kind, table: &str, id: &str, cols: Vec<Option<String>>| {
            let (s, t) = split_table(table);
            tables.push(ContextTable {
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
        ContextStore {
            prefix: a.message_prefix.clone(),
            system_origins: a.system_origins.clone(),
            tables,
        }
    }

    /// Load the context tables as they are now; the stream keeps them current from here on.
    /// The simple-query protocol returns each value through its type's output function, the same text
    /// pgoutput sends, so loaded and streamed rows compare equal (a `::text` cast would not: inet gains a mask).
    pub async fn load(&mut self, client: &tokio_postgres::Client) -> anyhow::Result<()> {
        for t in &mut self.tables {
            let cols: Vec<String> = std::iter::once(&t.id_column)
                .chain(t.columns.iter().flatten())
                .map(|c| quote_ident(c))
                .collect();
            let sql = format!(
                "SELECT {} FROM {}.{}",
                cols.join(", "),
                quote_ident(&t.schema),
                quote_ident(&t.table)
            );
            let messages = client.simple_query(&sql).await.map_err(|e| {
                anyhow!(
                    "loading attribution table {}.{}: {} (check the [attribution] column names)",
                    t.schema,
                    t.table,
                    crate::capture::setup::pg_error_text(&e)
                )
            })?;
            t.rows.clear();
            for m in messages {
                let tokio_postgres::SimpleQueryMessage::Row(r) = m else {
                    continue;
                };
                let Some(id) = r.get(0) else {
                    continue;
                };
                let mut vals = Vec::with_capacity(t.columns.len());
                let mut i = 1;
                for c in &t.columns {
                    if c.is_some() {
                        vals.push(r.get(i).map(str::to_owned));
                        i += 1;
                    } else {
                        vals.push(None);
                    }
                }
                t.rows.insert(id.to_owned(), vals);
            }
            tracing::info!(table = %format!("{}.{}", t.schema, t.table), rows = t.rows.len(), "loaded attribution context");
        }
        Ok(())
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

    /// The prefix of audit events waltrail writes itself (`<prefix>:event`).
    pub fn event_prefix(&self) -> String {
        format!("{}:event", self.prefix)
    }

    /// An audit event message (`<prefix>:event`): an item of its own, not context for others.
    pub fn event(&self, prefix: &str, content: &[u8]) -> Option<AuditEvent> {
        if prefix.strip_prefix(self.prefix.as_str()) != Some(":event") {
            return None;
        }
        match AuditEvent::parse(content) {
            Ok(e) => Some(e),
            Err(e) => {
                tracing::warn!("audit event message ignored: {e}");
                None
            }
        }
    }

    /// A transactional message: becomes the transaction's current context if it has our prefix.
    pub fn on_message(&mut self, txn: &mut TxnContext, prefix: &str, content: &[u8]) -> bool {
        if prefix != self.prefix {
            return false;
        }
        let (msg, warning) = ContextMessage::parse(content);
        if let Some(w) = warning {
            tracing::warn!("{w}");
        }
        match msg {
            Some(m) => {
                txn.message = Some(m);
                true
            }
            None => false,
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

    fn table(&self, kind: Kind) -> Option<&ContextTable> {
        self.tables.iter().find(|t| t.kind == kind)
    }

    fn lookup(&self, kind: Kind, id: &str, role: usize) -> Option<String> {
        self.table(kind)
            .and_then(|t| t.get(id, role))
            .map(str::to_owned)
    }

    /// Resolve the actor of one item from the transaction's message, the row's actor columns and the
    /// context tables, in that order of precedence.
    pub fn resolve(&self, txn: &TxnContext, refs: &ActorRefs) -> Actor {
        let msg = txn.message.as_ref();
        let m = |k: &str| msg.and_then(|m| m.get(k)).map(str::to_owned);
        let mut a = Actor::default();

        // A message that names the actor speaks for the whole change: the row's session column may name
        // whoever touched the row before, so it is used only when the message names no actor.
        let session_id = m("session_id").or_else(|| {
            if m("actor_id").is_some() {
                None
            } else {
                refs.session_id.clone()
            }
        });
        let sess = |role: usize| {
            session_id
                .as_deref()
                .and_then(|s| self.lookup(Kind::Sessions, s, role))
        };
        let session_account = sess(SESSION_ACCOUNT);
        let session_agent = sess(SESSION_AGENT);
        let session_key = sess(SESSION_KEY);

        // Who: message, then the row, then the session (an agent acts for the session's account; a key
        // without an account is a service key).
        let (principal_id, principal_type) = if let Some(id) = m("actor_id") {
            let ty = m("actor_type").unwrap_or_else(|| "ACCOUNT".into());
            (Some(id), ty)
        } else if let Some(id) = &refs.principal_id {
            (
                Some(id.clone()),
                refs.principal_type
                    .clone()
                    .unwrap_or_else(|| "ACCOUNT".into()),
            )
        } else if let Some(agent) = &session_agent {
            (Some(agent.clone()), "AGENT".into())
        } else if let Some(acct) = &session_account {
            (Some(acct.clone()), "ACCOUNT".into())
        } else if let Some(key) = &session_key {
            (Some(key.clone()), "SERVICE_KEY".into())
        } else if let Some(t) = m("actor_type") {
            (None, t)
        } else if txn
            .origin
            .as_ref()
            .is_some_and(|o| self.system_origins.contains(o))
        {
            (None, "SYSTEM".into())
        } else {
            (None, PRINCIPAL_UNKNOWN.into())
        };
        a.principal_type = principal_type;
        if let Some(id) = &principal_id {
            a.principal_id = id.clone();
            match a.principal_type.as_str() {
                "ACCOUNT" => {
                    a.email = self
                        .lookup(Kind::Accounts, id, ACCOUNT_EMAIL)
                        .unwrap_or_default();
                    a.display_name = self
                        .lookup(Kind::Accounts, id, ACCOUNT_DISPLAY)
                        .unwrap_or_default();
                }
                "AGENT" => {
                    a.display_name = self.lookup(Kind::Agents, id, NAME).unwrap_or_default();
                    a.on_behalf_of_id = self.lookup(Kind::Agents, id, OWNER).unwrap_or_default();
                }
                "SERVICE_KEY" => {
                    a.display_name = self.lookup(Kind::Keys, id, NAME).unwrap_or_default();
                    a.on_behalf_of_id = self.lookup(Kind::Keys, id, OWNER).unwrap_or_default();
                    a.key_id = id.clone();
                }
                _ => {}
            }
        }
        // An agent in a session acts for the session's account.
        if a.principal_type == "AGENT" && session_agent.is_some() {
            if let Some(acct) = &session_account {
                a.on_behalf_of_id = acct.clone();
            }
        }
        if let Some(v) = m("actor_display") {
            a.display_name = v;
        }
        if let Some(v) = m("actor_email") {
            a.email = v;
        }
        if let Some(v) = m("on_behalf_of") {
            a.on_behalf_of_id = v;
        }
        if !a.on_behalf_of_id.is_empty() {
            a.on_behalf_of_display = m("on_behalf_of_display")
                .or_else(|| self.lookup(Kind::Accounts, &a.on_behalf_of_id, ACCOUNT_EMAIL))
                .or_else(|| self.lookup(Kind::Accounts, &a.on_behalf_of_id, ACCOUNT_DISPLAY))
                .unwrap_or_default();
        }

        // How.
        a.source = m("source")
            .or_else(|| sess(SESSION_SOURCE))
            .map(|s| normalize_source(&s))
            .unwrap_or_else(|| {
                if a.principal_type == "SYSTEM" {
                    "AUDIT_SOURCE_SYSTEM".into()
                } else {
                    SOURCE_UNSPECIFIED.into()
                }
            });
        a.key_id = m("key_id")
            .or_else(|| session_key.clone())
            .unwrap_or(std::mem::take(&mut a.key_id));
        a.auth_method = m("auth_method")
            .or_else(|| sess(SESSION_AUTH))
            .or_else(|| (!a.key_id.is_empty()).then(|| "API_KEY".into()))
            .unwrap_or_default();
        a.session_id = session_id.clone().unwrap_or_default();
        a.request_id = m("request_id").unwrap_or_default();
        a.run_id = m("run_id").unwrap_or_default();
        a.client_ip = m("client_ip")
            .or_else(|| sess(SESSION_IP))
            .unwrap_or_default();
        a.user_agent = m("user_agent")
            .or_else(|| sess(SESSION_UA))
            .unwrap_or_default();
        a
    }
}

/// `api`, `API`, `AUDIT_SOURCE_API` → `AUDIT_SOURCE_API`; anything else keeps its name in the same style.
pub fn normalize_source(s: &str) -> String {
    let upper: String = s
        .trim()
        .to_ascii_uppercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if upper.is_empty() {
        return SOURCE_UNSPECIFIED.into();
    }
    if upper.starts_with("AUDIT_SOURCE_") {
        upper
    } else {
        format!("AUDIT_SOURCE_{upper}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_parsing_is_lenient_and_says_why() {
        let (m, w) = ContextMessage::parse(
            br#"{"actor_id":"a1","actor_type":"agent","color":"red","run_id":7}"#,
        );
        let m = m.unwrap();
        assert_eq!(m.get("actor_id"), Some("a1"));
        assert_eq!(m.get("actor_type"), Some("AGENT"));
        assert_eq!(m.get("run_id"), Some("7"));
        assert!(w.unwrap().contains("color"));
        let (m, w) = ContextMessage::parse(b"{not json");
        assert!(m.is_none() && w.is_some());
        let (m, w) = ContextMessage::parse(br#"{"actor_type":"ROBOT","actor_id":"x"}"#);
        assert_eq!(m.unwrap().get("actor_type"), None);
        assert!(w.unwrap().contains("ROBOT"));
        let (m, _) = ContextMessage::parse(b"[1,2]");
        assert!(m.is_none());
    }

    fn store(toml_extra: &str) -> ContextStore {
        let text = format!(
            "[postgres]\nurl = \"host=x user=y\"\n[clickhouse]\n{toml_extra}\n[[tables]]\ntable = \"t\"\nresource_type = \"RESOURCE_TYPE_X\"\n"
        );
        let cfg = crate::config::Config::parse(&text).unwrap();
        ContextStore::new(&cfg)
    }

    #[test]
    fn fallbacks_and_system_origins() {
        let s = store("[attribution]\nsystem_origins = [\"sync_job\"]");
        let none = s.resolve(&TxnContext::default(), &ActorRefs::default());
        assert_eq!(
            (none.principal_type.as_str(), none.source.as_str()),
            ("UNKNOWN", "AUDIT_SOURCE_UNSPECIFIED")
        );
        let sys = s.resolve(
            &TxnContext {
                message: None,
                origin: Some("sync_job".into()),
            },
            &ActorRefs::default(),
        );
        assert_eq!(
            (sys.principal_type.as_str(), sys.source.as_str()),
            ("SYSTEM", "AUDIT_SOURCE_SYSTEM")
        );
        let other = s.resolve(
            &TxnContext {
                message: None,
                origin: Some("elsewhere".into()),
            },
            &ActorRefs::default(),
        );
        assert_eq!(other.principal_type, "UNKNOWN");
        // The row's actor column names the actor, with the type the table says.
        let row = s.resolve(
            &TxnContext::default(),
            &ActorRefs {
                principal_id: Some("svc-1".into()),
                principal_type: Some("SERVICE_KEY".into()),
                session_id: None,
            },
        );
        assert_eq!(
            (
                row.principal_id.as_str(),
                row.principal_type.as_str(),
                row.key_id.as_str()
            ),
            ("svc-1", "SERVICE_KEY", "svc-1")
        );
    }

    #[test]
    fn sources_normalize() {
        assert_eq!(normalize_source("api"), "AUDIT_SOURCE_API");
        assert_eq!(normalize_source("AUDIT_SOURCE_CLI"), "AUDIT_SOURCE_CLI");
        assert_eq!(normalize_source("web app"), "AUDIT_SOURCE_WEB_APP");
        assert_eq!(normalize_source(""), "AUDIT_SOURCE_UNSPECIFIED");
    }
}
