-- The figures of finished_buckets.sql over the whole window of the last $1 seconds: one row,
-- whose `at` is the window's start; only team $2's builds unless it is NULL.
-- $1 window (s)  $2 team
SELECT now() - make_interval(secs => $1::double precision) AS at,
    count(*) FILTER (WHERE status = 'completed') AS completed,
    count(*) FILTER (WHERE status = 'failed') AS failed,
    count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
    percentile_cont(0.5)
        WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at) * 1000)
        FILTER (WHERE status = 'completed' AND started_at IS NOT NULL) AS p50_ms,
    percentile_cont(0.9)
        WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at) * 1000)
        FILTER (WHERE status = 'completed' AND started_at IS NOT NULL) AS p90_ms,
    percentile_cont(0.99)
        WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at) * 1000)
        FILTER (WHERE status = 'completed' AND started_at IS NOT NULL) AS p99_ms
FROM builds
WHERE completed_at IS NOT NULL
  AND completed_at > now() - make_interval(secs => $1::double precision)
  AND status IN ('completed', 'failed', 'cancelled') AND ($2::text IS NULL OR team = $2)
