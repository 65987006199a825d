//! Measurement 6, hostile clients: the real `waltrail run` (API inside) with capture at a steady rate
//! (commit → queryable, measured like measurement 2) and honest pollers on the API, once without and once
//! with an attack: a flood of random bearer keys (platform keys configured, so an unknown key would reach
//! Postgres), connections that send half a request and wait (reopened when dropped), for the same length.
//! Reported: the pollers' API latency, capture's commit → queryable, waltrail's Postgres connections
//! (`pg_stat_activity`, `application_name = 'waltrail'`) and every status each kind of client saw.
//! All traffic goes to 127.0.0.1; every loop ends with the run.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waltrail::store::row::now_us;

use crate::servers::{free_port, ClickHouse, PgCluster};
use crate::waltrail::{self as wt, Process};
use crate::Opts;

#[derive(Debug, Clone, Default)]
pub struct Run {
    pub attacked: bool,
    pub secs: f64,
    pub changes: u64,
    pub unseen: u64,
    pub commit_p50_ms: f64,
    pub commit_p99_ms: f64,
    pub commit_max_ms: f64,
    pub honest_requests: u64,
    pub honest_p50_ms: f64,
    pub honest_p99_ms: f64,
    pub honest_max_ms: f64,
    /// Status (or what happened instead) → count, per kind of client.
    pub honest_statuses: BTreeMap<String, u64>,
    pub flood_statuses: BTreeMap<String, u64>,
    pub slow_outcomes: BTreeMap<String, u64>,
    pub max_pg_connections: i64,
    pub peak_rss_kb: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Hostile {
    pub rate: u64,
    pub pollers: usize,
    pub flooders: usize,
    pub slow: usize,
    pub pool_size: usize,
    pub quiet: Run,
    pub attacked: Run,
}

const DB: &str = "hostile";
const ORG: &str = "org_h";

fn poller_key(i: usize) -> String {
    format!("poller-key-{i:03}")
}

#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, what: impl Into<String>) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(what.into()).or_default() += 1;
        }
    }
    fn take(&self) -> BTreeMap<String, u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

#[derive(clickhouse::Row, Deserialize)]
struct Seen {
    resource_id: String,
    occurred_at_us: i64,
}

pub async fn run(opts: &Opts, pg: &PgCluster, ch: &ClickHouse) -> Result<Hostile> {
    pg.create_db(DB).await?;
    let db = pg.client(DB).await?;
    db.batch_execute(
        "CREATE TABLE api_tokens (token_sha256 text PRIMARY KEY, account_id text, org_id text, role text, project_ids text[])",
    )
    .await?;
    let quiet = one(opts, pg, ch, false).await?;
    let attacked = one(opts, pg, ch, true).await?;
    Ok(Hostile {
        rate: opts.hostile_rate,
        pollers: opts.hostile_pollers,
        flooders: opts.hostile_flooders,
        slow: opts.hostile_slow,
        pool_size: 4,
        quiet,
        attacked,
    })
}

fn config_text(opts: &Opts, pg: &PgCluster, ch: &ClickHouse, name: &str, port: u16) -> String {
    let mut keys = String::new();
    for i in 0..opts.hostile_pollers {
        keys.push_str(&format!(
            "[[api.keys]]\nname = \"{k}\"\nsha256 = \"{h}\"\norg_id = \"{ORG}\"\nrole = \"admin\"\n\n",
            k = poller_key(i),
            h = waltrail::api::auth::sha256_hex(&poller_key(i)),
        ));
    }
    // waltrail's defaults for everything the issue is about (pool, limits, timeouts, connection cap).
    format!(
        r#"[postgres]
url = "{url}"
slot = "{name}"
publication = "pub_{name}"

[clickhouse]
url = "{ch}"
database = "{name}"
compression = "{compression}"

[capture]
source_id = "bench-{name}"
{capture}

[api]
listen = "127.0.0.1:{port}"

[api.platform_keys]
query = "SELECT account_id AS principal_id, org_id, role, project_ids AS projects FROM api_tokens WHERE token_sha256 = $1"

{keys}
[[tables]]
table = "{name}"
resource_type = "RESOURCE_TYPE_API_KEY"
organization_column = "org_id"
display_column = "name"
{extra}"#,
        url = pg.url(DB),
        ch = ch.url(),
        compression = wt::compression(),
        capture = wt::capture_overrides(),
        extra = wt::extra_config(),
    )
}

async fn one(opts: &Opts, pg: &PgCluster, ch: &ClickHouse, attack: bool) -> Result<Run> {
    let name = if attack {
        "hostile_attacked"
    } else {
        "hostile_quiet"
    };
    let label = if attack {
        "with the attack"
    } else {
        "without an attack"
    };
    let db = pg.client(DB).await?;
    db.batch_execute(&format!(
        "CREATE TABLE {name} (id bigint PRIMARY KEY, org_id text NOT NULL, name text, payload jsonb)"
    ))
    .await?;
    ch.reset_db(name).await?;
    let port = free_port();
    std::fs::create_dir_all(&opts.work_dir)?;
    let cfg = opts.work_dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config_text(opts, pg, ch, name, port))?;
    wt::migrate(&cfg)?;
    let mut p = Process::spawn(&cfg, opts.work_dir.join(format!("waltrail-{name}.log")))?;
    wt::wait_slot_active(&db, name, &mut p).await?;
    let base = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if probe.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        bail!("the API of {name} never answered");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let rate = opts.hostile_rate;
    let secs = opts.hostile_secs;
    let total = rate * secs;
    eprintln!(
        "  [hostile] {label}: {total} changes over {secs} s, {} pollers{} …",
        opts.hostile_pollers,
        if attack {
            format!(
                ", {} random-key clients, {} slow connections",
                opts.hostile_flooders, opts.hostile_slow
            )
        } else {
            String::new()
        }
    );
    let t0 = tokio::time::Instant::now() + Duration::from_millis(200);
    let until = t0 + Duration::from_secs(secs);

    // Capture's load: rows inserted on a fixed schedule by 4 connections, one row per transaction.
    let issued: Arc<Vec<AtomicI64>> = Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let client = pg.client(DB).await?;
        let stmt = client
            .prepare(&format!(
                "INSERT INTO {name} (id, org_id, name, payload) VALUES ($1::bigint, '{ORG}', 'key-' || $1::bigint::text, \
                 jsonb_build_object('n', $1::bigint, 'scopes', jsonb_build_array('read', 'write')))"
            ))
            .await?;
        let (issued, next) = (issued.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                let due = t0 + Duration::from_nanos(j * 1_000_000_000 / rate);
                tokio::time::sleep_until(due).await;
                issued[j as usize].store(now_us(), Ordering::Relaxed);
                client.execute(&stmt, &[&(j as i64)]).await?;
            }
        }));
    }
    // Visibility in ClickHouse, polled like measurement 2.
    let visibility = {
        let issued = issued.clone();
        let chc = ch.client(name);
        let poll = Duration::from_millis(opts.poll_ms);
        tokio::spawn(async move {
            let mut seen = vec![false; total as usize];
            let mut lat_us: Vec<i64> = Vec::with_capacity(total as usize);
            let mut min_unseen = 0usize;
            let give_up = until + Duration::from_secs(30);
            while tokio::time::Instant::now() < give_up {
                while min_unseen < seen.len() && seen[min_unseen] {
                    min_unseen += 1;
                }
                if min_unseen == seen.len() {
                    break;
                }
                let since = issued[min_unseen].load(Ordering::Relaxed);
                if since == 0 {
                    tokio::time::sleep(poll).await;
                    continue;
                }
                let t_poll = now_us();
                let rows = chc
                    .query("SELECT resource_id, occurred_at_us FROM audit_items WHERE organization_id = ? AND occurred_at_us >= ?")
                    .bind(ORG)
                    .bind(since - 100_000)
                    .fetch_all::<Seen>()
                    .await
                    .unwrap_or_default();
                for r in rows {
                    if let Ok(i) = r.resource_id.parse::<usize>() {
                        if i < seen.len() && !seen[i] {
                            seen[i] = true;
                            lat_us.push(t_poll - r.occurred_at_us);
                        }
                    }
                }
                tokio::time::sleep(poll).await;
            }
            let unseen = seen.iter().filter(|s| !**s).count() as u64;
            (lat_us, unseen)
        })
    };
    // Honest pollers: each asks for new items once a second, as the dashboard's live mode does (asc from
    // its cursor), on its own keep-alive connection.
    let honest = Arc::new(Tally::default());
    let honest_ms = Arc::new(Mutex::new(Vec::<f64>::new()));
    let mut clients = Vec::new();
    for i in 0..opts.hostile_pollers {
        let (honest, honest_ms, base) = (honest.clone(), honest_ms.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default();
            let key = poller_key(i);
            let mut cursor = String::new();
            // Spread the pollers over the second.
            tokio::time::sleep(Duration::from_millis((i as u64 * 1000) / 50)).await;
            while tokio::time::Instant::now() < until {
                let url = if cursor.is_empty() {
                    format!("{base}/api/v1/orgs/{ORG}/audit_logs?limit=50")
                } else {
                    format!(
                        "{base}/api/v1/orgs/{ORG}/audit_logs?order=asc&limit=100&cursor={cursor}"
                    )
                };
                let t = Instant::now();
                match http.get(&url).bearer_auth(&key).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        let ms = t.elapsed().as_secs_f64() * 1000.0;
                        honest.add(status.to_string());
                        if let Ok(mut v) = honest_ms.lock() {
                            v.push(ms);
                        }
                        // The first (newest-first) page gives the poll cursor; asc pages always give
                        // the next one.
                        let k = if cursor.is_empty() {
                            "poll_cursor"
                        } else {
                            "next_cursor"
                        };
                        if let Some(c) = body["data"][k].as_str().filter(|c| !c.is_empty()) {
                            cursor = c.to_owned();
                        }
                    }
                    Err(_) => honest.add("no answer"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }
    let flood = Arc::new(Tally::default());
    let slow = Arc::new(Tally::default());
    // The attack starts 2 s in, once the pollers hold their connections (a client that connects during
    // the attack waits in the listen queue for a place like everyone else).
    let attack_start = t0 + Duration::from_secs(2);
    if attack {
        for _ in 0..opts.hostile_flooders {
            let (flood, base) = (flood.clone(), base.clone());
            clients.push(tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap_or_default();
                tokio::time::sleep_until(attack_start).await;
                while tokio::time::Instant::now() < until {
                    let key = format!("wt_{}", uuid::Uuid::new_v4().simple());
                    match http
                        .get(format!("{base}/api/v1/orgs/{ORG}/audit_logs"))
                        .bearer_auth(key)
                        .send()
                        .await
                    {
                        Ok(r) => flood.add(r.status().as_u16().to_string()),
                        Err(_) => flood.add("no answer"),
                    }
                }
            }));
        }
        for _ in 0..opts.hostile_slow {
            let (slow, addr) = (slow.clone(), format!("127.0.0.1:{port}"));
            clients.push(tokio::spawn(async move {
                tokio::time::sleep_until(attack_start).await;
                // Reopened each time the server drops it, until the run ends.
                while tokio::time::Instant::now() < until {
                    slow.add(slow_once(&addr, until).await);
                }
            }));
        }
    }
    // waltrail's Postgres connections, watched throughout.
    let max_pg = Arc::new(AtomicI64::new(0));
    let pg_watch = {
        let (max_pg, watch) = (max_pg.clone(), pg.client("postgres").await?);
        tokio::spawn(async move {
            while tokio::time::Instant::now() < until {
                if let Ok(r) = watch
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'waltrail' AND datname = $1",
                        &[&DB],
                    )
                    .await
                {
                    max_pg.fetch_max(r.get::<_, i64>(0), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    for w in workers {
        w.await??;
    }
    for c in clients {
        c.await?;
    }
    pg_watch.await?;
    let (mut lat_us, unseen) = visibility.await?;
    let peak_rss_kb = p.peak_rss_kb();
    p.check_alive().context("waltrail under the hostile load")?;
    p.stop()?;
    wt::drop_slot(&db, name).await?;
    lat_us.sort_unstable();
    let mut ms = honest_ms.lock().map(|v| v.clone()).unwrap_or_default();
    ms.sort_by(f64::total_cmp);
    let pct_us = |q: f64| -> f64 {
        if lat_us.is_empty() {
            return f64::NAN;
        }
        lat_us[((lat_us.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
    };
    let pct_ms = |q: f64| -> f64 {
        if ms.is_empty() {
            return f64::NAN;
        }
        ms[((ms.len() - 1) as f64 * q).round() as usize]
    };
    let r = Run {
        attacked: attack,
        secs: secs as f64,
        changes: total,
        unseen,
        commit_p50_ms: pct_us(0.5),
        commit_p99_ms: pct_us(0.99),
        commit_max_ms: pct_us(1.0),
        honest_requests: ms.len() as u64,
        honest_p50_ms: pct_ms(0.5),
        honest_p99_ms: pct_ms(0.99),
        honest_max_ms: pct_ms(1.0),
        honest_statuses: honest.take(),
        flood_statuses: flood.take(),
        slow_outcomes: slow.take(),
        max_pg_connections: max_pg.load(Ordering::Relaxed),
        peak_rss_kb,
    };
    eprintln!(
        "  [hostile] {label}: commit → queryable p50 {:.0} ms p99 {:.0} ms ({} unseen); pollers p50 {:.1} ms p99 {:.1} ms {:?}; flood {:?}; slow {:?}; waltrail Postgres connections ≤ {}",
        r.commit_p50_ms,
        r.commit_p99_ms,
        r.unseen,
        r.honest_p50_ms,
        r.honest_p99_ms,
        r.honest_statuses,
        r.flood_statuses,
        r.slow_outcomes,
        r.max_pg_connections
    );
    Ok(r)
}

/// One slow connection: half a request, then wait. What happened: `dropped unanswered`, `answered NNN`,
/// `not accepted` (connect failed or timed out) or `held to the end`.
async fn slow_once(addr: &str, until: tokio::time::Instant) -> String {
    let Ok(Ok(mut s)) = tokio::time::timeout_at(until, tokio::net::TcpStream::connect(addr)).await
    else {
        // Do not spin on a refused connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
        return "not accepted".into();
    };
    if s.write_all(b"GET /api/v1/me HTTP/1.1\r\nHost: x\r\nAuthor")
        .await
        .is_err()
    {
        return "dropped unanswered".into();
    }
    let mut buf = [0u8; 1024];
    match tokio::time::timeout_at(until, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => "dropped unanswered".into(),
        Ok(Ok(n)) => {
            let head = String::from_utf8_lossy(&buf[..n]);
            format!("answered {}", head.get(9..12).unwrap_or("?"))
        }
        Err(_) => "held to the end".into(),
    }
}
