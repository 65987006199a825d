//! Session context: who acted and how. Filled from logical-decoding messages, actor columns and the
//! platform's own session/account tables read from the same stream.

use std::collections::HashMap;

use crate::audit::item::Actor;
use crate::capture::pgoutput::{Relation, Tuple};

/// Context gathered inside one transaction.
#[derive(Debug, Default)]
pub struct TxnContext {}

/// Context kept across transactions.
#[derive(Debug, Default)]
pub struct ContextStore {}

impl ContextStore {
    pub fn new(_cfg: &crate::config::Config) -> Self {
        ContextStore {}
    }

    pub fn on_relation(&mut self, _rel: &Relation) {}
    pub fn on_message(&mut self, _txn: &mut TxnContext, _prefix: &str, _content: &[u8]) {}
    pub fn on_insert(&mut self, _rel: &Relation, _new: &Tuple) {}
    pub fn on_update(&mut self, _rel: &Relation, _old: Option<&Tuple>, _new: &Tuple) {}
    pub fn on_delete(&mut self, _rel: &Relation, _old: &Tuple) {}
    pub fn on_truncate(&mut self, _rel: &Relation) {}

    pub fn resolve(
        &self,
        _txn: &TxnContext,
        _table: &str,
        _row: &HashMap<String, String>,
        _action: &str,
    ) -> Actor {
        Actor::default()
    }
}
