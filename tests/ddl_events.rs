//! The DDL event triggers' messages under hostile conditions (QA44): partitions and inheritance children
//! found by OID whatever their names, forged messages that cannot merge into or collide with a real item,
//! a streamed transaction's rolled-back savepoint that cannot erase a rewrite, sessions with
//! `session_replication_role = replica`, and kill -9 inside a transaction holding DDL.

mod harness;

use harness::*;
use std::time::Duration;

async fn start(env: &TestEnv, ddl: &str, tables: &str) -> (tokio_postgres::Client, Running) {
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.expect("installs");
    db.batch_execute(ddl).await.unwrap();
    let run = Running::start(env.config(tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    (db, run)
}

fn altered<'a>(items: &'a [Item], table: &str) -> Vec<&'a Item> {
    items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED" && i.table_name == table)
        .collect()
}

/// Found by QA44 (H), fixed: a partition's rewrite message is matched to its mapped table by the partition's OID only when the
/// partition's Relation was seen in this session, else by names (the partition's, then the root's). A
/// migration that renames the partitioned table around its rewrite leaves every partition's message
/// unmatched: the values changed and no item says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_rewrite_is_found_by_oid_when_the_root_is_renamed_around_it() {
    let env = TestEnv::new("d_part_rename").await;
    let ddl = "DROP ROLE IF EXISTS q44_pr_m; CREATE ROLE q44_pr_m LOGIN;
               GRANT CREATE ON SCHEMA public TO q44_pr_m;
               CREATE TABLE plans (id int, org text, name text, plan text, PRIMARY KEY (id, org)) PARTITION BY LIST (org);
               CREATE TABLE plans_1 PARTITION OF plans FOR VALUES IN ('o1');
               CREATE TABLE plans_2 PARTITION OF plans FOR VALUES IN ('o2');
               INSERT INTO plans VALUES (1, 'o1', 'a', 'free'), (2, 'o2', 'b', 'free');
               ALTER TABLE plans OWNER TO q44_pr_m; ALTER TABLE plans_1 OWNER TO q44_pr_m;
               ALTER TABLE plans_2 OWNER TO q44_pr_m;
               CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);";
    let (db, run) = start(&env, ddl, &mapped(&["plans", "sentinel"])).await;
    let m = env.pg_as("q44_pr_m").await;
    m.batch_execute(
        "BEGIN;
         ALTER TABLE plans RENAME TO plans_tmp;
         ALTER TABLE plans_tmp ALTER COLUMN plan TYPE text USING 'enterprise';
         ALTER TABLE plans_tmp RENAME TO plans;
         COMMIT;",
    )
    .await
    .expect("the migration runs");
    let plan: String = db
        .query_one("SELECT plan FROM plans WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(plan, "enterprise", "the values did change");
    db.batch_execute("INSERT INTO sentinel VALUES (1, 'o1', 's')")
        .await
        .unwrap();
    env.wait_for(1).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    assert_eq!(
        altered(&items, "public.plans").len(),
        1,
        "the partitions' rewrite is an item: {items:#?}"
    );
}

/// Found by QA44 (H), fixed: an inheritance child is "treated like a partition", but pg_partition_root() is NULL for it, so its
/// rewrite message names the child as its own root. Unless the child's Relation was seen in this
/// session, its own column retyped with USING gives no item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inheritance_childs_rewrite_is_the_parents_item() {
    let env = TestEnv::new("d_child").await;
    let ddl = "DROP ROLE IF EXISTS q44_ch_m; CREATE ROLE q44_ch_m LOGIN;
               CREATE TABLE accts (id int PRIMARY KEY, org text, name text);
               CREATE TABLE accts_vip (tier text) INHERITS (accts);
               INSERT INTO accts_vip VALUES (1, 'o1', 'a', 'gold');
               ALTER TABLE accts OWNER TO q44_ch_m; ALTER TABLE accts_vip OWNER TO q44_ch_m;
               CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);";
    let (db, run) = start(&env, ddl, &mapped(&["accts", "sentinel"])).await;
    let m = env.pg_as("q44_ch_m").await;
    m.batch_execute("ALTER TABLE accts_vip ALTER COLUMN tier TYPE text USING 'platinum'")
        .await
        .expect("the migration runs");
    // The child's own column is audited: its later change shows it in the diff.
    db.batch_execute(
        "UPDATE accts_vip SET name = 'a2' WHERE id = 1;
         INSERT INTO sentinel VALUES (1, 'o1', 's');",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let upd: Vec<_> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_UPDATED")
        .map(|i| i.diff.clone())
        .collect();
    eprintln!("updates: {upd:?}");
    assert_eq!(
        altered(&items, "public.accts").len(),
        1,
        "the child's rewrite is an item: {items:#?}"
    );
}

/// Found by QA44 (M), fixed: a rewrite message naming two mapped tables (only a forged one does) gives two items with one id
/// (both flushed from `ddl_held` with the message's seq and sub 0): one is lost in the store, or the
/// chain holds two items under one id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_rewrite_of_two_tables_gives_two_ids() {
    let env = TestEnv::new("d_dupid").await;
    let ddl = "CREATE TABLE ta (id int PRIMARY KEY, org text, name text);
               CREATE TABLE tb (id int PRIMARY KEY, org text, name text);";
    let (db, run) = start(&env, ddl, &mapped(&["ta", "tb"])).await;
    // Tables are found by OID: the forged message names both by theirs.
    let oid = |t: &'static str| {
        let db = &db;
        async move {
            let o: u32 = db
                .query_one(&format!("SELECT '{t}'::regclass::oid"), &[])
                .await
                .unwrap()
                .get(0);
            o
        }
    };
    let (ta, tb) = (oid("ta").await, oid("tb").await);
    db.batch_execute(&format!(
        r#"BEGIN;
         INSERT INTO ta VALUES (1, 'o1', 'x');
         SELECT pg_logical_emit_message(true, 'waltrail:ddl',
           '{{"v":1,"event":"table_rewrite","command":"ALTER TABLE","tables":[
             {{"oid":{ta},"schema":"public","name":"ta"}},{{"oid":{tb},"schema":"public","name":"tb"}}]}}');
         INSERT INTO tb VALUES (1, 'o1', 'y');
         COMMIT;"#
    ))
    .await
    .unwrap();
    env.wait_for(3).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    run.stop().await.unwrap();
    let rows: Vec<(String, String)> = env
        .ch()
        .query("SELECT toString(id), table_name FROM audit_items WHERE action = 'AUDIT_ACTION_ALTERED'")
        .fetch_all()
        .await
        .unwrap();
    eprintln!("altered rows: {rows:?}");
    let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| r.0.clone()).collect();
    let ch = env.ch();
    ch.query("OPTIMIZE TABLE audit_items FINAL")
        .execute()
        .await
        .unwrap();
    let reports = waltrail::store::integrity::verify_org(&ch, "o1", None, None, &[])
        .await
        .unwrap();
    eprintln!("chain: {reports:?}");
    assert_eq!(ids.len(), 2, "two tables, two ids: {rows:?}");
    for r in &reports {
        assert_eq!(r.failure, None, "{r:?}");
    }
}

/// Control for the two above: the same DDL is an item when the names still match (no rename), or when
/// the child's Relation was seen earlier in the session. So the result depends on session history,
/// which a reconnect or a restart resets: a replay of the same WAL can differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_ddl_is_an_item_without_a_rename() {
    let env = TestEnv::new("d_ctl").await;
    let ddl = "CREATE TABLE plans (id int, org text, name text, plan text, PRIMARY KEY (id, org)) PARTITION BY LIST (org);
               CREATE TABLE plans_1 PARTITION OF plans FOR VALUES IN ('o1');
               INSERT INTO plans VALUES (1, 'o1', 'a', 'free');
               CREATE TABLE accts (id int PRIMARY KEY, org text, name text);
               CREATE TABLE accts_vip (tier text) INHERITS (accts);
               INSERT INTO accts_vip VALUES (1, 'o1', 'a', 'gold');
               CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);";
    let (db, run) = start(&env, ddl, &mapped(&["plans", "accts", "sentinel"])).await;
    db.batch_execute(
        "ALTER TABLE plans ALTER COLUMN plan TYPE text USING 'enterprise';
         INSERT INTO accts_vip VALUES (2, 'o1', 'b', 'gold');
         ALTER TABLE accts_vip ALTER COLUMN tier TYPE text USING 'platinum';
         INSERT INTO sentinel VALUES (1, 'o1', 's');",
    )
    .await
    .unwrap();
    env.wait_for(4).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    assert_eq!(altered(&items, "public.plans").len(), 1, "{items:#?}");
    assert_eq!(altered(&items, "public.accts").len(), 1, "{items:#?}");
}

const CTX: &str =
    r#"SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"alice","source":"CLI"}');"#;

/// Streamed transaction (64kB work mem): rows, a partitioned rewrite (two messages, one item), a context
/// message, another table's rewrite, a rolled-back savepoint around a third rewrite, TRUNCATE right after
/// a rewrite, a rewrite as the last thing before COMMIT. Items: exactly the expected ALTERED ones, all
/// attributed to alice like the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_transaction_with_ddl_and_context() {
    let env = TestEnv::new("d_stream").await;
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute(
        "ALTER DATABASE d_stream SET logical_decoding_work_mem = '64kB';
         CREATE TABLE ta (id int PRIMARY KEY, org text, name text);
         CREATE TABLE tb (id int PRIMARY KEY, org text, name text, v text);
         CREATE TABLE tc (id int PRIMARY KEY, org text, name text, v text);
         CREATE TABLE parts (id int, org text, name text, v text, PRIMARY KEY (id, org)) PARTITION BY LIST (org);
         CREATE TABLE parts_1 PARTITION OF parts FOR VALUES IN ('o1');
         CREATE TABLE parts_2 PARTITION OF parts FOR VALUES IN ('o2');
         INSERT INTO parts VALUES (1, 'o1', 'a', 'x'), (2, 'o2', 'b', 'x');
         INSERT INTO tb VALUES (1, 'o1', 'b', 'x'); INSERT INTO tc VALUES (1, 'o1', 'c', 'x');",
    )
    .await
    .unwrap();
    let text = env
        .config_text(&mapped(&["ta", "tb", "tc", "parts"]))
        .replace("[postgres]", "[postgres]\nstreaming = true");
    let cfg = waltrail::config::Config::parse(&text).unwrap();
    cfg.validate().unwrap();
    let run = Running::start(cfg);
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    let db = env.pg().await;
    let sp = ("", "", "ROLLBACK TO s1;");
    let _ = sp.0;
    db.batch_execute(&format!(
        "BEGIN;
         INSERT INTO ta SELECT i, 'o1', 'n' || i FROM generate_series(1, 3000) i;
         ALTER TABLE parts ALTER COLUMN v TYPE text USING 'y';
         {CTX}
         ALTER TABLE tb ALTER COLUMN v TYPE text USING 'y';
         SAVEPOINT s1;
         ALTER TABLE tc ALTER COLUMN v TYPE text USING 'rolled back';
         INSERT INTO ta SELECT i, 'o1', 'n' || i FROM generate_series(3001, 3500) i;
         {}
         ALTER TABLE tc ALTER COLUMN v TYPE text USING 'y';
         TRUNCATE tc;
         INSERT INTO ta SELECT i, 'o1', 'n' || i FROM generate_series(3501, 6000) i;
         ALTER TABLE tb ALTER COLUMN v TYPE text USING 'z';
         COMMIT;",
        sp.2
    ))
    .await
    .expect("the migration runs");
    // 5500 inserts + parts, tb, tc, truncate tc, tb = 5505
    env.wait_for(5500).await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let ddl: Vec<_> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED" || i.action == "AUDIT_ACTION_TRUNCATED")
        .map(|i| {
            (
                i.seq,
                i.action.clone(),
                i.table_name.clone(),
                i.principal_id.clone(),
                i.diff.clone(),
            )
        })
        .collect();
    eprintln!("{ddl:#?}");
    assert_eq!(items.len(), 5505, "every item once");
    assert_eq!(ddl.len(), 5, "{ddl:#?}");
    // The context message before the savepoint goes with it (QA34 M1, documented): not asserted.
    eprintln!(
        "unattributed: {} of {}",
        items.iter().filter(|i| i.principal_id != "alice").count(),
        items.len()
    );
    assert!(items
        .iter()
        .any(|i| i.action == "AUDIT_ACTION_ALTERED" && i.table_name == "public.parts"));
    assert!(!items.iter().any(|i| i.diff.contains("rolled back")));
    let reports = env.verified_after_merges("o1").await;
    eprintln!("{reports:?}");
}

/// Found by QA44 (H), fixed: with streaming, a rolled-back savepoint cuts "the messages since the last row change" (QA34 M1's
/// heuristic for context messages). A rewrite message of the top-level transaction is among them: a
/// migration that rewrites a mapped table, then opens a savepoint, writes anything and rolls it back,
/// leaves no item (the same WAL without streaming gives one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_rewrite_survives_a_later_rolled_back_savepoint() {
    let env = TestEnv::new("d_sp_hide").await;
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute(
        "ALTER DATABASE d_sp_hide SET logical_decoding_work_mem = '64kB';
         DROP ROLE IF EXISTS q44_sp_m; CREATE ROLE q44_sp_m LOGIN;
         CREATE TABLE plans (id int PRIMARY KEY, org text, name text, plan text);
         CREATE TABLE pad (id int, t text);
         CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);
         INSERT INTO plans VALUES (1, 'o1', 'a', 'free');
         ALTER TABLE plans OWNER TO q44_sp_m; ALTER TABLE pad OWNER TO q44_sp_m;
         ALTER TABLE sentinel OWNER TO q44_sp_m;",
    )
    .await
    .unwrap();
    let stream = true;
    let text = env.config_text(&mapped(&["plans", "sentinel"])).replace(
        "[postgres]",
        if stream {
            "[postgres]\nstreaming = true"
        } else {
            "[postgres]"
        },
    );
    let cfg = waltrail::config::Config::parse(&text).unwrap();
    cfg.validate().unwrap();
    let run = Running::start(cfg);
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    let m = env.pg_as("q44_sp_m").await;
    m.batch_execute(
        "BEGIN;
         INSERT INTO pad SELECT i, repeat('x', 100) FROM generate_series(1, 3000) i;
         ALTER TABLE plans ALTER COLUMN plan TYPE text USING 'enterprise';
         SAVEPOINT s;
         INSERT INTO pad SELECT i, repeat('x', 100) FROM generate_series(1, 3000) i;
         ROLLBACK TO s;
         INSERT INTO sentinel VALUES (1, 'o1', 's');
         COMMIT;",
    )
    .await
    .expect("the migration runs");
    env.wait_for(1).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    assert_eq!(
        altered(&items, "public.plans").len(),
        1,
        "the rewrite is an item (streaming = {stream}): {items:#?}"
    );
}

/// kill -9 while a large transaction holding DDL messages (a partitioned rewrite: two messages, one
/// held item; a context message; another rewrite) is partly stored: the restart writes the same items
/// with the same ids, nothing twice, and the chains verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_inside_a_transaction_with_ddl() {
    use std::time::{Duration, Instant};
    let env = TestEnv::new("d_kill").await;
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute(
        "CREATE TABLE ta (id int PRIMARY KEY, org text, name text);
         CREATE TABLE tb (id int PRIMARY KEY, org text, name text, v text);
         CREATE TABLE parts (id int, org text, name text, v text, PRIMARY KEY (id, org)) PARTITION BY LIST (org);
         CREATE TABLE parts_1 PARTITION OF parts FOR VALUES IN ('o1');
         CREATE TABLE parts_2 PARTITION OF parts FOR VALUES IN ('o2');",
    )
    .await
    .unwrap();
    let slot = format!("slot_{}", env.name);
    let mut cfg_text = env
        .config_text_with(&mapped(&["ta", "tb", "parts"]), 500)
        .replace(
            "batch_max_delay_ms = 50",
            // Inserts of 2,000 items: the kill lands between two of them, with part of it stored.
            "batch_max_delay_ms = 50\nbatch_max_items = 500\ninsert_max_items = 2000",
        );
    // Streaming on: the transaction is sent while in progress, so the kill lands inside its streamed part.
    {
        db.batch_execute("ALTER DATABASE d_kill SET logical_decoding_work_mem = '64kB'")
            .await
            .unwrap();
        cfg_text = cfg_text.replace("[postgres]", "[postgres]\nstreaming = true");
    }
    let cfg = std::env::temp_dir().join("q44_kill.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let log = std::env::temp_dir().join("q44_kill.log");
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    wait_slot(&db, &slot).await;
    db.batch_execute(&format!(
        "BEGIN;
         INSERT INTO ta SELECT i, 'o1', 'n' || i FROM generate_series(1, 12000) i;
         ALTER TABLE parts ALTER COLUMN v TYPE text USING 'y';
         {CTX}
         ALTER TABLE tb ALTER COLUMN v TYPE text USING 'y';
         INSERT INTO ta SELECT i, 'o1', 'n' || i FROM generate_series(12001, 24000) i;
         ALTER TABLE parts ALTER COLUMN v TYPE text USING 'z';
         COMMIT;"
    ))
    .await
    .unwrap();
    let total = 24_003;
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
    let partial = env.count().await;
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    env.wait_for(total).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    let ch = env.ch();
    let differing: u64 = ch
        .query(
            "SELECT count() FROM (SELECT id, uniqExact(cityHash64(toString(event_id), occurred_at_us, commit_lsn, seq, action, \
             organization_id, resource_type, resource_id, resource_display, diff, principal_id, arrayStringConcat(changed_fields, ','))) AS v \
             FROM audit_items GROUP BY id HAVING v > 1)",
        )
        .fetch_one()
        .await
        .unwrap();
    eprintln!(
        "partial {partial}, distinct {}, rows {}",
        env.count().await,
        env.rows().await
    );
    assert_eq!(env.count().await, total);
    assert_eq!(differing, 0);
    assert_eq!(env.rows().await, total, "nothing written twice");
    let reports = env.verified_after_merges("o1").await;
    eprintln!("{reports:?}");
    let items = env.items().await;
    let alt: Vec<_> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED")
        .map(|i| (i.seq, i.table_name.clone(), i.principal_id.clone()))
        .collect();
    eprintln!("{alt:?}");
    assert_eq!(alt.len(), 3);
}

/// Found by QA44 (L), fixed: a role that may call pg_logical_emit_message, from the USING expression (between two partitions'
/// real rewrite messages), writes a forged rewrite of the same table: it merges into the real held item
/// (no separate item), which then names 999 invented partitions, and the real second partition is cut
/// from the list (MAX_LIST reached).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_rewrite_does_not_merge_into_the_real_item() {
    let env = TestEnv::new("d_merge").await;
    let ddl = "DROP ROLE IF EXISTS q44_mg_m; CREATE ROLE q44_mg_m LOGIN;
               GRANT CREATE ON SCHEMA public TO q44_mg_m;
               GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO q44_mg_m;
               CREATE TABLE plans (id int, org text, name text, plan text, PRIMARY KEY (id, org)) PARTITION BY LIST (org);
               CREATE TABLE plans_1 PARTITION OF plans FOR VALUES IN ('o1');
               CREATE TABLE plans_2 PARTITION OF plans FOR VALUES IN ('o2');
               INSERT INTO plans VALUES (1, 'o1', 'a', 'free'), (2, 'o2', 'b', 'free');
               ALTER TABLE plans OWNER TO q44_mg_m; ALTER TABLE plans_1 OWNER TO q44_mg_m;
               ALTER TABLE plans_2 OWNER TO q44_mg_m;
               CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);";
    let (db, run) = start(&env, ddl, &mapped(&["plans", "sentinel"])).await;
    let m = env.pg_as("q44_mg_m").await;
    m.batch_execute(
        r#"CREATE FUNCTION forge(text) RETURNS text LANGUAGE plpgsql AS $f$
           BEGIN
             IF current_setting('q44.done', true) IS DISTINCT FROM 'y' THEN
               PERFORM set_config('q44.done', 'y', true);
               PERFORM pg_logical_emit_message(true, 'waltrail:ddl', json_build_object('v', 1,
                 'event', 'table_rewrite', 'command', 'ALTER TABLE', 'tables',
                 (SELECT json_agg(json_build_object('oid', 0, 'schema', 'public', 'name', 'invented_' || i,
                   'root_schema', 'public', 'root_name', 'plans')) FROM generate_series(1, 999) i))::text);
             END IF;
             RETURN 'enterprise';
           END $f$;
         ALTER TABLE plans ALTER COLUMN plan TYPE text USING forge(plan);"#,
    )
    .await
    .expect("the migration runs");
    db.batch_execute("INSERT INTO sentinel VALUES (1, 'o1', 's')")
        .await
        .unwrap();
    env.wait_for(1).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let alt = altered(&items, "public.plans");
    for a in &alt {
        let rel = a.diff_json()["relations"].clone();
        let names: Vec<String> = serde_json::from_value(rel).unwrap_or_default();
        eprintln!(
            "item {}: {} relations, has plans_2: {}, invented: {}",
            a.id,
            names.len(),
            names.iter().any(|n| n == "public.plans_2"),
            names.iter().filter(|n| n.contains("invented")).count()
        );
    }
    // Nothing forged in an item that also names a real partition, and each real partition named.
    assert!(
        !alt.iter().any(|a| a.diff.contains("invented")
            && (a.diff.contains("public.plans_1") || a.diff.contains("public.plans_2"))),
        "a real item carries the forged relations ({} items)",
        alt.len()
    );
    assert!(
        alt.iter().any(|a| a.diff.contains("public.plans_2")),
        "plans_2 named"
    );
}

/// M/L: the event triggers are ENABLE (origin) by default, so they do not fire in a session with
/// session_replication_role = replica: a role granted SET on that parameter (PG15 GRANT SET, or a
/// managed service's admin role) rewrites a mapped table with no message; `check` counts the triggers
/// as installed (evtenabled <> 'D') and nothing warns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_role_sessions_fire_the_triggers() {
    let env = TestEnv::new("d_replica").await;
    let ddl = "DROP ROLE IF EXISTS q44_rp_m; CREATE ROLE q44_rp_m LOGIN;
               GRANT SET ON PARAMETER session_replication_role TO q44_rp_m;
               CREATE TABLE plans (id int PRIMARY KEY, org text, name text, plan text);
               INSERT INTO plans VALUES (1, 'o1', 'a', 'free');
               ALTER TABLE plans OWNER TO q44_rp_m;
               CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);";
    let (db, run) = start(&env, ddl, &mapped(&["plans", "sentinel"])).await;
    let m = env.pg_as("q44_rp_m").await;
    m.batch_execute(
        "SET session_replication_role = replica;
         ALTER TABLE plans ALTER COLUMN plan TYPE text USING 'enterprise';",
    )
    .await
    .expect("the migration runs");
    db.batch_execute("INSERT INTO sentinel VALUES (1, 'o1', 's')")
        .await
        .unwrap();
    env.wait_for(1).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    assert_eq!(altered(&items, "public.plans").len(), 1, "{items:#?}");
}

fn streamed_cfg(env: &TestEnv, tables: &str) -> waltrail::config::Config {
    let text = env
        .config_text(tables)
        .replace("[postgres]", "[postgres]\nstreaming = true");
    let cfg = waltrail::config::Config::parse(&text).unwrap();
    cfg.validate().unwrap();
    cfg
}

/// Found by QA45 (H1), fixed: in a streamed transaction, alice's context, her rows, then bob's context and
/// his committed label rename, then a savepoint that writes only an unpublished table and rolls back.
/// The cut takes bob's context with it (it may have been the savepoint's) and keeps the DDL message:
/// the item was attributed to alice, who did not run it. Now what follows the cut is of unknown context
/// (UNCERTAIN, no actor) unless a context after it says otherwise; never alice's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_cut_with_a_savepoint_leaves_what_follows_unattributed_not_misattributed() {
    let env = TestEnv::new("d_cut_ctx").await;
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute(
        "ALTER DATABASE d_cut_ctx SET logical_decoding_work_mem = '64kB';
         CREATE TYPE role_t AS ENUM ('viewer', 'admin');
         CREATE TABLE plans (id int PRIMARY KEY, org text, name text, role role_t);
         CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);
         CREATE TABLE pad (id int, t text);",
    )
    .await
    .unwrap();
    let run = Running::start(streamed_cfg(&env, &mapped(&["plans", "sentinel"])));
    wait_slot(&db, "slot_d_cut_ctx").await;
    let t = env.pg().await;
    t.batch_execute(&format!(
        "BEGIN;
         {alice}
         INSERT INTO plans SELECT i, 'o1', 'n' || i, 'viewer' FROM generate_series(1, 2000) i;
         {bob}
         ALTER TYPE role_t RENAME VALUE 'viewer' TO 'reader';
         SAVEPOINT s;
         INSERT INTO pad SELECT i, repeat('x', 100) FROM generate_series(1, 3000) i;",
        alice = ctx("alice"),
        bob = ctx("bob"),
    ))
    .await
    .unwrap();
    // Streamed while the savepoint is open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.batch_execute("ROLLBACK TO s; INSERT INTO sentinel VALUES (1, 'o1', 'bob''s row'); COMMIT;")
        .await
        .unwrap();
    env.wait_for(2002).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let after: Vec<(String, String, String)> = items
        .iter()
        .filter(|i| i.action == "AUDIT_ACTION_ALTERED" || i.table_name == "public.sentinel")
        .map(|i| {
            (
                i.table_name.clone(),
                i.principal_id.clone(),
                i.context_status.clone(),
            )
        })
        .collect();
    eprintln!("{after:?}");
    assert_eq!(after.len(), 2, "the rename and bob's row: {after:?}");
    for (table, who, status) in &after {
        assert_ne!(who, "alice", "{table} is not alice's: {after:?}");
        assert!(
            who == "bob" || (who.is_empty() && status == "UNCERTAIN"),
            "{table}: bob's, or marked of unknown context: {after:?}"
        );
    }
    assert!(
        items
            .iter()
            .filter(|i| i.table_name == "public.plans" && i.action == "AUDIT_ACTION_CREATED")
            .all(|i| i.principal_id == "alice"),
        "alice's rows stay hers"
    );
}

/// Found by QA45 (H1, second form): a rolled-back savepoint's own label rename, under mallory's context,
/// is kept through the cut (a false alarm, documented); it was recorded as alice's. Never alice's now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_rename_kept_through_a_cut_is_never_the_earlier_actors() {
    let env = TestEnv::new("d_cut_fa").await;
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute(
        "ALTER DATABASE d_cut_fa SET logical_decoding_work_mem = '64kB';
         CREATE TYPE role_t AS ENUM ('viewer', 'admin');
         CREATE TABLE plans (id int PRIMARY KEY, org text, name text, role role_t);
         CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);
         CREATE TABLE pad (id int, t text);",
    )
    .await
    .unwrap();
    let run = Running::start(streamed_cfg(&env, &mapped(&["plans", "sentinel"])));
    wait_slot(&db, "slot_d_cut_fa").await;
    let t = env.pg().await;
    t.batch_execute(&format!(
        "BEGIN;
         {alice}
         INSERT INTO plans SELECT i, 'o1', 'n' || i, 'viewer' FROM generate_series(1, 2000) i;
         SAVEPOINT s;
         {mallory}
         ALTER TYPE role_t RENAME VALUE 'viewer' TO 'reader';
         INSERT INTO pad SELECT i, repeat('x', 100) FROM generate_series(1, 3000) i;",
        alice = ctx("alice"),
        mallory = ctx("mallory"),
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.batch_execute("ROLLBACK TO s; INSERT INTO sentinel VALUES (1, 'o1', 's'); COMMIT;")
        .await
        .unwrap();
    env.wait_for(2001).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let alt: Vec<(String, String)> = altered(&items, "public.plans")
        .iter()
        .map(|i| (i.principal_id.clone(), i.context_status.clone()))
        .collect();
    eprintln!("{alt:?}");
    assert!(
        !alt.iter().any(|(who, _)| who == "alice"),
        "a rename rolled back is never alice's: {alt:?}"
    );
}

/// Found by QA45 (M2), fixed: with `attribution.message_prefix = "acme"`, the script as shipped writes
/// `waltrail:ddl`: every rewrite went unrecorded while the check counted the triggers installed. The check
/// now reads the prefix the trigger functions write; installed with `acme:ddl`, the rewrite is an item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_wants_the_triggers_to_write_the_configured_prefix() {
    let env = TestEnv::new("d_prefix").await;
    let db = env.pg().await;
    db.batch_execute(&install_sql()).await.unwrap();
    db.batch_execute(
        "CREATE TABLE plans (id int PRIMARY KEY, org text, name text, plan text);
         INSERT INTO plans VALUES (1, 'o1', 'a', 'free');
         CREATE TABLE sentinel (id int PRIMARY KEY, org text, name text);",
    )
    .await
    .unwrap();
    let installed = |prefix: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                waltrail::capture::provision::DDL_EVENTS_INSTALLED,
                &[&waltrail::capture::provision::ddl_prefix_literal(prefix)],
            )
            .await
            .unwrap()
            .get::<_, bool>(0)
        }
    };
    assert!(
        installed("waltrail").await,
        "as shipped, for the default prefix"
    );
    assert!(!installed("acme").await, "not for another prefix");
    db.batch_execute(&install_sql().replace("'waltrail:ddl'", "'acme:ddl'"))
        .await
        .unwrap();
    assert!(installed("acme").await, "edited as README says");
    let text = format!(
        "{}\n[attribution]\nmessage_prefix = \"acme\"\n",
        env.config_text(&mapped(&["plans", "sentinel"]))
    );
    let cfg = waltrail::config::Config::parse(&text).unwrap();
    cfg.validate().unwrap();
    let run = Running::start(cfg);
    wait_slot(&db, "slot_d_prefix").await;
    db.batch_execute(
        "ALTER TABLE plans ALTER COLUMN plan TYPE text USING 'enterprise';
         INSERT INTO sentinel VALUES (1, 'o1', 's');",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    run.stop().await.unwrap();
    let items = env.items().await;
    assert_eq!(altered(&items, "public.plans").len(), 1, "{items:#?}");
}
