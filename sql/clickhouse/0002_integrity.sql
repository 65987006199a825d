-- How each item's actor was known, whether the transaction's context message was trusted, and whether the
-- item concerns every organization (a TRUNCATE, a gap, a rejected event naming none). Existing rows read
-- '' / 0: recorded before waltrail said.
ALTER TABLE audit_items ADD COLUMN actor_source String DEFAULT '';
ALTER TABLE audit_items ADD COLUMN context_status String DEFAULT '';
ALTER TABLE audit_items ADD COLUMN platform_wide UInt8 DEFAULT 0;
