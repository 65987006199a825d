//! The stored form of an item: one ClickHouse row. The item becomes a row here and nowhere else; the read
//! side deserializes the same struct, and the RowBinary encoder writes its columns in this order.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

use crate::audit::item::AuditItem;

#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct ItemRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub id: Uuid,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub source_id: String,
    pub occurred_at_us: i64,
    pub ingested_at_us: i64,
    pub commit_lsn: u64,
    pub xid: u32,
    pub seq: u32,
    pub action: String,
    pub source: String,
    pub principal_id: String,
    pub principal_type: String,
    pub display_name: String,
    pub actor_email: String,
    pub on_behalf_of_id: String,
    pub on_behalf_of_display: String,
    pub auth_method: String,
    pub key_id: String,
    pub session_id: String,
    pub request_id: String,
    pub run_id: String,
    pub client_ip: String,
    pub user_agent: String,
    pub organization_id: String,
    pub project_id: String,
    pub resource_type: String,
    pub resource_id: String,
    pub resource_display: String,
    pub changed_fields: Vec<String>,
    pub diff: String,
    pub table_name: String,
    pub summary: String,
    pub actor_source: String,
    pub context_status: String,
    pub platform_wide: u8,
    pub chain_seq: u64,
    pub chain_prev: String,
    pub chain_hash: String,
    pub version: u64,
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl ItemRow {
    pub fn from_item(item: AuditItem, ingested_at_us: i64) -> Self {
        let a = item.actor;
        ItemRow {
            id: item.id,
            event_id: item.event_id,
            source_id: item.source_id,
            occurred_at_us: item.occurred_at_us,
            ingested_at_us,
            commit_lsn: item.commit_lsn,
            xid: item.xid,
            seq: item.seq,
            action: item.action,
            source: a.source,
            principal_id: a.principal_id,
            principal_type: a.principal_type.as_str().to_owned(),
            display_name: a.display_name,
            actor_email: a.email,
            on_behalf_of_id: a.on_behalf_of_id,
            on_behalf_of_display: a.on_behalf_of_display,
            auth_method: a.auth_method,
            key_id: a.key_id,
            session_id: a.session_id,
            request_id: a.request_id,
            run_id: a.run_id,
            client_ip: a.client_ip,
            user_agent: a.user_agent,
            organization_id: item.organization_id,
            project_id: item.project_id,
            resource_type: item.resource_type,
            resource_id: item.resource_id,
            resource_display: item.resource_display,
            changed_fields: item.changed_fields,
            diff: item.diff,
            table_name: item.table_name,
            summary: item.summary,
            actor_source: a.actor_source.as_str().to_owned(),
            context_status: a.context_status.as_str().to_owned(),
            platform_wide: item.platform_wide as u8,
            // Linked into its chain by the pipeline, in commit order (see `audit::chain`).
            chain_seq: 0,
            chain_prev: String::new(),
            chain_hash: String::new(),
            // ReplacingMergeTree keeps the highest version: the earliest ingestion wins.
            version: u64::MAX - ingested_at_us.max(0) as u64,
        }
    }
}

impl ItemRow {
    /// The stored fields the chain hash covers, exactly as stored.
    pub fn record(&self) -> crate::audit::chain::Record {
        self.with_record_ref(|r| r.to_record())
    }

    /// The hashed fields borrowed (ids formatted on the stack): the chain hashes every item with this,
    /// without copying it.
    pub fn with_record_ref<R>(
        &self,
        f: impl FnOnce(&crate::audit::chain::RecordRef<'_>) -> R,
    ) -> R {
        let mut id = [0u8; 36];
        let mut event = [0u8; 36];
        let r = crate::audit::chain::record_ref!(
            self,
            self.id.hyphenated().encode_lower(&mut id),
            self.event_id.hyphenated().encode_lower(&mut event)
        );
        f(&r)
    }

    pub fn chain_fields(&self) -> crate::audit::chain::ChainFields {
        crate::audit::chain::ChainFields {
            chain_seq: self.chain_seq,
            chain_prev: self.chain_prev.clone(),
            chain_hash: self.chain_hash.clone(),
        }
    }
}

/// A signed checkpoint as stored (`audit_checkpoints`).
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct CheckpointRow {
    pub source_id: String,
    pub organization_id: String,
    pub chain_seq: u64,
    pub head_hash: String,
    pub commit_lsn: u64,
    pub item_id: String,
    pub commit_time_us: i64,
    pub key_id: String,
    pub signature: String,
    /// ReplacingMergeTree's version (unsigned on every ClickHouse): the latest copy of a checkpoint is kept,
    /// and all copies are identical anyway.
    pub stored_at_us: u64,
    pub format: u8,
    /// 1 when `opens_after_us` is an opening's (`Checkpoint::opens_after_us`).
    pub opening: u8,
    pub opens_after_us: i64,
    pub signed_from: u64,
    pub every_items: u64,
    pub roster_seq: u64,
}

impl CheckpointRow {
    pub fn from_checkpoint(c: &crate::audit::chain::Checkpoint, now_us: i64) -> Self {
        CheckpointRow {
            source_id: c.source_id.clone(),
            organization_id: c.organization_id.clone(),
            chain_seq: c.chain_seq,
            head_hash: c.head_hash.clone(),
            commit_lsn: c.commit_lsn,
            item_id: c.item_id.clone(),
            commit_time_us: c.commit_time_us,
            key_id: c.key_id.clone(),
            signature: c.signature.clone(),
            stored_at_us: now_us.max(0) as u64,
            format: c.format,
            opening: u8::from(c.opens_after_us.is_some()),
            opens_after_us: c.opens_after_us.unwrap_or(0),
            signed_from: c.signed_from,
            every_items: c.every_items,
            roster_seq: c.roster_seq,
        }
    }

    pub fn checkpoint(&self) -> crate::audit::chain::Checkpoint {
        crate::audit::chain::Checkpoint {
            source_id: self.source_id.clone(),
            organization_id: self.organization_id.clone(),
            chain_seq: self.chain_seq,
            head_hash: self.head_hash.clone(),
            commit_lsn: self.commit_lsn,
            item_id: self.item_id.clone(),
            commit_time_us: self.commit_time_us,
            key_id: self.key_id.clone(),
            signature: self.signature.clone(),
            format: self.format,
            opens_after_us: (self.opening != 0).then_some(self.opens_after_us),
            signed_from: self.signed_from,
            every_items: self.every_items,
            roster_seq: self.roster_seq,
        }
    }
}

/// A source's signed roster of its chains, as stored (see `audit::chain::Roster`).
#[derive(Debug, Clone, clickhouse::Row, Serialize, Deserialize)]
pub struct RosterRow {
    pub source_id: String,
    pub roster_seq: u64,
    pub commit_lsn: u64,
    pub commit_time_us: i64,
    /// The entries as JSON ('' when read without them: a header).
    pub chains: String,
    pub chains_sha256: String,
    /// 1: every chain of the source; 0: those begun since the last roster.
    pub full: u8,
    pub key_id: String,
    pub signature: String,
    pub stored_at_us: u64,
}

impl RosterRow {
    pub fn from_roster(r: &crate::audit::chain::Roster, now_us: i64) -> Self {
        RosterRow {
            source_id: r.source_id.clone(),
            roster_seq: r.roster_seq,
            commit_lsn: r.commit_lsn,
            commit_time_us: r.commit_time_us,
            chains: crate::audit::chain::Roster::chains_json(&r.chains),
            chains_sha256: r.chains_sha256.clone(),
            full: u8::from(r.full),
            key_id: r.key_id.clone(),
            signature: r.signature.clone(),
            stored_at_us: now_us.max(0) as u64,
        }
    }

    /// The roster as stored; entries that do not parse read as none (their digest then fails).
    pub fn roster(&self) -> crate::audit::chain::Roster {
        crate::audit::chain::Roster {
            source_id: self.source_id.clone(),
            roster_seq: self.roster_seq,
            commit_lsn: self.commit_lsn,
            commit_time_us: self.commit_time_us,
            chains: serde_json::from_str(&self.chains).unwrap_or_default(),
            chains_sha256: self.chains_sha256.clone(),
            full: self.full != 0,
            key_id: self.key_id.clone(),
            signature: self.signature.clone(),
        }
    }
}

/// The columns in the order the row declares them (and the encoder writes them).
pub const COLUMNS: &[&str] = <ItemRow as clickhouse::Row>::COLUMN_NAMES;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::item::AuditItem;
    use crate::store::writer::EncodedRows;

    /// Reads RowBinary back in ItemRow's column order: the encoder's inverse, written from the format's
    /// description rather than from the encoder.
    struct Reader<'a>(&'a [u8]);

    impl Reader<'_> {
        fn take(&mut self, n: usize) -> &[u8] {
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            a
        }
        fn u64(&mut self) -> u64 {
            u64::from_le_bytes(self.take(8).try_into().unwrap())
        }
        fn u32(&mut self) -> u32 {
            u32::from_le_bytes(self.take(4).try_into().unwrap())
        }
        fn len(&mut self) -> usize {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let b = self.take(1)[0];
                v |= ((b & 0x7f) as u64) << shift;
                if b & 0x80 == 0 {
                    return v as usize;
                }
                shift += 7;
            }
        }
        fn string(&mut self) -> String {
            let n = self.len();
            String::from_utf8(self.take(n).to_vec()).unwrap()
        }
        fn uuid(&mut self) -> Uuid {
            let hi = self.u64();
            let lo = self.u64();
            Uuid::from_u64_pair(hi, lo)
        }
        fn row(&mut self) -> ItemRow {
            ItemRow {
                id: self.uuid(),
                event_id: self.uuid(),
                source_id: self.string(),
                occurred_at_us: self.u64() as i64,
                ingested_at_us: self.u64() as i64,
                commit_lsn: self.u64(),
                xid: self.u32(),
                seq: self.u32(),
                action: self.string(),
                source: self.string(),
                principal_id: self.string(),
                principal_type: self.string(),
                display_name: self.string(),
                actor_email: self.string(),
                on_behalf_of_id: self.string(),
                on_behalf_of_display: self.string(),
                auth_method: self.string(),
                key_id: self.string(),
                session_id: self.string(),
                request_id: self.string(),
                run_id: self.string(),
                client_ip: self.string(),
                user_agent: self.string(),
                organization_id: self.string(),
                project_id: self.string(),
                resource_type: self.string(),
                resource_id: self.string(),
                resource_display: self.string(),
                changed_fields: (0..self.len()).map(|_| self.string()).collect(),
                diff: self.string(),
                table_name: self.string(),
                summary: self.string(),
                actor_source: self.string(),
                context_status: self.string(),
                platform_wide: self.take(1)[0],
                chain_seq: self.u64(),
                chain_prev: self.string(),
                chain_hash: self.string(),
                version: self.u64(),
            }
        }
    }

    fn fields(r: &ItemRow) -> String {
        format!("{r:?}")
    }

    #[test]
    fn an_item_survives_the_trip_to_a_row_and_through_the_encoder() {
        let item = AuditItem::sample();
        let row = ItemRow::from_item(item.clone(), 1_700_000_000_500_000);
        // Every item field landed in the row field of its name.
        assert_eq!(row.id, item.id);
        assert_eq!(row.event_id, item.event_id);
        assert_eq!(row.principal_type, "AGENT");
        assert_eq!(row.actor_email, item.actor.email);
        assert_eq!(row.on_behalf_of_display, item.actor.on_behalf_of_display);
        assert_eq!(row.client_ip, item.actor.client_ip);
        assert_eq!(row.user_agent, item.actor.user_agent);
        assert_eq!(row.resource_display, item.resource_display);
        assert_eq!(row.changed_fields, item.changed_fields);
        assert_eq!(row.summary, item.summary);
        assert_eq!(row.actor_source, "CONTEXT_SESSION");
        assert_eq!(row.context_status, "SIGNED");
        assert_eq!(row.platform_wide, 1);
        // The earliest ingestion has the highest version, so it is the copy ReplacingMergeTree keeps.
        let later = ItemRow::from_item(item, 1_700_000_000_600_000);
        assert!(row.version > later.version);

        let mut enc = EncodedRows::default();
        enc.push(&row);
        enc.push(&later);
        let (bytes, n) = enc.take();
        assert_eq!(n, 2);
        let mut r = Reader(&bytes);
        assert_eq!(fields(&r.row()), fields(&row));
        assert_eq!(fields(&r.row()), fields(&later));
        assert!(r.0.is_empty(), "nothing left over");
    }

    #[test]
    fn the_borrowed_record_hashes_like_the_owned_one() {
        let row = ItemRow::from_item(AuditItem::sample(), 5);
        let owned = row.record().content_hash();
        let borrowed = row.with_record_ref(|r| r.content_hash());
        assert_eq!(owned, borrowed);
    }

    #[test]
    fn columns_follow_the_row_struct() {
        assert_eq!(COLUMNS.len(), 39);
        assert_eq!(COLUMNS.first(), Some(&"id"));
        assert_eq!(COLUMNS.last(), Some(&"version"));
    }
}
