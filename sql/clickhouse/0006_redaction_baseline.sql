-- What redaction looked like at capture's last start: each redacted column of each mapped table by its
-- number (attnum, kept by a rename) and each table's highest column number, as JSON (see
-- `audit::redaction`). The next start compares the catalog with it, so a secret column renamed while capture
-- was stopped (or in the change that stopped it) is refused instead of stored in clear. '' in reports of
-- earlier versions: nothing remembered.
ALTER TABLE waltrail_sources ADD COLUMN redaction_baseline String DEFAULT '';
