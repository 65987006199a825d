//! Measurement 2, latency at a steady rate: commit-to-queryable. Workers insert rows on a fixed
//! schedule (each row its own transaction unless `rows_per_txn` says otherwise); the commit time is
//! Postgres's own (the item's `occurred_at_us`, taken from the transaction's commit timestamp);
//! visibility is the start of the first ClickHouse poll whose answer holds the item, so each figure is
//! an upper bound, late by at most one poll period (reported).
//!
//! Measurement 3 (in part): the waltrail process's peak RSS under that load.

use anyhow::{bail, Result};
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use waltrail::store::row::now_us;

use crate::procfs::cpu_seconds;
use crate::servers::{ClickHouse, PgCluster};
use crate::waltrail::{self as wt, Process, Setup};
use crate::Opts;

#[derive(Debug, Clone)]
pub struct Latency {
    pub target_rate: u64,
    pub rows_per_txn: u64,
    pub achieved_rate: f64,
    pub duration_s: f64,
    pub items: u64,
    pub unseen: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// (percentile 0..100, latency ms) for the plot.
    pub curve: Vec<(f64, f64)>,
    pub poll_period_ms: f64,
    pub peak_rss_kb: u64,
    pub wt_cpu_s: f64,
    pub ch_cpu_s: f64,
    /// INSERT queries ClickHouse ran per second over the run (waltrail's batches, plus its heartbeats).
    pub inserts_per_s: f64,
    /// The most active parts of the items table seen at once (sampled every second).
    pub max_active_parts: u64,
    /// Lines of waltrail's log with ClickHouse's "Too many parts" (must be 0).
    pub too_many_parts: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct Seen {
    resource_id: String,
    occurred_at_us: i64,
}

/// The Postgres database of the steady runs (created by the caller).
pub const DB: &str = "lat";
const ORG: &str = "org_lat";

pub async fn run(opts: &Opts, pg: &PgCluster, ch: &ClickHouse) -> Result<Vec<Latency>> {
    pg.create_db(DB).await?;
    let mut out = Vec::new();
    for &(rate, rows_per_txn) in &opts.latency_rates {
        out.push(one_rate(opts, pg, ch, rate, rows_per_txn, opts.latency_secs, "", "").await?);
    }
    Ok(out)
}

/// One steady run; `tag` keeps its table, slot and store apart from other runs at the same rate, `extra`
/// is appended to its config (e.g. `[integrity] chain = false`).
#[allow(clippy::too_many_arguments)]
pub async fn one_rate(
    opts: &Opts,
    pg: &PgCluster,
    ch: &ClickHouse,
    rate: u64,
    rows_per_txn: u64,
    secs: u64,
    tag: &str,
    extra: &str,
) -> Result<Latency> {
    let table = format!("lat_{rate}{tag}");
    let db = pg.client(DB).await?;
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigint PRIMARY KEY, org_id text NOT NULL, project_id text, name text, payload jsonb, \
         created_at timestamptz DEFAULT clock_timestamp())"
    ))
    .await?;
    let ch_db = format!("lat_{rate}{tag}");
    ch.reset_db(&ch_db).await?;
    let tables = format!(
        r#"[[tables]]
table = "{table}"
resource_type = "RESOURCE_TYPE_API_KEY"
organization_column = "org_id"
project_column = "project_id"
display_column = "name"
{extra}"#
    );
    let setup = Setup {
        name: &format!("lat-{rate}{tag}"),
        db: DB,
        slot: &format!("lat_{rate}{tag}"),
        publication: &format!("pub_lat_{rate}{tag}"),
        ch_db: &ch_db,
        tables: &tables,
    };
    let cfg = wt::write_config(&opts.work_dir, pg, ch, &setup)?;
    wt::migrate(&cfg)?;
    let mut p = Process::spawn(&cfg, opts.work_dir.join(format!("waltrail-lat-{rate}.log")))?;
    wt::wait_slot_active(&db, setup.slot, &mut p).await?;
    // Let it settle (first status update, publication and relation set-up) before the clock starts.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let total = (rate * secs).max(rows_per_txn);
    let txns = total.div_ceil(rows_per_txn);
    let total = txns * rows_per_txn;
    let issued: Arc<Vec<AtomicI64>> = Arc::new((0..total).map(|_| AtomicI64::new(0)).collect());
    let next = Arc::new(AtomicU64::new(0));
    let gen_done = Arc::new(AtomicBool::new(false));
    let last_issue = Arc::new(AtomicI64::new(0));
    eprintln!("  [lat {rate}/s{tag}] {total} rows in {txns} transactions over {secs} s …");
    let ch_cpu0 = cpu_seconds(ch.pid().unwrap_or(0));
    let inserts0 = insert_queries(ch).await?;
    let t_inserts = Instant::now();
    // ClickHouse makes a part of every insert and merges them in the background: sample how many are
    // active, to show that group commit's insert rate leaves merges ahead ("Too many parts" never comes).
    let parts_done = Arc::new(AtomicBool::new(false));
    let parts_sampler = {
        let (chc, done, ch_db) = (ch.client(&ch_db), parts_done.clone(), ch_db.clone());
        tokio::spawn(async move {
            let mut max = 0u64;
            while !done.load(Ordering::Relaxed) {
                let n: u64 = chc
                    .query("SELECT count() FROM system.parts WHERE database = ? AND table = 'audit_items' AND active")
                    .bind(ch_db.as_str())
                    .fetch_one()
                    .await
                    .unwrap_or(0);
                max = max.max(n);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            max
        })
    };
    let t0 = Instant::now() + Duration::from_millis(100);
    let first_issue = now_us() + 100_000;
    let mut workers = Vec::new();
    for _ in 0..opts.latency_workers {
        let client = pg.client(DB).await?;
        let stmt = client
            .prepare(&format!(
                "INSERT INTO {table} (id, org_id, project_id, name, payload) \
                 SELECT g, '{ORG}', 'p' || (g % 10), 'key-' || g, \
                        jsonb_build_object('n', g, 'scopes', jsonb_build_array('read', 'write'), 'expires_in', 3600) \
                 FROM generate_series($1::bigint, $2::bigint) g"
            ))
            .await?;
        let (issued, next, last_issue) = (issued.clone(), next.clone(), last_issue.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                if j >= txns {
                    return Ok::<_, anyhow::Error>(());
                }
                let first = j * rows_per_txn;
                let due = t0 + Duration::from_nanos(first * 1_000_000_000 / rate);
                tokio::time::sleep_until(due.into()).await;
                let now = now_us();
                for i in first..first + rows_per_txn {
                    issued[i as usize].store(now, Ordering::Relaxed);
                }
                client
                    .execute(
                        &stmt,
                        &[&(first as i64), &((first + rows_per_txn - 1) as i64)],
                    )
                    .await?;
                last_issue.fetch_max(now, Ordering::Relaxed);
            }
        }));
    }
    let poller = {
        let (issued, gen_done) = (issued.clone(), gen_done.clone());
        let chc = ch.client(&ch_db);
        let poll = Duration::from_millis(opts.poll_ms);
        tokio::spawn(async move {
            let mut seen = vec![false; total as usize];
            let mut lat_us: Vec<i64> = Vec::with_capacity(total as usize);
            let mut min_unseen = 0usize;
            let mut polls = 0u64;
            let poll_start = Instant::now();
            let mut done_at: Option<Instant> = None;
            loop {
                while min_unseen < seen.len() && seen[min_unseen] {
                    min_unseen += 1;
                }
                if min_unseen == seen.len() {
                    break;
                }
                if gen_done.load(Ordering::Relaxed) {
                    let d = *done_at.get_or_insert_with(Instant::now);
                    if d.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                }
                let since = issued[min_unseen].load(Ordering::Relaxed);
                if since == 0 {
                    tokio::time::sleep(poll).await;
                    continue;
                }
                let t_poll = now_us();
                // Commit time is after the issue time; 100 ms of slack for clock reads.
                let rows = chc
                    .query("SELECT resource_id, occurred_at_us FROM audit_items WHERE organization_id = ? AND occurred_at_us >= ?")
                    .bind(ORG)
                    .bind(since - 100_000)
                    .fetch_all::<Seen>()
                    .await
                    .unwrap_or_default();
                polls += 1;
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
            let period_ms = poll_start.elapsed().as_secs_f64() * 1000.0 / polls.max(1) as f64;
            let unseen = seen.iter().filter(|s| !**s).count() as u64;
            (lat_us, unseen, period_ms)
        })
    };
    for w in workers {
        w.await??;
    }
    gen_done.store(true, Ordering::Relaxed);
    let duration_s = (last_issue.load(Ordering::Relaxed) - first_issue) as f64 / 1e6;
    let achieved_rate = total as f64 / duration_s.max(1e-3);
    eprintln!(
        "  [lat {rate}/s] generated at {achieved_rate:.0} rows/s; waiting for the last items …"
    );
    let (mut lat_us, unseen, poll_period_ms) = poller.await?;
    parts_done.store(true, Ordering::Relaxed);
    let max_active_parts = parts_sampler.await?;
    let inserts_per_s = (insert_queries(ch).await?.saturating_sub(inserts0)) as f64
        / t_inserts.elapsed().as_secs_f64().max(1e-3);
    let too_many_parts = std::fs::read_to_string(&p.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Too many parts"))
        .count() as u64;
    let peak_rss_kb = p.peak_rss_kb();
    let wt_cpu_s = p.cpu_seconds();
    let ch_cpu_s = cpu_seconds(ch.pid().unwrap_or(0)) - ch_cpu0;
    p.check_alive()?;
    p.stop()?;
    wt::drop_slot(&db, setup.slot).await?;
    if lat_us.is_empty() {
        bail!("no item of the {rate}/s run became visible");
    }
    lat_us.sort_unstable();
    let pct = |q: f64| -> f64 {
        let i = ((lat_us.len() as f64 - 1.0) * q).round() as usize;
        lat_us[i.min(lat_us.len() - 1)] as f64 / 1000.0
    };
    let mut curve = Vec::new();
    let mut q = 0.0f64;
    while q <= 99.95 {
        curve.push((q, pct(q / 100.0)));
        // Finer steps in the tail, where the figures that matter are.
        q += if q < 90.0 {
            1.0
        } else if q < 99.0 {
            0.1
        } else {
            0.01
        };
    }
    curve.push((100.0, pct(1.0)));
    let l = Latency {
        target_rate: rate,
        rows_per_txn,
        achieved_rate,
        duration_s,
        items: lat_us.len() as u64,
        unseen,
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        curve,
        poll_period_ms,
        peak_rss_kb,
        wt_cpu_s,
        ch_cpu_s,
        inserts_per_s,
        max_active_parts,
        too_many_parts,
    };
    eprintln!(
        "  [lat {rate}/s] p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} unseen; poll every {:.1} ms; peak RSS {} MB; {:.1} inserts/s, at most {} active parts, {} \"Too many parts\"",
        l.p50_ms,
        l.p95_ms,
        l.p99_ms,
        l.max_ms,
        l.unseen,
        l.poll_period_ms,
        l.peak_rss_kb / 1024,
        l.inserts_per_s,
        l.max_active_parts,
        l.too_many_parts
    );
    Ok(l)
}

/// INSERT queries the server has run since it started.
async fn insert_queries(ch: &ClickHouse) -> Result<u64> {
    Ok(ch
        .client("default")
        .query("SELECT sum(value) FROM system.events WHERE event = 'InsertQuery'")
        .fetch_one::<u64>()
        .await?)
}
