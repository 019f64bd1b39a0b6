-- Builds that finished in the last $1 seconds, per bucket of $2 seconds (aligned on the epoch),
-- oldest first: outcomes, and percentiles of started → completed (ms) over the builds that
-- completed. Buckets with no finished build are absent; only team $3's builds unless it is NULL.
-- $1 window (s)  $2 bucket (s)  $3 team
SELECT to_timestamp(floor(extract(epoch FROM completed_at) / $2) * $2) AS at,
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
  AND status IN ('completed', 'failed', 'cancelled') AND ($3::text IS NULL OR team = $3)
GROUP BY 1 ORDER BY 1
