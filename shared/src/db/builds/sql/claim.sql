-- pending → assigned: only the attempt that was dispatched (a build handed back keeps its
-- attempt, with dispatched_at cleared, until its next dispatch bumps it), for a worker that
-- serves the build's queue. Opens the attempt record.
-- $1 build  $2 attempt  $3 worker  $4 lease (s)  $5 the worker's queues
WITH b AS (
    UPDATE builds SET status = 'assigned', worker_id = $3,
        lease_expires_at = now() + make_interval(secs => $4),
        dispatched_at = NULL, started_at = NULL, progress = NULL, updated_at = now()
    WHERE id = $1 AND status = 'pending' AND dispatched_at IS NOT NULL AND attempt = $2
      AND queue = ANY($5)
    RETURNING *),
a AS (
    INSERT INTO build_attempts (build_id, attempt, worker_id)
    SELECT id, attempt, worker_id FROM b ON CONFLICT DO NOTHING)
SELECT b.*, w.name AS worker_name FROM b LEFT JOIN workers w ON w.id = b.worker_id
