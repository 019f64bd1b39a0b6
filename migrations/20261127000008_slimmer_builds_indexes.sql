-- Fewer index entries per status change. A build's row is rewritten three times on its way
-- through the queue (dispatch, claim, completion), and none of those updates can be HOT (each
-- changes a column an index or a partial index predicate reads), so each writes a new entry
-- into every index whose predicate the new row matches. Two of those entries bought nothing:
--
-- - builds_running_started: the timeout sweep compares `started_at + timeout_secs`, which no
--   index on started_at can serve; it reads every running build either way, and builds_leases
--   has the same predicate.
-- - builds_status_id indexed every status. Listings of completed builds (most of the table) and
--   of all builds walk the primary key newest first; assigned and building builds, as many as
--   the fleet runs, come from builds_leases. Pending, failed and cancelled builds keep a
--   partial index for their listings, which claims and completions never write to.
--
-- Measured with pgbench on a claim-shaped UPDATE of a 20,000-build table: 4,180 -> 5,800
-- updates/s (docs/benchmarks.md).
DROP INDEX IF EXISTS builds_running_started;
DROP INDEX IF EXISTS builds_status_id;
CREATE INDEX builds_listed_by_status ON builds (status, id DESC)
    WHERE status IN ('pending', 'failed', 'cancelled');
