-- Where pending builds wait (a build's page, and the builds list a page at once): of the pending builds among
-- $1, each one's place in its queue's dispatch order (priority, then age), and per queue its
-- live workers (approved, not draining, seen within $2 seconds), their slots and held builds,
-- and how long its builds typically run (the median over the farm's last 500 completions).
-- One ranking per queue on the page, not one count per build.
-- $1 builds  $2 live within (s)
WITH page AS (SELECT id, queue FROM builds WHERE id = ANY($1) AND status = 'pending'),
queues AS (SELECT DISTINCT queue FROM page),
ranked AS (
    SELECT o.id, rank() OVER (PARTITION BY o.queue ORDER BY o.priority DESC, o.submitted_at) AS position
    FROM builds o WHERE o.status = 'pending' AND o.queue IN (SELECT queue FROM queues)),
live AS (
    SELECT q.queue, count(w.id) AS live_workers,
           COALESCE(sum(w.max_concurrent), 0)::bigint AS slots, COALESCE(sum(w.held), 0)::bigint AS held
    FROM queues q LEFT JOIN workers w
      ON q.queue = ANY(w.queues) AND w.status NOT IN ('offline', 'draining')
     AND w.approved_at IS NOT NULL AND w.last_seen_at > now() - make_interval(secs => $2)
    GROUP BY q.queue),
recent AS (
    SELECT r.queue, percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.completed_at - r.started_at)) AS typical_secs
    FROM (SELECT queue, status, started_at, completed_at FROM builds
          WHERE completed_at IS NOT NULL ORDER BY completed_at DESC LIMIT 500) r
    WHERE r.status = 'completed' AND r.started_at IS NOT NULL AND r.queue IN (SELECT queue FROM queues)
    GROUP BY r.queue)
SELECT p.id, r.position, l.live_workers, l.slots, l.held, c.typical_secs::float8 AS typical_secs
FROM page p JOIN ranked r ON r.id = p.id JOIN live l ON l.queue = p.queue
LEFT JOIN recent c ON c.queue = p.queue
