//! Faults and bad input on real servers: crashes, restarts, outages, refused starts, authentication.

mod harness;

use harness::*;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use waltrail::capture::replication::ReplicationConnection;
use waltrail::pg::{PgHost, PgParams};
use waltrail::pipeline::RunOptions;

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "kill {sig}");
}

/// Distinct stored ids, and the number of ids whose copies differ in content (must be 0).
async fn replay_consistency(env: &TestEnv) -> (u64, u64, u64) {
    let ch = env.ch();
    let distinct: u64 = ch
        .query("SELECT count(DISTINCT id) FROM audit_items")
        .fetch_one()
        .await
        .unwrap();
    let final_rows: u64 = ch
        .query("SELECT count() FROM audit_items FINAL")
        .fetch_one()
        .await
        .unwrap();
    let differing: u64 = ch
        .query(
            "SELECT count() FROM (SELECT id, uniqExact(cityHash64(toString(event_id), occurred_at_us, commit_lsn, seq, action, \
             organization_id, resource_type, resource_id, resource_display, diff, arrayStringConcat(changed_fields, ','))) AS v \
             FROM audit_items GROUP BY id HAVING v > 1)",
        )
        .fetch_one()
        .await
        .unwrap();
    (distinct, final_rows, differing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_between_insert_and_acknowledgement() {
    let env = TestEnv::new("f_kill").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let slot = format!("slot_{}", env.name);
    let dir = std::env::temp_dir();
    // Acknowledge only when the server insists: everything stored stays unconfirmed until the kill.
    let quiet = env.config_file(WORKERS, 3_600_000);
    let normal = env.config_file(WORKERS, 500);
    let mut child = spawn_bin(
        &["run", "--config", quiet.to_str().unwrap()],
        &dir.join("f_kill-1.log"),
    );
    wait_slot(&db, &slot).await;
    let before = confirmed_flush(&db, &slot).await;
    for i in 0..30 {
        db.batch_execute(&format!("INSERT INTO workers VALUES ({i}, 'o1', 'w{i}')"))
            .await
            .unwrap();
    }
    db.batch_execute("UPDATE workers SET name = name || '!' WHERE id < 5")
        .await
        .unwrap();
    env.wait_for(35).await;
    assert_eq!(
        confirmed_flush(&db, &slot).await,
        before,
        "stored but not yet acknowledged"
    );
    signal(&child, "-9");
    let _ = wait_exit(&mut child, Duration::from_secs(10));

    // Restart: Postgres replays everything after the confirmed position; ids make the replay harmless.
    let mut child = spawn_bin(
        &["run", "--config", normal.to_str().unwrap()],
        &dir.join("f_kill-2.log"),
    );
    wait_slot(&db, &slot).await;
    db.batch_execute("DELETE FROM workers WHERE id >= 25")
        .await
        .unwrap();
    env.wait_for(40).await;
    wait_all_confirmed(&db, &slot).await;
    // The running capture reports itself ready, and its progress in /metrics.
    let api = format!("http://{}", TestEnv::api_addr(&normal));
    let ready = http_status(&format!("{api}/readyz")).await;
    assert_eq!(ready, 200);
    let metrics = reqwest::get(format!("{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let written: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("waltrail_items_written_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no items counter in {metrics}"));
    assert!(written >= 5, "{metrics}");
    assert!(metrics.contains("waltrail_replication_lag_bytes"));
    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "SIGTERM exits 0, got {status:?}");
    let (distinct, final_rows, differing) = replay_consistency(&env).await;
    assert_eq!(distinct, 40, "every committed change exactly once");
    assert_eq!(final_rows, 40, "FINAL collapses replayed copies");
    assert_eq!(differing, 0, "a replay writes identical rows");
    assert_eq!(
        env.rows().await,
        40,
        "what was stored before the kill is not written again"
    );
    let actions: Vec<String> = env.items().await.into_iter().map(|i| i.action).collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "AUDIT_ACTION_DELETED")
            .count(),
        5
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_inside_a_large_transaction() {
    let env = TestEnv::new("f_kill_big").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let slot = format!("slot_{}", env.name);
    let tables = format!("{WORKERS}\n");
    let cfg_text = env.config_text_with(&tables, 500).replace(
        "batch_max_delay_ms = 50",
        "batch_max_delay_ms = 50\nbatch_max_items = 500\ninsert_max_items = 2000",
    );
    let cfg = std::env::temp_dir().join("f_kill_big.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let log = std::env::temp_dir().join("f_kill_big.log");
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    wait_slot(&db, &slot).await;
    db.batch_execute(
        "INSERT INTO workers SELECT i, 'o', 'w' || i FROM generate_series(1, 40000) i",
    )
    .await
    .unwrap();
    // Kill while the transaction is partly stored, past the first page a replay reads back (5,000 items).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = env.count().await;
        if c > 6_000 {
            assert!(c < 40_000, "too late to kill mid-transaction ({c} stored)");
            break;
        }
        assert!(Instant::now() < deadline, "nothing stored in 60 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&child, "-9");
    let _ = wait_exit(&mut child, Duration::from_secs(10));
    let partial = env.count().await;
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    env.wait_for(40_000).await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
    let (distinct, _, differing) = replay_consistency(&env).await;
    assert!(partial < 40_000);
    assert_eq!(distinct, 40_000);
    assert_eq!(differing, 0);
    assert_eq!(
        env.rows().await,
        40_000,
        "the part stored before the kill is not written again"
    );
    // The chain runs on from the stored part into the rest, and holds after merges.
    let reports = env.verified_after_merges("o").await;
    assert_eq!(reports.iter().map(|r| r.items).sum::<u64>(), 40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_outage_keeps_postgres_connection_and_loses_nothing() {
    // Own servers: this test stops ClickHouse, and a short wal_sender_timeout proves the keepalives.
    let pg = PgCluster::start("wal_sender_timeout = '2s'").expect("start Postgres");
    let ch = ClickHouse::start_new().expect("start ClickHouse");
    let env = TestEnv::on("f_ch_down", &pg, &ch).await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let run = Running::start(env.config(WORKERS));
    wait_slot(&db, "slot_f_ch_down").await;
    for i in 0..5 {
        db.execute("INSERT INTO workers VALUES ($1, 'o', 'w')", &[&i])
            .await
            .unwrap();
    }
    env.wait_for(5).await;
    let pid_before: Option<i32> = db
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'slot_f_ch_down'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    ch.kill();
    for i in 5..25 {
        db.execute("INSERT INTO workers VALUES ($1, 'o', 'w')", &[&i])
            .await
            .unwrap();
    }
    // Three times the walsender timeout with ClickHouse gone.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pid_during: Option<i32> = db
        .query_one(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'slot_f_ch_down'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        pid_during, pid_before,
        "the replication connection survived the outage"
    );
    assert_eq!(run.metrics.reconnects.load(Ordering::Relaxed), 0);
    assert!(
        run.metrics.insert_errors.load(Ordering::Relaxed) > 0,
        "inserts were failing meanwhile"
    );
    ch.start().expect("restart ClickHouse");
    env.wait_for(25).await;
    let (distinct, _, differing) = replay_consistency(&env).await;
    assert_eq!(distinct, 25);
    assert_eq!(differing, 0);
    wait_all_confirmed(&db, "slot_f_ch_down").await;
    run.stop().await.unwrap();
}

/// A large transaction goes into ClickHouse as one INSERT that stays open across its batches. ClickHouse
/// killed while it is sent: what was sent cannot be sent again, so the session starts over from the slot
/// (a reconnect, unlike a failed insert of one batch, which is retried in place); once ClickHouse is back
/// every item is there once and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_killed_during_a_large_transactions_insert() {
    let ch = ClickHouse::start_new().expect("start ClickHouse");
    let env = TestEnv::on("f_open_insert", pg(), &ch).await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let mut cfg = env.config(WORKERS);
    // Many batches for one transaction.
    cfg.capture.batch_max_bytes = 256 << 10;
    let run = Running::start(cfg);
    wait_slot(&db, "slot_f_open_insert").await;
    const N: u64 = 150_000;
    db.batch_execute(&format!(
        "INSERT INTO workers SELECT i, 'o', 'w' || i FROM generate_series(1, {N}) i"
    ))
    .await
    .unwrap();
    // Wait until the insert is under way (rows received, none stored yet), then kill ClickHouse.
    let started = Instant::now();
    while run.metrics.received_lsn.load(Ordering::Relaxed) == 0
        || run.metrics.items_written.load(Ordering::Relaxed) > 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "capture never began"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    ch.kill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ch.start().expect("restart ClickHouse");
    env.wait_for(N).await;
    wait_all_confirmed(&db, "slot_f_open_insert").await;
    assert!(
        run.metrics.reconnects.load(Ordering::Relaxed) >= 1,
        "the session started over after the open insert failed"
    );
    run.stop().await.unwrap();
    let (distinct, _, differing) = replay_consistency(&env).await;
    assert_eq!(distinct, N);
    assert_eq!(differing, 0);
    env.verified_after_merges("o").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_mid_stream() {
    let pg = PgCluster::start("").expect("start Postgres");
    let env = TestEnv::on("f_pg_restart", &pg, ch()).await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let run = Running::start(env.config(WORKERS));
    wait_slot(&db, "slot_f_pg_restart").await;
    for i in 0..5 {
        db.execute("INSERT INTO workers VALUES ($1, 'o', 'w')", &[&i])
            .await
            .unwrap();
    }
    pg.pg_ctl("restart").expect("restart Postgres");
    let db = env.pg().await;
    for i in 5..10 {
        db.execute("INSERT INTO workers VALUES ($1, 'o', 'w')", &[&i])
            .await
            .unwrap();
    }
    env.wait_for(10).await;
    assert!(
        !run.is_finished(),
        "the pipeline reconnected instead of exiting"
    );
    assert!(run.metrics.reconnects.load(Ordering::Relaxed) >= 1);
    let (distinct, _, differing) = replay_consistency(&env).await;
    assert_eq!(distinct, 10);
    assert_eq!(differing, 0);
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_slot_with_stored_items_refuses_to_start() {
    let env = TestEnv::new("f_slot_gone").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let run = Running::start(env.config(WORKERS));
    wait_slot(&db, "slot_f_slot_gone").await;
    db.batch_execute("INSERT INTO workers VALUES (1, 'o', 'w')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    db.batch_execute("SELECT pg_drop_replication_slot('slot_f_slot_gone')")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO workers VALUES (2, 'o', 'lost')")
        .await
        .unwrap();

    let refused = Running::start(env.config(WORKERS));
    let err = tokio::time::timeout(Duration::from_secs(60), refused.join())
        .await
        .expect("refuses promptly")
        .expect_err("must refuse");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("missing") && msg.contains("--accept-gap"),
        "{msg}"
    );

    let run = Running::start_with(
        env.config(WORKERS),
        RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, "slot_f_slot_gone").await;
    db.batch_execute("INSERT INTO workers VALUES (3, 'o', 'w')")
        .await
        .unwrap();
    env.wait_for(2).await;
    run.stop().await.unwrap();
}

/// A refused start leaves the store as it found it: it asks the operator to look at the store, so
/// retention (which runs beside capture in `waltrail run`) must not drop anything before capture's start
/// checks have passed. Once a start goes on, retention does its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_drops_no_partition() {
    let env = TestEnv::new("f_refused_retention").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let run = Running::start(env.config(WORKERS));
    wait_slot(&db, "slot_f_refused_retention").await;
    db.batch_execute("INSERT INTO workers VALUES (1, 'o', 'w')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
    // An expired day in the store, and a start that must be refused (the slot is gone).
    env.ch()
        .query(
            "INSERT INTO audit_items (id, organization_id, occurred_at_us, ingested_at_us, action, summary, version) \
             SELECT toUUID('eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee'), 'o', t, t, 'AUDIT_ACTION_CREATED', 'expired', 1 \
             FROM (SELECT (toInt64(toUnixTimestamp(now())) - 40 * 86400) * 1000000 AS t)",
        )
        .execute()
        .await
        .unwrap();
    db.batch_execute("SELECT pg_drop_replication_slot('slot_f_refused_retention')")
        .await
        .unwrap();
    let expired = || async {
        env.ch()
            .query("SELECT count() FROM audit_items WHERE summary = 'expired'")
            .fetch_one::<u64>()
            .await
            .unwrap()
    };
    let cfg_text = format!(
        "{}\n[retention]\ndays = 30\ncheck_interval_s = 1\n[api]\nenabled = false\n",
        env.config_text(WORKERS)
    );
    let cfg = std::env::temp_dir().join("f_refused_retention.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let log = std::env::temp_dir().join("f_refused_retention.log");
    let mut child = spawn_bin(&["run", "--config", cfg.to_str().unwrap()], &log);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!status.success() && out.contains("--accept-gap"), "{out}");
    assert_eq!(
        expired().await,
        1,
        "the refused start dropped a partition: {out}"
    );
    // The start that goes on drops the expired day.
    let mut child = spawn_bin(
        &["run", "--config", cfg.to_str().unwrap(), "--accept-gap"],
        &log,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while expired().await > 0 {
        assert!(Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(20)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_in_use_is_named() {
    let env = TestEnv::new("f_slot_busy").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let run = Running::start(env.config(WORKERS));
    wait_slot(&db, "slot_f_slot_busy").await;
    let cfg = env.config(WORKERS);
    let mut repl = ReplicationConnection::connect(&waltrail::pg::params(&cfg).unwrap())
        .await
        .unwrap();
    let sql = waltrail::pg::connect(&cfg).await.unwrap();
    let err = waltrail::capture::provision::ensure_slot(
        &cfg,
        &sql,
        &mut repl,
        &Default::default(),
        0,
        false,
    )
    .await
    .expect_err("slot is busy");
    let msg = err.to_string();
    assert!(msg.contains("in use by another process (pid"), "{msg}");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tables_stop_with_the_fix() {
    let env = TestEnv::new("f_tables").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE nokey (a int, b text);
         CREATE TABLE gen (id int PRIMARY KEY, a int, total int GENERATED ALWAYS AS (a * 2) STORED)",
    )
    .await
    .unwrap();
    let cases = [
        ("[[tables]]\ntable = \"nope\"\nresource_type = \"RESOURCE_TYPE_HOOK\"", "does not exist"),
        ("[[tables]]\ntable = \"nokey\"\nresource_type = \"RESOURCE_TYPE_HOOK\"", "no primary key"),
        (
            "[[tables]]\ntable = \"nokey\"\nresource_type = \"RESOURCE_TYPE_HOOK\"\nid_columns = [\"a\"]\ndisplay_column = \"zzz\"",
            "no column \"zzz\"",
        ),
        // Postgres never sends a generated column: every change would look as if it had been dropped.
        (
            "[[tables]]\ntable = \"gen\"\nresource_type = \"RESOURCE_TYPE_HOOK\"\ndisplay_column = \"total\"",
            "generated column",
        ),
        // Without leave to set REPLICA IDENTITY FULL, a table without any identity is never published:
        // Postgres would refuse the platform's updates and deletes on it.
        (
            "[[tables]]\ntable = \"nokey\"\nresource_type = \"RESOURCE_TYPE_HOOK\"\nid_columns = [\"a\"]\n#no-identity-full",
            "would refuse the platform's UPDATEs and DELETEs",
        ),
    ];
    for (tables, expect) in cases {
        let mut cfg = env.config(tables);
        if tables.ends_with("#no-identity-full") {
            cfg.postgres.set_replica_identity_full = false;
        }
        let err = tokio::time::timeout(Duration::from_secs(60), Running::start(cfg).join())
            .await
            .expect("stops promptly")
            .expect_err("must not start");
        let msg = format!("{err:#}");
        assert!(msg.contains(expect), "expected {expect:?} in {msg}");
    }
    // A copy of the checkpoints that could never be written is refused, not left silently empty.
    let mut cfg = env.config(
        "[[tables]]\ntable = \"nokey\"\nresource_type = \"RESOURCE_TYPE_HOOK\"\nid_columns = [\"a\"]",
    );
    cfg.integrity.checkpoint_file = Some("/nonexistent-waltrail-dir/checkpoints.jsonl".into());
    let err = tokio::time::timeout(Duration::from_secs(60), Running::start(cfg).join())
        .await
        .expect("stops promptly")
        .expect_err("must not start");
    assert!(format!("{err:#}").contains("cannot be appended"), "{err:#}");
    // The platform's writes to it still work: it was never published.
    db.batch_execute(
        "INSERT INTO nokey VALUES (1, 'x'); UPDATE nokey SET b = 'y'; DELETE FROM nokey",
    )
    .await
    .unwrap();
    let findings = waltrail::capture::check::postgres(&env.config(
        "[[tables]]\ntable = \"gen\"\nresource_type = \"RESOURCE_TYPE_HOOK\"\ndisplay_column = \"total\"",
    ))
    .await;
    assert!(
        findings
            .iter()
            .any(|f| f.what.contains("generated columns")
                && f.status == waltrail::finding::Status::Fail),
        "{findings:#?}"
    );
    // With id_columns a table without primary key is fine.
    let tables = "[[tables]]\ntable = \"nokey\"\nresource_type = \"RESOURCE_TYPE_HOOK\"\nid_columns = [\"a\"]";
    let run = Running::start(env.config(tables));
    wait_slot(&db, "slot_f_tables").await;
    db.batch_execute("INSERT INTO nokey VALUES (7, 'x')")
        .await
        .unwrap();
    env.wait_for(1).await;
    assert_eq!(env.items().await[0].resource_id, "7");
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_authentication_md5_and_scram() {
    let env = TestEnv::new("f_auth").await;
    let db = env.pg().await;
    db.batch_execute(
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'md5_user') THEN
             SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN SUPERUSER PASSWORD 'md5-pw';
           END IF;
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'scram_user') THEN
             SET password_encryption = 'scram-sha-256'; CREATE ROLE scram_user LOGIN SUPERUSER PASSWORD 'scram-pw';
           END IF;
         END $$",
    )
    .await
    .unwrap();
    let params = |user: &str, password: Option<&str>| PgParams {
        ssl_mode: waltrail::vocab::SslMode::Disable,
        tls: None,
        host: PgHost::Tcp("127.0.0.1".into()),
        port: env.pg_port,
        user: user.into(),
        password: password.map(str::to_owned),
        dbname: env.name.clone(),
        connect_timeout: Duration::from_secs(10),
    };
    for (user, pw) in [
        ("md5_user", "md5-pw"),
        ("scram_user", "scram-pw"),
        ("postgres", "unused"),
    ] {
        let mut c = ReplicationConnection::connect(&params(user, Some(pw)))
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        let id = c.identify_system().await.unwrap();
        assert!(!id.system_id.is_empty());
        assert_eq!(id.dbname.as_deref(), Some(env.name.as_str()));
    }
    for user in ["md5_user", "scram_user"] {
        let err = ReplicationConnection::connect(&params(user, Some("wrong")))
            .await
            .err()
            .expect("wrong password");
        assert!(
            err.to_string().contains("password authentication failed"),
            "{user}: {err}"
        );
        let err = ReplicationConnection::connect(&params(user, None))
            .await
            .err()
            .expect("no password");
        assert!(
            err.to_string().contains("WALTRAIL_PG_PASSWORD"),
            "{user}: {err}"
        );
    }
    // The whole pipeline as the SCRAM user, password from the connection string.
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let text = env
        .config_text(WORKERS)
        .replace("user=postgres", "user=scram_user password=scram-pw");
    let cfg = waltrail::config::Config::parse(&text).unwrap();
    let run = Running::start(cfg);
    wait_slot(&db, "slot_f_auth").await;
    db.batch_execute("INSERT INTO workers VALUES (1, 'o', 'w')")
        .await
        .unwrap();
    env.wait_for(1).await;
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_problems_with_fixes() {
    let env = TestEnv::new("f_check").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let good = env.config_file(WORKERS, 1000);
    let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["check", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[ok  ] wal_level = logical"), "{text}");
    assert!(text.contains("[ok  ] role has REPLICATION"), "{text}");
    assert!(text.contains("not at REPLICA IDENTITY FULL"), "{text}");
    assert!(text.contains("ClickHouse reachable"), "{text}");
    assert!(out.status.success(), "warnings only: {text}");
    // A preflight creates nothing: without an event secret, check says where run would create it.
    let dir = good.parent().unwrap().join("f_check_secret");
    std::fs::create_dir_all(&dir).unwrap();
    let no_secret = dir.join("waltrail.toml");
    let text = std::fs::read_to_string(&good).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("event_secret"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&no_secret, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["check", "--config", no_secret.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("waltrail-event.secret does not exist yet: run creates it"),
        "{stdout}"
    );
    assert!(
        !dir.join("waltrail-event.secret").exists(),
        "check created the secret"
    );

    let bad_tables = format!(
        "{WORKERS}\n[[tables]]\ntable = \"ghost\"\nresource_type = \"RESOURCE_TYPE_HOOK\"\n"
    );
    let dead_port = free_port();
    let text = env
        .config_text(&bad_tables)
        .replace(&env.ch_url, &format!("http://127.0.0.1:{dead_port}"));
    let bad = std::env::temp_dir().join("f_check_bad.toml");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        text.contains("[FAIL] table public.ghost does not exist"),
        "{text}"
    );
    assert!(text.contains("[FAIL] ClickHouse unreachable"), "{text}");
    assert!(text.matches("fix:").count() >= 2, "{text}");

    // Postgres unreachable.
    let text = env.config_text(WORKERS).replace(
        &format!("port={}", env.pg_port),
        &format!("port={dead_port}"),
    );
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("[FAIL] Postgres reachable"), "{text}");
}

#[test]
fn malformed_config_names_line_and_key() {
    let dir = std::env::temp_dir();
    let cases = [
        ("[postgres]\nurl = \"x\"\nslot = 5\n", "line 3"),
        ("[postgres]\nurl = \"host=a user=b\"\n[clickhouse]\n[[tables]]\ntable = \"t\"\nresource_type = \"RESOURCE_TYPE_X\"\nredact_colums = [\"a\"]\n", "redact_colums"),
        ("[postgres]\nurl = \"host=a user=b\"\n[clickhouse]\n", "no [[tables]]"),
        ("[postgres\n", "line 1"),
    ];
    for (i, (text, expect)) in cases.iter().enumerate() {
        let p = dir.join(format!("bad-config-{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
            .args(["check", "--config", p.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(expect), "expected {expect:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

async fn http_status(url: &str) -> u16 {
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(url).await {
            return r.status().as_u16();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never answered");
}

/// A CA and a server certificate for 127.0.0.1/localhost, made with openssl for this test.
fn make_certs(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("cd '{}' && {args}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "openssl: {args}");
    };
    run("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=waltrail-test-ca");
    run("openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other-ca.pem -days 2 -subj /CN=someone-else");
    run("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost");
    run("printf 'subjectAltName=DNS:localhost,IP:127.0.0.1' > ext.cnf");
    run("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf");
    run("chmod 600 server.key && (id postgres >/dev/null 2>&1 && [ $(id -u) = 0 ] && chown postgres server.key server.crt || true)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_postgres_verifies_the_server() {
    let certs = std::env::temp_dir().join(format!("waltrail-certs-{}", std::process::id()));
    make_certs(&certs);
    let pg = PgCluster::start(&format!(
        "ssl = on\nssl_cert_file = '{0}/server.crt'\nssl_key_file = '{0}/server.key'",
        certs.display()
    ))
    .expect("start Postgres with TLS");
    let env = TestEnv::on("f_tls", &pg, ch()).await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    let with_tls = |mode: &str, root: &str| {
        let text = env.config_text(WORKERS).replace(
            "status_interval_ms = 1000",
            &format!(
                "status_interval_ms = 1000\nsslmode = \"{mode}\"\nsslrootcert = \"{}/{root}\"",
                certs.display()
            ),
        );
        waltrail::config::Config::parse(&text).unwrap()
    };
    // The wrong root: refused, and the error says why.
    let bad = with_tls("verify-full", "other-ca.pem");
    let err = ReplicationConnection::connect(&waltrail::pg::params(&bad).unwrap())
        .await
        .err()
        .expect("untrusted server");
    assert!(
        err.to_string().contains("TLS") && err.to_string().contains("certificate"),
        "{err}"
    );
    let err = waltrail::pg::connect(&bad)
        .await
        .expect_err("untrusted server");
    assert!(
        format!("{err:#}").to_lowercase().contains("certificate"),
        "{err:#}"
    );

    // The right root: the whole pipeline over TLS, both the replication and the SQL connections.
    let run = Running::start(with_tls("verify-full", "ca.pem"));
    wait_slot(&db, "slot_f_tls").await;
    db.batch_execute("INSERT INTO workers VALUES (1, 'o', 'w')")
        .await
        .unwrap();
    env.wait_for(1).await;
    let walsender_ssl: bool = db
        .query_one(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_replication_slots r ON r.active_pid = s.pid WHERE r.slot_name = 'slot_f_tls'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(walsender_ssl, "the replication connection is encrypted");
    let sql = waltrail::pg::connect(&with_tls("verify-ca", "ca.pem"))
        .await
        .unwrap();
    let ssl: bool = sql
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "SQL connections are encrypted too");
    run.stop().await.unwrap();

    // A server without TLS: sslmode=require refuses it; prefer (the default) falls back.
    let plain = TestEnv::new("f_tls_plain").await;
    let text = plain.config_text(WORKERS).replace(
        "status_interval_ms = 1000",
        "status_interval_ms = 1000\nsslmode = \"require\"",
    );
    let cfg = waltrail::config::Config::parse(&text).unwrap();
    let err = ReplicationConnection::connect(&waltrail::pg::params(&cfg).unwrap())
        .await
        .err()
        .expect("no TLS there");
    assert!(err.to_string().contains("does not accept TLS"), "{err}");
}

/// QA48a L1: a first start waits on open transactions twice, and said nothing: the ALTER TABLE …
/// REPLICA IDENTITY FULL of a mapped table waits for the table's lock (a session that wrote it and idles in
/// its transaction), and Postgres makes a new slot only once the transactions running when it began have
/// ended (any session's, or a prepared transaction). Each wait is now said with who holds it, and the
/// start goes on when they end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_waiting_on_open_transactions_says_so() {
    let env = TestEnv::new("f_slot_wait").await;
    let db = env.pg().await;
    db.batch_execute(WORKERS_DDL).await.unwrap();
    db.batch_execute("CREATE TABLE other (id int)")
        .await
        .unwrap();
    let on_table = env.pg().await;
    on_table
        .batch_execute("BEGIN; INSERT INTO workers VALUES (9, 'o1', 'held open')")
        .await
        .unwrap();
    let elsewhere = env.pg().await;
    elsewhere
        .batch_execute("BEGIN; INSERT INTO other VALUES (9)")
        .await
        .unwrap();
    let path = env.config_file(WORKERS, 1000);
    let log = std::env::temp_dir().join(format!("f_slot_wait-{}.log", std::process::id()));
    let mut child = spawn_bin(&["run", "--config", path.to_str().unwrap()], &log);
    let said = |what: &'static str| {
        let log = log.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(line) = text.lines().find(|l| l.contains(what)) {
                    return line.to_owned();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no word of {what:?}: {text}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let line = said("setting REPLICA IDENTITY FULL waits").await;
    assert!(
        line.contains("idle in transaction"),
        "the holder is named: {line}"
    );
    on_table.batch_execute("ROLLBACK").await.unwrap();
    let line = said("creating the replication slot waits").await;
    assert!(
        line.contains("session "),
        "the open session is named: {line}"
    );
    elsewhere.batch_execute("ROLLBACK").await.unwrap();
    wait_slot(&db, "slot_f_slot_wait").await;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
