//! Mapping rules: which action a row change is, what its diff shows and hides, and what it says about the
//! resource and who acted.

use serde_json::{json, Value};

use super::{config, info, relation, t, tuple, INT4, NULL, TEXT, TIMESTAMPTZ, TOAST};
use crate::audit::mapping::{
    derived_action_mismatches, from_catalog, BoundRelation, ItemDraft, RowChange, TableMapping,
};
use crate::audit::value::TypeCatalog;
use crate::capture::catalog::TableInfo;
use crate::capture::pgoutput::{OldKind, Relation, Tuple, TupleValue};
use crate::vocab::{action, PrincipalType};

/// The API keys table of the fixtures: every kind of mapping rule on one table.
const API_KEYS: &str = r#"
[[tables]]
table = "api_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
display_column = "name"
organization_column = "org_id"
project_column = "project_id"
ignore_columns = ["last_used_at"]
redact_columns = ["key_hash"]
soft_delete_column = "deleted_at"
[tables.actor]
created_by = "created_by"
updated_by = "updated_by"
deleted_by = "deleted_by"
[[tables.derived_actions]]
action = "AUDIT_ACTION_ROTATED"
changed = ["key_hash"]
[[tables.derived_actions]]
action = "AUDIT_ACTION_REVOKED"
column = "status"
from = "active"
to = "revoked"
[[tables.derived_actions]]
action = "AUDIT_ACTION_REACTIVATED"
column = "status"
to = "active"
"#;

const COLUMNS: [(&str, u32); 12] = [
    ("id", INT4),
    ("org_id", TEXT),
    ("project_id", TEXT),
    ("name", TEXT),
    ("key_hash", TEXT),
    ("status", TEXT),
    ("last_used_at", TIMESTAMPTZ),
    ("deleted_at", TIMESTAMPTZ),
    ("created_by", TEXT),
    ("updated_by", TEXT),
    ("deleted_by", TEXT),
    ("description", TEXT),
];

/// Values of the redacted column; neither may appear anywhere in an item.
const OLD_SECRET: &str = "sk_live_OLD_SECRET_4f9a";
const NEW_SECRET: &str = "sk_live_NEW_SECRET_b21c";

fn api_keys_relation() -> Relation {
    relation(16_401, "public.api_keys", &COLUMNS)
}

/// The key as it is before each change.
fn base_row() -> Vec<TupleValue> {
    vec![
        t("7"),
        t("org_1"),
        t("proj_1"),
        t("prod"),
        t(OLD_SECRET),
        t("active"),
        t("2026-01-02 03:04:05+00"),
        NULL,
        t("acct_alice"),
        t("acct_bob"),
        NULL,
        t("the production key"),
    ]
}

/// The key row with some columns set otherwise.
fn row(set: &[(&str, TupleValue)]) -> Tuple {
    tuple(&api_keys_relation(), &base_row(), set)
}

/// The API keys mapping bound to its Relation, as the assembler does on a Relation message.
fn api_keys_bound() -> BoundRelation {
    let cfg = config(API_KEYS);
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
    BoundRelation::bind(api_keys_relation(), Some(&mapping), &TypeCatalog::default())
        .expect("every configured column is in the relation")
}

enum Change {
    Insert(Tuple),
    /// An update under REPLICA IDENTITY FULL: the whole old row comes with it.
    Update(Tuple, Tuple),
    Delete(Tuple),
}

/// What the item of a change must say.
struct Item {
    action: &'static str,
    resource_id: &'static str,
    display: &'static str,
    organization: &'static str,
    project: &'static str,
    changed: &'static [&'static str],
    diff: Value,
    /// The actor the row names, as an ACCOUNT (the table's principal type).
    actor: Option<&'static str>,
}

/// Every column but the ignored one, in column order: what an insert or a delete reports.
const ALL_BUT_IGNORED: &[&str] = &[
    "id",
    "org_id",
    "project_id",
    "name",
    "key_hash",
    "status",
    "deleted_at",
    "created_by",
    "updated_by",
    "deleted_by",
    "description",
];

/// The item of a change of key 7 ("prod", org_1, proj_1) that names acct_bob; cases set what differs.
fn key7(action: &'static str, changed: &'static [&'static str], diff: Value) -> Item {
    Item {
        action,
        resource_id: "7",
        display: "prod",
        organization: "org_1",
        project: "proj_1",
        changed,
        diff,
        actor: Some("acct_bob"),
    }
}

enum Expect {
    Item(Item),
    NoItem,
    Error(&'static str),
}

/// Every part of a draft a user can read, to check that a secret is in none of them.
fn readable(d: &ItemDraft) -> String {
    format!(
        "{} {} {} {} {} {} {:?} {} {} {:?}",
        d.action,
        d.organization_id,
        d.project_id,
        d.resource_type,
        d.resource_id,
        d.resource_display,
        d.changed_fields,
        d.diff,
        d.table_name,
        d.actor_refs
    )
}

fn compare(d: &ItemDraft, want: &Item) -> Vec<String> {
    let mut bad = Vec::new();
    let mut field = |what: &str, got: &str, want: &str| {
        if got != want {
            bad.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    };
    field("action", &d.action, want.action);
    field("resource_id", &d.resource_id, want.resource_id);
    field("resource_display", &d.resource_display, want.display);
    field("organization_id", &d.organization_id, want.organization);
    field("project_id", &d.project_id, want.project);
    field("resource_type", &d.resource_type, "RESOURCE_TYPE_API_KEY");
    field("table_name", &d.table_name, "public.api_keys");
    if d.changed_fields != want.changed {
        bad.push(format!(
            "changed_fields: got {:?}, want {:?}",
            d.changed_fields, want.changed
        ));
    }
    match serde_json::from_str::<Value>(&d.diff) {
        Ok(diff) if diff == want.diff => {}
        Ok(diff) => bad.push(format!("diff: got {diff}, want {}", want.diff)),
        Err(e) => bad.push(format!("diff is not JSON ({e}): {}", d.diff)),
    }
    let actor = (
        d.actor_refs.principal_id.as_deref(),
        d.actor_refs.principal_type,
    );
    let want_actor = (want.actor, want.actor.map(|_| PrincipalType::Account));
    if actor != want_actor {
        bad.push(format!("actor: got {actor:?}, want {want_actor:?}"));
    }
    bad
}

#[test]
fn row_changes_become_items_by_the_tables_rules() {
    use Change::*;
    use Expect::NoItem;
    let item = Expect::Item;
    let cases: Vec<(&str, Change, Expect)> = vec![
        (
            "insert: CREATED, id/display/org/project from their columns, every column but the ignored one, created_by acts",
            Insert(row(&[])),
            item(Item {
                changed: ALL_BUT_IGNORED,
                diff: json!({
                    "id": {"after": 7},
                    "org_id": {"after": "org_1"},
                    "project_id": {"after": "proj_1"},
                    "name": {"after": "prod"},
                    "key_hash": {"redacted": true},
                    "status": {"after": "active"},
                    "deleted_at": {"after": null},
                    "created_by": {"after": "acct_alice"},
                    "updated_by": {"after": "acct_bob"},
                    "deleted_by": {"after": null},
                    "description": {"after": "the production key"},
                }),
                actor: Some("acct_alice"),
                ..key7(action::CREATED, &[], json!({}))
            }),
        ),
        (
            "rename: UPDATED, only the name in the diff, the item shows the new name",
            Update(row(&[]), row(&[("name", t("prod-eu"))])),
            item(Item {
                display: "prod-eu",
                ..key7(
                    action::UPDATED,
                    &["name"],
                    json!({"name": {"before": "prod", "after": "prod-eu"}}),
                )
            }),
        ),
        (
            "two columns changed, one the project: a move, both in the diff, fields in column order",
            Update(
                row(&[]),
                row(&[("description", t("rotated monthly")), ("project_id", t("proj_2"))]),
            ),
            item(Item {
                project: "proj_2",
                ..key7(
                    action::MOVED,
                    &["project_id", "description"],
                    json!({
                        "project_id": {"before": "proj_1", "after": "proj_2"},
                        "description": {"before": "the production key", "after": "rotated monthly"},
                    }),
                )
            }),
        ),
        (
            "a move that also matches a derived action (revoked): MOVED, the revocation in the diff",
            Update(
                row(&[]),
                row(&[("status", t("revoked")), ("org_id", t("org_2"))]),
            ),
            item(Item {
                organization: "org_2",
                ..key7(
                    action::MOVED,
                    &["org_id", "status"],
                    json!({
                        "org_id": {"before": "org_1", "after": "org_2"},
                        "status": {"before": "active", "after": "revoked"},
                    }),
                )
            }),
        ),
        (
            "only the ignored column changed: no item",
            Update(row(&[]), row(&[("last_used_at", t("2026-02-03 04:05:06+00"))])),
            NoItem,
        ),
        (
            "ignored and another column changed: the ignored one is not in the diff",
            Update(
                row(&[]),
                row(&[
                    ("last_used_at", t("2026-02-03 04:05:06+00")),
                    ("description", t("used by CI")),
                ]),
            ),
            item(key7(
                action::UPDATED,
                &["description"],
                json!({"description": {"before": "the production key", "after": "used by CI"}}),
            )),
        ),
        (
            "nothing changed: no item",
            Update(row(&[]), row(&[])),
            NoItem,
        ),
        (
            "redacted column changed: it says so, never the values; `changed` names ROTATED",
            Update(row(&[]), row(&[("key_hash", t(NEW_SECRET))])),
            item(key7(
                "AUDIT_ACTION_ROTATED",
                &["key_hash"],
                json!({"key_hash": {"redacted": true}}),
            )),
        ),
        (
            "status active → revoked: the from/to rule names REVOKED",
            Update(row(&[]), row(&[("status", t("revoked"))])),
            item(key7(
                "AUDIT_ACTION_REVOKED",
                &["status"],
                json!({"status": {"before": "active", "after": "revoked"}}),
            )),
        ),
        (
            "status suspended → active: a rule with only `to` names REACTIVATED",
            Update(
                row(&[("status", t("suspended"))]),
                row(&[("status", t("active"))]),
            ),
            item(key7(
                "AUDIT_ACTION_REACTIVATED",
                &["status"],
                json!({"status": {"before": "suspended", "after": "active"}}),
            )),
        ),
        (
            "status suspended → revoked: `from` does not match, so UPDATED",
            Update(
                row(&[("status", t("suspended"))]),
                row(&[("status", t("revoked"))]),
            ),
            item(key7(
                action::UPDATED,
                &["status"],
                json!({"status": {"before": "suspended", "after": "revoked"}}),
            )),
        ),
        (
            "status stays revoked while the name changes: a transition needs the column to change",
            Update(
                row(&[("status", t("revoked"))]),
                row(&[("status", t("revoked")), ("name", t("old-prod"))]),
            ),
            item(Item {
                display: "old-prod",
                ..key7(
                    action::UPDATED,
                    &["name"],
                    json!({"name": {"before": "prod", "after": "old-prod"}}),
                )
            }),
        ),
        (
            "key rotated and revoked at once: the first rule listed wins",
            Update(
                row(&[]),
                row(&[("key_hash", t(NEW_SECRET)), ("status", t("revoked"))]),
            ),
            item(key7(
                "AUDIT_ACTION_ROTATED",
                &["key_hash", "status"],
                json!({
                    "key_hash": {"redacted": true},
                    "status": {"before": "active", "after": "revoked"},
                }),
            )),
        ),
        (
            "soft delete (NULL → time): DELETED, by updated_by",
            Update(
                row(&[]),
                row(&[("deleted_at", t("2026-03-04 05:06:07+00"))]),
            ),
            item(key7(
                action::DELETED,
                &["deleted_at"],
                json!({"deleted_at": {"before": null, "after": "2026-03-04T05:06:07Z"}}),
            )),
        ),
        (
            "restore (time → NULL): RESTORED",
            Update(
                row(&[("deleted_at", t("2026-03-04 05:06:07+00"))]),
                row(&[]),
            ),
            item(key7(
                action::RESTORED,
                &["deleted_at"],
                json!({"deleted_at": {"before": "2026-03-04T05:06:07Z", "after": null}}),
            )),
        ),
        (
            "soft-delete column moved from one time to another: neither, UPDATED",
            Update(
                row(&[("deleted_at", t("2026-03-04 05:06:07+00"))]),
                row(&[("deleted_at", t("2026-03-05 05:06:07+00"))]),
            ),
            item(key7(
                action::UPDATED,
                &["deleted_at"],
                json!({"deleted_at": {"before": "2026-03-04T05:06:07Z", "after": "2026-03-05T05:06:07Z"}}),
            )),
        ),
        (
            "soft delete while rotating: the soft delete names the action",
            Update(
                row(&[]),
                row(&[
                    ("key_hash", t(NEW_SECRET)),
                    ("deleted_at", t("2026-03-04 05:06:07+00")),
                ]),
            ),
            item(key7(
                action::DELETED,
                &["key_hash", "deleted_at"],
                json!({
                    "key_hash": {"redacted": true},
                    "deleted_at": {"before": null, "after": "2026-03-04T05:06:07Z"},
                }),
            )),
        ),
        (
            "delete: DELETED from the old row, every column but the ignored one, deleted_by acts",
            Delete(row(&[("deleted_by", t("acct_carol"))])),
            item(Item {
                changed: ALL_BUT_IGNORED,
                diff: json!({
                    "id": {"before": 7},
                    "org_id": {"before": "org_1"},
                    "project_id": {"before": "proj_1"},
                    "name": {"before": "prod"},
                    "key_hash": {"redacted": true},
                    "status": {"before": "active"},
                    "deleted_at": {"before": null},
                    "created_by": {"before": "acct_alice"},
                    "updated_by": {"before": "acct_bob"},
                    "deleted_by": {"before": "acct_carol"},
                    "description": {"before": "the production key"},
                }),
                actor: Some("acct_carol"),
                ..key7(action::DELETED, &[], json!({}))
            }),
        ),
        (
            "delete with no deleted_by: no actor, though updated_by names the last updater",
            Delete(row(&[])),
            item(Item {
                changed: ALL_BUT_IGNORED,
                diff: json!({
                    "id": {"before": 7},
                    "org_id": {"before": "org_1"},
                    "project_id": {"before": "proj_1"},
                    "name": {"before": "prod"},
                    "key_hash": {"redacted": true},
                    "status": {"before": "active"},
                    "deleted_at": {"before": null},
                    "created_by": {"before": "acct_alice"},
                    "updated_by": {"before": "acct_bob"},
                    "deleted_by": {"before": null},
                    "description": {"before": "the production key"},
                }),
                actor: None,
                ..key7(action::DELETED, &[], json!({}))
            }),
        ),
        (
            "update by someone else: the new row's updated_by acts",
            Update(
                row(&[]),
                row(&[("updated_by", t("acct_dave")), ("description", t("x"))]),
            ),
            item(Item {
                actor: Some("acct_dave"),
                ..key7(
                    action::UPDATED,
                    &["updated_by", "description"],
                    json!({
                        "updated_by": {"before": "acct_bob", "after": "acct_dave"},
                        "description": {"before": "the production key", "after": "x"},
                    }),
                )
            }),
        ),
        (
            "update with no updated_by: no actor, though created_by names the creator",
            Update(
                row(&[("updated_by", NULL)]),
                row(&[("updated_by", NULL), ("description", t("x"))]),
            ),
            item(Item {
                actor: None,
                ..key7(
                    action::UPDATED,
                    &["description"],
                    json!({"description": {"before": "the production key", "after": "x"}}),
                )
            }),
        ),
        (
            "unchanged TOASTed value: not reported as a change",
            Update(
                row(&[]),
                row(&[("description", TOAST), ("name", t("prod-eu"))]),
            ),
            item(Item {
                display: "prod-eu",
                ..key7(
                    action::UPDATED,
                    &["name"],
                    json!({"name": {"before": "prod", "after": "prod-eu"}}),
                )
            }),
        ),
        (
            "only an unchanged TOASTed value besides unchanged columns: no item",
            Update(row(&[]), row(&[("description", TOAST)])),
            NoItem,
        ),
        (
            "TOASTed display name: the item keeps the name from the old row",
            Update(
                row(&[]),
                row(&[("name", TOAST), ("description", t("x"))]),
            ),
            item(key7(
                action::UPDATED,
                &["description"],
                json!({"description": {"before": "the production key", "after": "x"}}),
            )),
        ),
        (
            "tuple that does not match its Relation: an error, not a guess",
            Insert(vec![t("7"), t("org_1"), t("proj_1")]),
            Expect::Error("new tuple of public.api_keys has 3 columns, its Relation message 12"),
        ),
    ];

    let bound = api_keys_bound();
    let mut failures = Vec::new();
    for (name, change, expect) in &cases {
        let draft = bound.draft(match change {
            Insert(new) => RowChange::Insert(new),
            Update(old, new) => RowChange::Update {
                old: Some((OldKind::Full, old)),
                new,
            },
            Delete(old) => RowChange::Delete(old, OldKind::Full),
        });
        if let Ok(Some(d)) = &draft {
            let text = readable(d);
            for secret in [OLD_SECRET, NEW_SECRET] {
                if text.contains(secret) {
                    failures.push(format!("{name}: the redacted value leaks: {text}"));
                }
            }
        }
        match (draft, expect) {
            (Ok(Some(d)), Expect::Item(want)) => {
                for b in compare(&d, want) {
                    failures.push(format!("{name}: {b}"));
                }
            }
            (Ok(None), Expect::NoItem) => {}
            (Err(e), Expect::Error(phrase)) if e.contains(phrase) => {}
            (Ok(Some(d)), _) => {
                failures.push(format!("{name}: unexpected item {} {}", d.action, d.diff))
            }
            (Ok(None), _) => failures.push(format!("{name}: no item")),
            (Err(e), _) => failures.push(format!("{name}: error {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// pgoutput leaves out a TOASTed value an update did not change. Without the old row (REPLICA IDENTITY
/// DEFAULT, or only the key) nothing else tells that it did not change: it must still not be reported.
#[test]
fn unchanged_toast_without_the_old_row_is_not_a_change() {
    let cfg = config(
        "[[tables]]\ntable = \"docs\"\nresource_type = \"RESOURCE_TYPE_DOC\"\ndisplay_column = \"title\"\n",
    );
    let rel = relation(
        16_800,
        "docs",
        &[("id", TEXT), ("title", TEXT), ("body", TEXT)],
    );
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default())
        .expect("every configured column is in the relation");
    let key = vec![t("doc_1"), NULL, NULL];
    let new = vec![t("doc_1"), t("Runbook v2"), TOAST];
    for (name, old) in [
        ("no old row", None),
        ("the old key only", Some((OldKind::Key, &key))),
    ] {
        let d = bound
            .draft(RowChange::Update { old, new: &new })
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no item"));
        let diff: Value = serde_json::from_str(&d.diff).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(d.action, action::UPDATED, "{name}");
        assert_eq!(d.resource_display, "Runbook v2", "{name}");
        assert_eq!(diff["title"], json!({"after": "Runbook v2"}), "{name}");
        assert!(diff.get("body").is_none(), "{name}: body in {diff}");
        assert!(
            !d.changed_fields.iter().any(|f| f == "body"),
            "{name}: body in {:?}",
            d.changed_fields
        );
    }
}

/// Name, lines added to the table's config, its primary key, a row (org_id, slug, title), the id it gets.
type IdCase = (
    &'static str,
    &'static str,
    &'static [&'static str],
    [&'static str; 3],
    &'static str,
);

/// The id of a resource is the same however it changes, and a composite one cannot be read two ways.
#[test]
fn resource_ids() {
    let columns = [("org_id", TEXT), ("slug", TEXT), ("title", TEXT)];
    let rel = relation(16_500, "billing.projects", &columns);
    let cases: [IdCase; 5] = [
        (
            "the primary key",
            "",
            &["slug"],
            ["org_1", "billing", "Billing"],
            "billing",
        ),
        (
            "a composite primary key, in key order",
            "",
            &["org_id", "slug"],
            ["org_1", "billing", "Billing"],
            "org_1/billing",
        ),
        (
            "id_columns win over the primary key",
            "id_columns = [\"slug\", \"org_id\"]",
            &["org_id"],
            ["org_1", "billing", "Billing"],
            "billing/org_1",
        ),
        (
            "'/' and '%' inside values are escaped",
            "",
            &["org_id", "slug"],
            ["a/b", "50%", "x"],
            "a%2Fb/50%25",
        ),
        (
            "escaping keeps ids apart that joining would merge",
            "",
            &["org_id", "slug"],
            ["a", "b/50%", "x"],
            "a/b%2F50%25",
        ),
    ];
    for (name, extra, primary_key, values, want) in cases {
        let cfg = config(&format!(
            "[[tables]]\ntable = \"billing.projects\"\nresource_type = \"RESOURCE_TYPE_PROJECT\"\n{extra}\n"
        ));
        let mapping = TableMapping::new(
            cfg.tables[0].clone(),
            primary_key.iter().map(|s| s.to_string()).collect(),
        );
        let bound = BoundRelation::bind(rel.clone(), Some(&mapping), &TypeCatalog::default())
            .expect("every configured column is in the relation");
        let row: Tuple = values.iter().map(|v| t(v)).collect();
        let renamed = tuple(&rel, &row, &[("title", t("Renamed"))]);
        for (kind, change) in [
            ("insert", RowChange::Insert(&row)),
            (
                "update",
                RowChange::Update {
                    old: Some((OldKind::Full, &row)),
                    new: &renamed,
                },
            ),
            ("delete", RowChange::Delete(&row, OldKind::Full)),
        ] {
            let d = bound
                .draft(change)
                .unwrap_or_else(|e| panic!("{name}, {kind}: {e}"))
                .unwrap_or_else(|| panic!("{name}, {kind}: no item"));
            assert_eq!(d.resource_id, want, "{name}, {kind}");
            assert_eq!(d.table_name, "billing.projects", "{name}, {kind}");
        }
    }
}

/// The table's principal type and session column reach the item's actor references.
#[test]
fn actor_type_and_session_come_from_the_table() {
    let cfg = config(
        r#"
        [[tables]]
        table = "deployments"
        resource_type = "RESOURCE_TYPE_DEPLOYMENT"
        [tables.actor]
        created_by = "created_by"
        updated_by = "updated_by"
        session = "session_id"
        principal_type = "service_key"
        [attribution.sessions]
        table = "sessions"
        "#,
    );
    let rel = relation(
        16_600,
        "deployments",
        &[
            ("id", TEXT),
            ("created_by", TEXT),
            ("updated_by", TEXT),
            ("session_id", TEXT),
            ("state", TEXT),
        ],
    );
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default())
        .expect("every configured column is in the relation");
    let row = |updated_by: TupleValue, session: TupleValue, state: &str| -> Tuple {
        vec![t("d1"), t("svc_ci"), updated_by, session, t(state)]
    };
    let old = row(t("svc_ci"), t("sess_1"), "pending");
    let cases: Vec<(&str, Tuple, Option<&str>, Option<&str>)> = vec![
        (
            "updated_by and session set",
            row(t("svc_deploy"), t("sess_2"), "live"),
            Some("svc_deploy"),
            Some("sess_2"),
        ),
        (
            "no session on the row",
            row(t("svc_deploy"), NULL, "live"),
            Some("svc_deploy"),
            None,
        ),
        (
            "an empty actor column names nobody",
            row(t(""), t("sess_2"), "live"),
            None,
            Some("sess_2"),
        ),
    ];
    for (name, new, principal, session) in &cases {
        let d = bound
            .draft(RowChange::Update {
                old: Some((OldKind::Full, &old)),
                new,
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no item"));
        let refs = &d.actor_refs;
        assert_eq!(refs.principal_id.as_deref(), *principal, "{name}");
        assert_eq!(
            refs.principal_type,
            principal.map(|_| PrincipalType::ServiceKey),
            "{name}"
        );
        assert_eq!(refs.session_id.as_deref(), *session, "{name}");
    }
}

/// `updated_by_only_when_changed`: an UPDATE that left `updated_by` as it was (direct SQL, say) names
/// nobody from the row, where by default it names the last updater; without the old row nothing tells,
/// so it names nobody either.
#[test]
fn updated_by_only_when_changed_names_nobody_for_an_update_that_left_it() {
    let rel = || {
        relation(
            16_601,
            "deployments",
            &[("id", TEXT), ("updated_by", TEXT), ("state", TEXT)],
        )
    };
    let bound = |strict: bool| {
        let cfg = config(&format!(
            r#"
            [[tables]]
            table = "deployments"
            resource_type = "RESOURCE_TYPE_DEPLOYMENT"
            [tables.actor]
            updated_by = "updated_by"
            updated_by_only_when_changed = {strict}
            "#
        ));
        let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
        BoundRelation::bind(rel(), Some(&mapping), &TypeCatalog::default())
            .expect("every configured column is in the relation")
    };
    let old: Tuple = vec![t("d1"), t("alice"), t("pending")];
    let left: Tuple = vec![t("d1"), t("alice"), t("live")];
    let written: Tuple = vec![t("d1"), t("bob"), t("live")];
    let cases = [
        ("left, default", false, Some(&old), &left, Some("alice")),
        ("left, strict", true, Some(&old), &left, None),
        ("written, strict", true, Some(&old), &written, Some("bob")),
        ("no old row, strict", true, None, &written, None),
        ("no old row, default", false, None, &written, Some("bob")),
    ];
    for (name, strict, old, new, want) in cases {
        let d = bound(strict)
            .draft(RowChange::Update {
                old: old.map(|o| (OldKind::Full, o)),
                new,
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: no item"));
        assert_eq!(d.actor_refs.principal_id.as_deref(), want, "{name}");
    }
}

/// A table that is not mapped gives no item for any change.
#[test]
fn unmapped_relation_gives_no_item() {
    let rel = relation(
        16_700,
        "public.sessions",
        &[("id", TEXT), ("account", TEXT)],
    );
    let bound = BoundRelation::bind(rel, None, &TypeCatalog::default())
        .expect("every configured column is in the relation");
    let row = vec![t("s1"), t("acct_alice")];
    assert!(matches!(bound.draft(RowChange::Insert(&row)), Ok(None)));
    assert!(matches!(
        bound.draft(RowChange::Delete(&row, OldKind::Full)),
        Ok(None)
    ));
}

/// Name, the `[[tables]]`, what the catalog says of each, and the mapping's id columns or an error phrase.
type CatalogCase = (
    &'static str,
    String,
    Vec<TableInfo>,
    Result<Vec<&'static str>, &'static str>,
);

/// At start, each configured table is checked against the catalog; what cannot be audited as configured
/// stops the start with the fix.
#[test]
fn catalog_checks_at_start() {
    const KEY_COLUMNS: &[&str] = &["id", "org_id", "project_id", "name", "deleted_at"];
    let table = |extra: &str| {
        format!("[[tables]]\ntable = \"api_keys\"\nresource_type = \"RESOURCE_TYPE_API_KEY\"\n{extra}\n")
    };
    let cases: Vec<CatalogCase> = vec![
        (
            "the primary key identifies the resource",
            table(""),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Ok(vec!["id"]),
        ),
        (
            "id_columns win over the primary key",
            table("id_columns = [\"org_id\", \"name\"]"),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Ok(vec!["org_id", "name"]),
        ),
        (
            "no primary key, but id_columns",
            table("id_columns = [\"id\"]"),
            vec![info(true, &[], KEY_COLUMNS)],
            Ok(vec!["id"]),
        ),
        (
            "every configured column present",
            table(
                "display_column = \"name\"\norganization_column = \"org_id\"\nproject_column = \"project_id\"\nsoft_delete_column = \"deleted_at\"",
            ),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Ok(vec!["id"]),
        ),
        (
            "the primary key, as the id, also ignored (QA48a M3)",
            table("ignore_columns = [\"id\"]"),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Err("table public.api_keys: its resource id is column \"id\" (the primary key, as id_columns is not set), which is also in ignore_columns: an update changing the id would leave no item"),
        ),
        (
            "missing table",
            table(""),
            vec![info(false, &[], &[])],
            Err("configured table public.api_keys does not exist in database platform"),
        ),
        (
            "no primary key and no id_columns",
            table(""),
            vec![info(true, &[], KEY_COLUMNS)],
            Err("table public.api_keys has no primary key: add one, or set id_columns"),
        ),
        (
            "an id column the table lacks",
            table("id_columns = [\"key_id\"]"),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Err("table public.api_keys has no column \"key_id\" named in its [[tables]] entry"),
        ),
        (
            "a display column the table lacks",
            table("display_column = \"title\""),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Err("has no column \"title\""),
        ),
        (
            "an organization column the table lacks",
            table("organization_column = \"organization_id\""),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Err("has no column \"organization_id\""),
        ),
        (
            "a project column the table lacks",
            table("project_column = \"project\""),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Err("has no column \"project\""),
        ),
        (
            "a soft-delete column the table lacks",
            table("soft_delete_column = \"removed_at\""),
            vec![info(true, &["id"], KEY_COLUMNS)],
            Err("has no column \"removed_at\""),
        ),
        (
            "the second table is missing: the error names it",
            format!(
                "{}[[tables]]\ntable = \"billing.invoices\"\nresource_type = \"RESOURCE_TYPE_INVOICE\"\n",
                table("")
            ),
            vec![
                info(true, &["id"], KEY_COLUMNS),
                info(false, &[], &[]),
            ],
            Err("configured table billing.invoices does not exist in database platform"),
        ),
    ];
    for (name, tables, catalog, want) in &cases {
        let cfg = config(tables);
        match (
            from_catalog(&cfg.tables, catalog, "platform", None, false),
            want,
        ) {
            (Ok(mappings), Ok(id_columns)) => {
                assert_eq!(mappings.len(), 1, "{name}");
                assert_eq!(mappings[0].qualified(), "public.api_keys", "{name}");
                assert_eq!(mappings[0].id_columns, *id_columns, "{name}");
            }
            (Err(e), Err(phrase)) => assert!(e.contains(phrase), "{name}: {e}"),
            (got, _) => panic!(
                "{name}: got {:?}",
                got.map(|m| m.iter().map(|m| m.id_columns.clone()).collect::<Vec<_>>())
            ),
        }
    }
}

#[test]
fn a_delete_with_its_key_alone_never_presents_the_other_columns_as_null() {
    // REPLICA IDENTITY DEFAULT: the Relation flags the key, and the old row carries the key with every
    // other column sent as NULL.
    let mut rel = api_keys_relation();
    rel.replica_identity = b'd';
    rel.columns[0].flags = 1;
    let cfg = config(API_KEYS);
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default()).unwrap();
    assert!(bound
        .mapping
        .as_ref()
        .unwrap()
        .scope_outside_key(&bound.relation));
    let mut old = vec![NULL; COLUMNS.len()];
    old[0] = t("7");
    let d = bound
        .draft(RowChange::Delete(&old, OldKind::Key))
        .unwrap()
        .expect("an item");
    let diff: Value = serde_json::from_str(&d.diff).unwrap();
    assert_eq!(diff["id"], json!({"before": 7}));
    assert_eq!(diff["org_id"], json!({"not_sent": true}), "{diff}");
    assert_eq!(diff["name"], json!({"not_sent": true}), "{diff}");
    // A redacted column Postgres did not send holds nothing to hide: said as not sent, like the others.
    assert_eq!(diff["key_hash"], json!({"not_sent": true}), "{diff}");
    assert_eq!(d.action, action::DELETED);
    // An update that changes the key: Postgres sends the old key, so the id's before-value is told (the
    // item is the resource's under its new id; its diff links the two).
    let mut new = row(&[]);
    new[0] = t("8");
    let u = bound
        .draft(RowChange::Update {
            old: Some((OldKind::Key, &old)),
            new: &new,
        })
        .unwrap()
        .expect("an item");
    let udiff: Value = serde_json::from_str(&u.diff).unwrap();
    assert_eq!(udiff["id"], json!({"before": 7, "after": 8}), "{udiff}");
    assert_eq!(u.resource_id, "8");
    assert!(
        udiff["name"].get("before").is_none(),
        "no before-value for what Postgres did not send: {udiff}"
    );
    // Its organization is not in the WAL: the item belongs to none, never to a guessed one.
    assert_eq!(
        (d.organization_id.as_str(), d.resource_id.as_str()),
        ("", "7")
    );
    // The whole old row (FULL) is what it always was.
    let full = row(&[]);
    let d = bound
        .draft(RowChange::Delete(&full, OldKind::Full))
        .unwrap()
        .unwrap();
    assert_eq!(d.organization_id, "org_1");
}

/// A derived action whose `from`/`to` can never equal its column's values is said at start, with the fix;
/// one that can is not.
#[test]
fn derived_actions_that_can_never_fire_are_named() {
    let cfg = config(
        r#"[[tables]]
table = "billing.invoices"
resource_type = "RESOURCE_TYPE_INVOICE"
[[tables.derived_actions]]
action = "AUDIT_ACTION_ZEROED"
column = "amount"
to = 0
[[tables.derived_actions]]
action = "AUDIT_ACTION_PAID"
column = "status"
from = "open"
to = 1
[[tables.derived_actions]]
action = "AUDIT_ACTION_DISABLED"
column = "enabled"
to = "false"
[[tables.derived_actions]]
action = "AUDIT_ACTION_FLAGGED"
column = "note"
to = true
[[tables.derived_actions]]
action = "AUDIT_ACTION_PRICED"
column = "price"
to = 5
[[tables.derived_actions]]
action = "AUDIT_ACTION_CUSTOM"
column = "custom"
to = 5
"#,
    );
    let mut i = info(
        true,
        &["id"],
        &[
            "id", "amount", "status", "enabled", "note", "price", "custom",
        ],
    );
    // numeric, an enum, bool, a domain over text (resolved to text), money, a type nobody knows.
    i.column_types = vec![
        (23, 'N'),
        (1700, 'N'),
        (90_001, 'E'),
        (16, 'B'),
        (25, 'S'),
        (790, 'N'),
        (90_002, 'U'),
    ];
    let found = derived_action_mismatches(&cfg.tables[0], &i);
    let said: Vec<String> = found.iter().map(|(w, f)| format!("{w}: {f}")).collect();
    assert_eq!(said.len(), 4, "{said:#?}");
    assert!(
        said[0].contains("AUDIT_ACTION_PAID")
            && said[0].contains("to = 1")
            && said[0].ends_with("write to as a string"),
        "{}",
        said[0]
    );
    assert!(
        said[1].contains("AUDIT_ACTION_DISABLED") && said[1].ends_with("write to as true or false"),
        "{}",
        said[1]
    );
    assert!(
        said[2].contains("AUDIT_ACTION_FLAGGED") && said[2].ends_with("write to as a string"),
        "{}",
        said[2]
    );
    assert!(
        said[3].contains("AUDIT_ACTION_PRICED") && said[3].contains("\"price\""),
        "{}",
        said[3]
    );
    // Still started: a rule that never fires is a warning, not a stop.
    assert!(from_catalog(&cfg.tables, &[i], "platform", None, false).is_ok());
}

/// A soft delete is NULL → a value: a soft-delete column that is never NULL, or a boolean flag, never makes
/// one, and every soft delete would be stored as UPDATED without a word (QA48a M4). Said at start and by
/// `check`, with the fix; a nullable timestamp is not.
#[test]
fn a_soft_delete_column_that_never_goes_from_null_is_named() {
    let said = |column: &str, type_: (u32, char), not_null: bool| {
        let cfg = config(&format!(
            "[[tables]]\ntable = \"docs\"\nresource_type = \"RESOURCE_TYPE_DOCUMENT\"\n\
             soft_delete_column = \"{column}\"\n"
        ));
        let mut i = info(true, &["id"], &["id", column]);
        i.column_types = vec![(23, 'N'), type_];
        if not_null {
            i.not_null = vec!["id".into(), column.into()];
        }
        derived_action_mismatches(&cfg.tables[0], &i)
            .into_iter()
            .map(|(w, f)| format!("{w}: {f}"))
            .collect::<Vec<_>>()
    };
    let flag = said("is_deleted", (16, 'B'), true);
    assert_eq!(flag.len(), 1, "{flag:#?}");
    assert!(
        flag[0].contains("soft_delete_column \"is_deleted\" is a boolean declared NOT NULL")
            && flag[0].contains("stored as AUDIT_ACTION_UPDATED")
            && flag[0].contains(
                "{ action = \"AUDIT_ACTION_DELETED\", column = \"is_deleted\", from = false, to = true }"
            )
            && flag[0].contains("nullable timestamp column"),
        "{}",
        flag[0]
    );
    let nullable_flag = said("is_deleted", (16, 'B'), false);
    assert!(
        nullable_flag.len() == 1 && nullable_flag[0].contains("is a boolean, but"),
        "{nullable_flag:#?}"
    );
    let not_null = said("deleted_at", (1184, 'D'), true);
    assert!(
        not_null.len() == 1 && not_null[0].contains("\"deleted_at\" is declared NOT NULL"),
        "{not_null:#?}"
    );
    assert!(said("deleted_at", (1184, 'D'), false).is_empty());
}

/// Redaction fails closed whatever optional_columns says: a redacted name that matches nothing must never
/// leave the secret it was meant for in clear, at start or in the stream (a rename to a misspelt name).
#[test]
fn a_redacted_column_that_matches_nothing_never_leaves_the_secret_in_clear() {
    let entry = |redact: &str| {
        config(&format!(
            "[[tables]]\ntable = \"secrets\"\nresource_type = \"RESOURCE_TYPE_SECRET\"\n\
             redact_columns = [{redact}]\noptional_columns = [{redact}]\n"
        ))
        .tables
    };
    let start = info(true, &["id"], &["id", "label", "value"]);
    // Misspelt at start, no other redacted column: refused.
    let e = from_catalog(
        &entry(r#""valeu""#),
        std::slice::from_ref(&start),
        "db",
        None,
        false,
    )
    .unwrap_err();
    assert!(e.contains("none of its redact_columns (valeu)"), "{e}");
    let bind = |tables: &[crate::config::TableConfig], cols: &[&str]| {
        let m =
            from_catalog(tables, std::slice::from_ref(&start), "db", None, false).expect("starts");
        let columns: Vec<(&str, u32)> = cols.iter().map(|c| (*c, TEXT)).collect();
        BoundRelation::bind(
            relation(16_900, "secrets", &columns),
            Some(&m[0]),
            &TypeCatalog::default(),
        )
        .map(|_| ())
    };
    // The README's rename recipe with the new name misspelt: after the rename no redacted column is left.
    let recipe = entry(r#""value", "secret_valeu""#);
    let e = bind(&recipe, &["id", "label", "secret_value"]).unwrap_err();
    assert!(e.contains("has none of its redact_columns"), "{e}");
    assert!(
        e.contains("carries column(s) secret_value the table did not have"),
        "names where the secret may be: {e}"
    );
    // Gone, as capture found by number (no name that could be it under another name): no stop. Marked
    // only for another name, it proves nothing of this one.
    let m = from_catalog(&recipe, std::slice::from_ref(&start), "db", None, false).expect("starts");
    let marked = |dropped: &[&str]| {
        let mut r = relation(16_900, "secrets", &[("id", TEXT), ("label", TEXT)]);
        r.dropped = dropped.iter().map(|c| c.to_string()).collect();
        BoundRelation::bind(r, Some(&m[0]), &TypeCatalog::default()).map(|_| ())
    };
    assert!(marked(&["value", "secret_valeu"]).is_ok());
    // One proven drop vouches for no other missing redacted name.
    assert!(marked(&["value"]).is_err());
    assert!(marked(&["label"]).is_err());
    // At start, --accept-columns takes a table without any of its redacted columns as it is.
    assert!(from_catalog(
        &entry(r#""valeu""#),
        std::slice::from_ref(&start),
        "db",
        None,
        true
    )
    .is_ok());
    // The same beside another secret that is still there: the renamed one appeared, unnamed.
    let two = config(
        "[[tables]]\ntable = \"secrets\"\nresource_type = \"RESOURCE_TYPE_SECRET\"\n\
         redact_columns = [\"label\", \"value\", \"secret_valeu\"]\n\
         optional_columns = [\"value\", \"secret_valeu\"]\n",
    )
    .tables;
    let e = bind(&two, &["id", "label", "secret_value"]).unwrap_err();
    assert!(
        e.contains("redacted column(s) value are not in it while column(s) secret_value appeared"),
        "{e}"
    );
    // Spelt right, the rename goes through; before it, too, also with a column added meanwhile (the new
    // name still to come is missing by design).
    let right = entry(r#""value", "secret_value""#);
    assert_eq!(bind(&right, &["id", "label", "secret_value"]), Ok(()));
    assert_eq!(bind(&right, &["id", "label", "value"]), Ok(()));
    assert_eq!(bind(&right, &["id", "label", "value", "notes"]), Ok(()));
    assert_eq!(
        bind(&right, &["id", "label", "secret_value", "notes"]),
        Ok(())
    );
}

/// A move where the organization is part of the key: the copy in the organization left carries the id
/// the resource had there, so a filter by that id there still finds where it went.
#[test]
fn a_move_leaves_its_old_id_in_the_scope_it_left() {
    let cfg = config(
        "[[tables]]\ntable = \"workspaces\"\nresource_type = \"RESOURCE_TYPE_WORKSPACE\"\n\
         organization_column = \"tenant\"\n",
    );
    let rel = relation(
        17_000,
        "workspaces",
        &[("tenant", TEXT), ("ws_no", INT4), ("name", TEXT)],
    );
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["tenant".into(), "ws_no".into()]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default()).unwrap();
    let old = vec![t("t1"), t("20"), t("ws")];
    let new = vec![t("t2"), t("20"), t("ws")];
    let d = bound
        .draft(RowChange::Update {
            old: Some((OldKind::Full, &old)),
            new: &new,
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.action.as_str(), d.organization_id.as_str()),
        (action::MOVED, "t2")
    );
    let left = d.previous_scope.expect("recorded in the scope it left too");
    assert_eq!(left.organization_id, "t1");
    assert_ne!(left.resource_id, d.resource_id);
    assert!(left.resource_id.contains("t1") && d.resource_id.contains("t2"));
}

/// A secret copied into an ordinary column (the first step of moving it to a new column, or a copy by
/// mistake) is redacted there too while the redacted column is in the row: redaction protects the values,
/// not only the names.
#[test]
fn a_secret_copied_into_another_column_is_redacted_there_too() {
    let cfg = config(
        "[[tables]]\ntable = \"creds\"\nresource_type = \"RESOURCE_TYPE_SECRET\"\n\
         redact_columns = [\"secret\"]\n",
    );
    let rel = relation(
        17_100,
        "creds",
        &[
            ("id", INT4),
            ("label", TEXT),
            ("secret", TEXT),
            ("secret_new", TEXT),
        ],
    );
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default()).unwrap();
    let old = vec![t("1"), t("k1"), t("s3cr3t-value"), NULL];
    let new = vec![t("1"), t("k1"), t("s3cr3t-value"), t("s3cr3t-value")];
    let d = bound
        .draft(RowChange::Update {
            old: Some((OldKind::Full, &old)),
            new: &new,
        })
        .unwrap()
        .unwrap();
    assert!(!d.diff.contains("s3cr3t"), "{}", d.diff);
    let diff: Value = serde_json::from_str(&d.diff).unwrap();
    assert_eq!(diff["secret_new"], json!({"redacted": true}));
    // An insert carrying the copy, and a delete of it.
    let d = bound.draft(RowChange::Insert(&new)).unwrap().unwrap();
    assert!(!d.diff.contains("s3cr3t"), "{}", d.diff);
    let d = bound
        .draft(RowChange::Delete(&new, OldKind::Full))
        .unwrap()
        .unwrap();
    assert!(!d.diff.contains("s3cr3t"), "{}", d.diff);
    // Converted copies: wrapped in JSON, padded by char(n), as bytea.
    for copy in [
        r#"{"secret": "s3cr3t-value"}"#.to_owned(),
        "s3cr3t-value      ".to_owned(),
        format!(
            "\\x{}",
            crate::audit::attribution::seal::hex(b"s3cr3t-value")
        ),
    ] {
        let new = vec![t("1"), t("k1"), t("s3cr3t-value"), t(&copy)];
        let d = bound.draft(RowChange::Insert(&new)).unwrap().unwrap();
        let diff: Value = serde_json::from_str(&d.diff).unwrap();
        assert_eq!(diff["secret_new"], json!({"redacted": true}), "{copy}");
    }
    // An ordinary value unlike the secret stays in clear; an empty secret makes nothing secret.
    let other = vec![t("1"), t("k1"), t("s3cr3t-value"), t("plain")];
    let d = bound
        .draft(RowChange::Update {
            old: Some((OldKind::Full, &old)),
            new: &other,
        })
        .unwrap()
        .unwrap();
    assert!(d.diff.contains("plain"), "{}", d.diff);
    let empty = vec![t("1"), t(""), t(""), t("")];
    let d = bound.draft(RowChange::Insert(&empty)).unwrap().unwrap();
    let diff: Value = serde_json::from_str(&d.diff).unwrap();
    assert_eq!(diff["label"], json!({"after": ""}));
    // A short secret ('active') does not hide ordinary values that merely equal it.
    let short = vec![t("1"), t("active"), t("active"), t("x")];
    let d = bound.draft(RowChange::Insert(&short)).unwrap().unwrap();
    let diff: Value = serde_json::from_str(&d.diff).unwrap();
    assert_eq!(diff["label"], json!({"after": "active"}));
    // Without the old row, a large secret left out of the change (TOASTed, unchanged) cannot be compared:
    // a large value beside it is hidden.
    let big = "k".repeat(3000);
    let unsent = vec![t("1"), t("k1"), TOAST, t(&big)];
    let d = bound
        .draft(RowChange::Update {
            old: None,
            new: &unsent,
        })
        .unwrap()
        .unwrap();
    assert!(
        !d.diff.contains(&big[..100]),
        "{}",
        &d.diff[..200.min(d.diff.len())]
    );
}

/// Columns that say who or where (id, organization, actor) are never hidden by the copy rule: a platform
/// user who chose a secret equal to their own id must not hide who acted, nor move an item out of their
/// organization.
#[test]
fn a_secret_equal_to_an_identifying_value_hides_no_identity() {
    let cfg = config(
        "[[tables]]\ntable = \"hooks\"\nresource_type = \"RESOURCE_TYPE_WEBHOOK\"\n\
         organization_column = \"org_id\"\nredact_columns = [\"secret\"]\n\
         [tables.actor]\nupdated_by = \"updated_by\"\ncreated_by = \"updated_by\"\n",
    );
    let rel = relation(
        17_400,
        "hooks",
        &[
            ("id", INT4),
            ("org_id", TEXT),
            ("updated_by", TEXT),
            ("secret", TEXT),
            ("note", TEXT),
        ],
    );
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default()).unwrap();
    let row = vec![
        t("1"),
        t("org_12345678"),
        t("user_12345678"),
        t("user_12345678"),
        t("user_12345678"),
    ];
    let d = bound.draft(RowChange::Insert(&row)).unwrap().unwrap();
    assert_eq!(d.organization_id, "org_12345678");
    let diff: Value = serde_json::from_str(&d.diff).unwrap();
    assert_eq!(diff["updated_by"], json!({"after": "user_12345678"}));
    assert_eq!(
        diff["note"],
        json!({"redacted": true}),
        "ordinary columns still are"
    );
    assert_eq!(diff["secret"], json!({"redacted": true}));
}

/// The display value shown in lists and summaries is hidden when it is a secret's copy.
#[test]
fn a_secret_copied_into_the_display_column_is_not_displayed() {
    let cfg = config(
        "[[tables]]\ntable = \"creds\"\nresource_type = \"RESOURCE_TYPE_SECRET\"\n\
         display_column = \"label\"\nredact_columns = [\"secret\"]\n",
    );
    let rel = relation(
        17_300,
        "creds",
        &[("id", INT4), ("label", TEXT), ("secret", TEXT)],
    );
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default()).unwrap();
    let row = vec![t("1"), t("s3cr3t-value"), t("s3cr3t-value")];
    let d = bound.draft(RowChange::Insert(&row)).unwrap().unwrap();
    assert_eq!(d.resource_display, "(redacted)");
    assert!(!d.diff.contains("s3cr3t"), "{}", d.diff);
}

/// Without REPLICA IDENTITY FULL (a migration set it back, and before the watchdog sets it again), an
/// update that moves a resource whose organization is part of the key still says where it left: Postgres
/// sends the old key.
#[test]
fn a_move_is_told_from_the_old_key_without_the_old_row() {
    let cfg = config(
        "[[tables]]\ntable = \"workspaces\"\nresource_type = \"RESOURCE_TYPE_WORKSPACE\"\n\
         organization_column = \"tenant\"\n",
    );
    let mut rel = relation(
        17_200,
        "workspaces",
        &[("tenant", TEXT), ("ws_no", INT4), ("name", TEXT)],
    );
    rel.replica_identity = b'd';
    rel.columns[0].flags = 1;
    rel.columns[1].flags = 1;
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["tenant".into(), "ws_no".into()]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default()).unwrap();
    let old_key = vec![t("t1"), t("20"), NULL];
    let new = vec![t("t2"), t("20"), t("ws")];
    let d = bound
        .draft(RowChange::Update {
            old: Some((OldKind::Key, &old_key)),
            new: &new,
        })
        .unwrap()
        .unwrap();
    assert_eq!(
        (d.action.as_str(), d.organization_id.as_str()),
        (action::MOVED, "t2")
    );
    let left = d.previous_scope.expect("recorded in the scope it left too");
    assert_eq!(left.organization_id, "t1");
    assert!(left.resource_id.contains("t1"), "{}", left.resource_id);
    // A key change that keeps the organization is no move.
    let same_org = vec![t("t2"), t("21"), t("ws")];
    let d = bound
        .draft(RowChange::Update {
            old: Some((OldKind::Key, &new)),
            new: &same_org,
        })
        .unwrap()
        .unwrap();
    assert_ne!(d.action.as_str(), action::MOVED);
}

/// A json/jsonb display column holding a JSON string is shown as the string (no quotes); other JSON is
/// shown as its text.
#[test]
fn a_json_display_value_that_is_a_string_shows_without_quotes() {
    const JSONB: u32 = 3802;
    let cfg = config(
        "[[tables]]\ntable = \"docs\"\nresource_type = \"RESOURCE_TYPE_DOC\"\ndisplay_column = \"title\"\n",
    );
    let mapping = TableMapping::new(cfg.tables[0].clone(), vec!["id".into()]);
    let rel = relation(16_701, "docs", &[("id", TEXT), ("title", JSONB)]);
    let bound = BoundRelation::bind(rel, Some(&mapping), &TypeCatalog::default()).unwrap();
    for (title, shown) in [
        (r#""plain""#, "plain"),
        (r#""say \"hi\"""#, r#"say "hi""#),
        (r#"{"en": "x"}"#, r#"{"en": "x"}"#),
    ] {
        let row = vec![t("d1"), t(title)];
        let d = bound.draft(RowChange::Insert(&row)).unwrap().unwrap();
        assert_eq!(d.resource_display, shown, "{title}");
    }
}

/// Two mapped tables where one has every column of the other, which redacts one it does not: said with
/// the fix (nested by DDL no look sees, the outer one's rows would be recorded as the inner one's).
#[test]
fn a_table_that_could_nest_under_a_redacting_one_is_named() {
    let cfg = config(
        r#"[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
redact_columns = ["value"]
[[tables]]
table = "notes"
resource_type = "RESOURCE_TYPE_NOTE"
[[tables]]
table = "others"
resource_type = "RESOURCE_TYPE_NOTE"
"#,
    );
    let secrets = info(true, &["id"], &["id", "org", "value"]);
    let notes = info(true, &["id"], &["id", "org", "value", "label"]);
    // Lacks `org`: it cannot be attached under secrets.
    let others = info(true, &["id"], &["id", "value"]);
    let found = crate::audit::mapping::nestable_redaction_gaps(
        &cfg.tables,
        &[secrets.clone(), notes.clone(), others],
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0]
            .0
            .contains("table notes has every column of table secrets")
            && found[0].0.contains("value"),
        "{}",
        found[0].0
    );
    assert!(found[0].1.contains("add value to notes's redact_columns"));
    // Redacted in both: nothing to say.
    let mut both = cfg.tables[..2].to_vec();
    both[1].redact_columns = vec!["value".into()];
    assert!(crate::audit::mapping::nestable_redaction_gaps(&both, &[secrets, notes]).is_empty());
}
