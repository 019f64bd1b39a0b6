-- assigned | building → completed, by the holder of the attempt, recording the artifact storage
-- signed a receipt for. Closes the attempt record.
-- The holder guard compares `worker_id IS NOT DISTINCT FROM $3` (the same as `=` for a worker
-- id, which is never NULL) so that it cannot be used as an index condition: on a table without
-- statistics, Postgres' cached plan otherwise read the row through `builds_worker`, every build
-- that worker ever ran, instead of the primary key.
-- $1 build  $2 attempt  $3 worker  $4 result key  $5 result size  $6 result SHA-256
WITH b AS (
    UPDATE builds SET status = 'completed', result_key = $4, result_size = $5, result_sha256 = $6,
        started_at = COALESCE(started_at, now()), completed_at = now(), lease_expires_at = NULL,
        progress = 100, updated_at = now()
    WHERE id = $1 AND attempt = $2 AND worker_id IS NOT DISTINCT FROM $3
      AND status IN ('assigned', 'building')
    RETURNING *),
a AS (
    UPDATE build_attempts ba SET ended_at = now(), outcome = 'completed' FROM b
    WHERE ba.build_id = b.id AND ba.attempt = b.attempt)
SELECT b.*, w.name AS worker_name FROM b LEFT JOIN workers w ON w.id = b.worker_id
