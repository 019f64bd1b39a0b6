-- Terminal builds whose log is not archived yet (a gauge for operators).
-- (no parameters)
SELECT count(*) FROM builds
WHERE logs_archived_at IS NULL AND status IN ('completed', 'failed', 'cancelled')
