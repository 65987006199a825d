//! Making Postgres ready to stream: REPLICA IDENTITY FULL on mapped tables, a publication holding exactly
//! the configured tables, and a slot that is ours to read (refusing to hide a gap when it was lost).

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use tokio_postgres::Client;

use crate::capture::catalog::{slot_info, TableInfo};
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
            error_text(&e)
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
        .map_err(|e| anyhow!("reading publication {name}: {}", error_text(&e)))?;
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
            .map_err(|e| anyhow!("creating publication {name}: {}", error_text(&e)))?;
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
        .map_err(|e| anyhow!("reading publication {name}: {}", error_text(&e)))?
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
        .map_err(|e| anyhow!("updating publication {name}: {}", error_text(&e)))?;
    tracing::info!(publication = %name, tables = %list, "publication now holds exactly the configured tables");
    Ok(())
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
    let dbname = crate::pg::params(cfg)?.dbname;
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
