-- Terminal builds whose log is not archived yet (how far the archiver is behind).
-- (no parameters)
SELECT count(*) FROM builds
WHERE logs_archived_at IS NULL AND status IN ('completed', 'failed', 'cancelled')
