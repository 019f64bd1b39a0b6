-- Dispatch reads pending builds one queue at a time, best first, and counts what each queue has
-- waiting in JetStream. These two partial indexes serve exactly that, so a dispatch pass costs
-- the rows it takes rather than a sort of every pending build (which held a 20,000-build
-- backlog to ~1,500 builds/s; see docs/benchmarks.md).
DROP INDEX IF EXISTS builds_pending_due;
CREATE INDEX builds_pending_fresh ON builds (queue, priority DESC, submitted_at)
    WHERE status = 'pending' AND dispatched_at IS NULL;
CREATE INDEX builds_pending_dispatched ON builds (queue, dispatched_at)
    WHERE status = 'pending' AND dispatched_at IS NOT NULL;
