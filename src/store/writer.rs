//! Inserting batches of items. A batch is inserted whole or retried whole: its rows are deterministic, so a
//! retry after a half-finished insert leaves the same rows.

use bytes::{BufMut, Bytes, BytesMut};
use uuid::Uuid;

use crate::store::row::{ItemRow, COLUMNS};

/// Rows already encoded in ClickHouse's RowBinary format. A batch is kept as these bytes rather than as
/// structs: a large batch then costs about its encoded size in memory, is encoded once however often its
/// insert is retried, and can be handed to a separate insert task without copying.
#[derive(Debug, Default)]
pub struct EncodedRows {
    buf: BytesMut,
    rows: usize,
    /// Bytes to reserve for each new batch.
    reserve: usize,
}

impl EncodedRows {
    /// Rows of batches that close at about `batch_bytes`: each batch is allocated once at that size (plus
    /// room for its last row) instead of growing by doubling, which would leave up to twice its size in use.
    pub fn with_batch_bytes(batch_bytes: usize) -> Self {
        let reserve = batch_bytes.saturating_add(256 << 10).min(1 << 30);
        EncodedRows {
            buf: BytesMut::with_capacity(reserve),
            rows: 0,
            reserve,
        }
    }

    pub fn push(&mut self, r: &ItemRow) {
        if self.buf.capacity() == 0 && self.reserve > 0 {
            self.buf.reserve(self.reserve);
        }
        let b = &mut self.buf;
        uuid(b, &r.id);
        uuid(b, &r.event_id);
        string(b, &r.source_id);
        b.put_i64_le(r.occurred_at_us);
        b.put_i64_le(r.ingested_at_us);
        b.put_u64_le(r.commit_lsn);
        b.put_u32_le(r.xid);
        b.put_u32_le(r.seq);
        for s in [
            &r.action,
            &r.source,
            &r.principal_id,
            &r.principal_type,
            &r.display_name,
            &r.actor_email,
            &r.on_behalf_of_id,
            &r.on_behalf_of_display,
            &r.auth_method,
            &r.key_id,
            &r.session_id,
            &r.request_id,
            &r.run_id,
            &r.client_ip,
            &r.user_agent,
            &r.organization_id,
            &r.project_id,
            &r.resource_type,
            &r.resource_id,
            &r.resource_display,
        ] {
            string(b, s);
        }
        leb128(b, r.changed_fields.len() as u64);
        for f in &r.changed_fields {
            string(b, f);
        }
        string(b, &r.diff);
        string(b, &r.table_name);
        string(b, &r.summary);
        string(b, &r.actor_source);
        string(b, &r.context_status);
        b.put_u8(r.platform_wide);
        b.put_u64_le(r.chain_seq);
        string(b, &r.chain_prev);
        string(b, &r.chain_hash);
        b.put_u64_le(r.version);
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Encoded size in bytes.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Hand over the rows encoded so far, leaving this empty.
    pub fn take(&mut self) -> (Bytes, usize) {
        let rows = std::mem::take(&mut self.rows);
        let bytes = self.buf.split().freeze();
        // What is left of the old allocation belongs to `bytes` now; start the next batch afresh.
        self.buf = BytesMut::new();
        (bytes, rows)
    }
}

fn leb128(b: &mut BytesMut, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            b.put_u8(byte);
            return;
        }
        b.put_u8(byte | 0x80);
    }
}

fn string(b: &mut BytesMut, s: &str) {
    leb128(b, s.len() as u64);
    b.put_slice(s.as_bytes());
}

/// ClickHouse's UUID in RowBinary: the high then the low 64 bits, each little-endian.
fn uuid(b: &mut BytesMut, u: &Uuid) {
    let (hi, lo) = u.as_u64_pair();
    b.put_u64_le(hi);
    b.put_u64_le(lo);
}

/// Chunks of an insert body: large enough to keep per-chunk overhead (compression frames, channel hand-offs)
/// small, small enough that ClickHouse starts parsing while the rest is still on its way.
const CHUNK: usize = 1 << 20;

/// Insert encoded rows as one INSERT. Any error leaves it to the caller to retry the same bytes.
pub async fn insert_encoded(
    client: &clickhouse::Client,
    rows: &Bytes,
) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert_formatted_with(items_insert_sql());
    send_encoded(&mut insert, rows).await?;
    insert.end().await
}

/// Send encoded rows into an INSERT that stays open (in chunks of [`CHUNK`]).
pub async fn send_encoded(
    insert: &mut clickhouse::insert_formatted::InsertFormatted,
    rows: &Bytes,
) -> Result<(), clickhouse::error::Error> {
    let mut at = 0;
    while at < rows.len() {
        let end = (at + CHUNK).min(rows.len());
        insert.send(rows.slice(at..end)).await?;
        at = end;
    }
    Ok(())
}

/// The statement an items insert sends (its rows follow in RowBinary, encoded by [`EncodedRows`]).
pub fn items_insert_sql() -> String {
    format!(
        "INSERT INTO {}({}) FORMAT RowBinary",
        super::schema::ITEMS_TABLE,
        COLUMNS.join(",")
    )
}

/// Where signed checkpoints are stored.
pub const CHECKPOINTS_TABLE: &str = "audit_checkpoints";

/// Insert one batch of rows. Any error leaves it to the caller to retry the same rows.
pub async fn insert_batch(
    client: &clickhouse::Client,
    rows: &[ItemRow],
) -> Result<(), clickhouse::error::Error> {
    let mut enc = EncodedRows::default();
    for r in rows {
        enc.push(r);
    }
    insert_encoded(client, &enc.take().0).await
}

/// Insert signed checkpoints (after the items they cover are stored). Any error leaves it to the caller to
/// retry; checkpoints are deterministic, so a retry or a replay stores the same rows.
pub async fn insert_checkpoints(
    client: &clickhouse::Client,
    rows: &[crate::store::row::CheckpointRow],
) -> Result<(), clickhouse::error::Error> {
    insert_rows(client, CHECKPOINTS_TABLE, rows).await
}

pub const ROSTERS_TABLE: &str = "audit_rosters";

/// Store sources' rosters (after the checkpoints of the same batch); deterministic like them.
pub async fn insert_rosters(
    client: &clickhouse::Client,
    rows: &[crate::store::row::RosterRow],
) -> Result<(), clickhouse::error::Error> {
    insert_rows(client, ROSTERS_TABLE, rows).await
}

async fn insert_rows<T: clickhouse::RowOwned + clickhouse::RowWrite>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[T],
) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_matches_the_format() {
        let enc = |v: u64| {
            let mut b = BytesMut::new();
            leb128(&mut b, v);
            b.to_vec()
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [127]);
        assert_eq!(enc(128), [0x80, 1]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
    }
}
