-- What one worker has done, from its attempt records: attempts, completed, and failed or timed
-- out.
-- $1 worker
SELECT count(*) AS total, count(*) FILTER (WHERE outcome = 'completed') AS completed,
    count(*) FILTER (WHERE outcome IN ('failed', 'timed_out')) AS failed
FROM build_attempts WHERE worker_id = $1
