//! Several Postgres sources, one trail: two Postgres clusters captured by two `waltrail run` processes into
//! one ClickHouse database, read back as one trail by an asc poller, `/metrics` and `waltrail check`.

mod harness;

use harness::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;
use waltrail::audit::item::AuditItem;
use waltrail::store::row::{now_us, ItemRow};

const ADMIN_KEY: &str = "sources-admin-key-org1";

const TABLES: &str = r#"
[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
organization_column = "org_id"
display_column = "name"
"#;
const DDL: &str = "CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)";

/// Source ids are free text in the config: these carry what a cursor, a SQL bind or a Prometheus label
/// could trip on (a colon, a comma, quotes, a backslash, non-ASCII).
const SOURCE_A: &str = r#"pg-a:"east",1\"#;
const SOURCE_B: &str = "pg-b/ünïcødé 'west'";

/// The config of one source's `waltrail run`: the env's, with its own source id and API port.
fn config_file(env: &TestEnv, source_id: &str, tag: &str) -> (PathBuf, String) {
    let port = free_port();
    let text = env
        .config_text(TABLES)
        .replace(
            &format!("source_id = \"test-{}\"", env.name),
            &format!("source_id = {}", toml::Value::String(source_id.into())),
        )
        .replace("batch_max_delay_ms = 50", "batch_max_delay_ms = 20");
    assert!(text.contains(&toml::Value::String(source_id.into()).to_string()));
    let text = format!(
        "{text}\n[api]\nlisten = \"127.0.0.1:{port}\"\nrate_limit_per_minute = 100000\n\n[[api.keys]]\nname = \"siem\"\nsha256 = \"{}\"\norg_id = \"org1\"\nrole = \"admin\"\n",
        waltrail::api::auth::sha256_hex(ADMIN_KEY)
    );
    let dir = std::env::temp_dir().join(format!("waltrail-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, text).expect("write config");
    (path, format!("http://127.0.0.1:{port}"))
}

/// The binary this test runs: a copy taken once, so that a rebuild while the test runs (another checkout
/// sharing the target directory) cannot swap it between a process and its restart.
fn bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let copy =
            std::env::temp_dir().join(format!("waltrail-sources-bin-{}", std::process::id()));
        std::fs::copy(env!("CARGO_BIN_EXE_waltrail"), &copy).expect("copy the waltrail binary");
        copy
    })
}

/// A `waltrail run` process, killed when dropped: a failing test does not leave it running.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_run(cfg: &Path, log: &Path) -> Run {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    // A process forked by another test while the copy was being written holds it open for writing until it
    // execs ("Text file busy"): that passes in a moment.
    for _ in 0..50 {
        match Command::new(bin())
            .args(["run", "--config", cfg.to_str().expect("path")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f.try_clone().expect("dup"))
            .spawn()
        {
            Ok(child) => return Run(child),
            Err(e) if e.raw_os_error() == Some(26) => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("spawn waltrail run: {e}"),
        }
    }
    panic!("spawn waltrail run: the binary stayed busy for 5 s")
}

fn stop(run: &mut Run, sig: &str) {
    let child = &mut run.0;
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        assert!(Instant::now() < deadline, "waltrail did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET` an API path; panics unless it answers 200.
async fn get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let r = http
        .get(format!("{base}{path}"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("JSON");
    assert_eq!(status, 200, "{path}: {v}");
    v
}

async fn wait_api(http: &reqwest::Client, base: &str) {
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("API at {base} never answered");
}

/// One source's writer: `n` transactions, each creating a gateway `<tag>-<i>`, every fifth also renaming
/// the one before it and every seventh creating two at once. Returns what it did, as (resource id, action).
async fn write(db: tokio_postgres::Client, tag: &str, n: usize) -> Vec<(String, String)> {
    let mut done = Vec::new();
    for i in 0..n {
        let mut sql =
            format!("BEGIN; INSERT INTO gateways VALUES ('{tag}-{i}', 'org1', 'gw {i}');");
        done.push((format!("{tag}-{i}"), "AUDIT_ACTION_CREATED".to_owned()));
        if i % 5 == 4 {
            sql.push_str(&format!(
                "UPDATE gateways SET name = 'renamed' WHERE id = '{tag}-{}';",
                i - 1
            ));
            done.push((
                format!("{tag}-{}", i - 1),
                "AUDIT_ACTION_UPDATED".to_owned(),
            ));
        }
        if i % 7 == 6 {
            sql.push_str(&format!(
                "INSERT INTO gateways VALUES ('{tag}-{i}b', 'org1', 'twin');"
            ));
            done.push((format!("{tag}-{i}b"), "AUDIT_ACTION_CREATED".to_owned()));
        }
        sql.push_str("COMMIT;");
        db.batch_execute(&sql).await.expect("write");
        tokio::time::sleep(Duration::from_millis(3 + (i % 4) as u64 * 4)).await;
    }
    done
}

/// Ids in the store, and the source of each, read straight from ClickHouse.
async fn stored(env: &TestEnv) -> HashMap<Uuid, String> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct R {
        #[serde(with = "clickhouse::serde::uuid")]
        id: Uuid,
        source_id: String,
    }
    env.ch()
        .query("SELECT id, any(source_id) FROM audit_items GROUP BY id")
        .fetch_all::<R>()
        .await
        .expect("read ids")
        .into_iter()
        .map(|r| (r.id, r.source_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sources_one_trail_a_poller_sees_every_item_once() {
    two_sources_one_trail(None).await;
}

/// The same on a ClickHouse cluster of two shards (the harness's `sharded`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sources_one_trail_on_a_cluster() {
    let cluster = cluster();
    let _shared = cluster.shared().await.expect("cluster up");
    two_sources_one_trail(Some(cluster)).await;
}

async fn two_sources_one_trail(cluster: Option<&ChCluster>) {
    // Two clusters (the harness's and one of this test's), one ClickHouse database.
    let pg_b = PgCluster::start("").expect("a second Postgres cluster");
    let (a, b) = match cluster {
        None => (
            TestEnv::on("sources", pg(), ch()).await,
            TestEnv::on("sources", &pg_b, ch()).await,
        ),
        Some(c) => (
            TestEnv::on_cluster("sources_cl", pg(), c, ChCluster::SHARDED, "").await,
            TestEnv::on_cluster("sources_cl", &pg_b, c, ChCluster::SHARDED, "").await,
        ),
    };
    assert_eq!(a.ch_db, b.ch_db);
    let (db_a, db_b) = (a.pg().await, b.pg().await);
    db_a.batch_execute(DDL).await.unwrap();
    db_b.batch_execute(DDL).await.unwrap();
    // Two fresh clusters write about the same LSNs; move B's far ahead, as two real databases' would be,
    // so that comparing LSNs across sources (one position for the trail) would skip all of A's items.
    // (Five segments: the harness's cluster, A's, also takes the other tests' writes.)
    for _ in 0..5 {
        db_b.batch_execute("CREATE TABLE filler (); DROP TABLE filler; SELECT pg_switch_wal();")
            .await
            .unwrap();
    }
    // Files named by test: the single-server and the cluster variants run side by side.
    let (cfg_a, api) = config_file(&a, SOURCE_A, &format!("{}-a", a.name));
    let (cfg_b, _) = config_file(&b, SOURCE_B, &format!("{}-b", b.name));
    let logs = std::env::temp_dir().join(format!("waltrail-sources-{}", std::process::id()));
    let (log_a, log_b) = (
        logs.join(format!("{}-a.log", a.name)),
        logs.join(format!("{}-b.log", b.name)),
    );
    let mut run_a = spawn_run(&cfg_a, &log_a);
    let mut run_b = spawn_run(&cfg_b, &log_b);
    wait_slot(&db_a, &format!("slot_{}", a.name)).await;
    wait_slot(&db_b, &format!("slot_{}", b.name)).await;
    let http = reqwest::Client::new();
    wait_api(&http, &api).await;

    // Items from before the poller starts are not news to it.
    db_a.batch_execute("INSERT INTO gateways VALUES ('old-a', 'org1', 'old')")
        .await
        .unwrap();
    db_b.batch_execute("INSERT INTO gateways VALUES ('old-b', 'org1', 'old')")
        .await
        .unwrap();
    a.wait_for(2).await;
    let before: HashSet<Uuid> = stored(&a).await.into_keys().collect();
    let first = get(&http, &api, "/api/v1/orgs/org1/audit_logs").await;
    let sources: HashSet<&str> = first["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["data"]["source_id"].as_str().unwrap())
        .collect();
    assert_eq!(sources, HashSet::from([SOURCE_A, SOURCE_B]));
    let mut cursor = first["data"]["poll_cursor"].as_str().unwrap().to_owned();

    // Both sources take writes at once while one poller walks the asc cursor, small pages so that they cut
    // through both sources' items; source B's capture is killed (-9) midway and started again, so some of
    // its items are stored twice with later ingestion times.
    let n = 120;
    let mut writers = Some((
        tokio::spawn(write(a.pg().await, "a", n)),
        tokio::spawn(write(b.pg().await, "b", n)),
    ));
    let mut seen: Vec<Value> = Vec::new();
    let mut given: HashSet<String> = HashSet::new();
    let mut killed = false;
    let mut quiet_polls = 0;
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut expected: Option<(usize, Vec<(String, String)>)> = None;
    loop {
        if Instant::now() > deadline {
            panic!(
                "the poller never caught up: {} items polled, {} stored, {:?} written; see {}",
                seen.len(),
                stored(&a).await.len(),
                expected.as_ref().map(|e| e.0),
                logs.display()
            );
        }
        let page = get(
            &http,
            &api,
            &format!("/api/v1/orgs/org1/audit_logs?order=asc&limit=7&cursor={cursor}"),
        )
        .await;
        let items = page["data"]["items"].as_array().unwrap().clone();
        cursor = page["data"]["next_cursor"].as_str().unwrap().to_owned();
        assert!(!cursor.is_empty(), "an asc page always gives a cursor");
        if !killed && seen.len() > 40 {
            stop(&mut run_b, "-KILL");
            run_b = spawn_run(&cfg_b, &log_b);
            killed = true;
        }
        if items.is_empty() {
            quiet_polls += 1;
        } else {
            quiet_polls = 0;
        }
        for i in items {
            let id = i["id"].as_str().unwrap().to_owned();
            assert!(given.insert(id), "an item was given twice: {i}");
            seen.push(i);
        }
        if writers
            .as_ref()
            .is_some_and(|(wa, wb)| wa.is_finished() && wb.is_finished())
        {
            if let Some((wa, wb)) = writers.take() {
                let mut done = wa.await.expect("writer a");
                done.extend(wb.await.expect("writer b"));
                expected = Some((done.len(), done));
            }
        }
        if let Some((total, _)) = &expected {
            // Everything written is stored, and the poller has been told nothing new twice since.
            if stored(&a).await.len() >= total + before.len() && quiet_polls >= 2 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let (_, written) = expected.unwrap();

    // Every item stored after the poller started, exactly once: compared by id with the store, and by
    // (resource, action) with what the writers did.
    let polled_ids: Vec<Uuid> = seen
        .iter()
        .map(|i| i["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let distinct: HashSet<Uuid> = polled_ids.iter().copied().collect();
    assert_eq!(distinct.len(), polled_ids.len(), "an item was given twice");
    let in_store = stored(&a).await;
    let news: HashSet<Uuid> = in_store
        .keys()
        .filter(|id| !before.contains(id))
        .copied()
        .collect();
    assert_eq!(
        distinct, news,
        "the poller saw exactly the items stored after it started"
    );
    let mut polled_changes: Vec<(String, String)> = seen
        .iter()
        .map(|i| {
            (
                i["resource_id"].as_str().unwrap().to_owned(),
                i["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut written = written;
    polled_changes.sort();
    written.sort();
    assert_eq!(polled_changes, written);
    // Each source's items came in its commit order.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    for i in &seen {
        let source = i["data"]["source_id"].as_str().unwrap().to_owned();
        let at = lsn(i["data"]["commit_lsn"].as_str().unwrap());
        let prev = last.insert(source.clone(), at).unwrap_or(0);
        assert!(prev <= at, "{source}: {at:X} after {prev:X}");
    }
    assert_eq!(
        last.keys().map(String::as_str).collect::<Vec<_>>(),
        [SOURCE_A, SOURCE_B]
    );
    assert!(
        last[SOURCE_A] + (32 << 20) < last[SOURCE_B],
        "the sources' LSNs are far apart: {last:X?}"
    );
    assert!(
        std::fs::read_to_string(&log_b)
            .unwrap_or_default()
            .matches("streaming")
            .count()
            >= 2,
        "source B's capture was restarted"
    );

    // A cursor from before this version (one position for the trail) still works, as that position in every
    // source; a garbled one is refused, naming the parameter.
    use base64::Engine;
    let old = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
        "v2:a:0:0:{}:{}",
        Uuid::nil(),
        now_us() - 60_000_000
    ));
    let page = get(
        &http,
        &api,
        &format!("/api/v1/orgs/org1/audit_logs?order=asc&limit=100&cursor={old}"),
    )
    .await;
    let sources: HashSet<&str> = page["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["data"]["source_id"].as_str().unwrap())
        .collect();
    assert_eq!(sources, HashSet::from([SOURCE_A, SOURCE_B]));
    let mut garbled = cursor.clone();
    garbled.truncate(garbled.len() - 3);
    let r = http
        .get(format!(
            "{api}/api/v1/orgs/org1/audit_logs?order=asc&cursor={garbled}"
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["msg"],
        "invalid parameter cursor: not a cursor this API issued"
    );

    // Each source's ingestion times follow its commit order (earliest copy of each item).
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Ing {
        source_id: String,
        t: i64,
    }
    let ing = a
        .ch()
        .query(
            "SELECT source_id, min(ingested_at_us) AS t FROM audit_items GROUP BY source_id, id, commit_lsn, seq \
             ORDER BY source_id, commit_lsn, seq, id",
        )
        .fetch_all::<Ing>()
        .await
        .unwrap();
    for w in ing.windows(2) {
        if w[0].source_id == w[1].source_id {
            assert!(w[0].t <= w[1].t, "{}: ingestion went back", w[0].source_id);
        }
    }

    // /metrics (of either process; each reads every source's heartbeat) and check list both sources; a
    // source whose reports stopped is flagged.
    waltrail::store::sources::report(
        &a.ch(),
        &waltrail::store::sources::SourceReport {
            source_id: "retired-db".into(),
            confirmed_lsn: 16,
            server_lsn: 16,
            last_commit_time_us: 0,
            reported_at_us: (now_us() - 600_000_000) as u64,
            host: "old-host".into(),
            version: "0.0.1".into(),
            confirm_bound_lsn: 0,
            redaction_baseline: String::new(),
            pending_gaps: String::new(),
            publication_stamp: String::new(),
        },
    )
    .await
    .unwrap();
    let label_a = r#"source_id="pg-a:\"east\",1\\""#;
    let label_b = r#"source_id="pg-b/ünïcødé 'west'""#;
    let gauge = |metrics: &str, name: &str, label: &str| -> Option<f64> {
        let prefix = format!("{name}{{{label}}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().expect("a number"))
    };
    // Reports come every 5 s and are read every 2 s: wait for both sources' reports after their commits.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = http
            .get(format!("{api}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let current = [label_a, label_b].iter().all(|l| {
            gauge(&m, "waltrail_source_heartbeat_age_seconds", l).is_some_and(|a| a < 30.0)
                && gauge(&m, "waltrail_source_last_commit_timestamp_seconds", l)
                    .is_some_and(|t| t > 1e9)
                && gauge(&m, "waltrail_source_pending_bytes", l).is_some()
                && gauge(&m, "waltrail_source_confirmed_lsn", l).is_some_and(|c| c > 0.0)
        });
        let retired = gauge(
            &m,
            "waltrail_source_heartbeat_age_seconds",
            r#"source_id="retired-db""#,
        );
        if current && retired.is_some() {
            assert!(retired >= Some(600.0), "{m}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both sources' current figures, and the retired one's, in /metrics:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = Command::new(bin())
        .args(["check", "--config", cfg_a.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for source in [SOURCE_A, SOURCE_B] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("source {source:?}: confirmed")))
            .unwrap_or_else(|| panic!("{source} in\n{text}"));
        assert!(line.starts_with("[ok  ]"), "{line}");
        assert!(line.contains("bytes pending, last commit 20"), "{line}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("[warn] source \"retired-db\": no heartbeat for")),
        "{text}"
    );

    stop(&mut run_a, "-TERM");
    stop(&mut run_b, "-TERM");
}

/// A source's ingestion times never go back, even when the clock did: the store holds an item of this
/// source stored "later" than now (the clock stepped back an hour since), and capture starts from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_times_start_from_the_store_after_a_clock_step_back() {
    let env = TestEnv::new("sources_clock").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    let run = Running::start(env.config(TABLES));
    wait_slot(&db, "slot_sources_clock").await;
    db.batch_execute("INSERT INTO gateways VALUES ('g1', 'org1', 'one')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    let ahead = now_us() + 3_600_000_000;
    let item = AuditItem {
        id: Uuid::new_v4(),
        event_id: Uuid::new_v4(),
        source_id: format!("test-{}", env.name),
        occurred_at_us: now_us(),
        commit_lsn: 1,
        xid: 1,
        seq: 0,
        action: "AUDIT_ACTION_CREATED".into(),
        actor: Default::default(),
        organization_id: "org1".into(),
        project_id: String::new(),
        resource_type: "RESOURCE_TYPE_GATEWAY".into(),
        resource_id: "g0".into(),
        resource_display: "zero".into(),
        changed_fields: vec![],
        diff: "{}".into(),
        table_name: "public.gateways".into(),
        summary: "stored while the clock was an hour ahead".into(),
        platform_wide: false,
    };
    waltrail::store::writer::insert_batch(&env.ch(), &[ItemRow::from_item(item, ahead)])
        .await
        .unwrap();
    let run = Running::start(env.config(TABLES));
    wait_slot(&db, "slot_sources_clock").await;
    db.batch_execute("INSERT INTO gateways VALUES ('g2', 'org1', 'two')")
        .await
        .unwrap();
    env.wait_for(3).await;
    run.stop().await.unwrap();
    let t = |rid: &'static str| {
        let ch = env.ch();
        async move {
            ch.query("SELECT min(ingested_at_us) FROM audit_items WHERE resource_id = ?")
                .bind(rid)
                .fetch_one::<i64>()
                .await
                .unwrap()
        }
    };
    assert!(t("g1").await < ahead, "stored before the step");
    assert!(
        t("g2").await >= ahead,
        "the next item is not stored 'before' what the store holds"
    );
}
