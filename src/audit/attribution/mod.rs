//! Attribution: who acted, and how, joined inside the stream.
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

mod message;
mod platform;
mod resolve;
pub mod seal;

pub use message::{
    AuditEvent, ContextMessage, EventPayload, SealedContext, SealedEvent, TxnContext,
};
pub use platform::{PlatformTables, Rewinding, Rewound, SnapshotRequest};

/// The account a session names in the copy (for the audit core's unit tests).
#[cfg(test)]
pub(crate) fn platform_lookup_for_tests(p: &PlatformTables, session: &str) -> Option<String> {
    p.lookup(platform::Kind::Sessions, session, platform::SESSION_ACCOUNT)
}

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::audit::mapping::ItemDraft;
use crate::capture::metrics::CaptureMetrics;
use crate::config::Config;
use crate::vocab::{action, resource_type, ContextStatus};
use seal::SealKey;

/// How far an event's issue time may lie from its commit time and still be believed.
const EVENT_MAX_SKEW_US: i64 = 10 * 60 * 1_000_000;
/// The claimed payload kept in a rejected event's item, at most.
const CLAIM_MAX_BYTES: usize = 16 << 10;

/// What attribution keeps across transactions: its message prefix, the origins that are the system's own,
/// the seal keys, and the copy of the platform's tables.
#[derive(Debug)]
pub struct Attribution {
    prefix: String,
    system_origins: Vec<String>,
    event_key: SealKey,
    context_key: Option<SealKey>,
    require_signed_context: bool,
    hash_session_ids: bool,
    pub platform: PlatformTables,
    metrics: Arc<CaptureMetrics>,
    warned_event: AtomicBool,
    warned_context: AtomicBool,
    warned_message: AtomicBool,
}

/// What a `<prefix>:event` message turned out to be.
pub enum EventOutcome {
    /// Not an event message (another prefix).
    NotEvent,
    /// Sealed by waltrail: an item of its own.
    Accepted(AuditEvent),
    /// Not sealed by waltrail: recorded as a rejected event, never as what it claims.
    Rejected(ItemDraft),
}

impl Attribution {
    pub fn new(cfg: &Config, metrics: Arc<CaptureMetrics>) -> Self {
        let a = &cfg.attribution;
        Attribution {
            prefix: a.message_prefix.clone(),
            system_origins: a.system_origins.clone(),
            event_key: SealKey::new(cfg.event_secret.0.as_bytes()),
            context_key: a
                .context_secret
                .as_ref()
                .map(|s| SealKey::new(s.0.as_bytes())),
            require_signed_context: a.require_signed_context,
            hash_session_ids: a.hash_session_ids,
            platform: PlatformTables::new(cfg),
            metrics,
            warned_event: AtomicBool::new(false),
            warned_context: AtomicBool::new(false),
            warned_message: AtomicBool::new(false),
        }
    }

    /// The prefix of audit events waltrail writes itself (`<prefix>:event`).
    pub fn event_prefix(&self) -> String {
        format!("{}:event", self.prefix)
    }

    /// Whether `prefix` is that of the DDL event trigger's messages (`<prefix>:ddl`, see `audit::ddl`).
    pub fn is_ddl(&self, prefix: &str) -> bool {
        prefix.strip_prefix(self.prefix.as_str()) == Some(":ddl")
    }

    /// Whether `prefix` is that of capture's marker of a cut context message (`<prefix>:cut`, see
    /// `capture::spill`).
    pub fn is_cut(&self, prefix: &str) -> bool {
        prefix
            .strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest == crate::capture::spill::CUT_SUFFIX)
    }

    /// The message content for an event waltrail writes: the payload, sealed with the event secret.
    pub fn seal_event(event_key: &SealKey, prefix: &str, payload: &EventPayload) -> String {
        let text = serde_json::to_string(payload).unwrap_or_default();
        let seal = event_key.seal(format!("{prefix}\n{text}").as_bytes());
        serde_json::to_string(&SealedEvent {
            v: 1,
            payload: text,
            seal,
        })
        .unwrap_or_default()
    }

    /// An audit event message (`<prefix>:event`): an item of its own if waltrail sealed it, else a record
    /// that someone wrote one.
    pub fn event(&self, prefix: &str, content: &[u8], commit_time_us: i64) -> EventOutcome {
        if prefix.strip_prefix(self.prefix.as_str()) != Some(":event") {
            return EventOutcome::NotEvent;
        }
        let reason = match serde_json::from_slice::<SealedEvent>(content) {
            Err(_) => "it is not sealed by waltrail".to_owned(),
            Ok(e) if e.v != 1 => format!("unknown seal version {}", e.v),
            Ok(e)
                if !self
                    .event_key
                    .verify(format!("{prefix}\n{}", e.payload).as_bytes(), &e.seal) =>
            {
                "its seal does not match this deployment's event secret".to_owned()
            }
            Ok(e) => match serde_json::from_str::<EventPayload>(&e.payload) {
                Ok(p) if (p.issued_at_us - commit_time_us).abs() > EVENT_MAX_SKEW_US => format!(
                    "it was sealed at {} µs but committed at {} µs: a copy of an older event",
                    p.issued_at_us, commit_time_us
                ),
                Ok(_) => match AuditEvent::parse(e.payload.as_bytes()) {
                    Ok(ev) => return EventOutcome::Accepted(ev),
                    Err(err) => format!("its payload is malformed: {err}"),
                },
                Err(err) => format!("its payload is malformed: {err}"),
            },
        };
        self.metrics.rejected_events.fetch_add(1, Ordering::Relaxed);
        if !self.warned_event.swap(true, Ordering::Relaxed) {
            tracing::warn!(%reason, "an audit event message waltrail did not write was rejected and recorded as such (further ones are counted in /metrics, not logged)");
        }
        EventOutcome::Rejected(rejected_event(content, &reason))
    }

    /// A transactional message: becomes the transaction's current context if it has our prefix and may be
    /// trusted; a rejected one is recorded in the status and not used. Returns whether it was a context
    /// message at all (held items are then attributed).
    pub fn on_message(
        &mut self,
        txn: &mut TxnContext,
        xid: u32,
        prefix: &str,
        content: &[u8],
    ) -> bool {
        if prefix != self.prefix {
            return false;
        }
        let sealed = serde_json::from_slice::<SealedContext>(content).ok();
        let (body, status): (Option<&[u8]>, ContextStatus) = match (&sealed, &self.context_key) {
            (Some(s), Some(k))
                if k.verify(s.sealed_text().as_bytes(), &s.sig) && s.bound_to(xid) =>
            {
                (Some(s.ctx.as_bytes()), ContextStatus::Signed)
            }
            (Some(_), Some(_)) => (None, ContextStatus::RejectedBadSignature),
            (Some(_), None) if self.require_signed_context => {
                (None, ContextStatus::RejectedBadSignature)
            }
            (Some(s), None) => (Some(s.ctx.as_bytes()), ContextStatus::Unsigned),
            (None, _) if self.require_signed_context => (None, ContextStatus::RejectedUnsigned),
            (None, _) => (Some(content), ContextStatus::Unsigned),
        };
        let Some(body) = body else {
            // Attributed from the row alone from here on, as the status says: a context an earlier message
            // gave is not carried past a rejected one (QA34 M3).
            txn.status = status;
            txn.message = None;
            self.metrics
                .rejected_contexts
                .fetch_add(1, Ordering::Relaxed);
            if !self.warned_context.swap(true, Ordering::Relaxed) {
                tracing::warn!(status = status.as_str(), "a context message was rejected (attribution.require_signed_context / context_secret); its items are recorded as such and attributed without it");
            }
            return true;
        };
        let (msg, warning) = ContextMessage::parse(body);
        if let Some(w) = warning {
            // Once per process: anyone who may emit messages could otherwise fill the log (QA34 H2).
            if !self.warned_message.swap(true, Ordering::Relaxed) {
                tracing::warn!("{w} (further such warnings are not logged)");
            }
        }
        match msg {
            Some(m) => {
                txn.status = status;
                txn.message = Some(m);
                true
            }
            // Not a context at all: the transaction's context stays as it was, status included.
            None => false,
        }
    }
}

/// The item recording a rejected event: what it claimed (bounded), and why it was not believed. It is
/// shown to the admins of the organization it names, or to every organization's when it names none.
fn rejected_event(content: &[u8], reason: &str) -> ItemDraft {
    let text = String::from_utf8_lossy(&content[..content.len().min(CLAIM_MAX_BYTES)]).into_owned();
    // The claim may be a sealed envelope with a bad seal, or a bare payload: look for an organization in
    // either, as a string only.
    let claimed: Value = serde_json::from_str::<SealedEvent>(&text)
        .ok()
        .and_then(|e| serde_json::from_str(&e.payload).ok())
        .or_else(|| serde_json::from_str(&text).ok())
        .unwrap_or(Value::String(text.clone()));
    let org = claimed
        .get("organization_id")
        .and_then(Value::as_str)
        .filter(|o| !o.is_empty() && o.len() <= 256)
        .unwrap_or("")
        .to_owned();
    ItemDraft {
        action: action::REJECTED.into(),
        platform_wide: org.is_empty(),
        organization_id: org,
        project_id: String::new(),
        resource_type: resource_type::AUDIT_EVENT.into(),
        resource_id: String::new(),
        resource_display: "audit event".into(),
        changed_fields: Vec::new(),
        diff: json!({
            "claimed": claimed,
            "claimed_bytes": content.len(),
            "truncated": content.len() > CLAIM_MAX_BYTES,
            "reason": reason,
        })
        .to_string(),
        table_name: String::new(),
        actor_refs: Default::default(),
        previous_scope: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::mapping::ActorRefs;
    use crate::vocab::PrincipalType;

    fn attribution(toml_extra: &str) -> Attribution {
        let text = format!(
            "[postgres]\nurl = \"host=x user=y\"\n[clickhouse]\n{toml_extra}\n[[tables]]\ntable = \"t\"\nresource_type = \"RESOURCE_TYPE_X\"\n"
        );
        let cfg = crate::config::Config::parse(&text).unwrap();
        Attribution::new(&cfg, Default::default())
    }

    #[test]
    fn fallbacks_and_system_origins() {
        let s = attribution("[attribution]\nsystem_origins = [\"sync_job\"]");
        let none = s.resolve(&TxnContext::default(), &ActorRefs::default());
        assert_eq!(
            (none.principal_type, none.source.as_str()),
            (PrincipalType::Unknown, "AUDIT_SOURCE_UNSPECIFIED")
        );
        let sys = s.resolve(
            &TxnContext {
                origin: Some("sync_job".into()),
                ..Default::default()
            },
            &ActorRefs::default(),
        );
        assert_eq!(
            (sys.principal_type, sys.source.as_str()),
            (PrincipalType::System, "AUDIT_SOURCE_SYSTEM")
        );
        let other = s.resolve(
            &TxnContext {
                origin: Some("elsewhere".into()),
                ..Default::default()
            },
            &ActorRefs::default(),
        );
        assert_eq!(other.principal_type, PrincipalType::Unknown);
        // The row's actor column names the actor, with the type the table says.
        let row = s.resolve(
            &TxnContext::default(),
            &ActorRefs {
                principal_id: Some("svc-1".into()),
                principal_type: Some(PrincipalType::ServiceKey),
                session_id: None,
                ..Default::default()
            },
        );
        assert_eq!(
            (
                row.principal_id.as_str(),
                row.principal_type,
                row.key_id.as_str()
            ),
            ("svc-1", PrincipalType::ServiceKey, "svc-1")
        );
    }

    #[test]
    fn session_values_are_bounded_like_message_fields() {
        let mut s = attribution(
            "[attribution.sessions]\ntable = \"sessions\"\naccount_column = \"account_id\"\nuser_agent_column = \"ua\"",
        );
        let ua = "U".repeat(5 << 20);
        s.platform.fill(
            0,
            vec![vec![
                Some("s1".into()),
                Some("alice".into()),
                Some(ua.clone()),
            ]],
        );
        let (msg, _) = ContextMessage::parse(br#"{"session_id":"s1"}"#);
        let a = s.resolve(
            &TxnContext {
                message: msg,
                ..Default::default()
            },
            &ActorRefs::default(),
        );
        assert_eq!(a.principal_id, "alice", "still attributed");
        assert_eq!(
            a.user_agent,
            format!("{}… [truncated: {} bytes]", "U".repeat(1024), ua.len())
        );
    }
}
