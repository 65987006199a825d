-- Tamper evidence: each item's place in its organization's hash chain (see src/audit/chain.rs), and the
-- signed checkpoints of each chain. Items stored before this migration read 0 / '': outside any chain.
ALTER TABLE audit_items ADD COLUMN chain_seq UInt64 DEFAULT 0;
ALTER TABLE audit_items ADD COLUMN chain_prev String DEFAULT '';
ALTER TABLE audit_items ADD COLUMN chain_hash String DEFAULT '';
CREATE TABLE IF NOT EXISTS audit_checkpoints
(
    source_id String,
    organization_id String,
    chain_seq UInt64,
    head_hash String,
    commit_lsn UInt64,
    item_id String,
    commit_time_us Int64,
    key_id String,
    signature String,
    stored_at_us UInt64
)
ENGINE = ReplacingMergeTree(stored_at_us)
PARTITION BY toYYYYMM(toDateTime(intDiv(commit_time_us, 1000000)))
ORDER BY (organization_id, source_id, chain_seq);
