//! Test harness: a throwaway Postgres cluster and a throwaway ClickHouse server, started once per test
//! binary (and on demand for tests that must stop or restart a server), each test with its own databases.
//! A watchdog process stops the servers and removes their files when the test binary exits.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use waltrail::config::Config;
use waltrail::pipeline::{Pipeline, RunOptions};

/// Postgres server binaries: WALTRAIL_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin.
pub fn pg_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(b) = std::env::var("WALTRAIL_PG_BIN") {
            return b;
        }
        let mut versions: Vec<(u32, String)> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let v: u32 = e.file_name().to_str()?.parse().ok()?;
                        let bin = e.path().join("bin");
                        bin.join("initdb")
                            .exists()
                            .then(|| (v, bin.display().to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        versions.sort();
        versions.pop().map(|(_, b)| b).expect(
            "no Postgres server binaries under /usr/lib/postgresql (apt-get install postgresql)",
        )
    })
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn tmpdir(prefix: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "waltrail-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// Run a command as the `postgres` OS user when we are root (Postgres refuses to run as root).
fn pg_cmd(bin: &str) -> Command {
    let path = format!("{}/{bin}", pg_bin());
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
}

fn chown_postgres(p: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "chown {} to postgres", p.display());
    }
}

/// Stop a process tree when this test binary exits, then remove `dir`.
fn watchdog(stop_cmd: &str, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop_cmd}; sleep 1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    let mut child = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn watchdog");
    // It outlives us by design; the thread only reaps it if it ends first.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
}

pub struct PgCluster {
    pub port: u16,
    pub dir: PathBuf,
    pub data: PathBuf,
}

impl PgCluster {
    pub fn start_new() -> PgCluster {
        Self::start_with("")
    }

    /// A cluster of its own, with extra postgresql.conf lines (for tests that restart it or tune timeouts).
    pub fn start_with(extra_conf: &str) -> PgCluster {
        let dir = tmpdir("pg");
        let data = dir.join("data");
        chown_postgres(&dir);
        let out = pg_cmd("initdb")
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\n\
             wal_level = logical\nmax_replication_slots = 64\nmax_wal_senders = 64\nfsync = off\n\
             full_page_writes = off\nshared_buffers = 128MB\nmax_connections = 200\nlog_min_messages = warning\n\
             logging_collector = off\n{extra_conf}\n",
            sock = dir.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).expect("write postgresql.conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all md5_user 127.0.0.1/32 md5\n\
             host all scram_user 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        chown_postgres(&dir);
        let c = PgCluster { port, dir, data };
        c.pg_ctl("start");
        watchdog(
            &format!(
                "{} -D '{}' -m immediate stop",
                if is_root() {
                    format!("runuser -u postgres -- {}/pg_ctl", pg_bin())
                } else {
                    format!("{}/pg_ctl", pg_bin())
                },
                c.data.display()
            ),
            &c.dir,
        );
        c
    }

    pub fn pg_ctl(&self, action: &str) {
        let log = self.dir.join("postgres.log");
        let out = pg_cmd("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-m", "fast", "-w", "-t", "60", action])
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {action} failed: {}{}\nlog: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    pub async fn client(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to test Postgres db {db}: {e}"));
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// A fresh database for one test.
    pub async fn create_db(&self, name: &str) {
        let admin = self.client("postgres").await;
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    }
}

pub struct ClickHouse {
    pub http_port: u16,
    pub dir: PathBuf,
    pid: std::sync::Mutex<Option<u32>>,
    config: PathBuf,
}

impl ClickHouse {
    pub fn start_new() -> ClickHouse {
        let dir = tmpdir("ch");
        let http_port = free_port();
        let tcp_port = free_port();
        let config = dir.join("config.xml");
        std::fs::write(
            &config,
            format!(
                r#"<?xml version="1.0"?>
<yandex>
    <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/error.log</errorlog><size>10M</size><count>1</count></logger>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <max_connections>256</max_connections>
    <keep_alive_timeout>3</keep_alive_timeout>
    <max_concurrent_queries>100</max_concurrent_queries>
    <uncompressed_cache_size>104857600</uncompressed_cache_size>
    <mark_cache_size>104857600</mark_cache_size>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>/etc/clickhouse-server/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
</yandex>
"#,
                d = dir.display()
            ),
        )
        .expect("write ClickHouse config");
        let ch = ClickHouse {
            http_port,
            dir: dir.clone(),
            pid: std::sync::Mutex::new(None),
            config,
        };
        ch.start();
        // By pid file: a pattern match would also hit the watchdog's own command line.
        watchdog(
            &format!("kill -9 $(cat '{}/server.pid')", dir.display()),
            &dir,
        );
        ch
    }

    pub fn start(&self) {
        let log = std::fs::File::create(self.dir.join("stdout.log")).expect("create log");
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!("--config-file={}", self.config.display()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start clickhouse-server (is the clickhouse-server package installed?)");
        *self.pid.lock().expect("pid lock") = Some(child.id());
        std::fs::write(self.dir.join("server.pid"), child.id().to_string())
            .expect("write pid file");
        // Reap it in the background so a stop leaves no zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http_get(self.http_port, "/?query=SELECT%201").is_some_and(|b| b.trim() == "1") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "ClickHouse did not answer within 60 s; see {}",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stop it hard (kill -9), as a crashed or unplugged server.
    pub fn kill(&self) {
        if let Some(pid) = self.pid.lock().expect("pid lock").take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while http_get(self.http_port, "/?query=SELECT%201").is_some()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            // Give the kernel a moment to release the ports.
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn client(&self, db: &str) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(self.url())
            .with_database(db)
            .with_validation(false)
    }
}

/// Minimal HTTP GET over a raw socket (the harness should not need an HTTP client crate).
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().ok()?,
        Duration::from_secs(1),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    if !buf.starts_with("HTTP/1.0 200") && !buf.starts_with("HTTP/1.1 200") {
        return None;
    }
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

pub fn pg() -> &'static PgCluster {
    static PG: OnceLock<PgCluster> = OnceLock::new();
    PG.get_or_init(PgCluster::start_new)
}

pub fn ch() -> &'static ClickHouse {
    static CH: OnceLock<ClickHouse> = OnceLock::new();
    CH.get_or_init(ClickHouse::start_new)
}

/// Everything one test needs: its Postgres database, its ClickHouse database, a config for both.
pub struct TestEnv {
    pub name: String,
    pub pg_port: u16,
    pub pg_url: String,
    pub ch_url: String,
    pub ch_db: String,
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
        pg.create_db(name).await;
        let ch_db = name.to_owned();
        ch.client("default")
            .query(&format!("DROP DATABASE IF EXISTS {ch_db}"))
            .execute()
            .await
            .expect("drop ClickHouse test database");
        TestEnv {
            name: name.to_owned(),
            pg_port: pg.port,
            pg_url: pg.url(name),
            ch_url: ch.url(),
            ch_db,
        }
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

[capture]
source_id = "test-{name}"
batch_max_delay_ms = 50

{tables}
"#,
            pg = self.pg_url,
            name = self.name,
            ch = self.ch_url,
            db = self.ch_db,
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
}

impl Item {
    pub fn diff_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.diff).expect("diff is JSON")
    }
}

/// A pipeline running in this process until the returned handle stops it.
pub struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics: Arc<waltrail::pipeline::Metrics>,
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
        let r = db
            .query_opt(
                "SELECT s.active AND coalesce(r.state IN ('catchup', 'streaming'), false) \
                 FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
                 WHERE s.slot_name = $1",
                &[&slot],
            )
            .await
            .unwrap();
        if let Some(r) = r {
            if r.get::<_, bool>(0) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("slot {slot} never became active");
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
