-- The one requeue rule. A build whose attempt ended without an outcome of its own (its lease ran
-- out, its worker gave it back, or its command failed and it asked for retries) goes back to
-- `pending`, waiting an exponential backoff with ±20 % jitter (min(cap, base · 2^(attempt−1))),
-- while it has attempts left; otherwise it ends `failed` with `failed_message`. `build_fail`,
-- `build_abandon` and `build_rescue_expired` (shared/src/db/builds/transitions.rs) all set their
-- columns from this function, so the rule is written once:
--   UPDATE builds b
--      SET (status, completed_at, worker_id, started_at, run_after, error_message)
--          = (SELECT * FROM build_requeue(b.attempt, b.max_attempts, b.worker_id, b.started_at,
--                 b.run_after, b.error_message, <requeue wanted>, <failed message>, <base>, <cap>)), …
-- A requeue clears the worker and start time (the next dispatch starts a new attempt) and keeps
-- the last error; a failed end keeps the worker and start time (its attempt record names them)
-- and its run_after.
CREATE FUNCTION build_requeue(
    attempt int,
    max_attempts int,
    worker_id uuid,
    started_at timestamptz,
    run_after timestamptz,
    error_message text,
    wanted boolean,
    failed_message text,
    base_secs float8,
    cap_secs float8
) RETURNS TABLE (
    new_status text,
    new_completed_at timestamptz,
    new_worker_id uuid,
    new_started_at timestamptz,
    new_run_after timestamptz,
    new_error_message text
)
LANGUAGE sql VOLATILE AS $$
    SELECT
        CASE WHEN requeue THEN 'pending' ELSE 'failed' END,
        CASE WHEN requeue THEN NULL ELSE now() END,
        CASE WHEN requeue THEN NULL ELSE worker_id END,
        CASE WHEN requeue THEN NULL ELSE started_at END,
        CASE WHEN requeue
             THEN now() + make_interval(secs => least(cap_secs,
                      base_secs * power(2, greatest(attempt, 1) - 1)) * (0.8 + random() * 0.4))
             ELSE run_after END,
        CASE WHEN requeue THEN error_message ELSE failed_message END
    FROM (SELECT wanted AND attempt < max_attempts AS requeue) r
$$;
