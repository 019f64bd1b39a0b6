-- Presence reports of many workers in one statement: each is seen now, and building while it
-- runs builds, else idle; a draining worker stays draining. Returns the status of each worker
-- that exists (a worker reported twice counts once).
-- $1 workers  $2 builds each runs
UPDATE workers w SET last_seen_at = now(),
    status = CASE WHEN w.status = 'draining' THEN 'draining'
                  WHEN r.running > 0 THEN 'building' ELSE 'idle' END
FROM (SELECT DISTINCT ON (id) * FROM unnest($1::uuid[], $2::int[]) AS t(id, running)
      ORDER BY id) r
WHERE w.id = r.id
RETURNING w.id, w.status
