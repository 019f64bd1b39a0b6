-- Locks up to $2 finished builds submitted more than $1 seconds ago whose objects may go, oldest
-- first. A build whose source a younger (or unfinished) retry still uses waits for it. Rows
-- locked by another replica are skipped; the locks last until the caller's transaction ends.
-- $1 older than (s)  $2 limit
SELECT b.id FROM builds b
WHERE b.purged_at IS NULL AND b.status IN ('completed', 'failed', 'cancelled')
  AND b.submitted_at < now() - make_interval(secs => $1)
  AND NOT EXISTS (
    SELECT 1 FROM builds r
    WHERE r.source_key = b.source_key AND r.id <> b.id AND r.purged_at IS NULL
      AND r.original_build_id IS NOT NULL
      AND (r.submitted_at >= now() - make_interval(secs => $1)
           OR r.status NOT IN ('completed', 'failed', 'cancelled')))
ORDER BY b.submitted_at LIMIT $2
FOR UPDATE OF b SKIP LOCKED
