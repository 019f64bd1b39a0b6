-- How many builds match list.sql's filters, ignoring its cursor. Each filter applies unless its
-- parameter is NULL.
-- $1 status  $2 platform  $3 worker  $4 queue  $5 team  $6 submitted by (a key)
SELECT count(*) FROM builds b
WHERE ($1::text IS NULL OR b.status = $1) AND ($2::text IS NULL OR b.platform = $2)
  AND ($3::uuid IS NULL OR b.worker_id = $3) AND ($4::text IS NULL OR b.queue = $4)
  AND ($5::text IS NULL OR b.team = $5) AND ($6::uuid IS NULL OR b.submitted_by = $6)
