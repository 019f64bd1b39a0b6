-- Running builds past their time limit end failed; the caller stops them on their workers. Safe
-- on many replicas (SKIP LOCKED).
-- $1 limit
WITH late AS (
    SELECT id FROM builds WHERE status IN ('assigned', 'building')
      AND started_at + make_interval(secs => timeout_secs) < now()
    ORDER BY started_at LIMIT $1 FOR UPDATE SKIP LOCKED),
b AS (
    UPDATE builds b SET status = 'failed', completed_at = now(), lease_expires_at = NULL,
        updated_at = now(),
        error_message = 'timed out: the build ran longer than its limit of ' || b.timeout_secs || ' s'
    FROM late WHERE b.id = late.id
    RETURNING b.id, b.attempt, b.status, b.worker_id, b.queue, b.platform),
a AS (
    UPDATE build_attempts ba SET ended_at = now(), outcome = 'timed_out' FROM b
    WHERE ba.build_id = b.id AND ba.attempt = b.attempt AND ba.ended_at IS NULL)
SELECT * FROM b
