-- A build's status, attempt and holder: what a guard saw when it did not hold (no row: no such
-- build).
-- $1 build
SELECT status, attempt, worker_id FROM builds WHERE id = $1
