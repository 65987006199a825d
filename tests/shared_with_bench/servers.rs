//! Throwaway servers for the tests and the benchmark: a Postgres cluster (initdb into a temp dir as the
//! `postgres` OS user when we are root, since Postgres refuses root; wal_level=logical; a free port) and a
//! ClickHouse server (Debian's clickhouse-server with a config file of its own; free ports). A watchdog
//! process stops each and removes its files once the process that started it exits, however it exits.
//!
//! Included by path from tests/common/mod.rs and benches/bench/main.rs, so both start servers one way.
#![allow(dead_code)]

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Postgres server binaries: WALTRAIL_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin.
pub fn pg_bin() -> Result<String> {
    static BIN: OnceLock<Option<String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(b) = std::env::var("WALTRAIL_PG_BIN") {
            return Some(b);
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
        versions.pop().map(|(_, b)| b)
    })
    .clone()
    .context("no Postgres server binaries under /usr/lib/postgresql (apt-get install postgresql, or set WALTRAIL_PG_BIN)")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn tmpdir(prefix: &str) -> Result<PathBuf> {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "waltrail-{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("create {}", d.display()))?;
    Ok(d)
}

/// A Postgres program, run as the `postgres` OS user when we are root.
pub fn pg_cmd(bin: &str) -> Result<Command> {
    let path = format!("{}/{bin}", pg_bin()?);
    Ok(if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    })
}

fn chown_postgres(p: &Path) -> Result<()> {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            bail!("chown -R postgres:postgres {} failed", p.display());
        }
    }
    Ok(())
}

/// Run `stop_cmd` and remove `dir` once this process has exited.
pub fn watchdog(stop_cmd: &str, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop_cmd}; sleep 1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    if let Ok(mut child) = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        // It outlives us by design; the thread only reaps it if it ends first.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

pub struct PgCluster {
    pub port: u16,
    pub dir: PathBuf,
    pub data: PathBuf,
}

impl PgCluster {
    /// A cluster of its own; `extra_conf` lines are appended to postgresql.conf.
    pub fn start(extra_conf: &str) -> Result<PgCluster> {
        let dir = tmpdir("pg")?;
        let data = dir.join("data");
        chown_postgres(&dir)?;
        let out = pg_cmd("initdb")?
            .arg("-D")
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
            .context("run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let port = free_port();
        // fsync off: the tests need no durability, and the benchmark wants CPU-bound transactions, where
        // any overhead shows at its largest.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\n\
             wal_level = logical\nmax_replication_slots = 64\nmax_wal_senders = 64\nfsync = off\n\
             full_page_writes = off\nshared_buffers = 128MB\nmax_connections = 200\nlog_min_messages = warning\n\
             logging_collector = off\n{extra_conf}\n",
            sock = dir.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path).context("read postgresql.conf")?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).context("write postgresql.conf")?;
        // md5_user and scram_user exist for the authentication tests.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\n\
             host all md5_user 127.0.0.1/32 md5\n\
             host all scram_user 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\n\
             host replication all 127.0.0.1/32 trust\n",
        )
        .context("write pg_hba.conf")?;
        chown_postgres(&dir)?;
        let c = PgCluster { port, dir, data };
        c.pg_ctl("start")?;
        let bin = pg_bin()?;
        watchdog(
            &format!(
                "{} -D '{}' -m immediate stop",
                if is_root() {
                    format!("runuser -u postgres -- {bin}/pg_ctl")
                } else {
                    format!("{bin}/pg_ctl")
                },
                c.data.display()
            ),
            &c.dir,
        );
        Ok(c)
    }

    /// `pg_ctl start`, `restart` or `stop` (fast), waiting for it to finish.
    pub fn pg_ctl(&self, action: &str) -> Result<()> {
        let log = self.dir.join("postgres.log");
        let out = pg_cmd("pg_ctl")?
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-m", "fast", "-w", "-t", "60", action])
            .output()
            .context("run pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl {action} failed: {}{}\nlog: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(())
    }

    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn url(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    pub async fn client(&self, db: &str) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connect to Postgres database {db}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// A fresh database (dropped first if it exists).
    pub async fn create_db(&self, name: &str) -> Result<()> {
        let admin = self.client("postgres").await?;
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .with_context(|| sql.clone())?;
        }
        Ok(())
    }
}

pub struct ClickHouse {
    pub http_port: u16,
    pub tcp_port: u16,
    pub dir: PathBuf,
    pid: Mutex<Option<u32>>,
    config: PathBuf,
    /// Whether the last start failed because the server exited (not because it was slow).
    exited_while_starting: Mutex<bool>,
}

impl ClickHouse {
    /// A server of its own, started and answering.
    pub fn start_new() -> Result<ClickHouse> {
        Self::start_with("")
    }

    /// A server of its own with `extra_xml` added inside its config's `<yandex>` element (e.g.
    /// `<macros>`, `<zookeeper>`, `<remote_servers>`), started and answering.
    pub fn start_with(extra_xml: &str) -> Result<ClickHouse> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ch = Self::configure("ch", free_port(), free_port(), extra_xml)?;
            match ch.start() {
                Ok(()) => return Ok(ch),
                // A port picked free and taken before the server bound it: new ones.
                Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                    ch.kill();
                    eprintln!("harness: a port of the test ClickHouse was taken while it started; again on new ports: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A server's directory and config on the given ports, not started yet (`start` starts it): for
    /// servers whose configs must name each other's ports, as a cluster's do. The watchdog stops it once
    /// this process exits.
    pub fn configure(
        name: &str,
        http_port: u16,
        tcp_port: u16,
        extra_xml: &str,
    ) -> Result<ClickHouse> {
        let dir = tmpdir(name)?;
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
{extra_xml}
</yandex>
"#,
                d = dir.display()
            ),
        )
        .context("write the ClickHouse config")?;
        // By pid file (`start` writes it): a pattern match would also hit the watchdog's own command line.
        watchdog(
            &format!("kill -9 $(cat '{}/server.pid')", dir.display()),
            &dir,
        );
        Ok(ClickHouse {
            http_port,
            tcp_port,
            dir,
            pid: Mutex::new(None),
            config,
            exited_while_starting: Mutex::new(false),
        })
    }

    /// Start the server (again, after `kill`) and wait until it answers. A server that exits while
    /// starting is tried twice more: 18.16 gives up its start on one ZooKeeper error while attaching a
    /// replicated table (seen once on a loaded machine, right after a kill -9), or when a replicated
    /// table's local parts, after a kill -9, look too unlike ZooKeeper's (a CI run: exit 70 three times) —
    /// the retries therefore set the server's `force_restore_data` flag, the documented way to have it
    /// take ZooKeeper's word. A server that cannot start for good still fails, with its log.
    pub fn start(&self) -> Result<()> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.start_once() {
                // A port taken by another process stays taken: its caller picks new ones.
                Err(e) if format!("{e:#}").contains("Address already in use") => return Err(e),
                Err(e) if tries < 3 && self.exited_while_starting.lock().is_ok_and(|x| *x) => {
                    eprintln!(
                        "harness: ClickHouse in {} exited while starting; again, restoring replicated tables from ZooKeeper: {e:#}",
                        self.dir.display()
                    );
                    let flags = self.dir.join("data").join("flags");
                    let _ = std::fs::create_dir_all(&flags);
                    let _ = std::fs::write(flags.join("force_restore_data"), b"");
                    std::thread::sleep(Duration::from_secs(1));
                }
                r => return r,
            }
        }
    }

    fn start_once(&self) -> Result<()> {
        if let Ok(mut x) = self.exited_while_starting.lock() {
            *x = false;
        }
        let log = std::fs::File::create(self.dir.join("stdout.log"))?;
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!("--config-file={}", self.config.display()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start /usr/sbin/clickhouse-server (apt-get install clickhouse-server)")?;
        if let Ok(mut pid) = self.pid.lock() {
            *pid = Some(child.id());
        }
        std::fs::write(self.dir.join("server.pid"), child.id().to_string())?;
        // Reap it in the background so a stop leaves no zombie; its exit status tells a server that
        // could not start (a port taken, a bad config) from a slow one.
        let exited = std::sync::Arc::new(Mutex::new(None));
        let exit = exited.clone();
        std::thread::spawn(move || {
            let mut child = child;
            let status = child.wait();
            if let Ok(mut e) = exit.lock() {
                *e = Some(
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string()),
                );
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(self.http_port, "/?query=SELECT%201").is_none_or(|b| b.trim() != "1") {
            if let Some(status) = exited.lock().ok().and_then(|e| e.clone()) {
                if let Ok(mut pid) = self.pid.lock() {
                    *pid = None;
                }
                if let Ok(mut x) = self.exited_while_starting.lock() {
                    *x = true;
                }
                bail!(
                    "ClickHouse exited while starting ({status}); see {}/error.log and stdout.log:\n{}",
                    self.dir.display(),
                    log_tail(&self.dir.join("error.log"), 2000)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "ClickHouse did not answer within 60 s; see {}/error.log:\n{}",
                    self.dir.display(),
                    log_tail(&self.dir.join("error.log"), 2000)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// Stop it hard (kill -9), as a crashed or unplugged server.
    pub fn kill(&self) {
        let pid = self.pid.lock().ok().and_then(|mut p| p.take());
        if let Some(pid) = pid {
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

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid.lock().ok().and_then(|p| *p)
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

    pub async fn reset_db(&self, db: &str) -> Result<()> {
        self.client("default")
            .query(&format!("DROP DATABASE IF EXISTS {db}"))
            .execute()
            .await
            .with_context(|| format!("drop ClickHouse database {db}"))
    }
}

/// The last `max` bytes of a log file (for error messages), or a note that it cannot be read.
pub fn log_tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b[b.len().saturating_sub(max)..]).into_owned(),
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Minimal HTTP GET over a raw socket (no HTTP client crate needed to see whether a server is up).
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
