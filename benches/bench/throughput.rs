//! Measurement 1, throughput against the limit. 2 × N logical slots are created at the same WAL position
//! before the changes are made; then, in N alternating pairs (`pg_recvlogical` first, then waltrail first,
//! …) and one after the other so they never share the CPU, `pg_recvlogical` (the raw pgoutput stream to
//! /dev/null) reads one slot and waltrail another until every item is queryable in ClickHouse. Same WAL,
//! same decoding work on the server. The figure is the median of the pairs' ratios, with their spread and
//! the machine's load average before each run (another busy process on the machine shows there).

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs::cpu_seconds;
use crate::servers::{pg_bin, ClickHouse, PgCluster};
use crate::waltrail::{self as wt, Process, Setup};
use crate::Opts;

#[derive(Debug, Clone)]
pub struct Shape {
    pub label: String,
    pub rows: u64,
    pub transactions: u64,
    pub generate_s: f64,
    pub wal_bytes: u64,
    pub recv_s: f64,
    /// Every pair, in the order run.
    pub pairs: Vec<Pair>,
    pub recv_walsender_cpu_s: f64,
    pub wt_s: f64,
    pub wt_walsender_cpu_s: f64,
    pub wt_cpu_s: f64,
    pub ch_cpu_s: f64,
    /// What ClickHouse did while the median run stored its items: INSERT queries and rows merged (a row
    /// rewritten by each merge that takes its part).
    pub ch_inserts: u64,
    pub ch_merged_rows: u64,
    pub wt_peak_rss_kb: u64,
    /// What the source's walsender spilled to its disk and streamed, under pg_recvlogical and under waltrail
    /// (pg_stat_replication_slots, the median pair's slots): (spill bytes, stream bytes).
    pub recv_source: (i64, i64),
    pub wt_source: (i64, i64),
    /// The same transaction written while waltrail is attached, streaming on and off (the big shape only).
    pub live: Vec<LiveRun>,
}

/// One large transaction written while waltrail streams: from its COMMIT returning to every item queryable.
#[derive(Debug, Clone)]
pub struct LiveRun {
    pub streaming: bool,
    /// How long the INSERT … COMMIT took on the source.
    pub generate_s: f64,
    pub commit_to_queryable_s: f64,
    pub walsender_cpu_s: f64,
    /// The source's spill and stream bytes for this run's slot.
    pub source: (i64, i64),
    pub wt_peak_rss_kb: u64,
    pub load_before: String,
}

impl Shape {
    pub fn recv_rate(&self) -> f64 {
        self.rows as f64 / self.recv_s
    }
    pub fn wt_rate(&self) -> f64 {
        self.rows as f64 / self.wt_s
    }
    /// waltrail's rate over pg_recvlogical's: the median of the pairs' ratios.
    pub fn ratio(&self) -> f64 {
        self.spread().0
    }
    /// (median, lowest, highest) of the pairs' ratios.
    pub fn spread(&self) -> (f64, f64, f64) {
        let mut r: Vec<f64> = self.pairs.iter().map(Pair::ratio).collect();
        r.sort_by(|a, b| a.total_cmp(b));
        match r.len() {
            0 => (0.0, 0.0, 0.0),
            n => (r[n / 2], r[0], r[n - 1]),
        }
    }
}

/// One alternating pair: the same WAL read by pg_recvlogical and by waltrail, one after the other.
#[derive(Debug, Clone)]
pub struct Pair {
    pub recv_first: bool,
    pub recv_s: f64,
    pub wt_s: f64,
    /// /proc/loadavg just before each run: (pg_recvlogical's, waltrail's).
    pub load_before: (String, String),
}

impl Pair {
    pub fn ratio(&self) -> f64 {
        self.recv_s / self.wt_s.max(1e-9)
    }
}

const DB: &str = "tp";

/// The one-large-transaction shape (1a): its table, published as `pub_big` …
pub const BIG_DDL: &str =
    "CREATE TABLE big_items (id bigint PRIMARY KEY, org_id text, project_id text, name text, payload jsonb);
     ALTER TABLE big_items REPLICA IDENTITY FULL;
     CREATE PUBLICATION pub_big FOR TABLE big_items;";

/// … the transaction: `n` rows over 100 organizations in one INSERT …
pub fn big_generate_sql(n: u64) -> String {
    format!(
        "INSERT INTO big_items SELECT g, 'org' || lpad((g % 100)::text, 3, '0'), 'p' || (g % 10), 'item-' || g, \
         jsonb_build_object('n', g, 'enabled', g % 2 = 0, 'tags', jsonb_build_array('a', 'b'), 'limits', jsonb_build_object('rps', 100, 'burst', 20)) \
         FROM generate_series(1, {n}) g"
    )
}

/// … and waltrail's mapping of it.
pub const BIG_TABLES: &str = r#"[[tables]]
table = "big_items"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org_id"
project_column = "project_id"
display_column = "name"
"#;

pub async fn run(opts: &Opts, pg: &PgCluster, ch: &ClickHouse) -> Result<Vec<Shape>> {
    pg.create_db(DB).await?;
    let db = pg.client(DB).await?;
    let mut out = Vec::new();
    if opts.big_txn_rows > 0 {
        db.batch_execute(BIG_DDL).await?;
        let n = opts.big_txn_rows;
        let generate = big_generate_sql(n);
        let shape = measure(
            opts,
            pg,
            ch,
            &db,
            "big",
            &format!("one {}-row INSERT transaction", fmt_count(n)),
            n,
            1,
            &generate,
            BIG_TABLES,
        )
        .await?;
        let mut shape = shape;
        shape.live = live(opts, pg, ch, &db, n).await?;
        out.push(shape);
        db.batch_execute("DROP TABLE big_items").await?;
    }
    if opts.update_txns > 0 {
        let rows = 10_000.min(opts.update_txns.max(1));
        db.batch_execute(&format!(
            "CREATE TABLE gateways (id bigint PRIMARY KEY, org_id text, project_id text, name text, config jsonb, updated_at timestamptz);
             ALTER TABLE gateways REPLICA IDENTITY FULL;
             INSERT INTO gateways SELECT g, 'org' || lpad((g % 100)::text, 3, '0'), 'p' || (g % 10), 'gw-' || g,
               jsonb_build_object('version', 0, 'upstream', 'http://svc-' || g || '.internal:8080', 'retries', 3,
                                  'plugins', jsonb_build_array('auth', 'rate-limit', 'cors'), 'timeouts', jsonb_build_object('connect', 5, 'read', 30)),
               now()
             FROM generate_series(1, {rows}) g;
             CREATE PUBLICATION pub_upd FOR TABLE gateways;
             CREATE PROCEDURE bench_updates(n int, nrows int) LANGUAGE plpgsql AS $$
             BEGIN
               FOR i IN 1..n LOOP
                 UPDATE gateways SET name = 'gw-' || (1 + i % nrows) || '-v' || i,
                        config = jsonb_set(config, '{{version}}', to_jsonb(i)), updated_at = clock_timestamp()
                  WHERE id = 1 + i % nrows;
                 COMMIT;
               END LOOP;
             END $$;"
        ))
        .await?;
        db.batch_execute("VACUUM ANALYZE gateways").await?;
        let n = opts.update_txns;
        let shape = measure(
            opts,
            pg,
            ch,
            &db,
            "upd",
            &format!(
                "{} one-row UPDATE transactions (REPLICA IDENTITY FULL, jsonb)",
                fmt_count(n)
            ),
            n,
            n,
            &format!("CALL bench_updates({n}, {rows})"),
            r#"[[tables]]
table = "gateways"
resource_type = "RESOURCE_TYPE_GATEWAY"
organization_column = "org_id"
project_column = "project_id"
display_column = "name"
"#,
        )
        .await?;
        out.push(shape);
    }
    if opts.delete_rows > 0 {
        // Deletes that carry their key alone (the table at the default replica identity when they were
        // written): each item's organization comes from its resource's last item in the trail, looked up
        // in batches. The rows are inserted in the run too, so their items are in the trail to be found.
        let n = opts.delete_rows;
        db.batch_execute(
            "CREATE TABLE api_keys (id bigint PRIMARY KEY, org_id text NOT NULL, project_id text, name text, scopes jsonb);
             CREATE PUBLICATION pub_del FOR TABLE api_keys;",
        )
        .await?;
        let shape = measure(
            opts,
            pg,
            ch,
            &db,
            "del",
            &format!(
                "one {n_fmt}-row INSERT, then one DELETE of them all, without REPLICA IDENTITY FULL (key-only deletes)",
                n_fmt = fmt_count(n)
            ),
            2 * n,
            2,
            &format!(
                "BEGIN; INSERT INTO api_keys SELECT g, 'org' || lpad((g % 100)::text, 3, '0'), 'p' || (g % 10), 'key-' || g,
                   jsonb_build_array('read', 'write') FROM generate_series(1, {n}) g; COMMIT;
                 BEGIN; DELETE FROM api_keys; COMMIT;"
            ),
            r#"[[tables]]
table = "api_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
organization_column = "org_id"
project_column = "project_id"
display_column = "name"
"#,
        )
        .await?;
        out.push(shape);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    opts: &Opts,
    pg: &PgCluster,
    ch: &ClickHouse,
    db: &tokio_postgres::Client,
    key: &str,
    label: &str,
    rows: u64,
    transactions: u64,
    generate_sql: &str,
    tables: &str,
) -> Result<Shape> {
    let n_pairs = crate::env_u64("BENCH_THROUGHPUT_PAIRS", 3).max(1) as usize;
    let publication = format!("pub_{key}");
    // Every slot at the same point, before any of the changes.
    let slots: Vec<(String, String)> = (0..n_pairs)
        .map(|p| (format!("rl_{key}_{p}"), format!("wt_{key}_{p}")))
        .collect();
    for (rl, wt) in &slots {
        for slot in [rl, wt] {
            db.execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[slot],
            )
            .await?;
        }
    }
    let start_lsn: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    eprintln!("  [{key}] generating: {label}");
    let t = Instant::now();
    db.batch_execute(generate_sql)
        .await
        .context("generating changes")?;
    let generate_s = t.elapsed().as_secs_f64();
    let row = db
        .query_one(
            "SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
            &[&start_lsn],
        )
        .await?;
    let end_lsn: String = row.get(0);
    let wal_bytes = row.get::<_, i64>(1) as u64;
    eprintln!(
        "  [{key}] generated in {generate_s:.1} s, {:.0} MB of WAL; {n_pairs} alternating pairs …",
        wal_bytes as f64 / 1e6
    );
    db.batch_execute("CHECKPOINT").await?;

    struct WtRun {
        s: f64,
        walsender_cpu_s: f64,
        cpu_s: f64,
        ch_cpu_s: f64,
        ch_work: ChWork,
        peak_rss_kb: u64,
    }
    let mut pairs = Vec::new();
    let mut recv_runs = Vec::new();
    let mut wt_runs = Vec::new();
    for (p, (rl_slot, wt_slot)) in slots.iter().enumerate() {
        // Alternate which goes first, so a machine that warms up or slows down favours neither.
        let recv_first = p % 2 == 0;
        let mut recv = None;
        let mut wt = None;
        let mut loads = (String::new(), String::new());
        for recv_turn in [recv_first, !recv_first] {
            if recv_turn {
                loads.0 = crate::procfs::loadavg();
                let (secs, cpu) = recvlogical(pg, db, rl_slot, &publication, &end_lsn).await?;
                eprintln!(
                    "  [{key}] pair {p}: pg_recvlogical {secs:.2} s ({:.0} rows/s; load before {})",
                    rows as f64 / secs,
                    loads.0
                );
                recv = Some((secs, cpu));
                continue;
            }
            // waltrail, from the same position, until every item is queryable.
            loads.1 = crate::procfs::loadavg();
            let ch_db = format!("tp_{key}_{p}");
            ch.reset_db(&ch_db).await?;
            let name = format!("tp-{key}-{p}");
            let setup = Setup {
                name: &name,
                db: DB,
                slot: wt_slot,
                publication: &publication,
                ch_db: &ch_db,
                tables,
            };
            let cfg = wt::write_config(&opts.work_dir, pg, ch, &setup)?;
            wt::migrate(&cfg)?;
            let chc = ch.client(&ch_db);
            let ch_cpu0 = cpu_seconds(ch.pid().unwrap_or(0));
            let ch_work0 = ch_work(ch).await?;
            let mut proc =
                Process::spawn(&cfg, opts.work_dir.join(format!("waltrail-{name}.log")))?;
            let stored = wait_stored(&chc, rows, &mut proc, opts.timeout_s, db, wt_slot).await?;
            let mut walsender_cpu_s = stored.walsender_cpu_s;
            if let Some(pid) = slot_pid(db, wt_slot).await? {
                walsender_cpu_s = cpu_seconds(pid as u32).max(walsender_cpu_s);
            }
            let run = WtRun {
                s: stored.total_s,
                walsender_cpu_s,
                cpu_s: proc.cpu_seconds(),
                ch_cpu_s: cpu_seconds(ch.pid().unwrap_or(0)) - ch_cpu0,
                ch_work: ch_work(ch).await?.since(&ch_work0),
                peak_rss_kb: proc.peak_rss_kb(),
            };
            proc.stop()?;
            // Free the disk for the next pair.
            ch.reset_db(&ch_db).await?;
            eprintln!(
                "  [{key}] pair {p}: waltrail {:.2} s ({:.0} rows/s), peak RSS {} MB, ClickHouse {:.1} CPU-s, {} inserts, {} rows merged; load before {}",
                run.s,
                rows as f64 / run.s,
                run.peak_rss_kb / 1024,
                run.ch_cpu_s,
                run.ch_work.inserts,
                run.ch_work.merged_rows,
                loads.1
            );
            wt = Some(run);
        }
        let (Some((recv_s, recv_cpu)), Some(run)) = (recv, wt) else {
            bail!("pair {p} did not run both consumers");
        };
        pairs.push(Pair {
            recv_first,
            recv_s,
            wt_s: run.s,
            load_before: loads,
        });
        recv_runs.push((recv_s, recv_cpu));
        wt_runs.push(run);
    }
    // The headline figures are those of the median pair; peak RSS the most any run reached.
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by(|a, b| pairs[*a].ratio().total_cmp(&pairs[*b].ratio()));
    let m = order[order.len() / 2];
    let recv_source = source_spill(db, &slots[m].0).await?;
    let wt_source = source_spill(db, &slots[m].1).await?;
    for (rl, wt) in &slots {
        wt::drop_slot(db, rl).await?;
        wt::drop_slot(db, wt).await?;
    }
    let peak = wt_runs.iter().map(|r| r.peak_rss_kb).max().unwrap_or(0);
    Ok(Shape {
        label: label.to_owned(),
        rows,
        transactions,
        generate_s,
        wal_bytes,
        recv_s: recv_runs[m].0,
        pairs,
        recv_walsender_cpu_s: recv_runs[m].1,
        wt_s: wt_runs[m].s,
        wt_walsender_cpu_s: wt_runs[m].walsender_cpu_s,
        wt_cpu_s: wt_runs[m].cpu_s,
        ch_cpu_s: wt_runs[m].ch_cpu_s,
        ch_inserts: wt_runs[m].ch_work.inserts,
        ch_merged_rows: wt_runs[m].ch_work.merged_rows,
        wt_peak_rss_kb: peak,
        recv_source,
        wt_source,
        live: Vec::new(),
    })
}

/// ClickHouse's counters since it started: what its CPU went to while waltrail stored a shape.
#[derive(Debug, Clone, Copy, Default, clickhouse::Row, serde::Deserialize)]
struct ChWork {
    inserts: u64,
    merged_rows: u64,
}

impl ChWork {
    fn since(&self, before: &ChWork) -> ChWork {
        ChWork {
            inserts: self.inserts.saturating_sub(before.inserts),
            merged_rows: self.merged_rows.saturating_sub(before.merged_rows),
        }
    }
}

async fn ch_work(ch: &ClickHouse) -> Result<ChWork> {
    Ok(ch
        .client("default")
        .query(
            "SELECT sumIf(value, event = 'InsertQuery') AS inserts, \
             sumIf(value, event = 'MergedRows') AS merged_rows FROM system.events",
        )
        .fetch_one::<ChWork>()
        .await?)
}

/// The large transaction written while waltrail is attached, with streaming on and off in alternating
/// pairs (BENCH_LIVE_PAIRS, default 2; 0 skips): the time from its COMMIT to every item queryable is what a
/// user waits for; the walsender's CPU and spill what the source pays.
async fn live(
    opts: &Opts,
    pg: &PgCluster,
    ch: &ClickHouse,
    db: &tokio_postgres::Client,
    n: u64,
) -> Result<Vec<LiveRun>> {
    let pairs = crate::env_u64("BENCH_LIVE_PAIRS", 2);
    let mut out = Vec::new();
    for run in 0..pairs * 2 {
        let streaming = (run % 2 == 0) == (run / 2 % 2 == 0);
        let slot = format!("live_{run}");
        let ch_db = format!("tp_live_{run}");
        ch.reset_db(&ch_db).await?;
        db.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await?;
        let name = format!("tp-live-{run}");
        let setup = Setup {
            name: &name,
            db: DB,
            slot: &slot,
            publication: "pub_big",
            ch_db: &ch_db,
            tables: BIG_TABLES,
        };
        let cfg = wt::write_config(&opts.work_dir, pg, ch, &setup)?;
        let text = std::fs::read_to_string(&cfg)?;
        let text = text.replacen(
            &format!("streaming = {}", wt::streaming()),
            &format!("streaming = {streaming}"),
            1,
        );
        std::fs::write(&cfg, text)?;
        wt::migrate(&cfg)?;
        let chc = ch.client(&ch_db);
        let mut proc = Process::spawn(&cfg, opts.work_dir.join(format!("waltrail-{name}.log")))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while slot_pid(db, &slot).await?.is_none() {
            proc.check_alive()?;
            if Instant::now() > deadline {
                bail!("waltrail did not start streaming slot {slot}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let load_before = crate::procfs::loadavg();
        // New ids each run: the table keeps the rows of the runs before.
        let offset = (run + 1) * n;
        let t = Instant::now();
        db.batch_execute(
            &big_generate_sql(n).replace("SELECT g,", &format!("SELECT g + {offset},")),
        )
        .await
        .context("the live transaction")?;
        let generate_s = t.elapsed().as_secs_f64();
        let committed = Instant::now();
        let walsender = slot_pid(db, &slot).await?;
        wait_stored(&chc, n, &mut proc, opts.timeout_s, db, &slot).await?;
        let commit_to_queryable_s = committed.elapsed().as_secs_f64();
        let walsender_cpu_s = walsender.map_or(0.0, |pid| cpu_seconds(pid as u32));
        let r = LiveRun {
            streaming,
            generate_s,
            commit_to_queryable_s,
            walsender_cpu_s,
            source: source_spill(db, &slot).await?,
            wt_peak_rss_kb: proc.peak_rss_kb(),
            load_before,
        };
        proc.stop()?;
        wt::drop_slot(db, &slot).await?;
        ch.reset_db(&ch_db).await?;
        eprintln!(
            "  [live] streaming {}: transaction {:.2} s, commit → queryable {:.2} s, walsender {:.1} s CPU, source spilled {:.0} MB / streamed {:.0} MB, peak RSS {} MB",
            if streaming { "on" } else { "off" },
            r.generate_s,
            r.commit_to_queryable_s,
            r.walsender_cpu_s,
            r.source.0 as f64 / 1e6,
            r.source.1 as f64 / 1e6,
            r.wt_peak_rss_kb / 1024
        );
        out.push(r);
    }
    Ok(out)
}

/// What the walsender of `slot` spilled to the source's disk and streamed: (spill bytes, stream bytes).
async fn source_spill(db: &tokio_postgres::Client, slot: &str) -> Result<(i64, i64)> {
    let row = db
        .query_opt(
            "SELECT spill_bytes, stream_bytes FROM pg_stat_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?;
    Ok(row.map_or((0, 0), |r| (r.get(0), r.get(1))))
}

/// When a waltrail run had every item stored.
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    /// From the start of the process.
    pub total_s: f64,
    /// From the first poll that saw its slot active (waltrail streaming, its start-up done).
    pub streaming_s: f64,
    /// The most CPU its walsender was seen to have used.
    pub walsender_cpu_s: f64,
}

/// Poll (every 50 ms) until `rows` distinct items are queryable through `chc`'s `audit_items`, failing
/// when waltrail exits or `timeout_s` passes; meanwhile watch the slot it reads (for when streaming began
/// and what its walsender costs).
pub async fn wait_stored(
    chc: &clickhouse::Client,
    rows: u64,
    p: &mut Process,
    timeout_s: u64,
    db: &tokio_postgres::Client,
    slot: &str,
) -> Result<Stored> {
    let mut walsender_cpu_s = 0.0;
    let mut streaming_since = None;
    let deadline = Instant::now() + Duration::from_secs(timeout_s);
    loop {
        let n: u64 = chc
            .query("SELECT count() FROM audit_items")
            .fetch_one()
            .await
            .unwrap_or(0);
        // count() first (cheap); uniqExact then rules out a replay counted twice.
        if n >= rows {
            let distinct: u64 = chc
                .query("SELECT uniqExact(id) FROM audit_items")
                .fetch_one()
                .await?;
            if distinct >= rows {
                break;
            }
        }
        if let Some(pid) = slot_pid(db, slot).await? {
            streaming_since.get_or_insert_with(Instant::now);
            walsender_cpu_s = cpu_seconds(pid as u32).max(walsender_cpu_s);
        }
        p.check_alive()?;
        if Instant::now() > deadline {
            bail!(
                "waltrail stored {n} of {rows} items within {timeout_s} s (log {})",
                p.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total_s = p.started.elapsed().as_secs_f64();
    Ok(Stored {
        total_s,
        streaming_s: streaming_since.map_or(total_s, |t| t.elapsed().as_secs_f64()),
        walsender_cpu_s,
    })
}

/// `pg_recvlogical` streaming a slot's pgoutput to /dev/null, from its position onwards, with waltrail's
/// protocol options (protocol 2 and streaming of large in-progress transactions, unless BENCH_STREAMING=0).
pub fn recvlogical_cmd(pg: &PgCluster, db: &str, slot: &str, publication: &str) -> Result<Command> {
    let mut cmd = Command::new(format!("{}/pg_recvlogical", pg_bin()?));
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &pg.port.to_string(),
        "-U",
        "postgres",
    ])
    .args([
        "-d",
        db,
        "-S",
        slot,
        "--start",
        "--no-loop",
        "-f",
        "/dev/null",
    ])
    .args(if crate::waltrail::streaming() {
        ["-o", "proto_version=2", "-o", "streaming=on"]
    } else {
        ["-o", "proto_version=1", "-o", "streaming=off"]
    })
    .arg("-o")
    .arg(format!("publication_names={publication}"));
    Ok(cmd)
}

/// Stream a slot with pg_recvlogical to /dev/null up to `end_lsn`: (seconds, walsender CPU seconds).
async fn recvlogical(
    pg: &PgCluster,
    db: &tokio_postgres::Client,
    slot: &str,
    publication: &str,
    end_lsn: &str,
) -> Result<(f64, f64)> {
    let t = Instant::now();
    let mut child = recvlogical_cmd(pg, DB, slot, publication)?
        .args(["-s", "1", "-o", "messages=true", "-E", end_lsn])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start pg_recvlogical")?;
    let mut walsender_cpu_s = 0.0;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if let Some(pid) = slot_pid(db, slot).await? {
            walsender_cpu_s = cpu_seconds(pid as u32).max(walsender_cpu_s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        bail!("pg_recvlogical failed ({status}): {err}");
    }
    Ok((secs, walsender_cpu_s))
}

/// The walsender serving a slot, while one does.
pub async fn slot_pid(db: &tokio_postgres::Client, slot: &str) -> Result<Option<i32>> {
    Ok(db
        .query_opt(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .and_then(|r| r.get::<_, Option<i32>>(0)))
}

pub fn fmt_count(n: u64) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}
