-- Re-publish: takes up to $4 dispatches of queue $1 unclaimed for more than $2 seconds and last
-- published before $3 (when JetStream's oldest waiting message of the queue was stored: any
-- published before it is gone), oldest first, and marks them published now. The attempt stays:
-- waiting costs no attempt. Locked SKIP LOCKED; Postgres re-checks the guard on a row another
-- replica changed meanwhile.
-- $1 queue  $2 unclaimed for (s)  $3 published before  $4 limit
WITH due AS (
    SELECT id FROM builds
    WHERE status = 'pending' AND queue = $1 AND dispatched_at IS NOT NULL
      AND dispatched_at < least(now() - make_interval(secs => $2), $3)
    ORDER BY dispatched_at LIMIT $4 FOR UPDATE SKIP LOCKED)
UPDATE builds b SET dispatched_at = now(), updated_at = now()
FROM due WHERE b.id = due.id
RETURNING b.id, b.attempt, b.platform, b.queue
