-- Pending builds per queue, with how many live workers (approved, not draining, seen within $1
-- seconds) serve each queue. Queues served by a worker seen in the last hour are listed even
-- when empty, so gauges fall back to zero.
-- $1 live within (s)
WITH pend AS (
    SELECT queue, count(*) AS n FROM (
        SELECT queue FROM builds WHERE status = 'pending' AND dispatched_at IS NULL
        UNION ALL
        SELECT queue FROM builds WHERE status = 'pending' AND dispatched_at IS NOT NULL) p
    GROUP BY queue),
live AS (
    SELECT q AS queue, count(*) AS n FROM workers w, unnest(w.queues) q
    WHERE w.status NOT IN ('offline', 'draining') AND w.approved_at IS NOT NULL
      AND w.last_seen_at > now() - make_interval(secs => $1)
    GROUP BY q),
known AS (
    SELECT DISTINCT unnest(queues) AS queue FROM workers
    WHERE status <> 'offline' AND last_seen_at > now() - interval '1 hour'),
qs AS (SELECT queue FROM pend UNION SELECT queue FROM known)
SELECT qs.queue, COALESCE(p.n, 0)::bigint AS pending, COALESCE(l.n, 0)::bigint AS live_workers
FROM qs LEFT JOIN pend p ON p.queue = qs.queue LEFT JOIN live l ON l.queue = qs.queue
ORDER BY qs.queue
