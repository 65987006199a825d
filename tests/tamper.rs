//! Tamper evidence against a real ClickHouse: every alteration of the stored trail is found and named;
//! a crash mid-chain replays the identical chain; checkpoints survive a key rotation, in the store and in
//! an export verified offline.

mod harness;

use harness::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use waltrail::audit::chain::{ChainReport, PublicKey, SigningKey};
use waltrail::config::Config;

const KEY_A: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const KEY_B: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// Signs exports only (an API replica's key).
const EXPORT_KEY: &str = "3333333333333333333333333333333333333333333333333333333333333333";

const TABLES: &str = r#"
[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
organization_column = "org_id"
display_column = "name"
"#;

fn public(seed_hex: &str) -> PublicKey {
    let seed: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&seed_hex[i..i + 2], 16).unwrap())
        .collect();
    SigningKey::from_seed(&seed).unwrap().public_key()
}

fn integrity(key: &str, trusted: &[&PublicKey], file: Option<&std::path::Path>) -> String {
    let mut s = format!(
        "[integrity]\ncheckpoint_every_items = 5\ntrusted_keys = [{}]\n",
        trusted
            .iter()
            .map(|k| format!("\"{}\"", k.to_text()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(f) = file {
        s.push_str(&format!("checkpoint_file = \"{}\"\n", f.display()));
    }
    let _ = key;
    s
}

fn config(
    env: &TestEnv,
    key: &str,
    trusted: &[&PublicKey],
    file: Option<&std::path::Path>,
) -> Config {
    let text = format!(
        "{}\n{}",
        env.config_text(TABLES),
        integrity(key, trusted, file)
    );
    let mut cfg = Config::parse(&text).expect("config parses");
    cfg.validate().expect("config is valid");
    cfg.integrity.signing_key = Some(waltrail::config::Secret(key.into()));
    cfg
}

async fn insert(db: &tokio_postgres::Client, from: u32, to: u32) {
    for i in from..=to {
        db.execute(
            "INSERT INTO gateways VALUES ($1, 'org1', $2)",
            &[&format!("g{i}"), &format!("gw-{i}")],
        )
        .await
        .unwrap();
    }
}

/// `waltrail verify --export FILE --public-key KEYS`, offline.
fn verify_export(export: &std::path::Path, keys: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["verify", "--export"])
        .arg(export)
        .arg("--public-key")
        .arg(keys)
        .output()
        .unwrap()
}

/// What `waltrail verify` and the API check by default: everything retention keeps (of org1).
async fn verify(ch: &clickhouse::Client, keys: &[PublicKey]) -> Vec<ChainReport> {
    verify_as(ch, "org1", keys).await
}

/// The same for organization `org` ("" for the platform chain).
async fn verify_as(ch: &clickhouse::Client, org: &str, keys: &[PublicKey]) -> Vec<ChainReport> {
    let since = waltrail::store::query::retention_cutoff_us(30);
    waltrail::store::integrity::verify_org(ch, org, Some(since), None, keys)
        .await
        .expect("verification reads the store")
}

fn failure(reports: &[ChainReport]) -> String {
    reports
        .iter()
        .find_map(|r| r.failure.clone())
        .unwrap_or_default()
}

/// A copy of the trail in a database of its own, to tamper with.
async fn scratch(env: &TestEnv, name: &str) -> clickhouse::Client {
    let ch = env.ch();
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
        format!(
            "CREATE TABLE {name}.audit_items AS {}.audit_items",
            env.ch_db
        ),
        format!(
            "INSERT INTO {name}.audit_items SELECT * FROM {}.audit_items",
            env.ch_db
        ),
        format!(
            "CREATE TABLE {name}.audit_checkpoints AS {}.audit_checkpoints",
            env.ch_db
        ),
        format!(
            "INSERT INTO {name}.audit_checkpoints SELECT * FROM {}.audit_checkpoints",
            env.ch_db
        ),
        format!(
            "CREATE TABLE {name}.audit_rosters AS {}.audit_rosters",
            env.ch_db
        ),
        format!(
            "INSERT INTO {name}.audit_rosters SELECT * FROM {}.audit_rosters",
            env.ch_db
        ),
    ] {
        ch.query(&sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    ch.with_database(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alteration_of_the_stored_trail_is_found() {
    let env = TestEnv::new("t_tamper").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let file = std::env::temp_dir().join(format!("t_tamper-{}.checkpoints", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let run = Running::start(config(&env, KEY_A, &[], Some(&file)));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    insert(&db, 1, 20).await;
    // Items of no organization (an empty organization column; a TRUNCATE, platform-wide) share the
    // platform chain, and verification reads all of them.
    for sql in [
        "INSERT INTO gateways VALUES ('n1', NULL, 'no-org-1')",
        "INSERT INTO gateways VALUES ('n2', '', 'no-org-2')",
        "TRUNCATE gateways",
        "INSERT INTO gateways VALUES ('n3', NULL, 'no-org-3')",
    ] {
        db.batch_execute(sql).await.unwrap();
    }
    env.wait_for(24).await;
    run.stop().await.unwrap();
    let keys = [public(KEY_A)];

    let intact = verify(&env.ch(), &keys).await;
    assert_eq!(failure(&intact), "", "{intact:#?}");
    let platform = intact
        .iter()
        .find(|r| r.chain.starts_with("(platform) @"))
        .unwrap_or_else(|| panic!("{intact:#?}"));
    assert_eq!(platform.items, 4, "{platform:#?}");
    let org = intact
        .iter()
        .find(|r| r.chain.starts_with("org1 @"))
        .unwrap();
    assert_eq!((org.items, org.verified_seq), (20, 20), "{org:#?}");
    assert_eq!(org.checkpoints, 5, "the first item, then one every 5 items");
    // A range ending inside the chain: checkpoints committed after it say nothing of it (no false "tail
    // cut"); one starting after the last change, with every checkpoint before it: nothing to judge.
    let times: Vec<i64> = env
        .ch()
        .query("SELECT occurred_at_us FROM audit_items WHERE organization_id = 'org1' ORDER BY chain_seq")
        .fetch_all()
        .await
        .unwrap();
    let mid = times[11];
    let head = waltrail::store::integrity::verify_org(&env.ch(), "org1", Some(0), Some(mid), &keys)
        .await
        .unwrap();
    assert_eq!(failure(&head), "", "{head:#?}");
    let org_head = head.iter().find(|r| r.chain.starts_with("org1 @")).unwrap();
    assert_eq!(
        (org_head.items, org_head.verified_seq),
        (11, 10),
        "{org_head:#?}"
    );
    let after =
        waltrail::store::integrity::verify_org(&env.ch(), "org1", Some(times[19] + 1), None, &keys)
            .await
            .unwrap();
    assert_eq!(failure(&after), "", "{after:#?}");
    let copied = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        copied.lines().count(),
        6,
        "each checkpoint (org1's five, the platform chain's first item) also went to the external file"
    );

    let cases: [(&str, &[&str], &str); 11] = [
        (
            "a field altered",
            &["ALTER TABLE audit_items UPDATE summary = 'nothing happened' WHERE chain_seq = 7"],
            "altered",
        ),
        (
            "an item deleted",
            &["ALTER TABLE audit_items DELETE WHERE chain_seq = 7"],
            "deleted",
        ),
        (
            "two items reordered",
            &["ALTER TABLE audit_items UPDATE chain_seq = toUInt64(if(chain_seq = 7, 8, 7)) WHERE chain_seq IN (7, 8)"],
            "",
        ),
        (
            "a checkpoint forged",
            &["ALTER TABLE audit_checkpoints UPDATE head_hash = 'f00d' WHERE chain_seq = 10"],
            "forged",
        ),
        (
            "the tail cut",
            &["ALTER TABLE audit_items DELETE WHERE chain_seq > 16"],
            "tail was cut",
        ),
        (
            "the oldest items deleted",
            &["ALTER TABLE audit_items DELETE WHERE organization_id = 'org1' AND chain_seq <= 7"],
            "chain positions 1 to 7 are missing",
        ),
        (
            // With their checkpoints too: the first item left has no signed opening of the range.
            "the oldest items deleted with their checkpoints",
            &[
                "ALTER TABLE audit_items DELETE WHERE organization_id = 'org1' AND chain_seq <= 7",
                "ALTER TABLE audit_checkpoints DELETE WHERE organization_id = 'org1' AND chain_seq <= 7",
            ],
            "no signed checkpoint opens the chain there",
        ),
        (
            // The whole chain, items and checkpoints: the source's roster lists it.
            "the organization's whole chain deleted",
            &[
                "ALTER TABLE audit_items DELETE WHERE organization_id = 'org1'",
                "ALTER TABLE audit_checkpoints DELETE WHERE organization_id = 'org1'",
            ],
            "lists this chain up to position",
        ),
        (
            "the platform chain deleted",
            &[
                "ALTER TABLE audit_items DELETE WHERE organization_id = '' OR platform_wide = 1",
                "ALTER TABLE audit_checkpoints DELETE WHERE organization_id = ''",
            ],
            "lists this chain up to position",
        ),
        (
            // Below the first checkpoint a transaction's end would take: the chain's first item has its own.
            "the first items deleted",
            &["ALTER TABLE audit_items DELETE WHERE organization_id = 'org1' AND chain_seq <= 3"],
            "chain positions 1 to 3 are missing",
        ),
        (
            "an item written outside the chain",
            &["INSERT INTO audit_items (id, organization_id, occurred_at_us, ingested_at_us, action, summary, version) \
               VALUES (toUUID('eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee'), 'org1', toInt64(toUnixTimestamp(now())) * 1000000, \
               toInt64(toUnixTimestamp(now())) * 1000000, 'AUDIT_ACTION_DELETED', 'alice deleted the prod key', 1)"],
            "item eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee carries no chain fields",
        ),
    ];
    for (i, (what, sqls, phrase)) in cases.iter().enumerate() {
        let ch = scratch(&env, &format!("t_tamper_{i}")).await;
        for sql in *sqls {
            if sql.starts_with("ALTER") {
                mutate(&ch, sql).await;
            } else {
                ch.query(sql)
                    .execute()
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
        let f = failure(&verify(&ch, &keys).await);
        assert!(!f.is_empty(), "{what}: not detected");
        assert!(f.contains(phrase), "{what}: {f}");
    }
    // Every checkpoint of the chain deleted with its oldest items: nothing fails, and nothing is proven.
    let ch = scratch(&env, "t_tamper_unsigned").await;
    mutate(
        &ch,
        "ALTER TABLE audit_items DELETE WHERE organization_id = 'org1' AND chain_seq <= 7",
    )
    .await;
    mutate(
        &ch,
        "ALTER TABLE audit_checkpoints DELETE WHERE organization_id = 'org1'",
    )
    .await;
    let r = verify(&ch, &keys).await;
    let org = r.iter().find(|r| r.chain.starts_with("org1 @")).unwrap();
    assert_eq!(org.failure, None, "{org:#?}");
    assert!(
        org.unproven.is_some() && org.verified_until_us.is_none(),
        "{org:#?}"
    );
    // An item inserted: a copy of a real one, saying something else, at the same chain position.
    let ch = scratch(&env, "t_tamper_inserted").await;
    let mut forged = ch
        .query("SELECT ?fields FROM audit_items WHERE chain_seq = 7 LIMIT 1")
        .fetch_one::<waltrail::store::row::ItemRow>()
        .await
        .unwrap();
    forged.id = uuid::Uuid::new_v4();
    forged.summary = "alice deleted everything".into();
    waltrail::store::writer::insert_batch(&ch, &[forged])
        .await
        .unwrap();
    let f = failure(&verify(&ch, &keys).await);
    assert!(
        f.contains("inserted") || f.contains("altered"),
        "inserted: {f}"
    );
    // QA48 H3: a second copy of an item (same id and chain position) one microsecond later and one version
    // lower, saying something else. Merges never fold copies under two commit times, and the list showed
    // the forged one while verification read the genuine one and passed.
    let ch = scratch(&env, "t_tamper_copy").await;
    let mut copy = ch
        .query("SELECT ?fields FROM audit_items WHERE organization_id = 'org1' AND chain_seq = 7 LIMIT 1")
        .fetch_one::<waltrail::store::row::ItemRow>()
        .await
        .unwrap();
    copy.occurred_at_us += 1;
    copy.version -= 1;
    copy.summary = "Nothing happened here".into();
    waltrail::store::writer::insert_batch(&ch, &[copy.clone()])
        .await
        .unwrap();
    ch.query("OPTIMIZE TABLE audit_items FINAL")
        .execute()
        .await
        .unwrap();
    let f = failure(&verify(&ch, &keys).await);
    assert!(
        f.contains(&format!("item {} (chain position 7)", copy.id))
            && (f.contains("altered") || f.contains("stored twice")),
        "a second copy: {f}"
    );
    // Copies under one commit time (a replay's) are what merges fold: no failure.
    let ch = scratch(&env, "t_tamper_replayed").await;
    let mut again = ch
        .query("SELECT ?fields FROM audit_items WHERE organization_id = 'org1' AND chain_seq = 7 LIMIT 1")
        .fetch_one::<waltrail::store::row::ItemRow>()
        .await
        .unwrap();
    again.version -= 1;
    waltrail::store::writer::insert_batch(&ch, &[again])
        .await
        .unwrap();
    let r = verify(&ch, &keys).await;
    assert_eq!(failure(&r), "", "a replayed copy: {r:#?}");
    // A forged row claiming a chain position capture never reaches: capture refuses to link on from it
    // (positions would wrap outside verification).
    let mut far = env
        .ch()
        .query("SELECT ?fields FROM audit_items WHERE chain_seq = 7 LIMIT 1")
        .fetch_one::<waltrail::store::row::ItemRow>()
        .await
        .unwrap();
    far.id = uuid::Uuid::new_v4();
    far.chain_seq = u64::MAX;
    waltrail::store::writer::insert_batch(&env.ch(), &[far.clone()])
        .await
        .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Running::start(config(&env, KEY_A, &[], None)).join(),
    )
    .await
    .expect("stops promptly")
    .expect_err("must not link on from a forged head");
    assert!(format!("{err:#}").contains("never wrote"), "{err:#}");
    mutate(
        &env.ch(),
        &format!(
            "ALTER TABLE audit_items DELETE WHERE id = toUUID('{}')",
            far.id
        ),
    )
    .await;
    // A checkpoint removed from the store: found against the copy the customer keeps.
    let ch = scratch(&env, "t_tamper_removed").await;
    mutate(
        &ch,
        "ALTER TABLE audit_checkpoints DELETE WHERE chain_seq = 20",
    )
    .await;
    assert_eq!(
        failure(&verify(&ch, &keys).await),
        "",
        "the store alone cannot tell a removed checkpoint"
    );
    let external: Vec<_> = copied
        .lines()
        .map(|l| {
            serde_json::from_str::<waltrail::audit::chain::ExportLine>(l)
                .unwrap()
                .checkpoint
                .unwrap()
        })
        .collect();
    let r = waltrail::store::integrity::verify_org_with(&ch, "org1", None, None, &keys, &external)
        .await
        .unwrap();
    assert!(failure(&r).contains("not in the store"), "{r:#?}");
    let named = r.iter().find(|x| x.failure.is_some()).unwrap();
    assert!(
        named.chain == format!("org1 @ {}", external[0].source_id),
        "on the line of the checkpoint's own chain: {r:#?}"
    );
    // The CLI says the same, with its exit status.
    let cfg_path = env.config_file(TABLES, 1000);
    let text = std::fs::read_to_string(&cfg_path).unwrap()
        + &format!("\n{}", integrity(KEY_A, &[&public(KEY_A)], None));
    std::fs::write(&cfg_path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args([
            "verify",
            "--config",
            cfg_path.to_str().unwrap(),
            "--org",
            "org1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok    org1 @"), "{stdout}");

    // The store wiped: its chains would start again at 1 and verify. The checkpoints copied out say it
    // held items, so capture refuses; accepted, the gap is in the trail.
    env.ch()
        .query("TRUNCATE TABLE audit_items")
        .execute()
        .await
        .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        Running::start(config(&env, KEY_A, &[], Some(&file))).join(),
    )
    .await
    .expect("stops promptly")
    .expect_err("a wiped store is not written on silently");
    assert!(format!("{err:#}").contains("wiped or replaced"), "{err:#}");
    let run = Running::start_with(
        config(&env, KEY_A, &[], Some(&file)),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    env.wait_for(1).await;
    run.stop().await.unwrap();
    let gap = env.items().await;
    assert_eq!(gap[0].action, "AUDIT_ACTION_GAP", "{gap:#?}");
    assert!(gap[0].diff.contains("wiped or replaced"), "{}", gap[0].diff);
    // Accepted and recorded: the next start, with nothing captured meanwhile, goes on.
    let run = Running::start(config(&env, KEY_A, &[], Some(&file)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!run.is_finished(), "a recorded wipe is not refused again");
    run.stop().await.unwrap();
    assert_eq!(env.count().await, 1, "one gap record");
}

fn spawn(cfg: &std::path::Path, key: &str, log: &std::path::Path) -> Child {
    spawn_with(cfg, key, log, &[])
}

fn spawn_with(
    cfg: &std::path::Path,
    key: &str,
    log: &std::path::Path,
    env: &[(&str, &str)],
) -> Child {
    let f = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .envs(env.iter().copied())
        .env("WALTRAIL_SIGNING_KEY", key)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap()
}

/// The chain positions of the checkpoints an external copy holds, in file order.
fn copied_positions(file: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<waltrail::audit::chain::ExportLine>(l)
                .ok()
                .and_then(|e| e.checkpoint)
                .unwrap_or_else(|| panic!("not a checkpoint line: {l}"))
                .chain_seq
        })
        .collect()
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_copy_of_checkpoints_misses_none_when_it_refuses_some_for_a_while() {
    let env = TestEnv::new("t_cpcopy").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let file = std::env::temp_dir().join(format!("t_cpcopy-{}.checkpoints", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let run = Running::start(config(&env, KEY_A, &[], Some(&file)));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    insert(&db, 1, 10).await;
    env.wait_for(10).await;
    wait_until("three checkpoints are copied", || {
        copied_positions(&file) == [1, 5, 10]
    })
    .await;
    // The copy refuses checkpoints (a directory where the file was): they wait, counted.
    std::fs::rename(&file, file.with_extension("kept")).unwrap();
    std::fs::create_dir(&file).unwrap();
    insert(&db, 11, 20).await;
    env.wait_for(20).await;
    let undelivered = || {
        run.metrics
            .checkpoints_undelivered
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    wait_until("two checkpoints wait", || undelivered() == 2).await;
    // Back: they are appended in order before the next one.
    std::fs::remove_dir(&file).unwrap();
    std::fs::rename(file.with_extension("kept"), &file).unwrap();
    insert(&db, 21, 25).await;
    env.wait_for(25).await;
    wait_until("every checkpoint is copied", || {
        copied_positions(&file) == [1, 5, 10, 15, 20, 25]
    })
    .await;
    assert_eq!(undelivered(), 0);
    run.stop().await.unwrap();
    // A copy that lost its last lines (a crash before they were written) is caught up at the next start.
    let text = std::fs::read_to_string(&file).unwrap();
    let first_two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, first_two).unwrap();
    // A checkpoint written into the store by hand (its signature does not hold) is never copied out.
    let mut forged =
        waltrail::store::query::source_checkpoints(&env.ch(), &format!("test-{}", env.name))
            .await
            .unwrap()
            .pop()
            .expect("stored checkpoints");
    forged.chain_seq = 30;
    forged.signature = "00".repeat(64);
    waltrail::store::writer::insert_checkpoints(&env.ch(), &[forged])
        .await
        .unwrap();
    let run = Running::start(config(&env, KEY_A, &[], Some(&file)));
    wait_until("the copy is caught up", || {
        copied_positions(&file).len() == 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(copied_positions(&file), [1, 5, 10, 15, 20, 25]);
    run.stop().await.unwrap();
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_chain_replays_the_same_chain_and_a_rotated_key_still_verifies() {
    let env = TestEnv::new("t_crash").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let cfg_path = env.config_file(TABLES, 200);
    let base = std::fs::read_to_string(&cfg_path).unwrap();
    let copy = cfg_path.with_extension("checkpoints");
    let _ = std::fs::remove_file(&copy);
    std::fs::write(
        &cfg_path,
        format!("{base}\n{}", integrity(KEY_A, &[], Some(&copy))),
    )
    .unwrap();
    let log = cfg_path.with_extension("log");
    let mut child = spawn(&cfg_path, KEY_A, &log);
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // kill -9 while transactions stream in.
    let writer = {
        let db = env.pg().await;
        tokio::spawn(async move { insert(&db, 1, 300).await })
    };
    env.wait_for(40).await;
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    writer.await.unwrap();
    let mut child = spawn(&cfg_path, KEY_A, &log);
    env.wait_for(300).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    // Replayed items carry the very hashes they had: no id with two different chain hashes.
    let split: u64 = env
        .ch()
        .query("SELECT count() FROM (SELECT id FROM audit_items GROUP BY id HAVING uniqExact(chain_hash) > 1)")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(split, 0);
    // The external copy holds each checkpoint once, replayed ones included (a line torn by the kill is
    // passed over, as verify does).
    let positions: Vec<(String, u64)> = std::fs::read_to_string(&copy)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<waltrail::audit::chain::ExportLine>(l).ok())
        .filter_map(|e| e.checkpoint)
        .map(|c| (c.organization_id, c.chain_seq))
        .collect();
    let mut once = positions.clone();
    once.sort_unstable();
    once.dedup();
    assert_eq!(once.len(), positions.len(), "{positions:?}");
    assert!(!positions.is_empty());
    let a = public(KEY_A);
    let r = verify(&env.ch(), std::slice::from_ref(&a)).await;
    assert_eq!(failure(&r), "", "{r:#?}");
    assert_eq!(r[0].items, 300);

    // Rotation: key B signs from now on, key A stays trusted for what it signed.
    std::fs::write(
        &cfg_path,
        format!("{base}\n{}", integrity(KEY_B, &[&a], None)),
    )
    .unwrap();
    let mut child = spawn(&cfg_path, KEY_B, &log);
    insert(&db, 301, 320).await;
    env.wait_for(320).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let b = public(KEY_B);
    let both = [a.clone(), b.clone()];
    let r = verify(&env.ch(), &both).await;
    assert_eq!(failure(&r), "", "{r:#?}");
    assert_eq!(r[0].verified_seq, 320, "{r:#?}");
    let r = verify(&env.ch(), std::slice::from_ref(&b)).await;
    assert!(failure(&r).contains("not a trusted key"), "{r:#?}");

    // An export spanning the rotation, verified offline with the public keys alone.
    let listen = TestEnv::api_addr(&cfg_path);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    let text = std::fs::read_to_string(&cfg_path).unwrap()
        + &format!(
            "\n[[api.keys]]\nname = \"auditor\"\nsha256 = \"{}\"\norg_id = \"org1\"\nrole = \"admin\"\n",
            waltrail::api::auth::sha256_hex("auditor-key")
        );
    std::fs::write(&cfg_path, text).unwrap();
    let mut child = spawn(&cfg_path, KEY_B, &log);
    let http = reqwest::Client::new();
    let mut body = String::new();
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!(
                "http://{listen}/api/v1/orgs/org1/audit_logs/export?format=ndjson"
            ))
            .bearer_auth("auditor-key")
            .send()
            .await
        {
            if r.status() == 200 {
                body = r.text().await.unwrap();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    assert!(!body.is_empty(), "export answered");
    let export = cfg_path.with_extension("ndjson");
    std::fs::write(&export, &body).unwrap();
    let keys_file = cfg_path.with_extension("keys");
    std::fs::write(&keys_file, format!("{}\n{}\n", a.to_text(), b.to_text())).unwrap();
    let out = verify_export(&export, &keys_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every item line of the export was verified: the 320 changes, and the export's own record when
    // capture stored it before the export read the store (it is itself an item of org1).
    let exported = body.lines().filter(|l| l.contains(r#""record":"#)).count();
    assert!((320..=321).contains(&exported), "{exported} item lines");
    assert!(
        stdout.contains("ok    org1 @") && stdout.contains(&format!(": {exported} items")),
        "{stdout}"
    );
    // The same export with one line altered fails, naming the item.
    let tampered = body.replacen("gw-42", "gw-forty-two", 1);
    std::fs::write(&export, tampered).unwrap();
    let out = verify_export(&export, &keys_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("FAIL") && stdout.contains("altered"),
        "{stdout}"
    );
    // Cut short: an item line and the line saying what the export covers removed (continuity would go
    // unchecked without it).
    let mut lines: Vec<&str> = body.lines().collect();
    lines.pop();
    lines.remove(5);
    std::fs::write(&export, lines.join("\n")).unwrap();
    let out = verify_export(&export, &keys_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("last line"), "{stdout}");
    // The last line is signed over every line before it: edited to say "filtered" (which would hide a
    // deletion), it fails; so does an export from which a chain's oldest items were removed, which the
    // chain alone cannot tell from retention.
    let mut lines: Vec<String> = body.lines().map(str::to_owned).collect();
    let trailer = lines.pop().unwrap();
    assert!(
        trailer.contains(r#""complete":true"#) && trailer.contains(r#""signature""#),
        "{trailer}"
    );
    let mut edited = lines.clone();
    edited.push(trailer.replace(r#""complete":true"#, r#""complete":false"#));
    std::fs::write(&export, edited.join("\n")).unwrap();
    let out = verify_export(&export, &keys_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("does not verify with key"), "{stdout}");
    let oldest = lines
        .iter()
        .position(|l| l.contains(r#""chain_seq":1,"#))
        .expect("the chain's first item");
    let mut cut = lines.clone();
    cut.remove(oldest);
    cut.push(trailer.clone());
    std::fs::write(&export, cut.join("\n")).unwrap();
    let out = verify_export(&export, &keys_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("not those the server signed"), "{stdout}");
    // A filtered export, signed as such (with an export-only key, as an API replica would): intact where
    // its items are, not proven whole (exit 2) unless the reader accepts that with --partial.
    let mut child = spawn_with(
        &cfg_path,
        KEY_B,
        &log,
        &[("WALTRAIL_EXPORT_SIGNING_KEY", EXPORT_KEY)],
    );
    let mut filtered = String::new();
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!(
                "http://{listen}/api/v1/orgs/org1/audit_logs/export?format=ndjson&resource_id=gw-42"
            ))
            .bearer_auth("auditor-key")
            .send()
            .await
        {
            if r.status() == 200 {
                filtered = r.text().await.unwrap();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let _ = child.wait();
    assert!(filtered.contains("gw-42"), "{filtered}");
    std::fs::write(&export, &filtered).unwrap();
    let out = verify_export(&export, &keys_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("not among the given public keys"),
        "the export key must be given: {stdout}"
    );
    let export_public = waltrail::audit::chain::PublicKey {
        exports_only: true,
        ..public(EXPORT_KEY)
    };
    std::fs::write(
        &keys_file,
        format!(
            "{}\n{}\n{}\n",
            a.to_text(),
            b.to_text(),
            export_public.to_text()
        ),
    )
    .unwrap();
    assert!(export_public.to_text().starts_with("export:ed25519:"));
    let out = verify_export(&export, &keys_file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("PART  org1 @")
            && stdout.contains("chain positions are not proven: not in this export")
            && stdout.contains("resource_id=gw-42"),
        "{stdout}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["verify", "--partial", "--export"])
        .arg(&export)
        .arg("--public-key")
        .arg(&keys_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// An organization quiet for longer than retention: every item of its chain expired, its checkpoints did
/// not. Its next change goes on from the last checkpoint (never from the zero hash, whose positions the old
/// checkpoints hold), and the trail verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_whose_items_all_expired_goes_on_from_its_last_checkpoint() {
    let env = TestEnv::new("t_expired").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let run = Running::start(config(&env, KEY_A, &[], None));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // Seven changes 40 days ago (through a replication origin, which carries its commit time).
    let old = waltrail::store::row::now_us() - 40 * 86_400_000_000;
    let changes: Vec<(i64, String)> = (1..=7)
        .map(|i| {
            (
                old + i,
                format!("INSERT INTO gateways VALUES ('old{i}', 'org1', 'old-{i}')"),
            )
        })
        .collect();
    commit_at(&db, "t_expired_sync", &changes).await;
    env.wait_for(7).await;
    run.stop().await.unwrap();
    let checkpoints: Vec<u64> = env
        .ch()
        .query("SELECT chain_seq FROM audit_checkpoints WHERE organization_id = 'org1' ORDER BY chain_seq")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(checkpoints, [1, 5], "the first item's, then at 5");
    // Retention: their day is dropped (the partition holds nothing stored recently in production; here
    // the rows are removed as the drop would).
    mutate(
        &env.ch(),
        "ALTER TABLE audit_items DELETE WHERE organization_id = 'org1'",
    )
    .await;
    let run = Running::start(config(&env, KEY_A, &[], None));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    insert(&db, 1, 2).await;
    env.wait_for(2).await;
    run.stop().await.unwrap();
    let seqs: Vec<u64> = env
        .ch()
        .query(
            "SELECT chain_seq FROM audit_items WHERE organization_id = 'org1' ORDER BY chain_seq",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(seqs, [6, 7], "on from the last checkpoint's position");
    let reports = verify(&env.ch(), &[public(KEY_A)]).await;
    assert_eq!(failure(&reports), "", "{reports:#?}");
    let org = reports
        .iter()
        .find(|r| r.chain.starts_with("org1 @"))
        .unwrap();
    assert_eq!((org.items, org.verified_seq), (2, 6), "{org:#?}");

    // Retention drops a chain's newest day while the partition holding its lower positions stays (kept by
    // an item stored later): the start goes on from the checkpoint rather than take it for a cut tail.
    let run = Running::start(config(&env, KEY_A, &[], None));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    let older = waltrail::store::row::now_us() - 35 * 86_400_000_000;
    commit_at(
        &db,
        "t_expired_sync2",
        &[
            (
                older,
                "INSERT INTO gateways VALUES ('o3a', 'org3', 'a')".into(),
            ),
            (
                older + 2 * 86_400_000_000,
                "INSERT INTO gateways VALUES ('o3b', 'org3', 'b')".into(),
            ),
        ],
    )
    .await;
    env.wait_for(4).await;
    run.stop().await.unwrap();
    mutate(
        &env.ch(),
        "ALTER TABLE audit_items DELETE WHERE organization_id = 'org3' AND chain_seq = 2",
    )
    .await;
    let run = Running::start(config(&env, KEY_A, &[], None));
    db.batch_execute("INSERT INTO gateways VALUES ('o3c', 'org3', 'c')")
        .await
        .unwrap();
    env.wait_for(4).await;
    assert!(!run.is_finished(), "retention is no deletion");
    run.stop().await.unwrap();
    let seqs: Vec<u64> = env
        .ch()
        .query(
            "SELECT chain_seq FROM audit_items WHERE organization_id = 'org3' ORDER BY chain_seq",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(seqs, [1, 3], "on from the checkpoint at 2");

    // The same cut within one commit day is no retention (it drops whole days): refused.
    let every1 = || {
        let mut cfg = config(&env, KEY_A, &[], None);
        cfg.integrity.checkpoint_every_items = 1;
        cfg
    };
    let run = Running::start(every1());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    let day = waltrail::store::row::now_us() - 50 * 86_400_000_000;
    commit_at(
        &db,
        "t_expired_sync3",
        &[
            (
                day,
                "INSERT INTO gateways VALUES ('o4a', 'org4', 'a')".into(),
            ),
            (
                day + 1,
                "INSERT INTO gateways VALUES ('o4b', 'org4', 'b')".into(),
            ),
        ],
    )
    .await;
    env.wait_for(6).await;
    run.stop().await.unwrap();
    mutate(
        &env.ch(),
        "ALTER TABLE audit_items DELETE WHERE organization_id = 'org4' AND chain_seq = 2",
    )
    .await;
    let err = tokio::time::timeout(Duration::from_secs(60), Running::start(every1()).join())
        .await
        .expect("stops promptly")
        .expect_err("refuses");
    assert!(format!("{err:#}").contains("items were deleted"), "{err:#}");
}

/// An item altered and the chain linked again after it (no key needed), the checkpoints from there on
/// deleted, then a restart: signing on would vouch for the forgery. The start refuses, against the
/// external copy and, without one, by the checkpoint that was due and is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_does_not_sign_over_a_relinked_chain_or_missing_checkpoints() {
    let env = TestEnv::new("t_resign").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let file = std::env::temp_dir().join(format!("t_resign-{}.checkpoints", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let run = Running::start(config(&env, KEY_A, &[], Some(&file)));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    insert(&db, 1, 7).await;
    env.wait_for(7).await;
    run.stop().await.unwrap();
    // Item 2 rewritten, the chain linked again after it, the checkpoints from 2 on deleted.
    let rows: Vec<waltrail::store::row::ItemRow> = env
        .ch()
        .query("SELECT ?fields FROM audit_items WHERE organization_id = 'org1' ORDER BY chain_seq")
        .fetch_all()
        .await
        .unwrap();
    let mut prev = rows[0].chain_hash.clone();
    for r in &rows[1..] {
        let mut forged = r.record();
        if r.chain_seq == 2 {
            forged.summary = "Nobody created Gateway \"gw-2\"".to_owned();
        }
        let summary = forged.summary.clone();
        let hash = waltrail::audit::chain::link(&prev, &forged.content_hash());
        mutate(
            &env.ch(),
            &format!(
                "ALTER TABLE audit_items UPDATE summary = '{}', chain_prev = '{prev}', chain_hash = '{hash}' \
                 WHERE organization_id = 'org1' AND chain_seq = {}",
                summary.replace('\'', "\\'"),
                r.chain_seq
            ),
        )
        .await;
        prev = hash;
    }
    let refused = |cfg: Config| async move {
        tokio::time::timeout(Duration::from_secs(60), Running::start(cfg).join())
            .await
            .expect("stops promptly")
            .expect_err("refuses")
    };
    // Checkpoints left as they were: the item at the last one's position is not the one it signed.
    let err = refused(config(&env, KEY_A, &[], None)).await;
    assert!(
        format!("{err:#}").contains("is not the one the checkpoint signed"),
        "{err:#}"
    );
    mutate(
        &env.ch(),
        "ALTER TABLE audit_checkpoints DELETE WHERE organization_id = 'org1' AND chain_seq >= 2",
    )
    .await;
    // A checkpoint row written by hand at the head does not stand in for the signed ones.
    let mut fake =
        waltrail::store::query::source_checkpoints(&env.ch(), &format!("test-{}", env.name))
            .await
            .unwrap()
            .pop()
            .expect("the first checkpoint");
    fake.chain_seq = 7;
    fake.signature = "00".repeat(64);
    waltrail::store::writer::insert_checkpoints(&env.ch(), &[fake])
        .await
        .unwrap();
    let forged = verify(&env.ch(), &[public(KEY_A)]).await;
    assert!(
        failure(&forged).contains("signature does not hold"),
        "the store alone shows only the hand-written row: {forged:#?}"
    );
    mutate(
        &env.ch(),
        "ALTER TABLE audit_checkpoints DELETE WHERE organization_id = 'org1' AND chain_seq = 7",
    )
    .await;
    let forged = verify(&env.ch(), &[public(KEY_A)]).await;
    assert_eq!(
        failure(&forged),
        "",
        "the store alone does not show the forgery: {forged:#?}"
    );
    waltrail::store::writer::insert_checkpoints(
        &env.ch(),
        &[{
            let mut f = waltrail::store::query::source_checkpoints(
                &env.ch(),
                &format!("test-{}", env.name),
            )
            .await
            .unwrap()
            .pop()
            .unwrap();
            f.chain_seq = 7;
            f.signature = "00".repeat(64);
            f
        }],
    )
    .await
    .unwrap();
    let err = refused(config(&env, KEY_A, &[], Some(&file))).await;
    assert!(
        format!("{err:#}")
            .contains("does not hold the checkpoints integrity.checkpoint_file last copied"),
        "{err:#}"
    );
    // Without the copy: the checkpoint due at 5 (every 5 items) is missing.
    let err = refused(config(&env, KEY_A, &[], None)).await;
    assert!(
        format!("{err:#}").contains("one was due by 5 (every 5 items): checkpoints were deleted"),
        "{err:#}"
    );
    // Nothing was signed over it; the copy names the forgery.
    let signed: u64 = env
        .ch()
        .query("SELECT count() FROM audit_checkpoints WHERE organization_id = 'org1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(signed, 2, "the first checkpoint and the hand-written row");
    // Accepted: it signs on, and verification against the copy still names the forgery.
    let run = Running::start_with(
        config(&env, KEY_A, &[], None),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    insert(&db, 8, 8).await;
    env.wait_for(8).await;
    run.stop().await.unwrap();
    let copied: Vec<waltrail::audit::chain::Checkpoint> =
        waltrail::audit::chain::checkpoints_in_file(
            file.to_str().unwrap(),
            &format!("test-{}", env.name),
        )
        .unwrap_or_default();
    assert!(!copied.is_empty());
    let r = waltrail::store::integrity::verify_org_with(
        &env.ch(),
        "org1",
        Some(waltrail::store::query::retention_cutoff_us(30)),
        None,
        &[public(KEY_A)],
        &copied,
    )
    .await
    .unwrap();
    assert!(!failure(&r).is_empty(), "{r:#?}");
    let _ = std::fs::remove_file(&file);
}

/// A range from a day's start on an honest store whose commit times are not in chain order across that
/// start (an upstream clock ahead across midnight): an item committed after the start sits in the chain
/// before one committed, and stored, before it. The positions between items the range holds are read too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_time_ahead_across_midnight_is_no_deletion() {
    let env = TestEnv::new("t_ahead").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let run = Running::start(config(&env, KEY_A, &[], None));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    let day = 86_400_000_000i64;
    let midnight = (waltrail::store::row::now_us() / day - 1) * day;
    // Before midnight, after it (a clock ahead), before it again.
    let changes: Vec<(i64, String)> = [
        midnight - 3_600_000_000,
        midnight + 3_600_000_000,
        midnight - 3_000_000_000,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, t)| {
        (
            t,
            format!("INSERT INTO gateways VALUES ('a{i}', 'org1', 'ahead-{i}')"),
        )
    })
    .collect();
    commit_at(&db, "t_ahead_sync", &changes).await;
    insert(&db, 1, 1).await;
    env.wait_for(4).await;
    run.stop().await.unwrap();
    // As stored before midnight, all three (the stored time is not hashed).
    mutate(
        &env.ch(),
        &format!(
            "ALTER TABLE audit_items UPDATE ingested_at_us = {} + toInt64(chain_seq) WHERE chain_seq <= 3",
            midnight - 1_000_000_000
        ),
    )
    .await;
    let r = waltrail::store::integrity::verify_org(
        &env.ch(),
        "org1",
        Some(midnight),
        None,
        &[public(KEY_A)],
    )
    .await
    .unwrap();
    assert_eq!(failure(&r), "", "{r:#?}");
    let org = r.iter().find(|r| r.chain.starts_with("org1 @")).unwrap();
    assert_eq!((org.first_seq, org.last_seq), (2, 4), "{org:#?}");
}

/// Signing turned off on purpose (`integrity.signing = "off"`) over a signed trail starts without
/// `--accept-gap`, says so once in the trail, and leaves what follows unproven (never failed); a key that
/// went missing without it is refused, as is a contradiction between the setting and the keys; signing
/// turned on again holds the chain to its last checkpoint like any start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_turned_off_on_purpose_is_recorded_once_and_leaves_the_rest_unproven() {
    use waltrail::config::Signing;
    let env = TestEnv::new("t_unsigned").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let run = Running::start(config(&env, KEY_A, &[], None));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    insert(&db, 1, 7).await;
    env.wait_for(7).await;
    run.stop().await.unwrap();
    let public_a = public(KEY_A);
    let with = |key: bool, signing: Signing| {
        // Going on unsigned keeps the key's public half trusted, so the signed history still verifies.
        let trusted: &[&PublicKey] = if key { &[] } else { &[&public_a] };
        let mut cfg = config(&env, KEY_A, trusted, None);
        if !key {
            cfg.integrity.signing_key = None;
        }
        cfg.integrity.signing = signing;
        cfg
    };
    let refused = |cfg: Config| async move {
        let err = tokio::time::timeout(Duration::from_secs(60), Running::start(cfg).join())
            .await
            .expect("stops promptly")
            .expect_err("refuses");
        format!("{err:#}")
    };
    // The key gone missing: refused, naming the setting that goes on unsigned on purpose.
    let err = refused(with(false, Signing::Auto)).await;
    assert!(
        err.contains("no signing key") && err.contains("integrity.signing = \"off\""),
        "{err}"
    );
    // check says what run refuses.
    let failed = |findings: Vec<waltrail::finding::Finding>, what: &str| {
        findings
            .iter()
            .any(|f| f.status == waltrail::finding::Status::Fail && f.what.contains(what))
    };
    assert!(failed(
        waltrail::check::run(&with(false, Signing::Auto)).await,
        "but no signing key is configured: run refuses"
    ));
    // The setting and the keys contradict each other.
    let err = refused(with(true, Signing::Off)).await;
    assert!(err.contains("but a signing key is configured"), "{err}");
    let err = refused(with(false, Signing::Required)).await;
    assert!(err.contains("no signing key is configured"), "{err}");
    // Off without the public key it was signed with: verification would fail the signed history.
    let mut untrusted = with(false, Signing::Off);
    untrusted.integrity.trusted_keys.clear();
    assert!(failed(
        waltrail::check::run(&untrusted).await,
        "that no configured key trusts"
    ));
    let err = refused(untrusted).await;
    assert!(err.contains("trusted_keys is empty"), "{err}");
    // ... or with another key trusted instead.
    let mut other = with(false, Signing::Off);
    other.integrity.trusted_keys = vec![public(KEY_B).to_text()];
    let err = refused(other).await;
    assert!(
        err.contains("that integrity.trusted_keys does not hold"),
        "{err}"
    );

    let signing_gaps = || async {
        env.ch()
            .query("SELECT count() FROM audit_items FINAL WHERE action = 'AUDIT_ACTION_GAP' AND resource_id LIKE '%/checkpoint-signing'")
            .fetch_one::<u64>()
            .await
            .unwrap()
    };
    // Off on purpose: it starts, past where the next checkpoint was due, twice, and records it once.
    for (from, to) in [(8, 12), (13, 14)] {
        let run = Running::start(with(false, Signing::Off));
        insert(&db, from, to).await;
        // The items and the record of signing turned off.
        env.wait_for(to as u64 + 1).await;
        run.stop().await.unwrap();
        assert_eq!(signing_gaps().await, 1, "recorded once");
    }
    let reports = verify(&env.ch(), &[public(KEY_A)]).await;
    assert_eq!(failure(&reports), "", "{reports:#?}");
    let org = reports
        .iter()
        .find(|r| r.chain.starts_with("org1 "))
        .unwrap();
    assert_eq!(
        (org.last_seq, org.verified_seq),
        (14, 5),
        "proven up to the last checkpoint: {org:#?}"
    );
    assert!(
        org.unproven
            .as_deref()
            .is_some_and(|u| u.contains("checkpoint signing was turned off")),
        "what followed is not proven (PART, API unsigned): {org:#?}"
    );

    // Signing on again: the chain grew past the due checkpoint unsigned; the start says why and asks.
    let err = refused(with(true, Signing::Auto)).await;
    assert!(
        err.contains("was due by 10") && err.contains("checkpoint signing was turned off"),
        "{err}"
    );
    let run = Running::start_with(
        with(true, Signing::Auto),
        waltrail::pipeline::RunOptions {
            accept_gap: true,
            ..Default::default()
        },
    );
    insert(&db, 15, 15).await;
    env.wait_for(16).await;
    run.stop().await.unwrap();
    let reports = verify(&env.ch(), &[public(KEY_A)]).await;
    assert_eq!(failure(&reports), "", "{reports:#?}");
    let org = reports
        .iter()
        .find(|r| r.chain.starts_with("org1 "))
        .unwrap();
    assert_eq!(org.verified_seq, 15, "signed on from its head: {org:#?}");
    assert_eq!(org.unproven, None, "{org:#?}");
    // The platform chain, which holds only the record that signing stopped, is signed as it stands.
    let platform = reports
        .iter()
        .find(|r| r.chain.starts_with("(platform)"))
        .expect("the platform chain");
    assert_eq!(
        (platform.verified_seq, &platform.unproven),
        (1, &None),
        "{platform:#?}"
    );
}

/// A crash right after a start that recorded an accepted gap, before capture confirmed anything: the next
/// start resumes at the same position and must read the gap's record, checkpoint and roster as stored
/// (they were placed at the resume position and read as a transaction to replay: the checkpoint missed made
/// the start refuse, the roster missed had its number used twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_an_accepted_gap_restarts_without_flags() {
    let env = TestEnv::new("t_gapcrash").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let every2 = || {
        let mut cfg = config(&env, KEY_A, &[], None);
        cfg.integrity.checkpoint_every_items = 2;
        cfg
    };
    let run = Running::start(every2());
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    // The platform chain's first item (checkpointed), and an organization's.
    db.batch_execute("TRUNCATE gateways").await.unwrap();
    insert(&db, 1, 1).await;
    env.wait_for(2).await;
    run.stop().await.unwrap();
    db.execute(
        "SELECT pg_drop_replication_slot($1)",
        &[&format!("slot_{}", env.name)],
    )
    .await
    .unwrap();
    // The gap accepted by a process killed as soon as its record is stored (the platform chain's second
    // item: a checkpoint was due there).
    let cfg_path = env.config_file(TABLES, 10_000);
    let text =
        std::fs::read_to_string(&cfg_path).unwrap() + "\n[integrity]\ncheckpoint_every_items = 2\n";
    std::fs::write(&cfg_path, text).unwrap();
    let log = std::env::temp_dir().join(format!("t_gapcrash-{}.log", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args([
            "run",
            "--accept-gap",
            "--config",
            cfg_path.to_str().unwrap(),
        ])
        .env("WALTRAIL_SIGNING_KEY", KEY_A)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for(3).await;
    child.kill().unwrap();
    let _ = child.wait();
    // Plain restarts go on; a new chain gets a roster number of its own.
    let run = Running::start(every2());
    insert(&db, 2, 2).await;
    db.execute(
        "INSERT INTO gateways VALUES ('n1', 'org2', 'new chain')",
        &[],
    )
    .await
    .unwrap();
    let run = run
        .until_stored(&env, 5, "the start after the crash goes on")
        .await;
    run.stop().await.unwrap();
    let reused: Vec<(u64, u64)> = env
        .ch()
        .query(
            "SELECT roster_seq, uniqExact(chains_sha256) AS n FROM audit_rosters \
             GROUP BY roster_seq HAVING n > 1",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(reused, vec![], "roster numbers used for two rosters");
    for org in ["org1", "org2"] {
        let r = verify_as(&env.ch(), org, &[public(KEY_A)]).await;
        assert_eq!(failure(&r), "", "{r:#?}");
    }
}

/// Verification while capture writes (checkpoints every few items): every answer says intact. Items were
/// read before checkpoints, and a checkpoint stored in between read as a cut tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_while_capture_writes_finds_nothing_wrong() {
    let env = TestEnv::new("t_busy").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let mut cfg = config(&env, KEY_A, &[], None);
    cfg.integrity.checkpoint_every_items = 2;
    let run = Running::start(cfg);
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    let writer = {
        let db = env.pg().await;
        tokio::spawn(async move {
            for i in 0..400u32 {
                db.execute(
                    "INSERT INTO gateways VALUES ($1, 'org1', 'busy')",
                    &[&format!("b{i}")],
                )
                .await
                .unwrap();
            }
        })
    };
    env.wait_for(20).await;
    // Until the writer is done and capture has stored everything it wrote.
    let mut checked = 0;
    loop {
        let r = verify(&env.ch(), &[public(KEY_A)]).await;
        assert_eq!(failure(&r), "", "after {checked} checks: {r:#?}");
        checked += 1;
        if writer.is_finished() && env.count().await >= 400 {
            break;
        }
    }
    writer.await.unwrap();
    run.stop().await.unwrap();
}

/// A pending gap recorded by a start killed before the report that stops carrying it: the next start,
/// resuming at the same position, finds it stored and does not link it a second time (read collapsed by
/// id, the second copy's position was a hole: every verification failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_gap_recorded_before_a_crash_is_not_recorded_twice() {
    let env = TestEnv::new("t_pendcrash").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, name text)")
        .await
        .unwrap();
    let run = Running::start(config(&env, KEY_A, &[], None));
    wait_slot(&db, &format!("slot_{}", env.name)).await;
    db.batch_execute("TRUNCATE gateways").await.unwrap();
    insert(&db, 1, 1).await;
    env.wait_for(2).await;
    run.stop().await.unwrap();
    let source = format!("test-{}", env.name);
    let pending = serde_json::json!([{
        "reason": "public.gw_part was UNLOGGED (found at 2026-11-30 10:00:00 UTC): its changes were never written to the WAL",
        "from_lsn": null, "from_time_us": null, "table": "public.gw_part"
    }])
    .to_string();
    let carry = |pending: String| {
        let ch = env.ch();
        let source = source.clone();
        async move {
            let mut last = waltrail::store::sources::latest(&ch)
                .await
                .unwrap()
                .into_iter()
                .find(|r| r.source_id == source)
                .expect("a report of the source");
            last.pending_gaps = pending;
            last.reported_at_us = waltrail::store::row::now_us() as u64;
            waltrail::store::sources::report(&ch, &last).await.unwrap();
        }
    };
    carry(pending.clone()).await;
    // The start that records it, killed once it has (nothing confirmed: status every 10 s).
    let cfg_path = env.config_file(TABLES, 10_000);
    let text = std::fs::read_to_string(&cfg_path).unwrap() + "\n[integrity]\n";
    std::fs::write(&cfg_path, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["run", "--config", cfg_path.to_str().unwrap()])
        .env("WALTRAIL_SIGNING_KEY", KEY_A)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for(3).await;
    child.kill().unwrap();
    let _ = child.wait();
    // As if the report that stops carrying it never went out.
    carry(pending).await;
    let run = Running::start(config(&env, KEY_A, &[], None));
    insert(&db, 2, 2).await;
    env.wait_for(4).await;
    run.stop().await.unwrap();
    let positions: Vec<u64> = env
        .ch()
        .query(
            "SELECT DISTINCT chain_seq FROM audit_items WHERE action = 'AUDIT_ACTION_GAP' \
             AND table_name = 'public.gw_part'",
        )
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(positions.len(), 1, "linked once: {positions:?}");
    for org in ["org1", ""] {
        let r = verify_as(&env.ch(), org, &[public(KEY_A)]).await;
        assert_eq!(failure(&r), "", "{r:#?}");
    }
}

/// Retention shortens chains from their oldest end only. A day that holds positions past items that later
/// days keep (the clock stepped back: items captured then were given old days) is kept until the days
/// before it in those chains are gone; dropping it first left a hole that verification reads as deleted
/// items.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_never_cuts_a_chain_in_the_middle() {
    let env = TestEnv::new("t_retention_middle").await;
    let cfg = env.config("[[tables]]\ntable = \"t\"\nresource_type = \"RESOURCE_TYPE_X\"\n");
    waltrail::store::schema::migrate(&cfg.clickhouse)
        .await
        .expect("migrate");
    let ch = env.ch();
    let day_us = 86_400_000_000i64;
    let now_us = waltrail::store::row::now_us();
    // (days ago, chain positions): the stepped-back day 40 holds positions after day 35's.
    for (ago, seqs) in [(40i64, 5..=6u64), (35, 1..=4), (0, 7..=7)] {
        for seq in seqs {
            let t = now_us - ago * day_us;
            ch.query(
                "INSERT INTO audit_items (id, source_id, organization_id, occurred_at_us, ingested_at_us, action, \
                 summary, version, chain_seq) SELECT generateUUIDv4(), 'src', 'o', t, t, 'AUDIT_ACTION_CREATED', ?, 1, ? \
                 FROM (SELECT toInt64(?) AS t)",
            )
            .bind(format!("day -{ago}"))
            .bind(seq)
            .bind(t)
            .execute()
            .await
            .unwrap();
        }
    }
    let days = || async {
        env.ch()
            .query("SELECT DISTINCT summary FROM audit_items ORDER BY summary")
            .fetch_all::<String>()
            .await
            .unwrap()
    };
    let layout = waltrail::store::cluster::Layout::Single;
    // First pass: day -35 (the chain's oldest positions) goes; day -40 stays, its positions being past them.
    waltrail::store::retention::drop_expired(&ch, &layout, 30)
        .await
        .unwrap();
    assert_eq!(days().await, ["day -0", "day -40"]);
    // Next pass: day -40 is now the chain's oldest stretch.
    waltrail::store::retention::drop_expired(&ch, &layout, 30)
        .await
        .unwrap();
    assert_eq!(days().await, ["day -0"]);
}
