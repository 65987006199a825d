//! The rules that name who acted and how, one item at a time.

use super::message::TxnContext;
use super::platform::*;
use super::Attribution;
use crate::audit::item::Actor;
use crate::audit::mapping::ActorRefs;
use crate::vocab::{source, PrincipalType};

impl Attribution {
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
                .and_then(|s| self.platform.lookup(Kind::Sessions, s, role))
        };
        let session_account = sess(SESSION_ACCOUNT);
        let session_agent = sess(SESSION_AGENT);
        let session_key = sess(SESSION_KEY);

        // Who: message, then the row, then the session (an agent acts for the session's account; a key
        // without an account is a service key).
        let (principal_id, principal_type) = if let Some(id) = m("actor_id") {
            let ty = m("actor_type")
                .and_then(|t| PrincipalType::parse(&t).ok())
                .unwrap_or(PrincipalType::Account);
            (Some(id), ty)
        } else if let Some(id) = &refs.principal_id {
            (
                Some(id.clone()),
                refs.principal_type.unwrap_or(PrincipalType::Account),
            )
        } else if let Some(agent) = &session_agent {
            (Some(agent.clone()), PrincipalType::Agent)
        } else if let Some(acct) = &session_account {
            (Some(acct.clone()), PrincipalType::Account)
        } else if let Some(key) = &session_key {
            (Some(key.clone()), PrincipalType::ServiceKey)
        } else if let Some(t) = m("actor_type").and_then(|t| PrincipalType::parse(&t).ok()) {
            (None, t)
        } else if txn
            .origin
            .as_ref()
            .is_some_and(|o| self.system_origins.contains(o))
        {
            (None, PrincipalType::System)
        } else {
            (None, PrincipalType::Unknown)
        };
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
        if a.principal_type == PrincipalType::Agent && session_agent.is_some() {
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

        // How.
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
