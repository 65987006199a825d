//! Gaps are loud and recorded in the trail, on real servers: an invalidated slot, an accepted gap, a mapped
//! table dropped and created again or renamed while streaming, values that must not look alike, and a long
//! transaction on the source told apart from waltrail being slow.

mod harness;

use harness::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use waltrail::config::Config;
use waltrail::pipeline::RunOptions;

const GATEWAYS: &str = "CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)";
const TABLES: &str = r#"
[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
organization_column = "org_id"
display_column = "name"
"#;

/// The env's config with the watchdog looking every half second.
fn config(env: &TestEnv, tables: &str) -> Config {
    let text = env
        .config_text(tables)
        .replace("\n[clickhouse]", "watch_interval_ms = 500\n\n[clickhouse]");
    let cfg = Config::parse(&text).expect("config parses");
    cfg.validate().expect("config is valid");
    cfg
}

async fn gap_items(env: &TestEnv) -> Vec<Item> {
    env.items()
        .await
        .into_iter()
        .filter(|i| i.is_gap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_slot_stops_at_once_and_an_accepted_gap_is_recorded() {
    // A cluster of its own: max_slot_wal_keep_size applies to every slot of a cluster.
    let pg = PgCluster::start("max_slot_wal_keep_size = '1MB'\nwal_keep_size = 0")
        .expect("start a Postgres cluster");
    let env = TestEnv::on("g_lost", &pg, ch()).await;
    let db = env.pg().await;
    db.batch_execute(&format!("{GATEWAYS}; CREATE TABLE filler (x text)"))
        .await
        .unwrap();
    let run = Running::start(config(&env, TABLES));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'org1', 'before')")
        .await
        .unwrap();
    env.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    run.stop().await.unwrap();
    // While waltrail is down, Postgres writes far more WAL than the slot may keep, and removes it.
    db.batch_execute("INSERT INTO gateways VALUES ('g2', 'org1', 'during')")
        .await
        .unwrap();
    for _ in 0..4 {
        db.batch_execute(
            "INSERT INTO filler SELECT repeat(md5(i::text), 32) FROM generate_series(1, 20000) i; \
             SELECT pg_switch_wal(); CHECKPOINT;",
        )
        .await
        .unwrap();
    }
    let status: Option<String> = db
        .query_one(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&format!("slot_{}", env.name)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        status.as_deref(),
        Some("lost"),
        "the test made the slot lose WAL"
    );

    // check says what happened and what to do.
    let findings = waltrail::check::run(&config(&env, TABLES)).await;
    let f = findings
        .iter()
        .find(|f| f.what.contains("wal_status = lost"))
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(f.status, waltrail::finding::Status::Fail);
    assert!(f.fix.as_deref().unwrap().contains("--accept-gap"));

    // run stops at once, non-zero, with the same words (not a retry loop).
    let started = std::time::Instant::now();
    let msg = Running::start(config(&env, TABLES)).stops_with().await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped at once"
    );
    assert!(
        msg.contains("invalidated") && msg.contains("--accept-gap"),
        "{msg}"
    );
    assert!(gap_items(&env).await.is_empty(), "nothing recorded yet");

    // Accepted: a new slot, and the gap in the trail, visible to every organization, checkpointed at once
    // (in the store and the external copy) so it cannot be cut off the platform chain's tail unseen.
    let mut cfg = config(&env, TABLES);
    cfg.integrity.signing_key = Some(waltrail::config::Secret("07".repeat(32)));
    let copy = std::env::temp_dir().join(format!("waltrail-{}-checkpoints.ndjson", env.name));
    let _ = std::fs::remove_file(&copy);
    cfg.integrity.checkpoint_file = Some(copy.display().to_string());
    let run = Running::start_with(
        cfg,
        RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g3', 'org1', 'after')")
        .await
        .unwrap();
    env.wait_for(3).await;
    let gaps = gap_items(&env).await;
    assert_eq!(gaps.len(), 1);
    let gap = &gaps[0];
    assert_eq!((gap.platform_wide, gap.organization_id.as_str()), (1, ""));
    assert!(gap.summary.starts_with("The trail has a gap"), "{gap:?}");
    let d = gap.diff_json();
    assert!(d["gap"]["reason"].as_str().unwrap().contains("invalidated"));
    assert!(d["gap"]["from_lsn"].is_string() && d["gap"]["to_lsn"].is_string());
    let covering: u64 = env
        .ch()
        .query("SELECT count() FROM audit_checkpoints WHERE organization_id = '' AND item_id = ?")
        .bind(gap.id.to_string())
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(covering, 1, "a checkpoint ends at the gap's record");
    let copied = std::fs::read_to_string(&copy).unwrap_or_default();
    assert!(copied.contains(&gap.id.to_string()), "{copied}");
    let items = env.items().await;
    let names: Vec<&str> = items.iter().map(|i| i.resource_display.as_str()).collect();
    assert!(names.contains(&"before") && names.contains(&"after"));
    assert!(
        !names.contains(&"during"),
        "the change made while the WAL was removed is gone; the gap item says so"
    );
    let pos = |n: &str| items.iter().position(|i| i.resource_display == n).unwrap();
    assert!(
        pos("before") < pos("audit log") && pos("audit log") < pos("after"),
        "the gap sits where it happened in the trail's order: {names:?}"
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_dropped_and_created_again_while_streaming_is_never_a_silent_hole() {
    let env = TestEnv::new("g_recreate").await;
    let db = env.pg().await;
    db.batch_execute(GATEWAYS).await.unwrap();
    let run = Running::start(config(&env, TABLES));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'org1', 'first')")
        .await
        .unwrap();
    env.wait_for(1).await;
    db.batch_execute(&format!(
        "DROP TABLE gateways; {GATEWAYS}; INSERT INTO gateways VALUES ('g2', 'org1', 'into-the-new-table')"
    ))
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("public.gateways") && msg.contains("dropped and created again"),
        "{msg}"
    );
    assert!(msg.contains("--accept-gap"), "{msg}");
    // A plain restart re-adds nothing silently: it refuses and says why.
    let msg = Running::start(config(&env, TABLES)).stops_with().await;
    assert!(msg.contains("not in publication"), "{msg}");
    // Accepted: the table is back in the publication, the gap is in the trail, new changes are captured.
    let run = Running::start_with(
        config(&env, TABLES),
        RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g3', 'org1', 'after')")
        .await
        .unwrap();
    env.wait_for(3).await;
    let gaps = gap_items(&env).await;
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    assert_eq!(gaps[0].table_name, "public.gateways");
    assert!(env
        .items()
        .await
        .iter()
        .any(|i| i.resource_display == "after"));
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_created_again_or_advanced_while_waltrail_was_away_is_a_recorded_gap() {
    let env = TestEnv::new("g_slot_again").await;
    let db = env.pg().await;
    db.batch_execute(GATEWAYS).await.unwrap();
    let slot = format!("slot_{}", env.name);
    let run = Running::start(config(&env, TABLES));
    wait_slot(&db, &slot).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'org1', 'before')")
        .await
        .unwrap();
    env.wait_for(1).await;
    wait_all_confirmed(&db, &slot).await;
    run.stop().await.unwrap();
    // A plain restart is no gap, and check finds none.
    let findings = waltrail::check::run(&config(&env, TABLES)).await;
    assert!(
        !findings
            .iter()
            .any(|f| f.what.contains("past every position")),
        "{findings:#?}"
    );
    let run = Running::start(config(&env, TABLES));
    wait_slot(&db, &slot).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g2', 'org1', 'restarted')")
        .await
        .unwrap();
    env.wait_for(2).await;
    wait_all_confirmed(&db, &slot).await;
    run.stop().await.unwrap();
    assert!(gap_items(&env).await.is_empty());

    // While waltrail is away: a change, then the slot dropped and created again under its name (Postgres
    // keeps no identity for a slot: only its position tells).
    db.batch_execute("INSERT INTO gateways VALUES ('g3', 'org1', 'lost')")
        .await
        .unwrap();
    db.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    db.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&slot],
    )
    .await
    .unwrap();
    // check says so before run is tried.
    let findings = waltrail::check::run(&config(&env, TABLES)).await;
    let f = findings
        .iter()
        .find(|f| f.what.contains("past every position waltrail confirmed"))
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(f.status, waltrail::finding::Status::Fail);
    assert!(f.fix.as_deref().unwrap_or("").contains("--accept-gap"));
    let msg = Running::start(config(&env, TABLES)).stops_with().await;
    assert!(
        msg.contains("past every position waltrail confirmed") && msg.contains("--accept-gap"),
        "{msg}"
    );
    assert!(gap_items(&env).await.is_empty(), "nothing recorded yet");
    let run = Running::start_with(
        config(&env, TABLES),
        RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &slot).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g4', 'org1', 'after')")
        .await
        .unwrap();
    env.wait_for(4).await;
    wait_all_confirmed(&db, &slot).await;
    run.stop().await.unwrap();
    let gaps = gap_items(&env).await;
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    let d = gaps[0].diff_json();
    assert!(
        d["gap"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("dropped and created again, advanced, or read by another consumer"),
        "{d}"
    );
    let names: Vec<String> = env
        .items()
        .await
        .into_iter()
        .map(|i| i.resource_display)
        .collect();
    assert!(!names.contains(&"lost".to_owned()), "{names:?}");

    // The same for a slot moved on by hand: a second gap, refused first.
    db.batch_execute("INSERT INTO gateways VALUES ('g5', 'org1', 'skipped')")
        .await
        .unwrap();
    db.execute(
        "SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())",
        &[&slot],
    )
    .await
    .unwrap();
    let msg = Running::start(config(&env, TABLES)).stops_with().await;
    assert!(
        msg.contains("past every position waltrail confirmed"),
        "{msg}"
    );
    // And the graceful stops above confirmed everything stored: nothing of it is a gap.
    assert_eq!(gap_items(&env).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_that_stops_publishing_deletes_is_a_recorded_gap_never_a_silent_one() {
    let env = TestEnv::new("g_pubflags").await;
    let db = env.pg().await;
    db.batch_execute(GATEWAYS).await.unwrap();
    let run = Running::start(config(&env, TABLES));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'org1', 'first')")
        .await
        .unwrap();
    env.wait_for(1).await;
    // A migration outside waltrail narrows the publication; the delete after it never reaches the stream.
    db.batch_execute(&format!(
        "ALTER PUBLICATION pub_{} SET (publish = 'insert, update'); DELETE FROM gateways WHERE id = 'g1'",
        env.name
    ))
    .await
    .unwrap();
    let msg = run.stops_with().await;
    assert!(
        msg.contains("does not publish deletes") && msg.contains("--accept-gap"),
        "{msg}"
    );
    // A plain restart does not set it back silently.
    let msg = Running::start(config(&env, TABLES)).stops_with().await;
    assert!(
        msg.contains("does not publish deletes") && msg.contains("--accept-gap"),
        "{msg}"
    );
    let run = Running::start_with(
        config(&env, TABLES),
        RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "INSERT INTO gateways VALUES ('g2', 'org1', 'second'); DELETE FROM gateways WHERE id = 'g2'",
    )
    .await
    .unwrap();
    env.wait_for(4).await;
    let gaps = gap_items(&env).await;
    assert_eq!(gaps.len(), 1, "{gaps:#?}");
    let d: serde_json::Value = serde_json::from_str(&gaps[0].diff).unwrap();
    assert!(
        d["gap"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("does not publish deletes"),
        "{d}"
    );
    let deleted: Vec<String> = env
        .items()
        .await
        .into_iter()
        .filter(|i| i.action == "AUDIT_ACTION_DELETED")
        .map(|i| i.resource_id)
        .collect();
    assert_eq!(deleted, ["g2"], "deletes are published again");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_renamed_while_streaming_loses_nothing_and_stops_with_the_fix() {
    let env = TestEnv::new("g_rename").await;
    let db = env.pg().await;
    db.batch_execute(GATEWAYS).await.unwrap();
    let run = Running::start(config(&env, TABLES));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "ALTER TABLE gateways RENAME TO edge_gateways; \
         INSERT INTO edge_gateways VALUES ('g1', 'org1', 'after-rename')",
    )
    .await
    .unwrap();
    // The watchdog stops capture with the fix (whether or not the change under the new name was stored
    // first: it binds to the mapping by OID either way, and is confirmed only once stored).
    let msg = run.stops_with().await;
    assert!(
        msg.contains("public.gateways was renamed to public.edge_gateways")
            && msg.contains(r#"table = "edge_gateways""#)
            && !msg.contains("Restart waltrail once with --accept-gap"),
        "names the new name and the fix, and asks for no gap to be recorded: {msg}"
    );
    // The fix: the new name in the config; nothing else is needed and nothing is missing.
    let renamed = TABLES.replace("table = \"gateways\"", "table = \"edge_gateways\"");
    let run = Running::start(config(&env, &renamed));
    db.batch_execute("INSERT INTO edge_gateways VALUES ('g2', 'org1', 'later')")
        .await
        .unwrap();
    env.wait_for(2).await;
    let items = env.items().await;
    let names: Vec<&str> = items.iter().map(|i| i.resource_display.as_str()).collect();
    assert_eq!(
        names,
        ["after-rename", "later"],
        "the change made under the new name is not lost"
    );
    assert!(items
        .iter()
        .all(|i| i.resource_type == "RESOURCE_TYPE_GATEWAY"));
    assert!(gap_items(&env).await.is_empty());
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_values_never_look_the_same() {
    let env = TestEnv::new("g_values").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE docs (id int PRIMARY KEY, nums int[], meta jsonb, raw json)")
        .await
        .unwrap();
    let tables = r#"
[[tables]]
table = "docs"
resource_type = "RESOURCE_TYPE_SETTING"
"#;
    let run = Running::start(config(&env, tables));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "INSERT INTO docs VALUES (1, '[0:2]={7,8,9}', 'null', NULL); \
         UPDATE docs SET nums = '{7,8,9}', meta = NULL, raw = 'null' WHERE id = 1;",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    let items = env.items().await;
    let created = items[0].diff_json();
    assert_eq!(
        created["nums"],
        json!({"after": {"bounds": "[0:2]", "values": [7, 8, 9]}})
    );
    assert_eq!(
        created["meta"],
        json!({"after": null}),
        "the JSON value null"
    );
    assert_eq!(
        created["raw"],
        json!({"after": null, "sql_null": ["after"]}),
        "SQL NULL, said so"
    );
    let updated = items[1].diff_json();
    assert_eq!(
        updated["nums"],
        json!({"before": {"bounds": "[0:2]", "values": [7, 8, 9]}, "after": [7, 8, 9]}),
        "a change of only the bounds is a change"
    );
    assert_eq!(
        updated["meta"],
        json!({"before": null, "after": null, "sql_null": ["after"]})
    );
    assert_eq!(
        updated["raw"],
        json!({"before": null, "after": null, "sql_null": ["before"]})
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_transaction_on_the_source_is_told_apart_from_waltrail_being_slow() {
    let env = TestEnv::new("g_longtx").await;
    let db = env.pg().await;
    db.batch_execute(&format!("{GATEWAYS}; CREATE TABLE filler (x text)"))
        .await
        .unwrap();
    let run = Running::start(config(&env, TABLES));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // A session idle in a transaction that wrote something: the slot's restart position stays before it.
    let idle = env.pg().await;
    idle.batch_execute("BEGIN; INSERT INTO filler VALUES ('held')")
        .await
        .unwrap();
    db.batch_execute(
        "INSERT INTO filler SELECT repeat(md5(i::text), 8) FROM generate_series(1, 20000) i; \
         INSERT INTO gateways VALUES ('g1', 'org1', 'meanwhile')",
    )
    .await
    .unwrap();
    env.wait_for(1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = &run.metrics;
        let retained = m.slot_retained_bytes.load(Ordering::Relaxed);
        let unconfirmed = m.slot_unconfirmed_bytes.load(Ordering::Relaxed);
        let oldest = m.source_oldest_xact_ms.load(Ordering::Relaxed);
        if retained > 1_000_000 && unconfirmed < retained / 4 && oldest >= 1000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retained {retained}, unconfirmed {unconfirmed}, oldest transaction {oldest} ms"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    idle.batch_execute("COMMIT").await.unwrap();
    run.stop().await.unwrap();
}

/// A mapped table's [[tables]] entry removed, then put back: the trail says when it stopped being audited
/// and when it was again, and the start that maps it anew needs no --accept-gap (it refused, blaming a
/// drop or someone else).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_unmapped_and_mapped_again_is_said_in_the_trail_without_acceptance() {
    let env = TestEnv::new("g_unmapped").await;
    let db = env.pg().await;
    db.batch_execute(&format!(
        "{GATEWAYS}; CREATE TABLE keys (id text PRIMARY KEY, org_id text, name text)"
    ))
    .await
    .unwrap();
    let keys = r#"
[[tables]]
table = "keys"
resource_type = "RESOURCE_TYPE_API_KEY"
organization_column = "org_id"
display_column = "name"
"#;
    let both = format!("{TABLES}{keys}");
    let run = Running::start(config(&env, &both));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "INSERT INTO gateways VALUES ('g1', 'org1', 'gw'); INSERT INTO keys VALUES ('k1', 'org1', 'key-1')",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    run.stop().await.unwrap();
    // The platform writes on while waltrail is stopped: the slot holds a change of the table when the
    // start that unmaps it streams.
    db.batch_execute("INSERT INTO keys VALUES ('k-stopped', 'org1', 'unaudited while stopped')")
        .await
        .unwrap();
    // Unmapped: the start says so in the trail, and the table's changes are not audited — nor taken for
    // a lost partition's (an error, a metric to alert on, and a second, false gap record).
    let run = Running::start(config(&env, TABLES));
    env.wait_for(3).await;
    db.batch_execute("INSERT INTO keys VALUES ('k2', 'org1', 'unaudited')")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO gateways VALUES ('g2', 'org1', 'gw2')")
        .await
        .unwrap();
    env.wait_for(4).await;
    assert_eq!(
        run.metrics
            .unplaced_relations
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    run.stop().await.unwrap();
    // An ordinary start in between records nothing more.
    let run = Running::start(config(&env, TABLES));
    db.batch_execute("INSERT INTO gateways VALUES ('g3', 'org1', 'gw3')")
        .await
        .unwrap();
    env.wait_for(5).await;
    run.stop().await.unwrap();
    // Mapped again: a plain start goes on, and says so (before streaming: changes from then on count).
    let run = Running::start(config(&env, &both));
    env.wait_for(6).await;
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO keys VALUES ('k3', 'org1', 'audited again')")
        .await
        .unwrap();
    env.wait_for(7).await;
    assert!(
        !run.is_finished(),
        "mapping a table again needs no acceptance"
    );
    run.stop().await.unwrap();
    let gaps: Vec<String> = gap_items(&env)
        .await
        .into_iter()
        .filter(|g| g.table_name == "public.keys")
        .map(|g| g.summary)
        .collect();
    assert_eq!(gaps.len(), 2, "{gaps:#?}");
    assert!(gaps[0].contains("no longer mapped"), "{gaps:#?}");
    // The gap begins where that start resumed (the stretch before it was captured).
    assert!(
        gaps[0].starts_with(
            "The trail has a gap from here on: changes to public.keys committed after position "
        ),
        "{gaps:#?}"
    );
    assert!(gaps[1].contains("is mapped again"), "{gaps:#?}");
    let displays: Vec<String> = env
        .items()
        .await
        .into_iter()
        .map(|i| i.resource_display)
        .collect();
    assert!(displays.contains(&"audited again".to_owned()));
    assert!(!displays.contains(&"unaudited".to_owned()));
    assert!(!displays.contains(&"unaudited while stopped".to_owned()));
    // Mapped again and then taken out of the publication by hand: no record excuses that.
    db.batch_execute(&format!(
        "ALTER PUBLICATION pub_{} DROP TABLE keys",
        env.name
    ))
    .await
    .unwrap();
    let err = Running::start(config(&env, &both)).stops_with().await;
    assert!(err.contains("not in publication"), "{err}");
}

/// Unmapping a partitioned table, and a table that never had a change captured, while the slot holds
/// their changes (QA18): those changes are the unmapped tables', covered by their "no longer mapped"
/// records. Never placed in another mapped partitioned table with the same columns, never an error or an
/// unplaced relation, and the table without items is recorded too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_partitioned_table_and_one_without_items_are_never_another_tables() {
    let env = TestEnv::new("g_unmapped_parts").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE events_a (id int PRIMARY KEY, org text, msg text) PARTITION BY RANGE (id);
         CREATE TABLE events_a_p1 PARTITION OF events_a FOR VALUES FROM (0) TO (1000);
         CREATE TABLE events_b (id int PRIMARY KEY, org text, msg text) PARTITION BY RANGE (id);
         CREATE TABLE events_b_p1 PARTITION OF events_b FOR VALUES FROM (0) TO (1000);
         CREATE TABLE fresh (id int PRIMARY KEY, org text, msg text);",
    )
    .await
    .unwrap();
    let entry = |table: &str, kind: &str| {
        format!(
            "\n[[tables]]\ntable = \"{table}\"\nresource_type = \"{kind}\"\norganization_column = \"org\"\n\
             display_column = \"msg\"\n"
        )
    };
    let all = format!(
        "{}{}{}",
        entry("events_a", "RESOURCE_TYPE_EVENT_A"),
        entry("events_b", "RESOURCE_TYPE_EVENT_B"),
        entry("fresh", "RESOURCE_TYPE_FRESH")
    );
    let run = Running::start(config(&env, &all));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "INSERT INTO events_a VALUES (1, 'o1', 'a-one'); INSERT INTO events_b VALUES (1, 'o1', 'b-one');",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    run.stop().await.unwrap();
    // While stopped, the platform writes to the tables about to be unmapped.
    db.batch_execute(
        "INSERT INTO events_a VALUES (2, 'o1', 'a-two'); UPDATE events_a SET msg = 'a-one-changed' WHERE id = 1;
         INSERT INTO fresh VALUES (1, 'o1', 'fresh-one');",
    )
    .await
    .unwrap();
    let only_b = entry("events_b", "RESOURCE_TYPE_EVENT_B");
    let run = Running::start(config(&env, &only_b));
    env.wait_for(4).await;
    db.batch_execute("INSERT INTO events_b VALUES (2, 'o1', 'b-two')")
        .await
        .unwrap();
    env.wait_for(5).await;
    assert_eq!(run.metrics.unplaced_relations.load(Ordering::Relaxed), 0);
    run.stop().await.unwrap();
    let items = env.items().await;
    let shown: Vec<&str> = items.iter().map(|i| i.resource_display.as_str()).collect();
    for never in ["a-two", "a-one-changed", "fresh-one"] {
        assert!(!shown.contains(&never), "{never} was audited: {items:#?}");
    }
    assert!(items
        .iter()
        .filter(|i| i.table_name == "public.events_b")
        .all(|i| i.resource_display.starts_with("b-")));
    let gaps: Vec<(String, String)> = gap_items(&env)
        .await
        .into_iter()
        .map(|g| (g.table_name, g.summary))
        .collect();
    assert_eq!(gaps.len(), 2, "{gaps:#?}");
    for table in ["public.events_a", "public.fresh"] {
        assert!(
            gaps.iter()
                .any(|(t, s)| t == table && s.contains("no longer mapped")),
            "{table}: {gaps:#?}"
        );
    }
}

/// The same with the unmapped partitioned table dropped while its changes wait in the slot (QA19): its
/// partition's changes can no longer be told by the catalog, and are never guessed into the mapped table
/// with the same columns; they are unplaced (counted, and recorded as a gap by the next start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_unmapped_partitioned_tables_changes_are_never_another_tables() {
    let env = TestEnv::new("g_unmapped_dropped").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE events_a (id int PRIMARY KEY, org text, msg text) PARTITION BY RANGE (id);
         CREATE TABLE events_a_p1 PARTITION OF events_a FOR VALUES FROM (0) TO (1000);
         CREATE TABLE events_b (id int PRIMARY KEY, org text, msg text) PARTITION BY RANGE (id);
         CREATE TABLE events_b_p1 PARTITION OF events_b FOR VALUES FROM (0) TO (1000);",
    )
    .await
    .unwrap();
    let entry = |table: &str| {
        format!(
            "\n[[tables]]\ntable = \"{table}\"\nresource_type = \"RESOURCE_TYPE_EVENT\"\norganization_column = \"org\"\n\
             display_column = \"msg\"\n"
        )
    };
    let run = Running::start(config(
        &env,
        &format!("{}{}", entry("events_a"), entry("events_b")),
    ));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute(
        "INSERT INTO events_a VALUES (1, 'o1', 'a-one'); INSERT INTO events_b VALUES (1, 'o1', 'b-one');",
    )
    .await
    .unwrap();
    env.wait_for(2).await;
    run.stop().await.unwrap();
    db.batch_execute(
        "INSERT INTO events_a VALUES (2, 'o1', 'a-two'); UPDATE events_a SET msg = 'a-one-changed' WHERE id = 1;
         DROP TABLE events_a;",
    )
    .await
    .unwrap();
    let run = Running::start(config(&env, &entry("events_b")));
    db.batch_execute("INSERT INTO events_b VALUES (2, 'o1', 'b-two')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 3, "the start after the drop").await;
    run.stop().await.unwrap();
    let items = env.items().await;
    assert!(
        items
            .iter()
            .filter(|i| i.table_name == "public.events_b")
            .all(|i| i.resource_display.starts_with("b-")),
        "{items:#?}"
    );
}

/// QA48a M1, M2: the organization and id columns renamed while changes under their old names wait in the
/// slot. The stop names the fix: the new names in their roles, the old ones in `former_names`; the
/// waiting changes then keep their organization and id. Listing the old names in `optional_columns`
/// instead (the fix the stop named before) stored them in no organization and with no id: refused now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_scope_and_id_columns_keep_the_waiting_changes_in_their_organization() {
    let env = TestEnv::new("g_scope_rename").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let run = Running::start(env.config(WORKERS));
    wait_slot(&db, "slot_g_scope_rename").await;
    db.batch_execute("INSERT INTO workers VALUES (1, 'o1', 'one'), (2, 'o2', 'two')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 2, "first").await;
    wait_all_confirmed(&db, "slot_g_scope_rename").await;
    run.stop().await.unwrap();
    for sql in [
        "UPDATE workers SET name = 'one-b' WHERE id = 1",
        "DELETE FROM workers WHERE id = 2",
        "ALTER TABLE workers RENAME COLUMN org TO org_id",
        "ALTER TABLE workers RENAME COLUMN id TO worker_id",
        "UPDATE workers SET name = 'one-c'",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    let stop = Running::start(env.config(WORKERS)).stops_with().await;
    assert!(stop.contains("former_names"), "{stop}");
    // Optional is no way out for an organization column.
    let optional = WORKERS.replace(
        "organization_column = \"org\"",
        "organization_column = \"org_id\"\noptional_columns = [\"org\", \"org_id\"]",
    );
    let stop = Running::start(env.config(&optional)).stops_with().await;
    assert!(stop.contains("organization_column"), "{stop}");
    let fixed = WORKERS.replace(
        "organization_column = \"org\"",
        "organization_column = \"org_id\"\nformer_names = { org_id = [\"org\"], worker_id = [\"id\"] }",
    );
    let run = Running::start(env.config(&fixed));
    let run = run.until_stored(&env, 5, "after the fix").await;
    run.stop().await.unwrap();
    let items = env.items().await;
    let lost: Vec<String> = items
        .iter()
        .filter(|i| i.organization_id.is_empty() || i.resource_id.is_empty())
        .map(|i| format!("{} {:?} {:?}", i.action, i.organization_id, i.resource_id))
        .collect();
    assert!(lost.is_empty(), "no organization or no id: {lost:?}");
    let deleted = items
        .iter()
        .find(|i| i.action == "AUDIT_ACTION_DELETED")
        .expect("the delete");
    assert_eq!(
        (
            deleted.organization_id.as_str(),
            deleted.resource_id.as_str()
        ),
        ("o2", "2")
    );
}
