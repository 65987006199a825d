//! The messages a transaction may carry: a context message (`<prefix>`: who acted and how, written by the
//! platform) and an audit event (`<prefix>:event`: an item of its own, written by waltrail for exports).

use serde::de::{Deserializer as _, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::audit::mapping::{ActorRefs, ItemDraft};
use crate::audit::value::{bounded_str, bounded_text};
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

/// The longest a context field is stored (a message, and a platform table's value, is copied into every
/// item its transaction or session attributes): longer ones are cut to this and marked, as snapshot fields
/// over `capture.max_value_bytes` are. 1 KiB holds any real id, name, email, IP or User-Agent.
pub const CONTEXT_FIELD_MAX_BYTES: usize = 1024;
/// How much of an unknown key a warning quotes.
const KEY_IN_WARNING_BYTES: usize = 64;

/// A parsed context message: field name → value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextMessage(HashMap<&'static str, String>);

impl ContextMessage {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    /// Parse a payload; returns what could be used, and a warning when something could not.
    ///
    /// Every field is a string. A field of another type, with a NUL character, or a `client_ip` that is
    /// not an IP address is left out (and named in the warning); a string longer than
    /// [`CONTEXT_FIELD_MAX_BYTES`] is cut and marked, since the message is copied into every item of its
    /// transaction. A message that is not a JSON object, or names a key twice (which of the two would be
    /// meant?), is not used at all. Values are never put into the warning (they may be anyone's words).
    pub fn parse(content: &[u8]) -> (Option<ContextMessage>, Option<String>) {
        let entries = match read_object(content) {
            Ok(e) => e,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                // serde's own text quotes the value it found ("invalid type: string \"…\""): say only
                // what kind it was. A key written twice is named (keys are bounded, values never).
                let text = e.to_string();
                let why = if text.starts_with("key ") {
                    text
                } else {
                    format!("it is {}", json_kind(content))
                };
                return (
                    None,
                    Some(format!(
                        "context message is not a JSON object with distinct keys ({why}); ignored"
                    )),
                );
            }
            Err(e) => {
                return (
                    None,
                    Some(format!("context message is not JSON ({e}); ignored")),
                )
            }
        };
        let mut out = HashMap::new();
        let mut unknown = Vec::new();
        for (k, raw) in entries {
            let Some(field) = MESSAGE_FIELDS.iter().find(|f| **f == k) else {
                unknown.push(bounded_str(&k, KEY_IN_WARNING_BYTES));
                continue;
            };
            let raw = raw.get();
            let kind = match raw.as_bytes().first() {
                Some(b'"') => None,
                Some(b'n') => continue,
                Some(b't' | b'f') => Some("a boolean"),
                Some(b'[') => Some("an array"),
                Some(b'{') => Some("an object"),
                _ => Some("a number"),
            };
            // A number is not coerced: `42`, `42.0` and `4.2e1` would name three different actors.
            if let Some(kind) = kind {
                unknown.push(format!("{field} (not a string: {kind})"));
                continue;
            }
            let Ok(text) = serde_json::from_str::<String>(raw) else {
                unknown.push(format!("{field} (not a string)"));
                continue;
            };
            // Stripping the NUL would make "acct\0evil" name another actor than was written: leave it out.
            if text.contains('\0') {
                unknown.push(format!("{field} (contains a NUL character)"));
                continue;
            }
            if *field == "client_ip" && !text.is_empty() && text.parse::<IpAddr>().is_err() {
                unknown.push(format!("{field} (not an IP address)"));
                continue;
            }
            out.insert(*field, bounded_text(text, CONTEXT_FIELD_MAX_BYTES));
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

/// What kind of JSON value `content` holds, by its first byte (for a warning that must not quote it).
fn json_kind(content: &[u8]) -> &'static str {
    match content.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// A context message's keys and their values as written, in order; fails on anything but one JSON object,
/// and on a key written twice (serde_json's maps would silently keep the last one).
fn read_object(content: &[u8]) -> serde_json::Result<Vec<(String, &RawValue)>> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, &'de RawValue)>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                // Borrowed, not parsed: a long value is read once, when (and if) it is used.
                let v: &RawValue = map.next_value()?;
                if !seen.insert(k.clone()) {
                    return Err(A::Error::custom(format!(
                        "key {:?} written twice",
                        bounded_str(&k, KEY_IN_WARNING_BYTES)
                    )));
                }
                out.push((k, v));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(content);
    let entries = de.deserialize_map(Entries)?;
    de.end()?;
    Ok(entries)
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

/// A context message sealed by the platform: the context JSON as text and its HMAC-SHA256 in hex; bound to
/// its transaction when `xid` (the writer's `txid_current()`) is given, the seal then covering
/// `"<xid>\n<ctx>"`: a copy replayed in another transaction is refused (QA34 M2).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedContext {
    pub ctx: String,
    pub sig: String,
    #[serde(default)]
    pub xid: Option<String>,
}

impl SealedContext {
    /// What the seal covers.
    pub fn sealed_text(&self) -> String {
        match &self.xid {
            Some(x) => format!("{x}\n{}", self.ctx),
            None => self.ctx.clone(),
        }
    }

    /// Whether it was sealed for transaction `xid` (the 32-bit id the stream gives), or for none.
    pub fn bound_to(&self, xid: u32) -> bool {
        match &self.xid {
            None => true,
            // txid_current() counts epochs above the 32 bits the WAL carries.
            Some(x) => x.parse::<u64>().is_ok_and(|x| x as u32 == xid),
        }
    }
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

impl ContextMessage {
    /// Roughly what it holds in memory.
    pub fn approx_bytes(&self) -> usize {
        48 + self.0.values().map(|v| v.len() + 48).sum::<usize>()
    }
}

/// Context gathered inside one transaction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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
        // A number is not a string: left out and named, like any other wrongly typed field.
        assert_eq!(m.get("run_id"), None);
        let w = w.unwrap();
        assert!(w.contains("color") && w.contains("run_id (not a string: a number)"));
        let (m, w) = ContextMessage::parse(b"{not json");
        assert!(m.is_none() && w.is_some());
        let (m, w) = ContextMessage::parse(br#"{"actor_type":"ROBOT","actor_id":"x"}"#);
        assert_eq!(m.unwrap().get("actor_type"), None);
        assert!(w.unwrap().contains("ROBOT"));
        let (m, _) = ContextMessage::parse(b"[1,2]");
        assert!(m.is_none());
    }

    #[test]
    fn wrongly_typed_fields_are_left_out_with_a_warning() {
        let (m, w) = ContextMessage::parse(
            br#"{"actor_id":42,"actor_email":true,"session_id":"s1","request_id":null}"#,
        );
        let m = m.unwrap();
        assert_eq!(
            m.get("actor_id"),
            None,
            "a numeric actor_id is not coerced to \"42\""
        );
        assert_eq!(m.get("actor_email"), None);
        assert_eq!(m.get("session_id"), Some("s1"), "the rest applies");
        let w = w.unwrap();
        assert!(w.contains("actor_id (not a string: a number)"), "{w}");
        assert!(w.contains("actor_email (not a string: a boolean)"), "{w}");
        assert!(!w.contains("request_id"), "null is simply absent: {w}");
    }

    #[test]
    fn nul_characters_and_non_ip_client_ips_are_left_out() {
        let (m, w) = ContextMessage::parse(
            br#"{"actor_id":"acct\u0000evil","actor_email":"e\u0000@x.io","actor_display":"Eve","client_ip":"not-an-ip"}"#,
        );
        let m = m.unwrap();
        assert_eq!(m.get("actor_id"), None);
        assert_eq!(m.get("actor_email"), None);
        assert_eq!(m.get("client_ip"), None);
        assert_eq!(m.get("actor_display"), Some("Eve"));
        let w = w.unwrap();
        assert!(w.contains("actor_id (contains a NUL character)"), "{w}");
        assert!(w.contains("actor_email (contains a NUL character)"), "{w}");
        assert!(w.contains("client_ip (not an IP address)"), "{w}");
        assert!(
            !w.contains("evil") && !w.contains("not-an-ip"),
            "values never go into the log: {w}"
        );
        for ip in ["203.0.113.7", "2001:db8::1"] {
            let (m, w) = ContextMessage::parse(format!(r#"{{"client_ip":"{ip}"}}"#).as_bytes());
            assert_eq!(m.unwrap().get("client_ip"), Some(ip));
            assert!(w.is_none());
        }
    }

    #[test]
    fn a_key_written_twice_rejects_the_message() {
        let (m, w) =
            ContextMessage::parse(br#"{"actor_id":"acct_first","actor_id":"acct_second"}"#);
        assert!(m.is_none(), "neither value is used");
        let w = w.unwrap();
        assert!(
            w.contains("actor_id") && w.contains("twice") && w.contains("ignored"),
            "{w}"
        );
        // Unknown keys too: the message is not what its writer thinks it says.
        let (m, _) = ContextMessage::parse(br#"{"actor_id":"a","x":1,"x":2}"#);
        assert!(m.is_none());
        // Trailing garbage after the object is not JSON.
        let (m, _) = ContextMessage::parse(br#"{"actor_id":"a"} {"actor_id":"b"}"#);
        assert!(m.is_none());
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary_and_marked() {
        // "é" is two bytes: 1023 ASCII bytes then "é" straddles the 1 KiB limit.
        let ua = format!("{}{}", "a".repeat(1023), "é".repeat(10_000));
        let msg = serde_json::json!({"actor_id": "alice", "user_agent": ua, "request_id": "r".repeat(1024)});
        let (m, w) = ContextMessage::parse(msg.to_string().as_bytes());
        assert!(w.is_none());
        let m = m.unwrap();
        assert_eq!(m.get("actor_id"), Some("alice"));
        let cut = m.get("user_agent").unwrap();
        assert_eq!(
            cut,
            format!("{}… [truncated: {} bytes]", "a".repeat(1023), ua.len())
        );
        assert_eq!(
            m.get("request_id").map(str::len),
            Some(CONTEXT_FIELD_MAX_BYTES),
            "a value of exactly the limit is kept whole"
        );
        // A message of many megabytes gives a bounded context.
        let huge = serde_json::json!({"actor_id": "x".repeat(20 << 20), "user_agent": "V".repeat(20 << 20)});
        let (m, _) = ContextMessage::parse(huge.to_string().as_bytes());
        let m = m.unwrap();
        for f in ["actor_id", "user_agent"] {
            let v = m.get(f).unwrap();
            assert!(v.len() < 1100, "{f}: {} bytes", v.len());
            assert!(v.ends_with(&format!("… [truncated: {} bytes]", 20 << 20)));
        }
    }
}
