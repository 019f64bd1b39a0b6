-- Every worker as the registry shows it, oldest registration first: its status as of now (one
-- not seen for $1 seconds shows offline), the builds it holds, the attempts it ran that ended
-- and those of them that completed, and whether it is approved.
-- $1 offline after (s)
SELECT w.id, w.name,
    CASE WHEN w.status <> 'offline' AND w.last_seen_at < now() - make_interval(secs => $1)
         THEN 'offline' ELSE w.status END AS status,
    w.capabilities, w.last_seen_at, w.registered_at,
    COALESCE(array_agg(b.id ORDER BY b.id) FILTER (WHERE b.id IS NOT NULL), '{}') AS builds,
    w.platforms, w.queues,
    COALESCE(max(t.total), 0)::bigint AS builds_total,
    COALESCE(max(t.completed), 0)::bigint AS builds_completed,
    w.approved_at IS NOT NULL AS approved
FROM workers w
LEFT JOIN builds b ON b.worker_id = w.id AND b.status IN ('assigned', 'building')
LEFT JOIN (SELECT worker_id, count(*) FILTER (WHERE ended_at IS NOT NULL) AS total,
                  count(*) FILTER (WHERE outcome = 'completed') AS completed
           FROM build_attempts GROUP BY worker_id) t ON t.worker_id = w.id
GROUP BY w.id ORDER BY w.registered_at
