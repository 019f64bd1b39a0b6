-- One build, with the name of the worker holding it (if any) and of the key that submitted it.
-- $1 build
SELECT b.*, w.name AS worker_name, k.name AS submitted_by_name
FROM builds b LEFT JOIN workers w ON w.id = b.worker_id LEFT JOIN api_keys k ON k.id = b.submitted_by
WHERE b.id = $1
