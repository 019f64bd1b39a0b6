-- A worker's reports, newest first.
-- $1 worker  $2 limit
SELECT * FROM diagnostics WHERE worker_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2
