-- assigned | building → failed with the worker's error, by the holder of the attempt; or back
-- to pending after a backoff when the build asked for retries of failed commands and has
-- attempts left (the requeue rule, `build_requeue`, migrations/20261207000002). Closes the
-- attempt record.
-- $1 build  $2 attempt  $3 worker  $4 error  $5 backoff base (s)  $6 backoff cap (s)
WITH b AS (
    UPDATE builds b
       SET (status, completed_at, worker_id, started_at, run_after, error_message)
           = (SELECT * FROM build_requeue(b.attempt, b.max_attempts, b.worker_id, b.started_at,
                  b.run_after, $4, b.retry_on_failure, $4, $5, $6)),
           lease_expires_at = NULL, dispatched_at = NULL, updated_at = now()
     WHERE b.id = $1 AND b.attempt = $2 AND b.worker_id IS NOT DISTINCT FROM $3
       AND b.status IN ('assigned', 'building')
    RETURNING *),
a AS (
    UPDATE build_attempts ba SET ended_at = now(), outcome = 'failed', error = $4 FROM b
    WHERE ba.build_id = b.id AND ba.attempt = b.attempt)
SELECT b.*, w.name AS worker_name FROM b LEFT JOIN workers w ON w.id = b.worker_id
