//! Inserting batches of items. A batch is inserted whole or retried whole: its rows are deterministic, so a
//! retry after a half-finished insert leaves the same rows.

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
            principal_type: a.principal_type,
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
            diff: item.diff.to_string(),
            table_name: item.table_name,
            summary: item.summary,
            // ReplacingMergeTree keeps the highest version: the earliest ingestion wins.
            version: u64::MAX - ingested_at_us.max(0) as u64,
        }
    }
}

/// Insert one batch. Any error leaves it to the caller to retry the same rows.
pub async fn insert_batch(
    client: &clickhouse::Client,
    rows: &[ItemRow],
) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<ItemRow>(super::schema::ITEMS_TABLE).await?;
    for r in rows {
        insert.write(r).await?;
    }
    insert.end().await
}
