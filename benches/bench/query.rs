//! Measurement 5, query side: N items across the organizations, written straight into ClickHouse in
//! large batches, then the API (in this process, over real HTTP) asked for the first page, a filtered
//! page (resource_type + action + project) and page 20 via its cursor, each request for another
//! organization in turn; and a streamed export, in items per second.

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;
use waltrail::audit::item::{Actor, AuditItem};
use waltrail::config::Config;
use waltrail::store::row::{now_us, ItemRow};
use waltrail::store::writer::insert_batch;

use crate::procfs::cpu_seconds;
use crate::servers::{free_port, ClickHouse, PgCluster};
use crate::Opts;

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub max_ms: f64,
    pub items_per_page: f64,
}

#[derive(Debug, Clone, Default)]
pub struct QuerySide {
    pub items: u64,
    pub orgs: u32,
    pub load_s: f64,
    pub settle_s: f64,
    pub parts: u64,
    pub bytes_on_disk: u64,
    pub first: Stats,
    pub filtered: Stats,
    pub page20: Stats,
    pub export_items: u64,
    pub export_bytes: u64,
    pub export_s: f64,
    pub ch_cpu_s_per_first_page: f64,
}

const CH_DB: &str = "qry";
const PG_DB: &str = "qry";
const RESOURCE_TYPES: [&str; 6] = [
    "RESOURCE_TYPE_API_KEY",
    "RESOURCE_TYPE_GATEWAY",
    "RESOURCE_TYPE_PROJECT",
    "RESOURCE_TYPE_USER",
    "RESOURCE_TYPE_SECRET",
    "RESOURCE_TYPE_DEPLOYMENT",
];
const ACTIONS: [&str; 4] = [
    "AUDIT_ACTION_CREATED",
    "AUDIT_ACTION_UPDATED",
    "AUDIT_ACTION_UPDATED",
    "AUDIT_ACTION_DELETED",
];
const FILTER: &str =
    "resource_type=RESOURCE_TYPE_API_KEY&action=AUDIT_ACTION_UPDATED&project_id=proj_3";

fn org(i: u32) -> String {
    format!("org_{i:03}")
}

fn key(i: u32) -> String {
    format!("bench-key-{i:03}")
}

/// splitmix64: cheap, deterministic variety.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Item `n` of `total`, spread evenly over the last seven days, organizations round-robin.
fn item(n: u64, total: u64, orgs: u32, t_end: i64) -> ItemRow {
    let span: i64 = 7 * 86_400 * 1_000_000;
    let h = mix(n);
    let t = t_end - span + (span as i128 * n as i128 / total.max(1) as i128) as i64;
    let o = (n % orgs as u64) as u32;
    let user = h % 40;
    let rtype = RESOURCE_TYPES[(h >> 8) as usize % RESOURCE_TYPES.len()];
    let action = ACTIONS[(h >> 16) as usize % ACTIONS.len()];
    let rid = format!("{}_{}", &rtype[14..].to_ascii_lowercase(), (h >> 24) % 5000);
    let fields: &[&str] = match action {
        "AUDIT_ACTION_UPDATED" => &["name", "config"],
        _ => &["name", "config", "enabled"],
    };
    let actor = Actor {
        principal_id: format!("acct_{user}"),
        principal_type: if user % 10 == 0 {
            waltrail::vocab::PrincipalType::ServiceKey
        } else {
            waltrail::vocab::PrincipalType::Account
        },
        display_name: format!("User {user}"),
        email: format!("user{user}@example.com"),
        source: [
            "AUDIT_SOURCE_API",
            "AUDIT_SOURCE_DASHBOARD",
            "AUDIT_SOURCE_CLI",
        ][(h >> 40) as usize % 3]
            .into(),
        auth_method: "API_KEY".into(),
        request_id: format!("req-{:016x}", h),
        client_ip: format!("10.{}.{}.{}", (h >> 48) & 255, (h >> 56) & 255, n % 250),
        user_agent: "platform-cli/1.4.2".into(),
        ..Actor::default()
    };
    let diff = serde_json::json!({
        "name": {"before": format!("{rid}-old"), "after": format!("{rid}")},
        "config": {"before": {"replicas": h % 7, "region": "eu-west-1"}, "after": {"replicas": h % 7 + 1, "region": "eu-west-1"}},
    });
    ItemRow::from_item(
        AuditItem {
            id: Uuid::from_u128(((mix(h) as u128) << 64) | mix(h ^ 0xabcd) as u128),
            event_id: Uuid::from_u128(((mix(n / 3) as u128) << 64) | n as u128),
            source_id: "bench-query".into(),
            occurred_at_us: t,
            commit_lsn: 0x1_0000_0000 + n * 512,
            xid: (n / 3) as u32,
            seq: (n % 3) as u32,
            action: action.into(),
            summary: format!("user{user}@example.com changed {rtype} \"{rid}\""),
            platform_wide: false,
            actor,
            organization_id: org(o),
            project_id: format!("proj_{}", (n / orgs as u64) % 10),
            resource_type: rtype.into(),
            resource_id: rid.clone(),
            resource_display: rid,
            changed_fields: fields.iter().map(|s| s.to_string()).collect(),
            diff: diff.to_string(),
            table_name: "public.resources".into(),
        },
        t + 150_000,
    )
}

fn config_text(opts: &Opts, pg: &PgCluster, ch: &ClickHouse, port: u16) -> String {
    let mut keys = String::new();
    for i in 0..opts.query_orgs {
        keys.push_str(&format!(
            "[[api.keys]]\nname = \"{k}\"\nsha256 = \"{h}\"\norg_id = \"{o}\"\nrole = \"admin\"\n\n",
            k = key(i),
            h = waltrail::api::auth::sha256_hex(&key(i)),
            o = org(i)
        ));
    }
    format!(
        r#"[postgres]
url = "{pg}"
slot = "qry"
publication = "qry"

[clickhouse]
url = "{ch}"
database = "{CH_DB}"

[api]
listen = "127.0.0.1:{port}"
rate_limit_per_minute = 100000000

{keys}
[[tables]]
table = "resources"
resource_type = "RESOURCE_TYPE_API_KEY"
"#,
        pg = pg.url(PG_DB),
        ch = ch.url(),
    )
}

pub async fn run(opts: &Opts, pg: &PgCluster, ch: &ClickHouse) -> Result<QuerySide> {
    pg.create_db(PG_DB).await?;
    ch.reset_db(CH_DB).await?;
    let port = free_port();
    let text = config_text(opts, pg, ch, port);
    let cfg = Arc::new(Config::parse(&text).context("query config")?);
    cfg.validate().context("query config")?;
    waltrail::store::schema::migrate(&cfg.clickhouse).await?;

    // Load: generate on a blocking thread, insert on this one, two batches in flight at most.
    let total = opts.query_items;
    let orgs = opts.query_orgs;
    let batch = 200_000u64;
    let t_end = now_us() - 60_000_000;
    eprintln!("  [query] loading {total} items across {orgs} organizations …");
    let t = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<ItemRow>>(2);
    let gen = tokio::task::spawn_blocking(move || {
        let mut start = 0;
        while start < total {
            let end = (start + batch).min(total);
            let rows: Vec<ItemRow> = (start..end).map(|n| item(n, total, orgs, t_end)).collect();
            if tx.blocking_send(rows).is_err() {
                return;
            }
            start = end;
        }
    });
    let loader = ch.client(CH_DB);
    let mut loaded = 0u64;
    while let Some(rows) = rx.recv().await {
        insert_batch(&loader, &rows)
            .await
            .context("loading items")?;
        loaded += rows.len() as u64;
        if loaded % 2_000_000 == 0 {
            eprintln!(
                "  [query] {loaded} items in {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    gen.await?;
    let load_s = t.elapsed().as_secs_f64();
    // Let background merges settle (they would have, long before anyone queries a real deployment).
    let t = Instant::now();
    let mut last = u64::MAX;
    loop {
        let merging: u64 = loader
            .query("SELECT count() FROM system.merges")
            .fetch_one()
            .await?;
        let parts: u64 = loader
            .query("SELECT count() FROM system.parts WHERE database = ? AND table = 'audit_items' AND active")
            .bind(CH_DB)
            .fetch_one()
            .await?;
        if (merging == 0 && parts == last) || t.elapsed() > Duration::from_secs(opts.settle_max_s) {
            break;
        }
        last = parts;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let settle_s = t.elapsed().as_secs_f64();
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Parts {
        parts: u64,
        bytes: u64,
    }
    let p: Parts = loader
        .query("SELECT count(), sum(bytes_on_disk) FROM system.parts WHERE database = ? AND table = 'audit_items' AND active")
        .bind(CH_DB)
        .fetch_one()
        .await?;
    eprintln!(
        "  [query] loaded in {load_s:.0} s ({:.0} items/s); merges settled in {settle_s:.0} s: {} parts, {} MB",
        total as f64 / load_s,
        p.parts,
        p.bytes / 1_000_000
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let state = waltrail::api::AppState::new(cfg.clone(), None)?;
    let server = tokio::spawn(waltrail::api::serve(state, stop_rx));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let get = |i: u32, q: String| {
        let http = http.clone();
        let url = format!("{base}/api/v1/orgs/{}/audit_logs{q}", org(i));
        async move {
            let t = Instant::now();
            let r = http.get(&url).bearer_auth(key(i)).send().await?;
            let status = r.status();
            let body: Value = r.json().await?;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if status != 200 {
                bail!("{url}: {status} {body}");
            }
            Ok::<_, anyhow::Error>((ms, body))
        }
    };
    let n = opts.query_requests;
    let org_of = |k: usize| (k as u32 * 37) % orgs;

    // Warm-up: a few of each kind, not counted.
    for k in 0..5 {
        get(org_of(k + 1000), String::new()).await?;
        get(org_of(k + 1000), format!("?{FILTER}")).await?;
    }
    eprintln!("  [query] first page × {n} …");
    let ch_cpu0 = cpu_seconds(ch.pid().unwrap_or(0));
    let mut first = Vec::new();
    for k in 0..n {
        let (ms, body) = get(org_of(k), String::new()).await?;
        first.push((ms, items_of(&body)));
    }
    let ch_cpu_s_per_first_page = (cpu_seconds(ch.pid().unwrap_or(0)) - ch_cpu0) / n.max(1) as f64;
    eprintln!("  [query] filtered page × {n} …");
    let mut filtered = Vec::new();
    for k in 0..n {
        let (ms, body) = get(org_of(k), format!("?{FILTER}")).await?;
        filtered.push((ms, items_of(&body)));
    }
    // Page 20: walk to it once for a few organizations, then ask for it again and again.
    let walk_orgs: Vec<u32> = (0..orgs.min(10)).map(|k| org_of(k as usize)).collect();
    let mut cursors = Vec::new();
    for &o in &walk_orgs {
        let mut cursor = String::new();
        for _ in 0..19 {
            let q = if cursor.is_empty() {
                String::new()
            } else {
                format!("?cursor={cursor}")
            };
            let (_, body) = get(o, q).await?;
            cursor = body["data"]["next_cursor"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if cursor.is_empty() {
                break;
            }
        }
        if !cursor.is_empty() {
            cursors.push((o, cursor));
        }
    }
    eprintln!("  [query] page 20 × {n} …");
    let mut page20 = Vec::new();
    if !cursors.is_empty() {
        for k in 0..n {
            let (o, c) = &cursors[k % cursors.len()];
            let (ms, body) = get(*o, format!("?cursor={c}")).await?;
            page20.push((ms, items_of(&body)));
        }
    }
    // Export: whole organizations, streamed.
    eprintln!("  [query] export …");
    let mut export_items = 0u64;
    let mut export_bytes = 0u64;
    let t = Instant::now();
    for k in 0..opts.export_orgs.min(orgs) {
        let o = org_of(k as usize + 500);
        let resp = http
            .get(format!(
                "{base}/api/v1/orgs/{}/audit_logs/export?format=ndjson",
                org(o)
            ))
            .bearer_auth(key(o))
            .send()
            .await?;
        if resp.status() != 200 {
            bail!("export: {}", resp.status());
        }
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            export_bytes += chunk.len() as u64;
            export_items += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        }
    }
    let export_s = t.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = server.await;
    let q = QuerySide {
        items: total,
        orgs,
        load_s,
        settle_s,
        parts: p.parts,
        bytes_on_disk: p.bytes,
        first: stats(first),
        filtered: stats(filtered),
        page20: stats(page20),
        export_items,
        export_bytes,
        export_s,
        ch_cpu_s_per_first_page,
    };
    eprintln!(
        "  [query] first page p50 {:.1} ms p99 {:.1} ms; filtered p50 {:.1} p99 {:.1}; page 20 p50 {:.1} p99 {:.1}; export {:.0} items/s",
        q.first.p50_ms,
        q.first.p99_ms,
        q.filtered.p50_ms,
        q.filtered.p99_ms,
        q.page20.p50_ms,
        q.page20.p99_ms,
        q.export_items as f64 / q.export_s
    );
    Ok(q)
}

fn items_of(body: &Value) -> usize {
    body["data"]["items"].as_array().map_or(0, |a| a.len())
}

fn stats(mut v: Vec<(f64, usize)>) -> Stats {
    if v.is_empty() {
        return Stats::default();
    }
    let items = v.iter().map(|(_, n)| *n as f64).sum::<f64>() / v.len() as f64;
    let mean = v.iter().map(|(ms, _)| ms).sum::<f64>() / v.len() as f64;
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pct = |q: f64| v[(((v.len() - 1) as f64) * q).round() as usize].0;
    Stats {
        requests: v.len(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        mean_ms: mean,
        max_ms: pct(1.0),
        items_per_page: items,
    }
}
