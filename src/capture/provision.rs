//! Making Postgres ready to stream: REPLICA IDENTITY FULL on mapped tables, a publication holding exactly
//! the configured tables, and a slot that is ours to read (refusing to hide a gap when it was lost).

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use tokio_postgres::Client;

use crate::capture::catalog::{descendants, named, slot_info, TableInfo};
use crate::capture::replication::ReplicationConnection;
use crate::capture::Lsn;
use crate::config::{split_table, Config};
use crate::pg::{error_text, qualified, quote_ident};

/// Set REPLICA IDENTITY FULL where the config allows and the table is not at it.
pub async fn ensure_replica_identity(
    cfg: &Config,
    client: &Client,
    infos: &[TableInfo],
) -> Result<()> {
    for info in infos {
        // Postgres refuses every UPDATE and DELETE on a published table without a replica identity: an
        // audit tool must never break the platform's writes.
        let unidentified = info.replica_identity == 'n'
            || (info.replica_identity == 'd' && info.primary_key.is_empty());
        if unidentified && !cfg.postgres.set_replica_identity_full {
            bail!(
                "table {}.{} has no replica identity (REPLICA IDENTITY {}{}): once published, Postgres would refuse \
                 the platform's UPDATEs and DELETEs on it. Run ALTER TABLE {} REPLICA IDENTITY FULL (or set \
                 postgres.set_replica_identity_full = true)",
                info.schema,
                info.table,
                if info.replica_identity == 'n' { "NOTHING" } else { "DEFAULT" },
                if info.replica_identity == 'd' { " without a primary key" } else { "" },
                qualified(&info.schema, &info.table)
            );
        }
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

/// The SQL a check and every start look with: are the seven event triggers of
/// `sql/postgres/waltrail_ddl.sql` there and enabled always (also for sessions with
/// `session_replication_role = replica`, which skip triggers enabled the ordinary way).
/// `$1`: the prefix the messages must carry, quoted as the script writes it (`'<message_prefix>:ddl'`,
/// see [`ddl_prefix_literal`]): six of the seven functions write messages, and with another
/// `attribution.message_prefix` than the script's, every message would be ignored (QA45 M2).
pub const DDL_EVENTS_INSTALLED: &str = "SELECT count(*) = 7 \
     AND count(*) FILTER (WHERE pg_catalog.strpos(p.prosrc, $1) > 0) = 6 \
     AND count(*) FILTER (WHERE t.evtname IN ('waltrail_ddl_layout', 'waltrail_ddl_layout_start') \
         AND t.evttags @> ARRAY['DROP DOMAIN', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE'] \
         AND pg_catalog.strpos(p.prosrc, 'open_statements') > 0) = 2 \
     FROM pg_catalog.pg_event_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.evtfoid \
     WHERE t.evtname IN ('waltrail_ddl_rewrite', 'waltrail_ddl_alter_type_start', 'waltrail_ddl_alter_type', \
     'waltrail_ddl_layout_start', 'waltrail_ddl_layout', 'waltrail_ddl_drop_type', 'waltrail_ddl_drop') \
     AND t.evtenabled = 'A'";

/// The message prefix as the DDL script's functions write it.
pub fn ddl_prefix_literal(message_prefix: &str) -> String {
    format!("'{message_prefix}:ddl'")
}

/// What a start and `check` say when the DDL event triggers are missing.
pub const DDL_EVENTS_MISSING: &str = "DDL that changes audited values without a row change (ALTER TABLE … \
     TYPE … USING, columns renamed, dropped, added with a default or retyped, ALTER TYPE … RENAME VALUE) is \
     not recorded in the trail: the DDL event triggers are not all installed and enabled always, or they \
     write another message prefix than attribution.message_prefix's";
pub const DDL_EVENTS_FIX: &str =
    "run sql/postgres/waltrail_ddl.sql in the audited database as a superuser, with 'waltrail:ddl' replaced \
     by '<attribution.message_prefix>:ddl' if you set another prefix (see README, Schema changes)";

/// Whether the DDL event triggers are installed; said once per process when they are not.
pub async fn warn_without_ddl_events(client: &Client, message_prefix: &str) {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let installed = client
        .query_one(DDL_EVENTS_INSTALLED, &[&ddl_prefix_literal(message_prefix)])
        .await
        .ok()
        .and_then(|r| r.try_get::<_, bool>(0).ok());
    if installed != Some(true) && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(fix = DDL_EVENTS_FIX, "{DDL_EVENTS_MISSING}");
    }
}

/// A mapped table left below REPLICA IDENTITY FULL (`postgres.set_replica_identity_full = false`) sends a
/// delete with its identity key alone: an id column outside that key would reach the trail empty, and
/// the resource deleted would be named by nobody (QA41 M1). Refused with the fix.
pub async fn identity_covers_ids(cfg: &Config, client: &Client, infos: &[TableInfo]) -> Result<()> {
    if cfg.postgres.set_replica_identity_full {
        return Ok(());
    }
    for (t, info) in cfg.tables.iter().zip(infos) {
        if !info.exists {
            continue;
        }
        let ids: &[String] = if t.id_columns.is_empty() {
            &info.primary_key
        } else {
            &t.id_columns
        };
        // The table and each partition or child below FULL: each has its own replica identity (QA42 M3).
        let members = std::iter::once((info.schema.clone(), info.table.clone()))
            .chain(info.partitions_not_full.iter().cloned());
        for (schema, table) in members {
            let name = qualified(&schema, &table);
            let row = client
                .query_one(
                    "SELECT c.relreplident::text, \
                     coalesce((SELECT array_agg(a.attname::text) FROM pg_index i \
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                       WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'i' THEN i.indisreplident \
                       ELSE i.indisprimary END), '{}') \
                     FROM pg_class c WHERE c.oid = $1::text::regclass",
                    &[&name],
                )
                .await
                .map_err(|e| anyhow!("reading the replica identity of {name}: {}", error_text(&e)))?;
            let identity: String = row.try_get(0)?;
            let key: Vec<String> = row.try_get(1)?;
            // FULL sends every column; NOTHING (or DEFAULT without a key) is refused elsewhere, and
            // Postgres refuses deletes on a published table without an identity anyway.
            if identity == "f" || identity == "n" || (identity != "i" && key.is_empty()) {
                continue;
            }
            let outside: Vec<&str> = ids
                .iter()
                .filter(|c| !key.contains(c))
                .map(String::as_str)
                .collect();
            if !outside.is_empty() {
                bail!(
                    "table {schema}.{table}: its id column(s) {} are not in its replica identity ({}), and it is \
                     not at REPLICA IDENTITY FULL (postgres.set_replica_identity_full = false): a delete would \
                     reach the trail without the id of what was deleted. Run ALTER TABLE {name} REPLICA \
                     IDENTITY FULL, or make the identity cover them (or set id_columns to columns it holds)",
                    outside.join(", "),
                    if key.is_empty() {
                        "none".to_owned()
                    } else {
                        key.join(", ")
                    },
                );
            }
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
             values, and deletes carry the key alone (an organization or project column outside the key is \
             then taken from the resource's last item in the trail); run ALTER TABLE ... REPLICA IDENTITY FULL"
        );
        return Ok(());
    }
    // The ALTER needs the table's strongest lock: an open transaction that wrote the table holds it off
    // for as long as it lasts. Asked for 10 s at a time, so that the wait is said with who holds the lock
    // rather than kept silent (a session idle in a transaction can hold it for ever).
    let sql = format!(
        "BEGIN; SET LOCAL lock_timeout = '10s'; ALTER TABLE {} REPLICA IDENTITY FULL; COMMIT",
        qualified(schema, table)
    );
    loop {
        let Err(e) = client.batch_execute(&sql).await else {
            break;
        };
        let _ = client.batch_execute("ROLLBACK").await;
        if e.code() != Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            return Err(anyhow!(
                "setting REPLICA IDENTITY FULL on {name}: {} (run it as the table owner, or set postgres.set_replica_identity_full = false)",
                error_text(&e)
            ));
        }
        let holders = lock_holders(client, schema, table).await;
        tracing::warn!(table = %name, holders = %holders, "setting REPLICA IDENTITY FULL waits for the table's lock: end the open transactions named (or set it by hand when they are gone); capture starts once it is set");
    }
    tracing::info!(table = %name, "set REPLICA IDENTITY FULL");
    Ok(())
}

/// A warning's list of who holds a wait: one text column per row, or why there is none.
fn said_list(rows: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>) -> String {
    match rows {
        Ok(rows) if rows.is_empty() => "none found (they may have ended just now)".into(),
        Ok(rows) => rows
            .iter()
            .filter_map(|r| r.try_get::<_, Option<String>>(0).ok().flatten())
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("could not be listed: {e}"),
    }
}

/// The sessions holding a lock on a table (at most ten, by pid, user, state and transaction start).
async fn lock_holders(client: &Client, schema: &str, table: &str) -> String {
    let rows = client
        .query(
            "SELECT DISTINCT 'session ' || a.pid || ' (' || coalesce(a.usename::text, '?') || ', ' \
                    || coalesce(a.state, '?') || ', transaction since ' || coalesce(a.xact_start::text, '?') || ')' \
               FROM pg_catalog.pg_locks l \
               JOIN pg_catalog.pg_class c ON c.oid = l.relation \
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
              WHERE n.nspname = $1 AND c.relname = $2 AND l.granted AND l.pid <> pg_catalog.pg_backend_pid() \
              LIMIT 10",
            &[&schema, &table],
        )
        .await;
    said_list(rows)
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

/// Mapped tables (`schema.table`) that an existing publication does not hold: dropped and created again,
/// or removed from it, while waltrail was not watching. Empty when the publication does not exist yet.
pub async fn mapped_out_of_publication(cfg: &Config, client: &Client) -> Result<Vec<String>> {
    let name = &cfg.postgres.publication;
    if publication_flags(client, name).await?.is_none() {
        return Ok(Vec::new());
    }
    let current = publication_table_set(client, name).await?;
    Ok(cfg
        .tables
        .iter()
        .map(|t| split_table(&t.table))
        .filter(|(s, t)| !current.contains(&((*s).to_owned(), (*t).to_owned())))
        .map(|(s, t)| format!("{s}.{t}"))
        .collect())
}

/// What a publication publishes, as `pg_publication` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishFlags {
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
    pub via_root: bool,
}

impl PublishFlags {
    /// The one shape a managed publication is kept in.
    /// Partitions' changes come under their own names (waltrail maps them to the configured partitioned
    /// table): only so does Postgres publish a TRUNCATE of one partition.
    pub const EVERY_CHANGE: PublishFlags = PublishFlags {
        insert: true,
        update: true,
        delete: true,
        truncate: true,
        via_root: false,
    };
}

impl PublishFlags {
    /// The platform tables' own publication, read only by the start-up rewind: through the root, so that
    /// a partitioned platform table's changes come under the name (and OID) attribution knows.
    pub const CONTEXT: PublishFlags = PublishFlags {
        via_root: true,
        ..PublishFlags::EVERY_CHANGE
    };
}

/// What a publication leaves out of the trail or hides from it (each refused, and what, while waltrail
/// streams or was away, makes a gap): a kind of change it does not publish, and publishing through the
/// root, which names a partition's change after the topmost table the publication lists: a mapped table
/// attached below another listed table would then be captured as that table's (with its redaction) or
/// not at all (QA32), and a partition's TRUNCATE is never published.
pub fn lost_kinds(f: PublishFlags) -> Vec<String> {
    let mut out: Vec<String> = [
        (f.insert, "insert"),
        (f.update, "update"),
        (f.delete, "delete"),
        (f.truncate, "truncate"),
    ]
    .into_iter()
    .filter(|(on, _)| !on)
    .map(|(_, op)| format!("it does not publish {op}s (they would never reach the trail)"))
    .collect();
    if f.via_root {
        out.push(
            "publish_via_partition_root is on (a change made in a partition would come under the name of the \
             topmost table the publication lists: a mapped table attached below another listed table would \
             be captured as that table's, with its redaction, or not at all; and a partition's TRUNCATE is \
             never published)"
                .to_owned(),
        );
    }
    out
}

/// Why `attribution.context_secret` cannot be trusted, if the source shows it to every role: a setting
/// holds it (`ALTER DATABASE/ROLE … SET`, postgresql.conf), and anyone who can read it seals a context
/// that names whoever they like (QA34 H1). Refused at start, failed by `check`.
pub async fn exposed_context_secret(client: &Client, cfg: &Config) -> Result<Option<String>> {
    let Some(secret) = cfg.attribution.context_secret.as_ref() else {
        return Ok(None);
    };
    let names = crate::capture::catalog::settings_holding(client, &secret.0).await?;
    Ok((!names.is_empty()).then(|| {
        format!(
            "attribution.context_secret is readable by every role of the source: setting {} holds it (SHOW, \
             pg_db_role_setting and pg_settings are open to all), so anyone can seal a context naming whoever \
             they like. Remove it (ALTER DATABASE … RESET / ALTER ROLE … RESET / postgresql.conf), keep it \
             where only the sealing function's owner reads it (waltrail.context_key in \
             sql/postgres/waltrail_context.sql), and rotate it: set a new secret on both sides",
            names.join(", ")
        )
    }))
}

/// The statement that gives a publication everything [`lost_kinds`] asks for.
pub fn publication_fix(name: &str) -> String {
    format!(
        "ALTER PUBLICATION {} SET (publish = 'insert, update, delete, truncate', publish_via_partition_root = false)",
        quote_ident(name)
    )
}

/// The publication's flags, if it exists.
pub async fn publication_flags(client: &Client, name: &str) -> Result<Option<PublishFlags>> {
    let row = client
        .query_opt(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| anyhow!("reading publication {name}: {}", error_text(&e)))?;
    Ok(row.map(|r| PublishFlags {
        insert: r.get(0),
        update: r.get(1),
        delete: r.get(2),
        truncate: r.get(3),
        via_root: r.get(4),
    }))
}

/// The publication's tables given a row filter or a column list (PostgreSQL 15 on), each said with what
/// it does: rows a filter leaves out never reach the trail (a move out of the filter reads as a delete),
/// and a column list that does not cover the replica identity makes Postgres refuse the platform's
/// updates and deletes. Only `tables` (the configured ones) and their partitions and children count: a
/// publication kept by hand may filter other tables as it likes. Read through `to_jsonb` so that servers
/// before 15, without those columns, answer none.
pub async fn narrowed_tables(
    client: &Client,
    name: &str,
    tables: &[(String, String)],
) -> Result<Vec<String>> {
    let (schemas, names): (Vec<&str>, Vec<&str>) =
        tables.iter().map(|(s, t)| (s.as_str(), t.as_str())).unzip();
    let rows = client
        .query(
            &format!(
                "{} SELECT n.nspname::text, c.relname::text, (to_jsonb(r) ->> 'prqual') IS NOT NULL, \
                 (to_jsonb(r) ->> 'prattrs') IS NOT NULL FROM pg_publication_rel r \
                 JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = $1 \
                 AND r.prrelid IN (SELECT relid FROM down) ORDER BY 1, 2",
                descendants(&named(2, 3, "TRUE"), "TRUE")
            ),
            &[&name, &schemas, &names],
        )
        .await
        .map_err(|e| anyhow!("reading publication {name}'s tables: {}", error_text(&e)))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let table = qualified(&r.get::<_, String>(0), &r.get::<_, String>(1));
            match (r.get::<_, bool>(2), r.get::<_, bool>(3)) {
                (true, true) => Some(format!("it publishes {table} through a row filter and a column list (rows the filter leaves out never reach the trail)")),
                (true, false) => Some(format!("it publishes {table} through a row filter (rows it leaves out never reach the trail)")),
                (false, true) => Some(format!("it publishes {table} with a column list (the columns left out never reach the trail)")),
                (false, false) => None,
            }
        })
        .collect())
}

/// What a publication leaves out of the trail ([`lost_kinds`] and [`narrowed_tables`] of `tables`), if it
/// exists.
pub async fn publication_losses(
    client: &Client,
    name: &str,
    tables: &[(String, String)],
) -> Result<Option<Vec<String>>> {
    let Some(flags) = publication_flags(client, name).await? else {
        return Ok(None);
    };
    let mut out = lost_kinds(flags);
    out.extend(narrowed_tables(client, name, tables).await?);
    Ok(Some(out))
}

/// Create the publication, or make its table list exactly the configured one and make it publish every
/// kind of change. With `manage_publication = false` nothing is changed, and a publication that would leave
/// changes out of the trail is refused with the statement that fixes it.
pub async fn ensure_publication(cfg: &Config, client: &Client) -> Result<()> {
    let name = &cfg.postgres.publication;
    let configured = publication_tables(cfg);
    let (wanted, list) = with_children(client, &configured).await?;
    let Some(flags) = publication_flags(client, name).await? else {
        if !cfg.postgres.manage_publication {
            bail!(
                "publication {name} does not exist; create it (CREATE PUBLICATION {} FOR TABLE {list}) or set postgres.manage_publication = true",
                quote_ident(name)
            );
        }
        create_publication(client, name, &list, false).await?;
        tracing::info!(publication = %name, tables = %list, "created publication");
        return Ok(());
    };
    // One made FOR ALL TABLES (by someone else) cannot be given a table list: Postgres refuses the
    // ALTER with a message that says nothing of the way out (QA40 M5).
    if cfg.postgres.manage_publication {
        let all: bool = client
            .query_one(
                "SELECT puballtables FROM pg_publication WHERE pubname = $1",
                &[name],
            )
            .await
            .map_err(|e| anyhow!("reading publication {name}: {}", error_text(&e)))?
            .try_get(0)?;
        if all {
            bail!(
                "publication {name} is defined FOR ALL TABLES, not by waltrail (which keeps it FOR TABLE the \
                 mapped tables, postgres.manage_publication = true), and Postgres cannot narrow it. Drop it \
                 (DROP PUBLICATION {}) and start again: that start creates it for the mapped tables and \
                 records in the trail what may be missing (run it with --accept-gap if it stops on the \
                 stretch without a publication); or keep it as it is with postgres.manage_publication = false",
                quote_ident(name)
            );
        }
    }
    let current = publication_table_set(client, name).await?;
    let narrowed = narrowed_tables(
        client,
        name,
        &configured.iter().cloned().collect::<Vec<_>>(),
    )
    .await?;
    // Every option on, not only what the problems name: a managed publication is kept in one known shape.
    if current == wanted && flags == PublishFlags::EVERY_CHANGE && narrowed.is_empty() {
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
        let mut lost = lost_kinds(flags);
        lost.extend(narrowed);
        if !lost.is_empty() {
            bail!(
                "publication {name} cannot feed a complete trail: {}; run {} (or set postgres.manage_publication = true)",
                lost.join("; "),
                publication_fix(name)
            );
        }
        return Ok(());
    }
    reshape_publication(client, name, &list, false).await?;
    tracing::info!(publication = %name, tables = %list, "publication now holds exactly the configured tables and publishes every change");
    Ok(())
}

/// The configured tables with their inheritance children (ordinary permanent tables: a foreign or temporary
/// child cannot be published, and writes nothing to this server's WAL), and the publication's table list
/// for them: `ONLY` each table that is not partitioned (without it Postgres adds every descendant, failing on
/// a foreign one), a partitioned one by its name (its partitions come with it).
async fn with_children(
    client: &Client,
    configured: &BTreeSet<(String, String)>,
) -> Result<(BTreeSet<(String, String)>, String)> {
    let (schemas, names): (Vec<&str>, Vec<&str>) = configured
        .iter()
        .map(|(s, t)| (s.as_str(), t.as_str()))
        .unzip();
    let rows = client
        .query(
            &format!(
                "{} SELECT n.nspname::text, c.relname::text FROM down JOIN pg_class c ON c.oid = down.relid \
                 JOIN pg_namespace n ON n.oid = c.relnamespace",
                descendants(
                    &named(1, 2, "c.relkind = 'r'"),
                    "k.relkind = 'r' AND k.relpersistence = 'p'"
                )
            ),
            &[&schemas, &names],
        )
        .await
        .map_err(|e| anyhow!("reading the configured tables' children: {}", error_text(&e)))?;
    let plain: BTreeSet<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let all: BTreeSet<(String, String)> = configured.union(&plain).cloned().collect();
    let list = all
        .iter()
        .map(|(s, t)| {
            if plain.contains(&(s.clone(), t.clone())) {
                format!("ONLY {}", qualified(s, t))
            } else {
                qualified(s, t)
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    Ok((all, list))
}

/// `schema.table, …`, quoted, for a publication's table list.
fn table_list(tables: &BTreeSet<(String, String)>) -> String {
    tables
        .iter()
        .map(|(s, t)| qualified(s, t))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tables a publication holds now: those it publishes, and those listed in it (a partitioned table
/// listed in a publication that publishes partitions under their own names is still in it: its leaves are
/// what `pg_publication_tables` shows).
async fn publication_table_set(client: &Client, name: &str) -> Result<BTreeSet<(String, String)>> {
    Ok(client
        .query(
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1 \
             UNION SELECT n.nspname::text, c.relname::text FROM pg_publication_rel r \
             JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.pubname = $1",
            &[&name],
        )
        .await
        .map_err(|e| anyhow!("reading publication {name}: {}", error_text(&e)))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The relations publication `name` holds as members of its own (what `ALTER PUBLICATION … ADD TABLE`
/// added: tables, not the partitions they publish), each as (schema, table, OID), and for each whether one
/// of its ancestors (an inheritance parent, a partitioned table) is a member too. Empty when the
/// publication does not exist.
pub async fn publication_members(
    client: &Client,
    name: &str,
) -> Result<Vec<(String, String, u32, bool)>> {
    Ok(client
        .query(
            "SELECT n.nspname::text, c.relname::text, c.oid, EXISTS (\
               WITH RECURSIVE up(relid, depth) AS (\
                 SELECT inhparent, 1 FROM pg_inherits WHERE inhrelid = c.oid \
                 UNION ALL SELECT i.inhparent, up.depth + 1 FROM pg_inherits i JOIN up ON i.inhrelid = up.relid \
                 WHERE up.depth < 64) \
               SELECT 1 FROM up JOIN pg_publication_rel r2 ON r2.prrelid = up.relid AND r2.prpubid = p.oid) \
             FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid \
             JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE p.pubname = $1 ORDER BY 1, 2",
            &[&name],
        )
        .await
        .map_err(|e| anyhow!("reading the members of publication {name}: {}", error_text(&e)))?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

async fn create_publication(client: &Client, name: &str, list: &str, via_root: bool) -> Result<()> {
    client
        // The main publication sends partitions' changes under their own names (capture maps them to the
        // configured table), so that a TRUNCATE of one partition is published too.
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE {list} WITH (publish_via_partition_root = {via_root})",
            quote_ident(name)
        ))
        .await
        .map_err(|e| anyhow!("creating publication {name}: {}", error_text(&e)))
}

/// Make a publication hold exactly `list` and publish every kind of change.
async fn reshape_publication(
    client: &Client,
    name: &str,
    list: &str,
    via_root: bool,
) -> Result<()> {
    client
        .batch_execute(&format!(
            "ALTER PUBLICATION {0} SET TABLE {list}; ALTER PUBLICATION {0} SET (publish = 'insert, update, delete, truncate', publish_via_partition_root = {via_root})",
            quote_ident(name),
        ))
        .await
        .map_err(|e| anyhow!("updating publication {name}: {}", error_text(&e)))
}

/// The publication the start-up rewind of attribution reads through: the platform tables only, so that
/// Postgres decodes the slot's unconfirmed window into their changes alone rather than into every mapped
/// change, which it would hold in a temporary file while the rewind filters them. Kept like the main one
/// when `manage_publication` is on; `None` (the rewind then reads through the main publication) when
/// there are no platform tables, when it is not managed and not there as wanted, or when it cannot be
/// made (said in the log: the main publication is what matters).
pub async fn ensure_context_publication(cfg: &Config, client: &Client) -> Option<String> {
    let name = format!("{}_context", cfg.postgres.publication);
    // Postgres cuts longer names, which would then not be found by this one.
    if cfg.context_tables().is_empty() || name.len() > 63 {
        return None;
    }
    match context_publication(cfg, client, &name).await {
        Ok(true) => Some(name),
        Ok(false) => None,
        Err(e) => {
            tracing::warn!(publication = %name, error = %format!("{e:#}"), "cannot keep the platform tables' own publication; the start-up rewind reads through the main one");
            None
        }
    }
}

async fn context_publication(cfg: &Config, client: &Client, name: &str) -> Result<bool> {
    let wanted: BTreeSet<(String, String)> = cfg
        .context_tables()
        .into_iter()
        .map(|t| {
            let (s, t) = split_table(t);
            (s.to_owned(), t.to_owned())
        })
        .collect();
    let list = table_list(&wanted);
    let Some(flags) = publication_flags(client, name).await? else {
        if !cfg.postgres.manage_publication {
            return Ok(false);
        }
        create_publication(client, name, &list, true).await?;
        tracing::info!(publication = %name, tables = %list, "created the platform tables' publication (for the start-up rewind of attribution)");
        return Ok(true);
    };
    let current = publication_table_set(client, name).await?;
    if current == wanted && flags == PublishFlags::CONTEXT {
        return Ok(true);
    }
    if !cfg.postgres.manage_publication {
        return Ok(false);
    }
    reshape_publication(client, name, &list, true).await?;
    Ok(true)
}

/// Why the capture cannot start from the slot.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("replication slot {slot} is in use by another process (pid {pid}); stop the other consumer, or wait until Postgres notices it is gone")]
    InUse { slot: String, pid: i32 },
    #[error("{0}")]
    Refuse(String),
}

/// What the store already holds from this source: any item at all means a new slot would leave a gap.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoredHistory {
    pub items: u64,
    /// The last stored position and its commit time.
    pub last_lsn: Option<u64>,
    pub last_time_us: Option<i64>,
    /// When its last item was stored: a source's ingestion times never go back, even across restarts or a
    /// clock stepped back (the pipeline starts from here).
    pub last_ingested_us: Option<i64>,
}

/// Where streaming starts, and the gap the operator accepted to get there (to be recorded in the trail).
#[derive(Debug, Clone)]
pub struct SlotStart {
    pub start: Lsn,
    pub gap: Option<SlotGap>,
}

#[derive(Debug, Clone)]
pub struct SlotGap {
    pub reason: String,
    /// The last position known to be captured.
    pub from_lsn: Option<u64>,
    pub from_time_us: Option<i64>,
}

/// Make sure the slot exists and is ours to read; returns the position to start from. A missing slot while
/// the store holds this source's items, or a slot Postgres invalidated (`wal_status = lost`), is a gap in
/// the trail: refused unless the operator accepts it (`--accept-gap`), and then returned to be recorded.
pub async fn ensure_slot(
    cfg: &Config,
    client: &Client,
    repl: &mut ReplicationConnection,
    stored: &StoredHistory,
    confirm_bound: u64,
    accept_gap: bool,
) -> Result<SlotStart> {
    let slot = &cfg.postgres.slot;
    let dbname = crate::pg::params(cfg)?.dbname;
    let mut lost_from = None;
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
        let confirmed = info.confirmed_flush.unwrap_or_default();
        if info.wal_status.as_deref() != Some("lost") {
            // Capture reports how far it may confirm before confirming (see `store::sources`): a slot beyond
            // that was dropped and created again under this name, advanced, or read by another consumer
            // while waltrail was away, and what lay between is not in the stream.
            let moved = confirm_bound > 0 && confirmed.0 > confirm_bound;
            if moved && !accept_gap {
                return Err(
                    SlotError::Refuse(moved_slot_message(slot, confirm_bound, confirmed)).into(),
                );
            }
            return Ok(SlotStart {
                start: confirmed,
                gap: moved.then(|| {
                    tracing::warn!(slot = %slot, from = %Lsn(confirm_bound), to = %confirmed, "slot was ahead of every position waltrail confirmed: streaming from it (--accept-gap); the gap is recorded in the trail");
                    SlotGap {
                        reason: format!(
                            "replication slot {slot} was at {confirmed}, past every position waltrail confirmed ({}): it \
                             was dropped and created again, advanced, or read by another consumer, and the changes \
                             between are not in the WAL stream",
                            Lsn(confirm_bound)
                        ),
                        from_lsn: Some(confirm_bound),
                        from_time_us: stored.last_time_us,
                    }
                }),
            });
        }
        if !accept_gap {
            return Err(SlotError::Refuse(lost_slot_message(slot, info.confirmed_flush)).into());
        }
        // Accepted: the invalidated slot can never stream again; a new one starts from now.
        repl.simple_query(&format!("DROP_REPLICATION_SLOT {}", quote_ident(slot)))
            .await
            .with_context(|| format!("dropping invalidated replication slot {slot}"))?;
        tracing::warn!(slot = %slot, "dropped the invalidated slot (--accept-gap); the gap is recorded in the trail");
        lost_from = Some(info.confirmed_flush);
    }
    if lost_from.is_none() && stored.items > 0 && !accept_gap {
        return Err(SlotError::Refuse(format!(
            "replication slot {slot} is missing, but ClickHouse already holds {} items from this source: \
             the changes made since the slot was lost are gone from the WAL stream, and starting a new slot would hide \
             that gap. Restore the slot if you can; to accept the gap and start from now, run once with --accept-gap \
             (the gap is then recorded in the trail)",
            stored.items
        ))
        .into());
    }
    if !cfg.postgres.create_slot {
        return Err(SlotError::Refuse(format!(
            "replication slot {slot} does not exist; create it (SELECT pg_create_logical_replication_slot({}, 'pgoutput')) or set postgres.create_slot = true",
            crate::pg::quote_literal(slot)
        ))
        .into());
    }
    let create_sql = format!(
        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput NOEXPORT_SNAPSHOT",
        quote_ident(slot)
    );
    let create = repl.simple_query(&create_sql);
    tokio::pin!(create);
    // Postgres makes the slot only once every transaction running when it began has ended: an open
    // prepared transaction, or a session idle in one, holds the start for as long as it lasts (QA48a L1).
    // Said, with the blockers, instead of a silent wait.
    let mut wait = std::time::Duration::from_secs(10);
    let rows = loop {
        tokio::select! {
            r = &mut create => break r,
            _ = tokio::time::sleep(wait) => {
                wait = std::time::Duration::from_secs(60);
                let blockers = slot_blockers(client).await;
                tracing::warn!(slot = %slot, blockers = %blockers, "creating the replication slot waits for the transactions running when it began to end: commit or roll back the prepared transactions named (COMMIT PREPARED / ROLLBACK PREPARED) and end the sessions' open transactions; capture starts once they are gone");
            }
        }
    }
    .with_context(|| format!("creating replication slot {slot}"))?;
    let lsn = rows
        .first()
        .and_then(|r| r.get(1).cloned().flatten())
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    tracing::info!(slot = %slot, consistent_point = %lsn, "created replication slot");
    let gap = match lost_from {
        Some(confirmed) => Some(SlotGap {
            reason: "the replication slot was invalidated (wal_status lost): Postgres removed WAL it still needed"
                .into(),
            from_lsn: confirmed.map(|l| l.0).or(stored.last_lsn),
            from_time_us: stored.last_time_us,
        }),
        None if stored.items > 0 => {
            tracing::warn!(slot = %slot, items = stored.items, "slot was missing: started a new one from now (--accept-gap); the gap is recorded in the trail");
            Some(SlotGap {
                reason: "the replication slot was missing: the changes made while it was gone are not in the WAL stream".into(),
                from_lsn: stored.last_lsn,
                from_time_us: stored.last_time_us,
            })
        }
        None => None,
    };
    Ok(SlotStart { start: lsn, gap })
}

/// The transactions a slot being created waits for: prepared ones, and sessions holding a transaction id
/// (at most ten of each, named by gid or pid, user and start).
async fn slot_blockers(client: &Client) -> String {
    let rows = client
        .query(
            "(SELECT 'prepared transaction ' || pg_catalog.quote_literal(gid) || ' (by ' || owner || ', since ' \
                     || prepared || ')' FROM pg_catalog.pg_prepared_xacts ORDER BY prepared LIMIT 10) \
             UNION ALL \
             (SELECT 'session ' || pid || ' (' || coalesce(usename::text, '?') || ', ' || coalesce(state, '?') \
                     || ', transaction since ' || coalesce(xact_start::text, '?') || ')' \
                FROM pg_catalog.pg_stat_activity \
               WHERE backend_xid IS NOT NULL AND pid <> pg_catalog.pg_backend_pid() \
               ORDER BY xact_start LIMIT 10)",
            &[],
        )
        .await;
    said_list(rows)
}

/// What to tell the operator when the slot is past every position waltrail confirmed.
pub fn moved_slot_message(slot: &str, bound: u64, confirmed: Lsn) -> String {
    format!(
        "replication slot {slot} is at {confirmed}, past every position waltrail confirmed ({}): while waltrail \
         was away it was dropped and created again under this name, advanced (pg_replication_slot_advance), or \
         read by another consumer, so the changes between are not in the WAL stream and the trail would hide \
         that gap. Find out which (another process configured with this slot?); to accept the gap and stream \
         from the slot's position, run once with --accept-gap (the gap is recorded in the trail)",
        Lsn(bound)
    )
}

/// What to tell the operator when the slot was invalidated.
pub fn lost_slot_message(slot: &str, confirmed: Option<Lsn>) -> String {
    format!(
        "replication slot {slot} was invalidated (wal_status = lost): Postgres removed WAL it still needed \
         (max_slot_wal_keep_size), so the changes after {} are gone for good and the trail has a gap there. \
         To go on, run once with --accept-gap: waltrail drops the slot, starts a new one from now, and records the \
         gap in the trail as an item every organization's admins see. To keep it from happening again, raise \
         max_slot_wal_keep_size or keep waltrail running (check warns while the slot is unreserved)",
        confirmed.map_or_else(|| "its last confirmed position".to_owned(), |l| l.to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_must_publish_every_change() {
        let all = PublishFlags::EVERY_CHANGE;
        assert!(lost_kinds(all).is_empty());
        // Through the root, a nested mapped table's change comes under another name: refused like a
        // kind of change left out.
        let via_root = lost_kinds(PublishFlags {
            via_root: true,
            ..all
        });
        assert_eq!(via_root.len(), 1);
        assert!(via_root[0].contains("publish_via_partition_root"));
        let p = lost_kinds(PublishFlags {
            delete: false,
            truncate: false,
            ..all
        });
        assert_eq!(p.len(), 2);
        assert!(p[0].contains("deletes") && p[1].contains("truncates"));
        assert_eq!(
            publication_fix("my pub"),
            "ALTER PUBLICATION \"my pub\" SET (publish = 'insert, update, delete, truncate', publish_via_partition_root = false)"
        );
    }
}
