//! The rules that name who acted and how, one item at a time.
//!
//! Who acted comes from exactly one source, in this order: the context message naming an actor; the context
//! message naming a session (the session's account, agent or key); the row's session column; the row's actor
//! column; a replication origin that is the system's own; else nobody. "How" (source, auth method, client
//! IP, user agent, key) comes from the context message, then from the session that named the actor, and
//! never from a session that did not: a row's actor column is never dressed in another principal's device.
//! The item records which source it was (`actor_source`).

use super::message::TxnContext;
use super::platform::*;
use super::Attribution;
use crate::audit::item::Actor;
use crate::audit::mapping::ActorRefs;
use crate::vocab::{source, ActorSource, PrincipalType};

/// Where the actor came from, who it is (an id may be unknown while the kind is known), and the session
/// whose "how" goes with it.
type Who = (
    ActorSource,
    Option<(Option<String>, PrincipalType)>,
    Option<String>,
);

/// What a session row says of who used it.
struct SessionPrincipal {
    id: String,
    kind: PrincipalType,
}

impl Attribution {
    fn session_principal(&self, session_id: &str) -> Option<SessionPrincipal> {
        let get = |role| self.platform.lookup(Kind::Sessions, session_id, role);
        // An agent acts for the session's account; a key without an account is a service key.
        if let Some(agent) = get(SESSION_AGENT) {
            return Some(SessionPrincipal {
                id: agent,
                kind: PrincipalType::Agent,
            });
        }
        if let Some(acct) = get(SESSION_ACCOUNT) {
            return Some(SessionPrincipal {
                id: acct,
                kind: PrincipalType::Account,
            });
        }
        get(SESSION_KEY).map(|key| SessionPrincipal {
            id: key,
            kind: PrincipalType::ServiceKey,
        })
    }

    /// Resolve the actor of one item from the transaction's context and the row's actor columns.
    pub fn resolve(&self, txn: &TxnContext, refs: &ActorRefs) -> Actor {
        let msg = txn.message.as_ref();
        let m = |k: &str| msg.and_then(|m| m.get(k)).map(str::to_owned);
        let mut a = Actor {
            context_status: txn.status,
            ..Actor::default()
        };

        // Who, and the session whose "how" goes with it (if any).
        let (actor_source, principal, session_id): Who = if let Some(id) = m("actor_id") {
            let ty = m("actor_type")
                .and_then(|t| PrincipalType::parse(&t).ok())
                .unwrap_or(PrincipalType::Account);
            let source = if txn.sealed_event {
                ActorSource::SignedEvent
            } else {
                ActorSource::ContextMessage
            };
            // The message names both: the platform says this session is this actor's.
            (source, Some((Some(id), ty)), m("session_id"))
        } else if let Some(sid) = m("session_id") {
            // The message's session outranks the row's columns, even when the session is unknown here.
            let p = self.session_principal(&sid).map(|p| (Some(p.id), p.kind));
            (ActorSource::ContextSession, p, Some(sid))
        } else if let Some(ty) = m("actor_type").and_then(|t| PrincipalType::parse(&t).ok()) {
            (ActorSource::ContextMessage, Some((None, ty)), None)
        } else if let Some((sid, p)) = refs
            .session_id
            .as_ref()
            .and_then(|s| self.session_principal(s).map(|p| (s.clone(), p)))
            .filter(|(_, p)| {
                // A row naming both an actor and a session: the session's "how" only if it is the same actor.
                refs.principal_id.as_ref().is_none_or(|id| *id == p.id)
            })
        {
            (
                ActorSource::RowSession,
                Some((Some(p.id), p.kind)),
                Some(sid),
            )
        } else if let Some(id) = &refs.principal_id {
            (
                ActorSource::RowColumn,
                Some((
                    Some(id.clone()),
                    refs.principal_type.unwrap_or(PrincipalType::Account),
                )),
                None,
            )
        } else if txn
            .origin
            .as_ref()
            .is_some_and(|o| self.system_origins.contains(o))
        {
            (
                ActorSource::ReplicationOrigin,
                Some((None, PrincipalType::System)),
                None,
            )
        } else {
            (ActorSource::None, None, None)
        };
        a.actor_source = actor_source;
        let sess = |role: usize| {
            session_id
                .as_deref()
                .and_then(|s| self.platform.lookup(Kind::Sessions, s, role))
        };
        let (principal_id, principal_type) = principal.unwrap_or((None, PrincipalType::Unknown));
        a.principal_type = principal_type;
        if let Some(id) = &principal_id {
            a.principal_id = id.clone();
            match a.principal_type {
                PrincipalType::Account => {
                    a.email = self
                        .platform
                        .lookup(Kind::Accounts, id, ACCOUNT_EMAIL)
                        .unwrap_or_default();
                    a.display_name = self
                        .platform
                        .lookup(Kind::Accounts, id, ACCOUNT_DISPLAY)
                        .unwrap_or_default();
                }
                PrincipalType::Agent => {
                    a.display_name = self
                        .platform
                        .lookup(Kind::Agents, id, NAME)
                        .unwrap_or_default();
                    a.on_behalf_of_id = self
                        .platform
                        .lookup(Kind::Agents, id, OWNER)
                        .unwrap_or_default();
                }
                PrincipalType::ServiceKey => {
                    a.display_name = self
                        .platform
                        .lookup(Kind::Keys, id, NAME)
                        .unwrap_or_default();
                    a.on_behalf_of_id = self
                        .platform
                        .lookup(Kind::Keys, id, OWNER)
                        .unwrap_or_default();
                    a.key_id = id.clone();
                }
                _ => {}
            }
        }
        // An agent in a session acts for the session's account.
        if a.principal_type == PrincipalType::Agent {
            if let (Some(_), Some(acct)) = (sess(SESSION_AGENT), sess(SESSION_ACCOUNT)) {
                a.on_behalf_of_id = acct;
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
                .or_else(|| {
                    self.platform
                        .lookup(Kind::Accounts, &a.on_behalf_of_id, ACCOUNT_EMAIL)
                })
                .or_else(|| {
                    self.platform
                        .lookup(Kind::Accounts, &a.on_behalf_of_id, ACCOUNT_DISPLAY)
                })
                .unwrap_or_default();
        }

        // How: the message's words for this transaction's request, then the session that named the actor.
        a.source = m("source")
            .or_else(|| sess(SESSION_SOURCE))
            .map(|s| source::normalize(&s))
            .unwrap_or_else(|| {
                if a.principal_type == PrincipalType::System {
                    source::SYSTEM.into()
                } else {
                    source::UNSPECIFIED.into()
                }
            });
        a.key_id = m("key_id")
            .or_else(|| sess(SESSION_KEY))
            .unwrap_or(std::mem::take(&mut a.key_id));
        a.auth_method = m("auth_method")
            .or_else(|| sess(SESSION_AUTH))
            .or_else(|| (!a.key_id.is_empty()).then(|| "API_KEY".into()))
            .unwrap_or_default();
        a.session_id = match (&session_id, self.hash_session_ids) {
            (Some(s), true) => hashed_session_id(s),
            (Some(s), false) => s.clone(),
            (None, _) => String::new(),
        };
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

/// How a session id is stored with `attribution.hash_session_ids`: the same session always gives the same
/// value (items of one session still group), and a bearer token never leaves the process.
pub fn hashed_session_id(id: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    format!(
        "sha256:{}",
        crate::audit::attribution::seal::hex(&d.as_ref()[..16])
    )
}
