-- Benchmarks only: every pending build of a queue ends completed a minute after it started
-- (its log counted as archived), so synthetic history looks like finished work.
-- $1 queue
UPDATE builds SET status = 'completed', started_at = now() - interval '1 minute',
    completed_at = now(), dispatched_at = NULL, logs_archived_at = now()
WHERE queue = $1 AND status = 'pending'
