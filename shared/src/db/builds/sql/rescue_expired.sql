-- Expired leases: back to pending (a new attempt is dispatched after the backoff), or failed
-- once max_attempts were used (the requeue rule, `build_requeue`). Safe on many replicas (SKIP
-- LOCKED). Returns each build moved, with the worker that lost it.
-- $1 limit  $2 backoff base (s)  $3 backoff cap (s)
WITH expired AS (
    SELECT id, worker_id AS lost_worker FROM builds
    WHERE status IN ('assigned', 'building') AND lease_expires_at < now()
    ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED),
b AS (
    UPDATE builds b
       SET (status, completed_at, worker_id, started_at, run_after, error_message)
           = (SELECT * FROM build_requeue(b.attempt, b.max_attempts, b.worker_id, b.started_at,
                  b.run_after, b.error_message, true,
                  'worker lost: its lease expired on attempt ' || b.attempt || ' of ' || b.max_attempts,
                  $2, $3)),
           lease_expires_at = NULL, dispatched_at = NULL, progress = NULL, updated_at = now()
      FROM expired WHERE b.id = expired.id
    RETURNING b.id, b.attempt, b.status, expired.lost_worker, b.queue, b.platform),
a AS (
    UPDATE build_attempts ba SET ended_at = now(), outcome = 'lost' FROM b
    WHERE ba.build_id = b.id AND ba.attempt = b.attempt AND ba.ended_at IS NULL)
SELECT id, attempt, status, lost_worker AS worker_id, queue, platform FROM b
