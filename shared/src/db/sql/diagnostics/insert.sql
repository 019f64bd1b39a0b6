-- Stores a worker's self-check report.
-- $1 id  $2 worker  $3 status  $4 duration (ms)  $5 auto-fixed  $6 checks
INSERT INTO diagnostics (id, worker_id, status, duration_ms, auto_fixed, checks)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *
