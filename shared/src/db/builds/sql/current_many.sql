-- current.sql for many builds, by id (absent ids do not exist).
-- $1 builds
SELECT id, status, attempt, worker_id FROM builds WHERE id = ANY($1)
