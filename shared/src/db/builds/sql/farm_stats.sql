-- Farm-wide figures for /api/stats, measured from the rows: queued, active, submitted today
-- (UTC), all builds, and the sum of started → completed over completed builds (ms).
-- (no parameters)
SELECT count(*) FILTER (WHERE status = 'pending') AS builds_queued,
    count(*) FILTER (WHERE status IN ('assigned', 'building')) AS active_builds,
    count(*) FILTER (WHERE submitted_at >= date_trunc('day', now() AT TIME ZONE 'UTC')
        AT TIME ZONE 'UTC') AS builds_today,
    count(*) AS total_builds,
    COALESCE(sum((extract(epoch FROM completed_at - started_at) * 1000)::bigint)
        FILTER (WHERE status = 'completed' AND started_at IS NOT NULL), 0)::bigint
        AS total_build_time_ms
FROM builds
