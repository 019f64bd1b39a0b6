-- The builds a worker holds now (assigned or building), with its name.
-- $1 worker
SELECT b.*, w.name AS worker_name FROM builds b LEFT JOIN workers w ON w.id = b.worker_id
WHERE b.worker_id = $1 AND b.status IN ('assigned', 'building') ORDER BY b.id
