//! The words waltrail's layers share: principal types, actions, sources, API roles and TLS modes.
//!
//! Each is a type with one parser, so config, query parameters, attribution and the store cannot disagree on
//! what a value may be. Closed sets are enums; open sets (actions and sources a platform may add) are
//! validated strings. This module uses nothing else of the crate: every layer, and config, may use it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Who acted, as a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PrincipalType {
    Account,
    ServiceKey,
    Agent,
    System,
    #[default]
    Unknown,
}

impl PrincipalType {
    pub const ALL: [PrincipalType; 5] = [
        PrincipalType::Account,
        PrincipalType::ServiceKey,
        PrincipalType::Agent,
        PrincipalType::System,
        PrincipalType::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalType::Account => "ACCOUNT",
            PrincipalType::ServiceKey => "SERVICE_KEY",
            PrincipalType::Agent => "AGENT",
            PrincipalType::System => "SYSTEM",
            PrincipalType::Unknown => "UNKNOWN",
        }
    }

    /// Case-insensitive: platforms write `agent` as often as `AGENT`.
    pub fn parse(s: &str) -> Result<PrincipalType, String> {
        let upper = s.trim().to_ascii_uppercase();
        PrincipalType::ALL
            .into_iter()
            .find(|p| p.as_str() == upper)
            .ok_or_else(|| {
                format!(
                    "principal type {s:?} must be one of {}",
                    PrincipalType::ALL.map(|p| p.as_str()).join(", ")
                )
            })
    }
}

impl fmt::Display for PrincipalType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for PrincipalType {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        PrincipalType::parse(&s)
    }
}

impl From<PrincipalType> for String {
    fn from(p: PrincipalType) -> String {
        p.as_str().to_owned()
    }
}

/// How an item's actor was known. Every item records one, so a security team can ask first for the
/// changes nobody can account for (`NONE`: direct SQL, migrations, a forgotten code path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ActorSource {
    /// The transaction's context message named the actor.
    ContextMessage,
    /// The transaction's context message named a session; the session (platform tables) named the actor.
    ContextSession,
    /// An actor column on the changed row (`created_by`, `updated_by`, `deleted_by`).
    RowColumn,
    /// A session column on the changed row; the session named the actor.
    RowSession,
    /// The transaction came through a replication origin configured as the system's own.
    ReplicationOrigin,
    /// An event waltrail wrote and signed itself (exports), naming its authenticated caller.
    SignedEvent,
    /// Nothing named who acted.
    #[default]
    None,
}

impl ActorSource {
    pub const ALL: [ActorSource; 7] = [
        ActorSource::ContextMessage,
        ActorSource::ContextSession,
        ActorSource::RowColumn,
        ActorSource::RowSession,
        ActorSource::ReplicationOrigin,
        ActorSource::SignedEvent,
        ActorSource::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActorSource::ContextMessage => "CONTEXT_MESSAGE",
            ActorSource::ContextSession => "CONTEXT_SESSION",
            ActorSource::RowColumn => "ROW_COLUMN",
            ActorSource::RowSession => "ROW_SESSION",
            ActorSource::ReplicationOrigin => "REPLICATION_ORIGIN",
            ActorSource::SignedEvent => "SIGNED_EVENT",
            ActorSource::None => "NONE",
        }
    }

    pub fn parse(s: &str) -> Result<ActorSource, String> {
        ActorSource::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "actor source {s:?} must be one of {}",
                    ActorSource::ALL.map(|a| a.as_str()).join(", ")
                )
            })
    }
}

impl TryFrom<String> for ActorSource {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ActorSource::parse(&s)
    }
}

impl From<ActorSource> for String {
    fn from(a: ActorSource) -> String {
        a.as_str().to_owned()
    }
}

/// Whether the transaction's context message was trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextStatus {
    /// No context message in the transaction.
    #[default]
    None,
    /// Unsigned, and accepted because `attribution.require_signed_context` is off.
    Unsigned,
    /// Signed with the shared secret, and the signature holds.
    Signed,
    /// Unsigned while signatures are required: not used.
    RejectedUnsigned,
    /// Its signature does not hold: not used.
    RejectedBadSignature,
    /// A context message may have gone with a rolled-back savepoint of a streamed transaction (Postgres
    /// does not say whose it was): from there on, nothing is attributed by an earlier one (QA45 H1).
    Uncertain,
}

impl ContextStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContextStatus::None => "NONE",
            ContextStatus::Unsigned => "UNSIGNED",
            ContextStatus::Signed => "SIGNED",
            ContextStatus::RejectedUnsigned => "REJECTED_UNSIGNED",
            ContextStatus::RejectedBadSignature => "REJECTED_BAD_SIGNATURE",
            ContextStatus::Uncertain => "UNCERTAIN",
        }
    }

    pub fn rejected(self) -> bool {
        matches!(
            self,
            ContextStatus::RejectedUnsigned | ContextStatus::RejectedBadSignature
        )
    }
}

/// What an API key may see: `admin` the whole organization, `member` its projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Role {
    Admin,
    #[default]
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            _ => Err(format!("role {s:?} must be admin or member")),
        }
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Role::parse(&s)
    }
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.as_str().to_owned()
    }
}

/// TLS to Postgres, with libpq's `sslmode` meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    pub fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} must be disable, prefer, require, verify-ca or verify-full"
                ))
            }
        })
    }
}

impl TryFrom<String> for SslMode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SslMode::parse(&s)
    }
}

impl From<SslMode> for String {
    fn from(m: SslMode) -> String {
        m.as_str().to_owned()
    }
}

/// An action name: `AUDIT_ACTION_` and upper-case letters, digits or `_`. Platforms add their own
/// (derived actions), so this is an open set with a fixed shape.
pub mod action {
    pub const CREATED: &str = "AUDIT_ACTION_CREATED";
    pub const UPDATED: &str = "AUDIT_ACTION_UPDATED";
    pub const DELETED: &str = "AUDIT_ACTION_DELETED";
    pub const RESTORED: &str = "AUDIT_ACTION_RESTORED";
    pub const TRUNCATED: &str = "AUDIT_ACTION_TRUNCATED";
    /// DDL that changed a mapped table's values without a row change (a column retyped with `USING`, an
    /// enum label renamed), reported by the optional event trigger (see `audit::ddl`).
    pub const ALTERED: &str = "AUDIT_ACTION_ALTERED";
    pub const EXPORTED: &str = "AUDIT_ACTION_EXPORTED";
    pub const MOVED: &str = "AUDIT_ACTION_MOVED";
    /// A `<prefix>:event` message that waltrail did not write (its signature fails): recorded, not believed.
    pub const REJECTED: &str = "AUDIT_ACTION_REJECTED";
    /// A stretch of the source's history the trail does not hold (a lost slot, a table out of the
    /// publication), accepted by the operator with `--accept-gap`.
    pub const GAP: &str = "AUDIT_ACTION_GAP";

    pub fn validate(s: &str) -> Result<(), String> {
        super::shaped(s, "AUDIT_ACTION_", "action", "AUDIT_ACTION_ROTATED")
    }
}

/// A resource type: `RESOURCE_TYPE_` and upper-case letters, digits or `_`.
pub mod resource_type {
    pub const AUDIT_LOG: &str = "RESOURCE_TYPE_AUDIT_LOG";
    pub const AUDIT_EVENT: &str = "RESOURCE_TYPE_AUDIT_EVENT";

    pub fn validate(s: &str) -> Result<(), String> {
        super::shaped(
            s,
            "RESOURCE_TYPE_",
            "resource type",
            "RESOURCE_TYPE_API_KEY",
        )
    }
}

/// How a change was made: `AUDIT_SOURCE_API`, `AUDIT_SOURCE_DASHBOARD`... Platforms write `api`, `API` or
/// the full name; all become the full name.
pub mod source {
    pub const UNSPECIFIED: &str = "AUDIT_SOURCE_UNSPECIFIED";
    pub const SYSTEM: &str = "AUDIT_SOURCE_SYSTEM";
    pub const API: &str = "AUDIT_SOURCE_API";
    pub const DASHBOARD: &str = "AUDIT_SOURCE_DASHBOARD";

    /// `api`, `API`, `AUDIT_SOURCE_API` → `AUDIT_SOURCE_API`; anything else keeps its name in that style.
    pub fn normalize(s: &str) -> String {
        let upper: String = s
            .trim()
            .to_ascii_uppercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if upper.is_empty() {
            return UNSPECIFIED.into();
        }
        if upper.starts_with("AUDIT_SOURCE_") {
            upper
        } else {
            format!("AUDIT_SOURCE_{upper}")
        }
    }

    pub fn validate(s: &str) -> Result<(), String> {
        super::shaped(s, "AUDIT_SOURCE_", "source", "AUDIT_SOURCE_API")
    }
}

fn shaped(s: &str, prefix: &str, what: &str, example: &str) -> Result<(), String> {
    let rest = s.strip_prefix(prefix).unwrap_or("");
    if !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "{what} {s:?} must be {prefix} followed by upper-case letters, digits or '_' (e.g. {example})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_types_parse_once_for_everyone() {
        for p in PrincipalType::ALL {
            assert_eq!(PrincipalType::parse(p.as_str()), Ok(p));
        }
        assert_eq!(PrincipalType::parse("agent"), Ok(PrincipalType::Agent));
        assert!(PrincipalType::parse("ROBOT").is_err());
        let p: PrincipalType = serde_json::from_str("\"service_key\"").unwrap();
        assert_eq!(p, PrincipalType::ServiceKey);
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"SERVICE_KEY\"");
    }

    #[test]
    fn roles_and_sslmodes() {
        assert_eq!(Role::parse("Admin"), Ok(Role::Admin));
        assert!(Role::parse("owner").is_err());
        for m in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(SslMode::parse(m.as_str()), Ok(m));
        }
        assert!(SslMode::parse("verify_full").is_err());
    }

    #[test]
    fn open_sets_have_a_shape() {
        assert!(action::validate("AUDIT_ACTION_ROTATED").is_ok());
        assert!(action::validate("AUDIT_ACTION_").is_err());
        assert!(action::validate("ROTATED").is_err());
        assert!(action::validate("AUDIT_ACTION_rotated").is_err());
        assert!(resource_type::validate("RESOURCE_TYPE_API_KEY").is_ok());
        assert!(resource_type::validate("RESOURCE_TYPE_API KEY").is_err());
        assert_eq!(source::normalize("api"), "AUDIT_SOURCE_API");
        assert_eq!(source::normalize("AUDIT_SOURCE_CLI"), "AUDIT_SOURCE_CLI");
        assert_eq!(source::normalize("web app"), "AUDIT_SOURCE_WEB_APP");
        assert_eq!(source::normalize(""), source::UNSPECIFIED);
        assert!(source::validate(&source::normalize("web app")).is_ok());
    }
}
