-- Takes the orphan sweep's advisory lock for the caller's transaction, if no other session
-- holds it (false: another replica sweeps).
-- $1 lock key
SELECT pg_try_advisory_xact_lock($1)
