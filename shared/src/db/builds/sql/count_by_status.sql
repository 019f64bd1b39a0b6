-- Number of builds in each status (statuses with none are absent).
-- (no parameters)
SELECT status, count(*) FROM builds GROUP BY status
