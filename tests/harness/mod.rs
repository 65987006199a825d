//! Test harness: a throwaway Postgres cluster and a throwaway ClickHouse server (and, for the tests that
//! ask, a ClickHouse cluster of three servers and a ZooKeeper), started once per test binary (and on
//! demand for tests that must stop or restart a server), each test with its own databases.
//! A watchdog process stops the servers and removes their files when the test binary exits.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use waltrail::config::Config;
use waltrail::pipeline::{Pipeline, RunOptions};

#[path = "../shared_with_bench/servers.rs"]
mod servers;
pub use servers::{free_port, ClickHouse, PgCluster};
#[path = "../shared_with_bench/cluster.rs"]
mod cluster;
#[path = "../shared_with_bench/procfs.rs"]
pub mod procfs;
#[allow(unused_imports)] // not every test binary names them
pub use cluster::{ChCluster, ZooKeeper};

/// Postgres binaries (see servers::pg_bin); a test cannot go on without them.
pub fn pg_bin() -> String {
    servers::pg_bin().expect("Postgres server binaries")
}

/// The Postgres cluster shared by this test binary's tests.
pub fn pg() -> &'static PgCluster {
    static PG: OnceLock<PgCluster> = OnceLock::new();
    PG.get_or_init(|| PgCluster::start("").expect("start the test Postgres cluster"))
}

/// The ClickHouse server shared by this test binary's tests.
pub fn ch() -> &'static ClickHouse {
    static CH: OnceLock<ClickHouse> = OnceLock::new();
    CH.get_or_init(|| ClickHouse::start_new().expect("start the test ClickHouse server"))
}

/// The ClickHouse cluster (ZooKeeper + ch1, ch2, ch3; see shared_with_bench/cluster.rs) shared by this
/// test binary's tests, started the first time a test asks for it.
pub fn cluster() -> &'static ChCluster {
    static CLUSTER: OnceLock<ChCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| ChCluster::start().expect("start the test ClickHouse cluster"))
}

/// Everything one test needs: its Postgres database, its ClickHouse database, a config for both.
pub struct TestEnv {
    pub name: String,
    pub pg_port: u16,
    pub pg_url: String,
    pub ch_url: String,
    pub ch_db: String,
    /// Lines added to the config's `[clickhouse]` section (cluster mode).
    pub ch_extra: String,
}

impl TestEnv {
    pub async fn new(name: &str) -> TestEnv {
        Self::on(name, pg(), ch()).await
    }

    pub async fn on(name: &str, pg: &PgCluster, ch: &ClickHouse) -> TestEnv {
        // waltrail's logs go to the test's captured output: shown when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        pg.create_db(name)
            .await
            .expect("create the test's Postgres database");
        let ch_db = name.to_owned();
        ch.reset_db(&ch_db)
            .await
            .expect("drop the test's ClickHouse database");
        TestEnv {
            name: name.to_owned(),
            pg_port: pg.port,
            pg_url: pg.url(name),
            ch_url: ch.url(),
            ch_db,
            ch_extra: String::new(),
        }
    }

    /// A test whose store is `cluster_name` of the harness's ClickHouse cluster, reached through its first
    /// node; `extra` adds `[clickhouse]` keys (e.g. `insert_quorum = 2`). The database is the test's name,
    /// new to this binary's cluster (created by waltrail's migration, `ON CLUSTER`).
    pub async fn on_cluster(
        name: &str,
        pg: &PgCluster,
        cluster: &ChCluster,
        cluster_name: &str,
        extra: &str,
    ) -> TestEnv {
        let mut env = Self::on(name, pg, cluster.node(0)).await;
        env.ch_extra = format!("cluster = \"{cluster_name}\"\nddl_timeout_s = 20\n{extra}");
        env
    }

    pub async fn pg(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.pg_url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.pg_url));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// A connection to this env's database as another role (one without a password: the test cluster
    /// trusts local connections).
    pub async fn pg_as(&self, role: &str) -> tokio_postgres::Client {
        let url = self
            .pg_url
            .replace("user=postgres", &format!("user={role}"));
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect as {role}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub fn ch(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.ch_url)
            .with_database(&self.ch_db)
            .with_validation(false)
    }

    /// Config text for this env with the given `[[tables]]` (and any extra sections) appended.
    pub fn config_text(&self, tables: &str) -> String {
        self.config_text_with(tables, 1000)
    }

    pub fn config_text_with(&self, tables: &str, status_interval_ms: u64) -> String {
        format!(
            r#"
[postgres]
url = "{pg}"
slot = "slot_{name}"
publication = "pub_{name}"
status_interval_ms = {status_interval_ms}

[clickhouse]
url = "{ch}"
database = "{db}"
{ch_extra}

[capture]
source_id = "test-{name}"
batch_max_delay_ms = 50

# The deployment's event secret: the API process seals exports with it, capture checks the seal.
[security]
event_secret = "test-event-secret-{name}-0123456789abcdef"

{tables}
"#,
            pg = self.pg_url,
            name = self.name,
            ch = self.ch_url,
            db = self.ch_db,
            ch_extra = self.ch_extra,
        )
    }

    pub fn config(&self, tables: &str) -> Config {
        let cfg = Config::parse(&self.config_text(tables)).expect("test config parses");
        cfg.validate().expect("test config is valid");
        cfg
    }

    /// Write the config to a file (for tests that run the binary).
    pub fn config_file(&self, tables: &str, status_interval_ms: u64) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("waltrail-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("config dir");
        let p = dir.join(format!("{}-{status_interval_ms}.toml", self.name));
        // The binary also serves the API: give it a port of its own.
        let text = format!(
            "{}\n[api]\nlisten = \"127.0.0.1:{}\"\n",
            self.config_text_with(tables, status_interval_ms),
            free_port()
        );
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// The `api.listen` address written into a config file.
    pub fn api_addr(path: &Path) -> String {
        let text = std::fs::read_to_string(path).expect("read config");
        let cfg = Config::parse(&text).expect("config parses");
        cfg.api.listen
    }

    /// Number of distinct stored items.
    pub async fn count(&self) -> u64 {
        self.ch()
            .query("SELECT count(DISTINCT id) FROM audit_items")
            .fetch_one::<u64>()
            .await
            .unwrap_or(0)
    }

    /// Number of stored rows, every copy counted (what a replay must not add to).
    pub async fn rows(&self) -> u64 {
        self.ch()
            .query("SELECT count() FROM audit_items")
            .fetch_one::<u64>()
            .await
            .expect("count rows")
    }

    /// Merge every copy away (as ClickHouse eventually does), then verify `org`'s chains from the store:
    /// each must hold. Returns the reports.
    pub async fn verified_after_merges(
        &self,
        org: &str,
    ) -> Vec<waltrail::audit::chain::ChainReport> {
        let ch = self.ch();
        ch.query("OPTIMIZE TABLE audit_items FINAL")
            .execute()
            .await
            .expect("optimize");
        let reports = waltrail::store::integrity::verify_org(&ch, org, None, None, &[])
            .await
            .expect("verification reads the store");
        for r in &reports {
            assert_eq!(r.failure, None, "{r:?}");
        }
        reports
    }

    /// Wait until at least `n` distinct items are stored.
    pub async fn wait_for(&self, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let c = self.count().await;
            if c >= n {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} items in {}, have {c}",
                self.ch_db
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start a pipeline with `cfg`, let it store `n` items in all, and stop it: a start that records
    /// what the last one found.
    pub async fn run_until(&self, cfg: Config, n: u64) {
        let run = Running::start(cfg);
        self.wait_for(n).await;
        run.stop().await.expect("the pipeline stops cleanly");
    }

    /// The gap items stored, in commit order.
    pub async fn gaps(&self) -> Vec<Item> {
        self.items()
            .await
            .into_iter()
            .filter(Item::is_gap)
            .collect()
    }

    /// Stored items, one per id, in commit order.
    pub async fn items(&self) -> Vec<Item> {
        self.ch()
            .query(
                "SELECT ?fields FROM audit_items ORDER BY commit_lsn, seq, resource_type LIMIT 1 BY id",
            )
            .fetch_all::<Item>()
            .await
            .expect("read items")
    }
}

#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
pub struct Item {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: uuid::Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: uuid::Uuid,
    pub occurred_at_us: i64,
    pub commit_lsn: u64,
    pub xid: u32,
    pub seq: u32,
    pub action: String,
    pub source: String,
    pub principal_id: String,
    pub principal_type: String,
    pub display_name: String,
    pub organization_id: String,
    pub project_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub resource_display: String,
    pub changed_fields: Vec<String>,
    pub diff: String,
    pub table_name: String,
    pub actor_source: String,
    pub context_status: String,
    pub platform_wide: u8,
    pub client_ip: String,
    pub session_id: String,
    pub summary: String,
}

impl Item {
    pub fn diff_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.diff).expect("diff is JSON")
    }

    pub fn is_gap(&self) -> bool {
        self.action == "AUDIT_ACTION_GAP"
    }

    /// A gap item's reason, as its diff says it.
    pub fn gap_reason(&self) -> String {
        self.diff_json()["gap"]["reason"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// The gap items among `items`.
pub fn gaps(items: &[Item]) -> Vec<&Item> {
    items.iter().filter(|i| i.is_gap()).collect()
}

/// The reasons of the gap items among `items`, in trail order.
pub fn gap_reasons(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter(|i| i.is_gap())
        .map(Item::gap_reason)
        .collect()
}

/// A pipeline running in this process until the returned handle stops it.
pub struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics: Arc<waltrail::capture::metrics::CaptureMetrics>,
}

impl Running {
    pub fn start(cfg: Config) -> Running {
        Self::start_with(cfg, RunOptions::default())
    }

    pub fn start_with(cfg: Config, opts: RunOptions) -> Running {
        let (stop, rx) = watch::channel(false);
        let p = Pipeline::new(Arc::new(cfg), opts);
        let metrics = p.metrics.clone();
        let task = tokio::spawn(async move { p.run(rx).await });
        Running {
            stop,
            task,
            metrics,
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.task.await.expect("pipeline task")
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    pub async fn join(self) -> anyhow::Result<()> {
        self.task.await.expect("pipeline task")
    }

    /// Wait (a minute at most) for capture to stop by itself with an error, and give the error.
    pub async fn stops_with(self) -> String {
        let err = tokio::time::timeout(Duration::from_secs(60), self.join())
            .await
            .expect("capture stops by itself")
            .expect_err("capture stops with an error");
        format!("{err:#}")
    }

    /// Wait until `n` items are stored while capture keeps running (handed back); a capture that stopped
    /// instead fails the test, `what` and the error it stopped with said.
    pub async fn until_stored(self, env: &TestEnv, n: u64, what: &str) -> Running {
        for _ in 0..300 {
            if self.is_finished() || env.count().await >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if self.is_finished() {
            let why = match self.join().await {
                Ok(()) => "without an error".to_owned(),
                Err(e) => format!("{e:#}"),
            };
            panic!("{what}: capture stopped: {why}");
        }
        env.wait_for(n).await;
        self
    }
}

/// An LSN as Postgres prints it (`16/B374D848`), as a number; read with waltrail's own parser.
pub fn lsn(s: &str) -> u64 {
    s.parse::<waltrail::capture::Lsn>()
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

pub async fn confirmed_flush(pg: &tokio_postgres::Client, slot: &str) -> Option<String> {
    pg.query_opt(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .ok()
    .flatten()
    .and_then(|r| r.get(0))
}

/// Wait until waltrail streams from the slot. A slot is also "active" while it is being created (building
/// its snapshot, which waits for running transactions): changes made then would precede the slot, so wait
/// for the walsender to be past startup.
pub async fn wait_slot(db: &tokio_postgres::Client, slot: &str) {
    for _ in 0..1200 {
        if slot_streaming(db, slot).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("slot {slot} never became active");
}

/// `wait_slot` for a waltrail whose store is the harness's ClickHouse cluster: its migration runs
/// `ON CLUSTER` DDL, which an 18.16 node can stop running at any moment (see `ChCluster::repair_ddl`).
/// When the slot is not active after 30 s, the stalled node is restarted (waltrail retries the DDL and
/// the restarted node runs the queued task); the caller holds the cluster's guard.
pub async fn wait_slot_on_cluster(cluster: &ChCluster, db: &tokio_postgres::Client, slot: &str) {
    for _ in 0..3 {
        for _ in 0..300 {
            if slot_streaming(db, slot).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "harness: slot {slot} not active after 30 s; checking the cluster's ON CLUSTER DDL"
        );
        cluster
            .repair_ddl()
            .await
            .expect("repair the cluster's DDL");
    }
    panic!("slot {slot} never became active (the cluster runs ON CLUSTER DDL)");
}

async fn slot_streaming(db: &tokio_postgres::Client, slot: &str) -> bool {
    let r = db
        .query_opt(
            "SELECT s.active AND coalesce(r.state IN ('catchup', 'streaming'), false) \
             FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
             WHERE s.slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap();
    r.is_some_and(|r| r.get::<_, bool>(0))
}

/// Wait until the slot's confirmed position reaches `lsn`.
pub async fn wait_confirmed(db: &tokio_postgres::Client, slot: &str, lsn: &str) {
    for _ in 0..600 {
        let r = db
            .query_one(
                "SELECT coalesce(confirmed_flush_lsn >= $2::text::pg_lsn, false) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &lsn],
            )
            .await
            .unwrap();
        if r.get::<_, bool>(0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = confirmed_flush(db, slot).await;
    panic!("slot {slot} never confirmed {lsn} (confirmed: {now:?})");
}

/// The API of this process on a config's store, with a client for it.
pub struct Api {
    /// `http://` and the address.
    pub base: String,
    /// The address alone (`api.listen`), for raw connections.
    pub addr: String,
    pub http: reqwest::Client,
    _stop: watch::Sender<bool>,
}

impl Api {
    pub async fn start(cfg: Arc<Config>) -> Api {
        let (tx, rx) = watch::channel(false);
        let addr = cfg.api.listen.clone();
        let base = format!("http://{addr}");
        tokio::spawn(waltrail::api::serve(
            waltrail::api::AppState::new(cfg, None).expect("API state"),
            rx,
        ));
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{base}/healthz")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Api {
            base,
            addr,
            http,
            _stop: tx,
        }
    }

    /// Status and JSON body of a GET with a bearer key.
    pub async fn get(&self, key: &str, path: &str) -> (u16, serde_json::Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        let body = r.text().await.expect("body");
        let v = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("not JSON ({status}) for {path}: {body}"));
        (status, v)
    }

    /// The body of a GET with a bearer key, as text (an export).
    pub async fn text(&self, key: &str, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
            .text()
            .await
            .expect("body")
    }

    /// Only the status of a GET with a bearer key (whatever the body is).
    pub async fn status(&self, key: &str, path: &str) -> u16 {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("request")
            .status()
            .as_u16()
    }

    /// One page's items (the answer must be 200).
    pub async fn items(&self, key: &str, path: &str) -> Vec<serde_json::Value> {
        let (s, v) = self.get(key, path).await;
        assert_eq!(s, 200, "{path}: {v}");
        v["data"]["items"].as_array().expect("items").clone()
    }

    /// Every item of a listing, following its cursor to the end.
    pub async fn all_items(&self, key: &str, path: &str) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let sep = if path.contains('?') { '&' } else { '?' };
            let p = match &cursor {
                Some(c) => format!("{path}{sep}cursor={c}"),
                None => path.to_owned(),
            };
            let (s, v) = self.get(key, &p).await;
            assert_eq!(s, 200, "{p}: {v}");
            out.extend(
                v["data"]["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .cloned(),
            );
            match v["data"]["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
                _ => return out,
            }
        }
    }
}

/// SHA-256 hex of an API key, as `[[api.keys]] sha256` wants it.
pub fn key_sha(key: &str) -> String {
    waltrail::api::auth::sha256_hex(key)
}

/// Start the waltrail binary with `args`, its output to `log`.
pub fn spawn_bin(args: &[&str], log: &Path) -> std::process::Child {
    let f = std::fs::File::create(log).expect("log file");
    std::process::Command::new(env!("CARGO_BIN_EXE_waltrail"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(f.try_clone().expect("dup"))
        .stderr(f)
        .spawn()
        .expect("spawn waltrail")
}

/// Wait for a process to exit; kill it and fail the test if it has not within `within`.
pub fn wait_exit(child: &mut std::process::Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("waltrail did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wait until `slot` has confirmed everything written so far.
pub async fn wait_all_confirmed(db: &tokio_postgres::Client, slot: &str) {
    let lsn: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("current WAL position")
        .get(0);
    wait_confirmed(db, slot, &lsn).await;
}

/// A small mapped table several test files capture (`org` is the organization, `name` the display).
pub const WORKERS_DDL: &str = "CREATE TABLE workers (id int PRIMARY KEY, org text, name text)";
pub const WORKERS: &str = r#"
[[tables]]
table = "workers"
resource_type = "RESOURCE_TYPE_WORKER"
organization_column = "org"
display_column = "name"
"#;

/// The pid of the walsender serving `slot`, if one does.
pub async fn slot_pid(db: &tokio_postgres::Client, slot: &str) -> Option<i32> {
    db.query_one(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
        &[&slot],
    )
    .await
    .expect("read pg_replication_slots")
    .get(0)
}

/// Apply a mutation (`ALTER TABLE … UPDATE/DELETE`) and wait until ClickHouse has done it (mutations run in
/// the background).
pub async fn mutate(ch: &clickhouse::Client, sql: &str) {
    ch.query(sql)
        .execute()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    for _ in 0..200 {
        let pending: u64 = ch
            .query("SELECT count() FROM system.mutations WHERE database = currentDatabase() AND NOT is_done")
            .fetch_one()
            .await
            .expect("system.mutations answers");
        if pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mutation did not finish: {sql}");
}

/// Run each statement in a transaction committed through replication origin `origin` at the given commit
/// time (µs): how a sync job's changes carry their origin's commit time, in the past or ahead.
pub async fn commit_at(db: &tokio_postgres::Client, origin: &str, statements: &[(i64, String)]) {
    db.batch_execute(&format!(
        "SELECT pg_replication_origin_create('{origin}'); SELECT pg_replication_origin_session_setup('{origin}')"
    ))
    .await
    .expect("a replication origin");
    for (i, (t, sql)) in statements.iter().enumerate() {
        let at = chrono::DateTime::from_timestamp_micros(*t)
            .expect("a commit time in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        db.batch_execute(&format!(
            "BEGIN; SELECT pg_replication_origin_xact_setup('0/{}000', '{at}'); {sql}; COMMIT",
            i + 1
        ))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    db.batch_execute("SELECT pg_replication_origin_session_reset()")
        .await
        .expect("the origin session reset");
}

/// Where the source's WAL ends now (`pg_current_wal_lsn()`).
pub async fn wal_lsn(db: &tokio_postgres::Client) -> u64 {
    let n: i64 = db
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
        .await
        .expect("the WAL position")
        .get(0);
    n as u64
}

/// A position as the trail writes it ("16/B374D848").
pub fn lsn_of(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').expect("a position");
    (u64::from_str_radix(hi, 16).expect("hex") << 32) | u64::from_str_radix(lo, 16).expect("hex")
}

/// The DDL event trigger script (`sql/postgres/waltrail_ddl.sql`), to install in a test's database.
pub fn install_sql() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sql/postgres/waltrail_ddl.sql"
    ))
    .expect("the DDL event trigger script")
}

/// `[[tables]]` entries for tables with columns `org` and `name` (organization and display).
pub fn mapped(names: &[&str]) -> String {
    names
        .iter()
        .map(|t| {
            format!(
                "[[tables]]\ntable = \"{t}\"\nresource_type = \"RESOURCE_TYPE_PROJECT\"\n\
                 organization_column = \"org\"\ndisplay_column = \"name\"\n"
            )
        })
        .collect()
}

/// A context message naming `actor`, as the platform writes it inside its transaction.
pub fn ctx(actor: &str) -> String {
    format!(
        r#"SELECT pg_logical_emit_message(true, 'waltrail', '{{"actor_id":"{actor}","source":"CLI"}}');"#
    )
}

/// Send a signal (`-9`, `-TERM`) to a spawned waltrail.
pub fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}
