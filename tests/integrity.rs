//! Integrity of the trail, on real servers: nothing forged, no secret leaked, no change hidden from the
//! organization it touched, one actor per item and how it was known, hostile row data kept in bounds.

mod harness;

use harness::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use waltrail::config::Config;

const ORG1_ADMIN: &str = "org1-admin-key";
const ORG2_ADMIN: &str = "org2-admin-key";
const ORG1_MEMBER: &str = "org1-member-key";

fn api_section() -> String {
    let sha = waltrail::api::auth::sha256_hex;
    format!(
        r#"
[api]
listen = "127.0.0.1:{port}"

[[api.keys]]
name = "org1-admin"
sha256 = "{a}"
org_id = "org1"
role = "admin"

[[api.keys]]
name = "org2-admin"
sha256 = "{b}"
org_id = "org2"
role = "admin"

[[api.keys]]
name = "org1-member"
sha256 = "{m}"
org_id = "org1"
role = "member"
projects = ["p1"]
"#,
        port = free_port(),
        a = sha(ORG1_ADMIN),
        b = sha(ORG2_ADMIN),
        m = sha(ORG1_MEMBER),
    )
}

/// Capture (and optionally the API) on `tables` after `ddl`; returns the SQL client, the pipeline, the
/// config.
async fn start(
    env: &TestEnv,
    ddl: &str,
    tables: &str,
) -> (tokio_postgres::Client, Running, Arc<Config>) {
    let db = env.pg().await;
    db.batch_execute(ddl).await.expect("ddl");
    let text = format!("{}\n{}", env.config_text(tables), api_section());
    let cfg = Config::parse(&text).expect("config parses");
    cfg.validate().expect("config is valid");
    let cfg = Arc::new(cfg);
    let run = Running::start(Config::parse(&text).expect("config parses"));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    (db, run, cfg)
}

fn by_display<'a>(items: &'a [Item], name: &str) -> &'a Item {
    items
        .iter()
        .find(|i| i.resource_display == name)
        .unwrap_or_else(|| panic!("no item {name:?} in {items:#?}"))
}

/// The table most capture tests need: one organization column, full replica identity.
const EVENTS_DDL: &str =
    "CREATE TABLE events (id int PRIMARY KEY, org_id text); ALTER TABLE events REPLICA IDENTITY FULL";
/// Two mapped tables, one with a redacted column: a partition moved from one to the other must never
/// take a secret's change to the table that shows it.
const SECRETS_AND_NOTES: &str = r#"
[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]

[[tables]]
table = "notes"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
"#;

const EVENTS_TABLE: &str = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
"#;
const GATEWAYS: &str =
    "CREATE TABLE gateways (id text PRIMARY KEY, org_id text, project_id text, name text, \
                        secret text, updated_by text, session_id text)";
const GATEWAY_TABLE: &str = r#"
[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
organization_column = "org_id"
project_column = "project_id"
display_column = "name"
redact_columns = ["secret"]
[tables.actor]
updated_by = "updated_by"
created_by = "updated_by"
"#;
const SESSIONS: &str =
    "CREATE TABLE sessions (id text PRIMARY KEY, account_id text, source text, ip inet, ua text); \
                        CREATE TABLE accounts (id text PRIMARY KEY, email text)";
const ATTRIBUTION: &str = r#"
[attribution.sessions]
table = "sessions"
account_column = "account_id"
source_column = "source"
client_ip_column = "ip"
user_agent_column = "ua"

[attribution.accounts]
table = "accounts"
email_column = "email"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_events_are_recorded_as_rejected_and_sealed_ones_pass() {
    let env = TestEnv::new("i_forged").await;
    let (db, run, cfg) = start(&env, GATEWAYS, GATEWAY_TABLE).await;
    // Anyone who may call pg_logical_emit_message can write this: it must never read as alice's deletion.
    db.batch_execute(
        r#"SELECT pg_logical_emit_message(true, 'waltrail:event', '{"action":"AUDIT_ACTION_DELETED","resource_type":"RESOURCE_TYPE_PROJECT","resource_display":"ML","organization_id":"org1","actor":{"actor_id":"alice"}}');
           SELECT pg_logical_emit_message(true, 'waltrail:event', '{"action":"AUDIT_ACTION_DELETED","resource_type":"RESOURCE_TYPE_PROJECT"}');"#,
    )
    .await
    .unwrap();
    // What the API writes for an export: sealed with the deployment's event secret.
    let payload = waltrail::audit::attribution::EventPayload {
        action: "AUDIT_ACTION_EXPORTED".into(),
        resource_type: "RESOURCE_TYPE_AUDIT_LOG".into(),
        resource_id: "org1".into(),
        resource_display: "audit log".into(),
        organization_id: "org1".into(),
        project_id: String::new(),
        actor: serde_json::from_value(json!({"actor_id": "siem", "actor_type": "SERVICE_KEY"}))
            .unwrap(),
        data: json!({}),
        issued_at_us: waltrail::store::row::now_us(),
        nonce: "n".into(),
    };
    let sealed = waltrail::audit::attribution::Attribution::seal_event(
        &waltrail::audit::attribution::seal::SealKey::new(cfg.event_secret.0.as_bytes()),
        "waltrail:event",
        &payload,
    );
    db.execute(
        "SELECT pg_logical_emit_message(true, 'waltrail:event', $1::text)",
        &[&sealed],
    )
    .await
    .unwrap();
    // The same sealed text replayed in another transaction much later would be rejected too; a seal from
    // another deployment is.
    let other = waltrail::audit::attribution::Attribution::seal_event(
        &waltrail::audit::attribution::seal::SealKey::new(b"another-deployment-secret-0123456789"),
        "waltrail:event",
        &payload,
    );
    db.execute(
        "SELECT pg_logical_emit_message(true, 'waltrail:event', $1::text)",
        &[&other],
    )
    .await
    .unwrap();
    env.wait_for(4).await;
    let items = env.items().await;
    assert_eq!(items.len(), 4);
    let rejected: Vec<&Item> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_REJECTED")
        .collect();
    assert_eq!(rejected.len(), 3, "{items:#?}");
    assert!(
        items.iter().all(|i| i.action != "AUDIT_ACTION_DELETED"),
        "a forged event never becomes what it claims"
    );
    let first = rejected[0];
    assert_eq!(
        (
            first.organization_id.as_str(),
            first.principal_id.as_str(),
            first.actor_source.as_str(),
            first.platform_wide
        ),
        ("org1", "", "NONE", 0),
        "shown to the admins of the organization it names, naming nobody as actor"
    );
    assert_eq!(first.diff_json()["claimed"]["actor"]["actor_id"], "alice");
    assert!(first.diff_json()["reason"]
        .as_str()
        .unwrap()
        .contains("not sealed"));
    assert_eq!(
        (
            rejected[1].organization_id.as_str(),
            rejected[1].platform_wide
        ),
        ("", 1),
        "naming no organization: every organization's admins see it"
    );
    let exported = items
        .iter()
        .find(|i| i.action == "AUDIT_ACTION_EXPORTED")
        .expect("the sealed export");
    assert_eq!(
        (
            exported.principal_id.as_str(),
            exported.actor_source.as_str()
        ),
        ("siem", "SIGNED_EVENT")
    );
    assert_eq!(run.metrics.rejected_events.load(Ordering::Relaxed), 3);
    // Through the API: org1's admin sees both rejections (its own and the platform-wide one), org2's only
    // the platform-wide one.
    let api = Api::start(cfg.clone()).await;
    let org1 = api
        .items(
            ORG1_ADMIN,
            "/api/v1/orgs/org1/audit_logs?action=AUDIT_ACTION_REJECTED",
        )
        .await;
    let org2 = api
        .items(
            ORG2_ADMIN,
            "/api/v1/orgs/org2/audit_logs?action=AUDIT_ACTION_REJECTED",
        )
        .await;
    assert_eq!((org1.len(), org2.len()), (3, 1));
    assert_eq!(org2[0]["platform_wide"], true);
    assert_eq!(
        org1.iter()
            .filter(|i| i["summary"] == "An audit event waltrail did not write was rejected")
            .count(),
        3
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_context_when_required_and_rejected_otherwise() {
    let env = TestEnv::new("i_signed").await;
    let ddl = format!(
        "{GATEWAYS}; CREATE EXTENSION IF NOT EXISTS pgcrypto; {}",
        include_str!("../sql/postgres/waltrail_context.sql")
    );
    let tables = format!(
        "{GATEWAY_TABLE}\n[attribution]\nrequire_signed_context = true\ncontext_secret = \"shared-with-the-platform\"\n"
    );
    let (db, run, _) = start(&env, &ddl, &tables).await;
    let (platform, intruder) = (
        format!("platform_{}", env.name),
        format!("intruder_{}", env.name),
    );
    db.batch_execute(&format!(
        "INSERT INTO waltrail.context_key (secret) VALUES ('shared-with-the-platform'); \
         CREATE ROLE {platform}; CREATE ROLE {intruder}; \
         GRANT USAGE ON SCHEMA waltrail TO {platform}, {intruder}; \
         GRANT EXECUTE ON FUNCTION waltrail.set_signed_context(jsonb) TO {platform}"
    ))
    .await
    .unwrap();
    // QA34 H1: the helper seals for the platform's role only, and nobody else reads the secret.
    for (sql, what) in [
        (
            format!("SET ROLE {intruder}; SELECT waltrail.set_signed_context('{{\"actor_id\": \"ceo\"}}')"),
            "permission denied for function set_signed_context",
        ),
        (
            format!("SET ROLE {intruder}; SELECT secret FROM waltrail.context_key"),
            "permission denied for table context_key",
        ),
    ] {
        let e = db.batch_execute(&sql).await.expect_err(what);
        assert!(format!("{e:?}").contains(what), "{e:?}");
        db.batch_execute("RESET ROLE").await.unwrap();
    }
    // QA35 H1: a role that may create functions in public offers better-matching overloads of what the
    // sealing function calls; they would run as its owner, next to the secret.
    db.batch_execute(&format!(
        "GRANT CREATE ON SCHEMA public TO {intruder}; SET ROLE {intruder}; \
         CREATE TABLE public.loot (k text); GRANT INSERT ON public.loot TO PUBLIC; \
         CREATE FUNCTION public.json_build_object(a text, b text, c text, d text, e text, f text) RETURNS json \
           LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO public.loot SELECT secret FROM waltrail.context_key; \
           RETURN pg_catalog.json_build_object(a, b, c, d, e, f); END $f$; \
         CREATE FUNCTION public.encode(b bytea, f text) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN \
           INSERT INTO public.loot SELECT secret FROM waltrail.context_key; RETURN pg_catalog.encode(b, f); END $f$; \
         RESET ROLE"
    ))
    .await
    .unwrap();
    db.batch_execute(&format!(
        r#"BEGIN;
           SET LOCAL ROLE {platform};
           SELECT waltrail.set_signed_context('{{"actor_id": "bob", "source": "API"}}');
           RESET ROLE;
           INSERT INTO gateways VALUES ('g1', 'org1', 'p1', 'signed', 'x', NULL, NULL);
           COMMIT;
           BEGIN;
           SELECT waltrail.set_context('{{"actor_id": "mallory", "source": "API"}}');
           INSERT INTO gateways VALUES ('g2', 'org1', 'p1', 'unsigned', 'x', 'carol', NULL);
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', pg_catalog.json_build_object('ctx', '{{"actor_id":"mallory"}}', 'sig', repeat('ab', 32))::text);
           INSERT INTO gateways VALUES ('g3', 'org1', 'p1', 'bad-signature', 'x', NULL, NULL);
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', pg_catalog.json_build_object('ctx', c, 'xid', '1',
             'sig', pg_catalog.encode(hmac('1' || E'\n' || c, 'shared-with-the-platform', 'sha256'), 'hex'))::text)
             FROM (SELECT '{{"actor_id":"bob"}}'::text AS c) m;
           INSERT INTO gateways VALUES ('g4', 'org1', 'p1', 'replayed', 'x', NULL, NULL);
           COMMIT;"#
    ))
    .await
    .unwrap();
    env.wait_for(4).await;
    let items = env.items().await;
    let signed = by_display(&items, "signed");
    assert_eq!(
        (
            signed.principal_id.as_str(),
            signed.context_status.as_str(),
            signed.actor_source.as_str()
        ),
        ("bob", "SIGNED", "CONTEXT_MESSAGE")
    );
    let unsigned = by_display(&items, "unsigned");
    assert_eq!(
        (
            unsigned.principal_id.as_str(),
            unsigned.context_status.as_str(),
            unsigned.actor_source.as_str()
        ),
        ("carol", "REJECTED_UNSIGNED", "ROW_COLUMN"),
        "the unsigned context is not trusted; the row's own column names the actor, and the item says so"
    );
    let bad = by_display(&items, "bad-signature");
    assert_eq!(
        (
            bad.principal_id.as_str(),
            bad.context_status.as_str(),
            bad.actor_source.as_str()
        ),
        ("", "REJECTED_BAD_SIGNATURE", "NONE")
    );
    let loot: i64 = db
        .query_one("SELECT count(*) FROM public.loot", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        loot, 0,
        "no overload of the intruder's ran as the sealing function's owner"
    );
    // QA34 M2: a seal made for another transaction (a copy replayed) is not taken.
    let replayed = by_display(&items, "replayed");
    assert_eq!(
        (
            replayed.principal_id.as_str(),
            replayed.context_status.as_str()
        ),
        ("", "REJECTED_BAD_SIGNATURE")
    );
    assert_eq!(run.metrics.rejected_contexts.load(Ordering::Relaxed), 3);
    run.stop().await.unwrap();
    // The secret kept where every role reads it (as this helper once said to): refused, by check too.
    db.batch_execute(&format!(
        "ALTER DATABASE {} SET waltrail.context_secret = 'shared-with-the-platform'",
        env.name
    ))
    .await
    .unwrap();
    let text = format!("{}\n{}", env.config_text(&tables), api_section());
    let cfg = Config::parse(&text).unwrap();
    let findings = waltrail::check::run(&cfg).await;
    assert!(
        findings
            .iter()
            .any(|f| f.status == waltrail::finding::Status::Fail
                && f.what.contains("readable by every role")
                && f.what.contains("waltrail.context_secret")),
        "{findings:#?}"
    );
    let err = tokio::time::timeout(Duration::from_secs(30), Running::start(cfg).join())
        .await
        .expect("refused at once")
        .expect_err("refused");
    assert!(
        format!("{err:#}").contains("readable by every role"),
        "{err:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_redacted_column_stops_capture_before_any_secret_is_stored() {
    let env = TestEnv::new("i_rename").await;
    let (db, run, _) = start(&env, GATEWAYS, GATEWAY_TABLE).await;
    db.batch_execute(
        "INSERT INTO gateways VALUES ('g1', 'org1', 'p1', 'gw', 'old-s3cr3t', NULL, NULL)",
    )
    .await
    .unwrap();
    env.wait_for(1).await;
    db.batch_execute(
        "ALTER TABLE gateways RENAME COLUMN secret TO api_secret; \
         UPDATE gateways SET api_secret = 'new-s3cr3t', name = 'gw2'",
    )
    .await
    .unwrap();
    let err = run.stops_with().await;
    let msg = format!("{err:#}");
    assert!(
        msg.contains("public.gateways") && msg.contains(r#""secret" → "api_secret""#),
        "names the table and the rename: {msg}"
    );
    assert!(
        msg.contains("Add the new name to redact_columns"),
        "says what to do: {msg}"
    );
    let leaked: u64 = env
        .ch()
        .query("SELECT count() FROM audit_items WHERE position(diff, 's3cr3t') > 0 OR position(resource_display, 's3cr3t') > 0")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(leaked, 0, "no secret in clear");
    assert_eq!(
        env.count().await,
        1,
        "nothing of the table after the rename"
    );
    // The fix with the new name misspelt (both names optional, as the recipe says): still refused, nothing
    // stored in clear.
    let misspelt = GATEWAY_TABLE.replace(
        "redact_columns = [\"secret\"]",
        "redact_columns = [\"secret\", \"api_secreet\"]\noptional_columns = [\"secret\", \"api_secreet\"]",
    );
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        Running::start(env.config(&format!("{misspelt}\n"))).join(),
    )
    .await
    .expect("capture stops by itself")
    .expect_err("capture stops with an error");
    let msg = format!("{err:#}");
    // The column's number, remembered from the last start, names the rename exactly.
    assert!(
        msg.contains(r#""secret" → "api_secret""#)
            && msg.contains("Add the new name to redact_columns"),
        "{msg}"
    );
    assert_eq!(env.count().await, 1, "nothing stored");
    // The operator redacts the column under its new name: the waiting change is captured, redacted.
    let fixed = GATEWAY_TABLE.replace(
        "redact_columns = [\"secret\"]",
        "redact_columns = [\"secret\", \"api_secret\"]\noptional_columns = [\"secret\", \"api_secret\"]",
    );
    let run = Running::start(env.config(&format!("{fixed}\n")));
    let run = run.until_stored(&env, 2, "the restart with the fix").await;
    let items = env.items().await;
    assert_eq!(
        items[1].diff_json()["api_secret"],
        json!({"redacted": true})
    );
    assert_eq!(items[1].resource_display, "gw2");
    let leaked: u64 = env
        .ch()
        .query("SELECT count() FROM audit_items WHERE position(diff, 's3cr3t') > 0")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        leaked, 0,
        "no secret in clear, before or after the rename, replays included"
    );
    run.stop().await.unwrap();
}

/// A table's only secret column dropped (a secret moved to a vault) is a routine migration: kept in
/// redact_columns and optional_columns, as README says, capture goes on over the drop, a start after a drop
/// made while it was stopped is not refused, and the changes from before the drop are stored redacted.
/// A redacted name that never existed is still refused (the number tells a drop from a typo).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_secret_column_is_no_stop_and_its_older_changes_stay_redacted() {
    let env = TestEnv::new("i_drop_secret").await;
    let table = |name: &str| {
        format!(
            r#"
[[tables]]
table = "{name}"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org_id"
display_column = "name"
redact_columns = ["token"]
optional_columns = ["token"]
"#
        )
    };
    let tables = format!("{}{}", table("live_drop"), table("stopped_drop"));
    let (db, run, _) = start(
        &env,
        "CREATE TABLE live_drop (id text PRIMARY KEY, org_id text, name text, token text); \
         CREATE TABLE stopped_drop (id text PRIMARY KEY, org_id text, name text, token text)",
        &tables,
    )
    .await;
    db.batch_execute(
        "INSERT INTO live_drop VALUES ('l1', 'org1', 'live', 'live-s3cr3t-1'); \
         INSERT INTO stopped_drop VALUES ('s1', 'org1', 'stopped', 'stop-s3cr3t-1')",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    // Dropped while capture runs: the change before the drop and the one after are both captured.
    db.batch_execute(
        "UPDATE live_drop SET token = 'live-s3cr3t-2'; \
         ALTER TABLE live_drop DROP COLUMN token; \
         UPDATE live_drop SET name = 'live2'",
    )
    .await
    .unwrap();
    let run = run
        .until_stored(&env, 4, "the drop while capture runs")
        .await;
    run.stop().await.unwrap();
    // Dropped while capture is stopped, with a change from before the drop still in the slot.
    db.batch_execute(
        "UPDATE stopped_drop SET token = 'stop-s3cr3t-2'; \
         ALTER TABLE stopped_drop DROP COLUMN token; \
         UPDATE stopped_drop SET name = 'stopped2'",
    )
    .await
    .unwrap();
    let findings = waltrail::check::run(&env.config(&tables)).await;
    assert!(
        !findings
            .iter()
            .any(|f| f.status == waltrail::finding::Status::Fail && f.what.contains("redact")),
        "check does not fail the drop: {findings:#?}"
    );
    assert!(
        findings
            .iter()
            .any(|f| f.what.contains("stopped_drop") && f.what.contains("dropped")),
        "check says the column was dropped: {findings:#?}"
    );
    // Twice: the second start remembers the drop from the first one's baseline.
    for round in 0..2 {
        let run = Running::start(env.config(&tables));
        let run = run
            .until_stored(&env, 6, &format!("start {round} after the drop"))
            .await;
        run.stop().await.unwrap();
    }
    let items = env.items().await;
    assert_eq!(items.len(), 6, "{items:#?}");
    let updates: Vec<&Item> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_UPDATED" && i.diff_json().get("token").is_some())
        .collect();
    assert_eq!(
        updates.len(),
        2,
        "each table's change before the drop: {items:#?}"
    );
    for u in updates {
        assert_eq!(u.diff_json()["token"], json!({"redacted": true}), "{u:#?}");
    }
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    // A name the table never had is a typo, not a drop: refused as before.
    let typo = table("live_drop").replace("\"token\"", "\"tokn\"");
    let msg = refused(&env, &typo).await;
    assert!(msg.contains("none of its redact_columns (tokn)"), "{msg}");
    // A secret column dropped before any start remembered it cannot be told from a typo: refused, and
    // `--accept-columns` takes that table as it is, for its changes too (not only at start).
    db.batch_execute(
        "CREATE TABLE early_drop (id text PRIMARY KEY, org_id text, name text, token text); \
         ALTER TABLE early_drop DROP COLUMN token",
    )
    .await
    .unwrap();
    let with_early = format!("{tables}{}", table("early_drop"));
    let msg = refused(&env, &with_early).await;
    assert!(msg.contains("none of its redact_columns (token)"), "{msg}");
    let run = Running::start_with(
        env.config(&with_early),
        waltrail::pipeline::RunOptions {
            accept_columns: true,
            ..Default::default()
        },
    );
    // Once the start has published the table.
    for _ in 0..300 {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'early_drop'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 || run.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.batch_execute("INSERT INTO early_drop VALUES ('e1', 'org1', 'early')")
        .await
        .unwrap();
    let run = run
        .until_stored(&env, 7, "the accepted table's change")
        .await;
    run.stop().await.unwrap();
}

/// A secret renamed, written under its new name, and that name dropped and used again (QA18): the drop of
/// the redacted column must never be taken as proven, while capture runs or after a restart, with the new
/// column's name in the config or not; and a baseline someone else wrote (no seal) proves nothing. Nothing
/// of the secret is ever stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_renamed_then_its_name_dropped_and_reused_is_never_taken_for_a_drop() {
    let env = TestEnv::new("i_drop_reuse").await;
    let table = |name: &str, extra: &str| {
        format!(
            r#"
[[tables]]
table = "{name}"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]
optional_columns = ["value", "note"]
{extra}
"#
        )
    };
    let tables = format!(
        "{}{}",
        table("running", ""),
        table("shown", "display_column = \"note\"")
    );
    let (db, run, _) = start(
        &env,
        "CREATE TABLE running (id int PRIMARY KEY, org text, label text, value text); \
         CREATE TABLE shown (id int PRIMARY KEY, org text, label text, value text); \
         INSERT INTO running VALUES (1, 'o1', 'l1', 'first-s3cr3t'); \
         INSERT INTO shown VALUES (1, 'o1', 'l1', 'first-s3cr3t')",
        &tables,
    )
    .await;
    db.batch_execute("UPDATE running SET label = 'l1b'; UPDATE shown SET label = 'l1b'")
        .await
        .unwrap();
    env.wait_for(2).await;
    // While capture runs, in one transaction: the secret renamed, written, the name dropped and added again
    // (another type here; the same type, named as the display column, in the other table).
    db.batch_execute(
        "BEGIN; ALTER TABLE running RENAME COLUMN value TO note; \
         INSERT INTO running VALUES (3, 'o1', 'l3', 'leak-s3cr3t-a'); \
         ALTER TABLE running DROP COLUMN note; ALTER TABLE running ADD COLUMN note int; COMMIT",
    )
    .await
    .unwrap();
    let err = run.stops_with().await;
    assert!(format!("{err:#}").contains("running"), "{err:#}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    // Restarted with the same config: refused again, nothing stored.
    let msg = refused(&env, &tables).await;
    assert!(msg.contains("running"), "{msg}");
    assert_eq!(leaked(&env).await, 0);
    // Only the other table from here on (the first is the operator's to settle by hand).
    let shown_only = table("shown", "display_column = \"note\"");
    let run = Running::start(env.config(&shown_only));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "BEGIN; ALTER TABLE shown RENAME COLUMN value TO note; \
         INSERT INTO shown VALUES (3, 'o1', 'l3', 'leak-s3cr3t-b'); \
         ALTER TABLE shown DROP COLUMN note; ALTER TABLE shown ADD COLUMN note text; COMMIT",
    )
    .await
    .unwrap();
    let err = run.stops_with().await;
    assert!(format!("{err:#}").contains("shown"), "{err:#}");
    assert_eq!(
        leaked(&env).await,
        0,
        "no secret in clear, display included"
    );
    // A baseline written by someone else (no seal) claiming the column dropped: proves nothing.
    let ch = env.ch();
    let stored: String = ch
        .query(
            "SELECT redaction_baseline FROM waltrail_sources ORDER BY reported_at_us DESC LIMIT 1",
        )
        .fetch_one()
        .await
        .unwrap();
    let mut forged: serde_json::Value = serde_json::from_str(&stored).unwrap();
    forged.as_object_mut().unwrap().remove("seal");
    ch.query("ALTER TABLE waltrail_sources UPDATE redaction_baseline = ? WHERE 1")
        .bind(forged.to_string())
        .execute()
        .await
        .unwrap();
    for _ in 0..100 {
        let left: u64 = ch
            .query("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done")
            .fetch_one()
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let msg = refused(&env, &shown_only).await;
    assert!(msg.contains("shown"), "{msg}");
    assert_eq!(leaked(&env).await, 0);
}

/// A secret and an ordinary column swapping names inside a transaction that also renames the table (and
/// undoes both before it commits): the stream's Relation carries the table's other name, and must be held
/// to the table's columns like any other (QA19: it skipped every check, and the secret was stored in clear).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_inside_a_table_rename_is_held_like_any_other() {
    let env = TestEnv::new("i_swap_renamed").await;
    let tables = r#"
[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, label text, value text); \
         INSERT INTO secrets VALUES (1, 'o1', 'l1', 'first-s3cr3t')",
        tables,
    )
    .await;
    db.batch_execute("UPDATE secrets SET label = 'l1b'")
        .await
        .unwrap();
    env.wait_for(1).await;
    db.batch_execute(
        "BEGIN; ALTER TABLE secrets RENAME TO secrets_x; \
         ALTER TABLE secrets_x RENAME COLUMN label TO tmp; ALTER TABLE secrets_x RENAME COLUMN value TO label; \
         ALTER TABLE secrets_x RENAME COLUMN tmp TO value; \
         INSERT INTO secrets_x VALUES (3, 'o1', 'pub3', 'swap-s3cr3t'); \
         ALTER TABLE secrets_x RENAME COLUMN value TO tmp; ALTER TABLE secrets_x RENAME COLUMN label TO value; \
         ALTER TABLE secrets_x RENAME COLUMN tmp TO label; ALTER TABLE secrets_x RENAME TO secrets; COMMIT",
    )
    .await
    .unwrap();
    let err = run.stops_with().await;
    assert!(format!("{err:#}").contains("label"), "{err:#}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// QA28 M2 and L1: a partition in doubt (two partitioned tables it could have been under) and a swapped
/// secret in one (streamed) transaction: capture stops at its commit naming both, each once, since
/// `--accept-columns` takes the whole transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_doubt_of_a_transaction_is_named_once_at_its_commit() {
    let env = TestEnv::new("i_all_doubts").await;
    let tables = r#"
[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]

[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org"

[[tables]]
table = "archive"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org"
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, label text, value text); \
         CREATE TABLE events (id int, org text, note text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE ev_o1 PARTITION OF events FOR VALUES IN ('o1'); \
         CREATE TABLE archive (id int, org text, note text, PRIMARY KEY (id, org)) PARTITION BY LIST (org)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'l1', 'first-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    run.stop().await.unwrap();
    // Big enough to be streamed in several blocks, each of which sends the partition's Relation again.
    db.batch_execute(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET logical_decoding_work_mem = %L', \
         current_database(), '64kB'); END $$",
    )
    .await
    .unwrap();
    let mut cfg = env.config(tables);
    cfg.postgres.streaming = true;
    let run = Running::start(cfg);
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "BEGIN; CREATE TABLE ev_o9 (LIKE events); ALTER TABLE events ATTACH PARTITION ev_o9 FOR VALUES IN ('o9'); \
         INSERT INTO events SELECT g, 'o9', repeat('n', 200) FROM generate_series(1, 3000) g; \
         ALTER TABLE secrets RENAME COLUMN label TO tmp; ALTER TABLE secrets RENAME COLUMN value TO label; \
         ALTER TABLE secrets RENAME COLUMN tmp TO value; \
         INSERT INTO secrets VALUES (3, 'o1', 'pub3', 'swap-s3cr3t'); \
         ALTER TABLE secrets RENAME COLUMN value TO tmp; ALTER TABLE secrets RENAME COLUMN label TO value; \
         ALTER TABLE secrets RENAME COLUMN tmp TO label; \
         INSERT INTO events SELECT g, 'o9', repeat('m', 200) FROM generate_series(3001, 6000) g; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("holds 2 change(s)") && msg.contains("ev_o9") && msg.contains("label"),
        "{msg}"
    );
    assert_eq!(msg.matches("ev_o9 (relation").count(), 1, "{msg}");
    assert_eq!(env.count().await, 1, "nothing of it stored");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// QA29 L1: a change made while the only secret column was renamed away (and back after): capture stops,
/// and the way on it names is one that works (it said to restart with `--accept-columns`, which stopped
/// the same way, for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_renamed_away_and_back_names_a_way_on_that_works() {
    let env = TestEnv::new("i_renamed_back").await;
    let tables = r#"
[[tables]]
table = "vault"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
display_column = "label"
redact_columns = ["value"]
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE vault (id int PRIMARY KEY, org text, label text, value text)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO vault VALUES (1, 'o1', 'one', 'first-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(
        "BEGIN; ALTER TABLE vault RENAME COLUMN value TO v_tmp; \
         INSERT INTO vault VALUES (2, 'o1', 'two', 'not secret'); \
         ALTER TABLE vault RENAME COLUMN v_tmp TO value; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("v_tmp") && msg.contains("--accept-columns"),
        "{msg}"
    );
    // The flag takes the rename, but the change still has no redacted column while the table has it
    // again: the stop says which name to redact (it said to use the flag, which took it again, for ever).
    let msg = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_columns: true,
            ..Default::default()
        },
    )
    .stops_with()
    .await;
    assert!(
        msg.contains("renamed for this change and back") && msg.contains("(v_tmp)"),
        "{msg}"
    );
    let fixed = tables.replace(
        r#"redact_columns = ["value"]"#,
        "redact_columns = [\"value\", \"v_tmp\"]\noptional_columns = [\"value\", \"v_tmp\"]",
    );
    let run = Running::start(env.config(&fixed))
        .until_stored(&env, 2, "the fixed config")
        .await;
    run.stop().await.unwrap();
    assert_eq!(leaked(&env).await, 0);
}

/// An honest migration that adds a column and then drops the only secret column while capture runs: the
/// change after the drop names a column the last start did not see, which the catalog cannot vouch for, so
/// capture stops (QA19 M1) — and `--accept-columns` takes it, once; from then on (changes after the start
/// that found the column dropped) plain restarts go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_dropped_after_a_column_was_added_is_taken_once_accepted() {
    let env = TestEnv::new("i_drop_after_add").await;
    let tables = r#"
[[tables]]
table = "vault"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
display_column = "label"
redact_columns = ["value"]
optional_columns = ["value"]
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE vault (id int PRIMARY KEY, org text, label text, value text)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO vault VALUES (1, 'o1', 'one', 'first-s3cr3t')")
        .await
        .unwrap();
    env.wait_for(1).await;
    db.batch_execute(
        "ALTER TABLE vault ADD COLUMN created_at timestamptz; ALTER TABLE vault DROP COLUMN value; \
         UPDATE vault SET label = 'one-b'",
    )
    .await
    .unwrap();
    let err = run.stops_with().await;
    let msg = format!("{err:#}");
    assert!(
        msg.contains("created_at") && msg.contains("--accept-columns"),
        "{msg}"
    );
    let msg = refused(&env, tables).await;
    assert!(msg.contains("created_at"), "{msg}");
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_columns: true,
            ..Default::default()
        },
    )
    .until_stored(&env, 2, "the start with --accept-columns")
    .await;
    run.stop().await.unwrap();
    let run = Running::start(env.config(tables));
    db.batch_execute("INSERT INTO vault VALUES (2, 'o1', 'two', now())")
        .await
        .unwrap();
    let run = run
        .until_stored(&env, 3, "a plain start after the accepted one")
        .await;
    run.stop().await.unwrap();
    assert_eq!(leaked(&env).await, 0);
}

/// After a secret column's drop is proven and past, a column added again under the secret's name and then
/// renamed is a secret under another name, not the old drop: while capture runs and while it is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_column_added_again_and_renamed_after_a_drop_stops() {
    let env = TestEnv::new("i_readd_rename").await;
    let table = |name: &str| {
        format!(
            r#"
[[tables]]
table = "{name}"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]
optional_columns = ["value"]
"#
        )
    };
    let tables = format!("{}{}", table("live"), table("stopped"));
    let (db, run, _) = start(
        &env,
        "CREATE TABLE live (id int PRIMARY KEY, org text, value text); \
         CREATE TABLE stopped (id int PRIMARY KEY, org text, value text)",
        &tables,
    )
    .await;
    db.batch_execute(
        "INSERT INTO live VALUES (1, 'o1', 'old-s3cr3t'); INSERT INTO stopped VALUES (1, 'o1', 'old-s3cr3t'); \
         ALTER TABLE live DROP COLUMN value; ALTER TABLE stopped DROP COLUMN value; \
         UPDATE live SET org = 'o1'; UPDATE stopped SET org = 'o1'",
    )
    .await
    .unwrap();
    let run = run.until_stored(&env, 2, "the drops").await;
    run.stop().await.unwrap();
    // A start that finds both dropped; then, while it runs, the secret column comes back and is renamed.
    let run = Running::start(env.config(&tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    db.batch_execute(
        "ALTER TABLE live ADD COLUMN value text; UPDATE live SET value = 'new-s3cr3t'; \
         ALTER TABLE live RENAME COLUMN value TO x; UPDATE live SET x = 'leak-s3cr3t'",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("x"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    // The other table, while capture is stopped: refused at start.
    db.batch_execute(
        "ALTER TABLE stopped ADD COLUMN value text; ALTER TABLE stopped RENAME COLUMN value TO y; \
         UPDATE stopped SET y = 'leak-s3cr3t'",
    )
    .await
    .unwrap();
    let msg = refused(&env, &tables).await;
    assert!(msg.contains("stopped") || msg.contains("live"), "{msg}");
    assert_eq!(leaked(&env).await, 0);
}

/// QA20: one redacted column honestly dropped (and its drop proven by a restart) vouches for nothing else:
/// a second redacted column renamed, written and dropped in one transaction stops capture; and a mapped
/// table renamed to another mapped table's name inside a transaction is still itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_proven_drop_vouches_for_no_other_secret_nor_another_tables_name() {
    let env = TestEnv::new("i_one_drop").await;
    let tables = r#"
[[tables]]
table = "two"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value", "token"]
optional_columns = ["value", "token"]

[[tables]]
table = "plain"
resource_type = "RESOURCE_TYPE_NOTE"
organization_column = "org"
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE two (id int PRIMARY KEY, org text, value text, token text); \
         CREATE TABLE plain (id int PRIMARY KEY, org text, label text, value text); \
         INSERT INTO two VALUES (1, 'o1', 'v-s3cr3t', 't-s3cr3t')",
        tables,
    )
    .await;
    db.batch_execute(
        "ALTER TABLE two DROP COLUMN value; INSERT INTO two VALUES (3, 'o1', 't3-s3cr3t')",
    )
    .await
    .unwrap();
    let run = run.until_stored(&env, 1, "the honest drop").await;
    run.stop().await.unwrap();
    let run = Running::start(env.config(tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    db.batch_execute(
        "BEGIN; ALTER TABLE two RENAME COLUMN token TO tok; INSERT INTO two VALUES (2, 'o1', 'leak-s3cr3t'); \
         ALTER TABLE two DROP COLUMN tok; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("two"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// A mapped table renamed, inside a transaction, to the name of another mapped table without redaction,
/// while its secret swaps names with an ordinary column: still held as itself (by OID), and stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_renamed_to_another_mapped_tables_name_is_still_itself() {
    let env = TestEnv::new("i_rename_other").await;
    let tables = r#"
[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]

[[tables]]
table = "accounts"
resource_type = "RESOURCE_TYPE_ACCOUNT"
organization_column = "org"
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, label text, value text); \
         CREATE TABLE accounts (id int PRIMARY KEY, org text, label text, value text)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'l1', 'first-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(
        "BEGIN; ALTER TABLE accounts RENAME TO accounts_tmp; ALTER TABLE secrets RENAME TO accounts; \
         ALTER TABLE accounts RENAME COLUMN label TO tmp; ALTER TABLE accounts RENAME COLUMN value TO label; \
         ALTER TABLE accounts RENAME COLUMN tmp TO value; \
         INSERT INTO accounts VALUES (2, 'o1', 'pub', 'swap-s3cr3t'); \
         ALTER TABLE accounts RENAME COLUMN value TO tmp; ALTER TABLE accounts RENAME COLUMN label TO value; \
         ALTER TABLE accounts RENAME COLUMN tmp TO label; ALTER TABLE accounts RENAME TO secrets; \
         ALTER TABLE accounts_tmp RENAME TO accounts; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("label"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// A table whose secret column `value` may be dropped (optional), for the drop-proof attacks below.
const SECRETS_VALUE: &str = r#"
[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]
optional_columns = ["value"]
"#;

/// QA21: a secret renamed to a generated column's name (never sent in a change), written, dropped, and the
/// generated column renamed back and made plain: its name vouches for nothing, capture stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_hidden_under_a_generated_columns_name_stops() {
    let env = TestEnv::new("i_gen_swap").await;
    let tables = SECRETS_VALUE;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, value text, \
         gen text GENERATED ALWAYS AS (org || '-g') STORED)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets (id, org, value) VALUES (1, 'o1', 'first-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(
        "BEGIN; ALTER TABLE secrets RENAME COLUMN gen TO tmp; ALTER TABLE secrets RENAME COLUMN value TO gen; \
         INSERT INTO secrets (id, org, gen) VALUES (2, 'o1', 'leak-s3cr3t'); \
         ALTER TABLE secrets DROP COLUMN gen; ALTER TABLE secrets RENAME COLUMN tmp TO gen; \
         ALTER TABLE secrets ALTER COLUMN gen DROP EXPRESSION; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("secrets"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// QA20/21: an inheritance child that defined the secret column itself keeps its copy when the parent drops
/// it; the parent's drop proves nothing of the child's changes, whose copy may be renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_childs_own_copy_of_a_dropped_secret_is_never_taken_for_the_drop() {
    let env = TestEnv::new("i_child_copy").await;
    let tables = SECRETS_VALUE;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, value text); \
         CREATE TABLE secrets_c (id int PRIMARY KEY, org text, value text) INHERITS (secrets); \
         ALTER TABLE secrets_c REPLICA IDENTITY FULL",
        tables,
    )
    .await;
    db.batch_execute(
        "INSERT INTO secrets_c VALUES (1, 'o1', 'child-s3cr3t'); ALTER TABLE secrets DROP COLUMN value; \
         INSERT INTO secrets VALUES (2, 'o1')",
    )
    .await
    .unwrap();
    let run = run.until_stored(&env, 2, "the parent's drop").await;
    run.stop().await.unwrap();
    // A start that finds the parent's column dropped (its proof then covers later changes)...
    let run = Running::start(env.config(tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.stop().await.unwrap();
    // ...then, while stopped, the child's copy retyped and renamed to a column the parent adds (merged).
    db.batch_execute(
        "ALTER TABLE secrets_c ALTER COLUMN value TYPE jsonb USING to_jsonb(value); \
         ALTER TABLE secrets_c RENAME COLUMN value TO note; ALTER TABLE secrets ADD COLUMN note jsonb; \
         INSERT INTO secrets_c VALUES (3, 'o1', '\"leak-s3cr3t\"')",
    )
    .await
    .unwrap();
    let run = Running::start(env.config(tables));
    let msg = run.stops_with().await;
    assert!(msg.contains("secrets"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// A table with two secret columns, both of them optional.
const SECRETS_TWO: &str = r#"
[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value", "token"]
optional_columns = ["value", "token"]
"#;

/// QA22 H1: with two secret columns, the one still there proves nothing of the other's drop. Renamed to an
/// ordinary name dropped just before, written, dropped: while capture runs, and (renamed to a new name)
/// while it is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_secret_column_vouches_for_no_dropped_one() {
    let env = TestEnv::new("i_two_secrets").await;
    let tables = SECRETS_TWO;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, label text, value text, token text)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'l1', 'one-s3cr3t', 'tok-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(
        "BEGIN; ALTER TABLE secrets DROP COLUMN label; ALTER TABLE secrets RENAME COLUMN value TO label; \
         INSERT INTO secrets (id, org, label, token) VALUES (3, 'o1', 'three-s3cr3t', 'tok3-s3cr3t'); \
         UPDATE secrets SET label = 'moved-s3cr3t' WHERE id = 1; \
         ALTER TABLE secrets DROP COLUMN label; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("value") && msg.contains("--accept-columns"),
        "{msg}"
    );
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    assert_eq!(env.count().await, 1, "nothing stored after the rename");
}

/// QA23 H1: one secret dropped, a plain column renamed to its name, the other secret renamed to the plain
/// column's name, written, dropped: another dropped secret's name proves nothing for this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_dropped_secrets_name_vouches_for_nothing() {
    let env = TestEnv::new("i_two_dropped").await;
    let tables = SECRETS_TWO;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, value text, note text, token text)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'one-s3cr3t', 'n1', 'tok-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(
        "BEGIN; ALTER TABLE secrets DROP COLUMN token; ALTER TABLE secrets RENAME COLUMN note TO token; \
         ALTER TABLE secrets RENAME COLUMN value TO note; \
         INSERT INTO secrets (id, org, note, token) VALUES (3, 'o1', 'three-s3cr3t', 'decoy'); \
         UPDATE secrets SET note = 'moved-s3cr3t' WHERE id = 1; \
         ALTER TABLE secrets DROP COLUMN note; ALTER TABLE secrets RENAME COLUMN token TO note; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("value"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// QA22 H1b: the same while capture is stopped, the secret renamed to a new name before its drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_secret_column_vouches_for_no_drop_while_stopped() {
    let env = TestEnv::new("i_two_stopped").await;
    let tables = SECRETS_TWO;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, label text, value text, token text)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'l1', 'one-s3cr3t', 'tok-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    run.stop().await.unwrap();
    db.batch_execute(
        "BEGIN; ALTER TABLE secrets RENAME COLUMN value TO note; \
         INSERT INTO secrets (id, org, label, note, token) VALUES (3, 'o1', 'l3', 'three-s3cr3t', 'tok3-s3cr3t'); \
         UPDATE secrets SET note = 'moved-s3cr3t' WHERE id = 1; \
         ALTER TABLE secrets DROP COLUMN note; COMMIT",
    )
    .await
    .unwrap();
    let msg = refused(&env, tables).await;
    assert!(msg.contains("value") && msg.contains("note"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// QA22 H2: the shape of a retype of the secret column (renamed away, a new column under its name, the
/// old one written and dropped): the redacted name in a change may be the new column's, so the old one's
/// drop must be proven all the same. Then the operator's way on: --accept-columns takes the changes from
/// before its start, and changes after it go on by themselves, also after another column is added (one
/// of another kind of type: a string one next to a dropped secret is refused, see README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_renamed_beside_a_new_column_under_its_name_stops() {
    let env = TestEnv::new("i_retype_secret").await;
    let tables = SECRETS_VALUE;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, label text, value text)",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'l1', 'one-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(
        "BEGIN; ALTER TABLE secrets RENAME COLUMN value TO old; ALTER TABLE secrets ADD COLUMN value text; \
         INSERT INTO secrets (id, org, label, old, value) VALUES (3, 'o1', 'l3', 'three-s3cr3t', 'decoy'); \
         UPDATE secrets SET old = 'moved-s3cr3t', value = 'decoy' WHERE id = 1; \
         ALTER TABLE secrets DROP COLUMN old; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("value") && msg.contains("old"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    // The operator's way on (here it is not true that no secret moved, which is why the test only counts).
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_columns: true,
            ..Default::default()
        },
    )
    .until_stored(&env, 3, "the changes accepted")
    .await;
    run.stop().await.unwrap();
    let run = Running::start(env.config(tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "INSERT INTO secrets (id, org, label, value) VALUES (4, 'o1', 'l4', 'four-s3cr3t'); \
         ALTER TABLE secrets ADD COLUMN rank int; \
         INSERT INTO secrets (id, org, label, value, rank) VALUES (5, 'o1', 'l5', 'five-s3cr3t', 5)",
    )
    .await
    .unwrap();
    let run = run
        .until_stored(&env, 5, "changes after the accepted start")
        .await;
    run.stop().await.unwrap();
    let items = env.items().await;
    for i in items
        .iter()
        .filter(|i| ["4", "5"].contains(&i.resource_id.as_str()))
    {
        assert_eq!(i.diff_json()["value"], json!({"redacted": true}), "{i:#?}");
        assert!(!i.diff.contains("s3cr3t"), "{i:#?}");
    }
}

/// QA22 M1: `--accept-columns` takes the changes written before its start, not a swap made while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_columns_never_takes_a_swap_made_while_it_runs() {
    let env = TestEnv::new("i_accept_scope").await;
    let tables = SECRETS_VALUE;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE secrets (id int PRIMARY KEY, org text, label text, value text); \
         INSERT INTO secrets VALUES (1, 'o1', 'l1', 'one-s3cr3t')",
    )
    .await
    .unwrap();
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_columns: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO secrets VALUES (2, 'o1', 'l2', 'two-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "a change after the start").await;
    db.batch_execute(
        "BEGIN; ALTER TABLE secrets RENAME COLUMN value TO tmp; ALTER TABLE secrets RENAME COLUMN label TO value; \
         ALTER TABLE secrets RENAME COLUMN tmp TO label; \
         UPDATE secrets SET label = 'swap-s3cr3t' WHERE id = 1; \
         ALTER TABLE secrets RENAME COLUMN label TO tmp; ALTER TABLE secrets RENAME COLUMN value TO label; \
         ALTER TABLE secrets RENAME COLUMN tmp TO value; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("label"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// Capture of `tables` run to its end: the error it stopped with.
async fn refused(env: &TestEnv, tables: &str) -> String {
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        Running::start(env.config(tables)).join(),
    )
    .await
    .expect("capture stops by itself")
    .expect_err("capture stops with an error");
    format!("{err:#}")
}

/// Waits (up to 30 s) until a report of the source carries a pending gap whose JSON holds `needle`: what
/// a look found, for the next start to record.
async fn wait_pending_gap(env: &TestEnv, needle: &str, what: &str) {
    for _ in 0..300 {
        let n: u64 = env
            .ch()
            .query("SELECT count() FROM waltrail_sources WHERE position(pending_gaps, ?) > 0")
            .bind(needle)
            .fetch_one()
            .await
            .unwrap();
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: no pending gap holding {needle:?}");
}

/// A config text with a publication the operator keeps (`manage_publication = false`).
fn hand_kept(text: String) -> String {
    text.replace(
        "\n[clickhouse]",
        "manage_publication = false\n\n[clickhouse]",
    )
}

async fn leaked(env: &TestEnv) -> u64 {
    env.ch()
        .query("SELECT count() FROM audit_items WHERE position(diff, 's3cr3t') > 0 OR position(resource_display, 's3cr3t') > 0")
        .fetch_one()
        .await
        .unwrap()
}

/// The in-process guard stops capture at a renamed secret; a restart must not take the new name for an
/// old ordinary column (the baseline is remembered in the store by column number). Likewise a secret column
/// dropped for a new one while capture was stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_a_redacted_column_was_renamed_stores_no_secret_in_clear() {
    let env = TestEnv::new("i_rename_restart").await;
    let table = |redact: &str, optional: &str| {
        format!(
            r#"
[[tables]]
table = "vaults"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org_id"
display_column = "name"
redact_columns = [{redact}]
optional_columns = [{optional}]
"#
        )
    };
    // Both optional, as a rename in progress needs: a missing required column is refused anyway.
    let both = table(r#""secret_a", "secret_b""#, r#""secret_a", "secret_b""#);
    let (db, run, _) = start(
        &env,
        "CREATE TABLE vaults (id text PRIMARY KEY, org_id text, name text, secret_a text, secret_b text); \
         ALTER TABLE vaults REPLICA IDENTITY FULL",
        &both,
    )
    .await;
    db.batch_execute("INSERT INTO vaults VALUES ('v1', 'org1', 'vault', 'a-s3cr3t', 'b-s3cr3t')")
        .await
        .unwrap();
    env.wait_for(1).await;
    db.batch_execute(
        "ALTER TABLE vaults RENAME COLUMN secret_a TO token; \
         UPDATE vaults SET token = 'tok-s3cr3t', name = 'vault2'",
    )
    .await
    .unwrap();
    let err = run.stops_with().await;
    assert!(format!("{err:#}").contains("secret_a"), "{err:#}");
    // A plain restart, config unchanged: refused, by check too, and nothing stored.
    let msg = refused(&env, &both).await;
    assert!(
        msg.contains("public.vaults") && msg.contains(r#""secret_a" → "token""#),
        "names the table and the rename: {msg}"
    );
    let findings = waltrail::check::run(&env.config(&both)).await;
    assert!(
        findings
            .iter()
            .any(|f| f.status == waltrail::finding::Status::Fail
                && f.fix
                    .as_deref()
                    .is_some_and(|x| x.contains(r#""secret_a" → "token""#))),
        "{findings:#?}"
    );
    assert_eq!(env.count().await, 1, "nothing stored after the rename");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    // The operator names the new name: the waiting change goes in, redacted.
    let fixed = table(
        r#""secret_a", "token", "secret_b""#,
        r#""secret_a", "token""#,
    );
    let run = Running::start(env.config(&fixed));
    env.wait_for(2).await;
    let items = env.items().await;
    assert_eq!(items[1].resource_display, "vault2");
    assert_eq!(items[1].diff_json()["token"], json!({"redacted": true}));
    run.stop().await.unwrap();
    // Stopped, the secret column is dropped and a new one takes the secret: the start is refused (the
    // in-process guard never saw it: its baseline would be the catalog as it is now).
    db.batch_execute(
        "ALTER TABLE vaults DROP COLUMN token, ADD COLUMN api_token text; \
         UPDATE vaults SET api_token = 'new-s3cr3t', name = 'vault3'",
    )
    .await
    .unwrap();
    let msg = refused(&env, &fixed).await;
    assert!(
        msg.contains(
            "redacted column(s) token dropped and column(s) api_token of the same kind of type added"
        ),
        "{msg}"
    );
    assert_eq!(env.count().await, 2, "nothing stored after the drop");
    // Told the old secret column is gone for good (and the new one is a secret): proceeds, redacted.
    let run = Running::start(env.config(&table(r#""api_token", "secret_b""#, "")));
    env.wait_for(3).await;
    let items = env.items().await;
    let last = items
        .iter()
        .find(|i| i.resource_display == "vault3")
        .expect("the update");
    assert_eq!(last.diff_json()["api_token"], json!({"redacted": true}));
    // A healthy restart (an ordinary column added) is not refused.
    run.stop().await.unwrap();
    db.batch_execute(
        "ALTER TABLE vaults ADD COLUMN notes text; UPDATE vaults SET notes = 'n', name = 'vault4'",
    )
    .await
    .unwrap();
    let run = Running::start(env.config(&table(r#""api_token", "secret_b""#, "")));
    env.wait_for(4).await;
    // While it runs, a secret swapped under an ordinary column's name (every redacted name still there):
    // the Relation that follows is held to the column numbers, and capture stops before storing it.
    db.batch_execute(
        "ALTER TABLE vaults RENAME COLUMN secret_b TO tmp; ALTER TABLE vaults RENAME COLUMN name TO secret_b; \
         ALTER TABLE vaults RENAME COLUMN tmp TO name; UPDATE vaults SET notes = 'n2'",
    )
    .await
    .unwrap();
    let err = run.stops_with().await;
    // Named by whichever guard meets it first: the Relation held to the column numbers as they are now,
    // or (when the session starts again before it) the start's baseline.
    let err = format!("{err:#}");
    assert!(
        err.contains(r#""secret_b" → "name""#)
            || (err.contains("other names than now")
                && err.contains(r#""name" may be what the table now calls "secret_b""#)),
        "{err}"
    );
    assert_eq!(env.count().await, 4, "nothing stored after the swap");
    assert_eq!(
        leaked(&env).await,
        0,
        "no secret in clear, replays included"
    );
}

/// Names swapped while capture was stopped, a change made, and the names swapped back before it
/// starts: the catalog looks as it did, but the change waiting in the slot holds the secret under the
/// other name. The column order of its Relation gives it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_swapped_and_swapped_back_while_stopped_is_not_stored_in_clear() {
    let env = TestEnv::new("i_swap_back").await;
    let table = |redact: &str| {
        format!(
            r#"
[[tables]]
table = "creds"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org_id"
display_column = "label"
redact_columns = [{redact}]
optional_columns = [{redact}]
"#
        )
    };
    let (db, run, _) = start(
        &env,
        "CREATE TABLE creds (id int PRIMARY KEY, org_id text, label text, note text, secret text); \
         ALTER TABLE creds REPLICA IDENTITY FULL",
        &table(r#""secret""#),
    )
    .await;
    db.batch_execute("INSERT INTO creds VALUES (1, 'org1', 'first', 'a note', 'one-s3cr3t')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    let swap = "BEGIN; ALTER TABLE creds RENAME COLUMN secret TO tmp_x; \
                ALTER TABLE creds RENAME COLUMN note TO secret; \
                ALTER TABLE creds RENAME COLUMN tmp_x TO note; COMMIT;";
    db.batch_execute(swap).await.unwrap();
    db.batch_execute("INSERT INTO creds (id, org_id, label, note, secret) VALUES (2, 'org1', 'window', 'two-s3cr3t', 'harmless')")
        .await
        .unwrap();
    db.batch_execute(swap).await.unwrap();
    // `check` reads the slot ahead of capture and says the stop that waits there, with its fix.
    let findings = waltrail::check::run(&env.config(&table(r#""secret""#))).await;
    assert!(
        findings
            .iter()
            .any(|f| f.status == waltrail::finding::Status::Fail
                && f.what
                    .contains(r#""note" may be what the table now calls "secret""#)
                && f.fix
                    .as_deref()
                    .is_some_and(|x| x.contains("--accept-columns"))),
        "{findings:#?}"
    );
    let msg = refused(&env, &table(r#""secret""#)).await;
    assert!(
        msg.contains(r#""note" may be what the table now calls "secret""#),
        "{msg}"
    );
    assert_eq!(env.count().await, 1, "nothing stored");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    // The fix the message names: the other name redacted while that change goes by.
    let fixed = env.config(&table(r#""secret", "note""#));
    let findings = waltrail::check::run(&fixed).await;
    assert!(
        !findings
            .iter()
            .any(|f| f.what.contains("may be what the table now calls")),
        "with the fix in the config, nothing ahead is in doubt: {findings:#?}"
    );
    let run = Running::start(fixed);
    env.wait_for(2).await;
    let items = env.items().await;
    let window = by_display(&items, "window");
    assert_eq!(window.diff_json()["note"], json!({"redacted": true}));
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    run.stop().await.unwrap();
}

/// The same on a partitioned table (each change arrives as its partition's, which has its own column
/// order), and a routine type change of a column before the secret (add, copy, drop, rename back) that
/// must not be taken for a swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_a_retyped_column_keep_redaction_without_false_stops() {
    let env = TestEnv::new("i_swap_parts").await;
    let tables = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org_id"
display_column = "label"
redact_columns = ["secret"]
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE events (id int, org_id text, label text, secret text, note text, \
           PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE ev_org1 PARTITION OF events FOR VALUES IN ('org1'); \
         CREATE TABLE ev_org2 (note text, secret text, label text, org_id text NOT NULL, id int NOT NULL); \
         ALTER TABLE events ATTACH PARTITION ev_org2 FOR VALUES IN ('org2'); \
         ALTER TABLE ev_org1 REPLICA IDENTITY FULL; ALTER TABLE ev_org2 REPLICA IDENTITY FULL",
        tables,
    )
    .await;
    db.batch_execute(
        "INSERT INTO events VALUES (1, 'org1', 'one', 'one-s3cr3t', 'n'), (2, 'org2', 'two', 'two-s3cr3t', 'n')",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    // Routine while running: the label retyped (add, copy, drop, rename back); changes before and after.
    db.batch_execute(
        "ALTER TABLE events ADD COLUMN label_new varchar(64); UPDATE events SET label_new = label || '!'; \
         ALTER TABLE events DROP COLUMN label; ALTER TABLE events RENAME COLUMN label_new TO label; \
         UPDATE events SET note = 'after'",
    )
    .await
    .unwrap();
    env.wait_for(6).await;
    assert!(
        !run.is_finished(),
        "a routine migration does not stop capture"
    );
    run.stop().await.unwrap();
    // Stopped: names swapped on the table, a change in each partition, swapped back.
    let swap = "BEGIN; ALTER TABLE events RENAME COLUMN secret TO tmp_x; \
                ALTER TABLE events RENAME COLUMN note TO secret; \
                ALTER TABLE events RENAME COLUMN tmp_x TO note; COMMIT;";
    db.batch_execute(swap).await.unwrap();
    db.batch_execute(
        "INSERT INTO events (id, org_id, label, note, secret) VALUES \
           (3, 'org1', 'three', 'three-s3cr3t', 'x'), (4, 'org2', 'four', 'four-s3cr3t', 'x')",
    )
    .await
    .unwrap();
    db.batch_execute(swap).await.unwrap();
    let msg = refused(&env, tables).await;
    assert!(
        msg.contains(r#""note" may be what the table now calls "secret""#),
        "{msg}"
    );
    assert_eq!(env.count().await, 6, "nothing stored after the swap");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// A partition detached or dropped before capture reached its changes (waltrail stopped): the publication
/// sent them while it was attached, and a partition has exactly its table's columns, so they are the
/// table's changes, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_a_partition_detached_or_dropped_before_capture_are_still_audited() {
    let env = TestEnv::new("i_detached").await;
    let tables = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org_id"
display_column = "label"

[[tables]]
table = "legacy"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org_id"
display_column = "label"
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE events (id int, org_id text, label text, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE ev_org1 PARTITION OF events FOR VALUES IN ('org1'); \
         CREATE TABLE ev_org2 PARTITION OF events FOR VALUES IN ('org2'); \
         CREATE TABLE unrelated (id int PRIMARY KEY, note text); \
         CREATE TABLE legacy (id int PRIMARY KEY, org_id text, label text); \
         CREATE TABLE legacy_2025 (extra text) INHERITS (legacy); \
         ALTER TABLE legacy_2025 ADD PRIMARY KEY (id)",
        tables,
    )
    .await;
    // An inheritance child's changes are its parent's (as a partition's are), its own columns beside.
    db.batch_execute("INSERT INTO legacy_2025 VALUES (7, 'org1', 'inherited', 'x')")
        .await
        .unwrap();
    env.wait_for(1).await;
    let inherited = env.items().await;
    assert_eq!(
        by_display(&inherited, "inherited").table_name,
        "public.legacy"
    );
    // TRUNCATE of the child, of the parent with its child, and of the parent alone: each item says whose
    // rows were emptied (the parent's own rows too).
    for sql in [
        "TRUNCATE legacy_2025",
        "TRUNCATE legacy",
        "TRUNCATE ONLY legacy",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    env.wait_for(4).await;
    let truncated: Vec<serde_json::Value> = env
        .items()
        .await
        .into_iter()
        .filter(|i| i.action == "AUDIT_ACTION_TRUNCATED")
        .map(|i| i.diff_json())
        .collect();
    assert_eq!(
        truncated,
        vec![
            json!({"partitions": ["public.legacy_2025"]}),
            json!({"partitions": ["public.legacy", "public.legacy_2025"]}),
            json!({}),
        ]
    );
    db.batch_execute("INSERT INTO events VALUES (1, 'org1', 'before')")
        .await
        .unwrap();
    env.wait_for(5).await;
    run.stop().await.unwrap();
    db.batch_execute(
        "INSERT INTO events VALUES (2, 'org1', 'in-detached'), (3, 'org2', 'in-dropped'); \
         ALTER TABLE events DETACH PARTITION ev_org1; DROP TABLE ev_org2",
    )
    .await
    .unwrap();
    // Nothing this process saw proves where they were when written (a partition moved between two tables
    // of the same columns looks the same): capture stops, and nothing is stored.
    let msg = refused(&env, tables).await;
    assert!(
        msg.contains("ev_org") && msg.contains("--accept-columns"),
        "{msg}"
    );
    assert_eq!(env.items().await.len(), 5);
    // The operator's word: the one partitioned table with exactly their columns.
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_columns: true,
            ..Default::default()
        },
    );
    env.wait_for(7).await;
    let items = env.items().await;
    for name in ["in-detached", "in-dropped"] {
        let item = by_display(&items, name);
        assert_eq!(item.table_name, "public.events", "{item:?}");
    }
    assert_eq!(
        run.metrics
            .unplaced_relations
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    run.stop().await.unwrap();
}

/// Attach and load back to back, with one partitioned table in the publication: pgoutput sent the change
/// only because the partition was under a partitioned table the publication listed then, and there is only
/// one, so no stop. (With two, the same stops: `a_partition_moved_to_another_table_…`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_then_load_under_the_only_partitioned_table_goes_on() {
    let env = TestEnv::new("i_attach_load").await;
    let tables = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
display_column = "label"
redact_columns = ["token"]

[[tables]]
table = "plain"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
display_column = "label"
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE events (id int, org_id text, label text, token text, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE ev_org1 PARTITION OF events FOR VALUES IN ('org1'); \
         CREATE TABLE plain (id int PRIMARY KEY, org_id text, label text, token text)",
        tables,
    )
    .await;
    for stmt in [
        "CREATE TABLE ev_org2 (LIKE events)",
        "ALTER TABLE events ATTACH PARTITION ev_org2 FOR VALUES IN ('org2')",
        "INSERT INTO events VALUES (2, 'org2', 'loaded', 'two-s3cr3t')",
        "INSERT INTO plain VALUES (3, 'org1', 'after', 'x')",
    ] {
        db.batch_execute(stmt).await.unwrap();
    }
    let run = run.until_stored(&env, 2, "attach, then load").await;
    let items = env.items().await;
    assert_eq!(
        by_display(&items, "loaded").table_name,
        "public.events",
        "{items:#?}"
    );
    assert_eq!(leaked(&env).await, 0, "redacted as events' partition");
    run.stop().await.unwrap();
}

/// QA30 H1: the one-partitioned-table proof holds only for changes written under the publication as this
/// start set it. An inheritance child of a redacting table (listed in the publication by itself, as
/// waltrail adds children), written while capture is stopped, then moved under the only partitioned
/// table: the start's publication reset no longer shows that listing, so the change is a doubt, never
/// the partitioned table's (with its redaction, none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_former_child_attached_under_the_only_partitioned_table_is_a_doubt() {
    let env = TestEnv::new("i_child_to_part").await;
    let tables = r#"
[[tables]]
table = "n"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]

[[tables]]
table = "pt"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org"
"#;
    let config = || {
        let mut cfg = env.config(tables);
        cfg.postgres.watch_interval_ms = 100;
        cfg.postgres.status_interval_ms = 200;
        cfg
    };
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE n (id int PRIMARY KEY, org text, value text); \
         CREATE TABLE pt (id int, org text, value text, PRIMARY KEY (id)) PARTITION BY RANGE (id); \
         CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (0) TO (1000)",
    )
    .await
    .unwrap();
    let run = Running::start(config());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "CREATE TABLE c (id int PRIMARY KEY, org text, value text); ALTER TABLE c INHERIT n",
    )
    .await
    .unwrap();
    // A look lists the child in the publication by itself.
    let mut listed = false;
    for _ in 0..100 {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM pg_publication_rel WHERE prrelid = 'c'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(listed, "the child is published");
    run.stop().await.unwrap();
    for stmt in [
        "INSERT INTO c VALUES (1500, 'o1', 'c-under-n-s3cr3t')",
        "ALTER TABLE c NO INHERIT n",
        "ALTER TABLE pt ATTACH PARTITION c FOR VALUES FROM (1000) TO (2000)",
    ] {
        db.batch_execute(stmt).await.unwrap();
    }
    let msg = Running::start(config()).stops_with().await;
    assert!(
        msg.contains("public.c") && msg.contains("--accept-columns"),
        "{msg}"
    );
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// QA31 H1: the other partitioned table dropped in the change's own transaction is no longer listed by the
/// publication, yet held the partition when it was written: never placed under the one left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_off_a_table_dropped_in_the_same_transaction_is_never_misplaced() {
    let env = TestEnv::new("i_moved_dropped").await;
    let tables = r#"
[[tables]]
table = "s"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]

[[tables]]
table = "pt"
resource_type = "RESOURCE_TYPE_NOTE"
organization_column = "org"
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE s (id int, org text, label text, value text, PRIMARY KEY (id)) PARTITION BY RANGE (id); \
         CREATE TABLE s2 PARTITION OF s FOR VALUES FROM (1000) TO (2000); \
         CREATE TABLE pt (id int, org text, label text, value text, PRIMARY KEY (id)) PARTITION BY RANGE (id); \
         CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (0) TO (1000)",
        tables,
    )
    .await;
    db.batch_execute(
        "BEGIN; INSERT INTO s2 VALUES (1500, 'o1', 's2-under-s', 'under-s-s3cr3t'); \
         ALTER TABLE s DETACH PARTITION s2; \
         ALTER TABLE pt ATTACH PARTITION s2 FOR VALUES FROM (1000) TO (2000); DROP TABLE s; COMMIT",
    )
    .await
    .unwrap();
    let _ = run.stops_with().await;
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// A partition detached and dropped while capture runs behind (its changes still in the slot): a look
/// read it untouched after its changes committed, so they are its table's, without a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_dropped_after_a_look_saw_it_holds_its_changes() {
    let env = TestEnv::new("i_seen_dropped").await;
    let tables = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
display_column = "label"

[[tables]]
table = "archive"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
display_column = "label"
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE events (id int, org_id text, label text, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE archive (id int, org_id text, label text, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE ar_org1 PARTITION OF archive FOR VALUES IN ('org1'); \
         CREATE TABLE ev_org1 (LIKE events); \
         ALTER TABLE events ATTACH PARTITION ev_org1 FOR VALUES IN ('org1')",
        tables,
    )
    .await;
    run.stop().await.unwrap();
    // Capture behind a large transaction (a small buffer keeps the reader waiting on the store) and
    // looking often: the partition is read intact after its change commits, then detached and dropped
    // before the change is decoded.
    let mut cfg = env.config(tables);
    cfg.postgres.status_interval_ms = 100;
    cfg.postgres.watch_interval_ms = 100;
    cfg.capture.buffer_bytes = 64 * 1024;
    let run = Running::start(cfg);
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "INSERT INTO archive SELECT g, 'org1', 'bulk' FROM generate_series(1, 300000) g",
    )
    .await
    .unwrap();
    db.batch_execute("INSERT INTO events VALUES (1, 'org1', 'in-dropped')")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    db.batch_execute("ALTER TABLE events DETACH PARTITION ev_org1; DROP TABLE ev_org1")
        .await
        .unwrap();
    env.wait_for(300_001).await;
    let placed: Vec<String> = env
        .ch()
        .query("SELECT table_name FROM audit_items WHERE resource_display = 'in-dropped'")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(placed, vec!["public.events".to_owned()]);
    run.stop().await.unwrap();
}

/// QA27 M1: a publication kept by hand that lists a partition by itself: detached while capture is
/// stopped, the partition's waiting change is not taken for one of the publication's own tables (not
/// audited, said at INFO only): it is shaped like the mapped table's partitions, so capture stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_kept_publication_listing_a_partition_never_drops_its_changes() {
    let env = TestEnv::new("i_handkept_part").await;
    let db = env.pg().await;
    db.batch_execute(&format!(
        "CREATE TABLE secrets (id int, org text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE secrets_o1 PARTITION OF secrets FOR VALUES IN ('o1'); \
         CREATE TABLE secrets_o2 PARTITION OF secrets FOR VALUES IN ('o2'); \
         CREATE TABLE extra (id int PRIMARY KEY, note text); \
         ALTER TABLE secrets REPLICA IDENTITY FULL; ALTER TABLE secrets_o1 REPLICA IDENTITY FULL; \
         ALTER TABLE secrets_o2 REPLICA IDENTITY FULL; \
         CREATE PUBLICATION pub_{} FOR TABLE secrets, secrets_o2, extra",
        env.name
    ))
    .await
    .unwrap();
    let tables = r#"
[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]
"#;
    let text = hand_kept(env.config_text(tables));
    let cfg = || {
        let c = Config::parse(&text).unwrap();
        c.validate().unwrap();
        c
    };
    let run = Running::start(cfg());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // The publication's own table is its business: not audited, no stop.
    db.batch_execute(
        "INSERT INTO extra VALUES (1, 'not audited'); INSERT INTO secrets VALUES (1, 'o1', 'one-s3cr3t')",
    )
    .await
    .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    run.stop().await.unwrap();
    db.batch_execute("INSERT INTO secrets VALUES (2, 'o2', 'two-s3cr3t')")
        .await
        .unwrap();
    db.batch_execute("ALTER TABLE secrets DETACH PARTITION secrets_o2")
        .await
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(30), Running::start(cfg()).join())
        .await
        .expect("capture stops by itself")
        .expect_err("capture stops with an error");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("secrets_o2") && msg.contains("--accept-columns"),
        "{msg}"
    );
    assert_eq!(env.count().await, 1);
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// A publication that publishes through the root names a partition's change after the topmost table it
/// lists (QA32): a mapped table attached below a listed partitioned table was stored as that table's, its
/// secret in clear (`pt`, mapped), or dropped as not audited (`q`, listed but not mapped). Such a
/// publication is refused, and changes it already named so, still in the slot once it was set back, stop
/// capture instead of being placed by the name they came under.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_published_through_the_root_is_never_placed_by_that_name() {
    for (case, root) in [("i_viaroot_pt", "pt"), ("i_viaroot_q", "q")] {
        let env = TestEnv::new(case).await;
        let db = env.pg().await;
        let publication = format!("pub_{}", env.name);
        db.batch_execute(&format!(
            "CREATE TABLE s (id int PRIMARY KEY, org text, value text); \
             CREATE TABLE pt (id int, org text, value text, PRIMARY KEY (id)) PARTITION BY RANGE (id); \
             CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (1000); \
             CREATE TABLE q (id int, org text, value text, PRIMARY KEY (id)) PARTITION BY RANGE (id); \
             CREATE TABLE q1 PARTITION OF q FOR VALUES FROM (0) TO (1000); \
             ALTER TABLE s REPLICA IDENTITY FULL; ALTER TABLE pt REPLICA IDENTITY FULL; \
             ALTER TABLE pt1 REPLICA IDENTITY FULL; ALTER TABLE q REPLICA IDENTITY FULL; \
             ALTER TABLE q1 REPLICA IDENTITY FULL; \
             CREATE PUBLICATION {publication} FOR TABLE s, pt, q WITH (publish_via_partition_root = true)"
        ))
        .await
        .unwrap();
        let tables = r#"
[[tables]]
table = "s"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]
[[tables]]
table = "pt"
resource_type = "RESOURCE_TYPE_NOTE"
organization_column = "org"
"#;
        let text = hand_kept(env.config_text(tables));
        let cfg = || {
            let c = Config::parse(&text).unwrap();
            c.validate().unwrap();
            c
        };
        let findings = waltrail::check::run(&cfg()).await;
        assert!(
            findings
                .iter()
                .any(|f| f.status == waltrail::finding::Status::Fail
                    && f.what.contains("publish_via_partition_root")),
            "{findings:#?}"
        );
        let err = tokio::time::timeout(Duration::from_secs(30), Running::start(cfg()).join())
            .await
            .expect("refused at once")
            .expect_err("refused");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("publish_via_partition_root") && msg.contains("ALTER PUBLICATION"),
            "{msg}"
        );
        db.batch_execute(&format!(
            "ALTER PUBLICATION {publication} SET (publish_via_partition_root = false)"
        ))
        .await
        .unwrap();
        let run = Running::start(cfg());
        wait_slot(&db, &format!("slot_{}", env.name)).await;
        db.batch_execute("INSERT INTO s VALUES (1001, 'o1', 'plain-s3cr3t')")
            .await
            .unwrap();
        let run = run.until_stored(&env, 1, "the first change").await;
        run.stop().await.unwrap();
        // While capture is stopped, the publication goes through the root for one transaction that
        // writes into s while it sits below the partitioned table, and is set back.
        db.batch_execute(&format!(
            "ALTER PUBLICATION {publication} SET (publish_via_partition_root = true); \
             BEGIN; ALTER TABLE {root} ATTACH PARTITION s FOR VALUES FROM (1000) TO (2000); \
             INSERT INTO s VALUES (1500, 'o1', 'nested-s3cr3t'); \
             ALTER TABLE {root} DETACH PARTITION s; COMMIT; \
             ALTER PUBLICATION {publication} SET (publish_via_partition_root = false)"
        ))
        .await
        .unwrap();
        let err = tokio::time::timeout(Duration::from_secs(30), Running::start(cfg()).join())
            .await
            .expect("capture stops by itself")
            .expect_err("capture stops with an error");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("partitioned table public.{root}"))
                && msg.contains("publish_via_partition_root")
                && msg.contains("--accept-columns"),
            "{case}: {msg}"
        );
        // Nothing of it stored; the start recorded the publication's edit while capture was stopped.
        let items = env.items().await;
        let kinds: Vec<&str> = items.iter().map(|i| i.action.as_str()).collect();
        assert_eq!(
            kinds,
            ["AUDIT_ACTION_CREATED", "AUDIT_ACTION_GAP"],
            "{case}"
        );
        assert!(
            items[1]
                .summary
                .contains("edited while capture was stopped"),
            "{case}: {}",
            items[1].summary
        );
        assert_eq!(leaked(&env).await, 0, "{case}: no secret in clear");
    }
}

/// QA33 H1/H2: the same through a root dropped before its change is decoded. Publishing through the root
/// is set and unset in the very transaction that nests s, writes it and drops the root, so no look sees
/// it. The mapped root's change stops capture (this process saw the table partitioned); a root only the
/// publication listed, gone before this start saw it, leaves the change unplaced and a gap in the trail
/// (it was dropped silently, the slot confirmed past it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_through_a_root_dropped_before_decoding_is_never_placed_by_its_name() {
    let tables = r#"
[[tables]]
table = "s"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["value"]
[[tables]]
table = "pt"
resource_type = "RESOURCE_TYPE_NOTE"
organization_column = "org"
"#;
    let schema = |pt_more: &str| {
        format!(
            "CREATE TABLE s (id int PRIMARY KEY, org text, value text); \
         CREATE TABLE pt (id int, org text, value text{pt_more}, PRIMARY KEY (id)) PARTITION BY RANGE (id); \
         CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (1000); \
         CREATE TABLE q (id int, org text, value text, PRIMARY KEY (id)) PARTITION BY RANGE (id); \
         CREATE TABLE q1 PARTITION OF q FOR VALUES FROM (0) TO (1000); \
         ALTER TABLE s REPLICA IDENTITY FULL; ALTER TABLE pt REPLICA IDENTITY FULL; \
         ALTER TABLE pt1 REPLICA IDENTITY FULL; ALTER TABLE q REPLICA IDENTITY FULL; \
         ALTER TABLE q1 REPLICA IDENTITY FULL"
        )
    };
    let nest = |publication: &str, root: &str| {
        format!(
            "BEGIN; ALTER PUBLICATION {publication} SET (publish_via_partition_root = true); \
             ALTER TABLE {root} ATTACH PARTITION s FOR VALUES FROM (1000) TO (2000); \
             INSERT INTO s VALUES (1500, 'o1', 'nested-s3cr3t'); \
             ALTER TABLE {root} DETACH PARTITION s; DROP TABLE {root}; \
             ALTER PUBLICATION {publication} SET (publish_via_partition_root = false); COMMIT"
        )
    };
    // The mapped root, waltrail's own publication, while capture runs.
    let env = TestEnv::new("i_viaroot_dropped").await;
    let (db, run, _) = start(&env, &schema(""), tables).await;
    db.batch_execute("INSERT INTO s VALUES (1001, 'o1', 'plain-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(&nest(&format!("pub_{}", env.name), "pt"))
        .await
        .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("partitioned table public.pt") && msg.contains("--accept-columns"),
        "{msg}"
    );
    assert_eq!(env.count().await, 1, "nothing of it stored");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");

    // An unmapped root a publication kept by hand listed, dropped while capture was stopped (shaped
    // unlike any mapped table: with pt's columns it is a doubt, which --accept-columns would place there).
    let env = TestEnv::new("i_viaroot_dropped_q").await;
    let publication = format!("pub_{}", env.name);
    let db = env.pg().await;
    db.batch_execute(&format!(
        "{}; CREATE PUBLICATION {publication} FOR TABLE s, pt, q",
        schema(", note text")
    ))
    .await
    .unwrap();
    let text = hand_kept(format!("{}\n{}", env.config_text(tables), api_section()));
    let cfg = || Config::parse(&text).unwrap();
    let run = Running::start(cfg());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO s VALUES (1001, 'o1', 'plain-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    run.stop().await.unwrap();
    db.batch_execute(&nest(&publication, "q")).await.unwrap();
    db.batch_execute("INSERT INTO s VALUES (1002, 'o1', 'after-s3cr3t')")
        .await
        .unwrap();
    // The first change, the gap of the publication's edit while stopped, the change after.
    let run = Running::start(cfg());
    env.wait_for(3).await;
    run.stop().await.unwrap();
    // The next start records the gap the last one found.
    env.run_until(cfg(), 4).await;
    let gaps = env.gaps().await;
    // The publication's edit while capture was stopped, and the change that could not be placed.
    let mut tables: Vec<&str> = gaps.iter().map(|g| g.table_name.as_str()).collect();
    tables.sort();
    assert_eq!(tables, ["", "public.q"], "{gaps:#?}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// A partition dropped before capture decoded its changes, of one of two mapped tables with the same
/// columns: its table cannot be told, so its changes are placed nowhere; the trail says so (a gap recorded
/// by the next start), not only the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_cannot_be_placed_are_a_recorded_gap() {
    let env = TestEnv::new("i_unplaced").await;
    let tables = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"

[[tables]]
table = "archive"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
"#;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE events (id int, org_id text, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE ev_org1 PARTITION OF events FOR VALUES IN ('org1'); \
         CREATE TABLE archive (id int, org_id text, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE ar_org1 PARTITION OF archive FOR VALUES IN ('org1')",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    db.batch_execute("INSERT INTO events VALUES (2, 'org1'); DROP TABLE ev_org1")
        .await
        .unwrap();
    let run = Running::start(env.config(tables));
    for _ in 0..100 {
        if run
            .metrics
            .unplaced_relations
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.stop().await.unwrap();
    env.run_until(env.config(tables), 2).await;
    let gaps = env.gaps().await;
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    assert_eq!(gaps[0].table_name, "public.ev_org1");
    assert!(
        gaps[0].summary.contains("cannot be told"),
        "{}",
        gaps[0].summary
    );
}

/// QA32 M1: Postgres publishes no change written into a partition pending detach (`DETACH PARTITION …
/// CONCURRENTLY` between its two steps, or cancelled there, which leaves it so): what it takes is missing
/// from the trail, and the trail says so: `check` warns with the statement that ends it, and a look
/// records a gap for the partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_pending_detach_is_a_recorded_gap() {
    let env = TestEnv::new("i_detach_pending").await;
    let tables = EVENTS_TABLE;
    let (db, run, cfg) = start(
        &env,
        "CREATE TABLE events (id int, org_id text, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE ev_org1 PARTITION OF events FOR VALUES IN ('org1'); \
         CREATE TABLE ev_org2 PARTITION OF events FOR VALUES IN ('org2')",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1')")
        .await
        .unwrap();
    env.wait_for(1).await;
    // A transaction older than the detach holds its second step back until the timeout cancels it.
    let holder = env.pg().await;
    holder
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM events")
        .await
        .unwrap();
    db.batch_execute("SET statement_timeout = '1s'")
        .await
        .unwrap();
    db.batch_execute("ALTER TABLE events DETACH PARTITION ev_org2 CONCURRENTLY")
        .await
        .expect_err("cancelled between its steps");
    db.batch_execute("RESET statement_timeout").await.unwrap();
    holder.batch_execute("COMMIT").await.unwrap();
    db.batch_execute("INSERT INTO ev_org2 VALUES (2, 'org2')")
        .await
        .unwrap();
    let findings = waltrail::check::run(&cfg).await;
    let f = findings
        .iter()
        .find(|f| f.what.contains("ev_org2 is pending detach"))
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert!(f.fix.as_deref().unwrap_or("").contains("FINALIZE"), "{f:?}");
    // A look finds it: the reports carry the gap until the next start records it in the trail.
    wait_pending_gap(
        &env,
        "ev_org2",
        "a look records the partition pending detach",
    )
    .await;
    run.stop().await.unwrap();
    env.run_until(env.config(tables), 2).await;
    let gaps = env.gaps().await;
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    assert_eq!(gaps[0].table_name, "public.ev_org2");
    assert!(
        gaps[0].summary.contains("pending detach"),
        "{}",
        gaps[0].summary
    );
}

/// QA35 H4: the same edit made while capture is stopped, set back before the start: the start compares
/// the publication with what the last process saw (kept in its reports) and records the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_edited_while_capture_was_stopped_is_a_recorded_gap() {
    let env = TestEnv::new("i_pub_stopped_edit").await;
    let tables = EVENTS_TABLE;
    let (db, run, _) = start(&env, EVENTS_DDL, tables).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1'), (2, 'org1')")
        .await
        .unwrap();
    env.wait_for(2).await;
    run.stop().await.unwrap();
    // A plain restart of an untouched publication records nothing.
    let run = Running::start(env.config(tables));
    db.batch_execute("INSERT INTO events VALUES (3, 'org1')")
        .await
        .unwrap();
    env.wait_for(3).await;
    run.stop().await.unwrap();
    let publication = format!("pub_{}", env.name);
    for sql in [
        format!("ALTER PUBLICATION {publication} SET (publish = 'insert')"),
        "DELETE FROM events WHERE id = 1".to_owned(),
        format!(
            "ALTER PUBLICATION {publication} SET (publish = 'insert, update, delete, truncate')"
        ),
    ] {
        db.batch_execute(&sql).await.unwrap();
    }
    env.run_until(env.config(tables), 4).await;
    let items = env.items().await;
    let gaps = gaps(&items);
    assert_eq!(gaps.len(), 1, "{items:#?}");
    assert!(
        gaps[0].summary.contains("edited while capture was stopped"),
        "{}",
        gaps[0].summary
    );
    // A stamp altered in the store vouches for nothing: the next start takes the publication as edited.
    // (A newer copy of the last report, inserted at once: a mutation may take long on a busy 18.16.)
    env.ch()
        .query(
            "INSERT INTO waltrail_sources SELECT source_id, confirmed_lsn, server_lsn, last_commit_time_us, \
             reported_at_us + 1, host, version, confirm_bound_lsn, redaction_baseline, pending_gaps, 'altered' \
             FROM waltrail_sources ORDER BY reported_at_us DESC LIMIT 1",
        )
        .execute()
        .await
        .unwrap();
    let run = Running::start(env.config(tables));
    env.wait_for(5).await;
    run.stop().await.unwrap();
    let gaps = env.items().await.into_iter().filter(|i| i.is_gap()).count();
    assert_eq!(gaps, 2);
}

/// QA37 M4: the publication dropped while capture is stopped, and a change written before it exists again.
/// Postgres cannot decode that change through the publication the start creates anew: capture stops with
/// the fix instead of failing on the raw error for ever; `--accept-gap` moves the slot to the present and
/// the skipped stretch is a gap in the trail. Then an ordinary restart records nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_dropped_while_capture_was_stopped_stops_with_the_fix_and_can_be_accepted() {
    let env = TestEnv::new("i_pub_dropped_stopped").await;
    let tables = EVENTS_TABLE;
    let (db, run, _) = start(&env, EVENTS_DDL, tables).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    let publication = format!("pub_{}", env.name);
    db.batch_execute(&format!("DROP PUBLICATION {publication}"))
        .await
        .unwrap();
    let lost_from = wal_lsn(&db).await;
    db.batch_execute("INSERT INTO events VALUES (2, 'org1')")
        .await
        .unwrap();
    let lost_to = wal_lsn(&db).await;
    let msg = Running::start(env.config(tables)).stops_with().await;
    assert!(
        msg.contains(&format!("publication {publication} did not exist"))
            && msg.contains("--accept-gap"),
        "{msg}"
    );
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    // The start moves the slot past the changes it cannot decode and records the gaps.
    let run = run.until_stored(&env, 3, "the accepted gaps").await;
    db.batch_execute("INSERT INTO events VALUES (3, 'org1')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 4, "the change after the gap").await;
    run.stop().await.unwrap();
    let run = Running::start(env.config(tables));
    db.batch_execute("INSERT INTO events VALUES (4, 'org1')")
        .await
        .unwrap();
    let run = run
        .until_stored(&env, 5, "a change after a plain restart")
        .await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let ids: Vec<&str> = items
        .iter()
        .filter(|i| !i.is_gap())
        .map(|i| i.resource_id.as_str())
        .collect();
    assert_eq!(ids, ["1", "3", "4"], "{items:#?}");
    let reasons = gap_reasons(&items);
    assert_eq!(reasons.len(), 2, "{reasons:#?}");
    // The start's record of the drop bounds the stretch written without the publication, ahead of where
    // capture resumed (QA38 M2): the lost change lies inside it.
    let dropped = items
        .iter()
        .find(|i| {
            i.action == "AUDIT_ACTION_GAP"
                && i.summary.contains("dropped since capture last saw it")
        })
        .expect("the drop's record");
    let gap = &dropped.diff_json()["gap"];
    let (resumed, until) = (
        lsn_of(gap["to_lsn"].as_str().unwrap()),
        lsn_of(gap["until_lsn"].as_str().expect("a bound")),
    );
    assert!(
        resumed <= lost_from && lost_to <= until,
        "{resumed:X} {lost_from:X} {lost_to:X} {until:X}: {}",
        dropped.summary
    );
    assert!(
        dropped.summary.contains("may have a gap"),
        "{}",
        dropped.summary
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("dropped since capture last saw it"))
            && reasons
                .iter()
                .any(|r| r.contains("did not exist when changes") && r.contains("--accept-gap")),
        "{reasons:#?}"
    );
}

/// QA37 M1: a start that reshapes the publication itself (a table newly mapped) and is then refused (the
/// slot is missing) reports the publication as it left it: the start that accepts the slot's gap records
/// that gap alone, not waltrail's own edit as one made while capture was stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_that_reshaped_the_publication_leaves_no_false_edit_gap() {
    let env = TestEnv::new("i_pub_own_edit").await;
    let one = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
"#;
    let two = format!(
        "{one}
[[tables]]
table = \"notes\"
resource_type = \"RESOURCE_TYPE_NOTE\"
organization_column = \"org_id\"
"
    );
    let (db, run, _) = start(
        &env,
        "CREATE TABLE events (id int PRIMARY KEY, org_id text); ALTER TABLE events REPLICA IDENTITY FULL; \
         CREATE TABLE notes (id int PRIMARY KEY, org_id text); ALTER TABLE notes REPLICA IDENTITY FULL",
        one,
    )
    .await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    db.batch_execute(&format!(
        "SELECT pg_drop_replication_slot('slot_{}')",
        env.name
    ))
    .await
    .unwrap();
    let msg = Running::start(env.config(&two)).stops_with().await;
    assert!(
        msg.contains("missing") && msg.contains("--accept-gap"),
        "{msg}"
    );
    let run = Running::start_with(
        env.config(&two),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    let run = run.until_stored(&env, 2, "the slot's gap").await;
    db.batch_execute("INSERT INTO notes VALUES (1, 'org1')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 3, "the newly mapped table").await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let reasons = gap_reasons(&items);
    assert_eq!(reasons.len(), 1, "{reasons:#?}");
    assert!(reasons[0].contains("slot was missing"), "{reasons:#?}");
}

/// QA38 H1: an accepted gap of a table that left the publication while capture was stopped is kept pending
/// before the start puts the table back (and reports the publication so): a start that cannot go on after
/// that (the slot held by another process, a retry in the same process) leaves it to the next, which finds
/// the publication whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_publication_gap_survives_a_start_that_fails_after_the_repair() {
    let env = TestEnv::new("i_pub_gap_kept").await;
    let tables = EVENTS_TABLE;
    let (db, run, _) = start(&env, EVENTS_DDL, tables).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    let publication = format!("pub_{}", env.name);
    let slot = format!("slot_{}", env.name);
    db.batch_execute(&format!(
        "ALTER PUBLICATION {publication} DROP TABLE events"
    ))
    .await
    .unwrap();
    db.batch_execute("INSERT INTO events VALUES (2, 'org1')")
        .await
        .unwrap();
    // Another process holds the slot: the accepting start repairs the publication, then retries.
    let cfg = env.config(tables);
    let mut holder = waltrail::capture::replication::ReplicationConnection::connect(
        &waltrail::pg::params(&cfg).unwrap(),
    )
    .await
    .unwrap();
    holder
        .start_replication(&slot, waltrail::capture::Lsn(0), &publication, false, false)
        .await
        .unwrap();
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    let mut repaired = false;
    for _ in 0..300 {
        repaired = db
            .query_opt(
                "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'events'",
                &[&publication],
            )
            .await
            .unwrap()
            .is_some();
        if repaired {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(repaired, "the accepting start puts the table back");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(holder);
    let run = run.until_stored(&env, 2, "the accepted gap").await;
    db.batch_execute("INSERT INTO events VALUES (3, 'org1')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 3, "a change after the gap").await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let reasons = gap_reasons(&items);
    assert_eq!(reasons.len(), 1, "{reasons:#?}");
    assert!(
        reasons[0].contains("was out of publication"),
        "{reasons:#?}"
    );
}

/// QA33 M1: a publication kept by hand, set to publish through the root while capture streams: the look
/// stops capture; `--accept-gap` cannot set back a publication waltrail does not keep, so the operator
/// does, and the start after that records the gap (it left none before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_kept_publication_set_back_by_hand_leaves_its_gap_recorded() {
    let env = TestEnv::new("i_handkept_setback").await;
    let db = env.pg().await;
    let publication = format!("pub_{}", env.name);
    db.batch_execute(&format!(
        "CREATE TABLE events (id int PRIMARY KEY, org_id text); ALTER TABLE events REPLICA IDENTITY FULL; \
         CREATE PUBLICATION {publication} FOR TABLE events"
    ))
    .await
    .unwrap();
    let tables = EVENTS_TABLE;
    let text = hand_kept(env.config_text(tables));
    let cfg = || Config::parse(&text).unwrap();
    let run = Running::start(cfg());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(&format!(
        "ALTER PUBLICATION {publication} SET (publish_via_partition_root = true)"
    ))
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("publish_via_partition_root") && msg.contains("that start records the gap"),
        "{msg}"
    );
    db.batch_execute(&format!(
        "ALTER PUBLICATION {publication} SET (publish_via_partition_root = false); \
         INSERT INTO events VALUES (2, 'org1')"
    ))
    .await
    .unwrap();
    env.run_until(cfg(), 3).await;
    let items = env.items().await;
    let gaps = gaps(&items);
    assert_eq!(gaps.len(), 1, "{items:#?}");
    assert!(
        gaps[0].summary.contains("publish_via_partition_root"),
        "{}",
        gaps[0].summary
    );
}

/// QA33 H5: a publication narrowed and set back within one transaction (or between two looks) left a
/// delete out of the stream, and no look saw anything wrong. Its row versions changed: the next look
/// records a gap, written by the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_narrowed_and_set_back_between_looks_is_a_recorded_gap() {
    let env = TestEnv::new("i_pub_toggled").await;
    let tables = EVENTS_TABLE;
    let (db, run, _) = start(&env, EVENTS_DDL, tables).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1'), (2, 'org1')")
        .await
        .unwrap();
    env.wait_for(2).await;
    let publication = format!("pub_{}", env.name);
    db.batch_execute(&format!(
        "BEGIN; ALTER PUBLICATION {publication} SET (publish = 'insert'); \
         DELETE FROM events WHERE id = 1; \
         ALTER PUBLICATION {publication} SET (publish = 'insert, update, delete, truncate'); COMMIT"
    ))
    .await
    .unwrap();
    wait_pending_gap(&env, "was edited", "a look finds the publication edited").await;
    run.stop().await.unwrap();
    env.run_until(env.config(tables), 3).await;
    let items = env.items().await;
    let gaps = gaps(&items);
    assert_eq!(gaps.len(), 1, "{items:#?}");
    assert!(
        gaps[0].summary.contains("was edited"),
        "{}",
        gaps[0].summary
    );
    // QA35 H3: a schema's entry of a publication kept by hand, dropped and added back around a change.
    let env2 = TestEnv::new("i_pub_schema_toggled").await;
    let db2 = env2.pg().await;
    let publication2 = format!("pub_{}", env2.name);
    db2.batch_execute(&format!(
        "CREATE TABLE events (id int PRIMARY KEY, org_id text); ALTER TABLE events REPLICA IDENTITY FULL; \
         CREATE PUBLICATION {publication2} FOR TABLES IN SCHEMA public"
    ))
    .await
    .unwrap();
    let text2 = hand_kept(env2.config_text(tables));
    let run2 = Running::start(Config::parse(&text2).unwrap());
    wait_slot(&db2, &format!("slot_{}", env2.name)).await;
    db2.batch_execute("INSERT INTO events VALUES (1, 'org1')")
        .await
        .unwrap();
    let run2 = run2.until_stored(&env2, 1, "the first change").await;
    db2.batch_execute(&format!(
        "BEGIN; ALTER PUBLICATION {publication2} DROP TABLES IN SCHEMA public; \
         UPDATE events SET org_id = 'org1' WHERE id = 1; \
         ALTER PUBLICATION {publication2} ADD TABLES IN SCHEMA public; COMMIT"
    ))
    .await
    .unwrap();
    wait_pending_gap(
        &env2,
        "was edited",
        "a look finds the schema's entry made anew",
    )
    .await;
    run2.stop().await.unwrap();
    // And a plain restart of an untouched publication records nothing more.
    let run = Running::start(env.config(tables));
    db.batch_execute("INSERT INTO events VALUES (3, 'org1')")
        .await
        .unwrap();
    env.wait_for(4).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.stop().await.unwrap();
    let run = Running::start(env.config(tables));
    db.batch_execute("INSERT INTO events VALUES (4, 'org1')")
        .await
        .unwrap();
    env.wait_for(5).await;
    run.stop().await.unwrap();
    assert_eq!(env.count().await, 5);
}

/// QA22 H3/H4: a partition moved from the redacting table to another one (mapped, or no longer mapped)
/// while its changes wait in the slot: the catalog says where it is now, not where it was, so its changes
/// are never placed under the other table (in clear) nor left out; capture stops, and --accept-columns is
/// the operator's word. A partition created in place (`PARTITION OF`) goes on without a stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_to_another_table_while_its_changes_wait_is_never_misplaced() {
    let env = TestEnv::new("i_moved_part").await;
    let table = |name: &str, redact: &str| {
        format!(
            r#"
[[tables]]
table = "{name}"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = [{redact}]
"#
        )
    };
    let tables = format!("{}{}", table("secrets", r#""value""#), table("notes", ""));
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int, org text, label text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE secrets_o1 PARTITION OF secrets FOR VALUES IN ('o1'); \
         CREATE TABLE notes (id int, org text, label text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE notes_o2 PARTITION OF notes FOR VALUES IN ('o2')",
        &tables,
    )
    .await;
    // Created in place while capture runs, then written: no stop.
    db.batch_execute("CREATE TABLE secrets_o3 PARTITION OF secrets FOR VALUES IN ('o3')")
        .await
        .unwrap();
    db.batch_execute(
        "INSERT INTO secrets VALUES (3, 'o3', 'l3', 'three-s3cr3t'), (1, 'o1', 'l1', 'one-s3cr3t')",
    )
    .await
    .unwrap();
    let run = run
        .until_stored(&env, 2, "partitions created in place")
        .await;
    let accepting = || {
        Running::start_with(
            env.config(&tables),
            waltrail::pipeline::RunOptions {
                accept_columns: true,
                ..Default::default()
            },
        )
    };
    // Created apart, attached, loaded at once: nothing proves the attach came before the load (a
    // partition moved from notes between two looks reads the same), so capture stops, saying how to
    // avoid it; the operator's word takes it.
    for stmt in [
        "CREATE TABLE secrets_o4 (LIKE secrets)",
        "ALTER TABLE secrets ATTACH PARTITION secrets_o4 FOR VALUES IN ('o4')",
        "INSERT INTO secrets VALUES (4, 'o4', 'l4', 'four-s3cr3t')",
    ] {
        db.batch_execute(stmt).await.unwrap();
    }
    let msg = run.stops_with().await;
    assert!(
        msg.contains("secrets_o4") && msg.contains("PARTITION OF"),
        "{msg}"
    );
    let run = accepting()
        .until_stored(&env, 3, "attach, then load, accepted")
        .await;
    // Two partitions in doubt in one transaction (QA27 M2): the stop names both, since the flag takes the
    // whole transaction.
    db.batch_execute(
        "BEGIN; CREATE TABLE secrets_o5 (LIKE secrets); CREATE TABLE secrets_o6 (LIKE secrets); \
         ALTER TABLE secrets ATTACH PARTITION secrets_o5 FOR VALUES IN ('o5'); \
         ALTER TABLE secrets ATTACH PARTITION secrets_o6 FOR VALUES IN ('o6'); \
         INSERT INTO secrets VALUES (15, 'o5', 'l15', 'x-s3cr3t'), (16, 'o6', 'l16', 'y-s3cr3t'); COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("secrets_o5")
            && msg.contains("secrets_o6")
            && msg.contains("holds 2 change(s)"),
        "{msg}"
    );
    let run = accepting().until_stored(&env, 5, "both, accepted").await;
    // QA24: a partition renamed to notes' name for its change, then dropped: never stored as notes'.
    db.batch_execute(
        "BEGIN; CREATE TABLE secrets_o7 PARTITION OF secrets FOR VALUES IN ('o7'); \
         ALTER TABLE notes RENAME TO notes_x; ALTER TABLE secrets_o7 RENAME TO notes; \
         INSERT INTO secrets VALUES (7, 'o7', 'l7', 'seven-s3cr3t'); \
         DROP TABLE notes; ALTER TABLE notes_x RENAME TO notes; COMMIT",
    )
    .await
    .unwrap();
    db.batch_execute("INSERT INTO secrets VALUES (5, 'o3', 'l5', 'five-s3cr3t')")
        .await
        .unwrap();
    let run = run
        .until_stored(&env, 6, "a change after the renamed one")
        .await;
    let items = env.items().await;
    assert!(
        items.iter().all(|i| i.table_name == "public.secrets"),
        "{items:#?}"
    );
    run.stop().await.unwrap();
    // While stopped: a change to the partition, then it is moved to notes.
    db.batch_execute(
        "UPDATE secrets SET value = 'moved-s3cr3t' WHERE id = 1; \
         ALTER TABLE secrets DETACH PARTITION secrets_o1; \
         ALTER TABLE notes ATTACH PARTITION secrets_o1 FOR VALUES IN ('o1')",
    )
    .await
    .unwrap();
    let msg = refused(&env, &tables).await;
    assert!(
        msg.contains("secrets_o1")
            && msg.contains("public.secrets")
            && msg.contains("--accept-columns"),
        "{msg}"
    );
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    let stored = |items: &[Item]| items.iter().filter(|i| !i.is_gap()).count();
    assert_eq!(stored(&env.items().await), 6, "nothing stored under notes");
    // The same move onto a table no longer mapped: never left out silently either.
    let secrets_only = table("secrets", r#""value""#);
    let msg = refused(&env, &secrets_only).await;
    assert!(msg.contains("secrets_o1"), "{msg}");
    let items = env.items().await;
    assert_eq!(stored(&items), 6, "only gaps besides: {items:#?}");
    assert!(
        items.iter().any(|i| i.action == "AUDIT_ACTION_GAP"
            && i.table_name == "public.notes"
            && i.summary.contains("cannot be told")),
        "the renamed partition's change is a recorded gap: {items:#?}"
    );
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// The same move inside the transaction that created the partition, in a savepoint (the link then has the
/// subtransaction's id, not the change's): never taken for a partition that was only ever notes'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_created_written_and_moved_in_one_transaction_is_never_misplaced() {
    let env = TestEnv::new("i_moved_subxact").await;
    let tables = SECRETS_AND_NOTES;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int, org text, label text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE secrets_o1 PARTITION OF secrets FOR VALUES IN ('o1'); \
         CREATE TABLE notes (id int, org text, label text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE notes_o2 PARTITION OF notes FOR VALUES IN ('o2')",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'l1', 'one-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(
        "BEGIN; SAVEPOINT s; CREATE TABLE secrets_o5 PARTITION OF secrets FOR VALUES IN ('o5'); \
         INSERT INTO secrets VALUES (5, 'o5', 'l5', 'five-s3cr3t'); \
         ALTER TABLE secrets DETACH PARTITION secrets_o5; \
         ALTER TABLE notes ATTACH PARTITION secrets_o5 FOR VALUES IN ('o5'); RELEASE s; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("secrets_o5") && msg.contains("public.secrets"),
        "{msg}"
    );
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

/// QA23 H3, H4, H5 and M1: a partition renamed to a mapped table's name for its change; moved while
/// running and the table it left altered after (its columns now prove nothing of then); moved while
/// stopped with its creation's traces rewritten by a GRANT. Never placed under the other table, and one
/// `--accept-columns` takes the refused transaction only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_renamed_or_moved_with_its_traces_rewritten_is_never_misplaced() {
    let env = TestEnv::new("i_moved_forged").await;
    let tables = SECRETS_AND_NOTES;
    let (db, run, _) = start(
        &env,
        "CREATE TABLE secrets (id int, org text, label text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE secrets_o1 PARTITION OF secrets FOR VALUES IN ('o1'); \
         CREATE TABLE secrets_o2 PARTITION OF secrets FOR VALUES IN ('o2'); \
         CREATE TABLE secrets_o3 PARTITION OF secrets FOR VALUES IN ('o3'); \
         CREATE TABLE notes (id int, org text, label text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE notes_o9 PARTITION OF notes FOR VALUES IN ('o9')",
        tables,
    )
    .await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'l1', 'one-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    // Renamed to the mapped table's name for its change (and back): still secrets' partition.
    db.batch_execute(
        "BEGIN; ALTER TABLE notes RENAME TO notes_x; ALTER TABLE secrets_o1 RENAME TO notes; \
         INSERT INTO secrets VALUES (2, 'o1', 'l2', 'two-s3cr3t'); \
         ALTER TABLE notes RENAME TO secrets_o1; ALTER TABLE notes_x RENAME TO notes; COMMIT",
    )
    .await
    .unwrap();
    let run = run
        .until_stored(&env, 2, "the renamed partition's change")
        .await;
    let items = env.items().await;
    assert!(
        items.iter().all(|i| i.table_name == "public.secrets"),
        "{items:#?}"
    );
    // Moved while running, and the table it left given a column after.
    db.batch_execute(
        "BEGIN; INSERT INTO secrets VALUES (3, 'o2', 'l3', 'three-s3cr3t'); \
         ALTER TABLE secrets DETACH PARTITION secrets_o2; \
         ALTER TABLE notes ATTACH PARTITION secrets_o2 FOR VALUES IN ('o2'); \
         ALTER TABLE secrets ADD COLUMN extra text; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("secrets_o2"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    // While stopped: moved, its creation's traces rewritten in the moving transaction.
    db.batch_execute(
        "BEGIN; INSERT INTO secrets VALUES (4, 'o3', 'l4', 'four-s3cr3t', NULL); \
         ALTER TABLE secrets DROP COLUMN extra; ALTER TABLE secrets DETACH PARTITION secrets_o3; \
         ALTER TABLE notes ATTACH PARTITION secrets_o3 FOR VALUES IN ('o3'); \
         GRANT SELECT (ctid) ON secrets_o3 TO PUBLIC; COMMIT",
    )
    .await
    .unwrap();
    // One --accept-columns takes the refused transaction, not the next one in doubt.
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_columns: true,
            ..Default::default()
        },
    );
    let msg = run.stops_with().await;
    assert!(msg.contains("secrets_o3"), "{msg}");
    let items = env.items().await;
    assert_eq!(
        items
            .iter()
            .filter(|i| i.resource_id.starts_with('3'))
            .count(),
        1,
        "the accepted one is stored once: {items:#?}"
    );
    assert!(
        !items.iter().any(|i| i.resource_id.starts_with('4')),
        "the next one in doubt is not: {items:#?}"
    );
    // What came before it was confirmed: the next start with the flag begins there and takes it.
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_columns: true,
            ..Default::default()
        },
    )
    .until_stored(&env, 4, "the next transaction accepted")
    .await;
    run.stop().await.unwrap();
}

/// QA25: a partition created apart, then attached, written and moved in one transaction; and a mapped
/// table attached under another mapped table, written through it: never stored under the inner table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moved_in_its_writing_transaction_or_a_nested_mapped_table_stops() {
    let env = TestEnv::new("i_nested_mapped").await;
    let tables = SECRETS_AND_NOTES;
    let ddl = "CREATE TABLE secrets (id int, org text, label text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE secrets_o1 PARTITION OF secrets FOR VALUES IN ('o1'); \
         CREATE TABLE notes (id int, org text, label text, value text, PRIMARY KEY (id, org)) PARTITION BY LIST (org); \
         CREATE TABLE notes_o9 PARTITION OF notes FOR VALUES IN ('o9')";
    let (db, run, _) = start(&env, ddl, tables).await;
    db.batch_execute("INSERT INTO secrets VALUES (1, 'o1', 'l1', 'one-s3cr3t')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute("CREATE TABLE apart (LIKE secrets)")
        .await
        .unwrap();
    db.batch_execute(
        "BEGIN; ALTER TABLE secrets ATTACH PARTITION apart FOR VALUES IN ('o5'); \
         INSERT INTO secrets VALUES (5, 'o5', 'l5', 'five-s3cr3t'); \
         ALTER TABLE secrets DETACH PARTITION apart; \
         ALTER TABLE notes ATTACH PARTITION apart FOR VALUES IN ('o5'); COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("apart"), "{msg}");
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
    // Nested: notes attached under secrets, a row written through secrets lands in notes_o9.
    let env = TestEnv::new("i_nested_mapped2").await;
    let (db, run, _) = start(&env, ddl, tables).await;
    db.batch_execute(
        "ALTER TABLE secrets ATTACH PARTITION notes FOR VALUES IN ('o9'); \
         INSERT INTO secrets VALUES (9, 'o9', 'l9', 'nine-s3cr3t')",
    )
    .await
    .unwrap();
    // Whichever sees it first: the Relation, or the watchdog's look (a leaf under two mapped tables).
    let msg = run.stops_with().await;
    assert!(
        (msg.contains("public.notes") && msg.contains("public.secrets"))
            || msg.contains("more than one mapped table"),
        "{msg}"
    );
    assert_eq!(leaked(&env).await, 0, "no secret in clear");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacted_primary_key_is_refused_as_the_resource_id() {
    let env = TestEnv::new("i_redacted_pk").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE api_keys (key_hash text PRIMARY KEY, name text)")
        .await
        .unwrap();
    let tables = r#"
[[tables]]
table = "api_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
redact_columns = ["key_hash"]
"#;
    let run = Running::start(env.config(tables));
    let err = tokio::time::timeout(Duration::from_secs(30), run.join())
        .await
        .expect("refused at once")
        .expect_err("refused");
    assert!(
        format!("{err:#}").contains("resource id would be redacted column \"key_hash\""),
        "{err:#}"
    );
    let findings = waltrail::check::run(&env.config(tables)).await;
    assert!(
        findings
            .iter()
            .any(|f| f.status == waltrail::finding::Status::Fail
                && f.what.contains("primary key [\"key_hash\"] is redacted")),
        "{findings:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncates_and_moves_are_seen_by_every_organization_they_touch() {
    let env = TestEnv::new("i_scope").await;
    let (db, run, cfg) = start(&env, GATEWAYS, GATEWAY_TABLE).await;
    db.batch_execute(
        "INSERT INTO gateways VALUES ('g1', 'org1', 'p1', 'moving', 'x', NULL, NULL), \
                                     ('g2', 'org2', 'p9', 'stays', 'x', NULL, NULL); \
         UPDATE gateways SET org_id = 'org2', project_id = 'p9' WHERE id = 'g1'; \
         TRUNCATE gateways",
    )
    .await
    .unwrap();
    env.wait_for(5).await;
    let api = Api::start(cfg.clone()).await;
    let org1 = api.items(ORG1_ADMIN, "/api/v1/orgs/org1/audit_logs").await;
    let org2 = api.items(ORG2_ADMIN, "/api/v1/orgs/org2/audit_logs").await;
    let actions = |v: &[Value]| {
        let mut a: Vec<String> = v
            .iter()
            .map(|i| i["action"].as_str().unwrap().to_owned())
            .collect();
        a.sort();
        a
    };
    assert_eq!(
        actions(&org1),
        [
            "AUDIT_ACTION_CREATED",
            "AUDIT_ACTION_MOVED",
            "AUDIT_ACTION_TRUNCATED"
        ],
        "org1 sees the resource leave, and the truncate of a table holding its resources"
    );
    assert_eq!(
        actions(&org2),
        [
            "AUDIT_ACTION_CREATED",
            "AUDIT_ACTION_MOVED",
            "AUDIT_ACTION_TRUNCATED"
        ],
        "org2 sees it arrive"
    );
    let moved = |v: &[Value]| {
        v.iter()
            .find(|i| i["action"] == "AUDIT_ACTION_MOVED")
            .unwrap()
            .clone()
    };
    let (left, arrived) = (moved(&org1), moved(&org2));
    assert_eq!(
        (
            left["organization_id"].as_str(),
            arrived["organization_id"].as_str()
        ),
        (Some("org1"), Some("org2"))
    );
    assert_ne!(left["id"], arrived["id"]);
    assert_eq!(left["event_id"], arrived["event_id"]);
    let (_, detail) = api
        .get(
            ORG1_ADMIN,
            &format!(
                "/api/v1/orgs/org1/audit_logs/{}",
                left["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(
        detail["data"]["changes"]["org_id"],
        json!({"before": "org1", "after": "org2"})
    );
    let truncated = org1
        .iter()
        .find(|i| i["action"] == "AUDIT_ACTION_TRUNCATED")
        .unwrap();
    assert_eq!(truncated["platform_wide"], true);
    // A member (members_see_org_items off) sees neither platform-wide nor org-level items.
    let member = api.items(ORG1_MEMBER, "/api/v1/orgs/org1/audit_logs").await;
    assert!(member.iter().all(|i| i["platform_wide"] == false));
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_commit_time_from_a_replication_origin_is_not_skipped_or_expired() {
    let env = TestEnv::new("i_origin").await;
    let (db, run, cfg) = start(&env, GATEWAYS, GATEWAY_TABLE).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'org1', 'p1', 'now', 'x', NULL, NULL)")
        .await
        .unwrap();
    env.wait_for(1).await;
    let api = Api::start(cfg.clone()).await;
    // A poller walking oldest-first holds a cursor past everything so far.
    let (_, first) = api
        .get(ORG1_ADMIN, "/api/v1/orgs/org1/audit_logs?order=asc")
        .await;
    let cursor = first["data"]["next_cursor"].as_str().unwrap().to_owned();
    assert!(!cursor.is_empty());
    // A transaction applied through a replication origin reports the origin's commit time: 40 days ago.
    for sql in [
        "SELECT pg_replication_origin_create('sync_job')",
        "SELECT pg_replication_origin_session_setup('sync_job')",
        "BEGIN; \
         SELECT pg_replication_origin_xact_setup('0/1000', now() - interval '40 days'); \
         INSERT INTO gateways VALUES ('g2', 'org1', 'p1', 'from-the-past', 'x', NULL, NULL); \
         COMMIT",
        "SELECT pg_replication_origin_session_reset()",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    env.wait_for(2).await;
    let old = by_display(&env.items().await, "from-the-past").occurred_at_us;
    assert!(
        old < waltrail::store::row::now_us() - 39 * 86_400_000_000,
        "the item carries the origin's commit time"
    );
    let next = api
        .items(
            ORG1_ADMIN,
            &format!("/api/v1/orgs/org1/audit_logs?order=asc&cursor={cursor}"),
        )
        .await;
    assert_eq!(
        next.iter()
            .map(|i| i["resource_display"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["from-the-past"],
        "the poller sees it, though its commit time is older than everything it saw"
    );
    let listed = api.items(ORG1_ADMIN, "/api/v1/orgs/org1/audit_logs").await;
    assert_eq!(listed.len(), 2, "not hidden by the 30-day window");
    // The export holds what the list shows, the old commit time last; verified offline, it is whole.
    let export = api
        .text(
            ORG1_ADMIN,
            "/api/v1/orgs/org1/audit_logs/export?format=ndjson",
        )
        .await;
    let exported: Vec<&str> = export
        .lines()
        .filter(|l| l.contains(r#""record":"#))
        .collect();
    // Its own record too, when capture stored it before the export read the store.
    assert!((2..=3).contains(&exported.len()), "{export}");
    assert!(
        exported.last().is_some_and(|l| l.contains("from-the-past")),
        "{export}"
    );
    let verdict =
        waltrail::audit::chain::verify_export(export.lines().map(|l| Ok(l.to_owned())), &[])
            .unwrap();
    assert!(
        verdict
            .reports
            .iter()
            .all(|r| r.failure.is_none() && r.unjudged == 0),
        "{verdict:#?}"
    );
    // A change after it: the old commit time sits inside the chain, which the store's verification (the
    // retention window by commit time) must not read as a deleted position.
    db.batch_execute("INSERT INTO gateways VALUES ('g3', 'org1', 'p1', 'after', 'x', NULL, NULL)")
        .await
        .unwrap();
    for _ in 0..100 {
        if env
            .items()
            .await
            .iter()
            .any(|i| i.resource_display == "after")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = waltrail::store::integrity::verify_org(
        &env.ch(),
        "org1",
        Some(waltrail::store::query::retention_cutoff_us(30)),
        None,
        &[],
    )
    .await
    .unwrap();
    assert!(stored.iter().all(|r| r.failure.is_none()), "{stored:#?}");
    waltrail::store::retention::drop_expired(
        &env.ch(),
        &waltrail::store::cluster::Layout::Single,
        30,
    )
    .await
    .unwrap();
    assert!(
        env.items()
            .await
            .iter()
            .any(|i| i.resource_display == "from-the-past"),
        "its partition is not dropped under it"
    );
    run.stop().await.unwrap();
}

/// A signed export of a store older than the retention window: the items of the cutoff's day committed
/// and stored before the cutoff's time of day are still kept (partitions drop whole days), the export's
/// seal says it holds everything from that day's start, so it must hold them, or its own checkpoints would
/// read as a deletion on an honest store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_export_holds_the_whole_first_day_retention_keeps() {
    let env = TestEnv::new("i_cutoff_day").await;
    let db = env.pg().await;
    db.batch_execute(GATEWAYS).await.unwrap();
    let key = "5555555555555555555555555555555555555555555555555555555555555555";
    let text = format!(
        "{}
{}",
        env.config_text(GATEWAY_TABLE),
        api_section()
    );
    let config = || {
        let mut cfg = Config::parse(&text).expect("config parses");
        cfg.validate().expect("config is valid");
        cfg.integrity.signing_key = Some(waltrail::config::Secret(key.into()));
        cfg
    };
    let cfg = config();
    let run = Running::start(config());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // Two changes on the cutoff's day, before the cutoff's time of day (through a replication origin,
    // which carries its commit time), then one now.
    let day = 86_400_000_000i64;
    let cutoff = waltrail::store::query::retention_cutoff_us(cfg.retention.days);
    let day_start = waltrail::store::query::retained_since_us(cfg.retention.days);
    let early = day_start + ((cutoff - day_start) / 2).min(60_000_000);
    let changes: Vec<(i64, String)> = [early, early + 1_000_000]
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t,
                format!("INSERT INTO gateways VALUES ('e{i}', 'org1', 'p1', 'early-{i}', 'x', NULL, NULL)"),
            )
        })
        .collect();
    commit_at(&db, "i_cutoff_sync", &changes).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'org1', 'p1', 'now', 'x', NULL, NULL)")
        .await
        .unwrap();
    env.wait_for(3).await;
    run.stop().await.unwrap();
    assert!(cutoff - early < day && early < cutoff);
    // As if they had been stored when they were committed (the stored time is not hashed).
    mutate(
        &env.ch(),
        &format!("ALTER TABLE audit_items UPDATE ingested_at_us = occurred_at_us + 5000000 WHERE occurred_at_us < {cutoff}"),
    )
    .await;
    let api = Api::start(Arc::new(cfg)).await;
    let export = api
        .text(
            ORG1_ADMIN,
            "/api/v1/orgs/org1/audit_logs/export?format=ndjson",
        )
        .await;
    for name in ["early-0", "early-1", "now"] {
        assert!(export.contains(name), "{name} exported: {export}");
    }
    let public = waltrail::audit::chain::SigningKey::from_hex(key)
        .unwrap()
        .public_key();
    let verdict =
        waltrail::audit::chain::verify_export(export.lines().map(|l| Ok(l.to_owned())), &[public])
            .unwrap();
    assert!(verdict.sealed.is_some(), "{verdict:#?}");
    assert!(
        verdict.failure.is_none()
            && verdict
                .reports
                .iter()
                .all(|r| r.failure.is_none() && r.unjudged == 0),
        "{verdict:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_actor_per_item_and_how_it_was_known() {
    let env = TestEnv::new("i_actor").await;
    let ddl = format!("{GATEWAYS}; {SESSIONS}");
    let tables = format!("{GATEWAY_TABLE}\n{ATTRIBUTION}");
    let (db, run, cfg) = start(&env, &ddl, &tables).await;
    db.batch_execute(
        "INSERT INTO accounts VALUES ('alice', 'alice@example.com'), ('bob', 'bob@example.com'); \
         INSERT INTO sessions VALUES ('s_bob', 'bob', 'dashboard', '10.0.0.2', 'Firefox'); \
         INSERT INTO gateways VALUES ('g1', 'org1', 'p1', 'gw', 'x', 'alice', NULL);",
    )
    .await
    .unwrap();
    // Bob's request names only his session; the row's updated_by still says alice (the earlier editor).
    db.batch_execute(
        r#"BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"session_id": "s_bob"}');
           UPDATE gateways SET name = 'by-bob' WHERE id = 'g1';
           COMMIT;
           UPDATE gateways SET name = 'by-nobody', updated_by = NULL WHERE id = 'g1';"#,
    )
    .await
    .unwrap();
    env.wait_for(3).await;
    let items = env.items().await;
    let bob = by_display(&items, "by-bob");
    assert_eq!(
        (
            bob.principal_id.as_str(),
            bob.actor_source.as_str(),
            bob.client_ip.as_str(),
            bob.session_id.as_str(),
            bob.source.as_str()
        ),
        (
            "bob",
            "CONTEXT_SESSION",
            "10.0.0.2",
            "s_bob",
            "AUDIT_SOURCE_DASHBOARD"
        ),
        "who and how come from the same session; the stale row column is not mixed in"
    );
    let alice = by_display(&items, "gw");
    assert_eq!(
        (
            alice.principal_id.as_str(),
            alice.actor_source.as_str(),
            alice.client_ip.as_str()
        ),
        ("alice", "ROW_COLUMN", "")
    );
    let nobody = by_display(&items, "by-nobody");
    assert_eq!(
        (nobody.principal_type.as_str(), nobody.actor_source.as_str()),
        ("UNKNOWN", "NONE")
    );
    // The question a security team asks first, through the API.
    let api = Api::start(cfg.clone()).await;
    let unaccounted = api
        .items(ORG1_ADMIN, "/api/v1/orgs/org1/audit_logs?actor_source=NONE")
        .await;
    assert_eq!(unaccounted.len(), 1);
    assert_eq!(unaccounted[0]["resource_display"], "by-nobody");
    assert_eq!(
        unaccounted[0]["labels"]["actor_source"],
        "Nobody can account for it"
    );
    let (status, _) = api
        .get(
            ORG1_ADMIN,
            "/api/v1/orgs/org1/audit_logs?actor_source=GUESS",
        )
        .await;
    assert_eq!(status, 400);
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_stay_bounded_and_deep_json_stays_visible() {
    let env = TestEnv::new("i_hostile").await;
    let ddl =
        "CREATE TABLE docs (id int PRIMARY KEY, org_id text, title text, body text, meta jsonb)";
    let tables = r#"
[[tables]]
table = "docs"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org_id"
display_column = "title"

[attribution]
max_pending_bytes = 4096
"#;
    let (db, run, cfg) = start(&env, ddl, tables).await;
    // 20 MB of control characters: JSON escaping would make it 120 MB.
    db.batch_execute("INSERT INTO docs VALUES (1, 'org1', 'huge', repeat(chr(1), 20000000), NULL)")
        .await
        .unwrap();
    // jsonb nested deeper than a JSON parser's recursion limit (128 for serde_json).
    db.batch_execute(
        "INSERT INTO docs VALUES (2, 'org1', 'deep', 'b', (repeat('[', 1000) || repeat(']', 1000))::jsonb)",
    )
    .await
    .unwrap();
    // Items held for a context message are bounded in bytes: past 4 KiB they go out as they are, and the
    // rest of the transaction at once. A small transaction's are still attributed by a message that comes
    // after them.
    db.batch_execute(
        r#"BEGIN;
           INSERT INTO docs SELECT i, 'org1', 'held-' || i, repeat('x', 1000), NULL FROM generate_series(10, 19) i;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id": "late"}');
           COMMIT;
           BEGIN;
           INSERT INTO docs VALUES (30, 'org1', 'small', 'y', NULL);
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id": "late"}');
           COMMIT;"#,
    )
    .await
    .unwrap();
    env.wait_for(13).await;
    let items = env.items().await;
    let huge = by_display(&items, "huge");
    let sha: String = db
        .query_one(
            "SELECT encode(sha256(convert_to(body, 'UTF8')), 'hex') FROM docs WHERE id = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        huge.diff_json()["body"]["after"],
        json!({"truncated": true, "bytes": 20_000_000, "sha256": sha})
    );
    assert!(huge.diff.len() < 10_000, "the item stays small");
    let api = Api::start(cfg.clone()).await;
    let deep = by_display(&items, "deep");
    // serde_json's Value has the recursion limit in question: read the answer as text.
    let resp = api
        .http
        .get(format!(
            "{}/api/v1/orgs/org1/audit_logs/{}",
            api.base, deep.id
        ))
        .bearer_auth(ORG1_ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#""meta":{"after":[[[[[[[[[["#),
        "the change is shown: {:.300}",
        text
    );
    let held: Vec<&Item> = items
        .iter()
        .filter(|i| i.resource_display.starts_with("held-"))
        .collect();
    assert_eq!(held.len(), 10);
    assert!(
        held.iter().all(|i| i.principal_id.is_empty()),
        "past the byte bound they went out before the message came"
    );
    assert_eq!(by_display(&items, "small").principal_id, "late");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latin1_database_with_a_non_ascii_column_name() {
    let env = TestEnv::new("i_latin1").await;
    let admin = {
        let url = env
            .pg_url
            .replace(&format!("dbname={}", env.name), "dbname=postgres");
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connect to postgres");
        tokio::spawn(conn);
        c
    };
    for sql in [
        format!("DROP DATABASE {} WITH (FORCE)", env.name),
        format!(
            "CREATE DATABASE {} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
            env.name
        ),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    let ddl = "CREATE TABLE personnes (id int PRIMARY KEY, \"prénom\" text)";
    let tables = r#"
[[tables]]
table = "personnes"
resource_type = "RESOURCE_TYPE_USER"
display_column = "prénom"
"#;
    let (db, run, _) = start(&env, ddl, tables).await;
    db.batch_execute("INSERT INTO personnes VALUES (1, 'Zoé')")
        .await
        .unwrap();
    env.wait_for(1).await;
    let items = env.items().await;
    assert_eq!(items[0].resource_display, "Zoé");
    assert_eq!(items[0].diff_json()["prénom"], json!({"after": "Zoé"}));
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_that_leaves_changes_out_is_refused() {
    let env = TestEnv::new("i_publish").await;
    let db = env.pg().await;
    db.batch_execute(&format!(
        "{GATEWAYS}; CREATE PUBLICATION pub_{} FOR TABLE gateways WITH (publish = 'insert, update')",
        env.name
    ))
    .await
    .unwrap();
    let tables = format!("{GATEWAY_TABLE}\n");
    let text = hand_kept(env.config_text(&tables));
    let cfg = Config::parse(&text).unwrap();
    cfg.validate().unwrap();
    let findings = waltrail::check::run(&cfg).await;
    let f = findings
        .iter()
        .find(|f| f.what.contains("does not publish deletes"))
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(f.status, waltrail::finding::Status::Fail);
    assert!(f.fix.as_deref().unwrap().contains("ALTER PUBLICATION"));
    let run = Running::start(cfg);
    let err = tokio::time::timeout(Duration::from_secs(30), run.join())
        .await
        .expect("refused at once")
        .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("does not publish deletes") && msg.contains("does not publish truncates"),
        "{msg}"
    );
    // Managed, the same publication is corrected instead.
    let run = Running::start(env.config(&tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'org1', 'p1', 'gw', 'x', NULL, NULL); DELETE FROM gateways")
        .await
        .unwrap();
    env.wait_for(2).await;
    run.stop().await.unwrap();
}

/// `check` says, before `run`, what would quietly go wrong: an attribution column a table lacks (run
/// refuses), a redacted column that matches nothing, a table whose items no organization sees, and rules
/// on ignored columns that never fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_what_would_go_wrong_quietly() {
    let env = TestEnv::new("i_check").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE sessions (id text PRIMARY KEY, account_id text); \
         CREATE TABLE flags (id text PRIMARY KEY, value text, touched_at timestamptz); \
         CREATE TABLE secrets (id text PRIMARY KEY, org_id text, value text, note text)",
    )
    .await
    .unwrap();
    let tables = r#"
[attribution.sessions]
table = "sessions"
account_column = "acount_id"

[[tables]]
table = "flags"
resource_type = "RESOURCE_TYPE_FEATURE_FLAG"
ignore_columns = ["touched_at"]
[[tables.derived_actions]]
action = "AUDIT_ACTION_TOUCHED"
changed = ["touched_at"]

[[tables]]
table = "secrets"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org_id"
redact_columns = ["value", "secret_valeu"]
optional_columns = ["secret_valeu"]
"#;
    let findings = waltrail::check::run(&env.config(tables)).await;
    let with = |status: waltrail::finding::Status, phrase: &str| {
        assert!(
            findings
                .iter()
                .any(|f| f.status == status && f.what.contains(phrase)),
            "{phrase}: {findings:#?}"
        )
    };
    use waltrail::finding::Status::{Fail, Warn};
    with(
        Fail,
        "attribution table public.sessions has no column(s) acount_id",
    );
    with(Warn, "table flags has no organization_column");
    with(
        Warn,
        "derived action AUDIT_ACTION_TOUCHED watches only ignored column(s) touched_at",
    );
    with(
        Warn,
        "table secrets: redacted column(s) secret_valeu not in it",
    );
    // The same redaction with no redacted column present at all fails.
    let none = tables.replace(
        "redact_columns = [\"value\", \"secret_valeu\"]\noptional_columns = [\"secret_valeu\"]",
        "redact_columns = [\"valeu\"]\noptional_columns = [\"valeu\"]",
    );
    let findings = waltrail::check::run(&env.config(&none)).await;
    assert!(
        findings.iter().any(|f| f.status == Fail
            && f.what.contains(
                "table secrets: redacted column(s) valeu not in it: nothing of it is redacted"
            )),
        "{findings:#?}"
    );
}

/// What the publication and the mapped tables' members must stay like for every change to reach the
/// trail, and the platform's writes to keep working: a plain table set back from REPLICA IDENTITY FULL is
/// set again, inheritance children get an identity (without one Postgres refuses their updates) and one
/// created while capture streams is published; a row filter on the publication, or an UNLOGGED partition,
/// stops capture (their changes would never arrive), and `check` fails on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publication_and_table_members_are_kept_whole() {
    let env = TestEnv::new("i_members").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE vaults (id int PRIMARY KEY, org_id text, label text); \
         CREATE TABLE vault_archive (archived_at text) INHERITS (vaults); \
         CREATE TABLE events (id int, org_id text, label text, PRIMARY KEY (id, org_id)) PARTITION BY LIST (org_id); \
         CREATE TABLE ev_org1 PARTITION OF events FOR VALUES IN ('org1')",
    )
    .await
    .unwrap();
    let tables = r#"
[[tables]]
table = "vaults"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org_id"
display_column = "label"

[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
display_column = "label"
"#;
    let config = || {
        let mut cfg = env.config(tables);
        cfg.postgres.watch_interval_ms = 200;
        cfg
    };
    let run = Running::start(config());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // The child published at start has an identity: the platform's updates of it work.
    db.batch_execute("INSERT INTO vault_archive VALUES (1, 'org1', 'old', 'x')")
        .await
        .unwrap();
    db.batch_execute("UPDATE vault_archive SET label = 'older' WHERE id = 1")
        .await
        .expect("an inheritance child keeps taking updates once published");
    // A plain table set back by a migration is set to FULL again while capture streams.
    db.batch_execute("ALTER TABLE vaults REPLICA IDENTITY DEFAULT")
        .await
        .unwrap();
    let identity = || async {
        db.query_one(
            "SELECT relreplident::text FROM pg_class WHERE oid = 'vaults'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get::<_, String>(0)
    };
    for _ in 0..100 {
        if identity().await == "f" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(identity().await, "f");
    // A child created while capture streams is published, and its changes reach the trail.
    // With a grandchild whose name sorts first (each is added alone: adding the child with its
    // descendants after the grandchild would fail as a duplicate).
    db.batch_execute(
        "CREATE TABLE vault_cold (tier text) INHERITS (vaults); \
         CREATE TABLE a_vault_colder () INHERITS (vault_cold)",
    )
    .await
    .unwrap();
    let published = || async {
        db.query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 \
             AND tablename IN ('vault_cold', 'a_vault_colder')",
            &[&format!("pub_{}", env.name)],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    for _ in 0..100 {
        if published().await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(published().await, 2);
    db.batch_execute("UPDATE a_vault_colder SET label = label")
        .await
        .expect("a child added while streaming takes updates");
    db.batch_execute("INSERT INTO vault_cold VALUES (2, 'org1', 'cold', 'deep')")
        .await
        .unwrap();
    env.wait_for(3).await;
    assert!(env
        .items()
        .await
        .iter()
        .any(|i| i.resource_display == "cold"));
    // A table holding rows made a child (INHERIT): published, and the rows it held, which never were in
    // the WAL stream, are recorded as a gap by the next start.
    db.batch_execute(
        "CREATE TABLE vault_imported (id int NOT NULL, org_id text, label text);          INSERT INTO vault_imported VALUES (10, 'org1', 'imported'), (11, 'org1', 'imported');          ALTER TABLE vault_imported INHERIT vaults",
    )
    .await
    .unwrap();
    let imported = || async {
        db.query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = $1 AND tablename = 'vault_imported'",
            &[&format!("pub_{}", env.name)],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    for _ in 0..100 {
        if imported().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(imported().await, 1);
    let gaps_of = |table: &'static str| {
        let env = &env;
        async move {
            env.items()
                .await
                .into_iter()
                .filter(|i| {
                    i.action == "AUDIT_ACTION_GAP" && i.table_name == format!("public.{table}")
                })
                .collect::<Vec<_>>()
        }
    };
    // A row filter on the publication stops capture: the rows it leaves out would never arrive.
    db.batch_execute(&format!(
        "ALTER PUBLICATION pub_{} SET TABLE vaults WHERE (org_id <> 'hidden'), events",
        env.name
    ))
    .await
    .unwrap();
    let err = run.stops_with().await;
    assert!(format!("{err:#}").contains("row filter"), "{err:#}");
    let findings = waltrail::check::run(&config()).await;
    assert!(
        findings
            .iter()
            .any(|f| f.status == waltrail::finding::Status::Fail && f.what.contains("row filter")),
        "{findings:#?}"
    );
    // A table holding a row made a child while capture is stopped: the start that publishes it records
    // the gap too.
    db.batch_execute(
        "CREATE TABLE vault_offline (id int NOT NULL, org_id text, label text); \
         INSERT INTO vault_offline VALUES (20, 'org1', 'offline'); \
         ALTER TABLE vault_offline INHERIT vaults",
    )
    .await
    .unwrap();
    // Set back (the trail's gap accepted), then an UNLOGGED partition: capture stops, and a start refuses.
    let run = Running::start_with(
        config(),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    let held = gaps_of("vault_imported").await;
    assert_eq!(held.len(), 1, "{held:#?}");
    assert!(held[0].summary.contains("2 row(s)"), "{}", held[0].summary);
    let offline = gaps_of("vault_offline").await;
    assert_eq!(offline.len(), 1, "{offline:#?}");
    assert!(
        offline[0].summary.contains("1 row(s)"),
        "{}",
        offline[0].summary
    );
    db.batch_execute("CREATE UNLOGGED TABLE ev_org2 PARTITION OF events FOR VALUES IN ('org2')")
        .await
        .unwrap();
    let err = run.stops_with().await;
    assert!(format!("{err:#}").contains("UNLOGGED"), "{err:#}");
    let err = tokio::time::timeout(Duration::from_secs(30), Running::start(config()).join())
        .await
        .expect("a start stops by itself")
        .expect_err("a start refuses");
    assert!(format!("{err:#}").contains("ev_org2"), "{err:#}");
    let findings = waltrail::check::run(&config()).await;
    assert!(
        findings
            .iter()
            .any(|f| f.status == waltrail::finding::Status::Fail && f.what.contains("UNLOGGED")),
        "{findings:#?}"
    );
    // Set LOGGED again, a plain start goes on and records the stretch it was UNLOGGED, once (the stop and
    // the refused start both found it); the next start records nothing more.
    db.batch_execute(
        "INSERT INTO ev_org2 VALUES (5, 'org2', 'lost'); ALTER TABLE ev_org2 SET LOGGED",
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let run = Running::start(config());
        wait_slot(&db, &format!("slot_{}", env.name)).await;
        db.batch_execute("INSERT INTO ev_org1 VALUES (6, 'org1', 'after')")
            .await
            .unwrap();
        let mut unlogged = Vec::new();
        for _ in 0..100 {
            unlogged = gaps_of("ev_org2").await;
            if !unlogged.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        run.stop().await.unwrap();
        assert_eq!(unlogged.len(), 1, "{unlogged:#?}");
        assert!(
            unlogged[0].summary.contains("UNLOGGED"),
            "{}",
            unlogged[0].summary
        );
        db.batch_execute("DELETE FROM ev_org1 WHERE id = 6")
            .await
            .unwrap();
    }
    let rows: u64 = env
        .ch()
        .query("SELECT count() FROM audit_items WHERE action = 'AUDIT_ACTION_GAP' AND table_name IN ('public.vault_imported', 'public.ev_org2')")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(rows, 2, "each recorded once, by one start");
}

/// QA38 L1: `--accept-gap` accepts what the start finds, not what happens later. A process left running
/// with the flag meets a publication dropped and created again after it streamed on: it stops with the
/// fix, as without the flag, instead of moving the slot to the present on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_gap_does_not_accept_a_drop_met_after_capture_went_on() {
    let env = TestEnv::new("i_accept_once").await;
    let tables = EVENTS_TABLE;
    let db = env.pg().await;
    db.batch_execute(EVENTS_DDL).await.unwrap();
    let run = Running::start_with(
        env.config(tables),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    let publication = format!("pub_{}", env.name);
    for sql in [
        format!("DROP PUBLICATION {publication}"),
        "INSERT INTO events VALUES (2, 'org1')".to_owned(),
        format!("CREATE PUBLICATION {publication} FOR TABLE events"),
    ] {
        db.batch_execute(&sql).await.unwrap();
    }
    db.batch_execute("INSERT INTO events VALUES (3, 'org1')")
        .await
        .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains(&format!("publication {publication} did not exist"))
            && msg.contains("--accept-gap"),
        "{msg}"
    );
    // The slot stayed where capture confirmed: nothing was skipped without the operator.
    let items = env.items().await;
    assert!(
        items.iter().all(|i| !i.summary.contains("moved past them")),
        "{items:#?}"
    );
}

/// QA39 M3: a process run with --accept-gap that has stored nothing yet (a quiet source) still does not
/// accept a drop made after it started: once Postgres has said it read past the WAL's end at the start, the
/// stop a drop causes is refused with the fix, as without the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_gap_does_not_accept_a_drop_made_after_a_quiet_start() {
    let env = TestEnv::new("i_accept_quiet").await;
    let tables = EVENTS_TABLE;
    let db = env.pg().await;
    db.batch_execute(EVENTS_DDL).await.unwrap();
    let mut cfg = env.config(tables);
    // The drop is met by the stream, not by a look at the catalog (which stops capture on its own).
    cfg.postgres.watch_interval_ms = 600_000;
    let run = Running::start_with(
        cfg,
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // Streaming: Postgres has said where it reads, past the WAL's end at the start.
    for _ in 0..600 {
        if run.metrics.server_wal_end.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(run.metrics.server_wal_end.load(Ordering::Relaxed) > 0);
    let publication = format!("pub_{}", env.name);
    for sql in [
        format!("DROP PUBLICATION {publication}"),
        "INSERT INTO events VALUES (1, 'org1')".to_owned(),
        format!("CREATE PUBLICATION {publication} FOR TABLE events"),
        "INSERT INTO events VALUES (2, 'org1')".to_owned(),
    ] {
        db.batch_execute(&sql).await.unwrap();
    }
    let msg = run.stops_with().await;
    // Refused with the fix either way: by the stream's stop at the drop, or by a look that found the
    // table out of the publication first (which one comes first is timing).
    assert!(
        (msg.contains(&format!("publication {publication} did not exist"))
            || msg.contains("was removed from the publication"))
            && msg.contains("--accept-gap"),
        "{msg}"
    );
    assert!(
        env.items()
            .await
            .iter()
            .all(|i| !i.summary.contains("moved past them")),
        "the slot was moved without the operator"
    );
}

/// QA39 M1, M2: capture stopped by a dropped publication after it stored changes Postgres sent before the
/// drop, without confirming them to the slot. The next start with --accept-gap streams those again on its
/// way to the same drop, and still accepts it (it was not accepted only where capture began); the changes
/// before the drop are in the trail, the skipped stretch is a gap, and what follows is captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_gap_accepts_the_drop_it_was_told_of_after_streaming_stored_changes_again() {
    let env = TestEnv::new("i_accept_replayed").await;
    let tables = EVENTS_TABLE;
    let db = env.pg().await;
    db.batch_execute(EVENTS_DDL).await.unwrap();
    let config = || {
        let mut cfg = env.config(tables);
        // Nothing confirmed to the slot after the session's first status.
        cfg.postgres.status_interval_ms = 600_000;
        cfg
    };
    let run = Running::start(config());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // A change stored first: the stream runs, and so has the one look at the publication this session
    // makes at its start (status_interval_ms is long). Without it, a slow start's look could be what sees
    // the drop below (a stop that is right, but not the one this test is about).
    db.batch_execute("INSERT INTO events VALUES (0, 'org1')")
        .await
        .unwrap();
    env.wait_for(1).await;
    let publication = format!("pub_{}", env.name);
    for sql in [
        "INSERT INTO events VALUES (1, 'org1')".to_owned(),
        format!("DROP PUBLICATION {publication}"),
        "INSERT INTO events VALUES (2, 'org1')".to_owned(),
        format!("CREATE PUBLICATION {publication} FOR TABLE events"),
    ] {
        db.batch_execute(&sql).await.unwrap();
    }
    let msg = run.stops_with().await;
    assert!(msg.contains("--accept-gap"), "{msg}");
    // Postgres sent change 1 whole before it stopped: it is stored, not skipped with the stretch.
    assert_eq!(env.count().await, 2, "{msg}\n{:#?}", env.items().await);
    let run = Running::start_with(
        config(),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    // The stretch moved past ends where the slot was moved to: a change made after that is captured.
    for _ in 0..300 {
        if run.is_finished()
            || env
                .items()
                .await
                .iter()
                .any(|i| i.summary.contains("moved past them"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.batch_execute("INSERT INTO events VALUES (3, 'org1')")
        .await
        .unwrap();
    for _ in 0..300 {
        if run.is_finished() || env.items().await.iter().any(|i| i.resource_id == "3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!run.is_finished(), "{}", run.stops_with().await);
    run.stop().await.unwrap();
    let items = env.items().await;
    let ids: Vec<&str> = items
        .iter()
        .filter(|i| !i.is_gap())
        .map(|i| i.resource_id.as_str())
        .collect();
    assert_eq!(ids, ["0", "1", "3"], "{items:#?}");
    assert!(
        items
            .iter()
            .any(|i| i.action == "AUDIT_ACTION_GAP" && i.summary.contains("moved past them")),
        "{items:#?}"
    );
}
