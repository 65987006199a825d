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

pub use message::{AuditEvent, ContextMessage, EventPayload, TxnContext};
pub use platform::{PlatformTables, SnapshotRequest};

use crate::config::Config;

/// What attribution keeps across transactions: its message prefix, the origins that are the system's own,
/// and the copy of the platform's tables.
#[derive(Debug, Default)]
pub struct Attribution {
    prefix: String,
    system_origins: Vec<String>,
    pub platform: PlatformTables,
}

impl Attribution {
    pub fn new(cfg: &Config) -> Self {
        let a = &cfg.attribution;
        Attribution {
            prefix: a.message_prefix.clone(),
            system_origins: a.system_origins.clone(),
            platform: PlatformTables::new(cfg),
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
        Attribution::new(&cfg)
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
                message: None,
                origin: Some("sync_job".into()),
            },
            &ActorRefs::default(),
        );
        assert_eq!(
            (sys.principal_type, sys.source.as_str()),
            (PrincipalType::System, "AUDIT_SOURCE_SYSTEM")
        );
        let other = s.resolve(
            &TxnContext {
                message: None,
                origin: Some("elsewhere".into()),
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
}
