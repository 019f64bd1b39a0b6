-- A page of builds, newest first, with their workers' and submitting keys' names. Each filter
-- applies unless its parameter is NULL; $4 is the cursor (the last id of the previous page).
-- $1 status  $2 platform  $3 worker  $4 after (build id)  $5 limit  $6 queue  $7 team
-- $8 submitted by (a key)
SELECT b.*, w.name AS worker_name, k.name AS submitted_by_name
FROM builds b LEFT JOIN workers w ON w.id = b.worker_id LEFT JOIN api_keys k ON k.id = b.submitted_by
WHERE ($1::text IS NULL OR b.status = $1) AND ($2::text IS NULL OR b.platform = $2)
  AND ($3::uuid IS NULL OR b.worker_id = $3) AND ($4::uuid IS NULL OR b.id < $4)
  AND ($6::text IS NULL OR b.queue = $6) AND ($7::text IS NULL OR b.team = $7)
  AND ($8::uuid IS NULL OR b.submitted_by = $8)
ORDER BY b.id DESC LIMIT $5
