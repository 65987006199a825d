-- Gaps capture found but could not record in the trail where it found them (a mapped table's member made
-- UNLOGGED, which stops capture; an inheritance child that joined a mapped table holding rows): a JSON
-- array carried by every report of the source until the next start records them as gap items at the
-- position where capture resumes. '' : none pending.
ALTER TABLE waltrail_sources ADD COLUMN pending_gaps String DEFAULT '';
