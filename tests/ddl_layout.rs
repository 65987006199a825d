//! ALTER TABLE that changes what audited rows read with no row change and no rewrite (QA43 H3/H4): the
//! layout triggers of `sql/postgres/waltrail_ddl.sql` write every published table's columns before the
//! statement and the touched tables' columns after it; waltrail compares them. Columns swapped by
//! renames, dropped and added again with a constant default, dropped, added with a constant default,
//! retyped without a rewrite, renamed through an inheritance parent: each an item. A harmless ALTER
//! TABLE: none. A before-layout forged by the statement's own code cannot hide the change.

mod harness;

use harness::*;

async fn start(env: &TestEnv, ddl: &str, tables: &str) -> (tokio_postgres::Client, Running) {
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.expect("installs");
    db.batch_execute(ddl).await.unwrap();
    let run = Running::start(env.config(tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    (db, run)
}

/// The mapped table `plans`, owned by a role of the test's own (`<env>_m`: roles are the cluster's, and
/// tests run side by side), which runs the migration.
fn plans(env: &TestEnv) -> String {
    let m = format!("{}_m", env.name);
    format!(
        "DROP ROLE IF EXISTS {m}; CREATE ROLE {m} LOGIN;
         GRANT CREATE ON SCHEMA public TO {m};
         CREATE TABLE plans (id int PRIMARY KEY, org text, name text, plan text, tier text, n int4,
                             v varchar(10));
         INSERT INTO plans VALUES (1, 'o1', 'a', 'free', 'gold', -5, 'x');
         ALTER TABLE plans OWNER TO {m};
         CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);"
    )
}

async fn migrator(env: &TestEnv) -> tokio_postgres::Client {
    env.pg_as(&format!("{}_m", env.name)).await
}

const CTX: &str =
    r#"SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"alice","source":"CLI"}');"#;

/// Writes a sentinel row after the migration and stops capture once it is stored (everything before it
/// in the stream is then stored too); returns the ALTERED items of `public.<table>` and all items.
async fn finish(
    env: &TestEnv,
    db: &tokio_postgres::Client,
    run: Running,
    table: &str,
) -> (Vec<Item>, Vec<Item>) {
    db.batch_execute("INSERT INTO sentinel VALUES (1, 'o1', 's')")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let n: u64 = env
            .ch()
            .query("SELECT count() FROM audit_items WHERE table_name = 'public.sentinel'")
            .fetch_one()
            .await
            .unwrap_or(0);
        if n > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sentinel not stored");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    run.stop().await.unwrap();
    let items = env.items().await;
    let altered = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED" && i.table_name == format!("public.{table}"))
        .cloned()
        .collect();
    (altered, items)
}

/// Every column change the items name, as (change, JSON of the change).
fn changes(items: &[Item]) -> Vec<serde_json::Value> {
    items
        .iter()
        .flat_map(|i| {
            i.diff_json()["columns"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect()
}

fn has(items: &[Item], want: serde_json::Value) -> bool {
    let want = want.as_object().expect("an object").clone();
    changes(items)
        .iter()
        .any(|c| want.iter().all(|(k, v)| c.get(k).is_some_and(|x| x == v)))
}

/// QA43 H3: `plan` and `tier` swap names by three renames: every row's plan now reads what was its
/// tier, with no row change and no rewrite. Each rename is an item of its statement, attributed to whoever
/// the transaction names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_swap_by_three_renames_is_recorded() {
    let env = TestEnv::new("l_swap").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(&format!(
        "BEGIN;
         {CTX}
         ALTER TABLE plans RENAME plan TO tmp;
         ALTER TABLE plans RENAME tier TO plan;
         ALTER TABLE plans RENAME tmp TO tier;
         COMMIT;"
    ))
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    eprintln!("{alt:#?}");
    assert_eq!(alt.len(), 3, "one item per statement: {items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "renamed", "from": "plan", "to": "tmp"})
    ));
    assert!(has(
        &alt,
        serde_json::json!({"change": "renamed", "from": "tier", "to": "plan"})
    ));
    assert!(has(
        &alt,
        serde_json::json!({"change": "renamed", "from": "tmp", "to": "tier"})
    ));
    for a in &alt {
        assert_eq!(
            a.principal_id, "alice",
            "attributed like the transaction: {a:#?}"
        );
        assert_eq!(a.platform_wide, 1);
    }
}

/// Found by QA46 (M): a typed table's columns are its composite type's attributes: `ALTER TYPE … RENAME
/// ATTRIBUTE … CASCADE` swaps two of them with no ALTER TABLE. Each rename is an item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_swap_through_the_tables_type_is_recorded() {
    let env = TestEnv::new("l_typed").await;
    let m = format!("{}_m", env.name);
    let ddl = format!(
        "DROP ROLE IF EXISTS {m}; CREATE ROLE {m} LOGIN;
         GRANT CREATE ON SCHEMA public TO {m};
         CREATE TYPE plan_row AS (id int, org text, name text, plan text, tier text);
         CREATE TABLE plans OF plan_row (PRIMARY KEY (id));
         INSERT INTO plans VALUES (1, 'o1', 'a', 'free', 'gold');
         ALTER TYPE plan_row OWNER TO {m}; ALTER TABLE plans OWNER TO {m};
         CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);"
    );
    let (db, run) = start(&env, &ddl, &mapped(&["plans", "sentinel"])).await;
    let mig = migrator(&env).await;
    mig.batch_execute(&format!(
        "BEGIN;
         {CTX}
         ALTER TYPE plan_row RENAME ATTRIBUTE plan TO tmp CASCADE;
         ALTER TYPE plan_row RENAME ATTRIBUTE tier TO plan CASCADE;
         ALTER TYPE plan_row RENAME ATTRIBUTE tmp TO tier CASCADE;
         COMMIT;"
    ))
    .await
    .expect("the migration runs");
    let plan: String = db
        .query_one("SELECT plan FROM plans WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plan, "gold", "the values did swap");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 3, "one item per statement: {items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "renamed", "from": "tier", "to": "plan"})
    ));
    assert!(alt.iter().all(|a| a.principal_id == "alice"), "{alt:#?}");
}

/// Found by QA46 (M, second route): `DROP DOMAIN … CASCADE` drops every column of that domain with no
/// ALTER TABLE (and `DROP TYPE … CASCADE` the same): every row's value of it is gone. An item says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_dropped_with_its_domain_is_recorded() {
    let env = TestEnv::new("l_domain").await;
    let m = format!("{}_m", env.name);
    let ddl = format!(
        "DROP ROLE IF EXISTS {m}; CREATE ROLE {m} LOGIN;
         GRANT CREATE ON SCHEMA public TO {m};
         CREATE DOMAIN tier_d AS text;
         CREATE TABLE plans (id int PRIMARY KEY, org text, name text, tier tier_d);
         INSERT INTO plans VALUES (1, 'o1', 'a', 'gold');
         ALTER DOMAIN tier_d OWNER TO {m}; ALTER TABLE plans OWNER TO {m};
         CREATE TYPE unused_t AS ENUM ('x'); ALTER TYPE unused_t OWNER TO {m};
         CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);"
    );
    let (db, run) = start(&env, &ddl, &mapped(&["plans", "sentinel"])).await;
    let mig = migrator(&env).await;
    mig.batch_execute(&format!(
        "BEGIN; {CTX} DROP TYPE unused_t; DROP DOMAIN tier_d CASCADE; COMMIT;"
    ))
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 1, "the cascade's statement only: {items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "dropped", "column": "tier"})
    ));
    assert_eq!(alt[0].principal_id, "alice");
}

/// QA43 H4: a column dropped and added again under its name with a constant default, in one statement:
/// no rewrite since Postgres 11, and every row's plan reads 'enterprise'. The item says so, never the
/// default's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_and_add_again_with_a_constant_default_is_recorded() {
    let env = TestEnv::new("l_readd").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(
        "ALTER TABLE plans DROP COLUMN plan, ADD COLUMN plan text DEFAULT 'enterprise'",
    )
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 1, "{items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "dropped", "column": "plan"})
    ));
    assert!(has(
        &alt,
        serde_json::json!({"change": "added", "column": "plan", "type": "text",
                           "existing_rows_read": "its default"})
    ));
    assert!(!alt[0].diff.contains("enterprise"), "{}", alt[0].diff);
}

/// DROP COLUMN alone: every row's value is gone, with no row change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_column_is_recorded() {
    let env = TestEnv::new("l_drop").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute("ALTER TABLE plans DROP COLUMN tier")
        .await
        .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 1, "{items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "dropped", "column": "tier"})
    ));
    assert_eq!(alt[0].changed_fields, vec!["tier"]);
}

/// ADD COLUMN with a constant default: every existing row gains a value, with no row change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_column_with_a_constant_default_is_recorded() {
    let env = TestEnv::new("l_add").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute("ALTER TABLE plans ADD COLUMN admin boolean NOT NULL DEFAULT true")
        .await
        .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 1, "{items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "added", "column": "admin", "type": "boolean",
                           "existing_rows_read": "its default"})
    ));
}

/// QA43 H4: int4 → oid reads the same bytes as other values (-5 reads 4294967291), varchar(10) →
/// varchar(20) changes the typmod; neither rewrites the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retype_without_rewrite_is_recorded() {
    let env = TestEnv::new("l_retype").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(
        "ALTER TABLE plans ALTER COLUMN n TYPE oid;
         ALTER TABLE plans ALTER COLUMN v TYPE varchar(20);",
    )
    .await
    .expect("the migration runs");
    let n: String = db
        .query_one("SELECT n::text FROM plans WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, "4294967291", "the value reads otherwise");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 2, "{items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "retyped", "column": "n", "from": "integer", "to": "oid"})
    ));
    assert!(has(
        &alt,
        serde_json::json!({"change": "retyped", "column": "v",
                           "from": "character varying(10)", "to": "character varying(20)"})
    ));
}

/// A column of an inheritance parent renamed: the child's inherited column is renamed with it. The
/// parent and the child are both mapped: each has its item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inheritance_parents_rename_is_the_childs_item_too() {
    let env = TestEnv::new("l_inherit").await;
    let ddl = "DROP ROLE IF EXISTS lay_ih; CREATE ROLE lay_ih LOGIN;
               CREATE TABLE accts (id int PRIMARY KEY, org text, name text, plan text);
               CREATE TABLE accts_vip (tier text, PRIMARY KEY (id)) INHERITS (accts);
               INSERT INTO accts_vip VALUES (1, 'o1', 'a', 'free', 'gold');
               ALTER TABLE accts OWNER TO lay_ih; ALTER TABLE accts_vip OWNER TO lay_ih;
               CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);";
    let (db, run) = start(&env, ddl, &mapped(&["accts", "accts_vip", "sentinel"])).await;
    let m = env.pg_as("lay_ih").await;
    m.batch_execute("ALTER TABLE accts RENAME plan TO tariff")
        .await
        .expect("the migration runs");
    let (parent, items) = finish(&env, &db, run, "accts").await;
    let child: Vec<Item> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED" && i.table_name == "public.accts_vip")
        .cloned()
        .collect();
    assert_eq!(parent.len(), 1, "{items:#?}");
    assert_eq!(child.len(), 1, "{items:#?}");
    let renamed = serde_json::json!({"change": "renamed", "from": "plan", "to": "tariff"});
    assert!(has(&parent, renamed.clone()), "{parent:#?}");
    assert!(has(&child, renamed), "{child:#?}");
}

/// ALTER TABLE that changes no column (a constraint, statistics, a default for new rows, a table of no
/// publication): no item at all, neither an ALTERED one nor an unreadable message's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harmless_alter_table_is_no_item() {
    let env = TestEnv::new("l_harmless").await;
    let ddl = format!("{} CREATE TABLE unpublished (id int);", plans(&env));
    let (db, run) = start(&env, &ddl, &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(
        "ALTER TABLE plans ADD CONSTRAINT n_pos CHECK (n <> 0);
         ALTER TABLE plans ALTER COLUMN plan SET STATISTICS 500;
         ALTER TABLE plans ALTER COLUMN plan SET DEFAULT 'free';
         ALTER TABLE IF EXISTS not_there ADD COLUMN x int;",
    )
    .await
    .expect("the migration runs");
    db.batch_execute("ALTER TABLE unpublished ADD COLUMN x int DEFAULT 1")
        .await
        .unwrap();
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert!(alt.is_empty(), "{alt:#?}");
    let other: Vec<_> = items
        .iter()
        .filter(|i| i.table_name != "public.sentinel")
        .collect();
    assert!(other.is_empty(), "{other:#?}");
}

/// QA43 H1's lesson for layouts: the statement's own code (a volatile DEFAULT) runs between the two
/// triggers and writes a before-layout equal to the after. The real before-layout was written first,
/// and the after is compared with every before of the statement: the added column is still reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_before_layout_does_not_hide_the_change() {
    let env = TestEnv::new("l_forge").await;
    let ddl = format!(
        "{} GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {}_m;",
        plans(&env),
        env.name
    );
    let (db, run) = start(&env, &ddl, &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(
        r#"CREATE FUNCTION forge() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
           BEGIN
             PERFORM pg_logical_emit_message(true, 'waltrail:ddl', json_build_object('v', 1,
               'event', 'layout_before', 'command', 'ALTER TABLE', 'tables', json_build_array(
                 json_build_object('oid', 'plans'::regclass::oid::bigint, 'schema', 'public',
                   'name', 'plans', 'ancestors', NULL, 'columns', json_build_array(
                     json_build_array(1, 'id', 'integer', false, false),
                     json_build_array(2, 'org', 'text', false, false),
                     json_build_array(3, 'name', 'text', false, false),
                     json_build_array(4, 'plan', 'text', false, false),
                     json_build_array(5, 'tier', 'text', false, false),
                     json_build_array(6, 'n', 'integer', false, false),
                     json_build_array(7, 'v', 'character varying(10)', false, false),
                     json_build_array(8, 'x', 'integer', false, false)))))::text);
             RETURN 1;
           END $f$;
         ALTER TABLE plans ADD COLUMN x int DEFAULT forge();"#,
    )
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    eprintln!("{alt:#?}");
    assert!(
        has(
            &alt,
            serde_json::json!({"change": "added", "column": "x", "type": "integer"})
        ),
        "{items:#?}"
    );
}

/// The column change is attributed like the transaction's row changes (a context message after it names
/// who ran the migration), and its item sits at the statement's place between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_change_is_attributed_like_its_transaction() {
    let env = TestEnv::new("l_attr").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(&format!(
        "BEGIN;
         INSERT INTO plans VALUES (2, 'o1', 'b', 'free', 'gold', 1, 'y');
         ALTER TABLE plans RENAME plan TO tier_old;
         INSERT INTO plans VALUES (3, 'o1', 'c', 'free', 'gold', 1, 'y');
         {CTX}
         COMMIT;"
    ))
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 1, "{items:#?}");
    let rows: Vec<&Item> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_CREATED" && i.table_name == "public.plans")
        .collect();
    assert_eq!(rows.len(), 2, "{items:#?}");
    assert_eq!(alt[0].principal_id, "alice", "{:#?}", alt[0]);
    assert_eq!(alt[0].principal_id, rows[0].principal_id);
    assert_eq!(alt[0].xid, rows[0].xid);
    assert!(
        rows[0].seq < alt[0].seq && alt[0].seq < rows[1].seq,
        "{items:#?}"
    );
}

/// A statement's code writes a forged `layout_after` before the real one. It ended the real
/// `layout_before` (the item then said its columns before were not known); since QA48 H2 it cannot name
/// the real before's nonce and ends nothing: the real after finds the real before, and the item says
/// exactly what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_after_layout_ends_no_real_before() {
    let env = TestEnv::new("l_forge_after").await;
    let ddl = format!(
        "{} GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO {}_m;",
        plans(&env),
        env.name
    );
    let (db, run) = start(&env, &ddl, &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(
        r#"CREATE FUNCTION forge() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
           BEGIN
             PERFORM pg_logical_emit_message(true, 'waltrail:ddl',
               '{"v":1,"event":"layout_after","command":"ALTER TABLE","tables":[]}');
             RETURN 1;
           END $f$;
         ALTER TABLE plans ADD COLUMN x int DEFAULT forge();"#,
    )
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    // The volatile default rewrites the table: that is an item of its own.
    assert!(has(
        &alt,
        serde_json::json!({"change": "added", "column": "x", "type": "integer"})
    ));
    assert!(
        alt.iter()
            .all(|a| a.diff_json().get("columns_before_unknown").is_none()),
        "{items:#?}"
    );
}

/// kill -9 while a large streamed transaction holding column changes (a rename and a drop between its
/// rows, after a context message) is partly stored: the restart writes the same items with the same ids,
/// nothing twice, the chains verify, and the column items are there once each, attributed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_inside_a_transaction_with_column_changes() {
    use std::time::{Duration, Instant};
    let env = TestEnv::new("l_kill").await;
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute(
        "ALTER DATABASE l_kill SET logical_decoding_work_mem = '64kB';
         CREATE TABLE ta (id int PRIMARY KEY, org text, name text);
         CREATE TABLE tb (id int PRIMARY KEY, org text, name text, plan text, tier text);",
    )
    .await
    .unwrap();
    let slot = format!("slot_{}", env.name);
    let cfg_text = env
        .config_text_with(&mapped(&["ta", "tb"]), 500)
        .replace(
            "batch_max_delay_ms = 50",
            "batch_max_delay_ms = 50\nbatch_max_items = 500\ninsert_max_items = 2000",
        )
        .replace("[postgres]", "[postgres]\nstreaming = true");
    let cfg = std::env::temp_dir().join("lay_kill.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let log = std::env::temp_dir().join("lay_kill.log");
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    wait_slot(&db, &slot).await;
    db.batch_execute(&format!(
        "BEGIN;
         {CTX}
         INSERT INTO ta SELECT i, 'o1', 'n' || i FROM generate_series(1, 12000) i;
         ALTER TABLE tb RENAME plan TO tariff;
         ALTER TABLE tb DROP COLUMN tier;
         INSERT INTO ta SELECT i, 'o1', 'n' || i FROM generate_series(12001, 24000) i;
         COMMIT;"
    ))
    .await
    .unwrap();
    let total = 24_002;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = env.count().await;
        if c > 13_000 {
            assert!(c < total, "too late to kill mid-transaction ({c} stored)");
            break;
        }
        assert!(Instant::now() < deadline, "nothing stored in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&child, "-9");
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    env.wait_for(total).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    let differing: u64 = env
        .ch()
        .query(
            "SELECT count() FROM (SELECT id, uniqExact(cityHash64(toString(event_id), occurred_at_us, commit_lsn, seq, action, \
             organization_id, resource_type, resource_id, resource_display, diff, principal_id, arrayStringConcat(changed_fields, ','))) AS v \
             FROM audit_items GROUP BY id HAVING v > 1)",
        )
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(env.count().await, total);
    assert_eq!(differing, 0);
    assert_eq!(env.rows().await, total, "nothing written twice");
    env.verified_after_merges("o1").await;
    let items = env.items().await;
    let alt: Vec<Item> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED")
        .cloned()
        .collect();
    assert_eq!(alt.len(), 2, "{alt:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "renamed", "from": "plan", "to": "tariff"})
    ));
    assert!(has(
        &alt,
        serde_json::json!({"change": "dropped", "column": "tier"})
    ));
    for a in &alt {
        assert_eq!(a.principal_id, "alice", "{a:#?}");
    }
}

/// `check` wants the two layout triggers too, enabled always: either missing, or enabled the ordinary
/// way (skipped by sessions with `session_replication_role = replica`), is a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_warns_without_the_layout_triggers() {
    let env = TestEnv::new("l_check").await;
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute("CREATE TABLE plans (id int PRIMARY KEY, org text, name text)")
        .await
        .unwrap();
    let tables = mapped(&["plans"]);
    let warned = |f: &[waltrail::finding::Finding]| {
        f.iter()
            .any(|f| f.what == waltrail::capture::provision::DDL_EVENTS_MISSING)
    };
    let f = waltrail::capture::check::postgres(&env.config(&tables)).await;
    assert!(!warned(&f), "all seven installed: {f:#?}");
    db.batch_execute("ALTER EVENT TRIGGER waltrail_ddl_layout ENABLE")
        .await
        .unwrap();
    let f = waltrail::capture::check::postgres(&env.config(&tables)).await;
    assert!(warned(&f), "enabled, not always: {f:#?}");
    db.batch_execute("ALTER EVENT TRIGGER waltrail_ddl_layout ENABLE ALWAYS; DROP EVENT TRIGGER waltrail_ddl_layout_start")
        .await
        .unwrap();
    let f = waltrail::capture::check::postgres(&env.config(&tables)).await;
    assert!(warned(&f), "one missing: {f:#?}");
    // The script installs it again.
    db.batch_execute(&install_sql()).await.unwrap();
    let f = waltrail::capture::check::postgres(&env.config(&tables)).await;
    assert!(!warned(&f), "{f:#?}");
    // An install by an earlier script: its layout trigger misses the drops of nothing (QA47 L1), and
    // it had no trigger for other cascades (QA47 M1).
    db.batch_execute(
        "DROP EVENT TRIGGER waltrail_ddl_layout;
         CREATE EVENT TRIGGER waltrail_ddl_layout ON ddl_command_end WHEN TAG IN ('ALTER TABLE', 'ALTER TYPE')
             EXECUTE FUNCTION waltrail_ddl.on_alter_table();
         ALTER EVENT TRIGGER waltrail_ddl_layout ENABLE ALWAYS;",
    )
    .await
    .unwrap();
    let f = waltrail::capture::check::postgres(&env.config(&tables)).await;
    assert!(
        warned(&f),
        "the layout trigger of an earlier script: {f:#?}"
    );
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute("DROP EVENT TRIGGER waltrail_ddl_drop")
        .await
        .unwrap();
    let f = waltrail::capture::check::postgres(&env.config(&tables)).await;
    assert!(warned(&f), "no trigger for other cascades: {f:#?}");
}

/// QA47 M1: statements other than ALTER TABLE, ALTER TYPE and DROP TYPE/DOMAIN drop columns by a cascade
/// with no ALTER TABLE: an extension's type, a schema's domain, a collation, a generated column's
/// function, a role's domain (DROP OWNED). Each is an item of its statement naming the columns; a table
/// dropped whole with a schema, and a drop that takes no column, are none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn columns_dropped_by_other_cascades_are_recorded() {
    let env = TestEnv::new("l_cascade").await;
    let r = format!("{}_r", env.name);
    let ddl = format!(
        "DROP ROLE IF EXISTS {r}; CREATE ROLE {r};
         CREATE EXTENSION citext;
         CREATE SCHEMA ext; CREATE DOMAIN ext.code AS text; CREATE TABLE ext.scratch (id int);
         CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE FUNCTION slug(text) RETURNS text IMMUTABLE LANGUAGE sql AS 'SELECT lower($1)';
         CREATE DOMAIN owned_d AS int; ALTER DOMAIN owned_d OWNER TO {r};
         CREATE TABLE plans (id int PRIMARY KEY, org text, name text, email citext, code ext.code,
                             label text COLLATE ci, slug text GENERATED ALWAYS AS (slug(name)) STORED,
                             n owned_d);
         INSERT INTO plans (id, org, name, email, code, label, n) VALUES (1, 'o1', 'A', 'a@x', 'c', 'l', 1);
         CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);
         CREATE FUNCTION unused() RETURNS int LANGUAGE sql AS 'SELECT 1';"
    );
    let (db, run) = start(&env, &ddl, &mapped(&["plans", "sentinel"])).await;
    db.batch_execute(&format!(
        "BEGIN; {CTX}
         DROP EXTENSION citext CASCADE;
         DROP SCHEMA ext CASCADE;
         DROP COLLATION ci CASCADE;
         DROP FUNCTION slug(text) CASCADE;
         DROP OWNED BY {r} CASCADE;
         DROP FUNCTION unused();
         COMMIT;"
    ))
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    let commands: Vec<String> = alt
        .iter()
        .map(|a| a.diff_json()["command"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        commands,
        [
            "DROP EXTENSION",
            "DROP SCHEMA",
            "DROP COLLATION",
            "DROP FUNCTION",
            "DROP OWNED"
        ],
        "one item per statement that took a column, in order: {items:#?}"
    );
    for (a, column) in alt.iter().zip(["email", "code", "label", "slug", "n"]) {
        assert!(
            has(
                std::slice::from_ref(a),
                serde_json::json!({"change": "dropped", "column": column})
            ),
            "{column}: {a:#?}"
        );
        assert_eq!(a.changed_fields, vec![column]);
        assert_eq!(a.principal_id, "alice");
    }
    assert!(
        !items
            .iter()
            .any(|i| i.action == "AUDIT_ACTION_ALTERED" && i.table_name != "public.plans"),
        "no item of unmapped or whole tables: {items:#?}"
    );
}

/// QA47 L1: a `DROP TYPE IF EXISTS` of nothing fires no sql_drop; its statement's end still ends the
/// before-layout written at its start. Forty of them in one migration (more than are kept) leave the
/// next column change's item knowing its columns before: no false "not known".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_of_nothing_leave_no_before_layout_behind() {
    let env = TestEnv::new("l_nothing").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let nothing = "DROP TYPE IF EXISTS no_such_t; DROP DOMAIN IF EXISTS no_such_d;".repeat(20);
    db.batch_execute(&format!(
        "BEGIN; {CTX} {nothing} ALTER TABLE plans DROP COLUMN tier; COMMIT;"
    ))
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 1, "{items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "dropped", "column": "tier"})
    ));
    assert!(
        alt[0].diff_json().get("columns_before_unknown").is_none(),
        "{}",
        alt[0].diff
    );
}

/// QA48 H1: Postgres renames a table's columns by ALTER VIEW, ALTER MATERIALIZED VIEW and ALTER FOREIGN
/// TABLE … RENAME COLUMN too (their tags are the statements'): the swap of plan and tier by three such
/// renames is three items, like the ALTER TABLE swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_swap_through_alter_view_rename_column_is_recorded() {
    let env = TestEnv::new("l_viewswap").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(&format!(
        "BEGIN;
         {}
         ALTER VIEW plans RENAME COLUMN plan TO tmp;
         ALTER MATERIALIZED VIEW plans RENAME COLUMN tier TO plan;
         ALTER FOREIGN TABLE plans RENAME COLUMN tmp TO tier;
         COMMIT;",
        ctx("alice")
    ))
    .await
    .expect("Postgres takes the renames");
    let cols: Vec<String> = db
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = 'plans'::regclass AND attnum IN (4, 5) ORDER BY attnum",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(cols, vec!["tier", "plan"], "the columns really swapped");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert_eq!(alt.len(), 3, "one item per rename: {items:#?}");
    assert!(has(
        &alt,
        serde_json::json!({"change": "renamed", "from": "plan", "to": "tmp"})
    ));
    let commands: Vec<String> = alt
        .iter()
        .map(|a| a.diff_json()["command"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        commands,
        [
            "ALTER VIEW",
            "ALTER MATERIALIZED VIEW",
            "ALTER FOREIGN TABLE"
        ]
    );
}

/// QA48 H2: the statement's own code (a DEFAULT function, run once between the layout triggers) writes
/// a forged empty `layout_after` (which ended every before) and then a forged `layout_before` holding the
/// table's columns as they will be after the statement: the real after found a before equal to itself,
/// and DROP COLUMN tier left no item. The real before carries its statement's nonce, which only the
/// real after names: the forged after ends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_after_then_before_from_a_default_cannot_hide_a_drop() {
    let env = TestEnv::new("l_forgepair").await;
    let (db, run) = start(&env, &plans(&env), &mapped(&["plans", "sentinel"])).await;
    let m = migrator(&env).await;
    m.batch_execute(
        r#"CREATE FUNCTION public.evil() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$
           BEGIN
             PERFORM pg_logical_emit_message(true, 'waltrail:ddl',
               '{"v":1,"event":"layout_after","command":"ALTER TABLE","tables":[]}');
             PERFORM pg_logical_emit_message(true, 'waltrail:ddl', json_build_object(
               'v', 1, 'event', 'layout_before', 'command', 'ALTER TABLE', 'tables', json_build_array(
                 json_build_object('oid', 'public.plans'::regclass::oid::bigint, 'schema', 'public',
                   'name', 'plans', 'ancestors', null, 'columns', json_build_array(
                     json_build_array(1, 'id', 'integer', false, false),
                     json_build_array(2, 'org', 'text', false, false),
                     json_build_array(3, 'name', 'text', false, false),
                     json_build_array(4, 'plan', 'text', false, false),
                     json_build_array(5, '........pg.dropped.5........', '-', true, false),
                     json_build_array(6, 'n', 'integer', false, false),
                     json_build_array(7, 'v', 'character varying(10)', false, false),
                     json_build_array(8, 'z', 'integer', false, true)))))::text);
             RETURN 0;
           END $f$"#,
    )
    .await
    .unwrap();
    m.batch_execute(&format!(
        "BEGIN; {} ALTER TABLE plans DROP COLUMN tier, ADD COLUMN z int DEFAULT public.evil(); COMMIT;",
        ctx("mallory")
    ))
    .await
    .expect("the migration runs");
    let (alt, items) = finish(&env, &db, run, "plans").await;
    assert!(
        has(
            &alt,
            serde_json::json!({"change": "dropped", "column": "tier"})
        ),
        "DROP COLUMN tier is recorded: {items:#?}"
    );
}
