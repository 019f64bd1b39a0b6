-- Dispatch: takes up to $1 due pending builds that are not yet waiting in JetStream (priority,
-- then age) and bumps their attempt. A queue gets new dispatches only while fewer than $2 of its
-- builds wait in JetStream unclaimed. Rows are locked SKIP LOCKED, the guard repeated on the
-- locking SELECT. Also returns, with NULL ids, the queues whose window was already full.
-- (A dispatch whose message was lost is published again by `republish.sql`, not here.)
-- $1 limit  $2 window per queue
WITH RECURSIVE qs AS (
    -- Queues with undispatched builds: a loose index scan, one probe per queue.
    (SELECT queue FROM builds WHERE status = 'pending' AND dispatched_at IS NULL ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT b.queue FROM builds b WHERE b.status = 'pending' AND b.dispatched_at IS NULL
            AND b.queue > qs.queue ORDER BY b.queue LIMIT 1)
    FROM qs WHERE qs.queue IS NOT NULL),
free AS (
    SELECT qs.queue, $2 - (SELECT count(*) FROM builds w WHERE w.status = 'pending'
        AND w.dispatched_at IS NOT NULL AND w.queue = qs.queue) AS n
    FROM qs WHERE qs.queue IS NOT NULL),
fresh AS (
    SELECT c.* FROM free f CROSS JOIN LATERAL (
        SELECT b.id, b.priority, b.submitted_at FROM builds b
        WHERE b.status = 'pending' AND b.dispatched_at IS NULL AND b.queue = f.queue
          AND b.run_after <= now()
        ORDER BY b.priority DESC, b.submitted_at
        LIMIT greatest(f.n, 0) FOR UPDATE SKIP LOCKED) c),
due AS (
    SELECT id FROM fresh ORDER BY priority DESC, submitted_at LIMIT $1),
upd AS (
    UPDATE builds b SET attempt = b.attempt + 1, dispatched_at = now(), updated_at = now()
    FROM due WHERE b.id = due.id
    RETURNING b.id, b.attempt, b.platform, b.queue)
SELECT id, attempt, platform, queue FROM upd
UNION ALL
SELECT NULL::uuid, NULL::integer, NULL::text, queue FROM free WHERE n <= 0
