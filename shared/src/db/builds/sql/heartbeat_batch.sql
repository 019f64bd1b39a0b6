-- assigned → building (a build's first beat), and a lease renewal, for every beat whose holder
-- still holds the attempt; a refused beat is absent from the result. The holder guard is
-- `worker_id = input.worker_id`: the same as the one-row guards' IS NOT DISTINCT FROM for a
-- worker id, which is never NULL, and the plan here is fixed by the join on the input.
-- $1 builds  $2 attempts  $3 workers  $4 progress (NULL: unchanged)  $5 leases (s)
WITH input AS (
    SELECT DISTINCT ON (id, attempt, worker_id) *
    FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::smallint[], $5::float8[])
        AS t(id, attempt, worker_id, progress, lease_secs))
UPDATE builds b SET status = 'building', started_at = COALESCE(b.started_at, now()),
    lease_expires_at = now() + make_interval(secs => input.lease_secs),
    progress = COALESCE(input.progress, b.progress), updated_at = now()
FROM input
WHERE b.id = input.id AND b.attempt = input.attempt AND b.worker_id = input.worker_id
  AND b.status IN ('assigned', 'building')
RETURNING b.id, b.attempt, b.worker_id, b.lease_expires_at, b.started_at = now() AS started,
    b.queue, b.platform
