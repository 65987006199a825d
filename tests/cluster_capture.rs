//! waltrail on a ClickHouse cluster (the harness's ZooKeeper + ch1, ch2, ch3: `replicated` = one shard of
//! ch1 + ch2, `sharded` = ch1 + ch2 and ch3): `migrate` builds the schema on every node, capture writes
//! through the Distributed table and confirms Postgres only what the cluster holds, a replica or a shard
//! down loses nothing, a crash replays exactly, and the API answers from every shard or not at all.
//!
//! Tests that kill nodes hold the cluster exclusively; the others hold it shared.

mod harness;

use harness::*;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use waltrail::config::Config;

const ADMIN: &str = "cluster-admin-key";

/// Organizations whose items land on both shards of `sharded` (cityHash64 of the name decides).
const ORGS: [&str; 8] = ["o0", "o1", "o2", "o3", "o4", "o5", "o6", "o7"];

/// A Postgres of this binary's own whose walsender gives up on a silent client after 2 s: a shard down
/// for longer than that must not cost capture its replication connection.
fn pg_short_timeout() -> &'static PgCluster {
    static PG: OnceLock<PgCluster> = OnceLock::new();
    PG.get_or_init(|| {
        PgCluster::start("wal_sender_timeout = '2s'").expect("start the test Postgres cluster")
    })
}

fn api_section(org: &str) -> String {
    format!(
        "[api]\nlisten = \"127.0.0.1:{}\"\n\n[[api.keys]]\nname = \"admin\"\nsha256 = \"{}\"\norg_id = \"{org}\"\nrole = \"admin\"\n",
        free_port(),
        key_sha(ADMIN)
    )
}

fn config(env: &TestEnv, extra: &str) -> Config {
    let cfg = Config::parse(&format!("{}\n{extra}", env.config_text(WORKERS))).expect("config");
    cfg.validate().expect("valid config");
    cfg
}

async fn insert_workers(db: &tokio_postgres::Client, from: i32, to: i32) {
    db.execute(
        "INSERT INTO workers SELECT i, 'o' || (i % 8), 'w' || i FROM generate_series($1::int, $2::int) i",
        &[&from, &to],
    )
    .await
    .expect("insert workers");
}

/// Distinct ids in a node's local items table (what that replica holds).
async fn local_ids(node: &ClickHouse, db: &str, org: Option<&str>) -> u64 {
    let filter = org.map_or(String::new(), |o| format!(" WHERE organization_id = '{o}'"));
    node.client(db)
        .query(&format!(
            "SELECT count(DISTINCT id) FROM audit_items_local{filter}"
        ))
        .fetch_one::<u64>()
        .await
        .expect("count local items")
}

/// `SYSTEM SYNC REPLICA`: the replica has fetched everything its shard's log holds.
async fn sync_replica(node: &ClickHouse, db: &str) {
    node.client(db)
        .query("SYSTEM SYNC REPLICA audit_items_local")
        .execute()
        .await
        .expect("sync replica");
}

async fn engine(node: &ClickHouse, db: &str, table: &str) -> String {
    node.client(db)
        .query("SELECT engine FROM system.tables WHERE database = ? AND name = ?")
        .bind(db)
        .bind(table)
        .fetch_optional::<String>()
        .await
        .expect("system.tables")
        .unwrap_or_default()
}

/// Distinct stored ids, rows after FINAL, and ids whose copies differ in content (must be 0).
async fn replay_consistency(env: &TestEnv) -> (u64, u64, u64) {
    let ch = env.ch();
    let distinct: u64 = ch
        .query("SELECT count(DISTINCT id) FROM audit_items")
        .fetch_one()
        .await
        .expect("distinct");
    let final_rows: u64 = ch
        .query("SELECT count() FROM audit_items FINAL")
        .fetch_one()
        .await
        .expect("final");
    let differing: u64 = ch
        .query(
            "SELECT count() FROM (SELECT id, uniqExact(cityHash64(toString(event_id), occurred_at_us, commit_lsn, seq, action, \
             organization_id, resource_type, resource_id, diff, chain_seq, chain_hash)) AS v \
             FROM audit_items GROUP BY id HAVING v > 1)",
        )
        .fetch_one()
        .await
        .expect("differing");
    (distinct, final_rows, differing)
}

async fn confirmed(db: &tokio_postgres::Client, slot: &str) -> u64 {
    confirmed_flush(db, slot).await.map_or(0, |l| lsn(&l))
}

async fn current_lsn(db: &tokio_postgres::Client) -> u64 {
    let s: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    lsn(&s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_into_a_sharded_cluster_keeps_each_organization_on_one_shard() {
    let cluster = cluster();
    let _shared = cluster.shared().await.expect("cluster up");
    let env = TestEnv::on_cluster("cl_capture", pg(), cluster, ChCluster::SHARDED, "").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let api_keys = api_section("o3");
    let run = Running::start(config(&env, &api_keys));
    wait_slot_on_cluster(cluster, &db, "slot_cl_capture").await;
    insert_workers(&db, 1, 400).await;
    db.batch_execute(
        "UPDATE workers SET name = name || '!' WHERE id <= 40; DELETE FROM workers WHERE id > 390",
    )
    .await
    .unwrap();
    assert_eq!(env.wait_for(450).await, 450);
    run.stop().await.expect("capture stops cleanly");

    // The schema on every node: replicated data, a Distributed table over it.
    for (i, node) in cluster.nodes().iter().enumerate() {
        assert_eq!(
            engine(node, &env.ch_db, "audit_items_local").await,
            "ReplicatedReplacingMergeTree",
            "node {i}"
        );
        assert_eq!(engine(node, &env.ch_db, "audit_items").await, "Distributed");
        assert_eq!(
            engine(node, &env.ch_db, "audit_checkpoints_local").await,
            "ReplicatedReplacingMergeTree"
        );
    }
    // Each organization's items on exactly one shard (ch1 = shard 1, ch3 = shard 2), both shards used.
    let (mut on1, mut on2) = (0, 0);
    for org in ORGS {
        let a = local_ids(cluster.node(0), &env.ch_db, Some(org)).await;
        let b = local_ids(cluster.node(2), &env.ch_db, Some(org)).await;
        assert!(
            a > 0 && b == 0 || a == 0 && b > 0,
            "{org}: shard 1 {a}, shard 2 {b}"
        );
        on1 += (a > 0) as u32;
        on2 += (b > 0) as u32;
    }
    assert!(on1 > 0 && on2 > 0, "organizations per shard: {on1} / {on2}");
    // ch2 replicates ch1.
    sync_replica(cluster.node(1), &env.ch_db).await;
    assert_eq!(
        local_ids(cluster.node(1), &env.ch_db, None).await,
        local_ids(cluster.node(0), &env.ch_db, None).await
    );
    // The API reads every shard: one organization's whole trail, page after page.
    let cfg = Arc::new(config(&env, &api_keys));
    let api = Api::start(cfg.clone()).await;
    let items = api
        .all_items(ADMIN, "/api/v1/orgs/o3/audit_logs?limit=7")
        .await;
    let expected: u64 = env
        .ch()
        .query("SELECT count(DISTINCT id) FROM audit_items WHERE organization_id = 'o3'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(items.len() as u64, expected);
    assert!(expected >= 50, "o3 has {expected} items");
    let mut ids: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), items.len(), "no item twice");
    // The chains verify from the cluster.
    let cfg_file = env.config_file(WORKERS, 1000);
    let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args([
            "verify",
            "--config",
            cfg_file.to_str().unwrap(),
            "--org",
            "o3",
        ])
        .output()
        .expect("run verify");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // check sees the cluster, its nodes answering.
    let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["check", "--config", cfg_file.to_str().unwrap()])
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ClickHouse cluster sharded: 2 shard(s), 3 node(s)"),
        "{text}"
    );
    assert!(!text.contains("does not answer"), "{text}");
    // Migrating again changes nothing; the same database as a single server is refused, not mixed.
    assert!(waltrail::store::schema::migrate(&cfg.clickhouse)
        .await
        .expect("migrate again")
        .is_empty());
    let mut single = config(&env, "");
    single.clickhouse.cluster = None;
    let e = waltrail::store::schema::migrate(&single.clickhouse)
        .await
        .expect_err("a cluster database migrated as a single server");
    assert!(format!("{e:#}").contains("is a Distributed table"), "{e:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_stalls_capture_and_reads_then_everything_arrives_once() {
    let cluster = cluster();
    let _exclusive = cluster.exclusive().await.expect("cluster up");
    let pg = pg_short_timeout();
    let env = TestEnv::on_cluster("cl_shard_down", pg, cluster, ChCluster::SHARDED, "").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let cfg = Arc::new(config(&env, &api_section("o1")));
    let run = Running::start(config(&env, ""));
    let slot = "slot_cl_shard_down";
    wait_slot_on_cluster(cluster, &db, slot).await;
    insert_workers(&db, 1, 80).await;
    env.wait_for(80).await;
    let api = Api::start(cfg.clone()).await;
    let (s, _) = api.get(ADMIN, "/api/v1/orgs/o1/audit_logs").await;
    assert_eq!(s, 200);
    let pid_before = slot_pid(&db, slot).await;

    cluster.node(2).kill();
    insert_workers(&db, 81, 200).await;
    let written = current_lsn(&db).await;
    // Three times the walsender timeout with shard 2 gone.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        confirmed(&db, slot).await < written,
        "nothing may be confirmed while a shard cannot store it"
    );
    let pid_during = slot_pid(&db, slot).await;
    assert_eq!(
        pid_before, pid_during,
        "the replication connection survives the outage"
    );
    // Reads: a clear 503, never a page missing shard 2's items.
    let (s, v) = api.get(ADMIN, "/api/v1/orgs/o1/audit_logs").await;
    assert_eq!(s, 503, "{v}");
    assert!(v["msg"].as_str().unwrap_or("").contains("shard"), "{v}");

    cluster.node(2).start().expect("restart ch3");
    let deadline = Instant::now() + Duration::from_secs(120);
    while confirmed(&db, slot).await < written {
        assert!(
            Instant::now() < deadline,
            "not confirmed after the shard came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.wait_for(200).await, 200);
    run.stop().await.expect("capture stops cleanly");
    let (distinct, final_rows, differing) = replay_consistency(&env).await;
    assert_eq!((distinct, differing), (200, 0));
    assert!(final_rows >= 200);
    let (s, _) = api.get(ADMIN, "/api/v1/orgs/o1/audit_logs").await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_during_capture_catches_up_and_a_quorum_waits_for_it() {
    let cluster = cluster();
    let _exclusive = cluster.exclusive().await.expect("cluster up");
    // Quorum 1: the surviving replica takes every insert, the killed one catches up.
    let env = TestEnv::on_cluster("cl_replica", pg(), cluster, ChCluster::REPLICATED, "").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let run = Running::start(config(&env, ""));
    wait_slot_on_cluster(cluster, &db, "slot_cl_replica").await;
    for batch in 0..20 {
        if batch == 5 {
            cluster.node(1).kill();
        }
        if batch == 15 {
            cluster.node(1).start().expect("restart ch2");
        }
        insert_workers(&db, batch * 100 + 1, batch * 100 + 100).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(env.wait_for(2000).await, 2000);
    run.stop().await.expect("capture stops cleanly");
    let deadline = Instant::now() + Duration::from_secs(90);
    while local_ids(cluster.node(1), &env.ch_db, None).await < 2000 {
        assert!(Instant::now() < deadline, "ch2 did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(local_ids(cluster.node(1), &env.ch_db, None).await, 2000);

    // Quorum 2: with ch2 down nothing is confirmed; once it is back, everything is, on both replicas.
    let env = TestEnv::on_cluster(
        "cl_quorum",
        pg(),
        cluster,
        ChCluster::REPLICATED,
        "insert_quorum = 2",
    )
    .await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let run = Running::start(config(&env, ""));
    let slot = "slot_cl_quorum";
    wait_slot_on_cluster(cluster, &db, slot).await;
    insert_workers(&db, 1, 50).await;
    env.wait_for(50).await;
    cluster.node(1).kill();
    insert_workers(&db, 51, 150).await;
    let written = current_lsn(&db).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        confirmed(&db, slot).await < written,
        "confirmed without the quorum"
    );
    cluster.node(1).start().expect("restart ch2");
    let deadline = Instant::now() + Duration::from_secs(120);
    while confirmed(&db, slot).await < written {
        assert!(
            Instant::now() < deadline,
            "not confirmed after ch2 came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run.stop().await.expect("capture stops cleanly");
    // Confirmed under a quorum of 2: both replicas hold every item, without waiting.
    assert_eq!(local_ids(cluster.node(0), &env.ch_db, None).await, 150);
    assert_eq!(local_ids(cluster.node(1), &env.ch_db, None).await, 150);
    let (distinct, _, differing) = replay_consistency(&env).await;
    assert_eq!((distinct, differing), (150, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_transaction_replays_into_the_cluster_exactly() {
    let cluster = cluster();
    let _shared = cluster.shared().await.expect("cluster up");
    let env = TestEnv::on_cluster("cl_kill", pg(), cluster, ChCluster::SHARDED, "").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let text = env.config_text_with(WORKERS, 500).replace(
        "batch_max_delay_ms = 50",
        "batch_max_delay_ms = 50\nbatch_max_items = 500\ninsert_max_items = 2000",
    );
    let dir = std::env::temp_dir().join(format!("waltrail-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("cl_kill.toml");
    std::fs::write(&cfg, text).unwrap();
    let log = dir.join("cl_kill.log");
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    wait_slot_on_cluster(cluster, &db, "slot_cl_kill").await;
    insert_workers(&db, 1, 20_000).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = env.count().await;
        if c > 0 {
            assert!(c < 20_000, "too late to kill mid-transaction ({c} stored)");
            break;
        }
        assert!(Instant::now() < deadline, "nothing stored in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = child.kill(); // SIGKILL
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    assert_eq!(env.wait_for(20_000).await, 20_000);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let (distinct, _, differing) = replay_consistency(&env).await;
    assert_eq!((distinct, differing), (20_000, 0));
    assert_eq!(
        env.rows().await,
        20_000,
        "what the shards held before the kill is not written again"
    );
    // The replayed chain is the one first written: every organization's verifies.
    for org in ORGS {
        let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
            .args(["verify", "--config", cfg.to_str().unwrap(), "--org", org])
            .output()
            .expect("run verify");
        assert!(
            out.status.success(),
            "{org}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// An item of `org` committed (and stored) at `t_us`.
fn old_item(n: u64, org: &str, t_us: i64) -> waltrail::store::row::ItemRow {
    let mut r = waltrail::store::row::ItemRow::from_item(
        waltrail::audit::item::AuditItem {
            id: uuid::Uuid::new_v4(),
            event_id: uuid::Uuid::new_v4(),
            source_id: "cluster-retention".into(),
            occurred_at_us: t_us,
            commit_lsn: 1_000 + n,
            xid: n as u32,
            seq: 0,
            action: "AUDIT_ACTION_UPDATED".into(),
            organization_id: org.into(),
            resource_type: "RESOURCE_TYPE_WORKER".into(),
            resource_id: format!("w{n}"),
            actor: Default::default(),
            project_id: String::new(),
            resource_display: format!("worker {n}"),
            changed_fields: vec!["name".into()],
            diff: "{}".into(),
            table_name: "public.workers".into(),
            summary: String::new(),
            platform_wide: false,
        },
        t_us,
    );
    r.ingested_at_us = t_us;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_expired_days_on_every_shard_and_replica() {
    let cluster = cluster();
    let _shared = cluster.shared().await.expect("cluster up");
    let env = TestEnv::on_cluster("cl_retention", pg(), cluster, ChCluster::SHARDED, "").await;
    let cfg = config(&env, "");
    waltrail::store::schema::migrate(&cfg.clickhouse)
        .await
        .expect("migrate on the cluster");
    let day = 86_400_000_000i64;
    let now = waltrail::store::row::now_us();
    let mut rows = Vec::new();
    for (n, org) in ORGS.iter().enumerate() {
        rows.push(old_item(n as u64, org, now - 40 * day));
        rows.push(old_item(100 + n as u64, org, now - day));
    }
    let ch = waltrail::store::client(&cfg.clickhouse);
    waltrail::store::writer::insert_batch(&ch, &rows)
        .await
        .expect("insert through the Distributed table");
    let old_day = chrono::DateTime::from_timestamp_micros(now - 40 * day)
        .expect("time")
        .format("%Y%m%d")
        .to_string();
    let old_parts = |node: &'static ClickHouse| {
        let db = env.ch_db.clone();
        let day = old_day.clone();
        async move {
            node.client(&db)
                .query("SELECT count() FROM system.parts WHERE database = ? AND table = 'audit_items_local' AND active AND partition = ?")
                .bind(db.as_str())
                .bind(day.as_str())
                .fetch_one::<u64>()
                .await
                .expect("system.parts")
        }
    };
    // Every node holds some of the expired day (ch2 once it has fetched ch1's parts).
    sync_replica(cluster.node(1), &env.ch_db).await;
    for i in 0..3 {
        assert!(
            old_parts(cluster.node(i)).await > 0,
            "node {i} has the old day"
        );
    }
    let dropped = waltrail::store::retention::drop_expired(
        &ch,
        &waltrail::store::cluster::Layout::of(&cfg.clickhouse),
        30,
    )
    .await
    .expect("retention on the cluster");
    assert_eq!(dropped, std::slice::from_ref(&old_day));
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..3 {
        while old_parts(cluster.node(i)).await > 0 {
            assert!(Instant::now() < deadline, "node {i} still has {old_day}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Yesterday's items, on both shards, are all still there.
    assert_eq!(env.count().await, ORGS.len() as u64);
}
