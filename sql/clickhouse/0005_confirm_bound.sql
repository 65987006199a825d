-- How far capture may confirm its slot: each report names a position capture confirms nothing beyond until
-- a later report, written before any confirmation past it. A slot found further on at start was moved by
-- something else (dropped and created again, advanced, read by another consumer): a gap waltrail refuses to
-- pass over silently. 0 in reports of earlier versions: unknown, not checked.
ALTER TABLE waltrail_sources ADD COLUMN confirm_bound_lsn UInt64 DEFAULT 0;
