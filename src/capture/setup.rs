//! Publication and slot setup, table introspection, and the preflight checks of `waltrail check`.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeSet, HashMap};
use tokio_postgres::Client;

use crate::audit::mapping::TableMapping;
use crate::audit::value::PgTypeRow;
use crate::capture::replication::{quote_ident, quote_literal, ReplicationConnection};
use crate::capture::Lsn;
use crate::config::{split_table, Config};

/// Open an ordinary SQL connection (catalog reads, setup). The connection task ends with the client.
pub async fn connect_sql(cfg: &Config) -> Result<Client> {
    let pg = cfg.pg_config()?;
    let fail = |e: tokio_postgres::Error| {
        anyhow!(
            "cannot connect to Postgres ({}): {}",
            describe_target(cfg),
            pg_error_text(&e)
        )
    };
    let client = match cfg.pg_params()?.tls {
        Some(tls) => {
            let (client, conn) = pg
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    (*tls).clone(),
                ))
                .await
                .map_err(fail)?;
            tokio::spawn(watch_connection(conn));
            client
        }
        None => {
            let (client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(fail)?;
            tokio::spawn(watch_connection(conn));
            client
        }
    };
    Ok(client)
}

async fn watch_connection<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(
    conn: F,
) {
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "Postgres SQL connection ended");
    }
}

fn describe_target(cfg: &Config) -> String {
    match cfg.pg_params() {
        Ok(p) => format!(
            "{:?} port {} database {} user {}",
            p.host, p.port, p.dbname, p.user
        ),
        Err(e) => e.to_string(),
    }
}

/// tokio-postgres hides the server's message behind "db error"; show it.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} ({})", db.message(), db.code().code());
            if let Some(h) = db.hint() {
                s.push_str("; hint: ");
                s.push_str(h);
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// What the catalog says of one configured table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub schema: String,
    pub table: String,
    pub exists: bool,
    /// 'd', 'n', 'f' or 'i'.
    pub replica_identity: char,
    pub primary_key: Vec<String>,
    pub columns: Vec<String>,
    pub owned_by_us: bool,
    /// Partitions (of a partitioned table) not at REPLICA IDENTITY FULL: each partition has its own.
    pub partitions_not_full: Vec<(String, String)>,
}

pub async fn table_info(client: &Client, schema: &str, table: &str) -> Result<TableInfo> {
    let row = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, pg_has_role(c.relowner, 'USAGE') AS owned \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &table],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the catalog for {schema}.{table}: {}",
                pg_error_text(&e)
            )
        })?;
    let Some(row) = row else {
        return Ok(TableInfo {
            schema: schema.into(),
            table: table.into(),
            exists: false,
            replica_identity: 'd',
            primary_key: vec![],
            columns: vec![],
            owned_by_us: false,
            partitions_not_full: vec![],
        });
    };
    let oid: u32 = row.get(0);
    let ident: String = row.get(1);
    let owned: bool = row.get(2);
    let pk = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the primary key of {schema}.{table}: {}",
                pg_error_text(&e)
            )
        })?;
    let cols = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| anyhow!("reading the columns of {schema}.{table}: {}", pg_error_text(&e)))?;
    let partitions = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_partition_tree($1::oid) t \
             JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE t.relid <> $1::oid AND c.relkind = 'r' AND c.relreplident <> 'f'",
            &[&oid],
        )
        .await
        .map_err(|e| {
            anyhow!(
                "reading the partitions of {schema}.{table}: {}",
                pg_error_text(&e)
            )
        })?;
    Ok(TableInfo {
        partitions_not_full: partitions.iter().map(|r| (r.get(0), r.get(1))).collect(),
        schema: schema.into(),
        table: table.into(),
        exists: true,
        replica_identity: ident.chars().next().unwrap_or('d'),
        primary_key: pk.iter().map(|r| r.get(0)).collect(),
        columns: cols.iter().map(|r| r.get(0)).collect(),
        owned_by_us: owned,
    })
}

pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Resolve every configured table into a mapping, failing with the fix when a table is unusable.
pub async fn build_mappings(
    cfg: &Config,
    client: &Client,
) -> Result<(Vec<TableMapping>, Vec<TableInfo>)> {
    let mut mappings = Vec::new();
    let mut infos = Vec::new();
    for t in &cfg.tables {
        let (schema, table) = split_table(&t.table);
        let info = table_info(client, schema, table).await?;
        if !info.exists {
            bail!(
                "configured table {schema}.{table} does not exist in database {}; fix the [[tables]] entry or create the table",
                cfg.pg_params()?.dbname
            );
        }
        if info.primary_key.is_empty() && t.id_columns.is_empty() {
            bail!(
                "table {schema}.{table} has no primary key: add one, or set id_columns in its [[tables]] entry"
            );
        }
        for c in t
            .id_columns
            .iter()
            .chain(&t.display_column)
            .chain(&t.organization_column)
            .chain(&t.project_column)
            .chain(&t.soft_delete_column)
        {
            if !info.columns.contains(c) {
                bail!("table {schema}.{table} has no column {c:?} named in its [[tables]] entry");
            }
        }
        mappings.push(TableMapping::new(t.clone(), info.primary_key.clone()));
        infos.push(info);
    }
    Ok((mappings, infos))
}

/// Set REPLICA IDENTITY FULL where the config allows and the table is not at it.
pub async fn ensure_replica_identity(
    cfg: &Config,
    client: &Client,
    infos: &[TableInfo],
) -> Result<()> {
    for info in infos {
        // A partitioned table's partitions each have their own replica identity: set it on the leaves too.
        let mut targets: Vec<(String, String)> = info.partitions_not_full.clone();
        if info.replica_identity != 'f' {
            targets.push((info.schema.clone(), info.table.clone()));
        }
        for (schema, table) in targets {
            set_full(cfg, client, &schema, &table).await?;
        }
    }
    Ok(())
}

async fn set_full(cfg: &Config, client: &Client, schema: &str, table: &str) -> Result<()> {
    let name = format!("{schema}.{table}");
    if !cfg.postgres.set_replica_identity_full {
        tracing::warn!(
            table = %name,
            "table is not at REPLICA IDENTITY FULL: updates will lack before-values and unchanged TOASTed \
             values; run ALTER TABLE ... REPLICA IDENTITY FULL"
        );
        return Ok(());
    }
    let sql = format!(
        "ALTER TABLE {} REPLICA IDENTITY FULL",
        qualified(schema, table)
    );
    client.batch_execute(&sql).await.map_err(|e| {
        anyhow!(
            "setting REPLICA IDENTITY FULL on {name}: {} (run it as the table owner, or set postgres.set_replica_identity_full = false)",
            pg_error_text(&e)
        )
    })?;
    tracing::info!(table = %name, "set REPLICA IDENTITY FULL");
    Ok(())
}

/// The tables the publication must hold: mapped tables and context tables.
pub fn publication_tables(cfg: &Config) -> BTreeSet<(String, String)> {
    cfg.tables
        .iter()
        .map(|t| split_table(&t.table))
        .chain(cfg.context_tables().into_iter().map(split_table))
        .map(|(s, t)| (s.to_owned(), t.to_owned()))
        .collect()
}

/// Create the publication, or make its table list exactly the configured one.
pub async fn ensure_publication(cfg: &Config, client: &Client) -> Result<()> {
    let name = &cfg.postgres.publication;
    let wanted = publication_tables(cfg);
    let list = wanted
        .iter()
        .map(|(s, t)| qualified(s, t))
        .collect::<Vec<_>>()
        .join(", ");
    let exists = client
        .query_opt(
            "SELECT pubtruncate AND pubviaroot FROM pg_publication WHERE pubname = $1",
            &[name],
        )
        .await
        .map_err(|e| anyhow!("reading publication {name}: {}", pg_error_text(&e)))?;
    let Some(row) = exists else {
        if !cfg.postgres.manage_publication {
            bail!(
                "publication {name} does not exist; create it (CREATE PUBLICATION {} FOR TABLE {list} WITH (publish_via_partition_root = true)) or set postgres.manage_publication = true",
                quote_ident(name)
            );
        }
        client
            // Changes to partitions are published as changes of the partitioned table the config names.
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {list} WITH (publish_via_partition_root = true)",
                quote_ident(name)
            ))
            .await
            .map_err(|e| anyhow!("creating publication {name}: {}", pg_error_text(&e)))?;
        tracing::info!(publication = %name, tables = %list, "created publication");
        return Ok(());
    };
    let truncate: bool = row.get(0);
    let current: BTreeSet<(String, String)> = client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
            &[name],
        )
        .await
        .map_err(|e| anyhow!("reading publication {name}: {}", pg_error_text(&e)))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if current == wanted && truncate {
        return Ok(());
    }
    if !cfg.postgres.manage_publication {
        let missing: Vec<_> = wanted
            .difference(&current)
            .map(|(s, t)| format!("{s}.{t}"))
            .collect();
        if !missing.is_empty() {
            bail!(
                "publication {name} lacks {}; add them or set postgres.manage_publication = true",
                missing.join(", ")
            );
        }
        return Ok(());
    }
    client
        .batch_execute(&format!(
            "ALTER PUBLICATION {0} SET TABLE {list}; \
             ALTER PUBLICATION {0} SET (publish = 'insert, update, delete, truncate', publish_via_partition_root = true)",
            quote_ident(name)
        ))
        .await
        .map_err(|e| anyhow!("updating publication {name}: {}", pg_error_text(&e)))?;
    tracing::info!(publication = %name, tables = %list, "publication now holds exactly the configured tables");
    Ok(())
}

#[derive(Debug, Clone)]
pub struct SlotInfo {
    pub plugin: String,
    pub database: String,
    pub active_pid: Option<i32>,
    pub confirmed_flush: Option<Lsn>,
}

pub async fn slot_info(client: &Client, slot: &str) -> Result<Option<SlotInfo>> {
    let row = client
        .query_opt(
            "SELECT coalesce(plugin, '')::text, coalesce(database, '')::text, active_pid, confirmed_flush_lsn::text \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| anyhow!("reading replication slot {slot}: {}", pg_error_text(&e)))?;
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        database: r.get(1),
        active_pid: r.get(2),
        confirmed_flush: r.get::<_, Option<String>>(3).and_then(|s| s.parse().ok()),
    }))
}

/// Why the capture cannot start from the slot.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("replication slot {slot} is in use by another process (pid {pid}); stop the other consumer, or wait until Postgres notices it is gone")]
    InUse { slot: String, pid: i32 },
    #[error("{0}")]
    Refuse(String),
}

/// Make sure the slot exists and is ours to read; returns the position to start from.
pub async fn ensure_slot(
    cfg: &Config,
    client: &Client,
    repl: &mut ReplicationConnection,
    items_from_source: u64,
    accept_gap: bool,
) -> Result<Lsn> {
    let slot = &cfg.postgres.slot;
    let dbname = cfg.pg_params()?.dbname;
    if let Some(info) = slot_info(client, slot).await? {
        if info.plugin != "pgoutput" {
            return Err(SlotError::Refuse(format!(
                "replication slot {slot} uses plugin {:?}, not pgoutput; drop it or configure another postgres.slot",
                info.plugin
            ))
            .into());
        }
        if info.database != dbname {
            return Err(SlotError::Refuse(format!(
                "replication slot {slot} belongs to database {:?}, not {dbname:?}; configure another postgres.slot",
                info.database
            ))
            .into());
        }
        if let Some(pid) = info.active_pid {
            return Err(SlotError::InUse {
                slot: slot.clone(),
                pid,
            }
            .into());
        }
        return Ok(info.confirmed_flush.unwrap_or_default());
    }
    if items_from_source > 0 && !accept_gap {
        return Err(SlotError::Refuse(format!(
            "replication slot {slot} is missing, but ClickHouse already holds {items_from_source} items from this source: \
             the changes made since the slot was lost are gone from the WAL stream, and starting a new slot would hide \
             that gap. Restore the slot if you can; to accept the gap and start from now, run once with --accept-gap"
        ))
        .into());
    }
    if !cfg.postgres.create_slot {
        return Err(SlotError::Refuse(format!(
            "replication slot {slot} does not exist; create it (SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')) or set postgres.create_slot = true"
        ))
        .into());
    }
    if items_from_source > 0 {
        tracing::warn!(slot = %slot, items = items_from_source, "slot was missing: starting a new one from now (--accept-gap); changes made in between are not captured");
    }
    let rows = repl
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
            quote_ident(slot)
        ))
        .await
        .with_context(|| format!("creating replication slot {slot}"))?;
    let lsn = rows
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    tracing::info!(slot = %slot, consistent_point = %lsn, "created replication slot");
    Ok(lsn)
}

/// Look up types not built in (enums, domains, arrays of them), with the types they point to.
pub async fn fetch_types(client: &Client, oids: &[u32]) -> Result<Vec<PgTypeRow>> {
    let mut want: Vec<u32> = oids.to_vec();
    let mut seen: HashMap<u32, PgTypeRow> = HashMap::new();
    for _ in 0..8 {
        want.retain(|o| !seen.contains_key(o));
        if want.is_empty() {
            break;
        }
        let rows = client
            .query(
                "SELECT oid, typtype::text, typcategory::text, typelem, typbasetype, typdelim::text \
                 FROM pg_type WHERE oid = ANY($1)",
                &[&want],
            )
            .await
            .map_err(|e| anyhow!("reading pg_type: {}", pg_error_text(&e)))?;
        let mut next = Vec::new();
        for r in rows {
            let byte = |i: usize| r.get::<_, String>(i).bytes().next().unwrap_or(b'?');
            let row = PgTypeRow {
                oid: r.get(0),
                typtype: byte(1),
                typcategory: byte(2),
                typelem: r.get(3),
                typbasetype: r.get(4),
                typdelim: byte(5),
            };
            for o in [row.typelem, row.typbasetype] {
                if o != 0 {
                    next.push(o);
                }
            }
            seen.insert(row.oid, row);
        }
        want = next;
    }
    Ok(seen.into_values().collect())
}

/// One line of `waltrail check`.
#[derive(Debug, Clone)]
pub struct Check {
    pub status: CheckStatus,
    pub what: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
}

impl Check {
    fn ok(what: impl Into<String>) -> Self {
        Check {
            status: CheckStatus::Ok,
            what: what.into(),
            fix: None,
        }
    }
    fn fail(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            status: CheckStatus::Fail,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
    fn warn(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            status: CheckStatus::Warn,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Slot lag above which `check` warns.
const LAG_WARN_BYTES: i64 = 1 << 30;

/// The Postgres half of the preflight.
pub async fn check_postgres(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let client = match connect_sql(cfg).await {
        Ok(c) => c,
        Err(e) => {
            out.push(Check::fail(
                format!("Postgres reachable: {e:#}"),
                "check postgres.url, that the server runs and that pg_hba.conf lets this host and user in",
            ));
            return out;
        }
    };
    out.push(Check::ok("Postgres reachable"));
    let one = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .map_err(|e| pg_error_text(&e))
        }
    };
    match one("SELECT current_setting('wal_level')").await {
        Ok(r) if r.get::<_, String>(0) == "logical" => out.push(Check::ok("wal_level = logical")),
        Ok(r) => out.push(Check::fail(
            format!("wal_level is {}, not logical", r.get::<_, String>(0)),
            "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) and restart Postgres",
        )),
        Err(e) => out.push(Check::fail(format!("reading wal_level: {e}"), "check the role's privileges")),
    }
    match one("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user").await
    {
        Ok(r) if r.get::<_, bool>(0) => out.push(Check::ok("role has REPLICATION")),
        Ok(_) => out.push(Check::fail(
            "role lacks the REPLICATION attribute",
            "ALTER ROLE <waltrail role> WITH REPLICATION",
        )),
        Err(e) => out.push(Check::fail(
            format!("reading role attributes: {e}"),
            "check the role",
        )),
    }
    let slot = slot_info(&client, &cfg.postgres.slot).await;
    match one(
        "SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int",
    )
    .await
    {
        Ok(r) => {
            let free: i32 = r.get(0);
            let have_slot = matches!(slot, Ok(Some(_)));
            if free > 0 || have_slot {
                out.push(Check::ok(format!("replication slots: {free} free")));
            } else {
                out.push(Check::fail(
                    "no free replication slot",
                    "raise max_replication_slots (restart needed) or drop an unused slot (pg_drop_replication_slot)",
                ));
            }
        }
        Err(e) => out.push(Check::fail(format!("counting replication slots: {e}"), "check the role")),
    }
    match &slot {
        Ok(Some(s)) => {
            if s.plugin != "pgoutput" {
                out.push(Check::fail(
                    format!("slot {} uses plugin {}", cfg.postgres.slot, s.plugin),
                    "drop it or configure another postgres.slot",
                ));
            } else if let Some(pid) = s.active_pid {
                out.push(Check::warn(
                    format!("slot {} is in use by pid {pid}", cfg.postgres.slot),
                    "only one waltrail may read a slot; stop the other one",
                ));
            } else {
                out.push(Check::ok(format!("slot {} exists", cfg.postgres.slot)));
            }
            if let Ok(r) = client
                .query_one(
                    "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
                    &[&cfg.postgres.slot],
                )
                .await
            {
                let lag: Option<i64> = r.get(0);
                let lag = lag.unwrap_or(0);
                if lag > LAG_WARN_BYTES {
                    out.push(Check::warn(
                        format!("slot lag is {} MiB: Postgres keeps that much WAL for waltrail", lag >> 20),
                        "start waltrail (or check why it falls behind); a slot nobody reads fills the disk",
                    ));
                } else {
                    out.push(Check::ok(format!("slot lag {lag} bytes")));
                }
            }
        }
        Ok(None) => out.push(Check::warn(
            format!("slot {} does not exist yet", cfg.postgres.slot),
            if cfg.postgres.create_slot {
                "waltrail run creates it"
            } else {
                "create it: SELECT pg_create_logical_replication_slot('<slot>', 'pgoutput')"
            },
        )),
        Err(e) => out.push(Check::fail(format!("{e:#}"), "check the role")),
    }
    for t in &cfg.tables {
        let (schema, table) = split_table(&t.table);
        let name = format!("{schema}.{table}");
        match table_info(&client, schema, table).await {
            Ok(i) if !i.exists => out.push(Check::fail(
                format!("table {name} does not exist"),
                "fix the [[tables]] entry or create the table",
            )),
            Ok(i) => {
                if i.primary_key.is_empty() && t.id_columns.is_empty() {
                    out.push(Check::fail(
                        format!("table {name} has no primary key"),
                        "add a primary key, or set id_columns for it",
                    ));
                } else {
                    out.push(Check::ok(format!("table {name} exists with a key")));
                }
                let missing: Vec<&String> = t
                    .id_columns
                    .iter()
                    .chain(&t.display_column)
                    .chain(&t.organization_column)
                    .chain(&t.project_column)
                    .chain(&t.soft_delete_column)
                    .chain(&t.ignore_columns)
                    .chain(&t.redact_columns)
                    .filter(|c| !i.columns.contains(c))
                    .collect();
                if !missing.is_empty() {
                    out.push(Check::fail(
                        format!("table {name} lacks configured columns {missing:?}"),
                        "fix the column names in its [[tables]] entry",
                    ));
                }
                let not_full: Vec<(String, String)> = (i.replica_identity != 'f')
                    .then(|| (schema.to_owned(), table.to_owned()))
                    .into_iter()
                    .chain(i.partitions_not_full.iter().cloned())
                    .collect();
                if !not_full.is_empty() {
                    let fix = not_full
                        .iter()
                        .map(|(s, t)| {
                            format!("ALTER TABLE {} REPLICA IDENTITY FULL;", qualified(s, t))
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    let name = not_full
                        .iter()
                        .map(|(s, t)| format!("{s}.{t}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    if cfg.postgres.set_replica_identity_full && i.owned_by_us {
                        out.push(Check::warn(
                            format!("table {name} is not at REPLICA IDENTITY FULL"),
                            format!("waltrail run sets it (postgres.set_replica_identity_full); or run {fix}"),
                        ));
                    } else {
                        out.push(Check::fail(
                            format!("table {name} is not at REPLICA IDENTITY FULL (before-values and TOAST need it)"),
                            format!("run as the table owner: {fix}"),
                        ));
                    }
                }
            }
            Err(e) => out.push(Check::fail(format!("{e:#}"), "check the role's privileges")),
        }
    }
    match client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&cfg.postgres.publication],
        )
        .await
    {
        Ok(Some(_)) => out.push(Check::ok(format!(
            "publication {} exists",
            cfg.postgres.publication
        ))),
        Ok(None) => out.push(Check::warn(
            format!(
                "publication {} does not exist yet",
                cfg.postgres.publication
            ),
            if cfg.postgres.manage_publication {
                "waltrail run creates it".to_owned()
            } else {
                format!(
                    "CREATE PUBLICATION {} FOR TABLE ...",
                    quote_literal(&cfg.postgres.publication)
                )
            },
        )),
        Err(e) => out.push(Check::fail(pg_error_text(&e), "check the role")),
    }
    out
}
