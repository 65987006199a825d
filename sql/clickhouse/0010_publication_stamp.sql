-- The publication's row versions as capture last saw them (see `capture::catalog::PublicationStamp`): the
-- next start compares them with the publication's, so an edit made while capture was stopped, even one set
-- back before the start (a delete left out by a narrowed `publish`), is recorded as a gap instead of
-- passing unseen. '' in reports of earlier versions: nothing remembered.
ALTER TABLE waltrail_sources ADD COLUMN publication_stamp String DEFAULT '';
