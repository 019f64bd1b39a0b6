-- pending → assigned for every claim whose guard holds (the guard of claim.sql); rows locked by
-- another transaction are skipped, and their claims fall back to the one-row statement.
-- Queue lists are comma-joined (queue names are [a-z0-9._-]).
-- $1 builds  $2 attempts  $3 workers  $4 each worker's queues  $5 leases (s)
WITH b AS (
    UPDATE builds SET status = 'assigned', worker_id = ask.worker_id,
        lease_expires_at = now() + make_interval(secs => ask.lease_secs),
        dispatched_at = NULL, started_at = NULL, progress = NULL, updated_at = now()
    FROM (SELECT DISTINCT ON (t.id) t.*
          FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::float8[])
              AS t(id, attempt, worker_id, queues, lease_secs)
          JOIN (SELECT id FROM builds WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED) l
              ON l.id = t.id
          ORDER BY t.id) ask
    WHERE builds.id = ask.id AND builds.status = 'pending' AND builds.dispatched_at IS NOT NULL
      AND builds.attempt = ask.attempt
      AND builds.queue = ANY(string_to_array(ask.queues, ','))
    RETURNING builds.*),
a AS (
    INSERT INTO build_attempts (build_id, attempt, worker_id)
    SELECT id, attempt, worker_id FROM b ON CONFLICT DO NOTHING)
SELECT b.*, w.name AS worker_name FROM b LEFT JOIN workers w ON w.id = b.worker_id
