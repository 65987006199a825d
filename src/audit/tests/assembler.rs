//! The assembler: streams of decoded messages, transaction by transaction, and the items they give: when
//! each goes out, its position, who it is attributed to, and its id.

use bytes::Bytes;

use super::{config, relation, t, tuple, INT4, NULL, TEXT};
use crate::audit::assembler::{Applied, Assembler};
use crate::audit::attribution::Attribution;
use crate::audit::item::AuditItem;
use crate::audit::mapping::TableMapping;
use crate::capture::pgoutput::{
    Begin, Commit, LogicalMessage, OldKind, Relation, Tuple, TupleValue,
};
use crate::vocab::action;

/// Two mapped tables; `public.sessions` (relation 300) is not mapped.
const TABLES: &str = r#"
[security]
event_secret = "unit-test-event-secret-0123456789abcdef"

[[tables]]
table = "api_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
display_column = "name"
[tables.actor]
created_by = "created_by"
[[tables]]
table = "billing.invoices"
resource_type = "RESOURCE_TYPE_INVOICE"
"#;

const KEYS_REL: u32 = 100;
const INVOICES_REL: u32 = 200;
const SESSIONS_REL: u32 = 300;
const KEYS: &str = "public.api_keys";
const INVOICES: &str = "billing.invoices";
const SOURCE: &str = "7300000000000000001/platform/waltrail";
/// 2026-01-01T00:00:00Z.
const COMMIT_TIME_US: i64 = 1_767_225_600_000_000;

const EVENT_SECRET: &[u8] = b"unit-test-event-secret-0123456789abcdef";

/// An export event as the API writes it: sealed with `secret`, issued at `issued_at_us`.
fn sealed_export(secret: &[u8], issued_at_us: i64) -> LogicalMessage {
    let mut payload: crate::audit::attribution::EventPayload =
        serde_json::from_str(EXPORT_EVENT).expect("the export event parses");
    payload.issued_at_us = issued_at_us;
    payload.nonce = "n1".into();
    let sealed = Attribution::seal_event(
        &crate::audit::attribution::seal::SealKey::new(secret),
        "waltrail:event",
        &payload,
    );
    message(true, "waltrail:event", &sealed)
}

fn keys_relation() -> Relation {
    relation(
        KEYS_REL,
        "api_keys",
        &[("id", TEXT), ("name", TEXT), ("created_by", TEXT)],
    )
}

fn assembler_with(source_id: &str, max_pending: usize) -> Assembler {
    assembler_of(&config(TABLES), source_id, max_pending)
}

fn assembler_of(cfg: &crate::config::Config, source_id: &str, max_pending: usize) -> Assembler {
    let mappings = cfg
        .tables
        .iter()
        .map(|t| TableMapping::new(t.clone(), vec!["id".into()]))
        .collect();
    Assembler::new(
        source_id.into(),
        mappings,
        Attribution::new(cfg, Default::default()),
        max_pending,
    )
}

// The messages of the streams.

fn begin(final_lsn: u64, xid: u32) -> LogicalMessage {
    LogicalMessage::Begin(Begin {
        final_lsn,
        commit_time_us: COMMIT_TIME_US,
        xid,
    })
}

fn commit(commit_lsn: u64) -> LogicalMessage {
    LogicalMessage::Commit(Commit {
        flags: 0,
        commit_lsn,
        end_lsn: commit_lsn + 0x30,
        commit_time_us: COMMIT_TIME_US,
    })
}

fn rel_keys() -> LogicalMessage {
    LogicalMessage::Relation(keys_relation())
}

fn rel_invoices() -> LogicalMessage {
    LogicalMessage::Relation(relation(
        INVOICES_REL,
        "billing.invoices",
        &[("id", TEXT), ("amount", INT4)],
    ))
}

fn rel_sessions() -> LogicalMessage {
    LogicalMessage::Relation(relation(
        SESSIONS_REL,
        "public.sessions",
        &[("id", TEXT), ("account", TEXT)],
    ))
}

/// An API key row: id, name "key <id>", created_by NULL unless set.
fn key_row(id: &str, set: &[(&str, TupleValue)]) -> Tuple {
    tuple(
        &keys_relation(),
        &[t(id), t(&format!("key {id}")), NULL],
        set,
    )
}

fn insert_key(id: &str) -> LogicalMessage {
    LogicalMessage::Insert {
        relation_id: KEYS_REL,
        new: key_row(id, &[]),
    }
}

fn insert_key_by(id: &str, created_by: &str) -> LogicalMessage {
    LogicalMessage::Insert {
        relation_id: KEYS_REL,
        new: key_row(id, &[("created_by", t(created_by))]),
    }
}

fn rename_key(id: &str, name: &str) -> LogicalMessage {
    LogicalMessage::Update {
        relation_id: KEYS_REL,
        old: Some((OldKind::Full, key_row(id, &[]))),
        new: key_row(id, &[("name", t(name))]),
    }
}

fn delete_key(id: &str) -> LogicalMessage {
    LogicalMessage::Delete {
        relation_id: KEYS_REL,
        old_kind: OldKind::Full,
        old: key_row(id, &[]),
    }
}

fn insert_session(id: &str) -> LogicalMessage {
    LogicalMessage::Insert {
        relation_id: SESSIONS_REL,
        new: vec![t(id), t("alice")],
    }
}

fn truncate(relation_ids: &[u32]) -> LogicalMessage {
    LogicalMessage::Truncate {
        options: 0,
        relation_ids: relation_ids.to_vec(),
    }
}

fn message(transactional: bool, prefix: &str, json: &str) -> LogicalMessage {
    LogicalMessage::Message {
        transactional,
        lsn: 0,
        prefix: prefix.into(),
        content: Bytes::copy_from_slice(json.as_bytes()),
    }
}

/// The platform's context message (`pg_logical_emit_message(true, 'waltrail', ...)`) naming an actor.
fn context(actor_id: &str) -> LogicalMessage {
    message(
        true,
        "waltrail",
        &format!(r#"{{"actor_id":"{actor_id}","source":"api"}}"#),
    )
}

/// The event waltrail writes when a key exports items (`<prefix>:event`).
const EXPORT_EVENT: &str = r#"{
    "action": "AUDIT_ACTION_EXPORTED",
    "resource_type": "RESOURCE_TYPE_AUDIT_LOG",
    "organization_id": "org_1",
    "actor": {"actor_id": "siem", "actor_type": "service_key"}
}"#;

/// What one item must be: emitted while applying message `at` of the stream, at position `seq` of its
/// transaction, with this action, table, resource id and actor (principal id; "" for nobody).
#[derive(Debug, PartialEq)]
struct Out {
    at: usize,
    seq: u32,
    action: String,
    table: String,
    resource_id: String,
    actor: String,
}

fn out(at: usize, seq: u32, action: &str, table: &str, id: &str, actor: &str) -> Out {
    Out {
        at,
        seq,
        action: action.into(),
        table: table.into(),
        resource_id: id.into(),
        actor: actor.into(),
    }
}

/// The items a stream gave, each with the index of the message that released it, and the error that
/// stopped it (with the index of the message refused), if any.
struct Run {
    items: Vec<(usize, AuditItem)>,
    error: Option<(usize, String)>,
}

/// Apply a stream to an assembler of `source`, checking on the way what holds for every stream: only a
/// Commit may be confirmed (and it is the Commit received), and items carry their source and their
/// transaction's commit LSN, xid and time.
fn run(asm: &mut Assembler, source: &str, stream: &[LogicalMessage]) -> Run {
    let mut items = Vec::new();
    let mut open: Option<Begin> = None;
    for (i, msg) in stream.iter().enumerate() {
        if let LogicalMessage::Begin(b) = msg {
            open.get_or_insert(b.clone());
        }
        let mut got = Vec::new();
        let applied = match asm.apply(msg.clone(), &mut got) {
            Ok(a) => a,
            Err(e) => {
                return Run {
                    items,
                    error: Some((i, e.to_string())),
                }
            }
        };
        match (msg, &applied) {
            (LogicalMessage::Commit(c), Applied::Committed(done)) => assert_eq!(c, done),
            (LogicalMessage::Commit(_), _) => panic!("message {i}: Commit gave {applied:?}"),
            (_, Applied::Continue) => {}
            (_, _) => panic!("message {i}: {} gave {applied:?}", msg.kind()),
        }
        for item in got {
            let b = open
                .as_ref()
                .unwrap_or_else(|| panic!("message {i}: item outside a transaction"));
            assert_eq!(
                (
                    item.commit_lsn,
                    item.xid,
                    item.occurred_at_us,
                    item.source_id.as_str()
                ),
                (b.final_lsn, b.xid, b.commit_time_us, source),
                "message {i}: item of its transaction"
            );
            items.push((i, item));
        }
        if let LogicalMessage::Commit(_) = msg {
            open = None;
        }
    }
    Run { items, error: None }
}

struct Case {
    name: &'static str,
    max_pending: usize,
    stream: Vec<LogicalMessage>,
    items: Vec<Out>,
    /// The stream stops at its last message with an error containing this phrase.
    error: Option<&'static str>,
}

fn case(name: &'static str, stream: Vec<LogicalMessage>, items: Vec<Out>) -> Case {
    Case {
        name,
        max_pending: 100,
        stream,
        items,
        error: None,
    }
}

fn refused(name: &'static str, stream: Vec<LogicalMessage>, error: &'static str) -> Case {
    Case {
        name,
        max_pending: 100,
        stream,
        items: Vec::new(),
        error: Some(error),
    }
}

#[test]
fn streams_become_items() {
    use action::{CREATED, DELETED, TRUNCATED, UPDATED};
    let cases = vec![
        case(
            "no context: the item goes out at Commit, unattributed",
            vec![begin(0x100, 7), rel_keys(), insert_key("k1"), commit(0x100)],
            vec![out(3, 0, CREATED, KEYS, "k1", "")],
        ),
        case(
            "context first: each item goes out at once, attributed",
            vec![
                begin(0x100, 7),
                rel_keys(),
                context("alice"),
                insert_key("k1"),
                insert_key("k2"),
                commit(0x100),
            ],
            vec![
                out(3, 1, CREATED, KEYS, "k1", "alice"),
                out(4, 2, CREATED, KEYS, "k2", "alice"),
            ],
        ),
        case(
            "context after the changes: they wait for it and take it",
            vec![
                begin(0x100, 7),
                rel_keys(),
                insert_key("k1"),
                insert_key("k2"),
                context("bob"),
                commit(0x100),
            ],
            vec![
                out(4, 0, CREATED, KEYS, "k1", "bob"),
                out(4, 1, CREATED, KEYS, "k2", "bob"),
            ],
        ),
        case(
            "each context applies to the changes after it; earlier ones get the first",
            vec![
                begin(0x100, 7),
                rel_keys(),
                insert_key("k1"),
                context("alice"),
                insert_key("k2"),
                context("bob"),
                insert_key("k3"),
                commit(0x100),
            ],
            vec![
                out(3, 0, CREATED, KEYS, "k1", "alice"),
                out(4, 2, CREATED, KEYS, "k2", "alice"),
                out(6, 4, CREATED, KEYS, "k3", "bob"),
            ],
        ),
        Case {
            max_pending: 2,
            ..case(
                "max_pending reached: held items go out as they stand, and the rest at once",
                vec![
                    begin(0x100, 7),
                    rel_keys(),
                    insert_key("k1"),
                    insert_key("k2"),
                    insert_key("k3"),
                    context("alice"),
                    insert_key("k4"),
                    commit(0x100),
                ],
                vec![
                    out(3, 0, CREATED, KEYS, "k1", ""),
                    out(3, 1, CREATED, KEYS, "k2", ""),
                    out(4, 2, CREATED, KEYS, "k3", ""),
                    out(6, 4, CREATED, KEYS, "k4", "alice"),
                ],
            )
        },
        Case {
            max_pending: 0,
            ..case(
                "max_pending 0: nothing waits",
                vec![
                    begin(0x100, 7),
                    rel_keys(),
                    insert_key("k1"),
                    context("alice"),
                    commit(0x100),
                ],
                vec![out(2, 0, CREATED, KEYS, "k1", "")],
            )
        },
        case(
            "non-transactional messages are never context, and take no position",
            vec![
                begin(0x100, 7),
                rel_keys(),
                message(false, "waltrail", r#"{"actor_id":"mallory"}"#),
                insert_key("k1"),
                message(false, "waltrail", r#"{"actor_id":"mallory"}"#),
                commit(0x100),
            ],
            vec![out(5, 0, CREATED, KEYS, "k1", "")],
        ),
        case(
            "a message with another prefix is not context",
            vec![
                begin(0x100, 7),
                rel_keys(),
                insert_key("k1"),
                message(true, "other_app", r#"{"actor_id":"mallory"}"#),
                commit(0x100),
            ],
            vec![out(4, 0, CREATED, KEYS, "k1", "")],
        ),
        case(
            "context does not outlive its transaction",
            vec![
                begin(0x100, 7),
                rel_keys(),
                context("alice"),
                insert_key("k1"),
                commit(0x100),
                begin(0x200, 8),
                insert_key("k2"),
                commit(0x200),
            ],
            vec![
                out(3, 1, CREATED, KEYS, "k1", "alice"),
                out(7, 0, CREATED, KEYS, "k2", ""),
            ],
        ),
        case(
            "no message: the row's created_by names the actor",
            vec![
                begin(0x100, 7),
                rel_keys(),
                insert_key_by("k1", "carol"),
                commit(0x100),
            ],
            vec![out(3, 0, CREATED, KEYS, "k1", "carol")],
        ),
        case(
            "a message naming an actor wins over the row",
            vec![
                begin(0x100, 7),
                rel_keys(),
                insert_key_by("k1", "carol"),
                context("alice"),
                commit(0x100),
            ],
            vec![out(3, 0, CREATED, KEYS, "k1", "alice")],
        ),
        case(
            "update and delete, in order",
            vec![
                begin(0x100, 7),
                rel_keys(),
                rename_key("k1", "renamed"),
                delete_key("k1"),
                commit(0x100),
            ],
            vec![
                out(4, 0, UPDATED, KEYS, "k1", ""),
                out(4, 1, DELETED, KEYS, "k1", ""),
            ],
        ),
        case(
            "an update that changes nothing gives no item but keeps its position",
            vec![
                begin(0x100, 7),
                rel_keys(),
                rename_key("k1", "key k1"),
                insert_key("k2"),
                commit(0x100),
            ],
            vec![out(4, 1, CREATED, KEYS, "k2", "")],
        ),
        case(
            "a table not mapped: its Relation is accepted, its changes give no item but keep their position",
            vec![
                begin(0x100, 7),
                rel_sessions(),
                rel_keys(),
                insert_session("s1"),
                insert_key("k1"),
                commit(0x100),
            ],
            vec![out(5, 1, CREATED, KEYS, "k1", "")],
        ),
        case(
            "truncate: one item per mapped table, one position for all",
            vec![
                begin(0x100, 7),
                rel_keys(),
                rel_sessions(),
                rel_invoices(),
                truncate(&[KEYS_REL, SESSIONS_REL, INVOICES_REL]),
                insert_key("k1"),
                commit(0x100),
            ],
            vec![
                out(6, 0, TRUNCATED, KEYS, "", ""),
                out(6, 0, TRUNCATED, INVOICES, "", ""),
                out(6, 1, CREATED, KEYS, "k1", ""),
            ],
        ),
        case(
            "truncate of a table not mapped: no item",
            vec![
                begin(0x100, 7),
                rel_sessions(),
                truncate(&[SESSIONS_REL]),
                commit(0x100),
            ],
            vec![],
        ),
        case(
            "a Relation stays known after its transaction",
            vec![
                begin(0x100, 7),
                rel_keys(),
                commit(0x100),
                begin(0x200, 8),
                insert_key("k1"),
                commit(0x200),
            ],
            vec![out(5, 0, CREATED, KEYS, "k1", "")],
        ),
        case(
            "waltrail's own audit event: an item of its own, with its own actor",
            vec![
                begin(0x100, 7),
                sealed_export(EVENT_SECRET, COMMIT_TIME_US),
                commit(0x100),
            ],
            vec![out(1, 0, action::EXPORTED, "", "", "siem")],
        ),
        case(
            "an unsealed event (anyone may emit one) is recorded as rejected, naming nobody",
            vec![
                begin(0x100, 7),
                message(true, "waltrail:event", EXPORT_EVENT),
                commit(0x100),
            ],
            vec![out(1, 0, action::REJECTED, "", "", "")],
        ),
        case(
            "an event sealed with another secret is rejected",
            vec![
                begin(0x100, 7),
                sealed_export(b"some-other-deployments-secret-000000", COMMIT_TIME_US),
                commit(0x100),
            ],
            vec![out(1, 0, action::REJECTED, "", "", "")],
        ),
        case(
            "a sealed event copied into a transaction an hour later is rejected",
            vec![
                begin(0x100, 7),
                sealed_export(EVENT_SECRET, COMMIT_TIME_US - 3_600_000_000),
                commit(0x100),
            ],
            vec![out(1, 0, action::REJECTED, "", "", "")],
        ),
        refused(
            "a change of a relation id no Relation message introduced",
            vec![
                begin(0x100, 7),
                rel_keys(),
                LogicalMessage::Insert {
                    relation_id: 999,
                    new: vec![t("x")],
                },
            ],
            "Insert message for relation id 999, which no Relation message introduced",
        ),
        refused(
            "a delete of a table whose Relation was not received (in this session)",
            vec![begin(0x100, 7), delete_key("k1")],
            "Delete message for relation id 100, which no Relation message introduced",
        ),
        refused(
            "a truncate naming an unknown relation id",
            vec![begin(0x100, 7), rel_keys(), truncate(&[KEYS_REL, 999])],
            "Truncate message for relation id 999",
        ),
        refused(
            "Commit without Begin",
            vec![rel_keys(), commit(0x100)],
            "Commit message outside a transaction",
        ),
        refused(
            "a change outside a transaction",
            vec![rel_keys(), insert_key("k1")],
            "change message outside a transaction",
        ),
        refused(
            "Begin inside a transaction",
            vec![begin(0x100, 7), rel_keys(), insert_key("k1"), begin(0x200, 8)],
            "Begin inside a transaction (xid 7 still open)",
        ),
        refused(
            "a Commit whose LSN is not the Begin's",
            vec![begin(0x100, 7), rel_keys(), insert_key("k1"), commit(0x200)],
            "Commit at 200 does not close the open transaction (its final LSN is 100)",
        ),
        refused(
            "a tuple that does not match its Relation",
            vec![
                begin(0x100, 7),
                rel_keys(),
                LogicalMessage::Insert {
                    relation_id: KEYS_REL,
                    new: vec![t("k1"), t("name")],
                },
            ],
            "malformed change: new tuple of public.api_keys has 2 columns, its Relation message 3",
        ),
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let mut asm = assembler_with(SOURCE, c.max_pending);
        let run = run(&mut asm, SOURCE, &c.stream);
        let got: Vec<Out> = run
            .items
            .iter()
            .map(|(at, i)| {
                out(
                    *at,
                    i.seq,
                    &i.action,
                    &i.table_name,
                    &i.resource_id,
                    &i.actor.principal_id,
                )
            })
            .collect();
        if got != c.items {
            failures.push(format!(
                "{}:\n    got  {got:?}\n    want {:?}",
                c.name, c.items
            ));
        }
        let last = c.stream.len() - 1;
        match (&run.error, c.error) {
            (None, None) => {}
            (Some((at, e)), Some(phrase)) if *at == last && e.contains(phrase) => {}
            (got, want) => failures.push(format!(
                "{}: error {got:?}, want {want:?} at message {last}",
                c.name
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Truncate items name the table they emptied and touch no organization.
#[test]
fn truncate_items_name_their_table() {
    let mut asm = assembler_with(SOURCE, 100);
    let run = run(
        &mut asm,
        SOURCE,
        &[
            begin(0x100, 7),
            rel_keys(),
            rel_invoices(),
            truncate(&[KEYS_REL, INVOICES_REL]),
            commit(0x100),
        ],
    );
    assert!(run.error.is_none(), "{:?}", run.error);
    let got: Vec<(&str, &str, &str, &str)> = run
        .items
        .iter()
        .map(|(_, i)| {
            (
                i.resource_type.as_str(),
                i.resource_display.as_str(),
                i.organization_id.as_str(),
                i.diff.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("RESOURCE_TYPE_API_KEY", KEYS, "", "{}"),
            ("RESOURCE_TYPE_INVOICE", INVOICES, "", "{}"),
        ]
    );
}

/// Item ids depend only on the source, the commit LSN and the position in the transaction, so a replay
/// after a crash writes the very same ids and the store keeps one copy.
#[test]
fn item_ids_are_deterministic() {
    let stream = |lsn: u64| {
        vec![
            begin(lsn, 7),
            rel_keys(),
            rel_invoices(),
            insert_key("k1"),
            context("alice"),
            rename_key("k1", "renamed"),
            truncate(&[KEYS_REL, INVOICES_REL]),
            commit(lsn),
            begin(lsn + 0x100, 8),
            delete_key("k1"),
            commit(lsn + 0x100),
        ]
    };
    let ids = |source: &str, lsn: u64| -> Vec<(uuid::Uuid, uuid::Uuid)> {
        let run = run(&mut assembler_with(source, 100), source, &stream(lsn));
        assert!(run.error.is_none(), "{:?}", run.error);
        run.items.iter().map(|(_, i)| (i.id, i.event_id)).collect()
    };

    let first = ids(SOURCE, 0x1000);
    assert_eq!(first.len(), 5, "{first:?}");

    // The same stream, in a new assembler: the same ids.
    assert_eq!(ids(SOURCE, 0x1000), first, "same stream, same ids");

    // The same assembler after a reconnect, replaying from the last confirmed commit: the same ids.
    let mut asm = assembler_with(SOURCE, 100);
    let once = run(&mut asm, SOURCE, &stream(0x1000));
    asm.reset_session();
    let again = run(&mut asm, SOURCE, &stream(0x1000));
    let pairs = |r: &Run| -> Vec<(uuid::Uuid, uuid::Uuid)> {
        r.items.iter().map(|(_, i)| (i.id, i.event_id)).collect()
    };
    assert_eq!(pairs(&once), first);
    assert_eq!(pairs(&again), first, "replay after reset_session");

    // Every item has its own id; a transaction's items share one event id, another's differ.
    let mut unique: Vec<uuid::Uuid> = first.iter().map(|(id, _)| *id).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), first.len(), "ids are distinct: {first:?}");
    let events: Vec<uuid::Uuid> = first.iter().map(|(_, e)| *e).collect();
    assert!(events[..4].iter().all(|e| *e == events[0]), "{events:?}");
    assert_ne!(events[4], events[0]);

    // Another commit LSN, or another source: no id in common.
    for (what, other) in [
        ("another commit LSN", ids(SOURCE, 0x2000)),
        ("another source", ids("other-source", 0x1000)),
    ] {
        assert_eq!(other.len(), first.len(), "{what}");
        for (id, event) in &other {
            assert!(
                first.iter().all(|(i, e)| i != id && e != event),
                "{what}: {id} or {event} also in the first run"
            );
        }
    }
}

/// An assembler whose deployment shares `secret` with the platform for sealed context messages.
fn assembler_sealed(secret: &str) -> Assembler {
    let cfg = config(&format!(
        "{TABLES}\n[attribution]\ncontext_secret = \"{secret}\"\n"
    ));
    assembler_of(&cfg, SOURCE, 100)
}

/// QA34 M3: a rejected context message is the transaction's last word: the items after it are attributed
/// from the row alone, as their status says, not from an earlier message; a message that is no context at
/// all changes nothing.
#[test]
fn a_rejected_context_takes_the_earlier_one_away() {
    const SECRET: &str = "unit-test-context-secret-0123456789abcdef";
    let key = crate::audit::attribution::seal::SealKey::new(SECRET.as_bytes());
    let body = r#"{"actor_id":"platform_user"}"#;
    let sealed = serde_json::json!({"ctx": body, "sig": key.seal(body.as_bytes())}).to_string();
    let bad = serde_json::json!({"ctx": r#"{"actor_id":"forged"}"#, "sig": "00"}).to_string();
    let mut asm = assembler_sealed(SECRET);
    let run = run(
        &mut asm,
        SOURCE,
        &[
            begin(0x100, 7),
            rel_keys(),
            message(true, "waltrail", &sealed),
            insert_key_by("k1", "row_user"),
            message(true, "waltrail", &bad),
            insert_key_by("k2", "row_user"),
            message(true, "waltrail", "not json"),
            insert_key_by("k3", "row_user"),
            commit(0x100),
        ],
    );
    assert!(run.error.is_none(), "{:?}", run.error);
    let got: Vec<(&str, &str, &str)> = run
        .items
        .iter()
        .map(|(_, i)| {
            (
                i.resource_id.as_str(),
                i.actor.principal_id.as_str(),
                i.actor.context_status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("k1", "platform_user", "SIGNED"),
            ("k2", "row_user", "REJECTED_BAD_SIGNATURE"),
            ("k3", "row_user", "REJECTED_BAD_SIGNATURE"),
        ]
    );
}

/// QA34 H2: tiny messages that each change the context (a bad seal, then no JSON, over and over) after a
/// large one no longer keep a copy of the large context each: only the versions a held item refers to.
#[test]
fn context_messages_hold_no_copies_nothing_refers_to() {
    const SECRET: &str = "unit-test-context-secret-0123456789abcdef";
    let big: serde_json::Map<String, serde_json::Value> = [
        "actor_id",
        "actor_display",
        "actor_email",
        "request_id",
        "user_agent",
    ]
    .iter()
    .map(|f| (f.to_string(), serde_json::Value::String("x".repeat(1000))))
    .collect();
    let big = serde_json::Value::Object(big).to_string();
    for held in [false, true] {
        let mut asm = assembler_sealed(SECRET);
        let mut stream = vec![begin(0x100, 7), rel_keys()];
        if held {
            // Names nobody: waits for the commit, referring to the context it came under.
            stream.push(insert_key("k0"));
        }
        stream.push(message(true, "waltrail", &big));
        for i in 0..2_000 {
            let m = if i % 2 == 0 {
                r#"{"ctx":"","sig":""}"#
            } else {
                r#"{"actor_id":"a"}"#
            };
            stream.push(message(true, "waltrail", m));
        }
        let r = run(&mut asm, SOURCE, &stream);
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(
            asm.contexts_held() <= 3,
            "held {}: {} contexts",
            held,
            asm.contexts_held()
        );
    }
}

/// QA34 M2: a seal bound to its transaction (`xid`) is trusted in that transaction only; a copy replayed
/// in another is rejected, and the epoch above the 32 bits the stream carries does not matter.
#[test]
fn a_bound_seal_holds_in_its_own_transaction_only() {
    const SECRET: &str = "unit-test-context-secret-0123456789abcdef";
    let key = crate::audit::attribution::seal::SealKey::new(SECRET.as_bytes());
    let body = r#"{"actor_id":"platform_user"}"#;
    let bound = |xid: u64| {
        serde_json::json!({
            "ctx": body,
            "xid": xid.to_string(),
            "sig": key.seal(format!("{xid}\n{body}").as_bytes()),
        })
        .to_string()
    };
    let mut asm = assembler_sealed(SECRET);
    let run = run(
        &mut asm,
        SOURCE,
        &[
            begin(0x100, 7),
            rel_keys(),
            message(true, "waltrail", &bound((3u64 << 32) + 7)),
            insert_key_by("k1", "row_user"),
            commit(0x100),
            begin(0x200, 8),
            message(true, "waltrail", &bound((3u64 << 32) + 7)),
            insert_key_by("k2", "row_user"),
            commit(0x200),
        ],
    );
    assert!(run.error.is_none(), "{:?}", run.error);
    let got: Vec<(&str, &str, &str)> = run
        .items
        .iter()
        .map(|(_, i)| {
            (
                i.resource_id.as_str(),
                i.actor.principal_id.as_str(),
                i.actor.context_status.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("k1", "platform_user", "SIGNED"),
            ("k2", "row_user", "REJECTED_BAD_SIGNATURE"),
        ]
    );
}

/// QA45 H1 / QA46: capture's marker of a cut context (`<prefix>:cut` at LSN 0) takes the earlier context
/// away (UNCERTAIN) and no position; the same prefix from the WAL (any LSN but 0) is anyone's message
/// and changes nothing.
#[test]
fn a_cut_marker_takes_the_context_away_and_no_position_but_a_forged_one_does_nothing() {
    let cut = |lsn: u64| LogicalMessage::Message {
        transactional: true,
        lsn,
        prefix: "waltrail:cut".into(),
        content: Bytes::new(),
    };
    let mut asm = assembler_with(SOURCE, 1000);
    let run = run(
        &mut asm,
        SOURCE,
        &[
            begin(0x100, 7),
            rel_keys(),
            context("alice"),
            insert_key("k1"),
            cut(0x1234),
            insert_key("k2"),
            cut(0),
            insert_key("k3"),
            commit(0x100),
        ],
    );
    assert!(run.error.is_none(), "{:?}", run.error);
    let got: Vec<(&str, u32, &str, &str)> = run
        .items
        .iter()
        .map(|(_, i)| {
            (
                i.resource_id.as_str(),
                i.seq,
                i.actor.principal_id.as_str(),
                i.actor.context_status.as_str(),
            )
        })
        .collect();
    // The context message takes seq 0, the forged marker seq 2 (any message from the WAL takes one);
    // capture's own marker none.
    assert_eq!(
        got,
        [
            ("k1", 1, "alice", "UNSIGNED"),
            ("k2", 3, "alice", "UNSIGNED"),
            ("k3", 4, "", "UNCERTAIN"),
        ]
    );
}
