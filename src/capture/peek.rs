//! What the slot holds beyond its confirmed position, read without consuming it (the slot must not be in
//! use). Attribution uses it at start-up to wind its copy of the platform tables back to where streaming
//! resumes: their rows as they are now are not what the changes streamed again were committed under.

use anyhow::{anyhow, Result};
use bytes::Bytes;
use tokio_postgres::Client;

use crate::pg::{error_text, quote_ident};

/// Which of the slot's messages [`changes`] hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Messages {
    /// Relation, Insert, Update and Delete of the tables, with every transaction's Begin.
    Rows,
    /// The tables' Relation messages alone: their columns as the stream will name them.
    Relations,
}

/// The pgoutput messages of the tables `oids` between the slot's confirmed position and the end of the
/// WAL now, in stream order (see [`Messages`]; Begin says where a transaction commits), handed to `each`
/// one at a time as they arrive (a long window is never held). Returns false, reading nothing, when more
/// than `max_wal_bytes` of WAL lie there (reading them twice would cost the source too much; see
/// `attribution.rewind_max_bytes`).
pub async fn changes(
    client: &Client,
    (slot, publication): (&str, &str),
    oids: &[u32],
    (which, max_wal_bytes): (Messages, u64),
    mut each: impl FnMut(Bytes) -> Result<()>,
) -> Result<bool> {
    use futures_util::TryStreamExt;
    let behind: Option<i64> = client
        .query_one(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| anyhow!("reading replication slot {slot}: {}", error_text(&e)))?
        .get(0);
    let behind = behind.unwrap_or(0).max(0) as u64;
    if behind > max_wal_bytes {
        return Ok(false);
    }
    if oids.is_empty() || behind == 0 {
        return Ok(true);
    }
    // Only the messages asked for leave the server: the first byte is the message type ('B'; 'R', 'I',
    // 'U', 'D', whose next four bytes are the relation's oid).
    let keys: Vec<Vec<u8>> = oids.iter().map(|o| o.to_be_bytes().to_vec()).collect();
    let publication = quote_ident(publication);
    let kinds: Vec<i32> = match which {
        Messages::Rows => vec![82, 73, 85, 68],
        Messages::Relations => vec![82],
    };
    let begins = which == Messages::Rows;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
        [&slot, &publication, &keys, &kinds, &begins];
    let failed = |e: tokio_postgres::Error| {
        anyhow!(
            "reading what slot {slot} holds beyond its confirmed position: {}",
            error_text(&e)
        )
    };
    let rows = client
        .query_raw(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', \
             'publication_names', $2) WHERE (get_byte(data, 0) = 66 AND $5) \
             OR (get_byte(data, 0) = ANY($4) AND substring(data FROM 2 FOR 4) = ANY($3))",
            params,
        )
        .await
        .map_err(failed)?;
    futures_util::pin_mut!(rows);
    while let Some(row) = rows.try_next().await.map_err(failed)? {
        each(Bytes::from(row.try_get::<_, Vec<u8>>(0).map_err(failed)?))?;
    }
    Ok(true)
}
