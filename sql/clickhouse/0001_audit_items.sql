-- Audit items: one row per changed resource.
-- Keeps to what ClickHouse 18.16 and current releases both accept (see README, "ClickHouse compatibility"):
-- microseconds in an Int64 (no DateTime64), no TTL (retention drops day partitions), no skipping indexes.
-- ReplacingMergeTree on a deterministic id makes a replay after a crash harmless; readers dedup with
-- `LIMIT 1 BY id` until merges remove the copies. `version` keeps the first ingestion of a replayed row.
CREATE TABLE IF NOT EXISTS audit_items
(
    id UUID,
    event_id UUID,
    source_id String,
    occurred_at_us Int64,
    occurred_at DateTime MATERIALIZED toDateTime(intDiv(occurred_at_us, 1000000)),
    ingested_at_us Int64,
    commit_lsn UInt64,
    xid UInt32,
    seq UInt32,
    action String,
    source String,
    principal_id String,
    principal_type String,
    display_name String,
    actor_email String,
    on_behalf_of_id String,
    on_behalf_of_display String,
    auth_method String,
    key_id String,
    session_id String,
    request_id String,
    run_id String,
    client_ip String,
    user_agent String,
    organization_id String,
    project_id String,
    resource_type String,
    resource_id String,
    resource_display String,
    changed_fields Array(String),
    diff String,
    table_name String,
    summary String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(toDateTime(intDiv(occurred_at_us, 1000000)))
ORDER BY (organization_id, occurred_at_us, id)
