//! Measurement 5, query side: N items across the organizations, written straight into ClickHouse in
//! large batches, then the API (in this process, over real HTTP) asked for the first page, a filtered
//! page (resource_type + action + project) and page 20 via its cursor, each request for another
//! organization in turn; and a streamed export, in items per second.
//!
//! The same measurement runs over any `Store`: the one server of section 5, or (section 8, sharded.rs)
//! a ClickHouse cluster beside one server, each filled by copying a base set inside ClickHouse.

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

use waltrail::store::row::COLUMNS;

use crate::cluster::ChCluster;
use crate::procfs::cpu_seconds;
use crate::servers::{free_port, ClickHouse, PgCluster};
use crate::throughput::fmt_count;
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
    /// The store's name (`Store::label`).
    pub label: String,
    pub items: u64,
    pub orgs: u32,
    pub load_s: f64,
    /// How the items were loaded.
    pub load_detail: String,
    pub settle_s: f64,
    /// Whether merges and replication were done within BENCH_SETTLE_MAX_S.
    pub settled: bool,
    /// Active parts and their bytes, summed over `nodes`.
    pub parts: u64,
    pub bytes_on_disk: u64,
    pub nodes: Vec<NodeParts>,
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

/// The time the items span, ending a minute before the load.
const SPAN_US: i64 = 7 * 86_400 * 1_000_000;

/// Item `n` of `total`, spread evenly over the last seven days, organizations round-robin.
fn item(n: u64, total: u64, orgs: u32, t_end: i64) -> ItemRow {
    let span = SPAN_US;
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

/// Where a store's items live: one server, or a cluster reached through one of its nodes.
pub struct Store<'a> {
    /// How progress lines and the report name it.
    pub label: String,
    /// The server the API and the loader talk to.
    pub entry: &'a ClickHouse,
    /// Every server holding the store's data, with its name.
    pub nodes: Vec<(String, &'a ClickHouse)>,
    /// `clickhouse.cluster`, when the store is a cluster.
    pub cluster: Option<String>,
    pub db: String,
}

impl<'a> Store<'a> {
    pub fn single(label: &str, ch: &'a ClickHouse, db: &str) -> Store<'a> {
        Store {
            label: label.to_owned(),
            entry: ch,
            nodes: vec![("ch".into(), ch)],
            cluster: None,
            db: db.to_owned(),
        }
    }

    /// Cluster `name` of `c`, reached through its first node (as an operator's config names one server).
    pub fn cluster(label: &str, c: &'a ChCluster, name: &str, db: &str) -> Store<'a> {
        Store {
            label: label.to_owned(),
            entry: c.node(0),
            nodes: ChCluster::NODE_NAMES
                .iter()
                .map(|n| n.to_string())
                .zip(c.nodes())
                .collect(),
            cluster: Some(name.to_owned()),
            db: db.to_owned(),
        }
    }

    /// The table holding the items on each node (where `system.parts` counts them).
    pub fn data_table(&self) -> &'static str {
        match self.cluster {
            Some(_) => "audit_items_local",
            None => "audit_items",
        }
    }

    /// Lines for waltrail's `[clickhouse]` section that put it in this store's layout.
    pub fn ch_extra(&self) -> String {
        match &self.cluster {
            Some(c) => format!("cluster = \"{c}\"\nddl_timeout_s = 60\n"),
            None => String::new(),
        }
    }

    fn base_db(&self) -> String {
        format!("{}_base", self.db)
    }

    /// A client for the store's database on the entry node. On a cluster, inserts into the Distributed
    /// table return only once every shard has its rows (as waltrail's own client does in cluster mode), so
    /// load time is the time to store, not to queue.
    pub fn client(&self) -> clickhouse::Client {
        let c = self.entry.client(&self.db);
        match self.cluster {
            Some(_) => c.with_setting("insert_distributed_sync", "1"),
            None => c,
        }
    }

    /// Drop the store's databases on every node (each node drops its own replicas of the tables, which
    /// also removes them from ZooKeeper), freeing their disk.
    pub async fn drop(&self) -> Result<()> {
        for (_, n) in &self.nodes {
            n.reset_db(&self.db).await?;
            n.reset_db(&self.base_db()).await?;
        }
        Ok(())
    }

    /// CPU seconds the store's servers have used so far.
    pub fn ch_cpu_seconds(&self) -> f64 {
        self.nodes
            .iter()
            .map(|(_, n)| n.pid().map_or(0.0, cpu_seconds))
            .sum()
    }
}

/// How the items get into a store.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Every item through waltrail's writer (`insert_batch`), 200k per insert.
    Writer,
    /// `base` items through waltrail's writer into a side table, then copied inside ClickHouse
    /// (`INSERT … SELECT … ARRAY JOIN`) until the store holds the items asked for: loading 30M items
    /// through the writer takes about 7 minutes per store, copying them a fraction of that.
    Multiplied { base: u64 },
}

/// One node's share of a store.
#[derive(Debug, Clone, Default)]
pub struct NodeParts {
    pub name: String,
    pub parts: u64,
    pub rows: u64,
    pub bytes: u64,
}

fn config_text(opts: &Opts, pg: &PgCluster, store: &Store, port: u16) -> String {
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
database = "{db}"
{extra}
[api]
listen = "127.0.0.1:{port}"
rate_limit_per_minute = 100000000

{keys}
[[tables]]
table = "resources"
resource_type = "RESOURCE_TYPE_API_KEY"
"#,
        pg = pg.url(PG_DB),
        ch = store.entry.url(),
        db = store.db,
        extra = store.ch_extra(),
    )
}

/// Section 5: `BENCH_QUERY_ITEMS` items through the writer into the benchmark's one server.
pub async fn run(opts: &Opts, pg: &PgCluster, ch: &ClickHouse) -> Result<QuerySide> {
    let store = Store::single("query", ch, CH_DB);
    measure_store(
        opts,
        pg,
        &store,
        opts.query_items,
        Load::Writer,
        opts.settle_max_s,
    )
    .await
}

/// Create the store (waltrail's migration, in its layout), fill it with about `items` items, let merges
/// settle (for up to `settle_max_s`), then measure the API over it. The store is left in place
/// (`Store::drop` removes it).
pub async fn measure_store(
    opts: &Opts,
    pg: &PgCluster,
    store: &Store<'_>,
    items: u64,
    load: Load,
    settle_max_s: u64,
) -> Result<QuerySide> {
    let tag = &store.label;
    pg.create_db(PG_DB).await?;
    store.drop().await?;
    let port = free_port();
    let text = config_text(opts, pg, store, port);
    let cfg = Arc::new(Config::parse(&text).context("query config")?);
    cfg.validate().context("query config")?;
    waltrail::store::schema::migrate(&cfg.clickhouse).await?;

    let orgs = opts.query_orgs;
    let t_end = now_us() - 60_000_000;
    let t = Instant::now();
    let (total, load_detail) = match load {
        Load::Writer => {
            eprintln!("  [{tag}] loading {items} items across {orgs} organizations …");
            load_writer(&store.client(), items, orgs, t_end, tag).await?;
            (
                items,
                "one insert of 200k rows at a time through waltrail's writer".to_owned(),
            )
        }
        Load::Multiplied { base } => load_multiplied(store, items, base, orgs, t_end).await?,
    };
    let load_s = t.elapsed().as_secs_f64();
    // Let background merges (and, on a cluster, replication) settle: they would have, long before anyone
    // queries a real deployment.
    let t = Instant::now();
    let (nodes, settled) = settle(store, settle_max_s).await?;
    let settle_s = t.elapsed().as_secs_f64();
    let parts = nodes.iter().map(|n| n.parts).sum::<u64>();
    let bytes = nodes.iter().map(|n| n.bytes).sum::<u64>();
    eprintln!(
        "  [{tag}] loaded in {load_s:.0} s ({:.0} items/s); merges {} in {settle_s:.0} s: {parts} parts, {} MB{}",
        total as f64 / load_s,
        if settled { "settled" } else { "still running" },
        bytes / 1_000_000,
        if nodes.len() > 1 {
            format!(
                " ({})",
                nodes
                    .iter()
                    .map(|n| format!("{} {} parts {} MB", n.name, n.parts, n.bytes / 1_000_000))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        }
    );
    let mut q = api(opts, store, cfg, port).await?;
    q.label = store.label.clone();
    q.items = total;
    q.load_s = load_s;
    q.load_detail = load_detail;
    q.settle_s = settle_s;
    q.settled = settled;
    q.parts = parts;
    q.bytes_on_disk = bytes;
    q.nodes = nodes;
    Ok(q)
}

/// `total` items (generated on a blocking thread, two batches in flight at most) through waltrail's
/// `insert_batch` into `audit_items` of `client`'s database.
async fn load_writer(
    client: &clickhouse::Client,
    total: u64,
    orgs: u32,
    t_end: i64,
    tag: &str,
) -> Result<()> {
    let batch = 200_000u64;
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
    let mut loaded = 0u64;
    while let Some(rows) = rx.recv().await {
        insert_batch(client, &rows).await.context("loading items")?;
        loaded += rows.len() as u64;
        if loaded % 2_000_000 == 0 {
            eprintln!(
                "  [{tag}] {loaded} items in {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    gen.await?;
    Ok(())
}

/// Rows per block of the copying inserts: big enough for few parts (ClickHouse writes a part per block
/// and partition), small enough that a block of wide rows stays well under a GB of server memory.
const COPY_BLOCK_ROWS: u64 = 524_288;

/// Load `base` items through the writer into a side table on the entry node, then copy them into the
/// store inside ClickHouse until it holds `total` (rounded up to whole copies): returns the items stored
/// and how. Copy `c` of base item `n` gets a new id (a hash of the old one and `c`, so both stores of a
/// run hold the same items), organization `n + c` (organizations stay of equal size), a time `c/k` of
/// the way to base item `n + 1` (the copies interleave: the store spans the base's 7 days, k times as
/// dense), and commit positions in the same order; every other column is the base item's.
async fn load_multiplied(
    store: &Store<'_>,
    total: u64,
    base: u64,
    orgs: u32,
    t_end: i64,
) -> Result<(u64, String)> {
    let tag = &store.label;
    let base = base.clamp(1, total.max(1));
    let copies = total.div_ceil(base);
    let base_db = store.base_db();
    let admin = store.entry.client("default");
    // A plain MergeTree on the entry node alone (not replicated, not sharded), sorted by time: read back
    // in that order, each block of copies falls into one or two day partitions, so each insert makes few
    // parts.
    for sql in [
        format!("CREATE DATABASE IF NOT EXISTS {base_db}"),
        format!(
            "CREATE TABLE {base_db}.audit_items AS {}.{} ENGINE = MergeTree ORDER BY occurred_at_us",
            store.db,
            store.data_table()
        ),
    ] {
        admin.query(&sql).execute().await.context(sql)?;
    }
    eprintln!(
        "  [{tag}] loading {base} base items across {orgs} organizations through waltrail's writer …"
    );
    let t = Instant::now();
    load_writer(&store.entry.client(&base_db), base, orgs, t_end, tag).await?;
    let base_s = t.elapsed().as_secs_f64();

    let spacing_us = SPAN_US / base as i64;
    let exprs: Vec<String> = COLUMNS
        .iter()
        .map(|c| copy_expr(c, copies, spacing_us, orgs))
        .collect();
    let per_insert = (4_000_000 / base).clamp(1, copies);
    let client = store
        .client()
        .with_setting(
            "max_block_size",
            (COPY_BLOCK_ROWS / per_insert).max(1024).to_string(),
        )
        .with_setting("min_insert_block_size_rows", COPY_BLOCK_ROWS.to_string())
        // No time limit: one insert copies millions of rows, on cores shared with everything else.
        .with_setting("max_execution_time", "0");
    eprintln!(
        "  [{tag}] base loaded in {base_s:.1} s; copying it {copies} times inside ClickHouse, {per_insert} copies per insert …"
    );
    let t = Instant::now();
    let mut c0 = 0;
    while c0 < copies {
        let n = per_insert.min(copies - c0);
        // Column by column, positionally: an alias named like its column would make ClickHouse see a cycle.
        let sql = format!(
            "INSERT INTO audit_items ({}) SELECT {} FROM {base_db}.audit_items \
             ARRAY JOIN arrayMap(x -> toInt64(x + {c0}), range({n})) AS c",
            COLUMNS.join(", "),
            exprs.join(", ")
        );
        client
            .query(&sql)
            .execute()
            .await
            .with_context(|| format!("copying the base items (copies {c0}..{})", c0 + n))?;
        c0 += n;
        eprintln!(
            "  [{tag}] {} items in {:.0} s",
            c0 * base,
            t.elapsed().as_secs_f64()
        );
    }
    let copy_s = t.elapsed().as_secs_f64();
    check_copies(store, base * copies, orgs).await?;
    admin
        .query(&format!("DROP DATABASE IF EXISTS {base_db}"))
        .execute()
        .await
        .context("dropping the base items")?;
    Ok((
        base * copies,
        format!(
            "{} base items through waltrail's writer in {base_s:.1} s, then copied {copies}× inside ClickHouse in {copy_s:.1} s{}",
            fmt_count(base),
            if store.cluster.is_some() {
                " through the Distributed table (insert_distributed_sync = 1)"
            } else {
                ""
            }
        ),
    ))
}

/// Fail unless the store holds `items` items over `orgs` organizations of about equal size: the copying
/// SQL is checked against what it claims before anything is measured over it. Not timed.
async fn check_copies(store: &Store<'_>, items: u64, orgs: u32) -> Result<()> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Shape {
        items: u64,
        orgs: u64,
        smallest: u64,
        largest: u64,
        // uniq is approximate (within about 2%), and cheap where uniqExact would hold every id in memory.
        ids: u64,
    }
    let s: Shape = store
        .client()
        .query(
            "SELECT sum(n), count(), min(n), max(n), sum(ids) FROM \
             (SELECT organization_id, count() AS n, uniq(id) AS ids FROM audit_items GROUP BY organization_id)",
        )
        .fetch_one()
        .await
        .context("checking the copied items")?;
    eprintln!(
        "  [{}] stored {} items ({} distinct ids, approximately) over {} organizations of {}–{} items",
        store.label, s.items, s.ids, s.orgs, s.smallest, s.largest
    );
    if s.items != items
        || s.orgs != orgs as u64
        || (s.ids as f64) < 0.95 * items as f64
        || s.largest > s.smallest + s.smallest / 10 + 1
    {
        bail!(
            "copying the base items went wrong: expected {items} items with distinct ids over {orgs} organizations of about equal size"
        );
    }
    Ok(())
}

/// The expression giving column `col` of copy `c` (an Int64 named `c` in the query) of a base item.
fn copy_expr(col: &str, copies: u64, spacing_us: i64, orgs: u32) -> String {
    // A UUID from two 64-bit hashes of the old one and the copy number: deterministic, distinct.
    let uuid = |col: &str, salt: u32| {
        format!(
            "toUUID(UUIDNumToString(toFixedString(concat(\
             toFixedString(reinterpretAsString(cityHash64(toString({col}), c, {salt})), 8), \
             toFixedString(reinterpretAsString(cityHash64({salt}, c, toString({col}))), 8)), 16)))"
        )
    };
    // org_NNN → org_(NNN + c mod orgs), written as `org` writes it ({:03}).
    let org_num = format!("((toUInt32(substring(organization_id, 5)) + c) % {orgs})");
    match col {
        "id" => uuid("id", 1),
        "event_id" => uuid("event_id", 2),
        "occurred_at_us" | "ingested_at_us" => {
            format!("{col} + intDiv(c * {spacing_us}, {copies})")
        }
        // The base positions are 2^32 + 512·n: copy c of item n gets 2^32 + 512·(n·k + c).
        "commit_lsn" => format!(
            "toUInt64(4294967296 + (commit_lsn - 4294967296) * {copies} + toUInt64(c) * 512)"
        ),
        "xid" => format!("toUInt32(xid * {copies} + toUInt64(c))"),
        "request_id" => "concat(request_id, '-', toString(c))".into(),
        "organization_id" => format!(
            "concat('org_', if({n} < 10, '00', if({n} < 100, '0', '')), toString({n}))",
            n = org_num
        ),
        other => other.to_owned(),
    }
}

/// Wait (up to `max_s`) until no node merges or replicates and the parts stop changing; then each node's
/// active parts of the store. Also whether it settled within `max_s`.
async fn settle(store: &Store<'_>, max_s: u64) -> Result<(Vec<NodeParts>, bool)> {
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Parts {
        parts: u64,
        rows: u64,
        bytes: u64,
    }
    let t = Instant::now();
    let mut last = u64::MAX;
    let settled = loop {
        let mut busy = 0u64;
        let mut parts = 0u64;
        for (_, n) in &store.nodes {
            let c = n.client("default");
            busy += c
                .query("SELECT count() FROM system.merges")
                .fetch_one::<u64>()
                .await?;
            busy += c
                .query("SELECT count() FROM system.replication_queue WHERE database = ?")
                .bind(&store.db)
                .fetch_one::<u64>()
                .await?;
            parts += c
                .query(
                    "SELECT count() FROM system.parts WHERE database = ? AND table = ? AND active",
                )
                .bind(&store.db)
                .bind(store.data_table())
                .fetch_one::<u64>()
                .await?;
        }
        if busy == 0 && parts == last {
            break true;
        }
        if t.elapsed() > Duration::from_secs(max_s) {
            break false;
        }
        last = parts;
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let mut out = Vec::new();
    for (name, n) in &store.nodes {
        let p: Parts = n
            .client("default")
            .query("SELECT count() AS parts, sum(rows) AS rows, sum(bytes_on_disk) AS bytes FROM system.parts WHERE database = ? AND table = ? AND active")
            .bind(&store.db)
            .bind(store.data_table())
            .fetch_one()
            .await?;
        out.push(NodeParts {
            name: name.clone(),
            parts: p.parts,
            rows: p.rows,
            bytes: p.bytes,
        });
    }
    Ok((out, settled))
}

/// The API in this process, over real HTTP, asked for pages and exports (see the top of this file).
async fn api(opts: &Opts, store: &Store<'_>, cfg: Arc<Config>, port: u16) -> Result<QuerySide> {
    let tag = &store.label;
    let orgs = opts.query_orgs;
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
    eprintln!("  [{tag}] first page × {n} …");
    let ch_cpu0 = store.ch_cpu_seconds();
    let mut first = Vec::new();
    for k in 0..n {
        let (ms, body) = get(org_of(k), String::new()).await?;
        first.push((ms, items_of(&body)));
    }
    let ch_cpu_s_per_first_page = (store.ch_cpu_seconds() - ch_cpu0) / n.max(1) as f64;
    eprintln!("  [{tag}] filtered page × {n} …");
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
    eprintln!("  [{tag}] page 20 × {n} …");
    let mut page20 = Vec::new();
    if !cursors.is_empty() {
        for k in 0..n {
            let (o, c) = &cursors[k % cursors.len()];
            let (ms, body) = get(*o, format!("?cursor={c}")).await?;
            page20.push((ms, items_of(&body)));
        }
    }
    // Export: whole organizations, streamed.
    eprintln!("  [{tag}] export …");
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
        orgs,
        first: stats(first),
        filtered: stats(filtered),
        page20: stats(page20),
        export_items,
        export_bytes,
        export_s,
        ch_cpu_s_per_first_page,
        ..QuerySide::default()
    };
    eprintln!(
        "  [{tag}] first page p50 {:.1} ms p99 {:.1} ms; filtered p50 {:.1} p99 {:.1}; page 20 p50 {:.1} p99 {:.1}; export {:.0} items/s",
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
