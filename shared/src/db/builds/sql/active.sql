-- Assigned and building builds, oldest first, with their workers' names; only those held by
-- workers that key $2 registered unless it is NULL, only team $3's unless it is NULL.
-- $1 limit  $2 registered by (API key)  $3 team
SELECT b.*, w.name AS worker_name FROM builds b LEFT JOIN workers w ON w.id = b.worker_id
WHERE b.status IN ('assigned', 'building') AND ($2::uuid IS NULL OR w.registered_by = $2)
  AND ($3::text IS NULL OR b.team = $3)
ORDER BY b.id LIMIT $1
