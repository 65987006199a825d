-- Each source's heartbeat: every capture process reports here, every few seconds, how far it has confirmed
-- its source's WAL, how far that source's server is, and its last commit; `waltrail check` and `/metrics`
-- read every source's latest report, whichever process captures it. Merges keep one row per source (the
-- latest report wins); readers take the latest with `LIMIT 1 BY source_id` until they have.
CREATE TABLE IF NOT EXISTS waltrail_sources
(
    source_id String,
    confirmed_lsn UInt64,
    server_lsn UInt64,
    last_commit_time_us Int64,
    reported_at_us UInt64,
    host String,
    version String
)
ENGINE = ReplacingMergeTree(reported_at_us)
ORDER BY (source_id);
