//! The results table (Markdown), the machine it ran on, the latency plot (SVG, drawn by hand: no
//! plotting library), and the update of docs/benchmarks.md between its result markers.

use anyhow::{Context, Result};
use std::fmt::Write;

use crate::latency::Latency;
use crate::servers::{ClickHouse, PgCluster};
use crate::source_cost::{Layout, Mode};
use crate::throughput::fmt_count;
use crate::{Opts, Results};

pub const BEGIN: &str = "<!-- bench:results:begin -->";
pub const END: &str = "<!-- bench:results:end -->";

#[derive(Debug, Default, Clone)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_gib: f64,
    pub kernel: String,
    pub postgres: String,
    pub clickhouse: String,
    pub rustc: String,
    /// The waltrail source measured: commit, and whether src/ had uncommitted changes.
    pub source: String,
    /// /proc/loadavg when the run started (other work on the machine skews the figures).
    pub load_before: String,
}

impl Machine {
    pub async fn probe(pg: &PgCluster, ch: &ClickHouse) -> Result<Machine> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown CPU".into());
        let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0.0);
        let db = pg.client("postgres").await?;
        let postgres: String = db.query_one("SHOW server_version", &[]).await?.get(0);
        let clickhouse: String = ch
            .client("default")
            .query("SELECT version()")
            .fetch_one()
            .await
            .context("ClickHouse version")?;
        let rustc = std::process::Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        Ok(Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            mem_gib: mem_kb / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            postgres,
            clickhouse,
            rustc,
            load_before: crate::procfs::loadavg(),
            source: source_version(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {:.1} GiB memory, Linux {}; PostgreSQL {}; ClickHouse {}; {}; waltrail {} at {} (release build). \
             Postgres, ClickHouse, waltrail and the load generators all share these cores.",
            self.cores,
            self.cpu,
            self.mem_gib,
            self.kernel,
            self.postgres,
            self.clickhouse,
            self.rustc,
            env!("CARGO_PKG_VERSION"),
            self.source,
        )
    }
}

fn n0(v: f64) -> String {
    // Thousands separated by a thin comma for readability.
    let s = format!("{:.0}", v);
    let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

fn mb(kb: u64) -> String {
    format!("{:.0} MB", kb as f64 / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

pub fn markdown(opts: &Opts, r: &Results) -> String {
    let mut s = String::new();
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let _ = writeln!(s, "Run of {now}, {:.1} minutes in all.\n", r.total_s / 60.0);
    let _ = writeln!(s, "Machine: {}\n", r.machine.describe());
    let _ = writeln!(
        s,
        "Load average (1/5/15 min) when the run started: {}; when it ended: {}.\n",
        r.machine.load_before,
        crate::procfs::loadavg()
    );
    let _ = writeln!(
        s,
        "waltrail ran with its default settings except `clickhouse.compression = \"{}\"` (ClickHouse runs on the same host; BENCH_CLICKHOUSE_COMPRESSION).\n",
        crate::waltrail::compression()
    );
    let _ = writeln!(
        s,
        "{}\n",
        if crate::waltrail::streaming() {
            "Large transactions streamed while in progress (BENCH_STREAMING=1: `postgres.streaming = true`); pg_recvlogical given the same options (`proto_version=2`, `streaming=on`)."
        } else {
            "Large transactions not streamed (`postgres.streaming = false`, waltrail's default); pg_recvlogical given the same options (protocol 1)."
        }
    );
    let extra = crate::waltrail::extra_config();
    if !extra.is_empty() {
        let _ = writeln!(
            s,
            "waltrail's configuration had these lines appended: `{}`\n",
            extra.trim().replace('\n', "; ")
        );
    }
    let overrides = crate::waltrail::capture_overrides();
    if !overrides.is_empty() {
        let _ = writeln!(
            s,
            "waltrail ran with these `[capture]` settings instead of its defaults: `{}`\n",
            overrides.trim().replace('\n', "; ")
        );
    }
    let _ = writeln!(
        s,
        "| # | Figure | waltrail | Reference | Result | Goal | |\n|---|---|---|---|---|---|---|"
    );
    for (i, t) in r.throughput.iter().enumerate() {
        let (ratio, lo, hi) = t.spread();
        let _ = writeln!(
            s,
            "| 1{} | Throughput, {} (median of {} alternating pairs) | {} rows/s ({:.1} s) | pg_recvlogical {} rows/s ({:.1} s) | **{:.2}×** (spread {:.2}–{:.2}) | ≥ 0.9× | {} |",
            ['a', 'b', 'c'][i.min(2)],
            t.label,
            t.pairs.len(),
            n0(t.wt_rate()),
            t.wt_s,
            n0(t.recv_rate()),
            t.recv_s,
            ratio,
            lo,
            hi,
            verdict(ratio >= 0.9)
        );
    }
    for (i, l) in r.latency.iter().enumerate() {
        let goal = l.target_rate == 1000;
        let _ = writeln!(
            s,
            "| 2{} | Commit → queryable at {} changes/s{} for {:.0} s (achieved {}/s) | p50 {} · p95 {} · **p99 {}** | | max {} | {} | {} |",
            ['a', 'b', 'c', 'd'][i.min(3)],
            n0(l.target_rate as f64),
            if l.rows_per_txn > 1 {
                format!(" ({} rows per transaction)", l.rows_per_txn)
            } else {
                String::new()
            },
            l.duration_s,
            n0(l.achieved_rate),
            ms(l.p50_ms),
            ms(l.p95_ms),
            ms(l.p99_ms),
            ms(l.max_ms),
            if goal { "p99 < 500 ms" } else { "—" },
            if goal {
                verdict(l.p99_ms < 500.0 && l.unseen == 0)
            } else if l.unseen > 0 {
                "**items missing**"
            } else {
                ""
            }
        );
    }
    let mut mem: Vec<(String, u64)> = Vec::new();
    for t in &r.throughput {
        mem.push((format!("during {}", t.label), t.wt_peak_rss_kb));
    }
    for l in &r.latency {
        mem.push((
            format!("steady {}/s", n0(l.target_rate as f64)),
            l.peak_rss_kb,
        ));
    }
    for (i, (what, kb)) in mem.iter().enumerate() {
        let _ = writeln!(
            s,
            "| 3{} | Peak RSS (VmHWM) of `waltrail run`, {} | **{}** | | | < 100 MB | {} |",
            ['a', 'b', 'c', 'd', 'e'][i.min(4)],
            what,
            mb(*kb),
            verdict(*kb < 100 * 1024)
        );
    }
    if let Some(c) = &r.source {
        let rounds = if c.rounds > 1 {
            format!(", mean of {} rounds", c.rounds)
        } else {
            String::new()
        };
        let mut tags = (b'a'..=b'z').map(|c| format!("4{}", c as char));
        for layout in [Layout::Shared, Layout::Pinned, Layout::SpareCore] {
            if !c.has(layout) {
                continue;
            }
            let base = layout.baseline();
            let a = c.tps(Mode::Plain, base);
            if layout == base {
                let _ = writeln!(
                    s,
                    "| {} | pgbench TPS ({}), admin-table mix, {} clients × {} s{rounds}: (a) no audit | | {} tps | 1.00× | | |",
                    tags.next().unwrap_or_default(),
                    layout.label(),
                    c.clients,
                    c.secs,
                    n0(a)
                );
            }
            for (m, goal) in [
                (Mode::Waltrail, true),
                (Mode::Trigger, false),
                (Mode::DecodeOnly, false),
            ] {
                if !c.has_mode(m, layout) {
                    continue;
                }
                let v = c.tps(m, layout);
                let _ = writeln!(
                    s,
                    "| {} | pgbench TPS ({}), {} | {} tps | (a) {} tps | **{:.3}×** | {} | {} |",
                    tags.next().unwrap_or_default(),
                    layout.label(),
                    m.label(),
                    n0(v),
                    n0(a),
                    v / a,
                    if goal { "≥ 0.97×" } else { "—" },
                    if goal { verdict(v / a >= 0.97) } else { "" }
                );
            }
        }
    }
    if let Some(q) = &r.query {
        let per = |st: &crate::query::Stats| -> String {
            format!(
                "p50 {} · **p99 {}** ({} requests)",
                ms(st.p50_ms),
                ms(st.p99_ms),
                st.requests
            )
        };
        let size = format!("{} items, {} orgs", fmt_count(q.items), q.orgs);
        let _ = writeln!(
            s,
            "| 5a | API first page (50 items), {size} | {} | | | p99 < 50 ms | {} |",
            per(&q.first),
            verdict(q.first.p99_ms < 50.0)
        );
        let _ = writeln!(
            s,
            "| 5b | API filtered page (resource_type + action + project) | {} | | | — | |",
            per(&q.filtered)
        );
        let _ = writeln!(
            s,
            "| 5c | API page 20 via cursor | {} | | | — | |",
            per(&q.page20)
        );
        let _ = writeln!(
            s,
            "| 5d | Export (NDJSON, whole organizations) | **{} items/s** ({} items, {:.0} MB in {:.1} s) | | | — | |",
            n0(q.export_items as f64 / q.export_s.max(1e-9)),
            n0(q.export_items as f64),
            q.export_bytes as f64 / 1e6,
            q.export_s
        );
    }
    if let Some(h) = &r.hostile {
        let statuses = |m: &std::collections::BTreeMap<String, u64>| -> String {
            if m.is_empty() {
                return "—".into();
            }
            m.iter()
                .map(|(k, v)| format!("{k}: {}", n0(*v as f64)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (q, a) = (&h.quiet, &h.attacked);
        let _ = writeln!(
            s,
            "| 6a | Hostile clients: commit → queryable at {}/s for {:.0} s, without / with the attack | p99 {} / **p99 {}** | | max {} / {}; unseen {} / {} | — | {} |",
            n0(h.rate as f64),
            a.secs,
            ms(q.commit_p99_ms),
            ms(a.commit_p99_ms),
            ms(q.commit_max_ms),
            ms(a.commit_max_ms),
            q.unseen,
            a.unseen,
            if a.unseen == 0 { "" } else { "**items missing**" }
        );
        let _ = writeln!(
            s,
            "| 6b | Hostile clients: {} authenticated pollers (1 request/s each), API latency without / with the attack | p50 {} · p99 {} / p50 {} · **p99 {}** ({} requests) | | {} / {} | — | |",
            h.pollers,
            ms(q.honest_p50_ms),
            ms(q.honest_p99_ms),
            ms(a.honest_p50_ms),
            ms(a.honest_p99_ms),
            n0(a.honest_requests as f64),
            statuses(&q.honest_statuses),
            statuses(&a.honest_statuses)
        );
        let _ = writeln!(
            s,
            "| 6c | Hostile clients: waltrail's Postgres connections (capture's 2 + pool of {}) | {} / **{}** | | | ≤ {} | {} |",
            h.pool_size,
            q.max_pg_connections,
            a.max_pg_connections,
            2 + h.pool_size,
            verdict(a.max_pg_connections <= 2 + h.pool_size as i64)
        );
        let _ = writeln!(
            s,
            "| 6d | Hostile clients: what the attack saw ({} random-key clients; {} slow connections, reopened when dropped) | keys: {} · slow: {} | | | — | |",
            h.flooders,
            h.slow,
            statuses(&a.flood_statuses),
            statuses(&a.slow_outcomes)
        );
    }
    if let Some(c) = &r.cluster {
        cluster_rows(&mut s, c);
    }
    s.push('\n');
    details(&mut s, opts, r);
    s
}

/// Rows 8a–8e: the cluster in the figure's column, one node as the reference.
fn cluster_rows(s: &mut String, c: &crate::sharded::ClusterSide) {
    let (one, cl) = (&c.single, &c.cluster);
    let per = |st: &crate::query::Stats| -> String {
        format!(
            "p50 {} · **p99 {}** ({} requests)",
            ms(st.p50_ms),
            ms(st.p99_ms),
            st.requests
        )
    };
    let p99 = |a: &crate::query::Stats, b: &crate::query::Stats| {
        format!("p99 {:.2}×", a.p99_ms / b.p99_ms.max(1e-9))
    };
    let size = format!(
        "{} items, {} orgs, 2 shards (one with 2 replicas)",
        fmt_count(cl.items),
        cl.orgs
    );
    let _ = writeln!(
        s,
        "| 8a | Cluster: API first page (50 items), {size} | {} | one node: {} | {} | p99 < 50 ms on the cluster | {} |",
        per(&cl.first),
        per(&one.first),
        p99(&cl.first, &one.first),
        verdict(cl.first.p99_ms < 50.0)
    );
    let _ = writeln!(
        s,
        "| 8b | Cluster: API filtered page (resource_type + action + project) | {} | one node: {} | {} | — | |",
        per(&cl.filtered),
        per(&one.filtered),
        p99(&cl.filtered, &one.filtered)
    );
    let _ = writeln!(
        s,
        "| 8c | Cluster: API page 20 via cursor | {} | one node: {} | {} | — | |",
        per(&cl.page20),
        per(&one.page20),
        p99(&cl.page20, &one.page20)
    );
    let export = |q: &crate::query::QuerySide| q.export_items as f64 / q.export_s.max(1e-9);
    let _ = writeln!(
        s,
        "| 8d | Cluster: export (NDJSON, whole organizations) | **{} items/s** ({} items in {:.1} s) | one node: {} items/s | {:.2}× | — | |",
        n0(export(cl)),
        n0(cl.export_items as f64),
        cl.export_s,
        n0(export(one)),
        export(cl) / export(one).max(1e-9)
    );
    let (m, lo, hi) = c.ratio(false);
    let rows = c.sizes.as_ref().map_or(0, |z| z.txn_rows);
    let _ = writeln!(
        s,
        "| 8e | Cluster: capture of one {}-row transaction by `waltrail run`, time to store every item (median of {} alternating pairs) | {} rows/s | one node: {} rows/s | **{m:.3}×** the time (spread {lo:.3}–{hi:.3}) | ≤ 1.20× | {} |",
        fmt_count(rows),
        c.ratios(false).len(),
        n0(c.rate(true)),
        n0(c.rate(false)),
        verdict(m <= 1.20)
    );
}

fn details(s: &mut String, opts: &Opts, r: &Results) {
    if !r.throughput.is_empty() {
        let _ = writeln!(
            s,
            "Throughput details (each consumer alone on the machine, same slot position, same WAL; CPU seconds from /proc):\n"
        );
        let _ = writeln!(
            s,
            "| Shape | WAL | Generated in | pairs, in order: pg_recvlogical / waltrail (ratio; load average before each) | walsender CPU under pg_recvlogical | walsender CPU under waltrail | source spilled / streamed under pg_recvlogical | under waltrail | waltrail CPU | ClickHouse CPU | ClickHouse inserts / rows merged |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for t in &r.throughput {
            let pairs: Vec<String> = t
                .pairs
                .iter()
                .map(|p| {
                    format!(
                        "{}{:.2} s / {:.2} s ({:.2}×; {} / {})",
                        if p.recv_first { "" } else { "waltrail first: " },
                        p.recv_s,
                        p.wt_s,
                        p.ratio(),
                        p.load_before.0,
                        p.load_before.1
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "| {} | {:.0} MB | {:.1} s | {} | {:.1} s | {:.1} s | {:.0} / {:.0} MB | {:.0} / {:.0} MB | {:.1} s | {:.1} s | {} / {} |",
                t.label,
                t.wal_bytes as f64 / 1e6,
                t.generate_s,
                pairs.join("; "),
                t.recv_walsender_cpu_s,
                t.wt_walsender_cpu_s,
                t.recv_source.0 as f64 / 1e6,
                t.recv_source.1 as f64 / 1e6,
                t.wt_source.0 as f64 / 1e6,
                t.wt_source.1 as f64 / 1e6,
                t.wt_cpu_s,
                t.ch_cpu_s,
                t.ch_inserts,
                t.ch_merged_rows
            );
        }
        s.push('\n');
        for t in r.throughput.iter().filter(|t| !t.live.is_empty()) {
            let _ = writeln!(
                s,
                "The same {} written while waltrail is attached, streaming on and off in alternating pairs (the walsender decodes while the transaction runs; what a user waits for is from its COMMIT):\n",
                t.label
            );
            let _ = writeln!(
                s,
                "| Streaming | Transaction on the source | COMMIT → every item queryable | walsender CPU | source spilled / streamed | waltrail peak RSS | load before |\n|---|---|---|---|---|---|---|"
            );
            for l in &t.live {
                let _ = writeln!(
                    s,
                    "| {} | {:.2} s | **{:.2} s** | {:.1} s | {:.0} / {:.0} MB | {} MB | {} |",
                    if l.streaming { "on" } else { "off" },
                    l.generate_s,
                    l.commit_to_queryable_s,
                    l.walsender_cpu_s,
                    l.source.0 as f64 / 1e6,
                    l.source.1 as f64 / 1e6,
                    l.wt_peak_rss_kb / 1024,
                    l.load_before
                );
            }
            s.push('\n');
        }
    }
    if !r.latency.is_empty() {
        let _ = writeln!(
            s,
            "Latency details (visibility polled every {} ms plus the query's own time; a figure is late by at most one poll period):\n",
            opts.poll_ms
        );
        let _ = writeln!(
            s,
            "| Target rate | Achieved | Items seen | Not seen | Mean poll period | waltrail CPU | ClickHouse CPU | ClickHouse inserts | Most active parts | \"Too many parts\" |\n|---|---|---|---|---|---|---|---|---|---|"
        );
        for l in &r.latency {
            let _ = writeln!(
                s,
                "| {}/s | {}/s | {} | {} | {:.1} ms | {:.1} s ({:.0}% of a core) | {:.1} s | {:.1}/s | {} | {} |",
                n0(l.target_rate as f64),
                n0(l.achieved_rate),
                n0(l.items as f64),
                l.unseen,
                l.poll_period_ms,
                l.wt_cpu_s,
                100.0 * l.wt_cpu_s / l.duration_s.max(1e-3),
                l.ch_cpu_s,
                l.inserts_per_s,
                l.max_active_parts,
                l.too_many_parts
            );
        }
        s.push('\n');
    }
    if let Some(c) = &r.source {
        let _ = writeln!(
            s,
            "Source cost details (pgbench `-M prepared -c {} -j 2 -T {}`: 60% UPDATE of a jsonb row, 20% INSERT … ON CONFLICT DO NOTHING, 20% DELETE, \
             on a table of 50k rows; each mode on a freshly built table{}):\n",
            c.clients,
            c.secs,
            c.split
                .as_ref()
                .filter(|_| c.has(Layout::Pinned) || c.has(Layout::SpareCore))
                .map(|sp| format!("; separate cores: {}", sp.describe()))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "| Cores | Mode | TPS | vs (a) | min–max over rounds | WAL per transaction | walsender CPU |\n|---|---|---|---|---|---|---|"
        );
        for layout in [Layout::Shared, Layout::Pinned, Layout::SpareCore] {
            let a = c.tps(Mode::Plain, layout.baseline());
            for m in [Mode::Plain, Mode::DecodeOnly, Mode::Waltrail, Mode::Trigger] {
                if !c.has_mode(m, layout) {
                    continue;
                }
                let (lo, hi) = c.spread(m, layout);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.3}× | {}–{} | {} B | {} |",
                    layout.short(),
                    m.label(),
                    n0(c.tps(m, layout)),
                    c.tps(m, layout) / a,
                    n0(lo),
                    n0(hi),
                    n0(c.wal_per_txn(m, layout)),
                    c.walsender_cpu(m, layout)
                        .map(|v| format!("{v:.1} s ({:.0}% of a core)", 100.0 * v / c.secs as f64))
                        .unwrap_or_default()
                );
            }
        }
        s.push('\n');
        let order: Vec<String> = c
            .runs
            .iter()
            .map(|r| {
                format!(
                    "round {} {} {}: {} tps (load {})",
                    r.round,
                    r.layout.short(),
                    r.mode.label(),
                    n0(r.tps),
                    r.load_before
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "Runs in the order made (modes in reverse every other round; load average 1/5/15 min just before each): {}.\n",
            order.join("; ")
        );
        for run in c.waltrail_runs() {
            let _ = writeln!(
                s,
                "During (b) ({}) waltrail stored {} items; the last was queryable {:.1} s after pgbench ended; peak RSS {}.",
                run.layout.label(),
                n0(run.changes.unwrap_or(0) as f64),
                run.catch_up_s.unwrap_or(f64::NAN),
                mb(run.peak_rss_kb.unwrap_or(0))
            );
        }
        s.push('\n');
    }
    if let Some(q) = &r.query {
        let _ = writeln!(
            s,
            "Query side details: loading {} items took {:.0} s ({} items/s, one insert of 200k rows at a time), merges settled after {:.0} s more, \
             leaving {} active parts, {:.0} MB on disk. Mean latencies: first page {}, filtered {} ({:.0} items per page), page 20 {}. \
             ClickHouse CPU per first page: {:.0} ms.\n",
            n0(q.items as f64),
            q.load_s,
            n0(q.items as f64 / q.load_s.max(1e-9)),
            q.settle_s,
            q.parts,
            q.bytes_on_disk as f64 / 1e6,
            ms(q.first.mean_ms),
            ms(q.filtered.mean_ms),
            q.filtered.items_per_page,
            ms(q.page20.mean_ms),
            q.ch_cpu_s_per_first_page * 1000.0
        );
    }
    if let Some(c) = &r.cluster {
        cluster_details(s, opts, c);
    }
    let _ = writeln!(
        s,
        "Sizes: BENCH_BIG_TXN_ROWS={} BENCH_UPDATE_TXNS={} BENCH_DELETE_ROWS={} BENCH_LATENCY_SECS={} BENCH_LATENCY_RATES={} BENCH_PGBENCH_SECS={} \
         BENCH_PGBENCH_CLIENTS={} BENCH_PGBENCH_ROUNDS={} BENCH_QUERY_ITEMS={} BENCH_QUERY_ORGS={} BENCH_QUERY_REQUESTS={} \
         BENCH_HOSTILE_SECS={} BENCH_HOSTILE_RATE={} BENCH_HOSTILE_POLLERS={} BENCH_HOSTILE_FLOODERS={} BENCH_HOSTILE_SLOW={}",
        opts.big_txn_rows,
        opts.update_txns,
        opts.delete_rows,
        opts.latency_secs,
        opts.latency_rates
            .iter()
            .map(|(r, k)| if *k > 1 { format!("{r}x{k}") } else { r.to_string() })
            .collect::<Vec<_>>()
            .join(","),
        opts.pgbench_secs,
        opts.pgbench_clients,
        opts.pgbench_rounds,
        opts.query_items,
        opts.query_orgs,
        opts.query_requests,
        opts.hostile_secs,
        opts.hostile_rate,
        opts.hostile_pollers,
        opts.hostile_flooders,
        opts.hostile_slow
    );
}

fn cluster_details(s: &mut String, opts: &Opts, c: &crate::sharded::ClusterSide) {
    let _ = writeln!(
        s,
        "Cluster details (section 8): ZooKeeper and three ClickHouse servers started in {:.1} s on this machine, sharing its cores with \
         everything else; waltrail with `clickhouse.cluster = \"sharded\"` (shard 1 = ch1 + ch2 as replicas, shard 2 = ch3; \
         `insert_quorum` 0, its default) pointed at ch1, beside the benchmark's one server. Each store was loaded, left to settle and \
         measured alone, then dropped.\n",
        c.cluster_started_s
    );
    let _ = writeln!(
        s,
        "| Store | Items | Loaded | Load time | Settle (merges, replication) | Active parts | On disk | Mean first / filtered / page 20 | ClickHouse CPU per first page |\n|---|---|---|---|---|---|---|---|---|"
    );
    for q in [&c.single, &c.cluster] {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} s ({} items/s) | {:.0} s{} | {} | {:.0} MB | {} / {} / {} | {:.0} ms |",
            q.label,
            n0(q.items as f64),
            q.load_detail,
            q.load_s,
            n0(q.items as f64 / q.load_s.max(1e-9)),
            q.settle_s,
            if q.settled { "" } else { " (cut short: BENCH_CLUSTER_SETTLE_MAX_S)" },
            q.parts,
            q.bytes_on_disk as f64 / 1e6,
            ms(q.first.mean_ms),
            ms(q.filtered.mean_ms),
            ms(q.page20.mean_ms),
            q.ch_cpu_s_per_first_page * 1000.0
        );
    }
    s.push('\n');
    let nodes: Vec<String> = c
        .cluster
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{} {} parts, {} rows, {:.0} MB",
                n.name,
                n.parts,
                n0(n.rows as f64),
                n.bytes as f64 / 1e6
            )
        })
        .collect();
    let _ = writeln!(s, "Per node (`audit_items_local`): {}.\n", nodes.join("; "));
    let _ = writeln!(
        s,
        "Capture runs, in order (time to store every item from when waltrail was streaming, and from the start of its process; load average 1/5/15 min just before):\n"
    );
    let _ = writeln!(
        s,
        "| Run | Store | Streaming → stored | Process start → stored | waltrail CPU | ClickHouse CPU (all its servers) | Load before |\n|---|---|---|---|---|---|---|"
    );
    for (i, run) in c.capture.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} s | {:.2} s | {:.1} s | {:.1} s | {} |",
            i + 1,
            if run.on_cluster {
                "cluster"
            } else {
                "one node"
            },
            run.stored.streaming_s,
            run.stored.total_s,
            run.wt_cpu_s,
            run.ch_cpu_s,
            run.load_before
        );
    }
    let (m0, lo0, hi0) = c.ratio(true);
    let _ = writeln!(
        s,
        "\nCluster ÷ one node, counted from the start of the process (start-up included: on a cluster it checks the schema `ON CLUSTER`): median {m0:.3}× (spread {lo0:.3}–{hi0:.3}).\n"
    );
    if let Some(z) = &c.sizes {
        let _ = writeln!(
            s,
            "Cluster sizes: BENCH_CLUSTER_ITEMS={} BENCH_CLUSTER_BASE={} BENCH_CLUSTER_TXN_ROWS={} BENCH_CLUSTER_PAIRS={} \
             BENCH_CLUSTER_SETTLE_MAX_S={} BENCH_QUERY_ORGS={} BENCH_QUERY_REQUESTS={} BENCH_EXPORT_ORGS={}\n",
            z.items,
            z.base,
            z.txn_rows,
            z.pairs,
            z.settle_max_s,
            opts.query_orgs,
            opts.query_requests,
            opts.export_orgs
        );
    }
}

/// Which waltrail is measured: the commit of this checkout (and whether the code differs from it), or
/// the binary named by BENCH_WALTRAIL_BIN.
fn source_version() -> String {
    if let Ok(bin) = std::env::var("BENCH_WALTRAIL_BIN") {
        return format!("`{bin}` (BENCH_WALTRAIL_BIN; the API measured is this checkout's)");
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&[
                "status",
                "--porcelain",
                "--",
                "src",
                "sql",
                "web",
                "Cargo.toml",
                "Cargo.lock",
            ])
            .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("commit {commit} with uncommitted changes")
            } else {
                format!("commit {commit}")
            }
        }
        None => "an unknown commit".into(),
    }
}

/// Latency percentile curves on a "nines" axis (p0, p50, p90, p99, p99.9 evenly apart), log-scaled ms.
pub fn latency_svg(runs: &[Latency]) -> String {
    let (w, h) = (760.0, 420.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let nines = |p: f64| -> f64 { -(1.0 - (p / 100.0).min(0.999)).log10() };
    let x = |p: f64| left + pw * nines(p) / 3.0;
    let max_ms = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(|c| c.1))
        .fold(500.0f64, f64::max);
    let min_ms = runs
        .iter()
        .flat_map(|r| r.curve.iter().filter(|c| c.0 >= 1.0).map(|c| c.1))
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let lo = 10f64.powf(min_ms.log10().floor());
    let hi = 10f64.powf(max_ms.log10().ceil());
    let y =
        |v: f64| top + ph * (1.0 - (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()));
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">waltrail: commit → queryable in ClickHouse, latency by percentile (ms)</text>"#,
        w / 2.0
    );
    // Grid: decades on y, nines on x.
    let mut d = lo;
    while d <= hi * 1.001 {
        for m in [1.0, 2.0, 5.0] {
            let v = d * m;
            if v > hi * 1.001 {
                break;
            }
            let yy = y(v);
            let stroke = if m == 1.0 { "#bbb" } else { "#eee" };
            let _ = writeln!(
                s,
                r#"<line x1="{left}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="{stroke}"/>"#,
                left + pw
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 6.0,
                yy + 4.0,
                if v >= 1000.0 {
                    format!("{} s", v / 1000.0)
                } else {
                    format!("{v} ms")
                }
            );
        }
        d *= 10.0;
    }
    for (p, label) in [
        (0.0, "p0"),
        (50.0, "p50"),
        (90.0, "p90"),
        (95.0, "p95"),
        (99.0, "p99"),
        (99.9, "p99.9"),
    ] {
        let xx = x(p);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{}" stroke="#ddd"/><text x="{xx:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile of items</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    // The goal at 1k/s.
    let gy = y(500.0);
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{gy:.1}" x2="{}" y2="{gy:.1}" stroke="#444" stroke-dasharray="6 4"/><text x="{}" y="{:.1}" text-anchor="end" fill="#444">goal at 1k/s: p99 &lt; 500 ms</text>"##,
        left + pw,
        left + pw - 4.0,
        gy - 5.0
    );
    for (i, r) in runs.iter().enumerate() {
        let c = colors[i % colors.len()];
        let pts: Vec<String> = r
            .curve
            .iter()
            .filter(|(p, _)| *p <= 99.9)
            .map(|(p, v)| format!("{:.1},{:.1}", x(*p), y(*v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for (p, v) in [(50.0, r.p50_ms), (95.0, r.p95_ms), (99.0, r.p99_ms)] {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"/><text x="{:.1}" y="{:.1}" fill="{c}">{:.0}</text>"#,
                x(p),
                y(v),
                x(p) + 5.0,
                y(v) - 6.0,
                v
            );
        }
        let ly = top + ph - 14.0 - 18.0 * (runs.len() - 1 - i) as f64;
        let lx = left + pw - 330.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly:.1}" x2="{}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text x="{}" y="{:.1}">{} changes/s (achieved {:.0}/s)</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            n0(r.target_rate as f64),
            r.achieved_rate
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Replace what lies between the result markers of the doc (create the doc when it is missing).
pub fn update_doc(path: &std::path::Path, md: &str) -> Result<()> {
    let block = format!("{BEGIN}\n{md}\n{END}");
    let text = match std::fs::read_to_string(path) {
        Ok(t) => match (t.find(BEGIN), t.find(END)) {
            (Some(b), Some(e)) if e > b => {
                format!("{}{block}{}", &t[..b], &t[e + END.len()..])
            }
            _ => format!("{t}\n{block}\n"),
        },
        Err(_) => format!("# waltrail benchmarks\n\n{block}\n"),
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
