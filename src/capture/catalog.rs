//! Reading Postgres's catalog: what a configured table looks like, the types of its columns, the slot's
//! state, and plain snapshots of the platform tables attribution keeps in memory.
//!
//! Everything here returns plain rows; what they mean for auditing is decided by `audit`.

use anyhow::{anyhow, Result};
use std::collections::HashMap;
use tokio_postgres::Client;

use crate::capture::Lsn;
use crate::pg::{error_text, qualified, quote_ident};

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
                error_text(&e)
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
                error_text(&e)
            )
        })?;
    let cols = client
        .query(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| anyhow!("reading the columns of {schema}.{table}: {}", error_text(&e)))?;
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
                error_text(&e)
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

/// Read what the catalog says of each configured table, in config order.
pub async fn tables(client: &Client, names: &[(String, String)]) -> Result<Vec<TableInfo>> {
    let mut out = Vec::with_capacity(names.len());
    for (schema, table) in names {
        out.push(table_info(client, schema, table).await?);
    }
    Ok(out)
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
        .map_err(|e| anyhow!("reading replication slot {slot}: {}", error_text(&e)))?;
    Ok(row.map(|r| SlotInfo {
        plugin: r.get(0),
        database: r.get(1),
        active_pid: r.get(2),
        confirmed_flush: r.get::<_, Option<String>>(3).and_then(|s| s.parse().ok()),
    }))
}

/// One row of `pg_type`: enough to tell how values of a type not built in are rendered.
#[derive(Debug, Clone)]
pub struct TypeRow {
    pub oid: u32,
    /// 'b' base, 'c' composite, 'd' domain, 'e' enum, 'p' pseudo, 'r' range, 'm' multirange.
    pub typtype: u8,
    /// 'A' array, 'B' boolean, 'N' numeric, 'S' string, 'U' user-defined, ...
    pub typcategory: u8,
    /// Element type of an array, else 0.
    pub typelem: u32,
    /// Base type of a domain, else 0.
    pub typbasetype: u32,
    /// Element delimiter of an array's text form.
    pub typdelim: u8,
}

/// Look up types not built in (enums, domains, arrays of them), with the types they point to.
pub async fn fetch_types(client: &Client, oids: &[u32]) -> Result<Vec<TypeRow>> {
    let mut want: Vec<u32> = oids.to_vec();
    let mut seen: HashMap<u32, TypeRow> = HashMap::new();
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
            .map_err(|e| anyhow!("reading pg_type: {}", error_text(&e)))?;
        let mut next = Vec::new();
        for r in rows {
            let byte = |i: usize| r.get::<_, String>(i).bytes().next().unwrap_or(b'?');
            let row = TypeRow {
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

/// Every row of a platform table, with the named columns as Postgres's text output (`None` for NULL).
/// The simple-query protocol returns each value through its type's output function, the same text pgoutput
/// sends, so loaded and streamed rows compare equal (a `::text` cast would not: inet gains a mask).
pub async fn snapshot(
    client: &Client,
    schema: &str,
    table: &str,
    columns: &[&str],
) -> Result<Vec<Vec<Option<String>>>> {
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let sql = format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        qualified(schema, table)
    );
    let messages = client
        .simple_query(&sql)
        .await
        .map_err(|e| anyhow!("reading {schema}.{table}: {}", error_text(&e)))?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..columns.len())
                    .map(|i| r.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}
