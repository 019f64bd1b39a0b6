-- One build, with the name of the worker holding it (if any). Every build route reads it: the
-- submitting key's name is read apart, by the one route that shows it (api_keys/name.sql).
-- $1 build
SELECT b.*, w.name AS worker_name FROM builds b LEFT JOIN workers w ON w.id = b.worker_id
WHERE b.id = $1
