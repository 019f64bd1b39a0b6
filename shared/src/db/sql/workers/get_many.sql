-- Workers by id, for checking a batch of credentials at once.
-- $1 workers
SELECT * FROM workers WHERE id = ANY($1)
