//! Throwaway Postgres and ClickHouse servers for the benchmark, started the way the tests start theirs
//! (tests/common/mod.rs): initdb as the `postgres` OS user when we are root, wal_level=logical, ports of
//! their own; clickhouse-server with a config file of its own. A watchdog process stops both and removes
//! their files when the benchmark exits, however it exits.

use anyhow::{bail, Context, Result};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Postgres binaries: WALTRAIL_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin.
pub fn pg_bin() -> String {
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
    versions
        .pop()
        .map(|(_, b)| b)
        .unwrap_or_else(|| "/usr/lib/postgresql/15/bin".into())
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

fn tmpdir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("waltrail-bench-{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// A command run as the `postgres` OS user when we are root (Postgres refuses to run as root).
pub fn pg_cmd(bin: &str) -> Command {
    let path = format!("{}/{bin}", pg_bin());
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]);
        c
    } else {
        Command::new(path)
    }
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
            bail!("chown {} to postgres failed", p.display());
        }
    }
    Ok(())
}

/// Run `stop_cmd` and remove `dir` once this process has exited.
fn watchdog(stop_cmd: &str, dir: &Path) {
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
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

pub struct Pg {
    pub port: u16,
    pub dir: PathBuf,
    pub data: PathBuf,
}

impl Pg {
    pub fn start() -> Result<Pg> {
        let dir = tmpdir("pg");
        let data = dir.join("data");
        chown_postgres(&dir)?;
        let out = pg_cmd("initdb")
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
        // The tests' settings (fsync off: CPU-bound, so overheads show at their largest), plus room for
        // the 1M-row transaction's WAL.
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\n\
             wal_level = logical\nmax_replication_slots = 64\nmax_wal_senders = 64\nfsync = off\n\
             full_page_writes = off\nshared_buffers = 128MB\nmax_connections = 200\nmax_wal_size = 4GB\n\
             log_min_messages = warning\nlogging_collector = off\n",
            sock = dir.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut existing = std::fs::read_to_string(&conf_path)?;
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhost all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        )?;
        chown_postgres(&dir)?;
        let pg = Pg { port, dir, data };
        let log = pg.dir.join("postgres.log");
        let out = pg_cmd("pg_ctl")
            .arg("-D")
            .arg(&pg.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"])
            .output()
            .context("run pg_ctl")?;
        if !out.status.success() {
            bail!(
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        watchdog(
            &format!(
                "{} -D '{}' -m immediate stop",
                if is_root() {
                    format!("runuser -u postgres -- {}/pg_ctl", pg_bin())
                } else {
                    format!("{}/pg_ctl", pg_bin())
                },
                pg.data.display()
            ),
            &pg.dir,
        );
        Ok(pg)
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
    pub dir: PathBuf,
    pub pid: u32,
}

impl ClickHouse {
    pub fn start() -> Result<ClickHouse> {
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
        )?;
        let log = std::fs::File::create(dir.join("stdout.log"))?;
        let child = Command::new("/usr/sbin/clickhouse-server")
            .arg(format!("--config-file={}", config.display()))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start /usr/sbin/clickhouse-server (apt-get install clickhouse-server)")?;
        let pid = child.id();
        std::fs::write(dir.join("server.pid"), pid.to_string())?;
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        watchdog(
            &format!("kill -9 $(cat '{}/server.pid')", dir.display()),
            &dir,
        );
        let ch = ClickHouse {
            http_port,
            dir,
            pid,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(http_port, "/?query=SELECT%201").is_none_or(|b| b.trim() != "1") {
            if Instant::now() > deadline {
                bail!(
                    "ClickHouse did not answer within 60 s; see {}",
                    ch.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(ch)
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
            .with_context(|| format!("drop ClickHouse database {db}"))?;
        Ok(())
    }
}

/// Minimal HTTP GET over a raw socket.
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

/// Peak resident set (VmHWM) of a process, in kB; 0 when it cannot be read.
pub fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user + system, in seconds) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the full line, 12 and 13 after the name.
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}
