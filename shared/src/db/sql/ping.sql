-- Readiness probe: the database answers.
-- (no parameters)
SELECT 1
