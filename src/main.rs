use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::watch;

use waltrail::config::Config;
use waltrail::pipeline::{Pipeline, RunOptions};

#[derive(Parser)]
#[command(
    name = "waltrail",
    version,
    about = "Audit trail from the Postgres WAL into ClickHouse"
)]
struct Cli {
    /// Log format: text or json.
    #[arg(
        long,
        global = true,
        default_value = "text",
        env = "WALTRAIL_LOG_FORMAT"
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Capture changes into ClickHouse until SIGTERM/SIGINT.
    Run {
        #[arg(long, short, env = "WALTRAIL_CONFIG")]
        config: PathBuf,
        /// Start a new slot even though ClickHouse holds items from this source (accepts a gap in the trail).
        #[arg(long)]
        accept_gap: bool,
        /// Take redacted tables' columns as they are now although a redacted column was dropped while new
        /// columns of its type were added: after checking that no secret moved to them.
        #[arg(long)]
        accept_columns: bool,
    },
    /// Serve the REST API and dashboard only (API replicas apart from the single capture process).
    Serve {
        #[arg(long, short, env = "WALTRAIL_CONFIG")]
        config: PathBuf,
    },
    /// Print audit items as plain-language lines, oldest first; --follow keeps printing new ones.
    Log {
        #[arg(long, short, env = "WALTRAIL_CONFIG")]
        config: PathBuf,
        /// Only this organization.
        #[arg(long)]
        org: Option<String>,
        /// How many of the newest items to print first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Keep printing items as they are stored.
        #[arg(long, short)]
        follow: bool,
    },
    /// Print the SHA-256 of an API key, for [[api.keys]] sha256 (reads the key from stdin if not given).
    HashKey { key: Option<String> },
    /// Create or upgrade the ClickHouse schema, then exit.
    Migrate {
        #[arg(long, short, env = "WALTRAIL_CONFIG")]
        config: PathBuf,
        /// Print every statement of the schema for the configured layout (one server or the cluster),
        /// without connecting: for review, or to apply by hand.
        #[arg(long)]
        print: bool,
    },
    /// Print every statement waltrail sends to ClickHouse besides the schema's, as the code builds it for
    /// the configured layout with representative values, one JSON object a line, without connecting
    /// (for scripts/check-current-clickhouse).
    #[command(hide = true)]
    SqlShapes {
        #[arg(long, short, env = "WALTRAIL_CONFIG")]
        config: PathBuf,
    },
    /// Check Postgres and ClickHouse for everything capture needs; print each problem with its fix.
    Check {
        #[arg(long, short, env = "WALTRAIL_CONFIG")]
        config: PathBuf,
    },
    /// Verify the hash chains and signed checkpoints: of an NDJSON export offline (--export with
    /// --public-key; its own signature too), or of the store itself (--config with --org). Exit 0 only
    /// when intact and proven whole; 2 when nothing failed but not everything is proven (a filtered or
    /// unsigned export) unless --partial; 1 on a failure.
    Verify {
        /// An NDJSON export (GET .../audit_logs/export?format=ndjson).
        #[arg(long, requires = "public_key", conflicts_with = "config")]
        export: Option<PathBuf>,
        /// A file of trusted public keys, one `ed25519:<hex>` per line (`waltrail keys` prints them).
        #[arg(long)]
        public_key: Option<PathBuf>,
        #[arg(long, short, requires = "org")]
        config: Option<PathBuf>,
        /// The organization whose chains (its own and the platform chain) are checked.
        #[arg(long)]
        org: Option<String>,
        /// Only items committed at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only items committed before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Checkpoints kept outside the store (`integrity.checkpoint_file`): the store is held to them.
        #[arg(long, requires = "config")]
        checkpoints: Option<PathBuf>,
        /// Accept chains an export does not hold whole (it says it is filtered, or the platform chain beside
        /// items of no organization): checked only where their items are. Without it such an export exits 2.
        #[arg(long, requires = "export")]
        partial: bool,
        /// Accept an export that carries no signature (written by a server without the signing key): its
        /// chains are checked, but nothing proves which chains, or which part of them, it was meant to hold.
        /// Without it such an export exits 2, with --partial too.
        #[arg(long, requires = "export")]
        unsigned: bool,
    },
    /// Print the public keys checkpoints are verified with (current and trusted), for customers to keep.
    Keys {
        #[arg(long, short, env = "WALTRAIL_CONFIG")]
        config: PathBuf,
    },
    /// Write a new checkpoint signing key (Ed25519 seed, mode 0600) and print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Batches are large buffers (`capture.batch_max_bytes`) allocated and freed over and over, on several
/// threads. glibc raises its mmap threshold after the first such buffer is freed and then keeps later ones
/// in per-thread heaps, where freed space is not returned: the process held about five batches' worth at
/// its peak. A fixed threshold keeps every large buffer mapped on its own and unmapped when freed, so
/// memory follows what is live.
fn return_large_buffers_at_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn main() -> ExitCode {
    return_large_buffers_at_once();
    let cli = Cli::parse();
    init_logs(&cli.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A service gets a soft open-file limit of 1024 by default, far under its hard limit: `run` and `serve`
/// raise it to the hard limit, so a connection flood cannot take the descriptors capture needs (the API's
/// connection cap is sized under the result, see `api::connection_cap`).
fn raise_open_file_limit() {
    match waltrail::api::raise_open_file_limit() {
        Ok((before, after)) if after > before => {
            tracing::info!(
                before,
                after,
                "raised the open-file limit to its hard limit"
            )
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

async fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    if matches!(cmd, Command::Run { .. } | Command::Serve { .. }) {
        raise_open_file_limit();
    }
    match cmd {
        Command::Run {
            config,
            accept_gap,
            accept_columns,
        } => {
            let cfg = Arc::new(Config::load(&config)?);
            let (tx, rx) = watch::channel(false);
            let tx = Arc::new(tx);
            let stop = tx.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("stop requested: finishing the batch and acknowledging");
                let _ = stop.send(true);
            });
            let pipeline = Pipeline::new(
                cfg.clone(),
                RunOptions {
                    accept_gap,
                    accept_columns,
                },
            );
            let mut api = None;
            if cfg.api.enabled {
                let state =
                    waltrail::api::AppState::new(cfg.clone(), Some(pipeline.metrics.clone()))?;
                let rx = rx.clone();
                let threads = cfg.api.threads;
                let nice = cfg.api.nice;
                // The API runs on a runtime of its own, on `api.threads` threads: however busy clients
                // keep it, capture's tasks never wait in the API's queues, and the API can use at most
                // that many cores' worth of threads.
                let thread = std::thread::Builder::new()
                    .name("waltrail-api".into())
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(threads)
                            .thread_name("waltrail-api")
                            .on_thread_start(move || lower_priority(nice))
                            .enable_all()
                            .build();
                        // Logged at once: capture goes on without the API, but the operator must know.
                        match rt {
                            Ok(rt) => {
                                if let Err(e) = rt.block_on(waltrail::api::serve(state, rx)) {
                                    tracing::error!("API server stopped: {e:#}");
                                }
                            }
                            Err(e) => tracing::error!("cannot start the API's runtime: {e}"),
                        }
                    })
                    .context("starting the API's thread")?;
                api = Some(tokio::task::spawn_blocking(move || thread.join()));
            }
            // Retention drops partitions only once capture's start checks passed: a refused start (a trail
            // not as capture signed it, a gap) asks the operator to look at the store as it is.
            let metrics = pipeline.metrics.clone();
            let retention = waltrail::store::retention::run(
                waltrail::store::client(&cfg.clickhouse),
                waltrail::store::cluster::Layout::of(&cfg.clickhouse),
                cfg.retention.days,
                std::time::Duration::from_secs(cfg.retention.check_interval_s),
                rx.clone(),
            );
            let mut stopped = rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = metrics.started.notified() => retention.await,
                    _ = stopped.changed() => {}
                }
            });
            let result = pipeline.run(rx).await;
            // Capture is over (stopped, or failed for good): the API and retention stop with it, so a
            // process whose capture died does not go on looking alive.
            let _ = tx.send(true);
            if let Some(api) = api {
                let _ = api.await;
            }
            result?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve { config } => {
            let cfg = Arc::new(Config::load(&config)?);
            let (tx, rx) = watch::channel(false);
            tokio::spawn(async move {
                wait_for_signal().await;
                let _ = tx.send(true);
            });
            let state = waltrail::api::AppState::new(cfg, None)?;
            waltrail::api::serve(state, rx).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Log {
            config,
            org,
            limit,
            follow,
        } => {
            let cfg = Config::load(&config)?;
            let ch = waltrail::store::client(&cfg.clickhouse);
            let days = cfg.retention.days;
            let limit = limit.clamp(1, 10_000);
            let mut stop = std::pin::pin!(wait_for_signal());
            // Following starts at each source's newest item, taken before the newest items are printed: what
            // is stored meanwhile is printed once, by one or the other.
            let mut cursor = match follow {
                true => Some(
                    waltrail::store::query::follow_cursor(&ch, days, org.as_deref())
                        .await
                        .context("reading where each source stands in ClickHouse")?,
                ),
                false => None,
            };
            let rows = waltrail::store::query::tail(&ch, days, org.as_deref(), None, limit)
                .await
                .context("reading audit items from ClickHouse")?;
            // A closed pipe (| head) ends the listing, not the process with a panic.
            let print = |r: &waltrail::store::query::ReadRow| {
                use std::io::Write;
                writeln!(std::io::stdout(), "{}", log_line(r)).is_ok()
            };
            for r in &rows {
                if !print(r) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let Some(cursor) = &mut cursor else {
                return Ok(ExitCode::SUCCESS);
            };
            waltrail::store::query::advance(cursor, &rows);
            let mut wait = std::time::Duration::from_secs(1);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut stop => return Ok(ExitCode::SUCCESS),
                }
                // Following outlasts a ClickHouse restart: an error is said and the read tried again (the
                // cursor stays where it was, so nothing is skipped or printed twice).
                let rows = match waltrail::store::query::tail(
                    &ch,
                    days,
                    org.as_deref(),
                    Some(cursor),
                    limit,
                )
                .await
                {
                    Ok(r) => {
                        wait = std::time::Duration::from_secs(1);
                        r
                    }
                    Err(e) => {
                        wait = (wait * 2).min(std::time::Duration::from_secs(30));
                        eprintln!(
                            "waltrail log: reading from ClickHouse failed ({e:#}); retrying in {} s",
                            wait.as_secs()
                        );
                        continue;
                    }
                };
                let n = waltrail::store::query::advance(cursor, &rows);
                for r in &rows[..n] {
                    if !print(r) {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                if n == 0 && !rows.is_empty() {
                    return Err(waltrail::store::query::TooManySources.into());
                }
            }
        }
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_line(&mut s)
                        .context("reading the key from stdin")?;
                    s.trim().to_owned()
                }
            };
            if key.is_empty() {
                anyhow::bail!("empty key");
            }
            println!("{}", waltrail::api::auth::sha256_hex(&key));
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config, print } => {
            let cfg = Config::load(&config)?;
            if print {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                for stmt in waltrail::store::schema::all_statements(&cfg.clickhouse)? {
                    // A closed pipe (| head) ends the listing, not the process with a panic.
                    if writeln!(out, "{stmt};\n").is_err() {
                        break;
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let applied = waltrail::store::schema::migrate(&cfg.clickhouse).await?;
            if applied.is_empty() {
                println!("ClickHouse schema is up to date");
            } else {
                println!("applied migrations {applied:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::SqlShapes { config } => {
            use std::io::Write;
            let cfg = Config::load(&config)?;
            let mut out = std::io::stdout().lock();
            for shape in waltrail::store::shapes::all(&cfg.clickhouse) {
                // As for `migrate --print`: a closed pipe ends the listing.
                if writeln!(out, "{}", serde_json::to_string(&shape)?).is_err() {
                    break;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            export,
            public_key,
            config,
            org,
            since,
            until,
            checkpoints,
            partial,
            unsigned,
        } => {
            let verdict = match (export, config) {
                (Some(file), _) => {
                    let keys_text = std::fs::read_to_string(
                        public_key.as_deref().unwrap_or(std::path::Path::new("")),
                    )
                    .context("reading --public-key")?;
                    let keys = keys_text
                        .lines()
                        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                        .map(waltrail::audit::chain::PublicKey::parse)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| anyhow::anyhow!("--public-key: {e}"))?;
                    let f = std::fs::File::open(&file)
                        .with_context(|| format!("opening {}", file.display()))?;
                    use std::io::BufRead;
                    waltrail::audit::chain::verify_export(std::io::BufReader::new(f).lines(), &keys)
                        .map_err(|e| anyhow::anyhow!(e))?
                }
                (None, Some(config)) => {
                    let cfg = Config::load(&config)?;
                    let (_, keys) = waltrail::audit::chain::configured_keys(&cfg)
                        .map_err(|e| anyhow::anyhow!("integrity: {e}"))?;
                    let time = |s: &Option<String>, what: &str| -> anyhow::Result<Option<i64>> {
                        s.as_deref()
                            .map(|t| {
                                chrono::DateTime::parse_from_rfc3339(t)
                                    .map(|d| d.timestamp_micros())
                                    .with_context(|| {
                                        format!("--{what} {t:?} is not an RFC 3339 time")
                                    })
                            })
                            .transpose()
                    };
                    let external = match &checkpoints {
                        Some(path) => {
                            let text = std::fs::read_to_string(path)
                                .with_context(|| format!("reading {}", path.display()))?;
                            let mut found = Vec::new();
                            for (n, l) in text
                                .lines()
                                .enumerate()
                                .filter(|(_, l)| !l.trim().is_empty())
                            {
                                match serde_json::from_str::<waltrail::audit::chain::ExportLine>(l) {
                                    Ok(e) => found.push(e.checkpoint.ok_or_else(|| {
                                        anyhow::anyhow!(
                                            "{} line {}: not a checkpoint line: {l:.80}",
                                            path.display(),
                                            n + 1
                                        )
                                    })?),
                                    // A write cut short leaves a fragment, which proves nothing either way:
                                    // said, and the file's whole lines are still checked.
                                    Err(_) => eprintln!(
                                        "{} line {}: not a whole checkpoint line (a write cut short?): skipped",
                                        path.display(),
                                        n + 1
                                    ),
                                }
                            }
                            found
                        }
                        None => Vec::new(),
                    };
                    let ch = waltrail::store::client(&cfg.clickhouse);
                    let reports = waltrail::store::integrity::verify_org_with(
                        &ch,
                        org.as_deref().unwrap_or(""),
                        // Without --since: what retention keeps (older items may be gone by design).
                        time(&since, "since")?.or(Some(waltrail::store::query::retained_since_us(
                            cfg.retention.days,
                        ))),
                        time(&until, "until")?,
                        &keys,
                        &external,
                    )
                    .await
                    .context("reading the trail from ClickHouse")?;
                    waltrail::audit::chain::ExportVerdict {
                        reports,
                        ..Default::default()
                    }
                }
                (None, None) => anyhow::bail!(
                    "give --export FILE --public-key FILE, or --config FILE --org ORG"
                ),
            };
            Ok(print_verification(&verdict, partial, unsigned))
        }
        Command::Keys { config } => {
            let cfg = Config::load(&config)?;
            let (signing, keys) = waltrail::audit::chain::configured_keys(&cfg)
                .map_err(|e| anyhow::anyhow!("integrity: {e}"))?;
            if signing.is_none() {
                eprintln!("no signing key configured (integrity.signing_key_file or WALTRAIL_SIGNING_KEY): checkpoints are off; the chain still works");
            }
            for k in keys {
                let role = if k.exports_only {
                    " (verifies exports only)"
                } else {
                    ""
                };
                println!("{}  # key id {}{role}", k.to_text(), k.key_id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { out } => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let seed = waltrail::audit::chain::new_seed_hex().map_err(|e| anyhow::anyhow!(e))?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&out)
                .with_context(|| {
                    format!(
                        "creating {} (an existing key is never overwritten)",
                        out.display()
                    )
                })?;
            f.write_all(format!("{seed}\n").as_bytes())?;
            let key = waltrail::audit::chain::SigningKey::from_hex(&seed)
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("{}  # key id {}", key.public_key().to_text(), key.key_id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let cfg = Config::load_for_check(&config)?;
            let failed = waltrail::check::print(&waltrail::check::run(&cfg).await);
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// One line per chain; returns success only when every chain is intact.
/// Exit 0 only when every chain is intact and whole; 1 when something fails; 2 when nothing fails but a
/// chain could only be checked where its items are (unless `accept_partial`): not proven, so not a 0.
fn print_verification(
    verdict: &waltrail::audit::chain::ExportVerdict,
    accept_partial: bool,
    accept_unsigned: bool,
) -> ExitCode {
    let reports = &verdict.reports;
    if reports.is_empty() && verdict.failure.is_none() {
        // Nothing failed, and nothing is proven either (an empty day, or everything removed): not the
        // status of tampering found.
        println!("PART  nothing to verify: no chained items or checkpoints in that range (nothing failed, nothing is proven)");
        return ExitCode::from(2);
    }
    let mut ok = true;
    let mut unproven = false;
    let mut unsigned = false;
    if let Some(f) = &verdict.failure {
        ok = false;
        println!("FAIL  (the export): {}", terminal_safe(f));
    }
    if let Some(seal) = &verdict.sealed {
        println!(
            "ok    (the export): signed by key {} at {}: exactly the {} lines the server sent for organization \
             {:?}, filters {:?}",
            seal.key_id,
            waltrail::api::timestamp(seal.produced_at_us),
            seal.lines,
            seal.organization_id,
            seal.query
        );
    }
    if let Some(why) = &verdict.unsigned {
        unsigned = true;
        println!("PART  (the export): {why}");
    }
    if verdict.exports_only {
        // Whoever holds that key could have cut the export anywhere (at a checkpoint, a whole chain left
        // out): it proves what it holds up to its checkpoints, never that it holds everything.
        unproven = true;
        println!(
            "PART  (the export): signed with an export-only key, which vouches for what the export holds up to \
             its checkpoints, not that it holds every item (whoever has that key could have left items or chains \
             out); verify the store, or an export signed with a checkpoint key, to prove it whole"
        );
    }
    for r in reports {
        // Chain names carry organization ids from the platform's rows (or a file): shown, never obeyed.
        let chain = terminal_safe(&r.chain);
        let verified = match r.verified_until_us {
            Some(t) => format!(
                "verified up to the checkpoint at {} (chain position {})",
                waltrail::api::timestamp(t),
                r.verified_seq
            ),
            None => "no checkpoint covers it (chain intact, not signed)".to_owned(),
        };
        match &r.failure {
            None if r.unjudged > 0 && verdict.exports_only => {
                unproven = true;
                println!(
                    "PART  {}: {} items (chain positions {}..{}) intact where present, {}; {} checkpoints; {} chain \
                     positions are not proven: not in this export, or after the last checkpoint, which only the \
                     export-only key that signed the export vouches for; verify the store, or an unfiltered \
                     export signed with a checkpoint key",
                    chain, r.items, r.first_seq, r.last_seq, verified, r.checkpoints, r.unjudged
                )
            }
            None if r.unjudged > 0 => {
                unproven = true;
                println!(
                    "PART  {}: {} items (chain positions {}..{}) intact where present, {}; {} checkpoints; \
                     {} chain positions are not in this export, so whether items were deleted there is not \
                     proven (the export says it does not hold this chain whole: filtered, or beside items of \
                     no organization); verify the store, or an unfiltered export, for continuity",
                    chain, r.items, r.first_seq, r.last_seq, verified, r.checkpoints, r.unjudged
                )
            }
            None if r.unproven.is_some() => {
                unproven = true;
                println!(
                    "PART  {}: {} items (chain positions {}..{}); {} checkpoints; {}",
                    chain,
                    r.items,
                    r.first_seq,
                    r.last_seq,
                    r.checkpoints,
                    r.unproven.as_deref().unwrap_or_default()
                )
            }
            None => println!(
                "ok    {}: {} items (chain positions {}..{}), {}; {} checkpoints",
                chain, r.items, r.first_seq, r.last_seq, verified, r.checkpoints
            ),
            Some(f) => {
                ok = false;
                println!("FAIL  {}: {}", chain, terminal_safe(f));
            }
        }
    }
    if !ok {
        ExitCode::FAILURE
    } else if unsigned && !accept_unsigned {
        println!("not proven whole (exit 2): the export is not signed; --unsigned accepts that");
        ExitCode::from(2)
    } else if unproven && !accept_partial {
        println!("not proven whole (exit 2); --partial accepts chains checked only where their items are");
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn log_line(r: &waltrail::store::query::ReadRow) -> String {
    let how = r.source.strip_prefix("AUDIT_SOURCE_").unwrap_or(&r.source);
    let mut line = format!(
        "{}  {}  [{} via {}, actor known from {}",
        waltrail::api::timestamp(r.occurred_at_us),
        r.summary,
        r.principal_type,
        how,
        if r.actor_source.is_empty() {
            "?"
        } else {
            &r.actor_source
        }
    );
    if r.platform_wide != 0 {
        line.push_str(", every organization");
    }
    if !r.organization_id.is_empty() {
        line.push_str(&format!(", org {}", r.organization_id));
    }
    if !r.project_id.is_empty() {
        line.push_str(&format!(", project {}", r.project_id));
    }
    line.push(']');
    if !r.changed_fields.is_empty() && r.action != "AUDIT_ACTION_CREATED" {
        line.push_str(&format!(" fields: {}", r.changed_fields.join(", ")));
    }
    terminal_safe(&line)
}

/// Row text reaches a terminal: control characters (escape sequences that could rewrite the screen or the
/// title, fake a line, or hide one) are shown escaped, never sent.
fn terminal_safe(s: &str) -> String {
    s.chars()
        .flat_map(|c| -> Box<dyn Iterator<Item = char>> {
            if c.is_control() {
                Box::new(c.escape_default())
            } else {
                Box::new(std::iter::once(c))
            }
        })
        .collect()
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        r = tokio::signal::ctrl_c() => { r.context("listening for SIGINT").ok(); }
    }
}

/// Raise the calling thread's nice value by `by` (Linux: a thread id given to setpriority names that
/// thread alone). Best effort: a failure leaves the thread at the process's priority, and says so.
fn lower_priority(by: u8) {
    if by == 0 {
        return;
    }
    // SAFETY: gettid and getpriority/setpriority take and return plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, tid);
        let target = (current + by as i32).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, tid, target) != 0 {
            tracing::warn!(
                "could not lower the API thread's CPU priority: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn control_characters_never_reach_the_terminal() {
        let s = super::terminal_safe("a\x1b]0;owned\x07b\nc\u{9b}2J");
        assert!(!s.chars().any(char::is_control), "{s:?}");
        assert!(s.contains("owned"), "the text is still readable");
    }
}
