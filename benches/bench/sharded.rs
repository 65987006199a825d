//! Section 8, a ClickHouse cluster beside one server (issue 14's benchmark). A real cluster on this machine
//! (tests/shared_with_bench/cluster.rs: ZooKeeper and three ClickHouse 18.16 servers; cluster `sharded` =
//! shard 1 on ch1 + ch2 as replicas, shard 2 on ch3), waltrail configured with `clickhouse.cluster =
//! "sharded"` and pointed at ch1, against the benchmark's one server, in the same run:
//!
//! * the query side (query.rs) over the same `BENCH_CLUSTER_ITEMS` items in each store: a base set through
//!   waltrail's writer, copied inside ClickHouse (on the cluster through the Distributed table). One store
//!   at a time, dropped before the next is loaded, so neither's merges run while the other is measured;
//! * capture of one large transaction (the shape of 1a) by the real `waltrail run` into each, from slots
//!   made at the same point, in alternating pairs (cluster first in even pairs, one node first in odd
//!   ones), so a machine that warms up or gets busier favours neither.
//!
//! Every server shares this machine's cores: the cluster's three servers (and ch2's replication) compete
//! with waltrail and Postgres here, where real nodes would bring cores of their own.

use anyhow::Result;

use crate::cluster::ChCluster;
use crate::procfs::loadavg;
use crate::query::{self, Load, QuerySide, Store};
use crate::servers::{ClickHouse, PgCluster};
use crate::throughput::{self, fmt_count, wait_stored, Stored};
use crate::waltrail::{self as wt, Process, Setup};
use crate::{env_u64, Opts};

const PG_DB: &str = "bench_cluster";
const QUERY_DB: &str = "cl_qry";

/// Sizes of the section, from the environment.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Items asked for in each store (rounded up to whole copies of the base).
    pub items: u64,
    /// Items loaded through waltrail's writer before copying.
    pub base: u64,
    /// Rows of the one transaction captured.
    pub txn_rows: u64,
    /// Pairs of capture runs (cluster and one node).
    pub pairs: usize,
    /// Longest wait for merges and replication after a load. Copying inside ClickHouse outruns its
    /// merges (loading through the writer, as section 5 does, leaves them time to keep up), so a store of
    /// 30M items takes minutes to settle.
    pub settle_max_s: u64,
}

impl Sizes {
    pub fn from_env() -> Sizes {
        Sizes {
            items: env_u64("BENCH_CLUSTER_ITEMS", 30_000_000).max(1),
            base: env_u64("BENCH_CLUSTER_BASE", 1_000_000).max(1),
            txn_rows: env_u64("BENCH_CLUSTER_TXN_ROWS", 300_000).max(1),
            pairs: env_u64("BENCH_CLUSTER_PAIRS", 3).max(1) as usize,
            settle_max_s: env_u64("BENCH_CLUSTER_SETTLE_MAX_S", 600),
        }
    }
}

/// One capture run.
#[derive(Debug, Clone)]
pub struct CaptureRun {
    pub on_cluster: bool,
    /// /proc/loadavg just before waltrail started.
    pub load_before: String,
    pub stored: Stored,
    pub wt_cpu_s: f64,
    /// CPU of every ClickHouse server of the store (three for the cluster).
    pub ch_cpu_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct ClusterSide {
    pub sizes: Option<Sizes>,
    pub single: QuerySide,
    pub cluster: QuerySide,
    /// Capture runs in the order they ran.
    pub capture: Vec<CaptureRun>,
    pub cluster_started_s: f64,
}

impl ClusterSide {
    /// Per pair, cluster time ÷ one-node time to store every item, counted from when waltrail was
    /// streaming (its start-up, which on a cluster includes `ON CLUSTER` schema checks, is left out) or
    /// from the start of its process.
    pub fn ratios(&self, from_start: bool) -> Vec<f64> {
        let secs = |r: &CaptureRun| {
            if from_start {
                r.stored.total_s
            } else {
                r.stored.streaming_s
            }
        };
        self.capture
            .chunks(2)
            .filter_map(|pair| {
                let c = pair.iter().find(|r| r.on_cluster)?;
                let s = pair.iter().find(|r| !r.on_cluster)?;
                Some(secs(c) / secs(s))
            })
            .collect()
    }

    /// Median, min and max of `ratios`.
    pub fn ratio(&self, from_start: bool) -> (f64, f64, f64) {
        let mut r = self.ratios(from_start);
        if r.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        r.sort_by(|a, b| a.total_cmp(b));
        (r[r.len() / 2], r[0], r[r.len() - 1])
    }

    /// Median rows/s of the runs into the cluster (or one node), from streaming.
    pub fn rate(&self, on_cluster: bool) -> f64 {
        let rows = self.sizes.as_ref().map_or(0, |s| s.txn_rows) as f64;
        let mut r: Vec<f64> = self
            .capture
            .iter()
            .filter(|r| r.on_cluster == on_cluster)
            .map(|r| rows / r.stored.streaming_s)
            .collect();
        if r.is_empty() {
            return f64::NAN;
        }
        r.sort_by(|a, b| a.total_cmp(b));
        r[r.len() / 2]
    }
}

pub async fn run(opts: &Opts, pg: &PgCluster, ch: &ClickHouse) -> Result<ClusterSide> {
    let sizes = Sizes::from_env();
    eprintln!(
        "  [cluster] sizes: BENCH_CLUSTER_ITEMS={} BENCH_CLUSTER_BASE={} BENCH_CLUSTER_TXN_ROWS={} BENCH_CLUSTER_PAIRS={} \
         BENCH_CLUSTER_SETTLE_MAX_S={} (BENCH_QUERY_ORGS={} BENCH_QUERY_REQUESTS={} BENCH_EXPORT_ORGS={}); starting ZooKeeper and 3 ClickHouse servers …",
        sizes.items,
        sizes.base,
        sizes.txn_rows,
        sizes.pairs,
        sizes.settle_max_s,
        opts.query_orgs,
        opts.query_requests,
        opts.export_orgs
    );
    let cl = ChCluster::start()?;
    let mut out = ClusterSide {
        sizes: Some(sizes.clone()),
        cluster_started_s: cl.started_in().as_secs_f64(),
        ..ClusterSide::default()
    };
    let load = Load::Multiplied { base: sizes.base };

    let single = Store::single("one node", ch, QUERY_DB);
    out.single =
        query::measure_store(opts, pg, &single, sizes.items, load, sizes.settle_max_s).await?;
    single.drop().await?;
    let sharded = Store::cluster("cluster", &cl, ChCluster::SHARDED, QUERY_DB);
    out.cluster =
        query::measure_store(opts, pg, &sharded, sizes.items, load, sizes.settle_max_s).await?;
    sharded.drop().await?;

    out.capture = capture(opts, pg, ch, &cl, &sizes).await?;
    eprintln!("{}", side_by_side(&out));
    Ok(out)
}

/// Capture of one `txn_rows`-row transaction into one node and into the cluster, `pairs` times each.
async fn capture(
    opts: &Opts,
    pg: &PgCluster,
    ch: &ClickHouse,
    cl: &ChCluster,
    sizes: &Sizes,
) -> Result<Vec<CaptureRun>> {
    let rows = sizes.txn_rows;
    pg.create_db(PG_DB).await?;
    let db = pg.client(PG_DB).await?;
    db.batch_execute(throughput::BIG_DDL).await?;
    // Every slot at the same point, before the transaction: each run decodes the same WAL.
    let slots: Vec<String> = (0..sizes.pairs * 2).map(|i| format!("cl_{i}")).collect();
    for s in &slots {
        db.execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[s],
        )
        .await?;
    }
    eprintln!(
        "  [cluster] capture: generating one {}-row transaction",
        fmt_count(rows)
    );
    db.batch_execute(&throughput::big_generate_sql(rows))
        .await?;
    db.batch_execute("CHECKPOINT").await?;
    let mut runs = Vec::new();
    for pair in 0..sizes.pairs {
        // cluster/one node, one node/cluster, …
        let order = if pair % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for (k, on_cluster) in order.into_iter().enumerate() {
            let slot = &slots[pair * 2 + k];
            let which = if on_cluster { "cluster" } else { "single" };
            let ch_db = format!("cl_tp_{pair}_{which}");
            let store = if on_cluster {
                Store::cluster(which, cl, ChCluster::SHARDED, &ch_db)
            } else {
                Store::single(which, ch, &ch_db)
            };
            store.drop().await?;
            let name = format!("cl-{pair}-{which}");
            let setup = Setup {
                name: &name,
                db: PG_DB,
                slot,
                publication: "pub_big",
                ch_db: &ch_db,
                tables: throughput::BIG_TABLES,
            };
            let cfg = opts.work_dir.join(format!("{name}.toml"));
            std::fs::write(
                &cfg,
                wt::config_text_with(pg, store.entry, &setup, &store.ch_extra()),
            )?;
            wt::migrate(&cfg)?;
            let load_before = loadavg();
            let ch_cpu0 = store.ch_cpu_seconds();
            let mut p = Process::spawn(&cfg, opts.work_dir.join(format!("waltrail-{name}.log")))?;
            let stored =
                wait_stored(&store.client(), rows, &mut p, opts.timeout_s, &db, slot).await?;
            let wt_cpu_s = p.cpu_seconds();
            let ch_cpu_s = store.ch_cpu_seconds() - ch_cpu0;
            p.stop()?;
            eprintln!(
                "  [cluster] capture pair {pair}, {which:7}: {:.2} s streaming ({:.0} rows/s), {:.2} s from start; waltrail {wt_cpu_s:.1} CPU-s, ClickHouse {ch_cpu_s:.1} CPU-s; load before {load_before}",
                stored.streaming_s,
                rows as f64 / stored.streaming_s,
                stored.total_s
            );
            runs.push(CaptureRun {
                on_cluster,
                load_before,
                stored,
                wt_cpu_s,
                ch_cpu_s,
            });
            // Free the slot's WAL and the store's disk before the next run.
            wt::drop_slot(&db, slot).await?;
            store.drop().await?;
        }
    }
    Ok(runs)
}

/// The section's figures, one node and cluster side by side (printed as the section ends).
pub fn side_by_side(r: &ClusterSide) -> String {
    let (s, c) = (&r.single, &r.cluster);
    let row = |what: &str, a: String, b: String| format!("  {what:<34} {a:>26} {b:>26}\n");
    let ms = |st: &query::Stats| format!("p50 {:.1} / p99 {:.1} ms", st.p50_ms, st.p99_ms);
    let mut out = String::from("  [cluster] results\n");
    out.push_str(&row("", "one node".into(), "cluster (2 shards)".into()));
    out.push_str(&row("items", fmt_count(s.items), fmt_count(c.items)));
    out.push_str(&row(
        "load",
        format!("{:.0} s", s.load_s),
        format!("{:.0} s", c.load_s),
    ));
    out.push_str(&row(
        "settle (merges, replication)",
        format!(
            "{:.0} s{}",
            s.settle_s,
            if s.settled { "" } else { " (cut)" }
        ),
        format!(
            "{:.0} s{}",
            c.settle_s,
            if c.settled { "" } else { " (cut)" }
        ),
    ));
    out.push_str(&row(
        "active parts, MB on disk",
        format!("{}, {}", s.parts, s.bytes_on_disk / 1_000_000),
        format!("{}, {}", c.parts, c.bytes_on_disk / 1_000_000),
    ));
    for n in &c.nodes {
        out.push_str(&row(
            &format!("  {}: parts, rows, MB", n.name),
            String::new(),
            format!(
                "{}, {}, {}",
                n.parts,
                fmt_count(n.rows),
                n.bytes / 1_000_000
            ),
        ));
    }
    out.push_str(&row("first page", ms(&s.first), ms(&c.first)));
    out.push_str(&row("filtered page", ms(&s.filtered), ms(&c.filtered)));
    out.push_str(&row("page 20", ms(&s.page20), ms(&c.page20)));
    out.push_str(&row(
        "export items/s",
        format!("{:.0}", s.export_items as f64 / s.export_s.max(1e-9)),
        format!("{:.0}", c.export_items as f64 / c.export_s.max(1e-9)),
    ));
    out.push_str(&row(
        "capture rows/s (median, streaming)",
        format!("{:.0}", r.rate(false)),
        format!("{:.0}", r.rate(true)),
    ));
    let (m, lo, hi) = r.ratio(false);
    let (m0, lo0, hi0) = r.ratio(true);
    out.push_str(&format!(
        "  capture time cluster ÷ one node: median {m:.3}× (spread {lo:.3}–{hi:.3}) from streaming; {m0:.3}× ({lo0:.3}–{hi0:.3}) from process start"
    ));
    out
}
