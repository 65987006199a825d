//! The ClickHouse cluster of the test harness (ZooKeeper + ch1, ch2, ch3; shared_with_bench/cluster.rs)
//! on real servers, and the ClickHouse behaviours waltrail's cluster mode relies on: `ON CLUSTER` DDL,
//! replicated tables behind a Distributed table, sharding by organization, a replica catching up after
//! a crash, and a shard that is down failing inserts and reads instead of losing or hiding rows.
//!
//! Each test has its own database, created `ON CLUSTER`. The tests that kill nodes hold the cluster
//! exclusively (the others hold it shared), so no test sees a node down that it did not stop.

mod harness;

use harness::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// A stuck `ON CLUSTER` query (a node down) fails after this instead of ClickHouse's 180 s.
const DDL_TIMEOUT_S: &str = "20";

#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
struct Event {
    #[serde(with = "clickhouse::serde::uuid")]
    id: uuid::Uuid,
    org: String,
    version: u64,
    occurred_at_us: i64,
}

fn events(orgs: usize, per_org: usize, tag: u64) -> Vec<Event> {
    let base_us = 1_700_000_000_000_000 + tag as i64 * 1_000_000;
    (0..orgs)
        .flat_map(|o| {
            (0..per_org).map(move |i| Event {
                id: uuid::Uuid::new_v4(),
                org: format!("org-{o}"),
                version: 1,
                occurred_at_us: base_us + (o * per_org + i) as i64,
            })
        })
        .collect()
}

/// An `ON CLUSTER` statement run from `node`, failing after DDL_TIMEOUT_S if a host does not run it.
async fn ddl(node: &ClickHouse, sql: &str) -> clickhouse::error::Result<()> {
    ddl_within(node, sql, DDL_TIMEOUT_S).await
}

/// `wait_end_of_query` buffers the answer (one line per host), so that a failure on any host arrives
/// as an HTTP error.
async fn ddl_within(
    node: &ClickHouse,
    sql: &str,
    timeout_s: &str,
) -> clickhouse::error::Result<()> {
    node.client("default")
        .query(sql)
        .with_setting("distributed_ddl_task_timeout", timeout_s)
        .with_setting("wait_end_of_query", "1")
        .execute()
        .await
}

/// The test's database on every node of `cluster`, with a replicated local table `t_local` (one replica
/// per node, replicas of one `{shard}` sharing a ZooKeeper path) and a Distributed table `t` over it,
/// sharded by organization.
async fn create_tables(c: &ChCluster, cluster: &str, db: &str) {
    let ch1 = c.node(0);
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} ON CLUSTER {cluster}"),
        format!("CREATE DATABASE {db} ON CLUSTER {cluster}"),
        // occurred_at is MATERIALIZED here and ALIAS in the Distributed table: a Distributed table with
        // a MATERIALIZED column refuses every insert (Code 44).
        format!(
            "CREATE TABLE {db}.t_local ON CLUSTER {cluster} (\
                 id UUID, org String, version UInt64, occurred_at_us Int64, \
                 occurred_at DateTime MATERIALIZED toDateTime(intDiv(occurred_at_us, 1000000))\
             ) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/t_local', '{{replica}}', version) \
             PARTITION BY toYYYYMMDD(toDateTime(intDiv(occurred_at_us, 1000000))) ORDER BY (org, id)"
        ),
        format!(
            "CREATE TABLE {db}.t ON CLUSTER {cluster} (\
                 id UUID, org String, version UInt64, occurred_at_us Int64, \
                 occurred_at DateTime ALIAS toDateTime(intDiv(occurred_at_us, 1000000))\
             ) ENGINE = Distributed({cluster}, {db}, t_local, cityHash64(org))"
        ),
    ] {
        ddl(ch1, &sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// A synchronous insert through `node`'s Distributed table: it returns once one replica of every shard
/// has its rows.
async fn insert(node: &ClickHouse, db: &str, rows: &[Event]) -> clickhouse::error::Result<()> {
    insert_with(node, db, rows, &[]).await
}

async fn count(node: &ClickHouse, db: &str, sql: &str) -> clickhouse::error::Result<u64> {
    node.client(db).query(sql).fetch_one::<u64>().await
}

/// Poll until `node` answers `sql` with `want` (replicas lag behind the replica written to).
async fn wait_count(node: &ClickHouse, db: &str, sql: &str, want: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let have = count(node, db, sql).await;
        if have.as_ref().is_ok_and(|&n| n == want) {
            return want;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} on {}: wanted {want} within {within:?}, have {have:?}",
            node.url()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cluster_starts_with_both_clusters_zookeeper_and_macros() {
    let c = cluster();
    let _g = c.shared().await.expect("cluster up");
    println!("cluster started in {:?}", c.started_in());
    assert!(c.zookeeper().ruok(), "ZooKeeper answers ruok");
    assert_eq!(c.nodes().len(), 3);
    let tcp: Vec<u16> = c.nodes().iter().map(|n| n.tcp_port).collect();
    #[derive(Debug, PartialEq, clickhouse::Row, Deserialize)]
    struct Host {
        cluster: String,
        shard_num: u32,
        replica_num: u32,
        port: u16,
    }
    for (i, node) in c.nodes().iter().enumerate() {
        let client = node.client("default");
        let hosts = client
            .query(
                "SELECT cluster, shard_num, replica_num, port FROM system.clusters \
                 WHERE cluster IN ('replicated', 'sharded') ORDER BY cluster, shard_num, replica_num",
            )
            .fetch_all::<Host>()
            .await
            .expect("read system.clusters");
        let h = |cluster: &str, shard_num, replica_num, port| Host {
            cluster: cluster.to_owned(),
            shard_num,
            replica_num,
            port,
        };
        assert_eq!(
            hosts,
            vec![
                h(ChCluster::REPLICATED, 1, 1, tcp[0]),
                h(ChCluster::REPLICATED, 1, 2, tcp[1]),
                h(ChCluster::SHARDED, 1, 1, tcp[0]),
                h(ChCluster::SHARDED, 1, 2, tcp[1]),
                h(ChCluster::SHARDED, 2, 1, tcp[2]),
            ],
            "clusters as seen by {}",
            ChCluster::NODE_NAMES[i]
        );
        let macros = client
            .query("SELECT macro, substitution FROM system.macros ORDER BY macro")
            .fetch_all::<(String, String)>()
            .await
            .expect("read system.macros");
        assert_eq!(
            macros,
            vec![
                ("replica".to_owned(), ChCluster::NODE_NAMES[i].to_owned()),
                ("shard".to_owned(), ChCluster::NODE_SHARDS[i].to_owned()),
            ]
        );
        let zk_children = count(
            node,
            "default",
            "SELECT count() FROM system.zookeeper WHERE path = '/'",
        )
        .await
        .expect("read ZooKeeper through system.zookeeper");
        assert!(zk_children > 0, "ZooKeeper's root has children");
    }
}

#[tokio::test]
async fn distributed_insert_shards_by_org_and_replicates_within_a_shard() {
    let c = cluster();
    let _g = c.shared().await.expect("cluster up");
    let db = "c_sharded";
    create_tables(c, ChCluster::SHARDED, db).await;
    let (ch1, ch2, ch3) = (c.node(0), c.node(1), c.node(2));

    let rows = events(20, 50, 0);
    let total = rows.len() as u64;
    insert(ch1, db, &rows).await.expect("insert through ch1");

    // Every row through the Distributed table, from every node. Not at once: a sync insert returns when
    // one replica per shard has the rows, and a read through ch2 or ch3 may take shard 1 from ch2 before
    // it has fetched them (seen here: 600 of 1000 rows right after the insert). Read-your-writes needs
    // insert_quorum (see insert_quorum_counts_the_replicas_of_every_shard).
    for node in c.nodes() {
        wait_count(node, db, "SELECT count() FROM t", total, REPLICA_LAG).await;
        let n = count(
            node,
            db,
            "SELECT count() FROM t WHERE occurred_at >= toDateTime('2023-11-14 00:00:00') \
             AND occurred_at < toDateTime('2023-11-15 00:00:00')",
        )
        .await
        .expect("count through t with a time filter on the ALIAS column");
        assert_eq!(n, total, "rows in the time range on {}", node.url());
    }

    // Each organization's rows all on one shard, and both shards used.
    let shard1 = per_org(ch1, db).await;
    let shard2 = per_org(ch3, db).await;
    assert!(
        !shard1.is_empty() && !shard2.is_empty(),
        "both shards have rows: {shard1:?} / {shard2:?}"
    );
    for (org, n) in shard1.iter().chain(&shard2) {
        assert_eq!(*n, 50, "{org} has all its rows on one shard");
    }
    assert_eq!(
        shard1.len() + shard2.len(),
        20,
        "each org on exactly one shard"
    );

    // ch2, the other replica of shard 1, holds what ch1 holds.
    wait_count(
        ch2,
        db,
        "SELECT count() FROM t_local",
        shard1.len() as u64 * 50,
        REPLICA_LAG,
    )
    .await;
    assert_eq!(per_org(ch2, db).await, shard1, "ch2 holds what ch1 holds");

    // A newer version of a row, inserted through another node, replaces the old one on read (FINAL and
    // LIMIT 1 BY through the Distributed table, as waltrail reads).
    let mut newer = rows[0].clone();
    newer.version = 2;
    insert(ch3, db, std::slice::from_ref(&newer))
        .await
        .expect("insert a newer version through ch3");
    let id = newer.id;
    for sql in [
        format!("SELECT version FROM t FINAL WHERE id = toUUID('{id}')"),
        format!(
            "SELECT version FROM (SELECT id, version FROM t WHERE id = toUUID('{id}') \
             ORDER BY version DESC LIMIT 1 BY id)"
        ),
    ] {
        // Through ch3 the newer version went to one replica of its shard: poll for the other one.
        for node in c.nodes() {
            wait_until(
                node,
                db,
                &format!("SELECT groupArray(version) = [2] FROM ({sql})"),
                REPLICA_LAG,
            )
            .await;
        }
    }
}

#[tokio::test]
async fn insert_quorum_counts_the_replicas_of_every_shard() {
    let c = cluster();
    let _g = c.shared().await.expect("cluster up");
    let (ch1, ch2, ch3) = (c.node(0), c.node(1), c.node(2));

    // One shard of two replicas: insert_quorum=2 returns once both have the rows, so ch2 has them at
    // once, with no lag to wait out.
    let db = "c_quorum_replicated";
    create_tables(c, ChCluster::REPLICATED, db).await;
    let rows = events(10, 10, 0);
    insert_with(ch1, db, &rows, &[("insert_quorum", "2")])
        .await
        .expect("quorum insert into the replicated cluster");
    let n = count(ch2, db, "SELECT count() FROM t_local")
        .await
        .expect("count on ch2");
    assert_eq!(n, 100, "ch2 has a quorum insert's rows when it returns");

    // Two shards, the second with one replica: a quorum of 2 cannot be met there (Code 285), and the
    // insert fails; but shard 1 may have met it and kept its part (it did here): insert_quorum must not
    // exceed the replicas of the smallest shard. A retry of the same rows is exact: shard 1 drops the
    // block it already has (replicated deduplication), shard 2 stores its part.
    let db = "c_quorum_sharded";
    create_tables(c, ChCluster::SHARDED, db).await;
    let rows = events(20, 5, 0);
    let err = insert_with(ch1, db, &rows, &[("insert_quorum", "2")])
        .await
        .expect_err("a quorum of 2 on a shard with one replica fails");
    let msg = err.to_string();
    assert!(
        msg.contains("Code: 285") && msg.contains("less than requested quorum (2)"),
        "error names the unmet quorum: {msg}"
    );
    let on_shard2 = count(ch3, db, "SELECT count() FROM t_local")
        .await
        .expect("count on ch3");
    assert_eq!(on_shard2, 0, "nothing stored on the shard that failed");
    let on_shard1 = count(ch1, db, "SELECT count() FROM t_local")
        .await
        .expect("count on ch1");
    println!("after the failed quorum insert, shard 1 kept {on_shard1} of its rows");
    insert_with(ch1, db, &rows, &[("insert_quorum", "1")])
        .await
        .expect("retry with a quorum every shard can meet");
    wait_count(ch1, db, "SELECT count() FROM t", 100, REPLICA_LAG).await;
    let shard1 = count(ch1, db, "SELECT count() FROM t_local")
        .await
        .expect("count on ch1");
    assert!(
        on_shard1 == 0 || on_shard1 == shard1,
        "shard 1 kept all or nothing of its part ({on_shard1} of {shard1})"
    );
}

#[tokio::test]
async fn replica_killed_during_inserts_catches_up() {
    let c = cluster();
    let _g = c.exclusive().await.expect("cluster up");
    let (ch1, ch2) = (c.node(0), c.node(1));
    let db = "c_replica_crash";
    create_tables(c, ChCluster::REPLICATED, db).await;

    // A stream of 40 batches through ch1, while ch2 is killed and restarted.
    let batches: Vec<Vec<Event>> = (0..40).map(|b| events(5, 5, b)).collect();
    let mut ids: Vec<uuid::Uuid> = batches.iter().flatten().map(|e| e.id).collect();
    ids.sort();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stream = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut failed = Vec::new();
            for (i, batch) in batches.iter().enumerate() {
                if let Err(e) = insert(ch1, db, batch).await {
                    failed.push((i, e.to_string()));
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            failed
        })
    };
    let progress = |n: usize| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while done.load(std::sync::atomic::Ordering::SeqCst) < n {
                assert!(
                    Instant::now() < deadline,
                    "insert stream stalled before batch {n}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    progress(5).await;
    wait_until(ch2, db, "SELECT count() > 0 FROM t_local", REPLICA_LAG).await;
    tokio::task::spawn_blocking(move || ch2.kill())
        .await
        .expect("kill ch2");
    let killed_at = done.load(std::sync::atomic::Ordering::SeqCst);
    progress(killed_at + 10).await;
    let restarted = Instant::now();
    tokio::task::spawn_blocking(move || ch2.start())
        .await
        .expect("restart ch2")
        .expect("ch2 starts again");
    let failed = stream.await.expect("insert stream");
    assert!(
        failed.is_empty(),
        "inserts through ch1 go on while its replica is down: {failed:?}"
    );

    let total = ids.len() as u64;
    assert_eq!(
        count(ch1, db, "SELECT count() FROM t_local")
            .await
            .expect("count on ch1"),
        total
    );
    // A replica restarted after kill -9 waits for its old ZooKeeper session to expire before it
    // replicates again ("appears to be already active").
    wait_count(
        ch2,
        db,
        "SELECT count() FROM t_local",
        total,
        Duration::from_secs(90),
    )
    .await;
    println!("ch2 caught up {:?} after its restart", restarted.elapsed());
    assert_eq!(
        ids_in(ch2, db).await,
        ids,
        "ch2 holds exactly the inserted rows"
    );
}

#[tokio::test]
async fn shard_down_fails_inserts_and_reads_and_the_retry_is_exact() {
    let c = cluster();
    let _g = c.exclusive().await.expect("cluster up");
    let (ch1, ch2, ch3) = (c.node(0), c.node(1), c.node(2));
    let db = "c_shard_down";
    create_tables(c, ChCluster::SHARDED, db).await;
    let first = events(20, 10, 0);
    insert(ch1, db, &first)
        .await
        .expect("insert with every shard up");
    let on_shard1 = count(ch1, db, "SELECT count() FROM t_local")
        .await
        .expect("count on ch1");
    assert!(on_shard1 > 0 && on_shard1 < 200, "rows on both shards");

    tokio::task::spawn_blocking(move || ch3.kill())
        .await
        .expect("kill ch3");

    // A sync insert needs every shard: it fails, and leaves nothing on the shard that is up.
    let second = events(20, 10, 1);
    let err = insert(ch1, db, &second)
        .await
        .expect_err("a sync insert with shard 2 down fails");
    let msg = err.to_string();
    println!("insert with shard 2 down: {msg}");
    assert!(
        msg.contains("Code: 279") && msg.contains("All connection tries failed"),
        "error says shard 2 could not be reached: {msg}"
    );
    // (Small inserts, as waltrail's: the part for the shard that is up is squashed into one block and
    // written at the end, which the failure never reaches.) Both replicas synced first: a row sent to
    // ch2 would otherwise show on ch1 only later.
    for node in [ch1, ch2] {
        node.client(db)
            .query("SYSTEM SYNC REPLICA t_local")
            .execute()
            .await
            .expect("sync replica");
        assert_eq!(
            count(node, db, "SELECT count() FROM t_local")
                .await
                .expect("count on shard 1"),
            on_shard1,
            "nothing of the failed insert stored on shard 1 ({})",
            node.url()
        );
    }

    // A read through the Distributed table fails rather than answer without shard 2 (unless asked to,
    // with skip_unavailable_shards: then it is short).
    for node in [ch1, ch2] {
        let err = count(node, db, "SELECT count() FROM t")
            .await
            .expect_err("a read with shard 2 down fails");
        let msg = err.to_string();
        println!("read with shard 2 down: {msg}");
        assert!(
            msg.contains("Code: 279") && msg.contains("All connection tries failed"),
            "error says shard 2 could not be reached: {msg}"
        );
    }
    let short = ch1
        .client(db)
        .with_setting("skip_unavailable_shards", "1")
        .query("SELECT count() FROM t")
        .fetch_one::<u64>()
        .await
        .expect("a read that skips unavailable shards");
    assert_eq!(
        short, on_shard1,
        "skip_unavailable_shards answers from shard 1 alone"
    );

    // DDL on the cluster waits for every host: with ch3 down it fails after distributed_ddl_task_timeout
    // (3 s here), having run on the hosts that are up; ch3 runs it from the queue when it is back.
    let started = Instant::now();
    let err = ddl_within(
        ch1,
        &format!(
            "CREATE TABLE {db}.later ON CLUSTER {} (x UInt8) ENGINE = Log",
            ChCluster::SHARDED
        ),
        "3",
    )
    .await
    .expect_err("DDL on the cluster with ch3 down fails");
    let msg = err.to_string();
    println!(
        "DDL with shard 2 down, after {:?}: {msg}",
        started.elapsed()
    );
    assert!(
        msg.contains("Code: 159") && msg.contains("distributed_ddl_task_timeout"),
        "error says the DDL timed out: {msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the DDL gave up after its 3 s timeout, not ClickHouse's 180 s"
    );
    let later =
        format!("SELECT count() = 1 FROM system.tables WHERE database = '{db}' AND name = 'later'");
    for node in [ch1, ch2] {
        wait_until(node, "system", &later, REPLICA_LAG).await;
    }

    // ch3 back: the same insert, retried until it is accepted (in case ch3's replicated table refuses
    // writes until its old ZooKeeper session has expired; seen accepted at once here), stores every row
    // once.
    let restarted = Instant::now();
    tokio::task::spawn_blocking(move || ch3.start())
        .await
        .expect("restart ch3")
        .expect("ch3 starts again");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut refused = Vec::new();
    while let Err(e) = insert(ch1, db, &second).await {
        refused.push(e.to_string());
        assert!(
            Instant::now() < deadline,
            "the retried insert was refused for 90 s: {refused:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "retry accepted {:?} after ch3's restart, after {} refusals: {:?}",
        restarted.elapsed(),
        refused.len(),
        refused.first()
    );
    for node in c.nodes() {
        wait_count(node, db, "SELECT count() FROM t", 400, REPLICA_LAG).await;
    }
    // ch3 ran the DDL it missed.
    wait_until(ch3, "system", &later, REPLICA_LAG).await;
    let mut ids: Vec<uuid::Uuid> = first.iter().chain(&second).map(|e| e.id).collect();
    ids.sort();
    let mut stored = ids_in(ch1, db).await;
    stored.extend(ids_in(ch3, db).await);
    stored.sort();
    assert_eq!(stored, ids, "every row once, across the two shards");
}

/// How long a replica may take to fetch what another replica of its shard was sent.
const REPLICA_LAG: Duration = Duration::from_secs(10);

async fn insert_with(
    node: &ClickHouse,
    db: &str,
    rows: &[Event],
    settings: &[(&str, &str)],
) -> clickhouse::error::Result<()> {
    let mut client = node.client(db).with_setting("insert_distributed_sync", "1");
    for (k, v) in settings {
        client = client.with_setting(*k, *v);
    }
    let mut ins = client.insert::<Event>("t").await?;
    for r in rows {
        ins.write(r).await?;
    }
    ins.end().await
}

/// Rows per organization in `node`'s local table.
async fn per_org(node: &ClickHouse, db: &str) -> Vec<(String, u64)> {
    node.client(db)
        .query("SELECT org, count() FROM t_local GROUP BY org ORDER BY org")
        .fetch_all::<(String, u64)>()
        .await
        .expect("count per org in t_local")
}

/// The ids in `node`'s local table, in Rust's order.
async fn ids_in(node: &ClickHouse, db: &str) -> Vec<uuid::Uuid> {
    #[derive(clickhouse::Row, Deserialize)]
    struct Id {
        #[serde(with = "clickhouse::serde::uuid")]
        id: uuid::Uuid,
    }
    // Sorted here: ClickHouse 18.16 orders UUIDs by their second 8 bytes first, unlike Rust.
    let mut ids: Vec<uuid::Uuid> = node
        .client(db)
        .query("SELECT id FROM t_local")
        .fetch_all::<Id>()
        .await
        .expect("read ids")
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

/// Poll until `sql` (a UInt8 condition) holds on `node`.
async fn wait_until(node: &ClickHouse, db: &str, sql: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let holds = node.client(db).query(sql).fetch_one::<u8>().await;
        if holds.as_ref().is_ok_and(|&b| b == 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} on {}: not true within {within:?} ({holds:?})",
            node.url()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
