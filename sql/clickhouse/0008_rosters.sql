-- Each source's signed roster of its chains, once per day of commit time (see `audit::chain::Roster`):
-- the chains' own checkpoints cannot show that a whole chain was deleted with them; the roster can. A full
-- roster lists every chain of the source (the first of each day), the others the chains begun since.
CREATE TABLE IF NOT EXISTS audit_rosters
(
    source_id String,
    roster_seq UInt64,
    commit_lsn UInt64,
    commit_time_us Int64,
    chains String,
    chains_sha256 String,
    full UInt8,
    key_id String,
    signature String,
    stored_at_us UInt64
)
ENGINE = ReplacingMergeTree(stored_at_us)
PARTITION BY toYYYYMM(toDateTime(intDiv(commit_time_us, 1000000)))
ORDER BY (source_id, roster_seq);
