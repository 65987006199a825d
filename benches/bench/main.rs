//! waltrail's benchmark (issue 6): starts its own Postgres and ClickHouse like the tests do, runs the six
//! measurements (the sixth, hostile clients, from issue 12; on request, the cost of tamper evidence and a
//! ClickHouse cluster beside one node, from issue 14), prints one table of ratios and percentiles, all measured in this run, and (when asked)
//! writes it into docs/benchmarks.md with a plot of the latency percentiles.
//!
//! `scripts/bench` runs it at full size. Sizes and durations come from environment variables (see
//! `Opts::from_env` and docs/benchmarks.md), so a short run while developing is e.g.
//! `BENCH_BIG_TXN_ROWS=50000 BENCH_UPDATE_TXNS=5000 BENCH_LATENCY_SECS=5 BENCH_PGBENCH_SECS=5
//!  BENCH_QUERY_ITEMS=200000 cargo bench --bench bench`.

mod chain;
#[path = "../../tests/shared_with_bench/cluster.rs"]
mod cluster;
mod hostile;
mod latency;
mod pin;
#[path = "../../tests/shared_with_bench/procfs.rs"]
mod procfs;
mod query;
mod report;
#[path = "../../tests/shared_with_bench/servers.rs"]
mod servers;
mod sharded;
mod source_cost;
mod throughput;
mod waltrail;

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct Opts {
    pub sections: Vec<String>,
    pub big_txn_rows: u64,
    pub update_txns: u64,
    pub delete_rows: u64,
    pub latency_secs: u64,
    /// (changes per second, rows per transaction)
    pub latency_rates: Vec<(u64, u64)>,
    pub latency_workers: usize,
    pub poll_ms: u64,
    pub pgbench_secs: u64,
    pub pgbench_clients: u32,
    pub pgbench_rounds: u32,
    /// Which core layouts to run pgbench in: `shared`, `pinned`, `spare` (see source_cost::Layout).
    pub pgbench_layouts: String,
    pub query_items: u64,
    pub query_orgs: u32,
    pub query_requests: usize,
    pub export_orgs: u32,
    pub hostile_secs: u64,
    pub hostile_rate: u64,
    pub hostile_pollers: usize,
    pub hostile_flooders: usize,
    pub hostile_slow: usize,
    pub settle_max_s: u64,
    pub timeout_s: u64,
    pub docs: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub work_dir: PathBuf,
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: expected a whole number")),
        Err(_) => default,
    }
}

impl Opts {
    pub fn from_env() -> Opts {
        let sections = std::env::var("BENCH_SECTIONS")
            .unwrap_or_else(|_| "throughput,latency,source,query,hostile".into())
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        // "1000,10000" or with rows per transaction "1000,10000x10".
        let latency_rates = std::env::var("BENCH_LATENCY_RATES")
            .unwrap_or_else(|_| "1000,10000x10".into())
            .split(',')
            .map(|s| {
                let (r, k) = s.trim().split_once('x').unwrap_or((s.trim(), "1"));
                (
                    r.parse().expect("BENCH_LATENCY_RATES: rate"),
                    k.parse()
                        .expect("BENCH_LATENCY_RATES: rows per transaction"),
                )
            })
            .collect();
        Opts {
            sections,
            big_txn_rows: env_u64("BENCH_BIG_TXN_ROWS", 1_000_000),
            update_txns: env_u64("BENCH_UPDATE_TXNS", 200_000),
            delete_rows: env_u64("BENCH_DELETE_ROWS", 100_000),
            latency_secs: env_u64("BENCH_LATENCY_SECS", 60),
            latency_rates,
            latency_workers: env_u64("BENCH_LATENCY_WORKERS", 4) as usize,
            poll_ms: env_u64("BENCH_POLL_MS", 10),
            pgbench_secs: env_u64("BENCH_PGBENCH_SECS", 60),
            pgbench_clients: env_u64("BENCH_PGBENCH_CLIENTS", 4) as u32,
            pgbench_rounds: env_u64("BENCH_PGBENCH_ROUNDS", 2).max(1) as u32,
            pgbench_layouts: std::env::var("BENCH_PGBENCH_CPUS")
                .unwrap_or_else(|_| "shared,pinned,spare".into()),
            query_items: env_u64("BENCH_QUERY_ITEMS", 10_000_000),
            query_orgs: env_u64("BENCH_QUERY_ORGS", 100).max(1) as u32,
            query_requests: env_u64("BENCH_QUERY_REQUESTS", 200).max(1) as usize,
            export_orgs: env_u64("BENCH_EXPORT_ORGS", 3) as u32,
            hostile_secs: env_u64("BENCH_HOSTILE_SECS", 60).max(3),
            hostile_rate: env_u64("BENCH_HOSTILE_RATE", 1000).max(1),
            hostile_pollers: env_u64("BENCH_HOSTILE_POLLERS", 50) as usize,
            hostile_flooders: env_u64("BENCH_HOSTILE_FLOODERS", 8) as usize,
            hostile_slow: env_u64("BENCH_HOSTILE_SLOW", 2000) as usize,
            settle_max_s: env_u64("BENCH_SETTLE_MAX_S", 180),
            timeout_s: env_u64("BENCH_TIMEOUT_S", 900),
            docs: std::env::var("BENCH_DOCS")
                .ok()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            plot: std::env::var("BENCH_PLOT")
                .ok()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            work_dir: std::env::temp_dir()
                .join(format!("waltrail-bench-work-{}", std::process::id())),
        }
    }

    pub fn has(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section || s == "all")
    }
}

#[derive(Debug, Default)]
pub struct Results {
    pub machine: report::Machine,
    pub throughput: Vec<throughput::Shape>,
    pub latency: Vec<latency::Latency>,
    pub source: Option<source_cost::SourceCost>,
    pub query: Option<query::QuerySide>,
    pub chain: Option<chain::ChainCost>,
    pub hostile: Option<hostile::Hostile>,
    pub cluster: Option<sharded::ClusterSide>,
    pub total_s: f64,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes test-harness flags: a full benchmark is
    // only what `cargo bench` (or scripts/bench) asks for.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") && std::env::var("BENCH_FORCE").is_err() {
        eprintln!("waltrail bench: run it with `cargo bench --bench bench` or scripts/bench");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(Opts::from_env())) {
        eprintln!("benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

async fn run(opts: Opts) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.work_dir)?;
    eprintln!("waltrail bench: starting Postgres and ClickHouse …");
    let pg = servers::PgCluster::start("max_wal_size = 4GB").context("starting Postgres")?;
    let ch = servers::ClickHouse::start_new().context("starting ClickHouse")?;
    let mut res = Results {
        machine: report::Machine::probe(&pg, &ch).await?,
        ..Results::default()
    };
    eprintln!("{}", res.machine.describe());
    if opts.has("throughput") {
        eprintln!("1. throughput (and 3. memory during the large transaction)");
        res.throughput = throughput::run(&opts, &pg, &ch).await?;
    }
    if opts.has("latency") {
        eprintln!("2. latency (and 3. memory under steady load)");
        res.latency = latency::run(&opts, &pg, &ch).await?;
    }
    if opts.has("source") {
        eprintln!("4. cost to the source (pgbench)");
        res.source = Some(source_cost::run(&opts, &pg, &ch).await?);
    }
    if opts.has("query") {
        eprintln!("5. query side");
        res.query = Some(query::run(&opts, &pg, &ch).await?);
    }
    if opts.has("chain") {
        eprintln!("7. tamper evidence: chain on vs off, verifying an export");
        res.chain = Some(chain::run(&opts, &pg, &ch).await?);
    }
    if opts.has("hostile") {
        eprintln!("6. hostile clients");
        res.hostile = Some(hostile::run(&opts, &pg, &ch).await?);
    }
    if opts.has("cluster") {
        eprintln!("8. a ClickHouse cluster beside one node: query side and capture");
        res.cluster = Some(sharded::run(&opts, &pg, &ch).await?);
    }
    res.total_s = started.elapsed().as_secs_f64();
    let mut md = report::markdown(&opts, &res);
    if let Some(c) = &res.chain {
        let per_pair = |v: &[(f64, f64)]| -> String {
            v.iter()
                .map(|(off, on)| format!("{off:.1} → {on:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        md.push_str("\n### Tamper evidence\n\n| measure | figure |\n|---|---|\n");
        for (what, p) in [
            (
                format!("one {}-row transaction", throughput::fmt_count(c.rows)),
                &c.large,
            ),
            (
                format!(
                    "{} one-row transactions",
                    throughput::fmt_count(c.small_txns)
                ),
                &c.small,
            ),
        ] {
            if p.time.is_empty() {
                continue;
            }
            let (median, lo, hi) = p.ratio();
            md.push_str(&format!(
                "| capture of {what}, chain + checkpoints on / off (median of {} alternating pairs) | {median:.3}× (spread {lo:.3}–{hi:.3}) |\n| {what}: waltrail CPU-s per pair, off → on | {} |\n| {what}: ClickHouse CPU-s per pair, off → on | {} |\n",
                p.time.len(),
                per_pair(&p.cpu),
                per_pair(&p.ch_cpu),
            ));
        }
        md.push_str(&format!(
            "| API NDJSON export of the large transaction's items | {:.2} s ({} MB) |\n| `waltrail verify --export` of that file | {:.2} s ({}) |\n",
            c.export_s,
            c.export_bytes >> 20,
            c.verify_s,
            if c.verify_ok { "intact" } else { "FAILED" }
        ));
        if !c.latency_p99.is_empty() {
            let (median, lo, hi) = c.latency_ratio();
            let each: Vec<String> = c
                .latency_p99
                .iter()
                .map(|(off, on)| format!("{off:.0} → {on:.0}"))
                .collect();
            md.push_str(&format!(
                "| commit → queryable p99 at {}/s for {} s, chain on / off (median of {} alternating pairs) | {median:.3}× (spread {lo:.3}–{hi:.3}); p99 ms per pair, off → on: {} |\n",
                c.latency_rate,
                c.latency_secs,
                c.latency_p99.len(),
                each.join(", ")
            ));
        }
    }
    println!("{md}");
    if let Some(plot) = &opts.plot {
        if !res.latency.is_empty() {
            std::fs::write(plot, report::latency_svg(&res.latency))
                .with_context(|| format!("writing {}", plot.display()))?;
            eprintln!("wrote {}", plot.display());
        }
    }
    if let Some(doc) = &opts.docs {
        report::update_doc(doc, &md)?;
        eprintln!("wrote the results into {}", doc.display());
    }
    // For poking at the servers after a run (profiling, EXPLAIN): keep them up this long.
    let hold = env_u64("BENCH_HOLD_S", 0);
    if hold > 0 {
        eprintln!(
            "holding for {hold} s: Postgres on port {}, ClickHouse HTTP on {} (data in {})",
            pg.port,
            ch.url(),
            ch.dir.display()
        );
        tokio::time::sleep(std::time::Duration::from_secs(hold)).await;
    }
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    Ok(())
}
