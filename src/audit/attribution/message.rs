//! The messages a transaction may carry: a context message (`<prefix>`: who acted and how, written by the
//! platform) and an audit event (`<prefix>:event`: an item of its own, written by waltrail for exports).

use serde_json::Value;
use std::collections::HashMap;

use crate::audit::mapping::{ActorRefs, ItemDraft};
use crate::vocab::{ContextStatus, PrincipalType};

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
    pub fn get(&self, k: &str) -> Option<&str> {
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
            match PrincipalType::parse(&t) {
                Ok(p) => {
                    out.insert("actor_type", p.as_str().to_owned());
                }
                Err(e) => {
                    out.remove("actor_type");
                    unknown.push(format!("actor_type ({e})"));
                }
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

/// The JSON waltrail writes for its own events (see `api::export`).
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
    /// When waltrail wrote it (µs): an event is believed only near its commit time, so an old sealed event
    /// copied into a new transaction is not.
    #[serde(default)]
    pub issued_at_us: i64,
    /// Makes each event's seal unique.
    #[serde(default)]
    pub nonce: String,
}

/// How a sealed event travels in the WAL: the payload as text, and the seal of the message prefix and that
/// text (`<prefix>\n<payload>`), so neither can be changed or moved to another prefix.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedEvent {
    pub v: u32,
    pub payload: String,
    pub seal: String,
}

/// A context message sealed by the platform: the context JSON as text and its HMAC-SHA256 in hex.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedContext {
    pub ctx: String,
    pub sig: String,
}

impl AuditEvent {
    pub fn parse(content: &[u8]) -> anyhow::Result<AuditEvent> {
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
                platform_wide: false,
                previous_scope: None,
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
    /// Whether the transaction's last context message was trusted.
    pub status: ContextStatus,
    /// The message is a sealed event's own actor (an export's authenticated caller).
    pub sealed_event: bool,
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
}
