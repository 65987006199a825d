-- Checkpoints signed in format 2 (see `audit::chain::Checkpoint`): a chain's first item of each day is
-- checkpointed as an opening that says when the item before it was committed, so a verified range whose
-- oldest items were deleted together with their checkpoints no longer passes. Checkpoints stored before
-- this migration read format 1, no opening.
ALTER TABLE audit_checkpoints ADD COLUMN format UInt8 DEFAULT 1;
ALTER TABLE audit_checkpoints ADD COLUMN opening UInt8 DEFAULT 0;
ALTER TABLE audit_checkpoints ADD COLUMN opens_after_us Int64 DEFAULT 0;
-- From which chain position on every day opened with a signed opening, up to the checkpoint.
ALTER TABLE audit_checkpoints ADD COLUMN signed_from UInt64 DEFAULT 0;
-- The checkpoint_every_items it was signed under: by when the next one was due.
ALTER TABLE audit_checkpoints ADD COLUMN every_items UInt64 DEFAULT 0;
-- The number of the source's last roster when it was signed: rosters cut from the sequence's tail show.
ALTER TABLE audit_checkpoints ADD COLUMN roster_seq UInt64 DEFAULT 0;
