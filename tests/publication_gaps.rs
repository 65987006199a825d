//! A publication dropped, re-created or edited behind capture's back, and how `--accept-gap` accepts what
//! that lost (QA40): every record's positions hold the loss, one acceptance covers the drop it was told
//! of, and nothing else is taken for it.

mod harness;

use harness::*;
use std::sync::atomic::Ordering;
use std::time::Duration;
use waltrail::config::Config;
use waltrail::pipeline::RunOptions;

const TABLES: &str = r#"
[[tables]]
table = "events"
resource_type = "RESOURCE_TYPE_EVENT"
organization_column = "org_id"
"#;

const DDL: &str = "CREATE TABLE events (id int PRIMARY KEY, org_id text, pad text); \
                   ALTER TABLE events REPLICA IDENTITY FULL";

fn accepting() -> RunOptions {
    RunOptions {
        accept_gap: true,
        ..Default::default()
    }
}

async fn flush_lsn(db: &tokio_postgres::Client) -> u64 {
    let n: i64 = db
        .query_one(
            "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    n as u64
}

fn hex(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff)
}

/// What a run did with a stop: `Ok(msg)` it stopped with `msg`; `Err(())` it accepted (moved the slot).
async fn outcome(env: &TestEnv, run: Running, secs: u64) -> (Option<Running>, Result<String, ()>) {
    for _ in 0..secs * 10 {
        if run.is_finished() {
            return (None, Ok(run.stops_with().await));
        }
        if env
            .items()
            .await
            .iter()
            .any(|i| i.summary.contains("moved past them"))
        {
            return (Some(run), Err(()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("neither stopped nor accepted within {secs}s");
}

fn slow(cfg: &mut Config) {
    // Capture takes a while to store a backlog, so Postgres is held back while sending it.
    cfg.capture.batch_max_items = 20;
    cfg.capture.buffer_bytes = 64 * 1024;
    cfg.capture.channel_capacity = 16;
    // The drop is met by the stream, not by a look at the catalog.
    cfg.postgres.watch_interval_ms = 600_000;
}

/// QA39 M3: a drop made after an --accept-gap start is refused. Attack: while the start replays a backlog
/// written before it (ClickHouse held for 3 s so Postgres is blocked sending it, having reported only
/// positions below the WAL's end at the start), drop, write, create again. Held: Postgres 15's walsender
/// sends a keepalive (its read position, at least the start's end) whenever it reads past the flush
/// position it last cached, so the stop comes after a report past `accept_before`, and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_gap_refuses_a_drop_made_while_a_backlog_replays() {
    let env = TestEnv::new("pg_backlog_drop").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    let run = Running::start(env.config(TABLES));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1', '')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "first").await;
    run.stop().await.unwrap();
    // A backlog written while capture was stopped (nothing wrong with it).
    db.batch_execute(
        "INSERT INTO events SELECT g, 'org1', repeat('x', 2000) FROM generate_series(10, 20009) g",
    )
    .await
    .unwrap();
    // And, as on any live server, something else after it (a table capture does not map).
    db.batch_execute("CREATE TABLE other (x int); INSERT INTO other VALUES (1)")
        .await
        .unwrap();
    let end_before_start = flush_lsn(&db).await;
    let mut cfg = env.config(TABLES);
    slow(&mut cfg);
    // The operator restarts with --accept-gap (for any reason, or none: nothing is pending).
    let run = Running::start_with(cfg, accepting());
    for _ in 0..600 {
        if run.metrics.received_lsn.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(run.metrics.received_lsn.load(Ordering::Relaxed) > 0);
    // ClickHouse is slow for a few seconds (paused): capture is still replaying the backlog, Postgres is
    // held back sending it (it has reported positions, all below the WAL's end at the start).
    let ch_pid = ch().pid().expect("ClickHouse runs").to_string();
    std::process::Command::new("kill")
        .args(["-STOP", &ch_pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent: String = db
        .query_one(
            "SELECT coalesce(sent_lsn::text, '') FROM pg_stat_replication WHERE application_name <> '' LIMIT 1",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or_default();
    // After the start (Postgres is streaming), someone drops the publication, writes, and creates it again.
    let publication = format!("pub_{}", env.name);
    let after_start = flush_lsn(&db).await;
    for sql in [
        format!("DROP PUBLICATION {publication}"),
        "INSERT INTO events VALUES (2, 'org1', 'lost')".to_owned(),
        format!("CREATE PUBLICATION {publication} FOR TABLE events"),
    ] {
        db.batch_execute(&sql).await.unwrap();
    }
    std::process::Command::new("kill")
        .args(["-CONT", &ch_pid])
        .status()
        .unwrap();
    eprintln!("walsender sent_lsn while held back: {sent}");
    eprintln!(
        "end before start {} / at drop: received {} keepalive {} end {}",
        hex(end_before_start),
        hex(run.metrics.received_lsn.load(Ordering::Relaxed)),
        hex(run.metrics.server_wal_end.load(Ordering::Relaxed)),
        hex(after_start)
    );
    let metrics = run.metrics.clone();
    let (run, got) = outcome(&env, run, 240).await;
    eprintln!(
        "at the stop: received {} keepalive {}",
        hex(metrics.received_lsn.load(Ordering::Relaxed)),
        hex(metrics.server_wal_end.load(Ordering::Relaxed))
    );
    if let Some(run) = run {
        let _ = run.stop().await;
    }
    let items = env.items().await;
    let lost_absent = !items.iter().any(|i| i.resource_id == "2");
    let gaps: Vec<_> = items
        .iter()
        .filter(|i| i.is_gap())
        .map(|i| i.summary.clone())
        .collect();
    eprintln!("lost row absent: {lost_absent}; gaps: {gaps:#?}");
    match got {
        Ok(msg) => {
            eprintln!("stopped with: {msg}");
            assert!(msg.contains("--accept-gap"), "{msg}")
        }
        Err(()) => panic!(
            "a drop made after the --accept-gap start (while the backlog replayed) was accepted without the \
             operator: slot moved to the present, row 2 absent={lost_absent}; gaps: {gaps:#?}"
        ),
    }
}

/// A transaction that straddles the drop (begun before it, committed after): Postgres 15 stops the stream
/// in the middle of it (after sending part of it). The part received is stored (the reader had already
/// forwarded it), then the slot is moved past the whole transaction: the trail keeps a fragment of a
/// transaction, inside a gap record that says those changes were not captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_straddling_the_drop_is_stored_whole_or_not_at_all() {
    let env = TestEnv::new("pg_straddle").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    let config = || {
        let mut cfg = env.config(TABLES);
        cfg.postgres.watch_interval_ms = 600_000;
        cfg
    };
    let run = Running::start(config());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1', '')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "first").await;
    let publication = format!("pub_{}", env.name);
    let mut other = env.pg().await;
    let t = other.transaction().await.unwrap();
    t.batch_execute(
        "INSERT INTO events SELECT g, 'org1', 'before' FROM generate_series(100, 3099) g",
    )
    .await
    .unwrap();
    db.batch_execute(&format!("DROP PUBLICATION {publication}"))
        .await
        .unwrap();
    t.batch_execute("INSERT INTO events VALUES (5000, 'org1', 'after the drop')")
        .await
        .unwrap();
    t.commit().await.unwrap();
    db.batch_execute(&format!(
        "CREATE PUBLICATION {publication} FOR TABLE events"
    ))
    .await
    .unwrap();
    let msg = run.stops_with().await;
    eprintln!("first stop: {msg}");
    let partial = |items: &[Item]| {
        items
            .iter()
            .filter(|i| {
                i.resource_id
                    .parse::<i32>()
                    .is_ok_and(|n| (100..=5000).contains(&n))
            })
            .count()
    };
    let after_stop = partial(&env.items().await);
    eprintln!("items of the straddling transaction stored after the stop: {after_stop}");
    let run = Running::start_with(config(), accepting());
    let (run, got) = outcome(&env, run, 120).await;
    if let Some(run) = run {
        db.batch_execute("INSERT INTO events VALUES (7000, 'org1', 'later')")
            .await
            .unwrap();
        let run = run.until_stored(&env, 2, "later").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = run.stop().await;
    }
    eprintln!("accept run: {got:?}");
    let items = env.items().await;
    let n = partial(&items);
    let gaps: Vec<_> = items
        .iter()
        .filter(|i| i.is_gap())
        .map(|i| (i.summary.clone(), i.diff_json()["gap"].clone()))
        .collect();
    eprintln!("straddling transaction items in the trail: {n}; gaps: {gaps:#?}");
    assert!(
        n == 0 || n == 3001,
        "a fragment of one transaction ({n} of its 3001 changes) is in the trail, inside a gap that says \
         those changes were not captured: {gaps:#?}"
    );
}

/// Capture started on `cfg`, row 1 written and stored, capture stopped.
async fn first_row_stored(env: &TestEnv, db: &tokio_postgres::Client, cfg: Config) {
    let run = Running::start(cfg);
    wait_slot(db, &format!("slot_{}", env.name)).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1', '')")
        .await
        .unwrap();
    let run = run.until_stored(env, 1, "first").await;
    run.stop().await.unwrap();
}

/// A start with --accept-gap, row 3 written after it and stored (with the gaps it records).
async fn accept_and_write_on(env: &TestEnv, db: &tokio_postgres::Client, cfg: Config) -> Running {
    let run = Running::start_with(cfg, accepting());
    tokio::time::sleep(Duration::from_secs(3)).await;
    db.batch_execute("INSERT INTO events VALUES (3, 'org1', '')")
        .await
        .unwrap();
    let run = run.until_stored(env, 3, "row 3 and a gap").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run
}

/// The change written at `lost_from..lost_to` is not in the trail, and some gap record's positions hold it:
/// from_lsn..to_lsn (behind where capture resumed), or from where it resumed to until_lsn (ahead).
async fn assert_loss_recorded(env: &TestEnv, lost_from: u64, lost_to: u64) {
    let items = env.items().await;
    let ids: Vec<&str> = items
        .iter()
        .filter(|i| !i.is_gap())
        .map(|i| i.resource_id.as_str())
        .collect();
    let gaps: Vec<_> = items
        .iter()
        .filter(|i| i.is_gap())
        .map(|i| (i.summary.clone(), i.diff_json()["gap"].clone()))
        .collect();
    assert!(
        !ids.contains(&"2"),
        "the change was captured after all: {ids:?}"
    );
    let holds = gaps.iter().any(|(_, g)| {
        let to = lsn_of(g["to_lsn"].as_str().unwrap());
        let from = g["from_lsn"].as_str().map(lsn_of).unwrap_or(0);
        match g["until_lsn"].as_str().map(lsn_of) {
            Some(until) => to <= lost_from && lost_to <= until,
            None => from <= lost_from && lost_to <= to,
        }
    });
    assert!(
        holds,
        "no gap record's positions hold the lost change ({}..{}): {gaps:#?}",
        hex(lost_from),
        hex(lost_to)
    );
}

/// The publication dropped while capture was stopped and created again by someone else without the mapped
/// table (here: for another table). The change to the mapped table written meanwhile waits in the slot,
/// ahead of where capture resumes; Postgres 15 decodes it through the new publication and skips it
/// silently (no 'does not exist' stop: nothing was written while no publication existed). The start with
/// --accept-gap records only the table's gap "until capture resumed at S" (to_lsn S), whose positions do
/// not hold the lost change; the drop's own record (bounded ahead, with until_lsn) is left out because
/// the table is "recorded as that".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_recreated_without_the_table_records_bounds_holding_the_loss() {
    let env = TestEnv::new("pg_recreated_narrow").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    db.batch_execute("CREATE TABLE other (x int PRIMARY KEY)")
        .await
        .unwrap();
    let config = || {
        let mut cfg = env.config(TABLES);
        cfg.postgres.watch_interval_ms = 600_000;
        cfg
    };
    first_row_stored(&env, &db, config()).await;
    let publication = format!("pub_{}", env.name);
    db.batch_execute(&format!(
        "DROP PUBLICATION {publication}; CREATE PUBLICATION {publication} FOR TABLE other"
    ))
    .await
    .unwrap();
    let lost_from = wal_lsn(&db).await;
    db.batch_execute("INSERT INTO events VALUES (2, 'org1', 'lost')")
        .await
        .unwrap();
    let lost_to = wal_lsn(&db).await;
    let msg = Running::start(config()).stops_with().await;
    eprintln!("plain start: {msg}");
    accept_and_write_on(&env, &db, config())
        .await
        .stop()
        .await
        .unwrap();
    assert_loss_recorded(&env, lost_from, lost_to).await;
}

/// The same gap record, for a mapped table merely removed from the publication while capture was stopped
/// (no drop): the lost change lies ahead of where capture resumes, the record's positions end there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_removed_while_stopped_records_bounds_holding_the_loss() {
    let env = TestEnv::new("pg_removed_table").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    let config = || {
        let mut cfg = env.config(TABLES);
        cfg.postgres.watch_interval_ms = 600_000;
        cfg
    };
    first_row_stored(&env, &db, config()).await;
    let publication = format!("pub_{}", env.name);
    db.batch_execute(&format!(
        "ALTER PUBLICATION {publication} DROP TABLE events"
    ))
    .await
    .unwrap();
    let lost_from = wal_lsn(&db).await;
    db.batch_execute("INSERT INTO events VALUES (2, 'org1', 'lost')")
        .await
        .unwrap();
    let lost_to = wal_lsn(&db).await;
    accept_and_write_on(&env, &db, config())
        .await
        .stop()
        .await
        .unwrap();
    assert_loss_recorded(&env, lost_from, lost_to).await;
}

/// Someone re-creates the dropped publication FOR ALL TABLES while capture is stopped (they meant well).
/// Tables capture never mapped must not be recorded as "no longer mapped (its [[tables]] entry was
/// removed)", and the start must either go on with the stretch recorded or stop with a fix that works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_recreated_for_all_tables_records_no_false_unmapping() {
    let env = TestEnv::new("pg_all_tables").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    db.batch_execute(
        "CREATE TABLE other1 (x int PRIMARY KEY); CREATE TABLE other2 (x int PRIMARY KEY)",
    )
    .await
    .unwrap();
    let config = || {
        let mut cfg = env.config(TABLES);
        cfg.postgres.watch_interval_ms = 600_000;
        cfg
    };
    first_row_stored(&env, &db, config()).await;
    let publication = format!("pub_{}", env.name);
    db.batch_execute(&format!(
        "DROP PUBLICATION {publication}; CREATE PUBLICATION {publication} FOR ALL TABLES"
    ))
    .await
    .unwrap();
    db.batch_execute("INSERT INTO events VALUES (2, 'org1', 'kept?')")
        .await
        .unwrap();
    let first = Running::start(config());
    let mut first_msg = None;
    for _ in 0..100 {
        if first.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if first.is_finished() {
        first_msg = Some(first.stops_with().await);
    } else {
        let _ = first.stop().await;
    }
    eprintln!("plain start: {first_msg:?}");
    let run = Running::start_with(config(), accepting());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let finished = run.is_finished();
    let msg = if finished {
        Some(run.stops_with().await)
    } else {
        db.batch_execute("INSERT INTO events VALUES (3, 'org1', '')")
            .await
            .unwrap();
        let run = run.until_stored(&env, 3, "row 3").await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = run.stop().await;
        None
    };
    eprintln!("accepting start: {msg:?}");
    let pubs: Vec<String> = db
        .query(
            "SELECT puballtables::text FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    eprintln!("publication for all tables now: {pubs:?}");
    let items = env.items().await;
    let gaps: Vec<_> = items
        .iter()
        .filter(|i| i.is_gap())
        .map(|i| i.summary.clone())
        .collect();
    let ids: Vec<&str> = items
        .iter()
        .filter(|i| !i.is_gap())
        .map(|i| i.resource_id.as_str())
        .collect();
    eprintln!("ids {ids:?}; gaps {gaps:#?}");
    let false_unmapped: Vec<_> = gaps
        .iter()
        .filter(|s| {
            s.contains("no longer mapped") && (s.contains("other1") || s.contains("other2"))
        })
        .collect();
    assert!(
        false_unmapped.is_empty(),
        "tables never mapped are recorded as unmapped (their [[tables]] entry removed): {false_unmapped:#?}"
    );
    // Both starts stop on Postgres's raw refusal to reshape a FOR ALL TABLES publication: the operator is
    // not told what to do (drop it, so that the next start makes it again and records the stretch).
    for m in [first_msg.unwrap_or_default(), msg.unwrap_or_default()] {
        assert!(
            m.is_empty() || m.contains("DROP PUBLICATION") || m.contains("FOR TABLE"),
            "a stop without a fix: {m}"
        );
    }
}

/// A transaction open across the drop (begun before it, written in the stretch without a publication)
/// that commits after the --accept-gap start began: Postgres would stop at it again after the slot moved.
/// The acceptance waits for it to end (QA40 M1): one acceptance, and the process goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_gap_waits_for_a_transaction_open_across_the_drop() {
    let env = TestEnv::new("pg_open_across").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    let config = || {
        let mut cfg = env.config(TABLES);
        cfg.postgres.watch_interval_ms = 600_000;
        cfg
    };
    first_row_stored(&env, &db, config()).await;
    let publication = format!("pub_{}", env.name);
    let mut other = env.pg().await;
    let t = other.transaction().await.unwrap();
    t.batch_execute("INSERT INTO events VALUES (100, 'org1', 'open before the drop')")
        .await
        .unwrap();
    db.batch_execute(&format!("DROP PUBLICATION {publication}"))
        .await
        .unwrap();
    t.batch_execute("INSERT INTO events VALUES (101, 'org1', 'open, in the stretch')")
        .await
        .unwrap();
    db.batch_execute("INSERT INTO events VALUES (2, 'org1', 'in the stretch')")
        .await
        .unwrap();
    let msg = Running::start(config()).stops_with().await;
    assert!(msg.contains("--accept-gap"), "{msg}");
    let run = Running::start_with(config(), accepting());
    // The acceptance waits for the open transaction: nothing moved while it is open.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        !run.is_finished(),
        "the accepting process stopped while waiting"
    );
    assert!(
        !env.items()
            .await
            .iter()
            .any(|i| i.summary.contains("moved past them")),
        "the slot moved while a transaction open across the drop was still open"
    );
    t.commit().await.unwrap();
    let (run, got) = outcome(&env, run, 60).await;
    assert!(got.is_err(), "the told-of drop was not accepted: {got:?}");
    let run = run.unwrap();
    db.batch_execute("INSERT INTO events VALUES (3, 'org1', 'after')")
        .await
        .unwrap();
    for _ in 0..150 {
        if run.is_finished() || env.items().await.iter().any(|i| i.resource_id == "3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = run.is_finished();
    let msg = if stopped {
        run.stops_with().await
    } else {
        run.stop().await.unwrap();
        String::new()
    };
    assert!(
        !stopped,
        "the process run with --accept-gap accepted the drop, then stopped again for it: {msg}"
    );
    let items = env.items().await;
    let ids: Vec<&str> = items
        .iter()
        .filter(|i| !i.is_gap())
        .map(|i| i.resource_id.as_str())
        .collect();
    let moved = items
        .iter()
        .filter(|i| i.summary.contains("moved past them"))
        .count();
    assert_eq!(moved, 1, "one acceptance for one drop: {items:#?}");
    assert!(
        ids.contains(&"3"),
        "the change after the acceptance: {ids:?}"
    );
}

/// The publication dropped and the slot lost while capture was stopped. The plain start finds the drop
/// (kept pending, bounded by the WAL's end then: U) and is refused for the slot; the --accept-gap start
/// makes a new slot at the present and records the pending drop "after position <new slot> and before U":
/// a stretch that ends before it begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ahead_gap_recorded_by_a_later_start_keeps_a_stretch_that_ends_after_it_begins() {
    let env = TestEnv::new("pg_ahead_inverted").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    let config = || {
        let mut cfg = env.config(TABLES);
        cfg.postgres.watch_interval_ms = 600_000;
        cfg
    };
    let run = Running::start(config());
    let slot = format!("slot_{}", env.name);
    wait_slot(&db, &slot).await;
    db.batch_execute("INSERT INTO events VALUES (1, 'org1', '')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 1, "first").await;
    run.stop().await.unwrap();
    let publication = format!("pub_{}", env.name);
    db.batch_execute(&format!("DROP PUBLICATION {publication}"))
        .await
        .unwrap();
    db.batch_execute("INSERT INTO events VALUES (2, 'org1', 'lost')")
        .await
        .unwrap();
    db.execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .unwrap();
    let msg = Running::start(config()).stops_with().await;
    eprintln!("plain start: {msg}");
    // Time passes, WAL is written.
    db.batch_execute("CREATE TABLE filler AS SELECT g FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    let run = Running::start_with(config(), accepting());
    tokio::time::sleep(Duration::from_secs(3)).await;
    db.batch_execute("INSERT INTO events VALUES (3, 'org1', '')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 3, "row 3 and the gaps").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = run.stop().await;
    let items = env.items().await;
    let gaps: Vec<_> = items
        .iter()
        .filter(|i| i.is_gap())
        .map(|i| (i.summary.clone(), i.diff_json()["gap"].clone()))
        .collect();
    eprintln!("gaps {gaps:#?}");
    let inverted: Vec<_> = gaps
        .iter()
        .filter(|(_, g)| {
            g["until_lsn"]
                .as_str()
                .is_some_and(|u| lsn_of(u) < lsn_of(g["to_lsn"].as_str().unwrap()))
        })
        .collect();
    assert!(
        inverted.is_empty(),
        "a stretch that ends before it begins: {inverted:#?}"
    );
}

/// Someone else adds a table capture never mapped to the publication while capture is stopped (or
/// re-creates a dropped publication with it). The next start records "public.other is no longer mapped
/// (its [[tables]] entry was removed)": a configuration change that never happened, in the trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_someone_else_put_in_the_publication_is_not_recorded_as_unmapped() {
    let env = TestEnv::new("pg_false_unmapped").await;
    let db = env.pg().await;
    db.batch_execute(DDL).await.unwrap();
    db.batch_execute("CREATE TABLE other (x int PRIMARY KEY)")
        .await
        .unwrap();
    let config = || {
        let mut cfg = env.config(TABLES);
        cfg.postgres.watch_interval_ms = 600_000;
        cfg
    };
    first_row_stored(&env, &db, config()).await;
    let publication = format!("pub_{}", env.name);
    db.batch_execute(&format!("ALTER PUBLICATION {publication} ADD TABLE other"))
        .await
        .unwrap();
    let run = Running::start(config());
    tokio::time::sleep(Duration::from_secs(3)).await;
    db.batch_execute("INSERT INTO events VALUES (3, 'org1', '')")
        .await
        .unwrap();
    let run = run.until_stored(&env, 2, "row 3").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = run.stop().await;
    let gaps: Vec<_> = env
        .items()
        .await
        .iter()
        .filter(|i| i.is_gap())
        .map(|i| i.summary.clone())
        .collect();
    eprintln!("gaps {gaps:#?}");
    let false_unmapped: Vec<_> = gaps
        .iter()
        .filter(|s| s.contains("public.other is no longer mapped"))
        .collect();
    assert!(
        false_unmapped.is_empty(),
        "a table never mapped is recorded as unmapped: {false_unmapped:#?}"
    );
}
