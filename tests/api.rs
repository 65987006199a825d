//! The REST API on a real ClickHouse (and, where capture matters, a real Postgres), over real HTTP.

mod harness;

use harness::procfs::vm_hwm_kb;
use harness::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;
use waltrail::audit::item::{Actor, AuditItem};
use waltrail::config::Config;
use waltrail::store::row::{now_us, ItemRow};
use waltrail::store::writer::insert_batch;

const ADMIN_KEY: &str = "admin-key-org1";
const MEMBER_KEY: &str = "member-key-org1-p1";
const OTHER_ORG_KEY: &str = "admin-key-org2";
const NO_PROJECT_KEY: &str = "member-key-org1-none";

fn sha(k: &str) -> String {
    waltrail::api::auth::sha256_hex(k)
}

fn api_section(rate: u32) -> String {
    format!(
        r#"
[api]
listen = "127.0.0.1:{port}"
rate_limit_per_minute = {rate}

[[api.keys]]
name = "siem"
sha256 = "{a}"
org_id = "org1"
role = "admin"

[[api.keys]]
name = "p1-member"
sha256 = "{m}"
org_id = "org1"
role = "member"
projects = ["p1"]

[[api.keys]]
name = "org2-admin"
sha256 = "{o}"
org_id = "org2"
role = "admin"

[[api.keys]]
name = "no-project-member"
sha256 = "{n}"
org_id = "org1"
role = "member"
projects = []
"#,
        port = free_port(),
        a = sha(ADMIN_KEY),
        m = sha(MEMBER_KEY),
        o = sha(OTHER_ORG_KEY),
        n = sha(NO_PROJECT_KEY),
    )
}

const TABLES: &str = r#"
[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
organization_column = "org_id"
project_column = "project_id"
display_column = "name"
redact_columns = ["secret"]
[[tables.derived_actions]]
action = "AUDIT_ACTION_ROTATED"
changed = ["secret"]
"#;

/// The config text of this file's API tests: the test's store, the tables, the API at `rate` requests/s.
fn api_text(env: &TestEnv, rate: u32) -> String {
    format!("{}\n{}", env.config_text(TABLES), api_section(rate))
}

/// The API in this process on the test's store, migrated first.
async fn start_api(env: &TestEnv, rate: u32) -> Api {
    let cfg = Arc::new(Config::parse(&api_text(env, rate)).unwrap());
    cfg.validate().unwrap();
    waltrail::store::schema::migrate(&cfg.clickhouse)
        .await
        .unwrap();
    Api::start(cfg).await
}

/// An item as capture would write it, for filling the store quickly.
fn item(n: u64, org: &str, project: &str, t_us: i64) -> ItemRow {
    let actor = Actor {
        principal_id: format!("acct{}", n % 3),
        principal_type: if n % 5 == 0 {
            waltrail::vocab::PrincipalType::Agent
        } else {
            waltrail::vocab::PrincipalType::Account
        },
        email: format!("user{}@example.com", n % 3),
        source: if n % 2 == 0 {
            "AUDIT_SOURCE_API".into()
        } else {
            "AUDIT_SOURCE_DASHBOARD".into()
        },
        ..Actor::default()
    };
    let action = [
        "AUDIT_ACTION_CREATED",
        "AUDIT_ACTION_UPDATED",
        "AUDIT_ACTION_DELETED",
    ][(n % 3) as usize];
    let rtype = ["RESOURCE_TYPE_GATEWAY", "RESOURCE_TYPE_API_KEY"][(n % 2) as usize];
    ItemRow::from_item(
        AuditItem {
            id: Uuid::new_v4(),
            event_id: Uuid::new_v4(),
            source_id: "api-test".into(),
            occurred_at_us: t_us,
            commit_lsn: 1_000_000 + n,
            xid: n as u32,
            seq: 0,
            action: action.into(),
            actor,
            organization_id: org.into(),
            project_id: project.into(),
            resource_type: rtype.into(),
            resource_id: format!("r{n}"),
            resource_display: format!("res-{n}"),
            changed_fields: vec![format!("f{}", n % 4)],
            diff: json!({format!("f{}", n % 4): {"before": 1, "after": 2}}).to_string(),
            table_name: "public.t".into(),
            summary: format!("someone did {n}"),
            platform_wide: false,
        },
        now_us(),
    )
}

async fn fill(env: &TestEnv, rows: Vec<ItemRow>) {
    for chunk in rows.chunks(50_000) {
        insert_batch(&env.ch(), chunk).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_fields_detail_and_export_record_through_capture() {
    let env = TestEnv::new("api_e2e").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, project_id text, name text, secret text)")
        .await
        .unwrap();
    let api = start_api(&env, 1000).await;
    let run = Running::start(Config::parse(&api_text(&env, 1000)).unwrap());
    wait_slot(&db, "slot_api_e2e").await;
    db.batch_execute(
        r#"BEGIN;
           SELECT pg_logical_emit_message(true, 'waltrail', '{"actor_id":"acct_alice","actor_email":"alice@example.com","source":"API","client_ip":"10.0.0.9","request_id":"r-1"}');
           INSERT INTO gateways VALUES ('gw1', 'org1', 'p1', 'arcade', 's1');
           INSERT INTO gateways VALUES ('gw2', 'org1', 'p2', 'other', 's1');
           COMMIT;
           UPDATE gateways SET secret = 's2', name = 'arcade-2' WHERE id = 'gw1';"#,
    )
    .await
    .unwrap();
    env.wait_for(3).await;
    let (status, body) = api
        .get(
            ADMIN_KEY,
            "/api/v1/orgs/org1/audit_logs?action=AUDIT_ACTION_CREATED&limit=10",
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["code"], 200);
    assert_eq!(body["msg"], "Request successful");
    let data = &body["data"];
    assert_eq!(data["has_more"], false);
    assert_eq!(data["next_cursor"], "");
    let items = data["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let gw1 = items.iter().find(|i| i["resource_id"] == "gw1").unwrap();
    for field in [
        "id",
        "event_id",
        "timestamp",
        "action",
        "source",
        "display_name",
        "organization_id",
        "principal_type",
        "resource_type",
        "resource_display",
        "created_time",
        "project_id",
        "principal_id",
        "resource_id",
        "client_ip",
        "changed_fields",
        "summary",
    ] {
        assert!(gw1.get(field).is_some(), "missing {field}");
    }
    assert_eq!(gw1["action"], "AUDIT_ACTION_CREATED");
    assert_eq!(gw1["source"], "AUDIT_SOURCE_API");
    assert_eq!(gw1["principal_type"], "ACCOUNT");
    assert_eq!(gw1["resource_type"], "RESOURCE_TYPE_GATEWAY");
    assert_eq!(gw1["resource_display"], "arcade");
    assert_eq!(gw1["organization_id"], "org1");
    assert_eq!(gw1["client_ip"], "10.0.0.9");
    assert_eq!(
        gw1["summary"],
        "alice@example.com created Gateway \"arcade\""
    );
    assert!(gw1["timestamp"].as_str().unwrap().ends_with('Z'));
    validate_openapi(&body, "Page");

    // One item: changes with redaction, context, the other items of its transaction.
    let id = gw1["id"].as_str().unwrap();
    let (s, one) = api
        .get(ADMIN_KEY, &format!("/api/v1/orgs/org1/audit_logs/{id}"))
        .await;
    assert_eq!(s, 200);
    validate_openapi(&one, "AuditLogDetail");
    let d = &one["data"];
    assert_eq!(d["changes"]["name"], json!({"after": "arcade"}));
    assert_eq!(d["changes"]["secret"], json!({"redacted": true}));
    assert_eq!(d["context"]["request_id"], "r-1");
    let siblings = d["transaction_item_ids"].as_array().unwrap();
    assert_eq!(siblings.len(), 1);
    assert_ne!(siblings[0], gw1["id"]);
    let rotated = api
        .items(
            ADMIN_KEY,
            "/api/v1/orgs/org1/audit_logs?action=AUDIT_ACTION_ROTATED",
        )
        .await;
    assert_eq!(rotated.len(), 1);
    let (_, r) = api
        .get(
            ADMIN_KEY,
            &format!(
                "/api/v1/orgs/org1/audit_logs/{}",
                rotated[0]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(r["data"]["changes"]["secret"], json!({"redacted": true}));
    assert_eq!(
        r["data"]["changes"]["name"],
        json!({"before": "arcade", "after": "arcade-2"})
    );
    assert!(!r.to_string().contains("s2"), "redacted value never leaves");

    // Export: streamed, and itself recorded as an audit item through the WAL.
    let resp = api
        .http
        .get(format!(
            "{}/api/v1/orgs/org1/audit_logs/export?format=csv&resource_type=RESOURCE_TYPE_GATEWAY",
            api.base
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .contains("audit_logs-org1.csv"));
    let csv = resp.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("id,event_id,timestamp"));
    // Who acted is told apart from nobody named ("Unaccounted") in a spreadsheet too.
    assert!(
        lines[0].ends_with(",summary,actor_source,on_behalf_of_id,client_ip,platform_wide"),
        "{}",
        lines[0]
    );
    assert_eq!(lines.len(), 4, "{csv}");
    env.wait_for(4).await;
    let exported = api
        .items(
            ADMIN_KEY,
            "/api/v1/orgs/org1/audit_logs?action=AUDIT_ACTION_EXPORTED",
        )
        .await;
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0]["principal_id"], "siem");
    assert_eq!(exported[0]["resource_type"], "RESOURCE_TYPE_AUDIT_LOG");
    assert_eq!(exported[0]["summary"], "siem exported the audit log");
    assert_eq!(exported[0]["source"], "AUDIT_SOURCE_API");
    let (_, e) = api
        .get(
            ADMIN_KEY,
            &format!(
                "/api/v1/orgs/org1/audit_logs/{}",
                exported[0]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(e["data"]["changes"]["format"], "csv");
    assert_eq!(
        e["data"]["changes"]["filters"]["resource_type"],
        json!(["RESOURCE_TYPE_GATEWAY"])
    );
    run.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_alone_and_combined() {
    let env = TestEnv::new("api_filters").await;
    let api = start_api(&env, 10_000).await;
    let base = now_us() - 3_600_000_000;
    let rows: Vec<ItemRow> = (0..60)
        .map(|n| {
            item(
                n,
                "org1",
                if n % 2 == 0 { "p1" } else { "p2" },
                base + n as i64 * 1_000_000,
            )
        })
        .collect();
    let expected = |pred: &dyn Fn(u64) -> bool| -> HashSet<String> {
        (0..60u64)
            .filter(|n| pred(*n))
            .map(|n| format!("r{n}"))
            .collect()
    };
    fill(&env, rows).await;
    let got = |items: Vec<Value>| -> HashSet<String> {
        items
            .iter()
            .map(|i| i["resource_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let q = |s: &str| format!("/api/v1/orgs/org1/audit_logs?limit=100&{s}");
    let cases: Vec<(String, HashSet<String>)> = vec![
        (q("action=AUDIT_ACTION_CREATED"), expected(&|n| n % 3 == 0)),
        (q("action=AUDIT_ACTION_CREATED&action=AUDIT_ACTION_DELETED"), expected(&|n| n % 3 != 1)),
        (q("resource_type=RESOURCE_TYPE_API_KEY"), expected(&|n| n % 2 == 1)),
        (q("source=AUDIT_SOURCE_API"), expected(&|n| n % 2 == 0)),
        (q("principal_type=AGENT"), expected(&|n| n % 5 == 0)),
        (q("principal_id=acct1"), expected(&|n| n % 3 == 1)),
        (q("user=user2%40example.com"), expected(&|n| n % 3 == 2)),
        // An email in any case is the same address.
        (q("user=User2%40EXAMPLE.com"), expected(&|n| n % 3 == 2)),
        (q("project_id=p2"), expected(&|n| n % 2 == 1)),
        (q("resource_id=r7&resource_id=r8"), expected(&|n| n == 7 || n == 8)),
        (q("changed_field=f3"), expected(&|n| n % 4 == 3)),
        (q(&format!("since={}", ts(base + 50_000_000))), expected(&|n| n >= 50)),
        (q(&format!("until={}", ts(base + 10_000_000))), expected(&|n| n < 10)),
        (
            q(&format!(
                "resource_type=RESOURCE_TYPE_GATEWAY&action=AUDIT_ACTION_UPDATED&project_id=p1&since={}",
                ts(base + 20_000_000)
            )),
            expected(&|n| n % 2 == 0 && n % 3 == 1 && n >= 20),
        ),
    ];
    for (path, want) in cases {
        assert!(
            !want.is_empty(),
            "{path}: a case that matches nothing proves nothing"
        );
        let have = got(api.items(ADMIN_KEY, &path).await);
        assert_eq!(have, want, "{path}");
    }
    // Newest first.
    let items = api
        .items(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs?limit=5")
        .await;
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["resource_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r59", "r58", "r57", "r56", "r55"]);
    // Project route adds the project filter.
    let p1 = got(api
        .items(
            ADMIN_KEY,
            "/api/v1/orgs/org1/projects/p1/audit_logs?limit=100",
        )
        .await);
    assert_eq!(p1, expected(&|n| n % 2 == 0));
    // Facets list what is there.
    let (_, f) = api
        .get(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs/facets")
        .await;
    validate_openapi(&f, "Facets");
    assert_eq!(f["data"]["project_id"], json!(["p1", "p2"]));
    assert_eq!(f["data"]["user"].as_array().unwrap().len(), 3);
}

fn ts(us: i64) -> String {
    waltrail::api::timestamp(us).replace(':', "%3A")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_never_repeats_or_skips_while_items_arrive() {
    let env = TestEnv::new("api_paging").await;
    let api = start_api(&env, 100_000).await;
    let base = now_us() - 7_200_000_000;
    // Several items share a timestamp (one transaction), to exercise the id tie-break.
    let rows: Vec<ItemRow> = (0..1000)
        .map(|n| item(n, "org1", "p1", base + (n / 3) as i64 * 1_000))
        .collect();
    let want: HashSet<String> = rows.iter().map(|r| r.id.to_string()).collect();
    fill(&env, rows).await;
    // Keep inserting newer items (and replays of old ones) while paging.
    let ch = env.ch();
    let writer = tokio::spawn(async move {
        for k in 0..40u64 {
            let fresh: Vec<ItemRow> = (0..10)
                .map(|j| item(10_000 + k * 10 + j, "org1", "p1", now_us()))
                .collect();
            insert_batch(&ch, &fresh).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let until = ts(base + 10_000_000);
    loop {
        let path = if cursor.is_empty() {
            format!("/api/v1/orgs/org1/audit_logs?limit=7&until={until}")
        } else {
            format!("/api/v1/orgs/org1/audit_logs?limit=7&until={until}&cursor={cursor}")
        };
        let (s, v) = api.get(ADMIN_KEY, &path).await;
        assert_eq!(s, 200, "{v}");
        let items = v["data"]["items"].as_array().unwrap();
        assert!(items.len() <= 7);
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        if v["data"]["has_more"] == false {
            assert_eq!(v["data"]["next_cursor"], "");
            break;
        }
        cursor = v["data"]["next_cursor"].as_str().unwrap().to_owned();
    }
    writer.await.unwrap();
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no page repeats an item");
    assert_eq!(unique, want, "no item skipped");
    assert_eq!(seen.len().div_ceil(7), 143);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_pages_and_export_cross_window_edges_in_order() {
    // Pages are looked for in widening windows (an hour, a day, a week, everything): a page that spans a
    // window's edge, or a window with fewer items than a page, must neither skip nor reorder items.
    let env = TestEnv::new("api_windows").await;
    let api = start_api(&env, 100_000).await;
    let now = now_us();
    let hour = 3_600_000_000i64;
    let mut rows = Vec::new();
    let mut n = 0u64;
    // (how many, from, to) hours ago: sparse recent data, denser older data, one item past a week.
    for (count, from_h, to_h) in [(3, 0, 1), (9, 1, 24), (17, 24, 168), (23, 168, 480)] {
        for k in 0..count {
            let t = now - from_h * hour - (to_h - from_h) * hour * (k + 1) / (count + 1);
            rows.push(item(n, "org1", "p1", t));
            n += 1;
        }
    }
    // Two items with the same commit time, on both sides of a page edge.
    rows.push(item(n, "org1", "p1", now - 2 * hour));
    rows.push(item(n + 1, "org1", "p1", now - 2 * hour));
    let time_of: std::collections::HashMap<String, i64> = rows
        .iter()
        .map(|r| (r.id.to_string(), r.occurred_at_us))
        .collect();
    // Replayed copies (as after a crash before the acknowledgement) of items spread over the days.
    let replays: Vec<ItemRow> = rows.iter().step_by(5).cloned().collect();
    fill(&env, rows).await;
    fill(&env, replays).await;
    // Ties on commit time are ordered by id as ClickHouse orders UUIDs (not as their text sorts): the
    // whole list in one page is the reference every smaller page size must reproduce.
    let mut reference: Option<Vec<String>> = None;
    // A filter that matches every item still walks the same windows.
    for filter in ["", "&project_id=p1"] {
        for limit in [100, 50, 5, 2, 1] {
            let mut seen = Vec::new();
            let mut cursor = String::new();
            loop {
                let mut path = format!("/api/v1/orgs/org1/audit_logs?limit={limit}{filter}");
                if !cursor.is_empty() {
                    path.push_str(&format!("&cursor={cursor}"));
                }
                let (s, v) = api.get(ADMIN_KEY, &path).await;
                assert_eq!(s, 200, "{v}");
                let items = v["data"]["items"].as_array().unwrap();
                seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
                if v["data"]["has_more"] == false {
                    break;
                }
                assert_eq!(items.len(), limit, "a page with more after it is full");
                cursor = v["data"]["next_cursor"].as_str().unwrap().to_owned();
            }
            let times: Vec<i64> = seen.iter().map(|id| time_of[id]).collect();
            assert!(
                times.windows(2).all(|w| w[0] >= w[1]),
                "limit {limit}{filter}: newest first"
            );
            let unique: HashSet<&String> = seen.iter().collect();
            assert_eq!(
                unique.len(),
                seen.len(),
                "limit {limit}{filter}: no repeats"
            );
            assert_eq!(
                seen.len(),
                time_of.len(),
                "limit {limit}{filter}: none skipped"
            );
            match &reference {
                None => reference = Some(seen),
                Some(r) => assert_eq!(&seen, r, "limit {limit}{filter}: same order as one page"),
            }
        }
    }
    // Export reads a day at a time, newest first: the same items in the same order, each once.
    let reference = reference.unwrap();
    for (query, expect) in [
        ("format=ndjson", reference.clone()),
        (
            // `since` stops the export partway, at a day that is not a window edge.
            &format!("format=ndjson&since={}", ts(now - 100 * hour)) as &str,
            reference
                .iter()
                .filter(|id| time_of[*id] >= now - 100 * hour)
                .cloned()
                .collect(),
        ),
    ] {
        let body = api
            .text(
                ADMIN_KEY,
                &format!("/api/v1/orgs/org1/audit_logs/export?{query}"),
            )
            .await;
        // Item lines; the trailer (the export's description, checkpoints) has no id.
        let exported: Vec<String> = body
            .lines()
            .filter_map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                v["id"].as_str().map(str::to_owned)
            })
            .collect();
        assert!(
            body.lines()
                .last()
                .is_some_and(|l| l.starts_with(r#"{"export":"#)),
            "the export closes with its description"
        );
        assert_eq!(exported, expect, "export {query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asc_poller_sees_late_commits_and_no_replays() {
    let env = TestEnv::new("api_poll").await;
    let api = start_api(&env, 100_000).await;
    let t = now_us() - 60_000_000;
    let mut first = item(1, "org1", "p1", t);
    first.commit_lsn = 100;
    fill(&env, vec![first.clone()]).await;
    let (_, v) = api.get(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs").await;
    let mut cursor = v["data"]["poll_cursor"].as_str().unwrap().to_owned();
    let poll = |c: String| {
        let api = &api;
        async move {
            let (s, v) = api
                .get(
                    ADMIN_KEY,
                    &format!("/api/v1/orgs/org1/audit_logs?order=asc&cursor={c}"),
                )
                .await;
            assert_eq!(s, 200, "{v}");
            validate_openapi(&v, "Page");
            let ids: Vec<String> = v["data"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["resource_id"].as_str().unwrap().to_owned())
                .collect();
            (ids, v["data"]["next_cursor"].as_str().unwrap().to_owned())
        }
    };
    let (ids, c) = poll(cursor.clone()).await;
    assert!(ids.is_empty());
    cursor = c;
    // A later commit whose commit time is older than the first item's, and a replay of the first item.
    let mut late = item(2, "org1", "p1", t - 5_000_000);
    late.commit_lsn = 200;
    // The replay's copy differs (as one joined with a context row changed since would): stored later, it
    // has the lower version, the one merges drop.
    let mut replay = first.clone();
    replay.ingested_at_us = now_us();
    replay.version = u64::MAX - replay.ingested_at_us as u64;
    replay.principal_id = "someone-else".into();
    fill(&env, vec![late, replay]).await;
    let (ids, c) = poll(cursor).await;
    assert_eq!(
        ids,
        ["r2"],
        "the late commit is picked up; the replay is not news"
    );
    let (ids, _) = poll(c).await;
    assert!(ids.is_empty());
    // Desc listing never shows the replayed copy twice, and shows the copy merges keep, as does the item.
    let all = api.items(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs").await;
    assert_eq!(all.len(), 2);
    let r1 = all.iter().find(|i| i["resource_id"] == "r1").unwrap();
    assert_eq!(r1["principal_id"], first.principal_id.as_str());
    let (s, one) = api
        .get(
            ADMIN_KEY,
            &format!("/api/v1/orgs/org1/audit_logs/{}", first.id),
        )
        .await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(
        one["data"]["principal_id"],
        first.principal_id.as_str(),
        "{one}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_is_scoped_and_nothing_leaks() {
    let env = TestEnv::new("api_access").await;
    let api = start_api(&env, 100_000).await;
    let t = now_us() - 1_000_000;
    fill(
        &env,
        vec![
            item(1, "org1", "p1", t),
            item(2, "org1", "p2", t),
            item(3, "org1", "", t),
            item(4, "org2", "p1", t),
        ],
    )
    .await;
    let ids = |items: Vec<Value>| -> Vec<String> {
        let mut v: Vec<String> = items
            .iter()
            .map(|i| i["resource_id"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(api.items(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs").await),
        ["r1", "r2", "r3"]
    );
    assert_eq!(
        ids(api.items(MEMBER_KEY, "/api/v1/orgs/org1/audit_logs").await),
        ["r1"],
        "member: its projects only"
    );
    // QA36 L1: a member of no project sees nothing, and gets an answer (18.16 could not type the query).
    assert!(
        ids(api
            .items(NO_PROJECT_KEY, "/api/v1/orgs/org1/audit_logs")
            .await)
        .is_empty(),
        "member of no project"
    );
    assert_eq!(
        ids(api
            .items(MEMBER_KEY, "/api/v1/orgs/org1/audit_logs?project_id=p2")
            .await),
        Vec::<String>::new()
    );
    let (s, v) = api
        .get(MEMBER_KEY, "/api/v1/orgs/org1/projects/p2/audit_logs")
        .await;
    assert_eq!((s, v["code"].as_u64()), (403, Some(403)));
    let (s, v) = api.get(ADMIN_KEY, "/api/v1/orgs/org2/audit_logs").await;
    assert_eq!(s, 404, "another org answers like a missing one: {v}");
    let (s2, v2) = api
        .get(ADMIN_KEY, "/api/v1/orgs/no-such-org/audit_logs")
        .await;
    assert_eq!((s2, &v2["msg"]), (404, &v["msg"]));
    // An item id of another org is not found, not forbidden.
    let other = api
        .items(OTHER_ORG_KEY, "/api/v1/orgs/org2/audit_logs")
        .await;
    let other_id = other[0]["id"].as_str().unwrap();
    let (s, _) = api
        .get(
            ADMIN_KEY,
            &format!("/api/v1/orgs/org1/audit_logs/{other_id}"),
        )
        .await;
    assert_eq!(s, 404);
    let r2 = api
        .items(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs?resource_id=r2")
        .await;
    let (s, _) = api
        .get(
            MEMBER_KEY,
            &format!(
                "/api/v1/orgs/org1/audit_logs/{}",
                r2[0]["id"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(s, 404, "a member cannot open another project's item");
    let (_, f) = api
        .get(MEMBER_KEY, "/api/v1/orgs/org1/audit_logs/facets")
        .await;
    assert_eq!(f["data"]["project_id"], json!(["p1"]));
    for (key, status) in [("", 401), ("wrong", 401)] {
        let r = api
            .http
            .get(format!("{}/api/v1/orgs/org1/audit_logs", api.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["code"], status);
    }
    let r = api
        .http
        .get(format!("{}/api/v1/orgs/org1/audit_logs", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, me) = api.get(MEMBER_KEY, "/api/v1/me").await;
    assert_eq!(s, 200);
    validate_openapi(&me, "Me");
    assert_eq!(
        me["data"],
        json!({"org_id": "org1", "role": "member", "principal_id": "p1-member", "key_name": "p1-member", "projects": ["p1"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_400_never_500() {
    let env = TestEnv::new("api_bad").await;
    let api = start_api(&env, 100_000).await;
    fill(&env, vec![item(1, "org1", "p1", now_us())]).await;
    for q in [
        "limit=-1",
        "limit=0",
        "limit=101",
        "limit=1e9",
        "limit=abc",
        "cursor=garbage",
        "cursor=%27%3B%20DROP%20TABLE",
        "since=yesterday",
        "until=2026-02-30T00:00:00Z",
        "action=AUDIT_ACTION_EXPLODED",
        "resource_type=RESOURCE_TYPE_NOPE",
        "principal_type=ROBOT",
        "source=AUDIT_SOURCE_%27%20OR%201%3D1",
        "order=random",
        "wat=1",
        "user=%27%20OR%20%271%27%3D%271%27%3B--&action=AUDIT_ACTION_CREATED%27",
    ] {
        let (s, v) = api
            .get(ADMIN_KEY, &format!("/api/v1/orgs/org1/audit_logs?{q}"))
            .await;
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["code"], 400);
        assert!(v["msg"].as_str().unwrap().contains("parameter"), "{q}: {v}");
    }
    // SQL metacharacters in free-text filters are data, not SQL: 200 with nothing found.
    for q in [
        "user=%27%20OR%20%271%27%3D%271",
        "resource_id=%5C%27%3B%20DROP%20TABLE%20audit_items%3B--",
        "principal_id=%3F%3F",
    ] {
        let (s, v) = api
            .get(ADMIN_KEY, &format!("/api/v1/orgs/org1/audit_logs?{q}"))
            .await;
        assert_eq!(s, 200, "{q}: {v}");
        assert_eq!(v["data"]["items"], json!([]), "{q}");
    }
    assert_eq!(env.count().await, 1, "the table is still there");
    let (s, _) = api
        .get(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs/not-a-uuid")
        .await;
    assert_eq!(s, 400);
    let (s, _) = api
        .get(
            ADMIN_KEY,
            &format!("/api/v1/orgs/org1/audit_logs/{}", Uuid::new_v4()),
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = api
        .get(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs/export?format=xml")
        .await;
    assert_eq!(s, 400);
    let (s, _) = api.get(ADMIN_KEY, "/api/v1/nope").await;
    assert_eq!(s, 404);
    // An asc cursor in desc mode is refused.
    let (_, v) = api.get(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs").await;
    let poll = v["data"]["poll_cursor"].as_str().unwrap();
    let (s, _) = api
        .get(
            ADMIN_KEY,
            &format!("/api/v1/orgs/org1/audit_logs?cursor={poll}"),
        )
        .await;
    assert_eq!(s, 400);
    // Two keys in one request: neither is taken.
    let r = api
        .http
        .get(format!("{}/api/v1/orgs/org1/audit_logs", api.base))
        .header("authorization", format!("Bearer {ADMIN_KEY}"))
        .header("authorization", "Bearer someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Other methods: 405, in the envelope.
    let r = api
        .http
        .post(format!("{}/api/v1/orgs/org1/audit_logs", api.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["code"], 405, "{v}");
    // A HEAD of an export answers what a GET would, with no body (and records no export).
    let r = api
        .http
        .head(format!(
            "{}/api/v1/orgs/org1/audit_logs/export?format=csv",
            api.base
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let env = TestEnv::new("api_rate").await;
    let api = start_api(&env, 5).await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..7 {
        let r = api
            .http
            .get(format!("{}/api/v1/orgs/org1/audit_logs", api.base))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["code"], 429);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429]);
    let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs));
    // Another key has its own budget.
    let (s, _) = api.get(MEMBER_KEY, "/api/v1/orgs/org1/audit_logs").await;
    assert_eq!(s, 200);
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("waltrail_api_errors_total{kind=\"rate_limited\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "waltrail_api_request_duration_ms_bucket{route=\"/api/v1/orgs/{org_id}/audit_logs\""
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_hides_then_drops_old_partitions() {
    let env = TestEnv::new("api_retention").await;
    let api = start_api(&env, 100_000).await;
    let day = 86_400_000_000i64;
    // Items stored when they were committed...
    let stored_then = |n, t| {
        let mut r = item(n, "org1", "p1", t);
        r.ingested_at_us = t;
        r
    };
    // ...and one committed 40 days ago but stored just now (a replication origin's commit time): it is
    // kept for the window from when it was stored, and its partition is not dropped under it.
    let late = item(4, "org1", "p1", now_us() - 41 * day);
    fill(
        &env,
        vec![
            stored_then(1, now_us() - 40 * day),
            stored_then(2, now_us() - 29 * day),
            item(3, "org1", "p1", now_us()),
            late,
        ],
    )
    .await;
    let items = api.items(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs").await;
    let ids: Vec<&str> = items
        .iter()
        .map(|i| i["resource_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["r3", "r2", "r4"],
        "items past the window are hidden before the drop; one stored late is not"
    );
    let ch = env.ch();
    let parts = || async {
        ch.query("SELECT count(DISTINCT partition) FROM system.parts WHERE database = ? AND table = 'audit_items' AND active")
            .bind(&env.ch_db)
            .fetch_one::<u64>()
            .await
            .unwrap()
    };
    assert_eq!(parts().await, 4);
    let dropped = waltrail::store::retention::drop_expired(
        &ch,
        &waltrail::store::cluster::Layout::Single,
        30,
    )
    .await
    .unwrap();
    assert_eq!(
        dropped.len(),
        1,
        "only the day whose items were all stored long ago"
    );
    assert_eq!(parts().await, 3);
    assert_eq!(env.count().await, 3);
    let items = api.items(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs").await;
    assert_eq!(items.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_of_200k_items_streams_in_flat_memory() {
    let env = TestEnv::new("api_export").await;
    let db = env.pg().await;
    db.batch_execute("CREATE TABLE gateways (id text PRIMARY KEY, org_id text, project_id text, name text, secret text)")
        .await
        .unwrap();
    let text = format!("{}\n{}", env.config_text(TABLES), api_section(100_000));
    let cfg_path = std::env::temp_dir().join("api_export.toml");
    std::fs::write(&cfg_path, &text).unwrap();
    let cfg = Config::parse(&text).unwrap();
    waltrail::store::schema::migrate(&cfg.clickhouse)
        .await
        .unwrap();
    let t = now_us() - 600_000_000;
    let rows: Vec<ItemRow> = (0..200_000)
        .map(|n| item(n, "org1", "p1", t + n as i64))
        .collect();
    fill(&env, rows).await;
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(["serve", "--config", cfg_path.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{}", cfg.api.listen);
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_before = vm_hwm_kb(server.id());
    let resp = http
        .get(format!(
            "{base}/api/v1/orgs/org1/audit_logs/export?format=ndjson"
        ))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    use futures_util::StreamExt;
    let mut stream = resp.bytes_stream();
    let mut lines = 0usize;
    let mut bytes = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let rss_after = vm_hwm_kb(server.id());
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(lines, 200_001, "200k items and the export's closing line");
    println!("export: {bytes} bytes, server peak RSS {rss_before} kB before, {rss_after} kB after");
    assert!(
        bytes > 50 * 1024 * 1024,
        "the export is far larger than the memory bound below"
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server memory grew by {} kB",
        rss_after - rss_before
    );
}

/// Check a response against the schema of the same name in the served OpenAPI document (the subset the
/// document uses: type, required, properties, additionalProperties, items, enum, pattern, $ref, allOf, nullable).
fn validate_openapi(envelope: &Value, schema: &str) {
    let doc: Value = serde_json::from_str(include_str!("../src/api/openapi.json")).unwrap();
    assert_eq!(envelope["code"], 200);
    assert!(envelope["msg"].is_string());
    let s = doc["components"]["schemas"][schema].clone();
    assert!(!s.is_null(), "no schema {schema}");
    let mut errors = Vec::new();
    check(&doc, &s, &envelope["data"], "data", &mut errors);
    assert!(errors.is_empty(), "{schema}: {errors:#?}");
}

fn check(doc: &Value, s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], v, at, errors);
    }
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(doc, sub, v, at, errors);
        }
    }
    if v.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
        return;
    }
    let ty = s.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{at}: expected {ty:?}, got {v}"));
        return;
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let (Some(p), Some(text)) = (s.get("pattern").and_then(Value::as_str), v.as_str()) {
        // The document's patterns are ^PREFIX[class]+$ or the LSN shape; check the prefix and charset.
        let prefix = p.trim_start_matches('^').split('[').next().unwrap_or("");
        if !text.starts_with(prefix) {
            errors.push(format!("{at}: {text:?} does not match {p}"));
        }
    }
    if let Some(obj) = v.as_object() {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(r.as_str().unwrap_or("")) {
                errors.push(format!("{at}: missing required {r}"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(ps) => check(doc, ps, val, &format!("{at}.{k}"), errors),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{at}: unexpected property {k}"))
                    }
                    Some(extra @ Value::Object(_)) => {
                        check(doc, extra, val, &format!("{at}.{k}"), errors)
                    }
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"), errors);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_keys_resolve_through_postgres() {
    let env = TestEnv::new("api_platform").await;
    let db = env.pg().await;
    db.batch_execute(
        "CREATE TABLE api_tokens (token_sha256 text PRIMARY KEY, account_id text, org_id text, role text, project_ids text[]);",
    )
    .await
    .unwrap();
    for (key, acct, role, projects) in [
        ("plat-admin", "acct_a", "admin", vec![]),
        ("plat-member", "acct_m", "member", vec!["p2".to_owned()]),
        // Blank principals name nobody an export could be traced to (QA36 L3, QA37 L2).
        ("plat-blank", " ", "admin", vec![]),
        ("plat-blank-tab", "\t\n", "admin", vec![]),
    ] {
        db.execute(
            "INSERT INTO api_tokens VALUES ($1, $2, 'org1', $3, $4)",
            &[&sha(key), &acct, &role, &projects],
        )
        .await
        .unwrap();
    }
    let text = format!(
        "{}\n{}\n[api.platform_keys]\nquery = \"SELECT account_id AS principal_id, org_id, role, project_ids AS projects FROM api_tokens WHERE token_sha256 = $1\"\ncache_seconds = 1\n",
        env.config_text(TABLES),
        api_section(10_000)
    );
    let cfg = Arc::new(Config::parse(&text).unwrap());
    cfg.validate().unwrap();
    waltrail::store::schema::migrate(&cfg.clickhouse)
        .await
        .unwrap();
    let api = Api::start(cfg).await;
    let t = now_us();
    fill(
        &env,
        vec![item(1, "org1", "p1", t), item(2, "org1", "p2", t)],
    )
    .await;
    let ids = |items: Vec<Value>| {
        items
            .iter()
            .map(|i| i["resource_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let mut all = ids(api
        .items("plat-admin", "/api/v1/orgs/org1/audit_logs")
        .await);
    all.sort();
    assert_eq!(all, ["r1", "r2"]);
    assert_eq!(
        ids(api
            .items("plat-member", "/api/v1/orgs/org1/audit_logs")
            .await),
        ["r2"]
    );
    let (_, me) = api.get("plat-member", "/api/v1/me").await;
    assert_eq!(me["data"]["principal_id"], "acct_m");
    for key in ["plat-unknown", "plat-blank", "plat-blank-tab"] {
        let (s, _) = api.get(key, "/api/v1/orgs/org1/audit_logs").await;
        assert_eq!(s, 401, "{key}");
    }
    // A revoked key stops working once the cache expires.
    db.batch_execute("DELETE FROM api_tokens").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, _) = api.get("plat-admin", "/api/v1/orgs/org1/audit_logs").await;
    assert_eq!(s, 401);
    // Static keys keep working alongside.
    let (s, _) = api.get(ADMIN_KEY, "/api/v1/orgs/org1/audit_logs").await;
    assert_eq!(s, 200);
}
