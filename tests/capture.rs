//! End-to-end capture on real Postgres and ClickHouse servers.

mod harness;

use harness::*;
use serde_json::json;
use std::time::Duration;

const API_KEYS: &str = r#"
[[tables]]
table = "public.api_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
display_column = "name"
organization_column = "org_id"
project_column = "project_id"
ignore_columns = ["updated_at"]
redact_columns = ["key_hash"]
soft_delete_column = "deleted_at"

[[tables.derived_actions]]
action = "AUDIT_ACTION_ROTATED"
changed = ["key_hash"]

[[tables.derived_actions]]
action = "AUDIT_ACTION_DISABLED"
column = "enabled"
from = true
to = false
"#;

const API_KEYS_DDL: &str = "CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id text NOT NULL,
    project_id text,
    name text NOT NULL,
    key_hash text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    deleted_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_action_with_mapping_rules() {
    let env = TestEnv::new("t_actions").await;
    let db = env.pg().await;
    db.batch_execute(API_KEYS_DDL).await.unwrap();
    let run = Running::start(env.config(API_KEYS));
    env.wait_for(0).await;
    // Wait until streaming (the slot exists) before changing rows.
    wait_slot(&db, "slot_t_actions").await;

    db.batch_execute(
        "INSERT INTO api_keys (id, org_id, project_id, name, key_hash) VALUES
           ('00000000-0000-0000-0000-000000000001', 'org1', 'p1', 'prod-key-1', 'hash-secret-1');
         UPDATE api_keys SET updated_at = now() + interval '1 minute';
         UPDATE api_keys SET name = 'prod-key-1b', updated_at = now();
         UPDATE api_keys SET key_hash = 'hash-secret-2';
         UPDATE api_keys SET enabled = false;
         UPDATE api_keys SET deleted_at = now();
         UPDATE api_keys SET deleted_at = NULL;
         DELETE FROM api_keys;",
    )
    .await
    .unwrap();
    env.wait_for(7).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let items = env.items().await;
    let actions: Vec<&str> = items.iter().map(|i| i.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "AUDIT_ACTION_CREATED",
            "AUDIT_ACTION_UPDATED",
            "AUDIT_ACTION_ROTATED",
            "AUDIT_ACTION_DISABLED",
            "AUDIT_ACTION_DELETED",
            "AUDIT_ACTION_RESTORED",
            "AUDIT_ACTION_DELETED",
        ],
        "the updated_at-only update yields no item"
    );
    for i in &items {
        assert_eq!(i.resource_type, "RESOURCE_TYPE_API_KEY");
        assert_eq!(i.resource_id, "00000000-0000-0000-0000-000000000001");
        assert_eq!(i.organization_id, "org1");
        assert_eq!(i.project_id, "p1");
        assert_eq!(i.table_name, "public.api_keys");
        assert_eq!(i.principal_type, "UNKNOWN");
        assert!(
            !i.diff.contains("hash-secret"),
            "redacted value leaked: {}",
            i.diff
        );
        assert!(!i.changed_fields.contains(&"updated_at".to_owned()));
    }
    assert_eq!(items[0].resource_display, "prod-key-1");
    assert_eq!(items[1].resource_display, "prod-key-1b");
    let created = items[0].diff_json();
    assert_eq!(created["name"], json!({"after": "prod-key-1"}));
    assert_eq!(created["key_hash"], json!({"redacted": true}));
    assert_eq!(created["enabled"], json!({"after": true}));
    assert!(created.get("updated_at").is_none());
    assert_eq!(items[1].changed_fields, ["name"]);
    assert_eq!(
        items[1].diff_json(),
        json!({"name": {"before": "prod-key-1", "after": "prod-key-1b"}})
    );
    assert_eq!(items[2].changed_fields, ["key_hash"]);
    assert_eq!(
        items[2].diff_json(),
        json!({"key_hash": {"redacted": true}})
    );
    assert_eq!(
        items[3].diff_json(),
        json!({"enabled": {"before": true, "after": false}})
    );
    let deleted = items[6].diff_json();
    assert_eq!(deleted["name"], json!({"before": "prod-key-1b"}));
    // Items of one transaction share the event id; items differ in id.
    assert!(items.iter().all(|i| i.event_id == items[0].event_id));
    let ids: std::collections::HashSet<_> = items.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), items.len());
    run.stop().await.unwrap();

    // The CLI prints the same plain-language lines, oldest first.
    let cfg = env.config_file(API_KEYS, 1000);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args([
            "log",
            "--config",
            cfg.to_str().unwrap(),
            "--org",
            "org1",
            "--limit",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].ends_with("Someone deleted API key \"prod-key-1b\"  [UNKNOWN via UNSPECIFIED, actor known from NONE, org org1, project p1] fields: deleted_at"),
        "{text}"
    );
    assert!(
        lines[1].contains("Someone restored API key \"prod-key-1b\""),
        "{text}"
    );
    assert!(
        lines[2].contains("Someone deleted API key \"prod-key-1b\""),
        "{text}"
    );
}

/// Start a pipeline on `tables` config after running `ddl`, and wait until it streams.
async fn start(env: &TestEnv, ddl: &str, tables: &str) -> (tokio_postgres::Client, Running) {
    let db = env.pg().await;
    db.batch_execute(ddl).await.unwrap();
    let run = Running::start(env.config(tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    (db, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_values_keep_postgres_meaning() {
    let env = TestEnv::new("t_types").await;
    let ddl = "CREATE TYPE mood AS ENUM ('happy', 'sad');
        CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
        CREATE TYPE pair AS (a int, b text);
        CREATE TABLE typed (
            id int PRIMARY KEY, big bigint, small smallint, num numeric, num_nan numeric, f float8, f_nan float8,
            f_inf float4, t text, b boolean, u uuid, ts timestamptz, tsn timestamp, d date, j jsonb, js json,
            arr text[], iarr int[], narr int[][], bin bytea, m mood, marr mood[], p posint, pt point, cp pair,
            ip inet, nul text, bignum numeric)";
    let tables = r#"
[[tables]]
table = "typed"
resource_type = "RESOURCE_TYPE_SETTING"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute(
        r#"INSERT INTO typed VALUES (1, 9223372036854775807, -32768, 12345678901234567890.000000000000000001, 'NaN',
            1.5, 'NaN', '-Infinity', 'héllo "world"', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
            '2026-02-24 12:34:56.789123+00', '2026-02-24 12:34:56', '2026-02-24',
            '{"a": [1, 2.5, null], "b": {"c": "d"}, "big": 123456789012345678901234567890}', '{"x": 1}',
            ARRAY['a', NULL, 'b,c', 'd"e'], ARRAY[1, NULL, 3], ARRAY[[1, 2], [3, 4]], '\xdeadbeef', 'happy',
            ARRAY['happy', 'sad']::mood[], 7, '(1.5,2)', ROW(1, 'x'), '10.0.0.0/8', NULL,
            '-0.000000000000000000000000000001')"#,
    )
    .await
    .unwrap();
    db.batch_execute("UPDATE typed SET num = 2.50, m = 'sad', j = '{\"a\": []}', arr = '{}'")
        .await
        .unwrap();
    env.wait_for(2).await;
    let items = env.items().await;
    let c = items[0].diff_json();
    let after = |k: &str| c[k]["after"].clone();
    // Numbers are JSON numbers, digit for digit; numeric is an exact decimal string.
    assert_eq!(c["big"]["after"].to_string(), "9223372036854775807");
    assert_eq!(after("small"), json!(-32768));
    assert_eq!(
        after("num"),
        json!("12345678901234567890.000000000000000001")
    );
    assert_eq!(after("num_nan"), json!("NaN"));
    assert_eq!(after("bignum"), json!("-0.000000000000000000000000000001"));
    assert_eq!(after("f"), json!(1.5));
    assert_eq!(after("f_nan"), json!("NaN"));
    assert_eq!(after("f_inf"), json!("-Infinity"));
    assert_eq!(after("t"), json!("héllo \"world\""));
    assert_eq!(after("b"), json!(true));
    assert_eq!(after("u"), json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
    assert_eq!(after("ts"), json!("2026-02-24T12:34:56.789123Z"));
    assert_eq!(after("tsn"), json!("2026-02-24T12:34:56"));
    assert_eq!(after("d"), json!("2026-02-24"));
    assert_eq!(after("j")["a"], json!([1, 2.5, null]));
    assert_eq!(after("j")["b"], json!({"c": "d"}));
    assert_eq!(
        c["j"]["after"]["big"].to_string(),
        "123456789012345678901234567890"
    );
    assert_eq!(after("js"), json!({"x": 1}));
    assert_eq!(after("arr"), json!(["a", null, "b,c", "d\"e"]));
    assert_eq!(after("iarr"), json!([1, null, 3]));
    assert_eq!(after("narr"), json!([[1, 2], [3, 4]]));
    assert_eq!(after("bin"), json!("\\xdeadbeef"));
    assert_eq!(after("m"), json!("happy"));
    assert_eq!(after("marr"), json!(["happy", "sad"]));
    assert_eq!(after("p"), json!(7), "a domain over int is a number");
    assert_eq!(
        after("pt"),
        json!("(1.5,2)"),
        "types without a JSON form keep their text"
    );
    assert_eq!(after("cp"), json!("(1,x)"));
    assert_eq!(after("ip"), json!("10.0.0.0/8"));
    assert_eq!(after("nul"), json!(null));
    let u = items[1].diff_json();
    assert_eq!(
        items[1].changed_fields,
        ["num", "j", "arr", "m"],
        "only changed fields, in column order"
    );
    assert_eq!(
        u["num"],
        json!({"before": "12345678901234567890.000000000000000001", "after": "2.50"})
    );
    assert_eq!(u["m"], json!({"before": "happy", "after": "sad"}));
    assert_eq!(u["arr"]["after"], json!([]));
    assert_eq!(u["j"]["after"], json!({"a": []}));
    run.stop().await.unwrap();
}

/// A derived action's `to = 0` fires on a numeric column set to 0: numeric values are exact decimal strings
/// ("0", "-1.50000000000000000000" for numeric(40,20)) and are compared with the rule's number by value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_actions_compare_numbers_by_value() {
    let env = TestEnv::new("t_derived_num").await;
    let ddl = "CREATE TABLE invoices (id int PRIMARY KEY, amount numeric, amount_fixed numeric(40,20), qty int)";
    let tables = r#"
[[tables]]
table = "invoices"
resource_type = "RESOURCE_TYPE_INVOICE"
[[tables.derived_actions]]
action = "AUDIT_ACTION_ZEROED"
column = "amount"
to = 0
[[tables.derived_actions]]
action = "AUDIT_ACTION_REFUNDED"
column = "amount_fixed"
to = -1.5
[[tables.derived_actions]]
action = "AUDIT_ACTION_EMPTIED"
column = "qty"
from = 3
to = 0.0
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute(
        "INSERT INTO invoices VALUES (1, 10, 1, 3);
         UPDATE invoices SET amount = 0;
         UPDATE invoices SET amount_fixed = -1.5;
         UPDATE invoices SET amount = 0.001;
         UPDATE invoices SET qty = 0;",
    )
    .await
    .unwrap();
    env.wait_for(5).await;
    let items = env.items().await;
    let actions: Vec<&str> = items.iter().map(|i| i.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "AUDIT_ACTION_CREATED",
            "AUDIT_ACTION_ZEROED",
            "AUDIT_ACTION_REFUNDED",
            "AUDIT_ACTION_UPDATED",
            "AUDIT_ACTION_EMPTIED",
        ],
        "10 → 0 is zeroed, 1 → -1.50000000000000000000 refunded, 0 → 0.001 merely updated, an int 3 → 0 \
         matches from = 3, to = 0.0"
    );
    assert_eq!(
        items[2].diff_json()["amount_fixed"]["after"],
        json!("-1.50000000000000000000"),
        "the value itself is stored as Postgres wrote it"
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_yields_one_item_per_table() {
    let env = TestEnv::new("t_truncate").await;
    let ddl = "CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY); CREATE TABLE c (id int PRIMARY KEY)";
    let tables = r#"
[[tables]]
table = "a"
resource_type = "RESOURCE_TYPE_WORKER"
[[tables]]
table = "b"
resource_type = "RESOURCE_TYPE_HOOK"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute(
        "INSERT INTO a VALUES (1), (2); INSERT INTO b VALUES (1); INSERT INTO c VALUES (1)",
    )
    .await
    .unwrap();
    db.batch_execute("TRUNCATE a, b").await.unwrap();
    env.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = env.items().await;
    assert_eq!(items.len(), 5, "c is not configured: no items for it");
    let truncs: Vec<_> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_TRUNCATED")
        .collect();
    assert_eq!(truncs.len(), 2);
    let mut types: Vec<&str> = truncs.iter().map(|i| i.resource_type.as_str()).collect();
    types.sort();
    assert_eq!(types, ["RESOURCE_TYPE_HOOK", "RESOURCE_TYPE_WORKER"]);
    assert_eq!(truncs[0].event_id, truncs[1].event_id);
    assert_ne!(truncs[0].id, truncs[1].id);
    assert_eq!(truncs[0].diff_json(), json!({}));
    // What the statement said beside the tables is kept.
    db.batch_execute("TRUNCATE a RESTART IDENTITY CASCADE")
        .await
        .unwrap();
    env.wait_for(6).await;
    let last = env.items().await.pop().unwrap();
    assert_eq!(last.action, "AUDIT_ACTION_TRUNCATED");
    assert_eq!(
        last.diff_json(),
        json!({"options": ["CASCADE", "RESTART IDENTITY"]})
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_and_rolled_back_transactions() {
    let env = TestEnv::new("t_composite").await;
    let ddl = "CREATE TABLE members (org_id text, account text, role text, PRIMARY KEY (org_id, account))";
    let tables = r#"
[[tables]]
table = "members"
resource_type = "RESOURCE_TYPE_PROJECT_MEMBER"
organization_column = "org_id"
display_column = "account"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute("BEGIN; INSERT INTO members VALUES ('o1', 'ghost', 'admin'); ROLLBACK;")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO members VALUES ('o1', 'a/b', 'admin')")
        .await
        .unwrap();
    db.batch_execute("UPDATE members SET role = 'viewer'")
        .await
        .unwrap();
    env.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let items = env.items().await;
    assert_eq!(items.len(), 2, "the rolled-back insert yields nothing");
    assert!(items.iter().all(|i| i.resource_id == "o1/a%2Fb"));
    assert_ne!(items[0].event_id, items[1].event_id);
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_row_transaction() {
    let env = TestEnv::new("t_big").await;
    let db = env.pg().await;
    db.batch_execute(harness::WORKERS_DDL).await.unwrap();
    // Batches of 10,000 items: ten or more for the transaction.
    let mut cfg = env.config(harness::WORKERS);
    cfg.capture.batch_max_items = 10_000;
    let run = Running::start(cfg);
    wait_slot(&db, "slot_t_big").await;
    db.batch_execute("INSERT INTO workers SELECT i, 'org' || (i % 7), 'w' || i FROM generate_series(1, 100000) i")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO workers VALUES (0, 'org0', 'after')")
        .await
        .unwrap();
    env.wait_for(100_001).await;
    let ch = env.ch();
    let events: u64 = ch
        .query("SELECT uniqExact(event_id) FROM audit_items WHERE resource_display != 'after'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(events, 1, "one transaction, one event id");
    let seqs: u64 = ch
        .query("SELECT uniqExact(seq) FROM audit_items WHERE resource_display != 'after'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(seqs, 100_000);
    // The slot is confirmed past the big transaction once it is stored.
    wait_all_confirmed(&db, &format!("slot_{}", env.name)).await;
    // Its batches went into one INSERT as they closed, never held whole until the commit: one part in
    // ClickHouse for the transaction (with the row after it, or one more for that row; one more again if
    // the stream stalled 500 ms inside the transaction on a busy machine), not one per batch.
    let inserts = run
        .metrics
        .batches_written
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (1..=3).contains(&inserts),
        "{inserts} inserts for a transaction of ten batches and a row"
    );
    run.stop().await.unwrap();
}

/// An open INSERT also ends at `capture.insert_max_bytes` (ClickHouse holds its block in memory): a
/// transaction of many batches over a small bound is several inserts, every item once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_insert_ends_at_its_byte_bound() {
    let env = TestEnv::new("t_insert_bytes").await;
    let db = env.pg().await;
    db.batch_execute(harness::WORKERS_DDL).await.unwrap();
    let mut cfg = env.config(harness::WORKERS);
    cfg.capture.batch_max_items = 1_000;
    cfg.capture.insert_max_bytes = 256 << 10;
    let run = Running::start(cfg);
    wait_slot(&db, "slot_t_insert_bytes").await;
    db.batch_execute(
        "INSERT INTO workers SELECT i, 'o', repeat('w', 200) || i FROM generate_series(1, 20000) i",
    )
    .await
    .unwrap();
    env.wait_for(20_000).await;
    let inserts = run
        .metrics
        .batches_written
        .load(std::sync::atomic::Ordering::Relaxed);
    // About 10 MB of rows: ~40 inserts of 256 KiB, not one.
    assert!(inserts >= 10, "{inserts} inserts");
    assert_eq!(env.rows().await, 20_000, "every item once");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toasted_value_unchanged_is_not_a_change() {
    let env = TestEnv::new("t_toast").await;
    let ddl = "CREATE TABLE docs (id int PRIMARY KEY, title text, body text, note text)";
    let tables = r#"
[[tables]]
table = "docs"
resource_type = "RESOURCE_TYPE_PLUGIN"
display_column = "title"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute(
        "INSERT INTO docs SELECT 1, 'doc', string_agg(md5(i::text), ''), 'n' FROM generate_series(1, 32768) i",
    )
    .await
    .unwrap();
    db.batch_execute("UPDATE docs SET title = 'doc v2'")
        .await
        .unwrap();
    db.batch_execute("UPDATE docs SET note = NULL")
        .await
        .unwrap();
    db.batch_execute("UPDATE docs SET body = 'short'")
        .await
        .unwrap();
    env.wait_for(4).await;
    let items = env.items().await;
    // 1 MiB is over capture.max_value_bytes (256 KiB by default): stored as a marker with the value's size
    // and SHA-256, which match the source's.
    let sha: String = db
        .query_one("SELECT encode(sha256(convert_to(body, 'UTF8')), 'hex') FROM (SELECT string_agg(md5(i::text), '') AS body FROM generate_series(1, 32768) i) b", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        items[0].diff_json()["body"]["after"],
        json!({"truncated": true, "bytes": 1_048_576, "sha256": sha})
    );
    assert_eq!(
        items[1].changed_fields,
        ["title"],
        "the TOASTed body did not change"
    );
    assert_eq!(
        items[1].diff_json(),
        json!({"title": {"before": "doc", "after": "doc v2"}})
    );
    assert_eq!(items[2].changed_fields, ["note"]);
    assert_eq!(
        items[2].diff_json(),
        json!({"note": {"before": "n", "after": null}})
    );
    assert_eq!(items[2].resource_display, "doc v2");
    assert_eq!(items[3].changed_fields, ["body"]);
    assert_eq!(
        items[3].diff_json()["body"]["before"]["bytes"],
        json!(1_048_576),
        "the before-value comes from the old row, not null"
    );
    assert_eq!(items[3].diff_json()["body"]["after"], json!("short"));
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_table_while_streaming() {
    let env = TestEnv::new("t_alter").await;
    let ddl = "CREATE TABLE gateways (id int PRIMARY KEY, name text)";
    let tables = r#"
[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
display_column = "name"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute("INSERT INTO gateways VALUES (1, 'arcade')")
        .await
        .unwrap();
    env.wait_for(1).await;
    db.batch_execute("ALTER TABLE gateways ADD COLUMN region text DEFAULT 'eu'")
        .await
        .unwrap();
    db.batch_execute(
        "CREATE TYPE tier AS ENUM ('free', 'pro'); ALTER TABLE gateways ADD COLUMN t tier",
    )
    .await
    .unwrap();
    db.batch_execute("UPDATE gateways SET region = 'us', t = 'pro'")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO gateways VALUES (2, 'second', 'ap', 'free')")
        .await
        .unwrap();
    db.batch_execute("ALTER TABLE gateways DROP COLUMN region")
        .await
        .unwrap();
    db.batch_execute("UPDATE gateways SET name = 'renamed' WHERE id = 2")
        .await
        .unwrap();
    env.wait_for(4).await;
    let items = env.items().await;
    assert_eq!(
        items[1].diff_json(),
        json!({"region": {"before": "eu", "after": "us"}, "t": {"before": null, "after": "pro"}})
    );
    assert_eq!(items[2].diff_json()["region"], json!({"after": "ap"}));
    assert_eq!(
        items[3].diff_json(),
        json!({"name": {"before": "second", "after": "renamed"}})
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_filtered_slot_does_not_hold_wal() {
    let env = TestEnv::new("t_idle").await;
    let ddl = "CREATE TABLE audited (id int PRIMARY KEY); CREATE TABLE noise (id int PRIMARY KEY, v text)";
    let tables = r#"
[[tables]]
table = "audited"
resource_type = "RESOURCE_TYPE_SETTING"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute("INSERT INTO audited VALUES (1)")
        .await
        .unwrap();
    env.wait_for(1).await;
    // Lots of WAL that publishes nothing.
    db.batch_execute(
        "INSERT INTO noise SELECT i, repeat('x', 200) FROM generate_series(1, 20000) i",
    )
    .await
    .unwrap();
    wait_all_confirmed(&db, &format!("slot_{}", env.name)).await;
    assert_eq!(env.count().await, 1);
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_caught_up_in_few_inserts_and_live_changes_flush_at_once() {
    let env = TestEnv::new("t_backlog").await;
    let ddl = "CREATE TABLE audited (id int PRIMARY KEY)";
    let tables = r#"
[[tables]]
table = "audited"
resource_type = "RESOURCE_TYPE_SETTING"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    run.stop().await.unwrap();
    // 20,000 one-row transactions committed while waltrail is away: history by the time it reads them.
    const N: i32 = 20000;
    for chunk in 0..(N / 500) {
        let sql: String = (0..500)
            .map(|i| format!("INSERT INTO audited VALUES ({});", chunk * 500 + i))
            .collect();
        // Each statement in its own implicit transaction: one commit per row.
        db.batch_execute(&sql).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // A long delay bound: what closes a batch during the catch-up must be its size or that bound, never
    // each pause of the stream.
    let mut cfg = env.config(tables);
    cfg.capture.batch_max_delay_ms = 3_000;
    let run = Running::start(cfg);
    env.wait_for(N as u64).await;
    let batches = run
        .metrics
        .batches_written
        .load(std::sync::atomic::Ordering::Relaxed);
    // Flushed at every pause of the stream, as before catch-up was told apart, this took 6 inserts here.
    // (The lag gauge is not read here: it drops to 0 once the stream has been idle for a second.)
    assert!(batches <= 2, "{batches} inserts for the backlog");
    // A change made now is live: no longer catching up, it is flushed as soon as the stream goes quiet
    // (well before the 3 s bound).
    db.batch_execute(&format!("INSERT INTO audited VALUES ({N})"))
        .await
        .unwrap();
    env.wait_for(N as u64 + 1).await;
    let lag = run
        .metrics
        .stream_lag_us
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(lag < 1_000_000, "{lag} µs");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_tables_are_audited_under_their_own_name() {
    let env = TestEnv::new("t_partitioned").await;
    let ddl = "CREATE TABLE events (id int, region text, name text, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
        CREATE TABLE events_eu PARTITION OF events FOR VALUES IN ('eu');
        CREATE TABLE events_us PARTITION OF events FOR VALUES IN ('us');
        -- As an earlier version made it: waltrail sets it to publish partitions under their own names.
        CREATE PUBLICATION pub_t_partitioned FOR TABLE events WITH (publish_via_partition_root = true);";
    let tables = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_HOOK"
display_column = "name"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'eu', 'a'), (2, 'us', 'b'); UPDATE events SET name = 'c' WHERE id = 2")
        .await
        .unwrap();
    env.wait_for(3).await;
    let items = env.items().await;
    assert!(
        items.iter().all(|i| i.table_name == "public.events"),
        "{items:?}"
    );
    assert_eq!(
        items[2].diff_json(),
        json!({"name": {"before": "b", "after": "c"}})
    );
    assert_eq!(items[2].resource_id, "2/us");
    // A partition created while streaming starts at REPLICA IDENTITY DEFAULT; the watchdog sets it to FULL,
    // so a delete there still carries the whole row.
    db.batch_execute("CREATE TABLE events_ap PARTITION OF events FOR VALUES IN ('ap')")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let ident: String = db
            .query_one(
                "SELECT relreplident::text FROM pg_class WHERE relname = 'events_ap'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if ident == "f" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new partition was never set to REPLICA IDENTITY FULL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    db.batch_execute(
        "INSERT INTO events VALUES (3, 'ap', 'tokyo'); DELETE FROM events WHERE id = 3",
    )
    .await
    .unwrap();
    env.wait_for(5).await;
    let items = env.items().await;
    assert_eq!(
        items[4].diff_json()["name"],
        json!({"before": "tokyo"}),
        "{:?}",
        items[4]
    );
    assert_eq!(items[4].resource_display, "tokyo");
    // A TRUNCATE of one partition is the table's item, naming the partition; of the whole table, every one.
    db.batch_execute("TRUNCATE events_eu").await.unwrap();
    env.wait_for(6).await;
    db.batch_execute("TRUNCATE events").await.unwrap();
    env.wait_for(7).await;
    let items = env.items().await;
    assert_eq!(
        (items[5].action.as_str(), items[5].table_name.as_str()),
        ("AUDIT_ACTION_TRUNCATED", "public.events")
    );
    assert_eq!(
        items[5].diff_json(),
        json!({"partitions": ["public.events_eu"]})
    );
    let mut all = items[6].diff_json()["partitions"].clone();
    all.as_array_mut().unwrap().sort_by_key(|v| v.to_string());
    assert_eq!(
        all,
        json!(["public.events_ap", "public.events_eu", "public.events_us"])
    );
    // What the stream cannot show of a partitioned table, `check` says.
    let findings = waltrail::capture::check::postgres(&env.config(tables)).await;
    assert!(
        findings
            .iter()
            .any(|f| f.what.contains("public.events is partitioned")
                && f.what.contains("DETACH PARTITION")),
        "{findings:#?}"
    );
    run.stop().await.unwrap();
}

/// The table both streaming tests write, and its mapping.
const WORKERS_DDL: &str =
    "CREATE TABLE workers (id int PRIMARY KEY, org text, name text, token text)";
const WORKERS: &str = r#"
[[tables]]
table = "workers"
resource_type = "RESOURCE_TYPE_WORKER"
organization_column = "org"
display_column = "name"
redact_columns = ["token"]
"#;

/// A config text with streaming of large transactions turned on.
fn with_streaming(text: &str) -> waltrail::config::Config {
    let cfg = waltrail::config::Config::parse(
        &text.replace("[postgres]", "[postgres]\nstreaming = true"),
    )
    .unwrap();
    cfg.validate().unwrap();
    cfg
}

/// A transaction larger than the source's `logical_decoding_work_mem` is streamed while in progress
/// (protocol 2): waltrail holds it until the commit, drops what a rolled-back savepoint or a rolled-back
/// transaction did, and stores exactly what a capture without streaming stores from the same WAL (same ids,
/// same chain), with redacted columns still redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_transactions_streamed_while_in_progress() {
    let env = TestEnv::new("t_stream").await;
    // The second capture reads the same database without streaming, into a store of its own, under the
    // same source id (so the two must agree item for item).
    let mut plain = TestEnv::new("t_stream_plain").await;
    plain.pg_url = env.pg_url.clone();
    let db = env.pg().await;
    db.batch_execute(&format!(
        "ALTER DATABASE t_stream SET logical_decoding_work_mem = '64kB'; {WORKERS_DDL}"
    ))
    .await
    .unwrap();
    let tables = WORKERS;
    let streamed = Running::start(with_streaming(&env.config_text(tables)));
    let text = plain
        .config_text(tables)
        .replace("test-t_stream_plain", "test-t_stream");
    let cfg = waltrail::config::Config::parse(&text).unwrap();
    cfg.validate().unwrap();
    let unstreamed = Running::start(cfg);
    wait_slot(&db, "slot_t_stream").await;
    wait_slot(&db, "slot_t_stream_plain").await;

    let other = env.pg().await;
    let rows = |from: i32, n: i32| {
        format!(
            "INSERT INTO workers SELECT i, 'org' || (i % 5), 'w' || i, 'sk_live_secret_' || i || repeat('x', 60) \
             FROM generate_series({from}, {}) i;",
            from + n - 1
        )
    };
    // Who did it, said by the platform inside the transaction: it travels in the stream like the changes.
    db.batch_execute(&format!(
        "BEGIN; SELECT pg_logical_emit_message(true, 'waltrail', '{{\"actor_id\":\"acct_migrator\",\"source\":\"CLI\"}}'); {}",
        rows(1, 3000)
    ))
    .await
    .unwrap();
    // Committed while the large one is open: stored first, on its own.
    other
        .batch_execute("INSERT INTO workers VALUES (0, 'org0', 'between', 'sk_live_secret_0')")
        .await
        .unwrap();
    // A context message of a rolled-back savepoint (streamed by Postgres 15 under the top-level
    // transaction) must not attribute anything that stays.
    db.batch_execute(&format!(
        "SAVEPOINT a; SELECT pg_logical_emit_message(true, 'waltrail', '{{\"actor_id\":\"mallory\"}}'); {} SAVEPOINT b; {} ROLLBACK TO SAVEPOINT a; {} UPDATE workers SET name = name || '!' WHERE id BETWEEN 1 AND 500; COMMIT;",
        rows(10_001, 2000),
        rows(20_001, 500),
        rows(30_001, 1000)
    ))
    .await
    .unwrap();
    // A large transaction rolled back as a whole leaves nothing.
    db.batch_execute(&format!("BEGIN; {} ROLLBACK;", rows(40_001, 3000)))
        .await
        .unwrap();
    db.batch_execute("INSERT INTO workers VALUES (-1, 'org0', 'after', 'sk_live_secret_last')")
        .await
        .unwrap();

    let want = 3000 + 1 + 1000 + 500 + 1;
    env.wait_for(want).await;
    plain.wait_for(want).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.count().await, want, "nothing rolled back is stored");

    let stats = db
        .query_one(
            "SELECT stream_txns, stream_bytes, spill_bytes FROM pg_stat_replication_slots WHERE slot_name = 'slot_t_stream'",
            &[],
        )
        .await
        .unwrap();
    let (stream_txns, stream_bytes): (i64, i64) = (stats.get(0), stats.get(1));
    assert!(
        stream_txns >= 2 && stream_bytes > 0,
        "Postgres streamed the large transactions ({stream_txns} transactions, {stream_bytes} bytes)"
    );
    let plain_spill: i64 = db
        .query_one(
            "SELECT spill_bytes FROM pg_stat_replication_slots WHERE slot_name = 'slot_t_stream_plain'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        plain_spill > 0,
        "without streaming, the source spilled them"
    );

    let items = env.items().await;
    assert!(
        !items.iter().any(|i| i.principal_id == "mallory"),
        "a rolled-back savepoint's message attributes nothing"
    );
    let ids: Vec<i64> = items
        .iter()
        .filter_map(|i| i.resource_id.parse().ok())
        .collect();
    assert!(
        !ids.iter()
            .any(|id| (10_001..=20_500).contains(id) || *id > 40_000),
        "changes of the rolled-back savepoint and transaction are not stored"
    );
    assert_eq!(
        items.first().map(|i| i.resource_display.as_str()),
        Some("between"),
        "commit order: the small transaction committed first"
    );
    let big: Vec<_> = items
        .iter()
        .filter(|i| i.resource_display != "between" && i.resource_display != "after")
        .collect();
    assert_eq!(big.len(), 4500);
    assert!(big.iter().all(|i| i.event_id == big[0].event_id));
    // Before the savepoint, the context message attributes the items. After it, Postgres 15 does not say
    // whether the message cut with the savepoint was the savepoint's (here) or the transaction's own
    // (QA45 H1): the items are acct_migrator's or marked of unknown context, never mallory's.
    let before_savepoint = |i: &&&Item| {
        i.action == "AUDIT_ACTION_CREATED"
            && i.resource_id.parse::<i64>().is_ok_and(|id| id <= 3000)
    };
    assert!(
        big.iter()
            .filter(before_savepoint)
            .all(|i| i.principal_id == "acct_migrator" && i.source == "AUDIT_SOURCE_CLI"),
        "the context message inside the streamed transaction attributes its items: {:?}",
        big.first().map(|i| (&i.principal_id, &i.source))
    );
    assert!(
        big.iter()
            .filter(|i| !before_savepoint(i))
            .all(|i| i.principal_id == "acct_migrator"
                || (i.principal_id.is_empty() && i.context_status == "UNCERTAIN")),
        "after the cut: the earlier context or marked unknown"
    );
    assert!(items.iter().all(|i| !i.diff.contains("sk_live_secret")));

    // The same items (ids) as without streaming; where their attribution differs, the streamed one is
    // marked of unknown context (the chain differs from there on, as its content does).
    let plain_items = plain.items().await;
    assert_eq!(plain_items.len(), want as usize);
    let by_id: std::collections::HashMap<_, _> = plain_items.iter().map(|i| (i.id, i)).collect();
    for i in &items {
        let Some(p) = by_id.get(&i.id) else {
            panic!("{} is not among the unstreamed capture's items", i.id);
        };
        assert!(
            (i.principal_id == p.principal_id && i.context_status == p.context_status)
                || i.context_status == "UNCERTAIN",
            "streamed {:?}/{:?} vs unstreamed {:?}/{:?}",
            i.principal_id,
            i.context_status,
            p.principal_id,
            p.context_status
        );
    }
    assert_eq!(
        streamed
            .metrics
            .spill_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing held once everything committed or rolled back"
    );
    streamed.stop().await.unwrap();
    unstreamed.stop().await.unwrap();
}

/// waltrail restarts while a streamed transaction is still open on the source: what it held is gone with
/// the process, and Postgres streams the transaction again from its start; every item is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_transaction_open_across_a_restart() {
    let env = TestEnv::new("t_stream_restart").await;
    let db = env.pg().await;
    db.batch_execute(&format!(
        "ALTER DATABASE t_stream_restart SET logical_decoding_work_mem = '64kB'; {WORKERS_DDL}"
    ))
    .await
    .unwrap();
    let config = || with_streaming(&env.config_text(WORKERS));
    let run = Running::start(config());
    wait_slot(&db, "slot_t_stream_restart").await;
    db.batch_execute(
        "BEGIN; INSERT INTO workers SELECT i, 'org' || (i % 3), 'w' || i FROM generate_series(1, 4000) i;",
    )
    .await
    .unwrap();
    // Wait until waltrail holds part of it, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while run
        .metrics
        .spill_bytes
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the open transaction was never streamed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run.stop().await.unwrap();
    let run = Running::start(config());
    db.batch_execute(
        "INSERT INTO workers SELECT i, 'org' || (i % 3), 'w' || i FROM generate_series(4001, 6000) i; COMMIT;",
    )
    .await
    .unwrap();
    env.wait_for(6000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ch = env.ch();
    let (rows, ids): (u64, u64) = ch
        .query("SELECT count(), uniqExact(id) FROM audit_items FINAL")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((rows, ids), (6000, 6000), "every item once");
    run.stop().await.unwrap();
}

/// Without REPLICA IDENTITY FULL (waltrail may not set it here), a delete carries its key alone: the other
/// columns are marked not sent, never shown as NULL, and the organization comes from the resource's last
/// item in the trail; a resource the trail never saw stays of no organization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_with_its_key_alone_takes_its_scope_from_the_trail() {
    let env = TestEnv::new("t_keyonly").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE keyed (id int PRIMARY KEY, org text, name text);
         INSERT INTO keyed VALUES (9, 'org1', 'before-waltrail');",
    )
    .await
    .unwrap();
    let tables = r#"
[[tables]]
table = "keyed"
resource_type = "RESOURCE_TYPE_HOOK"
organization_column = "org"
display_column = "name"
"#;
    let mut cfg = env.config(tables);
    cfg.postgres.set_replica_identity_full = false;
    let run = Running::start(cfg);
    wait_slot(&db, "slot_t_keyonly").await;
    // Inserted and deleted at once: the delete waits for the insert to be stored, then finds it.
    db.batch_execute(
        "INSERT INTO keyed VALUES (1, 'org1', 'short-lived'); DELETE FROM keyed WHERE id = 1;
         DELETE FROM keyed WHERE id = 9;",
    )
    .await
    .unwrap();
    env.wait_for(3).await;
    let items = env.items().await;
    let deleted: Vec<_> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_DELETED")
        .collect();
    assert_eq!(deleted.len(), 2, "{items:#?}");
    let d1 = deleted.iter().find(|i| i.resource_id == "1").unwrap();
    assert_eq!(
        (d1.organization_id.as_str(), d1.resource_display.as_str()),
        ("org1", "short-lived")
    );
    // QA48a L2: its line names it by that display name too, not by its key.
    assert!(
        d1.summary.ends_with(r#" "short-lived""#),
        "{:?}",
        d1.summary
    );
    assert_eq!(
        d1.diff_json(),
        json!({"id": {"before": 1}, "org": {"not_sent": true}, "name": {"not_sent": true}})
    );
    let d9 = deleted.iter().find(|i| i.resource_id == "9").unwrap();
    assert_eq!(
        d9.organization_id, "",
        "never seen by the trail: no organization"
    );
    // A bulk cleanup: thousands of key-only deletes in one statement (more than one look-up's worth),
    // of rows in two organizations, one of them moved between its insert and its delete; and a row
    // inserted and deleted in a transaction after a held delete. Each finds where its resource was last.
    db.batch_execute(
        "INSERT INTO keyed SELECT g, 'org' || (g % 2), 'bulk-' || g FROM generate_series(100, 12099) g;
         UPDATE keyed SET org = 'org9' WHERE id = 101;",
    )
    .await
    .unwrap();
    env.wait_for(3 + 12_000 + 1).await;
    db.batch_execute(
        "DELETE FROM keyed WHERE id >= 100;
         BEGIN; INSERT INTO keyed VALUES (50000, 'org7', 'late'); DELETE FROM keyed WHERE id = 50000; COMMIT;",
    )
    .await
    .unwrap();
    let total = 3 + 12_000 + 1 + 12_000 + 2;
    env.wait_for(total).await;
    let wrong: u64 = env
        .ch()
        .query(
            "SELECT count() FROM audit_items WHERE action = 'AUDIT_ACTION_DELETED' AND resource_id != '1' \
             AND resource_id != '9' AND organization_id != multiIf(resource_id = '101', 'org9', \
             resource_id = '50000', 'org7', concat('org', toString(toUInt32(resource_id) % 2)))",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(wrong, 0, "every delete in its resource's last organization");
    let deletes: u64 = env
        .ch()
        .query("SELECT uniqExact(id) FROM audit_items WHERE action = 'AUDIT_ACTION_DELETED'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(deletes, 2 + 12_000 + 1);
    run.stop().await.unwrap();
    // The chains still hold, the held deletes linked in commit order.
    for org in ["org0", "org1", "org9", "org7"] {
        let reports = env.verified_after_merges(org).await;
        assert!(reports.iter().all(|r| r.items > 0), "{org}: {reports:?}");
    }
}

/// QA48a H1: a move is recorded twice at one position, in the scope the resource joined (sub 0) and in the
/// one it left (sub 1). A delete carrying its key alone after it goes where the resource moved, every time:
/// whether it finds the move in the trail (stored, the two copies tie on position and ClickHouse returned
/// either) or held with it (not yet stored, the copy in the scope left came last and won).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_only_delete_after_a_move_goes_to_the_organization_the_resource_joined() {
    let (env, db, run) = workers_with_full_identity("t_move_keyonly").await;
    db.batch_execute(
        "INSERT INTO workers SELECT g, 'org_old', 'w' || g FROM generate_series(1, 41) g",
    )
    .await
    .unwrap();
    // Each move its own transaction, stored before the deletes: one tie a resource in the look-up.
    for i in 1..=20 {
        db.batch_execute(&format!(
            "UPDATE workers SET org = 'org_new' WHERE id = {i}"
        ))
        .await
        .unwrap();
    }
    env.wait_for(41 + 2 * 20).await;
    // A migration sets the identity back: the deletes carry their key alone.
    db.batch_execute(
        "ALTER TABLE workers REPLICA IDENTITY DEFAULT; DELETE FROM workers WHERE id <= 20;",
    )
    .await
    .unwrap();
    // Held: behind a key-only delete, a move and then a key-only delete of the moved row.
    db.batch_execute(
        "BEGIN;
         DELETE FROM workers WHERE id = 41;
         ALTER TABLE workers REPLICA IDENTITY FULL;
         UPDATE workers SET org = 'org_new' WHERE id = 21;
         ALTER TABLE workers REPLICA IDENTITY DEFAULT;
         DELETE FROM workers WHERE id = 21;
         COMMIT;",
    )
    .await
    .unwrap();
    env.wait_for(41 + 2 * 20 + 20 + 1 + 2 + 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let items = env.items().await;
    run.stop().await.unwrap();
    let moved_21 = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_MOVED" && i.resource_id == "21")
        .count();
    assert_eq!(
        moved_21, 2,
        "the held move carries the scope left: {items:#?}"
    );
    let deletes: Vec<(String, String)> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_DELETED")
        .map(|i| (i.resource_id.clone(), i.organization_id.clone()))
        .collect();
    assert_eq!(deletes.len(), 22, "{deletes:?}");
    let want: Vec<(String, String)> = (1..=21)
        .map(|i| (i.to_string(), "org_new".to_owned()))
        .chain([("41".to_owned(), "org_old".to_owned())])
        .collect();
    assert_eq!(
        deletes
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        want.into_iter().collect(),
        "each delete in the organization its resource was in"
    );
}

/// Key-only deletes of resources with long keys (here 2,000 characters each): the trail look-ups that find
/// their organizations are cut by bytes as well as by count, so no look-up is too large for ClickHouse to
/// parse (it refuses a query over `max_query_size`, and capture would retry it for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_only_deletes_of_long_keys_find_their_organizations() {
    let env = TestEnv::new("t_longkeys").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE long_keyed (id text PRIMARY KEY, org text)")
        .await
        .unwrap();
    let tables = r#"
[[tables]]
table = "long_keyed"
resource_type = "RESOURCE_TYPE_HOOK"
organization_column = "org"
"#;
    let mut cfg = env.config(tables);
    cfg.postgres.set_replica_identity_full = false;
    let run = Running::start(cfg);
    wait_slot(&db, "slot_t_longkeys").await;
    db.batch_execute(
        "INSERT INTO long_keyed SELECT lpad(g::text, 2000, 'k'), 'org' || (g % 3) FROM generate_series(1, 600) g",
    )
    .await
    .unwrap();
    env.wait_for(600).await;
    db.batch_execute("DELETE FROM long_keyed").await.unwrap();
    env.wait_for(1200).await;
    let wrong: u64 = env
        .ch()
        .query(
            "SELECT count() FROM audit_items WHERE action = 'AUDIT_ACTION_DELETED' AND organization_id != \
             concat('org', toString(toUInt32(replaceAll(resource_id, 'k', '')) % 3))",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(wrong, 0, "every delete in its resource's organization");
    run.stop().await.unwrap();
}

/// A partition created while streaming starts at REPLICA IDENTITY DEFAULT: its first change arrives without
/// the old row. FULL is set when that change is read, not at the watchdog's next look (5 s later), so that
/// the next update there (a resource moving to another organization) is seen in both organizations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_created_while_streaming_is_set_full_at_its_first_change() {
    let env = TestEnv::new("t_new_part").await;
    let ddl =
        "CREATE TABLE accounts (id int PRIMARY KEY, org text, name text) PARTITION BY RANGE (id);
        CREATE TABLE accounts_1 PARTITION OF accounts FOR VALUES FROM (0) TO (1000);";
    let tables = r#"
[[tables]]
table = "accounts"
resource_type = "RESOURCE_TYPE_ACCOUNT"
organization_column = "org"
display_column = "name"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute(
        "CREATE TABLE accounts_2 PARTITION OF accounts FOR VALUES FROM (1000) TO (2000)",
    )
    .await
    .unwrap();
    db.batch_execute("INSERT INTO accounts VALUES (1500, 'orgA', 'new-partition')")
        .await
        .unwrap();
    env.wait_for(1).await;
    db.batch_execute("UPDATE accounts SET org = 'orgB' WHERE id = 1500")
        .await
        .unwrap();
    env.wait_for(3).await;
    let items = env.items().await;
    let moved: Vec<(&str, &str)> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_MOVED")
        .map(|i| (i.organization_id.as_str(), i.resource_id.as_str()))
        .collect();
    assert_eq!(moved.len(), 2, "{items:#?}");
    assert!(moved.contains(&("orgA", "1500")) && moved.contains(&("orgB", "1500")));
    run.stop().await.unwrap();
}

/// DDL that changes every row's value without a row change (QA41 H1): with the event triggers of
/// sql/postgres/waltrail_ddl.sql installed, a column retyped with USING and an enum label renamed are
/// each an item of the mapped table, in place (before the change that follows them), attributed like
/// the transaction; a table the DDL leaves alone gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_that_rewrites_values_is_an_item_in_place() {
    let env = TestEnv::new("t_ddl_rewrite").await;
    let ddl = "CREATE TYPE role_t AS ENUM ('member', 'viewer');
               CREATE TABLE memberships (id int PRIMARY KEY, org text, role role_t, level text, name text);
               CREATE TABLE other (id int PRIMARY KEY, level text);";
    let tables = r#"
[[tables]]
table = "memberships"
resource_type = "RESOURCE_TYPE_PROJECT_MEMBER"
organization_column = "org"
display_column = "name"
"#;
    let db = env.pg().await;
    let install = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sql/postgres/waltrail_ddl.sql"
    ))
    .expect("the DDL event trigger script");
    db.batch_execute(&install).await.expect("installs");
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute(
        "INSERT INTO memberships VALUES (1, 'o1', 'member', 'low', 'mallory'), (2, 'o2', 'viewer', 'low', 'eve');
         INSERT INTO other VALUES (1, 'low');",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    db.batch_execute(
        "ALTER TABLE memberships ALTER COLUMN level TYPE text USING 'high';
         ALTER TABLE other ALTER COLUMN level TYPE text USING 'high';
         UPDATE memberships SET name = 'mallory2' WHERE id = 1;",
    )
    .await
    .unwrap();
    db.batch_execute(
        "BEGIN; SELECT pg_logical_emit_message(true, 'waltrail', '{\"actor_id\": \"acct_dba\", \"source\": \"CLI\"}');
         ALTER TYPE role_t RENAME VALUE 'viewer' TO 'owner'; COMMIT;
         UPDATE memberships SET name = 'eve2' WHERE id = 2;",
    )
    .await
    .unwrap();
    env.wait_for(6).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let altered: Vec<&Item> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED")
        .collect();
    assert_eq!(altered.len(), 2, "{items:#?}");
    let rewrite = altered[0];
    assert_eq!(rewrite.table_name, "public.memberships");
    assert_eq!(
        rewrite.platform_wide, 1,
        "every organization's rows changed"
    );
    assert!(
        rewrite
            .summary
            .ends_with("altered every Project member in public.memberships"),
        "{rewrite:#?}"
    );
    let diff = rewrite.diff_json();
    assert_eq!(diff["command"], "ALTER TABLE", "{diff}");
    assert!(
        diff["effect"].as_str().unwrap_or("").contains("rewritten"),
        "{diff}"
    );
    let renamed = altered[1];
    let diff = renamed.diff_json();
    assert_eq!(diff["command"], "ALTER TYPE", "{diff}");
    assert_eq!(diff["type"], "public.role_t", "{diff}");
    assert_eq!(
        diff["renamed"],
        json!([{"from": "viewer", "to": "owner"}]),
        "{diff}"
    );
    assert_eq!(renamed.changed_fields, vec!["role"]);
    assert_eq!(
        renamed.principal_id, "acct_dba",
        "attributed like the DDL's transaction"
    );
    // In place: each before the update that followed it.
    let pos = |i: &Item| (i.commit_lsn, i.seq);
    let update_of = |name: &str| {
        items
            .iter()
            .find(|i| i.resource_display == name)
            .unwrap_or_else(|| panic!("no update of {name}: {items:#?}"))
    };
    assert!(pos(rewrite) < pos(update_of("mallory2")));
    assert!(pos(update_of("mallory2")) < pos(renamed));
    assert!(pos(renamed) < pos(update_of("eve2")));
}

/// QA41 L1: a scope is what is stored. An organization set from NULL to '' stays in one scope: one
/// update, not a move stored twice there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_and_empty_organizations_are_one_scope() {
    let env = TestEnv::new("t_scope_null").await;
    let tables = r#"
[[tables]]
table = "res"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org"
display_column = "name"
"#;
    let (db, run) = start(
        &env,
        "CREATE TABLE res (id int PRIMARY KEY, org text, name text)",
        tables,
    )
    .await;
    db.batch_execute(
        "INSERT INTO res VALUES (1, NULL, 'n'); UPDATE res SET org = ''; UPDATE res SET org = 'o1'",
    )
    .await
    .unwrap();
    env.wait_for(4).await;
    run.stop().await.unwrap();
    let actions: Vec<&str> = env
        .items()
        .await
        .iter()
        .map(|i| i.action.as_str())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|a| match a {
            "AUDIT_ACTION_CREATED" => "created",
            "AUDIT_ACTION_UPDATED" => "updated",
            "AUDIT_ACTION_MOVED" => "moved",
            _ => "other",
        })
        .collect();
    assert_eq!(actions, ["created", "updated", "moved", "moved"]);
}

/// QA41 M4: ids and organizations cut at `capture.max_value_bytes` keep a hash of the whole value, so
/// two that share their first kilobyte stay two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_ids_cut_to_their_first_kilobyte_stay_apart() {
    let env = TestEnv::new("t_long_ids").await;
    let tables = r#"
[[tables]]
table = "objects"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org"
"#;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE objects (path text PRIMARY KEY, org text)")
        .await
        .unwrap();
    let mut cfg = env.config(tables);
    cfg.capture.max_value_bytes = 1024;
    let run = Running::start(cfg);
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    let (p, o) = ("a/".repeat(600), "org-".repeat(300));
    db.batch_execute(&format!(
        "INSERT INTO objects VALUES ('{p}1', '{o}1'), ('{p}2', '{o}2')"
    ))
    .await
    .unwrap();
    env.wait_for(2).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    assert_ne!(items[0].organization_id, items[1].organization_id);
    assert_ne!(items[0].resource_id, items[1].resource_id);
    assert!(
        items[0]
            .resource_id
            .contains("[truncated: 1201 bytes, sha256 "),
        "{}",
        items[0].resource_id
    );
}

/// QA41 L2: a display column of a domain over jsonb holding a JSON string shows the string, like a jsonb
/// column does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_display_column_of_a_domain_over_jsonb_shows_its_string() {
    let env = TestEnv::new("t_display_domain").await;
    let tables = r#"
[[tables]]
table = "labels"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org"
display_column = "label"
"#;
    let (db, run) = start(
        &env,
        "CREATE DOMAIN jlabel AS jsonb; CREATE TABLE labels (id int PRIMARY KEY, org text, label jlabel)",
        tables,
    )
    .await;
    db.batch_execute(r#"INSERT INTO labels VALUES (1, 'o1', '"prod"')"#)
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    assert_eq!(env.items().await[0].resource_display, "prod");
}

/// QA41 M1: below REPLICA IDENTITY FULL a delete carries its identity key alone; id columns outside it
/// are refused at the start, and a delete that arrives so anyway (the identity changed after the start)
/// is named by the key it carries, never by an empty id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_outside_the_replica_identity_are_refused_below_full() {
    let env = TestEnv::new("t_ids_identity").await;
    let tables = r#"
[[tables]]
table = "hooks"
resource_type = "RESOURCE_TYPE_HOOK"
organization_column = "org"
id_columns = ["slug"]
"#;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE hooks (seq bigint NOT NULL, slug text NOT NULL, org text NOT NULL);
         CREATE UNIQUE INDEX hooks_seq ON hooks (seq);
         CREATE UNIQUE INDEX hooks_slug_org ON hooks (slug, org);
         ALTER TABLE hooks REPLICA IDENTITY USING INDEX hooks_seq",
    )
    .await
    .unwrap();
    let config = || {
        let mut cfg = env.config(tables);
        cfg.postgres.set_replica_identity_full = false;
        cfg
    };
    let msg = Running::start(config()).stops_with().await;
    assert!(
        msg.contains("slug") && msg.contains("REPLICA IDENTITY FULL"),
        "{msg}"
    );
    db.batch_execute("ALTER TABLE hooks REPLICA IDENTITY USING INDEX hooks_slug_org")
        .await
        .unwrap();
    let run = Running::start(config());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "INSERT INTO hooks VALUES (1, 'hook-a', 'o1'), (2, 'hook-b', 'o2');
         DELETE FROM hooks WHERE seq = 1;
         ALTER TABLE hooks REPLICA IDENTITY USING INDEX hooks_seq;
         DELETE FROM hooks WHERE seq = 2;",
    )
    .await
    .unwrap();
    env.wait_for(4).await;
    run.stop().await.unwrap();
    let deletes: Vec<String> = env
        .items()
        .await
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_DELETED")
        .map(|i| i.resource_id.clone())
        .collect();
    assert_eq!(deletes[0], "hook-a");
    assert_eq!(
        deletes[1],
        "(id not sent: deleted without REPLICA IDENTITY FULL; key seq=2)"
    );
}

fn install_ddl_triggers() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sql/postgres/waltrail_ddl.sql"
    ))
    .expect("the DDL event trigger script")
}

/// QA42: one item per statement for a partitioned table's rewrite (its partitions named in it); a label
/// renamed under nested types (a domain over a domain, an array of a domain, a range, a composite) is
/// recorded; ALTER TYPE that changes no stored value (ADD VALUE, RENAME TO) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_items_are_one_per_statement_and_only_for_changed_values() {
    let env = TestEnv::new("t_ddl_nested").await;
    let db = env.pg().await;
    db.batch_execute(&install_ddl_triggers())
        .await
        .expect("installs");
    let ddl = "CREATE TYPE role_t AS ENUM ('viewer', 'member');
               CREATE DOMAIN role_d AS role_t; CREATE DOMAIN role_dd AS role_d;
               CREATE TYPE pair AS (r role_t, n int);
               CREATE TABLE deep (id int PRIMARY KEY, org text, a role_dd, b role_d[], c pair);
               CREATE TABLE parts (id int, org text, level text, PRIMARY KEY (id, org)) PARTITION BY LIST (org);
               CREATE TABLE parts_1 PARTITION OF parts FOR VALUES IN ('o1');
               CREATE TABLE parts_2 PARTITION OF parts FOR VALUES IN ('o2');";
    let tables = r#"
[[tables]]
table = "deep"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org"

[[tables]]
table = "parts"
resource_type = "RESOURCE_TYPE_PROJECT"
organization_column = "org"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute(
        "INSERT INTO deep VALUES (1, 'o1', 'viewer', '{viewer}', '(viewer,1)');
         INSERT INTO parts VALUES (1, 'o1', 'low'), (2, 'o2', 'low');",
    )
    .await
    .unwrap();
    env.wait_for(3).await;
    db.batch_execute(
        "ALTER TYPE role_t ADD VALUE 'admin';
         ALTER TYPE pair RENAME TO pair_t;
         ALTER TABLE parts ALTER COLUMN level TYPE text USING 'high';
         ALTER TYPE role_t RENAME VALUE 'viewer' TO 'owner';
         INSERT INTO parts VALUES (3, 'o1', 'x');",
    )
    .await
    .unwrap();
    env.wait_for(6).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let altered: Vec<(String, serde_json::Value, Vec<String>)> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED")
        .map(|i| {
            (
                i.table_name.clone(),
                i.diff_json(),
                i.changed_fields.clone(),
            )
        })
        .collect();
    assert_eq!(altered.len(), 2, "{altered:#?}");
    assert_eq!(altered[0].0, "public.parts");
    assert_eq!(
        altered[0].1["relations"],
        json!(["public.parts_1", "public.parts_2"]),
        "{altered:#?}"
    );
    assert_eq!(altered[1].0, "public.deep");
    assert_eq!(altered[1].2, ["a", "b", "c"], "{altered:#?}");
}

/// QA42 H1/H2: the trigger functions run as a superuser, so nothing a platform role creates may be used
/// by them: a temp view shadowing a catalog table gives it nothing, and a schema of that name owned by
/// another role stops the script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ddl_triggers_give_no_role_a_superusers_rights() {
    let env = TestEnv::new("t_ddl_escalate").await;
    let db = env.pg().await;
    db.batch_execute(&install_ddl_triggers())
        .await
        .expect("installs");
    db.batch_execute(
        "CREATE ROLE mallory_ddl LOGIN; GRANT CREATE ON SCHEMA public TO mallory_ddl;
         CREATE ROLE owner_ddl LOGIN;",
    )
    .await
    .unwrap();
    let m = env.pg_as("mallory_ddl").await;
    m.batch_execute(
        "CREATE TYPE mood AS ENUM ('a', 'b');
         CREATE TABLE mine (id int PRIMARY KEY, v int, m mood);
         CREATE FUNCTION public.evil() RETURNS oid LANGUAGE plpgsql AS $$
         BEGIN
           IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
             EXECUTE 'ALTER ROLE mallory_ddl SUPERUSER';
           END IF;
           RETURN 0;
         END $$;
         CREATE TEMP VIEW pg_class AS
           SELECT c.oid, c.relname, c.relnamespace, c.relkind, c.reltype, public.evil() AS x
           FROM pg_catalog.pg_class c;
         CREATE TEMP VIEW pg_attribute AS
           SELECT a.attrelid, a.attname, a.attnum + public.evil()::int AS attnum, a.attisdropped, a.atttypid
           FROM pg_catalog.pg_attribute a;
         ALTER TABLE mine ALTER COLUMN v TYPE bigint;
         ALTER TYPE mood RENAME VALUE 'b' TO 'c';",
    )
    .await
    .expect("the platform role's DDL runs");
    let superuser: bool = db
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory_ddl'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !superuser,
        "a platform role became superuser through the triggers"
    );
    db.batch_execute(
        "DROP EVENT TRIGGER waltrail_ddl_rewrite, waltrail_ddl_alter_type_start, waltrail_ddl_alter_type; \
         DROP SCHEMA waltrail_ddl CASCADE; CREATE SCHEMA waltrail_ddl AUTHORIZATION owner_ddl;",
    )
    .await
    .unwrap();
    let refused = db
        .batch_execute(&install_ddl_triggers())
        .await
        .expect_err("a schema another role owns is refused");
    assert!(
        format!("{refused:?}").contains("not a superuser"),
        "{refused:?}"
    );
}

/// QA43 H1/H2: a rewrite is said before the statement's own code (a USING expression) runs, so that code
/// can neither hide it nor blame another table; a label renamed under a table's row type (a column of
/// type `grants`, or `grants[]`) is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_items_cannot_be_hidden_by_the_statement_itself() {
    let env = TestEnv::new("t_ddl_hide").await;
    let db = env.pg().await;
    db.batch_execute(&install_ddl_triggers())
        .await
        .expect("installs");
    let ddl = "CREATE ROLE hider_ddl LOGIN; GRANT CREATE ON SCHEMA public TO hider_ddl;
               CREATE TABLE accounts (id int PRIMARY KEY, org text, plan text);
               ALTER TABLE accounts OWNER TO hider_ddl;
               CREATE TABLE victim (id int PRIMARY KEY, org text);
               CREATE TYPE tier AS ENUM ('basic', 'admin');
               CREATE TABLE grants (id int PRIMARY KEY, t tier);
               CREATE TABLE holders (id int PRIMARY KEY, org text, g grants, gs grants[]);";
    let tables = r#"
[[tables]]
table = "accounts"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org"

[[tables]]
table = "victim"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org"

[[tables]]
table = "holders"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org"
"#;
    let (db, run) = start(&env, ddl, tables).await;
    db.batch_execute(
        "INSERT INTO accounts VALUES (1, 'o1', 'free'); INSERT INTO victim VALUES (1, 'o2');
         INSERT INTO holders VALUES (1, 'o1', '(1,basic)', '{\"(1,basic)\"}');",
    )
    .await
    .unwrap();
    env.wait_for(3).await;
    let victim: u32 = db
        .query_one("SELECT 'public.victim'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let m = env.pg_as("hider_ddl").await;
    m.batch_execute(&format!(
        "CREATE FUNCTION hide(text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN PERFORM set_config('waltrail_ddl.rewritten', '', true); RETURN 'enterprise'; END $$;
         CREATE FUNCTION blame(text) RETURNS text LANGUAGE plpgsql AS $$
         BEGIN PERFORM set_config('waltrail_ddl.rewritten', '{victim}', true); RETURN 'platinum'; END $$;
         ALTER TABLE accounts ALTER COLUMN plan TYPE text USING hide(plan);"
    ))
    .await
    .expect("the role's DDL runs");
    // In a transaction of its own: two rewrites of one table in a row in one transaction are one item.
    m.batch_execute("ALTER TABLE accounts ALTER COLUMN plan TYPE text USING blame(plan)")
        .await
        .expect("the role's DDL runs");
    db.batch_execute("ALTER TYPE tier RENAME VALUE 'basic' TO 'owner'")
        .await
        .unwrap();
    env.wait_for(6).await;
    run.stop().await.unwrap();
    let altered: Vec<String> = env
        .items()
        .await
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED")
        .map(|i| i.table_name.clone())
        .collect();
    assert_eq!(
        altered,
        ["public.accounts", "public.accounts", "public.holders"]
    );
}

/// A soft-delete column that is never NULL (`is_deleted boolean NOT NULL DEFAULT false`, a common shape):
/// NULL → value never happens, so each soft delete would be stored as UPDATED. `check` says so, with the
/// derived actions that record it (QA48a M4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_soft_delete_column_that_is_never_null() {
    let env = TestEnv::new("c_softdel_flag").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE docs (id int PRIMARY KEY, org text, name text, is_deleted boolean NOT NULL DEFAULT false)",
    )
    .await
    .unwrap();
    let tables = r#"
[[tables]]
table = "docs"
resource_type = "RESOURCE_TYPE_DOCUMENT"
organization_column = "org"
display_column = "name"
soft_delete_column = "is_deleted"
"#;
    let path = env.config_file(tables, 1000);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "table docs: soft_delete_column \"is_deleted\" is a boolean declared NOT NULL, but a soft delete is \
             the column going from NULL to a value"
        ),
        "{text}"
    );
    assert!(
        text.contains("{ action = \"AUDIT_ACTION_DELETED\", column = \"is_deleted\", from = false, to = true }"),
        "{text}"
    );
}

/// A resource moved to no organization (its organization column set to NULL) and then deleted with its
/// key alone: the delete is of no organization too. The look-up skipped items of no organization, and the
/// delete took the organization the resource had left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_only_delete_after_a_move_to_no_organization_is_of_none() {
    let (env, db, run) = workers_with_full_identity("t_move_none").await;
    db.batch_execute("INSERT INTO workers VALUES (1, 'org_old', 'w1')")
        .await
        .unwrap();
    db.batch_execute("UPDATE workers SET org = NULL WHERE id = 1")
        .await
        .unwrap();
    let moved = |items: &[Item]| {
        items
            .iter()
            .any(|i| i.resource_id == "1" && i.action != "AUDIT_ACTION_CREATED")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !moved(&env.items().await) {
        assert!(std::time::Instant::now() < deadline, "the move is stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    db.batch_execute(
        "ALTER TABLE workers REPLICA IDENTITY DEFAULT; DELETE FROM workers WHERE id = 1",
    )
    .await
    .unwrap();
    let deleted = loop {
        let items = env.items().await;
        if let Some(d) = items.iter().find(|i| i.action == "AUDIT_ACTION_DELETED") {
            break d.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the delete is stored: {items:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    run.stop().await.unwrap();
    assert_eq!(deleted.organization_id, "", "{deleted:#?}");
}

/// The workers table with REPLICA IDENTITY FULL set by hand (waltrail told not to set it), so that moves
/// carry the scope left, and a pipeline streaming it.
async fn workers_with_full_identity(name: &str) -> (TestEnv, tokio_postgres::Client, Running) {
    let env = TestEnv::new(name).await;
    let db = env.pg().await;
    db.batch_execute(&format!(
        "{}; ALTER TABLE workers REPLICA IDENTITY FULL",
        harness::WORKERS_DDL
    ))
    .await
    .unwrap();
    let mut cfg = env.config(harness::WORKERS);
    cfg.postgres.set_replica_identity_full = false;
    let run = Running::start(cfg);
    wait_slot(&db, &format!("slot_{name}")).await;
    (env, db, run)
}
