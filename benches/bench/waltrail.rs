//! The real `waltrail run` binary (release build), driven as an operator would: a config file, a
//! process, SIGTERM to stop. Its peak RSS is read from /proc while it runs.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs::{cpu_seconds, vm_hwm_kb};
use crate::servers::{ClickHouse, PgCluster};

/// The waltrail binary cargo built for this benchmark (release), or BENCH_WALTRAIL_BIN (to measure a
/// modified build side by side).
pub fn binary() -> PathBuf {
    std::env::var("BENCH_WALTRAIL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_waltrail")))
}

/// What one waltrail process reads and where it writes.
pub struct Setup<'a> {
    pub name: &'a str,
    pub db: &'a str,
    pub slot: &'a str,
    pub publication: &'a str,
    pub ch_db: &'a str,
    /// `[[tables]]` sections.
    pub tables: &'a str,
}

/// Extra `[capture]` settings for every waltrail the benchmark starts, from BENCH_WALTRAIL_CAPTURE
/// (`key=value` pairs separated by `;`, e.g. `batch_max_items=50000;batch_max_delay_ms=50`): for
/// experiments. Empty (waltrail's defaults) unless set; the report prints it when set.
pub fn capture_overrides() -> String {
    env_lines("BENCH_WALTRAIL_CAPTURE")
}

/// A `;`-separated environment variable as config lines.
fn env_lines(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_default()
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("{s}\n"))
        .collect()
}

pub fn config_text(pg: &PgCluster, ch: &ClickHouse, s: &Setup) -> String {
    config_text_with(pg, ch, s, "")
}

/// The config with `ch_extra` lines in its `[clickhouse]` section: e.g. `cluster = "sharded"`, to store
/// into a cluster reached through `ch` (one of its nodes).
pub fn config_text_with(pg: &PgCluster, ch: &ClickHouse, s: &Setup, ch_extra: &str) -> String {
    format!(
        r#"[postgres]
url = "{url}"
slot = "{slot}"
publication = "{publication}"
streaming = {streaming}

[clickhouse]
url = "{ch}"
database = "{ch_db}"
compression = "{compression}"
{ch_extra}
[capture]
source_id = "bench-{name}"
{capture}

[api]
enabled = false

{tables}
{extra}"#,
        url = pg.url(s.db),
        slot = s.slot,
        publication = s.publication,
        ch = ch.url(),
        ch_db = s.ch_db,
        name = s.name,
        capture = capture_overrides(),
        compression = compression(),
        streaming = streaming(),
        tables = s.tables,
        extra = extra_config(),
    )
}

pub fn write_config(
    dir: &std::path::Path,
    pg: &PgCluster,
    ch: &ClickHouse,
    s: &Setup,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join(format!("{}.toml", s.name));
    std::fs::write(&p, config_text(pg, ch, s))?;
    Ok(p)
}

/// `clickhouse.compression` for every waltrail started: BENCH_CLICKHOUSE_COMPRESSION, by default `none`,
/// the setting README recommends for a ClickHouse on the same host (as here).
pub fn compression() -> String {
    std::env::var("BENCH_CLICKHOUSE_COMPRESSION").unwrap_or_else(|_| "none".into())
}

/// Whether large transactions are streamed while in progress (pgoutput protocol 2, `postgres.streaming`):
/// off as in waltrail's default; BENCH_STREAMING=1 turns it on for waltrail and for pg_recvlogical, the
/// baseline, which is always given waltrail's protocol options.
pub fn streaming() -> bool {
    std::env::var("BENCH_STREAMING").is_ok_and(|v| v == "1")
}

/// Extra configuration appended to every waltrail config, from BENCH_WALTRAIL_EXTRA (lines separated
/// by `;`, e.g. `[attribution];max_pending_items=1000`): for experiments; printed with the results.
pub fn extra_config() -> String {
    env_lines("BENCH_WALTRAIL_EXTRA")
}

/// Create the ClickHouse schema before a timed run, so the run times capture only.
pub fn migrate(config: &std::path::Path) -> Result<()> {
    let out = Command::new(binary())
        .args(["migrate", "--config"])
        .arg(config)
        .output()
        .context("run waltrail migrate")?;
    if !out.status.success() {
        bail!(
            "waltrail migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub struct Process {
    child: Child,
    pub started: Instant,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(config: &std::path::Path, log: PathBuf) -> Result<Process> {
        Self::spawn_pinned(config, log, None)
    }

    pub fn spawn_pinned(
        config: &std::path::Path,
        log: PathBuf,
        cpus: Option<&[usize]>,
    ) -> Result<Process> {
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(binary());
        if let Some(cpus) = cpus {
            crate::pin::pin_command(&mut cmd, cpus);
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("start waltrail run")?;
        Ok(Process {
            child,
            started: Instant::now(),
            log,
        })
    }

    pub fn peak_rss_kb(&self) -> u64 {
        vm_hwm_kb(self.child.id())
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// Fail if the process has already exited (with its log, which says why).
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "waltrail exited ({status}); log {}:\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// SIGTERM, then wait (kill after 30 s).
    pub fn stop(mut self) -> Result<()> {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A benchmark step that fails between start and stop must not leave waltrail running.
impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Wait until the slot is active (the process is streaming).
pub async fn wait_slot_active(
    db: &tokio_postgres::Client,
    slot: &str,
    p: &mut Process,
) -> Result<()> {
    wait_slot(db, slot, || p.check_alive()).await
}

/// Wait (up to 60 s) until a slot is active, checking `alive` between polls so a consumer that died
/// fails the wait at once.
pub async fn wait_slot(
    db: &tokio_postgres::Client,
    slot: &str,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = db
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        if r.is_some_and(|r| r.get::<_, bool>(0)) {
            return Ok(());
        }
        alive()?;
        if Instant::now() > deadline {
            bail!("slot {slot} did not become active within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Drop a replication slot once nothing streams from it (retrying while its walsender exits).
pub async fn drop_slot(db: &tokio_postgres::Client, slot: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = db
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("drop slot {slot}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
