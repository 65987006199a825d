//! Measurement 4, cost to the source: pgbench TPS on a small admin table (update / insert / delete mix)
//! with (a) no audit, (b) waltrail attached, (c) an AFTER ROW trigger writing old/new jsonb to an audit
//! table, and, to tell the cost of logical decoding itself from the cost of sharing two cores with
//! waltrail and ClickHouse, (b0) the same publication, slot and REPLICA IDENTITY FULL read by
//! pg_recvlogical to /dev/null.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::pin::{self, Split};
use crate::procfs::cpu_seconds;
use crate::servers::{pg_bin, ClickHouse, PgCluster};
use crate::waltrail::{self as wt, Process, Setup};
use crate::Opts;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    DecodeOnly,
    Waltrail,
    Trigger,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Plain => "(a) no audit",
            Mode::DecodeOnly => "(b0) slot + pg_recvlogical → /dev/null",
            Mode::Waltrail => "(b) waltrail attached",
            Mode::Trigger => "(c) trigger → audit table",
        }
    }
}

/// Where the processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Everything shares every core.
    Shared,
    /// Postgres (walsender included) and pgbench on one half of the cores, the audit side on the other.
    Pinned,
    /// As Pinned, but the walsender moved to the audit half: a source with a core to spare for it.
    SpareCore,
}

impl Layout {
    pub fn label(self) -> &'static str {
        match self {
            Layout::Shared => "all sharing the cores",
            Layout::Pinned => "source and audit side on separate cores",
            Layout::SpareCore => "separate cores, walsender on a spare core",
        }
    }
    pub fn short(self) -> &'static str {
        match self {
            Layout::Shared => "shared",
            Layout::Pinned => "separate",
            Layout::SpareCore => "separate, spare core for the walsender",
        }
    }
    /// The runs its ratios are against: a spare core changes nothing without a walsender.
    pub fn baseline(self) -> Layout {
        match self {
            Layout::SpareCore => Layout::Pinned,
            l => l,
        }
    }
    fn modes(self) -> &'static [Mode] {
        match self {
            Layout::SpareCore => &[Mode::DecodeOnly, Mode::Waltrail],
            _ => &[Mode::Plain, Mode::DecodeOnly, Mode::Waltrail, Mode::Trigger],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Run {
    pub mode: Mode,
    pub layout: Layout,
    pub tps: f64,
    pub wal_bytes_per_txn: f64,
    /// (b) only: seconds after pgbench ended until every change was queryable.
    pub catch_up_s: Option<f64>,
    pub changes: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    /// (b0), (b): CPU seconds the walsender used during the pgbench run.
    pub walsender_cpu_s: Option<f64>,
    /// /proc/loadavg just before the run (other work on the machine shows there).
    pub load_before: String,
    pub round: u32,
}

#[derive(Debug, Clone)]
pub struct SourceCost {
    pub secs: u64,
    pub clients: u32,
    pub rounds: u32,
    pub split: Option<Split>,
    pub runs: Vec<Run>,
}

impl SourceCost {
    pub fn has(&self, layout: Layout) -> bool {
        self.runs.iter().any(|r| r.layout == layout)
    }
    pub fn has_mode(&self, m: Mode, layout: Layout) -> bool {
        self.of(m, layout).next().is_some()
    }
    fn of(&self, m: Mode, layout: Layout) -> impl Iterator<Item = &Run> {
        self.runs
            .iter()
            .filter(move |r| r.mode == m && r.layout == layout)
    }
    /// Mean TPS of a mode over the rounds.
    pub fn tps(&self, m: Mode, layout: Layout) -> f64 {
        let v: Vec<f64> = self.of(m, layout).map(|r| r.tps).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
    pub fn wal_per_txn(&self, m: Mode, layout: Layout) -> f64 {
        let v: Vec<f64> = self.of(m, layout).map(|r| r.wal_bytes_per_txn).collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    }
    pub fn walsender_cpu(&self, m: Mode, layout: Layout) -> Option<f64> {
        let v: Vec<f64> = self
            .of(m, layout)
            .filter_map(|r| r.walsender_cpu_s)
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
    pub fn waltrail_runs(&self) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(|r| r.mode == Mode::Waltrail)
    }
    pub fn spread(&self, m: Mode, layout: Layout) -> (f64, f64) {
        let v: Vec<f64> = self.of(m, layout).map(|r| r.tps).collect();
        (
            v.iter().cloned().fold(f64::INFINITY, f64::min),
            v.iter().cloned().fold(0.0, f64::max),
        )
    }
}

const DB: &str = "src";
const ROWS: u32 = 100_000;

const TABLE: &str = r#"[[tables]]
table = "admin_keys"
resource_type = "RESOURCE_TYPE_API_KEY"
organization_column = "org_id"
project_column = "project_id"
display_column = "name"
"#;

pub async fn run(opts: &Opts, pg: &PgCluster, ch: &ClickHouse) -> Result<SourceCost> {
    pg.create_db(DB).await?;
    let dir = opts.work_dir.join("pgbench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("update.sql"),
        format!(
            "\\set id random(1, {ROWS})\n\
             UPDATE admin_keys SET name = 'key-' || :id || '-' || :client_id, scopes = jsonb_set(scopes, '{{n}}', to_jsonb((:id)::int)), updated_at = now() WHERE id = :id;\n"
        ),
    )?;
    std::fs::write(
        dir.join("insert.sql"),
        format!(
            "\\set id random(1, {ROWS})\n\
             INSERT INTO admin_keys (id, org_id, project_id, name, scopes, created_by) VALUES (:id, 'org' || lpad((:id % 100)::text, 3, '0'), 'p' || (:id % 10), 'key-' || :id, '{{\"scopes\": [\"read\"], \"n\": 0, \"ttl\": 3600}}', 'acct' || :client_id) ON CONFLICT (id) DO NOTHING;\n"
        ),
    )?;
    std::fs::write(
        dir.join("delete.sql"),
        format!("\\set id random(1, {ROWS})\nDELETE FROM admin_keys WHERE id = :id;\n"),
    )?;
    let split = Split::halves();
    let mut layouts = Vec::new();
    if opts.pgbench_layouts.contains("shared") {
        layouts.push(Layout::Shared);
    }
    if split.is_some() && opts.pgbench_layouts.contains("pinned") {
        layouts.push(Layout::Pinned);
    }
    if split.is_some() && opts.pgbench_layouts.contains("spare") {
        layouts.push(Layout::SpareCore);
    }
    let mut runs = Vec::new();
    for &layout in &layouts {
        let sp = if layout == Layout::Shared {
            None
        } else {
            split.as_ref()
        };
        if let Some(s) = sp {
            eprintln!("  [pgbench] {}: {}", layout.label(), s.describe());
            if let Some(pid) = pg.postmaster_pid() {
                pin::pin_tree(pid, &s.source);
            }
            pin::pin_process(ch.pid().unwrap_or(0), &s.audit);
        }
        for round in 0..opts.pgbench_rounds {
            // Every other round in reverse order, so a machine that warms up or slows down favours no mode.
            let mut modes = layout.modes().to_vec();
            if round % 2 == 1 {
                modes.reverse();
            }
            for mode in modes {
                let load_before = crate::procfs::loadavg();
                eprintln!(
                    "  [pgbench round {}, {}] {} for {} s …",
                    round + 1,
                    layout.short(),
                    mode.label(),
                    opts.pgbench_secs
                );
                let mut r = one(opts, pg, ch, mode, &dir, layout, sp).await?;
                eprintln!(
                    "  [pgbench] {}: {:.0} tps (load before {load_before})",
                    mode.label(),
                    r.tps
                );
                r.load_before = load_before;
                r.round = round + 1;
                runs.push(r);
            }
        }
        if sp.is_some() {
            let all = pin::all_cpus();
            if let Some(pid) = pg.postmaster_pid() {
                pin::pin_tree(pid, &all);
            }
            pin::pin_process(ch.pid().unwrap_or(0), &all);
        }
    }
    Ok(SourceCost {
        secs: opts.pgbench_secs,
        clients: opts.pgbench_clients,
        rounds: opts.pgbench_rounds,
        split,
        runs,
    })
}

async fn reset(db: &tokio_postgres::Client) -> Result<()> {
    db.batch_execute(&format!(
        r#"DROP TABLE IF EXISTS admin_keys; DROP TABLE IF EXISTS audit_log; DROP PUBLICATION IF EXISTS pub_src;
           DROP FUNCTION IF EXISTS audit_trigger();
           CREATE TABLE admin_keys (id bigint PRIMARY KEY, org_id text NOT NULL, project_id text, name text NOT NULL,
                                    scopes jsonb NOT NULL, created_by text, updated_at timestamptz NOT NULL DEFAULT now());
           INSERT INTO admin_keys SELECT g, 'org' || lpad((g % 100)::text, 3, '0'), 'p' || (g % 10), 'key-' || g,
                  '{{"scopes": ["read", "write"], "n": 0, "ttl": 3600}}', 'acct' || (g % 50), now()
             FROM generate_series(1, {ROWS}, 2) g;"#
    ))
    .await
    .context("resetting the pgbench table")?;
    db.batch_execute("VACUUM ANALYZE admin_keys").await?;
    db.batch_execute("CHECKPOINT").await?;
    Ok(())
}

const TRIGGER: &str = r#"
CREATE TABLE audit_log (id bigserial PRIMARY KEY, table_name text NOT NULL, op text NOT NULL, old_row jsonb, new_row jsonb,
                        changed_at timestamptz NOT NULL DEFAULT now(), txid bigint NOT NULL DEFAULT txid_current(),
                        db_user text NOT NULL DEFAULT current_user);
CREATE FUNCTION audit_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO audit_log (table_name, op, old_row, new_row)
  VALUES (TG_TABLE_NAME, TG_OP,
          CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END,
          CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END);
  RETURN NULL;
END $$;
CREATE TRIGGER admin_keys_audit AFTER INSERT OR UPDATE OR DELETE ON admin_keys
  FOR EACH ROW EXECUTE FUNCTION audit_trigger();
"#;

async fn changes_so_far(db: &tokio_postgres::Client) -> Result<u64> {
    Ok(db
        .query_one(
            "SELECT (n_tup_ins + n_tup_upd + n_tup_del)::bigint FROM pg_stat_user_tables WHERE relname = 'admin_keys'",
            &[],
        )
        .await?
        .get::<_, i64>(0) as u64)
}

async fn one(
    opts: &Opts,
    pg: &PgCluster,
    ch: &ClickHouse,
    mode: Mode,
    dir: &std::path::Path,
    layout: Layout,
    split: Option<&Split>,
) -> Result<Run> {
    let db = pg.client(DB).await?;
    reset(&db).await?;
    let mut waltrail = None;
    let mut recv = None;
    let ch_db = "src_audit";
    match mode {
        Mode::Plain => {}
        Mode::Trigger => db.batch_execute(TRIGGER).await?,
        Mode::DecodeOnly => {
            db.batch_execute(
                "ALTER TABLE admin_keys REPLICA IDENTITY FULL; CREATE PUBLICATION pub_src FOR TABLE admin_keys",
            )
            .await?;
            db.batch_execute("SELECT pg_create_logical_replication_slot('src_recv', 'pgoutput')")
                .await?;
            let mut cmd = crate::throughput::recvlogical_cmd(pg, DB, "src_recv", "pub_src")?;
            if let Some(s) = split {
                pin::pin_command(&mut cmd, &s.audit);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start pg_recvlogical")?;
            recv = Some(child);
            wt::wait_slot(&db, "src_recv", || Ok(())).await?;
        }
        Mode::Waltrail => {
            ch.reset_db(ch_db).await?;
            let setup = Setup {
                name: "src",
                db: DB,
                slot: "src_waltrail",
                publication: "pub_src",
                ch_db,
                tables: TABLE,
            };
            let cfg = wt::write_config(&opts.work_dir, pg, ch, &setup)?;
            wt::migrate(&cfg)?;
            let mut p = Process::spawn_pinned(
                &cfg,
                opts.work_dir.join("waltrail-src.log"),
                split.map(|s| s.audit.as_slice()),
            )?;
            wt::wait_slot_active(&db, "src_waltrail", &mut p).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            waltrail = Some(p);
        }
    }
    let changes0 = changes_so_far(&db).await?;
    let slot = match mode {
        Mode::DecodeOnly => Some("src_recv"),
        Mode::Waltrail => Some("src_waltrail"),
        _ => None,
    };
    let walsender = match slot {
        Some(slot) => crate::throughput::slot_pid(&db, slot)
            .await?
            .map(|pid| (pid as u32, cpu_seconds(pid as u32))),
        None => None,
    };
    if let (Layout::SpareCore, Some((pid, _)), Some(s)) = (layout, walsender, split) {
        pin::pin_process(pid, &s.audit);
    }
    let lsn0: String = db
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await?
        .get(0);
    let mut cmd = Command::new(format!("{}/pgbench", pg_bin()?));
    if let Some(s) = split {
        pin::pin_command(&mut cmd, &s.source);
    }
    let out = cmd
        .args(["-n", "-M", "prepared", "-h", "127.0.0.1"])
        .args(["-p", &pg.port.to_string(), "-U", "postgres"])
        .args(["-c", &opts.pgbench_clients.to_string(), "-j", "2"])
        .args(["-T", &opts.pgbench_secs.to_string()])
        .arg("-f")
        .arg(format!("{}@6", dir.join("update.sql").display()))
        .arg("-f")
        .arg(format!("{}@2", dir.join("insert.sql").display()))
        .arg("-f")
        .arg(format!("{}@2", dir.join("delete.sql").display()))
        .arg(DB)
        .output()
        .context("run pgbench")?;
    let ended = Instant::now();
    let walsender_cpu_s = walsender.map(|(pid, cpu0)| cpu_seconds(pid) - cpu0);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench output: {text}"))?;
    let txns: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1.0);
    let wal: i64 = db
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
            &[&lsn0],
        )
        .await?
        .get(0);
    let mut run = Run {
        mode,
        layout,
        tps,
        wal_bytes_per_txn: wal as f64 / txns.max(1.0),
        catch_up_s: None,
        walsender_cpu_s,
        changes: None,
        peak_rss_kb: None,
        load_before: String::new(),
        round: 0,
    };
    if let Some(mut child) = recv {
        let _ = child.kill();
        let _ = child.wait();
        wt::drop_slot(&db, "src_recv").await?;
    }
    if let Some(mut p) = waltrail {
        // Poll from the moment pgbench ended; the number of changes to wait for is known once pgbench's
        // backends have reported their counts (as they exit), so the samples are checked against it after.
        let chc = ch.client(ch_db);
        let deadline = Instant::now() + Duration::from_secs(opts.timeout_s);
        let mut samples: Vec<(f64, u64)> = Vec::new();
        let mut changes: Option<u64> = None;
        loop {
            let n: u64 = chc
                .query("SELECT count() FROM audit_items")
                .fetch_one()
                .await
                .unwrap_or(0);
            samples.push((ended.elapsed().as_secs_f64(), n));
            if changes.is_none() && ended.elapsed() > Duration::from_millis(1500) {
                changes = Some(changes_so_far(&db).await? - changes0);
            }
            if let Some(c) = changes {
                if n >= c {
                    break;
                }
            }
            p.check_alive()?;
            if Instant::now() > deadline {
                bail!("waltrail stored {n} of {changes:?} changes of the pgbench run");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = changes.unwrap_or(0);
        run.catch_up_s = samples.iter().find(|(_, n)| *n >= c).map(|(t, _)| *t);
        run.changes = Some(c);
        run.peak_rss_kb = Some(p.peak_rss_kb());
        p.stop()?;
        wt::drop_slot(&db, "src_waltrail").await?;
    }
    Ok(run)
}
