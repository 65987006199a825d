//! Section 6, what tamper evidence costs: capture of one large transaction with the hash chain (and
//! signed checkpoints) on and off, in alternating pairs from slots made at the same point; and the time to
//! verify an NDJSON export of those items offline beside the time the API takes to export them.

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

use crate::servers::{ClickHouse, PgCluster};
use crate::throughput::fmt_count;
use crate::waltrail::{self as wt, Process, Setup};
use crate::Opts;

const DB: &str = "bench_chain";
const SEED: &str = "5151515151515151515151515151515151515151515151515151515151515151";

/// One workload captured with the chain on and off, in alternating pairs.
#[derive(Debug, Clone, Default)]
pub struct Pairs {
    /// Seconds to store every item, per pair: (chain off, chain on).
    pub time: Vec<(f64, f64)>,
    /// waltrail CPU seconds, per pair.
    pub cpu: Vec<(f64, f64)>,
    /// ClickHouse CPU seconds while each run stored its items, per pair (the chain's columns are stored too).
    pub ch_cpu: Vec<(f64, f64)>,
}

impl Pairs {
    /// Median of chain-on / chain-off time, and the spread (min, max).
    pub fn ratio(&self) -> (f64, f64, f64) {
        median_spread(self.time.iter().map(|(off, on)| on / off).collect())
    }
}

#[derive(Debug, Clone, Default)]
pub struct ChainCost {
    pub rows: u64,
    /// One transaction of `rows` rows.
    pub large: Pairs,
    pub small_txns: u64,
    /// `small_txns` one-row transactions.
    pub small: Pairs,
    pub export_s: f64,
    pub export_bytes: u64,
    pub verify_s: f64,
    pub verify_ok: bool,
    /// Commit → queryable p99 (ms) at a steady rate, per pair: (chain off, chain on).
    pub latency_p99: Vec<(f64, f64)>,
    pub latency_rate: u64,
    pub latency_secs: u64,
}

impl ChainCost {
    /// Median of chain-on / chain-off commit → queryable p99, and the spread.
    pub fn latency_ratio(&self) -> (f64, f64, f64) {
        median_spread(
            self.latency_p99
                .iter()
                .map(|(off, on)| on / off.max(1e-3))
                .collect(),
        )
    }
}

fn median_spread(mut r: Vec<f64>) -> (f64, f64, f64) {
    r.sort_by(|a, b| a.total_cmp(b));
    if r.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    (r[r.len() / 2], r[0], r[r.len() - 1])
}

/// Commit → queryable at a steady rate with the chain (and checkpoints) on and off, in alternating pairs.
async fn latency_pairs(
    opts: &Opts,
    pg: &PgCluster,
    ch: &ClickHouse,
    out: &mut ChainCost,
) -> Result<()> {
    let pairs = crate::env_u64("BENCH_CHAIN_LATENCY_PAIRS", 3) as usize;
    let secs = crate::env_u64("BENCH_CHAIN_LATENCY_SECS", 30).max(1);
    let rate = crate::env_u64("BENCH_CHAIN_LATENCY_RATE", 1000).max(1);
    out.latency_rate = rate;
    out.latency_secs = secs;
    if pairs == 0 {
        return Ok(());
    }
    pg.create_db(crate::latency::DB).await?;
    std::env::set_var("WALTRAIL_SIGNING_KEY", SEED);
    for pair in 0..pairs {
        let mut p99 = [0.0; 2];
        let order: [bool; 2] = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for chain in order {
            let extra = format!(
                "\n[integrity]\nchain = {chain}\n[security]\nevent_secret = \"bench-event-secret-0123456789abcdef\"\n"
            );
            let tag = format!("_c{pair}{}", if chain { "on" } else { "off" });
            let l = crate::latency::one_rate(opts, pg, ch, rate, 1, secs, &tag, &extra).await?;
            eprintln!(
                "  [chain] latency pair {pair}, chain {}: p99 {:.0} ms (p50 {:.0})",
                if chain { "on " } else { "off" },
                l.p99_ms,
                l.p50_ms
            );
            p99[usize::from(chain)] = l.p99_ms;
        }
        out.latency_p99.push((p99[0], p99[1]));
    }
    Ok(())
}

const TABLES: &str = r#"[[tables]]
table = "chained"
resource_type = "RESOURCE_TYPE_SETTING"
organization_column = "org_id"
display_column = "name"
"#;

/// What is captured: the SQL written after the slots are made, and the items it yields.
struct Workload<'a> {
    label: &'a str,
    sql: &'a str,
    items: u64,
}

/// Slots made before the workload is written, then each read by waltrail with the chain off and on, in
/// alternating pairs, until it stored every item. Returns the config of the last chained run.
async fn capture_pairs(
    opts: &Opts,
    pg: &PgCluster,
    ch: &ClickHouse,
    w: Workload<'_>,
    pairs: usize,
    out: &mut Pairs,
) -> Result<std::path::PathBuf> {
    let Workload { label, sql, items } = w;
    let db = pg.client(DB).await?;
    let slots: Vec<String> = (0..pairs * 2)
        .map(|i| format!("chain_{label}_{i}"))
        .collect();
    for s in &slots {
        db.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[s],
        )
        .await?;
    }
    db.batch_execute(sql).await?;
    db.batch_execute("CHECKPOINT").await?;
    let mut last_on = None;
    for pair in 0..pairs {
        let mut times = [0.0; 2];
        let mut cpus = [0.0; 2];
        let mut ch_cpus = [0.0; 2];
        // Alternate which goes first, so a machine that warms up or slows down favours neither.
        let order: [bool; 2] = if pair % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for (k, chain) in order.into_iter().enumerate() {
            let slot = &slots[pair * 2 + k];
            let ch_db = format!("chain_{label}_{pair}_{}", if chain { "on" } else { "off" });
            ch.reset_db(&ch_db).await?;
            let name = format!("chain-{label}-{pair}-{chain}");
            let setup = Setup {
                name: &name,
                db: DB,
                slot,
                publication: "pub_chain",
                ch_db: &ch_db,
                tables: TABLES,
            };
            let mut text = wt::config_text(pg, ch, &setup);
            text.push_str(&format!(
                "\n[integrity]\nchain = {chain}\n[security]\nevent_secret = \"bench-event-secret-0123456789abcdef\"\n"
            ));
            let cfg = opts.work_dir.join(format!("{name}.toml"));
            std::fs::write(&cfg, text)?;
            wt::migrate(&cfg)?;
            std::env::set_var("WALTRAIL_SIGNING_KEY", SEED);
            let ch_cpu0 = crate::procfs::cpu_seconds(ch.pid().unwrap_or(0));
            let mut p = Process::spawn(&cfg, opts.work_dir.join(format!("waltrail-{name}.log")))?;
            let chc = ch.client(&ch_db);
            let deadline = Instant::now() + Duration::from_secs(opts.timeout_s);
            loop {
                let n: u64 = chc
                    .query("SELECT count() FROM audit_items")
                    .fetch_one()
                    .await
                    .unwrap_or(0);
                if n >= items {
                    break;
                }
                p.check_alive()?;
                if Instant::now() > deadline {
                    bail!(
                        "waltrail stored {n} of {items} items (log {})",
                        p.log.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let i = usize::from(chain);
            times[i] = p.started.elapsed().as_secs_f64();
            cpus[i] = p.cpu_seconds();
            ch_cpus[i] = crate::procfs::cpu_seconds(ch.pid().unwrap_or(0)) - ch_cpu0;
            p.stop()?;
            eprintln!(
                "  [chain] {label}, pair {pair}, chain {}: {:.2} s, {:.2} CPU-s, ClickHouse {:.2} CPU-s",
                if chain { "on " } else { "off" },
                times[i],
                cpus[i],
                ch_cpus[i]
            );
            if chain {
                last_on = Some(cfg.clone());
            }
        }
        out.time.push((times[0], times[1]));
        out.cpu.push((cpus[0], cpus[1]));
        out.ch_cpu.push((ch_cpus[0], ch_cpus[1]));
    }
    for s in &slots {
        wt::drop_slot(&db, s).await?;
    }
    last_on.context("no chained run")
}

pub async fn run(opts: &Opts, pg: &PgCluster, ch: &ClickHouse) -> Result<ChainCost> {
    let rows = crate::env_u64("BENCH_CHAIN_ROWS", 300_000);
    let small_txns = crate::env_u64("BENCH_CHAIN_TXNS", 50_000);
    let pairs = crate::env_u64("BENCH_CHAIN_PAIRS", 3).max(1) as usize;
    pg.create_db(DB).await?;
    let db = pg.client(DB).await?;
    db.batch_execute(
        "CREATE TABLE chained (id bigint PRIMARY KEY, org_id text, name text, payload jsonb);
         ALTER TABLE chained REPLICA IDENTITY FULL;
         CREATE PUBLICATION pub_chain FOR TABLE chained;",
    )
    .await?;
    let mut out = ChainCost {
        rows,
        small_txns,
        ..Default::default()
    };
    eprintln!("  [chain] one {}-row transaction", fmt_count(rows));
    let large = format!(
        "INSERT INTO chained SELECT g, 'org1', 'item-' || g, jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b')) \
         FROM generate_series(1, {rows}) g"
    );
    let large = Workload {
        label: "large",
        sql: &large,
        items: rows,
    };
    let cfg = capture_pairs(opts, pg, ch, large, pairs, &mut out.large).await?;
    if small_txns > 0 {
        eprintln!("  [chain] {} one-row transactions", fmt_count(small_txns));
        // Rows of the same shape in organizations of their own (a chain each, as a platform has many).
        let small = format!(
            "DO $$ BEGIN FOR g IN {} .. {} LOOP \
               INSERT INTO chained VALUES (g, 'org' || (2 + g % 50), 'item-' || g, \
                 jsonb_build_object('n', g, 'tags', jsonb_build_array('a', 'b'))); \
               COMMIT; END LOOP; END $$",
            rows + 1,
            rows + small_txns
        );
        let small = Workload {
            label: "small",
            sql: &small,
            items: small_txns,
        };
        capture_pairs(opts, pg, ch, small, pairs, &mut out.small).await?;
    }
    latency_pairs(opts, pg, ch, &mut out).await?;
    // Export the chained items through the API, then verify the file offline.
    let key = "bench-auditor-key";
    let port = crate::servers::free_port();
    let mut text = std::fs::read_to_string(&cfg)?.replace("[api]\nenabled = false\n", "");
    text.push_str(&format!(
        "\n[api]\nlisten = \"127.0.0.1:{port}\"\n[[api.keys]]\nname = \"auditor\"\nsha256 = \"{}\"\norg_id = \"org1\"\nrole = \"admin\"\n",
        waltrail::api::auth::sha256_hex(key)
    ));
    let serve_cfg = opts.work_dir.join("chain-serve.toml");
    std::fs::write(&serve_cfg, text)?;
    let log = std::fs::File::create(opts.work_dir.join("chain-serve.log"))?;
    let mut server = std::process::Command::new(wt::binary())
        .args(["serve", "--config"])
        .arg(&serve_cfg)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/orgs/org1/audit_logs/export?format=ndjson");
    let mut ready = false;
    for _ in 0..100 {
        if http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        let _ = server.kill();
        bail!("waltrail serve did not answer");
    }
    let file = opts.work_dir.join("chain-export.ndjson");
    let t = Instant::now();
    let body = http
        .get(&url)
        .bearer_auth(key)
        .send()
        .await?
        .bytes()
        .await?;
    out.export_s = t.elapsed().as_secs_f64();
    out.export_bytes = body.len() as u64;
    let _ = server.kill();
    let _ = server.wait();
    std::fs::write(&file, &body)?;
    let keys = opts.work_dir.join("chain-keys.txt");
    let pk = std::process::Command::new(wt::binary())
        .args(["keys", "--config"])
        .arg(&serve_cfg)
        .output()?;
    std::fs::write(&keys, &pk.stdout)?;
    let t = Instant::now();
    let v = std::process::Command::new(wt::binary())
        .args(["verify", "--export"])
        .arg(&file)
        .arg("--public-key")
        .arg(&keys)
        .output()?;
    out.verify_s = t.elapsed().as_secs_f64();
    out.verify_ok = v.status.success();
    eprintln!(
        "  [chain] export {:.2} s ({} MB), offline verify {:.2} s ({})",
        out.export_s,
        out.export_bytes >> 20,
        out.verify_s,
        if out.verify_ok { "intact" } else { "FAILED" }
    );
    let _ = std::fs::remove_file(&file);
    Ok(out)
}
