//! Attribution on real servers: who acted and how, from messages, actor columns and platform tables.

mod harness;

use harness::*;
use std::time::Duration;

const DDL: &str = "
CREATE TABLE accounts (id text PRIMARY KEY, email text, display_name text);
CREATE TABLE agents (id text PRIMARY KEY, name text, owner_id text);
CREATE TABLE service_keys (id text PRIMARY KEY, name text, owner_id text, key_hash text);
CREATE TABLE sessions (id text PRIMARY KEY, account_id text, agent_id text, api_key_id text, source text,
                       auth_method text, client_ip inet, user_agent text);
CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text, created_by text, updated_by text, deleted_by text);
CREATE TABLE projects (id text PRIMARY KEY, org_id text, name text, session_id text);
CREATE TABLE settings (id text PRIMARY KEY, org_id text, value text);
INSERT INTO accounts VALUES ('alice', 'alice@example.com', 'Alice'), ('bob', 'bob@example.com', 'Bob'),
                            ('carol', 'carol@example.com', 'Carol'), ('dave', 'dave@example.com', 'Dave'),
                            ('eve', 'eve@example.com', 'Eve');
INSERT INTO agents VALUES ('agent1', 'deploy-bot', 'bob');
INSERT INTO service_keys VALUES ('key1', 'ci-key', 'alice', 'h1');
INSERT INTO sessions VALUES ('sess_bob', 'bob', NULL, NULL, 'dashboard', 'OAUTH', '10.1.2.3', 'Firefox'),
                            ('sess_agent', 'bob', 'agent1', NULL, 'api', 'API_KEY', '10.9.9.9', 'agent-sdk/1.0'),
                            ('sess_key', NULL, NULL, 'key1', 'cli', NULL, '10.7.7.7', 'curl');
";

const CONFIG: &str = r#"
[attribution.accounts]
table = "accounts"
email_column = "email"
display_column = "display_name"

[attribution.sessions]
table = "sessions"
account_column = "account_id"
agent_column = "agent_id"
key_column = "api_key_id"
source_column = "source"
auth_method_column = "auth_method"
client_ip_column = "client_ip"
user_agent_column = "user_agent"

[attribution.keys]
table = "service_keys"
name_column = "name"
owner_column = "owner_id"

[attribution.agents]
table = "agents"
name_column = "name"
owner_column = "owner_id"

[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
organization_column = "org_id"
display_column = "name"
[tables.actor]
created_by = "created_by"
updated_by = "updated_by"
deleted_by = "deleted_by"

[[tables]]
table = "projects"
resource_type = "RESOURCE_TYPE_PROJECT"
organization_column = "org_id"
display_column = "name"
[tables.actor]
session = "session_id"

[[tables]]
table = "settings"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org_id"
display_column = "id"

[[tables]]
table = "service_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
display_column = "name"
redact_columns = ["key_hash"]
[[tables.derived_actions]]
action = "AUDIT_ACTION_ROTATED"
changed = ["key_hash"]
"#;

#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
struct Attributed {
    resource_display: String,
    action: String,
    principal_id: String,
    principal_type: String,
    display_name: String,
    actor_email: String,
    on_behalf_of_id: String,
    on_behalf_of_display: String,
    source: String,
    auth_method: String,
    key_id: String,
    session_id: String,
    request_id: String,
    run_id: String,
    client_ip: String,
    user_agent: String,
    summary: String,
}

async fn attributed(env: &TestEnv) -> Vec<Attributed> {
    env.ch()
        .query("SELECT ?fields FROM audit_items WHERE table_name != 'public.service_keys' OR action != 'AUDIT_ACTION_CREATED' ORDER BY commit_lsn, seq LIMIT 1 BY id")
        .fetch_all::<Attributed>()
        .await
        .expect("read items")
}

async fn setup(name: &str) -> (TestEnv, tokio_postgres::Client, Running) {
    let env = TestEnv::new(name).await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    let run = Running::start(env.config(CONFIG));
    wait_slot(&db, &format!("slot_{name}")).await;
    (env, db, run)
}

fn by_name<'a>(items: &'a [Attributed], name: &str) -> &'a Attributed {
    items
        .iter()
        .find(|i| i.resource_display == name)
        .unwrap_or_else(|| panic!("no item for {name:?} in {items:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_alone_and_precedence() {
    let (env, db, run) = setup("a_sources").await;
    // The message alone.
    db.batch_execute(
        r#"BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"alice","source":"api","auth_method":"API_KEY","key_id":"key9","request_id":"req-1","client_ip":"192.0.2.1","user_agent":"sdk/2"}');
           INSERT INTO settings VALUES ('by-message', 'o1', 'v');
           COMMIT;"#,
    )
    .await
    .unwrap();
    // An actor column alone.
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'o1', 'by-column', 'alice', NULL, NULL)")
        .await
        .unwrap();
    // A session row alone.
    db.batch_execute("INSERT INTO projects VALUES ('p1', 'o1', 'by-session', 'sess_bob')")
        .await
        .unwrap();
    // Nothing at all.
    db.batch_execute("INSERT INTO settings VALUES ('by-nothing', 'o1', 'v')")
        .await
        .unwrap();
    // Message beats column; message fields beat the session's, the session fills the rest.
    db.batch_execute(
        r#"BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"carol","source":"CLI"}');
           INSERT INTO gateways VALUES ('g2', 'o1', 'message-over-column', 'alice', NULL, NULL);
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"source":"SDK","request_id":"req-2"}');
           INSERT INTO projects VALUES ('p2', 'o1', 'message-with-session', 'sess_bob');
           COMMIT;"#,
    )
    .await
    .unwrap();
    // A message naming the actor is not mixed with a (possibly stale) session on the row.
    db.batch_execute(
        r#"BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"carol"}');
           INSERT INTO projects VALUES ('p9', 'o1', 'message-actor-row-session', 'sess_bob');
           COMMIT;"#,
    )
    .await
    .unwrap();
    // An agent acting in a session for its account; a service key alone.
    db.batch_execute("INSERT INTO projects VALUES ('p3', 'o1', 'agent-session', 'sess_agent')")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO projects VALUES ('p4', 'o1', 'key-session', 'sess_key')")
        .await
        .unwrap();
    // Updates and deletes use their own columns; a delete never uses updated_by.
    db.batch_execute(
        "UPDATE gateways SET name = 'by-column-2', updated_by = 'bob' WHERE id = 'g1'",
    )
    .await
    .unwrap();
    db.batch_execute("UPDATE gateways SET deleted_by = 'dave' WHERE id = 'g2'; DELETE FROM gateways WHERE id = 'g2'")
        .await
        .unwrap();
    env.wait_for(11).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = attributed(&env).await;

    let mixed = by_name(&items, "message-actor-row-session");
    assert_eq!(mixed.principal_id, "carol");
    assert_eq!(
        (
            mixed.client_ip.as_str(),
            mixed.session_id.as_str(),
            mixed.source.as_str()
        ),
        ("", "", "AUDIT_SOURCE_UNSPECIFIED")
    );

    let m = by_name(&items, "by-message");
    assert_eq!(
        (m.principal_id.as_str(), m.principal_type.as_str()),
        ("alice", "ACCOUNT")
    );
    assert_eq!(
        m.actor_email, "alice@example.com",
        "joined from the accounts table"
    );
    assert_eq!(m.display_name, "Alice");
    assert_eq!(m.source, "AUDIT_SOURCE_API");
    assert_eq!(
        (m.auth_method.as_str(), m.key_id.as_str()),
        ("API_KEY", "key9")
    );
    assert_eq!(
        (
            m.request_id.as_str(),
            m.client_ip.as_str(),
            m.user_agent.as_str()
        ),
        ("req-1", "192.0.2.1", "sdk/2")
    );
    assert_eq!(
        m.summary,
        "alice@example.com created Setting \"by-message\""
    );

    let c = by_name(&items, "by-column");
    assert_eq!(
        (c.principal_id.as_str(), c.actor_email.as_str()),
        ("alice", "alice@example.com")
    );
    assert_eq!(c.source, "AUDIT_SOURCE_UNSPECIFIED");
    assert_eq!(c.summary, "alice@example.com created Gateway \"by-column\"");

    let s = by_name(&items, "by-session");
    assert_eq!(
        (s.principal_id.as_str(), s.actor_email.as_str()),
        ("bob", "bob@example.com")
    );
    assert_eq!(
        (s.source.as_str(), s.auth_method.as_str()),
        ("AUDIT_SOURCE_DASHBOARD", "OAUTH")
    );
    assert_eq!(
        (
            s.session_id.as_str(),
            s.client_ip.as_str(),
            s.user_agent.as_str()
        ),
        ("sess_bob", "10.1.2.3", "Firefox")
    );

    let n = by_name(&items, "by-nothing");
    assert_eq!(
        (n.principal_type.as_str(), n.principal_id.as_str()),
        ("UNKNOWN", "")
    );
    assert_eq!(n.summary, "Someone created Setting \"by-nothing\"");

    let p = by_name(&items, "message-over-column");
    assert_eq!(
        (p.principal_id.as_str(), p.source.as_str()),
        ("carol", "AUDIT_SOURCE_CLI")
    );

    let p = by_name(&items, "message-with-session");
    assert_eq!(
        p.principal_id, "bob",
        "the session names the actor the message left out"
    );
    assert_eq!(
        p.source, "AUDIT_SOURCE_SDK",
        "the message's source beats the session's"
    );
    assert_eq!(
        (p.auth_method.as_str(), p.request_id.as_str()),
        ("OAUTH", "req-2")
    );

    let a = by_name(&items, "agent-session");
    assert_eq!(
        (
            a.principal_type.as_str(),
            a.principal_id.as_str(),
            a.display_name.as_str()
        ),
        ("AGENT", "agent1", "deploy-bot")
    );
    assert_eq!(
        (a.on_behalf_of_id.as_str(), a.on_behalf_of_display.as_str()),
        ("bob", "bob@example.com")
    );
    assert_eq!(
        a.summary,
        "deploy-bot (for bob@example.com) created Project \"agent-session\""
    );

    let k = by_name(&items, "key-session");
    assert_eq!(
        (
            k.principal_type.as_str(),
            k.display_name.as_str(),
            k.key_id.as_str()
        ),
        ("SERVICE_KEY", "ci-key", "key1")
    );
    assert_eq!(
        (k.on_behalf_of_id.as_str(), k.auth_method.as_str()),
        ("alice", "API_KEY")
    );
    assert_eq!(k.source, "AUDIT_SOURCE_CLI");

    let u = by_name(&items, "by-column-2");
    assert_eq!(u.principal_id, "bob");
    let d = items
        .iter()
        .find(|i| i.action == "AUDIT_ACTION_DELETED")
        .expect("delete item");
    assert_eq!(d.principal_id, "dave", "deleted_by names the deleter");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_position_and_bad_messages() {
    let (env, db, run) = setup("a_messages").await;
    db.batch_execute(
        r#"BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"alice"}');
           INSERT INTO settings VALUES ('after-first', 'o', 'v');
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"bob"}');
           INSERT INTO settings VALUES ('after-second', 'o', 'v');
           COMMIT;
           BEGIN;
           INSERT INTO settings VALUES ('before-only', 'o', 'v');
           INSERT INTO settings VALUES ('before-only-2', 'o', 'v');
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"carol","run_id":"run-7"}');
           COMMIT;
           BEGIN;
           INSERT INTO settings VALUES ('before-between', 'o', 'v');
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"dave"}');
           INSERT INTO settings VALUES ('after-between', 'o', 'v');
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{not json');
           INSERT INTO settings VALUES ('bad-json', 'o', 'v');
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"eve","favourite_color":"red","actor_type":"ROBOT"}');
           INSERT INTO settings VALUES ('unknown-field', 'o', 'v');
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'other-app', '{"actor_id":"alice"}');
           INSERT INTO settings VALUES ('other-prefix', 'o', 'v');
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(false, 'waltrail', '{"actor_id":"alice"}');
           INSERT INTO settings VALUES ('non-transactional', 'o', 'v');
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"frank","user_agent":"' || repeat('V', 1048576) || '"}');
           INSERT INTO settings VALUES ('huge-agent', 'o', 'v');
           INSERT INTO settings VALUES ('huge-agent-2', 'o', 'v');
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"acct_first","actor_id":"acct_second"}');
           INSERT INTO settings VALUES ('duplicate-key', 'o', 'v');
           COMMIT;
           BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":42,"request_id":"req-n","client_ip":"not-an-ip"}');
           INSERT INTO settings VALUES ('numeric-actor', 'o', 'v');
           COMMIT;"#,
    )
    .await
    .unwrap();
    env.wait_for(14).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = attributed(&env).await;
    let who = |n: &str| by_name(&items, n).principal_id.clone();
    assert_eq!(who("after-first"), "alice");
    assert_eq!(
        who("after-second"),
        "bob",
        "each message applies to the changes after it"
    );
    assert_eq!(
        who("before-only"),
        "carol",
        "a message after the changes still attributes its transaction"
    );
    assert_eq!(who("before-only-2"), "carol");
    assert_eq!(by_name(&items, "before-only").run_id, "run-7");
    assert_eq!(who("before-between"), "dave");
    assert_eq!(who("after-between"), "dave");
    assert_eq!(
        who("bad-json"),
        "",
        "invalid JSON: the item is still captured, without context"
    );
    assert_eq!(by_name(&items, "bad-json").principal_type, "UNKNOWN");
    assert_eq!(
        who("unknown-field"),
        "eve",
        "unknown fields are ignored, the rest applies"
    );
    assert_eq!(by_name(&items, "unknown-field").principal_type, "ACCOUNT");
    assert_eq!(who("other-prefix"), "");
    assert_eq!(who("non-transactional"), "");
    // A 1 MiB user agent is copied into every item of its transaction: each stores it cut and marked.
    for n in ["huge-agent", "huge-agent-2"] {
        assert_eq!(
            who(n),
            "frank",
            "a long field does not cost the attribution"
        );
        let ua = &by_name(&items, n).user_agent;
        let marker = "… [truncated: 1048576 bytes]";
        // Compared by size and ends, so a failure does not print a megabyte.
        assert_eq!(
            ua.len(),
            1024 + marker.len(),
            "{n}: user_agent stored whole or cut elsewhere"
        );
        assert!(
            ua.starts_with(&"V".repeat(1024)) && ua.ends_with(marker),
            "{n}: not marked as cut"
        );
    }
    assert_eq!(
        who("duplicate-key"),
        "",
        "a message naming a key twice is not used (which actor was meant?)"
    );
    let numeric = by_name(&items, "numeric-actor");
    assert_eq!(
        (
            numeric.principal_id.as_str(),
            numeric.principal_type.as_str()
        ),
        ("", "UNKNOWN"),
        "a number is not an actor id: left out, not coerced"
    );
    assert_eq!(
        numeric.request_id, "req-n",
        "the message's other fields apply"
    );
    assert_eq!(numeric.client_ip, "", "not an IP address: left out");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_acted_as_of_each_change_or_else_the_commit() {
    let (env, db, run) = setup("a_history").await;
    // A session created in the same transaction as the change it attributes, before and after it.
    db.batch_execute(
        "BEGIN;
         INSERT INTO sessions (id, account_id, source) VALUES ('s_new', 'carol', 'cli');
         INSERT INTO projects VALUES ('p1', 'o', 'same-txn-session-first', 's_new');
         COMMIT;
         BEGIN;
         INSERT INTO projects VALUES ('p2', 'o', 'same-txn-session-after', 's_late');
         INSERT INTO sessions (id, account_id, source) VALUES ('s_late', 'eve', 'sdk');
         COMMIT;",
    )
    .await
    .unwrap();
    // An account deleted after its action keeps its name on the item.
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'o', 'by-dave', 'dave', NULL, NULL)")
        .await
        .unwrap();
    db.batch_execute("DELETE FROM accounts WHERE id = 'dave'")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO gateways VALUES ('g2', 'o', 'by-dave-gone', 'dave', NULL, NULL)")
        .await
        .unwrap();
    // A session re-pointed to another account later: old items unchanged.
    db.batch_execute("INSERT INTO projects VALUES ('p3', 'o', 'sess-bob-before', 'sess_bob')")
        .await
        .unwrap();
    db.batch_execute("UPDATE sessions SET account_id = 'alice' WHERE id = 'sess_bob'")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO projects VALUES ('p4', 'o', 'sess-bob-after', 'sess_bob')")
        .await
        .unwrap();
    // Within one transaction, who acted is as of the change (a session ended or re-pointed later in it
    // does not change that), with or without a context message; what is not known yet at the change (a
    // session written later in it, as at a login) is looked up at the commit.
    db.batch_execute(
        "INSERT INTO sessions (id, account_id, source) VALUES ('s_end', 'carol', 'cli'),                                                             ('s_end2', 'dave', 'cli'),                                                             ('s_moved', 'bob', 'sdk');
         BEGIN;
         INSERT INTO projects VALUES ('p6', 'o', 'session-ended-later', 's_end');
         DELETE FROM sessions WHERE id = 's_end';
         COMMIT;
         BEGIN;
         SELECT pg_logical_emit_message(true, 'waltrail', '{\"request_id\":\"req-only\"}');
         INSERT INTO projects VALUES ('p7', 'o', 'session-ended-later-with-message', 's_end2');
         DELETE FROM sessions WHERE id = 's_end2';
         COMMIT;
         BEGIN;
         SELECT pg_logical_emit_message(true, 'waltrail', '{\"session_id\":\"s_login\"}');
         INSERT INTO projects VALUES ('p8', 'o', 'login-flow', NULL);
         INSERT INTO sessions (id, account_id, source) VALUES ('s_login', 'eve', 'dashboard');
         COMMIT;
         BEGIN;
         INSERT INTO projects VALUES ('p9', 'o', 'session-re-pointed-later', 's_moved');
         UPDATE sessions SET account_id = 'carol' WHERE id = 's_moved';
         COMMIT;",
    )
    .await
    .unwrap();
    env.wait_for(10).await;
    // Everything so far confirmed before the restart: a transaction replayed after it is joined with the
    // context tables as they are at the restart (README, Known limits), which is not what this test is about.
    wait_all_confirmed(&db, "slot_a_history").await;
    // Restart between a session's creation and its use.
    run.stop().await.unwrap();
    db.batch_execute(
        "INSERT INTO sessions (id, account_id, source) VALUES ('s_offline', 'bob', 'dashboard')",
    )
    .await
    .unwrap();
    let run = Running::start(env.config(CONFIG));
    wait_slot(&db, "slot_a_history").await;
    db.batch_execute("INSERT INTO projects VALUES ('p5', 'o', 'after-restart', 's_offline')")
        .await
        .unwrap();
    env.wait_for(11).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = attributed(&env).await;
    for (name, who, request) in [
        ("session-ended-later", "carol", ""),
        ("session-ended-later-with-message", "dave", "req-only"),
        ("login-flow", "eve", ""),
        ("session-re-pointed-later", "bob", ""),
    ] {
        let i = by_name(&items, name);
        assert_eq!(
            (i.principal_id.as_str(), i.request_id.as_str()),
            (who, request),
            "{name}: {i:?}"
        );
    }
    let first = by_name(&items, "same-txn-session-first");
    assert_eq!(
        (first.principal_id.as_str(), first.source.as_str()),
        ("carol", "AUDIT_SOURCE_CLI")
    );
    let after = by_name(&items, "same-txn-session-after");
    assert_eq!(
        after.principal_id, "eve",
        "a session written later in the same transaction still attributes"
    );
    assert_eq!(by_name(&items, "by-dave").actor_email, "dave@example.com");
    let gone = by_name(&items, "by-dave-gone");
    assert_eq!(
        (gone.principal_id.as_str(), gone.actor_email.as_str()),
        ("dave", "")
    );
    assert_eq!(gone.summary, "dave created Gateway \"by-dave-gone\"");
    assert_eq!(by_name(&items, "sess-bob-before").principal_id, "bob");
    assert_eq!(by_name(&items, "sess-bob-after").principal_id, "alice");
    let r = by_name(&items, "after-restart");
    assert_eq!(
        (r.principal_id.as_str(), r.source.as_str()),
        ("bob", "AUDIT_SOURCE_DASHBOARD")
    );
    // The items already stored were not rewritten by the later changes.
    assert_eq!(by_name(&items, "by-dave").actor_email, "dave@example.com");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rotating_a_key_reads_plainly() {
    let (env, db, run) = setup("a_agent").await;
    // Through the shipped helper function, as a platform would call it.
    db.batch_execute(include_str!("../sql/postgres/waltrail_context.sql"))
        .await
        .unwrap();
    db.batch_execute(
        r#"BEGIN;
           SELECT waltrail.set_context('{"actor_id":"agent1","actor_type":"AGENT","on_behalf_of":"bob","source":"API","auth_method":"API_KEY","run_id":"run-42"}');
           UPDATE service_keys SET key_hash = 'h2' WHERE id = 'key1';
           COMMIT;"#,
    )
    .await
    .unwrap();
    env.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = attributed(&env).await;
    let r = items
        .iter()
        .find(|i| i.action == "AUDIT_ACTION_ROTATED")
        .expect("rotated item");
    assert_eq!(
        r.summary,
        "deploy-bot (for bob@example.com) rotated API key \"ci-key\""
    );
    assert_eq!(
        (r.principal_type.as_str(), r.run_id.as_str()),
        ("AGENT", "run-42")
    );
    run.stop().await.unwrap();
}

/// Where a platform's session id is its bearer token: stored hashed, still joined to its account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_can_be_stored_hashed() {
    let env = TestEnv::new("a_hashed").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    // The row's session column is redacted too: its diff would hold the token otherwise.
    let cfg = CONFIG
        .replace(
            "[attribution.accounts]",
            "[attribution]\nhash_session_ids = true\n\n[attribution.accounts]",
        )
        .replace(
            "[tables.actor]\nsession = \"session_id\"",
            "redact_columns = [\"session_id\"]\n[tables.actor]\nsession = \"session_id\"",
        );
    assert!(cfg.contains("redact_columns = [\"session_id\"]"));
    let run = Running::start(env.config(&cfg));
    wait_slot(&db, "slot_a_hashed").await;
    db.batch_execute("INSERT INTO projects VALUES ('p1', 'o', 'by-token', 'sess_bob')")
        .await
        .unwrap();
    env.wait_for(1).await;
    let items = attributed(&env).await;
    let i = by_name(&items, "by-token");
    assert_eq!(
        (i.principal_id.as_str(), i.client_ip.as_str()),
        ("bob", "10.1.2.3"),
        "still joined through the session"
    );
    assert_eq!(i.session_id.len(), "sha256:".len() + 32, "{i:?}");
    assert!(i.session_id.starts_with("sha256:"), "{i:?}");
    let leaked: u64 = env
        .ch()
        .query("SELECT count() FROM audit_items WHERE position(session_id, 'sess_bob') > 0 OR position(diff, 'sess_bob') > 0")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(leaked, 0, "the token is nowhere in the item");
    run.stop().await.unwrap();
}

/// A restart streams again what Postgres was not yet told is stored. When a context row changed meanwhile
/// (here a session re-pointed while waltrail was down), the replay must keep what was stored, with its actor
/// and its place in the chain, not write a second version of it: readers would see either actor, and the
/// chain would break where merges keep the first copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_keeps_what_was_stored() {
    let env = TestEnv::new("a_replay").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    let slot = "slot_a_replay";
    let dir = std::env::temp_dir();
    // Confirmed only when the server insists: what is stored stays unconfirmed until the kill.
    let quiet = env.config_file(CONFIG, 3_600_000);
    let normal = env.config_file(CONFIG, 500);
    let mut child = spawn_bin(
        &["run", "--config", quiet.to_str().unwrap()],
        &dir.join("a_replay-1.log"),
    );
    wait_slot(&db, slot).await;
    let before = confirmed_flush(&db, slot).await;
    db.batch_execute(
        "INSERT INTO projects VALUES ('p1', 'o', 'before-repoint', 'sess_bob');
         INSERT INTO gateways VALUES ('g1', 'o', 'gw-by-carol', 'carol', NULL, NULL);
         BEGIN;
         INSERT INTO projects VALUES ('p2', 'o', 'in-txn-1', 'sess_bob');
         INSERT INTO projects VALUES ('p3', 'o', 'in-txn-2', 'sess_bob');
         COMMIT;",
    )
    .await
    .unwrap();
    env.wait_for(4).await;
    assert_eq!(
        confirmed_flush(&db, slot).await,
        before,
        "stored but not yet confirmed"
    );
    child.kill().expect("kill -9");
    let _ = child.wait();
    db.batch_execute("UPDATE sessions SET account_id = 'alice' WHERE id = 'sess_bob'")
        .await
        .unwrap();
    let mut child = spawn_bin(
        &["run", "--config", normal.to_str().unwrap()],
        &dir.join("a_replay-2.log"),
    );
    wait_slot(&db, slot).await;
    db.batch_execute("INSERT INTO projects VALUES ('p4', 'o', 'after-restart', 'sess_bob')")
        .await
        .unwrap();
    env.wait_for(5).await;
    wait_all_confirmed(&db, slot).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");

    let ch = env.ch();
    let copies: Vec<(String, u64, String)> = ch
        .query(
            "SELECT resource_display, count(), arrayStringConcat(groupUniqArray(principal_id), ',') FROM audit_items \
             GROUP BY resource_display ORDER BY resource_display",
        )
        .fetch_all()
        .await
        .unwrap();
    let expect = |name: &str, who: &str| (name.to_owned(), 1u64, who.to_owned());
    assert_eq!(
        copies,
        vec![
            expect("after-restart", "alice"),
            expect("before-repoint", "bob"),
            expect("gw-by-carol", "carol"),
            expect("in-txn-1", "bob"),
            expect("in-txn-2", "bob"),
        ],
        "one copy of each item; what was stored before the restart keeps its actor"
    );
    // After merges the chain still holds from the first item to the last.
    let reports = env.verified_after_merges("o").await;
    let org = reports
        .iter()
        .find(|r| r.chain.starts_with("o @"))
        .unwrap_or_else(|| panic!("no chain for o in {reports:?}"));
    assert_eq!(org.items, 5, "{reports:?}");
}

/// QA36 M2: changes streamed again past `attribution.rewind_max_bytes` are joined with the platform tables
/// as they are at the restart. Their items cannot say otherwise, so the trail does: a record of the
/// platform chain naming the stretch of positions whose actors are as of the restart, placed before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_past_the_rewind_limit_is_a_recorded_gap() {
    let (env, db, run) = setup("a_rewind_limit").await;
    db.batch_execute("INSERT INTO projects VALUES ('p0', 'o', 'before-stop', 'sess_bob')")
        .await
        .unwrap();
    env.wait_for(1).await;
    wait_all_confirmed(&db, "slot_a_rewind_limit").await;
    run.stop().await.unwrap();
    // A plain restart that winds back (the default limit) records nothing.
    let run = Running::start(env.config(CONFIG));
    wait_slot(&db, "slot_a_rewind_limit").await;
    db.batch_execute("INSERT INTO projects VALUES ('p1', 'o', 'after-plain-restart', 'sess_bob')")
        .await
        .unwrap();
    env.wait_for(2).await;
    wait_all_confirmed(&db, "slot_a_rewind_limit").await;
    run.stop().await.unwrap();
    for sql in [
        "INSERT INTO projects VALUES ('p2', 'o', 'by-bob-before-move', 'sess_bob')",
        "UPDATE sessions SET account_id = 'alice' WHERE id = 'sess_bob'",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    let mut cfg = env.config(CONFIG);
    cfg.attribution.rewind_max_bytes = 1;
    let run = Running::start(cfg);
    env.wait_for(4).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let moved = items
        .iter()
        .find(|i| i.resource_display == "by-bob-before-move")
        .unwrap_or_else(|| panic!("{items:#?}"));
    // Joined as at the restart: the later account (what the record warns of).
    assert_eq!(moved.principal_id, "alice");
    let gaps: Vec<&Item> = items.iter().filter(|i| i.is_gap()).collect();
    assert_eq!(gaps.len(), 1, "{items:#?}");
    let g = gaps[0];
    assert_eq!((g.platform_wide, g.organization_id.as_str()), (1, ""));
    assert!(
        g.summary.starts_with("The trail's attribution has a gap")
            && g.summary.contains("rewind_max_bytes"),
        "{}",
        g.summary
    );
    let d = g.diff_json();
    let (from, to) = (
        lsn(d["gap"]["from_lsn"].as_str().unwrap()),
        lsn(d["gap"]["to_lsn"].as_str().unwrap()),
    );
    assert!(
        from < moved.commit_lsn && moved.commit_lsn <= to && g.commit_lsn < moved.commit_lsn,
        "the record covers the change and comes before it: {from} < {} <= {to}, at {}",
        moved.commit_lsn,
        g.commit_lsn
    );
}

/// Changes committed while waltrail is down are streamed at the restart, after the platform tables were
/// read as they are then. A session that ended, moved to another account or began meanwhile must still
/// name who acted at each commit: the copy is wound back to where streaming resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_changed_while_waltrail_was_down() {
    let (env, db, run) = setup("a_down").await;
    db.batch_execute(
        "INSERT INTO sessions (id, account_id, source) VALUES ('s_short', 'carol', 'cli');
         INSERT INTO projects VALUES ('p0', 'o', 'before-stop', 's_short');",
    )
    .await
    .unwrap();
    env.wait_for(1).await;
    // `waltrail run` set the platform tables to REPLICA IDENTITY FULL, which `check` reports.
    let findings = waltrail::capture::check::postgres(&env.config(CONFIG)).await;
    let sessions = findings
        .iter()
        .find(|f| f.what.contains("attribution table public.sessions"))
        .unwrap_or_else(|| panic!("{findings:?}"));
    assert_eq!(
        sessions.what,
        "attribution table public.sessions at REPLICA IDENTITY FULL"
    );
    let context =
        "publication pub_a_down_context (the platform tables, for the start-up rewind) exists";
    assert!(findings.iter().any(|f| f.what == context), "{findings:?}");
    wait_all_confirmed(&db, "slot_a_down").await;
    run.stop().await.unwrap();
    // As on the first start after an upgrade: the platform tables' own publication is younger than the
    // window (Postgres refuses it there), so the rewind reads through the main one.
    db.batch_execute("DROP PUBLICATION pub_a_down_context")
        .await
        .unwrap();
    // Each its own transaction (within one, the context is the one at its commit).
    for sql in [
        "INSERT INTO projects VALUES ('p1', 'o', 'by-ended-session', 's_short')",
        "DELETE FROM sessions WHERE id = 's_short'",
        "INSERT INTO projects VALUES ('p2', 'o', 'by-bob-before-move', 'sess_bob')",
        "UPDATE sessions SET account_id = 'alice' WHERE id = 'sess_bob'",
        "INSERT INTO sessions (id, account_id, source) VALUES ('s_new', 'eve', 'sdk')",
        "INSERT INTO projects VALUES ('p3', 'o', 'by-new-session', 's_new')",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    let run = Running::start(env.config(CONFIG));
    wait_slot(&db, "slot_a_down").await;
    db.batch_execute("INSERT INTO projects VALUES ('p4', 'o', 'after-restart', 'sess_bob')")
        .await
        .unwrap();
    env.wait_for(5).await;
    let items = attributed(&env).await;
    let who = |name: &str| {
        let i = by_name(&items, name);
        (i.principal_id.clone(), i.source.clone())
    };
    assert_eq!(
        who("before-stop"),
        ("carol".into(), "AUDIT_SOURCE_CLI".into())
    );
    assert_eq!(
        who("by-ended-session"),
        ("carol".into(), "AUDIT_SOURCE_CLI".into()),
        "a session that ended while waltrail was down still names who used it"
    );
    assert_eq!(
        who("by-bob-before-move").0,
        "bob",
        "a session moved to another account later names the account it had at the commit"
    );
    assert_eq!(
        who("by-new-session"),
        ("eve".into(), "AUDIT_SOURCE_SDK".into())
    );
    assert_eq!(who("after-restart").0, "alice");

    // Second round, through the platform tables' own publication: `run` made it again, so now it is older
    // than the window and Postgres decodes the window through it.
    wait_all_confirmed(&db, "slot_a_down").await;
    run.stop().await.unwrap();
    for sql in [
        "INSERT INTO projects VALUES ('p5', 'o', 'by-eve-before-logout', 's_new')",
        "DELETE FROM sessions WHERE id = 's_new'",
        "INSERT INTO projects VALUES ('p6', 'o', 'by-alice-before-move', 'sess_bob')",
        "UPDATE sessions SET account_id = 'dave', source = 'dashboard' WHERE id = 'sess_bob'",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    // What the rewind reads through it: the sessions table's changes and the Begins, nothing of the
    // audited tables.
    let sessions_oid: u32 = db
        .query_one("SELECT 'public.sessions'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let mut kinds = String::new();
    use waltrail::capture::peek::{changes, Messages};
    let read = changes(
        &db,
        ("slot_a_down", "pub_a_down_context"),
        &[sessions_oid],
        (Messages::Rows, 1 << 30),
        |m| {
            kinds.push(m[0] as char);
            Ok(())
        },
    )
    .await
    .expect("the rewind reads through the context publication");
    assert!(read);
    let rows: String = kinds.chars().filter(|k| *k != 'B').collect();
    assert_eq!(
        rows, "RDU",
        "the sessions table's relation, delete and update only: {kinds}"
    );
    let mut relations = String::new();
    changes(
        &db,
        ("slot_a_down", "pub_a_down_context"),
        &[sessions_oid],
        (Messages::Relations, 1 << 30),
        |m| {
            relations.push(m[0] as char);
            Ok(())
        },
    )
    .await
    .expect("the slot read ahead for its relations");
    assert_eq!(relations, "R", "its relation alone");
    let run = Running::start(env.config(CONFIG));
    wait_slot(&db, "slot_a_down").await;
    env.wait_for(7).await;
    let items = attributed(&env).await;
    let who = |name: &str| {
        let i = by_name(&items, name);
        (i.principal_id.clone(), i.source.clone())
    };
    assert_eq!(
        who("by-eve-before-logout"),
        ("eve".into(), "AUDIT_SOURCE_SDK".into())
    );
    assert_eq!(who("by-alice-before-move").0, "alice");
    run.stop().await.unwrap();
}

/// A partitioned platform table: its partitions' changes reach attribution as the table's own (the
/// publication sends them under the partitions' names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_sessions_table_attributes_through_its_partitions() {
    let env = TestEnv::new("a_parted").await;
    let db = env.pg().await;
    let ddl = DDL
        .replace(
            "CREATE TABLE sessions (id text PRIMARY KEY, account_id text",
            "CREATE TABLE sessions (id text, account_id text",
        )
        .replace(
            "auth_method text, client_ip inet, user_agent text);",
            "auth_method text, client_ip inet, user_agent text, PRIMARY KEY (id, source)) PARTITION BY LIST (source);
             CREATE TABLE sessions_cli PARTITION OF sessions FOR VALUES IN ('cli');
             CREATE TABLE sessions_rest PARTITION OF sessions DEFAULT;",
        );
    assert!(ddl.contains("PARTITION BY LIST"));
    db.batch_execute(&ddl).await.unwrap();
    let run = Running::start(env.config(CONFIG));
    wait_slot(&db, "slot_a_parted").await;
    // A session made while streaming (in a partition), then used; one loaded at start, re-pointed.
    db.batch_execute(
        "INSERT INTO sessions (id, account_id, source) VALUES ('s_p', 'carol', 'cli');
         UPDATE sessions SET account_id = 'dave' WHERE id = 'sess_bob';",
    )
    .await
    .unwrap();
    db.batch_execute(
        "INSERT INTO projects VALUES ('pp', 'o', 'by-partitioned-session', 's_p');
         INSERT INTO projects VALUES ('pq', 'o', 'by-re-pointed-session', 'sess_bob');",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    let items = attributed(&env).await;
    let i = by_name(&items, "by-partitioned-session");
    assert_eq!(
        (i.principal_id.as_str(), i.source.as_str()),
        ("carol", "AUDIT_SOURCE_CLI")
    );
    assert_eq!(
        by_name(&items, "by-re-pointed-session").principal_id,
        "dave"
    );
    run.stop().await.unwrap();
}

/// QA29 H1: a transaction in doubt goes no further than its doubt. Here an accounts table that is both
/// the attribution table and a redacting mapped table has its secret swapped under the display column for
/// one insert; the transaction then writes more than a batch's worth of rows attributed to that account.
/// Capture stops at its commit, and nothing after the doubt reaches the store: no item of the transaction,
/// and the secret in no actor field of any item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_after_a_doubt_reaches_the_store_or_the_attribution_tables() {
    let env = TestEnv::new("a_doubt_stops_flow").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE accounts (id text PRIMARY KEY, email text, display_name text, api_key text);
         CREATE TABLE docs (id int PRIMARY KEY, org text, title text, created_by text);
         INSERT INTO accounts VALUES ('alice', 'alice@example.com', 'Alice', 'k-alice');",
    )
    .await
    .unwrap();
    let config = r#"
[attribution.accounts]
table = "accounts"
email_column = "email"
display_column = "display_name"

[[tables]]
table = "accounts"
resource_type = "RESOURCE_TYPE_ACCOUNT"
display_column = "email"
redact_columns = ["api_key"]

[[tables]]
table = "docs"
resource_type = "RESOURCE_TYPE_DOC"
organization_column = "org"
display_column = "title"
[tables.actor]
created_by = "created_by"
"#;
    let run = Running::start(env.config(config));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO docs VALUES (1, 'o1', 'first', 'alice')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    db.batch_execute(
        "BEGIN; ALTER TABLE accounts RENAME COLUMN display_name TO d_tmp; \
         ALTER TABLE accounts RENAME COLUMN api_key TO display_name; \
         INSERT INTO accounts VALUES ('mallory', 'm@example.com', 'Mallory', 'TOPSECRET_E1'); \
         ALTER TABLE accounts RENAME COLUMN display_name TO api_key; \
         ALTER TABLE accounts RENAME COLUMN d_tmp TO display_name; \
         INSERT INTO docs SELECT g, 'o1', 'doc', 'mallory' FROM generate_series(2, 80001) g; COMMIT",
    )
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(msg.contains("accounts"), "{msg}");
    let leaked: u64 = env
        .ch()
        .query(
            "SELECT count() FROM audit_items WHERE position(display_name, 'TOPSECRET') > 0 \
             OR position(actor_email, 'TOPSECRET') > 0 OR position(on_behalf_of_display, 'TOPSECRET') > 0 \
             OR position(diff, 'TOPSECRET') > 0 OR position(summary, 'TOPSECRET') > 0",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(leaked, 0, "the secret in no item");
    assert_eq!(env.count().await, 1, "nothing of the transaction stored");
}

/// QA33 H3: a partitioned attribution table's own publication names a partition's change after it
/// (through the root), so a mapped table attached under it while waltrail was stopped, updated and
/// detached again, was wound back into the accounts copy as an account: its secrets became a later item's
/// actor name and email. A partitioned attribution table is not wound back; nothing secret reaches any
/// actor field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_attached_under_a_partitioned_accounts_table_is_never_wound_back_into_it() {
    let env = TestEnv::new("a_rewind_nested").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE accounts (id text, email text, name text, org text, PRIMARY KEY (id, org)) PARTITION BY LIST (org);
         CREATE TABLE accounts_o1 PARTITION OF accounts FOR VALUES IN ('o1');
         CREATE TABLE s (id text, email text, name text, org text, PRIMARY KEY (id, org));
         CREATE TABLE n (id int PRIMARY KEY, org text, label text, created_by text);
         INSERT INTO accounts VALUES ('u1', 'one@example.com', 'User One', 'o1');",
    )
    .await
    .unwrap();
    let config = r#"
[attribution.accounts]
table = "accounts"
email_column = "email"
display_column = "name"

[[tables]]
table = "s"
resource_type = "RESOURCE_TYPE_SECRET"
organization_column = "org"
redact_columns = ["name", "email"]

[[tables]]
table = "n"
resource_type = "RESOURCE_TYPE_NOTE"
organization_column = "org"
display_column = "label"
[tables.actor]
created_by = "created_by"
"#;
    let run = Running::start(env.config(config));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO n VALUES (1, 'o1', 'by-u1', 'u1')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "the first change").await;
    run.stop().await.unwrap();
    for sql in [
        "INSERT INTO s VALUES ('u9', 'TOPSECRET_email', 'TOPSECRET_name', 'o2')",
        "ALTER TABLE accounts ATTACH PARTITION s FOR VALUES IN ('o2')",
        "UPDATE s SET name = 'renamed', email = 'e2' WHERE id = 'u9'",
        "ALTER TABLE accounts DETACH PARTITION s",
        "INSERT INTO n VALUES (2, 'o1', 'by-u9', 'u9')",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    let run = Running::start(env.config(config));
    // The insert and update of s (redacted) and the note by u9.
    env.wait_for(4).await;
    run.stop().await.unwrap();
    let leaked: u64 = env
        .ch()
        .query(
            "SELECT count() FROM audit_items WHERE position(concat(display_name, actor_email, \
             on_behalf_of_display, summary, diff, resource_display), 'TOPSECRET') > 0",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(leaked, 0, "no secret in any item");
    let items = attributed(&env).await;
    assert_eq!(by_name(&items, "by-u9").principal_id, "u9");
}

/// `deleted_by` outlives the soft delete it named: restored rows keep it. A hard DELETE names its deleter
/// through it only when the row is soft-deleted as the DELETE finds it, or when the same transaction wrote
/// it; otherwise nobody, never the earlier soft-deleter (QA48a H3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_delete_is_not_attributed_to_a_stale_deleted_by() {
    stale_deleted_by(
        "a_stale_deleter",
        "deleted_at timestamptz",
        "soft_delete_column = \"deleted_at\"",
        ("deleted_at = now()", "deleted_at = NULL"),
    )
    .await;
}

/// The same with a boolean flag, whose soft deletes derived actions describe: a row whose flag is at the
/// DELETED action's `to` is soft-deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_delete_of_a_flagged_row_is_not_attributed_to_a_stale_deleted_by() {
    stale_deleted_by(
        "a_stale_flag",
        "is_deleted boolean NOT NULL DEFAULT false",
        r#"[[tables.derived_actions]]
action = "AUDIT_ACTION_DELETED"
column = "is_deleted"
from = false
to = true
[[tables.derived_actions]]
action = "AUDIT_ACTION_RESTORED"
column = "is_deleted"
from = true
to = false"#,
        ("is_deleted = true", "is_deleted = false"),
    )
    .await;
}

async fn stale_deleted_by(name: &str, column: &str, rule: &str, (delete, restore): (&str, &str)) {
    let env = TestEnv::new(name).await;
    let db = env.pg().await;
    db.batch_execute(&format!(
        "CREATE TABLE docs (id int PRIMARY KEY, org text, name text, {column},
         created_by text, updated_by text, deleted_by text)"
    ))
    .await
    .unwrap();
    let tables = format!(
        r#"
[[tables]]
table = "docs"
resource_type = "RESOURCE_TYPE_DOCUMENT"
organization_column = "org"
display_column = "name"
{rule}
[tables.actor]
created_by = "created_by"
updated_by = "updated_by"
deleted_by = "deleted_by"
"#
    );
    let run = Running::start(env.config(&tables));
    wait_slot(&db, &format!("slot_{name}")).await;
    // Each statement its own transaction: alice creates and soft-deletes three documents, bob restores
    // the first two; then direct SQL deletes 1, carol's code path deletes 2 (writing deleted_by in the same
    // transaction), and a purge deletes 3 while it is still soft-deleted.
    for sql in [
        "INSERT INTO docs (id, org, name, created_by, updated_by) \
         SELECT g, 'o1', 'doc-' || g, 'alice', 'alice' FROM generate_series(1, 3) g"
            .to_owned(),
        format!("UPDATE docs SET {delete}, deleted_by = 'alice', updated_by = 'alice'"),
        format!("UPDATE docs SET {restore}, updated_by = 'bob' WHERE id IN (1, 2)"),
        "DELETE FROM docs WHERE id = 1".to_owned(),
        "UPDATE docs SET deleted_by = 'carol' WHERE id = 2; DELETE FROM docs WHERE id = 2"
            .to_owned(),
        "DELETE FROM docs WHERE id = 3".to_owned(),
    ] {
        db.batch_execute(&sql).await.unwrap();
    }
    let run = run
        .until_stored(&env, 3 + 3 + 2 + 1 + 2 + 1, "stale deleter")
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = env.items().await;
    run.stop().await.unwrap();
    assert_eq!(
        items
            .iter()
            .filter(|i| i.action == "AUDIT_ACTION_RESTORED")
            .count(),
        2,
        "{items:#?}"
    );
    let deleted = |id: &str| {
        let d = items
            .iter()
            // The hard delete: its diff has the old row alone (a soft delete's has an after-value).
            .find(|i| {
                i.action == "AUDIT_ACTION_DELETED"
                    && i.resource_id == id
                    && !i.diff.contains("\"after\"")
            })
            .unwrap_or_else(|| panic!("no hard delete of {id}"));
        (d.principal_id.clone(), d.actor_source.clone())
    };
    assert_eq!(
        deleted("1"),
        (String::new(), "NONE".to_owned()),
        "restored, then deleted by direct SQL: alice's deleted_by is stale"
    );
    assert_eq!(
        deleted("2"),
        ("carol".to_owned(), "ROW_COLUMN".to_owned()),
        "deleted_by written in the deleting transaction names the deleter"
    );
    assert_eq!(
        deleted("3"),
        ("alice".to_owned(), "ROW_COLUMN".to_owned()),
        "a soft-deleted row deleted for good: deleted_by names who deleted it"
    );
}

/// The session column of a hard DELETE is the old row's: the session of whoever wrote the row last, not
/// of the deleter. It names the deleter only when the deleting transaction wrote it; a DELETE by direct
/// SQL otherwise names nobody from the row, never the last writer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_delete_is_not_attributed_to_the_last_writers_session() {
    let (env, db, run) = setup("a_stale_session").await;
    for sql in [
        "INSERT INTO projects VALUES ('p1', 'o1', 'stale', 'sess_bob'), ('p2', 'o1', 'written', 'sess_bob')",
        "DELETE FROM projects WHERE id = 'p1'",
        "UPDATE projects SET session_id = 'sess_key' WHERE id = 'p2'; DELETE FROM projects WHERE id = 'p2'",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    let run = run.until_stored(&env, 5, "stale session").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = attributed(&env).await;
    run.stop().await.unwrap();
    let deleted = |name: &str| {
        items
            .iter()
            .find(|i| i.action == "AUDIT_ACTION_DELETED" && i.resource_display == name)
            .unwrap_or_else(|| panic!("no delete of {name}: {items:#?}"))
    };
    let stale = deleted("stale");
    assert_eq!(
        (stale.principal_id.as_str(), stale.session_id.as_str()),
        ("", ""),
        "deleted by direct SQL: bob's session on the row is stale: {stale:#?}"
    );
    let written = deleted("written");
    assert_eq!(
        (written.key_id.as_str(), written.session_id.as_str()),
        ("key1", "sess_key"),
        "the session written in the deleting transaction names the deleter: {written:#?}"
    );
}
