-- Any status that has not ended → cancelled. The returned build names the worker to stop, if
-- any; an open attempt record is closed.
-- $1 build
WITH b AS (
    UPDATE builds SET status = 'cancelled', completed_at = now(), lease_expires_at = NULL,
        dispatched_at = NULL, error_message = 'cancelled', updated_at = now()
    WHERE id = $1 AND status IN ('pending', 'assigned', 'building')
    RETURNING *),
a AS (
    UPDATE build_attempts ba SET ended_at = now(), outcome = 'cancelled' FROM b
    WHERE ba.build_id = b.id AND ba.attempt = b.attempt AND ba.ended_at IS NULL)
SELECT b.*, w.name AS worker_name FROM b LEFT JOIN workers w ON w.id = b.worker_id
