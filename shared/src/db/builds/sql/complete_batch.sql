-- assigned | building → completed for every completion whose guard holds (the guard of
-- complete.sql); rows locked by another transaction are skipped, and their completions fall
-- back to the one-row statement. The holder guard is `worker_id = ask.worker_id`: the same as
-- IS NOT DISTINCT FROM for a worker id, which is never NULL, and the plan here is fixed by the
-- join on the locked ids, so complete.sql's reason for IS NOT DISTINCT FROM does not apply.
-- $1 builds  $2 attempts  $3 workers  $4 result keys  $5 result sizes  $6 result SHA-256s
WITH b AS (
    UPDATE builds SET status = 'completed', result_key = ask.key, result_size = ask.size,
        result_sha256 = ask.sha, started_at = COALESCE(builds.started_at, now()),
        completed_at = now(), lease_expires_at = NULL, progress = 100, updated_at = now()
    FROM (SELECT DISTINCT ON (t.id) t.*
          FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::bigint[], $6::text[])
              AS t(id, attempt, worker_id, key, size, sha)
          JOIN (SELECT id FROM builds WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED) l
              ON l.id = t.id
          ORDER BY t.id) ask
    WHERE builds.id = ask.id AND builds.attempt = ask.attempt AND builds.worker_id = ask.worker_id
      AND builds.status IN ('assigned', 'building')
    RETURNING builds.*),
a AS (
    UPDATE build_attempts ba SET ended_at = now(), outcome = 'completed' FROM b
    WHERE ba.build_id = b.id AND ba.attempt = b.attempt)
SELECT b.*, w.name AS worker_name FROM b LEFT JOIN workers w ON w.id = b.worker_id
