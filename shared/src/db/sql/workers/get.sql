-- One worker.
-- $1 worker
SELECT * FROM workers WHERE id = $1
