-- Leases up to $3 terminal builds to the log archiver for $2 seconds: builds whose row last
-- changed (they ended) more than $1 seconds ago, so late lines are in the stream, not purged,
-- with no archive and no live lease. Rows locked by another replica are skipped; a crashed
-- archiver's lease runs out and another takes the build.
-- $1 settle (s)  $2 lease (s)  $3 limit
UPDATE builds SET logs_archive_lease = now() + make_interval(secs => $2)
WHERE id IN (SELECT id FROM builds
    WHERE logs_archived_at IS NULL AND status IN ('completed', 'failed', 'cancelled')
      AND purged_at IS NULL AND updated_at < now() - make_interval(secs => $1)
      AND (logs_archive_lease IS NULL OR logs_archive_lease < now())
    ORDER BY updated_at LIMIT $3 FOR UPDATE SKIP LOCKED)
RETURNING id
