-- Queues holding a dispatch unclaimed for more than $1 seconds: each is checked against what
-- JetStream still holds before anything is published again (`republish.sql`).
-- $1 unclaimed for (s)
SELECT DISTINCT queue FROM builds
WHERE status = 'pending' AND dispatched_at IS NOT NULL
  AND dispatched_at < now() - make_interval(secs => $1)
