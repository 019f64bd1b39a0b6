-- Where a pending build waits: its place in its queue's dispatch order (priority, then age),
-- and the live workers of that queue (approved, not draining, seen within $2 seconds) with
-- their slots and the builds they hold, and how long the queue's builds typically run (the
-- median over the farm's last 500 completions: bounded, read through builds_completed_at). No
-- row unless the build is pending.
-- $1 build  $2 live within (s)
WITH b AS (SELECT queue, priority, submitted_at FROM builds WHERE id = $1 AND status = 'pending'),
live AS (
    SELECT w.max_concurrent, w.held FROM workers w, b
    WHERE b.queue = ANY(w.queues) AND w.status NOT IN ('offline', 'draining')
      AND w.approved_at IS NOT NULL AND w.last_seen_at > now() - make_interval(secs => $2))
SELECT (SELECT count(*) FROM builds o WHERE o.status = 'pending' AND o.queue = b.queue
          AND (o.priority > b.priority
               OR (o.priority = b.priority AND o.submitted_at < b.submitted_at))) + 1 AS position,
       (SELECT count(*) FROM live) AS live_workers,
       (SELECT COALESCE(sum(max_concurrent), 0) FROM live)::bigint AS slots,
       (SELECT COALESCE(sum(held), 0) FROM live)::bigint AS held,
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.completed_at - r.started_at))
          FROM (SELECT queue, status, started_at, completed_at FROM builds
                WHERE completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT 500) r
          WHERE r.queue = b.queue AND r.status = 'completed' AND r.started_at IS NOT NULL
       )::float8 AS typical_secs
FROM b
