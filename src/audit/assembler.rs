//! Turns the decoded stream into audit items, transaction by transaction.
//!
//! It keeps the Relation messages it has seen (pgoutput sends one before a table's first change in a session,
//! and again after its schema changes), the transaction in progress, and the position of each change in it,
//! from which item ids are made.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use crate::audit::attribution::{Attribution, EventOutcome, TxnContext};
use crate::audit::item::{self, Actor, AuditItem};
use crate::audit::mapping::{BoundRelation, ItemDraft, OwnWrite, RowChange, TableMapping};
use crate::audit::summary;
use crate::audit::value::TypeCatalog;
use crate::capture::pgoutput::{Begin, Commit, LogicalMessage, OldKind};
use crate::vocab::{action, PrincipalType};

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("{kind} message for relation id {id}, which no Relation message introduced; stopping rather than guess its table")]
    UnknownRelation { kind: &'static str, id: u32 },
    #[error("{0} message outside a transaction")]
    OutsideTransaction(&'static str),
    #[error("Begin inside a transaction (xid {0} still open)")]
    NestedBegin(u32),
    #[error(
        "Commit at {commit:X} does not close the open transaction (its final LSN is {open:X})"
    )]
    CommitMismatch { commit: u64, open: u64 },
    #[error("{0}")]
    ConfigDrift(String),
    #[error("malformed change: {0}")]
    Malformed(String),
}

struct Txn {
    begin: Begin,
    /// Shared by the transaction's items; computed once (a SHA-1 per item adds up in large transactions).
    event_id: uuid::Uuid,
    /// Position of the next change in the transaction.
    seq: u32,
    /// The transaction's context as each of its context messages left it (`[0]`: before any); each held
    /// item says which applies to it.
    contexts: Vec<TxnContext>,
    /// Which of `contexts` the first context message made (None before it).
    first_context: Option<usize>,
    /// Held items passed `max_pending`: what was held went out, and nothing waits any more in this
    /// transaction (a huge one holds no more memory than that, and its items go out as they come).
    overflowed: bool,
    /// Items not handed out yet, in order (items go out in stream order): those before the transaction's
    /// first context message (which attributes them too), and from the first whose actor was not known as
    /// of its change on (looked up again at commit). Bounded by `max_pending` items and bytes; past that
    /// they go out attributed as things stand, and later ones at once.
    pending: Vec<Held>,
    pending_bytes: usize,
    /// The ALTER TABLE column layouts written since the last after-layout (QA43 H3/H4).
    befores: crate::audit::ddl::Befores,
    /// The actor columns this transaction wrote, each as a hash of the column's role (`deleted_by` or
    /// session), table and resource id: a DELETE of the row later in it names who they say (QA48a H3).
    /// At most `MAX_OWN_WRITES`; past that a write is not kept, and such a DELETE names nobody by its row
    /// (never a stale writer).
    own_writes: HashSet<u64>,
}

/// Actor columns of one transaction whose write is remembered: a bulk load into a table with a session
/// column writes one per row, so the bound (about 4 MiB with the set's overhead) is what such a load costs.
const MAX_OWN_WRITES: usize = 1 << 18;

impl Txn {
    /// The context now: the last message's (never empty: Begin puts the first).
    fn context(&self) -> &TxnContext {
        &self.contexts[self.contexts.len() - 1]
    }

    /// A message changed the context. Only contexts a held item still refers to are kept beside it: anyone
    /// who may emit messages could otherwise make each tiny message keep another copy of a large context
    /// (QA34 H2: 50,000 messages of a few bytes held 650 MB). A kept one counts against the bytes held
    /// back (`max_pending_bytes`), like the items that refer to it.
    fn set_context(&mut self, next: TxnContext) {
        let last = self.contexts.len() - 1;
        if self.pending.is_empty() && last > 0 {
            // Nothing waits: none of the earlier contexts is needed any more.
            self.contexts.drain(..last);
            self.first_context = self.first_context.map(|_| 0);
        }
        let last = self.contexts.len() - 1;
        let referenced = last == 0 || self.pending.last().is_some_and(|h| h.ctx == last);
        if referenced {
            self.pending_bytes += next.message.as_ref().map_or(64, |m| m.approx_bytes());
            self.contexts.push(next);
        } else {
            self.contexts[last] = next;
        }
    }
}

/// Whether a resolution named someone (an id, or at least what kind of principal acted).
fn named(a: &Actor) -> bool {
    !a.principal_id.is_empty() || a.principal_type != PrincipalType::Unknown
}

/// An item waiting in its transaction.
struct Held {
    d: ItemDraft,
    seq: u32,
    sub: u32,
    /// Which of the transaction's contexts applies (0 before its first message, which then applies).
    ctx: usize,
    /// Its actor as of its change, when that named someone: kept, so a session ended or re-pointed later in
    /// the transaction does not change who did it.
    actor: Option<Actor>,
}

pub struct Assembler {
    source_id: String,
    mappings: HashMap<(String, String), Arc<TableMapping>>,
    relations: HashMap<u32, BoundRelation>,
    /// A table rewrite's item kept back a moment, with its position: the next message may be the same
    /// statement's rewrite of another partition of that table, which joins it (one item per statement).
    ddl_held: Option<(ItemDraft, u32)>,
    pub catalog: TypeCatalog,
    pub attribution: Attribution,
    txn: Option<Txn>,
    max_pending: usize,
    max_pending_bytes: usize,
    /// Relations already warned about deletes that came without their organization.
    warned_unscoped: std::collections::HashSet<u32>,
    /// Keys the hashes of `Txn::own_writes` (random: no row id can be chosen to collide with another's).
    row_hasher: std::collections::hash_map::RandomState,
}

#[cfg(test)]
impl Assembler {
    /// How many versions of its context the open transaction keeps.
    pub fn contexts_held(&self) -> usize {
        self.txn.as_ref().map_or(0, |t| t.contexts.len())
    }
}

/// What one message meant for delivery: a commit is the only point that may be confirmed.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    Continue,
    Committed(Commit),
}

impl Assembler {
    pub fn new(
        source_id: String,
        mappings: Vec<TableMapping>,
        attribution: Attribution,
        max_pending: usize,
    ) -> Self {
        Assembler {
            source_id,
            mappings: mappings
                .into_iter()
                .map(|m| ((m.schema.clone(), m.table.clone()), Arc::new(m)))
                .collect(),
            relations: HashMap::new(),
            ddl_held: None,
            catalog: TypeCatalog::default(),
            attribution,
            txn: None,
            max_pending,
            max_pending_bytes: 16 << 20,
            warned_unscoped: Default::default(),
            row_hasher: Default::default(),
        }
    }

    /// Bound the bytes held back for a later context message (`attribution.max_pending_bytes`).
    pub fn with_max_pending_bytes(mut self, bytes: usize) -> Self {
        self.max_pending_bytes = bytes.max(1);
        self
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// Forget per-connection state: a new replication session resends Relations and restarts at a commit.
    pub fn reset_session(&mut self) {
        self.relations.clear();
        self.txn = None;
        self.ddl_held = None;
    }

    pub fn apply(
        &mut self,
        msg: LogicalMessage,
        out: &mut Vec<AuditItem>,
    ) -> Result<Applied, AssembleError> {
        // A held rewrite item goes out before anything but another DDL message (its statement is over).
        let ddl = matches!(&msg, LogicalMessage::Message { transactional: true, prefix, .. }
            if self.attribution.is_ddl(prefix));
        if !ddl {
            self.flush_ddl(out)?;
        }
        match msg {
            LogicalMessage::Begin(b) => {
                if let Some(t) = &self.txn {
                    return Err(AssembleError::NestedBegin(t.begin.xid));
                }
                self.txn = Some(Txn {
                    event_id: item::event_id(&self.source_id, b.final_lsn),
                    begin: b,
                    seq: 0,
                    contexts: vec![TxnContext::default()],
                    first_context: None,
                    overflowed: false,
                    pending: Vec::new(),
                    pending_bytes: 0,
                    befores: Default::default(),
                    own_writes: HashSet::new(),
                });
            }
            LogicalMessage::Commit(c) => {
                let Some(t) = self.txn.as_ref() else {
                    return Err(AssembleError::OutsideTransaction("Commit"));
                };
                if t.begin.final_lsn != c.commit_lsn {
                    return Err(AssembleError::CommitMismatch {
                        commit: c.commit_lsn,
                        open: t.begin.final_lsn,
                    });
                }
                self.attribute_held(out);
                self.txn = None;
                return Ok(Applied::Committed(c));
            }
            LogicalMessage::Origin { name, .. } => {
                if let Some(c) = self.txn.as_mut().and_then(|t| t.contexts.last_mut()) {
                    c.origin = Some(name);
                }
            }
            LogicalMessage::Type { .. } => {}
            LogicalMessage::Relation(r) => {
                let key = (r.namespace.clone(), r.name.clone());
                // A table is who it is by OID (pgoutput's relation id): a mapped table renamed while
                // streaming, or a change replayed from before a rename, still binds to its mapping.
                let by_oid = self
                    .mappings
                    .values()
                    .find(|m| m.oid != 0 && m.oid == r.id)
                    .cloned();
                let mapping = by_oid
                    .or_else(|| self.mappings.get(&key).cloned())
                    .filter(|_| !r.unplaced);
                if let Some(m) = &mapping {
                    if m.schema != r.namespace || m.table != r.name {
                        tracing::warn!(
                            configured = %m.qualified(),
                            in_stream = %format!("{}.{}", r.namespace, r.name),
                            "a mapped table arrives under another name (renamed); its changes are captured as the configured table"
                        );
                    }
                }
                let bound = BoundRelation::bind(r, mapping.as_deref(), &self.catalog)
                    .map_err(AssembleError::ConfigDrift)?;
                self.attribution.platform.on_relation(&bound.relation);
                self.relations.insert(bound.relation.id, bound);
            }
            LogicalMessage::Message {
                transactional,
                prefix,
                content,
                lsn,
            } => {
                // Non-transactional messages are not tied to any change: never used for attribution.
                if transactional && self.txn.is_some() && self.attribution.is_ddl(&prefix) {
                    return self.ddl_message(&content, out);
                }
                // Capture's marker of a cut context (see `capture::spill`): at LSN 0, where no message of
                // the WAL is (one with its prefix from the WAL is any message's). It takes no position:
                // it is in one decoding of a streamed transaction and perhaps not in another, and the
                // items after it must keep their ids.
                if lsn == 0 && self.attribution.is_cut(&prefix) {
                    if let (true, Some(t)) = (transactional, self.txn.as_mut()) {
                        let mut next = t.context().clone();
                        next.status = crate::vocab::ContextStatus::Uncertain;
                        next.message = None;
                        if next != *t.context() {
                            t.set_context(next);
                        }
                        // Like a first context message: items held for one are of unknown context too.
                        if t.first_context.is_none() {
                            t.first_context = Some(t.contexts.len() - 1);
                            self.first_context_arrived(out);
                        }
                    }
                    return Ok(Applied::Continue);
                }
                if let (true, Some(t)) = (transactional, self.txn.as_mut()) {
                    let seq = t.seq;
                    t.seq += 1;
                    let commit_time = t.begin.commit_time_us;
                    match self.attribution.event(&prefix, &content, commit_time) {
                        EventOutcome::Accepted(event) => {
                            // An audit event written by waltrail itself (e.g. an export), carried by the WAL
                            // so it gets a position and a deterministic id like every other item.
                            let ctx = TxnContext {
                                message: Some(event.actor),
                                sealed_event: true,
                                ..Default::default()
                            };
                            self.attribute_with(event.draft, seq, 0, &ctx, out);
                        }
                        EventOutcome::Rejected(draft) => {
                            // Nobody is named: whoever wrote it is not known, only what it claimed.
                            self.attribute_with(draft, seq, 0, &TxnContext::default(), out);
                        }
                        EventOutcome::NotEvent => {
                            let mut next = t.context().clone();
                            let is_context = self.attribution.on_message(
                                &mut next,
                                t.begin.xid,
                                &prefix,
                                &content,
                            );
                            if next != *t.context() {
                                t.set_context(next);
                                if t.pending_bytes >= self.max_pending_bytes {
                                    t.overflowed = true;
                                    self.attribute_held(out);
                                }
                            }
                            let Some(t) = self.txn.as_mut() else {
                                return Ok(Applied::Continue);
                            };
                            if is_context && t.first_context.is_none() {
                                // The first context message: it applies to the changes before it too.
                                t.first_context = Some(t.contexts.len() - 1);
                                self.first_context_arrived(out);
                            }
                        }
                    }
                }
            }
            LogicalMessage::Insert { relation_id, new } => {
                let rel = lookup(&self.relations, relation_id, "Insert")?;
                self.attribution.platform.on_insert(&rel.relation, &new);
                let draft = rel
                    .draft(RowChange::Insert(&new))
                    .map_err(AssembleError::Malformed)?;
                self.add_change(draft, out)?;
            }
            LogicalMessage::Update {
                relation_id,
                old,
                new,
            } => {
                let rel = lookup(&self.relations, relation_id, "Update")?;
                self.attribution.platform.on_update(
                    &rel.relation,
                    old.as_ref().map(|(_, t)| t),
                    &new,
                );
                let old_ref = old.as_ref().map(|(k, t)| (*k, t));
                let draft = rel
                    .draft(RowChange::Update {
                        old: old_ref,
                        new: &new,
                    })
                    .map_err(AssembleError::Malformed)?;
                self.add_change(draft, out)?;
            }
            LogicalMessage::Delete {
                relation_id,
                old,
                old_kind,
            } => {
                let rel = lookup(&self.relations, relation_id, "Delete")?;
                if old_kind == OldKind::Key
                    && rel
                        .mapping
                        .as_ref()
                        .is_some_and(|m| m.scope_outside_key(&rel.relation))
                    && self.warned_unscoped.insert(relation_id)
                {
                    tracing::warn!(
                        table = %format!("{}.{}", rel.relation.namespace, rel.relation.name),
                        "a delete arrived with its key alone (the table is not at REPLICA IDENTITY FULL): its \
                         organization is not in the WAL, so it is taken from the resource's last item in the \
                         trail (where the trail holds none, the item has no organization), and its other \
                         values are marked not sent. Set \
                         REPLICA IDENTITY FULL on the table (waltrail keeps it so unless \
                         postgres.set_replica_identity_full is false)"
                    );
                }
                self.attribution.platform.on_delete(&rel.relation, &old);
                let draft = rel
                    .draft(RowChange::Delete(&old, old_kind))
                    .map_err(AssembleError::Malformed)?;
                self.add_change(draft, out)?;
            }
            LogicalMessage::Truncate {
                relation_ids,
                options,
            } => {
                // What the statement said beside the tables (pgoutput's option bits).
                let named: Vec<&str> = [(1u8, "CASCADE"), (2, "RESTART IDENTITY")]
                    .into_iter()
                    .filter(|(bit, _)| options & bit != 0)
                    .map(|(_, name)| name)
                    .collect();
                // One item per mapped table: a partitioned table's partitions come one by one (under their
                // own names, mapped to it), and the item names them.
                let mut tables: Vec<(&BoundRelation, Vec<String>)> = Vec::new();
                for id in &relation_ids {
                    let rel = lookup(&self.relations, *id, "Truncate")?;
                    self.attribution.platform.on_truncate(&rel.relation);
                    if rel.mapping.is_none() {
                        continue;
                    }
                    let same = |(r, _): &&mut (&BoundRelation, Vec<String>)| {
                        r.relation.namespace == rel.relation.namespace
                            && r.relation.name == rel.relation.name
                    };
                    let entry = match tables.iter_mut().find(same) {
                        Some(e) => e,
                        None => {
                            tables.push((rel, Vec::new()));
                            tables.last_mut().ok_or_else(|| {
                                AssembleError::Malformed("truncate: no table".into())
                            })?
                        }
                    };
                    match &rel.relation.partition {
                        Some(p) => entry.1.push(p.clone()),
                        // The table's own rows (an inheritance parent's; a partitioned table has none and
                        // is not sent): named when members were emptied with it, so that the item tells
                        // `TRUNCATE parent` from `TRUNCATE child`.
                        None => entry.1.insert(
                            0,
                            format!("{}.{}", rel.relation.namespace, rel.relation.name),
                        ),
                    }
                }
                // The table alone: no list (its item is the table's).
                for (rel, members) in tables.iter_mut() {
                    let own = format!("{}.{}", rel.relation.namespace, rel.relation.name);
                    if members.len() == 1 && members[0] == own {
                        members.clear();
                    }
                }
                let mut drafts = Vec::new();
                for (rel, partitions) in tables {
                    let Some(m) = &rel.mapping else { continue };
                    let mut diff = serde_json::Map::new();
                    if !named.is_empty() {
                        diff.insert("options".into(), serde_json::json!(named));
                    }
                    if !partitions.is_empty() {
                        diff.insert("partitions".into(), serde_json::json!(partitions));
                    }
                    let table = format!("{}.{}", rel.relation.namespace, rel.relation.name);
                    drafts.push(ItemDraft {
                        action: action::TRUNCATED.into(),
                        organization_id: String::new(),
                        project_id: String::new(),
                        resource_type: m.resource_type.clone(),
                        resource_id: String::new(),
                        resource_display: table.clone(),
                        changed_fields: Vec::new(),
                        diff: serde_json::Value::Object(diff).to_string(),
                        table_name: table,
                        actor_refs: Default::default(),
                        // It empties the table for every organization at once: each one's admins see it.
                        platform_wide: m.is_org_scoped(),
                        previous_scope: None,
                    });
                }
                // One position for the whole TRUNCATE; its tables are told apart by `sub`.
                let seq = self.next_seq("Truncate")?;
                for (sub, d) in drafts.into_iter().enumerate() {
                    self.hold_or_attribute(d, seq, sub as u32, out)?;
                }
            }
        }
        Ok(Applied::Continue)
    }

    /// A DDL event message: an item per mapped table it names, attributed like the transaction's changes.
    /// One that cannot be read is recorded as such on the audit log: the DDL it stood for may have
    /// changed audited values.
    fn ddl_message(
        &mut self,
        content: &[u8],
        out: &mut Vec<AuditItem>,
    ) -> Result<Applied, AssembleError> {
        let seq = self.next_seq("Message")?;
        // A mapped table is who it is by OID (its own, or an ancestor's for a partition or child), whatever
        // its name and whatever this session saw: a replay finds the same (QA44 H2). By name only a table
        // capture did not find at its start.
        let mappings = &self.mappings;
        let mapped = |oid: u32, schema: &str, name: &str| {
            mappings
                .values()
                .find(|m| m.oid != 0 && m.oid == oid)
                .or_else(|| {
                    mappings
                        .get(&(schema.to_owned(), name.to_owned()))
                        .filter(|m| m.oid == 0)
                })
                .map(|m| m.as_ref())
        };
        let befores = &mut self
            .txn
            .as_mut()
            .ok_or(AssembleError::OutsideTransaction("Message"))?
            .befores;
        // An ALTER TABLE's columns before and after it (QA43 H3/H4): items only where they differ.
        let layout = crate::audit::ddl::layout(content, befores, mapped);
        let found = match layout {
            Some(Ok(crate::audit::ddl::Layout::Before)) => return Ok(Applied::Continue),
            Some(Ok(crate::audit::ddl::Layout::After(items))) => {
                if !items.is_empty() {
                    self.flush_ddl(out)?;
                }
                for (sub, d) in items.into_iter().enumerate() {
                    self.hold_or_attribute(d, seq, sub as u32, out)?;
                }
                return Ok(Applied::Continue);
            }
            Some(Err(why)) => Err(why),
            None => crate::audit::ddl::drafts(content, mapped),
        };
        let drafts = match found {
            Ok(d) => d,
            Err(why) => {
                tracing::warn!(%why, "a DDL event message could not be read: recorded as such");
                // It may have been a before-layout: the next after-layout cannot trust what it kept.
                if let Some(t) = self.txn.as_mut() {
                    t.befores.unreadable();
                }
                crate::audit::ddl::Drafts {
                    items: vec![crate::audit::ddl::unreadable(&why)],
                    rewrite: false,
                }
            }
        };
        if !drafts.rewrite {
            self.flush_ddl(out)?;
            for (sub, d) in drafts.items.into_iter().enumerate() {
                self.hold_or_attribute(d, seq, sub as u32, out)?;
            }
            return Ok(Applied::Continue);
        }
        // A rewrite names one relation: a partition of the table the held item is of joins it.
        for d in drafts.items {
            if let Some((held, _)) = self.ddl_held.as_mut() {
                if held.table_name == d.table_name {
                    crate::audit::ddl::merge_rewrite(held, &d);
                    continue;
                }
            }
            self.flush_ddl(out)?;
            self.ddl_held = Some((d, seq));
        }
        Ok(Applied::Continue)
    }

    fn flush_ddl(&mut self, out: &mut Vec<AuditItem>) -> Result<(), AssembleError> {
        match self.ddl_held.take() {
            Some((d, seq)) => self.hold_or_attribute(d, seq, 0, out),
            None => Ok(()),
        }
    }

    fn next_seq(&mut self, kind: &'static str) -> Result<u32, AssembleError> {
        let t = self
            .txn
            .as_mut()
            .ok_or(AssembleError::OutsideTransaction(kind))?;
        let seq = t.seq;
        t.seq += 1;
        Ok(seq)
    }

    fn add_change(
        &mut self,
        draft: Option<ItemDraft>,
        out: &mut Vec<AuditItem>,
    ) -> Result<(), AssembleError> {
        let seq = self.next_seq("change")?;
        let Some(mut d) = draft else {
            return Ok(());
        };
        self.drop_stale_actor_refs(&mut d);
        // A move is recorded in the scope it left too (sub 1), with the same diff.
        if let Some(p) = d.previous_scope.take() {
            let left = ItemDraft {
                organization_id: p.organization_id,
                project_id: p.project_id,
                resource_id: p.resource_id,
                ..d.clone()
            };
            self.hold_or_attribute(d, seq, 0, out)?;
            return self.hold_or_attribute(left, seq, 1, out);
        }
        self.hold_or_attribute(d, seq, 0, out)
    }

    /// A hard DELETE's `deleted_by` names its deleter only when the row is soft-deleted as the DELETE finds
    /// it (the draft says so) or when this transaction wrote it; otherwise it is what an earlier soft delete,
    /// since undone, left behind, and the row names nobody for this DELETE (QA48a H3). Its session column
    /// likewise: the old row's session is whoever wrote the row last, not the deleter, unless this
    /// transaction wrote it.
    fn drop_stale_actor_refs(&mut self, d: &mut ItemDraft) {
        let refs = &d.actor_refs;
        if refs.deleted_by_write == OwnWrite::Unused && refs.session_write == OwnWrite::Unused {
            return;
        }
        let Some(t) = self.txn.as_mut() else {
            return;
        };
        let hasher = &self.row_hasher;
        let mut stands = |said: OwnWrite, role: &str| {
            let key = || hasher.hash_one((role, d.table_name.as_str(), d.resource_id.as_str()));
            match said {
                OwnWrite::Written => {
                    if t.own_writes.len() < MAX_OWN_WRITES {
                        t.own_writes.insert(key());
                    }
                    true
                }
                OwnWrite::Unproven => t.own_writes.contains(&key()),
                OwnWrite::Unused => true,
            }
        };
        let deleted_by = stands(refs.deleted_by_write, "deleted_by");
        let session = stands(refs.session_write, "session");
        if !deleted_by {
            d.actor_refs.principal_id = None;
            d.actor_refs.principal_type = None;
        }
        if !session {
            d.actor_refs.session_id = None;
        }
    }

    fn hold_or_attribute(
        &mut self,
        d: ItemDraft,
        seq: u32,
        sub: u32,
        out: &mut Vec<AuditItem>,
    ) -> Result<(), AssembleError> {
        let (max, max_bytes) = (self.max_pending, self.max_pending_bytes);
        let t = self
            .txn
            .as_ref()
            .ok_or(AssembleError::OutsideTransaction("change"))?;
        let ctx = t.contexts.len() - 1;
        // Who as of the change: the platform tables stand where this change is in the stream. (A row that
        // names nobody, before any message, can only be named by a message or the origin: nothing of the
        // tables to take as of now, so it is resolved once, later.)
        let refs = &d.actor_refs;
        let actor = if t.first_context.is_none()
            && refs.principal_id.is_none()
            && refs.session_id.is_none()
        {
            None
        } else {
            Some(self.attribution.resolve(t.context(), refs)).filter(named)
        };
        // Out at once when nothing waits before it, a context message was seen (none later can apply to
        // it) and it named someone; or when nothing may wait.
        if max == 0
            || t.overflowed
            || (t.pending.is_empty() && t.first_context.is_some() && actor.is_some())
        {
            let actor = match actor {
                Some(a) => a,
                None => self.attribution.resolve(t.context(), &d.actor_refs),
            };
            self.emit(d, seq, sub, actor, out);
            return Ok(());
        }
        let Some(t) = self.txn.as_mut() else {
            return Ok(());
        };
        t.pending_bytes += d.approx_bytes();
        t.pending.push(Held {
            d,
            seq,
            sub,
            ctx,
            actor,
        });
        if t.pending.len() >= max || t.pending_bytes >= max_bytes {
            t.overflowed = true;
            self.attribute_held(out);
        }
        Ok(())
    }

    /// The transaction's first context message: the items before it take it (what they resolved to without
    /// it no longer counts), and those it names someone for go out, in order, up to the first that must
    /// wait for the commit.
    fn first_context_arrived(&mut self, out: &mut Vec<AuditItem>) {
        let Some(t) = self.txn.as_mut() else {
            return;
        };
        let Some(first) = t.first_context else {
            return;
        };
        let mut pending = std::mem::take(&mut t.pending);
        let Some(t) = self.txn.as_ref() else {
            return;
        };
        let ctx = t.contexts.get(first).unwrap_or(t.context());
        for h in pending.iter_mut().filter(|h| h.ctx < first) {
            h.ctx = first;
            h.actor = Some(self.attribution.resolve(ctx, &h.d.actor_refs)).filter(named);
        }
        let ready = pending.iter().take_while(|h| h.actor.is_some()).count();
        let rest = pending.split_off(ready);
        for h in pending {
            if let Some(a) = h.actor {
                self.emit(h.d, h.seq, h.sub, a, out);
            }
        }
        if let Some(t) = self.txn.as_mut() {
            t.pending_bytes = rest.iter().map(|h| h.d.approx_bytes()).sum();
            t.pending = rest;
        }
    }

    /// Hand out every held item, in order: each with its actor as of its change where that named someone,
    /// else as things stand now (at commit: a session or account written later in the transaction).
    fn attribute_held(&mut self, out: &mut Vec<AuditItem>) {
        let pending = match self.txn.as_mut() {
            Some(t) => {
                t.pending_bytes = 0;
                std::mem::take(&mut t.pending)
            }
            None => return,
        };
        for h in pending {
            let actor = match h.actor {
                Some(a) => a,
                None => match self.txn.as_ref() {
                    Some(t) => self.attribution.resolve(
                        t.contexts.get(h.ctx).unwrap_or(t.context()),
                        &h.d.actor_refs,
                    ),
                    None => return,
                },
            };
            self.emit(h.d, h.seq, h.sub, actor, out);
        }
    }

    fn attribute_with(
        &self,
        d: ItemDraft,
        seq: u32,
        sub: u32,
        ctx: &TxnContext,
        out: &mut Vec<AuditItem>,
    ) {
        let actor = self.attribution.resolve(ctx, &d.actor_refs);
        self.emit(d, seq, sub, actor, out);
    }

    /// One item out, with its actor.
    fn emit(&self, d: ItemDraft, seq: u32, sub: u32, actor: Actor, out: &mut Vec<AuditItem>) {
        let Some(t) = self.txn.as_ref() else {
            return;
        };
        let source_id = &self.source_id;
        let label = summary::actor_label(
            actor.principal_type.as_str(),
            &actor.principal_id,
            &actor.display_name,
            &actor.email,
            &actor.on_behalf_of_id,
            &actor.on_behalf_of_display,
        );
        let summary = summary::summary(
            &label,
            &d.action,
            &d.resource_type,
            &d.resource_display,
            &d.resource_id,
        );
        out.push(AuditItem {
            id: item::item_id(source_id, t.begin.final_lsn, seq, sub),
            event_id: t.event_id,
            source_id: source_id.clone(),
            occurred_at_us: t.begin.commit_time_us,
            commit_lsn: t.begin.final_lsn,
            xid: t.begin.xid,
            seq,
            action: d.action,
            actor,
            organization_id: d.organization_id,
            project_id: d.project_id,
            resource_type: d.resource_type,
            resource_id: d.resource_id,
            resource_display: d.resource_display,
            changed_fields: d.changed_fields,
            diff: d.diff,
            table_name: d.table_name,
            summary,
            platform_wide: d.platform_wide,
        });
    }
}

fn lookup<'a>(
    relations: &'a HashMap<u32, BoundRelation>,
    id: u32,
    kind: &'static str,
) -> Result<&'a BoundRelation, AssembleError> {
    relations
        .get(&id)
        .ok_or(AssembleError::UnknownRelation { kind, id })
}
